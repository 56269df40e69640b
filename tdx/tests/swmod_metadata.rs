// SPDX-License-Identifier: GPL-2.0-only
//! Spec tests of the software TDX module's metadata leaves TDH.MNG.RD (11), TDH.MNG.WR (13),
//! TDH.VP.RD (26) and TDH.VP.WR (43), written from Intel's sources as summarised in
//! `docs/tdx-module-rules.md` §6 ("TDH.MNG.RD/WR", "TDH.VP.RD/WR") and §11 (metadata), not from
//! the implementation.
//!
//! Field ids are Intel's (`tdx::abi::md::td`, `tdx::abi::md::vp`). Every refusal is checked
//! with its exact status (class and operand id) and with the output registers the real module
//! leaves: R8 = 0, RDX untouched at version 0 and `MD_FIELD_ID_NA` at version 1 of the reads.

mod common;

use common::*;
// A write leaf (MNG.WR or VP.WR) is a plain version-0 call: `wr(m, leaf, pa, field, value,
// mask)` with RCX = the TDR/TDVPR, RDX = the field id, R8 = the value, R9 = the write mask.
use common::call as wr;
use mmu::env::Frame;
use mmu::Gpa;
use sha2::{Digest, Sha384};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use tdx::abi::md::{self, td as mtd, vp as mvp};
use tdx::abi::td_params::{eptp_controls, TdParams};
use tdx::abi::{leaf, op_state, operand, status, vcpu_state, SeptLevel};
use tdx::swmod::TDVPS_PAGES;
use tdx::{SeamArgs, Tdvpr, Tdx};
use testkit::td::{build_td, host_page, sw_module, Stage, SwModule, TestTd};
use testkit::HostEnv;

/// Arena pages of most tests.
const CAP: usize = 2048;

/// Garbage the leaves must overwrite (R8) or leave alone (RDX at version 0).
const JUNK: u64 = 0x5A5A_5A5A_5A5A_5A5A;

/// `ATTRIBUTES.DEBUG`.
const DEBUG: u64 = 1;
/// `ATTRIBUTES.SEPT_VE_DISABLE`.
const SEPT_VE_DISABLE: u64 = 1 << 28;

// ---- helpers --------------------------------------------------------------------------------

/// A read leaf (MNG.RD or VP.RD) at `version`: RCX = the TDR/TDVPR, RDX = the field id; R8
/// holds junk on input.
fn rd(m: &SwModule<'_>, leaf_no: u16, version: u8, pa: u64, field: u64) -> (u64, SeamArgs) {
    seam(m, leaf_no, version, args(pa, field, JUNK, JUNK))
}

/// MNG.RD version 0 of a field that must be readable: its value.
fn mng_rd_ok(m: &SwModule<'_>, td: &TestTd, field: u64) -> u64 {
    let (st, a) = rd(m, leaf::MNG_RD, 0, tdr_pa(td), field);
    assert_eq!(st, status::SUCCESS, "MNG.RD {field:#x}");
    assert_eq!(
        a.rdx, field,
        "MNG.RD {field:#x}: version 0 leaves RDX alone"
    );
    a.r8
}

/// VP.RD version 0 of a field that must be readable: its value.
fn vp_rd_ok(m: &SwModule<'_>, v: Tdvpr, field: u64) -> u64 {
    let (st, a) = rd(m, leaf::VP_RD, 0, v.hpa().raw(), field);
    assert_eq!(st, status::SUCCESS, "VP.RD {field:#x}");
    assert_eq!(a.rdx, field, "VP.RD {field:#x}: version 0 leaves RDX alone");
    a.r8
}

/// Asserts that a version-0 read was refused with `want`: R8 cleared, RDX untouched.
fn assert_rd_refused(out: (u64, SeamArgs), field: u64, want: u64, what: &str) {
    let (st, a) = out;
    assert_eq!(st, want, "{what} {field:#x}: status");
    assert_eq!(a.r8, 0, "{what} {field:#x}: R8 cleared");
    assert_eq!(
        a.rdx, field,
        "{what} {field:#x}: RDX untouched at version 0"
    );
}

/// TD_PARAMS: `attributes`, `xfam`, `max_vcpus`, 4-level EPT, GPAW 48, 2.5 GHz.
fn params(env: &HostEnv, attributes: u64, xfam: u64, max_vcpus: u16) -> Frame {
    let f = host_page(env);
    TdParams {
        attributes,
        xfam,
        max_vcpus,
        eptp_controls: eptp_controls(4),
        tsc_frequency: 100,
        ..TdParams::ZERO
    }
    .write_to(&f);
    f
}

/// A TD initialised with the given ATTRIBUTES and XFAM (MAX_VCPUS 4) and `vcpus` vCPUs whose
/// VP.INIT RDX is `0x1000 + index`.
fn td_with(tdx: &T, env: &HostEnv, hkid: u16, attributes: u64, xfam: u64, vcpus: usize) -> TestTd {
    let mut td = build_td(tdx, env, hkid, 0, Stage::TdcsAdded);
    let p = params(env, attributes, xfam, 4);
    tdx.mng_init(td.tdr, p.pfn().hpa()).expect("MNG.INIT");
    for i in 0..vcpus {
        let v = new_vcpu(tdx, env, td.tdr, TDVPS_PAGES);
        tdx.vp_init(v, 0x1000 + i as u64).expect("VP.INIT");
        td.vcpus.push(v);
    }
    td
}

/// VP.FLUSH of every vCPU, VPFLUSHDONE: the TD is BLOCKED.
fn flush(tdx: &T, td: &TestTd) {
    for v in &td.vcpus {
        tdx.vp_flush(*v).expect("VP.FLUSH");
    }
    tdx.mng_vpflushdone(td.tdr).expect("VPFLUSHDONE");
}

