// SPDX-License-Identifier: GPL-2.0-only
//! How a leaf gets at what its operands name, shared by every leaf family.
//!
//! The module's handlers start alike (`check_lock_and_map_explicit_tdr`,
//! `lock_and_map_implicit_tdr`, `check_state_map_tdcs_and_lock`,
//! `check_and_lock_explicit_4k_private_hpa`): the TDR page checked in the PAMT and locked, the
//! TD's control structure mapped, its lifecycle and OP state checked, a page the host hands over
//! checked to be free. They live here, with the hand-over of a page to a TD in the PAMT, so each
//! leaf file holds only the leaf's own rules.

use super::locks::{Held, Mode};
use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::mem::{words, PageWords};
use super::pamt::{check_and_lock, PamtInfo, NDA};
use super::state::{TdState, VcpuState};
use super::SwTdxModule;
use crate::abi::{leaf, lifecycle, op_state, page_type, status};
use crate::error::Operand;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use mmu::Pfn;

/// Fills a page the module takes over with `value` (its initial content: 0, or free S-EPT
/// entries).
pub(crate) fn fill(page: &PageWords, value: u64) {
    for w in page.0.iter() {
        w.store(value, Relaxed);
    }
}

/// Whether `leaf` may run in OP state `op` (`seamcall_state_lookup`, restricted to the states
/// the software module has: uninitialised, initialised, runnable).
pub(crate) fn op_allowed(leaf_no: u16, op: u64) -> bool {
    let op = op as u8;
    match leaf_no {
        leaf::MNG_ADDCX | leaf::MNG_INIT => op == op_state::UNINITIALIZED,
        leaf::MEM_PAGE_ADD
        | leaf::MR_EXTEND
        | leaf::MR_FINALIZE
        | leaf::VP_INIT
        | leaf::VP_ADDCX
        | leaf::VP_CREATE => op == op_state::INITIALIZED,
        leaf::MEM_SEPT_ADD
        | leaf::MEM_PAGE_AUG
        | leaf::MEM_RANGE_BLOCK
        | leaf::MEM_RANGE_UNBLOCK
        | leaf::MEM_PAGE_DEMOTE
        | leaf::MEM_PAGE_REMOVE => op == op_state::INITIALIZED || op == op_state::RUNNABLE,
        leaf::VP_FLUSH => true,
        _ => op != op_state::UNINITIALIZED,
    }
}

