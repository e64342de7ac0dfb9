//! The simulated driver of each node's host: what the event loop is to a server. It implements
//! `host::Output` over the simulated network (messages routed with loss, duplication, delay and
//! partitions), the simulated clients (answers travel back as response frames) and the node's
//! `SimDisk` (batches and snapshots queued, made durable in order by a simulated syncer whose
//! completions are reported to the host as tokens). It hands the host its events — ticks,
//! housekeeping, messages, request frames, durable tokens — and ends a loop turn after each
//! (more turns while a snapshot is encoded in slices). It crashes and restarts nodes. Must not
//! make any decision the host makes; the checker hooks only observe.

use super::checks::ack_check;
use super::client::split_request_id;
use super::events::Event;
use super::watch::WATCH_CONN_BASE;
use super::*;
use crate::bootstrap::{Prober, Verdict, PROBE_INTERVAL};
use crate::host::{HostConfig, Now, Output, ReplyTo};
use crate::raft::{Config, Raft, Role};
use crate::rng::derive_seed;
use crate::storage::{LogStorage, WriteBatch};
use crate::wire::client::{
    encode_response, encode_value_response, frame_request_id, FrameLimits, Response,
};
use crate::wire::peer::Probe;
use std::collections::VecDeque;
use std::time::Duration;

/// The connection number the fault injector's own requests (membership changes, transfers)
/// arrive on; their answers are only traced.
pub(super) const ADMIN: usize = usize::MAX;

/// A simulated node's address, as the membership records it.
pub(super) fn addr(id: NodeId) -> String {
    format!("sim:{}", id.0)
}

/// How a node is started, as its command line would say: an initial member (`--cluster`
/// listing the initial voters, `--initial-cluster-state auto`), or a server added later
/// (`--join`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StartAs {
    Initial,
    Joiner,
}

/// One node's driver-side state: its disk and syncer, and its life.
pub(super) struct NodeIo {
    pub id: NodeId,
    pub disk: SimDisk,
    /// The data directory's incarnation and the peers' pinned (kept with the disk: a wipe
    /// draws a new incarnation and forgets the pins).
    pub incarnation: u64,
    pub pins: BTreeMap<NodeId, u64>,
    pub start_as: StartAs,
    /// Asking the initial voters whether its empty disk may bootstrap (no host meanwhile).
    pub prober: Option<Prober>,
    /// Refused to start: its storage was lost and the cluster knows it (until the operator
    /// starts it again with `--join`, `Event::Replace`).
    pub refused: bool,
    /// The operator's replacement is under way (from the refusal until it is a member again).
    pub replacing: bool,
    /// The next crash loses pending writes whole, without tearing one (a second fault on top
    /// of a lost storage must not be a third).
    pub clean_crash: bool,
    /// Bumped at each crash and restart so that events of an earlier life are ignored.
    pub inc: u64,
    syncing: bool,
    /// (disk item number, host token, messages to send once durable, quiet) of items written
    /// and not yet durable.
    tokens: VecDeque<(u64, u64, Vec<Message>, bool)>,
    /// Quiet tokens durable and not yet reported: the host hears of them at the node's next
    /// turn, as the server's loop does when its syncer does not wake it.
    unheard: Vec<u64>,
    /// The host called `await_storage`: the next sync is reported at once.
    wake_wanted: bool,
    turn_scheduled: bool,
}

impl NodeIo {
    pub fn new(id: NodeId, disk: SimDisk, incarnation: u64, start_as: StartAs) -> NodeIo {
        NodeIo {
            id,
            disk,
            incarnation,
            pins: BTreeMap::new(),
            start_as,
            prober: None,
            refused: false,
            replacing: false,
            clean_crash: false,
            inc: 0,
            syncing: false,
            tokens: VecDeque::new(),
            unheard: Vec::new(),
            wake_wanted: false,
            turn_scheduled: false,
        }
    }
}

/// The host's `Output` for node `ni`: everything it asks goes through the simulated world.
struct SimOut<'a> {
    w: &'a mut World,
    ni: usize,
}

