//! Peer datagram codec: every message round-trips, large messages fragment and reassemble under
//! reordering, duplication and loss, and every envelope failure is dropped and counted by its
//! own reason.

use std::collections::BTreeMap;
use zatt::types::*;
use zatt::wire::peer::*;

const CLUSTER: u64 = 0xC1;

fn cfg(id: u64, secret: Option<&[u8]>, max_datagram: usize) -> PeerCodecConfig {
    let mut c = PeerCodecConfig::new(CLUSTER, NodeId(id));
    c.secret = secret.map(|s| s.to_vec());
    c.max_datagram = max_datagram;
    c
}

fn membership() -> Membership {
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        members.insert(
            NodeId(id),
            Member {
                role: if id == 3 {
                    MemberRole::Learner
                } else {
                    MemberRole::Voter
                },
                addr: format!("127.0.0.1:{}", 5253 + id),
            },
        );
    }
    Membership { members }
}

fn msg(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(7),
        body,
    }
}

fn entries(n: usize, value_bytes: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let kind = [EntryKind::Normal, EntryKind::Noop, EntryKind::Config][i % 3];
            Entry::new(
                Term(7),
                LogIndex(100 + i as u64),
                kind,
                &vec![(i % 251) as u8; value_bytes],
            )
        })
        .collect()
}

fn append(n: usize, value_bytes: usize) -> Message {
    msg(MessageBody::AppendEntries {
        prev_log_index: LogIndex(99),
        prev_log_term: Term(6),
        entries: entries(n, value_bytes),
        leader_commit: LogIndex(98),
        read_seq: 12,
    })
}

pub fn every_message() -> Vec<Message> {
    vec![
        msg(MessageBody::PreVote {
            last_log_index: LogIndex(10),
            last_log_term: Term(3),
        }),
        msg(MessageBody::PreVoteResponse {
            granted: true,
            last_log_index: LogIndex(7),
            last_log_term: Term(2),
            voter: true,
        }),
        msg(MessageBody::PreVoteResponse {
            granted: false,
            last_log_index: LogIndex(9),
            last_log_term: Term(4),
            voter: false,
        }),
        msg(MessageBody::RequestVote {
            last_log_index: LogIndex(10),
            last_log_term: Term(3),
            transfer: true,
        }),
        msg(MessageBody::RequestVoteResponse { granted: false }),
        append(0, 0),
        append(5, 100),
        msg(MessageBody::AppendEntriesResponse {
            success: false,
            match_index: LogIndex(0),
            conflict_term: Term(4),
            conflict_index: LogIndex(50),
            last_index: LogIndex(60),
            read_seq: 3,
        }),
        msg(MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: LogIndex(500),
                term: Term(6),
                membership: membership(),
            },
            offset: 32768,
            total: 100_000,
            data: vec![0xAB; 4096],
            done: false,
        }),
        msg(MessageBody::InstallSnapshotResponse {
            snapshot_index: LogIndex(500),
            next_offset: 36864,
            installed: true,
        }),
        msg(MessageBody::TimeoutNow),
    ]
}

fn datagrams(codec: &mut PeerCodec, m: &Message) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    codec.encode(m, &mut |d| out.push(d.to_vec()));
    out
}

/// Goal: every message kind round-trips, with and without a secret.
#[test]
fn every_message_round_trips() {
    for secret in [None, Some(&b"s3cret"[..])] {
        let mut tx = PeerCodec::new(cfg(1, secret, 65_000));
        let mut rx = PeerCodec::new(cfg(2, secret, 65_000));
        for m in every_message() {
            let ds = datagrams(&mut tx, &m);
            assert_eq!(ds.len(), 1, "{}", m.body.name());
            assert_eq!(rx.decode(&ds[0], 0), Some(m));
        }
        assert_eq!(rx.drops().total(), 0);
    }
}

