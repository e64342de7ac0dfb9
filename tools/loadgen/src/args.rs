//! The command line: parse flags (getopts) into a validated `Command`, or a `UsageError` that the
//! binary prints as one line and turns into exit code 2. Owns no I/O beyond resolving endpoint
//! names; it must not start any work. The flags are listed in `usage()`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// A bad command line: the message names the flag and what was wrong, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Get,
    Mix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    Linearizable,
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop after this many measured (post-warm-up) completions.
    Total(u64),
    /// Stop after this long of measurement (after the warm-up).
    Duration(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub endpoints: Vec<SocketAddr>,
    /// The names as given, for TLS server names and messages.
    pub endpoint_names: Vec<String>,
    pub op: OpKind,
    /// Fraction of reads in `--op mix`.
    pub read_ratio: f64,
    pub consistency: ReadConsistency,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub stop: Stop,
    pub warmup: Duration,
    /// Closed-loop clients: each keeps `pipeline` requests in flight.
    pub clients: usize,
    pub conns: usize,
    pub pipeline: usize,
    /// Open loop: requests per second scheduled on a fixed timetable.
    pub rate: Option<f64>,
    pub threads: usize,
    pub format: Format,
    pub tls_ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// A request unanswered this long counts as a `timeout` error and frees its slot.
    pub timeout: Duration,
    /// Write every key of the key space once before the warm-up, so that gets find values.
    pub preload: bool,
    pub seed: u64,
    /// Print the per-second line on stderr.
    pub live: bool,
    /// Begin the load (after finding the leader and any preload) at this wall-clock time, ns
    /// since the Unix epoch, so that runs on several machines start together.
    pub start_at_unix_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub dir: PathBuf,
    pub format: Format,
    pub fsync_samples: usize,
    pub udp_samples: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverConfig {
    pub zattd: PathBuf,
    pub trials: usize,
    pub base_port: u16,
    pub data_dir: Option<PathBuf>,
    pub election_timeout: Option<String>,
    pub heartbeat_interval: Option<String>,
    /// Used to place the kill at a uniformly random phase of the leader's heartbeat cycle.
    pub heartbeat_for_phase: Duration,
    pub write_interval: Duration,
    pub trial_timeout: Duration,
    pub svg: Option<PathBuf>,
    pub format: Format,
    pub seed: u64,
    pub servers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<RunConfig>),
    Probe(ProbeConfig),
    Failover(Box<FailoverConfig>),
    /// Print each endpoint's Status (or only the leader's node id), for scripts.
    Status {
        endpoints: Vec<SocketAddr>,
        leader_id_only: bool,
    },
    /// Combine the JSON summaries of several runs (`loadgen merge`).
    Merge {
        files: Vec<PathBuf>,
        format: Format,
    },
    Help(String),
    Version,
}

