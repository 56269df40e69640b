// SPDX-License-Identifier: GPL-2.0-only
//! The physical-memory leaves (`tdh_phymem_*.c`): TDH.PHYMEM.CACHE.WB writes back the caches of
//! flushed HKIDs, TDH.PHYMEM.PAGE.RECLAIM takes a page of a torn-down TD back to the host,
//! TDH.PHYMEM.PAGE.WBINVD writes back one reclaimed page and TDH.PHYMEM.PAGE.RDMD reads a page's
//! PAMT entry.

use super::kot::{KOT_FLUSHED, KOT_WB_PENDING};
use super::locks::{Held, Mode};
use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::pamt::{check_and_lock, HKID_MASK, MAX_PA_BITS, NDA};
use super::SwTdxModule;
use crate::abi::{lifecycle, page_type, status};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::Ordering::{AcqRel, Acquire};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(super) fn phymem_cache_wb(&self, a: &mut SeamArgs) -> LeafResult {
        if a.rcx > 1 {
            return Err(Status::operand_invalid(Operand::RCX));
        }
        // The package's write-back mutex, then the KOT (shared).
        let Some(_wbt) = Held::try_new(&self.wbt_lock, Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::WBCACHE));
        };
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Shared) else {
            return Err(Status::operand_busy(Operand::KOT));
        };
        if a.rcx == 1 {
            // Never interrupted, so there is no saved point to resume from.
            return Err(Status::new(status::WBCACHE_RESUME_ERROR));
        }
        // The start step snapshots every HKID in state FLUSHED, written back before or not.
        let mut any = false;
        for slot in self.kot.iter() {
            if slot.load(Acquire) & 0xff == KOT_FLUSHED {
                slot.fetch_and(!KOT_WB_PENDING, AcqRel);
                any = true;
            }
        }
        if any {
            Ok(())
        } else {
            Err(Status::new(status::NO_HKID_READY_TO_WBCACHE))
        }
    }

    pub(super) fn phymem_page_reclaim(&self, a: &mut SeamArgs) -> LeafResult {
        let pa = a.rcx;
        *a = SeamArgs::default();
        if pa & 4095 != 0 || pa & HKID_MASK != 0 || pa >> MAX_PA_BITS != 0 {
            return Err(Status::operand_invalid(Operand::RCX));
        }
        let pfn = Pfn::new(pa >> 12);
        let Some(entry) = self.pamt.entry(&self.mem, pfn) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        let Some(_lock) = entry.try_lock(Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::RCX));
        };
        let info = entry.info();
        if info.page_type == page_type::NDA || info.page_type == page_type::RSVD {
            return Err(Status::page_metadata_incorrect(Operand::RCX));
        }
        a.rcx = info.page_type as u64;
        a.rdx = info.owner.hpa().raw();
        a.r8 = info.size as u64;
        let pages = 1u64 << (9 * info.size as u32);
        if pfn.raw() & (pages - 1) != 0 {
            return Err(Status::operand_invalid(Operand::RCX));
        }
        if info.page_type == page_type::TDR {
            let Some(td) = self.td_state(pfn) else {
                return Err(Status::page_metadata_incorrect(Operand::RCX));
            };
            if td.lifecycle.load(Acquire) != lifecycle::TEARDOWN as u64 {
                return Err(Status::new(status::LIFECYCLE_STATE_INCORRECT));
            }
            if td.chldcnt.load(Acquire) != 0 {
                return Err(Status::new(status::TD_ASSOCIATED_PAGES_EXIST));
            }
        } else {
            let t = self.lock_tdr_implicit(info.owner, Mode::Shared)?;
            if t.td.lifecycle.load(Acquire) != lifecycle::TEARDOWN as u64 {
                return Err(Status::new(status::LIFECYCLE_STATE_INCORRECT));
            }
            t.td.chldcnt.fetch_sub(pages, AcqRel);
        }
        // `reclaimed_page_pamt_entry_ptr->pt = PT_NDA`: the owner stays.
        self.free_range(pfn, pages);
        Ok(())
    }

    /// TDH.PHYMEM.PAGE.RDMD (`tdh_phymem_page_rdmd.c`, `docs/tdx-module-rules.md` §6): RCX,
    /// RDX and R8-R11 = 0 first → RCX not 4K-aligned, not below MAX_PA or with HKID bits →
    /// `OPERAND_INVALID|RCX` (2.0's size field in bits 2:0 must be 4K without dynamic PAMT,
    /// which this alignment check covers) → outside every TDMR →
    /// `OPERAND_ADDR_RANGE_ERROR|RCX` → the PAMT walk to the page's leaf entry, shared →
    /// `OPERAND_BUSY|RCX`. Success: RCX = type, RDX = owner TDR PA, R8 = size, R9 = block
    /// epoch for a REG or EPT page (0 otherwise); nothing changes.
    ///
    /// Intel's walk stops at a 2M or 1G entry only if it maps a page (`PT_REG`); this PAMT
    /// records a mapped large page in each of its 4K entries and keeps its lock and epoch in
    /// the head entry, so a page inside one reads the large page under the head's lock.
    pub(super) fn phymem_page_rdmd(&self, a: &mut SeamArgs) -> LeafResult {
        let pa = a.rcx;
        (a.rcx, a.rdx, a.r8, a.r9, a.r10, a.r11) = (0, 0, 0, 0, 0, 0);
        if pa & 4095 != 0 || pa >> MAX_PA_BITS != 0 || pa & HKID_MASK != 0 {
            return Err(Status::operand_invalid(Operand::RCX));
        }
        let pfn = Pfn::new(pa >> 12);
        let Some(entry) = self.pamt.entry(&self.mem, pfn) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        // The leaf the walk reaches: the head of a mapped large page, else the page's own.
        let first = entry.info();
        let pages = 1u64 << (9 * first.size as u32);
        let head = if first.page_type == page_type::REG && pages > 1 {
            self.pamt
                .entry(&self.mem, Pfn::new(pfn.raw() & !(pages - 1)))
                .ok_or(Status::addr_range_error(Operand::RCX))?
        } else {
            entry
        };
        let Some(_lock) = head.try_lock(Mode::Shared) else {
            return Err(Status::operand_busy(Operand::RCX));
        };
        // Read under the lock: a large page's type, size and owner change only under its head's
        // exclusive lock.
        let info = entry.info();
        a.rcx = info.page_type as u64;
        a.rdx = info.owner.hpa().raw();
        a.r8 = info.size as u64;
        if info.page_type == page_type::REG || info.page_type == page_type::EPT {
            a.r9 = head.bepoch();
        }
        Ok(())
    }

    pub(super) fn phymem_page_wbinvd(&self, a: &mut SeamArgs) -> LeafResult {
        let pa = a.rcx & !HKID_MASK;
        // The page is checked (PT_NDA, 4K) and locked shared; nothing else is done to it.
        let (_entry, _lock) = check_and_lock(
            &self.pamt,
            &self.mem,
            pa,
            Operand::RCX,
            Mode::Shared,
            NDA,
            0,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::operand;
    use crate::swmod::leaf_status::to_rax;
    use crate::swmod::mem::PageWords;
    use core::ptr::NonNull;
    use mmu::env::Frame;

    /// No host memory: enough for the leaves that only touch the module's own state.
    struct NoMem;

    // SAFETY: maps nothing and hands out nothing.
    unsafe impl PhysMem for NoMem {
        fn map(&self, _: Pfn) -> Option<NonNull<PageWords>> {
            None
        }
        fn alloc_meta(&self) -> Option<Frame> {
            None
        }
        fn free_meta(&self, _: Frame) {}
    }

    struct NoHash;

    impl Sha512Compress for NoHash {
        fn compress(&self, _: &mut [u64; 8], _: &[u8; 128]) {}
    }

    fn cache_wb(m: &SwTdxModule<NoMem, NoHash>, cmd: u64) -> u64 {
        to_rax(m.phymem_cache_wb(&mut SeamArgs {
            rcx: cmd,
            ..SeamArgs::default()
        }))
    }

    #[test]
    fn cache_wb_takes_the_package_mutex_before_the_kot() {
        let m = SwTdxModule::new(NoMem, NoHash, crate::swmod::ModuleLine::V1_5, 1, 4);
        let busy_wbt = status::OPERAND_BUSY | u64::from(operand::WBCACHE);
        let busy_kot = status::OPERAND_BUSY | u64::from(operand::KOT);
        assert_eq!(busy_wbt, 0x8000_0200_0000_00BC);
        let wbt = Held::try_new(&m.wbt_lock, Mode::Exclusive).unwrap();
        // The command is checked first.
        assert_eq!(
            cache_wb(&m, 2),
            status::OPERAND_INVALID | u64::from(operand::RCX)
        );
        assert_eq!(cache_wb(&m, 0), busy_wbt);
        assert_eq!(cache_wb(&m, 1), busy_wbt);
        let kot = Held::try_new(&m.kot_lock, Mode::Exclusive).unwrap();
        assert_eq!(cache_wb(&m, 0), busy_wbt);
        drop(wbt);
        assert_eq!(cache_wb(&m, 0), busy_kot);
        drop(kot);
        assert_eq!(cache_wb(&m, 0), status::NO_HKID_READY_TO_WBCACHE);
        assert_eq!(cache_wb(&m, 1), status::WBCACHE_RESUME_ERROR);
        // Both locks were released.
        assert!(Held::try_new(&m.wbt_lock, Mode::Exclusive).is_some());
        assert!(Held::try_new(&m.kot_lock, Mode::Exclusive).is_some());
    }
}
