// SPDX-License-Identifier: GPL-2.0-only
//! Nested page faults (upstream `npf_interception` → `kvm_mmu_page_fault` →
//! `kvm_tdp_page_fault`): the GPA is resolved through the memslots and mapped into the VM's
//! shared root (NPT format) with the vCPU's caches, by the same machinery as
//! `KVM_PRE_FAULT_MEMORY` ([`crate::prefault::faultin_as`], [`crate::prefault::map_locked`]).
//!
//! A read or exec fault on a page the host has writable maps it writable when the slot is
//! (upstream `hva_to_pfn_fast` tries a writable GUP first), so the guest's first write does
//! not fault again. A GPA outside every memslot, or a write to a read-only memslot, is MMIO:
//! [`super::mmio`].
//!
//! Before all that, the fast page fault ([`fast`], upstream `fast_page_fault`): a write to a
//! page that dirty logging write-protected only needs its leaf's writable bit back, by one
//! compare-exchange under the shared MMU lock (`mmu::tdp::fast`), and the page marked dirty;
//! no GUP, no cache top-up, no new leaf. Anything else falls through to the full path.

use super::{mmio, Action};
use crate::dirty::FaultLog;
use crate::env::KernelEnv;
use crate::memfault::FaultinErr;
use crate::prefault::{faultin_as, map_locked};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::VmMmu;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use memcore::last_slot::LastSlot;
use memcore::Errno;
use mmu::external::NoExternal;
use mmu::spte::Access;
use mmu::spte::Npt;
use mmu::tdp::{FastFault, Fault, FaultAccess, TdpMmu};
use mmu::{Gfn, MmuError};

/// Handles one NPF: maps the page (the guest retries the access) or hands it to MMIO.
pub(crate) fn handle(vcpu: &Vcpu, l: &mut VcpuLocked, gpa: u64, error: u64) -> Result<Action> {
    let vm = vcpu.vm();
    let gfn = Gfn::new(gpa >> 12);
    let write = error & x86::svm::npf::WRITE != 0;
    let VmMmu::Plain(m) = vm.mmu() else {
        // A TD vCPU never gets here (TDs do not run yet).
        vm.mmu().mark_bugged();
        return Err(EIO);
    };
    if fast(vm, m, &mut l.last_slot, gfn, error) {
        vcpu.stats.page_faults.fetch_add(1, Ordering::Relaxed);
        vcpu.stats.pf_fast.fetch_add(1, Ordering::Relaxed);
        return Ok(Action::Continue);
    }
    {
        // HOOK(gmemfault): private-ness before the invalidation count (kvm_mmu_page_fault).
        let is_private = crate::memfault::access_is_private(vm, gfn);
        let seq = vm.memslots().invalidation().seq();
        let b = match faultin_as(vm, gfn, write, Some(is_private)) {
            Ok(b) if write && b.slot_readonly => return mmio(vcpu, l, gpa, error),
            Ok(b) => b,
            Err(FaultinErr::Errno(Errno::ENOENT)) => return mmio(vcpu, l, gpa, error),
            // Upstream kvm_handle_error_pfn's sigpending case (kvm_handle_signal_exit): the
            // run ends with EINTR and KVM_EXIT_INTR; the guest retries the access next time.
            Err(FaultinErr::Errno(Errno::EINTR)) => {
                super::uapi::RunPage(vcpu.run_page()).set_exit_reason(super::uapi::KVM_EXIT_INTR);
                vcpu.stats.run.signal_exits.fetch_add(1, Ordering::Relaxed);
                return Err(EINTR);
            }
            // HOOK(gmemfault): KVM_EXIT_MEMORY_FAULT with the errno (crate::memfault).
            Err(FaultinErr::MemoryFault { errno, private }) => {
                crate::memfault::prepare_exit(super::uapi::RunPage(vcpu.run_page()), gfn, private);
                return Err(crate::memslot::err(errno));
            }
            Err(FaultinErr::Errno(e)) => return Err(crate::memslot::err(e)),
        };
        vm.mmu().topup_vcpu_caches(&mut l.caches)?;
        let writable = b.access.contains(Access::WRITE);
        let fault = Fault {
            gfn,
            kind: b.kind,
            pfn: b.pfn,
            access: b.access,
            write: write && writable,
            max_level: b.max_level,
        };
        // Marks `gfn` dirty if the slot logs and the leaf is writable (crate::dirty).
        let r = map_locked(m, vm, &mut l.caches, &fault, &b.log, seq);
        drop(b);
        match r {
            Ok(Some(_level)) => {
                vcpu.stats.page_faults.fetch_add(1, Ordering::Relaxed);
                // A writable leaf of a logged slot was marked dirty under the MMU lock by
                // map_locked (upstream make_spte -> mark_page_dirty_in_slot), also for the
                // exec/read fault of a host-writable page, which kvm-ioctls' test_run_code
                // counts.
                return Ok(Action::Continue);
            }
            Ok(None) => {
                // An invalidation ran or a racing fault won: back to the loop, which checks
                // signals and rescheduling, and the guest faults again if it must.
                return Ok(Action::Continue);
            }
            Err(MmuError::NoMemory) => return Err(ENOMEM),
            Err(MmuError::GfnOutOfRange) => return mmio(vcpu, l, gpa, error),
            Err(_) => {
                // KVM_BUG_ON: the MMU broke an invariant or is bugged; refuse further work.
                vm.mmu().mark_bugged();
                return Err(EIO);
            }
        }
    }
}

