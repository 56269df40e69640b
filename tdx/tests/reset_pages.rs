// SPDX-License-Identifier: GPL-2.0-only
//! The backend's `TdHost::reset_pages` hook: called once for every page that leaves the TD for
//! good and goes back to the host (PAGE.REMOVE + WBINVD of a guest page, SEPT.REMOVE + WBINVD of
//! an S-EPT page, every successful PHYMEM.PAGE.RECLAIM after the HKID is released), never for a
//! page the module refused or a removal that failed half-way.
//!
//! The test host ([`testkit::td::Kick`]) records the calls; the expected sets come from the
//! software module's S-EPT and PAMT (what the TD owned before, what it owns after).

mod common;

use common::{private_fault, td_mmu_config};
use mmu::cache::VcpuMmuCaches;
use mmu::tdp::{FaultOutcome, TdpMmu, ZapTarget};
use mmu::{Gfn, Level, MmuError, Pfn};
use std::collections::{BTreeMap, BTreeSet};
use tdx::abi::{leaf, operand, page_type, sept_state, status, SeptLevel};
use tdx::swmod::{Injection, ModuleLine};
use tdx::Tdx;
use testkit::td::{
    backend as td_backend, build_td, host_page, sw_module_on, Backend, Stage, SwModule, TdMmu,
    TestTd,
};
use testkit::HostEnv;

/// Guest memory: the first `GUEST_PAGES` arena pages (2M-aligned, contiguous).
const GUEST_PAGES: u64 = 2048;

/// A recorded or expected `reset_pages(pfn, pages)` call.
type Reset = (Pfn, u64);

/// The `reset_pages` calls recorded so far, in order.
fn resets(b: &Backend<'_>) -> Vec<Reset> {
    b.kicker().reset.lock().unwrap().clone()
}

/// The `reset_pages` calls recorded since the last take, in order; clears the record.
fn take_resets(b: &Backend<'_>) -> Vec<Reset> {
    std::mem::take(&mut *b.kicker().reset.lock().unwrap())
}

fn sorted(mut v: Vec<Reset>) -> Vec<Reset> {
    v.sort();
    v
}

/// Every 4K page the calls cover, asserting none is covered twice.
fn covered_once(calls: &[Reset]) -> BTreeSet<Pfn> {
    let mut seen = BTreeSet::new();
    for &(pfn, pages) in calls {
        for i in 0..pages {
            assert!(
                seen.insert(pfn.add(i)),
                "page {:#x} reset twice",
                pfn.add(i).raw()
            );
        }
    }
    seen
}

/// The TD's S-EPT as the module has it: (TDX level, gpa) → (pfn, is_leaf).
type Sept = BTreeMap<(u8, u64), (Pfn, bool)>;

fn sept(m: &SwModule<'_>, td: &TestTd) -> Sept {
    let mut out = Sept::new();
    m.for_each_sept_entry(td.tdr.hpa().pfn(), |gpa, level: SeptLevel, state, pfn| {
        let leaf = match state {
            sept_state::NL_MAPPED | sept_state::NL_BLOCKED => false,
            sept_state::MAPPED
            | sept_state::PENDING
            | sept_state::BLOCKED
            | sept_state::PENDING_BLOCKED => true,
            s => panic!("unexpected S-EPT state {s:#x} at {gpa:#x}"),
        };
        out.insert((level.0, gpa), (pfn, leaf));
    });
    out
}

/// The pages behind the S-EPT entries of `before` that `after` no longer has, as the resets
/// their removal owes: a leaf's page(s), or the one S-EPT table page a non-leaf entry points to.
fn gone(before: &Sept, after: &Sept) -> Vec<Reset> {
    sorted(
        before
            .iter()
            .filter(|(k, v)| after.get(k) != Some(v))
            .map(|(&(level, _), &(pfn, leaf))| (pfn, if leaf { 1 << (9 * level) } else { 1 }))
            .collect(),
    )
}

