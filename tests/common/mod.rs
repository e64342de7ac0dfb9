//! A cluster of real `zattd` processes on loopback for integration tests, and a minimal blocking
//! client speaking `wire::client` (deliberately not the client library, so that the server's
//! tests do not depend on it).
//!
//! Each `Cluster` lives in its own temporary directory, each node on a loopback port reserved
//! across every test process on the machine (`reserve_port`: an flock'ed file per port, held
//! for the cluster's lifetime, so a restarted node binds its own port again and no other test
//! can be handed it meanwhile). Nodes can be killed (SIGKILL), paused (SIGSTOP/SIGCONT),
//! restarted with only `--id` and `--data-dir`, and joined with `--join`. A node that exits by
//! itself fails the test at the next wait, naming it, its exit status and its last log lines.
//! Dropping the cluster kills every process, removes the directory and releases the ports; a
//! panicking test prints the tail of each node's log first. Every wait here is bounded by a
//! deadline; nothing asserts on timing.
//!
//! ```ignore
//! mod common;
//! let mut c = common::Cluster::start(3, &["--snapshot-entries", "500"]); // ids 1..=3
//! let leader = c.wait_leader(Duration::from_secs(30));   // every running node agrees
//! c.put("k", "v");                                       // through the leader, retrying
//! c.wait_value(2, "k", Some("v"), T);                    // stale read on node 2
//! c.kill(leader); c.restart(leader);                     // SIGKILL; --id and --data-dir only
//! c.pause(2); c.resume(2);                               // SIGSTOP / SIGCONT
//! let addr = c.start_joiner(4);                          // --join; then MemberAdd via c.admin
//! let mut cl = c.client(1)?;                             // raw requests: cl.call(&Request::..)
//! ```
//! Endpoints are `c.addr(id)` (`127.0.0.1:PORT`, UDP and TCP); node logs are `c.log_of(id)`.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zatt::rng::SplitMix64;
use zatt::wire::client::{
    decode_response, encode_request, split_frame, Consistency, ErrorKind, FrameLimits, Request,
    Response, Status,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_zattd");

/// A `zatt` process with no ZATT_* variables from the environment that runs the tests, and not
/// under cargo (no CARGO: `zatt dev` starts the zattd built next to it instead of building).
pub fn zatt_cli() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_zatt"));
    for v in [
        "ZATT_ENDPOINTS",
        "ZATT_TIMEOUT",
        "ZATT_TLS_CA",
        "ZATT_CERT",
        "ZATT_KEY",
        "ZATT_OUTPUT",
        "CARGO",
    ] {
        c.env_remove(v);
    }
    c
}

/// Timing flags small enough for quick failover on a loaded machine, large enough not to flap.
pub const FAST: &[&str] = &[
    "--heartbeat-interval",
    "20ms",
    "--election-timeout",
    "300ms",
];

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed by the owner.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("zatt-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Ports handed to test servers come from here: below the kernel's ephemeral range (32768 and
/// up), so that no client connection's local end can take a server's port, and below the 20000s
/// where the load generator's tests and `perf/` scripts pick theirs.
pub const TEST_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// A loopback port reserved for this process until dropped: an exclusive `flock` on
/// `$TMPDIR/zatt-test-ports/PORT.lock`, which every test process on the machine takes before it
/// uses the port (the kernel releases it if the process dies). Two test processes therefore
/// never hand the same port to a server, however many suites run at once; the port was also
/// free for TCP and UDP when reserved, against programs that do not take part.
pub struct PortLock {
    pub port: u16,
    _file: std::fs::File,
}

fn port_lock_dir() -> PathBuf {
    let d = std::env::temp_dir().join("zatt-test-ports");
    if std::fs::create_dir_all(&d).is_ok() {
        // Shared by every user's test runs: world-writable and sticky, like /tmp.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777));
    }
    d
}

/// Reserves `port` if no other reservation holds it (in this process or another) and it is
/// free for both TCP and UDP on 127.0.0.1 right now.
pub fn reserve_port(port: u16) -> Option<PortLock> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(port_lock_dir().join(format!("{port}.lock")))
        .ok()?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared with the kernel.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return None;
    }
    let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
        && UdpSocket::bind(("127.0.0.1", port)).is_ok();
    free.then_some(PortLock { port, _file: file })
}

