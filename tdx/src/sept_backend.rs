// SPDX-License-Identifier: GPL-2.0-only
//! The S-EPT backend: the MMU's [`ExternalPageTable`] hooks as SEAMCALL sequences (upstream
//! `tdx_sept_{link_private_spt,set_private_spte,remove_private_spte,free_private_spt}` and
//! `tdx_track`).
//!
//! | hook | while the TD lives | at teardown (keys freed) |
//! |---|---|---|
//! | `link_spt` | TDH.MEM.SEPT.ADD | — |
//! | `set_spte` | TDH.MEM.PAGE.AUG, or PAGE.ADD (+ MR.EXTEND ×16) when populating | — |
//! | `block_spte` | TDH.MEM.RANGE.BLOCK | — |
//! | `flush` | TDH.MEM.TRACK + one kick of every vCPU | — |
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

use crate::abi::{leaf, status, SeptLevel};
use crate::error::TdxError;
use crate::seamcall::Seamcall;
use crate::wrappers::{Tdr, Tdvpr, Tdx};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mmu::external::{ExternalError, ExternalPageTable, PageRelease};
use mmu::page::{ExternalSpt, SptRelease};
use mmu::{Gfn, Gpa, Hpa, Level, Pfn};

/// How often a busy SEAMCALL is retried before the hook reports busy.
pub const BUSY_RETRIES: u32 = 16;

/// How often a control-path SEAMCALL (TD creation and teardown) is retried while the module
/// answers busy. Those leaves contend on module-wide locks (the KOT) with other TDs being created
/// or destroyed on other CPUs; the contention is short, so spinning is enough.
pub const CONTROL_BUSY_RETRIES: u32 = 100_000;

/// Runs a control-path SEAMCALL until it stops answering busy (bounded).
///
/// # Errors
///
/// The last error: the first non-busy one, or busy after [`CONTROL_BUSY_RETRIES`] tries.
pub fn retry_busy<T>(mut f: impl FnMut() -> Result<T, TdxError>) -> Result<T, TdxError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.is_busy() && tries < CONTROL_BUSY_RETRIES => {
                tries += 1;
                core::hint::spin_loop();
            }
            r => return r,
        }
    }
}

/// Fresh starts of TDH.PHYMEM.CACHE.WB after a resume found its interrupted pass restarted.
const CACHE_WB_RESTARTS: u32 = 8;

