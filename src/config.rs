//! The server's configuration: the flag table, the three sources (command line, `ZATT_<NAME>`
//! environment variables, a `--config FILE` of `flag = value` lines), unit parsing for durations
//! and sizes, and the cross-field validation that turns strings into a `ServerConfig`.
//!
//! Precedence is flags > environment > file > defaults. This module only parses
//! and validates: it opens no socket and touches no data directory (that is `event_loop`'s job),
//! so every rule here is reachable from unit tests. `parse_duration` and `parse_size` are public
//! because the `zatt` command line reuses them, and so are the readers of files named by options
//! (`read_option_file`, bounded; `pem_certs` and `pem_key` for the server's and the client's TLS
//! files; `read_secret_file`), which read those files only.
//!
//! The cluster id: every datagram carries it, so that two clusters sharing a network never mix.
//! `--cluster-id N` sets it; without it an initial member derives it from the initial membership
//! (a 64-bit FNV-1a hash of the sorted `id=addr` list, so every initial member computes the same
//! number) and stores it in `DATA_DIR/cluster-id` at first start; a restart reads it back, and a
//! node started with `--join` must be given `--cluster-id` (every member logs it at start and
//! keeps it in `DATA_DIR/cluster-id`) or the same `--cluster` list the initial members were
//! started with.

use crate::files::{show_limit, ReadError};
use crate::host::MinFreeDisk;
use crate::types::NodeId;
use log::LevelFilter;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit status for a usage error (bad flag, bad value, inconsistent configuration).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a runtime error (port in use, unwritable data directory, ...).
pub const EXIT_RUNTIME: i32 = 1;
/// Exit status when the data directory is corrupt: refuse to start.
pub const EXIT_CORRUPT: i32 = 65;

/// A refusal to start, with the exit status it deserves and one line for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub exit_code: i32,
    pub message: String,
}

impl ConfigError {
    pub fn usage(message: impl Into<String>) -> ConfigError {
        ConfigError {
            exit_code: EXIT_USAGE,
            message: message.into(),
        }
    }
    pub fn runtime(message: impl Into<String>) -> ConfigError {
        ConfigError {
            exit_code: EXIT_RUNTIME,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The largest `--config` file read (it holds a few dozen short lines).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// The largest `--cluster-secret-file` read (an HMAC key needs 32 bytes).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;
/// The largest PEM file read (`--tls-cert`, `--tls-key`, `--tls-client-ca`, and zatt's
/// `--tls-ca`, `--cert`, `--key`): a certificate chain or CA bundle is tens of KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// Reads a small file named by an option (`what`, such as `--config`, names it in every error)
/// as `files::read_bounded` does: only a regular file, at most `limit` bytes, never more read
/// than `limit + 1` whatever the file does while it is read. Errors are one line naming the
/// option and the path.
pub fn read_option_file(what: &str, path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let at = || format!("{what} {}", path.display());
    crate::files::read_bounded(path, limit).map_err(|e| match e {
        ReadError::Io(e) => format!("cannot read {}: {e}", at()),
        ReadError::NotRegular => format!("{}: is not a regular file", at()),
        ReadError::TooLarge { .. } => format!(
            "{}: larger than {} ({limit} bytes), the most read for {what}",
            at(),
            show_limit(limit)
        ),
    })
}

/// The certificates of the PEM file `path`, named by the option `what` (read as
/// `read_option_file` reads, at most `MAX_PEM_FILE_BYTES`): the server's and the client's TLS
/// files alike. Maybe none: callers say what they expected.
pub fn pem_certs(
    what: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = read_option_file(what, path, MAX_PEM_FILE_BYTES)?;
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))
}

/// The private key of the PEM file `path`, named by the option `what` (read as `pem_certs`).
pub fn pem_key(
    what: &str,
    path: &Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    let pem = read_option_file(what, path, MAX_PEM_FILE_BYTES)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{what} {}: no private key in the file", path.display()))
}

/// Reads `--cluster-secret-file` (at most `MAX_SECRET_FILE_BYTES`): its bytes, trailing line
/// ends removed; an empty secret is refused. Usage errors (exit 2).
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut s = read_option_file("--cluster-secret-file", path, MAX_SECRET_FILE_BYTES)
        .map_err(ConfigError::usage)?;
    while matches!(s.last(), Some(b'\n' | b'\r')) {
        s.pop();
    }
    if s.is_empty() {
        return Err(ConfigError::usage(format!(
            "--cluster-secret-file {} is empty",
            path.display()
        )));
    }
    Ok(s)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Takes a value.
    Value,
    /// A switch; from the environment or a file it takes `true/false/1/0/yes/no`.
    Switch,
}

