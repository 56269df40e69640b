// SPDX-License-Identifier: GPL-2.0-only
//! `HostEnv`: the MMU environment for host tests and benchmarks.
//!
//! Pages come from one zero-filled arena (lazily committed by the OS), so a "PFN" is simply
//! `BASE_PFN + index` and `page->private` is a parallel array, like `struct page` in a vmemmap.
//! Every allocation is counted per kind, double frees are caught, and allocation can be told to
//! fail at the N-th call.

use mmu::env::{Frame, HeaderSlot, MmuEnv, PageKind, Table};
use mmu::lock::RawRwLock;
use mmu::page::MmuPage;
use mmu::{Gfn, Pfn};
use parking_lot::lock_api::RawRwLock as _;
use parking_lot::Mutex;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// First PFN the arena hands out (any non-zero value; makes PFN bugs visible).
pub const BASE_PFN: u64 = 0x10_0000;

/// The MMU lock on the host: parking_lot's raw rwlock.
pub struct HostRwLock(parking_lot::RawRwLock, YieldInject);

/// What [`HostRwLock::on_yield`] runs while a walk has the lock dropped.
pub type YieldHook = Box<dyn Fn() + Send + Sync>;

/// HOOK(gmemfault): asks long walks to yield at every N-th check (0: never), and counts the
/// yields, so host tests can check that a walk resumes where it stopped.
#[derive(Default)]
struct YieldInject {
    every: AtomicUsize,
    checks: AtomicUsize,
    yields: AtomicUsize,
    /// HOOK(zapyield): runs at each yield, with the lock released.
    hook: Mutex<Option<YieldHook>>,
}

impl Default for HostRwLock {
    fn default() -> Self {
        HostRwLock(parking_lot::RawRwLock::INIT, YieldInject::default())
    }
}

impl HostRwLock {
    /// Makes every `n`-th [`RawRwLock::needbreak`] answer true (`0`: never, the default).
    pub fn yield_every(&self, n: usize) {
        self.1.checks.store(0, Ordering::SeqCst);
        self.1.every.store(n, Ordering::SeqCst);
    }

    /// HOOK(zapyield): runs `hook` at every yield, between dropping and retaking the lock (so
    /// it may take the lock itself, e.g. to look at the tables as another thread would). The
    /// hook must not panic (the walk's guard expects the lock back); `None` removes it.
    pub fn on_yield(&self, hook: Option<YieldHook>) {
        *self.1.hook.lock() = hook;
    }

    /// How often a walk dropped and retook the lock.
    pub fn yields(&self) -> usize {
        self.1.yields.load(Ordering::SeqCst)
    }
}

// SAFETY: parking_lot's RawRwLock provides reader-writer exclusion.
unsafe impl RawRwLock for HostRwLock {
    fn lock_shared(&self) {
        self.0.lock_shared();
    }
    unsafe fn unlock_shared(&self) {
        // SAFETY: forwarded caller guarantee.
        unsafe { self.0.unlock_shared() }
    }
    fn lock_exclusive(&self) {
        self.0.lock_exclusive();
    }
    unsafe fn unlock_exclusive(&self) {
        // SAFETY: forwarded caller guarantee.
        unsafe { self.0.unlock_exclusive() }
    }
    fn needbreak(&self) -> bool {
        let every = self.1.every.load(Ordering::SeqCst);
        every != 0 && (self.1.checks.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every)
    }
    unsafe fn resched_exclusive(&self) {
        self.1.yields.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded caller guarantee.
        unsafe { self.0.unlock_exclusive() };
        if let Some(hook) = self.1.hook.lock().as_ref() {
            hook();
        }
        std::thread::yield_now();
        self.0.lock_exclusive();
    }
}

/// Live allocation counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvCounts {
    /// Table pages live.
    pub tables: usize,
    /// External SPT pages live.
    pub external_spts: usize,
    /// Headers live.
    pub headers: usize,
    /// Remote TLB flushes requested.
    pub tlb_flushes: usize,
    /// Allocations refused by fault injection.
    pub injected_failures: usize,
}