impl SimOut<'_> {
    /// Sends a response frame back to its client, unless the link loses it.
    fn reply(&mut self, to: ReplyTo, frame: Vec<u8>) {
        let w = &mut *self.w;
        if to.conn != ADMIN && to.conn >= WATCH_CONN_BASE {
            return w.watch_frame_out(to.conn - WATCH_CONN_BASE, to.generation, frame);
        }
        if to.conn == ADMIN {
            let (id, resp) = crate::wire::client::decode_response(&frame, &FrameLimits::default())
                .map(|(id, r)| (id, format!("{r:?}")))
                .unwrap_or((to.request_id, "an undecodable answer".into()));
            w.log(format_args!(
                "{:?} answers admin request {id}: {resp}",
                w.nodes[self.ni].id
            ));
            return;
        }
        if w.opts.verbose {
            let (op_id, attempt) = split_request_id(to.request_id);
            w.log(format_args!(
                "{:?} answers client {} op {op_id} attempt {attempt}",
                w.nodes[self.ni].id, to.conn
            ));
        }
        let Some(d) = w.client_link_delay() else {
            return;
        };
        w.at(
            d,
            Event::ToClient {
                client: to.conn,
                frame,
            },
        );
    }

    /// Records a disk item written for `token`.
    fn written(
        &mut self,
        token: u64,
        r: std::io::Result<()>,
        then_send: Vec<Message>,
        quiet: bool,
    ) {
        let node = &mut self.w.nodes[self.ni];
        match r {
            Ok(()) => node
                .tokens
                .push_back((node.disk.written(), token, then_send, quiet)),
            Err(e) => self.w.fail(Err((FailureKind::Contract, e.to_string()))),
        }
    }
}

impl Output for SimOut<'_> {
    fn send(&mut self, m: Message) {
        let w = &mut *self.w;
        let r = ack_check(w, self.ni, &m);
        w.fail(r);
        if matches!(m.body, MessageBody::RequestVoteResponse { granted: true })
            && w.phase == Phase::Faults
            && w.rng.chance(w.fp.crash_on_vote)
        {
            let inc = w.nodes[self.ni].inc;
            let d = w.rng.between(0, 500);
            let down = w.rng.between(w.fp.quick_down_us.0, w.fp.quick_down_us.1);
            w.at(d, Event::Crash(self.ni, inc, down));
        }
        let to = m.to.0 as usize;
        if to == 0 || to > w.nodes.len() || m.to == m.from {
            return;
        }
        let from_inc = w.nodes[self.ni].incarnation;
        let to_inc = w.nodes[self.ni].pins.get(&m.to).copied().unwrap_or(0);
        for d in w.net.route(m.from, m.to, &mut w.rng) {
            w.at(
                d,
                Event::Deliver {
                    msg: m.clone(),
                    from_inc,
                    to_inc,
                },
            );
        }
    }

    fn pin_peer(&mut self, peer: NodeId, incarnation: u64) {
        let me = self.w.nodes[self.ni].id;
        self.w
            .log(format_args!("{me:?} pins {peer:?} as {incarnation:016x}"));
        self.w.nodes[self.ni].pins.insert(peer, incarnation);
    }

    fn unpin_peer(&mut self, peer: NodeId) {
        let me = self.w.nodes[self.ni].id;
        self.w.log(format_args!("{me:?} unpins {peer:?}"));
        self.w.nodes[self.ni].pins.remove(&peer);
    }

    fn send_probe(&mut self, to: NodeId, known_as: u64, reply: bool, member: bool) {
        let w = &mut *self.w;
        let from = w.nodes[self.ni].id;
        let probe = Probe {
            from,
            incarnation: w.nodes[self.ni].incarnation,
            known_as,
            member,
        };
        route_probe(w, from, to, probe, reply);
    }

    fn answer(&mut self, to: ReplyTo, resp: &Response) {
        let w = &mut *self.w;
        let write_done = matches!(
            resp,
            Response::Written { .. } | Response::Deleted { .. } | Response::CasOk { .. }
        );
        if write_done && w.phase == Phase::Faults && w.rng.chance(w.fp.crash_after_reply) {
            let inc = w.nodes[self.ni].inc;
            let d = w.rng.between(w.fp.reply_crash_us.0, w.fp.reply_crash_us.1);
            let down = w.rng.between(w.fp.quick_down_us.0, w.fp.quick_down_us.1);
            w.at(d, Event::Crash(self.ni, inc, down));
        }
        let mut frame = Vec::new();
        encode_response(to.request_id, resp, &mut frame);
        self.reply(to, frame);
    }

    fn answer_value(&mut self, to: ReplyTo, value: Option<&[u8]>, revision: u64, applied: u64) {
        let mut frame = Vec::new();
        encode_value_response(to.request_id, value, revision, applied, &mut frame);
        self.reply(to, frame);
    }

    fn stream(&mut self, to: ReplyTo, encode: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut frame = Vec::new();
        encode(&mut frame);
        self.reply(to, frame);
    }

    /// Nothing waits unsent (delivery is scheduled at once), but a watcher's earlier
    /// connection is closed.
    fn pending_bytes(&self, to: ReplyTo) -> Option<usize> {
        if to.conn != ADMIN && to.conn >= WATCH_CONN_BASE {
            let w = self.w.watchers.get(to.conn - WATCH_CONN_BASE)?;
            return w.is_current(to.generation).then_some(0);
        }
        Some(0)
    }

    fn submit_batch(
        &mut self,
        token: u64,
        batch: WriteBatch,
        then_send: Vec<Message>,
        quiet: bool,
    ) {
        let r = self.w.nodes[self.ni].disk.write(&batch);
        self.written(token, r, then_send, quiet);
    }

    fn await_storage(&mut self) {
        self.w.nodes[self.ni].wake_wanted = true;
    }

    fn submit_snapshot(&mut self, token: u64, snapshot: Snapshot) {
        let r = self.w.nodes[self.ni].disk.write_snapshot(&snapshot);
        self.written(token, r, Vec::new(), false);
    }

    fn appended(&mut self, raft: &Raft, entries: &[Entry]) {
        let w = &mut *self.w;
        let id = raft.id();
        let leader = raft.role() == Role::Leader;
        for e in entries {
            let prev = if e.index.0 <= 1 {
                Some(Term(0))
            } else {
                raft.term_at(e.index.prev())
            };
            let r = w.checker.on_append(id, e, prev);
            w.fail(r);
            if leader {
                let r = w.checker.single_conf_change(raft, e);
                w.fail(r);
            }
        }
    }

    fn applied(&mut self, entry: &Entry) {
        let id = self.w.nodes[self.ni].id;
        let r = self.w.checker.on_apply(id, entry);
        self.w.fail(r);
        self.w.oracle.on_apply(entry);
    }
}

