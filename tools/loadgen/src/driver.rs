//! The load path: a few threads, each running one mio poll loop over its share of the
//! connections, encoding requests straight into reused per-connection buffers and matching
//! responses to in-flight slots by request id. Owns the closed loop (a freed slot is refilled at
//! once), the open loop (a fixed timetable; latency counts from the intended send time, so a
//! stalled server cannot hide its stall by slowing the sender: no coordinated omission), the
//! warm-up, the stop rule, timeouts, reconnects and leader hints. Must not allocate per request:
//! keys are formatted into one buffer, the value is one buffer, and the two hot responses
//! (`Written`, `Value`) are classified by their opcode byte without being decoded (see
//! `FastPath`); every other response goes through `wire::client::decode_response`.
//!
//! What is measured: a request counts when it is issued (closed loop) or scheduled (open loop)
//! after the warm-up and before the stop; the run ends when all of those have been answered or
//! timed out, and `seconds` runs from the end of the warm-up to the later of the stop and the last
//! server answer to one of them (a request the load generator itself timed out does not stretch
//! it). `--start-at` waits for a wall-clock time after the leader is found and any preload, so
//! that load generators on several machines begin together.

use crate::args::{OpKind, ReadConsistency, RunConfig, Stop};
use crate::hist::Histogram;
use crate::report::{live_line, unix_now_ns, ErrorCounts, Load, Settings, Summary};
use crate::tls::TlsTarget;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zatt::wire::client::{
    decode_response, encode_request_view, encode_response, encode_value_response, split_frame,
    Consistency, ErrorKind, FrameLimits, RequestView, Response,
};

/// Bits of a request id that name the slot; the rest is a per-connection sequence number, so a
/// late answer to a slot that has since been reused is recognised and ignored.
const SLOT_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const TIMER_TOKEN: Token = Token(usize::MAX - 1);
/// How often timeouts, reconnects and held connections are looked at.
const HOUSEKEEPING_NS: u64 = 20_000_000;
const RECONNECT_DELAY_NS: u64 = 100_000_000;
/// A TCP handshake not done by then has failed (the host is down or unreachable).
const CONNECT_TIMEOUT_NS: u64 = 500_000_000;
/// A follower that knows no leader: wait this long before sending there again.
const NO_LEADER_HOLD_NS: u64 = 20_000_000;
const READ_CHUNK: usize = 64 * 1024;

/// What one answer meant to the load generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A get of a key that holds nothing: a success, counted apart.
    NotFound,
    NotLeader(Option<SocketAddr>),
    Error(&'static str),
}

/// The stable name of a server error, for "errors by kind".
pub fn error_name(e: &ErrorKind) -> &'static str {
    match e {
        ErrorKind::NotLeader { .. } => "not_leader",
        ErrorKind::TooLarge { .. } => "too_large",
        ErrorKind::Busy => "busy",
        ErrorKind::TooManyInFlight { .. } => "too_many_in_flight",
        ErrorKind::TooManyConnections { .. } => "too_many_connections",
        ErrorKind::SessionExpired => "session_expired",
        ErrorKind::StaleRequest => "stale_request",
        ErrorKind::Timeout => "server_timeout",
        ErrorKind::Unavailable(_) => "unavailable",
        ErrorKind::Invalid(_) => "invalid",
        ErrorKind::ConfChange(_) => "conf_change",
        ErrorKind::ShuttingDown => "shutting_down",
        ErrorKind::Compacted { .. } => "compacted",
        ErrorKind::WatchOverflow { .. } => "watch_overflow",
        ErrorKind::NoSpace { .. } => "no_space",
    }
}

/// Recognises the two answers of the load path from their opcode byte and length, learnt at start
/// from `wire`'s own encoder (so nothing here restates the format): `Written` is fixed-size, and a
/// `Value` frame's presence byte sits right after its fixed fields.
#[derive(Debug, Clone)]
pub struct FastPath {
    written_op: u8,
    written_len: usize,
    value_op: u8,
    presence_at: usize,
    absent: u8,
    limits: FrameLimits,
}

impl FastPath {
    pub fn new(limits: FrameLimits) -> FastPath {
        let mut b = Vec::new();
        encode_response(0, &Response::Written { revision: 0 }, &mut b);
        let (written_op, written_len) = (b[12], b.len());
        b.clear();
        encode_value_response(0, None, 0, 0, &mut b);
        let presence_at = b.len() - 1;
        FastPath {
            written_op,
            written_len,
            value_op: b[12],
            presence_at,
            absent: b[presence_at],
            limits,
        }
    }

    /// Classifies one whole frame answering a get (`read`) or a put.
    pub fn classify(&self, frame: &[u8], read: bool) -> Outcome {
        if frame.len() > 12 {
            let op = frame[12];
            if op == self.written_op && frame.len() == self.written_len && !read {
                return Outcome::Ok;
            }
            if op == self.value_op && frame.len() > self.presence_at && read {
                return if frame[self.presence_at] == self.absent {
                    Outcome::NotFound
                } else {
                    Outcome::Ok
                };
            }
        }
        match decode_response(frame, &self.limits) {
            Ok((_, Response::Written { .. })) if !read => Outcome::Ok,
            Ok((_, Response::Value { value, .. })) if read => {
                if value.is_some() {
                    Outcome::Ok
                } else {
                    Outcome::NotFound
                }
            }
            Ok((_, Response::Error(ErrorKind::NotLeader { leader_addr, .. }))) => {
                Outcome::NotLeader(leader_addr.and_then(|a| a.parse().ok()))
            }
            Ok((_, Response::Error(e))) => Outcome::Error(error_name(&e)),
            Ok(_) => Outcome::Error("unexpected_response"),
            Err(_) => Outcome::Error("malformed_response"),
        }
    }
}

