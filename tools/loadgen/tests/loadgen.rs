//! The load generator's behaviour against a fake server (tests/common): what it counts, what it
//! reports, how it reads its command line, and how `loadgen merge` combines runs. The binary is
//! run as a user would run it; every run is bounded by `--total` or a short `--duration` and a
//! `--timeout`. JSON output is parsed (serde_json), never searched as text.

mod common;

use common::{Behaviour, FakeServer};
use serde_json::Value;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use zatt_loadgen::hist::Histogram;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one JSON object a `--format json` run prints, parsed.
fn parse(json: &str) -> Value {
    assert_eq!(
        json.trim_end().lines().count(),
        1,
        "one JSON object on one line: {json}"
    );
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

/// A number field, found by its path from the top (`&["errors_by_kind", "busy"]`).
fn num(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for k in path {
        at = at
            .get(k)
            .unwrap_or_else(|| panic!("no field {path:?} in {v}"));
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// A count by kind in `errors_by_kind`, 0 when that kind never happened.
fn errors_of(v: &Value, kind: &str) -> f64 {
    v["errors_by_kind"].get(kind).map_or(0.0, |n| {
        n.as_f64()
            .unwrap_or_else(|| panic!("errors_by_kind.{kind} is not a number in {v}"))
    })
}

// Goal: a bad command line is refused with exit code 2 and exactly one line naming the flag.
// Method: run the binary with several bad flags and read its stderr.
#[test]
fn bad_arguments_exit_2_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--clients", "zero"], "--clients"),
        (&["--clients", "0"], "--clients"),
        (&["--op", "frobnicate"], "--op"),
        (&["--duration", "5"], "--duration"),
        (&["--total", "10", "--duration", "1s"], "--total"),
        (&["--read-ratio", "1.5", "--op", "mix"], "--read-ratio"),
        (&["--read-ratio", "0.5"], "--read-ratio"),
        (&["--consistency", "eventual"], "--consistency"),
        (&["--clients", "2", "--conns", "3"], "--conns"),
        (&["--key-size", "2", "--key-space", "1000"], "--key-size"),
        (&["--rate", "-4"], "--rate"),
        (&["--no-such-flag"], "no-such-flag"),
        (&["--endpoints", "nowhere"], "--endpoints"),
        (&["run", "extra"], "extra"),
        (&["failover", "--servers", "4"], "--servers"),
        (&["--start-at", "soon"], "--start-at"),
        (&["--start-at", "99999999999999"], "--start-at"),
        (&["merge"], "merge"),
        (&["merge", "--format", "yaml", "a.json"], "--format"),
    ];
    for (args, names) in cases {
        let o = loadgen(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?} printed more than one line: {err}"
        );
        assert!(
            err.contains(names),
            "{args:?}: '{err}' does not name {names}"
        );
        assert!(stdout(&o).is_empty(), "{args:?} wrote to stdout");
    }
}

// Goal: the JSON summary's counts match what the server received, and every promised field is
// there. Method: a fake server counts puts; the load generator sends exactly --total of them.
#[test]
fn json_summary_counts_match_requests_received() {
    let server = FakeServer::start(Behaviour::Ok);
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--total",
        "500",
        "--clients",
        "8",
        "--conns",
        "2",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(num(&json, &["ops"]), 500.0);
    assert_eq!(num(&json, &["errors"]), 0.0);
    assert_eq!(server.counters.puts.load(Ordering::SeqCst), 500);
    for f in [
        "seconds",
        "req_per_s",
        "min_us",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "loadgen_cpu_seconds",
    ] {
        assert!(num(&json, &[f]) >= 0.0, "{f}");
    }
    assert!(num(&json, &["p50_us"]) <= num(&json, &["p99_us"]));
    assert!(num(&json, &["p99_us"]) <= num(&json, &["max_us"]));
    assert!(num(&json, &["seconds"]) > 0.0);
}