impl Sim {
    fn now(&self) -> Now {
        Now {
            mono: Duration::from_micros(self.w.now),
            wall_ms: self.w.now / 1000,
        }
    }

    /// The live host of node `ni` in life `inc` (None: down, or an event of an earlier life).
    fn live(&self, ni: usize, inc: Option<u64>) -> bool {
        self.hosts[ni].is_some() && inc.map_or(true, |i| self.w.nodes[ni].inc == i)
    }

    pub(super) fn on_tick(&mut self, ni: usize, inc: u64) -> Check {
        if !self.live(ni, Some(inc)) {
            return Ok(());
        }
        if let Some(h) = self.hosts[ni].as_mut() {
            h.tick();
        }
        self.w.at(TICK_US, Event::Tick(ni, inc));
        self.drive(ni)
    }

    pub(super) fn on_housekeeping(&mut self, ni: usize, inc: u64) -> Check {
        if !self.live(ni, Some(inc)) {
            return Ok(());
        }
        let now = self.now();
        if let Some(h) = self.hosts[ni].as_mut() {
            h.housekeeping(&mut SimOut { w: &mut self.w, ni }, now);
        }
        self.w.at(HOUSEKEEPING_US, Event::Housekeeping(ni, inc));
        self.drive(ni)
    }

    pub(super) fn on_turn(&mut self, ni: usize, inc: u64) -> Check {
        if !self.live(ni, Some(inc)) {
            return Ok(());
        }
        self.w.nodes[ni].turn_scheduled = false;
        self.drive(ni)
    }

