//! Keeps `docs/PROTOCOL.md` and the client codec (`wire::client`) from drifting apart: every
//! golden frame in the document is decoded by the Rust decoder into exactly the value listed
//! here and that value encodes back to exactly the document's bytes; every request, response
//! and error kind has a golden frame; and the document's `limits` block states the numbers the
//! code has. The Python client's tests check the same frames against its own codec.
//! Must not: hold a copy of the frames (they live in the document only).

use std::collections::{BTreeMap, BTreeSet};

use zatt::wire::client::{
    decode_request_owned, decode_response, encode_request, encode_response, Consistency, ErrorKind,
    Expect, FrameLimits, MemberInfo, PeerStatus, Request, Response, SnapshotInfo, Status,
    WatchEvent, FRAME_HEADER_BYTES, MAX_ADDR_BYTES, MAX_TEXT_BYTES, SNAPSHOT_CHUNK_BYTES,
};

const DOC: &str = include_str!("../docs/PROTOCOL.md");

/// Fenced blocks whose info string starts with `kind ` (e.g. "golden request/put"): name → body.
fn blocks(kind: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = DOC.lines();
    let opening = format!("```{kind}");
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(&opening) else {
            continue;
        };
        let name = rest.trim().to_string();
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        assert!(
            out.insert(name.clone(), body).is_none(),
            "block {kind} {name:?} appears twice in docs/PROTOCOL.md"
        );
    }
    out
}

/// A golden block's bytes: hex digits, spaces ignored, `#` to the end of the line a comment.
fn hex_bytes(name: &str, body: &str) -> Vec<u8> {
    let digits: String = body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(
        digits.len() % 2 == 0,
        "golden {name}: an odd number of hex digits"
    );
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .unwrap_or_else(|_| panic!("golden {name}: {:?} is not hex", &digits[i..i + 2]))
        })
        .collect()
}

