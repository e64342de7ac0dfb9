//! Linearizability of what real clients observe from real `zattd` processes while the leader is
//! killed and restarted. Several client threads put, read (linearizably) and compare-and-swap a
//! few keys; every operation is recorded with its call and return time; `zatt::lincheck` judges
//! the history. Operations answered with an error that says "not applied" are left out (as if
//! never sent); those whose outcome is unknown (timeout, connection lost) stay in, unanswered.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zatt::lincheck::{check, Op, OpInput, OpOutput};
use zatt::wire::client::{Consistency, ErrorKind, Expect, Request, Response};

const T: Duration = Duration::from_secs(30);
const KEYS: u64 = 4;
const CLIENTS: u64 = 6;
/// Bounds the history so the checker's search stays quick (ops per client, at most).
const OPS_PER_CLIENT: u64 = 3000;

/// A tiny deterministic generator per client (no global randomness in tests either).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

enum Outcome {
    /// Answered: record it.
    Done(OpOutput),
    /// Refused without effect: leave it out.
    NotApplied,
    /// Unknown: record it unanswered.
    Unknown,
}

fn outcome(resp: std::io::Result<Response>) -> Outcome {
    match resp {
        Ok(Response::Written { .. }) | Ok(Response::Deleted { .. }) => {
            Outcome::Done(OpOutput::Done)
        }
        Ok(Response::Value { value, .. }) => Outcome::Done(OpOutput::Value(value)),
        Ok(Response::CasOk { .. }) => Outcome::Done(OpOutput::Cas(true)),
        Ok(Response::CasFailed { .. }) => Outcome::Done(OpOutput::Cas(false)),
        Ok(Response::Error(e)) if e.may_have_applied() => Outcome::Unknown,
        Ok(Response::Error(_)) => Outcome::NotApplied,
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(_) => Outcome::Unknown,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9 the leader, restart it a second later.
    Crash,
    /// SIGSTOP the leader (it still believes it leads when it wakes), SIGCONT a second later.
    Freeze,
}

#[test]
fn history_across_a_leader_crash_is_linearizable() {
    // Goal: Zatt's central promise, end to end. Method: 6 clients × random ops on 4 keys for
    // about 3 s (at most 3,000 each); kill -9 the leader after 1 s and restart it after 2 s;
    // check the history.
    run_history(Fault::Crash);
}

#[test]
fn history_across_a_frozen_leader_is_linearizable() {
    // Goal: a deposed leader that wakes up believing it still leads must not serve a stale
    // linearizable read or acknowledge a lost write. Method: as above with SIGSTOP/SIGCONT.
    run_history(Fault::Freeze);
}

fn run_history(fault: Fault) {
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(T);
    let addrs: Vec<(u64, String)> = (1..=3).map(|i| (i, c.addr(i))).collect();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let addrs = addrs.clone();
            let stop = stop.clone();
            let history = history.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (client + 1));
                let mut target = addrs[(client as usize) % addrs.len()].1.clone();
                let mut conn: Option<TestClient> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < OPS_PER_CLIENT {
                    let key = format!("k{}", rng.next() % KEYS).into_bytes();
                    let value = format!("c{client}-{n}").into_bytes();
                    n += 1;
                    let (input, req) = match rng.next() % 3 {
                        0 => (
                            OpInput::Put {
                                key: key.clone(),
                                value: value.clone(),
                            },
                            Request::Put {
                                session: None,
                                key,
                                value,
                            },
                        ),
                        1 => (
                            OpInput::Get { key: key.clone() },
                            Request::Get {
                                key,
                                consistency: Consistency::Linearizable,
                            },
                        ),
                        _ => {
                            let expect =
                                format!("c{}-{}", rng.next() % CLIENTS, rng.next() % n.max(1))
                                    .into_bytes();
                            (
                                OpInput::Cas {
                                    key: key.clone(),
                                    expect: Some(expect.clone()),
                                    new: value.clone(),
                                },
                                Request::Cas {
                                    session: None,
                                    key,
                                    expect: Expect::Value(expect),
                                    new: Some(value),
                                },
                            )
                        }
                    };
                    if conn.is_none() {
                        conn = TestClient::connect(&target).ok();
                    }
                    let call = start.elapsed().as_micros() as u64;
                    let Some(cl) = conn.as_mut() else {
                        // Never sent: no effect, nothing to record.
                        target = addrs[(rng.next() % addrs.len() as u64) as usize].1.clone();
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let resp = cl.call(&req);
                    let ret = start.elapsed().as_micros() as u64;
                    if let Ok(Response::Error(ErrorKind::NotLeader {
                        leader_addr: Some(a),
                        ..
                    })) = &resp
                    {
                        target = a.clone();
                        conn = None;
                    } else if resp.is_err() || matches!(resp, Ok(Response::Error(_))) {
                        // Move on to another server; the old connection may be dead.
                        target = addrs[(rng.next() % addrs.len() as u64) as usize].1.clone();
                        conn = None;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let op = |ret: Option<u64>, output: Option<OpOutput>| Op {
                        client,
                        call,
                        ret,
                        input: input.clone(),
                        output,
                    };
                    match outcome(resp) {
                        Outcome::Done(out) => {
                            history.lock().unwrap().push(op(Some(ret), Some(out)))
                        }
                        Outcome::NotApplied => {}
                        Outcome::Unknown => history.lock().unwrap().push(op(None, None)),
                    }
                    // Pace the clients so the history spans the crash and the restart.
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let leader = c.wait_leader(T);
    let killed_at = start.elapsed().as_micros() as u64;
    match fault {
        Fault::Crash => c.kill(leader),
        Fault::Freeze => c.pause(leader),
    }
    std::thread::sleep(Duration::from_secs(1));
    match fault {
        Fault::Crash => c.restart(leader),
        Fault::Freeze => c.resume(leader),
    }
    let restarted_at = start.elapsed().as_micros() as u64;
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let h = history.lock().unwrap().clone();
    let answered = h.iter().filter(|o| o.ret.is_some()).count();
    assert!(
        answered > 50,
        "too few operations completed to judge: {answered}"
    );
    let after = |t: u64| h.iter().filter(|o| o.call > t && o.ret.is_some()).count();
    assert!(
        after(killed_at) > 0 && after(restarted_at) > 0,
        "the history must span the crash"
    );
    eprintln!(
        "{} ops ({answered} answered), {} after the crash, {} after the restart",
        h.len(),
        after(killed_at),
        after(restarted_at)
    );
    if let Err(e) = check(&h) {
        panic!(
            "not linearizable ({} ops, {answered} answered): {e}",
            h.len()
        );
    }
}
