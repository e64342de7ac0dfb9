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
use std::sync::Arc;

use super::Change;
use crate::types::LogIndex;

/// Bytes counted per change besides the bytes it keeps: the record itself and the header of
/// the shared (or copied) allocation, so that many small changes are bounded by the byte
/// budget too.
const CHANGE_OVERHEAD_BYTES: usize = std::mem::size_of::<Recorded>() + 16;

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

/// One recorded change. Its key and value are spans of `bytes`: when they lie in the data of
/// the entry that made the change (a put, delete or CAS names its key and value there), that
/// data is shared with the core's log rather than copied, so the history costs a record per
/// change and no allocation; any other change keeps a copy of just its key and value.
///
/// The spans are `u32` offset and length, so a record is 40 B instead of the 64 B of `usize`
/// ranges (2.4 MB at the default 100,000 changes, on every server). A span that does not fit
/// (an entry's data is one request, at most 64 MiB) would make the change a copy, and a copy
/// holds one key and one value, at most 4 KiB and 1 MiB.
#[derive(Debug)]
pub struct Recorded {
    revision: LogIndex,
    bytes: Arc<[u8]>,
    key: Span,
    /// `DELETED` as its length for a delete.
    value: Span,
}

// The size the doc above counts on (64-bit targets), in the build: widening a field shows here.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Recorded>() == 40);

/// Offset and length of a part of a record's bytes.
#[derive(Clone, Copy, Debug)]
struct Span(u32, u32);

/// The value span of a delete (no value has this length: values are at most 1 MiB).
const DELETED: Span = Span(0, u32::MAX);

/// The length of a key or value the dictionary accepted (at most 4 KiB and 1 MiB).
fn span_len(part: &[u8]) -> u32 {
    u32::try_from(part.len()).expect("kv limits keys and values far below 4 GiB")
}

impl Span {
    fn of<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let at = self.0 as usize;
        &bytes[at..at + self.1 as usize]
    }

    /// Where `part` lies within `whole`, if it does (and fits a span).
    fn within(whole: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        if end > whole.len() {
            return None;
        }
        Some(Span(
            u32::try_from(start).ok()?,
            u32::try_from(part.len()).ok()?,
        ))
        .filter(|s| s.1 != DELETED.1)
    }
}

impl Recorded {
    pub fn revision(&self) -> LogIndex {
        self.revision
    }

    pub fn key(&self) -> &[u8] {
        self.key.of(&self.bytes)
    }

    /// The value set, or `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        (self.value.1 != DELETED.1).then(|| self.value.of(&self.bytes))
    }

    /// What this record keeps alive: all of `bytes` (an entry's whole data when shared, which
    /// outlives the log's compaction while the change is here).
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

    /// Records one change (changes arrive in revision order, as the dictionary applies them)
    /// made by the entry whose data is `source`.
    pub fn record(&mut self, c: Change<'_>, source: &Arc<[u8]>) {
        debug_assert!(
            self.changes
                .back()
                .map_or(true, |l| l.revision < c.revision),
            "history: change at {:?} recorded out of order",
            c.revision
        );
        let shared = Span::within(source, c.key).and_then(|k| match c.value {
            None => Some((k, DELETED)),
            Some(v) => Span::within(source, v).map(|v| (k, v)),
        });
        let r = match shared {
            Some((key, value)) => Recorded {
                revision: c.revision,
                bytes: source.clone(),
                key,
                value,
            },
            None => {
                let mut bytes = Vec::with_capacity(c.key.len() + c.value.map_or(0, <[u8]>::len));
                bytes.extend_from_slice(c.key);
                let key = Span(0, span_len(c.key));
                let value = c.value.map_or(DELETED, |v| {
                    bytes.extend_from_slice(v);
                    Span(key.1, span_len(v))
                });
                Recorded {
                    revision: c.revision,
                    bytes: bytes.into(),
                    key,
                    value,
                }
            }
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

    /// Bytes an entry holds before the key and value it names (a session, an opcode).
    const ENTRY_HEAD: &[u8] = b"hdr";

    /// Records a put as the host does: its key and value are parts of the entry's data.
    fn put(h: &mut History, rev: u64, key: &str, value: &str) {
        let data: Arc<[u8]> = [ENTRY_HEAD, key.as_bytes(), value.as_bytes()]
            .concat()
            .into();
        let k = ENTRY_HEAD.len()..ENTRY_HEAD.len() + key.len();
        let change = Change {
            revision: LogIndex(rev),
            key: &data[k.clone()],
            value: Some(&data[k.end..]),
        };
        h.record(change, &data);
    }

    fn no_entry() -> Arc<[u8]> {
        Arc::from(&b""[..])
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
        h.record(
            Change {
                revision: LogIndex(9),
                key: b"a",
                value: None,
            },
            &no_entry(),
        );
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
            max_bytes: 3 * (CHANGE_OVERHEAD_BYTES + 13),
        };
        let mut h = History::new(limits, LogIndex(0));
        for rev in 1..=10 {
            put(&mut h, rev, "key01", "val01");
        }
        h.trim();
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest(), LogIndex(8));
        // Each change keeps its whole entry alive, so the entry's bytes are what it costs.
        assert_eq!(h.bytes(), 3 * (CHANGE_OVERHEAD_BYTES + 13));
        h.reset(LogIndex(20));
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.oldest(), LogIndex(21));
    }

    #[test]
    fn a_change_shares_its_entrys_bytes_and_a_foreign_one_is_copied() {
        // Goal: a change whose key and value lie in the entry's data keeps that data (no copy);
        // one whose bytes lie elsewhere, even partly, is copied, and reads back the same.
        let mut h = History::new(HistoryLimits::default(), LogIndex(0));
        let data: Arc<[u8]> = Arc::from(&b"hdrkey1value1"[..]);
        h.record(
            Change {
                revision: LogIndex(1),
                key: &data[3..7],
                value: Some(&data[7..]),
            },
            &data,
        );
        assert_eq!(Arc::strong_count(&data), 2, "the entry's data is shared");
        let elsewhere = b"value2".to_vec();
        h.record(
            Change {
                revision: LogIndex(2),
                key: &data[3..7],
                value: Some(&elsewhere),
            },
            &data,
        );
        h.record(
            Change {
                revision: LogIndex(3),
                key: b"key3",
                value: None,
            },
            &data,
        );
        assert_eq!(
            Arc::strong_count(&data),
            2,
            "partly foreign changes are copied"
        );
        let read: Vec<(&[u8], Option<&[u8]>)> = (0..h.len())
            .map(|i| (h.get(i).key(), h.get(i).value()))
            .collect();
        assert_eq!(
            read,
            [
                (&b"key1"[..], Some(&b"value1"[..])),
                (&b"key1"[..], Some(&b"value2"[..])),
                (&b"key3"[..], None),
            ]
        );
        assert_eq!(
            h.bytes(),
            3 * CHANGE_OVERHEAD_BYTES + data.len() + 10 + 4,
            "shared: the entry's length; copied: the key and value"
        );
        drop(h);
        assert_eq!(Arc::strong_count(&data), 1);
    }
}
