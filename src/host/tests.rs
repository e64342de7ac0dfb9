//! The host's ordering rules, driven event by event with a scripted peer: what waits for a
//! durable token and what does not. The simulator searches the same rules with faults; these
//! pin the cases one can name.

use super::*;
use crate::raft::Role;
use crate::wire::client::{encode_request, Request};

/// An `Output` that records everything the host asks for.
#[derive(Default)]
struct Recorder {
    sent: Vec<Message>,
    answers: Vec<(u64, Response)>,
    batches: Vec<(u64, WriteBatch)>,
    /// Tokens submitted and not yet reported durable, in order.
    pending: VecDeque<u64>,
    /// Messages handed over with a batch, by token: `report` sends them.
    then_send: Vec<(u64, Vec<Message>)>,
    /// Whether each batch submitted was quiet, in order.
    quiet: Vec<bool>,
    /// Times the host said it waits for tokens submitted (`await_storage`).
    awaited: usize,
    snapshots: Vec<Snapshot>,
    /// Frames streamed (watch events and progress), decoded.
    streamed: Vec<(u64, Response)>,
    /// What `pending_bytes` says: bytes unsent on every connection, or closed.
    unsent: usize,
    closed: bool,
    /// Pins made durable (and unpins), in order: (peer, incarnation; 0 for an unpin).
    pins: Vec<(NodeId, u64)>,
    probes: Vec<(NodeId, u64, bool, bool)>,
    /// Times the core's log was compacted (`Output::compacted`).
    compactions: usize,
}

impl Output for Recorder {
    fn send(&mut self, msg: Message) {
        self.sent.push(msg);
    }
    fn answer(&mut self, to: ReplyTo, resp: &Response) {
        self.answers.push((to.request_id, resp.clone()));
    }
    fn answer_value(&mut self, to: ReplyTo, value: Option<&[u8]>, revision: u64, applied: u64) {
        let resp = Response::Value {
            value: value.map(|v| v.to_vec()),
            revision,
            applied_index: applied,
        };
        self.answers.push((to.request_id, resp));
    }
    fn submit_batch(
        &mut self,
        token: u64,
        batch: WriteBatch,
        then_send: Vec<Message>,
        quiet: bool,
    ) {
        self.quiet.push(quiet);
        self.batches.push((token, batch));
        self.pending.push_back(token);
        self.then_send.push((token, then_send));
    }
    fn submit_snapshot(&mut self, token: u64, snapshot: Snapshot) {
        self.snapshots.push(snapshot);
        self.pending.push_back(token);
    }
    fn stream(&mut self, _to: ReplyTo, encode: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut frame = Vec::new();
        encode(&mut frame);
        let limits = crate::wire::client::FrameLimits::default();
        let decoded = crate::wire::client::decode_response(&frame, &limits);
        self.streamed
            .push(decoded.expect("the host streams whole, valid frames"));
    }
    fn pending_bytes(&self, _to: ReplyTo) -> Option<usize> {
        (!self.closed).then_some(self.unsent)
    }
    fn pin_peer(&mut self, peer: NodeId, incarnation: u64) {
        self.pins.push((peer, incarnation));
    }
    fn unpin_peer(&mut self, peer: NodeId) {
        self.pins.push((peer, 0));
    }
    fn send_probe(&mut self, to: NodeId, known_as: u64, reply: bool, member: bool) {
        self.probes.push((to, known_as, reply, member));
    }
    fn compacted(&mut self) {
        self.compactions += 1;
    }
    fn await_storage(&mut self) {
        self.awaited += 1;
    }
}

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

fn host(voters: &[u64]) -> Host {
    host_with(voters, HostConfig::new(1 << 20, 1_000_000))
}

/// Node n1 of a new cluster of `voters` (n`v` at 127.0.0.1:5000+`v`), configured by `cfg`.
fn host_with(voters: &[u64], cfg: HostConfig) -> Host {
    let m = voters_membership(voters);
    Host::new(cfg, raft::Config::new(N1), Boot::bootstrap(&m), 7).unwrap()
}

fn now() -> Now {
    Now::default()
}

/// Ticks until the host sends a message of this kind (its election timer is random).
fn tick_until(h: &mut Host, out: &mut Recorder, what: &str) -> Message {
    for _ in 0..100 {
        h.tick();
        h.end_turn(out, now()).unwrap();
        if let Some(i) = out.sent.iter().position(|m| m.body.name() == what) {
            return out.sent.remove(i);
        }
    }
    panic!("no {what} after 100 ticks");
}

/// Reports the oldest outstanding token durable and ends the turn.
fn durable_next(h: &mut Host, out: &mut Recorder) {
    let t = out.pending.pop_front().expect("a token is outstanding");
    report(h, out, t);
    h.end_turn(out, now()).unwrap();
}

/// As a driver does once token `t` is durable: sends what was handed over with it, then tells
/// the host.
fn report(h: &mut Host, out: &mut Recorder, t: u64) {
    if let Some(i) = out.then_send.iter().position(|(k, _)| *k == t) {
        let (_, msgs) = out.then_send.remove(i);
        out.sent.extend(msgs);
    }
    h.durable(out, t).unwrap();
}

fn deliver(h: &mut Host, out: &mut Recorder, term: u64, body: MessageBody) {
    h.peer_message(
        out,
        Message {
            from: N2,
            to: N1,
            term: Term(term),
            body,
        },
        0,
        0,
    );
    h.end_turn(out, now()).unwrap();
}

fn take(out: &mut Recorder, what: &str) -> Option<Message> {
    let i = out.sent.iter().position(|m| m.body.name() == what)?;
    Some(out.sent.remove(i))
}

fn ack(match_index: u64) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        success: true,
        match_index: LogIndex(match_index),
        conflict_term: Term(0),
        conflict_index: LogIndex(0),
        last_index: LogIndex(match_index),
        read_seq: 0,
    }
}

fn put(h: &mut Host, out: &mut Recorder, id: u64, key: &[u8]) {
    let req = Request::Put {
        session: None,
        key: key.to_vec(),
        value: b"v".to_vec(),
    };
    request(h, out, id, &req);
}

/// Makes n1 leader of a two-voter cluster in term 2 through a scripted n2.
fn elect(h: &mut Host, out: &mut Recorder) {
    let pv = tick_until(h, out, "PreVote");
    deliver(
        h,
        out,
        pv.term.0,
        MessageBody::PreVoteResponse {
            granted: true,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            voter: true,
        },
    );
    assert_eq!(h.raft().role(), Role::Candidate);
    assert!(
        take(out, "RequestVote").is_none(),
        "a candidate asks for votes only once its own vote is durable"
    );
    durable_next(h, out);
    let rv = take(out, "RequestVote").expect("asked once durable");
    deliver(
        h,
        out,
        rv.term.0,
        MessageBody::RequestVoteResponse { granted: true },
    );
    assert_eq!(h.raft().role(), Role::Leader);
}

