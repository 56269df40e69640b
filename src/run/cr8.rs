// SPDX-License-Identifier: GPL-2.0-only
//! CR8, the task priority, as upstream kvm_amd handles it (`svm_update_cr8_intercept`,
//! `kvm_lapic_update_cr8_intercept`, `cr8_write_interception`, `kvm_set_cr8`).
//!
//! The guest's `MOV CR8` changes the VMCB's V_TPR without an exit unless the write is
//! intercepted ([`crate::svm::cr8`]); the loop stores V_TPR back into the vCPU's CR8 after each
//! exit, and the in-kernel LAPIC takes it as its TPR before it is next used
//! ([`crate::irq::lapic::sync`]). That is late when the guest lowers its TPR below an
//! interrupt it holds back: nothing would exit to inject it. So, as upstream:
//!
//! - the write is intercepted from the vCPU's creation (and every INIT or shutdown reset:
//!   `init_vmcb`);
//! - with an in-kernel LAPIC, before each entry while the LAPIC is enabled (upstream: the
//!   `KVM_REQ_EVENT` work of `vcpu_enter_guest`, which this loop does on every entry) and after
//!   each intercepted write (upstream `apic_update_ppr`), the intercept is kept only while the
//!   highest vector in IRR has a priority class at or below the TPR's
//!   ([`intercept_wanted`]): lowering the TPR then exits, the write goes to the LAPIC, and the
//!   interrupt it unmasks is injected on the entry right after, before the guest's next
//!   instruction;
//! - without one, every write stays intercepted and one that lowers CR8 ends `KVM_RUN` with
//!   `KVM_EXIT_SET_TPR` (`kvm_run.cr8` the new value), so userspace's LAPIC can deliver what
//!   the old priority held back.
//!
//! QEMU's SVM has no DecodeAssists: the instruction at CS:RIP is decoded (`MOV CR8, r` is
//! `REX.R 0F 22 /r`; LOCK `MOV CR0`, AMD's 32-bit alias, is #UD there as in upstream's
//! emulator), as for the CR4 intercept ([`super::cr`]).

use super::cr::mov_to_cr_source;
use crate::run::{queue_exception, Action, ExitInfo, RunPage, VcpuBackend};
use crate::vcpu::{Vcpu, VcpuLocked};
use kernel::prelude::*;

/// `KVM_EXIT_SET_TPR`.
const KVM_EXIT_SET_TPR: u32 = 11;

/// Upstream `svm_update_cr8_intercept(vcpu, tpr, max_irr >> 4)`: intercept CR8 writes only
/// while an interrupt is pending in IRR (`irr`: its priority class) that the TPR (`tpr`: CR8)
/// holds back.
pub(crate) fn intercept_wanted(tpr: u8, irr: Option<u8>) -> bool {
    irr.is_some_and(|irr| tpr >= irr)
}

fn set_intercept(l: &mut VcpuLocked, on: bool) {
    if let Some(VcpuBackend::Svm(s)) = l.backend.as_mut() {
        s.set_cr8_write_intercept(on);
    }
}

/// Upstream `kvm_lapic_update_cr8_intercept` (no APICv, no VAPIC page here): with an
/// in-kernel LAPIC, the intercept from its TPR and IRR; without one nothing changes.
fn update_intercept(l: &mut VcpuLocked) {
    if let Some((tpr, irr, _)) = crate::irq::lapic::cr8_intercept_inputs(l) {
        set_intercept(l, intercept_wanted(tpr, irr));
    }
}

/// Before each entry, after the events were injected (upstream `vcpu_enter_guest`: under
/// `kvm_lapic_enabled`, after `kvm_check_and_inject_events`).
pub(crate) fn before_entry(l: &mut VcpuLocked) {
    if let Some((tpr, irr, true)) = crate::irq::lapic::cr8_intercept_inputs(l) {
        set_intercept(l, intercept_wanted(tpr, irr));
    }
}

/// `SVM_EXIT_WRITE_CR8` (upstream `cr8_write_interception` over the emulator's `MOV CR8, r`):
/// a value with bits above 3 is #GP(0); otherwise it becomes the TPR (the LAPIC's, or the
/// plain CR8 without one), RIP moves on, and without an in-kernel LAPIC a lowered CR8 exits to
/// userspace with `KVM_EXIT_SET_TPR`.
pub(crate) fn write(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
) -> Result<Action> {
    // Not decodable (LOCK MOV CR0 is #UD) and CPL > 0 end here, as for CR4.
    let (val, next_rip) = match mov_to_cr_source(vcpu, l, run, info, 8) {
        Ok(v) => v,
        Err(a) => return Ok(a),
    };
    if val & !0xf != 0 {
        // kvm_set_cr8 refuses reserved bits; em_cr_write raises #GP(0) (no error code
        // outside protected mode, upstream kvm_inject_exception).
        let pe = l.arch.cr0 & x86::regs::cr0::PE != 0;
        queue_exception(l, x86::svm::vector::GP, pe.then_some(0), None);
        return Ok(Action::Continue);
    }
    let prev = crate::irq::inject::cr8(l);
    l.arch.cr8 = val;
    l.arch.rip = next_rip;
    // As every emulated instruction: the interrupt shadow ends, the single-step trap follows.
    l.arch.events.interrupt_shadow = 0;
    crate::exit_run::mark_completed(l, l.arch.rflags);
    if l.irq.lapic.is_some() {
        // kvm_lapic_set_tpr -> apic_update_ppr: the LAPIC takes the TPR now (an interrupt it
        // unmasks is injected on the next entry), and the intercept follows.
        crate::irq::lapic::sync(vcpu, l);
        update_intercept(l);
        return Ok(Action::Continue);
    }
    if prev <= val {
        return Ok(Action::Continue);
    }
    run.set_exit_reason(KVM_EXIT_SET_TPR);
    Ok(Action::ToUser)
}
