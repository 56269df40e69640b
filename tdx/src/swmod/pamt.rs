// SPDX-License-Identifier: GPL-2.0-only
//! The Physical Address Metadata Table: an owner and a type for every 4 KiB page of every TDMR.
//!
//! The real module's PAMT is 16 bytes per page (`pamt_manager.h`): a host-priority sharex lock,
//! the page type, the owner TDR and a TLB epoch (`bepoch`) recorded by RANGE.BLOCK. Here: two
//! atomic words per page, in metadata pages allocated once when a TDMR is added (as
//! TDH.SYS.TDMR.INIT initialises the PAMT), reached through a small directory.
//!
//! `meta` word: bits 15:0 lock, 23:16 type, 25:24 size (0 = 4K, 1 = 2M, 2 = 1G), 63:26 owner
//! TDR PFN. A 2M or 1G page records its type, size and owner in every 4K entry it spans; the
//! head entry's lock and epoch are the page's.

use super::locks::{Held, Mode};
use super::mem::{words, PhysMem};
use crate::abi::{page_type, status};
use crate::error::Operand;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::{AtomicU64, Ordering};
use mmu::env::Frame;
use mmu::Pfn;

/// TDMRs the module can hold.
pub const MAX_TDMRS: usize = 8;
/// Directory pages per TDMR: each lists 512 metadata pages of 256 entries, so a TDMR spans at
/// most 16 × 512 × 256 pages (8 GiB).
pub const DIR_PAGES: usize = 16;
const ENTRIES_PER_META: u64 = 256;
/// Pages one TDMR may span.
pub const MAX_TDMR_PAGES: u64 = DIR_PAGES as u64 * 512 * ENTRIES_PER_META;

/// Physical address bits; the HKID sits above them (bits 51:46).
pub const MAX_PA_BITS: u32 = 46;
/// Mask of HKID bits in a physical address.
pub const HKID_MASK: u64 = 0x000f_c000_0000_0000;

/// A PAMT entry's decoded metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PamtInfo {
    /// Page type ([`page_type`]).
    pub page_type: u8,
    /// Page size (0 = 4K, 1 = 2M, 2 = 1G).
    pub size: u8,
    /// Owner TDR PFN: the TD that owns the page or, once freed, last owned it (0 for TDRs and
    /// pages never given to a TD).
    pub owner: Pfn,
}

/// One PAMT entry.
pub(crate) struct PamtEntry {
    meta: AtomicU64,
    bepoch: AtomicU64,
}

impl PamtEntry {
    pub(crate) fn info(&self) -> PamtInfo {
        let m = self.meta.load(Ordering::Acquire);
        PamtInfo {
            page_type: (m >> 16) as u8,
            size: ((m >> 24) & 3) as u8,
            owner: Pfn::new(m >> 26),
        }
    }

    /// Sets type, size and owner, keeping the lock bits. Only under this entry's exclusive lock.
    pub(crate) fn set(&self, info: PamtInfo) {
        let data =
            (info.page_type as u64) << 16 | (info.size as u64 & 3) << 24 | info.owner.raw() << 26;
        let mut cur = self.meta.load(Ordering::Relaxed);
        loop {
            let new = (cur & super::locks::LOCK_MASK) | data;
            match self
                .meta
                .compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }

    /// Frees the page: type NDA and (as one 4K entry) size 4K; the owner and the block epoch
    /// stay, as Intel's leaves leave them (`->pt = PT_NDA`). Only under the exclusive lock of
    /// the page's (head) entry.
    pub(crate) fn free(&self) {
        let owner = self.info().owner;
        self.set(PamtInfo {
            page_type: NDA,
            size: 0,
            owner,
        });
    }

    pub(crate) fn bepoch(&self) -> u64 {
        self.bepoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_bepoch(&self, epoch: u64) {
        self.bepoch.store(epoch, Ordering::Release);
    }

    pub(crate) fn try_lock(&self, mode: Mode) -> Option<Held<'_>> {
        Held::try_new(&self.meta, mode)
    }
}

const _: () = assert!(size_of::<PamtEntry>() == 16);

struct Tdmr {
    base: u64,
    pages: u64,
    dir: [u64; DIR_PAGES],
}

/// The PAMT of every TDMR.
pub(crate) struct Pamt {
    tdmrs: [Tdmr; MAX_TDMRS],
    count: usize,
}

impl Pamt {
    pub(crate) const fn new() -> Self {
        const EMPTY: Tdmr = Tdmr {
            base: 0,
            pages: 0,
            dir: [0; DIR_PAGES],
        };
        Pamt {
            tdmrs: [EMPTY; MAX_TDMRS],
            count: 0,
        }
    }

