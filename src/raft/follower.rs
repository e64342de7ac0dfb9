//! The follower's side of replication: the AppendEntries consistency check and append
//! (Figure 2, §5.3), conflict hints for fast back-off, and receiving and installing snapshots
//! in chunks (§7). Acknowledgements leave only once what they vouch for is durable (§3.8).

use super::*;

impl Raft {
    // ------------------------------------------------------------------ internals: follower

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        from: NodeId,
        prev: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) {
        // Shape checks first: a malformed message is dropped, not half-applied.
        for (i, e) in entries.iter().enumerate() {
            if e.index.0 != prev.0.wrapping_add(1 + i as u64) || e.term > self.term {
                return;
            }
            let before = if i == 0 {
                prev_term
            } else {
                entries[i - 1].term
            };
            if e.term < before {
                return;
            }
        }
        if prev >= self.snap_index && self.term_at(prev) != Some(prev_term) {
            // §5.3 consistency check failed: reply with hints for fast back-off.
            let last = self.last_index();
            let (ct, ci) = match self.term_at(prev) {
                None => (Term(0), last.next()),
                Some(t) => {
                    let start = self.entries.partition_point(|e| e.term < t);
                    (t, LogIndex(self.snap_index.0 + 1 + start as u64).min(prev))
                }
            };
            self.send_ack(
                from,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: LogIndex(0),
                    conflict_term: ct,
                    conflict_index: ci,
                    last_index: last,
                    read_seq,
                },
            );
            return;
        }
        let last_new = LogIndex(prev.0 + entries.len() as u64);
        // Append only what is new; truncate from the first conflicting entry only (Figure 2,
        // receiver step 3): a delayed AppendEntries that matches must never cut the log.
        let mut append_from = None;
        for (i, e) in entries.iter().enumerate() {
            if e.index <= self.snap_index {
                if e.index == self.snap_index && e.term != self.snap_term {
                    log::error!(
                        "n{} AppendEntries contradicts snapshot at {:?}",
                        self.id,
                        e.index
                    );
                    return;
                }
                continue;
            }
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        log::error!(
                            "n{} AppendEntries would truncate committed {:?}",
                            self.id,
                            e.index
                        );
                        return;
                    }
                    append_from = Some(i);
                    break;
                }
                None => {
                    append_from = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = append_from {
            let first = entries[i].index;
            if first <= self.last_index() {
                self.truncate_from(first);
            }
            let mut config_seen = false;
            for e in entries.into_iter().skip(i) {
                if e.kind == EntryKind::Config {
                    self.config_indices.push(e.index);
                    config_seen = true;
                }
                self.log_bytes += entry_bytes(&e);
                self.entries.push(e);
            }
            if config_seen {
                self.recompute_membership();
                self.on_membership_changed();
            }
            if Bugs::on(self.cfg.bugs.ack_before_sync) {
                self.persisted = self.last_index();
            }
        }
        let new_commit = leader_commit.min(last_new).min(self.last_index());
        self.follower_commit_to(new_commit);
        self.send_ack(
            from,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: last_new.min(self.last_index()),
                conflict_term: Term(0),
                conflict_index: LogIndex(0),
                last_index: self.last_index(),
                read_seq,
            },
        );
    }

    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let index = meta.index;
        // Already covered (by our snapshot or a matching log entry): nothing to transfer.
        if index <= self.snap_index || self.term_at(index) == Some(meta.term) {
            self.incoming_snapshot = None;
            if index > self.commit && index <= self.last_index() {
                self.follower_commit_to(index);
            }
            self.send_ack(
                from,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: index,
                    next_offset: total,
                    installed: true,
                },
            );
            return;
        }
        if index <= self.commit {
            // It contradicts an entry this node knows committed: committed entries never change
            // (State Machine Safety), so the message is forged or corrupt.
            log::error!(
                "n{} snapshot {:?} {:?} from n{} contradicts its committed log",
                self.id,
                index,
                meta.term,
                from
            );
            return;
        }
        if total > self.cfg.max_snapshot_bytes
            || offset
                .checked_add(data.len() as u64)
                .map_or(true, |end| end > total)
        {
            log::warn!(
                "n{} dropped a malformed snapshot chunk from n{}",
                self.id,
                from
            );
            return;
        }
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.from == from && s.meta == meta && s.total == total);
        if !same {
            if offset != 0 {
                self.send(
                    from,
                    MessageBody::InstallSnapshotResponse {
                        snapshot_index: index,
                        next_offset: 0,
                        installed: false,
                    },
                );
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                from,
                meta: meta.clone(),
                total,
                buf: Vec::new(),
            });
        }
        let Some(inc) = self.incoming_snapshot.as_mut() else {
            return;
        };
        let have = inc.buf.len() as u64;
        if offset == have {
            inc.buf.extend_from_slice(&data);
        }
        let have = inc.buf.len() as u64;
        if done && offset + data.len() as u64 == total && have == total {
            let Some(inc) = self.incoming_snapshot.take() else {
                return;
            };
            self.install_snapshot(Snapshot {
                meta: inc.meta,
                data: SnapshotData::from(inc.buf),
            });
            self.send_ack(
                from,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index: index,
                    next_offset: total,
                    installed: true,
                },
            );
            return;
        }
        // Buffered bytes are only in memory: acknowledging them needs no durability.
        self.send(
            from,
            MessageBody::InstallSnapshotResponse {
                snapshot_index: index,
                next_offset: have,
                installed: false,
            },
        );
    }

    /// Advances a follower's commit index. Once the latest Config entry is known committed, a
    /// node it removed stops being electable (see `can_campaign`).
    pub(super) fn follower_commit_to(&mut self, index: LogIndex) {
        if index <= self.commit {
            return;
        }
        let crossed = self
            .config_indices
            .last()
            .is_some_and(|&c| c > self.commit && c <= index);
        self.commit = index;
        if crossed {
            self.on_membership_changed();
        }
    }

    pub(super) fn install_snapshot(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        log::info!(
            "n{} installs snapshot at {:?} {:?}",
            self.id,
            idx,
            snap.meta.term
        );
        self.entries.clear();
        self.log_bytes = 0;
        self.config_indices.clear();
        self.snap_index = idx;
        self.snap_term = snap.meta.term;
        self.base_membership = snap.meta.membership.clone();
        self.recompute_membership();
        self.commit = self.commit.max(idx);
        self.persisted = self.persisted.min(idx);
        self.unstable_from = idx.next();
        self.snapshot = Some(snap.clone());
        self.pending_snapshot = Some(snap);
        self.on_membership_changed();
    }
}
