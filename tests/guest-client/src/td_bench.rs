// SPDX-License-Identifier: GPL-2.0-only
//! `guest-client --bench-prefault`, the TD part: on finalised TDs, 256 MiB pre-faulted private
//! (2 MiB leaves, then 4 KiB forced by a guest_memfd offset that is not 2 MiB-congruent to the
//! GPA) and shared; KVM_TDX_INIT_MEM_REGION of 16 MiB measured and unmeasured. SEAMCALLs come
//! from the VM's statistics, times from the wall clock. Figures, not tests: under TCG with a
//! debug kernel (KASAN, lockdep) the times are only indicative; the ratios and counts are the
//! point.

use super::memory::*;
use crate::prefault::{create_vcpu, pre_fault, vm_stat};
use crate::tdx_vm::{add_region, finalize, init_vcpus, init_vm_default};
use crate::*;
use std::time::Instant;

/// A TD with one initialised vCPU and one guest_memfd slot of `size` bytes at GPA 0, bound at
/// file offset `gmem_offset`, PRIVATE or shared; not finalised yet.
struct Td {
    vm: OwnedFd,
    vcpu: OwnedFd,
    _gmem: OwnedFd,
    mem: Anon,
}

fn td(size: u64, gmem_offset: u64, private: bool) -> Result<Td, String> {
    let vm = vm_of(KVM_X86_TDX_VM)?;
    init_vm_default(vm.as_raw_fd())?;
    let vcpu = create_vcpu(&vm, 0)?;
    init_vcpus(&[&vcpu])?;
    let mem = Anon::new(size);
    let g = gmem(&vm, size + gmem_offset.next_multiple_of(2 * MB), 0)
        .map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: g.as_raw_fd() as u32,
        gmem_offset,
        ..slot(0, 0, size, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    if private {
        let a = Attrs {
            address: 0,
            size,
            attributes: PRIVATE,
            flags: 0,
        };
        eq(attrs(&vm, a), Ok(0), "PRIVATE")?;
    }
    Ok(Td {
        vm,
        vcpu,
        _gmem: g,
        mem,
    })
}

/// Pre-faults `[0, size)`; the nanoseconds it took.
fn pre_fault_all(vcpu: &OwnedFd, size: u64) -> Result<u128, String> {
    let t = Instant::now();
    let (mut gpa, mut left) = (0, size);
    while left != 0 {
        let (r, range) = pre_fault(vcpu, gpa, left, 0);
        match r {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => return Err(format!("pre-fault at {gpa:#x}: errno {e}")),
        }
        (gpa, left) = (range.gpa, range.size);
    }
    Ok(t.elapsed().as_nanos())
}

const SEAMCALLS: [&str; 4] = [
    "tdh_mem_sept_add",
    "tdh_mem_page_aug",
    "tdh_mem_page_add",
    "tdh_mr_extend",
];

fn seamcalls(vm: &OwnedFd) -> Result<u64, String> {
    SEAMCALLS.iter().map(|n| vm_stat(vm, n)).sum()
}

/// One pre-fault measurement: (ns per 4 KiB, SEAMCALLs, a description).
fn one(size: u64, private: bool, gmem_offset: u64) -> Result<(f64, u64, String), String> {
    let t = td(size, gmem_offset, private)?;
    finalize(t.vm.as_raw_fd())?;
    let ns = pre_fault_all(&t.vcpu, size)?;
    let s = |n: &str| vm_stat(&t.vm, n);
    let calls = seamcalls(&t.vm)?;
    let pages = size / PS;
    let gib = size as f64 / (1u64 << 30) as f64;
    let per_gib = |n: u64| n as f64 * 4.0 / gib;
    let (k4, m2) = if private {
        (s("mirror_pages_4k")?, s("mirror_pages_2m")?)
    } else {
        (s("shared_pages_4k")?, s("shared_pages_2m")?)
    };
    let line = format!(
        "{:.0} ns per 4 KiB, leaves 4K {k4} 2M {m2}, SEAMCALLs {calls} ({:.4} per 4 KiB: \
         SEPT.ADD {} PAGE.AUG {}), page tables per GiB: mirror root {:.0} KiB, S-EPT {:.0} KiB, \
         shared root {:.0} KiB",
        ns as f64 / pages as f64,
        calls as f64 / pages as f64,
        s("tdh_mem_sept_add")?,
        s("tdh_mem_page_aug")?,
        per_gib(s("mirror_table_pages")?),
        per_gib(s("external_spt_pages")?),
        per_gib(s("shared_table_pages")?),
    );
    drop(t.mem);
    Ok((ns as f64 / pages as f64, calls, line))
}

/// INIT_MEM_REGION of `size` bytes: (ns, SEAMCALLs).
fn init_mem(size: u64, measure: bool) -> Result<(u128, u64), String> {
    let t = td(size, 0, true)?;
    let src = Anon::new(size);
    // SAFETY: the mapping just made, `size` bytes.
    unsafe { std::ptr::write_bytes(src.hva() as *mut u8, 0x5a, size as usize) };
    let start = Instant::now();
    add_region(t.vcpu.as_raw_fd(), measure, src.hva(), 0, size / PS)
        .map_err(|e| format!("INIT_MEM_REGION: errno {e}"))?;
    let ns = start.elapsed().as_nanos();
    Ok((ns, seamcalls(&t.vm)?))
}

/// The TD figures.
pub(crate) fn bench() {
    const SIZE: u64 = 256 * MB;
    let shared = one(SIZE, false, 0);
    let p2m = one(SIZE, true, 0);
    // A guest_memfd offset of 4 KiB: no 2 MiB GFN range is backed by one folio, so every
    // private leaf is 4 KiB (memcore::prefault::private_max_level's congruence rule).
    let p4k = one(SIZE, true, PS);
    for (what, r) in [
        ("shared", &shared),
        ("private, 2 MiB pages", &p2m),
        ("private, 4 KiB forced (gmem offset 4 KiB)", &p4k),
    ] {
        match r {
            Ok((_, _, line)) => println!("bench TD pre-fault 256 MiB {what}: {line}"),
            Err(e) => println!("bench TD pre-fault 256 MiB {what}: not measured: {e}"),
        }
    }
    if let (Ok(s), Ok(p2), Ok(p4)) = (&shared, &p2m, &p4k) {
        let per_2m = |calls: u64| calls as f64 / (SIZE / (2 * MB)) as f64;
        println!(
            "bench TD pre-fault ratios: private(4K)/shared time {:.2}, private(2M)/shared time \
             {:.2}, private 2M/4K time {:.3}; SEAMCALLs per 2 MiB: 2M pages {:.2}, 4K pages {:.2}",
            p4.0 / s.0,
            p2.0 / s.0,
            p2.0 / p4.0,
            per_2m(p2.1),
            per_2m(p4.1),
        );
    }
    const IMG: u64 = 16 * MB;
    let m = init_mem(IMG, true);
    let u = init_mem(IMG, false);
    for (what, r) in [("measured", &m), ("unmeasured", &u)] {
        match r {
            Ok((ns, calls)) => println!(
                "bench TD INIT_MEM_REGION 16 MiB {what}: {:.1} ms, {:.0} ns per 4 KiB, SEAMCALLs \
                 {calls} ({:.2} per 4 KiB)",
                *ns as f64 / 1e6,
                *ns as f64 / (IMG / PS) as f64,
                *calls as f64 / (IMG / PS) as f64
            ),
            Err(e) => println!("bench TD INIT_MEM_REGION 16 MiB {what}: not measured: {e}"),
        }
    }
    if let (Ok(m), Ok(u)) = (&m, &u) {
        println!(
            "bench TD INIT_MEM_REGION measured/unmeasured time {:.2}",
            m.0 as f64 / u.0 as f64
        );
    }
}
