//! The server host: one node's Raft core (`raft`), its dictionary (`kv`) and everything between
//! them and the clients. The same code runs in `zattd` (driven by `event_loop`) and for every
//! node of the deterministic simulator (driven by `sim`), so what the simulator checks over
//! thousands of seeds is the code that ships.
//!
//! Owns: the waiting writes and their answers, the ReadIndex rounds, learner promotions,
//! snapshot taking (encoded a slice per loop turn, with committed entries held back meanwhile)
//! and log compaction, and the order in which a `Ready`'s parts are handed out, which is what
//! keeps acknowledged writes safe (the persistence contract in `raft`'s module doc). Must not
//! touch sockets, files, clocks, threads or global randomness: it is driven by events and acts
//! only through [`Output`], which the driver implements.
//!
//! # Events (the driver calls)
//! - [`Host::client_frame`]: a whole client request frame arrived; `to` names where the answer
//!   goes (opaque to the host but for the request id).
//! - [`Host::peer_message`]: a Raft message arrived from a peer.
//! - [`Host::tick`]: one Raft tick passed.
//! - [`Host::housekeeping`]: a periodic pass (every 100 ms in the server) that times out reads
//!   and writes that can no longer complete and retries promotions.
//! - [`Host::durable`]: storage made the batch or snapshot with this token durable (tokens are
//!   reported in the order they were submitted).
//! - [`Host::end_turn`]: the end of one loop turn: start the ReadIndex round for the reads
//!   gathered, take one `Ready` and hand out its parts, encode a slice of a snapshot in
//!   progress. [`Host::wants_turn`] says whether another turn should follow at once.
//!
//! # Outputs (the driver implements [`Output`])
//! Messages to send, answers for clients (encoded by the driver straight into its connection
//! buffers, a `Get`'s value from the dictionary's own bytes, so answering allocates nothing),
//! batches and snapshots to make durable, the membership (for peer addresses), and observer
//! hooks with empty defaults that the simulator's checker uses (entries appended, entry
//! applied; a message about to leave is `send` itself). An event that finds the node unable to
//! go on returns [`Fatal`]; the driver stops the node.
//!
//! # The order of one `Ready` (see `ready.rs`)
//! `messages` leave at once; the snapshot, hard state and entries go to storage as one batch
//! with a token; `messages_after_persist` and `persisted(mark)` wait until that token and
//! every earlier one are durable; `committed` entries are applied and their writers answered
//! (they are durable already: the core hands out only entries at or below its persisted
//! index); a read is answered once its ReadIndex round is confirmed and its index applied.
//!
//! Layout: this file holds the API (configuration, outputs, events); `requests.rs` turns a
//! client frame into a proposal, a read or an answer; `ready.rs` hands out a `Ready` in the
//! contract's order; `apply.rs` applies committed entries and answers writers and promotions;
//! `reads.rs` runs ReadIndex rounds and serves reads; `snapshot.rs` takes snapshots and
//! compacts; `backup.rs` hands snapshots out for backups; `status.rs` reports the node's state;
//! `metrics.rs` counts for `/metrics` and answers `/health` and `/ready`; `disk.rs` keeps the
//! disk-space alarm; `watch.rs` keeps the change history and streams changes to watchers.

mod apply;
mod backup;
mod disk;
mod metrics;
mod peers;
mod reads;
mod ready;
mod requests;
mod snapshot;
mod status;
#[cfg(test)]
mod tests;
mod watch;

pub use watch::{WatchConfig, FRAME_EVENT_BYTES};

use crate::kv::{Kv, KvConfig, SnapshotEncoder};
use crate::raft::{self, Boot, Raft, Role, SoftState};
use crate::storage::WriteBatch;
use crate::types::*;
use crate::wire::client::{ErrorKind, FrameLimits, Response};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

