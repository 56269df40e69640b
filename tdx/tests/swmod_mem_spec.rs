// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of the software TDX module's S-EPT leaves, written from Intel's TDX module sources
//! (`intel/tdx-module`, newest: `tdh_mem_sept_add.c`, `tdh_mem_sept_remove.c`,
//! `tdh_mem_page_add.c`, `tdh_mr_extend.c`, `tdh_mem_sept_rd.c`, `helpers.c`, `sept_manager.*`)
//! and `docs/tdx-module-rules.md` §6: exact statuses, operand ids and output registers.

mod common;

use common::*;
use mmu::{Gpa, Pfn};
use std::sync::atomic::Ordering::Relaxed;
use tdx::abi::{leaf, operand, page_type, sept_state, status, SeptLevel};
use tdx::swmod::pamt::shared_hpa_check;
use tdx::swmod::{ModuleLine, SwTdxModule};
use tdx::{SeamArgs, Tdx};
use testkit::env::{Sha2Compress, BASE_PFN};
use testkit::td::{build_td, host_page, sw_module, td_params, Stage, SwModule, TestTd};
use testkit::HostEnv;

/// Arena pages of most tests.
const CAP: usize = 4096;

/// "No page" in a page operand.
const NULL_PA: u64 = u64::MAX;
/// Bit 63 of a page operand.
const BIT63: u64 = 1 << 63;

// ---- S-EPT arch-entry bits (§3.5, §3.6) -----------------------------------------------------

// SVE, XU, NL_RWX and LEAF_NO_PERM are in `common`.

/// R, W, Xs, Xu plus MT/IPAT/PS and SVE: a MAPPED leaf without its HPA.
const LEAF_MAPPED: u64 = 0x7 | XU | LEAF_NO_PERM | SVE;
/// A PENDING or any-BLOCKED leaf without its HPA: no permissions, SVE.
const LEAF_NONE: u64 = LEAF_NO_PERM | SVE;

// ---- helpers (the ones swmod_spec.rs uses too are in `common`) ------------------------------

/// A software module over the whole arena handing out HKIDs `first..first + 16`: HKIDs below
/// `first` are shared.
fn module_with_private_hkids_from(env: &HostEnv, first: u16) -> SwModule<'_> {
    let mut m = SwTdxModule::new(env, Sha2Compress, ModuleLine::V2_0, first, 16);
    m.add_tdmr(Pfn::new(BASE_PFN), env.capacity() as u64)
        .expect("TDMR");
    m
}

/// An HKID in bits 51:46 of a physical address.
fn with_hkid(pa: u64, hkid: u64) -> u64 {
    pa | hkid << 46
}

/// SEPT.ADD version 1 arguments.
fn v1(rcx: u64, rdx: u64, r8: u64, r9: u64, r10: u64, r11: u64) -> SeamArgs {
    SeamArgs {
        rcx,
        rdx,
        r8,
        r9,
        r10,
        r11,
    }
}

fn r8_to_r11(a: &SeamArgs) -> [u64; 4] {
    [a.r8, a.r9, a.r10, a.r11]
}

// =============================================================================================
// TDH.MEM.SEPT.ADD
// =============================================================================================

#[test]
fn sept_add_version_2_clears_rcx_rdx_and_leaves_r8_to_r11() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    let args = v1(gl(0, 3), tdr_pa(&td), p | BIT63, 0x1234_5000, NULL_PA, 7);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 2, args);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RAX));
    assert_eq!((a.rcx, a.rdx), (0, 0));
    assert_eq!(r8_to_r11(&a), [p | BIT63, 0x1234_5000, NULL_PA, 7]);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(sept_rd(&tdx, &td, 0, 3), (SVE, info(3, sept_state::FREE)));
}

