//! The Rust client library applications use to talk to a Zatt cluster: a blocking [`Client`]
//! that finds the leader, follows `NotLeader` hints, and retries through timeouts and leader
//! changes without ever applying a write twice; a [`Pipeline`] that keeps many requests in flight
//! on one connection; and the [`DistributedDict`], a map-like view of the cluster with a local
//! copy refreshed by a [`RefreshPolicy`].
//!
//! Must not share code paths with the server other than `wire` (the bytes both sides speak).
//! Read `README.md` for the guide and `wire::client` for the protocol.
//!
//! # Retries and exactly-once writes
//! With sessions on (the default), the client registers a session with the cluster before its
//! first write and tags every write with `(session id, seq)`, `seq` growing by one per write.
//! A write whose outcome is unknown (connection lost, no reply in time, leader changed) is sent
//! again with the *same* tag, so the cluster applies it at most once and answers the retry with
//! the first attempt's reply. Should the session have expired meanwhile (the cluster answers
//! `SessionExpired`), the client registers a new session and:
//! - if no earlier attempt of the write can have reached the cluster, sends it again under the
//!   new session (nothing was applied, so this is safe);
//! - otherwise gives up with [`Error::SessionExpired`] whose `may_have_applied()` is true: the
//!   first attempt may or may not have been applied, and the cluster no longer remembers.
//!
//! With sessions off, a write whose outcome is unknown is never resent: the error says
//! `may_have_applied() == true`, and the application decides.
//!
//! Membership changes and leadership transfers carry no session: they are not resent after an
//! unknown outcome either.

mod conn;
mod dict;
mod error;
#[doc(hidden)]
pub mod fake;
mod pipeline;
mod resolve;
mod scan;
mod snapshot;
mod text;
mod tls;
mod watch;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::wire::client::{
    Consistency, ErrorKind, Expect, FrameLimits, MemberInfo, PeerStatus, Request, RequestView,
    Response, SnapshotInfo, Status,
};
pub use dict::{ClusterChange, DistributedDict, Iter, RefreshLock, RefreshPolicy};
use error::{conn_error, unexpected};
pub use error::{Error, Result};
pub use pipeline::Pipeline;
pub use scan::{Pages, ScanOptions};
pub use snapshot::SnapshotSink;
pub use text::Escaped;
pub use tls::TlsConfig;
pub use watch::{Watch, WatchEvent, WatchOptions, WatchStats};

/// The servers `zatt dev` starts: where the `zatt` command line and [`endpoints_from_env`]
/// look when told nothing else.
pub const DEV_ENDPOINTS: [&str; 3] = ["127.0.0.1:5254", "127.0.0.1:5255", "127.0.0.1:5256"];

/// The endpoints named by the `ZATT_ENDPOINTS` environment variable (comma-separated
/// `host:port`s, as the `zatt` command line reads it), or [`DEV_ENDPOINTS`] when it is unset or
/// empty. Never empty. For programs that, like `zatt`, talk to whatever cluster their
/// environment names.
pub fn endpoints_from_env() -> Vec<String> {
    let from_env: Vec<String> = std::env::var("ZATT_ENDPOINTS")
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if from_env.is_empty() {
        DEV_ENDPOINTS.iter().map(|e| e.to_string()).collect()
    } else {
        from_env
    }
}

use conn::{Conn, ConnError};

/// How a [`Client`] connects, waits and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Longest wait to open one connection (TCP, and the TLS handshake when on).
    pub connect_timeout: Duration,
    /// Longest wait for the reply to one attempt of a request before the client gives up on
    /// that server and retries elsewhere.
    pub request_timeout: Duration,
    /// Longest time one operation may take, every retry included. When it passes, the
    /// operation fails with [`Error::Timeout`] or [`Error::Unavailable`].
    pub timeout: Duration,
    /// Register a session and tag writes with it, so retried writes apply once (default on).
    pub sessions: bool,
    /// Speak TLS to every endpoint, verifying servers against this CA (default off).
    pub tls: Option<TlsConfig>,
    /// Limits the client holds responses to (and requests, before sending).
    pub limits: FrameLimits,
    /// Keys asked for per scan request.
    pub scan_page_size: u32,
    /// When every endpoint refuses the connection (nothing listens there), has a host name
    /// that does not exist, or is no Zatt server, an operation keeps trying until `timeout`
    /// (true, the default: the servers may be starting, their names not yet published) or
    /// fails at once with [`Error::Unavailable`] giving each endpoint's reason (false: what a
    /// command line wants). Either way an endpoint that answers in another protocol is passed
    /// over for the rest of the operation, and when every endpoint has, the operation fails
    /// at once with [`Error::Protocol`] naming each.
    pub wait_for_servers: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            sessions: true,
            tls: None,
            // Generous by default: the server is the authority on what it accepts and answers
            // `TooLarge` itself; these only bound what this client will read.
            limits: FrameLimits {
                max_frame_bytes: 64 << 20,
                max_key_bytes: 1 << 20,
                max_value_bytes: 32 << 20,
            },
            scan_page_size: 1000,
            wait_for_servers: true,
        }
    }
}

/// A key, its value and the revision (log index) of its last write. `Debug` shows the key and
/// value as quoted text (`KeyValue { key: "a", value: "1", revision: 7 }`), `Display` as
/// `key = value` with the escapes of [`Escaped`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub revision: u64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &Escaped(&self.key))
            .field("value", &Escaped(&self.value))
            .field("revision", &self.revision)
            .finish()
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", Escaped(&self.key), Escaped(&self.value))
    }
}

