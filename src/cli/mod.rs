//! The `zatt` command line: flag parsing (getopts), one function per subcommand, text or JSON
//! output, and exit codes (0 success, 1 runtime error, 2 usage error). `src/bin/zatt.rs` only
//! calls [`main`]; everything here is reachable from tests, which call [`run`] with their own
//! output buffers. Talks to the cluster only through `crate::client`; `zatt dev` lives in `dev`.
//! Read `README.md` ("The zatt command line") for the user's guide.

pub mod dev;
mod json;
mod snapshot;

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use getopts::{Options, ParsingStyle};

use crate::client::{
    Client, ClientConfig, Consistency, Error, Expect, KeyValue, MemberInfo, ScanOptions, Status,
    TlsConfig,
};
use crate::config::parse_duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:5254";
const DEFAULT_TIMEOUT: &str = "5s";

const USAGE: &str = "\
Usage: zatt [OPTIONS] COMMAND [ARGS]

Talks to a Zatt cluster.

Commands:
  put KEY VALUE                    set KEY to VALUE
  get KEY [--stale]                print KEY's value; exit 1 if absent. --stale: read from the
                                   addressed server without a round through the leader
  del KEY                          delete KEY
  cas KEY EXPECTED NEW             set KEY to NEW if it holds EXPECTED; exit 1 if not.
      [--absent] [--delete]        --absent: expect KEY absent (give no EXPECTED);
                                   --delete: delete KEY instead (give no NEW)
  scan [PREFIX] [--limit N]        print the keys starting with PREFIX, in order
  dump                             print every key and value
  status                           the addressed (first reachable) server's status
  members                          the cluster's members
  member add ID HOST:PORT [--learner]
  member promote ID
  member remove ID
  transfer-leader [ID]             hand leadership to ID (or the best-placed voter)
  snapshot save FILE               save a consistent snapshot from the leader to FILE (a
                                   backup that `zattd --restore FILE` starts a new cluster from)
  dev [--nodes N] [--dir DIR] [--base-port P]
                                   run a local cluster until Ctrl-C

Options (before or after the command):
  --endpoints HOST:PORT,...        servers to contact (default 127.0.0.1:5254)
  --timeout DUR                    give up after this long, retries included (default 5s;
                                   units: ms, s, m)
  --tls-ca FILE                    speak TLS, trusting the CA certificates in FILE (PEM)
  --output text|json               output format (default text)
  -h, --help                       this help

A value that starts with '-' goes after '--': zatt put KEY -- -1
Exit codes: 0 success, 1 runtime error (or get of an absent key), 2 usage error.
";

/// Runs the command line as a process: real arguments, stdout, stderr; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(&args, &mut stdout.lock(), &mut stderr.lock())
}

/// Runs the command line with `args` (without the program name); returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let code = match parse(args) {
        Ok(Parsed::Help) => {
            let _ = out.write_all(USAGE.as_bytes());
            EXIT_OK
        }
        Ok(Parsed::Run(global, cmd)) => execute(&global, cmd, out, err),
        Err(usage) => {
            let _ = writeln!(err, "zatt: {usage} (see zatt --help)");
            EXIT_USAGE
        }
    };
    let _ = out.flush();
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
    output: Output,
}

#[derive(Debug, PartialEq)]
enum Command {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
        stale: bool,
    },
    Del {
        key: String,
    },
    Cas {
        key: String,
        expect: Expect,
        new: Option<String>,
    },
    Scan {
        prefix: String,
        limit: Option<u64>,
    },
    Dump,
    Status,
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
    Dev(dev::DevOptions),
}

enum Parsed {
    Help,
    Run(Global, Command),
}

/// The options that apply to every command.
const GLOBAL_VALUED: [&str; 4] = ["endpoints", "timeout", "tls-ca", "output"];

/// Separates the global options from the command and its arguments, so that global options
/// may stand before or after the command (`zatt --output json status` and
/// `zatt status --output json` alike). Everything after `--` belongs to the command.
fn split_globals(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut globals = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a.clone());
            rest.extend(it.cloned());
            break;
        }
        if a == "-h" || a == "--help" {
            globals.push(a.clone());
            continue;
        }
        if let Some(name) = a.strip_prefix("--") {
            let (name, inline_value) = match name.split_once('=') {
                Some((n, _)) => (n, true),
                None => (name, false),
            };
            if GLOBAL_VALUED.contains(&name) {
                globals.push(a.clone());
                if !inline_value {
                    if let Some(v) = it.next() {
                        globals.push(v.clone());
                    }
                }
                continue;
            }
        }
        rest.push(a.clone());
    }
    (globals, rest)
}

