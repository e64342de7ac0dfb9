//! The ways back from losing a cluster, on real processes, with the README's commands:
//! - `save_then_restore_into_a_new_cluster_keeps_every_key`: a backup of a cluster (its log
//!   compacted several times) restored into a new three-server cluster holds every key, value
//!   and revision the old one had; the new cluster has a cluster id of its own, takes writes,
//!   and restarts without `--restore`; a damaged, a truncated and a foreign file are refused
//!   with the reason (exit 65) before anything is written, and so is a data directory that is
//!   not empty (exit 2).
//! - `force_new_cluster_after_losing_two_of_three_keeps_every_acknowledged_write`: two of
//!   three servers killed for good; the survivor, forced into a one-member cluster, holds every
//!   write acknowledged before, takes new ones, gets members back (`--join`, `member add`) and
//!   survives losing itself once they are in; a second start that still carries the flag is
//!   refused. The forced server has a fresh incarnation: an old member that comes back with
//!   its data is not heard. Restored servers each have an identity of their own, and one whose
//!   restored storage was lost is refused when started with `--restore` again.
//! - `a_restore_cut_short_before_its_data_runs_again`: a restore that failed before writing
//!   the backup (a busy port) may run again; a directory with a log is refused.
//! - `a_forced_survivor_is_not_held_back_by_entries_it_lost`: a survivor whose last log record
//!   was damaged (a lost-entries bound: it withholds its vote, and with the others gone it would
//!   wait forever) is forced: it leads at once, keeps every earlier write, and takes a member.
//! - `a_forced_survivor_keeps_the_entries_it_did_not_know_committed`: a follower's data
//!   directory holding 200 writes beyond its durable commit index (written through the WAL as
//!   the leader's death would leave it), forced: every one of them is committed and served.

mod common;
mod ops_readme;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Cluster, TestClient};
use zatt::wire::client::{Consistency, ErrorKind, Request, Response};

const T: Duration = Duration::from_secs(30);

/// Servers this test started itself (outside a `Cluster`); killed on drop.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every key with its value and revision, read linearizably a page at a time through the
/// leader (found from `addr`, following its hint), retrying through an election.
fn dump(addr: &str) -> BTreeMap<String, (String, u64)> {
    let deadline = Instant::now() + T;
    let mut addr = addr.to_string();
    'attempt: loop {
        assert!(
            Instant::now() < deadline,
            "no dump from {addr} within {T:?}"
        );
        let Ok(mut cl) = TestClient::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut out = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let req = Request::Scan {
                prefix: vec![],
                start_after: after.clone(),
                limit: 1000,
                consistency: Consistency::Linearizable,
            };
            match cl.call(&req) {
                Ok(Response::ScanPage { items, more, .. }) => {
                    for (k, v, r) in items {
                        after = Some(k.clone());
                        out.insert(
                            String::from_utf8(k).unwrap(),
                            (String::from_utf8(v).unwrap(), r),
                        );
                    }
                    if !more {
                        return out;
                    }
                }
                Ok(Response::Error(ErrorKind::NotLeader {
                    leader_addr: Some(l),
                    ..
                })) => {
                    addr = l;
                    continue 'attempt;
                }
                Ok(Response::Error(e)) if common::retryable(&e) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'attempt;
                }
                other => {
                    if other.is_err() {
                        std::thread::sleep(Duration::from_millis(100));
                        continue 'attempt;
                    }
                    panic!("scan of {addr}: {other:?}")
                }
            }
        }
    }
}

/// Writes, overwrites and deletes through the leader; the keys and values that must remain.
fn fill(c: &Cluster, n: u64) -> BTreeMap<String, String> {
    let leader = c.wait_leader(T);
    let mut cl = c.client(leader).unwrap();
    cl.put_pipelined("key/", 0..n, 64).unwrap();
    let mut want: BTreeMap<String, String> = (0..n)
        .map(|i| (format!("key/{i}"), format!("v{i}")))
        .collect();
    for i in (0..n).step_by(5) {
        let k = format!("key/{i}");
        assert!(matches!(
            cl.put(&k, "again").unwrap(),
            Response::Written { .. }
        ));
        want.insert(k, "again".into());
    }
    for i in (0..n).step_by(13) {
        let k = format!("key/{i}");
        assert!(matches!(cl.delete(&k).unwrap(), Response::Deleted { .. }));
        want.remove(&k);
    }
    want
}

