// SPDX-License-Identifier: GPL-2.0-only
//! The `/dev/kvm` ABI this module implements (`include/uapi/linux/kvm.h`,
//! `arch/x86/include/uapi/asm/kvm.h`): ioctl numbers, capabilities, machine types, structures.

const KVMIO: u32 = 0xAE;

const fn io(nr: u32) -> u32 {
    (KVMIO << 8) | nr
}

const fn iowr(nr: u32, size: u32) -> u32 {
    (3 << 30) | (size << 16) | (KVMIO << 8) | nr
}

/// The API version (`KVM_API_VERSION`).
pub(crate) const KVM_API_VERSION: isize = 12;

/// `KVM_GET_API_VERSION`.
pub(crate) const KVM_GET_API_VERSION: u32 = io(0x00);
/// `KVM_CREATE_VM`.
pub(crate) const KVM_CREATE_VM: u32 = io(0x01);
/// `KVM_GET_MSR_INDEX_LIST` (`struct kvm_msr_list`, 4 bytes + indices).
pub(crate) const KVM_GET_MSR_INDEX_LIST: u32 = iowr(0x02, 4);
/// `KVM_CHECK_EXTENSION`.
pub(crate) const KVM_CHECK_EXTENSION: u32 = io(0x03);
/// `KVM_GET_VCPU_MMAP_SIZE`.
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
/// `KVM_GET_SUPPORTED_CPUID` (`struct kvm_cpuid2`, 8 bytes + entries).
pub(crate) const KVM_GET_SUPPORTED_CPUID: u32 = iowr(0x05, 8);

/// `KVM_GET_EMULATED_CPUID` (`struct kvm_cpuid2`).
pub(crate) const KVM_GET_EMULATED_CPUID: u32 = iowr(0x09, 8);
/// `KVM_GET_MSR_FEATURE_INDEX_LIST` (`struct kvm_msr_list`).
pub(crate) const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = iowr(0x0a, 4);
/// `KVM_GET_MSRS` on `/dev/kvm`: feature MSRs (`struct kvm_msrs`, 8 bytes + 16 per entry).
pub(crate) const KVM_GET_MSRS: u32 = iowr(0x88, 8);
/// Largest `nmsrs` KVM accepts (`MAX_IO_MSRS`).
pub(crate) const MAX_IO_MSRS: u32 = 256;

/// `KVM_CAP_EXT_EMUL_CPUID`.
pub(crate) const KVM_CAP_EXT_EMUL_CPUID: u64 = 95;
/// `KVM_CAP_GET_MSR_FEATURES`.
pub(crate) const KVM_CAP_GET_MSR_FEATURES: u64 = 153;
/// `KVM_CAP_CHECK_EXTENSION_VM`.
pub(crate) const KVM_CAP_CHECK_EXTENSION_VM: u64 = 105;
/// `KVM_CAP_VM_TYPES`.
pub(crate) const KVM_CAP_VM_TYPES: u64 = 235;

/// `KVM_X86_DEFAULT_VM`.
pub(crate) const KVM_X86_DEFAULT_VM: usize = 0;
/// `KVM_X86_SW_PROTECTED_VM`.
pub(crate) const KVM_X86_SW_PROTECTED_VM: usize = 1;
/// `KVM_X86_TDX_VM` (upstream since 6.16).
pub(crate) const KVM_X86_TDX_VM: usize = 5;

/// `struct kvm_cpuid_entry2`: 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmCpuidEntry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`.
pub(crate) const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;

/// Largest number of CPUID entries KVM accepts (`KVM_MAX_CPUID_ENTRIES`).
pub(crate) const KVM_MAX_CPUID_ENTRIES: u32 = 256;

const _: () = assert!(core::mem::size_of::<KvmCpuidEntry2>() == 40);

impl KvmCpuidEntry2 {
    pub(crate) fn as_bytes(&self) -> [u8; 40] {
        let words = [
            self.function,
            self.index,
            self.flags,
            self.eax,
            self.ebx,
            self.ecx,
            self.edx,
            self.padding[0],
            self.padding[1],
            self.padding[2],
        ];
        let mut out = [0u8; 40];
        for (i, w) in words.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}
