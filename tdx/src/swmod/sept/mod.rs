// SPDX-License-Identifier: GPL-2.0-only
//! The Secure-EPT: entry encoding, states, walk and inspection.
//!
//! Entries live in the S-EPT pages the host adds (the root in the TD's TDCX page
//! [`super::ModuleLine::sept_root_index`]), encoded as the real module encodes them (`sept_manager.h`): the state in
//! bits D (9), TDEX (53), TDBW (54), TDB (55), TDP (56), IPAT (6) and PS (7); the per-entry lock
//! in TDEL (11); SVE in bit 63. Errors report the architectural entry in RCX and its level and
//! public state in RDX, as `set_arch_septe_details_in_vmm_regs` does.
//!
//! The MEM leaves (`tdh_mem_*.c`) that change the tree are in the submodules, by what they act on:
//! [`tables`] (S-EPT pages: SEPT.ADD, SEPT.REMOVE, SEPT.RD), [`pages`] (private pages: PAGE.AUG,
//! PAGE.ADD, PAGE.REMOVE), [`block`] (RANGE.BLOCK, RANGE.UNBLOCK, TRACK), [`demote`]
//! (PAGE.DEMOTE: a huge leaf becomes a table of smaller ones), all starting with
//! [`prologue`]'s common checks.

mod block;
mod demote;
mod pages;
mod prologue;
mod tables;

use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::mem::{words, PageWords};
use super::pamt::MAX_PA_BITS;
use super::state::TdState;
use super::SwTdxModule;
use crate::abi::{sept_state, SeptLevel};
use crate::seamcall::SeamArgs;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use mmu::Pfn;

pub(super) const R: u64 = 1 << 0;
pub(super) const W: u64 = 1 << 1;
pub(super) const X: u64 = 1 << 2;
const MT_WB: u64 = 6 << 3;
const IPAT: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const D: u64 = 1 << 9;
const XU: u64 = 1 << 10;
pub(super) const TDEL: u64 = 1 << 11;
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

/// A free S-EPT entry (`SEPTE_INIT_VALUE`: TDEX, TDBW, TDB and SVE set).
pub(crate) const SEPTE_INIT_VALUE: u64 = 0x80E0_0000_0000_0000;

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

pub(super) fn is_leaf(s: St) -> bool {
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

pub(super) fn hpa(e: u64) -> Pfn {
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
pub(super) fn details(a: &mut SeamArgs, e: u64, level: SeptLevel) {
    a.rcx = arch_entry(e);
    a.rdx = level.0 as u64 | (public_state(state_of(e)) as u64) << 8;
}

/// A walk result: the entry at the level reached.
pub(super) struct Walk<'a> {
    pub(super) entry: &'a AtomicU64,
    pub(super) level: SeptLevel,
}

/// The per-entry lock (TDEL), released on drop.
pub(super) struct EntryLock<'a>(&'a AtomicU64);

impl<'a> EntryLock<'a> {
    pub(super) fn try_new(entry: &'a AtomicU64) -> Option<Self> {
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

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    fn sept_root<'a>(&'a self, td: &TdState) -> Option<&'a PageWords> {
        let root = td.tdcx.get(self.line.sept_root_index())?;
        words(&self.mem, Pfn::new(root.load(Acquire)))
    }

    /// Walks toward `gpa` at `target` (TDX level), stopping early at a non-present entry or a
    /// leaf (`secure_ept_walk`).
    pub(super) fn walk<'a>(
        &'a self,
        td: &TdState,
        gpa: u64,
        target: SeptLevel,
    ) -> Option<Walk<'a>> {
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

    fn root_level(td: &TdState) -> u8 {
        td.root_level.load(Acquire) as u8
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
}