/// The requests a thread sends.
#[derive(Debug, Clone)]
struct Workload {
    op: OpKind,
    read_ratio: f64,
    consistency: Consistency,
    key_space: u64,
    /// Keys in order (thread, thread + threads, ...) instead of at random: the preload.
    sequential: bool,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    id: u64,
    start_ns: u64,
    sent_ns: u64,
    busy: bool,
    read: bool,
    measured: bool,
}

enum Transport {
    Plain(TcpStream),
    Tls(TcpStream, Box<rustls::ClientConnection>),
}

impl Transport {
    fn stream(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) | Transport::Tls(s, _) => s,
        }
    }
}

struct Conn {
    addr: SocketAddr,
    transport: Option<Transport>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    seq: u64,
    rbuf: Vec<u8>,
    rlo: usize,
    rhi: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    /// Down: when to try connecting again.
    retry_at_ns: u64,
    /// The TCP handshake is under way (the connect is non-blocking, so a host that does not
    /// answer cannot stall the other connections of this thread); it fails at this time.
    connecting_until_ns: Option<u64>,
    /// Send nothing new before this time (a follower knew no leader).
    hold_until_ns: u64,
    /// A follower named the leader: move there once the requests in flight are answered.
    redirect: Option<SocketAddr>,
}

impl Conn {
    fn new(addr: SocketAddr, window: usize) -> Conn {
        Conn {
            addr,
            transport: None,
            slots: vec![Slot::default(); window],
            free: (0..window as u32).rev().collect(),
            in_flight: 0,
            seq: 1,
            rbuf: vec![0; READ_CHUNK],
            rlo: 0,
            rhi: 0,
            wbuf: Vec::with_capacity(window.min(1024) * 160),
            wpos: 0,
            dirty: false,
            retry_at_ns: 0,
            connecting_until_ns: None,
            hold_until_ns: 0,
            redirect: None,
        }
    }
}

/// What one thread sends the reporter once per second.
pub struct LiveReport {
    second: u64,
    ops: u64,
    errors: u64,
    hist: Histogram,
}

enum ToReporter {
    Live(LiveReport),
    Done,
}

#[derive(Default)]
struct ThreadResult {
    hist: Histogram,
    /// Only for `--op mix`: the gets' and the puts' latencies apart.
    get_hist: Histogram,
    put_hist: Histogram,
    ops: u64,
    not_found: u64,
    errors: ErrorCounts,
    /// Last answer to a measured request, ns after the common start.
    last_measured_ns: u64,
    stop_ns: u64,
    /// Open loop: the longest a measured request waited past its scheduled time before it could
    /// be sent (all of its connections' windows were full).
    max_send_lag_ns: u64,
    fatal: Option<String>,
}

struct OpenLoop {
    period_ns: f64,
    /// Offset of this thread's timetable, so threads interleave instead of sending together.
    phase_ns: f64,
    next_idx: u64,
    timer: TimerFd,
}

impl OpenLoop {
    fn due_ns(&self) -> u64 {
        (self.phase_ns + self.next_idx as f64 * self.period_ns) as u64
    }
}

/// A CLOCK_MONOTONIC timerfd registered with mio: epoll's own timeout has millisecond
/// resolution, too coarse for an open-loop timetable of thousands of requests per second.
struct TimerFd {
    fd: i32,
    armed_for_ns: u64,
}

impl TimerFd {
    fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the fd is owned by this struct and closed in Drop.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TimerFd {
            fd,
            armed_for_ns: u64::MAX,
        })
    }

    /// Fires once, `delay_ns` from now (at least 1 ns: 0 would disarm).
    fn arm(&mut self, delay_ns: u64, target_ns: u64) {
        if self.armed_for_ns == target_ns {
            return;
        }
        let d = delay_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (d / 1_000_000_000) as libc::time_t,
                tv_nsec: (d % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and a fully initialised itimerspec.
        unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) };
        self.armed_for_ns = target_ns;
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading at most 8 bytes into an 8-byte buffer.
        unsafe { libc::read(self.fd, buf.as_mut_ptr() as *mut libc::c_void, 8) };
        self.armed_for_ns = u64::MAX;
    }
}

impl Drop for TimerFd {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns.
        unsafe { libc::close(self.fd) };
    }
}

struct Engine {
    poll: Poll,
    conns: Vec<Conn>,
    wl: Workload,
    rng: u64,
    seq_next: u64,
    seq_stride: u64,
    key_buf: Vec<u8>,
    value: Vec<u8>,
    fast: FastPath,
    tls: Option<TlsTarget>,
    /// Every endpoint given: a connection whose server cannot be reached tries the next, whose
    /// NotLeader answer then names the leader (after a failover, say).
    endpoints: Vec<SocketAddr>,
    t0: Instant,
    measure_start_ns: u64,
    stop: Stop,
    quota: u64,
    issued_measured: u64,
    closed_loop: bool,
    open: Option<OpenLoop>,
    timeout_ns: u64,
    dirty: Vec<usize>,
    rr: usize,
    result: ThreadResult,
    interval: Histogram,
    interval_ops: u64,
    interval_errors: u64,
    second: u64,
    live: Option<mpsc::Sender<ToReporter>>,
    stop_issuing_at_ns: Option<u64>,
    /// Last answer or successful connect, for giving up on a cluster that is gone.
    last_progress_ns: u64,
}

