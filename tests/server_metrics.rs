//! The operator's HTTP endpoint of real `zattd` processes (`--metrics-listen`):
//! - `metrics_parse_under_load`: while a client writes and reads through the leader, every
//!   server's `/metrics` is scraped repeatedly and each scrape is checked by Prometheus's own
//!   linter (`promtool check metrics`, from Debian's `prometheus` package, which `.ci/run`
//!   installs) and by this file's parser of the text format; the families the README lists are
//!   there, counters move with the load, the leader reports each peer's lag.
//! - `bad_http_requests_get_an_answer_and_a_closed_connection`: garbage, unknown paths and
//!   methods, oversized heads and silent connections get 400/404/405 or are closed at their
//!   deadline, connections over the limit are refused, and client requests keep being served
//!   throughout (the loop never stalls).
//! - `health_is_503_on_an_isolated_node_and_200_after_healing`: a follower, then the leader, cut
//!   off from both other servers (SIGSTOP: nothing reaches it and nothing leaves it to anyone
//!   who answers) reports 503 with its reason within a few election timeouts, and 200 again
//!   once the others are back; `/ready` is 503 on a `--join` server until it is added.
//!
//! - `health_follows_a_partition_made_with_iptables`: the leader's UDP port cut off on loopback
//!   (iptables rules this test adds and removes; skipped, saying why, where iptables cannot be
//!   used): the two others elect a leader and stay healthy while the cut-off one reports 503,
//!   and all three are healthy once the rules are gone.
//! - `the_readme_s_metrics_examples_run_as_written`: the README's commands (a server with
//!   `--metrics-listen`, curl of each path), its Prometheus scrape configuration (checked by
//!   `promtool check config`) and its table of metrics, which must list exactly the families a
//!   server exposes, with their types.
//!
//! Every server binds `--metrics-listen 127.0.0.1:0` and the test reads the address it logged.

mod common;
mod ops_readme;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, TestClient};
use zatt::wire::client::{Consistency, ErrorKind, Request, Response};

const T: Duration = Duration::from_secs(30);
const METRICS: &[&str] = &["--metrics-listen", "127.0.0.1:0"];

/// The HTTP address node `id` logged last (a restart binds a new one).
fn http_addr(c: &Cluster, id: u64) -> String {
    let deadline = Instant::now() + T;
    loop {
        let log = c.log_of(id);
        let found = log
            .lines()
            .rev()
            .find_map(|l| l.split("/ready on http://").nth(1))
            .map(|a| a.trim().to_string());
        if let Some(a) = found {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} logged no HTTP address"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP exchange: sends `raw`, reads until the server closes; (status code, head, body).
fn exchange(addr: &str, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .expect("the server closes the connection");
    let text = String::from_utf8(buf).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    assert!(
        head.contains("\r\nConnection: close"),
        "every answer closes: {head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    if !raw.starts_with(b"HEAD ") {
        assert_eq!(len, body.len(), "Content-Length matches the body");
    }
    (code, head.to_string(), body.to_string())
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: zatt\r\n\r\n").as_bytes(),
    );
    (code, body)
}

/// A parsed scrape: series (name with its labels, as written) → value, and families → type.
struct Scrape {
    series: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied()
    }
    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses and checks the text exposition format: HELP and TYPE before each family's samples,
/// valid names and values, `_total` counters, no series twice, histograms whose buckets are
/// cumulative and end with `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Scrape {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut series: BTreeMap<String, f64> = BTreeMap::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helps.insert(name.into(), help.into()).is_none(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helps.contains_key(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(name.starts_with("zatt_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter ends in _total: {line}");
            }
            assert!(types.insert(name.into(), kind.into()).is_none(), "{line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (key, value) = line.rsplit_once(' ').expect("NAME VALUE");
        let name = key.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        if let Some(labels) = key.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "a sample without TYPE: {line}");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        if types[family] == "counter" {
            assert!(v >= 0.0, "{line}");
        }
        assert!(series.insert(key.to_string(), v).is_none(), "twice: {line}");
    }
    // Histograms: per label set, cumulative buckets ending in +Inf == _count.
    for (family, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (k, v) in &series {
            let Some(labels) = k.strip_prefix(&format!("{family}_bucket{{")) else {
                continue;
            };
            let (others, le) = labels
                .rsplit_once("le=\"")
                .expect("a bucket has an le label");
            let le = le.trim_end_matches("\"}");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            buckets
                .entry(others.trim_end_matches(',').to_string())
                .or_default()
                .push((bound, *v));
        }
        for (labels, mut bs) in buckets {
            bs.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            assert!(
                bs.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{{{labels}}}: buckets not cumulative"
            );
            let last = bs.last().unwrap();
            assert!(last.0.is_infinite(), "{family}: no +Inf bucket");
            let count_key = if labels.is_empty() {
                format!("{family}_count")
            } else {
                format!("{family}_count{{{labels}}}")
            };
            assert_eq!(series.get(&count_key), Some(&last.1), "{count_key}");
        }
    }
    Scrape { series, types }
}

