// SPDX-License-Identifier: GPL-2.0-only
//! The MMU page header (upstream `struct kvm_mmu_page`) and the external-SPT pointer's lifecycle.
//!
//! Every table page of a root has a header, found from the table's PFN through `page->private`
//! as upstream's `sptep_to_sp()` does. For TDX the header carries the **external SPT**: the page
//! that holds the same table inside the TDX module (the Secure-EPT page). Its lifecycle has
//! exactly one place per step:
//! - *allocation*: [`crate::cache::VcpuMmuCaches::take_table`] pops it from the per-vCPU
//!   private-SPT cache together with the mirror table and the header, so a mirror page is never
//!   built without one;
//! - *initialisation*: [`MmuPage::install_child`] stores it; [`MmuPage::install_root`] has no
//!   parameter for it, because the S-EPT root lives in the TDX module's TD control structures;
//! - *freeing*: [`MmuPage::destroy`], which frees it only if the external side released it, and
//!   has nothing to free for shared pages and the mirror root (`None`).
//!
//! # Invariants
//!
//! `external_spt.is_some()` if and only if the page belongs to the mirror root and is not the root.

use crate::addr::{Gfn, Pfn};
use crate::env::{Frame, HeaderSlot, MmuEnv, PageKind, Table};
use crate::level::Level;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Which root a page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootKind {
    /// The shared (direct) root: walked by the CPU, no external table.
    Shared,
    /// The mirror root: walked by KVM only; every change is propagated to the external table.
    Mirror,
}

/// What a page is (upstream `union kvm_mmu_page_role`, reduced to what a TDP MMU needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// Level of the entries in this table.
    pub level: Level,
    /// The root this page belongs to.
    pub root_kind: RootKind,
    /// Whether this page is a root.
    pub is_root: bool,
}

/// The external (S-EPT) page of a mirror table, in the TDX module's hands while linked.
///
/// Only its frame number leaves the crate: the host must not write a page the TDX module owns,
/// so no `&Frame` (whose owner API writes the page) is handed out.
#[derive(Debug)]
pub struct ExternalSpt(Frame);

impl ExternalSpt {
    /// The page's frame, for the backend to pass to `TDH.MEM.SEPT.ADD` and friends.
    pub fn pfn(&self) -> Pfn {
        self.0.pfn()
    }
}

/// What the external side did with an external SPT when its table was freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SptRelease {
    /// The page is back in host hands and may be freed.
    Returned,
    /// The TDX module would not give it back: it is leaked on purpose (and counted), never reused.
    Leaked,
}

/// Everything a new non-root table needs, popped from the vCPU caches in one go.
#[derive(Debug)]
pub struct NewTable {
    pub(crate) header: HeaderSlot,
    pub(crate) table: Frame,
    /// `Some` exactly for mirror tables.
    pub(crate) external: Option<Frame>,
}

/// An MMU page header.
#[derive(Debug)]
pub struct MmuPage {
    role: Role,
    gfn: Gfn,
    table: Frame,
    external_spt: Option<ExternalSpt>,
    /// Link in the MMU's deferred-free list.
    deferred_next: AtomicPtr<MmuPage>,
}

/// A pointer to an installed header.
///
/// # Invariants
///
/// Points to an initialised `MmuPage` whose table's `page->private` points back to it. It stays
/// valid while the page is reachable from a root and the MMU lock is held, or while the holder
/// owns the page exclusively (unlinked, not yet destroyed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRef(NonNull<MmuPage>);

impl PageRef {
    /// The header behind a table PFN found in a present non-leaf entry.
    ///
    /// # Safety
    ///
    /// `pfn` is the table page of an installed header of `env`'s MMU, and the caller keeps it
    /// alive as [`PageRef`]'s invariant requires.
    /// Returns `None` if the page has no header (a broken invariant the caller reports).
    pub(crate) unsafe fn from_table_pfn<E: MmuEnv>(env: &E, pfn: Pfn) -> Option<PageRef> {
        // INVARIANT: the caller guarantees `pfn` is an installed table kept alive.
        NonNull::new(env.page_private(pfn) as *mut MmuPage).map(PageRef)
    }

    /// The header.
    pub fn get(&self) -> &MmuPage {
        // SAFETY: by the type invariant the header is initialised and alive.
        unsafe { self.0.as_ref() }
    }

    pub(crate) fn as_ptr(self) -> *mut MmuPage {
        self.0.as_ptr()
    }
}

impl MmuPage {
    /// The page's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// First GFN covered by this table (in the root's GFN space).
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// The table page, read-only (entries change only through the MMU's transition layer).
    pub fn table(&self) -> &Table {
        self.table.table()
    }

    /// The table page's frame number. The `Frame` itself stays inside the crate: its owner API
    /// would let the holder write entries.
    pub fn pfn(&self) -> Pfn {
        self.table.pfn()
    }

    /// The external SPT: `Some` for non-root mirror pages only.
    pub fn external_spt(&self) -> Option<&ExternalSpt> {
        self.external_spt.as_ref()
    }

    fn install<E: MmuEnv>(env: &E, slot: HeaderSlot, page: MmuPage) -> PageRef {
        let pfn = page.table.pfn();
        let raw = slot.into_raw();
        // SAFETY: `raw` is valid storage for an `MmuPage` owned by us (HeaderSlot invariant).
        unsafe { raw.as_ptr().write(core::mem::MaybeUninit::new(page)) };
        let ptr = raw.cast::<MmuPage>();
        // SAFETY: the MMU core links a table page it owns to its header.
        unsafe { env.set_page_private(pfn, ptr.as_ptr() as usize) };
        // INVARIANT: initialised above, `page->private` points back.
        PageRef(ptr)
    }

