// SPDX-License-Identifier: GPL-2.0-only
//! Failure injection at every call site in turn.
//!
//! A fixed scenario (faults at every level in both roots, a huge page over tables, a split,
//! partial and whole-table zaps, a conversion, zaps that split a 2M and a 1G mirror leaf,
//! teardown) is first run cleanly to count its
//! allocations and hook calls. Then it is replayed once per allocation with that allocation
//! failing, and once per hook call with that call answering busy, then fatal. After every
//! operation of every replay the invariants hold (mirror ≡ external table, one external SPT per
//! mirror page, accounting), and after teardown every page is back with the allocator except
//! external SPTs the external side deliberately kept, which are counted as leaked.

use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::external::ExternalError;
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use testkit::{check_invariants_with, HostEnv, Inject, RecordingExternal};

type Mmu<'a> = TdpMmu<Ept, &'a HostEnv, &'a RecordingExternal>;

#[derive(Clone, Copy, Debug)]
enum Op {
    Fault(GfnKind, u64, Level),
    Zap(ZapTarget, u64, u64),
    /// `zap_range_split` with the scenario's split cache, topped up first.
    ZapSplit(ZapTarget, u64, u64),
    FreeCaches,
}

const GIB: u64 = 512 * 512;

fn scenario() -> Vec<Op> {
    use GfnKind::{Private as P, Shared as S};
    vec![
        Op::Fault(P, 0x10, Level::L4K),
        Op::Fault(P, 0x13, Level::L4K),
        Op::Fault(P, 0x400, Level::L2M),
        Op::Fault(P, GIB, Level::L1G),
        Op::Fault(P, 0x210, Level::L2M), // over an existing mirror table: maps 4K
        Op::Fault(S, 0x10, Level::L4K),
        Op::Fault(S, 0x11, Level::L4K),
        Op::Fault(S, 0x0, Level::L2M), // replaces the table holding 0x10, 0x11
        Op::Fault(S, 0x20, Level::L4K), // splits that 2M leaf
        Op::Fault(S, 2 * GIB, Level::L1G),
        Op::Zap(ZapTarget::Mirror, 0x11, 0x12), // nothing there
        Op::Zap(ZapTarget::Mirror, 0x10, 0x11), // one leaf, tables stay
        Op::Zap(ZapTarget::Both, 0x200, 0x400), // a whole L1 table
        Op::FreeCaches,
        // Conversion of [0x400, 0x600): private -> shared.
        Op::Zap(ZapTarget::Mirror, 0x400, 0x600),
        Op::Fault(S, 0x401, Level::L4K),
        Op::Zap(ZapTarget::Both, 0, 4 * GIB),
        // 4K out of a 2M private leaf: split, then the hole refaults at 4K.
        Op::Fault(P, 0x800, Level::L2M),
        Op::ZapSplit(ZapTarget::Mirror, 0x805, 0x806),
        Op::Fault(P, 0x805, Level::L2M),
        // 4K out of a 1G private leaf: 1G → 2M, then that 2M → 4K.
        Op::Fault(P, GIB, Level::L1G),
        Op::ZapSplit(ZapTarget::Both, GIB + 0x203, GIB + 0x204),
        Op::Fault(P, 0x7, Level::L4K),
    ]
}

fn pfn(kind: GfnKind, gfn: u64) -> Pfn {
    Pfn::new(
        gfn + if kind == GfnKind::Private {
            2 << 32
        } else {
            1 << 32
        },
    )
}

/// Runs the scenario; returns how it ended (for the clean run's expectations).
fn run(env: &HostEnv, ext: &RecordingExternal, expect_clean: bool) -> Result<(), MmuError> {
    let cfg = MmuConfig::td(GpaWidth::Bits48);
    let mut mmu: Mmu<'_> = match TdpMmu::new(env, ext, cfg) {
        Ok(m) => m,
        Err(e) => {
            assert_eq!(e, MmuError::NoMemory);
            return Err(e);
        }
    };
    let mut caches = VcpuMmuCaches::new();
    let mut split = SplitCache::new();
    let mut first_err = Ok(());
    for op in scenario() {
        let r = apply(&mmu, &mut caches, &mut split, op);
        if expect_clean {
            assert_eq!(r, Ok(()), "clean run failed at {op:?}");
        }
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    MmuError::NoMemory | MmuError::ExternalBusy | MmuError::Bugged
                ),
                "{op:?}: unexpected {e:?}"
            );
            if e == MmuError::Bugged {
                assert!(mmu.is_bugged());
            }
            first_err = first_err.and(Err(e));
        }
        check_invariants_with(&mmu, &[&caches], split.holdings());
    }
    mmu.free_vcpu_caches(&mut caches);
    mmu.free_split_cache(&mut split);
    ext.set_teardown(true);
    mmu.teardown();
    let leaked = mmu.stats().leaked_external_spts;
    let c = env.counts();
    assert_eq!((c.tables, c.headers), (0, 0), "pages leaked");
    assert_eq!(
        c.external_spts, leaked,
        "external SPTs: only deliberate leaks may stay"
    );
    assert_eq!(mmu.stats().pages(), 0);
    first_err
}

