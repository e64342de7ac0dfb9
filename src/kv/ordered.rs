//! The dictionary's ordered index: its elements in ascending order, in a list of sorted chunks
//! of at most `CHUNK` elements. Owns nothing of what the elements point at.
//!
//! Why not `BTreeSet`: its nodes hold at most 11 elements, split in half and are allocated
//! whole, so keys written in ascending order (a load, a counter, a time-stamped name) leave
//! every node about half full: 21 B for each 8 B pointer at 1,000,000 keys (16 B with keys in
//! random order). Here a chunk's capacity grows `GROW` elements at a time, so a chunk holds
//! little more than it uses whatever the order (8.0–9.4 B a pointer: in order, at random, or
//! as many writers each counting up), and the chunks' headers cost 24 B per hundreds of
//! elements. The price is a `memmove` of up to a chunk (4 KiB) when a key appears or goes away,
//! which is when this index is touched at all.
//!
//! Invariants (checked by `check` in tests): no chunk is empty; elements are strictly ascending
//! within a chunk and from one chunk to the next.

use std::borrow::Borrow;
use std::ops::Bound;

/// Most elements in one chunk.
const CHUNK: usize = 512;

/// A chunk's capacity grows by this many elements (`reserve_exact`), so it wastes at most this
/// many slots where doubling would waste up to half.
const GROW: usize = 32;

/// A chunk this small after a removal is merged with a neighbour when they fit in
/// `MERGED_MAX`, so removals cannot leave a chunk's 4 KiB behind for a handful of elements.
const SPARSE: usize = CHUNK / 4;
const MERGED_MAX: usize = CHUNK * 3 / 4;

/// Inserts `t` at `pos`, growing the chunk's capacity by at most `GROW` slots.
fn insert_growing<T>(chunk: &mut Vec<T>, pos: usize, t: T) {
    if chunk.len() == chunk.capacity() {
        chunk.reserve_exact(GROW.min(CHUNK - chunk.len()));
    }
    chunk.insert(pos, t);
}

pub(super) struct Ordered<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Ordered<T> {
    fn default() -> Ordered<T> {
        Ordered { chunks: Vec::new() }
    }
}

