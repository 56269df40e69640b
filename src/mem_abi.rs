// SPDX-License-Identifier: GPL-2.0-only
//! The uapi of guest memory (`include/uapi/linux/kvm.h`, 6.12): memslots, guest_memfd, memory
//! attributes, pre-fault — ioctl numbers, capabilities and the structures, each `#[repr(C)]`
//! with its size and offsets asserted and copied whole with the kernel crate's byte traits.

use core::mem::{offset_of, size_of};
use kernel::types::{AsBytes, FromBytes};

const KVMIO: u32 = 0xAE;

/// `_IOW(KVMIO, nr, T)`.
const fn iow(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (1 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// `_IOWR(KVMIO, nr, T)`.
const fn iowr(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (3 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// `KVM_SET_USER_MEMORY_REGION` (VM fd).
pub(crate) const KVM_SET_USER_MEMORY_REGION: u32 = iow(0x46, size_of::<KvmUserspaceMemoryRegion>());
/// `KVM_SET_USER_MEMORY_REGION2` (VM fd).
pub(crate) const KVM_SET_USER_MEMORY_REGION2: u32 =
    iow(0x49, size_of::<KvmUserspaceMemoryRegion2>());
/// `KVM_SET_MEMORY_ATTRIBUTES` (VM fd).
pub(crate) const KVM_SET_MEMORY_ATTRIBUTES: u32 = iow(0xd2, size_of::<KvmMemoryAttributes>());
/// `KVM_PRE_FAULT_MEMORY` (vCPU fd).
pub(crate) const KVM_PRE_FAULT_MEMORY: u32 = iowr(0xd5, size_of::<KvmPreFaultMemory>());
/// `KVM_CREATE_GUEST_MEMFD` (VM fd).
pub(crate) const KVM_CREATE_GUEST_MEMFD: u32 = iowr(0xd4, size_of::<KvmCreateGuestMemfd>());
/// `KVM_GET_DIRTY_LOG` (VM fd).
pub(crate) const KVM_GET_DIRTY_LOG: u32 = iow(0x42, size_of::<KvmDirtyLog>());
/// `KVM_CLEAR_DIRTY_LOG` (VM fd).
pub(crate) const KVM_CLEAR_DIRTY_LOG: u32 = iowr(0xc0, size_of::<KvmClearDirtyLog>());
const _: () = {
    assert!(KVM_GET_DIRTY_LOG == 0x4010_ae42);
    assert!(KVM_CLEAR_DIRTY_LOG == 0xc018_aec0);
    assert!(KVM_SET_USER_MEMORY_REGION == 0x4020_ae46);
    assert!(KVM_SET_USER_MEMORY_REGION2 == 0x40a0_ae49);
    assert!(KVM_SET_MEMORY_ATTRIBUTES == 0x4020_aed2);
    assert!(KVM_CREATE_GUEST_MEMFD == 0xc040_aed4);
    assert!(KVM_PRE_FAULT_MEMORY == 0xc040_aed5);
};

/// `KVM_CAP_USER_MEMORY`.
pub(crate) const KVM_CAP_USER_MEMORY: u64 = 3;
/// `KVM_CAP_NR_MEMSLOTS`.
pub(crate) const KVM_CAP_NR_MEMSLOTS: u64 = 10;
/// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`.
pub(crate) const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u64 = 168;
/// `KVM_CAP_READONLY_MEM`.
pub(crate) const KVM_CAP_READONLY_MEM: u64 = 81;
/// `KVM_CAP_USER_MEMORY2`.
pub(crate) const KVM_CAP_USER_MEMORY2: u64 = 231;
/// `KVM_CAP_MEMORY_ATTRIBUTES`.
pub(crate) const KVM_CAP_MEMORY_ATTRIBUTES: u64 = 233;
/// `KVM_CAP_GUEST_MEMFD`.
pub(crate) const KVM_CAP_GUEST_MEMFD: u64 = 234;
/// `KVM_CAP_PRE_FAULT_MEMORY`.
pub(crate) const KVM_CAP_PRE_FAULT_MEMORY: u64 = 236;

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmUserspaceMemoryRegion {
    pub(crate) slot: u32,
    pub(crate) flags: u32,
    pub(crate) guest_phys_addr: u64,
    pub(crate) memory_size: u64,
    pub(crate) userspace_addr: u64,
}

/// `struct kvm_userspace_memory_region2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmUserspaceMemoryRegion2 {
    pub(crate) slot: u32,
    pub(crate) flags: u32,
    pub(crate) guest_phys_addr: u64,
    pub(crate) memory_size: u64,
    pub(crate) userspace_addr: u64,
    pub(crate) guest_memfd_offset: u64,
    pub(crate) guest_memfd: u32,
    pub(crate) pad1: u32,
    pub(crate) pad2: [u64; 14],
}

/// `struct kvm_memory_attributes`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmMemoryAttributes {
    pub(crate) address: u64,
    pub(crate) size: u64,
    pub(crate) attributes: u64,
    pub(crate) flags: u64,
}

/// `struct kvm_create_guest_memfd`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmCreateGuestMemfd {
    pub(crate) size: u64,
    pub(crate) flags: u64,
    pub(crate) reserved: [u64; 6],
}

/// `struct kvm_pre_fault_memory`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmPreFaultMemory {
    pub(crate) gpa: u64,
    pub(crate) size: u64,
    pub(crate) flags: u64,
    pub(crate) padding: [u64; 5],
}

