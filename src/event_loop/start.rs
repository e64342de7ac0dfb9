//! Starting a server: check everything that can refuse the start without writing (the data
//! directory's path and contents, the files flags name, the ports, bound then), then open and
//! recover the data directory, settle the cluster id, bootstrap the initial membership (or the
//! backup `--restore` names, see `recover.rs`) on a first start, and build the loop's parts
//! and the host. A start refused before the directory's first byte leaves it as it was. Two
//! starts must read the log before they can check everything: a forced one (`--force-new-
//! cluster`), and a restart without `--listen` (the log names its address); their recovery
//! may already have done what any recovery does (the lock, `.tmp` files deleted, a torn tail
//! cut) when a later check refuses them. Every refusal is one line with its exit status (2
//! usage, 1 runtime, 65 corrupt data directory).
//! Runs before the loop; must not run protocol logic (that is the host's and raft's).

use super::*;
use crate::bootstrap::{Prober, Verdict};
use crate::config::{cpu_list_text, CpuPolicy, InitialClusterState, CPU_LIMIT, EXIT_CORRUPT};
use crate::files::{read_bounded, ReadError};
use crate::host::HostConfig;
use crate::raft::{self, Boot};
use crate::storage::LogStorage;
use crate::wal::identity::Identity;
use crate::wal::{Wal, WalOptions};
use crate::wire::peer::Inbound;
use crate::wire::peer::PeerCodecConfig;
use conn::tls_server_config;
use mio::{Interest, Waker};
use std::path::Path;

/// Kernel socket buffers for the peer socket: bursts of AppendEntries must not overflow them.
const UDP_BUFFER_BYTES: i32 = 8 << 20;
/// Name of the file in the data directory that holds the cluster id.
pub(super) const CLUSTER_ID_FILE: &str = "cluster-id";
/// The most read of it: a 64-bit number in decimal is 20 digits, with room for a line end and
/// stray blanks an operator's editor may add.
const MAX_CLUSTER_ID_FILE_BYTES: u64 = 64;

fn fatal_corrupt(msg: String) -> ServerError {
    ServerError {
        exit_code: EXIT_CORRUPT,
        message: msg,
    }
}

fn boot_is_empty(boot: &Boot) -> bool {
    boot.hard_state == HardState::default() && boot.snapshot.is_none() && boot.entries.is_empty()
}

/// `--initial-cluster-state existing` on a data directory that holds `what` instead of this
/// server's own data.
fn refuse_existing(cfg: &ServerConfig, dir: &Path, what: &str) -> ServerError {
    let listen = cfg.listen.clone().unwrap_or_else(|| "HOST:PORT".into());
    ServerError::usage(format!(
        "refusing to start: data directory {} holds {what}, but --initial-cluster-state \
         existing says this server must already have its own data. {}",
        dir.display(),
        rejoin_advice(cfg, &listen)
    ))
}

/// The membership recorded last in a recovered state (the latest config entry, else the
/// snapshot's).
fn latest_membership(boot: &Boot) -> Option<Membership> {
    for e in boot.entries.iter().rev() {
        if e.kind == EntryKind::Config {
            if let Ok((m, _)) = Membership::decode(&e.data) {
                return Some(m);
            }
        }
    }
    boot.snapshot.as_ref().map(|s| s.meta.membership.clone())
}

