// SPDX-License-Identifier: GPL-2.0-only
//! The posted-interrupt inbox of one local APIC: what other threads (IPIs from other vCPUs,
//! the IOAPIC, MSIs, irqfds, the timer's hrtimer) hand to a vCPU without taking its lock.
//!
//! Posting is upstream `__apic_accept_irq` from the sender's side; the owner merges the
//! inbox into IRR/TMR ([`super::Lapic::sync_pir`]) under the vCPU lock before it evaluates
//! pending interrupts, and takes the NMI/SMI/INIT/SIPI events from here. The sender kicks
//! the target when [`Pir::post`] returns `true` (upstream kicks on every accepted request).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::dest::DestInfo;
use crate::irq::{DeliveryMode, LapicIrq};

const EV_INIT: u64 = 1 << 0;
const EV_SIPI: u64 = 1 << 1;
const EV_SMI: u64 = 1 << 2;
/// Upstream `vcpu->arch.pv.pv_unhalted` (a remote-read / PV-unhalt kick arrived).
const EV_UNHALT: u64 = 1 << 3;
/// The PIT's NMI-watchdog tick asks the owner to deliver its LVT0 (`kvm_apic_nmi_wd_deliver`).
const EV_LVT0: u64 = 1 << 4;
const EV_SIPI_VECTOR_SHIFT: u32 = 8;

/// The inbox: 256 posted vectors, their trigger modes, and the other events.
#[derive(Debug, Default)]
pub struct Pir {
    /// Posted vectors (bit `v % 64` of word `v / 64`).
    irr: [AtomicU64; 4],
    /// Trigger mode of the posted vectors: 1 = level (becomes the TMR bit).
    tmr: [AtomicU64; 4],
    /// INIT / SIPI (+ vector in bits 15:8) / SMI, in one word so that INIT can drop a
    /// pending SIPI atomically, as upstream's `pending_events = 1 << KVM_APIC_INIT`.
    events: AtomicU64,
    /// NMIs posted and not yet taken (upstream `nmi_queued`).
    nmis: AtomicU32,
    /// Token of the timer arm that expired (0: none); see [`super::TimerCmd::Arm`].
    timer: AtomicU64,
}

impl Pir {
    /// An empty inbox.
    pub const fn new() -> Self {
        Pir {
            irr: [const { AtomicU64::new(0) }; 4],
            tmr: [const { AtomicU64::new(0) }; 4],
            events: AtomicU64::new(0),
            nmis: AtomicU32::new(0),
            timer: AtomicU64::new(0),
        }
    }

