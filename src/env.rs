// SPDX-License-Identifier: GPL-2.0-only
//! The core crates' environment traits implemented with kernel services: pages from the page
//! allocator (direct map, `page->private`), headers from kmalloc, the MMU lock as an `rwlock_t`,
//! SHA-512 from the crypto API, and host memory for the software TDX module.

use crate::glue;
use crate::stats;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use mmu::env::{Frame, HeaderSlot, MmuEnv, PageKind, Table};
use mmu::lock::RawRwLock;
use mmu::page::MmuPage;
use mmu::{Gfn, Pfn};
use tdx::swmod::{PageWords, PhysMem, Sha512Compress};

/// An `rwlock_t` allocated by the glue.
///
/// # Invariants
///
/// `0` points to an initialised `rwlock_t` owned by this value.
pub(crate) struct KernelRwLock(NonNull<c_void>);

// SAFETY: an rwlock_t is meant to be shared between CPUs.
unsafe impl Send for KernelRwLock {}
// SAFETY: as above.
unsafe impl Sync for KernelRwLock {}

impl KernelRwLock {
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: plain allocation + rwlock_init in the glue.
        NonNull::new(unsafe { glue::tdxkvm_rwlock_new() }).map(KernelRwLock)
    }
}

impl Drop for KernelRwLock {
    fn drop(&mut self) {
        // SAFETY: owned by us (type invariant), nobody holds it: `&mut self`.
        unsafe { glue::tdxkvm_rwlock_free(self.0.as_ptr()) };
    }
}

// SAFETY: read_lock/write_lock of an rwlock_t give reader-writer exclusion.
unsafe impl RawRwLock for KernelRwLock {
    fn lock_shared(&self) {
        // SAFETY: a valid rwlock_t (type invariant).
        unsafe { glue::tdxkvm_read_lock(self.0.as_ptr()) }
    }
    unsafe fn unlock_shared(&self) {
        // SAFETY: the caller holds the read side.
        unsafe { glue::tdxkvm_read_unlock(self.0.as_ptr()) }
    }
    fn lock_exclusive(&self) {
        // SAFETY: a valid rwlock_t.
        unsafe { glue::tdxkvm_write_lock(self.0.as_ptr()) }
    }
    unsafe fn unlock_exclusive(&self) {
        // SAFETY: the caller holds the write side.
        unsafe { glue::tdxkvm_write_unlock(self.0.as_ptr()) }
    }
    // HOOK(gmemfault): upstream's yield points in long walks under the write side.
    fn needbreak(&self) -> bool {
        // SAFETY: a valid rwlock_t; reads flags only.
        unsafe { glue::tdxkvm_rwlock_needbreak(self.0.as_ptr()) }
    }
    unsafe fn resched_exclusive(&self) {
        // SAFETY: the caller holds the write side and may sleep; it is held again on return.
        unsafe { glue::tdxkvm_write_resched(self.0.as_ptr()) }
    }
}

/// A zeroed page from the page allocator, counted in the module's statistics.
pub(crate) fn alloc_frame(kind: stats::Kind) -> Option<Frame> {
    // SAFETY: get_zeroed_page(GFP_KERNEL_ACCOUNT); may sleep, callers are in process context.
    let virt = NonNull::new(unsafe { glue::tdxkvm_alloc_page() })?;
    // SAFETY: `virt` is a direct-map address of a page we own.
    let pfn = Pfn::new(unsafe { glue::tdxkvm_virt_to_pfn(virt.as_ptr()) });
    stats::inc(kind);
    // SAFETY: a zeroed, page-aligned direct-map page of 4096 bytes, owned by the new `Frame`.
    Some(unsafe { Frame::from_raw(pfn, virt.cast()) })
}

/// Returns a page from [`alloc_frame`].
pub(crate) fn free_frame(frame: Frame, kind: stats::Kind) {
    // SAFETY: the frame came from `alloc_frame` and is not used again.
    unsafe { glue::tdxkvm_free_page(frame.virt().as_ptr().cast()) };
    stats::dec(kind);
}

/// A zeroed page owned by a VM or vCPU object (kvm_run, PIO data, coalesced-MMIO ring),
/// counted as `kind` and freed on drop.
pub(crate) struct OwnedPage {
    frame: Option<Frame>,
    kind: stats::Kind,
}

impl OwnedPage {
    /// A zeroed page, counted as `kind`.
    pub(crate) fn new(kind: stats::Kind) -> Option<Self> {
        Some(OwnedPage {
            frame: Some(alloc_frame(kind)?),
            kind,
        })
    }

    /// The page's direct-map address.
    pub(crate) fn virt(&self) -> *mut u8 {
        self.frame
            .as_ref()
            .map_or(core::ptr::null_mut(), |f| f.virt().as_ptr())
    }
}

impl Drop for OwnedPage {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            free_frame(f, self.kind);
        }
    }
}

/// The environment of one VM's MMU.
pub(crate) struct KernelEnv {
    lock: KernelRwLock,
    /// Flushes and kicks the VM's running vCPUs ([`crate::run::tlb`]).
    tlb: crate::run::tlb::RemoteTlb,
}

