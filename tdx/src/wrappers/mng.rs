// SPDX-License-Identifier: GPL-2.0-only
//! The TD-management leaves (TDH.MNG.*): create a TD, configure its key, add its control
//! pages, initialise it from TD_PARAMS, read and write its metadata, and give its HKID back.

use super::{KeyConfig, Tdcx, Tdr, Tdx, NO_WARNINGS, ZERO};
use crate::abi::{leaf, status};
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::Hpa;

impl<S: Seamcall> Tdx<S> {
    /// TDH.MNG.CREATE (9): turns `tdr` into the root page of a new TD that uses `hkid`.
    ///
    /// Inputs: RCX = TDR PA, RDX = HKID.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_OPERAND_INVALID|RDX` (HKID outside the private
    /// range), `TDX_OPERAND_BUSY|KOT`, `TDX_HKID_NOT_FREE`, `TDX_PAGE_METADATA_INCORRECT|RCX`
    /// (the page is not free), `TDX_RND_NO_ENTROPY`.
    pub fn mng_create(&self, tdr: Tdr, hkid: u16) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            rdx: u64::from(hkid),
            ..ZERO
        };
        self.call(leaf::MNG_CREATE, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MNG.KEY.CONFIG (8): programs the TD's key on the current package.
    ///
    /// Inputs: RCX = TDR PA. `TDX_KEY_CONFIGURED` (no error bit) is
    /// `Ok(KeyConfig::AlreadyConfigured)`.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_LIFECYCLE_STATE_INCORRECT`,
    /// `TDX_OPERAND_BUSY|KET`, `TDX_KEY_GENERATION_FAILED` (retry), `TDX_TD_FATAL`.
    pub fn mng_key_config(&self, tdr: Tdr) -> Result<KeyConfig, TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        let done = self.call(leaf::MNG_KEY_CONFIG, args, &[status::KEY_CONFIGURED])?;
        Ok(if done.class == status::KEY_CONFIGURED {
            KeyConfig::AlreadyConfigured
        } else {
            KeyConfig::Configured
        })
    }

    /// TDH.MNG.ADDCX (1): adds a TDCS page to the TD.
    ///
    /// Inputs: RCX = TDCX page PA, RDX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_TD_KEYS_NOT_CONFIGURED`,
    /// `TDX_TDCX_NUM_INCORRECT`, `TDX_OP_STATE_INCORRECT`, page-operand errors on RCX or RDX.
    pub fn mng_addcx(&self, tdr: Tdr, page: Tdcx) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: page.hpa().raw(),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MNG_ADDCX, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MNG.INIT (21): initialises the TD from the `TD_PARAMS` structure at `td_params`.
    ///
    /// Inputs: RCX = TDR PA, RDX = TD_PARAMS PA (shared, 1024-byte aligned).
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_OP_STATE_INCORRECT`, `TDX_TDCS_NOT_ALLOCATED`,
    /// `TDX_OPERAND_INVALID` with a TD_PARAMS field id (for CPUID configuration errors the
    /// error's `rcx` holds the leaf/subleaf).
    pub fn mng_init(&self, tdr: Tdr, td_params: Hpa) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            rdx: td_params.raw(),
            ..ZERO
        };
        self.call(leaf::MNG_INIT, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MNG.RD (11): reads one element of a TD-scope metadata field ([`crate::abi::md::td`];
    /// element `i` of a multi-element field is [`crate::abi::md::element`]).
    ///
    /// Inputs: RCX = TDR PA, RDX = field id. Output: the value, from R8 (the module clears R8
    /// on failure). Issued at version 0, so RDX is not an output.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_METADATA_FIELD_ID_INCORRECT`,
    /// `TDX_METADATA_FIELD_NOT_READABLE`, `TDX_OP_STATE_INCORRECT`, `TDX_OPERAND_BUSY | RCX`.
    #[must_use = "the field's value is the point of the call"]
    pub fn mng_rd(&self, tdr: Tdr, field: u64) -> Result<u64, TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            rdx: field,
            ..ZERO
        };
        Ok(self.call(leaf::MNG_RD, args, NO_WARNINGS)?.out.r8)
    }

    /// TDH.MNG.WR (13): writes the bits of `value` selected by `mask` into one element of a
    /// TD-scope metadata field.
    ///
    /// Inputs: RCX = TDR PA, RDX = field id, R8 = value, R9 = write mask. Output: the element's
    /// previous value (as the host may read it), from R8.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_METADATA_FIELD_ID_INCORRECT`,
    /// `TDX_METADATA_FIELD_NOT_WRITABLE`, `TDX_METADATA_FIELD_VALUE_NOT_VALID`.
    pub fn mng_wr(&self, tdr: Tdr, field: u64, value: u64, mask: u64) -> Result<u64, TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            rdx: field,
            r8: value,
            r9: mask,
            ..ZERO
        };
        Ok(self.call(leaf::MNG_WR, args, NO_WARNINGS)?.out.r8)
    }

    /// TDH.MNG.VPFLUSHDONE (19): checks that every vCPU was flushed and blocks the TD's HKID.
    ///
    /// Inputs: RCX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_FLUSHVP_NOT_DONE` (a vCPU is still associated),
    /// `TDX_LIFECYCLE_STATE_INCORRECT`, `TDX_OPERAND_BUSY|KOT`.
    pub fn mng_vpflushdone(&self, tdr: Tdr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MNG_VPFLUSHDONE, args, NO_WARNINGS)
            .map(drop)
    }

    /// TDH.MNG.KEY.FREEID (20): frees the TD's HKID once every package wrote its cache back.
    ///
    /// Inputs: RCX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status: for example `TDX_WBCACHE_NOT_COMPLETE` (run
    /// [`Tdx::phymem_cache_wb`] on every package first), `TDX_LIFECYCLE_STATE_INCORRECT`,
    /// `TDX_OPERAND_BUSY|KOT`.
    pub fn mng_key_freeid(&self, tdr: Tdr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MNG_KEY_FREEID, args, NO_WARNINGS).map(drop)
    }

    /// TDH.MNG.KEY.RECLAIMID (27): kept for compatibility; newer modules only return success.
    ///
    /// Inputs: RCX = TDR PA.
    ///
    /// # Errors
    ///
    /// The module's status (none expected from current modules).
    pub fn mng_key_reclaimid(&self, tdr: Tdr) -> Result<(), TdxError> {
        let args = SeamArgs {
            rcx: tdr.hpa().raw(),
            ..ZERO
        };
        self.call(leaf::MNG_KEY_RECLAIMID, args, NO_WARNINGS)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn mng_create_regs() {
        let t = ok();
        t.mng_create(TDR, 0x1234).unwrap();
        t.backend().assert_one(
            9,
            SeamArgs {
                rcx: 0x10_0000,
                rdx: 0x1234,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_key_config_regs() {
        let t = ok();
        assert_eq!(t.mng_key_config(TDR), Ok(KeyConfig::Configured));
        t.backend().assert_one(
            8,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_addcx_regs() {
        let t = ok();
        t.mng_addcx(TDR, TDCX).unwrap();
        t.backend().assert_one(
            1,
            SeamArgs {
                rcx: 0x11_0000,
                rdx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_init_regs() {
        let t = ok();
        t.mng_init(TDR, Hpa::new(0x50_0400)).unwrap();
        t.backend().assert_one(
            21,
            SeamArgs {
                rcx: 0x10_0000,
                rdx: 0x50_0400,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_rd_regs_and_value_from_r8() {
        let field = abi::md::element(abi::md::td::MRTD, 5);
        let t = replying(
            status::SUCCESS,
            SeamArgs {
                rdx: field,
                r8: 0xdead_beef,
                ..ZERO
            },
        );
        assert_eq!(t.mng_rd(TDR, field), Ok(0xdead_beef));
        t.backend().assert_one(
            11,
            SeamArgs {
                rcx: 0x10_0000,
                rdx: 0x1310_0003_0000_0005,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_rd_failure_is_an_error_with_the_status() {
        let st = status::METADATA_FIELD_NOT_READABLE;
        let t = replying(st, ZERO);
        let e = t.mng_rd(TDR, abi::md::td::VIRTUAL_TSC).unwrap_err();
        assert_eq!(e.status, st);
    }

    #[test]
    fn mng_wr_regs_and_old_value_from_r8() {
        let t = replying(status::SUCCESS, SeamArgs { r8: 0x55, ..ZERO });
        assert_eq!(t.mng_wr(TDR, abi::md::td::ATTRIBUTES, 0xaa, 0xf0), Ok(0x55));
        t.backend().assert_one(
            13,
            SeamArgs {
                rcx: 0x10_0000,
                rdx: 0x1110_0003_0000_0000,
                r8: 0xaa,
                r9: 0xf0,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_vpflushdone_regs() {
        let t = ok();
        t.mng_vpflushdone(TDR).unwrap();
        t.backend().assert_one(
            19,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_key_freeid_regs() {
        let t = ok();
        t.mng_key_freeid(TDR).unwrap();
        t.backend().assert_one(
            20,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn mng_key_reclaimid_regs() {
        let t = ok();
        t.mng_key_reclaimid(TDR).unwrap();
        t.backend().assert_one(
            27,
            SeamArgs {
                rcx: 0x10_0000,
                ..ZERO
            },
        );
    }

    #[test]
    fn key_configured_is_ok_already_configured() {
        let t = replying(status::KEY_CONFIGURED, ZERO);
        assert_eq!(t.mng_key_config(TDR), Ok(KeyConfig::AlreadyConfigured));
    }
}
