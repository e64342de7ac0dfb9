//! The scenarios of the original (Python) Zatt test suite, replayed against real `zattd`
//! processes: append, delete, read from another client and from another server, compacted log
//! replication, add a server, remove a server.

mod common;

use common::*;
use std::time::Duration;
use zatt::wire::client::{Consistency, Request, Response};

const T: Duration = Duration::from_secs(30);

#[test]
fn append_then_read_back_from_the_same_client() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let mut cl = c.client(leader).unwrap();
    assert!(matches!(
        cl.put("adams", "42").unwrap(),
        Response::Written { .. }
    ));
    assert_eq!(
        cl.get_value("adams", Consistency::Linearizable)
            .unwrap()
            .as_deref(),
        Some("42")
    );
}

#[test]
fn append_then_read_from_another_client_and_another_server() {
    // Goal: a write is visible to a second client on the leader at once and, eventually, to a
    // client of every follower.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let mut writer = c.client(leader).unwrap();
    assert!(matches!(
        writer.put("question", "unknown").unwrap(),
        Response::Written { .. }
    ));
    let mut reader = c.client(leader).unwrap();
    assert_eq!(
        reader
            .get_value("question", Consistency::Linearizable)
            .unwrap()
            .as_deref(),
        Some("unknown")
    );
    for id in (1..=3).filter(|&i| i != leader) {
        c.wait_value(id, "question", Some("unknown"), T);
    }
}

#[test]
fn delete_removes_the_key_everywhere() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let mut cl = c.client(leader).unwrap();
    cl.put("gone", "soon").unwrap();
    match cl.delete("gone").unwrap() {
        Response::Deleted { existed, .. } => assert!(existed),
        other => panic!("delete: {other:?}"),
    }
    match cl.delete("gone").unwrap() {
        Response::Deleted { existed, .. } => assert!(!existed, "deleting twice finds nothing"),
        other => panic!("delete: {other:?}"),
    }
    for id in 1..=3 {
        c.wait_value(id, "gone", None, T);
    }
}

#[test]
fn compacted_log_is_replicated_to_a_new_server() {
    // Goal: a server added after the log was compacted receives the state as a snapshot.
    // Method: --snapshot-entries 50, 300 writes, then join node 4 and check it has every key
    // and says it installed a snapshot.
    let mut c = Cluster::start(3, &["--snapshot-entries", "50"]);
    let leader = c.wait_leader(T);
    c.client(leader)
        .unwrap()
        .put_pipelined("c", 0..300, 32)
        .unwrap();
    let addr = c.start_joiner(4);
    c.admin(
        &Request::MemberAdd {
            id: 4,
            addr,
            learner: true,
        },
        T,
    );
    c.wait_value(4, "c299", Some("v299"), T);
    c.wait_value(4, "c0", Some("v0"), T);
    assert!(
        c.log_of(4).contains("installed snapshot"),
        "node 4 did not get a snapshot"
    );
    assert_eq!(c.status(4).unwrap().keys, 300);
}

#[test]
fn add_a_server_as_voter() {
    // Goal: MemberAdd with learner=false adds the server as a learner and promotes it once it
    // has caught up, answering only then. The new server is told the cluster id directly.
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(T);
    c.put("k", "v");
    let addr = c.start_joiner_with_cluster_id(4);
    c.admin(
        &Request::MemberAdd {
            id: 4,
            addr,
            learner: false,
        },
        T,
    );
    let s = c.wait_status(4, T, "node 4 voter", |s| {
        s.members.iter().any(|m| m.id == 4 && m.voter)
    });
    assert_eq!(s.members.len(), 4);
    c.wait_value(4, "k", Some("v"), T);
}

#[test]
fn remove_a_server() {
    // Goal: after removing a follower the other two keep committing writes.
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let victim = (1..=3).find(|&i| i != leader).unwrap();
    c.admin(&Request::MemberRemove { id: victim }, T);
    c.kill(victim);
    for id in (1..=3).filter(|&i| i != victim) {
        c.wait_status(id, T, "two members", |s| s.members.len() == 2);
    }
    c.put("after-remove", "ok");
    for id in (1..=3).filter(|&i| i != victim) {
        c.wait_value(id, "after-remove", Some("ok"), T);
    }
}

#[test]
fn scan_pages_through_every_key_in_order() {
    // Goal: scans page (at most 1000 items each) and together return every key of the prefix
    // once, in key order; Len counts every key. Method: 2,500 keys under "s/", 10 others.
    let c = Cluster::start(1, &[]);
    c.wait_leader(T);
    let mut cl = c.client(1).unwrap();
    cl.put_pipelined("s/", 0..2500, 64).unwrap();
    cl.put_pipelined("t/", 0..10, 8).unwrap();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut pages = 0;
    loop {
        let req = Request::Scan {
            prefix: b"s/".to_vec(),
            start_after: after.clone(),
            limit: 100_000,
            consistency: Consistency::Linearizable,
        };
        match cl.call(&req).unwrap() {
            Response::ScanPage { items, more, .. } => {
                assert!(items.len() <= 1000);
                pages += 1;
                after = items.last().map(|i| i.0.clone());
                seen.extend(items.into_iter().map(|i| i.0));
                if !more {
                    break;
                }
            }
            other => panic!("scan: {other:?}"),
        }
        assert!(pages < 10, "scan does not end");
    }
    assert_eq!(seen.len(), 2500);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "keys in order, each once"
    );
    match cl
        .call(&Request::Len {
            consistency: Consistency::Stale,
        })
        .unwrap()
    {
        Response::Len { len, .. } => assert_eq!(len, 2510),
        other => panic!("len: {other:?}"),
    }
}

#[test]
fn session_retry_is_applied_once_and_cas_checks_its_condition() {
    // Goal: a write retried with the same session tag is applied once (same revision back);
    // compare-and-swap applies only when its condition holds.
    let c = Cluster::start(3, &[]);
    c.wait_leader(T);
    let id = match c.call_leader(&Request::RegisterSession, T) {
        Response::SessionRegistered { id } => id,
        other => panic!("register: {other:?}"),
    };
    let put = Request::Put {
        session: Some((id, 1)),
        key: b"once".to_vec(),
        value: b"1".to_vec(),
    };
    let r1 = c.call_leader(&put, T);
    let r2 = c.call_leader(&put, T);
    let Response::Written { revision: first } = r1 else {
        panic!("put: {r1:?}")
    };
    assert_eq!(r1, r2, "the retry returns the first reply");
    let cas = |expect: zatt::wire::client::Expect, new: &str| Request::Cas {
        session: None,
        key: b"once".to_vec(),
        expect,
        new: Some(new.as_bytes().to_vec()),
    };
    match c.call_leader(
        &cas(zatt::wire::client::Expect::Value(b"nope".to_vec()), "2"),
        T,
    ) {
        Response::CasFailed { current } => assert_eq!(current.map(|c| c.0), Some(b"1".to_vec())),
        other => panic!("cas with a wrong value: {other:?}"),
    }
    match c.call_leader(
        &cas(zatt::wire::client::Expect::Value(b"1".to_vec()), "2"),
        T,
    ) {
        Response::CasOk { revision } => assert!(revision > first),
        other => panic!("cas: {other:?}"),
    }
    for id in 1..=3 {
        c.wait_value(id, "once", Some("2"), T);
    }
}
