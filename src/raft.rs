//! The Raft protocol as a pure, deterministic state machine.
//!
//! Owns roles, terms, votes, the in-memory log view, replication progress, commit, ReadIndex,
//! membership and snapshot metadata. Must not touch sockets, files, clocks or global randomness:
//! time arrives as `tick()`, randomness from the seed given to `Raft::new`.
//!
//! # Driving it (etcd-raft's Ready/Advance, adapted)
//! Inputs: `tick`, `step(message)`, `propose`, `propose_conf_change`, `read_index`,
//! `transfer_leader`, `compact`, and `persisted` when the host's disk write completes.
//! Output: `ready()` hands over everything produced since the last call.
//!
//! # The persistence contract (Raft thesis §3.8)
//! "Votes and acknowledgements leave only after their state is durable." Concretely, for each
//! `Ready` the host must:
//! 1. send `messages` at once (a leader's AppendEntries may leave before its own write: §10.2.1);
//! 2. write `snapshot`, then `hard_state` and `entries` (truncating any stored suffix at or after
//!    the first entry's index), in one batch, and sync it;
//! 3. only then send `messages_after_persist` and call `persisted(last_index, last_term)` with the
//!    last entry (or snapshot) of that Ready, so a leader may count itself towards commit;
//! 4. apply `committed` in order (they are always already durable here), and answer each
//!    `read_states` entry once its index has been applied.
//!
//! Readies must be persisted in the order they were produced.

use crate::types::*;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Known-bug switches for the simulator: each one re-introduces a classic Raft bug so that a test
/// can show the simulator catches it. Only honoured when built with the `simbugs` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Commit an entry of an earlier term by counting replicas (violates §5.4.2, Figure 8).
    pub commit_old_term_by_count: bool,
    /// Send AppendEntries acknowledgements and votes before the write is durable.
    pub ack_before_sync: bool,
    /// Forget the vote when restarting (a node can vote twice in one term).
    pub forget_vote_on_restart: bool,
    /// Serve a ReadIndex read without the leadership confirmation round.
    pub read_without_confirmation: bool,
    /// Allow a second membership change while one is uncommitted.
    pub concurrent_conf_changes: bool,
}

impl Bugs {
    /// True when the switch is on and the build can honour it.
    #[inline]
    pub fn on(flag: bool) -> bool {
        cfg!(feature = "simbugs") && flag
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// The minimum election timeout, in ticks; each node draws its timeout from
    /// `[election_ticks, 2 * election_ticks)` anew each time the timer resets.
    pub election_ticks: u32,
    /// How often a leader sends heartbeats, in ticks. Must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Upper bound of the entry bytes in one AppendEntries message.
    pub max_append_bytes: usize,
    /// AppendEntries messages carrying entries in flight per follower before the leader waits.
    pub max_inflight: usize,
    /// Bytes of snapshot data in one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks in flight per follower.
    pub snapshot_inflight_chunks: usize,
    /// A learner is promoted only once its match index is within this many entries of the
    /// leader's last index.
    pub promote_max_lag: u64,
    /// Proposals the leader holds uncommitted before refusing more with `Busy`.
    pub max_uncommitted_entries: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// The largest snapshot a follower accepts; an `InstallSnapshot` announcing a larger
    /// `total` is dropped before anything is buffered.
    pub max_snapshot_bytes: u64,
    pub bugs: Bugs,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_append_bytes: 60 * 1024,
            max_inflight: 64,
            snapshot_chunk_bytes: 32 * 1024,
            snapshot_inflight_chunks: 8,
            promote_max_lag: 100,
            max_uncommitted_entries: 100_000,
            pre_vote: true,
            check_quorum: true,
            max_snapshot_bytes: 1 << 30,
            bugs: Bugs::default(),
        }
    }
}

/// Everything a node recovered from its disk, handed to `Raft::new`.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    pub hard_state: HardState,
    /// The latest durable snapshot, if any; entries follow it contiguously.
    pub snapshot: Option<Snapshot>,
    /// The durable log after the snapshot, contiguous and in index order.
    pub entries: Vec<Entry>,
}

impl Boot {
    /// The durable state of a brand-new initial member: one `Config` entry at index 1, term 1,
    /// holding the initial membership. Every initial member must be given the same membership,
    /// so that this entry is identical everywhere (Log Matching).
    pub fn bootstrap(membership: &Membership) -> Boot {
        Boot {
            hard_state: HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(0),
            },
            snapshot: None,
            entries: vec![Entry::new(
                Term(1),
                LogIndex(1),
                EntryKind::Config,
                &membership.encoded(),
            )],
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    /// A member that receives the log but does not vote, or a node not (yet) in the membership.
    Learner,
}

/// What the host reports to clients and logs when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A linearizable read is safe to serve once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: LogIndex,
}

/// A request the core refuses; the host answers its client with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader {
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way; proposals wait until it ends.
    TransferInProgress,
    /// A membership change is already uncommitted, or the leader has not yet committed an entry
    /// of its own term (the 2015 single-server-change bug).
    ConfChangeInProgress,
    /// The learner to promote has not caught up yet.
    NotCaughtUp,
    /// Too many uncommitted proposals.
    Busy,
    /// The request makes no sense for this membership (unknown node, already a member, ...).
    Invalid(&'static str),
}

/// Everything produced since the last `ready()`; see the module docs for the order of handling.
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub messages_after_persist: Vec<Message>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether anything must be written to disk before `messages_after_persist` may leave.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
    /// The `(index, term)` to report through `persisted` once this Ready is durable.
    pub fn persist_mark(&self) -> Option<(LogIndex, Term)> {
        if let Some(e) = self.entries.last() {
            return Some((e.index, e.term));
        }
        self.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term))
    }
}

/// Replication progress of one peer as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: NodeId,
    pub role: MemberRole,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    /// Snapshot transfer under way: (bytes acknowledged, total bytes).
    pub snapshot_transfer: Option<(u64, u64)>,
}

/// How the leader feeds one follower (etcd-raft's progress states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplState {
    /// The leader does not know where the follower's log matches: one AppendEntries at a time,
    /// backing off on each rejection (§5.3).
    Probe,
    /// The follower's log matches up to `match_index`: AppendEntries are pipelined, at most
    /// `max_inflight` of them unacknowledged.
    Replicate,
    /// The entries the follower needs are compacted away: an InstallSnapshot transfer runs.
    Snapshot,
}

/// An outgoing snapshot transfer to one follower.
struct SnapshotSend {
    /// The snapshot being sent; kept even if the leader compacts again meanwhile.
    snap: Snapshot,
    /// Bytes the follower has acknowledged. Invariant: `acked <= total`.
    acked: u64,
    /// Bytes sent so far (the next chunk starts here). Invariant: `sent <= total`.
    sent: u64,
    /// The chunk with `done: true` has been sent since the last rewind.
    done_sent: bool,
    /// The offset the leader last rewound to, so that a burst of identical "gap" acks after one
    /// lost chunk rewinds once, not once per ack.
    rewound_at: Option<u64>,
}

