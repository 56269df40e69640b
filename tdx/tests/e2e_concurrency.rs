// SPDX-License-Identifier: GPL-2.0-only
//! Threads faulting and zapping one TD over the software TDX module.
//!
//! Four vCPU threads fault private memory under the MMU's shared lock (SEPT.ADD and PAGE.AUG
//! run concurrently in the module), a zapper takes the exclusive lock for BLOCK/TRACK/REMOVE,
//! vCPUs enter and leave the TD (the epoch lock TRACK needs), and a debug reader issues
//! TDH.MEM.SEPT.RD, which takes the S-EPT tree shared and the entry lock, so the module answers
//! `TDX_OPERAND_BUSY` now and then on every path. The backend retries; nothing may fail for
//! good, and at the end the mirror must equal the S-EPT and teardown must return every page.

mod common;

use common::{private_fault, td_mmu_config};
use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::page::RootKind;
use mmu::tdp::{FaultOutcome, TdpMmu, ZapTarget};
use mmu::{Gfn, Gpa, Level, MmuError, Pfn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tdx::abi::{leaf, sept_state, status, SeptLevel};
use tdx::swmod::ModuleLine;
use tdx::Tdx;
use testkit::td::{
    backend as td_backend, build_td, host_page, sw_module_on, Backend, Stage, TdMmu,
};
use testkit::{HostEnv, Rng};

const GUEST_PAGES: u64 = 2048;
const MAX_ROUNDS: u64 = 8;

type Mmu<'a> = TdMmu<'a>;

testkit::per_module_line!(faults_zaps_vcpus_and_readers_contend_retry_and_end_consistent);

/// One run at a time: a run needs its threads to overlap for the module to answer BUSY, and two
/// runs side by side (one per line) on a small machine starve each other of that overlap.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn faults_zaps_vcpus_and_readers_contend_retry_and_end_consistent(line: ModuleLine) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = HostEnv::with_capacity(16384);
    let guest: Vec<_> = (0..GUEST_PAGES).map(|_| host_page(&env)).collect();
    let guest_base = guest[0].pfn().raw();
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 2, 4, Stage::Runnable);
    let vcpus: Vec<Pfn> = td.vcpus.iter().map(|v| v.hpa().pfn()).collect();
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let stop = AtomicBool::new(false);
    let reader_busy = AtomicU64::new(0);
    let zap_busy = AtomicU64::new(0);
    let faults = AtomicU64::new(0);

    // Whether the module answers BUSY at all depends on how the threads happen to overlap: a
    // small or busy machine can run a whole round without one collision. Rounds repeat (same
    // TD, new seeds) until one met BUSY, at most MAX_ROUNDS times.
    for round in 0..MAX_ROUNDS {
        stop.store(false, Ordering::Relaxed);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (mmu, faults, vcpu) = (&mmu, &faults, vcpus[t as usize]);
                let m = &m;
                s.spawn(move || {
                    let mut rng = Rng::new(100 + t + 16 * round);
                    let mut caches = VcpuMmuCaches::new();
                    for _ in 0..3000 {
                        // The vCPU is inside the TD most of the time, as a running one is.
                        m.vcpu_enter(vcpu);
                        let gfn = rng.below(GUEST_PAGES);
                        let max_level = if rng.chance(30) {
                            Level::L2M
                        } else {
                            Level::L4K
                        };
                        let f = private_fault(Gfn::new(gfn), Pfn::new(guest_base + gfn), max_level);
                        loop {
                            mmu.topup_vcpu_caches(&mut caches).expect("top-up");
                            let g = mmu.read();
                            match mmu.map(&g, &mut caches, &f) {
                                Ok(FaultOutcome::Retry) => {
                                    drop(g);
                                    // A vCPU waiting on a blocked entry leaves the TD meanwhile.
                                    m.vcpu_exit(vcpu);
                                    std::thread::yield_now();
                                    m.vcpu_enter(vcpu);
                                }
                                Ok(_) => break,
                                Err(e) => panic!("fault {f:?}: {e:?}"),
                            }
                        }
                        faults.fetch_add(1, Ordering::Relaxed);
                        if rng.chance(20) {
                            m.vcpu_exit(vcpu);
                        }
                    }
                    m.vcpu_exit(vcpu);
                    mmu.free_vcpu_caches(&mut caches);
                });
            }
            // The zapper.
            {
                let (mmu, stop, zap_busy) = (&mmu, &stop, &zap_busy);
                s.spawn(move || {
                    let mut rng = Rng::new(7 + round);
                    let mut split = SplitCache::new();
                    for _ in 0..300 {
                        let start = rng.below(GUEST_PAGES);
                        // Half the zaps are conversions of a few pages that split the 2M leaves
                        // they cover in part (DEMOTE).
                        let splits = rng.chance(50);
                        let len = 1 + rng.below(if splits { 64 } else { 600 });
                        loop {
                            if splits {
                                mmu.topup_split_cache(&mut split).expect("split top-up");
                            }
                            let g = mmu.write();
                            let (s, e) = (Gfn::new(start), Gfn::new(start + len));
                            let r = if splits {
                                mmu.zap_range_split(&g, ZapTarget::Mirror, s, e, &mut split)
                            } else {
                                mmu.zap_range(&g, ZapTarget::Mirror, s, e)
                            };
                            match r {
                                Ok(_) => break,
                                Err(MmuError::ExternalBusy) => {
                                    zap_busy.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!(
                                    "zap: {e:?} (last fatal {:#x})",
                                    mmu.external().stats().last_fatal_status
                                ),
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    mmu.free_split_cache(&mut split);
                    stop.store(true, Ordering::Relaxed);
                });
            }
            // The debug reader: SEPT.RD takes the tree shared and the entry lock.
            {
                let (stop, reader_busy, tdx) = (&stop, &reader_busy, &tdx);
                let tdr = td.tdr;
                s.spawn(move || {
                    let mut rng = Rng::new(9 + round);
                    while !stop.load(Ordering::Relaxed) {
                        let gpa = Gpa::new(rng.below(GUEST_PAGES) << 12);
                        match tdx.mem_sept_rd(tdr, gpa, SeptLevel::L4K) {
                            Ok(_) => {}
                            Err(e) if e.is_busy() => {
                                reader_busy.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) if e.class() == status::EPT_WALK_FAILED => {}
                            Err(e) => panic!("SEPT.RD: {e:?}"),
                        }
                    }
                });
            }
        });
        if backend.stats().busy_retries > 0 {
            break;
        }
    }

    let bs = backend.stats();
    eprintln!(
        "faults {} zap-busy {} reader-busy {} backend {:?} DEMOTE {} module errors: SEPT.ADD {} AUG {} BLOCK {} TRACK {} REMOVE {} DEMOTE {}",
        faults.load(Ordering::Relaxed),
        zap_busy.load(Ordering::Relaxed),
        reader_busy.load(Ordering::Relaxed),
        bs,
        m.calls(leaf::MEM_PAGE_DEMOTE),
        m.errors(leaf::MEM_SEPT_ADD),
        m.errors(leaf::MEM_PAGE_AUG),
        m.errors(leaf::MEM_RANGE_BLOCK),
        m.errors(leaf::MEM_TRACK),
        m.errors(leaf::MEM_PAGE_REMOVE),
        m.errors(leaf::MEM_PAGE_DEMOTE),
    );
    assert!(!mmu.is_bugged());
    assert!(
        bs.busy_retries > 0,
        "the module never answered busy in {MAX_ROUNDS} rounds: the test exercised nothing"
    );

    // Mirror ≡ S-EPT.
    let g = mmu.read();
    let mut mirror = std::collections::BTreeMap::new();
    mmu.for_each_leaf(&g, RootKind::Mirror, |gfn, level, l| {
        mirror.insert((level.get() - 1, gfn.raw() << 12), l.pfn.raw());
    })
    .expect("walk");
    drop(g);
    let mut sept = std::collections::BTreeMap::new();
    m.for_each_sept_entry(td.tdr.hpa().pfn(), |gpa, level, state, pfn| {
        if matches!(state, sept_state::PENDING | sept_state::MAPPED) {
            sept.insert((level.0, gpa), pfn.raw());
        }
        assert!(
            !matches!(
                state,
                sept_state::BLOCKED | sept_state::NL_BLOCKED | sept_state::PENDING_BLOCKED
            ),
            "blocked entry left at {gpa:#x}"
        );
    });
    assert_eq!(mirror, sept);

    backend.release_hkid(&td.vcpus).expect("release");
    mmu.teardown();
    let c = env.counts();
    assert_eq!((c.tables, c.external_spts, c.headers), (0, 0, 0));
    assert_eq!(bs.leaked, 0);
    drop(guest);
}