#[test]
fn sept_add_version_0_ignores_bit_63_of_the_new_page_and_leaves_r8() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    let (st, a) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 3), tdr_pa(&td), p | BIT63, 0);
    assert_eq!(st, status::SUCCESS);
    assert_eq!((a.rcx, a.rdx, a.r8), (0, 0, p | BIT63));
    assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::EPT, 0, &td)));
    assert_eq!(
        m.sept_lookup(tdr_pfn(&td), 0, SeptLevel(3)),
        Some((sept_state::NL_MAPPED, pfn(p)))
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0, 3),
        (NL_RWX, info(3, sept_state::NL_MAPPED))
    );
    // A page operand with HKID bits is still refused (bit 63 only is ignored).
    let q = page(&env);
    let (st, a) = call(
        &m,
        leaf::MEM_SEPT_ADD,
        gl(0, 2),
        tdr_pa(&td),
        q | 1 << 46 | BIT63,
        0,
    );
    assert_eq!(st, with(status::OPERAND_INVALID, operand::R8));
    assert_eq!(a.r8, q | 1 << 46 | BIT63);
}

#[test]
fn sept_add_version_1_returns_null_pa_for_the_page_it_added() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let chld = chldcnt(&m, &td);
    let p = page(&env);
    let args = v1(gl(0, 3), tdr_pa(&td), p | BIT63, NULL_PA, NULL_PA, NULL_PA);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
    assert_eq!(st, status::SUCCESS);
    assert_eq!((a.rcx, a.rdx), (0, 0));
    assert_eq!(r8_to_r11(&a), [NULL_PA; 4]);
    assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::EPT, 0, &td)));
    assert_eq!(chldcnt(&m, &td), chld + 1);
    assert_eq!(
        m.sept_lookup(tdr_pfn(&td), 0, SeptLevel(3)),
        Some((sept_state::NL_MAPPED, pfn(p)))
    );
}

#[test]
fn sept_add_version_1_with_allow_existing_returns_the_unused_page_with_bit_63() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let chld = chldcnt(&m, &td);
    let p = page(&env);
    for r8 in [p, p | BIT63] {
        let args = v1(gl(0, 2), tdr_pa(&td) | 1, r8, NULL_PA, NULL_PA, NULL_PA);
        let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
        assert_eq!(st, status::SUCCESS, "r8 {r8:#x}");
        assert_eq!((a.rcx, a.rdx), (0, 0));
        assert_eq!(r8_to_r11(&a), [p | BIT63, NULL_PA, NULL_PA, NULL_PA]);
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), chld);
    // Without allow_existing: EPT_ENTRY_STATE_INCORRECT with the entry, R8 = the input.
    let args = v1(gl(0, 2), tdr_pa(&td), p | BIT63, NULL_PA, NULL_PA, NULL_PA);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (
            with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX),
            NL_RWX,
            info(2, sept_state::NL_MAPPED)
        )
    );
    assert_eq!(r8_to_r11(&a), [p, NULL_PA, NULL_PA, NULL_PA]);
}

#[test]
fn sept_add_without_a_new_page_needs_version_1_and_an_existing_table() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 3);
    let chld = chldcnt(&m, &td);
    // Version 1, FREE entry: process_l1_page wants NL_MAPPED → EPT_ENTRY_STATE_INCORRECT +sept.
    for flags in [0u64, 1] {
        let args = v1(
            gl(0, 2),
            tdr_pa(&td) | flags,
            NULL_PA,
            NULL_PA,
            NULL_PA,
            NULL_PA,
        );
        let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
        assert_eq!(
            (st, a.rcx, a.rdx),
            (
                with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX),
                SVE,
                info(2, sept_state::FREE)
            ),
            "allow_existing {flags}"
        );
        assert_eq!(r8_to_r11(&a), [NULL_PA; 4]);
    }
    // Version 0, FREE entry: OPERAND_INVALID|R8, no details.
    let (st, a) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 2), tdr_pa(&td), NULL_PA, 0);
    assert_eq!(
        (st, a.rcx, a.rdx, a.r8),
        (with(status::OPERAND_INVALID, operand::R8), 0, 0, NULL_PA)
    );
    // Version 1, NL_MAPPED entry: nothing to add, success.
    let args = v1(gl(0, 3), tdr_pa(&td), NULL_PA, NULL_PA, NULL_PA, NULL_PA);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
    assert_eq!((st, a.rcx, a.rdx), (status::SUCCESS, 0, 0));
    assert_eq!(r8_to_r11(&a), [NULL_PA; 4]);
    // Version 0, NL_MAPPED entry: OPERAND_INVALID|R8.
    let (st, a) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 3), tdr_pa(&td), NULL_PA, 0);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::OPERAND_INVALID, operand::R8), 0, 0)
    );
    assert_eq!(chldcnt(&m, &td), chld);
    assert_eq!(sept_rd(&tdx, &td, 0, 2), (SVE, info(2, sept_state::FREE)));
}

