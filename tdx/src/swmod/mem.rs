// SPDX-License-Identifier: GPL-2.0-only
//! Host physical memory as the software TDX module sees it.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;
use mmu::env::Frame;
use mmu::Pfn;

/// One 4 KiB page viewed as 512 atomic words, the way the module reads and writes S-EPT pages,
/// control structures and its own metadata.
#[repr(C, align(4096))]
pub struct PageWords(pub [AtomicU64; 512]);

/// Access to host memory for the software module.
///
/// # Safety
///
/// Implementors guarantee that `map(pfn)` returns, for every PFN inside a range the module was
/// given as a TDMR, a 4096-aligned mapping of that page valid for reads and writes for the
/// module's lifetime, and `None` for PFNs they cannot map; and that `alloc_meta` returns zeroed
/// pages satisfying [`Frame`]'s invariant.
pub unsafe trait PhysMem: Sync {
    /// The mapping of host page `pfn` (the kernel's `__va`).
    fn map(&self, pfn: Pfn) -> Option<NonNull<PageWords>>;

    /// A zeroed page for the module's own bookkeeping (PAMT). May sleep: only called while the
    /// module is being set up, never inside a SEAMCALL.
    fn alloc_meta(&self) -> Option<Frame>;

    /// Returns a bookkeeping page.
    fn free_meta(&self, frame: Frame);
}

/// Reads or writes a page as words.
pub(crate) fn words<M: PhysMem>(mem: &M, pfn: Pfn) -> Option<&PageWords> {
    // SAFETY: `PhysMem` guarantees a valid, aligned mapping for the module's lifetime; the
    // page is only accessed through atomics.
    mem.map(pfn).map(|p| unsafe { p.as_ref() })
}
