//! The dictionary's storage: every key with its value and revision, each key stored once. Owns
//! the memory layout of the map, nothing of its meaning (sessions, proposals and snapshots are
//! `kv`'s); must not let hash order reach any caller (every walk is in key order).
//!
//! # Layout
//! Each key lives in one record: `key_len u32, value_len u32, revision u64, key bytes, value
//! bytes`, in a slot of the dictionary's own `slab::Slab` (a 16 B key with a 100 B value is a
//! 132 B record in a 136 B slot; malloc would take 144 B for it). Two indexes point at the
//! records without copying a key:
//! - a hash table of record pointers (8 B a slot, `hashbrown::HashTable`), hashed and compared
//!   by the key inside the record: point lookups and writes, the hot path of every replica,
//!   cost one hash. A write is usually a cache miss on its record (a replica's records are
//!   many and its cores shared), so the host names the keys of a batch of committed entries a
//!   few entries ahead (`prefetch`): the table yields its candidates without reading them,
//!   and their misses overlap instead of following one another;
//! - an ordered index of the same pointers (`ordered::Ordered`, sorted chunks), compared by key,
//!   touched only when a key appears, goes away or its record moves: scans, iteration and
//!   snapshots walk it.
//!
//! Against a `HashMap<Vec<u8>, (Vec<u8>, LogIndex)>` beside a `BTreeSet<Vec<u8>>` (three
//! allocations and a 56 B slot per key, the key twice) this keeps a 16 B key with a 100 B value
//! in 164 B of resident memory (`examples/kv_memory.rs`; a server's RSS per key went from
//! 514–530 B to 362–374 B with the records; the chunked index then took 11 B off a key written
//! in order, and the slab 9 B more), and an overwrite with a value of the same length allocates
//! nothing and hashes once.
//!
//! # Why `unsafe`
//! A record is a variable-length allocation reached from two indexes: the standard collections
//! cannot hold one allocation in two places, nor hash an element by bytes behind a thin
//! pointer. The unsafe code is confined to this file and the slab's, and rests on two
//! invariants, checked in `check` (tests): every pointer in `order` is owned by exactly one
//! `Rec` in `map`; `order` holds exactly the pointers `map` holds. A record is freed (to the
//! slab it came from) only after both indexes forgot it, moved (a value of another length) only
//! with `order` updated before the old one is freed, and written in place only through
//! `&mut Dict` (no borrow of its bytes can be live).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::ptr::NonNull;

use hashbrown::HashTable;

use super::ordered::Ordered;
use super::slab::{self, Slab};
use crate::types::LogIndex;

/// Bytes before the key: key length, value length, revision.
const HEAD: usize = 16;

/// A pointer to a record, owned by the `Rec` in `Dict::map` that holds the same address.
#[derive(Clone, Copy)]
struct RecPtr(NonNull<u8>);

// The records are reached only through a `Dict`: shared access only reads them, and every write
// (and free) goes through `&mut Dict`. So a `Dict` may move to, or be read from, another
// thread like any owned collection.
unsafe impl Send for RecPtr {}
unsafe impl Sync for RecPtr {}

impl RecPtr {
    fn head(&self) -> (usize, usize, u64) {
        // SAFETY: a live record starts with its 16-byte head, 8-aligned (see `Rec::new`).
        unsafe {
            let p = self.0.as_ptr();
            let k = (p as *const u32).read() as usize;
            let v = (p.add(4) as *const u32).read() as usize;
            let r = (p.add(8) as *const u64).read();
            (k, v, r)
        }
    }

    fn key(&self) -> &[u8] {
        let (k, _, _) = self.head();
        // SAFETY: the key's `k` bytes follow the head. The pointer lives in the `Dict` that owns
        // the record, so a borrow of it is a borrow of the `Dict`, which frees or changes
        // records only through `&mut`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(HEAD), k) }
    }

    fn value(&self) -> &[u8] {
        let (k, v, _) = self.head();
        // SAFETY: as for `key`; the value's `v` bytes follow the key.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(HEAD + k), v) }
    }

    fn revision(&self) -> LogIndex {
        LogIndex(self.head().2)
    }