enum Golden {
    Req(u64, Request),
    Resp(u64, Response),
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn member(id: u64, addr: &str, voter: bool) -> MemberInfo {
    MemberInfo {
        id,
        addr: addr.into(),
        voter,
    }
}

/// The value each golden frame of the document stands for.
fn expected() -> BTreeMap<&'static str, Golden> {
    use Golden::{Req, Resp};
    let err = |id, k| Resp(id, Response::Error(k));
    let status = Status {
        id: 1,
        role: "leader".into(),
        term: 3,
        leader: Some(1),
        leader_addr: Some("127.0.0.1:5254".into()),
        commit_index: 20,
        applied_index: 20,
        last_index: 21,
        members: vec![
            member(1, "127.0.0.1:5254", true),
            member(2, "127.0.0.1:5255", true),
            member(3, "127.0.0.1:5256", false),
        ],
        peers: vec![
            PeerStatus {
                id: 2,
                match_index: 21,
                lag: 0,
                snapshot_progress: None,
            },
            PeerStatus {
                id: 3,
                match_index: 0,
                lag: 21,
                snapshot_progress: Some((4096, 65536)),
            },
        ],
        wal_bytes: 1 << 20,
        fsync_p50_us: 180,
        fsync_p99_us: 420,
        dropped_datagrams: vec![("bad_tag".into(), 2)],
        sessions: 1,
        keys: 5,
        pid: 12345,
        incarnation: 0x1122_3344_5566_7788,
        lost_entries: Some((3, 22)),
        cluster_id: 0x0123_4567_89ab_cdef,
        disk_free_bytes: 10 << 30,
        disk_min_free_bytes: 256 << 20,
        disk_alarm: false,
    };
    BTreeMap::from([
        ("request/register_session", Req(1, Request::RegisterSession)),
        (
            "request/get",
            Req(
                2,
                Request::Get {
                    key: b("greeting"),
                    consistency: Consistency::Linearizable,
                },
            ),
        ),
        (
            "request/get_stale",
            Req(
                3,
                Request::Get {
                    key: b("greeting"),
                    consistency: Consistency::Stale,
                },
            ),
        ),
        (
            "request/put",
            Req(
                42,
                Request::Put {
                    session: Some((7, 3)),
                    key: b("k"),
                    value: b("v"),
                },
            ),
        ),
        (
            "request/delete",
            Req(
                43,
                Request::Delete {
                    session: None,
                    key: b("k"),
                },
            ),
        ),
        (
            "request/cas_value",
            Req(
                44,
                Request::Cas {
                    session: Some((7, 4)),
                    key: b("k"),
                    expect: Expect::Value(b("v")),
                    new: Some(b("w")),
                },
            ),
        ),
        (
            "request/cas_absent",
            Req(
                45,
                Request::Cas {
                    session: None,
                    key: b("k"),
                    expect: Expect::Absent,
                    new: Some(b("v")),
                },
            ),
        ),
        (
            "request/cas_revision",
            Req(
                46,
                Request::Cas {
                    session: Some((7, 5)),
                    key: b("k"),
                    expect: Expect::Revision(12),
                    new: None,
                },
            ),
        ),
        (
            "request/scan",
            Req(
                47,
                Request::Scan {
                    prefix: b("app/"),
                    start_after: Some(b("app/b")),
                    limit: 100,
                    consistency: Consistency::Linearizable,
                },
            ),
        ),
        (
            "request/len",
            Req(
                48,
                Request::Len {
                    consistency: Consistency::Stale,
                },
            ),
        ),
        ("request/status", Req(49, Request::Status)),
        ("request/members", Req(50, Request::Members)),
        (
            "request/member_add",
            Req(
                51,
                Request::MemberAdd {
                    id: 4,
                    addr: "127.0.0.1:5257".into(),
                    learner: false,
                },
            ),
        ),
        (
            "request/member_promote",
            Req(52, Request::MemberPromote { id: 4 }),
        ),
        (
            "request/member_remove",
            Req(53, Request::MemberRemove { id: 4 }),
        ),
        (
            "request/transfer_leader",
            Req(54, Request::TransferLeader { to: Some(2) }),
        ),
        (
            "request/transfer_leader_any",
            Req(55, Request::TransferLeader { to: None }),
        ),
        (
            "request/watch",
            Req(
                56,
                Request::Watch {
                    prefix: b("app/"),
                    from_revision: 20,
                },
            ),
        ),
        (
            "request/watch_now",
            Req(
                57,
                Request::Watch {
                    prefix: Vec::new(),
                    from_revision: 0,
                },
            ),
        ),
        (
            "request/cancel_watch",
            Req(58, Request::CancelWatch { watch_id: 56 }),
        ),
        (
            "response/watch_events",
            Resp(
                56,
                Response::WatchEvents(vec![
                    WatchEvent::Put {
                        key: b("app/a"),
                        value: b("1"),
                        revision: 20,
                    },
                    WatchEvent::Delete {
                        key: b("app/b"),
                        revision: 22,
                    },
                ]),
            ),
        ),
        (
            "response/watch_progress",
            Resp(56, Response::WatchProgress { revision: 25 }),
        ),
        (
            "response/error_compacted",
            err(56, ErrorKind::Compacted { oldest: 1001 }),
        ),
        (
            "response/error_watch_overflow",
            err(56, ErrorKind::WatchOverflow { limit: 8 << 20 }),
        ),
        (
            "response/session_registered",
            Resp(1, Response::SessionRegistered { id: 7 }),
        ),
        (
            "response/value",
            Resp(
                2,
                Response::Value {
                    value: Some(b("hello")),
                    revision: 12,
                    applied_index: 15,
                },
            ),
        ),
        (
            "response/value_absent",
            Resp(
                3,
                Response::Value {
                    value: None,
                    revision: 0,
                    applied_index: 15,
                },
            ),
        ),
        (
            "response/written",
            Resp(42, Response::Written { revision: 16 }),
        ),
        (
            "response/deleted",
            Resp(
                43,
                Response::Deleted {
                    revision: 17,
                    existed: true,
                },
            ),
        ),
        (
            "response/cas_ok",
            Resp(44, Response::CasOk { revision: 18 }),
        ),
        (
            "response/cas_failed",
            Resp(
                45,
                Response::CasFailed {
                    current: Some((b("v"), 16)),
                },
            ),
        ),
        (
            "response/cas_failed_absent",
            Resp(46, Response::CasFailed { current: None }),
        ),
        (
            "response/scan_page",
            Resp(
                47,
                Response::ScanPage {
                    items: vec![(b("app/c"), b("3"), 9), (b("app/d"), b("4"), 10)],
                    more: true,
                    applied_index: 20,
                },
            ),
        ),
        (
            "response/len",
            Resp(
                48,
                Response::Len {
                    len: 5,
                    applied_index: 20,
                },
            ),
        ),
        (
            "response/status",
            Resp(49, Response::Status(Box::new(status))),
        ),
        (
            "response/members",
            Resp(
                50,
                Response::Members(vec![
                    member(1, "127.0.0.1:5254", true),
                    member(4, "127.0.0.1:5257", false),
                ]),
            ),
        ),
        ("response/done", Resp(51, Response::Done)),
        ("request/snapshot_save", Req(56, Request::SnapshotSave)),
        (
            "request/snapshot_chunk",
            Req(
                57,
                Request::SnapshotChunk {
                    id: 7,
                    offset: 1 << 20,
                },
            ),
        ),
        (
            "response/snapshot_begin",
            Resp(
                56,
                Response::SnapshotBegin(SnapshotInfo {
                    id: 7,
                    cluster_id: 0x0123_4567_89ab_cdef,
                    index: 20,
                    term: 3,
                    size: 1234,
                    checksum: 0xdead_beef,
                    members: vec![
                        member(1, "127.0.0.1:5254", true),
                        member(2, "127.0.0.1:5255", true),
                        member(3, "127.0.0.1:5256", true),
                    ],
                }),
            ),
        ),
        (
            "response/snapshot_chunk",
            Resp(
                57,
                Response::SnapshotChunk {
                    offset: 1 << 20,
                    data: b("ZKVS"),
                },
            ),
        ),
        (
            "response/error_no_space",
            err(
                42,
                ErrorKind::NoSpace {
                    free_bytes: 1 << 20,
                    min_free_bytes: 256 << 20,
                },
            ),
        ),
        (
            "response/error_not_leader",
            err(
                42,
                ErrorKind::NotLeader {
                    leader: Some(2),
                    leader_addr: Some("127.0.0.1:5255".into()),
                },
            ),
        ),
        (
            "response/error_not_leader_unknown",
            err(
                42,
                ErrorKind::NotLeader {
                    leader: None,
                    leader_addr: None,
                },
            ),
        ),
        (
            "response/error_too_large",
            err(
                42,
                ErrorKind::TooLarge {
                    what: "value".into(),
                    limit: 1 << 20,
                },
            ),
        ),
        ("response/error_busy", err(42, ErrorKind::Busy)),
        (
            "response/error_too_many_in_flight",
            err(42, ErrorKind::TooManyInFlight { limit: 1024 }),
        ),
        (
            "response/error_too_many_connections",
            err(0, ErrorKind::TooManyConnections { limit: 1024 }),
        ),
        (
            "response/error_session_expired",
            err(42, ErrorKind::SessionExpired),
        ),
        (
            "response/error_stale_request",
            err(42, ErrorKind::StaleRequest),
        ),
        ("response/error_timeout", err(42, ErrorKind::Timeout)),
        (
            "response/error_unavailable",
            err(42, ErrorKind::Unavailable("no leader".into())),
        ),
        (
            "response/error_invalid",
            err(42, ErrorKind::Invalid("unknown request opcode".into())),
        ),
        (
            "response/error_conf_change",
            err(
                51,
                ErrorKind::ConfChange("the learner has not caught up with the leader yet".into()),
            ),
        ),
        (
            "response/error_shutting_down",
            err(42, ErrorKind::ShuttingDown),
        ),
    ])
}

