// SPDX-License-Identifier: GPL-2.0-only
//! Remote TLB flushes and kicks for one VM's shared root (upstream
//! `kvm_flush_remote_tlbs` → `kvm_make_all_cpus_request(KVM_REQ_TLB_FLUSH)`, with
//! `vcpu->mode` and `kvm_vcpu_kick`).
//!
//! The TdpMmu calls [`RemoteTlb::flush`] (through `MmuEnv::flush_remote_tlbs`) after it zapped
//! or replaced shared-root entries: memslot deletes and moves, MMU-notifier invalidations,
//! attribute conversions, a huge page replacing a table. Every vCPU must flush its guest TLB
//! before it next runs guest code, and a vCPU that is in guest mode right now must leave it
//! before the zapping thread goes on (and frees page-table pages).
//!
//! The protocol, equivalent to upstream's requests + `IN_GUEST_MODE`:
//! - a vCPU about to enter sets its CPU's bit in the VM's `running` mask with IRQs off, then
//!   (full fence) reads the flush generation; if it changed since its last entry, the backend
//!   flushes (a new ASID on SVM); it clears the bit after the exit, still with IRQs off;
//! - the flusher increments the generation, (full fence) then IPIs every CPU in the mask and
//!   waits for each to run the IPI handler.
//!
//! Either the vCPU sees the new generation, or the flusher sees its bit: the IPI, pending while
//! the vCPU's IRQs are off, makes VMRUN exit at once (INTR is intercepted), and the flusher's
//! wait ends only after the exit. Preemption and migration: the bit is set and cleared on the
//! same CPU within one IRQs-off section; a vCPU that moves CPU gets a new ASID anyway.

use crate::svm::glue as sg;
use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU64, Ordering};

/// One VM's flush generation and the CPUs running its vCPUs.
///
/// # Invariants
///
/// `running` is a cpumask allocated by the glue and owned by this value.
pub(crate) struct RemoteTlb {
    gen: AtomicU64,
    running: NonNull<c_void>,
}

// SAFETY: the cpumask is changed with atomic bit operations and read by the IPI code, both
// safe from any CPU.
unsafe impl Send for RemoteTlb {}
// SAFETY: as above.
unsafe impl Sync for RemoteTlb {}

impl RemoteTlb {
    /// An empty mask, generation 0. May sleep.
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: zalloc_cpumask_var in process context.
        let m = NonNull::new(unsafe { sg::tdxkvm_cpumask_alloc() })?;
        Some(RemoteTlb {
            gen: AtomicU64::new(0),
            running: m,
        })
    }

    /// Every vCPU of the VM flushes before its next guest instruction; returns when none is
    /// in guest mode with stale translations. Any context with IRQs enabled (the MMU lock may
    /// be held: the IPI handler takes no lock).
    pub(crate) fn flush(&self) {
        self.gen.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // SAFETY: a valid cpumask (type invariant); IPIs with wait from a context with IRQs
        // enabled.
        unsafe { sg::tdxkvm_kick_cpus_wait(self.running.as_ptr()) };
    }

    /// Entry on `cpu` (IRQs off): marks the CPU running and returns the generation to flush up
    /// to.
    pub(crate) fn enter(&self, cpu: u32) -> u64 {
        // SAFETY: a valid cpumask; `cpu` is the calling CPU.
        unsafe { sg::tdxkvm_cpumask_set(self.running.as_ptr(), cpu) };
        fence(Ordering::SeqCst);
        self.gen.load(Ordering::SeqCst)
    }

    /// After the exit on `cpu` (IRQs still off).
    pub(crate) fn leave(&self, cpu: u32) {
        // SAFETY: as in `enter`.
        unsafe { sg::tdxkvm_cpumask_clear(self.running.as_ptr(), cpu) };
    }
}

impl Drop for RemoteTlb {
    fn drop(&mut self) {
        // SAFETY: owned (type invariant), freed once; no vCPU runs (the VM is going).
        unsafe { sg::tdxkvm_cpumask_free(self.running.as_ptr()) };
    }
}
