// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of TDH.MEM.PAGE.DEMOTE (`docs/tdx-module-rules.md` §6 "TDH.MEM.PAGE.DEMOTE", from Intel's
//! `tdh_mem_page_demote.c` and `pamt_demote`, 1.5.01 and 2.0.08): what it accepts, what it
//! refuses with which exact status and S-EPT details, what it leaves behind (512 unblocked
//! leaves, the PAMT split, the new S-EPT page's PAMT entry, the child count), and every lock it
//! takes answering `TDX_OPERAND_BUSY` from the real try-lock. The two lines agree on all of it
//! (no L2 VMs, no dynamic PAMT), so each scenario runs against both.

mod common;

use common::*;
use mmu::{Gpa, Hpa, Pfn};
use tdx::abi::{leaf, operand, page_size, page_type, sept_state, status, SeptLevel};
use tdx::swmod::{Mode, ModuleLine, ModuleLock};
use tdx::Tdx;
use testkit::td::{build_td, sw_module_on, Stage, SwModule, TestTd};
use testkit::HostEnv;

const CAP: usize = 4096;

/// RCX and RDX of an answer.
type Details = (u64, u64);
/// The 2M page's GPA in every scenario.
const G: u64 = 0x20_0000;

/// A TD at `stage` with tables down to level 1 over `G` and a 2M page AUGed there (PENDING).
fn td_with_2m(tdx: &T, env: &HostEnv, stage: Stage) -> (TestTd, Pfn) {
    let td = build_td(tdx, env, 1, 1, stage);
    add_tables(tdx, env, td.tdr, G, 2);
    let head = aug2m(tdx, env, td.tdr, G);
    (td, head)
}

/// BLOCK and TRACK of the 2M leaf at `G`.
fn block_track(tdx: &T, td: &TestTd) {
    tdx.mem_range_block(td.tdr, Gpa::new(G), SeptLevel::L2M)
        .expect("BLOCK");
    tdx.mem_track(td.tdr).expect("TRACK");
}

/// What a refused DEMOTE must leave: the 2M leaf as it was, its PAMT entries 2M, the new page
/// still a free host page.
fn unchanged(m: &SwModule<'_>, tdx: &T, td: &TestTd, head: Pfn, leaf: (u64, u64), sp: u64) {
    assert_eq!(sept_rd(tdx, td, G, 1), leaf, "the 2M leaf is untouched");
    for i in [0, 1, 511] {
        assert_eq!(
            m.pamt_info(head.add(i)),
            Some(owned_by(page_type::REG, page_size::SIZE_2M, td)),
            "page {i}"
        );
    }
    assert_eq!(m.pamt_info(pfn(sp)), Some(nda()), "the new page stays free");
}

fn demote_of_a_blocked_tracked_2m_leaf_gives_512_unblocked_4k_leaves(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::Runnable);
    // A table SEPT.ADD linked, as the reference for the new non-leaf entry.
    link_tables_at_1g(&tdx, &env, &td);
    let nl = sept_rd(&tdx, &td, 0x4000_0000, 1).0;
    assert_eq!(nl & !0xfff, 0, "a non-leaf reports no address");
    block_track(&tdx, &td);
    let chld = chldcnt(&m, &td);
    let sp = page(&env);
    // RDX bit 0 (L2_SEPT_ADD_MODE) is allowed and means nothing without L2 VMs.
    let mut a = args(gl(G, 1), tdr_pa(&td) | 1, sp, 0);
    a.r9 = 0x1234_5000;
    a.r10 = u64::MAX;
    a.r11 = 7;
    let (st, out) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, a);
    assert_eq!(st, status::SUCCESS);
    assert_eq!((out.rcx, out.rdx), (0, 0));
    assert_eq!(
        (out.r8, out.r9, out.r10, out.r11),
        (sp, 0x1234_5000, u64::MAX, 7),
        "R8-R11 come back as they went in"
    );
    assert_eq!(
        sept_rd(&tdx, &td, G, 1),
        (nl, info(1, sept_state::NL_MAPPED))
    );
    for i in 0..512u64 {
        assert_eq!(
            sept_rd(&tdx, &td, G + i * 0x1000, 0),
            (
                SVE | LEAF_NO_PERM | head.add(i).hpa().raw(),
                info(0, sept_state::PENDING)
            ),
            "entry {i}: pending again, unblocked"
        );
        assert_eq!(
            m.pamt_info(head.add(i)),
            Some(owned_by(page_type::REG, 0, &td)),
            "page {i}"
        );
    }
    assert_eq!(m.pamt_info(pfn(sp)), Some(owned_by(page_type::EPT, 0, &td)));
    assert_eq!(chldcnt(&m, &td), chld + 1);
    // Each 4K page now lives on its own: block, track, remove one; the rest stay.
    tdx.mem_range_block(td.tdr, Gpa::new(G + 0x5000), SeptLevel::L4K)
        .expect("BLOCK 4K");
    tdx.mem_track(td.tdr).expect("TRACK");
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(G + 0x5000), SeptLevel::L4K),
        Ok(head.add(5).hpa())
    );
    assert_eq!(m.pamt_info(head.add(5)), Some(freed(&td)));
    assert_eq!(
        m.pamt_info(head.add(6)),
        Some(owned_by(page_type::REG, 0, &td))
    );
    assert_eq!(chldcnt(&m, &td), chld);
    // The table is not empty: SEPT.REMOVE refuses until every leaf went.
    tdx.mem_range_block(td.tdr, Gpa::new(G), SeptLevel::L2M)
        .expect("BLOCK table");
    tdx.mem_track(td.tdr).expect("TRACK");
    let e = tdx
        .mem_sept_remove(td.tdr, Gpa::new(G), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(e.status, with(status::EPT_PAGE_NOT_FREE, operand::RCX));
}

