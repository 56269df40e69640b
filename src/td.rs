// SPDX-License-Identifier: GPL-2.0-only
//! A TD's side of a VM: its control pages (TDR, TDCX) in the TDX module, its HKID and its MMU
//! (shared + mirror roots over the S-EPT backend), created at `KVM_CREATE_VM` and given back when
//! the last reference to the VM goes ([`crate::vm::Vm`]). Teardown returns every page: MMU
//! tables, external SPTs, headers, control pages.

use crate::backend::{self, TdxRef};
use crate::env::{alloc_frame, free_frame, KernelEnv};
use crate::stats;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::env::Frame;
use mmu::spte::Ept;
use mmu::tdp::{MmuConfig, TdpMmu};
use mmu::{GpaWidth, Level};
use tdx::abi::status;
use tdx::abi::td_params::{eptp_controls, TdParams, XFAM_X87_SSE};
use tdx::abi::MAX_TDCS_PAGES;
use tdx::seamcall::Counted;
use tdx::sept_backend::{release_hkid, retry_busy, SeptBackend, TdHost};
use tdx::{Tdcx, Tdr, Tdvpr, Tdx, TdxError};

/// Most vCPUs a TD has here (only the self test creates any: the run path comes later).
const MAX_TD_VCPUS: usize = 1;

/// Most pages per vCPU (TDVPR included) a TD's vCPU slot holds.
const MAX_TDVPS_PAGES: usize = 16;
/// Capacity of the TD objects: (TDCX pages per TD, pages per vCPU); the backend refuses a
/// TDX module that needs more.
pub(crate) const MAX_TD_PAGES: (usize, usize) = (MAX_TDCS_PAGES as usize, MAX_TDVPS_PAGES);

/// The host side of a TD's S-EPT backend: kicks, per-package calls, page resets.
///
/// On the software TDX module a vCPU is "inside" between its emulated entry and exit, so a kick
/// is an emulated exit of each. On the real module no vCPU has entered yet (the run path is
/// not there): nothing to kick.
pub(crate) struct Host {
    backend: TdxRef,
    vcpus: [AtomicU64; MAX_TD_VCPUS],
}

impl TdHost for Host {
    fn kick_all(&self) {
        let Some(sw) = self.backend.sw() else { return };
        for v in &self.vcpus {
            let pfn = v.load(Ordering::Acquire);
            if pfn != 0 {
                sw.module().vcpu_exit(mmu::Pfn::new(pfn));
            }
        }
    }

    fn on_each_package(
        &self,
        f: &(dyn Fn() -> Result<(), TdxError> + Sync),
    ) -> Result<(), TdxError> {
        self.backend.on_each_package(f)
    }

    fn reset_pages(&self, pfn: mmu::Pfn, pages: u64) {
        self.backend.reset_pages(pfn, pages);
    }

    fn hkid_shift(&self) -> u32 {
        self.backend.hkid_shift()
    }

    fn with_hkid_lock(&self, f: &mut dyn FnMut() -> Result<(), TdxError>) -> Result<(), TdxError> {
        backend::hkid_locked(f)
    }
}

impl Host {
    /// The host side for `backend`, with no vCPU to kick yet.
    fn new(backend: TdxRef) -> Self {
        Host {
            backend,
            vcpus: [const { AtomicU64::new(0) }; MAX_TD_VCPUS],
        }
    }
}

/// The S-EPT backend of a TD's MMU; its SEAMCALLs are counted per leaf for the VM's stats fd.
pub(crate) type TdBackend = SeptBackend<Counted<TdxRef>, Host>;

/// A TD's MMU.
pub(crate) type TdMmu = TdpMmu<Ept, KernelEnv, TdBackend>;

/// A TD's pages in the TDX module.
struct TdControl {
    tdx: Tdx<TdxRef>,
    backend: TdxRef,
    tdr: Option<Frame>,
    /// TDCX pages: the first `nr_tdcx` slots are used.
    tdcx: [Option<Frame>; MAX_TDCS_PAGES as usize],
    nr_tdcx: usize,
    /// The vCPU's TDVPR and its TDCX pages (TDVPR first): the first `nr_tdvps` slots.
    vcpu: [Option<Frame>; MAX_TDVPS_PAGES],
    nr_tdvps: usize,
    hkid: u16,
    /// Whether TDH.MNG.CREATE succeeded (the TDX module knows this TD).
    created: bool,
    /// Whether the HKID was released (KEY.FREEID): pages can be reclaimed.
    released: bool,
    /// The HKID turned out to be taken in the TDX module: never hand it out again.
    hkid_lost: bool,
}

impl TdControl {
    fn tdr(&self) -> Option<Tdr> {
        self.tdr.as_ref().map(|f| Tdr::new(f.pfn().hpa()))
    }