/// One row of the flag table: the single source for getopts, the environment, the config file
/// and `--help`.
struct Flag {
    name: &'static str,
    hint: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    help: &'static str,
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "id",
        hint: "N",
        kind: Kind::Value,
        default: None,
        help: "this server's node id (a positive integer; required)",
    },
    Flag {
        name: "cluster",
        hint: "ID=HOST:PORT,...",
        kind: Kind::Value,
        default: None,
        help: "the initial voters, this server included (its own entry gives its address); \
               needed at first start only, a restart reads the membership from the log",
    },
    Flag {
        name: "data-dir",
        hint: "DIR",
        kind: Kind::Value,
        default: None,
        help: "directory of the write-ahead log and snapshots (required; created if missing)",
    },
    Flag {
        name: "join",
        hint: "",
        kind: Kind::Switch,
        default: None,
        help: "start with no membership and wait for a leader to add this server \
               (needs --listen, and --cluster-id or the initial --cluster)",
    },
    Flag {
        name: "initial-cluster-state",
        hint: "auto|new|existing",
        kind: Kind::Value,
        default: Some("auto"),
        help: "what a first start with an empty data directory and --cluster does. auto: ask the \
               listed servers first, refuse to start (exit 2) if any of them knows this server \
               from an existing cluster (its data directory was lost or replaced), and vote only \
               once every listed server has answered; new: bootstrap and vote at once (a brand-new \
               cluster some of whose servers cannot start yet); existing: refuse to start with an \
               empty data directory (for a server that must already have its data)",
    },
    Flag {
        name: "listen",
        hint: "HOST:PORT",
        kind: Kind::Value,
        default: None,
        help: "address to bind, UDP for peers and TCP for clients on the same port \
               (default: this server's entry in --cluster or in the membership)",
    },
    Flag {
        name: "cluster-id",
        hint: "N",
        kind: Kind::Value,
        default: None,
        help: "cluster id carried by every datagram (default: a hash of the initial --cluster, \
               stored in DATA_DIR/cluster-id)",
    },
    Flag {
        name: "heartbeat-interval",
        hint: "DUR",
        kind: Kind::Value,
        default: Some("50ms"),
        help: "how often a leader sends heartbeats",
    },
    Flag {
        name: "election-timeout",
        hint: "DUR",
        kind: Kind::Value,
        default: Some("500ms"),
        help: "minimum election timeout; each timeout is drawn at random up to twice this",
    },
    Flag {
        name: "snapshot-entries",
        hint: "N",
        kind: Kind::Value,
        default: Some("100000"),
        help: "take a snapshot and compact the log once this many entries were applied since the last one",
    },
    Flag {
        name: "snapshot-log-bytes",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("64MiB"),
        help: "take a snapshot and compact the log also once the log held in memory since the last \
               snapshot reaches this many bytes, however few entries that is (the bound that matters \
               with large values)",
    },
    Flag {
        name: "wal-segment-size",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("64MiB"),
        help: "size of a write-ahead log segment, allocated on disk when the segment is created \
               (at least 64KiB; a server needs about twice this free to start)",
    },
    Flag {
        name: "max-datagram",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("60KiB"),
        help: "largest peer datagram sent (larger messages are split)",
    },
    Flag {
        name: "max-request-bytes",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("2MiB"),
        help: "largest client request frame accepted (larger ones get a TooLarge error); \
               keys and values are further limited to 4 KiB and 1 MiB",
    },
    Flag {
        name: "max-connections",
        hint: "N",
        kind: Kind::Value,
        default: Some("1024"),
        help: "client connections served at once (one more gets TooManyConnections and is closed)",
    },
    Flag {
        name: "max-inflight-per-conn",
        hint: "N",
        kind: Kind::Value,
        default: Some("1024"),
        help: "unanswered requests per connection (one more gets TooManyInFlight)",
    },
    Flag {
        name: "idle-timeout",
        hint: "DUR",
        kind: Kind::Value,
        default: Some("300s"),
        help: "close a client connection silent for this long with nothing in flight (0 = never)",
    },
    Flag {
        name: "watch-history-changes",
        hint: "N",
        kind: Kind::Value,
        default: Some("100000"),
        help: "recent changes each server keeps in memory for watches to start or resume from \
               (zatt watch --from); a watch from an older revision is answered Compacted",
    },
    Flag {
        name: "watch-history-bytes",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("64MiB"),
        help: "memory for those changes (each its log entry's bytes, which hold its key and value, \
               and about 56 more): the oldest are dropped past this or past --watch-history-changes",
    },
    Flag {
        name: "watch-buffer-bytes",
        hint: "BYTES",
        kind: Kind::Value,
        default: Some("8MiB"),
        help: "unsent bytes a watching client's connection may hold: a watch whose client does \
               not read its events is cut off (WatchOverflow) past this",
    },
    Flag {
        name: "watch-progress-interval",
        hint: "DUR",
        kind: Kind::Value,
        default: Some("1s"),
        help: "a watch sent nothing for this long gets a progress notification (the revision it \
               is complete through), so a client on a quiet prefix knows how current it is",
    },
    Flag {
        name: "watch-frame-interval",
        hint: "DUR",
        kind: Kind::Value,
        default: Some("1ms"),
        help: "under a steady stream of writes, the least time between two frames of changes to \
               one watch: fewer, larger frames (one send each) for at most this much delay",
    },
    Flag {
        name: "tls-cert",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "PEM certificate chain; when given, clients must speak TLS on the client port",
    },
    Flag {
        name: "tls-key",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "PEM private key of --tls-cert",
    },
    Flag {
        name: "tls-client-ca",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "PEM CA certificates; when given, clients must present a certificate signed by one",
    },
    Flag {
        name: "cluster-secret-file",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "file whose bytes (trailing newline removed) key the HMAC-SHA256 tag on every peer datagram",
    },
    Flag {
        name: "restore",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "bootstrap a new cluster from FILE, a backup written by `zatt snapshot save`: the \
               data directory must be empty, and every server of the new cluster is started \
               this way with the same FILE and --cluster; the new cluster gets a cluster id of \
               its own. A damaged or truncated FILE is refused (exit 65) before anything is \
               written",
    },
    Flag {
        name: "force-new-cluster",
        hint: "",
        kind: Kind::Switch,
        default: None,
        help: "LAST RESORT, when a majority of the voters is lost for good: restart this \
               surviving server as the only member of its cluster, with every entry of its log \
               (those it knows committed and those it holds without knowing yet); add servers \
               back with --join and `zatt member add`. Refused on a data directory forced \
               before (see the README's \"When a majority is lost for good\")",
    },
    Flag {
        name: "metrics-listen",
        hint: "HOST:PORT",
        kind: Kind::Value,
        default: None,
        help: "serve HTTP on this address: GET /metrics (Prometheus text format), /health (200 \
               when this server knows a leader and has applied what it knows committed, else \
               503) and /ready (200 when it is also a member serving clients); off when not given",
    },
    Flag {
        name: "min-free-disk",
        hint: "SIZE|N%",
        kind: Kind::Value,
        default: Some("256MiB"),
        help: "below this much free space on the data directory's file system (a size, or a \
               percentage of it; 0 = no alarm) the leader refuses writes that add data with \
               NoSpace, until space is freed; reads and deletes keep working",
    },
    Flag {
        name: "cpu-policy",
        hint: "batch|inherit",
        kind: Kind::Value,
        default: Some("batch"),
        help: "the Linux scheduling policy of the server's threads. batch: SCHED_BATCH (when \
               zattd was started under the default policy), so that a woken server thread \
               waits for the running thread to sleep or use up its time slice instead of \
               preempting it: fewer context switches per request, more requests per CPU \
               second. inherit: the policy zattd was started with (for example by chrt)",
    },
    Flag {
        name: "cpus",
        hint: "LIST",
        kind: Kind::Value,
        default: None,
        help: "run the server's threads (the event loop, the syncer, the segment preparer) on \
               these CPUs only: a list of CPU numbers and ranges as taskset -c takes them (0, \
               2-3, 0,4-7). A hand-off between the loop and the syncer then wakes no other CPU, \
               and the dictionary stays in these CPUs' caches: less CPU per request. Pinned \
               work cannot move to an idle CPU when these are busy, so give the server CPUs of \
               its own. A CPU zattd may not run on is refused at start; not pinned when not given",
    },
    Flag {
        name: "log-level",
        hint: "LEVEL",
        kind: Kind::Value,
        default: Some("info"),
        help: "off, error, warn, info, debug or trace",
    },
    Flag {
        name: "config",
        hint: "FILE",
        kind: Kind::Value,
        default: None,
        help: "file of `flag = value` lines (# starts a comment); flags > ZATT_<FLAG> environment > file > defaults",
    },
];

/// What a server whose data directory is empty does at start when it is given `--cluster`.
/// An empty directory is ambiguous: a brand-new cluster, or a member whose disk was lost or
/// replaced. Bootstrapping the second as if it were the first would let a server that forgot
/// its votes and acknowledgements vote again, and lose acknowledged writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialClusterState {
    /// Ask the listed servers first; refuse to start if this server is known to them from an
    /// existing cluster; vote only once every listed server has answered. The safe default.
    Auto,
    /// Bootstrap and vote at once, without asking (a new cluster whose servers cannot all start).
    New,
    /// Refuse to start with an empty data directory.
    Existing,
}

impl InitialClusterState {
    pub fn name(self) -> &'static str {
        match self {
            InitialClusterState::Auto => "auto",
            InitialClusterState::New => "new",
            InitialClusterState::Existing => "existing",
        }
    }
}

/// The Linux scheduling policy the server's threads run under (`--cpu-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPolicy {
    /// `SCHED_BATCH`, unless zattd was started under another policy than the default.
    Batch,
    /// The policy zattd was started with.
    Inherit,
}

impl CpuPolicy {
    pub fn name(self) -> &'static str {
        match self {
            CpuPolicy::Batch => "batch",
            CpuPolicy::Inherit => "inherit",
        }
    }
}

