//! Raft's safety properties, checked by the simulator after every step against global records
//! that outlive any node: who led each term, every (index, term) ever appended with its digest and
//! predecessor's term, every entry ever applied, every vote ever granted. Must not look at one
//! node's word alone where the property is global; must not use HashMap (iteration order).
//!
//! Read more: Raft paper Figure 3 (the properties), thesis §3.8 (persistence), §4.1 (one
//! membership change at a time).

use crate::raft::Raft;
use crate::types::{Entry, EntryKind, LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    ElectionSafety,
    LogMatching,
    LeaderCompleteness,
    StateMachineSafety,
    TermRegressed,
    CommitRegressed,
    /// A success ack or a granted vote left before the state it vouches for was synced.
    AckBeforeSync,
    /// A node granted two different votes in one term.
    VoteSafety,
    /// A leader holds two uncommitted membership changes.
    ConfChangeSafety,
    /// The core's own `check_invariants` failed.
    CoreInvariant,
    /// The host-facing contract broke (a disk batch with a gap, entries applied out of order).
    Contract,
    Linearizability,
    Liveness,
    /// A watch stream broke its guarantees (order, no gap, no repeat, the committed changes).
    Watch,
    /// Something panicked (the core, the state machine or the simulator).
    Panic,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
    /// Simulated time of detection, µs.
    pub at_us: u64,
}

pub type Check = Result<(), (FailureKind, String)>;

/// FNV-1a, 64 bits: a stable hash for digests and the trace (std's hashers promise no stability).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

pub fn digest(e: &Entry) -> u64 {
    let mut h = Fnv::default();
    h.u64(e.index.0);
    h.u64(e.term.0);
    h.u64(e.kind as u64);
    h.bytes(&e.data);
    h.0
}

#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) → (digest, term of the entry before it).
    log: BTreeMap<(LogIndex, Term), (u64, Option<Term>)>,
    /// index → (term, digest) of the entry applied there, by anyone, ever.
    pub applied: BTreeMap<LogIndex, (Term, u64)>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// index → term of the entry any node has ever considered committed.
    committed: BTreeMap<LogIndex, (Term, NodeId)>,
}

impl Checker {
    /// Election Safety: at most one leader per term, over the whole run.
    pub fn on_leader(&mut self, id: NodeId, term: Term) -> Check {
        match self.leaders.get(&term) {
            Some(&other) if other != id => Err((
                FailureKind::ElectionSafety,
                format!("{other:?} and {id:?} both led {term:?}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, id);
                Ok(())
            }
        }
    }

    /// Log Matching: an (index, term) names one entry, always preceded by the same term.
    /// `prev_term` is None when the node no longer holds the previous entry (compacted).
    pub fn on_append(&mut self, id: NodeId, e: &Entry, prev_term: Option<Term>) -> Check {
        let d = digest(e);
        match self.log.get(&(e.index, e.term)).copied() {
            Some((d0, p0)) if d0 != d || (prev_term.is_some() && p0.is_some() && p0 != prev_term) => Err((
                FailureKind::LogMatching,
                format!(
                    "{id:?} appended {e:?} (digest {d:x}, prev term {prev_term:?}) but another node \
                     holds digest {d0:x}, prev term {p0:?} at that index and term"
                ),
            )),
            Some((d0, None)) => {
                self.log.insert((e.index, e.term), (d0, prev_term));
                Ok(())
            }
            Some(_) => Ok(()),
            None => {
                self.log.insert((e.index, e.term), (d, prev_term));
                Ok(())
            }
        }
    }

    /// State Machine Safety: every node applies the same entry at each index.
    pub fn on_apply(&mut self, id: NodeId, e: &Entry) -> Check {
        let d = digest(e);
        match self.applied.get(&e.index) {
            Some(&(t0, d0)) if d0 != d => Err((
                FailureKind::StateMachineSafety,
                format!(
                    "{id:?} applied {e:?} at {:?} but {:?} of {t0:?} was applied there before",
                    e.index, d0
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(e.index, (e.term, d));
                Ok(())
            }
        }
    }

    /// A committed entry is never replaced: every node that considers index `idx` committed
    /// holds the same term there (the commit-time face of State Machine Safety).
    pub fn on_commit(&mut self, id: NodeId, idx: LogIndex, term: Term) -> Check {
        match self.committed.get(&idx) {
            Some(&(t0, n0)) if t0 != term => Err((
                FailureKind::StateMachineSafety,
                format!(
                    "{id:?} committed {idx:?} of {term:?} but {n0:?} had committed it of {t0:?}"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(idx, (term, id));
                Ok(())
            }
        }
    }

    /// A node grants at most one vote per term (the durable vote of Figure 2).
    pub fn on_vote_granted(&mut self, voter: NodeId, term: Term, candidate: NodeId) -> Check {
        match self.votes.get(&(voter, term)) {
            Some(&c) if c != candidate => Err((
                FailureKind::VoteSafety,
                format!("{voter:?} voted for {c:?} and for {candidate:?} in {term:?}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.votes.insert((voter, term), candidate);
                Ok(())
            }
        }
    }

    /// Leader Completeness: a new leader holds every entry any node has considered committed
    /// that its snapshot does not already cover.
    pub fn leader_completeness(&self, raft: &Raft) -> Check {
        let first = raft.first_index();
        for (&idx, &(term, _)) in self.committed.range(first..) {
            let has = raft.term_at(idx);
            if has != Some(term) {
                return Err((
                    FailureKind::LeaderCompleteness,
                    format!(
                        "{:?} became leader of {:?} without committed entry {idx:?} of {term:?} \
                         (it holds {has:?}; last index {:?})",
                        raft.id(),
                        raft.term(),
                        raft.last_index()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One membership change at a time (thesis §4.1): when a leader appends a Config entry, no
    /// other Config entry may sit uncommitted before it in its log.
    pub fn single_conf_change(&self, raft: &Raft, appended: &Entry) -> Check {
        if appended.kind != EntryKind::Config {
            return Ok(());
        }
        let mut i = raft.commit_index().next().max(raft.first_index());
        while i < appended.index {
            if let Some(e) = raft.entry(i) {
                if e.kind == EntryKind::Config {
                    return Err((
                        FailureKind::ConfChangeSafety,
                        format!(
                            "{:?} appended config entry {:?} while config entry {:?} is \
                             uncommitted (commit {:?})",
                            raft.id(),
                            appended.index,
                            i,
                            raft.commit_index()
                        ),
                    ));
                }
            }
            i = i.next();
        }
        Ok(())
    }
}
