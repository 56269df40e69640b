// SPDX-License-Identifier: GPL-2.0-only
//! Fixed-capacity memory caches (upstream `struct kvm_mmu_memory_cache`).
//!
//! The fault path runs under the MMU lock and must not sleep or fail on allocation, so before
//! the lock is taken each vCPU tops its caches up to what one fault can consume; inside the walk
//! objects are only popped. Upstream tops every cache up to 40 objects (sized for shadow paging);
//! a TDP fault installs at most one table per level below the root, so
//! [`MAX_TABLES_PER_FAULT`] (4, for a 5-level root) is enough.

use crate::env::{Frame, HeaderSlot, MmuEnv, PageKind};
use crate::error::MmuError;
use crate::page::NewTable;

/// Most tables a single fault can install: one per level below a 5-level root.
pub const MAX_TABLES_PER_FAULT: usize = 4;

/// A stack of at most `N` pre-allocated objects.
#[derive(Debug)]
pub struct MemoryCache<T, const N: usize> {
    objs: [Option<T>; N],
    len: usize,
}

impl<T, const N: usize> Default for MemoryCache<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> MemoryCache<T, N> {
    /// An empty cache.
    pub const fn new() -> Self {
        MemoryCache {
            objs: [const { None }; N],
            len: 0,
        }
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills the cache up to `min` (capped at `N`) with `alloc`.
    ///
    /// # Errors
    ///
    /// [`MmuError::NoMemory`] if `alloc` fails; objects allocated so far stay in the cache.
    pub fn top_up(
        &mut self,
        min: usize,
        mut alloc: impl FnMut() -> Option<T>,
    ) -> Result<(), MmuError> {
        let min = min.min(N);
        while self.len < min {
            let obj = alloc().ok_or(MmuError::NoMemory)?;
            self.objs[self.len] = Some(obj);
            self.len += 1;
        }
        Ok(())
    }

    /// Pops one object; `None` only if the caller did not top up enough.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.objs[self.len].take()
    }

    /// Pushes an object back (an unused one after a lost race). Returns it if the cache is full.
    pub fn push(&mut self, obj: T) -> Result<(), T> {
        if self.len == N {
            return Err(obj);
        }
        self.objs[self.len] = Some(obj);
        self.len += 1;
        Ok(())
    }

    /// Empties the cache through `free`.
    pub fn drain(&mut self, mut free: impl FnMut(T)) {
        while let Some(obj) = self.pop() {
            free(obj);
        }
    }
}

/// What the per-vCPU caches hold right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheHoldings {
    /// Header objects.
    pub headers: usize,
    /// Table pages (shared and mirror tables come from the same cache).
    pub tables: usize,
    /// External (private) SPT pages.
    pub external_spts: usize,
}

impl CacheHoldings {
    /// Pages held (headers are not pages).
    pub fn pages(&self) -> usize {
        self.tables + self.external_spts
    }
}

/// Bundles of what new tables need — page headers, table pages, external (private) SPT pages —
/// in fixed-capacity caches: the one implementation behind [`VcpuMmuCaches`] (one fault) and
/// [`SplitCache`] (the splits of one zap).
#[derive(Debug, Default)]
struct TableBundles<const N: usize> {
    headers: MemoryCache<HeaderSlot, N>,
    tables: MemoryCache<Frame, N>,
    external_spts: MemoryCache<Frame, N>,
}

impl<const N: usize> TableBundles<N> {
    const fn new() -> Self {
        TableBundles {
            headers: MemoryCache::new(),
            tables: MemoryCache::new(),
            external_spts: MemoryCache::new(),
        }
    }

    fn holdings(&self) -> CacheHoldings {
        CacheHoldings {
            headers: self.headers.len(),
            tables: self.tables.len(),
            external_spts: self.external_spts.len(),
        }
    }

    /// Tops up to `n` headers and table pages, and as many external SPTs if `private`.
    fn top_up<E: MmuEnv>(&mut self, env: &E, n: usize, private: bool) -> Result<(), MmuError> {
        self.headers.top_up(n, || env.alloc_header())?;
        self.tables.top_up(n, || env.alloc_page(PageKind::Table))?;
        if private {
            self.external_spts
                .top_up(n, || env.alloc_page(PageKind::ExternalSpt))?;
        }
        Ok(())
    }

