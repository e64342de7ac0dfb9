//! Hostile input against real `zattd` processes: forged peer datagrams, garbage on the client
//! port, oversized requests, too many connections. Each is refused in its own way, counted or
//! answered, and none disturbs the cluster.

mod common;

use common::*;
use std::io::Read;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use zatt::types::{LogIndex, Message, MessageBody, NodeId, Term};
use zatt::wire::client::{ErrorKind, Request, Response};
use zatt::wire::peer::{PeerCodec, PeerCodecConfig};

const T: Duration = Duration::from_secs(30);

fn dropped(c: &Cluster, id: u64, reason: &str) -> u64 {
    let s = c.status(id).expect("status");
    s.dropped_datagrams
        .iter()
        .find(|(r, _)| r == reason)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

/// A heartbeat that would depose the leader (term 1000) if it were accepted.
fn forged_heartbeat(to: u64) -> Message {
    Message {
        from: NodeId(if to == 1 { 2 } else { 1 }),
        to: NodeId(to),
        term: Term(1000),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
            read_seq: 0,
        },
    }
}

fn send_forged(target_addr: &str, cluster_id: u64, secret: Option<&[u8]>, msg: &Message) {
    let mut cfg = PeerCodecConfig::new(cluster_id, msg.from);
    cfg.secret = secret.map(|s| s.to_vec());
    let mut codec = PeerCodec::new(cfg);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        codec.encode(msg, &mut |d: &[u8]| {
            sock.send_to(d, target_addr).unwrap();
        });
    }
}