    /// MNG.CREATE, KEY.CONFIG and the TDCX pages (upstream `__tdx_td_init`).
    fn create(b: TdxRef) -> Result<Self> {
        let hkid = backend::alloc_hkid().ok_or(EBUSY)?;
        let (nr_tdcx, nr_tdvps) = backend::td_sizes();
        let mut td = TdControl {
            tdx: Tdx::new(b),
            backend: b,
            tdr: None,
            tdcx: [const { None }; MAX_TDCS_PAGES as usize],
            nr_tdcx,
            vcpu: [const { None }; MAX_TDVPS_PAGES],
            nr_tdvps,
            hkid,
            created: false,
            released: false,
            hkid_lost: false,
        };
        if let TdxRef::Hw(_) = b {
            // Counted first, then every package checked to have an online CPU: from here on no
            // package can lose its last CPU (the offline callback sees the count), so KEY.CONFIG
            // now and CACHE.WB at release reach every package.
            crate::hw::td_created();
            crate::hw::packages_online()?;
        }
        td.tdr = Some(alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?);
        let tdr = td.tdr().ok_or(ENOMEM)?;
        let created = backend::hkid_locked(|| retry_busy(|| td.tdx.mng_create(tdr, hkid)));
        if let Err(e) = created {
            if e.class() == status::HKID_NOT_FREE {
                // The TDX module still holds this HKID (a previous load of this module leaked
                // it): keep it out of the allocator from now on, or every creation retries it.
                pr_err!(
                    "HKID {} is still in use in the TDX module: not used again\n",
                    hkid
                );
                td.hkid_lost = true;
                return Err(EBUSY);
            }
            pr_err!("TDH.MNG.CREATE: {:?}\n", e);
            return Err(EIO);
        }
        td.created = true;
        // The TD's key goes into every package's memory controller.
        let tdx = &td.tdx;
        td.backend
            .on_each_package(&|| retry_busy(|| tdx.mng_key_config(tdr)).map(|_| ()))
            .map_err(|e| {
                pr_err!("TDH.MNG.KEY.CONFIG: {:?}\n", e);
                EIO
            })?;
        for i in 0..td.nr_tdcx.min(td.tdcx.len()) {
            let page = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
            let hpa = page.pfn().hpa();
            td.tdcx[i] = Some(page);
            retry_busy(|| td.tdx.mng_addcx(tdr, Tdcx::new(hpa))).map_err(|_| EIO)?;
        }
        Ok(td)
    }

    fn tdvpr(&self) -> Option<Tdvpr> {
        self.vcpu[0].as_ref().map(|f| Tdvpr::new(f.pfn().hpa()))
    }

    /// MNG.INIT with default TD_PARAMS (4-level S-EPT, one vCPU), one vCPU (VP.CREATE,
    /// VP.ADDCX, VP.INIT) and MR.FINALIZE: a runnable TD. Only the self test needs this today;
    /// the TDX VM ioctls (`KVM_TDX_INIT_VM`, ...) will do it with the VMM's parameters.
    fn make_runnable(&mut self) -> Result<Tdvpr> {
        if self.backend.sw().is_none() {
            // These TD_PARAMS are the software module's minimum; the real module needs the
            // VMM's CPUID configuration (KVM_TDX_INIT_VM, later).
            return Err(ENODEV);
        }
        let tdr = self.tdr().ok_or(EINVAL)?;
        let params = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
        // No attributes, x87 and SSE, write-back 4-level S-EPT (GPAW 48), TSC 2.5 GHz.
        TdParams {
            xfam: XFAM_X87_SSE,
            max_vcpus: MAX_TD_VCPUS as u16,
            eptp_controls: eptp_controls(4),
            tsc_frequency: 100,
            ..TdParams::ZERO
        }
        .write_to(&params);
        let r = retry_busy(|| self.tdx.mng_init(tdr, params.pfn().hpa()));
        free_frame(params, stats::Kind::TdControl);
        r.map_err(|e| {
            pr_err!("TDH.MNG.INIT: {:?}\n", e);
            EIO
        })?;
        for i in 0..self.nr_tdvps.min(self.vcpu.len()) {
            let page = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
            let hpa = page.pfn().hpa();
            self.vcpu[i] = Some(page);
            let tdvpr = self.tdvpr().ok_or(EINVAL)?;
            let r = if i == 0 {
                retry_busy(|| self.tdx.vp_create(tdr, tdvpr))
            } else {
                retry_busy(|| self.tdx.vp_addcx(tdvpr, Tdcx::new(hpa)))
            };
            r.map_err(|_| EIO)?;
        }
        let tdvpr = self.tdvpr().ok_or(EINVAL)?;
        retry_busy(|| self.tdx.vp_init(tdvpr, 0)).map_err(|_| EIO)?;
        retry_busy(|| self.tdx.mr_finalize(tdr)).map_err(|_| EIO)?;
        Ok(tdvpr)
    }

    /// VP.FLUSH, VPFLUSHDONE, CACHE.WB, KEY.FREEID (when the MMU is gone or never existed).
    fn release_hkid(&mut self) {
        let Some(tdr) = self.tdr() else { return };
        if !self.created || self.released {
            return;
        }
        // No MMU holds the vCPUs' kick slots here: a host without vCPUs to kick does.
        let host = Host::new(self.backend);
        let vcpus = self.tdvpr();
        match release_hkid(&self.tdx, &host, tdr, vcpus.as_slice()) {
            Ok(()) => self.released = true,
            Err(e) => pr_err!(
                "releasing HKID {}: {:?}: its pages stay with the TDX module\n",
                self.hkid,
                e
            ),
        }
    }
}

