// SPDX-License-Identifier: GPL-2.0-only
//! What the MMU core needs from its environment, as one small trait.
//!
//! The kernel module implements [`MmuEnv`] with `alloc_page(GFP_KERNEL_ACCOUNT)`, `__va()`,
//! `page->private`, an rwlock and `kvm_flush_remote_tlbs_range()`; host tests implement it with an
//! arena of pages that counts every allocation and can be told to fail.

use crate::addr::{Gfn, Pfn};
use crate::level::ENTRIES_PER_TABLE;
use crate::lock::RawRwLock;
use crate::page::MmuPage;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

/// One page-table page: 512 entries, read and written atomically as KVM does with
/// `READ_ONCE`/`cmpxchg64`.
///
/// Read-only outside the crate ([`Table::get`], [`Table::iter`]). The walker trusts a present
/// non-leaf entry enough to descend into the page it names, and the zap and teardown code trust
/// it enough to free that page, so an entry may only change through the MMU's transition layer
/// (`tdp/transition.rs`), which keeps the accounting, the external table and the page
/// lifecycle in step with it:
///
/// ```compile_fail,E0616
/// fn clobber(t: &mmu::env::Table) {
///     t.0[0].store(0, core::sync::atomic::Ordering::Relaxed);
/// }
/// ```
///
/// ```compile_fail,E0624
/// fn clobber(t: &mmu::env::Table) {
///     t.entry(0).store(0, core::sync::atomic::Ordering::Relaxed);
/// }
/// ```
///
/// Reading is what outside code can do:
///
/// ```
/// fn present(t: &mmu::env::Table) -> usize {
///     t.iter().filter(|&e| e != 0).count() + t.get(512).map_or(0, |_| 1)
/// }
/// ```
#[repr(C, align(4096))]
pub struct Table([AtomicU64; ENTRIES_PER_TABLE]);

const _: () = assert!(size_of::<Table>() == 4096);

impl Table {
    /// Entry `index` as last written (`READ_ONCE`), or `None` if `index` is not below 512.
    #[inline]
    pub fn get(&self, index: usize) -> Option<u64> {
        self.0.get(index).map(|e| e.load(Ordering::Acquire))
    }

    /// Every entry in index order, each read once as the iterator reaches it.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.0.iter().map(|e| e.load(Ordering::Acquire))
    }

    /// Reads entry `index` (taken modulo 512; every caller passes an in-range index).
    #[inline]
    pub(crate) fn load(&self, index: usize) -> u64 {
        self.0[index & (ENTRIES_PER_TABLE - 1)].load(Ordering::Acquire)
    }

    /// The entry `index` (taken modulo 512, as in [`Table::load`]), for writing.
    /// Crate-private: only the transition layer writes entries.
    #[inline]
    pub(crate) fn entry(&self, index: usize) -> &AtomicU64 {
        &self.0[index & (ENTRIES_PER_TABLE - 1)]
    }
}

/// What a page is allocated for; lets environments account per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// A page-table page of either root (KVM walks it; the CPU too for the shared root).
    Table,
    /// An external (private, S-EPT) table page handed to the TDX module.
    ExternalSpt,
}

/// A zero-filled 4 KiB host page owned by the holder of this value.
///
/// # Invariants
///
/// `virt` is the environment's mapping of `pfn`, valid for reads and writes of 4096 bytes and
/// 4096-aligned, until the frame is handed back with [`MmuEnv::free_page`].
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pfn: Pfn,
    virt: NonNull<u8>,
}

// SAFETY: a `Frame` is an owned page, like `Box<[u8; 4096]>`; moving it between threads is fine.
unsafe impl Send for Frame {}
// SAFETY: shared references expose the PFN, the address and the contents as atomics only.
unsafe impl Sync for Frame {}

