//! The Raft protocol as a pure, deterministic state machine.
//!
//! Owns roles, terms, votes, the in-memory log view, replication progress, commit, ReadIndex,
//! membership and snapshot metadata. Must not touch sockets, files, clocks or global randomness:
//! time arrives as `tick()`, randomness from the seed given to `Raft::new`.
//!
//! Layout: this file holds the API (configuration, `Ready`, errors), the `Raft` struct with its
//! field invariants, the public methods and `ready()`; `invariants.rs` holds
//! `check_invariants()`. The internals are split by concern: `election.rs` (roles, timers,
//! votes, lease, check-quorum, entries lost to a damaged tail), `follower.rs`
//! (AppendEntries and InstallSnapshot on the receiving side), `leader.rs` (replication, commit,
//! ReadIndex, transfer), `log_view.rs` (the in-memory log and membership), `progress.rs`
//! (per-follower bookkeeping and the PRNG).
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
//! 3. only then send `messages_after_persist` and call `persisted(index, term)` with
//!    `Ready::persist_mark()` (the last entry, else the snapshot, else, for a hard-state-only
//!    Ready, the node's last entry at the time), so a leader may count itself towards commit
//!    and the core knows its term and vote are durable;
//! 4. apply `committed` in order (they are always already durable here), and answer each
//!    `read_states` entry once its index has been applied.
//!
//! Readies must be persisted in the order they were produced. A Ready that `needs_persist()`
//! false may send its `messages_after_persist` as soon as every earlier Ready is durable.
//! If `ready()` is called again before the previous write is durable, the new Ready's messages
//! and entries simply queue behind it; nothing is lost.
//!
//! What the core already does for the host:
//! - `hard_state.commit` is `min(commit, persisted)`, so a stored commit index never covers
//!   entries that are still in the same (possibly torn) batch.
//! - `persisted(index, term)` is ignored when that entry has since been truncated or replaced
//!   (its term differs) or was never handed out; it never moves the durable mark backwards.
//! - Acknowledgements that vouch only for already-durable entries (heartbeat replies) and
//!   rejections (which vouch for nothing) go in `messages`, so a quiet follower answers at once.
//! - `committed` entries are at or below both the commit index and the durable index.
//!
//! # ReadIndex (thesis §6.4)
//! `read_index(ctx)` on the leader records the commit index and waits for one confirmation round:
//! a `read_seq` number carried by the next heartbeats (and AppendEntries) and echoed by
//! followers. Every read queued before a round is answered by it, as `Ready.read_states`. A new
//! leader first commits its no-op. Reads still pending when the leader steps down are dropped
//! silently: the host must time them out and let the client retry elsewhere.
//!
//! # Replication, in short
//! Each follower's progress is Probe (one AppendEntries at a time, one per heartbeat interval
//! when unanswered), Replicate (up to `max_inflight` pipelined AppendEntries of at most
//! `max_append_bytes`), or Snapshot (InstallSnapshot chunks, `snapshot_inflight_chunks` in
//! flight, resumed from the follower's acknowledged offset). Heartbeats to a follower in
//! Replicate check its optimistic `next_index - 1`, so a message lost from the pipeline is
//! detected at the next heartbeat. Rejections carry the conflicting term and its first index,
//! so the leader skips a whole term per round trip (§5.3).
//!
//! # Membership (thesis §4)
//! Single-server changes. A Config entry takes effect on a node as soon as it is in its log and
//! reverts if truncated away; quorums always use the latest membership in the log. Learners
//! receive the log but never campaign and never count; a node not in its own membership never
//! campaigns, except a voter removed by a Config entry not yet known committed (thesis §4.2.2,
//! Figure 4.6: it may hold the freshest log; it counts votes without itself and steps down
//! when the removal commits). Votes are granted without consulting the voter's own membership (thesis §4.2.3):
//! only a candidate whose configuration makes the voter a voter asks it, and refusing could
//! deadlock when logs disagree about an uncommitted change. A leader that removes itself leads
//! until the removal commits, then becomes a Learner.

use crate::rng::SplitMix64;
use crate::types::*;
mod election;
mod follower;
mod invariants;
mod leader;
mod log_view;
mod progress;

