// SPDX-License-Identifier: GPL-2.0-only
//! Blocking and TLB tracking: TDH.MEM.RANGE.BLOCK stops new translations of an entry,
//! TDH.MEM.TRACK starts a new TLB epoch, TDH.MEM.RANGE.UNBLOCK lets an entry be used again once its
//! block is tracked (`tdh_mem_range_block.c`, `tdh_mem_track.c`, `tdh_mem_range_unblock.c`).

use super::{any_blocked, details, state_of, St, RWX, SVE, TDB, TDBW};
use crate::abi::{leaf, status};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use crate::swmod::locks::{Held, Mode};
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::PhysMem;
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::{Acquire, Release};

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(in crate::swmod) fn mem_range_block(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            self.mem_prologue(a, leaf::MEM_RANGE_BLOCK, rcx, rdx, 0, None, Mode::Exclusive)?;
        let v = e.get();
        let s = state_of(v);
        if any_blocked(s) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::GPA_RANGE_ALREADY_BLOCKED,
                Operand::RCX,
            ));
        }
        // `sept_update_state` also sets SVE.
        let new = match s {
            St::NlMapped => (v & !RWX) | TDB | SVE,
            St::Mapped | St::BlockedW => (v & !(RWX | TDBW)) | TDB | SVE,
            St::Pending | St::PendingBlockedW => (v & !TDBW) | TDB | SVE,
            _ => {
                details(a, v, gl.level);
                return Err(Status::with_operand(
                    status::EPT_ENTRY_STATE_INCORRECT,
                    Operand::RCX,
                ));
            }
        };
        e.set(new);
        if let Some(pe) = self.mapped_page_entry(v) {
            pe.set_bepoch(t.td.td_epoch.load(Acquire));
        }
        Ok(())
    }

    pub(in crate::swmod) fn mem_range_unblock(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) = self.mem_prologue(
            a,
            leaf::MEM_RANGE_UNBLOCK,
            rcx,
            rdx,
            0,
            None,
            Mode::Exclusive,
        )?;
        let v = e.get();
        let Some(new) = self.sept_unblock(v) else {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        };
        if Self::needs_tracking(t.td) {
            let tracked = self
                .mapped_page_entry(v)
                .is_some_and(|pe| Self::is_tracked(t.td, pe.bepoch()));
            if !tracked {
                // 1.5 names the S-EPT tree here, 2.0 RCX (`docs/tdx-module-rules.md` §12).
                return Err(Status::with_operand(
                    status::TLB_TRACKING_NOT_DONE,
                    self.line.unblock_tracking_operand(),
                ));
            }
        }
        e.set(new);
        Ok(())
    }

    /// `sept_unblock`: the unblocked value of a blocked entry (`sept_update_state`, which sets
    /// SVE, then the line's SEPT_PERMISSIONS_RWX for a table or a mapped leaf; a pending leaf
    /// keeps no permissions), or `None` if the entry is not blocked. RANGE.UNBLOCK and
    /// PAGE.DEMOTE (for the 512 new entries) share it.
    pub(super) fn sept_unblock(&self, v: u64) -> Option<u64> {
        let rwx = self.line.sept_permissions();
        match state_of(v) {
            St::NlBlocked | St::Blocked => Some((v & !TDB) | rwx | SVE),
            St::PendingBlocked => Some((v & !TDB) | SVE),
            _ => None,
        }
    }

    pub(in crate::swmod) fn mem_track(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Shared)?;
        let _op = self.check_state(t.td, Some(Mode::Shared), leaf::MEM_TRACK)?;
        let Some(_epoch) = Held::try_new(&t.td.epoch_lock, Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::TD_EPOCH));
        };
        let epoch = t.td.td_epoch.load(Acquire);
        if t.td.refcount[((epoch + 1) & 1) as usize].load(Acquire) != 0 {
            return Err(Status::new(status::PREVIOUS_TLB_EPOCH_BUSY));
        }
        t.td.td_epoch.store(epoch + 1, Release);
        Ok(())
    }
}