impl EnvCounts {
    /// Pages live.
    pub fn pages(&self) -> usize {
        self.tables + self.external_spts
    }
}

struct Arena {
    base: NonNull<u8>,
    pages: usize,
}

// SAFETY: the arena is plain memory; access is coordinated by page ownership.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages * 4096, 4096).expect("arena layout")
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `HostEnv::with_capacity` with this layout.
        unsafe { dealloc(self.base.as_ptr(), Self::layout(self.pages)) };
    }
}

/// The host environment.
pub struct HostEnv {
    arena: Arena,
    free: Mutex<Vec<u32>>,
    state: Vec<AtomicU8>,
    private: Vec<AtomicUsize>,
    lock: HostRwLock,
    tables: AtomicUsize,
    external_spts: AtomicUsize,
    headers: AtomicUsize,
    tlb_flushes: AtomicUsize,
    /// HOOK(zapyield): runs at each remote TLB flush (with the MMU lock as the flusher holds it).
    flush_hook: Mutex<Option<YieldHook>>,
    /// `tlb_flushes` as it was when the last table page was freed.
    flushes_at_table_free: AtomicUsize,
    injected_failures: AtomicUsize,
    meta: AtomicUsize,
    /// Allocations (pages and headers) left before one fails; negative: never.
    fail_countdown: AtomicI64,
    allocs: AtomicU64,
}

const FREE: u8 = 0;
const USED: u8 = 1;

impl HostEnv {
    /// An environment with room for `pages` pages.
    pub fn with_capacity(pages: usize) -> Self {
        // SAFETY: non-zero size; calloc-style memory is committed lazily by the OS.
        let base = unsafe { alloc_zeroed(Arena::layout(pages)) };
        let base = NonNull::new(base).expect("arena allocation");
        HostEnv {
            arena: Arena { base, pages },
            free: Mutex::new((0..pages as u32).rev().collect()),
            state: (0..pages).map(|_| AtomicU8::new(FREE)).collect(),
            private: (0..pages).map(|_| AtomicUsize::new(0)).collect(),
            lock: HostRwLock::default(),
            tables: AtomicUsize::new(0),
            external_spts: AtomicUsize::new(0),
            headers: AtomicUsize::new(0),
            tlb_flushes: AtomicUsize::new(0),
            flush_hook: Mutex::new(None),
            flushes_at_table_free: AtomicUsize::new(0),
            injected_failures: AtomicUsize::new(0),
            meta: AtomicUsize::new(0),
            fail_countdown: AtomicI64::new(-1),
            allocs: AtomicU64::new(0),
        }
    }

    /// An environment with room for 64 Ki pages (256 MiB, committed only when touched).
    pub fn new() -> Self {
        Self::with_capacity(1 << 16)
    }

    /// Makes the allocation after `n` more succeed fail once (`n = 0`: the next one).
    pub fn fail_alloc_after(&self, n: i64) {
        self.fail_countdown.store(n, Ordering::SeqCst);
    }

    /// HOOK(zapyield): runs `hook` at every remote TLB flush request, after counting it (the
    /// flusher holds the MMU lock: the hook must not take it, nor panic); `None` removes it.
    pub fn on_flush(&self, hook: Option<YieldHook>) {
        *self.flush_hook.lock() = hook;
    }

    /// Allocation attempts so far (pages and headers).
    pub fn alloc_attempts(&self) -> u64 {
        self.allocs.load(Ordering::Relaxed)
    }

    /// How many remote TLB flushes had been requested when the last table page was freed: a
    /// table the CPU may walk must only be freed after the flush that follows its unlinking.
    pub fn flushes_at_last_table_free(&self) -> usize {
        self.flushes_at_table_free.load(Ordering::Relaxed)
    }

