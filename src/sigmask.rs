// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_SET_SIGNAL_MASK` (upstream `kvm_vcpu_ioctl_set_sigmask`) and the mask's swap around
//! `KVM_RUN` (upstream `kvm_sigset_activate`/`kvm_sigset_deactivate`): while the vCPU runs, the
//! thread's blocked set is the vCPU's mask, and the thread's own mask waits in
//! `current->real_blocked`, so a signal the mask leaves open ends `KVM_RUN` with EINTR.
use crate::vcpu::{Vcpu, VcpuLocked};
use core::mem::size_of;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// `KVM_SET_SIGNAL_MASK` = `_IOW(KVMIO, 0x8b, struct kvm_signal_mask)`.
pub(crate) const KVM_SET_SIGNAL_MASK: u32 = 0x4004_ae8b;

/// `sizeof(sigset_t)` on x86-64 (64 signals, one word): the only `len` upstream accepts.
const SIGSET_SIZE: u32 = 8;
/// SIGKILL (9) and SIGSTOP (19) can never be blocked (upstream's `sigdelsetmask`).
const UNBLOCKABLE: u64 = 1 << (9 - 1) | 1 << (19 - 1);

extern "C" {
    fn tdxkvm_sigset_activate(set: u64);
    fn tdxkvm_sigset_deactivate();
}

/// `KVM_SET_SIGNAL_MASK`: `arg` is a `struct kvm_signal_mask { __u32 len; __u8 sigset[]; }`
/// (EINVAL unless `len` is 8), or NULL to run with the thread's own mask again.
pub(crate) fn set_signal_mask(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let mask = if arg == 0 {
        None
    } else {
        let len: u32 = UserSlice::new(arg, size_of::<u32>()).reader().read()?;
        if len != SIGSET_SIZE {
            return Err(EINVAL);
        }
        let set: u64 = UserSlice::new(arg + size_of::<u32>(), size_of::<u64>())
            .reader()
            .read()?;
        Some(set & !UNBLOCKABLE)
    };
    let mut l = vcpu.lock_killable()?;
    l.sigmask = mask;
    Ok(0)
}

/// Runs `f` (the body of `KVM_RUN`) with the vCPU's signal mask, if it has one, as the
/// thread's blocked set.
pub(crate) fn with_mask<R>(l: &mut VcpuLocked, f: impl FnOnce(&mut VcpuLocked) -> R) -> R {
    let Some(set) = l.sigmask else {
        return f(l);
    };
    // SAFETY: runs in the ioctl's task context; the glue swaps `current`'s own mask only.
    unsafe { tdxkvm_sigset_activate(set) };
    let r = f(l);
    // SAFETY: as above, after the activation above on the same task.
    unsafe { tdxkvm_sigset_deactivate() };
    r
}
