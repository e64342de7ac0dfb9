//! The deterministic cluster simulator: whole Zatt clusters (1 to 7 voters plus learners) built
//! from the real `raft` core and the real `kv` state machine, driven by one seed on one thread.
//! Simulated time jumps from event to event (a queue ordered by (time, sequence)); every node
//! ticks at the tick interval; the network (`network.rs`) loses, duplicates, delays, reorders and
//! partitions; each node's disk (`disk.rs`) keeps writes pending until its simulated syncer makes
//! them durable, and a crash loses or tears what was pending. Faults (`faults.rs`), membership
//! changes, snapshots and leadership transfers happen while clients (`client.rs`) read and write.
//! After every step the safety properties are checked (`checker.rs`); at the end the client
//! history is checked for linearizability, then everything is healed and every pending request
//! must finish within a bounded number of election timeouts.
//!
//! Must not: iterate a HashMap, read the wall clock, or draw randomness from anywhere but the
//! run's one generator (and seeds derived from it for the Raft nodes) — the same seed must give
//! the same trace hash. Read more: DESIGN.md §5, FoundationDB's and TigerBeetle's simulators.
//!
//! Running it: `cargo run --release --example sim -- --seed-start 1 --seeds 1000` (one line per
//! failing seed with the command that reproduces it, `--verbose` for the trace); the tests in
//! `tests/sim_*.rs` run several hundred seeds per `cargo test --release`, show that each switch of
//! `raft::Bugs` is caught, and pin the disk's contract and the run's determinism.
//!
//! How the host side follows `raft.rs`'s persistence contract: each `Ready`'s `messages` leave at
//! once; its snapshot, hard state and entries go to the disk as one batch; the rest of the Ready
//! (`messages_after_persist`, `persisted(mark)`, applying `committed`, serving `read_states`)
//! waits in a per-node queue until the syncer reports that batch (and every earlier one) durable.

pub mod checker;
pub mod client;
pub mod disk;
pub mod faults;
pub mod network;

use crate::kv::{Command, Expect, Kv, KvConfig, Proposal, SessionRef};
use crate::lincheck;
use crate::raft::{Config, ProposeError, Raft, ReadState, Role};
use crate::rng::{derive_seed, Rng};
use crate::storage::{LogStorage, WriteBatch};
use crate::types::*;
use checker::{Check, Checker, Failure, FailureKind, Fnv};
use client::{Client, ClientOp, Current, Outcome, Request, Response};
use disk::SimDisk;
use faults::{BugName, FaultAction, FaultProfile, Profile};
use network::Network;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Simulated time between two ticks of one node.
pub const TICK_US: u64 = 10_000;
/// Election timeout in ticks (the core draws from `[ELECTION_TICKS, 2 * ELECTION_TICKS)`).
pub const ELECTION_TICKS: u32 = 10;
pub const HEARTBEAT_TICKS: u32 = 2;
/// The longest election timeout, µs.
pub const ELECTION_MAX_US: u64 = 2 * ELECTION_TICKS as u64 * TICK_US;
/// Liveness: after healing, every pending request must finish within this many election timeouts.
pub const LIVENESS_ELECTIONS: u64 = 50;
/// A client gives up on one attempt after this long and tries the next node.
pub const CLIENT_TIMEOUT_US: u64 = 300_000;
/// A hard cap on events, so that a message storm ends as a failure instead of running forever.
pub const MAX_EVENTS: u64 = 20_000_000;

/// What to run. `voters: None` lets the seed choose (1 to 7), `profile: None` too.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub voters: Option<usize>,
    pub profile: Option<Profile>,
    pub bug: Option<BugName>,
    /// Events in the fault phase, before healing and the liveness phase.
    pub steps: u64,
    pub clients: usize,
    pub verbose: bool,
    /// With `bug`: use that bug's fault profile but leave the switch off (a control run, which
    /// must pass: it shows that the failures come from the bug, not from the faults).
    pub control: bool,
}

pub const DEFAULT_STEPS: u64 = 30_000;

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            voters: None,
            profile: None,
            bug: None,
            steps: DEFAULT_STEPS,
            clients: 4,
            verbose: false,
            control: false,
        }
    }

    /// The example command that reruns exactly this seed, with a trace.
    pub fn reproduce_command(&self) -> String {
        let mut s = format!(
            "cargo run --release --example sim -- --seed-start {} --seeds 1",
            self.seed
        );
        if let Some(v) = self.voters {
            s += &format!(" --nodes {v}");
        }
        if let Some(p) = self.profile {
            s += &format!(" --profile {}", p.name());
        }
        if let Some(b) = self.bug {
            s += &format!(" --bug {}", b.name());
            if self.control {
                s += " --control";
            }
        }
        if self.steps != DEFAULT_STEPS {
            s += &format!(" --steps {}", self.steps);
        }
        if self.clients != 4 {
            s += &format!(" --clients {}", self.clients);
        }
        s + " --verbose"
    }
}

#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub voters: usize,
    pub profile: String,
    pub trace_hash: u64,
    pub steps: u64,
    pub simulated_us: u64,
    pub ops: usize,
    pub ops_completed: usize,
    pub failure: Option<Failure>,
}

/// One Ready's remainder, waiting for the disk to make batches up to `upto` durable.
struct Pending {
    upto: u64,
    after: Vec<Message>,
    mark: Option<(LogIndex, Term)>,
    snapshot: Option<Snapshot>,
    committed: Vec<Entry>,
    read_states: Vec<ReadState>,
}

/// Who waits for an answer: (client, op id, attempt).
type Waiter = (usize, u64, u64);

struct Node {
    id: NodeId,
    /// None while crashed.
    raft: Option<Raft>,
    kv: Kv,
    disk: SimDisk,
    /// Bumped at each crash and restart so that events of an earlier life are ignored.
    inc: u64,
    syncing: bool,
    queue: VecDeque<Pending>,
    props: BTreeMap<LogIndex, (Term, Waiter)>,
    reads: BTreeMap<u64, (Waiter, Vec<u8>)>,
    ready_reads: Vec<(LogIndex, Waiter, Vec<u8>)>,
    applied: LogIndex,
    applied_membership: Membership,
    snap_index: LogIndex,
    max_term: Term,
    max_commit: LogIndex,
    durable_term: Term,
    durable_commit: LogIndex,
    led_term: Option<Term>,
}

