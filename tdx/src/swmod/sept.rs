// SPDX-License-Identifier: GPL-2.0-only
//! The Secure-EPT: entry encoding, walk, and the MEM leaves (`tdh_mem_*.c`).
//!
//! Entries live in the S-EPT pages the host adds (the root in the TD's TDCX page
//! [`SEPT_ROOT_INDEX`]), encoded as the real module encodes them (`sept_manager.h`): the state in
//! bits D (9), TDEX (53), TDBW (54), TDB (55), TDP (56), IPAT (6) and PS (7); the per-entry lock
//! in TDEL (11); SVE in bit 63. Errors report the architectural entry in RCX and its level and
//! public state in RDX, as `set_arch_septe_details_in_vmm_regs` does.

use super::locks::{Held, Mode};
use super::measure::{mr_block, Sha512Compress};
use super::mem::{words, PageWords, PhysMem};
use super::pamt::{shared_hpa_check, PamtInfo, MAX_PA_BITS, NDA};
use super::state::{TdState, SEPT_ROOT_INDEX};
use super::td::{fill, TdRef, SEPTE_INIT_VALUE};
use super::SwTdxModule;
use crate::abi::{leaf, op_state, operand, page_type, sept_state, status, SeptLevel};
use crate::seamcall::SeamArgs;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use mmu::Pfn;

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const MT_WB: u64 = 6 << 3;
const IPAT: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const D: u64 = 1 << 9;
const XU: u64 = 1 << 10;
const TDEL: u64 = 1 << 11;
const TDEX: u64 = 1 << 53;
const TDBW: u64 = 1 << 54;
const TDB: u64 = 1 << 55;
const TDP: u64 = 1 << 56;
const SVE: u64 = 1 << 63;
/// Bit 63 of a page operand: ignored on input, "page not used" on output (SEPT.ADD v1).
const BIT63: u64 = 1 << 63;
const RWX: u64 = R | W | X | XU;
const HPA_MASK: u64 = ((1 << MAX_PA_BITS) - 1) & !0xfff;
const STATE_BITS: u64 = D | TDEX | TDBW | TDB | TDP | IPAT | PS;
/// "No page" in a page operand.
const NULL_PA: u64 = u64::MAX;

/// S-EPT entry states (index order of `sept_state_lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    Free,
    Removed,
    NlMapped,
    NlBlocked,
    Mapped,
    Blocked,
    BlockedW,
    Pending,
    PendingBlocked,
    PendingBlockedW,
    Other,
}

pub(crate) fn state_of(e: u64) -> St {
    match e & STATE_BITS {
        s if s == TDEX | TDBW | TDB => St::Free,
        s if s == TDBW | TDB => St::Removed,
        0 => St::NlMapped,
        s if s == TDB => St::NlBlocked,
        s if s == IPAT | PS => St::Mapped,
        s if s == IPAT | PS | TDB => St::Blocked,
        s if s == IPAT | PS | TDBW => St::BlockedW,
        s if s == IPAT | PS | TDP => St::Pending,
        s if s == IPAT | PS | TDP | TDB => St::PendingBlocked,
        s if s == IPAT | PS | TDP | TDBW => St::PendingBlockedW,
        _ => St::Other,
    }
}

fn public_state(s: St) -> u8 {
    match s {
        St::Free => sept_state::FREE,
        St::Removed => sept_state::REMOVED,
        St::NlMapped => sept_state::NL_MAPPED,
        St::NlBlocked => sept_state::NL_BLOCKED,
        St::Mapped => sept_state::MAPPED,
        St::Blocked => sept_state::BLOCKED,
        St::BlockedW => 8,
        St::Pending => sept_state::PENDING,
        St::PendingBlocked => sept_state::PENDING_BLOCKED,
        St::PendingBlockedW => 16,
        St::Other => 0xff,
    }
}

fn is_leaf(s: St) -> bool {
    matches!(
        s,
        St::Mapped
            | St::Blocked
            | St::BlockedW
            | St::Pending
            | St::PendingBlocked
            | St::PendingBlockedW
    )
}

fn any_blocked(s: St) -> bool {
    matches!(s, St::NlBlocked | St::Blocked | St::PendingBlocked)
}

