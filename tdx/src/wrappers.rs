// SPDX-License-Identifier: GPL-2.0-only
//! Typed SEAMCALL wrappers, one method per leaf, in the style of rust-vmm's `kvm-ioctls`.
//!
//! [`Tdx`] owns a [`Seamcall`] backend. Every method fills the leaf's input registers from
//! typed arguments, issues the leaf through one private helper, and decodes the outputs:
//!
//! - a status of class `TDX_SUCCESS` is `Ok`;
//! - the non-error "warning" classes a leaf defines (bit 63 clear:
//!   `TDX_GPA_RANGE_ALREADY_BLOCKED`, `TDX_KEY_CONFIGURED`, `TDX_NO_HKID_READY_TO_WBCACHE`) are
//!   `Ok` too, reported in the leaf's Ok value ([`Block`], [`KeyConfig`], [`CacheWb`]);
//! - every other status, including a warning class the leaf does not define (for example
//!   `TDX_NON_RECOVERABLE_TD`, bit 63 clear but no success), is `Err(`[`TdxError`]`)` with the
//!   full status and the output RCX/RDX, so S-EPT details survive ([`TdxError::sept`]).
//!
//! Register assignments are those of `docs/tdx-module-rules.md` §1 and Linux's `tdx.c`. Every
//! leaf is issued with version 0. The wrappers check nothing themselves: alignment, levels and
//! page states are the TDX module's to judge, and its verdict comes back as the error.

use crate::abi::{self, leaf, status, status_class, SeptLevel};
use crate::error::{SeptDetails, TdxError};
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::{Gpa, Hpa};

/// The leaf version every wrapper issues (RAX bits 23:16).
const VERSION: u8 = 0;

/// All input registers zero.
const ZERO: SeamArgs = SeamArgs {
    rcx: 0,
    rdx: 0,
    r8: 0,
    r9: 0,
    r10: 0,
    r11: 0,
};

/// Leaves that define no success-class status besides `TDX_SUCCESS`.
const NO_WARNINGS: &[u64] = &[];

/// Size of `TDSYSINFO_STRUCT`, passed to TDH.SYS.INFO in RDX.
pub const TDSYSINFO_STRUCT_SIZE: u64 = 1024;

macro_rules! page_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(Hpa);

        impl $name {
            /// Wraps the page's host-physical address.
            #[must_use]
            pub const fn new(hpa: Hpa) -> Self {
                Self(hpa)
            }

            /// The page's host-physical address.
            #[must_use]
            pub const fn hpa(self) -> Hpa {
                self.0
            }
        }
    };
}

page_newtype!(
    /// A TD's root page (TDR): the handle every TD-scoped leaf takes.
    Tdr
);
page_newtype!(
    /// A control-structure extension page, added to a TD (TDCS) or a vCPU (TDVPS).
    Tdcx
);
page_newtype!(
    /// A vCPU's root page (TDVPR): the handle every vCPU-scoped leaf takes.
    Tdvpr
);

/// Outcome of TDH.MNG.KEY.CONFIG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyConfig {
    /// The TD's key was programmed on this package (`TDX_SUCCESS`).
    Configured,
    /// This package was already configured (`TDX_KEY_CONFIGURED`).
    AlreadyConfigured,
}

/// Outcome of TDH.MEM.RANGE.BLOCK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The entry was blocked by this call (`TDX_SUCCESS`).
    Blocked,
    /// The entry was already blocked (`TDX_GPA_RANGE_ALREADY_BLOCKED`).
    AlreadyBlocked,
}

/// Outcome of TDH.PHYMEM.CACHE.WB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheWb {
    /// Every flushed HKID was written back on this package (`TDX_SUCCESS`).
    Done,
    /// No HKID was waiting for a write-back (`TDX_NO_HKID_READY_TO_WBCACHE`).
    NothingToWriteBack,
}

/// What TDH.PHYMEM.PAGE.RECLAIM reports about the page it returned to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reclaimed {
    /// The PAMT page type the page had ([`crate::abi::page_type`]), from RCX.
    pub page_type: u8,
    /// The owning TD's TDR (0 for a TDR itself), from RDX.
    pub owner: Hpa,
    /// The PAMT page size ([`crate::abi::page_size`]), from R8.
    pub size: u8,
}

/// What TDH.SYS.INFO wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysInfo {
    /// Bytes of `TDSYSINFO_STRUCT` written, from RDX.
    pub info_bytes: u64,
    /// CMR entries written, from R9.
    pub cmr_count: u64,
}

/// A leaf that completed with a success-class status.
struct Done {
    /// The status class (operand id stripped).
    class: u64,
    /// The output registers.
    out: SeamArgs,
}

