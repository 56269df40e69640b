// SPDX-License-Identifier: GPL-2.0-only
//! guest_memfd (upstream `virt/kvm/guest_memfd.c`, 6.12), the module's own: the 6.12 kvm.ko's
//! is not available to a module.
//!
//! `KVM_CREATE_GUEST_MEMFD` makes a file with its own anonymous inode (`S_IFREG`, size fixed at
//! creation, block size 4 KiB), whose page cache holds the guest's private memory: no
//! read/write/mmap (the file has none of those operations), `fallocate` with `KEEP_SIZE` to
//! allocate, with `PUNCH_HOLE` to free. A punch hole first zaps the private mappings of every
//! memslot bound to the hole (for a TD through BLOCK/TRACK/REMOVE) and only then truncates the
//! page cache, so a page leaves the file only once the S-EPT gave it back. If the zap could
//! not finish (the VM is then bugged), the pages are kept for good instead (leaked on purpose).
//!
//! Folios are 2 MiB where the page index is 2 MiB aligned and the file covers the whole 2 MiB
//! (the page cache falls back to smaller folios when it cannot).
//!
//! # Holes in 2 MiB folios
//!
//! INVARIANT: a page leaves the page cache (and may be freed) only once no leaf of the mirror
//! or the S-EPT maps it, and every page a leaf maps is in the page cache. The mapping side
//! takes no folio reference of its own (as upstream), so the invariant is kept by order and by
//! what truncation may drop:
//! - the hole is zapped first ([`zap_bound`]); a 2 MiB leaf the hole cuts is split with
//!   TDH.MEM.PAGE.DEMOTE, and only the 4 KiB leaves inside the hole are removed. The 511 (or
//!   fewer) 4 KiB leaves left point into the same 2 MiB folio, which stays in the page cache;
//! - truncation then frees only folios wholly inside the hole. A large folio straddling the
//!   hole's boundary is kept whole and its part of the hole is zeroed (glue
//!   `gmem_keep_straddling_folio`): 6.12's `truncate_inode_partial_folio` would try to split
//!   it and, if the split fails on a clean folio, drop the whole folio from the page cache
//!   while the S-EPT still maps its other pages — a use-after-free. The hole's pages in such a
//!   folio are freed when the folio goes whole (a larger hole, or the file's release);
//! - if the zap cannot finish (VM bugged), nothing of the hole is freed (leaked on purpose).
//!
//! The file holds a VM reference (the file pins the VM, not the other way round); a memslot
//! names its file by [`GmemId`] and the VM lists its open files ([`MemState::gmem_files`]), so
//! release — under `slots_lock` — zaps what the file backed and unregisters it before it goes.
//!
//! Locking: `slots_lock` → the mapping's invalidate lock → the MMU lock.

use crate::glue;
use crate::mem_abi::KvmCreateGuestMemfd;
use crate::memslot::{err, KVecStore, MemState};
use crate::vm::Vm;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_long, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use memcore::gmem::{Binding, Bindings, Falloc};
use memcore::memslot::{GmemId, GmemSlot, Memslot};
use memcore::Errno;
use mmu::cache::SplitCache;
use mmu::tdp::ZapTarget;

/// Source of [`GmemId`]s: never reused while the module is loaded.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One guest_memfd file (upstream `struct kvm_gmem`).
pub(crate) struct GmemFile {
    id: GmemId,
    /// The `struct file`, set (under `slots_lock`) once made; valid while registered.
    file: AtomicPtr<c_void>,
    /// A counted VM reference ([`Vm::get_raw`]), given back when the file goes.
    vm: *const Vm,
    /// The memslots bound to ranges of this file.
    ///
    /// INVARIANT: touched only by holders of the owning VM's `slots_lock`, through
    /// [`GmemFile::bindings`] / [`GmemFile::bindings_mut`]. A `GmemFile` is only ever shared
    /// (`&GmemFile`): file operations reach it without `slots_lock`, so no `&mut GmemFile`
    /// may exist while it is registered, and the only mutable state sits in cells.
    bindings: UnsafeCell<Bindings<KVecStore<Binding>>>,
}

