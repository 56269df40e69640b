// SPDX-License-Identifier: GPL-2.0-only
//! Host state switched once per load, not once per `VMRUN` (upstream
//! `svm_prepare_switch_to_guest` / `svm_prepare_host_switch`, with TSC_AUX as a user-return
//! MSR).
//!
//! What `VMRUN`/`#VMEXIT` do not switch and `VMLOAD` of the host restores after every exit
//! (FS/GS/TR/LDTR with their hidden parts, KernelGsBase, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*)
//! is the same from one entry to the next as long as the vCPU thread stays on its CPU: it
//! belongs to the thread (FS/GS bases, LDT) or to the CPU (GS base, TR, SYSENTER_ESP). So the
//! host's part is VMSAVEd into the CPU's save area at the first entry after the vCPU was
//! loaded on the CPU, and the guest's TSC_AUX (RDTSCP/RDPID are not intercepted) is written
//! then and left in the MSR while the host kernel runs between entries (the kernel itself
//! never reads TSC_AUX: its paranoid entry finds the CPU number with LSL).
//!
//! "Loaded" ends (upstream `vcpu_put`) when the thread is scheduled out — the preempt notifier
//! of [`crate::irq::sched`] calls [`HostLoad::sched_out`] — and when `KVM_RUN` returns
//! ([`put`]): the host's TSC_AUX goes back into the MSR before any other task or this
//! thread's user mode can read it, and the next entry, on whatever CPU, saves the host state
//! again (another vCPU thread on the same CPU may have overwritten the save area meanwhile).
//!
//! Every field is an atomic because the notifier reaches them through a shared reference;
//! all accesses happen on the vCPU thread with preemption (or IRQs) off, so `Relaxed` is
//! enough.

use super::glue as sg;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MSR_TSC_AUX: u32 = 0xc000_0103;

/// One vCPU's load state (a field of [`crate::irq::sched::VcpuSched`]).
pub(crate) struct HostLoad {
    /// The host state is in this CPU's save area and `aux` is what TSC_AUX holds.
    loaded: AtomicBool,
    /// The host's TSC_AUX on the CPU of the load (to restore).
    host_aux: AtomicU64,
    /// What TSC_AUX holds now (host's or the guest's).
    cur_aux: AtomicU64,
}

impl HostLoad {
    /// Not loaded anywhere.
    pub(crate) const fn new() -> Self {
        HostLoad {
            loaded: AtomicBool::new(false),
            host_aux: AtomicU64::new(0),
            cur_aux: AtomicU64::new(0),
        }
    }

    /// Upstream `svm_prepare_host_switch`: the host's TSC_AUX back, the save area no longer
    /// ours. Called by the preempt notifier (IRQs off) and by [`put`] (preemption off), on
    /// the CPU of the load.
    pub(crate) fn sched_out(&self) {
        if !self.loaded.swap(false, Ordering::Relaxed) {
            return;
        }
        let h = self.host_aux.load(Ordering::Relaxed);
        if self.cur_aux.load(Ordering::Relaxed) != h {
            // SAFETY: WRMSR of TSC_AUX with the value read from it on this CPU at the load;
            // preemption or IRQs are off (caller), so this is that CPU.
            unsafe { sg::tdxkvm_wrmsr(MSR_TSC_AUX, h) };
        }
    }

    /// Before an entry: saves the host state if this load has not yet (upstream
    /// `svm_prepare_switch_to_guest`), then makes TSC_AUX the guest's `guest_aux`. False if
    /// the VMSAVE faulted (SVM off on this CPU): the entry must fail.
    ///
    /// # Safety
    ///
    /// IRQs off, GIF clear (inside the entry's CLGI), on the CPU whose save area is at
    /// `host_save_pa`, which is valid.
    pub(crate) unsafe fn prepare(&self, host_save_pa: u64, guest_aux: u64) -> bool {
        if !self.loaded.load(Ordering::Relaxed) {
            // SAFETY: the caller's contract: this CPU's save area, IRQs off.
            if unsafe { sg::tdxkvm_svm_vmsave(host_save_pa) } {
                return false;
            }
            // SAFETY: reads TSC_AUX (always present where SVM is: RDTSCP), IRQs off.
            let h = unsafe { sg::tdxkvm_rdmsr(MSR_TSC_AUX) };
            self.host_aux.store(h, Ordering::Relaxed);
            self.cur_aux.store(h, Ordering::Relaxed);
            self.loaded.store(true, Ordering::Relaxed);
        }
        if self.cur_aux.load(Ordering::Relaxed) != guest_aux {
            // SAFETY: the guest's TSC_AUX (its low 32 bits, checked by the MSR code), IRQs
            // off; the host's is restored by `sched_out` before anything else runs here.
            unsafe { sg::tdxkvm_wrmsr(MSR_TSC_AUX, guest_aux) };
            self.cur_aux.store(guest_aux, Ordering::Relaxed);
        }
        true
    }
}

/// End of `KVM_RUN` (upstream `vcpu_put` at the end of the ioctl): the host's TSC_AUX back
/// before this thread returns to user mode.
pub(crate) fn put(h: &HostLoad) {
    // SAFETY: plain preempt_disable/enable around the per-CPU MSR write.
    unsafe { sg::tdxkvm_preempt_disable() };
    h.sched_out();
    // SAFETY: as above.
    unsafe { sg::tdxkvm_preempt_enable() };
}
