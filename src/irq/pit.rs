// SPDX-License-Identifier: GPL-2.0-only
//! The in-kernel 8254 PIT (upstream arch/x86/kvm/i8254.c): `KVM_CREATE_PIT2` (and the legacy
//! `KVM_CREATE_PIT`), `KVM_GET/SET_PIT2`, `KVM_GET/SET_PIT`, `KVM_REINJECT_CONTROL`, ports
//! 0x40-0x43 (and 0x61 with `KVM_PIT_SPEAKER_DUMMY`) served in the kernel, and channel 0 on an
//! hrtimer whose work item pulses IRQ0 through `kvm_set_irq` with the PIT's source id.
//!
//! Locking: the model sits behind an IRQ-safe spinlock that lives in the C timer object (the
//! hrtimer callback counts expiries under it). `io` (a mutex) serialises each model operation
//! with the timer command it produced, as upstream's `pit_state.lock` does, so timers are
//! armed in the order the guest programmed them; starting a timer cancels the old one and
//! flushes the work, which never takes `io`.

use super::route::{self, KVM_PIT_IRQ_SOURCE_ID};
use crate::vcpu_state::{read_pod, write_pod};
use crate::vm::Vm;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};
use irqchip::pit::uapi::{
    KvmPitChannelState, KvmPitConfig, KvmPitState2, KvmReinjectControl, KVM_PIT_SPEAKER_DUMMY,
};
use irqchip::pit::{Pit, TimerCmd, DEFAULT_MIN_PERIOD_NS, SPEAKER_PORT};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

extern "C" {
    fn tdxkvm_pit_timer_new(pit: *const c_void) -> *mut c_void;
    fn tdxkvm_pit_timer_start(t: *mut c_void, expires: i64, generation: u64);
    fn tdxkvm_pit_timer_cancel(t: *mut c_void);
    fn tdxkvm_pit_timer_free(t: *mut c_void);
    fn tdxkvm_pit_queue_work(t: *mut c_void);
    fn tdxkvm_pit_lock(t: *mut c_void) -> usize;
    fn tdxkvm_pit_unlock(t: *mut c_void, flags: usize);
    fn tdxkvm_pit_now() -> i64;
}

fn now() -> i64 {
    // SAFETY: reads the monotonic clock; no preconditions.
    unsafe { tdxkvm_pit_now() }
}

/// The VM's PIT.
#[pin_data(PinnedDrop)]
pub(crate) struct VmPit {
    /// Serialises a model operation with the timer command it produced.
    #[pin]
    io: Mutex<()>,
    /// The model, guarded by the C timer object's spinlock ([`VmPit::with`]).
    model: UnsafeCell<Pit>,
    /// Port 0x61 is the PIT's (`KVM_PIT_SPEAKER_DUMMY`).
    speaker: bool,
    /// The C `struct tdxkvm_pit_timer` (hrtimer, work, model lock).
    timer: AtomicPtr<c_void>,
    /// The VM (the PIT is freed at VM teardown, before the VM's memory goes).
    vm: *const Vm,
}

// SAFETY: `model` is only reached under the timer object's spinlock; `vm` is valid while the
// PIT exists (see the field); the rest is Sync.
unsafe impl Sync for VmPit {}
// SAFETY: as above.
unsafe impl Send for VmPit {}

impl VmPit {
    fn timer(&self) -> *mut c_void {
        self.timer.load(Ordering::Acquire)
    }

    /// Runs `f` on the model under its spinlock (IRQs off: the hrtimer callback takes it too).
    fn with<R>(&self, f: impl FnOnce(&mut Pit) -> R) -> R {
        let t = self.timer();
        // SAFETY: `t` is the live timer object (created before the PIT is published, freed in
        // drop); the lock is released below on every path.
        let flags = unsafe { tdxkvm_pit_lock(t) };
        // SAFETY: the lock gives exclusive access to the model.
        let r = f(unsafe { &mut *self.model.get() });
        // SAFETY: taken above with these flags.
        unsafe { tdxkvm_pit_unlock(t, flags) };
        r
    }

