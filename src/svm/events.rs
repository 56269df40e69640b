// SPDX-License-Identifier: GPL-2.0-only
//! The SVM side of event injection (upstream `svm.c`): the interrupt window through a dummy
//! virtual interrupt and the VINTR intercept (`svm_set_vintr` / `svm_clear_vintr`), NMI
//! masking through the IRET intercept (`svm_inject_nmi`, `iret_interception`, the
//! `awaiting_iret_completion` check of `svm_complete_interrupts`), and the NMI window by
//! single-stepping over whatever blocks the NMI (`svm_enable_nmi_window`, `db_interception`).
//!
//! What to inject and which windows to open is decided backend-neutrally
//! ([`crate::irq::inject`]); the events themselves travel in `CpuState.events` and EVENTINJ
//! ([`super::SvmVcpu::enter`]). There is no vNMI, vGIF or AVIC here (QEMU's SVM has none), so
//! GIF is always 1 outside the VMRUN section and NMI masking is tracked by KVM.

use crate::irq::inject::Windows;
use crate::run::Exit;
use x86::state::CpuState;
use x86::svm::{exit, int_ctl, intercept, vector, Vmcb};

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;

/// The SVM backend's event-window state (upstream `vcpu_svm`'s `awaiting_iret_completion`,
/// `nmi_iret_rip`, `nmi_singlestep`, `nmi_singlestep_guest_rflags`).
#[derive(Default)]
pub(crate) struct SvmEvents {
    /// The windows the neutral layer asked for, for the next entry.
    want: Windows,
    /// An IRET was intercepted while NMIs were masked: NMIs unmask once RIP moves past it.
    awaiting_iret_completion: bool,
    /// The RIP of that IRET.
    nmi_iret_rip: u64,
    /// This entry single-steps for the NMI window; the guest's own RFLAGS before TF|RF.
    singlestep_guest_rflags: Option<u64>,
}

impl SvmEvents {
    /// Records the windows for the next entry (the neutral layer's decision).
    pub(crate) fn set_windows(&mut self, w: Windows) {
        self.want = w;
    }

    /// Programs the VMCB's event controls for the entry, after the save area was loaded from
    /// `st` and EVENTINJ was set.
    pub(crate) fn prepare(&mut self, vmcb: &mut Vmcb, st: &mut CpuState) {
        // svm_inject_nmi: an NMI being delivered masks further NMIs until its IRET.
        if st.events.nmi_injected {
            st.events.nmi_masked = true;
        }
        let c = &mut vmcb.control;
        if self.want.irq {
            // svm_set_vintr: a dummy virtual interrupt of the highest priority whose delivery
            // the VINTR intercept turns into an exit as soon as the guest can take interrupts;
            // the real one goes through EVENTINJ on the entry after.
            c.intercepts[3] |= intercept::VINTR;
            c.int_vector = 0;
            c.int_ctl = (c.int_ctl & !int_ctl::V_INTR_PRIO_MASK)
                | int_ctl::V_IRQ
                | (0xf << int_ctl::V_INTR_PRIO_SHIFT);
        } else {
            // svm_clear_vintr.
            c.intercepts[3] &= !intercept::VINTR;
            c.int_ctl &= !(int_ctl::V_IRQ | int_ctl::V_INTR_PRIO_MASK);
        }
        // svm_set_iret_intercept / svm_clr_iret_intercept.
        let masked_until_iret = st.events.nmi_masked && !self.awaiting_iret_completion;
        if masked_until_iret {
            c.intercepts[3] |= intercept::IRET;
        } else {
            c.intercepts[3] &= !intercept::IRET;
        }
        self.singlestep_guest_rflags = None;
        // svm_enable_nmi_window: masked and the IRET not reached yet: its intercept is the
        // window. Otherwise (the IRET was intercepted but has not completed, an interrupt
        // shadow, an event being injected) single-step over what blocks the NMI.
        if self.want.nmi && !masked_until_iret {
            self.singlestep_guest_rflags = Some(st.rflags);
            vmcb.save.rflags |= RFLAGS_TF | RFLAGS_RF;
        }
    }

    /// After the exit (the save area stored into `st`, EXITINTINFO requeued): hides the
    /// single-step flags, unmasks NMIs once the intercepted IRET completed, and turns the
    /// window exits (VINTR, IRET, the single-step #DB) into [`Exit::EventWindow`].
    pub(crate) fn complete(&mut self, code: u64, st: &mut CpuState) -> Option<Exit> {
        let mut window = false;
        if let Some(g) = self.singlestep_guest_rflags.take() {
            // svm_get_rflags / disable_nmi_singlestep: the guest never sees our TF/RF.
            if g & RFLAGS_TF == 0 {
                st.rflags &= !RFLAGS_TF;
            }
            if g & RFLAGS_RF == 0 {
                st.rflags &= !RFLAGS_RF;
            }
            // db_interception with nmi_singlestep: ours, not the guest's (unless the guest
            // single-steps itself, then it gets its #DB).
            if code == exit::EXCP_BASE + u64::from(vector::DB) && g & RFLAGS_TF == 0 {
                window = true;
            }
        }
        if self.awaiting_iret_completion && st.rip != self.nmi_iret_rip {
            self.awaiting_iret_completion = false;
            st.events.nmi_masked = false;
        }
        match code {
            exit::IRET => {
                // iret_interception: NMIs unmask once the IRET has executed (RIP moved).
                self.awaiting_iret_completion = true;
                self.nmi_iret_rip = st.rip;
                window = true;
            }
            exit::VINTR => window = true,
            _ => {}
        }
        window.then_some(Exit::EventWindow)
    }
}