    pub(super) fn deliver(&mut self, m: Message, from_inc: u64, to_inc: u64) -> Check {
        let ni = m.to.0 as usize - 1;
        if !self.live(ni, None) {
            return Ok(());
        }
        if self.w.opts.verbose {
            self.w.log(format_args!(
                "deliver {:?}→{:?} {:?} {:?}",
                m.from, m.to, m.term, m.body
            ));
        }
        if let Some(h) = self.hosts[ni].as_mut() {
            h.peer_message(&mut SimOut { w: &mut self.w, ni }, m, from_inc, to_inc);
        }
        self.drive(ni)
    }

    /// A probe or its answer reaches node `to`: a running host answers it; a node still asking
    /// (`NodeIo::prober`) takes it as an answer, and answers a probe.
    pub(super) fn on_probe(&mut self, to: usize, p: Probe, reply: bool) -> Check {
        if let Some(h) = self.hosts[to].as_mut() {
            if !reply {
                h.probe(
                    &mut SimOut {
                        w: &mut self.w,
                        ni: to,
                    },
                    &p,
                );
            }
            return self.drive(to);
        }
        let w = &mut self.w;
        let Some(prober) = w.nodes[to].prober.as_mut() else {
            return Ok(()); // down: the datagram is lost
        };
        if reply {
            prober.on_reply(&p);
        } else {
            let known_as = prober.on_probe(&p);
            let me = w.nodes[to].id;
            let answer = Probe {
                from: me,
                incarnation: w.nodes[to].incarnation,
                known_as,
                member: false,
            };
            route_probe(w, me, p.from, answer, true);
        }
        self.probe_verdict(to)
    }

    /// The next round of probes of a node asking its peers, and its verdict so far.
    pub(super) fn on_probe_tick(&mut self, ni: usize, inc: u64) -> Check {
        let w = &mut self.w;
        if w.nodes[ni].inc != inc {
            return Ok(());
        }
        let now = Duration::from_micros(w.now);
        let (me, incarnation) = (w.nodes[ni].id, w.nodes[ni].incarnation);
        let Some(prober) = w.nodes[ni].prober.as_mut() else {
            return Ok(());
        };
        let due = prober.due_probes(now);
        let next = prober
            .next_probe_at()
            .saturating_sub(now)
            .max(PROBE_INTERVAL);
        for to in due {
            let p = Probe {
                from: me,
                incarnation,
                known_as: 0,
                member: false,
            };
            route_probe(w, me, to, p, false);
        }
        w.at(next.as_micros() as u64, Event::ProbeTick(ni, inc));
        self.probe_verdict(ni)
    }

    /// Acts on a probing node's verdict: bootstrap and start, or refuse (until replaced).
    fn probe_verdict(&mut self, ni: usize) -> Check {
        let Some(verdict) = self.w.nodes[ni].prober.as_ref().map(|p| p.verdict()) else {
            return Ok(());
        };
        match verdict {
            Verdict::Waiting => Ok(()),
            Verdict::Bootstrap { pins } => {
                let id = self.w.nodes[ni].id;
                self.w.log(format_args!(
                    "{id:?} was told by every initial voter that its empty disk is new: bootstraps"
                ));
                let node = &mut self.w.nodes[ni];
                node.prober = None;
                node.pins = pins;
                node.disk =
                    SimDisk::with_boot(&crate::raft::Boot::bootstrap(&self.w.initial_membership));
                self.start_host(ni)
            }
            Verdict::Refuse(why) => {
                let id = self.w.nodes[ni].id;
                self.w.log(format_args!("{id:?} refuses to start: {why}"));
                let node = &mut self.w.nodes[ni];
                node.prober = None;
                node.refused = true;
                node.replacing = true;
                node.inc += 1;
                let d = self.w.rng.between(50_000, 500_000);
                self.w.at(d, Event::Replace(ni));
                Ok(())
            }
        }
    }

    /// A request frame arrives at node `ni` on connection `conn`.
    pub(super) fn client_frame(&mut self, ni: usize, conn: usize, frame: &[u8]) -> Check {
        self.client_frame_on(ni, conn, 0, frame)
    }

