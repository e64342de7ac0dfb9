//! WAL benchmark: durable appends/s and MB/s for 100-byte and 4 KiB entries with one durable
//! write (a direct `O_DSYNC` write where the file system allows, else `write` + `fdatasync`)
//! per batch of 1, 16 and 256 entries (called in line, one batch at a time), the same
//! 100-byte × 256 batches pipelined through the `Syncer` (group commit: one durable write for
//! everything queued), then the replay speed of a large log (every CRC checked).
//! Not a test: figures on a shared machine are noisy.
//!
//!     cargo run --release --example walbench -- [--replay-mib 1024] [--seconds 1.5] [--dir PATH]
//!         [--skip-append]   (replay only, e.g. under a profiler)
//!
//! Data goes to a fresh directory under `--dir` (default: the system temp dir; keep it on a
//! real disk, not a tmpfs) and is deleted at the end. The last line is machine-readable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zatt::storage::{LogStorage, WriteBatch};
use zatt::types::{Entry, EntryKind, LogIndex, Term};
use zatt::wal::{Syncer, Wal, WalOptions};

struct Args {
    skip_append: bool,
    replay_mib: u64,
    seconds: f64,
    dir: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        skip_append: false,
        replay_mib: 1024,
        seconds: 1.5,
        dir: std::env::temp_dir(),
    };
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().unwrap_or_else(|_| usage()))
        .collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--replay-mib" => a.replay_mib = val.parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = val.parse().unwrap_or_else(|_| usage()),
            "--dir" => a.dir = PathBuf::from(val),
            "--skip-append" => {
                a.skip_append = true;
                i += 1;
                continue;
            }
            _ => usage(),
        }
        i += 2;
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: walbench [--replay-mib N] [--seconds S] [--dir PATH] [--skip-append]");
    std::process::exit(2);
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(format!("zatt-walbench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Appends batches of `per_batch` entries of `len` bytes, one sync per batch, for `secs`.
/// Returns (appends/s, payload MB/s, syncs/s).
fn append_bench(base: &Path, len: usize, per_batch: usize, secs: f64) -> (f64, f64, f64) {
    let dir = fresh_dir(base, "append");
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).expect("open");
    let payload = vec![0xA5u8; len];
    let mut next = 1u64;
    let mut batch = WriteBatch::default();
    let (mut appends, mut syncs) = (0u64, 0u64);
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while t0.elapsed() < limit {
        batch.entries.clear();
        for _ in 0..per_batch {
            batch.entries.push(Entry::new(
                Term(1),
                LogIndex(next),
                EntryKind::Normal,
                &payload,
            ));
            next += 1;
        }
        wal.write(&batch).expect("write");
        wal.sync().expect("sync");
        appends += per_batch as u64;
        syncs += 1;
    }
    let s = t0.elapsed().as_secs_f64();
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    (
        appends as f64 / s,
        appends as f64 * len as f64 / 1e6 / s,
        syncs as f64 / s,
    )
}

/// Pipelined through the `Syncer`, as the server drives it: up to `inflight` batches of
/// `per_batch` entries queued; the syncer groups everything queued into one durable write.
/// Returns (durable appends/s, syncs/s).
fn syncer_bench(base: &Path, len: usize, per_batch: usize, inflight: u64, secs: f64) -> (f64, f64) {
    let dir = fresh_dir(base, "syncer");
    let (wal, _) = Wal::open(&dir, WalOptions::default()).expect("open");
    let mut poll = mio::Poll::new().expect("poll");
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
    let syncer = Syncer::spawn(wal, waker, None);
    let mut events = mio::Events::with_capacity(8);
    let payload = vec![0xA5u8; len];
    let (mut next, mut submitted, mut durable) = (1u64, 0u64, 0u64);
    let mut done = Vec::new();
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while t0.elapsed() < limit {
        while submitted - durable < inflight {
            let mut b = WriteBatch::default();
            for _ in 0..per_batch {
                b.entries.push(Entry::new(
                    Term(1),
                    LogIndex(next),
                    EntryKind::Normal,
                    &payload,
                ));
                next += 1;
            }
            syncer.submit(submitted, b);
            submitted += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        done.clear();
        syncer.drain_completed(&mut done);
        durable += done.len() as u64;
    }
    let s = t0.elapsed().as_secs_f64();
    let syncs = syncer.syncs();
    syncer.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    (durable as f64 * per_batch as f64 / s, syncs as f64 / s)
}

/// Writes a log of `mib` MiB of 4 KiB entries, then times `Wal::open` over it.
/// Returns (log bytes, seconds, entries).
fn replay_bench(base: &Path, mib: u64) -> (u64, f64, usize) {
    let dir = fresh_dir(base, "replay");
    let len = 4096usize;
    let payload = vec![0x5Au8; len];
    {
        let (mut wal, _) = Wal::open(&dir, WalOptions::default()).expect("open");
        let mut next = 1u64;
        let mut batch = WriteBatch::default();
        while wal.size_bytes() < mib << 20 {
            batch.entries.clear();
            for _ in 0..256 {
                batch.entries.push(Entry::new(
                    Term(1),
                    LogIndex(next),
                    EntryKind::Normal,
                    &payload,
                ));
                next += 1;
            }
            wal.write(&batch).expect("write");
            wal.sync().expect("sync");
        }
    }
    // The log was written around the page cache (direct I/O); read it once so that the timed
    // replay measures replay, not the disk.
    for e in std::fs::read_dir(&dir).expect("list") {
        let _ = std::fs::read(e.expect("list").path());
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let (wal, boot) = Wal::open(&dir, WalOptions::default()).expect("reopen");
    let s = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds();
    println!(
        "replay cpu: user {:.3} s, system {:.3} s (wall {s:.3} s)",
        cpu.0 - cpu0.0,
        cpu.1 - cpu0.1
    );
    let bytes = wal.size_bytes();
    let n = boot.entries.len();
    drop(boot);
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    (bytes, s, n)
}

/// (user, system) CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

fn main() {
    let a = parse_args();
    println!(
        "walbench: data under {} (one durable write per batch)",
        a.dir.display()
    );
    let mut b256 = 0.0;
    let sizes: &[usize] = if a.skip_append { &[] } else { &[100, 4096] };
    for &len in sizes {
        for per in [1usize, 16, 256] {
            let (ops, mbs, syncs) = append_bench(&a.dir, len, per, a.seconds);
            println!(
                "append {len:>5} B x batch {per:>3}: {ops:>10.0} appends/s {mbs:>8.1} MB/s {syncs:>8.0} syncs/s"
            );
            if len == 100 && per == 256 {
                b256 = ops;
            }
        }
    }
    let secs = if a.skip_append { 0.0 } else { a.seconds };
    let (sops, ssyncs) = syncer_bench(&a.dir, 100, 256, 32, secs);
    println!(
        "syncer   100 B x batch 256, 32 batches in flight (group commit): {sops:>10.0} durable appends/s {ssyncs:>6.0} syncs/s"
    );
    let (bytes, s, n) = replay_bench(&a.dir, a.replay_mib);
    let mbs = bytes as f64 / 1e6 / s;
    println!(
        "replay {} MiB ({n} entries of 4096 B, page cache warm): {s:.3} s, {mbs:.0} MB/s",
        bytes >> 20
    );
    println!(
        "replay_mb_s={mbs:.0} append_100b_batch256_per_s={b256:.0} syncer_100b_batch256_per_s={sops:.0}"
    );
}
