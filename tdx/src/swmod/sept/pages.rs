// SPDX-License-Identifier: GPL-2.0-only
//! The leaves on a TD's private pages: TDH.MEM.PAGE.AUG maps a pending page into a running TD,
//! TDH.MEM.PAGE.ADD copies and measures one into a TD being built, TDH.MEM.PAGE.REMOVE unmaps one
//! (`tdh_mem_page_aug.c`, `tdh_mem_page_add.c`, `tdh_mem_page_remove.c`).

use super::{
    details, hpa, is_leaf, state_of, St, IPAT, MT_WB, PS, SEPTE_INIT_VALUE, SVE, TDEL, TDP,
};
use crate::abi::{leaf, page_type, status, SeptLevel};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use crate::swmod::locks::{Held, Mode};
use crate::swmod::measure::mr_block;
use crate::swmod::measure::Sha512Compress;
use crate::swmod::mem::words;
use crate::swmod::mem::PhysMem;
use crate::swmod::pamt::{shared_hpa_check, PamtEntry, PamtInfo, NDA};
use crate::swmod::SwTdxModule;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(in crate::swmod) fn mem_page_aug(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx, r8) = (a.rcx, a.rdx, a.r8);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            self.mem_prologue(a, leaf::MEM_PAGE_AUG, rcx, rdx, 0, Some(1), Mode::Shared)?;
        let v = e.get();
        if !matches!(state_of(v), St::Free | St::Removed) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        let pages = gl.level.pages();
        let (head, _plock) = self.lock_free_range(r8, gl.level)?;
        let pfn = Pfn::new(r8 >> 12);
        self.set_range(
            pfn,
            pages,
            PamtInfo {
                page_type: page_type::REG,
                size: gl.level.0,
                owner: t.tdr,
            },
        );
        head.set_bepoch(0);
        t.td.chldcnt.fetch_add(pages, AcqRel);
        e.set(IPAT | PS | TDP | MT_WB | SVE | pfn.hpa().raw());
        Ok(())
    }

    /// `check_and_lock_free_range_hpa`: an NDA page (4K) or 512 NDA pages (2M), head locked.
    fn lock_free_range(&self, pa: u64, level: SeptLevel) -> LeafResult<(&PamtEntry, Held<'_>)> {
        if pa & ((level.pages() << 12) - 1) != 0 {
            return Err(Status::operand_invalid(Operand::R8));
        }
        let (head, lock) = self.lock_fresh_page(pa, Operand::R8)?;
        let pfn = Pfn::new(pa >> 12);
        for i in 1..level.pages() {
            match self.pamt.entry(&self.mem, pfn.add(i)) {
                Some(e) if e.info().page_type == NDA && e.info().size == 0 => {}
                _ => return Err(Status::page_metadata_incorrect(Operand::R8)),
            }
        }
        Ok((head, lock))
    }

    pub(in crate::swmod) fn mem_page_add(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx, r8, r9) = (a.rcx, a.rdx, a.r8, a.r9);
        a.rcx = 0;
        a.rdx = 0;
        let t = self.lock_tdr(rdx, Operand::RDX, Mode::Exclusive)?;
        let td = t.td;
        self.check_state(td, None, leaf::MEM_PAGE_ADD)?;
        let gl = self.gpa_level(td, rcx, 0, 0)?;
        let Some(w) = self.walk(td, gl.gpa, gl.level) else {
            return Err(Status::with_operand(status::EPT_WALK_FAILED, Operand::RCX));
        };
        let v = w.entry.load(Acquire) & !TDEL;
        if w.level != gl.level {
            details(a, v, w.level);
            return Err(Status::with_operand(status::EPT_WALK_FAILED, Operand::RCX));
        }
        if state_of(v) != St::Free {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        // The source is read through a shared key: any HKID below the first private one.
        let src_pa = shared_hpa_check(r9, 4096, self.hkid_first)
            .map_err(|st| Status::new(st).on(Operand::R9))?;
        let (pe, _plock) = self.lock_fresh_page(r8, Operand::R8)?;
        let target = Pfn::new(r8 >> 12);
        let (Some(src), Some(dst)) = (
            words(&self.mem, Pfn::new(src_pa >> 12)),
            words(&self.mem, target),
        ) else {
            return Err(Status::operand_invalid(Operand::R9));
        };
        for (d, s) in dst.0.iter().zip(src.0.iter()) {
            d.store(s.load(Relaxed), Relaxed);
        }
        w.entry.store(
            self.line.sept_permissions() | MT_WB | IPAT | PS | SVE | target.hpa().raw(),
            Release,
        );
        self.measure(td, &mr_block(b"MEM.PAGE.ADD", gl.gpa));
        td.chldcnt.fetch_add(1, AcqRel);
        pe.set(PamtInfo {
            page_type: page_type::REG,
            size: 0,
            owner: t.tdr,
        });
        pe.set_bepoch(0);
        Ok(())
    }

    pub(in crate::swmod) fn mem_page_remove(&self, a: &mut SeamArgs) -> LeafResult {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            self.mem_prologue(a, leaf::MEM_PAGE_REMOVE, rcx, rdx, 0, Some(2), Mode::Shared)?;
        let v = e.get();
        let s = state_of(v);
        if !is_leaf(s) {
            details(a, v, gl.level);
            return Err(Status::with_operand(
                status::EPT_ENTRY_STATE_INCORRECT,
                Operand::RCX,
            ));
        }
        let page = hpa(v);
        let (_pe, _plock) = self.lock_removable(t.td, a, v, gl.level)?;
        let pages = gl.level.pages();
        e.set(SEPTE_INIT_VALUE);
        t.td.chldcnt.fetch_sub(pages, AcqRel);
        // `removed_page_pamt_entry_ptr->pt = PT_NDA`: the owner stays.
        self.free_range(page, pages);
        a.rcx = page.hpa().raw();
        a.rdx = 0;
        Ok(())
    }
}
