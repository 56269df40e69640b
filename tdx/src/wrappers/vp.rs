// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU leaves (TDH.VP.*, without VP.ENTER): create a vCPU, add its control pages,
//! initialise it, flush it off the logical processor, read and write its metadata.

use super::{Tdcx, Tdr, Tdvpr, Tdx, NO_WARNINGS, ZERO};
use crate::abi::leaf;
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};

impl<S: Seamcall> Tdx<S> {
    /// TDH.VP.CREATE (10): turns `tdvpr` into the root page of a new vCPU of the TD.
    ///
    /// Inputs: RCX = TDVPR PA, RDX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_OP_STATE_INCORRECT`, `TDX_OPERAND_BUSY|OP_STATE`,
    /// page-operand errors on RCX or RDX.
    pub fn vp_create(&self, tdr: Tdr, tdvpr: Tdvpr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdvpr.hpa().raw(),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::VP_CREATE, args, NO_WARNINGS).map(drop)
    }

    /// TDH.VP.ADDCX (4): adds a TDVPS page to the vCPU.
    ///
    /// Inputs: RCX = TDCX page PA, RDX = TDVPR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_VCPU_STATE_INCORRECT` (with the vCPU state as the
    /// operand), `TDX_TDCX_NUM_INCORRECT`, `TDX_OPERAND_BUSY|TDR`.
    pub fn vp_addcx(&self, tdvpr: Tdvpr, page: Tdcx) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: page.hpa().raw(),
            rdx: tdvpr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::VP_ADDCX, args, NO_WARNINGS).map(drop)
    }

    /// TDH.VP.INIT (22): initialises the vCPU and associates it with the current CPU.
    ///
    /// Inputs: RCX = TDVPR PA, RDX = the guest's initial RCX.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_VCPU_STATE_INCORRECT`, `TDX_MAX_VCPUS_EXCEEDED`,
    /// `TDX_TDCX_NUM_INCORRECT`, `TDX_OP_STATE_INCORRECT`.
    pub fn vp_init(&self, tdvpr: Tdvpr, initial_rcx: u64) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdvpr.hpa().raw(),
            rdx: initial_rcx,
            ..ZERO
        };
        self.call(leaf::VP_INIT, args, NO_WARNINGS).map(drop)
    }

    /// TDH.VP.FLUSH (18): flushes the vCPU's cached state and dissociates it from this CPU.
    ///
    /// Inputs: RCX = TDVPR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_VCPU_NOT_ASSOCIATED` (run it on the CPU the vCPU
    /// is associated with), `TDX_TD_KEYS_NOT_CONFIGURED`.
    pub fn vp_flush(&self, tdvpr: Tdvpr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdvpr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::VP_FLUSH, args, NO_WARNINGS).map(drop)
    }

    /// TDH.VP.RD (26): reads one element of a vCPU-scope metadata field ([`crate::abi::md::vp`]).
    /// The module associates the vCPU with the calling logical processor first, as VP.ENTER
    /// does, so a flushed vCPU needs another VP.FLUSH before MNG.VPFLUSHDONE.
    ///
    /// Inputs: RCX = TDVPR PA, RDX = field id. Output: the value, from R8 (the module clears R8
    /// on failure). Issued at version 0, so RDX is not an output.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_METADATA_FIELD_ID_INCORRECT`,
    /// `TDX_METADATA_FIELD_NOT_READABLE`, `TDX_VCPU_STATE_INCORRECT`.
    #[must_use = "the field's value is the point of the call"]
    pub fn vp_rd(&self, tdvpr: Tdvpr, field: u64) -> Result<u64, TdxError> {
        let args = SeamArgs {
            rcx: tdvpr.hpa().raw(),
            rdx: field,
            ..ZERO
        };
        Ok(self.call(leaf::VP_RD, args, NO_WARNINGS)?.out.r8)
    }

    /// TDH.VP.WR (43): writes the bits of `value` selected by `mask` into one element of a
    /// vCPU-scope metadata field (associating the vCPU first, as [`Tdx::vp_rd`]).
    ///
    /// Inputs: RCX = TDVPR PA, RDX = field id, R8 = value, R9 = write mask. Output: the
    /// element's previous value (as the host may read it), from R8.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_METADATA_FIELD_ID_INCORRECT`,
    /// `TDX_METADATA_FIELD_NOT_WRITABLE`, `TDX_METADATA_FIELD_VALUE_NOT_VALID`.
    pub fn vp_wr(&self, tdvpr: Tdvpr, field: u64, value: u64, mask: u64) -> Result<u64, TdxError> {
        let args = SeamArgs {
            rcx: tdvpr.hpa().raw(),
            rdx: field,
            r8: value,
            r9: mask,
            ..ZERO
        };
        Ok(self.call(leaf::VP_WR, args, NO_WARNINGS)?.out.r8)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn vp_create_regs() {
        let t = ok();
        t.vp_create(TDR, TDVPR).unwrap();
        t.backend().assert_one(
            10,
            SeamArgs {
                rcx: 0x12_0000,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn vp_addcx_regs() {
        let t = ok();
        t.vp_addcx(TDVPR, TDCX).unwrap();
        t.backend().assert_one(
            4,
            SeamArgs {
                rcx: 0x11_0000,
                rdx: 0x12_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn vp_init_regs() {
        let t = ok();
        t.vp_init(TDVPR, 0x8000_1000).unwrap();
        t.backend().assert_one(
            22,
            SeamArgs {
                rcx: 0x12_0000,
                rdx: 0x8000_1000,
                ..ZERO
            },
        );
    }

    #[test]
    fn vp_flush_regs() {
        let t = ok();
        t.vp_flush(TDVPR).unwrap();
        t.backend().assert_one(
            18,
            SeamArgs {
                rcx: 0x12_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn vp_rd_regs_and_value_from_r8() {
        let t = replying(status::SUCCESS, SeamArgs { r8: 42, ..ZERO });
        assert_eq!(t.vp_rd(TDVPR, abi::md::vp::VCPU_INDEX), Ok(42));
        t.backend().assert_one(
            26,
            SeamArgs {
                rcx: 0x12_0000,
                rdx: 0xa020_0002_0000_0002,
                ..ZERO
            },
        );
    }

    #[test]
    fn vp_wr_regs_and_old_value_from_r8() {
        let t = replying(status::SUCCESS, SeamArgs { r8: 7, ..ZERO });
        assert_eq!(t.vp_wr(TDVPR, abi::md::vp::RCX, 0x1, u64::MAX), Ok(7));
        t.backend().assert_one(
            43,
            SeamArgs {
                rcx: 0x12_0000,
                rdx: 0x1020_0003_0000_0001,
                r8: 0x1,
                r9: u64::MAX,
                ..ZERO
            },
        );
    }
}