#[test]
fn sept_add_version_1_error_paths_return_the_page_operands_with_bit_63_cleared() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let (p, q, r) = (page(&env), page(&env), page(&env));
    let want = [p, q, NULL_PA, r];
    for (rdx, status_want) in [
        (
            tdr_pa(&td) | 1 << 1,
            with(status::OPERAND_INVALID, operand::RDX),
        ),
        (
            tdr_pa(&td) | 1 << 52,
            with(status::OPERAND_INVALID, operand::RDX),
        ),
        (p, with(status::PAGE_METADATA_INCORRECT, operand::RDX)),
    ] {
        let args = v1(gl(0, 3), rdx, p | BIT63, q | BIT63, NULL_PA, r);
        let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
        assert_eq!(st, status_want, "rdx {rdx:#x}");
        assert_eq!((a.rcx, a.rdx), (0, 0));
        assert_eq!(r8_to_r11(&a), want, "rdx {rdx:#x}");
    }
    // Version 0 writes none of them.
    let args = v1(gl(0, 3), tdr_pa(&td) | 1 << 1, p | BIT63, q | BIT63, 5, r);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 0, args);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RDX));
    assert_eq!(r8_to_r11(&a), [p | BIT63, q | BIT63, 5, r]);
    for x in [p, q, r] {
        assert_eq!(m.pamt_info(pfn(x)), Some(nda()));
    }
}

#[test]
fn sept_add_version_1_checks_the_l2_pages_after_every_l1_check() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    // Levels 3 and 2 mapped at GPA 0; the level-1 entries below are FREE.
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    let chld = chldcnt(&m, &td);
    let (p, l2) = (page(&env), page(&env));
    let t = tdr_pa(&td);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    // (RCX, RDX, R8) → status, RCX, RDX: each L1 failure wins over the bad R9.
    for (rcx, rdx, r8, want) in [
        (
            gl(0, 1),
            t | 1 << 5,
            p,
            (with(status::OPERAND_INVALID, operand::RDX), 0, 0),
        ),
        (
            gl(0, 1),
            page(&env),
            p,
            (with(status::PAGE_METADATA_INCORRECT, operand::RDX), 0, 0),
        ),
        (
            gl(0, 0),
            t,
            p,
            (with(status::OPERAND_INVALID, operand::RCX), 0, 0),
        ),
        (
            gl(1 << 39, 2),
            t,
            p,
            (
                with(status::EPT_WALK_FAILED, operand::RCX),
                SVE,
                info(3, sept_state::FREE),
            ),
        ),
        (
            gl(0x20_0000, 1),
            t,
            p,
            (
                incorrect,
                LEAF_NONE | head.hpa().raw(),
                info(1, sept_state::PENDING),
            ),
        ),
        (
            gl(0, 1),
            t,
            NULL_PA,
            (incorrect, SVE, info(1, sept_state::FREE)),
        ),
        (
            gl(0, 2),
            t,
            p,
            (incorrect, NL_RWX, info(2, sept_state::NL_MAPPED)),
        ),
        (
            gl(0, 1),
            t,
            outside(&env),
            (with(status::OPERAND_ADDR_RANGE_ERROR, operand::R8), 0, 0),
        ),
        (
            gl(0, 1),
            t,
            head.hpa().raw(),
            (with(status::PAGE_METADATA_INCORRECT, operand::R8), 0, 0),
        ),
        (
            gl(0, 1),
            t,
            p + 0x800,
            (with(status::OPERAND_INVALID, operand::R8), 0, 0),
        ),
    ] {
        let (st, a) = seam(
            &m,
            leaf::MEM_SEPT_ADD,
            1,
            v1(rcx, rdx, r8, l2, NULL_PA, NULL_PA),
        );
        assert_eq!(
            (st, a.rcx, a.rdx),
            want,
            "rcx {rcx:#x} rdx {rdx:#x} r8 {r8:#x}"
        );
        assert_eq!(r8_to_r11(&a), [r8, l2, NULL_PA, NULL_PA]);
    }
    // All L1 checks pass: the first non-NULL_PA L2 page names VM 1..3, and there is no L2 VM.
    for (l2s, op) in [
        ([l2, NULL_PA, NULL_PA], 9u32),
        ([NULL_PA, l2 | BIT63, NULL_PA], 10),
        ([NULL_PA, NULL_PA, l2], 11),
        ([l2, NULL_PA, l2], 9),
    ] {
        let args = v1(gl(0, 1), t, p, l2s[0], l2s[1], l2s[2]);
        let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
        assert_eq!(
            (st, a.rcx, a.rdx),
            (with(status::OPERAND_INVALID, op), 0, 0)
        );
        let cleared = l2s.map(|x| if x == NULL_PA { x } else { x & !BIT63 });
        assert_eq!(r8_to_r11(&a), [p, cleared[0], cleared[1], cleared[2]]);
    }
    assert_eq!(with(status::OPERAND_INVALID, 10), 0xC000_0100_0000_000A);
    // No new L1 page on an existing table, and an L2 page: the same L2 refusal.
    let args = v1(gl(0, 2), t, NULL_PA, NULL_PA, l2, NULL_PA);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::OPERAND_INVALID, 10), 0, 0)
    );
    assert_eq!(r8_to_r11(&a), [NULL_PA, NULL_PA, l2, NULL_PA]);
    // Nothing was added, and the new L1 page was not kept locked.
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(m.pamt_info(pfn(l2)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), chld);
    assert_eq!(sept_rd(&tdx, &td, 0, 1), (SVE, info(1, sept_state::FREE)));
    let args = v1(gl(0, 1), t, p, NULL_PA, NULL_PA, NULL_PA);
    let (st, a) = seam(&m, leaf::MEM_SEPT_ADD, 1, args);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(r8_to_r11(&a), [NULL_PA; 4]);
    assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::EPT, 0, &td)));
}

