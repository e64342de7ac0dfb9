//! Latency of one Rust `Client` and throughput of many, against a running cluster: the Rust
//! side of `clients/python/bench/latency.py`, with the same flags and the same method, so that
//! the two clients' figures can be set side by side.
//!
//! Run: `cargo run --release --example client_latency -- --endpoints 127.0.0.1:5254,...
//! [--ops 2000] [--threads 16] [--seconds 5] [--value-size 100]`.
//! One client does `--ops` sequential puts, then as many linearizable and stale gets of the same
//! keys (p50, p99, mean of each); then `--threads` threads with a client each put for
//! `--seconds`. Timing only: a benchmark, never a test; nothing is asserted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use zatt::client::{Client, ClientConfig};

struct Args {
    endpoints: Vec<String>,
    ops: usize,
    threads: usize,
    seconds: f64,
    value_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        endpoints: vec!["127.0.0.1:5254".into()],
        ops: 2000,
        threads: 16,
        seconds: 5.0,
        value_size: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag} {v:?} is not a number");
        match flag.as_str() {
            "--endpoints" => a.endpoints = v.split(',').map(str::to_string).collect(),
            "--ops" => a.ops = v.parse().map_err(bad)?,
            "--threads" => a.threads = v.parse().map_err(bad)?,
            "--seconds" => a.seconds = v.parse().map_err(|_| format!("--seconds {v:?}"))?,
            "--value-size" => a.value_size = v.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.ops == 0 || a.threads == 0 {
        return Err("--ops and --threads must be positive".into());
    }
    Ok(a)
}

/// Nearest-rank percentile of an ascending list.
fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0 * sorted_us.len() as f64) + 0.5)
        .round()
        .max(1.0) as usize;
    sorted_us[rank.min(sorted_us.len()) - 1]
}

fn timed(ops: usize, mut op: impl FnMut(usize)) -> Vec<f64> {
    let mut out: Vec<f64> = (0..ops)
        .map(|i| {
            let t = Instant::now();
            op(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("client_latency: {e}");
            std::process::exit(2);
        }
    };
    let value = vec![b'v'; args.value_size];
    let connect = || {
        Client::connect(&args.endpoints, ClientConfig::default()).unwrap_or_else(|e| {
            eprintln!("client_latency: {e}");
            std::process::exit(1);
        })
    };
    let mut c = connect();
    c.put("bench/warmup", &value).expect("warm-up put");
    for _ in 0..200 {
        c.get("bench/warmup").expect("warm-up get");
    }
    let key = |i: usize| format!("bench/rs/{i:06}");
    let series = [
        (
            "put",
            timed(args.ops, |i| {
                c.put(key(i), &value).expect("put");
            }),
        ),
        (
            "get",
            timed(args.ops, |i| {
                c.get(key(i)).expect("get");
            }),
        ),
        (
            "get_stale",
            timed(args.ops, |i| {
                c.get_stale(key(i)).expect("get_stale");
            }),
        ),
    ];
    println!(
        "rust client, one at a time, {} ops each, connected to {}:",
        args.ops,
        c.connected_to().unwrap_or("?")
    );
    for (name, us) in &series {
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        println!(
            "  {name:<10} p50 {:8.1} us   p99 {:8.1} us   mean {mean:8.1} us",
            percentile(us, 50.0),
            percentile(us, 99.0)
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(args.threads + 1));
    let workers: Vec<_> = (0..args.threads)
        .map(|n| {
            let (stop, start, value) = (stop.clone(), start.clone(), value.clone());
            let mut wc = connect();
            std::thread::spawn(move || {
                wc.put(format!("bench/rs-t{n}/warmup"), &value)
                    .expect("warm-up put");
                start.wait();
                let (mut done, mut errors, mut i) = (0u64, 0u64, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    match wc.put(format!("bench/rs-t{n}/{:04}", i % 1000), &value) {
                        Ok(_) => done += 1,
                        Err(_) => errors += 1,
                    }
                    i += 1;
                }
                (done, errors)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut errors) = (0, 0);
    for w in workers {
        let (d, e) = w.join().expect("worker");
        done += d;
        errors += e;
    }
    let elapsed = began.elapsed().as_secs_f64();
    println!(
        "rust client, {} threads x 1 client each, puts for {elapsed:.1} s: {:.0} puts/s ({errors} errors)",
        args.threads,
        done as f64 / elapsed
    );
}
