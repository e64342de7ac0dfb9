//! The `zatt` binary's outputs and exit codes against the scripted fake server: every
//! subcommand in text and JSON, a missing key, values from files and standard input, bytes that
//! are not UTF-8, help, usage errors (exit 2), unreachable or foreign endpoints, and whole
//! results only. Each run is a real process; each wait is bounded by --timeout.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::zatt_cli;
use zatt::client::fake::{Action, FakeServer};
use zatt::client::{ErrorKind, MemberInfo, Request, Response, SnapshotInfo};

fn zatt<S: AsRef<OsStr>>(endpoint: &str, args: &[S]) -> Output {
    zatt_cli()
        .args(["--endpoints", endpoint, "--timeout", "3s"])
        .args(args)
        .output()
        .expect("run zatt")
}

/// Runs zatt with `input` on its standard input.
fn zatt_stdin(endpoint: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = zatt_cli()
        .args(["--endpoints", endpoint, "--timeout", "3s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    o
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
    // Not a terminal: the value's exact bytes, no newline added.
    assert_eq!(stdout(&o), "hello world");
    let o = zatt(s.addr(), &["get", "greeting", "--stale"]);
    assert_eq!(stdout(&o), "hello world");
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
    assert_eq!(stdout(&zatt(s.addr(), &["get", "n"])), "-5");
}

#[test]
fn values_come_from_a_file_or_standard_input_and_get_writes_their_exact_bytes() {
    // Goal: values beyond what one argument can carry (about 128 KiB), with any bytes, go in
    // with --file or '-', and come back out of `get` byte for byte. Method: 600 KiB of every
    // byte value, through each route.
    let s = FakeServer::start();
    let value: Vec<u8> = (0..600 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
    let dir = std::env::temp_dir().join(format!("zatt-cli-file-{}", std::process::id()));
    std::fs::write(&dir, &value).unwrap();
    let path = dir.display().to_string();
    let o = zatt(s.addr(), &["put", "big", "--file", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zatt(s.addr(), &["get", "big"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout == value, "get gave {} bytes back", o.stdout.len());
    let o = zatt_stdin(s.addr(), &["put", "piped", "-"], &value[..1000]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(zatt(s.addr(), &["get", "piped"]).stdout, &value[..1000]);
    // A --file that cannot be read is a usage error (exit 2), as any bad option is.
    let o = zatt(s.addr(), &["put", "k", "--file", "/nonexistent/value"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/value"), "{}", stderr(&o));
    let _ = std::fs::remove_file(dir);
}

#[test]
fn keys_and_values_that_are_not_utf8_are_taken_as_bytes() {
    // Goal: no argument makes zatt panic (a non-UTF-8 key used to end in a backtrace, exit
    // 101); arguments are bytes; text listings escape them, JSON gives base64.
    let s = FakeServer::start();
    let key = OsStr::from_bytes(b"k\xff");
    let val = OsStr::from_bytes(b"v\xfe\tw");
    let o = zatt(s.addr(), &[OsStr::new("put"), key, val]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zatt(s.addr(), &[OsStr::new("get"), key]);
    assert_eq!(o.stdout, b"v\xfe\tw");
    let o = zatt(s.addr(), &["scan"]);
    assert_eq!(stdout(&o), "k\\xff\tv\\xfe\\tw\n");
    let o = zatt(s.addr(), &["--output", "json", "dump"]);
    assert_eq!(
        stdout(&o),
        format!(
            "[{{\"key\":{{\"base64\":\"a/8=\"}},\"value\":{{\"base64\":\"dv4Jdw==\"}},\"revision\":{}}}]\n",
            s.state().map.get(&b"k\xff"[..]).unwrap().1
        )
    );
    for bad in [&b"\xff"[..], b"--\xff", b"-\xff"] {
        let o = zatt(s.addr(), &[OsStr::from_bytes(bad)]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1);
    }
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
    // A newline inside a value is escaped, so each key is one line.
    assert_eq!(stdout(&o), "a/1\tx\na/2\tsay \"hi\"\\n\n");
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
    let out = stdout(&o);
    assert!(
        out.starts_with("[{\"key\":\"a/1\",\"value\":\"x\",\"revision\":"),
        "{out}"
    );
    assert_eq!(out.matches("\"key\":").count(), 3, "{out}");
    assert!(out.ends_with("}]\n"), "{out}");
}

#[test]
fn scan_limit_zero_is_a_usage_error_not_an_empty_listing() {
    // Goal: `scan --limit 0` used to print nothing and exit 0, as if no key matched. It is
    // refused (exit 2, one line saying the least N) before the cluster is asked anything.
    let s = FakeServer::start();
    assert_eq!(zatt(s.addr(), &["put", "a", "x"]).status.code(), Some(0));
    let asked = s.state().requests.len();
    for args in [&["scan", "--limit", "0"][..], &["scan", "a", "--limit=0"]] {
        let o = zatt(s.addr(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--limit must be at least 1"), "{err}");
    }
    assert_eq!(
        s.state().requests.len(),
        asked,
        "nothing reached the server"
    );
    let o = zatt(s.addr(), &["scan", "--limit", "1"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "a\tx\n".into()));
}

#[test]
fn tabs_and_newlines_in_values_cannot_fake_lines() {
    // Goal: a value holding a tab and a newline stays on its key's one line in text output.
    let s = FakeServer::start();
    assert_eq!(
        zatt(s.addr(), &["put", "a", "x\tfake\nb\ty"]).status.code(),
        Some(0)
    );
    assert_eq!(zatt(s.addr(), &["put", "b", "\\t"]).status.code(), Some(0));
    let o = zatt(s.addr(), &["dump"]);
    assert_eq!(stdout(&o), "a\tx\\tfake\\nb\\ty\nb\t\\\\t\n");
}

#[test]
fn json_get_of_a_missing_key_prints_null_and_exits_1() {
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["--output", "json", "get", "nothing"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(1), "null\n".into()));
}

#[test]
fn a_failed_command_prints_no_partial_result() {
    // Goal: a command prints its whole result or only an error. Method: a three-page dump
    // whose second page is refused; text and JSON both print nothing on stdout.
    let s = FakeServer::start();
    for k in ["a", "b", "c"] {
        zatt(s.addr(), &["put", k, "v"]);
    }
    s.state().max_scan_page = 1;
    s.script(|req, _| match req {
        Request::Scan {
            start_after: Some(_),
            ..
        } => Action::Reply(Response::Error(ErrorKind::Invalid("refused".into()))),
        _ => Action::Serve,
    });
    for output in ["text", "json"] {
        let o = zatt(s.addr(), &["--output", output, "dump"]);
        assert_eq!(o.status.code(), Some(1), "{output}");
        assert!(o.stdout.is_empty(), "{output}: {}", stdout(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{output}: {}", stderr(&o));
    }
}

#[test]
fn timeout_bounds_the_whole_command() {
    // Goal: --timeout bounds the command as a whole, retries and pages included, not each
    // request. Method: each of three scan pages takes 400 ms, well within a 1 s --timeout on
    // its own but not all three together: dump must fail (printing nothing) rather than
    // succeed late.
    let s = FakeServer::start();
    for k in ["a", "b", "c"] {
        zatt(s.addr(), &["put", k, "v"]);
    }
    s.state().max_scan_page = 1;
    s.script(|req, _| match req {
        Request::Scan { .. } => Action::Delay(Duration::from_millis(400)),
        _ => Action::Serve,
    });
    let o = zatt_cli()
        .args(["--endpoints", s.addr(), "--timeout", "1s", "dump"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("--timeout 1s"), "{}", stderr(&o));
}

#[test]
fn a_timeout_too_short_for_any_request_is_reported_as_a_timeout() {
    // Goal: `--timeout 1ns` (which passes before anything can be dialled) says the command
    // timed out within the timeout given, not that the cluster is unavailable or "0ms".
    // Method: a server that is up, and one, two or three endpoints (the first refusing).
    let s = FakeServer::start();
    let refused = refused_port();
    for endpoints in [
        s.addr().to_string(),
        format!("{refused},{}", s.addr()),
        format!("{},{},{}", s.addr(), s.addr(), s.addr()),
    ] {
        for args in [&["get", "k"][..], &["put", "k", "v"], &["status"]] {
            let o = zatt_cli()
                .args(["--endpoints", &endpoints, "--timeout", "1ns"])
                .args(args)
                .output()
                .unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.starts_with("zatt: timed out") && err.contains("within --timeout 1ns"),
                "{endpoints} {args:?}: {err}"
            );
            assert!(!err.contains("unavailable"), "{args:?}: {err}");
        }
    }
    assert!(s.state().requests.is_empty());
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
    // After `member add --learner`, the cluster lists 4 as a learner (promote checks).
    s.script(|req, _| match req {
        Request::Members => Action::Reply(Response::Members(vec![
            MemberInfo {
                id: 1,
                addr: "127.0.0.1:5254".into(),
                voter: true,
            },
            MemberInfo {
                id: 4,
                addr: "127.0.0.1:5257".into(),
                voter: false,
            },
        ])),
        _ => Action::Serve,
    });
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
    assert!(stdout(&o).contains("\"id\":4,\"addr\":\"127.0.0.1:5257\",\"role\":\"learner\""));
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
        &["--endpoints", "127.0.0.1:99999", "get", "k"],
        &["--endpoints", "localhost", "get", "k"],
        &["put", "k", "v", "--file", "f"],
        &["help", "frobnicate"],
    ] {
        let o = zatt_cli().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("zatt: ") && err.contains("--help"), "{err}");
    }
    let o = zatt_cli().arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("transfer-leader"));
}

#[test]
fn files_named_by_options_that_cannot_be_used_are_usage_errors() {
    // Goal: a --tls-ca, --cert, --key or put --file that is missing, unreadable or not what it
    // should be exits 2 (usage error, as `zatt --help` and the README say of bad options), in
    // one line naming the file, before anything reaches the server. Standard input failing
    // is no option's fault: `put k -` keeps exit 1 for that (not tested here: hard to fail).
    let s = FakeServer::start();
    let dir = std::env::temp_dir().join(format!("zatt-cli-optfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, b"not a certificate\n").unwrap();
    let not_pem = not_pem.display().to_string();
    let missing = dir.join("missing.pem").display().to_string();
    let a_dir = dir.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-ca", &missing, "get", "k"], &missing),
        (vec!["--tls-ca", &not_pem, "get", "k"], &not_pem),
        (vec!["--tls-ca", &a_dir, "get", "k"], &a_dir),
        (vec!["--tls-ca", "/dev/zero", "get", "k"], "/dev/zero"),
        (
            vec![
                "--tls-ca", &not_pem, "--cert", &missing, "--key", &missing, "get", "k",
            ],
            &not_pem,
        ),
        (vec!["put", "k", "--file", &missing], &missing),
        (vec!["put", "k", "--file", &a_dir], &a_dir),
    ];
    for (args, names) in cases {
        let o = zatt(s.addr(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("zatt: ") && err.contains(names),
            "{args:?}: {err}"
        );
    }
    assert!(s.state().requests.is_empty(), "nothing reached the server");
    let help = stdout(&zatt_cli().arg("--help").output().unwrap());
    assert!(help.contains("2 usage error (also a file"), "{help}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_and_version_follow_the_usual_conventions() {
    // Goal: `zatt help`, `zatt help CMD` and `zatt CMD --help` (that command's help, not the
    // overview), and `zatt --version`; all exit 0 without contacting a server.
    let overview = stdout(&zatt_cli().arg("help").output().unwrap());
    assert!(
        overview.starts_with("Usage: zatt [OPTIONS] COMMAND"),
        "{overview}"
    );
    for cmd in ["put", "get", "scan", "status", "member", "dev"] {
        let a = zatt_cli().args(["help", cmd]).output().unwrap();
        let b = zatt_cli().args([cmd, "--help"]).output().unwrap();
        assert_eq!(a.status.code(), Some(0));
        assert_eq!(b.status.code(), Some(0));
        assert_eq!(a.stdout, b.stdout, "{cmd}");
        assert!(
            stdout(&a).starts_with(&format!("Usage: zatt {cmd}")),
            "{}",
            stdout(&a)
        );
        assert_ne!(stdout(&a), overview);
    }
    assert!(stdout(&zatt_cli().args(["put", "--help"]).output().unwrap()).contains("--file"));
    let v = zatt_cli().arg("--version").output().unwrap();
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(stdout(&v), format!("zatt {}\n", env!("CARGO_PKG_VERSION")));
}

/// /dev/full for writing (every write fails with ENOSPC): opened, never created, truncated or
/// replaced.
fn dev_full() -> std::fs::File {
    use std::os::unix::fs::FileTypeExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full for writing");
    assert!(f.metadata().unwrap().file_type().is_char_device());
    f
}

/// The write end of a pipe whose read end is already closed: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2(2) returns. Close-on-exec: no
    // child another test starts meanwhile may hold the read end open.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn output_that_cannot_be_written_fails_but_a_reader_going_away_does_not() {
    // Goal: `zatt dump > backup` on a full disk must not exit 0 with a short file and nothing
    // said (it did: every write's error was dropped). Method: stdout on /dev/full, for help (no
    // server), `dump` (lines: the write fails) and `get` of a value without a newline (only
    // the flush at exit fails). A reader that went away (`zatt dump | head -1`) is no failure:
    // quiet, and the command's own exit code.
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["put", "k", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let with_stdout = |args: &[&str], out: Stdio| {
        zatt_cli()
            .args(["--endpoints", s.addr(), "--timeout", "3s"])
            .args(args)
            .stdout(out)
            .output()
            .unwrap()
    };
    for args in [&["--help"][..], &["dump"], &["get", "k"], &["status"]] {
        let o = with_stdout(args, dev_full().into());
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "zatt: cannot write the output: No space left on device (os error 28)\n",
            "{args:?}"
        );
        let o = with_stdout(args, closed_pipe());
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

#[test]
fn promoting_a_voter_says_so_instead_of_retry_later() {
    // Goal: `member promote` of a server that is already a voter (or not a member) says what
    // is the case and that retrying will not help. The fake's only member, 1, is a voter.
    let s = FakeServer::start();
    let o = zatt(s.addr(), &["member", "promote", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("already a voter"), "{err}");
    assert!(!err.contains("retry"), "{err}");
    let o = zatt(s.addr(), &["member", "promote", "7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a member"), "{}", stderr(&o));
    assert!(!s
        .state()
        .requests
        .iter()
        .any(|r| matches!(r, Request::MemberPromote { .. })));
}

#[test]
fn endpoints_may_come_from_the_environment() {
    let s = FakeServer::start();
    let o = zatt_cli()
        .env("ZATT_ENDPOINTS", s.addr())
        .args(["put", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(s.state().map.get(&b"k"[..]).unwrap().0, b"v");
}

#[test]
fn a_refused_connection_fails_at_once_and_says_so() {
    // Goal: no server → exit 1 at once, one line saying the connection was refused, naming
    // the endpoints and what to do. Method: a --timeout of 10 minutes, which the old client
    // waited out before saying "timed out" (this test would then take that long and fail).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("127.0.0.1:{port}");
    let o = zatt_cli()
        .args(["--endpoints", &endpoint, "--timeout", "10m", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains(&endpoint) && err.contains("zatt dev"), "{err}");
}

#[test]
fn a_server_that_does_not_speak_zatt_is_named_as_such() {
    // Goal: an endpoint held by another kind of server is reported as such, not with advice
    // to retry or raise --timeout.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let o = zatt_cli()
        .args(["--endpoints", &addr, "--timeout", "10m", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{addr} is not a Zatt server: it answered \"HTTP/1.1 400 Bad Request\\r\\n"
        )),
        "{err}"
    );
    assert!(!err.contains("--timeout"), "{err}");
}

/// A listener that greets every connection with `reply` at once, before reading anything,
/// and keeps it open (as many servers of other protocols do, or an HTTP server's 400): its
/// address. The thread lives as long as the test process.
fn greeting_listener(reply: &'static [u8]) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let _ = s.write_all(reply);
            open.push(s);
        }
    });
    addr
}

/// A port nothing listens on (bound, read back, released).
fn refused_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

#[test]
fn an_endpoint_that_is_no_zatt_server_is_named_at_once_with_what_it_answered() {
    // Goal: an endpoint whose answer does not start with Zatt's framing is said to be no Zatt
    // server, quoting what it answered, as soon as the bytes arrive: for every kind of command
    // (a read, a write, a watch) and for a reply shorter than a frame header. Method: a
    // --timeout of 10 minutes, which waiting for more bytes would run into.
    let http = greeting_listener(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let short = greeting_listener(b"HTTP/1.1");
    for (addr, answered) in [
        (&http, "\"HTTP/1.1 400 Bad Request\\r\\n\\r\\n\""),
        (&short, "\"HTTP/1.1\""),
    ] {
        for args in [
            &["get", "k"][..],
            &["put", "k", "v"],
            &["watch", "k", "--from", "1", "--count", "1"],
        ] {
            let o = zatt_cli()
                .args(["--endpoints", addr, "--timeout", "10m"])
                .args(args)
                .output()
                .unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.contains(&format!(
                    "{addr} is not a Zatt server: it answered {answered}"
                )),
                "{args:?}: {err}"
            );
            assert!(err.contains("name zattd servers"), "{args:?}: {err}");
        }
    }
}

#[test]
fn several_endpoints_pass_over_one_that_is_no_zatt_server_and_say_why_when_all_fail() {
    // Goal: with several endpoints, one that is no Zatt server is passed over as an
    // unreachable one is: the command succeeds on the next; and when none is left, the error
    // says why for each endpoint, at once (--timeout 10 minutes).
    let http = greeting_listener(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let s = FakeServer::start();
    let both = format!("{http},{}", s.addr());
    let o = zatt(&both, &["put", "k", "v"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zatt(&both, &["get", "k"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "v".into()));

    let refused = refused_port();
    let o = zatt_cli()
        .args([
            "--endpoints",
            &format!("{http},{refused}"),
            "--timeout",
            "10m",
        ])
        .args(["get", "k"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{http} is not a Zatt server: it answered \"HTTP/1.1 400"
        )) && err.contains(&format!("{refused}: connection refused")),
        "{err}"
    );
}

/// Whether this machine's resolver answers "no such name" (EAI_NONAME or EAI_NODATA) for
/// `host`, as it should for the reserved `.invalid` domain. Without a reachable DNS server it
/// may answer "try again" instead, which zatt rightly keeps retrying.
fn resolver_says_no_such_name(host: &std::ffi::CStr) -> bool {
    // SAFETY: zeroed hints are valid; `res` is freed when getaddrinfo filled it.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res = std::ptr::null_mut();
        let rc = libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut res);
        if rc == 0 {
            libc::freeaddrinfo(res);
        }
        rc == libc::EAI_NONAME || rc == libc::EAI_NODATA
    }
}

#[test]
fn an_endpoint_whose_name_does_not_resolve_fails_at_once_naming_the_host() {
    // Goal: a host name that does not exist is said at once, naming the host, instead of
    // being resolved again and again for the whole --timeout; with several endpoints it is
    // passed over, and named with the others' reasons when none is left. Method: the
    // reserved name nosuch.invalid, and a --timeout of 20 s (resolving again and again
    // until it passed ended in a message that did not name the host).
    if !resolver_says_no_such_name(c"nosuch.invalid") {
        eprintln!("skipped: this machine's resolver does not say nosuch.invalid does not exist");
        return;
    }
    let o = zatt_cli()
        .args([
            "--endpoints",
            "nosuch.invalid:7000",
            "--timeout",
            "20s",
            "get",
            "k",
        ])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("host nosuch.invalid not found"), "{err}");
    assert!(
        err.contains("check --endpoints (nosuch.invalid:7000)"),
        "{err}"
    );

    let s = FakeServer::start();
    let o = zatt(
        &format!("nosuch.invalid:7000,{}", s.addr()),
        &["put", "k", "v"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let refused = refused_port();
    let o = zatt_cli()
        .args(["--endpoints", &format!("nosuch.invalid:7000,{refused}")])
        .args(["--timeout", "20s", "get", "k"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("nosuch.invalid:7000: host nosuch.invalid not found")
            && err.contains(&format!("{refused}: connection refused")),
        "{err}"
    );
    assert!(!err.contains("no server listens there"), "{err}");
}

/// Scripts `s` to serve `payload` as a snapshot (its data ends with its own CRC, as a real
/// one does), running `on_save` when the save is asked for; returns the data served.
fn serve_snapshot(s: &FakeServer, payload: &[u8], on_save: impl Fn() + Send + 'static) -> Vec<u8> {
    let mut data = payload.to_vec();
    let crc = crc32fast::hash(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    let served = data.clone();
    s.script(move |req, _| match req {
        Request::SnapshotSave => {
            on_save();
            Action::Reply(Response::SnapshotBegin(SnapshotInfo {
                id: 7,
                cluster_id: 99,
                index: 12,
                term: 3,
                size: served.len() as u64,
                checksum: crc,
                members: vec![MemberInfo {
                    id: 1,
                    addr: "127.0.0.1:5254".into(),
                    voter: true,
                }],
            }))
        }
        Request::SnapshotChunk { offset, .. } => {
            let from = (*offset as usize).min(served.len());
            let to = (from + 1000).min(served.len());
            Action::Reply(Response::SnapshotChunk {
                offset: *offset,
                data: served[from..to].to_vec(),
            })
        }
        _ => Action::Serve,
    });
    data
}

#[test]
fn snapshot_save_refuses_to_replace_what_is_not_a_regular_file_before_asking_the_cluster() {
    // Goal: the save renames its temporary file over FILE, so a device, FIFO, directory or
    // symbolic link there would be replaced (`zatt snapshot save /dev/full` left a regular
    // file in the device's place); a missing directory was only found after the leader had
    // taken the snapshot, and called a connection failure. Each is refused (exit 1) naming
    // the path, the cluster never asked, and the thing left as it was.
    use std::os::unix::fs::FileTypeExt;
    let s = FakeServer::start();
    let d = common::temp_dir("cli-snap-refuse");
    let target = d.join("target");
    std::fs::write(&target, b"keep").unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let missing = d.join("missing").join("x.bak");
    let show = |p: &std::path::Path| p.display().to_string();
    for (path, why) in [
        (show(&link), "symbolic link"),
        (show(&fifo), "not a regular file"),
        (show(&sub), "is a directory"),
        (show(&missing), "No such file or directory"),
    ] {
        let o = zatt(s.addr(), &["snapshot", "save", &path]);
        assert_eq!(o.status.code(), Some(1), "{path}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.starts_with(&format!("zatt: cannot save the snapshot to {path}: ")),
            "{e}"
        );
        assert!(e.contains(why) && !e.contains("connection"), "{e}");
        assert!(o.stdout.is_empty());
    }
    assert!(s.state().requests.is_empty(), "the cluster was asked");
    let meta = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().file_type();
    assert!(meta(&link).is_symlink());
    assert!(meta(&fifo).is_fifo());
    assert!(meta(&sub).is_dir());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        4,
        "a file was left behind"
    );
    // An empty FILE is a usage error.
    let o = zatt(s.addr(), &["snapshot", "save", ""]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn snapshot_save_names_a_local_file_failure_and_writes_a_temporary_file_of_its_own() {
    // Goal: a local file that fails once the leader answers is said as such (it was
    // "connection failed: create FILE.tmp: ..."), and the save does not use a FILE.tmp that
    // another save may be writing (they shared one: all but one failed). Method: a file named
    // FILE.tmp is there during a save through the fake and is left alone; then the directory
    // is removed when the fake is asked for the snapshot, after zatt checked it.
    let s = FakeServer::start();
    let d = common::temp_dir("cli-snap-local");
    let file = d.join("b.zatt");
    let other = d.join("b.zatt.tmp");
    std::fs::write(&other, b"another save's").unwrap();
    let payload: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
    let data = serve_snapshot(&s, &payload, || {});
    let o = zatt(s.addr(), &["snapshot", "save", &file.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (meta, got) = zatt::wal::backup::read_backup(&file, 1 << 20).unwrap();
    assert_eq!((meta.index, meta.cluster_id, got), (12, 99, data));
    assert_eq!(std::fs::read(&other).unwrap(), b"another save's");
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        2,
        "a temporary file was left"
    );

    let gone = d.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let doomed = gone.clone();
    serve_snapshot(&s, &payload, move || {
        let _ = std::fs::remove_dir_all(&doomed);
    });
    let path = gone.join("b.zatt").display().to_string();
    let o = zatt(s.addr(), &["snapshot", "save", &path]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!(
            "zatt: cannot save the snapshot to {path}: create {path}.tmp"
        )),
        "{e}"
    );
    assert!(
        e.contains("No such file or directory") && !e.contains("connection"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