    /// Live counts.
    pub fn counts(&self) -> EnvCounts {
        EnvCounts {
            tables: self.tables.load(Ordering::Relaxed),
            external_spts: self.external_spts.load(Ordering::Relaxed),
            headers: self.headers.load(Ordering::Relaxed),
            tlb_flushes: self.tlb_flushes.load(Ordering::Relaxed),
            injected_failures: self.injected_failures.load(Ordering::Relaxed),
        }
    }

    fn should_fail(&self) -> bool {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.fail_countdown.load(Ordering::SeqCst);
        loop {
            if cur < 0 {
                return false;
            }
            let next = if cur == 0 { -1 } else { cur - 1 };
            match self.fail_countdown.compare_exchange(
                cur,
                next,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) if cur == 0 => {
                    self.injected_failures.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Ok(_) => return false,
                Err(c) => cur = c,
            }
        }
    }

    fn index_of(&self, pfn: Pfn) -> usize {
        let idx = pfn
            .raw()
            .checked_sub(BASE_PFN)
            .expect("PFN below the arena") as usize;
        assert!(idx < self.arena.pages, "PFN {pfn:?} beyond the arena");
        idx
    }

    fn counter(&self, kind: PageKind) -> &AtomicUsize {
        match kind {
            PageKind::Table => &self.tables,
            PageKind::ExternalSpt => &self.external_spts,
        }
    }

    /// A zeroed arena page, without accounting or failure injection.
    pub fn alloc_raw(&self) -> Option<Frame> {
        let idx = self.free.lock().pop()? as usize;
        let prev = self.state[idx].swap(USED, Ordering::AcqRel);
        assert_eq!(prev, FREE, "page handed out twice");
        // SAFETY: idx < pages, so the page lies inside the arena.
        let virt = unsafe { self.arena.base.as_ptr().add(idx * 4096) };
        // SAFETY: we own the page now (it was on the free list).
        unsafe { std::ptr::write_bytes(virt, 0, 4096) };
        // SAFETY: `virt` maps this PFN in the arena, is 4096-aligned and ours.
        Some(unsafe { Frame::from_raw(Pfn::new(BASE_PFN + idx as u64), NonNull::new(virt)?) })
    }

    /// Returns a page from [`HostEnv::alloc_raw`], poisoning it.
    pub fn free_raw(&self, frame: Frame) {
        let idx = self.index_of(frame.pfn());
        let prev = self.state[idx].swap(FREE, Ordering::AcqRel);
        assert_eq!(prev, USED, "double free of {:?}", frame.pfn());
        // Poison so use-after-free shows up as garbage entries.
        // SAFETY: the page is ours until it is back on the free list.
        unsafe { std::ptr::write_bytes(frame.virt().as_ptr(), 0xa5, 4096) };
        self.free.lock().push(idx as u32);
    }

    /// Pages the software TDX module took for its PAMT.
    pub fn meta_pages(&self) -> usize {
        self.meta.load(Ordering::Relaxed)
    }

    /// Pages of the arena.
    pub fn capacity(&self) -> usize {
        self.arena.pages
    }

    /// Whether a PFN is an arena page currently handed out.
    pub fn is_allocated(&self, pfn: Pfn) -> bool {
        pfn.raw() >= BASE_PFN
            && ((pfn.raw() - BASE_PFN) as usize) < self.arena.pages
            && self.state[(pfn.raw() - BASE_PFN) as usize].load(Ordering::Relaxed) == USED
    }
}

impl Default for HostEnv {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: frames are distinct arena pages handed out once until freed (free list + state array),
// zeroed before hand-out; `table_of` maps PFNs back into the same arena; headers are boxed; the
// private array stores what was set.
unsafe impl MmuEnv for HostEnv {
    type Lock = HostRwLock;

    fn mmu_lock(&self) -> &HostRwLock {
        &self.lock
    }