/// Everything `zattd` needs to start, validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: NodeId,
    /// The initial voters from `--cluster`, in id order (empty on a restart or `--join`).
    pub cluster: Vec<(NodeId, String)>,
    pub data_dir: PathBuf,
    pub join: bool,
    /// The address to bind, if known before reading the data directory (from `--listen` or this
    /// server's `--cluster` entry). A restart without either takes it from the membership.
    pub listen: Option<String>,
    pub cluster_id: Option<u64>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_entries: u64,
    pub snapshot_log_bytes: u64,
    pub max_datagram_bytes: usize,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub max_inflight_per_conn: usize,
    /// `None`: never close idle connections.
    pub idle_timeout: Option<Duration>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub cluster_secret_file: Option<PathBuf>,
    pub log_level: LevelFilter,
    /// What a first start with an empty data directory does (see `InitialClusterState`).
    pub initial_cluster_state: InitialClusterState,
    /// Bytes of one write-ahead log segment, allocated when the segment is created.
    pub wal_segment_bytes: u64,
    /// The change history kept for watches and the watchers' limits (`--watch-*`).
    pub watch: crate::host::WatchConfig,
    /// Where to serve `/metrics`, `/health` and `/ready` over HTTP (none: not served).
    pub metrics_listen: Option<String>,
    /// A backup to bootstrap a new cluster from (`--restore`).
    pub restore: Option<PathBuf>,
    /// Make this surviving server the only member of its cluster (`--force-new-cluster`).
    pub force_new_cluster: bool,
    /// The disk-space alarm's threshold.
    pub min_free_disk: MinFreeDisk,
    /// The scheduling policy of the server's threads.
    pub cpu_policy: CpuPolicy,
    /// The CPUs the server's threads are pinned to (`--cpus`), ascending, each once; `None`:
    /// not pinned.
    pub cpus: Option<Vec<usize>>,
}

impl ServerConfig {
    /// A configuration with every default, for tests and embedding.
    pub fn new(id: NodeId, data_dir: PathBuf) -> ServerConfig {
        let mut values = BTreeMap::new();
        values.insert("id".to_string(), id.0.to_string());
        values.insert("data-dir".to_string(), data_dir.display().to_string());
        values.insert("join".to_string(), "true".to_string());
        values.insert("listen".to_string(), "127.0.0.1:5254".to_string());
        values.insert("cluster-id".to_string(), "1".to_string());
        let mut cfg = from_values(&values).expect("defaults are valid");
        cfg.join = false;
        cfg.listen = None;
        cfg.cluster_id = None;
        cfg
    }

    /// The Raft tick: half the heartbeat interval, at most 5 ms, at least 1 ms. Small enough that
    /// timeouts are precise, large enough that an idle server wakes rarely.
    pub fn tick(&self) -> Duration {
        let half = self.heartbeat_interval / 2;
        half.clamp(Duration::from_millis(1), Duration::from_millis(5))
    }

    /// The heartbeat interval in ticks (at least 1).
    pub fn heartbeat_ticks(&self) -> u32 {
        ticks(self.heartbeat_interval, self.tick()).max(1)
    }

    /// The minimum election timeout in ticks (always above the heartbeat).
    pub fn election_ticks(&self) -> u32 {
        ticks(self.election_timeout, self.tick()).max(self.heartbeat_ticks() + 1)
    }

    /// The cluster id derived from the initial voters (see the module docs).
    pub fn derived_cluster_id(&self) -> Option<u64> {
        if self.cluster.is_empty() {
            None
        } else {
            Some(cluster_id_of(&self.cluster))
        }
    }
}

fn ticks(d: Duration, tick: Duration) -> u32 {
    let n = d.as_micros() / tick.as_micros().max(1);
    n.min(u32::MAX as u128) as u32
}

/// The FNV-1a 64 hash of `id=addr` lines in id order, never 0.
pub fn cluster_id_of(members: &[(NodeId, String)]) -> u64 {
    let mut sorted: Vec<&(NodeId, String)> = members.iter().collect();
    sorted.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in sorted {
        for b in format!("{}={}\n", id.0, addr).bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// `--help`: print this text and exit 0.
    Help(String),
    /// `--version`.
    Version,
    Run(Box<ServerConfig>),
}

/// The switches that print something instead of starting a server (short name, long name,
/// help): outside `FLAGS` because they have no environment variable, setting or default, but
/// given to getopts and `--help` from this one list so that the help cannot leave one out.
const ACTIONS: &[(&str, &str, &str)] = &[
    ("h", "help", "print this help and exit"),
    ("V", "version", "print the version and exit"),
];

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    for f in FLAGS {
        match f.kind {
            Kind::Value => o.optopt("", f.name, f.help, f.hint),
            Kind::Switch => o.optflag("", f.name, f.help),
        };
    }
    for (short, long, help) in ACTIONS {
        o.optflag(short, long, help);
    }
    o
}

/// The `--help` text: every flag with its default.
pub fn usage() -> String {
    let mut s = String::from(
        "Usage: zattd --id N --data-dir DIR [--cluster ID=HOST:PORT,... | --join --listen HOST:PORT] [options]\n\n\
         Runs one Zatt server. Peers talk UDP and clients TCP on the same port number.\n\
         Every flag can also be set as ZATT_<FLAG> in the environment (ZATT_DATA_DIR=...) or as\n\
         `flag = value` in the --config file; flags > environment > file > defaults.\n\
         Durations take units (500us, 50ms, 1s, 2m); sizes too (512, 64KiB, 1MiB, 1GB).\n\n",
    );
    for f in FLAGS {
        let head = if f.kind == Kind::Switch {
            format!("  --{}", f.name)
        } else {
            format!("  --{} {}", f.name, f.hint)
        };
        s.push_str(&head);
        s.push('\n');
        s.push_str("        ");
        s.push_str(f.help);
        if let Some(d) = f.default {
            s.push_str(&format!(" [default: {d}]"));
        }
        s.push('\n');
    }
    for (short, long, help) in ACTIONS {
        s.push_str(&format!("  -{short}, --{long}\n        {help}\n"));
    }
    s.push_str("\nExit status: 0 ok, 1 runtime error, 2 usage error, 65 corrupt data directory, 74 disk failure.\n");
    s
}

/// The environment variable for a flag: `data-dir` → `ZATT_DATA_DIR`.
pub fn env_name(flag: &str) -> String {
    format!("ZATT_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Looks up `ZATT_<FLAG>` in the process environment for `parse_args_with`: a value that is
/// not UTF-8 is an error naming the variable (it used to be taken as unset, silently).
pub fn process_env(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|raw| {
            ConfigError::usage(format!(
                "environment variable {name} ({raw:?}) is not valid UTF-8"
            ))
        }),
    }
}

/// Parses the command line (without the program name), with `env` standing for the process
/// environment so that tests can give their own. Reads the `--config` file if one is named.
pub fn parse_args(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    parse_args_with(args, &|k| Ok(env(k)))
}

