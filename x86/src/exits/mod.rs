// SPDX-License-Identifier: GPL-2.0-only
//! The kernel-free half of KVM's userspace exits and the in-kernel handling around them: what
//! upstream keeps in `arch/x86/kvm/x86.c` (MSR filter, user-space MSR exits, hypercalls,
//! guest debug, emulation failures), `virt/kvm/coalesced_mmio.c` and `virt/kvm/eventfd.c`
//! (ioeventfd), as plain data and decisions the module applies.
//!
//! Every validation returns the errno upstream 6.12 returns, in upstream's check order, so the
//! module's ioctls only copy structures in and out and hold the locks.
//!
//! Map:
//! - [`run`]: the `struct kvm_run` exit fields (offsets, exit reasons) and an encoder for them.
//! - [`msr_filter`]: `KVM_X86_SET_MSR_FILTER` and `kvm_msr_allowed`.
//! - [`user_msr`]: `KVM_CAP_X86_USER_SPACE_MSR` and the choice between handling an MSR access
//!   in the kernel, exiting to userspace, or injecting #GP.
//! - [`coalesced`]: coalesced MMIO/PIO zones and the ring page.
//! - [`ioeventfd`]: `KVM_IOEVENTFD` validation, collisions and matching.
//! - [`hypercall`]: `kvm_emulate_hypercall` for the KVM hypercall ABI and `KVM_CAP_EXIT_HYPERCALL`.
//! - [`guest_debug`]: `KVM_SET_GUEST_DEBUG` and the `KVM_EXIT_DEBUG` fields.
//! - [`emulation`]: `KVM_CAP_EXIT_ON_EMULATION_FAILURE` and `prepare_emulation_failure_exit`.
//! - [`xcr`]: XSETBV's validity check.
//! - [`pio`]: string port I/O batching and register stepping.

pub mod coalesced;
pub mod emulation;
pub mod guest_debug;
pub mod hypercall;
pub mod ioeventfd;
pub mod msr_filter;
pub mod pio;
pub mod pio_bus; // HOOK(cr8): the in-kernel PIO devices' bus ranges
pub mod run;
pub mod user_msr;
pub mod xcr;

/// A Linux errno (positive), as these ioctls return it; the module turns it into a kernel error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(i32);

impl Errno {
    /// EPERM.
    pub const EPERM: Errno = Errno(1);
    /// ENOENT: `KVM_IOEVENTFD` deassign of an ioeventfd that is not there.
    pub const ENOENT: Errno = Errno(2);
    /// EBADF: not an open fd.
    pub const EBADF: Errno = Errno(9);
    /// ENOMEM.
    pub const ENOMEM: Errno = Errno(12);
    /// EFAULT: a bad user pointer.
    pub const EFAULT: Errno = Errno(14);
    /// EBUSY.
    pub const EBUSY: Errno = Errno(16);
    /// EEXIST: an ioeventfd that collides with one already there.
    pub const EEXIST: Errno = Errno(17);
    /// EINVAL.
    pub const EINVAL: Errno = Errno(22);
    /// ENOSPC: an I/O bus is full.
    pub const ENOSPC: Errno = Errno(28);

    /// The positive errno.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self.0
    }
}

/// Little-endian field readers for uapi structures handed over as bytes (the module copies the
/// whole structure in with one `copy_from_user` and the core decodes it).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// See [`le_u32`].
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