/// Parses `1s`, `250ms`, `40us`, `2m`, `1.5s`. A bare number is an error: units are required so a
/// reader of a script never guesses.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' has no unit (use ns, us, ms, s or m)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a number with a unit"))?;
    let scale_ns = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}' (use ns, us, ms, s or m)"
            ))
        }
    };
    let ns = n * scale_ns;
    if !ns.is_finite() || ns > 1e18 {
        return Err(format!("'{s}' is too long"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Parses `100`, `1KiB`, `4k`, `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult = match unit {
        "" | "B" => 1,
        "k" | "K" | "KiB" | "kB" => 1024,
        "M" | "MiB" | "MB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}' (use B, KiB or MiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, def: T) -> Result<T, UsageError> {
    match m.opt_str(name) {
        None => Ok(def),
        Some(v) => v
            .parse()
            .or_else(|_| err(format!("--{name}: expected a number, got '{v}'"))),
    }
}

fn positive(m: &getopts::Matches, name: &str, def: usize) -> Result<usize, UsageError> {
    let v: usize = num(m, name, def)?;
    if v == 0 {
        return err(format!("--{name}: must be at least 1"));
    }
    Ok(v)
}

fn duration(m: &getopts::Matches, name: &str, def: Duration) -> Result<Duration, UsageError> {
    match m.opt_str(name) {
        None => Ok(def),
        Some(v) => parse_duration(&v).or_else(|e| err(format!("--{name}: {e}"))),
    }
}

fn format(m: &getopts::Matches) -> Result<Format, UsageError> {
    match m.opt_str("format").as_deref() {
        None | Some("text") => Ok(Format::Text),
        Some("json") => Ok(Format::Json),
        Some(o) => err(format!("--format: expected text or json, got '{o}'")),
    }
}

fn seed(m: &getopts::Matches) -> Result<u64, UsageError> {
    let default = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    num(m, "seed", default)
}

fn run_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "endpoints",
        "servers, comma separated (default 127.0.0.1:5254)",
        "HOST:PORT,..",
    );
    o.optopt("", "op", "put, get or mix (default put)", "OP");
    o.optopt(
        "",
        "read-ratio",
        "fraction of gets in --op mix (default 0.9)",
        "F",
    );
    o.optopt(
        "",
        "consistency",
        "linearizable (default) or stale reads",
        "C",
    );
    o.optopt("", "key-size", "bytes per key (default 16)", "SIZE");
    o.optopt("", "val-size", "bytes per value (default 100)", "SIZE");
    o.optopt("", "key-space", "distinct keys (default 100000)", "N");
    o.optopt("", "total", "stop after N measured requests", "N");
    o.optopt(
        "",
        "duration",
        "stop after this long of measurement (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "warmup",
        "run this long before measuring (default 0s)",
        "DUR",
    );
    o.optopt("", "clients", "closed-loop clients (default 1)", "N");
    o.optopt(
        "",
        "conns",
        "connections the clients share (default: one per client, at most 256)",
        "M",
    );
    o.optopt(
        "",
        "pipeline",
        "requests each client keeps in flight (default 1)",
        "D",
    );
    o.optopt(
        "",
        "rate",
        "open loop: requests per second on a fixed timetable",
        "R",
    );
    o.optopt("", "threads", "driver threads (default 1)", "T");
    o.optopt("", "format", "text (default) or json", "FMT");
    o.optopt(
        "",
        "tls-ca",
        "connect with TLS, trusting this PEM CA",
        "FILE",
    );
    o.optopt(
        "",
        "tls-server-name",
        "name to verify (default: the endpoint's host)",
        "NAME",
    );
    o.optopt(
        "",
        "timeout",
        "count a request unanswered this long as an error (default 10s)",
        "DUR",
    );
    o.optflag("", "preload", "put every key once before the warm-up");
    o.optopt("", "seed", "random seed for keys and the op mix", "N");
    o.optopt(
        "",
        "start-at",
        "begin the load at this time, seconds since 1970 (e.g. $(( $(date +%s) + 5 ))), so runs on several machines start together",
        "UNIX_TIME",
    );
    o.optflag("q", "quiet", "no per-second line on stderr");
    o.optflag("h", "help", "this text");
    o.optflag("V", "version", "print the version");
    o
}

fn merge_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt("", "format", "text (default) or json", "FMT");
    o.optflag("h", "help", "this text");
    o
}

fn probe_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt("", "dir", "directory for the fsync test (default .)", "DIR");
    o.optopt("", "format", "text (default) or json", "FMT");
    o.optopt(
        "",
        "fsync-samples",
        "fdatasync calls to time (default 50)",
        "N",
    );
    o.optopt(
        "",
        "udp-samples",
        "loopback UDP round trips to time (default 2000)",
        "N",
    );
    o.optflag("h", "help", "this text");
    o
}

fn failover_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "zattd",
        "server binary (default: zattd next to loadgen)",
        "PATH",
    );
    o.optopt("", "trials", "leader kills (default 20)", "N");
    o.optopt("", "servers", "cluster size (default 3)", "N");
    o.optopt(
        "",
        "base-port",
        "first port; servers use base..base+N-1 (default 27100)",
        "P",
    );
    o.optopt(
        "",
        "data-dir",
        "parent of the servers' data directories (default: a fresh one in /tmp)",
        "DIR",
    );
    o.optopt("", "election-timeout", "passed to zattd", "DUR");
    o.optopt(
        "",
        "heartbeat-interval",
        "passed to zattd; kills land at a random phase of it",
        "DUR",
    );
    o.optopt(
        "",
        "write-interval",
        "the writer sends one put this often (default 1ms)",
        "DUR",
    );
    o.optopt(
        "",
        "trial-timeout",
        "give up on a trial after this long (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "svg",
        "write the CDF of both distributions here",
        "FILE",
    );
    o.optopt("", "format", "text (default) or json", "FMT");
    o.optopt("", "seed", "random seed for kill points", "N");
    o.optflag("h", "help", "this text");
    o
}

fn status_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "endpoints",
        "servers, comma separated (default 127.0.0.1:5254)",
        "HOST:PORT,..",
    );
    o.optflag(
        "",
        "leader-id",
        "print only the leader's node id (exit 1 when none)",
    );
    o.optflag("h", "help", "this text");
    o
}

fn parse_status(args: &[String]) -> Result<Command, UsageError> {
    let m = getopts_parse(&status_options(), args)?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    let (endpoints, _) = resolve(
        &m.opt_str("endpoints")
            .unwrap_or_else(|| "127.0.0.1:5254".into()),
    )?;
    Ok(Command::Status {
        endpoints,
        leader_id_only: m.opt_present("leader-id"),
    })
}

pub fn usage() -> String {
    let mut s = String::new();
    s.push_str(&run_options().usage(
        "Usage: loadgen [run] [options]      drive a Zatt cluster and report throughput and latency",
    ));
    s.push_str(&probe_options().usage(
        "\n       loadgen probe [options]       time fsync, loopback UDP and read the load average",
    ));
    s.push_str(&status_options().usage(
        "\n       loadgen status [options]      each endpoint's role, term, leader and indexes",
    ));
    s.push_str(&failover_options().usage(
        "\n       loadgen failover [options]    kill the leader repeatedly and time the recovery",
    ));
    s.push_str(&merge_options().usage(
        "\n       loadgen merge [options] FILE...\n                                     combine runs' --format json summaries (from several machines) into one",
    ));
    s.push_str("\n       loadgen --version\n");
    s
}

/// `loadgen --version`'s line.
pub fn version() -> String {
    format!("loadgen {}\n", env!("CARGO_PKG_VERSION"))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    match args.first().map(String::as_str) {
        Some("probe") => parse_probe(&args[1..]),
        Some("failover") => parse_failover(&args[1..]),
        Some("run") => parse_run(&args[1..]),
        Some("status") => parse_status(&args[1..]),
        Some("merge") => parse_merge(&args[1..]),
        Some("help") => Ok(Command::Help(usage())),
        _ => parse_run(args),
    }
}

fn getopts_parse(o: &getopts::Options, args: &[String]) -> Result<getopts::Matches, UsageError> {
    let m = o.parse(args).map_err(|e| UsageError(e.to_string()))?;
    if let Some(extra) = m.free.first() {
        return err(format!("unexpected argument '{extra}'"));
    }
    Ok(m)
}

fn resolve(list: &str) -> Result<(Vec<SocketAddr>, Vec<String>), UsageError> {
    let mut addrs = Vec::new();
    let mut names = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = part
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| {
                UsageError(format!(
                    "--endpoints: cannot resolve '{part}' (want HOST:PORT)"
                ))
            })?;
        addrs.push(addr);
        names.push(part.to_string());
    }
    if addrs.is_empty() {
        return err("--endpoints: no endpoint given");
    }
    Ok((addrs, names))
}

/// Parses `--start-at`: seconds since the Unix epoch, a fraction allowed, at most a day ahead of
/// `now_ns` (a time in milliseconds would be decades away: refused rather than waited for).
pub fn parse_start_at(s: &str, now_ns: u64) -> Result<u64, String> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(format!(
            "'{s}' is not a time in seconds since 1970 (e.g. 1767225600 or 1767225600.5)"
        ));
    }
    let secs: u64 = whole
        .parse()
        .map_err(|_| format!("'{s}' is too far in the future"))?;
    let frac_ns: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
    let ns = secs
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(|| format!("'{s}' is too far in the future"))?;
    if ns > now_ns.saturating_add(86_400 * 1_000_000_000) {
        return Err(format!(
            "'{s}' is more than a day from now (it takes seconds since 1970, not milliseconds)"
        ));
    }
    Ok(ns)
}

fn parse_merge(args: &[String]) -> Result<Command, UsageError> {
    let m = merge_options()
        .parse(args)
        .map_err(|e| UsageError(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    if m.free.is_empty() {
        return err("merge: name at least one JSON summary file (from loadgen --format json)");
    }
    Ok(Command::Merge {
        files: m.free.iter().map(PathBuf::from).collect(),
        format: format(&m)?,
    })
}

pub fn parse_run(args: &[String]) -> Result<Command, UsageError> {
    let m = getopts_parse(&run_options(), args)?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    if m.opt_present("version") {
        return Ok(Command::Version);
    }
    let (endpoints, endpoint_names) = resolve(
        &m.opt_str("endpoints")
            .unwrap_or_else(|| "127.0.0.1:5254".into()),
    )?;
    let op = match m.opt_str("op").as_deref() {
        None | Some("put") => OpKind::Put,
        Some("get") => OpKind::Get,
        Some("mix") => OpKind::Mix,
        Some(o) => return err(format!("--op: expected put, get or mix, got '{o}'")),
    };
    let read_ratio: f64 = num(&m, "read-ratio", 0.9)?;
    if !(0.0..=1.0).contains(&read_ratio) {
        return err(format!(
            "--read-ratio: must be between 0 and 1, got {read_ratio}"
        ));
    }
    if m.opt_present("read-ratio") && op != OpKind::Mix {
        return err("--read-ratio: only meaningful with --op mix");
    }
    let consistency = match m.opt_str("consistency").as_deref() {
        None | Some("linearizable") => ReadConsistency::Linearizable,
        Some("stale") => ReadConsistency::Stale,
        Some(o) => {
            return err(format!(
                "--consistency: expected linearizable or stale, got '{o}'"
            ))
        }
    };
    let size = |name: &str, def: usize| -> Result<usize, UsageError> {
        match m.opt_str(name) {
            None => Ok(def),
            Some(v) => parse_size(&v).or_else(|e| err(format!("--{name}: {e}"))),
        }
    };
    let key_size = size("key-size", 16)?;
    if !(1..=64 * 1024).contains(&key_size) {
        return err(format!(
            "--key-size: must be between 1 and 65536 bytes, got {key_size}"
        ));
    }
    let val_size = size("val-size", 100)?;
    if val_size > 64 * 1024 * 1024 {
        return err(format!("--val-size: at most 64 MiB, got {val_size}"));
    }
    let key_space: u64 = num(&m, "key-space", 100_000u64)?;
    if key_space == 0 {
        return err("--key-space: must be at least 1");
    }
    // A key must be long enough to hold every distinct number of the key space.
    let digits = key_space.to_string().len();
    if key_size < digits.min(20) {
        return err(format!(
            "--key-size: {key_size} bytes cannot hold {key_space} distinct keys (need {digits})"
        ));
    }
    let stop = match (m.opt_str("total"), m.opt_str("duration")) {
        (Some(_), Some(_)) => return err("--total and --duration: give one, not both"),
        (Some(_), None) => {
            let n: u64 = num(&m, "total", 0u64)?;
            if n == 0 {
                return err("--total: must be at least 1");
            }
            Stop::Total(n)
        }
        (None, _) => {
            let d = duration(&m, "duration", Duration::from_secs(10))?;
            if d.is_zero() {
                return err("--duration: must be longer than 0");
            }
            Stop::Duration(d)
        }
    };
    let warmup = duration(&m, "warmup", Duration::ZERO)?;
    let clients = positive(&m, "clients", 1)?;
    let conns = positive(&m, "conns", clients.min(256))?;
    if conns > clients {
        return err(format!(
            "--conns: {conns} connections for {clients} clients; each connection needs a client"
        ));
    }
    let pipeline = positive(&m, "pipeline", 1)?;
    if clients.saturating_mul(pipeline) > 1 << 20 {
        return err("--clients × --pipeline: at most 1048576 requests in flight");
    }
    let rate = match m.opt_str("rate") {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() && r <= 1e8 => Some(r),
            _ => {
                return err(format!(
                    "--rate: expected requests per second above 0, got '{v}'"
                ))
            }
        },
    };
    let threads = positive(&m, "threads", 1)?;
    if threads > conns {
        return err(format!(
            "--threads: {threads} threads for {conns} connections; each thread needs one"
        ));
    }
    let timeout = duration(&m, "timeout", Duration::from_secs(10))?;
    if timeout.is_zero() {
        return err("--timeout: must be longer than 0");
    }
    let tls_ca = m.opt_str("tls-ca").map(PathBuf::from);
    let tls_server_name = m.opt_str("tls-server-name");
    if tls_server_name.is_some() && tls_ca.is_none() {
        return err("--tls-server-name: only meaningful with --tls-ca");
    }
    let start_at_unix_ns = match m.opt_str("start-at") {
        None => None,
        Some(v) => Some(
            parse_start_at(&v, crate::report::unix_now_ns())
                .or_else(|e| err(format!("--start-at: {e}")))?,
        ),
    };
    Ok(Command::Run(Box::new(RunConfig {
        endpoints,
        endpoint_names,
        op,
        read_ratio: if op == OpKind::Mix {
            read_ratio
        } else if op == OpKind::Get {
            1.0
        } else {
            0.0
        },
        consistency,
        key_size,
        val_size,
        key_space,
        stop,
        warmup,
        clients,
        conns,
        pipeline,
        rate,
        threads,
        format: format(&m)?,
        tls_ca,
        tls_server_name,
        timeout,
        preload: m.opt_present("preload"),
        seed: seed(&m)?,
        live: !m.opt_present("quiet"),
        start_at_unix_ns,
    })))
}

fn parse_probe(args: &[String]) -> Result<Command, UsageError> {
    let m = getopts_parse(&probe_options(), args)?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    Ok(Command::Probe(ProbeConfig {
        dir: PathBuf::from(m.opt_str("dir").unwrap_or_else(|| ".".into())),
        format: format(&m)?,
        fsync_samples: positive(&m, "fsync-samples", 50)?,
        udp_samples: positive(&m, "udp-samples", 2000)?,
    }))
}

fn parse_failover(args: &[String]) -> Result<Command, UsageError> {
    let m = getopts_parse(&failover_options(), args)?;
    if m.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    let zattd = match m.opt_str("zattd") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("zattd")))
            .unwrap_or_else(|| PathBuf::from("zattd")),
    };
    let servers = positive(&m, "servers", 3)?;
    if servers < 3 || servers % 2 == 0 || servers > 9 {
        return err(format!("--servers: expected 3, 5, 7 or 9, got {servers}"));
    }
    let base_port: u16 = num(&m, "base-port", 27100u16)?;
    if base_port < 1024 || base_port as usize + servers > 65535 {
        return err(format!(
            "--base-port: {base_port} leaves no room for {servers} ports above 1023"
        ));
    }
    let check_dur = |name: &str| -> Result<Option<String>, UsageError> {
        match m.opt_str(name) {
            None => Ok(None),
            Some(v) => match parse_duration(&v) {
                Ok(_) => Ok(Some(v)),
                Err(e) => err(format!("--{name}: {e}")),
            },
        }
    };
    let election_timeout = check_dur("election-timeout")?;
    let heartbeat_interval = check_dur("heartbeat-interval")?;
    let heartbeat_for_phase = heartbeat_interval
        .as_deref()
        .and_then(|h| parse_duration(h).ok())
        .unwrap_or(Duration::from_millis(50));
    let write_interval = duration(&m, "write-interval", Duration::from_millis(1))?;
    if write_interval.is_zero() {
        return err("--write-interval: must be longer than 0");
    }
    let trial_timeout = duration(&m, "trial-timeout", Duration::from_secs(10))?;
    Ok(Command::Failover(Box::new(FailoverConfig {
        zattd,
        trials: positive(&m, "trials", 20)?,
        base_port,
        data_dir: m.opt_str("data-dir").map(PathBuf::from),
        election_timeout,
        heartbeat_interval,
        heartbeat_for_phase,
        write_interval,
        trial_timeout,
        svg: m.opt_str("svg").map(PathBuf::from),
        format: format(&m)?,
        seed: seed(&m)?,
        servers,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("40us"), Ok(Duration::from_micros(40)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn start_at_takes_seconds_since_1970() {
        let now = 1_767_225_600 * 1_000_000_000;
        assert_eq!(parse_start_at("1767225605", now), Ok(now + 5_000_000_000));
        assert_eq!(parse_start_at("1767225600.25", now), Ok(now + 250_000_000));
        assert_eq!(parse_start_at("1767225000", now), Ok(now - 600_000_000_000));
        for bad in [
            "",
            "soon",
            "-5",
            "1e9",
            ".5",
            "1.0000000001",
            "1767225600000",
        ] {
            assert!(parse_start_at(bad, now).is_err(), "{bad}");
        }
        assert!(parse_start_at("99999999999999999999999", now).is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert!(parse_size("1x").is_err());
    }
}
