//! The client library against the scripted fake server (`zatt::client::fake`): leader hints,
//! retries that apply a write once, session expiry, typed errors, pipelining with replies out of
//! order, paged scans, the DistributedDict's refresh policies, and TLS. Every wait is bounded by
//! the client's own timeouts; no assertion is about time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zatt::client::fake::{Action, FakeServer};
use zatt::client::{
    Client, ClientConfig, ClusterChange, Consistency, DistributedDict, Error, ErrorKind, Escaped,
    Expect, Pipeline, RefreshLock, RefreshPolicy, Request, Response, ScanOptions, Status,
    TlsConfig,
};
use zatt::rng::SplitMix64;

fn quick() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn puts(server: &FakeServer) -> Vec<Request> {
    server
        .state()
        .requests
        .iter()
        .filter(|r| matches!(r, Request::Put { .. }))
        .cloned()
        .collect()
}

fn session_of(r: &Request) -> Option<(u64, u64)> {
    match r {
        Request::Put { session, .. }
        | Request::Delete { session, .. }
        | Request::Cas { session, .. } => *session,
        _ => None,
    }
}

#[test]
fn not_leader_hint_is_followed_to_the_leader() {
    // Goal: a client given only a follower finds the leader. Method: the follower answers
    // NotLeader naming the leader's address; the write must land on the leader.
    let leader = FakeServer::start();
    let follower = FakeServer::start();
    follower.redirect_to(2, leader.addr());
    let mut c = Client::connect(&[follower.addr()], quick()).unwrap();
    c.put("k", "v").unwrap();
    assert_eq!(c.get("k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(leader.state().map.get(&b"k"[..]).unwrap().0, b"v");
    assert!(follower.state().map.is_empty());
    assert_eq!(c.connected_to(), Some(leader.addr()));
}

#[test]
fn a_leader_hint_that_cannot_be_dialled_sends_the_client_on_to_its_other_endpoints() {
    // Goal: a follower that names the leader by an address this client cannot reach (the
    // address the servers know each other by, seen from elsewhere) must not hold the client:
    // it goes on to its other endpoints, where it may reach the leader under another address.
    // Method: endpoints [follower, leader]; the follower names the leader as a refused port;
    // a put must land on the leader.
    let leader = FakeServer::start();
    let follower = FakeServer::start();
    follower.redirect_to(2, "127.0.0.1:1");
    let mut c = Client::connect(&[follower.addr(), leader.addr()], quick()).unwrap();
    assert_eq!(c.connected_to(), Some(follower.addr()));
    c.put("k", "v").unwrap();
    assert_eq!(leader.state().map.get(&b"k"[..]).unwrap().0, b"v");
    assert_eq!(c.connected_to(), Some(leader.addr()));
}

#[test]
fn a_leader_the_client_cannot_reach_is_named_when_the_call_fails() {
    // Goal: with no other way to the leader, the call fails saying which address the servers
    // name and why it cannot be reached, not with a bare timeout. Method: the only endpoint
    // names the leader as a refused port; the put fails as unavailable, naming it.
    let follower = FakeServer::start();
    follower.redirect_to(2, "127.0.0.1:1");
    let mut c = Client::connect(&[follower.addr()], quick()).unwrap();
    let err = c.put("k", "v").unwrap_err();
    let Error::Unavailable { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.contains("the servers name the leader 127.0.0.1:1, which this client cannot reach"),
        "{reason}"
    );
}

#[test]
fn stale_reads_are_served_by_the_connected_follower() {
    // Goal: `get_stale` needs no leader. Method: a follower that refuses leader-only requests
    // still answers a stale read from its own map.
    let follower = FakeServer::start();
    follower.state().apply(&Request::Put {
        session: None,
        key: b"k".to_vec(),
        value: b"old".to_vec(),
    });
    follower.redirect_to(9, "127.0.0.1:1");
    let mut c = Client::connect(&[follower.addr()], quick()).unwrap();
    assert_eq!(c.get_stale("k").unwrap(), Some(b"old".to_vec()));
}

#[test]
fn write_retried_after_a_dropped_connection_applies_once() {
    // Goal: exactly-once through a lost reply. Method: the server applies the first put and
    // drops the connection before answering; the client resends with the same session tag and
    // gets the cached reply; the write is applied once.
    let server = FakeServer::start();
    server.script(|req, _| match req {
        Request::Put { .. } => {
            static FIRST: AtomicU64 = AtomicU64::new(0);
            if FIRST.fetch_add(1, Ordering::SeqCst) == 0 {
                Action::ServeThenClose
            } else {
                Action::Serve
            }
        }
        _ => Action::Serve,
    });
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    let rev = c.put("k", "v").unwrap();
    let p = puts(&server);
    assert_eq!(p.len(), 2, "the put was sent twice");
    assert_eq!(session_of(&p[0]), session_of(&p[1]));
    assert!(session_of(&p[0]).is_some());
    assert_eq!(server.state().applied_writes, 1);
    assert_eq!(server.state().map.get(&b"k"[..]).unwrap().1, rev);
}

#[test]
fn slow_reply_is_retried_with_the_same_tag_and_applied_once() {
    // Goal: a reply slower than the request timeout does not double-apply. Method: the first
    // put is delayed past the client's request timeout; the retry on a new connection races it.
    let server = FakeServer::start();
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    server.script(move |req, _| match req {
        Request::Put { .. } if n2.fetch_add(1, Ordering::SeqCst) == 0 => {
            Action::Delay(Duration::from_millis(600))
        }
        _ => Action::Serve,
    });
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    c.put("k", "v").unwrap();
    // The delayed attempt is served on its own connection's thread, which then finds that
    // connection given up by the client and counts it closed: wait for that (bounded), so the
    // delayed attempt has been applied or answered from the session before anything is checked.
    for _ in 0..1000 {
        if server.state().connections_closed >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.state().connections_closed,
        1,
        "the delayed attempt was never served"
    );
    let p = puts(&server);
    assert!(p.len() >= 2);
    assert!(p.iter().all(|r| session_of(r) == session_of(&p[0])));
    assert_eq!(server.state().applied_writes, 1);
}

#[test]
fn expired_session_before_any_attempt_is_renewed_transparently() {
    // Goal: an idle client whose session expired still writes, once. Method: the server forgets
    // every session between two writes; the second write gets SessionExpired, the client
    // registers again and resends under the new session.
    let server = FakeServer::start();
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    c.put("a", "1").unwrap();
    server.expire_sessions();
    c.put("b", "2").unwrap();
    let p = puts(&server);
    assert_eq!(p.len(), 3);
    assert_ne!(session_of(&p[1]).unwrap().0, session_of(&p[2]).unwrap().0);
    assert_eq!(server.state().applied_writes, 2);
}

#[test]
fn expired_session_after_an_unknown_outcome_reports_may_have_applied() {
    // Goal: when the cluster can no longer say whether a write applied, the client says so.
    // Method: the first put is applied but its reply lost; the retry is answered
    // SessionExpired; the error must be SessionExpired with may_have_applied, and the client
    // must work again afterwards with a new session.
    let server = FakeServer::start();
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    server.script(move |req, _| match req {
        Request::Put { .. } => match n2.fetch_add(1, Ordering::SeqCst) {
            0 => Action::ServeThenClose,
            1 => Action::Reply(Response::Error(ErrorKind::SessionExpired)),
            _ => Action::Serve,
        },
        _ => Action::Serve,
    });
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    let err = c.put("k", "v").unwrap_err();
    assert!(matches!(err, Error::SessionExpired { .. }), "got {err:?}");
    assert!(err.may_have_applied());
    c.put("k2", "v2").unwrap();
    let p = puts(&server);
    assert_ne!(session_of(&p[0]).unwrap().0, session_of(&p[2]).unwrap().0);
}

#[test]
fn untagged_write_is_not_resent_after_an_unknown_outcome() {
    // Goal: with sessions off, a lost reply is reported, never retried (a retry could apply
    // twice). Method: the first put is applied and the connection dropped. (A status request
    // proves the new connection before the put: the put is not the first request.)
    let server = FakeServer::start();
    let first_put = std::sync::atomic::AtomicBool::new(true);
    server.script(move |req, _| match req {
        Request::Put { .. } if first_put.swap(false, std::sync::atomic::Ordering::SeqCst) => {
            Action::ServeThenClose
        }
        _ => Action::Serve,
    });
    let config = ClientConfig {
        sessions: false,
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], config).unwrap();
    let err = c.put("k", "v").unwrap_err();
    assert!(err.may_have_applied(), "{err:?}");
    assert_eq!(puts(&server).len(), 1);
    assert!(session_of(&puts(&server)[0]).is_none());
    assert_eq!(server.state().applied_writes, 1);
}

#[test]
fn a_write_sent_once_is_not_sent_on_a_connection_refused_over_the_server_s_limit() {
    // Goal: when the status request that proves a new connection is answered with
    // TooManyConnections (said on request id 0, then the connection closed), the write sent
    // only once waits and goes on a new connection; it is not sent on the refused one, where
    // it would fail as "may have applied" though nothing read it. Method: the first status
    // request gets that refusal; a put with sessions off must succeed, applied once.
    let server = FakeServer::start();
    let mut refusal = Vec::new();
    zatt::wire::client::encode_response(
        0,
        &Response::Error(ErrorKind::TooManyConnections { limit: 1 }),
        &mut refusal,
    );
    server.script(move |req, n| match req {
        Request::Status if n == 0 => Action::Garbage(refusal.clone()),
        _ => Action::Serve,
    });
    let config = ClientConfig {
        sessions: false,
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], config).unwrap();
    c.put("k", "v").unwrap();
    assert_eq!(puts(&server).len(), 1);
    assert_eq!(server.state().applied_writes, 1);
}

