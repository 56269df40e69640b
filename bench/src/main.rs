// SPDX-License-Identifier: GPL-2.0-only
//! MMU core benchmark: prints figures, asserts nothing about time.
//!
//! - faults per second and external hook calls per fault, shared vs mirror, 4K and 2M;
//! - zap cost per page and hook calls per zapped page;
//! - page-table memory per GiB mapped (tables, external SPTs, headers);
//! - memory held in one vCPU's caches after a top-up, against upstream's 40-object caches.
//!
//! Run with `cargo run --release -p bench` (or `make bench`). Times are wall-clock on whatever
//! machine runs it; hook counts and memory figures are exact.

use mmu::cache::VcpuMmuCaches;
use mmu::external::{ExternalError, ExternalPageTable, PageRelease};
use mmu::page::{ExternalSpt, MmuPage, SptRelease};
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, Pfn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use testkit::HostEnv;

mod seamcalls;

/// Hooks that only count: the cost measured is the MMU's own.
#[derive(Default)]
struct CountingExternal {
    calls: AtomicU64,
}

impl CountingExternal {
    fn bump(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl ExternalPageTable for CountingExternal {
    fn link_spt(&self, _: Gfn, _: Level, _: &ExternalSpt) -> Result<(), ExternalError> {
        self.bump();
        Ok(())
    }
    fn set_spte(&self, _: Gfn, _: Level, _: Pfn) -> Result<(), ExternalError> {
        self.bump();
        Ok(())
    }
    fn block_spte(&self, _: Gfn, _: Level, _: bool) -> Result<(), ExternalError> {
        self.bump();
        Ok(())
    }
    fn flush(&self) -> Result<(), ExternalError> {
        self.bump();
        Ok(())
    }
    fn split_spte(&self, _: Gfn, _: Level, _: Pfn, _: &ExternalSpt) -> Result<(), ExternalError> {
        self.bump();
        Ok(())
    }
    fn remove_spte(&self, _: Gfn, _: Level, _: Pfn) -> Result<PageRelease, ExternalError> {
        self.bump();
        Ok(PageRelease::Returned)
    }
    fn free_spt(&self, _: Gfn, _: Level, _: &ExternalSpt) -> Result<SptRelease, ExternalError> {
        self.bump();
        Ok(SptRelease::Returned)
    }
}

type Mmu<'a> = TdpMmu<Ept, &'a HostEnv, &'a CountingExternal>;

const GIB_PAGES: u64 = 512 * 512;

struct Row {
    what: String,
    per_sec: f64,
    ns_per_op: f64,
    hooks_per_op: f64,
    pt_kib_per_gib: f64,
}

/// Maps 1 GiB of `kind` memory at `level` with one fault per leaf; returns the row.
fn fault_gib(kind: GfnKind, level: Level) -> (Row, Row) {
    let env = HostEnv::with_capacity(1 << 16);
    let ext = CountingExternal::default();
    let mut mmu: Mmu<'_> = TdpMmu::new(&env, &ext, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let base = GIB_PAGES; // 1 GiB-aligned, not at 0
    let pfn_base = 1u64 << 30;
    let step = level.pages();
    let faults = GIB_PAGES / step;
    let before_pages = mmu.stats().pages();
    let t = Instant::now();
    for i in 0..faults {
        let gfn = base + i * step;
        let f = Fault {
            gfn: Gfn::new(gfn),
            kind,
            pfn: Pfn::new(pfn_base + gfn),
            access: Access::RWX,
            write: true,
            max_level: level,
        };
        mmu.topup_vcpu_caches(&mut caches).expect("top-up");
        let g = mmu.read();
        match mmu.map(&g, &mut caches, &f) {
            Ok(FaultOutcome::Mapped(l)) if l == level => {}
            r => panic!("unexpected {r:?}"),
        }
    }
    let dt = t.elapsed();
    let st = mmu.stats();
    let pt_pages = st.pages() - before_pages;
    let headers = st.headers as f64 * size_of::<MmuPage>() as f64;
    let name = match kind {
        GfnKind::Private => "mirror",
        GfnKind::Shared => "shared",
    };
    let lvl = if level == Level::L4K { "4K" } else { "2M" };
    let fault_row = Row {
        what: format!("fault {name} {lvl} (building tables)"),
        per_sec: faults as f64 / dt.as_secs_f64(),
        ns_per_op: dt.as_nanos() as f64 / faults as f64,
        hooks_per_op: ext.calls() as f64 / faults as f64,
        pt_kib_per_gib: (pt_pages as f64 * 4096.0 + headers) / 1024.0,
    };

    // Zap the whole GiB (one zap of every leaf).
    let hooks_before = ext.calls();
    let t = Instant::now();
    {
        let g = mmu.write();
        let target = if kind == GfnKind::Private {
            ZapTarget::Mirror
        } else {
            ZapTarget::Shared
        };
        mmu.zap_range(&g, target, Gfn::new(base), Gfn::new(base + GIB_PAGES))
            .expect("zap");
    }
    let dz = t.elapsed();
    let zap_row = Row {
        what: format!("zap {name} {lvl} (1 GiB range)"),
        per_sec: faults as f64 / dz.as_secs_f64(),
        ns_per_op: dz.as_nanos() as f64 / faults as f64,
        hooks_per_op: (ext.calls() - hooks_before) as f64 / faults as f64,
        pt_kib_per_gib: 0.0,
    };
    mmu.free_vcpu_caches(&mut caches);
    mmu.teardown();
    assert_eq!(env.counts().pages(), 0);
    (fault_row, zap_row)
}

/// One 4K fault of `kind` at `gfn` backed by PFN `2^30 + gfn`, topping up first.
fn fault_4k(mmu: &Mmu<'_>, caches: &mut VcpuMmuCaches, kind: GfnKind, gfn: u64) -> FaultOutcome {
    let f = Fault {
        gfn: Gfn::new(gfn),
        kind,
        pfn: Pfn::new((1 << 30) + gfn),
        access: Access::RWX,
        write: true,
        max_level: Level::L4K,
    };
    mmu.topup_vcpu_caches(caches).expect("top-up");
    let g = mmu.read();
    mmu.map(&g, caches, &f).expect("map")
}

/// Refaults into existing tables: the steady-state fault cost.
fn refault_4k(kind: GfnKind) -> Row {
    let env = HostEnv::with_capacity(1 << 16);
    let ext = CountingExternal::default();
    let mmu: Mmu<'_> = TdpMmu::new(&env, &ext, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let n = 65536u64;
    let fault = |gfn: u64, caches: &mut VcpuMmuCaches| fault_4k(&mmu, caches, kind, gfn);
    for gfn in 0..n {
        fault(gfn, &mut caches);
    }
    {
        let g = mmu.write();
        let target = if kind == GfnKind::Private {
            ZapTarget::Mirror
        } else {
            ZapTarget::Shared
        };
        // Zap leaves only: one 4K leaf per L1 table stays, so every table survives.
        for t in 0..n / 512 {
            mmu.zap_range(&g, target, Gfn::new(t * 512 + 1), Gfn::new(t * 512 + 512))
                .expect("zap");
        }
    }
    let hooks = ext.calls();
    let t = Instant::now();
    for t2 in 0..n / 512 {
        for i in 1..512 {
            assert!(matches!(
                fault(t2 * 512 + i, &mut caches),
                FaultOutcome::Mapped(_)
            ));
        }
    }
    let dt = t.elapsed();
    let faults = n / 512 * 511;
    let name = if kind == GfnKind::Private {
        "mirror"
    } else {
        "shared"
    };
    mmu.free_vcpu_caches(&mut caches);
    Row {
        what: format!("fault {name} 4K (tables present)"),
        per_sec: faults as f64 / dt.as_secs_f64(),
        ns_per_op: dt.as_nanos() as f64 / faults as f64,
        hooks_per_op: (ext.calls() - hooks) as f64 / faults as f64,
        pt_kib_per_gib: 0.0,
    }
}

/// `bench faults <shared|mirror> N`: N 4K faults into present tables and nothing else, for
/// counting instructions per fault under `valgrind --tool=callgrind` (run with N and with 0 and
/// divide the difference by N; `scripts/instr-per-fault.sh` does that).
fn faults_only(kind: GfnKind, n: u64) {
    let env = HostEnv::with_capacity(1 << 14);
    let ext = CountingExternal::default();
    let mmu: Mmu<'_> = TdpMmu::new(&env, &ext, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    // Tables for the first 2 MiB exist before the measured faults.
    let fault = |gfn: u64, caches: &mut VcpuMmuCaches| fault_4k(&mmu, caches, kind, gfn);
    fault(511, &mut caches);
    for i in 0..n {
        fault(i % 511, &mut caches);
        if i % 511 == 510 {
            let g = mmu.write();
            let target = if kind == GfnKind::Private {
                ZapTarget::Mirror
            } else {
                ZapTarget::Shared
            };
            mmu.zap_range(&g, target, Gfn::new(0), Gfn::new(511))
                .expect("zap");
        }
    }
    mmu.free_vcpu_caches(&mut caches);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "faults" {
        let kind = if args[2] == "mirror" {
            GfnKind::Private
        } else {
            GfnKind::Shared
        };
        faults_only(kind, args[3].parse().unwrap_or(0));
        return;
    }
    println!("MMU core benchmark (EPT format, 48-bit GPA, TD with shared + mirror roots)\n");
    let mut rows = Vec::new();
    let mut zaps = Vec::new();
    for kind in [GfnKind::Shared, GfnKind::Private] {
        for level in [Level::L4K, Level::L2M] {
            let (f, z) = fault_gib(kind, level);
            rows.push(f);
            zaps.push(z);
        }
        rows.push(refault_4k(kind));
    }
    println!("| operation | ops/s | ns/op | hook calls/op | page-table memory per GiB mapped |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows.iter().chain(zaps.iter()) {
        let mem = if r.pt_kib_per_gib > 0.0 {
            format!("{:.0} KiB", r.pt_kib_per_gib)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {} |",
            r.what, r.per_sec, r.ns_per_op, r.hooks_per_op, mem
        );
    }

    let env = HostEnv::with_capacity(64);
    let ext = CountingExternal::default();
    let mmu: Mmu<'_> = TdpMmu::new(&env, &ext, MmuConfig::td(GpaWidth::Bits48)).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    mmu.topup_vcpu_caches(&mut caches).expect("top-up");
    let h = caches.holdings();
    let ours = h.pages() * 4096 + h.headers * size_of::<MmuPage>();
    // Upstream: shadow-page, external-SPT caches of 40 pages each, 40 headers (~184 bytes) and
    // 40 pte_list_desc objects (~128 bytes), topped up to KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE = 40.
    let upstream = 40 * 4096 * 2 + 40 * 184 + 40 * 128;
    println!(
        "\nper-vCPU cache after top-up (TD, 4-level): {} table pages + {} external SPTs + {} headers \
         ({} B each) = {:.1} KiB (upstream KVM tops up to 40 objects per cache: ~{:.0} KiB)",
        h.tables,
        h.external_spts,
        h.headers,
        size_of::<MmuPage>(),
        ours as f64 / 1024.0,
        upstream as f64 / 1024.0
    );
    mmu.free_vcpu_caches(&mut caches);
    seamcalls::run();
}
