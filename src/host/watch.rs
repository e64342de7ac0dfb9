//! Watches: client requests that stream the changes to keys under a prefix, from a start
//! revision on, out of this node's applied state (any member serves them, followers included).
//! Owns the change history (`kv::history`, fed as entries are applied) and the watchers: each
//! is a cursor into the history, served once per loop turn, in revision order, with no change
//! missed or repeated between its start and its end. Must not: send a change this node has not
//! applied, skip one silently (a watcher whose next change the history no longer holds is ended
//! with `Compacted`), or let a watcher that does not read its events hold more memory than the
//! configured buffer (it is ended with `WatchOverflow`).
//!
//! # A watcher's life
//! - `Watch { prefix, from_revision }` starts it at `from_revision` (0: the revision after this
//!   node's applied index); a start older than the history is answered `Compacted { oldest }`.
//!   The first frame is `WatchProgress { from - 1 }`, which says the watch is in place.
//! - Every turn, each watcher behind the applied index gets the changes from its cursor on that
//!   match its prefix, in `WatchEvents` frames of about `FRAME_EVENT_BYTES`. A watcher still
//!   catching up (from an old revision) is sent only as much as keeps its connection's unsent
//!   bytes under half the buffer limit, so a long replay never trips the limit; once it has
//!   caught up it is live and gets the changes as they are applied — at most one frame per
//!   `frame_interval`, so that a stream of writes costs one send per interval per watcher
//!   rather than one per loop turn — and if its connection then holds more than
//!   `buffer_bytes` unsent it is ended with `WatchOverflow`.
//! - Every `progress_interval` without a frame it gets `WatchProgress { cursor - 1 }`: every
//!   matching change up to that revision has been sent. On a quiet prefix this is how a client
//!   knows how current it is, and its absence how it notices a dead server.
//! - It ends with an answer to its request: `Done` (cancelled by `CancelWatch`), `Compacted`
//!   (the history dropped changes it had not been sent, or a snapshot from the leader replaced
//!   this node's dictionary behind its cursor), `WatchOverflow`, or `ShuttingDown`; silently
//!   when its connection closes.

use super::*;
use crate::kv::history::{History, HistoryLimits};
use crate::wire::client::{event_encoded_len, set_request_id, EventsFrame};
use std::collections::{BTreeMap, HashMap};

/// Event bytes in one `WatchEvents` frame, at most (beyond its first event, which may be as
/// large as a key and a value can be).
pub const FRAME_EVENT_BYTES: usize = 256 << 10;

/// The watch settings of a server (`zattd --watch-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// How many recent changes, and about how many bytes of them, are kept for watches to
    /// start or resume from.
    pub history: HistoryLimits,
    /// A live watcher whose connection holds more unsent bytes than this is ended.
    pub buffer_bytes: usize,
    /// A watcher sent nothing for this long gets a progress notification.
    pub progress_interval: Duration,
    /// The least time between two frames of events to one caught-up watcher: changes applied
    /// meanwhile wait and go in one frame. Under a steady stream of writes this turns one
    /// frame (and one send) per loop turn per watcher into one per interval, at the cost of
    /// that much delay; a change after a quiet spell goes at once.
    pub frame_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            history: HistoryLimits::default(),
            buffer_bytes: 8 << 20,
            progress_interval: Duration::from_secs(1),
            frame_interval: Duration::from_millis(1),
        }
    }
}

/// A watcher's key: its connection (slab key and generation) and its request id.
type WatchKey = (usize, u64, u64);

fn key_of(to: ReplyTo) -> WatchKey {
    (to.conn, to.generation, to.request_id)
}

struct Watcher {
    to: ReplyTo,
    prefix: Vec<u8>,
    /// The next revision to examine: every matching change before it has been sent.
    next: LogIndex,
    /// Caught up with the applied index at least once: no longer paced by its buffer.
    live: bool,
    /// When a frame was last sent to it.
    last_sent: Duration,
}

/// The history and the watchers.
pub(super) struct Watches {
    cfg: WatchConfig,
    pub(super) history: History,
    watchers: BTreeMap<WatchKey, Watcher>,
    /// The applied index the watchers were last served up to.
    served_through: LogIndex,
    /// Some watcher was left behind by its buffer, or held back by `frame_interval`, on the
    /// last turn.
    catching_up: bool,
    /// When the earliest watcher held back by `frame_interval` is due.
    due_at: Option<Duration>,
}

