//! Dictionary benchmark: the memory one key costs in `kv` alone (the process's resident set
//! before and after applying N puts of 16 B keys and 100 B values, the keys and values
//! `perf/memory.sh` loads into servers), the time to apply them, and the time to restore them
//! from their snapshot (what a restart does first), and the time to drop the restored
//! dictionary (what a follower does when a leader's snapshot replaces its own). Memory per key is fixed work that a busy
//! machine barely moves; the times are wall clock, so read them as orders of magnitude on
//! a shared machine. Not a test.
//!
//!     cargo run --release --example kv_memory [KEYS]   (default 1000000)
//!
//! The apply time includes building each entry (key, proposal encoding), as the server's
//! apply path starts from a decoded entry too. The last line is machine-readable.

use std::time::Instant;
use zatt::kv::{Command, Kv, KvConfig, Proposal};
use zatt::types::{Entry, EntryKind, LogIndex, Term};

/// This process's resident set in bytes, or None where /proc cannot tell.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

fn main() {
    let n: u64 = match std::env::args_os().nth(1) {
        None => 1_000_000,
        Some(a) => match a.to_str().and_then(|s| s.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("usage: kv_memory [KEYS]  (a positive count; default 1000000)");
                std::process::exit(2);
            }
        },
    };
    let value = vec![b'x'; 100];
    let before = rss_bytes();
    let mut kv = Kv::new(KvConfig::default());
    let t = Instant::now();
    for i in 0..n {
        let p = Proposal {
            session: None,
            now_ms: 1,
            command: Command::Put {
                key: format!("k{i:015}").into_bytes(),
                value: value.clone(),
            },
        };
        kv.apply(&Entry::new(
            Term(1),
            LogIndex(i + 1),
            EntryKind::Normal,
            &p.encoded(),
        ));
    }
    let apply_ms = t.elapsed().as_secs_f64() * 1e3;
    let per_key = match (before, rss_bytes()) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / n as f64,
        _ => {
            eprintln!("kv_memory: /proc/self/status has no VmRSS line: cannot measure memory");
            std::process::exit(1);
        }
    };
    println!("{n} puts applied in {apply_ms:.0} ms: {per_key:.0} B per key of resident memory");
    let snap = kv.snapshot_bytes();
    drop(kv);
    let t = Instant::now();
    let restored = match Kv::restore(&snap, KvConfig::default()) {
        Ok(kv) => kv,
        Err(e) => {
            eprintln!("kv_memory: the dictionary's own snapshot does not restore: {e}");
            std::process::exit(1);
        }
    };
    let restore_ms = t.elapsed().as_secs_f64() * 1e3;
    if restored.len() as u64 != n {
        eprintln!("kv_memory: {} keys restored of {n} applied", restored.len());
        std::process::exit(1);
    }
    println!(
        "snapshot of {} MB restored in {restore_ms:.0} ms ({n} keys)",
        snap.len() >> 20
    );
    let t = Instant::now();
    drop(restored);
    let drop_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("the restored dictionary dropped in {drop_ms:.1} ms");
    println!(
        "keys={n} bytes_per_key={per_key:.0} apply_ms={apply_ms:.0} restore_ms={restore_ms:.0} drop_ms={drop_ms:.1}"
    );
}
