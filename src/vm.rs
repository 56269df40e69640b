// SPDX-License-Identifier: GPL-2.0-only
//! VM objects: one per VM fd. A VM owns its TDP MMU; a TD also owns its control pages (TDR,
//! TDCX) in the TDX module and its HKID, created at `KVM_CREATE_VM` and given back when the
//! fd is released. Release returns every page: MMU tables, external SPTs, headers, control pages.

use crate::backend::{self, SwRef};
use crate::env::{alloc_frame, free_frame, KernelEnv};
use crate::stats;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::env::Frame;
use mmu::external::NoExternal;
use mmu::spte::{Ept, Npt};
use mmu::tdp::{MmuConfig, TdpMmu};
use mmu::{GpaWidth, Level};
use tdx::abi::status;
use tdx::sept_backend::{cache_wb, retry_busy, SeptBackend, VcpuKicker};
use tdx::swmod::{MIN_TDCS_PAGES, TDVPS_PAGES};
use tdx::{Tdcx, Tdr, Tdvpr, Tdx};

/// Most vCPUs a TD has here (only the self test creates any: the run path comes later).
const MAX_TD_VCPUS: usize = 1;

/// Kicks the TD's vCPUs out of the TD. On the software TDX module a vCPU is "inside" between
/// its emulated entry and exit, so a kick is an emulated exit of each.
pub(crate) struct SwKicker {
    sw: SwRef,
    vcpus: [AtomicU64; MAX_TD_VCPUS],
}

impl VcpuKicker for SwKicker {
    fn kick_all(&self) {
        for v in &self.vcpus {
            let pfn = v.load(Ordering::Acquire);
            if pfn != 0 {
                self.sw.module().vcpu_exit(mmu::Pfn::new(pfn));
            }
        }
    }
}

type TdBackend = SeptBackend<SwRef, SwKicker>;

/// A TD's pages in the TDX module.
struct TdControl {
    tdx: Tdx<SwRef>,
    tdr: Option<Frame>,
    tdcx: [Option<Frame>; MIN_TDCS_PAGES as usize],
    /// The vCPU's TDVPR and its TDCX pages (TDVPR first).
    vcpu: [Option<Frame>; TDVPS_PAGES as usize],
    hkid: u16,
    /// Whether TDH.MNG.CREATE succeeded (the TDX module knows this TD).
    created: bool,
    /// Whether the HKID was released (KEY.FREEID): pages can be reclaimed.
    released: bool,
}

impl TdControl {
    fn tdr(&self) -> Option<Tdr> {
        self.tdr.as_ref().map(|f| Tdr::new(f.pfn().hpa()))
    }

