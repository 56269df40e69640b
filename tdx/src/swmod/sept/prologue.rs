// SPDX-License-Identifier: GPL-2.0-only
//! What the MEM leaves share before they act on the entry: the GPA+level operand, the TD and
//! S-EPT tree locks, the walk to the entry and its lock (the common prologue of `tdh_mem_*.c`);
//! and the TLB-tracking rules a runnable TD's blocked entries are removed or unblocked under.

use super::{any_blocked, details, hpa, state_of, EntryLock, TDEL};
use crate::abi::{op_state, status, SeptLevel};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use crate::swmod::locks::{Held, Mode};
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::PhysMem;
use crate::swmod::operands::TdRef;
use crate::swmod::pamt::PamtEntry;
use crate::swmod::state::TdState;
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::Acquire;

/// Decoded GPA+level operand.
pub(super) struct GpaLevel {
    pub(super) gpa: u64,
    pub(super) level: SeptLevel,
}

/// What the MEM leaves' common prologue holds: the TD (TDR locked shared), the OP-state lock,
/// the S-EPT tree lock, the checked GPA and level, and the locked entry.
pub(super) type MemPrologue<'a> = (
    TdRef<'a>,
    Option<Held<'a>>,
    Held<'a>,
    GpaLevel,
    EntryLock<'a>,
);

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// `verify_page_info_input` + `check_gpa_validity` for RCX.
    pub(super) fn gpa_level(
        &self,
        td: &TdState,
        rcx: u64,
        min: u8,
        max: u8,
    ) -> LeafResult<GpaLevel> {
        let bad = Status::operand_invalid(Operand::RCX);
        let level = (rcx & 7) as u8;
        if rcx & 0xff8 != 0 || rcx >> 52 != 0 || level < min || level > max {
            return Err(bad);
        }
        let gpa = rcx & !0xfff;
        let lvl = SeptLevel(level);
        if gpa & ((lvl.pages() << 12) - 1) != 0 {
            return Err(bad);
        }
        let gpaw = td.gpaw.load(Acquire) as u32;
        // Private GPAs only: the shared bit (GPAW - 1) and everything above it must be clear.
        if gpa >> (gpaw - 1) != 0 {
            return Err(bad);
        }
        Ok(GpaLevel { gpa, level: lvl })
    }

    /// Common MEM prologue: TDR, state checks, GPA+level, S-EPT tree lock, walk, entry lock.
    /// On failure returns the status with RCX/RDX already filled.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mem_prologue<'a>(
        &'a self,
        a: &mut SeamArgs,
        leaf_no: u16,
        rcx: u64,
        tdr_pa: u64,
        min: u8,
        max: Option<u8>,
        tree: Mode,
    ) -> LeafResult<MemPrologue<'a>> {
        self.mem_prologue_with(a, leaf_no, rcx, tdr_pa, min, max, tree, |_| Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mem_prologue_with<'a>(
        &'a self,
        a: &mut SeamArgs,
        leaf_no: u16,
        rcx: u64,
        tdr_pa: u64,
        min: u8,
        max: Option<u8>,
        tree: Mode,
        after_state: impl FnOnce(&TdState) -> LeafResult,
    ) -> LeafResult<MemPrologue<'a>> {
        let t = self.lock_tdr(tdr_pa, Operand::RDX, Mode::Shared)?;
        // SAFETY-free lifetime juggling: the TD state lives in the TDR page, mapped for 'a.
        let td: &'a TdState = t.td;
        let op = self.check_state(td, Some(Mode::Shared), leaf_no)?;
        after_state(td)?;
        let max = max.unwrap_or(Self::root_level(td));
        let gl = self.gpa_level(td, rcx, min, max)?;
        let tree_lock =
            Held::try_new(&td.sept_lock, tree).ok_or(Status::operand_busy(Operand::SEPT_TREE))?;
        let w = self
            .walk(td, gl.gpa, gl.level)
            .ok_or(Status::with_operand(status::EPT_WALK_FAILED, Operand::RCX))?;
        if w.level != gl.level {
            details(a, w.entry.load(Acquire) & !TDEL, w.level);
            return Err(Status::with_operand(status::EPT_WALK_FAILED, Operand::RCX));
        }
        let Some(lock) = EntryLock::try_new(w.entry) else {
            details(a, w.entry.load(Acquire) & !TDEL, w.level);
            return Err(Status::operand_busy(Operand::RCX));
        };
        Ok((t, op, tree_lock, gl, lock))
    }

    pub(super) fn is_tracked(td: &TdState, bepoch: u64) -> bool {
        let epoch = td.td_epoch.load(Acquire);
        bepoch + 1 < epoch
            || (bepoch + 1 == epoch && td.refcount[(bepoch & 1) as usize].load(Acquire) == 0)
    }

    pub(super) fn needs_tracking(td: &TdState) -> bool {
        Self::op_state_of(td) == op_state::RUNNABLE
    }

    /// The PAMT entry whose `bepoch` a block of entry `v` records: the data page of a leaf,
    /// the child S-EPT page of a non-leaf.
    pub(super) fn mapped_page_entry(&self, v: u64) -> Option<&PamtEntry> {
        self.pamt.entry(&self.mem, hpa(v))
    }

    /// The checks PAGE.REMOVE and SEPT.REMOVE share once the entry is locked: the PAMT entry of
    /// the page the entry maps (leaf) or points to (table) is locked exclusively, and a runnable
    /// TD's entry must be blocked with its block TLB-tracked. Returns the locked PAMT entry.
    pub(super) fn lock_removable<'m>(
        &'m self,
        td: &TdState,
        a: &mut SeamArgs,
        v: u64,
        level: SeptLevel,
    ) -> LeafResult<(&'m PamtEntry, Held<'m>)> {
        let busy = Status::operand_busy(Operand::RCX);
        let pe = self.pamt.entry(&self.mem, hpa(v)).ok_or(busy)?;
        let lock = pe.try_lock(Mode::Exclusive).ok_or(busy)?;
        if Self::needs_tracking(td) {
            if !any_blocked(state_of(v)) {
                details(a, v, level);
                return Err(Status::with_operand(
                    status::GPA_RANGE_NOT_BLOCKED,
                    Operand::RCX,
                ));
            }
            if !Self::is_tracked(td, pe.bepoch()) {
                return Err(Status::with_operand(
                    status::TLB_TRACKING_NOT_DONE,
                    Operand::RCX,
                ));
            }
        }
        Ok((pe, lock))
    }
}
