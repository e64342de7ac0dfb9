//! The simulated network between Raft nodes: one set of parameters per directed link (loss,
//! duplication, delay range; a wide delay range reorders) and a set of blocked directed links
//! that partitions switch on and off. Must not deliver anything itself: `route` only says when
//! copies of a message would arrive, and the simulator's event queue does the rest. Clients are
//! not partitioned (they reach every node), which is what lets an isolated old leader be asked.

use crate::rng::Rng;
use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    pub loss: f64,
    pub dup: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
}

impl LinkParams {
    pub fn calm() -> LinkParams {
        LinkParams {
            loss: 0.0,
            dup: 0.0,
            delay_min_us: 500,
            delay_max_us: 2_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Network {
    nodes: Vec<NodeId>,
    links: BTreeMap<(NodeId, NodeId), LinkParams>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// The current partition's shape, for traces.
    pub shape: String,
}

impl Network {
    pub fn new(nodes: Vec<NodeId>) -> Network {
        let mut links = BTreeMap::new();
        for &a in &nodes {
            for &b in &nodes {
                if a != b {
                    links.insert((a, b), LinkParams::calm());
                }
            }
        }
        Network {
            nodes,
            links,
            blocked: BTreeSet::new(),
            shape: "healed".into(),
        }
    }

    /// Draws new parameters for every link, each within the profile's bounds.
    pub fn randomize(&mut self, rng: &mut Rng, loss_max: f64, dup_max: f64, delay_us: (u64, u64)) {
        for p in self.links.values_mut() {
            let lo = rng.between(delay_us.0, delay_us.1);
            let hi = rng.between(lo, delay_us.1);
            *p = LinkParams {
                loss: rng.unit() * loss_max,
                dup: rng.unit() * dup_max,
                delay_min_us: lo,
                delay_max_us: hi,
            };
        }
    }

    /// No loss, no duplication, short delays: the liveness phase's network.
    pub fn calm(&mut self) {
        for p in self.links.values_mut() {
            *p = LinkParams::calm();
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
        self.shape = "healed".into();
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    fn block_between(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                if x != y {
                    self.blocked.insert((x, y));
                    self.blocked.insert((y, x));
                }
            }
        }
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        self.heal();
        let others: Vec<NodeId> = self.nodes.iter().copied().filter(|&n| n != node).collect();
        self.block_between(&[node], &others);
        self.shape = format!("isolate {node:?}");
    }

    /// Two random groups that cannot talk to each other.
    pub fn halves(&mut self, rng: &mut Rng) {
        self.heal();
        let mut v = self.nodes.clone();
        rng.shuffle(&mut v);
        let cut = rng.between(1, (v.len() as u64).saturating_sub(1).max(1)) as usize;
        let (a, b) = v.split_at(cut.min(v.len()));
        let (a, b) = (a.to_vec(), b.to_vec());
        self.block_between(&a, &b);
        self.shape = format!("halves {a:?} | {b:?}");
    }

    /// One node can send but not receive, or receive but not send.
    pub fn one_way(&mut self, rng: &mut Rng) {
        self.heal();
        let n = self.nodes[rng.index(self.nodes.len())];
        let inbound = rng.chance(0.5);
        for &o in &self.nodes {
            if o != n {
                if inbound {
                    self.blocked.insert((o, n));
                } else {
                    self.blocked.insert((n, o));
                }
            }
        }
        self.shape = format!("one-way {n:?} {}", if inbound { "deaf" } else { "mute" });
    }

    /// The bridge: nodes on a ring, each linked only to its nearest neighbours, so that each sees
    /// a majority of `voters` (itself included) and no two see the same majority.
    pub fn bridge(&mut self, rng: &mut Rng, voters: &[NodeId]) {
        self.heal();
        let mut ring = voters.to_vec();
        rng.shuffle(&mut ring);
        let n = ring.len();
        if n < 3 {
            self.shape = "bridge (too few voters)".into();
            return;
        }
        let quorum = n / 2 + 1;
        let k = quorum / 2; // neighbours on each side: 1 + 2k >= quorum
        for i in 0..n {
            for j in 0..n {
                let d = (i + n - j) % n;
                let d = d.min(n - d);
                if i != j && d > k {
                    self.blocked.insert((ring[i], ring[j]));
                }
            }
        }
        // Nodes outside the voter ring (learners) hear only the ring's first node.
        for &o in &self.nodes {
            if !voters.contains(&o) {
                for &v in &ring[1..] {
                    self.blocked.insert((o, v));
                    self.blocked.insert((v, o));
                }
            }
        }
        self.shape = format!("bridge ring {ring:?} k={k}");
    }

    /// Arrival delays of the copies of one message sent now on `from → to`: none when lost or
    /// blocked, two when duplicated.
    pub fn route(&self, from: NodeId, to: NodeId, rng: &mut Rng) -> Vec<u64> {
        if self.blocked.contains(&(from, to)) {
            return Vec::new();
        }
        let p = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(LinkParams::calm());
        if rng.chance(p.loss) {
            return Vec::new();
        }
        let mut out = vec![rng.between(p.delay_min_us, p.delay_max_us)];
        if rng.chance(p.dup) {
            out.push(rng.between(p.delay_min_us, p.delay_max_us.saturating_mul(3)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_gives_every_voter_a_distinct_majority() {
        // Goal: the bridge shape's defining property. Method: build it for 5 and 7 voters, compute
        // what each node sees, and compare the sets.
        for n in [5u64, 7] {
            let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
            let mut net = Network::new(ids.clone());
            net.bridge(&mut Rng::new(n), &ids);
            let mut seen = BTreeSet::new();
            for &a in &ids {
                let sees: BTreeSet<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|&b| a == b || !net.is_blocked(a, b))
                    .collect();
                assert!(sees.len() as u64 > n / 2, "{a:?} sees {sees:?}");
                assert!(seen.insert(sees), "two nodes see the same majority");
            }
        }
    }
}
