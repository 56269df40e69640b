//! Huge private pages: faults that map 2M (and 1G) mirror leaves, and zaps that cover part of
//! one and split it (`TdpMmu::zap_range_split`) instead of dropping the whole huge page.
//!
//! Every test checks the invariants of the test kit after each step: the recording external
//! table equals the mirror entry by entry (blocked state included), its S-EPT-like rules were
//! kept (a split only of a blocked leaf whose block was flushed), and the accounting balances
//! with what the vCPU and split caches hold.

use mmu::cache::{SplitCache, VcpuMmuCaches, MAX_SPLITS_PER_ZAP};
use mmu::external::ExternalError;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapStats, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use testkit::{
    check_invariants_with, HookCall, HostEnv, Inject, LeafMap, RecordingExternal, TestMmu,
};

const P2M: u64 = 512;
const P1G: u64 = 512 * 512;
/// A 1G-aligned host frame, so every huge mapping below is possible.
const PFN: u64 = 0x4000_0000;

fn private(gfn: u64, pfn: u64, max_level: Level) -> Fault {
    Fault {
        gfn: Gfn::new(gfn),
        kind: GfnKind::Private,
        pfn: Pfn::new(pfn),
        access: Access::RWX,
        write: true,
        max_level,
    }
}

/// A TD MMU mapping up to `max`, one vCPU's caches and a split cache.
struct Fx {
    mmu: TestMmu<Ept>,
    c: VcpuMmuCaches,
    split: SplitCache,
}

impl Fx {
    fn new(max: Level) -> Self {
        let cfg = MmuConfig {
            max_level: max,
            ..MmuConfig::td(GpaWidth::Bits48)
        };
        let mmu = TdpMmu::new(
            HostEnv::new(),
            RecordingExternal::new(cfg.root_level()),
            cfg,
        )
        .expect("roots");
        Fx {
            mmu,
            c: VcpuMmuCaches::new(),
            split: SplitCache::new(),
        }
    }

    fn fault(&mut self, f: Fault) -> FaultOutcome {
        let r = testkit::fault(&self.mmu, &mut self.c, &f).expect("fault");
        self.check();
        r
    }

    fn topup_split(&mut self) {
        self.mmu
            .topup_split_cache(&mut self.split)
            .expect("split top-up");
    }

    fn zap_split(&mut self, target: ZapTarget, start: u64, end: u64) -> Result<ZapStats, MmuError> {
        let g = self.mmu.write();
        let r =
            self.mmu
                .zap_range_split(&g, target, Gfn::new(start), Gfn::new(end), &mut self.split);
        drop(g);
        self.check();
        r
    }

    fn leaves(&self, root: RootKind) -> LeafMap {
        let g = self.mmu.read();
        testkit::leaves(&self.mmu, &g, root)
    }

    fn check(&self) {
        check_invariants_with(&self.mmu, &[&self.c], self.split.holdings());
    }

    fn log_on(&self) {
        self.mmu.external().set_logging(true);
        self.mmu.external().clear_log();
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.mmu.free_vcpu_caches(&mut self.c);
        self.mmu.free_split_cache(&mut self.split);
        self.mmu.external().set_teardown(true);
    }
}

/// The 4K leaves of `[from, to)` mapping `PFN + (gfn - base)`, except `holes`.
fn small_leaves(base: u64, from: u64, to: u64, holes: &[u64]) -> LeafMap {
    (from..to)
        .filter(|g| !holes.contains(g))
        .map(|g| ((g, 1), PFN + (g - base)))
        .collect()
}

#[test]
fn a_2m_private_fault_maps_one_2m_leaf_with_one_set() {
    let mut fx = Fx::new(Level::L2M);
    fx.log_on();
    assert_eq!(
        fx.fault(private(P2M + 7, PFN + 7, Level::L2M)),
        FaultOutcome::Mapped(Level::L2M)
    );
    let sets: Vec<_> = fx
        .mmu
        .external()
        .log()
        .into_iter()
        .filter(|c| matches!(c, HookCall::Set(..)))
        .collect();
    assert_eq!(
        sets,
        [HookCall::Set(Gfn::new(P2M), Level::L2M, Pfn::new(PFN))]
    );
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        [((P2M, 2), PFN)].into_iter().collect()
    );
}

