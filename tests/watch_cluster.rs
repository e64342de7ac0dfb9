//! Watches against real `zattd` clusters on loopback (the harness in `tests/common`): every
//! acknowledged change under a prefix reaches a watcher once, in revision order, with no gap,
//! through a `kill -9` of the leader; resuming from a revision; `Compacted` for a start older
//! than the history; a watcher that does not read cut off while others are served; a follower
//! serving a watch; cancelling; progress notifications on a quiet prefix. Every wait is bounded
//! by a deadline; nothing asserts on timing.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, TestClient};
use zatt::client::{
    Client, ClientConfig, Error, Expect, Request, Response, WatchEvent, WatchOptions,
};
use zatt::rng::SplitMix64;
use zatt::wire::client::ErrorKind;

const T: Duration = Duration::from_secs(30);

fn patient() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// A change as the writer saw it acknowledged: revision, key, value (None: deleted).
type Change = (u64, Vec<u8>, Option<Vec<u8>>);

fn change_of(e: &WatchEvent) -> Change {
    (
        e.revision(),
        e.key().to_vec(),
        e.value().map(<[u8]>::to_vec),
    )
}

/// Collects a watch's events until one at or past `until` arrived, within `T`.
fn collect_until(w: &mut zatt::client::Watch, until: u64, got: &mut Vec<Change>) {
    let deadline = Instant::now() + T;
    while got.last().map_or(true, |c| c.0 < until) && w.revision() < until {
        assert!(
            Instant::now() < deadline,
            "watch stalled at {}",
            w.revision()
        );
        match w.next_until(Instant::now() + Duration::from_millis(200)) {
            Ok(Some(e)) => got.push(change_of(&e)),
            Ok(None) => {}
            Err(e) => panic!("watch failed: {e}"),
        }
    }
}

