// SPDX-License-Identifier: GPL-2.0-only
//! Zaps (upstream `tdp_mmu_zap_leafs()`, `handle_removed_pt()` and the TDX removal hooks).
//!
//! A zap of `[start, end)` removes every leaf that overlaps the range and every table whose whole
//! span lies inside it (upstream keeps empty tables until teardown; here the S-EPT pages of a
//! converted range come back at once). A huge leaf that straddles a range boundary is zapped
//! whole by [`TdpMmu::zap_range`], as upstream does for the shared root: the guest refaults
//! what it still uses. For private memory that would throw away the guest's data in the rest
//! of the huge page, so [`TdpMmu::zap_range_split`] first **splits** a mirror huge leaf the
//! range covers only in part (block it, one flush, `split_spte` = TDH.MEM.PAGE.DEMOTE, with
//! the new table and S-EPT page from the caller's [`SplitCache`]) and then zaps only the small
//! leaves inside the range. The shared root keeps upstream's behaviour in both.
//!
//! Which one a caller uses is the caller's decision, never a silent fallback:
//! `zap_range_split` without enough in the cache fails with [`MmuError::NoMemory`] before it
//! changes anything, and a caller that prefers to drop the whole huge page (memslot deletion,
//! where nothing of it survives) calls `zap_range`.
//!
//! Runs under the exclusive lock, so no entry can change under it and nothing needs freezing.
//! This file decides which entries go, in which round and pass; the transition layer
//! ([`super::transition`]) blocks, flushes and removes them and does the accounting.
//! The mirror root is zapped in rounds (see [`TdpMmu::zap_range`]): all leaves first (block every
//! one, flush once, remove every one), then the emptied tables level by level from the deepest.
//! A busy hook stops the zap and
//! leaves every entry it did not remove mapped; entries it blocked stay marked
//! [`SPTE_EXTERNAL_BLOCKED`] in the mirror, exactly as they are in the S-EPT, faults on them
//! retry, and the caller must zap the range again (which skips what is already blocked).

use super::transition::Removal;
use super::TdpMmu;
use crate::addr::Gfn;
use crate::cache::{SplitCache, MAX_SPLITS_PER_ZAP};
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::ExternalPageTable;
use crate::iter::TdpIter;
use crate::level::Level;
use crate::lock::ExclusiveGuard;
use crate::page::RootKind;
use crate::spte::{PagingFormat, SpteKind};

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
    /// tables), so at most one plus the number of table levels per zap; plus one per level of
    /// huge leaves split.
    pub flushes: usize,
    /// Huge mirror leaves split into tables ([`TdpMmu::zap_range_split`]).
    pub splits: usize,
}

/// The huge mirror leaves a zap splits: (base GFN, level), deduplicated, at most two per level.
#[derive(Clone, Copy, Default)]
struct SplitPlan {
    items: [Option<(Gfn, Level)>; MAX_SPLITS_PER_ZAP],
    len: usize,
}

impl SplitPlan {
    fn add(&mut self, gfn: Gfn, level: Level) -> Result<(), ()> {
        if self.items[..self.len].contains(&Some((gfn, level))) {
            return Ok(());
        }
        let slot = self.items.get_mut(self.len).ok_or(())?;
        *slot = Some((gfn, level));
        self.len += 1;
        Ok(())
    }