fn demote_before_finalize_needs_no_block(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::VcpusReady);
    let sp = page(&env);
    assert_eq!(
        tdx.mem_page_demote(td.tdr, Gpa::new(G), SeptLevel::L2M, Hpa::new(sp)),
        Ok(())
    );
    assert_eq!(
        sept_rd(&tdx, &td, G + 0x1f_f000, 0),
        (
            SVE | LEAF_NO_PERM | head.add(511).hpa().raw(),
            info(0, sept_state::PENDING)
        )
    );
    // Nothing was tracked: the epoch did not move.
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().epoch, 1);
}

fn demote_in_a_runnable_td_needs_the_block_tracked(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::Runnable);
    let sp = page(&env);
    let demote = args(gl(G, 1), tdr_pa(&td), sp, 0);
    // Not blocked: GPA_RANGE_NOT_BLOCKED with the entry at the requested level.
    let pending = (
        SVE | LEAF_NO_PERM | head.hpa().raw(),
        info(1, sept_state::PENDING),
    );
    let (st, out) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote);
    assert_eq!(
        (st, out.rcx, out.rdx),
        (
            with(status::GPA_RANGE_NOT_BLOCKED, operand::RCX),
            pending.0,
            pending.1
        )
    );
    unchanged(&m, &tdx, &td, head, pending, sp);
    // Blocked, not tracked: TLB_TRACKING_NOT_DONE, no details.
    let v = td.vcpus[0].hpa().pfn();
    assert!(m.vcpu_enter(v)); // inside before the block's epoch is tracked
    tdx.mem_range_block(td.tdr, Gpa::new(G), SeptLevel::L2M)
        .expect("BLOCK");
    let blocked = sept_rd(&tdx, &td, G, 1);
    assert_eq!(blocked.1, info(1, sept_state::PENDING_BLOCKED));
    let not_done = with(status::TLB_TRACKING_NOT_DONE, operand::RCX);
    let (st, out) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote);
    assert_eq!((st, out.rcx, out.rdx), (not_done, 0, 0));
    // Tracked, but a vCPU from the block's epoch is still inside.
    tdx.mem_track(td.tdr).expect("TRACK");
    let (st, _) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote);
    assert_eq!(st, not_done);
    unchanged(&m, &tdx, &td, head, blocked, sp);
    m.vcpu_exit(v);
    let (st, _) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(
        sept_rd(&tdx, &td, G, 0).1,
        info(0, sept_state::PENDING),
        "the new leaves are unblocked"
    );
}

