//! Executes the fault actions `faults.rs` draws: crashes (biased towards the leader),
//! partitions of every shape, redrawn links, membership changes and leadership transfers (sent
//! to the leader as real request frames, as an operator's `zatt` would), and forced elections.
//! Knows the whole cluster (which node leads) because a fault injector may; must not change any
//! node's state except through a crash or a request.

use super::faults::FaultAction;
use super::*;
use crate::raft::Role;
use crate::wire::client::Request;

impl Sim {
    /// The node that leads in the highest term, if any.
    pub(super) fn leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(h) = h {
                let r = h.raft();
                if r.role() == Role::Leader && best.map_or(true, |(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|b| b.1)
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].is_some())
            .collect()
    }

    pub(super) fn fault(&mut self, a: FaultAction) -> Check {
        match a {
            FaultAction::Crash => {
                let down = self.hosts.len() - self.up_nodes().len();
                if down >= (self.w.voters / 2).max(1) {
                    return Ok(());
                }
                let victim = match self.leader() {
                    Some(l) if self.w.rng.below(100) < self.w.fp.crash_leader_pct => Some(l),
                    _ => {
                        let up = self.up_nodes();
                        (!up.is_empty()).then(|| up[self.w.rng.index(up.len())])
                    }
                };
                if let Some(v) = victim {
                    let d = self.w.rng.between(self.w.fp.down_us.0, self.w.fp.down_us.1);
                    self.crash(v, d)?;
                }
            }
            FaultAction::Partition => {
                let ids: Vec<NodeId> = self.w.nodes.iter().map(|n| n.id).collect();
                let shape = if self.w.fp.isolate_leader {
                    0
                } else {
                    self.w.rng.below(4)
                };
                match shape {
                    0 => {
                        let target = match self.leader() {
                            Some(l) if self.w.fp.isolate_leader || self.w.rng.chance(0.6) => ids[l],
                            _ => ids[self.w.rng.index(ids.len())],
                        };
                        self.w.net.isolate(target);
                    }
                    1 => self.w.net.halves(&mut self.w.rng),
                    2 => self.w.net.one_way(&mut self.w.rng),
                    _ => {
                        let voters: Vec<NodeId> = match self.leader() {
                            Some(l) => self.hosts[l]
                                .as_ref()
                                .map(|h| h.raft().membership().voters().collect())
                                .unwrap_or_default(),
                            None => ids[..self.w.voters].to_vec(),
                        };
                        self.w.net.bridge(&mut self.w.rng, &voters);
                    }
                }
                self.w.heal_gen += 1;
                let g = self.w.heal_gen;
                let (lo, hi) = self.w.fp.partition_us;
                let d = self.w.rng.between(lo, hi);
                self.w.at(d, events::Event::Heal(g));
                let shape = self.w.net.shape.clone();
                self.w.log(format_args!("partition: {shape}"));
            }
            FaultAction::Links => {
                let fp = &self.w.fp;
                let (loss, dup, delay) = (fp.loss_max, fp.dup_max, fp.delay_us);
                self.w.net.randomize(&mut self.w.rng, loss, dup, delay);
                self.w.log(format_args!("links redrawn"));
            }
            FaultAction::Conf => {
                // A replaced server is a membership change of its own: no other meanwhile.
                if self.w.nodes.iter().any(|n| n.replacing) {
                    return Ok(());
                }
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let n = if self.w.fp.conf_burst {
                    self.w.rng.between(1, 3)
                } else {
                    1
                };
                for _ in 0..n {
                    if let Some(req) = self.conf_change(l) {
                        self.admin_request(l, &req)?;
                    }
                }
            }
            FaultAction::Transfer => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let Some(raft) = self.hosts[l].as_ref().map(|h| h.raft()) else {
                    return Ok(());
                };
                let voters: Vec<NodeId> = raft
                    .membership()
                    .voters()
                    .filter(|&v| v != raft.id())
                    .collect();
                if voters.is_empty() {
                    return Ok(());
                }
                let to = voters[self.w.rng.index(voters.len())];
                self.admin_request(l, &Request::TransferLeader { to: Some(to.0) })?;
            }
            FaultAction::Wipe | FaultAction::Damage => {
                // Losing synced data is survivable while the others hold a quorum: at most one
                // node at a time, in clusters of three voters or more, with nobody else down.
                let up = self.up_nodes();
                let busy = self.w.nodes.iter().any(|n| {
                    n.replacing || n.prober.is_some() || n.disk.durable().hard_state.lost.is_some()
                });
                // The leader's voters must all be up, and at least three: losing one then leaves
                // a quorum that holds every committed entry.
                // (Committed: an uncommitted change may vanish with its leader.)
                let voters: Vec<NodeId> = match self.leader().and_then(|l| self.hosts[l].as_ref()) {
                    Some(h) => {
                        let r = h.raft();
                        match r.membership_at(r.commit_index()) {
                            Some(m) if &m == r.membership() => m.voters().collect(),
                            _ => Vec::new(),
                        }
                    }
                    None => Vec::new(),
                };
                let all_up = voters
                    .iter()
                    .all(|v| self.hosts[v.0 as usize - 1].is_some());
                // A server whose `--cluster` names only itself has nobody to ask when it comes
                // back empty: it bootstraps a cluster of its own (the README says to list the
                // servers there once such a cluster grows). Not a fault to inject.
                let alone = a == FaultAction::Wipe && self.w.voters < 2;
                if voters.len() < 3 || !all_up || busy || alone || up.len() < self.hosts.len() {
                    return Ok(());
                }
                let pick: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| {
                        a == FaultAction::Damage
                            || self.w.nodes[i].start_as == node::StartAs::Initial
                    })
                    .collect();
                if pick.is_empty() {
                    return Ok(());
                }
                let victim = match self.leader() {
                    // Mostly a follower: it is what helped the leader commit.
                    Some(l) if self.w.rng.chance(0.2) && pick.contains(&l) => l,
                    _ => pick[self.w.rng.index(pick.len())],
                };
                let d = self.w.rng.between(self.w.fp.down_us.0, self.w.fp.down_us.1);
                self.crash(victim, d)?;
                let id = self.w.nodes[victim].id;
                if a == FaultAction::Wipe {
                    let incarnation = 1 + self.w.rng.below(u64::MAX - 1);
                    let node = &mut self.w.nodes[victim];
                    node.disk.wipe();
                    node.pins.clear();
                    node.incarnation = incarnation;
                    node.replacing = true;
                    self.w.log(format_args!(
                        "{id:?} loses its disk (new incarnation {incarnation:016x})"
                    ));
                } else {
                    let n = 1 + self.w.rng.index(4);
                    let hit = self.w.nodes[victim].disk.damage_tail(n);
                    self.w.log(format_args!(
                        "{id:?} finds its last {hit} synced log entries damaged"
                    ));
                }
                self.forget_durable(victim);
                if let Some(l) = self.leader() {
                    if l != victim && self.w.rng.chance(self.w.fp.crash_leader_after_loss) {
                        self.w.nodes[l].clean_crash = true;
                        let inc = self.w.nodes[l].inc;
                        let d = self.w.rng.between(5_000, 60_000);
                        let down = self.w.rng.between(200_000, 800_000);
                        self.w.at(d, events::Event::Crash(l, inc, down));
                    }
                }
            }
            FaultAction::Campaign => {
                let up = self.up_nodes();
                if up.is_empty() {
                    return Ok(());
                }
                let ni = up[self.w.rng.index(up.len())];
                let Some(h) = self.hosts[ni].as_mut() else {
                    return Ok(());
                };
                let raft = h.raft();
                if raft.membership().is_voter(raft.id()) && raft.role() != Role::Leader {
                    let id = raft.id();
                    h.campaign();
                    self.w.log(format_args!("{id:?} forced to campaign"));
                    self.drive(ni)?;
                }
            }
        }
        Ok(())
    }

    /// A membership change for leader `l` to make: add a non-member (as a learner, or as a
    /// voter through a learner phase the host promotes), promote a learner, or remove a member
    /// (never leaving fewer voters than the cluster started with, nor fewer than 3 when it
    /// started with more).
    fn conf_change(&mut self, l: usize) -> Option<Request> {
        let ids: Vec<NodeId> = self.w.nodes.iter().map(|n| n.id).collect();
        let initial = self.w.voters;
        let m = self.hosts[l].as_ref()?.raft().membership().clone();
        let mut options = Vec::new();
        for &id in &ids {
            if !m.contains(id) {
                let learner = self.w.rng.chance(0.5);
                options.push(Request::MemberAdd {
                    id: id.0,
                    addr: node::addr(id),
                    learner,
                });
            }
        }
        for id in m.learners() {
            options.push(Request::MemberPromote { id: id.0 });
            options.push(Request::MemberRemove { id: id.0 });
        }
        let vc = m.voter_count();
        if vc > initial.min(3) || vc > initial {
            for id in m.voters() {
                options.push(Request::MemberRemove { id: id.0 });
            }
        }
        if options.is_empty() {
            return None;
        }
        Some(options.swap_remove(self.w.rng.index(options.len())))
    }
}