use log_view::decode_membership;
use progress::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// Forget, at restart, that recovery discarded entries this node may have acknowledged
    /// (`HardState::lost`): vote by the damaged log alone.
    pub ignore_lost_entries: bool,
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
    /// Cross-field checks the core relies on; the host should refuse a configuration that
    /// fails them (the core clamps zero values to 1 but cannot fix the rest).
    pub fn validate(&self) -> Result<(), String> {
        if self.id.0 == 0 {
            return Err("node id 0 is reserved".into());
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return Err(format!(
                "heartbeat_ticks ({}) must be at least 1 and below election_ticks ({})",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        if self.max_inflight == 0 || self.snapshot_inflight_chunks == 0 {
            return Err("max_inflight and snapshot_inflight_chunks must be at least 1".into());
        }
        if self.max_append_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return Err("max_append_bytes and snapshot_chunk_bytes must be at least 1".into());
        }
        if self.max_uncommitted_entries == 0 {
            return Err("max_uncommitted_entries must be at least 1".into());
        }
        Ok(())
    }

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
    /// The peers this node heard from as members (the host's durable pins of their data
    /// directories). Entries lost to a damaged log tail may have made any of them a voter
    /// (`HardState::lost`): each then counts like a voter that must show its log.
    pub heard: BTreeSet<NodeId>,
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
                lost: None,
            },
            snapshot: None,
            entries: vec![Entry::new(
                Term(1),
                LogIndex(1),
                EntryKind::Config,
                &membership.encoded(),
            )],
            heard: BTreeSet::new(),
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
    /// `id` was removed by an entry that member `lagging` does not hold yet: it still knows the
    /// removed server's data directory, and would refuse the new one's messages.
    RemovalNotReplicated {
        id: NodeId,
        lagging: NodeId,
    },
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
    /// For a Ready that writes only a hard state: the node's last `(index, term)` at that
    /// moment, so that `persist_mark` has something to report. The core learns from it that
    /// the term and vote are durable (a lone voter may only lead once its own vote is).
    pub hard_state_mark: Option<(LogIndex, Term)>,
}

