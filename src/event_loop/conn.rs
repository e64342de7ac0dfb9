//! One client connection: the socket (plain TCP, or TLS through rustls), the input buffer and
//! frame assembly, the output buffer, the count of requests in flight, backpressure and idleness.
//! Must not know Raft or the dictionary: it hands whole frames to the loop and takes encoded
//! responses back. The frame layout is `wire::client`'s.
//!
//! Rules it keeps (mio's rules):
//! - reads drain the socket, and with TLS the session's decrypted bytes, until `WouldBlock` or a
//!   short read (on Linux a short TCP read means the queue was emptied, and later data raises a
//!   new edge), unless the input buffer is full; then the connection is `read_blocked` and the loop calls
//!   `fill` again once frames were consumed, since no new readiness event will come;
//! - the loop takes no new frame while the output buffer is over its cap (backpressure) and the
//!   connection is flushed once per loop iteration, a partial write being progress;
//! - a request whose declared length is over `--max-request-bytes` is answered with TooLarge and
//!   its bytes are skipped, so that an honest client keeps its connection; a declared length
//!   over `GARBAGE_FACTOR` times the limit is taken for garbage and the connection is closed
//!   after the reply.

use crate::wire::client::{frame_request_id, split_frame, FrameError, FrameLimits};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::wire::client::FRAME_HEADER_BYTES;
/// Declared lengths above this multiple of the request limit close the connection.
pub const GARBAGE_FACTOR: usize = 16;
/// Smallest input buffer; it grows up to the largest frame allowed.
const MIN_INPUT_BYTES: usize = 16 * 1024;
/// An emptied buffer larger than this is given back to the allocator.
const SHRINK_ABOVE_BYTES: usize = 256 * 1024;
/// Output bytes above which the loop stops taking requests from this connection.
pub const OUTPUT_CAP_BYTES: usize = 4 << 20;

/// What the loop should do with the bytes at the front of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent {
    /// Not a whole frame yet.
    Incomplete,
    /// A whole frame of `len` bytes (header included) at the front of `input()`.
    Frame { len: usize },
    /// A frame declared over the limit; its bytes are being skipped (or, when `close` is set, the
    /// connection is closed after the reply).
    TooLarge {
        request_id: Option<u64>,
        declared: u64,
        close: bool,
    },
    /// Bytes that are not a frame: answer (when the request id is known) and close.
    Malformed {
        request_id: Option<u64>,
        why: &'static str,
    },
}

/// A connection's input buffer while it is lent out (see `ClientConn::lend_input`).
pub struct LentInput {
    buf: Vec<u8>,
    start: usize,
}

impl LentInput {
    /// The `len` bytes at the front of the unconsumed input: one whole frame.
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }
}

enum Transport {
    Plain,
    Tls(Box<rustls::ServerConnection>),
}

pub struct ClientConn {
    pub stream: TcpStream,
    transport: Transport,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    output: Vec<u8>,
    out_start: usize,
    /// Bytes of an oversized frame still to discard.
    skip: usize,
    /// Requests read and not yet answered.
    pub inflight: usize,
    pub last_active: Instant,
    /// Distinguishes this connection from an earlier one that had the same slab key, so that a
    /// late answer or timer for a closed connection is dropped.
    pub generation: u64,
    /// The peer closed its side, or a fatal error happened: close once the output is flushed.
    pub closing: bool,
    /// Stop reading; close as soon as the output is flushed.
    pub dead: bool,
    /// Reading stopped with the input buffer full: call `fill` again after consuming frames.
    pub read_blocked: bool,
    /// Registered for the loop's end-of-iteration flush (set and cleared by the loop's list).
    pub dirty: bool,
    /// The loop stopped taking frames because the output was full; resume after a flush.
    pub stalled: bool,
    /// Accepted over `--max-connections` only to be told so; not counted as a connection.
    pub over_limit: bool,
    max_frame_bytes: usize,
}

