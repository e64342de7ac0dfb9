//! The durability contract shared by the real write-ahead log (`wal`) and the simulator's
//! disk (`sim::disk`): the server and the simulator write through both the same way, so the
//! rules below hold for both and are tested once against each.
//!
//! Rules:
//! - `write` queues a batch; nothing in it is durable until a later `sync` returns `Ok`.
//! - Batches become durable in the order written. A crash keeps a prefix of the written bytes
//!   (possibly cutting the last record short); it never reorders them.
//! - Within a batch the order is: snapshot (if any; it replaces every stored entry at or below
//!   its index, and every entry if the stored entry at its index has another term), then the
//!   hard state, then the entries (the first entry's index may be at or below the last stored
//!   index: the stored suffix from that index on is discarded first).
//! - `recover` returns exactly the durable state: hard state, latest snapshot, then the entries
//!   after it, contiguous.
//! - A failed `write` or `sync` is fatal for the process (fail-stop): the caller must not go on.

use crate::raft::Boot;
use crate::types::{Entry, HardState, LogIndex, Snapshot};
use std::io;

/// One durable write, built from one `raft::Ready`.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub snapshot: Option<Snapshot>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.hard_state.is_none() && self.entries.is_empty()
    }
}

/// Sends what one sync released (the messages handed over with its batches, in order), except
/// those a later one with the same key supersedes: a follower's acknowledgements to one leader
/// in one term, each of which covers those handed out before it. Both drivers release through
/// it: the syncer its datagrams, the simulator its messages.
pub fn release<T, K: PartialEq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> Option<K>,
    mut send: impl FnMut(T),
) {
    let items: Vec<T> = items.into_iter().collect();
    let keys: Vec<Option<K>> = items.iter().map(&key).collect();
    for (i, item) in items.into_iter().enumerate() {
        let superseded = keys[i]
            .as_ref()
            .is_some_and(|k| keys[i + 1..].iter().any(|l| l.as_ref() == Some(k)));
        if !superseded {
            send(item);
        }
    }
}

pub trait LogStorage {
    /// Queue a batch (see the module rules). Not durable until `sync`.
    fn write(&mut self, batch: &WriteBatch) -> io::Result<()>;
    /// Make every batch written so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Store a snapshot this node took itself, durably, then drop the log entries it covers
    /// (log compaction). Entries after `snapshot.meta.index` are kept.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()>;
    /// The durable state, as `Raft::new` wants it.
    fn recover(&mut self) -> io::Result<Boot>;
    /// The last durable log index (or the snapshot index when the log after it is empty).
    fn last_index(&self) -> LogIndex;
}
