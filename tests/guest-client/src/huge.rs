// SPDX-License-Identifier: GPL-2.0-only
//! 2 MiB private pages end to end: a uniformly private, 2 MiB-aligned range backed by one
//! 2 MiB guest_memfd folio is pre-faulted as one 2M leaf (on a TD one TDH.MEM.PAGE.AUG at 2M);
//! converting or punching 4 KiB of it splits the leaf (TD: one TDH.MEM.PAGE.DEMOTE) and the
//! other 511 pages stay mapped; conversion back and re-pre-fault; teardown with every count
//! zero. A software-protected VM keeps upstream's whole-leaf zap (its private memory is in its
//! one root; the guest_memfd keeps the contents). `--bench-huge` prints the SEAMCALL counts.

use super::memory::*;
use super::prefault::{create_vcpu, vm_stat};
use crate::*;

const KVM_MEMORY_ENCRYPT_OP: u64 = (3 << 30) | (8 << 16) | (0xAE << 8) | 0xba;
const INIT_VCPU: u32 = 2;
const FINALIZE_VM: u32 = 4;

/// `struct kvm_tdx_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Cmd {
    id: u32,
    flags: u32,
    data: u64,
    hw_error: u64,
}

const _: () = assert!(std::mem::size_of::<Cmd>() == 24);

/// `struct kvm_pre_fault_memory`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PreFault {
    gpa: u64,
    size: u64,
    flags: u64,
    padding: [u64; 5],
}

const _: () = assert!(std::mem::size_of::<PreFault>() == 64);

/// `KVM_PRE_FAULT_MEMORY` of `[gpa, gpa + size)` until done.
fn pre_fault_all_at(vcpu: &OwnedFd, gpa: u64, size: u64) -> Result<(), String> {
    let mut r = PreFault {
        gpa,
        size,
        ..Default::default()
    };
    while r.size != 0 {
        let res = ioctl(
            vcpu.as_raw_fd(),
            iowr(0xd5, 64),
            &mut r as *mut PreFault as u64,
        );
        match res {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => return Err(format!("pre-fault at {:#x}: errno {e}", r.gpa)),
        }
    }
    Ok(())
}

fn tdx_op(fd: &OwnedFd, id: u32, data: u64, what: &str) -> Result<(), String> {
    let mut c = Cmd {
        id,
        data,
        ..Default::default()
    };
    let r = ioctl(
        fd.as_raw_fd(),
        KVM_MEMORY_ENCRYPT_OP,
        &mut c as *mut Cmd as u64,
    );
    eq(r.map(|_| ()), Ok(()), what)?;
    eq(c.hw_error, 0, what)
}

/// A finalized TD without an initial image (INIT_VM, one vCPU, INIT_VCPU, FINALIZE): what
/// pre-faulting needs.
fn finalized_td() -> Result<(OwnedFd, OwnedFd), String> {
    let vm = vm_of(KVM_X86_TDX_VM)?;
    tdx_vm::init_vm_default(vm.as_raw_fd())?;
    let vcpu = create_vcpu(&vm, 0)?;
    tdx_op(&vcpu, INIT_VCPU, 0x80_0000, "INIT_VCPU")?;
    tdx_op(&vm, FINALIZE_VM, 0, "FINALIZE")?;
    Ok((vm, vcpu))
}

/// The S-EPT backend's SEAMCALLs of the memory path, cumulative, by leaf.
const LEAVES: [&str; 9] = [
    "tdh_mem_sept_add",
    "tdh_mem_page_aug",
    "tdh_mem_range_block",
    "tdh_mem_range_unblock",
    "tdh_mem_track",
    "tdh_mem_page_demote",
    "tdh_mem_page_remove",
    "tdh_mem_sept_remove",
    "tdh_phymem_page_wbinvd",
];

/// Leaves mapped per level and (TD) SEAMCALLs per leaf, from the VM stats fd.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Snap {
    k4: u64,
    m2: u64,
    calls: [u64; LEAVES.len()],
}

impl Snap {
    fn take(vm: &OwnedFd, td: bool) -> Result<Snap, String> {
        let root = if td { "mirror" } else { "shared" };
        let mut s = Snap {
            k4: vm_stat(vm, &format!("{root}_pages_4k"))?,
            m2: vm_stat(vm, &format!("{root}_pages_2m"))?,
            ..Default::default()
        };
        if td {
            for (c, l) in s.calls.iter_mut().zip(LEAVES) {
                *c = vm_stat(vm, l)?;
            }
        }
        Ok(s)
    }