    /// A request frame arrives at node `ni` on connection `conn` of that `generation`.
    pub(super) fn client_frame_on(
        &mut self,
        ni: usize,
        conn: usize,
        generation: u64,
        frame: &[u8],
    ) -> Check {
        if !self.live(ni, None) {
            return Ok(());
        }
        let to = ReplyTo {
            conn,
            generation,
            request_id: frame_request_id(frame).unwrap_or(0),
            op: 0,
            since: Duration::ZERO,
        };
        let now = self.now();
        if let Some(h) = self.hosts[ni].as_mut() {
            h.client_frame(&mut SimOut { w: &mut self.w, ni }, now, to, frame);
        }
        self.drive(ni)
    }

    /// The syncer of node `ni` finished: items up to `upto` are durable; tell the host which
    /// tokens that covers, in order.
    pub(super) fn sync_done(&mut self, ni: usize, inc: u64, upto: u64) -> Check {
        if !self.live(ni, Some(inc)) {
            return Ok(());
        }
        let node = &mut self.w.nodes[ni];
        node.syncing = false;
        node.disk
            .sync_through(upto)
            .map_err(|e| (FailureKind::Contract, e.to_string()))?;
        self.check_durable(ni)?;
        let synced = self.w.nodes[ni].disk.synced();
        let mut release = Vec::new();
        let mut quiet = true;
        while let Some((item, ..)) = self.w.nodes[ni].tokens.front() {
            if *item > synced {
                break;
            }
            let (_, token, msgs, q) = self.w.nodes[ni].tokens.pop_front().expect("front exists");
            self.w.nodes[ni].unheard.push(token);
            release.extend(msgs);
            quiet &= q;
        }
        // As the server's syncer does: what the sync released leaves before the host hears,
        // and only a sync something waits for takes a turn.
        let mut out = SimOut { w: &mut self.w, ni };
        crate::storage::release(release, crate::host::ack_key, |m| out.send(m));
        // The syncer takes the wish with any group, quiet or not.
        let wanted = std::mem::take(&mut self.w.nodes[ni].wake_wanted);
        if quiet && !wanted {
            self.kick_syncer(ni);
            return Ok(());
        }
        self.drive(ni)
    }

    /// Reports the tokens durable since the node's last turn, in order (the event loop drains
    /// its syncer's completions at every turn).
    fn report_unheard(&mut self, ni: usize) -> Check {
        for token in std::mem::take(&mut self.w.nodes[ni].unheard) {
            if let Some(h) = self.hosts[ni].as_mut() {
                h.durable(&mut SimOut { w: &mut self.w, ni }, token)
                    .map_err(|f| (FailureKind::Contract, f.0))?;
            }
        }
        Ok(())
    }

    /// Ends loop turns until the core has no more output, as the event loop's zero-timeout
    /// polls do; a snapshot still being encoded gets another turn a little later, so that
    /// other events come in between its slices. Then starts a sync of what was written.
    pub(super) fn drive(&mut self, ni: usize) -> Check {
        self.w.touched.push(ni);
        self.report_unheard(ni)?;
        let now = self.now();
        let mut settled = false;
        for _ in 0..100_000 {
            let Some(h) = self.hosts[ni].as_mut() else {
                return Ok(());
            };
            let r = h.end_turn(&mut SimOut { w: &mut self.w, ni }, now);
            r.map_err(|f| (FailureKind::Contract, f.0))?;
            self.w.take_failure()?;
            if !h.raft().has_ready() {
                settled = true;
                break;
            }
        }
        if !settled {
            return Err((
                FailureKind::Contract,
                format!("{:?}: the Ready loop did not settle", self.w.nodes[ni].id),
            ));
        }
        let slicing = self.hosts[ni]
            .as_ref()
            .is_some_and(|h| h.snapshot_in_progress());
        let watch_due = self.hosts[ni].as_ref().and_then(|h| h.watch_due_at());
        let w = &mut self.w;
        if slicing && !w.nodes[ni].turn_scheduled {
            w.nodes[ni].turn_scheduled = true;
            let d = w.rng.between(w.fp.turn_gap_us.0, w.fp.turn_gap_us.1);
            let inc = w.nodes[ni].inc;
            w.at(d, Event::Turn(ni, inc));
        }
        if let (Some(due), false) = (watch_due, w.nodes[ni].turn_scheduled) {
            // Watchers held back by their frame interval: a turn when they are due, as the
            // event loop's poll timeout gives one.
            w.nodes[ni].turn_scheduled = true;
            let d = (due.as_micros() as u64).saturating_sub(w.now).max(1);
            let inc = w.nodes[ni].inc;
            w.at(d, Event::Turn(ni, inc));
        }
        self.kick_syncer(ni);
        Ok(())
    }

