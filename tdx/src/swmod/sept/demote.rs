// SPDX-License-Identifier: GPL-2.0-only
//! TDH.MEM.PAGE.DEMOTE splits a huge private leaf into a new S-EPT table of 512 leaves one level
//! down, mapping the same pages (`tdh_mem_page_demote.c`, the same flow in 1.5.01 and 2.0.08
//! for a TD without L2 VMs and without dynamic PAMT; `docs/tdx-module-rules.md` §6,
//! "TDH.MEM.PAGE.DEMOTE").
//!
//! Intel's order, kept here:
//! 1. RDX: bit 0 is L2_SEPT_ADD_MODE (meaningless without L2 VMs), bits 11:1 and 63:52 are
//!    reserved → `OPERAND_INVALID | RDX` before the TDR is looked at;
//! 2. the MEM prologue: TDR (shared), TD state and OP state (shared), GPA and level (2M or 1G),
//!    S-EPT tree lock **shared**, walk, entry lock;
//! 3. the entry must be MAPPED, BLOCKED, PENDING or PENDING_BLOCKED
//!    (`seamcall_sept_state_lookup`), else `EPT_ENTRY_STATE_INCORRECT | RCX` with the details;
//! 4. in a runnable TD the entry must be blocked (`GPA_RANGE_NOT_BLOCKED | RCX`, details) and
//!    its block TLB-tracked (`TLB_TRACKING_NOT_DONE | RCX`, no details): the epoch the huge
//!    page's PAMT entry recorded at RANGE.BLOCK;
//! 5. the new S-EPT page (R8) must be a free 4K host page, locked exclusively
//!    (`check_and_lock_explicit_4k_private_hpa`, the same checks as SEPT.ADD's page);
//! 6. the new page is filled with 512 copies of the entry, **unblocked** (`sept_unblock`),
//!    each with its part of the huge page — before the PAMT is touched, so a failure of the
//!    next step leaves a written page whose PAMT still says free, as Intel's comment says;
//! 7. `pamt_demote`: the huge page's PAMT entry locked exclusively (`OPERAND_BUSY | RCX` if
//!    not), every 4K entry gets its type and owner with size one level down and block epoch 0;
//! 8. commit: the entry becomes NL_MAPPED pointing to the new page, the page's PAMT entry
//!    becomes PT_EPT owned by the TD, and the TD's child count grows by one (the data pages
//!    were counted at PAGE.AUG).
//!
//! R9-R11 (L2 S-EPT pages) are not read without L2 VMs and come back unchanged; RCX and RDX are
//! 0 unless an error reports S-EPT details. The interrupt checks Intel makes before the PAMT
//! split (`TDX_INTERRUPTED_RESTARTABLE`) never fire here: nothing interrupts the software
//! module. Dynamic PAMT (2.0's R12/R13) is not modelled: with it off, 2.0 ignores them.

use super::{any_blocked, details, hpa, state_of, St, HPA_MASK, SVE};
use crate::abi::{leaf, page_type, status, SeptLevel};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use crate::swmod::locks::Mode;
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::{words, PhysMem};
use crate::swmod::pamt::PamtInfo;
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::{AcqRel, Release};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(in crate::swmod) fn mem_page_demote(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx, r8) = (a.rcx, a.rdx, a.r8);
        a.rcx = 0;
        a.rdx = 0;
        if rdx & 0xffe != 0 || rdx >> 52 != 0 {
            return Err(Status::operand_invalid(Operand::RDX));
        }
        let (t, _op, _tree, gl, e) = self.mem_prologue(
            a,
            leaf::MEM_PAGE_DEMOTE,
            rcx,
            rdx & !1,
            1,
            Some(2),
            Mode::Shared,
        )?;
        let v = e.get();
        let s = state_of(v);
        if !matches!(
            s,
            St::Mapped | St::Blocked | St::Pending | St::PendingBlocked
        ) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        let page = hpa(v);
        // `pamt_implicit_get` of a mapped page cannot fail on Intel's module (it halts).
        let head = self
            .pamt
            .entry(&self.mem, page)
            .ok_or(Status::operand_busy(Operand::RCX))?;
        if Self::needs_tracking(t.td) {
            if !any_blocked(s) {
                details(a, v, gl.level);
                return Err(Status::with_operand(
                    status::GPA_RANGE_NOT_BLOCKED,
                    Operand::RCX,
                ));
            }
            if !Self::is_tracked(t.td, head.bepoch()) {
                return Err(Status::with_operand(
                    status::TLB_TRACKING_NOT_DONE,
                    Operand::RCX,
                ));
            }
        }
        let (new_pe, _new_lock) = self.lock_fresh_page(r8, Operand::R8)?;
        let new_page = Pfn::new(r8 >> 12);
        let Some(table) = words(&self.mem, new_page) else {
            return Err(Status::addr_range_error(Operand::R8));
        };
        let child = SeptLevel(gl.level.0 - 1);
        let child_entry = self.sept_unblock(v).unwrap_or(v) & !HPA_MASK;
        for (i, w) in table.0.iter().enumerate() {
            let pa = page.add(i as u64 * child.pages()).hpa().raw();
            w.store(child_entry | pa, Release);
        }
        // `pamt_demote`.
        let Some(_head_lock) = head.try_lock(Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::RCX));
        };
        let info = head.info();
        for i in 0..gl.level.pages() {
            if let Some(pe) = self.pamt.entry(&self.mem, page.add(i)) {
                pe.set(PamtInfo {
                    size: child.0,
                    ..info
                });
                pe.set_bepoch(0);
            }
        }
        // Commit.
        e.set(self.line.sept_permissions() | SVE | new_page.hpa().raw());
        new_pe.set(PamtInfo {
            page_type: page_type::EPT,
            size: 0,
            owner: t.tdr,
        });
        t.td.chldcnt.fetch_add(1, AcqRel);
        Ok(())
    }
}