/// `parse_args` with an environment lookup that can fail (`process_env`). An empty variable is
/// taken as unset, whatever the flag: `ZATT_JOIN=` (an empty line in a systemd
/// EnvironmentFile, say) must not turn a switch on.
pub fn parse_args_with(
    args: &[String],
    env: &dyn Fn(&str) -> Result<Option<String>, ConfigError>,
) -> Result<Invocation, ConfigError> {
    let env =
        |k: &str| -> Result<Option<String>, ConfigError> { Ok(env(k)?.filter(|v| !v.is_empty())) };
    let m = options()
        .parse(args)
        .map_err(|e| ConfigError::usage(format!("{e} (see zattd --help)")))?;
    if m.opt_present("help") {
        return Ok(Invocation::Help(usage()));
    }
    if m.opt_present("version") {
        return Ok(Invocation::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(ConfigError::usage(format!(
            "unexpected argument {extra:?} (see zattd --help)"
        )));
    }

    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for f in FLAGS {
        if let Some(d) = f.default {
            values.insert(f.name.to_string(), d.to_string());
        }
    }
    let config_file = match m.opt_str("config") {
        Some(p) => Some(p),
        None => env(&env_name("config"))?,
    };
    if let Some(path) = config_file {
        let bytes = read_option_file("--config", Path::new(&path), MAX_CONFIG_FILE_BYTES)
            .map_err(ConfigError::usage)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::usage(format!(
                "--config {path}: not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        for (k, v) in parse_config_file(&text)
            .map_err(|e| ConfigError::usage(format!("config file {path}: {}", e.message)))?
        {
            values.insert(k, v);
        }
    }
    for f in FLAGS {
        if let Some(v) = env(&env_name(f.name))? {
            values.insert(f.name.to_string(), v);
        }
    }
    for f in FLAGS {
        match f.kind {
            Kind::Value => {
                if let Some(v) = m.opt_str(f.name) {
                    values.insert(f.name.to_string(), v);
                }
            }
            Kind::Switch => {
                if m.opt_present(f.name) {
                    values.insert(f.name.to_string(), "true".to_string());
                }
            }
        }
    }
    from_values(&values).map(|c| Invocation::Run(Box::new(c)))
}

/// Parses `flag = value` lines. `#` starts a comment at the start of a line or after
/// whitespace outside quotes (`data-dir = /tmp/d#1` keeps its `#`); blank lines are skipped;
/// names may be written with `-` or `_`; a switch alone on its line (`join`) means true; a
/// value may be wrapped in one pair of double quotes. A setting given twice, an unbalanced
/// quote or a setting without a value is refused with its line number.
pub fn parse_config_file(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        let name = k.replace('_', "-");
        let flag = FLAGS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| ConfigError::usage(format!("line {n}: unknown setting {k:?}")))?;
        if name == "config" {
            return Err(ConfigError::usage(format!(
                "line {n}: a config file cannot name another"
            )));
        }
        if let Some(first) = seen.insert(name.clone(), n) {
            return Err(ConfigError::usage(format!(
                "line {n}: {name} is given again (first on line {first}); give each setting once"
            )));
        }
        let v = match v {
            // A switch alone on its line.
            None if flag.kind == Kind::Switch => "true",
            None => {
                return Err(ConfigError::usage(format!(
                    "line {n}: {k} has no value (write {name} = VALUE)"
                )))
            }
            Some(v) => unquote(v)
                .ok_or_else(|| ConfigError::usage(format!("line {n}: unbalanced quote in {v}")))?,
        };
        if v.is_empty() {
            return Err(ConfigError::usage(format!("line {n}: {k} has no value")));
        }
        out.push((name, v.to_string()));
    }
    Ok(out)
}

/// `raw` up to its comment: a `#` at the start or after whitespace, outside double quotes.
fn strip_comment(raw: &str) -> &str {
    let mut quoted = false;
    let mut prev_space = true;
    for (i, c) in raw.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && prev_space => return &raw[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    raw
}

/// A value without its one pair of surrounding double quotes; `None` if the quotes do not
/// balance (one at one end only, or one inside).
fn unquote(v: &str) -> Option<&str> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    if inner.contains('"') {
        return None;
    }
    Some(inner)
}

fn bad(flag: &str, value: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError::usage(format!("invalid --{flag} {value:?}: {why}"))
}

fn parse_switch(flag: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(flag, v, "expected true or false")),
    }
}

fn parse_count(flag: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = v
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| bad(flag, v, "expected a whole number"))?;
    if n < min || n > max {
        return Err(bad(flag, v, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

fn size_in(flag: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = parse_size(v).map_err(|e| bad(flag, v, e))?;
    if n < min || n > max {
        return Err(bad(
            flag,
            v,
            format!("must be between {min} and {max} bytes"),
        ));
    }
    Ok(n)
}

/// Parses `ID=HOST:PORT,...`.
pub fn parse_cluster(v: &str) -> Result<Vec<(NodeId, String)>, ConfigError> {
    let mut out: Vec<(NodeId, String)> = Vec::new();
    let mut resolved: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad("cluster", v, format!("{part:?} is not ID=HOST:PORT")))?;
        let id = NodeId(parse_count("cluster", id.trim(), 1, u64::MAX)?);
        let addr = addr.trim().to_string();
        let socks = check_member_addr("cluster", &addr)?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(bad("cluster", v, format!("node {id} appears twice")));
        }
        if out.iter().any(|(_, a)| *a == addr) {
            return Err(bad("cluster", v, format!("address {addr} appears twice")));
        }
        // Compared resolved too, every address each name resolves to: `localhost:7001` and
        // `127.0.0.1:7001` are one server's port.
        for (other, theirs) in &resolved {
            if let Some(same) = socks.iter().find(|s| theirs.contains(s)) {
                return Err(bad(
                    "cluster",
                    v,
                    format!("address {same} appears twice (as {other} and as {addr})"),
                ));
            }
        }
        resolved.push((addr.clone(), socks));
        out.push((id, addr));
    }
    if out.is_empty() {
        return Err(bad("cluster", v, "no members"));
    }
    if out.len() > crate::types::MAX_MEMBERS {
        return Err(bad("cluster", v, "too many members"));
    }
    out.sort();
    Ok(out)
}

/// Every address `addr` resolves to (at least one).
fn check_addr(flag: &str, addr: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    if addr.len() > crate::types::MAX_ADDR_LEN {
        return Err(bad(flag, addr, "address too long"));
    }
    resolve_all(addr).map_err(|e| bad(flag, addr, e))
}

/// A member's address (`--cluster`, `--listen`): also refuses port 0, which would bind some
/// other port than the one the membership records and peers send to. Every address it
/// resolves to.
fn check_member_addr(flag: &str, addr: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let socks = check_addr(flag, addr)?;
    // One `HOST:PORT` resolves to addresses that all carry its port.
    if socks[0].port() == 0 {
        return Err(bad(
            flag,
            addr,
            "port 0 is not an address peers and clients can reach: give the port to listen on",
        ));
    }
    Ok(socks)
}

/// Resolves `host:port` to its first socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    resolve_all(addr).map(|socks| socks[0])
}

/// Resolves `host:port` to its socket addresses (at least one; at most 16 are kept).
fn resolve_all(addr: &str) -> Result<Vec<SocketAddr>, String> {
    match addr.to_socket_addrs() {
        Ok(it) => {
            let socks: Vec<SocketAddr> = it.take(16).collect();
            if socks.is_empty() {
                Err("resolves to no address".to_string())
            } else {
                Ok(socks)
            }
        }
        Err(e) => Err(format!("not a HOST:PORT address ({e})")),
    }
}

