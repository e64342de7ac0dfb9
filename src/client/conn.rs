//! One client connection to one server: a TCP (or TLS over TCP) stream, a reusable write
//! buffer that request frames are encoded into, and a reusable read buffer that response frames
//! are split out of. Owns framing and timeouts only; which server to talk to and what to retry
//! is `client/mod.rs`'s business. Allocation-free in steady state: both buffers are kept and
//! reused, and the read buffer grows only as bytes actually arrive (never by a declared length).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::wire::client::{
    decode_response, encode_request_view, is_response_opcode, split_frame, FrameLimits,
    RequestView, Response, FRAME_HEADER_BYTES,
};

use super::resolve::{resolve, ResolveError};
use super::tls::{self, TlsConfig};

/// Bytes read per `read` call at least; the buffer grows beyond this only for larger frames.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A TCP stream, plain or wrapped in TLS: `C` is rustls's client connection here and its server
/// connection in `fake.rs`, which serves the same bytes from the other side.
pub(super) enum Stream<C> {
    Plain(TcpStream),
    Tls(Box<StreamOwned<C, TcpStream>>),
}

impl<C> Stream<C> {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl<C> Read for Stream<C>
where
    StreamOwned<C, TcpStream>: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl<C> Write for Stream<C>
where
    StreamOwned<C, TcpStream>: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why a connection failed. Every variant means the connection is no longer usable.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// No response within the deadline.
    Timeout,
    Io(io::Error),
    /// The server sent bytes that are not a response frame, or TLS failed.
    Protocol(String),
    /// The first bytes the peer sent are not Zatt's framing (an HTTP server, say): it is not a
    /// Zatt server, and nothing sent to it reached the cluster. Says so, naming the endpoint
    /// and quoting what it answered.
    Foreign(String),
    /// The endpoint's host name does not resolve (no such name, or no address for it): says
    /// so, naming the host.
    NoSuchHost(String),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> ConnError {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ConnError::Timeout
        } else {
            ConnError::Io(e)
        }
    }
}

pub(crate) struct Conn {
    /// The endpoint as dialled (`host:port`), for error messages and leader hints.
    pub(crate) addr: String,
    stream: Stream<ClientConnection>,
    limits: FrameLimits,
    /// Encoded frames not yet written.
    wbuf: Vec<u8>,
    /// Received bytes live in `rbuf[rstart..rend]`; `rbuf.len()` is its allocated size.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Whether a whole response frame has arrived on this connection: until then, bytes that
    /// are not a frame mean the peer is no Zatt server at all.
    heard_frame: bool,
    /// The read and write timeouts currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// Bytes of a peer's first answer quoted in the error that says it is no Zatt server.
const QUOTED_BYTES: usize = 64;

/// The error for `first`, the first bytes `addr` sent, when they are not Zatt's framing:
/// another kind of server listens there.
fn foreign(addr: &str, first: &[u8]) -> ConnError {
    let shown = &first[..first.len().min(QUOTED_BYTES)];
    let more = if first.len() > shown.len() { "..." } else { "" };
    ConnError::Foreign(format!(
        "{addr} is not a Zatt server: it answered \"{}\"{more}",
        crate::client::Escaped(shown)
    ))
}

/// Whether `first`, the start of the first bytes a peer sent, can begin no response frame
/// this client would accept: a length field below the header's size, or over the frame limit
/// where the header's opcode is no response opcode (or, before the header is complete, where
/// the length's four bytes are text, as `HTTP`, `SSH-` or `-ERR` are: a Zatt frame's length
/// field is binary). Fewer than four bytes tell nothing yet.
fn not_framing(first: &[u8], limits: &FrameLimits) -> bool {
    if first.len() < 4 {
        return false;
    }
    let len = u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as u64;
    if len < (FRAME_HEADER_BYTES - 4) as u64 {
        return true;
    }
    if len + 4 <= limits.max_frame_bytes as u64 {
        return false;
    }
    match first.get(FRAME_HEADER_BYTES - 1) {
        Some(&opcode) => !is_response_opcode(opcode),
        None => first[..4]
            .iter()
            .all(|&b| b.is_ascii_graphic() || b" \t\r\n".contains(&b)),
    }
}

/// Resolves and dials `addr` within `timeout`, trying each resolved address in turn.
fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, ConnError> {
    let addrs: Vec<SocketAddr> = match resolve(addr) {
        Ok(a) => a,
        Err(ResolveError::NoSuchHost(what)) => return Err(ConnError::NoSuchHost(what)),
        Err(ResolveError::Other(e)) => return Err(e.into()),
    };
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        .into())
}

