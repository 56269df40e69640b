// SPDX-License-Identifier: GPL-2.0-only
//! The transfer-to-guest work of the run loop (upstream `vcpu_run`'s
//! `xfer_to_guest_mode_handle_work` and `kvm_vcpu_exit_request`): signals, rescheduling and
//! `TIF_NOTIFY_RESUME` (task work, memcg/blkcg throttling, rseq) are handled by the kernel's own
//! exported function, which needs a `struct kvm_vcpu` (see `src/svm/glue.c`): each vCPU has a
//! shadow one whose `run` is its kvm_run page, made on the first `KVM_RUN`.

use crate::svm::glue as sg;
use core::ffi::c_void;
use core::ptr::NonNull;
use kernel::prelude::*;

/// A vCPU's shadow `struct kvm_vcpu` for `xfer_to_guest_mode_handle_work`.
pub(crate) struct XferVcpu(NonNull<c_void>);

// SAFETY: a heap block only used under the vCPU mutex.
unsafe impl Send for XferVcpu {}
// SAFETY: as above.
unsafe impl Sync for XferVcpu {}

impl XferVcpu {
    /// A shadow whose `run` is `run_page` (the vCPU's kvm_run page, alive as long as the vCPU,
    /// which owns this value).
    pub(crate) fn new(run_page: *mut u8) -> Result<Self> {
        // SAFETY: a zeroed allocation; the pointer is only stored.
        let p = unsafe { sg::tdxkvm_xfer_vcpu_alloc(run_page.cast()) };
        NonNull::new(p).map(XferVcpu).ok_or(ENOMEM)
    }

    /// Handles the pending work (preemptible; only the vCPU mutex held): `Ok(())` to go on,
    /// `EINTR` for a pending signal (`kvm_run.exit_reason` is then `KVM_EXIT_INTR`), or the
    /// error the kernel returned.
    pub(crate) fn handle_work(&self) -> Result {
        // SAFETY: the racy IRQs-on check reads the current task's flags.
        if !unsafe { sg::tdxkvm_xfer_work_pending() } {
            return Ok(());
        }
        // SAFETY: a live shadow (type invariant), process context, may sleep: no spinlock is
        // held, only the vCPU mutex.
        let r = unsafe { sg::tdxkvm_xfer_handle_work(self.0.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::from_errno(r))
        }
    }
}

impl Drop for XferVcpu {
    fn drop(&mut self) {
        // SAFETY: allocated by tdxkvm_xfer_vcpu_alloc, freed once.
        unsafe { sg::tdxkvm_xfer_vcpu_free(self.0.as_ptr()) };
    }
}

/// IRQs off, right before an entry: whether work came that cancels it (upstream
/// `kvm_vcpu_exit_request`'s `xfer_to_guest_mode_work_pending`).
///
/// # Safety
///
/// IRQs disabled.
pub(crate) unsafe fn work_pending_irqoff() -> bool {
    // SAFETY: IRQs off (caller's contract).
    unsafe { sg::tdxkvm_xfer_work_pending_irqoff() }
}
