// SPDX-License-Identifier: GPL-2.0-only
//! Every leaf × every lock it takes (`docs/tdx-module-rules.md` §9): the test really holds the
//! lock (`SwTdxModule::hold_lock`, the `test-hooks` feature), issues the leaf and gets the
//! `TDX_OPERAND_BUSY` of the module's own try-lock with the operand id Intel's module names —
//! and, for an S-EPT entry lock, the entry's details in RCX/RDX (§3.4). Then the lock is
//! released and the same call succeeds: a BUSY answer changed nothing.
//!
//! Single-threaded and deterministic: hold, call, check, release, call again.

mod common;

use common::*;
use mmu::{Gpa, Hpa, Pfn};
use tdx::abi::{self, leaf, md, operand, page_type, sept_state, status, SeptLevel};
use tdx::swmod::{Mode, ModuleLine, ModuleLock, TDVPS_PAGES};
use tdx::{CacheWb, SeamArgs, Tdcx, Tdvpr, Tdx};
use testkit::env::BASE_PFN;
use testkit::td::{build_td, sw_module_on, td_params, Stage, SwModule, TestTd};
use testkit::HostEnv;

fn busy(op: u32) -> u64 {
    with(status::OPERAND_BUSY, op)
}

/// What holding one lock must do to the leaf: its status, and RCX/RDX if they carry S-EPT
/// details (entry lock) — otherwise they must be what a failed MEM leaf leaves (0) or what the
/// leaf's own rules say, which the caller does not check here.
struct Held {
    lock: ModuleLock,
    status: u64,
    details: Option<(u64, u64)>,
}

fn held(lock: ModuleLock, op: u32) -> Held {
    Held {
        lock,
        status: busy(op),
        details: None,
    }
}

/// PHYMEM.CACHE.WB's locks: the package's WBCACHE mutex, then the KOT.
fn wbcache_locks() -> [Held; 2] {
    [
        held(ModuleLock::WbCache, operand::WBCACHE),
        held(ModuleLock::Kot, operand::KOT),
    ]
}

fn held_entry(tdr: Pfn, gpa: u64, level: u8, rcx: u64, rdx: u64) -> Held {
    Held {
        lock: ModuleLock::SeptEntry {
            tdr,
            gpa,
            level: SeptLevel(level),
        },
        status: busy(operand::RCX),
        details: Some((rcx, rdx)),
    }
}

/// For each lock in `locks`: hold it exclusively, issue `leaf_no` with `args`, expect its BUSY
/// answer, release. Then issue the call without any lock held and expect `then`. Returns the
/// output registers of that last call.
fn check_leaf(
    m: &SwModule<'_>,
    leaf_no: u16,
    args: SeamArgs,
    locks: &[Held],
    then: u64,
) -> SeamArgs {
    let name = abi::leaf::name(leaf_no);
    let errors = m.errors(leaf_no);
    for h in locks {
        let g = m
            .hold_lock(h.lock, Mode::Exclusive)
            .unwrap_or_else(|| panic!("{name}: {:?} is not free", h.lock));
        let (st, out) = seam(m, leaf_no, 0, args);
        assert_eq!(st, h.status, "{name} with {:?} held", h.lock);
        if let Some(d) = h.details {
            assert_eq!((out.rcx, out.rdx), d, "{name} with {:?}: details", h.lock);
        }
        drop(g);
    }
    assert_eq!(
        m.errors(leaf_no) - errors,
        locks.len() as u64,
        "{name}: every BUSY answer is an error"
    );
    let (st, out) = seam(m, leaf_no, 0, args);
    assert_eq!(st, then, "{name} with no lock held");
    out
}

