//! Recovery of the write-ahead log after crashes and damage: the crash matrix (cuts at every
//! byte, zeroed sectors, bit flips, garbage), crash-safe truncation, restart, compaction,
//! the directory lock, and random bytes as every kind of file. Each case must end recovered
//! with a prefix of what was written or refused with a named reason; never a panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use zatt::raft::Boot;
use zatt::rng::SplitMix64;
use zatt::storage::{LogStorage, WriteBatch};
use zatt::types::*;
use zatt::wal::{Wal, WalError, WalOptions};

const SEG: &str = "0000000000000001.wal";
const SEG_HEADER: usize = 32;
const REC_HEADER: usize = 28;

/// A scratch directory on the same disk as the repository's temp dir, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "zatt-wal-{}-{}-{}",
            std::process::id(),
            name,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64, term: u64, len: usize) -> Entry {
    let data: Vec<u8> = (0..len).map(|k| (index as usize * 31 + k) as u8).collect();
    Entry::new(Term(term), LogIndex(index), EntryKind::Normal, &data)
}

fn opts_plain() -> WalOptions {
    WalOptions {
        preallocate: false,
        ..WalOptions::default()
    }
}

fn batch(entries: Vec<Entry>) -> WriteBatch {
    WriteBatch {
        snapshot: None,
        hard_state: None,
        entries,
    }
}

fn membership() -> Membership {
    let mut m = Membership::default();
    m.members.insert(
        NodeId(1),
        Member {
            role: MemberRole::Voter,
            addr: "127.0.0.1:5254".into(),
        },
    );
    m
}

fn snapshot(index: u64, term: u64, len: usize) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            membership: membership(),
        },
        data: (0..len).map(|k| k as u8).collect::<Vec<u8>>().into(),
    }
}

/// Writes `n` entries of `len` bytes in batches of `per_batch`, syncing each batch. Returns
/// the entries and, for each, the segment offset just past its record.
fn write_log(
    dir: &Path,
    opts: WalOptions,
    n: u64,
    len: usize,
    per_batch: u64,
) -> (Vec<Entry>, Vec<usize>) {
    let (mut wal, boot) = Wal::open(dir, opts).unwrap();
    assert!(boot.entries.is_empty());
    let mut all = Vec::new();
    let mut ends = Vec::new();
    let mut off = SEG_HEADER;
    let mut i = 1;
    while i <= n {
        let mut b = Vec::new();
        while i <= n && (b.len() as u64) < per_batch {
            b.push(entry(i, 1 + i / 100, len));
            off += REC_HEADER + len;
            ends.push(off);
            i += 1;
        }
        all.extend(b.iter().cloned());
        wal.write(&batch(b)).unwrap();
        wal.sync().unwrap();
    }
    (all, ends)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            overwrite(&to.join(e.file_name()), &fs::read(e.path()).unwrap());
        }
    }
}

/// Replaces a file's contents in place. Truncating and rewriting (fs::write, fs::copy) frees
/// and reallocates blocks, which on this machine's `discard` mount costs a TRIM each time:
/// seconds over a matrix of thousands of cases.
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
}

/// Recovers `dir` read-only (`Wal::inspect`); every 61st call also through `Wal::open`
/// (which repairs a torn tail) and checks both agree, so the repair path is exercised
/// without paying its fsyncs on every case of a matrix.
fn recover(dir: &Path) -> Result<Boot, WalError> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let r = Wal::inspect(dir, &opts_plain());
    if CALLS.fetch_add(1, Ordering::Relaxed) % 61 == 0 {
        let o = Wal::open(dir, opts_plain()).map(|(_, b)| b);
        match (&r, &o) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.entries, b.entries);
                assert_eq!(a.hard_state, b.hard_state);
                assert_eq!(a.snapshot, b.snapshot);
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!(
                "inspect and open disagree: {:?} / {:?}",
                r.as_ref().err(),
                o.as_ref().err()
            ),
        }
        // After open's repair, the directory recovers the same again.
        if let Ok(b) = o {
            let again = Wal::inspect(dir, &opts_plain()).unwrap();
            assert_eq!(again.entries, b.entries);
        }
    }
    r
}

/// Recovers a copy of `src` whose segment is replaced by `seg_bytes`. The copy is made once
/// per `name` and thread, then only the files are rewritten (a matrix has thousands of cases).
fn recover_with_segment(src: &Path, seg_bytes: &[u8], name: &str) -> Result<Boot, WalError> {
    thread_local! {
        static WORK: std::cell::RefCell<Vec<(String, TempDir)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dir = WORK.with(|w| {
        let mut w = w.borrow_mut();
        if let Some((_, t)) = w.iter().find(|(n, _)| n == name) {
            return t.path().to_path_buf();
        }
        let t = TempDir::new(name);
        let p = t.path().to_path_buf();
        w.push((name.to_string(), t));
        p
    });
    copy_dir(src, &dir);
    overwrite(&dir.join(SEG), seg_bytes);
    recover(&dir)
}

fn complete_records(ends: &[usize], cut: usize) -> usize {
    ends.iter().take_while(|&&e| e <= cut).count()
}

#[test]
fn restart_returns_hard_state_snapshot_and_entries() {
    // Goal: everything synced comes back. Method: write hard state, entries and a snapshot, reopen.
    let d = TempDir::new("restart");
    let hs = HardState {
        term: Term(3),
        vote: Some(NodeId(2)),
        commit: LogIndex(40),
        lost: None,
    };
    {
        let (mut wal, _) = Wal::open(d.path(), WalOptions::default()).unwrap();
        let entries: Vec<Entry> = (1..=60).map(|i| entry(i, 1 + i / 20, 50)).collect();
        wal.write(&WriteBatch {
            snapshot: None,
            hard_state: Some(hs),
            entries,
        })
        .unwrap();
        wal.sync().unwrap();
        wal.save_snapshot(&snapshot(30, 2, 1000)).unwrap();
        assert_eq!(wal.last_index(), LogIndex(60));
    }
    let (mut wal, boot) = Wal::open(d.path(), WalOptions::default()).unwrap();
    assert_eq!(boot.hard_state, hs);
    assert_eq!(boot.snapshot, Some(snapshot(30, 2, 1000)));
    let want: Vec<Entry> = (31..=60).map(|i| entry(i, 1 + i / 20, 50)).collect();
    assert_eq!(boot.entries, want);
    // recover() agrees with open().
    let again = wal.recover().unwrap();
    assert_eq!(again.entries, want);
    assert_eq!(again.hard_state, hs);
}

#[test]
fn a_stored_snapshot_leaves_memory_for_its_file_and_comes_back_from_it() {
    // Goal: once storage has a snapshot, its bytes are read from the file by every holder (the
    // core keeps one to send to followers), and recovery hands back the bytes it read and
    // checked, which go back to their file once the host has restored from them: a server
    // keeps no copy of its dictionary's bytes in memory for longer. Method: save a snapshot,
    // check a clone taken before is no longer in memory and still reads the same bytes (also
    // after a newer snapshot deleted its file); reopen, and check the same after
    // `leave_in_file`.
    let d = TempDir::new("spill");
    let (mut wal, _) = Wal::open(d.path(), WalOptions::default()).unwrap();
    let entries: Vec<Entry> = (1..=40).map(|i| entry(i, 1, 20)).collect();
    wal.write(&batch(entries)).unwrap();
    wal.sync().unwrap();
    let first = snapshot(20, 1, 5000);
    let kept = first.clone();
    assert!(kept.data.in_memory());
    wal.save_snapshot(&first).unwrap();
    assert!(
        !kept.data.in_memory(),
        "the stored snapshot still holds its bytes in memory"
    );
    assert_eq!(kept, snapshot(20, 1, 5000));
    let second = snapshot(30, 1, 7000);
    wal.save_snapshot(&second).unwrap();
    assert_eq!(
        kept.data.read(1000..1010).unwrap(),
        (1000..1010).map(|k| k as u8).collect::<Vec<u8>>()
    );
    drop(wal);
    let (_wal, boot) = Wal::open(d.path(), WalOptions::default()).unwrap();
    let got = boot.snapshot.unwrap();
    assert!(
        got.data.in_memory(),
        "read once, for the host to restore from"
    );
    assert_eq!(got, snapshot(30, 1, 7000));
    got.data.leave_in_file();
    assert!(!got.data.in_memory());
    assert_eq!(got, snapshot(30, 1, 7000));
}

#[test]
fn commit_only_hard_state_changes_survive_restart() {
    // Goal: commit-only changes (kept in log records, not the files) are recovered and never
    // go backwards. Method: change term once, then commit many times; reopen.
    let d = TempDir::new("commit");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        for i in 1..=20u64 {
            wal.write(&WriteBatch {
                snapshot: None,
                hard_state: Some(HardState {
                    term: Term(2),
                    vote: Some(NodeId(1)),
                    commit: LogIndex(i - 1),
                    lost: None,
                }),
                entries: vec![entry(i, 2, 10)],
            })
            .unwrap();
            wal.sync().unwrap();
        }
    }
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(
        boot.hard_state,
        HardState {
            term: Term(2),
            vote: Some(NodeId(1)),
            commit: LogIndex(19),
            lost: None,
        }
    );
    assert_eq!(boot.entries.len(), 20);
}

