//! Snapshots this node takes of its own dictionary, and log compaction once they are durable.
//! A snapshot is encoded `snapshot_keys_per_turn` keys per loop turn, applying nothing meanwhile
//! (committed entries wait in `held`), so the loop never stalls for the whole dictionary: a
//! stall longer than the election timeout costs the leader its followers (no heartbeats) or,
//! on followers, the leader its quorum (no acknowledgements). Must not compact the core's log
//! before storage has the snapshot.

use super::*;
use log::info;

impl Host {
    /// Entries applied since the last snapshot before the next one. Before its first snapshot
    /// each node waits an extra share of the interval that depends on its id, so the members
    /// of a cluster do not all write a snapshot at the same index: while a node's storage
    /// writes a snapshot its acknowledgements wait behind it, and if every follower did so at
    /// once the leader would hear no acknowledgement for longer than its check-quorum window
    /// and step down. The phase then persists, as every later snapshot is a fixed distance on.
    fn snapshot_due_entries(&self) -> u64 {
        let n = self.cfg.snapshot_entries;
        if self.snapshot_index.0 == 0 {
            n + n / 4 * (self.raft.id().0 % 4)
        } else {
            n
        }
    }

    /// Applies the entries held back during a snapshot encoding.
    pub(super) fn apply_held<O: Output>(&mut self, out: &mut O) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.apply_all(out, &held);
        self.serve_ready_reads(out);
        self.run_promotions(out);
    }

    /// Starts a snapshot once enough entries were applied since the last one, or encodes the
    /// next slice of the one in progress; a finished one goes to storage.
    pub(super) fn maybe_snapshot<O: Output>(&mut self, out: &mut O) {
        let per_turn = self.cfg.snapshot_keys_per_turn.max(1);
        if self.snapshot_job.is_none() {
            if !self.backups.waiting.is_empty() {
                // Saves whose encoding was voided (a leader's snapshot replaced kv).
                self.start_snapshot_job(false);
            } else {
                let applied = self.kv.applied_index();
                // Due by entries, or by the memory the core's log holds (large values would
                // reach the entry count only after holding gigabytes).
                let due = applied.0 >= self.snapshot_index.0 + self.snapshot_due_entries()
                    || (self.raft.log_bytes() >= self.cfg.snapshot_log_bytes
                        && applied > self.snapshot_index);
                if self.snapshot_in_flight || !due || self.applied_term == Term(0) {
                    return;
                }
                self.start_snapshot_job(true);
            }
        }
        let Some((enc, _)) = &mut self.snapshot_job else {
            return;
        };
        if !self.kv.snapshot_step(enc, per_turn) {
            return; // continued on the next turns
        }
        let (enc, meta) = self.snapshot_job.take().expect("job checked above");
        let bytes = self.kv.snapshot_finish(enc);
        // The encoding ends with its CRC: a backup's checksum, read while the bytes are here.
        let checksum = bytes
            .len()
            .checked_sub(4)
            .map_or(0, |at| crate::bytes::le_u32(&bytes, at));
        let snapshot = Snapshot {
            meta,
            data: SnapshotData::from(bytes),
        };
        self.snapshot_for_saves(out, &snapshot, checksum);
        if self.snapshot_job_stores {
            let token = self.next_token;
            self.next_token += 1;
            out.submit_snapshot(token, snapshot.clone());
            self.snapshot_in_flight = true;
            self.persisting
                .push_back(Persisting::Snapshot { token, snapshot });
        }
        self.apply_held(out);
    }

    /// Starts encoding the dictionary as applied now; `store`: a compaction snapshot that goes
    /// to storage, else one for backups only.
    pub(super) fn start_snapshot_job(&mut self, store: bool) {
        let applied = self.kv.applied_index();
        let meta = match self.raft.snapshot_meta_at(applied) {
            Some(m) => m,
            None => SnapshotMeta {
                index: applied,
                term: self.applied_term,
                membership: self.applied_membership.clone(),
            },
        };
        self.snapshot_job = Some((self.kv.snapshot_start(), meta));
        self.snapshot_job_stores = store;
        if store {
            self.snapshot_started = self.now.mono;
        }
    }

    /// Storage holds the snapshot: the core forgets the log it covers.
    pub(super) fn compacted<O: Output>(&mut self, out: &mut O, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.raft.compact(snapshot);
        out.compacted();
        self.snapshot_in_flight = false;
        self.metrics.snapshots_taken += 1;
        let took = self.now.mono.saturating_sub(self.snapshot_started);
        self.metrics
            .snapshot_duration
            .observe_us(took.as_micros().min(u64::MAX as u128) as u64);
        self.snapshot_index = self.snapshot_index.max(index);
        info!("{}: log compacted through index {}", self.who(), index.0);
    }
}
