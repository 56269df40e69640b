// SPDX-License-Identifier: GPL-2.0-only
//! VM objects: one per VM fd. A VM owns its TDP MMU; a TD also owns its control pages (TDR,
//! TDCX) in the TDX module and its HKID, created at `KVM_CREATE_VM` and given back when the
//! fd is released. Release returns every page: MMU tables, external SPTs, headers, control pages.

use crate::backend::{self, SwRef};
use crate::env::{alloc_frame, free_frame, KernelEnv};
use crate::stats;
use kernel::prelude::*;
use mmu::env::Frame;
use mmu::external::NoExternal;
use mmu::spte::{Ept, Npt};
use mmu::tdp::{MmuConfig, TdpMmu};
use mmu::{GpaWidth, Level};
use tdx::abi::status;
use tdx::sept_backend::{SeptBackend, VcpuKicker};
use tdx::swmod::MIN_TDCS_PAGES;
use tdx::{Tdcx, Tdr, Tdx};

/// The TD's vCPUs: none yet (vCPUs come with the run-path issue), so a kick has nothing to do.
pub(crate) struct NoVcpus;

impl VcpuKicker for NoVcpus {
    fn kick_all(&self) {}
}

type TdBackend = SeptBackend<SwRef, NoVcpus>;

/// A TD's pages in the TDX module.
struct TdControl {
    tdx: Tdx<SwRef>,
    tdr: Option<Frame>,
    tdcx: [Option<Frame>; MIN_TDCS_PAGES as usize],
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
            hkid,
            created: false,
            released: false,
        };
        td.tdr = Some(alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?);
        let tdr = td.tdr().ok_or(ENOMEM)?;
        td.tdx.mng_create(tdr, hkid).map_err(|e| {
            pr_err!("TDH.MNG.CREATE: {:?}\n", e);
            EIO
        })?;
        td.created = true;
        td.tdx.mng_key_config(tdr).map_err(|_| EIO)?;
        for i in 0..td.tdcx.len() {
            let page = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
            let hpa = page.pfn().hpa();
            td.tdcx[i] = Some(page);
            td.tdx.mng_addcx(tdr, Tdcx::new(hpa)).map_err(|_| EIO)?;
        }
        Ok(td)
    }

    /// VPFLUSHDONE, CACHE.WB, KEY.FREEID (when the MMU is gone or never existed).
    fn release_hkid(&mut self) {
        let Some(tdr) = self.tdr() else { return };
        if !self.created || self.released {
            return;
        }
        let r = self.tdx.mng_vpflushdone(tdr).and_then(|()| loop {
            match self.tdx.phymem_cache_wb(false) {
                Ok(_) => break self.tdx.mng_key_freeid(tdr),
                Err(e) if e.class() == status::INTERRUPTED_RESUMABLE => continue,
                Err(e) => break Err(e),
            }
        });
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
            // A page the module still owns must never go back to the allocator.
            let back = !created || (released && tdx.phymem_page_reclaim(f.pfn().hpa()).is_ok());
            if back {
                free_frame(f, stats::Kind::TdControl);
            } else {
                pr_err!(
                    "TD page {:#x} leaked: the TDX module did not give it back\n",
                    f.pfn().raw()
                );
            }
        };
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
}

impl Drop for TdVm {
    fn drop(&mut self) {
        if let Some(mut mmu) = self.mmu.take() {
            // Release the HKID through the backend so the MMU's teardown reclaims pages with
            // one RECLAIM each, then tear the MMU down, then the control pages go.
            match mmu.external().release_hkid(&[]) {
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
        let backend = SeptBackend::new(Tdx::new(sw), tdr, control.hkid, NoVcpus);
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
