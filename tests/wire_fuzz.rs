//! Hostile input for every wire decoder: random, truncated, bit-flipped and oversized bytes fed
//! to the datagram decoder (envelope, body, reassembly), the frame splitter and the request and
//! response decoders. Nothing may panic, and no single allocation may be larger than a small
//! multiple of the bytes actually present: a declared length is never trusted.
//!
//! Method: a seeded splitmix64 generator (`zatt::rng`, deterministic) and a counting global
//! allocator that records, per thread, the largest allocation made while a decoder runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use zatt::rng::SplitMix64;
use zatt::types::*;
use zatt::wire::client::*;
use zatt::wire::peer::*;

// ---------------------------------------------------------------------------------------------
// The allocation probe.

struct Probe;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may be gone while a thread is being torn down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()))
}

/// What a decoder may allocate at most for `input_len` bytes: owned copies of the data and
/// vectors of decoded items (an `Entry` is larger in memory than its smallest encoding).
fn allowed(input_len: usize) -> usize {
    4 * input_len + 4096
}

// ---------------------------------------------------------------------------------------------
// Input generation.

/// One hostile variant of a valid encoding: truncated, bit-flipped, a length-like field set to
/// a huge value, bytes appended, or pure noise.
fn mutate(rng: &mut SplitMix64, valid: &[u8]) -> Vec<u8> {
    let mut v = valid.to_vec();
    match rng.index(6) {
        0 => v.truncate(rng.index(v.len() + 1)),
        1 => {
            for _ in 0..1 + rng.index(4) {
                if !v.is_empty() {
                    let i = rng.index(v.len());
                    v[i] ^= 1 << rng.index(8);
                }
            }
        }
        2 => {
            // A plausible length field (u32) overwritten with something enormous.
            if v.len() >= 4 {
                let i = rng.index(v.len() - 3);
                let big = [u32::MAX, 0x8000_0000, 0x1000_0000, 0x00FF_FFFF][rng.index(4)];
                v[i..i + 4].copy_from_slice(&big.to_le_bytes());
            }
        }
        3 => {
            let n = 1 + rng.index(16);
            let extra = rng.bytes(n);
            v.extend_from_slice(&extra);
        }
        4 => {
            if !v.is_empty() {
                let i = rng.index(v.len());
                v[i] = rng.next_u64() as u8;
            }
        }
        _ => v = rng.bytes_up_to(199),
    }
    v
}

fn sample_messages() -> Vec<Message> {
    let m = |body| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body,
    };
    let mut membership = Membership::default();
    membership.members.insert(
        NodeId(1),
        Member {
            role: MemberRole::Voter,
            addr: "127.0.0.1:5254".into(),
        },
    );
    vec![
        m(MessageBody::PreVote {
            last_log_index: LogIndex(4),
            last_log_term: Term(2),
        }),
        m(MessageBody::RequestVote {
            last_log_index: LogIndex(4),
            last_log_term: Term(2),
            transfer: false,
        }),
        m(MessageBody::AppendEntries {
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: (0..4)
                .map(|i| Entry::new(Term(3), LogIndex(2 + i), EntryKind::Normal, &[7; 40]))
                .collect(),
            leader_commit: LogIndex(1),
            read_seq: 0,
        }),
        m(MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(5),
            conflict_term: Term(0),
            conflict_index: LogIndex(0),
            last_index: LogIndex(5),
            read_seq: 1,
        }),
        m(MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: LogIndex(9),
                term: Term(2),
                membership,
            },
            offset: 0,
            total: 10,
            data: vec![1; 100],
            done: true,
        }),
        m(MessageBody::InstallSnapshotResponse {
            snapshot_index: LogIndex(9),
            next_offset: 10,
            installed: true,
        }),
        m(MessageBody::TimeoutNow),
    ]
}

const ROUNDS: usize = 20_000;

