// SPDX-License-Identifier: GPL-2.0-only
//! The CR8-write intercept of the VMCB (upstream `svm_update_cr8_intercept`,
//! `INTERCEPT_CR8_WRITE`, `SVM_EXIT_WRITE_CR8`).
//!
//! With V_INTR_MASKING the guest's `MOV CR8` writes the VMCB's V_TPR without an exit, and
//! `MOV r, CR8` reads it; the run loop loads V_TPR from the vCPU's CR8 before VMRUN and stores
//! it back after (upstream `sync_lapic_to_cr8` / `sync_cr8_to_lapic`; while the write is
//! intercepted V_TPR cannot change, so storing it back is the same as upstream skipping it).
//! The write is intercepted from `init_vmcb` on, and with an in-kernel LAPIC only while an
//! interrupt is pending in IRR that the TPR holds back, so that lowering the TPR exits and
//! the interrupt is injected at once ([`crate::run::cr8`] decides).

use super::SvmVcpu;

/// The CR-intercept word's bit for writes of CR8 (writes are bits 16-31).
pub(crate) const INTERCEPT_CR8_WRITE: u32 = 1 << (16 + 8);
/// `SVM_EXIT_WRITE_CR8`.
pub(crate) const EXIT_WRITE_CR8: u64 = 0x018;

impl SvmVcpu {
    /// Sets or clears the CR8-write intercept for the next entries (upstream
    /// `svm_set_intercept` / `svm_clr_intercept(INTERCEPT_CR8_WRITE)`).
    pub(crate) fn set_cr8_write_intercept(&mut self, on: bool) {
        let w = &mut self.vmcb().control.intercepts[x86::svm::intercept::CR];
        if on {
            *w |= INTERCEPT_CR8_WRITE;
        } else {
            *w &= !INTERCEPT_CR8_WRITE;
        }
    }
}
