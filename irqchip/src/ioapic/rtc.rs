// SPDX-License-Identifier: GPL-2.0-only
//! The RTC's EOI tracking (upstream `struct rtc_status`, `rtc_irq_eoi*`,
//! `kvm_rtc_eoi_tracking_restore_*`): while a GSI 8 interrupt sent with line status is not
//! EOIed by every vCPU it went to, further ones are reported as coalesced, so that userspace
//! can compensate (Windows guests keep time by counting RTC interrupts).

use super::RedirEntry;
use super::{Ioapic, IoapicEnv, MAX_VCPU_IDS, RTC_GSI};
use crate::irq::{DeliveryMode, LapicIrq};

/// The vCPUs an RTC interrupt went to and the vector each got (upstream `struct dest_map`).
#[derive(Clone, Debug)]
pub struct DestMap {
    map: [u64; MAX_VCPU_IDS / 64],
    vectors: [u8; MAX_VCPU_IDS],
}

impl Default for DestMap {
    fn default() -> Self {
        Self {
            map: [0; MAX_VCPU_IDS / 64],
            vectors: [0; MAX_VCPU_IDS],
        }
    }
}

impl DestMap {
    /// Records that `vector` went to `vcpu_id`; IDs beyond [`MAX_VCPU_IDS`] are ignored.
    pub fn set(&mut self, vcpu_id: u32, vector: u8) {
        let id = vcpu_id as usize;
        if let (Some(w), Some(v)) = (self.map.get_mut(id / 64), self.vectors.get_mut(id)) {
            *w |= 1 << (id % 64);
            *v = vector;
        }
    }

    /// Upstream `__apic_accept_irq`'s recording: `vcpu_id`'s APIC accepted `irq`; only fixed
    /// and lowest-priority requests are recorded (NMI, INIT, SIPI, SMI and mode 3 count as
    /// delivered without an entry, so no EOI ever retires them).
    pub fn record(&mut self, vcpu_id: u32, irq: &LapicIrq) {
        if matches!(
            irq.delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) {
            self.set(vcpu_id, irq.vector);
        }
    }

    /// Whether `vcpu_id` got the interrupt, and the vector.
    pub fn get(&self, vcpu_id: u32) -> Option<u8> {
        let id = vcpu_id as usize;
        let w = self.map.get(id / 64)?;
        if w & (1 << (id % 64)) != 0 {
            self.vectors.get(id).copied()
        } else {
            None
        }
    }

    /// How many vCPUs are recorded.
    pub fn count(&self) -> i32 {
        self.map.iter().map(|w| w.count_ones() as i32).sum()
    }

    pub(super) fn clear(&mut self, vcpu_id: u32) -> bool {
        let id = vcpu_id as usize;
        match self.map.get_mut(id / 64) {
            Some(w) if *w & (1 << (id % 64)) != 0 => {
                *w &= !(1 << (id % 64));
                true
            }
            _ => false,
        }
    }

    pub(super) fn reset(&mut self) {
        self.map = [0; MAX_VCPU_IDS / 64];
    }
}

impl Ioapic {
    pub(super) fn rtc_reset(&mut self) {
        self.rtc_pending_eoi = 0;
        self.rtc_dest_map.reset();
    }

    pub(super) fn rtc_eoi(&mut self, vcpu_id: u32) {
        if self.rtc_dest_map.clear(vcpu_id) {
            // Upstream WARNs and rebuilds the tracker from every vCPU if this went negative; it
            // cannot without a bug, so clamping keeps the tracker usable.
            self.rtc_pending_eoi = (self.rtc_pending_eoi - 1).max(0);
        }
    }

    /// The RTC entry's (destination, logical, vector), for the module's
    /// [`Self::rtc_restore_one`] computation.
    pub fn rtc_entry(&self) -> RedirEntry {
        self.redirtbl[RTC_GSI]
    }

    /// Upstream `__rtc_irq_eoi_tracking_restore_one` (after `KVM_SET_LAPIC`, and for every vCPU
    /// after [`Self::set_state`]): `vcpu_id` is a destination of the RTC entry
    /// (`matches_dest`) and `pending_eoi`: the RTC entry's vector is set in its IRR or ISR.
    pub fn rtc_restore_one(&mut self, vcpu_id: u32, matches_dest: bool, pending_eoi: bool) {
        if !matches_dest {
            return;
        }
        let old = self.rtc_dest_map.get(vcpu_id).is_some();
        if pending_eoi == old {
            return;
        }
        if pending_eoi {
            let vector = self.redirtbl[RTC_GSI].vector();
            self.rtc_dest_map.set(vcpu_id, vector);
            self.rtc_pending_eoi += 1;
        } else {
            self.rtc_eoi(vcpu_id);
        }
    }

    /// Upstream `kvm_rtc_eoi_tracking_restore_all`: the tracker reset, then every vCPU the RTC
    /// entry addresses and that has its vector in IRR or ISR counted as awaiting EOI (after
    /// `KVM_SET_IRQCHIP`, whose IRR re-injection may have delivered the RTC already).
    pub fn rtc_restore_all(&mut self, env: &mut dyn IoapicEnv) {
        self.rtc_reset();
        let e = self.redirtbl[RTC_GSI];
        env.rtc_scan(
            u32::from(e.dest_id()),
            e.dest_logical(),
            e.vector(),
            &mut |vcpu_id, pending_eoi| self.rtc_restore_one(vcpu_id, true, pending_eoi),
        );
    }

    /// Whether the RTC tracker holds an undelivered EOI (for tests and debugging).
    pub fn rtc_pending_eoi(&self) -> i32 {
        self.rtc_pending_eoi
    }
}