/// Goal: a 200 KiB AppendEntries over 1400-byte datagrams arrives whole whatever the order of
/// its fragments, and duplicates neither break nor repeat it.
/// Method: reverse, interleave and duplicate the fragments.
#[test]
fn large_append_reassembles_from_reordered_duplicated_fragments() {
    let secret = Some(&b"k"[..]);
    let mut tx = PeerCodec::new(cfg(1, secret, 1400));
    let mut rx = PeerCodec::new(cfg(2, secret, 1400));
    let m = append(200, 1024);
    let ds = datagrams(&mut tx, &m);
    assert!(ds.len() > 140, "{} fragments", ds.len());
    assert!(ds.iter().all(|d| d.len() <= 1400));

    let mut order: Vec<usize> = (0..ds.len()).rev().collect();
    order.insert(3, ds.len() - 1); // a duplicate early on
    order.insert(10, 5);
    let mut got = Vec::new();
    for &i in &order {
        if let Some(x) = rx.decode(&ds[i], 1) {
            got.push(x);
        }
    }
    assert_eq!(got, vec![m.clone()]);
    assert_eq!(rx.partial_messages(), 0);
    assert_eq!(rx.reassembly_bytes(), 0);
    assert_eq!(rx.drops().total(), 0);

    // A duplicate arriving after completion starts a partial that never completes; expiry frees it.
    rx.decode(&ds[0], 2);
    assert_eq!(rx.partial_messages(), 1);
    rx.expire(2 + 51);
    assert_eq!(rx.partial_messages(), 0);
    assert_eq!(rx.drops().get(DropReason::Stale), 1);
}

/// Goal: with a fragment missing no message comes out, and expiry frees all its memory.
#[test]
fn missing_fragment_yields_nothing_and_expiry_frees_memory() {
    let mut tx = PeerCodec::new(cfg(1, None, 1400));
    let mut rx = PeerCodec::new(cfg(2, None, 1400));
    let m = append(200, 1024);
    let ds = datagrams(&mut tx, &m);
    for (i, d) in ds.iter().enumerate() {
        if i != 17 {
            assert_eq!(rx.decode(d, 10), None);
        }
    }
    assert_eq!(rx.partial_messages(), 1);
    assert!(rx.reassembly_bytes() > 200 * 1024);
    rx.expire(60); // 50 ticks after the first fragment: not yet stale
    assert_eq!(rx.partial_messages(), 1);
    rx.expire(61);
    assert_eq!(rx.partial_messages(), 0);
    assert_eq!(rx.reassembly_bytes(), 0);
    assert_eq!(rx.drops().get(DropReason::Stale), 1);
    // The next message from the same sender still gets through.
    let ds = datagrams(&mut tx, &m);
    let out: Vec<_> = ds.iter().filter_map(|d| rx.decode(d, 70)).collect();
    assert_eq!(out, vec![m]);
}

/// Goal: interleaved fragments of several messages from one sender reassemble independently.
#[test]
fn interleaved_messages_reassemble_independently() {
    let mut tx = PeerCodec::new(cfg(1, None, 1400));
    let mut rx = PeerCodec::new(cfg(2, None, 1400));
    let a = append(10, 1000);
    let b = append(12, 900);
    let da = datagrams(&mut tx, &a);
    let db = datagrams(&mut tx, &b);
    let mut got = Vec::new();
    for i in 0..da.len().max(db.len()) {
        for ds in [&db, &da] {
            if let Some(d) = ds.get(i) {
                got.extend(rx.decode(d, 0));
            }
        }
    }
    got.sort_by_key(|m| match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries.len(),
        _ => 0,
    });
    assert_eq!(got, vec![a, b]);
}

/// Goal: a sender holds at most `max_partial_messages` partials; the oldest is evicted.
#[test]
fn partials_per_sender_are_bounded_evicting_the_oldest() {
    let mut c = cfg(2, None, 1400);
    c.max_partial_messages = 2;
    let mut tx = PeerCodec::new(cfg(1, None, 1400));
    let mut rx = PeerCodec::new(c);
    let msgs: Vec<_> = (0..3)
        .map(|_| datagrams(&mut tx, &append(4, 1000)))
        .collect();
    for ds in &msgs {
        rx.decode(&ds[0], 0); // first fragment of each
    }
    assert_eq!(rx.partial_messages(), 2);
    assert_eq!(rx.drops().get(DropReason::ReassemblyFull), 1);
    // The oldest (message 0) is gone: its remaining fragments do not complete it.
    let done: Vec<_> = msgs[0][1..]
        .iter()
        .filter_map(|d| rx.decode(d, 0))
        .collect();
    assert!(done.is_empty());
    // The newest completes.
    let done: Vec<_> = msgs[2][1..]
        .iter()
        .filter_map(|d| rx.decode(d, 0))
        .collect();
    assert_eq!(done.len(), 1);
}

