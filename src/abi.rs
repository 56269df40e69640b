// SPDX-License-Identifier: GPL-2.0-only
//! The `/dev/kvm` ABI this module implements (`include/uapi/linux/kvm.h`,
//! `arch/x86/include/uapi/asm/kvm.h`): ioctl numbers, capabilities, machine types, structures.
//!
//! Every structure that crosses the user boundary is `#[repr(C)]` with its size and field
//! offsets asserted against the uapi headers at compile time, and implements the kernel crate's
//! [`FromBytes`] / [`AsBytes`], so ioctls copy whole structures with
//! `UserSliceReader::read::<T>()` and `UserSliceWriter::write(&T)` instead of picking bytes.
//! The ioctl numbers take their size field from the same structures.

use core::mem::{offset_of, size_of};
use kernel::types::{AsBytes, FromBytes};

const KVMIO: u32 = 0xAE;

const fn io(nr: u32) -> u32 {
    (KVMIO << 8) | nr
}

/// `_IOWR(KVMIO, nr, T)`: `size` is `sizeof(T)`, which the ioctl encoding holds in 14 bits.
const fn iowr(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (3 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// The API version (`KVM_API_VERSION`).
pub(crate) const KVM_API_VERSION: isize = 12;

/// `KVM_GET_API_VERSION`.
pub(crate) const KVM_GET_API_VERSION: u32 = io(0x00);
/// `KVM_CREATE_VM`.
pub(crate) const KVM_CREATE_VM: u32 = io(0x01);
/// `KVM_GET_MSR_INDEX_LIST` ([`KvmMsrList`] + indices).
pub(crate) const KVM_GET_MSR_INDEX_LIST: u32 = iowr(0x02, size_of::<KvmMsrList>());
/// `KVM_CHECK_EXTENSION`.
pub(crate) const KVM_CHECK_EXTENSION: u32 = io(0x03);
/// `KVM_GET_VCPU_MMAP_SIZE`.
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
/// `KVM_GET_SUPPORTED_CPUID` ([`KvmCpuid2`] + entries).
pub(crate) const KVM_GET_SUPPORTED_CPUID: u32 = iowr(0x05, size_of::<KvmCpuid2>());
/// `KVM_GET_EMULATED_CPUID` ([`KvmCpuid2`] + entries).
pub(crate) const KVM_GET_EMULATED_CPUID: u32 = iowr(0x09, size_of::<KvmCpuid2>());
/// `KVM_GET_MSR_FEATURE_INDEX_LIST` ([`KvmMsrList`] + indices).
pub(crate) const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = iowr(0x0a, size_of::<KvmMsrList>());
/// `KVM_GET_MSRS` on `/dev/kvm`: feature MSRs ([`KvmMsrs`] + [`KvmMsrEntry`]s).
pub(crate) const KVM_GET_MSRS: u32 = iowr(0x88, size_of::<KvmMsrs>());
// The numbers as the uapi headers' `_IO`/`_IOWR` produce them on x86_64.
const _: () = {
    assert!(KVM_GET_API_VERSION == 0xae00);
    assert!(KVM_CREATE_VM == 0xae01);
    assert!(KVM_GET_MSR_INDEX_LIST == 0xc004_ae02);
    assert!(KVM_CHECK_EXTENSION == 0xae03);
    assert!(KVM_GET_VCPU_MMAP_SIZE == 0xae04);
    assert!(KVM_GET_SUPPORTED_CPUID == 0xc008_ae05);
    assert!(KVM_GET_EMULATED_CPUID == 0xc008_ae09);
    assert!(KVM_GET_MSR_FEATURE_INDEX_LIST == 0xc004_ae0a);
    assert!(KVM_GET_MSRS == 0xc008_ae88);
};

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

/// `struct kvm_msr_list`: the header; `__u32 indices[]` follows.
#[repr(C)]
#[derive(Clone, Copy, Default)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmMsrList {
    pub(crate) nmsrs: u32,
}

const _: () = {
    assert!(size_of::<KvmMsrList>() == 4);
    assert!(offset_of!(KvmMsrList, nmsrs) == 0);
};

/// `struct kvm_cpuid2`: the header; `struct kvm_cpuid_entry2 entries[]` follows at offset 8.
#[repr(C)]
#[derive(Clone, Copy, Default)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmCpuid2 {
    pub(crate) nent: u32,
    pub(crate) padding: u32,
}

const _: () = {
    assert!(size_of::<KvmCpuid2>() == 8);
    assert!(offset_of!(KvmCpuid2, nent) == 0);
    assert!(offset_of!(KvmCpuid2, padding) == 4);
};

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmCpuidEntry2 {
    pub(crate) function: u32,
    pub(crate) index: u32,
    pub(crate) flags: u32,
    pub(crate) eax: u32,
    pub(crate) ebx: u32,
    pub(crate) ecx: u32,
    pub(crate) edx: u32,
    pub(crate) padding: [u32; 3],
}

const _: () = {
    assert!(size_of::<KvmCpuidEntry2>() == 40);
    assert!(offset_of!(KvmCpuidEntry2, function) == 0);
    assert!(offset_of!(KvmCpuidEntry2, index) == 4);
    assert!(offset_of!(KvmCpuidEntry2, flags) == 8);
    assert!(offset_of!(KvmCpuidEntry2, eax) == 12);
    assert!(offset_of!(KvmCpuidEntry2, ebx) == 16);
    assert!(offset_of!(KvmCpuidEntry2, ecx) == 20);
    assert!(offset_of!(KvmCpuidEntry2, edx) == 24);
    assert!(offset_of!(KvmCpuidEntry2, padding) == 28);
};

/// Largest number of CPUID entries KVM accepts (`KVM_MAX_CPUID_ENTRIES`).
pub(crate) const KVM_MAX_CPUID_ENTRIES: u32 = 256;

/// `struct kvm_msrs`: the header; `struct kvm_msr_entry entries[]` follows at offset 8.
#[repr(C)]
#[derive(Clone, Copy, Default)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmMsrs {
    pub(crate) nmsrs: u32,
    pub(crate) pad: u32,
}

const _: () = {
    assert!(size_of::<KvmMsrs>() == 8);
    assert!(offset_of!(KvmMsrs, nmsrs) == 0);
    assert!(offset_of!(KvmMsrs, pad) == 4);
    // The entries are 8-byte aligned: the header's size is their offset.
    assert!(size_of::<KvmMsrs>() % core::mem::align_of::<KvmMsrEntry>() == 0);
};

/// `struct kvm_msr_entry`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmMsrEntry {
    pub(crate) index: u32,
    pub(crate) reserved: u32,
    pub(crate) data: u64,
}

const _: () = {
    assert!(size_of::<KvmMsrEntry>() == 16);
    assert!(offset_of!(KvmMsrEntry, index) == 0);
    assert!(offset_of!(KvmMsrEntry, reserved) == 4);
    assert!(offset_of!(KvmMsrEntry, data) == 8);
};

/// Implements [`FromBytes`] and [`AsBytes`] for uapi structures made of integers only.
macro_rules! uapi_plain_data {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `$t` is `#[repr(C)]` with only integer (or integer array) fields, so every
            // bit pattern is a valid value, and it has no interior mutability.
            unsafe impl FromBytes for $t {}
            // SAFETY: as above, and the const asserts next to the type show that the fields
            // cover its size exactly (no padding), so no byte of a value is uninitialised.
            unsafe impl AsBytes for $t {}
        )*
    };
}

uapi_plain_data!(KvmMsrList, KvmCpuid2, KvmCpuidEntry2, KvmMsrs, KvmMsrEntry);
