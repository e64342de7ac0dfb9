//! Memory for the dictionary's records: pages of `PAGE` bytes, each cut into slots of one size
//! (a multiple of 8), so a record costs its size rounded up to 8 B. Through the global
//! allocator (glibc's malloc) it cost its size plus an 8 B header, rounded up to 16: a 132 B
//! record (16 B key, 100 B value) took 144 B, here 136 B. Records larger than `MAX_SLOT` still
//! go to the global allocator, where the header is a small share of them.
//!
//! A freed slot goes on its page's free list and is reused for the next record of its size. A
//! page that no longer holds any record is given back to the global allocator, unless it is
//! its size's only page with room (so that one key written and deleted over and over does not
//! allocate a page each time).
//!
//! Must not: hand out a slot twice, or let a record outlive the `Slab` (the `Dict` that owns
//! both frees its records, or drops them with the slab). Invariants (checked by `check` in
//! tests): `by_addr` holds every live page once, by address; a page's `live` counts its
//! slots in use; a page is on its size's `with_room` list, at `room_at`, exactly when it has a
//! free or never-used slot.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;

/// Bytes in one page.
const PAGE: usize = 64 << 10;
/// The largest slot; larger records are allocated one by one.
pub(super) const MAX_SLOT: usize = 2048;
const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE, 16) {
    Ok(l) => l,
    Err(_) => panic!("the page layout is valid"),
};
/// `room_at` of a page that is full.
const FULL: u32 = u32::MAX;

struct Page {
    base: NonNull<u8>,
    /// Slot size.
    slot: u32,
    /// Slots in use.
    live: u32,
    /// Bytes from `base` handed out at least once; slots past it were never used.
    bump: u32,
    /// Freed slots, each holding the address of the next (null: none).
    free: *mut u8,
    /// Position in its size's `with_room`, or `FULL`.
    room_at: u32,
}

pub(super) struct Slab {
    /// Pages by id; the id of a page given back is reused (`free_ids`).
    pages: Vec<Option<Page>>,
    free_ids: Vec<u32>,
    /// Base address → page id of every page: a freed slot's page is the last one at or below
    /// it. A map, not a sorted `Vec`, so that adding or giving back a page of a dictionary of
    /// many gigabytes does not move a megabyte of entries.
    by_addr: BTreeMap<usize, u32>,
    /// Per slot size (index `slot / 8 - 1`): the ids of its pages with a slot to give.
    with_room: Vec<Vec<u32>>,
    /// Records allocated one by one and not yet freed: while there are none, a dictionary
    /// that goes need not look at its records at all.
    alone: usize,
}

// The slab only hands out memory that the `Dict` owning it reaches through `&mut self` (to
// write or free) or `&self` (to read): moving it, or reading it, from another thread is like
// doing so with any owned collection.
unsafe impl Send for Slab {}
unsafe impl Sync for Slab {}

impl Default for Slab {
    fn default() -> Slab {
        Slab {
            pages: Vec::new(),
            free_ids: Vec::new(),
            by_addr: BTreeMap::new(),
            with_room: (0..MAX_SLOT / 8).map(|_| Vec::new()).collect(),
            alone: 0,
        }
    }
}

/// The slot size for a record of `size` bytes, when the slab serves it.
fn slot_for(size: usize) -> Option<usize> {
    (size <= MAX_SLOT).then(|| size.max(8).next_multiple_of(8))
}

/// Whether memory of `size` bytes is allocated one by one (past `MAX_SLOT`), so that its owner
/// must free it before the slab goes; the rest goes with the slab's pages.
pub(super) fn allocated_alone(size: usize) -> bool {
    slot_for(size).is_none()
}

fn large_layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a record's size fits a layout")
}