/// A registered open file in [`MemState::gmem_files`].
pub(crate) struct GmemRef {
    id: GmemId,
    /// INVARIANT: points at a live `GmemFile` for as long as this entry is registered: release
    /// unregisters it (under `slots_lock`) before freeing the file.
    file: *mut GmemFile,
}

// SAFETY: the pointer is dereferenced only under `slots_lock` (through `MemState`), which
// serialises every user of the `GmemFile` it names.
unsafe impl Send for GmemRef {}

impl GmemFile {
    /// The bindings, read-only.
    ///
    /// # Safety
    ///
    /// The caller holds the owning VM's `slots_lock`, and no reference from
    /// [`GmemFile::bindings_mut`] is live.
    unsafe fn bindings(&self) -> &Bindings<KVecStore<Binding>> {
        // SAFETY: the caller's contract (type invariant): no writer meanwhile.
        unsafe { &*self.bindings.get() }
    }

    /// The bindings, to change them.
    ///
    /// # Safety
    ///
    /// The caller holds the owning VM's `slots_lock` and no other reference to the bindings is
    /// live while the returned one is.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bindings_mut(&self) -> &mut Bindings<KVecStore<Binding>> {
        // SAFETY: the caller's contract (type invariant): the only reference.
        unsafe { &mut *self.bindings.get() }
    }

    fn vm(&self) -> &Vm {
        // SAFETY: `vm` is a counted reference this file holds until `Drop`.
        unsafe { &*self.vm }
    }
}

impl Drop for GmemFile {
    fn drop(&mut self) {
        // SAFETY: the reference taken at creation, given back once; may tear the VM down.
        unsafe { Vm::put_raw(self.vm) };
        crate::stats::dec(crate::stats::Kind::Gmem);
    }
}

/// Takes file `id` off the VM's list.
fn unregister(st: &mut MemState, id: GmemId) {
    let files = st.gmem_files.as_mut_slice();
    if let Some(i) = files.iter().position(|r| r.id == id) {
        let last = files.len() - 1;
        files.swap(i, last);
        // SAFETY: `last` is below the length, so `0..last` stays initialised; the entry given
        // up is a plain pointer and an id, with nothing to drop.
        unsafe { st.gmem_files.set_len(last) };
    }
}

fn lookup(st: &MemState, id: GmemId) -> Option<&GmemFile> {
    let r = st.gmem_files.iter().find(|r| r.id == id)?;
    // SAFETY: registered entries point at live files (INVARIANT of `GmemRef`); only shared
    // references to a `GmemFile` ever exist (INVARIANT of `GmemFile::bindings`).
    Some(unsafe { &*r.file })
}

/// `KVM_CREATE_GUEST_MEMFD` on `vm`.
pub(crate) fn create(vm: &Vm, arg: usize) -> Result<isize> {
    let a: KvmCreateGuestMemfd = UserSlice::new(arg, core::mem::size_of::<KvmCreateGuestMemfd>())
        .reader()
        .read()?;
    memcore::gmem::check_create(a.size, a.flags).map_err(err)?;
    let id = GmemId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    // Counted before the value exists: its `Drop` (also when the box cannot be allocated)
    // takes the count back.
    crate::stats::inc(crate::stats::Kind::Gmem);
    let file = KBox::new(
        GmemFile {
            id,
            file: AtomicPtr::new(core::ptr::null_mut()),
            vm: vm.get_raw(),
            bindings: UnsafeCell::new(Bindings::new(KVecStore::new())),
        },
        GFP_KERNEL_ACCOUNT,
    )?;
    let raw = KBox::into_raw(file);
    let mut st = vm.memslots().lock();
    if let Err(e) = st
        .gmem_files
        .push(GmemRef { id, file: raw }, GFP_KERNEL_ACCOUNT)
    {
        // SAFETY: not registered, no file made: still ours.
        drop(unsafe { KBox::from_raw(raw) });
        return Err(e.into());
    }
    let mut filep = core::ptr::null_mut();
    // SAFETY: `raw` stays valid until the file's release, which gives it back; `filep` is
    // written on success.
    let fd = unsafe { glue::tdxkvm_gmem_create(raw.cast(), a.size, &mut filep) };
    if fd < 0 {
        unregister(&mut st, id);
        // SAFETY: no file was made, and it is unregistered: still ours.
        drop(unsafe { KBox::from_raw(raw) });
        return Err(Error::from_errno(fd));
    }
    // SAFETY: registered and `slots_lock` held: release (which would free it) waits for it.
    unsafe { (*raw).file.store(filep, Ordering::Release) };
    // `slots_lock` is dropped here: a close racing with this return waits for it in release.
    Ok(fd as isize)
}

