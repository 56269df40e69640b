// SPDX-License-Identifier: GPL-2.0-only
//! Holding the module's locks from outside (cargo feature `test-hooks`): a test takes a lock a
//! leaf takes, issues the leaf and sees the `TDX_OPERAND_BUSY` answer of the leaf's own
//! try-lock, with the operand id Intel's module names — the contention a host meets when
//! another logical processor (or a TD's VP.ENTER) holds the lock, made deterministic.
//!
//! Nothing here can break the module: the locks are the same try-locks the leaves use, so a
//! held lock only makes leaves answer BUSY until the guard is dropped.

use super::locks::{Held, Mode};
use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::sept::EntryLock;
use super::SwTdxModule;
use crate::abi::{page_type, SeptLevel};
use mmu::Pfn;

/// A lock of the software module (`docs/tdx-module-rules.md` §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleLock {
    /// A page's PAMT entry lock (the head entry of a large page). For a TDR page this is the
    /// TD's TDR lock, taken explicitly (`BUSY | RCX/RDX`) or implicitly (`BUSY | TDR`).
    Pamt(Pfn),
    /// The OP-state lock in the TDCS of the TD whose TDR is this page (`BUSY | OP_STATE`).
    OpState(Pfn),
    /// The S-EPT tree lock of the TD (`BUSY | SEPT_TREE`).
    SeptTree(Pfn),
    /// One S-EPT entry's lock (TDEL) of the TD: the entry the walk to (`gpa`, `level`) reaches
    /// at that level (`BUSY | RCX` with the entry's details). Exclusive only.
    SeptEntry {
        /// The TD's TDR page.
        tdr: Pfn,
        /// A GPA the entry maps.
        gpa: u64,
        /// The entry's level.
        level: SeptLevel,
    },
    /// The TD's TLB epoch lock (`BUSY | TD_EPOCH`; TDH.MEM.TRACK, VP.ENTER).
    Epoch(Pfn),
    /// The key ownership table's lock (`BUSY | KOT`).
    Kot,
    /// The package's TDH.PHYMEM.CACHE.WB mutex (`BUSY | WBCACHE`). Exclusive only.
    WbCache,
}

/// A lock held by [`SwTdxModule::hold_lock`], released on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct HeldLock<'a> {
    _guard: Guard<'a>,
}

// The guards are only held for their drop.
#[allow(dead_code)]
enum Guard<'a> {
    Sharex(Held<'a>),
    Entry(EntryLock<'a>),
}

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// Takes `lock` in `mode` (the S-EPT entry lock and the WBCACHE mutex are always taken
    /// exclusively) and keeps it until the guard is dropped; every leaf that tries it meanwhile
    /// answers `TDX_OPERAND_BUSY` with the lock's operand id.
    ///
    /// `None` if the lock is held in a conflicting mode, or does not exist: a page outside
    /// every TDMR, a TD lock of a page that is not a TDR, an entry the walk does not reach.
    pub fn hold_lock(&self, lock: ModuleLock, mode: Mode) -> Option<HeldLock<'_>> {
        let guard = match lock {
            ModuleLock::Pamt(pfn) => {
                Guard::Sharex(self.pamt.entry(&self.mem, pfn)?.try_lock(mode)?)
            }
            ModuleLock::OpState(tdr) => {
                Guard::Sharex(Held::try_new(&self.td_of(tdr)?.op_state, mode)?)
            }
            ModuleLock::SeptTree(tdr) => {
                Guard::Sharex(Held::try_new(&self.td_of(tdr)?.sept_lock, mode)?)
            }
            ModuleLock::Epoch(tdr) => {
                Guard::Sharex(Held::try_new(&self.td_of(tdr)?.epoch_lock, mode)?)
            }
            ModuleLock::SeptEntry { tdr, gpa, level } => {
                let w = self.walk(self.td_of(tdr)?, gpa, level)?;
                if w.level != level {
                    return None;
                }
                Guard::Entry(EntryLock::try_new(w.entry)?)
            }
            ModuleLock::Kot => Guard::Sharex(Held::try_new(&self.kot_lock, mode)?),
            ModuleLock::WbCache => Guard::Sharex(Held::try_new(&self.wbt_lock, Mode::Exclusive)?),
        };
        Some(HeldLock { _guard: guard })
    }

    /// The TD state of a page the PAMT says is a TDR.
    fn td_of(&self, tdr: Pfn) -> Option<&super::state::TdState> {
        let info = self.pamt.entry(&self.mem, tdr)?.info();
        (info.page_type == page_type::TDR).then_some(())?;
        self.td_state(tdr)
    }
}
