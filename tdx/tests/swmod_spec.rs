// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of the software TDX module, written from `docs/tdx-module-rules.md` (the "spec"),
//! not from the implementation. They run against the 2.0 line (testkit's `sw_module`); what the
//! 1.5 line answers differently is in `swmod_lines.rs`.
//!
//! For every leaf: the states it must accept and the states it must refuse, each with the exact
//! status (class and operand id) and, where §3.6 says so, the S-EPT details in RCX/RDX. Where
//! the implementation and the spec disagree the test asserts the spec and is marked
//! ``.
//!
//! Arch-entry bits (§3.6): a FREE entry reads as SVE only. A leaf is masked with R, W, Xs, Xu,
//! MT, IPAT, PS, HPA, SVE; a non-leaf with R, W, Xs, Xu, PS only (no HPA). Every leaf has SVE
//! (`sept_set_leaf_*`, `sept_update_state`); a MAPPED leaf has Xu (SEPT_PERMISSIONS_RWX) and
//! BLOCK clears it (SEPT_PERMISSIONS_MASK), so leaves are compared exactly.

mod common;

use common::*;
use mmu::env::Frame;
use mmu::{Gpa, Hpa, Pfn};
use sha2::{Digest, Sha384};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Barrier;
use tdx::abi::status::X2APIC_ID_NOT_UNIQUE;
use tdx::abi::{
    self, leaf, lifecycle, op_state, operand, page_size, page_type, sept_state, status, SeptLevel,
};
use tdx::swmod::{Injection, PamtInfo, MAX_TDVPS_PAGES, MIN_TDCS_PAGES, TDVPS_PAGES};
use tdx::{Block, CacheWb, KeyConfig, Reclaimed, SeamArgs, Seamcall, Tdcx, Tdr, Tdvpr, Tdx};
use testkit::env::BASE_PFN;
use testkit::td::{build_td, host_page, sw_module, td_params, Stage, SwModule, TestTd};
use testkit::HostEnv;

/// Arena pages of most tests.
const CAP: usize = 4096;

// ---- S-EPT arch-entry bits (§3.5, §3.6) -----------------------------------------------------

// SVE, XU, NL_RWX and LEAF_NO_PERM are in `common`.

/// R, W, Xs, Xu and PS: everything §3.6 keeps of a non-leaf entry.
const NL_ARCH_MASK: u64 = 0x7 | XU | 0x80;
/// R, W, X plus MT/IPAT/PS: a MAPPED leaf.
const LEAF_RWX: u64 = 0x7 | LEAF_NO_PERM;

// ---- helpers --------------------------------------------------------------------------------

/// A TD with its TDCS pages and MNG.INIT done with `max_vcpus`, no vCPU.
fn init_td(tdx: &T, env: &HostEnv, hkid: u16, max_vcpus: u64) -> TestTd {
    let td = build_td(tdx, env, hkid, 0, Stage::TdcsAdded);
    let p = td_params(env, false, max_vcpus);
    tdx.mng_init(td.tdr, p.pfn().hpa()).expect("MNG.INIT");
    td
}

/// VP.FLUSH of every vCPU, VPFLUSHDONE, CACHE.WB, KEY.FREEID: the TD is in TEARDOWN.
fn teardown(tdx: &T, td: &TestTd) {
    for v in &td.vcpus {
        tdx.vp_flush(*v).expect("VP.FLUSH");
    }
    tdx.mng_vpflushdone(td.tdr).expect("VPFLUSHDONE");
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::Done));
    tdx.mng_key_freeid(td.tdr).expect("KEY.FREEID");
}

/// Every arena page the TD owns (the head of a large page only), from the PAMT.
fn owned_pages(m: &SwModule<'_>, env: &HostEnv, td: &TestTd) -> Vec<(Pfn, PamtInfo)> {
    (0..env.capacity() as u64)
        .map(|i| Pfn::new(BASE_PFN + i))
        .filter_map(|p| m.pamt_info(p).map(|info| (p, info)))
        .filter(|(p, info)| {
            info.owner == tdr_pfn(td)
                && info.page_type != page_type::NDA
                && p.raw().is_multiple_of(1 << (9 * info.size as u32))
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A `sha384_128B_block_t` (§7): api name, zero-padded to 16 bytes, GPA little-endian, zeros.
fn mr_block(api: &str, gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..api.len()].copy_from_slice(api.as_bytes());
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// The bytes of `pattern(seed, ..)` as the page holds them.
fn pattern_bytes(seed: u64) -> Vec<u8> {
    (0..512)
        .flat_map(|i| pattern(seed, i).to_le_bytes())
        .collect()
}

// =============================================================================================
// §1 Dispatcher
// =============================================================================================

#[test]
fn dispatcher_refuses_reserved_rax_bits_unknown_leaves_and_versions() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let rax_invalid = with(status::OPERAND_INVALID, operand::RAX);
    assert_eq!(rax_invalid, 0xC000_0100_0000_0000);
    for bad in [1u64 << 24, 1 << 31, 1 << 32, 1 << 63] {
        let mut a = args(tdr_pa(&td), 0, 0, 0);
        let st = m.seamcall(abi::rax(leaf::MEM_TRACK, 0) | bad, &mut a);
        assert_eq!(st, rax_invalid, "reserved RAX bits {bad:#x}");
    }
    // Leaves without a version 1.
    for l in [
        leaf::MEM_TRACK,
        leaf::MEM_PAGE_AUG,
        leaf::MEM_RANGE_BLOCK,
        leaf::MR_FINALIZE,
    ] {
        let a = args(tdr_pa(&td), tdr_pa(&td), 0, 0);
        assert_eq!(seam(&m, l, 1, a).0, rax_invalid, "leaf {l} version 1");
    }
    // Version 2 of leaves that have a version 1.
    for l in [leaf::MEM_SEPT_ADD, leaf::MEM_SEPT_REMOVE, leaf::VP_INIT] {
        let a = args(gl(0, 3), tdr_pa(&td), page(&env), 0);
        assert_eq!(seam(&m, l, 2, a).0, rax_invalid, "leaf {l} version 2");
    }
    // Unknown leaf.
    assert_eq!(call(&m, 0x7fff, 0, 0, 0, 0).0, rax_invalid);
    // None of them ran: the epoch did not move.
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().epoch, 1);
}

#[test]

fn vp_init_version_1_takes_the_x2apic_id_from_r8() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = init_td(&tdx, &env, 1, 4);
    let v0 = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    let v1 = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    let init = |v: Tdvpr, r8: u64| args(v.hpa().raw(), 0, r8, 0);
    assert_eq!(
        seam(&m, leaf::VP_INIT, 1, init(v0, 1 << 32)).0,
        with(status::OPERAND_INVALID, operand::R8)
    );
    assert_eq!(seam(&m, leaf::VP_INIT, 1, init(v0, 7)).0, status::SUCCESS);
    assert_eq!(
        seam(&m, leaf::VP_INIT, 1, init(v1, 7)).0,
        X2APIC_ID_NOT_UNIQUE | 7
    );
}

#[test]

fn sept_add_version_1_is_accepted() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    // No L2 VMs: the L2 page operands R9-R11 are NULL_PA.
    let a = SeamArgs {
        rcx: gl(0, 3),
        rdx: tdr_pa(&td),
        r8: p,
        r9: u64::MAX,
        r10: u64::MAX,
        r11: u64::MAX,
    };
    assert_eq!(seam(&m, leaf::MEM_SEPT_ADD, 1, a).0, status::SUCCESS);
    assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::EPT, 0, &td)));
    assert_eq!(sept_rd(&tdx, &td, 0, 3).1, info(3, sept_state::NL_MAPPED));
}

// =============================================================================================
// TDH.MNG.CREATE
// =============================================================================================

#[test]
fn mng_create_accepts_a_free_hkid_and_an_nda_page() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    for hkid in [1u16, 16] {
        let tdr = host_page(&env).pfn();
        assert_eq!(m.pamt_info(tdr), Some(nda()));
        tdx.mng_create(Tdr::new(tdr.hpa()), hkid).unwrap();
        let want = PamtInfo {
            page_type: page_type::TDR,
            size: 0,
            owner: Pfn::new(0),
        };
        assert_eq!(m.pamt_info(tdr), Some(want));
        let i = m.td_info(tdr).unwrap();
        assert_eq!((i.lifecycle, i.chldcnt), (lifecycle::HKID_ASSIGNED, 0));
    }
    assert_eq!(m.calls(leaf::MNG_CREATE), 2);
    assert_eq!(m.errors(leaf::MNG_CREATE), 0);
}

#[test]
fn mng_create_refuses_hkids_outside_the_private_range() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdr = page(&env);
    // sw_module hands out HKIDs 1..=16; RDX bits 63:16 are reserved.
    for hkid in [0u64, 17, 1 << 16 | 1, u64::MAX] {
        let (st, _) = call(&m, leaf::MNG_CREATE, tdr, hkid, 0, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RDX),
            "hkid {hkid:#x}"
        );
    }
    // RDX is checked before the TDR page.
    let (st, _) = call(&m, leaf::MNG_CREATE, tdr + 8, 0, 0, 0);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RDX));
    assert_eq!(m.pamt_info(pfn(tdr)), Some(nda()));
}

#[test]
fn mng_create_refuses_an_hkid_in_use_until_key_freeid() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let a = build_td(&tdx, &env, 3, 0, Stage::Created);
    let p = page(&env);
    let st = |m: &SwModule<'_>| call(m, leaf::MNG_CREATE, p, 3, 0, 0).0;
    assert_eq!(st(&m), status::HKID_NOT_FREE);
    assert_eq!(status::HKID_NOT_FREE, 0xC000_0820_0000_0000);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    // Flushed, then written back: still the TD's until KEY.FREEID.
    tdx.mng_vpflushdone(a.tdr).unwrap();
    assert_eq!(st(&m), status::HKID_NOT_FREE);
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::Done));
    assert_eq!(st(&m), status::HKID_NOT_FREE);
    tdx.mng_key_freeid(a.tdr).unwrap();
    assert_eq!(st(&m), status::SUCCESS);
    assert_eq!(m.pamt_info(pfn(p)).unwrap().page_type, page_type::TDR);
}

#[test]
fn mng_create_refuses_a_tdr_page_that_is_not_nda() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tdcx = owned_pages(&m, &env, &td)
        .into_iter()
        .find(|(_, i)| i.page_type == page_type::TDCX)
        .unwrap()
        .0;
    for pa in [tdr_pa(&td), td.vcpus[0].hpa().raw(), tdcx.hpa().raw()] {
        let (st, _) = call(&m, leaf::MNG_CREATE, pa, 2, 0, 0);
        assert_eq!(st, with(status::PAGE_METADATA_INCORRECT, operand::RCX));
    }
    // HKID 2 was not taken by the failures.
    tdx.mng_create(Tdr::new(Hpa::new(page(&env))), 2).unwrap();
}

#[test]
fn mng_create_refuses_bad_tdr_addresses() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let p = page(&env);
    let invalid = with(status::OPERAND_INVALID, operand::RCX);
    let range = with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX);
    for (pa, want) in [
        (p + 0x800, invalid),
        (p | 1 << 46, invalid), // HKID bits
        (p | 1 << 52, invalid), // beyond MAX_PA
        (outside(&env), range),
        ((BASE_PFN - 1) << 12, range),
    ] {
        assert_eq!(
            call(&m, leaf::MNG_CREATE, pa, 1, 0, 0).0,
            want,
            "pa {pa:#x}"
        );
    }
}

// =============================================================================================
// TDH.MNG.KEY.CONFIG
// =============================================================================================

#[test]
fn key_config_accepts_a_td_with_its_hkid_assigned() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Created);
    assert_eq!(tdx.mng_key_config(td.tdr), Ok(KeyConfig::Configured));
    let i = m.td_info(tdr_pfn(&td)).unwrap();
    assert_eq!(i.lifecycle, lifecycle::KEYS_CONFIGURED);
}

#[test]
fn key_config_refuses_a_configured_td_and_pages_that_are_not_tdrs() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
    // One package: the TD left HKID_ASSIGNED, so the lifecycle check (step 3) answers first.
    let (st, _) = call(&m, leaf::MNG_KEY_CONFIG, tdr_pa(&td), 0, 0, 0);
    assert_eq!(st, status::LIFECYCLE_STATE_INCORRECT);
    assert_eq!(st, 0xC000_0607_0000_0000);
    let (st, _) = call(&m, leaf::MNG_KEY_CONFIG, page(&env), 0, 0, 0);
    assert_eq!(st, with(status::PAGE_METADATA_INCORRECT, operand::RCX));
    tdx.mng_vpflushdone(td.tdr).unwrap();
    let (st, _) = call(&m, leaf::MNG_KEY_CONFIG, tdr_pa(&td), 0, 0, 0);
    assert_eq!(st, status::LIFECYCLE_STATE_INCORRECT);
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().lifecycle,
        lifecycle::BLOCKED
    );
}

// =============================================================================================
// TDH.MNG.ADDCX
// =============================================================================================

#[test]
fn mng_addcx_refuses_a_td_whose_keys_are_not_configured() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Created);
    let p = page(&env);
    let e = tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(p))).unwrap_err();
    assert_eq!(e.status, status::TD_KEYS_NOT_CONFIGURED);
    assert_eq!(e.status, 0x8000_0810_0000_0000);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), 0);
}

#[test]
fn mng_addcx_accepts_up_to_the_maximum_then_tdcx_num_incorrect() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
    for i in 0..abi::MAX_TDCS_PAGES as u64 {
        let p = page(&env);
        tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(p))).unwrap();
        assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::TDCX, 0, &td)));
        assert_eq!(chldcnt(&m, &td), i + 1);
    }
    let p = page(&env);
    let e = tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(p))).unwrap_err();
    assert_eq!(e.status, status::TDCX_NUM_INCORRECT);
    assert_eq!(e.status, 0xC000_0610_0000_0000);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), 12);
    // MNG.INIT accepts a TD with more than the minimum.
    let params = td_params(&env, false, 1);
    tdx.mng_init(td.tdr, params.pfn().hpa()).unwrap();
}

#[test]
fn mng_addcx_after_mng_init_is_op_state_incorrect() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let p = page(&env);
    let e = tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(p))).unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(e.status, 0xC000_0608_0000_0000);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), MIN_TDCS_PAGES);
}

#[test]
fn mng_addcx_refuses_bad_tdcx_pages_and_tdr_operands() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
    let other = build_td(&tdx, &env, 2, 0, Stage::Created);
    let p = page(&env);
    let t = tdr_pa(&td);
    for (rcx, rdx, want) in [
        (
            tdr_pa(&other),
            t,
            with(status::PAGE_METADATA_INCORRECT, operand::RCX),
        ),
        (p + 0x10, t, with(status::OPERAND_INVALID, operand::RCX)),
        (
            outside(&env),
            t,
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX),
        ),
        (
            p,
            page(&env),
            with(status::PAGE_METADATA_INCORRECT, operand::RDX),
        ),
        (p, t | 1 << 47, with(status::OPERAND_INVALID, operand::RDX)),
        // The TD's own TDR as the TDCX page: held exclusively as RDX (§3.1: lock first).
        (t, t, with(status::OPERAND_BUSY, operand::RCX)),
    ] {
        assert_eq!(call(&m, leaf::MNG_ADDCX, rcx, rdx, 0, 0).0, want);
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), 0);
}

// =============================================================================================
// TDH.MNG.INIT
// =============================================================================================

fn set_word(f: &Frame, i: usize, v: u64) {
    f.words()[i].store(v, Relaxed);
}

#[test]
fn mng_init_accepts_valid_td_params() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::UNINITIALIZED
    );
    let p = td_params(&env, false, 8);
    let (st, a) = call(&m, leaf::MNG_INIT, tdr_pa(&td), p.pfn().hpa().raw(), 0, 0);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(a.rcx, 0, "RCX (extended error) is 0");
    let i = m.td_info(tdr_pfn(&td)).unwrap();
    assert_eq!((i.op_state, i.epoch), (op_state::INITIALIZED, 1));
}

#[test]
fn mng_init_accepts_td_params_at_a_1024_byte_offset_and_boundary_values() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    // MAX_VCPUS 1376, TSC 400 at offset 1024 of the page.
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let f = host_page(&env);
    for (i, v) in [0u64, 3, 1376, 6 | 3 << 3, 0, 400].into_iter().enumerate() {
        set_word(&f, 128 + i, v);
    }
    let pa = f.pfn().hpa().raw() + 1024;
    assert_eq!(
        call(&m, leaf::MNG_INIT, tdr_pa(&td), pa, 0, 0).0,
        status::SUCCESS
    );
    // MAX_VCPUS 1, TSC 4.
    let td = build_td(&tdx, &env, 2, 0, Stage::TdcsAdded);
    let p = td_params(&env, false, 1);
    set_word(&p, 5, 4);
    tdx.mng_init(td.tdr, p.pfn().hpa()).unwrap();
}