#[test]
fn a_2m_fault_over_a_range_with_a_4k_leaf_maps_4k() {
    let mut fx = Fx::new(Level::L2M);
    assert_eq!(
        fx.fault(private(P2M + 3, PFN + 3, Level::L4K)),
        FaultOutcome::Mapped(Level::L4K)
    );
    // The 2M entry is a table now: the huge fault maps 4K instead of replacing it.
    assert_eq!(
        fx.fault(private(P2M, PFN, Level::L2M)),
        FaultOutcome::Mapped(Level::L4K)
    );
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        small_leaves(P2M, P2M, P2M + 4, &[1 + P2M, 2 + P2M])
    );
}

#[test]
fn split_cache_top_up_holds_two_splits_for_2m_and_four_with_1g() {
    for (max, want) in [(Level::L2M, 2), (Level::L1G, 4)] {
        let mut fx = Fx::new(max);
        assert_eq!(fx.mmu.config().splits_per_zap(), want);
        fx.topup_split();
        let h = fx.split.holdings();
        assert_eq!((h.tables, h.external_spts, h.headers), (want, want, want));
        assert_eq!(fx.split.splits(), want);
        fx.check();
    }
    assert_eq!(MmuConfig::vm(GpaWidth::Bits48).splits_per_zap(), 0);
    const { assert!(MAX_SPLITS_PER_ZAP >= 4) };
    let fx = Fx::new(Level::L2M);
    drop(fx);
}

#[test]
fn zapping_4k_out_of_a_2m_leaf_splits_it_and_keeps_the_other_511() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    fx.topup_split();
    fx.log_on();
    let z = fx.zap_split(ZapTarget::Mirror, P2M + 5, P2M + 6).unwrap();
    assert_eq!(
        z,
        ZapStats {
            leaves: 1,
            tables: 0,
            blocked: 2,
            flushes: 2,
            splits: 1
        }
    );
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        small_leaves(P2M, P2M, 2 * P2M, &[P2M + 5])
    );
    let log = fx.mmu.external().log();
    let HookCall::Split(g, l, p, spt) = log[2] else {
        panic!("third call is not the split: {log:?}");
    };
    assert_eq!((g, l, p), (Gfn::new(P2M), Level::L2M, Pfn::new(PFN)));
    assert_eq!(
        log,
        [
            HookCall::Block(Gfn::new(P2M), Level::L2M, true),
            HookCall::Flush,
            HookCall::Split(Gfn::new(P2M), Level::L2M, Pfn::new(PFN), spt),
            HookCall::Block(Gfn::new(P2M + 5), Level::L4K, true),
            HookCall::Flush,
            HookCall::Remove(Gfn::new(P2M + 5), Level::L4K, Pfn::new(PFN + 5)),
        ]
    );
    assert_eq!(fx.split.splits(), 1, "one bundle used");
    let st = fx.mmu.stats();
    assert_eq!(st.mirror_leaves, [511, 0, 0]);
    // The split itself maps and unmaps nothing: 512 frames came in with the 2M leaf, one went.
    assert_eq!((st.frames_mapped, st.frames_zapped), ([0, 512], [0, 1]));
}

#[test]
fn a_split_keeps_access_and_dirty_bits_and_the_pages_refault_spurious() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    let before = {
        let g = fx.mmu.read();
        fx.mmu.lookup(&g, GfnKind::Private, Gfn::new(P2M)).unwrap()
    };
    fx.topup_split();
    fx.zap_split(ZapTarget::Mirror, P2M, P2M + 1).unwrap();
    let g = fx.mmu.read();
    let (level, leaf) = fx
        .mmu
        .lookup(&g, GfnKind::Private, Gfn::new(P2M + 9))
        .unwrap()
        .unwrap();
    drop(g);
    let old = before.unwrap().1;
    assert_eq!(level, Level::L4K);
    assert_eq!(
        (leaf.pfn, leaf.access, leaf.accessed, leaf.dirty),
        (Pfn::new(PFN + 9), old.access, old.accessed, old.dirty)
    );
    // What is still mapped faults spurious; the hole refaults at 4K, never 2M again.
    assert_eq!(
        fx.fault(private(P2M + 9, PFN + 9, Level::L2M)),
        FaultOutcome::Spurious
    );
    assert_eq!(
        fx.fault(private(P2M, PFN, Level::L2M)),
        FaultOutcome::Mapped(Level::L4K)
    );
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        small_leaves(P2M, P2M, 2 * P2M, &[])
    );
}

#[test]
fn a_range_across_two_2m_leaves_splits_both_in_one_round() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    fx.fault(private(2 * P2M, PFN + P2M, Level::L2M));
    fx.topup_split();
    let z = fx
        .zap_split(ZapTarget::Mirror, P2M + 100, 2 * P2M + 100)
        .unwrap();
    assert_eq!((z.splits, z.leaves, z.flushes), (2, 512, 2));
    let mut want = small_leaves(P2M, P2M, P2M + 100, &[]);
    want.extend(small_leaves(P2M, 2 * P2M + 100, 3 * P2M, &[]));
    assert_eq!(fx.leaves(RootKind::Mirror), want);
}