impl Watches {
    pub(super) fn new(cfg: WatchConfig, applied: LogIndex) -> Watches {
        Watches {
            cfg,
            history: History::new(cfg.history, applied),
            watchers: BTreeMap::new(),
            served_through: applied,
            catching_up: false,
            due_at: None,
        }
    }

    /// Sends every watcher its changes up to `applied` (see the module docs), ends those that
    /// cannot go on, then trims the history.
    fn serve<O: Output>(&mut self, out: &mut O, applied: LogIndex, now: Duration) {
        if self.watchers.is_empty() || (applied == self.served_through && !self.catching_up) {
            self.served_through = applied;
            self.due_at = None;
            self.history.trim();
            return;
        }
        let limit = self.cfg.buffer_bytes;
        let mut shared: Vec<Shared> = Vec::new();
        // Where the groups of one prefix are in `shared` (a lookup per watcher, not a walk of
        // every group: thousands of watchers on distinct prefixes stay linear).
        let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        let mut catching_up = false;
        let mut due_at: Option<Duration> = None;
        let mut ended: Vec<(WatchKey, Option<ErrorKind>)> = Vec::new();
        for (k, w) in self.watchers.iter_mut() {
            if w.next > applied {
                continue;
            }
            if w.next < self.history.oldest() {
                let oldest = self.history.oldest().0;
                ended.push((*k, Some(ErrorKind::Compacted { oldest })));
                continue;
            }
            let Some(pending) = out.pending_bytes(w.to) else {
                ended.push((*k, None));
                continue;
            };
            if w.live && pending > limit {
                ended.push((
                    *k,
                    Some(ErrorKind::WatchOverflow {
                        limit: limit as u64,
                    }),
                ));
                continue;
            }
            let next_frame_at = w.last_sent + self.cfg.frame_interval;
            if w.live && now < next_frame_at {
                // Sent a frame a moment ago: these changes wait to go with the next ones.
                catching_up = true;
                due_at = Some(due_at.map_or(next_frame_at, |d| d.min(next_frame_at)));
                continue;
            }
            let sent = if w.live {
                // Watchers on one prefix at one point get the same frames: encoded once.
                let found = groups
                    .get(w.prefix.as_slice())
                    .and_then(|at| at.iter().copied().find(|&i| shared[i].from == w.next));
                let i = match found {
                    Some(i) => i,
                    None => {
                        shared.push(Shared::encode(&self.history, &w.prefix, w.next, applied));
                        let i = shared.len() - 1;
                        groups.entry(w.prefix.clone()).or_default().push(i);
                        i
                    }
                };
                shared[i].send(out, w)
            } else {
                let budget = (limit / 2).saturating_sub(pending);
                send_events(out, &self.history, w, applied, budget)
            };
            if sent {
                w.last_sent = now;
            }
            if w.next > applied {
                w.live = true;
            } else {
                catching_up = true;
            }
        }
        for (k, why) in ended {
            if let Some(w) = self.watchers.remove(&k) {
                if let Some(e) = why {
                    out.answer(w.to, &Response::Error(e));
                }
            }
        }
        self.served_through = applied;
        self.catching_up = catching_up;
        self.due_at = due_at;
        self.history.trim();
    }
}

/// The frames of every change under one prefix from one revision up to the applied index,
/// encoded once for all the caught-up watchers at that point (each gets a copy with its own
/// request id): with many watchers on one prefix, encoding is paid once per turn, not once
/// per watcher.
struct Shared {
    from: LogIndex,
    /// Whole frames, one after the other, with request id 0.
    frames: Vec<u8>,
    /// Where each frame in `frames` starts.
    starts: Vec<usize>,
    /// Where the cursor of a watcher sent these goes.
    next: LogIndex,
}

impl Shared {
    fn encode(history: &History, prefix: &[u8], from: LogIndex, applied: LogIndex) -> Shared {
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        let end = history.len();
        let mut i = history.position(from);
        while i < end {
            let (j, _, n) = frame_span(history, prefix, i);
            if n > 0 {
                starts.push(frames.len());
                encode_frame(&mut frames, 0, history, prefix, i..j);
            }
            i = j;
        }
        Shared {
            from,
            frames,
            starts,
            next: applied.next(),
        }
    }