impl ClientConn {
    pub fn new(
        stream: TcpStream,
        tls: Option<rustls::ServerConnection>,
        max_request_bytes: usize,
        generation: u64,
        now: Instant,
    ) -> ClientConn {
        ClientConn {
            stream,
            transport: match tls {
                Some(t) => Transport::Tls(Box::new(t)),
                None => Transport::Plain,
            },
            input: Vec::new(),
            in_start: 0,
            in_end: 0,
            output: Vec::new(),
            out_start: 0,
            skip: 0,
            inflight: 0,
            last_active: now,
            generation,
            closing: false,
            dead: false,
            read_blocked: false,
            dirty: false,
            stalled: false,
            over_limit: false,
            max_frame_bytes: max_request_bytes,
        }
    }

    /// Unconsumed input bytes.
    pub fn input(&self) -> &[u8] {
        &self.input[self.in_start..self.in_end]
    }

    /// The output buffer, to append encoded responses to.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Lends the input buffer out, so the frame at its front can be decoded in place (see
    /// `LentInput::frame`) while answers are written into this connection's output and any
    /// other's. Give it back with `return_input` before reading or consuming again.
    pub fn lend_input(&mut self) -> LentInput {
        LentInput {
            buf: std::mem::take(&mut self.input),
            start: self.in_start,
        }
    }

    pub fn return_input(&mut self, lent: LentInput) {
        self.input = lent.buf;
    }

    pub fn output_pending(&self) -> usize {
        self.output.len() - self.out_start
    }

    /// Backpressure: true while the client has not read enough of its answers.
    pub fn output_full(&self) -> bool {
        self.output_pending() > OUTPUT_CAP_BYTES
    }