#[test]
fn module_scope_leaves_are_busy_on_their_locks() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(64);
        let m = sw_module_on(&env, line);
        let p = page(&env);
        // PHYMEM.PAGE.WBINVD and PHYMEM.PAGE.RDMD of a free page: its PAMT entry, shared.
        for leaf_no in [leaf::PHYMEM_PAGE_WBINVD, leaf::PHYMEM_PAGE_RDMD] {
            check_leaf(
                &m,
                leaf_no,
                args(p, 0, 0, 0),
                &[held(ModuleLock::Pamt(pfn(p)), operand::RCX)],
                status::SUCCESS,
            );
        }
        // PHYMEM.CACHE.WB: the package mutex, then the KOT.
        check_leaf(
            &m,
            leaf::PHYMEM_CACHE_WB,
            args(0, 0, 0, 0),
            &wbcache_locks(),
            status::NO_HKID_READY_TO_WBCACHE,
        );
        // MNG.CREATE: the TDR page, then the KOT.
        check_leaf(
            &m,
            leaf::MNG_CREATE,
            args(p, 1, 0, 0),
            &[
                held(ModuleLock::Pamt(pfn(p)), operand::RCX),
                held(ModuleLock::Kot, operand::KOT),
            ],
            status::SUCCESS,
        );
        // MNG.KEY.CONFIG: the TDR, exclusively.
        check_leaf(
            &m,
            leaf::MNG_KEY_CONFIG,
            args(p, 0, 0, 0),
            &[held(ModuleLock::Pamt(pfn(p)), operand::RCX)],
            status::SUCCESS,
        );
        // MNG.ADDCX: the TDR (RDX), then the new page (RCX).
        let cx = page(&env);
        check_leaf(
            &m,
            leaf::MNG_ADDCX,
            args(cx, p, 0, 0),
            &[
                held(ModuleLock::Pamt(pfn(p)), operand::RDX),
                held(ModuleLock::Pamt(pfn(cx)), operand::RCX),
            ],
            status::SUCCESS,
        );
    }
}

/// A TD with its TDCX pages (the line's count, read as the host reads it) and MNG.INIT done,
/// where MNG.INIT itself was checked: the TDR exclusively, and no OP-state lock.
fn initialized_td<'e>(m: &SwModule<'e>, env: &'e HostEnv, hkid: u16) -> TestTd {
    let tdx = Tdx::new(m);
    let td = build_td(&tdx, env, hkid, 0, Stage::TdcsAdded);
    let tdr = tdr_pfn(&td);
    let params = td_params(env, false, 8);
    let a = args(tdr_pa(&td), params.pfn().hpa().raw(), 0, 0);
    // The OP-state lock is not MNG.INIT's: holding it changes nothing but MNG.INIT's own lock.
    let op = m
        .hold_lock(ModuleLock::OpState(tdr), Mode::Exclusive)
        .expect("OP-state lock");
    check_leaf(
        m,
        leaf::MNG_INIT,
        a,
        &[held(ModuleLock::Pamt(tdr), operand::RCX)],
        status::SUCCESS,
    );
    drop(op);
    td
}

