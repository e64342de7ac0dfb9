//! `zatt dev`: a local cluster in one command, for a newcomer's first minutes. Starts N `zattd`
//! processes from the same build (the `zattd` next to this executable) on loopback ports
//! P, P+1, ..., with data under DIR/1, DIR/2, ... and logs in DIR/1.log, ...; waits for a leader;
//! prints the endpoints and a few commands to try; and on Ctrl-C (SIGINT) or SIGTERM stops every
//! server it started and exits 0. Run again with the same DIR it reuses the data. Members it
//! does not run (added by hand with `zatt member add`) are named once a leader is elected, or
//! removed with `--remove-others`; when its own servers are no majority of the voters it says
//! so at once instead of waiting for a leader that cannot be elected.
//!
//! Must not hold any server logic: it only runs `zattd` and asks it for its status through the
//! client library. Read `README.md` ("zatt dev").

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig, Error, MemberInfo};
use crate::wire::client::ErrorKind;

use super::{EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};

/// Most servers `zatt dev` will start.
pub const MAX_NODES: u16 = 9;
/// How long the servers get to elect a leader before `zatt dev` gives up.
const LEADER_WAIT: Duration = Duration::from_secs(60);
/// How long stopped servers get to exit before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `--remove-others` retries a removal the leader refuses for now: a leader just
/// elected takes no membership change until an entry of its term is committed.
const REMOVE_WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevOptions {
    pub nodes: u16,
    pub dir: PathBuf,
    pub base_port: u16,
    /// Remove from the cluster the members this run does not start (added by hand).
    pub remove_others: bool,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            nodes: 3,
            dir: PathBuf::from("zatt-dev"),
            base_port: 5254,
            remove_others: false,
        }
    }
}

/// Set by the signal handler; polled by the main loop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only performs an atomic store, which is
        // async-signal-safe; `sa` is fully initialised before use.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

struct Server {
    id: u16,
    addr: String,
    child: Child,
    log: PathBuf,
    /// Set once the process has been reaped.
    exited: Option<String>,
}

/// Runs the dev cluster until a stop signal; returns the exit code.
pub fn run(opts: &DevOptions, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let zattd = match find_zattd(err) {
        Ok(p) => p,
        Err(msg) => {
            let _ = writeln!(err, "zatt dev: {msg}");
            return EXIT_RUNTIME;
        }
    };
    if let Err(e) = fs::create_dir_all(&opts.dir) {
        let _ = writeln!(
            err,
            "zatt dev: cannot create {}: {e}: pass a writable --dir",
            opts.dir.display()
        );
        return EXIT_RUNTIME;
    }
    if let Err(msg) = check_layout(&opts.dir, opts) {
        let _ = writeln!(err, "zatt dev: {msg}");
        return EXIT_USAGE;
    }
    install_signal_handlers();
    let addrs: Vec<String> = (0..opts.nodes)
        .map(|i| format!("127.0.0.1:{}", opts.base_port + i))
        .collect();
    let cluster: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let cluster = cluster.join(",");
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u16 + 1;
        match start_server(&zattd, id, addr, &cluster, &opts.dir) {
            Ok(s) => servers.push(s),
            Err(msg) => {
                let _ = writeln!(err, "zatt dev: {msg}");
                stop_all(&mut servers, out);
                return EXIT_RUNTIME;
            }
        }
    }
    let _ = writeln!(
        out,
        "zatt dev: started {} servers ({}), data in {}",
        servers.len(),
        zattd.display(),
        opts.dir.display()
    );
    for s in &servers {
        let _ = writeln!(
            out,
            "  node {}  {}  pid {}  log {}",
            s.id,
            s.addr,
            s.child.id(),
            s.log.display()
        );
    }
    let _ = out.flush();

    let leader = match wait_for_leader(&addrs, &opts.dir, &mut servers, err) {
        Ok(Some(l)) => l,
        Ok(None) => {
            // Stopped by a signal before a leader was elected.
            stop_all(&mut servers, out);
            return EXIT_OK;
        }
        Err(msg) => {
            let _ = writeln!(err, "zatt dev: {msg}");
            stop_all(&mut servers, out);
            return EXIT_RUNTIME;
        }
    };
    if let Err(msg) = handle_others(&addrs, opts.remove_others, out) {
        let _ = writeln!(err, "zatt dev: {msg}");
        stop_all(&mut servers, out);
        return EXIT_RUNTIME;
    }
    let endpoints = addrs.join(",");
    let _ = writeln!(out, "ready: leader is node {leader}; endpoints {endpoints}");
    let e = if opts.base_port == 5254 {
        String::new()
    } else {
        format!("--endpoints {endpoints} ")
    };
    let _ = writeln!(out, "Try, in another terminal:");
    let _ = writeln!(out, "  zatt {e}put greeting hello");
    let _ = writeln!(out, "  zatt {e}get greeting");
    let _ = writeln!(out, "  zatt {e}scan");
    let _ = writeln!(out, "  zatt {e}status --output json");
    let _ = writeln!(out, "  zatt {e}transfer-leader");
    let _ = writeln!(out, "Press Ctrl-C to stop every server.");
    let _ = out.flush();

    while !STOP.load(Ordering::SeqCst) {
        reap(&mut servers, out);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_all(&mut servers, out);
    EXIT_OK
}