fn values(d: &BTreeMap<String, (String, u64)>) -> BTreeMap<String, String> {
    d.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
}

fn zattd_refuses(args: &[&str], code: i32, needle: &str, dir: &Path) {
    let (got, out) = common::run_zattd(args, &[], T);
    assert_eq!(got, Some(code), "zattd {args:?}: {out}");
    assert!(out.contains(needle), "zattd {args:?}: {out}");
    assert!(
        !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none(),
        "zattd {args:?} wrote into {}",
        dir.display()
    );
}

#[test]
fn save_then_restore_into_a_new_cluster_keeps_every_key() {
    let old = Cluster::start(3, &["--snapshot-entries", "800"]);
    let want = fill(&old, 2500);
    let old_leader = old.wait_leader(T);
    let before = dump(&old.addr(old_leader));
    assert_eq!(values(&before), want);
    let old_id = old.status(old_leader).unwrap().cluster_id;

    let cwd = common::temp_dir("restore");
    let endpoints = old.endpoints();
    let env = [("ZATT_ENDPOINTS", endpoints.join(","))];
    ops_readme::run_ok("zatt snapshot save zatt.backup", &[], &cwd, &env);
    let backup = cwd.join("zatt.backup");
    assert!(old.log_of(old_leader).contains("log compacted"));

    // Damaged, truncated and foreign files, and a directory in use, are refused before any
    // byte is written.
    let whole = std::fs::read(&backup).unwrap();
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 1;
    std::fs::write(cwd.join("flipped"), &flipped).unwrap();
    std::fs::write(cwd.join("cut"), &whole[..whole.len() - 100]).unwrap();
    std::fs::write(cwd.join("foreign"), b"not a backup at all, just some words").unwrap();
    let probe = format!("127.0.0.1:{}", common::free_port());
    let cluster1 = format!("1={probe}");
    for (file, needle, code) in [
        ("flipped", "fails its checksum", 65),
        ("cut", "truncated", 65),
        ("foreign", "not a Zatt backup", 65),
        ("missing", "cannot read --restore", 2),
    ] {
        let dir = cwd.join(format!("refused-{file}"));
        let f = cwd.join(file).display().to_string();
        let d = dir.display().to_string();
        let args = [
            "--id",
            "1",
            "--cluster",
            &cluster1,
            "--data-dir",
            &d,
            "--restore",
            &f,
        ];
        zattd_refuses(&args, code, needle, &dir);
    }
    let busy = cwd.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("something"), b"x").unwrap();
    let (code, out) = common::run_zattd(
        &[
            "--id",
            "1",
            "--cluster",
            &cluster1,
            "--data-dir",
            &busy.display().to_string(),
            "--restore",
            &backup.display().to_string(),
        ],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("empty data directory"), "{out}");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // The new cluster, started as the README says, on ports of its own.
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let mut procs = Procs::default();
    let line = "zattd --id 1 --cluster 1=127.0.0.1:6254,2=127.0.0.1:6255,3=127.0.0.1:6256 --data-dir ./new.1 --restore zatt.backup &";
    for id in 1..=3u64 {
        let replace = [
            ("127.0.0.1:6254", ports[0].clone()),
            ("127.0.0.1:6255", ports[1].clone()),
            ("127.0.0.1:6256", ports[2].clone()),
            ("--id 1", format!("--id {id}")),
            ("./new.1", format!("./new.{id}")),
        ];
        let log = cwd.join(format!("new.{id}.log"));
        procs.0.push(ops_readme::spawn(line, &replace, &cwd, &log));
    }
    let after = dump(&ports[0]);
    assert_eq!(after, before, "keys, values and revisions as they were");
    let mut cl = TestClient::connect(&ports[1]).unwrap();
    let st = cl.status().unwrap();
    assert_ne!(st.cluster_id, old_id, "a cluster id of its own");
    let shown = ops_readme::run_ok(
        "zatt --endpoints 127.0.0.1:6254 status --field cluster_id",
        &[("127.0.0.1:6254", ports[0].clone())],
        &cwd,
        &[],
    );
    assert_eq!(
        shown.trim(),
        st.cluster_id.to_string(),
        "zatt status shows it"
    );
    assert_eq!(st.members.len(), 3);
    assert!(st.members.iter().all(|m| ports.contains(&m.addr)));
    // Each restored server is a storage identity of its own, drawn as at any first start.
    let mut incarnations = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let s = TestClient::connect(p).unwrap().status().unwrap();
        assert_eq!(s.cluster_id, st.cluster_id, "every restored server agrees");
        assert_ne!(s.incarnation, 0, "{s:?}");
        assert!(s.lost_entries.is_none(), "{s:?}");
        incarnations.insert(s.incarnation);
        let dir = cwd.join(format!("new.{}", i + 1));
        let stored = zatt::wal::identity::Identity::load(&dir).unwrap().unwrap();
        assert_eq!(stored.incarnation, s.incarnation);
        let log = std::fs::read_to_string(cwd.join(format!("new.{}.log", i + 1))).unwrap();
        assert!(
            !log.contains("predates data-directory incarnations"),
            "{log}"
        );
    }
    assert_eq!(
        incarnations.len(),
        3,
        "three data directories, three incarnations"
    );
    // It takes writes, through whichever server leads.
    let deadline = Instant::now() + T;
    'write: loop {
        for p in &ports {
            if let Ok(Response::Written { revision }) =
                TestClient::connect(p).and_then(|mut c| c.put("after-restore", "yes"))
            {
                assert!(revision > after.values().map(|v| v.1).max().unwrap());
                break 'write;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restored cluster takes no write"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A restart without --restore finds its data; one with it is refused.
    let _ = procs.0[0].kill();
    let _ = procs.0[0].wait();
    let d1 = cwd.join("new.1").display().to_string();
    let backup_arg = backup.display().to_string();
    let cluster_arg = format!("1={},2={},3={}", ports[0], ports[1], ports[2]);
    let restore_1 = [
        "--id",
        "1",
        "--data-dir",
        &d1,
        "--restore",
        &backup_arg,
        "--cluster",
        &cluster_arg,
    ];
    let (code, out) = common::run_zattd(&restore_1, &[], T);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("restored already"), "{out}");
    // Its storage lost, and started again with the very command that restored it: the two
    // others know server 1 by the incarnation it had, so it is refused (as any empty data
    // directory of a member is) rather than come back as a voter that forgot its votes.
    std::fs::remove_dir_all(cwd.join("new.1")).unwrap();
    let (code, out) = common::run_zattd(&restore_1, &[], T);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("refusing to start") && out.contains("zatt member remove 1"),
        "{out}"
    );
    assert!(
        !cwd.join("new.1").join("cluster-id").exists(),
        "a refused restore wrote the cluster's state"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn a_restore_cut_short_before_its_data_runs_again() {
    // Goal: what a start leaves before the cluster's first byte (the lock, empty hard state,
    // the identity, a first segment) does not make the directory "not empty" for a second
    // attempt; a log with data does. Method: a backup of a one-server cluster restored on a
    // port this test holds (refused: address in use, with nothing written), then again over
    // what a first start stopped while asking its peers leaves: this attempt gets as far
    // (address in use again), not refused for its directory; a directory with a log is.
    let old = Cluster::start(1, &[]);
    old.wait_leader(T);
    old.put("k", "v");
    let cwd = common::temp_dir("restore-again");
    let backup = cwd.join("b.zatt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args(["--endpoints", &old.addr(1), "snapshot", "save"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cluster = format!("1={}", held.local_addr().unwrap());
    let dir = cwd.join("d");
    let args = [
        "--id",
        "1",
        "--cluster",
        &cluster,
        "--data-dir",
        &dir.display().to_string(),
        "--restore",
        &backup.display().to_string(),
    ];
    for attempt in 0..2 {
        if attempt == 1 {
            assert!(!dir.exists(), "a start refused for its port wrote nothing");
            common::leave_a_stopped_first_start(&dir);
        }
        let (code, out) = common::run_zattd(&args, &[], T);
        assert_eq!(code, Some(1), "attempt {attempt}: {out}");
        assert!(
            out.contains("address already in use"),
            "attempt {attempt}: {out}"
        );
        assert!(!dir.join("cluster-id").exists());
    }
    // What those attempts left is no log either: forcing a cluster from it would make an empty
    // one that says it kept "its whole log".
    let files_before = std::fs::read_dir(&dir).unwrap().count();
    let (code, out) = common::run_zattd(
        &[
            "--id",
            "1",
            "--listen",
            &held.local_addr().unwrap().to_string(),
            "--data-dir",
            &dir.display().to_string(),
            "--force-new-cluster",
        ],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("holds none"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files_before);
    // The old cluster's own directory holds a log: refused for that.
    let (code, out) = common::run_zattd(
        &[
            "--id",
            "1",
            "--cluster",
            &cluster,
            "--data-dir",
            &old.node(1).data_dir.display().to_string(),
            "--restore",
            &backup.display().to_string(),
        ],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("empty data directory"), "{out}");
    drop(held);
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn force_new_cluster_after_losing_two_of_three_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3, &["--snapshot-entries", "700"]);
    let want = fill(&c, 2000);
    let old_incarnation = c.status(3).unwrap().incarnation;
    // Server 3 survives: it has every acknowledged write once it has applied the last one.
    let last = "key/1999";
    c.wait_value(3, last, want.get(last).map(String::as_str), T);
    c.kill(1);
    c.kill(2);

    let cwd = common::temp_dir("force");
    let survivor = c.addr(3);
    let dir3 = c.node(3).data_dir.display().to_string();
    let joiner = format!("127.0.0.1:{}", common::free_port());
    let replace = [
        ("127.0.0.1:5256", survivor.clone()),
        ("127.0.0.1:5257", joiner.clone()),
        ("./zatt.3", dir3.clone()),
        ("./zatt.4", cwd.join("zatt.4").display().to_string()),
    ];
    let env = [("ZATT_TIMEOUT", "30s".to_string())];
    // 1. How much of the log the survivor holds.
    let out = ops_readme::run_ok(
        "zatt --endpoints 127.0.0.1:5256 status --field last_index",
        &replace,
        &cwd,
        &env,
    );
    let last_index: u64 = out.trim().parse().unwrap();
    assert_eq!(last_index, c.status(3).unwrap().last_index);
    // 2. Stopped.
    assert_eq!(c.terminate(3), Some(0));
    // 3. Forced, as the README says.
    let mut procs = Procs::default();
    procs.0.push(ops_readme::spawn(
        "zattd --id 3 --data-dir ./zatt.3 --force-new-cluster &",
        &replace,
        &cwd,
        &cwd.join("forced.log"),
    ));
    let got = dump(&survivor);
    assert_eq!(values(&got), want, "every acknowledged write, nothing else");
    let mut cl = TestClient::connect(&survivor).unwrap();
    let st = cl.status().unwrap();
    assert_eq!(st.role, "leader");
    assert_eq!(st.members.len(), 1);
    assert!(st.last_index > last_index);
    assert!(std::fs::read_to_string(cwd.join("forced.log"))
        .unwrap()
        .contains("FORCED A NEW CLUSTER"));
    assert!(matches!(
        cl.put("after-force", "yes").unwrap(),
        Response::Written { .. }
    ));
    // A storage identity of its own: to the old members it is someone else.
    assert!(
        st.incarnation != 0 && st.incarnation != old_incarnation,
        "{st:?}"
    );
    assert!(st.lost_entries.is_none(), "{st:?}");
    let stored = zatt::wal::identity::Identity::load(Path::new(&dir3))
        .unwrap()
        .unwrap();
    assert_eq!(stored.incarnation, st.incarnation);
    assert!(stored.pins.is_empty(), "{stored:?}");
    // Server 1 comes back with its old data (what the procedure says never to do): the
    // survivor does not hear it (it addresses the old incarnation), and goes on leading in
    // its term.
    c.restart(1);
    let deadline = Instant::now() + T;
    loop {
        let s = cl.status().unwrap();
        let refused = s
            .dropped_datagrams
            .iter()
            .find(|(why, _)| why == "NotMyIncarnation")
            .map_or(0, |(_, n)| *n);
        if refused > 0 {
            assert_eq!((s.role.as_str(), s.term), ("leader", st.term), "{s:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never refused server 1: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(
        cl.put("after-force", "yes").unwrap(),
        Response::Written { .. }
    ));
    c.kill(1);

    // 4. Members back: server 4 as the README shows, server 5 the same way.
    procs.0.push(ops_readme::spawn(
        "zattd --id 4 --join --listen 127.0.0.1:5257 --cluster-id $(cat ./zatt.3/cluster-id) --data-dir ./zatt.4 &",
        &replace,
        &cwd,
        &cwd.join("4.log"),
    ));
    ops_readme::run_ok(
        "zatt --endpoints 127.0.0.1:5256 member add 4 127.0.0.1:5257",
        &replace,
        &cwd,
        &env,
    );
    let fifth = format!("127.0.0.1:{}", common::free_port());
    let replace5 = [
        ("127.0.0.1:5256", survivor.clone()),
        ("127.0.0.1:5257", fifth.clone()),
        ("./zatt.3", dir3.clone()),
        ("./zatt.4", cwd.join("zatt.5").display().to_string()),
        ("--id 4", "--id 5".to_string()),
        ("add 4", "add 5".to_string()),
    ];
    procs.0.push(ops_readme::spawn(
        "zattd --id 4 --join --listen 127.0.0.1:5257 --cluster-id $(cat ./zatt.3/cluster-id) --data-dir ./zatt.4 &",
        &replace5,
        &cwd,
        &cwd.join("5.log"),
    ));
    ops_readme::run_ok(
        "zatt --endpoints 127.0.0.1:5256 member add 4 127.0.0.1:5257",
        &replace5,
        &cwd,
        &env,
    );
    let st = cl.status().unwrap();
    assert_eq!(st.members.iter().filter(|m| m.voter).count(), 3, "{st:?}");

    // The forced server goes too: the two added ones carry on with everything.
    let _ = procs.0[0].kill();
    let _ = procs.0[0].wait();
    let mut want = want;
    want.insert("after-force".into(), "yes".into());
    let deadline = Instant::now() + T;
    loop {
        let got = [&joiner, &fifth].iter().find_map(|a| {
            let mut cl = TestClient::connect(a).ok()?;
            match cl.get("after-force", Consistency::Linearizable).ok()? {
                Response::Value { .. } => Some(*a),
                _ => None,
            }
        });
        if let Some(leader) = got {
            assert_eq!(values(&dump(leader)), want);
            break;
        }
        assert!(Instant::now() < deadline, "servers 4 and 5 elect no leader");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A start that still carries the flag is refused, and changes nothing.
    let (code, out) = common::run_zattd(
        &["--id", "3", "--data-dir", &dir3, "--force-new-cluster"],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("already forced"), "{out}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn a_forced_survivor_is_not_held_back_by_entries_it_lost() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let mut cl = c.client(leader).unwrap();
    cl.put_pipelined("key/", 0..300, 64).unwrap();
    c.put("last", "yes");
    let f = (1..=3).find(|&i| i != leader).unwrap();
    c.wait_value(f, "last", Some("yes"), T);
    for id in 1..=3 {
        c.kill(id);
    }
    common::damage_last_record(&c.node(f).data_dir);
    // Alone and bounded: it withholds its vote, and nobody is left to release it.
    c.restart(f);
    let st = c.wait_status(f, T, "a lost-entries bound", |s| s.lost_entries.is_some());
    assert_ne!(st.role, "leader");
    c.kill(f);

    let node = c.nodes.iter_mut().find(|n| n.id == f).unwrap();
    node.extra.push("--force-new-cluster".into());
    c.restart(f);
    let st = c.wait_status(f, T, "leading alone", |s| s.role == "leader");
    assert!(st.lost_entries.is_none(), "{st:?}");
    assert!(
        c.log_of(f).contains("lost a damaged tail"),
        "{}",
        c.log_of(f)
    );
    let got = values(&dump(&c.addr(f)));
    for i in 0..300 {
        assert_eq!(
            got.get(&format!("key/{i}")).map(String::as_str),
            Some(format!("v{i}").as_str()),
            "key/{i}"
        );
    }
    assert!(matches!(
        c.client(f).unwrap().put("after-force", "yes").unwrap(),
        Response::Written { .. }
    ));
    let node = c.nodes.iter_mut().find(|n| n.id == f).unwrap();
    node.extra.retain(|a| a != "--force-new-cluster");

    // A new member is heard and votes: the survivor's new identity pins it as any peer.
    let addr = c.start_joiner_with_cluster_id(4);
    let add = Request::MemberAdd {
        id: 4,
        addr,
        learner: false,
    };
    c.admin(&add, T);
    let st = c.wait_status(f, T, "two voters", |s| {
        s.members.iter().filter(|m| m.voter).count() == 2
    });
    assert_eq!(st.role, "leader");
    c.put("with-four", "yes");
}

#[test]
fn a_forced_survivor_keeps_the_entries_it_did_not_know_committed() {
    // Goal: the force keeps the survivor's whole log, not only what it knew committed (a
    // follower learns the commit index after the entries, so the last acknowledged writes are
    // often beyond it). Method: the data directory of server 1 of a three-server cluster,
    // written through the WAL as a follower's would be when the leader died right after
    // replicating 200 writes (its durable commit index still 1), then forced: every write is
    // there, and its log says how many entries it committed beyond what it knew.
    use zatt::storage::{LogStorage, WriteBatch};
    use zatt::types::*;
    use zatt::wire::client::Request;
    let ports = common::reserve_ports(3);
    let addr = format!("127.0.0.1:{}", ports[0].port);
    let mut m = Membership::default();
    for (i, p) in ports.iter().enumerate() {
        m.members.insert(
            NodeId(i as u64 + 1),
            Member {
                role: MemberRole::Voter,
                addr: format!("127.0.0.1:{}", p.port),
            },
        );
    }
    let cwd = common::temp_dir("force-uncommitted");
    let dir = cwd.join("d1");
    {
        let (mut wal, _) = zatt::wal::Wal::open(&dir, zatt::wal::WalOptions::default()).unwrap();
        let mut entries = zatt::raft::Boot::bootstrap(&m).entries;
        for i in 0..200u64 {
            let req = Request::Put {
                session: None,
                key: format!("key/{i}").into_bytes(),
                value: format!("v{i}").into_bytes(),
            };
            let mut data = Vec::new();
            assert!(zatt::kv::encode_proposal(&mut data, 0, &req.view()));
            entries.push(Entry::new(
                Term(1),
                LogIndex(i + 2),
                EntryKind::Normal,
                &data,
            ));
        }
        let batch = WriteBatch {
            snapshot: None,
            hard_state: Some(HardState {
                term: Term(1),
                vote: Some(NodeId(2)),
                commit: LogIndex(1),
                lost: None,
            }),
            entries,
        };
        wal.write(&batch).unwrap();
        wal.sync().unwrap();
    }
    std::fs::write(dir.join("cluster-id"), "4242\n").unwrap();

    let log = cwd.join("d1.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut procs = Procs::default();
    procs.0.push(
        std::process::Command::new(env!("CARGO_BIN_EXE_zattd"))
            .args(["--id", "1", "--data-dir"])
            .arg(&dir)
            .arg("--force-new-cluster")
            .env_remove("ZATT_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let got = values(&dump(&addr));
    let want: BTreeMap<String, String> = (0..200)
        .map(|i| (format!("key/{i}"), format!("v{i}")))
        .collect();
    assert_eq!(got, want, "every entry of its log, committed");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("(known committed through 1, 200 entries after that now committed too)"),
        "{text}"
    );
    let st = TestClient::connect(&addr).unwrap().status().unwrap();
    assert_eq!(
        (st.role.as_str(), st.cluster_id),
        ("leader", 4242),
        "{st:?}"
    );
    assert!(st.commit_index >= 202, "{st:?}");
    drop(procs);
    let _ = std::fs::remove_dir_all(&cwd);
}
