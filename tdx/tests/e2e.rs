// SPDX-License-Identifier: GPL-2.0-only
//! End to end on the host: the MMU core's mirror root, the S-EPT backend and the software TDX
//! module, with random fault / zap / conversion sequences and a teardown. Faults map 2M where
//! they may; half the zaps and the partial conversions split the huge leaves they cover in part
//! (BLOCK, TRACK, PAGE.DEMOTE) instead of dropping them.
//!
//! After every operation: the mirror and the Secure-EPT (read through the module's inspection
//! API) agree entry by entry — every mirror table above the root is an S-EPT table page in the
//! same place, every mirror leaf an S-EPT leaf mapping the same page, blocked exactly where the
//! mirror says so — and the PAMT says the TD owns exactly those pages. After teardown every page
//! is back with the host: no page the TD owned is left typed in the PAMT and the arena is empty
//! but for what the test itself holds.

mod common;

use common::{private_fault, td_mmu_config};
use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::env::MmuEnv;
use mmu::page::RootKind;
use mmu::spte::{is_external_blocked, Access, Ept, PagingFormat, SpteKind};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use std::collections::BTreeMap;
use tdx::abi::{leaf, page_type, sept_state, SeptLevel};
use tdx::swmod::{Injection, ModuleLine};
use tdx::Tdx;
use testkit::td::{
    backend as td_backend, build_td, host_page, sw_module_on, Backend, Stage, SwModule, TdMmu,
    TestTd,
};
use testkit::{HostEnv, Rng};

/// Guest memory: the first `GUEST_PAGES` arena pages (2M-aligned, contiguous).
const GUEST_PAGES: u64 = 4096;

type Mmu<'a> = TdMmu<'a>;

/// The TD's mirror as (level in TDX numbering, gpa) → (pfn, is_leaf, blocked).
type View = BTreeMap<(u8, u64), (u64, bool, bool)>;

fn mirror_view(mmu: &Mmu<'_>) -> View {
    let g = mmu.read();
    let mut out = View::new();
    mmu.for_each_table(&g, RootKind::Mirror, |page| {
        let role = page.role();
        let level = role.level;
        for (i, raw) in page.table().iter().enumerate() {
            let gfn = page.gfn().raw() + i as u64 * level.pages();
            let key = (level.get() - 1, gfn << 12);
            match Ept::decode(raw, level) {
                SpteKind::Leaf(l) => {
                    out.insert(key, (l.pfn.raw(), true, is_external_blocked(raw)));
                }
                SpteKind::Table(pfn) => {
                    // The S-EPT table behind it is the child header's external SPT.
                    let _ = pfn;
                }
                _ => {}
            }
        }
        if let (false, Some(spt)) = (role.is_root, page.external_spt()) {
            // This table hangs off an entry one level up.
            let key = (level.get(), page.gfn().raw() << 12);
            out.insert(key, (spt.pfn().raw(), false, false));
        }
    })
    .expect("walk");
    // Table entries' blocked marks live in the parent entry: fill them in.
    let mut blocked_tables = Vec::new();
    mmu.for_each_table(&g, RootKind::Mirror, |page| {
        let level = page.role().level;
        for (i, raw) in page.table().iter().enumerate() {
            if matches!(Ept::decode(raw, level), SpteKind::Table(_)) && is_external_blocked(raw) {
                let gfn = page.gfn().raw() + i as u64 * level.pages();
                blocked_tables.push((level.get() - 1, gfn << 12));
            }
        }
    })
    .expect("walk");
    for k in blocked_tables {
        if let Some(v) = out.get_mut(&k) {
            v.2 = true;
        }
    }
    out
}

fn sept_view(m: &SwModule<'_>, td: &TestTd) -> View {
    let mut out = View::new();
    m.for_each_sept_entry(td.tdr.hpa().pfn(), |gpa, level: SeptLevel, state, pfn| {
        let (leaf, blocked) = match state {
            sept_state::NL_MAPPED => (false, false),
            sept_state::NL_BLOCKED => (false, true),
            sept_state::MAPPED | sept_state::PENDING => (true, false),
            sept_state::BLOCKED | sept_state::PENDING_BLOCKED => (true, true),
            s => panic!("unexpected S-EPT state {s:#x} at {gpa:#x}"),
        };
        out.insert((level.0, gpa), (pfn.raw(), leaf, blocked));
    });
    out
}

struct World<'a> {
    env: &'a HostEnv,
    m: &'a SwModule<'a>,
    td: &'a TestTd,
    guest_base: u64,
}

