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
    TdState, VcpuState, ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1, CONFIG_FLAGS_FIXED0,
    CONFIG_FLAGS_FIXED1, IA32_ARCH_CAPABILITIES_CONFIG_MASK, MAX_L2_VMS, MAX_TDCS_PAGES,
    MAX_TDVPS_PAGES, MIN_TDCS_PAGES, SEPT_ROOT_INDEX, TDCS_PAGES_PER_L2_VM, TDVPS_PAGES,
    TDVPS_PAGES_PER_L2_VM, X2APIC_IDS_OFFSET, XFAM_FIXED0, XFAM_FIXED1,
};
use super::SwTdxModule;
use crate::abi::{
    leaf, lifecycle, md, op_state, operand, page_type, status, vcpu_state, MAX_VCPUS_PER_TD,
};
use crate::seamcall::SeamArgs;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

/// KOT entry: bits 7:0 state, bit 8 "write-back pending".
const KOT_FREE: u64 = 0;
const KOT_ASSIGNED: u64 = 1;
const KOT_FLUSHED: u64 = 2;
const KOT_WB_PENDING: u64 = 1 << 8;

/// `ATTRIBUTES.DEBUG`: the host may read (and write) more metadata of a DEBUG TD.
const ATTR_DEBUG: u64 = 1;

/// A free S-EPT entry (`SEPTE_INIT_VALUE`: TDEX, TDBW, TDB and SVE set).
pub(crate) const SEPTE_INIT_VALUE: u64 = 0x80E0_0000_0000_0000;

/// What tells the TD scope of the metadata leaves (TDH.MNG.RD/WR) from the VP scope
/// (TDH.VP.RD/WR) once the operand and state checks are done.
struct MdScope {
    /// The context code the id's own is replaced by.
    context: u64,
    /// The field table of the scope, in Intel's order.
    table: &'static [fields::Entry],
    /// [`fields::write`]'s `zero_full_write`: `md_vp_write_element` has it,
    /// `md_td_write_element` does not.
    zero_full_write: bool,
}

const TD_SCOPE: MdScope = MdScope {
    context: md::CONTEXT_TD,
    table: &fields::TD,
    zero_full_write: false,
};

const VP_SCOPE: MdScope = MdScope {
    context: md::CONTEXT_VP,
    table: &fields::VP,
    zero_full_write: true,
};

/// The operands of a metadata read or write leaf (TDH.MNG.RD/WR, TDH.VP.RD/WR).
struct MdOp {
    /// The field id as the host gave it (RDX).
    field: u64,
    /// The value (R8) and the write mask (R9) of a write.
    value: u64,
    mask: u64,
    write: bool,
    version: u64,
}

impl MdOp {
    /// Takes the operands as `tdh_mng_rd_wr.c` and `tdh_vp_rd_wr.c` both do before any check:
    /// R8 = 0 first, and at version 1 of a read RDX = `MD_FIELD_ID_NA`; version > 1 →
    /// `OPERAND_INVALID|RAX` (the writes come with version 0 only).
    fn take(a: &mut SeamArgs, write: bool, version: u64) -> Result<Self, u64> {
        let field = if !write && version > 0 {
            // The input id; RDX is an output (MD_FIELD_ID_NA until a next field is known).
            core::mem::replace(&mut a.rdx, md::FIELD_ID_NA)
        } else {
            a.rdx
        };
        let op = MdOp {
            field,
            value: a.r8,
            mask: a.r9,
            write,
            version,
        };
        a.r8 = 0;
        if version > 1 {
            return Err(status::OPERAND_INVALID | operand::RAX as u64);
        }
        Ok(op)
    }

