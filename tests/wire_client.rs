//! Client frame codec: every request and response round-trips, frames are split correctly out
//! of a stream buffer, and every limit is enforced with the typed error that names it.

use zatt::wire::client::*;

fn limits() -> FrameLimits {
    FrameLimits {
        max_frame_bytes: 1 << 20,
        max_key_bytes: 256,
        max_value_bytes: 64 << 10,
    }
}

pub fn every_request() -> Vec<Request> {
    let s = Some((7u64, 42u64));
    vec![
        Request::RegisterSession,
        Request::Get {
            key: b"k".to_vec(),
            consistency: Consistency::Linearizable,
        },
        Request::Get {
            key: vec![],
            consistency: Consistency::Stale,
        },
        Request::Put {
            session: s,
            key: b"key".to_vec(),
            value: vec![9; 100],
        },
        Request::Put {
            session: None,
            key: b"key".to_vec(),
            value: vec![],
        },
        Request::Delete {
            session: s,
            key: b"gone".to_vec(),
        },
        Request::Cas {
            session: s,
            key: b"c".to_vec(),
            expect: Expect::Value(b"old".to_vec()),
            new: Some(b"new".to_vec()),
        },
        Request::Cas {
            session: None,
            key: b"c".to_vec(),
            expect: Expect::Absent,
            new: None,
        },
        Request::Cas {
            session: None,
            key: b"c".to_vec(),
            expect: Expect::Revision(u64::MAX),
            new: Some(vec![]),
        },
        Request::Scan {
            prefix: b"p/".to_vec(),
            start_after: Some(b"p/3".to_vec()),
            limit: 100,
            consistency: Consistency::Stale,
        },
        Request::Scan {
            prefix: vec![],
            start_after: None,
            limit: 0,
            consistency: Consistency::Linearizable,
        },
        Request::Len {
            consistency: Consistency::Linearizable,
        },
        Request::Status,
        Request::Members,
        Request::MemberAdd {
            id: 4,
            addr: "127.0.0.1:5257".into(),
            learner: true,
        },
        Request::MemberPromote { id: 4 },
        Request::MemberRemove { id: 2 },
        Request::TransferLeader { to: Some(3) },
        Request::TransferLeader { to: None },
        Request::SnapshotSave,
        Request::SnapshotChunk {
            id: u64::MAX,
            offset: 1 << 20,
        },
    ]
}

pub fn every_response() -> Vec<Response> {
    let member = |id: u64, voter: bool| MemberInfo {
        id,
        addr: format!("127.0.0.1:{}", 5253 + id),
        voter,
    };
    let mut errors = vec![
        ErrorKind::NotLeader {
            leader: Some(2),
            leader_addr: Some("127.0.0.1:5255".into()),
        },
        ErrorKind::NotLeader {
            leader: None,
            leader_addr: None,
        },
        ErrorKind::TooLarge {
            what: "value".into(),
            limit: 1 << 20,
        },
        ErrorKind::Busy,
        ErrorKind::TooManyInFlight { limit: 1024 },
        ErrorKind::TooManyConnections { limit: 10_000 },
        ErrorKind::SessionExpired,
        ErrorKind::StaleRequest,
        ErrorKind::Timeout,
        ErrorKind::Unavailable("no quorum".into()),
        ErrorKind::Invalid("unknown opcode".into()),
        ErrorKind::ConfChange("a change is in progress".into()),
        ErrorKind::ShuttingDown,
        ErrorKind::NoSpace {
            free_bytes: 1 << 20,
            min_free_bytes: 256 << 20,
        },
    ];
    let mut v = vec![
        Response::SessionRegistered { id: 99 },
        Response::Value {
            value: Some(vec![1; 100]),
            revision: 17,
            applied_index: 20,
        },
        Response::Value {
            value: None,
            revision: 0,
            applied_index: 3,
        },
        Response::Written { revision: 5 },
        Response::Deleted {
            revision: 6,
            existed: true,
        },
        Response::Deleted {
            revision: 6,
            existed: false,
        },
        Response::CasOk { revision: 8 },
        Response::CasFailed {
            current: Some((b"now".to_vec(), 4)),
        },
        Response::CasFailed { current: None },
        Response::ScanPage {
            items: vec![
                (b"a".to_vec(), b"1".to_vec(), 1),
                (b"b".to_vec(), vec![], 2),
            ],
            more: true,
            applied_index: 9,
        },
        Response::ScanPage {
            items: vec![],
            more: false,
            applied_index: 0,
        },
        Response::Len {
            len: 1000,
            applied_index: 1001,
        },
        Response::Status(Box::new(Status {
            id: 1,
            role: "leader".into(),
            term: 3,
            leader: Some(1),
            leader_addr: Some("127.0.0.1:5254".into()),
            commit_index: 100,
            applied_index: 99,
            last_index: 101,
            members: vec![member(1, true), member(2, true), member(4, false)],
            peers: vec![
                PeerStatus {
                    id: 2,
                    match_index: 100,
                    lag: 1,
                    snapshot_progress: None,
                },
                PeerStatus {
                    id: 4,
                    match_index: 0,
                    lag: 101,
                    snapshot_progress: Some((4096, 1 << 20)),
                },
            ],
            wal_bytes: 1 << 30,
            fsync_p50_us: 150,
            fsync_p99_us: 900,
            dropped_datagrams: vec![("BadTag".into(), 3), ("Stale".into(), 1)],
            sessions: 12,
            keys: 34,
            pid: 4242,
            incarnation: 77,
            lost_entries: Some((5, 99)),
            cluster_id: 0xfeed_beef_0000_0001,
            disk_free_bytes: 1 << 33,
            disk_min_free_bytes: 256 << 20,
            disk_alarm: true,
        })),
        Response::Status(Box::default()),
        Response::Members(vec![member(1, true), member(3, false)]),
        Response::Members(vec![]),
        Response::Done,
        Response::SnapshotBegin(SnapshotInfo {
            id: 7,
            cluster_id: 42,
            index: 1000,
            term: 3,
            size: 5 << 20,
            checksum: 0xdead_beef,
            members: vec![member(1, true), member(4, false)],
        }),
        Response::SnapshotBegin(SnapshotInfo::default()),
        Response::SnapshotChunk {
            offset: 1 << 20,
            data: vec![7; 1000],
        },
        Response::SnapshotChunk {
            offset: 0,
            data: vec![],
        },
    ];
    v.extend(errors.drain(..).map(Response::Error));
    v
}