    /// Carries out a timer command (sleeps: cancels and flushes). Called with `io` held.
    fn apply(&self, cmd: Option<TimerCmd>) {
        let t = self.timer();
        match cmd {
            None => {}
            // SAFETY: the live timer object; the model lock is not held.
            Some(TimerCmd::Cancel) => unsafe { tdxkvm_pit_timer_cancel(t) },
            Some(TimerCmd::Start {
                expires,
                generation,
                ..
            }) => {
                // SAFETY: as above.
                unsafe { tdxkvm_pit_timer_start(t, expires, generation) }
            }
        }
    }

    fn vm(&self) -> &Vm {
        // SAFETY: the PIT lives inside the VM's lifetime (freed at VM teardown).
        unsafe { &*self.vm }
    }

    /// IRQ0 was acknowledged (GSI 0's ack notifier, upstream `kvm_pit_ack_irq`).
    pub(crate) fn on_ack(&self) {
        if self.with(|p| p.reinject_mut().on_ack()) {
            // SAFETY: the live timer object.
            unsafe { tdxkvm_pit_queue_work(self.timer()) };
        }
    }

    /// IRQ0's mask changed (upstream `pit_mask_notifer`).
    pub(crate) fn on_mask(&self, masked: bool) {
        self.with(|p| {
            if p.reinject().reinject() {
                p.reinject_mut().on_mask(masked)
            }
        });
    }
}

#[pinned_drop]
impl PinnedDrop for VmPit {
    fn drop(self: Pin<&mut Self>) {
        // Stop the hrtimer and wait for a running work item first, while the timer object is
        // still reachable: both take the model lock through `self.timer()`, so clearing the
        // pointer before they are stopped let a late work item lock a null timer (seen as a
        // KASAN null-ptr-deref in pit_work_fn at VM teardown). Nothing re-arms or re-queues
        // them afterwards: the vCPUs (IRQ0's EOIs) are gone and the work never starts the
        // timer.
        let t = self.timer();
        if !t.is_null() {
            // SAFETY: the live timer object; the model lock is not held.
            unsafe { tdxkvm_pit_timer_cancel(t) };
        }
        let t = self.timer.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !t.is_null() {
            // SAFETY: from `tdxkvm_pit_timer_new`, freed once; after this no callback runs.
            unsafe { tdxkvm_pit_timer_free(t) };
        }
    }
}

/// Where the VM keeps its PIT: null until `KVM_CREATE_PIT2`.
pub(crate) struct PitSlot(AtomicPtr<VmPit>);

impl PitSlot {
    /// Empty.
    pub(crate) fn new() -> Self {
        PitSlot(AtomicPtr::new(core::ptr::null_mut()))
    }

    /// The PIT, if created.
    pub(crate) fn get(&self) -> Option<&VmPit> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: set once from `KBox::into_raw` and freed only in `free`, at VM teardown when
        // no ioctl or exit can run.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Stops and frees the PIT (VM teardown; idempotent).
    pub(crate) fn free(&self) {
        let p = self.0.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: from `KBox::into_raw` in `create`, freed once (the swap took it).
            drop(unsafe { Pin::new_unchecked(KBox::from_raw(p)) });
        }
    }
}