/// Follows the RDX chain of a version-1 read leaf from the null field id; returns every id
/// the chain named, in order, with the value read.
fn chain(m: &SwModule<'_>, leaf_no: u16, pa: u64) -> Vec<(u64, u64)> {
    let (st, a) = rd(m, leaf_no, 1, pa, md::FIELD_ID_NA);
    assert_eq!(
        st,
        status::METADATA_FIRST_FIELD_ID_IN_CONTEXT,
        "{}: null field id",
        leaf::name(leaf_no)
    );
    assert_eq!(a.r8, 0, "{}: no value for the null id", leaf::name(leaf_no));
    let mut out = Vec::new();
    let mut next = a.rdx;
    while next != md::FIELD_ID_NA {
        let (st, a) = rd(m, leaf_no, 1, pa, next);
        assert_eq!(st, status::SUCCESS, "{}: {next:#x}", leaf::name(leaf_no));
        out.push((next, a.r8));
        assert!(out.len() < 100, "the chain ends");
        next = a.rdx;
    }
    out
}

/// The element ids of a multi-element field.
fn elements(field: u64, n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| md::element(field, i))
}

/// Every TD-scope field id the software module knows, each element.
fn td_ids() -> Vec<u64> {
    let mut v = vec![
        mtd::HKID,
        mtd::NUM_VCPUS,
        mtd::NUM_ASSOC_VCPUS,
        mtd::OP_STATE,
        mtd::ATTRIBUTES,
        mtd::XFAM,
        mtd::MAX_VCPUS,
        mtd::VIRTUAL_TSC,
        mtd::TD_EPOCH,
    ];
    v.extend(elements(mtd::MRTD, 6));
    v.extend(elements(mtd::RTMR, 24));
    v
}

const VP_IDS: [u64; 4] = [
    mvp::RCX,
    mvp::VCPU_STATE,
    mvp::VCPU_INDEX,
    mvp::NUM_TDVPS_PAGES,
];

/// Field ids that `md_check_as_single_element_id` refuses: each reserved bit, and a
/// sequence-header-only field, set on an otherwise valid id.
fn malformed(base: u64) -> Vec<u64> {
    let mut v: Vec<u64> = [24u32, 31, 47, 49, 55, 62]
        .iter()
        .map(|&b| base | 1 << b)
        .collect();
    v.push(base | 1 << 34); // LAST_ELEMENT_IN_FIELD = 1
    v.push(base | 1 << 38); // LAST_FIELD_IN_SEQUENCE = 1
    v.push(base | md::LAST_FIELD_MASK);
    // The null id is only special at version 1.
    v.push(md::FIELD_ID_NA);
    v
}

// =============================================================================================
// Field ids
// =============================================================================================

#[test]
fn field_ids_are_intels_encoding() {
    // Context code 1 (TD) in bits 54:52, class in 61:56, element size in 33:32.
    for id in td_ids() {
        assert_eq!(id & md::CONTEXT_MASK, md::CONTEXT_TD << 52, "{id:#x}");
        assert_eq!(id & md::RESERVED_MASK, 0, "{id:#x}");
    }
    for id in VP_IDS {
        assert_eq!(id & md::CONTEXT_MASK, md::CONTEXT_VP << 52, "{id:#x}");
    }
    // Spot checks against tdr_tdcs_fields_lookup.h / tdvps_fields_lookup.h.
    assert_eq!(mtd::ATTRIBUTES, 0x1110_0003_0000_0000);
    assert_eq!(mtd::MRTD >> md::CLASS_SHIFT & 0x3F, 19, "measurement class");
    assert_eq!(mtd::OP_STATE >> md::ELEMENT_SIZE_SHIFT & 3, 2, "32-bit");
    assert_eq!(mvp::VCPU_STATE >> md::ELEMENT_SIZE_SHIFT & 3, 0, "8-bit");
    assert_eq!(md::element(mtd::MRTD, 5), 0x1310_0003_0000_0005);
    assert_eq!(
        md::with_context(mtd::ATTRIBUTES, md::CONTEXT_VP),
        0x1120_0003_0000_0000
    );
    assert_eq!(status::METADATA_FIELD_ID_INCORRECT, 0xC000_0C00_0000_0000);
    assert_eq!(status::METADATA_FIELD_NOT_WRITABLE, 0xC000_0C01_0000_0000);
    assert_eq!(status::METADATA_FIELD_NOT_READABLE, 0xC000_0C02_0000_0000);
    assert_eq!(
        status::METADATA_FIELD_VALUE_NOT_VALID,
        0xC000_0C03_0000_0000
    );
    assert_eq!(
        status::METADATA_FIRST_FIELD_ID_IN_CONTEXT,
        0x0000_0C0B_0000_0000
    );
}

// =============================================================================================
// TDH.MNG.RD
// =============================================================================================

#[test]
fn mng_rd_reads_every_modelled_td_field() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let attributes = SEPT_VE_DISABLE;
    let xfam = 0x7;
    let td = td_with(&tdx, &env, 3, attributes, xfam, 2);
    assert_eq!(mng_rd_ok(&m, &td, mtd::HKID), 3);
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_VCPUS), 2);
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_ASSOC_VCPUS), 2);
    assert_eq!(
        mng_rd_ok(&m, &td, mtd::OP_STATE),
        op_state::INITIALIZED as u64
    );
    assert_eq!(mng_rd_ok(&m, &td, mtd::ATTRIBUTES), attributes);
    assert_eq!(mng_rd_ok(&m, &td, mtd::XFAM), xfam);
    assert_eq!(mng_rd_ok(&m, &td, mtd::MAX_VCPUS), 4);
    assert_eq!(mng_rd_ok(&m, &td, mtd::TD_EPOCH), 1, "1 after MNG.INIT");
    for id in elements(mtd::MRTD, 6) {
        assert_eq!(mng_rd_ok(&m, &td, id), 0, "MRTD is 0 before MR.FINALIZE");
    }
    tdx.mr_finalize(td.tdr).unwrap();
    assert_eq!(mng_rd_ok(&m, &td, mtd::OP_STATE), op_state::RUNNABLE as u64);
    tdx.mem_track(td.tdr).unwrap();
    assert_eq!(
        mng_rd_ok(&m, &td, mtd::TD_EPOCH),
        2,
        "MEM.TRACK advances it"
    );
}