/// `struct kvm_dirty_log` (the bitmap pointer's union as its `u64`).
// Whole values cross the boundary: the padding is part of the ABI though nothing reads it.
#[allow(dead_code)]
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmDirtyLog {
    pub(crate) slot: u32,
    pub(crate) padding1: u32,
    pub(crate) dirty_bitmap: u64,
}

/// `struct kvm_clear_dirty_log`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmClearDirtyLog {
    pub(crate) slot: u32,
    pub(crate) num_pages: u32,
    pub(crate) first_page: u64,
    pub(crate) dirty_bitmap: u64,
}

const _: () = {
    assert!(size_of::<KvmDirtyLog>() == 16);
    assert!(offset_of!(KvmDirtyLog, dirty_bitmap) == 8);
    assert!(size_of::<KvmClearDirtyLog>() == 24);
    assert!(offset_of!(KvmClearDirtyLog, num_pages) == 4);
    assert!(offset_of!(KvmClearDirtyLog, first_page) == 8);
    assert!(offset_of!(KvmClearDirtyLog, dirty_bitmap) == 16);
    assert!(size_of::<KvmPreFaultMemory>() == 64);
    assert!(offset_of!(KvmPreFaultMemory, flags) == 16);
    assert!(size_of::<KvmUserspaceMemoryRegion>() == 32);
    assert!(offset_of!(KvmUserspaceMemoryRegion, userspace_addr) == 24);
    assert!(size_of::<KvmUserspaceMemoryRegion2>() == 160);
    assert!(offset_of!(KvmUserspaceMemoryRegion2, guest_memfd_offset) == 32);
    assert!(offset_of!(KvmUserspaceMemoryRegion2, guest_memfd) == 40);
    assert!(offset_of!(KvmUserspaceMemoryRegion2, pad2) == 48);
    assert!(size_of::<KvmMemoryAttributes>() == 32);
    assert!(size_of::<KvmCreateGuestMemfd>() == 64);
};

// SAFETY: `repr(C)` integer fields without padding (sizes asserted above): every bit pattern is
// valid and no byte is uninitialised.
unsafe impl FromBytes for KvmUserspaceMemoryRegion {}
// SAFETY: as above.
unsafe impl FromBytes for KvmUserspaceMemoryRegion2 {}
// SAFETY: as above.
unsafe impl FromBytes for KvmMemoryAttributes {}
// SAFETY: as above.
unsafe impl FromBytes for KvmCreateGuestMemfd {}
// SAFETY: as above.
unsafe impl FromBytes for KvmDirtyLog {}
// SAFETY: as above.
unsafe impl FromBytes for KvmClearDirtyLog {}

// SAFETY: as above.
unsafe impl FromBytes for KvmPreFaultMemory {}
// SAFETY: as above: no padding bytes, so every byte is initialised.
unsafe impl AsBytes for KvmPreFaultMemory {}

impl From<KvmUserspaceMemoryRegion> for KvmUserspaceMemoryRegion2 {
    /// The v1 structure as upstream copies it: into a zeroed v2.
    fn from(v1: KvmUserspaceMemoryRegion) -> Self {
        KvmUserspaceMemoryRegion2 {
            slot: v1.slot,
            flags: v1.flags,
            guest_phys_addr: v1.guest_phys_addr,
            memory_size: v1.memory_size,
            userspace_addr: v1.userspace_addr,
            ..Default::default()
        }
    }
}

impl KvmUserspaceMemoryRegion2 {
    /// The fields the core's checks read.
    pub(crate) fn request(&self) -> memcore::memslot::RegionRequest {
        memcore::memslot::RegionRequest {
            slot: self.slot,
            flags: self.flags,
            guest_phys_addr: self.guest_phys_addr,
            memory_size: self.memory_size,
            userspace_addr: self.userspace_addr,
            guest_memfd_offset: self.guest_memfd_offset,
            guest_memfd: self.guest_memfd,
        }
    }
}
