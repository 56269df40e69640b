// SPDX-License-Identifier: GPL-2.0-only
//! guest_memfd: the checks of creation, `fallocate` and binding (upstream
//! `virt/kvm/guest_memfd.c` of 6.12: `kvm_gmem_create`, `kvm_gmem_fallocate`, `kvm_gmem_bind`),
//! and one file's bindings — which page ranges of the file back which memslot.
//!
//! Upstream keeps the bindings in an xarray indexed by page offset; here they are a sorted list
//! of disjoint page ranges in caller storage.

use crate::store::Store;
use crate::uapi::{page_aligned, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, PAGE_SHIFT};
use crate::Errno;
use mmu::Gfn;

/// guest_memfd flags 6.12 accepts: none.
pub const GUEST_MEMFD_VALID_FLAGS: u64 = 0;

/// The checks of `KVM_CREATE_GUEST_MEMFD` (upstream `kvm_gmem_create`); `reserved` is not
/// checked upstream either.
///
/// # Errors
///
/// [`Errno::EINVAL`]: any flag; a size that is zero, negative as a `loff_t`, or not page
/// aligned.
pub fn check_create(size: u64, flags: u64) -> Result<(), Errno> {
    if flags & !GUEST_MEMFD_VALID_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    if (size as i64) <= 0 || !page_aligned(size) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// What a valid `fallocate` does, in file page indexes `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Allocate (and keep) the pages.
    Allocate {
        /// First page.
        start: u64,
        /// One past the last page.
        end: u64,
    },
    /// Zap the private mappings of the pages, then free them.
    PunchHole {
        /// First page.
        start: u64,
        /// One past the last page.
        end: u64,
    },
}

/// The checks of `kvm_gmem_fallocate` (the VFS already refused a negative offset, a length
/// `<= 0`, `PUNCH_HOLE` without `KEEP_SIZE` and an end beyond `s_maxbytes`).
///
/// # Errors
///
/// - [`Errno::EOPNOTSUPP`]: no `FALLOC_FL_KEEP_SIZE` (the file never grows), or any mode bit
///   besides `KEEP_SIZE` and `PUNCH_HOLE`;
/// - [`Errno::EINVAL`]: offset or length not page aligned; an allocation reaching past the
///   file's size (a punch hole past it is fine and frees nothing there).
pub fn check_fallocate(mode: i32, offset: u64, len: u64, i_size: u64) -> Result<Falloc, Errno> {
    if mode & FALLOC_FL_KEEP_SIZE == 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE) != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if !page_aligned(offset) || !page_aligned(len) {
        return Err(Errno::EINVAL);
    }
    let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
    let (start, end) = (offset >> PAGE_SHIFT, end >> PAGE_SHIFT);
    if mode & FALLOC_FL_PUNCH_HOLE != 0 {
        return Ok(Falloc::PunchHole { start, end });
    }
    // A guest_memfd is immutable in size.
    if offset + len > i_size {
        return Err(Errno::EINVAL);
    }
    Ok(Falloc::Allocate { start, end })
}

/// One memslot's range of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// First page index in the file.
    pub start: u64,
    /// One past the last page index.
    pub end: u64,
    /// The memslot's id.
    pub slot: u16,
    /// The memslot's first GFN (guest_memfd slots never move).
    pub base_gfn: Gfn,
}

impl Binding {
    /// The GFNs of this binding that the file pages `[start, end)` back, if any.
    pub fn gfns_of(&self, start: u64, end: u64) -> Option<(Gfn, Gfn)> {
        let (s, e) = (start.max(self.start), end.min(self.end));
        (s < e).then(|| {
            (
                Gfn::new(self.base_gfn.raw() + s - self.start),
                Gfn::new(self.base_gfn.raw() + e - self.start),
            )
        })
    }
}

/// The bindings of one guest_memfd file, sorted by page index.
#[derive(Debug)]
pub struct Bindings<S: Store<Binding>> {
    store: S,
}

impl<S: Store<Binding>> Bindings<S> {
    /// No bindings, over `store` (which must be empty).
    pub fn new(store: S) -> Self {
        Bindings { store }
    }

    /// The bindings, sorted.
    pub fn as_slice(&self) -> &[Binding] {
        self.store.as_slice()
    }

    /// The storage (the module grows it between calls).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Binds `npages` pages at byte `offset` of a file of `i_size` bytes to slot `slot` at
    /// `base_gfn` (upstream `kvm_gmem_bind` after the file checks). Returns the page offset.
    ///
    /// # Errors
    ///
    /// - [`Errno::EINVAL`]: `offset` negative as a `loff_t`, not page aligned, or the range
    ///   reaching past the file; the range overlapping another binding;
    /// - [`Errno::ENOMEM`]: the store is full.
    pub fn bind(
        &mut self,
        offset: u64,
        npages: u64,
        i_size: u64,
        slot: u16,
        base_gfn: Gfn,
    ) -> Result<u64, Errno> {
        let size = npages << PAGE_SHIFT;
        if (offset as i64) < 0 || !page_aligned(offset) {
            return Err(Errno::EINVAL);
        }
        match offset.checked_add(size) {
            Some(end) if end <= i_size => {}
            _ => return Err(Errno::EINVAL),
        }
        let start = offset >> PAGE_SHIFT;
        let end = start + npages;
        let b = self.as_slice();
        let i = b.partition_point(|x| x.end <= start);
        if b.get(i).is_some_and(|x| x.start < end) {
            return Err(Errno::EINVAL);
        }
        self.store.insert(
            i,
            Binding {
                start,
                end,
                slot,
                base_gfn,
            },
        )?;
        Ok(start)
    }

    /// Removes slot `slot`'s binding (upstream `kvm_gmem_unbind`); returns it.
    pub fn unbind(&mut self, slot: u16) -> Option<Binding> {
        let i = self.as_slice().iter().position(|b| b.slot == slot)?;
        Some(self.store.remove(i))
    }

    /// Calls `f(binding, gfn_start, gfn_end)` for each binding overlapping file pages
    /// `[start, end)`, with the GFNs of the overlap (what a punch hole must zap).
    pub fn for_each_in(&self, start: u64, end: u64, mut f: impl FnMut(&Binding, Gfn, Gfn)) {
        let b = self.as_slice();
        let i = b.partition_point(|x| x.end <= start);
        for x in b[i..].iter().take_while(|x| x.start < end) {
            if let Some((s, e)) = x.gfns_of(start, end) {
                f(x, s, e);
            }
        }
    }
}
