// SPDX-License-Identifier: GPL-2.0-only
//! The irqchip part of the KVM ABI (`include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`
//! of 6.12): ioctl numbers and the structures they copy, `#[repr(C)]` with sizes and offsets
//! asserted against the headers.

use core::mem::{offset_of, size_of};
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
/// `KVM_GET_PIT` ([`KvmPitState`]).
pub(crate) const KVM_GET_PIT: u32 = iowr(0x65, size_of::<KvmPitState>());
/// `KVM_SET_PIT` ([`KvmPitState`]).
pub(crate) const KVM_SET_PIT: u32 = ior(0x66, size_of::<KvmPitState>());
/// `KVM_IRQ_LINE_STATUS` ([`KvmIrqLevel`]).
pub(crate) const KVM_IRQ_LINE_STATUS: u32 = iowr(0x67, size_of::<KvmIrqLevel>());
/// `KVM_SET_GSI_ROUTING` ([`KvmIrqRouting`] + entries).
pub(crate) const KVM_SET_GSI_ROUTING: u32 = iow(0x6a, size_of::<KvmIrqRouting>());
/// `KVM_REINJECT_CONTROL` ([`KvmReinjectControl`]; `_IO` upstream).
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

/// `KVM_IRQCHIP_PIC_MASTER`.
pub(crate) const KVM_IRQCHIP_PIC_MASTER: u32 = 0;
/// `KVM_IRQCHIP_PIC_SLAVE`.
pub(crate) const KVM_IRQCHIP_PIC_SLAVE: u32 = 1;
/// `KVM_IRQCHIP_IOAPIC`.
pub(crate) const KVM_IRQCHIP_IOAPIC: u32 = 2;
/// `KVM_IOAPIC_NUM_PINS`.
pub(crate) const KVM_IOAPIC_NUM_PINS: usize = 24;
/// PIC pins (both chips).
pub(crate) const PIC_NUM_PINS: u32 = 16;

/// `KVM_IRQ_ROUTING_IRQCHIP`.
pub(crate) const KVM_IRQ_ROUTING_IRQCHIP: u32 = 1;
/// `KVM_IRQ_ROUTING_MSI`.
pub(crate) const KVM_IRQ_ROUTING_MSI: u32 = 2;
/// `KVM_MSI_VALID_DEVID`.
pub(crate) const KVM_MSI_VALID_DEVID: u32 = 1;

/// `KVM_IRQFD_FLAG_DEASSIGN`.
pub(crate) const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1;
/// `KVM_IRQFD_FLAG_RESAMPLE`.
pub(crate) const KVM_IRQFD_FLAG_RESAMPLE: u32 = 2;

/// `KVM_PIT_SPEAKER_DUMMY` (`kvm_pit_config.flags`).
pub(crate) const KVM_PIT_SPEAKER_DUMMY: u32 = 1;
/// `KVM_PIT_FLAGS_HPET_LEGACY` (`kvm_pit_state2.flags`).
pub(crate) const KVM_PIT_FLAGS_HPET_LEGACY: u32 = 1;
/// `KVM_PIT_FLAGS_SPEAKER_DATA_ON` (`kvm_pit_state2.flags`).
pub(crate) const KVM_PIT_FLAGS_SPEAKER_DATA_ON: u32 = 2;

/// `struct kvm_irq_level`: `irq` in, `status` out (a union upstream).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmIrqLevel {
    /// The GSI (in) or the `kvm_set_irq` result (out, `KVM_IRQ_LINE_STATUS`).
    pub(crate) irq_or_status: u32,
    /// The line level.
    pub(crate) level: u32,
}

/// `struct kvm_pic_state`.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct KvmPicState {
    pub(crate) last_irr: u8,
    pub(crate) irr: u8,
    pub(crate) imr: u8,
    pub(crate) isr: u8,
    pub(crate) priority_add: u8,
    pub(crate) irq_base: u8,
    pub(crate) read_reg_select: u8,
    pub(crate) poll: u8,
    pub(crate) special_mask: u8,
    pub(crate) init_state: u8,
    pub(crate) auto_eoi: u8,
    pub(crate) rotate_on_auto_eoi: u8,
    pub(crate) special_fully_nested_mode: u8,
    pub(crate) init4: u8,
    pub(crate) elcr: u8,
    pub(crate) elcr_mask: u8,
}

/// `struct kvm_ioapic_state`.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct KvmIoapicState {
    pub(crate) base_address: u64,
    pub(crate) ioregsel: u32,
    pub(crate) id: u32,
    pub(crate) irr: u32,
    pub(crate) pad: u32,
    pub(crate) redirtbl: [u64; KVM_IOAPIC_NUM_PINS],
}