impl Sim {
    /// The operator's procedure for a node refused for its lost storage, as the README gives
    /// it: remove the member, then start the server with `--join` and add it back. Repeats until
    /// done (a change may be refused while another is in flight, or no leader be known).
    pub(super) fn replace(&mut self, ni: usize) -> Check {
        let node = &self.w.nodes[ni];
        if !node.replacing {
            return Ok(());
        }
        if !node.refused && self.hosts[ni].is_some() {
            // Started as a joiner: done once the leader lists it as a voter again.
            let done = self.leader().is_some_and(|l| {
                self.hosts[l].as_ref().is_some_and(|h| {
                    let r = h.raft();
                    r.membership_at(r.commit_index())
                        .is_some_and(|m| m.is_voter(node.id))
                })
            });
            if done {
                self.w.nodes[ni].replacing = false;
                return Ok(());
            }
        }
        let id = node.id;
        let again = self.w.rng.between(100_000, 400_000);
        self.w.at(again, Event::Replace(ni));
        let Some(l) = self.leader() else {
            return Ok(());
        };
        // As the operator sees it: a change counts once committed (`zatt member` answers then).
        let committed = |h: &Host| {
            let r = h.raft();
            r.membership_at(r.commit_index())
                .unwrap_or_else(|| r.membership().clone())
        };
        let member = self.hosts[l]
            .as_ref()
            .is_some_and(|h| committed(h).contains(id));
        if self.w.nodes[ni].refused {
            if member {
                return self.admin_request(l, &Request::MemberRemove { id: id.0 });
            }
            self.w
                .log(format_args!("{id:?} is started again with --join"));
            let node = &mut self.w.nodes[ni];
            node.refused = false;
            node.start_as = node::StartAs::Joiner;
            self.restart(ni)?;
        }
        if !member {
            let req = Request::MemberAdd {
                id: id.0,
                addr: node::addr(id),
                learner: false,
            };
            return self.admin_request(l, &req);
        }
        // Added as a learner whose promotion was lost with a leader: promote it.
        self.admin_request(l, &Request::MemberPromote { id: id.0 })
    }
}
