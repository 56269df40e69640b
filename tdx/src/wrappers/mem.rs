// SPDX-License-Identifier: GPL-2.0-only
//! The private-memory leaves (TDH.MEM.*): the TD's Secure-EPT tables and the pages they map,
//! blocking and TLB tracking. Failures carry the S-EPT details in RCX/RDX
//! ([`TdxError::sept`](crate::TdxError::sept)).

use super::{Block, Tdr, Tdx, NO_WARNINGS, ZERO};
use crate::abi::{self, leaf, status, SeptLevel};
use crate::error::{SeptDetails, TdxError};
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::{Gpa, Hpa};

/// The operands of a leaf that names an S-EPT entry: RCX = GPA|level, RDX = TDR PA; the rest
/// zero, for the leaf to add its own.
fn entry_args(tdr: Tdr, gpa: Gpa, level: SeptLevel) -> SeamArgs {
    SeamArgs {
        rcx: abi::gpa_level_operand(gpa.raw(), level),
        rdx: tdr.hpa().raw(),
        ..ZERO
    }
}

impl<S: Seamcall> Tdx<S> {
    /// TDH.MEM.SEPT.ADD (3): links the S-EPT page `page` into the entry for `gpa` at `level`
    /// (the level of the parent entry that will point to the new table).
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA, R8 = new S-EPT page PA.
    ///
    /// # Errors
    ///
    /// The module's status, with S-EPT details in RCX/RDX where the module gives them
    /// ([`TdxError::sept`]): for example `TDX_OPERAND_BUSY|SEPT_TREE`, `TDX_EPT_WALK_FAILED|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`, page-operand errors on R8.
    pub fn mem_sept_add(
        &self,
        tdr: Tdr,
        gpa: Gpa,
        level: SeptLevel,
        page: Hpa,
    ) -> Result<(), TdxError> {
        let args = SeamArgs {
            r8: page.raw(),
            ..entry_args(tdr, gpa, level)
        };
        self.call(leaf::MEM_SEPT_ADD, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MEM.SEPT.REMOVE (30): unlinks the empty S-EPT page the entry for `gpa` at `level`
    /// points to.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA. Output: the removed S-EPT page, from RCX.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details: for example `TDX_EPT_PAGE_NOT_FREE|RCX`,
    /// `TDX_GPA_RANGE_NOT_BLOCKED|RCX`, `TDX_TLB_TRACKING_NOT_DONE|RCX`,
    /// `TDX_OPERAND_BUSY|SEPT_TREE`.
    #[must_use = "the removed S-EPT page must be reclaimed"]
    pub fn mem_sept_remove(&self, tdr: Tdr, gpa: Gpa, level: SeptLevel) -> Result<Hpa, TdxError> {
        let args = entry_args(tdr, gpa, level);
        let done = self.call(leaf::MEM_SEPT_REMOVE, args, NO_WARNINGS)?;
        Ok(Hpa::new(done.out.rcx))
    }

    /// TDH.MEM.SEPT.RD (25): reads the S-EPT entry for `gpa` at `level`.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA. Output: the architectural entry (RCX) and its
    /// level and state (RDX).
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details: for example `TDX_EPT_WALK_FAILED|RCX` (the
    /// walk stopped above `level`), `TDX_OPERAND_BUSY|RCX`, `TDX_OPERAND_BUSY|SEPT_TREE`.
    #[must_use = "the entry read is the point of the call"]
    pub fn mem_sept_rd(
        &self,
        tdr: Tdr,
        gpa: Gpa,
        level: SeptLevel,
    ) -> Result<SeptDetails, TdxError> {
        let args = entry_args(tdr, gpa, level);
        let done = self.call(leaf::MEM_SEPT_RD, args, NO_WARNINGS)?;
        Ok(SeptDetails::from_regs(done.out.rcx, done.out.rdx))
    }

    /// TDH.MEM.PAGE.ADD (2): copies the 4 KiB `source` page into the private `page` and maps
    /// it at `gpa` (level 4K) while the TD is being built, extending MRTD with the GPA.
    ///
    /// Inputs: RCX = GPA|0, RDX = TDR PA, R8 = target page PA, R9 = source page PA.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_OP_STATE_INCORRECT` (after MR.FINALIZE), `TDX_EPT_WALK_FAILED|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`, `TDX_OPERAND_INVALID|R9`, page-operand errors on R8.
    pub fn mem_page_add(&self, tdr: Tdr, gpa: Gpa, page: Hpa, source: Hpa) -> Result<(), TdxError> {
        let args = SeamArgs {
            r8: page.raw(),
            r9: source.raw(),
            ..entry_args(tdr, gpa, SeptLevel::L4K)
        };
        self.call(leaf::MEM_PAGE_ADD, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MEM.PAGE.AUG (6): maps `page` at `gpa` as a pending private page of size `level`
    /// (4K or 2M), for the guest to accept.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA, R8 = target page PA.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_OPERAND_BUSY|SEPT_TREE`, `TDX_OPERAND_BUSY|RCX`, `TDX_EPT_WALK_FAILED|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`, `TDX_PAGE_METADATA_INCORRECT|R8`.
    pub fn mem_page_aug(
        &self,
        tdr: Tdr,
        gpa: Gpa,
        level: SeptLevel,
        page: Hpa,
    ) -> Result<(), TdxError> {
        let args = SeamArgs {
            r8: page.raw(),
            ..entry_args(tdr, gpa, level)
        };
        self.call(leaf::MEM_PAGE_AUG, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MEM.PAGE.REMOVE (29): unmaps the private page at `gpa`, `level`.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA. Output: the removed page, from RCX as the module
    /// returns it (older modules may leave HKID bits above the address).
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_GPA_RANGE_NOT_BLOCKED|RCX`, `TDX_TLB_TRACKING_NOT_DONE|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`, `TDX_OPERAND_BUSY|SEPT_TREE`.
    #[must_use = "the removed page must be reclaimed"]
    pub fn mem_page_remove(&self, tdr: Tdr, gpa: Gpa, level: SeptLevel) -> Result<Hpa, TdxError> {
        let args = entry_args(tdr, gpa, level);
        let done = self.call(leaf::MEM_PAGE_REMOVE, args, NO_WARNINGS)?;
        Ok(Hpa::new(done.out.rcx))
    }

    /// TDH.MEM.PAGE.DEMOTE (15): splits the huge leaf for `gpa` at `level` (2M, or 1G) into the
    /// new S-EPT page `page`, whose 512 entries map the same private pages one level down,
    /// unblocked. In a runnable TD the leaf must be blocked and its block TLB-tracked first.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA (bit 0, L2_SEPT_ADD_MODE, clear), R8 = new S-EPT
    /// page PA; R9-R11 (L2 S-EPT pages, no L2 VMs here) zero. 2.0 also reads R12/R13, the
    /// two PAMT pages of dynamic PAMT, only when dynamic PAMT is on; [`SeamArgs`] does not
    /// carry them, so this wrapper is for modules without it (as Linux 6.12 expects).
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_GPA_RANGE_NOT_BLOCKED|RCX`, `TDX_TLB_TRACKING_NOT_DONE|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`, `TDX_OPERAND_BUSY|RCX` (the entry or the huge
    /// page's PAMT entry), `TDX_OPERAND_BUSY|SEPT_TREE`, page-operand errors on R8.
    pub fn mem_page_demote(
        &self,
        tdr: Tdr,
        gpa: Gpa,
        level: SeptLevel,
        page: Hpa,
    ) -> Result<(), TdxError> {
        let args = SeamArgs {
            r8: page.raw(),
            ..entry_args(tdr, gpa, level)
        };
        self.call(leaf::MEM_PAGE_DEMOTE, args, NO_WARNINGS)
            .map(drop)
    }

    /// TDH.MEM.RANGE.BLOCK (7): blocks the S-EPT entry for `gpa` at `level` (clears its
    /// permissions and records the TLB epoch).
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA. `TDX_GPA_RANGE_ALREADY_BLOCKED` (no error bit) is
    /// `Ok(Block::AlreadyBlocked)`.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_OPERAND_BUSY|SEPT_TREE`, `TDX_EPT_WALK_FAILED|RCX`,
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX`.
    pub fn mem_range_block(&self, tdr: Tdr, gpa: Gpa, level: SeptLevel) -> Result<Block, TdxError> {
        let args = entry_args(tdr, gpa, level);
        let done = self.call(
            leaf::MEM_RANGE_BLOCK,
            args,
            &[status::GPA_RANGE_ALREADY_BLOCKED],
        )?;
        Ok(if done.class == status::GPA_RANGE_ALREADY_BLOCKED {
            Block::AlreadyBlocked
        } else {
            Block::Blocked
        })
    }

    /// TDH.MEM.RANGE.UNBLOCK (39): restores a blocked S-EPT entry for `gpa` at `level`.
    ///
    /// Inputs: RCX = GPA|level, RDX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_EPT_ENTRY_STATE_INCORRECT|RCX` (not blocked), `TDX_TLB_TRACKING_NOT_DONE|RCX`,
    /// `TDX_OPERAND_BUSY|SEPT_TREE`.
    pub fn mem_range_unblock(&self, tdr: Tdr, gpa: Gpa, level: SeptLevel) -> Result<(), TdxError> {
        let args = entry_args(tdr, gpa, level);
        self.call(leaf::MEM_RANGE_UNBLOCK, args, NO_WARNINGS)
            .map(drop)
    }

    /// TDH.MEM.TRACK (38): advances the TD's TLB epoch.
    ///
    /// Inputs: RCX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_PREVIOUS_TLB_EPOCH_BUSY` (vCPUs from the previous
    /// epoch are still inside; kick them and retry), `TDX_OPERAND_BUSY|TD_EPOCH`.
    pub fn mem_track(&self, tdr: Tdr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MEM_TRACK, args, NO_WARNINGS).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn mem_sept_add_regs() {
        let t = ok();
        t.mem_sept_add(TDR, GPA, SeptLevel::L2M, PAGE).unwrap();
        t.backend().assert_one(
            3,
            SeamArgs {
                rcx: 0x4020_0001,
                rdx: 0x10_0000,
                r8: 0x20_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_sept_remove_regs_and_page_from_rcx() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rcx: 0x20_0000,
                ..ZERO
            },
        );
        assert_eq!(t.mem_sept_remove(TDR, GPA, SeptLevel::L2M), Ok(PAGE));
        t.backend().assert_one(
            30,
            SeamArgs {
                rcx: gl(SeptLevel::L2M),
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_sept_rd_regs() {
        let t = ok();
        t.mem_sept_rd(TDR, GPA, SeptLevel::L4K).unwrap();
        t.backend().assert_one(
            25,
            SeamArgs {
                rcx: 0x4020_0000,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_page_add_regs_level_is_4k() {
        let t = ok();
        t.mem_page_add(TDR, GPA, PAGE, SOURCE).unwrap();
        t.backend().assert_one(
            2,
            SeamArgs {
                rcx: 0x4020_0000,
                rdx: 0x10_0000,
                r8: 0x20_0000,
                r9: 0x30_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_page_aug_regs() {
        let t = ok();
        t.mem_page_aug(TDR, GPA, SeptLevel::L2M, PAGE).unwrap();
        t.backend().assert_one(
            6,
            SeamArgs {
                rcx: 0x4020_0001,
                rdx: 0x10_0000,
                r8: 0x20_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_page_demote_regs() {
        let t = ok();
        t.mem_page_demote(TDR, GPA, SeptLevel::L2M, PAGE).unwrap();
        t.backend().assert_one(
            15,
            SeamArgs {
                rcx: 0x4020_0001,
                rdx: 0x10_0000,
                r8: 0x20_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_page_demote_keeps_the_sept_details_of_a_refusal() {
        let details = SeptDetails {
            entry: 0x8000_0000_0020_00f7,
            level: SeptLevel::L2M,
            state: sept_state::MAPPED,
        };
        let (rcx, rdx) = details.to_regs();
        let st = status::GPA_RANGE_NOT_BLOCKED | u64::from(operand::RCX);
        let t = replying(st, SeamArgs { rcx, rdx, ..ZERO });
        let e = t
            .mem_page_demote(TDR, GPA, SeptLevel::L2M, PAGE)
            .unwrap_err();
        assert_eq!(e.class(), status::GPA_RANGE_NOT_BLOCKED);
        assert_eq!(e.sept(), Some(details));
    }

    #[test]
    fn mem_page_remove_regs_and_page_from_rcx() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rcx: 0x20_0000,
                ..ZERO
            },
        );
        assert_eq!(t.mem_page_remove(TDR, GPA, SeptLevel::L4K), Ok(PAGE));
        t.backend().assert_one(
            29,
            SeamArgs {
                rcx: 0x4020_0000,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_range_block_regs() {
        let t = ok();
        assert_eq!(
            t.mem_range_block(TDR, GPA, SeptLevel::L2M),
            Ok(Block::Blocked)
        );
        t.backend().assert_one(
            7,
            SeamArgs {
                rcx: 0x4020_0001,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_range_unblock_regs() {
        let t = ok();
        t.mem_range_unblock(TDR, GPA, SeptLevel::L4K).unwrap();
        t.backend().assert_one(
            39,
            SeamArgs {
                rcx: 0x4020_0000,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mem_track_regs_tdr_in_rcx() {
        let t = ok();
        t.mem_track(TDR).unwrap();
        t.backend().assert_one(
            38,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn already_blocked_is_ok_already_blocked() {
        // The module reports it with the RCX operand id and the entry's details.
        let (rcx, rdx) = SeptDetails {
            entry: 0x20_0000 | 0x60,
            level: SeptLevel::L4K,
            state: sept_state::BLOCKED,
        }
        .to_regs();
        let t = replying(
            status::GPA_RANGE_ALREADY_BLOCKED | u64::from(operand::RCX),
            SeamArgs { rcx, rdx, ..ZERO },
        );
        assert_eq!(
            t.mem_range_block(TDR, GPA, SeptLevel::L4K),
            Ok(Block::AlreadyBlocked)
        );
    }

    #[test]
    fn sept_rd_details_decoded() {
        let want = SeptDetails {
            entry: 0x8000_0000_0020_0087,
            level: SeptLevel::L2M,
            state: sept_state::MAPPED,
        };
        let (rcx, rdx) = want.to_regs();
        let t = replying(status::SUCCESS, SeamArgs { rcx, rdx, ..ZERO });
        assert_eq!(t.mem_sept_rd(TDR, GPA, SeptLevel::L2M), Ok(want));
    }

    #[test]
    fn failing_mem_leaf_keeps_rcx_rdx_in_error() {
        let details = SeptDetails {
            entry: 0x8000_0000_0000_0000,
            level: SeptLevel::L1G,
            state: sept_state::FREE,
        };
        let (rcx, rdx) = details.to_regs();
        let st = status::EPT_WALK_FAILED | u64::from(operand::RCX);
        let t = replying(st, SeamArgs { rcx, rdx, ..ZERO });
        let e = t.mem_page_add(TDR, GPA, PAGE, SOURCE).unwrap_err();
        assert_eq!(e, TdxError::new(st, rcx, rdx));
        assert_eq!(e.operand(), Operand::RCX);
        assert_eq!(e.sept(), Some(details));
    }

    #[test]
    fn sept_remove_not_free_keeps_details() {
        let details = SeptDetails {
            entry: 0x20_0007,
            level: SeptLevel::L2M,
            state: sept_state::NL_BLOCKED,
        };
        let (rcx, rdx) = details.to_regs();
        let t = replying(
            status::EPT_PAGE_NOT_FREE | u64::from(operand::RCX),
            SeamArgs { rcx, rdx, ..ZERO },
        );
        let e = t.mem_sept_remove(TDR, GPA, SeptLevel::L2M).unwrap_err();
        assert_eq!(e.class(), status::EPT_PAGE_NOT_FREE);
        assert_eq!(e.sept(), Some(details));
    }

    #[test]
    fn failed_remove_does_not_return_rcx_as_a_page() {
        let t = replying(
            status::TLB_TRACKING_NOT_DONE | u64::from(operand::RCX),
            SeamArgs {
                rcx: 0x20_0000,
                ..ZERO
            },
        );
        let e = t.mem_page_remove(TDR, GPA, SeptLevel::L4K).unwrap_err();
        assert_eq!(e.class(), status::TLB_TRACKING_NOT_DONE);
        assert_eq!(e.rcx, 0x20_0000);
    }
}
