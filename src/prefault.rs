// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_PRE_FAULT_MEMORY` on a vCPU fd (upstream `kvm_vcpu_pre_fault_memory` in
//! virt/kvm/kvm_main.c and x86's `kvm_arch_vcpu_pre_fault_memory` / `kvm_tdp_map_page`, 6.12;
//! the TDX rules of tdx-vm-abi.md §3).
//!
//! Each step maps the page at `range.gpa` the way a guest read fault would, through the TDP MMU
//! with this vCPU's caches: private GFNs (memory attribute PRIVATE) from the slot's
//! guest_memfd — for a TD into the mirror root, i.e. SEPT.ADD + PAGE.AUG — and shared GFNs from
//! the VMM's memory through GUP into the shared root. A private page may be mapped by one
//! 2 MiB leaf when its guest_memfd folio is 2 MiB and the range is uniformly private inside the
//! slot ([`memcore::prefault::private_max_level`]); the progress then counts to the end of
//! the 2 MiB page. The progress loop and its errnos are `memcore::prefault::run`'s.
//!
//! Locking: the vCPU mutex (caches) → `slots_lock` for the lookups only → GUP / guest_memfd
//! (may sleep, allocate) → caches topped up → the MMU lock (shared), where the invalidation
//! count is checked before mapping (see [`crate::mmu_notifier`]).

use crate::glue;
use crate::mem_abi::KvmPreFaultMemory;
use crate::memfault::FaultinErr;
use crate::memslot::has_private_mem;
use crate::run::uapi::RunPage;
use crate::vcpu::Vcpu;
use crate::vm::{Vm, VmMmu};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use memcore::prefault::PreFaultRange;
use memcore::Errno;
use mmu::cache::VcpuMmuCaches;
use mmu::env::MmuEnv;
use mmu::external::ExternalPageTable;
use mmu::spte::{Access, PagingFormat};
use mmu::tdp::{Fault, FaultOutcome, TdpMmu};
use mmu::{Gfn, GfnKind, Level, MmuError, Pfn};

/// A TD's shared bit as a GFN bit (GPA bit 47, 4-level S-EPT).
const TD_SHARED_GFN_BIT: u64 = 1 << 35;

/// A GUP page reference.
struct PageRef(*mut c_void);

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: the reference GUP took, dropped once.
        unsafe { glue::tdxkvm_put_page(self.0) };
    }
}

/// What backs the GFN, found before the MMU lock (also the run loop's NPT faults,
/// [`crate::run`]).
pub(crate) struct Backing {
    pub(crate) pfn: Pfn,
    pub(crate) kind: GfnKind,
    pub(crate) access: Access,
    pub(crate) max_level: Level,
    /// The GFN is in a read-only memslot (a write to it is MMIO, upstream's rule).
    pub(crate) slot_readonly: bool,
    /// The page reference held across the mapping, dropped after it (KVM keeps none).
    _page: Option<PageRef>,
    /// Likewise for a guest_memfd folio.
    _folio: Option<crate::gmem::FolioRef>,
    /// The slot's dirty log, if it logs: a writable leaf marks the GFN dirty.
    pub(crate) log: crate::dirty::FaultLog,
}

