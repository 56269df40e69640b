// SPDX-License-Identifier: GPL-2.0-only
//! Kicking a vCPU and the in-kernel halt wait (upstream `kvm_vcpu_kick`, `vcpu->mode`,
//! `kvm_vcpu_block` on `vcpu->wait`).
//!
//! Whoever posts something to a vCPU from another context (an IPI from another vCPU thread, the
//! LAPIC timer's hrtimer callback, an irqfd, an IOAPIC line) writes it into atomics first (the
//! LAPIC's inbox, `irqchip::lapic::Pir`), then calls [`request_event`]: the
//! vCPU thread re-evaluates its events before its next entry. [`kick`] wakes the vCPU if it
//! sleeps in the halt wait and, if it runs in guest mode on another CPU, sends that CPU a
//! reschedule IPI so it exits (any interrupt makes an SVM guest exit).
//!
//! The mode protocol is upstream's: the vCPU thread sets `IN_GUEST_MODE` with IRQs off before
//! its last check for requests ([`exit_request`]), a kicker moves it to `EXITING_GUEST_MODE`
//! and only then IPIs, so either the entry is cancelled or the IPI arrives after it.
//! The halt wait is an rcuwait (a task pointer): waking it is allowed in any context,
//! hrtimer callbacks included, and takes no lock.

use crate::vcpu::Vcpu;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_uint, c_void};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

extern "C" {
    fn tdxkvm_vcpu_block(w: *mut c_void, wake: *const AtomicU32) -> c_int;
    fn tdxkvm_vcpu_wake(w: *mut c_void) -> bool;
    fn tdxkvm_kick_cpu(cpu: c_uint);
}

const OUTSIDE_GUEST_MODE: u8 = 0;
const IN_GUEST_MODE: u8 = 1;
const EXITING_GUEST_MODE: u8 = 2;

/// The cross-thread part of a vCPU's interrupt state (a field of [`Vcpu`], which is pinned:
/// the rcuwait's address never changes while the vCPU exists).
pub(crate) struct VcpuIrq {
    /// `vcpu->mode`.
    mode: AtomicU8,
    /// The CPU of the current (or last) entry.
    cpu: AtomicU32,
    /// `KVM_REQ_EVENT`: something was posted since the vCPU thread last looked.
    req_event: AtomicBool,
    /// A kick since the vCPU thread armed its wait; consumed by the wait.
    wake: AtomicU32,
    /// `struct rcuwait` (one task pointer, NULL when nobody waits).
    wait: UnsafeCell<*mut c_void>,
    /// The LAPIC's inbox: vectors, NMIs, INIT/SIPI and timer expiries other contexts post.
    pub(crate) pir: crate::irq::lapic::Pir,
    /// The LAPIC's published destination state (`irqchip::lapic::DestInfo` bits; 0: no
    /// LAPIC), which senders match against without the vCPU mutex.
    pub(crate) dest: AtomicU64,
    /// The LAPIC takes PIC interrupts (LVT0 ExtINT or hardware-disabled), published for the
    /// PIC's wake-up.
    pub(crate) accept_pic: AtomicBool,
    /// The LAPIC's IRR | ISR (bit v of word v / 64), published after every LAPIC operation
    /// for the IOAPIC's RTC tracker rebuild after `KVM_SET_IRQCHIP`, which runs under the
    /// chip lock and cannot take vCPU mutexes (upstream reads the registers unlocked).
    pub(crate) eoi_pending: [AtomicU64; 4],
    /// The vCPU and the host scheduler (preempt notifier, pid, directed yield).
    pub(crate) sched: crate::irq::sched::VcpuSched,
}

// SAFETY: every field is an atomic except the rcuwait, which only the C rcuwait functions touch
// (they synchronise through RCU and atomics).
unsafe impl Sync for VcpuIrq {}
// SAFETY: as above.
unsafe impl Send for VcpuIrq {}

impl VcpuIrq {
    /// A vCPU outside guest mode with nothing posted.
    pub(crate) fn new() -> Self {
        VcpuIrq {
            mode: AtomicU8::new(OUTSIDE_GUEST_MODE),
            cpu: AtomicU32::new(u32::MAX),
            req_event: AtomicBool::new(false),
            wake: AtomicU32::new(0),
            wait: UnsafeCell::new(core::ptr::null_mut()),
            pir: crate::irq::lapic::Pir::new(),
            dest: AtomicU64::new(0),
            accept_pic: AtomicBool::new(false),
            eoi_pending: [const { AtomicU64::new(0) }; 4],
            sched: crate::irq::sched::VcpuSched::new(),
        }
    }