enum Event {
    Tick(usize, u64),
    Deliver(Message),
    SyncDone(usize, u64, u64),
    ToNode(usize, Request),
    ToClient(usize, u64, u64, Response),
    ClientTimeout(usize, u64, u64),
    ClientSend(usize, u64, u64),
    ClientNext(usize),
    Fault,
    Restart(usize),
    Heal(u64),
    /// A reactive crash (of the node's life `.1`), restarting after `.2` µs.
    Crash(usize, u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Faults,
    Liveness,
}

pub struct Sim {
    opts: SimOptions,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    voters: usize,
    clients: Vec<Client>,
    net: Network,
    checker: Checker,
    history: Vec<lincheck::Op>,
    trace: Fnv,
    steps: u64,
    fp: FaultProfile,
    profile_name: String,
    phase: Phase,
    deadline_us: u64,
    next_ctx: u64,
    next_hist_client: u64,
    heal_gen: u64,
    touched: Vec<usize>,
    kv_cfg: KvConfig,
    append_bytes: usize,
    inflight: usize,
}

fn other<E: std::fmt::Display>(kind: FailureKind) -> impl Fn(E) -> (FailureKind, String) {
    move |e| (kind, e.to_string())
}

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        let mut rng = Rng::new(opts.seed);
        let voters = match (opts.voters, opts.bug) {
            (Some(v), _) => v.clamp(1, 7),
            // The known bugs need a real quorum to show (Figure 8 needs at least 3 voters).
            (None, Some(_)) => [3, 5][rng.index(2)],
            (None, None) => [3, 3, 5, 5, 1, 2, 4, 7][rng.index(8)],
        };
        let spares = if voters >= 7 { 1 } else { 1 + rng.index(2) };
        let (fp, profile_name) = match (opts.bug, opts.profile) {
            (Some(b), None) => (b.profile(), format!("bug:{}", b.name())),
            (_, Some(p)) => (FaultProfile::of(p), p.name().to_string()),
            (None, None) => {
                let p = Profile::for_seed(opts.seed);
                (FaultProfile::of(p), p.name().to_string())
            }
        };
        let ids: Vec<NodeId> = (1..=(voters + spares) as u64).map(NodeId).collect();
        let mut membership = Membership::default();
        for &id in &ids[..voters] {
            membership.members.insert(
                id,
                Member {
                    role: MemberRole::Voter,
                    addr: format!("sim:{}", id.0),
                },
            );
        }
        let boot = crate::raft::Boot::bootstrap(&membership);
        let kv_cfg = KvConfig {
            session_ttl_ms: fp.session_ttl_ms,
            ..KvConfig::default()
        };
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Node {
                id,
                raft: None,
                kv: Kv::new(kv_cfg.clone()),
                disk: if i < voters {
                    SimDisk::with_boot(&boot)
                } else {
                    SimDisk::new()
                },
                inc: 0,
                syncing: false,
                queue: VecDeque::new(),
                props: BTreeMap::new(),
                reads: BTreeMap::new(),
                ready_reads: Vec::new(),
                applied: LogIndex(0),
                applied_membership: Membership::default(),
                snap_index: LogIndex(0),
                max_term: Term(0),
                max_commit: LogIndex(0),
                durable_term: Term(0),
                durable_commit: LogIndex(0),
                led_term: None,
            })
            .collect();
        let mut net = Network::new(ids.clone());
        net.randomize(&mut rng, fp.loss_max, fp.dup_max, fp.delay_us);
        let append_bytes = rng.between(fp.append_bytes.0, fp.append_bytes.1) as usize;
        let inflight = rng.between(fp.inflight.0, fp.inflight.1) as usize;
        let n = ids.len();
        let clients = (0..opts.clients.max(1))
            .map(|c| {
                let mut cl = Client::new(c, n, c as u64);
                cl.reader = c < fp.reader_clients;
                cl
            })
            .collect();
        Sim {
            next_hist_client: opts.clients.max(1) as u64,
            opts,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            voters,
            clients,
            net,
            checker: Checker::default(),
            history: Vec::new(),
            trace: Fnv::default(),
            steps: 0,
            fp,
            profile_name,
            phase: Phase::Faults,
            deadline_us: u64::MAX,
            next_ctx: 1,
            heal_gen: 0,
            touched: Vec::new(),
            kv_cfg,
            append_bytes,
            inflight,
        }
    }

    fn at(&mut self, delay_us: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_us, self.seq), ev);
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.opts.verbose {
            println!("{:>10.3}ms {}", self.now as f64 / 1000.0, what);
        }
    }

    fn raft_config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_ticks = ELECTION_TICKS;
        c.heartbeat_ticks = HEARTBEAT_TICKS;
        c.max_append_bytes = self.append_bytes;
        c.max_inflight = self.inflight;
        // Small chunks so that snapshots travel in several pieces.
        c.snapshot_chunk_bytes = 512;
        c.snapshot_inflight_chunks = 4;
        c.promote_max_lag = 20;
        c.max_uncommitted_entries = 1_000;
        c.check_quorum = self.fp.check_quorum;
        if let Some(b) = self.opts.bug {
            if !self.opts.control {
                c.bugs = b.bugs();
            }
        }
        c
    }

    /// Runs the seed to the end and reports. Panics inside are caught and reported as failures.
    pub fn run(opts: SimOptions) -> SimReport {
        let mut sim = Sim::new(opts);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run_inner()));
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(f)) => Some(f),
            Err(p) => {
                let msg = if let Some(s) = p.downcast_ref::<&str>() {
                    s.to_string()
                } else if let Some(s) = p.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "unknown panic".to_string()
                };
                Some(Failure {
                    kind: FailureKind::Panic,
                    detail: msg,
                    at_us: sim.now,
                })
            }
        };
        SimReport {
            seed: sim.opts.seed,
            voters: sim.voters,
            profile: sim.profile_name.clone(),
            trace_hash: sim.trace.0,
            steps: sim.steps,
            simulated_us: sim.now,
            ops: sim.history.len(),
            ops_completed: sim.history.iter().filter(|o| o.ret.is_some()).count(),
            failure,
        }
    }

    fn run_inner(&mut self) -> Result<(), Failure> {
        self.log(format_args!(
            "seed {} voters {} nodes {} profile {}",
            self.opts.seed,
            self.voters,
            self.nodes.len(),
            self.profile_name
        ));
        let wrap = |s: &Sim, r: Check| {
            r.map_err(|(kind, detail)| Failure {
                kind,
                detail,
                at_us: s.now,
            })
        };
        for ni in 0..self.nodes.len() {
            let r = self.restart(ni);
            wrap(self, r)?;
        }
        for c in 0..self.clients.len() {
            let d = self.rng.between(0, 50_000);
            self.at(d, Event::ClientNext(c));
        }
        let g = self.rng.between(self.fp.gap_us.0, self.fp.gap_us.1);
        self.at(g, Event::Fault);
        loop {
            if self.phase == Phase::Faults && self.steps >= self.opts.steps {
                let r = self.start_liveness();
                wrap(self, r)?;
            }
            if self.phase == Phase::Liveness {
                if self.clients.iter().all(|c| c.current.is_none()) {
                    break;
                }
                if self.now > self.deadline_us || self.steps > MAX_EVENTS {
                    let pending: Vec<String> = self
                        .clients
                        .iter()
                        .filter_map(|c| {
                            c.current
                                .as_ref()
                                .map(|k| format!("c{}:{:?}", c.index, k.op))
                        })
                        .collect();
                    let roles: Vec<String> = self
                        .nodes
                        .iter()
                        .map(|n| match &n.raft {
                            Some(r) => format!("{:?}:{:?}/{:?}", n.id, r.role(), r.term()),
                            None => format!("{:?}:down", n.id),
                        })
                        .collect();
                    return Err(Failure {
                        kind: FailureKind::Liveness,
                        detail: format!(
                            "requests still pending {} election timeouts after healing: {} \
                             (nodes {})",
                            LIVENESS_ELECTIONS,
                            pending.join(", "),
                            roles.join(" ")
                        ),
                        at_us: self.now,
                    });
                }
            }
            let Some(((t, _), ev)) = self.queue.pop_first() else {
                break;
            };
            self.now = t;
            self.steps += 1;
            let r = self.process(ev);
            wrap(self, r)?;
            let r = self.check_touched();
            wrap(self, r)?;
        }
        let r = self.check_replicas();
        wrap(self, r)?;
        if let Err(e) = lincheck::check(&self.history) {
            return Err(Failure {
                kind: FailureKind::Linearizability,
                detail: e.to_string(),
                at_us: self.now,
            });
        }
        Ok(())
    }

    fn start_liveness(&mut self) -> Check {
        self.log(format_args!("fault phase over: heal, restart, liveness"));
        self.phase = Phase::Liveness;
        self.net.heal();
        self.net.calm();
        for ni in 0..self.nodes.len() {
            if self.nodes[ni].raft.is_none() {
                self.restart(ni)?;
            }
        }
        self.deadline_us = self.now + LIVENESS_ELECTIONS * ELECTION_MAX_US;
        Ok(())
    }

    fn hash_event(&mut self, ev: &Event) {
        let h = &mut self.trace;
        h.u64(self.now);
        match ev {
            Event::Tick(n, i) => {
                h.u64(1);
                h.u64(*n as u64);
                h.u64(*i);
            }
            Event::Deliver(m) => {
                h.u64(2);
                h.u64(m.from.0);
                h.u64(m.to.0);
                h.u64(m.term.0);
                h.bytes(m.body.name().as_bytes());
                match &m.body {
                    MessageBody::AppendEntries {
                        prev_log_index,
                        prev_log_term,
                        entries,
                        leader_commit,
                        read_seq,
                    } => {
                        h.u64(prev_log_index.0);
                        h.u64(prev_log_term.0);
                        h.u64(leader_commit.0);
                        h.u64(*read_seq);
                        for e in entries {
                            h.u64(checker::digest(e));
                        }
                    }
                    MessageBody::AppendEntriesResponse {
                        success,
                        match_index,
                        ..
                    } => {
                        h.u64(*success as u64);
                        h.u64(match_index.0);
                    }
                    MessageBody::RequestVoteResponse { granted }
                    | MessageBody::PreVoteResponse { granted } => h.u64(*granted as u64),
                    MessageBody::InstallSnapshot { offset, total, .. } => {
                        h.u64(*offset);
                        h.u64(*total);
                    }
                    _ => {}
                }
            }
            Event::SyncDone(n, i, u) => {
                h.u64(3);
                h.u64(*n as u64);
                h.u64(*i);
                h.u64(*u);
            }
            Event::ToNode(n, r) => {
                h.u64(4);
                h.u64(*n as u64);
                h.u64(r.client as u64);
                h.u64(r.op_id);
                h.u64(r.attempt);
            }
            Event::ToClient(c, o, a, _) => {
                h.u64(5);
                h.u64(*c as u64);
                h.u64(*o);
                h.u64(*a);
            }
            Event::ClientTimeout(c, o, a) | Event::ClientSend(c, o, a) => {
                h.u64(6);
                h.u64(*c as u64);
                h.u64(*o);
                h.u64(*a);
            }
            Event::ClientNext(c) => {
                h.u64(7);
                h.u64(*c as u64);
            }
            Event::Fault => h.u64(8),
            Event::Restart(n) => {
                h.u64(9);
                h.u64(*n as u64);
            }
            Event::Heal(g) => {
                h.u64(10);
                h.u64(*g);
            }
            Event::Crash(n, i, d) => {
                h.u64(11);
                h.u64(*n as u64);
                h.u64(*i);
                h.u64(*d);
            }
        }
    }

    fn process(&mut self, ev: Event) -> Check {
        self.hash_event(&ev);
        match ev {
            Event::Tick(ni, inc) => {
                if self.nodes[ni].inc != inc {
                    return Ok(());
                }
                let Some(raft) = self.nodes[ni].raft.as_mut() else {
                    return Ok(());
                };
                raft.tick();
                self.at(TICK_US, Event::Tick(ni, inc));
                self.drive(ni)
            }
            Event::Deliver(m) => {
                let ni = m.to.0 as usize - 1;
                if self.nodes[ni].raft.is_none() {
                    return Ok(());
                }
                if self.opts.verbose {
                    self.log(format_args!(
                        "deliver {:?}→{:?} {:?} {:?}",
                        m.from, m.to, m.term, m.body
                    ));
                }
                let raft = self.nodes[ni].raft.as_mut().expect("checked live");
                raft.step(m);
                self.drive(ni)
            }
            Event::SyncDone(ni, inc, upto) => {
                if self.nodes[ni].inc != inc || self.nodes[ni].raft.is_none() {
                    return Ok(());
                }
                let node = &mut self.nodes[ni];
                node.syncing = false;
                node.disk
                    .sync_through(upto)
                    .map_err(other(FailureKind::Contract))?;
                self.check_durable(ni)?;
                self.drive(ni)
            }
            Event::ToNode(ni, req) => {
                if self.nodes[ni].raft.is_none() {
                    return Ok(());
                }
                self.handle_request(ni, req)
            }
            Event::ToClient(c, op_id, attempt, resp) => {
                self.client_answer(c, op_id, attempt, resp);
                Ok(())
            }
            Event::ClientTimeout(c, op_id, attempt) => {
                let n = self.nodes.len();
                let cl = &mut self.clients[c];
                if let Some(cur) = &cl.current {
                    if cur.op_id == op_id && cur.attempt == attempt {
                        cl.target = cl.rotate(n);
                        self.client_send(c);
                    }
                }
                Ok(())
            }
            Event::ClientSend(c, op_id, attempt) => {
                if let Some(cur) = &self.clients[c].current {
                    if cur.op_id == op_id && cur.attempt == attempt {
                        self.client_send(c);
                    }
                }
                Ok(())
            }
            Event::ClientNext(c) => {
                if self.phase != Phase::Faults || self.clients[c].current.is_some() {
                    return Ok(());
                }
                let (op, op_id) = self.clients[c].next_op(&mut self.rng);
                let seq = match op {
                    ClientOp::Register | ClientOp::Get { .. } => 0,
                    _ => {
                        let s = self.clients[c].next_seq;
                        self.clients[c].next_seq += 1;
                        s
                    }
                };
                let hist = self.clients[c].history_op(&op, self.now).map(|h| {
                    self.history.push(h);
                    self.history.len() - 1
                });
                self.clients[c].current = Some(Current {
                    op,
                    op_id,
                    seq,
                    attempt: 0,
                    hist,
                });
                self.client_send(c);
                Ok(())
            }
            Event::Fault => {
                if self.phase != Phase::Faults {
                    return Ok(());
                }
                if let Some(a) = self.fp.pick(&mut self.rng) {
                    self.fault(a)?;
                }
                let g = self.rng.between(self.fp.gap_us.0, self.fp.gap_us.1);
                self.at(g, Event::Fault);
                Ok(())
            }
            Event::Restart(ni) => {
                if self.nodes[ni].raft.is_some() {
                    return Ok(());
                }
                self.restart(ni)
            }
            Event::Crash(ni, inc, down) => {
                if self.phase != Phase::Faults || self.nodes[ni].inc != inc {
                    return Ok(());
                }
                self.crash(ni, down)
            }
            Event::Heal(g) => {
                if g == self.heal_gen {
                    self.net.heal();
                    self.log(format_args!("network healed"));
                }
                Ok(())
            }
        }
    }

    // ----- nodes: start, crash, the Ready loop -----

    fn restart(&mut self, ni: usize) -> Check {
        let cfg = self.raft_config(self.nodes[ni].id);
        let seed = self.opts.seed;
        let kv_cfg = self.kv_cfg.clone();
        let node = &mut self.nodes[ni];
        node.inc += 1;
        let boot = node.disk.recover().map_err(other(FailureKind::Contract))?;
        node.kv = match &boot.snapshot {
            Some(s) => Kv::restore(&s.data, kv_cfg).map_err(|e| {
                (
                    FailureKind::Contract,
                    format!("snapshot refused by kv: {e}"),
                )
            })?,
            None => Kv::new(kv_cfg),
        };
        node.applied = boot
            .snapshot
            .as_ref()
            .map(|s| s.meta.index)
            .unwrap_or_default();
        node.snap_index = node.applied;
        node.applied_membership = boot
            .snapshot
            .as_ref()
            .map(|s| s.meta.membership.clone())
            .unwrap_or_default();
        node.max_term = boot.hard_state.term;
        let durable_last = node.disk.durable().last_index();
        let min_commit = boot.hard_state.commit.min(durable_last);
        node.max_commit = LogIndex(0);
        node.led_term = None;
        node.syncing = false;
        node.queue.clear();
        let raft = Raft::new(cfg, boot, derive_seed(seed, node.id.0, node.inc));
        if raft.commit_index() < min_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{:?} restarted with commit {:?} below its durable commit {:?}",
                    node.id,
                    raft.commit_index(),
                    min_commit
                ),
            ));
        }
        node.max_commit = raft.commit_index();
        node.raft = Some(raft);
        let inc = node.inc;
        let id = node.id;
        let d = self.nodes[ni].disk.durable();
        self.log(format_args!(
            "{id:?} starts (life {inc}) from {:?}, snapshot {:?}, last index {:?}",
            d.hard_state,
            d.snapshot_index(),
            d.last_index()
        ));
        let phase = self.rng.between(1, TICK_US);
        self.at(phase, Event::Tick(ni, inc));
        self.drive(ni)
    }

    fn crash(&mut self, ni: usize, down_us: u64) -> Check {
        let torn = self.fp.torn;
        let node = &mut self.nodes[ni];
        if node.raft.is_none() {
            return Ok(());
        }
        node.raft = None;
        node.inc += 1;
        node.syncing = false;
        node.queue.clear();
        node.props.clear();
        node.reads.clear();
        node.ready_reads.clear();
        let kept = node.disk.crash(&mut self.rng, torn);
        let id = node.id;
        self.log(format_args!("{id:?} crashes (kept {kept} pending batches)"));
        self.check_durable(ni)?;
        self.at(down_us, Event::Restart(ni));
        Ok(())
    }

    /// Durable term and commit never go back (they survive crashes by definition). The commit is
    /// taken as `min(commit, durable last index)`: a torn batch may keep its hard state and lose
    /// the entries after it, and a node cannot durably know more committed than it holds.
    fn check_durable(&mut self, ni: usize) -> Check {
        let node = &mut self.nodes[ni];
        let mut hs = node.disk.durable().hard_state;
        hs.commit = hs.commit.min(node.disk.durable().last_index());
        if hs.term < node.durable_term {
            return Err((
                FailureKind::TermRegressed,
                format!(
                    "{:?} durable term went from {:?} to {:?}",
                    node.id, node.durable_term, hs.term
                ),
            ));
        }
        if hs.commit < node.durable_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{:?} durable commit went from {:?} to {:?}",
                    node.id, node.durable_commit, hs.commit
                ),
            ));
        }
        node.durable_term = hs.term;
        node.durable_commit = hs.commit;
        Ok(())
    }

    fn drive(&mut self, ni: usize) -> Check {
        self.touched.push(ni);
        for _ in 0..100_000 {
            let Some(raft) = self.nodes[ni].raft.as_mut() else {
                return Ok(());
            };
            if raft.has_ready() {
                let rd = raft.ready();
                self.handle_ready(ni, rd)?;
                continue;
            }
            if self.complete_one(ni)? {
                continue;
            }
            self.kick_syncer(ni);
            return Ok(());
        }
        Err((
            FailureKind::Contract,
            format!("{:?}: the Ready loop did not settle", self.nodes[ni].id),
        ))
    }

    fn handle_ready(&mut self, ni: usize, rd: crate::raft::Ready) -> Check {
        let id = self.nodes[ni].id;
        if let Some(ss) = rd.soft_state {
            self.log(format_args!(
                "{id:?} is {:?} in {:?}, leader {:?}",
                ss.role, ss.term, ss.leader
            ));
        }
        {
            let raft = self.nodes[ni].raft.as_ref().expect("driving a live node");
            let leader = raft.role() == Role::Leader;
            for e in &rd.entries {
                let prev = if e.index.0 <= 1 {
                    Some(Term(0))
                } else {
                    raft.term_at(e.index.prev())
                };
                self.checker.on_append(id, e, prev)?;
                if leader {
                    self.checker.single_conf_change(raft, e)?;
                }
            }
        }
        let mark = rd.persist_mark();
        let needs_persist = rd.needs_persist();
        for m in rd.messages {
            self.send(ni, m)?;
        }
        if needs_persist {
            let batch = WriteBatch {
                snapshot: rd.snapshot.clone(),
                hard_state: rd.hard_state,
                entries: rd.entries,
            };
            self.nodes[ni]
                .disk
                .write(&batch)
                .map_err(other(FailureKind::Contract))?;
        }
        let node = &mut self.nodes[ni];
        let upto = node.disk.written();
        node.queue.push_back(Pending {
            upto,
            after: rd.messages_after_persist,
            mark,
            snapshot: rd.snapshot,
            committed: rd.committed,
            read_states: rd.read_states,
        });
        Ok(())
    }

    fn kick_syncer(&mut self, ni: usize) {
        let node = &mut self.nodes[ni];
        if node.syncing || node.disk.written() == node.disk.synced() {
            return;
        }
        node.syncing = true;
        let (inc, upto) = (node.inc, node.disk.written());
        let d = self.rng.between(self.fp.sync_us.0, self.fp.sync_us.1);
        self.at(d, Event::SyncDone(ni, inc, upto));
    }

    /// Finishes the oldest waiting Ready if the disk has made it durable.
    fn complete_one(&mut self, ni: usize) -> Result<bool, (FailureKind, String)> {
        let node = &mut self.nodes[ni];
        match node.queue.front() {
            Some(p) if p.upto <= node.disk.synced() => {}
            _ => return Ok(false),
        }
        let p = node.queue.pop_front().expect("front exists");
        for m in p.after {
            self.send(ni, m)?;
        }
        if let Some((i, t)) = p.mark {
            if let Some(r) = self.nodes[ni].raft.as_mut() {
                r.persisted(i, t);
            }
        }
        if let Some(s) = p.snapshot {
            let node = &mut self.nodes[ni];
            if s.meta.index > node.applied {
                node.kv = Kv::restore(&s.data, self.kv_cfg.clone()).map_err(|e| {
                    (
                        FailureKind::Contract,
                        format!("snapshot refused by kv: {e}"),
                    )
                })?;
                node.applied = s.meta.index;
                node.snap_index = s.meta.index;
                node.applied_membership = s.meta.membership.clone();
                let id = node.id;
                self.log(format_args!(
                    "{id:?} installed snapshot at {:?}",
                    s.meta.index
                ));
                self.answer_props_upto(ni, s.meta.index, None);
            }
        }
        for e in p.committed {
            self.apply_entry(ni, e)?;
        }
        for rs in p.read_states {
            if let Some((w, key)) = self.nodes[ni].reads.remove(&rs.ctx) {
                self.nodes[ni].ready_reads.push((rs.index, w, key));
            }
        }
        self.serve_reads(ni);
        self.maybe_compact(ni);
        Ok(true)
    }

    fn apply_entry(&mut self, ni: usize, e: Entry) -> Check {
        let node = &mut self.nodes[ni];
        if e.index <= node.applied {
            return Ok(());
        }
        if e.index != node.applied.next() {
            return Err((
                FailureKind::Contract,
                format!(
                    "{:?} was handed committed entry {:?} after applying {:?}",
                    node.id, e.index, node.applied
                ),
            ));
        }
        self.checker.on_apply(node.id, &e)?;
        if e.kind == EntryKind::Config {
            if let Ok((m, _)) = Membership::decode(&e.data) {
                node.applied_membership = m;
            }
        }
        let reply = node.kv.apply(&e);
        node.applied = e.index;
        self.answer_props_upto(ni, e.index, Some((e.term, reply)));
        Ok(())
    }

    /// Answers every proposal at or below `index`: the one at `index` with the reply when it is
    /// the proposed entry, every other with Retry (its entry was replaced or compacted away).
    fn answer_props_upto(
        &mut self,
        ni: usize,
        index: LogIndex,
        applied: Option<(Term, Option<crate::kv::Reply>)>,
    ) {
        loop {
            let node = &mut self.nodes[ni];
            let Some((&idx, _)) = node.props.first_key_value() else {
                break;
            };
            if idx > index {
                break;
            }
            let (term, w) = node.props.remove(&idx).expect("present");
            let resp = match &applied {
                Some((t, Some(reply))) if idx == index && *t == term => {
                    Response::Write(reply.clone())
                }
                _ => Response::Retry,
            };
            self.respond(w, resp);
        }
    }

    fn serve_reads(&mut self, ni: usize) {
        let node = &mut self.nodes[ni];
        if node.ready_reads.is_empty() {
            return;
        }
        let applied = node.applied;
        let mut out = Vec::new();
        node.ready_reads.retain(|(idx, w, key)| {
            if *idx <= applied {
                out.push((*w, key.clone()));
                false
            } else {
                true
            }
        });
        for (w, key) in out {
            let v = self.nodes[ni].kv.get(&key).map(|(v, _)| v.to_vec());
            self.respond(w, Response::Read(v));
        }
    }

    fn maybe_compact(&mut self, ni: usize) {
        let every = self.fp.snapshot_every;
        let node = &mut self.nodes[ni];
        if node.applied.0 < node.snap_index.0 + every {
            return;
        }
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let Some(term) = raft.term_at(node.applied) else {
            return;
        };
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: node.applied,
                term,
                membership: node.applied_membership.clone(),
            },
            data: Arc::from(node.kv.snapshot_bytes()),
        };
        let _ = node.disk.save_snapshot(&snap);
        raft.compact(snap);
        node.snap_index = node.applied;
    }

    // ----- messages -----

    /// Nothing is acknowledged before it is synced: a granted vote or a successful append or
    /// snapshot acknowledgement must be covered by the sender's durable state as it leaves.
    fn ack_check(&mut self, ni: usize, m: &Message) -> Check {
        let node = &self.nodes[ni];
        let d = node.disk.durable();
        let hs = d.hard_state;
        let fail = |what: String| Err((FailureKind::AckBeforeSync, what));
        match &m.body {
            MessageBody::RequestVoteResponse { granted: true } => {
                self.checker.on_vote_granted(m.from, m.term, m.to)?;
                if hs.term < m.term || (hs.term == m.term && hs.vote != Some(m.to)) {
                    return fail(format!(
                        "{:?} granted its vote to {:?} in {:?} but its durable hard state is {hs:?}",
                        m.from, m.to, m.term
                    ));
                }
            }
            // The ack vouches for the log up to `match_index`, not for the term: a follower may
            // answer a leader of a newer term before that term is durable (no vote depends on
            // it). An ack from an older term than the durable one is stale (the log may have
            // moved on since) and is not judged. The in-memory log may also have moved on (a
            // later leader's entries, not yet durable), so the durable entry is compared with
            // the ack's term rather than with memory.
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } if hs.term <= m.term && *match_index > d.snapshot_index() => {
                let dt = d.term_at(*match_index);
                if dt.map_or(true, |t| t > m.term) {
                    let mt = node.raft.as_ref().and_then(|r| r.term_at(*match_index));
                    return fail(format!(
                        "{:?} acknowledged match index {:?} in {:?} but holds {:?} durably \
                         (durable last index {:?}, in memory {:?})",
                        m.from,
                        match_index,
                        m.term,
                        dt,
                        d.last_index(),
                        mt
                    ));
                }
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                installed: true,
                ..
            } if d.snapshot_index() < *snapshot_index && d.last_index() < *snapshot_index => {
                return fail(format!(
                    "{:?} acknowledged snapshot {:?} but its durable snapshot is at {:?}",
                    m.from,
                    snapshot_index,
                    d.snapshot_index()
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn send(&mut self, ni: usize, m: Message) -> Check {
        self.ack_check(ni, &m)?;
        if matches!(m.body, MessageBody::RequestVoteResponse { granted: true })
            && self.phase == Phase::Faults
            && self.rng.chance(self.fp.crash_on_vote)
        {
            let inc = self.nodes[ni].inc;
            let d = self.rng.between(0, 500);
            let down = self
                .rng
                .between(self.fp.quick_down_us.0, self.fp.quick_down_us.1);
            self.at(d, Event::Crash(ni, inc, down));
        }
        let to = m.to.0 as usize;
        if to == 0 || to > self.nodes.len() || m.to == m.from {
            return Ok(());
        }
        for d in self.net.route(m.from, m.to, &mut self.rng) {
            self.at(d, Event::Deliver(m.clone()));
        }
        Ok(())
    }

    // ----- clients -----

    fn handle_request(&mut self, ni: usize, req: Request) -> Check {
        let w = (req.client, req.op_id, req.attempt);
        let now_ms = self.now / 1000;
        let raft = self.nodes[ni].raft.as_mut().expect("checked live");
        if raft.role() != Role::Leader {
            let hint = raft.leader();
            self.respond(w, Response::NotLeader(hint));
            return Ok(());
        }
        let session = req.session.map(|id| SessionRef { id, seq: req.seq });
        let command = match req.op {
            ClientOp::Get { key } => {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                match raft.read_index(ctx) {
                    Ok(()) => {
                        self.nodes[ni].reads.insert(ctx, (w, key));
                    }
                    Err(ProposeError::NotLeader { leader }) => {
                        self.respond(w, Response::NotLeader(leader))
                    }
                    Err(_) => self.respond(w, Response::Retry),
                }
                return self.drive(ni);
            }
            ClientOp::Register => Command::RegisterSession,
            ClientOp::Put { key, value } => Command::Put { key, value },
            ClientOp::Delete { key } => Command::Delete { key },
            ClientOp::Cas { key, expect, new } => Command::Cas {
                key,
                expect: match expect {
                    Some(v) => Expect::Value(v),
                    None => Expect::Absent,
                },
                new: Some(new),
            },
        };
        let session = if command == Command::RegisterSession {
            None
        } else {
            session
        };
        let mut buf = Vec::new();
        Proposal {
            session,
            now_ms,
            command,
        }
        .encode(&mut buf);
        match raft.propose(&buf) {
            Ok((idx, term)) => {
                if let Some((_, old)) = self.nodes[ni].props.insert(idx, (term, w)) {
                    self.respond(old, Response::Retry);
                }
            }
            Err(ProposeError::NotLeader { leader }) => self.respond(w, Response::NotLeader(leader)),
            Err(_) => self.respond(w, Response::Retry),
        }
        self.drive(ni)
    }

    fn respond(&mut self, w: Waiter, resp: Response) {
        if self.phase == Phase::Faults && self.rng.chance(self.fp.client_loss) {
            return;
        }
        let d = self.rng.between(200, 2_000);
        self.at(d, Event::ToClient(w.0, w.1, w.2, resp));
    }

    fn client_send(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        let Some(cur) = cl.current.as_mut() else {
            return;
        };
        cur.attempt += 1;
        let req = Request {
            client: c,
            op_id: cur.op_id,
            attempt: cur.attempt,
            session: cl.session,
            seq: cur.seq,
            op: cur.op.clone(),
        };
        let target = cl.target;
        let (op_id, attempt) = (cur.op_id, cur.attempt);
        if self.opts.verbose {
            self.log(format_args!(
                "client {c} op {op_id} attempt {attempt} → n{}: {:?}",
                target + 1,
                req.op
            ));
        }
        self.at(CLIENT_TIMEOUT_US, Event::ClientTimeout(c, op_id, attempt));
        if self.phase == Phase::Faults && self.rng.chance(self.fp.client_loss) {
            return;
        }
        let d = self.rng.between(200, 2_000);
        self.at(d, Event::ToNode(target, req));
    }

    fn client_answer(&mut self, c: usize, op_id: u64, attempt: u64, resp: Response) {
        let n = self.nodes.len();
        let cl = &mut self.clients[c];
        let Some(cur) = &cl.current else {
            return;
        };
        if cur.op_id != op_id {
            return;
        }
        let provisional = matches!(resp, Response::NotLeader(_) | Response::Retry);
        if provisional && cur.attempt != attempt {
            return;
        }
        let cur_attempt = cur.attempt;
        if self.opts.verbose {
            println!(
                "{:>10.3}ms client {c} op {op_id} attempt {attempt} ← {resp:?}",
                self.now as f64 / 1000.0
            );
        }
        match cl.on_answer(&resp, n, &mut self.rng) {
            Outcome::Done(out) => {
                let cur = cl.current.take().expect("current");
                cl.followed_hint = false;
                cl.completed += 1;
                if let Some(h) = cur.hist {
                    self.history[h].ret = Some(self.now);
                    self.history[h].output = out;
                }
                let think = if self.rng.chance(self.fp.client_pause) {
                    self.rng.between(1_000_000, 4_000_000)
                } else {
                    self.rng.between(0, 10_000)
                };
                self.at(think, Event::ClientNext(c));
            }
            Outcome::Retry { target, after_us } => {
                cl.target = target;
                self.at(after_us, Event::ClientSend(c, op_id, cur_attempt));
            }
            Outcome::Abandon => {
                cl.current = None;
                cl.hist_client = self.next_hist_client;
                self.next_hist_client += 1;
                self.log(format_args!(
                    "client {c} abandons op {op_id} after {resp:?}"
                ));
                let think = self.rng.between(0, 10_000);
                self.at(think, Event::ClientNext(c));
            }
        }
    }

    // ----- faults -----

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = &n.raft {
                if r.role() == Role::Leader && best.map_or(true, |(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|b| b.1)
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].raft.is_some())
            .collect()
    }

    fn fault(&mut self, a: FaultAction) -> Check {
        match a {
            FaultAction::Crash => {
                let down = self.nodes.len() - self.up_nodes().len();
                if down >= (self.voters / 2).max(1) {
                    return Ok(());
                }
                let victim = match self.leader() {
                    Some(l) if self.rng.below(100) < self.fp.crash_leader_pct => Some(l),
                    _ => {
                        let up = self.up_nodes();
                        (!up.is_empty()).then(|| up[self.rng.index(up.len())])
                    }
                };
                if let Some(v) = victim {
                    let d = self.rng.between(self.fp.down_us.0, self.fp.down_us.1);
                    self.crash(v, d)?;
                }
            }
            FaultAction::Partition => {
                let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                let shape = if self.fp.isolate_leader {
                    0
                } else {
                    self.rng.below(4)
                };
                match shape {
                    0 => {
                        let target = match self.leader() {
                            Some(l) if self.fp.isolate_leader || self.rng.chance(0.6) => ids[l],
                            _ => ids[self.rng.index(ids.len())],
                        };
                        self.net.isolate(target);
                    }
                    1 => self.net.halves(&mut self.rng),
                    2 => self.net.one_way(&mut self.rng),
                    _ => {
                        let voters: Vec<NodeId> = match self.leader() {
                            Some(l) => self.nodes[l]
                                .raft
                                .as_ref()
                                .map(|r| r.membership().voters().collect())
                                .unwrap_or_default(),
                            None => ids[..self.voters].to_vec(),
                        };
                        self.net.bridge(&mut self.rng, &voters);
                    }
                }
                self.heal_gen += 1;
                let g = self.heal_gen;
                let d = self
                    .rng
                    .between(self.fp.partition_us.0, self.fp.partition_us.1);
                self.at(d, Event::Heal(g));
                let shape = self.net.shape.clone();
                self.log(format_args!("partition: {shape}"));
            }
            FaultAction::Links => {
                self.net.randomize(
                    &mut self.rng,
                    self.fp.loss_max,
                    self.fp.dup_max,
                    self.fp.delay_us,
                );
                self.log(format_args!("links redrawn"));
            }
            FaultAction::Conf => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let n = if self.fp.conf_burst {
                    self.rng.between(1, 3)
                } else {
                    1
                };
                for _ in 0..n {
                    self.conf_change(l);
                }
                self.drive(l)?;
            }
            FaultAction::Transfer => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let raft = self.nodes[l].raft.as_mut().expect("leader is up");
                let voters: Vec<NodeId> = raft
                    .membership()
                    .voters()
                    .filter(|&v| v != raft.id())
                    .collect();
                if voters.is_empty() {
                    return Ok(());
                }
                let to = voters[self.rng.index(voters.len())];
                let _ = raft.transfer_leader(to);
                let id = raft.id();
                self.log(format_args!(
                    "{id:?} asked to transfer leadership to {to:?}"
                ));
                self.drive(l)?;
            }
            FaultAction::Campaign => {
                let up = self.up_nodes();
                if up.is_empty() {
                    return Ok(());
                }
                let ni = up[self.rng.index(up.len())];
                let raft = self.nodes[ni].raft.as_mut().expect("up");
                if raft.membership().is_voter(raft.id()) && raft.role() != Role::Leader {
                    raft.campaign();
                    let id = raft.id();
                    self.log(format_args!("{id:?} forced to campaign"));
                    self.drive(ni)?;
                }
            }
        }
        Ok(())
    }

    /// Proposes one membership change on leader `l`: add a non-member as learner, promote a
    /// learner, or remove a member (never leaving fewer voters than the cluster started with,
    /// nor fewer than 3 when it started with more).
    fn conf_change(&mut self, l: usize) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let initial = self.voters;
        let raft = self.nodes[l].raft.as_mut().expect("leader is up");
        let m = raft.membership().clone();
        let mut options = Vec::new();
        for &id in &ids {
            if !m.contains(id) {
                options.push(ConfChange::AddLearner {
                    id,
                    addr: format!("sim:{}", id.0),
                });
            }
        }
        for id in m.learners() {
            options.push(ConfChange::Promote { id });
            options.push(ConfChange::Remove { id });
        }
        let vc = m.voter_count();
        if vc > initial.min(3) || vc > initial {
            for id in m.voters() {
                options.push(ConfChange::Remove { id });
            }
        }
        if options.is_empty() {
            return;
        }
        let cc = options[self.rng.index(options.len())].clone();
        let r = raft.propose_conf_change(cc.clone());
        let id = raft.id();
        self.log(format_args!("{id:?} proposes {cc:?}: {r:?}"));
    }

    // ----- checks -----

    /// State Machine Safety, on the states themselves: replicas that applied the same prefix hold
    /// byte-identical dictionaries and sessions (the state machine is deterministic, and
    /// expiry follows log-carried time only).
    fn check_replicas(&self) -> Check {
        let mut by_applied: BTreeMap<LogIndex, (NodeId, u32)> = BTreeMap::new();
        for n in &self.nodes {
            if n.raft.is_none() {
                continue;
            }
            let d = n.kv.digest();
            match by_applied.get(&n.applied) {
                Some(&(other, d0)) if d0 != d => {
                    return Err((
                        FailureKind::StateMachineSafety,
                        format!(
                            "{:?} and {other:?} both applied up to {:?} but their states differ \
                             (digests {d:08x} and {d0:08x})",
                            n.id, n.applied
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    by_applied.insert(n.applied, (n.id, d));
                }
            }
        }
        Ok(())
    }

    fn check_touched(&mut self) -> Check {
        let mut t = std::mem::take(&mut self.touched);
        t.sort_unstable();
        t.dedup();
        for &ni in &t {
            self.check_node(ni)?;
        }
        t.clear();
        self.touched = t;
        Ok(())
    }

    fn check_node(&mut self, ni: usize) -> Check {
        let node = &mut self.nodes[ni];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        raft.check_invariants()
            .map_err(|e| (FailureKind::CoreInvariant, format!("{:?}: {e}", node.id)))?;
        let term = raft.term();
        if term < node.max_term {
            return Err((
                FailureKind::TermRegressed,
                format!(
                    "{:?} term went from {:?} to {:?}",
                    node.id, node.max_term, term
                ),
            ));
        }
        node.max_term = term;
        let commit = raft.commit_index();
        if commit < node.max_commit {
            return Err((
                FailureKind::CommitRegressed,
                format!(
                    "{:?} commit went from {:?} to {:?}",
                    node.id, node.max_commit, commit
                ),
            ));
        }
        let mut i = node.max_commit.next().max(raft.first_index());
        while i <= commit {
            if let Some(t) = raft.term_at(i) {
                self.checker.on_commit(node.id, i, t)?;
            }
            i = i.next();
        }
        node.max_commit = commit;
        if raft.role() == Role::Leader {
            self.checker.on_leader(node.id, term)?;
            if node.led_term != Some(term) {
                node.led_term = Some(term);
                self.checker.leader_completeness(raft)?;
                if self.phase == Phase::Faults && self.rng.chance(self.fp.crash_new_leader) {
                    let inc = self.nodes[ni].inc;
                    let (lo, hi) = self.fp.new_leader_crash_us;
                    let d = self.rng.between(lo, hi);
                    let down = self
                        .rng
                        .between(self.fp.quick_down_us.0, self.fp.quick_down_us.1);
                    self.at(d, Event::Crash(ni, inc, down));
                }
            }
        }
        Ok(())
    }
}

/// Convenience for tests and the example: runs one seed with default options.
pub fn run_seed(seed: u64) -> SimReport {
    Sim::run(SimOptions::new(seed))
}

/// Runs `count` seeds from `start` with `base`'s other options; returns every failing seed's
/// options (for `reproduce_command`) and report.
pub fn run_seeds(base: &SimOptions, start: u64, count: u64) -> Vec<(SimOptions, SimReport)> {
    let mut failed = Vec::new();
    for seed in start..start.saturating_add(count) {
        let opts = SimOptions {
            seed,
            ..base.clone()
        };
        let r = Sim::run(opts.clone());
        if r.failure.is_some() {
            failed.push((opts, r));
        }
    }
    failed
}

/// One line per failing seed: what broke, and the command that reproduces it.
pub fn describe_failures(failed: &[(SimOptions, SimReport)]) -> String {
    let mut s = String::new();
    for (o, r) in failed {
        if let Some(f) = &r.failure {
            let mut detail = f.detail.clone();
            if detail.len() > 300 {
                let mut cut = 300;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail += "…";
            }
            s += &format!(
                "seed {} failed: {} at {}ms: {}\n  reproduce: {}\n",
                o.seed,
                f.kind,
                f.at_us / 1000,
                detail,
                o.reproduce_command()
            );
        }
    }
    s
}
