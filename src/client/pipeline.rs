//! A pipeline: many requests in flight on one connection to one server, for load generators
//! and bulk loads. Must not retry or follow `NotLeader` (the replies say what happened; the
//! caller decides).

use std::time::{Duration, Instant};

use super::conn::Conn;
use super::error::conn_error;
use super::{tls, ClientConfig, Error, Request, RequestView, Response, Result};

/// Many requests in flight on one connection: `send` returns the request id, `recv` returns
/// replies in the order the server completes them (not necessarily the order sent). Requests
/// are buffered and written in batches (on `flush`, on `recv`, or when 64 KiB are queued), so a
/// burst of small requests costs few syscalls; steady-state sending and receiving reuse their
/// buffers. A pipeline does not retry or follow `NotLeader`: the replies say what happened.
///
/// Keep the number in flight below the server's per-connection limit (the server answers
/// `TooManyInFlight` beyond it). Writes that should apply exactly once need a session tag each,
/// with **one write in flight per session**: register one session per in-flight slot with
/// [`Client::register_session`].
pub struct Pipeline {
    conn: Conn,
    next_id: u64,
    in_flight: usize,
    request_timeout: Duration,
}

/// Queued bytes that trigger a write from `send`.
const PIPELINE_FLUSH_BYTES: usize = 64 * 1024;

impl Pipeline {
    /// Connects to `endpoint` directly (no leader search).
    pub fn connect(endpoint: &str, config: &ClientConfig) -> Result<Pipeline> {
        let tls = match &config.tls {
            None => None,
            Some(t) => Some((tls::build_config(t).map_err(Error::Config)?, t.clone())),
        };
        let conn = Conn::connect(
            endpoint,
            config.connect_timeout,
            tls.as_ref().map(|(c, t)| (c, t)),
            config.limits,
        )
        .map_err(|e| conn_error(e, false))?;
        Ok(Pipeline {
            conn,
            next_id: 1,
            in_flight: 0,
            request_timeout: config.request_timeout,
        })
    }

    /// The endpoint this pipeline talks to.
    pub fn endpoint(&self) -> &str {
        &self.conn.addr
    }

    /// Requests sent whose replies have not been received yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues a request; returns its id.
    pub fn send(&mut self, req: &Request) -> Result<u64> {
        self.send_view(&req.view())
    }

    /// Queues a borrowed request (no copy of its key or value); returns its id.
    pub fn send_view(&mut self, req: &RequestView<'_>) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn.queue(id, req);
        self.in_flight += 1;
        if self.conn.queued_bytes() >= PIPELINE_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(id)
    }

    /// Writes every queued request.
    pub fn flush(&mut self) -> Result<()> {
        self.conn
            .flush(self.request_timeout)
            .map_err(|e| conn_error(e, true))
    }

    /// Flushes, then waits (up to the request timeout) for the next reply. With nothing in
    /// flight it returns at once with [`Error::Config`] rather than wait for nothing.
    pub fn recv(&mut self) -> Result<(u64, Response)> {
        if self.in_flight == 0 {
            return Err(Error::Config(
                "Pipeline::recv with no request in flight".into(),
            ));
        }
        self.flush()?;
        let deadline = Instant::now() + self.request_timeout;
        let (id, resp) = self.conn.recv(deadline).map_err(|e| conn_error(e, true))?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Ok((id, resp))
    }
}
