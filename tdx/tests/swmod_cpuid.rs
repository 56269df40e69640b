// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of the software TDX module's CPUID configuration, written from Intel's sources
//! (`tdh_mng_init.c` `read_and_set_cpuid_configurations`, `metadata_sys.c`,
//! `cpuid_configurations.c`): what TDH.SYS.RD reports of the configurable leaves, and how
//! TDH.MNG.INIT checks TD_PARAMS.CPUID_CONFIG (exact status, the refused leaf in RCX, the order
//! against the other TD_PARAMS checks). Each scenario runs on both module lines.

mod common;

use common::*;
use mmu::env::Frame;
use tdx::abi::md::{self, sys};
use tdx::abi::td_params::{eptp_controls, TdParams, MAX_NUM_CPUID_CONFIG};
use tdx::abi::{leaf, op_state, operand, status};
use tdx::swmod::ModuleLine;
use tdx::Tdx;
use testkit::td::{build_td, host_page, sw_module_on, Stage, SwModule, TestTd};
use testkit::HostEnv;

/// `OPERAND_INVALID | CPUID_CONFIG (69)`.
const CPUID_REFUSED: u64 = status::OPERAND_INVALID | operand::td_params::CPUID_CONFIG as u64;
/// Leaf/sub-leaf as RCX names it: leaf in 31:0, sub-leaf in 63:32 (all-1: none).
const fn leaf_subleaf(leaf: u32, subleaf: u32) -> u64 {
    (subleaf as u64) << 32 | leaf as u64
}
const NA: u32 = u32::MAX;
/// The emulated CPU's F/M/S (the module docs name it).
const PLATFORM_FMS: u32 = 0x0008_06f8;

fn sys_rd(m: &SwModule<'_>, field: u64) -> (u64, u64) {
    let (st, a) = call(m, leaf::SYS_RD, 0, field, 0, 0);
    (st, a.r8)
}

fn td_params_page(env: &HostEnv, edit: impl FnOnce(&mut TdParams)) -> Frame {
    let f = host_page(env);
    let mut p = TdParams {
        xfam: 3,
        max_vcpus: 8,
        eptp_controls: eptp_controls(4),
        tsc_frequency: 100,
        ..TdParams::ZERO
    };
    edit(&mut p);
    p.write_to(&f);
    f
}

/// MNG.INIT of `td` with TD_PARAMS edited by `edit`: (status, RCX).
fn mng_init(
    m: &SwModule<'_>,
    env: &HostEnv,
    td: &TestTd,
    edit: impl FnOnce(&mut TdParams),
) -> (u64, u64) {
    let f = td_params_page(env, edit);
    let (st, a) = call(m, leaf::MNG_INIT, tdr_pa(td), f.pfn().hpa().raw(), 0, 0);
    (st, a.rcx)
}

fn op_state_of(m: &SwModule<'_>, td: &TestTd) -> u64 {
    let (st, a) = call(m, leaf::MNG_RD, tdr_pa(td), md::td::OP_STATE, 0, 0);
    assert_eq!(st, status::SUCCESS);
    a.r8
}

fn sys_rd_reports_the_configurable_cpuid_leaves(line: ModuleLine) {
    let env = HostEnv::with_capacity(64);
    let m = sw_module_on(&env, line);
    assert_eq!(
        sys_rd(&m, sys::NUM_CPUID_CONFIG),
        (status::SUCCESS, MAX_NUM_CPUID_CONFIG as u64)
    );
    let leaves: Vec<u64> = (0..32)
        .map(|i| {
            let (st, v) = sys_rd(&m, sys::CPUID_CONFIG_LEAVES + i);
            assert_eq!(st, status::SUCCESS, "CPUID_CONFIG_LEAVES[{i}]");
            v
        })
        .collect();
    // Intel's `cpuid_configurable` order.
    let want = [
        leaf_subleaf(1, NA),
        leaf_subleaf(4, 0),
        leaf_subleaf(4, 1),
        leaf_subleaf(4, 2),
        leaf_subleaf(4, 3),
        leaf_subleaf(7, 0),
        leaf_subleaf(7, 1),
        leaf_subleaf(0xa, NA),
        leaf_subleaf(0x1c, NA),
        leaf_subleaf(0x8000_0008, NA),
        leaf_subleaf(7, 2),
        leaf_subleaf(0x23, 0),
    ];
    assert_eq!(&leaves[..12], &want);
    for (i, sub) in (12..18).zip(0..) {
        assert_eq!(leaves[i], leaf_subleaf(0x1f, sub));
    }
    assert!(
        leaves[18..].iter().all(|&v| v == u64::MAX),
        "unused leaves read all-1"
    );
    // Values: EBX:EAX then EDX:ECX. Leaf 1 EAX/EBX are CONFIG_DIRECT (F/M/S, logical CPUs);
    // leaf 4 ECX wholly; 0x80000008 EAX[7:0] (the physical address width) and EBX[9].
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES),
        (status::SUCCESS, 0x00ff_0000_0fff_3fff)
    );
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES + 3).1,
        0xffff_fffb_ffff_ffff
    );
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES + 2 * 9).1,
        0x200_u64 << 32 | 0xff
    );
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES + 2 * 7).1,
        0,
        "leaf 0xA: nothing"
    );
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES + 2 * 31 + 1),
        (status::SUCCESS, 0)
    );
    // Past the 32 fields: no such element.
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_LEAVES + 32).0,
        status::METADATA_FIELD_ID_INCORRECT
    );
    assert_eq!(
        sys_rd(&m, sys::CPUID_CONFIG_VALUES + 64).0,
        status::METADATA_FIELD_ID_INCORRECT
    );
}