impl World<'_> {
    fn check(&self, mmu: &Mmu<'_>) {
        let mirror = mirror_view(mmu);
        let sept = sept_view(self.m, self.td);
        assert_eq!(mirror, sept, "mirror and S-EPT differ");
        // PAMT: the TD owns exactly the mapped data pages and the S-EPT pages.
        let tdr = self.td.tdr.hpa().pfn();
        for (&(level, _), &(pfn, leaf, _)) in &mirror {
            let info = self.m.pamt_info(Pfn::new(pfn)).expect("pamt");
            let want = if leaf { page_type::REG } else { page_type::EPT };
            assert_eq!(
                (info.page_type, info.owner),
                (want, tdr),
                "PAMT of {pfn:#x}"
            );
            if leaf {
                assert_eq!(info.size, level);
            }
        }
        let mapped: std::collections::BTreeSet<u64> = mirror
            .iter()
            .filter(|(_, v)| v.1)
            .flat_map(|(&(level, _), v)| v.0..v.0 + (1 << (9 * level as u32)))
            .collect();
        for p in self.guest_base..self.guest_base + GUEST_PAGES {
            let info = self.m.pamt_info(Pfn::new(p)).expect("pamt");
            assert_eq!(
                info.page_type == page_type::REG,
                mapped.contains(&p),
                "guest page {p:#x}"
            );
        }
    }
}

fn run(line: ModuleLine, seed: u64, ops: u64, busy: bool) {
    run_yielding(line, seed, ops, busy, 0)
}

