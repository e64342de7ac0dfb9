//! The deterministic cluster simulator: whole Zatt clusters (1 to 7 voters plus spare nodes)
//! driven by one seed on one thread. Every node is the server's own `host::Host` (the Raft core,
//! the dictionary, request handling, the persistence ordering, reads, snapshots), driven here
//! by a simulated driver instead of the event loop: simulated time jumps from event to event (a
//! queue ordered by (time, sequence)); the network (`network.rs`) loses, duplicates, delays,
//! reorders and partitions; each node's disk (`disk.rs`) keeps writes pending until its
//! simulated syncer makes them durable, in order, and a crash loses or tears what was pending.
//! Faults (`inject.rs`, bounded by `faults.rs`), membership changes, snapshots and leadership
//! transfers happen while clients (`client.rs`, `traffic.rs`) read and write with real request
//! frames, and watchers (`watch.rs`) follow the changes from whichever node they reach. After every step the safety properties are checked (`checks.rs`, `checker.rs`); at
//! the end the client history is checked for linearizability, then everything is healed and
//! every pending request must finish within a bounded number of election timeouts.
//!
//! Must not: iterate a HashMap, read the wall clock, or draw randomness from anywhere but the
//! run's one generator (and seeds derived from it for the Raft nodes) — the same seed must give
//! the same trace hash. Nor may it handle a `Ready`, apply entries, answer clients or serve
//! reads itself: that is the host's code, the code that ships (FoundationDB and TigerBeetle
//! simulate their servers the same way).
//!
//! Running it: `cargo run --release --example sim -- --seed-start 1 --seeds 1000` (one line per
//! failing seed with the command that reproduces it, `--verbose` for the trace, `--list-bugs`
//! for the known-bug switches); the tests in `tests/sim_*.rs` run several hundred seeds per
//! `cargo test --release`, show that each known-bug switch (core and host) is caught, and pin
//! the disk's contract and the run's determinism.
//!
//! Layout: this file holds the options, the report, the run loop and the event dispatch;
//! `events.rs` the events and the trace hash; `node.rs` the simulated driver of each host (its
//! `Output`, disk and syncer, turns, crashes and restarts); `traffic.rs` the clients' side;
//! `inject.rs` the fault actions; `checks.rs` the per-step checks; `watch.rs` the watchers and
//! the check of their streams against the committed log.

pub mod checker;
mod checks;
pub mod client;
pub mod disk;
mod events;
pub mod faults;
mod inject;
pub mod network;
mod node;
mod traffic;
mod watch;

use crate::host::Host;
use crate::kv::KvConfig;
use crate::lincheck;
use crate::rng::Rng;
use crate::types::*;
use checker::{Check, Checker, Failure, FailureKind, Fnv};
use client::Client;
use disk::SimDisk;
use events::Event;
use faults::{BugName, FaultProfile, Profile};
use network::Network;
use node::NodeIo;
use std::collections::BTreeMap;

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
/// How often each node's host runs its housekeeping pass (as in the server).
pub const HOUSEKEEPING_US: u64 = 100_000;
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
    /// Watch events the watchers received and checked, their resumptions on another
    /// connection, and the `Compacted` answers they got.
    pub watch_events: u64,
    pub watch_resumes: u64,
    pub watch_compacted: u64,
    pub failure: Option<Failure>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Faults,
    Liveness,
}

/// Everything but the hosts: what the simulated drivers, clients and faults act on. Kept apart
/// from the hosts so that a host can be driven while its driver reaches the rest.
struct World {
    opts: SimOptions,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<NodeIo>,
    /// What the checks remember about each node.
    records: Vec<checks::NodeRecord>,
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
    next_hist_client: u64,
    heal_gen: u64,
    /// Nodes an event reached, checked at the end of the step.
    touched: Vec<usize>,
    kv_cfg: KvConfig,
    append_bytes: usize,
    inflight: usize,
    /// Request ids of the fault injector's own requests (membership, transfers).
    next_admin_id: u64,
    /// The first failure a driver hook saw during the current step.
    failure: Option<(FailureKind, String)>,
    watchers: Vec<watch::SimWatcher>,
    oracle: watch::Oracle,
    /// The change history each node keeps for watches (small in some runs, so that watchers
    /// meet `Compacted`).
    watch_history: usize,
    /// The voters every initial member is started with (`--cluster`).
    initial_membership: Membership,
}

