// SPDX-License-Identifier: GPL-2.0-only
//! The MMU's [`ExternalPageTable`] hooks as SEAMCALL sequences (the table in [`super`]): while the
//! TD lives each hook is a MEM leaf (+ WBINVD on removal); once its HKID is released, removal is
//! one RECLAIM.

use super::{gpa, SeptBackend, TdHost};
use crate::abi::SeptLevel;
use crate::seamcall::Seamcall;
use mmu::external::{ExternalError, ExternalPageTable, PageRelease};
use mmu::page::{ExternalSpt, SptRelease};
use mmu::{Gfn, Gpa, Level, Pfn};

impl<S: Seamcall, K: TdHost> ExternalPageTable for SeptBackend<S, K> {
    fn link_spt(&self, gfn: Gfn, level: Level, spt: &ExternalSpt) -> Result<(), ExternalError> {
        let page = spt.pfn().hpa();
        self.retry(|| {
            self.tdx
                .mem_sept_add(self.tdr, gpa(gfn), SeptLevel::from_mmu(level), page)
        })
    }

    fn set_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<(), ExternalError> {
        let sl = SeptLevel::from_mmu(level);
        if sl > SeptLevel::L2M {
            // TDH.MEM.PAGE.AUG maps 4K and 2M pages only.
            return Err(ExternalError::Fatal);
        }
        if let Some((source, measure)) = self.populate_for(gfn) {
            if sl != SeptLevel::L4K {
                return Err(ExternalError::Fatal);
            }
            self.retry(|| self.tdx.mem_page_add(self.tdr, gpa(gfn), pfn.hpa(), source))?;
            if measure {
                for chunk in 0..16u64 {
                    let g = Gpa::new(gpa(gfn).raw() + chunk * 256);
                    self.retry(|| self.tdx.mr_extend(self.tdr, g))?;
                }
            }
            return Ok(());
        }
        self.retry(|| self.tdx.mem_page_aug(self.tdr, gpa(gfn), sl, pfn.hpa()))
    }

    fn block_spte(&self, gfn: Gfn, level: Level, _is_leaf: bool) -> Result<(), ExternalError> {
        if self.is_torn_down() {
            return Ok(());
        }
        self.retry(|| {
            self.tdx
                .mem_range_block(self.tdr, gpa(gfn), SeptLevel::from_mmu(level))
        })
        .map(|_| ())
    }

    fn flush(&self) -> Result<(), ExternalError> {
        if self.is_torn_down() {
            return Ok(());
        }
        self.retry(|| self.tdx.mem_track(self.tdr))?;
        // vCPUs that entered before the TRACK must leave before the removals.
        self.kick();
        Ok(())
    }

    fn split_spte(
        &self,
        gfn: Gfn,
        level: Level,
        _pfn: Pfn,
        spt: &ExternalSpt,
    ) -> Result<(), ExternalError> {
        // Never during teardown: the MMU splits only in zaps of a live TD.
        if self.is_torn_down() {
            return Err(ExternalError::Fatal);
        }
        // BLOCK and TRACK + kick came in the split round's first two steps (`block_spte`,
        // `flush`); a vCPU still inside from before the TRACK makes DEMOTE answer
        // TLB_TRACKING_NOT_DONE, which `retry` cures with a kick.
        let page = spt.pfn().hpa();
        self.retry(|| {
            self.tdx
                .mem_page_demote(self.tdr, gpa(gfn), SeptLevel::from_mmu(level), page)
        })
    }

    fn remove_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<PageRelease, ExternalError> {
        let sl = SeptLevel::from_mmu(level);
        if self.is_torn_down() {
            return Ok(self.reclaim(pfn));
        }
        let removed = self.retry(|| self.tdx.mem_page_remove(self.tdr, gpa(gfn), sl))?;
        self.wbinvd(removed.pfn(), sl.pages())?;
        self.kicker.reset_pages(removed.pfn(), sl.pages());
        Ok(PageRelease::Returned)
    }

    fn free_spt(
        &self,
        gfn: Gfn,
        level: Level,
        spt: &ExternalSpt,
    ) -> Result<SptRelease, ExternalError> {
        let pfn = spt.pfn();
        if self.is_torn_down() {
            return Ok(match self.reclaim(pfn) {
                PageRelease::Returned => SptRelease::Returned,
                PageRelease::Leaked => SptRelease::Leaked,
            });
        }
        self.retry(|| {
            self.tdx
                .mem_sept_remove(self.tdr, gpa(gfn), SeptLevel::from_mmu(level))
        })?;
        self.wbinvd(pfn, 1)?;
        self.kicker.reset_pages(pfn, 1);
        Ok(SptRelease::Returned)
    }
}