#[test]
fn untagged_write_on_a_connection_closed_while_idle_is_sent_once_and_succeeds() {
    // Goal: a server that dropped an idle connection does not turn the next untagged write
    // into an unknown outcome. Method: the server answers a read and hangs up; the following
    // put (sessions off) must succeed, sent once, on a new connection.
    let server = FakeServer::start();
    server.script(|req, _| match req {
        Request::Get { .. } => Action::ServeThenHangUp,
        _ => Action::Serve,
    });
    let config = ClientConfig {
        sessions: false,
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], config).unwrap();
    assert_eq!(c.get("k").unwrap(), None);
    for _ in 0..200 {
        if server.state().connections_closed >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.state().connections_closed, 1);
    c.put("k", "v").unwrap();
    assert_eq!(puts(&server).len(), 1);
    assert_eq!(server.state().applied_writes, 1);
}

#[test]
fn hostile_server_bytes_are_typed_errors_not_panics_or_huge_allocations() {
    // Goal: whatever a server sends, the client answers with a typed error. Method: replies
    // that declare a 4 GiB frame, a frame shorter than its header, an unknown opcode, and
    // random bytes; each get must fail (not panic, not allocate by the declared length).
    let mut huge = vec![0xF0, 0xFF, 0xFF, 0xFF];
    huge.extend_from_slice(&1u64.to_le_bytes());
    huge.push(0x82);
    let mut short = vec![3, 0, 0, 0];
    short.extend_from_slice(&[0; 9]);
    let mut unknown_op = 9u32.to_le_bytes().to_vec();
    unknown_op.extend_from_slice(&1u64.to_le_bytes());
    unknown_op.push(0x7F);
    let random = SplitMix64(0x9E37_79B9_7F4A_7C15).bytes(64);
    for garbage in [huge, short, unknown_op, random] {
        let server = FakeServer::start();
        let g = garbage.clone();
        server.script(move |_, _| Action::Garbage(g.clone()));
        let config = ClientConfig {
            timeout: Duration::from_millis(300),
            ..quick()
        };
        let mut c = Client::connect(&[server.addr()], config).unwrap();
        let err = c.get("k").unwrap_err();
        assert!(!err.may_have_applied(), "{garbage:?}: {err:?}");
        let err = c.put("k", "v").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable { .. } | Error::Timeout { .. } | Error::Protocol { .. }
            ),
            "{garbage:?}: {err:?}"
        );
    }
}

