// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU and the host scheduler (upstream `vcpu_load`/`vcpu_put` with the preempt
//! notifier's `kvm_sched_in`/`kvm_sched_out`, `kvm_vcpu_yield_to`, `kvm_sched_yield`,
//! `kvm_steal_time_set_preempted`).
//!
//! - While `KVM_RUN` runs ([`load`] .. the guard's drop), a preempt notifier (C glue,
//!   src/irq/sched_glue.c) reports this thread's context switches. Upstream registers it for
//!   every vCPU ioctl; here only `KVM_RUN`, the one where the vCPU can be preempted at an
//!   instruction boundary (the flag is reset when `KVM_RUN` starts, where upstream keeps a
//!   stale one until the next run loop iteration).
//! - Switched out while runnable (`current->on_rq`: preempted, not sleeping), the vCPU is
//!   `preempted` and `ready` (a directed-yield target), and, if its last exit was a host
//!   interrupt (`at_instruction_boundary`, set by SVM only for `SVM_EXIT_INTR`) and steal time
//!   is on, the steal-time record's `preempted` byte becomes `KVM_VCPU_PREEMPTED` through a
//!   non-faulting user write at the address cached when the record was last written (upstream's
//!   gfn-to-hva cache). A memslot delete/move drops every cache and waits for a grace period
//!   ([`memslots_changed`]), as upstream's cache generation check under SRCU.
//! - Switched in: not preempted or ready any more, and a steal-time update is due (upstream
//!   `kvm_arch_vcpu_load`'s `KVM_REQ_STEAL_UPDATE`), which clears the byte again.
//! - The page the byte is in is marked dirty from process context (the notifier runs under
//!   the runqueue lock): before the next entry or when `KVM_RUN` returns, where upstream marks
//!   it at once.
//!
//! Not kept: the `preemption_reported`/`preemption_other` and `directed_yield_*` statistics
//! (this module's stats do not have them).

use crate::vcpu::Vcpu;
use crate::vm::Vm;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use kernel::prelude::*;

extern "C" {
    fn tdxkvm_sched_new(vcpu: *const c_void) -> *mut c_void;
    fn tdxkvm_sched_free(p: *mut c_void);
    fn tdxkvm_sched_register(p: *mut c_void);
    fn tdxkvm_sched_unregister(p: *mut c_void);
    fn tdxkvm_put_user_u8_nofault(hva: u64, v: u8) -> bool;
    fn tdxkvm_vcpu_pid_update(slot: *mut *mut c_void);
    fn tdxkvm_vcpu_pid_put(pid: *mut c_void);
    fn tdxkvm_vcpu_yield_to(slot: *mut *mut c_void) -> c_int;
    fn tdxkvm_single_task_running() -> bool;
    fn tdxkvm_synchronize_rcu();
}

/// `KVM_VCPU_PREEMPTED`.
const KVM_VCPU_PREEMPTED: u8 = 1;
/// `SVM_EXIT_INTR`.
const SVM_EXIT_INTR: u64 = 0x60;

/// A vCPU's scheduler state (a field of [`crate::irq::kick::VcpuIrq`]); every field is read
/// by the notifier, which runs on the vCPU thread while it holds the vCPU mutex, or by other
/// vCPUs' threads, so all are atomics.
pub(crate) struct VcpuSched {
    /// The C notifier (`struct tdxkvm_sched`), made at the first `KVM_RUN`.
    notifier: AtomicPtr<c_void>,
    /// `vcpu->pid` (an RCU-protected `struct pid *`).
    pid: AtomicPtr<c_void>,
    /// `vcpu->preempted`.
    preempted: AtomicBool,
    /// `vcpu->ready`: preempted, or just woken; a directed-yield target.
    ready: AtomicBool,
    /// `vcpu->arch.at_instruction_boundary`.
    boundary: AtomicBool,
    /// The user address of the steal-time record's `preempted` byte (0: steal time off or
    /// no valid cache).
    st_hva: AtomicU64,
    /// `vcpu->arch.st.preempted`: the byte holds `KVM_VCPU_PREEMPTED`.
    st_preempted: AtomicBool,
    /// GFN + 1 of the record's page (0: none).
    st_gfn: AtomicU64,
    /// The notifier wrote the byte: its page is to be marked dirty from process context.
    st_dirty: AtomicBool,
    /// `KVM_REQ_STEAL_UPDATE` from the sched-in hook.
    steal_request: AtomicBool,
}