    /// Builds a root header: never an external SPT (the S-EPT root is in the TD's TDR/TDCS).
    pub(crate) fn install_root<E: MmuEnv>(
        env: &E,
        slot: HeaderSlot,
        table: Frame,
        level: Level,
        root_kind: RootKind,
        gfn: Gfn,
    ) -> PageRef {
        let role = Role {
            level,
            root_kind,
            is_root: true,
        };
        Self::install(
            env,
            slot,
            MmuPage {
                role,
                gfn,
                table,
                external_spt: None,
                deferred_next: AtomicPtr::new(core::ptr::null_mut()),
            },
        )
    }

    /// Builds the header of a new non-root table from a bundle popped from the caches.
    ///
    /// Returns the bundle back if it does not fit the root (a mirror table without an external
    /// page or a shared table with one), which [`crate::cache::VcpuMmuCaches::take_table`]
    /// never produces.
    pub(crate) fn install_child<E: MmuEnv>(
        env: &E,
        new: NewTable,
        level: Level,
        root_kind: RootKind,
        gfn: Gfn,
    ) -> Result<PageRef, NewTable> {
        if new.external.is_some() != (root_kind == RootKind::Mirror) {
            return Err(new);
        }
        let role = Role {
            level,
            root_kind,
            is_root: false,
        };
        Ok(Self::install(
            env,
            new.header,
            MmuPage {
                role,
                gfn,
                table: new.table,
                external_spt: new.external.map(ExternalSpt),
                deferred_next: AtomicPtr::new(core::ptr::null_mut()),
            },
        ))
    }

    /// Takes a never-published child apart again (a lost compare-exchange race or a refused
    /// external link) so its pages can go back to the vCPU caches.
    ///
    /// # Safety
    ///
    /// `page` was returned by [`MmuPage::install_child`], was never reachable by another thread,
    /// and is not used afterwards.
    pub(crate) unsafe fn uninstall_unused<E: MmuEnv>(env: &E, page: PageRef) -> NewTable {
        // SAFETY: the caller owns the initialised header exclusively.
        let hdr = unsafe { page.0.as_ptr().read() };
        // SAFETY: the MMU core unlinks a table page it owns from its header.
        unsafe { env.set_page_private(hdr.table.pfn(), 0) };
        // SAFETY: the storage came from a `HeaderSlot` in `install`; it is ours again.
        let header = unsafe { HeaderSlot::from_raw(page.0.cast()) };
        NewTable {
            header,
            table: hdr.table,
            external: hdr.external_spt.map(|e| e.0),
        }
    }

    /// Frees a page that is no longer reachable: its table, its header and, if the external side
    /// returned it, its external SPT. Returns whether an external SPT was leaked.
    ///
    /// # Safety
    ///
    /// `page` is unreachable from any root, no walker can still hold it (the caller holds the MMU
    /// lock exclusively, or owns the page since before it was unlinked), and it is not used again.
    pub(crate) unsafe fn destroy<E: MmuEnv>(
        env: &E,
        page: PageRef,
        external: Option<SptRelease>,
    ) -> bool {
        // SAFETY: exclusive ownership per the caller's guarantee.
        let hdr = unsafe { page.0.as_ptr().read() };
        let mut leaked = false;
        match (hdr.external_spt, external) {
            (Some(spt), Some(SptRelease::Returned)) => env.free_page(spt.0, PageKind::ExternalSpt),
            (Some(_spt), _) => {
                // Leaked on purpose: the TDX module still owns it (or never said it let go), so
                // the page must never go back to the allocator. Dropping the `Frame` value frees
                // nothing (only `MmuEnv::free_page` does); the count is what remains of it.
                leaked = true;
            }
            (None, _) => {}
        }
        // SAFETY: the MMU core unlinks a table page it owns from its header.
        unsafe { env.set_page_private(hdr.table.pfn(), 0) };
        env.free_page(hdr.table, PageKind::Table);
        // SAFETY: the storage came from a `HeaderSlot` in `install`.
        env.free_header(unsafe { HeaderSlot::from_raw(page.0.cast()) });
        leaked
    }
}

/// A lock-free stack of unlinked pages waiting for the exclusive lock before they are freed.
///
/// Pages unlinked under the *shared* lock (a huge page replacing a table in the shared root) may
/// still be under another walker's feet. Every walker holds the MMU lock, so once the exclusive
/// side is taken nobody can: that is when [`DeferredFree::drain`] runs (KVM uses RCU for the
/// same purpose because it also walks locklessly; this MMU never does).
#[derive(Debug, Default)]
pub(crate) struct DeferredFree {
    head: AtomicPtr<MmuPage>,
}

impl DeferredFree {
    pub(crate) const fn new() -> Self {
        DeferredFree {
            head: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Parks an unlinked page.
    pub(crate) fn push(&self, page: PageRef) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            page.get().deferred_next.store(head, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                page.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every parked page; `f` gets each one.
    pub(crate) fn drain(&self, mut f: impl FnMut(PageRef)) {
        let mut cur = self.head.swap(core::ptr::null_mut(), Ordering::Acquire);
        while let Some(p) = NonNull::new(cur) {
            let page = PageRef(p);
            cur = page.get().deferred_next.load(Ordering::Relaxed);
            f(page);
        }
    }
}
