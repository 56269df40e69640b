// SPDX-License-Identifier: GPL-2.0-only
//! The leaves on S-EPT pages: TDH.MEM.SEPT.ADD links a new table, TDH.MEM.SEPT.REMOVE unlinks an
//! empty one, TDH.MEM.SEPT.RD reads an entry (`tdh_mem_sept_add.c`, `tdh_mem_sept_remove.c`,
//! `tdh_mem_sept_rd.c`).

use super::{details, hpa, state_of, St, BIT63, NULL_PA, SEPTE_INIT_VALUE, SVE, TDEL};
use crate::abi::{leaf, page_type, status};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use crate::swmod::locks::Mode;
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::words;
use crate::swmod::mem::PhysMem;
use crate::swmod::operands::fill;
use crate::swmod::pamt::PamtInfo;
use crate::swmod::state::TdState;
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// TDH.MEM.SEPT.ADD (`tdh_mem_sept_add.c`). Version 1 also takes L2 S-EPT pages in R9-R11
    /// and returns the four page operands in R8-R11 on every path past the version check:
    /// NULL_PA for a page that was added, the input with bit 63 set for one that already existed
    /// (allow_existing), otherwise the input (bit 63 of a non-NULL_PA input is ignored).
    pub(in crate::swmod) fn mem_sept_add(&self, a: &mut SeamArgs, version: u64) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        // RCX/RDX are cleared before the version check; R8-R11 are not touched on that path.
        a.rcx = 0;
        a.rdx = 0;
        if version > 1 {
            return Err(Status::operand_invalid(Operand::RAX));
        }
        let f = |pa: u64| if pa == NULL_PA { pa } else { pa & !BIT63 };
        let mut flagged = if version > 0 {
            [f(a.r8), f(a.r9), f(a.r10), f(a.r11)]
        } else {
            [f(a.r8), 0, 0, 0]
        };
        let st = self.sept_add_flow(a, version, rcx, rdx, &mut flagged);
        if version > 0 {
            [a.r8, a.r9, a.r10, a.r11] = flagged;
        }
        st
    }

    /// SEPT.ADD past the version check; `flagged` holds the page operands (L1, then L2 VMs 1-3)
    /// as they will be returned at version 1.
    fn sept_add_flow(
        &self,
        a: &mut SeamArgs,
        version: u64,
        rcx: u64,
        rdx: u64,
        flagged: &mut [u64; 4],
    ) -> LeafResult {
        if rdx & 0xffe != 0 || rdx >> 52 != 0 {
            return Err(Status::operand_invalid(Operand::RDX));
        }
        let allow_existing = rdx & 1 != 0;
        let (t, _op, _tree, gl, e) =
            self.mem_prologue(a, leaf::MEM_SEPT_ADD, rcx, rdx & !1, 1, None, Mode::Shared)?;
        let v = e.get();
        let st = state_of(v);
        if !matches!(st, St::Free | St::NlMapped) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        // process_l1_page.
        let [r8, vm1, vm2, vm3] = *flagged;
        let mut new_page = None;
        if r8 == NULL_PA {
            // No new L1 page: only at version 1, and the L1 table must already exist.
            if version == 0 {
                return Err(Status::operand_invalid(Operand::R8));
            }
            if st != St::NlMapped {
                details(a, v, gl.level);
                return Err(Status::with_operand(
                    status::EPT_ENTRY_STATE_INCORRECT,
                    Operand::RCX,
                ));
            }
        } else if st == St::Free {
            new_page = Some(self.lock_fresh_page(r8, Operand::R8)?);
        } else if allow_existing {
            // Bit 63 marks a page that was not used.
            flagged[0] |= BIT63;
        } else {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        // process_l2_pages: a non-NULL_PA L2 page names a VM; this module has no L2 VMs
        // (NUM_L2_VMS = 0), so any is `OPERAND_INVALID | (R8 + vm_id)`.
        if version > 0 {
            for (pa, op) in [(vm1, Operand::R9), (vm2, Operand::R10), (vm3, Operand::R11)] {
                if pa != NULL_PA {
                    return Err(Status::operand_invalid(op));
                }
            }
        }
        // add_l1_and_l2_pages.
        if let Some((pe, _plock)) = new_page {
            let child = Pfn::new(r8 >> 12);
            let Some(page) = words(&self.mem, child) else {
                return Err(Status::addr_range_error(Operand::R8));
            };
            fill(page, SEPTE_INIT_VALUE);
            pe.set(PamtInfo {
                page_type: page_type::EPT,
                size: 0,
                owner: t.tdr,
            });
            pe.set_bepoch(0);
            t.td.chldcnt.fetch_add(1, AcqRel);
            e.set(self.line.sept_permissions() | SVE | child.hpa().raw());
            flagged[0] = NULL_PA;
        }
        Ok(())
    }

    /// TDH.MEM.SEPT.REMOVE (`tdh_mem_sept_remove.c`). From version 1 on, R9-R11 (the removed L2
    /// S-EPT pages) are NULL_PA on every path, the version error included: this module has no L2
    /// VMs, so nothing ever replaces them.
    pub(in crate::swmod) fn mem_sept_remove(&self, a: &mut SeamArgs, version: u64) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        if version > 0 {
            a.r9 = NULL_PA;
            a.r10 = NULL_PA;
            a.r11 = NULL_PA;
        }
        if version > 1 {
            return Err(Status::operand_invalid(Operand::RAX));
        }
        let (t, _op, _tree, gl, e) =
            self.mem_prologue(a, leaf::MEM_SEPT_REMOVE, rcx, rdx, 1, None, Mode::Exclusive)?;
        let v = e.get();
        let s = state_of(v);
        if !matches!(s, St::NlMapped | St::NlBlocked) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        let child = hpa(v);
        let (pe, _plock) = self.lock_removable(t.td, a, v, gl.level)?;
        let Some(cp) = words(&self.mem, child) else {
            return Err(Status::operand_busy(Operand::RCX));
        };
        if cp
            .0
            .iter()
            .any(|c| state_of(c.load(Acquire) & !TDEL) != St::Free)
        {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_PAGE_NOT_FREE,
                Operand::RCX,
            ));
        }
        e.set(SEPTE_INIT_VALUE);
        t.td.chldcnt.fetch_sub(1, AcqRel);
        // `->pt = PT_NDA` only ("OWNER = 0" says Intel's comment; the code keeps it).
        pe.free();
        a.rcx = child.hpa().raw();
        Ok(())
    }

    pub(in crate::swmod) fn mem_sept_rd(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        // Reading L2 attributes (RDX bit 0) needs a debug TD (ATTRIBUTES bit 0); checked right
        // after the state, before the level and the walk.
        let l2_check = |td: &TdState| {
            if rdx & 1 != 0 && td.attributes.load(Relaxed) & 1 == 0 {
                Err(Status::operand_invalid(Operand::RDX))
            } else {
                Ok(())
            }
        };
        let (_t, _op, _tree, gl, e) = self.mem_prologue_with(
            a,
            leaf::MEM_SEPT_RD,
            rcx,
            rdx & !1,
            0,
            None,
            Mode::Shared,
            l2_check,
        )?;
        if rdx & 1 != 0 {
            // The L2 attributes (`gpa_attr_t`, one byte-pair per L2 VM): all 0 with no L2 VMs.
            a.r8 = 0;
        }
        details(a, e.get(), gl.level);
        Ok(())
    }
}