fn init_with(m: &SwModule<'_>, td: &TestTd, p: &Frame) -> (u64, SeamArgs) {
    call(m, leaf::MNG_INIT, tdr_pa(td), p.pfn().hpa().raw(), 0, 0)
}

#[test]
fn mng_init_refuses_max_vcpus_zero_or_above_1376() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    for max in [0u64, 1377] {
        let p = td_params(&env, false, max);
        assert_eq!(init_with(&m, &td, &p).0, status::OPERAND_INVALID | 68);
    }
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::UNINITIALIZED
    );
}

#[test]
fn mng_init_refuses_bad_eptp_controls() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    // Memory type UC; page-walk lengths 2, 3 and 6.
    for eptp in [3u64 << 3, 6 | 1 << 3, 6 | 2 << 3, 6 | 5 << 3] {
        let p = td_params(&env, false, 8);
        set_word(&p, 3, eptp);
        assert_eq!(
            init_with(&m, &td, &p).0,
            status::OPERAND_INVALID | 67,
            "eptp {eptp:#x}"
        );
    }
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::UNINITIALIZED
    );
}

#[test]
fn mng_init_refuses_a_tsc_frequency_outside_4_to_400() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    for tsc in [0u64, 3, 401, 0xffff] {
        let p = td_params(&env, false, 8);
        set_word(&p, 5, tsc);
        assert_eq!(init_with(&m, &td, &p).0, status::OPERAND_INVALID | 70);
    }
}

#[test]
fn mng_init_checks_td_params_fields_in_spec_order() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    // MAX_VCPUS (68) before EPTP_CONTROLS (67) before TSC_FREQUENCY (70).
    let p = td_params(&env, false, 0);
    set_word(&p, 3, 0);
    set_word(&p, 5, 0);
    assert_eq!(init_with(&m, &td, &p).0, status::OPERAND_INVALID | 68);
    set_word(&p, 2, 8);
    assert_eq!(init_with(&m, &td, &p).0, status::OPERAND_INVALID | 67);
    set_word(&p, 3, 6 | 3 << 3);
    assert_eq!(init_with(&m, &td, &p).0, status::OPERAND_INVALID | 70);
    // A refused MNG.INIT left the TD uninitialised: the fixed parameters are accepted.
    set_word(&p, 5, 100);
    assert_eq!(init_with(&m, &td, &p).0, status::SUCCESS);
}

#[test]
fn mng_init_refuses_td_params_not_1024_byte_aligned() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let p = td_params(&env, false, 8);
    for off in [8u64, 512] {
        let (st, _) = call(
            &m,
            leaf::MNG_INIT,
            tdr_pa(&td),
            p.pfn().hpa().raw() + off,
            0,
            0,
        );
        assert_eq!(st, with(status::OPERAND_INVALID, operand::RDX));
    }
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::UNINITIALIZED
    );
}

#[test]
fn mng_init_is_refused_without_keys_without_tdcs_and_when_already_initialized() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let p = td_params(&env, false, 8);
    let created = build_td(&tdx, &env, 1, 0, Stage::Created);
    assert_eq!(
        init_with(&m, &created, &p).0,
        status::TD_KEYS_NOT_CONFIGURED
    );
    let partial = build_td(&tdx, &env, 2, 0, Stage::KeysConfigured);
    for _ in 1..MIN_TDCS_PAGES {
        tdx.mng_addcx(partial.tdr, Tdcx::new(Hpa::new(page(&env))))
            .unwrap();
    }
    assert_eq!(init_with(&m, &partial, &p).0, status::TDCS_NOT_ALLOCATED);
    assert_eq!(status::TDCS_NOT_ALLOCATED, 0xC000_0606_0000_0000);
    let done = build_td(&tdx, &env, 3, 0, Stage::Initialized);
    assert_eq!(init_with(&m, &done, &p).0, status::OP_STATE_INCORRECT);
}

#[test]

fn mng_init_returns_rcx_zero_when_refused() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let p = td_params(&env, false, 0);
    let (st, a) = init_with(&m, &td, &p);
    assert_eq!(st, status::OPERAND_INVALID | 68);
    assert_eq!(a.rcx, 0);
    let done = build_td(&tdx, &env, 2, 0, Stage::Initialized);
    let p = td_params(&env, false, 8);
    let (st, a) = init_with(&m, &done, &p);
    assert_eq!(st, status::OP_STATE_INCORRECT);
    assert_eq!(a.rcx, 0);
}

// ---- TD_PARAMS rules (`tdh_mng_init.c`, `read_and_set_td_configurations`) --------------------
//
// TD_PARAMS words: 0 ATTRIBUTES, 1 XFAM, 2 MAX_VCPUS (15:0) | NUM_L2_VMS (23:16) |
// MSR_CONFIG_CTLS (31:24; bit 24 IA32_ARCH_CAP) | reserved_0 (63:32), 3 EPTP_CONTROLS,
// 4 CONFIG_FLAGS, 5 TSC_FREQUENCY (15:0) then reserved_1 to word 9, 10..=27 MRCONFIGID,
// MROWNER, MROWNERCONFIG, 28 IA32_ARCH_CAPABILITIES_CONFIG, 29..=31 reserved_2, 32..=67
// CPUID_CONFIG_VALS (18 entries), 68..=127 reserved_3.

const W_ATTRIBUTES: usize = 0;
const W_XFAM: usize = 1;
const W_VCPUS: usize = 2;
const W_EPTP: usize = 3;
const W_FLAGS: usize = 4;
const W_TSC: usize = 5;
const W_ARCH_CAP: usize = 28;
/// Word 2 of `td_params(.., 8)`.
const VCPUS8: u64 = 8;
/// EPTP_CONTROLS of a 4-level TD (WB, page-walk length 4).
const EPTP4: u64 = 6 | 3 << 3;

const ATTR_DEBUG: u64 = 1;
const ATTR_ICSSD: u64 = 1 << 16;
const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
const ATTR_MIGRATABLE: u64 = 1 << 29;
const ATTR_PKS: u64 = 1 << 30;
const ATTR_PERFMON: u64 = 1 << 63;

fn td_param_invalid(op: u32) -> u64 {
    with(status::OPERAND_INVALID, op)
}

/// `td_params(env, false, 8)` with `edits` (word, value) applied.
fn params_with(env: &HostEnv, edits: &[(usize, u64)]) -> Frame {
    let p = td_params(env, false, 8);
    for &(w, v) in edits {
        set_word(&p, w, v);
    }
    p
}

/// MNG.INIT of a fresh TD with `tdcx` TDCX pages, on a module of its own, with TD_PARAMS
/// edited by `edits`: the status (RCX must be 0; the OP state follows the status).
fn init_fresh(tdcx: u64, edits: &[(usize, u64)]) -> u64 {
    let env = HostEnv::with_capacity(256);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
    for _ in 0..tdcx {
        tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(page(&env))))
            .unwrap();
    }
    let p = params_with(&env, edits);
    let (st, a) = init_with(&m, &td, &p);
    assert_eq!(a.rcx, 0, "{edits:x?}: RCX");
    let want = if st == status::SUCCESS {
        op_state::INITIALIZED
    } else {
        op_state::UNINITIALIZED
    };
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().op_state, want);
    st
}

#[test]
fn mng_init_accepts_each_allowed_attribute_bit_and_refuses_every_other() {
    // TDX_ATTRIBUTES_FIXED0 of the newest module: DEBUG 0, PMT_PROF 6, ICSSD 16, LASS 27,
    // SEPT_VE_DISABLE 28, MIGRATABLE 29, PKS 30, TPA 62, PERFMON 63; the emulated platform has
    // no LASS and no TDX Connect (TPA), so 27 and 62 are refused like KL (31) and the rest.
    let allowed = [0u32, 6, 16, 28, 29, 30, 63];
    for bit in 0..64u32 {
        let want = if allowed.contains(&bit) {
            status::SUCCESS
        } else {
            td_param_invalid(operand::td_params::ATTRIBUTES)
        };
        assert_eq!(
            init_fresh(MIN_TDCS_PAGES, &[(W_ATTRIBUTES, 1 << bit)]),
            want,
            "ATTRIBUTES bit {bit}"
        );
    }
    assert_eq!(
        td_param_invalid(operand::td_params::ATTRIBUTES),
        0xC000_0100_0000_0040
    );
}

#[test]
fn mng_init_refuses_a_migratable_debug_or_perfmon_td_and_perfmon_with_icssd() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    for attr in [
        ATTR_MIGRATABLE | ATTR_DEBUG,
        ATTR_MIGRATABLE | ATTR_PERFMON,
        ATTR_PERFMON | ATTR_ICSSD,
        ATTR_MIGRATABLE | ATTR_DEBUG | ATTR_PERFMON | ATTR_ICSSD,
    ] {
        let p = params_with(&env, &[(W_ATTRIBUTES, attr)]);
        assert_eq!(
            init_with(&m, &td, &p).0,
            td_param_invalid(operand::td_params::ATTRIBUTES),
            "{attr:#x}"
        );
    }
    for attr in [
        ATTR_DEBUG | ATTR_PERFMON,
        ATTR_DEBUG | ATTR_ICSSD,
        ATTR_MIGRATABLE | ATTR_ICSSD | ATTR_SEPT_VE_DISABLE | ATTR_PKS,
        0x8000_0000_7001_0041 & !ATTR_MIGRATABLE & !ATTR_ICSSD,
    ] {
        assert_eq!(
            init_fresh(MIN_TDCS_PAGES, &[(W_ATTRIBUTES, attr)]),
            status::SUCCESS,
            "{attr:#x}"
        );
    }
}

#[test]
fn mng_init_checks_xfam_allowed_bits_and_consistency() {
    let xfam_invalid = td_param_invalid(operand::td_params::XFAM);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let mut refused = vec![0u64, 1, 2];
    // Bits outside TDX_XFAM_FIXED0 (0x6DBE7).
    refused.extend(
        (0..64)
            .filter(|b| 0x6DBE7u64 & 1 << b == 0)
            .map(|b| 3 | 1u64 << b),
    );
    refused.extend([
        3 | 0xE0,     // AVX-512 without AVX
        3 | 4 | 0x20, // AVX-512 bits 5, 6, 7 not all equal
        3 | 4 | 0x40,
        3 | 4 | 0x80,
        3 | 4 | 0x60,
        3 | 4 | 0xA0,
        3 | 4 | 0xC0,
        3 | 1 << 11, // CET_U without CET_S
        3 | 1 << 12, // CET_S without CET_U
        3 | 1 << 17, // AMX XTILECFG without XTILEDATA
        3 | 1 << 18, // AMX XTILEDATA without XTILECFG
    ]);
    for xfam in refused {
        let p = params_with(&env, &[(W_XFAM, xfam)]);
        assert_eq!(init_with(&m, &td, &p).0, xfam_invalid, "XFAM {xfam:#x}");
    }
    for xfam in [
        3,
        3 | 4,
        3 | 4 | 0xE0,
        3 | 0x1800,
        3 | 0x6_0000,
        3 | 1 << 8 | 1 << 9 | 1 << 14 | 1 << 15,
        0x6DBE7,
    ] {
        assert_eq!(
            init_fresh(MIN_TDCS_PAGES, &[(W_XFAM, xfam)]),
            status::SUCCESS,
            "XFAM {xfam:#x}"
        );
    }
}

#[test]
fn mng_init_refuses_more_than_3_l2_vms_and_needs_a_tdcx_page_per_l2_vm() {
    let l2_invalid = td_param_invalid(operand::td_params::NUM_L2_VMS);
    assert_eq!(l2_invalid, 0xC000_0100_0000_0047);
    for (n, tdcx, want) in [
        (4u64, 12, l2_invalid),
        (255, 12, l2_invalid),
        (1, 9, status::TDCS_NOT_ALLOCATED),
        (1, 10, status::SUCCESS),
        (2, 10, status::TDCS_NOT_ALLOCATED),
        (2, 11, status::SUCCESS),
        (3, 11, status::TDCS_NOT_ALLOCATED),
        (3, 12, status::SUCCESS),
        (0, 12, status::SUCCESS),
    ] {
        assert_eq!(
            init_fresh(tdcx, &[(W_VCPUS, VCPUS8 | n << 16)]),
            want,
            "NUM_L2_VMS {n} with {tdcx} TDCX pages"
        );
    }
}

#[test]
fn a_td_with_l2_vms_needs_3_more_tdvps_pages_per_l2_vm_before_vp_init() {
    // `map_tdvps`: MIN_TDVPS_PAGES + TDVPS_PAGES_PER_L2_VM × NUM_L2_VMS pages.
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(page(&env))))
        .unwrap();
    let p = params_with(&env, &[(W_VCPUS, VCPUS8 | 1 << 16)]);
    assert_eq!(init_with(&m, &td, &p).0, status::SUCCESS);
    let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    for _ in 0..3 {
        assert_eq!(
            tdx.vp_init(v, 0).unwrap_err().status,
            status::TDCX_NUM_INCORRECT
        );
        assert_eq!(
            tdx.vp_flush(v).unwrap_err().status,
            status::TDCX_NUM_INCORRECT
        );
        tdx.vp_addcx(v, Tdcx::new(Hpa::new(page(&env)))).unwrap();
    }
    tdx.vp_init(v, 0).unwrap();
    let (st, a) = call(
        &m,
        leaf::VP_RD,
        v.hpa().raw(),
        abi::md::vp::NUM_TDVPS_PAGES,
        0,
        0,
    );
    assert_eq!((st, a.r8), (status::SUCCESS, 9));
}

#[test]
fn mng_init_refuses_reserved_td_params_bytes_with_rdx() {
    let rdx = with(status::OPERAND_INVALID, operand::RDX);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    for (w, v) in [
        (W_VCPUS, VCPUS8 | 1 << 32), // reserved_0 (bytes 20..24)
        (W_VCPUS, VCPUS8 | 1 << 63),
        (W_VCPUS, VCPUS8 | 1 << 25), // MSR_CONFIG_CTLS bits 7:1
        (W_VCPUS, VCPUS8 | 1 << 31),
        (W_TSC, 100 | 1 << 16), // reserved_1 (bytes 42..80)
        (W_TSC, 100 | 1 << 63),
        (6, 1),
        (9, 1 << 63),
        (29, 1), // reserved_2 (bytes 232..256)
        (31, 1 << 63),
        (68, 1), // reserved_3 (bytes 544..1024)
        (100, 1),
        (127, 1 << 63),
    ] {
        let p = params_with(&env, &[(w, v)]);
        assert_eq!(init_with(&m, &td, &p).0, rdx, "word {w} = {v:#x}");
    }
    // MRCONFIGID, MROWNER and MROWNERCONFIG (words 10..=27) are free-form.
    assert_eq!(
        init_fresh(MIN_TDCS_PAGES, &[(10, u64::MAX), (27, 0x1234)]),
        status::SUCCESS
    );
}

#[test]
fn mng_init_checks_config_flags_allowed_bits_and_the_maxpa_pair() {
    let flags_invalid = td_param_invalid(operand::td_params::EXEC_CONTROLS);
    assert_eq!(flags_invalid, 0xC000_0100_0000_0042);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    // CONFIG_FLAGS_FIXED0 = bits 4:0; MAXPA_VIRT (3) and MAXGPA_VIRT (4) are exclusive.
    for flags in [1u64 << 5, 1 << 6, 1 << 32, 1 << 63, 1 << 3 | 1 << 4, 0x1F] {
        let p = params_with(&env, &[(W_FLAGS, flags)]);
        assert_eq!(init_with(&m, &td, &p).0, flags_invalid, "{flags:#x}");
    }
    for flags in [1u64 << 1, 1 << 2, 1 << 3, 1 << 4, 0x7, 0xF, 0x17] {
        assert_eq!(
            init_fresh(MIN_TDCS_PAGES, &[(W_FLAGS, flags), (W_EPTP, 6 | 4 << 3)]),
            status::SUCCESS,
            "{flags:#x}"
        );
    }
}

#[test]
fn mng_init_refuses_eptp_controls_with_any_bit_above_the_walk_length() {
    let eptp_invalid = td_param_invalid(operand::td_params::EPTP_CONTROLS);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    // A/D enable (6), supervisor shadow stack (7), 11:8, the root PA (51:12), 63:52; memory
    // types other than WB; walk lengths other than 4 and 5.
    let mut bad: Vec<u64> = [6u32, 7, 8, 11, 12, 30, 51, 52, 63]
        .iter()
        .map(|b| EPTP4 | 1 << b)
        .collect();
    bad.extend([3 << 3, 5 | 3 << 3, 7 | 3 << 3, 6 | 7 << 3, 6]);
    for eptp in bad {
        let p = params_with(&env, &[(W_EPTP, eptp)]);
        assert_eq!(init_with(&m, &td, &p).0, eptp_invalid, "{eptp:#x}");
    }
    // GPAW 52 (CONFIG_FLAGS bit 0) needs a 5-level EPT.
    let p = params_with(&env, &[(W_FLAGS, 1), (W_EPTP, EPTP4)]);
    assert_eq!(init_with(&m, &td, &p).0, eptp_invalid);
    assert_eq!(
        init_fresh(MIN_TDCS_PAGES, &[(W_EPTP, 6 | 4 << 3)]),
        status::SUCCESS
    );
}