fn parse(args: &[String]) -> Result<Parsed, String> {
    let (globals, rest) = split_globals(args);
    let mut opts = Options::new();
    opts.optopt("", "endpoints", "", "HOST:PORT,...");
    opts.optopt("", "timeout", "", "DUR");
    opts.optopt("", "tls-ca", "", "FILE");
    opts.optopt("", "output", "", "text|json");
    opts.optflag("h", "help", "");
    let m = opts.parse(&globals).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Parsed::Help);
    }
    let endpoints: Vec<String> = m
        .opt_str("endpoints")
        .unwrap_or_else(|| DEFAULT_ENDPOINTS.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoints needs at least one HOST:PORT".into());
    }
    for e in &endpoints {
        if !e.contains(':') {
            return Err(format!("--endpoints: {e:?} is not HOST:PORT"));
        }
    }
    let timeout_text = m
        .opt_str("timeout")
        .unwrap_or_else(|| DEFAULT_TIMEOUT.into());
    let timeout = parse_duration(&timeout_text).map_err(|e| format!("--timeout: {e}"))?;
    if timeout.is_zero() {
        return Err("--timeout must be above zero".into());
    }
    let output = match m.opt_str("output").as_deref() {
        None | Some("text") => Output::Text,
        Some("json") => Output::Json,
        Some(other) => return Err(format!("--output must be text or json, not {other:?}")),
    };
    let global = Global {
        endpoints,
        timeout,
        tls_ca: m.opt_str("tls-ca").map(PathBuf::from),
        output,
    };
    let mut rest = rest.into_iter();
    let name = match rest.next() {
        None => return Err("no command given".into()),
        Some(n) if n.starts_with('-') => return Err(format!("unknown option {n:?}")),
        Some(n) => n,
    };
    let rest: Vec<String> = rest.collect();
    let cmd = parse_command(&name, &rest)?;
    Ok(Parsed::Run(global, cmd))
}

/// Parses one subcommand's flags (anywhere among its arguments) and positional arguments.
fn sub(
    name: &str,
    args: &[String],
    flags: &[&str],
    valued: &[&str],
) -> Result<getopts::Matches, String> {
    let mut opts = Options::new();
    opts.parsing_style(ParsingStyle::FloatingFrees);
    for f in flags {
        opts.optflag("", f, "");
    }
    for v in valued {
        opts.optopt("", v, "", "");
    }
    opts.parse(args).map_err(|e| format!("{name}: {e}"))
}

fn want(name: &str, free: &[String], n: usize, shape: &str) -> Result<(), String> {
    if free.len() != n {
        return Err(format!(
            "{name} takes {n} argument{} ({shape}), got {}",
            if n == 1 { "" } else { "s" },
            free.len()
        ));
    }
    Ok(())
}

fn parse_id(what: &str, s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "{what}: {s:?} is not a server id (a number from 1)"
        )),
        Ok(id) => Ok(id),
    }
}

