// SPDX-License-Identifier: GPL-2.0-only
//! The TDP iterator through `TdpMmu::walk`: pre-order, step down/side/up, skipping subtrees,
//! restart after a yield.

use mmu::cache::VcpuMmuCaches;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept, SpteKind};
use mmu::tdp::Fault;
use mmu::{Gfn, GfnKind, Level, Pfn};
use testkit::{fault, vm_mmu, TestMmu};

fn map_4k(mmu: &TestMmu<Ept>, caches: &mut VcpuMmuCaches, gfns: &[u64]) {
    for &gfn in gfns {
        let f = Fault {
            gfn: Gfn::new(gfn),
            kind: GfnKind::Shared,
            pfn: Pfn::new(0x10_0000 + gfn),
            access: Access::RWX,
            write: false,
            max_level: Level::L4K,
        };
        fault(mmu, caches, &f).expect("fault");
    }
}

/// (level, gfn, is_table) of every present entry visited.
fn visit(mmu: &TestMmu<Ept>, start: u64, end: u64) -> Vec<(u8, u64, bool)> {
    let g = mmu.read();
    let mut it = mmu
        .walk(&g, RootKind::Shared, Gfn::new(start), Gfn::new(end))
        .unwrap();
    let mut out = Vec::new();
    while it.valid() {
        match it.kind() {
            SpteKind::Table(_) => out.push((it.level().get(), it.gfn().raw(), true)),
            SpteKind::Leaf(_) => out.push((it.level().get(), it.gfn().raw(), false)),
            _ => {}
        }
        it.next();
    }
    out
}

#[test]
fn walk_is_pre_order_with_tables_before_their_entries() {
    let mmu = vm_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map_4k(&mmu, &mut c, &[5, 0x201, 3]);
    assert_eq!(
        visit(&mmu, 0, 0x400),
        vec![
            (4, 0, true),
            (3, 0, true),
            (2, 0, true),
            (1, 3, false),
            (1, 5, false),
            (2, 0x200, true),
            (1, 0x201, false),
        ]
    );
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn walk_starts_mid_table_and_stops_at_the_range_end() {
    let mmu = vm_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map_4k(&mmu, &mut c, &[1, 4, 6, 9]);
    let leaves: Vec<_> = visit(&mmu, 4, 7).into_iter().filter(|e| !e.2).collect();
    assert_eq!(leaves, vec![(1, 4, false), (1, 6, false)]);
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn next_sibling_skips_the_subtree() {
    let mmu = vm_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map_4k(&mmu, &mut c, &[5, 0x201]);
    let g = mmu.read();
    let mut it = mmu
        .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(0x400))
        .unwrap();
    it.next(); // level 3
    it.next(); // level 2, entry 0
    assert_eq!((it.level(), it.gfn()), (Level::L2M, Gfn::new(0)));
    it.next_sibling(); // skips the L1 table holding gfn 5
    assert_eq!((it.level(), it.gfn()), (Level::L2M, Gfn::new(0x200)));
    drop(g);
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn walk_steps_up_after_the_last_entry_of_a_table() {
    let mmu = vm_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map_4k(&mmu, &mut c, &[511, 512]);
    // 511 is the last entry of the first L1 table; the next present entry is the L2 entry that
    // holds the second L1 table.
    let v = visit(&mmu, 511, 513);
    assert_eq!(
        v,
        vec![
            (4, 0, true),
            (3, 0, true),
            (2, 0, true),
            (1, 511, false),
            (2, 512, true),
            (1, 512, false)
        ]
    );
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn restart_resumes_at_the_next_entry_from_the_root() {
    let mmu = vm_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    map_4k(&mmu, &mut c, &[2, 3, 7]);
    let g = mmu.read();
    let mut it = mmu
        .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(8))
        .unwrap();
    while !(it.level() == Level::L4K && it.gfn() == Gfn::new(3)) {
        it.next();
    }
    it.next(); // at gfn 4 (absent)
               // As after dropping and retaking the lock: walk down again from the root to gfn 4.
    it.restart();
    assert_eq!(it.level(), Level::L512G, "restart begins at the root");
    let mut rest = Vec::new();
    while it.valid() {
        if let SpteKind::Leaf(_) = it.kind() {
            rest.push(it.gfn().raw());
        }
        it.next();
    }
    assert_eq!(
        rest,
        vec![7],
        "gfns before the restart point are not visited again"
    );
    drop(g);
    mmu.free_vcpu_caches(&mut c);
}

#[test]
fn empty_range_is_invalid_from_the_start() {
    let mmu = vm_mmu::<Ept>();
    let g = mmu.read();
    let it = mmu
        .walk(&g, RootKind::Shared, Gfn::new(5), Gfn::new(5))
        .unwrap();
    assert!(!it.valid());
}