/// `n` consecutive reserved ports (for `zatt dev --base-port`), starting at a point that differs
/// between processes and calls.
pub fn reserve_ports(n: usize) -> Vec<PortLock> {
    assert!((1..100).contains(&n));
    let span = (TEST_PORTS.end - TEST_PORTS.start) as u64 - n as u64;
    let mut x = std::process::id() as u64 ^ (UNIQUE.fetch_add(1, Ordering::Relaxed) << 32);
    x ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = SplitMix64(x);
    for _ in 0..2000 {
        let base = TEST_PORTS.start + rng.below(span) as u16;
        let mut held = Vec::with_capacity(n);
        for i in 0..n as u16 {
            match reserve_port(base + i) {
                Some(l) => held.push(l),
                None => break,
            }
        }
        if held.len() == n {
            return held;
        }
    }
    panic!("no run of {n} loopback ports could be reserved in {TEST_PORTS:?}");
}

/// Reservations that last as long as the test process (see `free_port`).
static HELD_PORTS: std::sync::Mutex<Vec<PortLock>> = std::sync::Mutex::new(Vec::new());

/// A reserved loopback port, held until the test process exits: for tests that start servers
/// themselves. (A `Cluster` holds its ports itself and releases them when dropped.)
pub fn free_port() -> u16 {
    let lock = reserve_ports(1).pop().expect("one port");
    let port = lock.port;
    HELD_PORTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(lock);
    port
}

/// How process `pid` (a child of this process) ended, if it has, without reaping it, so that
/// the `Child` handle stays valid for whoever waits for it later.
pub fn exit_of(pid: u32) -> Option<String> {
    // SAFETY: waitid writes only into `info`, which lives on this stack frame; WNOWAIT leaves
    // the child to be reaped by its owner.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 || info.si_pid() == 0 {
            return None;
        }
        let status = info.si_status();
        Some(match info.si_code {
            libc::CLD_EXITED => format!("exit status {status}"),
            _ => format!("signal {status}"),
        })
    }
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A Read + Write stream: plain TCP or a rustls client stream.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking client for tests: one request at a time, or raw bytes for hostile-input tests.
pub struct TestClient {
    pub stream: Box<dyn Stream>,
    next_id: u64,
    buf: Vec<u8>,
    limits: FrameLimits,
}