/// Goal: the datagram decoder survives hostile datagrams, whole and fragmented, and never
/// allocates beyond what the bytes present justify.
/// Method: mutate valid single datagrams and fragments (no secret, so mutations reach the body
/// and the reassembler), expiring now and then.
#[test]
fn datagram_decoder_survives_hostile_input() {
    let mut rng = SplitMix64(0xD47A_6EA1);
    let mut tx_cfg = PeerCodecConfig::new(9, NodeId(1));
    tx_cfg.max_datagram = MIN_DATAGRAM_BYTES;
    let mut tx = PeerCodec::new(tx_cfg);
    let mut rx_cfg = PeerCodecConfig::new(9, NodeId(2));
    rx_cfg.max_datagram = MIN_DATAGRAM_BYTES;
    rx_cfg.max_reassembly_bytes = 64 << 10;
    let mut rx = PeerCodec::new(rx_cfg);
    let mut valid = Vec::new();
    for m in sample_messages() {
        tx.encode(&m, &mut |d| valid.push(d.to_vec()));
    }
    assert!(
        valid.len() > sample_messages().len(),
        "some messages fragment"
    );
    let mut decoded = 0;
    for round in 0..ROUNDS {
        let pick = rng.index(valid.len());
        let input = mutate(&mut rng, &valid[pick]);
        let (out, largest) = largest_alloc(|| rx.decode(&input, round as u64 / 100));
        decoded += out.is_some() as usize;
        // Reassembly may grow its buffer by doubling, bounded by what it holds.
        assert!(
            largest <= allowed(input.len()) + 2 * rx.reassembly_bytes(),
            "round {round}: {largest} bytes allocated for {} bytes in",
            input.len()
        );
        assert!(rx.reassembly_bytes() <= 64 << 10);
        if round % 1000 == 0 {
            rx.expire(round as u64 / 100);
        }
    }
    assert!(rx.drops().total() > 0);
    assert!(decoded > 0, "some mutations leave a valid message");
}

/// Goal: the body decoder refuses every truncation of every message and survives mutations.
#[test]
fn message_body_decoder_survives_hostile_input() {
    let mut rng = SplitMix64(0xB0D1);
    for m in sample_messages() {
        let mut body = Vec::new();
        encode_body(&m, &mut body);
        for cut in 0..body.len() {
            assert!(
                decode_body(&body[..cut], m.from, m.to).is_err(),
                "cut {cut}"
            );
        }
        for _ in 0..ROUNDS / 10 {
            let input = mutate(&mut rng, &body);
            let (_, largest) = largest_alloc(|| decode_body(&input, m.from, m.to));
            assert!(largest <= allowed(input.len()));
        }
    }
}

fn limits() -> FrameLimits {
    FrameLimits {
        max_frame_bytes: 64 << 10,
        max_key_bytes: 1024,
        max_value_bytes: 32 << 10,
    }
}

fn sample_requests() -> Vec<Vec<u8>> {
    let reqs = [
        Request::Put {
            session: Some((1, 2)),
            key: b"key".to_vec(),
            value: vec![5; 100],
        },
        Request::Cas {
            session: None,
            key: b"k".to_vec(),
            expect: Expect::Value(b"v".to_vec()),
            new: Some(b"w".to_vec()),
        },
        Request::Scan {
            prefix: b"p".to_vec(),
            start_after: Some(b"p1".to_vec()),
            limit: 10,
            consistency: Consistency::Stale,
        },
        Request::MemberAdd {
            id: 3,
            addr: "127.0.0.1:1".into(),
            learner: false,
        },
        Request::TransferLeader { to: Some(2) },
        Request::Get {
            key: b"g".to_vec(),
            consistency: Consistency::Linearizable,
        },
        Request::Watch {
            prefix: b"app/".to_vec(),
            from_revision: 20,
        },
        Request::CancelWatch { watch_id: 7 },
    ];
    reqs.iter()
        .map(|r| {
            let mut b = Vec::new();
            encode_request(7, r, &mut b);
            b
        })
        .collect()
}

fn sample_responses() -> Vec<Vec<u8>> {
    let resps = [
        Response::ScanPage {
            items: vec![(b"a".to_vec(), b"1".to_vec(), 1); 3],
            more: true,
            applied_index: 4,
        },
        Response::Status(Box::new(Status {
            role: "leader".into(),
            members: vec![MemberInfo {
                id: 1,
                addr: "x".into(),
                voter: true,
            }],
            peers: vec![PeerStatus {
                id: 2,
                snapshot_progress: Some((1, 2)),
                ..PeerStatus::default()
            }],
            dropped_datagrams: vec![("BadTag".into(), 1)],
            ..Status::default()
        })),
        Response::Members(vec![
            MemberInfo {
                id: 1,
                addr: "a".into(),
                voter: false
            };
            2
        ]),
        Response::CasFailed {
            current: Some((b"v".to_vec(), 3)),
        },
        Response::Value {
            value: Some(vec![1; 50]),
            revision: 1,
            applied_index: 2,
        },
        Response::Error(ErrorKind::NotLeader {
            leader: Some(1),
            leader_addr: Some("h:1".into()),
        }),
        Response::WatchEvents(vec![
            WatchEvent::Put {
                key: b"app/a".to_vec(),
                value: vec![3; 40],
                revision: 20,
            },
            WatchEvent::Delete {
                key: Vec::new(),
                revision: 21,
            },
            WatchEvent::Delete {
                key: b"b".to_vec(),
                revision: 22,
            },
        ]),
        Response::WatchProgress { revision: 25 },
        Response::Error(ErrorKind::Compacted { oldest: 1001 }),
    ];
    resps
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            encode_response(7, r, &mut b);
            b
        })
        .collect()
}