/// The answer to a read: the value (if present), its revision (0 when absent), and how far the
/// serving node had applied the log (for stale reads, how fresh the answer is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReply {
    pub value: Option<Vec<u8>>,
    pub revision: u64,
    pub applied_index: u64,
}

/// Where a request must go.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Route {
    /// The leader: follow `NotLeader` hints.
    Leader,
    /// Whichever server the client is connected to.
    Any,
}

/// How a request may be retried after an attempt whose outcome is unknown.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Retry {
    /// Reads: resend freely.
    Idempotent,
    /// Session-tagged writes: resend with the same tag.
    Tagged,
    /// Untagged writes: never resend after an unknown outcome.
    Once,
}

struct Session {
    id: u64,
    /// The seq of the next write (seqs start at 1).
    next_seq: u64,
}

/// A blocking client for a Zatt cluster. Not thread-safe by design (one connection, one request
/// at a time); give each thread its own, or use a [`Pipeline`] for many requests in flight.
///
/// ```
/// # fn main() -> Result<(), zatt::client::Error> {
/// # let (endpoint, _server) = zatt::client::example_server();
/// use zatt::client::{Client, ClientConfig, Expect};
///
/// let mut client = Client::connect(&[endpoint], ClientConfig::default())?;
/// client.put("greeting", "hello")?;
/// assert_eq!(client.get("greeting")?, Some(b"hello".to_vec()));
/// client.cas("greeting", Expect::Value(b"hello".to_vec()), Some(b"bye".to_vec()))?;
/// assert!(client.delete("greeting")?);
/// assert_eq!(client.get("greeting")?, None);
/// # Ok(())
/// # }
/// ```
pub struct Client {
    endpoints: Vec<String>,
    config: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Conn>,
    /// The endpoint to try first when no leader hint is known (round-robin).
    next_endpoint: usize,
    /// Where the last `NotLeader` answer said the leader is.
    leader_hint: Option<String>,
    /// The last leader hint that could not be dialled, and why: said if the call fails.
    unreached_hint: Option<(String, String)>,
    session: Option<Session>,
    next_request_id: u64,
    stats: ClientStats,
    /// No operation runs past this instant (see [`Client::set_deadline`]).
    deadline: Option<Instant>,
}

/// Counters of what the client did behind the caller's back, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections opened.
    pub connects: u64,
    /// `NotLeader` hints followed to another server.
    pub hints_followed: u64,
    /// Attempts sent again after an attempt whose outcome was unknown (lost connection, no
    /// reply in time, the server gave up waiting for commit).
    pub resent_after_unknown_outcome: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("connected_to", &self.conn.as_ref().map(|c| c.addr.as_str()))
            .field("session", &self.session.as_ref().map(|s| s.id))
            .finish()
    }
}

/// What the retry loop remembers about its failures, to report the right error at the end.
#[derive(Default)]
struct Attempts {
    /// An earlier attempt may have reached the cluster and been applied.
    ambiguous: bool,
    /// The last reason the operation could not be served.
    last_failure: Option<Failure>,
    backoff_ms: u64,
    /// Endpoints found to be no Zatt server in this operation, with what says so: not dialled
    /// again by it.
    foreign: Vec<(String, String)>,
    /// Some round of connecting tried every endpoint (before the deadline cut one short):
    /// until then, a connection failure is no evidence about the cluster as a whole.
    tried_all: bool,
}

enum Failure {
    Connect(String),
    NoLeader(String),
    NoReply,
    Dropped(String),
    /// A server refused the connection over its connection limit: why, in words.
    Refused(String),
}

impl Attempts {
    /// Sleeps a growing pause (see `back_off`), never past the deadline.
    fn back_off(&mut self, deadline: Instant) {
        back_off(&mut self.backoff_ms, deadline);
    }

    /// Remembers why connecting failed (`u`, from `ensure_conn`), unless it merely ran out of
    /// time: before dialling anything (a --timeout too short for any request is a timeout,
    /// not an unavailable cluster), or after a failure that says more (a dial cut short by the
    /// deadline would turn "connection refused" into "timed out").
    fn note_connect_failure(&mut self, u: &Unreached) {
        self.tried_all |= u.tried_all;
        let Some(e) = &u.error else {
            return;
        };
        if matches!(e, ConnError::Timeout) && self.last_failure.is_some() {
            return;
        }
        self.last_failure = Some(Failure::Connect(describe(e)));
    }

    /// Remembers that the server at `addr` is no Zatt server.
    fn note_foreign(&mut self, addr: String, what: String) {
        if !self.foreign.iter().any(|(a, _)| *a == addr) {
            self.foreign.push((addr, what));
        }
    }

    /// The error once the deadline has passed. Endpoints that proved to be no Zatt server are
    /// named too, so that the reason for every endpoint is in it.
    fn give_up(&mut self, endpoints: &[String]) -> Error {
        let e = self.give_up_on_the_rest(endpoints);
        if self.foreign.is_empty() {
            return e;
        }
        let foreign = self.foreign_said();
        match e {
            Error::Unavailable {
                reason,
                may_have_applied,
            } => Error::Unavailable {
                reason: format!("{reason}; {foreign}"),
                may_have_applied,
            },
            Error::Timeout { may_have_applied } => Error::Unavailable {
                reason: format!("no other server answered in time; {foreign}"),
                may_have_applied,
            },
            other => other,
        }
    }