fn parse_command(name: &str, args: &[String]) -> Result<Command, String> {
    Ok(match name {
        "put" => {
            let m = sub(name, args, &[], &[])?;
            want(name, &m.free, 2, "KEY VALUE")?;
            Command::Put {
                key: m.free[0].clone(),
                value: m.free[1].clone(),
            }
        }
        "get" => {
            let m = sub(name, args, &["stale"], &[])?;
            want(name, &m.free, 1, "KEY")?;
            Command::Get {
                key: m.free[0].clone(),
                stale: m.opt_present("stale"),
            }
        }
        "del" | "delete" => {
            let m = sub(name, args, &[], &[])?;
            want(name, &m.free, 1, "KEY")?;
            Command::Del {
                key: m.free[0].clone(),
            }
        }
        "cas" => {
            let m = sub(name, args, &["absent", "delete"], &[])?;
            let absent = m.opt_present("absent");
            let delete = m.opt_present("delete");
            let n = 3 - absent as usize - delete as usize;
            let shape = match (absent, delete) {
                (false, false) => "KEY EXPECTED NEW",
                (true, false) => "KEY NEW with --absent",
                (false, true) => "KEY EXPECTED with --delete",
                (true, true) => "KEY with --absent --delete",
            };
            want(name, &m.free, n, shape)?;
            let mut it = m.free.into_iter();
            let key = it.next().unwrap_or_default();
            let expect = if absent {
                Expect::Absent
            } else {
                Expect::Value(it.next().unwrap_or_default().into_bytes())
            };
            let new = if delete { None } else { it.next() };
            Command::Cas { key, expect, new }
        }
        "scan" => {
            let m = sub(name, args, &[], &["limit"])?;
            if m.free.len() > 1 {
                return Err("scan takes at most one argument (PREFIX)".into());
            }
            let limit = match m.opt_str("limit") {
                None => None,
                Some(s) => Some(
                    s.parse::<u64>()
                        .map_err(|_| format!("scan --limit: {s:?} is not a number"))?,
                ),
            };
            Command::Scan {
                prefix: m.free.first().cloned().unwrap_or_default(),
                limit,
            }
        }
        "dump" | "status" | "members" => {
            let m = sub(name, args, &[], &[])?;
            want(name, &m.free, 0, "none")?;
            match name {
                "dump" => Command::Dump,
                "status" => Command::Status,
                _ => Command::Members,
            }
        }
        "member" => {
            let Some(action) = args.first() else {
                return Err("member needs add, promote or remove".into());
            };
            let rest = &args[1..];
            match action.as_str() {
                "add" => {
                    let m = sub("member add", rest, &["learner"], &[])?;
                    want("member add", &m.free, 2, "ID HOST:PORT")?;
                    let addr = m.free[1].clone();
                    if !addr.contains(':') {
                        return Err(format!("member add: {addr:?} is not HOST:PORT"));
                    }
                    Command::MemberAdd {
                        id: parse_id("member add", &m.free[0])?,
                        addr,
                        learner: m.opt_present("learner"),
                    }
                }
                "promote" | "remove" => {
                    let what = format!("member {action}");
                    let m = sub(&what, rest, &[], &[])?;
                    want(&what, &m.free, 1, "ID")?;
                    let id = parse_id(&what, &m.free[0])?;
                    if action == "promote" {
                        Command::MemberPromote { id }
                    } else {
                        Command::MemberRemove { id }
                    }
                }
                other => return Err(format!("member {other:?}: expected add, promote or remove")),
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
        "snapshot" => match args.first().map(String::as_str) {
            Some("save") => {
                let m = sub("snapshot save", &args[1..], &[], &[])?;
                want("snapshot save", &m.free, 1, "FILE")?;
                Command::SnapshotSave {
                    file: PathBuf::from(&m.free[0]),
                }
            }
            Some(other) => return Err(format!("snapshot {other:?}: expected save")),
            None => return Err("snapshot needs save".into()),
        },
        "dev" => {
            let m = sub(name, args, &[], &["nodes", "dir", "base-port"])?;
            want(name, &m.free, 0, "only flags")?;
            let mut o = dev::DevOptions::default();
            if let Some(n) = m.opt_str("nodes") {
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
            if let Some(d) = m.opt_str("dir") {
                o.dir = PathBuf::from(d);
            }
            if let Some(p) = m.opt_str("base-port") {
                o.base_port = match p.parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => return Err(format!("dev --base-port: {p:?} is not a port number")),
                };
            }
            if o.base_port as u32 + o.nodes as u32 - 1 > u16::MAX as u32 {
                return Err("dev: --base-port too high for that many --nodes".into());
            }
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
        tls: g.tls_ca.as_ref().map(TlsConfig::with_ca),
        ..ClientConfig::default()
    }
}

/// One line on stderr saying what went wrong and what to do about it.
fn report(err: &mut dyn Write, g: &Global, e: &Error) -> i32 {
    let hint = match e {
        Error::Unavailable { reason, .. } if reason.starts_with("cannot connect") => format!(
            "check --endpoints ({}) or start a local cluster with `zatt dev`",
            g.endpoints.join(",")
        ),
        Error::Unavailable { reason, .. }
            if reason.starts_with("connections keep failing") && g.tls_ca.is_none() =>
        {
            "servers close the connection: if they speak TLS, pass --tls-ca FILE".into()
        }
        Error::Unavailable { .. } => {
            "check that a majority of servers is up (`zatt status`), or raise --timeout".into()
        }
        Error::Timeout { .. } => "retry, or raise --timeout".into(),
        Error::TooLarge { .. } => "send a smaller key or value".into(),
        Error::Config(_) => "fix the option and retry".into(),
        Error::Protocol { .. } if g.tls_ca.is_some() => {
            "check --tls-ca and that the servers run with --tls-cert".into()
        }
        Error::Protocol { .. } => {
            "check that --endpoints name zattd servers (add --tls-ca if they speak TLS)".into()
        }
        Error::SessionExpired { .. } => "check the value with `zatt get` before retrying".into(),
        Error::CasFailed { .. } => "read the current value with `zatt get` and retry".into(),
        _ => String::new(),
    };
    let mut line = format!("zatt: {e}");
    if let Error::CasFailed {
        current: Some((v, rev)),
    } = e
    {
        let text = String::from_utf8_lossy(v);
        let shown: String = text.chars().take(80).collect();
        line = format!("zatt: compare-and-swap failed: the key holds {shown:?} (revision {rev})");
    }
    if !hint.is_empty() {
        let _ = write!(line, ": {hint}");
    }
    let _ = writeln!(err, "{line}");
    EXIT_RUNTIME
}

fn execute(g: &Global, cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if let Command::Dev(opts) = &cmd {
        return dev::run(opts, out, err);
    }
    let mut client = match Client::connect(&g.endpoints, client_config(g)) {
        Ok(c) => c,
        Err(e) => return report(err, g, &e),
    };
    match execute_with(g, &mut client, cmd, out) {
        Ok(code) => code,
        Err(e) => {
            let _ = out.flush();
            report(err, g, &e)
        }
    }
}

fn ok_line(g: &Global, out: &mut dyn Write, json_body: &str) {
    let _ = match g.output {
        Output::Text => writeln!(out, "OK"),
        Output::Json => writeln!(out, "{json_body}"),
    };
}

fn execute_with(
    g: &Global,
    client: &mut Client,
    cmd: Command,
    out: &mut dyn Write,
) -> Result<i32, Error> {
    match cmd {
        Command::Put { key, value } => {
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
                return Ok(EXIT_RUNTIME);
            };
            match g.output {
                Output::Text => {
                    let _ = out.write_all(&value);
                    let _ = out.write_all(b"\n");
                }
                Output::Json => {
                    let mut s = String::from("{");
                    json::key(&mut s, "key");
                    json::string(&mut s, &key);
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
        Command::Cas { key, expect, new } => {
            match client.cas(&key, expect, new.map(String::into_bytes)) {
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
                    return Err(Error::CasFailed { current });
                }
                Err(e) => return Err(e),
            }
        }
        Command::Scan { prefix, limit } => {
            let opts = ScanOptions {
                prefix: prefix.into_bytes(),
                limit,
                ..ScanOptions::default()
            };
            print_items(g, out, client.scan_with(opts).items(), false)?;
        }
        Command::Dump => {
            print_items(g, out, client.scan(b"").items(), true)?;
        }
        Command::Status => {
            let s = client.status()?;
            let _ = match g.output {
                Output::Text => out.write_all(status_text(&s).as_bytes()),
                Output::Json => writeln!(out, "{}", status_json(&s)),
            };
        }
        Command::Members => {
            let ms = client.members()?;
            let _ = out.write_all(members_output(g.output, &ms).as_bytes());
        }
        Command::MemberAdd { id, addr, learner } => {
            client.member_add(id, &addr, learner)?;
            ok_line(g, out, "{\"ok\":true}");
        }
        Command::MemberPromote { id } => {
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
        Command::Dev(_) => unreachable!("handled before connecting"),
    }
    Ok(EXIT_OK)
}

/// Streams keys as they arrive: text `KEY<TAB>VALUE` lines, or JSON (an array of objects for
/// scan, one object mapping keys to values for dump).
fn print_items(
    g: &Global,
    out: &mut dyn Write,
    items: impl Iterator<Item = Result<KeyValue, Error>>,
    as_map: bool,
) -> Result<(), Error> {
    let (open, close) = if as_map { ("{", "}") } else { ("[", "]") };
    if g.output == Output::Json {
        let _ = out.write_all(open.as_bytes());
    }
    let mut first = true;
    let mut s = String::new();
    for kv in items {
        let kv = kv?;
        let written = match g.output {
            Output::Text => out
                .write_all(&kv.key)
                .and_then(|_| out.write_all(b"\t"))
                .and_then(|_| out.write_all(&kv.value))
                .and_then(|_| out.write_all(b"\n")),
            Output::Json => {
                s.clear();
                if !first {
                    s.push(',');
                }
                if as_map {
                    json::bytes(&mut s, &kv.key);
                    s.push(':');
                    json::bytes(&mut s, &kv.value);
                } else {
                    s.push('{');
                    json::key(&mut s, "key");
                    json::bytes(&mut s, &kv.key);
                    json::key(&mut s, "value");
                    json::bytes(&mut s, &kv.value);
                    json::key(&mut s, "revision");
                    let _ = write!(s, "{}", kv.revision);
                    s.push('}');
                }
                out.write_all(s.as_bytes())
            }
        };
        if written.is_err() {
            // The reader went away (`zatt scan | head`): stop fetching pages.
            return Ok(());
        }
        first = false;
    }
    if g.output == Output::Json {
        let _ = writeln!(out, "{close}");
    }
    Ok(())
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

fn status_text(s: &Status) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "id: {}", s.id);
    let _ = writeln!(t, "cluster_id: {}", s.cluster_id);
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
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn command(s: &str) -> Result<Command, String> {
        match parse(&args(s))? {
            Parsed::Run(_, c) => Ok(c),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn subcommand_flags_may_follow_their_arguments() {
        // Goal: `zatt get KEY --stale` and `zatt --output json get KEY` both parse.
        assert_eq!(
            command("get k --stale").unwrap(),
            Command::Get {
                key: "k".into(),
                stale: true
            }
        );
        assert_eq!(
            command("--output json scan app/ --limit 5").unwrap(),
            Command::Scan {
                prefix: "app/".into(),
                limit: Some(5)
            }
        );
    }

    #[test]
    fn global_options_may_follow_the_command() {
        // Goal: `zatt status --output json` works as the docs and `zatt dev` print it.
        let Parsed::Run(g, c) =
            parse(&args("status --output json --endpoints 127.0.0.1:7")).unwrap()
        else {
            panic!("expected a command")
        };
        assert_eq!(c, Command::Status);
        assert_eq!(g.output, Output::Json);
        assert_eq!(g.endpoints, vec!["127.0.0.1:7".to_string()]);
        let Parsed::Run(g, c) = parse(&args("--timeout=2s put k -- --output")).unwrap() else {
            panic!("expected a command")
        };
        assert_eq!(g.timeout, Duration::from_secs(2));
        assert_eq!(
            c,
            Command::Put {
                key: "k".into(),
                value: "--output".into()
            }
        );
        assert!(matches!(parse(&args("get k --help")), Ok(Parsed::Help)));
        assert!(parse(&args("--bogus get k")).is_err());
    }

    #[test]
    fn cas_spells_absent_and_delete_with_flags() {
        // Goal: "expect absent" and "delete on match" are expressible without magic values.
        assert_eq!(
            command("cas k --absent v").unwrap(),
            Command::Cas {
                key: "k".into(),
                expect: Expect::Absent,
                new: Some("v".into())
            }
        );
        assert_eq!(
            command("cas k old --delete").unwrap(),
            Command::Cas {
                key: "k".into(),
                expect: Expect::Value(b"old".to_vec()),
                new: None
            }
        );
        assert!(command("cas k v").is_err());
        assert!(command("cas k --absent").is_err());
    }

    #[test]
    fn bad_shapes_are_usage_errors() {
        // Goal: every malformed command line is refused by the parser (exit 2), not at runtime.
        for bad in [
            "",
            "frobnicate",
            "put k",
            "get",
            "get a b",
            "member",
            "member add x 127.0.0.1:1",
            "member add 4 nohost",
            "member promote 0",
            "transfer-leader 1 2",
            "scan --limit many",
            "--timeout 2 get k",
            "--output yaml get k",
            "--endpoints , get k",
            "dev --nodes 0",
            "dev --base-port 65535 --nodes 3",
            "get k --bogus",
            "snapshot",
            "snapshot save",
            "snapshot load f",
            "snapshot save a b",
        ] {
            assert!(command(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn status_json_has_the_promised_fields() {
        // Goal: scripts can rely on id, role, term, leader, commit_index, applied_index, members.
        let st = Status {
            id: 2,
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
        let pre = Status {
            role: "precandidate".into(),
            ..st
        };
        assert!(status_json(&pre).contains("\"role\":\"candidate\""));
    }
}
