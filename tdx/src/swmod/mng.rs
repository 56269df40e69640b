// SPDX-License-Identifier: GPL-2.0-only
//! The TD-management leaves that build a TD and give its key back: TDH.MNG.CREATE, KEY.CONFIG,
//! ADDCX, INIT, VPFLUSHDONE and KEY.FREEID (`tdh_mng_*.c`, summarised in
//! `docs/tdx-module-rules.md` §6).
//!
//! The metadata leaves TDH.MNG.RD/WR are in [`super::metadata`]; TD_PARAMS, which MNG.INIT reads,
//! in [`super::td_params`].

use super::kot::{KOT_ASSIGNED, KOT_FLUSHED, KOT_FREE, KOT_WB_PENDING};
use super::locks::{Held, Mode};
use super::measure::Sha512Compress;
use super::measure::SHA384_IV;
use super::mem::words;
use super::mem::PhysMem;
use super::operands::{fill, op_allowed};
use super::sept::SEPTE_INIT_VALUE;
use super::td_params::check_td_params;
use super::SwTdxModule;
use crate::abi::td_params::TdParams;
use crate::abi::{leaf, lifecycle, op_state, page_type, status};
use crate::error::Operand;
use crate::seamcall::SeamArgs;
use crate::swmod::leaf_status::{LeafResult, Status};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(super) fn mng_create(&self, a: &mut SeamArgs) -> LeafResult {
        let hkid = a.rdx;
        if hkid >> 16 != 0
            || hkid < self.hkid_first as u64
            || hkid >= self.hkid_first as u64 + self.hkid_count as u64
        {
            return Err(Status::operand_invalid(Operand::RDX));
        }
        let (_, _lock) = self.lock_fresh_page(a.rcx, Operand::RCX)?;
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::KOT));
        };
        let slot = &self.kot[(hkid - self.hkid_first as u64) as usize];
        if slot.load(Acquire) != KOT_FREE {
            return Err(Status::new(status::HKID_NOT_FREE));
        }
        let tdr = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, tdr) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        fill(page, 0);
        let Some(td) = self.td_state(tdr) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        td.hkid.store(hkid, Relaxed);
        td.lifecycle.store(lifecycle::HKID_ASSIGNED as u64, Release);
        slot.store(KOT_ASSIGNED, Release);
        self.give_page(tdr, page_type::TDR, Pfn::new(0));
        Ok(())
    }

    pub(super) fn mng_key_config(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Exclusive)?;
        if t.td.fatal.load(Acquire) != 0 {
            return Err(Status::new(status::TD_FATAL));
        }
        if t.td.lifecycle.load(Acquire) != lifecycle::HKID_ASSIGNED as u64 {
            return Err(Status::new(status::LIFECYCLE_STATE_INCORRECT));
        }
        // One package: configuring it configures the TD.
        t.td.lifecycle
            .store(lifecycle::KEYS_CONFIGURED as u64, Release);
        Ok(())
    }

    pub(super) fn mng_addcx(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rdx, Operand::RDX, Mode::Exclusive)?;
        let td = t.td;
        if td.fatal.load(Acquire) != 0 {
            return Err(Status::new(status::TD_FATAL));
        }
        if td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return Err(Status::new(status::TD_KEYS_NOT_CONFIGURED));
        }
        let index = td.num_tdcx.load(Acquire);
        if index > self.line.max_tdcs_pages() - 1 {
            return Err(Status::new(status::TDCX_NUM_INCORRECT));
        }
        let (_, _page_lock) = self.lock_fresh_page(a.rcx, Operand::RCX)?;
        if index + 1 > self.line.min_tdcs_pages()
            && !op_allowed(leaf::MNG_ADDCX, Self::op_state_of(td) as u64)
        {
            return Err(Status::new(status::OP_STATE_INCORRECT));
        }
        let pfn = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, pfn) else {
            return Err(Status::addr_range_error(Operand::RCX));
        };
        fill(
            page,
            if index as usize == self.line.sept_root_index() {
                SEPTE_INIT_VALUE
            } else {
                0
            },
        );
        td.tdcx[index as usize].store(pfn.raw(), Release);
        td.num_tdcx.store(index + 1, Release);
        td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDCX, t.tdr);
        Ok(())
    }

    /// TDH.MNG.INIT (`tdh_mng_init.c`): RCX = 0 first; TDR(RCX — in 2.0 with bit 0, the
    /// event-filtering flag, cleared; in 1.5 as it is; exclusive) → state (no lock; UNINITIALIZED) → TD_PARAMS (RDX) 1024-byte
    /// aligned shared HPA → `OPERAND_INVALID|RDX` → TD epoch 1 → the TD_PARAMS rules of
    /// [`check_td_params`] in Intel's order (a refused CPUID configuration names its leaf in
    /// RCX).
    pub(super) fn mng_init(&self, a: &mut SeamArgs) -> LeafResult {
        // RCX is an output (extended error information): 0 unless a CPUID check sets it.
        let tdr_pa = a.rcx & !self.line.mng_init_rcx_flags();
        a.rcx = 0;
        let t = self.lock_tdr(tdr_pa, Operand::RCX, Mode::Exclusive)?;
        let td = t.td;
        self.check_state(td, None, leaf::MNG_INIT)?;
        let bad_params = Status::operand_invalid(Operand::RDX);
        // TD_PARAMS is read through a shared KeyID (helpers.c `shared_hpa_check`): 1024-aligned,
        // any KeyID below the first private one.
        let Ok(params) = super::pamt::shared_hpa_check(a.rdx, 1024, self.hkid_first) else {
            return Err(bad_params);
        };
        let Some(p) = words(&self.mem, Pfn::new(params >> 12)) else {
            return Err(bad_params);
        };
        let base = (params & 4095) as usize / 8;
        td.td_epoch.store(1, Release);
        td.refcount[0].store(0, Release);
        td.refcount[1].store(0, Release);
        let td_params = TdParams::from_words(&core::array::from_fn(|i| {
            p.0.get(base + i).map_or(0, |w| w.load(Relaxed))
        }));
        let c = check_td_params(self.line, td.num_tdcx.load(Acquire), &td_params, &mut a.rcx)?;
        td.attributes.store(c.attributes, Relaxed);
        td.xfam.store(c.xfam, Relaxed);
        td.max_vcpus.store(c.max_vcpus, Relaxed);
        td.num_l2_vms.store(c.num_l2_vms, Relaxed);
        td.root_level.store(c.pwl, Relaxed);
        td.gpaw.store(if c.gpaw52 { 52 } else { 48 }, Relaxed);
        td.tsc_frequency.store(c.tsc_frequency, Relaxed);
        for (w, r) in td.cpuid.chunks_exact(2).zip(c.cpuid) {
            w[0].store(u64::from(r[1]) << 32 | u64::from(r[0]), Relaxed);
            w[1].store(u64::from(r[3]) << 32 | u64::from(r[2]), Relaxed);
        }
        for (w, v) in td.sha_state.iter().zip(SHA384_IV) {
            w.store(v, Relaxed);
        }
        td.sha_bytes.store(0, Relaxed);
        Self::set_op_state(td, op_state::INITIALIZED);
        Ok(())
    }

    pub(super) fn mng_vpflushdone(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Exclusive)?;
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::KOT));
        };
        let td = t.td;
        let lc = td.lifecycle.load(Acquire);
        if lc != lifecycle::KEYS_CONFIGURED as u64 && lc != lifecycle::HKID_ASSIGNED as u64 {
            return Err(Status::new(status::LIFECYCLE_STATE_INCORRECT));
        }
        if td.num_tdcx.load(Acquire) >= self.line.min_tdcs_pages()
            && Self::op_state_of(td) != op_state::UNINITIALIZED
            && td.num_assoc_vcpus.load(Acquire) != 0
        {
            return Err(Status::new(status::FLUSHVP_NOT_DONE));
        }
        if let Some(slot) = self.kot_slot(td) {
            slot.store(KOT_FLUSHED | KOT_WB_PENDING, Release);
        }
        td.lifecycle.store(lifecycle::BLOCKED as u64, Release);
        Ok(())
    }

    pub(super) fn mng_key_freeid(&self, a: &mut SeamArgs) -> LeafResult {
        let t = self.lock_tdr(a.rcx, Operand::RCX, Mode::Exclusive)?;
        if t.td.lifecycle.load(Acquire) != lifecycle::BLOCKED as u64 {
            return Err(Status::new(status::LIFECYCLE_STATE_INCORRECT));
        }
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return Err(Status::operand_busy(Operand::KOT));
        };
        if let Some(slot) = self.kot_slot(t.td) {
            if slot.load(Acquire) & KOT_WB_PENDING != 0 {
                return Err(Status::new(status::WBCACHE_NOT_COMPLETE));
            }
            slot.store(KOT_FREE, Release);
        }
        t.td.lifecycle.store(lifecycle::TEARDOWN as u64, Release);
        Ok(())
    }
}