fn from_values(values: &BTreeMap<String, String>) -> Result<ServerConfig, ConfigError> {
    let get = |k: &str| values.get(k).map(String::as_str);
    let req = |k: &str| {
        get(k).ok_or_else(|| ConfigError::usage(format!("--{k} is required (see zattd --help)")))
    };
    let dur = |k: &str| -> Result<Duration, ConfigError> {
        let v = req(k)?;
        parse_duration(v).map_err(|e| bad(k, v, e))
    };

    let id = NodeId(parse_count("id", req("id")?, 1, u64::MAX)?);
    let data_dir = PathBuf::from(req("data-dir")?);
    if data_dir.as_os_str().is_empty() {
        return Err(bad("data-dir", "", "empty path"));
    }
    let join = match get("join") {
        Some(v) => parse_switch("join", v)?,
        None => false,
    };
    let cluster = match get("cluster") {
        Some(v) => parse_cluster(v)?,
        None => Vec::new(),
    };
    let listen = match get("listen") {
        Some(v) => {
            check_member_addr("listen", v)?;
            Some(v.to_string())
        }
        None => None,
    };
    let cluster_id = match get("cluster-id") {
        Some(v) => Some(parse_count("cluster-id", v, 1, u64::MAX)?),
        None => None,
    };
    let own = cluster
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, a)| a.clone());
    if join {
        if listen.is_none() {
            return Err(ConfigError::usage(
                "--join needs --listen HOST:PORT (the address this server will be added with)",
            ));
        }
        if cluster_id.is_none() && cluster.is_empty() {
            return Err(ConfigError::usage(
                "--join needs --cluster-id N (in any member's DATA_DIR/cluster-id) or the initial --cluster list",
            ));
        }
    } else if !cluster.is_empty() && own.is_none() {
        return Err(ConfigError::usage(format!(
            "node {id} is not in --cluster; list this server there or start it with --join"
        )));
    }
    let listen = listen.or(if join { None } else { own });

    let heartbeat_interval = dur("heartbeat-interval")?;
    let election_timeout = dur("election-timeout")?;
    if heartbeat_interval < Duration::from_millis(1) {
        return Err(bad(
            "heartbeat-interval",
            req("heartbeat-interval")?,
            "must be at least 1ms",
        ));
    }
    if election_timeout < heartbeat_interval * 2 {
        return Err(ConfigError::usage(format!(
            "--election-timeout {} must be at least twice --heartbeat-interval {}",
            req("election-timeout")?,
            req("heartbeat-interval")?
        )));
    }
    if election_timeout > Duration::from_secs(60) {
        return Err(bad(
            "election-timeout",
            req("election-timeout")?,
            "must be at most 60s",
        ));
    }
    let snapshot_entries = parse_count("snapshot-entries", req("snapshot-entries")?, 1, 1 << 40)?;
    let snapshot_log_bytes = size_in(
        "snapshot-log-bytes",
        req("snapshot-log-bytes")?,
        64 << 10,
        1 << 40,
    )?;
    let max_datagram_bytes = size_in("max-datagram", req("max-datagram")?, 1200, 65_507)? as usize;
    let max_request_bytes =
        size_in("max-request-bytes", req("max-request-bytes")?, 64, 64 << 20)? as usize;
    let max_connections =
        parse_count("max-connections", req("max-connections")?, 1, 1_000_000)? as usize;
    let max_inflight_per_conn = parse_count(
        "max-inflight-per-conn",
        req("max-inflight-per-conn")?,
        1,
        1_000_000,
    )? as usize;
    let idle = dur("idle-timeout")?;
    let idle_timeout = if idle.is_zero() { None } else { Some(idle) };

    let path = |k: &str| get(k).map(PathBuf::from);
    let tls_cert = path("tls-cert");
    let tls_key = path("tls-key");
    let tls_client_ca = path("tls-client-ca");
    if tls_cert.is_some() != tls_key.is_some() {
        return Err(ConfigError::usage(
            "--tls-cert and --tls-key go together: give both or neither",
        ));
    }
    if tls_client_ca.is_some() && tls_cert.is_none() {
        return Err(ConfigError::usage(
            "--tls-client-ca needs --tls-cert and --tls-key",
        ));
    }
    let initial_cluster_state = match req("initial-cluster-state")? {
        "auto" => InitialClusterState::Auto,
        "new" => InitialClusterState::New,
        "existing" => InitialClusterState::Existing,
        v => {
            return Err(bad(
                "initial-cluster-state",
                v,
                "expected auto, new or existing",
            ))
        }
    };
    let wal_segment_bytes = size_in(
        "wal-segment-size",
        req("wal-segment-size")?,
        64 << 10,
        1 << 30,
    )?;
    let watch = crate::host::WatchConfig {
        history: crate::kv::history::HistoryLimits {
            max_changes: parse_count(
                "watch-history-changes",
                req("watch-history-changes")?,
                0,
                100_000_000,
            )? as usize,
            max_bytes: size_in(
                "watch-history-bytes",
                req("watch-history-bytes")?,
                0,
                1 << 40,
            )? as usize,
        },
        buffer_bytes: size_in(
            "watch-buffer-bytes",
            req("watch-buffer-bytes")?,
            64 << 10,
            1 << 32,
        )? as usize,
        frame_interval: {
            let d = dur("watch-frame-interval")?;
            if d > Duration::from_secs(1) {
                return Err(bad(
                    "watch-frame-interval",
                    req("watch-frame-interval")?,
                    "must be at most 1s",
                ));
            }
            d
        },
        progress_interval: {
            let d = dur("watch-progress-interval")?;
            if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
                return Err(bad(
                    "watch-progress-interval",
                    req("watch-progress-interval")?,
                    "must be between 10ms and 1h",
                ));
            }
            d
        },
    };
    let restore = get("restore").map(PathBuf::from);
    let force_new_cluster = match get("force-new-cluster") {
        Some(v) => parse_switch("force-new-cluster", v)?,
        None => false,
    };
    if restore.is_some() && (join || force_new_cluster) {
        return Err(ConfigError::usage(
            "--restore starts a new cluster: it goes with --cluster, not with --join or \
             --force-new-cluster",
        ));
    }
    if restore.is_some() && initial_cluster_state == InitialClusterState::Existing {
        return Err(ConfigError::usage(
            "--restore starts a new cluster from an empty data directory: \
             --initial-cluster-state existing says this server already has its data",
        ));
    }
    if restore.is_some() && cluster.is_empty() {
        return Err(ConfigError::usage(
            "--restore needs --cluster ID=HOST:PORT,...: the voters of the new cluster",
        ));
    }
    if force_new_cluster && join {
        return Err(ConfigError::usage(
            "--force-new-cluster keeps a surviving server's data; --join starts an empty one",
        ));
    }
    let metrics_listen = match get("metrics-listen") {
        Some(v) => {
            // Port 0 is allowed here: the server logs the port it was given.
            check_addr("metrics-listen", v)?;
            Some(v.to_string())
        }
        None => None,
    };
    let min_free_disk = parse_min_free_disk(req("min-free-disk")?)
        .map_err(|e| bad("min-free-disk", req("min-free-disk").unwrap_or(""), e))?;
    let cpu_policy = match req("cpu-policy")? {
        "batch" => CpuPolicy::Batch,
        "inherit" => CpuPolicy::Inherit,
        v => return Err(bad("cpu-policy", v, "expected batch or inherit")),
    };
    let cpus = match get("cpus") {
        Some(v) => Some(parse_cpu_list(v).map_err(|e| bad("cpus", v, e))?),
        None => None,
    };
    let log_level: LevelFilter = req("log-level")?.parse().map_err(|_| {
        bad(
            "log-level",
            get("log-level").unwrap_or(""),
            "expected off, error, warn, info, debug or trace",
        )
    })?;

    Ok(ServerConfig {
        id,
        cluster,
        data_dir,
        join,
        listen,
        cluster_id,
        heartbeat_interval,
        election_timeout,
        snapshot_entries,
        snapshot_log_bytes,
        max_datagram_bytes,
        max_request_bytes,
        max_connections,
        max_inflight_per_conn,
        idle_timeout,
        tls_cert,
        tls_key,
        tls_client_ca,
        cluster_secret_file: path("cluster-secret-file"),
        log_level,
        initial_cluster_state,
        wal_segment_bytes,
        watch,
        metrics_listen,
        min_free_disk,
        restore,
        force_new_cluster,
        cpu_policy,
        cpus,
    })
}

