//! Measures watches under write load (the "Measure" of the watch issue): `--writers` clients put
//! in a closed loop (one write in flight each) under one prefix, first alone, then while
//! `--watchers` watches follow that prefix, spread over the servers. Reports the write rate of
//! both phases and the delay from each write's acknowledgement (as its writer saw it) to its
//! event at every watcher, from a sample of the revisions; checks that every watcher received
//! every write of the second phase. Owns nothing the server or the client library owns: the
//! writers use `zatt::client::Client`, the watchers speak the protocol on raw sockets, several
//! per thread with poll(2), so that the watching side costs the machine as little as it can.
//!
//!     cargo run --release --example watchbench -- --endpoints 127.0.0.1:5254,127.0.0.1:5255,127.0.0.1:5256
//!
//! `perf/watch.sh` starts a cluster, runs this and records the servers' CPU.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zatt::client::{Client, ClientConfig};
use zatt::config::parse_duration;
use zatt::wire::client::{
    decode_response, encode_request, split_frame, FrameLimits, Request, Response,
};

struct Opts {
    endpoints: Vec<String>,
    writers: usize,
    watchers: usize,
    watcher_threads: usize,
    duration: Duration,
    warmup: Duration,
    value_bytes: usize,
    sample: u64,
    /// The servers' process ids, to measure their CPU per phase (Linux /proc).
    pids: Vec<u32>,
    /// Watch on the followers only (the leader serves none).
    followers_only: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "endpoints",
        "servers (default 127.0.0.1:5254,5255,5256)",
        "LIST",
    );
    o.optopt("", "writers", "closed-loop writers (default 64)", "N");
    o.optopt(
        "",
        "watchers",
        "watches on the writers' prefix (default 100)",
        "N",
    );
    o.optopt(
        "",
        "watcher-threads",
        "threads reading the watches (default 2)",
        "N",
    );
    o.optopt("", "duration", "each phase (default 10s)", "DUR");
    o.optopt("", "warmup", "before the first phase (default 2s)", "DUR");
    o.optopt("", "value-bytes", "value size (default 100)", "N");
    o.optopt("", "sample", "time every Nth revision (default 4)", "N");
    o.optopt(
        "",
        "pids",
        "the servers' pids, to report their CPU per phase",
        "PID,...",
    );
    o.optopt("", "watch-on", "all (default) or followers", "WHERE");
    o.optflag("h", "help", "this help");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = o.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Err(o.usage("Usage: watchbench [options]"));
    }
    let num = |name: &str, default: usize| -> Result<usize, String> {
        match m.opt_str(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("--{name} {v:?}: expected a positive number")),
        }
    };
    let dur = |name: &str, default: &str| -> Result<Duration, String> {
        let v = m.opt_str(name).unwrap_or_else(|| default.to_string());
        parse_duration(&v).map_err(|e| format!("--{name}: {e}"))
    };
    Ok(Opts {
        endpoints: m
            .opt_str("endpoints")
            .unwrap_or_else(|| "127.0.0.1:5254,127.0.0.1:5255,127.0.0.1:5256".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        writers: num("writers", 64)?,
        watchers: num("watchers", 100)?,
        watcher_threads: num("watcher-threads", 2)?,
        duration: dur("duration", "10s")?,
        warmup: dur("warmup", "2s")?,
        value_bytes: num("value-bytes", 100)?,
        sample: num("sample", 4)? as u64,
        followers_only: match m.opt_str("watch-on").as_deref() {
            None | Some("all") => false,
            Some("followers") => true,
            Some(other) => return Err(format!("--watch-on {other:?}: all or followers")),
        },
        pids: match m.opt_str("pids") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("--pids: {p:?}"))
                })
                .collect::<Result<_, _>>()?,
        },
    })
}

