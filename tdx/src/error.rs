// SPDX-License-Identifier: GPL-2.0-only
//! Decoded SEAMCALL completion status.
//!
//! A status is class (bits 63:32: error, non-recoverable, class, sub-code) plus an operand id or
//! details (bits 31:0). The MEM leaves also return the S-EPT entry they stopped at in RCX and
//! its level and state in RDX. [`TdxError`] keeps all of it and names the classes the host
//! reacts to, so callers read like the spec:
//! `Err(e) if e.is_busy_on(Operand::SEPT_TREE)`.

use crate::abi::{operand, status, status_class, SeptLevel};
use core::fmt;

/// An operand id (low 32 bits of a status).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operand(pub u32);

impl Operand {
    /// RAX.
    pub const RAX: Operand = Operand(operand::RAX);
    /// RCX.
    pub const RCX: Operand = Operand(operand::RCX);
    /// RDX.
    pub const RDX: Operand = Operand(operand::RDX);
    /// R8.
    pub const R8: Operand = Operand(operand::R8);
    /// R9.
    pub const R9: Operand = Operand(operand::R9);
    /// R10.
    pub const R10: Operand = Operand(operand::R10);
    /// R11.
    pub const R11: Operand = Operand(operand::R11);
    /// The TD's TDR (implicit).
    pub const TDR: Operand = Operand(operand::TDR);
    /// The TD's S-EPT tree.
    pub const SEPT_TREE: Operand = Operand(operand::SEPT_TREE);
    /// The TD's TLB epoch.
    pub const TD_EPOCH: Operand = Operand(operand::TD_EPOCH);
    /// The TD's OP state.
    pub const OP_STATE: Operand = Operand(operand::OP_STATE);
    /// The key ownership table.
    pub const KOT: Operand = Operand(operand::KOT);
    /// The package's cache write-back state (TDH.PHYMEM.CACHE.WB).
    pub const WBCACHE: Operand = Operand(operand::WBCACHE);
}

impl fmt::Debug for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            operand::RAX => "RAX",
            operand::RCX => "RCX",
            operand::RDX => "RDX",
            operand::R8 => "R8",
            operand::R9 => "R9",
            operand::R10 => "R10",
            operand::R11 => "R11",
            operand::TDR => "TDR",
            operand::SEPT_TREE => "SEPT_TREE",
            operand::TD_EPOCH => "TD_EPOCH",
            operand::OP_STATE => "OP_STATE",
            operand::KOT => "KOT",
            operand::WBCACHE => "WBCACHE",
            n => return write!(f, "Operand({n:#x})"),
        };
        f.write_str(name)
    }
}

/// The S-EPT entry a MEM leaf reported (RCX = architectural entry, RDX = level and state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeptDetails {
    /// The architectural entry (HPA, permissions, SVE).
    pub entry: u64,
    /// The level the walk reached or the caller requested.
    pub level: SeptLevel,
    /// The public state ([`crate::abi::sept_state`]).
    pub state: u8,
}

impl SeptDetails {
    /// Decodes RCX/RDX.
    pub const fn from_regs(rcx: u64, rdx: u64) -> SeptDetails {
        SeptDetails {
            entry: rcx,
            level: SeptLevel((rdx & 7) as u8),
            state: ((rdx >> 8) & 0xff) as u8,
        }
    }

    /// Encodes into RCX/RDX.
    pub const fn to_regs(self) -> (u64, u64) {
        (self.entry, self.level.0 as u64 | (self.state as u64) << 8)
    }
}

/// A failed SEAMCALL: the raw status and the registers that explain it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct TdxError {
    /// The full status (RAX).
    pub status: u64,
    /// RCX on return.
    pub rcx: u64,
    /// RDX on return.
    pub rdx: u64,
}

impl TdxError {
    /// Wraps a status and the output registers.
    pub const fn new(status: u64, rcx: u64, rdx: u64) -> Self {
        TdxError { status, rcx, rdx }
    }

    /// The status class (operand id stripped).
    pub const fn class(&self) -> u64 {
        status_class(self.status)
    }

    /// The operand id.
    pub const fn operand(&self) -> Operand {
        Operand(self.status as u32)
    }

    /// Whether this is `TDX_OPERAND_BUSY` on `op`.
    pub const fn is_busy_on(&self, op: Operand) -> bool {
        self.class() == status::OPERAND_BUSY && self.operand().0 == op.0
    }

    /// Contention that goes away by itself or after kicking vCPUs: `TDX_OPERAND_BUSY` (any
    /// operand), `TDX_PREVIOUS_TLB_EPOCH_BUSY`, `TDX_INTERRUPTED_RESUMABLE`.
    pub const fn is_busy(&self) -> bool {
        matches!(
            self.class(),
            status::OPERAND_BUSY | status::PREVIOUS_TLB_EPOCH_BUSY | status::INTERRUPTED_RESUMABLE
        )
    }

    /// Whether the class is one whose RCX/RDX carry S-EPT details.
    pub const fn has_sept_details(&self) -> bool {
        matches!(
            self.class(),
            status::EPT_WALK_FAILED
                | status::EPT_ENTRY_STATE_INCORRECT
                | status::GPA_RANGE_NOT_BLOCKED
                | status::EPT_PAGE_NOT_FREE
                | status::EPT_ENTRY_NOT_PRESENT
        ) || (self.class() == status::OPERAND_BUSY && self.operand().0 == operand::RCX)
    }

