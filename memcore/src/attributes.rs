// SPDX-License-Identifier: GPL-2.0-only
//! Memory attributes per GFN (upstream `kvm->mem_attr_array`, an xarray, and
//! `kvm_vm_ioctl_set_mem_attributes` / `kvm_vm_set_mem_attributes`, 6.12).
//!
//! Upstream stores one xarray entry per GFN; here the attributes are a sorted list of disjoint
//! ranges of non-zero attributes, adjacent equal ranges merged, in caller storage. A GFN in no
//! range has attributes 0 (shared). As upstream reserves every xarray slot before changing any,
//! [`AttrMap::set`] checks the room it needs first: a full store is `ENOMEM` with nothing changed.

use crate::store::Store;
use crate::uapi::{page_aligned, KVM_MEMORY_ATTRIBUTE_PRIVATE, PAGE_SHIFT};
use crate::Errno;
use mmu::Gfn;

/// `[start, end)` GFNs with the same non-zero attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrRange {
    /// First GFN.
    pub start: u64,
    /// One past the last GFN.
    pub end: u64,
    /// `KVM_MEMORY_ATTRIBUTE_*` bits (never 0 in a map).
    pub attrs: u64,
}

/// The attributes a VM supports (upstream `kvm_supported_mem_attributes`): PRIVATE on VMs with
/// private memory, nothing otherwise.
pub const fn supported_attributes(private_mem: bool) -> u64 {
    if private_mem {
        KVM_MEMORY_ATTRIBUTE_PRIVATE
    } else {
        0
    }
}

/// A checked `KVM_SET_MEMORY_ATTRIBUTES` request: GFNs `[start, end)` get `attrs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrRequest {
    /// First GFN.
    pub start: Gfn,
    /// One past the last GFN.
    pub end: Gfn,
    /// The new attributes.
    pub attrs: u64,
}

/// The checks of `kvm_vm_ioctl_set_mem_attributes`, in its order.
///
/// # Errors
///
/// [`Errno::EINVAL`]: non-zero `flags`; attributes the VM does not support; a zero or
/// overflowing size; an address or size not page aligned.
pub fn check_request(
    private_mem: bool,
    address: u64,
    size: u64,
    attributes: u64,
    flags: u64,
) -> Result<AttrRequest, Errno> {
    if flags != 0 {
        return Err(Errno::EINVAL);
    }
    if attributes & !supported_attributes(private_mem) != 0 {
        return Err(Errno::EINVAL);
    }
    let end = match address.checked_add(size) {
        Some(end) if size != 0 => end,
        _ => return Err(Errno::EINVAL),
    };
    if !page_aligned(address) || !page_aligned(size) {
        return Err(Errno::EINVAL);
    }
    Ok(AttrRequest {
        start: Gfn::new(address >> PAGE_SHIFT),
        end: Gfn::new(end >> PAGE_SHIFT),
        attrs: attributes,
    })
}

/// The attribute map of one VM.
#[derive(Debug)]
pub struct AttrMap<S: Store<AttrRange>> {
    store: S,
}

/// At most this many more ranges after one [`AttrMap::set`]: a range split in two around a new
/// one.
pub const MAX_NEW_RANGES_PER_SET: usize = 2;

