//! The server's I/O loop: one thread, one `mio::Poll` multiplexing the peer UDP socket, the
//! client TCP listener and connections (same port number), the syncer's waker and a timer
//! wheel. It knows bytes and sockets, not Raft or the dictionary: every decision about a
//! message, a request or a durable batch is the host's (`crate::host`), which this loop drives
//! with events and which acts back through `Output`, implemented here by `Io` (datagrams out
//! through the peer codec, answers into connection buffers, batches to the syncer thread).
//! Opening the data directory and binding the port are in `start.rs`, connections in
//! `clients.rs` and `conn.rs`, the timer wheel in `timer.rs`.
//!
//! # One iteration
//! 1. Wait for readiness or the next timer (not at all when the host wants another turn).
//! 2. Drain every ready socket until `WouldBlock`: datagrams are decoded and given to the host;
//!    client frames are cut from the connection's buffer and given to the host in place.
//! 3. Fire due timers: Raft ticks, idle connections, housekeeping.
//! 4. Tell the host which tokens the syncer made durable.
//! 5. End the host's turn (its ReadIndex round, one `Ready`, a snapshot slice).
//! 6. Flush every connection written to, once.
//!
//! # Fail-stop and exit codes
//! A disk failure stops the process in the syncer (exit 74). A corrupt data directory refuses to
//! start (65). Configuration that cannot work exits 2; a runtime problem at start (port in use,
//! unwritable directory) exits 1, and so does a host that cannot go on (a leader's snapshot that
//! does not restore). SIGINT and SIGTERM stop the loop cleanly: clients in flight get
//! `ShuttingDown`, the syncer finishes what it was given, the process exits 0.

mod clients;
mod conn;
mod http;
mod metrics;
mod recover;
mod start;
mod timer;
mod udp;

use crate::config::{ServerConfig, EXIT_RUNTIME, EXIT_USAGE};
use crate::host::{Host, IoStatus, Now, Output, ReplyTo};
use crate::storage::WriteBatch;
use crate::types::*;
use crate::wal::identity::Identity;
use crate::wal::syncer::Datagram;
use crate::wal::Syncer;
use crate::wire::client::{encode_response, encode_value_response, FrameLimits, Response};
use crate::wire::peer::{Inbound, PeerCodec};
use conn::ClientConn;
use log::{debug, info, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Poll, Token};
use slab::Slab;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use timer::TimerWheel;

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
const CONN_BASE: usize = 3;

/// How often housekeeping runs (reassembly expiry, dropped-datagram warnings, the host's
/// timeouts and promotions).
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Dropped-datagram warnings come at most this often (the counters are in status anyway).
const DROP_WARN_EVERY: Duration = Duration::from_secs(5);
/// At most this many ticks are made up for in one iteration after a stall.
const MAX_CATCH_UP_TICKS: u32 = 4;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that ask the loop to stop (checked at least every tick).
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Asks a running loop to stop, as SIGTERM does.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Why the server could not start or run: the exit status and one line.
#[derive(Debug)]
pub struct ServerError {
    pub exit_code: i32,
    pub message: String,
}