impl Slab {
    /// Memory for a record of `size` bytes, 8-aligned.
    pub(super) fn alloc(&mut self, size: usize) -> NonNull<u8> {
        let Some(slot) = slot_for(size) else {
            let layout = large_layout(size);
            // SAFETY: `size` is above MAX_SLOT, so the layout is not zero-sized.
            let p = unsafe { alloc::alloc(layout) };
            let p = NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout));
            self.alone += 1;
            return p;
        };
        let class = slot / 8 - 1;
        let id = match self.with_room[class].last() {
            Some(&id) => id,
            None => self.new_page(slot),
        };
        let page = self.pages[id as usize]
            .as_mut()
            .expect("a page with room is live");
        let p = if let Some(p) = NonNull::new(page.free) {
            // SAFETY: a free slot holds the next free slot's address in its first 8 bytes
            // (written by `free`, 8-aligned, slots are at least 8 B).
            page.free = unsafe { (p.as_ptr() as *const *mut u8).read() };
            p
        } else {
            // SAFETY: `bump + slot <= PAGE` while the page has room and no free slot.
            let p = unsafe { page.base.add(page.bump as usize) };
            page.bump += slot as u32;
            p
        };
        page.live += 1;
        if page.free.is_null() && page.bump as usize + slot > PAGE {
            self.leave_room_list(id);
        }
        p
    }

    /// Gives back a record's memory.
    ///
    /// # Safety
    /// `p` came from `alloc(size)` of this slab and was not freed since; nothing reads it
    /// after.
    pub(super) unsafe fn free(&mut self, p: NonNull<u8>, size: usize) {
        let Some(slot) = slot_for(size) else {
            // SAFETY: allocated in `alloc` with this very layout (the caller's contract).
            unsafe { alloc::dealloc(p.as_ptr(), large_layout(size)) };
            self.alone -= 1;
            return;
        };
        let addr = p.as_ptr() as usize;
        let (_, &id) = self
            .by_addr
            .range(..=addr)
            .next_back()
            .expect("a slot lies in a page");
        let page = self.pages[id as usize].as_mut().expect("a live page");
        debug_assert_eq!(page.slot as usize, slot, "freed with the size it was given");
        // SAFETY: the slot is ours again (the caller's contract) and 8-aligned, at least 8 B.
        unsafe { (p.as_ptr() as *mut *mut u8).write(page.free) };
        page.free = p.as_ptr();
        page.live -= 1;
        let (live, full) = (page.live, page.room_at == FULL);
        let class = slot / 8 - 1;
        if full {
            self.room_list_push(id, class);
        }
        if live == 0 && self.with_room[class].len() > 1 {
            self.release(id, class);
        }
    }

    /// Records allocated one by one (past `MAX_SLOT`) and not freed yet.
    pub(super) fn alone(&self) -> usize {
        self.alone
    }

    fn new_page(&mut self, slot: usize) -> u32 {
        // SAFETY: PAGE_LAYOUT is not zero-sized.
        let base = unsafe { alloc::alloc(PAGE_LAYOUT) };
        let base = NonNull::new(base).unwrap_or_else(|| alloc::handle_alloc_error(PAGE_LAYOUT));
        let page = Page {
            base,
            slot: slot as u32,
            live: 0,
            bump: 0,
            free: std::ptr::null_mut(),
            room_at: FULL,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.pages[id as usize] = Some(page);
                id
            }
            None => {
                self.pages.push(Some(page));
                u32::try_from(self.pages.len() - 1).expect("fewer than 2^32 pages")
            }
        };
        let addr = base.as_ptr() as usize;
        self.by_addr.insert(addr, id);
        self.room_list_push(id, slot / 8 - 1);
        id
    }

    fn room_list_push(&mut self, id: u32, class: usize) {
        let list = &mut self.with_room[class];
        let page = self.pages[id as usize].as_mut().expect("a live page");
        page.room_at = list.len() as u32;
        list.push(id);
    }

    fn leave_room_list(&mut self, id: u32) {
        let page = self.pages[id as usize].as_mut().expect("a live page");
        let (at, class) = (page.room_at as usize, page.slot as usize / 8 - 1);
        page.room_at = FULL;
        let list = &mut self.with_room[class];
        list.swap_remove(at);
        if let Some(&moved) = list.get(at) {
            self.pages[moved as usize]
                .as_mut()
                .expect("a live page")
                .room_at = at as u32;
        }
    }

    /// Gives an empty page back.
    fn release(&mut self, id: u32, class: usize) {
        self.leave_room_list(id);
        debug_assert!(!self.with_room[class].contains(&id));
        let page = self.pages[id as usize].take().expect("a live page");
        let removed = self.by_addr.remove(&(page.base.as_ptr() as usize));
        debug_assert_eq!(removed, Some(id));
        // SAFETY: allocated in `new_page` with PAGE_LAYOUT; no slot of it is in use.
        unsafe { alloc::dealloc(page.base.as_ptr(), PAGE_LAYOUT) };
        self.free_ids.push(id);
    }

    /// Pages held (tests).
    #[cfg(test)]
    pub(super) fn page_count(&self) -> usize {
        self.by_addr.len()
    }

    /// Asserts the invariants in the module doc (tests only).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let live_pages = self.pages.iter().filter(|p| p.is_some()).count();
        assert_eq!(
            self.by_addr.len(),
            live_pages,
            "every live page is found by address"
        );
        for (&addr, &id) in &self.by_addr {
            let page = self.pages[id as usize].as_ref().expect("a live page");
            assert_eq!(page.base.as_ptr() as usize, addr);
            let slot = page.slot as usize;
            let mut free = 0;
            let mut f = page.free;
            while !f.is_null() {
                free += 1;
                // SAFETY: the free list links free slots of this page.
                f = unsafe { (f as *const *mut u8).read() };
            }
            assert_eq!(
                free + page.live as usize,
                page.bump as usize / slot,
                "slots add up"
            );
            let room = free > 0 || page.bump as usize + slot <= PAGE;
            let class = slot / 8 - 1;
            if room {
                assert_eq!(self.with_room[class][page.room_at as usize], id);
            } else {
                assert_eq!(page.room_at, FULL);
            }
        }
    }
}

