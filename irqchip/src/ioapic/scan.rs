// SPDX-License-Identifier: GPL-2.0-only
//! EOI-exit bitmaps (upstream `kvm_ioapic_scan_entry`, `kvm_scan_ioapic_irq`): the vectors
//! whose EOI a vCPU must report to the IOAPIC (in-kernel) or to userspace (split irqchip,
//! `KVM_EXIT_IOAPIC_EOI`), as 256-bit maps (bit v of word v / 64).

use super::{Ioapic, RTC_GSI};

impl Ioapic {
    /// Upstream `kvm_ioapic_scan_entry`: the vectors whose EOI this vCPU must report to the
    /// IOAPIC (its EOI-exit bitmap), ORed into `handled` (bit v = vector v). For each entry
    /// that is level-triggered, has an ack notifier (`has_notifier(pin)`) or is the RTC's,
    /// the vector is set if the vCPU is a destination (`matches(dest_id, logical)`) or has the
    /// vector pending EOI (`pending_eoi(vector)`: set in its IRR or ISR). The RTC tracker's
    /// vector for this vCPU is set too.
    pub fn scan_entry(
        &self,
        vcpu_id: u32,
        handled: &mut [u64; 4],
        has_notifier: &mut dyn FnMut(u8) -> bool,
        matches: &mut dyn FnMut(u32, bool) -> bool,
        pending_eoi: &mut dyn FnMut(u8) -> bool,
    ) {
        if let Some(v) = self.rtc_dest_map.get(vcpu_id) {
            set_vector(handled, v);
        }
        for (pin, e) in self.redirtbl.iter().enumerate() {
            if e.level_triggered() || has_notifier(pin as u8) || pin == RTC_GSI {
                scan_irq(
                    handled,
                    u32::from(e.dest_id()),
                    e.dest_logical(),
                    e.vector(),
                    matches,
                    pending_eoi,
                );
            }
        }
    }
}

/// Whether bit `vector` of a 256-bit vector bitmap is set (upstream
/// `kvm_ioapic_handles_vector`'s `test_bit`).
pub fn test_vector(bitmap: &[u64; 4], vector: u8) -> bool {
    bitmap[usize::from(vector >> 6)] & (1 << (vector & 63)) != 0
}

/// Sets bit `vector` of a 256-bit vector bitmap.
pub fn set_vector(bitmap: &mut [u64; 4], vector: u8) {
    bitmap[usize::from(vector >> 6)] |= 1 << (vector & 63);
}

/// Upstream `kvm_scan_ioapic_irq`: intercept the EOI of `vector` if the vCPU is a target of
/// (`dest_id`, `logical`) now, or still has the vector pending from an earlier routing.
pub fn scan_irq(
    bitmap: &mut [u64; 4],
    dest_id: u32,
    logical: bool,
    vector: u8,
    matches: &mut dyn FnMut(u32, bool) -> bool,
    pending_eoi: &mut dyn FnMut(u8) -> bool,
) {
    if matches(dest_id, logical) || pending_eoi(vector) {
        set_vector(bitmap, vector);
    }
}