impl Conn {
    pub(crate) fn connect(
        addr: &str,
        timeout: Duration,
        tls: Option<(&Arc<rustls::ClientConfig>, &TlsConfig)>,
        limits: FrameLimits,
    ) -> Result<Conn, ConnError> {
        let deadline = Instant::now() + timeout;
        let tcp = dial(addr, timeout)?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some((config, tls_config)) => {
                let name = tls::server_name(tls_config, addr).map_err(ConnError::Protocol)?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| ConnError::Protocol(format!("TLS: {e}")))?;
                let mut s = StreamOwned::new(conn, tcp);
                // Complete the handshake now, within the connect timeout, so that a certificate
                // problem shows up as a connection failure naming TLS rather than as a failed
                // request later.
                let left = deadline.saturating_duration_since(Instant::now());
                let left = Some(left.max(Duration::from_millis(1)));
                s.sock.set_read_timeout(left)?;
                s.sock.set_write_timeout(left)?;
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock).map_err(|e| {
                        if e.kind() == io::ErrorKind::InvalidData {
                            ConnError::Protocol(format!("TLS handshake with {addr}: {e}"))
                        } else {
                            ConnError::from(e)
                        }
                    })?;
                }
                Stream::Tls(Box::new(s))
            }
        };
        Ok(Conn {
            addr: addr.to_string(),
            stream,
            limits,
            wbuf: Vec::with_capacity(4096),
            rbuf: vec![0; READ_CHUNK_BYTES],
            rstart: 0,
            rend: 0,
            heard_frame: false,
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// Whether the peer has answered on this connection (a whole response frame arrived).
    pub(crate) fn answered(&self) -> bool {
        self.heard_frame
    }

    /// Whether the server has closed this (idle) connection: a non-blocking peek sees the end
    /// of the stream. Used before a request that must not be sent twice, so that a connection
    /// the server dropped while idle is replaced before sending rather than discovered after.
    pub(crate) fn closed_by_peer(&self) -> bool {
        if self.rstart != self.rend {
            return false;
        }
        let tcp = self.stream.tcp();
        if tcp.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let closed = match tcp.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        closed || tcp.set_nonblocking(false).is_err()
    }

    /// Encodes one request frame into the write buffer (nothing is sent until `flush`).
    pub(crate) fn queue(&mut self, id: u64, req: &RequestView<'_>) {
        encode_request_view(id, req, &mut self.wbuf);
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes every queued frame. A write blocked longer than `timeout` fails the connection.
    pub(crate) fn flush(&mut self, timeout: Duration) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = Some(Duration::from_millis(timeout.as_millis().max(1) as u64));
        if self.write_timeout != timeout {
            self.stream.tcp().set_write_timeout(timeout)?;
            self.write_timeout = timeout;
        }
        let r = self
            .stream
            .write_all(&self.wbuf)
            .and_then(|_| self.stream.flush());
        self.wbuf.clear();
        r.map_err(|e| self.io_error(e))
    }

    /// A TLS failure after the handshake (the server refusing our certificate, say, which
    /// TLS 1.3 reports with the first records after it) is a protocol error, which retrying
    /// will not cure; any other I/O error is the connection failing.
    fn io_error(&self, e: io::Error) -> ConnError {
        if matches!(self.stream, Stream::Tls(_)) && e.kind() == io::ErrorKind::InvalidData {
            ConnError::Protocol(format!("TLS with {}: {e}", self.addr))
        } else {
            ConnError::from(e)
        }
    }

    /// Receives the next response frame, whatever its id, waiting until `deadline`.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Result<(u64, Response), ConnError> {
        loop {
            if let Some(r) = self.take_frame()? {
                return Ok(r);
            }
            self.fill(deadline)?;
        }
    }

    /// The next response frame if it has arrived, without waiting for one (a watch's events,
    /// taken up between an application's reads). A frame that has begun to arrive is waited
    /// for, as are the rest of a TLS record's bytes.
    pub(crate) fn recv_now(&mut self) -> Result<Option<(u64, Response)>, ConnError> {
        loop {
            if let Some(r) = self.take_frame()? {
                return Ok(Some(r));
            }
            if !self.readable_now() {
                return Ok(None);
            }
            let started = self.rstart != self.rend;
            let deadline = Instant::now()
                + if started {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                };
            self.fill(deadline)?;
        }
    }

    /// The first response frame in the buffer, decoded and consumed, when it has all arrived;
    /// bytes that are no response frame are an error naming the peer. On a connection that has
    /// had no frame yet, bytes that cannot begin one are the error that the peer is no Zatt
    /// server, said as soon as they arrive rather than after waiting for a frame that never
    /// comes.
    fn take_frame(&mut self) -> Result<Option<(u64, Response)>, ConnError> {
        let pending = &self.rbuf[self.rstart..self.rend];
        if !self.heard_frame && not_framing(pending, &self.limits) {
            return Err(foreign(&self.addr, pending));
        }
        let len = match split_frame(pending, &self.limits) {
            Ok(Some((len, _))) => len,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.bad_frame(e)),
        };
        let frame = &self.rbuf[self.rstart..self.rstart + len];
        let decoded = decode_response(frame, &self.limits);
        if decoded.is_err()
            && !self.heard_frame
            && !is_response_opcode(frame[FRAME_HEADER_BYTES - 1])
        {
            return Err(foreign(&self.addr, pending));
        }
        self.heard_frame = true;
        self.rstart += len;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        decoded.map(Some).map_err(|e| self.bad_frame(e))
    }

    /// The error for a frame this client cannot take from a server that has spoken the
    /// protocol (or whose header says it does: a response over the client's frame limit).
    fn bad_frame(&self, e: impl std::fmt::Display) -> ConnError {
        ConnError::Protocol(format!(
            "{} sent a response this client cannot read ({e})",
            self.addr
        ))
    }

    /// Whether a read would find something now: bytes (or the end of the stream) on the
    /// socket, or plaintext TLS has already decrypted.
    fn readable_now(&self) -> bool {
        use std::os::unix::io::AsRawFd;
        if let Stream::Tls(s) = &self.stream {
            if !s.conn.wants_read() {
                return true;
            }
        }
        let mut pfd = libc::pollfd {
            fd: self.stream.tcp().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call, no timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n != 0
    }

    /// Reads more bytes into the buffer, making room first: compacting, then growing (the
    /// frame limit was already checked by `split_frame` against the declared length, and the
    /// buffer grows only as the bytes arrive).
    fn fill(&mut self, deadline: Instant) -> Result<(), ConnError> {
        if self.rend == self.rbuf.len() {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            } else {
                let grown = (self.rbuf.len() * 2).max(READ_CHUNK_BYTES);
                self.rbuf.resize(grown, 0);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ConnError::Timeout);
        }
        // Round the timeout up to whole milliseconds so that repeated calls with slightly
        // different deadlines rarely need a new setsockopt.
        let left = deadline - now;
        let ms = left.as_millis().max(1) as u64;
        let timeout = Some(Duration::from_millis(ms));
        if self.read_timeout != timeout {
            self.stream.tcp().set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        match self.stream.read(&mut self.rbuf[self.rend..]) {
            Ok(0) => Err(ConnError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} closed the connection", self.addr),
            ))),
            Ok(n) => {
                self.rend += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::client::encode_response;

    #[test]
    fn first_bytes_that_cannot_begin_a_frame_are_told_from_a_frame_too_large() {
        // Goal: the first bytes of another protocol are recognised as soon as they can be
        // (so `zatt` says "not a Zatt server" at once), while a real response that is merely
        // over this client's frame limit, or a header still arriving, is not taken for one.
        let limits = FrameLimits {
            max_frame_bytes: 64,
            max_key_bytes: 16,
            max_value_bytes: 32,
        };
        assert!(!not_framing(b"HTT", &limits), "three bytes tell nothing");
        assert!(not_framing(b"HTTP", &limits), "a text length field");
        assert!(not_framing(b"SSH-2.0\r\n", &limits));
        assert!(
            not_framing(b"\x05\x00\x00\x00", &limits),
            "below the header size"
        );
        assert!(
            !not_framing(b"\x00\x00\x01\x00\x07", &limits),
            "a binary length over the limit: wait for the opcode"
        );
        let mut big = Vec::new();
        let value = Response::Value {
            value: Some(vec![b'x'; 100]),
            revision: 1,
            applied_index: 1,
        };
        encode_response(7, &value, &mut big);
        assert!(!not_framing(&big, &limits), "a response, over the limit");
        assert!(!not_framing(&big[..4], &limits));
        let mut small = Vec::new();
        encode_response(7, &Response::Written { revision: 3 }, &mut small);
        for n in 0..=small.len() {
            assert!(
                !not_framing(&small[..n], &limits),
                "{n} bytes of a response"
            );
        }
        let mut not_response = big.clone();
        not_response[FRAME_HEADER_BYTES - 1] = b' ';
        assert!(not_framing(&not_response, &limits));
    }
}
