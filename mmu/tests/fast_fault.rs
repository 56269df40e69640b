//! The fast page fault (`TdpMmu::fast_page_fault`, upstream `fast_page_fault`): the software
//! host-/MMU-writable bits of a leaf (exact values), that write-protection for dirty logging
//! keeps them, that a write to such a leaf is fixed by setting the writable bit alone (exact
//! SPTE before and after, no TLB flush, no accounting change), which faults are spurious,
//! which go the full way, that a TD's mirror root is never touched, and that racing fast
//! faults fix a leaf exactly once. The test kit's invariants are checked after every step.

use mmu::cache::VcpuMmuCaches;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept, EptBits, LeafAttrs, Npt, NptBits, PagingFormat};
use mmu::tdp::{FastFault, Fault, FaultAccess, FaultOutcome};
use mmu::{Gfn, GfnKind, Level, MmuError, Pfn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use testkit::{check_invariants, TestMmu};

const PFN: u64 = 0x4000_0000;

fn fault(gfn: u64, kind: GfnKind, access: Access, write: bool) -> Fault {
    Fault {
        gfn: Gfn::new(gfn),
        kind,
        pfn: Pfn::new(PFN + gfn),
        access,
        write,
        max_level: Level::L4K,
    }
}

fn map<F: PagingFormat>(mmu: &TestMmu<F>, c: &mut VcpuMmuCaches, f: Fault) {
    assert_eq!(
        testkit::fault(mmu, c, &f).expect("fault"),
        FaultOutcome::Mapped(Level::L4K)
    );
    check_invariants(mmu, &[&*c]);
}

/// The raw shared-root entry of `gfn` at 4 KiB.
fn raw<F: PagingFormat>(mmu: &TestMmu<F>, gfn: u64) -> u64 {
    let g = mmu.read();
    let mut it = mmu
        .walk(&g, RootKind::Shared, Gfn::new(gfn), Gfn::new(gfn + 1))
        .expect("walk");
    while it.valid() && it.level() != Level::L4K {
        it.next();
    }
    assert!(it.valid(), "no 4K entry for gfn {gfn}");
    it.old_spte()
}

fn fast<F: PagingFormat>(
    mmu: &TestMmu<F>,
    gfn: u64,
    access: FaultAccess,
    logging: bool,
) -> Result<FastFault, MmuError> {
    let g = mmu.read();
    mmu.fast_page_fault(&g, Gfn::new(gfn), access, logging)
}

fn wrprot<F: PagingFormat>(mmu: &TestMmu<F>, start: u64, end: u64) {
    let g = mmu.write();
    mmu.write_protect_range(&g, Gfn::new(start), Gfn::new(end))
        .expect("write-protect");
}

const ATTRS: LeafAttrs = LeafAttrs {
    accessed: true,
    dirty: false,
    mirror: false,
};

#[test]
fn leaf_values_with_the_software_writable_bits_are_exact() {
    // NPT: P | W | U | A | HOST_WRITABLE (9) | MMU_WRITABLE (10) | MMU_PRESENT (11).
    assert_eq!(
        Npt::leaf(Pfn::new(0x1234), Level::L4K, Access::RWX, ATTRS),
        0x0123_4e27
    );
    // Read-only: neither software bit; NX without exec.
    assert_eq!(
        Npt::leaf(Pfn::new(0x1234), Level::L4K, Access::READ, ATTRS),
        0x8000_0000_0123_4825
    );
    // EPT: R W X | WB | A | USER_EXEC | MMU_PRESENT | HOST_WRITABLE (57) | MMU_WRITABLE (58).
    assert_eq!(
        Ept::leaf(Pfn::new(0x1234), Level::L4K, Access::RWX, ATTRS),
        0x0600_0000_0123_4d37
    );
    assert_eq!(
        Ept::leaf(
            Pfn::new(0x1234),
            Level::L4K,
            Access::READ | Access::EXEC,
            ATTRS
        ),
        0x0000_0000_0123_4d35
    );
    assert_eq!(Npt::MMU_WRITABLE_MASK, NptBits::MMU_WRITABLE.bits());
    assert_eq!(Npt::HOST_WRITABLE_MASK, 1 << 9);
    assert_eq!(Ept::MMU_WRITABLE_MASK, EptBits::MMU_WRITABLE.bits());
    assert_eq!(Ept::HOST_WRITABLE_MASK, 1 << 57);
}

fn write_fault_on_a_protected_leaf_is_fixed_by_the_writable_bit_alone<F: PagingFormat>() {
    let mmu = testkit::vm_mmu::<F>();
    let mut c = VcpuMmuCaches::new();
    map(&mmu, &mut c, fault(5, GfnKind::Shared, Access::RWX, true));
    let mapped = raw(&mmu, 5);
    assert_eq!(
        mapped,
        F::leaf(
            Pfn::new(PFN + 5),
            Level::L4K,
            Access::RWX,
            LeafAttrs {
                dirty: true,
                ..ATTRS
            }
        )
    );
    wrprot(&mmu, 0, 512);
    // Write-protection clears the writable bit only: host- and MMU-writable stay.
    assert_eq!(raw(&mmu, 5), mapped & !F::WRITABLE_MASK);
    let flushes = mmu.env().counts().tlb_flushes;
    let stats = mmu.stats();
    // A read is allowed by the protected leaf: spurious, nothing changes.
    assert_eq!(
        fast(&mmu, 5, FaultAccess::Read, true),
        Ok(FastFault::Spurious)
    );
    assert_eq!(
        fast(&mmu, 5, FaultAccess::Exec, true),
        Ok(FastFault::Spurious)
    );
    assert_eq!(raw(&mmu, 5), mapped & !F::WRITABLE_MASK);
    // The write: fixed, exactly the value the fault had mapped.
    assert_eq!(
        fast(&mmu, 5, FaultAccess::Write, true),
        Ok(FastFault::Fixed(Level::L4K))
    );
    assert_eq!(raw(&mmu, 5), mapped);
    // No flush (the leaf only gained write access), no accounting change.
    assert_eq!(mmu.env().counts().tlb_flushes, flushes);
    assert_eq!(mmu.stats(), stats);
    check_invariants(&mmu, &[&c]);
    // The same write again: spurious (another vCPU fixed it, or a stale TLB entry).
    assert_eq!(
        fast(&mmu, 5, FaultAccess::Write, true),
        Ok(FastFault::Spurious)
    );
    // And the full path finds the leaf as it would have mapped it.
    assert_eq!(
        testkit::fault(&mmu, &mut c, &fault(5, GfnKind::Shared, Access::RWX, true)),
        Ok(FaultOutcome::Spurious)
    );
}

#[test]
fn write_fault_on_a_protected_leaf_is_fixed_by_the_writable_bit_alone_npt() {
    write_fault_on_a_protected_leaf_is_fixed_by_the_writable_bit_alone::<Npt>();
}

#[test]
fn write_fault_on_a_protected_leaf_is_fixed_by_the_writable_bit_alone_ept() {
    write_fault_on_a_protected_leaf_is_fixed_by_the_writable_bit_alone::<Ept>();
}

#[test]
fn faults_the_fast_path_cannot_fix_go_the_full_way() {
    let mmu = testkit::vm_mmu::<Npt>();
    let mut c = VcpuMmuCaches::new();
    // Nothing mapped at all, then an absent entry under a present table.
    assert_eq!(fast(&mmu, 7, FaultAccess::Read, false), Ok(FastFault::Slow));
    map(&mmu, &mut c, fault(6, GfnKind::Shared, Access::RWX, true));
    assert_eq!(
        fast(&mmu, 7, FaultAccess::Write, false),
        Ok(FastFault::Slow)
    );
    // A page the host maps read-only (the zero page, a read-only slot): not MMU-writable.
    map(
        &mmu,
        &mut c,
        fault(8, GfnKind::Shared, Access::READ | Access::EXEC, false),
    );
    let before = raw(&mmu, 8);
    assert_eq!(
        before & (Npt::MMU_WRITABLE_MASK | Npt::HOST_WRITABLE_MASK),
        0
    );
    assert_eq!(
        fast(&mmu, 8, FaultAccess::Write, false),
        Ok(FastFault::Slow)
    );
    // A fetch from a non-executable leaf.
    map(&mmu, &mut c, fault(9, GfnKind::Shared, Access::READ, false));
    assert_eq!(fast(&mmu, 9, FaultAccess::Exec, false), Ok(FastFault::Slow));
    assert_eq!(raw(&mmu, 8), before);
    // Beyond the address width.
    assert_eq!(
        fast(&mmu, 1 << 40, FaultAccess::Write, false),
        Err(MmuError::GfnOutOfRange)
    );
    check_invariants(&mmu, &[&c]);
}

#[test]
fn a_huge_writable_leaf_is_spurious_for_a_write_and_a_bugged_vm_refuses() {
    let mmu = testkit::vm_mmu::<Npt>();
    let mut c = VcpuMmuCaches::new();
    let f = Fault {
        gfn: Gfn::new(512),
        kind: GfnKind::Shared,
        pfn: Pfn::new(PFN + 512),
        access: Access::RWX,
        write: true,
        max_level: Level::L2M,
    };
    assert_eq!(
        testkit::fault(&mmu, &mut c, &f),
        Ok(FaultOutcome::Mapped(Level::L2M))
    );
    assert_eq!(
        fast(&mmu, 700, FaultAccess::Write, true),
        Ok(FastFault::Spurious)
    );
    mmu.mark_bugged();
    assert_eq!(
        fast(&mmu, 700, FaultAccess::Write, true),
        Err(MmuError::Bugged)
    );
}

#[test]
fn a_tds_mirror_root_never_takes_the_fast_path() {
    let mmu = testkit::td_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map(&mmu, &mut c, fault(3, GfnKind::Private, Access::RWX, true));
    let hooks = mmu.external().calls();
    // The private GFN has no shared leaf: the fast path walks the shared root only.
    assert_eq!(
        fast(&mmu, 3, FaultAccess::Write, false),
        Ok(FastFault::Slow)
    );
    assert_eq!(fast(&mmu, 3, FaultAccess::Read, false), Ok(FastFault::Slow));
    assert_eq!(mmu.external().calls(), hooks);
    check_invariants(&mmu, &[&c]);
}

/// Several vCPUs write the same protected page at once, round after round: in each round the
/// compare-exchange succeeds exactly once; the losers re-read the entry and find the access
/// allowed (spurious). Meanwhile another thread's full-path faults on other GFNs of the same
/// table change nothing for them.
#[test]
fn racing_fast_faults_fix_a_leaf_exactly_once() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 300;
    let mmu = testkit::vm_mmu::<Npt>();
    let mut c = VcpuMmuCaches::new();
    map(&mmu, &mut c, fault(40, GfnKind::Shared, Access::RWX, true));
    let mapped = raw(&mmu, 40);
    let fixed = AtomicUsize::new(0);
    let spurious = AtomicUsize::new(0);
    let start = Barrier::new(THREADS + 1);
    let end = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    start.wait();
                    match fast(&mmu, 40, FaultAccess::Write, true) {
                        Ok(FastFault::Fixed(Level::L4K)) => fixed.fetch_add(1, Ordering::SeqCst),
                        Ok(FastFault::Spurious) => spurious.fetch_add(1, Ordering::SeqCst),
                        r => panic!("unexpected {r:?}"),
                    };
                    end.wait();
                }
            });
        }
        for round in 0..ROUNDS {
            wrprot(&mmu, 40, 41);
            assert_eq!(raw(&mmu, 40), mapped & !Npt::WRITABLE_MASK);
            start.wait();
            end.wait();
            assert_eq!(raw(&mmu, 40), mapped, "round {round}");
            assert_eq!(fixed.load(Ordering::SeqCst), round + 1, "round {round}");
        }
    });
    assert_eq!(spurious.load(Ordering::SeqCst), ROUNDS * (THREADS - 1));
    check_invariants(&mmu, &[&c]);
}