// The names of every variant. A new variant fails to compile in the matches below: give it a
// name here and a golden frame in docs/PROTOCOL.md.
const REQUESTS: [&str; 17] = [
    "RegisterSession",
    "Get",
    "Put",
    "Delete",
    "Cas",
    "Scan",
    "Len",
    "Status",
    "Members",
    "MemberAdd",
    "MemberPromote",
    "MemberRemove",
    "TransferLeader",
    "Watch",
    "CancelWatch",
    "SnapshotSave",
    "SnapshotChunk",
];
const RESPONSES: [&str; 16] = [
    "SessionRegistered",
    "Value",
    "Written",
    "Deleted",
    "CasOk",
    "CasFailed",
    "ScanPage",
    "Len",
    "Status",
    "Members",
    "Done",
    "Error",
    "WatchEvents",
    "WatchProgress",
    "SnapshotBegin",
    "SnapshotChunk",
];
const ERRORS: [&str; 15] = [
    "NotLeader",
    "TooLarge",
    "Busy",
    "TooManyInFlight",
    "TooManyConnections",
    "SessionExpired",
    "StaleRequest",
    "Timeout",
    "Unavailable",
    "Invalid",
    "ConfChange",
    "ShuttingDown",
    "Compacted",
    "WatchOverflow",
    "NoSpace",
];

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::RegisterSession => "RegisterSession",
        Request::Get { .. } => "Get",
        Request::Put { .. } => "Put",
        Request::Delete { .. } => "Delete",
        Request::Cas { .. } => "Cas",
        Request::Scan { .. } => "Scan",
        Request::Len { .. } => "Len",
        Request::Status => "Status",
        Request::Members => "Members",
        Request::MemberAdd { .. } => "MemberAdd",
        Request::MemberPromote { .. } => "MemberPromote",
        Request::MemberRemove { .. } => "MemberRemove",
        Request::TransferLeader { .. } => "TransferLeader",
        Request::Watch { .. } => "Watch",
        Request::CancelWatch { .. } => "CancelWatch",
        Request::SnapshotSave => "SnapshotSave",
        Request::SnapshotChunk { .. } => "SnapshotChunk",
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::SessionRegistered { .. } => "SessionRegistered",
        Response::Value { .. } => "Value",
        Response::Written { .. } => "Written",
        Response::Deleted { .. } => "Deleted",
        Response::CasOk { .. } => "CasOk",
        Response::CasFailed { .. } => "CasFailed",
        Response::ScanPage { .. } => "ScanPage",
        Response::Len { .. } => "Len",
        Response::Status(_) => "Status",
        Response::Members(_) => "Members",
        Response::Done => "Done",
        Response::Error(_) => "Error",
        Response::WatchEvents(_) => "WatchEvents",
        Response::WatchProgress { .. } => "WatchProgress",
        Response::SnapshotBegin(_) => "SnapshotBegin",
        Response::SnapshotChunk { .. } => "SnapshotChunk",
    }
}

