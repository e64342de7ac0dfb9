//! A tiny in-test network for driving clusters of `Raft` by hand: messages are queued and
//! delivered in order, readies are persisted to an in-memory "disk" at once (unless a node's
//! persistence is held), and after every step every node's `check_invariants()` runs together
//! with the cross-node properties (Election Safety, Log Matching, State Machine Safety).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use zatt::raft::*;
use zatt::rng::SplitMix64;
use zatt::types::*;

pub fn addr(id: u64) -> String {
    format!("127.0.0.1:{}", 5254 + id)
}

pub fn membership(voters: &[u64], learners: &[u64]) -> Membership {
    let mut m = Membership::of_voters(voters.iter().map(|&v| (NodeId(v), addr(v))));
    for &l in learners {
        m.members.insert(
            NodeId(l),
            Member {
                role: MemberRole::Learner,
                addr: addr(l),
            },
        );
    }
    m
}

/// A node's durable state, as a host would keep it.
#[derive(Clone, Default)]
pub struct Disk {
    pub hs: HardState,
    pub snap: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn write(&mut self, rd: &Ready) {
        if let Some(s) = &rd.snapshot {
            let keep = self
                .entries
                .iter()
                .any(|e| e.index == s.meta.index && e.term == s.meta.term);
            if keep {
                self.entries.retain(|e| e.index > s.meta.index);
            } else {
                self.entries.clear();
            }
            self.snap = Some(s.clone());
        }
        if let Some(hs) = rd.hard_state {
            self.hs = hs;
        }
        if let Some(first) = rd.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(rd.entries.iter().cloned());
        }
    }
    pub fn term_at(&self, i: LogIndex) -> Option<Term> {
        if let Some(s) = &self.snap {
            if s.meta.index == i {
                return Some(s.meta.term);
            }
        }
        self.entries.iter().find(|e| e.index == i).map(|e| e.term)
    }
    pub fn snap_index(&self) -> LogIndex {
        self.snap.as_ref().map(|s| s.meta.index).unwrap_or_default()
    }
    pub fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snap_index())
    }

    /// §3.8 / Figure 2: a granted vote, a successful append acknowledgement or an installed
    /// snapshot acknowledgement must be covered by this (durable) state when it leaves.
    pub fn check_ack(&self, m: &Message) {
        let hs = self.hs;
        match &m.body {
            MessageBody::RequestVoteResponse { granted: true } => {
                assert!(
                    hs.term > m.term || (hs.term == m.term && hs.vote == Some(m.to)),
                    "vote left before durable: {m:?} with {hs:?}"
                );
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => {
                assert!(
                    hs.term >= m.term,
                    "ack left before its term was durable: {m:?} with {hs:?}"
                );
                if hs.term == m.term && *match_index > self.snap_index() {
                    let t = self.term_at(*match_index);
                    assert!(
                        t.is_some_and(|t| t <= m.term),
                        "ack of {match_index:?} not durable: {m:?}"
                    );
                }
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                installed: true,
                ..
            } => {
                assert!(
                    self.snap_index() >= *snapshot_index || self.last_index() >= *snapshot_index,
                    "snapshot ack before durable: {m:?}"
                );
            }
            _ => {}
        }
    }

    pub fn boot(&self) -> Boot {
        Boot {
            hard_state: self.hs,
            snapshot: self.snap.clone(),
            entries: self.entries.clone(),
            heard: Default::default(),
        }
    }
}

pub struct Node {
    pub raft: Raft,
    pub disk: Disk,
    pub cfg: Config,
    /// Applied entries by index (term, kind), including what a snapshot stood for (term 0 marks
    /// "covered by snapshot").
    pub applied: BTreeMap<LogIndex, Term>,
    pub read_states: Vec<ReadState>,
    pub snapshots_received: Vec<SnapshotMeta>,
    /// Readies not yet persisted (when persistence is held).
    pub held: Vec<Ready>,
}

/// Sees every message before delivery; may rewrite it; returns false to drop it.
pub type Filter = Box<dyn FnMut(&mut Message) -> bool>;

pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(u64, u64)>,
    pub down: BTreeSet<u64>,
    /// Nodes whose readies are kept unpersisted until `release`.
    pub hold_persist: BTreeSet<u64>,
    /// Every leader seen, by term (Election Safety).
    pub leaders: BTreeMap<Term, NodeId>,
    /// Every message handed to the network (for assertions on traffic).
    pub sent: Vec<Message>,
    /// Returns false to drop a message.
    pub filter: Option<Filter>,
    /// When set, a seeded generator: delivery picks among the first few queued messages
    /// (reordering) and now and then delivers one twice (duplication).
    pub chaos: Option<SplitMix64>,
    /// Every entry any node ever applied, by index (State Machine Safety across restarts).
    pub applied_ever: BTreeMap<LogIndex, Term>,
    seed: u64,
}

pub fn conf(id: u64) -> Config {
    Config::new(NodeId(id))
}

impl Cluster {
    /// A cluster of `n` bootstrapped voters 1..=n.
    pub fn new(n: u64, make: impl Fn(u64) -> Config) -> Cluster {
        let ids: Vec<u64> = (1..=n).collect();
        let m = membership(&ids, &[]);
        let mut c = Cluster::empty();
        for id in ids {
            c.add(id, make(id), Boot::bootstrap(&m));
        }
        c
    }

    pub fn empty() -> Cluster {
        Cluster {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            hold_persist: BTreeSet::new(),
            leaders: BTreeMap::new(),
            sent: Vec::new(),
            filter: None,
            chaos: None,
            applied_ever: BTreeMap::new(),
            seed: 7,
        }
    }

    /// Adds a node with the given durable state (already on its disk).
    pub fn add(&mut self, id: u64, config: Config, boot: Boot) {
        let disk = Disk {
            hs: boot.hard_state,
            snap: boot.snapshot.clone(),
            entries: boot.entries.clone(),
        };
        self.seed += 1;
        let raft = Raft::new(config.clone(), boot, self.seed * 1000 + id);
        self.nodes.insert(
            id,
            Node {
                raft,
                disk,
                cfg: config,
                applied: BTreeMap::new(),
                read_states: Vec::new(),
                snapshots_received: Vec::new(),
                held: Vec::new(),
            },
        );
        self.check();
    }

    pub fn r(&self, id: u64) -> &Raft {
        &self.nodes[&id].raft
    }
    pub fn rm(&mut self, id: u64) -> &mut Raft {
        &mut self.nodes.get_mut(&id).unwrap().raft
    }

    /// Drains a node's ready: persist (unless held), queue messages, record applied/read states.
    pub fn process(&mut self, id: u64) {
        if self.down.contains(&id) {
            return;
        }
        let held = self.hold_persist.contains(&id);
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.raft.has_ready() {
            return;
        }
        let rd = node.raft.ready();
        let mut out: Vec<Message> = rd.messages.clone();
        if !node.cfg.bugs.ack_before_sync {
            for m in &out {
                node.disk.check_ack(m);
            }
        }
        for rs in &rd.read_states {
            node.read_states.push(*rs);
        }
        if held {
            node.held.push(rd);
        } else {
            Self::persist(node, rd, &mut out);
        }
        for m in out {
            self.send(m);
        }
        self.check();
    }

    fn persist(node: &mut Node, rd: Ready, out: &mut Vec<Message>) {
        node.disk.write(&rd);
        if let Some(s) = &rd.snapshot {
            node.snapshots_received.push(s.meta.clone());
            node.applied.retain(|i, _| *i > s.meta.index);
            node.applied.insert(s.meta.index, Term(0));
        }
        if let Some((i, t)) = rd.persist_mark() {
            node.raft.persisted(i, t);
        }
        if !node.cfg.bugs.ack_before_sync {
            for m in &rd.messages_after_persist {
                node.disk.check_ack(m);
            }
        }
        out.extend(rd.messages_after_persist.iter().cloned());
        for e in &rd.committed {
            let prev = node.applied.insert(e.index, e.term);
            assert!(prev.is_none(), "entry {:?} applied twice", e.index);
        }
    }