const PREFIX: &str = "watchbench/";
/// Phases: 0 warm-up, 1 writes alone, 2 writes with watchers, 3 stop.
const WARMUP: u8 = 0;
const ALONE: u8 = 1;
const WATCHED: u8 = 2;
const STOP: u8 = 3;

/// One watch connection as the watcher threads see it.
struct WatchConn {
    stream: TcpStream,
    buf: Vec<u8>,
    events: u64,
    last_revision: u64,
    /// (revision, arrival) of the sampled revisions.
    samples: Vec<(u64, Instant)>,
}

fn open_watch(addr: &str, id: u64) -> Result<WatchConn, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).ok();
    let mut frame = Vec::new();
    let req = Request::Watch {
        prefix: PREFIX.as_bytes().to_vec(),
        from_revision: 0,
    };
    encode_request(id, &req, &mut frame);
    stream.write_all(&frame).map_err(|e| e.to_string())?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(WatchConn {
        stream,
        buf: Vec::with_capacity(1 << 16),
        events: 0,
        last_revision: 0,
        samples: Vec::new(),
    })
}

/// The `WatchEvents` opcode (docs/PROTOCOL.md).
const EVENTS_OPCODE: u8 = 0x8D;

/// The revisions of a `WatchEvents` frame's events, read in place (layout: docs/PROTOCOL.md);
/// `None` when the frame does not hold what its counts say.
fn event_revisions(frame: &[u8]) -> Option<Vec<u64>> {
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(frame.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(13)?;
    let mut at = 17;
    let mut revs = Vec::with_capacity(count.min(frame.len() / 13));
    for _ in 0..count {
        let kind = *frame.get(at)?;
        let rev = u64::from_le_bytes(frame.get(at + 1..at + 9)?.try_into().ok()?);
        at += 9;
        at += 4 + u32_at(at)?;
        if kind == 1 {
            at += 4 + u32_at(at)?;
        }
        revs.push(rev);
    }
    (at == frame.len()).then_some(revs)
}

/// Reads what a watch connection has; records events. False when the connection failed.
fn drain(c: &mut WatchConn, sample: u64, limits: &FrameLimits) -> bool {
    let mut chunk = [0u8; 64 << 10];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    let now = Instant::now();
    let mut at = 0;
    while let Ok(Some((len, _))) = split_frame(&c.buf[at..], limits) {
        let frame = &c.buf[at..at + len];
        // Events are counted and sampled straight from the frame (no allocation per event:
        // the benchmark's own side must cost the machine little); anything else is decoded.
        if frame[12] == EVENTS_OPCODE {
            let Some(revs) = event_revisions(frame) else {
                eprintln!("watchbench: bad events frame");
                return false;
            };
            for r in revs {
                c.events += 1;
                c.last_revision = r;
                if r % sample == 0 {
                    c.samples.push((r, now));
                }
            }
        } else {
            match decode_response(frame, limits) {
                Ok((_, Response::WatchProgress { revision })) => {
                    c.last_revision = c.last_revision.max(revision)
                }
                Ok((_, other)) => {
                    eprintln!("watchbench: a watch ended: {other:?}");
                    return false;
                }
                Err(e) => {
                    eprintln!("watchbench: bad frame: {e}");
                    return false;
                }
            }
        }
        at += len;
    }
    c.buf.drain(..at);
    true
}

/// Serves a set of watch connections with poll(2) until `stop`; returns them.
fn watch_loop(mut conns: Vec<WatchConn>, sample: u64, stop: Arc<AtomicBool>) -> Vec<WatchConn> {
    let limits = FrameLimits {
        max_frame_bytes: 64 << 20,
        ..FrameLimits::default()
    };
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (i, pfd) in fds.iter_mut().enumerate() {
            if pfd.revents != 0 {
                pfd.revents = 0;
                if !drain(&mut conns[i], sample, &limits) {
                    pfd.fd = -1; // poll ignores it from now on
                }
            }
        }
    }
    conns
}

