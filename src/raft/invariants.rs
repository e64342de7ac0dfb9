//! The node's local invariants, checked after every step by the tests and the simulator. Each
//! failure names the Raft property it protects (Election Safety, Log Matching, Leader
//! Completeness, State Machine Safety, the persistence order of thesis §3.8); the cross-node
//! properties are the simulator's (`sim/checker.rs`). Reads only: never changes the node.

use super::*;

impl Raft {
    /// Checks this node's local invariants; each error names the Raft property it protects.
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.id;
        if self.lost.is_some()
            && matches!(
                self.role,
                Role::Leader | Role::Candidate | Role::PreCandidate
            )
        {
            return Err(format!(
                "n{n} Leader Completeness: campaigning ({:?}) while entries it may have \
                 acknowledged are lost",
                self.role
            ));
        }
        let bytes: u64 = self.entries.iter().map(entry_bytes).sum();
        if bytes != self.log_bytes {
            return Err(format!(
                "n{n} log bytes counted {} but the entries hold {bytes}",
                self.log_bytes
            ));
        }
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
                if !self.can_campaign() {
                    return Err(format!(
                        "n{n} membership: {:?} but not electable",
                        self.role
                    ));
                }
            }
            Role::Learner => {
                if self.can_campaign() {
                    return Err(format!("n{n} membership: electable node stuck as learner"));
                }
            }
        }
        if self.role != Role::Leader && !self.progress.is_empty() {
            return Err(format!("n{n} replication: progress kept after leadership"));
        }
        Ok(())
    }
}