#[test]
fn unreachable_cluster_is_unavailable_and_not_applied() {
    // Goal: no server → a clear error within the timeout. Method: dial a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = ClientConfig {
        timeout: Duration::from_millis(500),
        ..quick()
    };
    let err = Client::connect(&[format!("127.0.0.1:{port}")], config).unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(!err.may_have_applied());
    assert!(err.to_string().contains("Connection refused"), "{err}");
}

#[test]
fn by_default_connect_waits_for_a_server_that_is_starting() {
    // Goal: an application started alongside its servers (`wait_for_servers`, the default)
    // connects once one listens, rather than failing on the first refusal. Method: the port
    // starts listening 300 ms after connect begins.
    // A reserved port (outside the ephemeral range): nothing else can take it meanwhile.
    let port = common::reserve_ports(1).pop().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port.port).parse().unwrap();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.accept().map(|_| ())
    });
    let c = Client::connect(&[addr.to_string()], quick());
    assert!(c.is_ok(), "{:?}", c.err());
    assert!(starter.join().unwrap().is_ok());
}

#[test]
fn connection_refused_everywhere_fails_at_once_and_one_live_endpoint_suffices() {
    // Goal: with `wait_for_servers: false`, when nothing listens at any endpoint, connect
    // reports it at once rather than after the timeout; a refusing endpoint among live ones is
    // skipped. Method: a timeout of an hour, which an unnoticed refusal would wait out (the
    // test would hang, not pass).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let config = ClientConfig {
        timeout: Duration::from_secs(3600),
        wait_for_servers: false,
        ..quick()
    };
    let err = Client::connect(&[closed.clone(), closed.clone()], config.clone()).unwrap_err();
    assert!(
        err.to_string().contains("connection refused"),
        "{err}: refused is named"
    );
    let live = FakeServer::start();
    let mut c = Client::connect(&[closed.as_str(), live.addr()], config).unwrap();
    c.put("k", "v").unwrap();
}

