//! `zattd`'s command line as a user meets it: precedence of flags over environment over config
//! file, one clear line and exit 2 for bad values, exit 1 for a port in use or an unwritable
//! data directory, exit 65 for a corrupt one, exit 0 on SIGTERM.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Starts a one-node cluster from `args`/`env`, returns the port it answers on.
fn serving_port(args: &[&str], env: &[(&str, &str)], candidates: &[u16]) -> u16 {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("ZATT_CLUSTER")
        .env_remove("ZATT_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + T;
    let found = loop {
        if let Some(p) = candidates.iter().copied().find(|p| {
            TestClient::connect(&format!("127.0.0.1:{p}"))
                .and_then(|mut c| c.status())
                .is_ok()
        }) {
            break Some(p);
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    found.expect("the server never answered on any candidate port")
}

#[test]
fn flags_beat_environment_beat_config_file() {
    // Goal: the documented precedence, observed through the port the server binds. Method: the
    // file, the environment and a flag each name another --cluster address; the server must
    // answer on the flag's, then (flag removed) the environment's, then the file's.
    let dir = temp_dir("prec");
    let (pf, pe, pa) = (free_port(), free_port(), free_port());
    let file = write_file(
        &dir,
        "zattd.conf",
        format!("# test\ncluster = 1=127.0.0.1:{pf}\nheartbeat-interval = 20ms\n").as_bytes(),
    );
    let file_s = file.display().to_string();
    let all = [pf, pe, pa];
    let env_cluster = format!("1=127.0.0.1:{pe}");
    let flag_cluster = format!("1=127.0.0.1:{pa}");
    let d1 = dir.join("d1").display().to_string();
    let d2 = dir.join("d2").display().to_string();
    let d3 = dir.join("d3").display().to_string();
    let p = serving_port(
        &[
            "--id",
            "1",
            "--data-dir",
            &d1,
            "--config",
            &file_s,
            "--cluster",
            &flag_cluster,
        ],
        &[("ZATT_CLUSTER", &env_cluster)],
        &all,
    );
    assert_eq!(p, pa, "flag wins");
    let p = serving_port(
        &["--id", "1", "--data-dir", &d2, "--config", &file_s],
        &[("ZATT_CLUSTER", &env_cluster)],
        &all,
    );
    assert_eq!(p, pe, "environment beats file");
    let p = serving_port(
        &["--id", "1", "--data-dir", &d3],
        &[("ZATT_CONFIG", &file_s)],
        &all,
    );
    assert_eq!(p, pf, "file (named by ZATT_CONFIG) beats defaults");
    let _ = std::fs::remove_dir_all(dir);
}

/// (arguments, environment, what the error line must mention)
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// A one-server cluster's arguments (`--id 1`, data directory `d`, `--cluster cl`), then `extra`.
fn with_base<'a>(d: &'a str, cl: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--id", "1", "--data-dir", d, "--cluster", cl];
    v.extend_from_slice(extra);
    v
}

#[test]
fn bad_flags_exit_2_with_one_clear_line() {
    // Goal: each bad value stops zattd with exit 2 and a single line naming the problem.
    let dir = temp_dir("badflags");
    let d = dir.join("d").display().to_string();
    let port = free_port();
    let cl = format!("1=127.0.0.1:{port}");
    let cases: Vec<Case> = vec![
        (
            vec!["--id", "x", "--data-dir", &d, "--cluster", &cl],
            vec![],
            "--id",
        ),
        (
            vec!["--id", "2", "--data-dir", &d, "--cluster", &cl],
            vec![],
            "not in --cluster",
        ),
        (
            with_base(&d, &cl, &["--election-timeout", "soon"]),
            vec![],
            "--election-timeout",
        ),
        (
            with_base(&d, &cl, &[]),
            vec![("ZATT_MAX_DATAGRAM", "1TB")],
            "--max-datagram",
        ),
        (with_base(&d, &cl, &["--frobnicate"]), vec![], "frobnicate"),
        (vec!["--id", "1", "--data-dir", &d], vec![], "--cluster"),
        (
            with_base(&d, &cl, &["--cpu-policy", "fifo"]),
            vec![],
            "invalid --cpu-policy \"fifo\": expected batch or inherit",
        ),
        (
            with_base(&d, &cl, &["--cpus", "3-1"]),
            vec![],
            "invalid --cpus \"3-1\": the range 3-1 runs backwards",
        ),
        (
            with_base(&d, &cl, &[]),
            vec![("ZATT_CPUS", "0,one")],
            "invalid --cpus \"0,one\": \"one\" is not a CPU number",
        ),
        (
            with_base(&d, &cl, &["--cpus", "4096"]),
            vec![],
            "CPU 4096 is out of range",
        ),
        (
            // No machine this runs on has CPU 1023 available to it.
            with_base(&d, &cl, &["--cpus", "0,1023"]),
            vec![],
            "--cpus 0,1023: CPU 1023 is not available to zattd here (it may run on ",
        ),
    ];
    for (args, env, needle) in cases {
        let (code, err) = run_zattd(&args, &env, T);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_documents_every_flag_and_exits_0() {
    let (code, out) = run_zattd(&["--help"], &[], T);
    assert_eq!(code, Some(0));
    for f in [
        "--id",
        "--cluster",
        "--data-dir",
        "--join",
        "--heartbeat-interval",
        "--election-timeout",
        "--snapshot-entries",
        "--max-datagram",
        "--max-request-bytes",
        "--max-connections",
        "--cpus",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--cluster-secret-file",
        "--log-level",
        "--config",
    ] {
        assert!(out.contains(f), "--help lacks {f}");
    }
    assert!(out.contains("[default: 50ms]"));
}

#[test]
fn port_in_use_and_unwritable_data_dir_exit_1() {
    // Goal: runtime problems at start exit 1 with a line naming them.
    let dir = temp_dir("rt");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cl = format!("1=127.0.0.1:{port}");
    let d = dir.join("d").display().to_string();
    let (code, err) = run_zattd(&["--id", "1", "--data-dir", &d, "--cluster", &cl], &[], T);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("address already in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let free = format!("1=127.0.0.1:{}", free_port());
    let (code, err) = run_zattd(
        &[
            "--id",
            "1",
            "--data-dir",
            "/proc/zatt-cannot-be-here",
            "--cluster",
            &free,
        ],
        &[],
        T,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/proc/zatt-cannot-be-here"), "{err}");
    drop(busy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_data_dir_exits_65() {
    // Goal: a data directory whose hard state is destroyed is refused with exit 65.
    // Method: start once, stop, overwrite both hard-state copies with garbage, start again.
    let mut c = Cluster::start(1, &[]);
    c.wait_leader(T);
    c.put("k", "v");
    c.kill(1);
    let d = c.node(1).data_dir.clone();
    for f in ["hardstate.0", "hardstate.1"] {
        std::fs::write(d.join(f), vec![0x5a; 40]).unwrap();
    }
    let ds = d.display().to_string();
    let (code, err) = run_zattd(&["--id", "1", "--data-dir", &ds], &[], T);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_needs_only_id_and_data_dir() {
    // Goal: SIGTERM exits 0, and the node restarts from its data directory alone with its data.
    let mut c = Cluster::start(1, &[]);
    c.wait_leader(T);
    c.put("k", "v");
    assert_eq!(c.terminate(1), Some(0));
    c.restart(1);
    c.wait_leader(T);
    c.wait_value(1, "k", Some("v"), T);
}

#[test]
fn failed_disk_sync_stops_the_server_with_exit_74() {
    // Goal: fail-stop on a disk failure, end to end: the server exits 74 with one line naming
    // the failure and never answers a write it could not make durable. Method: the WAL's test
    // hook makes the 5th log sync fail; write until the process is gone.
    let dir = temp_dir("eio");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cl = format!("1={addr}");
    let d = dir.join("d").display().to_string();
    let mut child = std::process::Command::new(BIN)
        .args(["--id", "1", "--data-dir", &d, "--cluster", &cl])
        .args(FAST)
        .env("ZATT_TEST_DISK_FAULT", "sync-eio:5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    let mut acknowledged = 0;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server survived a failed sync"
        );
        if let Ok(mut c) = TestClient::connect(&addr) {
            while let Ok(r) = c.put("k", "v") {
                if matches!(r, zatt::wire::client::Response::Written { .. }) {
                    acknowledged += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(74), "{err}");
    assert!(err.contains("disk"), "{err}");
    // One sequential client: each acknowledged write needed a sync of its own, and only the
    // first four syncs succeeded.
    assert!(acknowledged <= 4, "{acknowledged} writes acknowledged");
    let _ = std::fs::remove_dir_all(dir);
}

/// The scheduling policy (`SCHED_*`) of every thread of process `pid`, by thread name: field
/// 41 of /proc/PID/task/TID/stat, counted after the name in parentheses.
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_string();
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out.sort();
    out
}

/// How `a_serving_server` starts zattd.
#[derive(Clone, Copy)]
enum Start {
    /// Under this policy (as `chrt` would).
    Policy(i32),
    /// Under the default policy, with `sched_setscheduler` refused (EPERM) by a seccomp
    /// filter, as `deploy/zattd.service`'s `SystemCallFilter=~@resources` refuses it.
    Refused,
    /// Under the default policy, with `sched_setaffinity` refused (EPERM) the same way.
    AffinityRefused,
}

/// What `a_serving_server` saw of the server: each thread's name and scheduling policy, each
/// thread's name and the CPUs it may run on (`Cpus_allowed_list` of its `/proc` status), and
/// what the server logged.
struct Served {
    policies: Vec<(String, i32)>,
    cpus: Vec<(String, String)>,
    log: String,
}

/// The CPUs this test process may run on (`Cpus_allowed_list` of its first thread): what a
/// server it starts may use when not pinned.
fn own_cpus() -> String {
    thread_cpus(std::process::id())
        .into_iter()
        .next()
        .expect("this test's own threads")
        .1
}

/// Each thread's name and `Cpus_allowed_list` (as `0-1`), sorted.
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_string()
        };
        out.push((field("Name:"), field("Cpus_allowed_list:")));
    }
    out.sort();
    out
}

/// Installs, in the calling process, a seccomp filter that fails the system call `nr` with
/// EPERM and allows every other. Async-signal-safe (two `prctl` calls).
fn refuse_syscall(nr: libc::c_long) -> std::io::Result<()> {
    const LD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let rule = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        // The system call's number (seccomp_data.nr, at offset 0).
        rule(LD_NR, 0, 0, 0),
        rule(JEQ, 0, 1, nr as u32),
        rule(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        rule(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` and the filter it points to outlive both calls.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Starts a one-node cluster with `extra` flags, as `start` says; returns what it saw of the
/// server's threads once it has taken a write, and what it logged.
fn a_serving_server(extra: &[&str], start: Start) -> Served {
    use std::os::unix::process::CommandExt;
    let dir = temp_dir("cpupolicy");
    let log = dir.join("zattd.log");
    let port = reserve_ports(1).pop().unwrap();
    let addr = format!("127.0.0.1:{}", port.port);
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--id", "1", "--cluster", &format!("1={addr}"), "--data-dir"])
        .arg(dir.join("d"))
        .args(extra)
        .env_remove("ZATT_CLUSTER")
        .env_remove("ZATT_CONFIG")
        .env_remove("ZATT_CPU_POLICY")
        .env_remove("ZATT_CPUS")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: between fork and exec only async-signal-safe system calls are made.
    unsafe {
        cmd.pre_exec(move || match start {
            Start::Policy(policy) => {
                let param = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, policy, &param) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            }
            Start::Refused => refuse_syscall(libc::SYS_sched_setscheduler),
            Start::AffinityRefused => refuse_syscall(libc::SYS_sched_setaffinity),
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        let put = TestClient::connect(&addr).and_then(|mut c| c.put("k", "v"));
        if matches!(put, Ok(zatt::wire::client::Response::Written { .. })) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "zattd exited");
        assert!(
            std::time::Instant::now() < deadline,
            "no write taken: {put:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let policies = thread_policies(child.id());
    let cpus = thread_cpus(child.id());
    let _ = child.kill();
    let _ = child.wait();
    drop(port);
    let log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    Served {
        policies,
        cpus,
        log,
    }
}

#[test]
fn server_threads_run_under_the_cpu_policy_asked_for() {
    // Goal: by default the loop and the syncer run under SCHED_BATCH (a woken thread does not
    // preempt the running one); `--cpu-policy inherit` leaves the policy zattd was started
    // with, and so does the default when an operator started it under another one (chrt).
    let names = |p: &[(String, i32)]| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let Served {
        policies: batch,
        log,
        ..
    } = a_serving_server(&[], Start::Policy(libc::SCHED_OTHER));
    assert!(
        names(&batch).contains(&"zatt-syncer".to_string()),
        "{batch:?}"
    );
    assert!(names(&batch).contains(&"zattd".to_string()), "{batch:?}");
    assert!(
        batch.iter().all(|(_, p)| *p == libc::SCHED_BATCH),
        "{batch:?}"
    );
    assert!(log.contains("threads run under SCHED_BATCH"), "{log}");

    let inherit = a_serving_server(
        &["--cpu-policy", "inherit"],
        Start::Policy(libc::SCHED_OTHER),
    )
    .policies;
    assert_eq!(names(&inherit), names(&batch));
    assert!(
        inherit.iter().all(|(_, p)| *p == libc::SCHED_OTHER),
        "{inherit:?}"
    );

    let idle = a_serving_server(&[], Start::Policy(libc::SCHED_IDLE)).policies;
    assert_eq!(names(&idle), names(&batch));
    assert!(idle.iter().all(|(_, p)| *p == libc::SCHED_IDLE), "{idle:?}");
}

#[test]
fn a_server_refused_its_cpu_policy_warns_and_serves_under_the_default_one() {
    // Goal: the policy is not worth a refused start. Under a system call filter that refuses
    // sched_setscheduler (as deploy/zattd.service's does), zattd says so in its log and serves.
    let Served {
        policies: threads,
        log,
        ..
    } = a_serving_server(&[], Start::Refused);
    assert!(
        threads.iter().all(|(_, p)| *p == libc::SCHED_OTHER),
        "{threads:?}"
    );
    assert!(
        log.contains("--cpu-policy batch: cannot run under SCHED_BATCH (Operation not permitted"),
        "{log}"
    );
}

#[test]
fn server_threads_run_on_the_cpus_asked_for() {
    // Goal: `--cpus` pins every thread of the server (the loop, the syncer, the segment
    // preparer) to the CPUs listed, and says so; without it they may run wherever zattd was
    // started to run. Method: a one-server cluster pinned to the last CPU this process may use
    // (the first is what an unpinned server shares with everything else), its threads' allowed
    // CPUs read from /proc once it has taken a write.
    let mine = own_cpus();
    let last = mine
        .rsplit([',', '-'])
        .next()
        .expect("a CPU list names a CPU")
        .to_string();
    let pinned = a_serving_server(&["--cpus", &last], Start::Policy(libc::SCHED_OTHER));
    let names: Vec<&str> = pinned.cpus.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"zattd") && names.contains(&"zatt-syncer"),
        "{names:?}"
    );
    assert!(
        pinned.cpus.iter().all(|(_, c)| *c == last),
        "every thread on CPU {last}: {:?}",
        pinned.cpus
    );
    assert!(
        pinned.log.contains(&format!(
            "--cpus {last}: the server's threads run on CPU {last} only"
        )),
        "{}",
        pinned.log
    );

    let free = a_serving_server(&[], Start::Policy(libc::SCHED_OTHER));
    assert!(
        free.cpus.iter().all(|(_, c)| *c == mine),
        "unpinned threads may run on {mine}: {:?}",
        free.cpus
    );
    assert!(!free.log.contains("--cpus"), "{}", free.log);
}

#[test]
fn a_server_refused_its_cpus_warns_and_serves_unpinned() {
    // Goal: as for the CPU policy, a kernel that refuses to pin (a system call filter, as
    // deploy/zattd.service's) costs a warning, not the start: the server serves, unpinned.
    let mine = own_cpus();
    let first = mine.split([',', '-']).next().unwrap().to_string();
    let s = a_serving_server(&["--cpus", &first], Start::AffinityRefused);
    assert!(s.cpus.iter().all(|(_, c)| *c == mine), "{:?}", s.cpus);
    assert!(
        s.log.contains(&format!(
            "--cpus {first}: cannot pin the server's threads (Operation not permitted"
        )),
        "{}",
        s.log
    );
}