#[test]
fn mng_rd_mrtd_elements_are_the_digest_bytes_in_memory_order() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    // One measured page: PAGE.ADD hashes its block, MR.EXTEND a block plus 256 bytes.
    for lvl in [3u8, 2, 1] {
        let gpa = 0x20_0000 & !((1u64 << (12 + 9 * lvl as u32)) - 1);
        tdx.mem_sept_add(
            td.tdr,
            Gpa::new(gpa),
            SeptLevel(lvl),
            mmu::Hpa::new(page(&env)),
        )
        .unwrap();
    }
    let src = host_page(&env);
    for (i, w) in src.words().iter().enumerate() {
        w.store(i as u64 * 0x0101_0101, Relaxed);
    }
    tdx.mem_page_add(
        td.tdr,
        Gpa::new(0x20_0000),
        mmu::Hpa::new(page(&env)),
        src.pfn().hpa(),
    )
    .unwrap();
    tdx.mr_extend(td.tdr, Gpa::new(0x20_0100)).unwrap();
    tdx.mr_finalize(td.tdr).unwrap();

    let block = |api: &str, gpa: u64| {
        let mut b = [0u8; 128];
        b[..api.len()].copy_from_slice(api.as_bytes());
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    };
    let content: Vec<u8> = (0..512u64)
        .flat_map(|i| (i * 0x0101_0101).to_le_bytes())
        .collect();
    let mut h = Sha384::new();
    h.update(block("MEM.PAGE.ADD", 0x20_0000));
    h.update(block("MR.EXTEND", 0x20_0100));
    h.update(&content[0x100..0x200]);
    let want = h.finalize();

    let read: Vec<u8> = elements(mtd::MRTD, 6)
        .flat_map(|id| mng_rd_ok(&m, &td, id).to_le_bytes())
        .collect();
    assert_eq!(read.as_slice(), want.as_slice());
    assert_eq!(
        read.as_slice(),
        m.mrtd(td.tdr.hpa().pfn()).unwrap().as_slice()
    );
}

/// CPUID_VALUES field code of `leaf`/`subleaf` (`None`: no sub-leaf), element `elem`: Intel's
/// encoding (KVM's `tdx_read_cpuid`).
fn cpuid_code(leaf: u32, subleaf: Option<u32>, elem: u64) -> u64 {
    let sub = subleaf.map_or(0x1fe, |s| u64::from(s & 0x7f) << 1);
    u64::from(leaf >> 31) << 16 | u64::from(leaf & 0x7f) << 9 | sub | elem
}

/// The CPUID_VALUES ids of the leaves the software module virtualizes (its docs list them),
/// in field-code order.
fn cpuid_value_ids() -> Vec<u64> {
    let mut leaves: Vec<(u32, Option<u32>)> = vec![(0, None), (1, None)];
    leaves.extend((0..4).map(|s| (4, Some(s))));
    leaves.extend((0..3).map(|s| (7, Some(s))));
    leaves.extend([(0xa, None), (0xd, Some(0)), (0x15, None), (0x1c, None)]);
    leaves.extend((0..6).map(|s| (0x1f, Some(s))));
    leaves.extend([(0x23, Some(0)), (0x8000_0000, None), (0x8000_0001, None)]);
    leaves.push((0x8000_0008, None));
    let mut codes: Vec<u64> = leaves
        .iter()
        .flat_map(|&(l, s)| [cpuid_code(l, s, 0), cpuid_code(l, s, 1)])
        .collect();
    codes.sort_unstable();
    codes.into_iter().map(|c| mtd::CPUID_VALUES | c).collect()
}

#[test]
fn mng_rd_reads_the_virtualized_cpuid_by_leaf_and_sub_leaf() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, 0, 3, 0);
    // Leaf 0: max basic leaf 0x23 in EAX, "GenuineIntel" in EBX, EDX, ECX.
    let ebx_eax = mng_rd_ok(&m, &td, mtd::CPUID_VALUES | cpuid_code(0, None, 0));
    assert_eq!(ebx_eax, 0x756e_6547_u64 << 32 | 0x23);
    let edx_ecx = mng_rd_ok(&m, &td, mtd::CPUID_VALUES | cpuid_code(0, None, 1));
    assert_eq!(edx_ecx, 0x4965_6e69_u64 << 32 | 0x6c65_746e);
    // Leaf 0x15: EBX is TD_PARAMS.TSC_FREQUENCY (100, in 25 MHz units), EAX 1.
    let ebx_eax = mng_rd_ok(&m, &td, mtd::CPUID_VALUES | cpuid_code(0x15, None, 0));
    assert_eq!(ebx_eax, 100 << 32 | 1);
    // A leaf the module does not virtualize, a sub-leaf of a leaf without sub-leaves, and a
    // leaf given without its sub-leaf: FIELD_ID_INCORRECT.
    for code in [
        cpuid_code(0x3, None, 0),
        cpuid_code(0x15, Some(0), 0),
        cpuid_code(0x7, None, 0),
    ] {
        let (st, a) = rd(&m, leaf::MNG_RD, 0, tdr_pa(&td), mtd::CPUID_VALUES | code);
        assert_eq!(st, status::METADATA_FIELD_ID_INCORRECT, "{code:#x}");
        assert_eq!(a.r8, 0);
    }
}

#[test]
fn mng_rd_version_1_chains_rdx_through_the_host_readable_fields() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, 0, 3, 1);
    let mut want: Vec<u64> = vec![
        mtd::HKID,
        mtd::NUM_VCPUS,
        mtd::NUM_ASSOC_VCPUS,
        mtd::OP_STATE,
        mtd::ATTRIBUTES,
        mtd::XFAM,
        mtd::MAX_VCPUS,
        // VIRTUAL_TSC is never host-readable: skipped.
        mtd::TD_EPOCH,
    ];
    want.extend(elements(mtd::MRTD, 6));
    // RTMR is readable only for a DEBUG TD: skipped. Then the CPUID values of every leaf the
    // module virtualizes, in field-code order, two elements each.
    let cpuid = cpuid_value_ids();
    let got: Vec<u64> = chain(&m, leaf::MNG_RD, tdr_pa(&td))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut want_prod = want.clone();
    want_prod.extend(&cpuid);
    assert_eq!(got, want_prod);

    // A DEBUG TD's chain goes through RTMR's 4 × 6 elements before the CPUID values.
    let dbg = td_with(&tdx, &env, 2, DEBUG, 3, 1);
    let got = chain(&m, leaf::MNG_RD, tdr_pa(&dbg));
    let mut want_dbg = want.clone();
    want_dbg.extend(elements(mtd::RTMR, 24));
    want_dbg.extend(&cpuid);
    assert_eq!(got.iter().map(|&(id, _)| id).collect::<Vec<_>>(), want_dbg);
    assert!(
        got.iter().skip(want.len()).take(24).all(|&(_, v)| v == 0),
        "RTMRs are zero: no guest extends them"
    );

    // The value comes with the next id.
    let (st, a) = rd(&m, leaf::MNG_RD, 1, tdr_pa(&td), mtd::MAX_VCPUS);
    assert_eq!((st, a.r8, a.rdx), (status::SUCCESS, 4, mtd::TD_EPOCH));
    // The next element of the same field keeps the caller's id, context code replaced.
    let caller = md::with_context(md::element(mtd::MRTD, 2), md::CONTEXT_VP) | md::WRITE_MASK_VALID;
    let (st, a) = rd(&m, leaf::MNG_RD, 1, tdr_pa(&td), caller);
    assert_eq!(st, status::SUCCESS);
    assert_eq!(
        a.rdx,
        md::element(mtd::MRTD, 3) | md::WRITE_MASK_VALID,
        "next element: field code + 1"
    );
    // At version 0 RDX is left alone.
    let (st, a) = rd(&m, leaf::MNG_RD, 0, tdr_pa(&td), mtd::MAX_VCPUS);
    assert_eq!((st, a.r8, a.rdx), (status::SUCCESS, 4, mtd::MAX_VCPUS));
}