#[test]
fn a_peer_that_does_not_speak_the_protocol_is_named_as_such() {
    // Goal: a port held by another kind of server (here an HTTP-like one answering anything
    // with a 400) is reported as not speaking the protocol, at once and without retries,
    // rather than as a timeout to wait out. Method: a timeout of an hour.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let config = ClientConfig {
        timeout: Duration::from_secs(3600),
        ..quick()
    };
    let mut c = Client::connect(&[&addr], config).unwrap();
    let err = c.get("k").unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "{addr} is not a Zatt server: it answered \"HTTP/1.1 400 Bad Request\\r\\n\\r\\n\""
        )),
        "{err}"
    );
}

/// A listener that greets every connection with `reply` at once, before reading anything,
/// and keeps it open (as many servers of other protocols do, or an HTTP server's 400): its
/// address. The thread lives as long as the test process.
fn greeting_listener(reply: &'static [u8]) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let _ = std::io::Write::write_all(&mut s, reply);
            open.push(s);
        }
    });
    addr
}

#[test]
fn an_endpoint_that_is_no_zatt_server_is_skipped_for_the_next() {
    // Goal: with several endpoints, one that answers in another protocol is treated as an
    // unreachable one: the request goes to the next at once (a write too, which that server
    // cannot have applied); only when every endpoint is no Zatt server does the operation
    // fail, naming each, without waiting for its timeout. Method: a timeout of an hour; a
    // reply shorter than a frame header ("SSH-2.0\r\n"), so it is told from the first bytes.
    let http = greeting_listener(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let ssh = greeting_listener(b"SSH-2.0\r\n");
    let server = FakeServer::start();
    let config = ClientConfig {
        timeout: Duration::from_secs(3600),
        sessions: false,
        ..quick()
    };
    let mut c = Client::connect(&[&http, &ssh, server.addr()], config.clone()).unwrap();
    c.put("k", "v").unwrap();
    assert_eq!(c.get("k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(c.connected_to(), Some(server.addr()));
    assert_eq!(puts(&server).len(), 1, "the write was sent once");

    let mut c = Client::connect(&[&http, &ssh], config).unwrap();
    let err = c.put("k", "v").unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(!err.may_have_applied(), "{err:?}");
    let said = err.to_string();
    assert!(
        said.contains(&format!(
            "{http} is not a Zatt server: it answered \"HTTP/1.1 400"
        )) && said.contains(&format!(
            "{ssh} is not a Zatt server: it answered \"SSH-2.0\\r\\n\""
        )),
        "{said}"
    );
}

#[test]
fn a_deadline_bounds_every_operation_after_it() {
    // Goal: `set_deadline` bounds a sequence of operations as a whole (what `zatt --timeout`
    // needs), where `timeout` bounds each one. Method: each scan page takes 200 ms and each is
    // within the per-operation timeout, but three pages cannot fit a 300 ms deadline.
    let server = FakeServer::start();
    for k in ["a", "b", "c"] {
        other_writer(&server, k, "v");
    }
    server.state().max_scan_page = 1;
    server.script(|req, _| match req {
        Request::Scan { .. } => Action::Delay(Duration::from_millis(200)),
        _ => Action::Serve,
    });
    // Each attempt may take far longer than a page (the machine may be loaded): only the
    // deadline may cut the scan short.
    let patient = ClientConfig {
        request_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], patient).unwrap();
    assert_eq!(
        c.dump().unwrap().len(),
        3,
        "without a deadline, the scan completes"
    );
    c.set_deadline(Some(std::time::Instant::now() + Duration::from_millis(300)));
    let err = c.dump().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let err = c.get("a").unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. }),
        "after the deadline: {err:?}"
    );
    c.set_deadline(None);
    assert_eq!(c.get("a").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn no_leader_anywhere_ends_as_unavailable() {
    // Goal: an election that never ends is reported as unavailable, not as a hang. Method: the
    // only server answers NotLeader without a hint forever.
    let server = FakeServer::start();
    server.script(|_, _| {
        Action::Reply(Response::Error(ErrorKind::NotLeader {
            leader: None,
            leader_addr: None,
        }))
    });
    let config = ClientConfig {
        timeout: Duration::from_millis(400),
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], config).unwrap();
    let err = c.get("k").unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(!err.may_have_applied());
}