    fn foreign_said(&self) -> String {
        let said: Vec<&str> = self.foreign.iter().map(|(_, w)| w.as_str()).collect();
        said.join("; ")
    }

    fn give_up_on_the_rest(&mut self, endpoints: &[String]) -> Error {
        let m = self.ambiguous;
        match self.last_failure.take() {
            None | Some(Failure::NoReply) => Error::Timeout {
                may_have_applied: m,
            },
            // The deadline came before every endpoint could be tried: the time was too short
            // to tell whether the cluster is reachable.
            Some(Failure::Connect(_)) if !self.tried_all => Error::Timeout {
                may_have_applied: m,
            },
            Some(Failure::Connect(e)) => Error::Unavailable {
                reason: format!("cannot connect to any of {} ({e})", endpoints.join(",")),
                may_have_applied: m,
            },
            Some(Failure::NoLeader(why)) => Error::Unavailable {
                reason: why,
                may_have_applied: m,
            },
            Some(Failure::Dropped(e)) => Error::Unavailable {
                reason: format!("connections keep failing ({e})"),
                may_have_applied: m,
            },
            Some(Failure::Refused(why)) => Error::Unavailable {
                reason: why,
                may_have_applied: m,
            },
        }
    }
}

impl Client {
    /// Connects to one of `endpoints` (`host:port` each), trying them in turn until one answers
    /// or `config.timeout` passes. The leader is found on the first request that needs it.
    pub fn connect<S: AsRef<str>>(endpoints: &[S], config: ClientConfig) -> Result<Client> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.as_ref().trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config("no endpoints given".into()));
        }
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(tls::build_config(t).map_err(Error::Config)?),
        };
        let mut client = Client {
            endpoints,
            config,
            tls,
            conn: None,
            next_endpoint: 0,
            leader_hint: None,
            unreached_hint: None,
            session: None,
            next_request_id: 1,
            stats: ClientStats::default(),
            deadline: None,
        };
        let deadline = Instant::now() + client.config.timeout;
        let mut attempts = Attempts::default();
        loop {
            match client.ensure_conn(deadline, &attempts.foreign) {
                Ok(()) => return Ok(client),
                Err(mut u) => {
                    if let Some(ConnError::Protocol(what)) = u.error.take_if(is_protocol) {
                        // A TLS failure will not cure itself by waiting.
                        return Err(Error::Protocol {
                            what,
                            may_have_applied: false,
                        });
                    }
                    if let Some(e) = client.settled_error(u.settled.take(), false) {
                        return Err(e);
                    }
                    attempts.note_connect_failure(&u);
                }
            }
            if Instant::now() >= deadline {
                return Err(attempts.give_up(&client.endpoints));
            }
            attempts.back_off(deadline);
        }
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint this client is connected to now, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.addr.as_str())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Bounds every later operation by `deadline` as well as by `config.timeout` (whichever
    /// comes first); `None` removes the bound. For a program that must finish as a whole
    /// within a time, e.g. the `zatt` command line's `--timeout`: an operation started after
    /// the deadline fails at once with [`Error::Timeout`] (or [`Error::Unavailable`]).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// When the operation starting now must end.
    fn op_deadline(&self) -> Instant {
        let d = Instant::now() + self.config.timeout;
        match self.deadline {
            Some(bound) => d.min(bound),
            None => d,
        }
    }

    // ----- reads -------------------------------------------------------------------------

    /// The value of `key`, read linearizably (reflects every write acknowledged before).
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with(key, Consistency::Linearizable)?.value)
    }

    /// The value of `key` from whichever server the client is connected to, possibly stale.
    pub fn get_stale(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with(key, Consistency::Stale)?.value)
    }

    /// A read with its revision and the serving node's applied index.
    pub fn get_with(
        &mut self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<ReadReply> {
        let mut req = Request::Get {
            key: key.as_ref().to_vec(),
            consistency,
        };
        match self.call(&mut req, route_for(consistency), Retry::Idempotent)? {
            Response::Value {
                value,
                revision,
                applied_index,
            } => Ok(ReadReply {
                value,
                revision,
                applied_index,
            }),
            other => Err(unexpected(other, false)),
        }
    }

    /// The number of keys, read linearizably.
    pub fn len(&mut self) -> Result<u64> {
        Ok(self.len_with(Consistency::Linearizable)?.0)
    }

    /// Whether the dictionary holds no key, read linearizably.
    pub fn is_empty(&mut self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The number of keys and the serving node's applied index.
    pub fn len_with(&mut self, consistency: Consistency) -> Result<(u64, u64)> {
        let mut req = Request::Len { consistency };
        match self.call(&mut req, route_for(consistency), Retry::Idempotent)? {
            Response::Len { len, applied_index } => Ok((len, applied_index)),
            other => Err(unexpected(other, false)),
        }
    }

    /// Pages of the keys starting with `prefix`, in key order, read linearizably page by page
    /// (each page is consistent; the whole scan is not one snapshot). See [`ScanOptions`].
    pub fn scan(&mut self, prefix: impl AsRef<[u8]>) -> Pages<'_> {
        let opts = ScanOptions {
            prefix: prefix.as_ref().to_vec(),
            ..ScanOptions::default()
        };
        self.scan_with(opts)
    }

    pub fn scan_with(&mut self, opts: ScanOptions) -> Pages<'_> {
        let page_size = if opts.page_size == 0 {
            self.config.scan_page_size.max(1)
        } else {
            opts.page_size
        };
        Pages::new(self, opts, page_size)
    }

    /// Every key and value in the dictionary, in key order.
    pub fn dump(&mut self) -> Result<Vec<KeyValue>> {
        let mut all = Vec::new();
        for page in self.scan(b"") {
            all.extend(page?);
        }
        Ok(all)
    }

    /// The status of the server this client is connected to (any role).
    pub fn status(&mut self) -> Result<Status> {
        let mut req = Request::Status;
        match self.call(&mut req, Route::Any, Retry::Idempotent)? {
            Response::Status(s) => Ok(*s),
            other => Err(unexpected(other, false)),
        }
    }

    /// The cluster's members, as the leader knows them. (Every server answers this from its
    /// own view, and a removed server may never learn of its removal, so the client asks the
    /// leader.)
    pub fn members(&mut self) -> Result<Vec<MemberInfo>> {
        self.connect_to_leader()?;
        let mut req = Request::Members;
        match self.call(&mut req, Route::Any, Retry::Idempotent)? {
            Response::Members(m) => Ok(m),
            other => Err(unexpected(other, false)),
        }
    }

    // ----- writes ------------------------------------------------------------------------

    /// Sets `key` to `value`; returns the write's revision.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let mut req = Request::Put {
            session: None,
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        match self.write(&mut req)? {
            Response::Written { revision } => Ok(revision),
            other => Err(unexpected(other, true)),
        }
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.delete_with_revision(key)?.0)
    }

    /// Removes `key`; returns whether it existed and the delete's revision.
    pub fn delete_with_revision(&mut self, key: impl AsRef<[u8]>) -> Result<(bool, u64)> {
        let mut req = Request::Delete {
            session: None,
            key: key.as_ref().to_vec(),
        };
        match self.write(&mut req)? {
            Response::Deleted { existed, revision } => Ok((existed, revision)),
            other => Err(unexpected(other, true)),
        }
    }

    /// Writes `new` (deletes the key when `None`) if `expect` holds; returns the revision.
    /// Fails with [`Error::CasFailed`] (holding the current value) when it does not hold.
    pub fn cas(
        &mut self,
        key: impl AsRef<[u8]>,
        expect: Expect,
        new: Option<Vec<u8>>,
    ) -> Result<u64> {
        let mut req = Request::Cas {
            session: None,
            key: key.as_ref().to_vec(),
            expect,
            new,
        };
        match self.write(&mut req)? {
            Response::CasOk { revision } => Ok(revision),
            Response::CasFailed { current } => Err(Error::CasFailed { current }),
            other => Err(unexpected(other, true)),
        }
    }

    /// Adds server `id` at `addr` (its `host:port`). As a learner when `learner` is true;
    /// otherwise the leader adds it as a learner and promotes it to voter once it has caught
    /// up, answering only then (so this can take as long as the catch-up, up to the timeout).
    pub fn member_add(&mut self, id: u64, addr: &str, learner: bool) -> Result<()> {
        let mut req = Request::MemberAdd {
            id,
            addr: addr.to_string(),
            learner,
        };
        self.admin(&mut req)
    }

    /// Makes learner `id` a voter (refused until it has caught up).
    pub fn member_promote(&mut self, id: u64) -> Result<()> {
        self.admin(&mut Request::MemberPromote { id })
    }

    pub fn member_remove(&mut self, id: u64) -> Result<()> {
        self.admin(&mut Request::MemberRemove { id })
    }

    /// Hands leadership to `to`, or to the most caught-up voter when `None`.
    pub fn transfer_leader(&mut self, to: Option<u64>) -> Result<()> {
        self.admin(&mut Request::TransferLeader { to })
    }

    /// Registers a fresh session and returns its id, for applications that tag their own
    /// writes (e.g. through a [`Pipeline`]: one session per write in flight, seqs from 1).
    pub fn register_session(&mut self) -> Result<u64> {
        let mut req = Request::RegisterSession;
        // A retried registration creates an orphan session that expires by itself: harmless.
        match self.call(&mut req, Route::Leader, Retry::Idempotent)? {
            Response::SessionRegistered { id } => Ok(id),
            other => Err(unexpected(other, true)),
        }
    }

    /// The status of the leader, as found from the connected server's view of who leads
    /// (following it, and retrying through an election, within the timeout). The client stays
    /// connected to the leader.
    pub fn leader_status(&mut self) -> Result<Status> {
        self.connect_to_leader()
    }

    /// Opens a [`Pipeline`] to the current leader (found through this client).
    pub fn pipeline(&mut self) -> Result<Pipeline> {
        let deadline = self.op_deadline();
        let mut attempts = Attempts::default();
        loop {
            self.connect_to_leader()?;
            let addr = self.connected_to().unwrap_or_default().to_string();
            match Pipeline::connect(&addr, &self.config) {
                Ok(p) => return Ok(p),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    self.conn = None;
                    attempts.last_failure = Some(Failure::Connect(e.to_string()));
                    attempts.back_off(deadline);
                }
            }
        }
    }

    /// Connects to the server that says it leads: asks the connected server's status and
    /// follows the leader it names. For requests that every server answers from its own view.
    fn connect_to_leader(&mut self) -> Result<Status> {
        let deadline = self.op_deadline();
        let mut attempts = Attempts::default();
        loop {
            let s = self.status()?;
            if s.role == "leader" {
                return Ok(s);
            }
            match s.leader_addr {
                Some(addr) if Some(addr.as_str()) != self.connected_to() => {
                    self.leader_hint = Some(addr);
                    self.stats.hints_followed += 1;
                }
                _ => {
                    // No leader known (an election under way, a server cut off from its peers
                    // or not yet added to the cluster): ask the next endpoint, as a request for
                    // the leader does, not this one again, or it alone holds the call until the
                    // timeout while the others could name the leader.
                    self.skip_endpoint();
                    attempts.last_failure = Some(Failure::NoLeader(
                        "no leader elected (is a majority of servers up?)".into(),
                    ));
                }
            }
            // Reconnect: to the hinted leader, else to the next endpoint.
            self.conn = None;
            if Instant::now() >= deadline {
                return Err(attempts.give_up(&self.endpoints));
            }
            attempts.back_off(deadline);
        }
    }

    // ----- the retry machinery -------------------------------------------------------------

    fn admin(&mut self, req: &mut Request) -> Result<()> {
        match self.call(req, Route::Leader, Retry::Once)? {
            Response::Done => Ok(()),
            other => Err(unexpected(other, true)),
        }
    }

    /// A dictionary write: tagged with the session when sessions are on.
    fn write(&mut self, req: &mut Request) -> Result<Response> {
        if !self.config.sessions {
            return self.call(req, Route::Leader, Retry::Once);
        }
        // Set once any attempt of this write may have been applied; never cleared.
        let mut ambiguous = false;
        let mut renewed = false;
        loop {
            if self.session.is_none() {
                // Only reached before any attempt or after one that certainly applied nothing,
                // so a failure here leaves the write certainly unapplied.
                let id = self.register_session()?;
                self.session = Some(Session { id, next_seq: 1 });
            }
            let s = self.session.as_mut().expect("registered above");
            let tag = Some((s.id, s.next_seq));
            // Gaps in seq are allowed, so a seq is spent whatever the outcome.
            s.next_seq += 1;
            set_session(req, tag);
            match self.call_tracked(req, Route::Leader, Retry::Tagged, &mut ambiguous) {
                Err(Error::Server(ErrorKind::SessionExpired)) => {
                    self.session = None;
                    if ambiguous || renewed {
                        // Register now so the next write need not; if that fails, the next
                        // write registers by itself.
                        if let Ok(id) = self.register_session() {
                            self.session = Some(Session { id, next_seq: 1 });
                        }
                        return Err(Error::SessionExpired {
                            may_have_applied: ambiguous,
                        });
                    }
                    // Nothing of this write can have been applied: send it again, once, under
                    // a new session.
                    renewed = true;
                }
                other => return other,
            }
        }
    }

    fn call(&mut self, req: &mut Request, route: Route, retry: Retry) -> Result<Response> {
        let mut ambiguous = false;
        self.call_tracked(req, route, retry, &mut ambiguous)
    }

    /// Sends `req` until it gets a definite answer or the operation's timeout passes.
    /// `ambiguous` is set once an attempt's outcome is unknown (it may have been applied).
    fn call_tracked(
        &mut self,
        req: &mut Request,
        route: Route,
        retry: Retry,
        ambiguous: &mut bool,
    ) -> Result<Response> {
        let deadline = self.op_deadline();
        let mut attempts = Attempts::default();
        // Hint hops since the last pause: hints are followed at once, but a ring of stale hints
        // must not spin.
        let mut hops = 0usize;
        let is_write = retry != Retry::Idempotent;
        // The previous attempt's outcome is unknown, so the next one is a resend.
        let mut unknown_outcome = false;
        loop {
            attempts.ambiguous = *ambiguous && is_write;
            if Instant::now() >= deadline {
                return Err(attempts.give_up(&self.endpoints));
            }
            if retry == Retry::Once && self.conn.as_ref().is_some_and(|c| c.closed_by_peer()) {
                self.conn = None;
            }
            if let Err(mut u) = self.ensure_conn(deadline, &attempts.foreign) {
                if let Some(ConnError::Protocol(what)) = u.error.take_if(is_protocol) {
                    return Err(Error::Protocol {
                        what,
                        may_have_applied: attempts.ambiguous,
                    });
                }
                if let Some(e) = self.settled_error(u.settled.take(), attempts.ambiguous) {
                    return Err(e);
                }
                attempts.note_connect_failure(&u);
                attempts.back_off(deadline);
                continue;
            }
            if retry == Retry::Once && !self.conn.as_ref().is_some_and(Conn::answered) {
                // The one attempt below gets the whole operation's time, so it must not go to
                // a server that accepts connections but does not answer (a paused or hung one:
                // its kernel still accepts). A connection that has not answered yet is proved
                // first with a status request, which, unlike this one, may be sent elsewhere.
                let id = self.next_request_id;
                self.next_request_id += 1;
                let probe_deadline = deadline.min(Instant::now() + self.config.request_timeout);
                let proof = self.round_trip(id, &Request::Status, probe_deadline);
                if let Ok(Response::Error(ErrorKind::TooManyConnections { limit })) = proof {
                    self.refused_over_limit(&mut attempts, limit, deadline);
                    continue;
                }
                if let Err(e) = proof {
                    let addr = self.conn.take().map(|c| c.addr).unwrap_or_default();
                    match e {
                        ConnError::Foreign(what) => {
                            self.leave_endpoint(&addr);
                            attempts.note_foreign(addr, what);
                        }
                        ConnError::Protocol(what) => {
                            return Err(Error::Protocol {
                                what,
                                may_have_applied: attempts.ambiguous,
                            })
                        }
                        ConnError::Timeout => {
                            self.leave_endpoint(&addr);
                            attempts.last_failure = Some(Failure::NoReply);
                        }
                        other => {
                            attempts.last_failure = Some(Failure::Dropped(describe(&other)));
                            attempts.back_off(deadline);
                        }
                    }
                    continue;
                }
            }
            if unknown_outcome {
                self.stats.resent_after_unknown_outcome += 1;
                unknown_outcome = false;
            }
            // A request that will not be resent after an unknown outcome gets the whole
            // operation's time for its one attempt: waiting longer buys a definite answer.
            let attempt_deadline = if retry == Retry::Once {
                deadline
            } else {
                deadline.min(Instant::now() + self.config.request_timeout)
            };
            let id = self.next_request_id;
            self.next_request_id += 1;
            let outcome = self.round_trip(id, req, attempt_deadline);
            let resp = match outcome {
                Ok(resp) => resp,
                Err(ConnError::Foreign(what)) => {
                    // Not a Zatt server: nothing sent there reached the cluster, so the
                    // request goes to the next endpoint at once (ensure_conn skips this one
                    // for the rest of the operation), as after an unreachable endpoint.
                    let addr = self.conn.take().map(|c| c.addr).unwrap_or_default();
                    self.leave_endpoint(&addr);
                    attempts.note_foreign(addr, what);
                    continue;
                }
                Err(e) => {
                    // The request may have reached the server before the connection failed.
                    let silent = self.conn.take().map(|c| c.addr);
                    if let (ConnError::Timeout, Some(addr)) = (&e, silent) {
                        // No reply in time: a paused or hung server (its kernel still accepts
                        // connections) or one cut off. Resend elsewhere, or it alone would
                        // hold every attempt of this operation, and of the next.
                        self.leave_endpoint(&addr);
                    }
                    unknown_outcome = true;
                    if is_write {
                        *ambiguous = true;
                    }
                    if let ConnError::Protocol(what) = e {
                        // A server that spoke the protocol sent bytes this client cannot read
                        // (or TLS failed): asking again will not change that.
                        return Err(Error::Protocol {
                            what,
                            may_have_applied: is_write,
                        });
                    }
                    if retry == Retry::Once {
                        return Err(conn_error(e, true));
                    }
                    attempts.last_failure = Some(match e {
                        ConnError::Timeout => Failure::NoReply,
                        other => Failure::Dropped(describe(&other)),
                    });
                    if !matches!(attempts.last_failure, Some(Failure::NoReply)) {
                        attempts.back_off(deadline);
                    }
                    continue;
                }
            };
            let kind = match resp {
                Response::Error(kind) => kind,
                resp => return Ok(resp),
            };
            match kind {
                ErrorKind::NotLeader {
                    leader,
                    leader_addr,
                } => {
                    if route == Route::Any {
                        // Only requests that need the leader are refused this way.
                        return Err(Error::NotLeader {
                            leader,
                            leader_addr,
                        });
                    }
                    let current = self.conn.as_ref().map(|c| c.addr.clone());
                    match leader_addr {
                        Some(addr) if Some(&addr) != current.as_ref() => {
                            if let Some((_, why)) =
                                self.unreached_hint.as_ref().filter(|(a, _)| *a == addr)
                            {
                                // Said if the call fails: a bare timeout would hide it.
                                attempts.last_failure = Some(Failure::NoLeader(format!(
                                    "the servers name the leader {addr}, which this client \
                                     cannot reach ({why}): list the leader's address as this \
                                     client reaches it among the endpoints, or check the \
                                     addresses in the servers' --cluster"
                                )));
                            }
                            self.leader_hint = Some(addr);
                            self.conn = None;
                            self.stats.hints_followed += 1;
                            hops += 1;
                            if hops > self.endpoints.len() + 1 {
                                hops = 0;
                                attempts.back_off(deadline);
                            }
                        }
                        _ => {
                            // No leader known: an election under way, or this server is cut
                            // off from its peers. Try the next endpoint after a pause, not
                            // this one again, or a partition that leaves this server
                            // reachable stalls the client until it heals.
                            self.conn = None;
                            self.leader_hint = None;
                            self.skip_endpoint();
                            attempts.last_failure = Some(Failure::NoLeader(
                                "no leader elected (is a majority of servers up?)".into(),
                            ));
                            attempts.back_off(deadline);
                        }
                    }
                }
                ErrorKind::Unavailable(why) => {
                    self.conn = None;
                    self.skip_endpoint();
                    attempts.last_failure = Some(Failure::NoLeader(why));
                    attempts.back_off(deadline);
                }
                ErrorKind::Busy => {
                    attempts.last_failure = Some(Failure::NoLeader(kind.to_string()));
                    attempts.back_off(deadline);
                }
                ErrorKind::TooManyConnections { limit } => {
                    self.refused_over_limit(&mut attempts, limit, deadline);
                }
                ErrorKind::Timeout | ErrorKind::ShuttingDown => {
                    // The server does not know whether the write will commit.
                    if is_write {
                        *ambiguous = true;
                    }
                    if retry == Retry::Once {
                        return Err(Error::Server(kind));
                    }
                    self.conn = None;
                    unknown_outcome = true;
                    attempts.last_failure = Some(Failure::NoReply);
                    attempts.back_off(deadline);
                }
                ErrorKind::TooLarge { what, limit } => {
                    return Err(Error::TooLarge { what, limit });
                }
                // SessionExpired (handled by `write`), StaleRequest, Invalid, ConfChange,
                // TooManyInFlight: definite answers.
                other => return Err(Error::Server(other)),
            }
        }
    }

    /// One attempt on the current connection: send, then wait for the reply with this id
    /// (replies to earlier, abandoned attempts are skipped). An error with request id 0 is
    /// about the connection itself (the server refusing it over its connection limit, without
    /// reading the request): it is the answer too.
    fn round_trip(
        &mut self,
        id: u64,
        req: &Request,
        deadline: Instant,
    ) -> Result<Response, ConnError> {
        let conn = self.conn.as_mut().expect("connected by ensure_conn");
        conn.queue(id, &req.view());
        conn.flush(deadline.saturating_duration_since(Instant::now()))?;
        loop {
            let (rid, resp) = conn.recv(deadline)?;
            if rid == id || (rid == CONNECTION_ID && matches!(resp, Response::Error(_))) {
                return Ok(resp);
            }
        }
    }

    /// Connects if not connected: first to the hinted leader, then to each endpoint in turn,
    /// skipping those `foreign` names (found to be no Zatt server).
    fn ensure_conn(
        &mut self,
        deadline: Instant,
        foreign: &[(String, String)],
    ) -> Result<(), Unreached> {
        if self.conn.is_some() {
            return Ok(());
        }
        let is_foreign = |addr: &str| foreign.iter().find(|(a, _)| a == addr);
        let mut last = None;
        if let Some(hint) = self.leader_hint.take() {
            if is_foreign(&hint).is_none() {
                match self.dial(&hint, deadline) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.unreached_hint = None;
                        return Ok(());
                    }
                    Err(e) => {
                        self.unreached_hint = Some((hint.clone(), describe(&e)));
                        // The servers name the leader by an address this client cannot reach
                        // (seen from elsewhere, it may be another): not back to the server
                        // that named it, which would name it again until the timeout, but on
                        // to the other endpoints, among which the leader may be.
                        self.skip_endpoint();
                        last = Some(e);
                    }
                }
            }
        }
        let mut settled = Vec::new();
        let mut tried_all = true;
        for _ in 0..self.endpoints.len() {
            if Instant::now() >= deadline {
                tried_all = false;
                break;
            }
            let i = self.next_endpoint % self.endpoints.len();
            self.next_endpoint = (i + 1) % self.endpoints.len();
            let addr = self.endpoints[i].clone();
            if let Some((_, what)) = is_foreign(&addr) {
                settled.push(Settled::Foreign(what.clone()));
                continue;
            }
            match self.dial(&addr, deadline) {
                Ok(c) => {
                    // Stay with a working endpoint for the next reconnection too.
                    self.next_endpoint = i;
                    self.conn = Some(c);
                    return Ok(());
                }
                Err(e @ ConnError::Protocol(_)) => {
                    return Err(Unreached {
                        error: Some(e),
                        settled: None,
                        tried_all: false,
                    })
                }
                Err(e) => {
                    match &e {
                        ConnError::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
                            settled.push(Settled::Refused(addr));
                        }
                        ConnError::NoSuchHost(what) => {
                            settled.push(Settled::NoSuchHost(addr, what.clone()));
                        }
                        _ => {}
                    }
                    last = Some(e);
                }
            }
        }
        let all = settled.len() == self.endpoints.len();
        Err(Unreached {
            error: last,
            settled: all.then_some(settled),
            tried_all,
        })
    }

    /// The error to fail with at once when every endpoint failed in a way that waiting will
    /// not soon change (`settled`, from `ensure_conn`): every one no Zatt server (a protocol
    /// error, whatever `wait_for_servers` says: waiting cannot make them one), or, unless the
    /// client waits for servers to start (and their names to be published), each refused,
    /// unresolvable or no Zatt server. `None`: keep trying.
    fn settled_error(&self, settled: Option<Vec<Settled>>, ambiguous: bool) -> Option<Error> {
        let settled = settled?;
        let foreign: Vec<&str> = settled
            .iter()
            .filter_map(|s| match s {
                Settled::Foreign(what) => Some(what.as_str()),
                _ => None,
            })
            .collect();
        if foreign.len() == settled.len() {
            return Some(Error::Protocol {
                what: foreign.join("; "),
                may_have_applied: ambiguous,
            });
        }
        if self.config.wait_for_servers {
            return None;
        }
        let endpoints = self.endpoints.join(",");
        let reason = if settled.iter().all(|s| matches!(s, Settled::Refused(_))) {
            // Every endpoint answered "nobody listens here": no server is up at any of them,
            // and waiting out the timeout would only hide that.
            format!("cannot connect to any of {endpoints}: connection refused")
        } else {
            // Each endpoint's reason; the endpoint is named unless it is the only one (a
            // foreign one's reason names it anyway).
            let one = self.endpoints.len() == 1;
            let each: Vec<String> = settled
                .into_iter()
                .map(|s| match s {
                    Settled::Refused(addr) => format!("{addr}: connection refused"),
                    Settled::NoSuchHost(_, what) if one => what,
                    Settled::NoSuchHost(addr, what) => format!("{addr}: {what}"),
                    Settled::Foreign(what) => what,
                })
                .collect();
            format!("cannot connect to any of {endpoints}: {}", each.join("; "))
        };
        Some(Error::Unavailable {
            reason,
            may_have_applied: ambiguous,
        })
    }

    /// The server refused the connection in use, over its connection limit. It says so on
    /// request id 0 as it accepts the connection, which it then closes without reading a
    /// request: nothing was applied. Connections may free up, or another server may have room.
    fn refused_over_limit(&mut self, attempts: &mut Attempts, limit: u64, deadline: Instant) {
        let addr = self.conn.take().map(|c| c.addr).unwrap_or_default();
        self.skip_endpoint();
        attempts.last_failure = Some(Failure::Refused(format!(
            "{addr} {}",
            too_many_connections(limit)
        )));
        attempts.back_off(deadline);
    }

    /// The server at `addr` failed to answer: when the next reconnection would start at it,
    /// it starts at the endpoint after it instead. (`ensure_conn` stays with the endpoint that
    /// last accepted a connection, and a paused process's kernel still accepts them.) A leader
    /// reached through a hint is not one of the places reconnections start from, so nothing
    /// moves then: the endpoint in turn is tried next.
    fn leave_endpoint(&mut self, addr: &str) {
        let n = self.endpoints.len();
        if n > 0 && self.endpoints[self.next_endpoint % n] == addr {
            self.next_endpoint = (self.next_endpoint + 1) % n;
        }
    }

    /// The next reconnection starts from the endpoint after the one in use.
    fn skip_endpoint(&mut self) {
        if !self.endpoints.is_empty() {
            self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len();
        }
    }

    fn dial(&mut self, addr: &str, deadline: Instant) -> Result<Conn, ConnError> {
        self.stats.connects += 1;
        open_conn(&self.config, self.tls.as_ref(), addr, deadline)
    }
}

