// SPDX-License-Identifier: GPL-2.0-only
//! Zaps (upstream `tdp_mmu_zap_leafs()`, `handle_removed_pt()` and the TDX removal hooks).
//!
//! A zap of `[start, end)` removes every leaf that overlaps the range and every table whose whole
//! span lies inside it (upstream keeps empty tables until teardown; here the S-EPT pages of a
//! converted range come back at once). A huge leaf that straddles a range boundary is zapped
//! whole, as upstream does: the guest refaults what it still uses. For private memory that
//! would discard data, so callers converting private memory zap huge-aligned ranges (the
//! memory-attribute code never maps a huge page over mixed attributes).
//!
//! Runs under the exclusive lock, so no entry can change under it and nothing needs freezing.
//! The mirror root is zapped in rounds (see [`TdpMmu::zap_range`]): all leaves first (block every
//! one, flush once, remove every one), then the emptied tables level by level from the deepest.
//! A busy hook stops the zap and
//! leaves every entry it did not remove mapped; entries it blocked stay marked
//! [`SPTE_EXTERNAL_BLOCKED`] in the mirror, exactly as they are in the S-EPT, faults on them
//! retry, and the caller must zap the range again (which skips what is already blocked).

use super::TdpMmu;
use crate::addr::Gfn;
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::{ExternalError, ExternalPageTable, PageRelease};
use crate::level::{Level, ENTRIES_PER_TABLE};
use crate::lock::ExclusiveGuard;
use crate::page::{MmuPage, PageRef, RootKind, SptRelease};
use crate::spte::{is_external_blocked, PagingFormat, SpteKind, SPTE_EXTERNAL_BLOCKED};
use core::sync::atomic::{AtomicU64, Ordering};

/// How often teardown retries a busy hook before leaking the page.
pub const TEARDOWN_BUSY_RETRIES: usize = 16;

/// Which roots a zap covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZapTarget {
    /// Only the shared root.
    Shared,
    /// Only the mirror root (private memory).
    Mirror,
    /// Both roots (e.g. a memslot deletion).
    Both,
}

/// What a zap did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZapStats {
    /// Leaves removed.
    pub leaves: usize,
    /// Table pages freed.
    pub tables: usize,
    /// External `block_spte` calls (entries an earlier unfinished zap blocked are not
    /// blocked again).
    pub blocked: usize,
    /// External `flush` calls: one per round that removed something (leaves, then each level of
    /// tables), so at most one plus the number of table levels per zap.
    pub flushes: usize,
}

/// Whether the pass blocks or removes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Block,
    Remove,
}