/// A stand-in for a server that knows no leader (started with `--join` and not yet added, or
/// cut off from its peers): its status names none, and it refuses every request for the leader
/// with "not the leader, no leader known".
fn knows_no_leader() -> FakeServer {
    let server = FakeServer::start();
    server.script(|req, _| match req {
        Request::Status => Action::Reply(Response::Status(Box::new(Status {
            id: 4,
            role: "follower".into(),
            leader: None,
            leader_addr: None,
            ..Status::default()
        }))),
        _ => Action::Reply(Response::Error(ErrorKind::NotLeader {
            leader: None,
            leader_addr: None,
        })),
    });
    server
}

fn statuses(server: &FakeServer) -> usize {
    let state = server.state();
    state
        .requests
        .iter()
        .filter(|r| matches!(r, Request::Status))
        .count()
}

#[test]
fn what_asks_the_leader_for_its_view_leaves_a_server_that_knows_no_leader_for_the_next() {
    // Goal: members(), leader_status() and pipeline() find the leader from a server's status
    // (`zatt members`, `zatt status --leader`); a status naming no leader must send them to
    // the next endpoint, as a request for the leader is sent, not back to the same server
    // until the timeout. Method: a server that knows no leader goes first (the connection is
    // made to it), the leader second; each call must succeed, the first server asked for its
    // status once per call, and nothing else.
    let lost = knows_no_leader();
    let leader = FakeServer::start();
    let config = quick();
    let endpoints = [lost.addr(), leader.addr()];

    let mut c = Client::connect(&endpoints, config.clone()).unwrap();
    assert_eq!(c.connected_to(), Some(lost.addr()));
    assert_eq!(c.members().unwrap().len(), 1);
    assert_eq!(c.connected_to(), Some(leader.addr()));
    assert_eq!(statuses(&lost), 1);

    let mut c = Client::connect(&endpoints, config.clone()).unwrap();
    assert_eq!(c.connected_to(), Some(lost.addr()));
    assert_eq!(c.leader_status().unwrap().role, "leader");
    assert_eq!(c.connected_to(), Some(leader.addr()));
    assert_eq!(statuses(&lost), 2);

    let mut c = Client::connect(&endpoints, config).unwrap();
    assert_eq!(c.connected_to(), Some(lost.addr()));
    let mut p = c.pipeline().unwrap();
    let id = p
        .send(&Request::Put {
            session: None,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .unwrap();
    assert_eq!(p.recv().unwrap().0, id);
    assert_eq!(leader.state().map.get(&b"k"[..]).unwrap().0, b"v");
    assert_eq!(statuses(&lost), 3);
    assert_eq!(
        lost.state().requests.len(),
        3,
        "only asked for its status: {:?}",
        lost.state().requests
    );
}

#[test]
fn errors_say_whether_the_request_may_have_applied() {
    // Goal: each typed error carries the right may_have_applied. Method: the server answers
    // each put with a scripted error.
    let server = FakeServer::start();
    let replies = vec![
        ErrorKind::TooLarge {
            what: "value".into(),
            limit: 10,
        },
        ErrorKind::Invalid("bad".into()),
        ErrorKind::StaleRequest,
    ];
    let queue = Arc::new(std::sync::Mutex::new(replies));
    let q = queue.clone();
    server.script(move |req, _| match req {
        Request::Put { .. } => Action::Reply(Response::Error(q.lock().unwrap().remove(0))),
        _ => Action::Serve,
    });
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    let e = c.put("k", "v").unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge { limit: 10, what } if what == "value"),
        "{e:?}"
    );
    assert!(!e.may_have_applied());
    let e = c.put("k", "v").unwrap_err();
    assert!(matches!(e, Error::Server(ErrorKind::Invalid(_))), "{e:?}");
    assert!(!e.may_have_applied());
    let e = c.put("k", "v").unwrap_err();
    assert!(e.may_have_applied(), "StaleRequest: {e:?}");
}

#[test]
fn cas_failure_reports_the_current_value() {
    // Goal: a failed compare-and-swap says what is there, and changed nothing.
    let server = FakeServer::start();
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    c.cas("k", Expect::Absent, Some(b"1".to_vec())).unwrap();
    let e = c
        .cas("k", Expect::Value(b"0".to_vec()), Some(b"2".to_vec()))
        .unwrap_err();
    match &e {
        Error::CasFailed {
            current: Some((v, _)),
        } => assert_eq!(v, b"1"),
        other => panic!("expected CasFailed, got {other:?}"),
    }
    assert!(!e.may_have_applied());
    assert_eq!(c.get("k").unwrap(), Some(b"1".to_vec()));
    c.cas("k", Expect::Value(b"1".to_vec()), None).unwrap();
    assert_eq!(c.get("k").unwrap(), None);
}