pub use disk::{MinFreeDisk, DEFAULT_MIN_FREE_DISK_BYTES};
pub use metrics::{HostMetrics, HEALTH_MAX_APPLY_LAG};
pub use ready::ack_key;

/// A linearizable read waits this long for its ReadIndex round before `Timeout`.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A write waits this long for its entry to be applied before `Timeout` (applied: maybe).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A voter being added waits this long for its learner phase to catch up.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// A server added back under a removed one's id waits this long for every member to hold the
/// removal (one that missed it by a heartbeat catches up at the next; one that is down will
/// not, and the operator hears which, before `zatt`'s default 5 s timeout).
const ADD_BACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Keys encoded per loop turn while a snapshot is taken, in the server: a few milliseconds of
/// work, so heartbeats and acknowledgements keep flowing however big the dictionary is (encoding
/// 100,000 keys at once stalled the loop for 60–200 ms, past the election timeout).
pub const SNAPSHOT_KEYS_PER_TURN: usize = 4096;

/// The in-memory log's bound in bytes in the server (see `HostConfig::snapshot_log_bytes`): at
/// 100 B values the entry count (`--snapshot-entries`, 100,000 by default) comes first; with
/// 1 MiB values this keeps the log at 64 entries instead of 100 GB.
pub const SNAPSHOT_LOG_BYTES: u64 = 64 << 20;

/// A role's name in logs and status answers.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    }
}

/// Known-bug switches in the host, as `raft::Bugs` has in the core: each re-introduces a
/// mistake a host can make with the persistence contract, so that a test can show the
/// simulator catches it. Only honoured when built with the `simbugs` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A leader reports its own batch durable as soon as it is handed to storage, so it counts
    /// itself towards commit, applies and answers the write before its disk has it.
    pub reply_before_durable: bool,
    /// `messages_after_persist` (acknowledgements, votes) leave as the batch is handed to
    /// storage instead of once it is durable.
    pub send_after_persist_early: bool,
    /// A ReadIndex read is answered as soon as its round is confirmed, even when the
    /// dictionary has not yet applied the read's index.
    pub read_before_applied: bool,
    /// A watcher behind a snapshot installed from the leader goes on from the snapshot's
    /// index instead of being told `Compacted`: the changes the snapshot covers are skipped.
    pub watch_skips_snapshot: bool,
    /// A watch from a revision older than the history starts from the oldest change kept
    /// instead of being refused with `Compacted`.
    pub watch_starts_past_compaction: bool,
    /// A server whose storage was lost comes back as if it never had any: it bootstraps again
    /// without asking its peers (`crate::bootstrap`), and its peers take its new incarnation
    /// (and this node's old one) without a word.
    pub forget_lost_storage: bool,
}

impl Bugs {
    /// True when the switch is on and the build can honour it.
    #[inline]
    fn on(flag: bool) -> bool {
        cfg!(feature = "simbugs") && flag
    }
}

/// What the host needs to know beyond the Raft core's own configuration.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The dictionary's limits and session policy (identical on every replica).
    pub kv: KvConfig,
    /// Limits the request decoder enforces (the frame limit is `--max-request-bytes`).
    pub limits: FrameLimits,
    /// Entries applied since the last snapshot before the next one is taken.
    pub snapshot_entries: u64,
    /// A snapshot is also taken once the core's in-memory log holds this many bytes
    /// (`Raft::log_bytes`), however few entries that is.
    pub snapshot_log_bytes: u64,
    /// Keys encoded per loop turn while a snapshot is taken.
    pub snapshot_keys_per_turn: usize,
    /// The change history kept for watches, and the watchers' limits.
    pub watch: WatchConfig,
    /// The cluster id, for status answers and backups (0 where there is none, as in tests).
    pub cluster_id: u64,
    /// Below this much free disk space the leader refuses writes that add data.
    pub min_free_disk: MinFreeDisk,
    /// This node's incarnation (its data directory's random id; 0: none, no checks).
    pub incarnation: u64,
    /// The peers' incarnations pinned so far (from the data directory).
    pub pins: BTreeMap<NodeId, u64>,
    pub bugs: Bugs,
}