#[test]
fn a_watcher_sees_every_acknowledged_change_once_in_order_through_a_leader_kill() {
    // Goal: the main guarantee. Method: a watcher on prefix "w/" connected to the
    // leader; a writer makes 1,000 puts, deletes and compare-and-swaps (some outside the prefix,
    // some that change nothing) with sessions; the leader is killed with SIGKILL half-way. The
    // watcher's events must be exactly the acknowledged changes under the prefix, each once, in
    // revision order, and replaying them must give the dictionary's final contents (`dump`).
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let eps = c.endpoints();
    let mut wc = Client::connect(&eps, patient()).unwrap();
    let mut opts = WatchOptions::new("w/", 0);
    opts.endpoint = Some(c.addr(leader));
    let watch = wc.watch_with(opts).unwrap();
    assert_eq!(watch.connected_to(), Some(c.addr(leader).as_str()));
    let watch = Arc::new(Mutex::new(watch));

    let stop = Arc::new(AtomicBool::new(false));
    let collected = Arc::new(Mutex::new(Vec::<Change>::new()));
    let reader = {
        let (watch, stop, collected) = (watch.clone(), stop.clone(), collected.clone());
        std::thread::spawn(move || {
            let mut w = watch.lock().unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match w.next_until(Instant::now() + Duration::from_millis(100)) {
                    Ok(Some(e)) => collected.lock().unwrap().push(change_of(&e)),
                    Ok(None) => {}
                    Err(e) => panic!("watch failed: {e}"),
                }
            }
        })
    };

    let mut client = Client::connect(&eps, patient()).unwrap();
    let mut rng = SplitMix64::new(11);
    let mut acked: Vec<Change> = Vec::new();
    for i in 0..1000u64 {
        if i == 500 {
            c.kill(leader);
        }
        let inside = rng.next_u64() % 5 != 0;
        let key = format!(
            "{}{}",
            if inside { "w/" } else { "x/" },
            rng.next_u64() % 40
        );
        let value = format!("v{i}");
        match rng.next_u64() % 4 {
            0 | 1 => {
                let rev = client.put(&key, &value).unwrap();
                acked.push((rev, key.into_bytes(), Some(value.into_bytes())));
            }
            2 => {
                let (existed, rev) = client.delete_with_revision(&key).unwrap();
                if existed {
                    acked.push((rev, key.into_bytes(), None));
                }
            }
            _ => {
                // Half of these hold (the value just read), half fail (a value never written).
                let current = client.get(&key).unwrap();
                let holds = rng.next_u64() % 2 == 0;
                let expect = match (&current, holds) {
                    (Some(v), true) => Expect::Value(v.clone()),
                    (None, true) => Expect::Absent,
                    (_, false) => Expect::Value(b"never".to_vec()),
                };
                let new = (rng.next_u64() % 3 != 0).then(|| value.clone().into_bytes());
                match client.cas(&key, expect, new.clone()) {
                    Ok(rev) => {
                        // A delete of an absent key changes nothing.
                        if new.is_some() || current.is_some() {
                            acked.push((rev, key.into_bytes(), new));
                        }
                    }
                    Err(Error::CasFailed { .. }) => {}
                    Err(e) => panic!("cas {i}: {e}"),
                }
            }
        }
    }
    // Wait until the watcher has everything up to the last acknowledged write.
    let deadline = Instant::now() + T;
    let last_inside = acked
        .iter()
        .rev()
        .find(|a| a.1.starts_with(b"w/"))
        .unwrap()
        .0;
    loop {
        let through = collected.lock().unwrap().last().map_or(0, |c| c.0);
        if through >= last_inside {
            break;
        }
        assert!(Instant::now() < deadline, "watcher did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let got = collected.lock().unwrap().clone();
    let want: Vec<Change> = acked
        .iter()
        .filter(|a| a.1.starts_with(b"w/"))
        .cloned()
        .collect();
    assert!(
        got.windows(2).all(|p| p[0].0 < p[1].0),
        "events out of revision order or repeated"
    );
    assert_eq!(
        got.len(),
        want.len(),
        "events differ from acknowledged changes"
    );
    assert_eq!(got, want);
    let w = watch.lock().unwrap();
    assert!(w.stats().resumes >= 1, "the watcher never had to resume");
    assert_ne!(w.connected_to(), Some(c.addr(leader).as_str()));
    // Replaying the events gives the prefix's final contents.
    let mut replay: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (_, k, v) in &got {
        match v {
            Some(v) => replay.insert(k.clone(), v.clone()),
            None => replay.remove(k),
        };
    }
    let dump: BTreeMap<Vec<u8>, Vec<u8>> = client
        .dump()
        .unwrap()
        .into_iter()
        .filter(|kv| kv.key.starts_with(b"w/"))
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(replay, dump);
}

#[test]
fn a_watch_resumes_from_a_revision_and_a_too_old_one_is_compacted() {
    // Goal: a watch from revision R gets exactly the changes from R on; one from before the
    // history's oldest revision is refused with `Compacted`, and a watch from `oldest` works.
    // Method: a history of 20 changes; 60 puts; watches from the middle and from revision 1.
    let c = Cluster::start(1, &["--watch-history-changes", "20"]);
    c.wait_leader(T);
    let mut client = Client::connect(&c.endpoints(), patient()).unwrap();
    let revs: Vec<u64> = (0..60)
        .map(|i| client.put(format!("k{i}"), format!("v{i}")).unwrap())
        .collect();
    let mut w = client.watch("", revs[50]).unwrap();
    let mut got = Vec::new();
    collect_until(&mut w, revs[59], &mut got);
    let want: Vec<Change> = (50..60)
        .map(|i| {
            (
                revs[i],
                format!("k{i}").into_bytes(),
                Some(format!("v{i}").into_bytes()),
            )
        })
        .collect();
    assert_eq!(got, want);
    let oldest = match client.watch("", 1) {
        Err(Error::Compacted { oldest }) => oldest,
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("a watch from revision 1 started though the history keeps 20 changes"),
    };
    assert!(oldest > revs[0] && oldest <= revs[40], "oldest {oldest}");
    let mut w = client.watch("", oldest).unwrap();
    let mut got = Vec::new();
    collect_until(&mut w, revs[59], &mut got);
    assert_eq!(
        got.first().map(|c| c.0),
        revs.iter().copied().find(|r| *r >= oldest)
    );
    assert_eq!(got.last().map(|c| c.0), Some(revs[59]));
}

#[test]
fn a_follower_serves_a_watch() {
    // Goal: watchers need not load the leader. Method: a watch opened on a follower receives
    // changes written through the leader.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut client = Client::connect(&c.endpoints(), patient()).unwrap();
    let mut opts = WatchOptions::new("f/", 0);
    opts.endpoint = Some(c.addr(follower));
    let mut w = client.watch_with(opts).unwrap();
    assert_eq!(w.connected_to(), Some(c.addr(follower).as_str()));
    let r1 = client.put("f/a", "1").unwrap();
    let r2 = client.put("g/b", "2").unwrap();
    let (_, r3) = client.delete_with_revision("f/a").unwrap();
    let mut got = Vec::new();
    collect_until(&mut w, r3, &mut got);
    assert_eq!(
        got,
        vec![
            (r1, b"f/a".to_vec(), Some(b"1".to_vec())),
            (r3, b"f/a".to_vec(), None)
        ]
    );
    assert!(r2 < r3);
    assert_eq!(w.connected_to(), Some(c.addr(follower).as_str()));
    let s = c.status(follower).unwrap();
    assert_ne!(s.role, "leader");
}

/// A raw connection whose receive buffer is kept small, so that what it does not read stays in
/// the server's buffers rather than in this process's kernel buffer.
fn small_window_client(addr: &str) -> TestClient {
    use std::os::unix::io::AsRawFd;
    let s = std::net::TcpStream::connect(addr).unwrap();
    // Small enough that this process's kernel holds little of the stream (its receive buffer
    // would otherwise grow to tens of MiB), large enough to read at full speed.
    let size: libc::c_int = 256 << 10;
    // SAFETY: a valid socket and an int-sized option value for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt SO_RCVBUF");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    TestClient::over(Box::new(s))
}

/// Reads frames from a raw connection until `pred` accepts one, within `T`.
fn recv_until(cl: &mut TestClient, mut pred: impl FnMut(u64, &Response) -> bool) -> Response {
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no matching frame in time");
        let (id, r) = cl.recv().unwrap();
        if pred(id, &r) {
            return r;
        }
    }
}

