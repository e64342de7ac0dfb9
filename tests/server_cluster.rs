//! Three real `zattd` processes on loopback: replication, failover, durability across restarts,
//! catch-up through a snapshot, membership changes and leadership transfer. Every wait is
//! bounded by a deadline; no test asserts on timing.

mod common;

use common::*;
use std::time::Duration;
use zatt::wire::client::{Consistency, Request, Response};

const T: Duration = Duration::from_secs(30);

#[test]
fn acknowledged_write_is_readable_on_every_server() {
    // Goal: a write the leader acknowledged reaches every replica. Method: put through the
    // leader, then poll each server with a stale (local) read until it shows the value.
    let c = Cluster::start(3, &[]);
    c.wait_leader(T);
    c.put("hello", "world");
    for id in 1..=3 {
        c.wait_value(id, "hello", Some("world"), T);
    }
}

#[test]
fn killed_leader_is_replaced_and_acknowledged_writes_survive_restarts() {
    // Goal: kill -9 of the leader elects another; every acknowledged write survives a restart
    // of the whole cluster. Method: writes before and after the kill, restart the dead node,
    // then restart all three (only --id and --data-dir) and read every key linearizably.
    let mut c = Cluster::start(3, &[]);
    let first = c.wait_leader(T);
    for i in 0..20 {
        c.put(&format!("a{i}"), &format!("v{i}"));
    }
    c.kill(first);
    let second = c.wait_leader(T);
    assert_ne!(first, second, "a killed leader cannot lead");
    for i in 0..20 {
        c.put(&format!("b{i}"), &format!("v{i}"));
    }
    c.restart(first);
    c.wait_value(first, "b19", Some("v19"), T);
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(T);
    for p in ["a", "b"] {
        for i in 0..20 {
            let req = Request::Get {
                key: format!("{p}{i}").into_bytes(),
                consistency: Consistency::Linearizable,
            };
            match c.call_leader(&req, T) {
                Response::Value { value, .. } => {
                    assert_eq!(value, Some(format!("v{i}").into_bytes()), "{p}{i}")
                }
                other => panic!("get {p}{i}: {other:?}"),
            }
        }
    }
}

#[test]
fn paused_follower_catches_up_through_a_snapshot() {
    // Goal: a follower that missed more than a snapshot's worth of entries is brought back by
    // InstallSnapshot. Method: SIGSTOP a follower, pipeline 10,000 writes with
    // --snapshot-entries 500 so the leader compacts past the follower, SIGCONT, wait until the
    // follower serves the last key, and check its log says it installed a snapshot.
    let c = Cluster::start(3, &["--snapshot-entries", "500"]);
    let leader = c.wait_leader(T);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.pause(follower);
    let mut cl = c.client(leader).unwrap();
    cl.put_pipelined("k", 0..10_000, 128).unwrap();
    c.resume(follower);
    c.wait_value(follower, "k9999", Some("v9999"), Duration::from_secs(60));
    c.wait_value(follower, "k0", Some("v0"), T);
    let log = c.log_of(follower);
    assert!(
        log.contains("installed snapshot"),
        "follower caught up without a snapshot"
    );
    let s = c.status(leader).unwrap();
    assert!(s.keys >= 10_000);
}

#[test]
fn joined_server_becomes_learner_then_voter_and_a_server_is_removed() {
    // Goal: membership changes through client requests. Method: start node 4 with --join, add
    // it as a learner, see it replicate, promote it, then remove a follower; the cluster keeps
    // accepting writes and every server agrees on the new membership.
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    c.put("before", "1");
    let addr4 = c.start_joiner(4);
    c.admin(
        &Request::MemberAdd {
            id: 4,
            addr: addr4.clone(),
            learner: true,
        },
        T,
    );
    c.wait_value(4, "before", Some("1"), T);
    let s = c.status(leader).unwrap();
    assert!(s.members.iter().any(|m| m.id == 4 && !m.voter), "{s:?}");
    c.admin(&Request::MemberPromote { id: 4 }, T);
    c.wait_status(4, T, "node 4 a voter", |s| {
        s.members.iter().any(|m| m.id == 4 && m.voter)
    });
    let leader = c.wait_leader(T);
    let victim = (1..=3).find(|&i| i != leader).unwrap();
    c.admin(&Request::MemberRemove { id: victim }, T);
    c.wait_status(4, T, "victim removed", |s| {
        s.members.len() == 3 && !s.members.iter().any(|m| m.id == victim)
    });
    c.kill(victim);
    c.put("after", "2");
    for id in [1, 2, 3, 4].into_iter().filter(|&i| i != victim) {
        c.wait_value(id, "after", Some("2"), T);
    }
}

#[test]
fn leadership_moves_to_the_named_server() {
    // Goal: TransferLeader hands leadership to the server named. Method: ask the leader to
    // transfer to a follower and wait until every server reports that follower as leader.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    c.put("x", "1");
    let target = (1..=3).find(|&i| i != leader).unwrap();
    c.admin(&Request::TransferLeader { to: Some(target) }, T);
    for id in 1..=3 {
        c.wait_status(id, T, "leader is the target", |s| s.leader == Some(target));
    }
    c.wait_status(target, T, "target calls itself leader", |s| {
        s.role == "leader"
    });
    c.put("y", "2");
}