#[test]
fn pipeline_matches_out_of_order_replies_by_id() {
    // Goal: replies that come back out of order reach the right request. Method: the server
    // holds the first reply until after the second.
    let server = FakeServer::start();
    server.script(|_, n| if n == 0 { Action::Later } else { Action::Serve });
    let mut p = Pipeline::connect(server.addr(), &quick()).unwrap();
    let a = p
        .send(&Request::Put {
            session: None,
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        })
        .unwrap();
    let b = p
        .send(&Request::Get {
            key: b"a".to_vec(),
            consistency: Consistency::Linearizable,
        })
        .unwrap();
    assert_eq!(p.in_flight(), 2);
    let (first, r1) = p.recv().unwrap();
    let (second, r2) = p.recv().unwrap();
    assert_eq!((first, second), (b, a));
    assert!(matches!(r1, Response::Value { value: Some(ref v), .. } if v == b"1"));
    assert!(matches!(r2, Response::Written { .. }));
    assert_eq!(p.in_flight(), 0);
    // Nothing in flight: an immediate error, not a wait for a reply that cannot come.
    assert!(matches!(p.recv(), Err(Error::Config(_))));
}

#[test]
fn pipeline_keeps_many_requests_in_flight() {
    // Goal: a batch importer can send a window of requests before reading any reply. Method:
    // 2,000 puts in windows of 200; every id comes back exactly once.
    let server = FakeServer::start();
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    let mut p = c.pipeline().unwrap();
    let mut pending = std::collections::HashSet::new();
    let mut key = Vec::with_capacity(16);
    for i in 0..2000u32 {
        key.clear();
        key.extend_from_slice(format!("k{i:05}").as_bytes());
        let id = p
            .send_view(&zatt::client::RequestView::Put {
                session: None,
                key: &key,
                value: b"v",
            })
            .unwrap();
        assert!(pending.insert(id));
        while p.in_flight() >= 200 {
            let (id, r) = p.recv().unwrap();
            assert!(matches!(r, Response::Written { .. }), "{r:?}");
            assert!(pending.remove(&id));
        }
    }
    while p.in_flight() > 0 {
        let (id, _) = p.recv().unwrap();
        assert!(pending.remove(&id));
    }
    assert!(pending.is_empty());
    assert_eq!(server.state().map.len(), 2000);
}

#[test]
fn scan_pages_through_ten_thousand_keys() {
    // Goal: a scan returns every key once, in order, across many pages. Method: 10,000 keys,
    // the server caps pages at 300 keys; also a prefix and a limit.
    let server = FakeServer::start();
    {
        let mut st = server.state();
        st.max_scan_page = 300;
        for i in 0..10_000u32 {
            st.apply(&Request::Put {
                session: None,
                key: format!("key/{i:05}").into_bytes(),
                value: i.to_string().into_bytes(),
            });
        }
    }
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    let mut pages = 0;
    let mut keys = Vec::new();
    for page in c.scan("key/") {
        pages += 1;
        keys.extend(page.unwrap().into_iter().map(|kv| kv.key));
    }
    assert_eq!(keys.len(), 10_000);
    assert!(pages >= 34, "{pages} pages");
    let want: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("key/{i:05}").into_bytes())
        .collect();
    assert_eq!(keys, want);

    let some: Vec<_> = c
        .scan_with(ScanOptions {
            prefix: b"key/012".to_vec(),
            limit: Some(42),
            page_size: 10,
            ..ScanOptions::default()
        })
        .items()
        .map(|kv| kv.unwrap().key)
        .collect();
    assert_eq!(some.len(), 42);
    assert_eq!(some[0], b"key/01200");
    assert_eq!(c.dump().unwrap().len(), 10_000);
    assert_eq!(c.len().unwrap(), 10_000);
}

/// Writes through a second client, as another application would.
fn other_writer(server: &FakeServer, key: &str, value: &str) {
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    c.put(key, value).unwrap();
}

#[test]
fn refresh_always_from_a_follower_sees_writes_acknowledged_to_others() {
    // Goal: `RefreshPolicy::Always` (the default) means every read reflects every write
    // acknowledged before it, even when the dict talks to a follower that lags. Method: a
    // follower whose own map never changes, which serves stale reads and redirects the rest
    // to the leader; another client writes at the leader; each read must see its write.
    let leader = FakeServer::start();
    let follower = FakeServer::start();
    follower.redirect_to(1, leader.addr());
    let mut d = DistributedDict::connect(&[follower.addr()], quick()).unwrap();
    for i in 0..20 {
        let v = i.to_string();
        other_writer(&leader, "k", &v);
        assert_eq!(d.get("k").unwrap(), Some(v.into_bytes()), "read {i}");
    }
}

