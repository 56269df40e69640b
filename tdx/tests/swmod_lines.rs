// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of what differs between the module lines the software TDX module emulates
//! (`docs/tdx-module-rules.md` §12): for every difference, one answer per line, exact.
//!
//! 1.5 is Intel's `TDX_1.5.01` (`72d8cff…`), 2.0 is 2.0.08 (`1666adc…`). Each test runs the same
//! host sequence against both lines and asserts each line's own answer, so a test that passes
//! only because the lines agree by accident would have to get both answers right.

mod common;

use common::*;
use mmu::{Gpa, Hpa};
use tdx::abi::{self, leaf, md, operand, sept_state, status, SeptLevel};
use tdx::swmod::ModuleLine::{self, V1_5, V2_0};
use tdx::{Tdcx, Tdx};
use testkit::td::{build_td, sw_module_on, td_params, Stage};
use testkit::HostEnv;

/// R, W, Xs: the permissions both lines write.
const RWX: u64 = 0x7;
/// MT = WB, IPAT, PS: what a MAPPED leaf carries besides permissions and address.
const MT_IPAT_PS: u64 = 6 << 3 | 1 << 6 | 1 << 7;

/// The permission bits each line writes and reports: Xu only in 2.0.
fn perms(line: ModuleLine) -> u64 {
    match line {
        V1_5 => RWX,
        V2_0 => RWX | XU,
    }
}

fn sys(tdx: &T, field: u64) -> u64 {
    tdx.sys_rd(field)
        .unwrap_or_else(|e| panic!("SYS.RD {field:#x}: {e:?}"))
}

#[test]
fn sys_rd_version_fields_follow_the_line() {
    // (line, MAJOR, MINOR, UPDATE, INTERNAL, BUILD_NUM, BUILD_DATE): §12.
    for (line, want) in [
        (V1_5, [1, 5, 1, 0, 0, 20240222]),
        (V2_0, [2, 0, 8, 0, 882, 20250325]),
    ] {
        let env = HostEnv::with_capacity(64);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let got = [
            md::sys::MAJOR_VERSION,
            md::sys::MINOR_VERSION,
            md::sys::UPDATE_VERSION,
            md::sys::INTERNAL_VERSION,
            md::sys::BUILD_NUM,
            md::sys::BUILD_DATE,
        ]
        .map(|f| sys(&tdx, f));
        assert_eq!(got, want, "{line:?}");
        let v = line.version();
        assert_eq!(
            [
                v.major as u64,
                v.minor as u64,
                v.update as u64,
                v.internal as u64,
                v.build_num as u64,
                v.build_date as u64
            ],
            want,
            "{line:?}: ModuleLine::version"
        );
    }
    // The ids are Intel's (`global_sys_fields_lookup.h`).
    assert_eq!(
        [
            md::sys::BUILD_DATE,
            md::sys::BUILD_NUM,
            md::sys::MINOR_VERSION,
            md::sys::MAJOR_VERSION,
            md::sys::UPDATE_VERSION,
            md::sys::INTERNAL_VERSION
        ],
        [
            0x8800_0002_0000_0001,
            0x8800_0001_0000_0002,
            0x0800_0001_0000_0003,
            0x0800_0001_0000_0004,
            0x0800_0001_0000_0005,
            0x0800_0001_0000_0006
        ]
    );
}

#[test]
fn sys_rd_td_sizes_and_fixed_bits_follow_the_line() {
    // (line, TDCS_BASE_SIZE, ATTRIBUTES_FIXED0, CONFIG_FLAGS_FIXED0)
    for (line, tdcs, attr0, flags0) in [
        (V1_5, 6 * 4096, 0x8000_0000_7000_0001, 0x7),
        (V2_0, 9 * 4096, 0x8000_0000_7001_0041, 0x1F),
    ] {
        let env = HostEnv::with_capacity(64);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        assert_eq!(sys(&tdx, md::TDCS_BASE_SIZE), tdcs, "{line:?}");
        assert_eq!(sys(&tdx, md::sys::ATTRIBUTES_FIXED0), attr0, "{line:?}");
        assert_eq!(sys(&tdx, md::sys::CONFIG_FLAGS_FIXED0), flags0, "{line:?}");
        // Unchanged between the lines.
        assert_eq!(sys(&tdx, md::TDVPS_BASE_SIZE), 6 * 4096, "{line:?}");
        assert_eq!(sys(&tdx, md::TDR_BASE_SIZE), 4096, "{line:?}");
        assert_eq!(
            line.min_tdcs_pages() * 4096,
            tdcs,
            "{line:?}: min_tdcs_pages"
        );
    }
}