#[test]
fn mng_rd_version_1_failures_leave_rdx_na_and_version_2_is_refused() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, 0, 3, 0);
    for (field, want) in [
        (mtd::VIRTUAL_TSC, status::METADATA_FIELD_NOT_READABLE),
        (mtd::RTMR, status::METADATA_FIELD_NOT_READABLE),
        (mtd::MRTD | 1 << 24, status::METADATA_FIELD_ID_INCORRECT),
        (
            md::element(mtd::MRTD, 6),
            status::METADATA_FIELD_ID_INCORRECT,
        ),
    ] {
        let (st, a) = rd(&m, leaf::MNG_RD, 1, tdr_pa(&td), field);
        assert_eq!((st, a.r8, a.rdx), (want, 0, md::FIELD_ID_NA), "{field:#x}");
    }
    // Version 2: refused before the TDR is looked at, RDX already set to NA.
    for pa in [tdr_pa(&td), 0] {
        let (st, a) = rd(&m, leaf::MNG_RD, 2, pa, mtd::HKID);
        assert_eq!(
            (st, a.r8, a.rdx),
            (
                with(status::OPERAND_INVALID, operand::RAX),
                0,
                md::FIELD_ID_NA
            )
        );
    }
    // MNG.WR has no version 1 (dispatcher).
    let (st, _) = seam(&m, leaf::MNG_WR, 1, args(tdr_pa(&td), mtd::HKID, 0, 0));
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RAX));
}

#[test]
fn mng_rd_refuses_malformed_and_unknown_field_ids() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, DEBUG, 3, 0);
    let t = tdr_pa(&td);
    let incorrect = status::METADATA_FIELD_ID_INCORRECT;
    for field in malformed(mtd::ATTRIBUTES) {
        assert_rd_refused(
            rd(&m, leaf::MNG_RD, 0, t, field),
            field,
            incorrect,
            "MNG.RD",
        );
    }
    for field in [
        // Gaps in Intel's table: no field has these codes.
        md::element(mtd::MRTD, 6),
        md::element(mtd::RTMR, 24),
        0x9010_0002_0000_0003, // class 16, code 3 (between NUM_ASSOC_VCPUS and OP_STATE)
        0x1110_0003_0000_0005, // class 17, code 5 (between EPTP and TSC_OFFSET)
        // A class the TD context does not have.
        0x0F10_0003_0000_0000,
        0x3F10_0003_0000_0000,
        // TDH.SYS.RD's TDCS_BASE_SIZE: context forced to TD, class 24 code 0x100 is no field.
        md::TDCS_BASE_SIZE,
        // The VP context's MAX_VCPUS_PER_TD id as well (class 25, code 8).
        md::MAX_VCPUS_PER_TD,
    ] {
        assert_rd_refused(
            rd(&m, leaf::MNG_RD, 0, t, field),
            field,
            incorrect,
            "MNG.RD",
        );
    }
}

#[test]
fn mng_rd_ignores_the_context_element_size_and_write_mask_valid_bits() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, SEPT_VE_DISABLE, 3, 0);
    let size_mask = 3u64 << md::ELEMENT_SIZE_SHIFT;
    for field in [
        md::with_context(mtd::ATTRIBUTES, md::CONTEXT_VP),
        md::with_context(mtd::ATTRIBUTES, md::CONTEXT_SYS),
        md::with_context(mtd::ATTRIBUTES, 7),
        mtd::ATTRIBUTES & !size_mask, // element size "1 byte": the field's own size is used
        mtd::ATTRIBUTES | md::WRITE_MASK_VALID,
        mtd::ATTRIBUTES | 1 << 50,    // INC_SIZE
        mtd::ATTRIBUTES & !(1 << 63), // NON_ARCH
    ] {
        let (st, a) = rd(&m, leaf::MNG_RD, 0, tdr_pa(&td), field);
        assert_eq!((st, a.r8), (status::SUCCESS, SEPT_VE_DISABLE), "{field:#x}");
    }
    // OP_STATE is a 32-bit field read with an 8-byte size code: still its value.
    let (st, a) = rd(&m, leaf::MNG_RD, 0, tdr_pa(&td), mtd::OP_STATE | size_mask);
    assert_eq!((st, a.r8), (status::SUCCESS, op_state::INITIALIZED as u64));
}

#[test]
fn mng_rd_of_a_field_the_host_may_not_read_is_not_readable() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let prod = td_with(&tdx, &env, 1, 0, 3, 0);
    let dbg = td_with(&tdx, &env, 2, DEBUG, 3, 0);
    let not_readable = status::METADATA_FIELD_NOT_READABLE;
    // VIRTUAL_TSC: read masks 0 for production and DEBUG TDs alike.
    for td in [&prod, &dbg] {
        let f = mtd::VIRTUAL_TSC;
        assert_rd_refused(
            rd(&m, leaf::MNG_RD, 0, tdr_pa(td), f),
            f,
            not_readable,
            "MNG.RD",
        );
    }
    // RTMR: production read mask 0, debug read mask all-ones.
    for id in elements(mtd::RTMR, 24) {
        assert_rd_refused(
            rd(&m, leaf::MNG_RD, 0, tdr_pa(&prod), id),
            id,
            not_readable,
            "MNG.RD",
        );
        assert_eq!(mng_rd_ok(&m, &dbg, id), 0);
    }
}

