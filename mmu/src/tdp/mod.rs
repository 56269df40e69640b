// SPDX-License-Identifier: GPL-2.0-only
//! The TDP MMU: roots, the fault path, zaps and teardown (upstream `tdp_mmu.c`).
//!
//! Every VM has a **shared** root that the CPU walks. A TD also has a **mirror** root: KVM walks
//! and edits it like any table, and every change is propagated through the
//! [`ExternalPageTable`] hooks to the TDX module's Secure-EPT, which KVM cannot access.
//!
//! Files: `fault.rs`, `zap.rs` and `wrprot.rs` (dirty logging's write-protection) decide what
//! entries become; `transition.rs` is the one place
//! where an entry of either root changes, with all the consequences (hooks, accounting, freeing
//! of unlinked tables, TLB flushes), as upstream funnels every change through
//! `handle_changed_spte()`.
//!
//! # Concurrency
//!
//! - Faults ([`TdpMmu::map`]) run under the shared side of the MMU lock and change entries with
//!   compare-exchange. A mirror entry is first *frozen* ([`FROZEN_SPTE`]), then the external hook
//!   runs, then the new value is published (or the old one restored if the hook failed); any
//!   walker that meets a frozen entry backs off and the fault is retried.
//! - Zaps ([`TdpMmu::zap_range`]) take the exclusive side: the S-EPT must see BLOCK, TRACK and
//!   REMOVE for a range with no fault in between, as upstream requires for the mirror root.
//! - Tables unlinked under the shared side (a huge page replacing a table in the shared root)
//!   are parked and freed when the exclusive side is next taken ([`TdpMmu::write`]); under the
//!   exclusive side pages are freed at once. Lock order: the MMU lock is the innermost lock the
//!   core takes; hooks run under it and must not take it.

mod fast;
mod fault;
mod transition;
mod wrprot;
mod zap;

pub use fast::{FastFault, FaultAccess, FAST_RETRIES};
pub use fault::{Fault, FaultOutcome};
pub use wrprot::WriteProtectStats;
pub use zap::{ZapStats, ZapTarget, TEARDOWN_BUSY_RETRIES};

use crate::addr::{Gfn, GfnKind, GpaWidth, Pfn, SharedBit};
use crate::cache::{SplitCache, VcpuMmuCaches};
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::ExternalPageTable;
use crate::iter::TdpIter;
use crate::level::Level;
use crate::lock::{ExclusiveGuard, MmuLockHeld, SharedGuard};
use crate::page::{MmuPage, PageRef, RootKind};
use crate::spte::{LeafInfo, PagingFormat, SpteKind, FROZEN_SPTE};
use crate::stats::{MmuStats, StatsSnapshot};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

/// How a VM's MMU is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuConfig {
    /// Guest-physical address width; also picks the root level (48 → 4, 52 → 5).
    pub gpa_width: GpaWidth,
    /// Whether the VM has private memory (a TD): a mirror root and the shared bit.
    pub private: bool,
    /// Largest leaf the MMU may install (4K, 2M or 1G).
    pub max_level: Level,
}

impl MmuConfig {
    /// An ordinary VM: one shared root, no shared bit.
    pub const fn vm(gpa_width: GpaWidth) -> Self {
        MmuConfig {
            gpa_width,
            private: false,
            max_level: Level::L1G,
        }
    }

    /// A TD: a shared root indexed with the shared bit set, and a mirror root.
    pub const fn td(gpa_width: GpaWidth) -> Self {
        MmuConfig {
            gpa_width,
            private: true,
            max_level: Level::L1G,
        }
    }

    /// Root level: 4-level tables for 48-bit, 5-level for 52-bit guest-physical addresses.
    pub const fn root_level(&self) -> Level {
        match self.gpa_width {
            GpaWidth::Bits48 => Level::L512G,
            GpaWidth::Bits52 => Level::L256T,
        }
    }

    /// The shared bit, for TDs.
    pub const fn shared_bit(&self) -> Option<SharedBit> {
        if self.private {
            Some(self.gpa_width.shared_bit())
        } else {
            None
        }
    }

    /// One past the largest memslot GFN (the shared bit, for TDs, is not part of it).
    pub const fn gfn_limit(&self) -> u64 {
        let bits = self.gpa_width.bits() - crate::addr::PAGE_SHIFT;
        if self.private {
            1 << (bits - 1)
        } else {
            1 << bits
        }
    }

