// SPDX-License-Identifier: GPL-2.0-only
//! SEAMCALLs per operation: the MMU core + S-EPT backend over the software TDX module, counted
//! per leaf by `tdx::seamcall::Counted`. Exact counts, not timings.

use mmu::cache::VcpuMmuCaches;
use mmu::spte::Access;
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapTarget};
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
}
