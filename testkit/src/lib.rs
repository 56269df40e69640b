// SPDX-License-Identifier: GPL-2.0-only
//! Host-side test kit for the core crates: an environment with a counting page arena
//! ([`HostEnv`]), a recording/failing external page table ([`RecordingExternal`]), a plain
//! reference model of what should be mapped ([`Model`]) and invariant checks.
//!
//! Test code: panics on broken invariants are the point here.

pub mod env;
pub mod external;
pub mod model;
pub mod td;

pub use env::{EnvCounts, HostEnv, HostRwLock, Sha2Compress, YieldHook};
pub use external::{HookCall, HookCounts, Inject, RecordingExternal};
pub use model::{Model, Rng};

use mmu::cache::{CacheHoldings, VcpuMmuCaches};
use mmu::external::ExternalPageTable;
use mmu::lock::MmuLockHeld;
use mmu::page::RootKind;
use mmu::spte::PagingFormat;
use mmu::spte::{is_external_blocked, SpteKind};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu};
use mmu::{Gfn, GpaWidth, Level, MmuError};
use std::collections::BTreeMap;

/// Access to the host environment behind an MMU's `E` (owned or borrowed).
pub trait HostEnvRef: mmu::env::MmuEnv {
    /// The environment.
    fn host(&self) -> &HostEnv;
}

impl HostEnvRef for HostEnv {
    fn host(&self) -> &HostEnv {
        self
    }
}

impl HostEnvRef for &HostEnv {
    fn host(&self) -> &HostEnv {
        self
    }
}

/// Access to the recording external table behind an MMU's `X` (owned or borrowed).
pub trait RecRef: ExternalPageTable {
    /// The recording table.
    fn rec(&self) -> &RecordingExternal;
}

impl RecRef for RecordingExternal {
    fn rec(&self) -> &RecordingExternal {
        self
    }
}

impl RecRef for &RecordingExternal {
    fn rec(&self) -> &RecordingExternal {
        self
    }
}

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
pub fn fault<F: PagingFormat, E: HostEnvRef, X: ExternalPageTable>(
    mmu: &TdpMmu<F, E, X>,
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

/// The leaves of both roots, as found by [`check_invariants`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Leaves of the shared root.
    pub shared: LeafMap,
    /// Leaves of the mirror root.
    pub mirror: LeafMap,
}

/// Checks everything that must hold between operations, and returns the leaves it found:
/// - every mirror table page above the root has exactly one external SPT (and the root none),
///   and no shared page has one;
/// - the external table equals the mirror (tables by external PFN, leaves by data PFN);
/// - the MMU's accounting equals what the walk finds and what the environment has handed out
///   (given what the `caches` hold).
///
/// One pass over every table page of each root (headers reached through `for_each_table`,
/// entries decoded with the format), so it is cheap enough to run after every operation.
pub fn check_invariants<F: PagingFormat, E: HostEnvRef, X: RecRef>(
    mmu: &TdpMmu<F, E, X>,
    caches: &[&VcpuMmuCaches],
) -> Walk {
    check_invariants_with(mmu, caches, CacheHoldings::default())
}

/// [`check_invariants`], with `extra` held outside the vCPU caches (a split cache).
pub fn check_invariants_with<F: PagingFormat, E: HostEnvRef, X: RecRef>(
    mmu: &TdpMmu<F, E, X>,
    caches: &[&VcpuMmuCaches],
    extra: CacheHoldings,
) -> Walk {
    let g = mmu.read();
    let st = mmu.stats();
    let mut tables = [0usize; 2];
    let mut leaf_counts = [[0usize; 3]; 2];
    let mut walk = Walk::default();
    let mut ext_expect = BTreeMap::new();
    let mut mirror_blocked = std::collections::BTreeSet::new();
    let slot_gfn = |gfn: u64| match mmu.config().shared_bit() {
        Some(sb) => sb.strip(Gfn::new(gfn)).raw(),
        None => gfn,
    };
    for (i, root) in [RootKind::Shared, RootKind::Mirror].into_iter().enumerate() {
        if root == RootKind::Mirror && !mmu.config().private {
            continue;
        }
        let out = if i == 0 {
            &mut walk.shared
        } else {
            &mut walk.mirror
        };
        mmu.for_each_table(&g, root, |page| {
            tables[i] += 1;
            let role = page.role();
            assert_eq!(role.root_kind, root);
            match (root, role.is_root, page.external_spt()) {
                (RootKind::Mirror, false, Some(spt)) => {
                    let entry_level = role.level.get() + 1;
                    ext_expect.insert((entry_level, page.gfn().raw()), (spt.pfn().raw(), false));
                    assert!(
                        mmu.env().host().is_allocated(spt.pfn()),
                        "external SPT not allocated"
                    );
                }
                (RootKind::Mirror, false, None) => panic!("mirror page without external SPT"),
                (_, _, None) => {}
                (_, _, Some(_)) => panic!("external SPT on a root or shared page: {role:?}"),
            }
            for (idx, raw) in page.table().iter().enumerate() {
                if is_external_blocked(raw) {
                    assert_eq!(root, RootKind::Mirror, "blocked mark in the shared root");
                    let gfn = page.gfn().raw() + idx as u64 * role.level.pages();
                    mirror_blocked.insert((role.level.get(), gfn));
                }
                if let SpteKind::Leaf(leaf) = F::decode(raw, role.level) {
                    let gfn = page.gfn().raw() + idx as u64 * role.level.pages();
                    assert!(role.level <= Level::L1G, "leaf above 1G");
                    leaf_counts[i][role.level.get() as usize - 1] += 1;
                    out.insert((slot_gfn(gfn), role.level.get()), leaf.pfn.raw());
                    if root == RootKind::Mirror {
                        ext_expect.insert((role.level.get(), gfn), (leaf.pfn.raw(), true));
                    }
                }
            }
        })
        .expect("walk tables");
    }
    drop(g);
    if mmu.config().private {
        let entries = mmu.external().rec().entries();
        let ext: BTreeMap<_, _> = entries
            .iter()
            .map(|(&k, e)| (k, (e.pfn.raw(), e.leaf)))
            .collect();
        assert_eq!(ext, ext_expect, "external table differs from the mirror");
        let ext_blocked: std::collections::BTreeSet<_> = entries
            .iter()
            .filter(|(_, e)| e.blocked.is_some())
            .map(|(&k, _)| k)
            .collect();
        assert_eq!(
            ext_blocked, mirror_blocked,
            "blocked entries differ between mirror and external"
        );
    }
    let violations = mmu.external().rec().violations();
    assert!(
        violations.is_empty(),
        "external rules broken: {violations:?}"
    );

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
    assert_eq!(st.shared_leaves, leaf_counts[0], "shared leaf accounting");
    assert_eq!(st.mirror_leaves, leaf_counts[1], "mirror leaf accounting");
    let env = mmu.env().host().counts();
    let held = caches.iter().fold(
        (extra.tables, extra.external_spts, extra.headers),
        |acc, c| {
            let h = c.holdings();
            (acc.0 + h.tables, acc.1 + h.external_spts, acc.2 + h.headers)
        },
    );
    assert_eq!(
        env.tables,
        st.shared_tables + st.mirror_tables + held.0,
        "env tables"
    );
    assert_eq!(
        env.external_spts,
        st.external_spts + held.1 + st.leaked_external_spts,
        "env external SPTs"
    );
    assert_eq!(env.headers, st.headers + held.2, "env headers");
    walk
}
