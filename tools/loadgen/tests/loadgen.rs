//! The load generator's behaviour against a fake server (tests/common): what it counts, what it
//! reports, how it reads its command line. The binary is run as a user would run it; every run is
//! bounded by `--total` or a short `--duration` and a `--timeout`.

mod common;

use common::{json_num, Behaviour, FakeServer};
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
    let json = stdout(&o);
    assert_eq!(
        json.lines().count(),
        1,
        "one JSON object on one line: {json}"
    );
    assert_eq!(json_num(&json, "ops"), 500.0);
    assert_eq!(json_num(&json, "errors"), 0.0);
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
        assert!(json_num(&json, f) >= 0.0, "{f}");
    }
    assert!(json_num(&json, "p50_us") <= json_num(&json, "p99_us"));
    assert!(json_num(&json, "p99_us") <= json_num(&json, "max_us"));
    assert!(json_num(&json, "seconds") > 0.0);
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
    let json = stdout(&o);
    assert_eq!(json_num(&json, "ops"), 400.0);
    let (puts, gets) = (
        server.counters.puts.load(Ordering::SeqCst),
        server.counters.gets.load(Ordering::SeqCst),
    );
    assert_eq!(puts + gets, 400);
    assert!(puts > 0 && gets > 0, "puts {puts} gets {gets}");
    // The mix reports each kind apart, with the counts the server saw.
    let kind = |k: &str| {
        let at = json
            .find(&format!("\"{k}\":{{"))
            .unwrap_or_else(|| panic!("no {k} in {json}"));
        json_num(&json[at..], "ops") as u64
    };
    assert_eq!(kind("get"), gets, "{json}");
    assert_eq!(kind("put"), puts, "{json}");
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
    let json = stdout(&o);
    let busy = server.counters.busy_sent.load(Ordering::SeqCst) as f64;
    let unavailable = server.counters.unavailable_sent.load(Ordering::SeqCst) as f64;
    assert_eq!(busy, 70.0);
    assert_eq!(json_num(&json, "busy"), busy);
    assert_eq!(json_num(&json, "unavailable"), unavailable);
    assert_eq!(json_num(&json, "errors"), busy + unavailable);
    assert_eq!(json_num(&json, "ops") + json_num(&json, "errors"), 350.0);

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
    let json = stdout(&o);
    assert_eq!(json_num(&json, "ops"), 100.0);
    assert!(
        json_num(&json, "p90_us") >= 100_000.0,
        "the stall is hidden: {json}"
    );
    assert!(json_num(&json, "max_us") >= 300_000.0, "{json}");
    // The requests that waited behind the stalled one were sent late, and the summary says so.
    assert!(
        json_num(&json, "open_loop_max_send_lag_ms") >= 100.0,
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
// instead of hanging, with the lost requests counted as timeouts. Method: the fake stalls its
// second answer far longer than --timeout, and one client means one connection to stall.
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
    let json = stdout(&o);
    assert!(json_num(&json, "timeout") >= 1.0, "{json}");
    assert!(json_num(&json, "no_progress") == 1.0, "{json}");
    assert!(json_num(&json, "ops") < 1000.0, "{json}");
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
    let json = stdout(&o);
    assert_eq!(json_num(&json, "ops"), 300.0, "{json}");
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
    let json = stdout(&o);
    assert!(b.puts() > 0, "nothing reached the new leader: {json}");
    assert_eq!(json_num(&json, "not_leader"), a.puts() as f64, "{json}");
    assert_eq!(json_num(&json, "ops"), b.puts() as f64, "{json}");
    assert_eq!(
        json_num(&json, "ops") + json_num(&json, "errors"),
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
    let json = stdout(&o);
    assert_eq!(server.puts(), 50, "{json}");
    assert_eq!(server.gets(), 101, "{json}");
    assert_eq!(json_num(&json, "ops"), 101.0, "{json}");
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
    let json = stdout(&o);
    for f in [
        "fsync_p50_us",
        "fsync_p99_us",
        "udp_rtt_p50_us",
        "udp_rtt_p99_us",
    ] {
        assert!(json_num(&json, f) > 0.0, "{f}: {json}");
    }
    assert!(json_num(&json, "cpus") >= 1.0, "{json}");
    assert!(json.contains("\"loadavg\":\""), "{json}");
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