    /// Sends `w` these frames under its request id and moves its cursor; whether any went.
    fn send<O: Output>(&self, out: &mut O, w: &mut Watcher) -> bool {
        w.next = self.next;
        if self.frames.is_empty() {
            return false;
        }
        let to = w.to;
        // One frame per `stream` call: the `Output` contract, which the simulator's and the
        // test recorder's decoders rely on.
        for (n, &start) in self.starts.iter().enumerate() {
            let end = self.starts.get(n + 1).copied().unwrap_or(self.frames.len());
            out.stream(to, &mut |buf| {
                let base = buf.len();
                buf.extend_from_slice(&self.frames[start..end]);
                set_request_id(&mut buf[base..], to.request_id);
            });
        }
        true
    }
}

/// Sends `w` the changes matching its prefix from its cursor on, in frames, stopping before a
/// frame that would take the bytes sent past `budget` (the first frame always goes, unless the
/// budget is 0). Moves the cursor past what was examined: to `applied + 1` when it got to the
/// end. Returns whether a frame was sent.
fn send_events<O: Output>(
    out: &mut O,
    history: &History,
    w: &mut Watcher,
    applied: LogIndex,
    budget: usize,
) -> bool {
    if budget == 0 {
        return false;
    }
    let end = history.len();
    let mut i = history.position(w.next);
    let mut sent = 0usize;
    let mut any = false;
    while i < end {
        let (j, bytes, n) = frame_span(history, &w.prefix, i);
        if n > 0 {
            if sent > 0 && sent.saturating_add(bytes) > budget {
                w.next = history.get(i).revision();
                return any;
            }
            let (to, prefix) = (w.to, &w.prefix);
            out.stream(to, &mut |buf| {
                encode_frame(buf, to.request_id, history, prefix, i..j)
            });
            sent = sent.saturating_add(bytes);
            any = true;
        }
        w.next = history.get(j - 1).revision().next();
        i = j;
        if sent >= budget {
            break;
        }
    }
    if i == end {
        w.next = applied.next();
    }
    any
}

/// Where the frame starting at history position `i` ends: the changes under `prefix` from
/// there until they reach about `FRAME_EVENT_BYTES` (at least one, when there is one). Returns
/// (the position after it, the matching changes' encoded bytes, how many match).
fn frame_span(history: &History, prefix: &[u8], i: usize) -> (usize, usize, usize) {
    let end = history.len();
    let (mut j, mut bytes, mut n) = (i, 0usize, 0usize);
    while j < end && (n == 0 || bytes < FRAME_EVENT_BYTES) {
        let c = history.get(j);
        if c.key().starts_with(prefix) {
            bytes += event_encoded_len(c.key(), c.value());
            n += 1;
        }
        j += 1;
    }
    (j, bytes, n)
}

/// Appends one `WatchEvents` frame of the changes under `prefix` at history positions `span`.
fn encode_frame(
    buf: &mut Vec<u8>,
    request_id: u64,
    history: &History,
    prefix: &[u8],
    span: std::ops::Range<usize>,
) {
    let mut f = EventsFrame::begin(buf, request_id);
    for k in span {
        let c = history.get(k);
        if c.key().starts_with(prefix) {
            f.push(buf, c.revision().0, c.key(), c.value());
        }
    }
    f.finish(buf);
}

fn progress<O: Output>(out: &mut O, to: ReplyTo, revision: LogIndex) {
    let resp = Response::WatchProgress {
        revision: revision.0,
    };
    out.stream(to, &mut |buf| {
        crate::wire::client::encode_response(to.request_id, &resp, buf)
    });
}

impl Host {
    /// `Watch`: starts a watcher (see the module docs).
    pub(super) fn start_watch<O: Output>(
        &mut self,
        out: &mut O,
        to: ReplyTo,
        prefix: &[u8],
        from_revision: u64,
    ) {
        let k = key_of(to);
        if self.watches.watchers.contains_key(&k) {
            let e = ErrorKind::Invalid(
                "a watch with this request id is already open on this connection".into(),
            );
            return out.answer(to, &Response::Error(e));
        }
        let from = match from_revision {
            0 => self.kv.applied_index().next(),
            r => LogIndex(r),
        };
        let oldest = self.watches.history.oldest();
        let from = if Bugs::on(self.cfg.bugs.watch_starts_past_compaction) {
            from.max(oldest)
        } else {
            from
        };
        if from < oldest {
            let e = ErrorKind::Compacted { oldest: oldest.0 };
            return out.answer(to, &Response::Error(e));
        }
        progress(out, to, LogIndex(from.0 - 1));
        self.watches.watchers.insert(
            k,
            Watcher {
                to,
                prefix: prefix.to_vec(),
                next: from,
                live: false,
                last_sent: self.now.mono,
            },
        );
        // Served at the end of this turn.
        self.watches.catching_up = true;
    }