/// The file in DIR that remembers the cluster's shape: a restarted server takes its peers'
/// addresses from its log, not from the flags, so a second run must use the same ones.
const LAYOUT_FILE: &str = "zatt-dev.layout";

fn layout_text(opts: &DevOptions) -> String {
    format!("nodes = {}\nbase-port = {}\n", opts.nodes, opts.base_port)
}

/// The most read of the layout file: what `layout_text` writes is two short lines.
const MAX_LAYOUT_FILE_BYTES: u64 = 4096;

/// Records the layout on the first run; on later runs refuses flags that differ from it. Only
/// a missing file is (re)written: one that cannot be read, is not a regular file, is larger
/// than any layout or is not one is an error naming it, never overwritten nor read unbounded
/// (a FIFO or /dev/zero in its place used to hang `zatt dev` or exhaust its memory).
fn check_layout(dir: &Path, opts: &DevOptions) -> Result<(), String> {
    let path = dir.join(LAYOUT_FILE);
    let want = layout_text(opts);
    let fix = "delete the directory to start afresh";
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fs::write(&path, want).map_err(|e| {
                format!(
                    "cannot write {}: {e}: pass a writable --dir",
                    path.display()
                )
            })
        }
        Err(e) => return Err(format!("cannot read {}: {e}: {fix}", path.display())),
        Ok(_) => {}
    }
    let have = crate::config::read_option_file("the layout file", &path, MAX_LAYOUT_FILE_BYTES)
        .map_err(|e| format!("{e}: {fix}"))?;
    if have == want.as_bytes() {
        return Ok(());
    }
    let have = match std::str::from_utf8(&have) {
        Ok(t)
            if t.lines()
                .all(|l| l.starts_with("nodes = ") || l.starts_with("base-port = ")) =>
        {
            t
        }
        _ => {
            return Err(format!(
                "{}: not a layout zatt dev wrote: {fix}",
                path.display()
            ))
        }
    };
    let shape = have.lines().collect::<Vec<_>>().join(", ");
    Err(format!(
        "{} holds a cluster made with {shape}: run with those flags, or {fix}",
        dir.display()
    ))
}