/// Every page the TD owns in the PAMT (its TDR included), as (pfn, type) with the reset a
/// reclaim owes it: one call per PAMT page (a 2M page's head with 512 pages, its tail nothing).
fn owned(m: &SwModule<'_>, env: &HostEnv, td: &TestTd) -> BTreeMap<Pfn, (u8, u64)> {
    let tdr = td.tdr.hpa().pfn();
    let mut out = BTreeMap::new();
    let base = testkit::env::BASE_PFN;
    for p in (base..base + env.capacity() as u64).map(Pfn::new) {
        let Some(info) = m.pamt_info(p) else { continue };
        let pages = 1u64 << (9 * info.size as u32);
        let mine = (info.owner == tdr && info.page_type != page_type::NDA) || p == tdr;
        if mine && info.page_type != page_type::NDA && p.raw() % pages == 0 {
            out.insert(p, (info.page_type, pages));
        }
    }
    out
}

/// The control pages (TDCX, TDVPR, vCPU TDCX) among `owned`, for `reclaim_control_pages`.
fn control_pages(owned: &BTreeMap<Pfn, (u8, u64)>) -> Vec<mmu::Hpa> {
    owned
        .iter()
        .filter(|(_, &(t, _))| t == page_type::TDCX || t == page_type::TDVPR)
        .map(|(p, _)| p.hpa())
        .collect()
}

fn map(mmu: &TdMmu<'_>, caches: &mut VcpuMmuCaches, gfn: u64, pfn: Pfn, level: Level) {
    let f = private_fault(Gfn::new(gfn), pfn, level);
    assert_eq!(
        testkit::fault(mmu, caches, &f),
        Ok(FaultOutcome::Mapped(level)),
        "fault at gfn {gfn:#x}"
    );
}

fn zap(mmu: &TdMmu<'_>, start: u64, end: u64) -> Result<(), MmuError> {
    let g = mmu.write();
    mmu.zap_range(&g, ZapTarget::Mirror, Gfn::new(start), Gfn::new(end))
        .map(drop)
}

/// An arena with `GUEST_PAGES` guest pages taken first (so they are contiguous and 2M-aligned);
/// returns their first PFN.
fn arena() -> (HostEnv, Vec<mmu::env::Frame>, u64) {
    let env = HostEnv::with_capacity(8192);
    let guest: Vec<_> = (0..GUEST_PAGES).map(|_| host_page(&env)).collect();
    let base = guest[0].pfn().raw();
    assert_eq!(base % 512, 0);
    (env, guest, base)
}

/// A fatal (non-busy) answer for an injection: the backend gives up at once.
fn refusal() -> u64 {
    status::PAGE_METADATA_INCORRECT | operand::RCX as u64
}

testkit::per_module_line!(
    zap_resets_exactly_the_removed_pages_and_freed_sept_tables,
    teardown_resets_every_page_given_back_exactly_once,
    refused_reclaims_are_not_reset,
    failed_removals_are_not_reset,
);

