// SPDX-License-Identifier: GPL-2.0-only
//! The one place where an entry changes (upstream `handle_changed_spte()` with its callers
//! `tdp_mmu_set_spte_atomic()`, `tdp_mmu_zap_spte_atomic()`, `tdp_mmu_set_spte()` and
//! `handle_removed_pt()`, and the TDX hooks `set_external_spte_present()` /
//! `remove_external_spte()`).
//!
//! The fault and zap code decide *what* an entry of either root becomes; this module makes the
//! change and does everything that follows from it:
//! - the store, compare-exchange or freeze of the entry itself (nothing else in the crate holds
//!   a writable entry: [`Table`](crate::env::Table) and the iterator hand them out crate-private
//!   only, and only this module asks);
//! - the [`ExternalPageTable`] hooks of the mirror root, in the order the TDX module needs;
//! - page accounting ([`MmuStats`](crate::stats::MmuStats)) and a zap's figures ([`ZapStats`]);
//! - what becomes of a table no entry links any more: parked under the shared lock, freed under
//!   the exclusive one, its external SPT given back or leaked and counted;
//! - TLB flushes of the shared root (the mirror root's are the external side's `flush`).
//!
//! Dirty logging's write-protection is here too ([`TdpMmu::write_protect_spte`], upstream
//! `tdp_mmu_clear_spte_bits()` of the writable bit); the dirty *bitmap* is the caller's (the
//! module marks a GFN when it maps a writable leaf of a logged slot, as upstream's
//! `make_spte()` calls `mark_page_dirty_in_slot()`). Accessed tracking does not exist yet.
//!
//! `mmu/tests/transition_layer.rs` checks that no other file of the crate writes an entry,
//! updates the accounting or calls a hook (`scripts/check-transition-layer.sh` prints the
//! counts).
//!
//! Entry points, by lock mode:
//! - shared (faults): [`TdpMmu::set_spte_atomic`] (compare-exchange; mirror: freeze → hook →
//!   publish) and [`TdpMmu::zap_spte_atomic`] (freeze, flush, clear a huge shared leaf);
//! - exclusive (zaps, teardown): [`TdpMmu::block_external_spte`] and
//!   [`TdpMmu::flush_external`] (the mirror rounds' first two steps),
//!   [`TdpMmu::split_external_spte`] (a huge mirror leaf becomes a table), [`TdpMmu::zap_spte`] (an
//!   entry becomes non-present, with its subtree), [`TdpMmu::write_protect_spte`] (a shared
//!   leaf loses its writable bit, dirty logging), [`TdpMmu::flush_shared_tlbs`];
//! - pages no entry links: [`TdpMmu::alloc_root`], [`TdpMmu::free_deferred`],
//!   [`TdpMmu::teardown_root`].

use super::{TdpMmu, ZapStats, TEARDOWN_BUSY_RETRIES};
use crate::addr::{Gfn, Pfn};
use crate::cache::SplitCache;
use crate::env::{MmuEnv, PageKind};
use crate::error::MmuError;
use crate::external::{ExternalError, ExternalPageTable, PageRelease};
use crate::iter::TdpIter;
use crate::level::{Level, ENTRIES_PER_TABLE};
use crate::page::{MmuPage, PageRef, RootKind, SptRelease};
use crate::spte::{
    is_external_blocked, Access, LeafAttrs, PagingFormat, SpteKind, FROZEN_SPTE,
    SPTE_EXTERNAL_BLOCKED,
};
use core::sync::atomic::{AtomicU64, Ordering};

/// How an entry is removed under the exclusive lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Removal {
    /// A zap while the VM lives: a busy hook stops it and goes back to the caller, and a mirror
    /// table must already be empty (its children went in the zap's earlier rounds).
    Zap,
    /// Teardown: nothing else runs. Busy hooks are retried a bounded number of times, then the
    /// page is leaked and counted; a mirror table's children are removed first, post-order.
    Teardown,
}

/// One entry about to change and what its consequences depend on (what upstream passes to
/// `handle_changed_spte()`): where it is and what it held.
struct Spte<'a> {
    sptep: &'a AtomicU64,
    old: u64,
    gfn: Gfn,
    level: Level,
    root: RootKind,
}