#[test]
fn mng_init_checks_the_ia32_arch_capabilities_configuration() {
    let arch_invalid = td_param_invalid(operand::td_params::IA32_ARCH_CAPABILITIES_CONFIG);
    assert_eq!(arch_invalid, 0xC000_0100_0000_0048);
    let flag = VCPUS8 | 1 << 24;
    let mask = 1u64 << 4 | 1 << 19 | 1 << 20 | 1 << 24;
    for (w2, cfg, want) in [
        (VCPUS8, 1 << 4, arch_invalid), // a value without MSR_CONFIG_CTLS.IA32_ARCH_CAP
        (flag, 1, arch_invalid),        // bits outside SSB_NO, RRSBA, BHI_NO, PBRSB_NO
        (flag, mask | 1 << 25, arch_invalid),
        (flag, 1 << 63, arch_invalid),
        (flag, mask, status::SUCCESS),
        (flag, 0, status::SUCCESS),
        (VCPUS8, 0, status::SUCCESS),
    ] {
        assert_eq!(
            init_fresh(MIN_TDCS_PAGES, &[(W_VCPUS, w2), (W_ARCH_CAP, cfg)]),
            want,
            "MSR_CONFIG_CTLS {w2:#x} config {cfg:#x}"
        );
    }
}

#[test]
fn mng_init_checks_td_params_in_intels_order() {
    let inv = td_param_invalid;
    use operand::td_params as op;
    let rdx = with(status::OPERAND_INVALID, operand::RDX);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let l2 = |n: u64| VCPUS8 | n << 16;
    for (edits, want) in [
        (
            vec![(W_ATTRIBUTES, 1u64 << 31), (W_XFAM, 0)],
            inv(op::ATTRIBUTES),
        ),
        (vec![(W_XFAM, 0), (W_VCPUS, 0)], inv(op::XFAM)),
        (vec![(W_VCPUS, 4 << 16)], inv(op::MAX_VCPUS)),
        (vec![(W_VCPUS, 1 << 16)], inv(op::MAX_VCPUS)),
        (vec![(W_VCPUS, l2(4) | 1 << 32)], inv(op::NUM_L2_VMS)),
        (
            vec![(W_VCPUS, l2(1) | 1 << 32), (W_FLAGS, 1 << 5)],
            status::TDCS_NOT_ALLOCATED,
        ),
        (vec![(W_VCPUS, VCPUS8 | 1 << 32), (W_FLAGS, 1 << 5)], rdx),
        (vec![(W_FLAGS, 1 << 5), (W_EPTP, 0)], inv(op::EXEC_CONTROLS)),
        (vec![(W_FLAGS, 1), (W_TSC, 0)], inv(op::EPTP_CONTROLS)),
        (vec![(W_TSC, 1 << 16)], inv(op::TSC_FREQUENCY)),
        (vec![(7, 1), (W_ARCH_CAP, 1)], rdx),
        (vec![(30, 1), (W_ARCH_CAP, 1)], rdx),
        (vec![(W_VCPUS, VCPUS8 | 1 << 26), (W_ARCH_CAP, 1)], rdx),
        (vec![(80, 1), (W_ARCH_CAP, 1)], rdx),
        (
            vec![(W_ARCH_CAP, 1)],
            inv(op::IA32_ARCH_CAPABILITIES_CONFIG),
        ),
    ] {
        let p = params_with(&env, &edits);
        assert_eq!(init_with(&m, &td, &p).0, want, "{edits:x?}");
    }
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::UNINITIALIZED
    );
}

#[test]
fn mng_init_ignores_rcx_bit_0_the_event_filtering_flag() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let p = td_params(&env, false, 8);
    let (st, a) = call(
        &m,
        leaf::MNG_INIT,
        tdr_pa(&td) | 1,
        p.pfn().hpa().raw(),
        0,
        0,
    );
    assert_eq!((st, a.rcx), (status::SUCCESS, 0));
}

// =============================================================================================
// TDH.VP.CREATE / TDH.VP.ADDCX / TDH.VP.INIT
// =============================================================================================

#[test]
fn vp_create_accepts_an_initialized_td() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let v = page(&env);
    tdx.vp_create(td.tdr, Tdvpr::new(Hpa::new(v))).unwrap();
    assert_eq!(
        m.pamt_info(pfn(v)),
        Some(owned_by(page_type::TDVPR, 0, &td))
    );
    assert_eq!(chldcnt(&m, &td), MIN_TDCS_PAGES + 1);
}

#[test]
fn vp_create_refuses_tds_not_initialized_or_finalized() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let no_tdcs = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
    let uninit = build_td(&tdx, &env, 2, 0, Stage::TdcsAdded);
    let runnable = build_td(&tdx, &env, 3, 1, Stage::Runnable);
    for (td, want) in [
        (&no_tdcs, status::TDCS_NOT_ALLOCATED),
        (&uninit, status::OP_STATE_INCORRECT),
        (&runnable, status::OP_STATE_INCORRECT),
    ] {
        let v = page(&env);
        let e = tdx.vp_create(td.tdr, Tdvpr::new(Hpa::new(v))).unwrap_err();
        assert_eq!(e.status, want);
        assert_eq!(m.pamt_info(pfn(v)), Some(nda()));
    }
}

#[test]
fn vp_create_refuses_tdvpr_pages_that_are_not_nda_and_tdr_operands_that_are_not_tdrs() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let t = tdr_pa(&td);
    let v = td.vcpus[0].hpa().raw();
    let p = page(&env);
    for (rcx, rdx, want) in [
        (v, t, with(status::PAGE_METADATA_INCORRECT, operand::RCX)),
        // The TDR itself: held shared as RDX, so the exclusive lock for RCX fails first
        // (§3.1: the lock is taken before the type check).
        (t, t, with(status::OPERAND_BUSY, operand::RCX)),
        (
            outside(&env),
            t,
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX),
        ),
        (p, v, with(status::PAGE_METADATA_INCORRECT, operand::RDX)),
    ] {
        assert_eq!(call(&m, leaf::VP_CREATE, rcx, rdx, 0, 0).0, want);
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn vp_addcx_accepts_pages_until_the_vcpu_holds_max_tdvps_pages() {
    // `tdh_vp_addcx.c`: `num_tdvps_pages >= MAX_TDVPS_PAGES` (15) → TDX_TDCX_NUM_INCORRECT, no
    // operand id. MIN_TDVPS_PAGES (6) is only what VP.INIT needs; L2 VMs need the rest.
    assert_eq!((TDVPS_PAGES, MAX_TDVPS_PAGES), (6, 15));
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let v = new_vcpu(&tdx, &env, td.tdr, 1);
    let mut pages = vec![];
    for _ in 1..MAX_TDVPS_PAGES {
        let p = host_page(&env);
        tdx.vp_addcx(v, Tdcx::new(p.pfn().hpa())).unwrap();
        assert_eq!(
            m.pamt_info(p.pfn()),
            Some(owned_by(page_type::TDCX, 0, &td))
        );
        pages.push(p);
    }
    // The 15th VP.ADDCX (the vCPU holds the TDVPR and 14 TDCX pages) is refused.
    let p = page(&env);
    let (st, _) = call(&m, leaf::VP_ADDCX, p, v.hpa().raw(), 0, 0);
    assert_eq!(st, 0xC000_0610_0000_0000);
    assert_eq!(st, status::TDCX_NUM_INCORRECT);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), MIN_TDCS_PAGES + MAX_TDVPS_PAGES);
    // TDVPS pages 7, 8, 10, 11, 13 and 14 (the L2 MSR bitmaps) start as all 1s, the rest as 0.
    for (i, f) in pages.iter().enumerate() {
        let index = i + 1;
        let want = if [7, 8, 10, 11, 13, 14].contains(&index) {
            u64::MAX
        } else {
            0
        };
        assert!(
            f.words().iter().all(|w| w.load(Relaxed) == want),
            "TDVPS page {index}"
        );
    }
    // A vCPU with more than MIN_TDVPS_PAGES pages is initialised like any other.
    tdx.vp_init(v, 0).unwrap();
    let (st, a) = call(
        &m,
        leaf::VP_RD,
        v.hpa().raw(),
        abi::md::vp::NUM_TDVPS_PAGES,
        0,
        0,
    );
    assert_eq!((st, a.r8), (status::SUCCESS, MAX_TDVPS_PAGES));
}

#[test]
fn vp_addcx_after_vp_init_is_vcpu_state_incorrect_with_the_state_as_operand() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let p = page(&env);
    let e = tdx
        .vp_addcx(td.vcpus[0], Tdcx::new(Hpa::new(p)))
        .unwrap_err();
    assert_eq!(e.status, 0xC000_0700_0000_0002);
    assert_eq!(
        e.status,
        status::VCPU_STATE_INCORRECT | abi::vcpu_state::READY as u64
    );
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn vp_addcx_refuses_a_tdvpr_operand_that_is_not_a_tdvpr_and_a_finalized_td() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    let (st, _) = call(&m, leaf::VP_ADDCX, p, tdr_pa(&td), 0, 0);
    assert_eq!(st, with(status::PAGE_METADATA_INCORRECT, operand::RDX));
    // The OP state (step 3) is checked before the vCPU state (step 4).
    let e = tdx
        .vp_addcx(td.vcpus[0], Tdcx::new(Hpa::new(p)))
        .unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn vp_init_accepts_a_complete_vcpu_once() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    tdx.vp_init(v, 0x1234).unwrap();
    let e = tdx.vp_init(v, 0x1234).unwrap_err();
    assert_eq!(
        e.status,
        status::VCPU_STATE_INCORRECT | abi::vcpu_state::READY as u64
    );
}

#[test]
fn vp_init_refuses_a_vcpu_without_all_its_tdcx_pages() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES - 1);
    let e = tdx.vp_init(v, 0).unwrap_err();
    assert_eq!(e.status, status::TDCX_NUM_INCORRECT);
    tdx.vp_addcx(v, Tdcx::new(Hpa::new(page(&env)))).unwrap();
    tdx.vp_init(v, 0).unwrap();
}

#[test]
fn vp_init_refuses_more_vcpus_than_max_vcpus() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = init_td(&tdx, &env, 1, 1);
    // VP.CREATE does not count: both vCPUs are created.
    let v0 = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    let v1 = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    tdx.vp_init(v0, 0).unwrap();
    for _ in 0..2 {
        let e = tdx.vp_init(v1, 0).unwrap_err();
        assert_eq!(e.status, status::MAX_VCPUS_EXCEEDED);
        assert_eq!(e.status, 0xC000_0705_0000_0000);
    }
    // v1 stayed uninitialised: VP.ADDCX gets past the vCPU-state check (it has 6 of its 15
    // pages) and adds the page.
    tdx.vp_addcx(v1, Tdcx::new(Hpa::new(page(&env)))).unwrap();
}

#[test]
fn vp_init_is_refused_after_finalize() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let e = tdx.vp_init(td.vcpus[0], 0).unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
}

/// VP.INIT at `version` of `v` with R8 = `x2apic`: the status and the registers.
fn vp_init_v(m: &SwModule<'_>, version: u8, v: Tdvpr, x2apic: u64) -> (u64, SeamArgs) {
    seam(
        m,
        leaf::VP_INIT,
        version,
        args(v.hpa().raw(), 0x77, x2apic, 0),
    )
}

#[test]
fn vp_init_version_0_records_no_x2apic_id() {
    // `tdh_vp_init.c`: only version 1 writes `x2apic_ids[vcpu_index]`; version 1 compares with
    // every slot below its index, and a slot version 0 left alone holds 0 (TDCX pages start
    // zeroed).
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = init_td(&tdx, &env, 1, 4);
    let v: Vec<Tdvpr> = (0..4)
        .map(|_| new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES))
        .collect();
    assert_eq!(vp_init_v(&m, 0, v[0], 0).0, status::SUCCESS);
    assert_eq!(vp_init_v(&m, 0, v[1], 0).0, status::SUCCESS);
    // x2APIC id 1 is unique: vCPU 1 (version 0) did not record its index.
    assert_eq!(vp_init_v(&m, 1, v[2], 1).0, status::SUCCESS);
    // x2APIC id 0 is what the untouched slots 0 and 1 hold.
    let (st, a) = vp_init_v(&m, 1, v[3], 0);
    assert_eq!(st, X2APIC_ID_NOT_UNIQUE);
    assert_eq!((a.rcx, a.rdx, a.r8), (v[3].hpa().raw(), 0x77, 0));
    // The refused VP.INIT gave its index back: id 2 takes index 3.
    assert_eq!(vp_init_v(&m, 1, v[3], 2).0, status::SUCCESS);
    let (st, a) = call(
        &m,
        leaf::VP_RD,
        v[3].hpa().raw(),
        abi::md::vp::VCPU_INDEX,
        0,
        0,
    );
    assert_eq!((st, a.r8), (status::SUCCESS, 3));
}

#[test]
fn vp_init_x2apic_ids_of_every_vcpu_index_up_to_1375_are_kept_and_compared() {
    // The table is `uint32_t x2apic_ids[MAX_VCPUS_PER_TD]` in the TDCS: indices from 1024 on
    // (beyond 1024 eight-byte slots of two pages) must be stored and compared like the others.
    let max = abi::MAX_VCPUS_PER_TD as u64;
    let env = HostEnv::with_capacity(8704);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = init_td(&tdx, &env, 1, max);
    let id = |i: u64| 0x1000 + i;
    let mut last = None;
    for i in 0..max {
        let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
        if i + 1 == max {
            last = Some(v);
            break;
        }
        assert_eq!(vp_init_v(&m, 1, v, id(i)).0, status::SUCCESS, "vCPU {i}");
    }
    let v = last.unwrap();
    // Index 1375: every earlier id is taken, high indices included.
    for dup in [0, 1, 511, 512, 1023, 1024, 1025, 1200, max - 2] {
        let (st, a) = vp_init_v(&m, 1, v, id(dup));
        assert_eq!(
            st,
            X2APIC_ID_NOT_UNIQUE | id(dup),
            "x2APIC id of vCPU {dup}"
        );
        assert_eq!((a.rcx, a.rdx, a.r8), (v.hpa().raw(), 0x77, id(dup)));
    }
    assert_eq!(tdx.mng_rd(td.tdr, abi::md::td::NUM_VCPUS), Ok(max - 1));
    // The last slot takes the largest 32-bit id.
    assert_eq!(vp_init_v(&m, 1, v, u32::MAX as u64).0, status::SUCCESS);
    assert_eq!(tdx.mng_rd(td.tdr, abi::md::td::NUM_VCPUS), Ok(max));
    // One more vCPU is beyond MAX_VCPUS, before any x2APIC id is looked at.
    let extra = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    assert_eq!(vp_init_v(&m, 1, extra, id(0)).0, status::MAX_VCPUS_EXCEEDED);
}

// =============================================================================================
// TDH.VP.FLUSH / TDH.MNG.VPFLUSHDONE
// =============================================================================================

#[test]
fn vp_flush_accepts_an_associated_vcpu_then_refuses_it() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
    tdx.vp_flush(td.vcpus[0]).unwrap();
    let e = tdx.vp_flush(td.vcpus[0]).unwrap_err();
    assert_eq!(e.status, status::VCPU_NOT_ASSOCIATED);
    assert_eq!(e.status, 0x8000_0702_0000_0000);
    tdx.vp_flush(td.vcpus[1]).unwrap();
}

#[test]
fn vp_flush_refuses_unassociated_vcpus_non_tdvpr_pages_and_blocked_tds() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    // Complete but never initialised: not associated.
    let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    assert_eq!(
        tdx.vp_flush(v).unwrap_err().status,
        status::VCPU_NOT_ASSOCIATED
    );
    let (st, _) = call(&m, leaf::VP_FLUSH, tdr_pa(&td), 0, 0, 0);
    assert_eq!(st, with(status::PAGE_METADATA_INCORRECT, operand::RCX));
    tdx.vp_flush(td.vcpus[0]).unwrap();
    tdx.mng_vpflushdone(td.tdr).unwrap();
    // The lifecycle is checked before the association.
    assert_eq!(
        tdx.vp_flush(td.vcpus[0]).unwrap_err().status,
        status::TD_KEYS_NOT_CONFIGURED
    );
}

#[test]

fn vp_flush_of_an_incomplete_vcpu_is_tdcx_num_incorrect() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let v = new_vcpu(&tdx, &env, td.tdr, 1);
    assert_eq!(
        tdx.vp_flush(v).unwrap_err().status,
        status::TDCX_NUM_INCORRECT
    );
}

