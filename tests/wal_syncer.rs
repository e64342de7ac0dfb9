//! The syncer thread: group commit reports every token durable and in order, and a failing
//! disk (EIO on fdatasync, ENOSPC on write; a real full tmpfs when mounting is allowed) stops
//! the process with exit code 74 and a message naming the file. Failing syncers run in a
//! child process (this test binary re-executed with `ZATT_WAL_CHILD` set).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zatt::storage::WriteBatch;
use zatt::types::*;
use zatt::wal::syncer::Datagram;
use zatt::wal::{InjectFault, Syncer, Wal, WalOptions, EXIT_DISK_FAILURE};

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("zatt-walsync-{}-{}", std::process::id(), name));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn entries(from: u64, n: u64, len: usize) -> Vec<Entry> {
    (from..from + n)
        .map(|i| Entry::new(Term(1), LogIndex(i), EntryKind::Normal, &vec![i as u8; len]))
        .collect()
}

/// Submits `batches` batches of `per` entries and waits (bounded) for all tokens.
fn run_batches(dir: &Path, opts: WalOptions, batches: u64, per: u64, len: usize) -> Vec<u64> {
    let (wal, boot) = Wal::open(dir, opts).unwrap();
    let mut next = boot.entries.last().map_or(1, |e| e.index.0 + 1);
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let syncer = Syncer::spawn(wal, waker, None);
    for t in 0..batches {
        syncer.submit(
            t,
            WriteBatch {
                hard_state: Some(HardState {
                    term: Term(1),
                    vote: None,
                    commit: LogIndex(next.saturating_sub(1)),
                    lost: None,
                }),
                entries: entries(next, per, len),
                snapshot: None,
            },
        );
        next += per;
    }
    let mut got = Vec::new();
    let mut events = mio::Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (got.len() as u64) < batches && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        syncer.drain_completed(&mut got);
    }
    let (p50, p99) = syncer.fsync_latency_us();
    assert!(p50 <= p99);
    assert!(syncer.syncs() >= 1 && syncer.syncs() <= batches);
    syncer.shutdown();
    got
}

#[test]
fn group_commit_reports_every_token_in_order_and_all_is_recovered() {
    // Goal: tokens come back once each, in submit order, and what they cover is durable.
    // Method: 200 batches through the syncer; reopen and count the entries.
    let d = TempDir::new("group");
    let got = run_batches(&d.0, WalOptions::default(), 200, 5, 100);
    assert_eq!(got, (0..200).collect::<Vec<u64>>());
    let (_, boot) = common::reopen_wal(&d.0, WalOptions::default());
    assert_eq!(boot.entries.len(), 1000);
    assert_eq!(boot.hard_state.commit, LogIndex(995));
}

/// The child half: runs a syncer on the directory and options the parent chose; it must
/// exit with 74 before reaching the end.
#[test]
fn failing_disk_child() {
    let Ok(mode) = std::env::var("ZATT_WAL_CHILD") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("ZATT_WAL_DIR").unwrap());
    let opts = match mode.as_str() {
        "eio" => WalOptions {
            inject_fault: Some(InjectFault::SyncEio { nth_sync: 1 }),
            ..WalOptions::default()
        },
        "enospc" => WalOptions {
            inject_fault: Some(InjectFault::WriteEnospc { bytes: 100_000 }),
            ..WalOptions::default()
        },
        "snapshot-enospc" => {
            let opts = WalOptions {
                inject_fault: Some(InjectFault::WriteEnospc { bytes: 100_000 }),
                ..WalOptions::default()
            };
            snapshot_past_the_limit(&dir, opts);
            println!("CHILD-SURVIVED");
            return;
        }
        _ => WalOptions {
            segment_bytes: 256 << 10,
            preallocate: false,
            ..WalOptions::default()
        },
    };
    run_batches(&dir, opts, 400, 16, 1000);
    println!("CHILD-SURVIVED");
}

/// A few small batches, then a snapshot larger than the injected space left.
fn snapshot_past_the_limit(dir: &Path, opts: WalOptions) {
    let (wal, _) = Wal::open(dir, opts).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let syncer = Syncer::spawn(wal, waker, None);
    syncer.submit(
        0,
        WriteBatch {
            entries: entries(1, 10, 100),
            ..WriteBatch::default()
        },
    );
    syncer.submit_snapshot(
        1,
        Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term(1),
                membership: Membership::default(),
            },
            data: vec![7u8; 200_000].into(),
        },
    );
    let mut events = mio::Events::with_capacity(4);
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.len() < 2 && Instant::now() < deadline {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        syncer.drain_completed(&mut done);
    }
}

fn run_child(mode: &str, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failing_disk_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ZATT_WAL_CHILD", mode)
        .env("ZATT_WAL_DIR", dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text)
}

#[test]
fn failing_fdatasync_stops_the_process_with_exit_74() {
    // Goal: fail-stop on EIO. Method: child with an injected EIO on its first group sync.
    let d = TempDir::new("eio");
    let (code, text) = run_child("eio", &d.0);
    assert_eq!(code, Some(EXIT_DISK_FAILURE), "{text}");
    assert!(
        text.contains("fatal disk failure") && text.contains("fdatasync"),
        "{text}"
    );
    assert!(
        text.contains("Input/output error") && text.contains(".wal"),
        "{text}"
    );
    assert!(!text.contains("CHILD-SURVIVED"));
}