/// A counted reference to the `struct file` of the open guest_memfd `id` (upstream
/// `kvm_gmem_get_file`): `None` if it is closed or closing. The caller `fput`s it.
pub(crate) fn file_of(st: &MemState, id: GmemId) -> Option<*mut c_void> {
    let r = st.gmem_files.iter().find(|r| r.id == id)?;
    // SAFETY: registered entries point at live `GmemFile`s (INVARIANT of `GmemRef`); `st`
    // borrows `slots_lock`.
    let file = unsafe { (*r.file).file.load(Ordering::Acquire) };
    if file.is_null() {
        return None;
    }
    // SAFETY: the file's memory is live while it is registered (release unregisters under
    // `slots_lock` before it returns); a count already at zero is refused.
    unsafe { glue::tdxkvm_file_get_active(file) }.then_some(file)
}

/// A reference on a guest_memfd folio, dropped after the page is mapped (KVM keeps none: the
/// page stays in the file's page cache until a hole punch, which zaps it first).
pub(crate) struct FolioRef(*mut c_void);

impl Drop for FolioRef {
    fn drop(&mut self) {
        // SAFETY: the reference `tdxkvm_gmem_get_pfn` took, dropped once.
        unsafe { glue::tdxkvm_folio_put(self.0) };
    }
}

/// The page backing file page `index` of the open guest_memfd `id` (upstream
/// `kvm_gmem_get_pfn`): allocated and zeroed if new, from a 2 MiB folio where the file allows.
/// Returns the PFN of `index`, the folio's order and a reference held until it is mapped.
/// For `KVM_PRE_FAULT_MEMORY` and `KVM_TDX_INIT_MEM_REGION`'s destination page (`tdx_vm`).
///
/// # Errors
///
/// [`Errno::EFAULT`]: the file is closed (upstream: the slot's file is gone);
/// [`Errno::ENOMEM`]: no page.
pub(crate) fn get_pfn(
    st: kernel::sync::lock::Guard<'_, MemState, kernel::sync::lock::mutex::MutexBackend>,
    id: GmemId,
    index: u64,
) -> core::result::Result<(mmu::Pfn, u32, FolioRef), Errno> {
    let file = file_of(&st, id).ok_or(Errno::EFAULT)?;
    // The file reference keeps it open; `slots_lock` is not needed (nor wanted: allocation).
    drop(st);
    // SAFETY: a reference `file_of` took.
    unsafe { folio_of(file, index) }
}

/// The folio step of [`get_pfn`] and [`get_pfn_locked`]: the page at `index` of `file`, and
/// the file reference given back.
///
/// # Safety
///
/// `file` is a reference [`file_of`] took; it is consumed here.
unsafe fn folio_of(
    file: *mut c_void,
    index: u64,
) -> core::result::Result<(mmu::Pfn, u32, FolioRef), Errno> {
    let mut pfn = 0u64;
    let mut order = 0u32;
    // SAFETY: `file` is live (the caller's reference). Under `slots_lock` (get_pfn_locked) the
    // file's invalidate lock it takes nests inside it, as in a hole punch.
    let folio = unsafe { glue::tdxkvm_gmem_get_pfn(file, index, &mut pfn, &mut order) };
    // SAFETY: the caller's reference. If it is the last one (the fd was closed meanwhile), the
    // release is deferred to the task's return to userspace, after any `slots_lock` is dropped.
    unsafe { glue::tdxkvm_fput(file) };
    if folio.is_null() {
        return Err(Errno::ENOMEM);
    }
    Ok((mmu::Pfn::new(pfn), order, FolioRef(folio)))
}