impl Drop for Slab {
    /// Gives every page back. Records larger than `MAX_SLOT` are not the slab's to find: their
    /// owner frees them first.
    fn drop(&mut self) {
        for page in self.pages.iter_mut().filter_map(Option::take) {
            // SAFETY: allocated in `new_page` with PAGE_LAYOUT; the records in it die with the
            // slab (the module's contract).
            unsafe { alloc::dealloc(page.base.as_ptr(), PAGE_LAYOUT) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn slots_are_never_shared_and_empty_pages_go_back() {
        // Goal: no slot is handed out twice, whatever the order of allocations and frees.
        // Method: random sizes (both sides of MAX_SLOT) and random frees; each allocation is
        // filled with its own byte, checked intact when it is freed and at the end; the
        // invariants checked as we go; then everything freed leaves one page per size at most.
        let mut rng = SplitMix64::new(3);
        let mut slab = Slab::default();
        let mut held: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
        let sizes = [16, 24, 132, 136, 140, 700, MAX_SLOT, MAX_SLOT + 1, 5000];
        for i in 0..40_000u32 {
            if held.is_empty() || rng.next_u64() % 3 != 0 {
                let size = sizes[(rng.next_u64() % sizes.len() as u64) as usize];
                let p = slab.alloc(size);
                assert_eq!(p.as_ptr() as usize % 8, 0, "8-aligned");
                let fill = (i % 251) as u8;
                // SAFETY: `size` bytes were just allocated for us.
                unsafe { std::ptr::write_bytes(p.as_ptr(), fill, size) };
                held.push((p, size, fill));
            } else {
                let at = (rng.next_u64() % held.len() as u64) as usize;
                let (p, size, fill) = held.swap_remove(at);
                // SAFETY: allocated above, not freed yet.
                let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
                assert!(
                    bytes.iter().all(|&b| b == fill),
                    "a slot was written by another"
                );
                unsafe { slab.free(p, size) };
            }
            if i % 4000 == 0 {
                slab.check();
            }
            let alone = held.iter().filter(|h| allocated_alone(h.1)).count();
            assert_eq!(slab.alone(), alone, "records allocated alone, counted");
        }
        slab.check();
        for (p, size, fill) in held.drain(..) {
            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
            assert!(bytes.iter().all(|&b| b == fill));
            unsafe { slab.free(p, size) };
        }
        slab.check();
        let slab_sizes = sizes.iter().filter(|&&s| s <= MAX_SLOT).count();
        assert!(
            slab.page_count() <= slab_sizes,
            "{} pages kept",
            slab.page_count()
        );
    }

    #[test]
    fn a_record_costs_its_size_rounded_to_8() {
        // Goal: the reason the slab exists: 132 B records sit 136 B apart, no header between.
        let mut slab = Slab::default();
        let a = slab.alloc(132);
        let b = slab.alloc(132);
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 136);
        assert_eq!(slab.page_count(), 1);
        unsafe {
            slab.free(a, 132);
            slab.free(b, 132);
        }
        slab.check();
    }
}
