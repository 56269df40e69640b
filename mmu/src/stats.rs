// SPDX-License-Identifier: GPL-2.0-only
//! Page accounting: every page the MMU holds, by kind, so tests and debugfs can prove that
//! nothing leaks and benchmarks can report page-table memory.

use crate::page::RootKind;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live counters, updated with relaxed atomics on the fault and zap paths.
#[derive(Debug, Default)]
pub struct MmuStats {
    shared_tables: AtomicUsize,
    mirror_tables: AtomicUsize,
    external_spts: AtomicUsize,
    headers: AtomicUsize,
    deferred: AtomicUsize,
    leaked_external_spts: AtomicUsize,
    leaked_private_pages: AtomicUsize,
    leaves: [[AtomicUsize; 3]; 2],
    /// 4 KiB frames ever mapped / unmapped, per root (shared, mirror).
    frames_mapped: [AtomicU64; 2],
    frames_zapped: [AtomicU64; 2],
}

/// A snapshot of [`MmuStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Table pages of the shared root, the root included.
    pub shared_tables: usize,
    /// Table pages of the mirror root, the root included.
    pub mirror_tables: usize,
    /// External SPT pages linked to the external table (one per non-root mirror table).
    pub external_spts: usize,
    /// Page headers in use (one per table page).
    pub headers: usize,
    /// Unlinked table pages waiting for the exclusive lock to be freed (counted in the tables
    /// above until then).
    pub deferred: usize,
    /// External SPTs the external side refused to give back (leaked on purpose).
    pub leaked_external_spts: usize,
    /// Private data pages the external side refused to give back.
    pub leaked_private_pages: usize,
    /// Leaves mapped in the shared root at 4K, 2M and 1G.
    pub shared_leaves: [usize; 3],
    /// Leaves mapped in the mirror root at 4K, 2M and 1G.
    pub mirror_leaves: [usize; 3],
    /// 4 KiB frames mapped since the MMU was made, per root (`[shared, mirror]`): a 2 MiB leaf
    /// counts 512. Splitting a huge leaf maps and unmaps nothing.
    pub frames_mapped: [u64; 2],
    /// 4 KiB frames unmapped (zapped, or removed at teardown) since the MMU was made, per root.
    pub frames_zapped: [u64; 2],
}

impl StatsSnapshot {
    /// Pages the MMU holds from the allocator (tables and external SPTs, not leaked ones).
    pub fn pages(&self) -> usize {
        self.shared_tables + self.mirror_tables + self.external_spts
    }

    /// 4 KiB frames mapped through the given root.
    pub fn mapped_4k(&self, root: RootKind) -> u64 {
        let l = match root {
            RootKind::Shared => &self.shared_leaves,
            RootKind::Mirror => &self.mirror_leaves,
        };
        l[0] as u64 + l[1] as u64 * 512 + l[2] as u64 * 512 * 512
    }
}

#[inline]
fn add(c: &AtomicUsize, delta: isize) {
    if delta >= 0 {
        c.fetch_add(delta as usize, Ordering::Relaxed);
    } else {
        c.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

impl MmuStats {
    pub(crate) fn table(&self, root: RootKind, delta: isize) {
        add(&self.headers, delta);
        match root {
            RootKind::Shared => add(&self.shared_tables, delta),
            RootKind::Mirror => add(&self.mirror_tables, delta),
        }
    }

    pub(crate) fn external_spt(&self, delta: isize) {
        add(&self.external_spts, delta);
    }

    pub(crate) fn deferred(&self, delta: isize) {
        add(&self.deferred, delta);
    }

    pub(crate) fn leaked_external_spt(&self) {
        add(&self.leaked_external_spts, 1);
    }

    pub(crate) fn leaked_private_page(&self) {
        add(&self.leaked_private_pages, 1);
    }

    /// `delta` leaves appear (positive) or go (negative) at `level` of `root`, as mappings
    /// made or removed: the cumulative frame counters follow.
    #[inline]
    pub(crate) fn leaf(&self, root: RootKind, level: crate::level::Level, delta: isize) {
        self.leaf_count(root, level, delta);
        let frames = delta.unsigned_abs() as u64 * level.pages();
        let total = if delta >= 0 {
            &self.frames_mapped
        } else {
            &self.frames_zapped
        };
        total[Self::root_index(root)].fetch_add(frames, Ordering::Relaxed);
    }

    /// `delta` leaves at `level` of `root` that map nothing new and unmap nothing (a huge leaf
    /// split into smaller ones): only the per-level counts change.
    #[inline]
    pub(crate) fn leaf_count(&self, root: RootKind, level: crate::level::Level, delta: isize) {
        let l = (level.get() as usize).saturating_sub(1).min(2);
        add(&self.leaves[Self::root_index(root)][l], delta);
    }

    fn root_index(root: RootKind) -> usize {
        match root {
            RootKind::Shared => 0,
            RootKind::Mirror => 1,
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        let lv = |i: usize| {
            [
                r(&self.leaves[i][0]),
                r(&self.leaves[i][1]),
                r(&self.leaves[i][2]),
            ]
        };
        StatsSnapshot {
            shared_tables: r(&self.shared_tables),
            mirror_tables: r(&self.mirror_tables),
            external_spts: r(&self.external_spts),
            headers: r(&self.headers),
            deferred: r(&self.deferred),
            frames_mapped: self
                .frames_mapped
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
            frames_zapped: self
                .frames_zapped
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
            leaked_external_spts: r(&self.leaked_external_spts),
            leaked_private_pages: r(&self.leaked_private_pages),
            shared_leaves: lv(0),
            mirror_leaves: lv(1),
        }
    }
}
