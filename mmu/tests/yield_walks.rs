//! Long walks under the exclusive lock yield when the environment asks (upstream
//! `tdp_mmu_iter_cond_resched`): zaps of both roots and whole-range write-protection drop the
//! lock and resume at the next GFN, with the same result as a walk that never yields; a TD's
//! mirror zap keeps BLOCK → TRACK → REMOVE for every entry across the yields; a guard taken
//! with `write()` (a caller that must not sleep) and the bitmap-word write-protection never
//! yield.

use mmu::cache::VcpuMmuCaches;
use mmu::env::MmuEnv;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept, Npt, PagingFormat};
use mmu::tdp::{Fault, ZapTarget};
use mmu::{Gfn, GfnKind, Level, Pfn};
use std::sync::{Arc, Mutex};
use testkit::{check_invariants, HookCall, LeafMap, TestMmu, Walk};

const P2M: u64 = 512;
const PFN: u64 = 0x4000_0000;

fn fault(gfn: u64, kind: GfnKind, max_level: Level) -> Fault {
    Fault {
        gfn: Gfn::new(gfn),
        kind,
        pfn: Pfn::new(PFN + gfn),
        access: Access::RWX,
        write: true,
        max_level,
    }
}

/// Maps a spread of 4 KiB pages of `kind` over 3 MiB-ish (three 2M ranges, holes between), a
/// 2M leaf, and a page far away (its own tables up to the top).
fn populate<F: PagingFormat>(mmu: &TestMmu<F>, c: &mut VcpuMmuCaches, kind: GfnKind) {
    for g in (0..3 * P2M).step_by(3) {
        testkit::fault(mmu, c, &fault(g, kind, Level::L4K)).expect("fault");
    }
    testkit::fault(mmu, c, &fault(4 * P2M, kind, Level::L2M)).expect("fault");
    testkit::fault(mmu, c, &fault(512 * P2M + 9, kind, Level::L4K)).expect("fault");
}

fn leaves<F: PagingFormat>(mmu: &TestMmu<F>, root: RootKind) -> LeafMap {
    let g = mmu.read();
    testkit::leaves(mmu, &g, root)
}

/// Runs `op` on two identical MMUs, one asked to yield at every `every`-th check; returns the
/// yields and both walks after the operation.
fn twice<F: PagingFormat>(
    new: fn() -> TestMmu<F>,
    kind: GfnKind,
    every: usize,
    op: impl Fn(&TestMmu<F>, bool),
) -> (usize, Walk, Walk, Vec<HookCall>, Vec<HookCall>) {
    let mut out = Vec::new();
    for yielding in [false, true] {
        let mmu = new();
        let mut c = VcpuMmuCaches::new();
        populate(&mmu, &mut c, kind);
        mmu.external().set_logging(true);
        mmu.external().clear_log();
        if yielding {
            mmu.env().mmu_lock().yield_every(every);
        }
        op(&mmu, true);
        mmu.env().mmu_lock().yield_every(0);
        let walk = check_invariants(&mmu, &[&c]);
        assert!(
            mmu.external().violations().is_empty(),
            "{:?}",
            mmu.external().violations()
        );
        out.push((mmu.env().mmu_lock().yields(), walk, mmu.external().log()));
        mmu.free_vcpu_caches(&mut c);
        mmu.external().set_teardown(true);
    }
    let (y1, w1, l1) = out.pop().expect("yielding run");
    let (y0, w0, l0) = out.pop().expect("plain run");
    assert_eq!(y0, 0, "the plain run never yields");
    (y1, w0, w1, l0, l1)
}

#[test]
fn a_shared_zap_that_yields_resumes_and_zaps_the_same() {
    for every in [1, 2, 7, 50] {
        let (yields, plain, yielded, _, _) =
            twice(testkit::vm_mmu::<Npt>, GfnKind::Shared, every, |m, _| {
                let g = m.write_may_yield();
                m.zap_range(&g, ZapTarget::Shared, Gfn::new(1), Gfn::new(4 * P2M + 1))
                    .expect("zap");
            });
        assert!(yields > 0, "every {every}: the zap yielded");
        assert_eq!(plain, yielded, "every {every}: same result");
        // What stays: GFN 0 and the page far away.
        assert_eq!(
            yielded.shared.keys().copied().collect::<Vec<_>>(),
            [(0, 1), (512 * P2M + 9, 1)]
        );
    }
}

