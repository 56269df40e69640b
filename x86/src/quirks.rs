// SPDX-License-Identifier: GPL-2.0-only
//! KVM's x86 quirks (`KVM_X86_QUIRK_*`, `KVM_CAP_DISABLE_QUIRKS` / `KVM_CAP_DISABLE_QUIRKS2`):
//! old behaviours KVM keeps by default and lets userspace turn off per VM.
//!
//! `KVM_CAP_DISABLE_QUIRKS2` reports the quirks userspace may disable, and this module only
//! lists those whose two behaviours it really implements: [`FIX_HYPERCALL_INSN`] (a #UD-ing
//! VMCALL rewritten to VMMCALL, or the #UD left to the guest), [`MWAIT_NEVER_UD_FAULTS`]
//! (MONITOR/MWAIT are NOPs even when the guest's CPUID lacks MONITOR, or #UD then:
//! [`monitor_mwait`]) and [`MISC_ENABLE_NO_MWAIT`] (CPUID.1:ECX.MONITOR left alone, or made to
//! follow `MSR_IA32_MISC_ENABLE.MWAIT`: [`misc_enable_write`], [`sync_mwait_cpuid`]). The
//! others are either one fixed behaviour here (LINT0_REENABLED, OUT_7E_INC_RIP: the quirk's)
//! or concern hardware this module does not virtualise (CD_NW_CLEARED, LAPIC_MMIO_HOLE,
//! SLOT_ZAP_ALL, STUFF_FEATURE_MSRS, IGNORE_GUEST_PAT, VMCS12_ALLOW_FREEZE_IN_SMM), so they are
//! not offered.

use crate::cpuid::{Feature, Reg};
use crate::errno::{Errno, Result};
use crate::msr::MsrFault;
use crate::uapi::KvmCpuidEntry2;

/// `KVM_X86_QUIRK_LINT0_REENABLED`.
pub const LINT0_REENABLED: u64 = 1 << 0;
/// `KVM_X86_QUIRK_CD_NW_CLEARED`.
pub const CD_NW_CLEARED: u64 = 1 << 1;
/// `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`.
pub const LAPIC_MMIO_HOLE: u64 = 1 << 2;
/// `KVM_X86_QUIRK_OUT_7E_INC_RIP`.
pub const OUT_7E_INC_RIP: u64 = 1 << 3;
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT`.
pub const MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`.
pub const FIX_HYPERCALL_INSN: u64 = 1 << 5;
/// `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS`.
pub const MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
/// `KVM_X86_QUIRK_SLOT_ZAP_ALL`.
pub const SLOT_ZAP_ALL: u64 = 1 << 7;

/// `kvm_caps.supported_quirks`: what `KVM_CAP_DISABLE_QUIRKS2` reports and accepts.
pub const SUPPORTED: u64 = FIX_HYPERCALL_INSN | MWAIT_NEVER_UD_FAULTS | MISC_ENABLE_NO_MWAIT;

/// `X86_FEATURE_MWAIT` (CPUID.1:ECX bit 3, "MONITOR/MWAIT").
pub const FEATURE_MWAIT: Feature = Feature {
    function: 1,
    index: 0,
    reg: Reg::Ecx,
    bit: 3,
};
/// `X86_FEATURE_XMM3` (CPUID.1:ECX bit 0, SSE3).
pub const FEATURE_XMM3: Feature = Feature {
    function: 1,
    index: 0,
    reg: Reg::Ecx,
    bit: 0,
};
/// `MSR_IA32_MISC_ENABLE_MWAIT` (bit 18, "ENABLE MONITOR FSM").
pub const MISC_ENABLE_MWAIT: u64 = 1 << 18;

/// What an intercepted MONITOR or MWAIT does (upstream `kvm_emulate_monitor_mwait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorMwait {
    /// Skipped as a NOP (`kvm_emulate_as_nop`).
    Nop,
    /// `#UD` for the guest (`kvm_handle_invalid_op`).
    Ud,
}

