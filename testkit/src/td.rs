// SPDX-License-Identifier: GPL-2.0-only
//! Building TDs on the software TDX module for tests: the host-side sequence KVM runs
//! (MNG.CREATE, KEY.CONFIG, ADDCX ×9, MNG.INIT, VP.CREATE/ADDCX/INIT, MR.FINALIZE).

use crate::env::{HostEnv, Sha2Compress};
use mmu::env::Frame;
use mmu::{Hpa, Pfn};
use tdx::swmod::{SwTdxModule, MIN_TDCS_PAGES, TDVPS_PAGES};
use tdx::{Tdcx, Tdr, Tdvpr, Tdx};

/// The software module as tests use it: over a borrowed host arena, SHA-2 from the `sha2` crate.
pub type SwModule<'a> = SwTdxModule<&'a HostEnv, Sha2Compress>;

/// A software module whose single TDMR is the whole arena of `env`, HKIDs 1..=16.
pub fn sw_module(env: &HostEnv) -> SwModule<'_> {
    let mut m = SwTdxModule::new(env, Sha2Compress, 1, 16);
    m.add_tdmr(Pfn::new(crate::env::BASE_PFN), env.capacity() as u64)
        .expect("TDMR");
    m
}

/// A host page taken from the arena (not accounted as an MMU page).
pub fn host_page(env: &HostEnv) -> Frame {
    env.alloc_raw().expect("arena page")
}

/// TD_PARAMS for a 4-level (GPAW 48) or 5-level (GPAW 52) TD with `max_vcpus`.
pub fn td_params(env: &HostEnv, five_level: bool, max_vcpus: u64) -> Frame {
    let f = host_page(env);
    let words = f.words();
    let store = |i: usize, v: u64| words[i].store(v, std::sync::atomic::Ordering::Relaxed);
    store(0, 0); // ATTRIBUTES
    store(1, 3); // XFAM: x87 | SSE
    store(2, max_vcpus);
    store(3, 6 | if five_level { 4 << 3 } else { 3 << 3 }); // EPTP: WB, PWL - 1
    store(4, five_level as u64); // CONFIG_FLAGS: GPAW 52
    store(5, 100); // TSC: 2.5 GHz
    f
}

/// A TD built on a software module: its TDR and vCPUs.
pub struct TestTd {
    /// The TDR page.
    pub tdr: Tdr,
    /// The vCPUs' TDVPR pages.
    pub vcpus: Vec<Tdvpr>,
    /// The HKID.
    pub hkid: u16,
}

/// Steps of [`build_td`] to stop after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// After MNG.CREATE.
    Created,
    /// After KEY.CONFIG.
    KeysConfigured,
    /// After the TDCX pages.
    TdcsAdded,
    /// After MNG.INIT.
    Initialized,
    /// After the vCPUs were created and initialised.
    VcpusReady,
    /// After MR.FINALIZE.
    Runnable,
}

/// Builds a TD up to `stage` with `vcpus` vCPUs (4-level S-EPT), panicking on any failure.
pub fn build_td<S: tdx::Seamcall>(
    tdx: &Tdx<S>,
    env: &HostEnv,
    hkid: u16,
    vcpus: usize,
    stage: Stage,
) -> TestTd {
    let tdr = Tdr::new(host_page(env).pfn().hpa());
    tdx.mng_create(tdr, hkid).expect("MNG.CREATE");
    let mut td = TestTd {
        tdr,
        vcpus: Vec::new(),
        hkid,
    };
    if stage < Stage::KeysConfigured {
        return td;
    }
    tdx.mng_key_config(tdr).expect("KEY.CONFIG");
    if stage < Stage::TdcsAdded {
        return td;
    }
    for _ in 0..MIN_TDCS_PAGES {
        tdx.mng_addcx(tdr, Tdcx::new(host_page(env).pfn().hpa()))
            .expect("MNG.ADDCX");
    }
    if stage < Stage::Initialized {
        return td;
    }
    let params = td_params(env, false, 8);
    tdx.mng_init(tdr, params.pfn().hpa()).expect("MNG.INIT");
    env.free_raw(params);
    if stage < Stage::VcpusReady {
        return td;
    }
    for i in 0..vcpus {
        let tdvpr = Tdvpr::new(host_page(env).pfn().hpa());
        tdx.vp_create(tdr, tdvpr).expect("VP.CREATE");
        for _ in 1..TDVPS_PAGES {
            tdx.vp_addcx(tdvpr, Tdcx::new(host_page(env).pfn().hpa()))
                .expect("VP.ADDCX");
        }
        tdx.vp_init(tdvpr, i as u64).expect("VP.INIT");
        td.vcpus.push(tdvpr);
    }
    if stage < Stage::Runnable {
        return td;
    }
    tdx.mr_finalize(tdr).expect("MR.FINALIZE");
    td
}

/// The PFN behind an HPA.
pub fn pfn(h: Hpa) -> Pfn {
    h.pfn()
}

/// The test host: a kick makes each of the TD's vCPUs leave the TD (as the software module sees
/// them); pages given back are recorded, not reset (the software module poisons nothing).
pub struct Kick<'a> {
    /// The module.
    pub m: &'a SwModule<'a>,
    /// The vCPUs' TDVPR pages.
    pub vcpus: Vec<Pfn>,
    /// Every `reset_pages(pfn, pages)` call, in order.
    pub reset: std::sync::Mutex<Vec<(Pfn, u64)>>,
}

impl tdx::sept_backend::TdHost for Kick<'_> {
    fn kick_all(&self) {
        for &v in &self.vcpus {
            self.m.vcpu_exit(v);
        }
    }

    fn reset_pages(&self, pfn: Pfn, pages: u64) {
        self.reset.lock().unwrap().push((pfn, pages));
    }
}

/// The S-EPT backend over the software module, counting SEAMCALLs per leaf.
pub type Backend<'a> =
    tdx::sept_backend::SeptBackend<tdx::seamcall::Counted<&'a SwModule<'a>>, Kick<'a>>;

/// A TD's MMU over the host arena with that backend.
pub type TdMmu<'a> = mmu::tdp::TdpMmu<mmu::spte::Ept, &'a HostEnv, &'a Backend<'a>>;

/// The backend of `td`, kicking `td`'s vCPUs.
pub fn backend<'a>(m: &'a SwModule<'a>, td: &TestTd) -> Backend<'a> {
    tdx::sept_backend::SeptBackend::new(
        Tdx::new(tdx::seamcall::Counted::new(m)),
        td.tdr,
        td.hkid,
        Kick {
            m,
            vcpus: td.vcpus.iter().map(|v| v.hpa().pfn()).collect(),
            reset: std::sync::Mutex::new(Vec::new()),
        },
    )
}