impl ServerError {
    fn runtime(message: impl Into<String>) -> ServerError {
        ServerError {
            exit_code: EXIT_RUNTIME,
            message: message.into(),
        }
    }
    fn usage(message: impl Into<String>) -> ServerError {
        ServerError {
            exit_code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

/// A data directory that cannot be opened: its own exit status (65 when corrupt) and message.
impl From<crate::wal::WalError> for ServerError {
    fn from(e: crate::wal::WalError) -> ServerError {
        ServerError {
            exit_code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone, Copy, Debug)]
enum TimerKind {
    RaftTick,
    Housekeeping,
    Idle {
        key: usize,
        generation: u64,
    },
    /// Free disk space is measured (`metrics::DISK_CHECK`).
    DiskCheck,
    HttpDeadline {
        key: usize,
        generation: u64,
    },
}

/// The parts of the server the host's outputs reach.
struct Io {
    id: NodeId,
    udp: UdpSocket,
    codec: PeerCodec,
    /// Peer addresses: the membership's, resolved, plus senders not (yet) in it.
    peers: BTreeMap<NodeId, SocketAddr>,
    conns: Slab<ClientConn>,
    /// Connections written to since the last flush.
    dirty: Vec<usize>,
    syncer: Syncer,
    udp_send_drops: u64,
    /// The host's time at the start of this loop turn (answers' latency is measured on it).
    mono: Duration,
    metrics: metrics::LoopMetrics,
    /// The data directory's incarnation and the peers' pinned so far, and where it is kept.
    identity: Identity,
    data_dir: PathBuf,
}

impl Io {
    /// Stores the identity after a pin changed. A pin that cannot be made durable must not be
    /// acted on: this is a disk failure, and stops the server like any other (exit 74).
    fn store_identity(&self) {
        if let Err(e) = self.identity.store(&self.data_dir) {
            crate::wal::syncer::exit_on_disk_failure(&format!(
                "cannot store the peers' incarnations: {e}"
            ));
        }
    }

    /// Where `msg` goes, or `None` (logged) when its peer's address is not known.
    fn peer_addr(&self, msg: &Message) -> Option<SocketAddr> {
        let addr = self.peers.get(&msg.to).copied();
        if addr.is_none() {
            debug!(
                "n{}: no address for n{}; {} not sent",
                self.id,
                msg.to,
                msg.body.name()
            );
        }
        addr
    }

    /// Puts a connection on the end-of-iteration flush list (once).
    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The connection an answer is for, if it is still open: one request fewer in flight, and
    /// on the flush list.
    fn answering(&mut self, to: ReplyTo) -> Option<&mut ClientConn> {
        let conn = self
            .conns
            .get_mut(to.conn)
            .filter(|c| c.generation == to.generation)?;
        conn.inflight = conn.inflight.saturating_sub(1);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(to.conn);
        }
        Some(conn)
    }
}

impl Output for Io {
    fn send(&mut self, msg: Message) {
        let Some(addr) = self.peer_addr(&msg) else {
            return;
        };
        let udp = &self.udp;
        let drops = &mut self.udp_send_drops;
        self.codec.encode(&msg, &mut |d: &[u8]| {
            if udp.send_to(d, addr).is_err() {
                // Full socket buffer or an unreachable peer: Raft retransmits.
                *drops += 1;
            }
        });
    }

    fn answer(&mut self, to: ReplyTo, resp: &Response) {
        let error = match resp {
            Response::Error(k) => Some(k),
            _ => None,
        };
        self.metrics
            .answered(to.op, error, self.mono.saturating_sub(to.since));
        if let Some(conn) = self.answering(to) {
            encode_response(to.request_id, resp, conn.output());
        }
    }

    fn answer_value(&mut self, to: ReplyTo, value: Option<&[u8]>, revision: u64, applied: u64) {
        self.metrics
            .answered(to.op, None, self.mono.saturating_sub(to.since));
        if let Some(conn) = self.answering(to) {
            encode_value_response(to.request_id, value, revision, applied, conn.output());
        }
    }

    fn stream(&mut self, to: ReplyTo, encode: &mut dyn FnMut(&mut Vec<u8>)) {
        let Some(conn) = self
            .conns
            .get_mut(to.conn)
            .filter(|c| c.generation == to.generation && !c.dead)
        else {
            return;
        };
        encode(conn.output());
        self.mark_dirty(to.conn);
    }

    fn pending_bytes(&self, to: ReplyTo) -> Option<usize> {
        self.conns
            .get(to.conn)
            .filter(|c| c.generation == to.generation && !c.dead)
            .map(|c| c.output_pending())
    }

    fn submit_batch(
        &mut self,
        token: u64,
        batch: WriteBatch,
        then_send: Vec<Message>,
        quiet: bool,
    ) {
        let mut datagrams = Vec::with_capacity(then_send.len());
        for msg in then_send {
            let key = crate::host::ack_key(&msg).map(|(to, term)| (to.0, term.0));
            let Some(to) = self.peer_addr(&msg) else {
                continue;
            };
            let first = datagrams.len();
            self.codec.encode(&msg, &mut |d: &[u8]| {
                datagrams.push(Datagram {
                    to,
                    bytes: d.to_vec(),
                    key,
                })
            });
            if datagrams.len() - first > 1 {
                // A fragment must not be superseded by another message's.
                for d in &mut datagrams[first..] {
                    d.key = None;
                }
            }
        }
        self.syncer.submit_then_send(token, batch, datagrams, quiet);
    }

    fn await_storage(&mut self) {
        self.syncer.want_wake();
    }

    fn submit_snapshot(&mut self, token: u64, snapshot: Snapshot) {
        self.syncer.submit_snapshot(token, snapshot);
    }

    /// Rebuilds the peer address table for a new membership.
    fn membership(&mut self, m: &Membership) {
        let mut peers = BTreeMap::new();
        for (id, member) in &m.members {
            if *id == self.id {
                continue;
            }
            match crate::config::resolve(&member.addr) {
                Ok(a) => {
                    peers.insert(*id, a);
                }
                Err(e) => warn!(
                    "n{}: member n{id} has an unusable address {:?}: {e}",
                    self.id, member.addr
                ),
            }
        }
        // Keep addresses of nodes that just left: the leader may still tell them about it.
        for (id, a) in &self.peers {
            peers.entry(*id).or_insert(*a);
        }
        self.peers = peers;
    }

    fn pin_peer(&mut self, peer: NodeId, incarnation: u64) {
        self.identity.pins.insert(peer, incarnation);
        self.store_identity();
        self.codec.pin(peer, incarnation);
        info!(
            "n{}: n{peer} is known by its data directory {incarnation:016x} from now on",
            self.id
        );
    }

    fn unpin_peer(&mut self, peer: NodeId) {
        if self.identity.pins.remove(&peer).is_some() {
            self.store_identity();
        }
        self.codec.unpin(peer);
    }

    fn send_probe(&mut self, to: NodeId, known_as: u64, reply: bool, member: bool) {
        let Some(addr) = self.peers.get(&to).copied() else {
            return;
        };
        let udp = &self.udp;
        self.codec
            .encode_probe(to, known_as, reply, member, &mut |d: &[u8]| {
                let _ = udp.send_to(d, addr);
            });
    }

    fn compacted(&mut self) {
        release_freed_memory();
    }

    fn io_status(&self) -> IoStatus {
        let (fsync_p50_us, fsync_p99_us) = self.syncer.fsync_latency_us();
        let mut dropped: Vec<(String, u64)> = self
            .codec
            .drops()
            .iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        dropped.push((
            "SendFailed".to_string(),
            self.udp_send_drops + self.syncer.send_drops(),
        ));
        IoStatus {
            wal_bytes: self.syncer.size_bytes(),
            fsync_p50_us,
            fsync_p99_us,
            dropped_datagrams: dropped,
        }
    }
}

pub struct Server {
    cfg: ServerConfig,
    cluster_id: u64,
    addr: SocketAddr,
    host: Host,
    io: Io,
    poll: Poll,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: FrameLimits,
    real_conns: usize,
    next_generation: u64,
    timers: TimerWheel<TimerKind>,
    tick: Duration,
    tick_count: u64,
    next_tick_at: Instant,
    /// The monotonic origin of the host's time.
    origin: Instant,
    now: Instant,
    recv_buf: udp::RecvBatch,
    /// Connections to take up again after a flush (backpressure released, input left).
    resume: Vec<usize>,
    fired: Vec<TimerKind>,
    completed: Vec<u64>,
    drops_reported: u64,
    drops_warned_at: Option<Instant>,
    /// The `--metrics-listen` endpoint, when asked for.
    http: Option<http::Http>,
    /// When `start` began, until the first turn has reported how long start-up took.
    started: Option<Instant>,
}

impl Server {
    /// The cluster id every datagram carries.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The address bound for peers (UDP) and clients (TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address bound for `--metrics-listen`, if given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// The host's time now.
    fn host_now(&self) -> Now {
        Now {
            mono: self.now.saturating_duration_since(self.origin),
            wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Runs until SIGINT/SIGTERM (or `request_stop`).
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        // Measured before the first request: a server started on a full disk refuses writes
        // from the start.
        self.check_disk();
        self.timers
            .schedule(Instant::now() + metrics::DISK_CHECK, TimerKind::DiskCheck);
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut timeout = self.timers.next_timeout(now);
            if let Some(due) = self.host.watch_due_at() {
                // Watchers whose changes wait for their frame interval: a turn by then.
                let left = due.saturating_sub(now.saturating_duration_since(self.origin));
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            // (Tokens the host asked to hear of (`await_storage`) that completed before the
            // syncer saw the wish are taken now: no wake is coming for them.)
            if self.host.wants_turn()
                || !self.resume.is_empty()
                || self.io.syncer.awaited_completed()
            {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ServerError::runtime(format!("poll: {e}")));
                }
            }
            self.now = Instant::now();
            let now = self.host_now();
            self.io.mono = now.mono;

            let resume = std::mem::take(&mut self.resume);
            for key in resume {
                self.serve_conn(key, true, now);
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.recv_datagrams(),
                    LISTENER => self.accept(),
                    WAKER => {}
                    http::HTTP_LISTENER => self.http_accept(),
                    Token(t) if t > http::HTTP_BASE => self.http_ready(t - http::HTTP_BASE - 1),
                    Token(t) => {
                        let key = t - CONN_BASE;
                        if ev.is_writable() {
                            self.io.mark_dirty(key);
                        }
                        let closed = ev.is_read_closed() || ev.is_error();
                        if ev.is_readable() || closed {
                            self.serve_conn(key, closed, now);
                        }
                    }
                }
            }
            self.fire_timers(now);
            self.drain_syncer()?;
            self.host
                .end_turn(&mut self.io, now)
                .map_err(|f| ServerError::runtime(format!("{f}; stopping")))?;
            self.flush_conns();
            if let Some(t) = self.started {
                if !self.host.wants_turn() {
                    self.started = None;
                    self.report_start(t);
                }
            }
        }
        info!("{}: stopping on signal", self.host.who());
        self.host.shutdown(&mut self.io);
        self.flush_conns();
        // Dropping the syncer makes everything submitted durable, then stops its thread.
        Ok(())
    }

    fn recv_datagrams(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.io.udp.as_raw_fd();
        // A socket error that repeats must not spin the loop: give up for this round.
        let mut errors = 0;
        while errors < 64 {
            match self.recv_buf.recv(fd) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = self.recv_buf.datagram(i);
                        match self.io.codec.decode_inbound(d, self.tick_count) {
                            Some(Inbound::Raft {
                                msg,
                                from_incarnation,
                                to_incarnation,
                            }) => {
                                debug!(
                                    "n{} <- n{} {} from {from:?}",
                                    self.io.id,
                                    msg.from,
                                    msg.body.name()
                                );
                                // A node not yet in our membership (a joiner) is reachable at
                                // its source.
                                if let Some(from) = from {
                                    self.io.peers.entry(msg.from).or_insert(from);
                                }
                                self.host.peer_message(
                                    &mut self.io,
                                    msg,
                                    from_incarnation,
                                    to_incarnation,
                                );
                            }
                            Some(Inbound::Probe(p)) => {
                                if let Some(from) = from {
                                    self.io.peers.entry(p.from).or_insert(from);
                                }
                                self.host.probe(&mut self.io, &p);
                            }
                            // Answers to probes this server no longer sends (it runs).
                            Some(Inbound::ProbeReply(_)) | None => {}
                        }
                    }
                    if n < udp::BATCH {
                        break; // the queue was empty: the next datagram raises a new edge
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (a peer down) surface here on Linux; they are not ours to fix.
                    debug!("n{}: udp receive: {e}", self.io.id);
                    errors += 1;
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Now) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for t in fired.drain(..) {
            match t {
                TimerKind::RaftTick => {
                    let mut n = 0;
                    while self.next_tick_at <= self.now && n < MAX_CATCH_UP_TICKS {
                        self.host.tick();
                        self.tick_count += 1;
                        self.next_tick_at += self.tick;
                        n += 1;
                    }
                    if self.next_tick_at <= self.now {
                        self.next_tick_at = self.now + self.tick;
                    }
                    self.timers.schedule(self.next_tick_at, TimerKind::RaftTick);
                }
                TimerKind::Housekeeping => {
                    self.housekeeping(now);
                    self.timers
                        .schedule(self.now + HOUSEKEEPING, TimerKind::Housekeeping);
                }
                TimerKind::Idle { key, generation } => self.idle_check(key, generation),
                TimerKind::DiskCheck => {
                    self.check_disk();
                    self.timers
                        .schedule(self.now + metrics::DISK_CHECK, TimerKind::DiskCheck);
                }
                TimerKind::HttpDeadline { key, generation } => self.http_deadline(key, generation),
            }
        }
        self.fired = fired;
    }

    fn housekeeping(&mut self, now: Now) {
        // A receive cut short by a socket error can leave datagrams queued with no new edge
        // to announce them (see `udp::RecvBatch::recv`): take them up here at the latest.
        self.recv_datagrams();
        self.io.codec.expire(self.tick_count);
        let total = self.io.codec.drops().total();
        let quiet = match self.drops_warned_at {
            Some(t) => self.now.saturating_duration_since(t) >= DROP_WARN_EVERY,
            None => true,
        };
        if total > self.drops_reported && quiet {
            self.drops_warned_at = Some(self.now);
            let summary: Vec<String> = self
                .io
                .codec
                .drops()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            warn!(
                "{}: dropped {} peer datagrams since the last report (totals: {})",
                self.host.who(),
                total - self.drops_reported,
                summary.join(" ")
            );
            self.drops_reported = total;
        }
        self.host.housekeeping(&mut self.io, now);
    }

    /// The start-up time, once the first turns have applied what the log held as committed
    /// (what a restart must do before it serves reads from its dictionary again).
    fn report_start(&self, t: Instant) {
        let kv = self.host.kv();
        info!(
            "{}: serving {} ms after start: {} keys, applied through index {}",
            self.host.who(),
            t.elapsed().as_millis(),
            kv.len(),
            kv.applied_index().0
        );
    }

    /// Tells the host which tokens the syncer made durable, in order.
    fn drain_syncer(&mut self) -> Result<(), ServerError> {
        let mut done = std::mem::take(&mut self.completed);
        self.io.syncer.drain_completed(&mut done);
        for token in done.drain(..) {
            self.host
                .durable(&mut self.io, token)
                .map_err(|f| ServerError::runtime(format!("{f}; stopping")))?;
        }
        self.completed = done;
        Ok(())
    }
}

/// Hands the allocator's free pages back to the system. A compaction frees up to
/// `--snapshot-entries` log entries at once, interleaved with the dictionary's records; glibc
/// keeps freed memory below the top of its heap resident for reuse, so without this the
/// resident set stays at the log's high-water mark between compactions (about 15 B per key of
/// a 1M-key dictionary, perf/memory.sh). Entries allocated later reuse the released pages as
/// they would have reused the free lists. It walks the free lists on the loop thread: 0.2–4 ms
/// per compaction at 1M keys under 64 writers (measured), once per `--snapshot-entries`; off
/// the loop it would still hold the allocator lock the loop's allocations wait on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointer; it walks the allocator's own free lists under the
    // allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