impl KernelEnv {
    pub(crate) fn new() -> Option<Self> {
        Some(KernelEnv {
            lock: KernelRwLock::new()?,
            tlb: crate::run::tlb::RemoteTlb::new()?,
        })
    }

    /// The VM's remote-TLB state (the run loop's entry and exit mark the running CPUs).
    pub(crate) fn tlb(&self) -> &crate::run::tlb::RemoteTlb {
        &self.tlb
    }
}

// SAFETY: pages come from the page allocator zeroed and are handed out once; `table_of` is the
// direct map (`pfn_to_kaddr`) of the same pages; headers are kzalloc'ed; `page_private` is the
// page's own `private` word, which the allocator leaves to the owner of an allocated page.
unsafe impl MmuEnv for KernelEnv {
    type Lock = KernelRwLock;

    fn mmu_lock(&self) -> &KernelRwLock {
        &self.lock
    }

    fn alloc_page(&self, kind: PageKind) -> Option<Frame> {
        alloc_frame(match kind {
            PageKind::Table => stats::Kind::Table,
            PageKind::ExternalSpt => stats::Kind::ExternalSpt,
        })
    }

    fn free_page(&self, frame: Frame, kind: PageKind) {
        free_frame(
            frame,
            match kind {
                PageKind::Table => stats::Kind::Table,
                PageKind::ExternalSpt => stats::Kind::ExternalSpt,
            },
        )
    }

    fn alloc_header(&self) -> Option<HeaderSlot> {
        // SAFETY: kzalloc of an MmuPage-sized, suitably aligned (kmalloc aligns to at least 8)
        // object.
        let p = NonNull::new(unsafe { glue::tdxkvm_kzalloc(core::mem::size_of::<MmuPage>()) })?;
        stats::inc(stats::Kind::Header);
        // SAFETY: fresh storage for an MmuPage, ownership passed to the slot.
        Some(unsafe { HeaderSlot::from_raw(p.cast::<MaybeUninit<MmuPage>>()) })
    }

    fn free_header(&self, slot: HeaderSlot) {
        // SAFETY: every slot came from kzalloc in `alloc_header`.
        unsafe { glue::tdxkvm_kfree(slot.as_ptr().as_ptr().cast()) };
        stats::dec(stats::Kind::Header);
    }

    fn table_of(&self, pfn: Pfn) -> Option<NonNull<Table>> {
        // SAFETY: `pfn` is a page this environment allocated (trait contract of the callers).
        let p = unsafe { glue::tdxkvm_pfn_to_virt(pfn.raw()) };
        // pfn_to_kaddr never returns NULL for RAM; if it does, the MMU marks the VM bugged.
        NonNull::new(p.cast::<Table>())
    }

    unsafe fn set_page_private(&self, pfn: Pfn, value: usize) {
        // SAFETY: `pfn` is a page this environment allocated, and the MMU core (the only caller,
        // per the trait's contract) owns it.
        unsafe { glue::tdxkvm_set_page_private(pfn.raw(), value) }
    }

    fn page_private(&self, pfn: Pfn) -> usize {
        // SAFETY: as above.
        unsafe { glue::tdxkvm_page_private(pfn.raw()) }
    }

    fn flush_remote_tlbs(&self, _start: Gfn, _pages: u64) {
        // Every vCPU flushes its whole ASID (no ranged flush on SVM without FlushByAsid).
        self.tlb.flush();
    }
    // HOOK(gmemfault): the teardown of a VM's tables reschedules once per table.
    fn cond_resched(&self) {
        // SAFETY: teardown runs in process context without the MMU lock (`&mut TdpMmu`).
        unsafe { glue::tdxkvm_cond_resched() }
    }
}

/// All of RAM, as the software TDX module sees it.
pub(crate) struct KernelPhys;

// SAFETY: `map` returns the direct-map address of valid RAM pages only (`pfn_valid`), which stay
// mapped while the kernel runs; `alloc_meta` returns zeroed pages from the page allocator.
unsafe impl PhysMem for KernelPhys {
    fn map(&self, pfn: Pfn) -> Option<NonNull<PageWords>> {
        // SAFETY: pfn_valid has no preconditions.
        if !unsafe { glue::tdxkvm_pfn_valid(pfn.raw()) } {
            return None;
        }
        // SAFETY: a valid RAM PFN has a direct-map address.
        NonNull::new(unsafe { glue::tdxkvm_pfn_to_virt(pfn.raw()) }.cast())
    }

    fn alloc_meta(&self) -> Option<Frame> {
        alloc_frame(stats::Kind::Pamt)
    }

    fn free_meta(&self, frame: Frame) {
        free_frame(frame, stats::Kind::Pamt)
    }
}

/// SHA-512 compression through the kernel's crypto API.
pub(crate) struct KernelSha;

impl Sha512Compress for KernelSha {
    fn compress(&self, state: &mut [u64; 8], block: &[u8; 128]) {
        // SAFETY: `state` is 8 words and `block` 128 bytes, as the glue expects; the glue was
        // initialised at module load (the software module is only built if that succeeded).
        let r = unsafe { glue::tdxkvm_sha512_compress(state.as_mut_ptr(), block.as_ptr()) };
        if r != 0 {
            // Poison the state: a measurement computed without the hash must not look valid.
            *state = [0; 8];
        }
    }
}
