//! A server that lost its storage must never cost an acknowledged write (the scenario of the
//! issue that found it, with real processes): a server whose disk is replaced and that is
//! started again with its usual command line refuses to start, saying how to rejoin, and every
//! write acknowledged before is still there once the others are back; the README's procedure
//! then brings it back as a new member. Also: `--initial-cluster-state existing` on an empty
//! directory, and a follower whose last synced WAL record is damaged, which withholds its vote
//! until it holds the log again.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zatt::wire::client::{Consistency, Request, Response};

const T: Duration = Duration::from_secs(30);
const ZATT: &str = env!("CARGO_BIN_EXE_zatt");

fn put(c: &Cluster, k: usize) {
    c.put(&format!("k{k}"), &format!("v{k}"));
}

/// Every key `0..n` reads back (linearizably, through the leader).
fn all_present(c: &Cluster, n: usize) {
    for k in 0..n {
        let req = Request::Get {
            key: format!("k{k}").into_bytes(),
            consistency: Consistency::Linearizable,
        };
        match c.call_leader(&req, T) {
            Response::Value { value, .. } => {
                assert_eq!(value, Some(format!("v{k}").into_bytes()), "k{k} lost")
            }
            other => panic!("get k{k}: {other:?}"),
        }
    }
}

/// Runs `zatt` with these arguments; (exit code, stdout + stderr).
fn zatt(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(ZATT).args(args).output().expect("run zatt");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The README's procedures, as they must read there (the test runs them with real ports).
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn a_server_that_lost_its_disk_refuses_to_rejoin_and_no_acknowledged_write_is_lost() {
    // Goal: the scenario. 3 servers; 40 writes acknowledged by all; one follower paused;
    // 50 more writes acknowledged by the leader and the other follower; that follower's disk
    // is replaced (kill -9, data directory removed) and the leader crashes; the follower is
    // started again with the same command line and the paused one resumes. Before, the wiped
    // server bootstrapped a new log, voted, and the paused one became leader without the 50
    // writes. Now it must refuse to start (exit 2, saying how to rejoin), and once the old
    // leader is back every one of the 90 writes is there. Then the README's procedure brings
    // the wiped server back as a new member, and it serves all 90 too.
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader(T);
    let followers: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    let (wiped, paused) = (followers[0], followers[1]);
    for k in 0..40 {
        put(&c, k);
    }
    for id in 1..=3 {
        c.wait_value(id, "k39", Some("v39"), T);
    }
    c.pause(paused);
    for k in 40..90 {
        put(&c, k);
    }
    c.wait_value(wiped, "k89", Some("v89"), T);

    c.wipe(wiped);
    c.kill(l);
    c.start_with_first_command(wiped);
    c.resume(paused);
    let code = c.wait_exit(wiped, Duration::from_secs(60));
    let log = c.log_of(wiped);
    assert_eq!(
        code,
        Some(2),
        "the wiped server must refuse to start:\n{log}"
    );
    assert!(
        log.contains("refusing to start")
            && log.contains(&format!("zatt member remove {wiped}"))
            && log.contains("--join"),
        "{log}"
    );
    // The paused server knew the wiped one's old data directory and said so.
    assert!(log.contains("another data directory"), "{log}");
    assert_reads_as_prose(&log);

    c.restart(l);
    c.wait_leader(T);
    all_present(&c, 90);

    // The README's procedure: remove the member, start it empty with --join, add it back.
    let leader = c.addr(c.wait_leader(T));
    let addr = c.addr(wiped);
    let remove = format!("zatt member remove {wiped}");
    let add = format!("zatt member add {wiped} {addr}");
    let readme = readme();
    for line in [
        "zatt member remove N",
        "--join --listen",
        "zatt member add N HOST:PORT",
    ] {
        assert!(
            readme.contains(line),
            "the README's procedure lacks {line:?}"
        );
    }
    let (code, out) = zatt(&[
        "--endpoints",
        &leader,
        "member",
        "remove",
        &wiped.to_string(),
    ]);
    assert_eq!(code, Some(0), "{remove}: {out}");
    c.start_as_joiner(wiped);
    let (code, out) = zatt(&[
        "--endpoints",
        &leader,
        "--timeout",
        "60s",
        "member",
        "add",
        &wiped.to_string(),
        &addr,
    ]);
    assert_eq!(code, Some(0), "{add}: {out}");
    c.wait_value(wiped, "k89", Some("v89"), T);
    for k in 0..90 {
        let got = c
            .client(wiped)
            .and_then(|mut cl| cl.get_value(&format!("k{k}"), Consistency::Stale))
            .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(format!("v{k}").as_str()),
            "k{k} on the rejoined server"
        );
    }
    let st = c.status(wiped).unwrap();
    assert!(
        st.members.iter().any(|m| m.id == wiped && m.voter),
        "{st:?}"
    );
}

#[test]
fn an_empty_data_directory_is_refused_when_it_must_hold_data() {
    // Goal: `--initial-cluster-state existing` (for a server that must already have its data,
    // e.g. a disk that failed to mount) refuses an empty data directory at once, exit 2,
    // without writing anything into it.
    let dir = temp_dir("existing");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (code, out) = run_zattd(
        &[
            "--id",
            "1",
            "--cluster",
            "1=127.0.0.1:1,2=127.0.0.1:2",
            "--data-dir",
            data.to_str().unwrap(),
            "--initial-cluster-state",
            "existing",
        ],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("holds no data") && out.contains("zatt member remove 1"),
        "{out}"
    );
    assert_reads_as_prose(&out);
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "nothing written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_follower_whose_last_synced_record_is_damaged_withholds_its_vote_until_it_holds_the_log() {
    // Goal: recovery cuts a last record that fails its CRC; it may have been synced and
    // acknowledged, so the server says so (log and status), withholds its vote, and grants
    // votes again once it holds the log again from the leader. Nothing is lost.
    let mut c = Cluster::start(3, &[]);
    let l = c.wait_leader(T);
    let f = (1..=3).find(|&i| i != l).unwrap();
    for k in 0..30 {
        put(&c, k);
    }
    c.wait_value(f, "k29", Some("v29"), T);
    c.kill(f);
    damage_last_record(&c.node(f).data_dir);
    c.restart(f);
    c.wait_status(f, T, "a status answer", |_| true);
    for k in 30..40 {
        put(&c, k);
    }
    c.wait_value(f, "k39", Some("v39"), T);
    let st = c.wait_status(f, T, "votes granted again", |s| s.lost_entries.is_none());
    assert!(st.incarnation != 0, "{st:?}");
    let log = c.log_of(f);
    assert!(
        log.contains("may have lost log entries it had acknowledged")
            && log.contains("grants votes again"),
        "{log}"
    );
    all_present(&c, 40);
}

/// The refusal is read by an operator: no run of spaces left by a broken line continuation
/// inside a sentence.
fn assert_reads_as_prose(log: &str) {
    for line in log.lines().filter(|l| l.contains("refusing to start")) {
        let text = line.trim_start();
        assert!(!text.contains("  "), "a gap inside the message: {line:?}");
    }
}
