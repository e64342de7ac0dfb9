//! The disk-space alarm on real processes: three servers whose data directories live on a small
//! tmpfs this test mounts (and unmounts). Filling the file system below `--min-free-disk`
//! raises the alarm: the leader refuses writes that add data with `NoSpace` (saying so, through
//! the wire and through `zatt`), while reads, deletes, compare-and-delete and status keep
//! working, and `status` and `/metrics` show the alarm. Freeing the space clears it and writes
//! resume, without any restart. Also on a small tmpfs: the write-ahead log keeps a compacted
//! segment for reuse only while the disk has room. Each test skips, saying why, where a tmpfs
//! cannot be mounted (not root, or no mount permission in a container).

mod common;
mod ops_readme;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use zatt::wire::client::{Consistency, ErrorKind, Expect, Request, Response};

const T: Duration = Duration::from_secs(30);
const MIN_FREE: u64 = 16 << 20;

/// A tmpfs mounted by this test; unmounted (lazily, should a process still hold it) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Bytes available on the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    zatt::wal::free_bytes(p).expect("statvfs")
}

fn zatt(c: &Cluster, args: &[&str]) -> (Option<i32>, String, String) {
    let endpoints = c.endpoints();
    let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args(["--endpoints", &endpoints.join(","), "--timeout", "20s"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn put_req(k: &str, v: &str) -> Request {
    Request::Put {
        session: None,
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn the_disk_alarm_refuses_writes_and_clears_by_itself() {
    let base = common::temp_dir("disk-alarm");
    let mount_point = base.join("tmpfs");
    // Mounted before the cluster starts, so that it is dropped (unmounted) after the servers.
    let mount = match Tmpfs::mount(&mount_point, "64m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED the_disk_alarm_refuses_writes_and_clears_by_itself: cannot mount a \
                 tmpfs here ({why}); it needs root with mount permission"
            );
            let _ = std::fs::remove_dir_all(&base);
            return;
        }
    };
    let mut c = Cluster::start(
        3,
        &[
            "--wal-segment-size",
            "1MiB",
            "--min-free-disk",
            "16MiB",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    // The harness put the data directories under its own directory; move them onto a tmpfs
    // before anything is written that matters: stop the servers, mount, and start them afresh
    // there (as a first start, with --cluster).
    for id in 1..=3 {
        c.kill(id);
    }
    for n in &mut c.nodes {
        n.data_dir = mount_point.join(format!("n{}", n.id));
        n.started_once = false;
    }
    for id in 1..=3 {
        c.restart(id);
    }
    let leader = c.wait_leader(T);
    let pids: Vec<Option<u32>> = c.nodes.iter().map(|n| n.pid()).collect();
    for i in 0..20 {
        c.put(&format!("k{i}"), "v");
    }
    let s = c.status(leader).unwrap();
    assert!(!s.disk_alarm && s.disk_min_free_bytes == MIN_FREE, "{s:?}");

    // Fill the file system to 8 MiB free: below the 16 MiB minimum.
    let filler = mount_point.join("filler");
    let free = free_bytes(&mount_point);
    assert!(free > 24 << 20, "the tmpfs has {free} bytes free");
    std::fs::write(&filler, vec![7u8; (free - (8 << 20)) as usize]).unwrap();

    // Every server measures within a second; the leader then refuses writes that add data.
    let s = c.wait_status(leader, T, "the disk alarm", |s| s.disk_alarm);
    assert!(s.disk_free_bytes < MIN_FREE, "{s:?}");
    let resp = c.call_leader(&put_req("new", "v"), T);
    match &resp {
        Response::Error(ErrorKind::NoSpace {
            free_bytes,
            min_free_bytes,
        }) => {
            assert!(*free_bytes < MIN_FREE && *min_free_bytes == MIN_FREE);
            let text = ErrorKind::NoSpace {
                free_bytes: *free_bytes,
                min_free_bytes: *min_free_bytes,
            }
            .to_string();
            assert!(text.starts_with("no space: "), "{text}");
        }
        other => panic!("a write under the alarm got {other:?}"),
    }
    let cas_write = Request::Cas {
        session: None,
        key: b"k1".to_vec(),
        expect: Expect::Value(b"v".to_vec()),
        new: Some(b"w".to_vec()),
    };
    assert!(
        matches!(
            c.call_leader(&cas_write, T),
            Response::Error(ErrorKind::NoSpace { .. })
        ),
        "a compare-and-swap that writes is refused too"
    );
    let (code, _, err) = zatt(&c, &["put", "new", "v"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no space"), "zatt says why: {err}");

    // The README's lines, against this cluster.
    let endpoints = c.endpoints();
    let env = [
        ("ZATT_ENDPOINTS", endpoints.join(",")),
        ("ZATT_TIMEOUT", "20s".to_string()),
    ];
    ops_readme::run_ok(
        "zatt status --leader --field disk_alarm             # → 1",
        &[],
        &base,
        &env,
    );
    let r = ops_readme::run(
        "zatt put greeting hello                             # exit 1: no space",
        &[],
        &base,
        &env,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let said = r.stderr.trim();
    let free: u64 = said
        .strip_prefix("zatt: no space: the leader's disk has ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(free < MIN_FREE, "{said}");
    let shown = said.replace(&free.to_string(), "8388608");
    assert!(
        ops_readme::readme_flat().contains(&format!("`{shown}`")),
        "the README quotes another message than zatt prints: {said}"
    );
    ops_readme::run_ok("zatt del greeting", &[], &base, &env);

    // Reads, deletes, compare-and-delete and status keep working.
    let read = Request::Get {
        key: b"k0".to_vec(),
        consistency: Consistency::Linearizable,
    };
    match c.call_leader(&read, T) {
        Response::Value { value, .. } => assert_eq!(value.as_deref(), Some(&b"v"[..])),
        other => panic!("a read under the alarm got {other:?}"),
    }
    let del = Request::Delete {
        session: None,
        key: b"k2".to_vec(),
    };
    assert!(matches!(
        c.call_leader(&del, T),
        Response::Deleted { existed: true, .. }
    ));
    let cas_delete = Request::Cas {
        session: None,
        key: b"k3".to_vec(),
        expect: Expect::Value(b"v".to_vec()),
        new: None,
    };
    assert!(matches!(
        c.call_leader(&cas_delete, T),
        Response::CasOk { .. }
    ));
    let (code, out, err) = zatt(&c, &["del", "k4"]);
    assert_eq!((code, out.trim()), (Some(0), "deleted"), "{err}");
    let (code, out, _) = zatt(&c, &["status", "--leader", "--field", "disk_alarm"]);
    assert_eq!((code, out.trim()), (Some(0), "1"));
    let (_, out, _) = zatt(&c, &["status", "--leader"]);
    assert!(
        out.contains("(ALARM: writes that add data are refused)"),
        "{out}"
    );
    let http = c
        .log_of(leader)
        .lines()
        .rev()
        .find_map(|l| l.split("/ready on http://").nth(1).map(str::to_string))
        .expect("the leader's HTTP address");
    let metrics = scrape(http.trim());
    assert!(metrics.contains("\nzatt_disk_space_alarm 1\n"), "{metrics}");

    // Space comes back: the alarm clears by itself and writes resume, on the same processes.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + T;
    loop {
        match c.call_leader(&put_req("after", "v"), T) {
            Response::Written { .. } => break,
            Response::Error(ErrorKind::NoSpace { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("a write once space is back got {other:?}"),
        }
    }
    let now: Vec<Option<u32>> = c.nodes.iter().map(|n| n.pid()).collect();
    assert_eq!(pids, now, "no server was restarted");
    c.check_exits();
    for id in 1..=3 {
        c.wait_status(id, T, "the alarm cleared", |s| !s.disk_alarm);
    }
    let (code, out, _) = zatt(&c, &["get", "after"]);
    assert_eq!((code, out.as_str()), (Some(0), "v"));
    assert!(metrics_clear(http.trim()));

    drop(c);
    drop(mount);
    let _ = std::fs::remove_dir_all(&base);
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn metrics_clear(addr: &str) -> bool {
    scrape(addr).contains("\nzatt_disk_space_alarm 0\n")
}

#[test]
fn a_compacted_segment_is_kept_for_reuse_only_while_the_disk_has_room() {
    // Goal: compaction keeps one segment for reuse only while four segments' worth is free;
    // on a filling disk it deletes it at once, as before the reuse. Method: a write-ahead log
    // with 64 KiB segments on a 1 MiB tmpfs; a compaction with room keeps
    // `recycled-segment.tmp`; then, reopened (which deletes the kept file) with a filler
    // leaving 96 KiB free, the next compaction keeps nothing (the segments it frees, up to
    // three here, leave the disk still under 256 KiB free when each is looked at).
    use zatt::storage::{LogStorage, WriteBatch};
    use zatt::types::{
        Entry, EntryKind, LogIndex, Member, MemberRole, Membership, NodeId, Snapshot, SnapshotMeta,
        Term,
    };
    use zatt::wal::{Wal, WalOptions};
    let base = common::temp_dir("recycle-room");
    let mount = match Tmpfs::mount(&base.join("tmpfs"), "1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED a_compacted_segment_is_kept_for_reuse_only_while_the_disk_has_room: \
                 cannot mount a tmpfs here ({why}); it needs root with mount permission"
            );
            let _ = std::fs::remove_dir_all(&base);
            return;
        }
    };
    let dir = mount.path.join("wal");
    let kept = dir.join("recycled-segment.tmp");
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let write = |wal: &mut Wal, from: u64, to: u64| {
        for i in from..=to {
            let e = Entry::new(Term(1), LogIndex(i), EntryKind::Normal, &[i as u8; 1024]);
            let b = WriteBatch {
                snapshot: None,
                hard_state: None,
                entries: vec![e],
            };
            wal.write(&b).unwrap();
            wal.sync().unwrap();
        }
    };
    let snapshot = |index: u64| {
        let mut membership = Membership::default();
        membership.members.insert(
            NodeId(1),
            Member {
                role: MemberRole::Voter,
                addr: "127.0.0.1:5254".into(),
            },
        );
        Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(index),
                term: Term(1),
                membership,
            },
            data: vec![7; 100].into(),
        }
    };
    let (mut wal, _) = Wal::open(&dir, opts.clone()).unwrap();
    write(&mut wal, 1, 300);
    wal.save_snapshot(&snapshot(100)).unwrap();
    write(&mut wal, 301, 301);
    assert!(
        kept.exists(),
        "free {} B: a segment is kept",
        free_bytes(&dir)
    );
    drop(wal);

    let (mut wal, _) = common::reopen_wal(&dir, opts);
    assert!(!kept.exists());
    let segments = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count()
    };
    let before = segments(&dir);
    let filler = free_bytes(&dir).saturating_sub(96 << 10);
    std::fs::write(mount.path.join("filler"), vec![1u8; filler as usize]).unwrap();
    assert!(free_bytes(&dir) < 4 * (64 << 10));
    wal.save_snapshot(&snapshot(280)).unwrap();
    write(&mut wal, 302, 302);
    assert!(segments(&dir) < before, "the compaction ran");
    assert!(
        !kept.exists(),
        "free {} B: nothing is kept",
        free_bytes(&dir)
    );
    drop(wal);
    drop(mount);
    let _ = std::fs::remove_dir_all(&base);
}
