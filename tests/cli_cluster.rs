//! The `zatt` binary against real `zattd` processes: status as JSON from each server (with its
//! pid), writes through a follower, `members` and `status --leader` past a server that knows no
//! leader, a 1 MiB value from a file, TLS with and without a client
//! certificate, a server over its connection limit, and `zatt dev` (a write and a read work; SIGINT stops every server it started;
//! a second run reuses the data; members it does not run are named, or removed when asked).
//! Every wait is bounded; nothing asserts on timing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{zatt_cli, Cluster, TestClient};
use zatt::wire::client::{Request, Response};

fn zatt(endpoints: &str, args: &[&str]) -> Output {
    zatt_cli()
        .args(["--endpoints", endpoints, "--timeout", "20s"])
        .args(args)
        .output()
        .expect("run zatt")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of `"field":` in a one-line JSON object (numbers, strings, null).
fn json_field(json: &str, field: &str) -> String {
    let pat = format!("\"{field}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{field} missing in {json}"));
    let rest = &json[at + pat.len()..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"').to_string()
}

#[test]
fn status_json_from_each_server_names_the_same_leader() {
    // Goal: `status --output json` addresses the given server and reports its role and the
    // leader. Method: ask each of three servers; exactly one is the leader, all name it.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let mut leaders = 0;
    for n in &cluster.nodes {
        let o = zatt(&n.addr, &["--output", "json", "status"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let j = text(&o.stdout);
        assert_eq!(j.lines().count(), 1, "{j}");
        assert_eq!(json_field(&j, "id"), n.id.to_string());
        assert_eq!(json_field(&j, "leader"), leader.to_string());
        let role = json_field(&j, "role");
        assert!(["leader", "follower"].contains(&role.as_str()), "{role}");
        if role == "leader" {
            leaders += 1;
            assert_eq!(n.id, leader);
        }
        for f in ["term", "commit_index", "applied_index"] {
            json_field(&j, f).parse::<u64>().unwrap();
        }
        assert!(j.contains("\"members\":[{"), "{j}");
    }
    assert_eq!(leaders, 1);
}

#[test]
fn commands_through_a_follower_reach_the_leader() {
    // Goal: a user may name any server; writes and linearizable reads find the leader.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let o = zatt(&follower.addr, &["put", "colour", "blue"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&follower.addr, &["get", "colour"]);
    assert_eq!(text(&o.stdout), "blue");
    let o = zatt(&follower.addr, &["cas", "colour", "blue", "green"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&follower.addr, &["--output", "json", "members"]);
    assert_eq!(text(&o.stdout).matches("\"role\":\"voter\"").count(), 3);
    let o = zatt(&follower.addr, &["get", "missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}

#[test]
fn a_paused_leader_first_in_the_endpoints_does_not_block_commands() {
    // Goal: the README's promise that any one server being down does not matter holds for a
    // server that is stopped rather than gone (SIGSTOP: its kernel still accepts connections,
    // nothing answers), listed first as in the default endpoints. Method: pause the leader,
    // put it first; a put and a linearizable get must succeed within --timeout (20 s, against
    // the 2 s a command gives one attempt). The Cluster's Drop resumes and kills every node,
    // so a failing assertion leaves no stopped process behind.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let endpoints = cluster.endpoints_first(leader);
    let endpoints = endpoints.join(",");
    cluster.pause(leader);
    let o = zatt(&endpoints, &["put", "x", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&endpoints, &["get", "x"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "1");
    cluster.resume(leader);
}

struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    pids: Vec<u32>,
    endpoints: String,
    /// Everything printed up to the "ready" line.
    seen: Vec<String>,
}

/// Starts `zatt dev` with 3 servers and waits (bounded) for its "ready" line; collects the
/// servers' pids.
fn start_dev(dir: &Path, base: u16) -> Dev {
    start_dev_with(dir, base, 3, &[])
}

fn dev_command(dir: &Path, base: u16, nodes: u16, extra: &[&str]) -> Command {
    let mut c = zatt_cli();
    c.args([
        "dev",
        "--nodes",
        &nodes.to_string(),
        "--base-port",
        &base.to_string(),
        "--dir",
    ])
    .arg(dir)
    .args(extra);
    c
}

fn start_dev_with(dir: &Path, base: u16, nodes: u16, extra: &[&str]) -> Dev {
    let mut child = dev_command(dir, base, nodes, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start zatt dev");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pids = Vec::new();
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split(" pid ").nth(1) {
                    pids.push(rest.split_whitespace().next().unwrap().parse().unwrap());
                }
                let ready = line.starts_with("ready:");
                seen.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("zatt dev never said ready; output so far: {seen:#?}");
            }
        }
    }
    let endpoints = (0..nodes)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(pids.len(), nodes as usize, "{seen:#?}");
    Dev {
        child,
        lines,
        pids,
        endpoints,
        seen,
    }
}

/// A server started by a test by hand (as the tour does), killed when dropped.
struct Joiner(Child);

impl Joiner {
    /// `zattd --id ID --join --listen ADDR --cluster CLUSTER --data-dir DIR/ID`.
    fn start(dir: &Path, id: u64, addr: &str, cluster: &str) -> Joiner {
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zattd"))
            .args(["--id", &id.to_string(), "--join", "--listen", addr])
            .args(["--cluster", cluster, "--data-dir"])
            .arg(dir.join(id.to_string()))
            .env_remove("ZATT_CONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Joiner(child)
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dev_cluster_arg(base: u16, nodes: u16) -> String {
    (0..nodes)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, base + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends SIGINT and waits (bounded) for `zatt dev` to exit; its exit code.
fn interrupt(dev: &mut Dev) -> Option<i32> {
    // SAFETY: signalling a child this test started and has not reaped.
    unsafe {
        libc::kill(dev.child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = dev.child.kill();
            let _ = dev.child.wait();
            for &pid in &dev.pids {
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            panic!("zatt dev did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn process_gone(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie (not reaped) would still show one.
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Exited: gone, or a zombie waiting for a parent (other than `zatt dev`) to reap it.
fn process_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn zatt_dev_serves_writes_and_stops_every_server_on_sigint() {
    // Goal: `zatt dev` gives a working cluster, SIGINT stops every server it started, and a
    // second run reuses the data. Method: a temporary --dir and a free --base-port; put and
    // get through the printed endpoints; SIGINT; check each server pid is gone; run again and
    // read the value back.
    let ports = common::reserve_ports(3);
    let base = ports[0].port;
    let dir = common::temp_dir("zatt-dev");
    let mut dev = start_dev(&dir, base);
    let o = zatt(&dev.endpoints, &["put", "hello", "world"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&dev.endpoints, &["get", "hello"]);
    assert_eq!(text(&o.stdout), "world");
    assert_eq!(interrupt(&mut dev), Some(0));
    let rest: Vec<String> = dev.lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped 3 servers")),
        "{rest:#?}"
    );
    for &pid in &dev.pids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process_gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(process_gone(pid), "server pid {pid} outlived zatt dev");
    }

    let mut again = start_dev(&dir, base);
    let o = zatt(&again.endpoints, &["get", "hello"]);
    assert_eq!(text(&o.stdout), "world", "{}", text(&o.stderr));
    assert_eq!(interrupt(&mut again), Some(0));
    for &pid in &again.pids {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process_gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(process_gone(pid), "server pid {pid} outlived zatt dev");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zatt_dev_names_members_it_does_not_run_and_removes_them_when_asked() {
    // Goal: after a server was added by hand (as in the tour), a second `zatt dev` says which
    // members it does not run and what to do, and `--remove-others` removes them. Method:
    // add node 4, stop everything, start again twice.
    let ports = common::reserve_ports(3);
    let base = ports[0].port;
    let p4 = common::reserve_ports(1);
    let addr4 = format!("127.0.0.1:{}", p4[0].port);
    let dir = common::temp_dir("zatt-dev-others");
    let mut dev = start_dev(&dir, base);
    let n4 = Joiner::start(&dir, 4, &addr4, &dev_cluster_arg(base, 3));
    let o = zatt(&dev.endpoints, &["member", "add", "4", &addr4]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(interrupt(&mut dev), Some(0));
    drop(n4);

    let mut again = start_dev(&dir, base);
    let note = format!("members zatt dev does not run: 4={addr4} (voter)");
    assert!(
        again.seen.iter().any(|l| l.contains(&note)),
        "{:#?}",
        again.seen
    );
    assert!(again
        .seen
        .iter()
        .any(|l| l.contains("zatt member remove 4")));
    assert_eq!(interrupt(&mut again), Some(0));

    let mut cleaned = start_dev_with(&dir, base, 3, &["--remove-others"]);
    assert!(
        cleaned
            .seen
            .iter()
            .any(|l| l.contains(&format!("removed member 4={addr4}"))),
        "{:#?}",
        cleaned.seen
    );
    let o = zatt(&cleaned.endpoints, &["members"]);
    assert_eq!(text(&o.stdout).lines().count(), 3, "{}", text(&o.stdout));
    assert_eq!(interrupt(&mut cleaned), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zatt_dev_says_at_once_when_its_servers_are_no_majority() {
    // Goal: when the cluster's voters include servers `zatt dev` does not run and its own are
    // no majority, it says so and what to do, instead of waiting a minute and reporting "no
    // leader elected". Method: a one-server dev cluster grows a second voter by hand, which
    // is then stopped; the next `zatt dev --nodes 1` must exit 1 naming it, within 45 s (its
    // old leader wait was 60 s).
    let ports = common::reserve_ports(1);
    let base = ports[0].port;
    let p2 = common::reserve_ports(1);
    let addr2 = format!("127.0.0.1:{}", p2[0].port);
    let dir = common::temp_dir("zatt-dev-minority");
    let mut dev = start_dev_with(&dir, base, 1, &[]);
    let n2 = Joiner::start(&dir, 2, &addr2, &dev_cluster_arg(base, 1));
    let o = zatt(&dev.endpoints, &["member", "add", "2", &addr2]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(interrupt(&mut dev), Some(0));
    drop(n2);

    let mut child = dev_command(&dir, base, 1, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SAFETY: interrupting a child this test started; it stops its servers.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let _ = child.wait();
            panic!("zatt dev kept waiting for a leader that cannot be elected");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no leader can be elected"), "{err}");
    assert!(err.contains(&format!("2={addr2} (voter)")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn servers_stop_when_zatt_dev_is_killed_outright() {
    // Goal: even a `zatt dev` that cannot clean up (kill -9) leaves no server running. Method:
    // SIGKILL it; each server, told by the kernel that its parent died, must exit.
    let ports = common::reserve_ports(3);
    let base = ports[0].port;
    let dir = common::temp_dir("zatt-dev-kill");
    let mut dev = start_dev(&dir, base);
    dev.child.kill().unwrap();
    let _ = dev.child.wait();
    for &pid in &dev.pids {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !process_exited(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !process_exited(pid) {
            // SAFETY: cleaning up a server this test caused to start.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!("server pid {pid} kept running after zatt dev was killed");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_over_its_connection_limit_is_named_as_such() {
    // Goal: a server that refuses the connection over --max-connections (it answers
    // TooManyConnections on request id 0 and closes) is reported as that, naming the limit,
    // not as a connection that keeps failing with a hint to pass --tls-ca. Method: a server
    // with --max-connections 1 whose one connection the test holds, and commands of each kind
    // (a read, a write, a watch).
    let c = Cluster::start(1, &["--max-connections", "1"]);
    c.wait_leader(Duration::from_secs(30));
    let addr = c.addr(1);
    // A status answered on the held connection proves it has the slot (a connection of
    // wait_leader's may still be closing, and then this one is refused: try again).
    let deadline = Instant::now() + Duration::from_secs(30);
    let _held = loop {
        let mut held = TestClient::connect(&addr).unwrap();
        let id = held.send(&Request::Status).unwrap();
        match held.recv() {
            Ok((rid, Response::Status(_))) if rid == id => break held,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "never got the one slot: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let said = "refused the connection: it has too many client connections (its \
                --max-connections is 1)";
    for args in [
        &["get", "k"][..],
        &["put", "k", "v"],
        &["watch", "k", "--from", "1", "--count", "1"],
    ] {
        let o = zatt_cli()
            .args(["--endpoints", &addr, "--timeout", "1s"])
            .args(args)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(said) && err.contains(&addr), "{args:?}: {err}");
        assert!(
            err.contains("raise the servers' --max-connections"),
            "{err}"
        );
        assert!(!err.contains("TLS"), "{args:?}: {err}");
    }
}

#[test]
fn tls_ca_flag_speaks_tls_to_a_tls_cluster() {
    // Goal: `--tls-ca` reaches servers started with --tls-cert; without it the CLI fails in one
    // line that suggests the flag.
    let dir = common::temp_dir("cli-tls");
    let (cluster, ca_path) = common::start_tls_cluster(&dir, 3);
    let endpoints = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let ca_s = ca_path.display().to_string();
    let o = zatt(&endpoints, &["--tls-ca", &ca_s, "put", "k", "tls"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&endpoints, &["--tls-ca", &ca_s, "get", "k"]);
    assert_eq!(text(&o.stdout), "tls");
    let o = zatt_cli()
        .args(["--endpoints", &endpoints, "--timeout", "2s", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--tls-ca"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cert_and_key_present_a_client_certificate_to_servers_that_require_one() {
    // Goal: `zatt --cert --key` reaches servers started with --tls-client-ca; without them the
    // handshake is refused and the CLI says TLS failed, in one line.
    let dir = common::temp_dir("cli-mtls");
    let (cluster, ca, (cert, key)) = common::start_mutual_tls_cluster(&dir, 3);
    let endpoints = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let (ca, cert, key) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let with_cert = ["--tls-ca", &ca, "--cert", &cert, "--key", &key];
    let o = zatt(
        &endpoints,
        &[&with_cert[..], &["put", "k", "mutual"]].concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&endpoints, &[&with_cert[..], &["get", "k"]].concat());
    assert_eq!(text(&o.stdout), "mutual", "{}", text(&o.stderr));
    let o = zatt_cli()
        .args([
            "--endpoints",
            &endpoints,
            "--timeout",
            "5s",
            "--tls-ca",
            &ca,
        ])
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--cert"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_reports_each_servers_pid_and_finds_the_leader() {
    // Goal: the tour can kill the leader by the pid `zatt status` reports. Method: each
    // server's reported pid is the process the harness started; --leader --field id names the
    // leader the harness sees.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    for n in &cluster.nodes {
        let o = zatt(&n.addr, &["status", "--field", "pid"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout).trim(), n.pid().unwrap().to_string());
        assert!(text(&zatt(&n.addr, &["status"]).stdout)
            .contains(&format!("\npid: {}\n", n.pid().unwrap())));
    }
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let o = zatt(&follower.addr, &["status", "--leader", "--field", "id"]);
    assert_eq!(text(&o.stdout).trim(), leader.to_string());
    let o = zatt(&follower.addr, &["status", "--leader", "--field", "pid"]);
    assert_eq!(
        text(&o.stdout).trim(),
        cluster.node(leader).pid().unwrap().to_string()
    );
}

#[test]
fn members_and_the_leader_s_status_pass_over_a_server_that_knows_no_leader() {
    // Goal: `zatt members` and `zatt status --leader` find the leader from a server's status;
    // a server that knows no leader, first in the endpoints, must send them on to the next
    // endpoint (as `zatt put` is sent), not hold them until --timeout. Method: a server started
    // with --join and not added (it knows no leader, and stays so) goes first; both commands
    // must succeed within --timeout 20s and describe the cluster its voters form.
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let joiner = cluster.start_joiner(4);
    cluster.wait_status(4, Duration::from_secs(20), "started", |s| {
        s.id == 4 && s.leader.is_none()
    });
    let mut endpoints = vec![joiner];
    endpoints.extend(
        cluster
            .nodes
            .iter()
            .filter(|n| n.id != 4)
            .map(|n| n.addr.clone()),
    );
    let endpoints = endpoints.join(",");

    let o = zatt(&endpoints, &["--output", "json", "members"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).matches("\"role\":\"voter\"").count(),
        3,
        "{}",
        text(&o.stdout)
    );
    let o = zatt(&endpoints, &["status", "--leader", "--field", "id"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), leader.to_string());
    // Still outside the cluster: the commands moved on because it knows no leader.
    let s = cluster.status(4).expect("the joiner answers");
    assert_eq!(s.leader, None, "{s:?}");
}

#[test]
fn a_one_mebibyte_value_goes_in_from_a_file_and_comes_back_exact() {
    // Goal: the CLI stores values as large as the server accepts (1 MiB), beyond the kernel's
    // limit on one argument (about 128 KiB), and `get` writes their exact bytes.
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(20));
    let endpoints = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let value: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let dir = common::temp_dir("cli-big");
    let file = common::write_file(&dir, "value", &value);
    let o = zatt(
        &endpoints,
        &["put", "big", "--file", &file.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&endpoints, &["get", "big"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout == value, "{} bytes came back", o.stdout.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn transfer_leader_and_member_remove_change_the_cluster() {
    // Goal: the admin commands act on a real cluster. Method: hand leadership to a chosen
    // follower and wait (bounded) until it leads; then remove another server and list members.
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let target = *ids.iter().find(|&&id| id != leader).unwrap();
    let endpoints = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let o = zatt(&endpoints, &["transfer-leader", &target.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    cluster.wait_status(target, Duration::from_secs(20), "leadership", |s| {
        s.role == "leader"
    });
    let victim = *ids.iter().find(|&&id| id != target).unwrap();
    let o = zatt(&endpoints, &["member", "remove", &victim.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = zatt(&endpoints, &["members"]);
    let listed: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.iter().any(|l| l.starts_with(&format!("{victim}\t"))));
}
