// SPDX-License-Identifier: GPL-2.0-only
//! The in-kernel local APIC of a vCPU (upstream arch/x86/kvm/lapic.c, the kernel side): the
//! register model is `irqchip::lapic`; this file owns what crosses threads (posted vectors,
//! INIT/SIPI, the timer's expiry) and delivery to other vCPUs.

use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::Vm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// What other contexts post to a vCPU's LAPIC (upstream: the IRR bits `__apic_accept_irq`
/// sets with atomics, `pending_events` INIT/SIPI and `sipi_vector`, the timer's `pending`):
/// the vCPU thread folds them into its LAPIC model ([`VcpuLapic::sync`]).
pub(crate) struct Posted {
    /// Posted vectors (bit n = vector n).
    irr: [AtomicU64; 4],
    /// Posted vectors that are level-triggered (their TMR bit is set on acceptance).
    tmr: [AtomicU64; 4],
    /// An INIT is pending.
    init: AtomicBool,
    /// A SIPI is pending, with `sipi_vector`.
    sipi: AtomicBool,
    sipi_vector: AtomicU8,
    /// The LAPIC timer expired (hrtimer callback).
    #[allow(dead_code)] // The timer (timer.rs) uses it.
    pub(crate) timer: AtomicBool,
}

impl Posted {
    /// Nothing posted.
    pub(crate) const fn new() -> Self {
        Posted {
            irr: [const { AtomicU64::new(0) }; 4],
            tmr: [const { AtomicU64::new(0) }; 4],
            init: AtomicBool::new(false),
            sipi: AtomicBool::new(false),
            sipi_vector: AtomicU8::new(0),
            timer: AtomicBool::new(false),
        }
    }

    /// Posts `vector` (level-triggered if `level`).
    #[allow(dead_code)]
    pub(crate) fn post(&self, vector: u8, level: bool) {
        let (w, b) = ((vector / 64) as usize, 1u64 << (vector % 64));
        if let (Some(i), Some(t)) = (self.irr.get(w), self.tmr.get(w)) {
            if level {
                t.fetch_or(b, Ordering::SeqCst);
            } else {
                t.fetch_and(!b, Ordering::SeqCst);
            }
            i.fetch_or(b, Ordering::SeqCst);
        }
    }

    /// Posts an INIT.
    #[allow(dead_code)]
    pub(crate) fn post_init(&self) {
        self.init.store(true, Ordering::SeqCst);
    }

    /// Posts a SIPI with `vector` (the vector first: upstream's smp_wmb before the bit).
    pub(crate) fn post_sipi(&self, vector: u8) {
        self.sipi_vector.store(vector, Ordering::SeqCst);
        self.sipi.store(true, Ordering::SeqCst);
    }

    fn pending_init_or_sipi(&self) -> bool {
        self.init.load(Ordering::SeqCst) || self.sipi.load(Ordering::SeqCst)
    }
}

/// A vCPU's in-kernel LAPIC (in [`crate::irq::inject::IrqLocked`], under the vCPU mutex).
pub(crate) struct VcpuLapic {}

impl VcpuLapic {
    /// Folds what other contexts posted into the model (vCPU thread).
    pub(crate) fn sync(&mut self, _vcpu: &Vcpu) {}

    /// Upstream `kvm_apic_accept_pic_intr`: LINT0 takes ExtINT from the PIC.
    pub(crate) fn accept_pic_intr(&self, _vcpu: &Vcpu) -> bool {
        false
    }

    /// Upstream `kvm_apic_has_interrupt` != -1: a vector above the PPR is pending.
    pub(crate) fn has_interrupt(&self) -> bool {
        false
    }

    /// Upstream `kvm_get_apic_interrupt`: the highest pending vector, moved from IRR to ISR.
    pub(crate) fn ack_interrupt(&mut self, _vcpu: &Vcpu) -> Option<u8> {
        None
    }

    /// The TPR (register 0x80).
    pub(crate) fn tpr(&self) -> u8 {
        0
    }

    /// An INIT or SIPI is pending.
    pub(crate) fn has_init_or_sipi(&self) -> bool {
        false
    }

    /// `KVM_SET_MP_STATE(SIPI_RECEIVED)`: a SIPI with the last vector is pending.
    pub(crate) fn set_sipi_pending(&mut self, vcpu: &Vcpu) {
        let v = vcpu.irq.posted.sipi_vector.load(Ordering::SeqCst);
        vcpu.irq.posted.post_sipi(v);
    }
}

/// Upstream `kvm_apic_accept_events` (see [`crate::irq::inject`]).
pub(crate) fn accept_events(vcpu: &Vcpu, _l: &mut VcpuLocked) {
    let _ = vcpu.irq.posted.pending_init_or_sipi();
}

/// The in-kernel PIC's output is raised (HOOK(irqroute): `crate::irq::chip::pic_pending`).
pub(crate) fn pic_has_interrupt(_vm: &Vm) -> bool {
    false
}

/// The in-kernel PIC's INTA cycle (HOOK(irqroute): `crate::irq::chip::pic_ack`).
pub(crate) fn pic_ack(_vm: &Vm) -> u8 {
    0
}
