// SPDX-License-Identifier: GPL-2.0-only
//! Write-protection for dirty logging (upstream `kvm_tdp_mmu_wrprot_slot()` /
//! `wrprot_gfn_range()` when a slot starts logging, and `kvm_tdp_mmu_clear_dirty_pt_masked()` /
//! `clear_dirty_pt_masked()` with `wrprot` when `KVM_GET_DIRTY_LOG` or `KVM_CLEAR_DIRTY_LOG`
//! re-arms the pages it reported).
//!
//! Dirty logging here works the way upstream's does on hosts without PML (every AMD host): a
//! logged page is mapped read-only until the guest writes it; the write faults, the fault maps
//! the page writable and the caller marks it in the slot's bitmap. This file decides which
//! entries of the **shared root** lose their writable bit; the transition layer makes the
//! change ([`TdpMmu::write_protect_spte`]) and flushes.
//!
//! Huge leaves: the log has 4 KiB granularity, so while a slot logs, faults map it at 4 KiB only
//! (the caller caps `max_level`, as upstream's `kvm_mmu_hugepage_adjust()` does for a slot with
//! dirty tracking). A huge leaf that is already there is **zapped** rather than write-protected
//! (upstream write-protects it and splits it on the next write fault): the guest refaults the
//! pages it uses, at 4 KiB, from the host memory that still holds their contents. Only the
//! shared root is walked: private (mirror) memory is never logged (`KVM_MEM_GUEST_MEMFD`
//! excludes `KVM_MEM_LOG_DIRTY_PAGES`, and TDs do not log).
//!
//! Both operations run under the exclusive side of the MMU lock and flush the TLBs of what they
//! changed before they return, so no vCPU keeps a writable (or, for a zapped huge leaf, any)
//! translation of a protected page once the lock is dropped.

use super::transition::Removal;
use super::{TdpMmu, ZapStats};
use crate::addr::Gfn;
use crate::env::MmuEnv;
use crate::error::MmuError;
use crate::external::ExternalPageTable;
use crate::lock::ExclusiveGuard;
use crate::page::RootKind;
use crate::spte::{PagingFormat, SpteKind};

/// What a write-protection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteProtectStats {
    /// Writable 4 KiB leaves made read-only.
    pub protected: usize,
    /// Huge leaves zapped (the pages refault at 4 KiB).
    pub huge_zapped: usize,
    /// TLB flushes issued (0 when nothing changed, else 1).
    pub tlb_flushes: usize,
}

/// The GFNs of memslot range `[lo, hi)` whose entries changed, for the one flush at the end.
#[derive(Clone, Copy)]
struct Dirtied {
    lo: u64,
    hi: u64,
}

impl Dirtied {
    const NONE: Dirtied = Dirtied {
        lo: u64::MAX,
        hi: 0,
    };

    fn add(&mut self, start: Gfn, pages: u64) {
        self.lo = self.lo.min(start.raw());
        self.hi = self.hi.max(start.raw() + pages);
    }
}

impl<F: PagingFormat, E: MmuEnv, X: ExternalPageTable> TdpMmu<F, E, X> {
    /// Write-protects `[start, end)` (memslot GFNs) in the shared root: every writable 4 KiB
    /// leaf becomes read-only, every huge leaf overlapping the range is zapped; one TLB flush
    /// if anything changed. What a slot needs when it starts logging (upstream
    /// `kvm_mmu_slot_remove_write_access(kvm, slot, PG_LEVEL_4K)`).
    ///
    /// Locking: exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::Bugged`]; [`MmuError::GfnOutOfRange`] if
    /// `start > end` or `end` is beyond the address width (nothing changed then).
    pub fn write_protect_range(
        &self,
        guard: &ExclusiveGuard<'_>,
        start: Gfn,
        end: Gfn,
    ) -> Result<WriteProtectStats, MmuError> {
        self.check_guard(guard)?;
        if start > end || end.raw() > self.config.gfn_limit() {
            return Err(MmuError::GfnOutOfRange);
        }
        let mut stats = WriteProtectStats::default();
        let mut dirtied = Dirtied::NONE;
        // HOOK(gmemfault): a whole range may yield (upstream wrprot_gen_range); bitmap words
        // below never do (upstream holds the lock across kvm_get_dirty_log_protect's loop).
        let r = self.protect_span(Some(guard), start, end, u64::MAX, &mut stats, &mut dirtied);
        self.flush_protected(dirtied, &mut stats);
        r.map(|()| stats)
    }