/// CPU numbers below this (glibc's `CPU_SETSIZE`, the CPUs one `cpu_set_t` can name).
pub const CPU_LIMIT: usize = 1024;

/// Parses `--cpus`: CPU numbers and ranges separated by commas (`0`, `2-3`, `0,4-7`), as
/// `taskset -c` takes them. Returns them ascending, each once; refuses an empty list or
/// item, a range that runs backwards and a CPU at or above `CPU_LIMIT`.
pub fn parse_cpu_list(v: &str) -> Result<Vec<usize>, String> {
    let number = |s: &str| -> Result<usize, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("the list has an empty item".to_string());
        }
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{t:?} is not a CPU number"));
        }
        match t.parse::<usize>() {
            Ok(n) if n < CPU_LIMIT => Ok(n),
            _ => Err(format!(
                "CPU {t} is out of range (CPUs are numbered below {CPU_LIMIT})"
            )),
        }
    };
    let mut seen = vec![false; CPU_LIMIT];
    for item in v.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) if a.trim().is_empty() || b.trim().is_empty() => {
                return Err(format!("{:?} is not a CPU number or range", item.trim()));
            }
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("the range {}-{} runs backwards", lo, hi));
        }
        for s in &mut seen[lo..=hi] {
            *s = true;
        }
    }
    Ok((0..CPU_LIMIT).filter(|&c| seen[c]).collect())
}

