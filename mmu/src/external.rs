// SPDX-License-Identifier: GPL-2.0-only
//! The external page-table hooks: how changes to the mirror root reach the TDX module's
//! Secure-EPT (upstream `kvm_x86_ops::{link,set,remove,free}_external_spt*`).
//!
//! The core calls these only for the mirror root, always with the affected mirror entry held so
//! that no other walker can change it meanwhile (frozen under the shared lock, or under the
//! exclusive lock), and in the order the TDX module needs:
//!
//! - fault (shared lock): [`link_spt`](ExternalPageTable::link_spt) for each new table, top
//!   down, then [`set_spte`](ExternalPageTable::set_spte) for the leaf;
//! - zap (exclusive lock), in rounds: first every leaf overlapping the range —
//!   [`block_spte`](ExternalPageTable::block_spte) for each, one
//!   [`flush`](ExternalPageTable::flush), [`remove_spte`](ExternalPageTable::remove_spte) for
//!   each — then the tables wholly inside the range, one level at a time from the deepest:
//!   `block_spte` for each entry pointing at such a table, one `flush`,
//!   [`free_spt`](ExternalPageTable::free_spt) for each. The rounds exist because an S-EPT walk
//!   stops at a blocked non-leaf entry: nothing below a table may still need removing when the
//!   table's entry is blocked. A backend that blocks and tracks per page can do everything in
//!   `remove_spte`/`free_spt` and leave the other two at their defaults; the TDX backend blocks
//!   a whole round, tracks and kicks once, then removes.
//! - split (exclusive lock, [`TdpMmu::zap_range_split`](crate::tdp::TdpMmu::zap_range_split)),
//!   before a zap's leaf round, for a huge leaf the zap covers only in part: `block_spte` for
//!   each such leaf of one level, one `flush`, then
//!   [`split_spte`](ExternalPageTable::split_spte) for each (`TDH.MEM.PAGE.DEMOTE`): the leaf
//!   becomes a new table of 512 unblocked leaves one level down, mapping the same frames; the
//!   zap then blocks, flushes and removes only the small leaves inside its range. Levels are
//!   split top-down (a 1G leaf into 2M leaves before one of those into 4K leaves).
//! - teardown (exclusive access, after the TD's vCPUs are flushed and its keys freed):
//!   `remove_spte` and `free_spt` only, post-order.
//!
//! GFNs passed here are private GFNs (no shared bit); `level` is the level of the entry that
//! changes (for `link_spt`/`free_spt`, of the entry pointing at the table).

use crate::addr::{Gfn, Pfn};
use crate::level::Level;
use crate::page::{ExternalSpt, SptRelease};

/// Why a hook failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExternalError {
    /// Contention (`TDX_OPERAND_BUSY` and friends) that outlived the backend's own bounded
    /// retries. Nothing changed; the operation may be retried.
    Busy,
    /// Anything else. The core marks the VM bugged.
    Fatal,
}

/// What the external side did with a private data page whose leaf was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRelease {
    /// The page is back with the host (removed and, for TDX, written back/invalidated).
    Returned,
    /// The TDX module kept it: the owner must never reuse it. Counted by the core.
    Leaked,
}

/// Propagation hooks for a mirror root. See the module docs for the calling protocol.
pub trait ExternalPageTable: Sync {
    /// A new table `spt` now backs the entry at (`gfn`, `level`) (`TDH.MEM.SEPT.ADD`).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] leaves nothing changed; the page stays with the host.
    fn link_spt(&self, gfn: Gfn, level: Level, spt: &ExternalSpt) -> Result<(), ExternalError>;

    /// A leaf at (`gfn`, `level`) now maps `pfn` (`TDH.MEM.PAGE.AUG` or `.ADD`).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] leaves nothing changed.
    fn set_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<(), ExternalError>;