// =============================================================================================
// TDH.MNG.WR
// =============================================================================================

#[test]
fn mng_wr_every_modelled_field_is_not_writable_and_nothing_changes() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, DEBUG | SEPT_VE_DISABLE, 3, 1);
    let prod = td_with(&tdx, &env, 2, 0, 3, 1);
    for t in [&td, &prod] {
        let before: Vec<(u64, SeamArgs)> = td_ids()
            .into_iter()
            .map(|f| rd(&m, leaf::MNG_RD, 0, tdr_pa(t), f))
            .collect();
        for field in td_ids() {
            for mask in [u64::MAX, 1, 0] {
                let (st, a) = wr(&m, leaf::MNG_WR, tdr_pa(t), field, JUNK, mask);
                assert_eq!(
                    st,
                    status::METADATA_FIELD_NOT_WRITABLE,
                    "{field:#x} mask {mask:#x}"
                );
                assert_eq!(a.r8, 0, "{field:#x}: R8 cleared");
                assert_eq!(a.rdx, field, "{field:#x}: RDX untouched");
            }
        }
        let after: Vec<(u64, SeamArgs)> = td_ids()
            .into_iter()
            .map(|f| rd(&m, leaf::MNG_RD, 0, tdr_pa(t), f))
            .collect();
        assert_eq!(before, after);
    }
    // Malformed and unknown ids are refused as such, before writability.
    for field in malformed(mtd::ATTRIBUTES)
        .into_iter()
        .chain([md::element(mtd::MRTD, 6), md::TDCS_BASE_SIZE])
    {
        let (st, a) = wr(&m, leaf::MNG_WR, tdr_pa(&td), field, JUNK, u64::MAX);
        assert_eq!(
            (st, a.r8),
            (status::METADATA_FIELD_ID_INCORRECT, 0),
            "{field:#x}"
        );
    }
}

// =============================================================================================
// TD state and TDR operand checks (MNG.RD and MNG.WR)
// =============================================================================================

#[test]
fn mng_rd_wr_check_the_td_state_in_intel_order() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let created = build_td(&tdx, &env, 1, 0, Stage::Created);
    let keyed = build_td(&tdx, &env, 2, 0, Stage::KeysConfigured);
    let tdcs = build_td(&tdx, &env, 3, 0, Stage::TdcsAdded);
    let blocked = build_td(&tdx, &env, 4, 1, Stage::Runnable);
    flush(&tdx, &blocked);
    let torn = build_td(&tdx, &env, 5, 1, Stage::Runnable);
    flush(&tdx, &torn);
    tdx.phymem_cache_wb(false).unwrap();
    tdx.mng_key_freeid(torn.tdr).unwrap();
    for (td, want) in [
        (&created, status::TD_KEYS_NOT_CONFIGURED),
        (&keyed, status::TDCS_NOT_ALLOCATED),
        (&tdcs, status::OP_STATE_INCORRECT),
        (&blocked, status::TD_KEYS_NOT_CONFIGURED),
        (&torn, status::TD_KEYS_NOT_CONFIGURED),
    ] {
        // The state is checked before the field id: a malformed or unwritable id gets the
        // state's status too.
        for field in [mtd::ATTRIBUTES, mtd::ATTRIBUTES | 1 << 62, md::FIELD_ID_NA] {
            assert_rd_refused(
                rd(&m, leaf::MNG_RD, 0, tdr_pa(td), field),
                field,
                want,
                "MNG.RD",
            );
            let (st, a) = wr(&m, leaf::MNG_WR, tdr_pa(td), field, JUNK, u64::MAX);
            assert_eq!((st, a.r8), (want, 0), "MNG.WR {field:#x}");
            // Version 1 as well; RDX = NA.
            let (st, a) = rd(&m, leaf::MNG_RD, 1, tdr_pa(td), field);
            assert_eq!((st, a.r8, a.rdx), (want, 0, md::FIELD_ID_NA));
        }
    }
}

#[test]
fn mng_rd_wr_refuse_bad_tdr_operands() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let t = tdr_pa(&td);
    let rcx = |st: u64| with(st, operand::RCX);
    for (pa, want) in [
        (t + 8, rcx(status::OPERAND_INVALID)),
        (t + 0x800, rcx(status::OPERAND_INVALID)),
        (t | 1 << 46, rcx(status::OPERAND_INVALID)), // an HKID bit
        (t | 1 << 51, rcx(status::OPERAND_INVALID)),
        (outside(&env), rcx(status::OPERAND_ADDR_RANGE_ERROR)),
        (page(&env), rcx(status::PAGE_METADATA_INCORRECT)), // a host (NDA) page
        (
            td.vcpus[0].hpa().raw(),
            rcx(status::PAGE_METADATA_INCORRECT),
        ),
    ] {
        let f = mtd::HKID;
        assert_rd_refused(rd(&m, leaf::MNG_RD, 0, pa, f), f, want, "MNG.RD");
        let (st, a) = rd(&m, leaf::MNG_RD, 1, pa, f);
        assert_eq!((st, a.r8, a.rdx), (want, 0, md::FIELD_ID_NA), "{pa:#x}");
        let (st, a) = wr(&m, leaf::MNG_WR, pa, f, JUNK, u64::MAX);
        assert_eq!((st, a.r8, a.rdx), (want, 0, f), "MNG.WR {pa:#x}");
    }
}

/// PAGE.ADD of a page at GPA 0 (SEPT.ADD of its tables first) for MR.EXTEND: the leaf and the
/// arguments of an MR.EXTEND of its first chunk, which takes the TDR exclusively and can be
/// issued again and again while the TD is built.
fn mr_extend_at_0(tdx: &T, env: &HostEnv, td: &TestTd) -> (u16, SeamArgs) {
    add_tables(tdx, env, td.tdr, 0, 1);
    let src = host_page(env);
    tdx.mem_page_add(
        td.tdr,
        Gpa::new(0),
        mmu::Hpa::new(page(env)),
        src.pfn().hpa(),
    )
    .unwrap();
    (leaf::MR_EXTEND, args(0, tdr_pa(td), 0, 0))
}

