// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_IRQFD` (upstream virt/kvm/eventfd.c): an eventfd whose signal raises a GSI, and with
//! `KVM_IRQFD_FLAG_RESAMPLE` a level-triggered GSI held high until the guest EOIs it, when the
//! line drops and the resamplefd is signalled so userspace re-checks its device.
//!
//! The wait-queue entry, the work items and the list live in C (`irqroute_glue.c`, upstream's
//! structure); the C side calls [`tdxkvm_rust_irqfd_set`] from process context (a work item)
//! to raise or lower the line, never from the eventfd's wakeup, so the irqchip's locks are
//! never taken in IRQ context. The set is created on the first assignment and torn down
//! (every irqfd shut down, every work item flushed) before the VM goes ([`super::teardown`]).

use super::abi::*;
use super::route::{self, KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID, KVM_USERSPACE_IRQ_SOURCE_ID};
use super::IrqchipMode;
use crate::eventfd::EventFd;
use crate::vm::Vm;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

extern "C" {
    fn tdxkvm_irqfds_new(vm: *const c_void) -> *mut c_void;
    fn tdxkvm_irqfds_free(irqfds: *mut c_void);
    fn tdxkvm_irqfd_assign(
        irqfds: *mut c_void,
        fd: c_int,
        gsi: u32,
        resample: bool,
        resamplefd: c_int,
    ) -> c_int;
    fn tdxkvm_irqfd_deassign(irqfds: *mut c_void, fd: c_int, gsi: u32) -> c_int;
    fn tdxkvm_irqfd_has_resampler(irqfds: *mut c_void, gsi: u32) -> bool;
    fn tdxkvm_irqfd_resample_notify(irqfds: *mut c_void, gsi: u32);
}

/// The VM's irqfd set (a C `struct tdxkvm_irqfds`), null until the first assignment.
pub(crate) struct Irqfds(AtomicPtr<c_void>);

impl Irqfds {
    /// None yet.
    pub(crate) fn new() -> Self {
        Irqfds(AtomicPtr::new(core::ptr::null_mut()))
    }

    fn get(&self) -> Option<*mut c_void> {
        let p = self.0.load(Ordering::Acquire);
        (!p.is_null()).then_some(p)
    }

    /// The set, created under the VM lock on first use.
    fn get_or_create(&self, vm: &Vm) -> Result<*mut c_void> {
        if let Some(p) = self.get() {
            return Ok(p);
        }
        let _l = vm.lock();
        if let Some(p) = self.get() {
            return Ok(p);
        }
        let vmp: *const Vm = vm;
        // SAFETY: allocates a set that keeps `vmp` for its callbacks; the set is freed in
        // `free`, which runs before the VM's memory goes (VM teardown), so the pointer stays
        // valid for every callback.
        let p = unsafe { tdxkvm_irqfds_new(vmp.cast()) };
        if p.is_null() {
            return Err(ENOMEM);
        }
        self.0.store(p, Ordering::Release);
        Ok(p)
    }

    /// Shuts every irqfd down and frees the set (VM teardown; idempotent).
    pub(crate) fn free(&self) {
        let p = self.0.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: `p` came from `tdxkvm_irqfds_new` and is freed once (the swap took it).
            unsafe { tdxkvm_irqfds_free(p) };
        }
    }
}

/// `KVM_IRQFD` (upstream `kvm_irqfd`): `EINVAL` for unknown flags; deassign removes every
/// irqfd of (fd, gsi) and succeeds when there is none; assign needs an in-kernel irqchip (for
/// resampling the full one, `KVM_CREATE_IRQCHIP`), else `EINVAL`; `EBADF`/`EINVAL` for an fd
/// that is not an eventfd, `EBUSY` when the eventfd already drives a GSI.
pub(crate) fn ioctl(vm: &Vm, arg: usize) -> Result<isize> {
    let a: KvmIrqfd = UserSlice::new(arg, core::mem::size_of::<KvmIrqfd>())
        .reader()
        .read()?;
    if a.flags & !(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE) != 0 {
        return Err(EINVAL);
    }
    let fd = a.fd as c_int;
    if a.flags & KVM_IRQFD_FLAG_DEASSIGN != 0 {
        let Some(p) = vm.irq().irqfds().get() else {
            // No irqfd at all: only the fd is checked, as upstream's eventfd_ctx_fdget.
            drop(EventFd::from_fd(fd)?);
            return Ok(0);
        };
        // SAFETY: `p` is the VM's live set (freed only at VM teardown, after every ioctl).
        let r = unsafe { tdxkvm_irqfd_deassign(p, fd, a.gsi) };
        return if r < 0 {
            Err(Error::from_errno(r))
        } else {
            Ok(0)
        };
    }
    let resample = a.flags & KVM_IRQFD_FLAG_RESAMPLE != 0;
    let allowed = match vm.irqchip_mode() {
        IrqchipMode::Kernel => true,
        IrqchipMode::Split => !resample,
        IrqchipMode::None => false,
    };
    if !allowed {
        return Err(EINVAL);
    }
    let p = vm.irq().irqfds().get_or_create(vm)?;
    // SAFETY: `p` is the VM's live set.
    let r = unsafe { tdxkvm_irqfd_assign(p, fd, a.gsi, resample, a.resamplefd as c_int) };
    if r < 0 {
        Err(Error::from_errno(r))
    } else {
        Ok(0)
    }
}

/// The guest acknowledged `gsi` (an EOI of a level-triggered IOAPIC pin, or a PIC ack; upstream
/// `irqfd_resampler_ack` as the GSI's ack notifier): a resampling irqfd's line drops, then
/// every resamplefd on the GSI is signalled, in that order, so a re-assert from userspace is
/// never lost. No lock of the irqchip may be held.
pub(crate) fn on_ack(vm: &Vm, gsi: u32) {
    let Some(p) = vm.irq().irqfds().get() else {
        return;
    };
    // SAFETY: `p` is the VM's live set.
    if !unsafe { tdxkvm_irqfd_has_resampler(p, gsi) } {
        return;
    }
    route::set_irq(vm, KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID, gsi, false, false);
    // SAFETY: as above.
    unsafe { tdxkvm_irqfd_resample_notify(p, gsi) };
}

/// Called by the C glue from a work item (process context): `kind` 0 pulses `gsi` (upstream
/// `irqfd_inject` without resampler: assert + de-assert as the userspace source), 1 asserts
/// it with the resample source, 2 de-asserts the resample source (the GSI's last resampler
/// went away).
///
/// # Safety
///
/// `vm` is the pointer the set was created with: the VM is alive (its teardown flushes every
/// work item before it proceeds).
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_irqfd_set(vm: *const c_void, gsi: u32, kind: c_int) {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    match kind {
        0 => {
            route::set_irq(vm, KVM_USERSPACE_IRQ_SOURCE_ID, gsi, true, false);
            route::set_irq(vm, KVM_USERSPACE_IRQ_SOURCE_ID, gsi, false, false);
        }
        1 => {
            route::set_irq(vm, KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID, gsi, true, false);
        }
        _ => {
            route::set_irq(vm, KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID, gsi, false, false);
        }
    }
}
