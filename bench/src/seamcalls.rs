// SPDX-License-Identifier: GPL-2.0-only
//! SEAMCALLs per operation: the MMU core + S-EPT backend over the software TDX module, counted
//! per leaf by `tdx::seamcall::Counted`. Exact counts, not timings.

use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::spte::Access;
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapStats, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, Pfn};
use tdx::abi::leaf;
use tdx::Tdx;
use testkit::td::{backend as td_backend, build_td, host_page, sw_module, Backend, Stage, TdMmu};
use testkit::HostEnv;

type Mmu<'a> = TdMmu<'a>;

fn total(b: &Backend<'_>) -> u64 {
    b.tdx().backend().total()
}

fn fault(mmu: &Mmu<'_>, caches: &mut VcpuMmuCaches, gfn: u64, base: u64, level: Level) {
    let f = Fault {
        gfn: Gfn::new(gfn),
        kind: GfnKind::Private,
        pfn: Pfn::new(base + gfn),
        access: Access::RWX,
        write: true,
        max_level: level,
    };
    loop {
        mmu.topup_vcpu_caches(caches).expect("top-up");
        let g = mmu.read();
        match mmu.map(&g, caches, &f).expect("map") {
            FaultOutcome::Retry => continue,
            _ => return,
        }
    }
}

fn zap(mmu: &Mmu<'_>, start: u64, end: u64) {
    let g = mmu.write();
    mmu.zap_range(&g, ZapTarget::Mirror, Gfn::new(start), Gfn::new(end))
        .expect("zap");
}

/// A conversion of `[start, end)` that splits the 2M leaves it covers in part.
fn zap_split(mmu: &Mmu<'_>, split: &mut SplitCache, start: u64, end: u64) -> ZapStats {
    mmu.topup_split_cache(split).expect("split top-up");
    let g = mmu.write();
    mmu.zap_range_split(&g, ZapTarget::Mirror, Gfn::new(start), Gfn::new(end), split)
        .expect("zap")
}

/// SEAMCALLs of the backend per leaf, as "N (x LEAF + ...)" over the leaves that moved.
fn breakdown(b: &Backend<'_>, before: &[u64]) -> String {
    let now = b.tdx().backend().snapshot();
    let parts: Vec<String> = tdx::sept_backend::BACKEND_LEAVES
        .iter()
        .filter_map(|&l| {
            let n = now[l as usize] - before[l as usize];
            (n > 0).then(|| format!("{n} {}", leaf::name(l)))
        })
        .collect();
    let total: u64 = tdx::sept_backend::BACKEND_LEAVES
        .iter()
        .map(|&l| now[l as usize] - before[l as usize])
        .sum();
    format!("{total} ({})", parts.join(" + "))
}