#[test]
fn a_watcher_that_does_not_read_is_cut_off_while_others_are_served() {
    // Goal: a slow watcher cannot make the server hold unbounded memory, and does not stop it
    // serving others. Method: a server with a 64 KiB watch buffer; a raw connection opens a
    // watch and reads nothing (its receive buffer kept at 256 KiB) while 16 MiB of values are
    // written; a second watcher reads everything. The first, when it finally reads, finds
    // `WatchOverflow` after some events; the second got every event; the server still answers.
    let c = Cluster::start(1, &["--watch-buffer-bytes", "64KiB"]);
    c.wait_leader(T);
    let mut slow = small_window_client(&c.addr(1));
    let watch_id = slow
        .send(&Request::Watch {
            prefix: b"big/".to_vec(),
            from_revision: 0,
        })
        .unwrap();
    let mut client = Client::connect(&c.endpoints(), patient()).unwrap();
    let mut fast = client.watch("big/", 0).unwrap();
    let value = vec![b'x'; 64 << 10];
    let mut last = 0;
    let mut fast_got = 0;
    for i in 0..256 {
        last = client.put(format!("big/{}", i % 8), &value).unwrap();
        while let Some(e) = fast.try_next().unwrap() {
            assert_eq!(e.value().map(<[u8]>::len), Some(value.len()));
            fast_got += 1;
        }
    }
    let mut rest = Vec::new();
    collect_until(&mut fast, last, &mut rest);
    assert_eq!(fast_got + rest.len(), 256);
    assert_eq!(fast.stats().overflows, 0);
    // Now the slow one reads: its watch was started, sent some events, then cut off.
    let mut events = 0;
    let end = recv_until(&mut slow, |id, r| {
        assert_eq!(id, watch_id);
        match r {
            Response::WatchEvents(e) => {
                events += e.len();
                false
            }
            Response::WatchProgress { .. } => false,
            _ => true,
        }
    });
    assert_eq!(
        end,
        Response::Error(ErrorKind::WatchOverflow { limit: 64 << 10 })
    );
    assert!(events < 256, "the slow watcher got all {events} events");
    // The server goes on serving, the slow connection included.
    assert!(matches!(
        slow.call(&Request::Status),
        Ok(Response::Status(_))
    ));
    client.put("after", "1").unwrap();
}