impl HostConfig {
    /// The server's defaults for a given request limit and snapshot interval.
    pub fn new(max_request_bytes: usize, snapshot_entries: u64) -> HostConfig {
        let kv = KvConfig::default();
        HostConfig {
            limits: FrameLimits {
                max_frame_bytes: max_request_bytes,
                max_key_bytes: kv.max_key_bytes,
                max_value_bytes: kv.max_value_bytes,
            },
            kv,
            snapshot_entries,
            snapshot_log_bytes: SNAPSHOT_LOG_BYTES,
            snapshot_keys_per_turn: SNAPSHOT_KEYS_PER_TURN,
            watch: WatchConfig::default(),
            cluster_id: 0,
            min_free_disk: MinFreeDisk::default(),
            incarnation: 0,
            pins: BTreeMap::new(),
            bugs: Bugs::default(),
        }
    }
}

/// Where an answer goes. `conn` and `generation` name a connection as the driver sees it, and
/// `op` and `since` are the driver's bookkeeping (the request's opcode and when its frame was
/// read, for latency metrics): the host only hands them back. `request_id` is the request's,
/// from its frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub conn: usize,
    pub generation: u64,
    pub request_id: u64,
    pub op: u8,
    pub since: Duration,
}

/// The time of an event, as the driver reads its clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an origin the driver chose: timeouts are measured on it.
    pub mono: Duration,
    /// Wall-clock milliseconds since the Unix epoch: stamped on proposals, it is the
    /// dictionary's only clock (session expiry).
    pub wall_ms: u64,
}

/// Figures only the driver knows, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStatus {
    pub wal_bytes: u64,
    pub fsync_p50_us: u64,
    pub fsync_p99_us: u64,
    /// Peer datagrams dropped, per reason.
    pub dropped_datagrams: Vec<(String, u64)>,
}