/// Goal: every request survives encode → split → decode (view and owned) unchanged.
/// Method: encode all variants back to back into one stream buffer, then split and decode.
#[test]
fn every_request_round_trips_through_a_stream_buffer() {
    let reqs = every_request();
    let mut buf = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        encode_request(1000 + i as u64, r, &mut buf);
    }
    let mut at = 0;
    for (i, r) in reqs.iter().enumerate() {
        let (len, id) = split_frame(&buf[at..], &limits()).unwrap().unwrap();
        assert_eq!(id, 1000 + i as u64);
        let frame = &buf[at..at + len];
        let (did, view) = decode_request(frame, &limits()).unwrap();
        assert_eq!(did, id);
        assert_eq!(&view.to_request(), r);
        assert_eq!(view, r.view());
        assert_eq!(
            decode_request_owned(frame, &limits()).unwrap(),
            (id, r.clone())
        );
        at += len;
    }
    assert_eq!(at, buf.len());
    assert_eq!(split_frame(&buf[at..], &limits()), Ok(None));
}

/// Goal: every response survives encode → decode unchanged, including every error kind.
#[test]
fn every_response_round_trips() {
    for (i, r) in every_response().iter().enumerate() {
        let mut buf = vec![0xEE; 3]; // encoders append: earlier bytes stay untouched
        encode_response(i as u64, r, &mut buf);
        assert_eq!(&buf[..3], &[0xEE; 3]);
        let (len, id) = split_frame(&buf[3..], &limits()).unwrap().unwrap();
        assert_eq!((len, id), (buf.len() - 3, i as u64));
        assert_eq!(
            decode_response(&buf[3..], &limits()).unwrap(),
            (i as u64, r.clone())
        );
    }
}

/// Goal: `is_response_opcode`, which clients use to tell a Zatt frame's header from another
/// protocol's bytes, accepts every response's opcode and no request's.
#[test]
fn every_response_opcode_and_no_request_opcode_is_a_response_opcode() {
    for r in every_response() {
        let mut buf = Vec::new();
        encode_response(1, &r, &mut buf);
        assert!(is_response_opcode(buf[FRAME_HEADER_BYTES - 1]), "{r:?}");
    }
    for r in every_request() {
        let mut buf = Vec::new();
        encode_request(1, &r, &mut buf);
        assert!(!is_response_opcode(buf[FRAME_HEADER_BYTES - 1]), "{r:?}");
    }
    // Other protocols' answers: their 13th byte is text, where a response has its opcode.
    for text in [
        &b"HTTP/1.1 400 Bad"[..],
        b"SSH-2.0-OpenSSH",
        b"-ERR unknown command",
    ] {
        assert!(!is_response_opcode(text[FRAME_HEADER_BYTES - 1]));
    }
}

