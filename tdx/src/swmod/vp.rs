// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU leaves (`tdh_vp_*.c`): TDH.VP.CREATE, ADDCX, INIT and FLUSH, and the emulated
//! VP.ENTER/exit bookkeeping the TLB-tracking rules need ([`SwTdxModule::vcpu_enter`]).
//!
//! TDH.VP.RD/WR are in [`super::metadata`].

use super::locks::{Held, Mode};
use super::measure::Sha512Compress;
use super::mem::words;
use super::mem::PhysMem;
use super::operands::{fill, TdRef};
use super::pamt::check_and_lock;
use super::state::{
    TdState, VcpuState, MAX_L2_VMS, MAX_TDVPS_PAGES, TDVPS_PAGES, TDVPS_PAGES_PER_L2_VM,
    X2APIC_IDS_OFFSET,
};
use super::SwTdxModule;
use crate::abi::{leaf, lifecycle, page_type, status, vcpu_state, MAX_VCPUS_PER_TD};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

/// A vCPU's state with its TDVPR, its TD's TDR and the TD's OP state locked.
pub(crate) struct VpRef<'a> {
    pub v: &'a VcpuState,
    pub t: TdRef<'a>,
    _op: Option<Held<'a>>,
    _vlock: Held<'a>,
}

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// An explicit TDVPR operand, locked, with its vCPU state.
    fn lock_tdvpr(
        &self,
        pa: u64,
        op: Operand,
        mode: Mode,
    ) -> LeafResult<(&VcpuState, Pfn, Held<'_>)> {
        let (entry, lock) =
            check_and_lock(&self.pamt, &self.mem, pa, op, mode, page_type::TDVPR, 0)?;
        let pfn = Pfn::new(pa >> 12);
        let v = self.vcpu_state(pfn).ok_or(Status::addr_range_error(op))?;
        Ok((v, entry.info().owner, lock))
    }

    /// The VP leaves' common start: the TDVPR operand locked, the TD's TDR found through its
    /// PAMT owner and locked, the TD's state checked under the OP-state lock (shared).
    pub(super) fn vp_prologue(
        &self,
        pa: u64,
        op: Operand,
        vmode: Mode,
        tdr_mode: Mode,
        leaf_no: u16,
    ) -> LeafResult<VpRef<'_>> {
        let (v, owner, vlock) = self.lock_tdvpr(pa, op, vmode)?;
        let t = self.lock_tdr_implicit(owner, tdr_mode)?;
        let op_lock = self.check_state(t.td, Some(Mode::Shared), leaf_no)?;
        Ok(VpRef {
            v,
            t,
            _op: op_lock,
            _vlock: vlock,
        })
    }

    pub(super) fn vp_create(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rdx, Operand::RDX, Mode::Shared)?;
        let _op = self.check_state(t.td, Some(Mode::Shared), leaf::VP_CREATE)?;
        let (_, _lock) = self.lock_fresh_page(a.rcx, Operand::RCX)?;
        let pfn = Pfn::new(a.rcx >> 12);
        let (Some(page), Some(v)) = (words(&self.mem, pfn), self.vcpu_state(pfn)) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        fill(page, 0);
        v.num_tdvps_pages.store(1, Release);
        t.td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDVPR, t.tdr);
        Ok(())
    }

    pub(super) fn vp_addcx(&self, a: &mut SeamArgs) -> LeafResult {
        let vp = self.vp_prologue(
            a.rdx,
            Operand::RDX,
            Mode::Exclusive,
            Mode::Shared,
            leaf::VP_ADDCX,
        )?;
        let (v, t) = (vp.v, &vp.t);
        let state = v.state.load(Acquire);
        if state != vcpu_state::UNINITIALIZED as u64 {
            return Err(Status::with_detail(
                status::VCPU_STATE_INCORRECT,
                self.line.vcpu_state_operand(state),
            ));
        }
        // `MAX_TDVPS_PAGES` (15) pages at most: the TDVPR and 14 TDCX pages.
        let n = v.num_tdvps_pages.load(Acquire);
        if n >= MAX_TDVPS_PAGES {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        }
        // TDVPS page `n` goes to `tdcx[n - 1]` (n >= 1: VP.CREATE counted the TDVPR).
        let Some(slot) = n.checked_sub(1).and_then(|i| v.tdcx.get(i as usize)) else {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        };
        let (_, _lock) = self.lock_fresh_page(a.rcx, Operand::RCX)?;
        let pfn = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, pfn) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        // The L2 MSR-bitmap pages start as all 1s (`is_l2_msr_bitmap_page_index`).
        fill(
            page,
            if matches!(n, 7 | 8 | 10 | 11 | 13 | 14) {
                u64::MAX
            } else {
                0
            },
        );
        slot.store(pfn.raw(), Release);
        v.num_tdvps_pages.store(n + 1, Release);
        t.td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDCX, t.tdr);
        Ok(())
    }

    pub(super) fn vp_init(&self, a: &mut SeamArgs, version: u64) -> LeafResult {
        if version > 1 {
            return Err(Status::operand_invalid(Operand::RAX));
        }
        // Version 1 takes the TDR exclusively: it checks x2APIC ids across vCPUs.
        let tdr_mode = if version == 1 {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        let vp = self.vp_prologue(
            a.rcx,
            Operand::RCX,
            Mode::Exclusive,
            tdr_mode,
            leaf::VP_INIT,
        )?;
        let (v, t) = (vp.v, &vp.t);
        if !tdvps_mappable(t.td, v) {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        }
        let state = v.state.load(Acquire);
        if state != vcpu_state::UNINITIALIZED as u64 {
            return Err(Status::with_detail(
                status::VCPU_STATE_INCORRECT,
                self.line.vcpu_state_operand(state),
            ));
        }
        let max = t.td.max_vcpus.load(Acquire);
        let index = t.td.num_vcpus.fetch_add(1, AcqRel);
        if index >= max {
            t.td.num_vcpus.fetch_sub(1, AcqRel);
            return Err(Status::new(status::MAX_VCPUS_EXCEEDED));
        }
        // Version 1: R8 is the vCPU's x2APIC id, 32-bit, different from every id in
        // `x2apic_ids[0..index]` (slots version 0 left untouched included), recorded in
        // `x2apic_ids[index]`. Version 0 records nothing.
        if version == 1 {
            let Ok(x2apic) = u32::try_from(a.r8) else {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return Err(Status::operand_invalid(Operand::R8));
            };
            if (0..index).any(|i| self.x2apic_id(t.td, i) == Some(x2apic)) {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return Err(Status::with_detail(
                    status::X2APIC_ID_NOT_UNIQUE,
                    u64::from(x2apic),
                ));
            }
            self.set_x2apic_id(t.td, index, x2apic);
        }
        v.guest_rcx.store(a.rdx, Relaxed);
        v.index.store(index, Relaxed);
        v.state.store(vcpu_state::READY as u64, Release);
        v.associated.store(1, Release);
        t.td.num_assoc_vcpus.fetch_add(1, AcqRel);
        Ok(())
    }

    /// Slot `index` of the TDCS x2APIC id table (`tdcs.x2apic_ids[MAX_VCPUS_PER_TD]`, 32-bit ids
    /// at [`X2APIC_IDS_OFFSET`], in TDCX pages 1 and 2 as in Intel's layout): the word holding
    /// it and the id's bit offset in that word. `None` for an index outside the table or a TDCS
    /// page that is not there, so no access can leave the table.
    fn x2apic_slot(&self, td: &TdState, index: u64) -> Option<(&AtomicU64, u32)> {
        if index >= MAX_VCPUS_PER_TD as u64 {
            return None;
        }
        let byte = X2APIC_IDS_OFFSET + 4 * index as usize;
        let page = byte / 4096;
        if td.num_tdcx.load(Acquire) <= page as u64 {
            return None;
        }
        let pfn = td.tdcx.get(page)?.load(Acquire);
        let w = words(&self.mem, Pfn::new(pfn))?.0.get(byte % 4096 / 8)?;
        Some((w, (byte % 8 * 8) as u32))
    }

    fn x2apic_id(&self, td: &TdState, index: u64) -> Option<u32> {
        let (w, shift) = self.x2apic_slot(td, index)?;
        Some((w.load(Acquire) >> shift) as u32)
    }

    fn set_x2apic_id(&self, td: &TdState, index: u64, id: u32) {
        if let Some((w, shift)) = self.x2apic_slot(td, index) {
            // The id shares its word with a neighbour's: replace its 32 bits only.
            let mut old = w.load(Acquire);
            loop {
                let new = old & !(0xFFFF_FFFF << shift) | u64::from(id) << shift;
                match w.compare_exchange_weak(old, new, AcqRel, Acquire) {
                    Ok(_) => break,
                    Err(cur) => old = cur,
                }
            }
        }
    }

    pub(super) fn vp_flush(&self, a: &mut SeamArgs) -> LeafResult {
        let (v, owner, _vlock) = self.lock_tdvpr(a.rcx, Operand::RCX, Mode::Exclusive)?;
        let t = self.lock_tdr_implicit(owner, Mode::Shared)?;
        if t.td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return Err(Status::new(status::TD_KEYS_NOT_CONFIGURED));
        }
        // Mapping the TDVPS fails while its pages are incomplete.
        if !tdvps_mappable(t.td, v) {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        }
        if v.associated.load(Acquire) == 0 {
            return Err(Status::new(status::VCPU_NOT_ASSOCIATED));
        }
        v.associated.store(0, Release);
        t.td.num_assoc_vcpus.fetch_sub(1, AcqRel);
        Ok(())
    }

    /// Emulates a vCPU entering the TD (the bookkeeping TDH.VP.ENTER does for TLB tracking:
    /// it joins the current epoch). Returns `false` if `tdvpr` is not an initialised vCPU.
    pub fn vcpu_enter(&self, tdvpr: Pfn) -> bool {
        let Some(e) = self.pamt.entry(&self.mem, tdvpr) else {
            return false;
        };
        let info = e.info();
        let (Some(v), Some(td)) = (self.vcpu_state(tdvpr), self.td_state(info.owner)) else {
            return false;
        };
        if info.page_type != page_type::TDVPR || v.state.load(Acquire) != vcpu_state::READY as u64 {
            return false;
        }
        if v.inside.swap(1, AcqRel) != 0 {
            return true;
        }
        let Some(_l) = Held::try_new(&td.epoch_lock, Mode::Shared) else {
            v.inside.store(0, Release);
            return false;
        };
        let epoch = td.td_epoch.load(Acquire);
        v.epoch.store(epoch, Release);
        td.refcount[(epoch & 1) as usize].fetch_add(1, AcqRel);
        true
    }

    /// Emulates a vCPU leaving the TD (a TD exit): it stops counting in its epoch.
    pub fn vcpu_exit(&self, tdvpr: Pfn) {
        let Some(e) = self.pamt.entry(&self.mem, tdvpr) else {
            return;
        };
        let (Some(v), Some(td)) = (self.vcpu_state(tdvpr), self.td_state(e.info().owner)) else {
            return;
        };
        if v.inside.swap(0, AcqRel) == 1 {
            let epoch = v.epoch.load(Acquire);
            td.refcount[(epoch & 1) as usize].fetch_sub(1, AcqRel);
        }
    }
}

/// Whether `map_tdvps` would map the vCPU's TDVPS: at least `MIN_TDVPS_PAGES` pages plus
/// `TDVPS_PAGES_PER_L2_VM` per L2 VM of the TD.
pub(super) fn tdvps_mappable(td: &TdState, v: &VcpuState) -> bool {
    let l2 = td.num_l2_vms.load(Acquire).min(MAX_L2_VMS);
    v.num_tdvps_pages.load(Acquire) >= TDVPS_PAGES + TDVPS_PAGES_PER_L2_VM * l2
}