impl Ready {
    /// Whether anything must be written to disk before `messages_after_persist` may leave.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
    /// The `(index, term)` to report through `persisted` once this Ready is durable: its last
    /// entry, else its snapshot, else (hard state only) `hard_state_mark`.
    pub fn persist_mark(&self) -> Option<(LogIndex, Term)> {
        if let Some(e) = self.entries.last() {
            return Some((e.index, e.term));
        }
        if let Some(s) = &self.snapshot {
            return Some((s.meta.index, s.meta.term));
        }
        self.hard_state.and(self.hard_state_mark)
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
    cfg: Config,
    /// `cfg.id`, never 0.
    id: NodeId,
    /// The only source of chance (election timeouts), seeded in `new`: same seed, same run.
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
    /// The memory `entries` hold, by `entry_bytes`: the host bounds the log by it as well as by
    /// entry count (a snapshot lets the log go). Invariant: the sum over `entries`.
    log_bytes: u64,
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
    /// Leader only after winning a quorum of the latest membership in `term` with its own vote
    /// durable; Follower/PreCandidate/Candidate only while `can_campaign()`; else Learner.
    role: Role,
    /// The leader of `term`, once known.
    leader: Option<NodeId>,
    /// Ticks since the timer reset: the election timer for non-leaders (reset when hearing from
    /// the leader or granting a vote), the check-quorum period for a leader.
    election_elapsed: u32,
    /// Drawn from `[election_ticks, 2 * election_ticks)` at each reset (§5.2).
    randomized_timeout: u32,
    /// Leader only: ticks since the last heartbeat round; below `heartbeat_ticks`.
    heartbeat_elapsed: u32,
    /// A quorum granted this candidate's election but its own vote was not yet known durable:
    /// it leads once `persisted` confirms it (a lone voter must not lead a term it could forget
    /// in a crash and then lead again with other entries).
    won_election: bool,
    /// Votes (or pre-votes) received in the current campaign, by voter.
    votes: BTreeMap<NodeId, bool>,

    // ---- Leader state ----
    /// One entry per member other than this node (latest membership), only while leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Index of this leader's no-op: once committed, the leader knows its own commit index is
    /// current (§5.4.2, thesis §6.4) and may serve reads and accept membership changes.
    noop_index: LogIndex,
    /// A leadership transfer under way (thesis §3.10); proposals are refused while set.
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
    /// Chunks received so far of a snapshot from the current leader (never from two leaders).
    incoming_snapshot: Option<IncomingSnapshot>,

    // ---- Output, drained by ready() ----
    /// Messages that vouch for nothing unsynced (leader traffic, pre-votes, rejections).
    msgs: Vec<Message>,
    /// Votes, RequestVotes and acknowledgements of unsynced state: they leave after the write.
    msgs_after_persist: Vec<Message>,
    /// An installed snapshot the host has not yet been handed.
    pending_snapshot: Option<Snapshot>,
    /// Answered reads, in the order their rounds completed.
    read_states: Vec<ReadState>,
    /// The soft and hard state last handed out, to report only changes.
    prev_soft: SoftState,
    prev_hard: HardState,

    // ---- Durability of the term (Figure 2: persistent state is stable before responding) ----
    /// Readies handed out so far.
    ready_seq: u64,
    /// The Ready that first carried the current (term, vote); 0 if it was in the boot state.
    term_vote_seq: u64,
    /// Persist marks of readies not yet reported durable, with their Ready numbers, in order.
    marks: VecDeque<(LogIndex, Term, u64)>,
    /// Every Ready up to this number is durable (learnt from `persisted`).
    durable_seq: u64,

    // ---- Entries lost to a damaged log tail (see `HardState::lost`) ----
    /// While set this node neither campaigns nor grants a (pre-)vote to a candidate less up to
    /// date than the bound: its vote would otherwise stand for a log it no longer has. Part of
    /// the hard state, so the bound survives restarts until it is cleared.
    lost: Option<LostEntries>,
    /// The (last term, last index) of the log recovery kept, when `lost` was set at start.
    lost_intact: (Term, LogIndex),
    /// The least up-to-date log position (last term, last index) each voter showed, since start,
    /// from a term past the bound's (`note_lost_report`): it held no entry beyond it then, and
    /// never will through an acknowledgement that counts with ours.
    lost_report_positions: BTreeMap<NodeId, (Term, LogIndex)>,
    /// The servers whose latest such report showed they may not campaign.
    lost_non_voters: BTreeSet<NodeId>,
    /// Below the bound when every other voter showed a log that ends before it
    /// (`maybe_lower_lost`): no lost entry beyond it is on another voter. Used for votes; not
    /// durable (after a restart the bound alone holds again, which is only more cautious).
    lost_vote_bound: Option<(Term, LogIndex)>,
    /// `Boot::heard`, kept as it was at start: the lost entries came before it.
    heard_at_start: BTreeSet<NodeId>,
    /// Each id a membership change removed since this node started, with that change's index
    /// (`member_behind_removal_of`; a removal compacted away before the start is not known).
    departed: BTreeMap<NodeId, LogIndex>,
}

impl Raft {
    /// Starts a node from its recovered durable state. A node whose log and snapshot hold no
    /// membership (started with `--join`) stays a non-voting Learner until a leader adds it.
    ///
    /// A boot log that is not contiguous after the snapshot is cut at the first gap (the host's
    /// recovery should have refused it already; the core will not build on a broken log).
    pub fn new(config: Config, boot: Boot, seed: u64) -> Raft {
        let id = config.id;
        if let Err(e) = config.validate() {
            log::warn!("n{id} starts with a questionable configuration: {e}");
        }
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
        let log_bytes = entries.iter().map(entry_bytes).sum();
        let mut hs = boot.hard_state;
        if Bugs::on(config.bugs.forget_vote_on_restart) {
            hs.vote = None;
        }
        if Bugs::on(config.bugs.ignore_lost_entries) {
            hs.lost = None;
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
            log_bytes,
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
            won_election: false,
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
            ready_seq: 0,
            term_vote_seq: 0,
            marks: VecDeque::new(),
            durable_seq: 0,
            lost: hs.lost,
            lost_intact: (last_term, last),
            lost_report_positions: BTreeMap::new(),
            lost_non_voters: BTreeSet::new(),
            lost_vote_bound: None,
            heard_at_start: boot.heard,
            departed: BTreeMap::new(),
            cfg: config,
        };
        r.config_indices = r
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
            .map(|e| e.index)
            .collect();
        r.recompute_membership();
        r.role = r.passive_role();
        r.prev_soft = r.soft_state();
        r.reset_election_timer();
        if let Some(b) = r.lost {
            log::warn!(
                "n{id}: recovery discarded log records that may have been acknowledged (through \
                 {:?} at most, terms up to {:?}); votes are withheld until this node holds or \
                 knows committed everything through {:?}, or enough voters show they never had it",
                b.index,
                b.term,
                b.index
            );
            r.maybe_release_lost();
        }
        log::info!(
            "n{} started at {:?} as {:?}, log {:?}..{:?}, commit {:?}, seed {}",
            id,
            r.term,
            r.role,
            r.first_index(),
            r.last_index(),
            r.commit,
            seed
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
    /// The memory the in-memory log holds (entries after the snapshot), in bytes: each entry's
    /// payload plus its fixed cost.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
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
    /// The state to make durable. Its `commit` is `min(commit_index, persisted_index)`: a
    /// commit index may only be stored once the entries it covers are durable in an earlier
    /// write, or a crash between the hard state and the entries of one batch could resurrect a
    /// truncated suffix as "committed" at restart.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit.min(self.persisted),
            lost: self.lost,
        }
    }
    /// Entries this node may have acknowledged before a restart and lost to a damaged log tail;
    /// while `Some` it withholds its vote from less up-to-date candidates and does not campaign.
    pub fn lost_entries(&self) -> Option<LostEntries> {
        self.lost
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
        // A Config entry that does not decode (only corruption or a forged message could make
        // one) changes nothing, here and in `recompute_membership` alike.
        let found = self
            .config_indices
            .iter()
            .rev()
            .filter(|&&c| c <= index)
            .find_map(|&c| self.entry(c).and_then(|e| decode_membership(&e.data)));
        Some(found.unwrap_or_else(|| self.base_membership.clone()))
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
            if self.may_stand() {
                self.start_election(false);
            } else if let (Some(b), true) = (self.lost, self.can_campaign()) {
                // It may not stand, but it asks the voters where their logs end
                // (`send_lost_probes`), after moving past every term the lost entries can
                // have. Only a node that heard from no leader for an election timeout gets
                // here.
                if self.term <= b.term {
                    self.become_follower(b.term.next(), None);
                }
                self.send_lost_probes();
            }
        }
    }