/// `KVM_CREATE_PIT2` / `KVM_CREATE_PIT` (upstream `kvm_arch_vm_ioctl`'s `create_pit`):
/// `EEXIST` if the VM has one, `ENOENT` without the in-kernel PIC. The flags are not checked
/// (upstream only looks at `KVM_PIT_SPEAKER_DUMMY`).
pub(crate) fn create(vm: &Vm, legacy: bool, arg: usize) -> Result<isize> {
    let flags = if legacy {
        KVM_PIT_SPEAKER_DUMMY
    } else {
        read_pod::<KvmPitConfig>(arg)?.flags
    };
    let _l = vm.lock();
    let slot = vm.irq().pit();
    if slot.get().is_some() {
        return Err(EEXIST);
    }
    if vm.irq().chip().is_none() {
        return Err(ENOENT);
    }
    let (model, _cmd) = Pit::new(now(), DEFAULT_MIN_PERIOD_NS);
    let b = KBox::pin_init(
        pin_init!(VmPit {
            io <- new_mutex!((), "kvm->pit_state.lock"),
            model: UnsafeCell::new(model),
            speaker: flags & KVM_PIT_SPEAKER_DUMMY != 0,
            timer: AtomicPtr::new(core::ptr::null_mut()),
            vm: vm as *const Vm,
        }),
        GFP_KERNEL,
    )?;
    let pit_ptr: *const VmPit = &*b;
    // SAFETY: the timer keeps `pit_ptr` for its callbacks; the box is pinned and freed only
    // after the timer (VmPit's drop frees the timer first).
    let t = unsafe { tdxkvm_pit_timer_new(pit_ptr.cast()) };
    if t.is_null() {
        return Err(ENOMEM);
    }
    b.timer.store(t, Ordering::Release);
    // SAFETY: the PIT is never moved out of the box; `free` rebuilds the pinned box.
    let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(b) });
    slot.0.store(raw, Ordering::Release);
    // (The new PIT's command is always Cancel: no timer runs yet.)
    Ok(0)
}

fn pit_of(vm: &Vm) -> Result<&VmPit> {
    vm.irq().pit().get().ok_or(ENXIO)
}

/// `KVM_GET_PIT2`: `ENXIO` without a PIT; the reserved words read 0.
pub(crate) fn get_pit2(vm: &Vm, arg: usize) -> Result<isize> {
    let pit = pit_of(vm)?;
    let s = {
        let _io = pit.io.lock();
        pit.with(|p| p.get_state2())
    };
    write_pod(arg, &s)?;
    Ok(0)
}

/// `KVM_SET_PIT2`: `ENXIO` without a PIT; every channel's count is loaded again (channel 0
/// re-arms its timer).
pub(crate) fn set_pit2(vm: &Vm, arg: usize) -> Result<isize> {
    let s: KvmPitState2 = read_pod(arg)?;
    let _l = vm.lock();
    let pit = pit_of(vm)?;
    let _io = pit.io.lock();
    let cmd = pit.with(|p| p.set_state2(&s, now()));
    pit.apply(cmd);
    Ok(0)
}

const CHANNEL_SIZE: usize = core::mem::size_of::<KvmPitChannelState>();

/// The user address of channel `i` of a `struct kvm_pit_state` at `arg` (`EFAULT` if it would
/// wrap: no arithmetic on a user address may panic under overflow checks).
fn channel_addr(arg: usize, i: usize) -> Result<usize> {
    i.checked_mul(CHANNEL_SIZE)
        .and_then(|o| arg.checked_add(o))
        .ok_or(EFAULT)
}

/// `KVM_GET_PIT` (legacy): the three channels.
pub(crate) fn get_pit(vm: &Vm, arg: usize) -> Result<isize> {
    // Upstream copies the structure in first (EFAULT before ENXIO).
    for i in 0..3 {
        read_pod::<KvmPitChannelState>(channel_addr(arg, i)?)?;
    }
    let pit = pit_of(vm)?;
    let ch = {
        let _io = pit.io.lock();
        pit.with(|p| p.get_state())
    };
    for (i, c) in ch.iter().enumerate() {
        write_pod(channel_addr(arg, i)?, c)?;
    }
    Ok(0)
}

/// `KVM_SET_PIT` (legacy).
pub(crate) fn set_pit(vm: &Vm, arg: usize) -> Result<isize> {
    let mut ch = [KvmPitChannelState::default(); 3];
    for (i, c) in ch.iter_mut().enumerate() {
        *c = read_pod(channel_addr(arg, i)?)?;
    }
    let _l = vm.lock();
    let pit = pit_of(vm)?;
    let _io = pit.io.lock();
    let cmd = pit.with(|p| p.set_state(&ch, now()));
    pit.apply(cmd);
    Ok(0)
}