impl World {
    fn at(&mut self, delay_us: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_us, self.seq), ev);
    }

    /// One frame on a client link (requests, answers, watch streams): lost (`None`, at
    /// `client_loss` while faults run) or delivered after this many µs.
    fn client_link_delay(&mut self) -> Option<u64> {
        if self.phase == Phase::Faults && self.rng.chance(self.fp.client_loss) {
            return None;
        }
        Some(self.rng.between(200, 2_000))
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.opts.verbose {
            println!("{:>10.3}ms {}", self.now as f64 / 1000.0, what);
        }
    }

    /// Records a failure seen where it cannot be returned (a driver hook); the step reports it.
    fn fail(&mut self, r: Check) {
        if let Err(e) = r {
            self.failure.get_or_insert(e);
        }
    }

    fn take_failure(&mut self) -> Check {
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub struct Sim {
    /// One host per node; None while the node is down.
    hosts: Vec<Option<Host>>,
    w: World,
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
        let membership =
            Membership::of_voters(ids[..voters].iter().map(|&id| (id, node::addr(id))));
        let boot = crate::raft::Boot::bootstrap(&membership);
        let kv_cfg = KvConfig {
            session_ttl_ms: fp.session_ttl_ms,
            ..KvConfig::default()
        };
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let incarnation = 1 + rng.below(u64::MAX - 1);
                if i < voters {
                    NodeIo::new(
                        id,
                        SimDisk::with_boot(&boot),
                        incarnation,
                        node::StartAs::Initial,
                    )
                } else {
                    NodeIo::new(id, SimDisk::new(), incarnation, node::StartAs::Joiner)
                }
            })
            .collect();
        let mut net = Network::new(ids.clone());
        net.randomize(&mut rng, fp.loss_max, fp.dup_max, fp.delay_us);
        let append_bytes = rng.between(fp.append_bytes.0, fp.append_bytes.1) as usize;
        let inflight = rng.between(fp.inflight.0, fp.inflight.1) as usize;
        let n = ids.len();
        let watch_history = [16, 64, 100_000][(opts.seed % 3) as usize];
        let clients = (0..opts.clients.max(1))
            .map(|c| {
                let mut cl = Client::new(c, n, c as u64);
                cl.reader = c < fp.reader_clients;
                cl.filler = fp.filler_keys / opts.clients.max(1);
                cl
            })
            .collect();
        Sim {
            hosts: (0..n).map(|_| None).collect(),
            w: World {
                next_hist_client: opts.clients.max(1) as u64,
                opts,
                rng,
                now: 0,
                seq: 0,
                queue: BTreeMap::new(),
                records: (0..n).map(|_| checks::NodeRecord::default()).collect(),
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
                heal_gen: 0,
                touched: Vec::new(),
                kv_cfg: kv_cfg.clone(),
                append_bytes,
                inflight,
                next_admin_id: 1,
                failure: None,
                watchers: watch::watchers_for(n),
                oracle: watch::Oracle::new(kv_cfg.clone()),
                watch_history,
                initial_membership: membership,
            },
        }
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
                    at_us: sim.w.now,
                })
            }
        };
        let w = &sim.w;
        SimReport {
            seed: w.opts.seed,
            voters: w.voters,
            profile: w.profile_name.clone(),
            trace_hash: w.trace.0,
            steps: w.steps,
            simulated_us: w.now,
            ops: w.history.len(),
            ops_completed: w.history.iter().filter(|o| o.ret.is_some()).count(),
            watch_events: w.watchers.iter().map(|x| x.events).sum(),
            watch_resumes: w.watchers.iter().map(|x| x.resumes).sum(),
            watch_compacted: w.watchers.iter().map(|x| x.compacted).sum(),
            failure,
        }
    }

    fn run_inner(&mut self) -> Result<(), Failure> {
        let w = &self.w;
        w.log(format_args!(
            "seed {} voters {} nodes {} profile {}",
            w.opts.seed,
            w.voters,
            w.nodes.len(),
            w.profile_name
        ));
        let wrap = |s: &Sim, r: Check| {
            r.map_err(|(kind, detail)| Failure {
                kind,
                detail,
                at_us: s.w.now,
            })
        };
        for ni in 0..self.hosts.len() {
            let r = self.restart(ni);
            wrap(self, r)?;
        }
        for c in 0..self.w.clients.len() {
            let d = self.w.rng.between(0, 50_000);
            self.w.at(d, Event::ClientNext(c));
        }
        for wi in 0..self.w.watchers.len() {
            self.w.watch_open(wi);
            let d = self.w.rng.between(0, 100_000);
            self.w.at(d, Event::WatchTick(wi));
        }
        let g = self.w.rng.between(self.w.fp.gap_us.0, self.w.fp.gap_us.1);
        self.w.at(g, Event::Fault);
        loop {
            if self.w.phase == Phase::Faults && self.w.steps >= self.w.opts.steps {
                let r = self.start_liveness();
                wrap(self, r)?;
            }
            if self.w.phase == Phase::Liveness {
                if self.w.clients.iter().all(|c| c.current.is_none()) {
                    break;
                }
                if self.w.now > self.w.deadline_us || self.w.steps > MAX_EVENTS {
                    return Err(self.liveness_failure());
                }
            }
            let Some(((t, _), ev)) = self.w.queue.pop_first() else {
                break;
            };
            self.w.now = t;
            self.w.steps += 1;
            let r = self.process(ev);
            wrap(self, r)?;
            let r = self.check_touched();
            wrap(self, r)?;
        }
        let r = self.check_replicas();
        wrap(self, r)?;
        if let Err(e) = lincheck::check(&self.w.history) {
            return Err(Failure {
                kind: FailureKind::Linearizability,
                detail: e.to_string(),
                at_us: self.w.now,
            });
        }
        Ok(())
    }

    fn liveness_failure(&self) -> Failure {
        let pending: Vec<String> = self
            .w
            .clients
            .iter()
            .filter_map(|c| {
                c.current
                    .as_ref()
                    .map(|k| format!("c{}:{:?}", c.index, k.op))
            })
            .collect();
        let roles: Vec<String> = self
            .hosts
            .iter()
            .zip(&self.w.nodes)
            .map(|(h, n)| match h {
                Some(h) => {
                    let r = h.raft();
                    let voters: Vec<u64> = r.membership().voters().map(|v| v.0).collect();
                    let lost = r
                        .lost_entries()
                        .map(|l| format!(" lost≤{:?}/{:?}", l.index, l.term))
                        .unwrap_or_default();
                    format!(
                        "{:?}:{:?}/{:?} log {:?}/{:?} voters {voters:?}{lost}",
                        n.id,
                        r.role(),
                        r.term(),
                        r.last_index(),
                        r.last_term()
                    )
                }
                None if n.refused => format!("{:?}:refused", n.id),
                None if n.prober.is_some() => format!("{:?}:asking", n.id),
                None => format!("{:?}:down", n.id),
            })
            .collect();
        Failure {
            kind: FailureKind::Liveness,
            detail: format!(
                "requests still pending {} election timeouts after healing: {} (nodes {})",
                LIVENESS_ELECTIONS,
                pending.join(", "),
                roles.join(" ")
            ),
            at_us: self.w.now,
        }
    }

    fn start_liveness(&mut self) -> Check {
        self.w
            .log(format_args!("fault phase over: heal, restart, liveness"));
        self.w.phase = Phase::Liveness;
        self.w.net.heal();
        self.w.net.calm();
        for ni in 0..self.hosts.len() {
            if self.hosts[ni].is_none() {
                self.restart(ni)?;
            }
        }
        self.w.deadline_us = self.w.now + LIVENESS_ELECTIONS * ELECTION_MAX_US;
        Ok(())
    }

    fn process(&mut self, ev: Event) -> Check {
        events::hash_event(&mut self.w.trace, self.w.now, &ev);
        match ev {
            Event::Tick(ni, inc) => self.on_tick(ni, inc),
            Event::Housekeeping(ni, inc) => self.on_housekeeping(ni, inc),
            Event::Turn(ni, inc) => self.on_turn(ni, inc),
            Event::Deliver {
                msg,
                from_inc,
                to_inc,
            } => self.deliver(msg, from_inc, to_inc),
            Event::Probe { to, probe, reply } => self.on_probe(to, probe, reply),
            Event::ProbeTick(ni, inc) => self.on_probe_tick(ni, inc),
            Event::Replace(ni) => self.replace(ni),
            Event::SyncDone(ni, inc, upto) => self.sync_done(ni, inc, upto),
            Event::ToNode { node, conn, frame } => self.client_frame(node, conn, &frame),
            Event::ToClient { client, frame } => self.w.client_answer(client, &frame),
            Event::ClientTimeout(c, op_id, attempt) => {
                self.w.client_timeout(c, op_id, attempt);
                Ok(())
            }
            Event::ClientSend(c, op_id, attempt) => {
                self.w.client_resend(c, op_id, attempt);
                Ok(())
            }
            Event::ClientNext(c) => {
                self.w.client_next(c);
                Ok(())
            }
            Event::Fault => {
                if self.w.phase != Phase::Faults {
                    return Ok(());
                }
                if let Some(a) = self.w.fp.pick(&mut self.w.rng) {
                    self.fault(a)?;
                }
                let g = self.w.rng.between(self.w.fp.gap_us.0, self.w.fp.gap_us.1);
                self.w.at(g, Event::Fault);
                Ok(())
            }
            Event::Restart(ni) => {
                if self.hosts[ni].is_some() {
                    return Ok(());
                }
                self.restart(ni)
            }
            Event::Crash(ni, inc, down) => {
                if self.w.phase != Phase::Faults || self.w.nodes[ni].inc != inc {
                    return Ok(());
                }
                self.crash(ni, down)
            }
            Event::Heal(g) => {
                if g == self.w.heal_gen {
                    self.w.net.heal();
                    self.w.log(format_args!("network healed"));
                }
                Ok(())
            }
            Event::WatchToNode {
                node,
                watcher,
                conn,
                frame,
            } => self.client_frame_on(node, watch::WATCH_CONN_BASE + watcher, conn, &frame),
            Event::ToWatcher {
                watcher,
                conn,
                frame,
            } => self.w.watch_frame_in(watcher, conn, &frame),
            Event::WatchTick(wi) => {
                self.w.watch_tick(wi);
                Ok(())
            }
        }
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