#[test]
fn a_mirror_zap_that_yields_keeps_block_track_remove_for_every_entry() {
    for every in [1, 3, 11] {
        let (yields, plain, yielded, log0, log1) =
            twice(testkit::td_mmu::<Ept>, GfnKind::Private, every, |m, _| {
                let g = m.write_may_yield();
                m.zap_range(&g, ZapTarget::Mirror, Gfn::new(1), Gfn::new(4 * P2M + 1))
                    .expect("zap");
            });
        assert!(yields > 0, "every {every}: the zap yielded");
        assert_eq!(plain, yielded, "every {every}: same result");
        assert_eq!(
            log0, log1,
            "every {every}: the same hook calls in the same order"
        );
        // Every REMOVE follows a BLOCK of the same entry and a FLUSH after that BLOCK.
        for (i, call) in log1.iter().enumerate() {
            if let HookCall::Remove(gfn, level, _) = call {
                let block = log1[..i]
                    .iter()
                    .rposition(|c| {
                        *c == HookCall::Block(*gfn, *level, true)
                            || *c == HookCall::Block(*gfn, *level, false)
                    })
                    .unwrap_or_else(|| panic!("REMOVE {gfn:?} without a BLOCK"));
                assert!(
                    log1[block..i].contains(&HookCall::Flush),
                    "REMOVE {gfn:?} without a FLUSH after its BLOCK"
                );
            }
        }
        assert!(log1.iter().any(|c| matches!(c, HookCall::Remove(..))));
    }
}

