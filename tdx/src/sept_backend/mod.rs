// SPDX-License-Identifier: GPL-2.0-only
//! The S-EPT backend: the MMU's [`ExternalPageTable`](mmu::external::ExternalPageTable) hooks
//! as SEAMCALL sequences (upstream
//! `tdx_sept_{link_private_spt,set_private_spte,remove_private_spte,free_private_spt}` and
//! `tdx_track`).
//!
//! | hook | while the TD lives | at teardown (keys freed) |
//! |---|---|---|
//! | `link_spt` | TDH.MEM.SEPT.ADD | — |
//! | `set_spte` | TDH.MEM.PAGE.AUG, or PAGE.ADD (+ MR.EXTEND ×16) when populating | — |
//! | `block_spte` | TDH.MEM.RANGE.BLOCK | — |
//! | `flush` | TDH.MEM.TRACK + one kick of every vCPU | — |
//! | `split_spte` | TDH.MEM.PAGE.DEMOTE with the new S-EPT page (after `block_spte` and `flush`) | — |
//! | `remove_spte` | TDH.MEM.PAGE.REMOVE + TDH.PHYMEM.PAGE.WBINVD per 4K | TDH.PHYMEM.PAGE.RECLAIM |
//! | `free_spt` | TDH.MEM.SEPT.REMOVE + TDH.PHYMEM.PAGE.WBINVD | TDH.PHYMEM.PAGE.RECLAIM |
//!
//! The MMU core blocks a whole zap range, flushes once and only then removes, so a range zap
//! costs one TRACK and one kick instead of one per page (upstream). S-EPT tables whose whole span
//! a zap covers go back to the host with SEPT.REMOVE in that zap (upstream keeps them until
//! teardown); a table a partial zap leaves empty stays until a zap covers it or teardown.
//! At teardown the cache was written back for the whole HKID by TDH.PHYMEM.CACHE.WB, so every
//! page comes back with a single RECLAIM (upstream spends BLOCK + TRACK + kick + REMOVE + WBINVD).
//!
//! Busy answers are retried a bounded number of times, with the vCPUs kicked when that is the fix
//! (a vCPU still inside from the previous epoch); then reported as [`ExternalError::Busy`].
//! Everything else is [`ExternalError::Fatal`]: the MMU marks the VM bugged.
//!
//! Files: the hooks ([`hooks`]), what the backend needs from the host ([`TdHost`]), and the
//! HKID release that turns the hooks from removing to reclaiming pages ([`hkid_release`]); this
//! file holds the backend's state and the retry policy every hook shares.

mod hkid_release;
mod hooks;
mod host;

pub use hkid_release::{cache_wb, release_hkid, retry_busy, CONTROL_BUSY_RETRIES};
pub use host::TdHost;

use crate::abi::{leaf, status};
use crate::error::TdxError;
use crate::seamcall::Seamcall;
use crate::wrappers::{Tdr, Tdx};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mmu::external::{ExternalError, PageRelease};
use mmu::{Gfn, Gpa, Hpa, Pfn};

/// How often a busy SEAMCALL is retried before the hook reports busy.
pub const BUSY_RETRIES: u32 = 16;

/// 4 KiB pages in a PAMT page of size `size` ([`crate::abi::page_size`]: 0 = 4K, 1 = 2M, 2 = 1G).
const fn page_size_pages(size: u8) -> u64 {
    match size {
        1 => 512,
        2 => 512 * 512,
        _ => 1,
    }
}

/// The HKID bits position in a physical address passed to PHYMEM.PAGE.WBINVD, on the software
/// TDX module (its physical-address width).
pub const HKID_SHIFT: u32 = crate::swmod::pamt::MAX_PA_BITS;

/// A pending PAGE.ADD for one GFN (build-time population).
struct Populate {
    gfn: AtomicU64,
    source: AtomicU64,
    measure: AtomicBool,
}

/// Counters of what the backend did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Kicks of all vCPUs.
    pub kicks: u64,
    /// Busy answers retried.
    pub busy_retries: u64,
    /// Pages the TDX module would not give back (leaked on purpose).
    pub leaked: u64,
    /// The status of the last failure reported as fatal (0: none), for the "VM bugged" report.
    pub last_fatal_status: u64,
}

/// The S-EPT backend of one TD.
pub struct SeptBackend<S: Seamcall, K: TdHost> {
    tdx: Tdx<S>,
    tdr: Tdr,
    hkid: u16,
    kicker: K,
    teardown: AtomicBool,
    populate: Populate,
    kicks: AtomicU64,
    busy_retries: AtomicU64,
    leaked: AtomicU64,
    last_fatal: AtomicU64,
}

const NO_GFN: u64 = u64::MAX;

fn gpa(gfn: Gfn) -> Gpa {
    gfn.gpa()
}

impl<S: Seamcall, K: TdHost> SeptBackend<S, K> {
    /// The backend of the TD whose TDR is `tdr` and HKID `hkid`.
    pub fn new(tdx: Tdx<S>, tdr: Tdr, hkid: u16, kicker: K) -> Self {
        SeptBackend {
            tdx,
            tdr,
            hkid,
            kicker,
            teardown: AtomicBool::new(false),
            populate: Populate {
                gfn: AtomicU64::new(NO_GFN),
                source: AtomicU64::new(0),
                measure: AtomicBool::new(false),
            },
            kicks: AtomicU64::new(0),
            busy_retries: AtomicU64::new(0),
            leaked: AtomicU64::new(0),
            last_fatal: AtomicU64::new(0),
        }
    }

