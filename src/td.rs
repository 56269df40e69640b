// SPDX-License-Identifier: GPL-2.0-only
//! A TD's side of a VM: its control pages (TDR, TDCX) in the TDX module, its HKID and its MMU
//! (shared + mirror roots over the S-EPT backend), created at `KVM_CREATE_VM` and given back when
//! the last reference to the VM goes ([`crate::vm::Vm`]). Teardown returns every page: MMU
//! tables, external SPTs, headers, control pages.

use crate::backend::{self, TdxRef};
use crate::env::{alloc_frame, free_frame, KernelEnv};
use crate::stats;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;
use mmu::cache::VcpuMmuCaches;
use mmu::env::Frame;
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu};
use mmu::{Gfn, GfnKind, GpaWidth, Hpa, Level, MmuError, Pfn};
use tdx::abi::md;
use tdx::abi::status;
use tdx::abi::td_params::TdParams;
use tdx::abi::MAX_TDCS_PAGES;
use tdx::kvm::rules::TdStage;
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
    /// Pages per vCPU, TDVPR included (TDVPS_BASE_SIZE / 4K).
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

    /// TDH.MNG.INIT with `params` (upstream `__tdx_td_init`'s last step). TD_PARAMS goes to
    /// the module in a page of its own (1024-byte aligned, shared).
    fn init(&self, params: &TdParams) -> core::result::Result<(), InitError> {
        let tdr = self.tdr().ok_or(InitError::NoMemory)?;
        let page = alloc_frame(stats::Kind::TdControl).ok_or(InitError::NoMemory)?;
        params.write_to(&page);
        let r = retry_busy(|| self.tdx.mng_init(tdr, page.pfn().hpa()));
        free_frame(page, stats::Kind::TdControl);
        r.map_err(InitError::Module)
    }

    /// VP.CREATE, VP.ADDCX × (pages − 1), VP.INIT(`rcx`) into `v`'s pages (upstream
    /// `tdx_td_vcpu_init`). The pages stay in `v` whatever happens: the ones the module took
    /// are reclaimed after the HKID is released, the others are freed then.
    fn init_vcpu(&self, v: &mut VcpuPages, rcx: u64) -> core::result::Result<Tdvpr, InitError> {
        let tdr = self.tdr().ok_or(InitError::NoMemory)?;
        for i in 0..self.nr_tdvps.min(MAX_TDVPS_PAGES) {
            v.pages[i] = Some(alloc_frame(stats::Kind::TdControl).ok_or(InitError::NoMemory)?);
        }
        let tdvpr = v.tdvpr().ok_or(InitError::NoMemory)?;
        retry_busy(|| self.tdx.vp_create(tdr, tdvpr)).map_err(InitError::Module)?;
        for page in v.pages.iter().skip(1).flatten() {
            let hpa = page.pfn().hpa();
            retry_busy(|| self.tdx.vp_addcx(tdvpr, Tdcx::new(hpa))).map_err(InitError::Module)?;
        }
        retry_busy(|| self.tdx.vp_init(tdvpr, rcx)).map_err(InitError::Module)?;
        Ok(tdvpr)
    }

    /// Gives a page back after the TD is gone: RECLAIM (and for the TDR a write-back with the
    /// global KeyID) if the module had it, then the allocator; or leaked, loudly, if the module
    /// keeps it.
    fn reclaim(&self, f: Frame, is_tdr: bool) {
        // A page the module still owns must never go back to the allocator. A page the module
        // never took (creation stopped early) is NDA: RECLAIM refuses it, it is ours.
        let tdx = &self.tdx;
        let pfn = f.pfn();
        let back = !self.created
            || (self.released
                && match retry_busy(|| tdx.phymem_page_reclaim(pfn.hpa())) {
                    Ok(_) => {
                        // The TDR was written with the module's global KeyID: its cache lines
                        // go before the page is reused (Linux's wbinvd_tdr).
                        let flushed = match (is_tdr, self.backend.global_keyid()) {
                            (true, Some(k)) => {
                                let pa =
                                    pfn.hpa().raw() | u64::from(k) << tdx.backend().hkid_shift();
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
    }

    /// VP.FLUSH, VPFLUSHDONE, CACHE.WB, KEY.FREEID (when the MMU is gone or never existed).
    fn release_hkid(&mut self) {
        let Some(tdr) = self.tdr() else { return };
        if !self.created || self.released {
            return;
        }
        // Only a TD whose MMU never came up gets here: it has no vCPU to flush or kick.
        let host = Host::new(self.backend);
        match release_hkid(&self.tdx, &host, tdr, &[]) {
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
        for i in (0..self.tdcx.len()).rev() {
            if let Some(f) = self.tdcx[i].take() {
                self.reclaim(f, false);
            }
        }
        if let Some(f) = self.tdr.take() {
            self.reclaim(f, true);
        }
        if (self.released || !self.created) && !self.hkid_lost {
            backend::free_hkid(self.hkid);
        }
        if let TdxRef::Hw(_) = self.backend {
            crate::hw::td_destroyed();
        }
    }
}

/// Why a TD or vCPU initialisation step failed.
#[derive(Debug)]
pub(crate) enum InitError {
    /// A page or the TD's control structures were missing.
    NoMemory,
    /// The TDX module refused.
    Module(TdxError),
}

/// One TD vCPU's pages in the TDX module: its TDVPR, then its TDCX pages.
pub(crate) struct VcpuPages {
    pages: [Option<Frame>; MAX_TDVPS_PAGES],
}

impl VcpuPages {
    fn new() -> Self {
        VcpuPages {
            pages: [const { None }; MAX_TDVPS_PAGES],
        }
    }

    fn tdvpr(&self) -> Option<Tdvpr> {
        self.pages[0].as_ref().map(|f| Tdvpr::new(f.pfn().hpa()))
    }
}

/// A TD: its MMU (shared + mirror roots, S-EPT backend), its control structures, its vCPUs'
/// pages in the TDX module, and the KVM-side state of the TDX VM ABI ([`crate::tdx_vm`]).
pub(crate) struct TdVm {
    mmu: Option<TdMmu>,
    control: TdControl,
    /// `kvm_tdx->state` ([`TdStage`] as u8): written under the VM lock, read without it.
    stage: AtomicU8,
    /// Every vCPU's pages in the TDX module, in KVM_TDX_INIT_VCPU order: given back after the
    /// HKID, with the TD (upstream frees them at vCPU free, which runs after the HKID release).
    vcpus: Pin<KBox<Mutex<KVec<VcpuPages>>>>,
    /// The TD's line in debugfs `tds`.
    listing: crate::tdx_vm::Listing,
}

const fn stage_of(v: u8) -> TdStage {
    match v {
        1 => TdStage::Initialized,
        2 => TdStage::Runnable,
        _ => TdStage::Uninitialized,
    }
}

const fn stage_raw(s: TdStage) -> u8 {
    match s {
        TdStage::Uninitialized => 0,
        TdStage::Initialized => 1,
        TdStage::Runnable => 2,
    }
}

impl TdVm {
    /// Creates a TD on the TDX backend `b`: MNG.CREATE, KEY.CONFIG, the TDCX pages, the MMU.
    /// TDH.MNG.INIT waits for `KVM_TDX_INIT_VM`.
    pub(crate) fn new(b: TdxRef) -> Result<Self> {
        let control = TdControl::create(b)?;
        let tdr = control.tdr().ok_or(ENOMEM)?;
        let backend = SeptBackend::new(Tdx::new(Counted::new(b)), tdr, control.hkid, Host::new(b));
        let vcpus = KBox::pin_init(new_mutex!(KVec::new(), "tdx_vcpu_pages"), GFP_KERNEL)?;
        let mut vm = TdVm {
            mmu: None,
            control,
            stage: AtomicU8::new(stage_raw(TdStage::Uninitialized)),
            vcpus,
            listing: crate::tdx_vm::Listing::new(),
        };
        let env = KernelEnv::new().ok_or(ENOMEM)?;
        // GPAW 48 (4-level S-EPT): INIT_VM refuses GPAW 52, as upstream on a host without
        // 5-level EPT. TDH.MEM.PAGE.AUG maps 4K and 2M pages: cap the mirror's leaves at 2M.
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

    /// The TDX backend the TD lives on.
    pub(crate) fn backend(&self) -> TdxRef {
        self.control.backend
    }

    /// The TD's state in the TDX VM ABI.
    pub(crate) fn stage(&self) -> TdStage {
        stage_of(self.stage.load(Ordering::Acquire))
    }

    /// Moves the TD to `s`. Caller holds the VM lock (or owns the TD alone).
    fn set_stage(&self, s: TdStage) {
        self.stage.store(stage_raw(s), Ordering::Release);
        self.listing.set_stage(s);
    }

    /// The shared bit of the TD's GPAs (GPAW 48: bit 47).
    pub(crate) fn shared_bit(&self) -> u64 {
        1 << 47
    }

    /// TDH.MNG.INIT with the TD_PARAMS INIT_VM built; the TD is INITIALIZED on success. Caller
    /// holds the VM lock.
    pub(crate) fn init(&self, params: &TdParams) -> core::result::Result<(), InitError> {
        self.control.init(params)?;
        self.set_stage(TdStage::Initialized);
        Ok(())
    }

    /// A vCPU of the TD in the TDX module (INIT_VCPU), with guest RCX `rcx`: its TDVPR. Caller
    /// holds the vCPU's mutex.
    pub(crate) fn init_vcpu(&self, rcx: u64) -> core::result::Result<Tdvpr, InitError> {
        let mut v = VcpuPages::new();
        let r = self.control.init_vcpu(&mut v, rcx);
        // Whatever the module took stays listed, for the reclaim after the HKID release.
        let mut list = self.vcpus.lock();
        if list.push(v, GFP_KERNEL).is_err() {
            // Pages the module may own cannot be freed now: keep them out of the allocator.
            pr_err!("TD vCPU pages leaked: no memory to track them\n");
            return Err(InitError::NoMemory);
        }
        r
    }

    /// TDH.MR.FINALIZE; RUNNABLE on success, the status otherwise. Caller holds the VM lock.
    pub(crate) fn finalize(&self) -> core::result::Result<(), TdxError> {
        let tdr = self
            .control
            .tdr()
            .ok_or(TdxError::new(status::OPERAND_INVALID, 0, 0))?;
        self.control.tdx.mr_finalize(tdr)?;
        self.set_stage(TdStage::Runnable);
        if let Some(m) = self.mrtd() {
            self.listing.set_mrtd(&m);
        }
        Ok(())
    }

    /// TDH.MNG.RD of a TD-scope field.
    pub(crate) fn md_read(&self, field: u64) -> core::result::Result<u64, TdxError> {
        let tdr = self
            .control
            .tdr()
            .ok_or(TdxError::new(status::OPERAND_INVALID, 0, 0))?;
        self.control.tdx.mng_rd(tdr, field)
    }

    /// MRTD (48 bytes) through TDH.MNG.RD; `None` if the module does not answer.
    pub(crate) fn mrtd(&self) -> Option<[u8; 48]> {
        let mut out = [0u8; 48];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let v = self.md_read(md::element(md::td::MRTD, i as u64)).ok()?;
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Some(out)
    }

    /// INIT_MEM_REGION's page: maps the private `gfn` to `pfn` through the mirror root with
    /// TDH.MEM.PAGE.ADD from `source` (+ 16 × TDH.MR.EXTEND if `measure`) instead of
    /// PAGE.AUG. `caches` must be the calling vCPU's. `stale` is asked under the MMU lock
    /// before mapping: `true` (an invalidation ran since `pfn` was looked up, e.g. a punch hole
    /// that may free it) maps nothing and returns `Ok(false)`: look the page up again.
    pub(crate) fn add_page(
        &self,
        caches: &mut VcpuMmuCaches,
        gfn: Gfn,
        pfn: Pfn,
        source: Hpa,
        measure: bool,
        stale: impl Fn() -> bool,
    ) -> core::result::Result<bool, MmuError> {
        let mmu = self.mmu.as_ref().ok_or(MmuError::Bugged)?;
        let fault = Fault {
            gfn,
            kind: GfnKind::Private,
            pfn,
            access: Access::RWX,
            write: true,
            max_level: Level::L4K,
        };
        loop {
            mmu.topup_vcpu_caches(caches)?;
            let g = mmu.read();
            if stale() {
                return Ok(false);
            }
            mmu.external().arm_populate(gfn, source, measure);
            let r = mmu.map(&g, caches, &fault);
            // The population is one-shot: if the fault did not consume it, the GFN was mapped.
            let unused = mmu.external().disarm_populate();
            drop(g);
            match r {
                Ok(FaultOutcome::Mapped(_)) if !unused => return Ok(true),
                Ok(FaultOutcome::Retry) => continue,
                Ok(_) => return Err(MmuError::Conflict),
                Err(e) => return Err(e),
            }
        }
    }

    /// After INIT_VM ([`crate::tdx_vm::init_td`]): one vCPU (INIT_VCPU's steps) and FINALIZE,
    /// for the self test; kicks reach the vCPU.
    pub(crate) fn make_runnable(&self) -> Result<mmu::Pfn> {
        let tdvpr = self.init_vcpu(0).map_err(|_| EIO)?;
        self.finalize().map_err(|_| EIO)?;
        let pfn = tdvpr.hpa().pfn();
        if let Some(mmu) = &self.mmu {
            mmu.external().kicker().vcpus[0].store(pfn.raw(), Ordering::Release);
        }
        Ok(pfn)
    }
}

impl Drop for TdVm {
    fn drop(&mut self) {
        // Every vCPU's TDVPR, for VP.FLUSH.
        let mut list = core::mem::take(&mut *self.vcpus.lock());
        let mut tdvprs = KVec::new();
        for v in list.iter() {
            if let Some(t) = v.tdvpr() {
                if tdvprs.push(t, GFP_KERNEL).is_err() {
                    pr_err!("TD teardown: no memory for the vCPU list: the HKID stays\n");
                    break;
                }
            }
        }
        if let Some(mut mmu) = self.mmu.take() {
            // Release the HKID through the backend so the MMU's teardown reclaims pages with
            // one RECLAIM each, then tear the MMU down, then the vCPUs' and the control pages.
            if tdvprs.len() == list.iter().filter(|v| v.tdvpr().is_some()).count() {
                match mmu.external().release_hkid(&tdvprs) {
                    Ok(()) => self.control.released = true,
                    Err(e) => pr_err!("releasing HKID: {:?}\n", e),
                }
            }
            mmu.teardown();
        }
        for v in list.iter_mut() {
            for slot in v.pages.iter_mut().rev() {
                if let Some(f) = slot.take() {
                    self.control.reclaim(f, false);
                }
            }
        }
    }
}