fn error_name(k: &ErrorKind) -> &'static str {
    match k {
        ErrorKind::NotLeader { .. } => "NotLeader",
        ErrorKind::TooLarge { .. } => "TooLarge",
        ErrorKind::Busy => "Busy",
        ErrorKind::TooManyInFlight { .. } => "TooManyInFlight",
        ErrorKind::TooManyConnections { .. } => "TooManyConnections",
        ErrorKind::SessionExpired => "SessionExpired",
        ErrorKind::StaleRequest => "StaleRequest",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Unavailable(_) => "Unavailable",
        ErrorKind::Invalid(_) => "Invalid",
        ErrorKind::ConfChange(_) => "ConfChange",
        ErrorKind::ShuttingDown => "ShuttingDown",
        ErrorKind::Compacted { .. } => "Compacted",
        ErrorKind::WatchOverflow { .. } => "WatchOverflow",
        ErrorKind::NoSpace { .. } => "NoSpace",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_golden_frame_decodes_to_its_value_and_encodes_back_to_its_bytes() {
    // Goal: the document's bytes are the codec's bytes, both ways. Method: each golden block is
    // decoded and compared with the value listed above, then that value is encoded and
    // compared with the block.
    let doc = blocks("golden ");
    let want = expected();
    let doc_names: BTreeSet<&str> = doc.keys().map(String::as_str).collect();
    let want_names: BTreeSet<&str> = want.keys().copied().collect();
    assert_eq!(
        doc_names, want_names,
        "the golden frames in docs/PROTOCOL.md and this test's list differ"
    );
    let limits = FrameLimits::default();
    for (name, golden) in &want {
        let bytes = hex_bytes(name, &doc[*name]);
        let mut encoded = Vec::new();
        match golden {
            Golden::Req(id, req) => {
                let got = decode_request_owned(&bytes, &limits)
                    .unwrap_or_else(|e| panic!("golden {name} does not decode: {e}"));
                assert_eq!(
                    &got,
                    &(*id, req.clone()),
                    "golden {name} decodes to another value"
                );
                encode_request(*id, req, &mut encoded);
            }
            Golden::Resp(id, resp) => {
                let got = decode_response(&bytes, &limits)
                    .unwrap_or_else(|e| panic!("golden {name} does not decode: {e}"));
                assert_eq!(
                    &got,
                    &(*id, resp.clone()),
                    "golden {name} decodes to another value"
                );
                encode_response(*id, resp, &mut encoded);
            }
        }
        assert_eq!(
            hex(&encoded),
            hex(&bytes),
            "golden {name}: the codec encodes other bytes than the document shows"
        );
    }
}

#[test]
fn every_request_response_and_error_kind_has_a_golden_frame() {
    // Goal: a new opcode or error kind cannot go undocumented. Method: the variants the golden
    // frames cover, by name, against the full lists.
    let mut requests = BTreeSet::new();
    let mut responses = BTreeSet::new();
    let mut errors = BTreeSet::new();
    for golden in expected().values() {
        match golden {
            Golden::Req(_, r) => {
                requests.insert(request_name(r));
            }
            Golden::Resp(_, r) => {
                responses.insert(response_name(r));
                if let Response::Error(k) = r {
                    errors.insert(error_name(k));
                }
            }
        }
    }
    assert_eq!(requests, REQUESTS.into_iter().collect());
    assert_eq!(responses, RESPONSES.into_iter().collect());
    assert_eq!(errors, ERRORS.into_iter().collect());
}

#[test]
fn every_request_opcode_and_error_kind_has_its_metrics_name() {
    // Goal: `/metrics` labels every request and error by name, never "unknown" for one the
    // protocol has, and an error kind's number is the one on the wire. Method: the golden
    // frames' opcodes and error kinds against `request_name`, `ErrorKind::code` and `name`.
    for golden in expected().values() {
        match golden {
            Golden::Req(id, r) => {
                let mut frame = Vec::new();
                encode_request(*id, r, &mut frame);
                let name = zatt::wire::client::request_name(frame[FRAME_HEADER_BYTES - 1]);
                assert_ne!(name, "unknown", "{}", request_name(r));
                assert_eq!(
                    name.replace('_', ""),
                    request_name(r).to_lowercase(),
                    "{r:?}"
                );
            }
            Golden::Resp(id, Response::Error(k)) => {
                let mut frame = Vec::new();
                encode_response(*id, &Response::Error(k.clone()), &mut frame);
                assert_eq!(frame[FRAME_HEADER_BYTES], k.code(), "{k:?}");
                assert_eq!(k.name().replace('_', ""), error_name(k).to_lowercase());
            }
            Golden::Resp(..) => {}
        }
    }
}

#[test]
fn the_documented_limits_are_the_code_s() {
    // Goal: the numbers a client author relies on are the ones the server has. Method: the
    // document's `limits` block against the codec's constants, the dictionary's configuration
    // and the server's flag defaults.
    let block = blocks("limits");
    let body = block
        .get("")
        .expect("docs/PROTOCOL.md has one ```limits block");
    let documented: BTreeMap<String, u64> = body
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("limits line {l:?} is not name = value"));
            let v = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("limits line {l:?}"));
            (k.trim().to_string(), v)
        })
        .collect();
    let args: Vec<String> = ["--id", "1", "--data-dir", "unused"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cfg = match zatt::config::parse_args(&args, &|_| None) {
        Ok(zatt::config::Invocation::Run(c)) => c,
        Ok(_) => panic!("--id and --data-dir should make a runnable configuration"),
        Err(e) => panic!("default configuration refused: {}", e.message),
    };
    let kv = zatt::kv::KvConfig::default();
    let code: BTreeMap<String, u64> = [
        ("frame_header_bytes", FRAME_HEADER_BYTES as u64),
        ("max_request_bytes", cfg.max_request_bytes as u64),
        ("max_key_bytes", kv.max_key_bytes as u64),
        ("max_value_bytes", kv.max_value_bytes as u64),
        ("max_text_bytes", MAX_TEXT_BYTES as u64),
        ("max_addr_bytes", MAX_ADDR_BYTES as u64),
        ("max_connections", cfg.max_connections as u64),
        ("max_inflight_per_conn", cfg.max_inflight_per_conn as u64),
        (
            "idle_timeout_ms",
            cfg.idle_timeout.map_or(0, |d| d.as_millis() as u64),
        ),
        ("session_ttl_ms", kv.session_ttl_ms),
        ("max_sessions", kv.max_sessions as u64),
        (
            "watch_history_changes",
            cfg.watch.history.max_changes as u64,
        ),
        ("watch_history_bytes", cfg.watch.history.max_bytes as u64),
        ("watch_buffer_bytes", cfg.watch.buffer_bytes as u64),
        (
            "watch_progress_interval_ms",
            cfg.watch.progress_interval.as_millis() as u64,
        ),
        (
            "watch_frame_event_bytes",
            zatt::host::FRAME_EVENT_BYTES as u64,
        ),
        (
            "watch_frame_interval_us",
            cfg.watch.frame_interval.as_micros() as u64,
        ),
        ("snapshot_chunk_bytes", SNAPSHOT_CHUNK_BYTES as u64),
        (
            "min_free_disk_bytes",
            match cfg.min_free_disk {
                zatt::host::MinFreeDisk::Bytes(n) => n,
                other => panic!("--min-free-disk defaults to a share: {other:?}"),
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(documented, code);
}