/// Goal: frame splitting and request decoding survive hostile stream bytes.
/// Method: mutate valid request frames; split, then decode whatever split accepts (and the raw
/// mutation too, since a server could be handed any slice).
#[test]
fn frame_split_and_request_decoder_survive_hostile_input() {
    let mut rng = SplitMix64(0xF2A3E);
    let valid = sample_requests();
    for f in &valid {
        for cut in 0..f.len() {
            assert!(decode_request(&f[..cut], &limits()).is_err());
        }
    }
    for _ in 0..ROUNDS {
        let pick = rng.index(valid.len());
        let input = mutate(&mut rng, &valid[pick]);
        let (_, largest) = largest_alloc(|| {
            if let Ok(Some((len, _))) = split_frame(&input, &limits()) {
                assert!(len <= input.len());
                let _ = decode_request(&input[..len], &limits());
            }
            let _ = decode_request(&input, &limits());
            let _ = decode_request_owned(&input, &limits());
        });
        assert!(largest <= allowed(input.len()));
    }
}

/// Goal: the response decoder survives hostile frames without over-allocating.
#[test]
fn response_decoder_survives_hostile_input() {
    let mut rng = SplitMix64(0x2E5B);
    let valid = sample_responses();
    for f in &valid {
        for cut in 0..f.len() {
            assert!(decode_response(&f[..cut], &limits()).is_err());
        }
    }
    for _ in 0..ROUNDS {
        let pick = rng.index(valid.len());
        let input = mutate(&mut rng, &valid[pick]);
        let (_, largest) = largest_alloc(|| decode_response(&input, &limits()));
        assert!(largest <= allowed(input.len()));
    }
}

