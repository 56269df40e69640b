// SPDX-License-Identifier: GPL-2.0-only
//! The fast page fault (upstream 6.12 `fast_page_fault()`, `page_fault_can_be_fast()`,
//! `is_access_allowed()` and `fast_pf_fix_direct_spte()` in arch/x86/kvm/mmu/mmu.c).
//!
//! Dirty logging write-protects a slot's leaves by clearing only their writable bit
//! ([`PagingFormat::WRITABLE_MASK`]); the MMU-writable bit ([`PagingFormat::MMU_WRITABLE_MASK`])
//! stays and says the leaf lost write access for logging alone. The guest's next write to such
//! a page faults; instead of the full path (memslot lookup, GUP of the host page, cache top-up,
//! a new leaf), the fault sets the writable bit again by one compare-exchange of the leaf and
//! the caller marks the page dirty. A fault whose access the leaf already allows (another vCPU
//! fixed it first) is spurious. Everything else takes the full path: an absent or frozen entry,
//! a read-only page, a huge leaf of a logging slot (the log is per 4 KiB page: the full path
//! maps 4 KiB there), a compare-exchange lost more than [`FAST_RETRIES`] times.
//!
//! Only the shared root: the mirror root (TD private memory) never takes this path (upstream
//! `kvm_is_mirror` faults go the slow way; private memory is never logged). The caller leaves
//! private faults of VMs with private memory out entirely (upstream `page_fault_can_be_fast`
//! refuses a fault whose privateness differs from the attribute; a software-protected VM's
//! shared root holds both kinds).
//!
//! No TLB flush: the leaf only gains the writable bit, and a stale read-only TLB entry makes
//! the guest fault again, which is then spurious (upstream flushes only when it removes or
//! downgrades a mapping).
//!
//! Locking: upstream walks under RCU without `mmu_lock`; here the walk holds the shared side of
//! the MMU lock (what proves the tables are not freed under it), like the full fault path, but
//! takes nothing else and allocates nothing.

use super::TdpMmu;
use crate::addr::Gfn;
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::ExternalPageTable;
use crate::level::Level;
use crate::lock::MmuLockHeld;
use crate::page::RootKind;
use crate::spte::{is_fast_fixable_write, PagingFormat, SpteKind};

/// How often a lost compare-exchange is retried before the full path takes over (upstream's
/// `retry_count > 4`).
pub const FAST_RETRIES: usize = 4;

/// The access that faulted (upstream `fault->write`, `fault->exec`; neither: a read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAccess {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Exec,
}

/// How a fast page fault ended (upstream `RET_PF_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastFault {
    /// The leaf already allows the access (`RET_PF_SPURIOUS`): another vCPU fixed it, or the
    /// guest used a stale TLB entry. The guest just retries.
    Spurious,
    /// The write-protected leaf at this level is writable again (`RET_PF_FIXED`): the caller
    /// marks the GFN dirty in its slot's log (upstream `fast_pf_fix_direct_spte` →
    /// `mark_page_dirty_in_slot`).
    Fixed(Level),
    /// Not for the fast path (`RET_PF_INVALID`): take the full fault path.
    Slow,
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    /// Tries to resolve a fault at `gfn` (a memslot GFN of the shared root) without the full
    /// path: see the module docs. `logging`: the GFN's slot logs dirty pages (a huge leaf is
    /// then left to the full path).
    ///
    /// Locking: shared or exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::Bugged`]; [`MmuError::GfnOutOfRange`] if `gfn` is
    /// beyond the address width. Nothing changed then.
    pub fn fast_page_fault(
        &self,
        guard: &impl MmuLockHeld,
        gfn: Gfn,
        access: FaultAccess,
        logging: bool,
    ) -> Result<FastFault, MmuError> {
        self.check_guard(guard)?;
        if gfn.raw() >= self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let root = self.root(RootKind::Shared)?;
        let g = self.root_gfn(RootKind::Shared, gfn);
        let mut it = self.iter(root.get(), g, g.add(1));
        // Down to the last entry on the GFN's path (upstream
        // `kvm_tdp_mmu_fast_pf_get_last_sptep`).
        while it.valid() && matches!(it.kind(), SpteKind::Table(_)) {
            it.next();
        }
        if !it.valid() {
            // The path changed under the walk (or a table could not be mapped: bugged).
            it.check()?;
            return Ok(FastFault::Slow);
        }
        let mut tries = 0;
        loop {
            let old = it.old_spte();
            let SpteKind::Leaf(_) = it.kind() else {
                // Absent, frozen, or a table now (a racing fault changed the entry).
                return Ok(FastFault::Slow);
            };
            if Self::access_allowed(old, it.level(), access) {
                return Ok(FastFault::Spurious);
            }
            // Only a write to a leaf write-protected for dirty logging can be fixed here.
            if access != FaultAccess::Write || !is_fast_fixable_write::<F>(old) {
                return Ok(FastFault::Slow);
            }
            // The log marks only the faulting 4 KiB page: a huge leaf of a logging slot goes
            // the full path, which maps 4 KiB.
            if it.level().is_huge() && logging {
                return Ok(FastFault::Slow);
            }
            let new = old | F::WRITABLE_MASK;
            if !Self::access_allowed(new, it.level(), access) {
                return Ok(FastFault::Slow);
            }
            if self.fast_fix_spte(&mut it, new)? {
                return Ok(FastFault::Fixed(it.level()));
            }
            // Lost the race: `it` holds the entry's new value; look again.
            tries += 1;
            if tries > FAST_RETRIES {
                return Ok(FastFault::Slow);
            }
        }
    }

    /// Whether the leaf `raw` allows `access` (upstream `is_access_allowed`).
    fn access_allowed(raw: u64, level: Level, access: FaultAccess) -> bool {
        let SpteKind::Leaf(leaf) = F::decode(raw, level) else {
            return false;
        };
        match access {
            FaultAccess::Read => true,
            FaultAccess::Write => leaf.access.contains(crate::spte::Access::WRITE),
            FaultAccess::Exec => leaf.access.contains(crate::spte::Access::EXEC),
        }
    }
}
