//! Whether a server with an empty data directory may bootstrap the cluster `--cluster` names,
//! decided by asking the servers listed there (`--initial-cluster-state auto`, the default).
//!
//! An empty data directory is ambiguous: a brand-new cluster, or a member whose disk was lost,
//! replaced or not mounted. Raft's safety rests on each server remembering its votes and what it
//! acknowledged; a member that forgot them and voted again could elect a leader without
//! acknowledged writes. So an empty server first asks every other listed server (a `Probe`)
//! and waits for all of them:
//! - one that knows this server by another incarnation (another data directory), or that is a
//!   running member and never heard of this incarnation, means this server was part of an
//!   existing cluster: refuse to start, and say how to rejoin as a new member;
//! - when every one has answered and each is itself starting (not yet a member), or already
//!   knows this very incarnation (it confirmed first, having heard this server's probe), the
//!   cluster is new: bootstrap, and pin every peer's incarnation.
//!
//! Waiting for all of them, not a majority, is what makes it safe: a member that lagged from the
//! start may never have heard of the lost server, and together with it would look like a new
//! cluster; the member that did count the lost server's votes or acknowledgements pinned it
//! durably first, and it is one of those that must answer. A new cluster therefore forms once
//! every listed server has started; `--initial-cluster-state new` skips the question for a
//! cluster some of whose servers cannot start yet.
//!
//! Pure: time arrives as a monotonic `Duration`, datagrams are the codec's `Probe`s, and the
//! driver (the server's start-up, or the simulator) sends what `due_probes` names and stops on a
//! verdict. Must not touch sockets, files or clocks.

use crate::types::NodeId;
use crate::wire::peer::Probe;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the listed servers that have not answered are asked again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// What the listed servers said, so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some listed server has not answered yet.
    Waiting,
    /// A new cluster: bootstrap, pinning these incarnations (every other listed server's).
    Bootstrap { pins: BTreeMap<NodeId, u64> },
    /// This server was a member of an existing cluster: refuse to start, for this reason.
    Refuse(String),
}

/// One answer (a reply, or a probe of the peer's own, which says as much).
#[derive(Clone, Copy, Debug)]
struct Heard {
    incarnation: u64,
    known_as: u64,
    member: bool,
}

pub struct Prober {
    id: NodeId,
    incarnation: u64,
    /// The other servers `--cluster` lists.
    peers: Vec<NodeId>,
    heard: BTreeMap<NodeId, Heard>,
    next_probe: Duration,
}

impl Prober {
    /// `listed`: the ids `--cluster` names (this server's own is skipped).
    pub fn new(id: NodeId, incarnation: u64, listed: &[NodeId]) -> Prober {
        let mut peers: Vec<NodeId> = listed.iter().copied().filter(|&p| p != id).collect();
        peers.sort();
        peers.dedup();
        Prober {
            id,
            incarnation,
            peers,
            heard: BTreeMap::new(),
            next_probe: Duration::ZERO,
        }
    }

    /// The listed servers to probe now (every one not yet heard from, once per interval).
    pub fn due_probes(&mut self, now: Duration) -> Vec<NodeId> {
        if now < self.next_probe {
            return Vec::new();
        }
        self.next_probe = now + PROBE_INTERVAL;
        self.waiting_for()
    }

    /// When `due_probes` next has something to say.
    pub fn next_probe_at(&self) -> Duration {
        self.next_probe
    }

    /// A probe from another starting server: it is an answer too (that server is not a member
    /// yet, and says what it knows this one by). Returns the `known_as` for the reply: the
    /// incarnation heard from it.
    pub fn on_probe(&mut self, p: &Probe) -> u64 {
        self.record(p);
        p.incarnation
    }

    pub fn on_reply(&mut self, p: &Probe) {
        self.record(p);
    }

    fn record(&mut self, p: &Probe) {
        if !self.peers.contains(&p.from) || p.incarnation == 0 {
            return;
        }
        self.heard.insert(
            p.from,
            Heard {
                incarnation: p.incarnation,
                known_as: p.known_as,
                member: p.member,
            },
        );
    }