    /// The field id part, after the leaf's own operand and state checks: the context code of
    /// the id is replaced by the scope's → (read, version 1) the null id answers the first
    /// readable field in RDX with `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT` →
    /// `md_check_as_single_element_id` → the element: unknown → `FIELD_ID_INCORRECT`; a read
    /// with read mask 0 → `NOT_READABLE`; a write as [`fields::write`] says, then `store` of
    /// the new value. Success: R8 = the value (read) or the old value (write); version-1
    /// reads: RDX = the next readable element. Version 0 leaves RDX alone.
    ///
    /// `value_of` gives an element's current value (entry, element number); `store` keeps a
    /// written one or refuses with a status.
    fn access(
        &self,
        a: &mut SeamArgs,
        scope: &MdScope,
        td: &TdState,
        value_of: impl FnOnce(&fields::Entry, u64) -> u64,
        store: impl FnOnce(&fields::Entry, u64) -> Result<(), u64>,
    ) -> u64 {
        let debug = td.attributes.load(Relaxed) & ATTR_DEBUG != 0;
        let field = md::with_context(self.field, scope.context);
        if !self.write && self.version > 0 && fields::is_null(field) {
            a.rdx = fields::next_readable(scope.table, field, debug);
            return status::METADATA_FIRST_FIELD_ID_IN_CONTEXT;
        }
        if let Err(st) = fields::check_single_element(field) {
            return st;
        }
        let Some((i, elem)) = fields::find(scope.table, field) else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        let e = &scope.table[i];
        let current = e.fit(value_of(e, elem));
        if self.write {
            let zero_full_write = scope.zero_full_write;
            let (new, old) =
                match fields::write(e, debug, current, self.value, self.mask, zero_full_write) {
                    Ok(x) => x,
                    Err(st) => return st,
                };
            if let Err(st) = store(e, new) {
                return st;
            }
            a.r8 = old;
            return status::SUCCESS;
        }
        let (rd, _) = e.masks(debug);
        if rd == 0 {
            return status::METADATA_FIELD_NOT_READABLE;
        }
        a.r8 = current & rd;
        if self.version > 0 {
            a.rdx = fields::next_readable(scope.table, field, debug);
        }
        status::SUCCESS
    }
}

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

    /// TDH.MNG.INIT (`tdh_mng_init.c`): RCX = 0 first; TDR(RCX with bit 0, the event-filtering
    /// flag, cleared; exclusive) → state (no lock; UNINITIALIZED) → TD_PARAMS (RDX) 1024-byte
    /// aligned shared HPA → `OPERAND_INVALID|RDX` → TD epoch 1 → the TD_PARAMS rules of
    /// [`check_td_params`] in Intel's order.
    pub(super) fn mng_init(&self, a: &mut SeamArgs) -> u64 {
        // RCX is an output (extended error information): 0 unless a CPUID check sets it.
        let tdr_pa = a.rcx & !1;
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
        // TD_PARAMS is read through a shared KeyID (helpers.c `shared_hpa_check`): 1024-aligned,
        // any KeyID below the first private one.
        let Ok(params) = super::pamt::shared_hpa_check(a.rdx, 1024, self.hkid_first) else {
            return bad_params;
        };
        let Some(p) = words(&self.mem, Pfn::new(params >> 12)) else {
            return bad_params;
        };
        let base = (params & 4095) as usize / 8;
        let word = |i: usize| p.0.get(base + i).map_or(0, |w| w.load(Relaxed));
        td.td_epoch.store(1, Release);
        td.refcount[0].store(0, Release);
        td.refcount[1].store(0, Release);
        let c = match check_td_params(td.num_tdcx.load(Acquire), word) {
            Ok(c) => c,
            Err(st) => return st,
        };
        td.attributes.store(c.attributes, Relaxed);
        td.xfam.store(c.xfam, Relaxed);
        td.max_vcpus.store(c.max_vcpus, Relaxed);
        td.num_l2_vms.store(c.num_l2_vms, Relaxed);
        td.root_level.store(c.pwl, Relaxed);
        td.gpaw.store(if c.gpaw52 { 52 } else { 48 }, Relaxed);
        td.tsc_frequency.store(c.tsc_frequency, Relaxed);
        for (w, v) in td.sha_state.iter().zip(SHA384_IV) {
            w.store(v, Relaxed);
        }
        td.sha_bytes.store(0, Relaxed);
        Self::set_op_state(td, op_state::INITIALIZED);
        status::SUCCESS
    }

    /// TDH.MNG.RD (version 0 or 1) and TDH.MNG.WR (`tdh_mng_rd_wr.c`).
    ///
    /// The operands are taken as [`MdOp::take`] says. Then: TDR(RCX, shared) → state(shared)
    /// → the field id in the TD context ([`MdOp::access`]).
    fn mng_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> u64 {
        let op = match MdOp::take(a, write, version) {
            Ok(op) => op,
            Err(st) => return st,
        };
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
        op.access(
            a,
            &TD_SCOPE,
            td,
            |e, elem| self.td_value(td, e.value, elem),
            // No TD-scope field the software module has is host-writable (Intel's write masks
            // are all 0, see `fields::tests::no_td_scope_entry_is_host_writable`): `write`
            // refuses with NOT_WRITABLE before anything would be stored, and so would this.
            |_, _| Err(status::METADATA_FIELD_NOT_WRITABLE),
        )
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
            V::Hidden | V::Rtmr | V::Const(_) | V::Unmodelled => 0,
            V::GuestRcx | V::VcpuState | V::VcpuIndex | V::NumTdvpsPages => 0,
        }
    }

    /// TDH.SYS.RD (`tdh_sys_rd.c`): RDX = `MD_FIELD_ID_NA` and R8 = 0 first → the context
    /// code of the id is replaced by SYS's → the null id answers the first readable field in
    /// RDX with `TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT` → `md_check_as_single_element_id` →
    /// the element in Intel's global table ([`fields::SYS`]): no entry, or an entry whose value
    /// the software module does not have → `FIELD_ID_INCORRECT`. Success: R8 = the value,
    /// RDX = the next readable element in the table's order (`MD_FIELD_ID_NA` after the last).
    pub(super) fn sys_rd(&self, a: &mut SeamArgs) -> u64 {
        let field = md::with_context(a.rdx, md::CONTEXT_SYS);
        a.rdx = md::FIELD_ID_NA;
        a.r8 = 0;
        if fields::is_null(field) {
            a.rdx = fields::next_readable(&fields::SYS, field, false);
            return status::METADATA_FIRST_FIELD_ID_IN_CONTEXT;
        }
        if let Err(st) = fields::check_single_element(field) {
            return st;
        }
        let Some((i, _)) = fields::find(&fields::SYS, field) else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        let Some(e) = fields::SYS.get(i) else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        let (rd, _) = e.masks(false);
        if rd == 0 {
            return status::METADATA_FIELD_NOT_READABLE;
        }
        let fields::Value::Const(value) = e.value else {
            return status::METADATA_FIELD_ID_INCORRECT;
        };
        a.r8 = e.fit(value) & rd;
        a.rdx = fields::next_readable(&fields::SYS, field, false);
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

    fn kot_slot(&self, td: &TdState) -> Option<&AtomicU64> {
        let hkid = td.hkid.load(Acquire);
        self.kot
            .get(hkid.checked_sub(self.hkid_first as u64)? as usize)
    }

    pub(super) fn phymem_cache_wb(&self, a: &mut SeamArgs) -> u64 {
        if a.rcx > 1 {
            return status::OPERAND_INVALID | operand::RCX as u64;
        }
        // The package's write-back mutex, then the KOT (shared).
        let Some(_wbt) = Held::try_new(&self.wbt_lock, Mode::Exclusive) else {
            return status::OPERAND_BUSY | operand::WBCACHE as u64;
        };
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
        // `MAX_TDVPS_PAGES` (15) pages at most: the TDVPR and 14 TDCX pages.
        let n = v.num_tdvps_pages.load(Acquire);
        if n >= MAX_TDVPS_PAGES {
            return status::TDCX_NUM_INCORRECT;
        }
        // TDVPS page `n` goes to `tdcx[n - 1]` (n >= 1: VP.CREATE counted the TDVPR).
        let Some(slot) = n.checked_sub(1).and_then(|i| v.tdcx.get(i as usize)) else {
            return status::TDCX_NUM_INCORRECT;
        };
        let (_, _lock) = match self.lock_fresh_page(a.rcx, operand::RCX) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let pfn = Pfn::new(a.rcx >> 12);
        let Some(page) = words(&self.mem, pfn) else {
            return status::OPERAND_ADDR_RANGE_ERROR | operand::RCX as u64;
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
        if !tdvps_mappable(t.td, v) {
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
        // Version 1: R8 is the vCPU's x2APIC id, 32-bit, different from every id in
        // `x2apic_ids[0..index]` (slots version 0 left untouched included), recorded in
        // `x2apic_ids[index]`. Version 0 records nothing.
        if version == 1 {
            let Ok(x2apic) = u32::try_from(a.r8) else {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return status::OPERAND_INVALID | operand::R8 as u64;
            };
            if (0..index).any(|i| self.x2apic_id(t.td, i) == Some(x2apic)) {
                t.td.num_vcpus.fetch_sub(1, AcqRel);
                return status::X2APIC_ID_NOT_UNIQUE | x2apic as u64;
            }
            self.set_x2apic_id(t.td, index, x2apic);
        }
        v.guest_rcx.store(a.rdx, Relaxed);
        v.index.store(index, Relaxed);
        v.state.store(vcpu_state::READY as u64, Release);
        v.associated.store(1, Release);
        t.td.num_assoc_vcpus.fetch_add(1, AcqRel);
        status::SUCCESS
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
            let _ = w.fetch_update(AcqRel, Acquire, |old| {
                Some(old & !(0xFFFF_FFFF << shift) | (id as u64) << shift)
            });
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
        if !tdvps_mappable(t.td, v) {
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
    /// The operands are taken as [`MdOp::take`] says. Then: TDVPR(RCX, shared) → implicit TDR
    /// shared (`BUSY|TDR`) → state(shared) → TDVPS incomplete → `TDCX_NUM_INCORRECT` → vCPU
    /// state not READY → `VCPU_STATE_INCORRECT | state` → the vCPU is associated with this LP
    /// (`check_and_associate_vcpu`: `num_assoc_vcpus++` if it was not) → the field id in the
    /// VP context ([`MdOp::access`]).
    fn vp_rdwr(&self, a: &mut SeamArgs, write: bool, version: u64) -> u64 {
        let op = match MdOp::take(a, write, version) {
            Ok(op) => op,
            Err(st) => return st,
        };
        let leaf_no = if write { leaf::VP_WR } else { leaf::VP_RD };
        let vp = match self.vp_prologue(a.rcx, operand::RCX, Mode::Shared, Mode::Shared, leaf_no) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let (v, td) = (vp.v, vp.t.td);
        if !tdvps_mappable(td, v) {
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
        op.access(
            a,
            &VP_SCOPE,
            td,
            |e, _| match e.value {
                fields::Value::GuestRcx => v.guest_rcx.load(Relaxed),
                fields::Value::VcpuState => state,
                fields::Value::VcpuIndex => v.index.load(Relaxed),
                fields::Value::NumTdvpsPages => v.num_tdvps_pages.load(Relaxed),
                _ => 0,
            },
            |e, new| {
                // Only guest RCX is host-writable (DEBUG TDs); the others have write masks of 0.
                if e.value == fields::Value::GuestRcx {
                    v.guest_rcx.store(new, Relaxed);
                }
                Ok(())
            },
        )
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

/// Whether `map_tdvps` would map the vCPU's TDVPS: at least `MIN_TDVPS_PAGES` pages plus
/// `TDVPS_PAGES_PER_L2_VM` per L2 VM of the TD.
fn tdvps_mappable(td: &TdState, v: &VcpuState) -> bool {
    let l2 = td.num_l2_vms.load(Acquire).min(MAX_L2_VMS);
    v.num_tdvps_pages.load(Acquire) >= TDVPS_PAGES + TDVPS_PAGES_PER_L2_VM * l2
}

/// What MNG.INIT keeps of TD_PARAMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TdConfig {
    pub attributes: u64,
    pub xfam: u64,
    pub max_vcpus: u64,
    pub num_l2_vms: u64,
    /// EPT page-walk length minus 1: 3 (4-level) or 4 (5-level).
    pub pwl: u64,
    pub gpaw52: bool,
    pub tsc_frequency: u64,
}

/// `verify_td_attributes` (not an import): the allowed bits, no MIGRATABLE TD with DEBUG or
/// PERFMON, not PERFMON with ICSSD.
// The FIXED1 test is Intel's, kept although FIXED1 is 0.
#[allow(clippy::bad_bit_mask)]
fn attributes_valid(attr: u64) -> bool {
    const DEBUG: u64 = 1;
    const ICSSD: u64 = 1 << 16;
    const MIGRATABLE: u64 = 1 << 29;
    const PERFMON: u64 = 1 << 63;
    if attr & !ATTRIBUTES_FIXED0 != 0 || attr & ATTRIBUTES_FIXED1 != ATTRIBUTES_FIXED1 {
        return false;
    }
    if attr & MIGRATABLE != 0 && attr & (DEBUG | PERFMON) != 0 {
        return false;
    }
    attr & PERFMON == 0 || attr & ICSSD == 0
}

/// `check_xfam`: the allowed and required bits, AVX-512 (bits 5, 6, 7) all or none and only
/// with AVX (bit 2), CET (11, 12) both or none, AMX (17, 18) both or none.
fn xfam_valid(xfam: u64) -> bool {
    let bit = |n: u32| xfam >> n & 1;
    xfam & !XFAM_FIXED0 == 0
        && xfam & XFAM_FIXED1 == XFAM_FIXED1
        && !(bit(5) == 1 && bit(2) == 0)
        && bit(5) == bit(6)
        && bit(5) == bit(7)
        && bit(12) == bit(11)
        && bit(17) == bit(18)
}

/// TD_PARAMS words (8 bytes each, little-endian) and the bytes they hold.
mod td_params {
    /// ATTRIBUTES.
    pub(super) const ATTRIBUTES: usize = 0;
    /// XFAM.
    pub(super) const XFAM: usize = 1;
    /// MAX_VCPUS (15:0), NUM_L2_VMS (23:16), MSR_CONFIG_CTLS (31:24: bit 24 IA32_ARCH_CAP,
    /// 31:25 reserved), reserved_0 (63:32).
    pub(super) const VCPUS_L2_MSR_CTLS: usize = 2;
    /// EPTP_CONTROLS.
    pub(super) const EPTP_CONTROLS: usize = 3;
    /// CONFIG_FLAGS.
    pub(super) const CONFIG_FLAGS: usize = 4;
    /// TSC_FREQUENCY (15:0), then reserved_1 (bytes 42..80: words 5 bits 63:16, 6..=9).
    pub(super) const TSC_FREQUENCY: usize = 5;
    /// reserved_1 words after the TSC word (first and last, inclusive; so are the others).
    pub(super) const RESERVED_1: (usize, usize) = (6, 9);
    /// MRCONFIGID, MROWNER, MROWNERCONFIG: words 10..=27. IA32_ARCH_CAPABILITIES_CONFIG.
    pub(super) const IA32_ARCH_CAPABILITIES_CONFIG: usize = 28;
    /// reserved_2 (bytes 232..256).
    pub(super) const RESERVED_2: (usize, usize) = (29, 31);
    /// CPUID_CONFIG_VALS: `MAX_NUM_CPUID_CONFIG` (18) 16-byte entries from byte 256 (words
    /// 32..=67); reserved_3: the rest of the 1024 bytes.
    pub(super) const RESERVED_3: (usize, usize) = (68, 127);
}

/// `read_and_set_td_configurations` and the checks after it (`tdh_mng_init.c`), in Intel's
/// order, on the TD_PARAMS words `word(0..128)` of a TD with `num_tdcx` TDCX pages:
///
/// 1. ATTRIBUTES ([`attributes_valid`]) → `OPERAND_INVALID|ATTRIBUTES (64)`;
/// 2. XFAM ([`xfam_valid`]) → `|XFAM (65)`;
/// 3. MAX_VCPUS 0 or above `MAX_VCPUS_PER_TD` → `|MAX_VCPUS (68)`;
/// 4. NUM_L2_VMS above 3 → `|NUM_L2_VMS (71)`;
/// 5. fewer than `9 + NUM_L2_VMS` TDCX pages → `TDX_TDCS_NOT_ALLOCATED`;
/// 6. reserved_0 → `|RDX`;
/// 7. CONFIG_FLAGS outside `CONFIG_FLAGS_FIXED0`/`FIXED1`, or MAXPA_VIRT with MAXGPA_VIRT →
///    `|EXEC_CONTROLS (66)`;
/// 8. EPTP_CONTROLS: memory type WB, page-walk length 4 or 5 levels, A/D (6), SSS (7), bits
///    11:8, the root PA (51:12) and 63:52 all 0, and 5 levels if GPAW is 52 →
///    `|EPTP_CONTROLS (67)`;
/// 9. TSC_FREQUENCY outside 4..=400 → `|TSC_FREQUENCY (70)`;
/// 10. reserved_1, MSR_CONFIG_CTLS bits 7:1, reserved_2 → `|RDX` (each in turn);
/// 11. (event filters and the CPUID configuration are not checked: see the rules notes)
///     reserved_3 → `|RDX`;
/// 12. IA32_ARCH_CAPABILITIES_CONFIG not 0 without MSR_CONFIG_CTLS.IA32_ARCH_CAP, or with bits
///     outside `IA32_ARCH_CAPABILITIES_CONFIG_MASK` → `|IA32_ARCH_CAPABILITIES_CONFIG (72)`.
// The CONFIG_FLAGS_FIXED1 test is Intel's, kept although CONFIG_FLAGS_FIXED1 is 0.
#[allow(clippy::bad_bit_mask)]
pub(crate) fn check_td_params(num_tdcx: u64, word: impl Fn(usize) -> u64) -> Result<TdConfig, u64> {
    use operand::td_params as op;
    let invalid = |op: u32| status::OPERAND_INVALID | op as u64;
    let attributes = word(td_params::ATTRIBUTES);
    if !attributes_valid(attributes) {
        return Err(invalid(op::ATTRIBUTES));
    }
    let xfam = word(td_params::XFAM);
    if !xfam_valid(xfam) {
        return Err(invalid(op::XFAM));
    }
    let w2 = word(td_params::VCPUS_L2_MSR_CTLS);
    let max_vcpus = w2 & 0xFFFF;
    if max_vcpus == 0 || max_vcpus > MAX_VCPUS_PER_TD as u64 {
        return Err(invalid(op::MAX_VCPUS));
    }
    let num_l2_vms = w2 >> 16 & 0xFF;
    if num_l2_vms > MAX_L2_VMS {
        return Err(invalid(op::NUM_L2_VMS));
    }
    if num_tdcx < MIN_TDCS_PAGES + TDCS_PAGES_PER_L2_VM * num_l2_vms {
        return Err(status::TDCS_NOT_ALLOCATED);
    }
    let rdx = invalid(operand::RDX);
    let nonzero = |(first, last): (usize, usize)| (first..=last).any(|i| word(i) != 0);
    if w2 >> 32 != 0 {
        return Err(rdx);
    }
    let flags = word(td_params::CONFIG_FLAGS);
    const MAXPA_VIRT: u64 = 1 << 3;
    const MAXGPA_VIRT: u64 = 1 << 4;
    if flags & !CONFIG_FLAGS_FIXED0 != 0
        || flags & CONFIG_FLAGS_FIXED1 != CONFIG_FLAGS_FIXED1
        || flags & (MAXPA_VIRT | MAXGPA_VIRT) == MAXPA_VIRT | MAXGPA_VIRT
    {
        return Err(invalid(op::EXEC_CONTROLS));
    }
    let gpaw52 = flags & 1 != 0;
    let eptp = word(td_params::EPTP_CONTROLS);
    let pwl = eptp >> 3 & 7;
    // Bits 2:0 memory type (6 = WB), 5:3 page-walk length - 1; everything above must be 0.
    if eptp & 7 != 6 || !(3..=4).contains(&pwl) || eptp >> 6 != 0 || (gpaw52 && pwl < 4) {
        return Err(invalid(op::EPTP_CONTROLS));
    }
    let w5 = word(td_params::TSC_FREQUENCY);
    let tsc_frequency = w5 & 0xFFFF;
    if !(4..=400).contains(&tsc_frequency) {
        return Err(invalid(op::TSC_FREQUENCY));
    }
    if w5 >> 16 != 0 || nonzero(td_params::RESERVED_1) {
        return Err(rdx);
    }
    let msr_ctls = w2 >> 24 & 0xFF;
    if msr_ctls >> 1 != 0 || nonzero(td_params::RESERVED_2) {
        return Err(rdx);
    }
    if nonzero(td_params::RESERVED_3) {
        return Err(rdx);
    }
    let arch_cap = word(td_params::IA32_ARCH_CAPABILITIES_CONFIG);
    if (msr_ctls & 1 == 0 && arch_cap != 0) || arch_cap & !IA32_ARCH_CAPABILITIES_CONFIG_MASK != 0 {
        return Err(invalid(op::IA32_ARCH_CAPABILITIES_CONFIG));
    }
    Ok(TdConfig {
        attributes,
        xfam,
        max_vcpus,
        num_l2_vms,
        pwl,
        gpaw52,
        tsc_frequency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr::NonNull;
    use mmu::env::Frame;

    /// No host memory: enough for the leaves that only touch the module's own state.
    struct NoMem;

    // SAFETY: maps nothing and hands out nothing.
    unsafe impl PhysMem for NoMem {
        fn map(&self, _: Pfn) -> Option<NonNull<PageWords>> {
            None
        }
        fn alloc_meta(&self) -> Option<Frame> {
            None
        }
        fn free_meta(&self, _: Frame) {}
    }

    struct NoHash;

    impl Sha512Compress for NoHash {
        fn compress(&self, _: &mut [u64; 8], _: &[u8; 128]) {}
    }

    fn cache_wb(m: &SwTdxModule<NoMem, NoHash>, cmd: u64) -> u64 {
        m.phymem_cache_wb(&mut SeamArgs {
            rcx: cmd,
            ..SeamArgs::default()
        })
    }

    #[test]
    fn cache_wb_takes_the_package_mutex_before_the_kot() {
        let m = SwTdxModule::new(NoMem, NoHash, 1, 4);
        let busy_wbt = status::OPERAND_BUSY | operand::WBCACHE as u64;
        let busy_kot = status::OPERAND_BUSY | operand::KOT as u64;
        assert_eq!(busy_wbt, 0x8000_0200_0000_00BC);
        let wbt = Held::try_new(&m.wbt_lock, Mode::Exclusive).unwrap();
        // The command is checked first.
        assert_eq!(
            cache_wb(&m, 2),
            status::OPERAND_INVALID | operand::RCX as u64
        );
        assert_eq!(cache_wb(&m, 0), busy_wbt);
        assert_eq!(cache_wb(&m, 1), busy_wbt);
        let kot = Held::try_new(&m.kot_lock, Mode::Exclusive).unwrap();
        assert_eq!(cache_wb(&m, 0), busy_wbt);
        drop(wbt);
        assert_eq!(cache_wb(&m, 0), busy_kot);
        drop(kot);
        assert_eq!(cache_wb(&m, 0), status::NO_HKID_READY_TO_WBCACHE);
        assert_eq!(cache_wb(&m, 1), status::WBCACHE_RESUME_ERROR);
        // Both locks were released.
        assert!(Held::try_new(&m.wbt_lock, Mode::Exclusive).is_some());
        assert!(Held::try_new(&m.kot_lock, Mode::Exclusive).is_some());
    }

    fn params(edits: &[(usize, u64)]) -> impl Fn(usize) -> u64 + '_ {
        move |i| {
            let base = match i {
                1 => 3,
                2 => 8,
                3 => 6 | 3 << 3,
                5 => 100,
                _ => 0,
            };
            edits.iter().rev().find(|e| e.0 == i).map_or(base, |e| e.1)
        }
    }

    #[test]
    fn check_td_params_keeps_what_mng_init_stores() {
        let c = check_td_params(12, params(&[(2, 1376 | 3 << 16), (3, 6 | 4 << 3), (4, 1)]));
        assert_eq!(
            c,
            Ok(TdConfig {
                attributes: 0,
                xfam: 3,
                max_vcpus: 1376,
                num_l2_vms: 3,
                pwl: 4,
                gpaw52: true,
                tsc_frequency: 100,
            })
        );
        assert_eq!(
            check_td_params(11, params(&[(2, 8 | 3 << 16)])),
            Err(status::TDCS_NOT_ALLOCATED)
        );
    }

    #[test]
    fn attribute_and_xfam_rules() {
        assert!(attributes_valid(
            ATTRIBUTES_FIXED0 & !(1 << 29) & !(1 << 16)
        ));
        assert!(!attributes_valid(1 << 27)); // LASS: not on the emulated CPU
        assert!(!attributes_valid(1 << 62)); // TPA: no TDX Connect
        assert!(!attributes_valid(1 << 31)); // KL
        assert!(xfam_valid(XFAM_FIXED0));
        assert!(!xfam_valid(XFAM_FIXED0 & !(1 << 2))); // AVX-512 without AVX
        assert!(!xfam_valid(1));
    }
}