/// `reader` is issued until it answers `busy` while another thread issues `holder` (which holds
/// a lock the reader needs exclusively) again and again. Every other answer of the reader must be
/// `ok`.
fn race_until_busy(
    m: &SwModule<'_>,
    reader: (u16, SeamArgs),
    ok: u64,
    busy: u64,
    holder: (u16, SeamArgs),
    holder_ok: &[u64],
) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(SeqCst) {
                let (st, _) = seam(m, holder.0, 0, holder.1);
                assert!(holder_ok.contains(&st), "{}: {st:#x}", leaf::name(holder.0));
            }
        });
        let mut seen = false;
        for _ in 0..20_000_000u64 {
            let (st, a) = seam(m, reader.0, 0, reader.1);
            if st == busy {
                assert_eq!(a.r8, 0, "BUSY: R8 cleared");
                seen = true;
                break;
            }
            assert_eq!(st, ok, "{}: neither done nor BUSY", leaf::name(reader.0));
        }
        done.store(true, SeqCst);
        assert!(seen, "{} never met {busy:#x}", leaf::name(reader.0));
    });
}

#[test]
fn mng_rd_and_wr_meet_busy_on_the_tdr_while_it_is_held_exclusively() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    // MR.EXTEND takes the TDR exclusively (and can be repeated while the TD is built).
    let extend = mr_extend_at_0(&tdx, &env, &td);
    let busy = with(status::OPERAND_BUSY, operand::RCX);
    let max_vcpus = |r9| args(tdr_pa(&td), mtd::MAX_VCPUS, JUNK, r9);
    // MR.EXTEND in turn meets the reader's shared hold: BUSY on its TDR operand, RDX.
    let extend_ok = [status::SUCCESS, with(status::OPERAND_BUSY, operand::RDX)];
    race_until_busy(
        &m,
        (leaf::MNG_RD, max_vcpus(0)),
        status::SUCCESS,
        busy,
        extend,
        &extend_ok,
    );
    race_until_busy(
        &m,
        (leaf::MNG_WR, max_vcpus(u64::MAX)),
        status::METADATA_FIELD_NOT_WRITABLE,
        busy,
        extend,
        &extend_ok,
    );
}

#[test]
fn mng_rd_and_wr_take_the_tdr_shared() {
    // MNG.RD and MNG.WR hold the TDR shared (and the OP-state lock shared): a leaf that takes
    // the same TDR shared as an operand of its own never meets them, however they interleave.
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for l in [leaf::MNG_RD, leaf::MNG_WR] {
            let (m, done, td) = (&m, &done, &td);
            s.spawn(move || {
                while !done.load(SeqCst) {
                    let (st, _) = wr(m, l, tdr_pa(td), mtd::NUM_VCPUS, 0, u64::MAX);
                    assert!(
                        st == status::SUCCESS || st == status::METADATA_FIELD_NOT_WRITABLE,
                        "{}: {st:#x}",
                        leaf::name(l)
                    );
                }
            });
        }
        for _ in 0..200_000 {
            // MEM.TRACK: TDR shared, OP state shared, epoch lock exclusive.
            assert_eq!(tdx.mem_track(td.tdr), Ok(()));
        }
        done.store(true, SeqCst);
    });
}

// =============================================================================================
// TDH.VP.RD and TDH.VP.WR
// =============================================================================================

#[test]
fn vp_rd_reads_the_modelled_vcpu_fields() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let prod = td_with(&tdx, &env, 1, 0, 3, 2);
    let dbg = td_with(&tdx, &env, 2, DEBUG, 3, 2);
    for td in [&prod, &dbg] {
        for (i, &v) in td.vcpus.iter().enumerate() {
            assert_eq!(vp_rd_ok(&m, v, mvp::VCPU_INDEX), i as u64);
            assert_eq!(vp_rd_ok(&m, v, mvp::NUM_TDVPS_PAGES), TDVPS_PAGES);
        }
    }
    // Production TD: VCPU_STATE and the guest GPRs are not host-readable.
    for field in [mvp::VCPU_STATE, mvp::RCX] {
        let v = prod.vcpus[0].hpa().raw();
        assert_rd_refused(
            rd(&m, leaf::VP_RD, 0, v, field),
            field,
            status::METADATA_FIELD_NOT_READABLE,
            "VP.RD",
        );
    }
    // DEBUG TD: they are; RCX holds VP.INIT's RDX.
    for (i, &v) in dbg.vcpus.iter().enumerate() {
        assert_eq!(vp_rd_ok(&m, v, mvp::VCPU_STATE), vcpu_state::READY as u64);
        assert_eq!(vp_rd_ok(&m, v, mvp::RCX), 0x1000 + i as u64);
    }
}

#[test]
fn vp_rd_version_1_chains_rdx_through_the_host_readable_fields() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let prod = td_with(&tdx, &env, 1, 0, 3, 1);
    let dbg = td_with(&tdx, &env, 2, DEBUG, 3, 1);
    let ids = |c: Vec<(u64, u64)>| c.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(chain(&m, leaf::VP_RD, prod.vcpus[0].hpa().raw())),
        vec![mvp::VCPU_INDEX, mvp::NUM_TDVPS_PAGES]
    );
    assert_eq!(
        chain(&m, leaf::VP_RD, dbg.vcpus[0].hpa().raw()),
        vec![
            (mvp::RCX, 0x1000),
            (mvp::VCPU_STATE, vcpu_state::READY as u64),
            (mvp::VCPU_INDEX, 0),
            (mvp::NUM_TDVPS_PAGES, TDVPS_PAGES),
        ]
    );
    let v = prod.vcpus[0].hpa().raw();
    // Version 2 is refused first, with RDX = NA.
    let (st, a) = rd(&m, leaf::VP_RD, 2, v, mvp::VCPU_INDEX);
    assert_eq!(
        (st, a.r8, a.rdx),
        (
            with(status::OPERAND_INVALID, operand::RAX),
            0,
            md::FIELD_ID_NA
        )
    );
    // A failed version-1 read: RDX = NA.
    let (st, a) = rd(&m, leaf::VP_RD, 1, v, mvp::RCX);
    assert_eq!(
        (st, a.r8, a.rdx),
        (status::METADATA_FIELD_NOT_READABLE, 0, md::FIELD_ID_NA)
    );
    // VP.WR has no version 1 (dispatcher).
    let (st, _) = seam(&m, leaf::VP_WR, 1, args(v, mvp::RCX, 0, 0));
    assert_eq!(st, with(status::OPERAND_INVALID, operand::RAX));
}