    /// Drops `len` bytes from the front of the input (a frame the loop has handled).
    pub fn consume(&mut self, len: usize) {
        debug_assert!(self.in_start + len <= self.in_end);
        self.in_start += len;
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            // One large request must not pin a large buffer for the connection's life.
            if self.input.len() > SHRINK_ABOVE_BYTES {
                self.input = Vec::new();
            }
        }
    }

    /// Looks at the front of the input. Skips the bytes of an oversized frame first.
    pub fn next_frame(&mut self, limits: &FrameLimits) -> FrameEvent {
        if self.skip > 0 {
            let n = self.skip.min(self.in_end - self.in_start);
            self.consume(n);
            self.skip -= n;
            if self.skip > 0 {
                return FrameEvent::Incomplete;
            }
        }
        let buf = self.input();
        match split_frame(buf, limits) {
            Ok(None) => FrameEvent::Incomplete,
            Ok(Some((len, _))) => FrameEvent::Frame { len },
            Err(FrameError::TooLarge { len, limit, .. }) => {
                let request_id = frame_request_id(buf);
                let close = len / GARBAGE_FACTOR as u64 > limit;
                if close {
                    self.dead = true;
                } else {
                    self.skip = len as usize;
                }
                FrameEvent::TooLarge {
                    request_id,
                    declared: len,
                    close,
                }
            }
            Err(FrameError::Malformed(why)) => {
                let request_id = frame_request_id(buf);
                self.dead = true;
                FrameEvent::Malformed { request_id, why }
            }
        }
    }

    /// Makes room for at least one more read; false when the buffer is full of unconsumed input.
    fn make_room(&mut self) -> bool {
        if self.in_end < self.input.len() {
            return true;
        }
        if self.in_start > 0 {
            self.input.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
            return true;
        }
        let max = (self.max_frame_bytes + FRAME_HEADER_BYTES).max(MIN_INPUT_BYTES);
        if self.input.len() >= max {
            return false;
        }
        let new_len = (self.input.len() * 2).clamp(MIN_INPUT_BYTES, max);
        self.input.resize(new_len, 0);
        true
    }

    /// Reads what the socket has (through TLS when on) until `WouldBlock`, a short read (unless
    /// `peer_closed`: the readiness event said the peer closed), end of stream or a full input
    /// buffer. Returns the plaintext bytes added. Errors mean: close this connection.
    pub fn fill(&mut self, now: Instant, peer_closed: bool) -> io::Result<usize> {
        self.read_blocked = false;
        if self.dead {
            return Ok(0);
        }
        let mut added = 0;
        if matches!(self.transport, Transport::Plain) {
            loop {
                if !self.make_room() {
                    self.read_blocked = true;
                    break;
                }
                let room = self.input.len() - self.in_end;
                match self.stream.read(&mut self.input[self.in_end..]) {
                    Ok(0) => {
                        self.closing = true;
                        break;
                    }
                    Ok(n) => {
                        self.in_end += n;
                        added += n;
                        // A short read emptied the socket's receive queue: anything arriving
                        // later raises a new edge (epoll), so the read that would only say
                        // WouldBlock is saved, one syscall per request.
                        // When the peer's FIN came with this edge, read on to see the end.
                        if n < room && !peer_closed {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        } else {
            added = self.fill_tls()?;
        }
        if added > 0 {
            self.last_active = now;
        }
        Ok(added)
    }

    fn fill_tls(&mut self) -> io::Result<usize> {
        let mut added = 0;
        loop {
            // Decrypted bytes first: never wait for the socket while rustls holds some.
            loop {
                if !self.make_room() {
                    self.read_blocked = true;
                    return Ok(added);
                }
                let Transport::Tls(tls) = &mut self.transport else {
                    unreachable!()
                };
                match tls.reader().read(&mut self.input[self.in_end..]) {
                    Ok(0) => {
                        // close_notify received.
                        self.closing = true;
                        return Ok(added);
                    }
                    Ok(n) => {
                        self.in_end += n;
                        added += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let Transport::Tls(tls) = &mut self.transport else {
                unreachable!()
            };
            match tls.read_tls(&mut self.stream) {
                Ok(0) => {
                    self.closing = true;
                    return Ok(added);
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Tell the peer why (an alert) before closing.
                        let _ = tls.write_tls(&mut self.stream);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(added),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes as much of the output as the socket takes. Errors mean: close this connection.
    pub fn flush(&mut self) -> io::Result<()> {
        self.dirty = false;
        match &mut self.transport {
            Transport::Plain => {
                while self.out_start < self.output.len() {
                    match self.stream.write(&self.output[self.out_start..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_start += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Transport::Tls(tls) => loop {
                if self.out_start < self.output.len() {
                    let n = tls.writer().write(&self.output[self.out_start..])?;
                    self.out_start += n;
                }
                if !tls.wants_write() {
                    break;
                }
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            },
        }
        if self.out_start == self.output.len() {
            self.output.clear();
            self.out_start = 0;
            if self.output.capacity() > SHRINK_ABOVE_BYTES {
                self.output.shrink_to(MIN_INPUT_BYTES);
            }
        } else if self.out_start > self.output.len() / 2 {
            self.output.drain(..self.out_start);
            self.out_start = 0;
        }
        Ok(())
    }

    /// True once everything queued, TLS records included, has left.
    pub fn flushed(&self) -> bool {
        self.output_pending() == 0
            && match &self.transport {
                Transport::Plain => true,
                Transport::Tls(tls) => !tls.wants_write(),
            }
    }

    /// Forgets unsent output (the peer is gone or broke the protocol beyond a reply).
    pub fn discard_output(&mut self) {
        self.output.clear();
        self.out_start = 0;
    }

    /// Whether the loop should take this connection up again after a flush: it stopped with
    /// unread socket data or unhandled frames, and the output has room again.
    pub fn wants_resume(&self) -> bool {
        (self.read_blocked || self.stalled) && !self.output_full() && !self.dead
    }

    /// Whether the loop should drop this connection now.
    pub fn should_close(&self) -> bool {
        (self.dead || (self.closing && self.inflight == 0)) && self.flushed()
    }

    /// Starts a graceful close: TLS close_notify, then close once flushed.
    pub fn close_after_flush(&mut self) {
        if !self.dead {
            if let Transport::Tls(tls) = &mut self.transport {
                tls.send_close_notify();
            }
        }
        self.dead = true;
    }
}

/// Builds the rustls server configuration from PEM files, with rustls's process-default crypto
/// provider (ring, the one this crate's rustls features select).
pub fn tls_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs("--tls-cert", cert)?;
    let key_der = crate::config::pem_key("--tls-key", key)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs("--tls-client-ca", ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// The certificates of the PEM file `path`, named by the flag `what`: at least one.
fn load_certs(
    what: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let certs = crate::config::pem_certs(what, path)?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::client::{encode_request, Request};
    use std::time::Duration;

    /// A server-side connection and the client's blocking socket, on loopback.
    fn pair(max_request_bytes: usize) -> (ClientConn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = ClientConn::new(
            TcpStream::from_std(server),
            None,
            max_request_bytes,
            1,
            Instant::now(),
        );
        (conn, client)
    }

    fn limits(max: usize) -> FrameLimits {
        FrameLimits {
            max_frame_bytes: max,
            ..FrameLimits::default()
        }
    }

    /// Fills and looks at the front of the input until something other than `Incomplete`
    /// shows up, within a bounded number of tries.
    fn next_event(conn: &mut ClientConn, lim: &FrameLimits) -> FrameEvent {
        for _ in 0..200 {
            conn.fill(Instant::now(), false).unwrap();
            match conn.next_frame(lim) {
                FrameEvent::Incomplete => std::thread::sleep(Duration::from_millis(5)),
                other => return other,
            }
        }
        FrameEvent::Incomplete
    }

    #[test]
    fn frames_split_across_reads_are_reassembled_and_an_oversized_one_is_skipped() {
        // Goal: frame assembly survives arbitrary splits; a frame over the limit is reported with
        // its request id and skipped, and the next frame is read normally.
        let (mut conn, mut client) = pair(1024);
        let lim = limits(1024);
        let mut small = Vec::new();
        encode_request(7, &Request::Status, &mut small);
        let mut big = Vec::new();
        let put = Request::Put {
            session: None,
            key: b"k".to_vec(),
            value: vec![0; 4000],
        };
        encode_request(8, &put, &mut big);
        let mut bytes = small.clone();
        bytes.extend_from_slice(&big);
        bytes.extend_from_slice(&small);
        for chunk in bytes.chunks(5) {
            client.write_all(chunk).unwrap();
        }
        match next_event(&mut conn, &lim) {
            FrameEvent::Frame { len } => {
                assert_eq!(&conn.input()[..len], &small[..]);
                conn.consume(len);
            }
            other => panic!("{other:?}"),
        }
        match next_event(&mut conn, &lim) {
            FrameEvent::TooLarge {
                request_id, close, ..
            } => {
                assert_eq!(request_id, Some(8));
                assert!(!close, "an honest oversized frame is skipped, not fatal");
            }
            other => panic!("{other:?}"),
        }
        match next_event(&mut conn, &lim) {
            FrameEvent::Frame { len } => assert_eq!(&conn.input()[..len], &small[..]),
            other => panic!("{other:?}"),
        }
        assert!(!conn.dead);
    }

    #[test]
    fn garbage_marks_the_connection_dead() {
        // Goal: bytes that cannot be a frame end the connection (after an answer, if possible).
        let (mut conn, mut client) = pair(1024);
        client.write_all(&[1, 0, 0, 0, 9, 9, 9, 9]).unwrap();
        match next_event(&mut conn, &limits(1024)) {
            FrameEvent::Malformed { .. } => assert!(conn.dead),
            other => panic!("{other:?}"),
        }
        let (mut conn, mut client) = pair(1024);
        let mut absurd = vec![0xff, 0xff, 0xff, 0x7f];
        absurd.extend_from_slice(&[0; 9]);
        client.write_all(&absurd).unwrap();
        match next_event(&mut conn, &limits(1024)) {
            FrameEvent::TooLarge { close: true, .. } => assert!(conn.dead),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_large_buffer_is_released_once_emptied() {
        // Goal: one big request does not pin its buffer for the connection's life.
        let (mut conn, mut client) = pair(2 << 20);
        let mut big = Vec::new();
        let put = Request::Put {
            session: None,
            key: b"k".to_vec(),
            value: vec![1; 600_000],
        };
        encode_request(1, &put, &mut big);
        client.write_all(&big).unwrap();
        let lim = FrameLimits {
            max_frame_bytes: 2 << 20,
            max_key_bytes: 16,
            max_value_bytes: 1 << 20,
        };
        match next_event(&mut conn, &lim) {
            FrameEvent::Frame { len } => conn.consume(len),
            other => panic!("{other:?}"),
        }
        assert!(conn.input.len() <= SHRINK_ABOVE_BYTES);
    }
}
