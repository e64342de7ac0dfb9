//! Dictionary benchmark: the memory one key costs in `kv` alone (the process's resident set
//! before and after applying N puts of 16 B keys and 100 B values, as `perf/memory.sh` loads
//! them into servers), the time to apply them, and the time to restore them from a snapshot
//! (what a restart does first). A fixed-work figure that a busy machine barely moves.
//! Not a test: `cargo run --release --example kv_memory [N]` (default 1,000,000).

use zatt::kv::{Command, Kv, KvConfig, Proposal};
use zatt::types::{Entry, EntryKind, LogIndex, Term};

/// This process's resident set, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: kv_memory [KEYS]  (a positive count, default 1000000)");
                std::process::exit(2);
            }
        },
        None => 1_000_000,
    };
    let value = vec![b'x'; 100];
    let before = rss_bytes();
    let mut kv = Kv::new(KvConfig::default());
    let t = std::time::Instant::now();
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
    let applied = t.elapsed();
    let after = rss_bytes();
    println!(
        "{n} puts applied in {:.0} ms: {:.0} B per key of resident memory",
        applied.as_secs_f64() * 1e3,
        after.saturating_sub(before) as f64 / n as f64
    );
    let snap = kv.snapshot_bytes();
    drop(kv);
    let t = std::time::Instant::now();
    let restored = Kv::restore(&snap, KvConfig::default()).expect("own snapshot restores");
    println!(
        "snapshot of {} MB restored in {:.0} ms ({} keys)",
        snap.len() >> 20,
        t.elapsed().as_secs_f64() * 1e3,
        restored.len()
    );
}
