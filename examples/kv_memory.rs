use zatt::kv::*;
use zatt::types::*;
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(1_000_000);
    let r0 = rss();
    let mut kv = Kv::new(KvConfig::default());
    let value = vec![b'x'; 100];
    let t = std::time::Instant::now();
    for i in 0..n {
        let key = format!("k{:015}", i);
        let p = Proposal {
            session: None,
            now_ms: 1,
            command: Command::Put {
                key: key.into_bytes(),
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
    let r1 = rss();
    println!(
        "apply {n}: {:.0} B/key, {:?}",
        (r1 - r0) as f64 / n as f64,
        t.elapsed()
    );
    let snap = kv.snapshot_bytes();
    drop(kv);
    let r2 = rss();
    let t = std::time::Instant::now();
    let kv2 = Kv::restore(&snap, KvConfig::default()).unwrap();
    let el = t.elapsed();
    drop(snap);
    let r3 = rss();
    println!(
        "restore: {:.0} B/key above, {:?}, {} keys",
        (r3 as f64 - r2 as f64) / n as f64,
        el,
        kv2.len()
    );
}
