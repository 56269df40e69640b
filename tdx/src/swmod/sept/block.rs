// SPDX-License-Identifier: GPL-2.0-only
//! Blocking and TLB tracking: TDH.MEM.RANGE.BLOCK stops new translations of an entry,
//! TDH.MEM.TRACK starts a new TLB epoch, TDH.MEM.RANGE.UNBLOCK lets an entry be used again once its
//! block is tracked (`tdh_mem_range_block.c`, `tdh_mem_track.c`, `tdh_mem_range_unblock.c`).

use super::{any_blocked, details, state_of, St, RWX, SVE, TDB, TDBW};
use crate::abi::{leaf, operand, status};
use crate::seamcall::SeamArgs;
use crate::swmod::locks::{Held, Mode};
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::PhysMem;
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::{Acquire, Release};

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(in crate::swmod) fn mem_range_block(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            match self.mem_prologue(a, leaf::MEM_RANGE_BLOCK, rcx, rdx, 0, None, Mode::Exclusive) {
                Ok(v) => v,
                Err(st) => return st,
            };
        let v = e.get();
        let s = state_of(v);
        if any_blocked(s) {
            details(a, v, gl.level);
            return status::GPA_RANGE_ALREADY_BLOCKED | operand::RCX as u64;
        }
        // `sept_update_state` also sets SVE.
        let new = match s {
            St::NlMapped => (v & !RWX) | TDB | SVE,
            St::Mapped | St::BlockedW => (v & !(RWX | TDBW)) | TDB | SVE,
            St::Pending | St::PendingBlockedW => (v & !TDBW) | TDB | SVE,
            _ => {
                details(a, v, gl.level);
                return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
            }
        };
        e.set(new);
        if let Some(pe) = self.mapped_page_entry(v) {
            pe.set_bepoch(t.td.td_epoch.load(Acquire));
        }
        status::SUCCESS
    }

    pub(in crate::swmod) fn mem_range_unblock(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) = match self.mem_prologue(
            a,
            leaf::MEM_RANGE_UNBLOCK,
            rcx,
            rdx,
            0,
            None,
            Mode::Exclusive,
        ) {
            Ok(v) => v,
            Err(st) => return st,
        };
        let v = e.get();
        // `sept_unblock`: `sept_update_state` (which sets SVE), then the line's
        // SEPT_PERMISSIONS_RWX.
        let rwx = self.line.sept_permissions();
        let new = match state_of(v) {
            St::NlBlocked => (v & !TDB) | rwx | SVE,
            St::Blocked => (v & !TDB) | rwx | SVE,
            St::PendingBlocked => (v & !TDB) | SVE,
            _ => {
                details(a, v, gl.level);
                return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
            }
        };
        if Self::needs_tracking(t.td) {
            let tracked = self
                .mapped_page_entry(v)
                .is_some_and(|pe| Self::is_tracked(t.td, pe.bepoch()));
            if !tracked {
                // 1.5 names the S-EPT tree here, 2.0 RCX (`docs/tdx-module-rules.md` §12).
                return status::TLB_TRACKING_NOT_DONE | self.line.unblock_tracking_operand() as u64;
            }
        }
        e.set(new);
        status::SUCCESS
    }

    pub(in crate::swmod) fn mem_track(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Shared) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let _op = match self.check_state(t.td, Some(Mode::Shared), leaf::MEM_TRACK) {
            Ok(h) => h,
            Err(st) => return st,
        };
        let Some(_epoch) = Held::try_new(&t.td.epoch_lock, Mode::Exclusive) else {
            return status::OPERAND_BUSY | operand::TD_EPOCH as u64;
        };
        let epoch = t.td.td_epoch.load(Acquire);
        if t.td.refcount[((epoch + 1) & 1) as usize].load(Acquire) != 0 {
            return status::PREVIOUS_TLB_EPOCH_BUSY;
        }
        t.td.td_epoch.store(epoch + 1, Release);
        status::SUCCESS
    }
}