// Goal: gets are counted like puts and a mix sends both kinds. Method: --op mix against the fake,
// then compare the fake's counters with the summary.
#[test]
fn mix_sends_both_kinds_and_counts_them_all() {
    let server = FakeServer::start(Behaviour::Ok);
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--op",
        "mix",
        "--read-ratio",
        "0.5",
        "--total",
        "400",
        "--clients",
        "4",
        "--pipeline",
        "4",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(num(&json, &["ops"]), 400.0);
    let (puts, gets) = (
        server.counters.puts.load(Ordering::SeqCst),
        server.counters.gets.load(Ordering::SeqCst),
    );
    assert_eq!(puts + gets, 400);
    assert!(puts > 0 && gets > 0, "puts {puts} gets {gets}");
    // The mix reports each kind apart, with the counts the server saw, each with its histogram.
    assert_eq!(num(&json, &["get", "ops"]) as u64, gets, "{json}");
    assert_eq!(num(&json, &["put", "ops"]) as u64, puts, "{json}");
    assert_eq!(num(&json, &["get", "histogram", "count"]) as u64, gets);
    assert_eq!(num(&json, &["put", "histogram", "count"]) as u64, puts);
}

// Goal: errors from the server are reported by kind, with counts equal to what was sent, and
// errors plus successes account for every request. Method: a fake that answers some puts with
// Busy and some with Unavailable.
#[test]
fn server_errors_are_reported_by_kind() {
    let server = FakeServer::start(Behaviour::SomeErrors);
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--total",
        "350",
        "--clients",
        "4",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    let busy = server.counters.busy_sent.load(Ordering::SeqCst) as f64;
    let unavailable = server.counters.unavailable_sent.load(Ordering::SeqCst) as f64;
    assert_eq!(busy, 70.0);
    assert_eq!(errors_of(&json, "busy"), busy);
    assert_eq!(errors_of(&json, "unavailable"), unavailable);
    assert_eq!(num(&json, &["errors"]), busy + unavailable);
    assert_eq!(num(&json, &["ops"]) + num(&json, &["errors"]), 350.0);

    // The text summary names the kinds too.
    let server = FakeServer::start(Behaviour::SomeErrors);
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--total",
        "100",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    let text = stdout(&o);
    assert!(text.contains("busy=20"), "{text}");
    assert!(text.contains("throughput:"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
}

// Goal: the open loop measures latency from the intended send time, so a server stall shows in
// every request scheduled during it, not just in the one that was stuck (no coordinated
// omission). Method: the fake holds its second answer back 400 ms while the load generator runs
// 100 req/s with one request in flight; about 40 scheduled requests fall in the stall, so the 90th
// percentile must be at least 100 ms. (A lower bound the stall guarantees; load only raises it.)
#[test]
fn open_loop_latency_counts_from_intended_send_time() {
    let server = FakeServer::start(Behaviour::StallSecond(std::time::Duration::from_millis(
        400,
    )));
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--rate",
        "100",
        "--total",
        "100",
        "--clients",
        "1",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(num(&json, &["ops"]), 100.0);
    assert!(
        num(&json, &["p90_us"]) >= 100_000.0,
        "the stall is hidden: {json}"
    );
    assert!(num(&json, &["max_us"]) >= 300_000.0, "{json}");
    // The requests that waited behind the stalled one were sent late, and the summary says so.
    assert!(
        num(&json, &["open_loop_max_send_lag_ms"]) >= 100.0,
        "{json}"
    );
}

// Goal: the per-second line appears on stderr while a run lasts longer than a second.
// Method: a 1.5 s run against the fake; stderr must hold a line with req/s and p99.
#[test]
fn live_line_is_printed_each_second() {
    let server = FakeServer::start(Behaviour::Ok);
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--duration",
        "1500ms",
        "--rate",
        "200",
        "--clients",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.contains("req/s") && l.contains("p99")),
        "{err}"
    );
}

// Goal: an unreachable cluster ends the run with exit code 1 and a message, not a hang.
// Method: point the load generator at a port nobody listens on.
#[test]
fn no_server_is_a_runtime_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = loadgen(&[
        "--endpoints",
        &free.to_string(),
        "--total",
        "10",
        "--quiet",
        "--timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no leader"), "{}", stderr(&o));
}