    /// Write-protects the GFNs named by `words`, each a base GFN and a mask whose bit `i` names
    /// `base + i` (upstream `kvm_arch_mmu_enable_log_dirty_pt_masked()` per bitmap word): a
    /// writable 4 KiB leaf of a named GFN becomes read-only, a huge leaf overlapping a word's
    /// named GFNs is zapped; one TLB flush at the end over what changed. `words` is consumed
    /// under the lock, so a caller can take the bitmap's words as it goes (upstream's `xchg`
    /// loop under `KVM_MMU_LOCK`).
    ///
    /// Locking: exclusive side of this MMU's lock.
    ///
    /// # Errors
    ///
    /// [`MmuError::WrongLock`], [`MmuError::Bugged`] (before `words` is touched);
    /// [`MmuError::GfnOutOfRange`] for a word whose named GFNs go beyond the address width (the
    /// words before it were applied and flushed, the rest of `words` is not consumed).
    pub fn write_protect_masked(
        &self,
        guard: &ExclusiveGuard<'_>,
        words: impl IntoIterator<Item = (Gfn, u64)>,
    ) -> Result<WriteProtectStats, MmuError> {
        self.check_guard(guard)?;
        let mut stats = WriteProtectStats::default();
        let mut dirtied = Dirtied::NONE;
        let mut r = Ok(());
        for (base, mask) in words {
            if mask == 0 {
                continue;
            }
            // The named GFNs span [first, last]: a huge leaf overlapping that span holds one of
            // its ends (a huge leaf is wider than a word), so it holds a named GFN.
            let first = base.raw().checked_add(u64::from(mask.trailing_zeros()));
            let end = base.raw().checked_add(64 - u64::from(mask.leading_zeros()));
            let (Some(first), Some(end)) = (first, end) else {
                r = Err(MmuError::GfnOutOfRange);
                break;
            };
            if end > self.config.gfn_limit() {
                r = Err(MmuError::GfnOutOfRange);
                break;
            }
            r = self.protect_span(
                None,
                Gfn::new(first),
                Gfn::new(end),
                mask,
                &mut stats,
                &mut dirtied,
            );
            if r.is_err() {
                break;
            }
        }
        self.flush_protected(dirtied, &mut stats);
        r.map(|()| stats)
    }

    /// One walk of the shared root over `[start, end)`: huge leaves are zapped, a writable
    /// 4 KiB leaf is write-protected if `mask` names it. `start` is the first GFN `mask` names
    /// (its bit `trailing_zeros`), so bit `i` names `start - trailing_zeros + i`; a whole range
    /// passes `u64::MAX`, which names every GFN.
    fn protect_span(
        &self,
        guard: Option<&ExclusiveGuard<'_>>,
        start: Gfn,
        end: Gfn,
        mask: u64,
        stats: &mut WriteProtectStats,
        dirtied: &mut Dirtied,
    ) -> Result<(), MmuError> {
        let root = self.root(RootKind::Shared)?;
        // The word's base: bit i of `mask` names base + i, and `start` is base + trailing zeros.
        let base = start.raw() - u64::from(mask.trailing_zeros());
        let offset = self.root_gfn(RootKind::Shared, Gfn::new(0)).raw();
        let (s, e) = (Gfn::new(offset + start.raw()), Gfn::new(offset + end.raw()));
        let mut it = self.iter(root.get(), s, e);
        let mut zs = ZapStats::default();
        let mut yielded_at = None;
        while it.valid() {
            if let Some(g) = guard {
                if self.cond_resched_walk(g, &mut it, &mut yielded_at, || {
                    self.flush_protected(core::mem::replace(dirtied, Dirtied::NONE), stats);
                }) {
                    continue;
                }
            }
            match it.kind() {
                SpteKind::Absent => it.next_sibling(),
                // Under the exclusive lock nobody can be in the middle of a change.
                SpteKind::Frozen => return Err(self.bug()),
                SpteKind::Table(_) => it.next(),
                SpteKind::Leaf(_) if it.level().is_huge() => {
                    let (gfn, pages) = (self.slot_gfn(it.gfn()), it.level().pages());
                    self.zap_spte(&mut it, Removal::Zap, &mut zs)?;
                    stats.huge_zapped += 1;
                    dirtied.add(gfn, pages);
                    it.next_sibling();
                }
                SpteKind::Leaf(_) => {
                    let gfn = self.slot_gfn(it.gfn());
                    let bit = (gfn.raw() - base) % 64;
                    if mask & (1 << bit) != 0 && self.write_protect_spte(&mut it)? {
                        stats.protected += 1;
                        dirtied.add(gfn, 1);
                    }
                    it.next_sibling();
                }
            }
        }
        it.check()
    }

    /// The one flush of a pass, over the memslot GFNs whose entries changed.
    fn flush_protected(&self, dirtied: Dirtied, stats: &mut WriteProtectStats) {
        if dirtied.lo < dirtied.hi {
            let start = self.root_gfn(RootKind::Shared, Gfn::new(dirtied.lo));
            self.flush_shared_tlbs(start, dirtied.hi - dirtied.lo);
            stats.tlb_flushes += 1;
        }
    }
}