/// What a round of a mirror zap removes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every leaf overlapping the range.
    Leaves,
    /// Tables wholly inside the range, pointed to by entries at this level.
    Tables(Level),
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    /// Zaps `[start, end)` (memslot GFNs) in the chosen roots.
    ///
    /// Locking: exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// - [`MmuError::WrongLock`], [`MmuError::Bugged`];
    /// - [`MmuError::GfnOutOfRange`]: `start > end` or `end` beyond the address width;
    /// - [`MmuError::NoPrivateRoot`]: [`ZapTarget::Mirror`] on a VM without private memory;
    /// - [`MmuError::ExternalBusy`]: the external table stayed busy; entries not yet removed
    ///   are still mapped (in both tables), zap again.
    pub fn zap_range(
        &self,
        guard: &ExclusiveGuard<'_>,
        target: ZapTarget,
        start: Gfn,
        end: Gfn,
    ) -> Result<ZapStats, MmuError> {
        self.check_guard(guard)?;
        if start > end || end.raw() > self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let mut stats = ZapStats::default();
        if matches!(target, ZapTarget::Shared | ZapTarget::Both) {
            self.zap_shared(start, end, &mut stats)?;
        }
        match (target, self.mirror_root) {
            (ZapTarget::Mirror, None) => return Err(MmuError::NoPrivateRoot),
            (ZapTarget::Mirror | ZapTarget::Both, Some(_)) => {
                self.zap_mirror(start, end, &mut stats)?
            }
            _ => {}
        }
        Ok(stats)
    }

    fn zap_shared(&self, start: Gfn, end: Gfn, stats: &mut ZapStats) -> Result<(), MmuError> {
        let root = self.root(RootKind::Shared)?;
        // The shared half of a TD's space starts at the shared bit; `end` may equal the memslot
        // limit, i.e. the shared bit itself, so offset rather than OR it in.
        let base = self.root_gfn(RootKind::Shared, Gfn::new(0)).raw();
        let (s, e) = (Gfn::new(base + start.raw()), Gfn::new(base + end.raw()));
        let mut it = self.iter(root.get(), s, e);
        let mut changed = false;
        while it.valid() {
            match it.kind() {
                SpteKind::Absent => it.next_sibling(),
                SpteKind::Frozen => return Err(self.bug()),
                SpteKind::Table(_) if !it.entry_within(s, e) => it.next(),
                SpteKind::Table(pfn) => {
                    let page = self.page_of(pfn)?;
                    it.sptep().store(0, Ordering::Release);
                    it.set_old_spte(0);
                    self.free_shared_subtree(page, stats);
                    changed = true;
                    it.next_sibling();
                }
                SpteKind::Leaf(_) => {
                    it.sptep().store(0, Ordering::Release);
                    it.set_old_spte(0);
                    self.stats.leaf(RootKind::Shared, it.level(), -1);
                    stats.leaves += 1;
                    changed = true;
                    it.next_sibling();
                }
            }
        }
        if changed {
            self.env.flush_remote_tlbs(s, e.raw() - s.raw());
        }
        Ok(())
    }

    /// Frees an unlinked shared-root table and everything below it.
    fn free_shared_subtree(&self, page: PageRef, stats: &mut ZapStats) {
        let level = page.get().role().level;
        for entry in page.get().table().0.iter() {
            match F::decode(entry.load(Ordering::Acquire), level) {
                SpteKind::Leaf(_) => {
                    self.stats.leaf(RootKind::Shared, level, -1);
                    stats.leaves += 1;
                }
                SpteKind::Table(pfn) => match self.page_of(pfn) {
                    Ok(child) => self.free_shared_subtree(child, stats),
                    Err(_) => return,
                },
                SpteKind::Absent | SpteKind::Frozen => {}
            }
        }
        // SAFETY: unlinked by the caller under the exclusive lock (or `&mut self`): unreachable.
        unsafe { MmuPage::destroy(&self.env, page, None) };
        self.stats.table(RootKind::Shared, -1);
        stats.tables += 1;
    }

    /// Zaps the mirror in rounds, each one block pass, one flush and one removal pass:
    /// first every leaf overlapping the range, then the tables wholly inside it, one level at
    /// a time from the deepest up. The S-EPT needs the rounds: a walk stops at a blocked
    /// non-leaf entry, so nothing below a table may still need removing when the table's own
    /// entry is blocked, and a table is removed only once it is empty.
    fn zap_mirror(&self, start: Gfn, end: Gfn, stats: &mut ZapStats) -> Result<(), MmuError> {
        self.mirror_round(Round::Leaves, start, end, stats)?;
        let root_level = self.config.root_level();
        let mut level = Level::L2M;
        while level <= root_level {
            self.mirror_round(Round::Tables(level), start, end, stats)?;
            level = match level.up() {
                Some(l) => l,
                None => break,
            };
        }
        Ok(())
    }

    /// One round: block what the round removes, flush once, remove it.
    fn mirror_round(
        &self,
        round: Round,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        if self.mirror_pass(round, Pass::Block, start, end, stats)? == 0 {
            return Ok(());
        }
        // Also after a zap that stopped half-way: its blocks may never have been tracked.
        self.ext_result(self.ext.flush())?;
        stats.flushes += 1;
        self.mirror_pass(round, Pass::Remove, start, end, stats)
            .map(|_| ())
    }

    /// One pass of a round over `[start, end)`. Returns how many entries the round removes.
    fn mirror_pass(
        &self,
        round: Round,
        pass: Pass,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<usize, MmuError> {
        let root = self.root(RootKind::Mirror)?;
        let mut it = self.iter(root.get(), start, end);
        let mut doomed = 0;
        while it.valid() {
            let (gfn, level) = (it.gfn(), it.level());
            match (it.kind(), round) {
                (SpteKind::Absent, _) => it.next_sibling(),
                (SpteKind::Frozen, _) => return Err(self.bug()),
                (SpteKind::Leaf(leaf), Round::Leaves) => {
                    doomed += 1;
                    match pass {
                        Pass::Block => {
                            let raw = self.block_entry(it.sptep(), gfn, level, true, stats)?;
                            it.set_old_spte(raw);
                        }
                        Pass::Remove => {
                            self.remove_mirror_leaf(gfn, level, leaf.pfn, false)?;
                            it.sptep().store(0, Ordering::Release);
                            it.set_old_spte(0);
                            stats.leaves += 1;
                        }
                    }
                    it.next_sibling();
                }
                // Leaves are gone before any table round; one showing up here is a bug.
                (SpteKind::Leaf(_), Round::Tables(_)) => return Err(self.bug()),
                (SpteKind::Table(pfn), Round::Tables(l))
                    if level == l && it.entry_within(start, end) =>
                {
                    let page = self.page_of(pfn)?;
                    doomed += 1;
                    match pass {
                        Pass::Block => {
                            let raw = self.block_entry(it.sptep(), gfn, level, false, stats)?;
                            it.set_old_spte(raw);
                        }
                        Pass::Remove => {
                            if !self.table_is_empty(page) {
                                return Err(self.bug());
                            }
                            self.free_mirror_table(page, gfn, level, false)?;
                            it.sptep().store(0, Ordering::Release);
                            it.set_old_spte(0);
                            stats.tables += 1;
                        }
                    }
                    it.next_sibling();
                }
                // Above the round's level: look inside. At or below it: nothing to do here.
                (SpteKind::Table(_), Round::Tables(l)) if level <= l => it.next_sibling(),
                (SpteKind::Table(_), _) => it.next(),
            }
        }
        Ok(doomed)
    }

    fn table_is_empty(&self, page: PageRef) -> bool {
        let level = page.get().role().level;
        page.get()
            .table()
            .0
            .iter()
            .all(|e| F::decode(e.load(Ordering::Acquire), level) == SpteKind::Absent)
    }

    /// Blocks one mirror entry in the external table unless an earlier, unfinished zap already
    /// did, and marks it blocked in the mirror. Returns the entry's new value.
    fn block_entry(
        &self,
        entry: &AtomicU64,
        gfn: Gfn,
        level: Level,
        is_leaf: bool,
        stats: &mut ZapStats,
    ) -> Result<u64, MmuError> {
        let raw = entry.load(Ordering::Acquire);
        if is_external_blocked(raw) {
            return Ok(raw);
        }
        self.ext_result(self.ext.block_spte(gfn, level, is_leaf))?;
        stats.blocked += 1;
        let raw = raw | SPTE_EXTERNAL_BLOCKED;
        entry.store(raw, Ordering::Release);
        Ok(raw)
    }

    /// Empties a table, post-order: removes its leaves and frees its child tables (mirror: through
    /// the hooks). With `force` (teardown) hook failures leak pages instead of stopping.
    pub(super) fn remove_children(
        &self,
        page: PageRef,
        force: bool,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let role = page.get().role();
        let level = role.level;
        for (i, entry) in page.get().table().0.iter().enumerate() {
            let gfn = page.get().gfn().add(i as u64 * level.pages());
            match F::decode(entry.load(Ordering::Acquire), level) {
                SpteKind::Leaf(leaf) => {
                    if role.root_kind == RootKind::Mirror {
                        self.remove_mirror_leaf(gfn, level, leaf.pfn, force)?;
                    } else {
                        self.stats.leaf(RootKind::Shared, level, -1);
                    }
                    entry.store(0, Ordering::Release);
                    stats.leaves += 1;
                }
                SpteKind::Table(pfn) => {
                    let child = self.page_of(pfn)?;
                    self.remove_children(child, force, stats)?;
                    if role.root_kind == RootKind::Mirror {
                        self.free_mirror_table(child, gfn, level, force)?;
                    } else {
                        // SAFETY: emptied above; unlinked by the store below before anyone (only
                        // the exclusive holder exists) can look again.
                        unsafe { MmuPage::destroy(&self.env, child, None) };
                        self.stats.table(RootKind::Shared, -1);
                    }
                    entry.store(0, Ordering::Release);
                    stats.tables += 1;
                }
                SpteKind::Absent => {}
                SpteKind::Frozen if force => entry.store(0, Ordering::Release),
                SpteKind::Frozen => return Err(self.bug()),
            }
        }
        Ok(())
    }

    fn remove_mirror_leaf(
        &self,
        gfn: Gfn,
        level: Level,
        pfn: crate::addr::Pfn,
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

    pub(super) fn page_of(&self, pfn: crate::addr::Pfn) -> Result<PageRef, MmuError> {
        // SAFETY: callers pass table PFNs read from live entries under the MMU lock.
        unsafe { PageRef::from_table_pfn(&self.env, pfn) }.ok_or_else(|| self.bug())
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
}

const _: () = assert!(ENTRIES_PER_TABLE == 512);
