//! Watching: a blocking stream of the changes to keys under a prefix ([`Watch`], from
//! [`Client::watch`]), that resumes by itself on another server when its connection is lost or
//! its server stops, from the revision after the last change it received, so that the caller
//! sees every change once, in revision order, with no gap. Owns the watch's own connection and
//! its resumption; the protocol is `docs/PROTOCOL.md`'s ("Watches").
//!
//! Must not: deliver a change twice or out of order (it drops any change below the revision it
//! resumes from), resume past a change it has not delivered, or hide `Compacted` (a watch that
//! cannot resume without a gap ends with that error, and the caller reloads).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, ConnError};
use super::{back_off, describe, open_conn, Client, ClientConfig, Error, Result};
use crate::wire::client::{ErrorKind, Request, Response};

pub use crate::wire::client::WatchEvent;

/// What to watch and how to notice a dead server.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Keys starting with this (empty: every key).
    pub prefix: Vec<u8>,
    /// The first revision to report changes from. 0: from the cluster's current revision on
    /// (only changes made after the watch starts); the client learns that revision with a
    /// linearizable read first.
    pub from_revision: u64,
    /// A connection that brings no frame for this long is taken for dead and the watch resumes
    /// elsewhere. Servers send a progress notification every second on a quiet watch (their
    /// `--watch-progress-interval`), so this must be well above that.
    pub silence_timeout: Duration,
    /// Try this server first (`host:port`); then the client's endpoints in turn. `None`: the
    /// client's endpoints in turn from one picked at random, so that watchers spread over the
    /// cluster's members.
    pub endpoint: Option<String>,
}

impl WatchOptions {
    pub fn new(prefix: impl AsRef<[u8]>, from_revision: u64) -> WatchOptions {
        WatchOptions {
            prefix: prefix.as_ref().to_vec(),
            from_revision,
            silence_timeout: Duration::from_secs(5),
            endpoint: None,
        }
    }
}

/// Counters of what a [`Watch`] did behind the caller's back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Watches opened, the first included.
    pub opens: u64,
    /// Times the watch resumed on a new connection after losing one (closed, silent, its
    /// server stopping or cutting it off).
    pub resumes: u64,
    /// Times a server cut the watch off because its events were not read fast enough.
    pub overflows: u64,
}

/// A stream of changes under a prefix, in revision order: an iterator whose `next` blocks until
/// a change arrives. Resumes by itself (see the module docs); an `Err` item is either
/// [`Error::Compacted`], after which the iterator ends (no member it knows still keeps the
/// changes since its last one: load the current state and watch anew), or a failure to reach any server
/// within the client's timeout, after which calling `next` again tries again.
///
/// It has a connection of its own, to whichever server it reaches first (a follower serves a
/// watch as well as the leader), and does not borrow the [`Client`] it came from.
pub struct Watch {
    endpoints: Vec<String>,
    config: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    opts: WatchOptions,
    conn: Option<Conn>,
    /// The request id of the watch on the current connection.
    watch_id: u64,
    next_endpoint: usize,
    /// Every change before this revision has been received (and those in `queue` are not yet
    /// delivered); a resumption asks from here.
    next: u64,
    queue: VecDeque<WatchEvent>,
    /// When a frame last arrived on the current connection.
    heard_at: Instant,
    /// Set once the watch cannot go on: reported after the changes still queued.
    compacted: Option<u64>,
    finished: bool,
    stats: WatchStats,
}