    /// Upstream `__apic_accept_irq` for a target whose current [`DestInfo`] is `target`.
    /// Returns whether the request was accepted (the sender counts it and kicks the target):
    /// fixed/lowest-priority need a hardware- and software-enabled APIC and are dropped if
    /// level-triggered with the level de-asserted; NMI, SMI and SIPI are always accepted;
    /// INIT unless it is a level de-assert; remote read (the PV-unhalt kick) always, setting
    /// [`Self::pv_unhalted`]; ExtINT is never accepted here (the PIC's
    /// output reaches the vCPU through [`super::Lapic::accept_pic_intr`]).
    pub fn post(&self, target: DestInfo, irq: &LapicIrq) -> bool {
        match irq.delivery_mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if irq.level_triggered && !irq.level {
                    return false;
                }
                if !target.enabled() {
                    return false;
                }
                self.post_vector(irq.vector, irq.level_triggered);
                true
            }
            DeliveryMode::Smi => {
                self.events.fetch_or(EV_SMI, Ordering::AcqRel);
                true
            }
            DeliveryMode::RemoteRead => {
                self.events.fetch_or(EV_UNHALT, Ordering::AcqRel);
                true
            }
            DeliveryMode::Nmi => {
                self.post_nmi();
                true
            }
            DeliveryMode::Init => {
                if irq.level_triggered && !irq.level {
                    return false;
                }
                self.post_init();
                true
            }
            DeliveryMode::StartUp => {
                self.post_sipi(irq.vector);
                true
            }
            DeliveryMode::ExtInt => false,
        }
    }

    /// Posts a vector with its trigger mode, no checks (the caller did them).
    pub fn post_vector(&self, vector: u8, level_triggered: bool) {
        let word = (vector >> 6) as usize;
        let bit = 1u64 << (vector & 63);
        if let (Some(irr), Some(tmr)) = (self.irr.get(word), self.tmr.get(word)) {
            if level_triggered {
                tmr.fetch_or(bit, Ordering::Relaxed);
            } else {
                tmr.fetch_and(!bit, Ordering::Relaxed);
            }
            // Release: the owner that sees the IRR bit sees the TMR bit written before.
            irr.fetch_or(bit, Ordering::Release);
        }
    }

    /// Whether `vector` is posted and not yet merged (for the owner's IRR as upstream sees
    /// it, which sets IRR at delivery).
    pub fn posted(&self, vector: u8) -> bool {
        self.irr
            .get(usize::from(vector >> 6))
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (vector & 63)) != 0)
    }

    /// Posts an NMI (`kvm_inject_nmi`: counted).
    pub fn post_nmi(&self) {
        self.nmis.fetch_add(1, Ordering::AcqRel);
    }

    /// Posts INIT; a pending SIPI is dropped (upstream overwrites `pending_events`; the
    /// last SIPI vector is kept, as upstream's `sipi_vector`).
    pub fn post_init(&self) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some((e & !EV_SIPI) | EV_INIT)
            });
    }

    /// Sets or clears a latched INIT without a sender (`KVM_SET_VCPU_EVENTS`'
    /// `smi.latched_init`).
    pub fn set_init_latched(&self, latched: bool) {
        if latched {
            self.events.fetch_or(EV_INIT, Ordering::AcqRel);
        } else {
            self.events.fetch_and(!EV_INIT, Ordering::AcqRel);
        }
    }

    /// Marks a SIPI pending with the last SIPI vector (`KVM_SET_MP_STATE` with
    /// `KVM_MP_STATE_SIPI_RECEIVED`).
    pub fn set_sipi_pending(&self) {
        self.events.fetch_or(EV_SIPI, Ordering::AcqRel);
    }

    /// The last SIPI vector posted (upstream `apic->sipi_vector`).
    pub fn sipi_vector(&self) -> u8 {
        (self.events.load(Ordering::Acquire) >> EV_SIPI_VECTOR_SHIFT) as u8
    }

    /// Posts a start-up IPI with its vector (the latest SIPI's vector wins).
    pub fn post_sipi(&self, vector: u8) {
        let _ = self
            .events
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(
                    (e & !(0xff << EV_SIPI_VECTOR_SHIFT))
                        | EV_SIPI
                        | (vector as u64) << EV_SIPI_VECTOR_SHIFT,
                )
            });
    }

    /// Posts an SMI.
    pub fn post_smi(&self) {
        self.events.fetch_or(EV_SMI, Ordering::AcqRel);
    }

    /// Called by the timer's expiry callback (hrtimer, no vCPU lock) with the token of the
    /// arm that expired; then kick the vCPU.
    pub fn timer_expired(&self, token: u64) {
        self.timer.store(token, Ordering::Release);
    }

    /// Whether anything is waiting (a cheap check, e.g. for a halted vCPU's wake-up
    /// condition before it takes its lock).
    pub fn has_pending(&self) -> bool {
        self.irr.iter().any(|w| w.load(Ordering::Acquire) != 0)
            || self.events.load(Ordering::Acquire)
                & (EV_INIT | EV_SIPI | EV_SMI | EV_UNHALT | EV_LVT0)
                != 0
            || self.nmis.load(Ordering::Acquire) != 0
            || self.timer.load(Ordering::Acquire) != 0
    }

    /// Whether a PV-unhalt kick is pending (upstream `pv_unhalted`: the vCPU has events and
    /// `KVM_GET_MP_STATE` reports a halted vCPU as runnable).
    pub fn pv_unhalted(&self) -> bool {
        self.events.load(Ordering::Acquire) & EV_UNHALT != 0
    }

    /// Clears `pv_unhalted` (a halted vCPU became runnable, or HLT found events pending).
    pub fn clear_pv_unhalted(&self) {
        self.events.fetch_and(!EV_UNHALT, Ordering::AcqRel);
    }

    /// Asks the owner to deliver its LVT0 entry (upstream `kvm_apic_nmi_wd_deliver` from the
    /// PIT's work: the owner runs [`super::Lapic::local_deliver`] for LINT0 when it merges).
    pub fn post_lvt0(&self) {
        self.events.fetch_or(EV_LVT0, Ordering::AcqRel);
    }

    /// Takes a pending LVT0 delivery request.
    pub fn take_lvt0(&self) -> bool {
        self.events.fetch_and(!EV_LVT0, Ordering::AcqRel) & EV_LVT0 != 0
    }

    /// Takes the posted NMIs (the owner adds them to its NMI queue).
    pub fn take_nmis(&self) -> u32 {
        self.nmis.swap(0, Ordering::AcqRel)
    }

    /// Takes a posted SMI.
    pub fn take_smi(&self) -> bool {
        self.events.fetch_and(!EV_SMI, Ordering::AcqRel) & EV_SMI != 0
    }

    /// Whether INIT or SIPI is pending (`kvm_apic_has_pending_init_or_sipi`).
    pub fn init_or_sipi_pending(&self) -> bool {
        self.events.load(Ordering::Acquire) & (EV_INIT | EV_SIPI) != 0
    }

    /// Whether INIT is pending (without taking it).
    pub fn init_pending(&self) -> bool {
        self.events.load(Ordering::Acquire) & EV_INIT != 0
    }

    /// Takes a pending INIT.
    pub fn take_init(&self) -> bool {
        self.events.fetch_and(!EV_INIT, Ordering::AcqRel) & EV_INIT != 0
    }

    /// Takes a pending SIPI and its vector (the vector stays as the last one).
    pub fn take_sipi(&self) -> Option<u8> {
        let old = self.events.fetch_and(!EV_SIPI, Ordering::AcqRel);
        (old & EV_SIPI != 0).then_some((old >> EV_SIPI_VECTOR_SHIFT) as u8)
    }

    /// Takes the expired timer token (0: none).
    pub(super) fn take_timer(&self) -> u64 {
        self.timer.swap(0, Ordering::AcqRel)
    }

    /// Takes the posted vectors of word `i` (0..4) and their trigger modes.
    pub(super) fn take_word(&self, i: usize) -> Option<(u64, u64)> {
        let irr = self.irr.get(i)?.swap(0, Ordering::Acquire);
        if irr == 0 {
            return Some((0, 0));
        }
        let tmr = self.tmr.get(i)?.load(Ordering::Relaxed);
        Some((irr, tmr))
    }

    /// Empties the inbox (vCPU reset paths that drop everything pending; the last SIPI
    /// vector is kept).
    pub fn clear(&self) {
        for w in self.irr.iter() {
            w.store(0, Ordering::Release);
        }
        self.events
            .fetch_and(0xff << EV_SIPI_VECTOR_SHIFT, Ordering::AcqRel);
        self.nmis.store(0, Ordering::Release);
        self.timer.store(0, Ordering::Release);
    }
}