#[test]
fn cut_at_every_byte_of_the_last_records_recovers_the_complete_prefix() {
    // Goal: a torn tail is truncated, never refused. Method: a log of 300 records; cut the
    // segment at every byte offset of the last 3 records; also with zeros after the cut
    // (preallocated space). Recovery must return exactly the records complete before the cut.
    let d = TempDir::new("cut");
    let (all, ends) = write_log(d.path(), opts_plain(), 300, 40, 7);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    assert_eq!(seg.len(), *ends.last().unwrap());
    let from = ends[ends.len() - 4];
    for cut in from..=seg.len() {
        let n = complete_records(&ends, cut);
        // The bytes of a partly written record count as damage (they may have been synced and
        // acknowledged); bytes that are all zero cannot be told from preallocated space.
        let partial = seg[ends[n - 1]..cut].iter().any(|&b| b != 0);
        let boot = recover_with_segment(d.path(), &seg[..cut], "cut1").unwrap();
        assert_eq!(boot.entries, all[..n], "cut at {cut}");
        check_lost_bound(&boot, &all, n, partial, cut);
        let mut z = seg[..cut].to_vec();
        z.resize(seg.len() + 4096, 0);
        let boot = recover_with_segment(d.path(), &z, "cut2").unwrap();
        assert_eq!(boot.entries, all[..n], "cut at {cut} then zeros");
        check_lost_bound(&boot, &all, n, partial, cut);
    }
}

/// After a cut keeping `n` of `all`: a bound exactly when damaged bytes were discarded, and
/// then one whose index covers the first discarded entry, without being absurd. (Its term comes
/// from the hard-state files, which hold a term before any entry of it is written; `write_log`
/// writes entries alone, so only the index is checked here.)
fn check_lost_bound(boot: &Boot, all: &[Entry], n: usize, partial: bool, cut: usize) {
    match (boot.hard_state.lost, partial) {
        (None, false) => {}
        (Some(b), true) => {
            let first_lost = &all[n];
            assert!(
                b.index >= first_lost.index && b.term >= all[n - 1].term,
                "cut at {cut}: bound {b:?} does not cover {first_lost:?}"
            );
            assert!(
                b.index.0 <= all.len() as u64 + 2,
                "cut at {cut}: bound {b:?}"
            );
        }
        (got, _) => panic!("cut at {cut}: bound {got:?} with damaged bytes {partial}"),
    }
}

#[test]
fn lost_entries_bound_is_durable_before_the_tail_is_cut_and_cleared_by_a_hard_state() {
    // Goal: the bound recovery derives from a torn tail survives the repair that removes the
    // evidence (a second restart still has it), joins with a later one, and goes only when a
    // hard state without it is written.
    // Method: tear the last record, open (repairs), reopen; tear again; write a hard state.
    let d = TempDir::new("lostbound");
    let (all, ends) = write_log(d.path(), opts_plain(), 40, 40, 5);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    overwrite(&d.path().join(SEG), &seg[..ends[38] + 10]);
    let first = {
        let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
        assert_eq!(boot.entries, all[..39]);
        boot.hard_state.lost.expect("a bound after a torn tail")
    };
    assert!(first.index >= LogIndex(40));
    let (mut wal, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(
        boot.hard_state.lost,
        Some(first),
        "the bound outlives the repair"
    );
    // More entries, a torn write again further on: the bound moves up to cover both.
    wal.write(&batch((40..=45).map(|i| entry(i, 1, 40)).collect()))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let end = seg.iter().rposition(|&b| b != 0).unwrap() + 1;
    overwrite(&d.path().join(SEG), &seg[..end - 20]);
    let (mut wal, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    let second = boot.hard_state.lost.expect("still bounded");
    assert!(second.index >= LogIndex(45) && second.index > first.index);
    assert_eq!(
        Wal::inspect(d.path(), &opts_plain())
            .err()
            .map(|e| e.to_string()),
        None
    );
    // The core clears it through an ordinary hard state.
    wal.write(&WriteBatch {
        hard_state: Some(HardState {
            lost: None,
            ..boot.hard_state
        }),
        ..WriteBatch::default()
    })
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(boot.hard_state.lost, None);
}

#[test]
fn hard_state_files_of_the_first_layout_are_read() {
    // Goal: a data directory written before the lost-entries bound existed still opens.
    // Method: a 40-byte `ZHS1` copy built by hand decodes to the same hard state, no bound.
    use zatt::wal::format::decode_hard_state;
    let mut b = Vec::new();
    b.extend_from_slice(b"ZHS1");
    for v in [7u64, 3, 2, 11] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let (seq, hs) = decode_hard_state(&b).unwrap();
    assert_eq!(seq, 7);
    assert_eq!(
        hs,
        HardState {
            term: Term(3),
            vote: Some(NodeId(2)),
            commit: LogIndex(11),
            lost: None,
        }
    );
    b[5] ^= 1;
    assert!(decode_hard_state(&b).is_err());
}

#[test]
fn zeroed_last_sectors_recover_the_records_before_them() {
    // Goal: lost (zeroed) trailing sectors are a torn tail. Method: zero the last 1..=8
    // 512-byte sectors of a 300-record segment; expect the records that end before the zeros.
    let d = TempDir::new("zero");
    let (all, ends) = write_log(d.path(), opts_plain(), 300, 40, 16);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    for sectors in 1..=8usize {
        let zero_from = (seg.len() / 512 - sectors + 1) * 512;
        let zero_from = zero_from.min(seg.len()).max(SEG_HEADER);
        let mut z = seg.clone();
        for b in &mut z[zero_from..] {
            *b = 0;
        }
        let n = complete_records(&ends, zero_from);
        let boot = recover_with_segment(d.path(), &z, "zero").unwrap();
        assert_eq!(
            boot.entries,
            all[..n],
            "{sectors} sectors zeroed from {zero_from}"
        );
    }
    // A zeroed sector in the middle, with good records after it, is corruption.
    let mut z = seg.clone();
    for b in &mut z[1024..1536] {
        *b = 0;
    }
    match recover_with_segment(d.path(), &z, "zero-mid") {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert!(file.ends_with(SEG));
            assert!(offset <= 1024 && offset as usize >= 1024 - REC_HEADER - 40);
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|b| b.entries.len())),
    }
}

