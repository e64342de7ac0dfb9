//! Client connections as the loop sees them: accepting (with the connection limit), reading and
//! cutting frames under backpressure, handing each whole frame to the host where it lies in the
//! connection's buffer, flushing answers once per iteration, idle timeouts and closing. Must
//! not look inside a frame beyond its header (the host decodes requests).
//!
//! Limits: a frame over `--max-request-bytes` is answered `TooLarge{what: "frame", limit}` and
//! its bytes skipped (the connection stays open) unless its declared length is absurd (over
//! `conn::GARBAGE_FACTOR` times the limit), which closes the connection after the answer;
//! bytes that are not a frame at all are answered `Invalid` when a request id can be read, then
//! the connection is closed. A connection with `--max-inflight-per-conn` requests unanswered
//! gets `TooManyInFlight` for the next.

use super::*;
use crate::host::Now;
use crate::wire::client::{frame_opcode, frame_request_id, ErrorKind};
use conn::FrameEvent;
use mio::Interest;

/// Connections accepted beyond `--max-connections` only to tell them so; past this many extra
/// the socket is closed without a word.
const OVER_LIMIT_GRACE: usize = 64;

impl Server {
    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _peer)) => {
                    let over = self.real_conns >= self.cfg.max_connections;
                    if over && self.io.conns.len() >= self.cfg.max_connections + OVER_LIMIT_GRACE {
                        continue; // dropped: closes the socket
                    }
                    let _ = stream.set_nodelay(true);
                    let tls = match &self.tls {
                        Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                warn!("n{}: TLS session: {e}", self.io.id);
                                continue;
                            }
                        },
                        None => None,
                    };
                    let entry = self.io.conns.vacant_entry();
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
                        let e = ErrorKind::TooManyConnections {
                            limit: self.cfg.max_connections as u64,
                        };
                        encode_response(0, &Response::Error(e), conn.output());
                        conn.close_after_flush();
                        conn.over_limit = true;
                        self.io.metrics.conns_refused += 1;
                    } else {
                        self.real_conns += 1;
                        self.io.metrics.conns_accepted += 1;
                        if let Some(idle) = self.cfg.idle_timeout {
                            self.timers
                                .schedule(self.now + idle, TimerKind::Idle { key, generation });
                        }
                    }
                    entry.insert(conn);
                    self.io.mark_dirty(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: stop accepting this round, try again on the next event.
                    warn!("n{}: accept: {e}", self.io.id);
                    break;
                }
            }
        }
    }

    /// Reads and handles what a connection sent, within backpressure limits.
    pub(super) fn serve_conn(&mut self, key: usize, peer_closed: bool, now: Now) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = conn.fill(self.now, peer_closed) {
            debug!("n{}: client connection closed: {e}", self.io.id);
            conn.dead = true;
            conn.discard_output();
        }
        self.handle_frames(key, now);
        self.io.mark_dirty(key);
    }

    /// Hands every whole frame a connection holds to the host, until backpressure says stop.
    fn handle_frames(&mut self, key: usize, now: Now) {
        while let Some(conn) = self.io.conns.get_mut(key) {
            conn.stalled = false;
            if conn.dead {
                break;
            }
            if conn.output_full() {
                conn.stalled = true;
                break;
            }
            match conn.next_frame(&self.limits) {
                FrameEvent::Incomplete => break,
                FrameEvent::TooLarge {
                    request_id,
                    declared,
                    close,
                } => {
                    debug!(
                        "n{}: client frame of {declared} bytes over --max-request-bytes {}{}",
                        self.io.id,
                        self.cfg.max_request_bytes,
                        if close { "; closing" } else { "; skipped" }
                    );
                    if let Some(id) = request_id {
                        let e = ErrorKind::TooLarge {
                            what: "frame".into(),
                            limit: self.cfg.max_request_bytes as u64,
                        };
                        encode_response(id, &Response::Error(e.clone()), conn.output());
                        self.io.metrics.answered(0, Some(&e), Duration::ZERO);
                    }
                }
                FrameEvent::Malformed { request_id, why } => {
                    debug!("n{}: closing a client connection: {why}", self.io.id);
                    if let Some(id) = request_id {
                        let e = ErrorKind::Invalid(why.to_string());
                        encode_response(id, &Response::Error(e.clone()), conn.output());
                        self.io.metrics.answered(0, Some(&e), Duration::ZERO);
                    }
                    conn.close_after_flush();
                    break;
                }
                FrameEvent::Frame { len } => {
                    let request_id = frame_request_id(conn.input()).unwrap_or(0);
                    if conn.inflight >= self.cfg.max_inflight_per_conn {
                        let op = frame_opcode(conn.input()).unwrap_or(0);
                        conn.consume(len);
                        let e = ErrorKind::TooManyInFlight {
                            limit: self.cfg.max_inflight_per_conn as u64,
                        };
                        encode_response(request_id, &Response::Error(e.clone()), conn.output());
                        self.io.metrics.answered(op, Some(&e), Duration::ZERO);
                        continue;
                    }
                    conn.inflight += 1;
                    let to = ReplyTo {
                        conn: key,
                        generation: conn.generation,
                        request_id,
                        op: frame_opcode(conn.input()).unwrap_or(0),
                        since: now.mono,
                    };
                    // The frame is decoded where it lies: the buffer is lent out while the host
                    // answers into this and other connections' outputs.
                    let input = conn.lend_input();
                    self.host
                        .client_frame(&mut self.io, now, to, input.frame(len));
                    // The host only writes answers (connections close in `flush_conns`), so the
                    // connection is still there to take its buffer back.
                    if let Some(conn) = self.io.conns.get_mut(key) {
                        conn.return_input(input);
                        conn.consume(len);
                    }
                }
            }
        }
    }

    pub(super) fn flush_conns(&mut self) {
        let mut dirty = std::mem::take(&mut self.io.dirty);
        for &key in &dirty {
            let Some(conn) = self.io.conns.get_mut(key) else {
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
        // The list goes back for the next turn with its capacity, so that marking connections
        // does not grow a new one from nothing each turn (unless closing marked others meanwhile).
        if self.io.dirty.is_empty() {
            dirty.clear();
            self.io.dirty = dirty;
        }
    }

    fn close_conn(&mut self, key: usize) {
        let mut conn = self.io.conns.remove(key);
        self.host.connection_closed(key, conn.generation);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if !conn.over_limit {
            self.real_conns -= 1;
        }
    }

    /// An idle timer fired: close the connection if it has been quiet that long with nothing
    /// in flight, else re-arm for the rest.
    pub(super) fn idle_check(&mut self, key: usize, generation: u64) {
        let Some(idle) = self.cfg.idle_timeout else {
            return;
        };
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        let quiet = self.now.saturating_duration_since(conn.last_active);
        if conn.inflight == 0 && quiet >= idle {
            debug!(
                "n{}: closing a client connection idle for {quiet:?}",
                self.io.id
            );
            conn.close_after_flush();
            self.io.mark_dirty(key);
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
