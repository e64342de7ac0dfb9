//! The client library against real `zattd` clusters on loopback (the harness in
//! `tests/common`): exactly-once writes through leader kills, the DistributedDict's refresh
//! policies, a 10,000-key scan loaded through a Pipeline, and TLS with a generated CA. Every
//! wait is bounded by a deadline; nothing asserts on timing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use zatt::client::{
    Client, ClientConfig, ClusterChange, Consistency, DistributedDict, Error, Expect, RefreshLock,
    RefreshPolicy, RequestView, Response, ScanOptions, TlsConfig,
};

fn patient() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// What a writer observed: increments acknowledged, and attempts whose outcome it could not know.
#[derive(Default, Debug)]
struct Tally {
    stats: zatt::client::ClientStats,
    acked: u64,
    maybe: u64,
    /// (key, revision) of every acknowledged put.
    puts: Vec<(String, u64)>,
}

fn counter_of(v: Option<Vec<u8>>) -> u64 {
    v.map(|b| String::from_utf8(b).unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Increments a counter by compare-and-swap and writes one fresh key per round, until `stop`.
fn writer(mut c: Client, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        round += 1;
        let current = match c.get("counter") {
            Ok(v) => v,
            Err(_) => continue,
        };
        let n = counter_of(current.clone());
        let expect = match current {
            None => Expect::Absent,
            Some(v) => Expect::Value(v),
        };
        match c.cas("counter", expect, Some((n + 1).to_string().into_bytes())) {
            Ok(_) => t.acked += 1,
            // Only this writer increments: a failed condition means an earlier ambiguous
            // attempt was applied after all; the tally already counts it as "maybe".
            Err(Error::CasFailed { .. }) => {}
            Err(e) if e.may_have_applied() => t.maybe += 1,
            Err(_) => {}
        }
        let key = format!("w/{round:06}");
        match c.put(&key, "x") {
            Ok(rev) => t.puts.push((key, rev)),
            Err(e) if e.may_have_applied() => t.maybe += 1,
            Err(_) => {}
        }
    }
    t.stats = c.stats();
    t
}

#[test]
fn writer_retrying_through_leader_kills_loses_no_ack_and_applies_nothing_twice() {
    // Goal: exactly-once writes across failover. Method: one writer increments a counter by
    // compare-and-swap and puts fresh keys while the leader is killed twice (and restarted).
    // At the end the counter equals the acknowledged increments (plus at most the attempts
    // whose outcome was unknown), and each acknowledged put still carries the revision its
    // reply reported (a re-applied retry would have moved it).
    let mut cluster = Cluster::start(3, &[]);
    let first = cluster.wait_leader(Duration::from_secs(20));
    let client = Client::connect(&cluster.endpoints(), patient()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let w = std::thread::spawn(move || writer(client, s));

    std::thread::sleep(Duration::from_millis(500));
    cluster.kill(first);
    let second = cluster.wait_leader(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart(first);
    cluster.kill(second);
    cluster.wait_leader(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart(second);
    cluster.wait_leader(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let t = w.join().unwrap();

    let mut c = Client::connect(&cluster.endpoints(), patient()).unwrap();
    let v = counter_of(c.get("counter").unwrap());
    eprintln!(
        "counter {v}; writer: acked {}, maybe {}, puts {}, {:?}",
        t.acked,
        t.maybe,
        t.puts.len(),
        t.stats
    );
    assert!(t.acked > 0, "the writer made progress: {t:?}");
    // The kills must have caught requests in flight and the client must have sent them again,
    // or this run never exercised exactly-once delivery.
    assert!(
        t.stats.resent_after_unknown_outcome > 0,
        "no request was resent after an unknown outcome: acked {}, maybe {}, {:?}",
        t.acked,
        t.maybe,
        t.stats
    );
    assert!(
        v >= t.acked,
        "lost acknowledged increments: {v} < {}",
        t.acked
    );
    assert!(
        v <= t.acked + t.maybe,
        "an increment applied without being acknowledged or reported as possibly applied: \
         counter {v}, acked {}, maybe {}",
        t.acked,
        t.maybe
    );
    for (key, rev) in &t.puts {
        let r = c.get_with(key, Consistency::Linearizable).unwrap();
        assert_eq!(r.value.as_deref(), Some(&b"x"[..]), "{key} lost");
        assert_eq!(r.revision, *rev, "{key} was applied again after its reply");
    }
}

#[test]
fn refresh_policies_on_a_real_cluster() {
    // Goal: each policy's observable behaviour against real servers. Method: dicts whose
    // refreshes are linearizable (so they reflect every acknowledged write even if leadership
    // moves) read while another client writes.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let leader_addr = cluster.addr(leader);
    let mut other = Client::connect(&cluster.endpoints(), patient()).unwrap();

    let mut always = DistributedDict::connect(&[&leader_addr], patient())
        .unwrap()
        .with_refresh_consistency(Consistency::Linearizable);
    assert_eq!(always.get("k").unwrap(), None);
    other.put("k", "1").unwrap();
    assert_eq!(always.get("k").unwrap(), Some(b"1".to_vec()));

    let mut count = DistributedDict::connect(&[&leader_addr], patient())
        .unwrap()
        .with_refresh_consistency(Consistency::Linearizable)
        .with_policy(RefreshPolicy::Count(2));
    assert_eq!(count.get("k").unwrap(), Some(b"1".to_vec())); // loads
    other.put("k", "2").unwrap();
    assert_eq!(count.get("k").unwrap(), Some(b"1".to_vec())); // second read: local
    assert_eq!(count.get("k").unwrap(), Some(b"2".to_vec())); // third: refreshed

    let lock = RefreshLock::new(false);
    let mut locked = DistributedDict::connect(&[&leader_addr], patient())
        .unwrap()
        .with_refresh_consistency(Consistency::Linearizable)
        .with_policy(RefreshPolicy::Lock(lock.clone()));
    assert_eq!(locked.len().unwrap(), 1);
    other.put("k2", "x").unwrap();
    assert_eq!(locked.len().unwrap(), 1);
    lock.set(true);
    assert_eq!(locked.len().unwrap(), 2);

    let mut timed = DistributedDict::connect(&[&leader_addr], patient())
        .unwrap()
        .with_refresh_consistency(Consistency::Linearizable)
        .with_policy(RefreshPolicy::Time(Duration::from_secs(3600)));
    assert_eq!(timed.get("k3").unwrap(), None);
    other.put("k3", "y").unwrap();
    assert_eq!(timed.get("k3").unwrap(), None);
    timed.refresh().unwrap();
    assert_eq!(timed.get("k3").unwrap(), Some(b"y".to_vec()));

    // The dict's own writes are visible at once and survive a refresh from a follower.
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .unwrap();
    let mut d = DistributedDict::connect(&[cluster.addr(follower)], patient()).unwrap();
    d.insert("mine", "v").unwrap();
    assert_eq!(d.get("mine").unwrap(), Some(b"v".to_vec()));
    assert_eq!(d.diagnostic().unwrap().leader, Some(leader));
}

#[test]
fn scan_pages_through_ten_thousand_keys_loaded_by_a_pipeline() {
    // Goal: a pipeline loads 10,000 keys with many requests in flight, and a scan returns them
    // all, in order, across pages.
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let mut c = Client::connect(&cluster.endpoints(), patient()).unwrap();
    let mut p = c.pipeline().unwrap();
    let started = Instant::now();
    let mut key = Vec::new();
    let mut written = 0;
    for i in 0..10_000u32 {
        key.clear();
        key.extend_from_slice(format!("scan/{i:05}").as_bytes());
        p.send_view(&RequestView::Put {
            session: None,
            key: &key,
            value: b"v",
        })
        .unwrap();
        while p.in_flight() >= 128 {
            let (_, r) = p.recv().unwrap();
            assert!(matches!(r, Response::Written { .. }), "{r:?}");
            written += 1;
        }
    }
    while p.in_flight() > 0 {
        let (_, r) = p.recv().unwrap();
        assert!(matches!(r, Response::Written { .. }), "{r:?}");
        written += 1;
    }
    assert_eq!(written, 10_000);
    // For information only (timing is for benchmarks, never asserted).
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "pipeline: 10,000 puts, 128 in flight, in {:.0} ms ({:.0} writes/s)",
        secs * 1e3,
        10_000.0 / secs
    );

    let mut pages = 0;
    let mut keys = Vec::new();
    for page in c.scan_with(ScanOptions {
        prefix: b"scan/".to_vec(),
        page_size: 700,
        ..ScanOptions::default()
    }) {
        pages += 1;
        keys.extend(page.unwrap().into_iter().map(|kv| kv.key));
    }
    let want: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("scan/{i:05}").into_bytes())
        .collect();
    assert_eq!(keys.len(), want.len());
    assert!(keys == want, "keys out of order or missing");
    assert!(pages >= 15, "{pages} pages");
    assert_eq!(c.len().unwrap(), 10_000);

    // For information only: one blocking client, one request per round trip.
    let started = Instant::now();
    for i in 0..500u32 {
        c.put(format!("seq/{i}"), "v").unwrap();
    }
    let put_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..500u32 {
        assert!(c.get(format!("seq/{i}")).unwrap().is_some());
    }
    let get_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "blocking client: 500 session-tagged puts at {:.0}/s, 500 linearizable gets at {:.0}/s",
        500.0 / put_secs,
        500.0 / get_secs
    );
}

#[test]
fn tls_cluster_serves_a_client_that_trusts_its_ca() {
    // Goal: the client speaks TLS to real servers and verifies them against a generated CA.
    let dir = common::temp_dir("client-tls");
    let (cluster, ca_path) = common::start_tls_cluster(&dir, 3);

    let config = ClientConfig {
        tls: Some(TlsConfig::with_ca(&ca_path)),
        ..patient()
    };
    let mut c = Client::connect(&cluster.endpoints(), config).unwrap();
    c.put("over-tls", "yes").unwrap();
    assert_eq!(c.get("over-tls").unwrap(), Some(b"yes".to_vec()));

    // Without TLS the same servers are not spoken to successfully.
    let plain = ClientConfig {
        timeout: Duration::from_secs(2),
        ..patient()
    };
    let result = Client::connect(&cluster.endpoints(), plain).and_then(|mut c| c.get("over-tls"));
    assert!(
        result.is_err(),
        "a plain client must not read from TLS servers"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// This process's TCP connections to any of `ports`: (still established, closed by the other
/// end and not yet by us). Read from /proc, so it sees the client library's sockets from outside.
fn connections_to(ports: &[u16]) -> (usize, usize) {
    let mut mine = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                mine.insert(inode.to_string());
            }
        }
    }
    let (mut established, mut closed_by_peer) = (0, 0);
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !mine.contains(f[9]) {
                continue;
            }
            let port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if !port.is_some_and(|p| ports.contains(&p)) {
                continue;
            }
            match f[3] {
                "01" => established += 1,
                "08" => closed_by_peer += 1,
                _ => {}
            }
        }
    }
    (established, closed_by_peer)
}