/// [`run`] with every `yield_every`-th yield check of a zap answered "yield" (`0`: never):
/// zaps drop and retake the MMU lock mid-walk, and the software module still sees every
/// REMOVE after its BLOCK and TRACK (HOOK(gmemfault)).
fn run_yielding(line: ModuleLine, seed: u64, ops: u64, busy: bool, yield_every: usize) {
    let env = HostEnv::with_capacity(16384);
    env.mmu_lock().yield_every(yield_every);
    // Guest memory first, so it is contiguous and 2M-aligned.
    let guest: Vec<_> = (0..GUEST_PAGES).map(|_| host_page(&env)).collect();
    let guest_base = guest[0].pfn().raw();
    assert_eq!(guest_base % 512, 0);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 1, 2, Stage::Runnable);
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let world = World {
        env: &env,
        m: &m,
        td: &td,
        guest_base,
    };
    let mut caches = VcpuMmuCaches::new();
    let mut split = SplitCache::new();
    let mut rng = Rng::new(seed);
    let mut counts = [0u64; 5];
    for i in 0..ops {
        // vCPUs come and go, as a running TD's do.
        for v in &td.vcpus {
            if rng.chance(30) {
                m.vcpu_enter(v.hpa().pfn());
            }
        }
        if busy && rng.chance(2) {
            let leaves = [
                leaf::MEM_SEPT_ADD,
                leaf::MEM_PAGE_AUG,
                leaf::MEM_RANGE_BLOCK,
                leaf::MEM_PAGE_REMOVE,
                leaf::MEM_TRACK,
                leaf::MEM_PAGE_DEMOTE,
            ];
            let l = leaves[rng.below(leaves.len() as u64) as usize];
            m.inject(Injection {
                leaf: l,
                nth: rng.below(3),
                count: 1 + rng.below(24),
                status: tdx::abi::status::OPERAND_BUSY | tdx::abi::operand::SEPT_TREE as u64,
            });
        }
        let gfn = rng.below(GUEST_PAGES);
        match rng.below(100) {
            0..=59 => {
                let max_level = if rng.chance(20) {
                    Level::L2M
                } else {
                    Level::L4K
                };
                let f = private_fault(Gfn::new(gfn), Pfn::new(guest_base + gfn), max_level);
                let mut done = false;
                for _ in 0..64 {
                    mmu.topup_vcpu_caches(&mut caches).expect("top-up");
                    let g = mmu.read();
                    match mmu.map(&g, &mut caches, &f) {
                        Ok(FaultOutcome::Retry) => continue,
                        Ok(_) => {
                            done = true;
                            break;
                        }
                        Err(e) => panic!("op {i}: fault {f:?}: {e:?}"),
                    }
                }
                assert!(done || busy, "op {i}: fault never completed");
                counts[0] += 1;
            }
            60..=79 => {
                let bits = rng.below(11);
                let len = 1 + rng.below(1 << bits);
                let splits = rng.chance(50).then_some(&mut split);
                zap(
                    &mmu,
                    ZapTarget::Mirror,
                    gfn,
                    (gfn + len).min(GUEST_PAGES),
                    splits,
                    busy,
                    i,
                );
                counts[1] += 1;
            }
            80..=87 => {
                // Conversion of part of a 2M range to shared, keeping the rest private: the
                // huge leaf, if any, is split (DEMOTE) and only the range goes.
                let base = gfn & !511;
                let start = base + rng.below(512);
                let end = (start + 1 + rng.below(64)).min(base + 512);
                zap(
                    &mmu,
                    ZapTarget::Mirror,
                    start,
                    end,
                    Some(&mut split),
                    busy,
                    i,
                );
                counts[4] += 1;
            }
            88..=94 => {
                // Conversion of a 2M-aligned range to shared and a shared fault in it.
                let start = gfn & !511;
                zap(&mmu, ZapTarget::Mirror, start, start + 512, None, busy, i);
                let f = Fault {
                    gfn: Gfn::new(start + rng.below(512)),
                    kind: GfnKind::Shared,
                    pfn: Pfn::new((1 << 30) + gfn),
                    access: Access::RWX,
                    write: false,
                    max_level: Level::L4K,
                };
                testkit::fault(&mmu, &mut caches, &f).expect("shared fault");
                counts[2] += 1;
            }
            _ => {
                zap(&mmu, ZapTarget::Both, 0, GUEST_PAGES, None, busy, i);
                counts[3] += 1;
            }
        }
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.check(&mmu)))
        {
            eprintln!("seed {seed}: invariant broken after op {i}");
            std::panic::resume_unwind(e);
        }
    }
    let st = mmu.stats();
    eprintln!("ops {counts:?} stats {st:?} backend {:?}", backend.stats());
    let calls = backend.tdx().backend().snapshot();
    for l in tdx::sept_backend::BACKEND_LEAVES {
        eprintln!("  {:<22} {}", leaf::name(l), calls[l as usize]);
    }
    assert!(calls[leaf::MEM_PAGE_AUG as usize] > 0 && calls[leaf::MEM_SEPT_REMOVE as usize] > 0);
    assert!(
        ops < 1000 || calls[leaf::MEM_PAGE_DEMOTE as usize] > 0,
        "the run never split a huge page"
    );

    // Teardown: release the HKID, tear the MMU down (one RECLAIM per page), reclaim the rest.
    m.inject(Injection {
        leaf: 0,
        nth: 0,
        count: 0,
        status: 0,
    });
    for v in &td.vcpus {
        m.vcpu_exit(v.hpa().pfn());
    }
    mmu.free_vcpu_caches(&mut caches);
    mmu.free_split_cache(&mut split);
    backend.release_hkid(&td.vcpus).expect("release HKID");
    let reclaims_before = backend.tdx().backend().calls(leaf::PHYMEM_PAGE_RECLAIM);
    let before = mmu.stats();
    let owned_pages = m.td_info(td.tdr.hpa().pfn()).unwrap().chldcnt;
    mmu.teardown();
    assert_eq!(mmu.stats().pages(), 0);
    assert_eq!(
        mmu.stats().leaked_external_spts + mmu.stats().leaked_private_pages,
        0
    );
    let c = env.counts();
    assert_eq!((c.tables, c.external_spts, c.headers), (0, 0, 0));
    let reclaims = backend.tdx().backend().calls(leaf::PHYMEM_PAGE_RECLAIM) - reclaims_before;
    eprintln!("teardown: {reclaims} RECLAIMs for the memory path");
    // The TD's control pages: TDCX and vCPU pages are typed; find them through the PAMT.
    let tdr = td.tdr.hpa().pfn();
    let mut control = Vec::new();
    for p in (mmu::Pfn::new(testkit::env::BASE_PFN).raw())
        ..(testkit::env::BASE_PFN + env.capacity() as u64)
    {
        if let Some(info) = m.pamt_info(Pfn::new(p)) {
            if info.owner == tdr && info.page_type != 0 {
                control.push(Pfn::new(p).hpa());
            }
        }
    }
    // Only control pages are left: the line's TDCX pages and per vCPU TDVPR + 5 TDCX.
    assert_eq!(
        control.len() as u64,
        line.min_tdcs_pages() + 6 * td.vcpus.len() as u64
    );
    // One RECLAIM per leaf (4K or 2M) and per S-EPT page, nothing else on the memory path.
    let (l4k, l2m) = (
        before.mirror_leaves[0] as u64,
        before.mirror_leaves[1] as u64,
    );
    assert_eq!(
        reclaims,
        l4k + l2m + before.external_spts as u64,
        "one RECLAIM per page"
    );
    assert_eq!(
        owned_pages,
        l4k + 512 * l2m + before.external_spts as u64 + control.len() as u64
    );
    assert_eq!(backend.reclaim_control_pages(&control), 0);
    for p in testkit::env::BASE_PFN..testkit::env::BASE_PFN + env.capacity() as u64 {
        if let Some(info) = m.pamt_info(Pfn::new(p)) {
            assert_eq!(info.page_type, 0, "page {p:#x} still typed after teardown");
        }
    }
    drop(guest);
    let _ = (MmuError::Bugged, world.env);
    assert_eq!(
        env.mmu_lock().yields() > 0,
        yield_every > 0,
        "zaps yielded exactly when asked"
    );
}

