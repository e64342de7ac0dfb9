//! The load generator against a real 3-node Zatt cluster started by the test: a short run
//! bounded by --total, and a short failover measurement. Needs the `zattd` binary: `cargo test
//! --workspace` builds it next to this test's binary (target/<profile>/zattd); the ZATTD
//! environment variable overrides the path. Ports are chosen free at run time; every wait is
//! bounded; the servers are killed (by their own handles) when the test ends.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use zatt_loadgen::cluster::LocalCluster;

/// The server binary, or None when this checkout has no server to build (then the tests say so
/// and pass: they belong to the workspace that has one).
fn zattd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZATTD") {
        return Some(PathBuf::from(p));
    }
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src/bin/zattd.rs");
    if !source.exists() {
        eprintln!("no src/bin/zattd.rs in this checkout: skipping the real-cluster test");
        return None;
    }
    // target/<profile>/deps/cluster-HASH → target/<profile>/zattd
    let exe = std::env::current_exe().expect("test executable path");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("zattd");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` (which builds it) or set ZATTD",
        p.display()
    );
    Some(p)
}

/// One cluster at a time: two would fight over the two cores and over ports.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());
static NEXT_PORTS: AtomicU16 = AtomicU16::new(0);

/// `n` consecutive ports free for both UDP and TCP right now, found by binding them; each call
/// starts past the previous one's ports.
fn free_ports(n: usize) -> u16 {
    for _ in 0..200 {
        let offset = NEXT_PORTS.fetch_add(n as u16 + 1, Ordering::SeqCst);
        // Below the ephemeral range (32768 up), so that a restarted server cannot find its port
        // taken by some client connection's local end.
        let base = 20000 + (std::process::id() as u16 % 250) * 40 + offset % 2000;
        let ok = (0..n as u16).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
        });
        if ok {
            return base;
        }
    }
    panic!("no free ports");
}

/// A number field of a `--format json` summary, parsed (never searched for as text).
fn num(json: &str, field: &str) -> f64 {
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    v.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {field} in {json}"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

// Goal: against real servers, a --total run completes exactly that many writes and reads with
// no errors, and the JSON carries its fields. Method: start 3 zattd, write with pipelining,
// then read the same key space back with linearizable and stale gets.
#[test]
fn short_run_against_a_real_cluster() {
    let Some(zattd) = zattd() else { return };
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("cluster");
    let base = free_ports(3);
    let mut cluster = LocalCluster::start(&zattd, &dir, base, 3, vec![]).expect("start cluster");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader");
    let ep = cluster.endpoints_flag();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "--endpoints",
                &ep,
                "--format",
                "json",
                "--quiet",
                "--timeout",
                "10s",
                "--key-space",
                "500",
            ])
            .args(args)
            .output()
            .expect("run loadgen");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let json = run(&[
        "--op",
        "put",
        "--total",
        "2000",
        "--clients",
        "8",
        "--pipeline",
        "4",
        "--preload",
    ]);
    assert_eq!(num(&json, "ops"), 2000.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
    // Every key was preloaded, so no get may come back empty.
    let json = run(&["--op", "get", "--total", "1000", "--clients", "4"]);
    assert_eq!(num(&json, "ops"), 1000.0, "{json}");
    assert_eq!(num(&json, "not_found"), 0.0, "{json}");
    let json = run(&[
        "--op",
        "get",
        "--consistency",
        "stale",
        "--total",
        "600",
        "--clients",
        "3",
    ]);
    assert_eq!(num(&json, "ops"), 600.0, "{json}");
    let json = run(&[
        "--op",
        "mix",
        "--read-ratio",
        "0.9",
        "--total",
        "500",
        "--clients",
        "2",
    ]);
    assert_eq!(num(&json, "ops") + num(&json, "errors"), 500.0, "{json}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

// Goal: the failover mode kills leaders, sees new ones elected and writes acknowledged again,
// and draws its picture. Method: 2 trials with fast timings, then check the report and the SVG.
#[test]
fn failover_mode_measures_recovery() {
    let Some(zattd) = zattd() else { return };
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("failover");
    let svg = dir.with_extension("svg");
    let base = free_ports(3);
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "failover",
            "--trials",
            "2",
            "--election-timeout",
            "50ms",
            "--heartbeat-interval",
            "10ms",
        ])
        .arg("--zattd")
        .arg(&zattd)
        .args([
            "--base-port",
            &base.to_string(),
            "--format",
            "json",
            "--trial-timeout",
            "10s",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run loadgen failover");
    let json = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{json} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(num(&json, "trials"), 2.0, "{json}");
    assert_eq!(num(&json, "failed"), 0.0, "{json}");
    let picture = std::fs::read_to_string(&svg).expect("svg written");
    assert!(picture.starts_with("<svg") && picture.matches("<path").count() == 2);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&svg);
}

// Goal: perf/multi.sh drives one cluster with several load generators started together and
// merges their results: the merged ops are the sum of each run's, and no run began before the
// common start time. Method: a real 3-node cluster; the script with 2 load generators of 2
// clients for 1 s, using this build's loadgen; then its files are read back.
#[test]
fn multi_sh_runs_load_generators_together_and_merges_them() {
    let Some(zattd) = zattd() else { return };
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("multi");
    let base = free_ports(3);
    let mut cluster =
        LocalCluster::start(&zattd, &dir.join("cluster"), base, 3, vec![]).expect("start cluster");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader");
    let out = dir.join("out");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../perf/multi.sh");
    let o = Command::new("bash")
        .arg(&script)
        .args([
            "--boxes",
            "2",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ])
        .arg("--endpoints")
        .arg(cluster.endpoints_flag())
        .arg("--out")
        .arg(&out)
        .args(["--", "--key-space", "500"])
        .env("LOADGEN", env!("CARGO_BIN_EXE_loadgen"))
        .output()
        .expect("run perf/multi.sh");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("2 runs merged"), "{text}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);
    let (a, b, m) = (read("box-1.json"), read("box-2.json"), read("merged.json"));
    assert!(num(&a, "ops") > 0.0 && num(&b, "ops") > 0.0, "{a} {b}");
    assert_eq!(num(&m, "ops"), num(&a, "ops") + num(&b, "ops"), "{m}");
    assert_eq!(num(&m, "errors"), 0.0, "{m}");
    assert_eq!(num(&m, "runs"), 2.0, "{m}");
    let start: f64 = read("start_at").trim().parse().expect("start_at");
    for run in [&a, &b] {
        // Each run's measured period began after the common start and its warm-up.
        let from = num(run, "measured_from_unix_ns") / 1e9;
        assert!(from >= start + 0.2 - 1e-3, "{from} < {start}: {run}");
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