/// Waits (bounded) until the servers have closed every connection this process holds to them.
fn wait_until_servers_close_our_connections(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (established, closed_by_peer) = connections_to(ports);
        if established == 0 && closed_by_peer > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the servers never closed the idle connections ({established} still open)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connection_closed_by_the_server_while_idle_is_replaced_quietly() {
    // Goal: a server closing idle connections never turns the next request into an error.
    // Method: servers close connections idle for 100ms; after each request the test waits until
    // the servers have closed the clients' connections (seen in /proc), then an untagged write
    // (sent at most once), a read and a tagged write must succeed, each on a new connection.
    let cluster = Cluster::start(3, &["--idle-timeout", "100ms"]);
    cluster.wait_leader(Duration::from_secs(20));
    let ports: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.addr.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let untagged = ClientConfig {
        sessions: false,
        ..patient()
    };
    let mut plain = Client::connect(&cluster.endpoints(), untagged).unwrap();
    let mut tagged = Client::connect(&cluster.endpoints(), patient()).unwrap();
    let (plain_before, tagged_before) = (plain.stats().connects, tagged.stats().connects);
    for round in 0..3 {
        plain.put("plain", round.to_string()).unwrap();
        tagged.put("tagged", round.to_string()).unwrap();
        wait_until_servers_close_our_connections(&ports);
        assert_eq!(
            plain.get("plain").unwrap(),
            Some(round.to_string().into_bytes())
        );
        wait_until_servers_close_our_connections(&ports);
    }
    // Every request after the first found its connection closed and opened a new one.
    let (plain_after, tagged_after) = (plain.stats().connects, tagged.stats().connects);
    eprintln!(
        "after idle closes: {:?} {:?}",
        plain.stats(),
        tagged.stats()
    );
    assert!(plain_after - plain_before >= 5, "{:?}", plain.stats());
    assert!(tagged_after - tagged_before >= 2, "{:?}", tagged.stats());
}

#[test]
fn config_cluster_adds_and_removes_a_real_server() {
    // Goal: the DistributedDict's config_cluster, as in the original: add a server (it joins,
    // catches up and becomes a voter), then remove it.
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let mut d = DistributedDict::connect(&cluster.endpoints(), patient()).unwrap();
    d.insert("before", "4 joins").unwrap();
    let addr = cluster.start_joiner(4);
    d.config_cluster(ClusterChange::Add {
        id: 4,
        addr: addr.clone(),
    })
    .unwrap();
    let members = d.client().members().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.id == 4 && m.voter && m.addr == addr),
        "{members:?}"
    );
    let mut on_new = Client::connect(&[&addr], patient()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_new.get_stale("before").unwrap() != Some(b"4 joins".to_vec()) {
        assert!(Instant::now() < deadline, "server 4 never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.config_cluster(ClusterChange::Remove { id: 4 }).unwrap();
    let members = d.client().members().unwrap();
    assert_eq!(members.len(), 3, "{members:?}");
}

/// A config whose attempts give up on a silent server quickly, with a generous overall bound.
fn impatient_per_attempt() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// A loopback listener that is never accepted from (the kernel answers the handshake, nobody
/// reads: a paused or hung server), and a running cluster's endpoints after it. std's backlog
/// (128 or more) is above the attempts a test's timeout allows (30 s / 0.5 s): a full backlog
/// would refuse connections and let even a client without the fix under test move on.
fn silent_first() -> (std::net::TcpListener, String, Cluster, Vec<String>) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let mut endpoints = vec![silent_addr.clone()];
    endpoints.extend(cluster.endpoints());
    (silent, silent_addr, cluster, endpoints)
}

#[test]
fn a_server_that_accepts_but_never_answers_first_in_the_endpoints_is_left_for_the_next() {
    // Goal: one unresponsive endpoint (a paused or hung process, whose kernel still completes
    // TCP handshakes) must not hold every request until the timeout. Method: a loopback
    // listener that is never accepted from (the kernel answers the handshake, nobody reads)
    // goes first in the endpoints, a real cluster's after it; every kind of request must
    // succeed, and the client must have resent after the silent attempt rather than waiting.
    let (silent, silent_addr, _cluster, endpoints) = silent_first();

    let mut c = Client::connect(&endpoints, impatient_per_attempt()).unwrap();
    assert_eq!(c.connected_to(), Some(silent_addr.as_str()));
    let rev = c.put("k", "1").unwrap();
    assert!(rev > 0);
    assert_eq!(c.get("k").unwrap(), Some(b"1".to_vec()));
    c.cas("k", Expect::Value(b"1".to_vec()), Some(b"2".to_vec()))
        .unwrap();
    assert_eq!(c.get_stale("k").unwrap(), Some(b"2".to_vec()));
    assert!(c.delete("k").unwrap());
    assert_eq!(c.get("k").unwrap(), None);
    let stats = c.stats();
    eprintln!("{stats:?}, connected to {:?}", c.connected_to());
    assert!(stats.resent_after_unknown_outcome >= 1, "{stats:?}");
    assert_ne!(c.connected_to(), Some(silent_addr.as_str()));

    // A fresh client whose first request is a read (above, it was the session registration
    // that precedes the first tagged write) moves on the same way.
    let mut fresh = Client::connect(&endpoints, impatient_per_attempt()).unwrap();
    assert_eq!(fresh.get("k").unwrap(), None);
    assert_ne!(fresh.connected_to(), Some(silent_addr.as_str()));
    drop(silent);
}

#[test]
fn requests_sent_once_do_not_spend_their_one_attempt_on_a_server_that_never_answers() {
    // Goal: a request that is never resent (a write with sessions off, a membership change)
    // gets the whole operation's time for its one attempt, so that attempt must not go to a
    // fresh connection whose server accepts but never answers (paused or hung). Method: a
    // listener nobody accepts from goes first; with sessions off, a put, then adding and
    // removing a learner, each from a new client connected to that listener, must succeed
    // and the put must be there once.
    let (silent, silent_addr, _cluster, endpoints) = silent_first();
    let once = ClientConfig {
        sessions: false,
        ..impatient_per_attempt()
    };
    let mut c = Client::connect(&endpoints, once.clone()).unwrap();
    assert_eq!(c.connected_to(), Some(silent_addr.as_str()));
    let rev = c.put("once", "1").unwrap();
    assert_ne!(c.connected_to(), Some(silent_addr.as_str()));
    for change in [true, false] {
        let mut a = Client::connect(&endpoints, once.clone()).unwrap();
        assert_eq!(a.connected_to(), Some(silent_addr.as_str()));
        if change {
            a.member_add(9, "127.0.0.1:9", true).unwrap();
        } else {
            a.member_remove(9).unwrap();
        }
    }
    let r = c.get_with("once", Consistency::Linearizable).unwrap();
    assert_eq!((r.value.as_deref(), r.revision), (Some(&b"1"[..]), rev));
    assert!(c.members().unwrap().iter().all(|m| m.id != 9));
    drop(silent);
}

#[test]
fn a_paused_leader_first_in_the_endpoints_is_left_for_the_new_leader_and_no_write_applies_twice() {
    // Goal: a SIGSTOPped leader at the front of the endpoints (the `zatt` command line's default
    // order) blocks nothing once the others have elected a new leader, and a write whose first
    // attempt went to the paused leader is resent under its session tag (applied once).
    // Method: the client's session and connection are on the leader, listed first; the leader
    // is paused; a compare-and-swap increment and a put must succeed, the counter must have
    // moved by exactly one, and the put must keep the revision its reply reported once the old
    // leader runs again. The Cluster's Drop resumes (SIGCONT) and kills every node, so a
    // failing assertion never leaves a stopped process behind.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let endpoints = cluster.endpoints_first(leader);
    let mut c = Client::connect(&endpoints, impatient_per_attempt()).unwrap();
    c.cas("counter", Expect::Absent, Some(b"1".to_vec()))
        .unwrap();
    assert_eq!(c.connected_to(), Some(endpoints[0].as_str()));
    let before = c.stats();

    cluster.pause(leader);
    c.cas("counter", Expect::Value(b"1".to_vec()), Some(b"2".to_vec()))
        .unwrap();
    let rev = c.put("after", "x").unwrap();
    let after = c.stats();
    eprintln!("before {before:?}, after {after:?}");
    assert!(
        after.resent_after_unknown_outcome > before.resent_after_unknown_outcome,
        "the write to the paused leader was not resent: {after:?}"
    );
    assert_ne!(c.connected_to(), Some(endpoints[0].as_str()));

    cluster.resume(leader);
    cluster.wait_leader(Duration::from_secs(20));
    assert_eq!(c.get("counter").unwrap(), Some(b"2".to_vec()));
    let r = c.get_with("after", Consistency::Linearizable).unwrap();
    assert_eq!(r.value.as_deref(), Some(&b"x"[..]));
    assert_eq!(r.revision, rev, "the put was applied again after its reply");
}
