// SPDX-License-Identifier: GPL-2.0-only
//! Small VM ioctls of x86 KVM that an SVM host accepts without state (HOOK(entry); upstream
//! 6.12 `kvm_arch_vm_ioctl`): `KVM_SET_TSS_ADDR`, `KVM_SET_IDENTITY_MAP_ADDR`,
//! `KVM_SET_NR_MMU_PAGES`, and the capabilities upstream advertises for them.
//!
//! - `KVM_SET_TSS_ADDR`: the address must leave room for the three pages VMX's real-mode TSS
//!   would use (`addr > (u32)(-3 * PAGE_SIZE)` is `EINVAL`, x86.c's check); SVM needs no TSS
//!   (`set_tss_addr` is `KVM_X86_OP_OPTIONAL_RET0`), so it is accepted and ignored.
//! - `KVM_SET_IDENTITY_MAP_ADDR`: under the VM lock, `EINVAL` once a vCPU was created, `EFAULT`
//!   if the `u64` cannot be read; ignored on SVM (`OPTIONAL_RET0`).
//! - `KVM_SET_NR_MMU_PAGES`: fewer than `KVM_MIN_ALLOC_MMU_PAGES` (64) is `EINVAL`; otherwise
//!   accepted. The number caps the shadow MMU's pages; with the TDP MMU (the only MMU here, and
//!   upstream's with TDP) no page counts against it, so accepting it changes nothing, as
//!   upstream. `KVM_GET_NR_MMU_PAGES` is gone from 6.12 (no case in `kvm_arch_vm_ioctl`: ENOTTY),
//!   so it stays ENOTTY here.

use crate::vm::Vm;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// `KVM_SET_NR_MMU_PAGES`: `_IO(KVMIO, 0x44)`.
const KVM_SET_NR_MMU_PAGES: u32 = 0xae44;
/// `KVM_SET_TSS_ADDR`: `_IO(KVMIO, 0x47)`.
const KVM_SET_TSS_ADDR: u32 = 0xae47;
/// `KVM_SET_IDENTITY_MAP_ADDR`: `_IOW(KVMIO, 0x48, __u64)`.
const KVM_SET_IDENTITY_MAP_ADDR: u32 = 0x4008_ae48;

const KVM_CAP_MMU_SHADOW_CACHE_CONTROL: u64 = 2;
const KVM_CAP_SET_TSS_ADDR: u64 = 4;
const KVM_CAP_SET_IDENTITY_MAP_ADDR: u64 = 37;

/// `KVM_MIN_ALLOC_MMU_PAGES`.
const MIN_ALLOC_MMU_PAGES: usize = 64;
/// `(unsigned int)(-3 * PAGE_SIZE)`: the highest TSS address.
const MAX_TSS_ADDR: usize = 0xffff_d000;

/// `KVM_CHECK_EXTENSION` for these ioctls' capabilities (x86 answers 1 on every VM).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    match cap {
        KVM_CAP_MMU_SHADOW_CACHE_CONTROL | KVM_CAP_SET_TSS_ADDR | KVM_CAP_SET_IDENTITY_MAP_ADDR => {
            Some(1)
        }
        _ => None,
    }
}

/// Whether `cmd` is one of this file's ioctls.
pub(crate) fn is_ioctl(cmd: u32) -> bool {
    matches!(
        cmd,
        KVM_SET_NR_MMU_PAGES | KVM_SET_TSS_ADDR | KVM_SET_IDENTITY_MAP_ADDR
    )
}

/// The VM-fd ioctls above.
pub(crate) fn ioctl(vm: &Vm, cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        KVM_SET_TSS_ADDR => {
            if arg > MAX_TSS_ADDR {
                return Err(EINVAL);
            }
            Ok(0)
        }
        KVM_SET_IDENTITY_MAP_ADDR => {
            let l = vm.lock();
            if l.created_vcpus != 0 {
                return Err(EINVAL);
            }
            let _addr: u64 = UserSlice::new(arg, 8).reader().read()?;
            Ok(0)
        }
        KVM_SET_NR_MMU_PAGES => {
            if arg < MIN_ALLOC_MMU_PAGES {
                return Err(EINVAL);
            }
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}