/// The host cannot go on (a leader's snapshot that does not restore, storage reporting tokens
/// out of order): the driver must stop this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the host asks of its driver. Calls happen during the host's event methods, in the order
/// the persistence contract needs; the driver carries them out (or queues them) without
/// calling back into the host.
pub trait Output {
    /// Sends a message to a peer, best effort: Raft retransmits what is lost.
    fn send(&mut self, msg: Message);
    /// Answers a client request.
    fn answer(&mut self, to: ReplyTo, resp: &Response);
    /// Answers a `Get` from borrowed bytes (the read path's answer, which copies the value
    /// only into the driver's buffer): `Response::Value` with these fields.
    fn answer_value(&mut self, to: ReplyTo, value: Option<&[u8]>, revision: u64, applied: u64);
    /// Sends a frame for `to`'s request that does not answer it (a watch's events and progress
    /// notifications: the request stays open): `encode` appends one whole frame to the buffer
    /// it is given. Nothing is sent when the connection is closed.
    fn stream(&mut self, to: ReplyTo, encode: &mut dyn FnMut(&mut Vec<u8>));
    /// Bytes waiting to be sent on `to`'s connection, or `None` when that connection is
    /// closed (the watch limit is checked against it).
    fn pending_bytes(&self, to: ReplyTo) -> Option<usize>;
    /// Makes a batch durable; once it and every batch or snapshot submitted before it are
    /// durable, sends `then_send` (messages that may not leave before: a follower's
    /// acknowledgement, a vote), then reports `token` through [`Host::durable`]. Of the
    /// messages one sync releases with the same [`ack_key`], only the last need be sent.
    ///
    /// `quiet`: nothing in the host waits for this token but the core's own bookkeeping (a
    /// follower's batch, whose acknowledgement is in `then_send`), so the driver need not take a
    /// turn for it: it may report it at the next turn it takes for anything else, unless
    /// [`Output::await_storage`] was called since.
    fn submit_batch(&mut self, token: u64, batch: WriteBatch, then_send: Vec<Message>, quiet: bool);
    /// Something now waits in the host for tokens already submitted (a `Ready` that wrote
    /// nothing, behind them): report the next durable token at once, even a quiet one.
    fn await_storage(&mut self) {}
    /// Stores a snapshot this node took (log compaction), ordered with the batches; report
    /// `token` like a batch's.
    fn submit_snapshot(&mut self, token: u64, snapshot: Snapshot);
    /// The membership in force changed (peer addresses). Called once at the first turn too.
    fn membership(&mut self, _m: &Membership) {}
    /// Pins `peer`'s incarnation: durable when this returns (the message that revealed it is
    /// acted on right after), and named in every datagram to that peer from then on.
    fn pin_peer(&mut self, _peer: NodeId, _incarnation: u64) {}
    /// Forgets `peer`'s incarnation (it left the membership).
    fn unpin_peer(&mut self, _peer: NodeId) {}
    /// Answers (`reply`) or sends a probe to `to`; `known_as` is the incarnation this node
    /// knows `to` by (0: none), `member` whether this node runs as a member.
    fn send_probe(&mut self, _to: NodeId, _known_as: u64, _reply: bool, _member: bool) {}
    /// Storage and network figures for a status answer.
    fn io_status(&self) -> IoStatus {
        IoStatus::default()
    }
    /// Observer: these entries (a `Ready`'s) are about to be handed to storage; `raft` is the
    /// core as it stands after producing them.
    fn appended(&mut self, _raft: &Raft, _entries: &[Entry]) {}
    /// Observer: this committed entry was just applied to the dictionary.
    fn applied(&mut self, _entry: &Entry) {}
    /// Observer: the core just dropped the log a stored snapshot covers (many entries freed at
    /// once).
    fn compacted(&mut self) {}
}

/// What a client waits for once an entry is applied.
#[derive(Clone, Copy, Debug)]
enum WaitKind {
    /// A dictionary command: answered with kv's reply.
    Command,
    /// A membership change or transfer: answered `Done`.
    ConfChange,
    /// Adding a voter: the learner was added by this entry; promote it once caught up.
    AddVoter(NodeId),
}

/// A proposal waiting for its entry to be applied.
#[derive(Debug)]
struct Waiter {
    index: LogIndex,
    term: Term,
    to: ReplyTo,
    kind: WaitKind,
    since: Duration,
}

/// A learner to promote once it has caught up, or (`add`: its address, and what to wait for
/// once added) a server to add once every member holds the removal of its id.
struct PromoteJob {
    id: NodeId,
    to: ReplyTo,
    deadline: Duration,
    add: Option<(String, WaitKind)>,
}

/// What to do when storage reports a token durable (or, for a Ready that wrote nothing, once
/// every earlier token is).
enum Persisting {
    /// A Ready's remainder: send these and report the mark.
    Batch {
        token: Option<u64>,
        messages: Vec<Message>,
        mark: Option<(LogIndex, Term)>,
    },
    /// A snapshot this node took: compact the log.
    Snapshot { token: u64, snapshot: Snapshot },
}

impl Persisting {
    fn token(&self) -> Option<u64> {
        match self {
            Persisting::Batch { token, .. } => *token,
            Persisting::Snapshot { token, .. } => Some(*token),
        }
    }
}

/// One node's core, dictionary and client bookkeeping. See the module doc.
pub struct Host {
    cfg: HostConfig,
    raft: Raft,
    kv: Kv,
    /// The time of the event being handled.
    now: Now,
    soft: SoftState,
    /// The membership last reported through `Output::membership` (None: never reported).
    membership_reported: Option<Membership>,