/// Goal: the reassembly byte budget holds; a message bigger than the whole budget is refused.
#[test]
fn reassembly_bytes_are_bounded() {
    let mut c = cfg(2, None, 1400);
    c.max_reassembly_bytes = 50_000;
    let mut tx = PeerCodec::new(cfg(1, None, 1400));
    let mut rx = PeerCodec::new(c);
    let ds = datagrams(&mut tx, &append(100, 1000));
    let mut out = Vec::new();
    for d in &ds {
        out.extend(rx.decode(d, 0));
        assert!(rx.reassembly_bytes() <= 50_000);
    }
    assert!(out.is_empty());
    assert!(rx.drops().get(DropReason::ReassemblyFull) >= 1);
}

/// Goal: a fragment announcing a message over `max_message_bytes` is refused before storing;
/// a message over it is not even sent.
#[test]
fn oversized_messages_are_refused() {
    let mut c = cfg(2, None, 1400);
    c.max_message_bytes = 10_000;
    let mut tx = PeerCodec::new(cfg(1, None, 1400));
    let mut rx = PeerCodec::new(c.clone());
    let ds = datagrams(&mut tx, &append(20, 1000));
    assert_eq!(rx.decode(&ds[0], 0), None);
    assert_eq!(rx.drops().get(DropReason::TooLarge), 1);
    assert_eq!(rx.partial_messages(), 0);

    c.self_id = NodeId(1);
    let mut small_tx = PeerCodec::new(c);
    assert!(datagrams(&mut small_tx, &append(20, 1000)).is_empty());
    assert_eq!(small_tx.drops().get(DropReason::Unsendable), 1);
}

fn single(secret: Option<&[u8]>) -> Vec<u8> {
    let mut tx = PeerCodec::new(cfg(1, secret, 65_000));
    datagrams(&mut tx, &append(3, 50)).remove(0)
}

fn dropped_as(rx: &mut PeerCodec, d: &[u8], reason: DropReason) {
    let before = rx.drops().get(reason);
    let total = rx.drops().total();
    assert_eq!(rx.decode(d, 0), None, "{reason:?}");
    assert_eq!(rx.drops().get(reason), before + 1, "{reason:?}");
    assert_eq!(rx.drops().total(), total + 1, "{reason:?}: counted once");
}

/// Goal: each envelope failure is dropped and counted under its own reason.
/// Method: start from a good datagram and break one thing at a time.
#[test]
fn envelope_failures_are_counted_by_reason() {
    let secret = Some(&b"right"[..]);
    let mut rx = PeerCodec::new(cfg(2, secret, 65_000));
    let good = single(secret);
    assert!(rx.decode(&good, 0).is_some());

    dropped_as(&mut rx, &single(Some(b"wrong")), DropReason::BadTag);
    dropped_as(&mut rx, &single(None), DropReason::MissingTag);
    dropped_as(&mut rx, &good[..10], DropReason::TooShort);
    dropped_as(&mut rx, &good[..good.len() - 1], DropReason::BadLength);

    let mut wrong_cluster = PeerCodec::new(PeerCodecConfig {
        cluster_id: CLUSTER + 1,
        ..cfg(1, secret, 65_000)
    });
    dropped_as(
        &mut rx,
        &datagrams(&mut wrong_cluster, &append(1, 1))[0],
        DropReason::WrongCluster,
    );

    let mut tx = PeerCodec::new(cfg(1, secret, 65_000));
    let mut to3 = append(1, 1);
    to3.to = NodeId(3);
    dropped_as(&mut rx, &datagrams(&mut tx, &to3)[0], DropReason::NotForMe);

    let mut b = good.clone();
    b[0] ^= 1;
    dropped_as(&mut rx, &b, DropReason::BadMagic);
    let mut b = good.clone();
    b[2] = 9;
    dropped_as(&mut rx, &b, DropReason::BadVersion);
    let mut b = good.clone();
    b[3] |= 0x80;
    dropped_as(&mut rx, &b, DropReason::BadFlags);
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0x01; // the tag
    dropped_as(&mut rx, &b, DropReason::BadTag);
    let mut b = good.clone();
    b[HEADER_BYTES] ^= 0x01; // the body, under the tag
    dropped_as(&mut rx, &b, DropReason::BadTag);

    let mut plain_rx = PeerCodec::new(cfg(2, None, 65_000));
    dropped_as(&mut plain_rx, &good, DropReason::UnexpectedTag);
    // Without a secret a corrupted body passes the envelope and fails as a body.
    let mut b = single(None);
    b[HEADER_BYTES + 8] = 200; // the message kind
    dropped_as(&mut plain_rx, &b, DropReason::BadBody);
}