#[test]
fn stale_refreshes_give_up_other_clients_writes_but_never_the_dicts_own() {
    // Goal: the documented cost of `with_refresh_consistency(Stale)`: a lagging follower's copy
    // misses another client's acknowledged write, yet the dict's own writes stay visible.
    // Method: the follower holds an old value the leader has since overwritten.
    let leader = FakeServer::start();
    let follower = FakeServer::start();
    follower.state().apply(&Request::Put {
        session: None,
        key: b"theirs".to_vec(),
        value: b"old".to_vec(),
    });
    follower.redirect_to(1, leader.addr());
    other_writer(&leader, "theirs", "new");
    let client = Client::connect(&[follower.addr()], quick()).unwrap();
    let mut d = DistributedDict::from_client(client).with_refresh_consistency(Consistency::Stale);
    assert_eq!(
        d.get("theirs").unwrap(),
        Some(b"old".to_vec()),
        "stale: lags"
    );
    d.insert("mine", "2").unwrap();
    assert_eq!(d.get("mine").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn refresh_always_sees_every_acknowledged_write() {
    // Goal: the default policy reads the cluster's current state on each read.
    let server = FakeServer::start();
    let mut d = DistributedDict::connect(&[server.addr()], quick()).unwrap();
    assert_eq!(d.get("k").unwrap(), None);
    other_writer(&server, "k", "1");
    assert_eq!(d.get("k").unwrap(), Some(b"1".to_vec()));
    other_writer(&server, "k", "2");
    assert!(d.contains_key("k").unwrap());
    assert_eq!(d.get("k").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn refresh_lock_freezes_the_copy_while_clear() {
    // Goal: with the lock clear the copy does not change; setting it resumes refreshing;
    // the dict's own writes show at once either way.
    let server = FakeServer::start();
    let lock = RefreshLock::new(false);
    let mut d = DistributedDict::connect(&[server.addr()], quick())
        .unwrap()
        .with_policy(RefreshPolicy::Lock(lock.clone()));
    assert_eq!(d.len().unwrap(), 0); // first read loads the copy
    other_writer(&server, "k", "1");
    assert_eq!(d.get("k").unwrap(), None);
    d.insert("mine", "x").unwrap();
    assert_eq!(d.get("mine").unwrap(), Some(b"x".to_vec()));
    lock.set(true);
    assert_eq!(d.get("k").unwrap(), Some(b"1".to_vec()));
    lock.set(false);
    other_writer(&server, "k", "2");
    assert_eq!(d.get("k").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn refresh_count_serves_n_reads_per_refresh() {
    // Goal: Count(3) refreshes on the first read and then every third read.
    let server = FakeServer::start();
    let mut d = DistributedDict::connect(&[server.addr()], quick())
        .unwrap()
        .with_policy(RefreshPolicy::Count(3));
    assert_eq!(d.get("k").unwrap(), None); // read 1: loads
    other_writer(&server, "k", "1");
    assert_eq!(d.get("k").unwrap(), None); // read 2: local
    assert_eq!(d.get("k").unwrap(), None); // read 3: local
    assert_eq!(d.get("k").unwrap(), Some(b"1".to_vec())); // read 4: refreshed
    assert_eq!(d.refresh_count(), 2);
}

#[test]
fn refresh_time_refreshes_only_when_the_copy_is_older_than_the_period() {
    // Goal: Time(period) serves from the copy within the period. Method: an hour-long period
    // never expires during the test; a zero period always has.
    let server = FakeServer::start();
    let mut d = DistributedDict::connect(&[server.addr()], quick())
        .unwrap()
        .with_policy(RefreshPolicy::Time(Duration::from_secs(3600)));
    assert_eq!(d.get("k").unwrap(), None);
    other_writer(&server, "k", "1");
    assert_eq!(d.get("k").unwrap(), None);
    d.set_policy(RefreshPolicy::Time(Duration::ZERO));
    assert_eq!(d.get("k").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_new_dict_shows_the_cluster_at_once() {
    // Goal: `connect` loads the copy, so printing a fresh dict shows what the cluster holds
    // (the README's tour printed `{}`).
    let server = FakeServer::start();
    other_writer(&server, "hello", "world");
    let d = DistributedDict::connect(&[server.addr()], quick()).unwrap();
    assert_eq!(format!("{d:?}"), r#"{"hello": "world"}"#);
}

#[test]
fn dict_values_can_be_held_together_and_the_dict_walked_with_for() {
    // Goal: what a Rust user expects of a map: two values read one after the other held at
    // once (no borrow of the dict), and `for (k, v) in &dict`.
    let server = FakeServer::start();
    let mut d = DistributedDict::connect(&[server.addr()], quick()).unwrap();
    d.insert("a", "1").unwrap();
    d.insert("b", "2").unwrap();
    let a = d.get("a").unwrap();
    let b = d.get("b").unwrap();
    assert_ne!(a, b);
    assert_eq!((a, b), (Some(b"1".to_vec()), Some(b"2".to_vec())));
    let mut seen = Vec::new();
    for (k, v) in &d {
        seen.push(format!("{}={}", Escaped(k), Escaped(v)));
    }
    assert_eq!(seen, ["a=1", "b=2"]);
    assert_eq!((&d).into_iter().count(), 2);
}

#[test]
fn key_values_print_as_readable_text() {
    // Goal: `KeyValue`'s Debug and Display show text, escaped, not arrays of numbers.
    let server = FakeServer::start();
    let mut c = Client::connect(&[server.addr()], quick()).unwrap();
    c.put("greeting", "hello\tworld\n").unwrap();
    c.put(b"raw", b"\xff\x00").unwrap();
    let all = c.dump().unwrap();
    assert_eq!(
        format!("{:?}", all[0]),
        format!(
            r#"KeyValue {{ key: "greeting", value: "hello\tworld\n", revision: {} }}"#,
            all[0].revision
        )
    );
    assert_eq!(all[0].to_string(), r"greeting = hello\tworld\n");
    assert_eq!(all[1].to_string(), r"raw = \xff\x00");
    assert!(format!("{:?}", all[1]).contains(r#"value: b"\xff\x00""#));
}

#[test]
fn dict_is_map_like_and_debug_prints_the_map() {
    // Goal: the map surface (insert, remove, iter, keys, len) and Debug output.
    let server = FakeServer::start();
    let mut d = DistributedDict::connect(&[server.addr()], quick()).unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.insert("b", "2").unwrap(), None);
    d.insert("a", "1").unwrap();
    assert_eq!(d.insert("a", "one").unwrap(), Some(b"1".to_vec()));
    let all: Vec<(Vec<u8>, Vec<u8>)> = d
        .iter()
        .unwrap()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"one".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(format!("{d:?}"), r#"{"a": "one", "b": "2"}"#);
    assert_eq!(d.remove("a").unwrap(), Some(b"one".to_vec()));
    // A failed compare-and-swap teaches the local copy the current value, even when frozen.
    d.set_policy(RefreshPolicy::Lock(RefreshLock::new(false)));
    other_writer(&server, "b", "changed");
    let e = d
        .cas("b", Expect::Value(b"2".to_vec()), Some(b"3".to_vec()))
        .unwrap_err();
    assert!(matches!(e, Error::CasFailed { .. }), "{e:?}");
    assert_eq!(d.local().get(&b"b"[..]), Some(&b"changed".to_vec()));
    d.set_policy(RefreshPolicy::Always);
    assert_eq!(d.keys().unwrap().collect::<Vec<_>>(), vec![&b"b"[..]]);
    assert_eq!(d.diagnostic().unwrap().role, "leader");
    d.config_cluster(ClusterChange::Add {
        id: 4,
        addr: "127.0.0.1:5257".into(),
    })
    .unwrap();
    d.config_cluster(ClusterChange::Remove { id: 4 }).unwrap();
    let admin: Vec<_> = server
        .state()
        .requests
        .iter()
        .filter(|r| {
            matches!(
                r,
                Request::MemberAdd { .. }
                    | Request::MemberPromote { .. }
                    | Request::MemberRemove { .. }
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        admin,
        vec![
            Request::MemberAdd {
                id: 4,
                addr: "127.0.0.1:5257".into(),
                learner: false
            },
            Request::MemberRemove { id: 4 },
        ]
    );
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("zatt-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn tls_connection_verifies_the_server_against_the_given_ca() {
    // Goal: with --tls-ca the client speaks TLS and checks the server's certificate. Method: a
    // generated CA signs the fake server's certificate; a client trusting it works, a client
    // trusting another CA fails with a TLS error and applies nothing.
    let good = pki();
    let other = pki();
    let server = FakeServer::start_tls(good.server.clone());
    let ca = temp_file("ca.pem", &good.ca_pem);
    let wrong_ca = temp_file("other-ca.pem", &other.ca_pem);
    let config = ClientConfig {
        tls: Some(TlsConfig::with_ca(&ca)),
        ..quick()
    };
    let mut c = Client::connect(&[server.addr()], config).unwrap();
    c.put("secret", "s3").unwrap();
    assert_eq!(c.get("secret").unwrap(), Some(b"s3".to_vec()));

    let config = ClientConfig {
        tls: Some(TlsConfig::with_ca(&wrong_ca)),
        ..quick()
    };
    let err = Client::connect(&[server.addr()], config).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(!err.may_have_applied());
    let _ = std::fs::remove_file(ca);
    let _ = std::fs::remove_file(wrong_ca);
}