fn now_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

/// Starts a non-blocking connect; the socket becomes writable once the handshake is done (or
/// has failed: see `Engine::finish_connect`).
fn connect(addr: SocketAddr, tls: Option<&TlsTarget>) -> io::Result<Transport> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(match tls {
        None => Transport::Plain(s),
        Some(t) => {
            let mut c = crate::tls::client_session(&t.config, &t.name).map_err(io::Error::other)?;
            // The request window bounds what is buffered; rustls's own limit would only split writes.
            c.set_buffer_limit(None);
            Transport::Tls(s, Box::new(c))
        }
    })
}

impl Engine {
    fn format_key(&mut self, k: u64) {
        // Zero-padded decimal, right-aligned, with a 'k' in front when there is room.
        let buf = &mut self.key_buf;
        buf.iter_mut().for_each(|b| *b = b'0');
        let mut n = k;
        let mut i = buf.len();
        while n > 0 && i > 0 {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        if i > 0 {
            buf[0] = b'k';
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap, and seeded per thread so runs repeat.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn may_issue(&self, start_ns: u64) -> bool {
        if start_ns < self.measure_start_ns {
            return true;
        }
        match self.stop {
            Stop::Total(_) => self.issued_measured < self.quota,
            Stop::Duration(d) => start_ns < self.measure_start_ns + d.as_nanos() as u64,
        }
    }

    fn conn_ready(&self, ci: usize, now: u64) -> bool {
        let c = &self.conns[ci];
        c.transport.is_some()
            && c.connecting_until_ns.is_none()
            && c.redirect.is_none()
            && c.hold_until_ns <= now
            && !c.free.is_empty()
    }

    /// Encodes one request into connection `ci`'s write buffer.
    fn issue(&mut self, ci: usize, start_ns: u64, now: u64) {
        let read = match self.wl.op {
            OpKind::Put => false,
            OpKind::Get => true,
            OpKind::Mix => {
                ((self.next_rand() >> 11) as f64 / (1u64 << 53) as f64) < self.wl.read_ratio
            }
        };
        let k = if self.wl.sequential {
            let k = self.seq_next;
            self.seq_next += self.seq_stride;
            k
        } else {
            self.next_rand() % self.wl.key_space
        };
        self.format_key(k);
        let measured = start_ns >= self.measure_start_ns;
        if measured {
            self.issued_measured += 1;
        }
        let c = &mut self.conns[ci];
        let slot = c.free.pop().expect("issue called without a free slot") as usize;
        let id = (c.seq << SLOT_BITS) | slot as u64;
        c.seq += 1;
        let req = if read {
            RequestView::Get {
                key: &self.key_buf,
                consistency: self.wl.consistency,
            }
        } else {
            RequestView::Put {
                session: None,
                key: &self.key_buf,
                value: &self.value,
            }
        };
        encode_request_view(id, &req, &mut c.wbuf);
        c.slots[slot] = Slot {
            id,
            start_ns,
            sent_ns: now,
            busy: true,
            read,
            measured,
        };
        c.in_flight += 1;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(ci);
        }
    }

    /// Closed loop: every free slot of a ready connection gets a request.
    fn fill(&mut self, ci: usize, now: u64) {
        if !self.closed_loop {
            return;
        }
        while self.conn_ready(ci, now) && self.may_issue(now) {
            self.issue(ci, now, now);
        }
    }

    /// Open loop: sends every request whose time has come, while some connection has room.
    fn dispatch_due(&mut self, now: u64) {
        let n = self.conns.len();
        loop {
            let due = match &self.open {
                Some(o) => o.due_ns(),
                None => return,
            };
            if due > now || !self.may_issue(due) {
                return;
            }
            let mut found = None;
            for i in 0..n {
                let ci = (self.rr + i) % n;
                if self.conn_ready(ci, now) {
                    found = Some(ci);
                    break;
                }
            }
            let Some(ci) = found else { return };
            self.rr = (ci + 1) % n;
            if due >= self.measure_start_ns {
                self.result.max_send_lag_ns =
                    self.result.max_send_lag_ns.max(now.saturating_sub(due));
            }
            self.issue(ci, due, now);
            if let Some(o) = &mut self.open {
                o.next_idx += 1;
            }
        }
    }

    fn count_error(&mut self, kind: &'static str, measured: bool) {
        self.interval_errors += 1;
        if measured {
            self.result.errors.add(kind, 1);
        }
    }

    fn complete(&mut self, ci: usize, slot: usize, outcome: Outcome, now: u64) {
        let c = &mut self.conns[ci];
        let s = c.slots[slot];
        c.slots[slot].busy = false;
        c.free.push(slot as u32);
        c.in_flight -= 1;
        // The load generator's own timeouts are not progress: only an answer from a server is.
        if outcome != Outcome::Error("timeout") {
            self.last_progress_ns = now;
        }
        match outcome {
            Outcome::Ok | Outcome::NotFound => {
                let lat = now.saturating_sub(s.start_ns);
                self.interval.record(lat);
                self.interval_ops += 1;
                if s.measured {
                    self.result.hist.record(lat);
                    if self.wl.op == OpKind::Mix {
                        if s.read {
                            self.result.get_hist.record(lat);
                        } else {
                            self.result.put_hist.record(lat);
                        }
                    }
                    self.result.ops += 1;
                    if outcome == Outcome::NotFound {
                        self.result.not_found += 1;
                    }
                    self.result.last_measured_ns = self.result.last_measured_ns.max(now);
                }
            }
            Outcome::NotLeader(hint) => {
                self.count_error("not_leader", s.measured);
                let c = &mut self.conns[ci];
                match hint {
                    Some(a) if a != c.addr => c.redirect = Some(a),
                    _ => c.hold_until_ns = now + NO_LEADER_HOLD_NS,
                }
            }
            Outcome::Error(kind) => {
                self.count_error(kind, s.measured);
                // A server's answer ends the measured period no earlier than it came; the load
                // generator giving up on a request does not, or one lost request would stretch
                // the period by --timeout and cut the reported throughput.
                if s.measured && kind != "timeout" {
                    self.result.last_measured_ns = self.result.last_measured_ns.max(now);
                }
            }
        }
    }

    /// Every request in flight on the connection fails with `kind`; the connection is dropped
    /// and retried later.
    fn fail_conn(&mut self, ci: usize, kind: &'static str, now: u64) {
        let c = &mut self.conns[ci];
        if let Some(mut t) = c.transport.take() {
            let _ = self.poll.registry().deregister(t.stream());
        }
        let lost: Vec<bool> = c
            .slots
            .iter()
            .filter(|s| s.busy)
            .map(|s| s.measured)
            .collect();
        for (i, s) in c.slots.iter_mut().enumerate() {
            if s.busy {
                s.busy = false;
                c.free.push(i as u32);
            }
        }
        c.in_flight = 0;
        c.rlo = 0;
        c.rhi = 0;
        c.wbuf.clear();
        c.wpos = 0;
        c.retry_at_ns = now + RECONNECT_DELAY_NS;
        for measured in lost {
            self.count_error(kind, measured);
        }
    }

    fn try_connect(&mut self, ci: usize, now: u64) {
        let addr = self.conns[ci].addr;
        match connect(addr, self.tls.as_ref()) {
            Ok(mut t) => {
                let token = Token(ci);
                if self
                    .poll
                    .registry()
                    .register(t.stream(), token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    self.conns[ci].retry_at_ns = now + RECONNECT_DELAY_NS;
                    return;
                }
                let c = &mut self.conns[ci];
                c.transport = Some(t);
                c.connecting_until_ns = Some(now + CONNECT_TIMEOUT_NS);
                c.redirect = None;
                c.hold_until_ns = 0;
            }
            Err(_) => self.connect_failed(ci, now),
        }
    }

    /// Called on a connecting connection's first event: done, failed, or not yet.
    fn finish_connect(&mut self, ci: usize, now: u64) {
        let Some(t) = self.conns[ci].transport.as_mut() else {
            return;
        };
        let s = t.stream();
        let done = match s.take_error() {
            Ok(None) => match s.peer_addr() {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => false,
            },
            _ => false,
        };
        if !done {
            self.connect_failed(ci, now);
            return;
        }
        self.conns[ci].connecting_until_ns = None;
        self.last_progress_ns = now;
        self.fill(ci, now);
        // A TLS handshake must start even before there is anything to send.
        self.mark_dirty(ci);
    }

    /// A connect that failed or timed out: counted, and retried later at the next endpoint, so
    /// that a dead leader's connections find the cluster again through a follower's hint.
    fn connect_failed(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        if let Some(mut t) = c.transport.take() {
            let _ = self.poll.registry().deregister(t.stream());
        }
        c.connecting_until_ns = None;
        c.retry_at_ns = now + RECONNECT_DELAY_NS;
        if self.endpoints.len() > 1 {
            let next = self
                .endpoints
                .iter()
                .position(|a| *a == c.addr)
                .map_or(0, |i| (i + 1) % self.endpoints.len());
            c.addr = self.endpoints[next];
        }
        self.count_error("connect", now >= self.measure_start_ns);
    }

    fn mark_dirty(&mut self, ci: usize) {
        if !self.conns[ci].dirty {
            self.conns[ci].dirty = true;
            self.dirty.push(ci);
        }
    }

    /// Pushes buffered requests to the socket (through TLS when configured).
    fn flush(&mut self, ci: usize, now: u64) {
        let c = &mut self.conns[ci];
        c.dirty = false;
        let Some(t) = c.transport.as_mut() else {
            return;
        };
        let res: io::Result<()> = (|| match t {
            Transport::Plain(s) => {
                while c.wpos < c.wbuf.len() {
                    match s.write(&c.wbuf[c.wpos..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => c.wpos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if c.wpos == c.wbuf.len() {
                    c.wbuf.clear();
                    c.wpos = 0;
                }
                Ok(())
            }
            Transport::Tls(s, tls) => {
                if !c.wbuf.is_empty() {
                    tls.writer().write_all(&c.wbuf)?;
                    c.wbuf.clear();
                }
                while tls.wants_write() {
                    match tls.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        })();
        if res.is_err() {
            self.fail_conn(ci, "connection", now);
        }
    }

    /// Reads everything available and completes every whole answer in it.
    fn on_readable(&mut self, ci: usize, now: u64) {
        loop {
            let c = &mut self.conns[ci];
            if c.rhi == c.rbuf.len() {
                if c.rlo > 0 {
                    c.rbuf.copy_within(c.rlo..c.rhi, 0);
                    c.rhi -= c.rlo;
                    c.rlo = 0;
                } else {
                    // One frame larger than the buffer (a big value): grow, within the frame limit.
                    let n = (c.rbuf.len() * 2).min(self.fast.limits.max_frame_bytes + READ_CHUNK);
                    c.rbuf.resize(n, 0);
                }
            }
            let Some(t) = c.transport.as_mut() else {
                return;
            };
            let space = c.rbuf.len() - c.rhi;
            let plain = matches!(t, Transport::Plain(_));
            let r = match t {
                Transport::Plain(s) => s.read(&mut c.rbuf[c.rhi..]),
                Transport::Tls(s, tls) => read_tls(s, tls, &mut c.rbuf[c.rhi..]),
            };
            match r {
                Ok(0) => {
                    self.fail_conn(ci, "connection", now);
                    return;
                }
                Ok(n) => {
                    self.conns[ci].rhi += n;
                    if !self.parse_frames(ci, now) {
                        return;
                    }
                    // A short read emptied the socket's buffer: bytes arriving later raise a new
                    // edge, so the read that would only say WouldBlock is one syscall saved per
                    // answer (the load generator's CPU is shared with the servers).
                    if plain && n < space {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail_conn(ci, "connection", now);
                    return;
                }
            }
        }
        // TLS may owe the server handshake or key-update records.
        if matches!(self.conns[ci].transport, Some(Transport::Tls(..))) {
            self.mark_dirty(ci);
        }
    }

    /// Completes every whole frame buffered on `ci`; false when the connection was dropped.
    fn parse_frames(&mut self, ci: usize, now: u64) -> bool {
        loop {
            let c = &self.conns[ci];
            let (len, id) = match split_frame(&c.rbuf[c.rlo..c.rhi], &self.fast.limits) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(_) => {
                    self.fail_conn(ci, "malformed_response", now);
                    return false;
                }
            };
            let slot = (id & SLOT_MASK) as usize;
            let known = c.slots.get(slot).is_some_and(|s| s.busy && s.id == id);
            if known {
                let frame = &c.rbuf[c.rlo..c.rlo + len];
                let outcome = self.fast.classify(frame, c.slots[slot].read);
                self.conns[ci].rlo += len;
                self.complete(ci, slot, outcome, now);
                self.fill(ci, now);
            } else {
                // An answer to a request that already timed out.
                self.conns[ci].rlo += len;
            }
        }
        let c = &mut self.conns[ci];
        if c.rlo == c.rhi {
            c.rlo = 0;
            c.rhi = 0;
        }
        true
    }

    fn housekeeping(&mut self, now: u64) {
        for ci in 0..self.conns.len() {
            if self.conns[ci].transport.is_none() {
                if self.conns[ci].retry_at_ns <= now && self.may_issue(now) {
                    self.try_connect(ci, now);
                }
                continue;
            }
            if let Some(until) = self.conns[ci].connecting_until_ns {
                if now >= until {
                    self.connect_failed(ci, now);
                }
                continue;
            }
            if let Some(addr) = self.conns[ci].redirect {
                if self.conns[ci].in_flight == 0 {
                    let c = &mut self.conns[ci];
                    if let Some(mut t) = c.transport.take() {
                        let _ = self.poll.registry().deregister(t.stream());
                    }
                    c.addr = addr;
                    c.rlo = 0;
                    c.rhi = 0;
                    c.wbuf.clear();
                    c.wpos = 0;
                    self.try_connect(ci, now);
                }
                continue;
            }
            let timeout_ns = self.timeout_ns;
            let expired: Vec<usize> = (self.conns[ci].slots.iter().enumerate())
                .filter(|(_, s)| s.busy && now.saturating_sub(s.sent_ns) > timeout_ns)
                .map(|(i, _)| i)
                .collect();
            for i in expired {
                self.complete(ci, i, Outcome::Error("timeout"), now);
            }
            self.fill(ci, now);
        }
    }

    fn report_second(&mut self, now: u64) {
        let sec = now / 1_000_000_000;
        if sec == self.second {
            return;
        }
        if let Some(tx) = &self.live {
            let hist = std::mem::take(&mut self.interval);
            let _ = tx.send(ToReporter::Live(LiveReport {
                second: self.second,
                ops: self.interval_ops,
                errors: self.interval_errors,
                hist,
            }));
        } else {
            self.interval.clear();
        }
        self.interval_ops = 0;
        self.interval_errors = 0;
        self.second = sec;
    }

    fn in_flight(&self) -> usize {
        self.conns.iter().map(|c| c.in_flight).sum()
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let now = now_ns(self.t0);
        for ci in 0..self.conns.len() {
            self.try_connect(ci, now);
        }
        let mut next_housekeeping = now + HOUSEKEEPING_NS;
        loop {
            let now = now_ns(self.t0);
            // Timeouts first, so that a request that has expired is counted as such (and the
            // run can end normally) before the no-progress rule below looks at the clock.
            if now >= next_housekeeping {
                self.housekeeping(now);
                self.report_second(now);
                next_housekeeping = now + HOUSEKEEPING_NS;
            }
            self.dispatch_due(now);
            while let Some(ci) = self.dirty.pop() {
                self.flush(ci, now);
            }
            let can_issue = self.may_issue(now)
                && self
                    .open
                    .as_ref()
                    .map_or(true, |o| self.may_issue(o.due_ns()));
            if !can_issue {
                if self.stop_issuing_at_ns.is_none() {
                    self.stop_issuing_at_ns = Some(now);
                }
                if self.in_flight() == 0 {
                    break;
                }
            }
            if now.saturating_sub(self.last_progress_ns) > self.timeout_ns + 2 * HOUSEKEEPING_NS {
                // No server has answered anything, and no connection opened, for a whole
                // timeout (the requests in flight have been counted as timeouts by now): give up
                // rather than wait for ever on a cluster that is gone or stuck.
                // The load generator was offering load until now: the measured period ends
                // here, not at the last answer, or a run that stalled would report the rate it
                // had before the stall.
                self.result.errors.add("no_progress", 1);
                if self.stop_issuing_at_ns.is_none() {
                    self.stop_issuing_at_ns = Some(now);
                }
                break;
            }
            let timeout_ns = next_housekeeping - now;
            if let Some(o) = &mut self.open {
                let due = o.due_ns();
                if due > now && due < next_housekeeping {
                    o.timer.arm(due - now, due);
                }
            }
            if self
                .poll
                .poll(&mut events, Some(Duration::from_nanos(timeout_ns)))
                .is_err()
            {
                continue;
            }
            for ev in events.iter() {
                // Read the clock per event, not once per wakeup: answers handled late in a busy
                // batch would otherwise be timed as if they had arrived at its start.
                let now = now_ns(self.t0);
                if ev.token() == TIMER_TOKEN {
                    if let Some(o) = &mut self.open {
                        o.timer.drain();
                    }
                    continue;
                }
                let ci = ev.token().0;
                if ci >= self.conns.len() || self.conns[ci].transport.is_none() {
                    continue;
                }
                if self.conns[ci].connecting_until_ns.is_some() {
                    self.finish_connect(ci, now);
                    if self.conns[ci].connecting_until_ns.is_some()
                        || self.conns[ci].transport.is_none()
                    {
                        continue;
                    }
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(ci, now);
                }
                if ev.is_writable() && self.conns[ci].transport.is_some() {
                    self.mark_dirty(ci);
                }
            }
        }
        // The last, partial second is not reported: its rate would read low.
        self.result.stop_ns = self.stop_issuing_at_ns.unwrap_or(0);
    }
}

/// Reads plaintext through rustls: moves TLS records from the socket, then hands out the
/// decrypted bytes. `WouldBlock` when neither side has anything.
fn read_tls(
    s: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
    out: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(out) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match tls.read_tls(s) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Per connection: its endpoint and how many requests it keeps in flight.
fn plan_connections(cfg: &RunConfig, targets: &[SocketAddr]) -> Vec<(SocketAddr, usize)> {
    (0..cfg.conns)
        .map(|i| {
            let clients = cfg.clients / cfg.conns + usize::from(i < cfg.clients % cfg.conns);
            (targets[i % targets.len()], clients * cfg.pipeline)
        })
        .collect()
}

fn split_even(total: u64, parts: usize, i: usize) -> u64 {
    total / parts as u64 + u64::from((i as u64) < total % parts as u64)
}

/// Runs the configured load and returns its summary; the per-second line goes to `live_out`.
pub fn run(cfg: &RunConfig, live_out: &mut dyn Write) -> Result<Summary, String> {
    let tls = match &cfg.tls_ca {
        None => None,
        Some(ca) => Some(TlsTarget {
            config: crate::tls::client_config(ca)?,
            name: crate::tls::server_name(&cfg.endpoint_names[0], cfg.tls_server_name.as_deref())?,
        }),
    };
    // Stale reads may go anywhere; writes and linearizable reads go to the leader.
    let targets = if cfg.op == OpKind::Get && cfg.consistency == ReadConsistency::Stale {
        cfg.endpoints.clone()
    } else {
        vec![crate::blocking::find_leader(
            &cfg.endpoints,
            tls.as_ref(),
            cfg.timeout.min(Duration::from_secs(10)),
        )?]
    };
    if cfg.preload {
        let mut p = cfg.clone();
        p.op = OpKind::Put;
        p.stop = Stop::Total(cfg.key_space);
        p.warmup = Duration::ZERO;
        p.rate = None;
        p.live = false;
        let s = run_threads(&p, &targets, tls.clone(), true, &mut io::sink())?;
        if s.errors.total() > 0 {
            return Err(format!(
                "preload failed: {} errors ({:?})",
                s.errors.total(),
                s.errors.kinds
            ));
        }
    }
    if let Some(at) = cfg.start_at_unix_ns {
        wait_for_start(at, cfg.live, live_out);
    }
    run_threads(cfg, &targets, tls, false, live_out)
}

fn run_threads(
    cfg: &RunConfig,
    targets: &[SocketAddr],
    tls: Option<TlsTarget>,
    sequential: bool,
    live_out: &mut dyn Write,
) -> Result<Summary, String> {
    let plan = plan_connections(cfg, targets);
    let threads = cfg.threads;
    let t0 = Instant::now();
    let t0_unix_ns = unix_now_ns();
    let measure_start_ns = cfg.warmup.as_nanos() as u64;
    let (tx, rx) = mpsc::channel::<ToReporter>();
    let mut handles = Vec::new();
    let cpu_at_start = crate::cpu::own_cpu_seconds();
    for t in 0..threads {
        let conns: Vec<Conn> = plan
            .iter()
            .enumerate()
            .filter(|(i, _)| i % threads == t)
            .map(|(_, (addr, window))| Conn::new(*addr, *window))
            .collect();
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let open = match cfg.rate {
            None => None,
            Some(r) => {
                let timer = TimerFd::new().map_err(|e| format!("timerfd: {e}"))?;
                poll.registry()
                    .register(
                        &mut mio::unix::SourceFd(&timer.fd),
                        TIMER_TOKEN,
                        Interest::READABLE,
                    )
                    .map_err(|e| format!("timerfd: {e}"))?;
                let period_ns = 1e9 * threads as f64 / r;
                Some(OpenLoop {
                    period_ns,
                    phase_ns: period_ns * t as f64 / threads as f64,
                    next_idx: 0,
                    timer,
                })
            }
        };
        let quota = match cfg.stop {
            Stop::Total(n) => split_even(n, threads, t),
            Stop::Duration(_) => u64::MAX,
        };
        let mut engine = Engine {
            poll,
            conns,
            wl: Workload {
                op: cfg.op,
                read_ratio: cfg.read_ratio,
                consistency: match cfg.consistency {
                    ReadConsistency::Linearizable => Consistency::Linearizable,
                    ReadConsistency::Stale => Consistency::Stale,
                },
                key_space: cfg.key_space,
                sequential,
            },
            rng: (cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(t as u64 + 1))) | 1,
            seq_next: t as u64,
            seq_stride: threads as u64,
            key_buf: vec![b'0'; cfg.key_size],
            value: (0..cfg.val_size).map(|i| b'a' + (i % 26) as u8).collect(),
            fast: FastPath::new(FrameLimits {
                max_frame_bytes: (cfg.val_size + cfg.key_size + 4096)
                    .max(FrameLimits::default().max_frame_bytes),
                max_key_bytes: cfg.key_size.max(FrameLimits::default().max_key_bytes),
                max_value_bytes: cfg.val_size.max(FrameLimits::default().max_value_bytes),
            }),
            tls: tls.clone(),
            endpoints: cfg.endpoints.clone(),
            t0,
            measure_start_ns,
            stop: cfg.stop,
            quota,
            issued_measured: 0,
            closed_loop: cfg.rate.is_none(),
            open,
            timeout_ns: cfg.timeout.as_nanos() as u64,
            dirty: Vec::with_capacity(plan.len()),
            rr: 0,
            result: ThreadResult::default(),
            interval: Histogram::new(),
            interval_ops: 0,
            interval_errors: 0,
            second: 0,
            live: Some(tx.clone()),
            stop_issuing_at_ns: None,
            last_progress_ns: 0,
        };
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let live = engine.live.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    engine.run();
                    std::mem::take(&mut engine.result)
                }));
                if let Some(tx) = live {
                    let _ = tx.send(ToReporter::Done);
                }
                r.unwrap_or_else(|_| ThreadResult {
                    fatal: Some("a driver thread panicked".into()),
                    ..ThreadResult::default()
                })
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(h);
    }
    drop(tx);

    // The reporter: merge each second's reports from every live thread into one line.
    let mut active = threads;
    let mut pending: std::collections::BTreeMap<u64, (usize, u64, u64, Histogram)> =
        Default::default();
    let mut cpu_at_measure = if measure_start_ns == 0 {
        Some(cpu_at_start)
    } else {
        None
    };
    let warmup_s = cfg.warmup.as_secs_f64();
    let mut print = |second: u64, ops: u64, errors: u64, h: &Histogram| {
        if cfg.live {
            let _ = writeln!(
                live_out,
                "{}",
                live_line(
                    second + 1,
                    ((second + 1) as f64) <= warmup_s,
                    ops,
                    errors,
                    h
                )
            );
        }
    };
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(100));
        if cpu_at_measure.is_none() && t0.elapsed() >= cfg.warmup {
            cpu_at_measure = Some(crate::cpu::own_cpu_seconds());
        }
        match msg {
            Ok(ToReporter::Live(r)) => {
                let e = pending
                    .entry(r.second)
                    .or_insert_with(|| (0, 0, 0, Histogram::new()));
                e.0 += 1;
                e.1 += r.ops;
                e.2 += r.errors;
                e.3.merge(&r.hist);
            }
            Ok(ToReporter::Done) => active -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while let Some((&sec, e)) = pending.iter().next() {
            if e.0 < active.max(1) && active > 0 {
                break;
            }
            print(sec, e.1, e.2, &e.3);
            pending.remove(&sec);
        }
    }
    for (sec, e) in &pending {
        print(*sec, e.1, e.2, &e.3);
    }
    let cpu_end = crate::cpu::own_cpu_seconds();
    let mut hist = Histogram::new();
    let (mut get_hist, mut put_hist) = (Histogram::new(), Histogram::new());
    let mut ops = 0;
    let mut not_found = 0;
    let mut errors = ErrorCounts::default();
    let mut end_ns = 0u64;
    let mut max_send_lag_ns = 0u64;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a driver thread panicked".to_string())?;
        if let Some(f) = r.fatal {
            return Err(f);
        }
        hist.merge(&r.hist);
        get_hist.merge(&r.get_hist);
        put_hist.merge(&r.put_hist);
        ops += r.ops;
        not_found += r.not_found;
        errors.merge(&r.errors);
        end_ns = end_ns.max(r.last_measured_ns.max(r.stop_ns));
        max_send_lag_ns = max_send_lag_ns.max(r.max_send_lag_ns);
    }
    let measured_ns = end_ns.saturating_sub(measure_start_ns);
    let from = t0_unix_ns + measure_start_ns;
    Ok(Summary {
        ops,
        errors,
        not_found,
        seconds: measured_ns as f64 / 1e9,
        latency: hist,
        cpu_seconds: cpu_end - cpu_at_measure.unwrap_or(cpu_at_start),
        settings: settings_of(cfg),
        load: load_of(cfg),
        runs: 1,
        window_unix_ns: (from, from + measured_ns),
        overlap_ns: None,
        open_loop_max_send_lag_ms: cfg.rate.map(|_| max_send_lag_ns as f64 / 1e6),
        by_op: (cfg.op == OpKind::Mix).then(|| Box::new([("get", get_hist), ("put", put_hist)])),
    })
}

/// What each request of this run is, for the summary and for `loadgen merge`'s check that
/// merged runs ran one workload.
pub fn settings_of(cfg: &RunConfig) -> Settings {
    Settings {
        op: match cfg.op {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Mix => "mix",
        }
        .to_string(),
        read_ratio: cfg.read_ratio,
        consistency: match cfg.consistency {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Stale => "stale",
        }
        .to_string(),
        key_size: cfg.key_size as u64,
        val_size: cfg.val_size as u64,
        key_space: cfg.key_space,
        pipeline: cfg.pipeline as u64,
        open_loop: cfg.rate.is_some(),
        tls: cfg.tls_ca.is_some(),
    }
}

pub fn load_of(cfg: &RunConfig) -> Load {
    Load {
        clients: cfg.clients as u64,
        conns: cfg.conns as u64,
        threads: cfg.threads as u64,
        rate: cfg.rate,
    }
}

/// One line naming what was run, echoed in the summary.
pub fn describe(cfg: &RunConfig) -> String {
    crate::report::describe(&settings_of(cfg), &load_of(cfg))
}

/// Sleeps until the wall clock reads `at_ns` (ns since the Unix epoch), re-reading the clock so
/// that a clock step while waiting is followed. A time already past is reported on `out`: runs
/// meant to start together did not.
fn wait_for_start(at_ns: u64, live: bool, out: &mut dyn Write) {
    let now = unix_now_ns();
    if now > at_ns {
        let _ = writeln!(
            out,
            "loadgen: --start-at was {:.3} s ago; starting now, late",
            (now - at_ns) as f64 / 1e9
        );
        return;
    }
    if live {
        let _ = writeln!(
            out,
            "loadgen: waiting {:.3} s for --start-at",
            (at_ns - now) as f64 / 1e9
        );
    }
    loop {
        let now = unix_now_ns();
        if now >= at_ns {
            return;
        }
        // Long naps while far away, short ones near the mark: starts line up to well under a
        // millisecond when the machines' clocks agree.
        let left = at_ns - now;
        std::thread::sleep(Duration::from_nanos(if left > 20_000_000 {
            left - 10_000_000
        } else {
            left.min(200_000)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the opcode fast path agrees with wire's full decoder on every answer the load path
    // meets. Method: encode each with wire's encoder and classify it both ways.
    #[test]
    fn fast_path_agrees_with_the_decoder() {
        let fast = FastPath::new(FrameLimits::default());
        let cases: Vec<(Response, bool, Outcome)> = vec![
            (Response::Written { revision: 77 }, false, Outcome::Ok),
            (
                Response::Value {
                    value: Some(b"v".to_vec()),
                    revision: 3,
                    applied_index: 9,
                },
                true,
                Outcome::Ok,
            ),
            (
                Response::Value {
                    value: Some(Vec::new()),
                    revision: 3,
                    applied_index: 9,
                },
                true,
                Outcome::Ok,
            ),
            (
                Response::Value {
                    value: None,
                    revision: 0,
                    applied_index: 9,
                },
                true,
                Outcome::NotFound,
            ),
            (
                Response::Error(ErrorKind::Busy),
                false,
                Outcome::Error("busy"),
            ),
            (
                Response::Written { revision: 1 },
                true,
                Outcome::Error("unexpected_response"),
            ),
            (
                Response::Error(ErrorKind::NotLeader {
                    leader: Some(2),
                    leader_addr: Some("127.0.0.1:5255".into()),
                }),
                false,
                Outcome::NotLeader(Some("127.0.0.1:5255".parse().unwrap())),
            ),
        ];
        for (resp, read, want) in cases {
            let mut b = Vec::new();
            encode_response(5, &resp, &mut b);
            assert_eq!(fast.classify(&b, read), want, "{resp:?}");
        }
    }
}
