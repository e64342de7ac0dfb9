//! The bounded record of the dictionary's recent changes that watches are served from: each
//! change an applied entry made (a key set, or a key that existed deleted), in revision order,
//! at most one per revision. It keeps the newest changes within a count and a byte budget and
//! knows from which revision on it is complete, so that a watch from an older revision is told
//! so (`Compacted`) instead of missing changes silently.
//!
//! Must not: be part of the replicated state (it is a replica's own memory: a snapshot does not
//! carry it, a restarted or freshly restored replica starts it empty, complete from the revision
//! after its state), grow past its budget by more than the changes of one loop turn (the host
//! trims it once per turn, after serving watchers), or know about connections.

use std::collections::VecDeque;

use super::Change;
use crate::types::LogIndex;

/// Bytes counted per change besides its key and value (the record and its allocation), so
/// that many small changes are bounded by the byte budget too.
const CHANGE_OVERHEAD_BYTES: usize = 48;

/// How much history to keep: the newest changes, at most this many and about this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_changes: usize,
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    /// 100,000 changes and 64 MiB: several seconds of writes at full speed, enough for a
    /// watcher to resume on another server after a leader change or a lost connection.
    fn default() -> Self {
        HistoryLimits {
            max_changes: 100_000,
            max_bytes: 64 << 20,
        }
    }
}

/// One recorded change; key and value share one allocation.
#[derive(Debug)]
pub struct Recorded {
    revision: LogIndex,
    key_len: usize,
    put: bool,
    bytes: Box<[u8]>,
}

impl Recorded {
    pub fn revision(&self) -> LogIndex {
        self.revision
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    /// The value set, or `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        self.put.then(|| &self.bytes[self.key_len..])
    }

    fn cost(&self) -> usize {
        self.bytes.len() + CHANGE_OVERHEAD_BYTES
    }
}

/// The recent changes, oldest first. Invariant: revisions strictly increase, and every change
/// with a revision from `complete_from` on that was recorded is still here.
#[derive(Debug)]
pub struct History {
    changes: VecDeque<Recorded>,
    bytes: usize,
    complete_from: LogIndex,
    limits: HistoryLimits,
}

impl History {
    /// An empty history of a dictionary that has applied up to `applied`: complete from the
    /// revision after it.
    pub fn new(limits: HistoryLimits, applied: LogIndex) -> History {
        History {
            changes: VecDeque::new(),
            bytes: 0,
            complete_from: applied.next(),
            limits,
        }
    }

    /// Records one change (changes arrive in revision order, as the dictionary applies them).
    pub fn record(&mut self, c: Change<'_>) {
        debug_assert!(
            self.changes
                .back()
                .map_or(true, |l| l.revision < c.revision),
            "history: change at {:?} recorded out of order",
            c.revision
        );
        let mut bytes = Vec::with_capacity(c.key.len() + c.value.map_or(0, <[u8]>::len));
        bytes.extend_from_slice(c.key);
        if let Some(v) = c.value {
            bytes.extend_from_slice(v);
        }
        let r = Recorded {
            revision: c.revision,
            key_len: c.key.len(),
            put: c.value.is_some(),
            bytes: bytes.into_boxed_slice(),
        };
        self.bytes += r.cost();
        self.changes.push_back(r);
    }

    /// The dictionary was replaced by a state at `applied` (a snapshot installed): every change
    /// recorded is void, and the history is complete from the revision after `applied`.
    pub fn reset(&mut self, applied: LogIndex) {
        self.changes.clear();
        self.bytes = 0;
        self.complete_from = applied.next();
    }

    /// Drops the oldest changes until the history is within its limits.
    pub fn trim(&mut self) {
        while self.changes.len() > self.limits.max_changes || self.bytes > self.limits.max_bytes {
            let Some(old) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= old.cost();
            self.complete_from = old.revision.next();
        }
    }

    /// The oldest revision a watch can start from: every change at or after it is here.
    pub fn oldest(&self) -> LogIndex {
        self.complete_from
    }

    /// The number of changes kept.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Bytes counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The position of the first change at or after `revision` (`len()` when there is none).
    pub fn position(&self, revision: LogIndex) -> usize {
        self.changes.partition_point(|c| c.revision < revision)
    }

    /// The change at position `i` (below `len()`).
    pub fn get(&self, i: usize) -> &Recorded {
        &self.changes[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(h: &mut History, rev: u64, key: &str, value: &str) {
        h.record(Change {
            revision: LogIndex(rev),
            key: key.as_bytes(),
            value: Some(value.as_bytes()),
        });
    }

    #[test]
    fn trimming_by_count_moves_the_complete_point() {
        // Goal: the history keeps the newest changes and says from where it is complete.
        let limits = HistoryLimits {
            max_changes: 2,
            max_bytes: 1 << 20,
        };
        let mut h = History::new(limits, LogIndex(4));
        assert_eq!(h.oldest(), LogIndex(5));
        put(&mut h, 5, "a", "1");
        put(&mut h, 7, "b", "2");
        h.record(Change {
            revision: LogIndex(9),
            key: b"a",
            value: None,
        });
        h.trim();
        assert_eq!(h.len(), 2);
        // Revision 6 had no change, yet it is gone with 5: only 6 and later are complete.
        assert_eq!(h.oldest(), LogIndex(6));
        assert_eq!(h.position(LogIndex(6)), 0);
        assert_eq!(h.position(LogIndex(8)), 1);
        assert_eq!(h.position(LogIndex(10)), 2);
        assert_eq!(h.get(1).key(), b"a");
        assert_eq!(h.get(1).value(), None);
        assert_eq!(h.get(0).value(), Some(&b"2"[..]));
    }

    #[test]
    fn trimming_by_bytes_and_reset() {
        // Goal: the byte budget bounds the history too; a reset voids it.
        let limits = HistoryLimits {
            max_changes: 1000,
            max_bytes: 3 * (CHANGE_OVERHEAD_BYTES + 10),
        };
        let mut h = History::new(limits, LogIndex(0));
        for rev in 1..=10 {
            put(&mut h, rev, "key01", "val01");
        }
        h.trim();
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest(), LogIndex(8));
        assert_eq!(h.bytes(), 3 * (CHANGE_OVERHEAD_BYTES + 10));
        h.reset(LogIndex(20));
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.oldest(), LogIndex(21));
    }
}
