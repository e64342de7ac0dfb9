//! The checks the simulator runs on each node: after every step on each node the step reached
//! (the core's own invariants, terms and commit indexes that never go back, Election Safety,
//! Leader Completeness, committed entries never replaced), on every message as it leaves (no
//! acknowledgement or vote ahead of the durable state), on the durable state after every sync
//! and crash, and on the replicas' dictionaries at the end. The properties themselves and their
//! global records are `checker.rs`'s; this file gathers what they need from hosts and disks.

use super::events::Event;
use super::*;
use crate::raft::Role;

/// What the checks remember about one node across its lives.
#[derive(Default)]
pub(super) struct NodeRecord {
    max_term: Term,
    max_commit: LogIndex,
    durable_term: Term,
    durable_commit: LogIndex,
    /// The term in which this node was last seen leading (Leader Completeness is checked once
    /// per term led).
    led_term: Option<Term>,
    /// The role, term and leader last traced.
    traced: Option<(Role, Term, Option<NodeId>)>,
}

/// Nothing is acknowledged before it is synced: a granted vote or a successful append or
/// snapshot acknowledgement must be covered by the sender's durable state as it leaves.
pub(super) fn ack_check(w: &mut World, ni: usize, m: &Message) -> Check {
    let d = w.nodes[ni].disk.durable();
    let hs = d.hard_state;
    let fail = |what: String| Err((FailureKind::AckBeforeSync, what));
    match &m.body {
        MessageBody::RequestVoteResponse { granted: true } => {
            w.checker.on_vote_granted(m.from, m.term, m.to)?;
            if hs.term < m.term || (hs.term == m.term && hs.vote != Some(m.to)) {
                return fail(format!(
                    "{:?} granted its vote to {:?} in {:?} but its durable hard state is {hs:?}",
                    m.from, m.to, m.term
                ));
            }
        }
        // The ack vouches for the log up to `match_index`, not for the term: a follower may
        // answer a leader of a newer term before that term is durable (no vote depends on it).
        // An ack from an older term than the durable one is stale (the log may have moved on
        // since) and is not judged. The in-memory log may also have moved on (a later leader's
        // entries, not yet durable), so the durable entry is compared with the ack's term.
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            ..
        } if hs.term <= m.term && *match_index > d.snapshot_index() => {
            let dt = d.term_at(*match_index);
            if dt.map_or(true, |t| t > m.term) {
                return fail(format!(
                    "{:?} acknowledged match index {:?} in {:?} but holds {:?} durably \
                     (durable last index {:?})",
                    m.from,
                    match_index,
                    m.term,
                    dt,
                    d.last_index()
                ));
            }
        }
        MessageBody::InstallSnapshotResponse {
            snapshot_index,
            installed: true,
            ..
        } if d.snapshot_index() < *snapshot_index && d.last_index() < *snapshot_index => {
            return fail(format!(
                "{:?} acknowledged snapshot {:?} but its durable snapshot is at {:?}",
                m.from,
                snapshot_index,
                d.snapshot_index()
            ));
        }
        _ => {}
    }
    Ok(())
}

impl Sim {
    pub(super) fn check_touched(&mut self) -> Check {
        let mut t = std::mem::take(&mut self.w.touched);
        t.sort_unstable();
        t.dedup();
        for &ni in &t {
            self.check_node(ni)?;
        }
        t.clear();
        self.w.touched = t;
        Ok(())
    }

