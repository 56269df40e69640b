// SPDX-License-Identifier: GPL-2.0-only
//! MONITOR/MWAIT and the two quirks that shape them (upstream `kvm_emulate_monitor` /
//! `kvm_emulate_mwait` → `kvm_emulate_monitor_mwait`, and `MSR_IA32_MISC_ENABLE`'s MWAIT bit).
//!
//! SVM intercepts both instructions (the guest must not park a host CPU in MWAIT); KVM runs
//! them as NOPs — a guest's MWAIT simply returns, which is what MWAIT may always do — unless
//! userspace disabled `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` and the guest's CPUID lacks
//! MONITOR, then they #UD as on a CPU without them. With `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT`
//! disabled, CPUID.1:ECX.MONITOR follows `MSR_IA32_MISC_ENABLE.MWAIT`. The rules are
//! [`x86::quirks`]'; this file applies them to a vCPU.

use crate::run::uapi::RunPage;
use crate::run::{Action, ExitInfo};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::Vm;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use x86::quirks::{self, MonitorMwait};
use x86emu::decode::Op;

/// Upstream's `pr_warn_once("%s instruction emulated as NOP!")`, once per instruction.
static WARNED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// An intercepted MONITOR (`mwait` false) or MWAIT: #UD, or skipped as a NOP (with the
/// skip's single-step trap and its emulation-failure endings).
pub(crate) fn intercept(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
    mwait: bool,
) -> Action {
    let disabled = vcpu.vm().quirks().disabled();
    if quirks::monitor_mwait(disabled, &l.cpuid.entries) == MonitorMwait::Ud {
        crate::run::queue_exception(l, x86::svm::vector::UD, None, None);
        return Action::Continue;
    }
    let (op, name) = if mwait {
        (Op::Mwait, "MWAIT")
    } else {
        (Op::Monitor, "MONITOR")
    };
    if !WARNED[usize::from(mwait)].swap(true, Ordering::Relaxed) {
        pr_warn!("{} instruction emulated as NOP!\n", name);
    }
    crate::exit_run::skip_intercepted(vcpu, l, run, &[op], info).unwrap_or(Action::Continue)
}

/// Before a write of `MSR_IA32_MISC_ENABLE` with `data` (guest or host): `Err` when the
/// write must fail (the MWAIT bit changes, the quirk is off and the guest has no SSE3);
/// `Ok(true)` when CPUID must follow the new value afterwards ([`sync_cpuid`]).
pub(crate) fn misc_enable_check(
    vm: &Vm,
    l: &VcpuLocked,
    data: u64,
) -> core::result::Result<bool, x86::msr::MsrFault> {
    let old = l.arch.msr.misc_enable;
    quirks::misc_enable_write(vm.quirks().disabled(), old, data, &l.cpuid.entries)
}

/// The MWAIT part of the CPUID runtime update for the vCPU's table (a no-op with
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` in force).
pub(crate) fn sync_cpuid(vm: &Vm, l: &mut VcpuLocked) {
    let misc = l.arch.msr.misc_enable;
    quirks::sync_mwait_cpuid(vm.quirks().disabled(), &mut l.cpuid.entries, misc);
}

/// The same for a new table `KVM_SET_CPUID2` is about to install or compare.
pub(crate) fn sync_entries(vm: &Vm, l: &VcpuLocked, entries: &mut [x86::uapi::KvmCpuidEntry2]) {
    let misc = l.arch.msr.misc_enable;
    quirks::sync_mwait_cpuid(vm.quirks().disabled(), entries, misc);
}
