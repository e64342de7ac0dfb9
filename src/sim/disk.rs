//! The simulator's disk: one per node, implementing `storage::LogStorage` with the contract's
//! durability rules made visible. Written batches and snapshots stay pending until synced, and
//! become durable in the order written; a crash keeps a random prefix of the pending items and
//! may tear the last kept batch (a prefix of its records: snapshot, hard state, then entries; a
//! snapshot of the node's own is a file renamed into place, whole or absent); `recover`
//! returns exactly what became durable.
//!
//! Must not hide a contract violation: a batch that would leave a gap in the log makes `sync`
//! fail, which the simulator reports. Read more: `src/storage.rs`.

use crate::raft::Boot;
use crate::rng::Rng;
use crate::storage::{LogStorage, WriteBatch};
use crate::types::{Entry, HardState, LogIndex, LostEntries, Snapshot, Term};
use std::collections::VecDeque;
use std::io;

/// The durable contents: what `recover` hands back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskState {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Contiguous, starting right after the snapshot's index (or at 1).
    pub entries: Vec<Entry>,
}

impl DiskState {
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map(|s| s.meta.index)
            .unwrap_or(LogIndex(0))
    }

    pub fn last_index(&self) -> LogIndex {
        match self.entries.last() {
            Some(e) => e.index,
            None => self.snapshot_index(),
        }
    }

    /// The term of the durable entry at `index`, the snapshot's term at its index, `Term(0)` at 0.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            return Some(Term(0));
        }
        let si = self.snapshot_index();
        if index == si {
            return self.snapshot.as_ref().map(|s| s.meta.term);
        }
        if index < si || index > self.last_index() {
            return None;
        }
        let off = (index.0 - si.0 - 1) as usize;
        self.entries.get(off).map(|e| e.term)
    }

    fn install_snapshot(&mut self, s: &Snapshot) {
        if s.meta.index <= self.snapshot_index() {
            return;
        }
        let keep = self.term_at(s.meta.index) == Some(s.meta.term);
        if keep {
            self.entries.retain(|e| e.index > s.meta.index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(s.clone());
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let si = self.snapshot_index();
        let mut first = true;
        for e in entries {
            if e.index <= si {
                // Already covered by the snapshot: committed, hence identical.
                continue;
            }
            if first {
                first = false;
                if e.index > self.last_index().next() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "batch leaves a gap: first entry {:?} after last {:?}",
                            e.index,
                            self.last_index()
                        ),
                    ));
                }
                let keep = (e.index.0 - si.0 - 1) as usize;
                self.entries.truncate(keep);
            } else if e.index != self.last_index().next() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("batch entries not contiguous at {:?}", e.index),
                ));
            }
            self.entries.push(e.clone());
        }
        Ok(())
    }

    /// Applies a whole batch in the contract's order: snapshot, hard state, entries.
    pub fn apply(&mut self, b: &WriteBatch) -> io::Result<()> {
        if let Some(s) = &b.snapshot {
            self.install_snapshot(s);
        }
        if let Some(hs) = b.hard_state {
            self.hard_state = hs;
        }
        self.append(&b.entries)
    }
}

/// A written item not yet durable.
#[derive(Clone, Debug)]
enum Pending {
    Batch(WriteBatch),
    /// A snapshot this node took of its own state (log compaction).
    Snapshot(Snapshot),
}

impl Pending {
    fn apply_to(&self, d: &mut DiskState) -> io::Result<()> {
        match self {
            Pending::Batch(b) => d.apply(b),
            Pending::Snapshot(s) => {
                d.install_snapshot(s);
                Ok(())
            }
        }
    }
}