/// What [`accept_events`] tells the module to do (upstream `kvm_apic_accept_events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InitSipi {
    /// An INIT was taken: do `kvm_vcpu_reset(vcpu, init_event = true)` (which calls
    /// [`super::Lapic::reset`] with `init_event`), then set `mp_state`.
    pub init: bool,
    /// A SIPI was taken in INIT_RECEIVED: deliver this vector (CS = vector << 8, IP = 0 as
    /// the backend's `vcpu_deliver_sipi_vector`), then set `mp_state`.
    pub sipi_vector: Option<u8>,
    /// The new MP state, if it changes.
    pub mp_state: Option<u32>,
}

/// Upstream `kvm_apic_accept_events` over the inbox: `mp_state` is the vCPU's current MP
/// state, `is_bsp` its IA32_APIC_BASE.BSP, `allowed` upstream `kvm_apic_init_sipi_allowed`
/// (not in SMM, INIT not blocked by the backend: GIF=0 on SVM). When INIT/SIPI is not
/// allowed a pending SIPI is dropped and INIT stays pending.
pub fn accept_events(pir: &Pir, mp_state: u32, is_bsp: bool, allowed: bool) -> InitSipi {
    use super::regs::{KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE};
    let mut out = InitSipi::default();
    if !pir.init_or_sipi_pending() {
        return out;
    }
    if !allowed {
        let _ = pir.take_sipi();
        return out;
    }
    let mut mp = mp_state;
    if pir.take_init() {
        out.init = true;
        mp = if is_bsp {
            KVM_MP_STATE_RUNNABLE
        } else {
            KVM_MP_STATE_INIT_RECEIVED
        };
        out.mp_state = Some(mp);
    }
    if let Some(v) = pir.take_sipi() {
        if mp == KVM_MP_STATE_INIT_RECEIVED {
            out.sipi_vector = Some(v);
            out.mp_state = Some(KVM_MP_STATE_RUNNABLE);
        }
    }
    out
}