/// Typed SEAMCALL leaves over a backend: the CPU (the kernel module's SEAMCALL backend) or a
/// software TDX module.
#[derive(Debug)]
pub struct Tdx<S: Seamcall> {
    backend: S,
}

impl<S: Seamcall> Tdx<S> {
    /// Wraps a backend.
    #[must_use]
    pub const fn new(backend: S) -> Self {
        Tdx { backend }
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &S {
        &self.backend
    }

    /// Issues `leaf` (version 0) with `args`. A status of class `TDX_SUCCESS`, or of a class in
    /// `warnings` with the error bit clear, is `Ok` with that class and the output registers;
    /// anything else is a [`TdxError`] carrying the status and the output RCX/RDX.
    fn call(&self, leaf: u16, args: SeamArgs, warnings: &[u64]) -> Result<Done, TdxError> {
        let mut regs = args;
        let status = self.backend.seamcall(abi::rax(leaf, VERSION), &mut regs);
        let class = status_class(status);
        let success = class == status::SUCCESS
            || (status & status::ERROR_BIT == 0 && warnings.contains(&class));
        if success {
            Ok(Done { class, out: regs })
        } else {
            Err(TdxError::new(status, regs.rcx, regs.rdx))
        }
    }

    // ---- TD management -------------------------------------------------------------------

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

    /// TDH.MNG.RD (11): reads one element of a TD-scope metadata field ([`abi::md::td`];
    /// element `i` of a multi-element field is [`abi::md::element`]).
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

    // ---- vCPU management -----------------------------------------------------------------

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

    /// TDH.VP.RD (26): reads one element of a vCPU-scope metadata field ([`abi::md::vp`]).
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

    // ---- Private memory (S-EPT) ----------------------------------------------------------

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
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            r8: page.raw(),
            ..ZERO
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
        let args = SeamArgs {
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
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
        let args = SeamArgs {
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
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
            rcx: abi::gpa_level_operand(gpa.raw(), SeptLevel::L4K),
            rdx: tdr.hpa().raw(),
            r8: page.raw(),
            r9: source.raw(),
            ..ZERO
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
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            r8: page.raw(),
            ..ZERO
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
        let args = SeamArgs {
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
        let done = self.call(leaf::MEM_PAGE_REMOVE, args, NO_WARNINGS)?;
        Ok(Hpa::new(done.out.rcx))
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
        let args = SeamArgs {
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
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
        let args = SeamArgs {
            rcx: abi::gpa_level_operand(gpa.raw(), level),
            rdx: tdr.hpa().raw(),
            ..ZERO
        };
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

    // ---- Measurement ---------------------------------------------------------------------

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

    // ---- Physical memory -----------------------------------------------------------------

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
        let args = SeamArgs {
            rcx: page.raw(),
            ..ZERO
        };
        let out = self.call(leaf::PHYMEM_PAGE_RECLAIM, args, NO_WARNINGS)?.out;
        Ok(Reclaimed {
            page_type: (out.rcx & 0xff) as u8,
            owner: Hpa::new(out.rdx),
            size: (out.r8 & 0xff) as u8,
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

    // ---- Module --------------------------------------------------------------------------

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
    extern crate std;

    use super::*;
    use crate::abi::{operand, page_size, page_type, sept_state};
    use crate::error::Operand;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::vec::Vec;

    const TDR: Tdr = Tdr::new(Hpa::new(0x10_0000));
    const TDCX: Tdcx = Tdcx::new(Hpa::new(0x11_0000));
    const TDVPR: Tdvpr = Tdvpr::new(Hpa::new(0x12_0000));
    const PAGE: Hpa = Hpa::new(0x20_0000);
    const SOURCE: Hpa = Hpa::new(0x30_0000);
    const GPA: Gpa = Gpa::new(0x4020_0000);

    /// A scripted completion: the status and the output registers.
    #[derive(Clone, Copy)]
    struct Reply {
        status: u64,
        out: SeamArgs,
    }

    /// Records every (RAX, input registers) and answers with scripted replies, then with
    /// `TDX_SUCCESS` and all-zero outputs.
    #[derive(Default)]
    struct RecordingBackend {
        calls: Mutex<Vec<(u64, SeamArgs)>>,
        replies: Mutex<VecDeque<Reply>>,
    }

    impl RecordingBackend {
        fn replying(status: u64, out: SeamArgs) -> Self {
            let b = RecordingBackend::default();
            b.replies.lock().unwrap().push_back(Reply { status, out });
            b
        }

        fn calls(&self) -> Vec<(u64, SeamArgs)> {
            self.calls.lock().unwrap().clone()
        }

        /// Asserts exactly one call, of `leaf` version 0 with exactly `args`.
        fn assert_one(&self, leaf: u16, args: SeamArgs) {
            assert_eq!(self.calls(), [(abi::rax(leaf, 0), args)]);
        }
    }

    impl Seamcall for RecordingBackend {
        fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
            self.calls.lock().unwrap().push((rax, *args));
            let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply {
                status: status::SUCCESS,
                out: ZERO,
            });
            *args = reply.out;
            reply.status
        }
    }

    fn ok() -> Tdx<RecordingBackend> {
        Tdx::new(RecordingBackend::default())
    }

    fn replying(status: u64, out: SeamArgs) -> Tdx<RecordingBackend> {
        Tdx::new(RecordingBackend::replying(status, out))
    }

    fn gl(level: SeptLevel) -> u64 {
        GPA.raw() | u64::from(level.0)
    }

    // ---- one test per wrapper: leaf number and input registers ---------------------------

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

    // ---- status decoding -----------------------------------------------------------------

    #[test]
    fn busy_status_becomes_error_with_operand() {
        let busy = status::OPERAND_BUSY | u64::from(operand::SEPT_TREE);
        let t = replying(busy, ZERO);
        let e = t.mem_page_aug(TDR, GPA, SeptLevel::L4K, PAGE).unwrap_err();
        assert_eq!(e.status, busy);
        assert_eq!(e.class(), status::OPERAND_BUSY);
        assert_eq!(e.operand(), Operand::SEPT_TREE);
        assert!(e.is_busy());
        assert!(e.is_busy_on(Operand::SEPT_TREE));
        assert_eq!(e.sept(), None);
    }

    #[test]
    fn busy_on_rcx_keeps_sept_details() {
        let (rcx, rdx) = SeptDetails {
            entry: 0x8000_0000_0000_0000,
            level: SeptLevel::L4K,
            state: sept_state::PENDING,
        }
        .to_regs();
        let t = replying(
            status::OPERAND_BUSY | u64::from(operand::RCX),
            SeamArgs { rcx, rdx, ..ZERO },
        );
        let e = t.mem_range_block(TDR, GPA, SeptLevel::L4K).unwrap_err();
        assert!(e.is_busy_on(Operand::RCX));
        assert_eq!(e.sept().map(|s| s.state), Some(sept_state::PENDING));
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
    fn key_configured_is_ok_already_configured() {
        let t = replying(status::KEY_CONFIGURED, ZERO);
        assert_eq!(t.mng_key_config(TDR), Ok(KeyConfig::AlreadyConfigured));
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
    fn warning_of_another_leaf_is_an_error() {
        // Only the leaf that defines a warning class accepts it.
        let t = replying(status::GPA_RANGE_ALREADY_BLOCKED, ZERO);
        let e = t.mem_track(TDR).unwrap_err();
        assert_eq!(e.class(), status::GPA_RANGE_ALREADY_BLOCKED);
        let t = replying(status::KEY_CONFIGURED, ZERO);
        assert!(t.mem_range_block(TDR, GPA, SeptLevel::L4K).is_err());
    }

    #[test]
    fn non_error_non_success_status_is_an_error() {
        // TDX_NON_RECOVERABLE_TD: bit 63 clear, but no success.
        let t = replying(0x6000_0002_0000_0000, ZERO);
        let e = t.mr_finalize(TDR).unwrap_err();
        assert_eq!(e.status, 0x6000_0002_0000_0000);
    }

    #[test]
    fn vmfailinvalid_is_an_error() {
        let t = replying(status::SW_VMFAILINVALID, ZERO);
        let e = t.sys_rd(1).unwrap_err();
        assert_eq!(e.status, status::SW_VMFAILINVALID);
        assert!(!e.is_busy());
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

    #[test]
    fn page_newtypes_round_trip() {
        let h = Hpa::new(0xabc_d000);
        assert_eq!(Tdr::new(h).hpa(), h);
        assert_eq!(Tdcx::new(h).hpa(), h);
        assert_eq!(Tdvpr::new(h).hpa(), h);
    }

    #[test]
    fn every_leaf_uses_version_zero() {
        let t = ok();
        let _ = t.mng_rd(TDR, 0);
        let _ = t.vp_rd(TDVPR, 0);
        let _ = t.mem_sept_add(TDR, GPA, SeptLevel::L2M, PAGE);
        let _ = t.mem_sept_remove(TDR, GPA, SeptLevel::L2M);
        let _ = t.vp_init(TDVPR, 0);
        for (rax, _) in t.backend().calls() {
            assert_eq!(rax >> 16, 0, "rax {rax:#x}");
        }
    }
}