    fn kick_syncer(&mut self, ni: usize) {
        let w = &mut self.w;
        let node = &mut w.nodes[ni];
        if node.syncing || node.disk.written() == node.disk.synced() {
            return;
        }
        node.syncing = true;
        let (inc, upto) = (node.inc, node.disk.written());
        let d = w.rng.between(w.fp.sync_us.0, w.fp.sync_us.1);
        w.at(d, Event::SyncDone(ni, inc, upto));
    }

    fn raft_config(&self, id: NodeId) -> Config {
        let w = &self.w;
        let mut c = Config::new(id);
        c.election_ticks = ELECTION_TICKS;
        c.heartbeat_ticks = HEARTBEAT_TICKS;
        c.max_append_bytes = w.append_bytes;
        c.max_inflight = w.inflight;
        // Small chunks so that snapshots travel in several pieces.
        c.snapshot_chunk_bytes = 512;
        c.snapshot_inflight_chunks = 4;
        c.promote_max_lag = 20;
        c.max_uncommitted_entries = 1_000;
        c.check_quorum = w.fp.check_quorum;
        if let (Some(b), false) = (w.opts.bug, w.opts.control) {
            c.bugs = b.raft_bugs();
        }
        c
    }

    fn host_config(&self) -> HostConfig {
        let w = &self.w;
        let mut c = HostConfig::new(FrameLimits::default().max_frame_bytes, w.fp.snapshot_every);
        c.kv = w.kv_cfg.clone();
        c.snapshot_keys_per_turn = w.fp.snapshot_keys_per_turn;
        c.watch.history.max_changes = w.watch_history;
        c.watch.progress_interval = Duration::from_micros(super::watch::PROGRESS_US);
        // Odd seeds also bound the log by bytes, at about two thirds of the entry interval's
        // memory (an entry here costs about 100 B), so both triggers get exercised; no draw
        // from the seed's generator, so every other choice of a seed stays as it was.
        c.snapshot_log_bytes = if w.opts.seed % 2 == 1 {
            w.fp.snapshot_every.saturating_mul(64)
        } else {
            u64::MAX
        };
        if let (Some(b), false) = (w.opts.bug, w.opts.control) {
            c.bugs = b.host_bugs();
        }
        c
    }

    /// Starts node `ni` (again), as its command line says: from what its disk holds durably,
    /// or, an initial voter finding its disk empty, after asking the other initial voters
    /// (`crate::bootstrap`, the server's `--initial-cluster-state auto`). A node refused for
    /// its lost storage stays down until the operator replaces it.
    pub(super) fn restart(&mut self, ni: usize) -> Check {
        let node = &self.w.nodes[ni];
        if node.refused || node.prober.is_some() {
            return Ok(());
        }
        let blank = node.disk.durable() == &disk::DiskState::default();
        let forget = self
            .w
            .opts
            .bug
            .is_some_and(|b| !self.w.opts.control && b.host_bugs().forget_lost_storage);
        if blank && node.start_as == StartAs::Initial {
            if forget {
                // The bug: bootstrap again as if the cluster were new.
                let boot = crate::raft::Boot::bootstrap(&self.w.initial_membership);
                self.w.nodes[ni].disk = SimDisk::with_boot(&boot);
            } else {
                let ids: Vec<NodeId> = self.w.initial_membership.voters().collect();
                let node = &mut self.w.nodes[ni];
                node.inc += 1;
                node.prober = Some(Prober::new(node.id, node.incarnation, &ids));
                let (id, inc) = (node.id, node.inc);
                self.w.log(format_args!(
                    "{id:?} starts with an empty disk: asks the initial voters first"
                ));
                return self.on_probe_tick(ni, inc);
            }
        }
        self.start_host(ni)
    }

