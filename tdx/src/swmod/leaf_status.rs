// SPDX-License-Identifier: GPL-2.0-only
//! How a leaf handler ends when it does not complete with plain `TDX_SUCCESS`.
//!
//! Intel's handlers set `return_val` and jump to their exit at the first failed check; here a
//! handler returns `Err(`[`Status`]`)` and `?` does the jump. [`Status`] is the completion status
//! RAX gets, built from a status class and what its low 32 bits carry (an operand id or a
//! detail), so no handler assembles status words by hand. The dispatcher turns a handler's
//! result into RAX in one place ([`to_rax`]).
//!
//! Besides errors, a few leaves end early with a non-error class that did not do the operation
//! (`TDX_GPA_RANGE_ALREADY_BLOCKED`, `TDX_NO_HKID_READY_TO_WBCACHE`,
//! `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT`): those are `Err` too, since they leave the same
//! way.

use crate::abi::status;
use crate::error::Operand;

/// A completion status other than plain `TDX_SUCCESS`: what a leaf handler answers when a check
/// stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) struct Status(u64);

/// What a leaf handler returns: `Ok` is `TDX_SUCCESS`.
pub(crate) type LeafResult<T = ()> = Result<T, Status>;

impl Status {
    /// A status class with nothing in its low 32 bits (for example `TDX_TD_FATAL`).
    pub(crate) const fn new(class: u64) -> Self {
        Status(class)
    }

    /// A status word as it is (the failure injector's).
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Status(raw)
    }

    /// A status class naming the operand it is about (for example `TDX_EPT_WALK_FAILED|RCX`).
    pub(crate) const fn with_operand(class: u64, op: Operand) -> Self {
        Status(class | op.0 as u64)
    }

    /// A status class with a detail in its low 32 bits (a vCPU state, an x2APIC id).
    pub(crate) const fn with_detail(class: u64, detail: u64) -> Self {
        Status(class | detail)
    }

    /// `TDX_OPERAND_INVALID` for `op`.
    pub(crate) const fn operand_invalid(op: Operand) -> Self {
        Self::with_operand(status::OPERAND_INVALID, op)
    }

    /// `TDX_OPERAND_BUSY` for `op`: a try-lock on it failed.
    pub(crate) const fn operand_busy(op: Operand) -> Self {
        Self::with_operand(status::OPERAND_BUSY, op)
    }

    /// `TDX_OPERAND_ADDR_RANGE_ERROR` for `op`: the page is outside every TDMR.
    pub(crate) const fn addr_range_error(op: Operand) -> Self {
        Self::with_operand(status::OPERAND_ADDR_RANGE_ERROR, op)
    }

    /// `TDX_PAGE_METADATA_INCORRECT` for `op`: the page's PAMT entry is not what the leaf needs.
    pub(crate) const fn page_metadata_incorrect(op: Operand) -> Self {
        Self::with_operand(status::PAGE_METADATA_INCORRECT, op)
    }

    /// The same class, now about `op` (for checks that know the class but not the operand).
    pub(crate) const fn on(self, op: Operand) -> Self {
        Status(self.0 | op.0 as u64)
    }

    /// The status word, as RAX carries it.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }
}

/// RAX for a handler's result: the one place a leaf's outcome becomes a status word.
pub(crate) const fn to_rax(r: LeafResult) -> u64 {
    match r {
        Ok(()) => status::SUCCESS,
        Err(s) => s.raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_put_the_operand_in_the_low_bits() {
        assert_eq!(
            Status::operand_busy(Operand::WBCACHE).raw(),
            0x8000_0200_0000_00BC
        );
        assert_eq!(
            Status::operand_invalid(Operand::R8).raw(),
            0xC000_0100_0000_0008
        );
        assert_eq!(
            Status::new(status::OPERAND_INVALID).on(Operand::R9),
            Status::operand_invalid(Operand::R9)
        );
        assert_eq!(to_rax(Ok(())), status::SUCCESS);
        assert_eq!(to_rax(Err(Status::from_raw(7))), 7);
    }
}
