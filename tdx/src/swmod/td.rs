// SPDX-License-Identifier: GPL-2.0-only
//! TD and vCPU lifecycle leaves (TDH.MNG.*, TDH.VP.*, TDH.PHYMEM.*, TDH.MR.FINALIZE, TDH.SYS.RD).
//!
//! Check order and status codes follow the module's handlers (`tdh_mng_*.c`, `tdh_vp_*.c`,
//! `tdh_phymem_*.c`), summarised in `docs/tdx-module-rules.md` §6.

use super::fields;
use super::locks::{Held, Mode};
use super::measure::{sha384_finish, Sha512Compress, SHA384_IV};
use super::mem::{words, PageWords, PhysMem};
use super::pamt::{check_and_lock, PamtInfo, HKID_MASK, MAX_PA_BITS, NDA};
use super::state::{
    TdState, VcpuState, MAX_TDCS_PAGES, MIN_TDCS_PAGES, SEPT_ROOT_INDEX, TDVPS_PAGES,
};
use super::SwTdxModule;
use crate::abi::{
    leaf, lifecycle, md, op_state, operand, page_type, status, vcpu_state, MAX_VCPUS_PER_TD,
};
use crate::seamcall::SeamArgs;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

/// KOT entry: bits 7:0 state, bit 8 "write-back pending".
const KOT_FREE: u64 = 0;
const KOT_ASSIGNED: u64 = 1;
const KOT_FLUSHED: u64 = 2;
const KOT_WB_PENDING: u64 = 1 << 8;

/// `TDX_X2APIC_ID_NOT_UNIQUE` (operand field: the id).
const X2APIC_ID_NOT_UNIQUE: u64 = 0xC000_0621_0000_0000;
/// First of the two TDCX pages holding the x2APIC id table.
const X2APIC_TDCX_FIRST: usize = 7;

/// `ATTRIBUTES.DEBUG`: the host may read (and write) more metadata of a DEBUG TD.
const ATTR_DEBUG: u64 = 1;

/// A free S-EPT entry (`SEPTE_INIT_VALUE`: TDEX, TDBW, TDB and SVE set).
pub(crate) const SEPTE_INIT_VALUE: u64 = 0x80E0_0000_0000_0000;

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
        | leaf::MEM_PAGE_REMOVE => op == op_state::INITIALIZED || op == op_state::RUNNABLE,
        leaf::VP_FLUSH => true,
        _ => op != op_state::UNINITIALIZED,
    }
}

