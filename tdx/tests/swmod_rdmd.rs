// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of TDH.PHYMEM.PAGE.RDMD (leaf 24) and of what it shows: the PAMT entry of a page
//! (type, owner, size, block epoch) as `docs/tdx-module-rules.md` §5 and §6 say, on both module
//! lines — including that PAGE.REMOVE, SEPT.REMOVE and PHYMEM.PAGE.RECLAIM only change the type
//! to NDA and leave the owner.

mod common;

use common::*;
use mmu::{Gpa, Hpa, Pfn};
use tdx::abi::{leaf, operand, page_type, status, SeptLevel};
use tdx::swmod::{Mode, ModuleLine, ModuleLock};
use tdx::{CacheWb, Operand, PageMetadata, SeamArgs, Tdx};
use testkit::td::{build_td, sw_module_on, Stage};
use testkit::HostEnv;

/// Inputs that must all read back as 0 after any RDMD: RDMD clears RCX, RDX and R8-R11 first.
fn junk(rcx: u64) -> SeamArgs {
    SeamArgs {
        rcx,
        rdx: 0x1111,
        r8: 0x2222,
        r9: 0x3333,
        r10: 0x4444,
        r11: 0x5555,
    }
}

fn rdmd_raw(m: &testkit::td::SwModule<'_>, pa: u64) -> (u64, SeamArgs) {
    seam(m, leaf::PHYMEM_PAGE_RDMD, 0, junk(pa))
}

/// The (RCX, RDX, R8, R9, R10, R11) a successful RDMD returns.
fn outs(a: &SeamArgs) -> [u64; 6] {
    [a.rcx, a.rdx, a.r8, a.r9, a.r10, a.r11]
}

fn md(pt: u8, owner: u64, size: u8, bepoch: u64) -> PageMetadata {
    PageMetadata {
        page_type: pt,
        owner: Hpa::new(owner),
        size,
        bepoch,
    }
}

#[test]
fn rdmd_refuses_bad_addresses_in_intels_order_and_clears_its_outputs() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(64);
        let m = sw_module_on(&env, line);
        let p = page(&env);
        let out = outside(&env);
        let invalid = with(status::OPERAND_INVALID, operand::RCX);
        for (pa, want) in [
            // Not 4K-aligned (a size in bits 2:0 too: no dynamic PAMT), checked before the
            // range: an unaligned address outside every TDMR is still OPERAND_INVALID.
            (p | 0x800, invalid),
            (p | 1, invalid),
            (p | 2, invalid),
            (out | 8, invalid),
            // At or above MAX_PA, or with HKID bits (51:46).
            (p | 1 << 52, invalid),
            (p | 1 << 63, invalid),
            (p | 1 << 46, invalid),
            (p | 5 << 46, invalid),
            // Outside every TDMR.
            (out, with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX)),
        ] {
            let (st, a) = rdmd_raw(&m, pa);
            assert_eq!(st, want, "{line:?}: {pa:#x}");
            assert_eq!(outs(&a), [0; 6], "{line:?}: {pa:#x}: outputs");
        }
        assert_eq!(m.errors(leaf::PHYMEM_PAGE_RDMD), 9);
        assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    }
}

#[test]
fn rdmd_is_busy_only_against_an_exclusive_holder_of_the_entry() {
    let env = HostEnv::with_capacity(64);
    let m = sw_module_on(&env, ModuleLine::V1_5);
    let p = page(&env);
    let held = m
        .hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Exclusive)
        .expect("free lock");
    let (st, a) = rdmd_raw(&m, p);
    assert_eq!(st, with(status::OPERAND_BUSY, operand::RCX));
    assert_eq!(outs(&a), [0; 6]);
    drop(held);
    // A reader does not block RDMD (shared), and RDMD leaves the entry unlocked.
    let reader = m.hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Shared).unwrap();
    assert_eq!(rdmd_raw(&m, p).0, status::SUCCESS);
    drop(reader);
    assert!(m
        .hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Exclusive)
        .is_some());
}

#[test]
fn rdmd_reads_every_page_type_of_a_td() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(512);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let never = page(&env);
        assert_eq!(
            tdx.phymem_page_rdmd(Hpa::new(never)),
            Ok(md(page_type::NDA, 0, 0, 0))
        );
        let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
        let tdr = tdr_pa(&td);
        // The TDR: owner 0.
        assert_eq!(
            tdx.phymem_page_rdmd(td.tdr.hpa()),
            Ok(md(page_type::TDR, 0, 0, 0))
        );
        // A vCPU's TDVPR.
        assert_eq!(
            tdx.phymem_page_rdmd(td.vcpus[0].hpa()),
            Ok(md(page_type::TDVPR, tdr, 0, 0))
        );
        // S-EPT pages and a PAGE.ADD page; then a BLOCK records the epoch (1) in R9.
        let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
        let data = add_page(&tdx, &env, td.tdr, 0x1000, 1).pfn().hpa();
        assert_eq!(
            tdx.phymem_page_rdmd(Hpa::new(tables[2])),
            Ok(md(page_type::EPT, tdr, 0, 0))
        );
        assert_eq!(
            tdx.phymem_page_rdmd(data),
            Ok(md(page_type::REG, tdr, 0, 0))
        );
        tdx.mr_finalize(td.tdr).unwrap();
        tdx.mem_track(td.tdr).unwrap();
        tdx.mem_track(td.tdr).unwrap();
        let _ = tdx
            .mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .unwrap();
        assert_eq!(
            tdx.phymem_page_rdmd(data),
            Ok(md(page_type::REG, tdr, 0, 3))
        );
        let _ = tdx
            .mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
            .unwrap();
        assert_eq!(
            tdx.phymem_page_rdmd(Hpa::new(tables[2])),
            Ok(md(page_type::EPT, tdr, 0, 3))
        );
        // Raw registers: RCX = type, RDX = owner, R8 = size, R9 = epoch, R10 = R11 = 0.
        let (st, a) = rdmd_raw(&m, data.raw());
        assert_eq!(st, status::SUCCESS);
        assert_eq!(outs(&a), [page_type::REG as u64, tdr, 0, 3, 0, 0]);
        // RDMD changes nothing and is not an error.
        assert_eq!(
            m.pamt_info(data.pfn()),
            Some(owned_by(page_type::REG, 0, &td))
        );
        assert_eq!(m.errors(leaf::PHYMEM_PAGE_RDMD), 0);
    }
}

