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
//! (`memcore::hva`, one range per slot) is updated by memslot changes under `slots_lock`, with
//! its room made before the spinlock is taken.
//!
//! Yielding (upstream `range->may_block` → `tdp_mmu_zap_leafs(can_yield)`): the index's
//! spinlock is held only to copy out a few slots' GFN spans at a time
//! ([`memcore::hva::HvaIndex::batch`], bounded scan), never across a zap; each zap takes the
//! MMU lock for write and, when the notifier range is blockable, drops it and reschedules when
//! asked, flushing the TLB first. A non-blockable range (the OOM reaper) zaps without
//! sleeping, as upstream: the spinlock is still dropped between batches. Faults racing with
//! the zap see the invalidation in progress and retry until `invalidate_range_end`.

use crate::glue;
use crate::vm::Vm;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use memcore::hva::{Cursor, GfnSpan};
use mmu::tdp::ZapTarget;

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

/// Slots' spans copied out of the index per batch.
const BATCH_SPANS: usize = 8;
/// Index entries examined per batch at most (bounds the time the spinlock is held with a
/// large memslot count).
const BATCH_SCAN: usize = 256;

/// Zaps the shared root over every slot backed by `[start, end)`; `may_block`: the caller may
/// sleep, so the zaps yield (see the module docs). The caller began an invalidation.
fn zap_hvas(vm: &Vm, start: u64, end: u64, may_block: bool) {
    let mut cursor = Cursor::START;
    let mut spans = [GfnSpan::default(); BATCH_SPANS];
    loop {
        let batch = vm
            .memslots()
            .hva_index()
            .batch(start, end, cursor, &mut spans, BATCH_SCAN);
        // The spinlock is dropped: zaps may sleep.
        for s in spans.iter().take(batch.found) {
            // A zap that cannot finish marks the VM bugged; nothing else to do here.
            vm.mmu()
                .zap_gfns_may_block(ZapTarget::Shared, s.start, s.end, may_block)
                .ok();
        }
        match batch.next {
            Some(c) => cursor = c,
            None => break,
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
    blockable: bool,
) -> c_int {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    let inv = vm.memslots().invalidation();
    inv.begin();
    zap_hvas(vm, start, end, blockable);
    // Upstream 6.12 answers 0 for non-blockable ranges too: the zap just does not sleep.
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
    // exit_mmap and mmu_notifier_unregister may sleep (upstream kvm_flush_shadow_all yields).
    zap_hvas(vm, 0, u64::MAX, true);
}
