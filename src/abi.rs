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

/// The ioctl type byte of every KVM ioctl.
pub(crate) const KVMIO: u32 = 0xAE;

const fn io(nr: u32) -> u32 {
    (KVMIO << 8) | nr
}

/// `_IOR(KVMIO, nr, T)` with `size` = `sizeof(T)`.
const fn ior(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (2 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// `_IOW(KVMIO, nr, T)` with `size` = `sizeof(T)`.
const fn iow(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (1 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// `_IOC_TYPE(cmd)`.
pub(crate) const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> 8) & 0xff
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

/// `KVM_CREATE_VCPU` (VM fd).
pub(crate) const KVM_CREATE_VCPU: u32 = io(0x41);
/// `KVM_ENABLE_CAP` (VM fd here) ([`KvmEnableCap`]).
pub(crate) const KVM_ENABLE_CAP: u32 = iow(0xa3, size_of::<KvmEnableCap>());
/// `KVM_SET_TSC_KHZ` (VM fd here: the TSC rate of vCPUs created later).
pub(crate) const KVM_SET_TSC_KHZ: u32 = io(0xa2);
/// `KVM_GET_TSC_KHZ` (VM and vCPU fds).
pub(crate) const KVM_GET_TSC_KHZ: u32 = io(0xa3);
/// `KVM_GET_STATS_FD` (VM and vCPU fds).
pub(crate) const KVM_GET_STATS_FD: u32 = io(0xce);
/// `KVM_RUN` (vCPU fd).
pub(crate) const KVM_RUN: u32 = io(0x80);
// vCPU ioctls whose state is not here yet (struct kvm_lapic_state: 1024 bytes on x86_64); the
// register-state ioctls are x86::uapi::ioctl's and src/vcpu_state.rs's.
/// `KVM_GET_LAPIC`.
pub(crate) const KVM_GET_LAPIC: u32 = ior(0x8e, 1024);
/// `KVM_SET_LAPIC`.
pub(crate) const KVM_SET_LAPIC: u32 = iow(0x8f, 1024);
const _: () = {
    assert!(KVM_CREATE_VCPU == 0xae41);
    assert!(KVM_ENABLE_CAP == 0x4068_aea3);
    assert!(KVM_GET_STATS_FD == 0xaece);
    assert!(KVM_RUN == 0xae80);
    assert!(KVM_GET_LAPIC == 0x8400_ae8e);
};

/// Page offsets of the vCPU mapping (x86 uapi): the PIO data page and the coalesced-MMIO ring
/// follow `struct kvm_run` (page 0).
pub(crate) const KVM_PIO_PAGE_OFFSET: usize = 1;
/// See [`KVM_PIO_PAGE_OFFSET`].
pub(crate) const KVM_COALESCED_MMIO_PAGE_OFFSET: usize = 2;

// `struct kvm_run` fields KVM_RUN reads before entering the guest (byte offsets, x86_64 uapi).
/// `immediate_exit__unsafe` (u8).
pub(crate) const KVM_RUN_IMMEDIATE_EXIT: usize = 1;
/// `flags` (u16), cleared by every KVM_RUN.
pub(crate) const KVM_RUN_FLAGS: usize = 14;
/// `cr8` (u64).
pub(crate) const KVM_RUN_CR8: usize = 16;
/// `kvm_valid_regs` (u64): after the 256-byte exit union at 32.
pub(crate) const KVM_RUN_VALID_REGS: usize = 288;
/// `kvm_dirty_regs` (u64).
pub(crate) const KVM_RUN_DIRTY_REGS: usize = 296;
/// `KVM_SYNC_X86_VALID_FIELDS`: REGS | SREGS | EVENTS.
pub(crate) const KVM_SYNC_X86_VALID_FIELDS: u64 = 0x7;

/// `KVM_STATS_NAME_SIZE`.
pub(crate) const KVM_STATS_NAME_SIZE: usize = 48;

/// `KVM_CAP_EXT_EMUL_CPUID`.
pub(crate) const KVM_CAP_EXT_EMUL_CPUID: u64 = 95;
/// `KVM_CAP_GET_MSR_FEATURES`.
pub(crate) const KVM_CAP_GET_MSR_FEATURES: u64 = 153;
/// `KVM_CAP_CHECK_EXTENSION_VM`.
pub(crate) const KVM_CAP_CHECK_EXTENSION_VM: u64 = 105;
/// `KVM_CAP_NR_VCPUS`.
pub(crate) const KVM_CAP_NR_VCPUS: u64 = 9;
/// `KVM_CAP_MAX_VCPUS`.
pub(crate) const KVM_CAP_MAX_VCPUS: u64 = 66;
/// `KVM_CAP_MAX_VCPU_ID`.
pub(crate) const KVM_CAP_MAX_VCPU_ID: u64 = 128;
/// `KVM_CAP_IMMEDIATE_EXIT`.
pub(crate) const KVM_CAP_IMMEDIATE_EXIT: u64 = 136;
/// `KVM_CAP_BINARY_STATS_FD`.
pub(crate) const KVM_CAP_BINARY_STATS_FD: u64 = 203;
/// `KVM_CAP_SYNC_MMU`: the TDP MMU follows the host mm (an MMU notifier zaps the shared root).
pub(crate) const KVM_CAP_SYNC_MMU: u64 = 16;
/// `KVM_CAP_DESTROY_MEMORY_REGION_WORKS`: a memslot of size 0 deletes it.
pub(crate) const KVM_CAP_DESTROY_MEMORY_REGION_WORKS: u64 = 21;
/// `KVM_CAP_JOIN_MEMORY_REGIONS_WORKS`: adjacent memslots may be created.
pub(crate) const KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: u64 = 30;
/// `KVM_CAP_ENABLE_CAP_VM`: `KVM_ENABLE_CAP` on a VM fd.
pub(crate) const KVM_CAP_ENABLE_CAP_VM: u64 = 98;
/// `KVM_CAP_GET_TSC_KHZ`: `KVM_GET_TSC_KHZ` on VM and vCPU fds.
pub(crate) const KVM_CAP_GET_TSC_KHZ: u64 = 148;
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

/// `struct kvm_enable_cap`.
#[repr(C)]
#[derive(Clone, Copy)]
// Whole values cross the boundary: a field this module never names is still part of the ABI.
#[allow(dead_code)]
pub(crate) struct KvmEnableCap {
    pub(crate) cap: u32,
    pub(crate) flags: u32,
    pub(crate) args: [u64; 4],
    pub(crate) pad: [u8; 64],
}

const _: () = {
    assert!(size_of::<KvmEnableCap>() == 104);
    assert!(offset_of!(KvmEnableCap, cap) == 0);
    assert!(offset_of!(KvmEnableCap, flags) == 4);
    assert!(offset_of!(KvmEnableCap, args) == 8);
    assert!(offset_of!(KvmEnableCap, pad) == 40);
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

uapi_plain_data!(
    KvmMsrList,
    KvmCpuid2,
    KvmCpuidEntry2,
    KvmMsrs,
    KvmMsrEntry,
    KvmEnableCap
);
