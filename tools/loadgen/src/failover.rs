//! The failover measurement: start a local cluster, and N times kill -9 the leader at a random
//! phase of its heartbeat interval while a client writes every millisecond; time crash → a new
//! leader elected (seen by polling Status on the survivors) and crash → the first acknowledged
//! write sent after the crash; restart the victim, let it catch up, repeat. Reports percentiles of
//! both and draws their CDFs (`svg.rs`). Owns the writer thread and the trial loop; the processes
//! are `cluster.rs`'s.

use crate::args::{FailoverConfig, Format};
use crate::cluster::{LocalCluster, StatusPoller};
use crate::hist::Histogram;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use zatt::wire::client::{
    decode_response, encode_request, split_frame, ErrorKind, FrameLimits, Request, Response,
};

/// One acknowledged write: when it was sent and when its acknowledgement arrived, as ns after
/// the common start.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub sent_ns: u64,
    pub acked_ns: u64,
}

/// A client that sends one put every `interval` to whoever it believes leads, following
/// NotLeader hints and moving to the next endpoint when a connection dies, as an application
/// would. Pipelined: it does not wait for an answer before the next send.
struct Writer {
    endpoints: Vec<SocketAddr>,
    target: usize,
    target_addr: SocketAddr,
    conn: Option<TcpStream>,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    /// Send times of requests in flight, by id (ids grow by one per send).
    in_flight: std::collections::VecDeque<(u64, u64)>,
    next_id: u64,
    limits: FrameLimits,
}

impl Writer {
    fn connect(&mut self) {
        self.conn = TcpStream::connect_timeout(&self.target_addr, Duration::from_millis(50))
            .ok()
            .and_then(|s| {
                s.set_nodelay(true).ok()?;
                // Blocking with timeouts: the writer sleeps in read() until an answer arrives or
                // it is time to send, so it wakes only when there is something to do.
                s.set_write_timeout(Some(Duration::from_millis(50))).ok()?;
                Some(s)
            });
        self.rbuf.clear();
        self.in_flight.clear();
        if self.conn.is_none() {
            self.next_endpoint();
        }
    }

    fn next_endpoint(&mut self) {
        self.target = (self.target + 1) % self.endpoints.len();
        self.target_addr = self.endpoints[self.target];
        self.conn = None;
    }

    fn send(&mut self, now_ns: u64) {
        if self.conn.is_none() {
            self.connect();
        }
        let Some(c) = self.conn.as_mut() else { return };
        if self.in_flight.len() >= 10_000 {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        encode_request(
            id,
            &Request::Put {
                session: None,
                key: b"failover-probe".to_vec(),
                value: id.to_le_bytes().to_vec(),
            },
            &mut self.out,
        );
        // A small frame on an idle socket: it goes out whole or the connection is broken.
        match c.write(&self.out) {
            Ok(n) if n == self.out.len() => self.in_flight.push_back((id, now_ns)),
            _ => self.next_endpoint(),
        }
    }

    /// Waits up to `wait` for answers; acknowledged writes go to `acks`, stamped when read.
    fn receive(&mut self, wait: Duration, t0: Instant, acks: &mpsc::Sender<Ack>) {
        let Some(c) = self.conn.as_mut() else {
            std::thread::sleep(wait);
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        if c.set_read_timeout(Some(wait.max(Duration::from_micros(10))))
            .is_err()
        {
            self.next_endpoint();
            return;
        }
        match c.read(&mut chunk) {
            Ok(0) => {
                self.next_endpoint();
                return;
            }
            Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => {
                self.next_endpoint();
                return;
            }
        }
        let now_ns = t0.elapsed().as_nanos() as u64;
        let mut redirect = None;
        while let Ok(Some((len, _))) = split_frame(&self.rbuf, &self.limits) {
            let decoded = decode_response(&self.rbuf[..len], &self.limits);
            self.rbuf.drain(..len);
            let Ok((id, resp)) = decoded else { continue };
            let sent = match self.in_flight.iter().position(|(i, _)| *i == id) {
                Some(p) => self.in_flight.remove(p).map(|(_, s)| s).unwrap_or(now_ns),
                None => continue,
            };
            match resp {
                Response::Written { .. } => {
                    let _ = acks.send(Ack {
                        sent_ns: sent,
                        acked_ns: now_ns,
                    });
                }
                Response::Error(ErrorKind::NotLeader { leader_addr, .. }) => {
                    redirect = Some(leader_addr.and_then(|a| a.parse::<SocketAddr>().ok()));
                }
                _ => {}
            }
        }
        match redirect {
            Some(Some(addr)) if addr != self.target_addr => {
                self.target_addr = addr;
                if let Some(i) = self.endpoints.iter().position(|e| *e == addr) {
                    self.target = i;
                }
                self.conn = None;
            }
            Some(None) => self.next_endpoint(),
            _ => {}
        }
    }
}

fn spawn_writer(
    endpoints: Vec<SocketAddr>,
    interval: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
    acks: mpsc::Sender<Ack>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = Writer {
            target_addr: endpoints[0],
            endpoints,
            target: 0,
            conn: None,
            rbuf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(128),
            in_flight: Default::default(),
            next_id: 1,
            limits: FrameLimits::default(),
        };
        let step_ns = interval.as_nanos() as u64;
        let mut next_ns = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let now = t0.elapsed().as_nanos() as u64;
            if now >= next_ns {
                w.send(now);
                next_ns = next_ns.max(now.saturating_sub(step_ns)) + step_ns;
            }
            let now = t0.elapsed().as_nanos() as u64;
            w.receive(Duration::from_nanos(next_ns.saturating_sub(now)), t0, &acks);
        }
    })
}

