//! The write-ahead log's directory lock, across processes. Apart from `wal_recovery`'s tests on
//! purpose: this one starts a child process, and a child holds a copy of every descriptor of
//! its parent until it has exec'd, the lock file's of a test running beside it included, so a
//! test there that closed a log and opened it again could find it still locked (it did: one
//! run in about fifty). Here it runs in a process of its own.

mod common;

use std::path::Path;
use zatt::wal::{Wal, WalError, WalOptions};

fn opts_plain() -> WalOptions {
    WalOptions {
        preallocate: false,
        ..WalOptions::default()
    }
}

#[test]
fn second_open_of_a_directory_is_refused_as_locked() {
    // Goal: one Wal per directory. Method: open twice in this process; then in a child process.
    let d = common::temp_dir("wal-lock");
    let (wal, _) = Wal::open(&d, opts_plain()).unwrap();
    match Wal::open(&d, opts_plain()) {
        Err(e @ WalError::Locked { .. }) => {
            assert_eq!(e.exit_code(), 1);
            assert!(e.to_string().contains("in use"));
        }
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ZATT_WAL_LOCK_DIR", &d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHILD-LOCKED"), "child said: {stdout}");
    drop(wal);
    assert!(Wal::open(&d, opts_plain()).is_ok());
    let _ = std::fs::remove_dir_all(&d);
}

/// Not a test on its own: the child half of the lock test (does nothing without the variable).
#[test]
fn lock_child_process() {
    if let Some(dir) = std::env::var_os("ZATT_WAL_LOCK_DIR") {
        match Wal::open(Path::new(&dir), opts_plain()) {
            Err(WalError::Locked { .. }) => println!("CHILD-LOCKED"),
            Err(e) => println!("CHILD-ERROR {e}"),
            Ok(_) => println!("CHILD-OPENED"),
        }
    }
}