#[test]
fn a_write_is_answered_only_once_applied_after_its_entry_is_durable() {
    // Goal: the persistence contract through the host on a lone voter: nothing answers a
    // write before the batch holding it is durable. Method: propose, look, report durable, look.
    let mut h = host(&[1]);
    let mut out = Recorder::default();
    for _ in 0..100 {
        h.tick();
        h.end_turn(&mut out, now()).unwrap();
        while !out.pending.is_empty() {
            durable_next(&mut h, &mut out);
        }
        if h.raft().role() == Role::Leader {
            break;
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    while !out.pending.is_empty() {
        durable_next(&mut h, &mut out);
    }
    put(&mut h, &mut out, 41, b"k");
    assert!(out.answers.is_empty(), "answered before durable");
    assert_eq!(out.pending.len(), 1, "the entry went to storage");
    durable_next(&mut h, &mut out);
    assert_eq!(out.answers.len(), 1);
    assert_eq!(out.answers[0].0, 41);
    assert!(matches!(out.answers[0].1, Response::Written { .. }));
    assert_eq!(
        h.kv().get(b"k").map(|(v, _)| v.to_vec()),
        Some(b"v".to_vec())
    );
}

#[test]
fn a_commit_only_hard_state_rides_with_the_next_batch() {
    // Goal: a hard state that moves only the commit index costs no batch of its own, and the
    // next batch carries it. Method: a leader learns of a commit (a follower's ack) with
    // nothing else to write; then a proposal's batch must hold the new commit index.
    let mut h = host(&[1, 2]);
    let mut out = Recorder::default();
    elect(&mut h, &mut out);
    durable_next(&mut h, &mut out); // the leader's no-op at index 2
    let batches = out.batches.len();
    deliver(&mut h, &mut out, 2, ack(2));
    assert_eq!(h.raft().commit_index(), LogIndex(2));
    assert_eq!(
        out.batches.len(),
        batches,
        "a commit-only hard state wrote a batch"
    );
    put(&mut h, &mut out, 1, b"k");
    let (_, b) = out.batches.last().unwrap();
    assert_eq!(b.entries.len(), 1);
    assert_eq!(b.hard_state.map(|hs| hs.commit), Some(LogIndex(2)));
}

#[test]
fn a_commit_only_hard_state_behind_a_batch_in_flight_still_reports_its_mark() {
    // Goal: a Ready that writes nothing (its commit-only hard state deferred) while an earlier
    // batch is in flight still reports its persist mark once that batch is durable. Before
    // the fix it was dropped; the core, which matches reports to marks in order, then took
    // each later report for the one before it with the same (index, term), and a candidate
    // whose vote was durable never learned it: elected, never leading (the simulator found
    // this as a liveness failure of two-voter clusters). Method: produce that Ready, then make
    // the node re-elect itself with the same last entry and check that it leads.
    let mut h = host(&[1, 2]);
    let mut out = Recorder::default();
    elect(&mut h, &mut out);
    // The no-op at index 2 and a write at index 3, the write's batch still in flight when n2's
    // ack of the no-op commits it: a commit-only Ready behind a batch.
    put(&mut h, &mut out, 1, b"k");
    durable_next(&mut h, &mut out);
    deliver(&mut h, &mut out, 2, ack(2));
    assert_eq!(h.raft().commit_index(), LogIndex(2));
    durable_next(&mut h, &mut out);
    // n2 leads term 3 for a while (n1 follows: a new term and vote to store), then goes quiet.
    deliver(
        &mut h,
        &mut out,
        3,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(3),
            prev_log_term: Term(2),
            entries: vec![],
            leader_commit: LogIndex(2),
            read_seq: 0,
        },
    );
    assert_eq!(h.raft().role(), Role::Follower);
    while !out.pending.is_empty() {
        durable_next(&mut h, &mut out);
    }
    out.sent.clear();
    let pv = tick_until(&mut h, &mut out, "PreVote");
    deliver(
        &mut h,
        &mut out,
        pv.term.0,
        MessageBody::PreVoteResponse {
            granted: true,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            voter: true,
        },
    );
    assert_eq!(h.raft().role(), Role::Candidate);
    durable_next(&mut h, &mut out);
    let rv = take(&mut out, "RequestVote").expect("asked once durable");
    deliver(
        &mut h,
        &mut out,
        rv.term.0,
        MessageBody::RequestVoteResponse { granted: true },
    );
    assert_eq!(
        h.raft().role(),
        Role::Leader,
        "won the vote with its own vote durable, yet does not lead"
    );
}

#[test]
fn the_log_is_bounded_by_bytes_as_well_as_by_entries() {
    // Goal: a log that holds `snapshot_log_bytes` takes a snapshot (and then compacts) long
    // before the entry count would. Method: a lone voter with a snapshot every million
    // entries but a 4 KiB byte bound; write 1 KiB values until a snapshot is submitted, make
    // it durable, and check the core's log shrank below the bound.
    let (mut h, mut out) = lone_leader(|c| c.snapshot_log_bytes = 4096);
    let big = vec![b'v'; 1024];
    let mut id = 0;
    while out.snapshots.is_empty() {
        id += 1;
        assert!(id < 20, "no snapshot after {id} writes of 1 KiB");
        let mut frame = Vec::new();
        let req = Request::Put {
            session: None,
            key: format!("k{id}").into_bytes(),
            value: big.clone(),
        };
        encode_request(id, &req, &mut frame);
        let to = ReplyTo {
            conn: 0,
            generation: 0,
            request_id: id,
            op: 0,
            since: Duration::ZERO,
        };
        h.client_frame(&mut out, now(), to, &frame);
        h.end_turn(&mut out, now()).unwrap();
        while !out.pending.is_empty() {
            durable_next(&mut h, &mut out);
        }
    }
    assert!(id >= 3, "a snapshot before the log reached its bound");
    assert!(
        h.raft().log_bytes() < 4096,
        "the log still holds {} B after its snapshot was stored",
        h.raft().log_bytes()
    );
    assert_eq!(h.kv().len(), id as usize);
}

#[test]
fn batches_made_durable_together_cost_the_leader_one_acknowledgement() {
    // Goal: a follower whose storage makes several batches durable in one sync sends its
    // leader one AppendEntries acknowledgement for all of them (the latest match index), not
    // one per batch, and still none before they are durable. Method: two AppendEntries from
    // n2, each its own batch; the acknowledgements handed over with them are released
    // together, as a driver does: of those with one `ack_key`, only the last.
    let mut h = host(&[1, 2]);
    let mut out = Recorder::default();
    let append = |prev: u64, prev_term: u64, index: u64| MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev),
        prev_log_term: Term(prev_term),
        entries: vec![Entry::new(
            Term(2),
            LogIndex(index),
            EntryKind::Normal,
            b"x",
        )],
        leader_commit: LogIndex(1),
        read_seq: index,
    };
    deliver(&mut h, &mut out, 2, append(1, 1, 2));
    deliver(&mut h, &mut out, 2, append(2, 2, 3));
    assert_eq!(out.pending.len(), 2, "each AppendEntries is its own batch");
    assert!(
        take(&mut out, "AppendEntriesResponse").is_none(),
        "acked before durable"
    );
    // (That the later one covers the earlier whatever their order is
    // `acknowledgements_handed_to_storage_cover_those_handed_before`.)
    let handed: Vec<Message> = out.then_send.drain(..).flat_map(|(_, m)| m).collect();
    assert_eq!(handed.len(), 2, "each batch carries its acknowledgement");
    crate::storage::release(handed, ack_key, |m| out.sent.push(m));
    for _ in 0..2 {
        let t = out.pending.pop_front().unwrap();
        h.durable(&mut out, t).unwrap();
    }
    h.end_turn(&mut out, now()).unwrap();
    let ack = take(&mut out, "AppendEntriesResponse").expect("acknowledged once durable");
    assert!(
        take(&mut out, "AppendEntriesResponse").is_none(),
        "one acknowledgement per batch instead of one for the sync"
    );
    match ack.body {
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            read_seq,
            ..
        } => {
            assert!(success);
            assert_eq!(match_index, LogIndex(3));
            assert_eq!(read_seq, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_followers_batches_are_quiet_until_something_waits_behind_them() {
    // Goal: a follower's batch, whose acknowledgement storage sends itself, needs no turn of
    // its own when durable (quiet), a leader's does; and a Ready that wrote nothing queued
    // behind a batch in flight (a heartbeat's acknowledgement, which the host keeps) makes the
    // host ask for the next token at once. Method: an AppendEntries with an entry, then a
    // heartbeat, to a follower; then the same host's batches once it leads alone.
    let mut h = host(&[1, 2]);
    let mut out = Recorder::default();
    let append = |entries: Vec<Entry>, read_seq: u64| MessageBody::AppendEntries {
        prev_log_index: LogIndex(1),
        prev_log_term: Term(1),
        entries,
        leader_commit: LogIndex(1),
        read_seq,
    };
    deliver(
        &mut h,
        &mut out,
        2,
        append(
            vec![Entry::new(Term(2), LogIndex(2), EntryKind::Normal, b"x")],
            1,
        ),
    );
    assert_eq!(out.quiet, vec![true], "a follower's batch is quiet");
    assert_eq!(out.awaited, 0);
    assert!(
        take(&mut out, "AppendEntriesResponse").is_none(),
        "acknowledged before durable"
    );
    deliver(&mut h, &mut out, 2, append(Vec::new(), 2));
    assert_eq!(out.quiet.len(), 1, "a heartbeat writes nothing");
    assert_eq!(out.awaited, 1, "its acknowledgement waits behind the batch");
    durable_next(&mut h, &mut out);
    let acks: Vec<u64> = std::iter::from_fn(|| take(&mut out, "AppendEntriesResponse"))
        .filter_map(|m| match m.body {
            MessageBody::AppendEntriesResponse { read_seq, .. } => Some(read_seq),
            _ => None,
        })
        .collect();
    assert!(
        acks.contains(&2),
        "the heartbeat's round is echoed: {acks:?}"
    );

    let (_, out) = leading(HostConfig::new(1 << 20, 1_000_000));
    assert!(!out.quiet.is_empty() && !out.quiet.iter().any(|q| *q));
}

#[test]
fn acknowledgements_handed_to_storage_cover_those_handed_before() {
    // Goal: an acknowledgement handed to storage with a batch carries the largest match index
    // and read round of those handed before it to the same leader in the same term (so a
    // driver may send only the last of those one sync releases); another term starts over.
    // Method: hand over acknowledgements out of order and in two terms.
    let mut h = host(&[1, 2]);
    let ack = |term: u64, m: u64, r: u64| Message {
        from: N1,
        to: N2,
        term: Term(term),
        body: MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(m),
            conflict_term: Term(0),
            conflict_index: LogIndex(0),
            last_index: LogIndex(m),
            read_seq: r,
        },
    };
    let handed = |h: &mut Host, m: Message| match h.sent_when_durable(vec![m]).pop() {
        Some(Message {
            term,
            body:
                MessageBody::AppendEntriesResponse {
                    match_index,
                    read_seq,
                    ..
                },
            ..
        }) => (term.0, match_index.0, read_seq),
        other => panic!("{other:?}"),
    };
    assert_eq!(handed(&mut h, ack(2, 5, 9)), (2, 5, 9));
    assert_eq!(handed(&mut h, ack(2, 3, 4)), (2, 5, 9));
    assert_eq!(handed(&mut h, ack(2, 4, 11)), (2, 5, 11));
    assert_eq!(handed(&mut h, ack(3, 1, 1)), (3, 1, 1));
    assert_eq!(handed(&mut h, ack(3, 2, 0)), (3, 2, 1));
    assert_eq!(h.handed_acks.len(), 1, "older terms are forgotten");
}

/// A lone voter that leads, with everything it wrote durable (`cfg` as given).
fn leading(cfg: HostConfig) -> (Host, Recorder) {
    let mut h = host_with(&[1], cfg);
    let mut out = Recorder::default();
    for _ in 0..100 {
        h.tick();
        h.end_turn(&mut out, now()).unwrap();
        while !out.pending.is_empty() {
            durable_next(&mut h, &mut out);
        }
        if h.raft().role() == Role::Leader {
            break;
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    (h, out)
}

/// A put made durable and applied; its revision.
fn put_applied(h: &mut Host, out: &mut Recorder, key: &[u8]) -> u64 {
    put(h, out, 1, key);
    while !out.pending.is_empty() {
        durable_next(h, out);
    }
    let i = out.answers.iter().position(|(id, _)| *id == 1);
    match i.map(|i| out.answers.remove(i)) {
        Some((1, Response::Written { revision })) => revision,
        other => panic!("{other:?}"),
    }
}

/// A host whose watchers get each change as it is applied (these tests do not move time).
fn unbatched() -> HostConfig {
    let mut cfg = HostConfig::new(1 << 20, 1_000_000);
    cfg.watch.frame_interval = Duration::ZERO;
    cfg
}

const WATCHER: ReplyTo = ReplyTo {
    conn: 5,
    generation: 9,
    request_id: 100,
    op: 0,
    since: Duration::ZERO,
};

fn request_to(h: &mut Host, out: &mut Recorder, to: ReplyTo, req: &Request) {
    let mut frame = Vec::new();
    encode_request(to.request_id, req, &mut frame);
    h.client_frame(out, now(), to, &frame);
    h.end_turn(out, now()).unwrap();
}

fn watch(h: &mut Host, out: &mut Recorder, prefix: &[u8], from_revision: u64) {
    let req = Request::Watch {
        prefix: prefix.to_vec(),
        from_revision,
    };
    request_to(h, out, WATCHER, &req);
}

/// The events streamed so far, as (revision, key) pairs.
fn events(out: &Recorder) -> Vec<(u64, Vec<u8>)> {
    out.streamed
        .iter()
        .filter_map(|(_, r)| match r {
            Response::WatchEvents(e) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .map(|e| (e.revision(), e.key().to_vec()))
        .collect()
}

#[test]
fn a_watch_streams_the_changes_under_its_prefix_and_ends_when_cancelled() {
    // Goal: a watch from "now" is acknowledged with the revision it starts after, then gets
    // exactly the changes under its prefix, in order; CancelWatch ends it with `Done`.
    let (mut h, mut out) = leading(unbatched());
    put_applied(&mut h, &mut out, b"w/before");
    let applied = h.kv().applied_index().0;
    watch(&mut h, &mut out, b"w/", 0);
    assert_eq!(
        out.streamed,
        vec![(100, Response::WatchProgress { revision: applied })]
    );
    let a = put_applied(&mut h, &mut out, b"w/a");
    put_applied(&mut h, &mut out, b"x/a");
    let b = put_applied(&mut h, &mut out, b"w/b");
    assert_eq!(
        events(&out),
        vec![(a, b"w/a".to_vec()), (b, b"w/b".to_vec())]
    );
    assert!(out.streamed.iter().all(|(id, _)| *id == 100));
    assert_eq!(h.watcher_count(), 1);
    assert_eq!(metric(&h, "zatt_watchers"), 1.0);
    assert!(metric(&h, "zatt_watch_history_changes") >= 3.0);
    assert!(metric(&h, "zatt_watch_history_bytes") > 0.0);
    let cancel = ReplyTo {
        request_id: 101,
        ..WATCHER
    };
    request_to(
        &mut h,
        &mut out,
        cancel,
        &Request::CancelWatch { watch_id: 100 },
    );
    assert_eq!(
        out.answers,
        vec![(100, Response::Done), (101, Response::Done)]
    );
    assert_eq!(h.watcher_count(), 0);
    assert_eq!(metric(&h, "zatt_watchers"), 0.0);
    put_applied(&mut h, &mut out, b"w/c");
    assert_eq!(events(&out).len(), 2, "an event after the cancel");
}

/// One unlabelled sample of the host's `/metrics` text.
fn metric(h: &Host, name: &str) -> f64 {
    let mut e = crate::metrics::Exposition::new();
    h.write_metrics(&mut e);
    let text = e.finish();
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_replay_is_paced_by_the_buffer_and_a_live_watcher_over_it_is_cut_off() {
    // Goal: a watch from an old revision is sent its backlog only while its connection holds
    // less than half the buffer limit (never cut off for it); once caught up, a watcher whose
    // connection holds more than the limit is ended with `WatchOverflow`.
    let mut cfg = unbatched();
    cfg.watch.buffer_bytes = 1000;
    let (mut h, mut out) = leading(cfg);
    let first = put_applied(&mut h, &mut out, b"k1");
    let second = put_applied(&mut h, &mut out, b"k2");
    out.unsent = 500;
    watch(&mut h, &mut out, b"", first);
    assert!(
        events(&out).is_empty(),
        "replayed into a connection half full"
    );
    h.end_turn(&mut out, now()).unwrap();
    assert!(events(&out).is_empty());
    assert_eq!(h.watcher_count(), 1, "a paced replay was cut off");
    out.unsent = 0;
    h.end_turn(&mut out, now()).unwrap();
    assert_eq!(
        events(&out),
        vec![(first, b"k1".to_vec()), (second, b"k2".to_vec())]
    );
    out.unsent = 1001;
    put_applied(&mut h, &mut out, b"k3");
    assert_eq!(
        out.answers.last(),
        Some(&(
            100,
            Response::Error(ErrorKind::WatchOverflow { limit: 1000 })
        ))
    );
    assert_eq!(h.watcher_count(), 0);
    assert_eq!(events(&out).len(), 2);
}

#[test]
fn a_watch_older_than_the_history_is_compacted_and_closed_connections_drop_watchers() {
    // Goal: a start before the history's oldest revision is refused with `Compacted { oldest }`;
    // watchers go with their connection, whether the driver says so or finds it closed.
    let mut cfg = unbatched();
    cfg.watch.history.max_changes = 2;
    let (mut h, mut out) = leading(cfg);
    let revs: Vec<u64> = (0..5)
        .map(|i| put_applied(&mut h, &mut out, format!("k{i}").as_bytes()))
        .collect();
    let oldest = h.watch_oldest().0;
    assert_eq!(oldest, revs[2] + 1, "the history keeps the last 2 changes");
    watch(&mut h, &mut out, b"", revs[2]);
    assert_eq!(
        out.answers.last(),
        Some(&(100, Response::Error(ErrorKind::Compacted { oldest })))
    );
    watch(&mut h, &mut out, b"", oldest);
    assert_eq!(
        events(&out),
        vec![(revs[3], b"k3".to_vec()), (revs[4], b"k4".to_vec())]
    );
    h.connection_closed(WATCHER.conn, WATCHER.generation);
    assert_eq!(h.watcher_count(), 0);
    watch(&mut h, &mut out, b"", 0);
    assert_eq!(h.watcher_count(), 1);
    out.closed = true;
    h.housekeeping(
        &mut out,
        Now {
            mono: Duration::from_secs(5),
            wall_ms: 0,
        },
    );
    assert_eq!(
        h.watcher_count(),
        0,
        "a watcher of a closed connection was kept"
    );
}

#[test]
fn progress_frames_do_not_pile_up_behind_a_watcher_that_does_not_read() {
    // Goal: on a quiet cluster, a watcher whose connection has unsent bytes gets no progress
    // frame (they would queue without bound: no change ever checks its buffer); once the
    // connection drains, progress resumes.
    let (mut h, mut out) = leading(unbatched());
    watch(&mut h, &mut out, b"", 0);
    let at = |s: u64| Now {
        mono: Duration::from_secs(s),
        wall_ms: 0,
    };
    let progress_frames = |out: &Recorder| {
        out.streamed
            .iter()
            .filter(|(_, r)| matches!(r, Response::WatchProgress { .. }))
            .count()
    };
    let before = progress_frames(&out);
    out.unsent = 21;
    for s in 10..20 {
        h.housekeeping(&mut out, at(s));
    }
    assert_eq!(
        progress_frames(&out),
        before,
        "progress queued behind unread frames"
    );
    assert_eq!(h.watcher_count(), 1);
    out.unsent = 0;
    h.housekeeping(&mut out, at(30));
    assert_eq!(progress_frames(&out), before + 1);
}

#[test]
fn changes_applied_within_the_frame_interval_go_in_one_frame_when_it_is_due() {
    // Goal: under a stream of writes a caught-up watcher gets one frame per frame interval,
    // not one per turn; the host says when the held-back changes are due, and a turn then
    // sends them. Method: a watcher gets a first change at time 0; two more applied at 0.5 ms
    // wait (due at 1 ms); a turn at 1 ms sends both in one frame.
    let (mut h, mut out) = leading(HostConfig::new(1 << 20, 1_000_000));
    watch(&mut h, &mut out, b"", 0);
    let first = put_applied(&mut h, &mut out, b"a");
    assert_eq!(events(&out), vec![(first, b"a".to_vec())]);
    let at = |us: u64| Now {
        mono: Duration::from_micros(us),
        wall_ms: 0,
    };
    let mut held = Vec::new();
    for key in [&b"b"[..], b"c"] {
        let mut frame = Vec::new();
        let req = Request::Put {
            session: None,
            key: key.to_vec(),
            value: b"v".to_vec(),
        };
        encode_request(1, &req, &mut frame);
        let to = ReplyTo {
            conn: 0,
            generation: 0,
            request_id: 1,
            op: 0,
            since: Duration::ZERO,
        };
        h.client_frame(&mut out, at(500), to, &frame);
        h.end_turn(&mut out, at(500)).unwrap();
        while let Some(t) = out.pending.pop_front() {
            report(&mut h, &mut out, t);
            h.end_turn(&mut out, at(500)).unwrap();
        }
        held.push(h.kv().applied_index().0);
    }
    assert_eq!(events(&out).len(), 1, "sent within the frame interval");
    assert_eq!(h.watch_due_at(), Some(Duration::from_millis(1)));
    let frames = out.streamed.len();
    h.end_turn(&mut out, at(1000)).unwrap();
    assert_eq!(out.streamed.len(), frames + 1, "one frame for both changes");
    assert_eq!(
        events(&out),
        vec![
            (first, b"a".to_vec()),
            (held[0], b"b".to_vec()),
            (held[1], b"c".to_vec())
        ]
    );
    assert_eq!(h.watch_due_at(), None);
}

#[test]
fn caught_up_watchers_on_one_prefix_get_the_same_frames_under_their_own_request_ids() {
    // Goal: the frames encoded once for every caught-up watcher on a prefix reach each of them
    // whole, under its own request id, split into frames as a lone watcher's would be; a
    // watcher on another prefix gets only its own changes. Method: three watchers (two on
    // "w/", one on "x/") become live on a first change; then 100 changes with 3000-byte keys
    // (more than one frame's worth) are held back by the frame interval and sent in one turn.
    let (mut h, mut out) = leading(HostConfig::new(1 << 20, 1_000_000));
    let watchers = [(5, 100, &b"w/"[..]), (6, 200, b"w/"), (7, 300, b"x/")];
    for (conn, id, prefix) in watchers {
        let to = ReplyTo {
            conn,
            generation: 1,
            request_id: id,
            op: 0,
            since: Duration::ZERO,
        };
        let req = Request::Watch {
            prefix: prefix.to_vec(),
            from_revision: 0,
        };
        request_to(&mut h, &mut out, to, &req);
    }
    let mut expected_w = vec![put_applied(&mut h, &mut out, b"w/first")];
    let mut expected_x = vec![put_applied(&mut h, &mut out, b"x/first")];
    let at = Now {
        mono: Duration::from_micros(500),
        wall_ms: 0,
    };
    for i in 0..100u32 {
        let mut key = if i % 10 == 9 {
            b"x/".to_vec()
        } else {
            b"w/".to_vec()
        };
        key.extend_from_slice(format!("{i:04}").as_bytes());
        key.resize(3000, b'.');
        let mut frame = Vec::new();
        let req = Request::Put {
            session: None,
            key,
            value: b"v".to_vec(),
        };
        encode_request(1, &req, &mut frame);
        let to = ReplyTo {
            conn: 0,
            generation: 0,
            request_id: 1,
            op: 0,
            since: Duration::ZERO,
        };
        h.client_frame(&mut out, at, to, &frame);
        h.end_turn(&mut out, at).unwrap();
        while let Some(t) = out.pending.pop_front() {
            report(&mut h, &mut out, t);
            h.end_turn(&mut out, at).unwrap();
        }
        let rev = h.kv().applied_index().0;
        if i % 10 == 9 {
            expected_x.push(rev);
        } else {
            expected_w.push(rev);
        }
    }
    let frames_before = out.streamed.len();
    h.end_turn(
        &mut out,
        Now {
            mono: Duration::from_millis(2),
            wall_ms: 0,
        },
    )
    .unwrap();
    let of = |id: u64, from: usize| -> (usize, Vec<u64>) {
        let frames: Vec<&Vec<_>> = out.streamed[from..]
            .iter()
            .filter_map(|(i, r)| match r {
                Response::WatchEvents(e) if *i == id => Some(e),
                _ => None,
            })
            .collect();
        let revs = frames.iter().flat_map(|e| e.iter().map(|e| e.revision()));
        (frames.len(), revs.collect())
    };
    let (frames_a, revs_a) = of(100, frames_before);
    let (frames_b, revs_b) = of(200, frames_before);
    assert!(
        frames_a >= 2,
        "90 changes of 3000 bytes fit in {frames_a} frame"
    );
    assert_eq!((frames_a, &revs_a), (frames_b, &revs_b));
    assert_eq!(revs_a, expected_w[1..].to_vec());
    assert_eq!(of(100, 0).1, expected_w);
    assert_eq!(of(200, 0).1, expected_w);
    assert_eq!(of(300, 0).1, expected_x);
    assert_eq!(h.watch_due_at(), None);
}

/// A host with an identity: incarnation 0x11 for n1, and whatever pins it starts with.
fn host_with_identity(voters: &[u64], pins: &[(u64, u64)]) -> Host {
    let mut cfg = HostConfig::new(1 << 20, 1_000_000);
    cfg.incarnation = 0x11;
    cfg.pins = pins.iter().map(|&(p, i)| (NodeId(p), i)).collect();
    host_with(voters, cfg)
}

fn pre_vote_from(from: u64) -> Message {
    Message {
        from: NodeId(from),
        to: N1,
        term: Term(2),
        body: MessageBody::PreVote {
            last_log_index: LogIndex(1),
            last_log_term: Term(1),
        },
    }
}

#[test]
fn a_member_is_pinned_before_its_first_message_is_acted_on() {
    // Goal: the first message from a member pins its incarnation durably (through the driver)
    // before the core sees it; a non-member is answered but not pinned.
    let mut h = host_with_identity(&[1, 2, 3], &[]);
    let mut out = Recorder::default();
    h.end_turn(&mut out, now()).unwrap();
    h.peer_message(&mut out, pre_vote_from(2), 0x22, 0);
    assert_eq!(out.pins, vec![(N2, 0x22)]);
    h.end_turn(&mut out, now()).unwrap();
    assert!(
        take(&mut out, "PreVoteResponse").is_some(),
        "the message was acted on"
    );
    h.peer_message(&mut out, pre_vote_from(2), 0x22, 0x11);
    assert_eq!(out.pins.len(), 1, "pinned once");
    h.peer_message(&mut out, pre_vote_from(9), 0x99, 0);
    assert_eq!(out.pins.len(), 1, "n9 is no member");
}

fn voters_membership(voters: &[u64]) -> Membership {
    Membership::of_voters(
        voters
            .iter()
            .map(|&v| (NodeId(v), format!("127.0.0.1:{}", 5000 + v))),
    )
}

#[test]
fn a_sender_its_own_message_made_a_member_is_pinned_before_the_answer() {
    // Goal: a leader whose entries carry the change that added it is pinned once that change
    // is in the log, before the acknowledgement leaves: if a damaged tail later takes the
    // change, the pin still says the leader may be a voter.
    // Method: n1 of {n1, n2} gets n3's AppendEntries holding the Config {n1, n2, n3}.
    let mut h = host_with_identity(&[1, 2], &[]);
    let mut out = Recorder::default();
    h.end_turn(&mut out, now()).unwrap();
    let three = voters_membership(&[1, 2, 3]);
    let ae = Message {
        from: NodeId(3),
        to: N1,
        term: Term(2),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: vec![Entry::new(
                Term(2),
                LogIndex(2),
                EntryKind::Config,
                &three.encoded(),
            )],
            leader_commit: LogIndex(1),
            read_seq: 0,
        },
    };
    h.peer_message(&mut out, ae, 0x33, 0x11);
    assert_eq!(out.pins, vec![(NodeId(3), 0x33)]);
    assert!(
        take(&mut out, "AppendEntriesResponse").is_none(),
        "pinned before anything is answered"
    );
}

#[test]
fn the_peers_pinned_at_start_keep_a_lone_voter_bounded_by_lost_entries() {
    // Goal: the pins reach the core (`Boot::heard`): a voter alone in the intact part of its
    // log keeps its lost-entries bound while a peer it heard from may hold them.
    let boot = |pins: &[(u64, u64)]| {
        let mut b = Boot::bootstrap(&voters_membership(&[1]));
        b.hard_state.term = Term(2);
        b.hard_state.lost = Some(LostEntries {
            term: Term(2),
            index: LogIndex(4),
        });
        let mut cfg = HostConfig::new(1 << 20, 1_000_000);
        cfg.incarnation = 0x11;
        cfg.pins = pins.iter().map(|&(p, i)| (NodeId(p), i)).collect();
        Host::new(cfg, raft::Config::new(N1), b, 7).unwrap()
    };
    assert_eq!(boot(&[]).raft().lost_entries(), None, "alone");
    assert!(
        boot(&[(2, 0x22)]).raft().lost_entries().is_some(),
        "n2 heard"
    );
}

#[test]
fn messages_from_or_to_another_incarnation_reach_nothing() {
    // Goal: a peer that came back with another data directory is not the member this node knew:
    // its messages are dropped and counted, and so are messages naming another data directory
    // of this node; the core never sees them (no answer).
    let mut h = host_with_identity(&[1, 2, 3], &[(2, 0x22)]);
    let mut out = Recorder::default();
    h.end_turn(&mut out, now()).unwrap();
    h.peer_message(&mut out, pre_vote_from(2), 0x23, 0);
    h.peer_message(&mut out, pre_vote_from(3), 0x33, 0x10);
    h.end_turn(&mut out, now()).unwrap();
    assert!(take(&mut out, "PreVoteResponse").is_none());
    assert_eq!(
        h.incarnation_drops(),
        [("IncarnationChanged", 1), ("NotMyIncarnation", 1)]
    );
    assert!(
        out.pins.is_empty(),
        "a changed incarnation is never pinned over the old one"
    );
    // Probes are answered with what this node knows of the asker.
    let p = crate::wire::peer::Probe {
        from: N2,
        incarnation: 0x23,
        known_as: 0,
        member: false,
    };
    h.probe(&mut out, &p);
    assert_eq!(out.probes, vec![(N2, 0x22, true, true)]);
}

#[test]
fn a_removed_member_is_unpinned_once_its_removal_is_applied() {
    // Goal: a server may take a removed member's id later with new storage: the pin goes when
    // the removal is applied.
    let mut h = host_with_identity(&[1], &[(2, 0x22)]);
    let mut out = Recorder::default();
    for _ in 0..40 {
        h.tick();
        h.end_turn(&mut out, now()).unwrap();
        while let Some(t) = out.pending.pop_front() {
            report(&mut h, &mut out, t);
            h.end_turn(&mut out, now()).unwrap();
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    let mut frame = Vec::new();
    encode_request(
        5,
        &Request::MemberAdd {
            id: 2,
            addr: "127.0.0.1:5002".into(),
            learner: true,
        },
        &mut frame,
    );
    let to = ReplyTo {
        conn: 0,
        generation: 0,
        request_id: 5,
        op: 0,
        since: Duration::ZERO,
    };
    h.client_frame(&mut out, now(), to, &frame);
    let mut frame = Vec::new();
    encode_request(6, &Request::MemberRemove { id: 2 }, &mut frame);
    for _ in 0..10 {
        h.end_turn(&mut out, now()).unwrap();
        while let Some(t) = out.pending.pop_front() {
            report(&mut h, &mut out, t);
            h.end_turn(&mut out, now()).unwrap();
        }
        if out.answers.iter().any(|(id, _)| *id == 5) && !out.answers.iter().any(|(id, _)| *id == 6)
        {
            h.client_frame(
                &mut out,
                now(),
                ReplyTo {
                    request_id: 6,
                    ..to
                },
                &frame,
            );
        }
    }
    assert!(
        out.answers
            .iter()
            .any(|(id, r)| *id == 6 && *r == Response::Done),
        "{:?}",
        out.answers
    );
    assert_eq!(out.pins, vec![(N2, 0)], "unpinned once removed");
}

/// A lone voter elected leader, with `cfg` changed by `tune`; its batches all durable.
fn lone_leader(tune: impl FnOnce(&mut HostConfig)) -> (Host, Recorder) {
    let mut cfg = HostConfig::new(1 << 20, 1_000_000);
    tune(&mut cfg);
    leading(cfg)
}

/// Hands the host one request frame and ends the turn.
fn request(h: &mut Host, out: &mut Recorder, id: u64, req: &Request) {
    let to = ReplyTo {
        conn: 0,
        generation: 0,
        request_id: id,
        op: 0,
        since: Duration::ZERO,
    };
    request_to(h, out, to, req);
}

/// Reports every outstanding token durable.
fn all_durable(h: &mut Host, out: &mut Recorder) {
    while !out.pending.is_empty() {
        durable_next(h, out);
    }
}

fn answer(out: &Recorder, id: u64) -> Option<&Response> {
    out.answers.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
}

#[test]
fn the_disk_alarm_refuses_writes_that_add_data_and_clears_by_itself() {
    // Goal: under the alarm, a leader refuses Put and a writing Cas at once (nothing reaches
    // storage) and lets a delete through; the next measurement above the minimum lets writes
    // through again. Method: feed measurements, look at answers and batches.
    let (mut h, mut out) = lone_leader(|c| c.min_free_disk = MinFreeDisk::BasisPoints(1000));
    all_durable(&mut h, &mut out);
    let put = |k: &str| Request::Put {
        session: None,
        key: k.into(),
        value: b"v".to_vec(),
    };
    request(&mut h, &mut out, 1, &put("a"));
    all_durable(&mut h, &mut out);
    assert!(matches!(answer(&out, 1), Some(Response::Written { .. })));

    h.disk_space(99, 1000); // 10% of 1000 is 100
    assert!(h.disk_alarm());
    let batches = out.batches.len();
    request(&mut h, &mut out, 2, &put("b"));
    let cas = Request::Cas {
        session: None,
        key: b"a".to_vec(),
        expect: crate::wire::client::Expect::Value(b"v".to_vec()),
        new: Some(b"w".to_vec()),
    };
    request(&mut h, &mut out, 3, &cas);
    for id in [2, 3] {
        assert_eq!(
            answer(&out, id),
            Some(&Response::Error(ErrorKind::NoSpace {
                free_bytes: 99,
                min_free_bytes: 100
            }))
        );
    }
    assert_eq!(
        out.batches.len(),
        batches,
        "a refused write reached storage"
    );
    request(
        &mut h,
        &mut out,
        4,
        &Request::Delete {
            session: None,
            key: b"a".to_vec(),
        },
    );
    all_durable(&mut h, &mut out);
    assert!(matches!(
        answer(&out, 4),
        Some(Response::Deleted { existed: true, .. })
    ));
    let st = h.status(&out);
    assert!(st.disk_alarm && st.disk_free_bytes == 99 && st.disk_min_free_bytes == 100);

    h.disk_space(100, 1000);
    assert!(!h.disk_alarm());
    request(&mut h, &mut out, 5, &put("c"));
    all_durable(&mut h, &mut out);
    assert!(matches!(answer(&out, 5), Some(Response::Written { .. })));
}

/// Reads a saved snapshot whole, chunk by chunk in order (request ids from 10 on), checking
/// that each chunk starts where the last ended and is not empty.
fn read_saved_snapshot(
    h: &mut Host,
    out: &mut Recorder,
    info: &crate::wire::client::SnapshotInfo,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut id = 10;
    while (got.len() as u64) < info.size {
        let req = Request::SnapshotChunk {
            id: info.id,
            offset: got.len() as u64,
        };
        request(h, out, id, &req);
        match answer(out, id) {
            Some(Response::SnapshotChunk { offset, data }) => {
                assert_eq!(*offset, got.len() as u64);
                assert!(!data.is_empty());
                got.extend_from_slice(data);
            }
            other => panic!("{other:?}"),
        }
        id += 1;
    }
    got
}

#[test]
fn a_snapshot_save_hands_out_the_dictionary_as_of_its_read_in_chunks() {
    // Goal: SnapshotSave answers with a snapshot of the dictionary holding every write applied
    // before it, encoded a slice per turn, and SnapshotChunk hands its bytes out from any
    // offset; an unknown id or an offset past the end is refused. Method: a lone leader with
    // three keys per turn, 20 keys, a save, a write that must not be in it, then the chunks.
    let (mut h, mut out) = lone_leader(|c| c.snapshot_keys_per_turn = 3);
    all_durable(&mut h, &mut out);
    for i in 0..20u64 {
        let req = Request::Put {
            session: None,
            key: format!("k{i:02}").into_bytes(),
            value: vec![i as u8; 100],
        };
        request(&mut h, &mut out, 100 + i, &req);
        all_durable(&mut h, &mut out);
    }
    let want = h.kv().snapshot_bytes();
    request(&mut h, &mut out, 1, &Request::SnapshotSave);
    let mut turns = 0;
    while answer(&out, 1).is_none() {
        assert!(turns < 100, "no SnapshotBegin");
        h.end_turn(&mut out, now()).unwrap();
        all_durable(&mut h, &mut out);
        turns += 1;
    }
    assert!(
        turns >= 3,
        "20 keys at 3 a turn take several turns ({turns})"
    );
    let info = match answer(&out, 1) {
        Some(Response::SnapshotBegin(i)) => i.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(info.size, want.len() as u64);
    assert_eq!(info.index, h.kv().applied_index().0);
    assert_eq!(info.members.len(), 1);
    // A write after the save is not in the snapshot being handed out.
    request(
        &mut h,
        &mut out,
        2,
        &Request::Put {
            session: None,
            key: b"later".to_vec(),
            value: b"x".to_vec(),
        },
    );
    all_durable(&mut h, &mut out);
    let got = read_saved_snapshot(&mut h, &mut out, &info);
    assert_eq!(got, want, "the snapshot as of the save");
    let tail = u32::from_le_bytes(got[got.len() - 4..].try_into().unwrap());
    assert_eq!(tail, info.checksum);
    assert_eq!(crc32fast::hash(&got[..got.len() - 4]), info.checksum);
    request(
        &mut h,
        &mut out,
        90,
        &Request::SnapshotChunk {
            id: info.id ^ 1,
            offset: 0,
        },
    );
    request(
        &mut h,
        &mut out,
        91,
        &Request::SnapshotChunk {
            id: info.id,
            offset: info.size + 1,
        },
    );
    for id in [90, 91] {
        assert!(
            matches!(
                answer(&out, id),
                Some(Response::Error(ErrorKind::Invalid(_)))
            ),
            "{:?}",
            answer(&out, id)
        );
    }
}

#[test]
fn a_membership_change_that_can_never_be_made_is_invalid_not_retryable() {
    // Goal: promoting a voter or removing a stranger can never succeed: the answer is
    // `Invalid` (clients do not retry it), not `ConfChange` (which says "not yet").
    let mut h = host(&[1]);
    let mut out = Recorder::default();
    for _ in 0..40 {
        h.tick();
        h.end_turn(&mut out, now()).unwrap();
        while let Some(t) = out.pending.pop_front() {
            report(&mut h, &mut out, t);
            h.end_turn(&mut out, now()).unwrap();
        }
    }
    assert_eq!(h.raft().role(), Role::Leader);
    for (id, req) in [
        (7, Request::MemberPromote { id: 1 }),
        (8, Request::MemberRemove { id: 9 }),
    ] {
        let mut frame = Vec::new();
        encode_request(id, &req, &mut frame);
        let to = ReplyTo {
            conn: 0,
            generation: 0,
            request_id: id,
            op: 0,
            since: Duration::ZERO,
        };
        h.client_frame(&mut out, now(), to, &frame);
    }
    let kinds: Vec<&Response> = out.answers.iter().map(|(_, r)| r).collect();
    assert!(
        kinds.len() == 2
            && kinds
                .iter()
                .all(|r| matches!(r, Response::Error(ErrorKind::Invalid(why)) if why.contains("membership change refused"))),
        "{kinds:?}"
    );
}

#[test]
fn a_save_that_rides_on_a_compaction_snapshot_reads_it_from_its_file_once_stored() {
    // Goal: a SnapshotSave that arrives while a compaction snapshot is being encoded is served
    // that snapshot (it stands for the index the save's read confirmed), and its chunks still
    // come out right once storage has moved the bytes to the snapshot's file (the held copy
    // shares them). Method: a lone leader that compacts every few entries, a save sent while a
    // compaction job runs, the stored snapshot spilled to a file, then every chunk.
    let (mut h, mut out) = lone_leader(|c| {
        c.snapshot_entries = 20;
        c.snapshot_keys_per_turn = 2;
    });
    all_durable(&mut h, &mut out);
    let mut i = 0u64;
    while !(h.snapshot_job.is_some() && h.snapshot_job_stores) {
        assert!(i < 200, "no compaction job after {i} writes");
        let req = Request::Put {
            session: None,
            key: format!("k{i:03}").into_bytes(),
            value: vec![i as u8; 50],
        };
        request(&mut h, &mut out, 1000 + i, &req);
        if h.snapshot_job.is_none() {
            all_durable(&mut h, &mut out);
        }
        i += 1;
    }
    let want = h.kv().snapshot_bytes();
    let stored_before = out.snapshots.len();
    request(&mut h, &mut out, 1, &Request::SnapshotSave);
    let mut turns = 0;
    while answer(&out, 1).is_none() {
        assert!(turns < 200, "no SnapshotBegin");
        h.end_turn(&mut out, now()).unwrap();
        turns += 1;
    }
    let info = match answer(&out, 1) {
        Some(Response::SnapshotBegin(i)) => i.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(out.snapshots.len(), stored_before + 1, "the compaction one");
    let stored = out.snapshots.last().unwrap().clone();
    assert_eq!(info.index, stored.meta.index.0, "the save rode on it");
    assert_eq!(&stored.data.bytes().unwrap()[..], &want[..]);

    // Storage writes it to its file and lets go of the memory.
    let path = std::env::temp_dir().join(format!("zatt-host-spill-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut f, b"head").unwrap();
    std::io::Write::write_all(&mut f, &want).unwrap();
    drop(f);
    stored
        .data
        .spill(std::fs::File::open(&path).unwrap(), b"head".len() as u64);
    std::fs::remove_file(&path).unwrap();
    assert!(!stored.data.in_memory());
    all_durable(&mut h, &mut out);

    let got = read_saved_snapshot(&mut h, &mut out, &info);
    assert_eq!(got, want);
    assert_eq!(crc32fast::hash(&got[..got.len() - 4]), info.checksum);
}

#[test]
fn the_output_hears_of_a_compaction_once_its_snapshot_is_durable() {
    // Goal: the server hands freed memory back after a compaction (`Output::compacted`), and
    // the host says so only when the core has dropped the log, which waits for the snapshot to
    // be durable. Method: a lone leader that compacts every 20 entries; its snapshot's token is
    // reported durable last.
    let (mut h, mut out) = lone_leader(|c| {
        c.snapshot_entries = 20;
        c.snapshot_keys_per_turn = 1000;
    });
    all_durable(&mut h, &mut out);
    let mut i = 0u64;
    while out.snapshots.is_empty() {
        assert!(i < 200, "no compaction snapshot after {i} writes");
        put(&mut h, &mut out, 1000 + i, format!("k{i:03}").as_bytes());
        i += 1;
        // Everything but the snapshot's token is made durable.
        while out
            .pending
            .front()
            .is_some_and(|_| out.snapshots.is_empty())
        {
            durable_next(&mut h, &mut out);
        }
    }
    let first_before = h.raft.first_index();
    assert_eq!(out.compactions, 0, "the snapshot is not durable yet");
    all_durable(&mut h, &mut out);
    assert_eq!(out.compactions, 1);
    assert!(h.raft.first_index() > first_before, "the log was compacted");
}

#[test]
fn a_recovered_snapshot_is_restored_from_the_bytes_recovery_checked_and_then_left_in_its_file() {
    // Goal: at start-up the snapshot file is read once (recovery reads and checks it whole; the
    // host restores from those bytes, not from a second read), and its memory is let go once
    // the dictionary is built. Method: hand `Host::new` a snapshot `loaded` from bytes whose
    // file no longer holds them (overwritten with zeros): the dictionary must hold the keys of
    // the bytes, and afterwards the snapshot must be read from the file.
    let (mut h, mut out) = lone_leader(|_| {});
    all_durable(&mut h, &mut out);
    for i in 0..20u64 {
        put(&mut h, &mut out, 100 + i, format!("key{i:02}").as_bytes());
    }
    all_durable(&mut h, &mut out);
    assert_eq!(h.kv().len(), 20);
    let data = h.kv().snapshot_bytes();
    let index = h.kv().applied_index();
    let mut whole = b"head".to_vec();
    whole.extend_from_slice(&data);
    let path = std::env::temp_dir().join(format!("zatt-host-loaded-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; whole.len()]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let snap = Snapshot {
        meta: SnapshotMeta {
            index,
            term: Term(1),
            membership: h.raft.membership().clone(),
        },
        data: SnapshotData::loaded(whole, 4, data.len() as u64, file),
    };
    let kept = snap.data.clone();
    assert!(kept.in_memory());
    let boot = Boot {
        hard_state: HardState {
            term: Term(1),
            vote: None,
            commit: index,
            lost: None,
        },
        snapshot: Some(snap),
        entries: Vec::new(),
        heard: Default::default(),
    };
    let h2 = Host::new(
        HostConfig::new(1 << 20, 1_000_000),
        raft::Config::new(N1),
        boot,
        7,
    )
    .expect("restores from the checked bytes");
    assert_eq!(h2.kv().len(), 20, "restored from memory, not from the file");
    assert_eq!(h2.kv().get(b"key07").map(|(v, _)| v), Some(&b"v"[..]));
    assert!(!kept.in_memory(), "the bytes were let go once restored");
    assert_eq!(
        &kept.bytes().unwrap()[..],
        &vec![0u8; data.len()][..],
        "from then on, read from the file"
    );
}

fn deliver_from(h: &mut Host, out: &mut Recorder, from: u64, term: u64, body: MessageBody) {
    h.peer_message(
        out,
        Message {
            from: NodeId(from),
            to: N1,
            term: Term(term),
            body,
        },
        0,
        0,
    );
    h.end_turn(out, now()).unwrap();
}

/// n1 leading {n1..n4} in term 2 through scripted n2 and n3, its noop committed; n4 silent.
fn leading_four(out: &mut Recorder) -> Host {
    let mut h = host(&[1, 2, 3, 4]);
    let pv = tick_until(&mut h, out, "PreVote");
    for from in [2, 3] {
        let granted = MessageBody::PreVoteResponse {
            granted: true,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            voter: true,
        };
        deliver_from(&mut h, out, from, pv.term.0, granted);
    }
    all_durable(&mut h, out);
    let rv = take(out, "RequestVote").expect("asked once durable");
    for from in [2, 3] {
        let granted = MessageBody::RequestVoteResponse { granted: true };
        deliver_from(&mut h, out, from, rv.term.0, granted);
    }
    assert_eq!(h.raft().role(), Role::Leader);
    all_durable(&mut h, out);
    for from in [2, 3] {
        deliver_from(&mut h, out, from, 2, ack(2));
    }
    assert_eq!(h.raft().commit_index(), LogIndex(2));
    h
}

#[test]
fn an_id_added_back_waits_until_every_member_holds_its_removal() {
    // Goal: `member add` of a removed server's id is held while a member lacks the removal
    // (it would refuse the new server's messages), proposed once that member has it, and
    // answered with the member's name if it does not get it in time.
    // Method: n1 leads {n1..n4}; n4 is removed with n2's acknowledgement alone while n3 lags;
    // n4 is added back: no answer; n3 acknowledges the removal; housekeeping proposes the
    // addition. Then again with n3 silent: after the wait, a `ConfChange` error naming n3.
    for n3_catches_up in [true, false] {
        let mut out = Recorder::default();
        let mut h = leading_four(&mut out);
        request(&mut h, &mut out, 7, &Request::MemberRemove { id: 4 });
        all_durable(&mut h, &mut out);
        deliver_from(&mut h, &mut out, 2, 2, ack(3));
        assert_eq!(answer(&out, 7), Some(&Response::Done));
        let add = Request::MemberAdd {
            id: 4,
            addr: "127.0.0.1:5004".into(),
            learner: true,
        };
        request(&mut h, &mut out, 8, &add);
        assert_eq!(answer(&out, 8), None, "held while n3 lacks the removal");
        assert_eq!(h.raft().last_index(), LogIndex(3), "nothing proposed yet");
        let later = |s: u64| Now {
            mono: Duration::from_secs(s),
            wall_ms: 0,
        };
        if n3_catches_up {
            deliver_from(&mut h, &mut out, 3, 2, ack(3));
            h.housekeeping(&mut out, later(1));
            assert_eq!(h.raft().last_index(), LogIndex(4), "proposed");
            assert!(h.raft().membership().contains(NodeId(4)));
        } else {
            h.housekeeping(&mut out, later(1));
            assert_eq!(answer(&out, 8), None, "still waiting");
            h.housekeeping(&mut out, later(10));
            assert!(
                matches!(answer(&out, 8), Some(Response::Error(ErrorKind::ConfChange(why)))
                    if why.contains("n3 does not hold the removal of n4")),
                "{:?}",
                answer(&out, 8)
            );
            assert_eq!(h.raft().last_index(), LogIndex(3));
        }
    }
}

#[test]
fn every_not_yet_membership_answer_is_one_zatt_says_may_pass_later() {
    // Goal: `zatt` tells the operator to retry exactly the refusals that waiting can clear;
    // it recognises them by their words, so each such answer of the host must carry them.
    let h = host(&[1, 2, 3]);
    for e in [
        crate::raft::ProposeError::ConfChangeInProgress,
        crate::raft::ProposeError::NotCaughtUp,
        crate::raft::ProposeError::TransferInProgress,
        crate::raft::ProposeError::RemovalNotReplicated {
            id: NodeId(2),
            lagging: NodeId(3),
        },
    ] {
        match h.conf_error(e.clone()) {
            ErrorKind::ConfChange(why) => {
                assert!(crate::cli::conf_change_may_pass_later(&why), "{e:?}: {why}")
            }
            other => panic!("{e:?} answered {other:?}"),
        }
    }
    match h.conf_error(crate::raft::ProposeError::Invalid("not a member")) {
        ErrorKind::Invalid(why) => assert!(!crate::cli::conf_change_may_pass_later(&why)),
        other => panic!("{other:?}"),
    }
}
