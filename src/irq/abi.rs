// SPDX-License-Identifier: GPL-2.0-only
//! The irqchip part of the KVM ABI (`include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`
//! of 6.12): ioctl numbers and the structures they copy, `#[repr(C)]` with sizes and offsets
//! asserted against the headers.

use core::mem::{offset_of, size_of};
use irqchip::ioapic::uapi::KvmIrqchip;
use irqchip::pit::uapi::{KvmPitConfig, KvmPitState2};
use irqchip::routing::uapi::{KvmIrqLevel, KvmIrqRouting, KvmMsi};
use kernel::types::{AsBytes, FromBytes};

const KVMIO: u32 = 0xAE;

const fn io(nr: u32) -> u32 {
    (KVMIO << 8) | nr
}
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}
const fn iow(nr: u32, size: usize) -> u32 {
    ioc(1, nr, size)
}
const fn ior(nr: u32, size: usize) -> u32 {
    ioc(2, nr, size)
}
const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(3, nr, size)
}

/// `KVM_CREATE_IRQCHIP`.
pub(crate) const KVM_CREATE_IRQCHIP: u32 = io(0x60);
/// `KVM_IRQ_LINE` ([`KvmIrqLevel`]).
pub(crate) const KVM_IRQ_LINE: u32 = iow(0x61, size_of::<KvmIrqLevel>());
/// `KVM_GET_IRQCHIP` ([`KvmIrqchip`]).
pub(crate) const KVM_GET_IRQCHIP: u32 = iowr(0x62, size_of::<KvmIrqchip>());
/// `KVM_SET_IRQCHIP` ([`KvmIrqchip`]; `_IOR` upstream, a historical mistake kept in the ABI).
pub(crate) const KVM_SET_IRQCHIP: u32 = ior(0x63, size_of::<KvmIrqchip>());
/// `KVM_CREATE_PIT` (legacy: `KVM_CREATE_PIT2` with `KVM_PIT_SPEAKER_DUMMY`).
pub(crate) const KVM_CREATE_PIT: u32 = io(0x64);
/// `KVM_GET_PIT` (`struct kvm_pit_state`: the three channels of [`KvmPitState2`]).
pub(crate) const KVM_GET_PIT: u32 = iowr(0x65, KVM_PIT_STATE_SIZE);
/// `KVM_SET_PIT` (`struct kvm_pit_state`).
pub(crate) const KVM_SET_PIT: u32 = ior(0x66, KVM_PIT_STATE_SIZE);
/// `sizeof(struct kvm_pit_state)`: three 24-byte channels.
pub(crate) const KVM_PIT_STATE_SIZE: usize = 72;
/// `KVM_IRQ_LINE_STATUS` ([`KvmIrqLevel`]).
pub(crate) const KVM_IRQ_LINE_STATUS: u32 = iowr(0x67, size_of::<KvmIrqLevel>());
/// `KVM_SET_GSI_ROUTING` ([`KvmIrqRouting`] + entries).
pub(crate) const KVM_SET_GSI_ROUTING: u32 = iow(0x6a, size_of::<KvmIrqRouting>());
/// `KVM_REINJECT_CONTROL` (`struct kvm_reinject_control` behind an `_IO` number).
pub(crate) const KVM_REINJECT_CONTROL: u32 = io(0x71);
/// `KVM_IRQFD` ([`KvmIrqfd`]).
pub(crate) const KVM_IRQFD: u32 = iow(0x76, size_of::<KvmIrqfd>());
/// `KVM_CREATE_PIT2` ([`KvmPitConfig`]).
pub(crate) const KVM_CREATE_PIT2: u32 = iow(0x77, size_of::<KvmPitConfig>());
/// `KVM_GET_PIT2` ([`KvmPitState2`]).
pub(crate) const KVM_GET_PIT2: u32 = ior(0x9f, size_of::<KvmPitState2>());
/// `KVM_SET_PIT2` ([`KvmPitState2`]).
pub(crate) const KVM_SET_PIT2: u32 = iow(0xa0, size_of::<KvmPitState2>());
/// `KVM_SIGNAL_MSI` ([`KvmMsi`]).
pub(crate) const KVM_SIGNAL_MSI: u32 = iow(0xa5, size_of::<KvmMsi>());

const _: () = {
    assert!(KVM_IRQ_LINE == 0x4008_ae61);
    assert!(KVM_GET_IRQCHIP == 0xc208_ae62);
    assert!(KVM_SET_IRQCHIP == 0x8208_ae63);
    assert!(KVM_IRQ_LINE_STATUS == 0xc008_ae67);
    assert!(KVM_SET_GSI_ROUTING == 0x4008_ae6a);
    assert!(KVM_IRQFD == 0x4020_ae76);
    assert!(KVM_CREATE_PIT2 == 0x4040_ae77);
    assert!(KVM_GET_PIT2 == 0x8070_ae9f);
    assert!(KVM_SET_PIT2 == 0x4070_aea0);
    assert!(KVM_SIGNAL_MSI == 0x4020_aea5);
    assert!(KVM_GET_PIT == 0xc048_ae65);
    assert!(KVM_SET_PIT == 0x8048_ae66);
};

/// `KVM_IRQFD_FLAG_DEASSIGN`.
pub(crate) const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1;
/// `KVM_IRQFD_FLAG_RESAMPLE`.
pub(crate) const KVM_IRQFD_FLAG_RESAMPLE: u32 = 2;

/// `struct kvm_irqfd`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmIrqfd {
    pub(crate) fd: u32,
    pub(crate) gsi: u32,
    pub(crate) flags: u32,
    pub(crate) resamplefd: u32,
    pub(crate) pad: [u8; 16],
}

const _: () = {
    assert!(size_of::<KvmIrqfd>() == 32);
    assert!(offset_of!(KvmIrqfd, resamplefd) == 12);
    assert!(size_of::<KvmPitState2>() == 112);
};

// SAFETY: `KvmIrqfd` is `#[repr(C)]` with only integer fields, so every bit pattern is valid;
// it has no interior mutability.
unsafe impl FromBytes for KvmIrqfd {}
// SAFETY: as above, and the assert shows the fields cover its size (no padding).
unsafe impl AsBytes for KvmIrqfd {}