/// The 2 MiB private page table: faults at 2M against 512 faults at 4K, a 4 KiB conversion out
/// of a mapped 2 MiB page split (DEMOTE) against zapping the whole leaf, and the S-EPT pages
/// each layout needs.
fn run_huge() {
    const PAGES: u64 = 8 * 512; // 16 MiB, 2M-aligned: three such sets of guest memory
    let env = HostEnv::with_capacity(32768);
    let guest: Vec<_> = (0..3 * PAGES).map(|_| host_page(&env)).collect();
    let base = guest[0].pfn().raw();
    assert_eq!(base % 512, 0, "guest memory must be 2M-aligned");
    let m = sw_module(&env);
    let td = build_td(&Tdx::new(&m), &env, 1, 2, Stage::Runnable);
    let backend: Backend<'_> = td_backend(&m, &td);
    let cfg = MmuConfig {
        max_level: Level::L2M,
        ..MmuConfig::td(GpaWidth::Bits48)
    };
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &backend, cfg).expect("mmu");
    let mut c = VcpuMmuCaches::new();
    let mut split = SplitCache::new();
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    let snap = |b: &Backend<'_>| b.tdx().backend().snapshot();

    // 2 MiB at 2M into a fresh 1 GiB region: PDPT and PD S-EPT pages, then one AUG.
    let s0 = snap(&backend);
    fault(&mmu, &mut c, 0, base, Level::L2M);
    rows.push((
        "2 MiB at 2M, building tables".into(),
        breakdown(&backend, &s0),
        "515 (4K only: 3 SEPT.ADD + 512 AUG)",
    ));
    let s0 = snap(&backend);
    fault(&mmu, &mut c, 512, base, Level::L2M);
    rows.push((
        "2 MiB at 2M, tables present".into(),
        breakdown(&backend, &s0),
        "513 (SEPT.ADD + 512 AUG)",
    ));
    // The same 2 MiB at 4K for comparison (tables above present).
    let s0 = snap(&backend);
    for g in 1024..1536 {
        fault(&mmu, &mut c, g, base, Level::L4K);
    }
    rows.push((
        "2 MiB at 4K (512 faults), tables above present".into(),
        breakdown(&backend, &s0),
        "513",
    ));

    // 4 KiB converted out of a mapped 2 MiB page.
    let s0 = snap(&backend);
    let k0 = backend.stats().kicks;
    let z = zap_split(&mmu, &mut split, 512 + 5, 512 + 6);
    assert_eq!((z.splits, z.leaves), (1, 1));
    rows.push((
        format!(
            "convert 4 KiB of a mapped 2 MiB: split (DEMOTE), {} kicks, 511 pages stay",
            backend.stats().kicks - k0
        ),
        breakdown(&backend, &s0),
        "4 (BLOCK, TRACK, REMOVE, WBINVD; 4K pages only)",
    ));
    let s0 = snap(&backend);
    let k0 = backend.stats().kicks;
    zap(&mmu, 5, 6);
    rows.push((
        format!(
            "convert 4 KiB of a mapped 2 MiB: zap the whole leaf, {} kick, 511 pages lost",
            backend.stats().kicks - k0
        ),
        breakdown(&backend, &s0),
        "-",
    ));
    // What the zapped leaf costs to get back at 4K (the guest touches the other 511 pages).
    let s0 = snap(&backend);
    for g in (0..512).filter(|&g| g != 5) {
        fault(&mmu, &mut c, g, base, Level::L4K);
    }
    rows.push((
        "... and refaulting its other 511 pages at 4K".into(),
        breakdown(&backend, &s0),
        "-",
    ));

    // S-EPT pages: 8 x 2M in a fresh GiB against 8 x 2M at 4K in another.
    let spt0 = mmu.stats().external_spts;
    // GiB 1 backed by the second set of pages, GiB 2 by the third (`fault` maps base + gfn).
    for i in 0..8 {
        fault(
            &mmu,
            &mut c,
            (1 << 18) + i * 512,
            base + PAGES - (1 << 18),
            Level::L2M,
        );
    }
    let spt_2m = mmu.stats().external_spts - spt0;
    let spt0 = mmu.stats().external_spts;
    for g in 0..PAGES {
        fault(
            &mmu,
            &mut c,
            (2 << 18) + g,
            base + 2 * PAGES - (2 << 18),
            Level::L4K,
        );
    }
    let spt_4k = mmu.stats().external_spts - spt0;
    rows.push((
        "S-EPT pages for 16 MiB in a fresh GiB: 2M leaves / 4K leaves".into(),
        format!("{spt_2m} / {spt_4k}"),
        "9 (4K only: PD + 8 PT)",
    ));

    mmu.free_vcpu_caches(&mut c);
    mmu.free_split_cache(&mut split);
    backend.release_hkid(&td.vcpus).expect("release");
    mmu.teardown();
    println!("\n2 MiB private pages: SEAMCALLs (MMU + S-EPT backend over the software TDX module, TD runnable)\n");
    println!("| operation | this project | upstream KVM (4K only) |");
    println!("|---|---|---:|");
    for (what, ours, up) in rows {
        println!("| {what} | {ours} | {up} |");
    }
    drop(guest);
}

