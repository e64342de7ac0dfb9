//! A small blocking connection for the control path: asking each endpoint for its Status to find
//! the leader before a run, and the failover mode's polling. One request at a time, bounded by
//! timeouts. Must not be used on the load path (the driver pipelines over mio instead).

use crate::tls::TlsTarget;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use zatt::wire::client::{
    decode_response, encode_request, split_frame, FrameLimits, Request, Response, Status,
};

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
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

pub struct BlockingConn {
    stream: Stream,
    buf: Vec<u8>,
    out: Vec<u8>,
    next_id: u64,
    limits: FrameLimits,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl BlockingConn {
    pub fn connect(
        addr: SocketAddr,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> io::Result<BlockingConn> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(t) => {
                let session = crate::tls::client_session(&t.config, &t.name).map_err(other)?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        };
        Ok(BlockingConn {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(256),
            next_id: 1,
            limits: FrameLimits::default(),
        })
    }

    /// Changes the read timeout, e.g. to poll for a reply without waiting long.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.set_read_timeout(Some(timeout)),
            Stream::Tls(s) => s.sock.set_read_timeout(Some(timeout)),
        }
    }

    /// Sends a request without waiting; returns its id.
    pub fn send(&mut self, req: &Request) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        encode_request(id, req, &mut self.out);
        self.stream.write_all(&self.out)?;
        self.stream.flush()?;
        Ok(id)
    }

    /// Reads until one whole response is here (or the read timeout passes: `WouldBlock` or
    /// `TimedOut`). Responses to any id are returned in arrival order.
    pub fn recv(&mut self) -> io::Result<(u64, Response)> {
        loop {
            match split_frame(&self.buf, &self.limits) {
                Ok(Some((len, _))) => {
                    let r = decode_response(&self.buf[..len], &self.limits);
                    self.buf.drain(..len);
                    return r.map_err(|e| other(format!("bad response: {e}")));
                }
                Ok(None) => {}
                Err(e) => return Err(other(format!("bad response: {e}"))),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one request and waits for its response, discarding responses to other ids.
    pub fn call(&mut self, req: &Request) -> io::Result<Response> {
        let id = self.send(req)?;
        loop {
            let (rid, resp) = self.recv()?;
            if rid == id {
                return Ok(resp);
            }
        }
    }

    pub fn status(&mut self) -> io::Result<Status> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(*s),
            Response::Error(e) => Err(other(format!("status refused: {e}"))),
            other_resp => Err(other(format!(
                "unexpected answer to status: {other_resp:?}"
            ))),
        }
    }
}

/// One endpoint's status, or None when it does not answer within `timeout`.
pub fn status_of(addr: SocketAddr, tls: Option<&TlsTarget>, timeout: Duration) -> Option<Status> {
    BlockingConn::connect(addr, tls, timeout)
        .ok()?
        .status()
        .ok()
}

/// Asks every endpoint for its status until one says it leads (or a follower names a leader we
/// can parse), retrying until `wait` has passed. Returns the leader's client address.
pub fn find_leader(
    endpoints: &[SocketAddr],
    tls: Option<&TlsTarget>,
    wait: Duration,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + wait;
    let mut last = String::from("no endpoint answered");
    loop {
        for &ep in endpoints {
            match BlockingConn::connect(ep, tls, Duration::from_millis(500))
                .and_then(|mut c| c.status())
            {
                Ok(s) if s.role == "leader" => return Ok(ep),
                Ok(s) => {
                    if let Some(addr) = s.leader_addr.as_deref().and_then(|a| a.parse().ok()) {
                        return Ok(addr);
                    }
                    last = format!("{ep} is {} and knows no leader", s.role);
                }
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no leader found within {wait:?} ({last})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
