//! The test harness's own promises (`tests/common`): a port reserved by one test process is never
//! handed to another, in this process or any other, until released; and a server the harness
//! started that exits by itself fails the test at once, named, with its exit status and its last
//! log lines (not after a wait for a leader that cannot come).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{reserve_port, reserve_ports, Cluster};

/// Run by `ports_held_by_another_process_are_not_handed_out` in a child process: reserves ports,
/// prints them, and holds them until its standard input closes.
#[test]
#[ignore = "a helper run by another test in a child process"]
fn hold_ports_until_stdin_closes() {
    let Ok(n) = std::env::var("ZATT_TEST_HOLD_PORTS") else {
        return;
    };
    let held = reserve_ports(n.parse().unwrap());
    let list: Vec<String> = held.iter().map(|l| l.port.to_string()).collect();
    println!("HELD {}", list.join(","));
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn ports_held_by_another_process_are_not_handed_out() {
    // Goal: two test processes (two engineers' suites, or two test binaries) can never start
    // servers on the same port. Method: a child process reserves 20 ports and holds them; this
    // process can reserve none of them, and draws 300 reservations without meeting one; once
    // the child exits, its ports can be reserved again.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "hold_ports_until_stdin_closes",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("ZATT_TEST_HOLD_PORTS", "20")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let theirs: Vec<u16> = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child never said which ports it holds"
        );
        // libtest prints "test NAME ... " on the same line first.
        if let Some((_, list)) = line.trim().split_once("HELD ") {
            break list.split(',').map(|p| p.parse().unwrap()).collect();
        }
    };
    assert_eq!(theirs.len(), 20);
    for &p in &theirs {
        assert!(
            reserve_port(p).is_none(),
            "port {p} is held by another process"
        );
    }
    let mine: Vec<_> = (0..300).map(|_| reserve_ports(1).pop().unwrap()).collect();
    let mut seen = std::collections::HashSet::new();
    for l in &mine {
        assert!(
            !theirs.contains(&l.port),
            "port {} handed out twice",
            l.port
        );
        assert!(seen.insert(l.port), "port {} reserved twice here", l.port);
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    // Released with the process: the ports can be had again (unless something else on the
    // machine bound one meanwhile, which only makes it unavailable, never shared).
    let back = theirs
        .iter()
        .filter(|&&p| reserve_port(p).is_some())
        .count();
    assert!(back > 0, "no port came back after its holder exited");
}

#[test]
fn consecutive_runs_are_reserved_whole() {
    // Goal: `zatt dev --base-port P` gets P, P+1, P+2 all reserved, never a partial run.
    let a = reserve_ports(3);
    let b = reserve_ports(3);
    for run in [&a, &b] {
        assert_eq!(run[1].port, run[0].port + 1);
        assert_eq!(run[2].port, run[0].port + 2);
    }
    for l in &a {
        assert!(b.iter().all(|m| m.port != l.port));
        assert!(reserve_port(l.port).is_none());
    }
}

#[test]
fn a_server_that_exits_early_is_named_at_once() {
    // Goal: when a server cannot start (here its port is taken, as when another program took
    // it), the failure names that node, its exit status and its log's last lines, and does not
    // wait out the leader deadline. Method: occupy node 2's TCP port, start the cluster, and
    // catch the panic of the wait for a leader; the 10-minute deadline given would be reported
    // as "no single leader" if the exit went unnoticed.
    let ports = reserve_ports(3);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", ports[1].port)).unwrap();
    let cluster = Cluster::start_on(ports, &[]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.wait_leader(Duration::from_secs(600))
    }));
    drop(squatter);
    let payload = caught.expect_err("a leader with node 2 unable to bind?");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("node 2 (127.0.0.1:"), "{msg}");
    assert!(msg.contains("exit status 1"), "{msg}");
    assert!(msg.contains("address already in use"), "{msg}");
}