/// Goal: declared lengths of 4 GiB are refused with an error and allocate nothing of that size.
/// Method: hand-build each kind of length field at its maximum with only a few bytes behind it.
#[test]
fn declared_four_gib_lengths_never_allocate() {
    // The probe itself sees allocations (otherwise every bound below would hold vacuously).
    let (v, largest) = largest_alloc(|| vec![0u8; 5000]);
    assert_eq!((v.len(), largest), (5000, 5000));

    // AppendEntries declaring u32::MAX entries.
    let mut body = Vec::new();
    body.extend_from_slice(&3u64.to_le_bytes()); // term
    body.push(5); // AppendEntries
    body.extend_from_slice(&[0; 32]); // prev index, prev term, commit, read_seq
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[0; 21]);
    let (r, largest) = largest_alloc(|| decode_body(&body, NodeId(1), NodeId(2)));
    assert!(r.is_err());
    assert!(largest < 1024, "{largest}");

    // One entry declaring u32::MAX data bytes.
    let mut body2 = body.clone();
    let n = body2.len();
    body2[n - 25..n - 21].copy_from_slice(&1u32.to_le_bytes());
    body2[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let (r, largest) = largest_alloc(|| decode_body(&body2, NodeId(1), NodeId(2)));
    assert!(r.is_err());
    assert!(largest < 1024, "{largest}");

    // A frame declaring 4 GiB.
    let mut frame = u32::MAX.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0; 9]);
    let (r, largest) = largest_alloc(|| split_frame(&frame, &limits()));
    assert!(matches!(r, Err(FrameError::TooLarge { what: "frame", .. })));
    assert_eq!(largest, 0);

    // A scan page declaring u32::MAX items, and a put declaring a 4 GiB value, inside
    // frames whose own length is honest.
    let mut page = Vec::new();
    page.extend_from_slice(&0u32.to_le_bytes());
    page.extend_from_slice(&7u64.to_le_bytes());
    page.push(0x87);
    page.extend_from_slice(&[0; 9]); // applied index, more
    page.extend_from_slice(&u32::MAX.to_le_bytes());
    let len = (page.len() - 4) as u32;
    page[..4].copy_from_slice(&len.to_le_bytes());
    let (r, largest) = largest_alloc(|| decode_response(&page, &limits()));
    assert!(r.is_err());
    assert_eq!(largest, 0);

    let mut put = Vec::new();
    encode_request(
        1,
        &Request::Put {
            session: None,
            key: b"k".to_vec(),
            value: vec![],
        },
        &mut put,
    );
    let n = put.len();
    put[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let (r, largest) = largest_alloc(|| decode_request_owned(&put, &limits()));
    assert!(matches!(r, Err(FrameError::TooLarge { what: "value", .. })));
    assert_eq!(largest, 0);

    // Watch events declaring u32::MAX events in an honest frame, and a whole frame of the
    // smallest events (deletes of the empty key): the count is checked against the bytes
    // present (13 at least per event), so the second allocates one decoded event per 13 bytes
    // that came (an event in memory is larger than that: this is the densest a frame gets).
    let mut events = Vec::new();
    encode_response(7, &Response::WatchEvents(Vec::new()), &mut events);
    let n = events.len();
    events[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let (r, largest) = largest_alloc(|| decode_response(&events, &limits()));
    assert!(r.is_err());
    assert_eq!(largest, 0);
    let smallest = WatchEvent::Delete {
        key: Vec::new(),
        revision: 1,
    };
    let count = (limits().max_frame_bytes - 4 - 9 - 4) / 13;
    let mut dense = Vec::new();
    encode_response(7, &Response::WatchEvents(vec![smallest; count]), &mut dense);
    let (r, largest) = largest_alloc(|| decode_response(&dense, &limits()));
    assert!(matches!(r, Ok((7, Response::WatchEvents(ref e))) if e.len() == count));
    let per_event = std::mem::size_of::<WatchEvent>();
    assert!(
        largest <= count * per_event,
        "{largest} for {count} events of {per_event} bytes"
    );
}

/// Goal: a fragment claiming 65535 fragments of a large size is refused before storing when it
/// implies a message over the limit, and never allocates by the claim.
#[test]
fn fragment_count_claim_never_allocates() {
    let mut c = PeerCodecConfig::new(9, NodeId(2));
    c.max_message_bytes = 1 << 20;
    let mut rx = PeerCodec::new(c);
    let body = vec![0u8; 1000];
    let mut d = Vec::new();
    d.extend_from_slice(&MAGIC);
    d.push(VERSION);
    d.push(0);
    d.extend_from_slice(&9u64.to_le_bytes());
    d.extend_from_slice(&1u64.to_le_bytes());
    d.extend_from_slice(&2u64.to_le_bytes());
    d.extend_from_slice(&[0u8; 16]); // incarnations: none
    d.extend_from_slice(&1u64.to_le_bytes());
    d.extend_from_slice(&0u16.to_le_bytes());
    d.extend_from_slice(&u16::MAX.to_le_bytes());
    d.extend_from_slice(&(body.len() as u32).to_le_bytes());
    d.extend_from_slice(&body);
    assert_eq!(d.len(), HEADER_BYTES + body.len());
    let (r, largest) = largest_alloc(|| rx.decode(&d, 0));
    assert!(r.is_none());
    assert_eq!(rx.drops().get(DropReason::TooLarge), 1);
    assert_eq!(largest, 0);
}

/// Goal: with a cluster secret, no altered datagram is ever accepted: the tag covers every byte.
/// Method: mutate valid tagged datagrams; anything decoded must be byte-identical to a valid one.
#[test]
fn tagged_datagrams_accept_no_alteration() {
    let mut rng = SplitMix64(0x7A6);
    let secret = Some(b"secret".to_vec());
    let mut tx_cfg = PeerCodecConfig::new(9, NodeId(1));
    tx_cfg.secret = secret.clone();
    let mut rx_cfg = PeerCodecConfig::new(9, NodeId(2));
    rx_cfg.secret = secret;
    let mut tx = PeerCodec::new(tx_cfg);
    let mut rx = PeerCodec::new(rx_cfg);
    let mut valid = Vec::new();
    for m in sample_messages() {
        tx.encode(&m, &mut |d| valid.push(d.to_vec()));
    }
    for _ in 0..ROUNDS {
        let pick = rng.index(valid.len());
        let input = mutate(&mut rng, &valid[pick]);
        if rx.decode(&input, 0).is_some() {
            assert!(valid.contains(&input), "an altered datagram was accepted");
        }
    }
    assert!(rx.drops().get(DropReason::BadTag) > 0);
}
