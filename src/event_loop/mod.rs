//! The server's one thread: one `mio::Poll` multiplexing the peer UDP socket, the client TCP
//! listener and connections (same port number), the syncer's waker and a timer wheel; it drives
//! raft → WAL → network in the order `raft.rs` prescribes. Protocol decisions belong to `raft`,
//! dictionary rules to `kv`, byte formats to `wire`; request handling (the glue between a
//! client's request, raft and kv) is in `server.rs`, opening the data directory and binding the
//! port in `start.rs`. Read DESIGN.md §1–2 first.
//!
//! # One iteration
//! 1. Wait for readiness or the next timer (not at all when raft has output pending).
//! 2. Drain every ready socket until `WouldBlock`: datagrams are stepped into raft; client frames
//!    are decoded in place and proposed (writes), queued for one ReadIndex round (linearizable
//!    reads) or answered at once (stale reads, status).
//! 3. Fire due timers: raft ticks, idle connections, housekeeping.
//! 4. Report batches the syncer made durable: send their `messages_after_persist`, then
//!    `raft.persisted(mark)`; a durable compaction snapshot goes to `raft.compact`.
//! 5. One `read_index` call for every linearizable read gathered in this iteration.
//! 6. Take one `Ready`: send `messages` now, hand ONE `WriteBatch` to the syncer (the leader does
//!    not wait for its own disk before replicating, thesis §10.2.1), apply `committed` to kv and
//!    answer the waiting clients, queue `read_states`.
//! 7. Take a snapshot when enough entries were applied since the last one.
//! 8. Flush every connection written to, once.
//!
//! # Followers redirect, they do not forward
//! A follower answers a write or a linearizable read with `NotLeader` and the leader's address
//! (the same `HOST:PORT` as its peer address). Forwarding would double the hops, hold a second
//! copy of every in-flight request on the follower, and make exactly-once and timeouts depend on
//! two connections instead of one; the client library follows the hint once and then talks to
//! the leader directly, which is what every client wants anyway.
//!
//! # Fail-stop and exit codes
//! A disk failure stops the process in the syncer (exit 74). A corrupt data directory refuses to
//! start (65). Configuration that cannot work exits 2; a runtime problem at start (port in use,
//! unwritable directory) exits 1. SIGINT and SIGTERM stop the loop cleanly: clients in flight get
//! `ShuttingDown`, the syncer finishes what it was given, the process exits 0.

mod start;

use crate::client_conn::ClientConn;
use crate::config::{ServerConfig, EXIT_RUNTIME};
use crate::kv::{Kv, KvConfig};
use crate::raft::{Raft, Role, SoftState};
use crate::storage::WriteBatch;
use crate::timer::TimerWheel;
use crate::types::*;
use crate::wal::Syncer;
use crate::wire::client::FrameLimits;
use crate::wire::peer::PeerCodec;
use log::{debug, error, info, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
pub use start::ServerError;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) const UDP: Token = Token(0);
pub(crate) const LISTENER: Token = Token(1);
pub(crate) const WAKER: Token = Token(2);
pub(crate) const CONN_BASE: usize = 3;

/// Connections accepted beyond `--max-connections` only to tell them so; past this many extra
/// the socket is closed without a word.
const OVER_LIMIT_GRACE: usize = 64;
/// How often housekeeping runs (reassembly expiry, dropped-datagram warnings, promotions,
/// timeouts of reads that lost their leader).
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// A linearizable read waits this long for its ReadIndex round before `Timeout`.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A write waits this long for its entry to be applied before `Timeout` (applied: maybe).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A voter being added waits this long for its learner phase to catch up.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Dropped-datagram warnings come at most this often (the counters are in status anyway).
const DROP_WARN_EVERY: Duration = Duration::from_secs(5);
/// At most this many ticks are made up for in one iteration after a stall.
const MAX_CATCH_UP_TICKS: u32 = 4;
/// Kernel socket buffers for the peer socket: bursts of AppendEntries must not overflow them.
const UDP_BUFFER_BYTES: i32 = 8 << 20;
/// Keys encoded per loop turn while a snapshot is being taken: a few milliseconds of work, so
/// heartbeats and acknowledgements keep flowing however big the dictionary is (encoding 100,000
/// keys at once stalled the loop for 60–200 ms, past the election timeout).
const SNAPSHOT_KEYS_PER_TURN: usize = 4096;
/// Name of the file in the data directory that holds the cluster id.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

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

