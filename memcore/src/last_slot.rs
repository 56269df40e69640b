// SPDX-License-Identifier: GPL-2.0-only
//! A vCPU's last-used memslot for the fast page fault (upstream `vcpu->last_used_slot` with
//! the memslot generation that `kvm_vcpu_gfn_to_memslot` trusts it by).
//!
//! Dirty logging re-arms every page it reports, so each guest write after a
//! `KVM_CLEAR_DIRTY_LOG` faults once; the fast path only needs the slot's dirty log and
//! whether the slot is read-only. Looking the slot up under `slots_lock` for each of those
//! faults costs a mutex round trip; instead the vCPU keeps what the last lookup found,
//! tagged with the generation of the slot set it came from. The owner publishes the set's
//! generation (an atomic) whenever it commits a change, before any invalidation that change
//! runs, so a fault that reads the invalidation count, then the published generation, and
//! finds its entry current, saw the same slot as a lookup under the lock would have; if a
//! change races after that, its invalidation sends the fault the full way.

use crate::memslot::Memslot;
use mmu::Gfn;

/// One cached slot: its range, whether it is read-only, and what the owner attaches (the
/// slot's dirty log), valid for one generation of the slot set.
#[derive(Debug)]
pub struct LastSlot<T> {
    entry: Option<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    generation: u64,
    base: Gfn,
    end: Gfn,
    readonly: bool,
    value: T,
}

/// What a hit yields: the slot is read-only, and the attached value.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit<'a, T> {
    /// The slot is `KVM_MEM_READONLY`.
    pub readonly: bool,
    /// What [`LastSlot::fill`] attached.
    pub value: &'a T,
}

impl<T> Default for LastSlot<T> {
    fn default() -> Self {
        LastSlot { entry: None }
    }
}

impl<T> LastSlot<T> {
    /// The cached slot if it is from `generation` and holds `gfn`.
    pub fn get(&self, generation: u64, gfn: Gfn) -> Option<Hit<'_, T>> {
        let e = self.entry.as_ref()?;
        (e.generation == generation && gfn >= e.base && gfn < e.end).then_some(Hit {
            readonly: e.readonly,
            value: &e.value,
        })
    }

    /// Caches `slot` (found in the set of `generation`, under the set's lock) with `value`;
    /// returns the entry's view, as [`Self::get`] would.
    pub fn fill(&mut self, generation: u64, slot: &Memslot, value: T) -> Hit<'_, T> {
        let e = self.entry.insert(Entry {
            generation,
            base: slot.base_gfn,
            end: slot.end_gfn(),
            readonly: slot.is_readonly(),
            value,
        });
        Hit {
            readonly: e.readonly,
            value: &e.value,
        }
    }

    /// Forgets the cached slot (and drops its value).
    pub fn clear(&mut self) {
        self.entry = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::KVM_MEM_READONLY;

    fn slot(base: u64, npages: u64, flags: u32) -> Memslot {
        Memslot {
            id: 1,
            base_gfn: Gfn::new(base),
            npages,
            flags,
            userspace_addr: 0x1000_0000,
            gmem: None,
        }
    }

    #[test]
    fn empty_misses() {
        let c: LastSlot<u32> = LastSlot::default();
        assert_eq!(c.get(0, Gfn::new(0)), None);
    }

    #[test]
    fn hit_within_range_and_generation() {
        let mut c = LastSlot::default();
        let h = c.fill(7, &slot(0x100, 0x10, 0), 42u32);
        assert_eq!((h.readonly, *h.value), (false, 42));
        assert_eq!(c.get(7, Gfn::new(0x100)).map(|h| *h.value), Some(42));
        assert_eq!(c.get(7, Gfn::new(0x10f)).map(|h| *h.value), Some(42));
        // Outside the slot.
        assert_eq!(c.get(7, Gfn::new(0xff)), None);
        assert_eq!(c.get(7, Gfn::new(0x110)), None);
        // Another generation: the set changed, the entry says nothing.
        assert_eq!(c.get(8, Gfn::new(0x100)), None);
        assert_eq!(c.get(6, Gfn::new(0x100)), None);
    }

    #[test]
    fn readonly_and_refill() {
        let mut c = LastSlot::default();
        c.fill(1, &slot(0, 4, KVM_MEM_READONLY), 1u8);
        assert!(c.get(1, Gfn::new(3)).unwrap().readonly);
        c.fill(2, &slot(8, 4, 0), 2u8);
        assert_eq!(c.get(1, Gfn::new(3)), None);
        let h = c.get(2, Gfn::new(9)).unwrap();
        assert_eq!((h.readonly, *h.value), (false, 2));
        c.clear();
        assert_eq!(c.get(2, Gfn::new(9)), None);
    }
}
