// SPDX-License-Identifier: GPL-2.0-only
//! `struct kvm_ioapic_state` and `struct kvm_irqchip` (`arch/x86/include/uapi/asm/kvm.h`,
//! Linux 6.12): what `KVM_GET_IRQCHIP` / `KVM_SET_IRQCHIP` carry.

use crate::pic::uapi::KvmPicState;
use core::mem::{offset_of, size_of};
use x86::uapi::Pod;

/// `KVM_IOAPIC_NUM_PINS`: redirection entries of the in-kernel IOAPIC.
pub const KVM_IOAPIC_NUM_PINS: usize = 24;
/// `KVM_IRQCHIP_PIC_MASTER`: `kvm_irqchip.chip_id` / routing `irqchip` of the master 8259A.
pub const KVM_IRQCHIP_PIC_MASTER: u32 = 0;
/// `KVM_IRQCHIP_PIC_SLAVE`.
pub const KVM_IRQCHIP_PIC_SLAVE: u32 = 1;
/// `KVM_IRQCHIP_IOAPIC`.
pub const KVM_IRQCHIP_IOAPIC: u32 = 2;
/// `KVM_NR_IRQCHIPS`.
pub const KVM_NR_IRQCHIPS: usize = 3;

/// `struct kvm_ioapic_state`: the IOAPIC's registers (upstream copies the first 216 bytes of
/// its `struct kvm_ioapic` 1:1, `pad` included).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmIoapicState {
    /// The MMIO base (0xfec00000; upstream stores what SET gives but never moves the device).
    pub base_address: u64,
    /// IOREGSEL.
    pub ioregsel: u32,
    /// The IOAPIC ID (bits 27:24 of register 0, kept in bits 3:0 here).
    pub id: u32,
    /// Pins whose line is asserted and not yet delivered (edge) / still asserted (level).
    pub irr: u32,
    /// Padding, copied both ways as upstream does.
    pub pad: u32,
    /// The redirection table, raw 64-bit entries (see [`super::RedirEntry`]).
    pub redirtbl: [u64; KVM_IOAPIC_NUM_PINS],
}

impl Default for KvmIoapicState {
    fn default() -> Self {
        Self::zeroed()
    }
}

const _: () = {
    assert!(size_of::<KvmIoapicState>() == 216);
    assert!(offset_of!(KvmIoapicState, ioregsel) == 8);
    assert!(offset_of!(KvmIoapicState, id) == 12);
    assert!(offset_of!(KvmIoapicState, irr) == 16);
    assert!(offset_of!(KvmIoapicState, pad) == 20);
    assert!(offset_of!(KvmIoapicState, redirtbl) == 24);
};

// SAFETY: `#[repr(C)]` integers and an integer array, no padding (size asserted above).
unsafe impl Pod for KvmIoapicState {}

/// `struct kvm_irqchip`: `chip_id`, `pad` and a 512-byte union of `kvm_pic_state` and
/// `kvm_ioapic_state` (8-byte aligned through the IOAPIC's `u64`s, hence `[u64; 64]` here).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmIrqchip {
    /// `KVM_IRQCHIP_PIC_MASTER`, `KVM_IRQCHIP_PIC_SLAVE` or `KVM_IRQCHIP_IOAPIC`.
    pub chip_id: u32,
    /// Padding.
    pub pad: u32,
    /// The union's 512 bytes.
    pub chip: [u64; 64],
}

const _: () = {
    assert!(size_of::<KvmIrqchip>() == 520);
    assert!(offset_of!(KvmIrqchip, chip) == 8);
    assert!(size_of::<KvmPicState>() <= 512 && size_of::<KvmIoapicState>() <= 512);
};

// SAFETY: `#[repr(C)]` integers and an integer array, no padding (size asserted above).
unsafe impl Pod for KvmIrqchip {}

impl Default for KvmIrqchip {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl KvmIrqchip {
    fn union_bytes(&self) -> &[u8] {
        let b = self.as_bytes();
        &b[8..]
    }

    fn union_bytes_mut(&mut self) -> &mut [u8] {
        let b = self.as_bytes_mut();
        &mut b[8..]
    }

    /// The union read as `kvm_pic_state` (for chip 0 or 1).
    pub fn pic(&self) -> KvmPicState {
        let mut s = KvmPicState::zeroed();
        let n = size_of::<KvmPicState>();
        s.as_bytes_mut().copy_from_slice(&self.union_bytes()[..n]);
        s
    }

    /// The union read as `kvm_ioapic_state` (for chip 2).
    pub fn ioapic(&self) -> KvmIoapicState {
        let mut s = KvmIoapicState::zeroed();
        let n = size_of::<KvmIoapicState>();
        s.as_bytes_mut().copy_from_slice(&self.union_bytes()[..n]);
        s
    }

    /// Stores `s` at the start of the union, leaving the rest of it as it was (upstream
    /// copies only `sizeof(struct kvm_pic_state)` into the caller's structure).
    pub fn set_pic(&mut self, s: &KvmPicState) {
        let n = size_of::<KvmPicState>();
        self.union_bytes_mut()[..n].copy_from_slice(s.as_bytes());
    }

    /// Stores `s` at the start of the union, leaving the rest of it as it was.
    pub fn set_ioapic(&mut self, s: &KvmIoapicState) {
        let n = size_of::<KvmIoapicState>();
        self.union_bytes_mut()[..n].copy_from_slice(s.as_bytes());
    }
}