/// `KVM_REINJECT_CONTROL`: `ENXIO` without a PIT; turns tick reinjection on or off.
pub(crate) fn reinject_control(vm: &Vm, arg: usize) -> Result<isize> {
    let c: KvmReinjectControl = read_pod(arg)?;
    let pit = pit_of(vm)?;
    let _io = pit.io.lock();
    pit.with(|p| p.reinject_mut().set_reinject(c.pit_reinject != 0));
    Ok(0)
}

/// A guest `IN` from the PIT ports (0x40-0x43, and 0x61 with the dummy speaker).
pub(crate) fn pio_read(vm: &Vm, port: u16) -> Option<u32> {
    let pit = vm.irq().pit().get()?;
    if port == SPEAKER_PORT {
        if !pit.speaker {
            return None;
        }
        let _io = pit.io.lock();
        return Some(u32::from(pit.with(|p| p.speaker_read(now()))));
    }
    if !Pit::claims_port(port) {
        return None;
    }
    let _io = pit.io.lock();
    pit.with(|p| p.ioport_read(port, now())).map(u32::from)
}

/// Whether the in-kernel PIT serves a read of `port` without writing the data (upstream
/// `pit_ioport_read` returns early for the control port 0x43).
pub(crate) fn read_writes_nothing(vm: &Vm, port: u16) -> bool {
    vm.irq().pit().get().is_some() && Pit::read_writes_nothing(port)
}

/// A guest `OUT` to the PIT ports: true if taken. Only the low byte counts, as upstream.
pub(crate) fn pio_write(vm: &Vm, port: u16, val: u32) -> bool {
    let Some(pit) = vm.irq().pit().get() else {
        return false;
    };
    if port == SPEAKER_PORT {
        if !pit.speaker {
            return false;
        }
        let _io = pit.io.lock();
        pit.with(|p| p.speaker_write(val as u8, now()));
        return true;
    }
    if !Pit::claims_port(port) {
        return false;
    }
    let _io = pit.io.lock();
    match pit.with(|p| p.ioport_write(port, val as u8, now())) {
        None => false,
        Some(cmd) => {
            pit.apply(cmd);
            true
        }
    }
}

/// The hrtimer expired (hard IRQ context): counts the tick in the model; whether to queue the
/// work, and when to fire next (0: not periodic).
///
/// # Safety
///
/// `pit` is the [`VmPit`] the timer was created for, alive (it frees the timer, waiting for
/// this callback, before it goes); `restart_at` is valid for a write.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_pit_fire(
    pit: *const c_void,
    generation: u64,
    restart_at: *mut i64,
) -> bool {
    // SAFETY: the caller's contract.
    let pit = unsafe { &*pit.cast::<VmPit>() };
    let f = pit.with(|p| p.timer_fired(generation));
    // SAFETY: the caller's contract.
    unsafe { *restart_at = f.restart_at.unwrap_or(0) };
    f.queue_work
}

/// The injection work (process context, upstream `pit_do_work`): pulses IRQ0 unless
/// reinjection waits for the guest's acknowledgement of the previous tick.
///
/// # Safety
///
/// `pit` is the [`VmPit`] the timer was created for, alive (its drop cancels this work).
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_pit_work(pit: *const c_void) {
    // SAFETY: the caller's contract.
    let pit = unsafe { &*pit.cast::<VmPit>() };
    if pit.with(|p| p.reinject_mut().on_work()) {
        let vm = pit.vm();
        route::set_irq(vm, KVM_PIT_IRQ_SOURCE_ID, 0, true, false);
        route::set_irq(vm, KVM_PIT_IRQ_SOURCE_ID, 0, false, false);
        // HOOK(irqfix): the NMI watchdog through LVT0 (virtual wire).
        crate::irq::lapic::nmi_watchdog_tick(vm);
    }
}