/// `promtool check metrics` on a scrape, if promtool is installed (it must be in CI).
fn promtool(text: &str) -> bool {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing: CI must install Debian's prometheus package (.ci/run does)"
            );
            return false;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- the scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[test]
fn metrics_parse_under_load() {
    let c = Cluster::start(
        3,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--snapshot-entries",
            "1500",
        ],
    );
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let addrs: Vec<String> = (1..=3).map(|i| http_addr(&c, i)).collect();

    // A follower refuses a write: an error by operation and kind to find in its metrics.
    match c.client(follower).unwrap().put("nope", "x").unwrap() {
        Response::Error(ErrorKind::NotLeader { .. }) => {}
        other => panic!("a follower answered a put with {other:?}"),
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let addr = c.addr(leader);
        std::thread::spawn(move || {
            let mut cl = TestClient::connect(&addr).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0u64;
            // Bounded: 4000 to 8000 writes (enough for snapshots every 1500 entries), at most
            // 60 s; past 4000, ended once the scrapes are done.
            while n < 8000
                && Instant::now() < deadline
                && !(n >= 4000 && stop.load(Ordering::Relaxed))
            {
                cl.put_pipelined("load/", n..n + 200, 32).unwrap();
                cl.get(&format!("load/{n}"), Consistency::Linearizable)
                    .unwrap();
                cl.get(&format!("load/{n}"), Consistency::Stale).unwrap();
                n += 200;
            }
            n
        })
    };

    let mut checked_by_promtool = 0;
    let mut first_puts = None;
    let mut last = None;
    for round in 0..8 {
        for (i, addr) in addrs.iter().enumerate() {
            let (code, body) = get(addr, "/metrics");
            assert_eq!(code, 200, "node {}: {body}", i + 1);
            let s = parse_exposition(&body);
            if promtool(&body) {
                checked_by_promtool += 1;
            }
            if i as u64 + 1 == leader {
                let puts = s.value("zatt_client_requests_total{op=\"put\"}");
                if round == 0 {
                    first_puts = puts;
                }
                last = Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().unwrap();
    assert!(writes >= 4000, "only {writes} writes in 60 s");

    // The leader's last scrape under load, against what the README promises.
    let s = last.unwrap();
    let mut want: Vec<&str> = vec![
        "zatt_raft_role",
        "zatt_raft_term",
        "zatt_raft_commit_index",
        "zatt_raft_applied_index",
        "zatt_raft_last_index",
        "zatt_raft_log_entries",
        "zatt_raft_log_bytes",
        "zatt_raft_proposals_total",
        "zatt_raft_applied_entries_total",
        "zatt_client_requests_total",
        "zatt_client_errors_total",
        "zatt_client_request_duration_seconds",
        "zatt_wal_fsync_duration_seconds",
        "zatt_wal_bytes",
        "zatt_snapshots_taken_total",
        "zatt_snapshot_duration_seconds",
        "zatt_client_connections",
        "zatt_peer_datagrams_dropped_total",
        "zatt_raft_peer_lag_entries",
        "zatt_disk_space_alarm",
    ];
    want.sort();
    for f in want {
        assert!(s.has_family(f), "the leader's scrape lacks {f}");
    }
    assert_eq!(s.value("zatt_raft_role{role=\"leader\"}"), Some(1.0));
    // The log in memory: no more entries than the log's last index, each counted with at
    // least its 25-byte head.
    let entries = s.value("zatt_raft_log_entries").unwrap();
    let last = s.value("zatt_raft_last_index").unwrap();
    assert!(
        entries >= 1.0 && entries <= last,
        "{entries} entries, last {last}"
    );
    let bytes = s.value("zatt_raft_log_bytes").unwrap();
    assert!(
        bytes >= entries * 25.0,
        "{bytes} bytes for {entries} entries"
    );
    // Messages refused for a peer's storage identity count as drops too (none here).
    for reason in ["IncarnationChanged", "NotMyIncarnation"] {
        let k = format!("zatt_peer_datagrams_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(s.value(&k), Some(0.0), "{k}");
    }
    assert_eq!(s.value("zatt_raft_role{role=\"follower\"}"), Some(0.0));
    for p in (1..=3).filter(|&i| i != leader) {
        let lag = s.value(&format!("zatt_raft_peer_lag_entries{{peer=\"{p}\"}}"));
        assert!(lag.is_some(), "the leader reports peer {p}'s lag");
    }
    let puts = s.value("zatt_client_requests_total{op=\"put\"}").unwrap();
    assert!(
        puts > first_puts.unwrap_or(0.0),
        "the put counter moved under load ({first_puts:?} → {puts})"
    );
    let put_hist = s
        .value("zatt_client_request_duration_seconds_count{op=\"put\"}")
        .unwrap();
    assert!(
        put_hist >= puts,
        "every answered put is in the latency histogram"
    );
    assert!(s.value("zatt_wal_fsync_duration_seconds_count").unwrap() > 0.0);
    assert!(s.value("zatt_raft_applied_entries_total").unwrap() > 0.0);

    // The follower counted its refusal by operation and kind.
    let (_, body) = get(&addrs[follower as usize - 1], "/metrics");
    let f = parse_exposition(&body);
    assert!(
        f.value("zatt_client_errors_total{op=\"put\",kind=\"not_leader\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    // Snapshots were taken under this load (every 1500 entries), each with its duration.
    let deadline = Instant::now() + T;
    loop {
        let (_, body) = get(&addrs[leader as usize - 1], "/metrics");
        let s = parse_exposition(&body);
        let taken = s.value("zatt_snapshots_taken_total").unwrap();
        if taken >= 1.0 {
            assert_eq!(
                s.value("zatt_snapshot_duration_seconds_count"),
                Some(taken),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{writes} writes and no snapshot taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if checked_by_promtool == 0 {
        eprintln!(
            "NOTE: promtool is not installed here, so the scrapes were checked by this test's \
             parser only; install Debian's prometheus package to check them with Prometheus's \
             own (CI does)"
        );
    }
}

#[test]
fn bad_http_requests_get_an_answer_and_a_closed_connection() {
    let c = Cluster::start(1, METRICS);
    c.wait_leader(T);
    let addr = http_addr(&c, 1);

    for (raw, want) in [
        (&b"GARBAGE\r\n\r\n"[..], 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics SPDY/3\r\n\r\n", 400),
        (b"\xff\xfe / HTTP/1.1\r\n\r\n", 400),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            405,
        ),
        (b"DELETE /health HTTP/1.1\r\n\r\n", 405),
        (b"GET /health?verbose=1 HTTP/1.0\n\n", 200),
    ] {
        let (code, head, _) = exchange(&addr, raw);
        assert_eq!(code, want, "{:?} → {head}", String::from_utf8_lossy(raw));
    }
    let (code, head, body) = exchange(&addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    // An error answer to HEAD has no body either (its Content-Length is the GET's).
    for (raw, want) in [
        (&b"HEAD /nowhere HTTP/1.1\r\n\r\n"[..], 404),
        (&b"HEAD metrics HTTP/1.1\r\n\r\n"[..], 400),
    ] {
        let (code, head, body) = exchange(&addr, raw);
        assert_eq!((code, body.as_str()), (want, ""), "{head}");
    }

    // A head that never ends: 400 once it passes the limit, and closed.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 9000));
    let (code, _, body) = exchange(&addr, &big);
    assert_eq!(code, 400, "{body}");

    // Silent connections: up to the limit they hold a slot until their deadline; one more
    // takes the slot of the oldest (closed at once), so a probe is never locked out by idle
    // connections. Meanwhile the server answers clients as usual.
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Accepted in order: each is in the server's table before the next connects.
    let (code, _) = get(&addr, "/health");
    assert_eq!(code, 200, "a probe beside 16 silent connections");
    let mut oldest = silent.remove(0);
    oldest
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        oldest.read(&mut b).unwrap_or(1),
        0,
        "the oldest silent connection made room (closed before its 5 s deadline)"
    );
    let mut cl = c.client(1).unwrap();
    assert!(matches!(
        cl.put("k", "v").unwrap(),
        Response::Written { .. }
    ));
    // Each other silent connection is closed by the server at its deadline (5 s after
    // accept), or made room for a later one.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap_or(0), 0, "closed by the server");
    }
    let (code, _) = get(&addr, "/health");
    assert_eq!(code, 200, "slots are free again");
    assert!(matches!(
        cl.call(&Request::Status).unwrap(),
        Response::Status(_)
    ));
}

/// Polls `path` on `addr` until it answers `code`; the body.
fn wait_http(c: &Cluster, addr: &str, path: &str, code: u16, what: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let (got, body) = get(addr, path);
        if got == code {
            return body;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("{what}: {path} on {addr} still {got}: {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_is_503_on_an_isolated_node_and_200_after_healing() {
    let mut c = Cluster::start(3, METRICS);
    let leader = c.wait_leader(T);
    let addrs: Vec<String> = (1..=3).map(|i| http_addr(&c, i)).collect();
    for a in &addrs {
        assert_eq!(
            get(a, "/health"),
            (200, "{\"health\":true,\"reason\":\"\"}\n".into())
        );
        assert_eq!(
            get(a, "/ready"),
            (200, "{\"ready\":true,\"reason\":\"\"}\n".into())
        );
    }

    // A follower cut off from both others.
    let f = (1..=3).find(|&i| i != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != f).collect();
    for &o in &others {
        c.pause(o);
    }
    let body = wait_http(
        &c,
        &addrs[f as usize - 1],
        "/health",
        503,
        "isolated follower",
    );
    assert!(
        body.starts_with("{\"health\":false,\"reason\":\"no leader known") && body.ends_with("}\n"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "one line: {body}");
    let (code, _) = get(&addrs[f as usize - 1], "/ready");
    assert_eq!(code, 503);
    for &o in &others {
        c.resume(o);
    }
    wait_http(
        &c,
        &addrs[f as usize - 1],
        "/health",
        200,
        "healed follower",
    );

    // The leader cut off from both followers steps down (check-quorum) and says so.
    let leader = c.wait_leader(T);
    let followers: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    for &o in &followers {
        c.pause(o);
    }
    let body = wait_http(
        &c,
        &addrs[leader as usize - 1],
        "/health",
        503,
        "isolated leader",
    );
    assert!(body.contains("no leader known"), "{body}");
    for &o in &followers {
        c.resume(o);
    }
    wait_http(
        &c,
        &addrs[leader as usize - 1],
        "/health",
        200,
        "healed leader",
    );
    c.wait_leader(T);

    // A server started with --join is not ready until it is added.
    let addr4 = c.start_joiner(4);
    let http4 = http_addr(&c, 4);
    let body = wait_http(&c, &http4, "/ready", 503, "joiner");
    assert!(body.contains("not a member"), "{body}");
    c.admin(
        &Request::MemberAdd {
            id: 4,
            addr: addr4,
            learner: false,
        },
        T,
    );
    wait_http(&c, &http4, "/ready", 200, "added joiner");
    c.kill(4);
}

#[test]
fn the_readme_s_metrics_examples_run_as_written() {
    let cwd = common::temp_dir("metrics-readme");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let http = format!("127.0.0.1:{}", common::free_port());
    let replace = [
        ("127.0.0.1:5254", addr.clone()),
        ("127.0.0.1:9254", http.clone()),
    ];
    let log = cwd.join("zattd.log");
    let mut server = ops_readme::spawn(
        "zattd --id 1 --cluster 1=127.0.0.1:5254 --data-dir ./zatt.1 --metrics-listen 127.0.0.1:9254 &",
        &replace,
        &cwd,
        &log,
    );
    let deadline = Instant::now() + T;
    loop {
        let up = TcpStream::connect(&http).is_ok() && get(&http, "/health").0 == 200;
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the README's server never became healthy: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for line in [
        r#"curl -s http://127.0.0.1:9254/health                # → {"health":true,"reason":""}"#,
        r#"curl -s http://127.0.0.1:9254/ready                 # → {"ready":true,"reason":""}"#,
        r#"curl -s http://127.0.0.1:9254/metrics | grep '^zatt_raft_role{role="leader"}'   # → zatt_raft_role{role="leader"} 1"#,
    ] {
        ops_readme::run_ok(line, &replace, &cwd, &[]);
    }

    // The table lists exactly the families a server exposes, each with its type.
    let (_, body) = get(&http, "/metrics");
    let scrape = parse_exposition(&body);
    let table: BTreeMap<String, String> = ops_readme::README
        .lines()
        .filter_map(|l| l.strip_prefix("| `zatt_"))
        .map(|rest| {
            let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
            let name = format!("zatt_{}", cells[0].trim_end_matches('`'));
            (name, cells[1].to_string())
        })
        .collect();
    assert_eq!(
        table, scrape.types,
        "the README's table of metrics (left) and a scrape (right)"
    );

    // The scrape configuration is one Prometheus accepts.
    let yaml: String = ops_readme::README
        .lines()
        .skip_while(|l| l.trim() != "scrape_configs:")
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(yaml.contains("targets:"), "{yaml}");
    let file = cwd.join("prometheus.yml");
    std::fs::write(&file, &yaml).unwrap();
    match std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(std::env::var_os("CI").is_none(), "CI must install promtool");
            eprintln!(
                "NOTE: promtool is not installed: the README's scrape configuration went unchecked"
            );
        }
        Err(e) => panic!("promtool: {e}"),
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&cwd);
}

/// iptables rules dropping a loopback UDP port's datagrams both ways; removed on drop.
struct PortCut {
    rules: Vec<Vec<String>>,
}

impl PortCut {
    fn iptables(args: &[String]) -> Result<(), String> {
        let o = std::process::Command::new("iptables")
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run iptables: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    fn cut(port: u16) -> Result<PortCut, String> {
        let tag = format!("zatt-test-{}", std::process::id());
        let mut cut = PortCut { rules: Vec::new() };
        for dir in ["--dport", "--sport"] {
            let rule: Vec<String> = [
                "INPUT",
                "-i",
                "lo",
                "-p",
                "udp",
                dir,
                &port.to_string(),
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut add = vec!["-I".to_string()];
            add.extend(rule.iter().cloned());
            PortCut::iptables(&add)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }
}

impl Drop for PortCut {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let mut del = vec!["-D".to_string()];
            del.extend(rule);
            let _ = PortCut::iptables(&del);
        }
    }
}

#[test]
fn health_follows_a_partition_made_with_iptables() {
    if let Err(why) = PortCut::iptables(&["-L".into(), "INPUT".into(), "-n".into()]) {
        eprintln!(
            "SKIPPED health_follows_a_partition_made_with_iptables: iptables cannot be used \
             here ({why}); it needs root"
        );
        return;
    }
    let c = Cluster::start(3, METRICS);
    let leader = c.wait_leader(T);
    let addrs: Vec<String> = (1..=3).map(|i| http_addr(&c, i)).collect();
    let port: u16 = c.addr(leader).rsplit_once(':').unwrap().1.parse().unwrap();
    let cut = match PortCut::cut(port) {
        Ok(cut) => cut,
        Err(why) => {
            eprintln!("SKIPPED health_follows_a_partition_made_with_iptables: {why}");
            return;
        }
    };
    let body = wait_http(
        &c,
        &addrs[leader as usize - 1],
        "/health",
        503,
        "cut-off leader",
    );
    assert!(body.contains("no leader known"), "{body}");
    for i in (1..=3).filter(|&i| i != leader) {
        // The majority side elects a leader of its own and stays (or is again) healthy.
        c.wait_status(i, T, "a leader on the majority side", |s| {
            s.leader.is_some() && s.leader != Some(leader)
        });
        wait_http(&c, &addrs[i as usize - 1], "/health", 200, "majority side");
    }
    drop(cut);
    for a in &addrs {
        wait_http(&c, a, "/health", 200, "healed");
    }
}

#[test]
fn snapshot_log_bytes_bounds_the_log_held_in_memory() {
    // Goal: `--snapshot-log-bytes` reaches the server: with large values snapshots come long
    // before `--snapshot-entries`, and the log held in memory stays near the bound.
    // Method: one server whose entry bound is far away, a 256 KiB byte bound, and 64 puts of
    // 32 KiB (2 MiB in all); the default bound (64 MiB) would take no snapshot for them.
    let c = Cluster::start(
        1,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--snapshot-entries",
            "1000000",
            "--snapshot-log-bytes",
            "256KiB",
        ],
    );
    c.wait_leader(T);
    let addr = http_addr(&c, 1);
    let mut cl = TestClient::connect(&c.addr(1)).unwrap();
    let value = "v".repeat(32 << 10);
    for i in 0..64 {
        match cl.put(&format!("big/{i}"), &value).unwrap() {
            Response::Written { .. } => {}
            other => panic!("put {i}: {other:?}"),
        }
    }
    // A compaction follows each snapshot once it is durable: wait for the last one.
    let deadline = Instant::now() + T;
    loop {
        let (_, body) = get(&addr, "/metrics");
        let s = parse_exposition(&body);
        let taken = s.value("zatt_snapshots_taken_total").unwrap();
        let log_bytes = s.value("zatt_raft_log_bytes").unwrap();
        if taken >= 4.0 && log_bytes <= (256 << 10) as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{taken} snapshots, {log_bytes} B of log in memory after 2 MiB of puts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
