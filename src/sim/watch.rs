//! Simulated watchers and the check of their streams against the committed log. A few watchers
//! per run (every key, the operation keys, one key) each hold one simulated TCP connection to a
//! node: a `Watch` request frame, then the frames the host streams back, delivered in order (a
//! frame the client link loses breaks the connection, as TCP would: nothing after it arrives).
//! A watcher that hears nothing for `SILENCE_US` (its node crashed, its connection broke)
//! resumes on the next node from the revision after the last one it received, as the client
//! library does; `Compacted` makes it start over from the oldest revision offered.
//!
//! The check: an oracle applies every entry any node applies, in index order, to a dictionary
//! of its own and records each change by revision. Each event must be the oracle's change at
//! its revision, under the watcher's prefix, after the watcher's resume point, with no change
//! under the prefix between that point and the event (no gap, no repeat, in order); each
//! progress notification must leave no such change unsent below it. Must not look at a node's
//! state: watchers learn only from frames.

use super::events::Event;
use super::*;
use crate::kv::Kv;
use crate::wire::client::{
    decode_response, encode_request, ErrorKind, FrameLimits, Request, Response,
};

/// Connection numbers of watchers start here (ordinary clients are numbered from 0).
pub(super) const WATCH_CONN_BASE: usize = 1 << 20;
/// A watcher that hears nothing for this long takes its connection for dead.
const SILENCE_US: u64 = 1_000_000;
/// How often a watcher looks at its connection's silence.
const WATCH_TICK_US: u64 = 100_000;
/// The progress interval the simulated servers use.
pub(super) const PROGRESS_US: u64 = 200_000;

/// The watchers' prefixes: every key, the keys operations collide on, one of them.
const PREFIXES: [&[u8]; 3] = [b"", b"k", b"k3"];

/// Every change the committed log makes, by revision, as one dictionary applying every entry
/// any node applied, in index order.
pub(super) struct Oracle {
    kv: Kv,
    /// Entries seen ahead of the next index to apply (a node that restored a snapshot).
    ahead: BTreeMap<LogIndex, Entry>,
    /// revision → (key, value; None: deleted).
    changes: BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)>,
}

impl Oracle {
    pub(super) fn new(cfg: KvConfig) -> Oracle {
        Oracle {
            kv: Kv::new(cfg),
            ahead: BTreeMap::new(),
            changes: BTreeMap::new(),
        }
    }

    /// A node applied `e` (the checker has already compared it with every other node's).
    pub(super) fn on_apply(&mut self, e: &Entry) {
        let applied = self.kv.applied_index();
        if e.index <= applied {
            return;
        }
        if e.index > applied.next() {
            self.ahead.entry(e.index).or_insert_with(|| e.clone());
            return;
        }
        self.apply(e);
        while let Some(next) = self.ahead.remove(&self.kv.applied_index().next()) {
            self.apply(&next);
        }
    }

    fn apply(&mut self, e: &Entry) {
        let changes = &mut self.changes;
        self.kv.apply_observed(e, &mut |c| {
            changes.insert(c.revision.0, (c.key.to_vec(), c.value.map(<[u8]>::to_vec)));
        });
    }

    fn applied(&self) -> u64 {
        self.kv.applied_index().0
    }

    /// The first change under `prefix` with a revision in `from..=to`.
    fn first_under(&self, prefix: &[u8], from: u64, to: u64) -> Option<u64> {
        if from > to {
            return None;
        }
        self.changes
            .range(from..=to)
            .find(|(_, (k, _))| k.starts_with(prefix))
            .map(|(r, _)| *r)
    }
}

pub(super) struct SimWatcher {
    prefix: Vec<u8>,
    /// The node the current connection goes to.
    node: usize,
    /// The current connection's number (its generation, and the watch's request id); frames
    /// of earlier connections are ignored.
    conn: u64,
    /// The current connection lost a frame: nothing more arrives on it.
    broken: bool,
    /// Whether the current connection's watch was accepted (its first progress arrived).
    open: bool,
    /// Every change under the prefix before this revision has been received.
    next: u64,
    heard_at: u64,
    /// When the last frame sent on the current connection arrives (frames keep their order).
    link_free_at: u64,
    pub(super) events: u64,
    pub(super) resumes: u64,
    pub(super) compacted: u64,
}

impl SimWatcher {
    pub(super) fn new(i: usize, nodes: usize) -> SimWatcher {
        SimWatcher {
            prefix: PREFIXES[i % PREFIXES.len()].to_vec(),
            node: i % nodes.max(1),
            conn: 0,
            broken: false,
            open: false,
            next: 1,
            heard_at: 0,
            link_free_at: 0,
            events: 0,
            resumes: 0,
            compacted: 0,
        }
    }
}

impl SimWatcher {
    /// Whether connection `conn` is this watcher's current one (earlier ones are closed).
    pub(super) fn is_current(&self, conn: u64) -> bool {
        self.conn == conn
    }
}

pub(super) fn watchers_for(nodes: usize) -> Vec<SimWatcher> {
    (0..PREFIXES.len())
        .map(|i| SimWatcher::new(i, nodes))
        .collect()
}

fn failure(what: String) -> Check {
    Err((FailureKind::Watch, what))
}