impl Drop for TdControl {
    fn drop(&mut self) {
        self.release_hkid();
        let global_keyid = self.backend.global_keyid();
        let reclaim = |tdx: &Tdx<TdxRef>, f: Frame, released: bool, created: bool, is_tdr: bool| {
            // A page the module still owns must never go back to the allocator. A page the
            // module never took (creation stopped early) is NDA: RECLAIM refuses it, it is ours.
            let pfn = f.pfn();
            let back = !created
                || (released
                    && match retry_busy(|| tdx.phymem_page_reclaim(pfn.hpa())) {
                        Ok(_) => {
                            // The TDR was written with the module's global KeyID: its cache
                            // lines go before the page is reused (Linux's wbinvd_tdr).
                            let flushed = match (is_tdr, global_keyid) {
                                (true, Some(k)) => {
                                    let pa = pfn.hpa().raw()
                                        | u64::from(k) << tdx.backend().hkid_shift();
                                    retry_busy(|| tdx.phymem_page_wbinvd(mmu::Hpa::new(pa))).is_ok()
                                }
                                _ => true,
                            };
                            if flushed {
                                tdx.backend().reset_pages(pfn, 1);
                            }
                            flushed
                        }
                        Err(e) => e.class() == status::PAGE_METADATA_INCORRECT,
                    });
            if back {
                free_frame(f, stats::Kind::TdControl);
            } else {
                pr_err!(
                    "TD page {:#x} leaked: the TDX module did not give it back\n",
                    pfn.raw()
                );
            }
        };
        for slot in self.vcpu.iter_mut().rev() {
            if let Some(f) = slot.take() {
                reclaim(&self.tdx, f, self.released, self.created, false);
            }
        }
        for slot in self.tdcx.iter_mut().rev() {
            if let Some(f) = slot.take() {
                reclaim(&self.tdx, f, self.released, self.created, false);
            }
        }
        if let Some(f) = self.tdr.take() {
            reclaim(&self.tdx, f, self.released, self.created, true);
        }
        if (self.released || !self.created) && !self.hkid_lost {
            backend::free_hkid(self.hkid);
        }
        if let TdxRef::Hw(_) = self.backend {
            crate::hw::td_destroyed();
        }
    }
}

/// A TD: its MMU (shared + mirror roots, S-EPT backend) and its control structures.
pub(crate) struct TdVm {
    mmu: Option<TdMmu>,
    control: TdControl,
}

impl TdVm {
    /// Creates a TD on the TDX backend `b`: MNG.CREATE, KEY.CONFIG, the TDCX pages, the MMU.
    pub(crate) fn new(b: TdxRef) -> Result<Self> {
        let control = TdControl::create(b)?;
        let tdr = control.tdr().ok_or(ENOMEM)?;
        let backend = SeptBackend::new(Tdx::new(Counted::new(b)), tdr, control.hkid, Host::new(b));
        let mut vm = TdVm { mmu: None, control };
        let env = KernelEnv::new().ok_or(ENOMEM)?;
        // TDH.MEM.PAGE.AUG maps 4K and 2M pages: cap the mirror's leaves at 2M.
        let cfg = MmuConfig {
            max_level: Level::L2M,
            ..MmuConfig::td(GpaWidth::Bits48)
        };
        vm.mmu = Some(TdpMmu::new(env, backend, cfg).map_err(|_| ENOMEM)?);
        Ok(vm)
    }

    /// The TD's MMU (there from creation until teardown).
    pub(crate) fn mmu(&self) -> Option<&TdMmu> {
        self.mmu.as_ref()
    }

    /// The TD's TDR page.
    pub(crate) fn tdr_pfn(&self) -> Option<mmu::Pfn> {
        self.control.tdr().map(|t| t.hpa().pfn())
    }

    /// Initialises and finalises the TD with one vCPU, which kicks now reach.
    pub(crate) fn make_runnable(&mut self) -> Result<mmu::Pfn> {
        let tdvpr = self.control.make_runnable()?;
        let pfn = tdvpr.hpa().pfn();
        if let Some(mmu) = &self.mmu {
            mmu.external().kicker().vcpus[0].store(pfn.raw(), Ordering::Release);
        }
        Ok(pfn)
    }
}

impl Drop for TdVm {
    fn drop(&mut self) {
        if let Some(mut mmu) = self.mmu.take() {
            // Release the HKID through the backend so the MMU's teardown reclaims pages with
            // one RECLAIM each, then tear the MMU down, then the control pages go.
            let vcpus = self.control.tdvpr();
            match mmu.external().release_hkid(vcpus.as_slice()) {
                Ok(()) => self.control.released = true,
                Err(e) => pr_err!("releasing HKID: {:?}\n", e),
            }
            mmu.teardown();
        }
    }
}