    /// `CancelWatch`: ends the watch this connection opened as request `watch_id` (its
    /// request is answered `Done`), then answers `Done`. Cancelling a watch that already ended
    /// is not an error: its end may have crossed the cancel on the way.
    pub(super) fn cancel_watch<O: Output>(&mut self, out: &mut O, to: ReplyTo, watch_id: u64) {
        if let Some(w) = self
            .watches
            .watchers
            .remove(&(to.conn, to.generation, watch_id))
        {
            out.answer(w.to, &Response::Done);
        }
        out.answer(to, &Response::Done);
    }

    /// Serves the watchers up to the applied index (once per turn).
    pub(super) fn serve_watches<O: Output>(&mut self, out: &mut O) {
        let applied = self.kv.applied_index();
        self.watches.serve(out, applied, self.now.mono);
    }

    /// Progress notifications for watchers sent nothing for a while; forgets watchers whose
    /// connection is gone.
    pub(super) fn watch_housekeeping<O: Output>(&mut self, out: &mut O) {
        let now = self.now.mono;
        let every = self.watches.cfg.progress_interval;
        let mut gone = Vec::new();
        for (k, w) in self.watches.watchers.iter_mut() {
            if now.saturating_sub(w.last_sent) < every {
                continue;
            }
            match out.pending_bytes(w.to) {
                None => {
                    gone.push(*k);
                    continue;
                }
                // Frames still unsent: the client is not reading, and a progress frame would
                // only queue behind them (one per interval, without bound, on a quiet
                // cluster where no change ever checks the watcher's buffer).
                Some(pending) if pending > 0 => continue,
                Some(_) => {}
            }
            progress(out, w.to, LogIndex(w.next.0 - 1));
            w.last_sent = now;
        }
        for k in gone {
            self.watches.watchers.remove(&k);
        }
    }

    /// The dictionary was replaced by a state at `index` (a snapshot from the leader): the
    /// history is void, and a watcher that had not been sent every change up to `index` cannot
    /// be (`Compacted`); watchers already past it go on.
    pub(super) fn watches_kv_replaced<O: Output>(&mut self, out: &mut O, index: LogIndex) {
        self.watches.history.reset(index);
        self.watches.served_through = index;
        let behind: Vec<WatchKey> = self
            .watches
            .watchers
            .iter()
            .filter(|(_, w)| w.next <= index)
            .map(|(k, _)| *k)
            .collect();
        for k in behind {
            if Bugs::on(self.cfg.bugs.watch_skips_snapshot) {
                if let Some(w) = self.watches.watchers.get_mut(&k) {
                    w.next = index.next();
                }
                continue;
            }
            if let Some(w) = self.watches.watchers.remove(&k) {
                let e = ErrorKind::Compacted {
                    oldest: index.next().0,
                };
                out.answer(w.to, &Response::Error(e));
            }
        }
    }

    /// A client connection closed: its watchers go with it.
    pub fn connection_closed(&mut self, conn: usize, generation: u64) {
        let ended: Vec<WatchKey> = self
            .watches
            .watchers
            .range((conn, generation, 0)..=(conn, generation, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            self.watches.watchers.remove(&k);
        }
    }

    /// Every watcher's request, emptying the list (the server is stopping).
    pub(super) fn drain_watchers(&mut self) -> Vec<ReplyTo> {
        std::mem::take(&mut self.watches.watchers)
            .into_values()
            .map(|w| w.to)
            .collect()
    }

    /// When a watcher held back by the frame interval is due (time as `Now::mono`): the
    /// driver should end a turn by then even if nothing else happens.
    pub fn watch_due_at(&self) -> Option<Duration> {
        self.watches.due_at
    }

    /// Watchers open on this node.
    pub fn watcher_count(&self) -> usize {
        self.watches.watchers.len()
    }

    /// The oldest revision a watch can start from on this node.
    pub fn watch_oldest(&self) -> LogIndex {
        self.watches.history.oldest()
    }
}