impl VcpuSched {
    /// Nothing registered, nothing cached.
    pub(crate) const fn new() -> Self {
        VcpuSched {
            notifier: AtomicPtr::new(core::ptr::null_mut()),
            pid: AtomicPtr::new(core::ptr::null_mut()),
            preempted: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            boundary: AtomicBool::new(false),
            st_hva: AtomicU64::new(0),
            st_preempted: AtomicBool::new(false),
            st_gfn: AtomicU64::new(0),
            st_dirty: AtomicBool::new(false),
            steal_request: AtomicBool::new(false),
        }
    }

    /// The slot the C glue reads and writes as `struct pid __rcu *`.
    fn pid_slot(&self) -> *mut *mut c_void {
        self.pid.as_ptr()
    }

    /// Upstream `kvm_vcpu_wake_up`'s `WRITE_ONCE(vcpu->ready, true)` after a wake-up.
    pub(crate) fn woken(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl Drop for VcpuSched {
    fn drop(&mut self) {
        let n = *self.notifier.get_mut();
        if !n.is_null() {
            // SAFETY: from `tdxkvm_sched_new`, unregistered when `KVM_RUN` ended, freed once.
            unsafe { tdxkvm_sched_free(n) };
        }
        let p = *self.pid.get_mut();
        if !p.is_null() {
            // SAFETY: the reference `tdxkvm_vcpu_pid_update` took; nobody reads the slot any
            // more (the vCPU is going, no other vCPU looks it up).
            unsafe { tdxkvm_vcpu_pid_put(p) };
        }
    }
}

/// The notifier's view of the vCPU.
///
/// # Safety
///
/// `vcpu` is the `Vcpu` the notifier was made for; it is registered only while that vCPU's
/// `KVM_RUN` runs, so the vCPU is alive.
unsafe fn sched_of<'a>(vcpu: *const c_void) -> &'a VcpuSched {
    // SAFETY: the caller's contract.
    unsafe { &(*vcpu.cast::<Vcpu>()).irq.sched }
}

/// Upstream `kvm_sched_in` (+ `kvm_arch_vcpu_load`'s `KVM_REQ_STEAL_UPDATE`). Runs with
/// preemption off.
///
/// # Safety
///
/// As [`sched_of`].
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_sched_in(vcpu: *const c_void) {
    // SAFETY: the caller's contract.
    let s = unsafe { sched_of(vcpu) };
    s.preempted.store(false, Ordering::Release);
    s.ready.store(false, Ordering::Release);
    s.steal_request.store(true, Ordering::Release);
}

/// Upstream `kvm_sched_out` + `kvm_arch_vcpu_put`'s `kvm_steal_time_set_preempted`. Runs
/// with the runqueue lock held and IRQs off: atomics and a non-faulting user write only.
///
/// # Safety
///
/// As [`sched_of`].
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_sched_out(
    vcpu: *const c_void,
    on_rq: bool,
    same_mm: bool,
) {
    // SAFETY: the caller's contract.
    let s = unsafe { sched_of(vcpu) };
    if !on_rq {
        return;
    }
    s.preempted.store(true, Ordering::Release);
    s.ready.store(true, Ordering::Release);
    // kvm_steal_time_set_preempted.
    if !s.boundary.load(Ordering::Acquire) || s.st_preempted.load(Ordering::Acquire) || !same_mm {
        return;
    }
    // The cache is only cleared under RCU (memslots_changed waits for this non-preemptible
    // section), so a non-zero address is still the record's.
    let hva = s.st_hva.load(Ordering::Acquire);
    if hva == 0 {
        return;
    }
    // SAFETY: a user address of this thread's mm (same_mm); the write cannot fault.
    if unsafe { tdxkvm_put_user_u8_nofault(hva, KVM_VCPU_PREEMPTED) } {
        s.st_preempted.store(true, Ordering::Release);
        s.st_dirty.store(true, Ordering::Release);
    }
}

/// The notifier registration of one `KVM_RUN` (upstream `vcpu_load` .. `vcpu_put`).
pub(crate) struct Loaded<'a> {
    vcpu: &'a Vcpu,
    notifier: *mut c_void,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        // SAFETY: registered by `load` on this thread, unregistered once.
        unsafe { tdxkvm_sched_unregister(self.notifier) };
        flush_dirty(self.vcpu);
    }
}

/// Start of `KVM_RUN` (upstream `kvm_vcpu_ioctl`'s pid update and `vcpu_load`): records this
/// thread as the vCPU's, registers the notifier (made at the first run).
pub(crate) fn load(vcpu: &Vcpu) -> Result<Loaded<'_>> {
    let s = &vcpu.irq.sched;
    let mut n = s.notifier.load(Ordering::Acquire);
    if n.is_null() {
        let vp: *const Vcpu = vcpu;
        // SAFETY: the notifier keeps `vp`; the vCPU frees it (Drop) and registers it only
        // while `KVM_RUN` runs.
        n = unsafe { tdxkvm_sched_new(vp.cast()) };
        if n.is_null() {
            return Err(ENOMEM);
        }
        // Only the vCPU mutex holder gets here.
        s.notifier.store(n, Ordering::Release);
    }
    // SAFETY: the slot holds null or a pid reference this glue took.
    unsafe { tdxkvm_vcpu_pid_update(s.pid_slot()) };
    s.boundary.store(false, Ordering::Release);
    // SAFETY: `n` is this vCPU's notifier, not registered (the previous run's guard
    // unregistered it; one KVM_RUN at a time under the vCPU mutex).
    unsafe { tdxkvm_sched_register(n) };
    Ok(Loaded { vcpu, notifier: n })
}