#[test]
fn vpflushdone_refuses_while_vcpus_are_associated() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
    let e = tdx.mng_vpflushdone(td.tdr).unwrap_err();
    assert_eq!(e.status, status::FLUSHVP_NOT_DONE);
    assert_eq!(e.status, 0x8000_0824_0000_0000);
    tdx.vp_flush(td.vcpus[0]).unwrap();
    let e = tdx.mng_vpflushdone(td.tdr).unwrap_err();
    assert_eq!(e.status, status::FLUSHVP_NOT_DONE);
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().lifecycle,
        lifecycle::KEYS_CONFIGURED
    );
    tdx.vp_flush(td.vcpus[1]).unwrap();
    tdx.mng_vpflushdone(td.tdr).unwrap();
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().lifecycle,
        lifecycle::BLOCKED
    );
}

#[test]
fn vpflushdone_accepts_tds_without_associated_vcpus_once() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    // HKID_ASSIGNED is accepted.
    let created = build_td(&tdx, &env, 1, 0, Stage::Created);
    tdx.mng_vpflushdone(created.tdr).unwrap();
    assert_eq!(
        m.td_info(tdr_pfn(&created)).unwrap().lifecycle,
        lifecycle::BLOCKED
    );
    let e = tdx.mng_vpflushdone(created.tdr).unwrap_err();
    assert_eq!(e.status, status::LIFECYCLE_STATE_INCORRECT);
    // An initialised TD whose only vCPU was never initialised (so never associated).
    let td = build_td(&tdx, &env, 2, 0, Stage::Initialized);
    new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    tdx.mng_vpflushdone(td.tdr).unwrap();
}

// =============================================================================================
// TDH.PHYMEM.CACHE.WB / TDH.MNG.KEY.FREEID
// =============================================================================================

#[test]
fn cache_wb_with_no_flushed_hkid_is_a_success_class_status() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, 0, 0, 0, 0);
    assert_eq!(st, 0x0000_0821_0000_0000);
    assert_eq!(st, status::NO_HKID_READY_TO_WBCACHE);
    assert_eq!(st & status::ERROR_BIT, 0);
    assert_eq!(m.errors(leaf::PHYMEM_CACHE_WB), 0);
    // A running TD's HKID is not flushed.
    build_td(&tdx, &env, 1, 1, Stage::Runnable);
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::NothingToWriteBack));
    assert_eq!(m.calls(leaf::PHYMEM_CACHE_WB), 2);
    assert_eq!(m.errors(leaf::PHYMEM_CACHE_WB), 0);
}

#[test]
fn cache_wb_refuses_unknown_commands_and_a_resume_without_interruption() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    for cmd in [2u64, u64::MAX] {
        let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, cmd, 0, 0, 0);
        assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
    }
    let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, 1, 0, 0, 0);
    assert_eq!(st, status::WBCACHE_RESUME_ERROR);
    assert_eq!(m.errors(leaf::PHYMEM_CACHE_WB), 3);
}

#[test]
fn cache_wb_writes_back_a_flushed_hkid_and_key_freeid_then_succeeds() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Created);
    tdx.mng_vpflushdone(td.tdr).unwrap();
    let e = tdx.mng_key_freeid(td.tdr).unwrap_err();
    assert_eq!(e.status, status::WBCACHE_NOT_COMPLETE);
    assert_eq!(e.status, 0x8000_0817_0000_0000);
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().lifecycle,
        lifecycle::BLOCKED
    );
    let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, 0, 0, 0, 0);
    assert_eq!(st, status::SUCCESS);
    tdx.mng_key_freeid(td.tdr).unwrap();
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().lifecycle,
        lifecycle::TEARDOWN
    );
    // The HKID is free again: nothing is left to write back.
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::NothingToWriteBack));
}

#[test]

fn cache_wb_again_while_the_hkid_is_still_flushed_is_success() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Created);
    tdx.mng_vpflushdone(td.tdr).unwrap();
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::Done));
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::Done));
}

#[test]
fn cache_wb_meets_busy_wbcache_while_another_cache_wb_holds_the_package() {
    // `tdh_phymem_cache_wb.c`: the command check, then the package's write-back mutex
    // (`TDX_OPERAND_BUSY | OPERAND_ID_WBCACHE` = 0x80000200000000BC), then the KOT (shared).
    let busy = with(status::OPERAND_BUSY, operand::WBCACHE);
    assert_eq!(busy, 0x8000_0200_0000_00BC);
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Created);
    tdx.mng_vpflushdone(td.tdr).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..20_000_000u64 {
                    if done.load(Relaxed) {
                        return;
                    }
                    // The command is checked before the mutex is taken.
                    let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, 2, 0, 0, 0);
                    assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
                    let (st, _) = call(&m, leaf::PHYMEM_CACHE_WB, 0, 0, 0, 0);
                    if st == busy {
                        seen.fetch_add(1, Relaxed);
                        done.store(true, Relaxed);
                        return;
                    }
                    // Never BUSY on the KOT: the holder of the mutex is the only reader.
                    assert_eq!(st, status::SUCCESS, "CACHE.WB: {st:#x}");
                }
            });
        }
    });
    assert!(seen.load(Relaxed) > 0, "no CACHE.WB met BUSY|WBCACHE");
    // Nothing was left locked.
    tdx.mng_key_freeid(td.tdr).unwrap();
    assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::NothingToWriteBack));
}

#[test]
fn key_freeid_refuses_tds_that_are_not_blocked() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let created = build_td(&tdx, &env, 1, 0, Stage::Created);
    let runnable = build_td(&tdx, &env, 2, 1, Stage::Runnable);
    for td in [&created, &runnable] {
        let e = tdx.mng_key_freeid(td.tdr).unwrap_err();
        assert_eq!(e.status, status::LIFECYCLE_STATE_INCORRECT);
    }
    teardown(&tdx, &runnable);
    let e = tdx.mng_key_freeid(runnable.tdr).unwrap_err();
    assert_eq!(e.status, status::LIFECYCLE_STATE_INCORRECT);
    let (st, _) = call(&m, leaf::MNG_KEY_FREEID, page(&env), 0, 0, 0);
    assert_eq!(st, with(status::PAGE_METADATA_INCORRECT, operand::RCX));
}

// =============================================================================================
// TDH.PHYMEM.PAGE.RECLAIM / TDH.PHYMEM.PAGE.WBINVD
// =============================================================================================

#[test]
fn reclaim_before_teardown_is_lifecycle_state_incorrect_with_the_page_metadata() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let data = aug4k(&tdx, &env, td.tdr, 0x1000);
    let chld = chldcnt(&m, &td);
    let check = |m: &SwModule<'_>| {
        for (pa, pt, owner) in [
            (data, page_type::REG, tdr_pa(&td)),
            (td.vcpus[0].hpa().raw(), page_type::TDVPR, tdr_pa(&td)),
            (tdr_pa(&td), page_type::TDR, 0),
        ] {
            let (st, a) = call(m, leaf::PHYMEM_PAGE_RECLAIM, pa, 0, 0, 0);
            assert_eq!(st, status::LIFECYCLE_STATE_INCORRECT);
            assert_eq!((a.rcx, a.rdx, a.r8), (pt as u64, owner, 0));
        }
    };
    check(&m);
    tdx.vp_flush(td.vcpus[0]).unwrap();
    tdx.mng_vpflushdone(td.tdr).unwrap();
    check(&m);
    assert_eq!(
        m.pamt_info(pfn(data)),
        Some(owned_by(page_type::REG, 0, &td))
    );
    assert_eq!(chldcnt(&m, &td), chld);
}

#[test]
fn reclaim_returns_every_child_page_and_the_tdr_last() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    aug4k(&tdx, &env, td.tdr, 0x1000);
    teardown(&tdx, &td);
    let (st, a) = call(&m, leaf::PHYMEM_PAGE_RECLAIM, tdr_pa(&td), 0, 0, 0);
    assert_eq!(st, status::TD_ASSOCIATED_PAGES_EXIST);
    assert_eq!(st, 0xC000_0400_0000_0000);
    assert_eq!(
        (a.rcx, a.rdx, a.r8),
        (page_type::TDR as u64, 0, page_size::SIZE_4K as u64)
    );
    let mut by_type = BTreeMap::new();
    for (p, i) in owned_pages(&m, &env, &td) {
        let r = tdx.phymem_page_reclaim(p.hpa()).unwrap();
        assert_eq!(
            r,
            Reclaimed {
                page_type: i.page_type,
                owner: td.tdr.hpa(),
                size: page_size::SIZE_4K,
            }
        );
        assert_eq!(m.pamt_info(p), Some(freed(&td)));
        *by_type.entry(i.page_type).or_insert(0u64) += 1;
    }
    let want: BTreeMap<u8, u64> = [
        (page_type::REG, 1),
        (page_type::TDCX, MIN_TDCS_PAGES + TDVPS_PAGES - 1),
        (page_type::TDVPR, 1),
        (page_type::EPT, 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_type, want);
    assert_eq!(chldcnt(&m, &td), 0);
    let r = tdx.phymem_page_reclaim(td.tdr.hpa()).unwrap();
    assert_eq!(
        r,
        Reclaimed {
            page_type: page_type::TDR,
            owner: Hpa::new(0),
            size: page_size::SIZE_4K,
        }
    );
    assert_eq!(m.pamt_info(tdr_pfn(&td)), Some(nda()));
    let e = tdx.phymem_page_reclaim(td.tdr.hpa()).unwrap_err();
    assert_eq!(
        e.status,
        with(status::PAGE_METADATA_INCORRECT, operand::RCX)
    );
}

#[test]
fn reclaim_refuses_nda_pages_and_bad_addresses_with_outputs_cleared() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let p = page(&env);
    let junk = 0xdead_beef_0000_0000;
    for (pa, want) in [
        (p, with(status::PAGE_METADATA_INCORRECT, operand::RCX)),
        (p + 0x100, with(status::OPERAND_INVALID, operand::RCX)),
        (p | 2 << 46, with(status::OPERAND_INVALID, operand::RCX)),
        (
            outside(&env),
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX),
        ),
    ] {
        let a = SeamArgs {
            rcx: pa,
            rdx: junk,
            r8: junk,
            r9: junk,
            r10: junk,
            r11: junk,
        };
        let (st, out) = seam(&m, leaf::PHYMEM_PAGE_RECLAIM, 0, a);
        assert_eq!(st, want, "pa {pa:#x}");
        assert_eq!(out, SeamArgs::default(), "outputs cleared first");
    }
}

#[test]
fn reclaim_of_a_2m_page_reports_its_size_and_needs_its_aligned_address() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    teardown(&tdx, &td);
    let chld = chldcnt(&m, &td);
    let (st, a) = call(
        &m,
        leaf::PHYMEM_PAGE_RECLAIM,
        head.add(1).hpa().raw(),
        0,
        0,
        0,
    );
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
    assert_eq!(
        (a.rcx, a.rdx, a.r8),
        (
            page_type::REG as u64,
            tdr_pa(&td),
            page_size::SIZE_2M as u64
        )
    );
    let r = tdx.phymem_page_reclaim(head.hpa()).unwrap();
    assert_eq!(
        r,
        Reclaimed {
            page_type: page_type::REG,
            owner: td.tdr.hpa(),
            size: page_size::SIZE_2M,
        }
    );
    for i in 0..512 {
        assert_eq!(m.pamt_info(head.add(i)), Some(freed(&td)), "page {i}");
    }
    assert_eq!(chldcnt(&m, &td), chld - 512);
}

#[test]
fn wbinvd_accepts_reclaimed_pages_with_hkid_bits() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 5, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let data = aug4k(&tdx, &env, td.tdr, 0x1000);
    teardown(&tdx, &td);
    let _ = tdx.phymem_page_reclaim(Hpa::new(data)).unwrap();
    // The TD's HKID in bits 51:46 is stripped.
    tdx.phymem_page_wbinvd(Hpa::new(data | 5 << 46)).unwrap();
    tdx.phymem_page_wbinvd(Hpa::new(data)).unwrap();
    assert_eq!(m.pamt_info(pfn(data)), Some(freed(&td)));
}

#[test]
fn wbinvd_refuses_pages_not_reclaimed_and_bad_addresses() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 5, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let data = aug4k(&tdx, &env, td.tdr, 0x1000);
    let meta = with(status::PAGE_METADATA_INCORRECT, operand::RCX);
    for (pa, want) in [
        (data | 5 << 46, meta),
        (data, meta),
        (tdr_pa(&td), meta),
        (
            page(&env) + 0x40,
            with(status::OPERAND_INVALID, operand::RCX),
        ),
        (
            outside(&env),
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::RCX),
        ),
    ] {
        assert_eq!(
            call(&m, leaf::PHYMEM_PAGE_WBINVD, pa, 0, 0, 0).0,
            want,
            "pa {pa:#x}"
        );
    }
}

// =============================================================================================
// Common checks of the MEM leaves: TDR operand, lifecycle, TDCS, OP state
// =============================================================================================

const MEM_LEAVES: [u16; 10] = [
    leaf::MEM_SEPT_ADD,
    leaf::MEM_PAGE_AUG,
    leaf::MEM_PAGE_ADD,
    leaf::MEM_RANGE_BLOCK,
    leaf::MEM_RANGE_UNBLOCK,
    leaf::MEM_PAGE_REMOVE,
    leaf::MEM_SEPT_REMOVE,
    leaf::MEM_SEPT_RD,
    leaf::MR_EXTEND,
    leaf::MEM_TRACK,
];

/// Issues a MEM leaf against the TDR at `tdr` (RCX for TRACK, RDX for the others).
fn mem_call(m: &SwModule<'_>, l: u16, tdr: u64, fresh: u64) -> (u64, SeamArgs) {
    match l {
        leaf::MEM_TRACK => call(m, l, tdr, 0, 0, 0),
        leaf::MEM_SEPT_ADD | leaf::MEM_SEPT_REMOVE => call(m, l, gl(0, 3), tdr, fresh, 0),
        leaf::MR_EXTEND => call(m, l, 0x1000, tdr, 0, 0),
        _ => call(m, l, gl(0x1000, 0), tdr, fresh, fresh),
    }
}

#[test]
fn mem_leaves_check_the_tdr_operand() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let fresh = page(&env);
    for l in MEM_LEAVES {
        let op = if l == leaf::MEM_TRACK {
            operand::RCX
        } else {
            operand::RDX
        };
        for (tdr, want) in [
            (page(&env), with(status::PAGE_METADATA_INCORRECT, op)),
            (
                td.vcpus[0].hpa().raw(),
                with(status::PAGE_METADATA_INCORRECT, op),
            ),
            (outside(&env), with(status::OPERAND_ADDR_RANGE_ERROR, op)),
            (tdr_pa(&td) | 1 << 46, with(status::OPERAND_INVALID, op)),
        ] {
            let (st, a) = mem_call(&m, l, tdr, fresh);
            assert_eq!(st, want, "leaf {l} tdr {tdr:#x}");
            if l != leaf::MEM_TRACK {
                assert_eq!((a.rcx, a.rdx), (0, 0), "leaf {l}: RCX/RDX cleared");
            }
        }
    }
    assert_eq!(m.pamt_info(pfn(fresh)), Some(nda()));
}

#[test]
fn mem_leaves_need_configured_keys_tdcs_pages_and_an_initialized_td() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let created = build_td(&tdx, &env, 1, 0, Stage::Created);
    let no_tdcs = build_td(&tdx, &env, 2, 0, Stage::KeysConfigured);
    let uninit = build_td(&tdx, &env, 3, 0, Stage::TdcsAdded);
    let blocked = build_td(&tdx, &env, 4, 1, Stage::Runnable);
    tdx.vp_flush(blocked.vcpus[0]).unwrap();
    tdx.mng_vpflushdone(blocked.tdr).unwrap();
    let fresh = page(&env);
    for l in MEM_LEAVES {
        for (td, want) in [
            (&created, status::TD_KEYS_NOT_CONFIGURED),
            (&no_tdcs, status::TDCS_NOT_ALLOCATED),
            (&uninit, status::OP_STATE_INCORRECT),
            (&blocked, status::TD_KEYS_NOT_CONFIGURED),
        ] {
            assert_eq!(
                mem_call(&m, l, tdr_pa(td), fresh).0,
                want,
                "leaf {}",
                leaf::name(l)
            );
        }
    }
    assert_eq!(m.pamt_info(pfn(fresh)), Some(nda()));
}

// =============================================================================================
// TDH.MEM.SEPT.ADD
// =============================================================================================

#[test]
fn sept_add_links_tables_and_records_them_as_ept_pages() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let chld = chldcnt(&m, &td);
    let gpa = 0x80_4020_0000; // PML4 entry 1, PDPT entry 1, PD entry 1
    let pages = add_tables(&tdx, &env, td.tdr, gpa, 1);
    for (lvl, p) in [3u8, 2, 1].into_iter().zip(&pages) {
        let (rcx, rdx) = sept_rd(&tdx, &td, align(gpa, lvl), lvl);
        assert_eq!(rdx, info(lvl, sept_state::NL_MAPPED), "level {lvl}");
        assert_eq!(rcx & NL_ARCH_MASK, NL_RWX, "level {lvl}");
        assert_eq!(m.pamt_info(pfn(*p)), Some(owned_by(page_type::EPT, 0, &td)));
    }
    assert_eq!(chldcnt(&m, &td), chld + 3);
    // The new table's entries are free.
    assert_eq!(sept_rd(&tdx, &td, gpa, 0), (SVE, info(0, sept_state::FREE)));
}