    /// Tables one fault can install: one per level below the root.
    pub const fn tables_per_fault(&self) -> usize {
        self.root_level().get() as usize - 1
    }

    /// Huge leaves one zap may split ([`TdpMmu::zap_range_split`]): at each end of the range
    /// one per huge level the MMU maps (2 for 2M, 4 with 1G leaves); 0 without private memory.
    pub const fn splits_per_zap(&self) -> usize {
        if !self.private {
            return 0;
        }
        2 * (self.max_level.get() as usize - 1)
    }
}

/// One VM's TDP MMU.
///
/// `F` is the entry format, `E` the environment, `X` the external page-table hooks (only called
/// for the mirror root).
pub struct TdpMmu<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> {
    env: E,
    ext: X,
    config: MmuConfig,
    shared_root: Option<PageRef>,
    mirror_root: Option<PageRef>,
    stats: MmuStats,
    bugged: AtomicBool,
    deferred: crate::page::DeferredFree,
    _format: PhantomData<F>,
}

// SAFETY: the raw page pointers are only dereferenced under the MMU lock protocol described in
// the module docs; everything else is `Send` if `E` and `X` are.
unsafe impl<F: PagingFormat, E: MmuEnv + Send, X: ExternalPageTable + Send> Send
    for TdpMmu<F, E, X>
{
}
// SAFETY: shared access goes through the MMU lock (checked by guards) and atomics.
unsafe impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> Sync for TdpMmu<F, E, X> {}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    /// Creates the MMU and allocates its roots.
    ///
    /// Locking: none held; may sleep.
    ///
    /// # Errors
    ///
    /// [`MmuError::NoMemory`] if a root cannot be allocated (nothing is left allocated).
    pub fn new(env: E, ext: X, config: MmuConfig) -> Result<Self, MmuError> {
        let mut mmu = TdpMmu {
            env,
            ext,
            config: MmuConfig {
                max_level: config.max_level.min(Level::MAX_HUGE),
                ..config
            },
            shared_root: None,
            mirror_root: None,
            stats: MmuStats::default(),
            bugged: AtomicBool::new(false),
            deferred: crate::page::DeferredFree::new(),
            _format: PhantomData,
        };
        let shared_base = match config.shared_bit() {
            Some(sb) => sb.to_shared(Gfn::new(0)),
            None => Gfn::new(0),
        };
        // On failure `mmu` is dropped, which tears down whatever root exists.
        mmu.shared_root = Some(mmu.alloc_root(RootKind::Shared, shared_base)?);
        if config.private {
            mmu.mirror_root = Some(mmu.alloc_root(RootKind::Mirror, Gfn::new(0))?);
        }
        Ok(mmu)
    }

    /// The configuration.
    pub fn config(&self) -> &MmuConfig {
        &self.config
    }

    /// The shared root's table page: what the CPU walks (nested CR3, EPTP). `None` only on a
    /// torn-down MMU.
    pub fn shared_root_pfn(&self) -> Option<Pfn> {
        self.shared_root.map(|r| r.get().pfn())
    }

    /// The environment.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// The external hooks.
    pub fn external(&self) -> &X {
        &self.ext
    }

    /// Page accounting.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the VM is bugged (every operation now fails with [`MmuError::Bugged`]).
    pub fn is_bugged(&self) -> bool {
        self.bugged.load(Ordering::Relaxed)
    }

    /// Marks the VM bugged (upstream `KVM_BUG_ON`): used on fatal external errors and broken
    /// invariants; never a panic.
    pub fn mark_bugged(&self) {
        self.bugged.store(true, Ordering::Relaxed);
    }

    fn bug(&self) -> MmuError {
        self.mark_bugged();
        MmuError::Bugged
    }

    fn owner(&self) -> *const () {
        self as *const Self as *const ()
    }

    /// Takes the MMU lock for read (faults).
    pub fn read(&self) -> SharedGuard<'_> {
        SharedGuard::acquire(self.env.mmu_lock(), self.owner())
    }

    /// Takes the MMU lock for write (zaps), then frees pages parked by shared-lock walkers: with
    /// the exclusive side held no walker can still be inside them.
    pub fn write(&self) -> ExclusiveGuard<'_> {
        let guard = ExclusiveGuard::acquire(self.env.mmu_lock(), self.owner());
        self.free_deferred();
        guard
    }

    /// HOOK(gmemfault): [`TdpMmu::write`] for a caller that may sleep and holds nothing that
    /// depends on the MMU lock staying held: long zaps and write-protection passes under this
    /// guard drop the lock and reschedule when the environment asks
    /// ([`crate::lock::RawRwLock::needbreak`]), flushing what they changed first and
    /// resuming at the next GFN (upstream `tdp_mmu_iter_cond_resched`).
    pub fn write_may_yield(&self) -> ExclusiveGuard<'_> {
        let guard = ExclusiveGuard::acquire_may_yield(self.env.mmu_lock(), self.owner());
        self.free_deferred();
        guard
    }

    /// Inspection (walks, lookups) only needs the guard to be ours: it stays allowed on a bugged
    /// VM so the state can be examined and torn down.
    fn check_owner(&self, guard: &impl MmuLockHeld) -> Result<(), MmuError> {
        if guard.owner() != self.owner() {
            return Err(MmuError::WrongLock);
        }
        Ok(())
    }

    fn check_guard(&self, guard: &impl MmuLockHeld) -> Result<(), MmuError> {
        self.check_owner(guard)?;
        if self.is_bugged() {
            return Err(MmuError::Bugged);
        }
        Ok(())
    }

    fn root(&self, kind: RootKind) -> Result<PageRef, MmuError> {
        match kind {
            RootKind::Shared => self.shared_root.ok_or(MmuError::Bugged),
            RootKind::Mirror => self.mirror_root.ok_or(MmuError::NoPrivateRoot),
        }
    }

    /// The GFN under which a memslot GFN appears in `root` (adds the shared bit for a TD's
    /// shared root).
    fn root_gfn(&self, root: RootKind, gfn: Gfn) -> Gfn {
        match (root, self.config.shared_bit()) {
            (RootKind::Shared, Some(sb)) => sb.to_shared(gfn),
            _ => gfn,
        }
    }

    /// The memslot GFN behind a root GFN.
    fn slot_gfn(&self, gfn: Gfn) -> Gfn {
        match self.config.shared_bit() {
            Some(sb) => sb.strip(gfn),
            None => gfn,
        }
    }

    fn iter<'a>(&'a self, root: &'a MmuPage, start: Gfn, end: Gfn) -> TdpIter<'a, F, E> {
        // SAFETY: `root` is one of this MMU's live roots, and every caller holds the MMU lock
        // (checked with `check_guard`) for as long as it uses the iterator.
        unsafe { TdpIter::new(&self.env, root, Level::L4K, start, end, &self.bugged) }
    }

    /// The header of the table a present non-leaf entry names.
    ///
    /// # Errors
    ///
    /// [`MmuError::Bugged`] if the page has no header (a broken invariant).
    fn page_of(&self, pfn: Pfn) -> Result<PageRef, MmuError> {
        // SAFETY: callers pass table PFNs read from live entries under the MMU lock.
        unsafe { PageRef::from_table_pfn(&self.env, pfn) }.ok_or_else(|| self.bug())
    }

    /// A raw walk of `root` over `[start, end)` (root GFNs: a TD's shared root includes the
    /// shared bit), for inspection (debugfs dumps, tests). The iterator borrows the guard, so it
    /// cannot outlive the lock.
    ///
    /// Locking: shared or exclusive.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::NoPrivateRoot`].
    pub fn walk<'a, G: MmuLockHeld>(
        &'a self,
        guard: &'a G,
        root: RootKind,
        start: Gfn,
        end: Gfn,
    ) -> Result<TdpIter<'a, F, E>, MmuError> {
        self.check_owner(guard)?;
        let r = self.root(root)?;
        // SAFETY: `r` stays a live root while `self` is borrowed; the lock is held for 'a.
        Ok(self.iter(unsafe { &*(r.get() as *const MmuPage) }, start, end))
    }

    /// Tops the vCPU's caches up for one fault: one table (and header) per level below the root,
    /// and as many external SPTs if the VM has private memory.
    ///
    /// Locking: must be called **without** the MMU lock (allocation may sleep).
    ///
    /// # Errors
    ///
    /// [`MmuError::NoMemory`]; what was allocated stays cached.
    pub fn topup_vcpu_caches(&self, caches: &mut VcpuMmuCaches) -> Result<(), MmuError> {
        caches.top_up(
            &self.env,
            self.config.tables_per_fault(),
            self.config.private,
        )
    }

    /// Returns everything the vCPU's caches hold to the allocator (vCPU destroy).
    pub fn free_vcpu_caches(&self, caches: &mut VcpuMmuCaches) {
        caches.free_all(&self.env);
    }

    /// Tops a split cache up for one [`TdpMmu::zap_range_split`]:
    /// [`MmuConfig::splits_per_zap`] bundles of a table page, a header and an external SPT.
    ///
    /// Locking: must be called **without** the MMU lock (allocation may sleep).
    ///
    /// # Errors
    ///
    /// [`MmuError::NoMemory`]; what was allocated stays cached.
    pub fn topup_split_cache(&self, cache: &mut SplitCache) -> Result<(), MmuError> {
        cache.top_up(&self.env, self.config.splits_per_zap())
    }

    /// Returns everything a split cache holds to the allocator (VM destroy).
    pub fn free_split_cache(&self, cache: &mut SplitCache) {
        cache.free_all(&self.env);
    }

    /// Looks up the leaf mapping `gfn` (a memslot GFN) of `kind`.
    ///
    /// Locking: shared or exclusive.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::NoPrivateRoot`], [`MmuError::GfnOutOfRange`].
    /// Allowed on a bugged VM.
    pub fn lookup(
        &self,
        guard: &impl MmuLockHeld,
        kind: GfnKind,
        gfn: Gfn,
    ) -> Result<Option<(Level, LeafInfo)>, MmuError> {
        self.check_owner(guard)?;
        if gfn.raw() >= self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let root_kind = root_kind_of(kind);
        let root = self.root(root_kind)?;
        let g = self.root_gfn(root_kind, gfn);
        let mut it = self.iter(root.get(), g, g.add(1));
        while it.valid() {
            match it.kind() {
                SpteKind::Leaf(leaf) => return Ok(Some((it.level(), leaf))),
                SpteKind::Table(_) => it.next(),
                SpteKind::Absent | SpteKind::Frozen => return Ok(None),
            }
        }
        it.check()?;
        Ok(None)
    }

    /// Calls `f(memslot gfn, level, leaf)` for every leaf of `root` in pre-order.
    ///
    /// Locking: shared or exclusive.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::NoPrivateRoot`]. Allowed on a bugged VM.
    pub fn for_each_leaf(
        &self,
        guard: &impl MmuLockHeld,
        root: RootKind,
        mut f: impl FnMut(Gfn, Level, LeafInfo),
    ) -> Result<(), MmuError> {
        self.check_owner(guard)?;
        let r = self.root(root)?;
        let start = r.get().gfn();
        let end = start.add(r.get().role().level.pages() * crate::level::ENTRIES_PER_TABLE as u64);
        let mut it = self.iter(r.get(), start, end);
        while it.valid() {
            if let SpteKind::Leaf(leaf) = it.kind() {
                f(self.slot_gfn(it.gfn()), it.level(), leaf);
            }
            it.next();
        }
        it.check()
    }

    /// Calls `f` for every table page of `root`, the root included, parents before children.
    ///
    /// Locking: shared or exclusive.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::NoPrivateRoot`]. Allowed on a bugged VM.
    pub fn for_each_table(
        &self,
        guard: &impl MmuLockHeld,
        root: RootKind,
        mut f: impl FnMut(&MmuPage),
    ) -> Result<(), MmuError> {
        self.check_owner(guard)?;
        let r = self.root(root)?;
        f(r.get());
        let start = r.get().gfn();
        let end = start.add(r.get().role().level.pages() * crate::level::ENTRIES_PER_TABLE as u64);
        let mut it = self.iter(r.get(), start, end);
        while it.valid() {
            if let SpteKind::Table(pfn) = it.kind() {
                f(self.page_of(pfn)?.get());
            }
            it.next();
        }
        it.check()
    }

    /// Zaps everything and frees every page: roots, tables, external SPTs (through the hooks,
    /// in teardown order), parked pages. Hook failures cannot stop a teardown: a page the
    /// external side does not give back is leaked on purpose and counted. Idempotent; also run
    /// on drop.
    ///
    /// Locking: `&mut self` — nobody else can hold the MMU.
    pub fn teardown(&mut self) {
        drop(self.write());
        if let Some(root) = self.shared_root.take() {
            self.teardown_root(root);
        }
        if let Some(root) = self.mirror_root.take() {
            self.teardown_root(root);
        }
    }
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> Drop for TdpMmu<F, E, X> {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The root that maps memory of `kind`.
pub const fn root_kind_of(kind: GfnKind) -> RootKind {
    match kind {
        GfnKind::Private => RootKind::Mirror,
        GfnKind::Shared => RootKind::Shared,
    }
}

const _: () = assert!(FROZEN_SPTE != 0);
