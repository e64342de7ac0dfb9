//! A scripted stand-in server for the client's tests and documentation examples: one node, a
//! map in memory, sessions with exactly-once replies, no replication and no disk. A test script
//! can make it answer `NotLeader` with a hint, drop a connection (before or after applying a
//! write), delay a reply, or answer out of order.
//!
//! Must not be used by applications or by the real server (`zattd` has its own `kv`); it
//! exists so the client's retry logic can be tested without a cluster. It shares only `wire`
//! with the server, as the client must.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConnection, StreamOwned};

use crate::wire::client::{
    decode_request_owned, encode_response, split_frame, ErrorKind, Expect, FrameLimits, MemberInfo,
    Request, Response, Status,
};

use super::conn::Stream;

/// What the fake does with one request, as decided by the script.
// A script holds a handful of these: the size of a `Response` (a status answer is large) does
// not matter here, and boxing it would only make scripts harder to read.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer as a single-node dictionary would.
    Serve,
    /// Answer this instead (nothing applied).
    Reply(Response),
    /// Close the connection without applying or answering.
    Close,
    /// Apply the request, then close the connection without answering (the write's outcome is
    /// unknown to the client, yet it was applied).
    ServeThenClose,
    /// Serve and answer, then close the connection (as a server closing an idle connection).
    ServeThenHangUp,
    /// Wait, then serve.
    Delay(Duration),
    /// Apply now, but send the reply only after the reply to the next request on this
    /// connection (replies out of order).
    Later,
    /// Never answer (the connection stays open).
    Ignore,
    /// Write these bytes instead of a reply, then close the connection (hostile-server tests).
    Garbage(Vec<u8>),
}

/// Decides the action for each request: `(request, how many requests this server has
/// received before it)`.
pub type Script = Box<dyn FnMut(&Request, u64) -> Action + Send>;

/// The fake's dictionary and bookkeeping, open to the test for assertions.
#[derive(Default)]
pub struct FakeState {
    /// key → (value, revision)
    pub map: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    pub last_index: u64,
    /// session id → (last applied seq, its reply)
    pub sessions: HashMap<u64, (u64, Option<Response>)>,
    /// Writes applied (duplicates answered from a session are not counted).
    pub applied_writes: u64,
    /// Every request received, in order.
    pub requests: Vec<Request>,
    /// Connections this server has closed or seen closed.
    pub connections_closed: u64,
    /// Scan pages are capped at this many keys (0: 500).
    pub max_scan_page: u32,
    pub node_id: u64,
    script: Option<Script>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<FakeState>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running fake server; dropping it stops it.
pub struct FakeServer {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts on a free loopback port, serving every request.
    pub fn start() -> FakeServer {
        Self::start_with(None)
    }

