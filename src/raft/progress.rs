//! The leader's bookkeeping per follower (replication state, in-flight window, snapshot
//! transfer), the follower's incoming snapshot, pending reads, and the seeded PRNG. Plain data
//! with small helpers; the decisions live in `leader.rs` and `follower.rs`.

use crate::types::*;
use std::collections::VecDeque;

/// How the leader feeds one follower (etcd-raft's progress states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplState {
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
pub(super) struct SnapshotSend {
    /// The snapshot being sent; kept even if the leader compacts again meanwhile.
    pub(super) snap: Snapshot,
    /// Bytes the follower has acknowledged. Invariant: `acked <= total`.
    pub(super) acked: u64,
    /// Bytes sent so far (the next chunk starts here). Invariant: `sent <= total`.
    pub(super) sent: u64,
    /// The chunk with `done: true` has been sent since the last rewind.
    pub(super) done_sent: bool,
    /// The offset the leader last rewound to, so that a burst of identical "gap" acks after one
    /// lost chunk rewinds once, not once per ack.
    pub(super) rewound_at: Option<u64>,
}

impl SnapshotSend {
    pub(super) fn total(&self) -> u64 {
        self.snap.data.len()
    }
}

pub(super) struct Progress {
    /// Highest index known to be durably replicated on the peer and matching the leader's log.
    /// Invariant: `match_index <= leader.last_index()`; only grows within one leadership.
    pub(super) match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index <= leader.last_index() + 1`.
    pub(super) next_index: LogIndex,
    pub(super) state: ReplState,
    /// Probe state: a probe is outstanding; no more until a response (or heartbeat reply).
    pub(super) probe_sent: bool,
    /// Replicate state: last index of each unacknowledged AppendEntries carrying entries,
    /// ascending. Invariant: `len() <= max_inflight`.
    pub(super) inflight: VecDeque<LogIndex>,
    /// Set in `ReplState::Snapshot` only.
    pub(super) snapshot: Option<SnapshotSend>,
    /// Heard from the peer since the last check-quorum round (§6.2, thesis §6.2).
    pub(super) recent_active: bool,
    /// Highest ReadIndex round the peer has echoed in this leadership.
    pub(super) read_seq: u64,
    /// Ticks without progress while behind; triggers a restart of probing or of the transfer.
    pub(super) stall_ticks: u32,
    /// Highest `leader_commit` sent to the peer, so that a commit advance is announced once.
    pub(super) commit_sent: LogIndex,
}

impl Progress {
    pub(super) fn new(next: LogIndex) -> Progress {
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
            commit_sent: LogIndex(0),
        }
    }
    /// Whether the peer has not heard of a commit index its log holds (`commit` capped by what
    /// it matches): one to announce.
    pub(super) fn owes_commit(&self, commit: LogIndex) -> bool {
        self.commit_sent < commit.min(self.match_index)
    }

    pub(super) fn become_probe(&mut self) {
        self.state = ReplState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
        self.next_index = self.match_index.next();
        self.stall_ticks = 0;
    }
}

/// A read waiting for its leadership-confirmation round (thesis §6.4).
pub(super) struct PendingRead {
    pub(super) ctx: u64,
    /// The commit index when the read was accepted: safe to serve once applied.
    pub(super) index: LogIndex,
    /// The round whose quorum echo confirms this read.
    pub(super) seq: u64,
}

/// A snapshot arriving in chunks from the leader.
pub(super) struct IncomingSnapshot {
    /// The sending leader: bytes from two leaders' snapshots are never mixed, even if their
    /// metadata agree.
    pub(super) from: NodeId,
    pub(super) meta: SnapshotMeta,
    pub(super) total: u64,
    /// The bytes before `buf.len()`. Invariant: `buf.len() <= total <= max_snapshot_bytes`.
    pub(super) buf: Vec<u8>,
}

pub(super) struct Transfer {
    pub(super) to: NodeId,
    pub(super) elapsed_ticks: u32,
    pub(super) timeout_now_sent: bool,
}