#[derive(Clone, Copy, Debug)]
pub(crate) enum TimerKind {
    RaftTick,
    Housekeeping,
    Idle { key: usize, generation: u64 },
}

/// Where to send an answer: a connection (by slab key and generation) and the request id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplyTo {
    pub key: usize,
    pub generation: u64,
    pub request_id: u64,
}

/// What a client is waiting for once an entry is applied.
#[derive(Debug)]
pub(crate) enum WaitKind {
    /// A dictionary command: answered with kv's reply.
    Command,
    /// A membership change: answered `Done`.
    ConfChange,
    /// Adding a voter: the learner was added by this entry; promote it once caught up.
    AddVoter(NodeId),
}

#[derive(Debug)]
pub(crate) struct Waiter {
    pub index: LogIndex,
    pub term: Term,
    pub to: ReplyTo,
    pub kind: WaitKind,
    pub since: Instant,
}

/// A read waiting for its ReadIndex round, then for kv to reach the index.
#[derive(Debug)]
pub(crate) struct ReadWaiter {
    pub to: ReplyTo,
    pub query: Query,
}

#[derive(Debug)]
pub(crate) enum Query {
    Get(Vec<u8>),
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    },
    Len,
}

/// A learner to promote once it has caught up.
pub(crate) struct PromoteJob {
    pub id: NodeId,
    pub to: ReplyTo,
    pub deadline: Instant,
}

/// What to do when the syncer reports a token durable.
enum Persisting {
    /// A batch from a Ready: then send these and report the mark.
    Batch {
        token: Option<u64>,
        messages: Vec<Message>,
        mark: Option<(LogIndex, Term)>,
    },
    /// A compaction snapshot.
    Snapshot { token: u64, snapshot: Snapshot },
}

impl Persisting {
    fn token(&self) -> Option<u64> {
        match self {
            Persisting::Batch { token, .. } => *token,
            Persisting::Snapshot { token, .. } => Some(*token),
        }
    }
}

pub struct Server {
    pub(crate) cfg: ServerConfig,
    pub(crate) id: NodeId,
    pub(crate) cluster_id: u64,
    pub(crate) addr: SocketAddr,
    poll: Poll,
    udp: UdpSocket,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) syncer: Option<Syncer>,
    pub(crate) codec: PeerCodec,
    pub(crate) raft: Raft,
    pub(crate) kv: Kv,
    pub(crate) kv_cfg: KvConfig,
    pub(crate) limits: FrameLimits,
    pub(crate) conns: Slab<ClientConn>,
    real_conns: usize,
    next_generation: u64,
    timers: TimerWheel<TimerKind>,
    tick: Duration,
    tick_count: u64,
    next_tick_at: Instant,
    pub(crate) now: Instant,
    pub(crate) now_ms: u64,
    peers: BTreeMap<NodeId, SocketAddr>,
    peers_of: Membership,
    next_token: u64,
    persisting: VecDeque<Persisting>,
    /// Proposals waiting to be applied, in strictly increasing index order.
    pub(crate) writes: VecDeque<Waiter>,
    pub(crate) new_reads: Vec<ReadWaiter>,
    read_rounds: VecDeque<(u64, Instant, Vec<ReadWaiter>)>,
    ready_reads: VecDeque<(LogIndex, Vec<ReadWaiter>)>,
    next_read_ctx: u64,
    pub(crate) promote_jobs: Vec<PromoteJob>,
    snapshot_index: LogIndex,
    snapshot_in_flight: bool,
    applied_term: Term,
    applied_membership: Membership,
    pub(crate) soft: SoftState,
    recv_buf: Vec<u8>,
    pub(crate) prop_buf: Vec<u8>,
    pub(crate) frame_buf: Vec<u8>,
    dirty: Vec<usize>,
    resume: Vec<usize>,
    fired: Vec<TimerKind>,
    completed: Vec<u64>,
    drops_reported: u64,
    drops_warned_at: Option<Instant>,
    pub(crate) udp_send_drops: u64,
    /// Term and vote of the last hard state handed to the WAL (None: not known yet, so the
    /// first hard state is always written and synced).
    wal_term_vote: Option<(Term, Option<NodeId>)>,
    /// A commit-only hard state not yet handed to the WAL (see `handle_ready`).
    lazy_hard_state: Option<HardState>,
    /// A snapshot being encoded a slice per turn (see `maybe_snapshot`).
    pub(crate) snapshot_job: Option<(crate::kv::SnapshotEncoder, SnapshotMeta)>,
    /// Committed entries held back from kv while `snapshot_job` runs, in index order.
    pub(crate) held: VecDeque<Entry>,
}

