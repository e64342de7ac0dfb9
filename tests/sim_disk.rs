//! The simulator's disk honours `storage::LogStorage`'s contract: nothing is durable before a
//! sync, batches (and the node's own snapshots) become durable in order, a crash keeps a prefix
//! of what was written (maybe tearing the batch after it), and `recover` returns exactly the
//! durable state.

use zatt::raft::Boot;
use zatt::rng::Rng;
use zatt::sim::disk::{DiskState, SimDisk};
use zatt::storage::{LogStorage, WriteBatch};
use zatt::types::*;

fn entry(i: u64, t: u64) -> Entry {
    Entry::new(Term(t), LogIndex(i), EntryKind::Normal, &i.to_le_bytes())
}

/// A Raft-like writer: each batch bumps the term now and then and appends, sometimes
/// overwriting a suffix (as a follower does after a conflict).
fn batch(rng: &mut Rng, last: &mut u64, term: &mut u64) -> WriteBatch {
    let mut b = WriteBatch::default();
    if rng.chance(0.3) {
        *term += 1;
        b.hard_state = Some(HardState {
            term: Term(*term),
            vote: Some(NodeId(1)),
            commit: LogIndex(0),
            lost: None,
        });
    }
    let from = if *last > 0 && rng.chance(0.3) {
        rng.between(1, *last)
    } else {
        *last + 1
    };
    let n = rng.between(0, 4);
    for i in from..from + n {
        b.entries.push(entry(i, *term));
    }
    if n > 0 {
        *last = from + n - 1;
    }
    b
}

fn state_of(boot: &Boot) -> (HardState, Option<Snapshot>, Vec<Entry>) {
    (boot.hard_state, boot.snapshot.clone(), boot.entries.clone())
}

fn state_of_model(d: &DiskState) -> (HardState, Option<Snapshot>, Vec<Entry>) {
    (d.hard_state, d.snapshot.clone(), d.entries.clone())
}

/// Every state a crash may leave: the synced state plus a prefix of the pending batches, with
/// the next batch possibly cut after any of its records.
fn crash_outcomes(synced: &DiskState, pending: &[WriteBatch]) -> Vec<DiskState> {
    let mut out = Vec::new();
    let mut s = synced.clone();
    for (k, b) in pending.iter().enumerate() {
        out.push(s.clone());
        let records =
            b.snapshot.is_some() as usize + b.hard_state.is_some() as usize + b.entries.len();
        for cut in 1..records {
            let mut t = s.clone();
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
            part.entries = b.entries[..left.min(b.entries.len())].to_vec();
            t.apply(&part).unwrap();
            out.push(t);
        }
        s.apply(&pending[k]).unwrap();
    }
    out.push(s);
    out
}

// Goal: nothing written is durable before sync; after sync, recover returns exactly the model.
// Method: random batches applied to a model DiskState; compare recover() around each sync.
#[test]
fn recover_returns_exactly_the_synced_state() {
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let mut disk = SimDisk::new();
        let mut model = DiskState::default();
        let (mut last, mut term) = (0, 1);
        for _ in 0..30 {
            let before = state_of(&disk.recover().unwrap());
            let b = batch(&mut rng, &mut last, &mut term);
            disk.write(&b).unwrap();
            assert_eq!(
                state_of(&disk.recover().unwrap()),
                before,
                "durable before sync"
            );
            model.apply(&b).unwrap();
            if rng.chance(0.5) {
                disk.sync().unwrap();
                assert_eq!(state_of(&disk.recover().unwrap()), state_of_model(&model));
                assert_eq!(disk.last_index(), model.last_index());
            }
        }
    }
}

// Goal: a crash keeps a prefix of the written batches, possibly torn, never reordered, never
// less than what was synced. Method: random batches, a random sync point, a crash; the
// recovered state must be one of the prefix states.
#[test]
fn crash_keeps_a_prefix_of_written_batches() {
    let mut torn = 0;
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let mut disk = SimDisk::new();
        let mut synced = DiskState::default();
        let (mut last, mut term) = (0, 1);
        let mut pending = Vec::new();
        for _ in 0..rng.between(1, 12) {
            let b = batch(&mut rng, &mut last, &mut term);
            disk.write(&b).unwrap();
            pending.push(b);
            if rng.chance(0.3) {
                disk.sync().unwrap();
                for b in pending.drain(..) {
                    synced.apply(&b).unwrap();
                }
            }
        }
        let outcomes = crash_outcomes(&synced, &pending);
        disk.crash(&mut rng, true);
        let mut got = state_of(&disk.recover().unwrap());
        // A tear that left damaged bytes also leaves a bound on what they held (the WAL's
        // "Lost entries"): above everything kept, and at least the term kept.
        if let Some(b) = got.0.lost.take() {
            let last = got.2.last().map(|e| (e.term, e.index)).unwrap_or_default();
            assert!(
                b.index > last.1 && b.term >= last.0 && b.term >= got.0.term,
                "seed {seed}: bound {b:?} does not cover what may be lost after {last:?}"
            );
            torn += 1;
        }
        assert!(
            outcomes.iter().any(|o| state_of_model(o) == got),
            "seed {seed}: recovered state is no prefix of the written batches: {got:?}"
        );
    }
    assert!(torn > 0, "no crash tore a write");
}