    // Persistence (ready.rs).
    next_token: u64,
    persisting: VecDeque<Persisting>,
    /// Term and vote of the last hard state handed to storage (None: not known yet, so the
    /// first hard state is always written).
    stored_term_vote: Option<(Term, Option<NodeId>)>,
    /// A commit-only hard state not yet handed to storage (see `ready.rs`).
    lazy_hard_state: Option<HardState>,
    /// Successful AppendEntries acknowledgements released by `durable` and not yet sent, at
    /// most one per leader and term; the next turn sends them first (see `ready.rs`).
    acks: Vec<Message>,
    /// The last successful acknowledgement handed to storage with a batch, per leader, of the
    /// latest term only (see `ready.rs`).
    handed_acks: Vec<Message>,

    // Writes (requests.rs, apply.rs).
    /// Proposals waiting to be applied, in strictly increasing index order.
    writes: VecDeque<Waiter>,
    promote_jobs: Vec<PromoteJob>,
    applied_term: Term,
    applied_membership: Membership,
    /// Reused for encoding proposals.
    prop_buf: Vec<u8>,

    // Reads (reads.rs).
    reads: reads::Reads,

    // Peers' identities (peers.rs).
    peers: peers::Peers,

    // Snapshots (snapshot.rs).
    snapshot_index: LogIndex,
    snapshot_in_flight: bool,
    /// A snapshot being encoded a slice per turn.
    snapshot_job: Option<(SnapshotEncoder, SnapshotMeta)>,
    /// Committed entries held back from kv while `snapshot_job` runs, in index order.
    held: Vec<Entry>,

    // Watches (watch.rs).
    watches: watch::Watches,
    /// Whether the snapshot being encoded goes to storage (compaction) or only to backups.
    snapshot_job_stores: bool,
    /// When the storing snapshot job started (for its duration metric).
    snapshot_started: Duration,
    /// Snapshots for backups (backup.rs).
    backups: backup::Backups,

    // Operations (metrics.rs, disk.rs).
    metrics: HostMetrics,
    disk: disk::DiskState,
}

impl Host {
    /// Builds a node from what its storage recovered. Fails when the recovered snapshot does not
    /// restore (a damaged data directory).
    pub fn new(
        cfg: HostConfig,
        raft_cfg: raft::Config,
        mut boot: Boot,
        seed: u64,
    ) -> Result<Host, String> {
        boot.heard = cfg.pins.keys().copied().collect();
        let (kv, snapshot_index, applied_term, applied_membership) = match &boot.snapshot {
            Some(s) => {
                // Restored from the bytes storage checked (in memory, read once at recovery),
                // which from then on are read from their file: the dictionary holds the same.
                let bytes = s.data.bytes().map_err(|e| {
                    format!("snapshot at index {} cannot be read: {e}", s.meta.index.0)
                })?;
                let kv = Kv::restore(&bytes, cfg.kv.clone()).map_err(|e| {
                    format!("snapshot at index {} does not restore: {e}", s.meta.index.0)
                })?;
                drop(bytes);
                s.data.leave_in_file();
                (kv, s.meta.index, s.meta.term, s.meta.membership.clone())
            }
            None => (
                Kv::new(cfg.kv.clone()),
                LogIndex(0),
                Term(0),
                Membership::default(),
            ),
        };
        let raft = Raft::new(raft_cfg, boot, seed);
        let soft = raft.soft_state();
        let watches = watch::Watches::new(cfg.watch, kv.applied_index());
        let peers = peers::Peers {
            incarnation: cfg.incarnation,
            pins: cfg.pins.clone(),
            ..peers::Peers::default()
        };
        Ok(Host {
            cfg,
            raft,
            kv,
            now: Now::default(),
            soft,
            membership_reported: None,
            next_token: 1,
            persisting: VecDeque::new(),
            stored_term_vote: None,
            lazy_hard_state: None,
            acks: Vec::new(),
            handed_acks: Vec::new(),
            writes: VecDeque::new(),
            promote_jobs: Vec::new(),
            applied_term,
            applied_membership,
            prop_buf: Vec::with_capacity(4096),
            reads: reads::Reads::default(),
            peers,
            snapshot_index,
            snapshot_in_flight: false,
            snapshot_job: None,
            held: Vec::new(),
            watches,
            snapshot_job_stores: false,
            snapshot_started: Duration::ZERO,
            backups: backup::Backups::new(seed),
            metrics: HostMetrics::default(),
            disk: disk::DiskState::default(),
        })
    }

