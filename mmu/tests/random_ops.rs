// SPDX-License-Identifier: GPL-2.0-only
//! Seeded random operation sequences against a plain model.
//!
//! Each run applies faults (private and shared, 4K/2M/1G, sometimes with a PFN that contradicts
//! what is mapped), zaps of random ranges and roots, private<->shared conversions and cache
//! flushes, and after **every** operation checks that the walk of both roots equals the model,
//! that every mirror table above the root has exactly one external SPT, that the recording
//! external table equals the mirror, and that the accounting balances. A variant makes the
//! external table answer "busy" at random. Seeds and op counts come from the environment
//! (`MMU_RANDOM_SEED`, `MMU_RANDOM_OPS`) so a failure can be replayed.

use mmu::cache::VcpuMmuCaches;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept, Npt, PagingFormat};
use mmu::tdp::{root_kind_of, Fault, FaultOutcome, ZapTarget};
use mmu::{Gfn, GfnKind, Level, MmuError, Pfn};
use testkit::{check_invariants, fault, leaves, td_mmu, Inject, Model, Rng, TestMmu};

const SHARED_PFN_BASE: u64 = 1 << 32;
const PRIVATE_PFN_BASE: u64 = 2 << 32;

/// Hot spots: GFN windows spread over several 1 GiB regions so faults build and share tables at
/// every level while the trees stay small enough to walk after every operation.
fn random_gfn(rng: &mut Rng) -> u64 {
    let region = rng.below(4) * (512 * 512) + rng.below(2) * (64 * 512);
    region + rng.below(2 * 512)
}

fn random_level(rng: &mut Rng) -> Level {
    match rng.below(10) {
        0..=5 => Level::L4K,
        6..=8 => Level::L2M,
        _ => Level::L1G,
    }
}

fn pfn_for(kind: GfnKind, gfn: u64, rng: &mut Rng) -> u64 {
    let base = match kind {
        GfnKind::Shared => SHARED_PFN_BASE,
        GfnKind::Private => PRIVATE_PFN_BASE,
    };
    // Mostly the memslot's PFN (aligned, huge pages possible); sometimes another page.
    if rng.chance(4) {
        base + gfn + 1 + rng.below(3)
    } else {
        base + gfn
    }
}

struct Runner<F: PagingFormat> {
    mmu: TestMmu<F>,
    caches: VcpuMmuCaches,
    model: Model,
    rng: Rng,
    busy: bool,
    counts: [u64; 6],
}

impl<F: PagingFormat> Runner<F> {
    fn new(seed: u64, busy_per_million: u32) -> Self {
        let mmu = td_mmu::<F>();
        if busy_per_million > 0 {
            mmu.external().inject(Inject::RandomBusy {
                per_million: busy_per_million,
                seed: seed | 1,
            });
        }
        Runner {
            mmu,
            caches: VcpuMmuCaches::new(),
            model: Model::default(),
            rng: Rng::new(seed),
            busy: busy_per_million > 0,
            counts: [0; 6],
        }
    }

    fn do_fault(&mut self, kind: GfnKind, gfn: u64) {
        let root = root_kind_of(kind);
        let pfn = pfn_for(kind, gfn, &mut self.rng);
        let f = Fault {
            gfn: Gfn::new(gfn),
            kind,
            pfn: Pfn::new(pfn),
            access: if self.rng.chance(80) {
                Access::RWX
            } else {
                Access::READ
            },
            write: self.rng.chance(50),
            max_level: random_level(&mut self.rng),
        };
        let existing = self.model.lookup(root, gfn);
        let r = fault(&self.mmu, &mut self.caches, &f);
        match (root, r) {
            (RootKind::Mirror, Ok(FaultOutcome::Mapped(level))) => {
                assert!(
                    existing.is_none(),
                    "mirror leaf replaced {existing:?} by {f:?}"
                );
                let pages = level.pages();
                let base = gfn & !(pages - 1);
                assert!(
                    self.model.overlapping(root, base, base + pages).is_empty(),
                    "mirror overlap"
                );
                assert!(level <= f.max_level);
                assert_eq!(gfn % pages, pfn % pages, "misaligned huge leaf");
                self.model.map(root, base, level.get(), pfn - (gfn - base));
                self.counts[0] += 1;
            }
            (RootKind::Mirror, Ok(FaultOutcome::Spurious)) => {
                let (base, leaf) = existing.expect("spurious fault on an unmapped private gfn");
                assert_eq!(
                    leaf.pfn + (gfn - base),
                    pfn,
                    "spurious with a different pfn"
                );
                self.counts[1] += 1;
            }
            (RootKind::Mirror, Err(MmuError::Conflict)) => {
                let (base, leaf) = existing.expect("conflict on an unmapped private gfn");
                assert_ne!(leaf.pfn + (gfn - base), pfn, "conflict with the same pfn");
                self.counts[2] += 1;
            }
            (RootKind::Shared, Ok(FaultOutcome::Mapped(level))) => {
                // The shared root maps at the goal level whatever is there.
                let mut goal = f.max_level;
                while goal > Level::L4K && gfn % goal.pages() != pfn % goal.pages() {
                    goal = goal.down().unwrap();
                }
                assert_eq!(level, goal, "shared fault level");
                let base = gfn & !(level.pages() - 1);
                self.model.map(root, base, level.get(), pfn - (gfn - base));
                self.counts[0] += 1;
            }
            (RootKind::Shared, Ok(FaultOutcome::Spurious)) => {
                let (base, leaf) = existing.expect("spurious fault on an unmapped shared gfn");
                assert_eq!(leaf.pfn + (gfn - base), pfn);
                self.counts[1] += 1;
            }
            (root, r) => panic!("unexpected {r:?} for {root:?} {f:?}, model has {existing:?}"),
        }
    }