    fn free_all<E: MmuEnv>(&mut self, env: &E) {
        self.headers.drain(|h| env.free_header(h));
        self.tables.drain(|f| env.free_page(f, PageKind::Table));
        self.external_spts
            .drain(|f| env.free_page(f, PageKind::ExternalSpt));
    }

    /// Whether `n` bundles are there (with external SPTs if `private`).
    fn ready_for(&self, n: usize, private: bool) -> bool {
        self.headers.len() >= n
            && self.tables.len() >= n
            && (!private || self.external_spts.len() >= n)
    }

    /// Pops one bundle (with an external SPT if `mirror`); `None`, and nothing popped, if a
    /// cache is short.
    fn take_table(&mut self, mirror: bool) -> Option<NewTable> {
        if !self.ready_for(1, mirror) {
            return None;
        }
        let header = self.headers.pop()?;
        let table = self.tables.pop()?;
        let external = if mirror {
            self.external_spts.pop()
        } else {
            None
        };
        Some(NewTable {
            header,
            table,
            external,
        })
    }

    /// Puts an unused bundle back; what does not fit goes back to `env`.
    fn put_back<E: MmuEnv>(&mut self, env: &E, new: NewTable) {
        if let Err(h) = self.headers.push(new.header) {
            env.free_header(h);
        }
        if let Err(f) = self.tables.push(new.table) {
            env.free_page(f, PageKind::Table);
        }
        if let Some(ext) = new.external {
            if let Err(f) = self.external_spts.push(ext) {
                env.free_page(f, PageKind::ExternalSpt);
            }
        }
    }
}

/// The per-vCPU MMU caches: page headers, table pages and the private-SPT cache.
///
/// Must be emptied with [`crate::tdp::TdpMmu::free_vcpu_caches`] before it is dropped (vCPU
/// destroy); dropping a non-empty cache leaks its pages, which the accounting shows.
#[derive(Debug, Default)]
pub struct VcpuMmuCaches(TableBundles<MAX_TABLES_PER_FAULT>);

impl VcpuMmuCaches {
    /// Empty caches.
    pub const fn new() -> Self {
        VcpuMmuCaches(TableBundles::new())
    }

    /// What the caches hold.
    pub fn holdings(&self) -> CacheHoldings {
        self.0.holdings()
    }

    /// Tops every cache up for one fault: `tables` headers and table pages, and as many
    /// external SPTs if `private` (the VM has a mirror root).
    ///
    /// Locking: must not hold the MMU lock (allocation may sleep).
    pub(crate) fn top_up<E: MmuEnv>(
        &mut self,
        env: &E,
        tables: usize,
        private: bool,
    ) -> Result<(), MmuError> {
        self.0.top_up(env, tables, private)
    }

    /// Returns every cached object to `env`.
    pub(crate) fn free_all<E: MmuEnv>(&mut self, env: &E) {
        self.0.free_all(env)
    }

    /// Whether the caches hold what a fault may need: `tables` headers and table pages, and as
    /// many external SPTs if `private`.
    pub(crate) fn ready_for(&self, tables: usize, private: bool) -> bool {
        self.0.ready_for(tables, private)
    }

    /// Pops what one new table needs. The only place an external SPT is allocated for a table.
    ///
    /// Returns `None` (and pops nothing) if a cache is short, which a correct top-up prevents.
    pub(crate) fn take_table(&mut self, mirror: bool) -> Option<NewTable> {
        self.0.take_table(mirror)
    }

    /// Puts an unused bundle back. Cannot overflow: it was popped from these caches during the
    /// same fault.
    pub(crate) fn put_back<E: MmuEnv>(&mut self, env: &E, new: NewTable) {
        self.0.put_back(env, new)
    }
}

/// Most huge leaves one zap can split: at each end of the range one per huge level (a 1G leaf
/// into 2M leaves, then the 2M leaf at the boundary into 4K leaves).
pub const MAX_SPLITS_PER_ZAP: usize = 2 * 2;