    /// Persists every held ready of `id` and lets its after-persist messages go.
    pub fn release(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let held = std::mem::take(&mut node.held);
        let mut out = Vec::new();
        for rd in held {
            Self::persist(node, rd, &mut out);
        }
        for m in out {
            self.send(m);
        }
        self.check();
    }

    pub fn send(&mut self, m: Message) {
        self.sent.push(m.clone());
        self.queue.push_back(m);
    }

    fn deliverable(&mut self, m: &mut Message) -> bool {
        if self.down.contains(&m.to.0) || self.down.contains(&m.from.0) {
            return false;
        }
        if self.cut.contains(&(m.from.0, m.to.0)) || !self.nodes.contains_key(&m.to.0) {
            return false;
        }
        match &mut self.filter {
            Some(f) => f(m),
            None => true,
        }
    }

    /// Delivers one message (if any). Returns false when the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let pick = match &mut self.chaos {
            Some(rng) if !self.queue.is_empty() => {
                let x = rng.next_u64();
                let i = (x % self.queue.len().min(4) as u64) as usize;
                if x % 23 == 0 {
                    let dup = self.queue[i].clone();
                    self.queue.push_back(dup);
                }
                i
            }
            _ => 0,
        };
        let Some(mut m) = self.queue.remove(pick) else {
            return false;
        };
        if self.deliverable(&mut m) {
            let to = m.to.0;
            self.rm(to).step(m);
            self.check();
            self.process(to);
        }
        true
    }

    /// Processes every node and delivers until nothing moves (bounded).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            if !self.deliver_one() {
                let busy = self.nodes.iter().any(|(id, n)| {
                    !self.down.contains(id) && n.raft.has_ready() && !self.hold_persist.contains(id)
                });
                if !busy {
                    return;
                }
            }
        }
        panic!("cluster did not settle");
    }

    /// Ticks every live node `n` times, settling after each tick.
    pub fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            let ids: Vec<u64> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| !self.down.contains(id))
                .collect();
            for id in ids {
                self.rm(id).tick();
                self.check();
            }
            self.settle();
        }
    }

    pub fn tick(&mut self, id: u64, n: u32) {
        for _ in 0..n {
            self.rm(id).tick();
            self.check();
            self.settle();
        }
    }

    /// Makes `id` campaign and settles; asserts it won.
    pub fn elect(&mut self, id: u64) {
        self.rm(id).campaign();
        self.settle();
        assert_eq!(self.r(id).role(), Role::Leader, "n{id} did not win");
    }

    pub fn propose(&mut self, id: u64, data: &[u8]) -> (LogIndex, Term) {
        let r = self.rm(id).propose(data).expect("propose");
        self.settle();
        r
    }

    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for o in ids {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn crash(&mut self, id: u64) {
        self.down.insert(id);
    }

    /// Restarts `id` from its disk (losing anything held unpersisted).
    pub fn restart(&mut self, id: u64) {
        self.down.remove(&id);
        self.seed += 1;
        let node = self.nodes.get_mut(&id).unwrap();
        node.held.clear();
        node.raft = Raft::new(node.cfg.clone(), node.disk.boot(), self.seed * 1000 + id);
        // The state machine restarts from the snapshot, then re-applies.
        node.applied.clear();
        self.check();
    }

    /// The host's part of log compaction: snapshot at `index` (applied), then `compact`.
    pub fn compact(&mut self, id: u64, index: LogIndex, data: &[u8]) {
        let node = self.nodes.get_mut(&id).unwrap();
        let meta = node.raft.snapshot_meta_at(index).expect("snapshot meta");
        let snap = Snapshot {
            meta,
            data: data.into(),
        };
        node.raft.compact(snap.clone());
        node.disk.entries.retain(|e| e.index > index);
        node.disk.snap = Some(snap);
        assert_eq!(node.raft.first_index(), index.next());
        self.check();
    }

    /// Every node's local invariants, plus the cross-node safety properties.
    pub fn check(&mut self) {
        for (id, n) in &self.nodes {
            if let Err(e) = n.raft.check_invariants() {
                panic!("n{id}: {e}");
            }
            if n.raft.role() == Role::Leader {
                let prev = self.leaders.insert(n.raft.term(), NodeId(*id));
                if let Some(p) = prev {
                    assert_eq!(
                        p,
                        NodeId(*id),
                        "Election Safety: two leaders in {:?}",
                        n.raft.term()
                    );
                }
            }
        }
        for (id, n) in &self.nodes {
            for (i, t) in &n.applied {
                if t.0 == 0 {
                    continue;
                }
                let was = *self.applied_ever.entry(*i).or_insert(*t);
                assert_eq!(
                    was, *t,
                    "State Machine Safety: n{id} applied {i:?} {t:?}, another node {was:?}"
                );
            }
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (ra, rb) = (self.r(a), self.r(b));
                // Log Matching: same index and term ⇒ identical entries up to there.
                let lo = ra.first_index().max(rb.first_index());
                let hi = ra.last_index().min(rb.last_index());
                let mut matched_above = false;
                let mut idx = hi;
                while idx >= lo && idx.0 > 0 {
                    let (ea, eb) = (ra.entry(idx), rb.entry(idx));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if ea.term == eb.term {
                            matched_above = true;
                        }
                        if matched_above {
                            assert_eq!(
                                ea, eb,
                                "Log Matching broken at {idx:?} between n{a} and n{b}"
                            );
                        }
                    }
                    idx = idx.prev();
                }
                // Leader Completeness: a leader holds every entry committed in its term or
                // earlier (a node's commit was learned in a term at most its current term).
                for (l, n) in [(a, b), (b, a)] {
                    let (rl, rn) = (self.r(l), self.r(n));
                    if rl.role() != Role::Leader || rl.term() < rn.term() {
                        continue;
                    }
                    let mut i = rn.first_index().max(rl.first_index());
                    while i <= rn.commit_index() {
                        if let Some(e) = rn.entry(i) {
                            assert_eq!(
                                rl.term_at(i),
                                Some(e.term),
                                "Leader Completeness: leader n{l} lacks committed {i:?} of n{n}"
                            );
                        }
                        i = i.next();
                    }
                }
                // State Machine Safety: no two nodes apply different entries at one index.
                let (na, nb) = (&self.nodes[&a], &self.nodes[&b]);
                for (i, ta) in &na.applied {
                    if let Some(tb) = nb.applied.get(i) {
                        if ta.0 != 0 && tb.0 != 0 {
                            assert_eq!(
                                ta, tb,
                                "State Machine Safety broken at {i:?} between n{a} and n{b}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The highest-term live leader, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|(id, n)| !self.down.contains(id) && n.raft.role() == Role::Leader)
            .max_by_key(|(_, n)| n.raft.term())
            .map(|(id, _)| *id)
    }

    /// Messages sent so far matching `f`.
    pub fn count_sent(&self, f: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| f(m)).count()
    }
}

pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

pub fn ent(index: u64, term: u64) -> Entry {
    Entry::new(
        Term(term),
        LogIndex(index),
        EntryKind::Normal,
        &[index as u8],
    )
}

/// A boot state with the given voters' config at index 1 (term 1) then `terms` for 2, 3, ...
pub fn boot_with_log(voters: &[u64], term: u64, vote: Option<u64>, terms: &[u64]) -> Boot {
    let mut b = Boot::bootstrap(&membership(voters, &[]));
    for (i, &t) in terms.iter().enumerate() {
        b.entries.push(ent(i as u64 + 2, t));
    }
    b.hard_state.term = Term(term);
    b.hard_state.vote = vote.map(NodeId);
    b
}

pub fn ae(prev: u64, prev_term: u64, entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev),
        prev_log_term: Term(prev_term),
        entries,
        leader_commit: LogIndex(commit),
        read_seq: 0,
    }
}

pub fn rv(last_index: u64, last_term: u64) -> MessageBody {
    MessageBody::RequestVote {
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        transfer: false,
    }
}

pub fn plain(id: u64) -> Config {
    let mut c = conf(id);
    c.pre_vote = false;
    c.check_quorum = false;
    c
}
