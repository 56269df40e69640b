// SPDX-License-Identifier: GPL-2.0-only
//! Helpers of the software-TDX-module spec tests (`swmod_*.rs`): raw SEAMCALLs, operands, page
//! and TD set-up, S-EPT arch-entry bits; and the MMU configuration and private fault of the
//! tests that run the MMU over the module (`e2e*.rs`, `reset_pages.rs`).
//!
//! Each test file is a crate of its own that includes this module with `mod common;` and uses
//! only some of the helpers.

// Every test crate compiles this module for itself, and none of them uses every helper: the
// ones a crate leaves alone would each warn as dead code there.
#![allow(dead_code)]

use mmu::env::Frame;
use mmu::spte::Access;
use mmu::tdp::{Fault, MmuConfig};
use mmu::{Gfn, GfnKind, Gpa, GpaWidth, Hpa, Level, Pfn};
use std::sync::atomic::Ordering::Relaxed;
use tdx::abi::{self, leaf, page_type, status, SeptLevel};
use tdx::swmod::PamtInfo;
use tdx::{SeamArgs, Seamcall, Tdcx, Tdr, Tdvpr, Tdx};
use testkit::env::BASE_PFN;
use testkit::td::{build_td, host_page, Stage, SwModule, TestTd};
use testkit::HostEnv;

pub type T<'a, 'e> = Tdx<&'a SwModule<'e>>;

// ---- S-EPT arch-entry bits (§3.5, §3.6) -----------------------------------------------------

pub const SVE: u64 = 1 << 63;
pub const XU: u64 = 1 << 10;
/// R, W, Xs and Xu: a mapped non-leaf (SEPT.ADD: "RWX + Xu").
pub const NL_RWX: u64 = 0x7 | XU;
/// MT = WB (6 << 3), IPAT (6), PS (7): a leaf without permissions.
pub const LEAF_NO_PERM: u64 = 0x30 | 0x40 | 0x80;

// ---- raw SEAMCALLs and operands -------------------------------------------------------------

pub fn with(st: u64, op: u32) -> u64 {
    st | op as u64
}

pub fn seam(m: &SwModule<'_>, leaf_no: u16, version: u8, a: SeamArgs) -> (u64, SeamArgs) {
    let mut a = a;
    let st = m.seamcall(abi::rax(leaf_no, version), &mut a);
    (st, a)
}

/// The input registers RCX, RDX, R8 and R9 (R10 and R11 zero).
pub fn args(rcx: u64, rdx: u64, r8: u64, r9: u64) -> SeamArgs {
    SeamArgs {
        rcx,
        rdx,
        r8,
        r9,
        ..SeamArgs::default()
    }
}

/// A version-0 SEAMCALL of `leaf_no` with [`args`].
pub fn call(
    m: &SwModule<'_>,
    leaf_no: u16,
    rcx: u64,
    rdx: u64,
    r8: u64,
    r9: u64,
) -> (u64, SeamArgs) {
    seam(m, leaf_no, 0, args(rcx, rdx, r8, r9))
}

/// GPA + level operand.
pub fn gl(gpa: u64, level: u8) -> u64 {
    gpa | level as u64
}

/// `gpa` aligned down to what an entry at `level` maps.
pub fn align(gpa: u64, level: u8) -> u64 {
    gpa & !((1u64 << (12 + 9 * level as u32)) - 1)
}

/// A fresh arena page's physical address.
pub fn page(env: &HostEnv) -> u64 {
    host_page(env).pfn().hpa().raw()
}

pub fn pfn(pa: u64) -> Pfn {
    Pfn::new(pa >> 12)
}

/// A physical address outside the arena (and so outside every TDMR).
pub fn outside(env: &HostEnv) -> u64 {
    (BASE_PFN + env.capacity() as u64 + 16) << 12
}

pub fn tdr_pa(td: &TestTd) -> u64 {
    td.tdr.hpa().raw()
}

pub fn tdr_pfn(td: &TestTd) -> Pfn {
    td.tdr.hpa().pfn()
}

// ---- PAMT -----------------------------------------------------------------------------------

pub fn nda() -> PamtInfo {
    PamtInfo {
        page_type: page_type::NDA,
        size: 0,
        owner: Pfn::new(0),
    }
}

/// A page freed by PAGE.REMOVE, SEPT.REMOVE or PHYMEM.PAGE.RECLAIM: NDA, but still naming the
/// TD that owned it (`docs/tdx-module-rules.md` §5: Intel's leaves only set `pt = PT_NDA`).
pub fn freed(td: &TestTd) -> PamtInfo {
    PamtInfo {
        page_type: page_type::NDA,
        size: 0,
        owner: tdr_pfn(td),
    }
}

pub fn owned_by(pt: u8, size: u8, td: &TestTd) -> PamtInfo {
    PamtInfo {
        page_type: pt,
        size,
        owner: tdr_pfn(td),
    }
}

pub fn chldcnt(m: &SwModule<'_>, td: &TestTd) -> u64 {
    m.td_info(tdr_pfn(td)).expect("TD").chldcnt
}

// ---- pages, S-EPT and vCPUs of a TD ---------------------------------------------------------

