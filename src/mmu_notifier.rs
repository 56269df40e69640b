// SPDX-License-Identifier: GPL-2.0-only
//! Coherence of the shared root with the host mm (upstream `kvm_mmu_notifier_*` and the
//! `mmu_invalidate_seq` / `mmu_invalidate_in_progress` protocol of virt/kvm/kvm_main.c).
//!
//! Shared guest memory is the VMM's anonymous (or file) memory, resolved with GUP at fault
//! time; the page reference is dropped once the page is mapped, as upstream does. What keeps a
//! mapping from outliving the host page is the MMU notifier registered on the VM creator's mm
//! at the first memslot: `invalidate_range_start` zaps the shared root over every slot whose
//! HVAs overlap the range, so `munmap`, `madvise(MADV_DONTNEED)`, migration or reclaim of a
//! slot's backing never leaves a stale entry.
//!
//! A fault that looked things up (slot, attributes, GUP, guest_memfd folio) before an
//! invalidation must not map what it found: every invalidation — notifier ranges, memslot
//! deletes and moves, attribute conversions, hole punches — is bracketed by
//! [`Invalidation::begin`] / [`Invalidation::end`] around its zap, and the fault, having read
//! [`Invalidation::seq`] before its lookups, checks [`Invalidation::retry`] under the MMU lock
//! before mapping. A begin before the fault's check is seen (in progress); one after it finds
//! the new mapping already in place and zaps it (its zap takes the MMU lock exclusively, after
//! the fault dropped it).
//!
//! The notifier runs in reclaim and with the mm's locks held: it takes only the HVA index's
//! spinlock and the MMU lock, never `slots_lock` (which is held while allocating). The index
//! ([`HvaRange`]s, one per slot) is updated by memslot changes under `slots_lock`, with its
//! room made before the spinlock is taken.

use crate::glue;
use crate::vm::Vm;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::tdp::ZapTarget;
use mmu::Gfn;

/// The invalidation counters (upstream `mmu_invalidate_seq`, `mmu_invalidate_in_progress`).
#[derive(Default)]
pub(crate) struct Invalidation {
    in_progress: AtomicU64,
    seq: AtomicU64,
}

impl Invalidation {
    /// The sequence count a fault reads before its lookups.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// An invalidation starts: faults that check from now on retry.
    pub(crate) fn begin(&self) {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
    }

    /// An invalidation's zap is done: faults that read the count before it retry.
    pub(crate) fn end(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.in_progress.fetch_sub(1, Ordering::SeqCst);
    }

    /// Begins an invalidation that ends when the returned scope is dropped (every zap outside
    /// the notifier's start/end pair uses this, so begin and end cannot come apart).
    pub(crate) fn scope(&self) -> InvalidationScope<'_> {
        self.begin();
        InvalidationScope(self)
    }

    /// Whether a fault that read `seq` must retry (check under the MMU lock).
    pub(crate) fn retry(&self, seq: u64) -> bool {
        self.in_progress.load(Ordering::SeqCst) != 0 || self.seq.load(Ordering::SeqCst) != seq
    }
}

/// An invalidation in progress; it ends when this is dropped.
pub(crate) struct InvalidationScope<'a>(&'a Invalidation);

impl Drop for InvalidationScope<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The shared backing of one memslot, for the notifier.
#[derive(Clone, Copy)]
pub(crate) struct HvaRange {
    /// The slot's id.
    pub(crate) id: u16,
    /// First byte of the backing.
    pub(crate) start: u64,
    /// One past the last byte.
    pub(crate) end: u64,
    /// The slot's first GFN.
    pub(crate) base_gfn: Gfn,
}

impl HvaRange {
    /// The GFNs backed by `[start, end)`, if any.
    fn gfns(&self, start: u64, end: u64) -> Option<(Gfn, Gfn)> {
        let (s, e) = (start.max(self.start), end.min(self.end));
        (s < e).then(|| {
            (
                Gfn::new(self.base_gfn.raw() + ((s - self.start) >> 12)),
                Gfn::new(self.base_gfn.raw() + (e - self.start).div_ceil(4096)),
            )
        })
    }
}

/// A registered notifier (the glue's `struct tdxkvm_mn`).
pub(crate) struct Notifier(*mut c_void);

// SAFETY: the glue object is used from any thread; unregistering works from any thread.
unsafe impl Send for Notifier {}
// SAFETY: only the pointer value is read.
unsafe impl Sync for Notifier {}

impl Notifier {
    /// Registers a notifier on the current mm for `vm`, which must unregister it (drop this)
    /// before it is freed.
    pub(crate) fn register(vm: &Vm) -> Result<Self> {
        // SAFETY: `vm` outlives the registration: `Memslots::shutdown` drops it first thing
        // in the VM's teardown.
        let p = unsafe { glue::tdxkvm_mn_register((vm as *const Vm).cast_mut().cast()) };
        if p.is_null() {
            return Err(ENOMEM);
        }
        Ok(Notifier(p))
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // SAFETY: registered in `register`, unregistered once; waits for running callbacks.
        unsafe { glue::tdxkvm_mn_unregister(self.0) };
    }
}

/// Zaps the shared root over every slot backed by `[start, end)`.
fn zap_hvas(vm: &Vm, start: u64, end: u64) {
    let index = vm.memslots().hva_index();
    for r in index.iter() {
        if let Some((s, e)) = r.gfns(start, end) {
            // A zap that cannot finish marks the VM bugged; nothing else to do here.
            // HOOK(gmemfault): never yields: the hva_index spinlock is held across the walk
            // (upstream yields here when the range is blockable; it holds no spinlock).
            vm.mmu()
                .zap_gfns_may_block(ZapTarget::Shared, s, e, false)
                .ok();
        }
    }
}

/// `invalidate_range_start` (from the glue).
///
/// # Safety
///
/// `vm` is the VM the notifier was registered for, alive until it is unregistered.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_mn_invalidate_start(
    vm: *mut c_void,
    start: u64,
    end: u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    let inv = vm.memslots().invalidation();
    inv.begin();
    zap_hvas(vm, start, end);
    0
}

/// `invalidate_range_end` (from the glue).
///
/// # Safety
///
/// As [`tdxkvm_rust_mn_invalidate_start`].
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_mn_invalidate_end(vm: *mut c_void) {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    vm.memslots().invalidation().end();
}

/// `release` (the mm goes away): nothing shared may stay mapped.
///
/// # Safety
///
/// As [`tdxkvm_rust_mn_invalidate_start`].
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_mn_release(vm: *mut c_void) {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    let _inv = vm.memslots().invalidation().scope();
    zap_hvas(vm, 0, u64::MAX);
}