/// A lost compare-exchange whose re-read finds something the fast path cannot fix (here: a
/// full-path fault replaced the 4 KiB table by a 2 MiB leaf, or the entry is no longer there)
/// falls back to the full path instead of retrying blindly. Faults race with huge-page faults
/// over the same range; every outcome must be one of the three, and the tables stay sound.
#[test]
fn fast_faults_racing_full_path_faults_end_sound() {
    let mmu = testkit::vm_mmu::<Npt>();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let mut c = VcpuMmuCaches::new();
    let runs = std::thread::scope(|s| {
        let c = &mut c;
        let (stop_w, mmu_w) = (&stop, &mmu);
        s.spawn(move || {
            let (stop, mmu) = (stop_w, mmu_w);
            for i in 0..400u64 {
                // 4 KiB writable leaves at 1024..1032, then protected; every few rounds a
                // 2 MiB leaf replaces the whole table (the full path's huge fault).
                let huge = i % 3 == 2;
                let f = Fault {
                    gfn: Gfn::new(1024 + i % 8),
                    kind: GfnKind::Shared,
                    pfn: Pfn::new(PFN + 1024 + i % 8),
                    access: Access::RWX,
                    write: true,
                    max_level: if huge { Level::L2M } else { Level::L4K },
                };
                testkit::fault(mmu, c, &f).expect("fault");
                if i % 2 == 0 {
                    let g = mmu.write();
                    mmu.write_protect_range(&g, Gfn::new(1024), Gfn::new(1032))
                        .expect("write-protect");
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
        let faulters: Vec<_> = (0..2u64)
            .map(|t| {
                let (stop, outcomes, mmu) = (&stop, &outcomes, &mmu);
                s.spawn(move || {
                    let mut n = 0u64;
                    // At least 2000 faults each, however soon the other thread is done.
                    while n < 2000 || !stop.load(Ordering::SeqCst) {
                        let gfn = 1024 + (n + t) % 8;
                        n += 1;
                        let i = match fast(mmu, gfn, FaultAccess::Write, false) {
                            Ok(FastFault::Fixed(_)) => 0,
                            Ok(FastFault::Spurious) => 1,
                            Ok(FastFault::Slow) => 2,
                            Err(e) => panic!("unexpected {e:?}"),
                        };
                        outcomes[i].fetch_add(1, Ordering::Relaxed);
                    }
                    n
                })
            })
            .collect();
        faulters
            .into_iter()
            .map(|f| f.join().expect("faulter"))
            .collect::<Vec<u64>>()
    });
    // Each faulter runs 2000 faults or more (until the other thread is done: how many more
    // depends on scheduling); every fault ended in exactly one of the three outcomes.
    let total: usize = outcomes.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    assert!(runs.iter().all(|&n| n >= 2000), "{runs:?}");
    assert_eq!(total as u64, runs.iter().sum::<u64>());
    // Every fix left a sound table; the last protection pass is still visible or fixed.
    check_invariants(&mmu, &[&c]);
}