#[test]
fn full_disk_stops_the_process_with_exit_74() {
    // Goal: fail-stop on ENOSPC. Method: an injected ENOSPC after 100 kB; then, if this
    // process may mount, a real 2 MiB tmpfs filled by the child.
    let d = TempDir::new("enospc");
    let (code, text) = run_child("enospc", &d.0);
    assert_eq!(code, Some(EXIT_DISK_FAILURE), "{text}");
    assert!(
        text.contains("No space left on device") && text.contains(".wal"),
        "{text}"
    );

    let m = TempDir::new("tmpfs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2M", "tmpfs"])
        .arg(&m.0)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipping the real-ENOSPC half: cannot mount a tmpfs here (covered by the injected fault above)");
        return;
    }
    let (code, text) = run_child("tmpfs", &m.0);
    let _ = Command::new("umount").arg(&m.0).status();
    assert_eq!(code, Some(EXIT_DISK_FAILURE), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
}

#[test]
fn full_disk_while_writing_a_snapshot_names_the_snapshot() {
    // Goal: an operator told "WAL write failed" looks at the log; when the snapshot file is
    // what did not fit, the fail-stop line says so, with the file. Method: child with an
    // injected ENOSPC that a small batch passes and a 200 kB snapshot does not.
    let d = TempDir::new("snapenospc");
    let (code, text) = run_child("snapshot-enospc", &d.0);
    assert_eq!(code, Some(EXIT_DISK_FAILURE), "{text}");
    assert!(
        text.contains("snapshot write failed: snapshot at index 10")
            && text.contains(".snap")
            && text.contains("No space left on device"),
        "{text}"
    );
    assert!(!text.contains("WAL write failed"), "{text}");
    assert!(!text.contains("CHILD-SURVIVED"));
}

#[test]
fn a_disk_too_small_for_a_segment_says_how_much_is_needed() {
    // Goal: a start on a small disk names the space a segment needs and the flag that sets it,
    // and leaves no half-made segment behind; a smaller --wal-segment-size then starts.
    // Method: a 1 MiB tmpfs (skipped where this process may not mount one).
    let m = TempDir::new("smalldisk");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(&m.0)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs here");
        return;
    }
    let err = Wal::open(&m.0, WalOptions::default())
        .err()
        .map(|e| e.to_string());
    let leftovers: Vec<String> = fs::read_dir(&m.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".wal"))
        .collect();
    let small = Wal::open(
        &m.0,
        WalOptions {
            segment_bytes: 256 << 10,
            ..WalOptions::default()
        },
    )
    .map(|_| ());
    let _ = Command::new("umount").arg(&m.0).status();
    let err = err.expect("a 64 MiB segment cannot fit in 1 MiB");
    assert!(
        err.contains("not enough disk space")
            && err.contains(&(64u64 << 20).to_string())
            && err.contains("--wal-segment-size"),
        "{err}"
    );
    assert!(leftovers.is_empty(), "{leftovers:?}");
    small.expect("a 256 KiB segment fits");
}

#[test]
fn snapshot_submitted_between_batches_is_ordered_with_them() {
    // Goal: submit_snapshot is durable in submit order with the batches around it and
    // compacts the log. Method: batches, a snapshot, more batches; reopen.
    let d = TempDir::new("snap");
    let opts = WalOptions {
        segment_bytes: 8192,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&d.0, opts.clone()).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let syncer = Syncer::spawn(wal, waker, None);
    for t in 0..20u64 {
        let b = WriteBatch {
            entries: entries(t * 10 + 1, 10, 100),
            ..WriteBatch::default()
        };
        syncer.submit(t, b);
    }
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(150),
            term: Term(1),
            membership: Membership::default(),
        },
        data: b"kv state"[..].into(),
    };
    syncer.submit_snapshot(20, snap.clone());
    syncer.submit(
        21,
        WriteBatch {
            entries: entries(201, 5, 100),
            ..WriteBatch::default()
        },
    );
    let mut got = Vec::new();
    let mut events = mio::Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 22 && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        syncer.drain_completed(&mut got);
    }
    assert_eq!(got, (0..22).collect::<Vec<u64>>());
    syncer.shutdown();
    let (wal, boot) = common::reopen_wal(&d.0, opts);
    assert_eq!(boot.snapshot, Some(snap));
    assert_eq!(boot.entries.first().map(|e| e.index), Some(LogIndex(151)));
    assert_eq!(boot.entries.last().map(|e| e.index), Some(LogIndex(205)));
    assert!(wal.segment_count() < 4, "segments {}", wal.segment_count());
}

/// A receiving socket on loopback and a sending one for the syncer.
fn udp_pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (rx, tx)
}

fn datagram(to: &std::net::UdpSocket, bytes: &[u8], key: Option<(u64, u64)>) -> Datagram {
    Datagram {
        to: to.local_addr().unwrap(),
        bytes: bytes.to_vec(),
        key,
    }
}