    /// Node `ni` just started from what its disk held (`stored`): its commit index must not be
    /// below what it had stored durably (taken as `min(commit, durable last index)`, see
    /// `check_durable`); the records of its earlier life start over from there.
    pub(super) fn check_restart(&mut self, ni: usize, stored: HardState) -> Check {
        let Some(host) = self.hosts[ni].as_ref() else {
            return Ok(());
        };
        let w = &mut self.w;
        let id = w.nodes[ni].id;
        let min_commit = stored.commit.min(w.nodes[ni].disk.durable().last_index());
        let commit = host.raft().commit_index();
        if commit < min_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{id:?} restarted with commit {commit:?} below its durable commit \
                     {min_commit:?}"
                ),
            ));
        }
        let r = &mut w.records[ni];
        r.max_term = stored.term;
        r.max_commit = commit;
        r.led_term = None;
        r.traced = None;
        Ok(())
    }

    fn check_node(&mut self, ni: usize) -> Check {
        let Some(host) = self.hosts[ni].as_ref() else {
            return Ok(());
        };
        let raft = host.raft();
        let w = &mut self.w;
        let id = w.nodes[ni].id;
        let node = &mut w.records[ni];
        raft.check_invariants()
            .map_err(|e| (FailureKind::CoreInvariant, format!("{id:?}: {e}")))?;
        let term = raft.term();
        if w.opts.verbose {
            let now = (raft.role(), term, raft.leader());
            if node.traced != Some(now) {
                node.traced = Some(now);
                w.log(format_args!(
                    "{id:?} is {:?} in {term:?}, leader {:?}",
                    now.0, now.2
                ));
            }
        }
        let node = &mut w.records[ni];
        if term < node.max_term {
            return Err((
                FailureKind::TermRegressed,
                format!("{:?} term went from {:?} to {:?}", id, node.max_term, term),
            ));
        }
        node.max_term = term;
        let commit = raft.commit_index();
        if commit < node.max_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{:?} commit went from {:?} to {:?}",
                    id, node.max_commit, commit
                ),
            ));
        }
        let mut i = node.max_commit.next().max(raft.first_index());
        while i <= commit {
            if let Some(t) = raft.term_at(i) {
                w.checker.on_commit(id, i, t)?;
            }
            i = i.next();
        }
        node.max_commit = commit;
        if raft.role() == Role::Leader {
            w.checker.on_leader(id, term)?;
            if node.led_term != Some(term) {
                node.led_term = Some(term);
                w.checker.leader_completeness(raft)?;
                if w.phase == Phase::Faults && w.rng.chance(w.fp.crash_new_leader) {
                    let inc = w.nodes[ni].inc;
                    let (lo, hi) = w.fp.new_leader_crash_us;
                    let d = w.rng.between(lo, hi);
                    let down = w.rng.between(w.fp.quick_down_us.0, w.fp.quick_down_us.1);
                    w.at(d, Event::Crash(ni, inc, down));
                }
            }
        }
        Ok(())
    }

    /// A fault took durable state away on purpose (a lost disk, damaged synced records): the
    /// durable term and commit start over from what the disk holds now.
    pub(super) fn forget_durable(&mut self, ni: usize) {
        let d = self.w.nodes[ni].disk.durable();
        let r = &mut self.w.records[ni];
        r.durable_term = d.hard_state.term;
        r.durable_commit = d.hard_state.commit.min(d.last_index());
    }

    /// Durable term and commit never go back (they survive crashes by definition). The commit is
    /// taken as `min(commit, durable last index)`: a torn batch may keep its hard state and lose
    /// the entries after it, and a node cannot durably know more committed than it holds.
    pub(super) fn check_durable(&mut self, ni: usize) -> Check {
        let d = self.w.nodes[ni].disk.durable();
        let id = self.w.nodes[ni].id;
        let mut hs = d.hard_state;
        hs.commit = hs.commit.min(d.last_index());
        let node = &mut self.w.records[ni];
        if hs.term < node.durable_term {
            return Err((
                FailureKind::TermRegressed,
                format!(
                    "{id:?} durable term went from {:?} to {:?}",
                    node.durable_term, hs.term
                ),
            ));
        }
        if hs.commit < node.durable_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{id:?} durable commit went from {:?} to {:?}",
                    node.durable_commit, hs.commit
                ),
            ));
        }
        node.durable_term = hs.term;
        node.durable_commit = hs.commit;
        Ok(())
    }

    /// State Machine Safety, on the states themselves: replicas that applied the same prefix hold
    /// byte-identical dictionaries and sessions (the state machine is deterministic, and
    /// expiry follows log-carried time only).
    pub(super) fn check_replicas(&self) -> Check {
        let mut by_applied: BTreeMap<LogIndex, (NodeId, u32)> = BTreeMap::new();
        for (h, n) in self.hosts.iter().zip(&self.w.nodes) {
            let Some(h) = h else {
                continue;
            };
            let applied = h.kv().applied_index();
            let d = h.kv().digest();
            match by_applied.get(&applied) {
                Some(&(other, d0)) if d0 != d => {
                    return Err((
                        FailureKind::StateMachineSafety,
                        format!(
                            "{:?} and {other:?} both applied up to {applied:?} but their states \
                             differ (digests {d:08x} and {d0:08x})",
                            n.id
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    by_applied.insert(applied, (n.id, d));
                }
            }
        }
        Ok(())
    }
}