/// Maps `fault` under the MMU lock unless an invalidation ran since `seq` was read; `None`:
/// fault again.
pub(crate) fn map_locked<F: PagingFormat, E: MmuEnv, X: ExternalPageTable>(
    mmu: &TdpMmu<F, E, X>,
    vm: &Vm,
    caches: &mut VcpuMmuCaches,
    fault: &Fault,
    log: &crate::dirty::FaultLog,
    seq: u64,
) -> core::result::Result<Option<Level>, MmuError> {
    let guard = mmu.read();
    if vm.memslots().invalidation().retry(seq) {
        return Ok(None);
    }
    match mmu.map(&guard, caches, fault) {
        Ok(FaultOutcome::Mapped(level)) => {
            // Upstream make_spte: a writable leaf of a logged slot marks its GFN dirty.
            log.mark_if_writable(fault.gfn, fault.access);
            Ok(Some(level))
        }
        Ok(FaultOutcome::Spurious) => {
            log.mark_if_writable(fault.gfn, fault.access);
            Ok(mmu
                .lookup(&guard, fault.kind, fault.gfn)?
                .map_or(Some(Level::L4K), |(l, _)| Some(l)))
        }
        Ok(FaultOutcome::Retry) | Err(MmuError::ExternalBusy) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds what backs `gfn` (upstream `kvm_faultin_pfn`), holding a page reference until the
/// mapping is made. `write`: a guest write fault (the run loop's NPT faults); pre-fault is a
/// read fault. `ENOENT`: no memslot (MMIO for the run loop). `is_private`: decided before
/// (`Some`: the run loop's NPT faults, [`crate::memfault::access_is_private`]) or the GFN's
/// attribute (`None`: pre-fault). The cases upstream ends in `KVM_EXIT_MEMORY_FAULT` come back
/// as [`FaultinErr::MemoryFault`].
pub(crate) fn faultin_as(
    vm: &Vm,
    gfn: Gfn,
    write: bool,
    is_private: Option<bool>,
) -> core::result::Result<Backing, FaultinErr> {
    let st = vm.memslots().lock();
    // The attribute decides first (upstream: PFERR_PRIVATE_ACCESS from kvm_mem_is_private, and
    // kvm_handle_noslot_fault answers EFAULT for a private fault without a slot; ENOENT is for
    // shared GFNs without one).
    let private = has_private_mem(vm) && st.attrs.is_private(gfn);
    // HOOK(gmemfault): upstream kvm_faultin_pfn's mismatch check, after the invalidation count
    // was read (a conversion raced the fault) — and the memory-fault exits below.
    let mf = |errno, private| FaultinErr::MemoryFault { errno, private };
    if is_private.is_some_and(|p| p != private) {
        return Err(mf(Errno::EFAULT, !private));
    }
    let slot = *st.slots.lookup(gfn).ok_or(if private {
        mf(Errno::EFAULT, true)
    } else {
        FaultinErr::Errno(Errno::ENOENT)
    })?;
    let log = crate::dirty::fault_log(&st, &slot);
    if !private {
        // Huge pages as far as the slot and the attributes allow (upstream lpage_info) and
        // while the slot does not log; the host mapping decides below.
        let slot_level = log.max_level(memcore::prefault::shared_max_level(
            &slot,
            gfn,
            &st.attrs,
            has_private_mem(vm),
        ));
        drop(st);
        let hva = slot.gfn_to_hva(gfn);
        let mut page = core::ptr::null_mut();
        let mut pfn = 0u64;
        let mut writable = false;
        // Pre-fault is a read fault (upstream: no PFERR_WRITE_MASK): untouched anonymous memory
        // maps the zero page and allocates nothing; a page that is already writable maps
        // writable unless the slot is read-only. A guest write fault (never on a read-only
        // slot: the run loop sends those to MMIO) asks GUP for a writable page.
        let write = write && !slot.is_readonly();
        // SAFETY: GUP on the current mm (the VM's creator, checked by the ioctl); fills the
        // out-parameters on success.
        let r = unsafe {
            glue::tdxkvm_gup(
                hva,
                write,
                !slot.is_readonly(),
                &mut page,
                &mut pfn,
                &mut writable,
            )
        };
        // Upstream hva_to_pfn: -EINTR (a signal while the fault waited, e.g. on userfaultfd)
        // is KVM_PFN_ERR_SIGPENDING, the caller's EINTR; any other failure is EFAULT.
        if r == -Errno::EINTR.to_errno() {
            return Err(FaultinErr::Errno(Errno::EINTR));
        }
        if r < 0 {
            return Err(FaultinErr::Errno(Errno::EFAULT));
        }
        let mut access = Access::READ | Access::EXEC;
        if writable {
            access |= Access::WRITE;
        }
        // Upstream host_pfn_mapping_level: a THP (or hugetlb) in the VMM's page tables maps
        // one 2 MiB leaf, so the guest takes one NPT fault per 2 MiB instead of 512. The walk
        // runs after the invalidation count was read; any change of the host PMD (THP split,
        // collapse, unmap) goes through the MMU notifier, so map_locked's retry check under
        // the MMU lock catches a stale answer.
        let max_level = if slot_level == Level::L2M
            // SAFETY: a lockless walk of the current mm with IRQs off (the glue).
            && unsafe { glue::tdxkvm_host_huge_2m(hva) }
        {
            Level::L2M
        } else {
            Level::L4K
        };
        return Ok(Backing {
            pfn: Pfn::new(pfn),
            kind: GfnKind::Shared,
            access,
            max_level,
            slot_readonly: slot.is_readonly(),
            _page: Some(PageRef(page)),
            _folio: None,
            log,
        });
    }
    // A private access to a slot without guest_memfd: upstream's memory-fault exit, -EFAULT;
    // likewise (with guest_memfd's errno) when guest_memfd has no page for it.
    let g = slot.gmem.ok_or(mf(Errno::EFAULT, true))?;
    let huge_ok = memcore::prefault::private_max_level(&slot, gfn, &st.attrs, true) == Level::L2M;
    let index = g.pgoff + (gfn.raw() - slot.base_gfn.raw());
    let (pfn, order, folio) = crate::gmem::get_pfn(st, g.file, index).map_err(|e| mf(e, true))?;
    Ok(Backing {
        pfn,
        kind: if vm.is_td() {
            GfnKind::Private
        } else {
            // A software-protected VM has one root for both kinds.
            GfnKind::Shared
        },
        access: Access::RWX,
        max_level: log.max_level(if huge_ok && order >= 9 {
            Level::L2M
        } else {
            Level::L4K
        }),
        slot_readonly: false,
        _page: None,
        _folio: Some(folio),
        log,
    })
}

fn mmu_errno(e: MmuError) -> Errno {
    match e {
        MmuError::NoMemory => Errno::ENOMEM,
        MmuError::GfnOutOfRange => Errno::ENOENT,
        _ => Errno::EIO,
    }
}

/// One step: maps the page at `gpa`, returns the level it is mapped at.
fn map_one(
    vcpu: &Vcpu,
    caches: &mut VcpuMmuCaches,
    gpa: u64,
) -> core::result::Result<Level, Errno> {
    let vm = vcpu.vm();
    if !vm.memslots().pre_fault_allowed() {
        return Err(Errno::EOPNOTSUPP);
    }
    let gfn = Gfn::new(gpa >> 12);
    // A TD's shared alias is not a memslot GFN (upstream kvm_is_gfn_alias).
    if vm.is_td() && gfn.raw() & TD_SHARED_GFN_BIT != 0 {
        return Err(Errno::EINVAL);
    }
    loop {
        // Upstream kvm_tdp_map_page retries RET_PF_RETRY until a signal comes.
        if kernel::current!().signal_pending() {
            return Err(Errno::EINTR);
        }
        let seq = vm.memslots().invalidation().seq();
        // HOOK(cpu11): a fault upstream ends in kvm_mmu_prepare_memory_fault_exit (a private
        // GFN without a slot, on a slot without guest_memfd, or that guest_memfd cannot back)
        // leaves KVM_EXIT_MEMORY_FAULT and its page in the vCPU's kvm_run as there, even when
        // the ioctl then answers 0 for the pages mapped before it.
        let b = match faultin_as(vm, gfn, false, None) {
            Ok(b) => b,
            Err(FaultinErr::MemoryFault { errno, private }) => {
                crate::memfault::prepare_exit(RunPage(vcpu.run_page()), gfn, private);
                return Err(errno);
            }
            Err(FaultinErr::Errno(e)) => return Err(e),
        };
        vm.mmu()
            .topup_vcpu_caches(caches)
            .map_err(|_| Errno::ENOMEM)?;
        let fault = Fault {
            gfn,
            kind: b.kind,
            pfn: b.pfn,
            access: b.access,
            write: false,
            max_level: b.max_level,
        };
        let r = match vm.mmu() {
            VmMmu::Plain(m) => map_locked(m, vm, caches, &fault, &b.log, seq),
            VmMmu::Td(td) => match td.mmu() {
                Some(m) => map_locked(m, vm, caches, &fault, &b.log, seq),
                None => Err(MmuError::Bugged),
            },
        };
        drop(b);
        match r {
            Ok(Some(level)) => return Ok(level),
            Ok(None) => {
                // An invalidation is running or a racing fault won: let it finish.
                // SAFETY: may sleep; only the vCPU mutex is held, which allows it.
                unsafe { glue::tdxkvm_cond_resched() };
                continue;
            }
            Err(e) => return Err(mmu_errno(e)),
        }
    }
}

/// `KVM_PRE_FAULT_MEMORY` on `vcpu`.
pub(crate) fn pre_fault_memory(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let size = core::mem::size_of::<KvmPreFaultMemory>();
    let mut u: KvmPreFaultMemory = UserSlice::new(arg, size).reader().read()?;
    let mut range = PreFaultRange {
        gpa: u.gpa,
        size: u.size,
        flags: u.flags,
    };
    vcpu.stats.pre_fault_calls.fetch_add(1, Ordering::Relaxed);
    let r = memcore::prefault::check(&range).and_then(|()| {
        // HOOK(entry): killable as upstream's kvm_vcpu_ioctl.
        let mut l = vcpu.lock_killable().map_err(|_| memcore::Errno::EINTR)?;
        let full = range.size;
        let r = memcore::prefault::run(
            &mut range,
            || kernel::current!().signal_pending(),
            |gpa| map_one(vcpu, &mut l.caches, gpa),
        );
        vcpu.stats
            .pre_fault_pages
            .fetch_add((full - range.size) >> 12, Ordering::Relaxed);
        r
    });
    // The leftover range goes back whatever happened.
    u.gpa = range.gpa;
    u.size = range.size;
    UserSlice::new(arg, size).writer().write(&u)?;
    r.map(|()| 0).map_err(crate::memslot::err)
}