/// SEPT.ADD of fresh pages for the entries at levels 3 down to `lowest` above `gpa`.
pub fn add_tables(tdx: &T, env: &HostEnv, tdr: Tdr, gpa: u64, lowest: u8) -> Vec<u64> {
    (lowest..=3)
        .rev()
        .map(|lvl| {
            let p = page(env);
            tdx.mem_sept_add(tdr, Gpa::new(align(gpa, lvl)), SeptLevel(lvl), Hpa::new(p))
                .expect("SEPT.ADD");
            p
        })
        .collect()
}

/// PAGE.AUG of a fresh 4K page at `gpa`; returns the page.
pub fn aug4k(tdx: &T, env: &HostEnv, tdr: Tdr, gpa: u64) -> u64 {
    let p = page(env);
    tdx.mem_page_aug(tdr, Gpa::new(gpa), SeptLevel::L4K, Hpa::new(p))
        .expect("PAGE.AUG");
    p
}

/// PAGE.AUG of 512 fresh contiguous pages as one 2M page at `gpa`; returns the first page.
pub fn aug2m(tdx: &T, env: &HostEnv, tdr: Tdr, gpa: u64) -> Pfn {
    let head = alloc_contig_2m(env, 512);
    tdx.mem_page_aug(tdr, Gpa::new(gpa), SeptLevel::L2M, head.hpa())
        .expect("PAGE.AUG 2M");
    head
}

pub fn pattern(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0x0101_0101_0101_0101)
}

/// A host page filled with `pattern(seed, ..)`.
pub fn source_page(env: &HostEnv, seed: u64) -> Frame {
    let f = host_page(env);
    for (i, w) in f.words().iter().enumerate() {
        w.store(pattern(seed, i), Relaxed);
    }
    f
}

/// PAGE.ADD of a page with content `seed` at `gpa`; returns the target page.
pub fn add_page(tdx: &T, env: &HostEnv, tdr: Tdr, gpa: u64, seed: u64) -> Frame {
    let src = source_page(env, seed);
    let tgt = host_page(env);
    tdx.mem_page_add(tdr, Gpa::new(gpa), tgt.pfn().hpa(), src.pfn().hpa())
        .expect("PAGE.ADD");
    env.free_raw(src);
    tgt
}

/// VP.CREATE plus VP.ADDCX until the vCPU has `pages` TDVPS pages (TDVPR included).
pub fn new_vcpu(tdx: &T, env: &HostEnv, tdr: Tdr, pages: u64) -> Tdvpr {
    let v = Tdvpr::new(host_page(env).pfn().hpa());
    tdx.vp_create(tdr, v).expect("VP.CREATE");
    for _ in 1..pages {
        tdx.vp_addcx(v, Tdcx::new(host_page(env).pfn().hpa()))
            .expect("VP.ADDCX");
    }
    v
}

/// `n` contiguous fresh arena pages starting 2M-aligned.
pub fn alloc_contig_2m(env: &HostEnv, n: u64) -> Pfn {
    'retry: loop {
        let first = host_page(env).pfn();
        if !first.raw().is_multiple_of(512) {
            continue;
        }
        for i in 1..n {
            if host_page(env).pfn().raw() != first.raw() + i {
                continue 'retry;
            }
        }
        return first;
    }
}

/// SEPT.RD through a raw SEAMCALL: (RCX, RDX) exactly as returned.
pub fn sept_rd(tdx: &T, td: &TestTd, gpa: u64, level: u8) -> (u64, u64) {
    let (st, a) = call(
        tdx.backend(),
        leaf::MEM_SEPT_RD,
        gl(gpa, level),
        tdr_pa(td),
        0,
        0,
    );
    assert_eq!(st, status::SUCCESS, "SEPT.RD {gpa:#x} level {level}");
    (a.rcx, a.rdx)
}

/// RDX of the S-EPT details: level in 2:0, public state in 15:8.
pub fn info(level: u8, state: u8) -> u64 {
    level as u64 | (state as u64) << 8
}

/// A TD with a MAPPED page at 0x1000 (PAGE.ADD) and a PENDING page at 0x2000 (AUG), both under
/// the page table of the level-1 entry for GPA 0; runnable if `finalize`.
pub fn td_with_mapped_and_pending(
    tdx: &T,
    env: &HostEnv,
    hkid: u16,
    finalize: bool,
) -> (TestTd, u64, u64) {
    let td = build_td(tdx, env, hkid, 1, Stage::VcpusReady);
    add_tables(tdx, env, td.tdr, 0, 1);
    let mapped = add_page(tdx, env, td.tdr, 0x1000, 9).pfn().hpa().raw();
    if finalize {
        tdx.mr_finalize(td.tdr).unwrap();
    }
    let pending = aug4k(tdx, env, td.tdr, 0x2000);
    (td, mapped, pending)
}

// ---- the MMU over the module ----------------------------------------------------------------

/// A TD's MMU: 4-level EPT (48-bit GPA), huge pages up to 2M.
pub fn td_mmu_config() -> MmuConfig {
    MmuConfig {
        max_level: Level::L2M,
        ..MmuConfig::td(GpaWidth::Bits48)
    }
}

/// A vCPU's write fault on the private GFN `gfn`, backed by `pfn`, mapped at most at `max_level`
/// (private memory is always mapped RWX).
pub fn private_fault(gfn: Gfn, pfn: Pfn, max_level: Level) -> Fault {
    Fault {
        gfn,
        kind: GfnKind::Private,
        pfn,
        access: Access::RWX,
        write: true,
        max_level,
    }
}
