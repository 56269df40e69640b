// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_EXIT_MEMORY_FAULT` (upstream 6.12 `kvm_prepare_memory_fault_exit` in
//! include/linux/kvm_host.h and `kvm_mmu_prepare_memory_fault_exit` in mmu_internal.h).
//!
//! A guest fault KVM cannot resolve because of how the GFN is backed ends `KVM_RUN` with
//! `-EFAULT` and `run->exit_reason = KVM_EXIT_MEMORY_FAULT`, so the VMM can convert the page
//! (shared ↔ private) or fix the memslot and run again. Upstream's cases, all here:
//! - the fault's private-ness differs from the GFN's PRIVATE attribute (`kvm_faultin_pfn`'s
//!   mismatch check, after the invalidation count is read); for a software-protected VM the
//!   fault is private when the attribute said so at the NPF (`kvm_mmu_page_fault` sets
//!   `PFERR_PRIVATE_ACCESS` from `kvm_mem_is_private`), so this catches a racing conversion;
//! - a private fault without a memslot (`kvm_handle_noslot_fault`; e.g. the slot was deleted
//!   while the GFN stays PRIVATE);
//! - a private fault on a slot without guest_memfd, or whose guest_memfd has no page for it
//!   (`kvm_faultin_pfn_private`; the latter answers guest_memfd's errno).
//!
//! Upstream's fourth case, a private fault that would need emulation
//! (`kvm_mmu_do_page_fault`'s `RET_PF_EMULATE && is_private`), cannot arise: a guest_memfd
//! slot is never read-only (6.12 refuses the two flags together) and private memory is never
//! MMIO. TDs do not execute yet, so their faults (private-ness from the GPA's shared bit,
//! where the mismatch check matters most) do not reach the run loop; `KVM_PRE_FAULT_MEMORY`
//! takes the attribute as upstream and refuses the shared alias (`EINVAL`).
//!
//! The exit reports the faulting 4 KiB page (`gpa` = the GFN's address, `size` = 4096) and
//! `KVM_MEMORY_EXIT_FLAG_PRIVATE` when the fault was private; no RWX flags (6.12 defines none).

use crate::memslot::has_private_mem;
use crate::run::uapi::{RunPage, U};
use crate::vm::Vm;
use memcore::Errno;
use mmu::Gfn;

/// `KVM_EXIT_MEMORY_FAULT` (uapi linux/kvm.h).
pub(crate) const KVM_EXIT_MEMORY_FAULT: u32 = 39;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE`.
pub(crate) const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// `memory_fault.flags`, `.gpa`, `.size` (u64 each) at the start of the exit union.
const MEMORY_FAULT_FLAGS: usize = U;
const MEMORY_FAULT_GPA: usize = U + 8;
const MEMORY_FAULT_SIZE: usize = U + 16;

/// `KVM_CAP_MEMORY_FAULT_INFO` (informational; `KVM_ENABLE_CAP` of it is `EINVAL`, as any
/// capability the VM does not enable): `KVM_RUN` fills `kvm_run.memory_fault` for every case
/// above, as upstream 6.12 (which fills it for these same cases only: a shared fault it
/// cannot resolve, e.g. a slot without a VMA, is a plain `EFAULT` there too).
const KVM_CAP_MEMORY_FAULT_INFO: u64 = 232;

/// `KVM_CHECK_EXTENSION` of this file's capability (`None`: not ours).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    (cap == KVM_CAP_MEMORY_FAULT_INFO).then_some(1)
}

/// Why [`crate::prefault::faultin_as`] could not find the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultinErr {
    /// A plain errno (`ENOENT`: no memslot, a shared GFN: MMIO for the run loop).
    Errno(Errno),
    /// Upstream prepares a memory-fault exit and answers `errno` (`EFAULT`, or guest_memfd's).
    MemoryFault { errno: Errno, private: bool },
}

impl From<FaultinErr> for Errno {
    fn from(e: FaultinErr) -> Errno {
        match e {
            FaultinErr::Errno(e) | FaultinErr::MemoryFault { errno: e, .. } => e,
        }
    }
}

/// Whether a guest access to `gfn` is private, decided before the fault looks anything up
/// (upstream `kvm_mmu_page_fault` for `KVM_X86_SW_PROTECTED_VM`: the attributes are the
/// source of truth). A VM without private memory never has private accesses (and takes no
/// lock here).
pub(crate) fn access_is_private(vm: &Vm, gfn: Gfn) -> bool {
    has_private_mem(vm) && vm.memslots().lock().attrs.is_private(gfn)
}

/// Fills `run` in for `KVM_EXIT_MEMORY_FAULT` on the 4 KiB page of `gfn`.
pub(crate) fn prepare_exit(run: RunPage, gfn: Gfn, private: bool) {
    run.set_exit_reason(KVM_EXIT_MEMORY_FAULT);
    run.set_u64(MEMORY_FAULT_GPA, gfn.raw() << 12);
    run.set_u64(MEMORY_FAULT_SIZE, 4096);
    run.set_u64(
        MEMORY_FAULT_FLAGS,
        if private {
            KVM_MEMORY_EXIT_FLAG_PRIVATE
        } else {
            0
        },
    );
}
