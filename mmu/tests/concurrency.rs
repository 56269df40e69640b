// SPDX-License-Identifier: GPL-2.0-only
//! Concurrency: several vCPU threads fault overlapping ranges under the shared lock while
//! another thread zaps under the exclusive lock, as KVM does for mirror zaps.
//!
//! Every thread maps a GFN to the same PFN, so any outcome but `Mapped`/`Spurious` is a bug.
//! The recording external table refuses to set an entry twice or to remove one that is not
//! there, so "no page lost or mapped twice" is checked at every hook call; at the end the
//! mirror must equal the external table, the accounting must balance, and the successful hook
//! calls must add up exactly to what is mapped now (each change applied exactly once).

use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::spte::{Access, Ept, Npt, PagingFormat};
use mmu::tdp::{Fault, FaultOutcome, ZapTarget};
use mmu::{Gfn, GfnKind, Level, MmuError, Pfn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use testkit::{check_invariants, td_mmu, Inject, Rng, TestMmu};

const FAULTERS: usize = 4;

fn pfn_of(kind: GfnKind, gfn: u64) -> u64 {
    match kind {
        GfnKind::Shared => (1 << 32) + gfn,
        GfnKind::Private => (2 << 32) + gfn,
    }
}

struct Totals {
    mapped: AtomicU64,
    spurious: AtomicU64,
    retries: AtomicU64,
    zaps: AtomicU64,
    zap_busy: AtomicU64,
}

/// Faults at least `faults` times, then until `stop` is set.
fn faulter<F: PagingFormat>(
    mmu: &TestMmu<F>,
    seed: u64,
    faults: u64,
    stop: &AtomicBool,
    totals: &Totals,
) {
    let mut rng = Rng::new(seed);
    let mut caches = VcpuMmuCaches::new();
    let mut done = 0u64;
    while done < faults || !stop.load(Ordering::Relaxed) {
        done += 1;
        // Overlapping hot window: 2 MiB shared by all threads, in two 1 GiB regions.
        let region = rng.below(2);
        let gfn = region * (512 * 512) + rng.below(512);
        let kind = if rng.chance(60) {
            GfnKind::Private
        } else {
            GfnKind::Shared
        };
        // The second region maps 2M much more often, so zaps there split huge leaves.
        let max_level = if rng.chance(if region == 1 { 50 } else { 20 }) {
            Level::L2M
        } else {
            Level::L4K
        };
        let f = Fault {
            gfn: Gfn::new(gfn),
            kind,
            pfn: Pfn::new(pfn_of(kind, gfn)),
            access: Access::RWX,
            write: false,
            max_level,
        };
        loop {
            mmu.topup_vcpu_caches(&mut caches).expect("top-up");
            let g = mmu.read();
            match mmu.map(&g, &mut caches, &f) {
                Ok(FaultOutcome::Retry) => {
                    totals.retries.fetch_add(1, Ordering::Relaxed);
                    drop(g);
                    std::thread::yield_now();
                }
                Ok(FaultOutcome::Mapped(_)) => {
                    totals.mapped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(FaultOutcome::Spurious) => {
                    totals.spurious.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => panic!("fault {f:?}: {e:?}"),
            }
        }
    }
    mmu.free_vcpu_caches(&mut caches);
}

/// Zaps `zaps` times, then tells the faulters to stop.
fn zapper<F: PagingFormat>(
    mmu: &TestMmu<F>,
    seed: u64,
    zaps: u64,
    stop: &AtomicBool,
    totals: &Totals,
) {
    let mut rng = Rng::new(seed);
    let mut split = SplitCache::new();
    for _ in 0..zaps {
        let mut start = rng.below(2) * (512 * 512) + rng.below(512);
        if rng.chance(30) {
            start &= !511; // whole tables go too
        }
        let mut len = 1 + rng.below(1024);
        let target = match rng.below(3) {
            0 => ZapTarget::Shared,
            1 => ZapTarget::Mirror,
            _ => ZapTarget::Both,
        };
        // Half the zaps split the huge mirror leaves they cover in part: conversions of a few
        // pages, in the second region, where 2M faults are common; the others zap whole 2M
        // ranges there, so that 2M faults find the entry empty again.
        let splits = rng.chance(50);
        if splits {
            start = (512 * 512) + rng.below(512);
            len = 1 + rng.below(64);
        } else if start >= 512 * 512 {
            start &= !511;
            len = 512;
        }
        // A zap that met a busy external table must be repeated (faults on what it blocked
        // retry until then), after dropping the lock as a real caller would.
        loop {
            if splits {
                mmu.topup_split_cache(&mut split).expect("split top-up");
            }
            let g = mmu.write();
            let (s, e) = (Gfn::new(start), Gfn::new(start + len));
            let r = if splits {
                mmu.zap_range_split(&g, target, s, e, &mut split)
            } else {
                mmu.zap_range(&g, target, s, e)
            };
            match r {
                Ok(_) => {
                    totals.zaps.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(MmuError::ExternalBusy) => totals.zap_busy.fetch_add(1, Ordering::Relaxed),
                Err(e) => panic!("zap: {e:?}"),
            };
        }
        // Let the faulters rebuild what was zapped.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    mmu.free_split_cache(&mut split);
    stop.store(true, Ordering::Relaxed);
}

fn run<F: PagingFormat>(seed: u64, faults_per_thread: u64, zaps: u64, busy_per_million: u32) {
    let mmu: Arc<TestMmu<F>> = Arc::new(td_mmu::<F>());
    if busy_per_million > 0 {
        mmu.external().inject(Inject::RandomBusy {
            per_million: busy_per_million,
            seed,
        });
    }
    let totals = Arc::new(Totals {
        mapped: AtomicU64::new(0),
        spurious: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        zaps: AtomicU64::new(0),
        zap_busy: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let zap = {
        let (mmu, stop, totals) = (mmu.clone(), stop.clone(), totals.clone());
        std::thread::spawn(move || zapper(&mmu, seed ^ 0xdead, zaps, &stop, &totals))
    };
    let workers: Vec<_> = (0..FAULTERS)
        .map(|t| {
            let (mmu, totals, stop) = (mmu.clone(), totals.clone(), stop.clone());
            std::thread::spawn(move || {
                faulter(&mmu, seed + t as u64, faults_per_thread, &stop, &totals)
            })
        })
        .collect();
    zap.join().expect("zapper panicked");
    for w in workers {
        w.join().expect("faulter panicked");
    }

    let mut mmu = Arc::into_inner(mmu).expect("threads done");
    drop(mmu.write()); // frees pages parked by shared-lock walkers
    check_invariants(&mmu, &[]);
    let st = mmu.stats();
    let hooks = mmu.external().counts();
    // Each change applied exactly once: what was linked/set and not yet freed/removed is
    // exactly what the mirror holds (a split adds a table without a `link`).
    assert_eq!(
        hooks.link + hooks.split - hooks.free,
        st.external_spts as u64,
        "link/free balance"
    );
    // A split turns one leaf into 512 without a `set`.
    assert_eq!(
        hooks.set + 511 * hooks.split - hooks.remove,
        st.mirror_leaves.iter().sum::<usize>() as u64,
        "set/split/remove balance"
    );
    let t = &totals;
    eprintln!(
        "{}: mapped {} spurious {} retries {} zaps {} busy zaps {} hooks {:?}",
        F::NAME,
        t.mapped.load(Ordering::Relaxed),
        t.spurious.load(Ordering::Relaxed),
        t.retries.load(Ordering::Relaxed),
        t.zaps.load(Ordering::Relaxed),
        t.zap_busy.load(Ordering::Relaxed),
        hooks
    );
    assert!(t.zaps.load(Ordering::Relaxed) > 0, "the zapper never ran");
    mmu.external().inject(Inject::None);
    mmu.external().set_teardown(true);
    mmu.teardown();
    let env = mmu.env().counts();
    assert_eq!((env.tables, env.external_spts, env.headers), (0, 0, 0));
    assert_eq!(mmu.stats().pages(), 0);
}

#[test]
fn faults_race_with_zaps_ept() {
    run::<Ept>(11, 20_000, 500, 0);
}

#[test]
fn faults_race_with_zaps_npt_busy_external_table() {
    run::<Npt>(12, 20_000, 500, 10_000);
}

#[test]
fn faults_race_each_other_without_zaps_converge() {
    // Same hot window, no zapper: after all threads finish, every private gfn any thread
    // faulted is mapped exactly once (the external table would have refused a second set).
    let mmu: Arc<TestMmu<Ept>> = Arc::new(td_mmu::<Ept>());
    let totals = Arc::new(Totals {
        mapped: AtomicU64::new(0),
        spurious: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        zaps: AtomicU64::new(0),
        zap_busy: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..FAULTERS)
        .map(|t| {
            let (mmu, totals) = (mmu.clone(), totals.clone());
            let stop = Arc::new(AtomicBool::new(true));
            std::thread::spawn(move || faulter(&mmu, 100 + t as u64, 5_000, &stop, &totals))
        })
        .collect();
    for w in workers {
        w.join().expect("faulter panicked");
    }
    let mmu = Arc::into_inner(mmu).expect("threads done");
    check_invariants(&mmu, &[]);
    let hooks = mmu.external().counts();
    assert_eq!(hooks.remove + hooks.free + hooks.block, 0);
    assert_eq!(
        hooks.set,
        mmu.stats().mirror_leaves.iter().sum::<usize>() as u64
    );
    assert_eq!(
        totals.mapped.load(Ordering::Relaxed) + totals.spurious.load(Ordering::Relaxed),
        FAULTERS as u64 * 5_000
    );
}