/// Prints the table.
pub fn run() {
    const PAGES: u64 = 4096; // 16 MiB of guest memory
    let env = HostEnv::with_capacity(16384);
    let guest: Vec<_> = (0..PAGES).map(|_| host_page(&env)).collect();
    let base = guest[0].pfn().raw();
    let m = sw_module(&env);
    let td = build_td(&Tdx::new(&m), &env, 1, 2, Stage::Runnable);
    let backend: Backend<'_> = td_backend(&m, &td);
    let cfg = MmuConfig {
        max_level: Level::L2M,
        ..MmuConfig::td(GpaWidth::Bits48)
    };
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &backend, cfg).expect("mmu");
    let mut c = VcpuMmuCaches::new();
    let mut rows: Vec<(String, String, &str)> = Vec::new();

    // 4K fault building every table below the root.
    let t_2m = total(&backend);
    fault(&mmu, &mut c, 0, base, Level::L4K);
    rows.push((
        "4K fault, building tables".into(),
        format!("{}", total(&backend) - t_2m),
        "4 (3 SEPT.ADD + AUG)",
    ));

    // The rest of 2 MiB of private memory at 4K (the first page above built the tables).
    let t0 = total(&backend);
    for g in 1..512 {
        fault(&mmu, &mut c, g, base, Level::L4K);
    }
    let n = total(&backend) - t0;
    rows.push((
        "4K fault, tables present".into(),
        format!("{:.3}", n as f64 / 511.0),
        "1 (AUG)",
    ));
    // All 512 faults, the table-building one included, counted from before the first.
    rows.push((
        "2 MiB faulted at 4K (512 faults)".into(),
        format!("{}", total(&backend) - t_2m),
        "515",
    ));

    // A range zap of those 512 pages, which also empties and frees their S-EPT table.
    let t0 = total(&backend);
    let k0 = backend.stats().kicks;
    zap(&mmu, 0, 512);
    let n = total(&backend) - t0;
    rows.push((
        "range zap of 512 x 4K: SEAMCALLs per page".into(),
        format!("{:.3}", n as f64 / 512.0),
        "4 + a kick per page",
    ));
    rows.push((
        "range zap of 512 x 4K: TRACKs / kicks per range".into(),
        format!(
            "{} / {}",
            backend.tdx().backend().calls(leaf::MEM_TRACK),
            backend.stats().kicks - k0
        ),
        "512 / 512",
    ));

    // Conversion: S-EPT pages reclaimed.
    fault(&mmu, &mut c, 512 + 7, base, Level::L4K);
    let spt1 = mmu.stats().external_spts;
    zap(&mmu, 512, 1024);
    rows.push((
        "S-EPT pages back after converting a 2 MiB range".into(),
        format!("{}", spt1 - mmu.stats().external_spts),
        "0 (kept until teardown)",
    ));

    // Teardown of 8 MiB mapped at 4K.
    for g in 1024..3072 {
        fault(&mmu, &mut c, g, base, Level::L4K);
    }
    let st = mmu.stats();
    let pages = st.mirror_leaves[0] as u64 + st.external_spts as u64;
    mmu.free_vcpu_caches(&mut c);
    backend.release_hkid(&td.vcpus).expect("release");
    let t0 = total(&backend);
    mmu.teardown();
    let n = total(&backend) - t0;
    rows.push((
        format!("teardown: SEAMCALLs per page ({pages} pages)"),
        format!("{:.3}", n as f64 / pages as f64),
        "4 + a kick per page",
    ));

    println!("\nSEAMCALLs per operation (MMU + S-EPT backend over the software TDX module, TD runnable)\n");
    println!("| operation | this project | upstream KVM |");
    println!("|---|---:|---:|");
    for (what, ours, up) in rows {
        println!("| {what} | {ours} | {up} |");
    }
    drop(guest);
    run_huge();
}