impl<T: Ord> Ordered<T> {
    /// The chunk where `q` is or would go: the last one whose first element is `<= q` (the
    /// first chunk for anything smaller), and `q`'s place in it.
    fn locate<Q>(&self, q: &Q) -> Option<(usize, Result<usize, usize>)>
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if self.chunks.is_empty() {
            return None;
        }
        let ci = self
            .chunks
            .partition_point(|c| c[0].borrow() <= q)
            .saturating_sub(1);
        Some((ci, self.chunks[ci].binary_search_by(|x| x.borrow().cmp(q))))
    }

    /// Adds `t`; returns false (and drops `t`) when an equal element is present.
    pub(super) fn insert(&mut self, t: T) -> bool {
        let Some((ci, found)) = self.locate(&t) else {
            let mut first = Vec::with_capacity(GROW);
            first.push(t);
            self.chunks.push(first);
            return true;
        };
        let Err(pos) = found else {
            return false;
        };
        let next_has_room = self.chunks.get(ci + 1).is_some_and(|c| c.len() < CHUNK);
        let chunk = &mut self.chunks[ci];
        if chunk.len() < CHUNK {
            insert_growing(chunk, pos, t);
        } else if pos == CHUNK && next_has_room {
            // Between a full chunk and the next: the next one's front, so that keys arriving
            // in descending order into that gap fill one chunk instead of making one each.
            insert_growing(&mut self.chunks[ci + 1], 0, t);
        } else if pos == CHUNK || pos == 0 {
            // At an end of a full chunk: a chunk of its own beside it, so keys that keep
            // arriving in order (ascending or descending) fill it instead of leaving halves.
            let mut fresh = Vec::with_capacity(GROW);
            fresh.push(t);
            let at = if pos == 0 { ci } else { ci + 1 };
            self.chunks.insert(at, fresh);
        } else {
            // Split just before the insertion point, but no further left than the middle: keys
            // that arrive nearly in order (many writers each counting up) land near a chunk's
            // end, and this leaves the part they have passed nearly full.
            let at = (CHUNK / 2).max(pos.saturating_sub(CHUNK / 8));
            let mut upper = Vec::with_capacity(CHUNK - at + GROW);
            upper.extend(chunk.drain(at..));
            chunk.shrink_to(at + GROW);
            if pos <= at {
                chunk.insert(pos, t);
            } else {
                upper.insert(pos - at, t);
            }
            self.chunks.insert(ci + 1, upper);
        }
        true
    }

    /// Puts `t` in the place of the element equal to it, returning that one; or, when there is
    /// none, inserts `t` and returns None.
    pub(super) fn replace(&mut self, t: T) -> Option<T> {
        match self.locate(&t) {
            Some((ci, Ok(pos))) => Some(std::mem::replace(&mut self.chunks[ci][pos], t)),
            _ => {
                self.insert(t);
                None
            }
        }
    }

    /// Removes the element equal to `q`.
    pub(super) fn remove<Q>(&mut self, q: &Q) -> Option<T>
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (ci, Ok(pos)) = self.locate(q)? else {
            return None;
        };
        let t = self.chunks[ci].remove(pos);
        let n = self.chunks[ci].len();
        if n == 0 {
            self.chunks.remove(ci);
        } else if n < SPARSE {
            let (into, from) =
                if ci + 1 < self.chunks.len() && n + self.chunks[ci + 1].len() <= MERGED_MAX {
                    (ci, ci + 1)
                } else if ci > 0 && self.chunks[ci - 1].len() + n <= MERGED_MAX {
                    (ci - 1, ci)
                } else {
                    return Some(t);
                };
            let moved = self.chunks.remove(from);
            self.chunks[into].reserve_exact(moved.len());
            self.chunks[into].extend(moved);
        }
        Some(t)
    }

    /// Every element from `lower` on, in order.
    pub(super) fn range<'a, Q>(&'a self, lower: Bound<&Q>) -> impl Iterator<Item = &'a T> + 'a
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (ci, pos) = match lower {
            Bound::Unbounded => (0, 0),
            Bound::Included(q) | Bound::Excluded(q) => match self.locate(q) {
                None => (0, 0),
                Some((ci, Ok(pos))) => (ci, pos + usize::from(matches!(lower, Bound::Excluded(_)))),
                Some((ci, Err(pos))) => (ci, pos),
            },
        };
        let first = self
            .chunks
            .get(ci)
            .map_or(&[][..], |c| &c[pos.min(c.len())..]);
        let rest = self.chunks.get(ci + 1..).unwrap_or(&[]);
        first.iter().chain(rest.iter().flatten())
    }

    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// From elements already in strictly ascending order (the caller's promise; `check`
    /// verifies it in tests): every chunk full but the last.
    pub(super) fn from_sorted(elements: impl IntoIterator<Item = T>) -> Ordered<T> {
        let mut chunks: Vec<Vec<T>> = Vec::new();
        for t in elements {
            match chunks.last_mut() {
                Some(c) if c.len() < CHUNK => c.push(t),
                _ => {
                    let mut fresh = Vec::with_capacity(CHUNK);
                    fresh.push(t);
                    chunks.push(fresh);
                }
            }
        }
        Ordered { chunks }
    }

    /// Asserts the invariants in the module doc (tests only: it walks everything).
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert!(self.chunks.iter().all(|c| !c.is_empty()), "no empty chunk");
        assert!(
            self.chunks.iter().all(|c| c.len() <= CHUNK),
            "no chunk past CHUNK"
        );
        let all: Vec<&T> = self.iter().collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "strictly ascending across chunks"
        );
    }

    /// Chunks held, and element slots allocated (tests: how full insertion orders leave them).
    #[cfg(test)]
    fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::collections::BTreeSet;

    #[test]
    fn matches_a_btreeset_through_random_inserts_removals_and_ranges() {
        // Goal: splits, merges and the chunk search behave as one ordered set.
        // Method: thousands of random inserts, replaces and removals over a key space a few
        // chunks wide, against a BTreeSet oracle, with ranges from random bounds.
        let mut rng = SplitMix64::new(11);
        let mut o: Ordered<u64> = Ordered::default();
        let mut oracle = BTreeSet::new();
        for i in 0..60_000u64 {
            let k = rng.next_u64() % 3000;
            match rng.next_u64() % 5 {
                0 | 1 => assert_eq!(o.remove(&k), oracle.take(&k)),
                2 => assert_eq!(o.replace(k), oracle.replace(k)),
                _ => assert_eq!(o.insert(k), oracle.insert(k)),
            }
            if i % 997 == 0 {
                o.check();
                assert!(o.iter().eq(oracle.iter()));
                let q = rng.next_u64() % 3100;
                for b in [Bound::Included(&q), Bound::Excluded(&q), Bound::Unbounded] {
                    let want = oracle.range((b, Bound::Unbounded));
                    assert!(o.range(b).eq(want), "range from {b:?}");
                }
            }
        }
        // Drain to nothing: removals merge and drop chunks down to none.
        for k in 0..3000u64 {
            assert_eq!(o.remove(&k), oracle.take(&k));
        }
        o.check();
        assert_eq!((o.len(), o.chunk_count()), (0, 0));
        assert_eq!(o.range(Bound::Included(&5)).count(), 0);
    }

    #[test]
    fn chunks_allocate_little_more_than_they_hold_whatever_the_write_order() {
        // Goal: the reason this index exists: keys written in order, in reverse, nearly in order
        // (many writers each counting up, their writes landing out of order in a window) or at
        // random leave chunks whose allocated slots are nearly all used, where a B-tree's
        // halving splits leave nodes half empty in the first three cases.
        let n = CHUNK as u64 * 40;
        let mut rng = SplitMix64::new(5);
        for order in ["ascending", "descending", "random"] {
            let mut o = Ordered::default();
            for i in 0..n {
                o.insert(match order {
                    "ascending" => i,
                    "descending" => n - i,
                    _ => rng.next_u64(),
                });
            }
            assert_dense(&o, order);
        }
        for window in [16u64, 64, 1024] {
            // `window` writes in flight, each landing at a random moment: the next key to
            // write replaces the one that landed.
            let mut rng = SplitMix64::new(window);
            let mut pending: Vec<u64> = (0..window).collect();
            let mut o = Ordered::default();
            for next in window..n + window {
                let slot = (rng.next_u64() % window) as usize;
                o.insert(std::mem::replace(&mut pending[slot], next));
            }
            assert_dense(&o, &format!("window {window}"));
        }
    }

    /// At most 10 % more slots allocated than elements held.
    fn assert_dense(o: &Ordered<u64>, order: &str) {
        o.check();
        assert!(
            o.slots() * 100 <= o.len() * 110,
            "{order}: {} slots for {}",
            o.slots(),
            o.len()
        );
    }

    #[test]
    fn keys_written_into_the_gap_between_full_chunks_fill_one_chunk() {
        // Goal: a run of keys landing between two full chunks (as after a snapshot restore,
        // whose chunks are all full) fills a chunk, descending as well as ascending, instead
        // of making a chunk per key (each a 32-slot allocation, and a quadratic insert).
        for descending in [true, false] {
            let mut o = Ordered::from_sorted((0..CHUNK as u64 * 2).map(|i| i * 10_000));
            let gap = CHUNK as u64 * 10_000 - 10_000; // between the two full chunks
            for i in 0..2000u64 {
                o.insert(if descending {
                    gap + 9_999 - i
                } else {
                    gap + 1 + i
                });
            }
            o.check();
            assert!(
                o.chunk_count() < 10,
                "descending {descending}: {} chunks",
                o.chunk_count()
            );
            assert_dense(&o, "into a gap");
        }
    }

    #[test]
    fn removals_merge_sparse_chunks() {
        // Goal: removing most elements does not leave a chunk per survivor.
        let mut o = Ordered::from_sorted(0..(CHUNK as u64 * 20));
        o.check();
        assert_eq!(o.chunk_count(), 20);
        for i in 0..(CHUNK as u64 * 20) {
            if i % 16 != 0 {
                o.remove(&i);
            }
        }
        o.check();
        let per_chunk = o.len() / o.chunk_count();
        assert!(per_chunk >= SPARSE / 2, "{} per chunk", per_chunk);
    }
}