/// `kvm_emulate_monitor_mwait`: #UD only when `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` was
/// disabled *and* the guest's CPUID lacks MONITOR/MWAIT; a NOP otherwise. (`disabled` is the
/// VM's disabled-quirks mask.)
pub fn monitor_mwait(disabled: u64, entries: &[KvmCpuidEntry2]) -> MonitorMwait {
    if disabled & MWAIT_NEVER_UD_FAULTS != 0 && !crate::cpuid::has(entries, FEATURE_MWAIT) {
        MonitorMwait::Ud
    } else {
        MonitorMwait::Nop
    }
}

/// The MWAIT part of a write of `MSR_IA32_MISC_ENABLE` (upstream `kvm_set_msr_common`,
/// guest and host writes alike) from `old` to `new`: with `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT`
/// disabled, a change of the MWAIT bit is refused (`Err`: #GP for a guest, a failed entry for
/// `KVM_SET_MSRS`) unless the guest's CPUID has SSE3, and otherwise needs the CPUID runtime
/// update (`Ok(true)`: [`sync_mwait_cpuid`] after the write). With the quirk in force the bit
/// is plain storage (`Ok(false)`).
pub fn misc_enable_write(
    disabled: u64,
    old: u64,
    new: u64,
    entries: &[KvmCpuidEntry2],
) -> core::result::Result<bool, MsrFault> {
    if disabled & MISC_ENABLE_NO_MWAIT == 0 || (old ^ new) & MISC_ENABLE_MWAIT == 0 {
        return Ok(false);
    }
    if !crate::cpuid::has(entries, FEATURE_XMM3) {
        return Err(MsrFault::Invalid);
    }
    Ok(true)
}