impl Client {
    /// Watches the keys starting with `prefix` from `from_revision` on (0: only changes made
    /// from now on). Returns once the watch is in place on a server: every change from that
    /// revision on will be delivered, once each, in revision order. See [`Watch`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), zatt::client::Error> {
    /// use zatt::client::{Client, ClientConfig, WatchEvent};
    ///
    /// let mut client = Client::connect(&["127.0.0.1:5254"], ClientConfig::default())?;
    /// for event in client.watch("config/", 0)? {
    ///     match event? {
    ///         WatchEvent::Put { key, value, revision } => println!("{revision} set {key:?} {value:?}"),
    ///         WatchEvent::Delete { key, revision } => println!("{revision} deleted {key:?}"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&mut self, prefix: impl AsRef<[u8]>, from_revision: u64) -> Result<Watch> {
        self.watch_with(WatchOptions::new(prefix, from_revision))
    }

    /// [`Client::watch`] with every option.
    pub fn watch_with(&mut self, mut opts: WatchOptions) -> Result<Watch> {
        if opts.from_revision == 0 {
            // The cluster's revision now: every write acknowledged before this is at or below.
            let (_, applied) = self.len_with(super::Consistency::Linearizable)?;
            opts.from_revision = applied + 1;
        }
        let start = {
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            (random % self.endpoints().len().max(1) as u64) as usize
        };
        let mut w = Watch {
            endpoints: self.endpoints().to_vec(),
            config: self.config().clone(),
            tls: self.tls.clone(),
            next: opts.from_revision,
            opts,
            conn: None,
            watch_id: 0,
            next_endpoint: start,
            queue: VecDeque::new(),
            heard_at: Instant::now(),
            compacted: None,
            finished: false,
            stats: WatchStats::default(),
        };
        w.open(self.op_deadline())?;
        Ok(w)
    }
}

impl Watch {
    /// Every change up to this revision has been delivered by `next` (or the watch started
    /// after it): the revision the caller's view of the prefix is complete through.
    pub fn revision(&self) -> u64 {
        match self.queue.front() {
            Some(e) => e.revision() - 1,
            None => self.next - 1,
        }
    }