fn hpa(e: u64) -> Pfn {
    Pfn::new((e & HPA_MASK) >> 12)
}

/// The architectural view of an entry (RCX of the error details and SEPT.RD).
fn arch_entry(e: u64) -> u64 {
    let s = state_of(e);
    if s == St::Free {
        return SVE;
    }
    let mask = if is_leaf(s) {
        R | W | X | XU | (7 << 3) | IPAT | PS | HPA_MASK | SVE
    } else {
        // SEPT_ARCH_ENTRY_NON_LEAF_MASK: permissions and PS only, no address.
        R | W | X | XU | PS
    };
    e & mask
}

/// Writes the S-EPT details of entry `e` at `level` into RCX/RDX.
fn details(a: &mut SeamArgs, e: u64, level: SeptLevel) {
    a.rcx = arch_entry(e);
    a.rdx = level.0 as u64 | (public_state(state_of(e)) as u64) << 8;
}

/// A walk result: the entry at the level reached.
struct Walk<'a> {
    entry: &'a AtomicU64,
    level: SeptLevel,
}

/// The per-entry lock (TDEL), released on drop.
struct EntryLock<'a>(&'a AtomicU64);

impl<'a> EntryLock<'a> {
    fn try_new(entry: &'a AtomicU64) -> Option<Self> {
        let old = entry.fetch_or(TDEL, AcqRel);
        // Lazily: an `EntryLock` dropped after a failed attempt would clear the holder's bit.
        (old & TDEL == 0).then(|| EntryLock(entry))
    }

    /// The entry's value without the lock bit.
    fn get(&self) -> u64 {
        self.0.load(Acquire) & !TDEL
    }

    /// Stores a new value, keeping the entry locked until drop.
    fn set(&self, v: u64) {
        self.0.store(v | TDEL, Release);
    }
}

impl Drop for EntryLock<'_> {
    fn drop(&mut self) {
        self.0.fetch_and(!TDEL, Release);
    }
}

/// Decoded GPA+level operand.
struct GpaLevel {
    gpa: u64,
    level: SeptLevel,
}

