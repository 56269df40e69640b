// SPDX-License-Identifier: GPL-2.0-only
//! The LAPIC timer's hrtimer (upstream `apic_timer_fn`, `HRTIMER_MODE_ABS_HARD`): the model
//! (`irqchip::lapic`) computes when it expires and with which token; the callback posts the
//! token into the vCPU's inbox and kicks it, and the vCPU thread delivers the interrupt
//! (and re-arms a periodic timer) when it merges the inbox. The callback touches only the
//! vCPU's atomics; the timer is cancelled, waiting for a running callback, before the vCPU
//! is freed.

use crate::vcpu::Vcpu;
use core::ffi::c_void;
use core::ptr::NonNull;

extern "C" {
    fn tdxkvm_lapic_timer_new(vcpu: *const c_void) -> *mut c_void;
    fn tdxkvm_lapic_timer_arm(p: *mut c_void, at_ns: u64, token: u64);
    fn tdxkvm_lapic_timer_try_cancel(p: *mut c_void);
    fn tdxkvm_lapic_timer_free(p: *mut c_void);
    fn tdxkvm_ktime_get_ns() -> u64;
}

/// `ktime_get_ns()`: the hrtimer's clock.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { tdxkvm_ktime_get_ns() }
}

/// A vCPU's LAPIC hrtimer.
///
/// # Invariants
///
/// `0` is the glue's timer, owned by this value; its callback's vCPU outlives it (the timer
/// lives in the vCPU's LAPIC, which the vCPU owns, and is cancelled in `drop`).
pub(crate) struct LapicTimer(NonNull<c_void>);

// SAFETY: the hrtimer API may be used from any thread; the callback synchronises through the
// vCPU's atomics only.
unsafe impl Send for LapicTimer {}
// SAFETY: as above (all methods take `&mut self` or only call thread-safe hrtimer functions).
unsafe impl Sync for LapicTimer {}

impl LapicTimer {
    /// A stopped timer whose callback posts to `vcpu`.
    pub(crate) fn new(vcpu: &Vcpu) -> Option<Self> {
        let p: *const Vcpu = vcpu;
        // SAFETY: allocates and initialises an hrtimer; `vcpu` is pinned and outlives the timer
        // (type invariant).
        NonNull::new(unsafe { tdxkvm_lapic_timer_new(p.cast()) }).map(LapicTimer)
    }

    /// (Re)arms the timer to expire at `at_ns` (monotonic) and post `token`.
    pub(crate) fn arm(&mut self, at_ns: u64, token: u64) {
        // SAFETY: our timer (type invariant).
        unsafe { tdxkvm_lapic_timer_arm(self.0.as_ptr(), at_ns, token) }
    }

    /// Stops the timer; a callback already running posts a token the model ignores.
    pub(crate) fn cancel(&mut self) {
        // SAFETY: our timer (type invariant).
        unsafe { tdxkvm_lapic_timer_try_cancel(self.0.as_ptr()) }
    }
}

impl Drop for LapicTimer {
    fn drop(&mut self) {
        // SAFETY: our timer; after this no callback runs or will run (hrtimer_cancel waits).
        unsafe { tdxkvm_lapic_timer_free(self.0.as_ptr()) }
    }
}

/// The hrtimer callback (hard-IRQ context): posts the token and kicks the vCPU.
///
/// # Safety
///
/// `vcpu` is the vCPU the timer was created for, alive (the timer is cancelled before the vCPU
/// is freed).
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_lapic_timer_fire(vcpu: *const c_void, token: u64) {
    // SAFETY: the caller's contract.
    let vcpu = unsafe { &*vcpu.cast::<Vcpu>() };
    vcpu.irq.pir.timer_expired(token);
    crate::irq::kick::request_event(vcpu);
}