#[test]
fn vcpu_and_metadata_leaves_are_busy_on_their_locks() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = initialized_td(&m, &env, 1);
        let tdr = tdr_pfn(&td);
        let t = tdr_pa(&td);
        // VP.CREATE: TDR shared (RDX), OP state, the TDVPR page (RCX).
        let v = page(&env);
        check_leaf(
            &m,
            leaf::VP_CREATE,
            args(v, t, 0, 0),
            &[
                held(ModuleLock::Pamt(tdr), operand::RDX),
                held(ModuleLock::OpState(tdr), operand::OP_STATE),
                held(ModuleLock::Pamt(pfn(v)), operand::RCX),
            ],
            status::SUCCESS,
        );
        // VP.ADDCX: TDVPR (RDX), implicit TDR, OP state, the new page (RCX).
        let cx = page(&env);
        check_leaf(
            &m,
            leaf::VP_ADDCX,
            args(cx, v, 0, 0),
            &[
                held(ModuleLock::Pamt(pfn(v)), operand::RDX),
                held(ModuleLock::Pamt(tdr), operand::TDR),
                held(ModuleLock::OpState(tdr), operand::OP_STATE),
                held(ModuleLock::Pamt(pfn(cx)), operand::RCX),
            ],
            status::SUCCESS,
        );
        for _ in 2..TDVPS_PAGES {
            tdx.vp_addcx(Tdvpr::new(Hpa::new(v)), Tdcx::new(Hpa::new(page(&env))))
                .expect("VP.ADDCX");
        }
        // VP.INIT: TDVPR (RCX), implicit TDR, OP state.
        let vp_locks = [
            held(ModuleLock::Pamt(pfn(v)), operand::RCX),
            held(ModuleLock::Pamt(tdr), operand::TDR),
            held(ModuleLock::OpState(tdr), operand::OP_STATE),
        ];
        check_leaf(
            &m,
            leaf::VP_INIT,
            args(v, 0, 0, 0),
            &vp_locks,
            status::SUCCESS,
        );
        // MNG.RD / MNG.WR: TDR shared (RCX), OP state.
        let mng_locks = [
            held(ModuleLock::Pamt(tdr), operand::RCX),
            held(ModuleLock::OpState(tdr), operand::OP_STATE),
        ];
        // Once no lock is held, each reader returns the field's value in R8 and each writer,
        // given a field that is not writable, answers METADATA_FIELD_NOT_WRITABLE.
        for (rd, wr, obj, (field, value), ro_field, locks) in [
            // VP.RD / VP.WR: TDVPR shared (RCX), implicit TDR, OP state.
            (
                leaf::VP_RD,
                leaf::VP_WR,
                v,
                (md::vp::VCPU_INDEX, 0),
                md::vp::VCPU_INDEX,
                &vp_locks[..],
            ),
            (
                leaf::MNG_RD,
                leaf::MNG_WR,
                t,
                (md::td::NUM_VCPUS, 1),
                md::td::HKID,
                &mng_locks[..],
            ),
        ] {
            let out = check_leaf(&m, rd, args(obj, field, 0, 0), locks, status::SUCCESS);
            assert_eq!(out.r8, value, "{}", abi::leaf::name(rd));
            check_leaf(
                &m,
                wr,
                args(obj, ro_field, 1, u64::MAX),
                locks,
                status::METADATA_FIELD_NOT_WRITABLE,
            );
        }
        // A shared holder of the TDR or the OP state does not block the shared takers.
        let r1 = m.hold_lock(ModuleLock::Pamt(tdr), Mode::Shared).unwrap();
        let r2 = m.hold_lock(ModuleLock::OpState(tdr), Mode::Shared).unwrap();
        assert_eq!(
            seam(&m, leaf::MNG_RD, 0, args(t, md::td::NUM_VCPUS, 0, 0)).0,
            status::SUCCESS
        );
        drop((r1, r2));
    }
}