    /// Starts an election now, as if the election timer had fired (through pre-vote when
    /// configured). Ignored by leaders and by nodes that are not voters.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.may_stand() {
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
                if let Some(lagging) = self.member_behind_removal_of(id) {
                    return Err(ProposeError::RemovalNotReplicated { id, lagging });
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
                // It must hold the log at all, not merely be within the lag of a short one: a
                // voter with an empty log withholds its vote (see `covers_lost`), so promoting
                // it early would shrink the cluster's margin until it catches up.
                if matched.0 == 0
                    || matched.0.saturating_add(self.cfg.promote_max_lag) < self.last_index().0
                {
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

    /// A member (other than this leader) whose log does not reach the latest entry that removed
    /// `id`, if that entry is in the log. Each member forgets a removed server's data directory
    /// (its pin, `host/peers.rs`) only as it applies the removal; one that has not, and that
    /// this leader would no longer bring up to date if the server added back under that id
    /// leads, would drop every message of the new server for good (the simulator found
    /// clusters whose quorum needed such a member). Once it holds the entry, the next append
    /// tells it the removal is committed (a change is proposed only when the previous one is),
    /// and it applies the removal before the addition.
    fn member_behind_removal_of(&self, id: NodeId) -> Option<NodeId> {
        let in_log = self.config_indices.iter().rev().copied().find(|&c| {
            let gone = self.membership_at(c).is_some_and(|m| !m.contains(id));
            gone && self.membership_at(c.prev()).is_some_and(|m| m.contains(id))
        });
        let removal = in_log.or_else(|| self.departed.get(&id).copied())?;
        self.membership
            .members
            .keys()
            .copied()
            .filter(|&m| m != self.id && m != id)
            .find(|m| {
                self.progress
                    .get(m)
                    .map_or(true, |p| p.match_index < removal)
            })
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
        for e in self.entries.drain(..drop) {
            self.log_bytes -= entry_bytes(&e);
        }
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
        // The write happened even if its entries were replaced since: every Ready up to the one
        // with this mark is durable (readies are persisted in order).
        if let Some(k) = self
            .marks
            .iter()
            .position(|&(i, t, _)| i == index && t == term)
        {
            self.durable_seq = self.durable_seq.max(self.marks[k].2);
            self.marks.drain(..=k);
            if self.role == Role::Candidate && self.won_election && self.term_durable() {
                self.become_leader();
            }
        }
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
        if m.to != self.id || m.from == self.id || m.from.0 == 0 || !numbers_sane(&m) {
            return;
        }
        if self.lost.is_some() {
            self.note_lost_report(&m);
        }
        self.step_checked(m);
        if self.lost.is_some() {
            self.maybe_release_lost();
        }
    }

    fn step_checked(&mut self, m: Message) {
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
                MessageBody::PreVoteResponse { granted: true, .. } => {}
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
                    let body = self.pre_vote_response(false);
                    self.send_once_term_durable(Message {
                        from: self.id,
                        to: m.from,
                        term: self.term,
                        body,
                    });
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
            MessageBody::PreVoteResponse { granted, .. } => {
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
                if self.role != Role::Leader && self.may_stand() {
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
                    // A commit advance nothing else carried: followers apply sooner.
                    let stale = self
                        .progress
                        .get(&id)
                        .is_some_and(|p| p.owes_commit(self.commit));
                    if stale {
                        self.heartbeat_to(id);
                    }
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
        self.ready_seq += 1;
        if hard != self.prev_hard {
            if (hard.term, hard.vote) != (self.prev_hard.term, self.prev_hard.vote) {
                self.term_vote_seq = self.ready_seq;
            }
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
        if rd.hard_state.is_some() {
            rd.hard_state_mark = Some((self.last_index(), self.last_term()));
        }
        if let Some((i, t)) = rd.persist_mark() {
            if self.marks.len() >= 4096 {
                // A host that never reports: forget the oldest (only makes acks more cautious).
                self.marks.pop_front();
            }
            self.marks.push_back((i, t, self.ready_seq));
        }
        rd
    }

    /// Whether the current term and vote are known to be on stable storage.
    pub(super) fn term_durable(&self) -> bool {
        if Bugs::on(self.cfg.bugs.ack_before_sync) {
            return true;
        }
        (self.term, self.vote) == (self.prev_hard.term, self.prev_hard.vote)
            && self.term_vote_seq <= self.durable_seq
    }
}

/// Terms and indices grow by one per election or entry, so anything near `u64::MAX` is forged or
/// corrupt; adopting it would leave no room to grow (`next()` would overflow). Such messages are
/// dropped at the door.
fn numbers_sane(m: &Message) -> bool {
    const LIMIT: u64 = 1 << 62;
    let ok = |v: u64| v < LIMIT;
    ok(m.term.0)
        && match &m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            }
            | MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => ok(last_log_index.0) && ok(last_log_term.0),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                ok(prev_log_index.0)
                    && ok(prev_log_term.0)
                    && entries.iter().all(|e| ok(e.index.0) && ok(e.term.0))
            }
            MessageBody::AppendEntriesResponse {
                match_index,
                conflict_term,
                conflict_index,
                last_index,
                ..
            } => {
                ok(match_index.0) && ok(conflict_term.0) && ok(conflict_index.0) && ok(last_index.0)
            }
            MessageBody::InstallSnapshot { meta, .. } => ok(meta.index.0) && ok(meta.term.0),
            MessageBody::InstallSnapshotResponse { snapshot_index, .. } => ok(snapshot_index.0),
            MessageBody::PreVoteResponse { .. }
            | MessageBody::RequestVoteResponse { .. }
            | MessageBody::TimeoutNow => true,
        }
}

/// What one entry of the in-memory log costs: the `Entry`, its shared payload and the
/// payload's reference counts.
pub fn entry_bytes(e: &Entry) -> u64 {
    (std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<usize>() + e.data.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        let mut m = Membership::default();
        for id in 1..=3 {
            m.members.insert(
                NodeId(id),
                Member {
                    role: MemberRole::Voter,
                    addr: format!("127.0.0.1:{}", 5254 + id),
                },
            );
        }
        m
    }

    #[test]
    fn splitmix_same_seed_same_sequence() {
        // Goal: determinism of the only randomness source. Method: two generators, one seed.
        let (mut a, mut b) = (SplitMix64(5), SplitMix64(5));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn bootstrap_node_is_follower_and_joiner_is_learner() {
        // Goal: only voters of the boot membership start as followers (thesis §4.2.1).
        // Method: boot one node from the bootstrap state, one from nothing.
        let r = Raft::new(Config::new(NodeId(1)), Boot::bootstrap(&three()), 1);
        assert_eq!(r.role(), Role::Follower);
        assert_eq!(r.membership().voter_count(), 3);
        r.check_invariants().unwrap();
        let j = Raft::new(Config::new(NodeId(4)), Boot::default(), 1);
        assert_eq!(j.role(), Role::Learner);
        j.check_invariants().unwrap();
    }

    #[test]
    fn boot_log_cut_at_first_gap() {
        // Goal: a broken boot log is never built upon (Log Matching). Method: a gap at index 3.
        let mut b = Boot::bootstrap(&three());
        b.entries
            .push(Entry::new(Term(1), LogIndex(2), EntryKind::Normal, b"a"));
        b.entries
            .push(Entry::new(Term(1), LogIndex(4), EntryKind::Normal, b"b"));
        b.hard_state.commit = LogIndex(9);
        let r = Raft::new(Config::new(NodeId(1)), b, 1);
        assert_eq!(r.last_index(), LogIndex(2));
        assert_eq!(r.commit_index(), LogIndex(2));
        r.check_invariants().unwrap();
    }

    #[test]
    fn membership_at_follows_config_entries() {
        // Goal: the membership in force at an index is the last Config entry at or before it.
        // Method: boot with a second config at index 3 and ask at 2 and 3.
        let mut b = Boot::bootstrap(&three());
        let mut m2 = three();
        m2.members.remove(&NodeId(3));
        b.entries
            .push(Entry::new(Term(1), LogIndex(2), EntryKind::Normal, b"a"));
        b.entries.push(Entry::new(
            Term(1),
            LogIndex(3),
            EntryKind::Config,
            &m2.encoded(),
        ));
        let r = Raft::new(Config::new(NodeId(1)), b, 1);
        assert_eq!(r.membership_at(LogIndex(2)), Some(three()));
        assert_eq!(r.membership_at(LogIndex(3)), Some(m2.clone()));
        assert_eq!(r.membership(), &m2);
    }

    #[test]
    fn single_voter_elects_itself_and_commits_after_persist() {
        // Goal: a one-node cluster needs no messages, but still counts itself only once durable.
        // Method: tick to an election, then persist the Ready.
        let m = {
            let mut m = three();
            m.members.retain(|id, _| id.0 == 1);
            m
        };
        let mut r = Raft::new(Config::new(NodeId(1)), Boot::bootstrap(&m), 3);
        for _ in 0..20 {
            r.tick();
        }
        // It won its own vote, but leads only once that vote is durable.
        assert_eq!(r.role(), Role::Candidate);
        let rd = r.ready();
        assert!(rd.entries.is_empty());
        let (i, t) = rd.persist_mark().unwrap();
        r.persisted(i, t);
        assert_eq!(r.role(), Role::Leader);
        let rd = r.ready();
        assert!(rd.messages.is_empty() && rd.messages_after_persist.is_empty());
        assert!(r.commit_index() < r.last_index());
        let (i, t) = rd.persist_mark().unwrap();
        r.persisted(i, t);
        assert_eq!(r.commit_index(), r.last_index());
        assert_eq!(r.ready().committed.len(), 2);
    }
}