#[test]
fn vp_wr_writes_guest_rcx_of_a_debug_td_under_the_r9_mask_and_returns_the_old_value() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let dbg = td_with(&tdx, &env, 1, DEBUG, 3, 2);
    let v = dbg.vcpus[0].hpa().raw();
    // Only the masked bits change; R8 returns the previous value.
    let (st, a) = wr(
        &m,
        leaf::VP_WR,
        v,
        mvp::RCX,
        0xAAAA_BBBB_CCCC_DDDD,
        0xFFFF_0000_0000_FFFF,
    );
    assert_eq!((st, a.r8, a.rdx), (status::SUCCESS, 0x1000, mvp::RCX));
    assert_eq!(vp_rd_ok(&m, dbg.vcpus[0], mvp::RCX), 0xAAAA_0000_0000_DDDD);
    // A full-mask write replaces the value.
    let (st, a) = wr(&m, leaf::VP_WR, v, mvp::RCX, 42, u64::MAX);
    assert_eq!((st, a.r8), (status::SUCCESS, 0xAAAA_0000_0000_DDDD));
    assert_eq!(vp_rd_ok(&m, dbg.vcpus[0], mvp::RCX), 42);
    // An empty mask writes nothing: NOT_WRITABLE.
    let (st, a) = wr(&m, leaf::VP_WR, v, mvp::RCX, 7, 0);
    assert_eq!((st, a.r8), (status::METADATA_FIELD_NOT_WRITABLE, 0));
    assert_eq!(vp_rd_ok(&m, dbg.vcpus[0], mvp::RCX), 42);
    // The other vCPU is untouched.
    assert_eq!(vp_rd_ok(&m, dbg.vcpus[1], mvp::RCX), 0x1001);
    // Through the typed wrapper: the old value.
    assert_eq!(tdx.vp_wr(dbg.vcpus[0], mvp::RCX, 9, 0xFF), Ok(42));
    assert_eq!(tdx.vp_rd(dbg.vcpus[0], mvp::RCX), Ok(9));
}

#[test]
fn vp_wr_refuses_fields_the_host_may_not_write() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let prod = td_with(&tdx, &env, 1, 0, 3, 1);
    let dbg = td_with(&tdx, &env, 2, DEBUG, 3, 1);
    for (td, fields) in [
        (&prod, &VP_IDS[..]),
        (
            &dbg,
            &[mvp::VCPU_STATE, mvp::VCPU_INDEX, mvp::NUM_TDVPS_PAGES][..],
        ),
    ] {
        let v = td.vcpus[0];
        for &field in fields {
            let (st, a) = wr(&m, leaf::VP_WR, v.hpa().raw(), field, JUNK, u64::MAX);
            assert_eq!(
                (st, a.r8, a.rdx),
                (status::METADATA_FIELD_NOT_WRITABLE, 0, field),
                "{field:#x}"
            );
        }
        assert_eq!(vp_rd_ok(&m, v, mvp::VCPU_INDEX), 0);
        assert_eq!(vp_rd_ok(&m, v, mvp::NUM_TDVPS_PAGES), TDVPS_PAGES);
    }
    assert_eq!(vp_rd_ok(&m, dbg.vcpus[0], mvp::RCX), 0x1000);
}

#[test]
fn vp_rd_wr_refuse_malformed_unknown_and_other_context_field_ids() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let dbg = td_with(&tdx, &env, 1, DEBUG, 3, 1);
    let v = dbg.vcpus[0].hpa().raw();
    let incorrect = status::METADATA_FIELD_ID_INCORRECT;
    let mut bad = malformed(mvp::VCPU_INDEX);
    bad.extend([
        0xA020_0002_0000_0001, // class 32, code 1: a gap in Intel's table
        0x1520_0003_0000_0000, // class 21: no such class in the vCPU context
        md::MAX_VCPUS_PER_TD,  // a module-scope id: context forced to VP, class 25 is no class
    ]);
    for field in bad {
        assert_rd_refused(rd(&m, leaf::VP_RD, 0, v, field), field, incorrect, "VP.RD");
        let (st, a) = wr(&m, leaf::VP_WR, v, field, JUNK, u64::MAX);
        assert_eq!((st, a.r8, a.rdx), (incorrect, 0, field), "VP.WR {field:#x}");
    }
    // The caller's context code is replaced by VP.
    for ctx in [md::CONTEXT_SYS, md::CONTEXT_TD, 7] {
        let field = md::with_context(mvp::VCPU_INDEX, ctx);
        let (st, a) = rd(&m, leaf::VP_RD, 0, v, field);
        assert_eq!((st, a.r8), (status::SUCCESS, 0), "{field:#x}");
    }
}