    /// Consumes the event request (vCPU thread, before deciding what to inject).
    pub(crate) fn take_event_request(&self) -> bool {
        self.req_event.swap(false, Ordering::SeqCst)
    }

    /// Whether an event request is pending (no consumption).
    pub(crate) fn event_requested(&self) -> bool {
        self.req_event.load(Ordering::SeqCst)
    }

    fn wait_ptr(&self) -> *mut c_void {
        self.wait.get().cast()
    }
}

/// Asks the vCPU to re-evaluate its events and kicks it (upstream
/// `kvm_make_request(KVM_REQ_EVENT)` + `kvm_vcpu_kick`). Any context, no lock taken.
pub(crate) fn request_event(vcpu: &Vcpu) {
    vcpu.irq.req_event.store(true, Ordering::SeqCst);
    kick(vcpu);
}

/// Wakes the vCPU from the halt wait, or makes it leave guest mode (upstream
/// `kvm_vcpu_kick`). Any context, no lock taken.
pub(crate) fn kick(vcpu: &Vcpu) {
    let irq = &vcpu.irq;
    irq.wake.store(1, Ordering::SeqCst);
    // SAFETY: the vCPU's rcuwait, alive as long as the vCPU (pinned).
    if unsafe { tdxkvm_vcpu_wake(irq.wait_ptr()) } {
        // Upstream kvm_vcpu_wake_up: a woken vCPU is a directed-yield target.
        irq.sched.woken();
        crate::run::event_stats::halt_wakeup(vcpu); // HOOK(cr8): upstream kvm_vcpu_wake_up
        return;
    }
    if irq
        .mode
        .compare_exchange(
            IN_GUEST_MODE,
            EXITING_GUEST_MODE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok()
    {
        // SAFETY: sends a reschedule IPI to an online CPU other than this one (checked in C).
        unsafe { tdxkvm_kick_cpu(irq.cpu.load(Ordering::SeqCst)) };
    }
}

/// The vCPU thread enters guest mode on `cpu` (IRQs off): `smp_store_mb(vcpu->mode,
/// IN_GUEST_MODE)`; the caller then checks [`exit_request`].
pub(crate) fn enter_guest_mode(vcpu: &Vcpu, cpu: u32) {
    vcpu.irq.cpu.store(cpu, Ordering::Relaxed);
    vcpu.irq.mode.store(IN_GUEST_MODE, Ordering::SeqCst);
}

/// Upstream `kvm_vcpu_exit_request` (the request half): a kick or an event request came after
/// the events were evaluated, so the entry is cancelled and they are evaluated again.
pub(crate) fn exit_request(vcpu: &Vcpu) -> bool {
    vcpu.irq.mode.load(Ordering::SeqCst) == EXITING_GUEST_MODE || vcpu.irq.event_requested()
}

/// The vCPU thread left guest mode (IRQs still off).
pub(crate) fn exit_guest_mode(vcpu: &Vcpu) {
    vcpu.irq.mode.store(OUTSIDE_GUEST_MODE, Ordering::SeqCst);
}

/// Arms the halt wait: kicks from now on end the next [`block`]. Call it before checking the
/// wake-up conditions, so that nothing posted after the check is lost.
pub(crate) fn arm(vcpu: &Vcpu) {
    vcpu.irq.wake.store(0, Ordering::SeqCst);
}

/// Sleeps until a kick after [`arm`] or a signal (`Err(())`): upstream `kvm_vcpu_block`.
/// Process context; the vCPU mutex may be held (upstream holds it too).
pub(crate) fn block(vcpu: &Vcpu) -> Result<(), ()> {
    // SAFETY: the vCPU's rcuwait and wake flag, alive as long as the vCPU; only the vCPU thread
    // (which holds the vCPU mutex) waits on it.
    let r = unsafe { tdxkvm_vcpu_block(vcpu.irq.wait_ptr(), &vcpu.irq.wake) };
    if r == 0 {
        Ok(())
    } else {
        Err(())
    }
}