/// What the MEM leaves' common prologue holds: the TD (TDR locked shared), the OP-state lock,
/// the S-EPT tree lock, the checked GPA and level, and the locked entry.
type MemPrologue<'a> = (
    TdRef<'a>,
    Option<Held<'a>>,
    Held<'a>,
    GpaLevel,
    EntryLock<'a>,
);

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    fn sept_root<'a>(&'a self, td: &TdState) -> Option<&'a PageWords> {
        words(&self.mem, Pfn::new(td.tdcx[SEPT_ROOT_INDEX].load(Acquire)))
    }

    /// Walks toward `gpa` at `target` (TDX level), stopping early at a non-present entry or a
    /// leaf (`secure_ept_walk`).
    fn walk<'a>(&'a self, td: &TdState, gpa: u64, target: SeptLevel) -> Option<Walk<'a>> {
        let mut level = SeptLevel(td.root_level.load(Acquire) as u8);
        let mut page = self.sept_root(td)?;
        loop {
            let idx = ((gpa >> (12 + 9 * level.0 as u32)) & 511) as usize;
            let entry = &page.0[idx];
            if level == target {
                return Some(Walk { entry, level });
            }
            let e = entry.load(Acquire) & !TDEL;
            if e & RWX == 0 || e & PS != 0 {
                return Some(Walk { entry, level });
            }
            page = words(&self.mem, hpa(e))?;
            level = SeptLevel(level.0 - 1);
        }
    }

    /// `verify_page_info_input` + `check_gpa_validity` for RCX.
    fn gpa_level(&self, td: &TdState, rcx: u64, min: u8, max: u8) -> Result<GpaLevel, u64> {
        let bad = status::OPERAND_INVALID | operand::RCX as u64;
        let level = (rcx & 7) as u8;
        if rcx & 0xff8 != 0 || rcx >> 52 != 0 || level < min || level > max {
            return Err(bad);
        }
        let gpa = rcx & !0xfff;
        let lvl = SeptLevel(level);
        if gpa & ((lvl.pages() << 12) - 1) != 0 {
            return Err(bad);
        }
        let gpaw = td.gpaw.load(Acquire) as u32;
        // Private GPAs only: the shared bit (GPAW - 1) and everything above it must be clear.
        if gpa >> (gpaw - 1) != 0 {
            return Err(bad);
        }
        Ok(GpaLevel { gpa, level: lvl })
    }

    fn root_level(td: &TdState) -> u8 {
        td.root_level.load(Acquire) as u8
    }

    /// Common MEM prologue: TDR, state checks, GPA+level, S-EPT tree lock, walk, entry lock.
    /// On failure returns the status with RCX/RDX already filled.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn mem_prologue<'a>(
        &'a self,
        a: &mut SeamArgs,
        leaf_no: u16,
        rcx: u64,
        tdr_pa: u64,
        min: u8,
        max: Option<u8>,
        tree: Mode,
    ) -> Result<MemPrologue<'a>, u64> {
        self.mem_prologue_with(a, leaf_no, rcx, tdr_pa, min, max, tree, |_| Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    fn mem_prologue_with<'a>(
        &'a self,
        a: &mut SeamArgs,
        leaf_no: u16,
        rcx: u64,
        tdr_pa: u64,
        min: u8,
        max: Option<u8>,
        tree: Mode,
        after_state: impl FnOnce(&TdState) -> Result<(), u64>,
    ) -> Result<MemPrologue<'a>, u64> {
        let t = self.lock_tdr(tdr_pa, operand::RDX, Mode::Shared)?;
        // SAFETY-free lifetime juggling: the TD state lives in the TDR page, mapped for 'a.
        let td: &'a TdState = t.td;
        let op = self.check_state(td, Some(Mode::Shared), leaf_no)?;
        after_state(td)?;
        let max = max.unwrap_or(Self::root_level(td));
        let gl = self.gpa_level(td, rcx, min, max)?;
        let tree_lock = Held::try_new(&td.sept_lock, tree)
            .ok_or(status::OPERAND_BUSY | operand::SEPT_TREE as u64)?;
        let w = self
            .walk(td, gl.gpa, gl.level)
            .ok_or(status::EPT_WALK_FAILED | operand::RCX as u64)?;
        if w.level != gl.level {
            details(a, w.entry.load(Acquire) & !TDEL, w.level);
            return Err(status::EPT_WALK_FAILED | operand::RCX as u64);
        }
        let Some(lock) = EntryLock::try_new(w.entry) else {
            details(a, w.entry.load(Acquire) & !TDEL, w.level);
            return Err(status::OPERAND_BUSY | operand::RCX as u64);
        };
        Ok((t, op, tree_lock, gl, lock))
    }

    fn is_tracked(td: &TdState, bepoch: u64) -> bool {
        let epoch = td.td_epoch.load(Acquire);
        bepoch + 1 < epoch
            || (bepoch + 1 == epoch && td.refcount[(bepoch & 1) as usize].load(Acquire) == 0)
    }

    fn needs_tracking(td: &TdState) -> bool {
        Self::op_state_of(td) == op_state::RUNNABLE
    }

    /// TDH.MEM.SEPT.ADD (`tdh_mem_sept_add.c`). Version 1 also takes L2 S-EPT pages in R9-R11
    /// and returns the four page operands in R8-R11 on every path past the version check:
    /// NULL_PA for a page that was added, the input with bit 63 set for one that already existed
    /// (allow_existing), otherwise the input (bit 63 of a non-NULL_PA input is ignored).
    pub(super) fn mem_sept_add(&self, a: &mut SeamArgs, version: u64) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        // RCX/RDX are cleared before the version check; R8-R11 are not touched on that path.
        a.rcx = 0;
        a.rdx = 0;
        if version > 1 {
            return status::OPERAND_INVALID | operand::RAX as u64;
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
    ) -> u64 {
        if rdx & 0xffe != 0 || rdx >> 52 != 0 {
            return status::OPERAND_INVALID | operand::RDX as u64;
        }
        let allow_existing = rdx & 1 != 0;
        let (t, _op, _tree, gl, e) =
            match self.mem_prologue(a, leaf::MEM_SEPT_ADD, rcx, rdx & !1, 1, None, Mode::Shared) {
                Ok(v) => v,
                Err(st) => return st,
            };
        let v = e.get();
        let st = state_of(v);
        if !matches!(st, St::Free | St::NlMapped) {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        // process_l1_page.
        let [r8, vm1, vm2, vm3] = *flagged;
        let mut new_page = None;
        if r8 == NULL_PA {
            // No new L1 page: only at version 1, and the L1 table must already exist.
            if version == 0 {
                return status::OPERAND_INVALID | operand::R8 as u64;
            }
            if st != St::NlMapped {
                details(a, v, gl.level);
                return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
            }
        } else if st == St::Free {
            match self.lock_fresh_page(r8, operand::R8) {
                Ok(x) => new_page = Some(x),
                Err(st) => return st,
            }
        } else if allow_existing {
            // Bit 63 marks a page that was not used.
            flagged[0] |= BIT63;
        } else {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        // process_l2_pages: a non-NULL_PA L2 page names a VM; this module has no L2 VMs
        // (NUM_L2_VMS = 0), so any is `OPERAND_INVALID | (R8 + vm_id)`.
        if version > 0 {
            for (pa, op) in [(vm1, operand::R9), (vm2, 10), (vm3, 11)] {
                if pa != NULL_PA {
                    return status::OPERAND_INVALID | op as u64;
                }
            }
        }
        // add_l1_and_l2_pages.
        if let Some((pe, _plock)) = new_page {
            let child = Pfn::new(r8 >> 12);
            let Some(page) = words(&self.mem, child) else {
                return status::OPERAND_ADDR_RANGE_ERROR | operand::R8 as u64;
            };
            fill(page, SEPTE_INIT_VALUE);
            pe.set(PamtInfo {
                page_type: page_type::EPT,
                size: 0,
                owner: t.tdr,
            });
            pe.set_bepoch(0);
            t.td.chldcnt.fetch_add(1, AcqRel);
            e.set(R | W | X | XU | SVE | child.hpa().raw());
            flagged[0] = NULL_PA;
        }
        status::SUCCESS
    }

    pub(super) fn mem_page_aug(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx, r8) = (a.rcx, a.rdx, a.r8);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            match self.mem_prologue(a, leaf::MEM_PAGE_AUG, rcx, rdx, 0, Some(1), Mode::Shared) {
                Ok(v) => v,
                Err(st) => return st,
            };
        let v = e.get();
        if !matches!(state_of(v), St::Free | St::Removed) {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        let pages = gl.level.pages();
        let (head, _plock) = match self.lock_free_range(r8, gl.level) {
            Ok(x) => x,
            Err(st) => return st,
        };
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
        status::SUCCESS
    }

    /// `check_and_lock_free_range_hpa`: an NDA page (4K) or 512 NDA pages (2M), head locked.
    fn lock_free_range(
        &self,
        pa: u64,
        level: SeptLevel,
    ) -> Result<(&super::pamt::PamtEntry, Held<'_>), u64> {
        if pa & ((level.pages() << 12) - 1) != 0 {
            return Err(status::OPERAND_INVALID | operand::R8 as u64);
        }
        let (head, lock) = self.lock_fresh_page(pa, operand::R8)?;
        let pfn = Pfn::new(pa >> 12);
        for i in 1..level.pages() {
            match self.pamt.entry(&self.mem, pfn.add(i)) {
                Some(e) if e.info().page_type == NDA && e.info().size == 0 => {}
                _ => return Err(status::PAGE_METADATA_INCORRECT | operand::R8 as u64),
            }
        }
        Ok((head, lock))
    }

    pub(super) fn mem_page_add(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx, r8, r9) = (a.rcx, a.rdx, a.r8, a.r9);
        a.rcx = 0;
        a.rdx = 0;
        let t = match self.lock_tdr(rdx, operand::RDX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let td = t.td;
        if let Err(st) = self.check_state(td, None, leaf::MEM_PAGE_ADD) {
            return st;
        }
        let gl = match self.gpa_level(td, rcx, 0, 0) {
            Ok(g) => g,
            Err(st) => return st,
        };
        let Some(w) = self.walk(td, gl.gpa, gl.level) else {
            return status::EPT_WALK_FAILED | operand::RCX as u64;
        };
        let v = w.entry.load(Acquire) & !TDEL;
        if w.level != gl.level {
            details(a, v, w.level);
            return status::EPT_WALK_FAILED | operand::RCX as u64;
        }
        if state_of(v) != St::Free {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        // The source is read through a shared key: any HKID below the first private one.
        let src_pa = match shared_hpa_check(r9, 4096, self.hkid_first) {
            Ok(pa) => pa,
            Err(st) => return st | operand::R9 as u64,
        };
        let (pe, _plock) = match self.lock_fresh_page(r8, operand::R8) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let target = Pfn::new(r8 >> 12);
        let (Some(src), Some(dst)) = (
            words(&self.mem, Pfn::new(src_pa >> 12)),
            words(&self.mem, target),
        ) else {
            return status::OPERAND_INVALID | operand::R9 as u64;
        };
        for (d, s) in dst.0.iter().zip(src.0.iter()) {
            d.store(s.load(Relaxed), Relaxed);
        }
        w.entry.store(
            R | W | X | XU | MT_WB | IPAT | PS | SVE | target.hpa().raw(),
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
        status::SUCCESS
    }

    /// The PAMT entry whose `bepoch` a block of entry `v` records: the data page of a leaf,
    /// the child S-EPT page of a non-leaf.
    fn mapped_page_entry(&self, v: u64) -> Option<&super::pamt::PamtEntry> {
        self.pamt.entry(&self.mem, hpa(v))
    }

    pub(super) fn mem_range_block(&self, a: &mut SeamArgs) -> u64 {
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

    pub(super) fn mem_range_unblock(&self, a: &mut SeamArgs) -> u64 {
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
        // `sept_unblock`: `sept_update_state` (which sets SVE), then SEPT_PERMISSIONS_RWX.
        let new = match state_of(v) {
            St::NlBlocked => (v & !TDB) | R | W | X | XU | SVE,
            St::Blocked => (v & !TDB) | R | W | X | XU | SVE,
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
                return status::TLB_TRACKING_NOT_DONE | operand::RCX as u64;
            }
        }
        e.set(new);
        status::SUCCESS
    }

    pub(super) fn mem_track(&self, a: &mut SeamArgs) -> u64 {
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

    /// The checks PAGE.REMOVE and SEPT.REMOVE share once the entry is locked: the PAMT entry of
    /// the page the entry maps (leaf) or points to (table) is locked exclusively, and a runnable
    /// TD's entry must be blocked with its block TLB-tracked. Returns the locked PAMT entry.
    fn lock_removable<'m>(
        &'m self,
        td: &TdState,
        a: &mut SeamArgs,
        v: u64,
        level: SeptLevel,
    ) -> Result<(&'m super::pamt::PamtEntry, Held<'m>), u64> {
        let busy = status::OPERAND_BUSY | operand::RCX as u64;
        let pe = self.pamt.entry(&self.mem, hpa(v)).ok_or(busy)?;
        let lock = pe.try_lock(Mode::Exclusive).ok_or(busy)?;
        if Self::needs_tracking(td) {
            if !any_blocked(state_of(v)) {
                details(a, v, level);
                return Err(status::GPA_RANGE_NOT_BLOCKED | operand::RCX as u64);
            }
            if !Self::is_tracked(td, pe.bepoch()) {
                return Err(status::TLB_TRACKING_NOT_DONE | operand::RCX as u64);
            }
        }
        Ok((pe, lock))
    }

    pub(super) fn mem_page_remove(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let (t, _op, _tree, gl, e) =
            match self.mem_prologue(a, leaf::MEM_PAGE_REMOVE, rcx, rdx, 0, Some(2), Mode::Shared) {
                Ok(v) => v,
                Err(st) => return st,
            };
        let v = e.get();
        let s = state_of(v);
        if !is_leaf(s) {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        let page = hpa(v);
        let (_pe, _plock) = match self.lock_removable(t.td, a, v, gl.level) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let pages = gl.level.pages();
        e.set(SEPTE_INIT_VALUE);
        t.td.chldcnt.fetch_sub(pages, AcqRel);
        self.set_range(
            page,
            pages,
            PamtInfo {
                page_type: NDA,
                size: 0,
                owner: Pfn::new(0),
            },
        );
        a.rcx = page.hpa().raw();
        a.rdx = 0;
        status::SUCCESS
    }

    /// TDH.MEM.SEPT.REMOVE (`tdh_mem_sept_remove.c`). From version 1 on, R9-R11 (the removed L2
    /// S-EPT pages) are NULL_PA on every path, the version error included: this module has no L2
    /// VMs, so nothing ever replaces them.
    pub(super) fn mem_sept_remove(&self, a: &mut SeamArgs, version: u64) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        if version > 0 {
            a.r9 = NULL_PA;
            a.r10 = NULL_PA;
            a.r11 = NULL_PA;
        }
        if version > 1 {
            return status::OPERAND_INVALID | operand::RAX as u64;
        }
        let (t, _op, _tree, gl, e) =
            match self.mem_prologue(a, leaf::MEM_SEPT_REMOVE, rcx, rdx, 1, None, Mode::Exclusive) {
                Ok(v) => v,
                Err(st) => return st,
            };
        let v = e.get();
        let s = state_of(v);
        if !matches!(s, St::NlMapped | St::NlBlocked) {
            details(a, v, gl.level);
            return status::EPT_ENTRY_STATE_INCORRECT | operand::RCX as u64;
        }
        let child = hpa(v);
        let (pe, _plock) = match self.lock_removable(t.td, a, v, gl.level) {
            Ok(x) => x,
            Err(st) => return st,
        };
        let Some(cp) = words(&self.mem, child) else {
            return status::OPERAND_BUSY | operand::RCX as u64;
        };
        if cp
            .0
            .iter()
            .any(|c| state_of(c.load(Acquire) & !TDEL) != St::Free)
        {
            details(a, v, gl.level);
            return status::EPT_PAGE_NOT_FREE | operand::RCX as u64;
        }
        e.set(SEPTE_INIT_VALUE);
        t.td.chldcnt.fetch_sub(1, AcqRel);
        pe.set(PamtInfo {
            page_type: NDA,
            size: 0,
            owner: Pfn::new(0),
        });
        a.rcx = child.hpa().raw();
        status::SUCCESS
    }

    pub(super) fn mem_sept_rd(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        // Reading L2 attributes (RDX bit 0) needs a debug TD (ATTRIBUTES bit 0); checked right
        // after the state, before the level and the walk.
        let l2_check = |td: &TdState| {
            if rdx & 1 != 0 && td.attributes.load(Relaxed) & 1 == 0 {
                Err(status::OPERAND_INVALID | operand::RDX as u64)
            } else {
                Ok(())
            }
        };
        let (_t, _op, _tree, gl, e) = match self.mem_prologue_with(
            a,
            leaf::MEM_SEPT_RD,
            rcx,
            rdx & !1,
            0,
            None,
            Mode::Shared,
            l2_check,
        ) {
            Ok(v) => v,
            Err(st) => return st,
        };
        if rdx & 1 != 0 {
            // The L2 attributes (`gpa_attr_t`, one byte-pair per L2 VM): all 0 with no L2 VMs.
            a.r8 = 0;
        }
        details(a, e.get(), gl.level);
        status::SUCCESS
    }

    pub(super) fn mr_extend(&self, a: &mut SeamArgs) -> u64 {
        let (rcx, rdx) = (a.rcx, a.rdx);
        a.rcx = 0;
        a.rdx = 0;
        let t = match self.lock_tdr(rdx, operand::RDX, Mode::Exclusive) {
            Ok(t) => t,
            Err(st) => return st,
        };
        let td = t.td;
        if let Err(st) = self.check_state(td, None, leaf::MR_EXTEND) {
            return st;
        }
        if rcx & 0xff != 0 || rcx >> (td.gpaw.load(Acquire) - 1) != 0 {
            return status::OPERAND_INVALID | operand::RCX as u64;
        }
        // Walk to whatever leaf maps the GPA.
        let Some(w) = self.walk(td, rcx, SeptLevel(0)) else {
            return status::EPT_ENTRY_NOT_PRESENT | operand::RCX as u64;
        };
        let v = w.entry.load(Acquire) & !TDEL;
        let s = state_of(v);
        // SEPT_WALK_TO_LEAF fails on a non-leaf or a leaf without R/W/Xs (PENDING, BLOCKED,
        // PENDING_BLOCKED): reported with the entry where the walk stopped.
        if !is_leaf(s) || v & (R | W | X) == 0 {
            details(a, v, w.level);
            return status::EPT_ENTRY_NOT_PRESENT | operand::RCX as u64;
        }
        // A present leaf that is not MAPPED (none reachable here): bare status.
        if s != St::Mapped {
            return status::EPT_ENTRY_NOT_PRESENT;
        }
        let offset = rcx & ((w.level.pages() << 12) - 1);
        let page = hpa(v).add(offset >> 12);
        let Some(p) = words(&self.mem, page) else {
            return status::EPT_ENTRY_NOT_PRESENT;
        };
        self.measure(td, &mr_block(b"MR.EXTEND", rcx));
        let first = ((offset & 0xfff) / 8) as usize;
        for half in 0..2 {
            let mut block = [0u8; 128];
            for i in 0..16 {
                let w = p.0[first + half * 16 + i].load(Relaxed);
                block[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            self.measure(td, &block);
        }
        status::SUCCESS
    }

    /// Inspection (like SEPT.RD, without locks or SEAMCALL accounting): the public state and
    /// architectural entry at (`gpa`, `level`) of the TD whose TDR is `tdr`, or `None` if the
    /// walk stops above `level`.
    pub fn sept_entry(&self, tdr: Pfn, gpa: u64, level: SeptLevel) -> Option<(u8, u64)> {
        let td = self.td_state(tdr)?;
        let w = self.walk(td, gpa, level)?;
        if w.level != level {
            return None;
        }
        let v = w.entry.load(Acquire) & !TDEL;
        Some((public_state(state_of(v)), arch_entry(v)))
    }

    /// Inspection: the public state and the PFN an entry maps or points to (leaf: the page;
    /// non-leaf: the child S-EPT page), or `None` if the walk stops above `level`.
    pub fn sept_lookup(&self, tdr: Pfn, gpa: u64, level: SeptLevel) -> Option<(u8, Pfn)> {
        let td = self.td_state(tdr)?;
        let w = self.walk(td, gpa, level)?;
        if w.level != level {
            return None;
        }
        let v = w.entry.load(Acquire) & !TDEL;
        Some((public_state(state_of(v)), hpa(v)))
    }

    /// Inspection: calls `f(gpa, level, public state, mapped PFN)` for every present S-EPT entry
    /// of the TD, parents before children.
    pub fn for_each_sept_entry(&self, tdr: Pfn, mut f: impl FnMut(u64, SeptLevel, u8, Pfn)) {
        let Some(td) = self.td_state(tdr) else { return };
        let Some(root) = self.sept_root(td) else {
            return;
        };
        self.visit(root, SeptLevel(Self::root_level(td)), 0, &mut f);
    }

    fn visit(
        &self,
        page: &PageWords,
        level: SeptLevel,
        base: u64,
        f: &mut impl FnMut(u64, SeptLevel, u8, Pfn),
    ) {
        for (i, e) in page.0.iter().enumerate() {
            let v = e.load(Acquire) & !TDEL;
            let s = state_of(v);
            if s == St::Free {
                continue;
            }
            let gpa = base + ((i as u64) << (12 + 9 * level.0 as u32));
            f(gpa, level, public_state(s), hpa(v));
            if matches!(s, St::NlMapped | St::NlBlocked) && level.0 > 0 {
                if let Some(child) = words(&self.mem, hpa(v)) {
                    self.visit(child, SeptLevel(level.0 - 1), gpa, f);
                }
            }
        }
    }

    /// Inspection: the TD's epoch, lifecycle, OP state and owned-page count.
    pub fn td_info(&self, tdr: Pfn) -> Option<TdInfo> {
        let td = self.td_state(tdr)?;
        Some(TdInfo {
            epoch: td.td_epoch.load(Acquire),
            lifecycle: td.lifecycle.load(Acquire) as u8,
            op_state: Self::op_state_of(td),
            chldcnt: td.chldcnt.load(Acquire),
        })
    }
}

/// What [`SwTdxModule::td_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdInfo {
    /// TLB epoch.
    pub epoch: u64,
    /// Lifecycle state.
    pub lifecycle: u8,
    /// OP state.
    pub op_state: u8,
    /// Pages the TD owns (4K units).
    pub chldcnt: u64,
}