// Goal: nearest-rank percentiles on a known set. Method: record 1..=1000 µs; the p-th percentile
// of that set is p*10 µs, reported within the histogram's 1 % bucket precision; min, max and p100
// are exact.
#[test]
fn percentiles_of_a_known_set() {
    let mut h = Histogram::new();
    for us in 1..=1000u64 {
        h.record(us * 1000);
    }
    let whole = h.clone();
    assert_eq!(h.count(), 1000);
    assert_eq!(h.min_ns(), 1000);
    assert_eq!(h.max_ns(), 1_000_000);
    assert_eq!(h.percentile_ns(100.0), 1_000_000);
    assert_eq!(h.percentile_ns(0.0), 1000);
    for (p, want_us) in [(50.0, 500u64), (90.0, 900), (99.0, 990), (99.9, 999)] {
        let got = h.percentile_ns(p);
        let want = want_us * 1000;
        assert!(
            got <= want && got * 100 >= want * 99,
            "p{p}: got {got} ns, want {want} ns within 1 %"
        );
    }
    // Small values are exact, and the median of an even set is the lower middle value.
    let mut h = Histogram::new();
    for v in [10u64, 20, 30, 40] {
        h.record(v);
    }
    assert_eq!(h.percentile_ns(50.0), 20);
    assert_eq!(h.percentile_ns(75.0), 30);
    assert_eq!(h.percentile_ns(76.0), 40);
    // Merging two halves gives the whole.
    let (mut a, mut b) = (Histogram::new(), Histogram::new());
    for v in 1..=500u64 {
        a.record(v * 1000);
        b.record((v + 500) * 1000);
    }
    a.merge(&b);
    for p in [0.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
        assert_eq!(a.percentile_ns(p), whole.percentile_ns(p), "p{p}");
    }
    assert_eq!(a.count(), 1000);
}

// Goal: a server that accepts requests but never answers ends a --total run after the timeout
// instead of hanging, with the lost requests counted as timeouts, and the measured period runs
// until the load generator gave up (the rate it reports is over the whole stall, not over the
// moment before it). Method: the fake stalls its second answer far longer than --timeout, and
// one client means one connection to stall.
#[test]
fn a_server_that_never_answers_ends_the_run() {
    let server = FakeServer::start(Behaviour::StallSecond(std::time::Duration::from_secs(30)));
    let ep = server.endpoint();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--total",
        "1000",
        "--clients",
        "1",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "500ms",
    ]);
    let json = parse(&stdout(&o));
    assert!(errors_of(&json, "timeout") >= 1.0, "{json}");
    assert!(errors_of(&json, "no_progress") == 1.0, "{json}");
    assert_eq!(num(&json, &["ops"]), 1.0, "{json}");
    // It gave up no earlier than a whole timeout after the only answer.
    assert!(num(&json, &["seconds"]) >= 0.5, "{json}");
}