#[test]
fn a_watch_is_cancelled_and_a_quiet_one_gets_progress() {
    // Goal: `CancelWatch` ends a watch (both requests answered `Done`); a watch on a quiet
    // prefix receives progress notifications that move past writes elsewhere.
    let c = Cluster::start(1, &["--watch-progress-interval", "100ms"]);
    c.wait_leader(T);
    let mut cl = c.client(1).unwrap();
    let watch_id = cl
        .send(&Request::Watch {
            prefix: b"quiet/".to_vec(),
            from_revision: 0,
        })
        .unwrap();
    let started = match cl.recv().unwrap() {
        (id, Response::WatchProgress { revision }) if id == watch_id => revision,
        other => panic!("{other:?}"),
    };
    let rev = c.put("loud", "1");
    assert!(rev > started);
    recv_until(&mut cl, |id, r| {
        assert_eq!(id, watch_id, "{r:?}");
        match r {
            Response::WatchProgress { revision } => *revision >= rev,
            other => panic!("unexpected {other:?}"),
        }
    });
    let cancel_id = cl.send(&Request::CancelWatch { watch_id }).unwrap();
    let mut done = Vec::new();
    recv_until(&mut cl, |id, r| {
        if *r == Response::Done {
            done.push(id);
        }
        done.len() == 2
    });
    done.sort();
    assert_eq!(done, vec![watch_id, cancel_id]);
}