// =============================================================================================
// TDH.MEM.SEPT.REMOVE
// =============================================================================================

#[test]
fn sept_remove_version_2_sets_r9_to_r11_to_null_pa_before_refusing() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    let args = v1(gl(0, 1), tdr_pa(&td), 0x55, 1, 2, 3);
    let (st, a) = seam(&m, leaf::MEM_SEPT_REMOVE, 2, args);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RAX));
    assert_eq!((a.rcx, a.rdx), (0, 0));
    assert_eq!(r8_to_r11(&a), [0x55, NULL_PA, NULL_PA, NULL_PA]);
    assert_eq!(
        m.pamt_info(pfn(tables[2])),
        Some(owned_by(page_type::EPT, 0, &td))
    );
}

#[test]
fn sept_remove_version_1_returns_null_pa_l2_pages_on_every_path() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    // TDR refused.
    let (st, a) = seam(
        &m,
        leaf::MEM_SEPT_REMOVE,
        1,
        v1(gl(0, 1), tables[0], 0x55, 1, 2, 3),
    );
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::PAGE_METADATA_INCORRECT, operand::RDX), 0, 0)
    );
    assert_eq!(r8_to_r11(&a), [0x55, NULL_PA, NULL_PA, NULL_PA]);
    // A FREE entry: EPT_ENTRY_STATE_INCORRECT with the entry.
    let args = v1(gl(0x20_0000, 1), tdr_pa(&td), 0x55, 1, 2, 3);
    let (st, a) = seam(&m, leaf::MEM_SEPT_REMOVE, 1, args);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (
            with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX),
            SVE,
            info(1, sept_state::FREE)
        )
    );
    assert_eq!(r8_to_r11(&a), [0x55, NULL_PA, NULL_PA, NULL_PA]);
    // Success: RCX = the removed table, RDX = 0.
    let (st, a) = seam(
        &m,
        leaf::MEM_SEPT_REMOVE,
        1,
        v1(gl(0, 1), tdr_pa(&td), 0x55, 1, 2, 3),
    );
    assert_eq!((st, a.rcx, a.rdx), (status::SUCCESS, tables[2], 0));
    assert_eq!(r8_to_r11(&a), [0x55, NULL_PA, NULL_PA, NULL_PA]);
    assert_eq!(m.pamt_info(pfn(tables[2])), Some(freed(&td)));
}

