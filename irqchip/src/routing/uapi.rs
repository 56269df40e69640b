// SPDX-License-Identifier: GPL-2.0-only
//! The routing and interrupt-injection structures of `include/uapi/linux/kvm.h` (Linux 6.12):
//! `struct kvm_irq_routing(_entry)` (`KVM_SET_GSI_ROUTING`), `struct kvm_msi`
//! (`KVM_SIGNAL_MSI`) and `struct kvm_irq_level` (`KVM_IRQ_LINE(_STATUS)`).

use core::mem::{offset_of, size_of};
use x86::uapi::Pod;

/// `KVM_IRQ_ROUTING_IRQCHIP`: a GSI wired to a PIC or IOAPIC pin.
pub const KVM_IRQ_ROUTING_IRQCHIP: u32 = 1;
/// `KVM_IRQ_ROUTING_MSI`: a GSI that sends an MSI.
pub const KVM_IRQ_ROUTING_MSI: u32 = 2;
/// `KVM_IRQ_ROUTING_S390_ADAPTER` (not on x86).
pub const KVM_IRQ_ROUTING_S390_ADAPTER: u32 = 3;
/// `KVM_IRQ_ROUTING_HV_SINT` (Hyper-V SynIC; not built here).
pub const KVM_IRQ_ROUTING_HV_SINT: u32 = 4;
/// `KVM_IRQ_ROUTING_XEN_EVTCHN` (Xen; not built here).
pub const KVM_IRQ_ROUTING_XEN_EVTCHN: u32 = 5;
/// `KVM_MSI_VALID_DEVID`: `devid` is valid (accepted and ignored on x86, as upstream).
pub const KVM_MSI_VALID_DEVID: u32 = 1 << 0;
/// `KVM_MAX_IRQ_ROUTES`: the most entries a table may have; every GSI is below it.
pub const KVM_MAX_IRQ_ROUTES: u32 = 4096;

/// `struct kvm_irq_routing_entry`: `gsi`, `type`, `flags`, `pad` and a 32-byte union
/// (`irqchip`, `msi`, `adapter`, `hv_sint`, `xen_evtchn`, `pad[8]`), kept as raw words here;
/// the typed views are methods.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqRoutingEntry {
    /// The GSI this entry routes.
    pub gsi: u32,
    /// `KVM_IRQ_ROUTING_*`.
    pub type_: u32,
    /// 0, or `KVM_MSI_VALID_DEVID` for MSI entries.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
    /// The union, as 32-bit words (the s390 member makes it 8-byte aligned).
    pub u: [u64; 4],
}

const _: () = {
    assert!(size_of::<KvmIrqRoutingEntry>() == 48);
    assert!(offset_of!(KvmIrqRoutingEntry, type_) == 4);
    assert!(offset_of!(KvmIrqRoutingEntry, flags) == 8);
    assert!(offset_of!(KvmIrqRoutingEntry, u) == 16);
};

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmIrqRoutingEntry {}

impl KvmIrqRoutingEntry {
    /// The `n`th 32-bit word of the union (little endian, as on x86); 0 past its end.
    pub fn word(&self, n: usize) -> u32 {
        let w = self.u.get(n / 2).copied().unwrap_or(0);
        if n & 1 == 0 {
            w as u32
        } else {
            (w >> 32) as u32
        }
    }

    /// Sets the `n`th 32-bit word of the union; ignored past its end.
    pub fn set_word(&mut self, n: usize, v: u32) {
        if let Some(w) = self.u.get_mut(n / 2) {
            if n & 1 == 0 {
                *w = (*w & !0xffff_ffff) | u64::from(v);
            } else {
                *w = (*w & 0xffff_ffff) | (u64::from(v) << 32);
            }
        }
    }

    /// An irqchip entry (`u.irqchip = { irqchip, pin }`).
    pub const fn irqchip(gsi: u32, irqchip: u32, pin: u32) -> Self {
        Self {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            flags: 0,
            pad: 0,
            u: [irqchip as u64 | ((pin as u64) << 32), 0, 0, 0],
        }
    }

    /// An MSI entry (`u.msi = { address_lo, address_hi, data, devid }`), flags 0.
    pub const fn msi(gsi: u32, address_lo: u32, address_hi: u32, data: u32) -> Self {
        Self {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            flags: 0,
            pad: 0,
            u: [
                address_lo as u64 | ((address_hi as u64) << 32),
                data as u64,
                0,
                0,
            ],
        }
    }
}

/// `struct kvm_irq_routing` without its flexible array: `nr` entries follow the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqRouting {
    /// How many entries follow.
    pub nr: u32,
    /// Must be 0.
    pub flags: u32,
}

const _: () = assert!(size_of::<KvmIrqRouting>() == 8);

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmIrqRouting {}

/// `struct kvm_msi` (`KVM_SIGNAL_MSI`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsi {
    /// Address bits 31:0.
    pub address_lo: u32,
    /// Address bits 63:32.
    pub address_hi: u32,
    /// Data.
    pub data: u32,
    /// 0 or `KVM_MSI_VALID_DEVID`.
    pub flags: u32,
    /// The device ID (ignored on x86).
    pub devid: u32,
    /// Padding.
    pub pad: [u8; 12],
}

const _: () = {
    assert!(size_of::<KvmMsi>() == 32);
    assert!(offset_of!(KvmMsi, flags) == 12);
    assert!(offset_of!(KvmMsi, devid) == 16);
};

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmMsi {}

/// `struct kvm_irq_level` (`KVM_IRQ_LINE`, `KVM_IRQ_LINE_STATUS`): `irq` in, `status` (same
/// word) out for the `_STATUS` form.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqLevel {
    /// The GSI on the way in; the `kvm_set_irq` result (`status`, signed) on the way out.
    pub irq_or_status: u32,
    /// 1 = assert, 0 = de-assert.
    pub level: u32,
}

const _: () = assert!(size_of::<KvmIrqLevel>() == 8);

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmIrqLevel {}

impl KvmIrqLevel {
    /// The GSI (`irq`).
    pub fn irq(&self) -> u32 {
        self.irq_or_status
    }

    /// Stores the status (`status`, an `s32` sharing the word with `irq`).
    pub fn set_status(&mut self, status: i32) {
        self.irq_or_status = status as u32;
    }
}