#[test]
fn zero_filled_segments_end_at_their_zeros_and_a_damaged_record_is_still_bounded() {
    // Goal: segments as the server makes them (preallocated, written with zeros, the next one
    // prepared ahead on a helper thread) recover exactly what was synced: the written zeros
    // after the last record are the segment's end, not damage (no lost-entries bound, which
    // would cost the server its vote), and a damaged record that was synced, and so may have
    // been acknowledged, still yields a bound covering it. Method: 4 KiB segments; write and
    // sync 100 entries of 100 B in batches of 4 (several rolls, each after a spare was
    // prepared); check every segment is zero-filled to its full size; reopen; then flip a
    // byte of the last record and reopen again.
    let d = TempDir::new("zerofill");
    let opts = WalOptions {
        segment_bytes: 4096,
        preallocate: true,
        ..WalOptions::default()
    };
    let all: Vec<Entry> = (1..=100).map(|i| entry(i, 1, 100)).collect();
    {
        let (mut wal, boot) = Wal::open(d.path(), opts.clone()).unwrap();
        assert!(boot.entries.is_empty());
        for b in all.chunks(4) {
            wal.write(&batch(b.to_vec())).unwrap();
            wal.sync().unwrap();
        }
        assert!(wal.segment_count() >= 3, "{} segments", wal.segment_count());
    }
    let segs = wal_files(d.path());
    let last = segs.last().unwrap().clone();
    let bytes = fs::read(&last).unwrap();
    assert_eq!(bytes.len(), 4096, "the last segment is preallocated");
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(end < 4096 - 128, "no room left after the last record");
    for p in &segs[..segs.len() - 1] {
        assert!(fs::metadata(p).unwrap().len() >= 4096);
    }
    let (_, boot) = Wal::open(d.path(), opts.clone()).unwrap();
    assert_eq!(boot.entries, all, "written zeros read as the segment's end");
    assert_eq!(boot.hard_state.lost, None, "zeros are no damage");
    assert!(
        !fs::read_dir(d.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a segment prepared ahead and never used is removed at open"
    );
    // A byte of the last (synced, perhaps acknowledged) record damaged: a torn tail, and a
    // bound that covers the entry it held.
    let mut damaged = bytes.clone();
    damaged[end - 3] ^= 0x40;
    overwrite(&last, &damaged);
    let (mut wal, boot) = Wal::open(d.path(), opts.clone()).unwrap();
    assert_eq!(boot.entries, all[..99]);
    let bound = boot
        .hard_state
        .lost
        .expect("a bound for the damaged record");
    assert!(bound.index >= LogIndex(100), "{bound:?}");
    // Appends continue in the repaired segment and come back after another restart.
    wal.write(&batch(vec![entry(100, 1, 100)])).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, boot) = Wal::open(d.path(), opts).unwrap();
    assert_eq!(boot.entries, all);
    assert_eq!(boot.hard_state.lost, Some(bound), "the bound is kept");
}

#[test]
fn every_bit_flip_in_a_small_log_is_a_torn_tail_or_named_corruption() {
    // Goal: a flipped bit in the last record is a torn tail; anywhere else it is corruption
    // naming the file. Method: a 5-record log; flip each bit in turn and recover.
    let d = TempDir::new("flip");
    let (all, ends) = write_log(d.path(), opts_plain(), 5, 12, 2);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let last_start = ends[ends.len() - 2];
    for bit in 0..seg.len() * 8 {
        let mut f = seg.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        let r = recover_with_segment(d.path(), &f, "flip");
        if bit / 8 >= last_start {
            let boot = r.unwrap_or_else(|e| panic!("bit {bit}: {e}"));
            assert_eq!(boot.entries, all[..4], "bit {bit}");
        } else {
            match r {
                Err(WalError::Corrupt { file, .. }) => assert!(file.ends_with(SEG), "bit {bit}"),
                Err(e) => panic!("bit {bit}: unexpected error {e}"),
                Ok(b) => panic!(
                    "bit {bit}: recovered {} entries from a damaged log",
                    b.entries.len()
                ),
            }
        }
    }
}

