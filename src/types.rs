//! The vocabulary every module shares: identifiers, log entries, membership, snapshots, hard state
//! and the Raft messages. Owns no behaviour beyond small helpers; `raft` gives these meaning,
//! `wire` and `wal` give them bytes.
//!
//! Identifiers are newtypes so that a term can never be passed where an index is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A server's identity within a cluster. Never 0: 0 means "nobody" on the wire.
    NodeId,
    "n"
);
id_type!(
    /// A Raft term. Terms only grow on a node, across restarts too.
    Term,
    "t"
);
id_type!(
    /// A position in the replicated log. The first entry has index 1; 0 means "before the log".
    LogIndex,
    "i"
);

impl LogIndex {
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The previous index, saturating at 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl Term {
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

/// What an entry's payload means to the layers above Raft.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Appended by each new leader so it can commit an entry of its own term (Raft §5.4.2, §8).
    /// Payload empty.
    Noop = 0,
    /// An application command; the payload is opaque to Raft (see `kv.rs`).
    Normal = 1,
    /// A membership change; the payload is the encoded *new* `Membership` (see `Membership::encode`).
    /// It takes effect on every node as soon as it is in that node's log (dissertation §4.1).
    Config = 2,
}

impl EntryKind {
    pub fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            0 => Some(EntryKind::Noop),
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One log entry. `data` is shared so that handing an entry to the disk, to several followers'
/// messages and to the state machine never copies the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Arc<[u8]>,
}

impl Entry {
    pub fn new(term: Term, index: LogIndex, kind: EntryKind, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind,
            data: Arc::from(data),
        }
    }
    /// Bytes this entry costs in a message or on disk, for batching by size (header estimate + payload).
    pub fn size_hint(&self) -> usize {
        25 + self.data.len()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Entry({:?} {:?} {:?} {}B)",
            self.index,
            self.term,
            self.kind,
            self.data.len()
        )
    }
}

/// The state that must be durable before a node sends any message that depends on it
/// (Raft Figure 2 "persistent state"; thesis §3.8).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// Whom this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The highest index this node knows to be committed. Persisting it is an optimisation
    /// (it lets a restarted node apply sooner); it must never go backwards.
    pub commit: LogIndex,
    /// Entries this node may have acknowledged and no longer holds (recovery discarded a
    /// damaged tail of its log): until the core clears it, the node votes as if it still held
    /// them. Durable like the vote, because it stands for promises the node made.
    pub lost: Option<LostEntries>,
}

/// An upper bound on log entries a node may have made durable, acknowledged, and then lost
/// (recovery cut a tail that fails its checks: a torn write looks the same as a damaged
/// acknowledged record). Every lost entry has a term at most `term` and an index at most
/// `index`, so a candidate whose log is at least as up to date as `(term, index)` holds every
/// lost entry that could have been committed (the §5.4.1 argument, applied to the log the node
/// had before the damage).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LostEntries {
    pub term: Term,
    pub index: LogIndex,
}

impl LostEntries {
    /// The bound covering both (the later of the two in Raft's up-to-date order).
    pub fn join(a: Option<LostEntries>, b: Option<LostEntries>) -> Option<LostEntries> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if (y.term, y.index) > (x.term, x.index) {
                y
            } else {
                x
            }),
            (x, None) => x,
            (None, y) => y,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MemberRole {
    Voter,
    /// Receives the log but neither votes nor counts towards a quorum.
    Learner,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: MemberRole,
    /// The member's `host:port`, carried so that a node that joins or restarts learns where its
    /// peers are from the log. Opaque to Raft.
    pub addr: String,
}

/// A cluster configuration: every member with its role and address. Iteration is in id order,
/// which keeps every decision that walks the members deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

/// Limits that keep a decoder from allocating by an unchecked length.
pub const MAX_MEMBERS: usize = 64;
pub const MAX_ADDR_LEN: usize = 255;

