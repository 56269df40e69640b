// SPDX-License-Identifier: GPL-2.0-only
//! The fault path (upstream `kvm_tdp_mmu_map()` and `tdp_mmu_map_handle_target_level()`).
//!
//! Runs under the shared side of the MMU lock, in parallel with other faults. This file decides
//! what each entry on the path becomes; the transition layer ([`super::transition`]) makes every
//! change as a compare-exchange on one entry (for the mirror: freeze → external hook → publish)
//! and accounts it. A lost race, a frozen entry or a busy external table makes the fault return
//! [`FaultOutcome::Retry`] with nothing half-done, and the vCPU simply faults again.
//!
//! The mirror root never replaces a present entry under the shared lock (that would need the
//! S-EPT's BLOCK/TRACK/REMOVE, which require the exclusive lock): a huge fault over an existing
//! mirror table maps at a smaller level instead, and a different PFN under a mapped private GFN
//! is a [`MmuError::Conflict`]. The shared root does what upstream does: a huge page replaces a
//! table (whose subtree is freed once no walker can be in it), and a huge leaf is split.

use super::transition::NewSpte;
use super::{root_kind_of, TdpMmu};
use crate::addr::{Gfn, GfnKind, Pfn};
use crate::cache::VcpuMmuCaches;
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::ExternalPageTable;
use crate::iter::TdpIter;
use crate::level::Level;
use crate::lock::MmuLockHeld;
use crate::page::{MmuPage, RootKind};
use crate::spte::{is_external_blocked, Access, LeafAttrs, LeafInfo, PagingFormat, SpteKind};

/// A guest page fault to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The memslot GFN (shared bit stripped).
    pub gfn: Gfn,
    /// Private (mirror root) or shared (shared root).
    pub kind: GfnKind,
    /// The host frame backing `gfn`.
    pub pfn: Pfn,
    /// Access rights to map with. Private memory is always mapped RWX.
    pub access: Access,
    /// Whether the fault was a write (sets the dirty bit).
    pub write: bool,
    /// Largest level the host backing allows (KVM's `max_level` after the host-mapping check).
    pub max_level: Level,
}

