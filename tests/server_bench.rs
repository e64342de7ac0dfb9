//! A closed-loop write benchmark against three real `zattd` processes (ignored by default:
//! timing belongs in benchmarks, not tests). Each client thread has its own connection and one
//! request in flight; values are 100 bytes.
//!
//!     cargo test --release --test server_bench -- --ignored --nocapture
//!
//! `ZATT_BENCH_CLIENTS` (default 64) and `ZATT_BENCH_SECS` (default 5) change the load.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zatt::wire::client::{Request, Response};

#[test]
#[ignore]
fn bench_durable_writes_three_servers() {
    let clients: usize = std::env::var("ZATT_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let secs: u64 = std::env::var("ZATT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let c = Cluster::start(3, &["--log-level", "warn"]);
    let leader = c.wait_leader(Duration::from_secs(30));
    let addr = c.addr(leader);
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'x'; 100];
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let addr = addr.clone();
            let stop = stop.clone();
            let value = value.clone();
            std::thread::spawn(move || {
                let mut cl = TestClient::connect(&addr).unwrap();
                let mut lat_us = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::Put {
                        session: None,
                        key: format!("t{t}-{}", i % 1000).into_bytes(),
                        value: value.clone(),
                    };
                    let t0 = Instant::now();
                    match cl.call(&req).unwrap() {
                        Response::Written { .. } => {}
                        other => panic!("{other:?}"),
                    }
                    lat_us.push(t0.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat_us
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    let s = c.status(leader).unwrap();
    println!(
        "{clients} clients, {secs}s: {:.0} writes/s, p50 {} us, p99 {} us, fsync p50 {} us p99 {} us",
        all.len() as f64 / elapsed,
        p(0.5),
        p(0.99),
        s.fsync_p50_us,
        s.fsync_p99_us
    );
}
