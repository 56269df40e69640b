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
//!
//! The leaves are grouped by family, one file each, as the TDX module's ABI groups them:
//! [`mng`] (TD management), [`vp`] (vCPUs), [`mem`] (private memory and its S-EPT), [`mr`]
//! (measurement), [`phymem`] (physical pages and caches), [`sys`] (module scope). Each file's
//! tests check that family's register assignments and decoding; the status decoding every
//! leaf shares is tested here.

mod mem;
mod mng;
mod mr;
mod phymem;
mod sys;
#[cfg(test)]
mod testing;
mod vp;

use crate::abi::{self, status, status_class};
use crate::error::TdxError;
use crate::seamcall::{SeamArgs, Seamcall};
use mmu::Hpa;

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

/// A page's PAMT entry as TDH.PHYMEM.PAGE.RDMD reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageMetadata {
    /// The page type ([`crate::abi::page_type`]; `NDA` for a page the module does not hold),
    /// from RCX.
    pub page_type: u8,
    /// The TDR of the TD that owns or last owned the page (0 for a TDR and for a page never
    /// given to a TD): freeing a page leaves its owner. From RDX.
    pub owner: Hpa,
    /// The page size ([`crate::abi::page_size`]) of the entry the module's PAMT walk stopped
    /// at, from R8.
    pub size: u8,
    /// The block epoch (`bepoch`) of a REG or EPT page, 0 for other types, from R9.
    pub bepoch: u64,
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
}

#[cfg(test)]
mod tests {
    use super::testing::*;

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
    fn page_newtypes_round_trip() {
        let h = Hpa::new(0xabc_d000);
        assert_eq!(Tdr::new(h).hpa(), h);
        assert_eq!(Tdcx::new(h).hpa(), h);
        assert_eq!(Tdvpr::new(h).hpa(), h);
    }

    #[test]
    fn every_leaf_uses_version_zero() {
        let t = ok();
        t.mng_rd(TDR, 0).unwrap();
        t.vp_rd(TDVPR, 0).unwrap();
        t.mem_sept_add(TDR, GPA, SeptLevel::L2M, PAGE).unwrap();
        t.mem_sept_remove(TDR, GPA, SeptLevel::L2M).unwrap();
        t.vp_init(TDVPR, 0).unwrap();
        for (rax, _) in t.backend().calls() {
            assert_eq!(rax >> 16, 0, "rax {rax:#x}");
        }
    }
}