/// What a zap that splits huge mirror leaves consumes: per split one table page, one header and
/// one external SPT (the S-EPT page `TDH.MEM.PAGE.DEMOTE` takes).
///
/// Why not the vCPU caches: the zaps that cover part of a huge leaf — a private↔shared
/// conversion, a hole punched in guest_memfd, a memslot change — run from VM ioctls and MMU
/// notifiers, with no vCPU at hand, and under the exclusive MMU lock, where nothing may be
/// allocated. So the caller owns one of these (per VM, serialised by the VM's own lock; the
/// TDX huge-page RFC series for upstream, 2025, likewise splits under the write `mmu_lock`
/// through a `split_external_spt` hook — BLOCK, TRACK, kick, DEMOTE — with pages from per-VM
/// split caches topped up before the lock is taken), tops it up with
/// [`crate::tdp::TdpMmu::topup_split_cache`] before taking the lock and passes it to
/// [`crate::tdp::TdpMmu::zap_range_split`]. It holds at most [`MAX_SPLITS_PER_ZAP`] bundles,
/// 3 pages and 3 headers for a 2M-max TD (two splits: the ends of the range), twice that with
/// 1G leaves.
///
/// Must be emptied with [`crate::tdp::TdpMmu::free_split_cache`] before it is dropped.
#[derive(Debug, Default)]
pub struct SplitCache(TableBundles<MAX_SPLITS_PER_ZAP>);

impl SplitCache {
    /// An empty cache.
    pub const fn new() -> Self {
        SplitCache(TableBundles::new())
    }

    /// What the cache holds.
    pub fn holdings(&self) -> CacheHoldings {
        self.0.holdings()
    }

    /// How many splits the cache can feed.
    pub fn splits(&self) -> usize {
        let h = self.0.holdings();
        h.headers.min(h.tables).min(h.external_spts)
    }

    /// Tops the cache up to `splits` bundles.
    ///
    /// Locking: must not hold the MMU lock (allocation may sleep).
    pub(crate) fn top_up<E: MmuEnv>(&mut self, env: &E, splits: usize) -> Result<(), MmuError> {
        self.0.top_up(env, splits, true)
    }

    /// Returns every cached object to `env`.
    pub(crate) fn free_all<E: MmuEnv>(&mut self, env: &E) {
        self.0.free_all(env)
    }

    /// Pops what one new mirror table needs; `None` (and nothing popped) if a cache is short.
    pub(crate) fn take_table(&mut self) -> Option<NewTable> {
        self.0.take_table(true)
    }

    /// Puts an unused bundle back (the external side refused the split).
    pub(crate) fn put_back<E: MmuEnv>(&mut self, env: &E, new: NewTable) {
        self.0.put_back(env, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_up_fills_to_min_and_pop_empties() {
        let mut c: MemoryCache<u32, 4> = MemoryCache::new();
        let mut n = 0;
        c.top_up(3, || {
            n += 1;
            Some(n)
        })
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.pop(), Some(3));
        c.top_up(3, || Some(9)).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.pop(), Some(9));
    }

    #[test]
    fn top_up_caps_at_capacity_and_reports_enomem() {
        let mut c: MemoryCache<u32, 2> = MemoryCache::new();
        c.top_up(10, || Some(1)).unwrap();
        assert_eq!(c.len(), 2);
        let mut c: MemoryCache<u32, 4> = MemoryCache::new();
        let mut left = 2;
        let r = c.top_up(4, || {
            if left == 0 {
                None
            } else {
                left -= 1;
                Some(0)
            }
        });
        assert_eq!(r, Err(MmuError::NoMemory));
        assert_eq!(
            c.len(),
            2,
            "objects allocated before the failure stay cached"
        );
    }

    #[test]
    fn push_refuses_when_full() {
        let mut c: MemoryCache<u32, 1> = MemoryCache::new();
        assert_eq!(c.push(1), Ok(()));
        assert_eq!(c.push(2), Err(2));
        let mut out = [0; 2];
        let mut i = 0;
        c.drain(|x| {
            out[i] = x;
            i += 1;
        });
        assert_eq!((i, out[0]), (1, 1));
        assert!(c.is_empty());
    }
}
