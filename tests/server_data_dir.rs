//! A data directory that lost its log, on a real `zattd`:
//! - `a_data_directory_whose_log_was_removed_is_refused_and_its_snapshot_kept`: a server with
//!   a snapshot is stopped and its log segments removed (hard-state, identity and cluster-id
//!   files kept); started again it exits 65 naming the missing log, and the snapshot file is
//!   still there, not deleted as unreferenced.

mod common;

use common::Cluster;
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