/// `cpus` (ascending, each once) as `--cpus` takes them, runs of neighbours as ranges:
/// `[0, 1, 2, 5]` is `0-2,5`.
pub fn cpu_list_text(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Parses `--min-free-disk`: a size (`512MiB`, `0` for none) or a percentage of the file
/// system (`5%`, `0.5%`; at most 50%).
pub fn parse_min_free_disk(v: &str) -> Result<MinFreeDisk, String> {
    let t = v.trim();
    if let Some(p) = t.strip_suffix('%') {
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{t:?} is not a percentage"))?;
        if !(0.0..=50.0).contains(&pct) {
            return Err(format!("{t:?}: a percentage must be between 0% and 50%"));
        }
        return Ok(MinFreeDisk::BasisPoints((pct * 100.0).round() as u32));
    }
    parse_size(t).map(MinFreeDisk::Bytes)
}

/// Parses a duration with a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`; fractions allowed
/// (`1.5s`). A bare `0` is zero; any other number needs its unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{t:?} needs a unit (ms, s, m, h, us, ns)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{t:?} is not a number with a unit"))?;
    let ns_per: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        u => return Err(format!("unknown duration unit {u:?} (ms, s, m, h, us, ns)")),
    };
    let total = n * ns_per;
    if !total.is_finite() || !(0.0..=1e18).contains(&total) {
        return Err(format!("{t:?} is out of range"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parses a size in bytes: a bare number, or with `B`, `KB`/`MB`/`GB` (powers of 1000),
/// `KiB`/`MiB`/`GiB` (powers of 1024), or `K`/`M`/`G` (powers of 1024). Case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err(format!("{t:?} is not a size"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{t:?} is out of range"));
    }
    let f: f64 = num.parse().map_err(|_| format!("{t:?} is not a size"))?;
    let total = f * mult as f64;
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 / 2.0 {
        return Err(format!("{t:?} is out of range"));
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(a: &str, env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse_args(&args(a), &lookup)? {
            Invocation::Run(c) => Ok(*c),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn cpu_lists_parse_as_taskset_takes_them_and_print_back_as_ranges() {
        // Goal: `--cpus` reads numbers and ranges in any order, each CPU once, and refuses
        // anything else with the reason; the text printed back is the shortest list.
        for (text, cpus, back) in [
            ("0", vec![0], "0"),
            ("3,1", vec![1, 3], "1,3"),
            ("0-2,5", vec![0, 1, 2, 5], "0-2,5"),
            (" 4 - 5 ,0,1,2,3", vec![0, 1, 2, 3, 4, 5], "0-5"),
            ("2-2,2", vec![2], "2"),
            ("1023", vec![1023], "1023"),
        ] {
            let got = parse_cpu_list(text).unwrap();
            assert_eq!(got, cpus, "{text:?}");
            assert_eq!(cpu_list_text(&got), back, "{text:?}");
        }
        for (text, why) in [
            ("", "the list has an empty item"),
            ("0,", "the list has an empty item"),
            ("-1", "\"-1\" is not a CPU number or range"),
            ("+1", "\"+1\" is not a CPU number"),
            ("a", "\"a\" is not a CPU number"),
            ("1-", "\"1-\" is not a CPU number or range"),
            ("1-2-3", "\"2-3\" is not a CPU number"),
            ("3-1", "the range 3-1 runs backwards"),
            (
                "1024",
                "CPU 1024 is out of range (CPUs are numbered below 1024)",
            ),
            ("0-99999999999999999999", "out of range"),
        ] {
            let e = parse_cpu_list(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let cfg = run(
            "--id 1 --data-dir /d --cluster 1=127.0.0.1:1 --cpus 1,0",
            &[],
        )
        .unwrap();
        assert_eq!(cfg.cpus, Some(vec![0, 1]));
        let cfg = run(
            "--id 1 --data-dir /d --cluster 1=127.0.0.1:1",
            &[("ZATT_CPUS", "2")],
        )
        .unwrap();
        assert_eq!(cfg.cpus, Some(vec![2]));
        let cfg = run("--id 1 --data-dir /d --cluster 1=127.0.0.1:1", &[]).unwrap();
        assert_eq!(cfg.cpus, None, "not pinned by default");
    }

    const BASE: &str = "--id 1 --cluster 1=127.0.0.1:7001,2=127.0.0.1:7002 --data-dir /tmp/x";

    #[test]
    fn durations_take_units() {
        // Goal: every documented unit parses; a number without a unit is refused.
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("50").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn sizes_take_units() {
        // Goal: binary and decimal units, bare bytes; overflow and junk are refused.
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1mb"), Ok(1_000_000));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        // Goal: the documented precedence. Method: set one setting in all three sources and
        // others in fewer, then check which value won for each.
        let dir = std::env::temp_dir().join(format!("zatt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("z.conf");
        std::fs::write(
            &file,
            "# comment\nheartbeat_interval = 20ms\nelection-timeout = 900ms # trailing\n\
             max-connections = 7\n",
        )
        .unwrap();
        let a = format!(
            "{BASE} --config {} --heartbeat-interval 10ms",
            file.display()
        );
        let c = run(
            &a,
            &[
                ("ZATT_HEARTBEAT_INTERVAL", "30ms"),
                ("ZATT_ELECTION_TIMEOUT", "800ms"),
            ],
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(10)); // flag
        assert_eq!(c.election_timeout, Duration::from_millis(800)); // env over file
        assert_eq!(c.max_connections, 7); // file over default
        assert_eq!(c.max_request_bytes, 2 << 20); // default
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        // Goal: each bad value yields exit 2 with a line naming the flag.
        for (a, needle) in [
            ("--id 0 --cluster 1=127.0.0.1:1 --data-dir d", "--id"),
            (
                "--id 3 --cluster 1=127.0.0.1:1 --data-dir d",
                "not in --cluster",
            ),
            (
                &format!("{BASE} --heartbeat-interval 5parsecs"),
                "--heartbeat-interval",
            ),
            (&format!("{BASE} --election-timeout 60ms"), "twice"),
            (
                &format!("{BASE} --max-request-bytes 1TB"),
                "--max-request-bytes",
            ),
            (&format!("{BASE} --tls-cert c.pem"), "--tls-key"),
            (&format!("{BASE} --log-level loud"), "--log-level"),
            (
                &format!("{BASE} --initial-cluster-state maybe"),
                "--initial-cluster-state",
            ),
            (
                &format!("{BASE} --wal-segment-size 1KiB"),
                "--wal-segment-size",
            ),
            (&format!("{BASE} --bogus 1"), "bogus"),
            ("--id 1 --data-dir d --join", "--listen"),
            ("--id 1 --cluster 1=nohost --data-dir d", "--cluster"),
            ("--cluster 1=127.0.0.1:1 --data-dir d", "--id is required"),
        ] {
            let e = run(a, &[]).unwrap_err();
            assert_eq!(e.exit_code, EXIT_USAGE, "{a}");
            assert!(e.message.contains(needle), "{a}: {}", e.message);
            assert!(!e.message.contains('\n'), "{a}: one line");
        }
    }

    #[test]
    fn initial_cluster_state_and_segment_size_have_safe_defaults() {
        // Goal: without a choice, a first start asks its peers (auto) and segments keep 64 MiB;
        // each choice and size is taken from flag or environment.
        let c = run(BASE, &[]).unwrap();
        assert_eq!(c.initial_cluster_state, InitialClusterState::Auto);
        assert_eq!(c.wal_segment_bytes, 64 << 20);
        let c = run(
            &format!("{BASE} --initial-cluster-state new --wal-segment-size 1MiB"),
            &[],
        )
        .unwrap();
        assert_eq!(c.initial_cluster_state, InitialClusterState::New);
        assert_eq!(c.wal_segment_bytes, 1 << 20);
        let c = run(BASE, &[("ZATT_INITIAL_CLUSTER_STATE", "existing")]).unwrap();
        assert_eq!(c.initial_cluster_state, InitialClusterState::Existing);
    }

    #[test]
    fn metrics_listen_and_min_free_disk() {
        // Goal: HTTP is off unless asked for; the disk threshold takes a size or a percentage,
        // defaults to 256 MiB, and refuses nonsense naming the flag.
        let c = run(BASE, &[]).unwrap();
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.min_free_disk, MinFreeDisk::Bytes(256 << 20));
        let c = run(
            &format!("{BASE} --metrics-listen 127.0.0.1:9100 --min-free-disk 2.5%"),
            &[],
        )
        .unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
        assert_eq!(c.min_free_disk, MinFreeDisk::BasisPoints(250));
        let c = run(BASE, &[("ZATT_MIN_FREE_DISK", "0")]).unwrap();
        assert_eq!(c.min_free_disk, MinFreeDisk::Bytes(0));
        for bad in ["60%", "-1%", "lots", "5%%"] {
            let e = run(&format!("{BASE} --min-free-disk {bad}"), &[]).unwrap_err();
            assert!(
                e.message.contains("--min-free-disk"),
                "{bad}: {}",
                e.message
            );
        }
        let e = run(&format!("{BASE} --metrics-listen nowhere"), &[]).unwrap_err();
        assert!(e.message.contains("--metrics-listen"), "{}", e.message);
    }

    #[test]
    fn restore_and_force_new_cluster_go_with_what_they_need() {
        // Goal: --restore needs the new cluster's voters and excludes --join, a force and
        // --initial-cluster-state existing (it starts from an empty directory);
        // --force-new-cluster keeps data, so it excludes --join.
        let c = run(&format!("{BASE} --restore b.zatt"), &[]).unwrap();
        assert_eq!(c.restore, Some(PathBuf::from("b.zatt")));
        assert!(!c.force_new_cluster);
        let c = run("--id 1 --data-dir d --force-new-cluster", &[]).unwrap();
        assert!(c.force_new_cluster && c.restore.is_none());
        for (a, needle) in [
            ("--id 1 --data-dir d --restore b.zatt", "--cluster"),
            (&format!("{BASE} --restore b --force-new-cluster"), "--restore"),
            (
                &format!("{BASE} --restore b --initial-cluster-state existing"),
                "--restore",
            ),
            (
                "--id 1 --data-dir d --restore b --join --listen 127.0.0.1:1 --cluster-id 5",
                "--restore",
            ),
            (
                "--id 1 --data-dir d --force-new-cluster --join --listen 127.0.0.1:1 --cluster-id 5",
                "--force-new-cluster",
            ),
        ] {
            let e = run(a, &[]).unwrap_err();
            assert_eq!(e.exit_code, EXIT_USAGE, "{a}");
            assert!(e.message.contains(needle), "{a}: {}", e.message);
        }
    }

    #[test]
    fn join_and_restart_forms_are_accepted() {
        // Goal: a restart needs only --id and --data-dir; a joiner needs --listen and a cluster id.
        let c = run("--id 2 --data-dir d", &[]).unwrap();
        assert!(c.cluster.is_empty() && c.listen.is_none() && !c.join);
        let c = run(
            "--id 4 --data-dir d --join --listen 127.0.0.1:7004 --cluster-id 99",
            &[],
        )
        .unwrap();
        assert!(c.join);
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:7004"));
        let c = run(BASE, &[("ZATT_JOIN", "false")]).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:7001"));
        assert!(c.election_ticks() > c.heartbeat_ticks());
    }

    #[test]
    fn cluster_id_is_the_same_whatever_the_order() {
        // Goal: every initial member derives the same id from the same list.
        let a = parse_cluster("1=127.0.0.1:1,2=127.0.0.1:2").unwrap();
        let b = parse_cluster("2=127.0.0.1:2,1=127.0.0.1:1").unwrap();
        assert_eq!(cluster_id_of(&a), cluster_id_of(&b));
        let c = parse_cluster("1=127.0.0.1:1,2=127.0.0.1:3").unwrap();
        assert_ne!(cluster_id_of(&a), cluster_id_of(&c));
    }

    #[test]
    fn example_config_parses_and_validates() {
        // Goal: the example shipped in examples/ stays valid as flags evolve.
        let text = include_str!("../examples/zattd.conf");
        let values = parse_config_file(text).unwrap();
        let map: BTreeMap<String, String> = values.into_iter().collect();
        assert!(
            map.contains_key("watch-history-bytes"),
            "the watch settings are shown"
        );
        for f in FLAGS.iter().filter(|f| f.default.is_some()) {
            assert!(text.contains(f.name), "the example shows --{}", f.name);
        }
        let mut all: BTreeMap<String, String> = FLAGS
            .iter()
            .filter_map(|f| f.default.map(|d| (f.name.to_string(), d.to_string())))
            .collect();
        all.extend(map);
        let c = from_values(&all).unwrap();
        assert_eq!(c.cluster.len(), 3);
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:5254"));
        assert_eq!(
            c.watch,
            crate::host::WatchConfig::default(),
            "the defaults, as shown"
        );
    }

    #[test]
    fn config_file_mistakes_are_refused_with_their_line() {
        // Goal: a setting given twice, an unbalanced quote and an empty value are refused
        // naming the line; `#` inside a value is kept, a comment after whitespace is not.
        for (text, needle) in [
            (
                "id = 1\n# c\nid = 2\n",
                "line 3: id is given again (first on line 1)",
            ),
            (
                "data_dir = a\ndata-dir = b\n",
                "line 2: data-dir is given again",
            ),
            ("join\njoin = false\n", "line 2: join is given again"),
            ("id = \"1\n", "line 1: unbalanced quote"),
            ("id = 1\"\n", "line 1: unbalanced quote"),
            ("data-dir = \"a\"b\"\n", "line 1: unbalanced quote"),
            ("join =\n", "line 1: join has no value"),
            ("id =  # nothing\n", "line 1: id has no value"),
            ("id\n", "line 1: id has no value"),
        ] {
            let e = parse_config_file(text).unwrap_err();
            assert_eq!(e.exit_code, EXIT_USAGE, "{text:?}");
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
        let got = parse_config_file(
            "# top\ndata-dir = /tmp/d#1 # the dir\n  # indented\nid = \"7\"\t#tab\n\
             join\nlisten = \"127.0.0.1:1 #x\"\n",
        )
        .unwrap();
        let want: Vec<(String, String)> = [
            ("data-dir", "/tmp/d#1"),
            ("id", "7"),
            ("join", "true"),
            ("listen", "127.0.0.1:1 #x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_environment_variable_is_unset() {
        // Goal: `ZATT_JOIN=` or `ZATT_FORCE_NEW_CLUSTER=` (an empty line in an EnvironmentFile)
        // turns nothing on, and an empty value variable does not override the file or default.
        let c = run(BASE, &[("ZATT_JOIN", ""), ("ZATT_FORCE_NEW_CLUSTER", "")]).unwrap();
        assert!(!c.join && !c.force_new_cluster);
        let c = run(
            BASE,
            &[("ZATT_HEARTBEAT_INTERVAL", ""), ("ZATT_TLS_CERT", "")],
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
        assert!(c.tls_cert.is_none());
        let c = run(BASE, &[("ZATT_FORCE_NEW_CLUSTER", "yes")]).unwrap();
        assert!(c.force_new_cluster);
        // An empty switch value reaching the parser (not from the environment) is refused.
        assert!(parse_switch("join", "").is_err());
    }

    #[test]
    fn an_environment_lookup_error_is_reported() {
        // Goal: what `process_env` reports (a value that is not UTF-8) stops the parse, exit 2,
        // naming the variable.
        let env = |k: &str| -> Result<Option<String>, ConfigError> {
            if k == "ZATT_DATA_DIR" {
                Err(ConfigError::usage(
                    "environment variable ZATT_DATA_DIR is bad",
                ))
            } else {
                Ok(None)
            }
        };
        let e = parse_args_with(&args("--id 1"), &env).unwrap_err();
        assert_eq!(e.exit_code, EXIT_USAGE);
        assert!(e.message.contains("ZATT_DATA_DIR"), "{}", e.message);
    }

    #[test]
    fn member_addresses_need_a_port_and_are_distinct_once_resolved() {
        // Goal: port 0 in --cluster or --listen (which would bind some other port than the
        // membership records) is refused; so are two members on one socket address however
        // it is written. --metrics-listen keeps port 0 (its port is logged).
        for (a, needle) in [
            ("--id 1 --cluster 1=127.0.0.1:0 --data-dir d", "port 0"),
            (
                "--id 1 --data-dir d --join --listen 127.0.0.1:0 --cluster-id 5",
                "port 0",
            ),
            (
                "--id 1 --cluster 1=localhost:21301,2=127.0.0.1:21301 --data-dir d",
                "appears twice",
            ),
            (
                "--id 1 --cluster 1=127.0.0.1:21301,2=127.0.0.1:21301 --data-dir d",
                "appears twice",
            ),
        ] {
            let e = run(a, &[]).unwrap_err();
            assert_eq!(e.exit_code, EXIT_USAGE, "{a}");
            assert!(e.message.contains(needle), "{a}: {}", e.message);
            assert!(e.message.contains("--cluster") || e.message.contains("--listen"));
        }
        let c = run(&format!("{BASE} --metrics-listen 127.0.0.1:0"), &[]).unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:0"));
        run(
            "--id 1 --cluster 1=127.0.0.1:21301,2=127.0.0.1:21302 --data-dir d",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn files_named_by_flags_are_regular_and_bounded() {
        // Goal: a device, a directory or a file over the limit is refused naming the flag, the
        // path and why, before anything is read; a file within the limit is read whole.
        let dir = std::env::temp_dir().join(format!("zatt-cfg-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for p in [Path::new("/dev/zero"), dir.as_path()] {
            let e = read_option_file("--config", p, 100).unwrap_err();
            assert!(e.contains("is not a regular file"), "{e}");
            assert!(e.contains(&format!("--config {}", p.display())), "{e}");
        }
        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_SECRET_FILE_BYTES + 1)
            .unwrap();
        let e = read_option_file("--cluster-secret-file", &big, MAX_SECRET_FILE_BYTES).unwrap_err();
        assert!(e.contains("larger than 64 KiB"), "{e}");
        let e = read_secret_file(&big).unwrap_err();
        assert_eq!(e.exit_code, EXIT_USAGE);
        let ok = dir.join("ok");
        std::fs::write(&ok, b"s3cret\r\n").unwrap();
        assert_eq!(read_option_file("--x", &ok, 8).unwrap(), b"s3cret\r\n");
        assert_eq!(read_secret_file(&ok).unwrap(), b"s3cret");
        assert!(read_option_file("--x", &ok, 7)
            .unwrap_err()
            .contains("larger than 7 bytes"));
        let e = read_option_file("--x", &dir.join("missing"), 8).unwrap_err();
        assert!(
            e.starts_with("cannot read --x ") && e.contains("missing"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The option names a help heading line starts with: `-V, --version` gives `-V --version`,
    /// `--id N  this server's...` gives `--id`.
    fn names_at_start(line: &str) -> String {
        line.split_whitespace()
            .take_while(|w| w.starts_with('-'))
            .map(|w| w.trim_end_matches(','))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn help_lists_exactly_the_flags_the_parser_accepts() {
        // Goal: every option getopts is given (read back from getopts' own listing, one row
        // per option, not from FLAGS) is in `--help`, with its short name if it has one, and
        // `--help` lists nothing the parser refuses. `-V, --version` was once left out.
        let rows = options().usage_with_format(|rows| rows.collect::<Vec<_>>().join("\0"));
        let accepted: BTreeSet<String> = rows
            .split('\0')
            .map(|row| names_at_start(row.lines().next().unwrap_or("")))
            .collect();
        let listed: BTreeSet<String> = usage()
            .lines()
            .filter(|l| l.starts_with("  -"))
            .map(names_at_start)
            .collect();
        assert!(accepted.contains("-V --version"), "{accepted:?}");
        assert_eq!(listed, accepted, "--help lists what the parser accepts");
        assert_eq!(listed.len(), FLAGS.len() + ACTIONS.len(), "one line each");
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let u = usage();
        for f in FLAGS {
            assert!(u.contains(&format!("--{}", f.name)), "{}", f.name);
            if let Some(d) = f.default {
                assert!(u.contains(&format!("[default: {d}]")), "{}", f.name);
            }
        }
    }
}