#[test]
fn sept_add_walk_failure_reports_the_entry_where_the_walk_stopped() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    let e = tdx
        .mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::L2M, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(3, sept_state::FREE)
        )
    );
    add_tables(&tdx, &env, td.tdr, 0, 3);
    let e = tdx
        .mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::L2M, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(2, sept_state::FREE)
        )
    );
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn sept_add_refuses_entries_that_are_not_free() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let p = page(&env);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    // NL_MAPPED.
    let e = tdx
        .mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::L2M, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (incorrect, info(1, sept_state::NL_MAPPED))
    );
    assert_eq!(e.rcx & NL_ARCH_MASK, NL_RWX);
    // A 2M PENDING leaf.
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    let e = tdx
        .mem_sept_add(td.tdr, Gpa::new(0x20_0000), SeptLevel::L2M, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            incorrect,
            SVE | LEAF_NO_PERM | head.hpa().raw(),
            info(1, sept_state::PENDING)
        )
    );
    // NL_BLOCKED.
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let e = tdx
        .mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::L2M, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (incorrect, info(1, sept_state::NL_BLOCKED))
    );
    assert_eq!(e.rcx & NL_ARCH_MASK, 0);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn sept_add_with_allow_existing_is_a_no_op_on_a_mapped_table() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let chld = chldcnt(&m, &td);
    let p = page(&env);
    let (st, a) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 2), tdr_pa(&td) | 1, p, 0);
    assert_eq!(st, status::SUCCESS);
    assert_eq!((a.rcx, a.rdx), (0, 0));
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), chld);
    // On a free entry allow_existing adds the page.
    let (st, _) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 1), tdr_pa(&td) | 1, p, 0);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::EPT, 0, &td)));
    assert_eq!(chldcnt(&m, &td), chld + 1);
    assert_eq!(sept_rd(&tdx, &td, 0, 1).1, info(1, sept_state::NL_MAPPED));
}

#[test]
fn sept_add_refuses_level_0_levels_above_the_root_and_bad_gpas() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    for rcx in [
        gl(0, 0),
        gl(0, 4), // a 4-level TD: entries up to level 3
        gl(0, 7),
        gl(0x1000, 1),      // not aligned to 2M
        gl(0x20_0000, 2),   // not aligned to 1G
        gl(0, 1) | 0x8,     // reserved bits 11:3
        gl(0, 1) | 1 << 52, // reserved bits 63:52
        gl(1 << 47, 3),     // shared bit (GPAW 48)
    ] {
        let (st, a) = call(&m, leaf::MEM_SEPT_ADD, rcx, tdr_pa(&td), p, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RCX),
            "rcx {rcx:#x}"
        );
        assert_eq!((a.rcx, a.rdx), (0, 0));
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn sept_add_refuses_a_new_page_that_is_not_a_free_host_page() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let data = aug4k(&tdx, &env, td.tdr, 0x1000);
    let p = page(&env);
    let meta = with(status::PAGE_METADATA_INCORRECT, operand::R8);
    for (r8, want) in [
        (data, meta),
        // The TD's TDR is held shared by the leaf itself: the page lock fails first (§3.1).
        (tdr_pa(&td), with(status::OPERAND_BUSY, operand::R8)),
        (td.vcpus[0].hpa().raw(), meta),
        (p + 0x800, with(status::OPERAND_INVALID, operand::R8)),
        (p | 1 << 46, with(status::OPERAND_INVALID, operand::R8)),
        (
            outside(&env),
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::R8),
        ),
    ] {
        let (st, _) = call(
            &m,
            leaf::MEM_SEPT_ADD,
            gl(0x4000_0000, 2),
            tdr_pa(&td),
            r8,
            0,
        );
        assert_eq!(st, want, "r8 {r8:#x}");
    }
    assert_eq!(
        sept_rd(&tdx, &td, 0x4000_0000, 2),
        (SVE, info(2, sept_state::FREE))
    );
}

#[test]
fn sept_add_refuses_reserved_rdx_bits() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let p = page(&env);
    for bits in [1u64 << 1, 1 << 11, 1 << 52, 1 << 63] {
        let (st, a) = call(&m, leaf::MEM_SEPT_ADD, gl(0, 3), tdr_pa(&td) | bits, p, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RDX),
            "bits {bits:#x}"
        );
        assert_eq!((a.rcx, a.rdx), (0, 0));
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]

fn sept_add_with_a_null_pa_page_is_operand_invalid_r8() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 3);
    let want = with(status::OPERAND_INVALID, operand::R8);
    for (rcx, flags) in [(gl(0, 2), 0), (gl(0, 3), 0), (gl(0, 3), 1)] {
        let (st, _) = call(
            &m,
            leaf::MEM_SEPT_ADD,
            rcx,
            tdr_pa(&td) | flags,
            u64::MAX,
            0,
        );
        assert_eq!(st, want, "rcx {rcx:#x} allow_existing {flags}");
    }
}

#[test]
fn sept_add_is_allowed_before_and_after_finalize_but_not_before_mng_init() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let building = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, building.tdr, 0, 1);
    assert_eq!(
        sept_rd(&tdx, &building, 0, 1).1,
        info(1, sept_state::NL_MAPPED)
    );
    let runnable = build_td(&tdx, &env, 2, 1, Stage::Runnable);
    add_tables(&tdx, &env, runnable.tdr, 0, 1);
    let uninit = build_td(&tdx, &env, 3, 0, Stage::TdcsAdded);
    let p = page(&env);
    let e = tdx
        .mem_sept_add(uninit.tdr, Gpa::new(0), SeptLevel::PML4, Hpa::new(p))
        .unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

// =============================================================================================
// TDH.MEM.PAGE.AUG
// =============================================================================================

#[test]
fn aug_4k_is_accepted_before_and_after_finalize() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    for (hkid, stage) in [(1, Stage::VcpusReady), (2, Stage::Runnable)] {
        let td = build_td(&tdx, &env, hkid, 1, stage);
        add_tables(&tdx, &env, td.tdr, 0, 1);
        let chld = chldcnt(&m, &td);
        let p = aug4k(&tdx, &env, td.tdr, 0x3000);
        assert_eq!(
            sept_rd(&tdx, &td, 0x3000, 0),
            (SVE | LEAF_NO_PERM | p, info(0, sept_state::PENDING))
        );
        assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::REG, 0, &td)));
        assert_eq!(chldcnt(&m, &td), chld + 1);
    }
}

#[test]
fn aug_2m_maps_512_pages_as_one_pending_leaf() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let chld = chldcnt(&m, &td);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    assert_eq!(
        sept_rd(&tdx, &td, 0x20_0000, 1),
        (
            SVE | LEAF_NO_PERM | head.hpa().raw(),
            info(1, sept_state::PENDING)
        )
    );
    for i in 0..512 {
        assert_eq!(
            m.pamt_info(head.add(i)),
            Some(owned_by(page_type::REG, page_size::SIZE_2M, &td)),
            "page {i}"
        );
    }
    assert_eq!(chldcnt(&m, &td), chld + 512);
    // A 4K walk stops at the 2M leaf.
    let e = tdx
        .mem_sept_rd(td.tdr, Gpa::new(0x20_1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE | LEAF_NO_PERM | head.hpa().raw(),
            info(1, sept_state::PENDING)
        )
    );
    let p = page(&env);
    let e = tdx
        .mem_page_aug(td.tdr, Gpa::new(0x20_1000), SeptLevel::L4K, Hpa::new(p))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            info(1, sept_state::PENDING)
        )
    );
}

#[test]
fn aug_refuses_1g_and_higher_levels() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 3);
    let p = page(&env);
    for lvl in [2u8, 3, 4] {
        let (st, a) = call(&m, leaf::MEM_PAGE_AUG, gl(0, lvl), tdr_pa(&td), p, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RCX),
            "level {lvl}"
        );
        assert_eq!((a.rcx, a.rdx), (0, 0));
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
    assert_eq!(sept_rd(&tdx, &td, 0, 2), (SVE, info(2, sept_state::FREE)));
}

#[test]
fn aug_refuses_entries_that_are_not_free_with_details() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let a = aug4k(&tdx, &env, td.tdr, 0x1000);
    let b = page(&env);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    let e = tdx
        .mem_page_aug(td.tdr, Gpa::new(0x1000), SeptLevel::L4K, Hpa::new(b))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            incorrect,
            SVE | LEAF_NO_PERM | a,
            info(0, sept_state::PENDING)
        )
    );
    // A 2M AUG onto the NL_MAPPED entry holding the page table (the entry state comes first).
    let e = tdx
        .mem_page_aug(td.tdr, Gpa::new(0), SeptLevel::L2M, Hpa::new(b))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (incorrect, info(1, sept_state::NL_MAPPED))
    );
    assert_eq!(e.rcx & NL_ARCH_MASK, NL_RWX);
    // PENDING_BLOCKED.
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    let e = tdx
        .mem_page_aug(td.tdr, Gpa::new(0x1000), SeptLevel::L4K, Hpa::new(b))
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            incorrect,
            SVE | LEAF_NO_PERM | a,
            info(0, sept_state::PENDING_BLOCKED)
        )
    );
    assert_eq!(m.pamt_info(pfn(b)), Some(nda()));
}

#[test]
fn aug_2m_refuses_a_range_with_a_page_in_use() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let head = alloc_contig_2m(&env, 512);
    // Page 5 of the range becomes the PDPT page.
    tdx.mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::PML4, head.add(5).hpa())
        .unwrap();
    tdx.mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::L1G, Hpa::new(page(&env)))
        .unwrap();
    let e = tdx
        .mem_page_aug(td.tdr, Gpa::new(0x20_0000), SeptLevel::L2M, head.hpa())
        .unwrap_err();
    assert_eq!(e.status, with(status::PAGE_METADATA_INCORRECT, operand::R8));
    assert_eq!(m.pamt_info(head), Some(nda()));
    assert_eq!(
        sept_rd(&tdx, &td, 0x20_0000, 1),
        (SVE, info(1, sept_state::FREE))
    );
}

#[test]

fn aug_2m_refuses_a_target_not_2m_aligned() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = alloc_contig_2m(&env, 513);
    let e = tdx
        .mem_page_aug(
            td.tdr,
            Gpa::new(0x20_0000),
            SeptLevel::L2M,
            head.add(1).hpa(),
        )
        .unwrap_err();
    assert_eq!(e.status, with(status::OPERAND_INVALID, operand::R8));
    assert_eq!(m.pamt_info(head.add(1)), Some(nda()));
}

#[test]
fn aug_refuses_gpas_not_aligned_to_the_level_or_shared() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let p = page(&env);
    for rcx in [
        gl(0x1000, 1),
        gl(0x1000, 0) | 0x10,
        gl(1 << 47, 0),
        gl(1 << 48, 0),
    ] {
        let (st, _) = call(&m, leaf::MEM_PAGE_AUG, rcx, tdr_pa(&td), p, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RCX),
            "rcx {rcx:#x}"
        );
    }
    assert_eq!(m.pamt_info(pfn(p)), Some(nda()));
}

#[test]
fn aug_refuses_target_pages_that_are_not_free() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    let data = aug4k(&tdx, &env, td.tdr, 0x1000);
    let meta = with(status::PAGE_METADATA_INCORRECT, operand::R8);
    for (r8, want) in [
        (data, meta),
        (tables[0], meta),
        (tdr_pa(&td), with(status::OPERAND_BUSY, operand::R8)),
        (page(&env) + 8, with(status::OPERAND_INVALID, operand::R8)),
        (
            outside(&env),
            with(status::OPERAND_ADDR_RANGE_ERROR, operand::R8),
        ),
    ] {
        let (st, _) = call(&m, leaf::MEM_PAGE_AUG, gl(0x2000, 0), tdr_pa(&td), r8, 0);
        assert_eq!(st, want, "r8 {r8:#x}");
    }
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE, info(0, sept_state::FREE))
    );
}

// =============================================================================================
// TDH.MEM.PAGE.ADD
// =============================================================================================

#[test]
fn page_add_copies_the_source_and_maps_the_page() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let chld = chldcnt(&m, &td);
    let src = source_page(&env, 42);
    let tgt = host_page(&env);
    tdx.mem_page_add(td.tdr, Gpa::new(0x3000), tgt.pfn().hpa(), src.pfn().hpa())
        .unwrap();
    let words = tgt.words().iter().zip(src.words().iter());
    for (i, (t, s)) in words.enumerate() {
        assert_eq!(t.load(Relaxed), pattern(42, i), "word {i}");
        assert_eq!(s.load(Relaxed), pattern(42, i), "source word {i}");
    }
    let (rcx, rdx) = sept_rd(&tdx, &td, 0x3000, 0);
    assert_eq!(rdx, info(0, sept_state::MAPPED));
    assert_eq!(rcx, SVE | XU | LEAF_RWX | tgt.pfn().hpa().raw());
    assert_eq!(
        m.pamt_info(tgt.pfn()),
        Some(owned_by(page_type::REG, 0, &td))
    );
    assert_eq!(chldcnt(&m, &td), chld + 1);
}

#[test]
fn page_add_is_refused_after_finalize() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let src = source_page(&env, 1);
    let tgt = page(&env);
    let e = tdx
        .mem_page_add(td.tdr, Gpa::new(0x1000), Hpa::new(tgt), src.pfn().hpa())
        .unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(m.pamt_info(pfn(tgt)), Some(nda()));
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0),
        (SVE, info(0, sept_state::FREE))
    );
}

#[test]
fn page_add_refuses_bad_level_walk_entry_source_and_target() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let src = source_page(&env, 7).pfn().hpa().raw();
    let tgt = page(&env);
    let t = tdr_pa(&td);
    // No tables yet: the walk stops at the root entry.
    let (st, a) = call(&m, leaf::MEM_PAGE_ADD, gl(0x1000, 0), t, tgt, src);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(3, sept_state::FREE)
        )
    );
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let mapped = add_page(&tdx, &env, td.tdr, 0x1000, 1).pfn().hpa().raw();
    let chld = chldcnt(&m, &td);
    // Level must be 4K.
    let (st, _) = call(&m, leaf::MEM_PAGE_ADD, gl(0, 1), t, tgt, src);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
    // Entry not free (checked before the source).
    let (st, a) = call(&m, leaf::MEM_PAGE_ADD, gl(0x1000, 0), t, tgt, src + 8);
    assert_eq!(
        (st, a.rdx),
        (
            with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX),
            info(0, sept_state::MAPPED)
        )
    );
    assert_eq!(a.rcx, SVE | XU | LEAF_RWX | mapped);
    // Source not 4K-aligned.
    let (st, _) = call(&m, leaf::MEM_PAGE_ADD, gl(0x2000, 0), t, tgt, src + 8);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::R9));
    // Target not free / misaligned.
    for (r8, want) in [
        (mapped, with(status::PAGE_METADATA_INCORRECT, operand::R8)),
        // The TDR, held exclusively by PAGE.ADD itself: BUSY before the type check (§3.1).
        (t, with(status::OPERAND_BUSY, operand::R8)),
        (tgt + 0x200, with(status::OPERAND_INVALID, operand::R8)),
    ] {
        let (st, _) = call(&m, leaf::MEM_PAGE_ADD, gl(0x2000, 0), t, r8, src);
        assert_eq!(st, want, "r8 {r8:#x}");
    }
    assert_eq!(m.pamt_info(pfn(tgt)), Some(nda()));
    assert_eq!(chldcnt(&m, &td), chld);
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE, info(0, sept_state::FREE))
    );
}

// =============================================================================================
// TDH.MEM.RANGE.BLOCK / TDH.MEM.RANGE.UNBLOCK
// =============================================================================================

#[test]
fn block_moves_each_blockable_state_to_its_blocked_state() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K),
        Ok(Block::Blocked)
    );
    let (rcx, rdx) = sept_rd(&tdx, &td, 0x1000, 0);
    assert_eq!(rdx, info(0, sept_state::BLOCKED));
    assert_eq!(rcx, SVE | LEAF_NO_PERM | mapped);
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K),
        Ok(Block::Blocked)
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (
            SVE | LEAF_NO_PERM | pending,
            info(0, sept_state::PENDING_BLOCKED)
        )
    );
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(Block::Blocked)
    );
    let (rcx, rdx) = sept_rd(&tdx, &td, 0, 1);
    assert_eq!(rdx, info(1, sept_state::NL_BLOCKED));
    assert_eq!(rcx & NL_ARCH_MASK, 0);
    // Below a blocked table the walk stops.
    let e = tdx
        .mem_sept_rd(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            info(1, sept_state::NL_BLOCKED)
        )
    );
    // Blocking changes no page ownership.
    assert_eq!(
        m.pamt_info(pfn(mapped)),
        Some(owned_by(page_type::REG, 0, &td))
    );
}

