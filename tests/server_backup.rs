//! Backups of real clusters: `zatt snapshot save FILE` against a cluster under writes (its log
//! compacted several times), checked key by key against every write acknowledged before the
//! save started; a save asked of a follower is served by the leader; a save that cannot write
//! its file leaves nothing behind.

mod common;
mod ops_readme;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, TestClient};
use zatt::kv::{Kv, KvConfig};
use zatt::wal::backup::read_backup;
use zatt::wire::client::Response;

const T: Duration = Duration::from_secs(30);

fn zatt(endpoints: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args(["--endpoints", endpoints, "--timeout", "30s"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Writes 3000 keys, overwrites some and deletes others, through the leader; what the
/// dictionary must hold afterwards.
fn fill(c: &Cluster, leader: u64) -> BTreeMap<String, String> {
    let mut cl = c.client(leader).unwrap();
    cl.put_pipelined("key/", 0..3000, 64).unwrap();
    let mut want: BTreeMap<String, String> = (0..3000)
        .map(|i| (format!("key/{i}"), format!("v{i}")))
        .collect();
    for i in (0..3000).step_by(7) {
        let k = format!("key/{i}");
        assert!(matches!(
            cl.put(&k, "rewritten").unwrap(),
            Response::Written { .. }
        ));
        want.insert(k, "rewritten".into());
    }
    for i in (0..3000).step_by(11) {
        let k = format!("key/{i}");
        assert!(matches!(cl.delete(&k).unwrap(), Response::Deleted { .. }));
        want.remove(&k);
    }
    want
}

/// The dictionary a backup file holds, checked whole (file checksum, layout, the snapshot's own
/// checksum) and against what the file says of it.
fn restore_file(path: &Path) -> (zatt::wal::backup::BackupMeta, Kv) {
    let (meta, data) = read_backup(path, 1 << 30).expect("a good backup");
    let kv = Kv::restore(&data, KvConfig::default()).expect("its snapshot restores");
    assert_eq!(kv.applied_index().0, meta.index);
    (meta, kv)
}

#[test]
fn a_saved_snapshot_holds_every_acknowledged_write() {
    let c = Cluster::start(3, &["--snapshot-entries", "1000"]);
    let leader = c.wait_leader(T);
    let want = fill(&c, leader);
    let follower = (1..=3).find(|&i| i != leader).unwrap();

    // Writes go on during the save: they may or may not be in it, the earlier ones must be.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = c.addr(leader);
        std::thread::spawn(move || {
            let mut cl = TestClient::connect(&addr).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while n < 20_000 && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                cl.put_pipelined("late/", n..n + 100, 16).unwrap();
                n += 100;
            }
        })
    };

    let dir = common::temp_dir("backup");
    let file = dir.join("zatt.backup");
    let file_s = file.display().to_string();
    // Asked of a follower: the client goes to the leader.
    let (code, out, err) = zatt(&c.addr(follower), &["snapshot", "save", &file_s]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    let (meta, kv) = restore_file(&file);
    assert!(
        out.starts_with(&format!(
            "saved the snapshot at index {} (term {}, ",
            meta.index, meta.term
        )) && out.trim_end().ends_with(&format!("to {file_s}")),
        "{out}"
    );
    assert!(!dir.join("zatt.backup.tmp").exists());

    // Every acknowledged write, exactly; nothing else but the concurrent ones.
    for (k, v) in &want {
        let got = kv.get(k.as_bytes()).map(|(v, _)| v.to_vec());
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "{k}");
    }
    let (all, more) = kv.scan(b"", None, usize::MAX);
    assert!(!more);
    for (k, _, _) in &all {
        let k = String::from_utf8(k.clone()).unwrap();
        assert!(
            want.contains_key(&k) || k.starts_with("late/"),
            "{k} is in the backup but was deleted or never written"
        );
    }
    let s = c.status(leader).unwrap();
    assert_eq!(meta.cluster_id, s.cluster_id);
    assert_eq!(meta.membership.voter_count(), 3);
    assert!(meta.index <= s.commit_index);
    // The log was compacted underneath: the save is not a replay of a log from index 1.
    assert!(
        c.log_of(leader).contains("log compacted"),
        "the test meant to save a compacted log"
    );

    // The JSON output says the same.
    let file2 = dir.join("again.backup");
    let (code, out, err) = zatt(
        &c.addr(leader),
        &[
            "--output",
            "json",
            "snapshot",
            "save",
            &file2.display().to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (meta2, _) = restore_file(&file2);
    assert!(
        out.starts_with(&format!(
            "{{\"ok\":true,\"file\":\"{}\",\"index\":{},",
            file2.display(),
            meta2.index
        )),
        "{out}"
    );

    // The README's line, in a directory of its own.
    let endpoints = c.endpoints();
    let env = [("ZATT_ENDPOINTS", endpoints.join(","))];
    let out = ops_readme::run_ok("zatt snapshot save zatt.backup", &[], &dir, &env);
    let (meta3, _) = restore_file(&dir.join("zatt.backup"));
    assert!(
        out.starts_with(&format!("saved the snapshot at index {} ", meta3.index))
            && out.trim_end().ends_with(") to zatt.backup"),
        "{out}"
    );

    // A file that cannot be written: an error, and nothing left behind.
    let bad = dir.join("missing-dir").join("x.backup");
    let (code, _, err) = zatt(
        &c.addr(leader),
        &["snapshot", "save", &bad.display().to_string()],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing-dir"), "{err}");
    assert!(!bad.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