#[test]
fn restart_after_compaction_restores_state_from_snapshot_and_log() {
    // Goal: a node restarted after compacting rebuilds its dictionary from the WAL's snapshot
    // plus the entries after it. Method: --snapshot-entries 100, 450 writes (snapshots taken,
    // entries left after the last one), kill -9 everything, restart, read every key locally.
    let mut c = Cluster::start(3, &["--snapshot-entries", "100"]);
    let leader = c.wait_leader(T);
    c.client(leader)
        .unwrap()
        .put_pipelined("r", 0..450, 32)
        .unwrap();
    for id in 1..=3 {
        c.wait_value(id, "r449", Some("v449"), T);
    }
    for id in 1..=3 {
        assert!(
            c.log_of(id).contains("log compacted"),
            "node {id} never compacted"
        );
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(T);
    for id in 1..=3 {
        let s = c.wait_status(id, T, "all keys back", |s| s.keys == 450);
        assert!(s.applied_index >= 450);
        c.wait_value(id, "r0", Some("v0"), T);
        c.wait_value(id, "r449", Some("v449"), T);
    }
}

#[test]
fn follower_redirects_writes_and_linearizable_reads_to_the_leader() {
    // Goal: a follower answers writes and linearizable reads with NotLeader naming the leader
    // and its address (we redirect, not forward), and serves stale reads itself.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    c.put("k", "v");
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.wait_value(follower, "k", Some("v"), T);
    let mut cl = c.client(follower).unwrap();
    let expect = zatt::wire::client::ErrorKind::NotLeader {
        leader: Some(leader),
        leader_addr: Some(c.addr(leader)),
    };
    assert_eq!(cl.put("k", "w").unwrap(), Response::Error(expect.clone()));
    assert_eq!(
        cl.get("k", Consistency::Linearizable).unwrap(),
        Response::Error(expect)
    );
    assert_eq!(
        cl.get_value("k", Consistency::Stale).unwrap().as_deref(),
        Some("v")
    );
}

#[test]
fn status_reports_replication_and_disk_figures() {
    // Goal: the leader's status carries what an operator needs: members, per-peer match index
    // and lag, commit/applied indexes, WAL size and fsync latency, drop counters.
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    for i in 0..10 {
        c.put(&format!("s{i}"), "v");
    }
    let s = c.wait_status(leader, T, "peers caught up", |s| {
        s.peers.len() == 2 && s.peers.iter().all(|p| p.lag == 0)
    });
    assert_eq!(s.role, "leader");
    assert_eq!(s.leader, Some(leader));
    assert_eq!(s.members.len(), 3);
    assert!(s.members.iter().all(|m| m.voter));
    assert!(s.commit_index >= 11 && s.applied_index >= 11, "{s:?}");
    assert!(s.peers.iter().all(|p| p.match_index == s.last_index));
    assert!(
        s.wal_bytes > 0 && s.fsync_p50_us > 0 && s.fsync_p99_us >= s.fsync_p50_us,
        "{s:?}"
    );
    assert!(s.dropped_datagrams.iter().any(|(r, _)| r == "BadTag"));
    assert_eq!(s.keys, 10);
    let f = c.status((1..=3).find(|&i| i != leader).unwrap()).unwrap();
    assert_eq!(f.role, "follower");
    assert!(f.peers.is_empty());
}

#[test]
fn paused_leader_steps_down_on_resume_and_its_stuck_write_is_answered() {
    // Goal: a leader frozen by SIGSTOP is replaced; when it resumes it follows the new leader,
    // catches up, and a write it had accepted just before freezing gets an answer (written, or
    // a retryable error) rather than hanging. Method: send a put to the leader and SIGSTOP it
    // at once, write through the new leader, SIGCONT, read the answer, compare logs.
    let c = Cluster::start(3, &[]);
    let old = c.wait_leader(T);
    let mut cl = c.client(old).unwrap();
    cl.send(&Request::Put {
        session: None,
        key: b"frozen".to_vec(),
        value: b"1".to_vec(),
    })
    .unwrap();
    c.pause(old);
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let deadline = std::time::Instant::now() + T;
    let new = loop {
        let l = others
            .iter()
            .filter_map(|&i| c.status(i))
            .find(|s| s.role == "leader")
            .map(|s| s.id);
        if let Some(l) = l {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new leader while n{old} is frozen"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new, old);
    let mut nl = c.client(new).unwrap();
    assert!(matches!(
        nl.put("during", "2").unwrap(),
        Response::Written { .. }
    ));
    c.resume(old);
    match cl.recv().unwrap().1 {
        Response::Written { .. } => {}
        Response::Error(e) => assert!(retryable(&e), "{e:?}"),
        other => panic!("frozen put: {other:?}"),
    }
    c.wait_value(old, "during", Some("2"), T);
    c.wait_status(old, T, "follows the new leader", |s| {
        s.role == "follower" && s.leader.is_some()
    });
}