/// While the TD lives: a zap resets exactly the guest pages it removed and the S-EPT table
/// pages it freed, one page each (512 for a 2M leaf); mapping resets nothing.
fn zap_resets_exactly_the_removed_pages_and_freed_sept_tables(line: ModuleLine) {
    let (env, guest, base) = arena();
    let m = sw_module_on(&env, line);
    let td = build_td(&Tdx::new(&m), &env, 1, 1, Stage::Runnable);
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let g = |gfn: u64| Pfn::new(base + gfn);

    for gfn in (0..8).chain(512..516) {
        map(&mmu, &mut caches, gfn, g(gfn), Level::L4K);
    }
    map(&mmu, &mut caches, 1024, g(1024), Level::L2M);
    assert_eq!(resets(&backend), [], "mapping resets nothing");
    let s0 = sept(&m, &td);

    // [0, 512): eight 4K pages and the 4K-level S-EPT table that spans exactly that range.
    zap(&mmu, 0, 512).expect("zap");
    let s1 = sept(&m, &td);
    let (table0, false) = s0[&(1, 0)] else {
        panic!("no S-EPT table for gfn 0")
    };
    let mut want: Vec<Reset> = (0..8).map(|gfn| (g(gfn), 1)).collect();
    want.push((table0, 1));
    assert_eq!(gone(&s0, &s1), sorted(want.clone()), "what the zap removed");
    let got = take_resets(&backend);
    assert_eq!(sorted(got.clone()), sorted(want), "resets of zap [0, 512)");
    covered_once(&got);

    // [512, 514): two pages; their table still holds two more, so it stays.
    zap(&mmu, 512, 514).expect("zap");
    let s2 = sept(&m, &td);
    assert!(s2.contains_key(&(1, 512 << 12)), "the table stays");
    let got = take_resets(&backend);
    assert_eq!(sorted(got.clone()), [(g(512), 1), (g(513), 1)]);
    assert_eq!(gone(&s1, &s2), sorted(got));

    // A 2M leaf: one call for its 512 pages.
    zap(&mmu, 1024, 1025).expect("zap");
    let s3 = sept(&m, &td);
    let got = take_resets(&backend);
    assert_eq!(got, [(g(1024), 512)]);
    assert_eq!(gone(&s2, &s3), got);

    // The whole first 1G: the last two pages, the table at 512 and the 2M-level table above
    // (every table wholly inside the range), nothing else.
    zap(&mmu, 0, 1 << 18).expect("zap");
    let s4 = sept(&m, &td);
    let (table512, false) = s3[&(1, 512 << 12)] else {
        panic!("no S-EPT table for gfn 512")
    };
    let (table2m, false) = s3[&(2, 0)] else {
        panic!("no 2M-level S-EPT table")
    };
    let want = sorted(vec![(g(514), 1), (g(515), 1), (table512, 1), (table2m, 1)]);
    assert_eq!(gone(&s3, &s4), want);
    let got = take_resets(&backend);
    assert_eq!(sorted(got.clone()), want);
    covered_once(&got);
    // What is left is the 1G-level table under the root, which the range does not span.
    assert_eq!(s4.len(), 1);

    mmu.free_vcpu_caches(&mut caches);
    backend.release_hkid(&td.vcpus).expect("release HKID");
    mmu.teardown();
    drop(guest);
}