impl TestClient {
    pub fn connect(addr: &str) -> io::Result<TestClient> {
        let s = TcpStream::connect_timeout(
            &addr.parse::<SocketAddr>().unwrap(),
            Duration::from_secs(5),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(TestClient::over(Box::new(s)))
    }

    pub fn over(stream: Box<dyn Stream>) -> TestClient {
        TestClient {
            stream,
            next_id: 1,
            buf: Vec::new(),
            limits: FrameLimits {
                max_frame_bytes: 64 << 20,
                max_key_bytes: 1 << 20,
                max_value_bytes: 32 << 20,
            },
        }
    }

    pub fn send(&mut self, req: &Request) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        encode_request(id, req, &mut out);
        self.stream.write_all(&out)?;
        Ok(id)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next response frame; `UnexpectedEof` when the server closed the connection.
    pub fn recv(&mut self) -> io::Result<(u64, Response)> {
        loop {
            if let Some((len, _)) = split_frame(&self.buf, &self.limits)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                let r = decode_response(&self.buf[..len], &self.limits)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                self.buf.drain(..len);
                return r;
            }
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub fn call(&mut self, req: &Request) -> io::Result<Response> {
        let id = self.send(req)?;
        let (rid, resp) = self.recv()?;
        assert_eq!(rid, id, "responses come back with their request id");
        Ok(resp)
    }

    pub fn put(&mut self, key: &str, value: &str) -> io::Result<Response> {
        self.call(&Request::Put {
            session: None,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        })
    }

    pub fn delete(&mut self, key: &str) -> io::Result<Response> {
        self.call(&Request::Delete {
            session: None,
            key: key.as_bytes().to_vec(),
        })
    }

    pub fn get(&mut self, key: &str, consistency: Consistency) -> io::Result<Response> {
        self.call(&Request::Get {
            key: key.as_bytes().to_vec(),
            consistency,
        })
    }

    /// The value of `key`, or None, from a read that succeeded.
    pub fn get_value(&mut self, key: &str, consistency: Consistency) -> io::Result<Option<String>> {
        match self.get(key, consistency)? {
            Response::Value { value, .. } => {
                Ok(value.map(|v| String::from_utf8(v).expect("utf-8 test value")))
            }
            other => Err(io::Error::other(format!("get {key}: {other:?}"))),
        }
    }

    /// Pipelines `n` puts of `{prefix}{i}` = `v{i}` with up to `window` in flight; every answer
    /// must be `Written`. For a leader only.
    pub fn put_pipelined(
        &mut self,
        prefix: &str,
        range: std::ops::Range<u64>,
        window: usize,
    ) -> io::Result<()> {
        let mut next = range.start;
        let mut inflight = 0usize;
        while next < range.end || inflight > 0 {
            while next < range.end && inflight < window {
                self.send(&Request::Put {
                    session: None,
                    key: format!("{prefix}{next}").into_bytes(),
                    value: format!("v{next}").into_bytes(),
                })?;
                next += 1;
                inflight += 1;
            }
            match self.recv()? {
                (_, Response::Written { .. }) => inflight -= 1,
                (_, other) => return Err(io::Error::other(format!("pipelined put: {other:?}"))),
            }
        }
        Ok(())
    }

    pub fn status(&mut self) -> io::Result<Status> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(*s),
            other => Err(io::Error::other(format!("status: {other:?}"))),
        }
    }
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Flags beyond --id and --data-dir given at every start.
    pub extra: Vec<String>,
    /// Flags given at the first start only (--cluster, --join, ...).
    pub first_start: Vec<String>,
    pub child: Option<Child>,
    pub started_once: bool,
    /// This node's port, reserved for the cluster's lifetime: a restart binds it again.
    pub port: PortLock,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = vec![
            "--id".into(),
            self.id.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if !self.started_once {
            args.extend(self.first_start.iter().cloned());
        }
        args.extend(self.extra.iter().cloned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("ZATT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If the test process dies without dropping the cluster (killed by a timeout), take
        // the servers with it rather than leave them running.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn zattd");
        self.child = Some(child);
        self.started_once = true;
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub cluster_arg: String,
    pub extra: Vec<String>,
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
}

impl Cluster {
    /// Starts `n` voters with ids 1..=n, each with `extra` flags (and the FAST timings).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let ports = (0..n)
            .map(|_| reserve_ports(1).pop().expect("one port"))
            .collect();
        Cluster::start_on(ports, extra)
    }

    /// Starts voters with ids 1, 2, ... on the given reserved ports, in that order.
    pub fn start_on(ports: Vec<PortLock>, extra: &[&str]) -> Cluster {
        let dir = temp_dir("cluster");
        let cluster_arg = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut extra_all: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        extra_all.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Cluster {
            dir,
            nodes: Vec::new(),
            cluster_arg: cluster_arg.clone(),
            extra: extra_all,
            tls_client: None,
        };
        for (i, p) in ports.into_iter().enumerate() {
            let id = i as u64 + 1;
            let node = c.new_node(id, p, vec!["--cluster".into(), cluster_arg.clone()]);
            c.nodes.push(node);
        }
        for node in &mut c.nodes {
            node.spawn();
        }
        c
    }

    fn new_node(&self, id: u64, port: PortLock, first_start: Vec<String>) -> Node {
        Node {
            id,
            addr: format!("127.0.0.1:{}", port.port),
            data_dir: self.dir.join(format!("n{id}")),
            log_path: self.dir.join(format!("n{id}.log")),
            extra: self.extra.clone(),
            first_start,
            child: None,
            started_once: false,
            port,
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    /// Every node's client address, in id order: what a client is given as its endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Every node's client address with `first`'s before the others (the server a client
    /// tries first).
    pub fn endpoints_first(&self, first: u64) -> Vec<String> {
        let mut v = vec![self.addr(first)];
        v.extend(
            self.nodes
                .iter()
                .filter(|n| n.id != first)
                .map(|n| n.addr.clone()),
        );
        v
    }

    /// Starts a new node with `--join`, telling it the initial `--cluster` list (from which it
    /// derives the cluster id). Returns its address.
    pub fn start_joiner(&mut self, id: u64) -> String {
        let first = vec![
            "--join".into(),
            "--cluster".into(),
            self.cluster_arg.clone(),
        ];
        self.spawn_joiner(id, first)
    }

    /// Starts a new node with `--join --cluster-id N`, N read from node 1's data directory.
    pub fn start_joiner_with_cluster_id(&mut self, id: u64) -> String {
        let cid = std::fs::read_to_string(self.node(1).data_dir.join("cluster-id")).unwrap();
        let first = vec![
            "--join".into(),
            "--cluster-id".into(),
            cid.trim().to_string(),
        ];
        self.spawn_joiner(id, first)
    }

    fn spawn_joiner(&mut self, id: u64, first: Vec<String>) -> String {
        let port = reserve_ports(1).pop().expect("one port");
        let addr = format!("127.0.0.1:{}", port.port);
        let mut node = self.new_node(id, port, first);
        // A restarted joiner still binds its address; the membership also has it once added.
        node.extra.push("--listen".into());
        node.extra.push(addr.clone());
        node.spawn();
        self.nodes.push(node);
        addr
    }

    pub fn client(&self, id: u64) -> io::Result<TestClient> {
        let addr = self.addr(id);
        match &self.tls_client {
            None => TestClient::connect(&addr),
            Some(cfg) => tls_connect(&addr, cfg.clone()),
        }
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        self.client(id).ok()?.status().ok()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Fails the test at once, naming the node, how it ended and its last log lines, if a
    /// server this harness started and did not stop has exited by itself (a port taken, a
    /// corrupt directory, a crash): waiting out a deadline would only hide the cause.
    pub fn check_exits(&self) {
        for n in &self.nodes {
            let Some(pid) = n.pid() else { continue };
            if let Some(how) = exit_of(pid) {
                panic!(
                    "node {} ({}, pid {pid}) exited by itself with {how}; its last log lines:\n{}",
                    n.id,
                    n.addr,
                    tail(&n.log_path, 20)
                );
            }
        }
    }

    /// Waits until every running node agrees on one leader that calls itself leader; its id.
    pub fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits();
            let mut leaders = Vec::new();
            let mut all = true;
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                match self.status(n.id) {
                    Some(s) => {
                        if s.role == "leader" {
                            leaders.push(s.id);
                        }
                        if s.leader.is_none() {
                            all = false;
                        }
                    }
                    None => all = false,
                }
            }
            if leaders.len() == 1 && all {
                return leaders[0];
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no single leader within {timeout:?} (leaders seen: {leaders:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `pred` holds for node `id`'s status.
    pub fn wait_status(
        &self,
        id: u64,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits();
            if let Some(s) = self.status(id) {
                if pred(&s) {
                    return s;
                }
                if Instant::now() > deadline {
                    self.dump_logs();
                    panic!("node {id}: {what} not reached within {timeout:?}; last status {s:?}");
                }
            } else if Instant::now() > deadline {
                self.dump_logs();
                panic!("node {id}: no status within {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `req` to the leader, following NotLeader hints and retrying through elections,
    /// until a response other than a retryable error comes back.
    pub fn call_leader(&self, req: &Request, timeout: Duration) -> Response {
        let deadline = Instant::now() + timeout;
        let mut target = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.id)
            .unwrap();
        loop {
            self.check_exits();
            let resp = self.client(target).and_then(|mut c| c.call(req));
            let last = format!("n{target}: {resp:?}");
            match resp {
                Ok(Response::Error(ErrorKind::NotLeader {
                    leader: Some(l), ..
                })) if self.nodes.iter().any(|n| n.id == l && n.child.is_some()) => target = l,
                Ok(Response::Error(e)) if retryable(&e) => {
                    target = self.next_running(target);
                    std::thread::sleep(Duration::from_millis(30));
                }
                Ok(r) => return r,
                Err(_) => {
                    target = self.next_running(target);
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no answer to {req:?} from a leader within {timeout:?}; last {last}");
            }
        }
    }

    fn next_running(&self, after: u64) -> u64 {
        let running: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect();
        let pos = running
            .iter()
            .position(|&i| i == after)
            .map(|p| p + 1)
            .unwrap_or(0);
        running[pos % running.len()]
    }

    /// Sends a request to the leader and expects `Done` (membership changes, transfers),
    /// retrying refusals that say "not yet" (a change in progress, a learner catching up).
    pub fn admin(&self, req: &Request, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.call_leader(req, timeout) {
                Response::Done => return,
                Response::Error(ErrorKind::ConfChange(why)) if Instant::now() < deadline => {
                    eprintln!("{req:?}: {why}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => panic!("{req:?}: {other:?}"),
            }
        }
    }

    /// Puts through the leader; returns the revision.
    pub fn put(&self, key: &str, value: &str) -> u64 {
        let req = Request::Put {
            session: None,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        };
        match self.call_leader(&req, Duration::from_secs(20)) {
            Response::Written { revision } => revision,
            other => panic!("put {key}: {other:?}"),
        }
    }

    /// Waits until node `id` serves `key` = `value` with a stale (local) read.
    pub fn wait_value(&self, id: u64, key: &str, value: Option<&str>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits();
            let got = self
                .client(id)
                .and_then(|mut c| c.get_value(key, Consistency::Stale));
            if let Ok(v) = &got {
                if v.as_deref() == value {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("node {id}: {key} is {got:?}, expected {value:?}");
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn kill(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        let n = self.node_mut(id);
        n.signal("-TERM");
        let mut c = n.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pause(&self, id: u64) {
        self.node(id).signal("-STOP");
    }

    pub fn resume(&self, id: u64) {
        self.node(id).signal("-CONT");
    }

    /// Starts a stopped node again with only --id, --data-dir and the common flags.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.node_mut(id).spawn();
    }

    /// The disk of node `id` is lost: the process is killed (-9) and its data directory
    /// removed, as an operator replacing a failed disk would find it.
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        let dir = self.node(id).data_dir.clone();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Starts node `id` with the very command line of its first start (`--cluster ...`), as a
    /// systemd unit or a script would after a disk was replaced.
    pub fn start_with_first_command(&mut self, id: u64) {
        self.kill(id);
        let n = self.node_mut(id);
        n.started_once = false;
        n.spawn();
    }

    /// Starts node `id` empty with `--join` on its own address (same id, data directory and
    /// `--cluster`), as the README's procedure for a server whose storage was lost says.
    pub fn start_as_joiner(&mut self, id: u64) {
        self.kill(id);
        let cluster = self.cluster_arg.clone();
        let n = self.node_mut(id);
        n.first_start = vec![
            "--join".into(),
            "--listen".into(),
            n.addr.clone(),
            "--cluster".into(),
            cluster,
        ];
        n.started_once = false;
        n.spawn();
    }

    /// Waits for node `id` to exit by itself (bounded) and returns its exit code; the node
    /// is then stopped as far as the harness is concerned.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let n = self.node_mut(id);
        let mut c = n.child.take()?;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!(
                "----- node {} log (last {} lines) -----",
                n.id,
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            n.signal("-CONT");
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn retryable(e: &ErrorKind) -> bool {
    matches!(
        e,
        ErrorKind::NotLeader { .. }
            | ErrorKind::Unavailable(_)
            | ErrorKind::Busy
            | ErrorKind::Timeout
            | ErrorKind::ShuttingDown
    )
}

/// Flips one bit of the last non-zero byte of the node's newest log segment: the last record
/// then fails its CRC with nothing valid after it (a torn tail, which may have been synced
/// and acknowledged).
pub fn damage_last_record(data_dir: &Path) {
    use std::os::unix::fs::FileExt;
    let seg = std::fs::read_dir(data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .expect("a log segment");
    let bytes = std::fs::read(&seg).unwrap();
    let last = bytes.iter().rposition(|&b| b != 0).expect("records");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[bytes[last] ^ 0x01], last as u64).unwrap();
}

/// Runs `zattd` with `args` to completion (for flag tests); (exit code, stderr).
pub fn run_zattd(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn zattd");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            let mut out = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            return (st.code(), err + &out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Leaves in `dir` what a first start leaves when it is stopped while it asks the other servers
/// of `--cluster` (as one they refuse does): the lock, empty hard state, a first segment and
/// an identity, and no membership. The start is given a second server that never answers, and
/// is killed once its identity is written. Bounded by a deadline.
pub fn leave_a_stopped_first_start(dir: &Path) {
    let ports = reserve_ports(2);
    let cluster = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{}",
        ports[0].port, ports[1].port
    );
    let mut child = Command::new(BIN)
        .args(["--id", "1", "--cluster", &cluster, "--data-dir"])
        .arg(dir)
        .env_remove("ZATT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn zattd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let waited = loop {
        if dir.join("identity").exists() {
            break Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            break Err(format!("zattd ended ({st}) before it asked its peers"));
        }
        if Instant::now() > deadline {
            break Err("zattd wrote no identity within 60 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    waited.unwrap();
}

/// A TLS client connection through rustls (ring provider).
pub fn tls_connect(addr: &str, cfg: Arc<rustls::ClientConfig>) -> io::Result<TestClient> {
    let s =
        TcpStream::connect_timeout(&addr.parse::<SocketAddr>().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(cfg, name).map_err(|e| io::Error::other(e.to_string()))?;
    let stream = rustls::StreamOwned::new(conn, s);
    Ok(TestClient::over(Box::new(stream)))
}

pub fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A cluster of `n` voters serving TLS on their client ports: a CA and a server certificate for
/// 127.0.0.1 (the client library verifies the address it dials) and localhost (the harness's own
/// calls) are generated into `dir` as ca.pem, server.pem and server.key; the harness trusts that
/// CA. Returns once a leader is known, with the CA's path for the client under test.
pub fn start_tls_cluster(dir: &Path, n: usize) -> (Cluster, PathBuf) {
    let (cluster, ca, _) = tls_cluster(dir, n, false);
    (cluster, ca)
}

/// As `start_tls_cluster`, and the servers require a client certificate signed by the CA
/// (`--tls-client-ca`): one is generated into `dir` as client.pem and client.key (returned),
/// and the harness presents it too.
pub fn start_mutual_tls_cluster(dir: &Path, n: usize) -> (Cluster, PathBuf, (PathBuf, PathBuf)) {
    let (cluster, ca, client) = tls_cluster(dir, n, true);
    (cluster, ca, client.expect("a client certificate"))
}

fn tls_cluster(
    dir: &Path,
    n: usize,
    client_auth: bool,
) -> (Cluster, PathBuf, Option<(PathBuf, PathBuf)>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
    let ca_path = write_file(dir, "ca.pem", ca.pem().as_bytes());
    let cert_path = write_file(dir, "server.pem", cert.pem().as_bytes());
    let key_path = write_file(dir, "server.key", key.serialize_pem().as_bytes());
    let cert_s = cert_path.display().to_string();
    let key_s = key_path.display().to_string();
    let ca_s = ca_path.display().to_string();
    let mut flags = vec!["--tls-cert", &cert_s, "--tls-key", &key_s];
    if client_auth {
        flags.extend(["--tls-client-ca", &ca_s]);
    }
    let mut cluster = Cluster::start(n, &flags);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let harness_tls = rustls::ClientConfig::builder().with_root_certificates(roots);
    let (harness_tls, client_files) = if client_auth {
        let ckey = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["zatt-client".to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let ccert = params.signed_by(&ckey, &ca, &ca_key).unwrap();
        let files = (
            write_file(dir, "client.pem", ccert.pem().as_bytes()),
            write_file(dir, "client.key", ckey.serialize_pem().as_bytes()),
        );
        let tls = harness_tls
            .with_client_auth_cert(
                vec![ccert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(ckey.serialize_der().into()),
            )
            .unwrap();
        (tls, Some(files))
    } else {
        (harness_tls.with_no_client_auth(), None)
    };
    cluster.tls_client = Some(Arc::new(harness_tls));
    cluster.wait_leader(Duration::from_secs(20));
    (cluster, ca_path, client_files)
}

/// Reopens a write-ahead log directory just closed by this process. The lock file's
/// descriptor is close-on-exec, but a child process that another test of the same binary forks
/// at that moment (a `zattd`, `mount`) shares it between its fork and its exec, so the lock can
/// look held for that instant. Only `Locked` is waited out, and only briefly; anything else
/// fails.
pub fn reopen_wal(dir: &Path, opts: zatt::wal::WalOptions) -> (zatt::wal::Wal, zatt::raft::Boot) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match zatt::wal::Wal::open(dir, opts.clone()) {
            Err(zatt::wal::WalError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r.unwrap(),
        }
    }
}
