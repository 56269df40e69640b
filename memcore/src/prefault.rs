// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_PRE_FAULT_MEMORY`: the checks and the progress loop of upstream
//! `kvm_vcpu_pre_fault_memory` (virt/kvm/kvm_main.c), the per-step length of x86's
//! `kvm_arch_vcpu_pre_fault_memory`, and the host-backing part of a fault's `max_level`
//! (when a 2 MiB leaf may map private memory).

use crate::attributes::AttrMap;
use crate::attributes::AttrRange;
use crate::memslot::Memslot;
use crate::store::Store;
use crate::uapi::{page_aligned, PAGE_SHIFT};
use crate::Errno;
use mmu::{Gfn, Level};

/// `struct kvm_pre_fault_memory` without its padding (which upstream does not check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreFaultRange {
    /// Next guest-physical address to map; advanced with the progress.
    pub gpa: u64,
    /// Bytes left; shrinks with the progress.
    pub size: u64,
    /// Must be 0.
    pub flags: u64,
}

/// The checks before any work.
///
/// # Errors
///
/// [`Errno::EINVAL`]: non-zero flags; an address or size not page aligned; a zero or wrapping
/// range.
pub fn check(range: &PreFaultRange) -> Result<(), Errno> {
    if range.flags != 0 {
        return Err(Errno::EINVAL);
    }
    if !page_aligned(range.gpa)
        || !page_aligned(range.size)
        || range.gpa.wrapping_add(range.size) <= range.gpa
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Bytes of the range a mapping at `level` covering `gpa` accounts for: up to the end of that
/// mapping, which may start below `gpa` and end past the range.
pub fn step_len(gpa: u64, size: u64, level: Level) -> u64 {
    let bytes = level.pages() << PAGE_SHIFT;
    let end = (gpa & !(bytes - 1)) + bytes;
    size.min(end - gpa)
}

/// Runs the progress loop over a checked `range` (upstream `kvm_vcpu_pre_fault_memory`):
/// `map_one(gpa)` maps the page at `gpa` and says at which level; `signal_pending` is polled
/// before each step. `range` is advanced as pages get mapped.
///
/// Returns `Ok(())` if at least one page was mapped (a later error is then not reported, as
/// upstream), otherwise the first error.
///
/// # Errors
///
/// [`Errno::EINTR`] if a signal was pending before the first step; otherwise what `map_one`
/// returned on the first page (`ENOENT`, `EOPNOTSUPP`, `EFAULT`, `ENOMEM`, ...).
pub fn run(
    range: &mut PreFaultRange,
    mut signal_pending: impl FnMut() -> bool,
    mut map_one: impl FnMut(u64) -> Result<Level, Errno>,
) -> Result<(), Errno> {
    let full = range.size;
    let mut result = Ok(());
    while range.size != 0 {
        if signal_pending() {
            result = Err(Errno::EINTR);
            break;
        }
        match map_one(range.gpa) {
            Ok(level) => {
                let n = step_len(range.gpa, range.size, level);
                range.gpa += n;
                range.size -= n;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if range.size == full {
        result
    } else {
        Ok(())
    }
}

/// The largest level a private fault at `gfn` may map at, given its memslot, the VM's
/// attributes, and whether the guest_memfd folio backing it is one 2 MiB folio whose first page
/// is the slot's page for the 2 MiB-aligned GFN (upstream: `kvm_max_level_for_order` +
/// `lpage_info` mixed-attribute tracking + the slot alignment in `kvm_alloc_memslot_metadata`).
///
/// A 2 MiB leaf needs all of: the aligned 2 MiB GFN range inside the slot; the slot's file
/// offset congruent to its GFN modulo 2 MiB (so one folio backs one aligned GFN range);
/// uniform attributes over the range; the folio itself 2 MiB.
pub fn private_max_level<S: Store<AttrRange>>(
    slot: &Memslot,
    gfn: Gfn,
    attrs: &AttrMap<S>,
    folio_is_2m: bool,
) -> Level {
    let pages = Level::L2M.pages();
    let start = gfn.raw() & !(pages - 1);
    let end = start + pages;
    let Some(g) = slot.gmem else {
        return Level::L4K;
    };
    let congruent = (slot.base_gfn.raw().wrapping_sub(g.pgoff)) & (pages - 1) == 0;
    if folio_is_2m
        && congruent
        && start >= slot.base_gfn.raw()
        && end <= slot.end_gfn().raw()
        && attrs.uniform(Gfn::new(start), Gfn::new(end)).is_some()
    {
        Level::L2M
    } else {
        Level::L4K
    }
}

/// The largest level a shared fault at `gfn` may map at as far as the memslot and the VM's
/// attributes go (upstream `lpage_info`: `kvm_alloc_memslot_metadata` disallows huge pages at
/// a slot's unaligned head and tail, and everywhere when the slot's GFN and HVA are not
/// congruent modulo the huge page size; mixed attributes disallow them too). The caller still
/// caps it by the host mapping level (the VMM's page tables: a THP maps 2 MiB) and by dirty
/// logging. `check_attrs`: the VM has per-GFN attributes (private memory).
pub fn shared_max_level<S: Store<AttrRange>>(
    slot: &Memslot,
    gfn: Gfn,
    attrs: &AttrMap<S>,
    check_attrs: bool,
) -> Level {
    let pages = Level::L2M.pages();
    let start = gfn.raw() & !(pages - 1);
    let end = start + pages;
    let congruent = (slot.base_gfn.raw() ^ (slot.userspace_addr >> PAGE_SHIFT)) & (pages - 1) == 0;
    if congruent
        && start >= slot.base_gfn.raw()
        && end <= slot.end_gfn().raw()
        && (!check_attrs || attrs.uniform(Gfn::new(start), Gfn::new(end)).is_some())
    {
        Level::L2M
    } else {
        Level::L4K
    }
}