    /// Adds a TDMR of `pages` pages from `base` and allocates its PAMT (all pages NDA).
    ///
    /// Returns `false` (allocating nothing) if the table is full, the range is too large or
    /// overlaps another, or memory runs out.
    pub(crate) fn add_tdmr<M: PhysMem>(&mut self, mem: &M, base: Pfn, pages: u64) -> bool {
        if self.count == MAX_TDMRS || pages == 0 || pages > MAX_TDMR_PAGES {
            return false;
        }
        let (b, e) = (base.raw(), base.raw() + pages);
        if self.tdmrs[..self.count]
            .iter()
            .any(|t| b < t.base + t.pages && t.base < e)
        {
            return false;
        }
        let metas = pages.div_ceil(ENTRIES_PER_META);
        let dirs = metas.div_ceil(512) as usize;
        let mut t = Tdmr {
            base: b,
            pages,
            dir: [0; DIR_PAGES],
        };
        let mut ok = true;
        'outer: for d in 0..dirs {
            let Some(dir) = mem.alloc_meta() else {
                ok = false;
                break;
            };
            // The directory keeps the PFN; `free_tdmr` rebuilds the `Frame` to free it.
            t.dir[d] = dir.pfn().raw();
            let Some(dw) = words(mem, Pfn::new(t.dir[d])) else {
                ok = false;
                break;
            };
            let n = (metas - d as u64 * 512).min(512) as usize;
            for slot in dw.0.iter().take(n) {
                let Some(meta) = mem.alloc_meta() else {
                    ok = false;
                    break 'outer;
                };
                slot.store(meta.pfn().raw(), Ordering::Relaxed);
            }
        }
        if !ok {
            Self::free_tdmr(mem, &t);
            return false;
        }
        self.tdmrs[self.count] = t;
        self.count += 1;
        true
    }

    fn free_tdmr<M: PhysMem>(mem: &M, t: &Tdmr) {
        for &dir in t.dir.iter().filter(|&&d| d != 0) {
            if let Some(dw) = words(mem, Pfn::new(dir)) {
                for slot in dw.0.iter() {
                    let m = slot.load(Ordering::Relaxed);
                    if m != 0 {
                        if let Some(f) = frame_of(mem, m) {
                            mem.free_meta(f);
                        }
                    }
                }
            }
            if let Some(f) = frame_of(mem, dir) {
                mem.free_meta(f);
            }
        }
    }

    /// Frees every metadata page.
    pub(crate) fn release<M: PhysMem>(&mut self, mem: &M) {
        for t in &self.tdmrs[..self.count] {
            Self::free_tdmr(mem, t);
        }
        self.count = 0;
    }

    /// Metadata pages in use.
    pub(crate) fn meta_pages(&self) -> usize {
        self.tdmrs[..self.count]
            .iter()
            .map(|t| {
                let metas = t.pages.div_ceil(ENTRIES_PER_META) as usize;
                metas + metas.div_ceil(512)
            })
            .sum()
    }