/// A simulated disk with explicit pending (written, unsynced) batches and snapshots.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    durable: DiskState,
    pending: VecDeque<Pending>,
    /// Items written since creation; `synced` counts the durable prefix of them.
    written: u64,
    synced: u64,
    /// Set when a sync found a contract violation; the disk is then "failed".
    pub failure: Option<String>,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// A disk holding `boot` durably (an initial member's first state).
    pub fn with_boot(boot: &Boot) -> SimDisk {
        let mut d = SimDisk::new();
        let b = WriteBatch {
            snapshot: boot.snapshot.clone(),
            hard_state: Some(boot.hard_state),
            entries: boot.entries.clone(),
        };
        d.durable.apply(&b).expect("bootstrap state is contiguous");
        d
    }

    pub fn durable(&self) -> &DiskState {
        &self.durable
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Queues a snapshot this node took of its own state, ordered with the batches: once
    /// durable it replaces the log it covers (the WAL writes a snapshot file, then compacts).
    pub fn write_snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        if let Some(f) = &self.failure {
            return Err(io::Error::other(f.clone()));
        }
        self.pending.push_back(Pending::Snapshot(snapshot.clone()));
        self.written += 1;
        Ok(())
    }

    /// Makes the items up to number `upto` (as counted by `written`) durable, in order.
    /// This is the syncer's completion: a sync covers what was written when it started.
    pub fn sync_through(&mut self, upto: u64) -> io::Result<()> {
        while self.synced < upto {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.synced += 1;
            if let Err(e) = p.apply_to(&mut self.durable) {
                self.failure = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

    /// A crash: keeps a random prefix of the pending items, possibly tearing the next batch
    /// (keeping a prefix of its records), and forgets the rest. Returns how many items survived
    /// whole.
    pub fn crash(&mut self, rng: &mut Rng, torn: bool) -> usize {
        let n = self.pending.len();
        let keep = rng.index(n + 1);
        let pending: Vec<Pending> = self.pending.drain(..).collect();
        for p in &pending[..keep] {
            if p.apply_to(&mut self.durable).is_err() {
                // The same batch would have failed its sync: treat the rest as lost.
                break;
            }
        }
        let next = pending.get(keep);
        if let (Some(Pending::Batch(b)), true) = (next, torn && next.is_some() && rng.chance(0.5)) {
            let records =
                b.snapshot.is_some() as usize + b.hard_state.is_some() as usize + b.entries.len();
            let cut = rng.index(records + 1);
            let mut left = cut;
            let mut part = WriteBatch::default();
            if b.snapshot.is_some() && left > 0 {
                part.snapshot = b.snapshot.clone();
                left -= 1;
            }
            if b.hard_state.is_some() && left > 0 {
                part.hard_state = b.hard_state;
                left -= 1;
            }
            let kept_entries = left.min(b.entries.len());
            part.entries = b.entries[..kept_entries].to_vec();
            if self.durable.apply(&part).is_ok() && cut < records && rng.chance(0.5) {
                // The tear left damaged bytes where the rest of the batch was: recovery cannot
                // tell them from records that were synced and acknowledged, and keeps a bound
                // on what they may have held (the WAL's "Lost entries").
                let mut term = self.durable.hard_state.term;
                let mut index = self.durable.last_index().next();
                if let Some(hs) = b.hard_state {
                    term = term.max(hs.term);
                }
                if let (Some(s), true) = (&b.snapshot, part.snapshot.is_none()) {
                    term = term.max(s.meta.term);
                    index = index.max(s.meta.index);
                }
                for e in &b.entries[kept_entries..] {
                    term = term.max(e.term);
                    index = index.max(e.index);
                }
                self.lose(LostEntries { term, index });
            }
        }
        self.synced = self.written;
        keep
    }

    /// Damages the last `n` durable entries after the snapshot, as a disk that loses synced
    /// data at the end of the log would (a bad sector, a failed write the drive did not
    /// report): recovery cuts them and keeps a bound on what they held. Returns how many were
    /// damaged (none when the log after the snapshot is empty).
    pub fn damage_tail(&mut self, n: usize) -> usize {
        let n = n.min(self.durable.entries.len());
        if n == 0 {
            return 0;
        }
        let cut = self.durable.entries.len() - n;
        let lost: Vec<Entry> = self.durable.entries.drain(cut..).collect();
        let mut term = self.durable.hard_state.term;
        let mut index = LogIndex(0);
        for e in &lost {
            term = term.max(e.term);
            index = index.max(e.index);
        }
        let last = self.durable.last_index();
        self.durable.hard_state.commit = self.durable.hard_state.commit.min(last);
        self.lose(LostEntries { term, index });
        n
    }

    /// Records a lost-entries bound in the durable hard state, joined with any earlier one.
    fn lose(&mut self, b: LostEntries) {
        let hs = &mut self.durable.hard_state;
        hs.lost = LostEntries::join(hs.lost, Some(b));
    }

    /// Wipes the disk (a node that is replaced by a fresh one with the same id).
    pub fn wipe(&mut self) {
        *self = SimDisk::new();
    }
}

impl LogStorage for SimDisk {
    fn write(&mut self, batch: &WriteBatch) -> io::Result<()> {
        if let Some(f) = &self.failure {
            return Err(io::Error::other(f.clone()));
        }
        self.pending.push_back(Pending::Batch(batch.clone()));
        self.written += 1;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let w = self.written;
        self.sync_through(w)
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        // As the WAL: durable on return, together with everything written before it.
        self.write_snapshot(snapshot)?;
        self.sync()
    }

    fn recover(&mut self) -> io::Result<Boot> {
        Ok(Boot {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
            heard: Default::default(),
        })
    }

    fn last_index(&self) -> LogIndex {
        self.durable.last_index()
    }
}