#[test]
fn a_write_protect_pass_that_yields_protects_the_same() {
    let (yields, plain, yielded, _, _) =
        twice(testkit::vm_mmu::<Npt>, GfnKind::Shared, 5, |m, _| {
            let g = m.write_may_yield();
            m.write_protect_range(&g, Gfn::new(0), Gfn::new(5 * P2M))
                .expect("write-protect");
        });
    assert!(yields > 0);
    assert_eq!(plain, yielded);
    // Write-protection is in the entries: compare them through a second pass that finds
    // nothing left to protect in either.
    let mmu = testkit::vm_mmu::<Npt>();
    let mut c = VcpuMmuCaches::new();
    populate(&mmu, &mut c, GfnKind::Shared);
    mmu.env().mmu_lock().yield_every(3);
    let g = mmu.write_may_yield();
    let first = mmu
        .write_protect_range(&g, Gfn::new(0), Gfn::new(5 * P2M))
        .expect("first");
    let again = mmu
        .write_protect_range(&g, Gfn::new(0), Gfn::new(5 * P2M))
        .expect("again");
    drop(g);
    assert_eq!(first.protected, P2M as usize, "every 4K leaf of the range");
    assert_eq!(again.protected, 0, "none was missed across the yields");
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn walks_that_must_not_sleep_never_yield() {
    let mmu = testkit::vm_mmu::<Npt>();
    let mut c = VcpuMmuCaches::new();
    populate(&mmu, &mut c, GfnKind::Shared);
    mmu.env().mmu_lock().yield_every(1);
    // A plain write guard: the holder cannot sleep (a non-blockable notifier range).
    let g = mmu.write();
    mmu.zap_range(&g, ZapTarget::Shared, Gfn::new(0), Gfn::new(P2M))
        .expect("zap");
    drop(g);
    // Bitmap words (GET/CLEAR_DIRTY_LOG) hold the lock throughout, as upstream.
    let g = mmu.write_may_yield();
    mmu.write_protect_masked(&g, (1..3).map(|w| (Gfn::new(w * 64), u64::MAX)))
        .expect("masked");
    drop(g);
    assert_eq!(mmu.env().mmu_lock().yields(), 0);
    assert!(leaves(&mmu, RootKind::Shared)
        .keys()
        .all(|(g, _)| *g >= P2M));
    mmu.free_vcpu_caches(&mut c);
}

/// HOOK(zapyield): a shared zap that yields has asked for the remote TLB flush of everything
/// it unmapped before each yield (upstream `tdp_mmu_iter_cond_resched` with `flush`: another
/// vCPU or fault running while the lock is dropped must not reach a zapped page through a
/// stale TLB entry), in a plain VM and in a TD's shared root zapped together with the mirror.
#[test]
fn a_zap_flushes_what_it_unmapped_before_each_yield() {
    /// Shared frames zapped so far at the last flush and at the last yield; yields, those
    /// after unmapping something, and the yields that came before a flush.
    #[derive(Default)]
    struct Seen {
        at_flush: u64,
        at_yield: u64,
        yields: usize,
        after_unmap: usize,
        bad: Vec<String>,
    }
    type NewMmu = fn() -> TestMmu<Ept>;
    let cases: [(NewMmu, ZapTarget); 2] = [
        (testkit::vm_mmu::<Ept>, ZapTarget::Shared),
        (testkit::td_mmu::<Ept>, ZapTarget::Both),
    ];
    for (new, target) in cases {
        for every in [2, 13] {
            let mmu = Arc::new(new());
            let mut c = VcpuMmuCaches::new();
            populate(&mmu, &mut c, GfnKind::Shared);
            if target == ZapTarget::Both {
                populate(&mmu, &mut c, GfnKind::Private);
            }
            let seen = Arc::new(Mutex::new(Seen::default()));
            let zapped = |m: &TestMmu<Ept>| m.stats().frames_zapped[0];
            seen.lock().expect("seen").at_flush = zapped(&mmu);
            seen.lock().expect("seen").at_yield = zapped(&mmu);
            let (m, s) = (Arc::clone(&mmu), Arc::clone(&seen));
            mmu.env().on_flush(Some(Box::new(move || {
                if let Ok(mut s) = s.lock() {
                    s.at_flush = zapped(&m);
                }
            })));
            let (m, s) = (Arc::clone(&mmu), Arc::clone(&seen));
            mmu.env().mmu_lock().on_yield(Some(Box::new(move || {
                let now = zapped(&m);
                if let Ok(mut s) = s.lock() {
                    s.yields += 1;
                    if now != s.at_yield {
                        s.after_unmap += 1;
                    }
                    if now != s.at_flush {
                        let why = format!(
                            "yield {}: {} frames unmapped, not flushed",
                            s.yields,
                            now - s.at_flush
                        );
                        s.bad.push(why);
                    }
                    s.at_yield = now;
                }
            })));
            mmu.env().mmu_lock().yield_every(every);
            let g = mmu.write_may_yield();
            mmu.zap_range(&g, target, Gfn::new(1), Gfn::new(4 * P2M + 1))
                .expect("zap");
            drop(g);
            mmu.env().mmu_lock().yield_every(0);
            // The hooks hold the MMU: dropping them breaks the cycle.
            mmu.env().mmu_lock().on_yield(None);
            mmu.env().on_flush(None);
            let s = seen.lock().expect("seen");
            assert!(
                s.bad.is_empty(),
                "{target:?} every {every}: {} yields before a flush, first {:?}",
                s.bad.len(),
                &s.bad[..s.bad.len().min(3)]
            );
            assert!(
                s.after_unmap > 0,
                "{target:?} every {every}: no yield after unmapping"
            );
            assert_eq!(
                s.at_flush,
                zapped(&mmu),
                "{target:?} every {every}: the last flush"
            );
            drop(s);
            let mmu = Arc::try_unwrap(mmu).unwrap_or_else(|_| panic!("the MMU is shared"));
            let walk = check_invariants(&mmu, &[&c]);
            assert_eq!(
                walk.shared.keys().copied().collect::<Vec<_>>(),
                [(0, 1), (512 * P2M + 9, 1)]
            );
            mmu.free_vcpu_caches(&mut c);
            mmu.external().set_teardown(true);
        }
    }
}