/// The fast page fault (upstream `fast_page_fault`, see `mmu::tdp::fast`): `true` if the fault
/// is resolved (fixed or spurious) and the guest can retry the access, `false` for the full
/// path.
///
/// Which faults come here (upstream `page_fault_can_be_fast`): a write to a present page (a
/// write-protection fault), not a reserved-bit fault, and not on a VM with private memory (a
/// software-protected VM's shared root maps both kinds; its faults take the full path, which
/// decides by the attribute). The slot is looked up for its dirty log only, in the vCPU's
/// last-used slot while the set is unchanged, else under `slots_lock`; a GFN without a slot, or a write to a read-only slot,
/// is the full path's (MMIO). The invalidation count is read before the lookup and checked
/// under the MMU lock, as the full path does: a slot that started logging after the lookup
/// (its write-protection runs inside an invalidation) sends the fault the full way, so no
/// write is left unlogged. The dirty mark is made under the MMU lock, as the full path's:
/// `KVM_GET_DIRTY_LOG` harvests and write-protects under the exclusive side.
fn fast(
    vm: &crate::vm::Vm,
    m: &TdpMmu<Npt, KernelEnv, NoExternal>,
    cache: &mut LastSlot<FaultLog>,
    gfn: Gfn,
    error: u64,
) -> bool {
    use x86::svm::npf;
    if error & npf::RSVD != 0 || crate::memslot::has_private_mem(vm) {
        return false;
    }
    // Upstream page_fault_can_be_fast with A/D bits on (NPT always has them): a not-present
    // fault has nothing to fix without the MMU's full path, and of the present ones only a
    // write (write protection) does; those skip the slot lookup and the walk here.
    if error & npf::PRESENT == 0 || error & npf::WRITE == 0 {
        return false;
    }
    let access = if error & npf::FETCH != 0 {
        FaultAccess::Exec
    } else if error & npf::WRITE != 0 {
        FaultAccess::Write
    } else {
        FaultAccess::Read
    };
    // The slot (for its dirty log and read-only flag) from the vCPU's last lookup while the
    // slot set is unchanged (upstream `vcpu->last_used_slot`): no `slots_lock` per fault. The
    // generation is read after the invalidation count; see memcore::last_slot.
    let seq = vm.memslots().invalidation().seq();
    let mut gen = vm.memslots().published_generation();
    if cache.get(gen, gfn).is_none() {
        let st = vm.memslots().lock();
        let Some(slot) = st.slots.lookup(gfn) else {
            return false;
        };
        gen = st.slots.generation();
        cache.fill(gen, slot, crate::dirty::fault_log(&st, slot));
    }
    let Some(hit) = cache.get(gen, gfn) else {
        return false;
    };
    if access == FaultAccess::Write && hit.readonly {
        return false;
    }
    let log = hit.value;
    let guard = m.read();
    if vm.memslots().invalidation().retry(seq) {
        return false;
    }
    match m.fast_page_fault(&guard, gfn, access, log.is_logging()) {
        Ok(FastFault::Fixed(_)) => {
            // Upstream fast_pf_fix_direct_spte: the leaf became writable, the page is dirty.
            log.mark_if_writable(gfn, Access::WRITE);
            true
        }
        Ok(FastFault::Spurious) => true,
        // The full path decides (and reports a bugged VM or a GFN out of range itself).
        Ok(FastFault::Slow) | Err(_) => false,
    }
}
