// SPDX-License-Identifier: GPL-2.0-only
//! The MMU notifier's HVA index: which memslots an invalidated host-virtual range backs
//! (upstream walks the memslots' `hva_tree` under SRCU in `__kvm_handle_hva_range`).
//!
//! The module keeps this index under a spinlock, because the notifier runs where `slots_lock`
//! cannot be taken (reclaim, with the mm's locks held). A spinlock must not be held across a
//! zap: a `munmap` of 1 GiB of guest memory walks 262144 entries, and a zap that may block
//! drops the MMU lock and reschedules between them. So the notifier takes the index in
//! **batches**: [`HvaIndex::batch`] copies out the GFN spans of at most a few slots, after
//! scanning at most a bounded number of entries, and returns a [`Cursor`] to continue from
//! after the caller dropped the lock and zapped what it got.
//!
//! Why a walk in batches misses nothing: the index is sorted by slot id and the cursor is the
//! last id examined, so every slot that stays in the index from the first batch to the last is
//! examined exactly once, whatever is inserted or removed meanwhile. A slot that changes during
//! the walk needs nothing from it: a deleted or moved slot's old range is zapped by the memslot
//! change itself, and a new (or newly placed) slot has no mapping a fault could have installed
//! before the invalidation began (faults check the invalidation count, which the caller raised
//! before the first batch, and retry).

use crate::errno::Errno;
use crate::store::Store;
use mmu::Gfn;

/// The shared backing of one memslot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvaRange {
    /// The slot's id.
    pub id: u16,
    /// First byte of the backing.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The slot's first GFN.
    pub base_gfn: Gfn,
}

impl HvaRange {
    /// The GFNs whose backing overlaps `[start, end)`, if any: every page any byte of the
    /// range touches.
    pub fn gfns(&self, start: u64, end: u64) -> Option<GfnSpan> {
        let (s, e) = (start.max(self.start), end.min(self.end));
        (s < e).then(|| GfnSpan {
            start: Gfn::new(self.base_gfn.raw() + ((s - self.start) >> 12)),
            end: Gfn::new(self.base_gfn.raw() + (e - self.start).div_ceil(4096)),
        })
    }
}

/// GFNs `[start, end)` of one slot to zap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GfnSpan {
    /// First GFN.
    pub start: Gfn,
    /// One past the last GFN.
    pub end: Gfn,
}

/// Where a walk in batches continues: after the slot id it last examined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor(Option<u16>);

impl Cursor {
    /// The start of a walk.
    pub const START: Cursor = Cursor(None);
}

/// What one batch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// How many spans the batch wrote to the caller's buffer.
    pub found: usize,
    /// Where the next batch starts, or `None`: the walk has examined every slot.
    pub next: Option<Cursor>,
}

/// The index: one [`HvaRange`] per slot, sorted by slot id, in caller storage.
pub struct HvaIndex<S: Store<HvaRange>> {
    store: S,
}

impl<S: Store<HvaRange>> HvaIndex<S> {
    /// An index over `store`, which must be empty.
    pub fn new(store: S) -> Self {
        debug_assert!(store.is_empty());
        HvaIndex { store }
    }

    /// The storage (to grow it outside the caller's lock).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The entries, in id order.
    pub fn as_slice(&self) -> &[HvaRange] {
        self.store.as_slice()
    }

    fn find(&self, id: u16) -> Result<usize, usize> {
        self.store.as_slice().binary_search_by_key(&id, |r| r.id)
    }

    /// Adds a slot's range (a created slot); replaces the entry if the id is present.
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`] if the store has no room: nothing changed.
    pub fn insert(&mut self, r: HvaRange) -> Result<(), Errno> {
        match self.find(r.id) {
            Ok(i) => {
                if let Some(e) = self.store.as_mut_slice().get_mut(i) {
                    *e = r;
                }
                Ok(())
            }
            Err(i) => self.store.insert(i, r),
        }
    }

    /// Removes slot `id`'s range (a deleted slot), if present.
    pub fn remove(&mut self, id: u16) {
        if let Ok(i) = self.find(id) {
            self.store.remove(i);
        }
    }

    /// Gives slot `id` a new first GFN (a moved slot), if present.
    pub fn set_base(&mut self, id: u16, base_gfn: Gfn) {
        if let Ok(i) = self.find(id) {
            if let Some(e) = self.store.as_mut_slice().get_mut(i) {
                e.base_gfn = base_gfn;
            }
        }
    }

    /// One batch of a walk over the slots backed by `[start, end)`: from `from` on, in id
    /// order, writes the GFN spans of overlapping slots to `out` until it is full or
    /// `max_scan` entries were examined (at least one), and says where to go on. `out` must not
    /// be empty (an empty buffer makes no progress).
    pub fn batch(
        &self,
        start: u64,
        end: u64,
        from: Cursor,
        out: &mut [GfnSpan],
        max_scan: usize,
    ) -> Batch {
        let all = self.store.as_slice();
        let first = match from.0 {
            None => 0,
            Some(id) => match self.find(id) {
                Ok(i) => i + 1,
                Err(i) => i,
            },
        };
        let mut found = 0;
        let mut last = from;
        for (scanned, r) in all.iter().skip(first).enumerate() {
            if found == out.len() || scanned == max_scan.max(1) {
                return Batch {
                    found,
                    next: Some(last),
                };
            }
            last = Cursor(Some(r.id));
            if let (Some(span), Some(slot)) = (r.gfns(start, end), out.get_mut(found)) {
                *slot = span;
                found += 1;
            }
        }
        Batch { found, next: None }
    }
}