#[test]
fn block_of_a_blocked_entry_is_gpa_range_already_blocked_without_the_error_bit() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    let errors = m.errors(leaf::MEM_RANGE_BLOCK);
    let (st, a) = call(&m, leaf::MEM_RANGE_BLOCK, gl(0x2000, 0), tdr_pa(&td), 0, 0);
    assert_eq!(st, 0x0000_0B07_0000_0001);
    assert_eq!(st & status::ERROR_BIT, 0);
    assert_eq!(
        (a.rcx, a.rdx),
        (
            SVE | LEAF_NO_PERM | pending,
            info(0, sept_state::PENDING_BLOCKED)
        )
    );
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K),
        Ok(Block::AlreadyBlocked)
    );
    // A blocked non-leaf too.
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let (st, a) = call(&m, leaf::MEM_RANGE_BLOCK, gl(0, 1), tdr_pa(&td), 0, 0);
    assert_eq!(
        (st, a.rdx),
        (
            with(status::GPA_RANGE_ALREADY_BLOCKED, operand::RCX),
            info(1, sept_state::NL_BLOCKED)
        )
    );
    assert_eq!(m.errors(leaf::MEM_RANGE_BLOCK), errors);
}

#[test]
fn block_refuses_free_entries_with_details() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    for (gpa, lvl) in [(0x5000u64, 0u8), (0x40_0000, 1), (0x4000_0000, 2)] {
        let e = tdx
            .mem_range_block(td.tdr, Gpa::new(gpa), SeptLevel(lvl))
            .unwrap_err();
        assert_eq!(
            (e.status, e.rcx, e.rdx),
            (incorrect, SVE, info(lvl, sept_state::FREE)),
            "gpa {gpa:#x}"
        );
    }
    let e = tdx
        .mem_range_block(td.tdr, Gpa::new(0x4000_0000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(2, sept_state::FREE)
        )
    );
}

#[test]
fn unblock_restores_every_blocked_state_before_finalize_without_tracking() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, false);
    for (gpa, lvl) in [(0x1000u64, 0u8), (0x2000, 0), (0, 1)] {
        tdx.mem_range_block(td.tdr, Gpa::new(gpa), SeptLevel(lvl))
            .unwrap();
    }
    for (gpa, lvl) in [(0u64, 1u8), (0x1000, 0), (0x2000, 0)] {
        tdx.mem_range_unblock(td.tdr, Gpa::new(gpa), SeptLevel(lvl))
            .unwrap();
    }
    let (rcx, rdx) = sept_rd(&tdx, &td, 0x1000, 0);
    assert_eq!(rdx, info(0, sept_state::MAPPED));
    assert_eq!(rcx, SVE | XU | LEAF_RWX | mapped);
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE | LEAF_NO_PERM | pending, info(0, sept_state::PENDING))
    );
    let (rcx, rdx) = sept_rd(&tdx, &td, 0, 1);
    assert_eq!(rdx, info(1, sept_state::NL_MAPPED));
    assert_eq!(rcx & NL_ARCH_MASK, NL_RWX);
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().epoch, 1);
}

#[test]
fn unblock_in_a_runnable_td_needs_tlb_tracking() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    let (st, a) = call(
        &m,
        leaf::MEM_RANGE_UNBLOCK,
        gl(0x2000, 0),
        tdr_pa(&td),
        0,
        0,
    );
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::TLB_TRACKING_NOT_DONE, operand::RCX), 0, 0)
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0).1,
        info(0, sept_state::PENDING_BLOCKED)
    );
    tdx.mem_track(td.tdr).unwrap();
    tdx.mem_range_unblock(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE | LEAF_NO_PERM | pending, info(0, sept_state::PENDING))
    );
}

#[test]
fn unblock_refuses_entries_that_are_not_blocked() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    let e = tdx
        .mem_range_unblock(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            incorrect,
            SVE | LEAF_NO_PERM | pending,
            info(0, sept_state::PENDING)
        )
    );
    let e = tdx
        .mem_range_unblock(td.tdr, Gpa::new(0x3000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (incorrect, SVE, info(0, sept_state::FREE))
    );
    let e = tdx
        .mem_range_unblock(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (incorrect, info(1, sept_state::NL_MAPPED))
    );
    let e = tdx
        .mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!((e.status, e.rdx), (incorrect, info(0, sept_state::MAPPED)));
}

// =============================================================================================
// TDH.MEM.TRACK
// =============================================================================================

#[test]
fn track_advances_the_epoch_unless_a_vcpu_of_the_previous_epoch_is_inside() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
    let epoch = |m: &SwModule<'_>| m.td_info(tdr_pfn(&td)).unwrap().epoch;
    assert_eq!(epoch(&m), 1);
    let v0 = td.vcpus[0].hpa().pfn();
    let v1 = td.vcpus[1].hpa().pfn();
    assert!(m.vcpu_enter(v0)); // joins epoch 1
    tdx.mem_track(td.tdr).unwrap(); // nobody from epoch 0
    assert_eq!(epoch(&m), 2);
    let e = tdx.mem_track(td.tdr).unwrap_err();
    assert_eq!(e.status, status::PREVIOUS_TLB_EPOCH_BUSY);
    assert_eq!(e.status, 0x8000_0201_0000_0000);
    assert_eq!(epoch(&m), 2);
    // A vCPU entering in epoch 2 does not hold back the next track; v0 (epoch 1) does.
    assert!(m.vcpu_enter(v1));
    assert_eq!(
        tdx.mem_track(td.tdr).unwrap_err().status,
        status::PREVIOUS_TLB_EPOCH_BUSY
    );
    m.vcpu_exit(v0);
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(epoch(&m), 3);
    // Now v1 (epoch 2) is the previous epoch.
    assert_eq!(
        tdx.mem_track(td.tdr).unwrap_err().status,
        status::PREVIOUS_TLB_EPOCH_BUSY
    );
    m.vcpu_exit(v1);
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(epoch(&m), 4);
}

#[test]
fn track_is_allowed_before_finalize() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().epoch, 2);
}

// =============================================================================================
// TDH.MEM.PAGE.REMOVE
// =============================================================================================

#[test]
fn page_remove_in_a_runnable_td_refuses_an_entry_that_is_not_blocked() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    let e = tdx
        .mem_page_remove(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::GPA_RANGE_NOT_BLOCKED, operand::RCX),
            SVE | LEAF_NO_PERM | pending,
            info(0, sept_state::PENDING)
        )
    );
    let e = tdx
        .mem_page_remove(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::GPA_RANGE_NOT_BLOCKED, operand::RCX),
            info(0, sept_state::MAPPED)
        )
    );
    assert_eq!(e.rcx, SVE | XU | LEAF_RWX | mapped);
    assert_eq!(
        m.pamt_info(pfn(pending)),
        Some(owned_by(page_type::REG, 0, &td))
    );
}

#[test]
fn page_remove_of_a_blocked_but_untracked_page_is_tlb_tracking_not_done() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    let (st, a) = call(&m, leaf::MEM_PAGE_REMOVE, gl(0x2000, 0), tdr_pa(&td), 0, 0);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::TLB_TRACKING_NOT_DONE, operand::RCX), 0, 0)
    );
    assert_eq!(
        m.pamt_info(pfn(pending)),
        Some(owned_by(page_type::REG, 0, &td))
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0).1,
        info(0, sept_state::PENDING_BLOCKED)
    );
}

#[test]
fn page_remove_after_block_and_track_returns_the_page() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    for gpa in [0x1000u64, 0x2000] {
        tdx.mem_range_block(td.tdr, Gpa::new(gpa), SeptLevel::L4K)
            .unwrap();
    }
    tdx.mem_track(td.tdr).unwrap();
    let chld = chldcnt(&m, &td);
    for (gpa, p) in [(0x1000u64, mapped), (0x2000, pending)] {
        let (st, a) = call(&m, leaf::MEM_PAGE_REMOVE, gl(gpa, 0), tdr_pa(&td), 0, 0);
        assert_eq!((st, a.rcx, a.rdx), (status::SUCCESS, p, 0), "gpa {gpa:#x}");
        assert_eq!(m.pamt_info(pfn(p)), Some(freed(&td)));
        assert_eq!(sept_rd(&tdx, &td, gpa, 0), (SVE, info(0, sept_state::FREE)));
    }
    assert_eq!(chldcnt(&m, &td), chld - 2);
    // Freed entries take a new AUG.
    aug4k(&tdx, &env, td.tdr, 0x2000);
}

#[test]
fn page_remove_waits_for_vcpus_that_entered_before_the_track() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    let v = td.vcpus[0].hpa().pfn();
    assert!(m.vcpu_enter(v)); // epoch 1, before the block
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_track(td.tdr).unwrap();
    let e = tdx
        .mem_page_remove(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (with(status::TLB_TRACKING_NOT_DONE, operand::RCX), 0, 0)
    );
    m.vcpu_exit(v);
    // Entering again joins epoch 2, which does not hold back a block of epoch 1.
    assert!(m.vcpu_enter(v));
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(0x2000), SeptLevel::L4K),
        Ok(Hpa::new(pending))
    );
}

#[test]
fn page_remove_before_finalize_needs_no_block() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, false);
    let chld = chldcnt(&m, &td);
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(0x1000), SeptLevel::L4K),
        Ok(Hpa::new(mapped))
    );
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(0x2000), SeptLevel::L4K),
        Ok(Hpa::new(pending))
    );
    assert_eq!(m.pamt_info(pfn(mapped)), Some(freed(&td)));
    assert_eq!(m.pamt_info(pfn(pending)), Some(freed(&td)));
    assert_eq!(chldcnt(&m, &td), chld - 2);
    assert_eq!(m.td_info(tdr_pfn(&td)).unwrap().epoch, 1);
}

#[test]
fn page_remove_refuses_free_and_non_leaf_entries_and_levels_above_1g() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    let e = tdx
        .mem_page_remove(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (incorrect, SVE, info(0, sept_state::FREE))
    );
    for lvl in [1u8, 2] {
        let e = tdx
            .mem_page_remove(td.tdr, Gpa::new(0), SeptLevel(lvl))
            .unwrap_err();
        assert_eq!(
            (e.status, e.rdx),
            (incorrect, info(lvl, sept_state::NL_MAPPED))
        );
        assert_eq!(e.rcx & NL_ARCH_MASK, NL_RWX);
    }
    let (st, _) = call(&m, leaf::MEM_PAGE_REMOVE, gl(0, 3), tdr_pa(&td), 0, 0);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
}

#[test]
fn page_remove_of_a_2m_page_frees_all_512_pages() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    let chld = chldcnt(&m, &td);
    tdx.mem_range_block(td.tdr, Gpa::new(0x20_0000), SeptLevel::L2M)
        .unwrap();
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(
        tdx.mem_page_remove(td.tdr, Gpa::new(0x20_0000), SeptLevel::L2M),
        Ok(head.hpa())
    );
    for i in 0..512 {
        assert_eq!(m.pamt_info(head.add(i)), Some(freed(&td)), "page {i}");
    }
    assert_eq!(chldcnt(&m, &td), chld - 512);
}

// =============================================================================================
// TDH.MEM.SEPT.REMOVE
// =============================================================================================

#[test]
fn sept_remove_of_a_table_with_entries_is_ept_page_not_free() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    aug4k(&tdx, &env, td.tdr, 0x1000);
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    tdx.mem_track(td.tdr).unwrap();
    let e = tdx
        .mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::EPT_PAGE_NOT_FREE, operand::RCX),
            info(1, sept_state::NL_BLOCKED)
        )
    );
    assert_eq!(e.status, 0xC000_0B0E_0000_0001);
    assert_eq!(e.rcx & NL_ARCH_MASK, 0);
    assert_eq!(
        m.pamt_info(pfn(tables[2])),
        Some(owned_by(page_type::EPT, 0, &td))
    );
    // Before finalize, with the parent still mapped, the same rule holds.
    let building = build_td(&tdx, &env, 2, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, building.tdr, 0, 1);
    aug4k(&tdx, &env, building.tdr, 0x1000);
    let e = tdx
        .mem_sept_remove(building.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::EPT_PAGE_NOT_FREE, operand::RCX),
            info(1, sept_state::NL_MAPPED)
        )
    );
}

#[test]
fn sept_remove_of_a_blocked_tracked_empty_table_returns_it() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    aug4k(&tdx, &env, td.tdr, 0x1000);
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_track(td.tdr).unwrap();
    let _ = tdx
        .mem_page_remove(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    tdx.mem_track(td.tdr).unwrap();
    let chld = chldcnt(&m, &td);
    let (st, a) = call(&m, leaf::MEM_SEPT_REMOVE, gl(0, 1), tdr_pa(&td), 0, 0);
    assert_eq!((st, a.rcx), (status::SUCCESS, tables[2]));
    assert_eq!(m.pamt_info(pfn(tables[2])), Some(freed(&td)));
    assert_eq!(chldcnt(&m, &td), chld - 1);
    assert_eq!(sept_rd(&tdx, &td, 0, 1), (SVE, info(1, sept_state::FREE)));
}

#[test]
fn sept_remove_in_a_runnable_td_needs_block_and_track() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    let e = tdx
        .mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rdx),
        (
            with(status::GPA_RANGE_NOT_BLOCKED, operand::RCX),
            info(1, sept_state::NL_MAPPED)
        )
    );
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let (st, a) = call(&m, leaf::MEM_SEPT_REMOVE, gl(0, 1), tdr_pa(&td), 0, 0);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (with(status::TLB_TRACKING_NOT_DONE, operand::RCX), 0, 0)
    );
    assert_eq!(
        m.pamt_info(pfn(tables[2])),
        Some(owned_by(page_type::EPT, 0, &td))
    );
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(
        tdx.mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(Hpa::new(tables[2]))
    );
}

#[test]
fn sept_remove_before_finalize_needs_no_block() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tables = add_tables(&tdx, &env, td.tdr, 0, 1);
    assert_eq!(
        tdx.mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(Hpa::new(tables[2]))
    );
    assert_eq!(
        tdx.mem_sept_remove(td.tdr, Gpa::new(0), SeptLevel::L1G),
        Ok(Hpa::new(tables[1]))
    );
    assert_eq!(m.pamt_info(pfn(tables[1])), Some(freed(&td)));
}

#[test]
fn sept_remove_refuses_leaves_free_entries_and_level_0() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 2);
    let head = aug2m(&tdx, &env, td.tdr, 0x20_0000);
    let incorrect = with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX);
    let e = tdx
        .mem_sept_remove(td.tdr, Gpa::new(0x20_0000), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            incorrect,
            SVE | LEAF_NO_PERM | head.hpa().raw(),
            info(1, sept_state::PENDING)
        )
    );
    let e = tdx
        .mem_sept_remove(td.tdr, Gpa::new(0x40_0000), SeptLevel::L2M)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (incorrect, SVE, info(1, sept_state::FREE))
    );
    let (st, _) = call(&m, leaf::MEM_SEPT_REMOVE, gl(0, 0), tdr_pa(&td), 0, 0);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RCX));
}

// =============================================================================================
// TDH.MEM.SEPT.RD
// =============================================================================================

#[test]
fn sept_rd_reports_level_and_public_state_of_each_state() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, pending) = td_with_mapped_and_pending(&tdx, &env, 1, true);
    // FREE at every level.
    assert_eq!(sept_rd(&tdx, &td, 0x3000, 0), (SVE, 0));
    assert_eq!(
        sept_rd(&tdx, &td, 0x80_0000_0000, 3),
        (SVE, info(3, sept_state::FREE))
    );
    // NL_MAPPED 0x84.
    let (rcx, rdx) = sept_rd(&tdx, &td, 0, 2);
    assert_eq!((rcx & NL_ARCH_MASK, rdx), (NL_RWX, 0x8402));
    // PENDING 2.
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE | LEAF_NO_PERM | pending, 0x0200)
    );
    // MAPPED 4.
    let (rcx, rdx) = sept_rd(&tdx, &td, 0x1000, 0);
    assert_eq!((rcx, rdx), (SVE | XU | LEAF_RWX | mapped, 0x0400));
    // BLOCKED 1, PENDING_BLOCKED 3.
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mem_range_block(td.tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    let (rcx, rdx) = sept_rd(&tdx, &td, 0x1000, 0);
    assert_eq!((rcx, rdx), (SVE | LEAF_NO_PERM | mapped, 0x0100));
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE | LEAF_NO_PERM | pending, 0x0300)
    );
    // NL_BLOCKED 0x81.
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let (rcx, rdx) = sept_rd(&tdx, &td, 0, 1);
    assert_eq!((rcx & NL_ARCH_MASK, rdx), (0, 0x8101));
}