fn demote_refuses_bad_operands_in_intels_order(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::Runnable);
    block_track(&tdx, &td);
    let leaf_now = sept_rd(&tdx, &td, G, 1);
    let sp = page(&env);
    let t = tdr_pa(&td);
    let rdx_bad = with(status::OPERAND_INVALID, operand::RDX);
    let rcx_bad = with(status::OPERAND_INVALID, operand::RCX);
    for (rcx, rdx, want) in [
        // RDX reserved bits 11:1 and 63:52, checked before anything else (even a bad RCX).
        (gl(G, 0), t | 2, rdx_bad),
        (gl(G, 1), t | 1 << 11, rdx_bad),
        (gl(G, 1), t | 1 << 52, rdx_bad),
        // Not a TDR.
        (
            gl(G, 1),
            sp,
            with(status::PAGE_METADATA_INCORRECT, operand::RDX),
        ),
        // Levels: 2M and 1G only.
        (gl(G, 0), t, rcx_bad),
        (gl(G, 3), t, rcx_bad),
        // RCX reserved bits, a GPA not aligned to the level, a shared GPA.
        (gl(G, 1) | 0x10, t, rcx_bad),
        (gl(G + 0x1000, 1), t, rcx_bad),
        (gl(G | 1 << 47, 1), t, rcx_bad),
    ] {
        let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, rcx, rdx, sp, 0);
        assert_eq!(st, want, "rcx {rcx:#x} rdx {rdx:#x}");
        assert_eq!((out.rcx, out.rdx), (0, 0), "no details for {want:#x}");
    }
    // The new page: the same checks as SEPT.ADD's, on R8.
    let data = aug4k_at_new_table(&tdx, &env, &td);
    let meta = with(status::PAGE_METADATA_INCORRECT, operand::R8);
    for (r8, want) in [
        (data, meta),
        (tdr_pa(&td), with(status::OPERAND_BUSY, operand::R8)),
        (head.hpa().raw(), meta),
        (sp + 0x800, with(status::OPERAND_INVALID, operand::R8)),
        (
            outside(&env),
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::R8),
        ),
    ] {
        let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(G, 1), t, r8, 0);
        assert_eq!(st, want, "r8 {r8:#x}");
        assert_eq!((out.rcx, out.rdx), (0, 0));
    }
    unchanged(&m, &tdx, &td, head, leaf_now, sp);
}

/// SEPT.ADD of the tables of the 1G and 2M entries at GPA 1G (the level-3 table exists).
fn link_tables_at_1g(tdx: &T, env: &HostEnv, td: &TestTd) {
    for level in [SeptLevel::L1G, SeptLevel::L2M] {
        tdx.mem_sept_add(td.tdr, Gpa::new(0x4000_0000), level, Hpa::new(page(env)))
            .expect("SEPT.ADD");
    }
}

/// A 4K page AUGed under tables of their own (GPA 1G + 4K); returns the page.
fn aug4k_at_new_table(tdx: &T, env: &HostEnv, td: &TestTd) -> u64 {
    link_tables_at_1g(tdx, env, td);
    aug4k(tdx, env, td.tdr, 0x4000_1000)
}

fn demote_refuses_entries_that_are_not_huge_leaves(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let t = tdr_pa(&td);
    let sp = page(&env);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    // No tables yet: the walk stops at the FREE level-3 entry.
    let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(G, 1), t, sp, 0);
    assert_eq!(
        (st, out.rcx, out.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(3, sept_state::FREE)
        )
    );
    add_tables(&tdx, &env, td.tdr, G, 2);
    // A FREE 2M entry.
    let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(G, 1), t, sp, 0);
    assert_eq!(
        (st, out.rcx, out.rdx),
        (incorrect, SVE, info(1, sept_state::FREE))
    );
    // A 1G entry that links a table (NL_MAPPED).
    let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(0, 2), t, sp, 0);
    assert_eq!((st, out.rdx), (incorrect, info(2, sept_state::NL_MAPPED)));
    assert_eq!(out.rcx & !(0x7 | XU | 0x80), 0, "non-leaf arch bits only");
    // A 2M entry that links a table.
    tdx.mem_sept_add(td.tdr, Gpa::new(G), SeptLevel::L2M, Hpa::new(page(&env)))
        .expect("SEPT.ADD");
    let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(G, 1), t, sp, 0);
    assert_eq!((st, out.rdx), (incorrect, info(1, sept_state::NL_MAPPED)));
    // Blocked entries of a table are refused the same way (NL_BLOCKED).
    tdx.mem_range_block(td.tdr, Gpa::new(G), SeptLevel::L2M)
        .expect("BLOCK");
    let (st, out) = call(&m, leaf::MEM_PAGE_DEMOTE, gl(G, 1), t, sp, 0);
    assert_eq!((st, out.rdx), (incorrect, info(1, sept_state::NL_BLOCKED)));
    assert_eq!(m.pamt_info(pfn(sp)), Some(nda()));
}