impl Membership {
    /// Every server of `members` a voter, at its address (a cluster as `--cluster` names it).
    pub fn of_voters(members: impl IntoIterator<Item = (NodeId, String)>) -> Membership {
        let members = members
            .into_iter()
            .map(|(id, addr)| {
                let role = MemberRole::Voter;
                (id, Member { role, addr })
            })
            .collect();
        Membership { members }
    }
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Voter)
            .map(|(id, _)| *id)
    }
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Learner)
            .map(|(id, _)| *id)
    }
    pub fn is_voter(&self, id: NodeId) -> bool {
        matches!(self.members.get(&id), Some(m) if m.role == MemberRole::Voter)
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }
    /// The number of voters that makes a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    /// Layout (all integers little-endian):
    /// `count: u16`, then per member `id: u64, role: u8 (0 voter, 1 learner), addr_len: u8, addr`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.members.len() as u16);
        for (id, m) in &self.members {
            out.put_u64(id.0);
            out.push(match m.role {
                MemberRole::Voter => 0,
                MemberRole::Learner => 1,
            });
            let addr = m.addr.as_bytes();
            let n = addr.len().min(MAX_ADDR_LEN);
            out.push(n as u8);
            out.extend_from_slice(&addr[..n]);
        }
    }

    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes from the front of `buf`, returning the membership and the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<(Membership, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let count = r.u16()? as usize;
        if count > MAX_MEMBERS {
            return Err(DecodeError::new("membership has too many members"));
        }
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = NodeId(r.u64()?);
            if id.0 == 0 {
                return Err(DecodeError::new("membership names node 0"));
            }
            let role = match r.u8()? {
                0 => MemberRole::Voter,
                1 => MemberRole::Learner,
                _ => return Err(DecodeError::new("membership role is not 0 or 1")),
            };
            let n = r.u8()? as usize;
            let addr = std::str::from_utf8(r.bytes(n)?)
                .map_err(|_| DecodeError::new("member address is not UTF-8"))?
                .to_string();
            if members.insert(id, Member { role, addr }).is_some() {
                return Err(DecodeError::new("membership names a node twice"));
            }
        }
        Ok((Membership { members }, r.pos))
    }
}

/// What a snapshot stands for: the state after applying every entry up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// A whole snapshot: metadata and the state machine's bytes (opaque to Raft and to the WAL;
/// in memory or, once stored, in its file: see `SnapshotData`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: SnapshotData,
}

/// A change of membership, as proposed by an operator. The leader turns it into a `Config`
/// entry holding the complete new `Membership`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    AddLearner {
        id: NodeId,
        addr: String,
    },
    /// Make a learner a voter; the leader refuses until the learner has caught up.
    Promote {
        id: NodeId,
    },
    /// Remove a voter or a learner. A leader that removes itself steps down once it commits.
    Remove {
        id: NodeId,
    },
}

/// One Raft message between two nodes. `term` is the sender's current term, except for
/// pre-vote requests where it is the term the sender *would* campaign in (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Asks whether the receiver would vote, without anyone changing term (thesis §9.6).
    PreVote {
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
        /// Where the responder's log ends: a node that lost entries to a damaged tail learns
        /// from it whether this voter could hold any of them (`raft::election`).
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Whether the responder may campaign (a voter of its own latest membership): a
        /// server that is none holds no lost change that made it one (`raft::election`).
        voter: bool,
    },
    RequestVote {
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Set when campaigning because of `TimeoutNow`: the receiver must not ignore it on the
        /// grounds that it heard from a leader recently (thesis §3.10, §4.2.3).
        transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
    },
    /// Also the heartbeat (empty `entries`). `read_seq` is the leader's ReadIndex round number
    /// (0 when no read is waiting); the follower echoes it.
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    },
    AppendEntriesResponse {
        success: bool,
        /// On success: the highest index the follower now holds durably that matches the
        /// leader's log. On failure: unused (0).
        match_index: LogIndex,
        /// On failure (fast back-off, §5.3): the term of the follower's entry at
        /// `prev_log_index` (0 if the follower's log is shorter), and the first index the
        /// follower holds of that term (or its last index + 1 if its log is shorter).
        conflict_term: Term,
        conflict_index: LogIndex,
        /// The follower's last log index, so that the leader can skip straight past a short log.
        last_index: LogIndex,
        read_seq: u64,
    },
    /// A chunk of the leader's snapshot. Chunks are sent in order; `offset` is the byte offset
    /// of `data` within the snapshot's bytes, `total` the full length, `done` marks the last.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// Acknowledges snapshot bytes: the follower has everything before `next_offset` for the
    /// snapshot at `snapshot_index`; when the whole snapshot is durable `installed` is true.
    InstallSnapshotResponse {
        snapshot_index: LogIndex,
        next_offset: u64,
        installed: bool,
    },
    /// Leadership transfer: the receiver campaigns at once, skipping pre-vote.
    TimeoutNow,
}

impl MessageBody {
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

use crate::bytes::PutLe;
pub use crate::bytes::{DecodeError, Reader};
pub use crate::snapdata::SnapshotData;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_and_refuses_bad_bytes() {
        let mut m = Membership::default();
        m.members.insert(
            NodeId(1),
            Member {
                role: MemberRole::Voter,
                addr: "127.0.0.1:5254".into(),
            },
        );
        m.members.insert(
            NodeId(4),
            Member {
                role: MemberRole::Learner,
                addr: "127.0.0.1:5257".into(),
            },
        );
        let enc = m.encoded();
        let (d, n) = Membership::decode(&enc).unwrap();
        assert_eq!(d, m);
        assert_eq!(n, enc.len());
        assert_eq!(m.quorum(), 1);
        for cut in 0..enc.len() {
            assert!(Membership::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = enc.clone();
        bad[10] = 7; // role byte of the first member
        assert!(Membership::decode(&bad).is_err());
    }
}
