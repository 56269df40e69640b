// SPDX-License-Identifier: GPL-2.0-only
//! `struct kvm_pic_state` (`arch/x86/include/uapi/asm/kvm.h`, Linux 6.12): one 8259A of the pair
//! as `KVM_GET_IRQCHIP` / `KVM_SET_IRQCHIP` carry it (chip 0 = master, 1 = slave).

use core::mem::{offset_of, size_of};
use x86::uapi::Pod;

/// `struct kvm_pic_state`: the registers and the ICW/OCW sequencing state of one 8259A, in the
/// uapi's field order (upstream copies the first 16 bytes of its `kvm_kpic_state` 1:1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmPicState {
    /// The input levels last seen, for edge detection.
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The rotation: the IR line with the highest priority.
    pub priority_add: u8,
    /// The vector base (ICW2, bits 7:3).
    pub irq_base: u8,
    /// OCW3 RR/RIS: 1 = reads of port 0 return the ISR, 0 = the IRR.
    pub read_reg_select: u8,
    /// OCW3 P: the next read of either port is a poll.
    pub poll: u8,
    /// OCW3 special mask mode (stored, without effect, as upstream).
    pub special_mask: u8,
    /// The ICW sequence: 0 = initialised, 1 = ICW2 next, 2 = ICW3 next, 3 = ICW4 next.
    pub init_state: u8,
    /// ICW4 AEOI.
    pub auto_eoi: u8,
    /// OCW2 rotate in automatic EOI mode.
    pub rotate_on_auto_eoi: u8,
    /// ICW4 SFNM.
    pub special_fully_nested_mode: u8,
    /// ICW1 IC4: an ICW4 follows.
    pub init4: u8,
    /// Edge/level control register (ports 0x4d0/0x4d1): 1 = level triggered.
    pub elcr: u8,
    /// The ELCR bits that are writable (0xf8 master, 0xde slave).
    pub elcr_mask: u8,
}

const _: () = {
    assert!(size_of::<KvmPicState>() == 16);
    assert!(offset_of!(KvmPicState, imr) == 2);
    assert!(offset_of!(KvmPicState, irq_base) == 5);
    assert!(offset_of!(KvmPicState, init_state) == 9);
    assert!(offset_of!(KvmPicState, elcr) == 14);
    assert!(offset_of!(KvmPicState, elcr_mask) == 15);
};

// SAFETY: `#[repr(C)]`, sixteen `u8` fields, no padding (size asserted above).
unsafe impl Pod for KvmPicState {}