impl<S: Store<AttrRange>> AttrMap<S> {
    /// An empty map (every GFN shared) over `store`, which must be empty.
    pub fn new(store: S) -> Self {
        AttrMap { store }
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[AttrRange] {
        self.store.as_slice()
    }

    /// The storage (the module grows it between calls).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The attributes of `gfn` (upstream `kvm_get_memory_attributes`).
    pub fn get(&self, gfn: Gfn) -> u64 {
        let r = self.ranges();
        let i = r.partition_point(|x| x.end <= gfn.raw());
        match r.get(i) {
            Some(x) if x.start <= gfn.raw() => x.attrs,
            _ => 0,
        }
    }

    /// Whether `gfn` is private (upstream `kvm_mem_is_private`).
    pub fn is_private(&self, gfn: Gfn) -> bool {
        self.get(gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
    }

    /// Calls `f(start, end, attrs)` for consecutive pieces covering `[start, end)` exactly,
    /// attributes 0 included.
    pub fn for_each_piece(&self, start: Gfn, end: Gfn, mut f: impl FnMut(u64, u64, u64)) {
        let (mut at, end) = (start.raw(), end.raw());
        let r = self.ranges();
        let mut i = r.partition_point(|x| x.end <= at);
        while at < end {
            match r.get(i) {
                Some(x) if x.start <= at => {
                    let e = x.end.min(end);
                    f(at, e, x.attrs);
                    at = e;
                    i += 1;
                }
                Some(x) if x.start < end => {
                    f(at, x.start, 0);
                    at = x.start;
                }
                _ => {
                    f(at, end, 0);
                    at = end;
                }
            }
        }
    }

    /// Whether every GFN of `[start, end)` has `attrs & mask == attrs_want` (upstream
    /// `kvm_range_has_memory_attributes`); true for an empty range.
    pub fn range_has(&self, start: Gfn, end: Gfn, mask: u64, attrs_want: u64) -> bool {
        let mut all = true;
        self.for_each_piece(start, end, |_, _, a| all &= a & mask == attrs_want);
        all
    }

    /// The attributes shared by every GFN of the non-empty `[start, end)`, if they agree.
    pub fn uniform(&self, start: Gfn, end: Gfn) -> Option<u64> {
        let mut first = None;
        let mut same = true;
        self.for_each_piece(start, end, |_, _, a| {
            same &= *first.get_or_insert(a) == a;
        });
        first.filter(|_| same)
    }

    /// Room the store needs before [`AttrMap::set`] can succeed (the caller grows it).
    pub fn room_needed(&self) -> usize {
        MAX_NEW_RANGES_PER_SET.saturating_sub(self.store.spare())
    }

    /// Gives `[start, end)` the attributes `attrs`. Returns whether anything changed (upstream
    /// returns early, without zapping, when the range already has them).
    ///
    /// # Errors
    ///
    /// [`Errno::ENOMEM`]: the store lacks the room the change needs; nothing changed.
    pub fn set(&mut self, start: Gfn, end: Gfn, attrs: u64) -> Result<bool, Errno> {
        let (s, e) = (start.raw(), end.raw());
        if s >= e || self.range_has(start, end, !0, attrs) {
            return Ok(false);
        }
        let r = self.ranges();
        // Ranges touching [s, e), neighbours that merely touch included: they may merge.
        let mut i = r.partition_point(|x| x.end < s);
        let j = r.partition_point(|x| x.start <= e);
        let mut pieces = [AttrRange::default(); 3];
        let mut n = 0;
        for x in &r[i..j] {
            if x.start < s {
                push(
                    AttrRange {
                        end: x.end.min(s),
                        ..*x
                    },
                    &mut pieces,
                    &mut n,
                );
            }
        }
        push(
            AttrRange {
                start: s,
                end: e,
                attrs,
            },
            &mut pieces,
            &mut n,
        );
        for x in &r[i..j] {
            if x.end > e {
                push(
                    AttrRange {
                        start: x.start.max(e),
                        ..*x
                    },
                    &mut pieces,
                    &mut n,
                );
            }
        }
        let old = j - i;
        if n > old && n - old > self.store.spare() {
            return Err(Errno::ENOMEM);
        }
        for _ in 0..old {
            self.store.remove(i);
        }
        for p in &pieces[..n] {
            // Cannot fail: the room was checked above.
            self.store.insert(i, *p)?;
            i += 1;
        }
        Ok(true)
    }
}

/// Appends `p` to `pieces[..n]`, merging it into the last piece when they touch with equal
/// attributes; empty and attribute-0 pieces are dropped (0 is the map's default).
fn push(p: AttrRange, pieces: &mut [AttrRange; 3], n: &mut usize) {
    if p.start >= p.end || p.attrs == 0 {
        return;
    }
    match pieces[..*n].last_mut() {
        Some(last) if last.end == p.start && last.attrs == p.attrs => last.end = p.end,
        _ => {
            pieces[*n] = p;
            *n += 1;
        }
    }
}
