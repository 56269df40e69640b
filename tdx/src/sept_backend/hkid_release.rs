// SPDX-License-Identifier: GPL-2.0-only
//! Giving a TD's HKID back to the TDX module, and the retry policy of the control-path leaves
//! (TD creation and teardown) that go with it.
//!
//! The sequence (VP.FLUSH of each vCPU, VPFLUSHDONE, CACHE.WB on every package, KEY.FREEID) is
//! what separates a live TD, whose pages leave through the S-EPT hooks with REMOVE + WBINVD, from a
//! torn-down one, whose pages come back with one RECLAIM each: the backend records which side it
//! is on ([`SeptBackend::is_torn_down`]).

use super::{SeptBackend, TdHost};
use crate::abi::status;
use crate::error::TdxError;
use crate::seamcall::Seamcall;
use crate::wrappers::{Tdr, Tdvpr, Tdx};
use core::sync::atomic::Ordering;
use mmu::external::PageRelease;
use mmu::Hpa;

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

impl<S: Seamcall, K: TdHost> SeptBackend<S, K> {
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