impl SnapshotSend {
    fn total(&self) -> u64 {
        self.snap.data.len() as u64
    }
}

struct Progress {
    /// Highest index known to be durably replicated on the peer and matching the leader's log.
    /// Invariant: `match_index <= leader.last_index()`; only grows within one leadership.
    match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index <= leader.last_index() + 1`.
    next_index: LogIndex,
    state: ReplState,
    /// Probe state: a probe is outstanding; no more until a response (or heartbeat reply).
    probe_sent: bool,
    /// Replicate state: last index of each unacknowledged AppendEntries carrying entries,
    /// ascending. Invariant: `len() <= max_inflight`.
    inflight: VecDeque<LogIndex>,
    /// Set in `ReplState::Snapshot` only.
    snapshot: Option<SnapshotSend>,
    /// Heard from the peer since the last check-quorum round (§6.2, thesis §6.2).
    recent_active: bool,
    /// Highest ReadIndex round the peer has echoed in this leadership.
    read_seq: u64,
    /// Ticks without progress while behind; triggers a restart of probing or of the transfer.
    stall_ticks: u32,
}

impl Progress {
    fn new(next: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index: next,
            state: ReplState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            snapshot: None,
            recent_active: false,
            read_seq: 0,
            stall_ticks: 0,
        }
    }
    fn become_probe(&mut self) {
        self.state = ReplState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
        self.next_index = self.match_index.next();
        self.stall_ticks = 0;
    }
}

/// A read waiting for its leadership-confirmation round (thesis §6.4).
struct PendingRead {
    ctx: u64,
    /// The commit index when the read was accepted: safe to serve once applied.
    index: LogIndex,
    /// The round whose quorum echo confirms this read.
    seq: u64,
}

/// A snapshot arriving in chunks from the leader.
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total: u64,
    /// The bytes before `buf.len()`. Invariant: `buf.len() <= total <= max_snapshot_bytes`.
    buf: Vec<u8>,
}

struct Transfer {
    to: NodeId,
    elapsed_ticks: u32,
    timeout_now_sent: bool,
}

/// A small deterministic PRNG (splitmix64): same seed, same sequence, on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The core itself. Fields are private; see the methods.
pub struct Raft {
    cfg: Config,
    id: NodeId,
    rng: SplitMix64,

    // ---- Persistent state (Figure 2), mirrored to the host through Ready.hard_state ----
    /// Latest term this node has seen. Only grows (across restarts too: it is durable).
    term: Term,
    /// Candidate voted for in `term`. At most one per term (Election Safety, §5.2); the vote
    /// leaves in a message only after it is durable.
    vote: Option<NodeId>,
    /// Highest index known committed. Invariant: `snap_index <= commit <= last_index()`; never
    /// goes backwards (State Machine Safety).
    commit: LogIndex,

    // ---- The log view ----
    /// Latest snapshot (taken by `compact`, installed from a leader, or from boot). Entries up to
    /// `snap_index` exist only inside it.
    snapshot: Option<Snapshot>,
    /// Index/term of the snapshot (0/0 without one). `term_at(snap_index) == snap_term`.
    snap_index: LogIndex,
    snap_term: Term,
    /// The membership in force at `snap_index` (the base that Config entries in `entries` change).
    base_membership: Membership,
    /// The log after the snapshot. Invariant: `entries[i].index == snap_index + 1 + i`; terms
    /// never decrease and are at most `term` (Log Matching relies on this shape).
    entries: Vec<Entry>,
    /// Indices of the Config entries in `entries`, ascending, so a truncation can revert the
    /// membership (thesis §4.1: a configuration takes effect when appended).
    config_indices: Vec<LogIndex>,
    /// The latest membership in the log (the last Config entry, else `base_membership`).
    /// Every quorum is computed from it.
    membership: Membership,
    /// Entries through this index are durable on this node. Invariant: `persisted <= last_index()`.
    persisted: LogIndex,
    /// Entries from this index on have not yet been handed out in `Ready.entries`.
    /// Invariant: `snap_index < unstable_from <= last_index() + 1`.
    unstable_from: LogIndex,
    /// Last index handed out through `Ready.committed` or a `Ready.snapshot`.
    /// Invariant: `applied <= commit`.
    applied: LogIndex,

    // ---- Volatile role state ----
    role: Role,
    /// The leader of `term`, once known.
    leader: Option<NodeId>,
    /// Ticks since the timer reset: the election timer for non-leaders (reset when hearing from
    /// the leader or granting a vote), the check-quorum period for a leader.
    election_elapsed: u32,
    /// Drawn from `[election_ticks, 2 * election_ticks)` at each reset (§5.2).
    randomized_timeout: u32,
    heartbeat_elapsed: u32,
    /// Votes (or pre-votes) received in the current campaign, by voter.
    votes: BTreeMap<NodeId, bool>,

    // ---- Leader state ----
    /// One entry per member other than this node (latest membership), only while leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Index of this leader's no-op: once committed, the leader knows its own commit index is
    /// current (§5.4.2, thesis §6.4) and may serve reads and accept membership changes.
    noop_index: LogIndex,
    transfer: Option<Transfer>,
    /// Proposals appended since the last `ready()`: AppendEntries go out in one batch.
    append_pending: bool,
    /// ReadIndex round counter; only grows.
    read_seq: u64,
    /// Reads accepted before this leader committed an entry of its term (ctx only).
    reads_before_commit: Vec<u64>,
    /// Reads waiting for their round, in `seq` order.
    pending_reads: VecDeque<PendingRead>,
    /// A read arrived that needs a new round: started (and sent) at the next `ready()`.
    read_round_wanted: bool,

    // ---- Follower snapshot reception ----
    incoming_snapshot: Option<IncomingSnapshot>,

    // ---- Output, drained by ready() ----
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    pending_snapshot: Option<Snapshot>,
    read_states: Vec<ReadState>,
    prev_soft: SoftState,
    prev_hard: HardState,
}

impl Raft {
    /// Starts a node from its recovered durable state. A node whose log and snapshot hold no
    /// membership (started with `--join`) stays a non-voting Learner until a leader adds it.
    ///
    /// A boot log that is not contiguous after the snapshot is cut at the first gap (the host's
    /// recovery should have refused it already; the core will not build on a broken log).
    pub fn new(config: Config, boot: Boot, seed: u64) -> Raft {
        let id = config.id;
        let (snap_index, snap_term, base_membership) = match &boot.snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.membership.clone()),
            None => (LogIndex(0), Term(0), Membership::default()),
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(boot.entries.len());
        for e in boot.entries {
            if e.index <= snap_index {
                continue;
            }
            let expect = LogIndex(snap_index.0 + 1 + entries.len() as u64);
            let prev_term = entries.last().map(|p: &Entry| p.term).unwrap_or(snap_term);
            if e.index != expect || e.term < prev_term {
                log::error!("n{id} boot log broken at {:?}; ignoring the rest", e.index);
                break;
            }
            entries.push(e);
        }
        let last = LogIndex(snap_index.0 + entries.len() as u64);
        let last_term = entries.last().map(|e| e.term).unwrap_or(snap_term);
        let mut hs = boot.hard_state;
        if Bugs::on(config.bugs.forget_vote_on_restart) {
            hs.vote = None;
        }
        let term = hs.term.max(last_term);
        let commit = hs.commit.min(last).max(snap_index);
        let mut r = Raft {
            rng: SplitMix64(seed ^ id.0.wrapping_mul(0xA24B_AED4_963E_E407)),
            id,
            term,
            vote: if term == hs.term { hs.vote } else { None },
            commit,
            snapshot: boot.snapshot,
            snap_index,
            snap_term,
            base_membership: base_membership.clone(),
            entries,
            config_indices: Vec::new(),
            membership: base_membership,
            persisted: last,
            unstable_from: last.next(),
            applied: snap_index,
            role: Role::Learner,
            leader: None,
            election_elapsed: 0,
            randomized_timeout: config.election_ticks.max(1),
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            noop_index: LogIndex(0),
            transfer: None,
            append_pending: false,
            read_seq: 0,
            reads_before_commit: Vec::new(),
            pending_reads: VecDeque::new(),
            read_round_wanted: false,
            incoming_snapshot: None,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            pending_snapshot: None,
            read_states: Vec::new(),
            prev_soft: SoftState {
                role: Role::Learner,
                term,
                leader: None,
            },
            prev_hard: boot.hard_state,
            cfg: config,
        };
        r.config_indices = r
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
            .map(|e| e.index)
            .collect();
        r.recompute_membership();
        r.role = if r.membership.is_voter(id) {
            Role::Follower
        } else {
            Role::Learner
        };
        r.prev_soft = r.soft_state();
        r.reset_election_timer();
        log::info!(
            "n{} started at {:?} as {:?}, log {:?}..{:?}, commit {:?}",
            id,
            r.term,
            r.role,
            r.first_index(),
            r.last_index(),
            r.commit
        );
        r
    }

    // ------------------------------------------------------------------ observers

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snap_index.0 + self.entries.len() as u64)
    }
    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map(|e| e.term)
            .unwrap_or(self.snap_term)
    }
    /// First index still held in memory (snapshot index + 1).
    pub fn first_index(&self) -> LogIndex {
        self.snap_index.next()
    }
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted
    }
    /// Last index handed out in `Ready.committed` (or covered by a `Ready.snapshot`).
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        }
    }
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The latest membership in the log (in force on this node now).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref().map(|s| &s.meta)
    }
    /// The latest snapshot this node holds (its data is shared, cloning is cheap).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// The term of the entry at `index`: `Some(Term(0))` for index 0 without a snapshot, the
    /// snapshot's term at its index, `None` when compacted away or beyond the log.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        if index < self.snap_index {
            return None;
        }
        self.entry(index).map(|e| e.term)
    }
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snap_index {
            return None;
        }
        self.entries.get((index.0 - self.snap_index.0 - 1) as usize)
    }
    /// The membership in force at `index` (the last Config entry at or before it), if `index`
    /// is at or after the snapshot and within the log.
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        if index < self.snap_index || index > self.last_index() {
            return None;
        }
        let ci = self.config_indices.iter().rev().find(|&&c| c <= index);
        match ci {
            Some(&c) => self.entry(c).and_then(|e| decode_membership(&e.data)),
            None => Some(self.base_membership.clone()),
        }
    }
    /// The metadata a snapshot of the state after applying `index` must carry (for the host's
    /// `compact`). `None` when `index` is not applied or not in memory.
    pub fn snapshot_meta_at(&self, index: LogIndex) -> Option<SnapshotMeta> {
        if index > self.applied {
            return None;
        }
        Some(SnapshotMeta {
            index,
            term: self.term_at(index)?,
            membership: self.membership_at(index)?,
        })
    }
    /// Replication progress of every other member; empty unless leader.
    pub fn progress(&self) -> Vec<PeerProgress> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        self.progress
            .iter()
            .map(|(&id, pr)| PeerProgress {
                id,
                role: self
                    .membership
                    .members
                    .get(&id)
                    .map(|m| m.role)
                    .unwrap_or(MemberRole::Learner),
                match_index: pr.match_index,
                next_index: pr.next_index,
                snapshot_transfer: pr.snapshot.as_ref().map(|s| (s.acked, s.total())),
            })
            .collect()
    }

    // ------------------------------------------------------------------ inputs

    /// One unit of logical time.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        if self.election_elapsed >= self.randomized_timeout {
            self.reset_election_timer();
            if self.can_campaign() {
                self.start_election(false);
            }
        }
    }

    /// Starts an election now, as if the election timer had fired (through pre-vote when
    /// configured). Ignored by leaders and by nodes that are not voters.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.can_campaign() {
            self.start_election(false);
        }
    }

    /// Appends an application command. Leader only.
    pub fn propose(&mut self, data: &[u8]) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_as_leader(EntryKind::Normal, data))
    }

    /// Appends a membership change (single-server change, thesis §4.1). Refused while another
    /// change is uncommitted or before this leader has committed an entry of its own term (the
    /// bug in the original single-server change algorithm, thesis §4.1 errata).
    pub fn propose_conf_change(
        &mut self,
        cc: ConfChange,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        if self.commit < self.noop_index {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let uncommitted = self.config_indices.last().is_some_and(|&c| c > self.commit);
        if uncommitted && !Bugs::on(self.cfg.bugs.concurrent_conf_changes) {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let mut m = self.membership.clone();
        match cc {
            ConfChange::AddLearner { id, addr } => {
                if id.0 == 0 {
                    return Err(ProposeError::Invalid("node id 0 is reserved"));
                }
                if m.contains(id) {
                    return Err(ProposeError::Invalid("already a member"));
                }
                if m.members.len() >= MAX_MEMBERS {
                    return Err(ProposeError::Invalid("too many members"));
                }
                if addr.len() > MAX_ADDR_LEN {
                    return Err(ProposeError::Invalid("address too long"));
                }
                m.members.insert(
                    id,
                    Member {
                        role: MemberRole::Learner,
                        addr,
                    },
                );
            }
            ConfChange::Promote { id } => {
                match m.members.get(&id) {
                    Some(mem) if mem.role == MemberRole::Learner => {}
                    Some(_) => return Err(ProposeError::Invalid("already a voter")),
                    None => return Err(ProposeError::Invalid("not a member")),
                }
                let matched = self
                    .progress
                    .get(&id)
                    .map(|p| p.match_index)
                    .unwrap_or_default();
                if matched.0 + self.cfg.promote_max_lag < self.last_index().0 {
                    return Err(ProposeError::NotCaughtUp);
                }
                if let Some(mem) = m.members.get_mut(&id) {
                    mem.role = MemberRole::Voter;
                }
            }
            ConfChange::Remove { id } => {
                if !m.contains(id) {
                    return Err(ProposeError::Invalid("not a member"));
                }
                if m.is_voter(id) && m.voter_count() == 1 {
                    return Err(ProposeError::Invalid("cannot remove the last voter"));
                }
                m.members.remove(&id);
            }
        }
        let data = m.encoded();
        Ok(self.append_as_leader(EntryKind::Config, &data))
    }

    /// Asks for a linearizable read point (thesis §6.4). The answer comes later as a
    /// `Ready.read_states` entry with the same `ctx`. Reads still waiting when this node stops
    /// leading are dropped silently: the host must time them out and let the client retry.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if Bugs::on(self.cfg.bugs.read_without_confirmation) {
            self.read_states.push(ReadState {
                ctx,
                index: self.commit,
            });
            return Ok(());
        }
        if self.commit < self.noop_index {
            self.reads_before_commit.push(ctx);
            return Ok(());
        }
        self.queue_read(ctx);
        Ok(())
    }

    /// Hands leadership to `to` (thesis §3.10): proposals are refused meanwhile; the target is
    /// brought up to date and then told to campaign at once. Aborted after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Err(ProposeError::Invalid("already the leader"));
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::Invalid("transfer target is not a voter"));
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        log::info!(
            "n{} transferring leadership to n{} at {:?}",
            self.id,
            to,
            self.term
        );
        self.transfer = Some(Transfer {
            to,
            elapsed_ticks: 0,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now();
        if self.transfer.as_ref().is_some_and(|t| !t.timeout_now_sent) {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// The host took a snapshot of its state machine at an applied index: forget the log up to
    /// it and keep the snapshot to send to followers behind it. Ignored if the snapshot is not
    /// newer than the current one, beyond the applied index, or names another term than the log.
    /// The membership in the kept metadata is the one this log says is in force at that index.
    pub fn compact(&mut self, mut snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        if idx <= self.snap_index || idx > self.applied || idx > self.persisted {
            return;
        }
        if self.term_at(idx) != Some(snapshot.meta.term) {
            return;
        }
        let Some(m) = self.membership_at(idx) else {
            return;
        };
        snapshot.meta.membership = m.clone();
        let drop = (idx.0 - self.snap_index.0) as usize;
        self.entries.drain(..drop);
        self.config_indices.retain(|&c| c > idx);
        self.snap_index = idx;
        self.snap_term = snapshot.meta.term;
        self.base_membership = m;
        self.snapshot = Some(snapshot);
        if self.unstable_from <= idx {
            self.unstable_from = idx.next();
        }
        log::info!("n{} compacted its log through {:?}", self.id, idx);
    }

    /// The host's write through `(index, term)` is durable. Ignored if that entry is no longer in
    /// the log with that term (it was truncated meanwhile) or was never handed out.
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        if index >= self.unstable_from || index <= self.persisted {
            return;
        }
        if self.term_at(index) != Some(term) {
            return;
        }
        self.persisted = index;
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Handles any message from the network. Misaddressed, stale or malformed messages are
    /// ignored (or answered with a rejection); never panics.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || m.from.0 == 0 {
            return;
        }
        log::debug!(
            "n{} {:?} {:?} got {} from n{} at {:?}",
            self.id,
            self.role,
            self.term,
            m.body.name(),
            m.from,
            m.term
        );
        if m.term > self.term {
            match &m.body {
                // Pre-votes never change terms (thesis §9.6).
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                // Within the lease of a live leader, vote requests are ignored so that a removed
                // or partitioned server cannot depose it (thesis §4.2.3, §6.2).
                MessageBody::RequestVote { transfer, .. } if !*transfer && self.in_lease() => {
                    return;
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader (e.g. one that was partitioned) learns the newer term and steps
                // down; with pre-vote/check-quorum it could not find out otherwise.
                MessageBody::AppendEntries { read_seq, .. } => {
                    let last_index = self.last_index();
                    self.send(
                        m.from,
                        MessageBody::AppendEntriesResponse {
                            success: false,
                            match_index: LogIndex(0),
                            conflict_term: Term(0),
                            conflict_index: LogIndex(0),
                            last_index,
                            read_seq,
                        },
                    );
                }
                MessageBody::InstallSnapshot { meta, .. } => self.send(
                    m.from,
                    MessageBody::InstallSnapshotResponse {
                        snapshot_index: meta.index,
                        next_offset: 0,
                        installed: false,
                    },
                ),
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false })
                }
                MessageBody::RequestVote { .. } => {
                    self.send(m.from, MessageBody::RequestVoteResponse { granted: false })
                }
                _ => {}
            }
            return;
        }
        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.on_pre_vote(m.from, m.term, last_log_index, last_log_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role != Role::PreCandidate {
                    return;
                }
                let expect = if granted { self.term.next() } else { self.term };
                if m.term == expect {
                    self.record_vote(m.from, granted);
                }
            }
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.on_request_vote(m.from, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.record_vote(m.from, granted);
                }
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            } => {
                if self.role == Role::Leader {
                    log::error!("n{} second leader n{} at {:?}", self.id, m.from, self.term);
                    return;
                }
                self.follow(m.from);
                self.on_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                );
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict_term,
                conflict_index,
                last_index,
                read_seq,
            } => {
                if self.role == Role::Leader {
                    self.on_append_response(
                        m.from,
                        success,
                        match_index,
                        conflict_term,
                        conflict_index,
                        last_index,
                        read_seq,
                    );
                }
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total,
                data,
                done,
            } => {
                if self.role == Role::Leader {
                    return;
                }
                self.follow(m.from);
                self.on_snapshot_chunk(m.from, meta, offset, total, data, done);
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                installed,
            } => {
                if self.role == Role::Leader {
                    self.on_snapshot_response(m.from, snapshot_index, next_offset, installed);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.can_campaign() {
                    log::info!(
                        "n{} got TimeoutNow from n{} at {:?}",
                        self.id,
                        m.from,
                        self.term
                    );
                    self.become_candidate(true);
                }
            }
        }
    }

    // ------------------------------------------------------------------ output

    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.pending_snapshot.is_some()
            || self.unstable_from <= self.last_index()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.applied < self.commit.min(self.persisted)
            || !self.read_states.is_empty()
            || self.append_pending
            || self.read_round_wanted
    }

    /// Everything produced since the last call; see the module docs for how to handle it.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.append_pending {
                self.append_pending = false;
                let ids: Vec<NodeId> = self.progress.keys().copied().collect();
                for id in ids {
                    self.send_append(id, false);
                }
            }
            if self.read_round_wanted {
                self.read_round_wanted = false;
                self.read_seq += 1;
                self.broadcast_heartbeat();
                self.advance_reads();
            }
        }
        self.append_pending = false;
        self.read_round_wanted = false;
        let mut rd = Ready::default();
        let soft = self.soft_state();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hard = self.hard_state();
        if hard != self.prev_hard {
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        if let Some(s) = self.pending_snapshot.take() {
            self.applied = self.applied.max(s.meta.index);
            rd.snapshot = Some(s);
        }
        if self.unstable_from <= self.last_index() {
            let from = (self.unstable_from.0 - self.snap_index.0 - 1) as usize;
            rd.entries = self.entries[from..].to_vec();
            self.unstable_from = self.last_index().next();
        }
        rd.messages = std::mem::take(&mut self.msgs);
        rd.messages_after_persist = std::mem::take(&mut self.msgs_after_persist);
        let upto = self.commit.min(self.persisted);
        if self.applied < upto {
            let start = self.applied.max(self.snap_index);
            let from = (start.0 - self.snap_index.0) as usize;
            let to = (upto.0 - self.snap_index.0) as usize;
            rd.committed = self.entries[from..to].to_vec();
            self.applied = upto;
        }
        rd.read_states = std::mem::take(&mut self.read_states);
        rd
    }

    // ------------------------------------------------------------------ invariants

    /// Checks this node's local invariants; each error names the Raft property it protects.
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.id;
        for (i, e) in self.entries.iter().enumerate() {
            if e.index.0 != self.snap_index.0 + 1 + i as u64 {
                return Err(format!(
                    "n{n} Log Matching: entry {i} has index {:?}",
                    e.index
                ));
            }
            let prev = if i == 0 {
                self.snap_term
            } else {
                self.entries[i - 1].term
            };
            if e.term < prev {
                return Err(format!(
                    "n{n} Log Matching: term goes down at {:?}",
                    e.index
                ));
            }
            if e.term > self.term {
                return Err(format!(
                    "n{n} Log Matching: entry {:?} from a future term",
                    e.index
                ));
            }
        }
        if self.commit > self.last_index() || self.commit < self.snap_index {
            return Err(format!(
                "n{n} State Machine Safety: commit {:?} outside log {:?}..{:?}",
                self.commit,
                self.snap_index,
                self.last_index()
            ));
        }
        if self.applied > self.commit {
            return Err(format!(
                "n{n} State Machine Safety: applied {:?} > commit {:?}",
                self.applied, self.commit
            ));
        }
        if self.applied > self.persisted.max(self.snap_index) {
            return Err(format!(
                "n{n} durability (§3.8): applied {:?} beyond persisted {:?}",
                self.applied, self.persisted
            ));
        }
        if self.persisted > self.last_index() {
            return Err(format!(
                "n{n} durability (§3.8): persisted {:?} beyond log",
                self.persisted
            ));
        }
        if self.unstable_from <= self.snap_index || self.unstable_from > self.last_index().next() {
            return Err(format!(
                "n{n} persistence order: unstable_from {:?} out of range",
                self.unstable_from
            ));
        }
        let configs: Vec<LogIndex> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
            .map(|e| e.index)
            .collect();
        if configs != self.config_indices {
            return Err(format!(
                "n{n} membership (§4.1): config index list is stale"
            ));
        }
        if self.membership_at(self.last_index()).as_ref() != Some(&self.membership) {
            return Err(format!(
                "n{n} membership (§4.1): latest membership not the log's"
            ));
        }
        if self.vote.is_some() && self.term.0 == 0 {
            return Err(format!("n{n} Election Safety: vote in term 0"));
        }
        match self.role {
            Role::Leader => {
                if self.vote != Some(n) || self.leader != Some(n) {
                    return Err(format!(
                        "n{n} Election Safety: leader of {:?} without own vote",
                        self.term
                    ));
                }
                if self.term_at(self.noop_index) != Some(self.term)
                    && self.noop_index > self.snap_index
                {
                    return Err(format!("n{n} Leader Append-Only: own no-op missing"));
                }
                let peers: Vec<NodeId> = self
                    .membership
                    .members
                    .keys()
                    .copied()
                    .filter(|&p| p != n)
                    .collect();
                let have: Vec<NodeId> = self.progress.keys().copied().collect();
                if peers != have {
                    return Err(format!(
                        "n{n} replication: progress {have:?} != members {peers:?}"
                    ));
                }
                for (id, pr) in &self.progress {
                    if pr.match_index > self.last_index()
                        || pr.next_index <= pr.match_index
                        || pr.next_index > self.last_index().next()
                    {
                        return Err(format!(
                            "n{n} replication: n{id} match {:?} next {:?} last {:?}",
                            pr.match_index,
                            pr.next_index,
                            self.last_index()
                        ));
                    }
                    if pr.inflight.len() > self.cfg.max_inflight.max(1) {
                        return Err(format!(
                            "n{n} flow control: n{id} has {} in flight",
                            pr.inflight.len()
                        ));
                    }
                }
                for r in &self.pending_reads {
                    if r.index > self.commit {
                        return Err(format!("n{n} ReadIndex (§6.4): read index beyond commit"));
                    }
                }
            }
            Role::Follower | Role::Candidate | Role::PreCandidate => {
                if !self.membership.is_voter(n) {
                    return Err(format!("n{n} membership: {:?} but not a voter", self.role));
                }
            }
            Role::Learner => {
                if self.membership.is_voter(n) {
                    return Err(format!("n{n} membership: voter stuck as learner"));
                }
            }
        }
        if self.role != Role::Leader && !self.progress.is_empty() {
            return Err(format!("n{n} replication: progress kept after leadership"));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ internals: roles

    fn can_campaign(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Heard from a current leader within the minimum election timeout (thesis §4.2.3).
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_ticks
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = self.cfg.election_ticks.max(1) as u64;
        self.randomized_timeout = (e + self.rng.next_u64() % e) as u32;
    }

    fn log_role(&self, before: Role) {
        if before != self.role {
            log::info!("n{} became {:?} at {:?}", self.id, self.role, self.term);
        }
    }

    fn clear_leader_state(&mut self) {
        self.progress.clear();
        self.transfer = None;
        self.append_pending = false;
        self.read_round_wanted = false;
        self.reads_before_commit.clear();
        self.pending_reads.clear();
        self.noop_index = LogIndex(0);
    }

    /// Adopts `term` (forgetting the vote if it is newer) and follows `leader`.
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let before = self.role;
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.clear_leader_state();
        self.votes.clear();
        self.leader = leader;
        self.role = if self.membership.is_voter(self.id) {
            Role::Follower
        } else {
            Role::Learner
        };
        self.reset_election_timer();
        self.log_role(before);
    }

    /// A valid AppendEntries/InstallSnapshot from `from` in our term: it is the leader.
    fn follow(&mut self, from: NodeId) {
        if (self.role != Role::Follower && self.role != Role::Learner) || self.leader != Some(from)
        {
            self.become_follower(self.term, Some(from));
        } else {
            self.election_elapsed = 0;
        }
    }

    fn start_election(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        let before = self.role;
        self.clear_leader_state();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.log_role(before);
        let (li, lt) = (self.last_index(), self.last_term());
        let voters: Vec<NodeId> = self.membership.voters().filter(|&v| v != self.id).collect();
        for v in voters {
            self.msgs.push(Message {
                from: self.id,
                to: v,
                term: self.term.next(),
                body: MessageBody::PreVote {
                    last_log_index: li,
                    last_log_term: lt,
                },
            });
        }
        self.record_vote(self.id, true);
    }

    fn become_candidate(&mut self, transfer: bool) {
        let before = self.role;
        self.clear_leader_state();
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.log_role(before);
        let (li, lt) = (self.last_index(), self.last_term());
        let voters: Vec<NodeId> = self.membership.voters().filter(|&v| v != self.id).collect();
        for v in voters {
            // The candidate's own vote must be durable before it asks for others (§3.8).
            self.send_after_persist(
                v,
                MessageBody::RequestVote {
                    last_log_index: li,
                    last_log_term: lt,
                    transfer,
                },
            );
        }
        self.record_vote(self.id, true);
    }

    /// Counts a (pre-)vote from a voter of the latest membership and decides the campaign.
    fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        let yes = self.votes.values().filter(|&&g| g).count();
        let no = self.votes.len() - yes;
        let q = self.membership.quorum();
        if yes >= q {
            match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if no > self.membership.voter_count() - q {
            self.become_follower(self.term, None);
        }
    }

    fn become_leader(&mut self) {
        let before = self.role;
        self.clear_leader_state();
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.log_role(before);
        let next = self.last_index().next();
        let peers: Vec<NodeId> = self
            .membership
            .members
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect();
        for p in peers {
            self.progress.insert(p, Progress::new(next));
        }
        // §5.4.2 / §8: an entry of the new term lets the leader commit (and learn the commit
        // index) without counting replicas of older terms.
        let (idx, _) = self.append_as_leader(EntryKind::Noop, &[]);
        self.noop_index = idx;
        self.maybe_commit();
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks.max(1) {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        if let Some(t) = &mut self.transfer {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= self.cfg.election_ticks {
                log::info!("n{} leadership transfer to n{} timed out", self.id, t.to);
                self.transfer = None;
            }
        }
        let last = self.last_index();
        let et = self.cfg.election_ticks.max(1);
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in ids {
            let Some(pr) = self.progress.get_mut(&id) else {
                continue;
            };
            if pr.match_index >= last && pr.state != ReplState::Snapshot {
                pr.stall_ticks = 0;
                continue;
            }
            pr.stall_ticks += 1;
            if pr.stall_ticks < et {
                continue;
            }
            pr.stall_ticks = 0;
            match pr.state {
                ReplState::Snapshot => {
                    if let Some(s) = &mut pr.snapshot {
                        s.sent = s.acked;
                        s.done_sent = false;
                        s.rewound_at = None;
                    }
                }
                _ => pr.become_probe(),
            }
            self.send_append(id, false);
        }
        if self.election_elapsed >= et {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let mut active = if self.membership.is_voter(self.id) {
                    1
                } else {
                    0
                };
                for v in self.membership.voters() {
                    if v != self.id && self.progress.get(&v).is_some_and(|p| p.recent_active) {
                        active += 1;
                    }
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
                if active < self.membership.quorum() {
                    log::info!(
                        "n{} lost contact with a quorum at {:?}; stepping down",
                        self.id,
                        self.term
                    );
                    self.become_follower(self.term, None);
                }
            }
        }
    }

    // ------------------------------------------------------------------ internals: voting

    /// §5.4.1: the candidate's log is at least as up to date as ours.
    fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    fn on_pre_vote(&mut self, from: NodeId, term: Term, li: LogIndex, lt: Term) {
        let granted = term > self.term
            && !self.in_lease()
            && self.membership.contains(self.id)
            && self.log_up_to_date(li, lt);
        let reply_term = if granted { term } else { self.term };
        self.msgs.push(Message {
            from: self.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    fn on_request_vote(&mut self, from: NodeId, li: LogIndex, lt: Term) {
        // Vote at most once per term (§5.2); a node not in its own membership never votes.
        // A learner answers when asked: only a candidate whose log makes it a voter asks it, and
        // refusing then could block a new configuration from ever electing a leader.
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote
            && self.role != Role::Leader
            && self.membership.contains(self.id)
            && self.log_up_to_date(li, lt);
        if granted {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        log::debug!(
            "n{} {} vote for n{} at {:?}",
            self.id,
            if granted { "grants" } else { "refuses" },
            from,
            self.term
        );
        self.send_after_persist(from, MessageBody::RequestVoteResponse { granted });
    }

    // ------------------------------------------------------------------ internals: the log

    fn recompute_membership(&mut self) {
        let mut m = self.base_membership.clone();
        for &ci in self.config_indices.iter().rev() {
            if let Some(d) = self.entry(ci).and_then(|e| decode_membership(&e.data)) {
                m = d;
                break;
            }
        }
        self.membership = m;
    }

    /// After the membership changed: leaders track the new member set, others fix their role.
    fn on_membership_changed(&mut self) {
        if self.role == Role::Leader {
            let next = self.last_index().next();
            let members: Vec<NodeId> = self
                .membership
                .members
                .keys()
                .copied()
                .filter(|&p| p != self.id)
                .collect();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            if let Some(t) = &self.transfer {
                if !self.membership.is_voter(t.to) {
                    self.transfer = None;
                }
            }
            return;
        }
        let before = self.role;
        let voter = self.membership.is_voter(self.id);
        match self.role {
            Role::Follower | Role::Learner => {
                self.role = if voter { Role::Follower } else { Role::Learner };
            }
            Role::Candidate | Role::PreCandidate if !voter => {
                self.votes.clear();
                self.role = Role::Learner;
            }
            _ => {}
        }
        self.log_role(before);
    }

    fn append_as_leader(&mut self, kind: EntryKind, data: &[u8]) -> (LogIndex, Term) {
        let idx = self.last_index().next();
        self.entries.push(Entry::new(self.term, idx, kind, data));
        if kind == EntryKind::Config {
            self.config_indices.push(idx);
            self.recompute_membership();
            self.on_membership_changed();
        }
        if Bugs::on(self.cfg.bugs.ack_before_sync) {
            self.persisted = idx;
            self.maybe_commit();
        }
        self.append_pending = true;
        (idx, self.term)
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if (self.last_index().0 - self.commit.0) as usize >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::Busy);
        }
        Ok(())
    }

    /// Drops entries from `from` on. Only entries above `commit` may go (Leader Completeness).
    fn truncate_from(&mut self, from: LogIndex) {
        let keep = (from.0 - self.snap_index.0 - 1) as usize;
        self.entries.truncate(keep);
        let had_config = self.config_indices.last().is_some_and(|&c| c >= from);
        self.config_indices.retain(|&c| c < from);
        self.persisted = self.persisted.min(from.prev());
        self.unstable_from = self.unstable_from.min(from);
        if had_config {
            self.recompute_membership();
            self.on_membership_changed();
        }
    }

    // ------------------------------------------------------------------ internals: follower

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        from: NodeId,
        prev: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) {
        // Shape checks first: a malformed message is dropped, not half-applied.
        for (i, e) in entries.iter().enumerate() {
            if e.index.0 != prev.0.wrapping_add(1 + i as u64) || e.term > self.term {
                return;
            }
            if i > 0 && e.term < entries[i - 1].term {
                return;
            }
        }
        if prev >= self.snap_index && self.term_at(prev) != Some(prev_term) {
            // §5.3 consistency check failed: reply with hints for fast back-off.
            let last = self.last_index();
            let (ct, ci) = match self.term_at(prev) {
                None => (Term(0), last.next()),
                Some(t) => {
                    let start = self.entries.partition_point(|e| e.term < t);
                    (t, LogIndex(self.snap_index.0 + 1 + start as u64).min(prev))
                }
            };
            self.send_ack(
                from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: LogIndex(0),
                    conflict_term: ct,
                    conflict_index: ci,
                    last_index: last,
                    read_seq,
                },
            );
            return;
        }
        let last_new = LogIndex(prev.0 + entries.len() as u64);
        // Append only what is new; truncate from the first conflicting entry only (Figure 2,
        // receiver step 3): a delayed AppendEntries that matches must never cut the log.
        let mut append_from = None;
        for (i, e) in entries.iter().enumerate() {
            if e.index <= self.snap_index {
                if e.index == self.snap_index && e.term != self.snap_term {
                    log::error!(
                        "n{} AppendEntries contradicts snapshot at {:?}",
                        self.id,
                        e.index
                    );
                    return;
                }
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        log::error!(
                            "n{} AppendEntries would truncate committed {:?}",
                            self.id,
                            e.index
                        );
                        return;
                    }
                    append_from = Some(i);
                    break;
                }
                None => {
                    append_from = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = append_from {
            let first = entries[i].index;
            if first <= self.last_index() {
                self.truncate_from(first);
            }
            let mut config_seen = false;
            for e in entries.into_iter().skip(i) {
                if e.kind == EntryKind::Config {
                    self.config_indices.push(e.index);
                    config_seen = true;
                }
                self.entries.push(e);
            }
            if config_seen {
                self.recompute_membership();
                self.on_membership_changed();
            }
            if Bugs::on(self.cfg.bugs.ack_before_sync) {
                self.persisted = self.last_index();
            }
        }
        let new_commit = leader_commit.min(last_new).min(self.last_index());
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        self.send_ack(
            from,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: last_new.min(self.last_index()),
                conflict_term: Term(0),
                conflict_index: LogIndex(0),
                last_index: self.last_index(),
                read_seq,
            },
        );
    }

    fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let index = meta.index;
        // Already covered (by our snapshot or a matching log entry): nothing to transfer.
        if index <= self.snap_index || self.term_at(index) == Some(meta.term) {
            self.incoming_snapshot = None;
            if index > self.commit && index <= self.last_index() {
                self.commit = index;
            }
            self.send_ack(
                from,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: index,
                    next_offset: total,
                    installed: true,
                },
            );
            return;
        }
        if total > self.cfg.max_snapshot_bytes
            || offset
                .checked_add(data.len() as u64)
                .map_or(true, |end| end > total)
        {
            log::warn!(
                "n{} dropped a malformed snapshot chunk from n{}",
                self.id,
                from
            );
            return;
        }
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total == total);
        if !same {
            if offset != 0 {
                self.send(
                    from,
                    MessageBody::InstallSnapshotResponse {
                        snapshot_index: index,
                        next_offset: 0,
                        installed: false,
                    },
                );
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                total,
                buf: Vec::new(),
            });
        }
        let Some(inc) = self.incoming_snapshot.as_mut() else {
            return;
        };
        let have = inc.buf.len() as u64;
        if offset == have {
            inc.buf.extend_from_slice(&data);
        }
        let have = inc.buf.len() as u64;
        if done && offset + data.len() as u64 == total && have == total {
            let Some(inc) = self.incoming_snapshot.take() else {
                return;
            };
            self.install_snapshot(Snapshot {
                meta: inc.meta,
                data: Arc::from(inc.buf),
            });
            self.send_ack(
                from,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: index,
                    next_offset: total,
                    installed: true,
                },
            );
            return;
        }
        // Buffered bytes are only in memory: acknowledging them needs no durability.
        self.send(
            from,
            MessageBody::InstallSnapshotResponse {
                snapshot_index: index,
                next_offset: have,
                installed: false,
            },
        );
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        log::info!(
            "n{} installs snapshot at {:?} {:?}",
            self.id,
            idx,
            snap.meta.term
        );
        self.entries.clear();
        self.config_indices.clear();
        self.snap_index = idx;
        self.snap_term = snap.meta.term;
        self.base_membership = snap.meta.membership.clone();
        self.recompute_membership();
        self.commit = self.commit.max(idx);
        self.persisted = self.persisted.min(idx);
        self.unstable_from = idx.next();
        self.snapshot = Some(snap.clone());
        self.pending_snapshot = Some(snap);
        self.on_membership_changed();
    }

    // ------------------------------------------------------------------ internals: leader

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Messages that vouch for durable state: votes, RequestVote, acknowledgements (§3.8).
    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        if Bugs::on(self.cfg.bugs.ack_before_sync) {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    fn send_ack(&mut self, to: NodeId, body: MessageBody) {
        self.send_after_persist(to, body);
    }

    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<LogIndex> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.persisted
                } else {
                    self.progress
                        .get(&v)
                        .map(|p| p.match_index)
                        .unwrap_or_default()
                }
            })
            .collect();
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let n = matched[self.membership.quorum() - 1];
        if n <= self.commit {
            return;
        }
        // §5.4.2: only an entry of the current term commits by counting replicas.
        let own_term = self.term_at(n) == Some(self.term);
        if !own_term && !Bugs::on(self.cfg.bugs.commit_old_term_by_count) {
            return;
        }
        self.commit = n;
        if self.commit >= self.noop_index && !self.reads_before_commit.is_empty() {
            let ctxs = std::mem::take(&mut self.reads_before_commit);
            for ctx in ctxs {
                self.queue_read(ctx);
            }
        }
        // A leader removed by a now-committed configuration steps down (thesis §4.2.2).
        if !self.membership.is_voter(self.id)
            && self
                .config_indices
                .last()
                .map_or(true, |&c| c <= self.commit)
        {
            log::info!(
                "n{} removed from the cluster; stepping down at {:?}",
                self.id,
                self.term
            );
            self.become_follower(self.term, None);
        }
    }

    fn queue_read(&mut self, ctx: u64) {
        let voters: Vec<NodeId> = self.membership.voters().collect();
        if voters.len() == 1 && voters[0] == self.id {
            self.read_states.push(ReadState {
                ctx,
                index: self.commit,
            });
            return;
        }
        self.pending_reads.push_back(PendingRead {
            ctx,
            index: self.commit,
            seq: self.read_seq + 1,
        });
        self.read_round_wanted = true;
    }

    /// Releases every read whose round a quorum of voters has echoed.
    fn advance_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.read_seq
                } else {
                    self.progress.get(&v).map(|p| p.read_seq).unwrap_or(0)
                }
            })
            .collect();
        if acks.is_empty() {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[self.membership.quorum() - 1];
        while let Some(r) = self.pending_reads.front() {
            if r.seq > confirmed {
                break;
            }
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
            self.pending_reads.pop_front();
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in ids {
            let Some(pr) = self.progress.get(&id) else {
                continue;
            };
            let (prev, prev_term) = match self.term_at(pr.match_index) {
                Some(t) => (pr.match_index, t),
                None => (LogIndex(0), Term(0)),
            };
            let body = MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: Vec::new(),
                leader_commit: self.commit.min(pr.match_index),
                read_seq: self.read_seq,
            };
            self.send(id, body);
        }
    }

    /// Sends what `to` needs next, as far as flow control allows: entries (pipelined in
    /// Replicate, one probe in Probe), or snapshot chunks. With `allow_empty`, an empty probe
    /// goes out even if there are no entries to send.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let max_inflight = self.cfg.max_inflight.max(1);
        loop {
            let last = self.last_index();
            let first = self.first_index();
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            match pr.state {
                ReplState::Snapshot => {
                    self.send_snapshot_chunks(to);
                    return;
                }
                ReplState::Probe if pr.probe_sent => return,
                ReplState::Replicate if pr.inflight.len() >= max_inflight => return,
                _ => {}
            }
            if pr.next_index < first {
                match &self.snapshot {
                    Some(s) => {
                        pr.state = ReplState::Snapshot;
                        pr.inflight.clear();
                        pr.stall_ticks = 0;
                        pr.snapshot = Some(SnapshotSend {
                            snap: s.clone(),
                            acked: 0,
                            sent: 0,
                            done_sent: false,
                            rewound_at: None,
                        });
                        log::info!("n{} sends snapshot {:?} to n{}", self.id, s.meta.index, to);
                        self.send_snapshot_chunks(to);
                    }
                    None => pr.next_index = first,
                }
                return;
            }
            let next = pr.next_index;
            if next > last && !(allow_empty && pr.state == ReplState::Probe) {
                return;
            }
            let prev = next.prev();
            let Some(prev_term) = self.term_at(prev) else {
                return;
            };
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let mut i = next;
            while i <= last {
                let Some(e) = self.entry(i) else { break };
                let sz = e.size_hint();
                if !batch.is_empty() && bytes + sz > self.cfg.max_append_bytes {
                    break;
                }
                bytes += sz;
                batch.push(e.clone());
                i = i.next();
            }
            let end = LogIndex(prev.0 + batch.len() as u64);
            let carried = !batch.is_empty();
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            match pr.state {
                ReplState::Replicate => {
                    if carried {
                        pr.next_index = end.next();
                        pr.inflight.push_back(end);
                    }
                }
                _ => pr.probe_sent = true,
            }
            let body = MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: batch,
                leader_commit: self.commit,
                read_seq: self.read_seq,
            };
            self.send(to, body);
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if pr.state != ReplState::Replicate || !carried {
                return;
            }
        }
    }

    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk = self.cfg.snapshot_chunk_bytes.max(1) as u64;
        let window = chunk.saturating_mul(self.cfg.snapshot_inflight_chunks.max(1) as u64);
        let mut out = Vec::new();
        {
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            let Some(s) = pr.snapshot.as_mut() else {
                return;
            };
            let total = s.total();
            s.sent = s.sent.max(s.acked);
            while !s.done_sent && s.sent < s.acked.saturating_add(window).max(s.acked + 1) {
                let end = (s.sent + chunk).min(total);
                let data = s.snap.data[s.sent as usize..end as usize].to_vec();
                let done = end == total;
                out.push(MessageBody::InstallSnapshot {
                    meta: s.snap.meta.clone(),
                    offset: s.sent,
                    total,
                    data,
                    done,
                });
                s.sent = end;
                s.done_sent = done;
            }
        }
        for body in out {
            self.send(to, body);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict_term: Term,
        conflict_index: LogIndex,
        follower_last: LogIndex,
        read_seq: u64,
    ) {
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_seq = pr.read_seq.max(read_seq);
        if success {
            if match_index > last {
                return;
            }
            if match_index > pr.match_index {
                pr.match_index = match_index;
                pr.stall_ticks = 0;
                while pr.inflight.front().is_some_and(|&i| i <= match_index) {
                    pr.inflight.pop_front();
                }
                match pr.state {
                    ReplState::Probe => {
                        pr.state = ReplState::Replicate;
                        pr.probe_sent = false;
                        pr.next_index = pr.next_index.max(match_index.next());
                    }
                    ReplState::Replicate => pr.next_index = pr.next_index.max(match_index.next()),
                    ReplState::Snapshot => pr.become_probe(),
                }
                self.maybe_commit();
            } else {
                // A heartbeat reply or a duplicate: the link works, so let a lost probe or a
                // lost pipelined message be retried (etcd-raft does the same).
                pr.probe_sent = false;
                if pr.inflight.len() >= self.cfg.max_inflight.max(1) {
                    pr.inflight.pop_front();
                }
            }
        } else if pr.state != ReplState::Snapshot {
            // Fast back-off (§5.3): skip a whole conflicting term, or straight to the follower's
            // end when its log is short.
            let hint = if conflict_term.0 == 0 {
                conflict_index
            } else {
                let pos = self.entries.partition_point(|e| e.term <= conflict_term);
                let j = LogIndex(self.snap_index.0 + pos as u64);
                if pos > 0 && self.term_at(j) == Some(conflict_term) {
                    j.next()
                } else {
                    conflict_index
                }
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            let mut next = hint.min(follower_last.next());
            if pr.state == ReplState::Probe {
                next = next.min(pr.next_index.prev());
            }
            pr.state = ReplState::Probe;
            pr.probe_sent = false;
            pr.inflight.clear();
            pr.next_index = next.max(pr.match_index.next()).min(last.next());
        }
        self.maybe_send_timeout_now();
        if self.role == Role::Leader {
            self.send_append(from, false);
            self.advance_reads();
        }
    }

    fn on_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        installed: bool,
    ) {
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if installed {
            if snapshot_index > last {
                return;
            }
            if snapshot_index > pr.match_index {
                pr.match_index = snapshot_index;
            }
            if pr.state == ReplState::Snapshot || pr.next_index <= pr.match_index {
                pr.become_probe();
            }
            self.maybe_commit();
            self.maybe_send_timeout_now();
            if self.role == Role::Leader {
                self.send_append(from, false);
            }
            return;
        }
        let Some(s) = pr.snapshot.as_mut() else {
            return;
        };
        if s.snap.meta.index != snapshot_index {
            return;
        }
        let total = s.total();
        let off = next_offset.min(total);
        if off > s.acked {
            s.acked = off;
            s.rewound_at = None;
            pr.stall_ticks = 0;
        } else if off < s.sent && s.rewound_at != Some(off) {
            // No progress although more was sent: a chunk was lost (or the follower lost its
            // buffer). Resume from the follower's offset, once per offset, since every chunk
            // after the gap repeats the same ack.
            s.rewound_at = Some(off);
            s.acked = off;
            s.sent = off;
            s.done_sent = false;
        }
        self.send_snapshot_chunks(from);
    }

    fn maybe_send_timeout_now(&mut self) {
        let Some(t) = &self.transfer else { return };
        if t.timeout_now_sent {
            return;
        }
        let to = t.to;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.last_index());
        if caught_up {
            if let Some(t) = &mut self.transfer {
                t.timeout_now_sent = true;
            }
            self.send(to, MessageBody::TimeoutNow);
        }
    }
}

fn decode_membership(data: &[u8]) -> Option<Membership> {
    Membership::decode(data).ok().map(|(m, _)| m)
}
