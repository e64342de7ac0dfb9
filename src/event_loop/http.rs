//! The operator's HTTP endpoint (`--metrics-listen HOST:PORT`), served by the same poll as
//! everything else, one request per connection: `GET /metrics` (the Prometheus text format,
//! gathered at each scrape), `GET /health` and `GET /ready` (200 or 503, with a one-line JSON
//! body giving the reason; the decisions are the host's). `HEAD` answers the same without a
//! body. Must not stall or grow the loop: a request is at most `MAX_REQUEST_BYTES` of request
//! line and headers (no body is read), at most `MAX_HTTP_CONNS` connections are served at once
//! (a new one replaces the oldest still reading, so idle connections cannot lock probes out),
//! each closed `HTTP_DEADLINE` after it was accepted whatever it is doing, and anything that
//! is not a well-formed request for one of the three paths gets 400, 404 or 405 and a closed
//! connection. Every answer says `Connection: close`; after writing it the server shuts down
//! its side and reads what the client still sends until it closes (so that unread request
//! bytes do not turn the close into a reset that loses the answer).

use super::*;
use mio::Interest;
use std::io::{Read, Write};
use std::net::Shutdown;

/// Tokens at and above this belong to HTTP: the listener, then one per connection. Client
/// connections (tokens from `CONN_BASE` on, at most `--max-connections` plus a grace) stay far
/// below.
pub(super) const HTTP_BASE: usize = 1 << 30;
pub(super) const HTTP_LISTENER: Token = Token(HTTP_BASE);
/// HTTP connections served at once; a new one beyond them replaces the oldest that is not
/// being answered (503 and closed at once only when every one is).
const MAX_HTTP_CONNS: usize = 16;
/// Request line and headers at most; a request still incomplete at this size gets 400.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A connection is closed this long after it was accepted, whatever its state.
const HTTP_DEADLINE: Duration = Duration::from_secs(5);
/// Bytes read and thrown away after the answer, at most (then the connection is closed).
const MAX_DRAIN_BYTES: usize = 64 * 1024;

enum Phase {
    Reading,
    Writing,
    /// The answer is out and our side shut: waiting for the client to close.
    Draining {
        drained: usize,
    },
}

pub(super) struct HttpConn {
    stream: mio::net::TcpStream,
    generation: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    phase: Phase,
}

/// The listener and its connections.
pub(super) struct Http {
    listener: TcpListener,
    pub addr: SocketAddr,
    conns: Slab<HttpConn>,
    next_generation: u64,
}

impl Http {
    /// Forgets connection `key` and closes it (dropping the stream closes the socket).
    fn close(&mut self, registry: &mio::Registry, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Binds `--metrics-listen`, if given.
    pub fn bind(cfg: &ServerConfig) -> Result<Option<Http>, ServerError> {
        let Some(listen) = &cfg.metrics_listen else {
            return Ok(None);
        };
        let addr = crate::config::resolve(listen)
            .map_err(|e| ServerError::usage(format!("invalid --metrics-listen {listen:?}: {e}")))?;
        let listener = TcpListener::bind(addr).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                ServerError::runtime(format!(
                    "cannot listen on {addr} (--metrics-listen): address already in use"
                ))
            } else {
                ServerError::runtime(format!("cannot listen on {addr} (--metrics-listen): {e}"))
            }
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Some(Http {
            listener,
            addr,
            conns: Slab::new(),
            next_generation: 1,
        }))
    }

    pub fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.register(&mut self.listener, HTTP_LISTENER, Interest::READABLE)
    }
}