    /// Starts node `ni`'s host from what its disk holds durably.
    fn start_host(&mut self, ni: usize) -> Check {
        let id = self.w.nodes[ni].id;
        let raft_cfg = self.raft_config(id);
        let mut host_cfg = self.host_config();
        host_cfg.incarnation = self.w.nodes[ni].incarnation;
        host_cfg.pins = self.w.nodes[ni].pins.clone();
        let seed = self.w.opts.seed;
        let node = &mut self.w.nodes[ni];
        node.inc += 1;
        let boot = node
            .disk
            .recover()
            .map_err(|e| (FailureKind::Contract, e.to_string()))?;
        let stored = boot.hard_state;
        node.syncing = false;
        node.turn_scheduled = false;
        node.tokens.clear();
        node.unheard.clear();
        node.wake_wanted = false;
        let host = Host::new(host_cfg, raft_cfg, boot, derive_seed(seed, id.0, node.inc))
            .map_err(|e| (FailureKind::Contract, format!("{id:?} cannot start: {e}")))?;
        let inc = node.inc;
        self.hosts[ni] = Some(host);
        self.check_restart(ni, stored)?;
        let d = self.w.nodes[ni].disk.durable();
        self.w.log(format_args!(
            "{id:?} starts (life {inc}) from {:?}, snapshot {:?}, last index {:?}",
            d.hard_state,
            d.snapshot_index(),
            d.last_index()
        ));
        let phase = self.w.rng.between(1, TICK_US);
        self.w.at(phase, Event::Tick(ni, inc));
        let phase = self.w.rng.between(1, HOUSEKEEPING_US);
        self.w.at(phase, Event::Housekeeping(ni, inc));
        self.drive(ni)
    }

    /// Stops node `ni` at once: its host and everything in flight in it are gone; its disk
    /// keeps a prefix of what was pending, perhaps torn.
    pub(super) fn crash(&mut self, ni: usize, down_us: u64) -> Check {
        if self.w.nodes[ni].prober.take().is_some() {
            // Asking its peers, nothing written: it simply starts over later.
            self.w.nodes[ni].inc += 1;
            self.w.at(down_us, Event::Restart(ni));
            return Ok(());
        }
        if self.hosts[ni].take().is_none() {
            return Ok(());
        }
        let w = &mut self.w;
        // While another server's lost storage is being repaired, a torn write here would be a
        // second loss of possibly acknowledged entries: beyond what a cluster may survive.
        let repairing = w.nodes.iter().any(|n| n.replacing);
        let torn = w.fp.torn && !std::mem::take(&mut w.nodes[ni].clean_crash) && !repairing;
        let node = &mut w.nodes[ni];
        node.inc += 1;
        node.syncing = false;
        node.turn_scheduled = false;
        node.tokens.clear();
        node.unheard.clear();
        node.wake_wanted = false;
        let kept = node.disk.crash(&mut w.rng, torn);
        let id = node.id;
        w.log(format_args!("{id:?} crashes (kept {kept} pending writes)"));
        self.check_durable(ni)?;
        self.w.at(down_us, Event::Restart(ni));
        Ok(())
    }

    /// Hands a request frame from the fault injector to node `ni` at once.
    pub(super) fn admin_request(&mut self, ni: usize, req: &crate::wire::client::Request) -> Check {
        let mut frame = Vec::new();
        let id = self.w.next_admin_id;
        self.w.next_admin_id += 1;
        crate::wire::client::encode_request(id, req, &mut frame);
        self.w.log(format_args!(
            "admin request {id} to {:?}: {req:?}",
            self.w.nodes[ni].id
        ));
        self.client_frame(ni, ADMIN, &frame)
    }
}

/// Routes a probe (or its answer) from `from` to `to` through the simulated network.
fn route_probe(w: &mut World, from: NodeId, to: NodeId, probe: Probe, reply: bool) {
    let ti = to.0 as usize;
    if ti == 0 || ti > w.nodes.len() || to == from {
        return;
    }
    for d in w.net.route(from, to, &mut w.rng) {
        w.at(
            d,
            Event::Probe {
                to: ti - 1,
                probe,
                reply,
            },
        );
    }
}