fn demote_is_busy_on_every_lock_it_takes(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::Runnable);
    block_track(&tdx, &td);
    let blocked = sept_rd(&tdx, &td, G, 1);
    let tdr = tdr_pfn(&td);
    let sp = page(&env);
    let busy = |op: u32| with(status::OPERAND_BUSY, op);
    let demote = args(gl(G, 1), tdr_pa(&td), sp, 0);
    let locks: [(ModuleLock, u64, Option<Details>); 6] = [
        (ModuleLock::Pamt(tdr), busy(operand::RDX), None),
        (ModuleLock::OpState(tdr), busy(operand::OP_STATE), None),
        (ModuleLock::SeptTree(tdr), busy(operand::SEPT_TREE), None),
        (
            ModuleLock::SeptEntry {
                tdr,
                gpa: G,
                level: SeptLevel::L2M,
            },
            busy(operand::RCX),
            Some(blocked),
        ),
        (ModuleLock::Pamt(pfn(sp)), busy(operand::R8), None),
        // `pamt_demote`: the huge page's own PAMT entry, after the new page was written.
        (ModuleLock::Pamt(head), busy(operand::RCX), Some((0, 0))),
    ];
    for (lock, want, details) in locks {
        let g = m.hold_lock(lock, Mode::Exclusive).expect("lock free");
        let (st, out) = seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote);
        assert_eq!(st, want, "{lock:?} held");
        if let Some(d) = details {
            assert_eq!((out.rcx, out.rdx), d, "{lock:?} held: details");
        }
        drop(g);
        unchanged(&m, &tdx, &td, head, blocked, sp);
    }
    // The tree is taken shared: another reader does not stop DEMOTE.
    let _reader = m
        .hold_lock(ModuleLock::SeptTree(tdr), Mode::Shared)
        .unwrap();
    assert_eq!(
        seam(&m, leaf::MEM_PAGE_DEMOTE, 0, demote).0,
        status::SUCCESS
    );
}

fn a_demoted_range_is_reclaimed_page_by_page_at_teardown(line: ModuleLine) {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let (td, head) = td_with_2m(&tdx, &env, Stage::Runnable);
    block_track(&tdx, &td);
    let sp = page(&env);
    tdx.mem_page_demote(td.tdr, Gpa::new(G), SeptLevel::L2M, Hpa::new(sp))
        .expect("DEMOTE");
    for v in &td.vcpus {
        tdx.vp_flush(*v).expect("VP.FLUSH");
    }
    tdx.mng_vpflushdone(td.tdr).expect("VPFLUSHDONE");
    tdx.phymem_cache_wb(false).expect("CACHE.WB");
    tdx.mng_key_freeid(td.tdr).expect("KEY.FREEID");
    let r = tdx.phymem_page_reclaim(head.add(7).hpa()).expect("RECLAIM");
    assert_eq!(
        (r.page_type, r.size),
        (page_type::REG, page_size::SIZE_4K),
        "a 4K page now"
    );
    let r = tdx.phymem_page_reclaim(Hpa::new(sp)).expect("RECLAIM");
    assert_eq!(r.page_type, page_type::EPT);
    assert_eq!(m.pamt_info(head.add(7)), Some(freed(&td)));
    assert_eq!(
        m.pamt_info(head.add(8)),
        Some(owned_by(page_type::REG, 0, &td))
    );
}

testkit::per_module_line!(
    demote_of_a_blocked_tracked_2m_leaf_gives_512_unblocked_4k_leaves,
    demote_before_finalize_needs_no_block,
    demote_in_a_runnable_td_needs_the_block_tracked,
    demote_refuses_bad_operands_in_intels_order,
    demote_refuses_entries_that_are_not_huge_leaves,
    demote_is_busy_on_every_lock_it_takes,
    a_demoted_range_is_reclaimed_page_by_page_at_teardown,
);