    /// The S-EPT entry and level reported with an S-EPT error.
    pub const fn sept(&self) -> Option<SeptDetails> {
        if self.has_sept_details() {
            Some(SeptDetails::from_regs(self.rcx, self.rdx))
        } else {
            None
        }
    }

    /// The spec's name of the class, for logs.
    pub const fn name(&self) -> &'static str {
        // Software statuses (the instruction itself failed) are whole values, not classes.
        match self.status {
            status::SW_VMFAILINVALID => return "TDX_SEAMCALL_VMFAILINVALID",
            status::SW_GP => return "TDX_SEAMCALL_GP",
            status::SW_UD => return "TDX_SEAMCALL_UD",
            _ => {}
        }
        match self.class() {
            status::INTERRUPTED_RESUMABLE => "TDX_INTERRUPTED_RESUMABLE",
            status::OPERAND_INVALID => "TDX_OPERAND_INVALID",
            status::OPERAND_ADDR_RANGE_ERROR => "TDX_OPERAND_ADDR_RANGE_ERROR",
            status::OPERAND_BUSY => "TDX_OPERAND_BUSY",
            status::PREVIOUS_TLB_EPOCH_BUSY => "TDX_PREVIOUS_TLB_EPOCH_BUSY",
            status::RND_NO_ENTROPY => "TDX_RND_NO_ENTROPY",
            status::PAGE_METADATA_INCORRECT => "TDX_PAGE_METADATA_INCORRECT",
            status::TD_ASSOCIATED_PAGES_EXIST => "TDX_TD_ASSOCIATED_PAGES_EXIST",
            status::SYS_NOT_READY => "TDX_SYS_NOT_READY",
            status::TD_FATAL => "TDX_TD_FATAL",
            status::TDCS_NOT_ALLOCATED => "TDX_TDCS_NOT_ALLOCATED",
            status::LIFECYCLE_STATE_INCORRECT => "TDX_LIFECYCLE_STATE_INCORRECT",
            status::OP_STATE_INCORRECT => "TDX_OP_STATE_INCORRECT",
            status::NO_VCPUS => "TDX_NO_VCPUS",
            status::TDCX_NUM_INCORRECT => "TDX_TDCX_NUM_INCORRECT",
            status::VCPU_STATE_INCORRECT => "TDX_VCPU_STATE_INCORRECT",
            status::VCPU_NOT_ASSOCIATED => "TDX_VCPU_NOT_ASSOCIATED",
            status::MAX_VCPUS_EXCEEDED => "TDX_MAX_VCPUS_EXCEEDED",
            status::KEY_GENERATION_FAILED => "TDX_KEY_GENERATION_FAILED",
            status::TD_KEYS_NOT_CONFIGURED => "TDX_TD_KEYS_NOT_CONFIGURED",
            status::WBCACHE_NOT_COMPLETE => "TDX_WBCACHE_NOT_COMPLETE",
            status::HKID_NOT_FREE => "TDX_HKID_NOT_FREE",
            status::FLUSHVP_NOT_DONE => "TDX_FLUSHVP_NOT_DONE",
            status::EPT_WALK_FAILED => "TDX_EPT_WALK_FAILED",
            status::EPT_ENTRY_NOT_PRESENT => "TDX_EPT_ENTRY_NOT_PRESENT",
            status::GPA_RANGE_NOT_BLOCKED => "TDX_GPA_RANGE_NOT_BLOCKED",
            status::TLB_TRACKING_NOT_DONE => "TDX_TLB_TRACKING_NOT_DONE",
            status::EPT_ENTRY_STATE_INCORRECT => "TDX_EPT_ENTRY_STATE_INCORRECT",
            status::EPT_PAGE_NOT_FREE => "TDX_EPT_PAGE_NOT_FREE",
            _ => "TDX status",
        }
    }
}

impl fmt::Debug for TdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({:#018x}, {:?})",
            self.name(),
            self.status,
            self.operand()
        )?;
        if let Some(s) = self.sept() {
            write!(f, " sept={s:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_on_sept_tree_decodes_class_and_operand() {
        let e = TdxError::new(0x8000_0200_0000_0092, 0, 0);
        assert!(e.is_busy());
        assert!(e.is_busy_on(Operand::SEPT_TREE));
        assert!(!e.is_busy_on(Operand::RCX));
        assert_eq!(e.sept(), None);
    }

    #[test]
    fn ept_walk_failed_carries_entry_and_level() {
        let e = TdxError::new(status::EPT_WALK_FAILED | 1, 0x8000_0000_0000_0000, 0x0002);
        assert_eq!(e.operand(), Operand::RCX);
        let s = e.sept().unwrap();
        assert_eq!((s.level, s.state), (SeptLevel::L1G, 0));
        assert!(!e.is_busy());
    }

    #[test]
    fn software_statuses_are_named_by_their_whole_value() {
        assert_eq!(
            TdxError::new(status::SW_VMFAILINVALID, 0, 0).name(),
            "TDX_SEAMCALL_VMFAILINVALID"
        );
        assert_eq!(TdxError::new(status::SW_GP, 0, 0).name(), "TDX_SEAMCALL_GP");
        assert_eq!(TdxError::new(status::SW_UD, 0, 0).name(), "TDX_SEAMCALL_UD");
    }

    #[test]
    fn sept_details_round_trip() {
        let d = SeptDetails {
            entry: 0x1234_5000,
            level: SeptLevel::L2M,
            state: 0x84,
        };
        let (rcx, rdx) = d.to_regs();
        assert_eq!(SeptDetails::from_regs(rcx, rdx), d);
    }
}