/// The MWAIT step of upstream `__kvm_update_cpuid_runtime`: with
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` disabled, CPUID.1:ECX.MONITOR mirrors
/// `MSR_IA32_MISC_ENABLE.MWAIT` (`misc_enable`); with it in force the table is left alone.
pub fn sync_mwait_cpuid(disabled: u64, entries: &mut [KvmCpuidEntry2], misc_enable: u64) {
    if disabled & MISC_ENABLE_NO_MWAIT != 0 {
        crate::cpuid::change(entries, FEATURE_MWAIT, misc_enable & MISC_ENABLE_MWAIT != 0);
    }
}

/// `KVM_CAP_DISABLE_QUIRKS`.
pub const KVM_CAP_DISABLE_QUIRKS: u64 = 116;
/// `KVM_CAP_DISABLE_QUIRKS2`.
pub const KVM_CAP_DISABLE_QUIRKS2: u64 = 213;

/// `KVM_CHECK_EXTENSION` for the two capabilities, `None` for any other.
pub fn check_extension(cap: u64) -> Option<u64> {
    match cap {
        KVM_CAP_DISABLE_QUIRKS => Some(1),
        KVM_CAP_DISABLE_QUIRKS2 => Some(SUPPORTED),
        _ => None,
    }
}

/// `KVM_ENABLE_CAP` (`kvm_vm_ioctl_enable_cap`): the VM's new disabled-quirks mask from the
/// current one and `args[0]`. DISABLE_QUIRKS2 refuses an unsupported bit with EINVAL; the old
/// DISABLE_QUIRKS silently ignores it. Quirks, once disabled, stay disabled.
pub fn disable(cap: u64, disabled: u64, arg: u64) -> Result<u64> {
    if cap == KVM_CAP_DISABLE_QUIRKS2 && arg & !SUPPORTED != 0 {
        return Err(Errno::Einval);
    }
    Ok(disabled | (arg & SUPPORTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_uapi() {
        assert_eq!(FIX_HYPERCALL_INSN, 0x20);
        assert_eq!(SLOT_ZAP_ALL, 0x80);
        assert_eq!(MISC_ENABLE_NO_MWAIT, 0x10);
        assert_eq!(MWAIT_NEVER_UD_FAULTS, 0x40);
        assert_eq!(check_extension(KVM_CAP_DISABLE_QUIRKS2), Some(0x70));
        assert_eq!(check_extension(KVM_CAP_DISABLE_QUIRKS), Some(1));
        assert_eq!(check_extension(0), None);
    }

    #[test]
    fn disable_quirks2_rejects_unsupported_bits_v1_ignores_them() {
        let q2 = KVM_CAP_DISABLE_QUIRKS2;
        assert_eq!(disable(q2, 0, FIX_HYPERCALL_INSN), Ok(FIX_HYPERCALL_INSN));
        assert_eq!(
            disable(q2, 0, MWAIT_NEVER_UD_FAULTS),
            Ok(MWAIT_NEVER_UD_FAULTS)
        );
        assert_eq!(disable(q2, 0, LINT0_REENABLED), Err(Errno::Einval));
        assert_eq!(
            disable(q2, 0, FIX_HYPERCALL_INSN | SLOT_ZAP_ALL),
            Err(Errno::Einval)
        );
        assert_eq!(disable(q2, FIX_HYPERCALL_INSN, 0), Ok(FIX_HYPERCALL_INSN));
        let q1 = KVM_CAP_DISABLE_QUIRKS;
        assert_eq!(disable(q1, 0, u64::MAX), Ok(SUPPORTED));
        assert_eq!(disable(q1, 0, LINT0_REENABLED), Ok(0));
    }

    fn leaf1(ecx: u32) -> [KvmCpuidEntry2; 1] {
        [KvmCpuidEntry2 {
            function: 1,
            ecx,
            ..Default::default()
        }]
    }

    #[test]
    fn monitor_mwait_is_a_nop_unless_both_quirk_and_cpuid_are_off() {
        let without = leaf1(0);
        let with = leaf1(1 << 3);
        assert_eq!(monitor_mwait(0, &without), MonitorMwait::Nop);
        assert_eq!(monitor_mwait(0, &with), MonitorMwait::Nop);
        assert_eq!(
            monitor_mwait(MWAIT_NEVER_UD_FAULTS, &with),
            MonitorMwait::Nop
        );
        assert_eq!(
            monitor_mwait(MWAIT_NEVER_UD_FAULTS, &without),
            MonitorMwait::Ud
        );
        assert_eq!(monitor_mwait(MWAIT_NEVER_UD_FAULTS, &[]), MonitorMwait::Ud);
        // The other quirk does not matter here.
        assert_eq!(
            monitor_mwait(MISC_ENABLE_NO_MWAIT, &without),
            MonitorMwait::Nop
        );
    }

    #[test]
    fn misc_enable_mwait_needs_sse3_only_with_the_quirk_disabled() {
        let sse3 = leaf1(1);
        let none = leaf1(0);
        let q = MISC_ENABLE_NO_MWAIT;
        let m = MISC_ENABLE_MWAIT;
        // Quirk in force: plain storage, no CPUID change.
        assert_eq!(misc_enable_write(0, 0, m, &none), Ok(false));
        // Quirk off: a change needs SSE3, then the CPUID update.
        assert_eq!(misc_enable_write(q, 0, m, &none), Err(MsrFault::Invalid));
        assert_eq!(misc_enable_write(q, 0, m, &sse3), Ok(true));
        assert_eq!(misc_enable_write(q, m, 0, &sse3), Ok(true));
        // No change of the bit: nothing to check.
        assert_eq!(misc_enable_write(q, m, m | 1, &none), Ok(false));
    }

    #[test]
    fn mwait_cpuid_follows_misc_enable_only_with_the_quirk_disabled() {
        let mut e = leaf1(1);
        sync_mwait_cpuid(0, &mut e, MISC_ENABLE_MWAIT);
        assert_eq!(e[0].ecx, 1);
        sync_mwait_cpuid(MISC_ENABLE_NO_MWAIT, &mut e, MISC_ENABLE_MWAIT);
        assert_eq!(e[0].ecx, 1 | 1 << 3);
        sync_mwait_cpuid(MISC_ENABLE_NO_MWAIT, &mut e, 0);
        assert_eq!(e[0].ecx, 1);
        // No leaf 1: nothing to change.
        sync_mwait_cpuid(MISC_ENABLE_NO_MWAIT, &mut [], MISC_ENABLE_MWAIT);
    }
}