#[test]
fn every_bit_flip_in_a_snapshot_file_is_refused() {
    // Goal: a snapshot the log refers to but that is damaged refuses start. Method: flip each
    // bit of a small snapshot file.
    let d = TempDir::new("snapflip");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&batch((1..=5).map(|i| entry(i, 1, 10)).collect()))
            .unwrap();
        wal.sync().unwrap();
        wal.save_snapshot(&snapshot(4, 1, 16)).unwrap();
    }
    let name = "snap-0000000000000004-0000000000000001.snap";
    let bytes = fs::read(d.path().join(name)).unwrap();
    let t = TempDir::new("snapflip1");
    for bit in 0..bytes.len() * 8 {
        copy_dir(d.path(), t.path());
        let mut f = bytes.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        overwrite(&t.path().join(name), &f);
        match recover(t.path()) {
            Err(WalError::Corrupt { file, .. }) => assert!(file.ends_with(name), "bit {bit}"),
            Err(e) => panic!("bit {bit}: {e}"),
            Ok(_) => panic!("bit {bit}: a damaged snapshot was accepted"),
        }
    }
    // Missing altogether: refused too.
    let t = TempDir::new("snapgone");
    copy_dir(d.path(), t.path());
    fs::remove_file(t.path().join(name)).unwrap();
    let e = Wal::open(t.path(), opts_plain()).err().expect("refused");
    assert_eq!(e.exit_code(), 65);
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn a_torn_hard_state_write_keeps_the_previous_value() {
    // Goal: damaging the newest hard-state copy (a torn rewrite) falls back to the previous one.
    // Method: two term changes; flip every bit of the newest copy; expect the older value.
    let d = TempDir::new("hs");
    let hs1 = HardState {
        term: Term(5),
        vote: Some(NodeId(3)),
        commit: LogIndex(0),
        lost: None,
    };
    let hs2 = HardState {
        term: Term(6),
        vote: None,
        commit: LogIndex(0),
        lost: None,
    };
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        for hs in [hs1, hs2] {
            wal.write(&WriteBatch {
                hard_state: Some(hs),
                ..WriteBatch::default()
            })
            .unwrap();
            wal.sync().unwrap();
        }
    }
    // Drop the log's copies of the hard state, leaving the files as the only source.
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let mut empty = seg[..SEG_HEADER].to_vec();
    empty.resize(seg.len(), 0);
    let a = fs::read(d.path().join("hardstate.0")).unwrap();
    let b = fs::read(d.path().join("hardstate.1")).unwrap();
    let seq = |x: &[u8]| u64::from_le_bytes(x[4..12].try_into().unwrap());
    let newest = if seq(&a) > seq(&b) {
        "hardstate.0"
    } else {
        "hardstate.1"
    };
    let bytes = fs::read(d.path().join(newest)).unwrap();
    {
        let boot = recover_with_segment(d.path(), &empty, "hs0").unwrap();
        assert_eq!(boot.hard_state, hs2);
    }
    let t = TempDir::new("hs1");
    for bit in 0..bytes.len() * 8 {
        copy_dir(d.path(), t.path());
        overwrite(&t.path().join(SEG), &empty);
        let mut f = bytes.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        overwrite(&t.path().join(newest), &f);
        let boot = recover(t.path()).unwrap();
        assert_eq!(boot.hard_state, hs1, "bit {bit}");
    }
    // Cut short at every length: same.
    let t = TempDir::new("hs2");
    for cut in 0..bytes.len() {
        copy_dir(d.path(), t.path());
        overwrite(&t.path().join(SEG), &empty);
        overwrite(&t.path().join(newest), &bytes[..cut]);
        let boot = recover(t.path()).unwrap();
        assert_eq!(boot.hard_state, hs1, "cut {cut}");
    }
}

#[test]
fn garbage_after_the_log_is_cut_and_appends_continue() {
    // Goal: random bytes after the last record are a torn tail, cut off for good. Method: append
    // garbage, recover, append more, recover again.
    let d = TempDir::new("garbage");
    let (all, _) = write_log(d.path(), opts_plain(), 50, 30, 5);
    let mut seg = fs::read(d.path().join(SEG)).unwrap();
    seg.extend(SplitMix64(0x9E37_79B9_7F4A_7C15).bytes(3000));
    fs::write(d.path().join(SEG), &seg).unwrap();
    {
        let (mut wal, boot) = Wal::open(d.path(), opts_plain()).unwrap();
        assert_eq!(boot.entries, all);
        wal.write(&batch(vec![entry(51, 1, 30), entry(52, 1, 30)]))
            .unwrap();
        wal.sync().unwrap();
    }
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(boot.entries.len(), 52);
    assert_eq!(boot.entries[51], entry(52, 1, 30));
}

#[test]
fn index_gap_or_backwards_index_is_refused() {
    // Goal: records that are individually valid but break contiguity are corruption.
    // Method: splice a record out (gap) and duplicate one (backwards).
    let d = TempDir::new("gap");
    let (_, ends) = write_log(d.path(), opts_plain(), 10, 20, 10);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let mut gap = seg[..ends[3]].to_vec();
    gap.extend_from_slice(&seg[ends[4]..]);
    let e = recover_with_segment(d.path(), &gap, "gap").expect_err("gap refused");
    assert!(e.to_string().contains("gap"), "{e}");
    let mut back = seg[..ends[5]].to_vec();
    back.extend_from_slice(&seg[ends[3]..]);
    let e = recover_with_segment(d.path(), &back, "back").expect_err("backwards refused");
    assert!(e.to_string().contains("backwards"), "{e}");
    assert_eq!(e.exit_code(), 65);
}

/// Writes 1..=100 at term 1 (synced), then a conflicting suffix from `from` at term 2
/// (synced). Returns the directory and the byte length of the log before the second write.
fn truncation_setup(name: &str, opts: WalOptions, from: u64) -> (TempDir, Vec<Entry>, Vec<Entry>) {
    let d = TempDir::new(name);
    let old: Vec<Entry> = (1..=100).map(|i| entry(i, 1, 40)).collect();
    let new: Vec<Entry> = (from..from + 10).map(|i| entry(i, 2, 41)).collect();
    let (mut wal, _) = Wal::open(d.path(), opts).unwrap();
    for c in old.chunks(10) {
        wal.write(&batch(c.to_vec())).unwrap();
        wal.sync().unwrap();
    }
    wal.write(&batch(new.clone())).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), LogIndex(from + 9));
    (d, old, new)
}

#[test]
fn truncated_suffix_never_comes_back_after_a_crash_at_any_byte() {
    // Goal: crash-safe truncation. Method: after replacing entries 50.. with term-2 entries,
    // cut the last segment at every byte of the replacing write; recovery must give either
    // the old log (truncation not durable) or 1..49 plus a prefix of the new entries.
    let (d, old, new) = truncation_setup("trunc", opts_plain(), 50);
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let before = SEG_HEADER + 100 * (REC_HEADER + 40);
    let trunc_end = before + REC_HEADER;
    for cut in before..=seg.len() {
        let boot = recover_with_segment(d.path(), &seg[..cut], "trunc1").unwrap();
        if cut < trunc_end {
            assert_eq!(boot.entries, old, "cut {cut}");
        } else {
            let k = (cut - trunc_end) / (REC_HEADER + 41);
            let mut want = old[..49].to_vec();
            want.extend_from_slice(&new[..k]);
            assert_eq!(boot.entries, want, "cut {cut}");
        }
    }
}

