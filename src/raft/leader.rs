//! The leader's side: sending AppendEntries (probe, pipelined replicate, byte-bounded
//! batches), heartbeats, snapshot chunks, handling responses with fast back-off (§5.3),
//! advancing commit by counting only current-term entries (§5.4.2), ReadIndex rounds
//! (thesis §6.4) and leadership transfer (thesis §3.10).

use super::*;

impl Raft {
    // ------------------------------------------------------------------ internals: leader

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Messages that vouch for durable state: votes, RequestVote, acknowledgements (§3.8).
    pub(super) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.queue_after_persist(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    pub(super) fn queue_after_persist(&mut self, m: Message) {
        if Bugs::on(self.cfg.bugs.ack_before_sync) {
            self.msgs.push(m);
        } else {
            self.msgs_after_persist.push(m);
        }
    }

    /// Messages that show this node's term to a node bounded by lost entries, which relies on
    /// the term staying (`note_lost_report`): PreVotes and refused PreVotes. They leave at
    /// once when the term is durable, else with the write that makes it so.
    pub(super) fn send_once_term_durable(&mut self, m: Message) {
        if self.term_durable() {
            self.msgs.push(m);
        } else {
            self.queue_after_persist(m);
        }
    }

    /// A follower's AppendEntries answer. A rejection vouches for nothing and leaves at once.
    /// A success whose `match_index` is already durable (a heartbeat's, typically) leaves at
    /// once too if the current term is also known durable (Figure 2: persistent state is on
    /// stable storage before responding); otherwise it waits for the write (§3.8).
    pub(super) fn send_ack(&mut self, to: NodeId, body: MessageBody) {
        let durable = match &body {
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                ..
            } => !*success || (*match_index <= self.persisted && self.term_durable()),
            _ => false,
        };
        if durable {
            self.send(to, body);
        } else {
            self.send_after_persist(to, body);
        }
    }