#[test]
fn mem_leaves_are_busy_on_their_locks() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(512);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = initialized_td(&m, &env, 1);
        let v = new_vcpu(&tdx, &env, td.tdr, TDVPS_PAGES);
        tdx.vp_init(v, 0).expect("VP.INIT");
        let tdr = tdr_pfn(&td);
        let t = tdr_pa(&td);
        let tdr_op = |op: u32| held(ModuleLock::Pamt(tdr), op);
        let op_state = || held(ModuleLock::OpState(tdr), operand::OP_STATE);
        let tree = || held(ModuleLock::SeptTree(tdr), operand::SEPT_TREE);
        // SEPT.ADD: TDR shared (RDX), OP state, tree shared, the entry, the new page (R8). The
        // entry is FREE: RCX = SVE only, RDX = level 3, state FREE.
        let sp = page(&env);
        check_leaf(
            &m,
            leaf::MEM_SEPT_ADD,
            args(gl(0, 3), t, sp, 0),
            &[
                tdr_op(operand::RDX),
                op_state(),
                tree(),
                held_entry(tdr, 0, 3, SVE, info(3, sept_state::FREE)),
                held(ModuleLock::Pamt(pfn(sp)), operand::R8),
            ],
            status::SUCCESS,
        );
        for lvl in [2, 1] {
            tdx.mem_sept_add(td.tdr, Gpa::new(0), SeptLevel(lvl), Hpa::new(page(&env)))
                .expect("SEPT.ADD");
        }
        // PAGE.ADD: TDR exclusively (RDX), then the target (R8); no tree, entry or OP-state
        // lock (the exclusive TDR serialises the tree): it succeeds with those held.
        let src = source_page(&env, 5);
        let tgt = page(&env);
        let add = args(gl(0x1000, 0), t, tgt, src.pfn().hpa().raw());
        {
            let _tree = m
                .hold_lock(ModuleLock::SeptTree(tdr), Mode::Exclusive)
                .unwrap();
            let _op = m
                .hold_lock(ModuleLock::OpState(tdr), Mode::Exclusive)
                .unwrap();
            check_leaf(
                &m,
                leaf::MEM_PAGE_ADD,
                add,
                &[
                    tdr_op(operand::RDX),
                    held(ModuleLock::Pamt(pfn(tgt)), operand::R8),
                ],
                status::SUCCESS,
            );
        }
        // MR.EXTEND: TDR exclusively (RDX).
        check_leaf(
            &m,
            leaf::MR_EXTEND,
            args(0x1000, t, 0, 0),
            &[tdr_op(operand::RDX)],
            status::SUCCESS,
        );
        // The MAPPED leaf at 0x1000 as the error details report it.
        let mapped = sept_rd(&tdx, &td, 0x1000, 0);
        assert_eq!(mapped.1, info(0, sept_state::MAPPED));
        let mem_locks = |gpa: u64, level: u8, rcx: u64, rdx: u64| {
            vec![
                tdr_op(operand::RDX),
                op_state(),
                tree(),
                held_entry(tdr, gpa, level, rcx, rdx),
            ]
        };
        // SEPT.RD: TDR, OP state, tree shared, the entry.
        let out = check_leaf(
            &m,
            leaf::MEM_SEPT_RD,
            args(gl(0x1000, 0), t, 0, 0),
            &mem_locks(0x1000, 0, mapped.0, mapped.1),
            status::SUCCESS,
        );
        assert_eq!((out.rcx, out.rdx), mapped);
        // RANGE.BLOCK and RANGE.UNBLOCK: the tree exclusively (a reader blocks them too).
        let block = args(gl(0x1000, 0), t, 0, 0);
        {
            let _reader = m
                .hold_lock(ModuleLock::SeptTree(tdr), Mode::Shared)
                .unwrap();
            assert_eq!(
                seam(&m, leaf::MEM_RANGE_BLOCK, 0, block).0,
                busy(operand::SEPT_TREE)
            );
            assert_eq!(
                seam(&m, leaf::MEM_SEPT_RD, 0, block).0,
                status::SUCCESS,
                "SEPT.RD shares the tree"
            );
        }
        check_leaf(
            &m,
            leaf::MEM_RANGE_BLOCK,
            block,
            &mem_locks(0x1000, 0, mapped.0, mapped.1),
            status::SUCCESS,
        );
        let blocked = sept_rd(&tdx, &td, 0x1000, 0);
        assert_eq!(blocked.1, info(0, sept_state::BLOCKED));
        check_leaf(
            &m,
            leaf::MEM_RANGE_UNBLOCK,
            block,
            &mem_locks(0x1000, 0, blocked.0, blocked.1),
            status::SUCCESS,
        );
        // PAGE.AUG: TDR, OP state, tree shared, the (FREE) entry, then the target (R8).
        let aug_page = page(&env);
        let mut aug_locks = mem_locks(0x2000, 0, SVE, info(0, sept_state::FREE));
        aug_locks.push(held(ModuleLock::Pamt(pfn(aug_page)), operand::R8));
        check_leaf(
            &m,
            leaf::MEM_PAGE_AUG,
            args(gl(0x2000, 0), t, aug_page, 0),
            &aug_locks,
            status::SUCCESS,
        );
        // PAGE.REMOVE: TDR, OP state, tree shared, the entry, then the page's PAMT entry (RCX,
        // no details).
        let pending = sept_rd(&tdx, &td, 0x2000, 0);
        let mut rm_locks = mem_locks(0x2000, 0, pending.0, pending.1);
        rm_locks.push(held(ModuleLock::Pamt(pfn(aug_page)), operand::RCX));
        let out = check_leaf(
            &m,
            leaf::MEM_PAGE_REMOVE,
            args(gl(0x2000, 0), t, 0, 0),
            &rm_locks,
            status::SUCCESS,
        );
        assert_eq!(out.rcx, aug_page);
        // SEPT.REMOVE of an empty table: TDR, OP state, tree exclusively, the entry, the child
        // page's PAMT entry (RCX).
        // A 512G region of its own, so its every table is new.
        let g = 1u64 << 39;
        let tables = add_tables(&tdx, &env, td.tdr, g, 1);
        let nl = sept_rd(&tdx, &td, g, 1);
        let mut srm_locks = mem_locks(g, 1, nl.0, nl.1);
        srm_locks.push(held(ModuleLock::Pamt(pfn(tables[2])), operand::RCX));
        let out = check_leaf(
            &m,
            leaf::MEM_SEPT_REMOVE,
            args(gl(g, 1), t, 0, 0),
            &srm_locks,
            status::SUCCESS,
        );
        assert_eq!(out.rcx, tables[2]);
        // MEM.TRACK: TDR shared (RCX), OP state, the epoch lock exclusively.
        check_leaf(
            &m,
            leaf::MEM_TRACK,
            args(t, 0, 0, 0),
            &[
                tdr_op(operand::RCX),
                op_state(),
                held(ModuleLock::Epoch(tdr), operand::TD_EPOCH),
            ],
            status::SUCCESS,
        );
        // MR.FINALIZE: TDR exclusively (RCX).
        check_leaf(
            &m,
            leaf::MR_FINALIZE,
            args(t, 0, 0, 0),
            &[tdr_op(operand::RCX)],
            status::SUCCESS,
        );
    }
}

