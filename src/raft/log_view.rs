//! The in-memory log view and membership: appending as leader, truncating a conflicting
//! suffix, and recomputing the latest membership from the Config entries in the log (thesis
//! §4.1: a configuration takes effect when appended and reverts if truncated).

use super::*;

/// Removals remembered for `member_behind_removal_of`.
const MAX_DEPARTED: usize = 64;

impl Raft {
    // ------------------------------------------------------------------ internals: the log

    pub(super) fn recompute_membership(&mut self) {
        let mut m = self.base_membership.clone();
        for &ci in self.config_indices.iter().rev() {
            if let Some(d) = self.entry(ci).and_then(|e| decode_membership(&e.data)) {
                m = d;
                break;
            }
        }
        // Removals seen since start, kept past compaction for `member_behind_removal_of`.
        let at = self
            .config_indices
            .last()
            .copied()
            .unwrap_or(self.snap_index);
        for id in self.membership.members.keys() {
            if !m.contains(*id) {
                self.departed.insert(*id, at);
            }
        }
        let last = self.last_index();
        self.departed.retain(|_, i| *i <= last);
        // Bounded: the oldest removals reached every member long ago.
        while self.departed.len() > MAX_DEPARTED {
            let oldest = self
                .departed
                .iter()
                .min_by_key(|(_, i)| **i)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.departed.remove(&id);
            }
        }
        self.membership = m;
    }

    /// After the membership changed: leaders track the new member set, others fix their role.
    pub(super) fn on_membership_changed(&mut self) {
        if self.role == Role::Leader {
            let next = self.last_index().next();
            let members: Vec<NodeId> = self
                .membership
                .members
                .keys()
                .copied()
                .filter(|&p| p != self.id)
                .collect();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            if let Some(t) = &self.transfer {
                if !self.membership.is_voter(t.to) {
                    self.transfer = None;
                }
            }
            return;
        }
        let before = self.role;
        let voter = self.can_campaign();
        match self.role {
            Role::Follower | Role::Learner => self.role = self.passive_role(),
            Role::Candidate | Role::PreCandidate if !voter => {
                self.votes.clear();
                self.won_election = false;
                self.role = Role::Learner;
            }
            _ => {}
        }
        self.log_role(before);
    }

    pub(super) fn append_as_leader(&mut self, kind: EntryKind, data: &[u8]) -> (LogIndex, Term) {
        let idx = self.last_index().next();
        let e = Entry::new(self.term, idx, kind, data);
        self.log_bytes += entry_bytes(&e);
        self.entries.push(e);
        if kind == EntryKind::Config {
            self.config_indices.push(idx);
            self.recompute_membership();
            self.on_membership_changed();
        }
        if Bugs::on(self.cfg.bugs.ack_before_sync) {
            self.persisted = idx;
            self.maybe_commit();
        }
        self.append_pending = true;
        (idx, self.term)
    }

    pub(super) fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if (self.last_index().0 - self.commit.0) as usize >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::Busy);
        }
        Ok(())
    }

    /// Drops entries from `from` on. Only entries above `commit` may go (Leader Completeness).
    pub(super) fn truncate_from(&mut self, from: LogIndex) {
        let keep = (from.0 - self.snap_index.0 - 1) as usize;
        for e in self.entries.drain(keep.min(self.entries.len())..) {
            self.log_bytes -= entry_bytes(&e);
        }
        let had_config = self.config_indices.last().is_some_and(|&c| c >= from);
        self.config_indices.retain(|&c| c < from);
        self.persisted = self.persisted.min(from.prev());
        self.unstable_from = self.unstable_from.min(from);
        if had_config {
            self.recompute_membership();
            self.on_membership_changed();
        }
    }
}

pub(super) fn decode_membership(data: &[u8]) -> Option<Membership> {
    Membership::decode(data).ok().map(|(m, _)| m)
}