#[test]
fn sys_rd_table_of_1_5_has_no_max_vcpus_per_td_nor_min_virt_maxpa() {
    const MIN_VIRT_MAXPA: u64 = 0x9900_0000_0000_0009;
    const CPUID_CONFIG_LEAVES: u64 = 0x9900_0003_0000_0400;
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(64);
        let m = sw_module_on(&env, line);
        // RDX after reading CONFIG_FLAGS_FIXED1: the next entry of the line's table.
        let (st, a) = call(&m, leaf::SYS_RD, 0, md::sys::CONFIG_FLAGS_FIXED1, 0, 0);
        assert_eq!((st, a.r8), (status::SUCCESS, 0), "{line:?}");
        let (max_vcpus, next) = match line {
            V1_5 => (
                (status::METADATA_FIELD_ID_INCORRECT, 0, md::FIELD_ID_NA),
                CPUID_CONFIG_LEAVES,
            ),
            V2_0 => (
                (
                    status::SUCCESS,
                    abi::MAX_VCPUS_PER_TD as u64,
                    MIN_VIRT_MAXPA,
                ),
                md::MAX_VCPUS_PER_TD,
            ),
        };
        assert_eq!(
            a.rdx, next,
            "{line:?}: next field after CONFIG_FLAGS_FIXED1"
        );
        let (st, a) = call(&m, leaf::SYS_RD, 0, md::MAX_VCPUS_PER_TD, 0, 0);
        assert_eq!((st, a.r8, a.rdx), max_vcpus, "{line:?}: MAX_VCPUS_PER_TD");
        // MIN_VIRT_MAXPA: unknown to 1.5; in 2.0's table but without a value here.
        let (st, _) = call(&m, leaf::SYS_RD, 0, MIN_VIRT_MAXPA, 0, 0);
        assert_eq!(st, status::METADATA_FIELD_ID_INCORRECT, "{line:?}");
    }
}

#[test]
fn tdcs_page_bounds_follow_the_line() {
    for (line, min, max) in [(V1_5, 6, 9), (V2_0, 9, 12)] {
        assert_eq!((line.min_tdcs_pages(), line.max_tdcs_pages()), (min, max));
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 0, Stage::KeysConfigured);
        let params = td_params(&env, false, 8);
        for _ in 0..min - 1 {
            tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(page(&env))))
                .expect("MNG.ADDCX");
        }
        // One page short of the line's minimum: every TD-state check refuses.
        assert_eq!(
            call(
                &m,
                leaf::MNG_INIT,
                tdr_pa(&td),
                params.pfn().hpa().raw(),
                0,
                0
            )
            .0,
            status::TDCS_NOT_ALLOCATED,
            "{line:?}: {} pages",
            min - 1
        );
        for _ in min - 1..max {
            tdx.mng_addcx(td.tdr, Tdcx::new(Hpa::new(page(&env))))
                .expect("MNG.ADDCX");
        }
        let extra = page(&env);
        assert_eq!(
            call(&m, leaf::MNG_ADDCX, extra, tdr_pa(&td), 0, 0).0,
            status::TDCX_NUM_INCORRECT,
            "{line:?}: page {}",
            max + 1
        );
        assert_eq!(m.pamt_info(pfn(extra)), Some(nda()));
        assert_eq!(chldcnt(&m, &td), max, "{line:?}");
        tdx.mng_init(td.tdr, params.pfn().hpa()).expect("MNG.INIT");
    }
}

