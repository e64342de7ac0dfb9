//! The `zatt` command line: argument parsing (by hand, over bytes: keys, values and paths need
//! not be UTF-8), one function per subcommand, text or JSON output, per-command help, and exit
//! codes (0 success, 1 runtime error, 2 usage error). `src/bin/zatt.rs` only calls [`main`];
//! everything here is reachable from tests through [`run`].
//!
//! Must not: panic on any input, print part of a result (a command prints its whole result or
//! only an error), or run past `--timeout`. Talks to the cluster only through `crate::client`;
//! `zatt dev` lives in `dev`. Read `README.md` ("The zatt command line") for the user's guide.

pub mod dev;
mod json;
mod snapshot;
mod watch;

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::{
    Client, ClientConfig, Consistency, Error, ErrorKind, Escaped, Expect, KeyValue, MemberInfo,
    ScanOptions, Status, TlsConfig, DEV_ENDPOINTS,
};
use crate::config::parse_duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

const DEFAULT_TIMEOUT: &str = "5s";
/// The largest value read from `--file` or standard input: the client's own frame limit (the
/// server's, 1 MiB by default, is smaller and answers `TooLarge` itself).
const MAX_VALUE_BYTES: u64 = 32 << 20;

const USAGE: &str = "\
Usage: zatt [OPTIONS] COMMAND [ARGS]

Talks to a Zatt cluster, or runs a local one (zatt dev).

