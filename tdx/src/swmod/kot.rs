// SPDX-License-Identifier: GPL-2.0-only
//! The key ownership table (KOT): the state of every HKID the module hands out.
//!
//! TDH.MNG.CREATE assigns an HKID, TDH.MNG.VPFLUSHDONE marks it flushed with its caches still to be
//! written back, TDH.PHYMEM.CACHE.WB writes them back and TDH.MNG.KEY.FREEID frees it: the KOT is
//! what those leaves, in three files, agree on. The whole table is locked by `kot_lock`.

use super::measure::Sha512Compress;
use super::mem::PhysMem;
use super::state::TdState;
use super::SwTdxModule;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Acquire;

/// KOT entry: bits 7:0 state, bit 8 "write-back pending".
pub(super) const KOT_FREE: u64 = 0;

pub(super) const KOT_ASSIGNED: u64 = 1;

pub(super) const KOT_FLUSHED: u64 = 2;

pub(super) const KOT_WB_PENDING: u64 = 1 << 8;

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    pub(super) fn kot_slot(&self, td: &TdState) -> Option<&AtomicU64> {
        let hkid = td.hkid.load(Acquire);
        self.kot
            .get(hkid.checked_sub(self.hkid_first as u64)? as usize)
    }
}
