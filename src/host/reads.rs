//! Reads: linearizable ones gathered during a loop turn share one ReadIndex round (thesis
//! §6.4), then wait until the dictionary has applied the round's index; stale ones are answered
//! at once from the local state. Scans are answered a page at a time: at most `SCAN_MAX_ITEMS`
//! items and about `SCAN_MAX_BYTES`; the client continues with the last key as `start_after`.
//! Must not serve a linearizable read before both its round is confirmed and its index applied.

use super::*;
use crate::raft::{ReadState, Role};

/// Items returned by one scan page at most.
pub const SCAN_MAX_ITEMS: u32 = 1000;
/// Key and value bytes in one scan page at most (beyond its first item).
pub const SCAN_MAX_BYTES: usize = 1 << 20;
/// Items taken from kv per step while filling a scan page.
const SCAN_STEP_ITEMS: usize = 16;

/// Items of a scan page and whether more follow.
type ScanPage = (Vec<(Vec<u8>, Vec<u8>, u64)>, bool);

/// What a read asks, kept until it may be served.
#[derive(Debug)]
pub(super) enum Query {
    Get(Vec<u8>),
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    },
    Len,
    /// A snapshot for a backup (backup.rs), taken once the read may be served.
    SnapshotSave,
}

#[derive(Debug)]
pub(super) struct ReadWaiter {
    pub to: ReplyTo,
    pub query: Query,
}

/// The linearizable reads in their three stages.
#[derive(Default)]
pub(super) struct Reads {
    /// Gathered this turn; one round starts at the turn's end.
    new: Vec<ReadWaiter>,
    /// Waiting for their round's confirmation: (context, started at, reads).
    rounds: VecDeque<(u64, Duration, Vec<ReadWaiter>)>,
    /// Confirmed, waiting for kv to apply the index.
    ready: VecDeque<(LogIndex, Vec<ReadWaiter>)>,
    next_ctx: u64,
}

impl Reads {
    /// Reads not yet confirmed: those a leader that steps down can no longer serve.
    pub(super) fn drain_unconfirmed(&mut self) -> Vec<ReadWaiter> {
        let mut v: Vec<ReadWaiter> = self.rounds.drain(..).flat_map(|r| r.2).collect();
        v.append(&mut self.new);
        v
    }

    /// Every read still waiting.
    pub(super) fn drain_all(&mut self) -> Vec<ReadWaiter> {
        let mut v = self.drain_unconfirmed();
        v.extend(self.ready.drain(..).flat_map(|r| r.1));
        v
    }
}

impl Host {
    pub(super) fn queue_read<O: Output>(&mut self, out: &mut O, to: ReplyTo, query: Query) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return out.answer(to, &Response::Error(e));
        }
        self.reads.new.push(ReadWaiter { to, query });
    }

    pub(super) fn start_read_round<O: Output>(&mut self, out: &mut O) {
        if self.reads.new.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.new);
        self.reads.next_ctx += 1;
        let ctx = self.reads.next_ctx;
        match self.raft.read_index(ctx) {
            Ok(()) => self.reads.rounds.push_back((ctx, self.now.mono, reads)),
            Err(e) => {
                let err = self.propose_error(e);
                for w in reads {
                    out.answer(w.to, &Response::Error(err.clone()));
                }
            }
        }
    }

    /// Confirmed rounds move on to wait for their index; whatever may be served is.
    pub(super) fn on_read_states<O: Output>(&mut self, out: &mut O, states: Vec<ReadState>) {
        for rs in states {
            if let Some(pos) = self.reads.rounds.iter().position(|r| r.0 == rs.ctx) {
                let (_, _, waiters) = self.reads.rounds.remove(pos).expect("position found");
                self.reads.ready.push_back((rs.index, waiters));
            }
        }
        self.serve_ready_reads(out);
    }

    pub(super) fn serve_ready_reads<O: Output>(&mut self, out: &mut O) {
        let applied = self.kv.applied_index();
        let early = Bugs::on(self.cfg.bugs.read_before_applied);
        while let Some((index, _)) = self.reads.ready.front() {
            if *index > applied && !early {
                break;
            }
            let (_, waiters) = self.reads.ready.pop_front().expect("front exists");
            for w in waiters {
                match w.query {
                    Query::SnapshotSave => self.snapshot_save_confirmed(out, w.to),
                    q => self.answer_query(out, w.to, &q),
                }
            }
        }
    }

    /// Times out reads whose round never completed (leadership lost or no quorum).
    pub(super) fn expire_reads<O: Output>(&mut self, out: &mut O) {
        while let Some((_, since, _)) = self.reads.rounds.front() {
            if self.now.mono.saturating_sub(*since) < READ_TIMEOUT {
                break;
            }
            let (_, _, waiters) = self.reads.rounds.pop_front().expect("front exists");
            for w in waiters {
                out.answer(w.to, &Response::Error(ErrorKind::Timeout));
            }
        }
    }

    /// Answers a `Get` from the local state, the value borrowed from kv.
    pub(super) fn answer_get<O: Output>(&self, out: &mut O, to: ReplyTo, key: &[u8]) {
        let applied = self.kv.applied_index().0;
        match self.kv.get(key) {
            Some((v, rev)) => out.answer_value(to, Some(v), rev.0, applied),
            None => out.answer_value(to, None, 0, applied),
        }
    }

    /// Answers a read from the local state (called once the read may be served).
    pub(super) fn answer_query<O: Output>(&self, out: &mut O, to: ReplyTo, q: &Query) {
        let applied = self.kv.applied_index().0;
        match q {
            Query::Get(key) => self.answer_get(out, to, key),
            Query::Scan {
                prefix,
                start_after,
                limit,
            } => {
                let (items, more) = self.scan_page(prefix, start_after.as_deref(), *limit);
                out.answer(
                    to,
                    &Response::ScanPage {
                        items,
                        more,
                        applied_index: applied,
                    },
                );
            }
            Query::Len => out.answer(
                to,
                &Response::Len {
                    len: self.kv.len() as u64,
                    applied_index: applied,
                },
            ),
            // Only ever served through `snapshot_save_confirmed`.
            Query::SnapshotSave => out.answer(
                to,
                &Response::Error(ErrorKind::Invalid("a snapshot is not a stale read".into())),
            ),
        }
    }

    /// One page of a scan: at most `limit` (capped at `SCAN_MAX_ITEMS`) items and, past the
    /// first, at most `SCAN_MAX_BYTES` of keys and values, so that an answer always fits a
    /// client's frame limit. Taken from kv in small steps so nothing large is copied in vain.
    fn scan_page(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: u32) -> ScanPage {
        let want = limit.clamp(1, SCAN_MAX_ITEMS) as usize;
        let mut items: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        let mut bytes = 0usize;
        let mut after: Option<Vec<u8>> = start_after.map(|s| s.to_vec());
        loop {
            let step = (want - items.len()).min(SCAN_STEP_ITEMS);
            let (chunk, more) = self.kv.scan(prefix, after.as_deref(), step);
            for (k, v, r) in chunk {
                if !items.is_empty() && bytes + k.len() + v.len() > SCAN_MAX_BYTES {
                    return (items, true);
                }
                bytes += k.len() + v.len();
                after = Some(k.clone());
                items.push((k, v, r.0));
            }
            if !more {
                return (items, false);
            }
            if items.len() >= want {
                return (items, true);
            }
        }
    }
}
