// SPDX-License-Identifier: GPL-2.0-only
//! The physical-memory leaves (TDH.PHYMEM.*): take pages back from a torn-down TD and write back
//! the caches of a released HKID.

use super::{CacheWb, PageMetadata, Reclaimed, Tdx, NO_WARNINGS, ZERO};
use crate::abi::{leaf, status};
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::Hpa;

impl<S: Seamcall> Tdx<S> {
    /// TDH.PHYMEM.PAGE.RECLAIM (28): returns a page of a torn-down TD to the host.
    ///
    /// Inputs: RCX = page PA. Outputs: page type (RCX), owner TDR (RDX), page size (R8).
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_LIFECYCLE_STATE_INCORRECT` (the TD is not in
    /// teardown), `TDX_TD_ASSOCIATED_PAGES_EXIST` (a TDR with children left),
    /// `TDX_PAGE_METADATA_INCORRECT|RCX` (not a TDX page), `TDX_OPERAND_BUSY|RCX`.
    #[must_use = "the reclaimed page's metadata tells what it was"]
    pub fn phymem_page_reclaim(&self, page: Hpa) -> Result<Reclaimed, TdxError> {
        // RECLAIM reports no block epoch: R9 is not part of its answer.
        let pamt = self.phymem_page_pamt(leaf::PHYMEM_PAGE_RECLAIM, page)?;
        Ok(Reclaimed {
            page_type: pamt.page_type,
            owner: pamt.owner,
            size: pamt.size,
        })
    }

    /// TDH.PHYMEM.PAGE.RDMD (24): reads the PAMT entry of a page (any page of a TDMR), changing
    /// nothing.
    ///
    /// Inputs: RCX = page PA (4K-aligned, no key-id bits). Outputs: page type (RCX), owner TDR
    /// (RDX), page size (R8), block epoch (R9).
    ///
    /// # Errors
    ///
    /// The module's status: `TDX_OPERAND_INVALID|RCX` (misaligned, key-id bits, beyond the
    /// physical address width), `TDX_OPERAND_ADDR_RANGE_ERROR|RCX` (not TDX memory),
    /// `TDX_OPERAND_BUSY|RCX` (the entry is locked exclusively).
    #[must_use = "the page's metadata is the point of the call"]
    pub fn phymem_page_rdmd(&self, page: Hpa) -> Result<PageMetadata, TdxError> {
        self.phymem_page_pamt(leaf::PHYMEM_PAGE_RDMD, page)
    }

    /// A PHYMEM.PAGE leaf that takes the page in RCX and answers with the page's PAMT entry:
    /// type (RCX), owner TDR (RDX), size (R8) and block epoch (R9, RDMD only). RECLAIM and RDMD
    /// report the entry in the same registers.
    fn phymem_page_pamt(&self, leaf_no: u16, page: Hpa) -> Result<PageMetadata, TdxError> {
        let args = SeamArgs {
            rcx: page.raw(),
            ..ZERO
        };
        let out = self.call(leaf_no, args, NO_WARNINGS)?.out;
        Ok(PageMetadata {
            page_type: (out.rcx & 0xff) as u8,
            owner: Hpa::new(out.rdx),
            size: (out.r8 & 0xff) as u8,
            bepoch: out.r9,
        })
    }

    /// TDH.PHYMEM.PAGE.WBINVD (41): writes back and invalidates the cache lines of a
    /// reclaimed page under the key id encoded in the address.
    ///
    /// Inputs: RCX = page PA with the HKID in the key-id bits.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_PAGE_METADATA_INCORRECT|RCX` (the page is not
    /// reclaimed yet), `TDX_OPERAND_BUSY|RCX`, `TDX_OPERAND_INVALID|RCX`.
    pub fn phymem_page_wbinvd(&self, page_with_keyid: Hpa) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: page_with_keyid.raw(),
            ..ZERO
        };
        self.call(leaf::PHYMEM_PAGE_WBINVD, args, NO_WARNINGS)
            .map(drop)
    }

    /// TDH.PHYMEM.CACHE.WB (40): writes back the cache of the current package for every
    /// flushed HKID.
    ///
    /// Inputs: RCX = 0 to start, 1 to resume an interrupted write-back.
    /// `TDX_NO_HKID_READY_TO_WBCACHE` (no error bit) is `Ok(CacheWb::NothingToWriteBack)`.
    ///
    /// # Errors
    ///
    /// The module's status: `TDX_INTERRUPTED_RESUMABLE` means the caller calls again with
    /// `resume = true` until it gets `Ok`; others are for example
    /// `TDX_WBCACHE_RESUME_ERROR`, `TDX_OPERAND_BUSY|WBCACHE`, `TDX_OPERAND_BUSY|KOT`.
    pub fn phymem_cache_wb(&self, resume: bool) -> Result<CacheWb, TdxError> {
        let args = SeamArgs {
            rcx: u64::from(resume),
            ..ZERO
        };
        let done = self.call(
            leaf::PHYMEM_CACHE_WB,
            args,
            &[status::NO_HKID_READY_TO_WBCACHE],
        )?;
        Ok(if done.class == status::NO_HKID_READY_TO_WBCACHE {
            CacheWb::NothingToWriteBack
        } else {
            CacheWb::Done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn phymem_page_reclaim_regs() {
        let t = ok();
        t.phymem_page_reclaim(PAGE).unwrap();
        t.backend().assert_one(
            28,
            SeamArgs {
                rcx: 0x20_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn phymem_page_rdmd_regs_and_outputs() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rcx: u64::from(page_type::REG),
                rdx: 0x10_0000,
                r8: u64::from(page_size::SIZE_2M),
                r9: 7,
                ..ZERO
            },
        );
        assert_eq!(
            t.phymem_page_rdmd(PAGE),
            Ok(PageMetadata {
                page_type: page_type::REG,
                owner: TDR.hpa(),
                size: page_size::SIZE_2M,
                bepoch: 7,
            })
        );
        t.backend().assert_one(
            24,
            SeamArgs {
                rcx: 0x20_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn phymem_page_rdmd_errors_carry_the_operand() {
        let t = replying(status::OPERAND_BUSY | crate::abi::operand::RCX as u64, ZERO);
        let e = t.phymem_page_rdmd(PAGE).unwrap_err();
        assert!(e.is_busy_on(crate::Operand::RCX));
    }

    #[test]
    fn phymem_page_wbinvd_regs_keep_keyid_bits() {
        let t = ok();
        let with_keyid = Hpa::new(0x20_0000 | 5 << 46);
        t.phymem_page_wbinvd(with_keyid).unwrap();
        t.backend().assert_one(
            41,
            SeamArgs {
                rcx: 0x20_0000 | 5 << 46,
                ..ZERO
            },
        );
    }

    #[test]
    fn phymem_cache_wb_regs_start_and_resume() {
        let t = ok();
        assert_eq!(t.phymem_cache_wb(false), Ok(CacheWb::Done));
        assert_eq!(t.phymem_cache_wb(true), Ok(CacheWb::Done));
        assert_eq!(
            t.backend().calls(),
            [
                (abi::rax(40, 0), ZERO),
                (abi::rax(40, 0), SeamArgs { rcx: 1, ..ZERO }),
            ]
        );
    }

    #[test]
    fn no_hkid_ready_is_ok_nothing_to_write_back() {
        let t = replying(status::NO_HKID_READY_TO_WBCACHE, ZERO);
        assert_eq!(t.phymem_cache_wb(false), Ok(CacheWb::NothingToWriteBack));
    }

    #[test]
    fn cache_wb_interrupted_is_a_resumable_error_the_caller_loops_on() {
        let b = RecordingBackend::default();
        {
            let mut r = b.replies.lock().unwrap();
            r.push_back(Reply {
                status: status::INTERRUPTED_RESUMABLE,
                out: ZERO,
            });
            r.push_back(Reply {
                status: status::INTERRUPTED_RESUMABLE,
                out: ZERO,
            });
        }
        let t = Tdx::new(&b);
        let mut resume = false;
        let outcome = loop {
            match t.phymem_cache_wb(resume) {
                Err(e) if e.class() == status::INTERRUPTED_RESUMABLE => {
                    assert!(e.is_busy());
                    resume = true;
                }
                other => break other,
            }
        };
        assert_eq!(outcome, Ok(CacheWb::Done));
        let rcx: Vec<u64> = b.calls().iter().map(|c| c.1.rcx).collect();
        assert_eq!(rcx, [0, 1, 1]);
    }

    #[test]
    fn reclaim_outputs_decoded() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rcx: u64::from(page_type::REG),
                rdx: 0x10_0000,
                r8: u64::from(page_size::SIZE_2M),
                ..ZERO
            },
        );
        assert_eq!(
            t.phymem_page_reclaim(PAGE),
            Ok(Reclaimed {
                page_type: page_type::REG,
                owner: TDR.hpa(),
                size: page_size::SIZE_2M,
            })
        );
    }

    #[test]
    fn reclaim_of_a_tdr_reports_no_owner() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rcx: u64::from(page_type::TDR),
                ..ZERO
            },
        );
        let r = t.phymem_page_reclaim(TDR.hpa()).unwrap();
        assert_eq!(
            (r.page_type, r.owner, r.size),
            (page_type::TDR, Hpa::new(0), page_size::SIZE_4K)
        );
    }
}