    /// SEAMCALLs of `leaf` since `before`.
    fn d(&self, before: &Snap, leaf: &str) -> u64 {
        let i = LEAVES.iter().position(|l| *l == leaf).unwrap_or(0);
        self.calls[i] - before.calls[i]
    }

    /// Every SEAMCALL since `before`.
    fn total(&self, before: &Snap) -> u64 {
        self.calls
            .iter()
            .zip(before.calls.iter())
            .map(|(a, b)| a - b)
            .sum()
    }

    /// The non-zero deltas since `before`, for messages and the bench.
    fn show(&self, before: &Snap) -> String {
        let mut out = Vec::new();
        for l in LEAVES {
            let n = self.d(before, l);
            if n != 0 {
                out.push(format!("{n} {}", l.trim_start_matches("tdh_")));
            }
        }
        format!("{} ({})", self.total(before), out.join(" + "))
    }
}

fn private_attrs(address: u64, size: u64, private: bool) -> Attrs {
    Attrs {
        address,
        size,
        attributes: if private { PRIVATE } else { 0 },
        flags: 0,
    }
}

/// A VM of `ty` with a 4 MiB guest_memfd slot at GPA 0, all PRIVATE, and a vCPU.
struct Setup {
    vcpu: OwnedFd,
    fd: OwnedFd,
    vm: OwnedFd,
    _mem: Anon,
}