#[test]
fn sept_rd_refuses_levels_above_the_root_and_reports_walk_failures() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    for rcx in [gl(0, 4), gl(0x1000, 1), gl(1 << 47, 0)] {
        let (st, a) = call(&m, leaf::MEM_SEPT_RD, rcx, tdr_pa(&td), 0, 0);
        assert_eq!(
            (st, a.rcx, a.rdx),
            (with(status::OPERAND_INVALID, operand::RCX), 0, 0)
        );
    }
    let e = tdx
        .mem_sept_rd(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (
            with(status::EPT_WALK_FAILED, operand::RCX),
            SVE,
            info(3, sept_state::FREE)
        )
    );
    // Reading L2 attributes (RDX bit 0) of a non-debug TD.
    let (st, _) = call(&m, leaf::MEM_SEPT_RD, gl(0, 3), tdr_pa(&td) | 1, 0, 0);
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RDX));
}

#[test]

fn sept_rd_of_a_non_leaf_entry_reports_no_hpa() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    assert_eq!(sept_rd(&tdx, &td, 0, 1), (NL_RWX, 0x8401));
    assert_eq!(sept_rd(&tdx, &td, 0, 3), (NL_RWX, 0x8403));
    tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
        .unwrap();
    let (rcx, rdx) = sept_rd(&tdx, &td, 0, 1);
    assert_eq!((rcx, rdx), (0, 0x8101));
}

#[test]

fn sept_rd_checks_the_l2_flag_before_level_and_walk() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    for rcx in [gl(0, 4), gl(0x1000, 0)] {
        let (st, _) = call(&m, leaf::MEM_SEPT_RD, rcx, tdr_pa(&td) | 1, 0, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RDX),
            "rcx {rcx:#x}"
        );
    }
}

// =============================================================================================
// TDH.MR.EXTEND / TDH.MR.FINALIZE
// =============================================================================================

#[test]
fn mr_extend_of_a_pending_page_is_ept_entry_not_present_with_the_entry() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, _, pending) = td_with_mapped_and_pending(&tdx, &env, 1, false);
    // A PENDING leaf has RWX = 0: the walk to a leaf fails (`SEPT_WALK_TO_LEAF`), RCX +sept.
    let (st, a) = call(&m, leaf::MR_EXTEND, 0x2000, tdr_pa(&td), 0, 0);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (
            0xC000_0B03_0000_0001,
            SVE | LEAF_NO_PERM | pending,
            info(0, sept_state::PENDING)
        )
    );
    assert_eq!(st, with(status::EPT_ENTRY_NOT_PRESENT, operand::RCX));
}

#[test]
fn mr_extend_of_an_unmapped_gpa_reports_where_the_walk_stopped() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let not_present = with(status::EPT_ENTRY_NOT_PRESENT, operand::RCX);
    let e = tdx.mr_extend(td.tdr, Gpa::new(0x1000)).unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (not_present, SVE, info(3, sept_state::FREE))
    );
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let e = tdx.mr_extend(td.tdr, Gpa::new(0x1100)).unwrap_err();
    assert_eq!(
        (e.status, e.rcx, e.rdx),
        (not_present, SVE, info(0, sept_state::FREE))
    );
}

#[test]
fn mr_extend_accepts_mapped_256_byte_chunks_and_refuses_the_rest() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let (td, mapped, _) = td_with_mapped_and_pending(&tdx, &env, 1, false);
    for gpa in [0x1000u64, 0x1100, 0x1f00] {
        tdx.mr_extend(td.tdr, Gpa::new(gpa)).unwrap();
    }
    for gpa in [0x1080u64, 0x1001, 1 << 47 | 0x1000] {
        let (st, _) = call(&m, leaf::MR_EXTEND, gpa, tdr_pa(&td), 0, 0);
        assert_eq!(
            st,
            with(status::OPERAND_INVALID, operand::RCX),
            "gpa {gpa:#x}"
        );
    }
    // A BLOCKED leaf has RWX = 0: the walk to a leaf fails, RCX +sept.
    tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    let (st, a) = call(&m, leaf::MR_EXTEND, 0x1000, tdr_pa(&td), 0, 0);
    assert_eq!(
        (st, a.rcx, a.rdx),
        (
            with(status::EPT_ENTRY_NOT_PRESENT, operand::RCX),
            SVE | LEAF_NO_PERM | mapped,
            info(0, sept_state::BLOCKED)
        )
    );
    tdx.mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
        .unwrap();
    tdx.mr_finalize(td.tdr).unwrap();
    let e = tdx.mr_extend(td.tdr, Gpa::new(0x1000)).unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
}

#[test]
fn mr_finalize_needs_an_initialized_vcpu() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let e = tdx.mr_finalize(td.tdr).unwrap_err();
    assert_eq!(e.status, status::NO_VCPUS);
    assert_eq!(e.status, 0xC000_0609_0000_0000);
    let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
    assert_eq!(
        tdx.mr_finalize(td.tdr).unwrap_err().status,
        status::NO_VCPUS
    );
    assert_eq!(m.mrtd(tdr_pfn(&td)), None);
    tdx.vp_init(v, 0).unwrap();
    tdx.mr_finalize(td.tdr).unwrap();
    assert_eq!(
        m.td_info(tdr_pfn(&td)).unwrap().op_state,
        op_state::RUNNABLE
    );
    assert!(m.mrtd(tdr_pfn(&td)).is_some());
}

#[test]
fn mr_finalize_twice_or_before_mng_init_is_op_state_incorrect() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let mrtd = m.mrtd(tdr_pfn(&td)).unwrap();
    let e = tdx.mr_finalize(td.tdr).unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(m.mrtd(tdr_pfn(&td)), Some(mrtd));
    let uninit = build_td(&tdx, &env, 2, 0, Stage::TdcsAdded);
    let e = tdx.mr_finalize(uninit.tdr).unwrap_err();
    assert_eq!(e.status, status::OP_STATE_INCORRECT);
    assert_eq!(m.mrtd(tdr_pfn(&uninit)), None);
}

// =============================================================================================
// §7 Measurement
// =============================================================================================

const SHA384_ABC: &str = "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7";
const SHA384_EMPTY: &str = "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b";
const SHA384_896: &str = "09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712fcc7c71a557e2db966c3e9fa91746039";
const MSG_896: &[u8] = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

fn module_sha384(data: &[u8]) -> [u8; 48] {
    tdx::swmod::measure::sha384(&testkit::Sha2Compress, data)
}

#[test]
fn sha384_known_answer_vectors() {
    assert_eq!(module_sha384(b"abc").to_vec(), hex(SHA384_ABC));
    assert_eq!(module_sha384(b"").to_vec(), hex(SHA384_EMPTY));
    assert_eq!(MSG_896.len(), 112);
    assert_eq!(module_sha384(MSG_896).to_vec(), hex(SHA384_896));
}

#[test]
fn sha384_agrees_with_the_sha2_crate_at_every_padding_boundary() {
    let data: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in
        (0..=400).filter(|l| l % 16 == 0 || (100..=140).contains(l) || (230..=260).contains(l))
    {
        let want = Sha384::digest(&data[..len]);
        assert_eq!(
            module_sha384(&data[..len]).as_slice(),
            want.as_slice(),
            "length {len}"
        );
    }
    assert_eq!(Sha384::digest(b"abc").to_vec(), hex(SHA384_ABC));
}

/// Builds a TD with one vCPU, PAGE.ADDs `(gpa, seed)` pages under the tables of GPA 0, runs
/// MR.EXTEND over the whole page for those with `extend`, finalizes, and returns MRTD.
fn measured_td(tdx: &T, env: &HostEnv, hkid: u16, pages: &[(u64, u64, bool)]) -> [u8; 48] {
    let td = build_td(tdx, env, hkid, 1, Stage::VcpusReady);
    add_tables(tdx, env, td.tdr, 0, 1);
    for &(gpa, seed, extend) in pages {
        add_page(tdx, env, td.tdr, gpa, seed);
        if extend {
            for off in (0..4096).step_by(256) {
                tdx.mr_extend(td.tdr, Gpa::new(gpa + off)).unwrap();
            }
        }
    }
    tdx.mr_finalize(td.tdr).unwrap();
    tdx.backend().mrtd(tdr_pfn(&td)).expect("finalized")
}

#[test]
fn mrtd_of_a_td_with_nothing_measured_is_sha384_of_nothing() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    assert_eq!(measured_td(&tdx, &env, 1, &[]).to_vec(), hex(SHA384_EMPTY));
}

#[test]
fn mrtd_is_sha384_of_the_page_add_and_mr_extend_blocks_in_call_order() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    add_page(&tdx, &env, td.tdr, 0x1000, 11);
    add_page(&tdx, &env, td.tdr, 0x5000, 12);
    // A refused PAGE.ADD is not measured.
    let src = source_page(&env, 13);
    assert!(tdx
        .mem_page_add(
            td.tdr,
            Gpa::new(0x1000),
            Hpa::new(page(&env)),
            src.pfn().hpa()
        )
        .is_err());
    tdx.mr_extend(td.tdr, Gpa::new(0x5300)).unwrap();
    tdx.mr_extend(td.tdr, Gpa::new(0x1000)).unwrap();
    tdx.mr_finalize(td.tdr).unwrap();

    let mut h = Sha384::new();
    h.update(mr_block("MEM.PAGE.ADD", 0x1000));
    h.update(mr_block("MEM.PAGE.ADD", 0x5000));
    h.update(mr_block("MR.EXTEND", 0x5300));
    h.update(&pattern_bytes(12)[0x300..0x400]);
    h.update(mr_block("MR.EXTEND", 0x1000));
    h.update(&pattern_bytes(11)[..0x100]);
    let want = h.finalize();
    assert_eq!(m.mrtd(tdr_pfn(&td)).unwrap().as_slice(), want.as_slice());
}

#[test]
fn identical_tds_measure_the_same_mrtd() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let pages = [(0x1000, 1, true), (0x2000, 2, false), (0x3000, 3, true)];
    let a = measured_td(&tdx, &env, 1, &pages);
    let b = measured_td(&tdx, &env, 2, &pages);
    assert_eq!(a, b);
    assert_ne!(a.to_vec(), hex(SHA384_EMPTY));
}

#[test]
fn mrtd_changes_with_extended_content_but_page_add_alone_does_not_hash_content() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let a = measured_td(&tdx, &env, 1, &[(0x1000, 1, true)]);
    let b = measured_td(&tdx, &env, 2, &[(0x1000, 2, true)]);
    assert_ne!(a, b);
    let c = measured_td(&tdx, &env, 3, &[(0x1000, 1, false)]);
    let d = measured_td(&tdx, &env, 4, &[(0x1000, 2, false)]);
    assert_eq!(c, d);
    assert_ne!(a, c);
}

#[test]
fn mrtd_changes_with_the_gpa() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let a = measured_td(&tdx, &env, 1, &[(0x1000, 1, false)]);
    let b = measured_td(&tdx, &env, 2, &[(0x2000, 1, false)]);
    assert_ne!(a, b);
    let c = measured_td(&tdx, &env, 3, &[(0x1000, 1, true)]);
    let d = measured_td(&tdx, &env, 4, &[(0x2000, 1, true)]);
    assert_ne!(c, d);
}

// =============================================================================================
// PAMT through a TD's whole life
// =============================================================================================

#[test]
fn pamt_type_and_owner_follow_every_step_of_a_td() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let tdr_page = host_page(&env).pfn();
    let tdr = Tdr::new(tdr_page.hpa());
    let owner = |pt: u8| PamtInfo {
        page_type: pt,
        size: 0,
        owner: tdr_page,
    };
    tdx.mng_create(tdr, 1).unwrap();
    assert_eq!(
        m.pamt_info(tdr_page),
        Some(PamtInfo {
            page_type: page_type::TDR,
            size: 0,
            owner: Pfn::new(0)
        })
    );
    tdx.mng_key_config(tdr).unwrap();
    let mut pages = vec![tdr_page];
    for _ in 0..MIN_TDCS_PAGES {
        let p = host_page(&env).pfn();
        tdx.mng_addcx(tdr, Tdcx::new(p.hpa())).unwrap();
        assert_eq!(m.pamt_info(p), Some(owner(page_type::TDCX)));
        pages.push(p);
    }
    let params = td_params(&env, false, 1);
    tdx.mng_init(tdr, params.pfn().hpa()).unwrap();
    let v = host_page(&env).pfn();
    tdx.vp_create(tdr, Tdvpr::new(v.hpa())).unwrap();
    assert_eq!(m.pamt_info(v), Some(owner(page_type::TDVPR)));
    pages.push(v);
    for _ in 1..TDVPS_PAGES {
        let p = host_page(&env).pfn();
        tdx.vp_addcx(Tdvpr::new(v.hpa()), Tdcx::new(p.hpa()))
            .unwrap();
        assert_eq!(m.pamt_info(p), Some(owner(page_type::TDCX)));
        pages.push(p);
    }
    tdx.vp_init(Tdvpr::new(v.hpa()), 0).unwrap();
    for lvl in [3u8, 2, 1] {
        let p = host_page(&env).pfn();
        tdx.mem_sept_add(tdr, Gpa::new(0), SeptLevel(lvl), p.hpa())
            .unwrap();
        assert_eq!(m.pamt_info(p), Some(owner(page_type::EPT)));
        pages.push(p);
    }
    let src = source_page(&env, 5);
    let added = host_page(&env).pfn();
    tdx.mem_page_add(tdr, Gpa::new(0x1000), added.hpa(), src.pfn().hpa())
        .unwrap();
    assert_eq!(m.pamt_info(added), Some(owner(page_type::REG)));
    assert_eq!(
        m.pamt_info(src.pfn()),
        Some(nda()),
        "the source stays a host page"
    );
    pages.push(added);
    tdx.mr_finalize(tdr).unwrap();
    let augd = host_page(&env).pfn();
    tdx.mem_page_aug(tdr, Gpa::new(0x2000), SeptLevel::L4K, augd.hpa())
        .unwrap();
    assert_eq!(m.pamt_info(augd), Some(owner(page_type::REG)));
    tdx.mem_range_block(tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(m.pamt_info(augd), Some(owner(page_type::REG)));
    tdx.mem_track(tdr).unwrap();
    let _ = tdx
        .mem_page_remove(tdr, Gpa::new(0x2000), SeptLevel::L4K)
        .unwrap();
    assert_eq!(m.pamt_info(augd), Some(owner(page_type::NDA)));
    tdx.vp_flush(Tdvpr::new(v.hpa())).unwrap();
    tdx.mng_vpflushdone(tdr).unwrap();
    tdx.phymem_cache_wb(false).unwrap();
    tdx.mng_key_freeid(tdr).unwrap();
    // Every page still belongs to the TD until reclaimed, and names it after (§5: RECLAIM only
    // frees the type); the TDR goes last.
    for &p in pages.iter().skip(1) {
        assert_eq!(m.pamt_info(p).unwrap().owner, tdr_page);
        let _ = tdx.phymem_page_reclaim(p.hpa()).unwrap();
        assert_eq!(m.pamt_info(p), Some(owner(page_type::NDA)));
    }
    assert_eq!(m.td_info(tdr_page).unwrap().chldcnt, 0);
    let _ = tdx.phymem_page_reclaim(tdr_page.hpa()).unwrap();
    assert_eq!(m.pamt_info(tdr_page), Some(nda()));
}

// =============================================================================================
// Failure injection and per-leaf counters
// =============================================================================================

#[test]
fn injected_failure_hits_the_nth_call_and_later_calls_run_normally() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    let busy = with(status::OPERAND_BUSY, operand::SEPT_TREE);
    m.inject(Injection {
        leaf: leaf::MEM_PAGE_AUG,
        nth: 1,
        count: 1,
        status: busy,
    });
    let (calls, errors) = (m.calls(leaf::MEM_PAGE_AUG), m.errors(leaf::MEM_PAGE_AUG));
    aug4k(&tdx, &env, td.tdr, 0x1000); // call 0 runs
    let p = page(&env);
    let (st, a) = call(&m, leaf::MEM_PAGE_AUG, gl(0x2000, 0), tdr_pa(&td), p, 0);
    assert_eq!((st, a.rcx, a.rdx), (busy, 0, 0));
    assert_eq!(
        m.pamt_info(pfn(p)),
        Some(nda()),
        "the injected call did nothing"
    );
    assert_eq!(
        sept_rd(&tdx, &td, 0x2000, 0),
        (SVE, info(0, sept_state::FREE))
    );
    // The retry runs.
    let (st, _) = call(&m, leaf::MEM_PAGE_AUG, gl(0x2000, 0), tdr_pa(&td), p, 0);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(m.calls(leaf::MEM_PAGE_AUG), calls + 3);
    assert_eq!(m.errors(leaf::MEM_PAGE_AUG), errors + 1);
    // Other leaves were never affected.
    assert_eq!(m.errors(leaf::MEM_SEPT_ADD), 0);
}