    /// MNG.CREATE, KEY.CONFIG and the TDCX pages (upstream `__tdx_td_init`).
    fn create(sw: SwRef) -> Result<Self> {
        let hkid = backend::alloc_hkid().ok_or(EBUSY)?;
        let mut td = TdControl {
            tdx: Tdx::new(sw),
            tdr: None,
            tdcx: [const { None }; MIN_TDCS_PAGES as usize],
            vcpu: [const { None }; TDVPS_PAGES as usize],
            hkid,
            created: false,
            released: false,
        };
        td.tdr = Some(alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?);
        let tdr = td.tdr().ok_or(ENOMEM)?;
        retry_busy(|| td.tdx.mng_create(tdr, hkid)).map_err(|e| {
            pr_err!("TDH.MNG.CREATE: {:?}\n", e);
            EIO
        })?;
        td.created = true;
        retry_busy(|| td.tdx.mng_key_config(tdr)).map_err(|_| EIO)?;
        for i in 0..td.tdcx.len() {
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
        let tdr = self.tdr().ok_or(EINVAL)?;
        let params = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
        let w = params.table();
        // TD_PARAMS: ATTRIBUTES 0, XFAM x87|SSE, MAX_VCPUS, EPTP (WB, 4-level), GPAW 48, TSC 2.5 GHz.
        for (i, v) in [0u64, 3, MAX_TD_VCPUS as u64, 6 | 3 << 3, 0, 100]
            .into_iter()
            .enumerate()
        {
            w.0[i].store(v, Ordering::Relaxed);
        }
        let r = retry_busy(|| self.tdx.mng_init(tdr, params.pfn().hpa()));
        free_frame(params, stats::Kind::TdControl);
        r.map_err(|e| {
            pr_err!("TDH.MNG.INIT: {:?}\n", e);
            EIO
        })?;
        for i in 0..self.vcpu.len() {
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
        if let Some(v) = self.tdvpr() {
            // Never initialised (or already flushed): nothing to dissociate.
            match retry_busy(|| self.tdx.vp_flush(v)) {
                Err(e) if e.class() != status::VCPU_NOT_ASSOCIATED => {
                    pr_err!("TDH.VP.FLUSH: {:?}\n", e);
                }
                _ => {}
            }
        }
        let r = retry_busy(|| self.tdx.mng_vpflushdone(tdr))
            .and_then(|()| cache_wb(&self.tdx))
            .and_then(|()| retry_busy(|| self.tdx.mng_key_freeid(tdr)));
        match r {
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
        let reclaim = |tdx: &Tdx<SwRef>, f: Frame, released: bool, created: bool| {
            // A page the module still owns must never go back to the allocator. A page the
            // module never took (creation stopped early) is NDA: RECLAIM refuses it, it is ours.
            let back = !created
                || (released
                    && match retry_busy(|| tdx.phymem_page_reclaim(f.pfn().hpa())) {
                        Ok(_) => true,
                        Err(e) => e.class() == status::PAGE_METADATA_INCORRECT,
                    });
            if back {
                free_frame(f, stats::Kind::TdControl);
            } else {
                pr_err!(
                    "TD page {:#x} leaked: the TDX module did not give it back\n",
                    f.pfn().raw()
                );
            }
        };
        for slot in self.vcpu.iter_mut().rev() {
            if let Some(f) = slot.take() {
                reclaim(&self.tdx, f, self.released, self.created);
            }
        }
        for slot in self.tdcx.iter_mut().rev() {
            if let Some(f) = slot.take() {
                reclaim(&self.tdx, f, self.released, self.created);
            }
        }
        if let Some(f) = self.tdr.take() {
            reclaim(&self.tdx, f, self.released, self.created);
        }
        if self.released || !self.created {
            backend::free_hkid(self.hkid);
        }
    }
}

/// A TD: its MMU (shared + mirror roots, S-EPT backend) and its control structures.
pub(crate) struct TdVm {
    mmu: Option<TdpMmu<Ept, KernelEnv, TdBackend>>,
    control: TdControl,
}

impl TdVm {
    /// The TD's MMU.
    pub(crate) fn mmu(&self) -> Option<&TdpMmu<Ept, KernelEnv, TdBackend>> {
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

/// A VM.
pub(crate) enum Vm {
    /// `KVM_X86_DEFAULT_VM` or `KVM_X86_SW_PROTECTED_VM`: a shared root only. Nothing maps
    /// memory into it before memslots and vCPUs exist; it is held so its pages are accounted
    /// and returned on release.
    Plain(#[allow(dead_code)] TdpMmu<Npt, KernelEnv, NoExternal>),
    /// `KVM_X86_TDX_VM`.
    Td(TdVm),
}

impl Vm {
    /// Creates a VM of a supported type (the caller validated `vm_type`).
    pub(crate) fn new_plain() -> Result<Self> {
        let env = KernelEnv::new().ok_or(ENOMEM)?;
        let mmu =
            TdpMmu::new(env, NoExternal, MmuConfig::vm(GpaWidth::Bits48)).map_err(|_| ENOMEM)?;
        Ok(Vm::Plain(mmu))
    }

    /// Creates a TD on the software TDX module.
    pub(crate) fn new_td(sw: SwRef) -> Result<Self> {
        let control = TdControl::create(sw)?;
        let tdr = control.tdr().ok_or(ENOMEM)?;
        let kicker = SwKicker {
            sw,
            vcpus: [const { AtomicU64::new(0) }; MAX_TD_VCPUS],
        };
        let backend = SeptBackend::new(Tdx::new(sw), tdr, control.hkid, kicker);
        let mut vm = TdVm { mmu: None, control };
        let env = KernelEnv::new().ok_or(ENOMEM)?;
        // TDH.MEM.PAGE.AUG maps 4K and 2M pages: cap the mirror's leaves at 2M.
        let cfg = MmuConfig {
            max_level: Level::L2M,
            ..MmuConfig::td(GpaWidth::Bits48)
        };
        vm.mmu = Some(TdpMmu::new(env, backend, cfg).map_err(|_| ENOMEM)?);
        Ok(Vm::Td(vm))
    }
}
