// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU side of the userspace exits: guest debugging (`KVM_SET_GUEST_DEBUG`) and the
//! completion an exit leaves pending for the next `KVM_RUN` (upstream
//! `vcpu->arch.complete_userspace_io`).

use crate::vcpu::Vcpu;
use core::mem::size_of;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use x86::exits::guest_debug::{self, GuestDebug, UapiGuestDebug};
use x86::state::SegReg;

/// What the next `KVM_RUN` must finish before entering the guest, after an exit to userspace
/// that needs userspace's answer (the answer is in the kvm_run page or the PIO page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// `KVM_EXIT_X86_RDMSR` (`read`) or `KVM_EXIT_X86_WRMSR`: `msr.error` → #GP, else EDX:EAX
    /// for a read, and the instruction is skipped.
    Msr {
        /// RDMSR.
        read: bool,
    },
    /// `KVM_EXIT_HYPERCALL`: RAX from `hypercall.ret`, the instruction skipped.
    Hypercall {
        /// 64-bit mode at the exit (the answer is truncated otherwise).
        long_mode: bool,
    },
    /// `KVM_EXIT_MMIO` read: the instruction re-executes with `mmio.data`.
    MmioRead {
        /// The address.
        gpa: u64,
        /// Bytes.
        len: u8,
    },
    /// `KVM_EXIT_IO` of a string IN: the elements go to ES:rDI.
    PioIn(PioIn),
    /// `KVM_EXIT_IO` of the last element of a string OUT while RFLAGS.TF was set: the
    /// instruction is complete, its single-step trap comes on the next `KVM_RUN` (upstream
    /// completes the emulated OUTS there, then steps).
    OutsDone,
}

/// A string port input waiting for userspace's data (the emulator's read-ahead of
/// `pio_in_emulated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PioIn {
    /// Bytes per element.
    pub(crate) size: u8,
    /// Elements userspace supplies.
    pub(crate) count: u32,
    /// Address size of the instruction (2, 4, 8).
    pub(crate) addr_size: u8,
    /// REP prefix.
    pub(crate) rep: bool,
    /// RIP after the instruction.
    pub(crate) next_rip: u64,
    /// CS.base + RIP at the exit (a completion after userspace moved RIP is dropped).
    pub(crate) linear_rip: u64,
}

/// Per-vCPU exit state, under the vCPU mutex.
#[derive(Default)]
pub(crate) struct VcpuExits {
    /// `KVM_SET_GUEST_DEBUG` state.
    pub(crate) debug: GuestDebug,
    /// The completion the last exit left, if any.
    pub(crate) pending: Option<Pending>,
    /// An instruction the module completed for the guest had RFLAGS.TF set before it: its
    /// single-step trap is still to be taken (`crate::exit_run::after_step`).
    pub(crate) step_trap: bool,
    /// `KVM_GUESTDBG_INJECT_BP` queued a #BP: the INT3 at RIP is skipped before the next entry
    /// (upstream `svm_update_soft_interrupt_rip` without next-RIP save).
    pub(crate) bp_skip: bool,
    /// The guest's own DR0-3, DR6 and DR7 while the debugger's hardware breakpoints are
    /// loaded for one entry (`crate::exit_run::hw_bp_enter`).
    pub(crate) saved_dr: Option<([u64; 4], u64, u64)>,
    /// DR6 and DR7 as the hardware left them at the last exit with the debugger's
    /// breakpoints loaded (the `KVM_EXIT_DEBUG` values).
    pub(crate) dr_at_exit: Option<(u64, u64)>,
}

/// `RFLAGS` as userspace sees it (`kvm_get_rflags`): the TF single-stepping injected hidden.
pub(crate) fn visible_rflags(l: &crate::vcpu::VcpuLocked, rflags: u64) -> u64 {
    l.exits.debug.visible_rflags(rflags)
}

/// After userspace set RFLAGS (and RIP) (`kvm_set_rflags`): TF again while single-stepping
/// at the RIP where stepping was enabled.
pub(crate) fn rflags_set(l: &mut crate::vcpu::VcpuLocked) {
    let linear_rip = l.arch.seg(SegReg::Cs).base.wrapping_add(l.arch.rip);
    l.arch.rflags = l.exits.debug.hardware_rflags(l.arch.rflags, linear_rip);
}

/// `KVM_SET_GUEST_DEBUG`: copies `struct kvm_guest_debug` in (`EFAULT`), refuses a TD vCPU
/// (upstream: guest state protected → `EINVAL`) and what is not implemented
/// ([`x86::exits::guest_debug`]), then installs it and updates RFLAGS.TF.
pub(crate) fn set_guest_debug(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let b: [u8; guest_debug::UAPI_SIZE] =
        UserSlice::new(arg, size_of::<[u8; guest_debug::UAPI_SIZE]>())
            .reader()
            .read()?;
    let d = UapiGuestDebug::from_bytes(&b);
    if vcpu.vm().is_td() {
        return Err(EINVAL);
    }
    let mut l = vcpu.lock_killable()?;
    let linear_rip = l.arch.seg(SegReg::Cs).base.wrapping_add(l.arch.rip);
    let rflags = l.arch.rflags;
    // kvm_is_exception_pending: a pending exception (not one already injected: the new one is
    // queued over it as kvm_multiple_exception does) or a pending triple fault.
    let exception_pending = l.arch.events.exception.pending || l.arch.events.triple_fault_pending;
    let o = l
        .exits
        .debug
        .set(&d, rflags, linear_rip, exception_pending)
        .map_err(|e| Error::from_errno(-e.raw()))?;
    if let Some(v) = o.inject {
        crate::run::queue_exception(&mut l, v, None, None);
        l.exits.bp_skip = v == guest_debug::BP_VECTOR;
    }
    l.arch.rflags = o.rflags;
    Ok(0)
}
