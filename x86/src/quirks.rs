// SPDX-License-Identifier: GPL-2.0-only
//! KVM's x86 quirks (`KVM_X86_QUIRK_*`, `KVM_CAP_DISABLE_QUIRKS` / `KVM_CAP_DISABLE_QUIRKS2`):
//! old behaviours KVM keeps by default and lets userspace turn off per VM.
//!
//! `KVM_CAP_DISABLE_QUIRKS2` reports the quirks userspace may disable, and this module only
//! lists one whose two behaviours it really implements: [`FIX_HYPERCALL_INSN`] (a #UD-ing
//! VMCALL rewritten to VMMCALL, or the #UD left to the guest). The others are either one fixed
//! behaviour here (LINT0_REENABLED, OUT_7E_INC_RIP: the quirk's; MWAIT_NEVER_UD_FAULTS:
//! neither, MONITOR/MWAIT are always #UD) or concern hardware this module does not
//! virtualise (CD_NW_CLEARED, LAPIC_MMIO_HOLE, MISC_ENABLE_NO_MWAIT, SLOT_ZAP_ALL,
//! STUFF_FEATURE_MSRS, IGNORE_GUEST_PAT, VMCS12_ALLOW_FREEZE_IN_SMM), so they are not offered.

use crate::errno::{Errno, Result};

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
pub const SUPPORTED: u64 = FIX_HYPERCALL_INSN;

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
        assert_eq!(check_extension(KVM_CAP_DISABLE_QUIRKS2), Some(0x20));
        assert_eq!(check_extension(KVM_CAP_DISABLE_QUIRKS), Some(1));
        assert_eq!(check_extension(0), None);
    }

    #[test]
    fn disable_quirks2_rejects_unsupported_bits_v1_ignores_them() {
        let q2 = KVM_CAP_DISABLE_QUIRKS2;
        assert_eq!(disable(q2, 0, FIX_HYPERCALL_INSN), Ok(FIX_HYPERCALL_INSN));
        assert_eq!(disable(q2, 0, MWAIT_NEVER_UD_FAULTS), Err(Errno::Einval));
        assert_eq!(
            disable(q2, 0, FIX_HYPERCALL_INSN | SLOT_ZAP_ALL),
            Err(Errno::Einval)
        );
        assert_eq!(disable(q2, FIX_HYPERCALL_INSN, 0), Ok(FIX_HYPERCALL_INSN));
        let q1 = KVM_CAP_DISABLE_QUIRKS;
        assert_eq!(disable(q1, 0, u64::MAX), Ok(FIX_HYPERCALL_INSN));
        assert_eq!(disable(q1, 0, LINT0_REENABLED), Ok(0));
    }
}