#[test]
fn sept_permissions_follow_the_line() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(512);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
        add_tables(&tdx, &env, td.tdr, 0, 1);
        let p = perms(line);
        // SEPT.ADD's non-leaf entry: the permissions and PS (clear) only.
        assert_eq!(
            sept_rd(&tdx, &td, 0, 1),
            (p, info(1, sept_state::NL_MAPPED)),
            "{line:?}: non-leaf"
        );
        // PAGE.ADD's leaf.
        let mapped = add_page(&tdx, &env, td.tdr, 0x1000, 3).pfn().hpa().raw();
        let leaf_entry = p | MT_IPAT_PS | mapped | SVE;
        assert_eq!(
            sept_rd(&tdx, &td, 0x1000, 0),
            (leaf_entry, info(0, sept_state::MAPPED)),
            "{line:?}: leaf"
        );
        // The same entry in an error's details: PAGE.ADD over it.
        let (st, a) = call(
            &m,
            leaf::MEM_PAGE_ADD,
            gl(0x1000, 0),
            tdr_pa(&td),
            page(&env),
            page(&env),
        );
        assert_eq!(
            (st, a.rcx, a.rdx),
            (
                with(status::EPT_ENTRY_STATE_INCORRECT, operand::RCX),
                leaf_entry,
                info(0, sept_state::MAPPED)
            ),
            "{line:?}: details"
        );
        // BLOCK clears the permissions, UNBLOCK gives back the line's.
        tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .expect("BLOCK");
        assert_eq!(
            sept_rd(&tdx, &td, 0x1000, 0).0,
            MT_IPAT_PS | mapped | SVE,
            "{line:?}: blocked"
        );
        tdx.mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .expect("UNBLOCK");
        assert_eq!(sept_rd(&tdx, &td, 0x1000, 0).0, leaf_entry, "{line:?}");
        // A non-leaf blocked and unblocked.
        tdx.mem_range_block(td.tdr, Gpa::new(0), SeptLevel::L2M)
            .expect("BLOCK");
        assert_eq!(
            sept_rd(&tdx, &td, 0, 1),
            (0, info(1, sept_state::NL_BLOCKED))
        );
        tdx.mem_range_unblock(td.tdr, Gpa::new(0), SeptLevel::L2M)
            .expect("UNBLOCK");
        assert_eq!(
            sept_rd(&tdx, &td, 0, 1),
            (p, info(1, sept_state::NL_MAPPED))
        );
    }
}

#[test]
fn vcpu_state_incorrect_operand_follows_the_line() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
        let v = td.vcpus[0].hpa().raw();
        // The vCPU is READY (2): 2.0 names the state in the operand field, 1.5 does not.
        let want = match line {
            V1_5 => status::VCPU_STATE_INCORRECT,
            V2_0 => status::VCPU_STATE_INCORRECT | abi::vcpu_state::READY as u64,
        };
        assert_eq!(
            call(&m, leaf::VP_ADDCX, page(&env), v, 0, 0).0,
            want,
            "{line:?}: VP.ADDCX"
        );
        assert_eq!(
            call(&m, leaf::VP_INIT, v, 0, 0, 0).0,
            want,
            "{line:?}: VP.INIT"
        );
    }
}

#[test]
fn unblock_tracking_error_operand_follows_the_line() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let (td, _, _) = td_with_mapped_and_pending(&tdx, &env, 1, true);
        tdx.mem_range_block(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .expect("BLOCK");
        // No TRACK since the block: not tracked.
        let (st, a) = call(
            &m,
            leaf::MEM_RANGE_UNBLOCK,
            gl(0x1000, 0),
            tdr_pa(&td),
            0,
            0,
        );
        let op = match line {
            V1_5 => operand::SEPT_TREE,
            V2_0 => operand::RCX,
        };
        assert_eq!(
            (st, a.rcx, a.rdx),
            (with(status::TLB_TRACKING_NOT_DONE, op), 0, 0),
            "{line:?}"
        );
        // PAGE.REMOVE's tracking error names RCX on both lines.
        let (st, _) = call(&m, leaf::MEM_PAGE_REMOVE, gl(0x1000, 0), tdr_pa(&td), 0, 0);
        assert_eq!(
            st,
            with(status::TLB_TRACKING_NOT_DONE, operand::RCX),
            "{line:?}"
        );
        tdx.mem_track(td.tdr).expect("TRACK");
        tdx.mem_range_unblock(td.tdr, Gpa::new(0x1000), SeptLevel::L4K)
            .expect("UNBLOCK after TRACK");
    }
}