#[test]
fn truncation_across_segments_survives_restart_and_compaction() {
    // Goal: a truncation whose discarded entries lie in older segments holds across restart
    // and compaction. Method: small segments; replace from 30; reopen; snapshot; reopen.
    let opts = WalOptions {
        segment_bytes: 1024,
        preallocate: true,
        ..WalOptions::default()
    };
    let (d, old, new) = truncation_setup("truncseg", opts.clone(), 30);
    let mut want = old[..29].to_vec();
    want.extend_from_slice(&new);
    let (mut wal, boot) = Wal::open(d.path(), opts.clone()).unwrap();
    assert_eq!(boot.entries, want);
    let before = wal.segment_count();
    assert!(before > 3);
    wal.save_snapshot(&snapshot(35, 2, 100)).unwrap();
    assert!(wal.segment_count() < before);
    drop(wal);
    let (_, boot) = Wal::open(d.path(), opts).unwrap();
    assert_eq!(boot.snapshot.as_ref().unwrap().meta.index, LogIndex(35));
    assert_eq!(boot.entries, want[35..]);
}

#[test]
fn compaction_deletes_old_segments_and_recovery_still_works() {
    // Goal: after a snapshot at I, segments wholly before I are gone and restart still works.
    // Method: 4 KiB segments, 500 entries, snapshot at 400, count segment files, reopen.
    let d = TempDir::new("compact");
    let opts = WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    };
    let (all, _) = write_log(d.path(), opts.clone(), 500, 60, 10);
    let count = |p: &Path| {
        fs::read_dir(p)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".wal")
            })
            .count()
    };
    let before = count(d.path());
    {
        let (mut wal, boot) = Wal::open(d.path(), opts.clone()).unwrap();
        assert_eq!(boot.entries, all);
        wal.save_snapshot(&snapshot(400, 5, 3000)).unwrap();
        wal.write(&batch(vec![entry(501, 6, 60)])).unwrap();
        wal.sync().unwrap();
    }
    let after = count(d.path());
    assert!(after < before / 3, "segments {before} -> {after}");
    let (_, boot) = Wal::open(d.path(), opts.clone()).unwrap();
    assert_eq!(boot.snapshot, Some(snapshot(400, 5, 3000)));
    let mut want = all[400..].to_vec();
    want.push(entry(501, 6, 60));
    assert_eq!(boot.entries, want);
    // A second snapshot replaces the first file.
    let (mut wal, _) = Wal::open(d.path(), opts.clone()).unwrap();
    wal.save_snapshot(&snapshot(450, 5, 10)).unwrap();
    let snaps: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert_eq!(
        snaps,
        vec!["snap-00000000000001c2-0000000000000005.snap".to_string()]
    );
}

#[test]
fn a_compacted_segment_is_reused_as_a_later_segment_with_its_old_records_gone() {
    // Goal: compaction keeps one old segment file (renamed to a `.tmp` name) and a later
    // segment is made from that same file, zero-filled: its old records never come back, and
    // a kept file left by a stop is deleted at open. Method: 4 KiB preallocated segments, log
    // 1..=200, snapshot at 150; write until the first segment's inode is the current
    // segment's, under a later name; restarts must return exactly the entries written since.
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("recycle");
    let opts = WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    };
    let kept = d.path().join("recycled-segment.tmp");
    let (all, _) = write_log(d.path(), opts.clone(), 200, 60, 10);
    let first = fs::metadata(d.path().join(SEG)).unwrap().ino();
    let (mut wal, _) = Wal::open(d.path(), opts.clone()).unwrap();
    wal.save_snapshot(&snapshot(150, 2, 100)).unwrap();
    wal.write(&batch(vec![entry(201, 3, 60)])).unwrap();
    wal.sync().unwrap();
    assert_eq!(fs::metadata(&kept).unwrap().ino(), first);
    assert!(!d.path().join(SEG).exists());
    let mut want = all[150..].to_vec();
    want.push(entry(201, 3, 60));
    // Shorter entries than before, so that the old records, had they stayed, would not be
    // overwritten record for record. Stop a few records into the reused file, so that
    // whatever follows them in it is what recovery reads as the log's end.
    let mut i = 202;
    let mut into_reused = 0;
    while into_reused < 3 && i < 2000 {
        want.push(entry(i, 3, 20));
        wal.write(&batch(vec![entry(i, 3, 20)])).unwrap();
        wal.sync().unwrap();
        if fs::metadata(wal.current_segment_path()).unwrap().ino() == first {
            into_reused += 1;
        }
        i += 1;
    }
    assert_eq!(
        into_reused, 3,
        "no later segment was made from the kept file"
    );
    let name = wal.current_segment_path().file_name().unwrap().to_owned();
    assert!(name != SEG && name.to_str().unwrap().ends_with(".wal"));
    drop(wal);
    let (mut wal, boot) = Wal::open(d.path(), opts.clone()).unwrap();
    assert_eq!(boot.entries, want);
    // Another compaction keeps another file; a stop leaves it, and the next open deletes it.
    let snap = want[want.len() - 5].index.0;
    wal.save_snapshot(&snapshot(snap, 3, 100)).unwrap();
    wal.write(&batch(vec![entry(i, 3, 60)])).unwrap();
    wal.sync().unwrap();
    assert!(kept.exists());
    drop(wal);
    let (_, boot) = Wal::open(d.path(), opts).unwrap();
    assert!(!kept.exists());
    want.retain(|e| e.index.0 > snap);
    want.push(entry(i, 3, 60));
    assert_eq!(boot.entries, want);
}

#[test]
fn installed_snapshot_with_another_term_replaces_the_whole_log() {
    // Goal: storage rule: a snapshot whose index holds an entry of another term discards every
    // entry. Method: write 1..=20 at term 1, install snapshot (10, term 3) in a batch, restart.
    let d = TempDir::new("install");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&batch((1..=20).map(|i| entry(i, 1, 10)).collect()))
            .unwrap();
        wal.sync().unwrap();
        wal.write(&WriteBatch {
            snapshot: Some(snapshot(10, 3, 50)),
            hard_state: Some(HardState {
                term: Term(3),
                vote: None,
                commit: LogIndex(10),
                lost: None,
            }),
            entries: vec![entry(11, 3, 10)],
        })
        .unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.last_index(), LogIndex(11));
    }
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(boot.snapshot.unwrap().meta.index, LogIndex(10));
    assert_eq!(boot.entries, vec![entry(11, 3, 10)]);
    assert_eq!(boot.hard_state.commit, LogIndex(10));
}