/// The run loop's top (upstream `vcpu_run`: `at_instruction_boundary = false`).
pub(crate) fn loop_top(vcpu: &Vcpu) {
    vcpu.irq.sched.boundary.store(false, Ordering::Release);
}

/// After an exit (upstream `svm_handle_exit_irqoff`): a host interrupt leaves the vCPU at an
/// instruction boundary, where it may be reported preempted.
pub(crate) fn after_exit(vcpu: &Vcpu, svm_exit_code: u64) {
    if svm_exit_code == SVM_EXIT_INTR {
        vcpu.irq.sched.boundary.store(true, Ordering::Release);
    }
}

/// A steal-time update is due since the vCPU was switched in (consumed).
pub(crate) fn take_steal_request(vcpu: &Vcpu) -> bool {
    vcpu.irq.sched.steal_request.swap(false, Ordering::AcqRel)
}

/// `record_steal_time` wrote `preempted = 0` into the record in page `gfn` (upstream:
/// `vcpu->arch.st.preempted = 0`); `hva` is the byte's user address the notifier may write
/// (`None`: no cache, the byte is not written while preempted).
pub(crate) fn steal_recorded(vcpu: &Vcpu, gfn: u64, hva: Option<u64>) {
    let s = &vcpu.irq.sched;
    s.st_gfn.store(gfn.wrapping_add(1), Ordering::Release);
    s.st_hva.store(hva.unwrap_or(0), Ordering::Release);
    s.st_preempted.store(false, Ordering::Release);
}

/// Steal time is off (or its record could not be written): nothing for the notifier.
pub(crate) fn steal_off(vcpu: &Vcpu) {
    vcpu.irq.sched.st_hva.store(0, Ordering::Release);
}

/// Marks the page of a `preempted` byte the notifier wrote dirty (process context: before
/// an entry, and when `KVM_RUN` returns).
pub(crate) fn flush_dirty(vcpu: &Vcpu) {
    let s = &vcpu.irq.sched;
    if s.st_dirty.swap(false, Ordering::AcqRel) {
        let g = s.st_gfn.load(Ordering::Acquire);
        if g != 0 {
            crate::dirty::mark_page_dirty(vcpu.vm(), mmu::Gfn::new(g - 1));
        }
    }
}

/// A memslot was deleted or moved (upstream: the memslot generation changed, and SRCU
/// readers of the old one finish before the update returns): every vCPU's cached address is
/// dropped, then a grace period passes, after which no notifier uses an old address.
pub(crate) fn memslots_changed(vm: &Vm) {
    let mut any = false;
    crate::irq::lapic::for_each_vcpu(vm, |v| {
        any |= v.irq.sched.st_hva.swap(0, Ordering::AcqRel) != 0;
    });
    if any {
        // SAFETY: process context (the memslot ioctl), may sleep.
        unsafe { tdxkvm_synchronize_rcu() };
    }
}

/// Upstream `kvm_sched_yield(vcpu, dest_id)` (`KVM_HC_SCHED_YIELD`, and after
/// `KVM_HC_KICK_CPU`'s kick): unless this CPU runs nothing else, yield to the vCPU whose
/// physical APIC ID is `dest_id` if it is ready (preempted, or just woken by the kick) and is
/// not this one. A true directed yield (`yield_to` on the target's thread).
pub(crate) fn sched_yield(vcpu: &Vcpu, dest_id: u64) {
    // SAFETY: no preconditions.
    if unsafe { tdxkvm_single_task_running() } {
        return;
    }
    let Ok(dest) = u32::try_from(dest_id) else {
        return;
    };
    let Some(target) = crate::irq::lapic::phys_map_vcpu(vcpu.vm(), dest) else {
        return;
    };
    if !target.irq.sched.ready.load(Ordering::Acquire) {
        return;
    }
    if core::ptr::eq(target, vcpu) {
        return;
    }
    // SAFETY: the target's pid slot (null or a reference its KVM_RUN took), read under RCU.
    let _ = unsafe { tdxkvm_vcpu_yield_to(target.irq.sched.pid_slot()) };
}
