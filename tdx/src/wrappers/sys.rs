// SPDX-License-Identifier: GPL-2.0-only
//! The module-scope leaves (TDH.SYS.*) the host uses once the module is up: read its metadata
//! and its TDSYSINFO_STRUCT.

use super::{SysInfo, Tdx, NO_WARNINGS, TDSYSINFO_STRUCT_SIZE, ZERO};
use crate::abi::leaf;
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::Hpa;

impl<S: Seamcall> Tdx<S> {
    /// TDH.SYS.RD (34): reads a module-scope metadata field.
    ///
    /// Inputs: RDX = field id. Output: the value, from R8.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_METADATA_FIELD_ID_INCORRECT`.
    #[must_use = "the field's value is the point of the call"]
    pub fn sys_rd(&self, field: u64) -> Result<u64, TdxError> {
        let args = SeamArgs { rdx: field, ..ZERO };
        Ok(self.call(leaf::SYS_RD, args, NO_WARNINGS)?.out.r8)
    }

    /// TDH.SYS.INFO (32): writes `TDSYSINFO_STRUCT` to `info` and up to `cmr_count` CMR
    /// entries to `cmr_array`.
    ///
    /// Inputs: RCX = `TDSYSINFO_STRUCT` PA, RDX = its size ([`TDSYSINFO_STRUCT_SIZE`]),
    /// R8 = CMR array PA, R9 = CMR array entries. Outputs: bytes written (RDX) and CMR entries
    /// written (R9).
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_OPERAND_INVALID` on a misaligned or too small
    /// buffer.
    #[must_use = "the number of CMR entries written tells how many to read"]
    pub fn sys_info(&self, info: Hpa, cmr_array: Hpa, cmr_count: u64) -> Result<SysInfo, TdxError> {
        let args = SeamArgs {
            rcx: info.raw(),
            rdx: TDSYSINFO_STRUCT_SIZE,
            r8: cmr_array.raw(),
            r9: cmr_count,
            ..ZERO
        };
        let out = self.call(leaf::SYS_INFO, args, NO_WARNINGS)?.out;
        Ok(SysInfo {
            info_bytes: out.rdx,
            cmr_count: out.r9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn sys_rd_regs_and_value_from_r8() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                r8: 0x1_0005,
                ..ZERO
            },
        );
        assert_eq!(t.sys_rd(0x0800_0001_0000_0003), Ok(0x1_0005));
        t.backend().assert_one(
            34,
            SeamArgs {
                rdx: 0x0800_0001_0000_0003,
                ..ZERO
            },
        );
    }

    #[test]
    fn sys_info_regs_and_outputs() {
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rdx: 1024,
                r9: 4,
                ..ZERO
            },
        );
        assert_eq!(
            t.sys_info(Hpa::new(0x60_0000), Hpa::new(0x61_0000), 32),
            Ok(SysInfo {
                info_bytes: 1024,
                cmr_count: 4
            })
        );
        t.backend().assert_one(
            32,
            SeamArgs {
                rcx: 0x60_0000,
                rdx: TDSYSINFO_STRUCT_SIZE,
                r8: 0x61_0000,
                r9: 32,
                ..ZERO
            },
        );
    }
}