#[test]
fn a_follower_that_installs_a_snapshot_ends_the_watches_behind_it_with_compacted() {
    // Goal: when a follower's dictionary is replaced by a snapshot from the leader, its
    // history is gone: a watch it served that had not been sent every change the snapshot
    // covers ends with `Compacted { oldest }` (never a silent gap), and a new watch from
    // `oldest` works there. Method: snapshots every 50 entries; a watch on a follower; the
    // follower is paused (SIGSTOP) while 400 writes go in, so that the leader's log moves past
    // it; once resumed, it catches up by snapshot.
    let c = Cluster::start(3, &["--snapshot-entries", "50"]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut raw = c.client(follower).unwrap();
    let watch_id = raw
        .send(&Request::Watch {
            prefix: Vec::new(),
            from_revision: 0,
        })
        .unwrap();
    let started = match raw.recv().unwrap() {
        (id, Response::WatchProgress { revision }) if id == watch_id => revision,
        other => panic!("{other:?}"),
    };
    c.pause(follower);
    // Through the leader alone: a frozen server still accepts connections (the kernel does),
    // and this test is not about the client finding its way around one.
    let mut client = Client::connect(&[c.addr(leader)], patient()).unwrap();
    let mut last = 0;
    for i in 0..400 {
        last = client.put(format!("s{i}"), "v").unwrap();
    }
    c.resume(follower);
    let end = recv_until(&mut raw, |id, r| {
        assert_eq!(id, watch_id);
        !matches!(r, Response::WatchEvents(_) | Response::WatchProgress { .. })
    });
    let oldest = match end {
        Response::Error(ErrorKind::Compacted { oldest }) => oldest,
        other => panic!("expected Compacted, got {other:?}"),
    };
    assert!(
        oldest > started + 1 && oldest <= last + 1,
        "oldest {oldest}"
    );
    // Once caught up (it may have installed more than one snapshot on the way), the follower
    // serves a watch from the oldest revision it keeps.
    c.wait_status(follower, T, "catching up", |s| s.applied_index >= last);
    let mut opts = WatchOptions::new("", 1);
    opts.endpoint = Some(c.addr(follower));
    let oldest = match client.watch_with(opts) {
        Err(Error::Compacted { oldest }) => oldest,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a watch from revision 1 after a snapshot install started"),
    };
    let mut opts = WatchOptions::new("", oldest);
    opts.endpoint = Some(c.addr(follower));
    let mut w = client.watch_with(opts).unwrap();
    assert_eq!(w.connected_to(), Some(c.addr(follower).as_str()));
    let r = client.put("after", "1").unwrap();
    let mut got = Vec::new();
    collect_until(&mut w, r, &mut got);
    assert_eq!(got.last().map(|c| c.0), Some(r));
    assert!(got.iter().all(|c| c.0 >= oldest));
}

/// Pauses `follower` (SIGSTOP) while 400 writes under `prefix` go in through `writer`, then
/// resumes it and waits until it has applied them all: with `--snapshot-entries 50` it
/// catches up by snapshot. The writes' revisions, in order.
fn fall_behind_by_snapshot(
    c: &Cluster,
    follower: u64,
    writer: &mut Client,
    prefix: &str,
) -> Vec<u64> {
    c.pause(follower);
    let acked: Vec<u64> = (0..400)
        .map(|i| writer.put(format!("{prefix}{i}"), "v").unwrap())
        .collect();
    let last = *acked.last().unwrap();
    c.resume(follower);
    c.wait_status(follower, T, "catching up", |s| s.applied_index >= last);
    acked
}

#[test]
fn a_watch_its_server_can_no_longer_serve_yields_what_came_then_compacted_then_ends() {
    // Goal: the iterator surfaces `Compacted` in the middle of a stream (not only at the
    // start): it delivers the changes it received, then `Error::Compacted { oldest }` naming a
    // revision past the last change delivered (never a silent gap), then ends. Method: a
    // watch that knows only one follower; the follower is paused (SIGSTOP) while 400 writes go
    // in through the leader, with snapshots every 50 entries, so that once resumed it catches
    // up by snapshot and can no longer send the changes the snapshot covers.
    let c = Cluster::start(3, &["--snapshot-entries", "50"]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut writer = Client::connect(&[c.addr(leader)], patient()).unwrap();
    let first = writer.put("c/first", "v").unwrap();
    // The follower alone: resuming on another server would carry the watch past the gap.
    let mut only_follower = Client::connect(&[c.addr(follower)], patient()).unwrap();
    let mut opts = WatchOptions::new("c/", first);
    // Not read while the follower is paused; it must not be taken for dead when read again.
    opts.silence_timeout = Duration::from_secs(120);
    let mut w = only_follower.watch_with(opts).unwrap();
    let mut got = Vec::new();
    collect_until(&mut w, first, &mut got);
    assert_eq!(got, vec![(first, b"c/first".to_vec(), Some(b"v".to_vec()))]);
    let mut acked = vec![first];
    acked.extend(fall_behind_by_snapshot(&c, follower, &mut writer, "c/"));
    let last = *acked.last().unwrap();
    let deadline = Instant::now() + T;
    let oldest = loop {
        assert!(
            Instant::now() < deadline,
            "neither Compacted nor the end came"
        );
        match w.next_until(Instant::now() + Duration::from_millis(200)) {
            Ok(Some(e)) => got.push(change_of(&e)),
            Ok(None) => {}
            Err(Error::Compacted { oldest }) => break oldest,
            Err(e) => panic!("expected Compacted, got {e}"),
        }
    };
    // What came before it is exactly the acknowledged changes from the start, in order.
    let revs: Vec<u64> = got.iter().map(|c| c.0).collect();
    assert_eq!(revs, acked[..revs.len()].to_vec());
    let delivered = *revs.last().unwrap();
    assert!(
        oldest > delivered + 1 && oldest <= last + 1,
        "oldest {oldest}, delivered through {delivered}, last {last}"
    );
    assert!(w.next().is_none(), "the watch went on after Compacted");
    // It asked its one server again before giving up, and went no further.
    assert_eq!(w.stats().resumes, 1);
}

#[test]
fn a_watch_whose_server_was_compacted_goes_on_from_another_member_without_a_gap() {
    // Goal: `Compacted` from one member is that member's view: a watch that knows others
    // resumes on one that still keeps the changes, and the caller sees every change once, in
    // order, and no error. Method: as above (a paused follower caught up by snapshot), but
    // the client knows the leader too, whose history still holds every change.
    let c = Cluster::start(3, &["--snapshot-entries", "50"]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut writer = Client::connect(&[c.addr(leader)], patient()).unwrap();
    let first = writer.put("d/first", "v").unwrap();
    let mut both = Client::connect(&[c.addr(follower), c.addr(leader)], patient()).unwrap();
    let mut opts = WatchOptions::new("d/", first);
    opts.endpoint = Some(c.addr(follower));
    opts.silence_timeout = Duration::from_secs(120);
    let mut w = both.watch_with(opts).unwrap();
    assert_eq!(w.connected_to(), Some(c.addr(follower).as_str()));
    let mut got = Vec::new();
    collect_until(&mut w, first, &mut got);
    let mut acked = vec![first];
    acked.extend(fall_behind_by_snapshot(&c, follower, &mut writer, "d/"));
    let last = *acked.last().unwrap();
    collect_until(&mut w, last, &mut got);
    let revs: Vec<u64> = got.iter().map(|c| c.0).collect();
    assert_eq!(revs, acked, "every change once, in order");
    assert!(w.stats().resumes >= 1, "the watch never left the follower");
    assert_eq!(w.connected_to(), Some(c.addr(leader).as_str()));
}

#[test]
fn a_connection_with_a_watch_open_is_not_closed_as_idle() {
    // Goal: a watch on a quiet prefix keeps its connection, however long nothing comes (the
    // watch is a request in flight), while a connection with nothing open is closed. Method:
    // a 300 ms idle timeout and progress notifications only every minute (so the watch's
    // connection carries nothing either way); the test waits until a bare connection opened
    // at the same time has been closed as idle, then writes under the prefix: the watch still
    // delivers it.
    let c = Cluster::start(
        1,
        &[
            "--idle-timeout",
            "300ms",
            "--watch-progress-interval",
            "60s",
        ],
    );
    c.wait_leader(T);
    let mut raw = c.client(1).unwrap();
    let watch_id = raw
        .send(&Request::Watch {
            prefix: b"idle/".to_vec(),
            from_revision: 0,
        })
        .unwrap();
    match raw.recv().unwrap() {
        (id, Response::WatchProgress { .. }) if id == watch_id => {}
        other => panic!("{other:?}"),
    }
    let mut bare = std::net::TcpStream::connect(c.addr(1)).unwrap();
    bare.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + T;
    let mut b = [0u8; 16];
    loop {
        use std::io::Read;
        match bare.read(&mut b) {
            Ok(0) => break,
            Ok(_) => panic!("nothing was asked on the bare connection"),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "the bare connection was never closed"
        );
    }
    // The watch's connection has now been silent at least as long as the bare one.
    let rev = c.put("idle/a", "1");
    match recv_until(&mut raw, |_, r| {
        !matches!(r, Response::WatchProgress { .. })
    }) {
        Response::WatchEvents(e) => {
            assert_eq!(e.iter().map(|e| e.revision()).collect::<Vec<_>>(), [rev])
        }
        other => panic!("the watch ended: {other:?}"),
    }
}