    fn size(key_len: usize, value_len: usize) -> usize {
        HEAD.checked_add(key_len)
            .and_then(|n| n.checked_add(value_len))
            .expect("record size fits in usize (kv limits keys and values)")
    }

    /// Replaces the value in place; only for a value of the record's current length.
    ///
    /// # Safety
    /// The caller holds `&mut Dict` of the dictionary that owns this record, so no borrow of
    /// its bytes is live (they are all tied to `&Dict`).
    unsafe fn overwrite(&self, value: &[u8], revision: LogIndex) {
        let (k, v, _) = self.head();
        assert_eq!(
            v,
            value.len(),
            "in-place overwrite needs the same value length"
        );
        // SAFETY: the writes stay within the record; see the function's contract for aliasing.
        unsafe {
            let p = self.0.as_ptr();
            (p.add(8) as *mut u64).write(revision.0);
            std::ptr::copy_nonoverlapping(value.as_ptr(), p.add(HEAD + k), v);
        }
    }
}

/// The owner of one record: frees it when dropped.
struct Rec(RecPtr);

impl Rec {
    fn new(slab: &mut Slab, key: &[u8], value: &[u8], revision: LogIndex) -> Rec {
        let kl = u32::try_from(key.len()).expect("key length fits in u32 (kv limits keys)");
        let vl = u32::try_from(value.len()).expect("value length fits in u32 (kv limits values)");
        let nn = slab.alloc(RecPtr::size(key.len(), value.len()));
        // SAFETY: the slab gave `size` bytes, 8-aligned; the writes stay within them.
        unsafe {
            let p = nn.as_ptr();
            (p as *mut u32).write(kl);
            (p.add(4) as *mut u32).write(vl);
            (p.add(8) as *mut u64).write(revision.0);
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(HEAD), key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), p.add(HEAD + key.len()), value.len());
        }
        Rec(RecPtr(nn))
    }

    /// Gives the record's memory back to `slab`, which must be the one that allocated it.
    fn free(self, slab: &mut Slab) {
        let (k, v, _) = self.0.head();
        // SAFETY: allocated by `slab` with this size (`Rec::new`), and owned by `self` only,
        // which is consumed: no index holds it any more (the callers take it out of both).
        unsafe { slab.free(self.0 .0, RecPtr::size(k, v)) }
    }
}