Commands:
  put KEY VALUE | KEY --file FILE | KEY -
                                   set KEY (to VALUE, FILE's bytes, or standard input)
  get KEY [--stale]                print KEY's value; exit 1 if absent
  del KEY                          delete KEY
  cas KEY EXPECTED NEW             set KEY to NEW if it holds EXPECTED; exit 1 if not
      (--absent instead of EXPECTED: expect KEY absent; --delete instead of NEW: delete it)
  scan [PREFIX] [--limit N]        the keys starting with PREFIX, in byte order (the first
                                   N, N from 1)
  dump                             every key and value
  watch PREFIX [--from REV] [--count N]
                                   print each change under PREFIX as it is made, until Ctrl-C
  status [--leader] [--field NAME] a server's status (the first reachable, or the leader)
  members                          the cluster's members
  member add ID HOST:PORT [--learner]
  member promote ID
  member remove ID
  transfer-leader [ID]             hand leadership to ID (or the best-placed voter)
  snapshot save FILE               save a consistent snapshot from the leader to FILE (a
                                   backup: zattd --restore FILE starts a new cluster from it)
  dev [--nodes N] [--dir DIR] [--base-port P] [--remove-others]
                                   run a local cluster until Ctrl-C
  help [COMMAND]                   this help, or a command's

Options (before or after the command; each also from the environment variable shown):
  --endpoints HOST:PORT,...        servers to contact [ZATT_ENDPOINTS]
                                   (default 127.0.0.1:5254,127.0.0.1:5255,127.0.0.1:5256)
  --timeout DUR                    the whole command's time limit, retries included
                                   [ZATT_TIMEOUT] (default 5s; units us, ms, s, m)
  --tls-ca FILE                    speak TLS, trusting the CA certificates in FILE (PEM)
                                   [ZATT_TLS_CA]
  --cert FILE, --key FILE          present this client certificate and key (PEM; with
                                   --tls-ca) [ZATT_CERT, ZATT_KEY]
  --output text|json               output format [ZATT_OUTPUT] (default text)
  -h, --help                       this help (after a command: that command's help)
  -V, --version                    print the version

Text output: get prints the value's exact bytes (and a newline on a terminal); scan and dump
print KEY<TAB>VALUE lines with \\\\, \\t, \\n, \\r and \\xHH escapes (see zatt scan --help).
A value that starts with '-' goes after '--': zatt put KEY -- -1
Exit codes: 0 success, 1 runtime error (or get of an absent key), 2 usage error (also a file
named by --tls-ca, --cert, --key or put --file that cannot be read or used).
";

/// One command's help: what `zatt help NAME` and `zatt NAME --help` print.
struct CommandHelp {
    name: &'static str,
    text: &'static str,
}

const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "put",
        text: "\
Usage: zatt put KEY VALUE
       zatt put KEY --file FILE
       zatt put KEY -

Sets KEY to VALUE, to the bytes of FILE, or to everything on standard input ('-'), byte for
byte (use --file or '-' for values too large for an argument, or with any bytes at all).
A VALUE that starts with '-' goes after '--': zatt put counter -- -1
Prints OK (JSON: {\"ok\":true,\"revision\":N}).
",
    },
    CommandHelp {
        name: "get",
        text: "\
Usage: zatt get KEY [--stale]

Writes KEY's value to standard output, its exact bytes (followed by a newline only when
standard output is a terminal), and exits 0; prints nothing and exits 1 when KEY is absent.
The read is linearizable: it reflects every write acknowledged before it.
  --stale    read from the addressed server without a round through the leader (it may be
             behind; the JSON output's applied_index says how far it had got)
JSON: {\"key\":..,\"value\":..,\"revision\":N,\"applied_index\":N}, or null (exit 1) when absent.
",
    },
    CommandHelp {
        name: "del",
        text: "\
Usage: zatt del KEY

Deletes KEY. Prints deleted, or absent if it was not there (JSON: {\"ok\":true,\"existed\":B}).
",
    },
    CommandHelp {
        name: "cas",
        text: "\
Usage: zatt cas KEY EXPECTED NEW
       zatt cas KEY --absent NEW
       zatt cas KEY EXPECTED --delete

Compare-and-swap: sets KEY to NEW only if it holds EXPECTED (--absent: only if KEY is absent;
--delete: deletes KEY instead of setting it). Prints OK; when the condition does not hold,
changes nothing, names the current value on standard error and exits 1 (JSON:
{\"ok\":false,\"current\":{\"value\":..,\"revision\":N}} or {\"ok\":false,\"current\":null}).
",
    },
    CommandHelp {
        name: "scan",
        text: "\
Usage: zatt scan [PREFIX] [--limit N]

Lists the keys starting with PREFIX (all keys without one), in byte order: all of them, or
with --limit N (N from 1) the first N.
Text: one KEY<TAB>VALUE line per key. So that a line is unambiguous whatever the bytes, keys
and values are escaped: a backslash is written \\\\, tab \\t, newline \\n, carriage return \\r,
other control bytes and bytes that are not valid UTF-8 \\xHH (two hex digits), non-ASCII
control characters \\u{HH}; everything else is written as it is.
JSON: an array of {\"key\":..,\"value\":..,\"revision\":N}; a key or value that is not UTF-8 is
an object {\"base64\":\"...\"} instead of a string.
",
    },
    CommandHelp {
        name: "dump",
        text: "\
Usage: zatt dump

Lists every key and value, as zatt scan does (see zatt scan --help for the output).
",
    },
    CommandHelp {
        name: "watch",
        text: "\
Usage: zatt watch PREFIX [--from REV] [--count N]

Prints each change to the keys starting with PREFIX ('' for every key) as the cluster makes
it, in revision order, one line each, until Ctrl-C (exit 0). Text:
  REVISION<TAB>put<TAB>KEY<TAB>VALUE
  REVISION<TAB>delete<TAB>KEY
with keys and values escaped as in zatt scan (see zatt scan --help). JSON, one object a line:
  {\"type\":\"put\",\"key\":..,\"value\":..,\"revision\":N}
  {\"type\":\"delete\",\"key\":..,\"revision\":N}
A change is a key set (put, cas) or a key that existed removed (del, cas --delete); a write
that changed nothing prints nothing. When its server goes away the watch resumes on another,
from the revision after the last line printed: no change is missed or printed twice.
  --from REV   start at revision REV (1: every change the servers still keep); without it,
               only changes made after the command starts. If REV is older than what the
               servers keep (zattd --watch-history-changes), zatt says so and exits 1.
  --count N    exit 0 after printing N changes (e.g. wait for the next change: --count 1).
--timeout bounds starting, and each resumption on another server.
",
    },
    CommandHelp {
        name: "status",
        text: "\
Usage: zatt status [--leader] [--field NAME]

Prints the status of the first reachable server of --endpoints (--leader: of the leader):
id, cluster id, pid, role, term, leader, commit/applied/last index, members, peers (leader
only), keys, sessions, WAL bytes, disk space and its alarm, fsync latency, dropped datagrams.
  --leader        ask the leader (found from the addressed server's view)
  --field NAME    print only this field's value; exit 1 if it has none (no leader known, no
                  pid reported). NAME: id, cluster_id, pid, role, term, leader, leader_addr,
                  commit_index, applied_index, last_index, keys, sessions, wal_bytes,
                  fsync_p50_us, fsync_p99_us, disk_free_bytes, disk_min_free_bytes,
                  disk_alarm (1 when raised). E.g. kill -9 $(zatt status --leader --field pid)
",
    },
    CommandHelp {
        name: "members",
        text: "\
Usage: zatt members

The cluster's members as the leader knows them: ID<TAB>ADDR<TAB>voter|learner lines
(JSON: an array of {\"id\":N,\"addr\":..,\"role\":..}).
",
    },
    CommandHelp {
        name: "member",
        text: "\
Usage: zatt member add ID HOST:PORT [--learner]
       zatt member promote ID
       zatt member remove ID

add: adds server ID, started with `zattd --id ID --join --listen HOST:PORT ...`; the leader
makes it a voter once it has caught up and answers then (within --timeout). --learner: add it
as a non-voting learner, to promote later.
promote: makes learner ID a voter (refused until it has caught up).
remove: removes server ID (it keeps running until stopped).
",
    },
    CommandHelp {
        name: "transfer-leader",
        text: "\
Usage: zatt transfer-leader [ID]

Hands leadership to voter ID, or to the most caught-up voter.
",
    },
    CommandHelp {
        name: "snapshot",
        text: "\
Usage: zatt snapshot save FILE

Takes a consistent snapshot of the whole dictionary on the leader (it holds every write
acknowledged before the command started) and streams it into FILE, with the log index it
stands for, its term, the membership and the cluster id, checked against the leader's
checksum. FILE appears only once complete (it is written as FILE.tmp.PID.N first, then
renamed over FILE); FILE must be a regular file or not exist yet (a symbolic link, device or
FIFO is refused). Prints what was
saved (JSON: {\"ok\":true,\"file\":..,\"index\":N,\"term\":N,\"size\":N,\"cluster_id\":N}).
Start a new cluster from it with zattd --restore FILE (see the README, \"Backup and restore\").
",
    },
    CommandHelp {
        name: "dev",
        text: "\
Usage: zatt dev [--nodes N] [--dir DIR] [--base-port P] [--remove-others]

Runs a local cluster of N zattd servers (default 3, at most 9) on 127.0.0.1 ports P, P+1, ...
(default 5254), with data and logs in DIR (default ./zatt-dev), until Ctrl-C. Run again with
the same DIR to get the same data back. Servers added by hand (zatt member add) are named at
start; --remove-others removes them from the cluster once a leader is elected.
",
    },
    CommandHelp {
        name: "help",
        text: "\
Usage: zatt help [COMMAND]

Prints the overview, or COMMAND's help (as zatt COMMAND --help does).
",
    },
];

fn command_help(name: &str) -> Option<&'static str> {
    let name = if name == "delete" { "del" } else { name };
    COMMANDS.iter().find(|c| c.name == name).map(|c| c.text)
}

/// What a run may use besides its arguments and output streams; tests give their own.
pub struct Env<'a> {
    /// The environment (`ZATT_ENDPOINTS`, ...).
    pub vars: &'a dyn Fn(&str) -> Option<OsString>,
    /// Where `zatt put KEY -` reads the value.
    pub stdin: &'a mut dyn Read,
    /// Whether standard output is a terminal (a newline then follows `get`'s value).
    pub stdout_is_tty: bool,
}

/// Runs the command line as a process: real arguments (as bytes), environment, standard
/// streams; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // SAFETY: isatty only inspects a file descriptor number.
    let stdout_is_tty = unsafe { libc::isatty(1) } == 1;
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let vars = |k: &str| std::env::var_os(k);
    let mut env = Env {
        vars: &vars,
        stdin: &mut stdin,
        stdout_is_tty,
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(&args, &mut env, &mut stdout.lock(), &mut stderr.lock())
}

/// Standard output as `run` hands it to every command: it remembers the first failure to write
/// (or flush), so that the exit code tells it. Without it, `zatt dump > backup` on a full disk
/// exited 0 with a short file and nothing said. After a failure every write fails the same way
/// without touching the stream again, so the failure is reported once.
struct CheckedOut<'a> {
    inner: &'a mut dyn Write,
    failed: Option<std::io::Error>,
}

impl CheckedOut<'_> {
    fn check<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if e.kind() != std::io::ErrorKind::Interrupted && self.failed.is_none() {
                self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        }
        r
    }

    fn earlier_failure(&self) -> std::io::Result<()> {
        match &self.failed {
            Some(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }
}

impl Write for CheckedOut<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.earlier_failure()?;
        let r = self.inner.write(buf);
        self.check(r)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.earlier_failure()?;
        let r = self.inner.write_all(buf);
        self.check(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.earlier_failure()?;
        let r = self.inner.flush();
        self.check(r)
    }
}

/// Runs the command line with `args` (without the program name); returns the exit code.
///
/// Output that cannot be written (a full disk, an I/O error) is a failure: one line on `err`
/// naming it, exit 1. A reader that went away (a broken pipe: `zatt dump | head -1`) is not:
/// nothing more is written and the command's own exit code stands, as with other tools.
pub fn run(args: &[OsString], env: &mut Env<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut out = CheckedOut {
        inner: out,
        failed: None,
    };
    let code = run_unchecked(args, env, &mut out, err);
    let _ = out.flush();
    match out.failed {
        None => code,
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Some(e) => {
            let _ = writeln!(err, "zatt: cannot write the output: {e}");
            EXIT_RUNTIME
        }
    }
}

fn run_unchecked(
    args: &[OsString],
    env: &mut Env<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let code = match parse(args, env.vars) {
        Ok(Parsed::Help(text)) => {
            let _ = out.write_all(text.as_bytes());
            EXIT_OK
        }
        Ok(Parsed::Version) => {
            let _ = writeln!(out, "zatt {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Ok(Parsed::Run(global, cmd)) => execute(&global, cmd, env, out, err),
        Err(usage) => {
            let _ = writeln!(err, "zatt: {usage}");
            EXIT_USAGE
        }
    };
    // `run` flushes, and checks what was written.
    code
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Debug)]
struct Global {
    endpoints: Vec<String>,
    timeout: Duration,
    tls_ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    output: Output,
}

/// Where `put` takes its value from.
#[derive(Debug, PartialEq)]
enum Value {
    Arg(Vec<u8>),
    File(PathBuf),
    Stdin,
}

#[derive(Debug, PartialEq)]
enum Command {
    Put {
        key: Vec<u8>,
        value: Value,
    },
    Get {
        key: Vec<u8>,
        stale: bool,
    },
    Del {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expect: Expect,
        new: Option<Vec<u8>>,
    },
    Scan {
        prefix: Vec<u8>,
        limit: Option<u64>,
    },
    Dump,
    Status {
        leader: bool,
        field: Option<&'static str>,
    },
    Members,
    MemberAdd {
        id: u64,
        addr: String,
        learner: bool,
    },
    MemberPromote {
        id: u64,
    },
    MemberRemove {
        id: u64,
    },
    TransferLeader {
        to: Option<u64>,
    },
    SnapshotSave {
        file: PathBuf,
    },
    Watch {
        prefix: Vec<u8>,
        from: Option<u64>,
        count: Option<u64>,
    },
    Dev(dev::DevOptions),
}

#[derive(Debug)]
enum Parsed {
    Help(String),
    Version,
    Run(Global, Command),
}

/// The options that apply to every command and take a value.
const GLOBAL_VALUED: [&str; 6] = ["endpoints", "timeout", "tls-ca", "cert", "key", "output"];

/// An argument as text, for names and numbers (which must be UTF-8); shown escaped otherwise.
fn text(what: &str, a: &OsStr) -> Result<String, String> {
    a.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: {:?} is not UTF-8 text", Escaped(a.as_bytes())))
}

/// The global options found anywhere before `--`, in order, and everything else.
struct Split {
    globals: Vec<(&'static str, OsString)>,
    help: bool,
    version: bool,
    rest: Vec<OsString>,
}

fn split_globals(args: &[OsString]) -> Result<Split, String> {
    let mut s = Split {
        globals: Vec::new(),
        help: false,
        version: false,
        rest: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"--" {
            s.rest.push(a.clone());
            s.rest.extend(it.cloned());
            break;
        }
        if b == b"-h" || b == b"--help" {
            s.help = true;
            continue;
        }
        if b == b"-V" || b == b"--version" {
            s.version = true;
            continue;
        }
        if let Some(opt) = b.strip_prefix(b"--") {
            let (name, inline) = match opt.iter().position(|&c| c == b'=') {
                Some(i) => (&opt[..i], Some(OsStr::from_bytes(&opt[i + 1..]))),
                None => (opt, None),
            };
            if let Some(&g) = GLOBAL_VALUED.iter().find(|g| g.as_bytes() == name) {
                let v = match inline {
                    Some(v) => v.to_os_string(),
                    None => it
                        .next()
                        .ok_or_else(|| format!("--{g} needs a value (see zatt --help)"))?
                        .clone(),
                };
                s.globals.push((g, v));
                continue;
            }
        }
        s.rest.push(a.clone());
    }
    Ok(s)
}

/// Checks `HOST:PORT`: a port from 1 to 65535, a host name or IPv4 address, or an IPv6
/// address in brackets.
fn check_endpoint(what: &str, e: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{what}: {e:?} is not HOST:PORT ({why})"));
    let Some((host, port)) = e.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|c| c.is_ascii_digit()) => {}
        _ => return bad("the port must be a number from 1 to 65535"),
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
            _ => bad("not an IPv6 address in brackets"),
        };
    }
    if host.is_empty() {
        return bad("no host");
    }
    if host.contains(':') {
        return bad("write an IPv6 address in brackets, as [::1]:5254");
    }
    if !host
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
    {
        return bad("the host has characters no host name has");
    }
    Ok(())
}

fn parse(args: &[OsString], vars: &dyn Fn(&str) -> Option<OsString>) -> Result<Parsed, String> {
    let split = split_globals(args)?;
    let mut rest = split.rest.into_iter();
    let name = match rest.next() {
        None if split.help => return Ok(Parsed::Help(USAGE.into())),
        None if split.version => return Ok(Parsed::Version),
        None => return Err("no command given (see zatt --help)".into()),
        Some(n) => n,
    };
    let name = match name.to_str() {
        Some(n) if n.starts_with('-') && n.len() > 1 => {
            return Err(format!("unknown option {n:?} (see zatt --help)"))
        }
        Some(n) => n.to_string(),
        None => {
            return Err(format!(
                "unknown command {:?} (see zatt --help)",
                Escaped(name.as_bytes())
            ))
        }
    };
    let rest: Vec<OsString> = rest.collect();
    if name == "help" {
        return match rest.first() {
            None => Ok(Parsed::Help(USAGE.into())),
            Some(c) => {
                let c = text("help", c)?;
                command_help(&c)
                    .map(|t| Parsed::Help(t.into()))
                    .ok_or_else(|| format!("help: unknown command {c:?} (see zatt --help)"))
            }
        };
    }
    let Some(help) = command_help(&name) else {
        return Err(format!("unknown command {name:?} (see zatt --help)"));
    };
    if split.help {
        return Ok(Parsed::Help(help.into()));
    }
    if split.version {
        return Ok(Parsed::Version);
    }
    let cmd = parse_command(&name, &rest)
        .map_err(|e| format!("{e} (see zatt {} --help)", command_help_name(&name)))?;
    let global =
        parse_global(&split.globals, vars).map_err(|e| format!("{e} (see zatt --help)"))?;
    Ok(Parsed::Run(global, cmd))
}

fn command_help_name(name: &str) -> &str {
    if name == "delete" {
        "del"
    } else {
        name
    }
}

fn parse_global(
    given: &[(&'static str, OsString)],
    vars: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Global, String> {
    // The last flag wins, then the environment.
    let get = |name: &str| -> Option<(String, OsString)> {
        if let Some((_, v)) = given.iter().rev().find(|(n, _)| *n == name) {
            return Some((format!("--{name}"), v.clone()));
        }
        let var = format!("ZATT_{}", name.to_ascii_uppercase().replace('-', "_"));
        vars(&var).filter(|v| !v.is_empty()).map(|v| (var, v))
    };
    let endpoints: Vec<String> = match get("endpoints") {
        None => DEV_ENDPOINTS.iter().map(|e| e.to_string()).collect(),
        Some((what, v)) => {
            let list: Vec<String> = text(&what, &v)?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if list.is_empty() {
                return Err(format!("{what} needs at least one HOST:PORT"));
            }
            for e in &list {
                check_endpoint(&what, e)?;
            }
            list
        }
    };
    let timeout = match get("timeout") {
        None => parse_duration(DEFAULT_TIMEOUT).map_err(|e| format!("default timeout: {e}"))?,
        Some((what, v)) => {
            let t = parse_duration(&text(&what, &v)?).map_err(|e| format!("{what}: {e}"))?;
            if t.is_zero() {
                return Err(format!("{what} must be above zero"));
            }
            t
        }
    };
    let output = match get("output") {
        None => Output::Text,
        Some((what, v)) => match text(&what, &v)?.as_str() {
            "text" => Output::Text,
            "json" => Output::Json,
            other => return Err(format!("{what} must be text or json, not {other:?}")),
        },
    };
    let tls_ca = get("tls-ca").map(|(_, v)| PathBuf::from(v));
    let client_cert = match (get("cert"), get("key")) {
        (None, None) => None,
        (Some((_, c)), Some((_, k))) => Some((PathBuf::from(c), PathBuf::from(k))),
        (Some(_), None) => return Err("--cert needs --key (the certificate's private key)".into()),
        (None, Some(_)) => return Err("--key needs --cert".into()),
    };
    if client_cert.is_some() && tls_ca.is_none() {
        return Err("--cert and --key need --tls-ca (the CA that signed the servers)".into());
    }
    let global = Global {
        endpoints,
        timeout,
        tls_ca,
        client_cert,
        output,
    };
    Ok(global)
}

/// A subcommand's arguments: flags anywhere, positional arguments in order; after `--`
/// everything is positional.
struct SubArgs {
    flags: Vec<&'static str>,
    values: Vec<(&'static str, OsString)>,
    free: Vec<OsString>,
}

impl SubArgs {
    fn has(&self, f: &str) -> bool {
        self.flags.contains(&f)
    }
    fn value(&self, v: &str) -> Option<&OsString> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == v)
            .map(|(_, x)| x)
    }
}

fn sub(
    name: &str,
    args: &[OsString],
    flags: &[&'static str],
    valued: &[&'static str],
) -> Result<SubArgs, String> {
    let mut s = SubArgs {
        flags: Vec::new(),
        values: Vec::new(),
        free: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"--" {
            s.free.extend(it.cloned());
            break;
        }
        if let Some(opt) = b.strip_prefix(b"--") {
            let (oname, inline) = match opt.iter().position(|&c| c == b'=') {
                Some(i) => (&opt[..i], Some(&opt[i + 1..])),
                None => (opt, None),
            };
            if let Some(&f) = flags.iter().find(|f| f.as_bytes() == oname) {
                if inline.is_some() {
                    return Err(format!("{name}: --{f} takes no value"));
                }
                s.flags.push(f);
                continue;
            }
            if let Some(&v) = valued.iter().find(|v| v.as_bytes() == oname) {
                let val = match inline {
                    Some(x) => OsStr::from_bytes(x).to_os_string(),
                    None => it
                        .next()
                        .ok_or_else(|| format!("{name}: --{v} needs a value"))?
                        .clone(),
                };
                s.values.push((v, val));
                continue;
            }
        }
        if b.len() > 1 && b[0] == b'-' {
            return Err(format!(
                "{name}: unknown option {:?} (an argument that starts with '-' goes after '--')",
                Escaped(b)
            ));
        }
        s.free.push(a.clone());
    }
    Ok(s)
}

fn want(name: &str, free: &[OsString], n: usize, shape: &str) -> Result<(), String> {
    if free.len() != n {
        return Err(format!(
            "{name} takes {n} argument{} ({shape}), got {}",
            if n == 1 { "" } else { "s" },
            free.len()
        ));
    }
    Ok(())
}

fn bytes(a: &OsStr) -> Vec<u8> {
    a.as_bytes().to_vec()
}

fn parse_id(what: &str, a: &OsStr) -> Result<u64, String> {
    parse_positive(what, a, "a server id (a number from 1)")
}

/// A number from 1; else "WHAT: "ARG" is not NOUN".
fn parse_positive(what: &str, a: &OsStr, noun: &str) -> Result<u64, String> {
    let s = text(what, a)?;
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what}: {s:?} is not {noun}")),
    }
}

const STATUS_FIELDS: [&str; 18] = [
    "id",
    "cluster_id",
    "pid",
    "role",
    "term",
    "leader",
    "leader_addr",
    "commit_index",
    "applied_index",
    "last_index",
    "keys",
    "sessions",
    "wal_bytes",
    "fsync_p50_us",
    "fsync_p99_us",
    "disk_free_bytes",
    "disk_min_free_bytes",
    "disk_alarm",
];

fn parse_command(name: &str, args: &[OsString]) -> Result<Command, String> {
    Ok(match name {
        "put" => {
            let m = sub(name, args, &[], &["file"])?;
            match m.value("file") {
                Some(f) => {
                    want(name, &m.free, 1, "KEY with --file FILE")?;
                    Command::Put {
                        key: bytes(&m.free[0]),
                        value: Value::File(PathBuf::from(f)),
                    }
                }
                None => {
                    want(name, &m.free, 2, "KEY VALUE, KEY --file FILE, or KEY -")?;
                    let value = if m.free[1] == "-" {
                        Value::Stdin
                    } else {
                        Value::Arg(bytes(&m.free[1]))
                    };
                    Command::Put {
                        key: bytes(&m.free[0]),
                        value,
                    }
                }
            }
        }
        "get" => {
            let m = sub(name, args, &["stale"], &[])?;
            want(name, &m.free, 1, "KEY")?;
            Command::Get {
                key: bytes(&m.free[0]),
                stale: m.has("stale"),
            }
        }
        "del" | "delete" => {
            let m = sub(name, args, &[], &[])?;
            want(name, &m.free, 1, "KEY")?;
            Command::Del {
                key: bytes(&m.free[0]),
            }
        }
        "cas" => {
            let m = sub(name, args, &["absent", "delete"], &[])?;
            let absent = m.has("absent");
            let delete = m.has("delete");
            let n = 3 - absent as usize - delete as usize;
            let shape = match (absent, delete) {
                (false, false) => "KEY EXPECTED NEW",
                (true, false) => "KEY NEW with --absent",
                (false, true) => "KEY EXPECTED with --delete",
                (true, true) => "KEY with --absent --delete",
            };
            want(name, &m.free, n, shape)?;
            let mut it = m.free.iter().map(|a| bytes(a));
            let key = it.next().unwrap_or_default();
            let expect = if absent {
                Expect::Absent
            } else {
                Expect::Value(it.next().unwrap_or_default())
            };
            let new = if delete { None } else { it.next() };
            Command::Cas { key, expect, new }
        }
        "scan" => {
            let m = sub(name, args, &[], &["limit"])?;
            if m.free.len() > 1 {
                return Err("scan takes at most one argument (PREFIX)".into());
            }
            let limit = match m.value("limit") {
                None => None,
                Some(s) => {
                    let s = text("scan --limit", s)?;
                    match s.parse::<u64>() {
                        // "At most 0 keys" would list nothing and look like an empty
                        // dictionary; etcd's "0 means no limit" is what leaving it out does.
                        Ok(0) => {
                            return Err("scan --limit must be at least 1 (leave it out to list \
                                        every key)"
                                .into())
                        }
                        Ok(n) => Some(n),
                        Err(_) => return Err(format!("scan --limit: {s:?} is not a number")),
                    }
                }
            };
            Command::Scan {
                prefix: m.free.first().map(|a| bytes(a)).unwrap_or_default(),
                limit,
            }
        }
        "watch" => {
            let m = sub(name, args, &[], &["from", "count"])?;
            want(name, &m.free, 1, "PREFIX")?;
            let from = m
                .value("from")
                .map(|r| parse_positive("watch --from", r, "a revision (a number from 1)"))
                .transpose()?;
            let count = m
                .value("count")
                .map(|n| parse_positive("watch --count", n, "a number of changes (from 1)"))
                .transpose()?;
            Command::Watch {
                prefix: bytes(&m.free[0]),
                from,
                count,
            }
        }
        "dump" | "members" => {
            let m = sub(name, args, &[], &[])?;
            want(name, &m.free, 0, "none")?;
            if name == "dump" {
                Command::Dump
            } else {
                Command::Members
            }
        }
        "status" => {
            let m = sub(name, args, &["leader"], &["field"])?;
            want(name, &m.free, 0, "only flags")?;
            let field = match m.value("field") {
                None => None,
                Some(f) => {
                    let f = text("status --field", f)?;
                    Some(*STATUS_FIELDS.iter().find(|&&n| n == f).ok_or_else(|| {
                        format!(
                            "status --field: {f:?} is not one of {}",
                            STATUS_FIELDS.join(", ")
                        )
                    })?)
                }
            };
            Command::Status {
                leader: m.has("leader"),
                field,
            }
        }
        "member" => {
            let Some(action) = args.first() else {
                return Err("member needs add, promote or remove".into());
            };
            let rest = &args[1..];
            match action.to_str().unwrap_or("") {
                "add" => {
                    let m = sub("member add", rest, &["learner"], &[])?;
                    want("member add", &m.free, 2, "ID HOST:PORT")?;
                    let addr = text("member add", &m.free[1])?;
                    check_endpoint("member add", &addr)?;
                    Command::MemberAdd {
                        id: parse_id("member add", &m.free[0])?,
                        addr,
                        learner: m.has("learner"),
                    }
                }
                a @ ("promote" | "remove") => {
                    let what = format!("member {a}");
                    let m = sub(&what, rest, &[], &[])?;
                    want(&what, &m.free, 1, "ID")?;
                    let id = parse_id(&what, &m.free[0])?;
                    if a == "promote" {
                        Command::MemberPromote { id }
                    } else {
                        Command::MemberRemove { id }
                    }
                }
                _ => {
                    return Err(format!(
                        "member {:?}: expected add, promote or remove",
                        Escaped(action.as_bytes())
                    ))
                }
            }
        }
        "transfer-leader" => {
            let m = sub(name, args, &[], &[])?;
            if m.free.len() > 1 {
                return Err("transfer-leader takes at most one argument (ID)".into());
            }
            Command::TransferLeader {
                to: match m.free.first() {
                    None => None,
                    Some(s) => Some(parse_id(name, s)?),
                },
            }
        }
        "snapshot" => match args.first().and_then(|a| a.to_str()) {
            Some("save") => {
                let m = sub("snapshot save", &args[1..], &[], &[])?;
                want("snapshot save", &m.free, 1, "FILE")?;
                if m.free[0].is_empty() {
                    return Err("snapshot save: FILE is empty".into());
                }
                Command::SnapshotSave {
                    file: PathBuf::from(&m.free[0]),
                }
            }
            Some(other) => return Err(format!("snapshot {other:?}: expected save")),
            None if args.is_empty() => return Err("snapshot needs save".into()),
            None => return Err("snapshot: expected save".into()),
        },
        "dev" => {
            let m = sub(
                name,
                args,
                &["remove-others"],
                &["nodes", "dir", "base-port"],
            )?;
            want(name, &m.free, 0, "only flags")?;
            let mut o = dev::DevOptions::default();
            if let Some(n) = m.value("nodes") {
                let n = text("dev --nodes", n)?;
                o.nodes = match n.parse::<u16>() {
                    Ok(n) if (1..=dev::MAX_NODES).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "dev --nodes: {n:?} is not a number from 1 to {}",
                            dev::MAX_NODES
                        ))
                    }
                };
            }
            if let Some(d) = m.value("dir") {
                // An empty path would be the current directory: servers writing 1/ 2/ 3/ there.
                if d.is_empty() {
                    return Err("dev --dir: DIR is empty".into());
                }
                o.dir = PathBuf::from(d);
            }
            if let Some(p) = m.value("base-port") {
                let p = text("dev --base-port", p)?;
                o.base_port = match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(format!("dev --base-port: {p:?} is not a port number")),
                };
            }
            if o.base_port as u32 + o.nodes as u32 - 1 > u16::MAX as u32 {
                return Err("dev: --base-port too high for that many --nodes".into());
            }
            o.remove_others = m.has("remove-others");
            Command::Dev(o)
        }
        other => return Err(format!("unknown command {other:?}")),
    })
}

fn client_config(g: &Global) -> ClientConfig {
    ClientConfig {
        timeout: g.timeout,
        connect_timeout: g.timeout.min(Duration::from_secs(1)),
        request_timeout: g.timeout.min(Duration::from_secs(2)),
        tls: g.tls_ca.as_ref().map(|ca| TlsConfig {
            ca: ca.clone(),
            client_cert: g.client_cert.clone(),
            server_name: None,
        }),
        // A person at a terminal wants "connection refused" now, not after --timeout.
        wait_for_servers: false,
        ..ClientConfig::default()
    }
}

/// Why a command failed: the client's error, or the command line's own finding.
enum Failure {
    Client(Error),
    /// A complete message for stderr (exit 1).
    Said(String),
    /// A file named by an option (`put --file`) that cannot be used: a usage error, as a bad
    /// flag is (exit 2). A complete message for stderr.
    BadOptionFile(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Client(e)
    }
}

/// Whether a refused membership change may be accepted later without anything changing but
/// time (a change or transfer in progress, a learner catching up), from the server's reason.
pub(crate) fn conf_change_may_pass_later(why: &str) -> bool {
    [
        "not committed yet",
        "not caught up",
        "in progress",
        "did not catch up",
        "does not hold the removal",
    ]
    .iter()
    .any(|p| why.contains(p))
}

/// A duration as --timeout takes it, exactly: in the largest of s, ms, us and ns that writes
/// it as a whole number (1ns is not "0ms").
fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in [("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)] {
        if ns >= per && ns % per == 0 {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// One line on stderr saying what went wrong and what to do about it.
fn report(err: &mut dyn Write, g: &Global, f: &Failure) -> i32 {
    let e = match f {
        Failure::Said(msg) => {
            let _ = writeln!(err, "zatt: {msg}");
            return EXIT_RUNTIME;
        }
        Failure::BadOptionFile(msg) => {
            let _ = writeln!(err, "zatt: {msg}");
            return EXIT_USAGE;
        }
        Failure::Client(e) => e,
    };
    let endpoints = g.endpoints.join(",");
    let mut line = format!("zatt: {e}");
    let hint = match e {
        // Every endpoint refused (several reasons are joined with "; ").
        Error::Unavailable { reason, .. }
            if reason.ends_with("connection refused") && !reason.contains("; ") =>
        {
            format!(
                "no server listens there: check --endpoints ({endpoints}) or start a local \
                 cluster with `zatt dev`"
            )
        }
        Error::Unavailable { reason, .. } if reason.starts_with("cannot connect") => {
            format!("check --endpoints ({endpoints}) or start a local cluster with `zatt dev`")
        }
        Error::Unavailable { reason, .. } if reason.contains("--max-connections") => {
            "retry later, or raise the servers' --max-connections".into()
        }
        Error::Unavailable { reason, .. }
            if reason.starts_with("connections keep failing") && g.tls_ca.is_none() =>
        {
            "servers close the connection: if they speak TLS, pass --tls-ca FILE".into()
        }
        Error::Unavailable { .. } => {
            "check that a majority of servers is up (`zatt status`), or raise --timeout".into()
        }
        Error::Timeout { .. } => format!(
            "no answer within --timeout {}: check the servers (`zatt status`), or raise it",
            fmt_duration(g.timeout)
        ),
        Error::TooLarge { .. } => "send a smaller key or value".into(),
        // The client's only configuration errors here are files named by --tls-ca, --cert
        // and --key (the endpoints were checked when parsing).
        Error::Config(_) if g.client_cert.is_some() => "check --tls-ca, --cert and --key".into(),
        Error::Config(_) if g.tls_ca.is_some() => "check --tls-ca".into(),
        Error::Config(_) => "fix the option and retry".into(),
        Error::Protocol { what, .. } if what.contains("is not a Zatt server") => format!(
            "check that --endpoints ({endpoints}) name zattd servers{}",
            if g.tls_ca.is_none() {
                " (add --tls-ca if they speak TLS)"
            } else {
                ""
            }
        ),
        Error::Protocol { .. } if g.tls_ca.is_some() => {
            "check --tls-ca, --cert and --key, and that the servers run with --tls-cert".into()
        }
        Error::Protocol { .. } => {
            "check that --endpoints name zattd servers (add --tls-ca if they speak TLS)".into()
        }
        Error::SessionExpired { .. } => "check the value with `zatt get` before retrying".into(),
        Error::CasFailed { current } => {
            line = match current {
                None => "zatt: compare-and-swap failed: the key is absent".into(),
                Some((v, rev)) => {
                    let shown = Escaped(v).to_string();
                    let shown: String = shown.chars().take(80).collect();
                    format!(
                        "zatt: compare-and-swap failed: the key holds \"{shown}\" (revision {rev})"
                    )
                }
            };
            "read the current value with `zatt get` and retry".into()
        }
        Error::Server(ErrorKind::ConfChange(why)) => {
            line = format!("zatt: membership change refused: {why}");
            if conf_change_may_pass_later(why) {
                "retry once it has passed (`zatt members` shows the cluster)".into()
            } else {
                "`zatt members` shows the cluster as the leader knows it".into()
            }
        }
        _ => String::new(),
    };
    if !hint.is_empty() {
        let _ = write!(line, ": {hint}");
    }
    let _ = writeln!(err, "{line}");
    match e {
        // A file an option names that cannot be used is a usage error, as a bad flag is.
        Error::Config(_) => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    }
}

/// Reads a value from a file or standard input, refusing one larger than the client sends.
/// A `--file` that cannot be used is a usage error (exit 2); standard input failing is not.
fn read_value(source: Value, stdin: &mut dyn Read) -> Result<Vec<u8>, Failure> {
    match source {
        Value::Arg(v) => Ok(v),
        Value::File(p) => {
            let what = format!("--file {}", p.display());
            std::fs::File::open(&p)
                .map_err(|e| format!("cannot read {what}: {e}"))
                .and_then(|f| read_bounded(&what, f))
                .map_err(Failure::BadOptionFile)
        }
        Value::Stdin => read_bounded("standard input", stdin).map_err(Failure::Said),
    }
}

/// Everything `reader` (named `what`) holds, up to the most zatt sends.
fn read_bounded(what: &str, reader: impl Read) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    reader
        .take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut v)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if v.len() as u64 > MAX_VALUE_BYTES {
        return Err(format!(
            "the value from {what} is larger than {MAX_VALUE_BYTES} bytes, the most zatt sends"
        ));
    }
    Ok(v)
}

fn execute(
    g: &Global,
    cmd: Command,
    env: &mut Env<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    // Everything, connecting included, must end by this instant.
    let deadline = Instant::now() + g.timeout;
    let cmd = match cmd {
        Command::Dev(opts) => return dev::run(&opts, out, err),
        // A stream: printed as it comes, and it runs past --timeout.
        Command::Watch {
            prefix,
            from,
            count,
        } => return watch::run(g, prefix, from, count, out, err),
        Command::Put { key, value } => match read_value(value, env.stdin) {
            Ok(v) => Command::Put {
                key,
                value: Value::Arg(v),
            },
            Err(f) => return report(err, g, &f),
        },
        // A destination that cannot take the backup is said before the leader works for it.
        Command::SnapshotSave { file } => match snapshot::check_destination(&file) {
            Ok(()) => Command::SnapshotSave { file },
            Err(msg) => return report(err, g, &Failure::Said(msg)),
        },
        other => other,
    };
    let mut client = match Client::connect(&g.endpoints, client_config(g)) {
        Ok(c) => c,
        Err(e) => return report(err, g, &Failure::Client(e)),
    };
    client.set_deadline(Some(deadline));
    // The result goes to stdout only when complete: a failure prints nothing but its error.
    let mut buf = Vec::new();
    // A failure to write is remembered by `out` and turns into exit 1 in `run`.
    match execute_with(g, &mut client, cmd, &mut buf, env.stdout_is_tty) {
        Ok(code) => {
            let _ = out.write_all(&buf);
            code
        }
        Err(f) => {
            if let Failure::Client(Error::CasFailed { .. }) = f {
                // The JSON answer of a failed cas is a whole result of its own.
                let _ = out.write_all(&buf);
            }
            report(err, g, &f)
        }
    }
}

fn ok_line(g: &Global, out: &mut Vec<u8>, json_body: &str) {
    let _ = match g.output {
        Output::Text => writeln!(out, "OK"),
        Output::Json => writeln!(out, "{json_body}"),
    };
}

fn execute_with(
    g: &Global,
    client: &mut Client,
    cmd: Command,
    out: &mut Vec<u8>,
    stdout_is_tty: bool,
) -> Result<i32, Failure> {
    match cmd {
        Command::Put { key, value } => {
            let value = match value {
                Value::Arg(v) => v,
                // Read before connecting, in `execute`.
                _ => return Err(Failure::Said("internal: value not read".into())),
            };
            let rev = client.put(&key, &value)?;
            ok_line(g, out, &format!("{{\"ok\":true,\"revision\":{rev}}}"));
        }
        Command::Get { key, stale } => {
            let c = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let r = client.get_with(&key, c)?;
            let Some(value) = r.value else {
                if g.output == Output::Json {
                    out.extend_from_slice(b"null\n");
                }
                return Ok(EXIT_RUNTIME);
            };
            match g.output {
                Output::Text => {
                    out.extend_from_slice(&value);
                    if stdout_is_tty {
                        out.push(b'\n');
                    }
                }
                Output::Json => {
                    let mut s = String::from("{");
                    json::key(&mut s, "key");
                    json::bytes(&mut s, &key);
                    json::key(&mut s, "value");
                    json::bytes(&mut s, &value);
                    json::key(&mut s, "revision");
                    let _ = write!(s, "{}", r.revision);
                    json::key(&mut s, "applied_index");
                    let _ = write!(s, "{}", r.applied_index);
                    s.push('}');
                    let _ = writeln!(out, "{s}");
                }
            }
        }
        Command::Del { key } => {
            let existed = client.delete(&key)?;
            let _ = match g.output {
                Output::Text => writeln!(out, "{}", if existed { "deleted" } else { "absent" }),
                Output::Json => writeln!(out, "{{\"ok\":true,\"existed\":{existed}}}"),
            };
        }
        Command::Cas { key, expect, new } => match client.cas(&key, expect, new) {
            Ok(rev) => ok_line(g, out, &format!("{{\"ok\":true,\"revision\":{rev}}}")),
            Err(Error::CasFailed { current }) => {
                if g.output == Output::Json {
                    let mut s = String::from("{\"ok\":false,\"current\":");
                    match &current {
                        None => s.push_str("null"),
                        Some((v, rev)) => {
                            s.push('{');
                            json::key(&mut s, "value");
                            json::bytes(&mut s, v);
                            json::key(&mut s, "revision");
                            let _ = write!(s, "{rev}");
                            s.push('}');
                        }
                    }
                    s.push('}');
                    let _ = writeln!(out, "{s}");
                }
                return Err(Error::CasFailed { current }.into());
            }
            Err(e) => return Err(e.into()),
        },
        Command::Scan { prefix, limit } => {
            let opts = ScanOptions {
                prefix,
                limit,
                ..ScanOptions::default()
            };
            let items = client
                .scan_with(opts)
                .items()
                .collect::<Result<Vec<_>, _>>()?;
            print_items(g, out, &items);
        }
        Command::Dump => {
            let items = client.dump()?;
            print_items(g, out, &items);
        }
        Command::Status { leader, field } => {
            let s = if leader {
                client.leader_status()?
            } else {
                client.status()?
            };
            match field {
                None => {
                    let _ = match g.output {
                        Output::Text => out.write_all(status_text(&s).as_bytes()),
                        Output::Json => writeln!(out, "{}", status_json(&s)),
                    };
                }
                Some(name) => {
                    let Some(v) = status_field(&s, name) else {
                        return Err(Failure::Said(format!(
                            "status field {name} has no value (server {} reports none)",
                            s.id
                        )));
                    };
                    let _ = match (g.output, v) {
                        (Output::Json, FieldValue::Text(t)) => {
                            let mut j = String::new();
                            json::string(&mut j, &t);
                            writeln!(out, "{j}")
                        }
                        (_, FieldValue::Number(n)) => writeln!(out, "{n}"),
                        (Output::Text, FieldValue::Text(t)) => writeln!(out, "{t}"),
                    };
                }
            }
        }
        Command::Members => {
            let ms = client.members()?;
            out.extend_from_slice(members_output(g.output, &ms).as_bytes());
        }
        Command::MemberAdd { id, addr, learner } => {
            client.member_add(id, &addr, learner)?;
            ok_line(g, out, "{\"ok\":true}");
        }
        Command::MemberPromote { id } => {
            // The server refuses a voter or a stranger in words that read as "not yet"; say
            // what is the case instead.
            match client.members()?.iter().find(|m| m.id == id) {
                None => {
                    return Err(Failure::Said(format!(
                        "server {id} is not a member: add it with `zatt member add {id} HOST:PORT`"
                    )))
                }
                Some(m) if m.voter => {
                    return Err(Failure::Said(format!(
                        "server {id} is already a voter: there is nothing to promote"
                    )))
                }
                Some(_) => {}
            }
            client.member_promote(id)?;
            ok_line(g, out, "{\"ok\":true}");
        }
        Command::MemberRemove { id } => {
            client.member_remove(id)?;
            ok_line(g, out, "{\"ok\":true}");
        }
        Command::TransferLeader { to } => {
            client.transfer_leader(to)?;
            ok_line(g, out, "{\"ok\":true}");
        }
        Command::SnapshotSave { file } => snapshot::save(g, client, &file, out)?,
        Command::Dev(_) | Command::Watch { .. } => {
            return Err(Failure::Said(
                "internal: dev and watch run before connecting".into(),
            ))
        }
    }
    Ok(EXIT_OK)
}

/// Text: `KEY<TAB>VALUE` lines, escaped (see `Escaped`); JSON: an array of objects.
fn print_items(g: &Global, out: &mut Vec<u8>, items: &[KeyValue]) {
    match g.output {
        Output::Text => {
            for kv in items {
                let _ = writeln!(out, "{}\t{}", Escaped(&kv.key), Escaped(&kv.value));
            }
        }
        Output::Json => {
            let mut s = String::from("[");
            for kv in items {
                if s.len() > 1 {
                    s.push(',');
                }
                s.push('{');
                json::key(&mut s, "key");
                json::bytes(&mut s, &kv.key);
                json::key(&mut s, "value");
                json::bytes(&mut s, &kv.value);
                json::key(&mut s, "revision");
                let _ = write!(s, "{}", kv.revision);
                s.push('}');
            }
            s.push_str("]\n");
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn role_of(m: &MemberInfo) -> &'static str {
    if m.voter {
        "voter"
    } else {
        "learner"
    }
}

/// The role as `zatt status` promises it: leader, follower, candidate or learner. A node in
/// its pre-vote round (thesis §9.6) is campaigning, so it shows as a candidate.
fn role_name(s: &Status) -> &str {
    match s.role.as_str() {
        "precandidate" | "pre-candidate" | "pre_candidate" => "candidate",
        other => other,
    }
}

enum FieldValue {
    Number(u64),
    Text(String),
}

/// One scalar field of a status, by its JSON name; `None` when it has no value.
fn status_field(s: &Status, name: &str) -> Option<FieldValue> {
    use FieldValue::{Number, Text};
    Some(match name {
        "id" => Number(s.id),
        "cluster_id" => Number(s.cluster_id),
        "pid" if s.pid == 0 => return None,
        "pid" => Number(s.pid as u64),
        "role" => Text(role_name(s).to_string()),
        "term" => Number(s.term),
        "leader" => Number(s.leader?),
        "leader_addr" => Text(s.leader_addr.clone()?),
        "commit_index" => Number(s.commit_index),
        "applied_index" => Number(s.applied_index),
        "last_index" => Number(s.last_index),
        "keys" => Number(s.keys),
        "sessions" => Number(s.sessions),
        "wal_bytes" => Number(s.wal_bytes),
        "fsync_p50_us" => Number(s.fsync_p50_us),
        "fsync_p99_us" => Number(s.fsync_p99_us),
        "disk_free_bytes" => Number(s.disk_free_bytes),
        "disk_min_free_bytes" => Number(s.disk_min_free_bytes),
        "disk_alarm" => Number(s.disk_alarm as u64),
        _ => return None,
    })
}

fn status_text(s: &Status) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "id: {}", s.id);
    let _ = writeln!(t, "cluster_id: {}", s.cluster_id);
    if s.pid != 0 {
        let _ = writeln!(t, "pid: {}", s.pid);
    }
    let _ = writeln!(t, "role: {}", role_name(s));
    let _ = writeln!(t, "term: {}", s.term);
    let _ = match (s.leader, &s.leader_addr) {
        (Some(l), Some(a)) => writeln!(t, "leader: {l} ({a})"),
        (Some(l), None) => writeln!(t, "leader: {l}"),
        (None, _) => writeln!(t, "leader: none"),
    };
    let _ = writeln!(t, "commit_index: {}", s.commit_index);
    let _ = writeln!(t, "applied_index: {}", s.applied_index);
    let _ = writeln!(t, "last_index: {}", s.last_index);
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| format!("{}={} ({})", m.id, m.addr, role_of(m)))
        .collect();
    let _ = writeln!(t, "members: {}", members.join(", "));
    for p in &s.peers {
        let _ = write!(
            t,
            "peer {}: match_index {} lag {}",
            p.id, p.match_index, p.lag
        );
        if let Some((done, total)) = p.snapshot_progress {
            let _ = write!(t, " snapshot {done}/{total} bytes");
        }
        t.push('\n');
    }
    let _ = writeln!(t, "keys: {}", s.keys);
    let _ = writeln!(t, "sessions: {}", s.sessions);
    let _ = writeln!(t, "wal_bytes: {}", s.wal_bytes);
    let _ = writeln!(
        t,
        "disk: {} bytes free, minimum {}{}",
        s.disk_free_bytes,
        s.disk_min_free_bytes,
        if s.disk_alarm {
            " (ALARM: writes that add data are refused)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        t,
        "fsync: p50 {}us p99 {}us",
        s.fsync_p50_us, s.fsync_p99_us
    );
    // Only the reasons that happened: the full table is in the JSON output.
    let d: Vec<String> = s
        .dropped_datagrams
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    if !d.is_empty() {
        let _ = writeln!(t, "dropped_datagrams: {}", d.join(", "));
    }
    if s.incarnation != 0 {
        let _ = writeln!(t, "incarnation: {:016x}", s.incarnation);
    }
    if let Some((term, index)) = s.lost_entries {
        let _ = writeln!(
            t,
            "votes_withheld: may have lost acknowledged entries through index {index} (term \
             {term}); no vote for a candidate behind that until it is safe"
        );
    }
    t
}

fn member_json(s: &mut String, m: &MemberInfo) {
    s.push('{');
    json::key(s, "id");
    let _ = write!(s, "{}", m.id);
    json::key(s, "addr");
    json::string(s, &m.addr);
    json::key(s, "role");
    json::string(s, role_of(m));
    s.push('}');
}

/// One JSON object: the fields `zatt status --output json` promises (see README.md).
fn status_json(st: &Status) -> String {
    let mut s = String::from("{");
    json::key(&mut s, "id");
    let _ = write!(s, "{}", st.id);
    json::key(&mut s, "cluster_id");
    let _ = write!(s, "{}", st.cluster_id);
    json::key(&mut s, "pid");
    json::opt_u64(&mut s, (st.pid != 0).then_some(st.pid as u64));
    json::key(&mut s, "role");
    json::string(&mut s, role_name(st));
    json::key(&mut s, "term");
    let _ = write!(s, "{}", st.term);
    json::key(&mut s, "leader");
    json::opt_u64(&mut s, st.leader);
    json::key(&mut s, "leader_addr");
    json::opt_str(&mut s, st.leader_addr.as_deref());
    for (name, v) in [
        ("commit_index", st.commit_index),
        ("applied_index", st.applied_index),
        ("last_index", st.last_index),
    ] {
        json::key(&mut s, name);
        let _ = write!(s, "{v}");
    }
    json::key(&mut s, "members");
    s.push('[');
    for m in &st.members {
        if !s.ends_with('[') {
            s.push(',');
        }
        member_json(&mut s, m);
    }
    s.push(']');
    json::key(&mut s, "peers");
    s.push('[');
    for p in &st.peers {
        if !s.ends_with('[') {
            s.push(',');
        }
        s.push('{');
        json::key(&mut s, "id");
        let _ = write!(s, "{}", p.id);
        json::key(&mut s, "match_index");
        let _ = write!(s, "{}", p.match_index);
        json::key(&mut s, "lag");
        let _ = write!(s, "{}", p.lag);
        json::key(&mut s, "snapshot_progress");
        match p.snapshot_progress {
            None => s.push_str("null"),
            Some((done, total)) => {
                let _ = write!(s, "{{\"bytes\":{done},\"total\":{total}}}");
            }
        }
        s.push('}');
    }
    s.push(']');
    for (name, v) in [
        ("keys", st.keys),
        ("sessions", st.sessions),
        ("wal_bytes", st.wal_bytes),
        ("fsync_p50_us", st.fsync_p50_us),
        ("fsync_p99_us", st.fsync_p99_us),
        ("disk_free_bytes", st.disk_free_bytes),
        ("disk_min_free_bytes", st.disk_min_free_bytes),
    ] {
        json::key(&mut s, name);
        let _ = write!(s, "{v}");
    }
    json::key(&mut s, "disk_alarm");
    let _ = write!(s, "{}", st.disk_alarm);
    json::key(&mut s, "dropped_datagrams");
    s.push('{');
    for (name, count) in &st.dropped_datagrams {
        json::key(&mut s, name);
        let _ = write!(s, "{count}");
    }
    s.push('}');
    json::key(&mut s, "incarnation");
    match st.incarnation {
        0 => s.push_str("null"),
        i => json::string(&mut s, &format!("{i:016x}")),
    }
    json::key(&mut s, "lost_entries");
    match st.lost_entries {
        None => s.push_str("null"),
        Some((term, index)) => {
            let _ = write!(s, "{{\"term\":{term},\"index\":{index}}}");
        }
    }
    s.push('}');
    s
}

fn members_output(output: Output, ms: &[MemberInfo]) -> String {
    let mut s = String::new();
    match output {
        Output::Text => {
            for m in ms {
                let _ = writeln!(s, "{}\t{}\t{}", m.id, m.addr, role_of(m));
            }
        }
        Output::Json => {
            s.push('[');
            for m in ms {
                if !s.ends_with('[') {
                    s.push(',');
                }
                member_json(&mut s, m);
            }
            s.push_str("]\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_lists_every_status_field() {
        // Goal: the README's `status --field` list is exactly the names `--field` takes.
        let readme = include_str!("../../README.md");
        let row = readme
            .lines()
            .find(|l| l.starts_with("| `status [--leader] [--field NAME]`"))
            .expect("the README's status row");
        let list = row
            .split("prints one field (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .expect("the field list");
        let names: Vec<&str> = list.split(", ").map(|n| n.trim_matches('`')).collect();
        assert_eq!(names, STATUS_FIELDS);
    }

    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parsed(s: &str) -> Result<Parsed, String> {
        parse(&args(s), &no_env)
    }

    fn command(s: &str) -> Result<Command, String> {
        match parsed(s)? {
            Parsed::Run(_, c) => Ok(c),
            Parsed::Help(_) => Err("help".into()),
            Parsed::Version => Err("version".into()),
        }
    }

    #[test]
    fn subcommand_flags_may_follow_their_arguments() {
        // Goal: `zatt get KEY --stale` and `zatt --output json get KEY` both parse.
        assert_eq!(
            command("get k --stale").unwrap(),
            Command::Get {
                key: b"k".to_vec(),
                stale: true
            }
        );
        assert_eq!(
            command("--output json scan app/ --limit 5").unwrap(),
            Command::Scan {
                prefix: b"app/".to_vec(),
                limit: Some(5)
            }
        );
    }

    #[test]
    fn global_options_may_follow_the_command() {
        // Goal: `zatt status --output json` works as the docs and `zatt dev` print it.
        let Parsed::Run(g, c) = parsed("status --output json --endpoints 127.0.0.1:7").unwrap()
        else {
            panic!("expected a command")
        };
        assert_eq!(
            c,
            Command::Status {
                leader: false,
                field: None
            }
        );
        assert_eq!(g.output, Output::Json);
        assert_eq!(g.endpoints, vec!["127.0.0.1:7".to_string()]);
        let Parsed::Run(g, c) = parsed("--timeout=2s put k -- --output").unwrap() else {
            panic!("expected a command")
        };
        assert_eq!(g.timeout, Duration::from_secs(2));
        assert_eq!(
            c,
            Command::Put {
                key: b"k".to_vec(),
                value: Value::Arg(b"--output".to_vec())
            }
        );
        assert!(
            matches!(parsed("get k --help"), Ok(Parsed::Help(h)) if h.contains("zatt get KEY"))
        );
        assert!(parsed("--bogus get k").is_err());
    }

    #[test]
    fn the_environment_supplies_options_the_flags_do_not() {
        // Goal: ZATT_ENDPOINTS and friends, with flags winning.
        let env = |k: &str| match k {
            "ZATT_ENDPOINTS" => Some(OsString::from("10.0.0.1:1,10.0.0.2:2")),
            "ZATT_OUTPUT" => Some(OsString::from("json")),
            _ => None,
        };
        let Ok(Parsed::Run(g, _)) = parse(&args("status"), &env) else {
            panic!("expected a command")
        };
        assert_eq!(g.endpoints, ["10.0.0.1:1", "10.0.0.2:2"]);
        assert_eq!(g.output, Output::Json);
        let Ok(Parsed::Run(g, _)) = parse(&args("status --endpoints 127.0.0.1:9"), &env) else {
            panic!("expected a command")
        };
        assert_eq!(g.endpoints, ["127.0.0.1:9"]);
        let bad = |k: &str| (k == "ZATT_ENDPOINTS").then(|| OsString::from("x:99999"));
        assert!(parse(&args("status"), &bad)
            .unwrap_err()
            .contains("ZATT_ENDPOINTS"));
    }

    #[test]
    fn cas_spells_absent_and_delete_with_flags() {
        // Goal: "expect absent" and "delete on match" are expressible without magic values.
        assert_eq!(
            command("cas k --absent v").unwrap(),
            Command::Cas {
                key: b"k".to_vec(),
                expect: Expect::Absent,
                new: Some(b"v".to_vec())
            }
        );
        assert_eq!(
            command("cas k old --delete").unwrap(),
            Command::Cas {
                key: b"k".to_vec(),
                expect: Expect::Value(b"old".to_vec()),
                new: None
            }
        );
        assert!(command("cas k v").is_err());
        assert!(command("cas k --absent").is_err());
    }

    #[test]
    fn endpoints_must_be_host_and_a_port_in_range() {
        for good in [
            "127.0.0.1:5254",
            "db-1.example:1",
            "[::1]:65535",
            "localhost:80",
        ] {
            check_endpoint("e", good).unwrap();
        }
        for bad in [
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "127.0.0.1",
            ":5254",
            "::1:5254",
            "[::1:5254",
            "host:+80",
            "a b:1",
        ] {
            assert!(check_endpoint("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_shown_as_given() {
        // Goal: an error naming --timeout names the value given, not a rounding of it.
        for s in [
            "1ns", "999ns", "1us", "1500us", "1ms", "250ms", "1s", "90s", "1500ms",
        ] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&fmt_duration(d)).unwrap(), d, "{s}");
        }
        assert_eq!(fmt_duration(Duration::from_nanos(1)), "1ns");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn bad_shapes_are_usage_errors() {
        // Goal: every malformed command line is refused by the parser (exit 2), not at runtime.
        for bad in [
            "",
            "frobnicate",
            "put k",
            "put k --file",
            "put k v --file f",
            "get",
            "get a b",
            "member",
            "member add x 127.0.0.1:1",
            "member add 4 nohost",
            "member add 4 127.0.0.1:99999",
            "member promote 0",
            "transfer-leader 1 2",
            "scan --limit many",
            "scan --limit 0",
            "scan p --limit=0",
            "--timeout 2 get k",
            "--output yaml get k",
            "--endpoints , get k",
            "--endpoints 127.0.0.1:99999 get k",
            "--cert c.pem get k",
            "--cert c.pem --key k.pem get k",
            "dev --nodes 0",
            "dev --base-port 65535 --nodes 3",
            "get k --bogus",
            "snapshot",
            "snapshot save",
            "snapshot load f",
            "snapshot save a b",
            "get -x",
            "status --field nope",
            "help nope",
            "--endpoints",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn empty_paths_are_usage_errors() {
        // Goal: an empty path is not taken as the current directory (`zatt dev --dir ""` ran
        // servers writing 1/ 2/ 3/ into it) nor reaches the cluster (`snapshot save ""`).
        for args in [&["dev", "--dir", ""][..], &["snapshot", "save", ""]] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let e = parse(&args, &no_env).err();
            assert!(
                e.as_deref().is_some_and(|e| e.contains("empty")),
                "{args:?}: {e:?}"
            );
        }
    }

    #[test]
    fn arguments_that_are_not_utf8_are_keys_and_values_as_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let a = vec![
            OsString::from("put"),
            OsString::from_vec(b"k\xff".to_vec()),
            OsString::from_vec(b"\xfe\x00v".to_vec()),
        ];
        let Ok(Parsed::Run(_, c)) = parse(&a, &no_env) else {
            panic!("expected a command")
        };
        assert_eq!(
            c,
            Command::Put {
                key: b"k\xff".to_vec(),
                value: Value::Arg(b"\xfe\x00v".to_vec())
            }
        );
        // Not UTF-8 where text is needed: a usage error naming the bytes, not a panic.
        let a = vec![OsString::from_vec(b"g\xffet".to_vec())];
        assert!(parse(&a, &no_env).unwrap_err().contains(r"g\xffet"));
        let a = vec![
            OsString::from("--timeout"),
            OsString::from_vec(b"\xff".to_vec()),
            OsString::from("dump"),
        ];
        assert!(parse(&a, &no_env).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn every_command_has_help_and_help_names_them_all() {
        for c in COMMANDS {
            assert!(c.text.starts_with("Usage: zatt "), "{}", c.name);
            let Ok(Parsed::Help(h)) = parsed(&format!("help {}", c.name)) else {
                panic!("help {}", c.name)
            };
            assert_eq!(h, c.text);
            if c.name != "help" {
                assert!(USAGE.contains(&format!("  {}", c.name)), "{}", c.name);
            }
        }
        assert!(matches!(parsed("--version"), Ok(Parsed::Version)));
        assert!(matches!(parsed("-V"), Ok(Parsed::Version)));
    }

    #[test]
    fn status_json_has_the_promised_fields() {
        // Goal: scripts can rely on id, pid, role, term, leader, commit_index, applied_index,
        // members.
        let st = Status {
            id: 2,
            pid: 4242,
            role: "follower".into(),
            term: 7,
            leader: Some(1),
            leader_addr: Some("127.0.0.1:5254".into()),
            commit_index: 10,
            applied_index: 9,
            members: vec![MemberInfo {
                id: 1,
                addr: "127.0.0.1:5254".into(),
                voter: true,
            }],
            cluster_id: 99,
            disk_free_bytes: 5,
            disk_min_free_bytes: 6,
            disk_alarm: true,
            ..Status::default()
        };
        let j = status_json(&st);
        for want in [
            "\"id\":2",
            "\"cluster_id\":99",
            "\"disk_free_bytes\":5",
            "\"disk_min_free_bytes\":6",
            "\"disk_alarm\":true",
            "\"pid\":4242",
            "\"role\":\"follower\"",
            "\"term\":7",
            "\"leader\":1",
            "\"commit_index\":10",
            "\"applied_index\":9",
            "\"members\":[{\"id\":1,\"addr\":\"127.0.0.1:5254\",\"role\":\"voter\"}]",
        ] {
            assert!(j.contains(want), "{want} missing from {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(status_text(&st).contains("pid: 4242\n"));
        assert!(status_text(&st).contains("cluster_id: 99\n"));
        assert!(status_text(&st).contains("disk: 5 bytes free, minimum 6 (ALARM"));
        let pre = Status {
            role: "precandidate".into(),
            pid: 0,
            ..st
        };
        assert!(status_json(&pre).contains("\"role\":\"candidate\""));
        assert!(status_json(&pre).contains("\"pid\":null"));
        assert!(status_field(&pre, "pid").is_none());
    }
}