/// Datagrams received until none comes for 300 ms.
fn received(rx: &std::net::UdpSocket) -> Vec<Vec<u8>> {
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn datagrams_leave_after_their_batch_is_synced_and_only_the_last_of_a_key() {
    // Goal: what waited for a batch (a follower's acknowledgement) leaves once the batch is
    // synced, and of datagrams with one key released together only the last. Method: one batch
    // with two datagrams of one key and one without. (That none leaves when the sync fails is
    // `no_token_is_reported_after_a_failed_sync`.)
    let d = TempDir::new("sends");
    let (wal, _) = Wal::open(&d.0, WalOptions::default()).unwrap();
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (rx, tx) = udp_pair();
    let syncer = Syncer::spawn(wal, waker, Some(tx));
    syncer.submit_then_send(
        1,
        WriteBatch {
            entries: entries(1, 3, 10),
            ..WriteBatch::default()
        },
        vec![
            datagram(&rx, b"ack 2", Some((2, 7))),
            datagram(&rx, b"vote", None),
            datagram(&rx, b"ack 3", Some((2, 7))),
        ],
        false,
    );
    let mut buf = [0u8; 64];
    let n = rx
        .recv(&mut buf)
        .expect("a datagram once the batch is synced");
    let mut got = vec![buf[..n].to_vec()];
    got.extend(received(&rx));
    assert_eq!(got, vec![b"vote".to_vec(), b"ack 3".to_vec()]);
    assert_eq!(syncer.send_drops(), 0);
    syncer.shutdown();
}

/// Waits (bounded) until the syncer has reported a token, without draining it.
fn until_completed(syncer: &Syncer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !syncer.has_completed() {
        assert!(Instant::now() < deadline, "no token completed in 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the waker fired within `wait`.
fn woken(poll: &mut mio::Poll, wait: Duration) -> bool {
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(wait)).unwrap();
    !events.is_empty()
}

#[test]
fn a_quiet_group_wakes_the_loop_only_when_the_loop_asked() {
    // Goal: a group of quiet batches (a follower's) is reported without waking the loop; one
    // after `want_wake`, or any batch that is not quiet, wakes it. Method: a waker on a poll
    // of our own, and each kind of batch in turn.
    let d = TempDir::new("quiet");
    let (wal, _) = Wal::open(&d.0, WalOptions::default()).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let syncer = Syncer::spawn(wal, waker, None);
    let batch = |i: u64| WriteBatch {
        entries: entries(i, 1, 10),
        ..WriteBatch::default()
    };
    syncer.submit_then_send(1, batch(1), Vec::new(), true);
    until_completed(&syncer);
    assert!(!woken(&mut poll, Duration::from_millis(200)), "quiet woke");
    assert_eq!(syncer.completed(), vec![1], "reported all the same");

    syncer.want_wake();
    syncer.submit_then_send(2, batch(2), Vec::new(), true);
    assert!(
        woken(&mut poll, Duration::from_secs(60)),
        "asked for, not woken"
    );
    until_completed(&syncer);
    assert_eq!(syncer.completed(), vec![2]);

    syncer.submit_then_send(3, batch(3), Vec::new(), true);
    until_completed(&syncer);
    assert!(
        !woken(&mut poll, Duration::from_millis(200)),
        "a wish outlived its wake"
    );
    assert!(!syncer.awaited_completed(), "nobody asked for token 3");
    // A wish made after its group finished: no wake will come, so the loop must see it.
    syncer.want_wake();
    assert!(
        syncer.awaited_completed(),
        "asked for, completed, not woken"
    );
    syncer.submit(4, batch(4));
    assert!(
        woken(&mut poll, Duration::from_secs(60)),
        "not quiet, not woken"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(syncer.completed());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got, vec![3, 4]);
    syncer.shutdown();
}

#[test]
fn no_token_is_reported_after_a_failed_sync() {
    // Goal: a failed group is never reported durable, and the fail-stop handler hears why.
    // Method: an injected handler records the message instead of exiting; the first sync fails.
    // Nor does what waited for it leave.
    let d = TempDir::new("nofalse");
    let (peer, sender) = udp_pair();
    let opts = WalOptions {
        inject_fault: Some(InjectFault::SyncEio { nth_sync: 1 }),
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&d.0, opts).unwrap();
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let syncer = Syncer::spawn_with(
        wal,
        waker,
        Some(sender),
        Box::new(move |msg: &str| {
            let _ = tx.send(msg.to_string());
        }),
    );
    syncer.submit_then_send(
        1,
        WriteBatch {
            entries: entries(1, 3, 10),
            ..WriteBatch::default()
        },
        vec![datagram(&peer, b"ack", None)],
        false,
    );
    let msg = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fatal handler called");
    assert!(msg.contains("fdatasync") && msg.contains(".wal"), "{msg}");
    assert!(received(&peer).is_empty(), "sent what was never durable");
    syncer.submit(
        2,
        WriteBatch {
            entries: entries(4, 1, 10),
            ..WriteBatch::default()
        },
    );
    assert!(syncer.completed().is_empty());
    syncer.shutdown();
}
