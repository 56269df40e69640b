// SPDX-License-Identifier: GPL-2.0-only
//! Host-side test kit for the core crates: an environment with a counting page arena
//! ([`HostEnv`]), a recording/failing external page table ([`RecordingExternal`]), a plain
//! reference model of what should be mapped ([`Model`]) and invariant checks.
//!
//! Test code: panics on broken invariants are the point here.

pub mod env;
pub mod external;
pub mod model;

pub use env::{EnvCounts, HostEnv, HostRwLock};
pub use external::{HookCall, HookCounts, Inject, RecordingExternal};
pub use model::{Model, Rng};

use mmu::cache::VcpuMmuCaches;
use mmu::external::ExternalPageTable;
use mmu::lock::MmuLockHeld;
use mmu::page::RootKind;
use mmu::spte::PagingFormat;
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu};
use mmu::{GpaWidth, MmuError};
use std::collections::BTreeMap;

/// The MMU as tests build it.
pub type TestMmu<F> = TdpMmu<F, HostEnv, RecordingExternal>;

/// A TD's MMU (shared + mirror roots) over a fresh environment.
pub fn td_mmu<F: PagingFormat>() -> TestMmu<F> {
    let cfg = MmuConfig::td(GpaWidth::Bits48);
    TdpMmu::new(
        HostEnv::new(),
        RecordingExternal::new(cfg.root_level()),
        cfg,
    )
    .expect("roots")
}

/// An ordinary VM's MMU (shared root only).
pub fn vm_mmu<F: PagingFormat>() -> TestMmu<F> {
    let cfg = MmuConfig::vm(GpaWidth::Bits48);
    TdpMmu::new(
        HostEnv::new(),
        RecordingExternal::new(cfg.root_level()),
        cfg,
    )
    .expect("roots")
}

/// Tops up, takes the shared lock and maps, retrying on [`FaultOutcome::Retry`] as a vCPU
/// would (bounded: a test that needs more than 10 000 retries is broken).
pub fn fault<F: PagingFormat, X: ExternalPageTable>(
    mmu: &TdpMmu<F, HostEnv, X>,
    caches: &mut VcpuMmuCaches,
    f: &Fault,
) -> Result<FaultOutcome, MmuError> {
    for _ in 0..10_000 {
        mmu.topup_vcpu_caches(caches)?;
        let g = mmu.read();
        match mmu.map(&g, caches, f)? {
            FaultOutcome::Retry => continue,
            done => return Ok(done),
        }
    }
    panic!("fault never completed: {f:?}");
}

/// Leaves of a root: (memslot gfn, level) → pfn.
pub type LeafMap = BTreeMap<(u64, u8), u64>;

/// Walks `root` and returns its leaves.
pub fn leaves<F: PagingFormat, X: ExternalPageTable>(
    mmu: &TdpMmu<F, HostEnv, X>,
    g: &impl MmuLockHeld,
    root: RootKind,
) -> LeafMap {
    let mut out = BTreeMap::new();
    mmu.for_each_leaf(g, root, |gfn, level, leaf| {
        out.insert((gfn.raw(), level.get()), leaf.pfn.raw());
    })
    .expect("walk");
    out
}

/// Checks everything that must hold between operations:
/// - every mirror table page above the root has exactly one external SPT (and the root none),
///   and no shared page has one;
/// - the external table equals the mirror (tables by external PFN, leaves by data PFN);
/// - the MMU's accounting equals what the walk finds and what the environment has handed out
///   (given what the `caches` hold).
pub fn check_invariants<F: PagingFormat>(mmu: &TestMmu<F>, caches: &[&VcpuMmuCaches]) {
    let g = mmu.read();
    let st = mmu.stats();
    let mut tables = [0usize; 2];
    let mut ext_expect = BTreeMap::new();
    for (i, root) in [RootKind::Shared, RootKind::Mirror].into_iter().enumerate() {
        if root == RootKind::Mirror && !mmu.config().private {
            continue;
        }
        mmu.for_each_table(&g, root, |page| {
            tables[i] += 1;
            let role = page.role();
            assert_eq!(role.root_kind, root);
            match (root, role.is_root, page.external_spt()) {
                (RootKind::Mirror, false, Some(spt)) => {
                    let entry_level = role.level.get() + 1;
                    ext_expect.insert(
                        (entry_level, page.gfn().raw()),
                        (spt.frame().pfn().raw(), false),
                    );
                    assert!(
                        mmu.env().is_allocated(spt.frame().pfn()),
                        "external SPT not allocated"
                    );
                }
                (RootKind::Mirror, false, None) => panic!("mirror page without external SPT"),
                (_, _, None) => {}
                (_, _, Some(_)) => panic!("external SPT on a root or shared page: {role:?}"),
            }
        })
        .expect("walk tables");
    }
    if mmu.config().private {
        for ((gfn, level), pfn) in leaves(mmu, &g, RootKind::Mirror) {
            ext_expect.insert((level, gfn), (pfn, true));
        }
        let ext: BTreeMap<_, _> = mmu
            .external()
            .entries()
            .into_iter()
            .map(|(k, e)| (k, (e.pfn.raw(), e.leaf)))
            .collect();
        assert_eq!(ext, ext_expect, "external table differs from the mirror");
    }
    let violations = mmu.external().violations();
    assert!(
        violations.is_empty(),
        "external rules broken: {violations:?}"
    );
    drop(g);

    // Parked pages (unlinked under the shared lock) are still counted until freed.
    assert_eq!(
        st.shared_tables,
        tables[0] + st.deferred,
        "shared table accounting"
    );
    assert_eq!(st.mirror_tables, tables[1], "mirror table accounting");
    assert_eq!(
        st.headers,
        st.shared_tables + st.mirror_tables,
        "header accounting"
    );
    assert_eq!(
        st.external_spts,
        tables[1].saturating_sub(1),
        "external SPT accounting"
    );
    let env = mmu.env().counts();
    let held = caches.iter().fold((0, 0, 0), |acc, c| {
        let h = c.holdings();
        (acc.0 + h.tables, acc.1 + h.external_spts, acc.2 + h.headers)
    });
    assert_eq!(
        env.tables,
        st.shared_tables + st.mirror_tables + held.0,
        "env tables"
    );
    assert_eq!(
        env.external_spts,
        st.external_spts + held.1,
        "env external SPTs"
    );
    assert_eq!(env.headers, st.headers + held.2, "env headers");
}
