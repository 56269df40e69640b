// SPDX-License-Identifier: GPL-2.0-only
//! MSI messages as KVM decodes them (upstream `kvm_set_msi_irq`, `kvm_msi_route_invalid`,
//! `kvm_set_msi` in `arch/x86/kvm/irq_comm.c`, and `x86_msi_msg_get_destid`).
//!
//! Address: bit 2 destination mode (logical), bit 3 redirection hint, bits 19:12 destination
//! ID bits 7:0; with `KVM_X2APIC_API_USE_32BIT_IDS` ("x2APIC format") address bits 63:40 are
//! destination bits 31:8 and address bits 39:32 must be 0. Data: bits 7:0 vector, 10:8
//! delivery mode, 15 trigger mode (level). KVM does not look at the address's 0xfee base,
//! nor at the virtual extended destination ID in address bits 11:5 (the VMM translates that
//! into the routing entry), nor at the data's level bit 14 (every MSI asserts).

use crate::irq::{DeliveryMode, LapicIrq, Shorthand};

/// An MSI message (the routing entry's `u.msi` or `struct kvm_msi`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMsg {
    /// Address bits 31:0.
    pub address_lo: u32,
    /// Address bits 63:32.
    pub address_hi: u32,
    /// Data.
    pub data: u32,
}

/// What sending an MSI comes to before it reaches the local APICs (upstream `kvm_set_msi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiDelivery {
    /// Deliver this request (`kvm_irq_delivery_to_apic`); its result is the answer.
    Deliver(LapicIrq),
    /// Nothing to deliver; this is the answer (-1 for a de-assertion, -EINVAL (-22) for an
    /// address the x2APIC format forbids).
    Done(i32),
}

impl MsiMsg {
    /// Upstream `kvm_msi_route_invalid`: in x2APIC format address bits 39:32 are reserved.
    pub fn route_invalid(&self, x2apic_format: bool) -> bool {
        x2apic_format && self.address_hi & 0xff != 0
    }

    /// The destination ID (`x86_msi_msg_get_destid(msg, x2apic_format)`).
    pub fn dest_id(&self, x2apic_format: bool) -> u32 {
        let mut dest = (self.address_lo >> 12) & 0xff;
        if x2apic_format {
            dest |= self.address_hi & 0xffff_ff00;
        }
        dest
    }

    /// The vector (data bits 7:0).
    pub fn vector(&self) -> u8 {
        self.data as u8
    }

    /// Level triggered (data bit 15).
    pub fn level_triggered(&self) -> bool {
        self.data & (1 << 15) != 0
    }

    /// Logical destination mode (address bit 2).
    pub fn dest_logical(&self) -> bool {
        self.address_lo & (1 << 2) != 0
    }

    /// Upstream `kvm_set_msi_irq`: the request this message makes (delivery mode 3 is
    /// [`DeliveryMode::RemoteRead`], upstream's `APIC_DM_REMRD`).
    pub fn to_lapic_irq(&self, x2apic_format: bool) -> LapicIrq {
        LapicIrq {
            vector: self.vector(),
            delivery_mode: DeliveryMode::from_bits((self.data >> 8) & 7),
            dest_logical: self.dest_logical(),
            level_triggered: self.level_triggered(),
            level: true,
            shorthand: Shorthand::None,
            dest_id: self.dest_id(x2apic_format),
            msi_redir_hint: self.address_lo & (1 << 3) != 0,
        }
    }

    /// Upstream `kvm_set_msi`: what an MSI route (or `KVM_SIGNAL_MSI`, `level` = true) driven to
    /// `level` does.
    pub fn set(&self, x2apic_format: bool, level: bool) -> MsiDelivery {
        if self.route_invalid(x2apic_format) {
            return MsiDelivery::Done(-22);
        }
        if !level {
            return MsiDelivery::Done(-1);
        }
        MsiDelivery::Deliver(self.to_lapic_irq(x2apic_format))
    }
}