#[test]
fn injected_failure_repeats_count_times_and_only_for_its_leaf() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    add_tables(&tdx, &env, td.tdr, 0, 1);
    aug4k(&tdx, &env, td.tdr, 0x1000);
    m.inject(Injection {
        leaf: leaf::MEM_RANGE_BLOCK,
        nth: 0,
        count: 2,
        status: status::RND_NO_ENTROPY,
    });
    // SEPT.RD is another leaf: untouched.
    assert_eq!(
        sept_rd(&tdx, &td, 0x1000, 0).1,
        info(0, sept_state::PENDING)
    );
    for _ in 0..2 {
        let e = tdx
            .mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .unwrap_err();
        assert_eq!(e.status, status::RND_NO_ENTROPY);
        assert_eq!(
            sept_rd(&tdx, &td, 0x1000, 0).1,
            info(0, sept_state::PENDING)
        );
    }
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K),
        Ok(Block::Blocked)
    );
    // A success-class injected status is not an error.
    m.inject(Injection {
        leaf: leaf::MEM_RANGE_BLOCK,
        nth: 0,
        count: 1,
        status: with(status::GPA_RANGE_ALREADY_BLOCKED, operand::RCX),
    });
    let errors = m.errors(leaf::MEM_RANGE_BLOCK);
    assert_eq!(
        tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M),
        Ok(Block::AlreadyBlocked)
    );
    assert_eq!(m.errors(leaf::MEM_RANGE_BLOCK), errors);
    assert_eq!(sept_rd(&tdx, &td, 0, 1).1, info(1, sept_state::NL_MAPPED));
}

#[test]
fn per_leaf_counters_count_calls_and_errors() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    assert_eq!(m.total_calls(), 0);
    let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
    for (l, n) in [
        (leaf::MNG_CREATE, 1),
        (leaf::MNG_KEY_CONFIG, 1),
        (leaf::MNG_ADDCX, MIN_TDCS_PAGES),
        (leaf::MNG_INIT, 1),
        (leaf::VP_CREATE, 2),
        (leaf::VP_ADDCX, 2 * (TDVPS_PAGES - 1)),
        (leaf::VP_INIT, 2),
        (leaf::MR_FINALIZE, 1),
    ] {
        assert_eq!(m.calls(l), n, "{}", leaf::name(l));
        assert_eq!(m.errors(l), 0, "{}", leaf::name(l));
    }
    // build_td reads TDCS_BASE_SIZE first, as a host does.
    assert_eq!(m.calls(leaf::SYS_RD), 1);
    let total = m.total_calls();
    assert_eq!(total, 9 + MIN_TDCS_PAGES + 2 * (TDVPS_PAGES - 1));
    // Two refused SEPT.ADDs, one accepted; a refused TRACK.
    let p = page(&env);
    let _ = call(&m, leaf::MEM_SEPT_ADD, gl(0, 0), tdr_pa(&td), p, 0);
    let _ = call(&m, leaf::MEM_SEPT_ADD, gl(0, 1), tdr_pa(&td), p, 0);
    tdx.mem_sept_add(td.tdr, Gpa::new(0), SeptLevel::PML4, Hpa::new(p))
        .unwrap();
    assert!(m.vcpu_enter(td.vcpus[0].hpa().pfn()));
    tdx.mem_track(td.tdr).unwrap();
    assert!(tdx.mem_track(td.tdr).is_err());
    assert_eq!(
        (m.calls(leaf::MEM_SEPT_ADD), m.errors(leaf::MEM_SEPT_ADD)),
        (3, 2)
    );
    assert_eq!(
        (m.calls(leaf::MEM_TRACK), m.errors(leaf::MEM_TRACK)),
        (2, 1)
    );
    assert_eq!(m.total_calls(), total + 5);
    // vcpu_enter is not a SEAMCALL.
    assert_eq!(m.calls(leaf::VP_ENTER), 0);
}

// =============================================================================================
// Concurrency
// =============================================================================================

/// What a concurrency worker did: (GPA, page) it mapped, S-EPT pages it used, status counts.
type WorkerResult = (Vec<(u64, u64)>, u64, BTreeMap<u64, u64>);

/// Issues a leaf until it succeeds. Every other answer must be `TDX_OPERAND_BUSY` on the S-EPT
/// tree or on the entry (RCX); each status seen is counted in `seen`.
fn until_success(m: &SwModule<'_>, seen: &mut BTreeMap<u64, u64>, l: u16, a: SeamArgs) {
    let busy_tree = with(status::OPERAND_BUSY, operand::SEPT_TREE);
    let busy_entry = with(status::OPERAND_BUSY, operand::RCX);
    for _ in 0..1_000_000 {
        let (st, out) = seam(m, l, 0, a);
        *seen.entry(st).or_insert(0) += 1;
        if st == status::SUCCESS {
            return;
        }
        assert!(
            st == busy_tree || st == busy_entry,
            "{} rcx {:#x}: unexpected status {st:#x} (rcx {:#x} rdx {:#x})",
            leaf::name(l),
            a.rcx,
            out.rcx,
            out.rdx
        );
        if st == busy_entry {
            // §3.4: entry-lock BUSY carries the S-EPT details of the entry at its level.
            assert_eq!(out.rdx & 7, a.rcx & 7, "{}: level in RDX", leaf::name(l));
        } else {
            assert_eq!((out.rcx, out.rdx), (0, 0), "{}: no details", leaf::name(l));
        }
    }
    panic!("{} rcx {:#x} never succeeded", leaf::name(l), a.rcx);
}

#[test]
fn concurrent_sept_add_aug_block_see_only_success_or_busy_and_end_consistent() {
    const PER_THREAD: u64 = 256;
    const MIN_ROUNDS: u64 = 16;
    const MAX_ROUNDS: u64 = 2048;
    let env = HostEnv::with_capacity(8192);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    // Before finalize: AUG, BLOCK and UNBLOCK need no TLB tracking, so the rounds can repeat.
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let tdr = tdr_pa(&td);
    let chld0 = chldcnt(&m, &td);
    let barrier = Barrier::new(2);
    // GPA of thread `t`'s i-th page: four page tables shared by both threads, disjoint slots.
    let gpa_of = |t: u64, i: u64| (i % 4) << 21 | (t * 128 + i / 4) << 12;
    // Pages are allocated before the race so that the threads only race in the module.
    let pages: Vec<Vec<u64>> = (0..2)
        .map(|_| (0..PER_THREAD + 8).map(|_| page(&env)).collect())
        .collect();
    let results: Vec<WorkerResult> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let (m, barrier, mine) = (&m, &barrier, &pages[t as usize]);
                s.spawn(move || {
                    let mut seen = BTreeMap::new();
                    let (data, mut spares) = mine.split_at(PER_THREAD as usize);
                    let mut ept_used = 0;
                    let mut mapped = Vec::new();
                    barrier.wait();
                    for (i, &p) in (0..PER_THREAD).zip(data) {
                        let gpa = gpa_of(t, i);
                        for lvl in [3u8, 2, 1] {
                            let a = args(gl(align(gpa, lvl), lvl), tdr | 1, spares[0], 0);
                            until_success(m, &mut seen, leaf::MEM_SEPT_ADD, a);
                            if m.pamt_info(pfn(spares[0])).unwrap().page_type == page_type::EPT {
                                ept_used += 1;
                                spares = &spares[1..];
                            }
                        }
                        until_success(
                            m,
                            &mut seen,
                            leaf::MEM_PAGE_AUG,
                            args(gl(gpa, 0), tdr, p, 0),
                        );
                        until_success(
                            m,
                            &mut seen,
                            leaf::MEM_RANGE_BLOCK,
                            args(gl(gpa, 0), tdr, 0, 0),
                        );
                        mapped.push((gpa, p));
                    }
                    // The same entries again and again: the shared upper entries (entry locks)
                    // and the tree lock that BLOCK and UNBLOCK take exclusively. Rounds go on
                    // until this worker has met both kinds of contention (bounded).
                    let contended = |seen: &BTreeMap<u64, u64>| {
                        seen.contains_key(&with(status::OPERAND_BUSY, operand::SEPT_TREE))
                            && seen.contains_key(&with(status::OPERAND_BUSY, operand::RCX))
                    };
                    for r in 0..MAX_ROUNDS {
                        if r >= MIN_ROUNDS && contended(&seen) {
                            break;
                        }
                        for &(gpa, _) in &mapped {
                            for lvl in [3u8, 2, 1] {
                                let a = args(gl(align(gpa, lvl), lvl), tdr | 1, spares[0], 0);
                                until_success(m, &mut seen, leaf::MEM_SEPT_ADD, a);
                            }
                            let a = args(gl(gpa, 0), tdr, 0, 0);
                            until_success(m, &mut seen, leaf::MEM_RANGE_UNBLOCK, a);
                            until_success(m, &mut seen, leaf::MEM_RANGE_BLOCK, a);
                        }
                        assert_eq!(
                            m.pamt_info(pfn(spares[0])),
                            Some(nda()),
                            "round {r}: allow_existing consumed a page"
                        );
                    }
                    (mapped, ept_used, seen)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (t, r) in results.iter().enumerate() {
        eprintln!("worker {t}: status counts {:x?}", r.2);
    }
    let ept_used: u64 = results.iter().map(|r| r.1).sum();
    // One PDPT, one PD and four page tables, each added exactly once.
    assert_eq!(ept_used, 6);
    for (mapped, _, _) in &results {
        for &(gpa, p) in mapped {
            assert_eq!(
                m.sept_entry(tdr_pfn(&td), gpa, SeptLevel::L4K),
                Some((sept_state::PENDING_BLOCKED, SVE | LEAF_NO_PERM | p)),
                "gpa {gpa:#x}"
            );
            assert_eq!(m.pamt_info(pfn(p)), Some(owned_by(page_type::REG, 0, &td)));
        }
    }
    assert_eq!(chldcnt(&m, &td), chld0 + 6 + 2 * PER_THREAD);
    let mut present = 0;
    m.for_each_sept_entry(tdr_pfn(&td), |_, _, _, _| present += 1);
    assert_eq!(present, 6 + 2 * PER_THREAD);
    // The module's error counters saw exactly the refusals the workers saw.
    let refused: u64 = results
        .iter()
        .flat_map(|r| r.2.iter())
        .filter(|(st, _)| **st != status::SUCCESS)
        .map(|(_, n)| n)
        .sum();
    let errors: u64 = [
        leaf::MEM_SEPT_ADD,
        leaf::MEM_PAGE_AUG,
        leaf::MEM_RANGE_BLOCK,
        leaf::MEM_RANGE_UNBLOCK,
    ]
    .iter()
    .map(|&l| m.errors(l))
    .sum();
    assert_eq!(errors, refused);
}

// ---- TDH.SYS.RD (global metadata) ------------------------------------------------------------

/// TDH.SYS.RD of `field`: (status, R8, RDX).
fn sys_rd(m: &SwModule<'_>, field: u64) -> (u64, u64, u64) {
    let (st, a) = call(m, abi::leaf::SYS_RD, 0x55, field, 0x66, 0);
    (st, a.r8, a.rdx)
}

#[test]
fn sys_rd_answers_intel_field_ids_in_bytes_and_chains_rdx_in_intels_table_order() {
    use abi::md::sys;
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    // (field, value, the next field of `global_sys_lookup`, readable or not by the software
    // module).
    let page = 4096;
    for (field, value, next) in [
        (sys::NUM_PKGS, 1, 0x0000_0002_0000_0001),       // PKG_FMS
        (sys::VENDOR_ID, 0x8086, 0x8800_0002_0000_0001), // BUILD_DATE
        (sys::SYS_ATTRIBUTES, 0, 0x0A00_0000_0000_0001), // NUM_TDX_FEATURES
        (abi::md::TDR_BASE_SIZE, page, abi::md::TDCS_BASE_SIZE),
        (
            abi::md::TDCS_BASE_SIZE,
            MIN_TDCS_PAGES * page,
            sys::TDCS_SIZE_PER_L2_VM,
        ),
        (sys::TDCS_SIZE_PER_L2_VM, page, abi::md::TDVPS_BASE_SIZE),
        (
            abi::md::TDVPS_BASE_SIZE,
            TDVPS_PAGES * page,
            sys::TDVPS_SIZE_PER_L2_VM,
        ),
        (sys::TDVPS_SIZE_PER_L2_VM, 3 * page, sys::ATTRIBUTES_FIXED0),
        (
            sys::ATTRIBUTES_FIXED0,
            0x8000_0000_7001_0041,
            sys::ATTRIBUTES_FIXED1,
        ),
        (sys::ATTRIBUTES_FIXED1, 0, sys::XFAM_FIXED0),
        (sys::XFAM_FIXED0, 0x6DBE7, sys::XFAM_FIXED1),
        (sys::XFAM_FIXED1, 3, 0x9900_0001_0000_0004), // NUM_CPUID_CONFIG
        (sys::CONFIG_FLAGS_FIXED0, 0x1F, sys::CONFIG_FLAGS_FIXED1),
        (sys::CONFIG_FLAGS_FIXED1, 0, abi::md::MAX_VCPUS_PER_TD),
        (
            abi::md::MAX_VCPUS_PER_TD,
            abi::MAX_VCPUS_PER_TD as u64,
            0x9900_0000_0000_0009, // MIN_VIRT_MAXPA
        ),
        (
            sys::IA32_ARCH_CAPABILITIES_CONFIG_MASK,
            0x0118_0010,
            0x9900_0001_0000_0800, // NUM_ALLOWED_FMS
        ),
    ] {
        assert_eq!(
            sys_rd(&m, field),
            (status::SUCCESS, value, next),
            "field {field:#x}"
        );
    }
    // TDCS_BASE_SIZE is in bytes: the host derives the TDCX page count from it. SYS.RD reports
    // the minimum a vCPU needs (MIN_TDVPS_PAGES), not the most it may hold.
    let tdx = Tdx::new(&m);
    assert_eq!(
        tdx.sys_rd(abi::md::TDCS_BASE_SIZE),
        Ok(MIN_TDCS_PAGES * 4096)
    );
    assert_eq!(tdx.sys_rd(abi::md::TDVPS_BASE_SIZE), Ok(6 * 4096));
    // The fixed masks are what MNG.INIT enforces.
    assert_eq!(
        tdx.sys_rd(sys::ATTRIBUTES_FIXED0),
        Ok(tdx::swmod::ATTRIBUTES_FIXED0)
    );
    assert_eq!(tdx.sys_rd(sys::XFAM_FIXED0), Ok(tdx::swmod::XFAM_FIXED0));
}

#[test]
fn sys_rd_of_the_null_id_names_the_first_field_in_rdx() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    // The context code is replaced by SYS's before the null-id test.
    for field in [u64::MAX, !abi::md::CONTEXT_MASK] {
        assert_eq!(
            sys_rd(&m, field),
            (
                abi::status::METADATA_FIRST_FIELD_ID_IN_CONTEXT,
                0,
                abi::md::sys::NUM_PKGS
            ),
            "{field:#x}"
        );
    }
    assert_eq!(
        abi::status::METADATA_FIRST_FIELD_ID_IN_CONTEXT,
        0x0000_0C0B_0000_0000
    );
    assert_eq!(m.errors(leaf::SYS_RD), 0);
}

#[test]
fn sys_rd_ignores_context_size_write_mask_and_increment_bits_of_the_id() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let f = abi::md::TDCS_BASE_SIZE;
    let want = (
        status::SUCCESS,
        MIN_TDCS_PAGES * 4096,
        abi::md::sys::TDCS_SIZE_PER_L2_VM,
    );
    for id in [
        abi::md::with_context(f, abi::md::CONTEXT_TD),
        abi::md::with_context(f, 7),
        f | 3 << 32,
        f & !(3 << 32),
        f | abi::md::WRITE_MASK_VALID,
        f | 1 << 50,
    ] {
        let (st, r8, rdx) = sys_rd(&m, id);
        assert_eq!((st, r8), (want.0, want.1), "{id:#x}");
        // The next element keeps the caller's id bits; the next field is the table's id.
        assert_eq!(rdx, want.2, "{id:#x}");
    }
}

#[test]
fn sys_rd_refuses_malformed_unknown_and_unmodelled_ids_with_no_value_and_no_next_field() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let incorrect = 0xC000_0C00_0000_0000;
    let f = abi::md::TDCS_BASE_SIZE;
    for field in [
        f | 1 << 24,           // reserved 31:24
        f | 1 << 47,           // reserved 49:47
        f | 1 << 55,           // reserved 55
        f | 1 << 62,           // reserved 62
        f | 1 << 34,           // LAST_ELEMENT_IN_FIELD
        f | 1 << 38,           // LAST_FIELD_IN_SEQUENCE
        0x9800_0001_0000_0300, // class 0x18, no such field code
        0x0B00_0001_0000_0000, // no such class
        0x8900_0001_0000_0000, // MODULE_HV: a field the software module has no value for
        0x0000_0002_0000_0001, // PKG_FMS[0]
        0x0000_0002_0000_0008, // PKG_FMS[7]
        0x9900_0003_0000_0810, // ALLOWED_FMS[0]
        0xA200_0003_0000_0006, // VCPU_L2_DEBUG_CTLS_FIXED1, the last entry
    ] {
        assert_eq!(
            sys_rd(&m, field),
            (incorrect, 0, abi::md::FIELD_ID_NA),
            "field {field:#x}"
        );
    }
}