impl World {
    /// Opens watcher `w`'s watch on a new connection to its node, from its resume point.
    pub(super) fn watch_open(&mut self, w: usize) {
        let now = self.now;
        let wt = &mut self.watchers[w];
        wt.conn += 1;
        wt.broken = false;
        wt.open = false;
        wt.heard_at = now;
        wt.link_free_at = now;
        let req = Request::Watch {
            prefix: wt.prefix.clone(),
            from_revision: wt.next,
        };
        let mut frame = Vec::new();
        encode_request(wt.conn, &req, &mut frame);
        let (node, conn) = (wt.node, wt.conn);
        self.log(format_args!(
            "watcher {w} opens connection {conn} to n{} from revision {}",
            node + 1,
            self.watchers[w].next
        ));
        let Some(d) = self.client_link_delay() else {
            return; // lost: the watcher times out and tries again
        };
        self.at(
            d,
            Event::WatchToNode {
                node,
                watcher: w,
                conn,
                frame,
            },
        );
    }

    /// Periodic: a silent connection is taken for dead; the watch resumes on the next node.
    pub(super) fn watch_tick(&mut self, w: usize) {
        self.at(WATCH_TICK_US, Event::WatchTick(w));
        let n = self.nodes.len();
        let wt = &mut self.watchers[w];
        if self.now.saturating_sub(wt.heard_at) < SILENCE_US {
            return;
        }
        wt.node = (wt.node + 1) % n.max(1);
        wt.resumes += 1;
        self.watch_open(w);
    }

    /// A node sends a frame on watcher `w`'s connection `conn`: it arrives after the frames
    /// before it, unless the link loses it, which breaks the connection.
    pub(super) fn watch_frame_out(&mut self, w: usize, conn: u64, frame: Vec<u8>) {
        let Some(wt) = self.watchers.get_mut(w) else {
            return;
        };
        if wt.conn != conn || wt.broken {
            return;
        }
        let Some(d) = self.client_link_delay() else {
            self.watchers[w].broken = true;
            return;
        };
        let at = (self.now + d).max(self.watchers[w].link_free_at);
        self.watchers[w].link_free_at = at;
        self.at(
            at - self.now,
            Event::ToWatcher {
                watcher: w,
                conn,
                frame,
            },
        );
    }

    /// A frame reaches watcher `w` on connection `conn`: checked against the oracle.
    pub(super) fn watch_frame_in(&mut self, w: usize, conn: u64, frame: &[u8]) -> Check {
        if self.watchers[w].conn != conn || self.watchers[w].broken {
            return Ok(());
        }
        let (id, resp) = decode_response(frame, &FrameLimits::default()).map_err(|e| {
            (
                FailureKind::Contract,
                format!("watcher {w} received an undecodable frame: {e}"),
            )
        })?;
        if id != conn {
            return failure(format!(
                "watcher {w}: a frame for request {id} on watch connection {conn}"
            ));
        }
        let now = self.now;
        let wt = &mut self.watchers[w];
        wt.heard_at = now;
        let node = wt.node + 1;
        let prefix = wt.prefix.clone();
        match resp {
            Response::WatchProgress { revision } => {
                if revision > self.oracle.applied() {
                    return failure(format!(
                        "watcher {w} on n{node}: progress to {revision}, beyond every applied \
                         entry ({})",
                        self.oracle.applied()
                    ));
                }
                if let Some(missed) = self.oracle.first_under(&prefix, wt.next, revision) {
                    return failure(format!(
                        "watcher {w} on n{node}: progress to {revision} but the change at \
                         {missed} under {:?} was not sent",
                        String::from_utf8_lossy(&prefix)
                    ));
                }
                wt.open = true;
                wt.next = wt.next.max(revision + 1);
            }
            Response::WatchEvents(events) => {
                if !wt.open {
                    return failure(format!(
                        "watcher {w} on n{node}: events before the watch was acknowledged"
                    ));
                }
                for e in &events {
                    let r = e.revision();
                    if r < wt.next {
                        return failure(format!(
                            "watcher {w} on n{node}: event at {r} repeated or out of order \
                             (everything before {} was received)",
                            wt.next
                        ));
                    }
                    if let Some(missed) = self.oracle.first_under(&prefix, wt.next, r - 1) {
                        return failure(format!(
                            "watcher {w} on n{node}: event at {r} skips the change at {missed}"
                        ));
                    }
                    let want = self.oracle.changes.get(&r);
                    let got = (e.key().to_vec(), e.value().map(<[u8]>::to_vec));
                    if want != Some(&got) || !e.key().starts_with(&prefix) {
                        return failure(format!(
                            "watcher {w} on n{node}: event {e:?} is not the committed change at \
                             {r} under {:?} ({want:?})",
                            String::from_utf8_lossy(&prefix)
                        ));
                    }
                    wt.next = r + 1;
                    wt.events += 1;
                }
            }
            Response::Error(ErrorKind::Compacted { oldest }) => {
                if oldest <= wt.next {
                    return failure(format!(
                        "watcher {w} on n{node}: Compacted (oldest {oldest}) for a watch from {}, \
                         which that history holds",
                        wt.next
                    ));
                }
                // A client would reload here; the stream starts over from what is kept.
                self.log(format_args!(
                    "watcher {w}: compacted on n{node}, starting over from {oldest}"
                ));
                let wt = &mut self.watchers[w];
                wt.compacted += 1;
                wt.next = oldest;
                wt.resumes += 1;
                self.watch_open(w);
            }
            other => {
                return failure(format!(
                    "watcher {w} on n{node}: unexpected frame {other:?}"
                ))
            }
        }
        Ok(())
    }
}