    /// Starts speaking TLS with this server configuration.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> FakeServer {
        Self::start_with(Some(config))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(FakeState {
                node_id: 1,
                ..FakeState::default()
            }),
            tls,
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, s));
        FakeServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Installs the script that decides each request's fate.
    pub fn script(&self, script: impl FnMut(&Request, u64) -> Action + Send + 'static) {
        self.state().script = Some(Box::new(script));
    }

    /// Makes every request that needs a leader answer `NotLeader` pointing at `leader`.
    pub fn redirect_to(&self, leader_id: u64, leader_addr: &str) {
        let addr = leader_addr.to_string();
        self.script(move |req, _| {
            if needs_leader(req) {
                Action::Reply(Response::Error(ErrorKind::NotLeader {
                    leader: Some(leader_id),
                    leader_addr: Some(addr.clone()),
                }))
            } else {
                Action::Serve
            }
        });
    }

    /// Forgets every session (as if they had expired).
    pub fn expire_sessions(&self) {
        self.state().sessions.clear();
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Whether a real follower would refuse `req` with `NotLeader`.
pub fn needs_leader(req: &Request) -> bool {
    match req {
        Request::Get { consistency, .. }
        | Request::Scan { consistency, .. }
        | Request::Len { consistency } => {
            *consistency == crate::wire::client::Consistency::Linearizable
        }
        Request::Status => false,
        _ => true,
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                conns.push(std::thread::spawn(move || {
                    let _ = serve_conn(stream, s.clone());
                    s.state
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .connections_closed += 1;
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn serve_conn(tcp: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_millis(20)))?;
    tcp.set_nodelay(true)?;
    let mut stream = match &shared.tls {
        None => Stream::Plain(tcp),
        Some(cfg) => {
            let conn = ServerConnection::new(cfg.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    };
    let limits = FrameLimits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        loop {
            let (len, _) = match split_frame(&buf, &limits) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Ok(()),
            };
            let decoded = decode_request_owned(&buf[..len], &limits);
            buf.drain(..len);
            let (id, req) = match decoded {
                Ok(r) => r,
                Err(e) => {
                    let mut out = Vec::new();
                    encode_response(0, &Response::Error(e.to_error_kind()), &mut out);
                    stream.write_all(&out)?;
                    continue;
                }
            };
            let action = {
                let mut st = shared
                    .state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let n = st.requests.len() as u64;
                st.requests.push(req.clone());
                match st.script.as_mut() {
                    Some(script) => script(&req, n),
                    None => Action::Serve,
                }
            };
            let mut hang_up = false;
            let resp = match action {
                Action::Serve => serve(&shared, &req),
                Action::ServeThenHangUp => {
                    hang_up = true;
                    serve(&shared, &req)
                }
                Action::Reply(r) => r,
                Action::Close => return Ok(()),
                Action::ServeThenClose => {
                    serve(&shared, &req);
                    return Ok(());
                }
                Action::Delay(d) => {
                    std::thread::sleep(d);
                    serve(&shared, &req)
                }
                Action::Later => {
                    let resp = serve(&shared, &req);
                    encode_response(id, &resp, &mut held);
                    continue;
                }
                Action::Ignore => continue,
                Action::Garbage(bytes) => {
                    stream.write_all(&bytes)?;
                    stream.flush()?;
                    return Ok(());
                }
            };
            let mut out = Vec::new();
            encode_response(id, &resp, &mut out);
            out.append(&mut held);
            stream.write_all(&out)?;
            stream.flush()?;
            if hang_up {
                return Ok(());
            }
        }
    }
}

fn serve(shared: &Shared, req: &Request) -> Response {
    let mut st = shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    st.apply(req)
}

impl FakeState {
    /// Answers `req` as a single-node dictionary with sessions.
    pub fn apply(&mut self, req: &Request) -> Response {
        let session = match req {
            Request::Put { session, .. }
            | Request::Delete { session, .. }
            | Request::Cas { session, .. } => *session,
            _ => None,
        };
        if let Some((id, seq)) = session {
            match self.sessions.get(&id) {
                None => return Response::Error(ErrorKind::SessionExpired),
                Some((last, reply)) => {
                    if seq == 0 {
                        return Response::Error(ErrorKind::Invalid("session seq 0".into()));
                    }
                    if seq < *last {
                        return Response::Error(ErrorKind::StaleRequest);
                    }
                    if seq == *last {
                        if let Some(r) = reply {
                            return r.clone();
                        }
                    }
                }
            }
        }
        let resp = self.apply_fresh(req);
        if let Some((id, seq)) = session {
            self.sessions.insert(id, (seq, Some(resp.clone())));
        }
        resp
    }

    fn apply_fresh(&mut self, req: &Request) -> Response {
        match req {
            Request::RegisterSession => {
                self.last_index += 1;
                self.sessions.insert(self.last_index, (0, None));
                Response::SessionRegistered {
                    id: self.last_index,
                }
            }
            Request::Get { key, .. } => {
                let (value, revision) = match self.map.get(key) {
                    Some((v, r)) => (Some(v.clone()), *r),
                    None => (None, 0),
                };
                Response::Value {
                    value,
                    revision,
                    applied_index: self.last_index,
                }
            }
            Request::Put { key, value, .. } => {
                self.last_index += 1;
                self.applied_writes += 1;
                self.map
                    .insert(key.clone(), (value.clone(), self.last_index));
                Response::Written {
                    revision: self.last_index,
                }
            }
            Request::Delete { key, .. } => {
                self.last_index += 1;
                self.applied_writes += 1;
                let existed = self.map.remove(key).is_some();
                Response::Deleted {
                    revision: self.last_index,
                    existed,
                }
            }
            Request::Cas {
                key, expect, new, ..
            } => {
                let current = self.map.get(key).cloned();
                let holds = match (expect, &current) {
                    (Expect::Absent, None) => true,
                    (Expect::Value(v), Some((cur, _))) => v == cur,
                    (Expect::Revision(r), Some((_, rev))) => r == rev,
                    (Expect::Revision(0), None) => true,
                    _ => false,
                };
                self.last_index += 1;
                if !holds {
                    return Response::CasFailed { current };
                }
                self.applied_writes += 1;
                match new {
                    Some(v) => {
                        self.map.insert(key.clone(), (v.clone(), self.last_index));
                    }
                    None => {
                        self.map.remove(key);
                    }
                }
                Response::CasOk {
                    revision: self.last_index,
                }
            }
            Request::Scan {
                prefix,
                start_after,
                limit,
                ..
            } => {
                let cap = if self.max_scan_page == 0 {
                    500
                } else {
                    self.max_scan_page
                };
                let limit = (*limit).min(cap).max(1) as usize;
                let mut items = Vec::new();
                let mut more = false;
                for (k, (v, r)) in self.map.range(prefix.clone()..) {
                    if !k.starts_with(prefix) {
                        break;
                    }
                    if let Some(after) = start_after {
                        if k <= after {
                            continue;
                        }
                    }
                    if items.len() == limit {
                        more = true;
                        break;
                    }
                    items.push((k.clone(), v.clone(), *r));
                }
                Response::ScanPage {
                    items,
                    more,
                    applied_index: self.last_index,
                }
            }
            Request::Len { .. } => Response::Len {
                len: self.map.len() as u64,
                applied_index: self.last_index,
            },
            Request::Status => Response::Status(Box::new(Status {
                id: self.node_id,
                role: "leader".into(),
                term: 1,
                leader: Some(self.node_id),
                commit_index: self.last_index,
                applied_index: self.last_index,
                last_index: self.last_index,
                members: vec![MemberInfo {
                    id: self.node_id,
                    addr: String::new(),
                    voter: true,
                }],
                keys: self.map.len() as u64,
                sessions: self.sessions.len() as u64,
                ..Status::default()
            })),
            Request::Members => Response::Members(vec![MemberInfo {
                id: self.node_id,
                addr: String::new(),
                voter: true,
            }]),
            Request::MemberAdd { .. }
            | Request::MemberPromote { .. }
            | Request::MemberRemove { .. }
            | Request::TransferLeader { .. } => {
                self.last_index += 1;
                Response::Done
            }
            // The stand-in keeps no change history: watches need a real server.
            Request::Watch { .. } | Request::CancelWatch { .. } => Response::Error(
                ErrorKind::Invalid("the stand-in server does not serve watches".into()),
            ),
            Request::SnapshotSave | Request::SnapshotChunk { .. } => Response::Error(
                ErrorKind::Invalid("the fake server takes no snapshots".into()),
            ),
        }
    }
}
