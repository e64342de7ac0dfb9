//! The `LogStorage` contract (src/storage.rs rules) checked on the real WAL against a plain
//! in-memory model of those rules: seeded random sequences of appends, conflicting suffixes,
//! hard-state changes, installed and local snapshots, with restarts; after every restart the
//! recovered `Boot` must equal the model exactly.

use std::fs;
use zatt::rng::SplitMix64;
use zatt::storage::{LogStorage, WriteBatch};
use zatt::types::*;
use zatt::wal::{Wal, WalOptions};

/// The storage rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    hs: HardState,
    snap: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Model {
    fn snap_index(&self) -> u64 {
        self.snap.as_ref().map_or(0, |s| s.meta.index.0)
    }
    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snap_index(), |e| e.index.0)
    }
    fn term_at(&self, i: u64) -> Option<Term> {
        self.entries.iter().find(|e| e.index.0 == i).map(|e| e.term)
    }
    fn apply(&mut self, b: &WriteBatch) {
        if let Some(s) = &b.snapshot {
            self.apply_snapshot(s);
        }
        if let Some(h) = b.hard_state {
            self.hs = h;
        }
        if let Some(f) = b.entries.first() {
            self.entries.retain(|e| e.index < f.index);
            self.entries.extend(b.entries.iter().cloned());
        }
    }
    fn apply_snapshot(&mut self, s: &Snapshot) {
        let (i, t) = (s.meta.index, s.meta.term);
        if self.term_at(i.0) == Some(t) {
            self.entries.retain(|e| e.index > i);
        } else {
            self.entries.clear();
        }
        self.snap = Some(s.clone());
    }
}

fn entry(i: u64, t: u64, rng: &mut SplitMix64) -> Entry {
    let len = rng.below(200) as usize;
    let data: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
    Entry::new(Term(t), LogIndex(i), EntryKind::Normal, &data)
}

fn snapshot(i: u64, t: Term, rng: &mut SplitMix64) -> Snapshot {
    let mut m = Membership::default();
    m.members.insert(
        NodeId(1 + rng.below(3)),
        Member {
            role: MemberRole::Voter,
            addr: "127.0.0.1:5254".into(),
        },
    );
    Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(i),
            term: t,
            membership: m,
        },
        data: vec![i as u8; rng.below(3000) as usize].into(),
    }
}

#[test]
fn wal_recovers_exactly_what_the_storage_rules_say() {
    // Goal: Wal honours storage.rs. Method: 6 seeds × 300 random operations on small
    // segments, restarting at random; compare every recovered Boot with the model.
    // ZATT_WAL_CONTRACT_SEEDS allows a longer run by hand.
    for seed in 1..=seeds_to_run() {
        run_seed(seed, false);
    }
}

#[test]
fn wal_recovers_a_prefix_of_a_batch_cut_by_a_crash() {
    // Goal: a crash keeps a prefix (storage.rs): after a batch's bytes are cut at a random
    // byte, recovery gives the state before it, or that state with the batch's truncation
    // and a prefix of its entries. Method: the random history above, where one batch in five
    // (without a snapshot) is cut and the model continues from what was recovered.
    for seed in 101..=100 + seeds_to_run() {
        run_seed(seed, true);
    }
}