/// A connection to `addr` as `config` says (TLS when it has both halves), its connect
/// timeout cut to what is left before `deadline`. Shared by requests and watches.
fn open_conn(
    config: &ClientConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
    addr: &str,
    deadline: Instant,
) -> Result<Conn, ConnError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = config
        .connect_timeout
        .min(left)
        .max(Duration::from_millis(1));
    let tls = match (tls, &config.tls) {
        (Some(c), Some(t)) => Some((c, t)),
        _ => None,
    };
    Conn::connect(addr, timeout, tls, config.limits)
}

/// Sleeps a growing pause (10 ms doubling to 200 ms; `ms` holds the last), never past the
/// deadline. Shared by requests and watches.
fn back_off(ms: &mut u64, deadline: Instant) {
    *ms = (*ms * 2).clamp(10, 200);
    let left = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(left.min(Duration::from_millis(*ms)));
}

/// Why `ensure_conn` found no server: the last failure (`None`: nothing was dialled, the
/// deadline having passed or every endpoint being no Zatt server), when every endpoint failed
/// in a way that waiting will not soon change how each did, and whether every endpoint was
/// tried (the deadline did not cut the round short).
struct Unreached {
    error: Option<ConnError>,
    settled: Option<Vec<Settled>>,
    tried_all: bool,
}

