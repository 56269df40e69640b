// SPDX-License-Identifier: GPL-2.0-only
//! KVM's numbers for the memory ioctls (`include/uapi/linux/kvm.h`, `include/linux/kvm_host.h`,
//! `arch/x86/include/asm/kvm_host.h` of Linux 6.12). The structures themselves are in the
//! module (`src/mem_abi.rs`), which copies them with the kernel crate's byte traits.

/// Memslot flag: dirty logging.
pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// Memslot flag: guest writes exit to userspace as MMIO.
pub const KVM_MEM_READONLY: u32 = 1 << 1;
/// Memslot flag: private memory comes from a guest_memfd (`KVM_SET_USER_MEMORY_REGION2` only).
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// Flags the v1 `KVM_SET_USER_MEMORY_REGION` may carry (`KVM_SET_USER_MEMORY_REGION_V1_FLAGS`).
pub const KVM_SET_USER_MEMORY_REGION_V1_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;

/// Memslot ids per address space (`KVM_MEM_SLOTS_NUM` = `SHRT_MAX`).
pub const KVM_MEM_SLOTS_NUM: u32 = 32767;
/// Slots KVM keeps for itself on x86 (APIC access, identity map, TSS).
pub const KVM_INTERNAL_MEM_SLOTS: u32 = 3;
/// Memslot ids userspace may use; `KVM_CAP_NR_MEMSLOTS` answers this.
pub const KVM_USER_MEM_SLOTS: u32 = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS;
/// Largest memslot in pages (`KVM_MEM_MAX_NR_PAGES` on 64-bit).
pub const KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;

/// The one memory attribute x86 KVM supports.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// `fallocate` mode: do not change the file size.
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
/// `fallocate` mode: free the range.
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

/// The base page size.
pub const PAGE_SIZE: u64 = 4096;
/// Log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Whether `x` is a multiple of [`PAGE_SIZE`].
pub const fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}