#[test]
fn random_bytes_as_any_wal_file_give_typed_errors_never_panics() {
    // Goal: hostile files never panic or over-allocate. Method: 300 seeded rounds that replace
    // or splice random bytes into a segment, a hard-state file or a snapshot file; open must
    // return Ok or a typed error.
    let d = TempDir::new("fuzz");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&WriteBatch {
            snapshot: None,
            hard_state: Some(HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
                commit: LogIndex(2),
                lost: None,
            }),
            entries: (1..=8).map(|i| entry(i, 1, 20)).collect(),
        })
        .unwrap();
        wal.sync().unwrap();
        wal.save_snapshot(&snapshot(3, 1, 40)).unwrap();
        wal.write(&batch((9..=12).map(|i| entry(i, 1, 20)).collect()))
            .unwrap();
        wal.sync().unwrap();
    }
    let files: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "LOCK")
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    // ZATT_WAL_FUZZ_ROUNDS and ZATT_WAL_FUZZ_SEED allow a longer run by hand.
    let rounds: u64 = std::env::var("ZATT_WAL_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("ZATT_WAL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1234_5678_9ABC_DEF1);
    let mut rng = SplitMix64(seed);
    let (mut ok, mut refused) = (0, 0);
    let t = TempDir::new("fuzz1");
    for round in 0..rounds {
        copy_dir(d.path(), t.path());
        let name = &files[rng.below(files.len() as u64) as usize];
        let orig = fs::read(t.path().join(name)).unwrap();
        let mut f = orig.clone();
        match rng.below(4) {
            0 => {
                f = rng.bytes_up_to(299);
            }
            1 => {
                let at = rng.below(f.len() as u64 + 1) as usize;
                let junk = rng.bytes_up_to(63);
                let n = junk.len();
                f.splice(at..(at + n).min(f.len()), junk);
            }
            2 => {
                // A plausible header with a huge length field.
                let at = rng.below(f.len() as u64) as usize;
                for (k, b) in [0xFFu8, 0xFF, 0xFF, 0x7F].iter().enumerate() {
                    if at + k < f.len() {
                        f[at + k] = *b;
                    }
                }
            }
            _ => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(f.len() as u64 * 8) as usize;
                    if !f.is_empty() {
                        f[at / 8] ^= 1 << (at % 8);
                    }
                }
            }
        }
        overwrite(&t.path().join(name), &f);
        match recover(t.path()) {
            Ok(boot) => {
                ok += 1;
                // Whatever came back is contiguous and follows the snapshot.
                let base = boot.snapshot.as_ref().map_or(0, |s| s.meta.index.0);
                for (k, e) in boot.entries.iter().enumerate() {
                    assert_eq!(e.index.0, base + 1 + k as u64, "round {round} {name}");
                }
            }
            Err(WalError::Corrupt { .. }) => refused += 1,
            Err(e) => panic!("round {round}: {name}: untyped failure {e}"),
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok} refused {refused}");
}

#[test]
fn crash_part_way_through_compaction_recovers_the_same_state() {
    // Goal: compaction deletes segments oldest first, so a crash after any number of deletions
    // recovers the same state. Method: keep copies of the segments compaction deletes, then
    // put back all but the first k of them, for every k.
    let d = TempDir::new("compactcrash");
    let opts = WalOptions {
        segment_bytes: 2048,
        preallocate: false,
        ..WalOptions::default()
    };
    let (all, _) = write_log(d.path(), opts.clone(), 200, 50, 4);
    let saved = TempDir::new("compactcrash-saved");
    copy_dir(d.path(), saved.path());
    {
        let (mut wal, _) = Wal::open(d.path(), opts.clone()).unwrap();
        wal.save_snapshot(&snapshot(150, 2, 500)).unwrap();
    }
    let mut deleted: Vec<String> = fs::read_dir(saved.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wal") && !d.path().join(n).exists())
        .collect();
    assert!(deleted.len() > 5, "{deleted:?}");
    deleted.sort();
    for k in 0..=deleted.len() {
        let t = TempDir::new("compactcrash1");
        copy_dir(d.path(), t.path());
        for n in &deleted[k..] {
            fs::copy(saved.path().join(n), t.path().join(n)).unwrap();
        }
        let (_, boot) = Wal::open(t.path(), opts.clone()).unwrap();
        assert_eq!(
            boot.snapshot.as_ref().unwrap().meta.index,
            LogIndex(150),
            "k {k}"
        );
        assert_eq!(boot.entries, all[150..], "k {k}");
    }
}

#[test]
fn size_bytes_counts_records_and_shrinks_with_compaction() {
    // Goal: size_bytes (for status) follows the data. Method: write, compact, compare.
    let d = TempDir::new("size");
    let opts = WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(d.path(), opts).unwrap();
    let empty = wal.size_bytes();
    wal.write(&batch((1..=300).map(|i| entry(i, 1, 100)).collect()))
        .unwrap();
    wal.sync().unwrap();
    let full = wal.size_bytes();
    assert_eq!(full - empty, 300 * (REC_HEADER as u64 + 100));
    let mut small = batch(vec![]);
    for i in 301..=400 {
        small.entries = vec![entry(i, 1, 100)];
        wal.write(&small).unwrap();
        wal.sync().unwrap();
    }
    let before = wal.size_bytes();
    wal.save_snapshot(&snapshot(390, 1, 10)).unwrap();
    assert!(
        wal.size_bytes() < before / 2,
        "{} -> {}",
        before,
        wal.size_bytes()
    );
}

#[test]
fn recovered_commit_never_passes_the_recovered_log() {
    // Goal: a follower's batch whose commit points into its own entries never recovers a
    // commit beyond the entries kept. Method: such batches (with and without a term change),
    // then a cut at every byte of the last two; compare commit with the last index.
    let d = TempDir::new("commitcut");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&batch((1..=10).map(|i| entry(i, 1, 20)).collect()))
            .unwrap();
        wal.sync().unwrap();
        for (term, from) in [(2u64, 11u64), (2, 16)] {
            wal.write(&WriteBatch {
                snapshot: None,
                hard_state: Some(HardState {
                    term: Term(term),
                    vote: Some(NodeId(2)),
                    commit: LogIndex(from + 4),
                    lost: None,
                }),
                entries: (from..from + 5).map(|i| entry(i, term, 20)).collect(),
            })
            .unwrap();
            wal.sync().unwrap();
        }
    }
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let start = SEG_HEADER + 10 * (REC_HEADER + 20);
    let mut seen_commit = 0;
    for cut in start..=seg.len() {
        let boot = recover_with_segment(d.path(), &seg[..cut], "commitcut").unwrap();
        let last = boot.entries.last().map_or(0, |e| e.index.0);
        assert!(
            boot.hard_state.commit.0 <= last,
            "cut {cut}: commit {:?} last {last}",
            boot.hard_state.commit
        );
        assert_eq!(
            boot.hard_state.term,
            Term(2),
            "cut {cut}: the term change was synced first"
        );
        assert!(
            boot.hard_state.commit.0 >= seen_commit,
            "cut {cut}: commit went backwards"
        );
        seen_commit = boot.hard_state.commit.0;
    }
    assert_eq!(seen_commit, 20);
}