#[test]
fn sept_remove_version_0_leaves_r8_to_r11() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    let args = v1(gl(0x20_0000, 1), tdr_pa(&td), 0x55, 1, 2, 3);
    let (st, a) = seam(&m, leaf::MEM_SEPT_REMOVE, 0, args);
    assert_eq!(st, with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX));
    assert_eq!(r8_to_r11(&a), [0x55, 1, 2, 3]);
    let (st, a) = seam(
        &m,
        leaf::MEM_SEPT_REMOVE,
        0,
        v1(gl(0, 1), tdr_pa(&td), 0x55, 1, 2, 3),
    );
    assert_eq!((st, a.rcx, a.rdx), (status::SUCCESS, tables[2], 0));
    assert_eq!(r8_to_r11(&a), [0x55, 1, 2, 3]);
}

// =============================================================================================
// TDH.MEM.PAGE.ADD
// =============================================================================================

#[test]
fn page_add_maps_a_leaf_with_xu_and_sve_and_block_clears_xu_only() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0),
        (LEAF_MAPPED | mapped, info(0, sept_state::MAPPED))
    );
    assert_eq!(
        m.sept_entry(tdr_pfn(&td), 0x1000, SeptLevel::L4K),
        Some((sept_state::MAPPED, LEAF_MAPPED | mapped))
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (LEAF_NONE | pending, info(0, sept_state::PENDING))
    );
    // BLOCK clears R, W, Xs and Xu; SVE stays.
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0),
        (LEAF_NONE | mapped, info(0, sept_state::BLOCKED))
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (LEAF_NONE | pending, info(0, sept_state::PENDING_BLOCKED))
    );
    // UNBLOCK restores SEPT_PERMISSIONS_RWX (Xu included).
    tdx.mem_track(td.tdr).unwrap();
    tdx.mem_track(td.tdr).unwrap();
    tdx.mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_range_unblock(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0),
        (LEAF_MAPPED | mapped, info(0, sept_state::MAPPED))
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (LEAF_NONE | pending, info(0, sept_state::PENDING))
    );
}

#[test]
fn shared_hpa_check_follows_helpers_c() {
    let invalid = Err(status::OPERAND_INVALID);
    let pa = 0x1_2345_6000u64;
    // HKIDs below the first private HKID are shared; the HKID is stripped.
    assert_eq!(shared_hpa_check(pa, 4096, 32), Ok(pa));
    assert_eq!(shared_hpa_check(with_hkid(pa, 31), 4096, 32), Ok(pa));
    assert_eq!(shared_hpa_check(with_hkid(pa, 1), 4096, 32), Ok(pa));
    assert_eq!(shared_hpa_check(with_hkid(pa, 32), 4096, 32), invalid);
    assert_eq!(shared_hpa_check(with_hkid(pa, 63), 4096, 32), invalid);
    assert_eq!(shared_hpa_check(with_hkid(pa, 1), 4096, 1), invalid);
    assert_eq!(shared_hpa_check(pa, 4096, 1), Ok(pa));
    // Alignment, and nothing above the 52-bit physical-address width.
    assert_eq!(shared_hpa_check(pa + 0x400, 4096, 32), invalid);
    assert_eq!(shared_hpa_check(pa + 0x400, 1024, 32), Ok(pa + 0x400));
    assert_eq!(shared_hpa_check(pa | 1 << 52, 4096, 32), invalid);
    assert_eq!(shared_hpa_check(pa | 1 << 63, 4096, 32), invalid);
}