fn seeds_to_run() -> u64 {
    std::env::var("ZATT_WAL_CONTRACT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

fn run_seed(seed: u64, crash: bool) {
    let dir = std::env::temp_dir().join(format!("zatt-walcontract-{}-{seed}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // Removes the directory however the seed ends (a failing assertion included).
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let opts = WalOptions {
        segment_bytes: 4096,
        preallocate: !crash && seed % 2 == 0,
        ..WalOptions::default()
    };
    let mut rng = SplitMix64(seed);
    let mut model = Model::default();
    let (mut wal, _) = Wal::open(&dir, opts.clone()).unwrap();
    let mut term = 1u64;
    for step in 0..300 {
        let mut b = WriteBatch::default();
        match rng.below(10) {
            0..=4 => {
                let from = model.last() + 1;
                for i in from..from + 1 + rng.below(20) {
                    b.entries.push(entry(i, term, &mut rng));
                }
            }
            5 => {
                // A conflicting suffix from a new leader's term.
                let lo = model.snap_index() + 1;
                if model.last() >= lo {
                    term += 1;
                    let from = lo + rng.below(model.last() - lo + 1);
                    for i in from..from + 1 + rng.below(5) {
                        b.entries.push(entry(i, term, &mut rng));
                    }
                }
            }
            6 => {
                term += rng.below(2);
                b.hard_state = Some(HardState {
                    term: Term(term),
                    vote: if rng.below(2) == 0 {
                        None
                    } else {
                        Some(NodeId(1 + rng.below(3)))
                    },
                    commit: LogIndex(model.hs.commit.0.max(model.snap_index())),
                    lost: None,
                });
                if let Some(h) = b.hard_state {
                    if h.term == model.hs.term && model.hs.vote.is_some() {
                        b.hard_state = Some(HardState {
                            vote: model.hs.vote,
                            ..h
                        });
                    }
                }
            }
            7 => {
                // An installed snapshot, sometimes past the log, sometimes conflicting.
                let i = model.snap_index() + 1 + rng.below(model.last() - model.snap_index() + 5);
                let t = match model.term_at(i) {
                    Some(t) if rng.below(2) == 0 => t,
                    _ => {
                        term += 1;
                        Term(term)
                    }
                };
                b.snapshot = Some(snapshot(i, t, &mut rng));
                if rng.below(2) == 0 {
                    let from = if model.term_at(i) == Some(t) {
                        model.last().max(i) + 1
                    } else {
                        i + 1
                    };
                    b.entries.push(entry(from, term, &mut rng));
                }
            }
            8 => {
                // A local snapshot (compaction).
                if model.last() > model.snap_index() {
                    let i = model.snap_index() + 1 + rng.below(model.last() - model.snap_index());
                    let t = model.term_at(i).unwrap();
                    let s = snapshot(i, t, &mut rng);
                    if std::env::var_os("WAL_CONTRACT_TRACE").is_some() {
                        eprintln!(
                            "step {step}: local snapshot {i} {t:?} (log {}..{})",
                            model.snap_index(),
                            model.last()
                        );
                    }
                    wal.save_snapshot(&s).unwrap();
                    model.apply_snapshot(&s);
                }
            }
            _ => {
                drop(wal);
                let (w, boot) = Wal::open(&dir, opts.clone()).unwrap();
                wal = w;
                let want_hs = HardState {
                    commit: model.hs.commit.max(LogIndex(model.snap_index())),
                    ..model.hs
                };
                assert_eq!(boot.hard_state, want_hs, "seed {seed} step {step}");
                assert_eq!(boot.snapshot, model.snap, "seed {seed} step {step}");
                assert_eq!(boot.entries, model.entries, "seed {seed} step {step}");
                continue;
            }
        }
        if std::env::var_os("WAL_CONTRACT_TRACE").is_some() {
            eprintln!(
                "step {step}: snap {:?} hs {:?} entries {:?}..{:?} segs {}",
                b.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
                b.hard_state,
                b.entries.first(),
                b.entries.last(),
                wal.segment_count()
            );
        }
        if !b.is_empty() {
            let cut_it = crash && b.snapshot.is_none() && rng.below(5) == 0;
            let before_path = wal.current_segment_path().to_path_buf();
            let before_len = fs::metadata(&before_path).unwrap().len();
            wal.write(&b).unwrap();
            wal.sync().unwrap();
            if cut_it {
                let path = wal.current_segment_path().to_path_buf();
                drop(wal);
                let from = if path == before_path { before_len } else { 32 };
                let len = fs::metadata(&path).unwrap().len();
                let cut = from + rng.below(len - from + 1);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                let (w, boot) = Wal::open(&dir, opts.clone()).unwrap();
                wal = w;
                check_prefix(
                    &model,
                    &b,
                    &boot,
                    &format!("seed {seed} step {step} cut {cut}"),
                );
                model = Model {
                    hs: boot.hard_state,
                    snap: boot.snapshot,
                    entries: boot.entries,
                };
            } else {
                model.apply(&b);
            }
        }
        assert_eq!(
            wal.last_index(),
            LogIndex(model.last()),
            "seed {seed} step {step}"
        );
    }
    drop(wal);
    let (_, boot) = Wal::open(&dir, opts).unwrap();
    assert_eq!(boot.entries, model.entries, "seed {seed} at the end");
    let _ = fs::remove_dir_all(&dir);
}

/// The states a crash may leave after `b` was cut: before it, or its truncation and a prefix
/// of its entries (records are written in that order; hard state last).
fn check_prefix(before: &Model, b: &WriteBatch, boot: &zatt::raft::Boot, what: &str) {
    assert_eq!(boot.snapshot, before.snap, "{what}");
    let mut ok = boot.entries == before.entries;
    if let Some(first) = b.entries.first() {
        let mut cand: Vec<Entry> = before
            .entries
            .iter()
            .filter(|e| e.index < first.index)
            .cloned()
            .collect();
        for k in 0..=b.entries.len() {
            if k > 0 {
                cand.push(b.entries[k - 1].clone());
            }
            ok |= boot.entries == cand;
        }
    }
    assert!(
        ok,
        "{what}: recovered {:?}..{:?} is not a prefix",
        boot.entries.first(),
        boot.entries.last()
    );
    let terms = [
        before.hs.term,
        b.hard_state.map_or(before.hs.term, |h| h.term),
    ];
    assert!(
        terms.contains(&boot.hard_state.term),
        "{what}: term {:?}",
        boot.hard_state.term
    );
}
