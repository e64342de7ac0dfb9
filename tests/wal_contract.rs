//! The `LogStorage` contract (src/storage.rs rules) checked on the real WAL against a plain
//! in-memory model of those rules: seeded random sequences of appends, conflicting suffixes,
//! hard-state changes, installed and local snapshots, with restarts; after every restart the
//! recovered `Boot` must equal the model exactly.

use std::fs;
use std::sync::Arc;
use zatt::storage::{LogStorage, WriteBatch};
use zatt::types::*;
use zatt::wal::{Wal, WalOptions};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

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

fn entry(i: u64, t: u64, rng: &mut Rng) -> Entry {
    let len = rng.below(200) as usize;
    let data: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
    Entry::new(Term(t), LogIndex(i), EntryKind::Normal, &data)
}

fn snapshot(i: u64, t: Term, rng: &mut Rng) -> Snapshot {
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
        data: Arc::from(vec![i as u8; rng.below(3000) as usize]),
    }
}

#[test]
fn wal_recovers_exactly_what_the_storage_rules_say() {
    // Goal: Wal honours storage.rs. Method: 6 seeds × 300 random operations on small
    // segments, restarting at random; compare every recovered Boot with the model.
    // ZATT_WAL_CONTRACT_SEEDS allows a longer run by hand.
    let seeds: u64 = std::env::var("ZATT_WAL_CONTRACT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 1..=seeds {
        let dir =
            std::env::temp_dir().join(format!("zatt-walcontract-{}-{seed}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let opts = WalOptions {
            segment_bytes: 4096,
            preallocate: seed % 2 == 0,
            ..WalOptions::default()
        };
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
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
                    let i =
                        model.snap_index() + 1 + rng.below(model.last() - model.snap_index() + 5);
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
                        let i =
                            model.snap_index() + 1 + rng.below(model.last() - model.snap_index());
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
                wal.write(&b).unwrap();
                wal.sync().unwrap();
                model.apply(&b);
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
}