fn mng_init_refuses_a_bit_neither_configurable_nor_allowed(line: ModuleLine) {
    let env = HostEnv::with_capacity(128);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    // (7,0).EBX bit 0 (FSGSBASE) is native, not configurable.
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[5].ebx = 1);
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(7, 0)));
    // 0x80000008 EAX[23:16] (the guest physical address width) is not configurable either.
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[9].eax = 48 << 16);
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(0x8000_0008, NA)));
    // Leaf 0x1F sub-leaf 5 (the last configurable entry) EDX.
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[17].edx = 1);
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(0x1f, 5)));
    // The checks run in Intel's lookup order: leaf 1 before leaf 7.
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        p.cpuid_config_vals[5].ebx = 1;
        p.cpuid_config_vals[0].ecx = 1; // SSE3: native
    });
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(1, NA)));
    // Nothing was initialised (MNG.RD refuses an uninitialised TD): the TD takes a good
    // configuration, CONFIG_DIRECT and ALLOW_DIRECT bits set; RCX is 0 on success.
    let (st, _) = call(&m, leaf::MNG_RD, tdr_pa(&td), md::td::OP_STATE, 0, 0);
    assert_eq!(st, status::OP_STATE_INCORRECT);
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        p.cpuid_config_vals[1] = tdx::abi::td_params::CpuidConfig {
            eax: 0x1c00_4121,
            ebx: 0x02c0_0000,
            ecx: 0x3f,
            edx: 0,
        };
        p.cpuid_config_vals[5].ebx = 1 << 3; // BMI1: allow-direct
        p.cpuid_config_vals[9].eax = 0x34;
    });
    assert_eq!((st, rcx), (status::SUCCESS, 0));
    assert_eq!(op_state_of(&m, &td), op_state::INITIALIZED as u64);
}

fn mng_init_takes_only_the_platform_fms_for_a_non_migratable_td(line: ModuleLine) {
    let env = HostEnv::with_capacity(128);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        p.cpuid_config_vals[0].eax = PLATFORM_FMS + 1
    });
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(1, NA)));
    let (st, _) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[0].eax = PLATFORM_FMS);
    assert_eq!(st, status::SUCCESS);
}

fn mng_init_wants_hle_and_rtm_together(line: ModuleLine) {
    let env = HostEnv::with_capacity(128);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    const HLE: u32 = 1 << 4;
    const RTM: u32 = 1 << 11;
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[5].ebx = HLE);
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(7, 0)));
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[5].ebx = RTM);
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(7, 0)));
    let (st, _) = mng_init(&m, &env, &td, |p| p.cpuid_config_vals[5].ebx = HLE | RTM);
    assert_eq!(st, status::SUCCESS);
}

fn mng_init_checks_cpuid_between_reserved_2_and_reserved_3(line: ModuleLine) {
    let env = HostEnv::with_capacity(128);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
    let bad_cpuid = |p: &mut TdParams| p.cpuid_config_vals[5].ebx = 1;
    let rdx = status::OPERAND_INVALID | tdx::Operand::RDX.0 as u64;
    // TSC_FREQUENCY and reserved_2 are checked first: their status, RCX 0.
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        bad_cpuid(p);
        p.tsc_frequency = 3;
    });
    assert_eq!(
        (st, rcx),
        (
            status::OPERAND_INVALID | operand::td_params::TSC_FREQUENCY as u64,
            0
        )
    );
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        bad_cpuid(p);
        p.reserved_2[0] = 1;
    });
    assert_eq!((st, rcx), (rdx, 0));
    // reserved_3 comes after the CPUID configuration.
    let (st, rcx) = mng_init(&m, &env, &td, |p| {
        bad_cpuid(p);
        p.reserved_3[0] = 1;
    });
    assert_eq!((st, rcx), (CPUID_REFUSED, leaf_subleaf(7, 0)));
    let (st, rcx) = mng_init(&m, &env, &td, |p| p.reserved_3[479] = 1);
    assert_eq!((st, rcx), (rdx, 0));
}

testkit::per_module_line!(
    sys_rd_reports_the_configurable_cpuid_leaves,
    mng_init_refuses_a_bit_neither_configurable_nor_allowed,
    mng_init_takes_only_the_platform_fms_for_a_non_migratable_td,
    mng_init_wants_hle_and_rtm_together,
    mng_init_checks_cpuid_between_reserved_2_and_reserved_3,
);