    /// The entry of `pfn`, if it lies in a TDMR.
    pub(crate) fn entry<'m, M: PhysMem>(&self, mem: &'m M, pfn: Pfn) -> Option<&'m PamtEntry> {
        let p = pfn.raw();
        let t = self.tdmrs[..self.count]
            .iter()
            .find(|t| p >= t.base && p < t.base + t.pages)?;
        let idx = p - t.base;
        let meta_idx = idx / ENTRIES_PER_META;
        let dir = t.dir[(meta_idx / 512) as usize];
        let meta = words(mem, Pfn::new(dir))?.0[(meta_idx % 512) as usize].load(Ordering::Relaxed);
        let page = words(mem, Pfn::new(meta))?;
        let off = ((idx % ENTRIES_PER_META) * 2) as usize;
        // SAFETY: a PamtEntry is two AtomicU64 (repr-compatible, asserted size), and entries are
        // 16-byte slots of the metadata page.
        Some(unsafe { &*(page.0[off..].as_ptr() as *const PamtEntry) })
    }
}

fn frame_of<M: PhysMem>(mem: &M, pfn: u64) -> Option<Frame> {
    let virt = mem.map(Pfn::new(pfn))?.cast::<u8>();
    // SAFETY: this page came from `alloc_meta`; its ownership was kept as the PFN in the
    // directory (a `Frame` frees nothing when dropped); `map` returns the same mapping.
    Some(unsafe { Frame::from_raw(Pfn::new(pfn), virt) })
}

/// Checks a host physical address operand the way `check_and_lock_explicit_private_hpa` does:
/// alignment, HKID bits, range; the PAMT entry exists; it can be locked; it is a page of `size`
/// and of type `expected`. On success the entry comes back locked.
pub(crate) fn check_and_lock<'m, M: PhysMem>(
    pamt: &Pamt,
    mem: &'m M,
    pa: u64,
    op: Operand,
    mode: Mode,
    expected: u8,
    size: u8,
) -> LeafResult<(&'m PamtEntry, Held<'m>)> {
    let align = 4096u64 << (9 * size as u32);
    if pa & (align - 1) != 0 || pa & HKID_MASK != 0 || pa >> MAX_PA_BITS != 0 {
        return Err(Status::operand_invalid(op));
    }
    let pfn = Pfn::new(pa >> 12);
    let entry = pamt.entry(mem, pfn).ok_or(Status::addr_range_error(op))?;
    let held = entry.try_lock(mode).ok_or(Status::operand_busy(op))?;
    let info = entry.info();
    if info.size != size || info.page_type != expected {
        return Err(Status::page_metadata_incorrect(op));
    }
    Ok((entry, held))
}

/// Width of the HKID field above [`MAX_PA_BITS`] (bits 51:46, see [`HKID_MASK`]).
const HKID_BITS: u32 = 6;

/// `shared_hpa_check_with_pwr_2_alignment` (`helpers.c`): a host page the module reads or writes
/// through a *shared* key (PAGE.ADD's source, MNG.INIT's TD_PARAMS, …).
///
/// In Intel's order: `pa` must be aligned to `align` (a power of two); no bit above the full
/// physical-address width (52 here: [`MAX_PA_BITS`] plus the HKID field) may be set; (SEAMRR
/// overlap: the software module has no SEAMRR); the HKID in bits 51:46 must be *shared*, that is
/// below `private_hkid_min` (the first private HKID, `SwTdxModule::new`'s `hkid_first`).
///
/// Returns the address with the HKID bits stripped (what the module maps), or
/// `TDX_OPERAND_INVALID` without an operand id (the caller adds its own).
pub fn shared_hpa_check(pa: u64, align: u64, private_hkid_min: u16) -> Result<u64, u64> {
    if pa & align.wrapping_sub(1) != 0 || pa >> (MAX_PA_BITS + HKID_BITS) != 0 {
        return Err(status::OPERAND_INVALID);
    }
    if (pa & HKID_MASK) >> MAX_PA_BITS >= private_hkid_min as u64 {
        return Err(status::OPERAND_INVALID);
    }
    Ok(pa & !HKID_MASK)
}

/// The types a host may hand to the module as a fresh page.
pub(crate) const NDA: u8 = page_type::NDA;