// The ordered index compares by key bytes, as `[u8]` does (and borrows them, for range queries).
impl PartialEq for RecPtr {
    fn eq(&self, other: &RecPtr) -> bool {
        self.key() == other.key()
    }
}
impl Eq for RecPtr {}
impl PartialOrd for RecPtr {
    fn partial_cmp(&self, other: &RecPtr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RecPtr {
    fn cmp(&self, other: &RecPtr) -> Ordering {
        self.key().cmp(other.key())
    }
}
impl Borrow<[u8]> for RecPtr {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// The key → (value, revision) map. See the module doc for the layout and its invariants.
#[derive(Default)]
pub(super) struct Dict {
    map: HashTable<Rec>,
    /// Seeds the hash of keys in `map` (SipHash with a random key, as `HashMap`'s: keys come
    /// from clients).
    hasher: RandomState,
    order: Ordered<RecPtr>,
    /// The records' memory (after the indexes, so that it is dropped last).
    slab: Slab,
}

impl Drop for Dict {
    /// Records larger than a slab slot are allocated one by one; the rest go with the slab's
    /// pages. Without any of the former there is nothing to walk: a follower that installs a
    /// leader's snapshot drops a dictionary of maybe millions of records on the event loop,
    /// and reading each one's header was a cache miss per key.
    fn drop(&mut self) {
        if self.slab.alone() == 0 {
            return;
        }
        for rec in self.map.drain() {
            let (k, v, _) = rec.0.head();
            if slab::allocated_alone(RecPtr::size(k, v)) {
                rec.free(&mut self.slab);
            }
        }
    }
}

impl Dict {
    /// Sets `key` to `value` at `revision`. Allocates only for a new key or a value of another
    /// length than the one it replaces.
    pub(super) fn insert(&mut self, key: &[u8], value: &[u8], revision: LogIndex) {
        let h = self.hasher.hash_one(key);
        match self.map.find(h, holds(key)) {
            None => {
                let rec = Rec::new(&mut self.slab, key, value, revision);
                let fresh = self.order.insert(rec.0);
                debug_assert!(fresh, "the ordered index holds no key the map lacks");
                self.insert_new(h, rec);
                return;
            }
            Some(rec) if rec.0.value().len() == value.len() => {
                // SAFETY: `&mut self`: no borrow of any record's bytes is live.
                unsafe { rec.0.overwrite(value, revision) };
                return;
            }
            Some(_) => {}
        }
        // The new record first: should allocating it fail (and unwind), no index may be left
        // pointing at a freed one.
        let rec = Rec::new(&mut self.slab, key, value, revision);
        let Ok(mut slot) = self.map.find_entry(h, holds(key)) else {
            unreachable!("present above");
        };
        // `replace` compares against the old pointer, still alive until it is freed below.
        self.order.replace(rec.0);
        let old = std::mem::replace(slot.get_mut(), rec);
        old.free(&mut self.slab);
    }

    /// Removes `key`, returning whether it was present.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        let h = self.hasher.hash_one(key);
        let Ok(slot) = self.map.find_entry(h, holds(key)) else {
            return false;
        };
        let (old, _) = slot.remove();
        self.order.remove(key);
        old.free(&mut self.slab);
        true
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<(&[u8], LogIndex)> {
        self.find(key).map(|r| (r.0.value(), r.0.revision()))
    }

    /// The record of `key`, if there is one.
    fn find(&self, key: &[u8]) -> Option<&Rec> {
        self.map.find(self.hasher.hash_one(key), holds(key))
    }

    /// Files `rec`, whose key `map` does not hold, under its key's hash `h`.
    fn insert_new(&mut self, h: u64, rec: Rec) {
        let hasher = &self.hasher;
        self.map
            .insert_unique(h, rec, |r| hasher.hash_one(r.0.key()));
    }

    /// Starts loading the record of `key`, if there is one, into the cache, without waiting
    /// for it: a batch of committed entries names its keys before it is applied, and a
    /// record not touched since the last write of its key is a cache miss (the dictionary's
    /// largest cost on a follower). Reads only the hash index; a candidate record is
    /// prefetched, not read.
    pub(super) fn prefetch(&self, key: &[u8]) {
        let _ = self.map.find(self.hasher.hash_one(key), |r| {
            prefetch(r.0 .0.as_ptr());
            false
        });
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry from `lower` on, in key order.
    pub(super) fn range<'a>(
        &'a self,
        lower: Bound<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8], LogIndex)> + 'a {
        self.order
            .range(lower)
            .map(|p| (p.key(), p.value(), p.revision()))
    }

    /// Every entry in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], LogIndex)> {
        self.range(Bound::Unbounded)
    }

    /// Builds a dictionary from entries in strictly ascending key order (a snapshot's): the
    /// ordered index is built in one pass, its nodes full, and the hash table sized once.
    pub(super) fn from_sorted<'a>(
        count: usize,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8], LogIndex)>,
    ) -> Dict {
        // Built inside a `Dict`, so that its `Drop` frees what was built should `entries`
        // panic.
        let mut d = Dict {
            map: HashTable::with_capacity(count),
            hasher: RandomState::new(),
            order: Ordered::default(),
            slab: Slab::default(),
        };
        let mut ptrs = Vec::with_capacity(count);
        for (k, v, r) in entries {
            let rec = Rec::new(&mut d.slab, k, v, r);
            ptrs.push(rec.0);
            let h = d.hasher.hash_one(k);
            let dup = match d.map.find_entry(h, holds(k)) {
                Ok(mut slot) => Some(std::mem::replace(slot.get_mut(), rec)),
                Err(_) => {
                    d.insert_new(h, rec);
                    None
                }
            };
            if let Some(dup) = dup {
                // Not sorted after all (the caller checks; this keeps the invariants anyway).
                ptrs.retain(|p| p.0 != dup.0 .0);
                dup.free(&mut d.slab);
            }
        }
        // The caller checks the order too; sorting what is sorted is one pass of comparisons,
        // and the ordered index's invariants, which memory safety rests on, then hold whatever
        // came in.
        ptrs.sort_unstable();
        d.order = Ordered::from_sorted(ptrs);
        d
    }

    /// Asserts the invariants the unsafe code rests on (tests only: it walks everything).
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert_eq!(
            self.map.len(),
            self.order.len(),
            "both indexes hold every record"
        );
        self.order.check();
        self.slab.check();
        let alone = self
            .iter()
            .filter(|(k, v, _)| slab::allocated_alone(RecPtr::size(k.len(), v.len())))
            .count();
        assert_eq!(
            self.slab.alone(),
            alone,
            "the records allocated alone, which `drop` must free, are counted"
        );
        for p in self.order.iter() {
            let owner = self.find(p.key()).expect("an ordered pointer has an owner");
            assert_eq!(
                owner.0 .0, p.0,
                "the ordered index points at the owned record"
            );
        }
    }
}