/// How a fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A new leaf at this level maps the GFN.
    Mapped(Level),
    /// The GFN was already mapped as asked (another vCPU won the race, or a stale fault).
    Spurious,
    /// Lost a race or the external table was busy: nothing changed, fault again.
    Retry,
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    /// Maps one guest fault.
    ///
    /// The caller topped `caches` up with [`TdpMmu::topup_vcpu_caches`] before taking the lock.
    ///
    /// Locking: shared or exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// - [`MmuError::WrongLock`], [`MmuError::Bugged`];
    /// - [`MmuError::NoPrivateRoot`]: a private fault on a VM without private memory;
    /// - [`MmuError::GfnOutOfRange`]: `gfn` beyond the guest-physical address width;
    /// - [`MmuError::NoMemory`]: the caches were not topped up (nothing changed);
    /// - [`MmuError::Conflict`]: a different PFN is already mapped at this private GFN.
    pub fn map(
        &self,
        guard: &impl MmuLockHeld,
        caches: &mut VcpuMmuCaches,
        fault: &Fault,
    ) -> Result<FaultOutcome, MmuError> {
        self.check_guard(guard)?;
        if fault.gfn.raw() >= self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let root_kind = root_kind_of(fault.kind);
        let root = self.root(root_kind)?;
        // Refuse up front rather than half-way: a fault must either change nothing or finish.
        if !caches.ready_for(
            self.config.tables_per_fault(),
            root_kind == RootKind::Mirror,
        ) {
            return Err(MmuError::NoMemory);
        }
        let mut goal = self.goal_level(fault);
        let gfn = self.root_gfn(root_kind, fault.gfn);
        let mut it = self.iter(root.get(), gfn, gfn.add(1));

        while it.valid() {
            let level = it.level();
            let kind = it.kind();
            // A frozen entry is being changed by another walker; a blocked one waits for the
            // zap that blocked it to finish removing it. Either way: fault again later.
            if kind == SpteKind::Frozen || is_external_blocked(it.old_spte()) {
                return Ok(FaultOutcome::Retry);
            }
            if level == goal {
                if let (RootKind::Mirror, SpteKind::Table(_), Some(down)) =
                    (root_kind, kind, level.down())
                {
                    // Never replace a mirror table under the shared lock: map smaller instead.
                    goal = down;
                    it.next();
                    continue;
                }
                return self.map_target_level(&mut it, root_kind, fault, goal);
            }
            match kind {
                SpteKind::Table(_) => it.next(),
                SpteKind::Absent => {
                    if !self.link_new_table(&mut it, root_kind, caches)? {
                        return Ok(FaultOutcome::Retry);
                    }
                    it.next();
                }
                SpteKind::Leaf(leaf) => match root_kind {
                    RootKind::Mirror => return self.mirror_huge_leaf_covers(&it, fault, leaf),
                    RootKind::Shared => {
                        // Make room for a table (upstream `tdp_mmu_zap_spte_atomic`).
                        if !self.zap_spte_atomic(&mut it)? {
                            return Ok(FaultOutcome::Retry);
                        }
                    }
                },
                SpteKind::Frozen => return Ok(FaultOutcome::Retry),
            }
        }
        // The walk ended above the goal level: an entry on the path changed under us between
        // reading it and stepping down (e.g. a huge page replaced the table), so the iterator
        // moved past the GFN. Upstream retries the fault in this case too. Or the walk met a
        // table entry naming a page that cannot be mapped: the VM is bugged.
        it.check()?;
        Ok(FaultOutcome::Retry)
    }

    /// The largest level ≤ `fault.max_level` (and the MMU's limit) at which `gfn` and `pfn` are
    /// equally aligned, so one leaf can map both.
    fn goal_level(&self, fault: &Fault) -> Level {
        let mut goal = fault.max_level.min(self.config.max_level);
        while let Some(down) = goal.down() {
            let pages = goal.pages();
            if fault.gfn.offset_in(pages) == fault.pfn.offset_in(pages) {
                break;
            }
            goal = down;
        }
        goal
    }

    fn leaf_spte(&self, root_kind: RootKind, fault: &Fault, level: Level) -> (NewSpte, Pfn) {
        let pfn = fault.pfn.align_down(level.pages());
        let (access, mirror) = match root_kind {
            RootKind::Mirror => (Access::RWX, true),
            RootKind::Shared => (fault.access, false),
        };
        let attrs = LeafAttrs {
            accessed: true,
            dirty: fault.write && access.contains(Access::WRITE),
            mirror,
        };
        (NewSpte::leaf::<F>(pfn, level, access, attrs), pfn)
    }

    fn map_target_level(
        &self,
        it: &mut TdpIter<'_, F, E>,
        root_kind: RootKind,
        fault: &Fault,
        level: Level,
    ) -> Result<FaultOutcome, MmuError> {
        let (new, pfn) = self.leaf_spte(root_kind, fault, level);
        match (root_kind, it.kind()) {
            (_, SpteKind::Frozen) => return Ok(FaultOutcome::Retry),
            (RootKind::Mirror, SpteKind::Leaf(leaf)) if leaf.pfn == pfn => {
                return Ok(FaultOutcome::Spurious)
            }
            // Replacing a present mirror entry needs the exclusive lock (a zap first).
            (RootKind::Mirror, SpteKind::Leaf(_) | SpteKind::Table(_)) => {
                return Err(MmuError::Conflict)
            }
            (RootKind::Shared, _) if it.old_spte() == new.spte() => {
                return Ok(FaultOutcome::Spurious)
            }
            // Mirror: absent → leaf. Shared: anything → leaf; a replaced leaf or table is
            // accounted, flushed and (a table) torn down by the transition layer.
            _ => {}
        }
        if self.set_spte_atomic(it, new)? {
            Ok(FaultOutcome::Mapped(level))
        } else {
            Ok(FaultOutcome::Retry)
        }
    }

    /// A huge mirror leaf above the goal level already covers the GFN.
    fn mirror_huge_leaf_covers(
        &self,
        it: &TdpIter<'_, F, E>,
        fault: &Fault,
        leaf: LeafInfo,
    ) -> Result<FaultOutcome, MmuError> {
        let expected = leaf.pfn.add(fault.gfn.raw() - it.gfn().raw());
        if expected == fault.pfn {
            Ok(FaultOutcome::Spurious)
        } else {
            Err(MmuError::Conflict)
        }
    }

    /// Installs a new table in the absent entry at the iterator. Returns `false` if another
    /// walker changed the entry first or the external table was busy (the bundle goes back to
    /// the caches either way).
    fn link_new_table(
        &self,
        it: &mut TdpIter<'_, F, E>,
        root_kind: RootKind,
        caches: &mut VcpuMmuCaches,
    ) -> Result<bool, MmuError> {
        let Some(child_level) = it.level().down() else {
            return Err(self.bug());
        };
        let mirror = root_kind == RootKind::Mirror;
        let new = caches.take_table(mirror).ok_or(MmuError::NoMemory)?;
        let page = match MmuPage::install_child(&self.env, new, child_level, root_kind, it.gfn()) {
            Ok(page) => page,
            Err(new) => {
                caches.put_back(&self.env, new);
                return Err(self.bug());
            }
        };
        let new_spte = NewSpte::table::<F>(page);
        match self.set_spte_atomic(it, new_spte) {
            Ok(true) => Ok(true),
            // Linked, but a consequence of the change broke an invariant: the page is in the
            // table now, so it is not ours to take back.
            Err(e) if it.old_spte() == new_spte.spte() => Err(e),
            r => {
                // SAFETY: the entry never held `new_spte` (`it.old_spte()` would be `new_spte`
                // after a successful change), so the page was never published.
                let new = unsafe { MmuPage::uninstall_unused(&self.env, page) };
                caches.put_back(&self.env, new);
                r
            }
        }
    }
}
