//! The `zatt` binary's outputs and exit codes against the scripted fake server: every
//! subcommand in text and JSON, a missing key, usage errors (exit 2) and an unreachable cluster
//! (exit 1 within --timeout). Each run is a real process; each wait is bounded by --timeout.

use std::process::{Command, Output};

use zatt::client::fake::FakeServer;
use zatt::client::Request;

fn zatt(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args(["--endpoints", endpoint, "--timeout", "3s"])
        .args(args)
        .env_remove("CARGO")
        .output()
        .expect("run zatt")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn put_get_del_round_trip_in_text() {
    // Goal: the basic commands print what a user expects and exit 0.
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["put", "greeting", "hello world"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "OK\n");
    let o = zatt(s.addr(), &["get", "greeting"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "hello world\n");
    let o = zatt(s.addr(), &["get", "greeting", "--stale"]);
    assert_eq!(stdout(&o), "hello world\n");
    let o = zatt(s.addr(), &["del", "greeting"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "deleted\n".into()));
    let o = zatt(s.addr(), &["del", "greeting"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "absent\n".into()));
}

#[test]
fn get_of_a_missing_key_prints_nothing_and_exits_1() {
    // Goal: scripts can test for presence with the exit code alone.
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["get", "nothing-here"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn values_starting_with_a_dash_go_after_double_dash() {
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["put", "n", "--", "-5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&zatt(s.addr(), &["get", "n"])), "-5\n");
}

#[test]
fn cas_with_absent_and_with_a_value_and_its_failure() {
    // Goal: `cas --absent` creates, `cas KEY OLD NEW` swaps, a failed cas exits 1 and says
    // what the key holds.
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["cas", "lock", "--absent", "me"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zatt(s.addr(), &["cas", "lock", "--absent", "you"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"me\""), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = zatt(s.addr(), &["cas", "lock", "me", "you"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zatt(
        s.addr(),
        &["--output", "json", "cas", "lock", "me", "again"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("{\"ok\":false,\"current\":{\"value\":\"you\""));
    let o = zatt(s.addr(), &["cas", "lock", "you", "--delete"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(zatt(s.addr(), &["get", "lock"]).status.code(), Some(1));
}

#[test]
fn scan_and_dump_in_text_and_json() {
    // Goal: listing output is one KEY<TAB>VALUE line per key, or valid JSON with escapes.
    let s = FakeServer::start();
    for (k, v) in [("a/1", "x"), ("a/2", "say \"hi\"\n"), ("b/1", "z")] {
        assert_eq!(zatt(s.addr(), &["put", k, v]).status.code(), Some(0));
    }
    let o = zatt(s.addr(), &["scan", "a/"]);
    assert_eq!(stdout(&o), "a/1\tx\na/2\tsay \"hi\"\n\n");
    let o = zatt(s.addr(), &["scan", "--limit", "1"]);
    assert_eq!(stdout(&o), "a/1\tx\n");
    let o = zatt(s.addr(), &["--output", "json", "scan", "a/"]);
    let out = stdout(&o);
    assert!(
        out.starts_with("[{\"key\":\"a/1\",\"value\":\"x\",\"revision\":"),
        "{out}"
    );
    assert!(out.contains("\"value\":\"say \\\"hi\\\"\\n\""), "{out}");
    assert!(out.ends_with("]\n"));
    let o = zatt(s.addr(), &["--output", "json", "dump"]);
    assert_eq!(
        stdout(&o),
        "{\"a/1\":\"x\",\"a/2\":\"say \\\"hi\\\"\\n\",\"b/1\":\"z\"}\n"
    );
}

#[test]
fn status_json_is_one_object_with_the_promised_fields() {
    let s = FakeServer::start();
    // As printed by `zatt dev`: the global option after the command.
    let o = zatt(s.addr(), &["status", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    for field in [
        "\"id\":1",
        "\"role\":\"leader\"",
        "\"term\":",
        "\"leader\":1",
        "\"commit_index\":",
        "\"applied_index\":",
        "\"members\":[",
    ] {
        assert!(out.contains(field), "{field} missing in {out}");
    }
    let o = zatt(s.addr(), &["status"]);
    assert!(stdout(&o).contains("role: leader"));
}

#[test]
fn membership_and_transfer_commands_send_the_right_requests() {
    // Goal: each admin command reaches the server as the request it names.
    let s = FakeServer::start();
    for args in [
        &["member", "add", "4", "127.0.0.1:5257", "--learner"][..],
        &["member", "promote", "4"],
        &["member", "remove", "4"],
        &["transfer-leader", "2"],
        &["transfer-leader"],
    ] {
        let o = zatt(s.addr(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "OK\n");
    }
    let o = zatt(s.addr(), &["--output", "json", "members"]);
    assert!(stdout(&o).starts_with("[{\"id\":1,"), "{}", stdout(&o));
    let sent: Vec<Request> = s
        .state()
        .requests
        .iter()
        .filter(|r| !matches!(r, Request::Members | Request::Status))
        .cloned()
        .collect();
    assert_eq!(
        sent,
        vec![
            Request::MemberAdd {
                id: 4,
                addr: "127.0.0.1:5257".into(),
                learner: true
            },
            Request::MemberPromote { id: 4 },
            Request::MemberRemove { id: 4 },
            Request::TransferLeader { to: Some(2) },
            Request::TransferLeader { to: None },
        ]
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    // Goal: a malformed command line is refused before any network traffic, in one line.
    for args in [
        &[][..],
        &["frobnicate"],
        &["put", "only-key"],
        &["get"],
        &["--output", "yaml", "get", "k"],
        &["--timeout", "soon", "get", "k"],
        &["member", "add", "x", "127.0.0.1:1"],
        &["scan", "--limit", "lots"],
        &["get", "k", "--bogus"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("zatt: ") && err.contains("--help"), "{err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("transfer-leader"));
}

#[test]
fn unreachable_cluster_exits_1_within_the_timeout() {
    // Goal: no server → exit 1, one line naming the endpoints and what to do. Bounded by the
    // --timeout given (no timing assertion).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("127.0.0.1:{port}");
    let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args(["--endpoints", &endpoint, "--timeout", "500ms", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&endpoint) && err.contains("zatt dev"), "{err}");
}