// Goal: a snapshot replaces the entries it covers and keeps the ones after it; a conflicting
// snapshot (other term at its index) drops the whole log. Method: direct cases.
#[test]
fn snapshot_compacts_the_log_it_covers() {
    let mut disk = SimDisk::new();
    let b = WriteBatch {
        snapshot: None,
        hard_state: Some(HardState {
            term: Term(2),
            vote: None,
            commit: LogIndex(5),
            lost: None,
        }),
        entries: (1..=6).map(|i| entry(i, 2)).collect(),
    };
    disk.write(&b).unwrap();
    disk.sync().unwrap();
    let snap = |i: u64, t: u64| Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(i),
            term: Term(t),
            membership: Membership::default(),
        },
        data: b"state"[..].into(),
    };
    disk.save_snapshot(&snap(4, 2)).unwrap();
    let r = disk.recover().unwrap();
    assert_eq!(r.snapshot.as_ref().unwrap().meta.index, LogIndex(4));
    assert_eq!(
        r.entries.iter().map(|e| e.index.0).collect::<Vec<_>>(),
        vec![5, 6]
    );
    // A leader's snapshot of another history at index 5 replaces everything.
    disk.write(&WriteBatch {
        snapshot: Some(snap(5, 3)),
        hard_state: None,
        entries: vec![],
    })
    .unwrap();
    disk.sync().unwrap();
    let r = disk.recover().unwrap();
    assert_eq!(r.snapshot.unwrap().meta.term, Term(3));
    assert!(r.entries.is_empty());
    assert_eq!(disk.last_index(), LogIndex(5));
}

// Goal: a batch that would leave a gap in the log is refused at sync, not silently stored.
// Method: write entry 3 onto an empty log.
#[test]
fn batch_leaving_a_gap_fails_its_sync() {
    let mut disk = SimDisk::new();
    disk.write(&WriteBatch {
        snapshot: None,
        hard_state: None,
        entries: vec![entry(3, 1)],
    })
    .unwrap();
    assert!(disk.sync().is_err());
    assert!(disk.recover().unwrap().entries.is_empty());
}

// Goal: a snapshot the node took is written like a batch: pending until a sync, durable in
// order with the batches before it, and whole or absent after a crash (never half), so a crash
// before its sync leaves the log it would have compacted. Method: two runs of one sequence, one
// synced before the snapshot's sync, one crashed; many crash seeds.
#[test]
fn an_own_snapshot_is_pending_until_synced_and_kept_whole_or_not_at_all() {
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(3),
            term: Term(1),
            membership: Membership::default(),
        },
        data: b"state"[..].into(),
    };
    let batch = |from: u64, to: u64| WriteBatch {
        snapshot: None,
        hard_state: None,
        entries: (from..=to).map(|i| entry(i, 1)).collect(),
    };
    let mut disk = SimDisk::new();
    disk.write(&batch(1, 4)).unwrap();
    disk.write_snapshot(&snap).unwrap();
    assert_eq!(disk.written(), 2);
    assert!(disk.durable().snapshot.is_none(), "durable before any sync");
    disk.sync_through(1).unwrap();
    assert!(
        disk.durable().snapshot.is_none(),
        "durable before its own sync"
    );
    assert_eq!(disk.durable().last_index(), LogIndex(4));
    disk.sync_through(2).unwrap();
    assert_eq!(disk.durable().snapshot_index(), LogIndex(3));
    assert_eq!(
        disk.durable()
            .entries
            .iter()
            .map(|e| e.index.0)
            .collect::<Vec<_>>(),
        vec![4]
    );
    let (mut kept, mut lost) = (0, 0);
    for seed in 0..200 {
        let mut disk = SimDisk::new();
        disk.write(&batch(1, 4)).unwrap();
        disk.sync().unwrap();
        disk.write_snapshot(&snap).unwrap();
        disk.write(&batch(5, 5)).unwrap();
        disk.crash(&mut Rng::new(seed), true);
        let d = disk.durable();
        match &d.snapshot {
            Some(s) => {
                kept += 1;
                assert_eq!(s, &snap);
                assert_eq!(d.entries.first().map(|e| e.index), Some(LogIndex(4)));
            }
            None => {
                lost += 1;
                assert_eq!(
                    d.entries.len(),
                    4,
                    "seed {seed}: the log is whole without the snapshot"
                );
                assert_eq!(
                    d.last_index(),
                    LogIndex(4),
                    "seed {seed}: a batch after it kept"
                );
            }
        }
    }
    assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");
}