#[test]
fn vp_init_version_1_follows_the_line() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
        let v = new_vcpu(&tdx, &env, td.tdr, tdx::swmod::TDVPS_PAGES);
        let args = tdx::SeamArgs {
            rcx: v.hpa().raw(),
            r8: 7,
            ..tdx::SeamArgs::default()
        };
        let (st, _) = seam(&m, leaf::VP_INIT, 1, args);
        match line {
            // The 1.5.01 dispatcher has no VP.INIT version 1.
            V1_5 => {
                assert_eq!(st, with(status::OPERAND_INVALID, operand::RAX));
                assert_eq!(m.calls(leaf::VP_INIT), 1);
                // Version 0 still works.
                tdx.vp_init(v, 0).expect("VP.INIT v0");
            }
            V2_0 => assert_eq!(st, status::SUCCESS),
        }
    }
}

/// One MNG.INIT whose answer differs between the lines.
struct InitCase {
    what: &'static str,
    /// TD_PARAMS words to change.
    edits: &'static [(usize, u64)],
    /// ORed into RCX (the TDR address).
    rcx_bits: u64,
    v1_5: u64,
    v2_0: u64,
}

#[test]
fn mng_init_td_params_rules_follow_the_line() {
    const ICSSD: u64 = 1 << 16;
    const MAXPA_VIRT: u64 = 1 << 3;
    let invalid = |op: u32| with(status::OPERAND_INVALID, op);
    let cases = [
        InitCase {
            what: "MAX_VCPUS 1377",
            edits: &[(2, 1377)],
            rcx_bits: 0,
            v1_5: status::SUCCESS,
            v2_0: invalid(operand::td_params::MAX_VCPUS),
        },
        InitCase {
            what: "ATTRIBUTES.ICSSD",
            edits: &[(0, ICSSD)],
            rcx_bits: 0,
            v1_5: invalid(operand::td_params::ATTRIBUTES),
            v2_0: status::SUCCESS,
        },
        InitCase {
            what: "CONFIG_FLAGS.MAXPA_VIRT",
            edits: &[(4, MAXPA_VIRT)],
            rcx_bits: 0,
            v1_5: invalid(operand::td_params::EXEC_CONTROLS),
            v2_0: status::SUCCESS,
        },
        InitCase {
            what: "RCX bit 0",
            edits: &[],
            rcx_bits: 1,
            v1_5: invalid(operand::RCX),
            v2_0: status::SUCCESS,
        },
    ];
    for c in cases {
        for line in ModuleLine::ALL {
            let env = HostEnv::with_capacity(256);
            let m = sw_module_on(&env, line);
            let tdx = Tdx::new(&m);
            let td = build_td(&tdx, &env, 1, 0, Stage::TdcsAdded);
            let params = td_params(&env, false, 8);
            for &(i, v) in c.edits {
                params.words()[i].store(v, std::sync::atomic::Ordering::Relaxed);
            }
            let (st, a) = call(
                &m,
                leaf::MNG_INIT,
                tdr_pa(&td) | c.rcx_bits,
                params.pfn().hpa().raw(),
                0,
                0,
            );
            let want = match line {
                V1_5 => c.v1_5,
                V2_0 => c.v2_0,
            };
            assert_eq!((st, a.rcx), (want, 0), "{line:?}: {}", c.what);
        }
    }
}

#[test]
fn the_host_sequence_is_the_same_on_both_lines() {
    // testkit's build_td is the host's sequence: it reads TDCS_BASE_SIZE and adds that many
    // pages; nothing else depends on the line.
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
        assert_eq!(m.line(), line);
        assert_eq!(
            chldcnt(&m, &td),
            line.min_tdcs_pages() + 2 * tdx::swmod::TDVPS_PAGES,
            "{line:?}"
        );
    }
}