/// CPU seconds (user + system) the processes `pids` have used so far, together.
fn servers_cpu(pids: &[u32]) -> f64 {
    // SAFETY: sysconf only reads a system setting.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces): utime is the 12th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck)
        })
        .sum()
}

/// CPU seconds (user + system) this process has used so far.
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = ClientConfig {
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let value = vec![b'v'; o.value_bytes];
    let mut writers = Vec::new();
    for w in 0..o.writers {
        let (phase, counts, acks, value) =
            (phase.clone(), counts.clone(), acks.clone(), value.clone());
        let mut client = match Client::connect(&o.endpoints, config.clone()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("watchbench: {e}");
                return ExitCode::from(1);
            }
        };
        let sample = o.sample;
        writers.push(std::thread::spawn(move || -> Result<(), String> {
            let mut mine = Vec::new();
            let mut i = 0u64;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOP {
                    break;
                }
                let key = format!("{PREFIX}{w}/{}", i % 1000);
                i += 1;
                let rev = client.put(key, &value).map_err(|e| e.to_string())?;
                let at = Instant::now();
                // A write counts in the phase it was acknowledged in.
                let p = phase.load(Ordering::Relaxed);
                if p < STOP {
                    counts[p as usize].fetch_add(1, Ordering::Relaxed);
                }
                if p == WATCHED && rev % sample == 0 {
                    mine.push((rev, at));
                }
            }
            acks.lock().unwrap().extend(mine);
            Ok(())
        }));
    }
    std::thread::sleep(o.warmup);
    phase.store(ALONE, Ordering::SeqCst);
    let (cpu_alone, srv_alone) = (own_cpu(), servers_cpu(&o.pids));
    std::thread::sleep(o.duration);
    let cpu_alone = own_cpu() - cpu_alone;
    let srv_alone = servers_cpu(&o.pids) - srv_alone;

    // The watchers, spread over the servers in turn.
    let mut per_thread: Vec<Vec<WatchConn>> = (0..o.watcher_threads).map(|_| Vec::new()).collect();
    let mut per_server = vec![0usize; o.endpoints.len()];
    let mut targets: Vec<usize> = (0..o.endpoints.len()).collect();
    if o.followers_only {
        let leader = Client::connect(&o.endpoints, config.clone())
            .and_then(|mut c| c.leader_status())
            .ok()
            .and_then(|s| s.leader_addr);
        targets.retain(|&i| Some(&o.endpoints[i]) != leader.as_ref());
        if targets.len() == o.endpoints.len() || targets.is_empty() {
            eprintln!("watchbench: cannot tell the followers among the endpoints");
            phase.store(STOP, Ordering::SeqCst);
            return ExitCode::from(1);
        }
    }
    for i in 0..o.watchers {
        let s = targets[i % targets.len()];
        match open_watch(&o.endpoints[s], i as u64 + 1) {
            Ok(c) => per_thread[i % o.watcher_threads].push(c),
            Err(e) => {
                eprintln!("watchbench: cannot watch: {e}");
                phase.store(STOP, Ordering::SeqCst);
                return ExitCode::from(1);
            }
        }
        per_server[s] += 1;
    }
    let stop_watchers = Arc::new(AtomicBool::new(false));
    let watch_threads: Vec<_> = per_thread
        .into_iter()
        .map(|conns| {
            let stop = stop_watchers.clone();
            let sample = o.sample;
            std::thread::spawn(move || watch_loop(conns, sample, stop))
        })
        .collect();
    // Let every watch be in place before the measured phase.
    std::thread::sleep(Duration::from_millis(500));
    counts[WATCHED as usize].store(0, Ordering::SeqCst);
    phase.store(WATCHED, Ordering::SeqCst);
    let watched_from = Instant::now();
    let (cpu_watched, srv_watched) = (own_cpu(), servers_cpu(&o.pids));
    std::thread::sleep(o.duration);
    phase.store(STOP, Ordering::SeqCst);
    let watched_for = watched_from.elapsed();
    let cpu_watched = own_cpu() - cpu_watched;
    let srv_watched = servers_cpu(&o.pids) - srv_watched;
    for w in writers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("watchbench: a writer failed: {e}");
                stop_watchers.store(true, Ordering::SeqCst);
                return ExitCode::from(1);
            }
            Err(_) => return ExitCode::from(1),
        }
    }
    // Give the watchers time to receive the last writes.
    std::thread::sleep(Duration::from_secs(2));
    stop_watchers.store(true, Ordering::SeqCst);
    let conns: Vec<WatchConn> = watch_threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();

    let alone = counts[ALONE as usize].load(Ordering::SeqCst) as f64 / o.duration.as_secs_f64();
    let watched_ops = counts[WATCHED as usize].load(Ordering::SeqCst);
    let watched = watched_ops as f64 / watched_for.as_secs_f64();
    let acks = acks.lock().unwrap();
    let ack_at: HashMap<u64, Instant> = acks.iter().copied().collect();
    let mut delays: Vec<u64> = Vec::new();
    let mut before_ack = 0u64;
    for c in &conns {
        for (rev, at) in &c.samples {
            if let Some(ack) = ack_at.get(rev) {
                if at < ack {
                    before_ack += 1;
                }
                delays.push(at.saturating_duration_since(*ack).as_micros() as u64);
            }
        }
    }
    delays.sort_unstable();
    let min_events = conns.iter().map(|c| c.events).min().unwrap_or(0);
    // Every sampled write acknowledged while watched must be at every watcher.
    let missing: usize = conns
        .iter()
        .map(|c| {
            let got: std::collections::HashSet<u64> = c.samples.iter().map(|s| s.0).collect();
            ack_at.keys().filter(|r| !got.contains(r)).count()
        })
        .sum();
    let complete = conns.len() == o.watchers && min_events >= watched_ops && missing == 0;
    println!(
        "writers {}, watchers {} ({} on the servers {}, {} reader threads), {} B values, \
         {:?} per phase",
        o.writers,
        conns.len(),
        per_server
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        if o.followers_only {
            "(followers only)"
        } else {
            "in turn"
        },
        o.watcher_threads,
        o.value_bytes,
        o.duration
    );
    let alone_ops = counts[ALONE as usize].load(Ordering::SeqCst) as f64;
    let per_write = |cpu: f64, ops: f64| cpu / ops.max(1.0) * 1e6;
    println!(
        "writes/s without watchers: {alone:.0} (CPU per second: servers {:.2} s, this \
         benchmark {:.2} s; servers' CPU per write: {:.0} µs)",
        srv_alone / o.duration.as_secs_f64(),
        cpu_alone / o.duration.as_secs_f64(),
        per_write(srv_alone, alone_ops)
    );
    println!(
        "writes/s with {} watchers: {watched:.0} ({:+.1} %) (CPU per second: servers {:.2} s, \
         this benchmark {:.2} s; servers' CPU per write: {:.0} µs)",
        conns.len(),
        (watched / alone - 1.0) * 100.0,
        srv_watched / watched_for.as_secs_f64(),
        cpu_watched / watched_for.as_secs_f64(),
        per_write(srv_watched, watched_ops as f64)
    );
    println!(
        "delay from acknowledgement to event (µs resolution, {} samples, {} arrived before the \
         writer saw its ack): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        delays.len(),
        before_ack,
        percentile(&delays, 0.50),
        percentile(&delays, 0.90),
        percentile(&delays, 0.99),
        percentile(&delays, 0.999),
        percentile(&delays, 1.0)
    );
    println!(
        "events: {} in all; each watcher at least {min_events} for {watched_ops} writes \
         acknowledged while watched; sampled writes missing at a watcher: {missing}: {}",
        conns.iter().map(|c| c.events).sum::<u64>(),
        if complete { "complete" } else { "INCOMPLETE" }
    );
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