#[test]
fn crash_while_initialising_a_directory_starts_fresh() {
    // Goal: a crash during the first open (hard-state files half written, no segment yet) does
    // not make the directory unopenable. Method: leave an empty and a torn hard-state file.
    let d = TempDir::new("init");
    fs::write(d.path().join("hardstate.0"), b"").unwrap();
    fs::write(d.path().join("hardstate.1"), b"ZHS1\x01").unwrap();
    let (mut wal, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert!(boot.entries.is_empty() && boot.snapshot.is_none());
    wal.write(&batch(vec![entry(1, 1, 5)])).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(boot.entries, vec![entry(1, 1, 5)]);
    // With a segment present, two bad copies are corruption (the vote may be lost).
    fs::write(d.path().join("hardstate.0"), b"junk").unwrap();
    fs::write(d.path().join("hardstate.1"), b"junk").unwrap();
    let e = Wal::open(d.path(), opts_plain()).err().expect("refused");
    assert_eq!(e.exit_code(), 65, "{e}");
}

#[test]
fn crash_at_any_byte_of_a_snapshot_install_recovers_before_or_after_it() {
    // Goal: installing a snapshot is atomic at recovery. Method: after a batch with a snapshot
    // (another term), a hard state and one entry, cut the log at every byte of that batch.
    let d = TempDir::new("installcut");
    let before;
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&batch((1..=20).map(|i| entry(i, 1, 10)).collect()))
            .unwrap();
        wal.sync().unwrap();
        before = fs::read(d.path().join(SEG)).unwrap().len();
        wal.write(&WriteBatch {
            snapshot: Some(snapshot(10, 3, 50)),
            hard_state: Some(HardState {
                term: Term(3),
                vote: None,
                commit: LogIndex(10),
                lost: None,
            }),
            entries: vec![entry(11, 3, 10)],
        })
        .unwrap();
        wal.sync().unwrap();
    }
    let seg = fs::read(d.path().join(SEG)).unwrap();
    let old: Vec<Entry> = (1..=20).map(|i| entry(i, 1, 10)).collect();
    for cut in before..=seg.len() {
        let boot = recover_with_segment(d.path(), &seg[..cut], "installcut1").unwrap();
        match &boot.snapshot {
            None => assert_eq!(boot.entries, old, "cut {cut}"),
            Some(s) => {
                assert_eq!(
                    (s.meta.index, s.meta.term),
                    (LogIndex(10), Term(3)),
                    "cut {cut}"
                );
                assert!(
                    boot.entries.is_empty() || boot.entries == vec![entry(11, 3, 10)],
                    "cut {cut}"
                );
            }
        }
    }
}

#[test]
fn records_with_good_crcs_but_hostile_fields_give_typed_errors_never_panics() {
    // Goal: the meaning checks (after the CRC) never panic or overflow either. Method: 400
    // seeded segments of records with valid CRCs and random type, kind, term and index
    // (extremes included); recovery must return Ok with a contiguous log or a typed error.
    use zatt::wal::format::{encode_record, encode_segment_header};
    let d = TempDir::new("hostile");
    drop(Wal::open(d.path(), opts_plain()).unwrap());
    let mut rng = SplitMix64(0xC0FF_EE00_1234_5679);
    let pick = |rng: &mut SplitMix64| match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - rng.below(3),
        3 => 1 + rng.below(4),
        _ => rng.below(40),
    };
    let t = TempDir::new("hostile1");
    for round in 0..400 {
        let mut seg = encode_segment_header(1, 64 << 20).to_vec();
        for _ in 0..1 + rng.below(12) {
            let rtype = 1 + rng.below(4) as u8;
            let kind = rng.below(3) as u8;
            let payload: Vec<u8> = match rtype {
                2 => pick(&mut rng).to_le_bytes().to_vec(),
                1 => vec![7u8; rng.below(16) as usize],
                _ => vec![],
            };
            let (term, index) = (pick(&mut rng), pick(&mut rng));
            encode_record(
                &mut seg,
                rtype,
                if rtype == 2 || rtype == 3 { 0 } else { kind },
                term,
                index,
                &payload,
            );
        }
        copy_dir(d.path(), t.path());
        overwrite(&t.path().join(SEG), &seg);
        match Wal::inspect(t.path(), &opts_plain()) {
            Ok(boot) => {
                let base = boot.snapshot.as_ref().map_or(0, |s| s.meta.index.0);
                for (k, e) in boot.entries.iter().enumerate() {
                    assert_eq!(e.index.0, base + 1 + k as u64, "round {round}");
                }
            }
            Err(WalError::Corrupt { .. }) => {}
            Err(e) => panic!("round {round}: untyped failure {e}"),
        }
    }
}