    /// The server the watch is connected to now, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.addr.as_str())
    }

    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// The next change, waiting until `deadline` at most: `Ok(None)` when none came by then.
    /// With a deadline in the past it only takes what has already arrived, without waiting.
    pub fn next_until(&mut self, deadline: Instant) -> Result<Option<WatchEvent>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if let Some(oldest) = self.compacted.take() {
                self.finished = true;
                return Err(Error::Compacted { oldest });
            }
            if self.finished {
                return Ok(None);
            }
            if self.conn.is_none() {
                // Resuming may take longer than the caller's deadline (a leader change): it
                // gets the client's whole timeout, as any request does.
                let limit = Instant::now() + self.config.timeout;
                self.open(limit)?;
                continue;
            }
            let now = Instant::now();
            let silent_at = self.heard_at + self.opts.silence_timeout;
            let got = if deadline <= now {
                self.conn.as_mut().expect("connected").recv_now()
            } else {
                let until = deadline.min(silent_at);
                match self.conn.as_mut().expect("connected").recv(until) {
                    Ok(f) => Ok(Some(f)),
                    Err(ConnError::Timeout) if Instant::now() < silent_at => Ok(None),
                    Err(e) => Err(e),
                }
            };
            match got {
                Ok(Some((id, resp))) => self.on_frame(id, resp),
                Ok(None) => {
                    if Instant::now() >= silent_at {
                        self.lost("no frame within the silence timeout");
                    } else if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => self.lost(&describe(&e)),
            }
        }
    }

    /// Changes that have already arrived, without waiting.
    pub fn try_next(&mut self) -> Result<Option<WatchEvent>> {
        self.next_until(Instant::now())
    }

    /// Waits until every change up to `revision` has been received (the watch's revision is at
    /// least `revision`), or until `deadline`; returns whether it was. Changes received
    /// meanwhile stay queued for `next`.
    ///
    /// A server that has not reached `revision` within the client's request timeout (a
    /// follower cut off from the leader, say) is left for another.
    pub fn wait_for(&mut self, revision: u64, deadline: Instant) -> Result<bool> {
        let mut patience = Instant::now() + self.config.request_timeout;
        while self.next <= revision {
            if Instant::now() >= patience && self.conn.is_some() {
                self.lost(&format!("it has not reached revision {revision}"));
                patience = Instant::now() + self.config.request_timeout;
            }
            if self.compacted.is_some() || self.finished {
                return Ok(false);
            }
            if self.conn.is_none() {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                let limit = Instant::now() + self.config.timeout;
                self.open(limit)?;
                continue;
            }
            let silent_at = self.heard_at + self.opts.silence_timeout;
            let until = deadline.min(silent_at).min(patience);
            match self.conn.as_mut().expect("connected").recv(until) {
                Ok((id, resp)) => self.on_frame(id, resp),
                Err(ConnError::Timeout) if Instant::now() < silent_at.min(patience) => {
                    return Ok(false)
                }
                Err(ConnError::Timeout) if Instant::now() < silent_at => {}
                Err(e) => self.lost(&describe(&e)),
            }
            if Instant::now() >= deadline && self.next <= revision {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes one frame of the current connection.
    fn on_frame(&mut self, id: u64, resp: Response) {
        if id != self.watch_id {
            return; // an answer to something else (a cancelled watch's last words)
        }
        self.heard_at = Instant::now();
        match resp {
            Response::WatchEvents(events) => {
                for e in events {
                    // Below `next`: already received (a server resuming us from an older point
                    // than asked would be a bug; never deliver twice).
                    if e.revision() >= self.next {
                        self.next = e.revision() + 1;
                        self.queue.push_back(e);
                    }
                }
            }
            Response::WatchProgress { revision } => self.next = self.next.max(revision + 1),
            // This server no longer has the changes from `next` (a snapshot replaced its
            // dictionary); another member may still: `open` asks each before giving up.
            Response::Error(ErrorKind::Compacted { oldest }) => {
                self.lost(&format!("it keeps changes from revision {oldest} on only"));
            }
            Response::Error(ErrorKind::WatchOverflow { .. }) => {
                self.stats.overflows += 1;
                self.lost("cut off for reading too slowly");
            }
            Response::Done => {
                self.conn = None;
                self.finished = true;
            }
            // ShuttingDown and anything else: this server will not go on; another will.
            other => self.lost(&format!("{other:?}")),
        }
    }

    /// The connection is no longer usable: the next read resumes on another.
    fn lost(&mut self, why: &str) {
        log::debug!(
            "watch on {:?}: connection lost ({why}); resuming from revision {}",
            self.connected_to(),
            self.next
        );
        self.conn = None;
        self.stats.resumes += 1;
        // Another server first: this one failed us.
        self.next_endpoint += 1;
    }

    /// Opens the watch from `next` on a server: the preferred one first, then each endpoint in
    /// turn, with growing pauses, until `deadline`.
    fn open(&mut self, deadline: Instant) -> Result<()> {
        let mut backoff_ms = 0u64;
        // The last reason a server could not take the watch; an attempt merely cut short by
        // the deadline does not replace one that says more.
        let mut last: Option<String> = None;
        // Members that no longer keep the changes from `next`, and the latest oldest revision
        // one of them named.
        let mut compacted_by = 0;
        let mut compacted: Option<u64> = None;
        // Endpoints found to be no Zatt server, with what says so: not tried again here.
        let mut foreign: Vec<(String, String)> = Vec::new();
        loop {
            let addr = match self.opts.endpoint.take() {
                Some(a) => a,
                None => {
                    let i = self.next_endpoint % self.endpoints.len();
                    self.endpoints[i].clone()
                }
            };
            if foreign.iter().any(|(a, _)| *a == addr) {
                self.next_endpoint += 1;
                continue;
            }
            match self.open_at(&addr, deadline) {
                Ok(()) => return Ok(()),
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Foreign(what)) => {
                    foreign.push((addr, what));
                    if self
                        .endpoints
                        .iter()
                        .all(|e| foreign.iter().any(|(a, _)| a == e))
                    {
                        // Waiting cannot make any of them a Zatt server.
                        return Err(Error::Protocol {
                            what: foreign_said(&foreign),
                            may_have_applied: false,
                        });
                    }
                    // The next endpoint at once, as after one that is unreachable.
                    self.next_endpoint += 1;
                    continue;
                }
                Err(OpenError::Compacted(oldest)) => {
                    compacted_by += 1;
                    let latest = compacted.map_or(oldest, |c| c.max(oldest));
                    compacted = Some(latest);
                    if compacted_by >= self.endpoints.len() {
                        return self.end_compacted(latest);
                    }
                    // The next member at once: this answer was no failure to wait out.
                    self.next_endpoint += 1;
                    continue;
                }
                Err(OpenError::Retry(why)) => {
                    if last.is_none() || Instant::now() < deadline {
                        last = Some(format!("{addr}: {why}"));
                    }
                    self.next_endpoint += 1;
                }
            }
            if Instant::now() >= deadline {
                if let Some(oldest) = compacted {
                    // No member reached was able to go on without a gap.
                    return self.end_compacted(oldest);
                }
                let mut reason = format!(
                    "cannot watch on any of {} ({})",
                    self.endpoints.join(","),
                    last.as_deref().unwrap_or("timed out")
                );
                if !foreign.is_empty() {
                    reason = format!("{reason}; {}", foreign_said(&foreign));
                }
                return Err(Error::Unavailable {
                    reason,
                    may_have_applied: false,
                });
            }
            back_off(&mut backoff_ms, deadline);
        }
    }

    /// No member can go on without a gap: only the changes still queued can be delivered,
    /// then the error (at once when nothing was ever delivered or queued).
    fn end_compacted(&mut self, oldest: u64) -> Result<()> {
        self.conn = None;
        if self.queue.is_empty() && self.stats.opens == 0 {
            self.finished = true;
            return Err(Error::Compacted { oldest });
        }
        self.compacted = Some(oldest);
        Ok(())
    }

    fn open_at(&mut self, addr: &str, deadline: Instant) -> Result<(), OpenError> {
        let mut conn =
            open_conn(&self.config, self.tls.as_ref(), addr, deadline).map_err(|e| match e {
                ConnError::Protocol(what) => OpenError::Fatal(Error::Protocol {
                    what,
                    may_have_applied: false,
                }),
                other => OpenError::Retry(describe(&other)),
            })?;
        self.watch_id += 1;
        let req = Request::Watch {
            prefix: self.opts.prefix.clone(),
            from_revision: self.next,
        };
        conn.queue(self.watch_id, &req.view());
        let reply_by = (Instant::now() + self.config.request_timeout).min(deadline);
        conn.flush(reply_by.saturating_duration_since(Instant::now()))
            .map_err(|e| OpenError::Retry(describe(&e)))?;
        let (id, resp) = conn.recv(reply_by).map_err(|e| match e {
            ConnError::Foreign(what) => OpenError::Foreign(what),
            other => OpenError::Retry(describe(&other)),
        })?;
        if id == super::CONNECTION_ID {
            if let Response::Error(ErrorKind::TooManyConnections { limit }) = resp {
                return Err(OpenError::Retry(super::too_many_connections(limit)));
            }
        }
        if id != self.watch_id {
            return Err(OpenError::Retry(format!(
                "answer for request {id}, not the watch"
            )));
        }
        match resp {
            Response::WatchProgress { revision } => {
                self.next = self.next.max(revision + 1);
                self.heard_at = Instant::now();
                self.conn = Some(conn);
                if self.stats.opens > 0 {
                    log::debug!("watch resumed on {addr} from revision {}", self.next);
                }
                self.stats.opens += 1;
                Ok(())
            }
            Response::Error(ErrorKind::Compacted { oldest }) => Err(OpenError::Compacted(oldest)),
            Response::Error(
                e @ (ErrorKind::Invalid(_)
                | ErrorKind::TooLarge { .. }
                | ErrorKind::TooManyInFlight { .. }),
            ) => Err(OpenError::Fatal(Error::Server(e))),
            Response::Error(e) => Err(OpenError::Retry(e.to_string())),
            other => Err(OpenError::Retry(format!("unexpected answer {other:?}"))),
        }
    }
}

/// What says each of `foreign`'s endpoints is no Zatt server, in one line.
fn foreign_said(foreign: &[(String, String)]) -> String {
    let said: Vec<&str> = foreign.iter().map(|(_, w)| w.as_str()).collect();
    said.join("; ")
}

enum OpenError {
    /// This server no longer keeps the changes from `next` (it keeps them from this revision
    /// on); another may.
    Compacted(u64),
    /// Another server, or a later try, may do.
    Retry(String),
    /// The server is no Zatt server (this says so, naming it): another may do.
    Foreign(String),
    /// Retrying will not help.
    Fatal(Error),
}

impl Iterator for Watch {
    type Item = Result<WatchEvent>;

    /// The next change, waiting as long as it takes; `None` once the watch has ended (after
    /// `Compacted`, or cancelled by the server).
    fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.finished && self.queue.is_empty() && self.compacted.is_none() {
                return None;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            match self.next_until(far) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
