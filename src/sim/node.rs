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
use super::*;
use crate::host::{HostConfig, Now, Output, ReplyTo};
use crate::raft::{Config, Raft, Role};
use crate::rng::derive_seed;
use crate::storage::{LogStorage, WriteBatch};
use crate::wire::client::{
    encode_response, encode_value_response, frame_request_id, FrameLimits, Response,
};
use std::collections::VecDeque;
use std::time::Duration;

/// The connection number the fault injector's own requests (membership changes, transfers)
/// arrive on; their answers are only traced.
pub(super) const ADMIN: usize = usize::MAX;

/// A simulated node's address, as the membership records it.
pub(super) fn addr(id: NodeId) -> String {
    format!("sim:{}", id.0)
}

/// One node's driver-side state: its disk and syncer, and its life.
pub(super) struct NodeIo {
    pub id: NodeId,
    pub disk: SimDisk,
    /// Bumped at each crash and restart so that events of an earlier life are ignored.
    pub inc: u64,
    syncing: bool,
    /// (disk item number, host token) of items written and not yet reported durable.
    tokens: VecDeque<(u64, u64)>,
    turn_scheduled: bool,
}

impl NodeIo {
    pub fn new(id: NodeId, disk: SimDisk) -> NodeIo {
        NodeIo {
            id,
            disk,
            inc: 0,
            syncing: false,
            tokens: VecDeque::new(),
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
        if w.phase == Phase::Faults && w.rng.chance(w.fp.client_loss) {
            return;
        }
        let d = w.rng.between(200, 2_000);
        w.at(
            d,
            Event::ToClient {
                client: to.conn,
                frame,
            },
        );
    }

    /// Records a disk item written for `token`.
    fn written(&mut self, token: u64, r: std::io::Result<()>) {
        let node = &mut self.w.nodes[self.ni];
        match r {
            Ok(()) => node.tokens.push_back((node.disk.written(), token)),
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
        for d in w.net.route(m.from, m.to, &mut w.rng) {
            w.at(d, Event::Deliver(m.clone()));
        }
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

    fn submit_batch(&mut self, token: u64, batch: WriteBatch) {
        let r = self.w.nodes[self.ni].disk.write(&batch);
        self.written(token, r);
    }

    fn submit_snapshot(&mut self, token: u64, snapshot: Snapshot) {
        let r = self.w.nodes[self.ni].disk.write_snapshot(&snapshot);
        self.written(token, r);
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

    pub(super) fn deliver(&mut self, m: Message) -> Check {
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
            h.peer_message(m);
        }
        self.drive(ni)
    }

    /// A request frame arrives at node `ni` on connection `conn`.
    pub(super) fn client_frame(&mut self, ni: usize, conn: usize, frame: &[u8]) -> Check {
        if !self.live(ni, None) {
            return Ok(());
        }
        let to = ReplyTo {
            conn,
            generation: 0,
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
        while let Some(&(item, token)) = self.w.nodes[ni].tokens.front() {
            if item > synced {
                break;
            }
            self.w.nodes[ni].tokens.pop_front();
            if let Some(h) = self.hosts[ni].as_mut() {
                h.durable(&mut SimOut { w: &mut self.w, ni }, token)
                    .map_err(|f| (FailureKind::Contract, f.0))?;
            }
        }
        self.drive(ni)
    }

    /// Ends loop turns until the core has no more output, as the event loop's zero-timeout
    /// polls do; a snapshot still being encoded gets another turn a little later, so that
    /// other events come in between its slices. Then starts a sync of what was written.
    pub(super) fn drive(&mut self, ni: usize) -> Check {
        self.w.touched.push(ni);
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
        let w = &mut self.w;
        if slicing && !w.nodes[ni].turn_scheduled {
            w.nodes[ni].turn_scheduled = true;
            let d = w.rng.between(w.fp.turn_gap_us.0, w.fp.turn_gap_us.1);
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
        if let (Some(b), false) = (w.opts.bug, w.opts.control) {
            c.bugs = b.host_bugs();
        }
        c
    }

    /// Starts node `ni` (again) from what its disk holds durably.
    pub(super) fn restart(&mut self, ni: usize) -> Check {
        let id = self.w.nodes[ni].id;
        let raft_cfg = self.raft_config(id);
        let host_cfg = self.host_config();
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
        if self.hosts[ni].take().is_none() {
            return Ok(());
        }
        let w = &mut self.w;
        let torn = w.fp.torn;
        let node = &mut w.nodes[ni];
        node.inc += 1;
        node.syncing = false;
        node.turn_scheduled = false;
        node.tokens.clear();
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