    /// Listed servers not heard from yet, in id order.
    pub fn waiting_for(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .copied()
            .filter(|p| !self.heard.contains_key(p))
            .collect()
    }

    pub fn verdict(&self) -> Verdict {
        let me = self.id;
        for (p, h) in &self.heard {
            if h.known_as != 0 && h.known_as != self.incarnation {
                return Verdict::Refuse(format!(
                    "n{p} knows server {me} by another data directory (incarnation {:016x}; this \
                     one is {:016x}): this server's storage was lost or replaced",
                    h.known_as, self.incarnation
                ));
            }
            if h.member && h.known_as == 0 {
                return Verdict::Refuse(format!(
                    "n{p} is a member of a running cluster that has never heard of this data \
                     directory (incarnation {:016x}): this server's storage was lost or replaced, \
                     or the cluster was created without it",
                    self.incarnation
                ));
            }
        }
        if !self.waiting_for().is_empty() {
            return Verdict::Waiting;
        }
        Verdict::Bootstrap {
            pins: self
                .heard
                .iter()
                .map(|(p, h)| (*p, h.incarnation))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(from: u64, incarnation: u64, known_as: u64, member: bool) -> Probe {
        Probe {
            from: NodeId(from),
            incarnation,
            known_as,
            member,
        }
    }

    #[test]
    fn a_new_cluster_bootstraps_once_every_listed_server_has_answered() {
        let mut p = Prober::new(NodeId(1), 0x11, &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(p.due_probes(Duration::ZERO), vec![NodeId(2), NodeId(3)]);
        assert!(p.due_probes(Duration::from_millis(100)).is_empty());
        assert_eq!(p.on_probe(&probe(2, 0x22, 0, false)), 0x22);
        assert_eq!(p.verdict(), Verdict::Waiting, "n3 has not answered");
        assert_eq!(p.due_probes(PROBE_INTERVAL), vec![NodeId(3)]);
        // n3 bootstrapped first (it heard this server's probe) and says so.
        p.on_reply(&probe(3, 0x33, 0x11, true));
        let pins: BTreeMap<NodeId, u64> = [(NodeId(2), 0x22), (NodeId(3), 0x33)].into();
        assert_eq!(p.verdict(), Verdict::Bootstrap { pins });
    }

    #[test]
    fn a_replaced_server_is_refused_by_any_one_that_knew_its_predecessor() {
        // A member that pinned the previous data directory.
        let mut p = Prober::new(NodeId(2), 0xB2, &[NodeId(1), NodeId(2), NodeId(3)]);
        p.on_reply(&probe(3, 0x33, 0xB1, true));
        assert!(
            matches!(p.verdict(), Verdict::Refuse(why) if why.contains("another data directory"))
        );
        // A member that never heard of this one (the cluster existed before it).
        let mut p = Prober::new(NodeId(2), 0xB2, &[NodeId(1), NodeId(2), NodeId(3)]);
        p.on_reply(&probe(1, 0x11, 0, false));
        p.on_reply(&probe(3, 0x33, 0, true));
        assert!(matches!(p.verdict(), Verdict::Refuse(why) if why.contains("never heard")));
    }

    #[test]
    fn silence_and_strangers_never_confirm() {
        let mut p = Prober::new(NodeId(1), 0x11, &[NodeId(1), NodeId(2), NodeId(3)]);
        p.on_reply(&probe(2, 0x22, 0, false));
        p.on_reply(&probe(9, 0x99, 0, false)); // not listed
        p.on_reply(&probe(3, 0, 0, false)); // no incarnation: not an answer
        assert_eq!(p.verdict(), Verdict::Waiting);
        assert_eq!(p.waiting_for(), vec![NodeId(3)]);
        // A lone server lists nobody else: nothing to ask.
        let p = Prober::new(NodeId(1), 0x11, &[NodeId(1)]);
        assert_eq!(
            p.verdict(),
            Verdict::Bootstrap {
                pins: BTreeMap::new()
            }
        );
    }
}