#[test]
fn teardown_leaves_are_busy_on_their_locks() {
    for line in ModuleLine::ALL {
        let env = HostEnv::with_capacity(256);
        let m = sw_module_on(&env, line);
        let tdx = Tdx::new(&m);
        let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
        let tdr = tdr_pfn(&td);
        let t = tdr_pa(&td);
        let v = td.vcpus[0].hpa().raw();
        // VP.FLUSH: TDVPR exclusively (RCX), implicit TDR shared.
        let tdvpr_locks = [
            held(ModuleLock::Pamt(pfn(v)), operand::RCX),
            held(ModuleLock::Pamt(tdr), operand::TDR),
        ];
        check_leaf(
            &m,
            leaf::VP_FLUSH,
            args(v, 0, 0, 0),
            &tdvpr_locks,
            status::SUCCESS,
        );
        // VPFLUSHDONE and KEY.FREEID: TDR exclusively (RCX), the KOT.
        let td_kot = [
            held(ModuleLock::Pamt(tdr), operand::RCX),
            held(ModuleLock::Kot, operand::KOT),
        ];
        check_leaf(
            &m,
            leaf::MNG_VPFLUSHDONE,
            args(t, 0, 0, 0),
            &td_kot,
            status::SUCCESS,
        );
        check_leaf(
            &m,
            leaf::PHYMEM_CACHE_WB,
            args(0, 0, 0, 0),
            &wbcache_locks(),
            status::SUCCESS,
        );
        check_leaf(
            &m,
            leaf::MNG_KEY_FREEID,
            args(t, 0, 0, 0),
            &td_kot,
            status::SUCCESS,
        );
        // PHYMEM.PAGE.RECLAIM of a TD page (the TDVPR): the page exclusively (RCX), the
        // implicit TDR.
        check_leaf(
            &m,
            leaf::PHYMEM_PAGE_RECLAIM,
            args(v, 0, 0, 0),
            &tdvpr_locks,
            status::SUCCESS,
        );
        // Every other page, then the TDR itself: only its own entry (RCX).
        for i in 0..env.capacity() as u64 {
            let p = Pfn::new(BASE_PFN + i);
            let owned = m
                .pamt_info(p)
                .is_some_and(|x| x.owner == tdr && x.page_type != page_type::NDA);
            if owned {
                tdx.phymem_page_reclaim(p.hpa()).expect("RECLAIM");
            }
        }
        check_leaf(
            &m,
            leaf::PHYMEM_PAGE_RECLAIM,
            args(t, 0, 0, 0),
            &[held(ModuleLock::Pamt(tdr), operand::RCX)],
            status::SUCCESS,
        );
        assert_eq!(tdx.phymem_cache_wb(false), Ok(CacheWb::NothingToWriteBack));
    }
}