/// Zaps `[start, end)`, splitting huge mirror leaves it covers in part if given a split cache
/// (topped up before the lock, as the VM layer does), retrying while the module is busy.
fn zap(
    mmu: &Mmu<'_>,
    target: ZapTarget,
    start: u64,
    end: u64,
    mut split: Option<&mut SplitCache>,
    busy: bool,
    i: u64,
) {
    for _ in 0..64 {
        if let Some(c) = split.as_deref_mut() {
            mmu.topup_split_cache(c).expect("split top-up");
        }
        // HOOK(gmemfault): as the module's zaps, which may yield when asked.
        let g = mmu.write_may_yield();
        let (s, e) = (Gfn::new(start), Gfn::new(end));
        let r = match split.as_deref_mut() {
            Some(c) => mmu.zap_range_split(&g, target, s, e, c),
            None => mmu.zap_range(&g, target, s, e),
        };
        match r {
            Ok(_) => return,
            Err(MmuError::ExternalBusy) if busy => continue,
            Err(e) => {
                panic!(
                    "op {i}: zap [{start:#x}, {end:#x}): {e:?} (last fatal {:#x})",
                    mmu.external().stats().last_fatal_status
                )
            }
        }
    }
    panic!("op {i}: zap kept failing");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

testkit::per_module_line!(
    random_faults_zaps_conversions_then_teardown,
    random_sequence_with_busy_module,
    selftest_runner_agrees_on_the_host,
    selftest_checker_detects_an_extra_sept_entry,
    populated_tds_measure_by_content_and_gpa,
    random_sequence_with_yielding_zaps,
);

fn random_sequence_with_yielding_zaps(line: ModuleLine) {
    run_yielding(
        line,
        env_u64("TDX_E2E_SEED", 9),
        env_u64("TDX_E2E_OPS", 20_000),
        false,
        3,
    );
}

fn random_faults_zaps_conversions_then_teardown(line: ModuleLine) {
    run(
        line,
        env_u64("TDX_E2E_SEED", 7),
        env_u64("TDX_E2E_OPS", 100_000),
        false,
    );
}

fn random_sequence_with_busy_module(line: ModuleLine) {
    run(
        line,
        env_u64("TDX_E2E_SEED", 8),
        env_u64("TDX_E2E_OPS", 30_000),
        true,
    );
}

/// The allocation-free runner the kernel module's debugfs selftest uses, on the host.
fn selftest_runner_agrees_on_the_host(line: ModuleLine) {
    let env = HostEnv::with_capacity(16384);
    let guest: Vec<_> = (0..GUEST_PAGES).map(|_| host_page(&env)).collect();
    let m = sw_module_on(&env, line);
    let td = build_td(&Tdx::new(&m), &env, 3, 2, Stage::Runnable);
    let vcpus: Vec<Pfn> = td.vcpus.iter().map(|v| v.hpa().pfn()).collect();
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let mem = tdx::selftest::GuestMemory {
        base: guest[0].pfn(),
        pages: GUEST_PAGES,
        huge: true,
    };
    let mut rng = tdx::selftest::Rng::new(11);
    let rep = tdx::selftest::run_random(
        &mmu,
        &m,
        td.tdr.hpa().pfn(),
        &mut caches,
        mem,
        &mut rng,
        5000,
        &vcpus,
    )
    .expect("selftest");
    assert_eq!(rep.checks, 5000);
    assert!(rep.faults > 0 && rep.zaps > 0 && rep.conversions > 0);
    assert!(
        m.calls(leaf::MEM_PAGE_DEMOTE) > 0,
        "the self test split no 2M page"
    );
    mmu.free_vcpu_caches(&mut caches);
    backend.release_hkid(&td.vcpus).expect("release");
    mmu.teardown();
    assert_eq!(env.counts().pages(), 0);
    drop(guest);
}

/// The checker catches a mismatch: an S-EPT entry the mirror does not know about.
fn selftest_checker_detects_an_extra_sept_entry(line: ModuleLine) {
    let env = HostEnv::with_capacity(8192);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 4, 1, Stage::Runnable);
    let backend: Backend<'_> = td_backend(&m, &td);
    let mmu: Mmu<'_> = TdpMmu::new(&env, &backend, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let tdr = td.tdr.hpa().pfn();
    assert_eq!(
        tdx::selftest::check_mirror_matches_sept(&mmu, &m, tdr, 0),
        Ok(())
    );
    // Behind the MMU's back: one S-EPT table the mirror does not have.
    tdx.mem_sept_add(
        td.tdr,
        mmu::Gpa::new(0),
        SeptLevel(3),
        host_page(&env).pfn().hpa(),
    )
    .expect("SEPT.ADD");
    assert_eq!(
        tdx::selftest::check_mirror_matches_sept(&mmu, &m, tdr, 7),
        Err(tdx::selftest::SelftestError::ExtraSeptEntries {
            op: 7,
            sept: 1,
            mirror: 0
        })
    );
}