/// A log of 30 entries with a snapshot at 20, the directory then closed. Returns the
/// snapshot file's name.
fn log_with_snapshot(dir: &Path) -> String {
    let (mut wal, _) = Wal::open(dir, opts_plain()).unwrap();
    wal.write(&batch((1..=30).map(|i| entry(i, 1, 10)).collect()))
        .unwrap();
    wal.sync().unwrap();
    wal.save_snapshot(&snapshot(20, 1, 100)).unwrap();
    "snap-0000000000000014-0000000000000001.snap".to_string()
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_missing_log_beside_a_snapshot_or_a_used_hard_state_is_refused_and_nothing_deleted() {
    // Goal: a directory whose every segment is gone is not taken for a new one when its
    // snapshot file or hard state shows it was used (row H5): refused (65) by open and
    // inspect, naming the missing log, and the snapshot file is still there. Method: a
    // snapshot, then every segment removed; then a hard state with a term and no snapshot.
    let d = TempDir::new("nolog");
    let snap = log_with_snapshot(d.path());
    assert!(d.path().join(&snap).exists());
    let segs = wal_files(d.path());
    assert!(!segs.is_empty());
    for s in &segs {
        fs::remove_file(s).unwrap();
    }
    for attempt in 0..2 {
        let e = Wal::open(d.path(), opts_plain()).err().expect("refused");
        assert_eq!(e.exit_code(), 65, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&snap) && msg.contains("no log segment"),
            "{msg}"
        );
        assert!(msg.contains(SEG), "names the missing log: {msg}");
        let e = Wal::inspect(d.path(), &opts_plain()).expect_err("refused");
        assert_eq!(e.exit_code(), 65, "{e}");
        assert!(d.path().join(&snap).exists(), "attempt {attempt}");
        assert!(wal_files(d.path()).is_empty(), "nothing created");
    }
    // The hard-state files damaged too (no valid copy): the snapshot still says "used".
    fs::write(d.path().join("hardstate.0"), b"junk").unwrap();
    fs::write(d.path().join("hardstate.1"), b"junk").unwrap();
    let e = Wal::open(d.path(), opts_plain()).err().expect("refused");
    assert_eq!(e.exit_code(), 65, "{e}");
    assert!(d.path().join(&snap).exists());

    // No snapshot, but a term and vote in the hard state.
    let d = TempDir::new("nolog-hs");
    {
        let (mut wal, _) = Wal::open(d.path(), opts_plain()).unwrap();
        wal.write(&WriteBatch {
            snapshot: None,
            hard_state: Some(HardState {
                term: Term(3),
                vote: Some(NodeId(2)),
                commit: LogIndex(0),
                lost: None,
            }),
            entries: vec![],
        })
        .unwrap();
        wal.sync().unwrap();
    }
    for s in wal_files(d.path()) {
        fs::remove_file(s).unwrap();
    }
    let e = Wal::open(d.path(), opts_plain()).err().expect("refused");
    assert_eq!(e.exit_code(), 65, "{e}");
    assert!(e.to_string().contains("term 3"), "{e}");

    // A directory opened once and closed with nothing written is still a new one without
    // its segment (the hard state is the initial one): it opens.
    let d = TempDir::new("nolog-new");
    drop(Wal::open(d.path(), opts_plain()).unwrap());
    for s in wal_files(d.path()) {
        fs::remove_file(s).unwrap();
    }
    let (_, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert!(boot.entries.is_empty() && boot.snapshot.is_none());
}

#[test]
fn a_snapshot_file_the_log_does_not_refer_to_is_kept_unless_older() {
    // Goal: recovery never deletes a snapshot file unless a newer one is referenced by the
    // log (rows S2, S3). Method: beside a log whose record refers to snapshot 20, put a
    // newer file (a crash before its record) and an older one; open; then a newer snapshot
    // recorded deletes both.
    let d = TempDir::new("straysnap");
    let snap = log_with_snapshot(d.path());
    let newer = "snap-000000000000001c-0000000000000001.snap";
    let older = "snap-000000000000000a-0000000000000001.snap";
    fs::copy(d.path().join(&snap), d.path().join(newer)).unwrap();
    fs::copy(d.path().join(&snap), d.path().join(older)).unwrap();
    let (mut wal, boot) = Wal::open(d.path(), opts_plain()).unwrap();
    assert_eq!(boot.snapshot.as_ref().unwrap().meta.index, LogIndex(20));
    assert!(d.path().join(&snap).exists());
    assert!(
        d.path().join(newer).exists(),
        "a newer unreferenced file is kept"
    );
    assert!(!d.path().join(older).exists(), "an older one is deleted");
    wal.save_snapshot(&snapshot(29, 1, 100)).unwrap();
    assert!(!d.path().join(&snap).exists());
    assert!(
        !d.path().join(newer).exists(),
        "now older than the referenced one"
    );
}

/// Pages of `path` held in the page cache, and its page count (`mincore` over a mapping).
fn resident_pages(path: &Path) -> (usize, usize) {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    if len == 0 {
        return (0, 0);
    }
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of `len` bytes of an open file, only passed to
    // mincore (never read through) and unmapped before returning; `vec` has a byte per page.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
        libc::munmap(p, len);
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

fn direct_io_allowed(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join("probe-direct");
    let ok = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    let _ = fs::remove_file(&p);
    ok
}

#[test]
fn zero_filled_segments_are_written_around_the_page_cache_with_the_same_bytes() {
    // Goal: where its file system allows direct I/O, the log writes zero-filled segments
    // (the zeros and the appends) without filling the page cache, and the bytes it leaves are
    // exactly those the plain path (write + fdatasync through the page cache) leaves; appends
    // start and end anywhere in a block, so each direct write rewrites the block's earlier
    // bytes and pads with zeros. Method: the same batches (entries of 1..=700 B, so groups of
    // every alignment) into a preallocated log of 64 KiB segments and into one without
    // preallocation, which writes plainly; both roll several times. Every segment of the
    // first must match the second's over the second's length and be zero after it; its pages
    // must not be cached (a page or two each: the header's, written plainly, and the block
    // read back after a roll). A snapshot saved into each (1 MiB + 123 B, so its last block is
    // padded and cut) must leave the same file, not cached in the first; both logs must then
    // recover the snapshot and every entry after it.
    let direct_dir = TempDir::new("direct");
    let plain_dir = TempDir::new("plain");
    let direct = WalOptions {
        segment_bytes: 64 << 10,
        preallocate: true,
        ..WalOptions::default()
    };
    let plain = WalOptions {
        preallocate: false,
        ..direct.clone()
    };
    let mut rng = SplitMix64::new(7);
    let all: Vec<Entry> = (1..=600)
        .map(|i| entry(i, 1, 1 + rng.next_u64() as usize % 700))
        .collect();
    // A snapshot file of a length that ends inside a block, written the same way. One value
    // each: once stored, a snapshot's bytes are read from its file (which would cache it).
    let snap = || snapshot(300, 1, (1 << 20) + 123);
    for (d, o) in [(&direct_dir, &direct), (&plain_dir, &plain)] {
        let (mut wal, _) = Wal::open(d.path(), o.clone()).unwrap();
        let mut i = 0;
        let mut rng = SplitMix64::new(11);
        while i < all.len() {
            let n = (1 + rng.next_u64() as usize % 9).min(all.len() - i);
            wal.write(&batch(all[i..i + n].to_vec())).unwrap();
            wal.sync().unwrap();
            i += n;
        }
        assert!(wal.segment_count() >= 4, "{} segments", wal.segment_count());
        wal.save_snapshot(&snap()).unwrap();
    }
    let (ds, ps) = (wal_files(direct_dir.path()), wal_files(plain_dir.path()));
    assert_eq!(ds.len(), ps.len());
    // Before anything reads the files back into the cache.
    let snap_name = zatt::wal::snapshot_file_name(300, 1);
    let snap_file = direct_dir.path().join(&snap_name);
    if direct_io_allowed(direct_dir.path()) {
        for d in &ds {
            let (cached, pages) = resident_pages(d);
            assert!(
                cached <= 2,
                "{}: {cached} of {pages} pages cached",
                d.display()
            );
        }
        let (cached, pages) = resident_pages(&snap_file);
        assert!(
            cached <= 1,
            "the snapshot file: {cached} of {pages} pages cached"
        );
    } else {
        eprintln!("the temp dir's file system refuses O_DIRECT: the log wrote through the cache");
    }
    for (d, p) in ds.iter().zip(&ps) {
        let (db, pb) = (fs::read(d).unwrap(), fs::read(p).unwrap());
        assert_eq!(db.len(), 64 << 10, "{} is preallocated", d.display());
        assert!(
            db[..pb.len()] == pb[..],
            "{} differs from {}",
            d.display(),
            p.display()
        );
        assert!(
            db[pb.len()..].iter().all(|&b| b == 0),
            "{} after its records",
            d.display()
        );
    }
    assert!(
        fs::read(&snap_file).unwrap() == fs::read(plain_dir.path().join(&snap_name)).unwrap(),
        "the two snapshot files differ"
    );
    for (d, o) in [(&direct_dir, &direct), (&plain_dir, &plain)] {
        let (_, boot) = Wal::open(d.path(), o.clone()).unwrap();
        assert_eq!(boot.entries, all[300..]);
        assert_eq!(boot.snapshot, Some(snap()));
    }
}
