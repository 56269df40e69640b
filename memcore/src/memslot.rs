// SPDX-License-Identifier: GPL-2.0-only
//! Memslots: the validation and change kinds of `KVM_SET_USER_MEMORY_REGION(2)` and the set of
//! slots faults look GFNs up in (upstream `kvm_vm_ioctl_set_memory_region`,
//! `check_memory_region_flags`, `kvm_set_memory_region`, `kvm_check_memslot_overlap`, x86's
//! `kvm_arch_prepare_memory_region`, 6.12).
//!
//! A request goes through the same steps, in the same order, as upstream, so that the first
//! failing check gives the same errno:
//! 1. [`check_ioctl`]: the slot id against `KVM_USER_MEM_SLOTS` and, for the v1 ioctl, its flags;
//! 2. [`MemslotSet::prepare`]: flags ([`check_flags`]), sizes and alignment, the address space,
//!    the change kind (create / delete / move / flags-only / nothing), overlap → `EEXIST`;
//! 3. the caller binds a guest_memfd for a `KVM_MEM_GUEST_MEMFD` create (`EBADF`/`EINVAL`, see
//!    [`crate::gmem`]);
//! 4. [`MemslotSet::commit`]: the arch checks (the slot's last GFN within the MMU's reach and not
//!    a TD's shared alias → `EINVAL`), then the change.
//!
//! Slots are kept sorted by base GFN (they never overlap), so a GFN lookup is a binary search.
//! Slot-id lookups scan: `KVM_USER_MEM_SLOTS` is 32764 and ids are looked up only by the ioctl.

use crate::store::Store;
use crate::uapi::{
    page_aligned, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_MAX_NR_PAGES,
    KVM_MEM_READONLY, KVM_MEM_SLOTS_NUM, KVM_SET_USER_MEMORY_REGION_V1_FLAGS, KVM_USER_MEM_SLOTS,
    PAGE_SHIFT, PAGE_SIZE,
};
use crate::Errno;
use mmu::Gfn;

/// What a VM allows in its memslots (upstream: `kvm_arch_has_private_mem`,
/// `kvm_arch_has_readonly_mem`, `kvm_arch_nr_memslot_as_ids`, `kvm_mmu_max_gfn`,
/// `kvm_gfn_direct_bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmMemCaps {
    /// The VM has private memory (TDs, `KVM_X86_SW_PROTECTED_VM`): `KVM_MEM_GUEST_MEMFD` is valid.
    pub private_mem: bool,
    /// `KVM_MEM_READONLY` is valid (not for VMs with protected state, i.e. TDs).
    pub readonly_mem: bool,
    /// Whether `KVM_MEM_LOG_DIRTY_PAGES` is accepted. Upstream always offers it (6.12 has no
    /// TDs); the module offers it to every VM but a TD, whose private memory cannot be logged
    /// and whose shared memory it does not log (see [`crate::dirty`]).
    pub dirty_logging: bool,
    /// Address spaces (1 without SMM).
    pub nr_as_ids: u16,
    /// The largest GFN the MMU can map (`kvm_mmu_max_gfn`).
    pub max_gfn: Gfn,
    /// A TD's shared bit as a GFN bit: slots may not reach it (`kvm_is_gfn_alias`).
    pub shared_gfn_bit: Option<u64>,
}

/// Which ioctl carried the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionIoctl {
    /// `KVM_SET_USER_MEMORY_REGION` (`struct kvm_userspace_memory_region`).
    V1,
    /// `KVM_SET_USER_MEMORY_REGION2` (`struct kvm_userspace_memory_region2`).
    V2,
}

/// The fields of `struct kvm_userspace_memory_region2` the checks read (v1 requests have the
/// guest_memfd fields zero, as upstream zeroes the tail of its copy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionRequest {
    /// Address space in bits 31:16, slot id in bits 15:0.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest-physical base.
    pub guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// Host virtual address of the shared backing.
    pub userspace_addr: u64,
    /// Offset of the slot in its guest_memfd (with `KVM_MEM_GUEST_MEMFD`).
    pub guest_memfd_offset: u64,
    /// The guest_memfd (with `KVM_MEM_GUEST_MEMFD`).
    pub guest_memfd: u32,
}