/// Goal: the server's borrowed value encoder produces the same bytes as the owned one.
#[test]
fn borrowed_value_response_matches_owned_encoding() {
    let mut a = Vec::new();
    let mut b = Vec::new();
    encode_value_response(5, Some(b"v"), 3, 4, &mut a);
    encode_response(
        5,
        &Response::Value {
            value: Some(b"v".to_vec()),
            revision: 3,
            applied_index: 4,
        },
        &mut b,
    );
    assert_eq!(a, b);
}

/// Goal: the request decoder borrows the value from the frame instead of copying it.
#[test]
fn put_value_is_borrowed_from_the_frame() {
    let mut buf = Vec::new();
    encode_request(
        1,
        &Request::Put {
            session: None,
            key: b"k".to_vec(),
            value: vec![7; 1000],
        },
        &mut buf,
    );
    let (_, view) = decode_request(&buf, &limits()).unwrap();
    let RequestView::Put { value, .. } = view else {
        panic!("not a put")
    };
    let range = buf.as_ptr_range();
    assert!(range.contains(&value.as_ptr()));
}

/// Goal: split_frame waits for whole frames. Method: offer every prefix of a frame.
#[test]
fn split_frame_needs_the_whole_frame() {
    let mut buf = Vec::new();
    encode_request(77, &every_request()[3], &mut buf);
    for cut in 0..buf.len() {
        assert_eq!(split_frame(&buf[..cut], &limits()), Ok(None), "cut {cut}");
    }
    assert_eq!(split_frame(&buf, &limits()), Ok(Some((buf.len(), 77))));
}

/// Goal: an oversized frame is refused from its header alone, naming the limit and carrying
/// the request id so the server can answer; a length below the header is malformed.
#[test]
fn oversized_frame_is_refused_from_its_header() {
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&(10u32 << 20).to_le_bytes());
    hdr.extend_from_slice(&55u64.to_le_bytes());
    hdr.push(3);
    let err = split_frame(&hdr, &limits()).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            what: "frame",
            limit: 1 << 20,
            len: (10 << 20) + 4
        }
    );
    assert_eq!(frame_request_id(&hdr), Some(55));
    assert_eq!(
        err.to_error_kind(),
        ErrorKind::TooLarge {
            what: "frame".into(),
            limit: 1 << 20
        }
    );
    let short = [8u8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    assert!(matches!(
        split_frame(&short, &limits()),
        Err(FrameError::Malformed(_))
    ));
}

/// Goal: key and value limits are enforced by the request decoder and named in the error.
#[test]
fn key_and_value_limits_are_named() {
    let mut buf = Vec::new();
    encode_request(
        1,
        &Request::Put {
            session: None,
            key: vec![1; 257],
            value: vec![],
        },
        &mut buf,
    );
    assert_eq!(
        decode_request(&buf, &limits()).unwrap_err(),
        FrameError::TooLarge {
            what: "key",
            limit: 256,
            len: 257
        }
    );
    buf.clear();
    encode_request(
        1,
        &Request::Cas {
            session: None,
            key: vec![1; 8],
            expect: Expect::Absent,
            new: Some(vec![0; (64 << 10) + 1]),
        },
        &mut buf,
    );
    assert!(matches!(
        decode_request(&buf, &limits()),
        Err(FrameError::TooLarge { what: "value", .. })
    ));
}

/// Goal: unknown opcodes, trailing bytes and non-boolean flags are malformed, not accepted.
#[test]
fn unknown_opcode_and_trailing_bytes_are_malformed() {
    let mut buf = Vec::new();
    encode_request(1, &Request::Status, &mut buf);
    buf[12] = 200;
    assert!(matches!(
        decode_request(&buf, &limits()),
        Err(FrameError::Malformed(_))
    ));
    let mut buf = Vec::new();
    encode_request(1, &Request::Status, &mut buf);
    buf.push(0);
    buf[0] += 1;
    assert!(matches!(
        decode_request(&buf, &limits()),
        Err(FrameError::Malformed(_))
    ));
    let mut buf = Vec::new();
    encode_request(
        1,
        &Request::MemberAdd {
            id: 1,
            addr: "a".into(),
            learner: true,
        },
        &mut buf,
    );
    buf[13 + 8] = 2; // the learner flag
    assert!(matches!(
        decode_request(&buf, &limits()),
        Err(FrameError::Malformed(_))
    ));
}

/// Goal: the errors that may hide an applied write say so, and the others do not.
#[test]
fn may_have_applied_only_for_ambiguous_errors() {
    for r in every_response() {
        if let Response::Error(k) = r {
            let ambiguous = matches!(
                k,
                ErrorKind::Timeout | ErrorKind::StaleRequest | ErrorKind::ShuttingDown
            );
            assert_eq!(k.may_have_applied(), ambiguous, "{k:?}");
            let line = k.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "{line}");
        }
    }
}