/// Goal: a message from node 0 or claiming to be from the receiver itself is refused.
#[test]
fn bad_sender_is_refused() {
    let mut rx = PeerCodec::new(cfg(2, None, 65_000));
    let mut tx = PeerCodec::new(cfg(1, None, 65_000));
    for from in [0, 2] {
        let mut m = append(1, 1);
        m.from = NodeId(from);
        dropped_as(&mut rx, &datagrams(&mut tx, &m)[0], DropReason::BadSender);
    }
}

/// Goal: the drop counters list every reason once, for status output.
#[test]
fn drop_counters_list_every_reason() {
    let rx = PeerCodec::new(cfg(2, None, 65_000));
    let names: Vec<_> = rx.drops().iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), DropReason::ALL.len());
    assert!(names.contains(&"BadTag") && names.contains(&"Stale"));
}

/// Goal: a declared entry count far beyond the bytes present is refused before allocating.
#[test]
fn huge_declared_entry_count_is_refused() {
    let mut body = Vec::new();
    encode_body(&append(0, 0), &mut body);
    let n = body.len();
    body[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_body(&body, NodeId(1), NodeId(2)).is_err());
}

/// A codec for node `id` whose data directory has incarnation `inc`.
fn with_incarnation(id: u64, inc: u64) -> PeerCodec {
    PeerCodec::new(PeerCodecConfig {
        incarnation: inc,
        ..cfg(id, None, 65_000)
    })
}

/// Goal: every Raft datagram names the sender's incarnation and the receiver's as the sender
/// has pinned it (0 until pinned, and again after unpinning); the receiver gets both, to judge
/// (the host's rules, `host/peers.rs`).
#[test]
fn raft_messages_carry_both_incarnations() {
    let mut rx = with_incarnation(2, 0xB);
    let mut tx = with_incarnation(1, 0xA1);
    let m = append(1, 1);
    let got = |rx: &mut PeerCodec, tx: &mut PeerCodec| rx.decode_inbound(&datagrams(tx, &m)[0], 0);
    assert_eq!(
        got(&mut rx, &mut tx),
        Some(Inbound::Raft {
            msg: m.clone(),
            from_incarnation: 0xA1,
            to_incarnation: 0,
        })
    );
    tx.pin(NodeId(2), 0xB);
    assert_eq!(tx.pinned(NodeId(2)), Some(0xB));
    assert!(matches!(
        got(&mut rx, &mut tx),
        Some(Inbound::Raft {
            to_incarnation: 0xB,
            ..
        })
    ));
    tx.unpin(NodeId(2));
    assert!(matches!(
        got(&mut rx, &mut tx),
        Some(Inbound::Raft {
            to_incarnation: 0,
            ..
        })
    ));
    // Nothing about incarnations is refused here: that is the host's decision.
    assert_eq!(rx.drops().total(), 0);
}

/// Goal: probes and their replies carry both incarnations (the sender's, and the one it names
/// for the receiver) and whether the sender is a member.
#[test]
fn probes_round_trip() {
    let mut a = with_incarnation(1, 0xA);
    let mut b = with_incarnation(2, 0xB2);
    let mut out = Vec::new();
    b.encode_probe(NodeId(1), 0xA0, false, false, &mut |d| out.push(d.to_vec()));
    assert_eq!(
        a.decode_inbound(&out[0], 0),
        Some(Inbound::Probe(Probe {
            from: NodeId(2),
            incarnation: 0xB2,
            known_as: 0xA0,
            member: false,
        }))
    );
    out.clear();
    a.encode_probe(NodeId(2), 0xB1, true, true, &mut |d| out.push(d.to_vec()));
    assert_eq!(
        b.decode_inbound(&out[0], 0),
        Some(Inbound::ProbeReply(Probe {
            from: NodeId(1),
            incarnation: 0xA,
            known_as: 0xB1,
            member: true,
        }))
    );
    // A probe body with a bad member flag or trailing bytes is a bad body.
    let mut bad = out[0].clone();
    let n = bad.len();
    bad[n - 1] = 7;
    dropped_as(&mut b, &bad, DropReason::BadBody);
    assert_eq!(
        b.decode(&out[0], 0),
        None,
        "decode() yields Raft messages only"
    );
}