fn is_protocol(e: &mut ConnError) -> bool {
    matches!(e, ConnError::Protocol(_))
}

/// How an endpoint failed for now: nothing listens there, its name does not resolve, or it is
/// no Zatt server.
enum Settled {
    /// The endpoint refused the connection.
    Refused(String),
    /// The endpoint, and what says its host name does not resolve (naming the host).
    NoSuchHost(String, String),
    /// What says the endpoint is no Zatt server (it names the endpoint).
    Foreign(String),
}

fn route_for(c: Consistency) -> Route {
    match c {
        Consistency::Linearizable => Route::Leader,
        Consistency::Stale => Route::Any,
    }
}

fn set_session(req: &mut Request, tag: Option<(u64, u64)>) {
    match req {
        Request::Put { session, .. }
        | Request::Delete { session, .. }
        | Request::Cas { session, .. } => *session = tag,
        _ => {}
    }
}

/// The request id the server answers with when it speaks of the connection rather than of a
/// request (`TooManyConnections`); never used for a request.
pub(crate) const CONNECTION_ID: u64 = 0;

/// Why a server refused a connection over its limit (after its address), naming the
/// server's option for the limit.
pub(crate) fn too_many_connections(limit: u64) -> String {
    format!(
        "refused the connection: it has too many client connections (its --max-connections \
         is {limit})"
    )
}

fn describe(e: &ConnError) -> String {
    match e {
        ConnError::Timeout => "timed out".into(),
        ConnError::Io(e) => e.to_string(),
        ConnError::Protocol(p) | ConnError::Foreign(p) | ConnError::NoSuchHost(p) => p.clone(),
    }
}

/// Starts an in-process stand-in server for documentation examples (see [`fake`]); it stops
/// when the returned guard is dropped. Not for applications.
#[doc(hidden)]
pub fn example_server() -> (String, fake::FakeServer) {
    let server = fake::FakeServer::start();
    (server.addr().to_string(), server)
}