    fn zap(&mut self, target: ZapTarget, start: u64, end: u64) {
        for attempt in 0.. {
            let r = {
                let g = self.mmu.write();
                self.mmu
                    .zap_range(&g, target, Gfn::new(start), Gfn::new(end))
            };
            match r {
                Ok(_) => break,
                Err(MmuError::ExternalBusy) if self.busy && attempt < 10_000 => {
                    // A partial zap must still leave mirror and external table in agreement.
                    check_invariants(&self.mmu, &[&self.caches]);
                }
                Err(e) => panic!("zap {target:?} [{start:#x}, {end:#x}): {e:?}"),
            }
        }
        if matches!(target, ZapTarget::Shared | ZapTarget::Both) {
            self.model.zap(RootKind::Shared, start, end);
        }
        if matches!(target, ZapTarget::Mirror | ZapTarget::Both) {
            self.model.zap(RootKind::Mirror, start, end);
        }
        self.counts[3] += 1;
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=44 => {
                let gfn = random_gfn(&mut self.rng);
                self.do_fault(GfnKind::Private, gfn);
            }
            45..=79 => {
                let gfn = random_gfn(&mut self.rng);
                self.do_fault(GfnKind::Shared, gfn);
            }
            80..=91 => {
                let start = random_gfn(&mut self.rng);
                let bits = self.rng.below(21);
                let len = 1 + self.rng.below(1 << bits);
                let target = match self.rng.below(3) {
                    0 => ZapTarget::Shared,
                    1 => ZapTarget::Mirror,
                    _ => ZapTarget::Both,
                };
                self.zap(target, start, start + len);
            }
            92..=97 => {
                // Convert a 2 MiB-aligned range (the memory-attribute code converts huge-aligned
                // ranges): drop one side, fault a page of the other.
                let start = random_gfn(&mut self.rng) & !511;
                let to_shared = self.rng.chance(50);
                let (zap, kind) = if to_shared {
                    (ZapTarget::Mirror, GfnKind::Shared)
                } else {
                    (ZapTarget::Shared, GfnKind::Private)
                };
                self.zap(zap, start, start + 512);
                let gfn = start + self.rng.below(512);
                self.do_fault(kind, gfn);
                self.counts[4] += 1;
            }
            _ => {
                self.mmu.free_vcpu_caches(&mut self.caches);
                self.counts[5] += 1;
            }
        }
    }

    fn check(&self, full_walk: bool) {
        let walk = check_invariants(&self.mmu, &[&self.caches]);
        assert_eq!(
            walk.shared,
            self.model.leaf_map(RootKind::Shared),
            "shared root differs from the model"
        );
        assert_eq!(
            walk.mirror,
            self.model.leaf_map(RootKind::Mirror),
            "mirror root differs from the model"
        );
        if full_walk {
            // The iterator-based walk must agree with the table scan.
            let g = self.mmu.read();
            assert_eq!(leaves(&self.mmu, &g, RootKind::Shared), walk.shared);
            assert_eq!(leaves(&self.mmu, &g, RootKind::Mirror), walk.mirror);
        }
    }

    fn finish(mut self) {
        eprintln!("before teardown: {:?}", self.mmu.stats());
        self.mmu.free_vcpu_caches(&mut self.caches);
        self.mmu.external().set_teardown(true);
        self.mmu.teardown();
        let env = self.mmu.env().counts();
        assert_eq!(
            (env.tables, env.external_spts, env.headers),
            (0, 0, 0),
            "pages leaked at teardown"
        );
        assert!(
            self.mmu.external().entries().is_empty(),
            "external table not emptied"
        );
        assert!(self.mmu.external().violations().is_empty());
        eprintln!(
            "mapped {} spurious {} conflict {} zaps {} conversions {} cache flushes {}",
            self.counts[0],
            self.counts[1],
            self.counts[2],
            self.counts[3],
            self.counts[4],
            self.counts[5]
        );
        assert!(
            self.counts[0] > 0 && self.counts[1] > 0 && self.counts[2] > 0 && self.counts[3] > 0
        );
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run<F: PagingFormat>(seed: u64, ops: u64, busy_per_million: u32) {
    let seed = env_u64("MMU_RANDOM_SEED", seed);
    let mut r = Runner::<F>::new(seed, busy_per_million);
    for i in 0..ops {
        r.step();
        if let Err(e) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.check(i % 64 == 0)))
        {
            eprintln!("seed {seed}: invariant broken after op {i}");
            std::panic::resume_unwind(e);
        }
    }
    r.finish();
}

#[test]
fn random_ops_ept_100k() {
    run::<Ept>(0x5eed_0001, env_u64("MMU_RANDOM_OPS", 100_000), 0);
}

#[test]
fn random_ops_npt_with_busy_external_table() {
    run::<Npt>(0x5eed_0002, env_u64("MMU_RANDOM_OPS", 100_000), 20_000);
}

#[test]
#[ignore = "long run: 10^6 operations"]
fn random_ops_ept_1m() {
    run::<Ept>(0x5eed_0003, 1_000_000, 5_000);
}