#[test]
fn page_add_accepts_a_source_with_any_shared_hkid() {
    let env = HostEnv::with_capacity(CAP);
    let m = module_with_private_hkids_from(&env, 32);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 32, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let t = tdr_pa(&td);
    for (i, hkid) in [0u64, 1, 31].into_iter().enumerate() {
        let gpa = 0x1000 * (i as u64 + 1);
        let seed = 100 + hkid;
        let src = source_page(&env, seed);
        let tgt_frame = host_page(&env);
        let tgt = tgt_frame.pfn().hpa().raw();
        let r9 = with_hkid(src.pfn().hpa().raw(), hkid);
        let (st, a) = call(&m, leaf::MEM_PAGE_ADD, gl(gpa, 0), t, tgt, r9);
        assert_eq!((st, a.rcx, a.rdx), (status::SUCCESS, 0, 0), "hkid {hkid}");
        for (j, w) in tgt_frame.words().iter().enumerate() {
            assert_eq!(w.load(Relaxed), pattern(seed, j), "hkid {hkid} word {j}");
        }
        assert_eq!(
            sept_rd(&tdx, &td, gpa, 0),
            (LEAF_MAPPED | tgt, info(0, sept_state::MAPPED))
        );
        assert_eq!(
            m.pamt_info(pfn(tgt)),
            Some(owned_by(page_type::REG, 0, &td))
        );
    }
}

#[test]
fn page_add_refuses_a_source_with_a_private_hkid_or_bits_above_max_pa() {
    let env = HostEnv::with_capacity(CAP);
    let m = module_with_private_hkids_from(&env, 32);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 32, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let chld = chldcnt(&m, &td);
    let t = tdr_pa(&td);
    let src = source_page(&env, 3).pfn().hpa().raw();
    let tgt = page(&env);
    for r9 in [
        with_hkid(src, 32),
        with_hkid(src, 47),
        with_hkid(src, 63),
        src | 1 << 52,
        src | 1 << 63,
        with_hkid(src, 1) + 0x800,
    ] {
        let (st, a) = call(&m, leaf::MEM_PAGE_ADD, gl(0x1000, 0), t, tgt, r9);
        assert_eq!(
            (st, a.rcx, a.rdx),
            (with(status::OPERAND_INVALID, operand::R9), 0, 0),
            "r9 {r9:#x}"
        );
    }
    // The source is checked before the target: a bad target is not reported.
    let (st, _) = call(
        &m,
        leaf::MEM_PAGE_ADD,
        gl(0x1000, 0),
        t,
        outside(&env),
        with_hkid(src, 32),
    );
    assert_eq!(st, with(status::OPERAND_INVALID, operand::R9));
    assert_eq!(m.pamt_info(pfn(tgt)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), chld);
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0),
        (SVE, info(0, sept_state::FREE))
    );
}

#[test]
fn page_add_with_private_hkids_from_1_refuses_any_hkid_in_the_source() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let src = source_page(&env, 3).pfn().hpa().raw();
    let tgt = page(&env);
    let (st, _) = call(
        &m,
        leaf::MEM_PAGE_ADD,
        gl(0x1000, 0),
        tdr_pa(&td),
        tgt,
        with_hkid(src, 1),
    );
    assert_eq!(st, with(status::OPERAND_INVALID, operand::R9));
    let (st, _) = call(&m, leaf::MEM_PAGE_ADD, gl(0x1000, 0), tdr_pa(&td), tgt, src);
    assert_eq!(st, status::SUCCESS);
}

// =============================================================================================
// TDH.MR.EXTEND
// =============================================================================================

#[test]
fn mr_extend_of_leaves_without_permissions_is_not_present_with_the_entry() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, false);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    let not_present = with(status::EPT_ENTRY_NOT_PRESENT, operand::RCX);
    assert_eq!(not_present, 0xC000_0B03_0000_0001);
    let extend = |gpa: u64| {
        let (st, a) = call(&m, leaf::MR_EXTEND, gpa, tdr_pa(&td), 0, 0);
        (st, a.rcx, a.rdx)
    };
    // PENDING (4K and 2M: the walk stops at the 2M leaf).
    assert_eq!(
        extend(0x2100),
        (
            not_present,
            LEAF_NONE | pending,
            info(0, sept_state::PENDING)
        )
    );
    assert_eq!(
        extend(0x20_1000),
        (
            not_present,
            LEAF_NONE | head.hpa().raw(),
            info(1, sept_state::PENDING)
        )
    );
    // BLOCKED and PENDING_BLOCKED.
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(
        extend(0x1000),
        (
            not_present,
            LEAF_NONE | mapped,
            info(0, sept_state::BLOCKED)
        )
    );
    assert_eq!(
        extend(0x2000),
        (
            not_present,
            LEAF_NONE | pending,
            info(0, sept_state::PENDING_BLOCKED)
        )
    );
    // Unblocked, the MAPPED page measures again.
    tdx.mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(extend(0x1000), (status::SUCCESS, 0, 0));
}