#[test]
fn rdmd_of_a_2m_page_reads_the_large_page_and_its_head_epoch() {
    let env = HostEnv::with_capacity(2048);
    let m = sw_module_on(&env, ModuleLine::V1_5);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0);
    tdx.mem_track(td.tdr).unwrap();
    let _ = tdx
        .mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let tdr = tdr_pa(&td);
    for i in [0, 1, 5, 511] {
        assert_eq!(
            tdx.phymem_page_rdmd(head.add(i).hpa()),
            Ok(md(page_type::REG, tdr, 1, 2)),
            "page {i}"
        );
    }
}

#[test]
fn page_remove_keeps_the_owner_and_only_frees_the_type() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(512);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let (td, mapped, _) = td_with_mapped_and_pending(&tdx, &env, 1, false);
        let tdr = tdr_pa(&td);
        // Before finalize a MAPPED page is removed without BLOCK/TRACK.
        assert_eq!(
            tdx.mem_page_remove(td.tdr, Gpa::new(0x1000), SeptLevel::L4K),
            Ok(Hpa::new(mapped))
        );
        assert_eq!(m.pamt_info(pfn(mapped)), Some(freed(&td)), "{line:?}");
        // R9 (the epoch) is only reported for REG and EPT pages.
        assert_eq!(
            tdx.phymem_page_rdmd(Hpa::new(mapped)),
            Ok(md(page_type::NDA, tdr, 0, 0))
        );
        // The page can be given to the module again; its new owner replaces the old one.
        let (st, _) = call(&m, leaf::MNG_CREATE, mapped, 2, 0, 0);
        assert_eq!(st, status::SUCCESS);
        assert_eq!(
            tdx.phymem_page_rdmd(Hpa::new(mapped)),
            Ok(md(page_type::TDR, 0, 0, 0))
        );
    }
}

#[test]
fn sept_remove_and_reclaim_keep_the_owner() {
    let env = HostEnv::with_capacity(512);
    let m = sw_module_on(&env, ModuleLine::V1_5);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    let tdr = tdr_pa(&td);
    // The level-1 entry's table page (the lowest) is empty: SEPT.REMOVE frees it.
    assert_eq!(
        tdx.mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(Hpa::new(tables[2]))
    );
    assert_eq!(
        tdx.phymem_page_rdmd(Hpa::new(tables[2])),
        Ok(md(page_type::NDA, tdr, 0, 0))
    );
    // Teardown: RECLAIM of a TDCX page, then of the TDR, keeps their owners (the TDR's is 0).
    let v = td.vcpus[0];
    tdx.vp_flush(v).unwrap();
    tdx.mng_vpflushdone(td.tdr).unwrap();
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::Done));
    tdx.mng_key_freeid(td.tdr).unwrap();
    let r = tdx.phymem_page_reclaim(v.hpa()).expect("RECLAIM");
    assert_eq!(r.owner, Hpa::new(tdr));
    assert_eq!(
        tdx.phymem_page_rdmd(v.hpa()),
        Ok(md(page_type::NDA, tdr, 0, 0))
    );
    // A reclaimed page is reclaimed once: the type is what RECLAIM checks, not the owner.
    assert_eq!(
        tdx.phymem_page_reclaim(v.hpa()).map_err(|e| e.operand()),
        Err(Operand::RCX)
    );
}

#[test]
fn rdmd_of_a_removed_2m_page_reads_nda_4k_pages_with_the_old_owner() {
    let env = HostEnv::with_capacity(2048);
    let m = sw_module_on(&env, ModuleLine::V2_0);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0);
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(head.hpa())
    );
    for i in [0u64, 3, 511] {
        let p: Pfn = head.add(i);
        assert_eq!(
            tdx.phymem_page_rdmd(p.hpa()),
            Ok(md(page_type::NDA, tdr_pa(&td), 0, 0)),
            "page {i}"
        );
    }
    // And the range can be AUGed again as one 2M page.
    tdx.mem_page_aug(td.tdr, Gpa::new(0), SeptLevel::L2M, head.hpa())
        .expect("AUG 2M again");
}