impl Frame {
    /// Wraps a page.
    ///
    /// # Safety
    ///
    /// `virt` maps `pfn`, is 4096-aligned and valid for 4096 bytes of reads and writes, and the
    /// caller transfers ownership of that page to the new `Frame`.
    pub unsafe fn from_raw(pfn: Pfn, virt: NonNull<u8>) -> Self {
        // INVARIANT: guaranteed by the caller.
        Frame { pfn, virt }
    }

    /// The host frame number.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// The environment's mapping of the page.
    pub fn virt(&self) -> NonNull<u8> {
        self.virt
    }

    /// The page's 512 words, for its owner to fill or read (TD_PARAMS, a source page, ...).
    ///
    /// Sound to hand out because only the owner of a page can reach its `Frame`: a `Frame` is
    /// built with the unsafe [`Frame::from_raw`] or by [`MmuEnv::alloc_page`] and moves by
    /// value, and the MMU never lends out a `&Frame` of a page it owns (a table or an external
    /// SPT): [`crate::page::MmuPage`] and [`crate::page::ExternalSpt`] give out the PFN and a
    /// read-only [`Table`] only.
    ///
    /// ```compile_fail,E0599
    /// fn clobber(page: &mmu::page::MmuPage) {
    ///     page.frame().words()[0].store(0, core::sync::atomic::Ordering::Relaxed);
    /// }
    /// ```
    ///
    /// ```compile_fail,E0599
    /// fn clobber(spt: &mmu::page::ExternalSpt) {
    ///     spt.frame().words()[0].store(0, core::sync::atomic::Ordering::Relaxed);
    /// }
    /// ```
    pub fn words(&self) -> &[AtomicU64; ENTRIES_PER_TABLE] {
        &self.table().0
    }

    /// The page viewed as a page-table page.
    #[inline]
    pub(crate) fn table(&self) -> &Table {
        // SAFETY: by the type invariant `virt` is valid, aligned, 4096 bytes; `Table` is 512
        // atomics, valid for any bit pattern, and only accessed atomically.
        unsafe { self.virt.cast::<Table>().as_ref() }
    }
}

/// Storage for one [`MmuPage`] header (KVM's `mmu_page_header_cache` object).
///
/// # Invariants
///
/// `ptr` is valid, aligned storage for an `MmuPage` owned by the holder, until handed back with
/// [`MmuEnv::free_header`].
#[derive(Debug, PartialEq, Eq)]
pub struct HeaderSlot {
    ptr: NonNull<MaybeUninit<MmuPage>>,
}

// SAFETY: owned storage, like `Box<MaybeUninit<MmuPage>>`.
unsafe impl Send for HeaderSlot {}
// SAFETY: shared references expose nothing.
unsafe impl Sync for HeaderSlot {}

impl HeaderSlot {
    /// Wraps header storage.
    ///
    /// # Safety
    ///
    /// `ptr` is valid and aligned for an `MmuPage`, and ownership of it passes to the slot.
    pub unsafe fn from_raw(ptr: NonNull<MaybeUninit<MmuPage>>) -> Self {
        // INVARIANT: guaranteed by the caller.
        HeaderSlot { ptr }
    }

    /// The storage, for the environment to release it.
    pub fn as_ptr(&self) -> NonNull<MaybeUninit<MmuPage>> {
        self.ptr
    }

    /// Consumes the slot, returning its storage.
    pub(crate) fn into_raw(self) -> NonNull<MaybeUninit<MmuPage>> {
        self.ptr
    }
}

/// The environment of one VM's MMU.
///
/// # Safety
///
/// Implementors guarantee:
/// - `alloc_page` returns frames satisfying [`Frame`]'s invariant, zero-filled, each page handed
///   out at most once until freed;
/// - `table_of(pfn)`, for a page this environment handed out and that is not yet freed,
///   returns the mapping `alloc_page` returned in `Frame::virt`, or `None` if it cannot map it;
///   never a pointer to memory it did not allocate (the MMU turns `None` into a bugged VM);
/// - `alloc_header` returns slots satisfying [`HeaderSlot`]'s invariant;
/// - `page_private` returns the last value `set_page_private` stored for that page.
pub unsafe trait MmuEnv: Sync {
    /// The MMU lock type.
    type Lock: RawRwLock;