/// Teardown: after the HKID is released, every page the TD still owns — guest pages (4K and
/// 2M), S-EPT pages, TDCX / TDVPR pages and the TDR, last — is reset exactly once, with the
/// page count of its PAMT size; across the TD's whole life no page is reset twice. A RECLAIM
/// that is busy a few times and then succeeds resets once.
fn teardown_resets_every_page_given_back_exactly_once(line: ModuleLine) {
    let (env, guest, base) = arena();
    let m = sw_module_on(&env, line);
    let td = build_td(&Tdx::new(&m), &env, 2, 2, Stage::Runnable);
    let tdr = td.tdr.hpa().pfn();
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let g = |gfn: u64| Pfn::new(base + gfn);

    for gfn in (0..16).chain(600..604).chain([1536 + 3]) {
        map(&mmu, &mut caches, gfn, g(gfn), Level::L4K);
    }
    map(&mmu, &mut caches, 1024, g(1024), Level::L2M);
    zap(&mmu, 600, 602).expect("zap");
    let runtime = resets(&backend);
    assert_eq!(sorted(runtime.clone()), [(g(600), 1), (g(601), 1)]);

    mmu.free_vcpu_caches(&mut caches);
    let before = owned(&m, &env, &td);
    let s = sept(&m, &td);
    // The PAMT agrees with the S-EPT on the memory path: every leaf and S-EPT table is owned.
    let memory: Vec<Reset> = before
        .iter()
        .filter(|(_, &(t, _))| t == page_type::REG || t == page_type::EPT)
        .map(|(&p, &(_, n))| (p, n))
        .collect();
    assert_eq!(memory, gone(&s, &Sept::new()));
    assert!(memory.contains(&(g(1024), 512)));
    let control = control_pages(&before);
    // The line's TDCX pages and per vCPU TDVPR + 5 TDCX.
    assert_eq!(
        control.len() as u64,
        line.min_tdcs_pages() + 6 * td.vcpus.len() as u64
    );
    assert_eq!(before.get(&tdr).map(|v| v.0), Some(page_type::TDR));
    let want: Vec<Reset> = sorted(before.iter().map(|(&p, &(_, n))| (p, n)).collect());

    backend.release_hkid(&td.vcpus).expect("release HKID");
    assert_eq!(
        resets(&backend),
        runtime,
        "releasing the HKID resets nothing"
    );
    // The third RECLAIM is busy three times, then succeeds.
    m.inject(Injection {
        leaf: leaf::PHYMEM_PAGE_RECLAIM,
        nth: 2,
        count: 3,
        status: status::OPERAND_BUSY | operand::RCX as u64,
    });
    mmu.teardown();
    assert_eq!(
        mmu.stats().leaked_private_pages + mmu.stats().leaked_external_spts,
        0
    );
    assert_eq!(backend.reclaim_control_pages(&control), 0);
    assert_eq!(
        m.errors(leaf::PHYMEM_PAGE_RECLAIM),
        3,
        "the busy answers happened"
    );
    assert_eq!(backend.stats().leaked, 0);

    let all = resets(&backend);
    let teardown = all[runtime.len()..].to_vec();
    assert_eq!(sorted(teardown.clone()), want, "teardown resets");
    assert_eq!(teardown.last(), Some(&(tdr, 1)), "the TDR goes last");
    covered_once(&all);
    assert!(owned(&m, &env, &td).is_empty(), "every page is back");
    drop(guest);
}

/// What the module refuses to reclaim is leaked, not reset: a guest page, an S-EPT page (RECLAIM
/// failing), and then the TDR (its child count is not zero, a real refusal). Everything else
/// still comes back and is reset once.
fn refused_reclaims_are_not_reset(line: ModuleLine) {
    // RECLAIM order at teardown is post-order: gfn 0..4's pages, then their S-EPT table.
    for (nth, kind) in [(1, page_type::REG), (4, page_type::EPT)] {
        let (env, guest, base) = arena();
        let m = sw_module_on(&env, line);
        let td = build_td(&Tdx::new(&m), &env, 3, 1, Stage::Runnable);
        let tdr = td.tdr.hpa().pfn();
        let backend: Backend<'_> = td_backend(&m, &td);
        let mut mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
        let mut caches = VcpuMmuCaches::new();
        for gfn in 0..4 {
            map(&mmu, &mut caches, gfn, Pfn::new(base + gfn), Level::L4K);
        }
        mmu.free_vcpu_caches(&mut caches);
        let before = owned(&m, &env, &td);
        let control = control_pages(&before);

        backend.release_hkid(&td.vcpus).expect("release HKID");
        m.inject(Injection {
            leaf: leaf::PHYMEM_PAGE_RECLAIM,
            nth,
            count: 1,
            status: refusal(),
        });
        mmu.teardown();
        let st = mmu.stats();
        let leaked_mmu = if kind == page_type::REG {
            st.leaked_private_pages
        } else {
            st.leaked_external_spts
        };
        assert_eq!(
            (
                leaked_mmu,
                st.leaked_private_pages + st.leaked_external_spts
            ),
            (1, 1),
            "nth {nth}: {st:?}"
        );
        // The TDR still has a child: the module refuses it for real.
        assert_eq!(backend.reclaim_control_pages(&control), 1);
        assert_eq!(backend.stats().leaked, 2);

        let after = owned(&m, &env, &td);
        let leaked: Vec<_> = after.iter().filter(|(&p, _)| p != tdr).collect();
        assert_eq!(leaked.len(), 1, "nth {nth}: one page left: {after:?}");
        let (&lost, &(t, _)) = leaked[0];
        assert_eq!(t, kind, "nth {nth}");
        assert!(after.contains_key(&tdr));

        let all = resets(&backend);
        covered_once(&all);
        assert!(
            !all.iter().any(|&(p, _)| p == lost),
            "nth {nth}: leaked page reset"
        );
        assert!(
            !all.iter().any(|&(p, _)| p == tdr),
            "nth {nth}: refused TDR reset"
        );
        let want: Vec<Reset> = sorted(
            before
                .iter()
                .filter(|(&p, _)| p != lost && p != tdr)
                .map(|(&p, &(_, n))| (p, n))
                .collect(),
        );
        assert_eq!(sorted(all), want, "nth {nth}");
        // The leaked S-EPT page stays out of the arena; forget it so the env can go.
        drop(guest);
    }
}