    fn alloc_page(&self, kind: PageKind) -> Option<Frame> {
        if self.should_fail() {
            return None;
        }
        let f = self.alloc_raw()?;
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        Some(f)
    }

    fn free_page(&self, frame: Frame, kind: PageKind) {
        if kind == PageKind::Table {
            self.flushes_at_table_free
                .store(self.tlb_flushes.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.free_raw(frame);
        self.counter(kind).fetch_sub(1, Ordering::Relaxed);
    }

    fn alloc_header(&self) -> Option<HeaderSlot> {
        if self.should_fail() {
            return None;
        }
        let b: Box<MaybeUninit<MmuPage>> = Box::new(MaybeUninit::uninit());
        self.headers.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a fresh box, valid and aligned for an MmuPage, ownership passed to the slot.
        Some(unsafe { HeaderSlot::from_raw(NonNull::from(Box::leak(b))) })
    }

    fn free_header(&self, slot: HeaderSlot) {
        // SAFETY: every slot came from `Box::leak` in `alloc_header`.
        drop(unsafe { Box::from_raw(slot.as_ptr().as_ptr()) });
        self.headers.fetch_sub(1, Ordering::Relaxed);
    }

    fn table_of(&self, pfn: Pfn) -> Option<NonNull<Table>> {
        let idx = self.index_of(pfn);
        assert!(self.is_allocated(pfn), "walk into a freed page {pfn:?}");
        // SAFETY: idx < pages.
        let p = unsafe { self.arena.base.as_ptr().add(idx * 4096) };
        Some(NonNull::new(p).expect("arena pointer").cast())
    }

    unsafe fn set_page_private(&self, pfn: Pfn, value: usize) {
        self.private[self.index_of(pfn)].store(value, Ordering::Release);
    }

    fn page_private(&self, pfn: Pfn) -> usize {
        self.private[self.index_of(pfn)].load(Ordering::Acquire)
    }

    fn flush_remote_tlbs(&self, _start: Gfn, _pages: u64) {
        self.tlb_flushes.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = self.flush_hook.lock().as_ref() {
            hook();
        }
    }
}

// SAFETY: `map` returns arena pages only (4096-aligned, alive as long as the env), `None`
// elsewhere; `alloc_meta` hands out zeroed arena pages.
unsafe impl tdx::swmod::PhysMem for HostEnv {
    fn map(&self, pfn: Pfn) -> Option<NonNull<tdx::swmod::PageWords>> {
        let idx = pfn.raw().checked_sub(BASE_PFN)? as usize;
        if idx >= self.arena.pages {
            return None;
        }
        // SAFETY: idx < pages.
        NonNull::new(unsafe { self.arena.base.as_ptr().add(idx * 4096) }).map(NonNull::cast)
    }

    fn alloc_meta(&self) -> Option<Frame> {
        let f = self.alloc_raw()?;
        self.meta.fetch_add(1, Ordering::Relaxed);
        Some(f)
    }

    fn free_meta(&self, frame: Frame) {
        self.free_raw(frame);
        self.meta.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to `HostEnv`.
unsafe impl tdx::swmod::PhysMem for &HostEnv {
    fn map(&self, pfn: Pfn) -> Option<NonNull<tdx::swmod::PageWords>> {
        (**self).map(pfn)
    }
    fn alloc_meta(&self) -> Option<Frame> {
        (**self).alloc_meta()
    }
    fn free_meta(&self, frame: Frame) {
        (**self).free_meta(frame)
    }
}

/// SHA-512 compression from the `sha2` crate: the host's [`tdx::swmod::Sha512Compress`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha2Compress;

impl tdx::swmod::Sha512Compress for Sha2Compress {
    fn compress(&self, state: &mut [u64; 8], block: &[u8; 128]) {
        let b = sha2::digest::generic_array::GenericArray::clone_from_slice(block);
        sha2::compress512(state, &[b]);
    }
}