/// `struct kvm_irqchip`: a chip id and 512 bytes holding a [`KvmPicState`] or a
/// [`KvmIoapicState`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct KvmIrqchip {
    pub(crate) chip_id: u32,
    pub(crate) pad: u32,
    pub(crate) chip: [u8; 512],
}

/// `struct kvm_irq_routing` (the header; `nr` entries follow).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmIrqRouting {
    pub(crate) nr: u32,
    pub(crate) flags: u32,
}

/// `struct kvm_irq_routing_entry`; `u` is the union (irqchip: `[irqchip, pin]`; MSI:
/// `[address_lo, address_hi, data, devid]`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct KvmIrqRoutingEntry {
    pub(crate) gsi: u32,
    pub(crate) type_: u32,
    pub(crate) flags: u32,
    pub(crate) pad: u32,
    pub(crate) u: [u32; 8],
}

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

/// `struct kvm_msi`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmMsi {
    pub(crate) address_lo: u32,
    pub(crate) address_hi: u32,
    pub(crate) data: u32,
    pub(crate) flags: u32,
    pub(crate) devid: u32,
    pub(crate) pad: [u8; 12],
}

/// `struct kvm_pit_config`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmPitConfig {
    pub(crate) flags: u32,
    pub(crate) pad: [u32; 15],
}

/// `struct kvm_pit_channel_state`.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct KvmPitChannelState {
    pub(crate) count: u32,
    pub(crate) latched_count: u16,
    pub(crate) count_latched: u8,
    pub(crate) status_latched: u8,
    pub(crate) status: u8,
    pub(crate) read_state: u8,
    pub(crate) write_state: u8,
    pub(crate) write_latch: u8,
    pub(crate) rw_mode: u8,
    pub(crate) mode: u8,
    pub(crate) bcd: u8,
    pub(crate) gate: u8,
    pub(crate) count_load_time: i64,
}

/// `struct kvm_pit_state`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmPitState {
    pub(crate) channels: [KvmPitChannelState; 3],
}

/// `struct kvm_pit_state2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmPitState2 {
    pub(crate) channels: [KvmPitChannelState; 3],
    pub(crate) flags: u32,
    pub(crate) reserved: [u32; 9],
}

/// `struct kvm_reinject_control`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmReinjectControl {
    pub(crate) pit_reinject: u8,
    pub(crate) reserved: [u8; 31],
}

const _: () = {
    assert!(size_of::<KvmIrqLevel>() == 8);
    assert!(size_of::<KvmPicState>() == 16);
    assert!(offset_of!(KvmPicState, irq_base) == 5);
    assert!(offset_of!(KvmPicState, elcr_mask) == 15);
    assert!(size_of::<KvmIoapicState>() == 216);
    assert!(offset_of!(KvmIoapicState, ioregsel) == 8);
    assert!(offset_of!(KvmIoapicState, irr) == 16);
    assert!(offset_of!(KvmIoapicState, redirtbl) == 24);
    assert!(size_of::<KvmIrqchip>() == 520);
    assert!(offset_of!(KvmIrqchip, chip) == 8);
    assert!(size_of::<KvmIrqRouting>() == 8);
    assert!(size_of::<KvmIrqRoutingEntry>() == 48);
    assert!(offset_of!(KvmIrqRoutingEntry, u) == 16);
    assert!(size_of::<KvmIrqfd>() == 32);
    assert!(offset_of!(KvmIrqfd, resamplefd) == 12);
    assert!(size_of::<KvmMsi>() == 32);
    assert!(offset_of!(KvmMsi, devid) == 16);
    assert!(size_of::<KvmPitConfig>() == 64);
    assert!(size_of::<KvmPitChannelState>() == 24);
    assert!(offset_of!(KvmPitChannelState, gate) == 15);
    assert!(offset_of!(KvmPitChannelState, count_load_time) == 16);
    assert!(size_of::<KvmPitState>() == 72);
    assert!(size_of::<KvmPitState2>() == 112);
    assert!(offset_of!(KvmPitState2, flags) == 72);
    assert!(size_of::<KvmReinjectControl>() == 32);
};

macro_rules! plain {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `$t` is `#[repr(C)]` with only integer (or integer array) fields, so every
            // bit pattern is a valid value, and it has no interior mutability.
            unsafe impl FromBytes for $t {}
            // SAFETY: as above, and the asserts above show the fields cover its size exactly
            // (no padding), so no byte of a value is uninitialised.
            unsafe impl AsBytes for $t {}
        )*
    };
}

plain!(
    KvmIrqLevel,
    KvmPicState,
    KvmIoapicState,
    KvmIrqchip,
    KvmIrqRouting,
    KvmIrqRoutingEntry,
    KvmIrqfd,
    KvmMsi,
    KvmPitConfig,
    KvmPitChannelState,
    KvmPitState,
    KvmPitState2,
    KvmReinjectControl,
);