fn setup(td: bool) -> Result<Setup, String> {
    let (vm, vcpu) = if td {
        finalized_td()?
    } else {
        let vm = vm_of(SWP)?;
        let vcpu = create_vcpu(&vm, 0)?;
        (vm, vcpu)
    };
    let mem = Anon::new(4 * MB);
    let fd = gmem(&vm, 4 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    eq(attrs(&vm, private_attrs(0, 4 * MB, true)), Ok(0), "PRIVATE")?;
    Ok(Setup {
        vcpu,
        fd,
        vm,
        _mem: mem,
    })
}

/// Pre-fault, split by conversion and by hole punch, convert back, re-pre-fault, teardown.
fn huge_private_split(td: bool) -> Result<(), String> {
    let s = setup(td)?;
    let snap = |what: &str| Snap::take(&s.vm, td).map_err(|e| format!("{what}: {e}"));
    let s0 = snap("start")?;
    pre_fault_all_at(&s.vcpu, 0, 4 * MB)?;
    let s1 = snap("pre-fault")?;
    eq((s1.k4, s1.m2), (0, 2), "4 MiB pre-faulted as two 2M leaves")?;
    if td {
        eq(s1.d(&s0, "tdh_mem_page_aug"), 2, "one AUG at 2M per 2 MiB")?;
        eq(s1.d(&s0, "tdh_mem_page_demote"), 0, "nothing split yet")?;
    }

    // Convert 4 KiB in the first 2 MiB to shared.
    eq(
        attrs(&s.vm, private_attrs(4 * PS, PS, false)),
        Ok(0),
        "4 KiB to shared",
    )?;
    let s2 = snap("convert")?;
    if td {
        eq((s2.k4, s2.m2), (511, 1), "split: 511 4K leaves stay")?;
        eq(s2.d(&s1, "tdh_mem_page_demote"), 1, "one DEMOTE")?;
        eq(s2.d(&s1, "tdh_mem_page_remove"), 1, "one page removed")?;
        eq(s2.d(&s1, "tdh_mem_page_aug"), 0, "no refault")?;
    } else {
        // Upstream's whole-leaf zap of the one root: the guest_memfd keeps the contents.
        eq((s2.k4, s2.m2), (0, 1), "the straddling 2M leaf goes whole")?;
    }

    // Punch a 4 KiB hole in the second 2 MiB.
    eq(
        fallocate(&s.fd, KEEP | PUNCH, 2 * MB + 8 * PS, PS),
        Ok(()),
        "punch 4 KiB",
    )?;
    let s3 = snap("punch")?;
    if td {
        eq((s3.k4, s3.m2), (1022, 0), "split: 511 more 4K leaves stay")?;
        eq(s3.d(&s2, "tdh_mem_page_demote"), 1, "one DEMOTE")?;
        eq(s3.d(&s2, "tdh_mem_page_remove"), 1, "one page removed")?;
    } else {
        eq((s3.k4, s3.m2), (0, 0), "the straddling 2M leaf goes whole")?;
    }
    // Another hole next to it: the leaf is 4K already, nothing to split.
    eq(
        fallocate(&s.fd, KEEP | PUNCH, 2 * MB + 9 * PS, PS),
        Ok(()),
        "punch the next 4 KiB",
    )?;
    let s4 = snap("punch again")?;
    if td {
        eq((s4.k4, s4.m2), (1021, 0), "one more 4K leaf gone")?;
        eq(s4.d(&s3, "tdh_mem_page_demote"), 0, "no DEMOTE")?;
    }

    // Back to private; pre-fault everything again: the gaps at 4K (the mirror never replaces a
    // table under the shared lock; PAGE.PROMOTE is not used), nothing else touched on a TD.
    eq(
        attrs(&s.vm, private_attrs(4 * PS, PS, true)),
        Ok(0),
        "back to private",
    )?;
    pre_fault_all_at(&s.vcpu, 0, 4 * MB)?;
    let s5 = snap("re-pre-fault")?;
    if td {
        eq((s5.k4, s5.m2), (1024, 0), "every page mapped at 4K")?;
        eq(s5.d(&s4, "tdh_mem_page_aug"), 3, "the three gaps AUGed")?;
    } else {
        // The first 2 MiB is uniform again: one 2M leaf; the second is backed by the folio the
        // holes did not free (kept whole, zeroed there) and maps at 2M as well.
        eq((s5.k4, s5.m2), (0, 2), "every page mapped at 2M again")?;
    }
    drop(s);
    counts_are_zero()
}

/// A conversion that cuts two 2 MiB leaves (two splits in one zap), and a hole that covers
/// whole leaves (no split).
fn huge_private_many_splits(td: bool) -> Result<(), String> {
    let s = setup(td)?;
    pre_fault_all_at(&s.vcpu, 0, 4 * MB)?;
    let s0 = Snap::take(&s.vm, td)?;
    eq(s0.m2, 2, "two 2M leaves")?;
    // [1 MiB, 3 MiB) cuts both leaves: two splits in one zap.
    eq(
        attrs(&s.vm, private_attrs(MB, 2 * MB, false)),
        Ok(0),
        "2 MiB across both leaves to shared",
    )?;
    let s1 = Snap::take(&s.vm, td)?;
    if td {
        eq((s1.k4, s1.m2), (512, 0), "the outer halves stay")?;
        eq(s1.d(&s0, "tdh_mem_page_demote"), 2, "two DEMOTEs")?;
    } else {
        eq((s1.k4, s1.m2), (0, 0), "both leaves go whole")?;
    }
    // A hole over all of it: whole folios go, no split.
    eq(
        fallocate(&s.fd, KEEP | PUNCH, 0, 4 * MB),
        Ok(()),
        "punch 4 MiB",
    )?;
    let s2 = Snap::take(&s.vm, td)?;
    eq((s2.k4, s2.m2), (0, 0), "nothing mapped")?;
    if td {
        eq(s2.d(&s1, "tdh_mem_page_demote"), 0, "no DEMOTE")?;
    }
    drop(s);
    counts_are_zero()
}

/// A hole across two 2 MiB leaves (two splits in one zap, two folios kept whole), then every
/// page pre-faulted again: the holes come back from the kept folios.
fn huge_private_punch_across_leaves(td: bool) -> Result<(), String> {
    let s = setup(td)?;
    pre_fault_all_at(&s.vcpu, 0, 4 * MB)?;
    let s0 = Snap::take(&s.vm, td)?;
    eq(s0.m2, 2, "two 2M leaves")?;
    eq(
        fallocate(&s.fd, KEEP | PUNCH, MB, 2 * MB),
        Ok(()),
        "punch 2 MiB across both leaves",
    )?;
    let s1 = Snap::take(&s.vm, td)?;
    if td {
        eq((s1.k4, s1.m2), (512, 0), "the outer halves stay")?;
        eq(s1.d(&s0, "tdh_mem_page_demote"), 2, "two DEMOTEs")?;
        eq(s1.d(&s0, "tdh_mem_page_remove"), 512, "512 pages removed")?;
    } else {
        eq((s1.k4, s1.m2), (0, 0), "both leaves go whole")?;
    }
    pre_fault_all_at(&s.vcpu, 0, 4 * MB)?;
    let s2 = Snap::take(&s.vm, td)?;
    if td {
        eq((s2.k4, s2.m2), (1024, 0), "every page mapped at 4K")?;
        eq(s2.d(&s1, "tdh_mem_page_aug"), 512, "the hole AUGed again")?;
    } else {
        eq((s2.k4, s2.m2), (0, 2), "both folios kept: 2M again")?;
    }
    drop(s);
    counts_are_zero()
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("huge_private_split_td", Tdx, |_| huge_private_split(true)),
        ("huge_private_split_sw_protected", Any, |_| {
            huge_private_split(false)
        }),
        ("huge_private_many_splits_td", Tdx, |_| {
            huge_private_many_splits(true)
        }),
        ("huge_private_many_splits_sw_protected", Any, |_| {
            huge_private_many_splits(false)
        }),
        ("huge_private_punch_across_leaves_td", Tdx, |_| {
            huge_private_punch_across_leaves(true)
        }),
        ("huge_private_punch_across_leaves_sw_protected", Any, |_| {
            huge_private_punch_across_leaves(false)
        }),
    ]
}