pub(crate) fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    }
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

    /// Runs until SIGINT/SIGTERM (or `request_stop`).
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        while !STOP.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut timeout = self.timers.next_timeout(now);
            if self.raft.has_ready() || !self.resume.is_empty() || self.snapshot_job.is_some() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ServerError::runtime(format!("poll: {e}")));
                }
            }
            self.now = Instant::now();
            self.now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);

            let resume = std::mem::take(&mut self.resume);
            for key in resume {
                self.serve_conn(key, true);
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.recv_datagrams(),
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        let key = t - CONN_BASE;
                        if ev.is_writable() {
                            self.mark_dirty(key);
                        }
                        let closed = ev.is_read_closed() || ev.is_error();
                        if ev.is_readable() || closed {
                            self.serve_conn(key, closed);
                        }
                    }
                }
            }
            self.fire_timers();
            self.drain_syncer();
            self.start_read_round();
            self.handle_ready();
            self.maybe_snapshot();
            self.flush_conns();
        }
        info!(
            "n{} t{} {}: stopping on signal",
            self.id,
            self.raft.term().0,
            role_name(self.raft.role())
        );
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        let waiting: Vec<ReplyTo> = self
            .writes
            .iter()
            .map(|w| w.to)
            .chain(self.new_reads.iter().map(|r| r.to))
            .chain(
                self.read_rounds
                    .iter()
                    .flat_map(|r| r.2.iter().map(|w| w.to)),
            )
            .chain(
                self.ready_reads
                    .iter()
                    .flat_map(|r| r.1.iter().map(|w| w.to)),
            )
            .chain(self.promote_jobs.iter().map(|j| j.to))
            .collect();
        for to in waiting {
            self.answer_error(to, crate::wire::client::ErrorKind::ShuttingDown);
        }
        self.flush_conns();
        if let Some(s) = self.syncer.take() {
            s.shutdown();
        }
    }

    // ----- peers -----

    /// Rebuilds the peer address table when the membership changed.
    fn refresh_peers(&mut self) {
        if *self.raft.membership() == self.peers_of {
            return;
        }
        let m = self.raft.membership().clone();
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
                    "n{} t{} {}: member n{id} has an unusable address {:?}: {e}",
                    self.id,
                    self.raft.term().0,
                    role_name(self.raft.role()),
                    member.addr
                ),
            }
        }
        // Keep addresses of nodes that just left: the leader may still tell them about it.
        for (id, a) in &self.peers {
            peers.entry(*id).or_insert(*a);
        }
        self.peers = peers;
        self.peers_of = m;
    }

    fn recv_datagrams(&mut self) {
        // A socket error that repeats must not spin the loop: give up for this round.
        let mut errors = 0;
        while errors < 64 {
            match self.udp.recv_from(&mut self.recv_buf) {
                Ok((n, from)) => {
                    if let Some(msg) = self.codec.decode(&self.recv_buf[..n], self.tick_count) {
                        debug!(
                            "n{} <- n{} {} from {from}",
                            self.id,
                            msg.from,
                            msg.body.name()
                        );
                        // A node not yet in our membership (a joiner) is reachable at its source.
                        self.peers.entry(msg.from).or_insert(from);
                        self.raft.step(msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (a peer down) surface here on Linux; they are not ours to fix.
                    debug!("n{}: udp receive: {e}", self.id);
                    errors += 1;
                }
            }
        }
    }

    fn send_messages(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            let Some(addr) = self.peers.get(&msg.to).copied() else {
                debug!(
                    "n{}: no address for n{}; {} not sent",
                    self.id,
                    msg.to,
                    msg.body.name()
                );
                continue;
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
    }

    // ----- clients -----

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _peer)) => {
                    let over = self.real_conns >= self.cfg.max_connections;
                    if over && self.conns.len() >= self.cfg.max_connections + OVER_LIMIT_GRACE {
                        continue; // dropped: closes the socket
                    }
                    let _ = stream.set_nodelay(true);
                    let tls = match &self.tls {
                        Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                warn!("n{}: TLS session: {e}", self.id);
                                continue;
                            }
                        },
                        None => None,
                    };
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(key + CONN_BASE),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let generation = self.next_generation;
                    self.next_generation += 1;
                    let mut conn = ClientConn::new(
                        stream,
                        tls,
                        self.cfg.max_request_bytes,
                        generation,
                        self.now,
                    );
                    if over {
                        crate::wire::client::encode_response(
                            0,
                            &crate::wire::client::Response::Error(
                                crate::wire::client::ErrorKind::TooManyConnections {
                                    limit: self.cfg.max_connections as u64,
                                },
                            ),
                            conn.output(),
                        );
                        conn.close_after_flush();
                        conn.over_limit = true;
                    } else {
                        self.real_conns += 1;
                        if let Some(idle) = self.cfg.idle_timeout {
                            self.timers
                                .schedule(self.now + idle, TimerKind::Idle { key, generation });
                        }
                    }
                    entry.insert(conn);
                    self.mark_dirty(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: stop accepting this round, try again on the next event.
                    warn!("n{}: accept: {e}", self.id);
                    break;
                }
            }
        }
    }

    /// Reads and handles what a connection sent, within backpressure limits.
    pub(crate) fn serve_conn(&mut self, key: usize, peer_closed: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = conn.fill(self.now, peer_closed) {
            debug!("n{}: client connection closed: {e}", self.id);
            conn.dead = true;
            conn.discard_output();
        }
        self.handle_frames(key);
        self.mark_dirty(key);
    }

    pub(crate) fn flush_conns(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.flush().is_err() {
                conn.dead = true;
                conn.discard_output();
            }
            if conn.should_close() {
                self.close_conn(key);
                continue;
            }
            // Backpressure released, or input left unread: take up this connection again.
            if conn.wants_resume() {
                self.resume.push(key);
            }
        }
    }

    fn close_conn(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if !conn.over_limit {
            self.real_conns -= 1;
        }
    }

    // ----- timers -----

    fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.expire(self.now, &mut fired);
        for t in fired.drain(..) {
            match t {
                TimerKind::RaftTick => {
                    let mut n = 0;
                    while self.next_tick_at <= self.now && n < MAX_CATCH_UP_TICKS {
                        self.raft.tick();
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
                    self.housekeeping();
                    self.timers
                        .schedule(self.now + HOUSEKEEPING, TimerKind::Housekeeping);
                }
                TimerKind::Idle { key, generation } => {
                    let Some(idle) = self.cfg.idle_timeout else {
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.generation != generation {
                        continue;
                    }
                    let quiet = self.now.saturating_duration_since(conn.last_active);
                    if conn.inflight == 0 && quiet >= idle {
                        debug!(
                            "n{}: closing a client connection idle for {quiet:?}",
                            self.id
                        );
                        conn.close_after_flush();
                        self.mark_dirty(key);
                    } else {
                        let at = if conn.inflight > 0 {
                            self.now + idle
                        } else {
                            conn.last_active + idle
                        };
                        self.timers
                            .schedule(at, TimerKind::Idle { key, generation });
                    }
                }
            }
        }
        self.fired = fired;
    }

    fn housekeeping(&mut self) {
        self.codec.expire(self.tick_count);
        let total = self.codec.drops().total();
        let quiet = match self.drops_warned_at {
            Some(t) => self.now.saturating_duration_since(t) >= DROP_WARN_EVERY,
            None => true,
        };
        if total > self.drops_reported && quiet {
            self.drops_warned_at = Some(self.now);
            let summary: Vec<String> = self
                .codec
                .drops()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            warn!(
                "n{} t{} {}: dropped {} peer datagrams since the last report (totals: {})",
                self.id,
                self.raft.term().0,
                role_name(self.raft.role()),
                total - self.drops_reported,
                summary.join(" ")
            );
            self.drops_reported = total;
        }
        // Reads whose ReadIndex round never completed (leadership lost or no quorum).
        while let Some((_, since, _)) = self.read_rounds.front() {
            if self.now.saturating_duration_since(*since) < READ_TIMEOUT {
                break;
            }
            let (_, _, waiters) = self.read_rounds.pop_front().unwrap();
            for w in waiters {
                self.answer_error(w.to, crate::wire::client::ErrorKind::Timeout);
            }
        }
        // Writes that never got applied (this node cut off from the cluster). Proposals are
        // made in index order, so the oldest are at the front: stop at the first young one.
        while let Some(w) = self.writes.front() {
            if self.now.saturating_duration_since(w.since) < WRITE_TIMEOUT {
                break;
            }
            let w = self.writes.pop_front().unwrap();
            self.answer_error(w.to, crate::wire::client::ErrorKind::Timeout);
        }
        self.run_promotions();
    }

    // ----- persistence -----

    fn drain_syncer(&mut self) {
        let Some(syncer) = &self.syncer else {
            return;
        };
        let mut done = std::mem::take(&mut self.completed);
        syncer.drain_completed(&mut done);
        for token in done.drain(..) {
            match self.persisting.pop_front() {
                Some(p) if p.token() == Some(token) => self.release(p),
                other => panic!(
                    "syncer reported token {token} out of order (expected {:?})",
                    other.and_then(|p| p.token())
                ),
            }
            // Readies that needed no write but came after this batch.
            while matches!(
                self.persisting.front(),
                Some(Persisting::Batch { token: None, .. })
            ) {
                let p = self.persisting.pop_front().unwrap();
                self.release(p);
            }
        }
        self.completed = done;
    }

    fn release(&mut self, p: Persisting) {
        match p {
            Persisting::Batch { messages, mark, .. } => {
                self.send_messages(messages);
                if let Some((index, term)) = mark {
                    self.raft.persisted(index, term);
                }
            }
            Persisting::Snapshot { snapshot, .. } => {
                let index = snapshot.meta.index;
                self.raft.compact(snapshot);
                self.snapshot_in_flight = false;
                self.snapshot_index = self.snapshot_index.max(index);
                info!(
                    "n{} t{} {}: log compacted through index {}",
                    self.id,
                    self.raft.term().0,
                    role_name(self.raft.role()),
                    index.0
                );
            }
        }
    }

    fn handle_ready(&mut self) {
        if !self.raft.has_ready() {
            return;
        }
        let mut rd = self.raft.ready();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss);
        }
        if let Some(snap) = &rd.snapshot {
            match Kv::restore(&snap.data, self.kv_cfg.clone()) {
                Ok(kv) => {
                    // kv is replaced: a slice-wise encoding of the old one is void.
                    self.snapshot_job = None;
                    self.kv = kv;
                    self.applied_term = snap.meta.term;
                    self.applied_membership = snap.meta.membership.clone();
                    self.snapshot_index = snap.meta.index;
                    self.fail_writes_through(snap.meta.index);
                    info!(
                        "n{} t{} {}: installed snapshot at index {} ({} keys)",
                        self.id,
                        self.raft.term().0,
                        role_name(self.raft.role()),
                        snap.meta.index.0,
                        self.kv.len()
                    );
                }
                Err(e) => {
                    error!(
                        "n{}: the leader's snapshot does not restore: {e}; stopping",
                        self.id
                    );
                    log::logger().flush();
                    std::process::exit(EXIT_RUNTIME);
                }
            }
        }
        // Cheap when nothing changed (one comparison); a truncated config entry can change the
        // membership without a config entry in this Ready.
        self.refresh_peers();
        let mark = rd.persist_mark();
        // A hard state that only moves the commit index (same term and vote as the last one
        // handed to the WAL) does not need a sync of its own: Raft keeps the commit index
        // volatile (Figure 2), nothing sent vouches for it, and a restart re-learns it from the
        // leader. It rides along with the next batch that is written anyway instead, so an
        // acknowledgement round does not cost an extra fdatasync that the next batch of
        // entries would queue behind. Everything else about the Ready (its messages after
        // persist, its mark) still waits for every earlier batch, as for any Ready that needs
        // no write.
        let commit_only = rd.entries.is_empty()
            && rd.snapshot.is_none()
            && rd
                .hard_state
                .is_some_and(|hs| self.wal_term_vote == Some((hs.term, hs.vote)));
        if commit_only {
            self.lazy_hard_state = rd.hard_state.take();
        }
        let needs_persist = rd.needs_persist();
        self.send_messages(rd.messages);
        let token = if needs_persist {
            let t = self.next_token;
            self.next_token += 1;
            // A newer hard state supersedes a deferred commit-only one.
            let lazy = self.lazy_hard_state.take();
            let hard_state = rd.hard_state.or(lazy);
            if let Some(hs) = hard_state {
                self.wal_term_vote = Some((hs.term, hs.vote));
            }
            let batch = WriteBatch {
                snapshot: rd.snapshot,
                hard_state,
                entries: rd.entries,
            };
            if let Some(s) = &self.syncer {
                s.submit(t, batch);
            }
            Some(t)
        } else {
            None
        };
        if token.is_none() && self.persisting.is_empty() {
            self.send_messages(rd.messages_after_persist);
            if commit_only {
                // Every earlier batch is durable, and with them the term, the vote and the
                // entries through this mark.
                if let Some((index, term)) = mark {
                    self.raft.persisted(index, term);
                }
            }
        } else if token.is_some() || !rd.messages_after_persist.is_empty() {
            self.persisting.push_back(Persisting::Batch {
                token,
                messages: rd.messages_after_persist,
                mark,
            });
        }
        let any_committed = !rd.committed.is_empty();
        if self.snapshot_job.is_some() {
            // The encoding in progress describes kv as it is: apply these when it is done.
            self.held.extend(rd.committed);
        } else {
            self.apply_held();
            for e in &rd.committed {
                self.apply(e);
            }
        }
        for rs in rd.read_states {
            if let Some(pos) = self.read_rounds.iter().position(|r| r.0 == rs.ctx) {
                let (_, _, waiters) = self.read_rounds.remove(pos).unwrap();
                self.ready_reads.push_back((rs.index, waiters));
            }
        }
        self.serve_ready_reads();
        if any_committed {
            self.run_promotions();
        }
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let was_leader = self.soft.role == Role::Leader;
        if ss.role != self.soft.role || ss.term != self.soft.term || ss.leader != self.soft.leader {
            let what = if ss.role != self.soft.role {
                format!("became {}", role_name(ss.role))
            } else if ss.leader != self.soft.leader {
                "leader changed".to_string()
            } else {
                "term changed".to_string()
            };
            info!(
                "n{} t{} {}: {what} (leader {})",
                self.id,
                ss.term.0,
                role_name(ss.role),
                ss.leader
                    .map(|l| format!("n{l}"))
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        self.soft = ss;
        if was_leader && ss.role != Role::Leader {
            // Reads waiting for a confirmation this node can no longer give.
            let rounds: Vec<_> = self.read_rounds.drain(..).collect();
            let news = std::mem::take(&mut self.new_reads);
            for w in rounds.into_iter().flat_map(|r| r.2).chain(news) {
                let e = self.not_leader();
                self.answer_error(w.to, e);
            }
            let jobs = std::mem::take(&mut self.promote_jobs);
            for j in jobs {
                let e = self.not_leader();
                self.answer_error(j.to, e);
            }
        }
    }

    /// Applies one committed entry to kv and answers whoever waits for it.
    fn apply(&mut self, e: &Entry) {
        if e.index <= self.kv.applied_index() {
            return; // covered by a snapshot already restored
        }
        if e.kind == EntryKind::Config {
            if let Ok((m, _)) = Membership::decode(&e.data) {
                self.applied_membership = m;
            }
        }
        let reply = self.kv.apply(e);
        self.applied_term = e.term;
        while let Some(front) = self.writes.front() {
            if front.index > e.index {
                break;
            }
            let w = self.writes.pop_front().unwrap();
            if w.index < e.index {
                // Its index was passed without being applied here (covered by a snapshot).
                self.answer_error(w.to, crate::wire::client::ErrorKind::Timeout);
                continue;
            }
            if w.term != e.term {
                // Another leader's entry took this index: the proposal was lost, never applied.
                let err = self.lost_proposal();
                self.answer_error(w.to, err);
                continue;
            }
            match w.kind {
                WaitKind::Command => match &reply {
                    Some(r) => {
                        let resp = crate::server::reply_to_response(r);
                        self.answer(w.to, &resp);
                    }
                    None => self.answer(w.to, &crate::wire::client::Response::Done),
                },
                WaitKind::ConfChange => self.answer(w.to, &crate::wire::client::Response::Done),
                WaitKind::AddVoter(id) => self.promote_jobs.push(PromoteJob {
                    id,
                    to: w.to,
                    deadline: self.now + PROMOTE_TIMEOUT,
                }),
            }
        }
    }

    /// Fails every write waiting at or below `index` (replaced by an installed snapshot: the
    /// outcome is unknown here, so `Timeout`, which says "applied: maybe").
    fn fail_writes_through(&mut self, index: LogIndex) {
        while matches!(self.writes.front(), Some(w) if w.index <= index) {
            let w = self.writes.pop_front().unwrap();
            self.answer_error(w.to, crate::wire::client::ErrorKind::Timeout);
        }
    }

    fn start_read_round(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.new_reads);
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => self.read_rounds.push_back((ctx, self.now, reads)),
            Err(e) => {
                let err = self.propose_error(e);
                for w in reads {
                    self.answer_error(w.to, err.clone());
                }
            }
        }
    }

    fn serve_ready_reads(&mut self) {
        let applied = self.kv.applied_index();
        while let Some((index, _)) = self.ready_reads.front() {
            if *index > applied {
                break;
            }
            let (_, waiters) = self.ready_reads.pop_front().unwrap();
            for w in waiters {
                self.answer_query(w.to, &w.query);
            }
        }
    }

    /// Entries applied since the last snapshot before the next one. Before its first snapshot
    /// each node waits an extra share of `--snapshot-entries` that depends on its id, so the
    /// members of a cluster do not all write a snapshot at the same index: while a node's syncer
    /// writes a snapshot file its acknowledgements wait behind it, and if every follower did so
    /// at once the leader would hear no acknowledgement for longer than its check-quorum window
    /// and step down. The phase then persists, as every later snapshot is a fixed distance on.
    fn snapshot_due_entries(&self) -> u64 {
        let n = self.cfg.snapshot_entries;
        if self.snapshot_index.0 == 0 {
            n + n / 4 * (self.id.0 % 4)
        } else {
            n
        }
    }

    /// Applies the entries held back during a snapshot encoding.
    fn apply_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        for e in &held {
            self.apply(e);
        }
        self.serve_ready_reads();
        self.run_promotions();
    }

    /// Takes a snapshot once `--snapshot-entries` entries were applied since the last one.
    /// The dictionary is encoded `SNAPSHOT_KEYS_PER_TURN` keys per loop turn, applying nothing
    /// meanwhile (committed entries wait in `held`), so the loop never stalls for the whole
    /// dictionary: a stall longer than the election timeout costs the leader its followers (no
    /// heartbeats) or, on followers, the leader its quorum (no acknowledgements).
    fn maybe_snapshot(&mut self) {
        if let Some((enc, _)) = &mut self.snapshot_job {
            if !self.kv.snapshot_step(enc, SNAPSHOT_KEYS_PER_TURN) {
                return;
            }
            let (enc, meta) = self.snapshot_job.take().unwrap();
            let snapshot = Snapshot {
                meta,
                data: Arc::from(self.kv.snapshot_finish(enc)),
            };
            let token = self.next_token;
            self.next_token += 1;
            if let Some(s) = &self.syncer {
                s.submit_snapshot(token, snapshot.clone());
            }
            self.snapshot_in_flight = true;
            self.persisting
                .push_back(Persisting::Snapshot { token, snapshot });
            self.apply_held();
            return;
        }
        let applied = self.kv.applied_index();
        if self.snapshot_in_flight
            || applied.0 < self.snapshot_index.0 + self.snapshot_due_entries()
            || self.applied_term == Term(0)
        {
            return;
        }
        let meta = match self.raft.snapshot_meta_at(applied) {
            Some(m) => m,
            None => SnapshotMeta {
                index: applied,
                term: self.applied_term,
                membership: self.applied_membership.clone(),
            },
        };
        let mut enc = self.kv.snapshot_start();
        self.kv.snapshot_step(&mut enc, SNAPSHOT_KEYS_PER_TURN);
        self.snapshot_job = Some((enc, meta));
        // Finished (a small dictionary) or continued on the next turns.
        self.maybe_snapshot();
    }

    // ----- answers -----

    pub(crate) fn not_leader(&self) -> crate::wire::client::ErrorKind {
        let leader = self.raft.leader().filter(|l| *l != self.id);
        crate::wire::client::ErrorKind::NotLeader {
            leader: leader.map(|l| l.0),
            leader_addr: leader.and_then(|l| {
                self.raft
                    .membership()
                    .members
                    .get(&l)
                    .map(|m| m.addr.clone())
            }),
        }
    }

    /// The answer for a proposal whose entry was replaced by another leader's (applied: no).
    pub(crate) fn lost_proposal(&self) -> crate::wire::client::ErrorKind {
        if self.raft.role() == Role::Leader {
            crate::wire::client::ErrorKind::Unavailable(
                "leadership changed before the write committed; it was not applied".into(),
            )
        } else {
            self.not_leader()
        }
    }

    pub(crate) fn answer(&mut self, to: ReplyTo, resp: &crate::wire::client::Response) {
        let Some(conn) = self.conns.get_mut(to.key) else {
            return;
        };
        if conn.generation != to.generation {
            return;
        }
        conn.inflight = conn.inflight.saturating_sub(1);
        crate::wire::client::encode_response(to.request_id, resp, conn.output());
        self.mark_dirty(to.key);
    }

    /// Puts a connection on the end-of-iteration flush list (once).
    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    pub(crate) fn answer_error(&mut self, to: ReplyTo, e: crate::wire::client::ErrorKind) {
        self.answer(to, &crate::wire::client::Response::Error(e));
    }
}