#[test]
fn vp_rd_wr_check_the_operand_td_and_vcpu_state_in_intel_order() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, DEBUG, 3, 1);
    let rcx = |st: u64| with(st, operand::RCX);
    let v = td.vcpus[0].hpa().raw();
    // A vCPU without all its TDVPS pages, and one with them but not initialised.
    let partial = new_vcpu(&tdx, &env, td.tdr, 2).hpa().raw();
    let uninit = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES).hpa().raw();
    let cases = [
        (v + 8, rcx(status::OPERAND_INVALID)),
        (v | 1 << 46, rcx(status::OPERAND_INVALID)),
        (outside(&env), rcx(status::OPERAND_ADDR_RANGE_ERROR)),
        (page(&env), rcx(status::PAGE_METADATA_INCORRECT)),
        (tdr_pa(&td), rcx(status::PAGE_METADATA_INCORRECT)),
        (partial, status::TDCX_NUM_INCORRECT),
        // The operand field of VCPU_STATE_INCORRECT is the state: 0 (UNINITIALIZED).
        (uninit, status::VCPU_STATE_INCORRECT),
    ];
    for (pa, want) in cases {
        // All before the field id is looked at: a malformed id gets the same answer.
        for field in [mvp::VCPU_INDEX, mvp::VCPU_INDEX | 1 << 62] {
            assert_rd_refused(rd(&m, leaf::VP_RD, 0, pa, field), field, want, "VP.RD");
            let (st, a) = rd(&m, leaf::VP_RD, 1, pa, field);
            assert_eq!((st, a.r8, a.rdx), (want, 0, md::FIELD_ID_NA), "{pa:#x}");
            let (st, a) = wr(&m, leaf::VP_WR, pa, field, JUNK, u64::MAX);
            assert_eq!((st, a.r8, a.rdx), (want, 0, field), "VP.WR {pa:#x}");
        }
    }
    // A blocked TD: TD_KEYS_NOT_CONFIGURED (the TD state comes before the TDVPS checks).
    let blocked = td_with(&tdx, &env, 2, DEBUG, 3, 1);
    let partial2 = new_vcpu(&tdx, &env, blocked.tdr, 2).hpa().raw();
    flush(&tdx, &blocked);
    for pa in [blocked.vcpus[0].hpa().raw(), partial2] {
        let f = mvp::VCPU_INDEX;
        assert_rd_refused(
            rd(&m, leaf::VP_RD, 0, pa, f),
            f,
            status::TD_KEYS_NOT_CONFIGURED,
            "VP.RD",
        );
        let (st, a) = wr(&m, leaf::VP_WR, pa, mvp::RCX, 1, u64::MAX);
        assert_eq!((st, a.r8), (status::TD_KEYS_NOT_CONFIGURED, 0));
    }
}

#[test]
fn vp_rd_and_vp_wr_associate_a_flushed_vcpu_again() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, 0, 3, 2);
    let [a, b] = [td.vcpus[0], td.vcpus[1]];
    tdx.vp_flush(a).unwrap();
    tdx.vp_flush(b).unwrap();
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_ASSOC_VCPUS), 0);
    // VP.RD associates the vCPU with this LP again (check_and_associate_vcpu).
    assert_eq!(vp_rd_ok(&m, a, mvp::VCPU_INDEX), 0);
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_ASSOC_VCPUS), 1);
    // Reading again does not count it twice.
    assert_eq!(vp_rd_ok(&m, a, mvp::VCPU_INDEX), 0);
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_ASSOC_VCPUS), 1);
    // VP.WR does too, even when the field then turns out not writable.
    let (st, _) = wr(&m, leaf::VP_WR, b.hpa().raw(), mvp::VCPU_INDEX, 0, u64::MAX);
    assert_eq!(st, status::METADATA_FIELD_NOT_WRITABLE);
    assert_eq!(mng_rd_ok(&m, &td, mtd::NUM_ASSOC_VCPUS), 2);
    // So VPFLUSHDONE needs another round of VP.FLUSH.
    assert_eq!(
        tdx.mng_vpflushdone(td.tdr).unwrap_err().status,
        status::FLUSHVP_NOT_DONE
    );
    flush(&tdx, &td);
}

#[test]
fn vp_rd_meets_busy_on_the_tdvpr_and_on_the_implicit_tdr() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::VcpusReady);
    let v = td.vcpus[0].hpa().raw();
    let read = (leaf::VP_RD, args(v, mvp::VCPU_INDEX, JUNK, 0));
    // VP.FLUSH takes the TDVPR exclusively; it answers SUCCESS or VCPU_NOT_ASSOCIATED (VP.RD
    // associates the vCPU again), or BUSY when it meets VP.RD.
    let flush = (leaf::VP_FLUSH, args(v, 0, 0, 0));
    race_until_busy(
        &m,
        read,
        status::SUCCESS,
        with(status::OPERAND_BUSY, operand::RCX),
        flush,
        &[
            status::SUCCESS,
            status::VCPU_NOT_ASSOCIATED,
            with(status::OPERAND_BUSY, operand::RCX),
        ],
    );
    // MR.EXTEND takes the TDR exclusively: VP.RD finds it through the PAMT owner (implicit).
    let extend = mr_extend_at_0(&tdx, &env, &td);
    race_until_busy(
        &m,
        read,
        status::SUCCESS,
        with(status::OPERAND_BUSY, operand::TDR),
        extend,
        &[status::SUCCESS, with(status::OPERAND_BUSY, operand::RDX)],
    );
}

// =============================================================================================
// Typed wrappers
// =============================================================================================

#[test]
fn typed_wrappers_read_and_write_through_the_software_module() {
    let env = HostEnv::with_capacity(CAP);
    let m = sw_module(&env);
    let tdx = Tdx::new(&m);
    let td = td_with(&tdx, &env, 1, SEPT_VE_DISABLE, 0x7, 1);
    assert_eq!(tdx.mng_rd(td.tdr, mtd::ATTRIBUTES), Ok(SEPT_VE_DISABLE));
    assert_eq!(tdx.mng_rd(td.tdr, mtd::XFAM), Ok(0x7));
    assert_eq!(tdx.mng_rd(td.tdr, mtd::MAX_VCPUS), Ok(4));
    let e = tdx.mng_rd(td.tdr, mtd::VIRTUAL_TSC).unwrap_err();
    assert_eq!(e.status, status::METADATA_FIELD_NOT_READABLE);
    let e = tdx
        .mng_wr(td.tdr, mtd::ATTRIBUTES, 0, u64::MAX)
        .unwrap_err();
    assert_eq!(e.status, status::METADATA_FIELD_NOT_WRITABLE);
    assert_eq!(tdx.vp_rd(td.vcpus[0], mvp::VCPU_INDEX), Ok(0));
    let e = tdx.vp_rd(td.vcpus[0], mvp::RCX).unwrap_err();
    assert_eq!(e.status, status::METADATA_FIELD_NOT_READABLE);
    let e = tdx
        .vp_wr(td.vcpus[0], mvp::VCPU_INDEX, 1, u64::MAX)
        .unwrap_err();
    assert_eq!(e.status, status::METADATA_FIELD_NOT_WRITABLE);
    let e = tdx.mng_rd(td.tdr, 0x100).unwrap_err();
    assert_eq!(
        e.status,
        status::METADATA_FIELD_ID_INCORRECT,
        "old invented ids are gone"
    );
}