/// One trial's result, in milliseconds after the kill.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub elected_ms: f64,
    pub first_ack_ms: f64,
}

pub struct FailoverReport {
    pub trials: Vec<Trial>,
    pub failed: usize,
    pub config_line: String,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

pub fn run(cfg: &FailoverConfig, log: &mut dyn Write) -> Result<FailoverReport, String> {
    let dir = match &cfg.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("zatt-failover-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut extra = Vec::new();
    if let Some(e) = &cfg.election_timeout {
        extra.extend(["--election-timeout".to_string(), e.clone()]);
    }
    if let Some(h) = &cfg.heartbeat_interval {
        extra.extend(["--heartbeat-interval".to_string(), h.clone()]);
    }
    let mut cluster = LocalCluster::start(&cfg.zattd, &dir, cfg.base_port, cfg.servers, extra)?;
    let config_line = format!(
        "{} servers, election timeout {}, heartbeat {}, a write every {:?}, {} trials",
        cfg.servers,
        cfg.election_timeout.as_deref().unwrap_or("default"),
        cfg.heartbeat_interval.as_deref().unwrap_or("default"),
        cfg.write_interval,
        cfg.trials
    );
    let (mut leader, _) = cluster.wait_for_leader(Duration::from_secs(30))?;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let writer = spawn_writer(
        cluster.addrs.clone(),
        cfg.write_interval,
        t0,
        stop.clone(),
        tx,
    );
    let mut rng = cfg.seed | 1;
    let mut trials = Vec::new();
    let mut failed = 0;
    let ns = |t: Instant| t.duration_since(t0).as_nanos() as u64;
    let result = (|| -> Result<(), String> {
        for trial in 0..cfg.trials {
            // Steady state first: a leader, and writes being acknowledged again.
            let settle_deadline = Instant::now() + cfg.trial_timeout;
            let settle_from = ns(Instant::now());
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(a) if a.sent_ns >= settle_from => break,
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(e) => return Err(format!("writer stopped: {e}")),
                }
                if Instant::now() >= settle_deadline {
                    return Err(format!(
                        "trial {trial}: no write acknowledged within {:?} before the kill",
                        cfg.trial_timeout
                    ));
                }
            }
            let (l, st) = cluster.wait_for_leader(cfg.trial_timeout)?;
            leader = l;
            let old_term = st.term;
            // A random phase of the heartbeat interval, after a little steady running.
            let hb_ns = cfg.heartbeat_for_phase.as_nanos().max(1) as u64;
            let delay = Duration::from_nanos(20_000_000 + xorshift(&mut rng) % hb_ns);
            std::thread::sleep(delay);
            let mut pollers: Vec<(usize, StatusPoller)> = (0..cfg.servers)
                .filter(|&i| i != leader)
                .map(|i| (i, StatusPoller::new(cluster.addrs[i])))
                .collect();
            // Open the pollers' connections before the kill so the first poll costs no connect.
            for (_, p) in pollers.iter_mut() {
                let _ = p.poll(Duration::from_millis(200));
            }
            while rx.try_recv().is_ok() {}
            let crash = Instant::now();
            cluster.kill(leader);
            let crash_ns = ns(crash);
            let deadline = crash + cfg.trial_timeout;
            let mut elected: Option<Duration> = None;
            let mut first_ack: Option<Duration> = None;
            while (elected.is_none() || first_ack.is_none()) && Instant::now() < deadline {
                if elected.is_none() {
                    for (_, p) in pollers.iter_mut() {
                        if let Some(s) = p.poll(Duration::from_millis(100)) {
                            if s.role == "leader" && s.term > old_term {
                                elected = Some(crash.elapsed());
                                break;
                            }
                        }
                    }
                }
                while let Ok(a) = rx.try_recv() {
                    if first_ack.is_none() && a.sent_ns > crash_ns {
                        first_ack = Some(Duration::from_nanos(a.acked_ns - crash_ns));
                    }
                }
                if elected.is_some() && first_ack.is_none() {
                    if let Ok(a) = rx.recv_timeout(Duration::from_millis(1)) {
                        if a.sent_ns > crash_ns {
                            first_ack = Some(Duration::from_nanos(a.acked_ns - crash_ns));
                        }
                    }
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            match (elected, first_ack) {
                (Some(e), Some(a)) => {
                    let t = Trial {
                        elected_ms: e.as_secs_f64() * 1e3,
                        first_ack_ms: a.as_secs_f64() * 1e3,
                    };
                    let _ = writeln!(
                        log,
                        "trial {:>4}: killed node {} (term {old_term}): new leader after {:.1} ms, first write acknowledged after {:.1} ms",
                        trial + 1,
                        leader + 1,
                        t.elected_ms,
                        t.first_ack_ms
                    );
                    trials.push(t);
                }
                _ => {
                    failed += 1;
                    let _ = writeln!(
                        log,
                        "trial {:>4}: killed node {}: no recovery within {:?} (elected {elected:?}, first ack {first_ack:?})",
                        trial + 1,
                        leader + 1,
                        cfg.trial_timeout
                    );
                }
            }
            // Bring the victim back and let it catch up before the next kill, so every trial
            // starts from a full cluster.
            cluster.start_server(leader)?;
            let (_, st) = cluster.wait_for_leader(cfg.trial_timeout)?;
            cluster.wait_caught_up(leader, st.commit_index, cfg.trial_timeout)?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    cluster.stop_all();
    result?;
    if cfg.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(FailoverReport {
        trials,
        failed,
        config_line,
    })
}

fn hist_ms(v: &[f64]) -> Histogram {
    let mut h = Histogram::new();
    for x in v {
        h.record((x * 1e6) as u64);
    }
    h
}

impl FailoverReport {
    pub fn elected_ms(&self) -> Vec<f64> {
        self.trials.iter().map(|t| t.elected_ms).collect()
    }

    pub fn first_ack_ms(&self) -> Vec<f64> {
        self.trials.iter().map(|t| t.first_ack_ms).collect()
    }

    pub fn render(&self, format: Format) -> String {
        let series = [
            ("elected_ms", self.elected_ms()),
            ("first_ack_ms", self.first_ack_ms()),
        ];
        match format {
            Format::Json => {
                let mut s = format!(
                    "{{\"config\":{},\"trials\":{},\"failed\":{}",
                    crate::report::json_str(&self.config_line),
                    self.trials.len(),
                    self.failed
                );
                for (name, v) in &series {
                    let h = hist_ms(v);
                    let ms = |ns: u64| ns as f64 / 1e6;
                    s.push_str(&format!(
                        ",\"{name}\":{{\"min\":{:.2},\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"max\":{:.2}}}",
                        ms(h.min_ns()),
                        ms(h.percentile_ns(50.0)),
                        ms(h.percentile_ns(90.0)),
                        ms(h.percentile_ns(99.0)),
                        ms(h.max_ns())
                    ));
                }
                s.push('}');
                s
            }
            Format::Text => {
                let mut s = format!(
                    "failover: {}\ncompleted trials: {}, failed: {}\n",
                    self.config_line,
                    self.trials.len(),
                    self.failed
                );
                for (name, v) in &series {
                    let h = hist_ms(v);
                    let ms = |ns: u64| ns as f64 / 1e6;
                    let label = if *name == "elected_ms" {
                        "crash → new leader       "
                    } else {
                        "crash → first acked write"
                    };
                    s.push_str(&format!(
                        "{label} ms: min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}\n",
                        ms(h.min_ns()),
                        ms(h.percentile_ns(50.0)),
                        ms(h.percentile_ns(90.0)),
                        ms(h.percentile_ns(99.0)),
                        ms(h.max_ns())
                    ));
                }
                s
            }
        }
    }

    pub fn svg(&self) -> String {
        crate::svg::cdf(
            &format!(
                "Leader failover: kill -9 of the leader, {} trials ({} failed)",
                self.trials.len(),
                self.failed
            ),
            &self.config_line,
            "milliseconds after kill -9 of the leader",
            &[
                ("crash → new leader elected", &self.elected_ms(), "#1f77b4"),
                (
                    "crash → first acknowledged write",
                    &self.first_ack_ms(),
                    "#ff7f0e",
                ),
            ],
        )
    }
}