#[test]
fn a_vcpu_cannot_enter_while_the_epoch_lock_is_held() {
    let env = HostEnv::with_capacity(256);
    let m = sw_module_on(&env, ModuleLine::V1_5);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 1, Stage::Runnable);
    let v = td.vcpus[0].hpa().pfn();
    let g = m
        .hold_lock(ModuleLock::Epoch(tdr_pfn(&td)), Mode::Exclusive)
        .unwrap();
    assert!(!m.vcpu_enter(v), "TDH.VP.ENTER takes the epoch lock shared");
    drop(g);
    assert!(m.vcpu_enter(v));
    // While the vCPU is inside, TRACK still succeeds once (it only waits for the epoch before).
    tdx.mem_track(td.tdr).unwrap();
    m.vcpu_exit(v);
}

#[test]
fn hold_lock_refuses_what_is_taken_or_missing() {
    let env = HostEnv::with_capacity(64);
    let m = sw_module_on(&env, ModuleLine::V2_0);
    let tdx = Tdx::new(&m);
    let p = page(&env);
    let a = m.hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Shared).unwrap();
    let b = m.hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Shared).unwrap();
    assert!(m
        .hold_lock(ModuleLock::Pamt(pfn(p)), Mode::Exclusive)
        .is_none());
    drop((a, b));
    let kot = m.hold_lock(ModuleLock::Kot, Mode::Exclusive).unwrap();
    assert!(m.hold_lock(ModuleLock::Kot, Mode::Shared).is_none());
    drop(kot);
    // Outside every TDMR; a page that is not a TDR; an entry the walk does not reach.
    assert!(m
        .hold_lock(ModuleLock::Pamt(pfn(outside(&env))), Mode::Shared)
        .is_none());
    assert!(m
        .hold_lock(ModuleLock::SeptTree(pfn(p)), Mode::Shared)
        .is_none());
    let td = build_td(&tdx, &env, 1, 0, Stage::Initialized);
    let deep = ModuleLock::SeptEntry {
        tdr: tdr_pfn(&td),
        gpa: 0,
        level: SeptLevel::L4K,
    };
    assert!(m.hold_lock(deep, Mode::Exclusive).is_none());
    let top = ModuleLock::SeptEntry {
        tdr: tdr_pfn(&td),
        gpa: 0,
        level: SeptLevel(3),
    };
    let e = m.hold_lock(top, Mode::Exclusive).unwrap();
    assert!(m.hold_lock(top, Mode::Exclusive).is_none());
    drop(e);
    // Released: the entry reads as it did (FREE), without its lock bit.
    assert_eq!(sept_rd(&tdx, &td, 0, 3), (SVE, info(3, sept_state::FREE)));
}