// Goal: the load generator's own timeouts do not stretch the measured period: one request lost
// after the last was issued would otherwise add --timeout to it and cut the reported req/s.
// Method: two connections; the fake holds back one answer for 30 s while the other connection
// completes the rest of --total 200; that request times out after 3 s, and the period must end
// long before (at the last answer), with every other request a success.
#[test]
fn a_timed_out_request_does_not_stretch_the_measured_period() {
    let server = FakeServer::start(Behaviour::StallSecond(std::time::Duration::from_secs(30)));
    let o = loadgen(&[
        "--endpoints",
        &server.endpoint(),
        "--total",
        "200",
        "--clients",
        "2",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "3s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(errors_of(&json, "timeout"), 1.0, "{json}");
    assert_eq!(errors_of(&json, "no_progress"), 0.0, "{json}");
    assert_eq!(num(&json, &["ops"]), 199.0, "{json}");
    assert!(
        num(&json, &["seconds"]) < 1.5,
        "the timeout stretched the measured period: {json}"
    );
}

// Goal: --tls-ca makes the load generator speak TLS (rustls, ring) and verify the server's
// certificate; the counts are the same as in plain text. Method: a fake server behind rustls
// with a certificate for 127.0.0.1 signed by a fresh CA, and a run trusting that CA; then a run
// trusting no CA but the wrong name fails.
#[test]
fn tls_run_verifies_the_server_and_counts_the_same() {
    let server = FakeServer::start_tls(Behaviour::Ok);
    let ep = server.endpoint();
    let ca = server.ca_pem.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--tls-ca",
        ca,
        "--total",
        "300",
        "--clients",
        "4",
        "--pipeline",
        "2",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(num(&json, &["ops"]), 300.0, "{json}");
    assert_eq!(server.counters.puts.load(Ordering::SeqCst), 300);

    let o = loadgen(&[
        "--endpoints",
        &ep,
        "--tls-ca",
        ca,
        "--tls-server-name",
        "not-this-server.example",
        "--total",
        "3",
        "--quiet",
        "--timeout",
        "1s",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a certificate for another name was accepted: {}",
        stdout(&o)
    );
}

// Goal: a leader that was deposed answers NotLeader with the new leader's address; the load
// generator counts those answers as errors and moves its connections to the named leader, where
// the rest of the run succeeds. Method: fake A (claims to lead, redirects every put to B) and
// fake B (answers normally); every request is accounted for.
#[test]
fn not_leader_hint_moves_the_load_to_the_new_leader() {
    let b = FakeServer::start(Behaviour::Ok);
    let a = FakeServer::start(Behaviour::RedirectTo(b.addr));
    let o = loadgen(&[
        "--endpoints",
        &a.endpoint(),
        "--total",
        "300",
        "--clients",
        "4",
        "--conns",
        "2",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert!(b.puts() > 0, "nothing reached the new leader: {json}");
    assert_eq!(errors_of(&json, "not_leader"), a.puts() as f64, "{json}");
    assert_eq!(num(&json, &["ops"]), b.puts() as f64, "{json}");
    assert_eq!(
        num(&json, &["ops"]) + num(&json, &["errors"]),
        300.0,
        "{json}"
    );
}

// Goal: with several driver threads the --total quota is split exactly, and --preload writes
// every key once before the measured gets. Method: 2 threads against the fake; compare its
// counters with the summary.
#[test]
fn threads_split_the_total_and_preload_writes_each_key_once() {
    let server = FakeServer::start(Behaviour::Ok);
    let o = loadgen(&[
        "--endpoints",
        &server.endpoint(),
        "--op",
        "get",
        "--preload",
        "--key-space",
        "50",
        "--total",
        "101",
        "--clients",
        "4",
        "--threads",
        "2",
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert_eq!(server.puts(), 50, "{json}");
    assert_eq!(server.gets(), 101, "{json}");
    assert_eq!(num(&json, &["ops"]), 101.0, "{json}");
}

// Goal: the environment probe prints its figures as one JSON object. Method: a short probe in a
// temporary directory; every field is present and the counts are sane.
#[test]
fn probe_reports_fsync_udp_and_load() {
    let dir = std::env::temp_dir();
    let o = loadgen(&[
        "probe",
        "--dir",
        dir.to_str().unwrap(),
        "--fsync-samples",
        "3",
        "--udp-samples",
        "20",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    for f in [
        "fsync_p50_us",
        "fsync_p99_us",
        "udp_rtt_p50_us",
        "udp_rtt_p99_us",
    ] {
        assert!(num(&json, &[f]) > 0.0, "{f}: {json}");
    }
    assert!(num(&json, &["cpus"]) >= 1.0, "{json}");
    assert!(json["loadavg"].is_string(), "{json}");
}

// Goal: `loadgen status --leader-id` prints the leading node's id for scripts, and exits 1 when
// no endpoint leads. Method: the fake claims to be node 1 and leader; a dead port leads nothing.
#[test]
fn status_names_the_leader() {
    let server = FakeServer::start(Behaviour::Ok);
    let o = loadgen(&["status", "--endpoints", &server.endpoint(), "--leader-id"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1");
    let o = loadgen(&["status", "--endpoints", &server.endpoint()]);
    assert!(stdout(&o).contains("role=leader"), "{}", stdout(&o));
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = loadgen(&["status", "--endpoints", &free.to_string(), "--leader-id"]);
    assert_eq!(o.status.code(), Some(1));
}

// Goal: `loadgen --version` names the program and its version, for bug reports and result files.
#[test]
fn version_is_printed() {
    let o = loadgen(&["--version"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("loadgen {}\n", env!("CARGO_PKG_VERSION"))
    );
}

// Goal: an argument that is not UTF-8 is a usage error (exit 2, one line), not a panic.
#[test]
fn non_utf8_argument_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--endpoints")
        .arg(std::ffi::OsStr::from_bytes(b"127.0.0.1:\xff"))
        .output()
        .expect("run loadgen");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

// Goal: --start-at holds the load back until the given wall-clock time, and a time already past
// starts at once with a warning (runs meant to start together did not). Method: a run told to
// start 1.5 s ahead must report a measured period that begins no earlier; one told to start 5 s
// ago says it is late and still runs.
#[test]
fn start_at_holds_the_load_until_the_given_time() {
    let server = FakeServer::start(Behaviour::Ok);
    let at_ns = unix_now_ns() + 1_500_000_000;
    let at = format!("{}.{:09}", at_ns / 1_000_000_000, at_ns % 1_000_000_000);
    let o = loadgen(&[
        "--endpoints",
        &server.endpoint(),
        "--total",
        "20",
        "--start-at",
        &at,
        "--format",
        "json",
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    let from = json["measured_from_unix_ns"].as_u64().expect("a time");
    assert!(from >= at_ns, "started {} ns early", at_ns - from);
    assert_eq!(server.puts(), 20, "{json}");

    let past = (unix_now_ns() / 1_000_000_000 - 5).to_string();
    let o = loadgen(&[
        "--endpoints",
        &server.endpoint(),
        "--total",
        "5",
        "--start-at",
        &past,
        "--quiet",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("late"), "{}", stderr(&o));
}

/// A short run against the fake, its `--format json` summary written to `path` and returned.
fn run_to_file(server: &FakeServer, path: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--endpoints".to_string(),
        server.endpoint(),
        "--format".into(),
        "json".into(),
        "--quiet".into(),
        "--timeout".into(),
        "5s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = loadgen(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::write(path, &o.stdout).unwrap();
    parse(&stdout(&o))
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loadgen-merge-{}-{name}", std::process::id()))
}

/// (lowest ns, count) of every bucket of a summary's histogram.
fn buckets_of(h: &Value) -> Vec<(u64, u64)> {
    h["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| (b[0].as_u64().unwrap(), b[1].as_u64().unwrap()))
        .collect()
}

/// The nearest-rank percentile of a bucket list, computed here rather than by the load
/// generator: the lowest bucket holding the ceil(p% of n)-th sample, kept within [min, max].
fn nearest_rank(b: &std::collections::BTreeMap<u64, u64>, min: u64, max: u64, p: f64) -> u64 {
    let n: u64 = b.values().sum();
    let rank = (((p * 1000.0).round() as u128 * n as u128).div_ceil(100_000) as u64).max(1);
    if rank >= n {
        return max;
    }
    let mut seen = 0;
    for (floor, c) in b {
        seen += c;
        if seen >= rank {
            return (*floor).clamp(min, max);
        }
    }
    max
}

// Goal: merging two runs gives the sum of their ops and errors and the percentiles of one
// histogram of all their samples (not an average of percentiles). Method: two runs against the
// fake with different client counts; `loadgen merge --format json` of their files; the merged
// buckets must be the bucket-wise sum, and each merged percentile must equal the nearest-rank
// percentile this test computes from that sum. The text form prints the same figures.
#[test]
fn merging_two_runs_sums_ops_and_takes_percentiles_of_all_samples() {
    let server = FakeServer::start(Behaviour::SomeErrors);
    let (a_path, b_path) = (scratch("a.json"), scratch("b.json"));
    let a = run_to_file(&server, &a_path, &["--total", "600", "--clients", "2"]);
    let b = run_to_file(
        &server,
        &b_path,
        &["--total", "900", "--clients", "6", "--pipeline", "1"],
    );
    let o = loadgen(&[
        "merge",
        "--format",
        "json",
        a_path.to_str().unwrap(),
        b_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The two ran one after the other, never together, and the merge says so.
    assert!(
        stderr(&o).contains("were all measuring at once for only"),
        "{}",
        stderr(&o)
    );
    let m = parse(&stdout(&o));
    for f in ["ops", "errors", "not_found", "loadgen_cpu_seconds"] {
        let want = num(&a, &[f]) + num(&b, &[f]);
        assert!((num(&m, &[f]) - want).abs() < 0.002, "{f}: {m}");
    }
    assert_eq!(num(&m, &["ops"]) + num(&m, &["errors"]), 1500.0, "{m}");
    for kind in ["busy", "unavailable"] {
        assert_eq!(
            errors_of(&m, kind),
            errors_of(&a, kind) + errors_of(&b, kind),
            "{kind}"
        );
    }
    assert_eq!(num(&m, &["runs"]), 2.0);
    assert_eq!(num(&m, &["load", "clients"]), 8.0);

    let mut sum = std::collections::BTreeMap::new();
    for (floor, c) in buckets_of(&a["histogram"])
        .into_iter()
        .chain(buckets_of(&b["histogram"]))
    {
        *sum.entry(floor).or_insert(0u64) += c;
    }
    let merged: std::collections::BTreeMap<u64, u64> =
        buckets_of(&m["histogram"]).into_iter().collect();
    assert_eq!(
        merged, sum,
        "the merged histogram is not the sum of the two"
    );
    let min = num(&a, &["histogram", "min_ns"]).min(num(&b, &["histogram", "min_ns"])) as u64;
    let max = num(&a, &["histogram", "max_ns"]).max(num(&b, &["histogram", "max_ns"])) as u64;
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1000.0);
    for (field, p) in [
        ("min_us", 0.0),
        ("p50_us", 50.0),
        ("p90_us", 90.0),
        ("p99_us", 99.0),
        ("p999_us", 99.9),
        ("max_us", 100.0),
    ] {
        assert_eq!(
            format!("{:.1}", num(&m, &[field])),
            us(nearest_rank(&sum, min, max, p)),
            "{field} of the merge"
        );
    }
    // The merged period runs from the first run's start to the last one's end (these two ran
    // one after the other), and its req/s is every op over it.
    let t = |v: &Value, f: &str| v[f].as_u64().expect("a time");
    let from = t(&a, "measured_from_unix_ns").min(t(&b, "measured_from_unix_ns"));
    let to = t(&a, "measured_to_unix_ns").max(t(&b, "measured_to_unix_ns"));
    assert_eq!(t(&m, "measured_from_unix_ns"), from);
    assert_eq!(t(&m, "measured_to_unix_ns"), to);
    let rate = num(&m, &["ops"]) / ((to - from) as f64 / 1e9);
    assert!(
        (num(&m, &["req_per_s"]) - rate).abs() <= 0.06,
        "{rate}: {m}"
    );

    let o = loadgen(&["merge", a_path.to_str().unwrap(), b_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("p50 {}", us(nearest_rank(&sum, min, max, 50.0)))),
        "{text}"
    );
    assert!(text.contains("2 runs merged"), "{text}");
    assert!(text.contains(a_path.to_str().unwrap()), "{text}");
    // A merge of one file is that run again.
    let o = loadgen(&["merge", "--format", "json", a_path.to_str().unwrap()]);
    let one = parse(&stdout(&o));
    for f in ["ops", "p50_us", "p99_us", "max_us", "req_per_s"] {
        assert_eq!(num(&one, &[f]), num(&a, &[f]), "{f}");
    }
    let _ = std::fs::remove_file(&a_path);
    let _ = std::fs::remove_file(&b_path);
}

// Goal: the exchanged histogram merges into exactly the histogram of all samples, whatever the
// samples. Method: 20,000 pseudo-random latencies from 1 ns to past the clamp, split at random
// between two histograms; both go through their JSON form and back, are merged, and must equal
// (every bucket, count, min, max, sum) a histogram that recorded all of them.
#[test]
fn exchanged_histograms_merge_into_the_histogram_of_all_samples() {
    let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = x >> (x % 64).max(20);
        all.record(v);
        if x & 1 == 0 {
            a.record(v)
        } else {
            b.record(v)
        }
    }
    let back = |h: &Histogram| {
        let v: Value = serde_json::from_str(&h.to_json()).unwrap();
        zatt_loadgen::merge::histogram(Some(&v), "h").unwrap()
    };
    let mut merged = back(&a);
    merged.merge(&back(&b));
    assert!(merged == all, "{merged:?} != {all:?}");
    for p in [0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0] {
        assert_eq!(merged.percentile_ns(p), all.percentile_ns(p), "p{p}");
    }
    assert_eq!(merged.mean_ns(), all.mean_ns());
}

// Goal: bad input to `loadgen merge` is a clear one-line error naming the file and the fault,
// with exit code 2 and nothing on stdout, never a panic: a missing file, an empty one, text
// output, bytes that are not UTF-8, truncated or deeply nested JSON, JSON of the wrong shape, an
// old summary without a histogram, a histogram that does not decode or does not match the
// counts, an oversized file, and two runs of different workloads.
#[test]
fn bad_merge_input_is_a_clear_error_with_exit_2() {
    let server = FakeServer::start(Behaviour::Ok);
    let good = scratch("good.json");
    let v = run_to_file(&server, &good, &["--total", "50"]);
    let other = scratch("other.json");
    run_to_file(&server, &other, &["--total", "50", "--val-size", "200"]);
    let text = {
        let o = loadgen(&["--endpoints", &server.endpoint(), "--total", "5", "--quiet"]);
        o.stdout
    };
    let tamper = |f: &dyn Fn(&mut Value)| {
        let mut t = v.clone();
        f(&mut t);
        t.to_string().into_bytes()
    };
    let first_floor = v["histogram"]["buckets"][0][0].as_u64().unwrap();
    let good_text = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing", None, "No such file"),
        ("empty", Some(Vec::new()), "not JSON"),
        ("text", Some(text), "not JSON"),
        ("binary", Some(vec![0xff, 0xfe, 0x00, 0x7b]), "not UTF-8"),
        (
            "truncated",
            Some(good_text[..good_text.len() / 2].to_vec()),
            "not JSON",
        ),
        ("nested", Some("[".repeat(100_000).into_bytes()), "not JSON"),
        ("array", Some(b"[1, 2, 3]".to_vec()), "not a JSON object"),
        (
            "old",
            Some(tamper(&|t| {
                t.as_object_mut().unwrap().remove("histogram");
            })),
            "no \"histogram\" field",
        ),
        (
            "floor",
            Some(tamper(&|t| {
                t["histogram"]["buckets"][0][0] = (first_floor + 1).into()
            })),
            "is not the lowest value of a bucket",
        ),
        (
            "encoding",
            Some(tamper(&|t| t["histogram"]["encoding"] = "hdr-v2".into())),
            "encoding",
        ),
        (
            "count",
            Some(tamper(&|t| {
                t["ops"] = (v["ops"].as_u64().unwrap() + 1).into()
            })),
            "ops",
        ),
        (
            "bucket",
            Some(tamper(&|t| t["histogram"]["buckets"][0] = "12".into())),
            "is not [lowest_ns, count]",
        ),
        (
            "huge",
            Some(tamper(&|t| {
                t["histogram"]["buckets"][0][1] = 1e30.into();
            })),
            "not two whole numbers",
        ),
        (
            "settings",
            Some(tamper(&|t| {
                t["settings"].as_object_mut().unwrap().remove("op");
            })),
            "settings.op",
        ),
        ("large", Some(vec![b' '; 17 << 20]), "larger than"),
    ];
    for (name, bytes, reason) in cases {
        let path = scratch(&format!("bad-{name}.json"));
        if let Some(b) = &bytes {
            std::fs::write(&path, b).unwrap();
        }
        let o = loadgen(&["merge", good.to_str().unwrap(), path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.starts_with("loadgen merge: ") && err.contains(path.to_str().unwrap()),
            "{name}: {err}"
        );
        assert!(
            err.contains(reason),
            "{name}: '{err}' does not say '{reason}'"
        );
        assert!(stdout(&o).is_empty(), "{name}: printed {}", stdout(&o));
        let _ = std::fs::remove_file(&path);
    }
    // Two different workloads: refused, naming the setting.
    let o = loadgen(&["merge", good.to_str().unwrap(), other.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("val_size: 100 vs 200"), "{err}");
    assert!(stdout(&o).is_empty());
    let _ = std::fs::remove_file(&good);
    let _ = std::fs::remove_file(&other);
}

// Goal: when the server a connection was talking to goes away (a leader that died), the
// connection does not knock on its door until the run gives up: a refused reconnect moves on to
// the next endpoint given, and the run goes on there. Method: fakes A (found as the leader
// first) and B; once A has taken some puts it is stopped; B must then take the rest, and every
// request is accounted for.
#[test]
fn connections_of_a_server_that_went_away_move_to_the_other_endpoints() {
    let a = FakeServer::start(Behaviour::Ok);
    let b = FakeServer::start(Behaviour::Ok);
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--endpoints",
            &format!("{},{}", a.endpoint(), b.endpoint()),
            "--duration",
            "3s",
            "--clients",
            "4",
            "--format",
            "json",
            "--quiet",
            "--timeout",
            "1s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    for _ in 0..1000 {
        if a.puts() > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(a.puts() > 0, "nothing reached the first endpoint");
    drop(a);
    let o = child.wait_with_output().expect("loadgen ran");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json = parse(&stdout(&o));
    assert!(
        b.puts() > 0,
        "the load never moved to the other endpoint: {json}"
    );
    assert!(
        errors_of(&json, "connection") + errors_of(&json, "connect") >= 1.0,
        "{json}"
    );
    assert_eq!(errors_of(&json, "no_progress"), 0.0, "{json}");
}