impl<'a> Spte<'a> {
    /// The iterator's current entry, with the value the iterator last read.
    #[inline]
    fn at<F: PagingFormat, E: MmuEnv>(it: &TdpIter<'a, F, E>) -> Self {
        Spte {
            sptep: it.sptep(),
            old: it.old_spte(),
            gfn: it.gfn(),
            level: it.level(),
            root: it.root_kind(),
        }
    }

    /// Entry `index` of `page`'s table, read now.
    #[inline]
    fn in_table(page: &'a MmuPage, index: usize) -> Self {
        let table = page.table();
        let level = page.role().level;
        Spte {
            sptep: table.entry(index),
            old: table.load(index),
            gfn: page.gfn().add(index as u64 * level.pages()),
            level,
            root: page.role().root_kind,
        }
    }

    /// Stores `new` (exclusive lock, or an entry frozen by the caller).
    #[inline]
    fn write(&self, new: u64) {
        self.sptep.store(new, Ordering::Release);
    }

    /// Replaces the value read with `new` unless another walker changed the entry first.
    #[inline]
    fn try_write(&self, new: u64) -> bool {
        self.sptep
            .compare_exchange(self.old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What an entry becomes under the shared lock: the value to install and what it is.
///
/// Built only by [`NewSpte::leaf`] and [`NewSpte::table`], so the layer knows whether it
/// installs a leaf or a table without decoding the value it was just handed, and a new table's
/// header comes with it instead of being looked up again through `page->private`.
#[derive(Clone, Copy, Debug)]
pub(super) struct NewSpte {
    spte: u64,
    kind: NewKind,
}

/// What a new present entry is (a [`SpteKind`] restricted to what the fault path installs);
/// for the mirror root, also which hook tells the external side.
#[derive(Clone, Copy, Debug)]
enum NewKind {
    /// A leaf: `set_spte`.
    Leaf,
    /// A link to this new table: `link_spt` with its external SPT.
    Table(PageRef),
}

/// What a mirror entry becomes present as, i.e. which hook tells the external side.
enum Present {
    /// A new table: `link_spt` with its external SPT.
    Link(PageRef),
    /// A leaf: `set_spte` with its frame.
    Leaf(Pfn),
}

impl NewSpte {
    /// A leaf at `level` mapping `pfn` (aligned to `level`) with `access` and `attrs`.
    #[inline]
    pub(super) fn leaf<F: PagingFormat>(
        pfn: Pfn,
        level: Level,
        access: Access,
        attrs: LeafAttrs,
    ) -> Self {
        NewSpte {
            spte: F::leaf(pfn, level, access, attrs),
            kind: NewKind::Leaf,
        }
    }

    /// A non-leaf entry linking the new table `page`.
    #[inline]
    pub(super) fn table<F: PagingFormat>(page: PageRef) -> Self {
        NewSpte {
            spte: F::table(page.get().pfn()),
            kind: NewKind::Table(page),
        }
    }

    /// The raw value.
    #[inline]
    pub(super) fn spte(&self) -> u64 {
        self.spte
    }
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    // ---- Shared lock: faults -------------------------------------------------------------

    /// Changes the entry at `it` from the value the iterator last read to `new`, under the
    /// shared lock (upstream `tdp_mmu_set_spte_atomic()`), then accounts the change and deals
    /// with what it replaced. A mirror entry goes freeze → external hook → publish (upstream
    /// `set_external_spte_present()`), and only an absent one may be changed this way: replacing
    /// a present mirror entry needs BLOCK/TRACK/REMOVE, i.e. the exclusive lock.
    ///
    /// Returns `Ok(false)` if nothing changed because another walker changed the entry first or
    /// the external table was busy: the fault is retried.
    ///
    /// # Errors
    ///
    /// [`MmuError::Bugged`]. If the entry was changed and only its consequences failed (a
    /// replaced table without a header), `it.old_spte()` is `new`; otherwise nothing changed.
    #[inline(always)]
    pub(super) fn set_spte_atomic(
        &self,
        it: &mut TdpIter<'_, F, E>,
        new: NewSpte,
    ) -> Result<bool, MmuError> {
        let e = Spte::at(it);
        let old_kind = F::decode(e.old, e.level);
        if old_kind == SpteKind::Frozen {
            // Another walker is in the middle of changing it: never build on that.
            return Ok(false);
        }
        let won = match e.root {
            RootKind::Mirror => self.set_external_spte_present(&e, old_kind, new)?,
            RootKind::Shared => e.try_write(new.spte),
        };
        if !won {
            return Ok(false);
        }
        it.set_old_spte(new.spte);
        self.handle_changed_spte_atomic(&e, old_kind, new.spte, new.kind)
            .map(|()| true)
    }

    /// Freeze → hook → publish for an absent mirror entry becoming a table or a leaf.
    /// `Ok(false)`: lost the race to freeze, or the hook was busy (the old value is back).
    #[inline(always)]
    fn set_external_spte_present(
        &self,
        e: &Spte<'_>,
        old_kind: SpteKind,
        new: NewSpte,
    ) -> Result<bool, MmuError> {
        if old_kind != SpteKind::Absent {
            return Err(self.bug());
        }
        // Resolve the hook's argument before freezing, so that a broken invariant leaves the
        // entry untouched.
        let hook = match new.kind {
            NewKind::Table(page) => Present::Link(page),
            // The frame as the entry encodes it: the external table maps what the mirror does.
            NewKind::Leaf => match F::decode(new.spte, e.level) {
                SpteKind::Leaf(leaf) => Present::Leaf(leaf.pfn),
                SpteKind::Absent | SpteKind::Frozen | SpteKind::Table(_) => return Err(self.bug()),
            },
        };
        if !e.try_write(FROZEN_SPTE) {
            return Ok(false);
        }
        let r = match hook {
            Present::Link(page) => match page.get().external_spt() {
                Some(spt) => self.ext.link_spt(e.gfn, e.level, spt),
                // A non-root mirror page always has one (page.rs invariant).
                None => Err(ExternalError::Fatal),
            },
            Present::Leaf(pfn) => self.ext.set_spte(e.gfn, e.level, pfn),
        };
        match r {
            Ok(()) => {
                e.write(new.spte);
                Ok(true)
            }
            Err(err) => {
                e.write(e.old);
                match err {
                    ExternalError::Busy => Ok(false),
                    ExternalError::Fatal => Err(self.bug()),
                }
            }
        }
    }

    /// The consequences of a change made under the shared lock: accounting of what appeared and
    /// disappeared, teardown of a replaced table's subtree, and the TLB flush a replaced
    /// present entry needs.
    #[inline(always)]
    fn handle_changed_spte_atomic(
        &self,
        e: &Spte<'_>,
        old_kind: SpteKind,
        new_spte: u64,
        new_kind: NewKind,
    ) -> Result<(), MmuError> {
        match new_kind {
            NewKind::Leaf => self.stats.leaf(e.root, e.level, 1),
            NewKind::Table(_) => {
                self.stats.table(e.root, 1);
                if e.root == RootKind::Mirror {
                    self.stats.external_spt(1);
                }
            }
        }
        match old_kind {
            SpteKind::Absent | SpteKind::Frozen => Ok(()),
            SpteKind::Leaf(_) | SpteKind::Table(_) => {
                self.handle_replaced_spte_atomic(e, old_kind, new_spte)
            }
        }
    }

    /// A present shared entry was replaced (a huge page over a leaf or a table): account what
    /// went, tear a table's subtree down, flush. Out of line: the common fault fills an absent
    /// entry.
    #[inline(never)]
    fn handle_replaced_spte_atomic(
        &self,
        e: &Spte<'_>,
        old_kind: SpteKind,
        new_spte: u64,
    ) -> Result<(), MmuError> {
        match old_kind {
            SpteKind::Leaf(old) => {
                self.stats.leaf(e.root, e.level, -1);
                // A leaf that keeps its frame and loses no access right needs no flush: a
                // stale TLB entry only grants less, and the guest's access that faults on it
                // refetches the new entry (upstream tdp_mmu_map_handle_target_level flushes
                // only a replaced table). This is the dirty-logging write fault on a
                // write-protected page, one per logged page and pass: an IPI to every running
                // vCPU each time would cost more than the fault.
                let keeps = match F::decode(new_spte, e.level) {
                    SpteKind::Leaf(new) => new.pfn == old.pfn && new.access.contains(old.access),
                    _ => false,
                };
                if !keeps {
                    self.flush_shared_tlbs(e.gfn, e.level.pages());
                }
            }
            SpteKind::Table(child) => {
                // A huge page replaces a whole table: its subtree is now unreachable.
                self.handle_removed_table_atomic(child)?;
                self.flush_shared_tlbs(e.gfn, e.level.pages());
            }
            SpteKind::Absent | SpteKind::Frozen => {}
        }
        Ok(())
    }

    /// Removes a huge shared leaf under the shared lock so a table can take its place (upstream
    /// `tdp_mmu_zap_spte_atomic()`): freeze, flush, clear. Returns `Ok(false)` on a lost race.
    ///
    /// # Errors
    ///
    /// [`MmuError::Bugged`] if the entry is not a shared leaf (nothing changed).
    pub(super) fn zap_spte_atomic(&self, it: &mut TdpIter<'_, F, E>) -> Result<bool, MmuError> {
        let e = Spte::at(it);
        if e.root != RootKind::Shared || !matches!(F::decode(e.old, e.level), SpteKind::Leaf(_)) {
            return Err(self.bug());
        }
        if !e.try_write(FROZEN_SPTE) {
            return Ok(false);
        }
        // Flush before the entry can be reused: no vCPU may keep the huge translation.
        self.flush_shared_tlbs(e.gfn, e.level.pages());
        e.write(0);
        it.set_old_spte(0);
        self.stats.leaf(e.root, e.level, -1);
        Ok(true)
    }

    /// Tears down a shared-root table that was just unlinked under the shared lock (upstream
    /// `handle_removed_pt()`): freezes every entry so late walkers inside it back off, accounts
    /// what it mapped, recurses into child tables, and parks the pages for freeing.
    fn handle_removed_table_atomic(&self, table_pfn: Pfn) -> Result<(), MmuError> {
        // The table was reachable until our compare-exchange; the lock is held, and the page is
        // only freed after it is parked and the exclusive side is taken.
        let page = self.page_of(table_pfn)?;
        let role = page.get().role();
        for i in 0..ENTRIES_PER_TABLE {
            let entry = page.get().table().entry(i);
            // A frozen entry belongs to a walker in the middle of a change: wait for it to
            // publish, then freeze over the result so it cannot build on this dead table.
            let old = loop {
                let old = entry.swap(FROZEN_SPTE, Ordering::AcqRel);
                if old != FROZEN_SPTE {
                    break old;
                }
                core::hint::spin_loop();
            };
            match F::decode(old, role.level) {
                SpteKind::Leaf(_) => self.stats.leaf(role.root_kind, role.level, -1),
                SpteKind::Table(child) => self.handle_removed_table_atomic(child)?,
                SpteKind::Absent | SpteKind::Frozen => {}
            }
        }
        self.stats.deferred(1);
        self.deferred.push(page);
        Ok(())
    }

    // ---- Exclusive lock: zaps and teardown -----------------------------------------------

    /// A mirror zap round's first step for the entry at `it`: blocks it in the external table
    /// (`TDH.MEM.RANGE.BLOCK`) unless an earlier, unfinished zap already did, and marks it
    /// blocked in the mirror.
    ///
    /// # Errors
    ///
    /// [`MmuError::ExternalBusy`] (nothing changed), [`MmuError::Bugged`].
    pub(super) fn block_external_spte(
        &self,
        it: &mut TdpIter<'_, F, E>,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let e = Spte::at(it);
        let is_leaf = match (e.root, F::decode(e.old, e.level)) {
            (RootKind::Mirror, SpteKind::Leaf(_)) => true,
            (RootKind::Mirror, SpteKind::Table(_)) => false,
            _ => return Err(self.bug()),
        };
        if is_external_blocked(e.old) {
            return Ok(());
        }
        self.ext_result(self.ext.block_spte(e.gfn, e.level, is_leaf))?;
        zs.blocked += 1;
        let new = e.old | SPTE_EXTERNAL_BLOCKED;
        e.write(new);
        it.set_old_spte(new);
        Ok(())
    }

    /// Splits the blocked huge mirror leaf at `it` (the split round of
    /// [`TdpMmu::zap_range_split`], after its blocks and flush): a new table from `cache`, filled
    /// with 512 leaves one level down mapping the same frames with the same access and
    /// accessed/dirty bits, not blocked (`TDH.MEM.PAGE.DEMOTE` unblocks them), goes to the
    /// external side (`split_spte`) and then replaces the leaf.
    ///
    /// # Errors
    ///
    /// [`MmuError::ExternalBusy`] (nothing changed: the leaf stays blocked, the bundle goes back
    /// to `cache`), [`MmuError::NoMemory`] (`cache` is empty; nothing changed),
    /// [`MmuError::Bugged`].
    pub(super) fn split_external_spte(
        &self,
        it: &mut TdpIter<'_, F, E>,
        cache: &mut SplitCache,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let e = Spte::at(it);
        let (leaf, child_level) = match (e.root, F::decode(e.old, e.level), e.level.down()) {
            (RootKind::Mirror, SpteKind::Leaf(leaf), Some(down))
                if e.level.is_huge() && is_external_blocked(e.old) =>
            {
                (leaf, down)
            }
            _ => return Err(self.bug()),
        };
        let new = cache.take_table().ok_or(MmuError::NoMemory)?;
        let page = match MmuPage::install_child(&self.env, new, child_level, e.root, e.gfn) {
            Ok(page) => page,
            Err(new) => {
                cache.put_back(&self.env, new);
                return Err(self.bug());
            }
        };
        let attrs = LeafAttrs {
            accessed: leaf.accessed,
            dirty: leaf.dirty,
            mirror: true,
        };
        let table = page.get().table();
        for i in 0..ENTRIES_PER_TABLE {
            let pfn = leaf.pfn.add(i as u64 * child_level.pages());
            let child = F::leaf(pfn, child_level, leaf.access, attrs);
            // Not published yet: nobody else can see the table.
            table.entry(i).store(child, Ordering::Relaxed);
        }
        let r = match page.get().external_spt() {
            Some(spt) => self.ext.split_spte(e.gfn, e.level, leaf.pfn, spt),
            // A non-root mirror page always has one (page.rs invariant).
            None => Err(ExternalError::Fatal),
        };
        if let Err(err) = r {
            // Table pages are handed out empty: clear what was written before it goes back.
            for i in 0..ENTRIES_PER_TABLE {
                table.entry(i).store(0, Ordering::Relaxed);
            }
            // SAFETY: the table was never linked, so no other thread can have seen the page.
            let new = unsafe { MmuPage::uninstall_unused(&self.env, page) };
            cache.put_back(&self.env, new);
            return Err(self.ext_error(err));
        }
        let new = F::table(page.get().pfn());
        e.write(new);
        it.set_old_spte(new);
        self.stats.leaf_count(RootKind::Mirror, e.level, -1);
        self.stats
            .leaf_count(RootKind::Mirror, child_level, ENTRIES_PER_TABLE as isize);
        self.stats.table(RootKind::Mirror, 1);
        self.stats.external_spt(1);
        zs.splits += 1;
        Ok(())
    }

    /// A mirror zap round's second step, once per round after its blocks: the external side
    /// makes every vCPU drop the blocked translations (`TDH.MEM.TRACK` and a kick).
    ///
    /// # Errors
    ///
    /// [`MmuError::ExternalBusy`], [`MmuError::Bugged`].
    pub(super) fn flush_external(&self, zs: &mut ZapStats) -> Result<(), MmuError> {
        self.ext_result(self.ext.flush())?;
        zs.flushes += 1;
        Ok(())
    }

    /// Makes the entry at `it` non-present under the exclusive lock (upstream
    /// `tdp_mmu_set_spte(..., 0)`), with the consequences: the external removal of a mirror
    /// leaf or table, the freeing of a table's subtree, the accounting. A shared zap flushes
    /// TLBs once for its range afterwards ([`TdpMmu::flush_shared_tlbs`]).
    ///
    /// # Errors
    ///
    /// [`MmuError::ExternalBusy`] (the entry is still present), [`MmuError::Bugged`].
    #[inline(always)]
    pub(super) fn zap_spte(
        &self,
        it: &mut TdpIter<'_, F, E>,
        removal: Removal,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        self.remove_spte(Spte::at(it), removal, zs)?;
        it.set_old_spte(0);
        Ok(())
    }

    /// Write-protects the shared 4 KiB leaf at `it` under the exclusive lock (upstream
    /// `tdp_mmu_clear_spte_bits(..., PT_WRITABLE_MASK)` in `wrprot_gfn_range()` and
    /// `clear_dirty_pt_masked()`): only the writable bit goes, and atomically, because the CPU
    /// sets accessed and dirty bits of a live entry whatever lock KVM holds, and a plain store
    /// of the value read could undo them. The frame, the access bits and the accounting stay;
    /// the next guest write faults and maps writable again (and marks the page dirty). The
    /// caller flushes the TLBs once for its range ([`TdpMmu::flush_shared_tlbs`]) before it
    /// drops the lock. Returns whether the leaf was writable.
    ///
    /// # Errors
    ///
    /// [`MmuError::Bugged`] if the entry is not a shared 4 KiB leaf (nothing changed): a huge
    /// leaf of a logged slot is zapped instead (dirty logging works at 4 KiB, see
    /// `tdp/wrprot.rs`), and the mirror root's private memory is never logged.
    pub(super) fn write_protect_spte(&self, it: &mut TdpIter<'_, F, E>) -> Result<bool, MmuError> {
        let e = Spte::at(it);
        match (e.root, F::decode(e.old, e.level)) {
            (RootKind::Shared, SpteKind::Leaf(_)) if !e.level.is_huge() => {}
            _ => return Err(self.bug()),
        }
        if e.old & F::WRITABLE_MASK == 0 {
            return Ok(false);
        }
        let old = e.sptep.fetch_and(!F::WRITABLE_MASK, Ordering::AcqRel);
        it.set_old_spte(old & !F::WRITABLE_MASK);
        Ok(old & F::WRITABLE_MASK != 0)
    }

    /// A shared leaf write-protected for dirty logging becomes writable again under the shared
    /// lock (upstream `fast_pf_fix_direct_spte()`): one compare-exchange from the value the
    /// iterator read to `new`, which must be that value plus the writable bit. The frame, the
    /// level and the accounting stay, so nothing follows from the change, not even a TLB
    /// flush (the leaf grants more than before). Returns `Ok(false)` if another walker changed
    /// the entry first; the iterator then holds the entry's current value.
    ///
    /// # Errors
    ///
    /// [`MmuError::Bugged`] (nothing changed) if the entry is not a present shared leaf that
    /// is MMU-writable but not writable, or `new` is anything else than it made writable.
    pub(super) fn fast_fix_spte(
        &self,
        it: &mut TdpIter<'_, F, E>,
        new: u64,
    ) -> Result<bool, MmuError> {
        let e = Spte::at(it);
        let fixable = e.root == RootKind::Shared
            && matches!(F::decode(e.old, e.level), SpteKind::Leaf(_))
            && crate::spte::is_fast_fixable_write::<F>(e.old)
            && new == e.old | F::WRITABLE_MASK;
        if !fixable {
            return Err(self.bug());
        }
        if e.try_write(new) {
            it.set_old_spte(new);
            Ok(true)
        } else {
            it.reread();
            Ok(false)
        }
    }

    /// Flushes guest TLB entries of the shared root for `pages` frames from `start`.
    pub(super) fn flush_shared_tlbs(&self, start: Gfn, pages: u64) {
        self.env.flush_remote_tlbs(start, pages);
    }

    /// An entry becomes non-present under the exclusive lock, and everything that follows
    /// (upstream `handle_changed_spte()` for `old → 0`, with `handle_removed_pt()` and
    /// `remove_external_spte()`). Recurses into a table's entries at teardown and for a shared
    /// table; a zapped mirror table must be empty already.
    #[inline(always)]
    fn remove_spte(
        &self,
        e: Spte<'_>,
        removal: Removal,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let force = removal == Removal::Teardown;
        match (F::decode(e.old, e.level), e.root) {
            (SpteKind::Absent, _) => {}
            (SpteKind::Frozen, _) if force => e.write(0),
            // Under the exclusive lock nobody can be in the middle of a change.
            (SpteKind::Frozen, _) => return Err(self.bug()),
            (SpteKind::Leaf(leaf), RootKind::Mirror) => {
                // The external side first: if it stays busy, the leaf stays mapped in both.
                self.remove_external_spte(e.gfn, e.level, leaf.pfn, force)?;
                e.write(0);
                zs.leaves += 1;
            }
            (SpteKind::Leaf(_), RootKind::Shared) => {
                e.write(0);
                self.stats.leaf(RootKind::Shared, e.level, -1);
                zs.leaves += 1;
            }
            (SpteKind::Table(pfn), _) => self.remove_table_spte(e, pfn, removal, zs)?,
        }
        Ok(())
    }

    /// [`Self::remove_spte`] of an entry linking the table `pfn`: the table goes with its
    /// subtree. Out of line, so the leaf removals of a zap's hot loops stay small.
    #[inline(never)]
    fn remove_table_spte(
        &self,
        e: Spte<'_>,
        pfn: Pfn,
        removal: Removal,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let child = self.page_of(pfn)?;
        match e.root {
            RootKind::Mirror => {
                match removal {
                    Removal::Teardown => self.remove_children(child, removal, zs)?,
                    // The S-EPT removes only empty tables: the zap's earlier rounds emptied it.
                    Removal::Zap if !self.table_is_empty(child) => return Err(self.bug()),
                    Removal::Zap => {}
                }
                self.free_mirror_table(child, e.gfn, e.level, removal == Removal::Teardown)?;
                e.write(0);
            }
            RootKind::Shared => {
                e.write(0);
                self.remove_children(child, removal, zs)?;
                if removal == Removal::Zap {
                    // The CPU walks the shared root (NPT/EPT): a vCPU in guest mode may still
                    // hold paging-structure caches that point into this table until the zap's
                    // TLB flush. Park it; the zap frees it after that flush (upstream frees
                    // removed tables through RCU after kvm_flush_remote_tlbs for the same
                    // reason).
                    self.stats.deferred(1);
                    self.deferred.push(child);
                } else {
                    // SAFETY: unlinked above with `&mut self` (teardown): no vCPU runs and no
                    // walker can reach it, and nobody uses `child` again.
                    unsafe { MmuPage::destroy(&self.env, child, None) };
                    self.stats.table(RootKind::Shared, -1);
                }
            }
        }
        zs.tables += 1;
        Ok(())
    }

    /// Empties an unlinked (or, at teardown, about to be freed) table, entry by entry.
    fn remove_children(
        &self,
        page: PageRef,
        removal: Removal,
        zs: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let page = page.get();
        for i in 0..ENTRIES_PER_TABLE {
            self.remove_spte(Spte::in_table(page, i), removal, zs)?;
        }
        // HOOK(gmemfault): a teardown holds no lock (`&mut self`) and may sleep: reschedule
        // once per table, as upstream's root zap at VM destruction yields.
        if removal == Removal::Teardown {
            self.env.cond_resched();
        }
        Ok(())
    }

    fn table_is_empty(&self, page: PageRef) -> bool {
        let level = page.get().role().level;
        page.get()
            .table()
            .iter()
            .all(|e| F::decode(e, level) == SpteKind::Absent)
    }

    /// The external removal of a mirror leaf (upstream `remove_external_spte()`) and its
    /// accounting; the caller clears the entry.
    fn remove_external_spte(
        &self,
        gfn: Gfn,
        level: Level,
        pfn: Pfn,
        force: bool,
    ) -> Result<(), MmuError> {
        let released = match self.retry_busy(force, || self.ext.remove_spte(gfn, level, pfn)) {
            Ok(r) => r,
            Err(e) if force => {
                if e == ExternalError::Fatal {
                    self.mark_bugged();
                }
                PageRelease::Leaked
            }
            Err(e) => return Err(self.ext_error(e)),
        };
        if released == PageRelease::Leaked {
            self.stats.leaked_private_page();
        }
        self.stats.leaf(RootKind::Mirror, level, -1);
        Ok(())
    }

    /// Frees an emptied mirror table and its external SPT (the hook decides whether the
    /// external page comes back). The caller clears the parent entry.
    fn free_mirror_table(
        &self,
        page: PageRef,
        gfn: Gfn,
        level: Level,
        force: bool,
    ) -> Result<(), MmuError> {
        let release = match page.get().external_spt() {
            Some(spt) => match self.retry_busy(force, || self.ext.free_spt(gfn, level, spt)) {
                Ok(r) => r,
                Err(e) if force => {
                    if e == ExternalError::Fatal {
                        self.mark_bugged();
                    }
                    SptRelease::Leaked
                }
                Err(e) => return Err(self.ext_error(e)),
            },
            // A non-root mirror page always has one (page.rs invariant).
            None => return Err(self.bug()),
        };
        // SAFETY: emptied by the caller, unlinked by the caller's store right after, and only the
        // exclusive holder can walk the mirror root.
        let leaked = unsafe { MmuPage::destroy(&self.env, page, Some(release)) };
        if leaked {
            self.stats.leaked_external_spt();
        }
        self.stats.external_spt(-1);
        self.stats.table(RootKind::Mirror, -1);
        Ok(())
    }

    /// At teardown nothing else runs, so a busy answer is transient contention inside the
    /// external side: retry a bounded number of times before giving the page up as leaked. At
    /// runtime busy goes back to the caller, who drops the lock before trying again.
    fn retry_busy<T>(
        &self,
        force: bool,
        mut f: impl FnMut() -> Result<T, ExternalError>,
    ) -> Result<T, ExternalError> {
        let tries = if force { TEARDOWN_BUSY_RETRIES } else { 1 };
        let mut r = f();
        for _ in 1..tries {
            if !matches!(r, Err(ExternalError::Busy)) {
                break;
            }
            r = f();
        }
        r
    }

    fn ext_error(&self, e: ExternalError) -> MmuError {
        match e {
            ExternalError::Busy => MmuError::ExternalBusy,
            ExternalError::Fatal => self.bug(),
        }
    }

    fn ext_result(&self, r: Result<(), ExternalError>) -> Result<(), MmuError> {
        r.map_err(|e| self.ext_error(e))
    }

    // ---- Pages no entry links: roots and parked tables -----------------------------------

    /// Allocates and accounts a root.
    ///
    /// # Errors
    ///
    /// [`MmuError::NoMemory`] (nothing stays allocated).
    pub(super) fn alloc_root(&self, kind: RootKind, gfn: Gfn) -> Result<PageRef, MmuError> {
        let table = self
            .env
            .alloc_page(PageKind::Table)
            .ok_or(MmuError::NoMemory)?;
        let Some(slot) = self.env.alloc_header() else {
            self.env.free_page(table, PageKind::Table);
            return Err(MmuError::NoMemory);
        };
        let root =
            MmuPage::install_root(&self.env, slot, table, self.config.root_level(), kind, gfn);
        self.stats.table(kind, 1);
        Ok(root)
    }

    /// Frees the tables parked by shared-lock walkers. The caller holds the exclusive side: no
    /// walker can still be inside them.
    pub(super) fn free_deferred(&self) {
        self.deferred.drain(|page| {
            let kind = page.get().role().root_kind;
            // SAFETY: the page was unlinked before it was parked, and with the exclusive side held
            // no walker can still reference it.
            unsafe { MmuPage::destroy(&self.env, page, None) };
            self.stats.table(kind, -1);
            self.stats.deferred(-1);
        });
    }

    /// Empties a root taken out of the MMU, through the hooks in teardown order, and frees it.
    /// Hook failures leak pages (counted) instead of stopping. `&mut self`: nobody else can
    /// hold the MMU.
    pub(super) fn teardown_root(&mut self, root: PageRef) {
        let kind = root.get().role().root_kind;
        // A teardown cannot stop half-way: an error here is a broken invariant, and the VM is
        // bugged already (`bug()` marked it); what could not be reached stays allocated.
        if self
            .remove_children(root, Removal::Teardown, &mut ZapStats::default())
            .is_err()
        {
            debug_assert!(self.is_bugged());
        }
        // SAFETY: the root is no longer reachable (taken out of the MMU), and the caller's
        // `&mut` excludes all walkers. A root never has an external SPT, so there is no release
        // to pass.
        unsafe { MmuPage::destroy(&self.env, root, None) };
        self.stats.table(kind, -1);
    }
}
