// SPDX-License-Identifier: GPL-2.0-only
//! Machine-check emulation, as far as the module has it: none. Upstream KVM emulates MCE banks
//! (`KVM_CAP_MCE` = 32 banks, `KVM_X86_SETUP_MCE`, `KVM_X86_SET_MCE`, the MCG_*/MCi_* MSRs);
//! this module does not, so `KVM_CAP_MCE` is not advertised (0 banks) and
//! `KVM_X86_GET_MCE_CAP_SUPPORTED`, which upstream answers without a capability check, reports
//! that no MCG_CAP bit is supported. Userspace then skips MCE set-up (ucna_injection_test
//! skips on "MCG_CMCI_P is not supported", as it does on upstream kvm_amd, which has no CMCI);
//! `KVM_X86_SETUP_MCE`/`KVM_X86_SET_MCE` stay EINVAL, as upstream's with no bank to set up.
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// `KVM_X86_GET_MCE_CAP_SUPPORTED` = `_IOR(KVMIO, 0x9d, __u64)`.
pub(crate) const KVM_X86_GET_MCE_CAP_SUPPORTED: u32 = 0x8008_ae9d;

/// `KVM_X86_GET_MCE_CAP_SUPPORTED` (upstream copies `kvm_caps.supported_mce_cap`): no bits.
pub(crate) fn get_mce_cap_supported(arg: usize) -> Result<isize> {
    UserSlice::new(arg, core::mem::size_of::<u64>())
        .writer()
        .write(&0u64)?;
    Ok(0)
}