/// `guest-client --bench-huge`: SEAMCALLs on a finalized TD per 2 MiB pre-faulted at 2M and at
/// 4K, and per 4 KiB converted out of a mapped 2 MiB: split (DEMOTE, 511 pages stay) against
/// the old whole-leaf zap plus refaulting the other 511 pages at 4K. Exact counts.
pub(crate) fn bench() {
    match bench_td() {
        Ok(lines) => {
            for l in lines {
                println!("bench huge: {l}");
            }
        }
        Err(e) => println!("bench huge: not measured: {e}"),
    }
}

fn bench_td() -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let s = setup(true)?;
    let snap = || Snap::take(&s.vm, true);
    // 2M path, fresh tables, then with the tables above present.
    let a = snap()?;
    pre_fault_all_at(&s.vcpu, 0, 2 * MB)?;
    let b = snap()?;
    out.push(format!(
        "pre-fault 2 MiB at 2M, building tables: {}",
        b.show(&a)
    ));
    pre_fault_all_at(&s.vcpu, 2 * MB, 2 * MB)?;
    let c = snap()?;
    out.push(format!(
        "pre-fault 2 MiB at 2M, tables present: {}",
        c.show(&b)
    ));
    // Partial conversion by split.
    eq(attrs(&s.vm, private_attrs(0, PS, false)), Ok(0), "convert")?;
    let d = snap()?;
    eq((d.k4, d.m2), (511, 1), "split")?;
    out.push(format!(
        "convert 4 KiB of a mapped 2 MiB, split (511 pages stay): {}",
        d.show(&c)
    ));
    // The old way, measured on the second 2 MiB: the whole leaf goes (converting all of it
    // zaps exactly the one 2M leaf), then the other 511 pages are refaulted at 4K.
    eq(
        attrs(&s.vm, private_attrs(2 * MB, 2 * MB, false)),
        Ok(0),
        "zap whole",
    )?;
    let e = snap()?;
    eq((e.k4, e.m2), (511, 0), "whole leaf zapped")?;
    out.push(format!(
        "zap a whole 2M leaf (the old partial conversion): {}",
        e.show(&d)
    ));
    eq(
        attrs(&s.vm, private_attrs(2 * MB + PS, 2 * MB - PS, true)),
        Ok(0),
        "511 back",
    )?;
    pre_fault_all_at(&s.vcpu, 2 * MB + PS, 2 * MB - PS)?;
    let f = snap()?;
    eq((f.k4, f.m2), (1022, 0), "refaulted at 4K")?;
    out.push(format!(
        "... and refault its other 511 pages at 4K: {}",
        f.show(&e)
    ));
    drop(s);
    // 4K path: a slot whose file offset is not congruent to its GPA modulo 2 MiB.
    let (vm, vcpu) = finalized_td()?;
    let mem = Anon::new(2 * MB);
    let fd = gmem(&vm, 4 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        gmem_offset: PS,
        ..slot(0, 0, 2 * MB, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    eq(attrs(&vm, private_attrs(0, 2 * MB, true)), Ok(0), "PRIVATE")?;
    let g = Snap::take(&vm, true)?;
    pre_fault_all_at(&vcpu, 0, 2 * MB)?;
    let h = Snap::take(&vm, true)?;
    eq((h.k4, h.m2), (512, 0), "4K path")?;
    out.push(format!(
        "pre-fault 2 MiB at 4K, building tables: {}",
        h.show(&g)
    ));
    drop((vcpu, fd, vm, mem));
    counts_are_zero()?;
    Ok(out)
}