/// A vCPU's state with its TDVPR, its TD's TDR and the TD's OP state locked.
pub(crate) struct VpRef<'a> {
    pub v: &'a VcpuState,
    pub t: TdRef<'a>,
    _op: Option<Held<'a>>,
    _vlock: Held<'a>,
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
    pub(crate) fn lock_tdr(&self, pa: u64, op: u32, mode: Mode) -> Result<TdRef<'_>, u64> {
        let (_, lock) = check_and_lock(&self.pamt, &self.mem, pa, op, mode, page_type::TDR, 0)?;
        let tdr = Pfn::new(pa >> 12);
        let td = self
            .td_state(tdr)
            .ok_or(status::OPERAND_ADDR_RANGE_ERROR | op as u64)?;
        Ok(TdRef {
            td,
            tdr,
            _lock: lock,
        })
    }

    /// The TDR found through a page's PAMT owner (`lock_and_map_implicit_tdr`).
    pub(crate) fn lock_tdr_implicit(&self, owner: Pfn, mode: Mode) -> Result<TdRef<'_>, u64> {
        let busy = status::OPERAND_BUSY | operand::TDR as u64;
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
    ) -> Result<Option<Held<'t>>, u64> {
        if td.fatal.load(Acquire) != 0 {
            return Err(status::TD_FATAL);
        }
        if td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return Err(status::TD_KEYS_NOT_CONFIGURED);
        }
        if td.num_tdcx.load(Acquire) < MIN_TDCS_PAGES {
            return Err(status::TDCS_NOT_ALLOCATED);
        }
        let held = match lock {
            Some(mode) => Some(
                Held::try_new(&td.op_state, mode)
                    .ok_or(status::OPERAND_BUSY | operand::OP_STATE as u64)?,
            ),
            None => None,
        };
        if !op_allowed(leaf_no, td.op_state.load(Acquire) >> 16 & 0xff) {
            return Err(status::OP_STATE_INCORRECT);
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
        op: u32,
    ) -> Result<(&super::pamt::PamtEntry, Held<'_>), u64> {
        check_and_lock(&self.pamt, &self.mem, pa, op, Mode::Exclusive, NDA, 0)
    }

    /// Takes a host page (PT_NDA) for the TD: type `pt`, owner `tdr`, block epoch 0.
    fn give_page(&self, pfn: Pfn, pt: u8, tdr: Pfn) {
        if let Some(e) = self.pamt.entry(&self.mem, pfn) {
            e.set(PamtInfo {
                page_type: pt,
                size: 0,
                owner: tdr,
            });
            e.set_bepoch(0);
        }
    }

    pub(super) fn mng_create(&self, a: &mut SeamArgs) -> u64 {
        let hkid = a.rdx;
        if hkid >> 16 != 0
            || hkid < self.hkid_first as u64
            || hkid >= self.hkid_first as u64 + self.hkid_count as u64
        {
            return status::OPERAND_INVALID | operand::RDX as u64;
        }
        let (_, _lock) = match self.lock_fresh_page(a.rcx, operand::RCX) {
            Ok(v) => v,
            Err(st) => return st,
        };
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return status::OPERAND_BUSY | operand::KOT as u64;
        };
        let slot = &self.kot[(hkid - self.hkid_first as u64) as usize];
        if slot.load(Acquire) != KOT_FREE {
            return status::HKID_NOT_FREE;
        }
        let tdr = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, tdr) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
        };
        fill(page, 0);
        let Some(td) = self.td_state(tdr) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
        };
        td.hkid.store(hkid, Relaxed);
        td.lifecycle.store(lifecycle::HKID_ASSIGNED as u64, Release);
        slot.store(KOT_ASSIGNED, Release);
        self.give_page(tdr, page_type::TDR, Pfn::new(0));
        status::SUCCESS
    }

    pub(super) fn mng_key_config(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        if t.td.fatal.load(Acquire) != 0 {
            return status::TD_FATAL;
        }
        if t.td.lifecycle.load(Acquire) != lifecycle::HKID_ASSIGNED as u64 {
            return status::LIFECYCLE_STATE_INCORRECT;
        }
        // One package: configuring it configures the TD.
        t.td.lifecycle
            .store(lifecycle::KEYS_CONFIGURED as u64, Release);
        status::SUCCESS
    }

    pub(super) fn mng_addcx(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rdx, operand::RDX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let td = t.td;
        if td.fatal.load(Acquire) != 0 {
            return status::TD_FATAL;
        }
        if td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return status::TD_KEYS_NOT_CONFIGURED;
        }
        let index = td.num_tdcx.load(Acquire);
        if index > MAX_TDCS_PAGES - 1 {
            return status::TDCX_NUM_INCORRECT;
        }
        let (_, _page_lock) = match self.lock_fresh_page(a.rcx, operand::RCX) {
            Ok(v) => v,
            Err(st) => return st,
        };
        if index + 1 > MIN_TDCS_PAGES && !op_allowed(leaf::MNG_ADDCX, Self::op_state_of(td) as u64)
        {
            return status::OP_STATE_INCORRECT;
        }
        let pfn = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, pfn) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
        };
        fill(
            page,
            if index as usize == SEPT_ROOT_INDEX {
                SEPTE_INIT_VALUE
            } else {
                0
            },
        );
        td.tdcx[index as usize].store(pfn.raw(), Release);
        td.num_tdcx.store(index + 1, Release);
        td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDCX, t.tdr);
        status::SUCCESS
    }

    pub(super) fn mng_init(&self, a: &mut SeamArgs) -> u64 {
        // RCX is an output (extended error information): 0 unless a CPUID check sets it.
        let tdr_pa = a.rcx;
        a.rcx = 0;
        let t = match self.lock_tdr(tdr_pa, operand::RCX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let td = t.td;
        if let Err(st) = self.check_state(td, None, leaf::MNG_INIT) {
            return st;
        }
        let bad_params = status::OPERAND_INVALID | operand::RDX as u64;
        if a.rdx & 1023 != 0 || a.rdx & HKID_MASK != 0 || a.rdx >> MAX_PA_BITS != 0 {
            return bad_params;
        }
        let Some(p) = words(&self.mem, Pfn::new(a.rdx >> 12)) else {
            return bad_params;
        };
        let base = (a.rdx & 4095) as usize / 8;
        let word = |i: usize| p.0[base + i].load(Relaxed);
        // TD_PARAMS: 0 ATTRIBUTES, 8 XFAM, 16 MAX_VCPUS (u16), 24 EPTP_CONTROLS,
        // 32 CONFIG_FLAGS (bit 0: GPAW 52), 40 TSC_FREQUENCY (u16, 25 MHz units).
        let (attributes, xfam) = (word(0), word(1));
        let max_vcpus = word(2) & 0xffff;
        let eptp = word(3);
        let gpaw52 = word(4) & 1 != 0;
        let tsc = word(5) & 0xffff;
        td.td_epoch.store(1, Release);
        td.refcount[0].store(0, Release);
        td.refcount[1].store(0, Release);
        // DEBUG (0), SEPT_VE_DISABLE (28), PKS (30), KL (31), PERFMON (63).
        const ATTR_KNOWN: u64 = 1 | 1 << 28 | 1 << 30 | 1 << 31 | 1 << 63;
        if attributes & !ATTR_KNOWN != 0 {
            return status::OPERAND_INVALID | 64;
        }
        if xfam & 3 != 3 {
            return status::OPERAND_INVALID | 65;
        }
        if max_vcpus == 0 || max_vcpus > MAX_VCPUS_PER_TD as u64 {
            return status::OPERAND_INVALID | 68;
        }
        let pwl = (eptp >> 3) & 7;
        if eptp & 7 != 6 || !(pwl == 3 || pwl == 4) || (gpaw52 && pwl != 4) {
            return status::OPERAND_INVALID | 67;
        }
        if !(4..=400).contains(&tsc) {
            return status::OPERAND_INVALID | 70;
        }
        td.attributes.store(attributes, Relaxed);
        td.xfam.store(xfam, Relaxed);
        td.max_vcpus.store(max_vcpus, Relaxed);
        td.root_level.store(pwl, Relaxed);
        td.gpaw.store(if gpaw52 { 52 } else { 48 }, Relaxed);
        td.tsc_frequency.store(tsc, Relaxed);
        for (w, v) in td.sha_state.iter().zip(SHA384_IV) {
            w.store(v, Relaxed);
        }
        td.sha_bytes.store(0, Relaxed);
        Self::set_op_state(td, op_state::INITIALIZED);
        status::SUCCESS
    }

    /// TDH.MNG.RD (version 0 or 1) and TDH.MNG.WR (`tdh_mng_rd_wr.c`).
    ///
    /// R8 = 0 first, and at version 1 RDX = `MD_FIELD_ID_NA`; version > 1 →
    /// `OPERAND_INVALID|RAX`. Then: TDR(RCX, shared) → state(shared) → the context code of the
    /// id is replaced by TD's → (read, version 1) the null id answers the first readable field
    /// in RDX with `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT` → `md_check_as_single_element_id`
    /// → the element: unknown → `FIELD_ID_INCORRECT`, read mask 0 → `NOT_READABLE`, write
    /// mask ∧ R9 = 0 → `NOT_WRITABLE`. Success: R8 = the value (read) or the old value (write);
    /// version-1 reads: RDX = the next readable element. Version 0 leaves RDX alone.
    fn mng_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> u64 {
        let field = if !write && version > 0 {
            // The input id; RDX is an output (MD_FIELD_ID_NA until a next field is known).
            core::mem::replace(&mut a.rdx, crate::abi::md::FIELD_ID_NA)
        } else {
            a.rdx
        };
        let (value, mask) = (a.r8, a.r9);
        a.r8 = 0;
        if version > 1 {
            return status::OPERAND_INVALID | operand::RAX as u64;
        }
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Shared) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let leaf_no = if write { leaf::MNG_WR } else { leaf::MNG_RD };
        let _op = match self.check_state(t.td, Some(Mode::Shared), leaf_no) {
            Ok(h) => h,
            Err(st) => return st,
        };
        let td = t.td;
        let debug = td.attributes.load(Relaxed) & ATTR_DEBUG != 0;
        let field = md::with_context(field, md::CONTEXT_TD);
        if !write && version > 0 && fields::is_null(field) {
            a.rdx = fields::next_readable(&fields::TD, field, debug);
            return status::METADATA_FIRST_FIELD_ID_IN_CONTEXT;
        }
        if let Err(st) = fields::check_single_element(field) {
            return st;
        }
        let Some((i, elem)) = fields::find(&fields::TD, field) else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        let e = &fields::TD[i];
        let current = e.fit(self.td_value(td, e.value, elem));
        let (rd, _) = e.masks(debug);
        if write {
            // No TD-scope field the software module has is host-writable (Intel's write masks
            // are all 0, see `fields::tests::no_td_scope_entry_is_host_writable`): `write`
            // refuses with NOT_WRITABLE before anything would be stored.
            return match fields::write(e, debug, current, value, mask, false) {
                Ok(_) => status::METADATA_FIELD_NOT_WRITABLE,
                Err(st) => st,
            };
        }
        if rd == 0 {
            return status::METADATA_FIELD_NOT_READABLE;
        }
        a.r8 = current & rd;
        if version > 0 {
            a.rdx = fields::next_readable(&fields::TD, field, debug);
        }
        status::SUCCESS
    }

    pub(super) fn mng_rd(&self, a: &mut SeamArgs, version: u64) -> u64 {
        self.mng_rdwr(a, false, version)
    }

    pub(super) fn mng_wr(&self, a: &mut SeamArgs) -> u64 {
        self.mng_rdwr(a, true, 0)
    }

    /// Element `elem` of a TD-scope field.
    fn td_value(&self, td: &TdState, v: fields::Value, elem: u64) -> u64 {
        use fields::Value as V;
        match v {
            V::Hkid => td.hkid.load(Relaxed),
            V::NumVcpus => td.num_vcpus.load(Relaxed),
            V::NumAssocVcpus => td.num_assoc_vcpus.load(Relaxed),
            V::OpState => Self::op_state_of(td) as u64,
            V::Attributes => td.attributes.load(Relaxed),
            V::Xfam => td.xfam.load(Relaxed),
            V::MaxVcpus => td.max_vcpus.load(Relaxed),
            V::TdEpoch => td.td_epoch.load(Relaxed),
            // The words hold the digest big-endian; the element is 8 digest bytes read as a
            // little-endian u64, as they lie in the TDCS.
            V::Mrtd => td.mrtd[elem as usize % 6].load(Relaxed).swap_bytes(),
            V::Hidden | V::Rtmr => 0,
            V::GuestRcx | V::VcpuState | V::VcpuIndex | V::NumTdvpsPages => 0,
        }
    }

    /// TDH.SYS.RD: one global field in R8, the next readable field's id in RDX
    /// (`MD_FIELD_ID_NA` after the last one, and on failure).
    pub(super) fn sys_rd(&self, a: &mut SeamArgs) -> u64 {
        const PAGE: u64 = 4096;
        let table = [
            (fields::SYS_TDR_BASE_SIZE, PAGE),
            (fields::SYS_TDCS_BASE_SIZE, MIN_TDCS_PAGES * PAGE),
            (fields::SYS_TDVPS_BASE_SIZE, TDVPS_PAGES * PAGE),
            (fields::SYS_MAX_VCPUS_PER_TD, MAX_VCPUS_PER_TD as u64),
        ];
        let field = a.rdx;
        a.rdx = crate::abi::md::FIELD_ID_NA;
        a.r8 = 0;
        let Some(i) = table.iter().position(|&(id, _)| id == field) else {
            return fields::METADATA_FIELD_ID_INCORRECT;
        };
        a.r8 = table[i].1;
        a.rdx = table
            .get(i + 1)
            .map_or(crate::abi::md::FIELD_ID_NA, |&(id, _)| id);
        status::SUCCESS
    }

    pub(super) fn mng_vpflushdone(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return status::OPERAND_BUSY | operand::KOT as u64;
        };
        let td = t.td;
        let lc = td.lifecycle.load(Acquire);
        if lc != lifecycle::KEYS_CONFIGURED as u64 && lc != lifecycle::HKID_ASSIGNED as u64 {
            return status::LIFECYCLE_STATE_INCORRECT;
        }
        if td.num_tdcx.load(Acquire) >= MIN_TDCS_PAGES
            && Self::op_state_of(td) != op_state::UNINITIALIZED
            && td.num_assoc_vcpus.load(Acquire) != 0
        {
            return status::FLUSHVP_NOT_DONE;
        }
        if let Some(slot) = self.kot_slot(td) {
            slot.store(KOT_FLUSHED | KOT_WB_PENDING, Release);
        }
        td.lifecycle.store(lifecycle::BLOCKED as u64, Release);
        status::SUCCESS
    }

    fn kot_slot(&self, td: &TdState) -> Option<&core::sync::atomic::AtomicU64> {
        let hkid = td.hkid.load(Acquire);
        self.kot
            .get(hkid.checked_sub(self.hkid_first as u64)? as usize)
    }

    pub(super) fn phymem_cache_wb(&self, a: &mut SeamArgs) -> u64 {
        if a.rcx > 1 {
            return status::OPERAND_INVALID | operand::RCX as u64;
        }
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Shared) else {
            return status::OPERAND_BUSY | operand::KOT as u64;
        };
        if a.rcx == 1 {
            // Never interrupted, so there is no saved point to resume from.
            return status::WBCACHE_RESUME_ERROR;
        }
        // The start step snapshots every HKID in state FLUSHED, written back before or not.
        let mut any = false;
        for slot in self.kot.iter() {
            if slot.load(Acquire) & 0xff == KOT_FLUSHED {
                slot.fetch_and(!KOT_WB_PENDING, AcqRel);
                any = true;
            }
        }
        if any {
            status::SUCCESS
        } else {
            status::NO_HKID_READY_TO_WBCACHE
        }
    }

    pub(super) fn mng_key_freeid(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        if t.td.lifecycle.load(Acquire) != lifecycle::BLOCKED as u64 {
            return status::LIFECYCLE_STATE_INCORRECT;
        }
        let Some(_kot) = Held::try_new(&self.kot_lock, Mode::Exclusive) else {
            return status::OPERAND_BUSY | operand::KOT as u64;
        };
        if let Some(slot) = self.kot_slot(t.td) {
            if slot.load(Acquire) & KOT_WB_PENDING != 0 {
                return status::WBCACHE_NOT_COMPLETE;
            }
            slot.store(KOT_FREE, Release);
        }
        t.td.lifecycle.store(lifecycle::TEARDOWN as u64, Release);
        status::SUCCESS
    }

    pub(super) fn phymem_page_reclaim(&self, a: &mut SeamArgs) -> u64 {
        let pa = a.rcx;
        *a = SeamArgs::default();
        let rcx = operand::RCX as u64;
        if pa & 4095 != 0 || pa & HKID_MASK != 0 || pa >> MAX_PA_BITS != 0 {
            return status::OPERAND_INVALID | rcx;
        }
        let pfn = Pfn::new(pa >> 12);
        let Some(entry) = self.pamt.entry(&self.mem, pfn) else {
            return status::OPERAND_ADDR_RANGE_ERROR | rcx;
        };
        let Some(_lock) = entry.try_lock(Mode::Exclusive) else {
            return status::OPERAND_BUSY | rcx;
        };
        let info = entry.info();
        if info.page_type == page_type::NDA || info.page_type == page_type::RSVD {
            return status::PAGE_METADATA_INCORRECT | rcx;
        }
        a.rcx = info.page_type as u64;
        a.rdx = info.owner.hpa().raw();
        a.r8 = info.size as u64;
        let pages = 1u64 << (9 * info.size as u32);
        if pfn.raw() & (pages - 1) != 0 {
            return status::OPERAND_INVALID | rcx;
        }
        if info.page_type == page_type::TDR {
            let Some(td) = self.td_state(pfn) else {
                return status::PAGE_METADATA_INCORRECT | rcx;
            };
            if td.lifecycle.load(Acquire) != lifecycle::TEARDOWN as u64 {
                return status::LIFECYCLE_STATE_INCORRECT;
            }
            if td.chldcnt.load(Acquire) != 0 {
                return status::TD_ASSOCIATED_PAGES_EXIST;
            }
        } else {
            let t = match self.lock_tdr_implicit(info.owner, Mode::Shared) {
                Ok(t) => t,
                Err(st) => return st,
            };
            if t.td.lifecycle.load(Acquire) != lifecycle::TEARDOWN as u64 {
                return status::LIFECYCLE_STATE_INCORRECT;
            }
            t.td.chldcnt.fetch_sub(pages, AcqRel);
        }
        self.set_range(
            pfn,
            pages,
            PamtInfo {
                page_type: page_type::NDA,
                size: 0,
                owner: Pfn::new(0),
            },
        );
        status::SUCCESS
    }

    /// Sets the PAMT of `pages` pages from `pfn` (a large page records itself in every entry).
    pub(crate) fn set_range(&self, pfn: Pfn, pages: u64, info: PamtInfo) {
        for i in 0..pages {
            if let Some(e) = self.pamt.entry(&self.mem, pfn.add(i)) {
                e.set(info);
            }
        }
    }

    pub(super) fn phymem_page_wbinvd(&self, a: &mut SeamArgs) -> u64 {
        let pa = a.rcx & !HKID_MASK;
        match check_and_lock(
            &self.pamt,
            &self.mem,
            pa,
            operand::RCX,
            Mode::Shared,
            NDA,
            0,
        ) {
            Ok(_) => status::SUCCESS,
            Err(st) => st,
        }
    }

    pub(super) fn vp_create(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rdx, operand::RDX, Mode::Shared) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let _op = match self.check_state(t.td, Some(Mode::Shared), leaf::VP_CREATE) {
            Ok(h) => h,
            Err(st) => return st,
        };
        let (_, _lock) = match self.lock_fresh_page(a.rcx, operand::RCX) {
            Ok(v) => v,
            Err(st) => return st,
        };
        let pfn = Pfn::new(a.rcx >> 12);
        let (Some(page), Some(v)) = (words(&self.mem, pfn), self.vcpu_state(pfn)) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
        };
        fill(page, 0);
        v.num_tdvps_pages.store(1, Release);
        t.td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDVPR, t.tdr);
        status::SUCCESS
    }

    /// An explicit TDVPR operand, locked, with its vCPU state.
    fn lock_tdvpr(&self, pa: u64, op: u32, mode: Mode) -> Result<(&VcpuState, Pfn, Held<'_>), u64> {
        let (entry, lock) =
            check_and_lock(&self.pamt, &self.mem, pa, op, mode, page_type::TDVPR, 0)?;
        let pfn = Pfn::new(pa >> 12);
        let v = self
            .vcpu_state(pfn)
            .ok_or(status::OPERAND_ADDR_RANGE_ERROR | op as u64)?;
        Ok((v, entry.info().owner, lock))
    }

    /// The VP leaves' common start: the TDVPR operand locked, the TD's TDR found through its
    /// PAMT owner and locked, the TD's state checked under the OP-state lock (shared).
    fn vp_prologue(
        &self,
        pa: u64,
        op: u32,
        vmode: Mode,
        tdr_mode: Mode,
        leaf_no: u16,
    ) -> Result<VpRef<'_>, u64> {
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

    pub(super) fn vp_addcx(&self, a: &mut SeamArgs) -> u64 {
        let vp = match self.vp_prologue(
            a.rdx,
            operand::RDX,
            Mode::Exclusive,
            Mode::Shared,
            leaf::VP_ADDCX,
        ) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let (v, t) = (vp.v, &vp.t);
        let state = v.state.load(Acquire);
        if state != vcpu_state::UNINITIALIZED as u64 {
            return status::VCPU_STATE_INCORRECT | state;
        }
        let n = v.num_tdvps_pages.load(Acquire);
        if n >= TDVPS_PAGES {
            return status::TDCX_NUM_INCORRECT;
        }
        let (_, _lock) = match self.lock_fresh_page(a.rcx, operand::RCX) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let pfn = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, pfn) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
        };
        fill(page, 0);
        v.tdcx[(n - 1) as usize].store(pfn.raw(), Release);
        v.num_tdvps_pages.store(n + 1, Release);
        t.td.chldcnt.fetch_add(1, AcqRel);
        self.give_page(pfn, page_type::TDCX, t.tdr);
        status::SUCCESS
    }

    pub(super) fn vp_init(&self, a: &mut SeamArgs, version: u64) -> u64 {
        if version > 1 {
            return status::OPERAND_INVALID | operand::RAX as u64;
        }
        // Version 1 takes the TDR exclusively: it checks x2APIC ids across vCPUs.
        let tdr_mode = if version == 1 {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        let vp = match self.vp_prologue(
            a.rcx,
            operand::RCX,
            Mode::Exclusive,
            tdr_mode,
            leaf::VP_INIT,
        ) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let (v, t) = (vp.v, &vp.t);
        if v.num_tdvps_pages.load(Acquire) < TDVPS_PAGES {
            return status::TDCX_NUM_INCORRECT;
        }
        let state = v.state.load(Acquire);
        if state != vcpu_state::UNINITIALIZED as u64 {
            return status::VCPU_STATE_INCORRECT | state;
        }
        let max = t.td.max_vcpus.load(Acquire);
        let index = t.td.num_vcpus.fetch_add(1, AcqRel);
        if index >= max {
            t.td.num_vcpus.fetch_sub(1, AcqRel);
            return status::MAX_VCPUS_EXCEEDED;
        }
        // x2APIC id: the vCPU index at version 0, R8 at version 1 (must be unique in the TD).
        let x2apic = if version == 1 { a.r8 } else { index };
        if version == 1 {
            if x2apic > u32::MAX as u64 {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return status::OPERAND_INVALID | operand::R8 as u64;
            }
            if (0..index).any(|i| self.x2apic_id(t.td, i) == Some(x2apic)) {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return X2APIC_ID_NOT_UNIQUE | x2apic;
            }
        }
        self.set_x2apic_id(t.td, index, x2apic);
        v.guest_rcx.store(a.rdx, Relaxed);
        v.index.store(index, Relaxed);
        v.state.store(vcpu_state::READY as u64, Release);
        v.associated.store(1, Release);
        t.td.num_assoc_vcpus.fetch_add(1, AcqRel);
        status::SUCCESS
    }

    /// The x2APIC id table: TDCX pages 7 and 8 (unused by the software module otherwise),
    /// 512 entries of `id + 1` each.
    fn x2apic_slot(&self, td: &TdState, index: u64) -> Option<&core::sync::atomic::AtomicU64> {
        let page = X2APIC_TDCX_FIRST + (index / 512) as usize;
        let pfn = td.tdcx.get(page)?.load(Acquire);
        words(&self.mem, Pfn::new(pfn)).map(|p| &p.0[(index % 512) as usize])
    }

    fn x2apic_id(&self, td: &TdState, index: u64) -> Option<u64> {
        self.x2apic_slot(td, index)?.load(Acquire).checked_sub(1)
    }

    fn set_x2apic_id(&self, td: &TdState, index: u64, id: u64) {
        if let Some(slot) = self.x2apic_slot(td, index) {
            slot.store(id + 1, Release);
        }
    }

    pub(super) fn vp_flush(&self, a: &mut SeamArgs) -> u64 {
        let (v, owner, _vlock) = match self.lock_tdvpr(a.rcx, operand::RCX, Mode::Exclusive) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let t = match self.lock_tdr_implicit(owner, Mode::Shared) {
            Ok(t) => t,
            Err(st) => return st,
        };
        if t.td.lifecycle.load(Acquire) != lifecycle::KEYS_CONFIGURED as u64 {
            return status::TD_KEYS_NOT_CONFIGURED;
        }
        // Mapping the TDVPS fails while its pages are incomplete.
        if v.num_tdvps_pages.load(Acquire) < TDVPS_PAGES {
            return status::TDCX_NUM_INCORRECT;
        }
        if v.associated.load(Acquire) == 0 {
            return status::VCPU_NOT_ASSOCIATED;
        }
        v.associated.store(0, Release);
        t.td.num_assoc_vcpus.fetch_sub(1, AcqRel);
        status::SUCCESS
    }

    /// TDH.VP.RD (version 0 or 1) and TDH.VP.WR (`tdh_vp_rd_wr.c`).
    ///
    /// R8 = 0 first, and at version 1 RDX = `MD_FIELD_ID_NA`; VP.RD version > 1 →
    /// `OPERAND_INVALID|RAX`. Then: TDVPR(RCX, shared) → implicit TDR shared (`BUSY|TDR`) →
    /// state(shared) → TDVPS incomplete → `TDCX_NUM_INCORRECT` → vCPU state not READY →
    /// `VCPU_STATE_INCORRECT | state` → the vCPU is associated with this LP
    /// (`check_and_associate_vcpu`: `num_assoc_vcpus++` if it was not) → the id, as for
    /// MNG.RD/WR with the VP context.
    fn vp_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> u64 {
        let field = if !write && version > 0 {
            core::mem::replace(&mut a.rdx, crate::abi::md::FIELD_ID_NA)
        } else {
            a.rdx
        };
        let (value, mask) = (a.r8, a.r9);
        a.r8 = 0;
        if !write && version > 1 {
            return status::OPERAND_INVALID | operand::RAX as u64;
        }
        let leaf_no = if write { leaf::VP_WR } else { leaf::VP_RD };
        let vp = match self.vp_prologue(a.rcx, operand::RCX, Mode::Shared, Mode::Shared, leaf_no) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let (v, td) = (vp.v, vp.t.td);
        if v.num_tdvps_pages.load(Acquire) < TDVPS_PAGES {
            return status::TDCX_NUM_INCORRECT;
        }
        // No DISABLED state in the software module: READY is the only state VP.RD/WR accept.
        let state = v.state.load(Acquire);
        if state != vcpu_state::READY as u64 {
            return status::VCPU_STATE_INCORRECT | state;
        }
        if v.associated.compare_exchange(0, 1, AcqRel, Acquire).is_ok() {
            td.num_assoc_vcpus.fetch_add(1, AcqRel);
        }
        let debug = td.attributes.load(Relaxed) & ATTR_DEBUG != 0;
        let field = md::with_context(field, md::CONTEXT_VP);
        if !write && version > 0 && fields::is_null(field) {
            a.rdx = fields::next_readable(&fields::VP, field, debug);
            return status::METADATA_FIRST_FIELD_ID_IN_CONTEXT;
        }
        if let Err(st) = fields::check_single_element(field) {
            return st;
        }
        let Some((i, _)) = fields::find(&fields::VP, field) else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        let e = &fields::VP[i];
        let current = e.fit(match e.value {
            fields::Value::GuestRcx => v.guest_rcx.load(Relaxed),
            fields::Value::VcpuState => state,
            fields::Value::VcpuIndex => v.index.load(Relaxed),
            fields::Value::NumTdvpsPages => v.num_tdvps_pages.load(Relaxed),
            _ => 0,
        });
        if write {
            let (new, old) = match fields::write(e, debug, current, value, mask, true) {
                Ok(x) => x,
                Err(st) => return st,
            };
            // Only guest RCX is host-writable (DEBUG TDs); the others have write masks of 0.
            if e.value == fields::Value::GuestRcx {
                v.guest_rcx.store(new, Relaxed);
            }
            a.r8 = old;
            return status::SUCCESS;
        }
        let (rd, _) = e.masks(debug);
        if rd == 0 {
            return status::METADATA_FIELD_NOT_READABLE;
        }
        a.r8 = current & rd;
        if version > 0 {
            a.rdx = fields::next_readable(&fields::VP, field, debug);
        }
        status::SUCCESS
    }

    pub(super) fn vp_rd(&self, a: &mut SeamArgs, version: u64) -> u64 {
        self.vp_rdwr(a, false, version)
    }

    pub(super) fn vp_wr(&self, a: &mut SeamArgs) -> u64 {
        self.vp_rdwr(a, true, 0)
    }

    pub(super) fn mr_finalize(&self, a: &mut SeamArgs) -> u64 {
        let t = match self.lock_tdr(a.rcx, operand::RCX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let td = t.td;
        if let Err(st) = self.check_state(td, None, leaf::MR_FINALIZE) {
            return st;
        }
        if td.num_vcpus.load(Acquire) == 0 {
            return status::NO_VCPUS;
        }
        let mut state = [0u64; 8];
        for (s, w) in state.iter_mut().zip(td.sha_state.iter()) {
            *s = w.load(Relaxed);
        }
        let mrtd = sha384_finish(&self.hash, state, td.sha_bytes.load(Relaxed), &[]);
        for (i, w) in td.mrtd.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&mrtd[i * 8..i * 8 + 8]);
            w.store(u64::from_be_bytes(b), Relaxed);
        }
        td.finalized.store(1, Release);
        Self::set_op_state(td, op_state::RUNNABLE);
        status::SUCCESS
    }

    /// Hashes one 128-byte block into the TD's MRTD. Caller holds the TDR exclusively.
    pub(crate) fn measure(&self, td: &TdState, block: &[u8; 128]) {
        let mut state = [0u64; 8];
        for (s, w) in state.iter_mut().zip(td.sha_state.iter()) {
            *s = w.load(Relaxed);
        }
        self.hash.compress(&mut state, block);
        for (s, w) in state.iter().zip(td.sha_state.iter()) {
            w.store(*s, Relaxed);
        }
        td.sha_bytes.fetch_add(128, Relaxed);
    }

    /// MRTD of a finalised TD (48 bytes), or `None` before MR.FINALIZE (inspection API).
    pub fn mrtd(&self, tdr: Pfn) -> Option<[u8; 48]> {
        let td = self.td_state(tdr)?;
        if td.finalized.load(Acquire) == 0 {
            return None;
        }
        let mut out = [0u8; 48];
        for (i, w) in td.mrtd.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.load(Relaxed).to_be_bytes());
        }
        Some(out)
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