    /// Zap phase 1: the entry at (`gfn`, `level`) is about to be removed (`TDH.MEM.RANGE.BLOCK`).
    /// `is_leaf` tells a leaf from a table entry.
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] fails the zap before anything is removed.
    fn block_spte(&self, _gfn: Gfn, _level: Level, _is_leaf: bool) -> Result<(), ExternalError> {
        Ok(())
    }

    /// Zap phase 2, once per zap after all blocks: make every vCPU drop translations of the
    /// blocked entries (`TDH.MEM.TRACK` and a kick of every vCPU).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] fails the zap before anything is removed.
    fn flush(&self) -> Result<(), ExternalError> {
        Ok(())
    }

    /// Split: the huge leaf at (`gfn`, `level`) mapping `pfn`, blocked and flushed, becomes the
    /// new table `spt`, whose entries map the same frames one level down and are not blocked
    /// (`TDH.MEM.PAGE.DEMOTE` with `spt` as the new S-EPT page).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] leaves the leaf as it was (blocked); `spt` stays with the host.
    fn split_spte(
        &self,
        gfn: Gfn,
        level: Level,
        pfn: Pfn,
        spt: &ExternalSpt,
    ) -> Result<(), ExternalError>;

    /// Zap phase 3 or teardown: remove the leaf at (`gfn`, `level`) mapping `pfn`
    /// (`TDH.MEM.PAGE.REMOVE` + `TDH.PHYMEM.PAGE.WBINVD`, or `TDH.PHYMEM.PAGE.RECLAIM` at
    /// teardown).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] leaves the leaf mapped.
    fn remove_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<PageRelease, ExternalError>;

    /// Zap phase 3 or teardown: the table `spt` behind (`gfn`, `level`) is empty and goes away
    /// (`TDH.MEM.SEPT.REMOVE` while the TD lives, `TDH.PHYMEM.PAGE.RECLAIM` at teardown).
    ///
    /// # Errors
    ///
    /// [`ExternalError::Busy`] leaves the table linked.
    fn free_spt(
        &self,
        gfn: Gfn,
        level: Level,
        spt: &ExternalSpt,
    ) -> Result<SptRelease, ExternalError>;
}

/// The hooks of a VM without private memory: never called, because such a VM has no mirror root.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoExternal;

impl ExternalPageTable for NoExternal {
    fn link_spt(&self, _: Gfn, _: Level, _: &ExternalSpt) -> Result<(), ExternalError> {
        Err(ExternalError::Fatal)
    }
    fn set_spte(&self, _: Gfn, _: Level, _: Pfn) -> Result<(), ExternalError> {
        Err(ExternalError::Fatal)
    }
    fn split_spte(&self, _: Gfn, _: Level, _: Pfn, _: &ExternalSpt) -> Result<(), ExternalError> {
        Err(ExternalError::Fatal)
    }
    fn remove_spte(&self, _: Gfn, _: Level, _: Pfn) -> Result<PageRelease, ExternalError> {
        Err(ExternalError::Fatal)
    }
    fn free_spt(&self, _: Gfn, _: Level, _: &ExternalSpt) -> Result<SptRelease, ExternalError> {
        Err(ExternalError::Fatal)
    }
}

impl<X: ExternalPageTable> ExternalPageTable for &X {
    fn link_spt(&self, gfn: Gfn, level: Level, spt: &ExternalSpt) -> Result<(), ExternalError> {
        (**self).link_spt(gfn, level, spt)
    }
    fn set_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<(), ExternalError> {
        (**self).set_spte(gfn, level, pfn)
    }
    fn block_spte(&self, gfn: Gfn, level: Level, is_leaf: bool) -> Result<(), ExternalError> {
        (**self).block_spte(gfn, level, is_leaf)
    }
    fn flush(&self) -> Result<(), ExternalError> {
        (**self).flush()
    }
    fn split_spte(
        &self,
        gfn: Gfn,
        level: Level,
        pfn: Pfn,
        spt: &ExternalSpt,
    ) -> Result<(), ExternalError> {
        (**self).split_spte(gfn, level, pfn, spt)
    }
    fn remove_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<PageRelease, ExternalError> {
        (**self).remove_spte(gfn, level, pfn)
    }
    fn free_spt(
        &self,
        gfn: Gfn,
        level: Level,
        spt: &ExternalSpt,
    ) -> Result<SptRelease, ExternalError> {
        (**self).free_spt(gfn, level, spt)
    }
}