#[test]
fn a_range_that_covers_whole_huge_leaves_splits_nothing_and_needs_no_cache() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    fx.fault(private(2 * P2M, PFN + P2M, Level::L2M));
    let z = fx.zap_split(ZapTarget::Mirror, P2M, 2 * P2M).unwrap();
    assert_eq!((z.splits, z.leaves), (0, 1));
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        [((2 * P2M, 2), PFN + P2M)].into_iter().collect()
    );
    // An empty range and a range over nothing mapped split nothing either.
    assert_eq!(fx.zap_split(ZapTarget::Mirror, 5, 5).unwrap().splits, 0);
    assert_eq!(fx.zap_split(ZapTarget::Mirror, 7, 9).unwrap().splits, 0);
}

#[test]
fn without_enough_in_the_cache_the_zap_changes_nothing() {
    let mut fx = Fx::new(Level::L2M);
    for i in 1..4 {
        fx.fault(private(i * P2M, PFN + i * P2M, Level::L2M));
    }
    let before = fx.leaves(RootKind::Mirror);
    fx.log_on();
    // An empty cache, one split needed.
    assert_eq!(
        fx.zap_split(ZapTarget::Both, P2M + 1, P2M + 2),
        Err(MmuError::NoMemory)
    );
    assert_eq!(fx.leaves(RootKind::Mirror), before);
    assert!(fx.mmu.external().log().is_empty(), "no hook was called");
    // Two bundles; one split uses one.
    fx.topup_split();
    assert_eq!(
        fx.zap_split(ZapTarget::Mirror, 3 * P2M + 1, 3 * P2M + 2)
            .unwrap()
            .splits,
        1
    );
    assert_eq!(fx.split.splits(), 1);
    let before = fx.leaves(RootKind::Mirror);
    fx.mmu.external().clear_log();
    // Two splits needed, one bundle left.
    assert_eq!(
        fx.zap_split(ZapTarget::Mirror, P2M + 1, 2 * P2M + 1),
        Err(MmuError::NoMemory)
    );
    assert_eq!(fx.leaves(RootKind::Mirror), before);
    assert!(fx.mmu.external().log().is_empty(), "no hook was called");
    assert!(!fx.mmu.is_bugged());
}

#[test]
fn a_1g_leaf_splits_into_2m_leaves_then_the_boundary_2m_into_4k() {
    let mut fx = Fx::new(Level::L1G);
    assert_eq!(
        fx.fault(private(P1G, PFN, Level::L1G)),
        FaultOutcome::Mapped(Level::L1G)
    );
    fx.topup_split();
    let z = fx.zap_split(ZapTarget::Mirror, P1G + 5, P1G + 6).unwrap();
    assert_eq!(
        (z.splits, z.leaves, z.flushes, z.blocked),
        (2, 1, 3, 3),
        "1G → 2M, then the first 2M → 4K; one flush per split level and one for the leaves"
    );
    let mut want = small_leaves(P1G, P1G, P1G + P2M, &[P1G + 5]);
    for i in 1..512 {
        want.insert((P1G + i * P2M, 2), PFN + i * P2M);
    }
    assert_eq!(fx.leaves(RootKind::Mirror), want);
    // A 2M-aligned boundary inside the 1G leaf needs only the 1G split.
    fx.fault(private(2 * P1G, PFN, Level::L1G));
    fx.topup_split();
    let z = fx
        .zap_split(ZapTarget::Mirror, 2 * P1G + 3 * P2M, 2 * P1G + 4 * P2M)
        .unwrap();
    assert_eq!((z.splits, z.leaves), (1, 1));
}

#[test]
fn both_roots_the_shared_huge_leaf_goes_whole_the_private_one_is_split() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    let mut f = private(3 * P2M, PFN + P2M, Level::L2M);
    f.kind = GfnKind::Shared;
    fx.fault(f);
    fx.topup_split();
    // Zap 4K out of both: GFN 3·512+1 (shared) and 512+1 (private) in one range.
    let z = fx.zap_split(ZapTarget::Both, P2M + 1, 3 * P2M + 2).unwrap();
    assert_eq!(z.splits, 1);
    assert!(
        fx.leaves(RootKind::Shared).is_empty(),
        "shared: zapped whole"
    );
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        small_leaves(P2M, P2M, P2M + 1, &[])
    );
}