/// Finds `zattd` next to this executable. Run through cargo (`cargo run --bin zatt -- dev`),
/// it first builds `zattd` with the same profile, so the servers always come from this build.
fn find_zattd(err: &mut dyn Write) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("this executable has no directory")?
        .to_path_buf();
    let zattd = dir.join("zattd");
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        let mut cmd = Command::new(cargo);
        cmd.current_dir(manifest)
            .args(["build", "--quiet", "--bin", "zattd"]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => {
                cmd.arg("--release");
            }
            Some("debug") | None => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        let _ = writeln!(err, "zatt dev: building zattd ({cmd:?})");
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(format!("building zattd failed ({s})")),
            Err(e) => return Err(format!("cannot run cargo to build zattd: {e}")),
        }
    }
    if !zattd.is_file() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release` \
             (or run `cargo run --release --bin zatt -- dev`, which builds it)",
            zattd.display()
        ));
    }
    Ok(zattd)
}

fn start_server(
    zattd: &Path,
    id: u16,
    addr: &str,
    cluster: &str,
    dir: &Path,
) -> Result<Server, String> {
    let data = dir.join(id.to_string());
    let log = dir.join(format!("{id}.log"));
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut cmd = Command::new(zattd);
    cmd.arg("--id")
        .arg(id.to_string())
        .arg("--cluster")
        .arg(cluster)
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a terminal's Ctrl-C reaches only `zatt dev`, which then stops
        // the servers in order and reports it.
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it asks the
        // kernel to stop the server if `zatt dev` dies without stopping it (e.g. kill -9).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", zattd.display()))?;
    Ok(Server {
        id,
        addr: addr.to_string(),
        child,
        log,
        exited: None,
    })
}

/// Polls every server's status until one says it leads. `Ok(None)`: a stop signal came first.
fn wait_for_leader(
    addrs: &[String],
    dir: &Path,
    servers: &mut [Server],
    err: &mut dyn Write,
) -> Result<Option<u64>, String> {
    let deadline = Instant::now() + LEADER_WAIT;
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        sessions: false,
        ..ClientConfig::default()
    };
    while Instant::now() < deadline {
        if STOP.load(Ordering::SeqCst) {
            return Ok(None);
        }
        for s in servers.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!(
                    "node {} exited ({status}) while starting: see {}{}",
                    s.id,
                    s.log.display(),
                    last_line(&s.log)
                ));
            }
        }
        let mut views = Vec::new();
        for addr in addrs {
            if let Ok(mut c) = Client::connect(&[addr], config.clone()) {
                if let Ok(st) = c.status() {
                    if st.role == "leader" {
                        return Ok(Some(st.id));
                    }
                    views.push(st.members);
                }
            }
        }
        // Every server answered, and in each one's view of the membership the servers this
        // run starts are no majority of the voters: no election can succeed until the others
        // run (or the cluster is started afresh); say so now rather than wait the deadline.
        if views.len() == addrs.len() {
            let hopeless: Vec<Vec<MemberInfo>> = views
                .into_iter()
                .filter(|ms| !has_majority(ms, addrs))
                .collect();
            if hopeless.len() == addrs.len() {
                let others = others(&hopeless[0], addrs);
                return Err(format!(
                    "no leader can be elected: the cluster's voters include {} that zatt dev \
                     does not run, and the {} it runs are no majority. Start {} yourself (e.g. \
                     `zattd --id ID --data-dir DIR/ID` for one whose data is in DIR), or delete \
                     {} to start afresh",
                    describe(&others),
                    addrs.len(),
                    if others.len() == 1 { "it" } else { "them" },
                    dir.display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = err;
    Err(format!(
        "no leader elected within {LEADER_WAIT:?}: see the logs {}",
        servers
            .iter()
            .map(|s| s.log.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Whether the servers this run starts (ids 1.. at `addrs`) are a majority of the voters in
/// `members`.
fn has_majority(members: &[MemberInfo], addrs: &[String]) -> bool {
    let voters: Vec<&MemberInfo> = members.iter().filter(|m| m.voter).collect();
    let ours = voters.iter().filter(|m| is_ours(m, addrs)).count();
    ours * 2 > voters.len()
}

/// Whether member `m` is one of the servers this run starts.
fn is_ours(m: &MemberInfo, addrs: &[String]) -> bool {
    m.id >= 1 && (m.id as usize) <= addrs.len() && addrs[m.id as usize - 1] == m.addr
}

/// The members this run does not start (added by hand, with `zatt member add`).
fn others(members: &[MemberInfo], addrs: &[String]) -> Vec<MemberInfo> {
    members
        .iter()
        .filter(|m| !is_ours(m, addrs))
        .cloned()
        .collect()
}

fn describe(ms: &[MemberInfo]) -> String {
    ms.iter()
        .map(|m| {
            format!(
                "{}={} ({})",
                m.id,
                m.addr,
                if m.voter { "voter" } else { "learner" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Once a leader is elected: names the members this run does not start, or removes them when
/// asked (`--remove-others`), so that a cluster grown by hand is not left silently short.
fn handle_others(addrs: &[String], remove: bool, out: &mut dyn Write) -> Result<(), String> {
    let config = ClientConfig {
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let mut c = Client::connect(addrs, config).map_err(|e| format!("after the election: {e}"))?;
    let members = c
        .members()
        .map_err(|e| format!("cannot list the members: {e}"))?;
    let others = others(&members, addrs);
    if others.is_empty() {
        return Ok(());
    }
    if !remove {
        let ids: Vec<String> = others.iter().map(|m| m.id.to_string()).collect();
        let _ = writeln!(
            out,
            "note: the cluster also has members zatt dev does not run: {}. Start them \
             yourself, or remove them (zatt member remove {}, or zatt dev --remove-others)",
            describe(&others),
            ids.join(" / ")
        );
        return Ok(());
    }
    for m in &others {
        let deadline = Instant::now() + REMOVE_WAIT;
        loop {
            match c.member_remove(m.id) {
                Ok(()) => break,
                // "Not yet" (the leader is new, or another change is committing): the
                // election this run just waited for is exactly when that is likely.
                Err(Error::Server(ErrorKind::ConfChange(_))) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("removing member {}: {e}", m.id)),
            }
        }
        let _ = writeln!(
            out,
            "zatt dev: removed member {}={}, which zatt dev does not run",
            m.id, m.addr
        );
    }
    Ok(())
}

/// The last line of a log, for an error message.
fn last_line(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!(" (last line: {})", l.trim()),
        None => String::new(),
    }
}

/// Notes servers that exited by themselves, once each.
fn reap(servers: &mut [Server], out: &mut dyn Write) {
    for s in servers.iter_mut() {
        if s.exited.is_some() {
            continue;
        }
        if let Ok(Some(status)) = s.child.try_wait() {
            let _ = writeln!(
                out,
                "zatt dev: node {} exited ({status}): see {}",
                s.id,
                s.log.display()
            );
            let _ = out.flush();
            s.exited = Some(status.to_string());
        }
    }
}

/// Asks every running server to stop (SIGTERM), waits for them, kills those that linger, and
/// reaps every one, so that no process `zatt dev` started outlives it.
fn stop_all(servers: &mut [Server], out: &mut dyn Write) {
    for s in servers.iter_mut() {
        if s.exited.is_none() {
            if let Ok(None) = s.child.try_wait() {
                // SAFETY: sending a signal to a child we started and have not reaped, so the
                // pid still names it.
                unsafe {
                    libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for s in servers.iter_mut() {
        if s.exited.is_some() {
            continue;
        }
        loop {
            match s.child.try_wait() {
                Ok(Some(status)) => {
                    s.exited = Some(status.to_string());
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    s.exited = Some("killed".into());
                    break;
                }
            }
        }
    }
    let _ = writeln!(out, "zatt dev: stopped {} servers", servers.len());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_run_must_keep_the_first_runs_shape() {
        // Goal: a rerun with other --nodes or --base-port is refused with a clear message
        // (restarted servers take their peers' addresses from their logs, not from flags).
        let dir = std::env::temp_dir().join(format!("zatt-dev-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let first = DevOptions {
            dir: dir.clone(),
            ..DevOptions::default()
        };
        check_layout(&dir, &first).unwrap();
        check_layout(&dir, &first).unwrap();
        let more = DevOptions {
            nodes: 5,
            ..first.clone()
        };
        let err = check_layout(&dir, &more).unwrap_err();
        assert!(
            err.contains("nodes = 3") && err.contains("base-port = 5254"),
            "{err}"
        );
        let moved = DevOptions {
            base_port: 6000,
            ..first
        };
        assert!(check_layout(&dir, &moved).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_layout_file_that_is_no_layout_is_refused_unread_and_kept() {
        use std::os::unix::fs::FileTypeExt;
        // Goal: the layout file is read with a bound, and only when it is a regular file;
        // anything else is one error naming it, and it is not overwritten. Method: a FIFO
        // (reading it used to wait forever for a writer), a symbolic link to /dev/zero (read
        // until memory ran out), a directory, an oversized file, and bytes that are no layout.
        let dir = std::env::temp_dir().join(format!("zatt-dev-badlayout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let opts = DevOptions {
            dir: dir.clone(),
            ..DevOptions::default()
        };
        let path = dir.join(LAYOUT_FILE);
        let reset = || {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir(&path);
        };

        // The cases whose old failure was quick come first; the FIFO and /dev/zero, which
        // hung or ate memory, last.
        fs::create_dir(&path).unwrap();
        let e = check_layout(&dir, &opts).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
        reset();

        fs::write(&path, b"\xff\xfe garbage\n").unwrap();
        let e = check_layout(&dir, &opts).unwrap_err();
        assert!(e.contains("not a layout zatt dev wrote"), "{e}");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"\xff\xfe garbage\n",
            "left as it was"
        );
        reset();

        fs::File::create(&path)
            .unwrap()
            .set_len(MAX_LAYOUT_FILE_BYTES + 1)
            .unwrap();
        let e = check_layout(&dir, &opts).unwrap_err();
        assert!(
            e.contains(LAYOUT_FILE) && e.contains("larger than 4 KiB"),
            "{e}"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            MAX_LAYOUT_FILE_BYTES + 1
        );
        reset();

        let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = check_layout(&dir, &opts).unwrap_err();
        assert!(
            e.contains(LAYOUT_FILE) && e.contains("is not a regular file"),
            "{e}"
        );
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
        reset();

        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = check_layout(&dir, &opts).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
        assert!(fs::symlink_metadata(&path).unwrap().is_symlink());
        reset();

        // A missing file is written, and then agrees.
        check_layout(&dir, &opts).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), layout_text(&opts));
        check_layout(&dir, &opts).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