/// The cluster id stored in `dir`, if any. A file that does not hold one (too large to, or not
/// a regular file, neither of which is read) refuses the start as corrupt.
pub(super) fn read_cluster_id(dir: &Path) -> Result<Option<u64>, ServerError> {
    let p = dir.join(CLUSTER_ID_FILE);
    match read_bounded(&p, MAX_CLUSTER_ID_FILE_BYTES) {
        Ok(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                fatal_corrupt(format!(
                    "corrupt data directory: {} does not hold a number; refusing to start",
                    p.display()
                ))
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(ReadError::Io(e)) => Err(ServerError::runtime(format!(
            "cannot read {}: {e}",
            p.display()
        ))),
        Err(e) => Err(fatal_corrupt(format!(
            "corrupt data directory: {} {e}; refusing to start",
            p.display()
        ))),
    }
}

pub(super) fn write_cluster_id(dir: &Path, id: u64) -> Result<(), ServerError> {
    let tmp = dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
    let p = dir.join(CLUSTER_ID_FILE);
    let res = (|| -> io::Result<()> {
        std::fs::write(&tmp, format!("{id}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    res.map_err(|e| ServerError::runtime(format!("cannot write {}: {e}", p.display())))
}

fn set_udp_buffers(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a plain setsockopt on a socket we own, with a correctly sized int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &UDP_BUFFER_BYTES as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

/// The shared peer/client port, bound: UDP ready, TCP bound but not yet listening.
struct Port {
    addr: SocketAddr,
    udp: UdpSocket,
    tcp: socket2::Socket,
}

fn bind_err(addr: SocketAddr, what: &str, e: io::Error) -> ServerError {
    if e.kind() == io::ErrorKind::AddrInUse {
        ServerError::runtime(format!(
            "cannot listen on {addr} ({what}): address already in use"
        ))
    } else {
        ServerError::runtime(format!("cannot listen on {addr} ({what}): {e}"))
    }
}

impl Port {
    /// Binds `listen` for UDP and TCP: a busy port refuses the start here. The TCP socket
    /// listens only once the server is about to serve (`Port::listen`): a client connecting
    /// meanwhile (during recovery) is refused at once and tries another server, rather than
    /// wait in a backlog nobody accepts from.
    fn bind(listen: &str) -> Result<Port, ServerError> {
        let addr = crate::config::resolve(listen)
            .map_err(|e| ServerError::usage(format!("invalid listen address {listen:?}: {e}")))?;
        let udp = UdpSocket::bind(addr).map_err(|e| bind_err(addr, "UDP", e))?;
        set_udp_buffers(&udp);
        // As `TcpListener::bind` does, less the listen: address reuse (a restart binds again
        // at once), non-blocking for the poll loop.
        let tcp = (|| -> io::Result<socket2::Socket> {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            Ok(s)
        })()
        .map_err(|e| bind_err(addr, "TCP", e))?;
        Ok(Port { addr, udp, tcp })
    }

    /// The client listener, from the socket `bind` left bound.
    fn listen(tcp: socket2::Socket, addr: SocketAddr) -> Result<TcpListener, ServerError> {
        // The backlog std and mio use.
        tcp.listen(128).map_err(|e| bind_err(addr, "TCP", e))?;
        Ok(TcpListener::from_std(tcp.into()))
    }
}

/// Test hook for the fail-stop path (exit 74) of a real process: `ZATT_TEST_DISK_FAULT` set to
/// `sync-eio:N` makes the N-th log sync and every later one fail with EIO, `enospc:BYTES` makes
/// a write past BYTES fail with ENOSPC. Deliberately not a flag: nobody should find it in
/// `--help`.
fn injected_disk_fault() -> Result<Option<crate::wal::InjectFault>, ServerError> {
    let Ok(v) = std::env::var("ZATT_TEST_DISK_FAULT") else {
        return Ok(None);
    };
    let bad = || {
        ServerError::usage(format!(
            "ZATT_TEST_DISK_FAULT={v:?}: expected sync-eio:N or enospc:BYTES"
        ))
    };
    let (kind, n) = v.split_once(':').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    match kind {
        "sync-eio" => Ok(Some(crate::wal::InjectFault::SyncEio { nth_sync: n })),
        "enospc" => Ok(Some(crate::wal::InjectFault::WriteEnospc { bytes: n })),
        _ => Err(bad()),
    }
}

/// What an operator should do when this server must not rejoin as the member it was.
fn rejoin_advice(cfg: &ServerConfig, listen: &str) -> String {
    let id = cfg.id;
    format!(
        "If its disk is not mounted, mount it and start again; if its data was lost, remove it \
        from the cluster (zatt member remove {id}), start it empty with --join --listen {listen} \
        (same --id, --data-dir and --cluster), and add it back (zatt member add {id} {listen})"
    )
}

/// `--data-dir` must be a directory, or not exist yet (it is then created with its parents).
/// Anything else there or in the way of its parents (a regular file, say) is refused naming
/// it, rather than with the "File exists" creating it would give. Other errors (no permission
/// to look) are left to the creation, which reports them.
fn check_data_dir_path(dir: &Path) -> Result<(), ServerError> {
    for p in dir.ancestors() {
        if p.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if p == dir => {
                return Err(ServerError::usage(format!(
                    "--data-dir {}: not a directory",
                    dir.display()
                )))
            }
            Ok(_) => {
                return Err(ServerError::usage(format!(
                    "--data-dir {}: {} is not a directory",
                    dir.display(),
                    p.display()
                )))
            }
            // Missing, or under something that is not a directory: look further up.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Puts the calling thread, and so every thread the server starts from it (they inherit it:
/// the syncer, the segment preparer), under `--cpu-policy`. A server's loop and syncer share
/// the CPUs with each other and with whatever else runs there (other servers, clients); under
/// the default policy every thread woken (by a request, a datagram, a finished sync) preempts
/// the running one at once, and on a virtual machine each such switch costs an exit to the
/// host. `SCHED_BATCH` keeps the weight of the default policy and drops only that preemption.
/// Not fatal: a server that cannot change its policy runs under the one it has.
/// Returns what to log, once the start has succeeded: a refused start prints one line only.
fn apply_cpu_policy(policy: CpuPolicy) -> Option<(log::Level, String)> {
    if policy == CpuPolicy::Inherit {
        return None;
    }
    // SAFETY: pid 0 names the calling thread; no pointer is passed.
    let current = unsafe { libc::sched_getscheduler(0) };
    if current == libc::SCHED_BATCH {
        // Set before exec (systemd's CPUSchedulingPolicy=batch, chrt --batch).
        return None;
    }
    if current < 0 {
        let e = io::Error::last_os_error();
        return Some((
            log::Level::Warn,
            format!("--cpu-policy batch: cannot read the scheduling policy ({e}); left as it is"),
        ));
    }
    if current != libc::SCHED_OTHER {
        return Some((
            log::Level::Info,
            format!(
                "--cpu-policy batch: left as started (scheduling policy {current} was set by \
                 whoever started zattd)"
            ),
        ));
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        let e = io::Error::last_os_error();
        return Some((
            log::Level::Warn,
            format!(
                "--cpu-policy batch: cannot run under SCHED_BATCH ({e}); running under the \
                 default policy"
            ),
        ));
    }
    Some((
        log::Level::Info,
        "--cpu-policy batch: the server's threads run under SCHED_BATCH".into(),
    ))
}

/// Pins the calling thread, and so every thread the server starts from it, to `--cpus`. The
/// loop and the syncer hand work to each other several times per group commit: on one CPU a
/// hand-off is a run-queue insert, where on two it is an interrupt to the other (on a virtual
/// machine whose idle CPUs halt, an exit to the host and back), and the records a write touches
/// stay in one CPU's cache. A CPU not available to zattd (offline, or outside the set it was
/// started with) refuses the start, before anything is written; a kernel that refuses the
/// change itself (a system call filter, as `deploy/zattd.service`'s, whose `CPUAffinity=` does
/// the same from outside) is worth a warning only, as for `--cpu-policy`.
/// Returns what to log once the start has succeeded.
fn apply_cpus(cpus: Option<&[usize]>) -> Result<Option<(log::Level, String)>, ServerError> {
    let Some(cpus) = cpus else {
        return Ok(None);
    };
    let list = cpu_list_text(cpus);
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 names the calling thread; `size` is the size of `allowed`, which outlives
    // the call.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        let e = io::Error::last_os_error();
        return Ok(Some((
            log::Level::Warn,
            format!("--cpus {list}: cannot read the CPUs zattd may run on ({e}); not pinned"),
        )));
    }
    let may: Vec<usize> = (0..CPU_LIMIT)
        // SAFETY: `c` is below CPU_SETSIZE, the CPUs a `cpu_set_t` holds.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .collect();
    let missing: Vec<usize> = cpus.iter().copied().filter(|c| !may.contains(c)).collect();
    if !missing.is_empty() {
        return Err(ServerError::usage(format!(
            "--cpus {list}: {} not available to zattd here (it may run on {})",
            match missing.len() {
                1 => format!("CPU {} is", missing[0]),
                _ => format!("CPUs {} are", cpu_list_text(&missing)),
            },
            cpu_list_text(&may)
        )));
    }
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `parse_cpu_list` keeps every CPU below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 names the calling thread; `set` outlives the call.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        let e = io::Error::last_os_error();
        return Ok(Some((
            log::Level::Warn,
            format!(
                "--cpus {list}: cannot pin the server's threads ({e}); they run on any of {}",
                cpu_list_text(&may)
            ),
        )));
    }
    Ok(Some((
        log::Level::Info,
        format!(
            "--cpus {list}: the server's threads run on CPU{} {list} only",
            if cpus.len() == 1 { "" } else { "s" }
        ),
    )))
}

impl Server {
    /// Opens the data directory, recovers, binds the port and builds every part; nothing runs
    /// yet. Every refusal comes back as one line with its exit status. Puts the calling thread
    /// under `--cpu-policy` first (see `apply_cpu_policy`): it is the thread `run` should be
    /// called on.
    pub fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let started = Instant::now();
        let cpu_policy_said = apply_cpu_policy(cfg.cpu_policy);
        let cpus_said = apply_cpus(cfg.cpus.as_deref())?;
        check_data_dir_path(&cfg.data_dir)?;
        let dir = cfg.data_dir.clone();
        // Every check that can refuse the start comes before the data directory's first byte
        // is written: a start refused for any of them leaves the directory as it was (absent,
        // empty, or as its last run left it). First what the directory holds (a refusal for
        // it is a usage error, which a service manager should not retry), then the TLS files,
        // the cluster secret, the test hook and the ports.
        //
        // A backup to restore is checked whole; it is written in place of the initial
        // membership, once this server may bootstrap (below).
        let mut restore = match &cfg.restore {
            Some(file) => Some(recover::check_restore(&cfg, file)?),
            None => None,
        };
        // Nothing is written before both checks of it below, so the directory is listed once.
        let blank = recover::dir_is_blank(&dir);
        let must_exist = cfg.initial_cluster_state == InitialClusterState::Existing && !cfg.join;
        if must_exist && blank {
            return Err(refuse_existing(&cfg, &dir, "no data"));
        }
        // A forced new cluster is checked and made ready (its log read); it is written once
        // the checks below pass, and the start then goes on as a restart does.
        let force = if cfg.force_new_cluster {
            Some(recover::plan_force_new_cluster(&cfg)?)
        } else {
            None
        };
        // The address to bind, when it is known without reading the log: else only a log can
        // name it, and a blank directory has none.
        let listen_early = cfg
            .listen
            .clone()
            .or(force.as_ref().map(|f| f.addr.clone()));
        if listen_early.is_none() && blank {
            return Err(ServerError::usage(format!(
                "first start needs --cluster ID=HOST:PORT,... or --join --listen HOST:PORT \
                 (data directory {} holds no log to take the address from)",
                dir.display()
            )));
        }
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(
                tls_server_config(c, k, cfg.tls_client_ca.as_deref())
                    .map_err(ServerError::usage)?,
            ),
            _ => None,
        };
        let secret = match &cfg.cluster_secret_file {
            Some(p) => Some(
                crate::config::read_secret_file(p).map_err(|e| ServerError::usage(e.message))?,
            ),
            None => None,
        };
        let inject_fault = injected_disk_fault()?;
        // Before the ports: a second server on this directory would otherwise hear only that
        // they are in use. (A forced start's plan holds the lock already: it opened the log.)
        if force.is_none() {
            crate::wal::refuse_if_locked(&dir)?;
        }
        let mut http = http::Http::bind(&cfg)?;
        let mut port = match &listen_early {
            Some(l) => Some(Port::bind(l)?),
            None => None,
        };
        if let Some(f) = force {
            f.write(&cfg)?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            ServerError::runtime(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let opts = WalOptions {
            inject_fault,
            segment_bytes: cfg.wal_segment_bytes,
            ..WalOptions::default()
        };
        let (mut wal, mut boot) = Wal::open(&dir, opts)?;
        // A directory a failed start left behind (hard-state files and an empty segment, but
        // no membership) is as empty as a blank one: `existing` refuses it too, before the
        // identity or anything else is written to it.
        if must_exist && latest_membership(&boot).is_none() {
            return Err(refuse_existing(
                &cfg,
                &dir,
                "no cluster membership (no log entries; a start that failed may have left its \
                 files)",
            ));
        }
        if let Some(r) = &restore {
            if !boot_is_empty(&boot) {
                return Err(r.not_empty(&dir));
            }
        }
        // The directory's identity: drawn when it is first used, so that a server whose storage
        // is lost comes back as someone new (see `host/peers.rs`).
        let mut identity = match Identity::load(&dir)? {
            Some(i) => i,
            None => {
                if !boot_is_empty(&boot) {
                    info!(
                        "n{}: {} predates data-directory incarnations; it gets one now",
                        cfg.id,
                        dir.display()
                    );
                }
                let i = Identity::generate()
                    .and_then(|i| i.store(&dir).map(|_| i))
                    .map_err(|e| {
                        ServerError::runtime(format!(
                            "cannot write the identity of {}: {e}",
                            dir.display()
                        ))
                    })?;
                i
            }
        };
        if let Some(b) = boot.hard_state.lost {
            warn!(
                "n{}: this server may have lost log entries it had acknowledged (recovery cut a \
                damaged tail; entries up to index {} of term {} at most): it will not vote for a \
                candidate behind that until it holds or knows committed everything through it",
                cfg.id, b.index.0, b.term.0
            );
        }

        // The cluster id: the file wins; else the flag; else derived from --cluster.
        let stored = read_cluster_id(&dir)?;
        let flag = match &restore {
            Some(r) => Some(r.cluster_id),
            None => cfg.cluster_id,
        };
        let cluster_id = match (stored, flag) {
            (Some(s), Some(f)) if s != f => {
                return Err(ServerError::usage(format!(
                    "--cluster-id {f} differs from {s} stored in {}",
                    dir.join(CLUSTER_ID_FILE).display()
                )))
            }
            (Some(s), _) => s,
            (None, Some(f)) => f,
            (None, None) => match cfg.derived_cluster_id() {
                Some(d) => d,
                None if boot_is_empty(&boot) => {
                    return Err(ServerError::usage(
                        "first start needs --cluster ID=HOST:PORT,... or --join",
                    ))
                }
                None => {
                    return Err(ServerError::usage(format!(
                        "no cluster id: {} is missing; give --cluster-id",
                        dir.join(CLUSTER_ID_FILE).display()
                    )))
                }
            },
        };

        let first_start = boot_is_empty(&boot) && !cfg.join;
        let known = if first_start {
            None // the address comes from --cluster (validated to hold this node)
        } else {
            latest_membership(&boot)
        };
        let listen = match (&cfg.listen, &known) {
            (Some(l), _) => l.clone(),
            (None, Some(m)) => match m.members.get(&cfg.id) {
                Some(me) => me.addr.clone(),
                None => {
                    return Err(ServerError::usage(format!(
                        "node {} is not in the membership stored in {}; give --listen HOST:PORT",
                        cfg.id,
                        dir.display()
                    )))
                }
            },
            (None, None) => {
                return Err(ServerError::usage(
                    "cannot tell which address to bind: give --listen HOST:PORT",
                ))
            }
        };
        // Bound above when the address was known before the log was read (then `listen` is
        // that address).
        let port = match port.take() {
            Some(p) => p,
            None => Port::bind(&listen)?,
        };
        let addr = port.addr;
        let mut udp = port.udp;

        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ cfg.id.0.rotate_left(32);
        let mut pc = PeerCodecConfig::new(cluster_id, cfg.id);
        pc.secret = secret;
        pc.max_datagram = cfg.max_datagram_bytes;
        pc.first_message_id = seed;
        pc.incarnation = identity.incarnation;
        // Reassembly gives up after about two election timeouts.
        pc.reassembly_timeout_ticks = (2 * cfg.election_ticks() as u64).max(50);
        let mut codec = PeerCodec::new(pc);
        let mut poll = Poll::new().map_err(|e| ServerError::runtime(format!("poll: {e}")))?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)
            .map_err(|e| ServerError::runtime(format!("poll register: {e}")))?;

        if boot_is_empty(&boot) && !cfg.join {
            if cfg.cluster.is_empty() {
                return Err(ServerError::usage(
                    "first start needs --cluster ID=HOST:PORT,... (or --join to be added later)",
                ));
            }
            if cfg.initial_cluster_state == InitialClusterState::Auto {
                let pins = ask_peers(&cfg, &listen, &mut poll, &udp, &mut codec, &identity)?;
                identity.pins = pins;
                identity.store(&dir).map_err(|e| {
                    ServerError::runtime(format!(
                        "cannot write the identity of {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            if let Some(r) = restore.take() {
                boot = recover::write_restore(&cfg, r, &mut wal)?;
            } else {
                let m = Membership::of_voters(cfg.cluster.iter().cloned());
                boot = Boot::bootstrap(&m);
                let batch = WriteBatch {
                    snapshot: None,
                    hard_state: Some(boot.hard_state),
                    entries: boot.entries.clone(),
                };
                wal.write(&batch).and_then(|_| wal.sync()).map_err(|e| {
                    ServerError::runtime(format!("cannot write the initial membership: {e}"))
                })?;
                info!(
                    "n{} t1 follower: bootstrapped cluster {cluster_id} with {} voters",
                    cfg.id,
                    m.members.len()
                );
            }
        } else if !boot_is_empty(&boot) && !cfg.cluster.is_empty() && !cfg.join {
            info!(
                "n{}: restarting from {}; --cluster is ignored (the log holds the membership)",
                cfg.id,
                dir.display()
            );
        }
        if stored.is_none() {
            write_cluster_id(&dir, cluster_id)?;
        }

        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| ServerError::runtime(format!("waker: {e}")))?,
        );

        let tick = cfg.tick();
        let mut rcfg = raft::Config::new(cfg.id);
        rcfg.election_ticks = cfg.election_ticks();
        rcfg.heartbeat_ticks = cfg.heartbeat_ticks();
        let mut host_cfg = HostConfig::new(cfg.max_request_bytes, cfg.snapshot_entries);
        host_cfg.snapshot_log_bytes = cfg.snapshot_log_bytes;
        host_cfg.watch = cfg.watch;
        host_cfg.incarnation = identity.incarnation;
        host_cfg.pins = identity.pins.clone();
        for (peer, inc) in &identity.pins {
            codec.pin(*peer, *inc);
        }
        host_cfg.cluster_id = cluster_id;
        host_cfg.min_free_disk = cfg.min_free_disk;
        let limits = host_cfg.limits;
        let host = Host::new(host_cfg, rcfg, boot, seed).map_err(|e| {
            fatal_corrupt(format!(
                "corrupt data directory {}: {e}; refusing to start",
                dir.display()
            ))
        })?;
        // Clients are let in only now, with the dictionary restored: one that connected during
        // recovery was refused, and tried another server.
        let mut listener = Port::listen(port.tcp, addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .and_then(|_| match &mut http {
                Some(h) => h.register(poll.registry()),
                None => Ok(()),
            })
            .map_err(|e| ServerError::runtime(format!("poll register: {e}")))?;

        // The syncer sends what waited for its sync on its own handle to the peer socket.
        let sender = {
            use std::os::fd::AsFd;
            udp.as_fd()
                .try_clone_to_owned()
                .map(std::net::UdpSocket::from)
                .map_err(|e| ServerError::runtime(format!("peer socket: {e}")))?
        };
        let syncer = Syncer::spawn(wal, waker, Some(sender));
        let now = Instant::now();
        let mut timers = TimerWheel::new(Duration::from_millis(1), 1024, now);
        timers.schedule(now + tick, TimerKind::RaftTick);
        timers.schedule(now + HOUSEKEEPING, TimerKind::Housekeeping);

        for (level, line) in cpu_policy_said.into_iter().chain(cpus_said) {
            log::log!(level, "{}: {line}", host.who());
        }
        info!(
            "{}: listening on {addr} (UDP peers, TCP clients{}), cluster id {cluster_id}, data in {} \
             (incarnation {:016x})",
            host.who(),
            if tls.is_some() { ", TLS" } else { "" },
            dir.display(),
            identity.incarnation
        );
        if let Some(h) = &http {
            info!(
                "{}: serving /metrics, /health and /ready on http://{}",
                host.who(),
                h.addr
            );
        }
        Ok(Server {
            cluster_id,
            addr,
            host,
            io: Io {
                id: cfg.id,
                udp,
                codec,
                peers: BTreeMap::new(),
                conns: Slab::new(),
                dirty: Vec::new(),
                syncer,
                udp_send_drops: 0,
                mono: Duration::ZERO,
                metrics: Default::default(),
                identity,
                data_dir: dir.clone(),
            },
            poll,
            listener,
            tls,
            limits,
            real_conns: 0,
            next_generation: 1,
            timers,
            tick,
            tick_count: 0,
            next_tick_at: now + tick,
            origin: now,
            now,
            recv_buf: super::udp::RecvBatch::new(),
            resume: Vec::new(),
            fired: Vec::new(),
            completed: Vec::new(),
            drops_reported: 0,
            drops_warned_at: None,
            started: Some(started),
            http,
            cfg,
        })
    }
}

/// `--initial-cluster-state auto` on an empty data directory: asks every other server of
/// `--cluster` whether this data directory is new to them (`crate::bootstrap`), before anything
/// of the cluster is written. Returns the peers' incarnations to pin once it is safe to
/// bootstrap; refuses (exit 2) when this server was a member with other storage.
fn ask_peers(
    cfg: &ServerConfig,
    listen: &str,
    poll: &mut Poll,
    udp: &UdpSocket,
    codec: &mut PeerCodec,
    identity: &Identity,
) -> Result<BTreeMap<NodeId, u64>, ServerError> {
    let mut addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    for (id, a) in &cfg.cluster {
        if *id != cfg.id {
            let sa = crate::config::resolve(a).map_err(|e| {
                ServerError::usage(format!(
                    "--cluster: cannot resolve n{id}'s address {a:?}: {e}"
                ))
            })?;
            addrs.insert(*id, sa);
        }
    }
    let ids: Vec<NodeId> = cfg.cluster.iter().map(|(i, _)| *i).collect();
    let mut prober = Prober::new(cfg.id, identity.incarnation, &ids);
    info!(
        "n{}: data directory {} is empty; asking n{} whether this cluster is new (incarnation \
         {:016x}; --initial-cluster-state auto)",
        cfg.id,
        cfg.data_dir.display(),
        addrs
            .keys()
            .map(|i| i.0.to_string())
            .collect::<Vec<_>>()
            .join(", n"),
        identity.incarnation
    );
    let origin = Instant::now();
    let mut told_waiting = origin;
    let mut heard_from_by_probe: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 65_536];
    loop {
        match prober.verdict() {
            Verdict::Bootstrap { pins } => {
                info!(
                    "n{}: every server of --cluster answered and none knew this data directory \
                     from an existing cluster: bootstrapping",
                    cfg.id
                );
                return Ok(pins);
            }
            Verdict::Refuse(why) => {
                return Err(ServerError::usage(format!(
                    "refusing to start: {why}; starting it as a member could lose acknowledged \
                     writes. {}",
                    rejoin_advice(cfg, listen)
                )))
            }
            Verdict::Waiting => {}
        }
        if STOP.load(Ordering::Relaxed) {
            return Err(ServerError {
                exit_code: 0,
                message: "stopped on signal while asking the servers of --cluster".into(),
            });
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(origin);
        for to in prober.due_probes(elapsed) {
            let known_as = heard_from_by_probe.get(&to).copied().unwrap_or(0);
            if let Some(a) = addrs.get(&to) {
                codec.encode_probe(to, known_as, false, false, &mut |d: &[u8]| {
                    let _ = udp.send_to(d, *a);
                });
            }
        }
        if now.saturating_duration_since(told_waiting) >= Duration::from_secs(5) {
            told_waiting = now;
            let w: Vec<String> = prober
                .waiting_for()
                .iter()
                .map(|i| format!("n{i}"))
                .collect();
            warn!(
                "n{}: still waiting for {} to answer; a new cluster forms once every server of \
                 --cluster has started (if one of them cannot start, start the others with \
                 --initial-cluster-state new)",
                cfg.id,
                w.join(", ")
            );
        }
        let wait = prober
            .next_probe_at()
            .saturating_sub(elapsed)
            .min(Duration::from_millis(100));
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(ServerError::runtime(format!("poll: {e}")));
            }
        }
        loop {
            let (n, from_addr) = match udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // an ICMP error from a peer not up yet
            };
            match codec.decode_inbound(&buf[..n], 0) {
                Some(Inbound::Probe(p)) => {
                    let known_as = prober.on_probe(&p);
                    heard_from_by_probe.insert(p.from, known_as);
                    codec.encode_probe(p.from, known_as, true, false, &mut |d: &[u8]| {
                        let _ = udp.send_to(d, from_addr);
                    });
                }
                Some(Inbound::ProbeReply(p)) => prober.on_reply(&p),
                // A member's traffic before this server is one: nothing to act on.
                Some(Inbound::Raft { .. }) | None => {}
            }
        }
    }
}