fn apply(
    mmu: &Mmu<'_>,
    caches: &mut VcpuMmuCaches,
    split: &mut SplitCache,
    op: Op,
) -> Result<(), MmuError> {
    match op {
        Op::Fault(kind, gfn, max_level) => {
            let f = Fault {
                gfn: Gfn::new(gfn),
                kind,
                pfn: pfn(kind, gfn),
                access: Access::RWX,
                write: true,
                max_level,
            };
            // A vCPU refaults after a retry (bounded here: an injected busy is one-shot).
            for _ in 0..4 {
                mmu.topup_vcpu_caches(caches)?;
                let g = mmu.read();
                match mmu.map(&g, caches, &f)? {
                    FaultOutcome::Retry => continue,
                    FaultOutcome::Mapped(_) | FaultOutcome::Spurious => return Ok(()),
                }
            }
            panic!("fault kept retrying: {f:?}");
        }
        Op::Zap(target, start, end) => {
            // The caller's contract: a zap that met a busy external table is repeated (after
            // dropping the lock); entries it blocked stay blocked, and faults on them retry,
            // until then.
            for _ in 0..4 {
                let g = mmu.write();
                match mmu.zap_range(&g, target, Gfn::new(start), Gfn::new(end)) {
                    Err(MmuError::ExternalBusy) => continue,
                    r => return r.map(|_| ()),
                }
            }
            panic!("zap kept failing: {op:?}");
        }
        Op::ZapSplit(target, start, end) => {
            for _ in 0..4 {
                mmu.topup_split_cache(split)?;
                let g = mmu.write();
                match mmu.zap_range_split(&g, target, Gfn::new(start), Gfn::new(end), split) {
                    Err(MmuError::ExternalBusy) => continue,
                    r => return r.map(|_| ()),
                }
            }
            panic!("zap kept failing: {op:?}");
        }
        Op::FreeCaches => {
            mmu.free_vcpu_caches(caches);
            Ok(())
        }
    }
}

fn clean_counts() -> (u64, u64) {
    let env = HostEnv::with_capacity(4096);
    let ext = RecordingExternal::new(Level::L512G);
    run(&env, &ext, true).expect("clean run");
    assert!(ext.violations().is_empty());
    (env.alloc_attempts(), ext.calls())
}

#[test]
fn clean_scenario_uses_allocations_and_every_hook() {
    let env = HostEnv::with_capacity(4096);
    let ext = RecordingExternal::new(Level::L512G);
    run(&env, &ext, true).expect("clean run");
    let c = ext.counts();
    assert!(
        c.link > 0
            && c.set > 0
            && c.block > 0
            && c.flush > 0
            && c.remove > 0
            && c.free > 0
            && c.split == 3,
        "{c:?}"
    );
    assert!(env.alloc_attempts() > 10);
}

#[test]
fn allocation_failure_at_every_call_site() {
    let (allocs, _) = clean_counts();
    for i in 0..allocs {
        let env = HostEnv::with_capacity(4096);
        let ext = RecordingExternal::new(Level::L512G);
        env.fail_alloc_after(i as i64);
        let r = run(&env, &ext, false);
        assert_eq!(
            env.counts().injected_failures,
            1,
            "allocation {i} was not reached"
        );
        assert_eq!(r, Err(MmuError::NoMemory), "allocation {i}");
        assert!(
            ext.violations().is_empty(),
            "allocation {i}: {:?}",
            ext.violations()
        );
    }
}

#[test]
fn busy_hook_at_every_call_site() {
    let (_, calls) = clean_counts();
    for i in 0..calls {
        let env = HostEnv::with_capacity(4096);
        let ext = RecordingExternal::new(Level::L512G);
        ext.inject(Inject::At(i, ExternalError::Busy));
        // Busy is transient: the fault or zap that met it is repeated and the scenario ends as
        // the clean run does.
        let r = run(&env, &ext, false);
        assert_eq!(r, Ok(()), "call {i}");
        assert!(
            ext.counts().total() >= calls - 1,
            "call {i}: work went missing"
        );
        assert!(
            ext.violations().is_empty(),
            "call {i}: {:?}",
            ext.violations()
        );
    }
}

#[test]
fn fatal_hook_at_every_call_site_bugs_the_vm_without_leaking() {
    let (_, calls) = clean_counts();
    let mut bugged = 0;
    for i in 0..calls {
        let env = HostEnv::with_capacity(4096);
        let ext = RecordingExternal::new(Level::L512G);
        ext.inject(Inject::At(i, ExternalError::Fatal));
        match run(&env, &ext, false) {
            Err(MmuError::Bugged) => bugged += 1,
            // The fatal answer hit a teardown call: pages are leaked (and counted), not freed.
            Ok(()) => {}
            r => panic!("call {i}: {r:?}"),
        }
    }
    assert!(bugged > 0);
}