    pub(super) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<LogIndex> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.persisted
                } else {
                    self.progress
                        .get(&v)
                        .map(|p| p.match_index)
                        .unwrap_or_default()
                }
            })
            .collect();
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let n = matched[self.membership.quorum() - 1];
        if n <= self.commit {
            return;
        }
        // §5.4.2: only an entry of the current term commits by counting replicas.
        let own_term = self.term_at(n) == Some(self.term);
        if !own_term && !Bugs::on(self.cfg.bugs.commit_old_term_by_count) {
            return;
        }
        // Followers hear of it on the next AppendEntries, or at the next tick (`tick_leader`,
        // `announce_commit`): not in a round of its own at once.
        self.commit = n;
        if self.commit >= self.noop_index && !self.reads_before_commit.is_empty() {
            let ctxs = std::mem::take(&mut self.reads_before_commit);
            for ctx in ctxs {
                self.queue_read(ctx);
            }
        }
        // A leader removed by a now-committed configuration steps down (thesis §4.2.2).
        if !self.membership.is_voter(self.id)
            && self
                .config_indices
                .last()
                .map_or(true, |&c| c <= self.commit)
        {
            log::info!(
                "n{} removed from the cluster; stepping down at {:?}",
                self.id,
                self.term
            );
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn queue_read(&mut self, ctx: u64) {
        let voters: Vec<NodeId> = self.membership.voters().collect();
        if voters.len() == 1 && voters[0] == self.id {
            self.read_states.push(ReadState {
                ctx,
                index: self.commit,
            });
            return;
        }
        self.pending_reads.push_back(PendingRead {
            ctx,
            index: self.commit,
            seq: self.read_seq + 1,
        });
        self.read_round_wanted = true;
    }

    /// Releases every read whose round a quorum of voters has echoed.
    pub(super) fn advance_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.read_seq
                } else {
                    self.progress.get(&v).map(|p| p.read_seq).unwrap_or(0)
                }
            })
            .collect();
        if acks.is_empty() {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[self.membership.quorum() - 1];
        while let Some(r) = self.pending_reads.front() {
            if r.seq > confirmed {
                break;
            }
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
            self.pending_reads.pop_front();
        }
    }

    /// Tells each follower in Replicate of a commit index it has not heard and its log holds
    /// (an empty AppendEntries), when no AppendEntries carried it since it advanced. Called
    /// every tick: announcing each advance at once cost a round of two datagrams per follower
    /// per write, on every server, when writes come one at a time (7.3 datagrams per write
    /// instead of 4 with one client), for followers that hear of it a tick later at most.
    pub(super) fn announce_commit(&mut self) {
        let ids: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| p.state == ReplState::Replicate && p.owes_commit(self.commit))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.heartbeat_to(id);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in ids {
            self.heartbeat_to(id);
        }
    }

    /// An empty AppendEntries: keeps the follower's election timer quiet, carries the commit
    /// index and the ReadIndex round. In Replicate it checks the optimistic `next_index - 1`, so
    /// an AppendEntries lost in the pipeline shows up as a rejection at the next heartbeat
    /// instead of after a stall; otherwise it checks the known match.
    ///
    /// A follower in Probe gets its probe instead (one per heartbeat interval: a lost probe is
    /// retried here, and no reply can trigger an immediate resend loop).
    pub(super) fn heartbeat_to(&mut self, id: NodeId) {
        let Some(pr) = self.progress.get_mut(&id) else {
            return;
        };
        if pr.state == ReplState::Probe {
            pr.probe_sent = false;
            self.send_append(id, true);
            return;
        }
        let (state, optimistic, matched) = (pr.state, pr.next_index.prev(), pr.match_index);
        let (prev, prev_term) = match (state, self.term_at(optimistic), self.term_at(matched)) {
            (ReplState::Replicate, Some(t), _) => (optimistic, t),
            (_, _, Some(t)) => (matched, t),
            _ => (LogIndex(0), Term(0)),
        };
        // The follower takes min(leader_commit, prev) after checking prev (Figure 2), so the
        // commit it learns is always one its log holds.
        let leader_commit = self.commit.min(prev);
        if let Some(pr) = self.progress.get_mut(&id) {
            pr.commit_sent = pr.commit_sent.max(leader_commit);
        }
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit,
            read_seq: self.read_seq,
        };
        self.send(id, body);
    }

    /// Sends what `to` needs next, as far as flow control allows: entries (pipelined in
    /// Replicate, one probe in Probe), or snapshot chunks. With `allow_empty`, an empty probe
    /// goes out even if there are no entries to send.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let max_inflight = self.cfg.max_inflight.max(1);
        loop {
            let last = self.last_index();
            let first = self.first_index();
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            match pr.state {
                ReplState::Snapshot => {
                    self.send_snapshot_chunks(to);
                    return;
                }
                ReplState::Probe if pr.probe_sent => return,
                ReplState::Replicate if pr.inflight.len() >= max_inflight => return,
                _ => {}
            }
            if pr.next_index < first {
                match &self.snapshot {
                    Some(s) => {
                        pr.state = ReplState::Snapshot;
                        pr.inflight.clear();
                        pr.stall_ticks = 0;
                        pr.snapshot = Some(SnapshotSend {
                            snap: s.clone(),
                            acked: 0,
                            sent: 0,
                            done_sent: false,
                            rewound_at: None,
                        });
                        log::info!("n{} sends snapshot {:?} to n{}", self.id, s.meta.index, to);
                        self.send_snapshot_chunks(to);
                    }
                    None => pr.next_index = first,
                }
                return;
            }
            let next = pr.next_index;
            if next > last && !(allow_empty && pr.state == ReplState::Probe) {
                return;
            }
            let prev = next.prev();
            let Some(prev_term) = self.term_at(prev) else {
                return;
            };
            // Sized for what a loop turn usually brings, not for a follower's whole backlog.
            let pending = (last.0 + 1).saturating_sub(next.0).min(64) as usize;
            let mut batch = Vec::with_capacity(pending);
            let mut bytes = 0usize;
            let mut i = next;
            while i <= last {
                let Some(e) = self.entry(i) else { break };
                let sz = e.size_hint();
                if !batch.is_empty() && bytes + sz > self.cfg.max_append_bytes {
                    break;
                }
                bytes += sz;
                batch.push(e.clone());
                i = i.next();
            }
            let end = LogIndex(prev.0 + batch.len() as u64);
            let carried = !batch.is_empty();
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            pr.commit_sent = pr.commit_sent.max(self.commit.min(end));
            match pr.state {
                ReplState::Replicate => {
                    if carried {
                        pr.next_index = end.next();
                        pr.inflight.push_back(end);
                    }
                }
                _ => pr.probe_sent = true,
            }
            let body = MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: batch,
                leader_commit: self.commit,
                read_seq: self.read_seq,
            };
            self.send(to, body);
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if pr.state != ReplState::Replicate || !carried {
                return;
            }
        }
    }

    pub(super) fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk = self.cfg.snapshot_chunk_bytes.max(1) as u64;
        let window = chunk.saturating_mul(self.cfg.snapshot_inflight_chunks.max(1) as u64);
        let me = self.id;
        let mut out = Vec::new();
        {
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            let Some(s) = pr.snapshot.as_mut() else {
                return;
            };
            let total = s.total();
            s.sent = s.sent.max(s.acked);
            while !s.done_sent && s.sent < s.acked.saturating_add(window).max(s.acked + 1) {
                let end = (s.sent + chunk).min(total);
                // A stored snapshot is read from its file: a failed read sends nothing more now,
                // and the next heartbeat's resend tries again from the same offset.
                let data = match s.snap.data.read(s.sent..end) {
                    Ok(d) => d,
                    Err(e) => {
                        log::error!(
                            "n{} cannot read snapshot {:?} for n{}: {e}",
                            me,
                            s.snap.meta.index,
                            to
                        );
                        break;
                    }
                };
                let done = end == total;
                out.push(MessageBody::InstallSnapshot {
                    meta: s.snap.meta.clone(),
                    offset: s.sent,
                    total,
                    data,
                    done,
                });
                s.sent = end;
                s.done_sent = done;
            }
        }
        for body in out {
            self.send(to, body);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict_term: Term,
        conflict_index: LogIndex,
        follower_last: LogIndex,
        read_seq: u64,
    ) {
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_seq = pr.read_seq.max(read_seq);
        if success {
            if match_index > last {
                return;
            }
            if match_index > pr.match_index {
                pr.match_index = match_index;
                pr.stall_ticks = 0;
                while pr.inflight.front().is_some_and(|&i| i <= match_index) {
                    pr.inflight.pop_front();
                }
                match pr.state {
                    ReplState::Probe => {
                        pr.state = ReplState::Replicate;
                        pr.probe_sent = false;
                        pr.next_index = pr.next_index.max(match_index.next());
                    }
                    ReplState::Replicate => pr.next_index = pr.next_index.max(match_index.next()),
                    ReplState::Snapshot => pr.become_probe(),
                }
                self.maybe_commit();
            }
        } else if pr.state != ReplState::Snapshot {
            // Fast back-off (§5.3): skip a whole conflicting term, or straight to the follower's
            // end when its log is short.
            let hint = if conflict_term.0 == 0 {
                conflict_index
            } else {
                let pos = self.entries.partition_point(|e| e.term <= conflict_term);
                let j = LogIndex(self.snap_index.0 + pos as u64);
                if pos > 0 && self.term_at(j) == Some(conflict_term) {
                    j.next()
                } else {
                    conflict_index
                }
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            if follower_last < pr.match_index {
                // The follower holds less than it acknowledged: recovery cut a damaged tail of
                // its log (`HardState::lost`). Its acknowledgements stand (the commit index never
                // goes back, and the node withholds its vote until it is safe); what it needs
                // now is the entries again, so its progress goes back to where its log ends.
                // (A rejection merely delayed from before the acknowledgement costs a resend.)
                log::info!(
                    "n{} n{from} holds through {:?} only, below the {:?} it acknowledged: resending",
                    self.id,
                    follower_last,
                    pr.match_index
                );
                pr.match_index = follower_last;
            }
            let mut next = hint.min(follower_last.next());
            if pr.state == ReplState::Probe {
                next = next.min(pr.next_index.prev());
            }
            pr.state = ReplState::Probe;
            pr.probe_sent = false;
            pr.inflight.clear();
            pr.next_index = next.max(pr.match_index.next()).min(last.next());
        }
        self.maybe_send_timeout_now();
        if self.role == Role::Leader {
            self.send_append(from, false);
            self.advance_reads();
        }
    }

    pub(super) fn on_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        installed: bool,
    ) {
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if installed {
            if snapshot_index > last {
                return;
            }
            if snapshot_index > pr.match_index {
                pr.match_index = snapshot_index;
            }
            if pr.state == ReplState::Snapshot || pr.next_index <= pr.match_index {
                pr.become_probe();
            }
            self.maybe_commit();
            self.maybe_send_timeout_now();
            if self.role == Role::Leader {
                self.send_append(from, false);
            }
            return;
        }
        let Some(s) = pr.snapshot.as_mut() else {
            return;
        };
        if s.snap.meta.index != snapshot_index {
            return;
        }
        let total = s.total();
        let off = next_offset.min(total);
        if off > s.acked {
            s.acked = off;
            s.rewound_at = None;
            pr.stall_ticks = 0;
        } else if off < s.sent && s.rewound_at != Some(off) {
            // No progress although more was sent: a chunk was lost (or the follower lost its
            // buffer). Resume from the follower's offset, once per offset, since every chunk
            // after the gap repeats the same ack.
            s.rewound_at = Some(off);
            s.acked = off;
            s.sent = off;
            s.done_sent = false;
        }
        self.send_snapshot_chunks(from);
    }

    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = &self.transfer else { return };
        if t.timeout_now_sent {
            return;
        }
        let to = t.to;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.last_index());
        if caught_up {
            if let Some(t) = &mut self.transfer {
                t.timeout_now_sent = true;
            }
            self.send(to, MessageBody::TimeoutNow);
        }
    }
}
