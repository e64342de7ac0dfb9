//! A data directory that lost its log, on a real `zattd`:
//! - `a_data_directory_whose_log_was_removed_is_refused_and_its_snapshot_kept`: a server with
//!   a snapshot is stopped and its log segments removed (hard-state, identity and cluster-id
//!   files kept); started again it exits 65 naming the missing log, and the snapshot file is
//!   still there, not deleted as unreferenced.
//! - `existing_refuses_what_a_failed_start_left_behind`: a first start that fails on its TLS
//!   files may leave hard-state files, a segment and an identity; `--initial-cluster-state
//!   existing` then refuses the directory (exit 2) like an empty one, changing nothing in it.
//! - `a_data_dir_that_is_not_a_directory_is_refused_naming_it`: a regular file as `--data-dir`,
//!   or in the way of its parents, is exit 2 naming the path that is not a directory.

mod common;

use common::{reserve_ports, run_zattd, temp_dir, Cluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn files_ending(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

#[test]
fn a_data_directory_whose_log_was_removed_is_refused_and_its_snapshot_kept() {
    let mut c = Cluster::start(1, &["--snapshot-entries", "20"]);
    c.wait_leader(T);
    for k in 0..25 {
        c.put(&format!("k{k:02}"), "v");
    }
    let dir = c.node(1).data_dir.clone();
    let deadline = Instant::now() + T;
    while files_ending(&dir, ".snap").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot within {T:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.terminate(1), Some(0));
    let snaps = files_ending(&dir, ".snap");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let segs = files_ending(&dir, ".wal");
    assert!(!segs.is_empty());
    for s in &segs {
        std::fs::remove_file(s).unwrap();
    }
    c.restart(1);
    assert_eq!(c.wait_exit(1, T), Some(65), "{}", c.log_of(1));
    let log = c.log_of(1);
    assert!(
        log.contains("0000000000000001.wal") && log.contains("no log segment"),
        "names the missing log: {log}"
    );
    assert_eq!(
        files_ending(&dir, ".snap"),
        snaps,
        "the snapshot file is kept"
    );
    assert!(files_ending(&dir, ".wal").is_empty(), "nothing created");
}

/// Every file of `dir` with its contents.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn existing_refuses_what_a_failed_start_left_behind() {
    let ports = reserve_ports(3);
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.port))
        .collect::<Vec<_>>()
        .join(",");
    let dir = temp_dir("failedstart");
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let nope = dir.join("nope");
    let nope = nope.to_str().unwrap();
    let base = ["--id", "1", "--cluster", &cluster, "--data-dir", d];
    let tls = [&base[..], &["--tls-cert", nope, "--tls-key", nope]].concat();
    let (code, out) = run_zattd(&tls, &[], T);
    assert_eq!(code, Some(2), "{out}");
    std::fs::create_dir_all(&data).unwrap();
    let before = snapshot_of(&data);
    let existing = [&base[..], &["--initial-cluster-state", "existing"]].concat();
    let (code, out) = run_zattd(&existing, &[], T);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("refusing to start") && out.contains("zatt member remove 1"),
        "{out}"
    );
    assert!(!out.contains("bootstrapped"), "{out}");
    assert_eq!(snapshot_of(&data), before, "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_not_a_directory_is_refused_naming_it() {
    // Goal: `--data-dir FILE` (a regular file) and `--data-dir FILE/sub` exit 2 saying which
    // path is not a directory, where they said "File exists" (exit 1); the file is untouched.
    let dir = temp_dir("notadir");
    let file = common::write_file(&dir, "file", b"keep me");
    let f = file.display().to_string();
    let sub = file.join("sub").display().to_string();
    let cl = format!("1=127.0.0.1:{}", common::free_port());
    for (args, needle) in [
        (
            vec!["--id", "1", "--cluster", &cl, "--data-dir", &f],
            format!("--data-dir {f}: not a directory"),
        ),
        (
            vec!["--id", "1", "--cluster", &cl, "--data-dir", &sub],
            format!("--data-dir {sub}: {f} is not a directory"),
        ),
        (
            vec!["--id", "1", "--data-dir", &f, "--force-new-cluster"],
            format!("--data-dir {f}: not a directory"),
        ),
    ] {
        let (code, out) = run_zattd(&args, &[], T);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(&needle), "{args:?}: {out}");
        assert_eq!(out.trim_end().lines().count(), 1, "one line: {out}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}