    /// The Raft core, for reading its state (status, the simulator's checks).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The dictionary as applied so far.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Whether another turn should follow at once: the core has output, or a snapshot is being
    /// encoded.
    pub fn wants_turn(&self) -> bool {
        self.raft.has_ready() || self.snapshot_job.is_some()
    }

    /// Whether a snapshot is being encoded (committed entries are held back meanwhile).
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot_job.is_some()
    }

    /// One Raft tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (the simulator's forced-campaign fault).
    pub fn campaign(&mut self) {
        self.raft.campaign();
    }

    /// The end of one loop turn: one ReadIndex round for the reads gathered, one `Ready`
    /// handed out, one slice of a snapshot in progress.
    pub fn end_turn<O: Output>(&mut self, out: &mut O, now: Now) -> Result<(), Fatal> {
        self.now = now;
        if self.membership_reported.is_none() {
            self.report_membership(out);
        }
        // Acknowledgements that `durable` released since the last turn leave first: nothing
        // below (applying, a snapshot slice) may delay the leader's commit.
        self.flush_acks(out);
        self.start_read_round(out);
        self.handle_ready(out)?;
        self.flush_acks(out);
        self.maybe_snapshot(out);
        self.serve_watches(out);
        Ok(())
    }

    /// Tells the driver the membership in force when it changed (one comparison otherwise, made
    /// once per `Ready`: only a `Ready` can change it), so that a message to a member just added
    /// finds its address.
    fn report_membership<O: Output>(&mut self, out: &mut O) {
        if self.membership_reported.as_ref() != Some(self.raft.membership()) {
            let m = self.raft.membership().clone();
            out.membership(&m);
            self.membership_reported = Some(m);
        }
    }

    /// Periodic: times out reads and writes that can no longer complete here, and retries
    /// promotions.
    pub fn housekeeping<O: Output>(&mut self, out: &mut O, now: Now) {
        self.now = now;
        self.expire_reads(out);
        // Writes that never got applied (this node cut off from the cluster). Proposals are
        // made in index order, so the oldest are at the front: stop at the first young one.
        while let Some(w) = self.writes.front() {
            if now.mono.saturating_sub(w.since) < WRITE_TIMEOUT {
                break;
            }
            let w = self.writes.pop_front().expect("front exists");
            out.answer(w.to, &Response::Error(ErrorKind::Timeout));
        }
        self.run_promotions(out);
        self.watch_housekeeping(out);
        self.expire_held_snapshots();
    }

    /// Answers every request still waiting with `ShuttingDown` (the server is stopping).
    pub fn shutdown<O: Output>(&mut self, out: &mut O) {
        let watchers = self.drain_watchers();
        let waiting: Vec<ReplyTo> = self
            .writes
            .drain(..)
            .map(|w| w.to)
            .chain(self.reads.drain_all().into_iter().map(|r| r.to))
            .chain(self.promote_jobs.drain(..).map(|j| j.to))
            .chain(watchers)
            .chain(self.backups.waiting.drain(..))
            .collect();
        for to in waiting {
            out.answer(to, &Response::Error(ErrorKind::ShuttingDown));
        }
    }

    /// A log line's prefix: node, term, role ("n1 t4 leader").
    pub fn who(&self) -> String {
        format!(
            "n{} t{} {}",
            self.raft.id(),
            self.raft.term().0,
            role_name(self.raft.role())
        )
    }
}