#[test]
fn forged_datagrams_are_dropped_counted_and_harmless() {
    // Goal: a datagram with the wrong secret or the wrong cluster id is dropped before its body
    // is believed, counted by reason in status, and the cluster is undisturbed. Method: a
    // cluster with a secret; send term-1000 heartbeats with a wrong secret, with no tag, and
    // with the right secret but another cluster id; check counters, term and a write.
    let dir = temp_dir("secret");
    let secret_file = write_file(&dir, "secret", b"the real secret\n");
    let secret_arg = secret_file.display().to_string();
    let c = Cluster::start(3, &["--cluster-secret-file", &secret_arg]);
    let leader = c.wait_leader(T);
    let term_before = c.status(leader).unwrap().term;
    let cluster_id =
        zatt::config::cluster_id_of(&zatt::config::parse_cluster(&c.cluster_arg).unwrap());
    let victim = (1..=3).find(|&i| i != leader).unwrap();
    let msg = forged_heartbeat(victim);
    send_forged(&c.addr(victim), cluster_id, Some(b"a wrong secret"), &msg);
    send_forged(&c.addr(victim), cluster_id, None, &msg);
    send_forged(
        &c.addr(victim),
        cluster_id ^ 1,
        Some(b"the real secret"),
        &msg,
    );

    let deadline = Instant::now() + T;
    while dropped(&c, victim, "BadTag") < 5
        || dropped(&c, victim, "MissingTag") < 5
        || dropped(&c, victim, "WrongCluster") < 5
    {
        assert!(
            Instant::now() < deadline,
            "drops not counted: {:?}",
            c.status(victim)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = c.status(victim).unwrap();
    assert!(s.term < 1000, "a forged term was believed: {s:?}");
    assert_eq!(c.status(leader).unwrap().term, term_before);
    c.put("still", "working");
    c.wait_value(victim, "still", Some("working"), T);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn random_bytes_close_only_that_connection() {
    // Goal: garbage on the client port closes that connection only. Method: open two
    // connections, send garbage on one, see it closed (EOF or reset), and use the other.
    let c = Cluster::start(1, &[]);
    c.wait_leader(T);
    let mut good = c.client(1).unwrap();
    let mut bad = c.client(1).unwrap();
    // A length field below the header size: not a frame of this protocol.
    bad.send_raw(&[
        3, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ])
    .unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + T;
    loop {
        match bad.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "garbage connection left open"),
        }
    }
    // Absurd length with random bytes: answered TooLarge, then closed.
    let mut bad2 = c.client(1).unwrap();
    let mut junk = vec![0xffu8; 4];
    junk.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    bad2.send_raw(&junk).unwrap();
    match bad2.recv() {
        Ok((_, Response::Error(ErrorKind::TooLarge { .. }))) => {}
        other => panic!("garbage with an absurd length: {other:?}"),
    }
    assert!(bad2.recv().is_err(), "connection closed after the answer");
    assert!(matches!(
        good.put("k", "v").unwrap(),
        Response::Written { .. }
    ));
    assert_eq!(good.status().unwrap().role, "leader");
}

#[test]
fn oversized_request_gets_too_large_naming_the_limit() {
    // Goal: a request over --max-request-bytes is answered TooLarge with the limit, and the
    // connection stays usable. Method: a 64 KiB limit, a 100 KiB put, then a small put.
    let c = Cluster::start(1, &["--max-request-bytes", "64KiB"]);
    c.wait_leader(T);
    let mut cl = c.client(1).unwrap();
    let big = "x".repeat(100 * 1024);
    match cl.put("big", &big).unwrap() {
        Response::Error(ErrorKind::TooLarge { what, limit }) => {
            assert_eq!(what, "frame");
            assert_eq!(limit, 64 * 1024);
        }
        other => panic!("oversized put: {other:?}"),
    }
    assert!(matches!(
        cl.put("small", "v").unwrap(),
        Response::Written { .. }
    ));
    assert_eq!(
        cl.get_value("big", zatt::wire::client::Consistency::Stale)
            .unwrap(),
        None
    );
}

#[test]
fn connection_over_the_limit_is_told_and_closed() {
    // Goal: the connection over --max-connections gets TooManyConnections and is closed; the
    // others keep working, and a slot freed is usable again. Method: limit 2, open 3.
    let c = Cluster::start(1, &["--max-connections", "2"]);
    c.wait_leader(T);
    // Connections from wait_leader may take a moment to be noticed closed: retry until admitted.
    let mut a = admitted(&c);
    let b = admitted(&c);
    let mut third = c.client(1).unwrap();
    match third.recv() {
        Ok((0, Response::Error(ErrorKind::TooManyConnections { limit: 2 }))) => {}
        other => panic!("third connection: {other:?}"),
    }
    assert!(third.recv().is_err(), "closed after the error");
    assert!(matches!(a.put("k", "v").unwrap(), Response::Written { .. }));
    drop(b);
    admitted(&c);
}

/// A connection the server admitted (answered a status request).
fn admitted(c: &Cluster) -> TestClient {
    let deadline = Instant::now() + T;
    loop {
        let mut cl = c.client(1).unwrap();
        cl.send(&Request::Status).unwrap();
        if let Ok((_, Response::Status(_))) = cl.recv() {
            return cl;
        }
        assert!(Instant::now() < deadline, "no connection admitted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn too_many_requests_in_flight_on_one_connection_are_refused() {
    // Goal: --max-inflight-per-conn bounds unanswered requests per connection. Method: limit 4,
    // pipeline 64 linearizable reads without reading answers; some must come back
    // TooManyInFlight and every request gets exactly one answer.
    let c = Cluster::start(1, &["--max-inflight-per-conn", "4"]);
    c.wait_leader(T);
    let mut cl = c.client(1).unwrap();
    let n = 64;
    for i in 0..n {
        cl.send(&Request::Put {
            session: None,
            key: format!("p{i}").into_bytes(),
            value: b"v".to_vec(),
        })
        .unwrap();
    }
    let mut refused = 0;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (id, r) = cl.recv().unwrap();
        assert!(ids.insert(id), "one answer per request");
        match r {
            Response::Error(ErrorKind::TooManyInFlight { limit: 4 }) => refused += 1,
            Response::Written { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0, "the in-flight bound was never hit");
}

#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    // Goal: a silent connection with nothing in flight is closed after --idle-timeout, and a
    // busy one is not. Method: 300ms timeout; one raw connection stays silent, another keeps
    // sending status requests; the silent one sees EOF, the busy one still works.
    let c = Cluster::start(1, &["--idle-timeout", "300ms"]);
    c.wait_leader(T);
    let mut silent = std::net::TcpStream::connect(c.addr(1)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut busy = c.client(1).unwrap();
    let deadline = Instant::now() + T;
    let mut b = [0u8; 16];
    loop {
        assert!(busy.status().is_ok(), "the busy connection was closed");
        match silent.read(&mut b) {
            Ok(0) => break,
            Ok(_) => panic!("nothing was asked on the silent connection"),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "the silent connection was never closed"
        );
    }
    assert!(busy.status().is_ok());
}

#[test]
fn a_client_that_does_not_read_is_held_back_without_hurting_others() {
    // Goal: backpressure. A client that pipelines many large reads and reads nothing fills its
    // output buffer; the server stops taking its requests instead of buffering without bound,
    // keeps serving others, and delivers every answer once the client reads. Method: a greedy
    // connection asks 64 times for a 512 KiB value (32 MiB of answers: eight times the 4 MiB
    // output cap, and more than the cap plus the kernel's socket buffers can hold) and reads
    // nothing. Once its first answer has arrived, another client overwrites the value. A server
    // that held the greedy client back has not yet read its later requests, so they see the new
    // value; a server without backpressure would have served all 64 at once, all of the old value.
    let c = Cluster::start(1, &[]);
    c.wait_leader(T);
    let mut writer = c.client(1).unwrap();
    let old = "a".repeat(512 * 1024);
    let new = "b".repeat(512 * 1024);
    assert!(matches!(
        writer.put("large", &old).unwrap(),
        Response::Written { .. }
    ));
    let raw = std::net::TcpStream::connect(c.addr(1)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.set_nodelay(true).unwrap();
    let peek = raw.try_clone().unwrap();
    let mut greedy = TestClient::over(Box::new(raw));
    let n = 64;
    for _ in 0..n {
        greedy
            .send(&Request::Get {
                key: b"large".to_vec(),
                consistency: zatt::wire::client::Consistency::Stale,
            })
            .unwrap();
    }
    // The server has begun answering the greedy client (bounded by the read timeout).
    assert!(peek.peek(&mut [0u8; 1]).unwrap() > 0, "no answer at all");
    assert!(matches!(
        writer.put("large", &new).unwrap(),
        Response::Written { .. }
    ));
    assert!(matches!(
        writer.put("other", "fine").unwrap(),
        Response::Written { .. }
    ));
    let mut served_old = 0;
    for i in 0..n {
        match greedy.recv().unwrap() {
            (_, Response::Value { value: Some(v), .. }) if v == old.as_bytes() => {
                assert_eq!(served_old, i, "an old value after a new one");
                served_old += 1;
            }
            (_, Response::Value { value: Some(v), .. }) => assert!(v == new.as_bytes()),
            (_, other) => panic!("{other:?}"),
        }
    }
    assert!(served_old >= 1);
    assert!(
        served_old < n,
        "all {n} requests were served while the client read nothing: no backpressure"
    );
    eprintln!("served {served_old} of {n} answers before the client read");
}