/// As [`get_pfn`], with `slots_lock` held throughout: `KVM_TDX_INIT_MEM_REGION` holds it
/// across each page's PAGE.ADD, as upstream's `kvm_gmem_populate` runs under it (so no punch
/// hole, conversion or slot change can come between the lookup and the mapping).
///
/// # Errors
///
/// As [`get_pfn`].
pub(crate) fn get_pfn_locked(
    st: &MemState,
    id: GmemId,
    index: u64,
) -> core::result::Result<(mmu::Pfn, u32, FolioRef), Errno> {
    let file = file_of(st, id).ok_or(Errno::EFAULT)?;
    // SAFETY: a reference `file_of` took.
    unsafe { folio_of(file, index) }
}

/// Binds `slot` (a `KVM_MEM_GUEST_MEMFD` create) to `fd` at byte `offset` (upstream
/// `kvm_gmem_bind`); fills `slot.gmem` in.
///
/// # Errors
///
/// `EBADF`: `fd` is not open; `EINVAL`: not a guest_memfd, another VM's, `offset` negative,
/// unaligned or the range past the file's end, or overlapping another binding; `ENOMEM`.
pub(crate) fn bind(
    vm: &Vm,
    st: &mut MemState,
    slot: &mut Memslot,
    fd: u32,
    offset: u64,
) -> Result<GmemId> {
    let mut priv_: *mut c_void = core::ptr::null_mut();
    let mut i_size: u64 = 0;
    // SAFETY: writes the two out-parameters; takes a file reference, given back below.
    let file = unsafe { glue::tdxkvm_gmem_fget(fd as c_int, &mut priv_, &mut i_size) };
    if file.is_null() {
        return Err(EBADF);
    }
    let r = (|| {
        // Not one of this module's guest_memfd files.
        if priv_.is_null() {
            return Err(EINVAL);
        }
        let g = st
            .gmem_files
            .iter()
            .find(|r| r.file.cast::<c_void>() == priv_)
            .map(|r| r.id)
            // Registered with another VM: one VM per file.
            .ok_or(EINVAL)?;
        let f = lookup(st, g).ok_or(EINVAL)?;
        if !core::ptr::eq(f.vm(), vm) {
            return Err(EINVAL);
        }
        // SAFETY: `st` borrows `slots_lock`; the reference lives only in this block.
        let bindings = unsafe { f.bindings_mut() };
        bindings.store_mut().reserve(1)?;
        let pgoff = bindings
            .bind(offset, slot.npages, i_size, slot.id, slot.base_gfn)
            .map_err(err)?;
        slot.gmem = Some(GmemSlot { file: g, pgoff });
        Ok(g)
    })();
    // SAFETY: the reference `tdxkvm_gmem_fget` took.
    unsafe { glue::tdxkvm_fput(file) };
    r
}

/// Removes slot `slot_id`'s binding from file `g`, if the file is still open.
pub(crate) fn unbind(st: &mut MemState, g: GmemId, slot_id: u16) {
    if let Some(f) = lookup(st, g) {
        // SAFETY: `st` borrows `slots_lock`; the reference lives only in this statement.
        unsafe { f.bindings_mut() }.unbind(slot_id);
    }
}

/// Zaps the private mappings of file pages `[start, end)` in every slot bound there.
/// A 2 MiB private leaf the hole covers only in part is split (DEMOTE) with the VM's split
/// cache, so the rest of it stays mapped; see "Holes in 2 MiB folios" above.
///
/// # Safety
///
/// The caller holds the VM's `slots_lock` (`split` is borrowed from its state).
unsafe fn zap_bound(
    f: &GmemFile,
    split: &mut SplitCache,
    start: u64,
    end: u64,
) -> core::result::Result<(), Errno> {
    let vm = f.vm();
    let mut r = Ok(());
    // SAFETY: the caller holds `slots_lock`; nothing changes the bindings while they are read.
    unsafe { f.bindings() }.for_each_in(start, end, |_, s, e| {
        if vm
            .mmu()
            .zap_gfns_split(ZapTarget::Mirror, s, e, split)
            .is_err()
        {
            r = Err(Errno::EIO);
        }
    });
    r
}