/// One status line's reason phrase.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A whole answer: status line, headers and (unless `head`) the body.
fn response(code: u16, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        reason(code),
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

/// A plain-text answer; to a `HEAD` request (`head`) without its body, as for any answer.
fn text(code: u16, body: &str, head: bool) -> (u16, Vec<u8>) {
    (
        code,
        response(
            code,
            "text/plain; charset=utf-8",
            &format!("{body}\n"),
            head,
        ),
    )
}

/// `{"<what>":true|false,"reason":"..."}` on one line.
fn verdict(what: &str, r: Result<(), String>, head: bool) -> (u16, Vec<u8>) {
    let (code, ok, why) = match r {
        Ok(()) => (200, true, String::new()),
        Err(why) => (503, false, why),
    };
    let mut esc = String::with_capacity(why.len());
    for c in why.chars() {
        match c {
            '"' => esc.push_str("\\\""),
            '\\' => esc.push_str("\\\\"),
            c if (c as u32) < 0x20 => esc.push_str(&format!("\\u{:04x}", c as u32)),
            c => esc.push(c),
        }
    }
    let body = format!("{{\"{what}\":{ok},\"reason\":\"{esc}\"}}\n");
    (code, response(code, "application/json", &body, head))
}

/// Where the request line and headers end (the index after the blank line), if they have.
/// Looks from `from` on only (less the 3 bytes an end split across reads may start in), so
/// a request arriving a byte at a time costs linear time, not quadratic.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from.saturating_sub(3)..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

impl Server {
    /// Accepts what the HTTP listener has, up to the connection limit.
    pub(super) fn http_accept(&mut self) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        loop {
            match http.listener.accept() {
                Ok((mut stream, _)) => {
                    if http.conns.len() >= MAX_HTTP_CONNS {
                        // The oldest connection not being answered makes room: otherwise a few
                        // silent connections, reopened every deadline, would keep every
                        // health probe at 503.
                        let victim = http
                            .conns
                            .iter()
                            .filter(|(_, c)| !matches!(c.phase, Phase::Writing))
                            .min_by_key(|(_, c)| c.generation)
                            .map(|(k, _)| k);
                        match victim {
                            Some(k) => http.close(self.poll.registry(), k),
                            None => {
                                let busy =
                                    response(503, "text/plain; charset=utf-8", "busy\n", false);
                                let _ = stream.write(&busy);
                                *self.io.metrics.http.entry(503).or_default() += 1;
                                continue; // dropped: closed
                            }
                        }
                    }
                    let entry = http.conns.vacant_entry();
                    let key = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(HTTP_BASE + 1 + key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let generation = http.next_generation;
                    http.next_generation += 1;
                    entry.insert(HttpConn {
                        stream,
                        generation,
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        phase: Phase::Reading,
                    });
                    self.timers.schedule(
                        self.now + HTTP_DEADLINE,
                        TimerKind::HttpDeadline { key, generation },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("n{}: HTTP accept: {e}", self.io.id);
                    break;
                }
            }
        }
    }

    /// Moves an HTTP connection on as far as its socket allows (edge-triggered: until it would
    /// block).
    pub(super) fn http_ready(&mut self, key: usize) {
        loop {
            let Some(conn) = self.http.as_mut().and_then(|h| h.conns.get_mut(key)) else {
                return;
            };
            match conn.phase {
                Phase::Reading => {
                    let mut buf = [0u8; 4096];
                    let room = MAX_REQUEST_BYTES - conn.input.len();
                    let want = room.min(buf.len());
                    match conn.stream.read(&mut buf[..want]) {
                        Ok(0) => return self.http_close(key),
                        Ok(n) => {
                            let seen = conn.input.len();
                            conn.input.extend_from_slice(&buf[..n]);
                            let answer = if let Some(end) = head_end(&conn.input, seen) {
                                let head = conn.input[..end].to_vec();
                                Some(self.http_answer(&head))
                            } else if conn.input.len() >= MAX_REQUEST_BYTES {
                                Some(text(
                                    400,
                                    &format!(
                                        "request line and headers over {MAX_REQUEST_BYTES} bytes"
                                    ),
                                    conn.input.starts_with(b"HEAD "),
                                ))
                            } else {
                                None
                            };
                            if let Some((code, bytes)) = answer {
                                *self.io.metrics.http.entry(code).or_default() += 1;
                                if let Some(conn) =
                                    self.http.as_mut().and_then(|h| h.conns.get_mut(key))
                                {
                                    conn.output = bytes;
                                    conn.phase = Phase::Writing;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return self.http_close(key),
                    }
                }
                Phase::Writing => match conn.stream.write(&conn.output[conn.written..]) {
                    Ok(n) => {
                        conn.written += n;
                        if conn.written == conn.output.len() {
                            let _ = conn.stream.shutdown(Shutdown::Write);
                            conn.phase = Phase::Draining { drained: 0 };
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.http_close(key),
                },
                Phase::Draining { drained } => {
                    let mut buf = [0u8; 4096];
                    match conn.stream.read(&mut buf) {
                        Ok(0) => return self.http_close(key),
                        Ok(n) if drained + n > MAX_DRAIN_BYTES => return self.http_close(key),
                        Ok(n) => {
                            conn.phase = Phase::Draining {
                                drained: drained + n,
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return self.http_close(key),
                    }
                }
            }
        }
    }

    /// The deadline of a connection passed: close it if it is still the same one.
    pub(super) fn http_deadline(&mut self, key: usize, generation: u64) {
        let same = self
            .http
            .as_ref()
            .and_then(|h| h.conns.get(key))
            .is_some_and(|c| c.generation == generation);
        if same {
            self.http_close(key);
        }
    }

    fn http_close(&mut self, key: usize) {
        if let Some(http) = self.http.as_mut() {
            http.close(self.poll.registry(), key);
        }
    }

    /// The answer to a request whose line and headers are `head`.
    fn http_answer(&self, head: &[u8]) -> (u16, Vec<u8>) {
        let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        // Known before the line is checked: even an error answer to HEAD has no body.
        let head_only = head.starts_with(b"HEAD ");
        let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
            return text(400, "request line is not UTF-8", head_only);
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        let parts: Vec<&str> = line.split(' ').collect();
        let [method, target, version] = parts[..] else {
            return text(400, "expected METHOD TARGET HTTP/1.x", head_only);
        };
        if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
            return text(400, "expected METHOD /PATH HTTP/1.x", head_only);
        }
        if method != "GET" && method != "HEAD" {
            return text(405, "only GET and HEAD", false);
        }
        let path = target.split('?').next().unwrap_or(target);
        match path {
            "/metrics" => {
                let body = self.metrics_text();
                (
                    200,
                    response(
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        &body,
                        head_only,
                    ),
                )
            }
            "/health" => verdict("health", self.host.health(), head_only),
            "/ready" => verdict("ready", self.host.readiness(), head_only),
            _ => text(404, "not found: try /metrics, /health or /ready", head_only),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_request_head_is_found_with_either_line_ending() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        // An end that arrives split across reads is found from where the last read ended.
        let whole = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for seen in 0..whole.len() {
            assert_eq!(head_end(whole, seen), Some(27), "after {seen} bytes");
        }
    }

    #[test]
    fn verdicts_are_one_json_line() {
        let (code, bytes) = verdict("health", Err("no \"leader\"\n".into()), false);
        assert_eq!(code, 503);
        let text = String::from_utf8(bytes).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body,
            "{\"health\":false,\"reason\":\"no \\\"leader\\\"\\u000a\"}\n"
        );
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let (code, bytes) = verdict("ready", Ok(()), true);
        assert_eq!(code, 200);
        assert!(String::from_utf8(bytes).unwrap().ends_with("\r\n\r\n"));
    }
}
