//! Handing out one `Ready` in the order of `raft`'s persistence contract, and releasing what
//! waited for storage once its token is durable. The rules that keep an acknowledged write
//! safe live here: what leaves before a sync (`messages`), what only after (`messages_after_
//! persist`, `persisted`), and which hard states may skip a sync of their own. Must not apply
//! entries or answer clients itself (`apply.rs`, `reads.rs`).

use super::*;
use crate::raft::Role;
use log::info;

impl Host {
    pub(super) fn handle_ready<O: Output>(&mut self, out: &mut O) -> Result<(), Fatal> {
        if !self.raft.has_ready() {
            return Ok(());
        }
        let mut rd = self.raft.ready();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(out, ss);
        }
        if let Some(snap) = &rd.snapshot {
            // A leader's snapshot replaces the dictionary. Applying it before it is durable is
            // safe: it holds only committed entries, and `persisted` (hence any acknowledgement)
            // still waits for the batch below.
            // (A received snapshot is in memory: reading it cannot fail.)
            let kv = snap
                .data
                .bytes()
                .map_err(|e| e.to_string())
                .and_then(|b| Kv::restore(&b, self.cfg.kv.clone()).map_err(|e| e.to_string()))
                .map_err(|e| {
                    Fatal(format!(
                        "n{}: the leader's snapshot at index {} does not restore: {e}",
                        self.raft.id(),
                        snap.meta.index.0
                    ))
                })?;
            // kv is replaced: a slice-wise encoding of the old one is void. Entries held for
            // it are applied next, skipping those the snapshot covers.
            self.snapshot_job = None;
            self.kv = kv;
            self.applied_term = snap.meta.term;
            self.applied_membership = snap.meta.membership.clone();
            self.unpin_all(out);
            self.snapshot_index = snap.meta.index;
            self.metrics.snapshots_installed += 1;
            self.fail_writes_through(out, snap.meta.index);
            self.watches_kv_replaced(out, snap.meta.index);
            info!(
                "{}: installed snapshot at index {} ({} keys)",
                self.who(),
                snap.meta.index.0,
                self.kv.len()
            );
        }
        // A config entry in this Ready (or a truncated one) may have changed the membership.
        self.report_membership(out);
        if !rd.entries.is_empty() {
            out.appended(&self.raft, &rd.entries);
        }
        let mark = rd.persist_mark();
        // A hard state that only moves the commit index (same term and vote as the last one
        // handed to storage) does not need a sync of its own: Raft keeps the commit index
        // volatile (Figure 2), nothing sent vouches for it, and a restart re-learns it from the
        // leader. It rides along with the next batch that is written anyway instead, so an
        // acknowledgement round does not cost an extra fdatasync that the next batch of
        // entries would queue behind. Everything else about the Ready (its messages after
        // persist, its mark) still waits for every earlier batch, as for any Ready that needs
        // no write.
        let commit_only = rd.entries.is_empty()
            && rd.snapshot.is_none()
            && rd
                .hard_state
                .is_some_and(|hs| self.stored_term_vote == Some((hs.term, hs.vote)));
        if commit_only {
            self.lazy_hard_state = rd.hard_state.take();
        }
        let needs_persist = rd.needs_persist();
        for m in rd.messages {
            out.send(m);
        }
        let mut after = rd.messages_after_persist;
        if Bugs::on(self.cfg.bugs.send_after_persist_early) {
            for m in after.drain(..) {
                out.send(m);
            }
        }
        let token = if needs_persist {
            let t = self.next_token;
            self.next_token += 1;
            // A newer hard state supersedes a deferred commit-only one.
            let lazy = self.lazy_hard_state.take();
            let hard_state = rd.hard_state.or(lazy);
            if let Some(hs) = hard_state {
                self.stored_term_vote = Some((hs.term, hs.vote));
            }
            let then_send = self.sent_when_durable(std::mem::take(&mut after));
            out.submit_batch(
                t,
                WriteBatch {
                    snapshot: rd.snapshot,
                    hard_state,
                    entries: rd.entries,
                },
                then_send,
                self.raft.role() == Role::Follower,
            );
            if Bugs::on(self.cfg.bugs.reply_before_durable) && self.raft.role() == Role::Leader {
                if let Some((index, term)) = mark {
                    self.raft.persisted(index, term);
                }
            }
            Some(t)
        } else {
            None
        };
        if token.is_none() && self.persisting.is_empty() {
            for m in after {
                self.send_after_persist(out, m);
            }
            self.flush_acks(out);
            // A mark without a write of its own (a deferred commit-only hard state): every
            // earlier batch is durable, and with them the term, the vote and the entries
            // through this mark.
            if let Some((index, term)) = mark {
                self.raft.persisted(index, term);
            }
        } else if token.is_some() || !after.is_empty() || mark.is_some() {
            if token.is_none() {
                out.await_storage();
            }
            // Even a Ready with nothing to send must report its mark once the batches before
            // it are durable: the core matches reports to marks in order, so one never made
            // would be taken for the next with the same (index, term), which then stays
            // unreported (a candidate whose vote is durable would never know it).
            self.persisting.push_back(Persisting::Batch {
                token,
                messages: after,
                mark,
            });
        }
        let any_committed = !rd.committed.is_empty();
        if self.snapshot_job.is_some() {
            // The encoding in progress describes kv as it is: apply these when it is done.
            self.held.extend(rd.committed);
        } else {
            self.apply_held(out);
            self.apply_all(out, &rd.committed);
        }
        self.on_read_states(out, rd.read_states);
        if any_committed {
            self.run_promotions(out);
        }
        Ok(())
    }

    fn on_soft_state<O: Output>(&mut self, out: &mut O, ss: SoftState) {
        let was_leader = self.soft.role == Role::Leader;
        if ss.role != self.soft.role || ss.term != self.soft.term || ss.leader != self.soft.leader {
            let what = if ss.role != self.soft.role {
                format!("became {}", role_name(ss.role))
            } else if ss.leader != self.soft.leader {
                "leader changed".to_string()
            } else {
                "term changed".to_string()
            };
            info!(
                "n{} t{} {}: {what} (leader {})",
                self.raft.id(),
                ss.term.0,
                role_name(ss.role),
                ss.leader
                    .map(|l| format!("n{l}"))
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        if ss.leader.is_some() && ss.leader != self.soft.leader {
            self.metrics.leader_changes += 1;
        }
        self.soft = ss;
        if was_leader && ss.role != Role::Leader {
            // Reads and promotions waiting for a leadership this node no longer has.
            let e = self.not_leader();
            for w in self.reads.drain_unconfirmed() {
                out.answer(w.to, &Response::Error(e.clone()));
            }
            for j in std::mem::take(&mut self.promote_jobs) {
                out.answer(j.to, &Response::Error(e.clone()));
            }
        }
    }

    /// Storage made `token` durable: release what waited for it, and every following Ready
    /// that needed no write of its own.
    pub fn durable<O: Output>(&mut self, out: &mut O, token: u64) -> Result<(), Fatal> {
        match self.persisting.pop_front() {
            Some(p) if p.token() == Some(token) => self.release(out, p),
            other => {
                return Err(Fatal(format!(
                    "storage reported token {token} out of order (expected {:?})",
                    other.and_then(|p| p.token())
                )))
            }
        }
        while matches!(
            self.persisting.front(),
            Some(Persisting::Batch { token: None, .. })
        ) {
            let p = self.persisting.pop_front().expect("front exists");
            self.release(out, p);
        }
        Ok(())
    }

    fn release<O: Output>(&mut self, out: &mut O, p: Persisting) {
        match p {
            Persisting::Batch { messages, mark, .. } => {
                for m in messages {
                    self.send_after_persist(out, m);
                }
                if let Some((index, term)) = mark {
                    self.raft.persisted(index, term);
                }
            }
            Persisting::Snapshot { snapshot, .. } => self.compacted(out, snapshot),
        }
    }

    /// The messages a batch's Ready holds for durability, handed to the driver with the batch:
    /// the driver sends them as soon as the batch is durable, before it reports the token (on
    /// a server the syncer thread sends them right after its `fdatasync`, so a follower's
    /// acknowledgement does not wait for the loop to wake). Every earlier batch is durable by
    /// then too, so each successful acknowledgement takes the larger match index and read
    /// round of the last one handed out to the same leader in the same term; the driver may
    /// then send, of those one sync releases, only the last per [`ack_key`].
    pub(super) fn sent_when_durable(&mut self, after: Vec<Message>) -> Vec<Message> {
        after
            .into_iter()
            .map(|m| {
                if ack_key(&m).is_none() {
                    return m;
                }
                let m = fold_ack(&mut self.handed_acks, m).clone();
                self.handed_acks.retain(|a| a.term >= m.term);
                m
            })
            .collect()
    }

    /// Sends a message of a `Ready` that wrote nothing once the batches before it are durable,
    /// except that a successful AppendEntries acknowledgement waits in `acks` until
    /// `flush_acks` (the start of the next turn, for those `durable` releases; at once
    /// otherwise), where a later one to the same leader in the same term replaces it (see
    /// `fold_ack`). Messages of a `Ready` that wrote a batch went to storage with it
    /// (`sent_when_durable`).
    fn send_after_persist<O: Output>(&mut self, out: &mut O, m: Message) {
        if ack_key(&m).is_none() {
            return out.send(m);
        }
        fold_ack(&mut self.acks, m);
    }

    /// Sends the acknowledgements gathered so far (see `send_after_persist`).
    pub(super) fn flush_acks<O: Output>(&mut self, out: &mut O) {
        for m in self.acks.drain(..) {
            out.send(m);
        }
    }
}

/// For a successful AppendEntries acknowledgement, the leader and term it is for: of two with
/// the same key that the host released in order, the later covers the earlier (see
/// `Host::sent_when_durable`). `None` for any other message.
pub fn ack_key(m: &Message) -> Option<(NodeId, Term)> {
    matches!(
        m.body,
        MessageBody::AppendEntriesResponse { success: true, .. }
    )
    .then_some((m.to, m.term))
}

/// Puts the acknowledgement `m` into `list` in place of the one there with the same
/// [`ack_key`], taking the larger match index and read round of the two: within one term a
/// follower never loses entries that matched its leader, and a later acknowledgement still
/// confirms a round an earlier one echoed. Returns it as stored.
fn fold_ack(list: &mut Vec<Message>, mut m: Message) -> &Message {
    let i = match list.iter().position(|a| ack_key(a) == ack_key(&m)) {
        Some(i) => {
            if let (
                MessageBody::AppendEntriesResponse {
                    match_index,
                    read_seq,
                    ..
                },
                MessageBody::AppendEntriesResponse {
                    match_index: am,
                    read_seq: ar,
                    ..
                },
            ) = (&mut m.body, &list[i].body)
            {
                *match_index = (*match_index).max(*am);
                *read_seq = (*read_seq).max(*ar);
            }
            list[i] = m;
            i
        }
        None => {
            list.push(m);
            list.len() - 1
        }
    };
    &list[i]
}
