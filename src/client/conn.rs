//! One client connection to one server: a TCP (or TLS over TCP) stream, a reusable write
//! buffer that request frames are encoded into, and a reusable read buffer that response frames
//! are split out of. Owns framing and timeouts only; which server to talk to and what to retry
//! is `client/mod.rs`'s business. Allocation-free in steady state: both buffers are kept and
//! reused, and the read buffer grows only as bytes actually arrive (never by a declared length).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::wire::client::{
    decode_response, encode_request_view, split_frame, FrameLimits, RequestView, Response,
};

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
    /// The server sent bytes that are not a response frame, or closed mid-frame.
    Protocol(String),
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
    /// The read and write timeouts currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// The error for bytes from `addr` that are not a response frame: most likely another service
/// listens there.
fn not_zatt(addr: &str, e: impl std::fmt::Display) -> ConnError {
    ConnError::Protocol(format!(
        "{addr} does not speak the Zatt client protocol (its reply is not a response frame: {e})"
    ))
}

/// Resolves and dials `addr` within `timeout`, trying each resolved address in turn.
fn dial(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
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
            read_timeout: None,
            write_timeout: None,
        })
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
    /// bytes that are no response frame are an error naming the peer.
    fn take_frame(&mut self) -> Result<Option<(u64, Response)>, ConnError> {
        let len = match split_frame(&self.rbuf[self.rstart..self.rend], &self.limits) {
            Ok(Some((len, _))) => len,
            Ok(None) => return Ok(None),
            Err(e) => return Err(not_zatt(&self.addr, e)),
        };
        let frame = &self.rbuf[self.rstart..self.rstart + len];
        let decoded = decode_response(frame, &self.limits);
        self.rstart += len;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        decoded.map(Some).map_err(|e| not_zatt(&self.addr, e))
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