/// Identifies one guest_memfd file for the lifetime of the module (never reused), so a slot can
/// name its file without holding a reference: the file pins the VM, not the other way round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GmemId(pub u64);

/// A slot's guest_memfd binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GmemSlot {
    /// The file.
    pub file: GmemId,
    /// Page offset of the slot's first GFN in the file.
    pub pgoff: u64,
}

/// One memslot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memslot {
    /// Slot id within its address space.
    pub id: u16,
    /// First GFN.
    pub base_gfn: Gfn,
    /// Size in pages (never 0 in a set).
    pub npages: u64,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Host virtual address of the first page's shared backing.
    pub userspace_addr: u64,
    /// The guest_memfd binding (`KVM_MEM_GUEST_MEMFD` slots).
    pub gmem: Option<GmemSlot>,
}

impl Memslot {
    /// One past the last GFN.
    pub fn end_gfn(&self) -> Gfn {
        Gfn::new(self.base_gfn.raw() + self.npages)
    }

    /// Whether `gfn` is in the slot.
    pub fn contains(&self, gfn: Gfn) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }

    /// The host virtual address backing `gfn` (shared view), which must be in the slot.
    pub fn gfn_to_hva(&self, gfn: Gfn) -> u64 {
        self.userspace_addr + ((gfn.raw() - self.base_gfn.raw()) << PAGE_SHIFT)
    }

    /// The guest_memfd page index backing `gfn`, which must be in the slot.
    pub fn gfn_to_gmem_index(&self, gfn: Gfn) -> Option<u64> {
        self.gmem
            .map(|g| g.pgoff + (gfn.raw() - self.base_gfn.raw()))
    }

    /// Whether guest writes are refused (`KVM_MEM_READONLY`).
    pub fn is_readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    /// The GFNs whose shared backing lies in `[hva_start, hva_end)`, if any (upstream
    /// `hva_to_gfn_memslot` over the clamped range, the end rounded up to a page).
    pub fn hva_range_to_gfns(&self, hva_start: u64, hva_end: u64) -> Option<(Gfn, Gfn)> {
        let slot_end = self.userspace_addr + (self.npages << PAGE_SHIFT);
        let start = hva_start.max(self.userspace_addr);
        let end = hva_end.min(slot_end);
        if start >= end {
            return None;
        }
        let first = (start - self.userspace_addr) >> PAGE_SHIFT;
        let last = (end - self.userspace_addr).div_ceil(PAGE_SIZE);
        Some((
            Gfn::new(self.base_gfn.raw() + first),
            Gfn::new(self.base_gfn.raw() + last),
        ))
    }
}

/// What a request changes (upstream `enum kvm_mr_change`, plus "nothing").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new slot.
    Create(Memslot),
    /// The slot goes away: both roots are zapped over it.
    Delete(Memslot),
    /// Same id, size and backing at a new base GFN: both roots are zapped over the old range.
    Move {
        /// The slot as it is.
        old: Memslot,
        /// The slot as it will be.
        new: Memslot,
    },
    /// Only flags other than `KVM_MEM_READONLY` change.
    FlagsOnly {
        /// The slot as it is.
        old: Memslot,
        /// The slot as it will be.
        new: Memslot,
    },
    /// The request equals the slot: success without a change.
    Unchanged,
}