/// `fallocate` on a guest_memfd (from the glue).
///
/// # Safety
///
/// `gmem` is the file's `private_data` (a live [`GmemFile`] until release, which cannot run
/// while a file operation is in flight) and `file` the file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_gmem_fallocate(
    gmem: *mut c_void,
    file: *mut c_void,
    mode: c_int,
    offset: i64,
    len: i64,
) -> c_long {
    // SAFETY: the caller's contract; a `GmemFile` is only ever shared (INVARIANT of
    // `GmemFile::bindings`), and `vm` does not change while it lives.
    let vm = unsafe { (*gmem.cast::<GmemFile>()).vm() };
    // SAFETY: `file` is live (the caller's contract).
    let i_size = unsafe { glue::tdxkvm_file_size(file) };
    let op = match memcore::gmem::check_fallocate(mode, offset as u64, len as u64, i_size) {
        Ok(op) => op,
        Err(e) => return -(e.to_errno() as c_long),
    };
    match op {
        Falloc::Allocate { start, end } => {
            // SAFETY: `file` is live.
            unsafe { glue::tdxkvm_gmem_allocate(file, start, end) }
        }
        Falloc::PunchHole { start, end } => {
            let mut st = vm.memslots().lock();
            // What the zap needs to DEMOTE a 2 MiB leaf the hole cuts, before anything
            // changes: ENOMEM here leaves file and mappings as they were.
            if vm.mmu().topup_split_cache(&mut st.split).is_err() {
                return -(Errno::ENOMEM.to_errno() as c_long);
            }
            // SAFETY: `file` is live; the lock is dropped below.
            unsafe { glue::tdxkvm_gmem_invalidate_lock(file) };
            // SAFETY: registered while the file is open; `st` serialises access.
            let f = unsafe { &*gmem.cast::<GmemFile>() };
            // A fault that found a page of the hole before the truncation retries.
            let inv = vm.memslots().invalidation().scope();
            // SAFETY: `st` is the `slots_lock` guard.
            let zapped = unsafe { zap_bound(f, &mut st.split, start, end) };
            let r = match zapped {
                Ok(()) => {
                    // SAFETY: `file` is live and its invalidate lock is held.
                    unsafe { glue::tdxkvm_gmem_truncate(file, start, end) };
                    0
                }
                Err(e) => {
                    // The S-EPT may still map pages of the hole: never free them.
                    // SAFETY: `file` is live.
                    unsafe { glue::tdxkvm_gmem_leak_range(file, start, end) };
                    -(e.to_errno() as c_long)
                }
            };
            drop(inv);
            // SAFETY: taken above.
            unsafe { glue::tdxkvm_gmem_invalidate_unlock(file) };
            drop(st);
            r
        }
    }
}

/// Release of a guest_memfd file (from the glue): zaps every private mapping the file backs,
/// unregisters the file, drops its VM reference.
///
/// # Safety
///
/// `gmem` is the file's `private_data`, given back exactly once here; `file` is the file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_gmem_release(gmem: *mut c_void, file: *mut c_void) {
    let raw = gmem.cast::<GmemFile>();
    // SAFETY: the caller's contract: the box made in `create`, registered until below.
    let f = unsafe { &*raw };
    let vm = f.vm();
    let mut st = vm.memslots().lock();
    // SAFETY: `file` is live during its release.
    unsafe { glue::tdxkvm_gmem_invalidate_lock(file) };
    let zapped = {
        let _inv = vm.memslots().invalidation().scope();
        // Everything the file backs goes: no leaf is cut, so nothing to split.
        // SAFETY: `st` is the `slots_lock` guard.
        unsafe { zap_bound(f, &mut st.split, 0, u64::MAX) }
    };
    if zapped.is_err() {
        // SAFETY: as above.
        unsafe { glue::tdxkvm_gmem_leak_range(file, 0, u64::MAX >> 12) };
    }
    // SAFETY: taken above.
    unsafe { glue::tdxkvm_gmem_invalidate_unlock(file) };
    unregister(&mut st, f.id);
    drop(st);
    // SAFETY: unregistered: nothing reaches the box any more; given back once.
    drop(unsafe { KBox::from_raw(raw) });
}