#[test]
fn a_busy_split_leaves_the_leaf_blocked_and_the_bundle_cached_then_a_retry_finishes() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    fx.topup_split();
    let held = fx.split.holdings();
    // Calls of the zap: block (n), flush (n+1), split (n+2).
    let n = fx.mmu.external().calls();
    fx.mmu
        .external()
        .inject(Inject::At(n + 2, ExternalError::Busy));
    assert_eq!(
        fx.zap_split(ZapTarget::Mirror, P2M + 5, P2M + 6),
        Err(MmuError::ExternalBusy)
    );
    assert_eq!(fx.split.holdings(), held, "the bundle went back");
    assert_eq!(
        fx.leaves(RootKind::Mirror),
        [((P2M, 2), PFN)].into_iter().collect(),
        "still one 2M leaf (blocked in both tables: the invariants check that)"
    );
    // A fault on the blocked leaf retries rather than building on it.
    {
        let g = fx.mmu.read();
        fx.mmu.topup_vcpu_caches(&mut fx.c).unwrap();
        assert_eq!(
            fx.mmu
                .map(&g, &mut fx.c, &private(P2M + 9, PFN + 9, Level::L2M)),
            Ok(FaultOutcome::Retry)
        );
    }
    let z = fx.zap_split(ZapTarget::Mirror, P2M + 5, P2M + 6).unwrap();
    assert_eq!((z.splits, z.leaves), (1, 1));
    assert_eq!(z.blocked, 1, "the huge leaf was blocked already");
}

#[test]
fn a_fatal_split_marks_the_vm_bugged_and_teardown_still_returns_everything() {
    let mut fx = Fx::new(Level::L2M);
    fx.fault(private(P2M, PFN, Level::L2M));
    fx.topup_split();
    let n = fx.mmu.external().calls();
    fx.mmu
        .external()
        .inject(Inject::At(n + 2, ExternalError::Fatal));
    assert_eq!(
        fx.zap_split(ZapTarget::Mirror, P2M + 5, P2M + 6),
        Err(MmuError::Bugged)
    );
    assert!(fx.mmu.is_bugged());
    assert_eq!(
        fx.zap_split(ZapTarget::Mirror, P2M + 5, P2M + 6),
        Err(MmuError::Bugged)
    );
}

#[test]
fn teardown_after_splits_returns_every_page() {
    let env_counts;
    {
        let mut fx = Fx::new(Level::L2M);
        for i in 1..4 {
            fx.fault(private(i * P2M, PFN + i * P2M, Level::L2M));
        }
        fx.topup_split();
        fx.zap_split(ZapTarget::Mirror, P2M + 1, 3 * P2M + 7)
            .unwrap();
        fx.topup_split();
        fx.zap_split(ZapTarget::Mirror, 3 * P2M + 9, 3 * P2M + 10)
            .unwrap();
        let mut mmu_fx = fx;
        mmu_fx.mmu.free_vcpu_caches(&mut mmu_fx.c);
        mmu_fx.mmu.free_split_cache(&mut mmu_fx.split);
        mmu_fx.mmu.external().set_teardown(true);
        mmu_fx.mmu.teardown();
        env_counts = mmu_fx.mmu.env().counts();
        assert_eq!(mmu_fx.mmu.stats().pages(), 0);
    }
    assert_eq!(
        (
            env_counts.tables,
            env_counts.external_spts,
            env_counts.headers
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_vm_without_private_memory_zaps_shared_ranges_with_an_empty_cache() {
    let cfg = MmuConfig::vm(GpaWidth::Bits48);
    let mmu: TestMmu<Ept> = TdpMmu::new(
        HostEnv::new(),
        RecordingExternal::new(cfg.root_level()),
        cfg,
    )
    .unwrap();
    let mut c = VcpuMmuCaches::new();
    let mut f = private(P2M, PFN, Level::L2M);
    f.kind = GfnKind::Shared;
    testkit::fault(&mmu, &mut c, &f).unwrap();
    let mut split = SplitCache::new();
    let g = mmu.write();
    let z = mmu
        .zap_range_split(
            &g,
            ZapTarget::Shared,
            Gfn::new(P2M + 1),
            Gfn::new(P2M + 2),
            &mut split,
        )
        .unwrap();
    assert_eq!((z.splits, z.leaves), (0, 1));
    assert_eq!(
        mmu.zap_range_split(&g, ZapTarget::Mirror, Gfn::new(0), Gfn::new(1), &mut split),
        Err(MmuError::NoPrivateRoot)
    );
    drop(g);
    mmu.free_vcpu_caches(&mut c);
}