/// The ioctl-level checks (upstream `kvm_vm_ioctl_set_memory_region` and the v1 flag check in
/// `kvm_vm_ioctl`).
///
/// # Errors
///
/// [`Errno::EINVAL`]: a slot id at or above `KVM_USER_MEM_SLOTS`, or a v1 request with a flag
/// beyond `KVM_SET_USER_MEMORY_REGION_V1_FLAGS`.
pub fn check_ioctl(ioctl: RegionIoctl, req: &RegionRequest) -> Result<(), Errno> {
    // The v1 flag check runs first upstream (in the ioctl switch); both are EINVAL anyway.
    if ioctl == RegionIoctl::V1 && req.flags & !KVM_SET_USER_MEMORY_REGION_V1_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    if u32::from(req.slot as u16) >= KVM_USER_MEM_SLOTS {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The flags a VM accepts (upstream `check_memory_region_flags`).
///
/// # Errors
///
/// [`Errno::EINVAL`] for any flag the VM does not accept: `KVM_MEM_GUEST_MEMFD` without private
/// memory, `KVM_MEM_READONLY` on a VM without read-only memory or together with
/// `KVM_MEM_GUEST_MEMFD`, `KVM_MEM_LOG_DIRTY_PAGES` with `KVM_MEM_GUEST_MEMFD`, unknown bits.
pub fn check_flags(caps: &VmMemCaps, flags: u32) -> Result<(), Errno> {
    let mut valid = if caps.dirty_logging {
        KVM_MEM_LOG_DIRTY_PAGES
    } else {
        0
    };
    if caps.private_mem {
        valid |= KVM_MEM_GUEST_MEMFD;
    }
    // Dirty logging of private memory is not supported.
    if flags & KVM_MEM_GUEST_MEMFD != 0 {
        valid &= !KVM_MEM_LOG_DIRTY_PAGES;
    }
    // Writes to read-only slots are emulated MMIO, which private memory cannot be.
    if caps.readonly_mem && flags & KVM_MEM_GUEST_MEMFD == 0 {
        valid |= KVM_MEM_READONLY;
    }
    if flags & !valid != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The VM's memslots of one address space, sorted by base GFN, in caller storage.
#[derive(Debug)]
pub struct MemslotSet<S: Store<Memslot>> {
    store: S,
    nr_pages: u64,
    generation: u64,
}

impl<S: Store<Memslot>> MemslotSet<S> {
    /// An empty set over `store` (which must be empty).
    pub fn new(store: S) -> Self {
        MemslotSet {
            store,
            nr_pages: 0,
            generation: 0,
        }
    }

    /// The slots, sorted by base GFN.
    pub fn slots(&self) -> &[Memslot] {
        self.store.as_slice()
    }

    /// The storage (the module grows it between calls).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Pages over all slots (upstream `kvm->nr_memslot_pages`).
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// Bumped by every committed change, so a fault that looked a slot up before a change can
    /// tell (upstream's memslot generation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slot with id `id`.
    pub fn by_id(&self, id: u16) -> Option<&Memslot> {
        self.slots().iter().find(|s| s.id == id)
    }

    /// The slot holding `gfn` (upstream `__gfn_to_memslot`).
    pub fn lookup(&self, gfn: Gfn) -> Option<&Memslot> {
        let slots = self.slots();
        let i = slots.partition_point(|s| s.base_gfn <= gfn);
        let s = slots.get(i.checked_sub(1)?)?;
        s.contains(gfn).then_some(s)
    }

    /// Whether a slot other than `id` overlaps `[start, end)` (upstream
    /// `kvm_check_memslot_overlap`).
    pub fn overlaps(&self, id: u16, start: Gfn, end: Gfn) -> bool {
        let slots = self.slots();
        // The first slot ending after `start`: slots are disjoint, so ends are sorted too.
        let i = slots.partition_point(|s| s.end_gfn() <= start);
        slots[i..]
            .iter()
            .take_while(|s| s.base_gfn < end)
            .any(|s| s.id != id)
    }

    /// Calls `f` with each slot whose shared backing overlaps `[hva_start, hva_end)` and the GFNs
    /// of the overlap (what an MMU-notifier invalidation must zap in the shared root).
    pub fn for_each_hva_overlap(
        &self,
        hva_start: u64,
        hva_end: u64,
        mut f: impl FnMut(&Memslot, Gfn, Gfn),
    ) {
        for s in self.slots() {
            if let Some((start, end)) = s.hva_range_to_gfns(hva_start, hva_end) {
                f(s, start, end);
            }
        }
    }

    /// Validates `req` against the set and says what it would change (upstream
    /// `kvm_set_memory_region` up to the guest_memfd bind). `user_range_ok(addr, size)` is the
    /// kernel's `untagged_addr(addr) == addr && access_ok(addr, size)`.
    ///
    /// A `KVM_MEM_GUEST_MEMFD` create comes back with `gmem: None`: the caller binds the file
    /// (see [`crate::gmem::Bindings`]), fills the binding in, then commits.
    ///
    /// # Errors
    ///
    /// - [`Errno::EINVAL`]: bad flags; size, GPA, HVA or guest_memfd offset not page aligned, or
    ///   overflowing; a bad HVA range; an address space or id out of range; more than
    ///   `KVM_MEM_MAX_NR_PAGES` pages; deleting a slot that does not exist; changing a
    ///   guest_memfd slot; changing a slot's HVA, size or `KVM_MEM_READONLY`; the total number
    ///   of pages overflowing;
    /// - [`Errno::EEXIST`]: the new range overlaps another slot.
    pub fn prepare(
        &self,
        caps: &VmMemCaps,
        req: &RegionRequest,
        user_range_ok: impl FnOnce(u64, u64) -> bool,
    ) -> Result<Change, Errno> {
        check_flags(caps, req.flags)?;
        let as_id = req.slot >> 16;
        let id = req.slot as u16;

        if !page_aligned(req.memory_size) || !page_aligned(req.guest_phys_addr) {
            return Err(Errno::EINVAL);
        }
        // KVM reads guest memory with __get_user() and friends later on.
        if !page_aligned(req.userspace_addr) || !user_range_ok(req.userspace_addr, req.memory_size)
        {
            return Err(Errno::EINVAL);
        }
        if req.flags & KVM_MEM_GUEST_MEMFD != 0
            && (!page_aligned(req.guest_memfd_offset)
                || req
                    .guest_memfd_offset
                    .checked_add(req.memory_size)
                    .is_none())
        {
            return Err(Errno::EINVAL);
        }
        if as_id >= u32::from(caps.nr_as_ids) || u32::from(id) >= KVM_MEM_SLOTS_NUM {
            return Err(Errno::EINVAL);
        }
        if req.guest_phys_addr.checked_add(req.memory_size).is_none() {
            return Err(Errno::EINVAL);
        }
        if req.memory_size >> PAGE_SHIFT > KVM_MEM_MAX_NR_PAGES {
            return Err(Errno::EINVAL);
        }

        let old = self.by_id(id);
        if req.memory_size == 0 {
            return match old {
                Some(old) if self.nr_pages >= old.npages => Ok(Change::Delete(*old)),
                // Upstream WARNs: the page count cannot be below a slot's size.
                Some(_) => Err(Errno::EIO),
                None => Err(Errno::EINVAL),
            };
        }

        let base_gfn = Gfn::new(req.guest_phys_addr >> PAGE_SHIFT);
        let npages = req.memory_size >> PAGE_SHIFT;
        let new = Memslot {
            id,
            base_gfn,
            npages,
            flags: req.flags,
            userspace_addr: req.userspace_addr,
            gmem: None,
        };
        let change = match old {
            None => {
                // The total over all slots must fit in an unsigned long.
                if self.nr_pages.checked_add(npages).is_none() {
                    return Err(Errno::EINVAL);
                }
                Change::Create(new)
            }
            Some(old) => {
                // Private memslots are immutable: they can only be deleted. Upstream 6.12 checks
                // only the request's flag, so a request without it could move a guest_memfd
                // slot or drop its flag and leave the file's binding behind (later kernels
                // refuse the move); here any change of a guest_memfd slot is refused.
                if req.flags & KVM_MEM_GUEST_MEMFD != 0 || old.gmem.is_some() {
                    return Err(Errno::EINVAL);
                }
                if req.userspace_addr != old.userspace_addr
                    || npages != old.npages
                    || (req.flags ^ old.flags) & KVM_MEM_READONLY != 0
                {
                    return Err(Errno::EINVAL);
                }
                if base_gfn != old.base_gfn {
                    Change::Move { old: *old, new }
                } else if req.flags != old.flags {
                    Change::FlagsOnly { old: *old, new }
                } else {
                    return Ok(Change::Unchanged);
                }
            }
        };
        if let Change::Create(s) | Change::Move { new: s, .. } = change {
            if self.overlaps(id, s.base_gfn, s.end_gfn()) {
                return Err(Errno::EEXIST);
            }
        }
        Ok(change)
    }

    /// The arch checks of a create or move (x86 `kvm_arch_prepare_memory_region`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`]: the slot's last GFN is beyond `max_gfn`, or is a TD's shared alias.
    pub fn arch_prepare(caps: &VmMemCaps, change: &Change) -> Result<(), Errno> {
        if let Change::Create(s) | Change::Move { new: s, .. } = change {
            let last = s.base_gfn.raw() + s.npages - 1;
            if last > caps.max_gfn.raw() {
                return Err(Errno::EINVAL);
            }
            if caps.shared_gfn_bit.is_some_and(|bit| last & bit != 0) {
                return Err(Errno::EINVAL);
            }
        }
        Ok(())
    }

    /// Room the store needs before [`MemslotSet::commit`] of `change` (the caller grows it).
    pub fn room_needed(&self, change: &Change) -> usize {
        match change {
            Change::Create(_) => 1usize.saturating_sub(self.store.spare()),
            _ => 0,
        }
    }

    /// Applies a prepared change (after [`MemslotSet::arch_prepare`]); nothing changes on error.
    /// The caller zaps the old range of a delete or move, with the slot already gone from the
    /// set (upstream invalidates the slot first so no fault can re-map it meanwhile).
    ///
    /// # Errors
    ///
    /// - [`Errno::EINVAL`]: [`MemslotSet::arch_prepare`] refused it;
    /// - [`Errno::ENOMEM`]: the store has no room for a new slot;
    /// - [`Errno::EIO`]: `change` was not prepared against this set (the slot it names is not
    ///   there, or a new range overlaps).
    pub fn commit(&mut self, caps: &VmMemCaps, change: &Change) -> Result<(), Errno> {
        Self::arch_prepare(caps, change)?;
        match *change {
            Change::Unchanged => return Ok(()),
            Change::Create(new) => {
                if self.by_id(new.id).is_some()
                    || self.overlaps(new.id, new.base_gfn, new.end_gfn())
                {
                    return Err(Errno::EIO);
                }
                let at = self.insert_pos(new.base_gfn);
                self.store.insert(at, new)?;
                self.nr_pages += new.npages;
            }
            Change::Delete(old) => {
                let at = self.index_of(&old)?;
                self.store.remove(at);
                self.nr_pages -= old.npages;
            }
            Change::Move { old, new } => {
                let at = self.index_of(&old)?;
                if self.overlaps(new.id, new.base_gfn, new.end_gfn()) {
                    return Err(Errno::EIO);
                }
                self.store.remove(at);
                let to = self.insert_pos(new.base_gfn);
                // Cannot fail: the removal just made room.
                self.store.insert(to, new)?;
            }
            Change::FlagsOnly { old, new } => {
                let at = self.index_of(&old)?;
                self.store.as_mut_slice()[at] = new;
            }
        }
        self.generation += 1;
        Ok(())
    }

    fn insert_pos(&self, base: Gfn) -> usize {
        self.slots().partition_point(|s| s.base_gfn < base)
    }

    fn index_of(&self, slot: &Memslot) -> Result<usize, Errno> {
        self.slots()
            .iter()
            .position(|s| s == slot)
            .ok_or(Errno::EIO)
    }
}
