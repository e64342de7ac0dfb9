//! Zatt on several hosts: real `zattd` processes, each in a network namespace of its own with
//! the address its `deploy/zattN.conf` gives it (10.0.0.11, .12, ...), joined by veth pairs to a
//! bridge, with the clients (the `zatt` command line and the client library) in a further
//! namespace (10.0.0.100). The servers run from the deploy example configurations themselves,
//! with TLS for clients and the cluster secret as those files ask, only the file paths and the
//! data directories overridden by flags. Also owns the checks of the `deploy/` files (each
//! example configuration parses with zattd's real parser; the systemd unit's ExecStart does too).
//!
//! What the namespace tests prove, without any timing assertion (every wait is bounded and
//! waits for a state, never for a duration):
//! - `a_partitioned_leader_steps_down_and_catches_up`: writes from the client namespace reach
//!   every server; a leader cut off from its peers by iptables rules inside its namespace stops
//!   leading and accepts no write, the other two elect a leader and serve; after the rules are
//!   removed the old leader catches up and every server holds every acknowledged write.
//! - `the_readme_procedures_work_across_hosts`: the README's "Running on several machines"
//!   procedures, step by step, behind the README's firewall openings with everything else
//!   dropped: a rolling restart (SIGTERM as systemd sends it, waiting with `zatt status` until
//!   the server has caught up), replacing a host whose disk was lost (`member remove`, wipe,
//!   start with `--join`, `member add`), and adding a host. Each command it runs as the README
//!   shows it is checked to be in the README word for word.
//! - `a_client_given_every_endpoint_writes_while_the_first_is_cut_off`: a client whose first
//!   endpoint is cut off from its peers (but not from the client) moves on to the others.
//!
//! The servers listen on the namespaces' addresses rather than loopback: those addresses exist
//! only inside this run's private namespaces, routed neither to the host nor to another run's
//! namespaces, so they are fixed and concurrent runs cannot collide on them. Only the
//! namespace names are global: they carry a prefix, the test process's pid and start time, so
//! every run's names are unique and a later run can tell a crashed run's leftovers (owner gone)
//! from a live run's (owner alive) and removes only the former. Everything a test makes
//! (namespaces, veth pairs, the bridge, iptables rules, processes, its temporary directory) is
//! removed when it ends, by a guard's `Drop` on failure, and checked gone on success. Servers get
//! PR_SET_PDEATHSIG so they die with the test process. Where namespaces cannot be made (not
//! root, no `ip`, no `iptables`, a kernel without veth or bridges) the tests say so and skip
//! (or fail, with ZATT_REQUIRE_NETNS=1).
//!
//! Must not touch the host's own network namespace beyond creating and deleting named
//! namespaces (the bridge lives in a namespace of its own), nor any name without this run's tag.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zatt::client::{Client, ClientConfig, Consistency, ScanOptions, Status, TlsConfig};
use zatt::config::{parse_args, parse_config_file, usage, InitialClusterState, Invocation};

const ZATTD: &str = env!("CARGO_BIN_EXE_zattd");
const ZATT: &str = env!("CARGO_BIN_EXE_zatt");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// Every namespace and temporary directory these tests make starts with this.
const PREFIX: &str = "zattnt";
/// The client namespace's address, on the deploy files' 10.0.0.0/24.
const CLIENT_IP: &str = "10.0.0.100";
/// How long any one state may take to come about on a loaded 2-core machine. A bound, not an
/// expectation: the waits end as soon as the state is there.
const WAIT: Duration = Duration::from_secs(90);
/// Bounds on the background writer.
const WRITER_MAX_WRITES: u64 = 20_000;
const WRITER_MAX_TIME: Duration = Duration::from_secs(300);

// ----- the deploy files -----------------------------------------------------------------------

fn deploy_file(name: &str) -> PathBuf {
    Path::new(DEPLOY).join(name)
}

fn host_conf(id: u64) -> PathBuf {
    deploy_file(&format!("zatt{id}.conf"))
}

/// The `flag = value` pairs of a deploy file, through zattd's own config-file parser.
fn conf_pairs(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_config_file(&text).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message))
}