/// TDH.PHYMEM.CACHE.WB to completion: resumed after an interruption, retried while busy.
///
/// The resume point is per package, not per caller: if someone else started a fresh write-back
/// meanwhile, the resume fails with `TDX_WBCACHE_RESUME_ERROR` and the pass starts over (a
/// bounded number of times). Hosts serialise HKID release ([`TdHost::with_hkid_lock`]) so that
/// does not happen between TDs of this host.
///
/// # Errors
///
/// The first error that is neither an interruption nor (bounded) contention.
pub fn cache_wb<S: Seamcall>(tdx: &Tdx<S>) -> Result<(), TdxError> {
    let mut resume = false;
    let mut tries = 0;
    let mut restarts = 0;
    loop {
        match tdx.phymem_cache_wb(resume) {
            Ok(_) => return Ok(()),
            Err(e) if e.class() == status::INTERRUPTED_RESUMABLE => resume = true,
            Err(e) if e.class() == status::WBCACHE_RESUME_ERROR && restarts < CACHE_WB_RESTARTS => {
                restarts += 1;
                resume = false;
            }
            Err(e) if e.is_busy() && tries < CONTROL_BUSY_RETRIES => {
                tries += 1;
                core::hint::spin_loop();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Gives a TD's HKID back to the TDX module: TDH.VP.FLUSH of each vCPU (one never initialised
/// or already flushed is fine), then, under the host's HKID lock, TDH.MNG.VPFLUSHDONE,
/// TDH.PHYMEM.CACHE.WB on every package and TDH.MNG.KEY.FREEID. Afterwards every page of the TD
/// comes back with one RECLAIM.
///
/// # Errors
///
/// The first failing leaf's error: the HKID and the TD's pages stay with the module.
pub fn release_hkid<S: Seamcall, H: TdHost>(
    tdx: &Tdx<S>,
    host: &H,
    tdr: Tdr,
    vcpus: &[Tdvpr],
) -> Result<(), TdxError> {
    for &v in vcpus {
        match retry_busy(|| tdx.vp_flush(v)) {
            Ok(()) => {}
            Err(e) if e.class() == status::VCPU_NOT_ASSOCIATED => {}
            Err(e) => return Err(e),
        }
    }
    host.with_hkid_lock(&mut || {
        retry_busy(|| tdx.mng_vpflushdone(tdr))?;
        host.on_each_package(&|| cache_wb(tdx))?;
        retry_busy(|| tdx.mng_key_freeid(tdr))
    })
}

/// What the backend needs from the host's CPUs besides SEAMCALLs.
pub trait TdHost: Sync {
    /// Kicks every vCPU out of the TD and returns once none is inside from before the call
    /// (KVM's `KVM_REQ_OUTSIDE_GUEST_MODE` to all).
    fn kick_all(&self);

    /// Runs `f` on one CPU of every CPU package, in turn, stopping at the first error.
    ///
    /// TDH.MNG.KEY.CONFIG and TDH.PHYMEM.CACHE.WB act on the package they run on, so a
    /// multi-package host must run them on each. The default suits a host with one package
    /// (and the software TDX module, which models one): `f` once, here.
    ///
    /// # Errors
    ///
    /// The first error `f` returns.
    fn on_each_package(
        &self,
        f: &(dyn Fn() -> Result<(), TdxError> + Sync),
    ) -> Result<(), TdxError> {
        f()
    }

    /// `pages` pages from `pfn` left the TD for good (removed and written back, or reclaimed)
    /// and go back to the host. On CPUs where a partial write to TD-private memory poisons it
    /// (Linux `X86_BUG_TDX_PW_MCE`), the host must reset them with MOVDIR64B before any reuse.
    /// The default does nothing: the software module poisons nothing.
    fn reset_pages(&self, pfn: Pfn, pages: u64) {
        let _ = (pfn, pages);
    }

    /// Where the HKID goes in a physical address (PHYMEM.PAGE.WBINVD's operand): on a real host
    /// the CPU's physical-address width once the KeyID bits are taken out of it (Linux
    /// `boot_cpu_data.x86_phys_bits`); the default is the software module's [`HKID_SHIFT`].
    fn hkid_shift(&self) -> u32 {
        HKID_SHIFT
    }

    /// Runs `f` — TDH.MNG.CREATE, or an HKID release (VPFLUSHDONE, CACHE.WB, KEY.FREEID) — with
    /// every other such sequence of the host kept out. CACHE.WB's resume point is per package
    /// and KEY.FREEID needs every package written back since VPFLUSHDONE, so two TDs releasing
    /// at once would spoil each other's pass (Linux KVM's `tdx_lock`). The default runs `f`
    /// as is: for single-threaded hosts and tests.
    ///
    /// # Errors
    ///
    /// What `f` returns.
    fn with_hkid_lock(&self, f: &mut dyn FnMut() -> Result<(), TdxError>) -> Result<(), TdxError> {
        f()
    }
}

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

    /// Releases the TD's HKID: flushes every vCPU (VP.FLUSH), VPFLUSHDONE, writes the caches
    /// back (CACHE.WB), frees the key (KEY.FREEID). From then on the hooks reclaim pages instead
    /// of removing them (upstream `tdx_mmu_release_hkid`).
    ///
    /// # Errors
    ///
    /// The first failing leaf's error; the backend stays in runtime mode then.
    pub fn release_hkid(&self, vcpus: &[Tdvpr]) -> Result<(), TdxError> {
        release_hkid(&self.tdx, &self.kicker, self.tdr, vcpus)?;
        self.teardown.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the HKID was released (pages are reclaimed from now on).
    pub fn is_torn_down(&self) -> bool {
        self.teardown.load(Ordering::Acquire)
    }

    /// After the MMU's teardown: reclaims the TD's control pages (TDCX, TDVPR and vCPU TDCX
    /// pages, then the TDR last). Returns how many were leaked.
    pub fn reclaim_control_pages(&self, pages: &[Hpa]) -> u64 {
        let mut leaked = 0;
        for &p in pages {
            if self.reclaim(p.pfn()) == PageRelease::Leaked {
                leaked += 1;
            }
        }
        if self.reclaim(self.tdr.hpa().pfn()) == PageRelease::Leaked {
            leaked += 1;
        }
        leaked
    }
}

impl<S: Seamcall, K: TdHost> ExternalPageTable for SeptBackend<S, K> {
    fn link_spt(&self, gfn: Gfn, level: Level, spt: &ExternalSpt) -> Result<(), ExternalError> {
        let page = spt.pfn().hpa();
        self.retry(|| {
            self.tdx
                .mem_sept_add(self.tdr, gpa(gfn), SeptLevel::from_mmu(level), page)
        })
    }

    fn set_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<(), ExternalError> {
        let sl = SeptLevel::from_mmu(level);
        if sl > SeptLevel::L2M {
            // TDH.MEM.PAGE.AUG maps 4K and 2M pages only.
            return Err(ExternalError::Fatal);
        }
        if let Some((source, measure)) = self.populate_for(gfn) {
            if sl != SeptLevel::L4K {
                return Err(ExternalError::Fatal);
            }
            self.retry(|| self.tdx.mem_page_add(self.tdr, gpa(gfn), pfn.hpa(), source))?;
            if measure {
                for chunk in 0..16u64 {
                    let g = Gpa::new(gpa(gfn).raw() + chunk * 256);
                    self.retry(|| self.tdx.mr_extend(self.tdr, g))?;
                }
            }
            return Ok(());
        }
        self.retry(|| self.tdx.mem_page_aug(self.tdr, gpa(gfn), sl, pfn.hpa()))
    }

    fn block_spte(&self, gfn: Gfn, level: Level, _is_leaf: bool) -> Result<(), ExternalError> {
        if self.is_torn_down() {
            return Ok(());
        }
        self.retry(|| {
            self.tdx
                .mem_range_block(self.tdr, gpa(gfn), SeptLevel::from_mmu(level))
        })
        .map(|_| ())
    }

    fn flush(&self) -> Result<(), ExternalError> {
        if self.is_torn_down() {
            return Ok(());
        }
        self.retry(|| self.tdx.mem_track(self.tdr))?;
        // vCPUs that entered before the TRACK must leave before the removals.
        self.kick();
        Ok(())
    }

    fn remove_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<PageRelease, ExternalError> {
        let sl = SeptLevel::from_mmu(level);
        if self.is_torn_down() {
            return Ok(self.reclaim(pfn));
        }
        let removed = self.retry(|| self.tdx.mem_page_remove(self.tdr, gpa(gfn), sl))?;
        self.wbinvd(removed.pfn(), sl.pages())?;
        self.kicker.reset_pages(removed.pfn(), sl.pages());
        Ok(PageRelease::Returned)
    }

    fn free_spt(
        &self,
        gfn: Gfn,
        level: Level,
        spt: &ExternalSpt,
    ) -> Result<SptRelease, ExternalError> {
        let pfn = spt.pfn();
        if self.is_torn_down() {
            return Ok(match self.reclaim(pfn) {
                PageRelease::Returned => SptRelease::Returned,
                PageRelease::Leaked => SptRelease::Leaked,
            });
        }
        self.retry(|| {
            self.tdx
                .mem_sept_remove(self.tdr, gpa(gfn), SeptLevel::from_mmu(level))
        })?;
        self.wbinvd(pfn, 1)?;
        self.kicker.reset_pages(pfn, 1);
        Ok(SptRelease::Returned)
    }
}

/// The leaves the backend issues, for reports.
pub const BACKEND_LEAVES: [u16; 11] = [
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
];