/// Whether a record in `map` is the one of `key` (the table compares by the key inside it).
fn holds(key: &[u8]) -> impl Fn(&Rec) -> bool + '_ {
    move |r| r.0.key() == key
}

/// Asks the CPU to bring the line at `p` and the next into its cache (a record's head and key,
/// and most of a short value). Never faults, whatever `p` points at.
#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64) as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Clone for Dict {
    fn clone(&self) -> Dict {
        Dict::from_sorted(self.len(), self.iter())
    }
}

impl PartialEq for Dict {
    fn eq(&self, other: &Dict) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
impl Eq for Dict {}

impl fmt::Debug for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v, r)| (k, (v, r))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::collections::BTreeMap;

    #[test]
    fn matches_a_plain_ordered_map_through_random_writes() {
        // Goal: the two indexes and the in-place/moved records behave as one ordered map.
        // Method: random puts (values of varying length, so records both stay and move, in
        // slab slots of three sizes and one past the largest slot),
        // deletes and lookups against a BTreeMap oracle; invariants and order checked as we go.
        let mut rng = SplitMix64::new(7);
        let mut d = Dict::default();
        let mut oracle: BTreeMap<Vec<u8>, (Vec<u8>, LogIndex)> = BTreeMap::new();
        for i in 1..5000u64 {
            let key = format!("k{}", rng.next_u64() % 300).into_bytes();
            match rng.next_u64() % 4 {
                0 => assert_eq!(d.remove(&key), oracle.remove(&key).is_some()),
                _ => {
                    let len = [0, 7, 14, slab::MAX_SLOT][(rng.next_u64() % 4) as usize];
                    let value = vec![(i % 251) as u8; len];
                    d.insert(&key, &value, LogIndex(i));
                    oracle.insert(key.clone(), (value, LogIndex(i)));
                }
            }
            assert_eq!(
                d.get(&key),
                oracle.get(&key).map(|(v, r)| (v.as_slice(), *r))
            );
            if i % 500 == 0 {
                d.check();
                let got: Vec<_> = d
                    .iter()
                    .map(|(k, v, r)| (k.to_vec(), v.to_vec(), r))
                    .collect();
                let want: Vec<_> = oracle
                    .iter()
                    .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
                    .collect();
                assert_eq!(got, want);
                let lower = b"k15".as_slice();
                let got: Vec<&[u8]> = d.range(Bound::Excluded(lower)).map(|e| e.0).collect();
                let want: Vec<&[u8]> = oracle
                    .range::<[u8], _>((Bound::Excluded(lower), Bound::Unbounded))
                    .map(|(k, _)| k.as_slice())
                    .collect();
                assert_eq!(got, want);
            }
        }
        let copy = d.clone();
        copy.check();
        assert_eq!(copy, d);
        assert_eq!(copy.len(), oracle.len());
    }

    #[test]
    fn empty_keys_and_values_are_records_too() {
        // Goal: zero-length keys and values need no special case (the head is never empty).
        let mut d = Dict::default();
        d.insert(b"", b"", LogIndex(1));
        d.insert(b"a", b"", LogIndex(2));
        assert_eq!(d.get(b""), Some((&b""[..], LogIndex(1))));
        d.insert(b"", b"x", LogIndex(3));
        assert_eq!(d.get(b""), Some((&b"x"[..], LogIndex(3))));
        d.check();
        assert!(d.remove(b""));
        assert!(!d.remove(b""));
        assert_eq!(d.len(), 1);
        d.check();
    }
}