    fn at(&self, level: Level) -> impl Iterator<Item = Gfn> + '_ {
        self.items[..self.len]
            .iter()
            .flatten()
            .filter(move |(_, l)| *l == level)
            .map(|(g, _)| *g)
    }
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
            self.zap_shared(guard, start, end, &mut stats)?;
        }
        match (target, self.mirror_root) {
            (ZapTarget::Mirror, None) => return Err(MmuError::NoPrivateRoot),
            (ZapTarget::Mirror | ZapTarget::Both, Some(_)) => {
                self.zap_mirror(guard, start, end, &mut stats)?
            }
            _ => {}
        }
        Ok(stats)
    }

    /// Zaps `[start, end)` like [`TdpMmu::zap_range`], except that a huge mirror leaf the range
    /// covers only in part is split first (block, flush, `split_spte`, level by level from the
    /// largest) and only its part inside the range is zapped: a conversion or hole punch of
    /// 4 KiB out of a 2 MiB private page keeps the other 511 pages mapped. The shared root is
    /// zapped as by `zap_range` (a straddling huge leaf goes whole).
    ///
    /// The caller topped `cache` up with [`TdpMmu::topup_split_cache`] before taking the lock.
    ///
    /// Locking: exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// As [`TdpMmu::zap_range`], and [`MmuError::NoMemory`] if `cache` holds fewer bundles than
    /// the splits the range needs: then nothing has changed. A busy external table during a
    /// split leaves the huge leaf blocked in both tables (faults on it retry) and the zap
    /// unfinished: zap again.
    pub fn zap_range_split(
        &self,
        guard: &ExclusiveGuard<'_>,
        target: ZapTarget,
        start: Gfn,
        end: Gfn,
        cache: &mut SplitCache,
    ) -> Result<ZapStats, MmuError> {
        self.check_guard(guard)?;
        if start > end || end.raw() > self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let mirror = match (target, self.mirror_root) {
            (ZapTarget::Mirror, None) => return Err(MmuError::NoPrivateRoot),
            (ZapTarget::Mirror | ZapTarget::Both, Some(_)) => true,
            _ => false,
        };
        let plan = if mirror {
            self.split_plan(start, end)?
        } else {
            SplitPlan::default()
        };
        if cache.splits() < plan.len {
            return Err(MmuError::NoMemory);
        }
        let mut stats = ZapStats::default();
        if matches!(target, ZapTarget::Shared | ZapTarget::Both) {
            self.zap_shared(guard, start, end, &mut stats)?;
        }
        if mirror {
            // The splits come first and do not yield (their plan names entries by position).
            self.split_mirror(&plan, cache, &mut stats)?;
            self.zap_mirror(guard, start, end, &mut stats)?;
        }
        Ok(stats)
    }

    /// The huge mirror leaves `[start, end)` covers only in part, and below each the smaller
    /// leaves its split will leave straddling the same boundary.
    fn split_plan(&self, start: Gfn, end: Gfn) -> Result<SplitPlan, MmuError> {
        let mut plan = SplitPlan::default();
        if start == end {
            return Ok(plan);
        }
        // The leaf holding the first GFN straddles `start`, the one holding the last straddles
        // `end`, unless the boundary is aligned to the leaf.
        for (inside, boundary) in [(start, start), (Gfn::new(end.raw() - 1), end)] {
            let Some(top) = self.mirror_leaf_level(inside)? else {
                continue;
            };
            let mut level = top;
            while level.is_huge() {
                if boundary.offset_in(level.pages()) != 0 {
                    plan.add(inside.align_down(level.pages()), level)
                        .map_err(|()| self.bug())?;
                }
                level = match level.down() {
                    Some(l) => l,
                    None => break,
                };
            }
        }
        Ok(plan)
    }

    /// The level of the mirror leaf mapping `gfn`, if any.
    fn mirror_leaf_level(&self, gfn: Gfn) -> Result<Option<Level>, MmuError> {
        let root = self.root(RootKind::Mirror)?;
        let mut it = self.iter(root.get(), gfn, gfn.add(1));
        while it.valid() {
            match it.kind() {
                SpteKind::Leaf(_) => return Ok(Some(it.level())),
                SpteKind::Table(_) => it.next(),
                SpteKind::Absent => return Ok(None),
                SpteKind::Frozen => return Err(self.bug()),
            }
        }
        it.check()?;
        Ok(None)
    }

    /// Splits the planned leaves, largest level first; per level one block pass, one flush and
    /// one split pass, like the zap rounds.
    fn split_mirror(
        &self,
        plan: &SplitPlan,
        cache: &mut SplitCache,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let mut level = self.config.max_level;
        while level.is_huge() {
            if plan.at(level).next().is_some() {
                for gfn in plan.at(level) {
                    self.at_mirror_leaf(gfn, level, |it| self.block_external_spte(it, stats))?;
                }
                self.flush_external(stats)?;
                for gfn in plan.at(level) {
                    self.at_mirror_leaf(gfn, level, |it| {
                        self.split_external_spte(it, cache, stats)
                    })?;
                }
            }
            level = match level.down() {
                Some(l) => l,
                None => break,
            };
        }
        Ok(())
    }

    /// Runs `f` with an iterator at the mirror leaf (`gfn`, `level`) the split plan names: it
    /// must be there.
    fn at_mirror_leaf(
        &self,
        gfn: Gfn,
        level: Level,
        f: impl FnOnce(&mut TdpIter<'_, F, E>) -> Result<(), MmuError>,
    ) -> Result<(), MmuError> {
        let root = self.root(RootKind::Mirror)?;
        let mut it = self.iter(root.get(), gfn, gfn.add(1));
        while it.valid() && it.level() > level {
            match it.kind() {
                SpteKind::Table(_) => it.next(),
                _ => break,
            }
        }
        it.check()?;
        match it.kind() {
            SpteKind::Leaf(_) if it.valid() && it.level() == level => f(&mut it),
            _ => Err(self.bug()),
        }
    }

    fn zap_shared(
        &self,
        guard: &ExclusiveGuard<'_>,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        let root = self.root(RootKind::Shared)?;
        // The shared half of a TD's space starts at the shared bit; `end` may equal the memslot
        // limit, i.e. the shared bit itself, so offset rather than OR it in.
        let base = self.root_gfn(RootKind::Shared, Gfn::new(0)).raw();
        let (s, e) = (Gfn::new(base + start.raw()), Gfn::new(base + end.raw()));
        let mut it = self.iter(root.get(), s, e);
        let mut changed = false;
        let mut yielded_at = None;
        while it.valid() {
            // HOOK(gmemfault): upstream tdp_mmu_zap_leafs yields (flushing first) when asked.
            if self.cond_resched_walk(guard, &mut it, &mut yielded_at, || {
                if core::mem::take(&mut changed) {
                    self.flush_shared_tlbs(s, e.raw() - s.raw());
                    self.free_deferred();
                }
            }) {
                continue;
            }
            match it.kind() {
                SpteKind::Absent => it.next_sibling(),
                SpteKind::Frozen => return Err(self.bug()),
                SpteKind::Table(_) if !it.entry_within(s, e) => it.next(),
                // A leaf overlapping the range, or a table wholly inside it (with its subtree).
                SpteKind::Table(_) | SpteKind::Leaf(_) => {
                    self.zap_spte(&mut it, Removal::Zap, stats)?;
                    changed = true;
                    it.next_sibling();
                }
            }
        }
        if changed {
            self.flush_shared_tlbs(s, e.raw() - s.raw());
            // Only now can no vCPU reach the tables the zap unlinked (see `remove_table_spte`);
            // the exclusive lock keeps software walkers out.
            self.free_deferred();
        }
        it.check()
    }

    /// Zaps the mirror in rounds, each one block pass, one flush and one removal pass:
    /// first every leaf overlapping the range, then the tables wholly inside it, one level at
    /// a time from the deepest up. The S-EPT needs the rounds: a walk stops at a blocked
    /// non-leaf entry, so nothing below a table may still need removing when the table's own
    /// entry is blocked, and a table is removed only once it is empty.
    fn zap_mirror(
        &self,
        guard: &ExclusiveGuard<'_>,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        self.mirror_round(guard, Round::Leaves, start, end, stats)?;
        let root_level = self.config.root_level();
        let mut level = Level::L2M;
        while level <= root_level {
            self.mirror_round(guard, Round::Tables(level), start, end, stats)?;
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
        guard: &ExclusiveGuard<'_>,
        round: Round,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<(), MmuError> {
        if self.mirror_pass(guard, round, Pass::Block, start, end, stats)? == 0 {
            return Ok(());
        }
        // Also after a zap that stopped half-way: its blocks may never have been tracked.
        self.flush_external(stats)?;
        self.mirror_pass(guard, round, Pass::Remove, start, end, stats)
            .map(|_| ())
    }

    /// One pass of a round over `[start, end)`. Returns how many entries the round removes.
    ///
    /// HOOK(gmemfault): a pass may yield between entries (upstream's walks yield in
    /// `tdp_mmu_zap_leafs`). What it blocked before stays blocked — faults on it retry, another
    /// zap skips it when blocking and removes it after its own flush — and nothing is removed
    /// before the round's one flush, so BLOCK → TRACK → REMOVE holds for every entry.
    fn mirror_pass(
        &self,
        guard: &ExclusiveGuard<'_>,
        round: Round,
        pass: Pass,
        start: Gfn,
        end: Gfn,
        stats: &mut ZapStats,
    ) -> Result<usize, MmuError> {
        let root = self.root(RootKind::Mirror)?;
        let mut it = self.iter(root.get(), start, end);
        let mut doomed = 0;
        let mut yielded_at = None;
        while it.valid() {
            // HOOK(gmemfault): nothing is pending between entries of a pass (see above).
            if self.cond_resched_walk(guard, &mut it, &mut yielded_at, || {}) {
                continue;
            }
            let level = it.level();
            let doomed_here = match (it.kind(), round) {
                (SpteKind::Absent, _) => false,
                (SpteKind::Frozen, _) => return Err(self.bug()),
                (SpteKind::Leaf(_), Round::Leaves) => true,
                // Leaves are gone before any table round; one showing up here is a bug.
                (SpteKind::Leaf(_), Round::Tables(_)) => return Err(self.bug()),
                (SpteKind::Table(pfn), Round::Tables(l))
                    if level == l && it.entry_within(start, end) =>
                {
                    // The entry must name a table the MMU knows before anything is blocked.
                    self.page_of(pfn)?;
                    true
                }
                // Above the round's level: look inside. At or below it: nothing to do here.
                (SpteKind::Table(_), Round::Tables(l)) if level <= l => false,
                (SpteKind::Table(_), _) => {
                    it.next();
                    continue;
                }
            };
            if doomed_here {
                doomed += 1;
                match pass {
                    Pass::Block => self.block_external_spte(&mut it, stats)?,
                    Pass::Remove => self.zap_spte(&mut it, Removal::Zap, stats)?,
                }
            }
            it.next_sibling();
        }
        it.check()?;
        Ok(doomed)
    }

    /// HOOK(gmemfault): upstream `tdp_mmu_iter_cond_resched`. If the guard allows yielding, the
    /// environment asks for it and the walk moved on since it last yielded (forward progress),
    /// runs `flush` (what the walk changed must be flushed before others can see the tables),
    /// drops and retakes the lock, and restarts `it` from the root at its next GFN. Returns
    /// whether it yielded (the caller then looks at the entry `it` is at now).
    pub(super) fn cond_resched_walk(
        &self,
        guard: &ExclusiveGuard<'_>,
        it: &mut TdpIter<'_, F, E>,
        yielded_at: &mut Option<Gfn>,
        flush: impl FnOnce(),
    ) -> bool {
        if *yielded_at == Some(it.next_gfn()) || !guard.needbreak() {
            return false;
        }
        flush();
        guard.resched();
        it.restart();
        *yielded_at = Some(it.next_gfn());
        true
    }
}
