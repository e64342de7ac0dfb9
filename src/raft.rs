//! The Raft protocol as a pure, deterministic state machine (skeleton: API fixed, body to come).
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

/// The core itself. Fields are private; see the methods.
pub struct Raft {
    _todo: (),
}

impl Raft {
    /// Starts a node from its recovered durable state. A node whose log and snapshot hold no
    /// membership (started with `--join`) stays a non-voting Learner until a leader adds it.
    pub fn new(config: Config, boot: Boot, seed: u64) -> Raft {
        let _ = (config, boot, seed);
        todo!()
    }
}