    /// The wrappers.
    pub fn tdx(&self) -> &Tdx<S> {
        &self.tdx
    }

    /// The kicker.
    pub fn kicker(&self) -> &K {
        &self.kicker
    }

    /// The TD's TDR.
    pub fn tdr(&self) -> Tdr {
        self.tdr
    }

    /// What the backend did so far.
    pub fn stats(&self) -> BackendStats {
        BackendStats {
            kicks: self.kicks.load(Ordering::Relaxed),
            busy_retries: self.busy_retries.load(Ordering::Relaxed),
            leaked: self.leaked.load(Ordering::Relaxed),
            last_fatal_status: self.last_fatal.load(Ordering::Relaxed),
        }
    }

    /// Arms build-time population: the next `set_spte` for `gfn` adds the page with
    /// TDH.MEM.PAGE.ADD copying `source` (and measures it with MR.EXTEND if `measure`) instead
    /// of PAGE.AUG. Upstream `KVM_TDX_INIT_MEM_REGION`.
    pub fn arm_populate(&self, gfn: Gfn, source: Hpa, measure: bool) {
        self.populate.source.store(source.raw(), Ordering::Relaxed);
        self.populate.measure.store(measure, Ordering::Relaxed);
        self.populate.gfn.store(gfn.raw(), Ordering::Release);
    }

    /// Cancels an armed population that did not happen (the fault found the GFN mapped).
    /// Returns whether one was armed.
    pub fn disarm_populate(&self) -> bool {
        self.populate.gfn.swap(NO_GFN, Ordering::AcqRel) != NO_GFN
    }

    fn kick(&self) {
        self.kicks.fetch_add(1, Ordering::Relaxed);
        self.kicker.kick_all();
    }

    /// Runs `f` until it stops answering busy (bounded), kicking vCPUs for the statuses a kick
    /// cures.
    fn retry<T>(&self, mut f: impl FnMut() -> Result<T, TdxError>) -> Result<T, ExternalError> {
        let mut tries = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e)
                    if tries < BUSY_RETRIES
                        && (e.is_busy() || e.class() == status::TLB_TRACKING_NOT_DONE) =>
                {
                    tries += 1;
                    self.busy_retries.fetch_add(1, Ordering::Relaxed);
                    if e.class() == status::PREVIOUS_TLB_EPOCH_BUSY
                        || e.class() == status::TLB_TRACKING_NOT_DONE
                    {
                        self.kick();
                    }
                }
                Err(e) if e.is_busy() || e.class() == status::TLB_TRACKING_NOT_DONE => {
                    return Err(ExternalError::Busy)
                }
                Err(e) => {
                    self.last_fatal.store(e.status, Ordering::Relaxed);
                    return Err(ExternalError::Fatal);
                }
            }
        }
    }

    /// Writes back and invalidates the cache lines of a page the TD used, with its HKID.
    fn wbinvd(&self, pfn: Pfn, pages: u64) -> Result<(), ExternalError> {
        for i in 0..pages {
            let pa = pfn.add(i).hpa().raw() | (self.hkid as u64) << self.kicker.hkid_shift();
            self.retry(|| self.tdx.phymem_page_wbinvd(Hpa::new(pa)))?;
        }
        Ok(())
    }

    /// Gives a page of a torn-down TD back to the host: one RECLAIM. `Leaked` if the module
    /// refuses (the page must never be reused).
    fn reclaim(&self, pfn: Pfn) -> PageRelease {
        match self.retry(|| self.tdx.phymem_page_reclaim(pfn.hpa())) {
            Ok(r) => {
                self.kicker.reset_pages(pfn, page_size_pages(r.size));
                PageRelease::Returned
            }
            Err(_) => {
                self.leaked.fetch_add(1, Ordering::Relaxed);
                PageRelease::Leaked
            }
        }
    }

    fn populate_for(&self, gfn: Gfn) -> Option<(Hpa, bool)> {
        if self.populate.gfn.load(Ordering::Acquire) != gfn.raw() {
            return None;
        }
        if self
            .populate
            .gfn
            .compare_exchange(gfn.raw(), NO_GFN, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        Some((
            Hpa::new(self.populate.source.load(Ordering::Relaxed)),
            self.populate.measure.load(Ordering::Relaxed),
        ))
    }
}

/// The leaves the backend issues, for reports.
pub const BACKEND_LEAVES: [u16; 12] = [
    leaf::MEM_SEPT_ADD,
    leaf::MEM_PAGE_AUG,
    leaf::MEM_PAGE_ADD,
    leaf::MR_EXTEND,
    leaf::MEM_RANGE_BLOCK,
    leaf::MEM_TRACK,
    leaf::MEM_PAGE_REMOVE,
    leaf::MEM_SEPT_REMOVE,
    leaf::PHYMEM_PAGE_WBINVD,
    leaf::PHYMEM_PAGE_RECLAIM,
    leaf::MEM_RANGE_UNBLOCK,
    leaf::MEM_PAGE_DEMOTE,
];