/// While the TD lives a removal that fails resets nothing: PAGE.REMOVE refused, or the page
/// removed but its WBINVD refused (it is not written back, so it must not go back to the host).
/// The removals that completed before the failure are reset.
fn failed_removals_are_not_reset(line: ModuleLine) {
    for failing in [leaf::MEM_PAGE_REMOVE, leaf::PHYMEM_PAGE_WBINVD] {
        let (env, guest, base) = arena();
        let m = sw_module_on(&env, line);
        let td = build_td(&Tdx::new(&m), &env, 4, 1, Stage::Runnable);
        let backend: Backend<'_> = td_backend(&m, &td);
        let mut mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
        let mut caches = VcpuMmuCaches::new();
        for gfn in 0..4 {
            map(&mmu, &mut caches, gfn, Pfn::new(base + gfn), Level::L4K);
        }
        mmu.free_vcpu_caches(&mut caches);
        let s0 = sept(&m, &td);
        // The second removal (one WBINVD per 4K page) fails.
        m.inject(Injection {
            leaf: failing,
            nth: 1,
            count: 1,
            status: refusal(),
        });
        assert_eq!(zap(&mmu, 0, 4), Err(MmuError::Bugged));
        let name = leaf::name(failing);
        let s1 = sept(&m, &td);
        let removed = gone(&s0, &s1);
        let got = resets(&backend);
        assert_eq!(got.len(), 1, "{name}: only the first removal completed");
        let mut want = removed.clone();
        if failing == leaf::PHYMEM_PAGE_WBINVD {
            // Two pages left the S-EPT; the second was never written back.
            assert_eq!(removed.len(), 2, "{name}");
            want.retain(|r| *r == got[0]);
        }
        assert_eq!(got, want, "{name}");
        assert!(removed.contains(&got[0]), "{name}");

        // Teardown still resets exactly what the TD owns then; a page removed but not written
        // back is not the TD's any more, its RECLAIM is refused and it stays unreset.
        let before = owned(&m, &env, &td);
        let control = control_pages(&before);
        backend.release_hkid(&td.vcpus).expect("release HKID");
        mmu.teardown();
        assert_eq!(backend.reclaim_control_pages(&control), 0, "{name}");
        // The page whose WBINVD failed is still in the mirror: its RECLAIM is refused.
        let refused = u64::from(failing == leaf::PHYMEM_PAGE_WBINVD);
        assert_eq!(backend.stats().leaked, refused, "{name}");
        assert_eq!(mmu.stats().leaked_private_pages as u64, refused, "{name}");
        assert!(owned(&m, &env, &td).is_empty(), "{name}");
        let all = resets(&backend);
        covered_once(&all);
        let teardown = sorted(all[got.len()..].to_vec());
        let want: Vec<Reset> = before.iter().map(|(&p, &(_, n))| (p, n)).collect();
        assert_eq!(teardown, want, "{name}");
        for r in &removed {
            if !got.contains(r) {
                assert!(!all.iter().any(|(p, _)| *p == r.0), "{name}: {r:?} reset");
            }
        }
        drop(guest);
    }
}