    /// The VM's MMU lock.
    fn mmu_lock(&self) -> &Self::Lock;

    /// Allocates one zeroed page, or `None` when memory is short. May sleep: never called with
    /// the MMU lock held.
    fn alloc_page(&self, kind: PageKind) -> Option<Frame>;

    /// Returns a page to the host.
    fn free_page(&self, frame: Frame, kind: PageKind);

    /// Allocates storage for one MMU page header. May sleep.
    fn alloc_header(&self) -> Option<HeaderSlot>;

    /// Releases header storage.
    fn free_header(&self, slot: HeaderSlot);

    /// The mapping of a page this environment handed out (`__va(pfn << 12)`), or `None` if
    /// there is none. The MMU only asks for pages it linked into a table, so `None` means a
    /// broken invariant: the walk stops and the VM is marked bugged.
    fn table_of(&self, pfn: Pfn) -> Option<NonNull<Table>>;

    /// Stores a word in the page's `page->private`.
    ///
    /// # Safety
    ///
    /// Only the MMU core calls this, for table pages it owns: it finds a table's header through
    /// this word ([`crate::page`]), so a value written by anybody else would turn into a wild
    /// header pointer.
    ///
    /// ```compile_fail,E0133
    /// fn forge<E: mmu::env::MmuEnv>(env: &E, pfn: mmu::Pfn) {
    ///     env.set_page_private(pfn, 0x1000);
    /// }
    /// ```
    unsafe fn set_page_private(&self, pfn: Pfn, value: usize);

    /// Reads the page's `page->private`.
    fn page_private(&self, pfn: Pfn) -> usize;

    /// Flushes guest TLB entries of `pages` frames from `start` in the shared root on every vCPU
    /// (KVM's `kvm_flush_remote_tlbs_range`). The mirror root never needs this: the TDX module
    /// does its own TLB tracking, driven by the external hooks.
    fn flush_remote_tlbs(&self, start: Gfn, pages: u64);

    /// HOOK(gmemfault): a reschedule point for long walks that hold no lock (the teardown of a
    /// big VM's tables, upstream's yielding `tdp_mmu_zap_root`). Nothing by default.
    fn cond_resched(&self) {}
}

// SAFETY: forwards every method to `E`, which upholds the contract.
unsafe impl<E: MmuEnv> MmuEnv for &E {
    type Lock = E::Lock;

    fn mmu_lock(&self) -> &Self::Lock {
        (**self).mmu_lock()
    }
    fn alloc_page(&self, kind: PageKind) -> Option<Frame> {
        (**self).alloc_page(kind)
    }
    fn free_page(&self, frame: Frame, kind: PageKind) {
        (**self).free_page(frame, kind)
    }
    fn alloc_header(&self) -> Option<HeaderSlot> {
        (**self).alloc_header()
    }
    fn free_header(&self, slot: HeaderSlot) {
        (**self).free_header(slot)
    }
    fn table_of(&self, pfn: Pfn) -> Option<NonNull<Table>> {
        (**self).table_of(pfn)
    }
    unsafe fn set_page_private(&self, pfn: Pfn, value: usize) {
        // SAFETY: the caller's guarantee is passed on unchanged.
        unsafe { (**self).set_page_private(pfn, value) }
    }
    fn page_private(&self, pfn: Pfn) -> usize {
        (**self).page_private(pfn)
    }
    fn flush_remote_tlbs(&self, start: Gfn, pages: u64) {
        (**self).flush_remote_tlbs(start, pages)
    }
    fn cond_resched(&self) {
        (**self).cond_resched()
    }
}