fn conf_value(path: &Path, key: &str) -> Option<String> {
    conf_pairs(path)
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The address (`IP:PORT`) a host's deploy file makes it listen on.
fn host_addr(id: u64) -> String {
    conf_value(&host_conf(id), "listen")
        .unwrap_or_else(|| panic!("{} has no listen line", host_conf(id).display()))
}

fn host_ip(id: u64) -> String {
    let addr = host_addr(id);
    let (ip, _) = addr.rsplit_once(':').expect("listen is IP:PORT");
    ip.parse::<IpAddr>()
        .unwrap_or_else(|e| panic!("listen {addr}: the deploy files use IP addresses ({e})"));
    ip.to_string()
}

// ----- commands -------------------------------------------------------------------------------

/// Runs a command to completion (these are `ip` and `iptables -V`: quick, local, and with
/// little output), for at most a minute; returns stdout, or one line with the command, its
/// status and stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let status =
        wait_bounded(&mut child, Duration::from_secs(60)).map_err(|e| format!("{cmd:?}: {e}"))?;
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{cmd:?}: {status}: {}", err.trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Moves the calling thread into network namespace `ns` (sockets it opens from then on live
/// there; other threads are unaffected).
fn enter(ns_file: &File) -> io::Result<()> {
    // SAFETY: setns on a descriptor we own; it changes only this thread's network namespace.
    if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` inside namespace `ns`, dying with the thread that spawned it.
fn spawn_in(ns: &str, cmd: &mut Command) -> io::Result<Child> {
    let file = File::open(netns_path(ns))?;
    let fd = file.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe system calls run (setns, prctl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // Nothing of the test's own environment (ZATT_DATA_DIR=... and the like) leaks in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ZATT_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd.spawn();
    drop(file);
    child
}

/// Waits at most `limit` for `child`; kills it if it is still running then.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

/// Runs a short-lived command in namespace `ns` with a bound on its run time; its output goes
/// through files (no pipe to fill up). Returns (status, stdout, stderr).
fn run_in(
    ns: &str,
    scratch: &Path,
    cmd: &mut Command,
    limit: Duration,
) -> Result<(ExitStatus, String, String), String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out_path = scratch.join(format!("cmd-{n}.out"));
    let err_path = scratch.join(format!("cmd-{n}.err"));
    let out = File::create(&out_path).map_err(|e| e.to_string())?;
    let err = File::create(&err_path).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = spawn_in(ns, cmd).map_err(|e| format!("{cmd:?} in {ns}: {e}"))?;
    let st = wait_bounded(&mut child, limit).map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok((st, stdout, stderr))
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(netns_path(ns)).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(&file).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Polls `f` until it returns Ok, for at most `limit`; panics with the last error then.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("gave up after {limit:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ----- run names and leftovers -----------------------------------------------------------------

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid,
/// it names one process for the life of the machine.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `zattnt-PID-START`: unique to this test process.
fn run_tag() -> String {
    let pid = std::process::id();
    let start = start_time(pid).expect("own /proc/self/stat");
    format!("{PREFIX}-{pid}-{start}")
}

/// Whether a name made by `run_tag` belongs to a process that is gone (a crashed run).
fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
        return false;
    };
    let mut parts = rest.split('-');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_time(pid) != Some(start)
}

fn list_netns() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Kills whatever still runs in namespace `ns` and deletes it.
fn delete_netns(ns: &str) -> Result<(), String> {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    ip(&["netns", "del", ns]).map(|_| ())
}

/// Removes what crashed earlier runs (their test process is gone) left behind: namespaces with
/// their processes, veth pairs, bridge and iptables rules, and temporary directories. Live runs'
/// names are left alone. Once per test process.
fn clean_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(clean_leftovers_now);
}

fn clean_leftovers_now() {
    for ns in list_netns() {
        if is_leftover(&ns) {
            eprintln!("netns_cluster: removing namespace {ns} left by a crashed run");
            let _ = delete_netns(&ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_leftover(&name) {
                eprintln!("netns_cluster: removing {name} left by a crashed run");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

// ----- the lab: namespaces, bridge, servers ----------------------------------------------------

struct Host {
    ns: String,
    ip: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// One test's private network and servers. Dropping it removes everything it made.
struct Lab {
    /// `zattnt-PID-START-TEST`: every name this lab makes starts with it.
    tag: String,
    dir: PathBuf,
    bridge_ns: String,
    client_ns: String,
    /// Namespaces made, in order.
    namespaces: Vec<String>,
    /// Bridge-side veth ends made.
    veths: Vec<String>,
    bridge: bool,
    hosts: BTreeMap<u64, Host>,
    /// iptables rules in force: (namespace, rule as given after -I/-D).
    rules: Vec<(String, Vec<String>)>,
    ca: PathBuf,
    secret: PathBuf,
}

impl Lab {
    /// Makes the network for servers `ids` (addresses from their deploy files) and the client
    /// namespace, the test PKI and the cluster secret. Err: why this machine cannot (skip).
    fn new(test: &str, ids: &[u64]) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root to make network namespaces".into());
        }
        ip(&["-V"]).map_err(|e| format!("iproute2's `ip` is not usable: {e}"))?;
        run(Command::new("iptables").arg("-V")).map_err(|e| {
            format!("iptables is not usable ({e}); on Debian: apt-get install iptables")
        })?;
        clean_leftovers();

        let tag = format!("{}-{test}", run_tag());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut lab = Lab {
            bridge_ns: format!("{tag}-br"),
            client_ns: format!("{tag}-c"),
            tag,
            ca: dir.join("ca.pem"),
            secret: dir.join("secret"),
            dir,
            namespaces: Vec::new(),
            veths: Vec::new(),
            bridge: false,
            hosts: BTreeMap::new(),
            rules: Vec::new(),
        };
        lab.probe()?;

        // From here on the machine can do all of it: a failure is a failure, not a skip.
        let br = lab.bridge_ns.clone();
        lab.add_netns(&br).unwrap_or_else(|e| panic!("{e}"));
        must(ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]));
        lab.bridge = true;
        must(ip(&["-n", &br, "link", "set", "br0", "up"]));
        for &id in ids {
            let ns = format!("{}-s{id}", lab.tag);
            let ip_addr = host_ip(id);
            lab.plug(&ns, &format!("v{id}"), &ip_addr);
            lab.hosts.insert(
                id,
                Host {
                    ns,
                    ip: ip_addr,
                    data_dir: lab.dir.join(format!("n{id}")),
                    log: lab.dir.join(format!("n{id}.log")),
                    child: None,
                },
            );
        }
        let c = lab.client_ns.clone();
        lab.plug(&c, "vc", CLIENT_IP);

        lab.make_pki(ids);
        std::fs::write(&lab.secret, format!("secret of {}\n", lab.tag)).unwrap();
        Ok(lab)
    }

    /// Whether this machine can make what the tests need: a namespace with a bridge, a veth
    /// pair, and iptables working inside it. Err says what is missing.
    fn probe(&mut self) -> Result<(), String> {
        let ns = format!("{}-probe", self.tag);
        self.add_netns(&ns)
            .map_err(|e| format!("cannot make a network namespace: {e}"))?;
        let r = (|| {
            ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])
                .map_err(|e| format!("cannot make a bridge: {e}"))?;
            ip(&[
                "-n", &ns, "link", "add", "name", "pa", "type", "veth", "peer", "name", "pb",
            ])
            .map_err(|e| format!("cannot make a veth pair: {e}"))?;
            let (st, _, err) = run_in(
                &ns,
                &self.dir,
                Command::new("iptables").args(["-w", "10", "-S"]),
                Duration::from_secs(30),
            )?;
            if !st.success() {
                return Err(format!(
                    "iptables does not work in a namespace: {}",
                    err.trim()
                ));
            }
            Ok(())
        })();
        must(delete_netns(&ns));
        self.namespaces.retain(|n| *n != ns);
        r
    }

    fn add_netns(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]).map(|_| ())
    }

    /// A namespace `ns` with `eth0` at `addr`/24, its veth peer `veth` on the bridge.
    fn plug(&mut self, ns: &str, veth: &str, addr: &str) {
        must(self.add_netns(ns));
        let br = self.bridge_ns.clone();
        must(ip(&[
            "link", "add", "name", veth, "netns", &br, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ]));
        self.veths.push(veth.to_string());
        must(ip(&["-n", &br, "link", "set", veth, "master", "br0"]));
        must(ip(&["-n", &br, "link", "set", veth, "up"]));
        let cidr = format!("{addr}/24");
        must(ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]));
        must(ip(&["-n", ns, "link", "set", "eth0", "up"]));
    }

    /// A CA (ca.pem) and, per host, a certificate naming its IP address (nN.pem, nN.key).
    fn make_pki(&self, ids: &[u64]) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(&self.ca, ca.pem()).unwrap();
        for &id in ids {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![host_ip(id), format!("zatt{id}")])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            std::fs::write(self.dir.join(format!("n{id}.pem")), cert.pem()).unwrap();
            std::fs::write(self.dir.join(format!("n{id}.key")), key.serialize_pem()).unwrap();
        }
    }

    fn host(&self, id: u64) -> &Host {
        self.hosts.get(&id).expect("host id")
    }

    fn host_mut(&mut self, id: u64) -> &mut Host {
        self.hosts.get_mut(&id).expect("host id")
    }

    fn endpoint(&self, id: u64) -> String {
        format!(
            "{}:{}",
            self.host(id).ip,
            host_addr(id).rsplit_once(':').unwrap().1
        )
    }

    fn endpoints(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts server `id` in its namespace as the unit would, from its deploy file, with only
    /// the paths overridden (data directory, secret, certificate), plus `extra` flags.
    fn start(&mut self, id: u64, extra: &[&str]) {
        let conf = host_conf(id);
        let (ns, data_dir, log) = {
            let h = self.host(id);
            assert!(h.child.is_none(), "server {id} is running already");
            (h.ns.clone(), h.data_dir.clone(), h.log.clone())
        };
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(ZATTD);
        cmd.arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .arg("--tls-cert")
            .arg(self.dir.join(format!("n{id}.pem")))
            .arg("--tls-key")
            .arg(self.dir.join(format!("n{id}.key")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = spawn_in(&ns, &mut cmd).unwrap_or_else(|e| panic!("spawn zattd {id}: {e}"));
        self.host_mut(id).child = Some(child);
    }

    /// Sends `sig` to server `id` and waits (bounded) for it to exit.
    fn stop(&mut self, id: u64, sig: libc::c_int) -> ExitStatus {
        let mut child = self
            .host_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("server {id} is not running"));
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        wait_bounded(&mut child, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("server {id} after signal {sig}: {e}"))
    }

    fn client_config(&self, timeout: Duration) -> ClientConfig {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2).min(timeout),
            timeout,
            tls: Some(TlsConfig::with_ca(&self.ca)),
            ..ClientConfig::default()
        }
    }

    /// Runs `f` on a thread in the client namespace.
    fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.client_ns, f)
    }

    /// The status of server `id` as it answers for itself, asked from the client namespace.
    fn status(&self, id: u64) -> Result<Status, String> {
        let ep = self.endpoint(id);
        let cfg = self.client_config(Duration::from_secs(3));
        self.in_client(move || {
            Client::connect(&[ep.as_str()], cfg)
                .and_then(|mut c| c.status())
                .map_err(|e| format!("status of {ep}: {e}"))
        })
    }

    /// Every key and value server `id` holds, read from it alone (stale reads).
    fn stale_dump(&self, id: u64) -> Result<BTreeMap<String, String>, String> {
        let ep = self.endpoint(id);
        let cfg = self.client_config(Duration::from_secs(5));
        self.in_client(move || {
            let mut c = Client::connect(&[ep.as_str()], cfg).map_err(|e| format!("{ep}: {e}"))?;
            let opts = ScanOptions {
                consistency: Consistency::Stale,
                ..ScanOptions::default()
            };
            let mut out = BTreeMap::new();
            for kv in c.scan_with(opts).items() {
                let kv = kv.map_err(|e| format!("stale scan of {ep}: {e}"))?;
                out.insert(
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                );
            }
            Ok(out)
        })
    }

    /// Puts every pair through the servers `ids`, each acknowledged (retrying within `WAIT`).
    fn put_all(&self, ids: &[u64], pairs: &[(String, String)]) {
        let eps: Vec<String> = ids.iter().map(|&i| self.endpoint(i)).collect();
        let cfg = self.client_config(Duration::from_secs(20));
        self.in_client(move || {
            let mut client = wait_for("a client connection", WAIT, || {
                Client::connect(&eps, cfg.clone()).map_err(|e| e.to_string())
            });
            for (k, v) in pairs {
                // The same value again is harmless, so a write whose outcome was unknown may be
                // sent once more; the loop ends only on an acknowledgement.
                wait_for(&format!("put {k}"), WAIT, || {
                    client.put(k, v).map(|_| ()).map_err(|e| e.to_string())
                });
            }
        })
    }

    /// Waits until every server in `ids` agrees on one leader among them (other than `not`) in
    /// one term above `above`; returns (leader, term).
    fn wait_leader(&self, ids: &[u64], not: Option<u64>, above: u64) -> (u64, u64) {
        wait_for("a leader the servers agree on", WAIT, || {
            let mut seen: Option<(u64, u64)> = None;
            for &id in ids {
                let s = self.status(id)?;
                let l = s.leader.ok_or(format!("server {id} knows no leader"))?;
                let mine = (l, s.term);
                if seen.is_some_and(|x| x != mine) {
                    return Err(format!("servers disagree: {seen:?} and {mine:?}"));
                }
                if l == id && s.role != "leader" {
                    return Err(format!("server {id} names itself but is {}", s.role));
                }
                seen = Some(mine);
            }
            let (l, term) = seen.expect("ids is not empty");
            if !ids.contains(&l) || Some(l) == not || term <= above {
                return Err(format!("leader {l} in term {term} is not the one sought"));
            }
            Ok((l, term))
        })
    }

    /// Waits until server `id` holds every pair in `want` (and none of `absent`), read from it
    /// alone.
    fn wait_holds(&self, id: u64, want: &BTreeMap<String, String>, absent: &[&str]) {
        wait_for(
            &format!("server {id} to hold every acknowledged write"),
            WAIT,
            || {
                let have = self.stale_dump(id)?;
                let missing: Vec<&String> = want
                    .iter()
                    .filter(|(k, v)| have.get(*k) != Some(*v))
                    .map(|(k, _)| k)
                    .collect();
                if let Some(k) = missing.first() {
                    return Err(format!(
                        "{} of {} missing or different, first {k}",
                        missing.len(),
                        want.len()
                    ));
                }
                match absent.iter().find(|k| have.contains_key(**k)) {
                    Some(k) => Err(format!("holds {k}, which was never acknowledged")),
                    None => Ok(()),
                }
            },
        )
    }

    /// Waits until the servers `ids` hold identical dictionaries; returns it.
    fn wait_identical(&self, ids: &[u64]) -> BTreeMap<String, String> {
        wait_for("every server to hold the same dictionary", WAIT, || {
            let first = self.stale_dump(ids[0])?;
            for &id in &ids[1..] {
                let d = self.stale_dump(id)?;
                if d != first {
                    return Err(format!(
                        "server {id} holds {} keys, server {} {}",
                        d.len(),
                        ids[0],
                        first.len()
                    ));
                }
            }
            Ok(first)
        })
    }

    /// Adds an iptables rule (`op` is `-A` or `-I`, then `chain args...`) inside `ns`.
    fn add_rule(&mut self, ns: &str, op: &str, rule: &[&str]) {
        let rule: Vec<String> = rule.iter().map(|s| s.to_string()).collect();
        iptables(ns, &self.dir, op, &rule).unwrap_or_else(|e| panic!("{e}"));
        self.rules.push((ns.to_string(), rule));
    }

    /// Runs an `iptables ...` command line from the README inside server `id`'s namespace
    /// (checking that the README holds it word for word); it is removed at the end.
    fn readme_iptables(&mut self, id: u64, line: &str) {
        assert_readme_has(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "iptables", "{line}");
        let ns = self.host(id).ns.clone();
        self.add_rule(&ns, words[1], &words[2..]);
    }

    /// Cuts server `id` off from the other servers in `ids` with iptables rules inside its own
    /// namespace (both directions; clients still reach it). Returns the others.
    fn cut_off(&mut self, id: u64, ids: &[u64]) -> Vec<u64> {
        let ns = self.host(id).ns.clone();
        let others: Vec<u64> = ids.iter().copied().filter(|&i| i != id).collect();
        for &p in &others {
            let pip = self.host(p).ip.clone();
            self.add_rule(&ns, "-I", &["INPUT", "-s", &pip, "-j", "DROP"]);
            self.add_rule(&ns, "-I", &["OUTPUT", "-d", &pip, "-j", "DROP"]);
        }
        others
    }

    fn wait_not_leader(&self, id: u64) {
        wait_for(&format!("server {id} to stop leading"), WAIT, || {
            let s = self.status(id)?;
            match s.role.as_str() {
                "leader" => Err(format!("still leader in term {}", s.term)),
                _ => Ok(()),
            }
        });
    }

    /// Deletes every iptables rule added.
    fn clear_rules(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        for (ns, rule) in std::mem::take(&mut self.rules).into_iter().rev() {
            if let Err(e) = iptables(&ns, &self.dir, "-D", &rule) {
                errs.push(e);
            }
        }
        errs
    }

    /// The `zatt` command line, run in the client namespace with TLS as the deploy files ask.
    /// Returns (exit status, stdout, stderr).
    fn zatt(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let mut cmd = Command::new(ZATT);
        cmd.arg("--tls-ca").arg(&self.ca).args(args);
        run_in(
            &self.client_ns,
            &self.dir,
            &mut cmd,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("zatt {args:?}: {e}"))
    }

    /// `zatt --tls-ca /etc/zatt/ca.pem ARGS` exactly as the README shows it (checked), run with
    /// this lab's CA in that path's place; it must succeed. Returns its stdout.
    fn readme_zatt(&self, args: &[&str]) -> String {
        assert_readme_has(&format!("zatt --tls-ca {README_CA} {}", args.join(" ")));
        self.zatt_ok(args)
    }

    /// `zatt ARGS`, which must succeed; returns its stdout.
    fn zatt_ok(&self, args: &[&str]) -> String {
        let (st, out, err) = self.zatt(args);
        assert!(
            st.success(),
            "zatt {args:?}: {st}\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    /// Everything this lab made, removed; returns what could not be.
    fn teardown(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        for (id, h) in self.hosts.iter_mut() {
            if let Some(mut c) = h.child.take() {
                let _ = c.kill();
                if let Err(e) = wait_bounded(&mut c, Duration::from_secs(60)) {
                    errs.push(format!("server {id}: {e}"));
                }
            }
        }
        errs.extend(self.clear_rules());
        for v in std::mem::take(&mut self.veths).into_iter().rev() {
            if let Err(e) = ip(&["-n", &self.bridge_ns, "link", "del", &v]) {
                errs.push(e);
            }
        }
        if std::mem::take(&mut self.bridge) {
            if let Err(e) = ip(&["-n", &self.bridge_ns, "link", "del", "br0"]) {
                errs.push(e);
            }
        }
        for ns in std::mem::take(&mut self.namespaces).into_iter().rev() {
            if let Err(e) = delete_netns(&ns) {
                errs.push(e);
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                errs.push(format!("{}: {e}", self.dir.display()));
            }
        }
        errs
    }

    /// The end of a test that passed: removes everything and checks that nothing is left.
    fn finish(mut self) {
        let errs = self.teardown();
        assert!(errs.is_empty(), "cleaning up: {errs:?}");
        let left: Vec<String> = list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&self.tag))
            .collect();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        assert!(!self.dir.exists(), "{} left behind", self.dir.display());
    }

    fn print_logs(&self) {
        for (id, h) in &self.hosts {
            let text = std::fs::read_to_string(&h.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            eprintln!("---- server {id} ({}) log, last lines:", h.ip);
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        let errs = self.teardown();
        if !errs.is_empty() {
            eprintln!("netns_cluster: cleaning up {}: {errs:?}", self.tag);
        }
    }
}

/// The CA path the README's `zatt` examples use.
const README_CA: &str = "/etc/zatt/ca.pem";

/// The README's examples are run by these tests: each command line a test runs as the README
/// shows it must be in the README word for word.
fn assert_readme_has(line: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    assert!(
        readme.lines().any(|l| l.contains(line)),
        "README.md does not show the command this test runs: {line}"
    );
}

fn iptables(ns: &str, scratch: &Path, op: &str, rule: &[String]) -> Result<(), String> {
    let mut cmd = Command::new("iptables");
    cmd.args(["-w", "10", op]).args(rule);
    let (st, _, err) = run_in(ns, scratch, &mut cmd, Duration::from_secs(60))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op} {rule:?} in {ns}: {st}: {}",
            err.trim()
        ))
    }
}

/// Builds the lab or says why this machine cannot and returns None (the test then passes
/// without having run, as the message says). With ZATT_REQUIRE_NETNS=1 in the environment a
/// machine that cannot is a failure instead, for runs that must not skip unnoticed (cargo shows
/// a passing test's output only with --nocapture).
fn lab_or_skip(test: &str, ids: &[u64]) -> Option<Lab> {
    match Lab::new(test, ids) {
        Ok(lab) => Some(lab),
        Err(why) if std::env::var_os("ZATT_REQUIRE_NETNS").is_some_and(|v| v == "1") => {
            panic!("{test}: ZATT_REQUIRE_NETNS=1 but {why}")
        }
        Err(why) => {
            eprintln!("netns_cluster: SKIPPED {test}: {why}");
            None
        }
    }
}

// ----- a writer in the client namespace --------------------------------------------------------

#[derive(Default)]
struct WriterLog {
    /// Writes the cluster acknowledged.
    acked: BTreeMap<String, String>,
    /// Writes whose outcome the client could not know.
    unknown: u64,
    /// Writes certainly not applied.
    refused: u64,
}

/// Writes `during/N` = `wN` one after another, through every given server, until stopped
/// (bounded in count and time).
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WriterLog>>,
}

impl Writer {
    fn start(lab: &Lab, ids: &[u64]) -> Writer {
        let file = File::open(netns_path(&lab.client_ns)).unwrap();
        let eps: Vec<String> = ids.iter().map(|&i| lab.endpoint(i)).collect();
        let cfg = lab.client_config(Duration::from_secs(10));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            enter(&file).expect("setns into the client namespace");
            let began = Instant::now();
            let mut log = WriterLog::default();
            let mut client: Option<Client> = None;
            for n in 0..WRITER_MAX_WRITES {
                if flag.load(Ordering::SeqCst) || began.elapsed() > WRITER_MAX_TIME {
                    break;
                }
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match Client::connect(&eps, cfg.clone()) {
                        Ok(c) => client.insert(c),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    },
                };
                let (k, v) = (format!("during/{n:05}"), format!("w{n}"));
                match c.put(&k, &v) {
                    Ok(_) => {
                        log.acked.insert(k, v);
                    }
                    Err(e) if e.may_have_applied() => log.unknown += 1,
                    Err(_) => log.refused += 1,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            log
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> WriterLog {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.handle.take().expect("joined once");
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pairs(prefix: &str, n: u64, value: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}/{i:03}"), format!("{value}{i}")))
        .collect()
}

/// A `field: value` line of `zatt status` text output.
fn status_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(|v| v.trim().to_string())
}

// ----- the tests -------------------------------------------------------------------------------

#[test]
fn a_partitioned_leader_steps_down_and_catches_up() {
    let ids = [1, 2, 3];
    let Some(mut lab) = lab_or_skip("part", &ids) else {
        return;
    };
    for id in ids {
        lab.start(id, &[]);
    }
    let (old, old_term) = lab.wait_leader(&ids, None, 0);
    eprintln!("netns_cluster: leader {old} in term {old_term}");

    // Writes from the client namespace reach every server: through the library, and one
    // through the command line.
    let mut acked: BTreeMap<String, String> = pairs("before", 50, "b").into_iter().collect();
    lab.put_all(&ids, &acked.clone().into_iter().collect::<Vec<_>>());
    let all = lab.endpoints(&ids);
    assert_eq!(
        lab.zatt_ok(&["--endpoints", &all, "put", "cli", "hello"])
            .trim(),
        "OK"
    );
    acked.insert("cli".into(), "hello".into());
    for id in ids {
        lab.wait_holds(id, &acked, &[]);
        let (st, out, _) = lab.zatt(&["--endpoints", &lab.endpoint(id), "get", "cli", "--stale"]);
        assert!(st.success(), "zatt get --stale from server {id}: {st}");
        assert_eq!(out.trim(), "hello", "server {id}");
    }

    // A client keeps writing through every server while the leader is cut off and healed.
    let writer = Writer::start(&lab, &ids);

    // Cut the leader off from its peers inside its own namespace (clients still reach it). It
    // stops leading (it hears from no majority), while the other two elect one of themselves in
    // a later term and serve writes.
    let peers = lab.cut_off(old, &ids);
    lab.wait_not_leader(old);
    let (new, new_term) = lab.wait_leader(&peers, Some(old), old_term);
    eprintln!("netns_cluster: cut off {old}; {new} leads in term {new_term}");
    let after: Vec<(String, String)> = pairs("after", 20, "a");
    lab.put_all(&peers, &after);
    acked.extend(after.iter().cloned());

    // The partition is real: the old leader has none of that, and takes no write.
    let isolated = lab
        .stale_dump(old)
        .expect("stale reads from the cut-off server");
    for (k, _) in &after {
        assert!(!isolated.contains_key(k), "cut-off server {old} holds {k}");
    }
    let ep_old = lab.endpoint(old);
    let cfg = lab.client_config(Duration::from_secs(5));
    let refused = lab.in_client(move || {
        let mut c = Client::connect(&[ep_old.as_str()], cfg).expect("the cut-off server answers");
        c.put("isolated", "never")
    });
    assert!(
        refused.is_err(),
        "the cut-off former leader acknowledged a write: {refused:?}"
    );
    let s = lab.status(old).expect("status of the cut-off server");
    assert_ne!(s.role, "leader", "server {old} leads again while cut off");

    // Heal. The old leader catches up and holds every acknowledged write, the writer's too.
    let errs = lab.clear_rules();
    assert!(errs.is_empty(), "removing the partition: {errs:?}");
    lab.wait_holds(old, &acked, &["isolated"]);
    lab.put_all(&ids, &[("healed".into(), "yes".into())]);
    acked.insert("healed".into(), "yes".into());
    let log = writer.finish();
    eprintln!(
        "netns_cluster: writer: {} acknowledged, {} unknown outcome, {} refused",
        log.acked.len(),
        log.unknown,
        log.refused
    );
    acked.extend(log.acked);
    for id in ids {
        lab.wait_holds(id, &acked, &["isolated"]);
    }
    let final_state = lab.wait_identical(&ids);
    assert!(!final_state.contains_key("isolated"));
    lab.wait_leader(&ids, None, 0);
    lab.finish();
}

/// The README tells operators to give clients every server's address. When the server a client
/// is connected to is cut off from its peers but not from the client, it answers "not leader,
/// leader unknown" for as long as the partition lasts; the client must then try the other
/// addresses it was given, where a leader serves. A client that reconnected to the same
/// endpoint after such an answer would wait for the partition to heal and fail with
/// Unavailable when that takes longer than its timeout: deterministic when the cut-off server
/// is the first endpoint.
#[test]
fn a_client_given_every_endpoint_writes_while_the_first_is_cut_off() {
    let ids = [1, 2, 3];
    let Some(mut lab) = lab_or_skip("first", &ids) else {
        return;
    };
    for id in ids {
        lab.start(id, &[]);
    }
    let (old, old_term) = lab.wait_leader(&ids, None, 0);
    let peers = lab.cut_off(old, &ids);
    lab.wait_not_leader(old);
    lab.wait_leader(&peers, Some(old), old_term);
    let mut order = vec![old];
    order.extend(&peers);
    let eps: Vec<String> = order.iter().map(|&i| lab.endpoint(i)).collect();
    let cfg = lab.client_config(Duration::from_secs(20));
    let put = lab.in_client(move || {
        let mut c = Client::connect(&eps, cfg)?;
        c.put("through", "the partition")
    });
    assert!(
        put.is_ok(),
        "a client given every endpoint, the cut-off one first: {put:?}"
    );
    let (st, out, err) = lab.zatt(&[
        "--endpoints",
        &lab.endpoints(&order),
        "--timeout",
        "20s",
        "put",
        "cli-through",
        "yes",
    ]);
    assert!(
        st.success(),
        "zatt put with the cut-off server first: {st} {out} {err}"
    );
    lab.finish();
}

#[test]
fn the_readme_procedures_work_across_hosts() {
    let ids = [1, 2, 3, 4];
    let Some(mut lab) = lab_or_skip("ops", &ids) else {
        return;
    };
    let first = [1, 2, 3];
    // The README's firewall openings on every server, and everything else dropped: they are
    // all the cluster needs.
    for id in ids {
        lab.readme_iptables(id, FIREWALL_UDP);
        lab.readme_iptables(id, FIREWALL_TCP);
        let ns = lab.host(id).ns.clone();
        lab.add_rule(&ns, "-A", &["INPUT", "-j", "DROP"]);
    }
    for id in first {
        lab.start(id, &[]);
    }
    let (leader, _) = lab.wait_leader(&first, None, 0);
    let all3 = lab.endpoints(&first);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    assert_eq!(
        lab.zatt_ok(&["--endpoints", &all3, "put", "k0", "v0"])
            .trim(),
        "OK"
    );
    acked.insert("k0".into(), "v0".into());

    // Rolling restart, one server at a time, the leader last: stop it as systemd does (SIGTERM,
    // clean exit 0), start it again, and wait with `zatt status` until it names a leader and
    // has applied what that leader has committed.
    let mut order: Vec<u64> = first.iter().copied().filter(|&i| i != leader).collect();
    order.push(leader);
    for id in order {
        let st = lab.stop(id, libc::SIGTERM);
        assert_eq!(st.code(), Some(0), "server {id} stopped by SIGTERM: {st:?}");
        let key = format!("rolling/{id}");
        assert_eq!(
            lab.zatt_ok(&[
                "--endpoints",
                &all3,
                "--timeout",
                "30s",
                "put",
                &key,
                "down"
            ])
            .trim(),
            "OK",
            "the cluster serves while server {id} is down"
        );
        acked.insert(key.clone(), "down".into());
        lab.start(id, &[]);
        let ep = lab.endpoint(id);
        wait_for(&format!("server {id} to catch up"), WAIT, || {
            let args = ["--endpoints", ep.as_str(), "status"];
            if id == 1 {
                assert_readme_has(&format!("zatt --tls-ca {README_CA} {}", args.join(" ")));
            }
            let (st, out, err) = lab.zatt(&args);
            if !st.success() {
                return Err(format!("zatt status: {st}: {err}"));
            }
            let applied: u64 = status_field(&out, "applied_index")
                .and_then(|v| v.parse().ok())
                .ok_or("no applied_index")?;
            let leader_addr = status_field(&out, "leader")
                .and_then(|v| {
                    v.split_once('(')
                        .map(|(_, a)| a.trim_end_matches(')').to_string())
                })
                .ok_or(format!("server {id} names no leader yet"))?;
            let (lst, lout, lerr) = lab.zatt(&["--endpoints", &leader_addr, "status"]);
            if !lst.success() {
                return Err(format!("zatt status of the leader: {lst}: {lerr}"));
            }
            let commit: u64 = status_field(&lout, "commit_index")
                .and_then(|v| v.parse().ok())
                .ok_or("no commit_index")?;
            if applied >= commit {
                Ok(())
            } else {
                Err(format!("applied {applied} < leader's commit {commit}"))
            }
        });
        let (st, out, _) = lab.zatt(&["--endpoints", &ep, "get", &key, "--stale"]);
        assert!(
            st.success() && out.trim() == "down",
            "server {id} after restart: {out}"
        );
    }
    for id in first {
        lab.wait_holds(id, &acked, &[]);
    }

    // Replacing host 3, whose disk was lost (leader or not): remove the member, wipe, start it
    // with `join`, add it again. It comes back with every write.
    let st = lab.stop(3, libc::SIGKILL);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    let two = lab.endpoints(&[1, 2]);
    assert_eq!(
        lab.readme_zatt(&["--endpoints", &two, "member", "remove", "3"])
            .trim(),
        "OK"
    );
    let members = lab.zatt_ok(&["--endpoints", &two, "members"]);
    assert!(
        !members.lines().any(|l| l.starts_with("3\t")),
        "server 3 removed: {members}"
    );
    assert_eq!(
        lab.zatt_ok(&["--endpoints", &two, "put", "while-replacing", "yes"])
            .trim(),
        "OK"
    );
    acked.insert("while-replacing".into(), "yes".into());
    std::fs::remove_dir_all(&lab.host(3).data_dir).expect("wipe server 3's data");
    lab.start(3, &["--join"]);
    let addr3 = host_addr(3);
    assert_eq!(
        lab.readme_zatt(&["--endpoints", &two, "member", "add", "3", &addr3])
            .trim(),
        "OK"
    );
    let members = lab.zatt_ok(&["--endpoints", &two, "members"]);
    assert!(
        members.contains(&format!("3\t{addr3}\tvoter")),
        "server 3 is a voter again: {members}"
    );
    lab.wait_holds(3, &acked, &[]);

    // Adding host 4: open UDP from it on the others, start it (its deploy file has `join`),
    // then `zatt member add`.
    for id in first {
        lab.readme_iptables(id, FIREWALL_ADD_UDP);
    }
    lab.start(4, &[]);
    let addr4 = host_addr(4);
    assert_eq!(
        lab.readme_zatt(&["--endpoints", &all3, "member", "add", "4", &addr4])
            .trim(),
        "OK"
    );
    let members = lab.readme_zatt(&["--endpoints", &all3, "members"]);
    let voters = members.lines().filter(|l| l.ends_with("\tvoter")).count();
    assert_eq!(voters, 4, "four voters: {members}");
    assert!(members.contains(&format!("4\t{addr4}\tvoter")), "{members}");
    let all4 = lab.endpoints(&ids);
    assert_eq!(
        lab.zatt_ok(&["--endpoints", &all4, "put", "four", "4"])
            .trim(),
        "OK"
    );
    acked.insert("four".into(), "4".into());
    for id in ids {
        lab.wait_holds(id, &acked, &[]);
    }
    lab.wait_identical(&ids);
    lab.finish();
}

/// The README's firewall lines, run on every server.
const FIREWALL_UDP: &str =
    "iptables -A INPUT -p udp --dport 5254 -s 10.0.0.11,10.0.0.12,10.0.0.13 -j ACCEPT";
const FIREWALL_TCP: &str = "iptables -A INPUT -p tcp --dport 5254 -s 10.0.0.0/24 -j ACCEPT";
const FIREWALL_ADD_UDP: &str = "iptables -I INPUT -p udp --dport 5254 -s 10.0.0.14 -j ACCEPT";

// ----- the deploy files, without namespaces ----------------------------------------------------

fn parse_conf(path: &Path, extra: &[&str]) -> zatt::config::ServerConfig {
    let mut args = vec!["--config".to_string(), path.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    match parse_args(&args, &|_| None) {
        Ok(Invocation::Run(cfg)) => *cfg,
        Ok(other) => panic!("{}: {other:?}", path.display()),
        Err(e) => panic!("{} does not parse: {}", path.display(), e.message),
    }
}

#[test]
fn each_example_host_config_parses_with_zattds_parser() {
    let cluster3 = conf_value(&host_conf(1), "cluster").expect("zatt1.conf has cluster");
    for id in 1..=4u64 {
        let path = host_conf(id);
        let cfg = parse_conf(&path, &[]);
        assert_eq!(cfg.id.0, id, "{}", path.display());
        assert_eq!(
            cfg.data_dir,
            Path::new("/var/lib/zatt"),
            "{}",
            path.display()
        );
        assert_eq!(cfg.listen.as_deref(), Some(host_addr(id).as_str()));
        // Every host names the same initial voters, so they derive one cluster id.
        assert_eq!(
            conf_value(&path, "cluster").as_deref(),
            Some(cluster3.as_str()),
            "{}",
            path.display()
        );
        assert_eq!(cfg.cluster.len(), 3);
        assert_eq!(cfg.join, id == 4, "only the added host starts with join");
        if id <= 3 {
            assert!(
                cfg.cluster
                    .iter()
                    .any(|(n, a)| n.0 == id && *a == host_addr(id)),
                "{}: its own entry in cluster is its listen address",
                path.display()
            );
        }
        // Set explicitly (it is also the default), so that the file documents it.
        assert_eq!(
            conf_value(&path, "initial-cluster-state").as_deref(),
            Some("auto"),
            "{}",
            path.display()
        );
        assert_eq!(cfg.initial_cluster_state, InitialClusterState::Auto);
        assert!(cfg.cluster_secret_file.is_some(), "{}", path.display());
        assert!(cfg.tls_cert.is_some() && cfg.tls_key.is_some());
        // The files do not fight the flags: the paths the tests override are overridable.
        let over = parse_conf(
            &path,
            &["--data-dir", "/tmp/x", "--tls-cert", "a", "--tls-key", "b"],
        );
        assert_eq!(over.data_dir, Path::new("/tmp/x"));
    }
    // A replaced host starts from its own file plus --join (the README's procedure).
    let cfg = parse_conf(&host_conf(3), &["--join"]);
    assert!(cfg.join && cfg.listen.as_deref() == Some(host_addr(3).as_str()));
}

/// The unit's `Key=value` lines (the last one wins for keys given once, as systemd reads them).
fn unit_values(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(deploy_file("zattd.service")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_systemd_unit_sets_the_cpu_policy_its_system_call_filter_keeps_zattd_from_setting() {
    // zattd's default `--cpu-policy batch` calls sched_setscheduler, which the unit's filter
    // of @resources refuses (EPERM, and zattd runs on under the default policy): the unit sets
    // the policy before exec instead, which zattd then leaves as it is.
    let filters = unit_values("SystemCallFilter");
    assert!(
        filters
            .iter()
            .any(|f| f.starts_with('~') && f.split_whitespace().any(|g| g == "@resources")),
        "{filters:?}"
    );
    assert_eq!(
        unit_values("CPUSchedulingPolicy"),
        vec!["batch".to_string()]
    );
}

#[test]
fn the_systemd_unit_starts_zattd_with_flags_that_exist() {
    let exec = unit_values("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert!(
        words[0].ends_with("/zattd"),
        "ExecStart runs zattd: {}",
        exec[0]
    );
    let help = usage();
    let mut args: Vec<String> = Vec::new();
    let mut config_path = None;
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        assert!(w.starts_with("--"), "ExecStart: {w} is not a flag");
        let name = w.trim_start_matches("--");
        let flag = format!("--{name}");
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(flag.as_str())),
            "ExecStart names {flag}, which zattd --help does not list"
        );
        args.push(w.to_string());
        if name == "config" {
            config_path = Some(words[i + 1].to_string());
            // The installed file is one of the deploy examples; parse with the real one.
            args.push(host_conf(1).display().to_string());
            i += 2;
        } else {
            i += 1;
        }
    }
    let config_path = config_path.expect("ExecStart gives --config");
    // What the unit runs parses, as given, with the example file in the config's place.
    match parse_args(&args, &|_| None) {
        Ok(Invocation::Run(cfg)) => assert_eq!(cfg.id.0, 1),
        Ok(other) => panic!("ExecStart {args:?}: {other:?}"),
        Err(e) => panic!("ExecStart {args:?}: {}", e.message),
    }
    // The example files say where they are installed, and the unit reads that path.
    for id in 1..=4u64 {
        let text = std::fs::read_to_string(host_conf(id)).unwrap();
        assert!(
            text.contains(&config_path),
            "zatt{id}.conf names {config_path}"
        );
    }
    // The data directory the files give is the one the unit creates and may write.
    assert_eq!(unit_values("StateDirectory"), ["zatt"]);
    assert_eq!(unit_values("ReadWritePaths"), ["/var/lib/zatt"]);
    // Exit statuses a restart cannot cure are not retried in a loop.
    let prevent = unit_values("RestartPreventExitStatus").join(" ");
    for code in [
        zatt::config::EXIT_USAGE,
        zatt::config::EXIT_CORRUPT,
        zatt::wal::EXIT_DISK_FAILURE,
    ] {
        assert!(
            prevent.split_whitespace().any(|c| c == code.to_string()),
            "RestartPreventExitStatus lacks {code}: {prevent}"
        );
    }
    assert_eq!(unit_values("Restart"), ["on-failure"]);
}