/// A TD's state and the lock on its TDR page.
pub(crate) struct TdRef<'a> {
    pub td: &'a TdState,
    pub tdr: Pfn,
    pub _lock: Held<'a>,
}

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(crate) fn td_state(&self, tdr: Pfn) -> Option<&TdState> {
        // SAFETY: `TdState` is a repr(C) struct of atomics no larger than a page; the TDR page
        // is mapped for the module's lifetime and only accessed atomically.
        words(&self.mem, tdr).map(|p| unsafe { &*(p as *const PageWords as *const TdState) })
    }

    pub(crate) fn vcpu_state(&self, tdvpr: Pfn) -> Option<&VcpuState> {
        // SAFETY: as for `td_state`.
        words(&self.mem, tdvpr).map(|p| unsafe { &*(p as *const PageWords as *const VcpuState) })
    }

    /// An explicit TDR operand (`check_lock_and_map_explicit_tdr`).
    pub(crate) fn lock_tdr(&self, pa: u64, op: Operand, mode: Mode) -> LeafResult<TdRef<'_>> {
        let (_, lock) = check_and_lock(&self.pamt, &self.mem, pa, op, mode, page_type::TDR, 0)?;
        let tdr = Pfn::new(pa >> 12);
        let td = self.td_state(tdr).ok_or(Status::addr_range_error(op))?;
        Ok(TdRef {
            td,
            tdr,
            _lock: lock,
        })
    }

    /// The TDR found through a page's PAMT owner (`lock_and_map_implicit_tdr`).
    pub(crate) fn lock_tdr_implicit(&self, owner: Pfn, mode: Mode) -> LeafResult<TdRef<'_>> {
        let busy = Status::operand_busy(Operand::TDR);
        let entry = self.pamt.entry(&self.mem, owner).ok_or(busy)?;
        let lock = entry.try_lock(mode).ok_or(busy)?;
        let td = self.td_state(owner).ok_or(busy)?;
        Ok(TdRef {
            td,
            tdr: owner,
            _lock: lock,
        })
    }

    /// `check_state_map_tdcs_and_lock`: fatal, keys, TDCS, OP-state lock, OP state.
    pub(crate) fn check_state<'t>(
        &self,
        td: &'t TdState,
        lock: Option<Mode>,
        leaf_no: u16,
    ) -> LeafResult<Option<Held<'t>>> {
        if td.fatal.load(Acquire) != 0 {
            return Err(Status::new(status::TD_FATAL));
        }
        if td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return Err(Status::new(status::TD_KEYS_NOT_CONFIGURED));
        }
        if td.num_tdcx.load(Acquire) < self.line.min_tdcs_pages() {
            return Err(Status::new(status::TDCS_NOT_ALLOCATED));
        }
        let held = match lock {
            Some(mode) => Some(
                Held::try_new(&td.op_state, mode).ok_or(Status::operand_busy(Operand::OP_STATE))?,
            ),
            None => None,
        };
        if !op_allowed(leaf_no, td.op_state.load(Acquire) >> 16 & 0xff) {
            return Err(Status::new(status::OP_STATE_INCORRECT));
        }
        Ok(held)
    }

    pub(crate) fn op_state_of(td: &TdState) -> u8 {
        (td.op_state.load(Acquire) >> 16) as u8
    }

    pub(crate) fn set_op_state(td: &TdState, op: u8) {
        let mut cur = td.op_state.load(Relaxed);
        loop {
            let new = (cur & 0xffff) | (op as u64) << 16;
            match td.op_state.compare_exchange_weak(cur, new, AcqRel, Relaxed) {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }

    /// A page the host hands to the module (an explicit operand that must be PT_NDA, 4K),
    /// locked exclusively.
    pub(crate) fn lock_fresh_page(
        &self,
        pa: u64,
        op: Operand,
    ) -> LeafResult<(&super::pamt::PamtEntry, Held<'_>)> {
        check_and_lock(&self.pamt, &self.mem, pa, op, Mode::Exclusive, NDA, 0)
    }

    /// Takes a host page (PT_NDA) for the TD: type `pt`, owner `tdr`, block epoch 0.
    pub(super) fn give_page(&self, pfn: Pfn, pt: u8, tdr: Pfn) {
        if let Some(e) = self.pamt.entry(&self.mem, pfn) {
            e.set(PamtInfo {
                page_type: pt,
                size: 0,
                owner: tdr,
            });
            e.set_bepoch(0);
        }
    }

    /// Frees `pages` pages from `pfn` in the PAMT as PAGE.REMOVE, SEPT.REMOVE and
    /// PHYMEM.PAGE.RECLAIM do: the type becomes NDA, the owner and block epoch stay
    /// (`docs/tdx-module-rules.md` §5). Under the (head) entry's exclusive lock.
    pub(crate) fn free_range(&self, pfn: Pfn, pages: u64) {
        for i in 0..pages {
            if let Some(e) = self.pamt.entry(&self.mem, pfn.add(i)) {
                e.free();
            }
        }
    }

    /// Sets the PAMT of `pages` pages from `pfn` (a large page records itself in every entry).
    pub(crate) fn set_range(&self, pfn: Pfn, pages: u64, info: PamtInfo) {
        for i in 0..pages {
            if let Some(e) = self.pamt.entry(&self.mem, pfn.add(i)) {
                e.set(info);
            }
        }
    }
}
