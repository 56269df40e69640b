// SPDX-License-Identifier: GPL-2.0-only
//! One IOAPIC redirection-table entry (upstream `union kvm_ioapic_redirect_entry`).

use crate::irq::{DeliveryMode, LapicIrq, Shorthand};

/// A redirection entry: vector 7:0, delivery mode 10:8, destination mode 11, delivery status
/// 12 (read-only, always 0 here as upstream), polarity 13, remote IRR 14 (read-only), trigger
/// mode 15, mask 16, destination 63:56.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirEntry(pub u64);

const REMOTE_IRR: u64 = 1 << 14;
const DELIVERY_STATUS: u64 = 1 << 12;
const LEVEL: u64 = 1 << 15;
const MASK: u64 = 1 << 16;

impl RedirEntry {
    /// The vector.
    pub fn vector(self) -> u8 {
        self.0 as u8
    }

    /// The raw delivery-mode field (bits 10:8).
    pub fn delivery_mode_bits(self) -> u32 {
        ((self.0 >> 8) & 7) as u32
    }

    /// Logical destination mode.
    pub fn dest_logical(self) -> bool {
        self.0 & (1 << 11) != 0
    }

    /// The delivery-status bit.
    pub fn delivery_status(self) -> bool {
        self.0 & DELIVERY_STATUS != 0
    }

    /// Remote IRR: a level-triggered interrupt was accepted and not yet EOIed.
    pub fn remote_irr(self) -> bool {
        self.0 & REMOTE_IRR != 0
    }

    /// Level (`true`) or edge triggered.
    pub fn level_triggered(self) -> bool {
        self.0 & LEVEL != 0
    }

    /// Masked.
    pub fn masked(self) -> bool {
        self.0 & MASK != 0
    }

    /// The destination (8 bits, physical APIC ID or logical destination).
    pub fn dest_id(self) -> u8 {
        (self.0 >> 56) as u8
    }

    pub(super) fn set_remote_irr(&mut self, v: bool) {
        self.0 = (self.0 & !REMOTE_IRR) | if v { REMOTE_IRR } else { 0 };
    }

    pub(super) fn set_delivery_status(&mut self, v: bool) {
        self.0 = (self.0 & !DELIVERY_STATUS) | if v { DELIVERY_STATUS } else { 0 };
    }

    pub(super) fn set_mask(&mut self, v: bool) {
        self.0 = (self.0 & !MASK) | if v { MASK } else { 0 };
    }

    /// The request this entry sends (upstream `ioapic_service`'s `irqe`; delivery mode 3 is
    /// [`DeliveryMode::RemoteRead`], upstream's PV-unhalt kick).
    pub fn to_lapic_irq(self) -> LapicIrq {
        LapicIrq {
            vector: self.vector(),
            delivery_mode: DeliveryMode::from_bits(self.delivery_mode_bits()),
            dest_logical: self.dest_logical(),
            level_triggered: self.level_triggered(),
            level: true,
            shorthand: Shorthand::None,
            dest_id: u32::from(self.dest_id()),
            msi_redir_hint: false,
        }
    }
}