/// Builds a TD whose first `pages` private pages are populated through the MMU with
/// PAGE.ADD + MR.EXTEND from `content(i)`, finalises it and returns its MRTD.
fn populate_and_measure(
    line: ModuleLine,
    content: impl Fn(u64) -> u8,
    pages: u64,
    gpa_offset: u64,
) -> [u8; 48] {
    let env = HostEnv::with_capacity(8192);
    let m = sw_module_on(&env, line);
    let tdx = Tdx::new(&m);
    let td = build_td(&tdx, &env, 5, 1, Stage::VcpusReady);
    let backend: Backend<'_> = td_backend(&m, &td);
    let mmu: Mmu<'_> = TdpMmu::new(&env, &backend, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let source = host_page(&env);
    for i in 0..pages {
        for w in source.words() {
            w.store(
                u64::from_ne_bytes([content(i); 8]),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let gfn = Gfn::new(gpa_offset + i);
        let target = host_page(&env);
        backend.arm_populate(gfn, source.pfn().hpa(), true);
        let f = private_fault(gfn, target.pfn(), Level::L4K);
        assert_eq!(
            testkit::fault(&mmu, &mut caches, &f),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        assert!(
            !backend.disarm_populate(),
            "the fault consumed the population"
        );
        // The TD page holds the source's bytes.
        let first = target.words()[0].load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(first, u64::from_ne_bytes([content(i); 8]));
        // The page now belongs to the TD (the arena accounts it until the env goes).
        let _ = target;
    }
    let c = backend.tdx().backend();
    assert_eq!(c.calls(leaf::MEM_PAGE_ADD), pages);
    assert_eq!(c.calls(leaf::MR_EXTEND), 16 * pages);
    assert_eq!(c.calls(leaf::MEM_PAGE_AUG), 0);
    tdx.mr_finalize(td.tdr).expect("MR.FINALIZE");
    let mrtd = m.mrtd(td.tdr.hpa().pfn()).expect("finalised");
    // After finalize PAGE.ADD is refused: population must fall back to... nothing: it is an error.
    backend.arm_populate(Gfn::new(1000), source.pfn().hpa(), false);
    let f = private_fault(Gfn::new(1000), host_page(&env).pfn(), Level::L4K);
    mmu.topup_vcpu_caches(&mut caches).expect("top-up");
    let g = mmu.read();
    assert_eq!(
        mmu.map(&g, &mut caches, &f),
        Err(MmuError::Bugged),
        "PAGE.ADD after finalize is fatal"
    );
    drop(g);
    mmu.free_vcpu_caches(&mut caches);
    mrtd
}

fn populated_tds_measure_by_content_and_gpa(line: ModuleLine) {
    let a = populate_and_measure(line, |i| i as u8 + 1, 3, 0);
    let b = populate_and_measure(line, |i| i as u8 + 1, 3, 0);
    assert_eq!(a, b, "identical TDs measure the same");
    let c = populate_and_measure(line, |i| if i == 2 { 0xee } else { i as u8 + 1 }, 3, 0);
    assert_ne!(a, c, "a changed page changes MRTD");
    let d = populate_and_measure(line, |i| i as u8 + 1, 3, 16);
    assert_ne!(a, d, "a changed GPA changes MRTD");
}
