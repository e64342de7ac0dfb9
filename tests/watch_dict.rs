//! `DistributedDict` with `RefreshPolicy::Watch` against real `zattd` clusters: two dicts, one
//! writing and the other seeing each change (values and `on_change` hooks, in order); reads
//! that never go back in time while the leader is killed; a dict's own writes visible to its
//! next read even when its change stream's server stops answering. Every wait is bounded;
//! nothing asserts on timing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use zatt::client::{Client, ClientConfig, DistributedDict, Expect, RefreshPolicy, WatchEvent};

const T: Duration = Duration::from_secs(30);

fn patient() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        timeout: T,
        ..ClientConfig::default()
    }
}

fn watched_dict(c: &Cluster) -> DistributedDict {
    let client = Client::connect(&c.endpoints(), patient()).unwrap();
    DistributedDict::from_client(client).with_policy(RefreshPolicy::Watch)
}

/// Reads `key` from `d` until it holds `want`, within `T`.
fn wait_value(d: &mut DistributedDict, key: &str, want: Option<&str>) {
    let deadline = Instant::now() + T;
    loop {
        let got = d.get(key).unwrap();
        if got.as_deref() == want.map(str::as_bytes) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} is {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_watching_dict_sees_each_change_another_makes_and_tells_its_hooks() {
    // Goal: a dict under `Watch` follows another client's writes from the change stream alone
    // (no reload), and its hook sees each change once, in revision order.
    let c = Cluster::start(3, &[]);
    c.wait_leader(T);
    let mut writer = watched_dict(&c);
    writer.insert("before", "0").unwrap();
    let mut reader = watched_dict(&c);
    let seen: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    {
        let seen = seen.clone();
        reader.on_change(move |e| seen.lock().unwrap().push(e.clone()));
    }
    assert_eq!(reader.get("before").unwrap(), Some(b"0".to_vec()));
    let loads = reader.refresh_count();
    writer.insert("a", "1").unwrap();
    wait_value(&mut reader, "a", Some("1"));
    writer.insert("a", "2").unwrap();
    writer.remove("before").unwrap();
    writer
        .cas("b", Expect::Absent, Some(b"3".to_vec()))
        .unwrap();
    wait_value(&mut reader, "b", Some("3"));
    assert_eq!(reader.get("a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(reader.get("before").unwrap(), None);
    assert_eq!(reader.len().unwrap(), 2);
    assert_eq!(
        reader.refresh_count(),
        loads,
        "the reader reloaded instead of following"
    );
    let seen = seen.lock().unwrap();
    let shown: Vec<(String, Option<String>)> = seen
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(e.key()).into_owned(),
                e.value().map(|v| String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("a".into(), Some("1".into())),
            ("a".into(), Some("2".into())),
            ("before".into(), None),
            ("b".into(), Some("3".into())),
        ]
    );
    assert!(seen.windows(2).all(|p| p[0].revision() < p[1].revision()));
    // The writer saw its own writes at once, from the stream too.
    assert_eq!(writer.get("a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(writer.get("before").unwrap(), None);
}

#[test]
fn reads_never_go_back_in_time_across_a_leader_kill() {
    // Goal: monotonic reads through a leader change. Method: a writer increments a counter key
    // through its own client; a watching dict whose stream is on the leader reads it in a
    // loop and must never see it decrease; the leader is killed half-way; at the end the dict
    // reaches the last value written.
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let client = Client::connect(&c.endpoints(), patient()).unwrap();
    let mut reader = DistributedDict::from_client(client)
        .with_policy(RefreshPolicy::Watch)
        .with_watch_endpoint(c.addr(leader));
    assert_eq!(reader.get("n").unwrap(), None);
    assert_eq!(reader.watch_connected_to(), Some(c.addr(leader).as_str()));
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(0u64));
    let writer = {
        let (eps, stop, last) = (c.endpoints(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            let mut w = Client::connect(&eps, patient()).unwrap();
            for i in 1..=400u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                w.put("n", i.to_string()).unwrap();
                *last.lock().unwrap() = i;
            }
        })
    };
    let mut seen = 0u64;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v: u64 = reader
            .get("n")
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap().parse().unwrap())
            .unwrap_or(0);
        assert!(v >= seen, "read went back from {seen} to {v}");
        seen = v;
        if !killed && v >= 150 {
            c.kill(leader);
            killed = true;
        }
        if writer.is_finished() && v == *last.lock().unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "the dict did not catch up ({v})");
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(killed);
    assert_eq!(seen, 400);
    assert_ne!(reader.watch_connected_to(), Some(c.addr(leader).as_str()));
}

#[test]
fn a_dict_reads_its_own_writes_even_when_its_stream_server_stalls() {
    // Goal: read-your-writes. Method: 50 inserts, each read back at once; then the server the
    // dict's stream is on is frozen (SIGSTOP) and the dict writes again: its next read still
    // returns the new value, the stream having moved to another server.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let client = Client::connect(&c.endpoints(), patient()).unwrap();
    let mut d = DistributedDict::from_client(client)
        .with_policy(RefreshPolicy::Watch)
        .with_watch_endpoint(c.addr(follower));
    for i in 0..50 {
        d.insert("k", format!("v{i}")).unwrap();
        assert_eq!(d.get("k").unwrap(), Some(format!("v{i}").into_bytes()));
    }
    assert_eq!(d.watch_connected_to(), Some(c.addr(follower).as_str()));
    let before = d.revision().unwrap();
    c.pause(follower);
    d.insert("k", "after").unwrap();
    let got = d.get("k");
    c.resume(follower);
    assert_eq!(got.unwrap(), Some(b"after".to_vec()));
    assert!(d.revision().unwrap() > before);
    assert_ne!(d.watch_connected_to(), Some(c.addr(follower).as_str()));
}

#[test]
fn a_watching_dict_whose_changes_are_no_longer_kept_loads_again_and_tells_its_hooks() {
    // Goal: when the stream cannot go on without a gap (`Compacted`), the dict loads again
    // instead of failing or missing changes, and its hooks learn the differences between the
    // old copy and the new one: once per key, nothing for a key that did not change. Method:
    // the dict's stream is on a follower, which is paused (SIGSTOP) while the dict's keys
    // change and 400 more are written through the leader, with snapshots every 50 entries,
    // so that once resumed it catches up by snapshot and ends the stream with `Compacted`.
    let c = Cluster::start(3, &["--snapshot-entries", "50"]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut writer = Client::connect(&[c.addr(leader)], patient()).unwrap();
    for k in ["keep", "gone", "same"] {
        writer.put(k, "1").unwrap();
    }
    // The follower is the only member the dict knows (its loads follow the follower's hint
    // to the leader): a watch that knows another member would go on there without a gap
    // (tests/watch_cluster.rs), and nothing would need loading again.
    let client = Client::connect(&[c.addr(follower)], patient()).unwrap();
    let mut d = DistributedDict::from_client(client)
        .with_policy(RefreshPolicy::Watch)
        .with_watch_endpoint(c.addr(follower));
    let seen: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    {
        let seen = seen.clone();
        d.on_change(move |e| seen.lock().unwrap().push(e.clone()));
    }
    assert_eq!(d.get("gone").unwrap(), Some(b"1".to_vec()));
    assert_eq!(d.watch_connected_to(), Some(c.addr(follower).as_str()));
    let loads = d.refresh_count();
    c.pause(follower);
    writer.put("keep", "2").unwrap();
    writer.delete("gone").unwrap();
    let mut last = 0;
    for i in 0..400 {
        last = writer.put(format!("n/{i}"), "v").unwrap();
    }
    c.resume(follower);
    c.wait_status(follower, T, "catching up", |s| s.applied_index >= last);
    // The next read takes up the stream: its end (`Compacted`), then a load.
    assert_eq!(d.get("keep").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        d.refresh_count(),
        loads + 1,
        "the stream was not compacted (it resumed elsewhere, or the dict missed the end)"
    );
    assert_eq!(d.get("gone").unwrap(), None);
    assert_eq!(d.get("same").unwrap(), Some(b"1".to_vec()));
    assert_eq!(d.len().unwrap(), 402);
    assert!(d.revision().unwrap() >= last);
    // The hooks: the changes the follower sent before its snapshot, if any, then one event
    // per key that differs; replayed over the first copy, they give the new one.
    let seen = seen.lock().unwrap();
    assert!(seen.windows(2).all(|p| p[0].revision() <= p[1].revision()));
    // Those of the reload all carry its revision, at or past the last write.
    let at_reload: Vec<&WatchEvent> = seen.iter().filter(|e| e.revision() >= last).collect();
    assert!(!at_reload.is_empty(), "no hook call at the reload");
    assert!(at_reload
        .iter()
        .all(|e| e.revision() == at_reload[0].revision()));
    let mut keys: Vec<&[u8]> = at_reload.iter().map(|e| e.key()).collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "a key told twice at the reload");
    assert!(
        seen.iter().all(|e| e.key() != b"same"),
        "an unchanged key told"
    );
    let mut replay: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = ["keep", "gone", "same"]
        .iter()
        .map(|k| (k.as_bytes().to_vec(), b"1".to_vec()))
        .collect();
    for e in seen.iter() {
        match e.value() {
            Some(v) => replay.insert(e.key().to_vec(), v.to_vec()),
            None => replay.remove(e.key()),
        };
    }
    assert_eq!(replay.len(), 402);
    assert_eq!(replay.get(&b"keep"[..]), Some(&b"2".to_vec()));
    assert!(!replay.contains_key(&b"gone"[..]));
}
