// SPDX-License-Identifier: GPL-2.0-only
//! The measurement leaves (TDH.MR.*): extend MRTD with TD memory, and finalise it, after which
//! the TD can run.

use super::{Tdr, Tdx, NO_WARNINGS, ZERO};
use crate::abi::leaf;
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::Gpa;

impl<S: Seamcall> Tdx<S> {
    /// TDH.MR.EXTEND (16): extends MRTD with the 256-byte chunk of the TD's memory at `gpa`.
    ///
    /// Inputs: RCX = GPA (256-byte aligned), RDX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status with S-EPT details where given: for example
    /// `TDX_EPT_ENTRY_NOT_PRESENT|RCX`, `TDX_OPERAND_INVALID|RCX` (misaligned),
    /// `TDX_OP_STATE_INCORRECT`.
    pub fn mr_extend(&self, tdr: Tdr, gpa: Gpa) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: gpa.raw(),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MR_EXTEND, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MR.FINALIZE (17): finalises MRTD; the TD becomes runnable.
    ///
    /// Inputs: RCX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_NO_VCPUS`, `TDX_OP_STATE_INCORRECT`.
    pub fn mr_finalize(&self, tdr: Tdr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MR_FINALIZE, args, NO_WARNINGS).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn mr_extend_regs() {
        let t = ok();
        t.mr_extend(TDR, Gpa::new(0x4020_0300)).unwrap();
        t.backend().assert_one(
            16,
            SeamArgs {
                rcx: 0x4020_0300,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mr_finalize_regs() {
        let t = ok();
        t.mr_finalize(TDR).unwrap();
        t.backend().assert_one(
            17,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }
}