// =============================================================================================
// TDH.MEM.SEPT.RD
// =============================================================================================

/// An initialized DEBUG TD (ATTRIBUTES bit 0) with tables down to level 1 at GPA 0.
fn debug_td(tdx: &T, env: &HostEnv, hkid: u16) -> TestTd {
    let td = build_td(tdx, env, hkid, 0, Stage::TdcsAdded);
    let params = td_params(env, false, 4);
    params.words()[0].store(1, Relaxed);
    tdx.mng_init(td.tdr, params.pfn().hpa()).expect("MNG.INIT");
    add_tables(tdx, env, td.tdr, 0, 1);
    td
}

#[test]
fn sept_rd_of_l2_attributes_on_a_debug_td_returns_them_in_r8() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = debug_td(&tdx, &env, 1);
    let t = tdr_pa(&td);
    // No L2 VMs: the attributes are 0.
    for (rcx, want) in [
        (gl(0, 1), (NL_RWX, info(1, sept_state::NL_MAPPED))),
        (gl(0x1000, 0), (SVE, info(0, sept_state::FREE))),
    ] {
        let (st, a) = call(&m, leaf::MEM_SEPT_RD, rcx, t | 1, 0xdead, 0);
        assert_eq!(st, status::SUCCESS, "rcx {rcx:#x}");
        assert_eq!((a.rcx, a.rdx, a.r8), (want.0, want.1, 0), "rcx {rcx:#x}");
        // Without the flag R8 is not an output.
        let (st, a) = call(&m, leaf::MEM_SEPT_RD, rcx, t, 0xdead, 0);
        assert_eq!(st, status::SUCCESS);
        assert_eq!((a.rcx, a.rdx, a.r8), (want.0, want.1, 0xdead));
    }
    // A failed walk returns before the attributes: R8 untouched.
    let (st, a) = call(&m, leaf::MEM_SEPT_RD, gl(1 << 39, 2), t | 1, 0xdead, 0);
    assert_eq!(
        (st, a.rcx, a.rdx, a.r8),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(3, sept_state::FREE),
            0xdead
        )
    );
    // A non-debug TD refuses the flag, R8 untouched.
    let plain = build_td(&tdx, &env, 2, 0, Stage::Initialized);
    let (st, a) = call(
        &m,
        leaf::MEM_SEPT_RD,
        gl(0, 3),
        tdr_pa(&plain) | 1,
        0xdead,
        0,
    );
    assert_eq!(
        (st, a.rcx, a.rdx, a.r8),
        (with(status::OPERAND_INVALID, operand::RDX), 0, 0, 0xdead)
    );
}

/// TDH.MNG.INIT reads TD_PARAMS through a shared KeyID (`shared_hpa_check`, like PAGE.ADD's
/// source): any KeyID below the first private one is accepted, a private one is refused.
#[test]
fn mng_init_reads_td_params_through_any_shared_hkid() {
    let env = HostEnv::with_capacity(CAP);
    let m = module_with_private_hkids_from(&env, 32);
    let tdx = Tdx::new(&m);
    for (i, (hkid, ok)) in [(0u64, true), (31, true), (32, false), (40, false)]
        .into_iter()
        .enumerate()
    {
        let td = build_td(&tdx, &env, 32 + i as u16, 0, Stage::TdcsAdded);
        let params = testkit::td::td_params(&env, false, 1);
        let rdx = with_hkid(params.pfn().hpa().raw(), hkid);
        let (st, _) = call(&m, leaf::MNG_INIT, tdr_pa(&td), rdx, 0, 0);
        let want = if ok {
            status::SUCCESS
        } else {
            with(status::OPERAND_INVALID, operand::RDX)
        };
        assert_eq!(st, want, "TD_PARAMS with HKID {hkid}");
    }
}
