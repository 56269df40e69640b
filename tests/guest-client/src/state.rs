// SPDX-License-Identifier: GPL-2.0-only
//! vCPU state ABI tests (issue 11, `state`): the power-on state, `KVM_GET/SET_REGS`, `SREGS`,
//! `SREGS2`, `MP_STATE`, `CPUID2`, `MSRS`, `VCPU_EVENTS`, `DEBUGREGS`, the TSC-offset
//! attributes, `NESTED_STATE`, vCPU `KVM_ENABLE_CAP`, `KVM_GET_SUPPORTED_CPUID` and the MSR
//! lists, against upstream 6.12's rules and errnos; round trips, every validation rule, and
//! hostile input (bad pointers, reserved bits, huge counts, wrong fd kinds, concurrent use).

use crate::*;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_sregs2,
    kvm_vcpu_events,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn iowr_(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

const KVM_CREATE_VCPU: u64 = 0xae41;
const KVM_CHECK_EXTENSION: u64 = 0xae03;
const KVM_GET_REGS: u64 = ior(0x81, 144);
const KVM_SET_REGS: u64 = iow(0x82, 144);
const KVM_GET_SREGS: u64 = ior(0x83, 312);
const KVM_SET_SREGS: u64 = iow(0x84, 312);
const KVM_GET_MSRS: u64 = iowr_(0x88, 8);
const KVM_SET_MSRS: u64 = iow(0x89, 8);
const KVM_SET_CPUID2: u64 = iow(0x90, 8);
const KVM_GET_CPUID2: u64 = iowr_(0x91, 8);
const KVM_GET_MP_STATE: u64 = ior(0x98, 4);
const KVM_SET_MP_STATE: u64 = iow(0x99, 4);
const KVM_GET_VCPU_EVENTS: u64 = ior(0x9f, 64);
const KVM_SET_VCPU_EVENTS: u64 = iow(0xa0, 64);
const KVM_GET_DEBUGREGS: u64 = ior(0xa1, 128);
const KVM_SET_DEBUGREGS: u64 = iow(0xa2, 128);
const KVM_ENABLE_CAP: u64 = iow(0xa3, 104);
const KVM_GET_NESTED_STATE: u64 = iowr_(0xbe, 128);
const KVM_SET_NESTED_STATE: u64 = iow(0xbf, 128);
const KVM_GET_SREGS2: u64 = ior(0xcc, 320);
const KVM_SET_SREGS2: u64 = iow(0xcd, 320);
const KVM_SET_DEVICE_ATTR: u64 = iow(0xe1, 24);
const KVM_GET_DEVICE_ATTR: u64 = iow(0xe2, 24);
const KVM_HAS_DEVICE_ATTR: u64 = iow(0xe3, 24);
const KVM_GET_FPU: u64 = ior(0x8c, 416);
const KVM_SET_FPU: u64 = iow(0x8d, 416);
const KVM_GET_XSAVE: u64 = ior(0xa4, 4096);
const KVM_SET_XSAVE: u64 = iow(0xa5, 4096);
const KVM_GET_XCRS: u64 = ior(0xa6, 392);
const KVM_SET_XCRS: u64 = iow(0xa7, 392);
const KVM_GET_XSAVE2: u64 = ior(0xcf, 4096);
const KVM_TRANSLATE: u64 = iowr_(0x85, 24);
const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, 32);
const KVM_GET_MSR_INDEX_LIST: u64 = iowr_(0x02, 4);
const KVM_GET_MSR_FEATURE_INDEX_LIST: u64 = iowr_(0x0a, 4);

const ENXIO: i32 = libc::ENXIO;
const EINTR: i32 = libc::EINTR;

const CR0_PE: u64 = 1;
const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NX: u64 = 1 << 11;
const EFER_SVME: u64 = 1 << 12;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_CR_PAT: u32 = 0x277;
const MSR_IA32_ARCH_CAPABILITIES: u32 = 0x10a;
const MSR_IA32_PERF_CAPABILITIES: u32 = 0x345;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_K7_HWCR: u32 = 0xc001_0015;

fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: a fresh fd returned by the kernel, owned from now on.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// A default VM and vCPU `id`.
fn vm_vcpu(id: u64) -> Result<(OwnedFd, OwnedFd), String> {
    let vm = create_vm(&dev(), 0).map_err(|e| format!("KVM_CREATE_VM: errno {e}"))?;
    let v = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, id)
        .map(fd_of)
        .map_err(|e| format!("KVM_CREATE_VCPU: errno {e}"))?;
    Ok((vm, v))
}

/// An ioctl whose argument is `&mut T`.
fn io_mut<T>(fd: &OwnedFd, cmd: u64, v: &mut T) -> Result<i64, i32> {
    ioctl(fd.as_raw_fd(), cmd, v as *mut T as u64)
}

fn get<T: Default>(fd: &OwnedFd, cmd: u64) -> Result<T, String> {
    let mut v = T::default();
    io_mut(fd, cmd, &mut v).map_err(|e| format!("ioctl {cmd:#x}: errno {e}"))?;
    Ok(v)
}

fn sregs(v: &OwnedFd) -> Result<kvm_sregs, String> {
    get(v, KVM_GET_SREGS)
}

fn set_sregs(v: &OwnedFd, s: &kvm_sregs) -> Result<i64, i32> {
    ioctl(v.as_raw_fd(), KVM_SET_SREGS, s as *const kvm_sregs as u64)
}

/// Addresses no ioctl may accept: NULL, unmapped, kernel, the last bytes of the address space.
fn bad_pointers() -> [u64; 4] {
    [0, 0xdead_0000, 0xffff_ffff_8100_0000, u64::MAX - 3]
}

/// A read-only anonymous page (for "the kernel must write here" cases), unmapped on drop.
struct RoPage(*mut u8);

impl RoPage {
    fn new() -> RoPage {
        // SAFETY: a fresh anonymous mapping, made read-only; owned by the value.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            // A plausible header (counts of 1) for ioctls that read before writing.
            (p as *mut u32).write(1);
            libc::mprotect(p.cast(), 4096, libc::PROT_READ);
            RoPage(p)
        }
    }
    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for RoPage {
    fn drop(&mut self) {
        // SAFETY: mapped in `new`.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

/// Bad pointers are EFAULT for every ioctl in `cmds` (read-only memory too for those that write
/// back, `writes`).
fn pointers_are_efault(v: &OwnedFd, cmds: &[(u64, bool)]) -> Result<(), String> {
    let ro = RoPage::new();
    for &(cmd, writes) in cmds {
        for p in bad_pointers() {
            eq(
                ioctl(v.as_raw_fd(), cmd, p),
                Err(EFAULT),
                &format!("ioctl {cmd:#x} at {p:#x}"),
            )?;
        }
        if writes {
            eq(
                ioctl(v.as_raw_fd(), cmd, ro.addr()),
                Err(EFAULT),
                &format!("ioctl {cmd:#x} read-only"),
            )?;
        }
    }
    Ok(())
}

/// The supported CPUID table (nent 256).
fn supported_cpuid() -> Result<Vec<kvm_cpuid_entry2>, String> {
    let kvm = Kvm::new().map_err(|e| e.to_string())?;
    let c = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| e.to_string())?;
    Ok(c.as_slice().to_vec())
}

/// `struct kvm_cpuid2` with up to 256 entries.
#[repr(C)]
struct Cpuid2 {
    nent: u32,
    pad: u32,
    e: [kvm_cpuid_entry2; 256],
}

fn cpuid2(entries: &[kvm_cpuid_entry2]) -> Box<Cpuid2> {
    let mut c = Box::new(Cpuid2 {
        nent: entries.len() as u32,
        pad: 0,
        e: [kvm_cpuid_entry2::default(); 256],
    });
    c.e[..entries.len()].copy_from_slice(entries);
    c
}

fn set_cpuid(v: &OwnedFd, entries: &[kvm_cpuid_entry2]) -> Result<i64, i32> {
    let c = cpuid2(entries);
    ioctl(v.as_raw_fd(), KVM_SET_CPUID2, &*c as *const Cpuid2 as u64)
}

fn get_cpuid(v: &OwnedFd, nent: u32) -> (Result<i64, i32>, Box<Cpuid2>) {
    let mut c = cpuid2(&[]);
    c.nent = nent;
    let r = ioctl(v.as_raw_fd(), KVM_GET_CPUID2, &mut *c as *mut Cpuid2 as u64);
    (r, c)
}

fn find(t: &[kvm_cpuid_entry2], f: u32, i: u32) -> Option<kvm_cpuid_entry2> {
    t.iter()
        .find(|e| e.function == f && (e.flags & 1 == 0 || e.index == i))
        .copied()
}

/// `struct kvm_msrs` with room for `N` entries.
#[repr(C)]
struct Msrs<const N: usize> {
    nmsrs: u32,
    pad: u32,
    e: [kvm_msr_entry; N],
}

fn msrs<const N: usize>(list: &[(u32, u64)]) -> Box<Msrs<N>> {
    let mut m = Box::new(Msrs {
        nmsrs: list.len() as u32,
        pad: 0,
        e: [kvm_msr_entry::default(); N],
    });
    for (i, &(index, data)) in list.iter().enumerate() {
        m.e[i].index = index;
        m.e[i].data = data;
    }
    m
}

fn msr_io<const N: usize>(fd: &impl AsRawFd, cmd: u64, m: &mut Msrs<N>) -> Result<i64, i32> {
    ioctl(fd.as_raw_fd(), cmd, m as *mut Msrs<N> as u64)
}

fn get_msr(v: &OwnedFd, index: u32) -> Result<u64, String> {
    let mut m = msrs::<1>(&[(index, 0)]);
    eq(
        msr_io(v, KVM_GET_MSRS, &mut m),
        Ok(1),
        &format!("GET_MSRS {index:#x}"),
    )?;
    Ok(m.e[0].data)
}

fn set_msr(v: &OwnedFd, index: u32, data: u64) -> Result<i64, i32> {
    let mut m = msrs::<1>(&[(index, data)]);
    msr_io(v, KVM_SET_MSRS, &mut m)
}

/// The MSR list of `cmd` (index or feature list).
fn msr_list(cmd: u64) -> Result<Vec<u32>, String> {
    let mut b = vec![0u32; 1 + 512];
    b[0] = 512;
    ioctl(dev().as_raw_fd(), cmd, b.as_mut_ptr() as u64).map_err(|e| format!("errno {e}"))?;
    let n = b[0] as usize;
    Ok(b[1..1 + n].to_vec())
}

fn check_extension(fd: &impl AsRawFd, cap: u64) -> i64 {
    ioctl(fd.as_raw_fd(), KVM_CHECK_EXTENSION, cap).unwrap_or(-1)
}

fn seg(sel: u16, type_: u8, l: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_,
        present: 1,
        dpl: 0,
        db: (l == 0) as u8,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The selftests' `vcpu_init_sregs`: straight into 64-bit mode.
fn long_mode(mut s: kvm_sregs) -> kvm_sregs {
    s.cr0 = CR0_PE | CR0_NE | CR0_PG;
    s.cr4 |= CR4_PAE | CR4_OSFXSR;
    s.efer |= EFER_LME | EFER_LMA | EFER_NX;
    s.cs = seg(0x8, 0xb, 1);
    s.ds = seg(0x10, 0x3, 0);
    s.es = s.ds;
    s.gs = s.ds;
    s.tr = kvm_segment {
        s: 0,
        type_: 0xb,
        limit: 0x67,
        g: 0,
        db: 0,
        ..seg(0x18, 0xb, 0)
    };
    s.gdt.base = 0x1000;
    s.gdt.limit = 0xfff;
    s.idt.base = 0x2000;
    s.idt.limit = 0xfff;
    s.cr3 = 0x18_0000;
    s
}

fn reset_state_is_upstreams() -> Result<(), String> {
    let (vm, v0) = vm_vcpu(0)?;
    let r: kvm_regs = get(&v0, KVM_GET_REGS)?;
    eq(
        (r.rip, r.rflags, r.rdx),
        (0xfff0, 2, 0x600),
        "rip, rflags, rdx",
    )?;
    eq(
        (r.rax, r.rbx, r.rcx, r.rsp, r.r15),
        (0, 0, 0, 0, 0),
        "other GPRs",
    )?;
    let s = sregs(&v0)?;
    eq(
        (s.cs.selector, s.cs.base, s.cs.limit),
        (0xf000, 0xffff_0000, 0xffff),
        "CS",
    )?;
    eq(
        (s.cs.type_, s.cs.s, s.cs.present, s.cs.l, s.cs.db),
        (0xa, 1, 1, 0, 0),
        "CS attributes",
    )?;
    eq((s.ds.type_, s.ds.limit, s.ds.present), (3, 0xffff, 1), "DS")?;
    eq((s.tr.type_, s.tr.s, s.ldt.type_), (3, 0, 2), "TR/LDT")?;
    eq(
        (s.gdt.limit, s.idt.limit),
        (0xffff, 0xffff),
        "GDT/IDT limits",
    )?;
    eq(s.cr0, 0x6000_0010, "CR0")?;
    eq(
        (s.cr2, s.cr3, s.cr4, s.cr8, s.efer),
        (0, 0, 0, 0, 0),
        "CR2/3/4/8, EFER",
    )?;
    eq(s.apic_base, 0xfee0_0900, "APIC_BASE of the BSP")?;
    eq(s.interrupt_bitmap, [0; 4], "interrupt bitmap")?;
    let v1 = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 1)
        .map(fd_of)
        .map_err(|e| format!("vCPU 1: {e}"))?;
    eq(sregs(&v1)?.apic_base, 0xfee0_0800, "APIC_BASE of an AP")?;
    let d: kvm_debugregs = get(&v0, KVM_GET_DEBUGREGS)?;
    eq(
        (d.dr6, d.dr7, d.db),
        (0xffff_0ff0, 0x400, [0; 4]),
        "debug registers",
    )?;
    eq(get_msr(&v0, MSR_IA32_CR_PAT)?, 0x0007_0406_0007_0406, "PAT")?;
    eq(get::<u32>(&v0, KVM_GET_MP_STATE)?, 0, "RUNNABLE")?;
    // The guest TSC starts near 0 (kvm_synchronize_tsc at creation): below 2^40 cycles.
    check(get_msr(&v0, MSR_IA32_TSC)? < 1 << 40, "guest TSC near 0")
}

fn regs_round_trip() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    let mut r = kvm_regs::default();
    let vals: [&mut u64; 17] = [
        &mut r.rax, &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rsp,
        &mut r.rbp, &mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13,
        &mut r.r14, &mut r.r15, &mut r.rip,
    ];
    for (i, p) in vals.into_iter().enumerate() {
        *p = 0x0101_0101_0000_0000 * (i as u64 + 1) + i as u64;
    }
    r.rflags = 0x200;
    io_mut(&v, KVM_SET_REGS, &mut r).map_err(|e| format!("SET_REGS: {e}"))?;
    let got: kvm_regs = get(&v, KVM_GET_REGS)?;
    eq(
        got,
        kvm_regs { rflags: 0x202, ..r },
        "GET after SET (RFLAGS bit 1 forced)",
    )?;
    // A non-canonical RIP is not refused by SET_REGS (the entry fails instead, as upstream).
    let mut nc = kvm_regs {
        rip: 0x8000_0000_0000_0000,
        ..r
    };
    eq(
        io_mut(&v, KVM_SET_REGS, &mut nc),
        Ok(0),
        "non-canonical RIP",
    )?;
    eq(
        get::<kvm_regs>(&v, KVM_GET_REGS)?.rip,
        0x8000_0000_0000_0000,
        "RIP stored",
    )
}

fn regs_hostile() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    pointers_are_efault(&v, &[(KVM_GET_REGS, true), (KVM_SET_REGS, false)])?;
    // Wrong fd kinds: the VM fd (ENOTTY, x86's unknown VM ioctl) and /dev/kvm (EINVAL).
    let mut r = kvm_regs::default();
    eq(
        io_mut(&vm, KVM_GET_REGS, &mut r),
        Err(ENOTTY),
        "GET_REGS on the VM fd",
    )?;
    eq(
        ioctl(
            dev().as_raw_fd(),
            KVM_GET_REGS,
            &mut r as *mut kvm_regs as u64,
        ),
        Err(EINVAL),
        "GET_REGS on /dev/kvm",
    )?;
    // A wrong size in the ioctl number is another ioctl: EINVAL.
    eq(
        io_mut(&v, ior(0x81, 136), &mut r),
        Err(EINVAL),
        "GET_REGS with size 136",
    )?;
    // Concurrent SET_REGS/GET_REGS from two threads: each GET sees one whole SET.
    let fd = v.as_raw_fd();
    let mut first = kvm_regs::default();
    eq(
        io_mut(&v, KVM_SET_REGS, &mut first),
        Ok(0),
        "consistent start",
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !s2.load(Ordering::Relaxed) {
            let x = i % 2 * 0x1111;
            let r = kvm_regs {
                rax: x,
                rbx: x,
                r15: x,
                rip: x,
                ..Default::default()
            };
            let _ = ioctl(fd, KVM_SET_REGS, &r as *const kvm_regs as u64);
            i += 1;
        }
    });
    let mut bad = None;
    for _ in 0..2000 {
        let g: kvm_regs = get(&v, KVM_GET_REGS)?;
        if !(g.rax == g.rbx && g.rbx == g.r15 && g.r15 == g.rip) {
            bad = Some(g);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "writer panicked")?;
    check(bad.is_none(), &format!("torn registers: {bad:?}"))
}

fn sregs_long_mode_entry() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    let lm = long_mode(sregs(&v)?);
    // Without a CPUID table the guest has no LM: EFER.LME is refused (kvm_valid_efer).
    eq(
        set_sregs(&v, &lm),
        Err(EINVAL),
        "long mode before KVM_SET_CPUID2",
    )?;
    set_cpuid(&v, &supported_cpuid()?).map_err(|e| format!("SET_CPUID2: {e}"))?;
    eq(
        set_sregs(&v, &lm),
        Ok(0),
        "long mode with the supported CPUID",
    )?;
    let got = sregs(&v)?;
    eq(
        (got.cr0, got.cr3, got.cr4, got.efer),
        (lm.cr0, lm.cr3, lm.cr4, lm.efer),
        "CRs/EFER",
    )?;
    eq(got.cs, lm.cs, "64-bit CS")?;
    eq(
        (got.gdt.base, got.gdt.limit, got.idt.base),
        (0x1000, 0xfff, 0x2000),
        "GDT/IDT",
    )?;
    eq(got.tr.type_, 0xb, "busy TSS")?;
    // CR3 beyond MAXPHYADDR in long mode.
    let bits = find(&supported_cpuid()?, 0x8000_0008, 0).map_or(36, |e| e.eax & 0xff);
    let bad = kvm_sregs {
        cr3: 1 << bits,
        ..lm
    };
    eq(set_sregs(&v, &bad), Err(EINVAL), "CR3 above MAXPHYADDR")?;
    eq(sregs(&v)?, got, "unchanged after a refused SET_SREGS")
}

/// set_sregs_test's rules, plus the long-mode consistency and EFER/APIC_BASE rules.
fn sregs_validation() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    let table = supported_cpuid()?;
    let has = |f: u32, reg: usize, bit: u32| {
        find(&table, f, 0).is_some_and(|e| [e.eax, e.ebx, e.ecx, e.edx][reg] & (1 << bit) != 0)
    };
    // Before KVM_SET_CPUID2: every CR4 bit the module supports (per its supported CPUID).
    let mut cr4 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400;
    let gated = [
        (7, 2, 2, 1 << 11),  // UMIP
        (7, 2, 16, 1 << 12), // LA57
        (1, 2, 5, 1 << 13),  // VMXE
        (7, 1, 0, 1 << 16),  // FSGSBASE
        (1, 2, 17, 1 << 17), // PCIDE
        (1, 2, 26, 1 << 18), // OSXSAVE
        (7, 1, 7, 1 << 20),  // SMEP
        (7, 1, 20, 1 << 21), // SMAP
        (7, 2, 3, 1 << 22),  // PKE
    ];
    for (f, reg, bit, cr) in gated {
        if has(f, reg, bit) {
            cr4 |= cr;
        }
    }
    let mut s = sregs(&v)?;
    s.cr0 = 0;
    s.cr4 = cr4;
    eq(set_sregs(&v, &s), Ok(0), &format!("supported CR4 {cr4:#x}"))?;
    let base = sregs(&v)?;
    eq(base.cr4, cr4, "CR4 read back")?;
    let mut cases: Vec<(String, kvm_sregs)> = Vec::new();
    for (_, _, _, cr) in gated.iter().filter(|g| cr4 & g.3 == 0) {
        cases.push((
            format!("CR4 bit {cr:#x}"),
            kvm_sregs {
                cr4: base.cr4 | cr,
                ..base
            },
        ));
    }
    for bit in [
        1 << 14,
        1 << 15,
        1 << 19,
        1 << 23,
        1 << 24,
        1 << 28,
        1 << 32,
        1 << 63,
    ] {
        cases.push((
            format!("CR4 reserved {bit:#x}"),
            kvm_sregs {
                cr4: base.cr4 | bit,
                ..base
            },
        ));
    }
    for i in 32..64 {
        cases.push((
            format!("CR0 bit {i}"),
            kvm_sregs {
                cr0: 1 << i,
                ..base
            },
        ));
    }
    cases.push((
        "NW without CD".into(),
        kvm_sregs {
            cr0: CR0_NW,
            ..base
        },
    ));
    cases.push((
        "PG without PE".into(),
        kvm_sregs {
            cr0: CR0_PG,
            ..base
        },
    ));
    cases.push((
        "LMA without paging".into(),
        kvm_sregs {
            efer: EFER_LMA,
            ..base
        },
    ));
    cases.push((
        "64-bit CS outside long mode".into(),
        kvm_sregs {
            cs: kvm_segment { l: 1, ..base.cs },
            ..base
        },
    ));
    cases.push((
        "EFER.SVME (no nested SVM)".into(),
        kvm_sregs {
            efer: EFER_SVME,
            ..base
        },
    ));
    cases.push(("EFER reserved bit 1".into(), kvm_sregs { efer: 2, ..base }));
    cases.push((
        "EFER.NX without CPUID".into(),
        kvm_sregs {
            efer: EFER_NX,
            ..base
        },
    ));
    cases.push((
        "APIC_BASE EXTD without EN".into(),
        kvm_sregs {
            apic_base: 1 << 10,
            ..base
        },
    ));
    cases.push((
        "APIC_BASE reserved bit 0".into(),
        kvm_sregs {
            apic_base: 0xfee0_0801,
            ..base
        },
    ));
    cases.push((
        "APIC_BASE above MAXPHYADDR".into(),
        kvm_sregs {
            apic_base: 0xfee0_0800 | 1 << 36,
            ..base
        },
    ));
    cases.push((
        "APIC_BASE x2APIC without CPUID".into(),
        kvm_sregs {
            apic_base: 0xfee0_0c00,
            ..base
        },
    ));
    for (what, s) in &cases {
        eq(set_sregs(&v, s), Err(EINVAL), what)?;
        eq(sregs(&v)?, base, &format!("{what}: sregs unchanged"))?;
    }
    // After KVM_SET_CPUID2: long mode without PAE or LMA.
    set_cpuid(&v, &table).map_err(|e| format!("SET_CPUID2: {e}"))?;
    let lm = long_mode(base);
    eq(
        set_sregs(
            &v,
            &kvm_sregs {
                cr4: lm.cr4 & !CR4_PAE,
                ..lm
            },
        ),
        Err(EINVAL),
        "LME+PG without PAE",
    )?;
    eq(
        set_sregs(
            &v,
            &kvm_sregs {
                efer: lm.efer & !EFER_LMA,
                ..lm
            },
        ),
        Err(EINVAL),
        "LME+PG without LMA",
    )?;
    // APIC_BASE EN alone is valid; CR8 with reserved bits is ignored, not refused.
    let ok = kvm_sregs {
        apic_base: 1 << 11,
        cr8: 0x10,
        ..base
    };
    eq(set_sregs(&v, &ok), Ok(0), "APIC_BASE EN")?;
    let got = sregs(&v)?;
    eq((got.apic_base, got.cr8), (1 << 11, 0), "APIC_BASE, CR8")
}

fn sregs_interrupt_bitmap() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    let mut s = sregs(&v)?;
    s.interrupt_bitmap = [0, 1 << 3, 0, 1 << 8];
    eq(set_sregs(&v, &s), Ok(0), "SET_SREGS with two bits")?;
    eq(
        sregs(&v)?.interrupt_bitmap,
        [0, 1 << 3, 0, 0],
        "the lowest bit is injected",
    )?;
    let e: kvm_vcpu_events = get(&v, KVM_GET_VCPU_EVENTS)?;
    eq(
        (e.interrupt.injected, e.interrupt.nr),
        (1, 67),
        "VCPU_EVENTS interrupt",
    )
}

fn sregs_hostile() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    pointers_are_efault(
        &v,
        &[
            (KVM_GET_SREGS, true),
            (KVM_SET_SREGS, false),
            (KVM_GET_SREGS2, true),
            (KVM_SET_SREGS2, false),
        ],
    )?;
    let mut s = sregs(&v)?;
    eq(
        io_mut(&vm, KVM_GET_SREGS, &mut s),
        Err(ENOTTY),
        "GET_SREGS on the VM fd",
    )?;
    eq(
        ioctl(
            dev().as_raw_fd(),
            KVM_SET_SREGS,
            &s as *const kvm_sregs as u64,
        ),
        Err(EINVAL),
        "SET_SREGS on /dev/kvm",
    )?;
    // Concurrent valid/invalid SET_SREGS with GET_SREGS: only whole valid states are seen.
    let fd = v.as_raw_fd();
    let base = sregs(&v)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0u32;
        while !s2.load(Ordering::Relaxed) {
            let s = match i % 3 {
                0 => kvm_sregs {
                    cr0: 0x10,
                    cr2: 0x10,
                    ..base
                },
                1 => kvm_sregs {
                    cr0: CR0_NW | 0x10,
                    cr2: 0x99,
                    ..base
                },
                _ => kvm_sregs {
                    cr0: 0x6000_0010,
                    cr2: 0x6000_0010,
                    ..base
                },
            };
            let _ = ioctl(fd, KVM_SET_SREGS, &s as *const kvm_sregs as u64);
            i += 1;
        }
    });
    let mut bad = None;
    for _ in 0..2000 {
        let g = sregs(&v)?;
        if g.cr0 != g.cr2 && !(g.cr0 == 0x6000_0010 && g.cr2 == 0) {
            bad = Some((g.cr0, g.cr2));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "writer panicked")?;
    check(bad.is_none(), &format!("inconsistent CR0/CR2 {bad:?}"))
}

fn sregs2_rules() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 200), 1, "KVM_CAP_SREGS2")?;
    let s: kvm_sregs2 = get(&v, KVM_GET_SREGS2)?;
    let s1 = sregs(&v)?;
    eq(
        (s.flags, s.cr0, s.cs.selector, s.apic_base),
        (0, s1.cr0, s1.cs.selector, s1.apic_base),
        "GET_SREGS2 = GET_SREGS",
    )?;
    let set2 = |x: &kvm_sregs2| ioctl(v.as_raw_fd(), KVM_SET_SREGS2, x as *const kvm_sregs2 as u64);
    eq(set2(&s), Ok(0), "SET_SREGS2 of the read state")?;
    eq(
        set2(&kvm_sregs2 { flags: 2, ..s }),
        Err(EINVAL),
        "unknown flag",
    )?;
    eq(
        set2(&kvm_sregs2 {
            flags: 1 << 63,
            ..s
        }),
        Err(EINVAL),
        "flag bit 63",
    )?;
    eq(
        set2(&kvm_sregs2 { flags: 1, ..s }),
        Err(EINVAL),
        "PDPTRs outside PAE paging",
    )?;
    eq(
        set2(&kvm_sregs2 { cr0: CR0_PG, ..s }),
        Err(EINVAL),
        "PG without PE",
    )?;
    // 32-bit PAE paging with PDPTRs given: they read back (there is no memory at CR3).
    let pae = kvm_sregs2 {
        cr0: CR0_PE | CR0_PG,
        cr4: CR4_PAE,
        cr3: 0x4000,
        flags: 1,
        pdptrs: [0x1001, 0x2001, 0x3001, 0x4001],
        ..s
    };
    eq(set2(&pae), Ok(0), "PAE with PDPTRs")?;
    let got: kvm_sregs2 = get(&v, KVM_GET_SREGS2)?;
    eq((got.flags, got.pdptrs), (1, pae.pdptrs), "PDPTRs read back")?;
    // SET_SREGS drops userspace's PDPTRs; with no memory at CR3 none are reported.
    let s1 = sregs(&v)?;
    eq(set_sregs(&v, &s1), Ok(0), "SET_SREGS in PAE")?;
    let got: kvm_sregs2 = get(&v, KVM_GET_SREGS2)?;
    eq(got.flags, 0, "no PDPTRs without guest memory")
}

fn mp_state_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 14), 1, "KVM_CAP_MP_STATE")?;
    eq(get::<u32>(&v, KVM_GET_MP_STATE)?, 0, "RUNNABLE at creation")?;
    let set = |m: u32| ioctl(v.as_raw_fd(), KVM_SET_MP_STATE, &m as *const u32 as u64);
    eq(set(0), Ok(0), "RUNNABLE")?;
    // No in-kernel LAPIC: the LAPIC states are EINVAL, as unknown values.
    for m in [1, 2, 3, 4, 5, 9, 10, 11, 0x8000_0000, u32::MAX] {
        eq(set(m), Err(EINVAL), &format!("mp_state {m}"))?;
    }
    eq(get::<u32>(&v, KVM_GET_MP_STATE)?, 0, "still RUNNABLE")?;
    pointers_are_efault(&v, &[(KVM_GET_MP_STATE, true), (KVM_SET_MP_STATE, false)])?;
    let mut m = 0u32;
    eq(
        io_mut(&vm, KVM_GET_MP_STATE, &mut m),
        Err(ENOTTY),
        "on the VM fd",
    )
}

fn cpuid2_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 7), 1, "KVM_CAP_EXT_CPUID")?;
    // A fresh vCPU has no table.
    let (r, c) = get_cpuid(&v, 256);
    eq((r, c.nent), (Ok(0), 0), "empty table")?;
    let table = supported_cpuid()?;
    eq(
        set_cpuid(&v, &table),
        Ok(0),
        "SET_CPUID2 of the supported table",
    )?;
    let (r, c) = get_cpuid(&v, 256);
    eq(
        (r, c.nent as usize),
        (Ok(0), table.len()),
        "GET_CPUID2 nent",
    )?;
    // As upstream (and cpuid_test): the same table, except that 0xD.0/0xD.1 EBX hold the XSAVE
    // size for the vCPU's XCR0 (x87 only at reset: 576 bytes).
    for (got, want) in c.e[..table.len()].iter().zip(&table) {
        if got.function == 0xd && got.index <= 1 {
            eq(
                kvm_cpuid_entry2 {
                    ebx: want.ebx,
                    ..*got
                },
                *want,
                "0xD entry apart from EBX",
            )?;
            if got.index == 0 {
                eq(got.ebx, 576, "0xD.0 EBX for XCR0 = x87")?;
            }
        } else {
            eq(got, want, "GET_CPUID2 entry")?;
        }
    }
    // Too small: E2BIG and nent untouched.
    let (r, c) = get_cpuid(&v, table.len() as u32 - 1);
    eq(
        (r, c.nent as usize),
        (Err(E2BIG), table.len() - 1),
        "nent too small",
    )?;
    // More than KVM_MAX_CPUID_ENTRIES.
    let mut big = cpuid2(&table);
    big.nent = 257;
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_CPUID2, &*big as *const Cpuid2 as u64),
        Err(E2BIG),
        "nent 257",
    )?;
    big.nent = u32::MAX;
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_CPUID2, &*big as *const Cpuid2 as u64),
        Err(E2BIG),
        "nent u32::MAX",
    )?;
    // 0x80000008 with 47 virtual-address bits is refused; the table stays.
    let mut bad = table.clone();
    if let Some(e) = bad.iter_mut().find(|e| e.function == 0x8000_0008) {
        e.eax = (e.eax & !0xff00) | 47 << 8;
    }
    eq(set_cpuid(&v, &bad), Err(EINVAL), "47 VA bits")?;
    eq(
        get_cpuid(&v, 256).1.nent as usize,
        table.len(),
        "table kept",
    )?;
    // CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE (when XSAVE is offered).
    if find(&table, 1, 0).is_some_and(|e| e.ecx & (1 << 26) != 0) {
        let s = sregs(&v)?;
        eq(
            set_sregs(
                &v,
                &kvm_sregs {
                    cr4: s.cr4 | CR4_OSXSAVE,
                    ..s
                },
            ),
            Ok(0),
            "CR4.OSXSAVE",
        )?;
        let (_, c) = get_cpuid(&v, 256);
        check(
            find(&c.e[..c.nent as usize], 1, 0).is_some_and(|e| e.ecx & (1 << 27) != 0),
            "OSXSAVE set",
        )?;
        eq(set_sregs(&v, &s), Ok(0), "CR4 back")?;
        let (_, c) = get_cpuid(&v, 256);
        check(
            find(&c.e[..c.nent as usize], 1, 0).is_some_and(|e| e.ecx & (1 << 27) == 0),
            "OSXSAVE clear",
        )?;
    }
    // An empty table is a valid table.
    eq(set_cpuid(&v, &[]), Ok(0), "nent 0")?;
    eq(
        get_cpuid(&v, 0).0,
        Ok(0),
        "GET of the empty table with nent 0",
    )?;
    // Hostile pointers: the header, and entries running into unmapped memory.
    pointers_are_efault(&v, &[(KVM_GET_CPUID2, true), (KVM_SET_CPUID2, false)])?;
    eq(
        ioctl(
            vm.as_raw_fd(),
            KVM_SET_CPUID2,
            &*cpuid2(&table) as *const Cpuid2 as u64,
        ),
        Err(ENOTTY),
        "on the VM fd",
    )?;
    // SAFETY: two anonymous pages, the second unmapped right away; the first unmapped below.
    let p = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        libc::munmap(p.add(4096).cast(), 4096);
        p
    };
    let hdr = 4096 - 8 - 40;
    // SAFETY: inside the first page.
    unsafe { (p.add(hdr) as *mut u32).write(5) };
    let r = ioctl(v.as_raw_fd(), KVM_SET_CPUID2, p as u64 + hdr as u64);
    let g = ioctl(v.as_raw_fd(), KVM_GET_CPUID2, p as u64 + hdr as u64);
    // SAFETY: mapped above.
    unsafe { libc::munmap(p.cast(), 4096) };
    eq(r, Err(EFAULT), "SET_CPUID2 entries past the mapping")?;
    eq(
        get_cpuid(&v, 0).1.nent,
        0,
        "table unchanged by the failed SET",
    )?;
    eq(
        g,
        Ok(0),
        "GET_CPUID2 of the empty table needs no entry space",
    )
}

fn supported_cpuid_is_truthful() -> Result<(), String> {
    let t = supported_cpuid()?;
    let e = |f, i| find(&t, f, i).ok_or(format!("leaf {f:#x}.{i}"));
    let sig = e(0x4000_0000, 0)?;
    eq(sig.eax, 0x4000_0001, "KVM signature leaf EAX")?;
    eq(
        (sig.ebx, sig.ecx, sig.edx),
        (0x4b4d_564b, 0x564b_4d56, 0x4d),
        "KVMKVMKVM",
    )?;
    // HOOK(clock): only the PV features the module implements: CLOCKSOURCE, NOP_IO_DELAY,
    // CLOCKSOURCE2, STEAL_TIME, PV_UNHALT (HOOK(irqfix)), POLL_CONTROL, PV_SCHED_YIELD,
    // CLOCKSOURCE_STABLE_BIT.
    let pv = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 12 | 1 << 13 | 1 << 24;
    eq(
        e(0x4000_0001, 0)?.eax,
        pv,
        "implemented paravirtual features",
    )?;
    check(
        e(0x8000_0001, 0)?.ecx & (1 << 2) == 0,
        "no SVM (no nested SVM)",
    )?;
    check(e(1, 0)?.ecx & (1 << 5 | 1 << 6) == 0, "no VMX/SMX")?;
    // Upstream sets X2APIC in kvm_cpu_caps unconditionally (emulated by the in-kernel LAPIC,
    // which userspace is expected to create), and leaves TSC-deadline out of the table
    // (KVM_CAP_TSC_DEADLINE_TIMER tells userspace it may set it).
    check(
        e(1, 0)?.ecx & (1 << 21) != 0,
        "x2APIC advertised (emulated by the in-kernel LAPIC)",
    )?;
    check(
        e(1, 0)?.ecx & (1 << 24) == 0,
        "TSC-deadline not in KVM_GET_SUPPORTED_CPUID",
    )?;
    check(
        e(1, 0)?.ecx & (1 << 27) == 0,
        "OSXSAVE is the vCPU's, not advertised",
    )?;
    check(e(1, 0)?.edx & (1 << 12 | 1 << 14) == 0, "no MTRR/MCA")?;
    check(e(0x8000_000a, 0)?.eax == 0, "SVM leaf empty")?;
    let a = e(0x8000_0008, 0)?.eax;
    let h = std::arch::x86_64::__cpuid(0x8000_0008).eax;
    let host = h & 0xff;
    // VA bits: the host's, at least 48 (upstream's virt_as; 57 with LA57 hardware).
    eq(
        (a & 0xff, (a >> 8) & 0xff, (a >> 16) & 0xff),
        (host, ((h >> 8) & 0xff).max(48), host.min(48)),
        "address widths",
    )?;
    // XSAVE sizes: 0xD.0 EBX covers every component advertised.
    if e(1, 0)?.ecx & (1 << 26) != 0 {
        let d = e(0xd, 0)?;
        check(d.eax & 3 == 3, "x87|SSE in XCR0")?;
        for bit in 2..32 {
            if d.eax & (1 << bit) != 0 {
                let s = e(0xd, bit)?;
                check(
                    s.ebx + s.eax <= d.ebx,
                    &format!("component {bit} inside {:#x}", d.ebx),
                )?;
            }
        }
        // PKRU is offered as upstream's KVM_SUPPORTED_XCR0 does, when the host enables it.
        check(d.eax & (1 << 3 | 1 << 4) == 0, "no MPX")?;
    }
    // Every entry is in a range its leaf 0 / 0x80000000 / 0x40000000 announces.
    let max_b = e(0, 0)?.eax;
    let max_e = e(0x8000_0000, 0)?.eax;
    for x in &t {
        let ok = x.function <= max_b
            || (0x8000_0000..=max_e).contains(&x.function)
            || (0x4000_0000..=0x4000_0001).contains(&x.function);
        check(ok, &format!("leaf {:#x} outside the ranges", x.function))?;
    }
    Ok(())
}

fn msr_index_list_round_trips() -> Result<(), String> {
    let list = msr_list(KVM_GET_MSR_INDEX_LIST)?;
    check(
        (2..=256).contains(&list.len()),
        &format!("{} MSRs", list.len()),
    )?;
    for m in [
        MSR_IA32_SYSENTER_CS,
        MSR_IA32_TSC,
        MSR_IA32_CR_PAT,
        MSR_LSTAR,
    ] {
        check(list.contains(&m), &format!("{m:#x} listed"))?;
    }
    // nmsrs too small: E2BIG, nmsrs written back.
    let mut b = [1u32, 0];
    eq(
        ioctl(
            dev().as_raw_fd(),
            KVM_GET_MSR_INDEX_LIST,
            b.as_mut_ptr() as u64,
        ),
        Err(E2BIG),
        "nmsrs 1",
    )?;
    eq(b[0] as usize, list.len(), "nmsrs written back")?;
    // struct kvm_msr_list is 4 bytes: a header in the last 4 bytes of a mapping is fine.
    // SAFETY: two pages, the second unmapped at once; the first unmapped below.
    let p = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        libc::munmap(p.add(4096).cast(), 4096);
        p
    };
    let hdr = p as u64 + 4092;
    let r = ioctl(dev().as_raw_fd(), KVM_GET_MSR_INDEX_LIST, hdr);
    // SAFETY: the last 4 bytes of the mapped page.
    let n = unsafe { (p.add(4092) as *const u32).read() };
    // SAFETY: mapped above.
    unsafe { libc::munmap(p.cast(), 4096) };
    eq(
        (r, n as usize),
        (Err(E2BIG), list.len()),
        "4-byte header at the end of a mapping",
    )?;
    // Every listed MSR reads and writes back (state_test's vcpu_save_state/vcpu_load_state),
    // on the same vCPU and onto a second VM's vCPU.
    let (_vm, v) = vm_vcpu(0)?;
    set_cpuid(&v, &supported_cpuid()?).map_err(|e| format!("SET_CPUID2: {e}"))?;
    let all: Vec<(u32, u64)> = list.iter().map(|&m| (m, 0)).collect();
    let mut m = msrs::<256>(&all);
    eq(
        msr_io(&v, KVM_GET_MSRS, &mut m),
        Ok(list.len() as i64),
        "GET_MSRS of the whole list",
    )?;
    let mut w = msrs::<256>(&[]);
    w.nmsrs = m.nmsrs;
    w.e = m.e;
    eq(
        msr_io(&v, KVM_SET_MSRS, &mut w),
        Ok(list.len() as i64),
        "SET_MSRS of the whole list",
    )?;
    let (_vm2, v2) = vm_vcpu(0)?;
    set_cpuid(&v2, &supported_cpuid()?).map_err(|e| format!("SET_CPUID2: {e}"))?;
    eq(
        msr_io(&v2, KVM_SET_MSRS, &mut w),
        Ok(list.len() as i64),
        "SET_MSRS on another vCPU",
    )?;
    let mut r = msrs::<256>(&all);
    eq(
        msr_io(&v2, KVM_GET_MSRS, &mut r),
        Ok(list.len() as i64),
        "GET_MSRS there",
    )?;
    for i in 0..list.len() {
        if r.e[i].index == MSR_IA32_TSC {
            continue; // ticks
        }
        eq(
            (r.e[i].index, r.e[i].data),
            (m.e[i].index, m.e[i].data),
            "restored value",
        )?;
    }
    Ok(())
}

fn feature_msrs_as_kvm_ioctls_reads_them() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| e.to_string())?;
    check(
        kvm.check_extension(Cap::GetMsrFeatures),
        "KVM_CAP_GET_MSR_FEATURES",
    )?;
    let list = msr_list(KVM_GET_MSR_FEATURE_INDEX_LIST)?;
    check(!list.is_empty() && list.len() <= 256, "feature list size")?;
    let all: Vec<(u32, u64)> = list.iter().map(|&m| (m, u64::MAX)).collect();
    let mut m = msrs::<16>(&all);
    eq(
        msr_io(&dev(), KVM_GET_MSRS, &mut m),
        Ok(list.len() as i64),
        "every feature MSR reads",
    )?;
    // kvm-ioctls' get_msrs test: ARCH_CAPABILITIES and PERF_CAPABILITIES both read.
    let mut m = msrs::<2>(&[
        (MSR_IA32_ARCH_CAPABILITIES, 0),
        (MSR_IA32_PERF_CAPABILITIES, 0),
    ]);
    eq(
        msr_io(&dev(), KVM_GET_MSRS, &mut m),
        Ok(2),
        "ARCH/PERF_CAPABILITIES",
    )?;
    // An unknown MSR stops the list at its position.
    let mut m = msrs::<3>(&[
        (MSR_IA32_ARCH_CAPABILITIES, 0),
        (0xdead, 7),
        (MSR_IA32_PERF_CAPABILITIES, 0),
    ]);
    eq(
        msr_io(&dev(), KVM_GET_MSRS, &mut m),
        Ok(1),
        "stops at the unknown MSR",
    )?;
    eq(m.e[1].data, 0, "failed entry zeroed")?;
    // E2BIG/EFAULT as for the index list.
    let mut b = [0u32, 0];
    eq(
        ioctl(
            dev().as_raw_fd(),
            KVM_GET_MSR_FEATURE_INDEX_LIST,
            b.as_mut_ptr() as u64,
        ),
        Err(E2BIG),
        "nmsrs 0",
    )?;
    eq(b[0] as usize, list.len(), "nmsrs written back")?;
    for p in bad_pointers() {
        eq(
            ioctl(dev().as_raw_fd(), KVM_GET_MSR_FEATURE_INDEX_LIST, p),
            Err(EFAULT),
            &format!("{p:#x}"),
        )?;
    }
    Ok(())
}

fn msrs_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    // kvm-ioctls' msrs_test: SYSENTER_CS/ESP round trip.
    let mut m = msrs::<2>(&[
        (MSR_IA32_SYSENTER_CS, 0x10),
        (MSR_IA32_SYSENTER_ESP, 0xffff_8000_1234_5678),
    ]);
    eq(msr_io(&v, KVM_SET_MSRS, &mut m), Ok(2), "SET two")?;
    let mut g = msrs::<2>(&[(MSR_IA32_SYSENTER_CS, 0), (MSR_IA32_SYSENTER_ESP, 0)]);
    eq(msr_io(&v, KVM_GET_MSRS, &mut g), Ok(2), "GET two")?;
    eq(
        (g.e[0].data, g.e[1].data),
        (0x10, 0xffff_8000_1234_5678),
        "values",
    )?;
    // Processing stops at the first refused entry; the count says where.
    let mut m = msrs::<3>(&[
        (MSR_IA32_CR_PAT, 0x0606_0606_0606_0606),
        (MSR_IA32_CR_PAT, 2),
        (MSR_IA32_SYSENTER_CS, 5),
    ]);
    eq(
        msr_io(&v, KVM_SET_MSRS, &mut m),
        Ok(1),
        "invalid PAT stops at entry 1",
    )?;
    eq(get_msr(&v, MSR_IA32_CR_PAT)?, 0x0606_0606_0606_0606, "PAT")?;
    eq(
        get_msr(&v, MSR_IA32_SYSENTER_CS)?,
        0x10,
        "entry 2 not processed",
    )?;
    eq(set_msr(&v, 0xdead_beef, 0), Ok(0), "unknown MSR")?;
    eq(set_msr(&v, MSR_EFER, EFER_SVME), Ok(0), "EFER.SVME")?;
    eq(
        set_msr(&v, MSR_LSTAR, 1 << 47),
        Ok(0),
        "non-canonical LSTAR",
    )?;
    // hwcr_msr_test: bits 18 and 24 kept, 3/6/8 accepted but read 0, others refused.
    for bit in 0..64 {
        let r = set_msr(&v, MSR_K7_HWCR, 1 << bit);
        let want = match bit {
            3 | 6 | 8 | 18 | 24 => Ok(1),
            _ => Ok(0),
        };
        eq(r, want, &format!("HWCR bit {bit}"))?;
        if r == Ok(1) {
            let got = get_msr(&v, MSR_K7_HWCR)?;
            eq(
                got,
                if bit == 18 || bit == 24 { 1 << bit } else { 0 },
                &format!("HWCR bit {bit} read"),
            )?;
        }
    }
    // The TSC: a host write sets it.
    eq(set_msr(&v, MSR_IA32_TSC, 1 << 50), Ok(1), "TSC write")?;
    check(
        get_msr(&v, MSR_IA32_TSC)?.wrapping_sub(1 << 50) < 1 << 40,
        "TSC follows",
    )?;
    // Hostile: nmsrs at the limit, bad pointers, entries into unmapped memory, wrong fds.
    let mut m = msrs::<1>(&[]);
    m.nmsrs = 256;
    eq(msr_io(&v, KVM_GET_MSRS, &mut m), Err(E2BIG), "nmsrs 256")?;
    m.nmsrs = u32::MAX;
    eq(
        msr_io(&v, KVM_SET_MSRS, &mut m),
        Err(E2BIG),
        "nmsrs u32::MAX",
    )?;
    pointers_are_efault(&v, &[(KVM_GET_MSRS, true), (KVM_SET_MSRS, false)])?;
    let mut m = msrs::<1>(&[(MSR_IA32_TSC, 0)]);
    eq(
        msr_io(&vm, KVM_GET_MSRS, &mut m),
        Err(ENOTTY),
        "on the VM fd",
    )?;
    // SAFETY: two pages, the second unmapped at once; the first unmapped below.
    let p = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        libc::munmap(p.add(4096).cast(), 4096);
        p
    };
    // SAFETY: inside the first page: a header claiming 3 entries with room for 0.
    unsafe { (p.add(4096 - 8) as *mut u32).write(3) };
    let r = ioctl(v.as_raw_fd(), KVM_SET_MSRS, p as u64 + 4096 - 8);
    // SAFETY: mapped above.
    unsafe { libc::munmap(p.cast(), 4096) };
    eq(r, Err(EFAULT), "entries past the mapping")
}

fn vcpu_events_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 41), 1, "KVM_CAP_VCPU_EVENTS")?;
    let e0: kvm_vcpu_events = get(&v, KVM_GET_VCPU_EVENTS)?;
    eq(e0.flags, 0x1 | 0x4 | 0x8, "flags NMI_PENDING|SHADOW|SMM")?;
    let set = |e: &kvm_vcpu_events| {
        ioctl(
            v.as_raw_fd(),
            KVM_SET_VCPU_EVENTS,
            e as *const kvm_vcpu_events as u64,
        )
    };
    let mut e = e0;
    e.exception.injected = 1;
    e.exception.nr = 13;
    e.exception.has_error_code = 1;
    e.exception.error_code = 0x18;
    e.nmi.pending = 1;
    e.nmi.masked = 1;
    e.interrupt.shadow = 1;
    eq(set(&e), Ok(0), "SET")?;
    let g: kvm_vcpu_events = get(&v, KVM_GET_VCPU_EVENTS)?;
    eq(
        (g.exception.injected, g.exception.nr, g.exception.error_code),
        (1, 13, 0x18),
        "exception",
    )?;
    eq(
        (g.nmi.pending, g.nmi.masked, g.interrupt.shadow),
        (1, 1, 3),
        "NMI, shadow (SVM: both bits)",
    )?;
    let bad: [(&str, kvm_vcpu_events); 7] = [
        ("unknown flag", kvm_vcpu_events { flags: 0x40, ..e0 }),
        (
            "flag bit 31",
            kvm_vcpu_events {
                flags: 1 << 31,
                ..e0
            },
        ),
        (
            "payload without KVM_CAP_EXCEPTION_PAYLOAD",
            kvm_vcpu_events { flags: 0x10, ..e0 },
        ),
        (
            "exception vector 32",
            kvm_vcpu_events {
                exception: kvm_bindings::kvm_vcpu_events__bindgen_ty_1 {
                    injected: 1,
                    nr: 32,
                    ..e0.exception
                },
                ..e0
            },
        ),
        (
            "NMI as an exception",
            kvm_vcpu_events {
                exception: kvm_bindings::kvm_vcpu_events__bindgen_ty_1 {
                    injected: 1,
                    nr: 2,
                    ..e0.exception
                },
                ..e0
            },
        ),
        (
            "SMM (none here)",
            kvm_vcpu_events {
                smi: kvm_bindings::kvm_vcpu_events__bindgen_ty_4 { smm: 1, ..e0.smi },
                ..e0
            },
        ),
        (
            "triple fault without the cap",
            kvm_vcpu_events {
                flags: e0.flags | 0x20,
                ..e0
            },
        ),
    ];
    for (what, b) in &bad {
        eq(set(b), Err(EINVAL), what)?;
    }
    // NMIs collapse (two at most, one while masked).
    eq(
        set(&kvm_vcpu_events {
            nmi: kvm_bindings::kvm_vcpu_events__bindgen_ty_3 {
                pending: 200,
                masked: 0,
                ..e0.nmi
            },
            ..e0
        }),
        Ok(0),
        "200 NMIs",
    )?;
    eq(
        get::<kvm_vcpu_events>(&v, KVM_GET_VCPU_EVENTS)?.nmi.pending,
        2,
        "collapsed to 2",
    )?;
    pointers_are_efault(
        &v,
        &[(KVM_GET_VCPU_EVENTS, true), (KVM_SET_VCPU_EVENTS, false)],
    )?;
    let mut x = e0;
    eq(
        io_mut(&vm, KVM_GET_VCPU_EVENTS, &mut x),
        Err(ENOTTY),
        "on the VM fd",
    )
}

fn debugregs_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 50), 1, "KVM_CAP_DEBUGREGS")?;
    let d0: kvm_debugregs = get(&v, KVM_GET_DEBUGREGS)?;
    let set = |d: &kvm_debugregs| {
        ioctl(
            v.as_raw_fd(),
            KVM_SET_DEBUGREGS,
            d as *const kvm_debugregs as u64,
        )
    };
    let d = kvm_debugregs {
        db: [0x1000, 0x2000, 0x3000, 0x4000],
        dr7: 0x4ff,
        ..d0
    };
    eq(set(&d), Ok(0), "SET")?;
    eq(
        get::<kvm_debugregs>(&v, KVM_GET_DEBUGREGS)?,
        d,
        "round trip",
    )?;
    for (what, b) in [
        ("flags", kvm_debugregs { flags: 1, ..d }),
        ("DR6 bit 32", kvm_debugregs { dr6: 1 << 32, ..d }),
        ("DR7 bit 63", kvm_debugregs { dr7: 1 << 63, ..d }),
    ] {
        eq(set(&b), Err(EINVAL), what)?;
    }
    eq(get::<kvm_debugregs>(&v, KVM_GET_DEBUGREGS)?, d, "unchanged")?;
    pointers_are_efault(&v, &[(KVM_GET_DEBUGREGS, true), (KVM_SET_DEBUGREGS, false)])?;
    let mut x = d0;
    eq(
        io_mut(&vm, KVM_GET_DEBUGREGS, &mut x),
        Err(ENOTTY),
        "on the VM fd",
    )
}

#[repr(C)]
#[derive(Default)]
struct DeviceAttr {
    flags: u32,
    group: u32,
    attr: u64,
    addr: u64,
}

fn tsc_offset_attribute() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 127), 1, "KVM_CAP_VCPU_ATTRIBUTES")?;
    let mut off = 0u64;
    let mut a = DeviceAttr {
        addr: &mut off as *mut u64 as u64,
        ..Default::default()
    };
    eq(
        io_mut(&v, KVM_HAS_DEVICE_ATTR, &mut a),
        Ok(0),
        "HAS TSC_OFFSET",
    )?;
    eq(io_mut(&v, KVM_GET_DEVICE_ATTR, &mut a), Ok(0), "GET")?;
    let tsc = get_msr(&v, MSR_IA32_TSC)?;
    // Moving the offset moves the guest TSC.
    off = off.wrapping_add(1 << 45);
    eq(io_mut(&v, KVM_SET_DEVICE_ATTR, &mut a), Ok(0), "SET")?;
    let tsc2 = get_msr(&v, MSR_IA32_TSC)?;
    check(
        tsc2.wrapping_sub(tsc).wrapping_sub(1 << 45) < 1 << 40,
        "TSC moved by the offset",
    )?;
    let mut back = 0u64;
    let mut b = DeviceAttr {
        addr: &mut back as *mut u64 as u64,
        ..Default::default()
    };
    eq(io_mut(&v, KVM_GET_DEVICE_ATTR, &mut b), Ok(0), "GET again")?;
    eq(back, off, "offset read back")?;
    // Hostile: other groups/attributes, bad value pointers, bad attr pointers, the VM fd.
    for (g, at) in [(1u32, 0u64), (0, 1), (u32::MAX, 0), (0, u64::MAX)] {
        let mut x = DeviceAttr {
            group: g,
            attr: at,
            addr: a.addr,
            ..Default::default()
        };
        for cmd in [
            KVM_HAS_DEVICE_ATTR,
            KVM_GET_DEVICE_ATTR,
            KVM_SET_DEVICE_ATTR,
        ] {
            eq(
                io_mut(&v, cmd, &mut x),
                Err(ENXIO),
                &format!("group {g} attr {at}"),
            )?;
        }
    }
    for p in bad_pointers() {
        let mut x = DeviceAttr {
            addr: p,
            ..Default::default()
        };
        eq(
            io_mut(&v, KVM_GET_DEVICE_ATTR, &mut x),
            Err(EFAULT),
            &format!("GET to {p:#x}"),
        )?;
        eq(
            io_mut(&v, KVM_SET_DEVICE_ATTR, &mut x),
            Err(EFAULT),
            &format!("SET from {p:#x}"),
        )?;
        eq(
            ioctl(v.as_raw_fd(), KVM_HAS_DEVICE_ATTR, p),
            Err(EFAULT),
            &format!("attr at {p:#x}"),
        )?;
    }
    let mut x = DeviceAttr {
        addr: a.addr,
        ..Default::default()
    };
    check(
        io_mut(&vm, KVM_HAS_DEVICE_ATTR, &mut x).is_err(),
        "the VM fd has no TSC attribute",
    )
}

fn nested_state_without_nesting() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    let cap = check_extension(&dev(), 157);
    eq(cap, 128 + 4096, "KVM_CAP_NESTED_STATE (SVM header + VMCB)")?;
    // kvm-ioctls test_get_and_set_nested_state: a 128-byte buffer is enough.
    let mut b = vec![0u8; 4224];
    b[4..8].copy_from_slice(&128u32.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_GET_NESTED_STATE, b.as_mut_ptr() as u64),
        Ok(0),
        "GET size 128",
    )?;
    let flags = u16::from_ne_bytes([b[0], b[1]]);
    let format = u16::from_ne_bytes([b[2], b[3]]);
    let size = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    eq(
        (flags, format, size),
        (0x100, 1, 128),
        "GIF set, SVM format, 128 bytes",
    )?;
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, b.as_ptr() as u64),
        Ok(0),
        "SET it back",
    )?;
    // Too small: E2BIG and the size needed written back.
    let mut s = vec![0u8; 128];
    eq(
        ioctl(v.as_raw_fd(), KVM_GET_NESTED_STATE, s.as_mut_ptr() as u64),
        Err(E2BIG),
        "size 0",
    )?;
    eq(
        u32::from_ne_bytes([s[4], s[5], s[6], s[7]]),
        128,
        "size written back",
    )?;
    // Invalid SETs.
    let mut bad = b.clone();
    bad[0..2].copy_from_slice(&0x1u16.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, bad.as_ptr() as u64),
        Err(EINVAL),
        "guest mode",
    )?;
    bad[0..2].copy_from_slice(&0x2u16.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, bad.as_ptr() as u64),
        Err(EINVAL),
        "run pending alone",
    )?;
    bad[0..2].copy_from_slice(&0x8000u16.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, bad.as_ptr() as u64),
        Err(EINVAL),
        "unknown flag",
    )?;
    let mut bad = b.clone();
    bad[2..4].copy_from_slice(&0u16.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, bad.as_ptr() as u64),
        Err(EINVAL),
        "VMX format",
    )?;
    let mut bad = b.clone();
    bad[4..8].copy_from_slice(&64u32.to_ne_bytes());
    eq(
        ioctl(v.as_raw_fd(), KVM_SET_NESTED_STATE, bad.as_ptr() as u64),
        Err(EINVAL),
        "size 64",
    )?;
    pointers_are_efault(
        &v,
        &[(KVM_GET_NESTED_STATE, true), (KVM_SET_NESTED_STATE, false)],
    )?;
    eq(
        ioctl(vm.as_raw_fd(), KVM_GET_NESTED_STATE, b.as_mut_ptr() as u64),
        Err(ENOTTY),
        "on the VM fd",
    )
}

fn vcpu_enable_cap_rules() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 54), 1, "KVM_CAP_ENABLE_CAP")?;
    let cap = |c: u32, flags: u32, a0: u64| {
        let mut b = [0u8; 104];
        b[0..4].copy_from_slice(&c.to_ne_bytes());
        b[4..8].copy_from_slice(&flags.to_ne_bytes());
        b[8..16].copy_from_slice(&a0.to_ne_bytes());
        ioctl(v.as_raw_fd(), KVM_ENABLE_CAP, b.as_ptr() as u64)
    };
    eq(cap(190, 0, 1), Ok(0), "ENFORCE_PV_FEATURE_CPUID")?;
    eq(cap(190, 1, 1), Err(EINVAL), "flags")?;
    for c in [0, 123, 145, 1000, u32::MAX] {
        eq(cap(c, 0, 0), Err(EINVAL), &format!("cap {c}"))?;
    }
    pointers_are_efault(&v, &[(KVM_ENABLE_CAP, false)])
}

fn check_extension_answers() -> Result<(), String> {
    let kvm = dev();
    let vm = create_vm(&kvm, 0).map_err(|e| format!("errno {e}"))?;
    for (cap, want) in [
        (7, 1),
        (14, 1),
        (41, 1),
        (50, 1),
        (54, 1),
        (74, 7),
        (127, 1),
        (157, 4224),
        (190, 1),
        (200, 1),
        (164, 1),
        (218, 1),
    ] {
        eq(
            check_extension(&kvm, cap),
            want,
            &format!("cap {cap} on /dev/kvm"),
        )?;
        eq(
            check_extension(&vm, cap),
            want,
            &format!("cap {cap} on the VM"),
        )?;
    }
    eq(check_extension(&kvm, 55), 1, "KVM_CAP_XSAVE")?;
    eq(
        check_extension(&kvm, 56),
        1,
        "KVM_CAP_XCRS (the host has XSAVE)",
    )?;
    check(
        check_extension(&kvm, 208) >= 4096,
        "KVM_CAP_XSAVE2 >= sizeof(struct kvm_xsave)",
    )?;
    // Not offered: TSC control.
    eq(check_extension(&kvm, 60), 0, "cap 60")?;
    Ok(())
}

fn td_vcpu_state_is_protected() -> Result<(), String> {
    let kvm = dev();
    let vm = create_vm(&kvm, KVM_X86_TDX_VM).map_err(|e| format!("TD: errno {e}"))?;
    crate::tdx_vm::init_vm_default(vm.as_raw_fd())?;
    eq(
        check_extension(&vm, 74),
        0,
        "KVM_CAP_SYNC_REGS on a TD (protected state)",
    )?;
    let v = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0)
        .map(fd_of)
        .map_err(|e| format!("vCPU: {e}"))?;
    let mut buf = vec![0u8; 4096];
    for cmd in [
        KVM_GET_REGS,
        KVM_SET_REGS,
        KVM_GET_SREGS,
        KVM_SET_SREGS,
        KVM_GET_SREGS2,
        KVM_SET_SREGS2,
        KVM_GET_DEBUGREGS,
        KVM_SET_DEBUGREGS,
    ] {
        eq(
            ioctl(v.as_raw_fd(), cmd, buf.as_mut_ptr() as u64),
            Err(EINVAL),
            &format!("ioctl {cmd:#x}"),
        )?;
    }
    Ok(())
}

#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Translation {
    linear: u64,
    physical: u64,
    valid: u8,
    writeable: u8,
    usermode: u8,
    pad: [u8; 5],
}

fn translate(v: &OwnedFd, linear: u64) -> Result<Translation, String> {
    let mut t = Translation {
        linear,
        ..Default::default()
    };
    io_mut(v, KVM_TRANSLATE, &mut t)
        .map_err(|e| format!("KVM_TRANSLATE {linear:#x}: errno {e}"))?;
    Ok(t)
}

fn translate_walks_the_guest_page_tables() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    // Reset state (paging off): identity; ~0 is INVALID_GPA itself, so not valid (kvm-ioctls'
    // test_translate_gva).
    let t = translate(&v, 0x1234)?;
    eq(
        (t.valid, t.physical, t.writeable, t.usermode),
        (1, 0x1234, 1, 0),
        "real mode",
    )?;
    eq(translate(&v, u64::MAX)?.valid, 0, "~0")?;
    // Long mode over 4-level tables in a memslot: VA 0x400000 -> GPA 0x5000.
    let size = 0x10_0000usize;
    // SAFETY: a fresh anonymous mapping the memslot uses; unmapped after the VM is gone.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u64
    };
    let q = |gpa: usize| gpa / 8;
    // SAFETY: the indices are inside the mapping.
    unsafe {
        *mem.add(q(0x1000)) = 0x2000 | 3;
        *mem.add(q(0x2000)) = 0x3000 | 3;
        *mem.add(q(0x3000) + 2) = 0x4000 | 3;
        *mem.add(q(0x4000)) = 0x5000 | 3;
    }
    let region: [u64; 4] = [0, 0, size as u64, mem as u64];
    let r = ioctl(
        vm.as_raw_fd(),
        KVM_SET_USER_MEMORY_REGION,
        region.as_ptr() as u64,
    );
    let result = (|| {
        eq(r, Ok(0), "memslot")?;
        set_cpuid(&v, &supported_cpuid()?).map_err(|e| format!("SET_CPUID2: {e}"))?;
        let lm = kvm_sregs {
            cr3: 0x1000,
            ..long_mode(sregs(&v)?)
        };
        eq(set_sregs(&v, &lm), Ok(0), "long mode")?;
        let t = translate(&v, 0x40_0abc)?;
        eq((t.valid, t.physical), (1, 0x5abc), "VA 0x400abc")?;
        // The walk sets accessed bits, as a hardware walk does.
        // SAFETY: inside the mapping.
        let pml4e = unsafe { *mem.add(q(0x1000)) };
        check(pml4e & 0x20 != 0, "PML4E accessed bit")?;
        eq(translate(&v, 0x60_0000)?.valid, 0, "unmapped VA")?;
        eq(
            translate(&v, 0x8000_0000_0000)?.valid,
            0,
            "non-canonical VA",
        )?;
        // Hostile: bad pointers, the VM fd.
        pointers_are_efault(&v, &[(KVM_TRANSLATE, true)])?;
        let mut t = Translation::default();
        eq(
            io_mut(&vm, KVM_TRANSLATE, &mut t),
            Err(ENOTTY),
            "on the VM fd",
        )
    })();
    drop(v);
    drop(vm);
    // SAFETY: mapped above; the VM is closed.
    unsafe { libc::munmap(mem.cast(), size) };
    result
}

/// `struct kvm_xsave` (4096 bytes, 4-byte aligned region).
#[repr(C, align(64))]
struct Xsave([u8; 4096]);

fn fpu_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    let mut f: kvm_bindings::kvm_fpu = get(&v, KVM_GET_FPU)?;
    // fpstate's init state: FCW 0x37f; MXCSR is not reported by KVM_GET_FPU (upstream).
    eq((f.fcw, f.mxcsr), (0x37f, 0), "init FCW, MXCSR not reported")?;
    f.fcw = 0x27f;
    f.fsw = 0x1234;
    f.ftwx = 0x81;
    f.last_opcode = 0x3ff;
    f.last_ip = 0x1122_3344;
    f.last_dp = 0x5566_7788;
    f.fpr[3] = [3; 16];
    f.xmm[15] = [0xee; 16];
    f.mxcsr = 0xffff_ffff;
    eq(io_mut(&v, KVM_SET_FPU, &mut f), Ok(0), "SET_FPU")?;
    let g: kvm_bindings::kvm_fpu = get(&v, KVM_GET_FPU)?;
    eq(
        g,
        kvm_bindings::kvm_fpu { mxcsr: 0, ..f },
        "round trip (MXCSR untouched)",
    )?;
    // The XSAVE image (the kernel's fpu_copy_guest_fpstate_to_uabi): a component whose
    // XSTATE_BV bit is clear reads as its init state, so x87/SSE show KVM_SET_FPU's values only
    // if the header says they are in use; MXCSR stays at its init value 0x1f80 either way.
    let mut x = Box::new(Xsave([0; 4096]));
    eq(io_mut(&v, KVM_GET_XSAVE, &mut *x), Ok(0), "GET_XSAVE")?;
    let b = &x.0;
    let bv = b[512];
    let fcw = if bv & 1 != 0 { 0x27f } else { 0x37f };
    eq(
        u16::from_le_bytes([b[0], b[1]]),
        fcw,
        "XSAVE FCW per XSTATE_BV",
    )?;
    eq(
        u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        0x1f80,
        "XSAVE MXCSR",
    )?;
    let xmm15 = if bv & 2 != 0 { [0xee; 16] } else { [0; 16] };
    eq(
        &b[160 + 240..176 + 240],
        &xmm15[..],
        "XSAVE XMM15 per XSTATE_BV",
    )?;
    pointers_are_efault(&v, &[(KVM_GET_FPU, true), (KVM_SET_FPU, false)])?;
    eq(
        io_mut(&vm, KVM_GET_FPU, &mut f),
        Err(ENOTTY),
        "on the VM fd",
    )
}

fn xsave_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    let mut x = Box::new(Xsave([0; 4096]));
    eq(io_mut(&v, KVM_GET_XSAVE, &mut *x), Ok(0), "GET_XSAVE")?;
    // XMM0 through the image.
    x.0[160..176].copy_from_slice(&[0x5a; 16]);
    // XSTATE_BV (header at 512) must say SSE is in use for XMM0 to load.
    x.0[512] |= 2;
    eq(io_mut(&v, KVM_SET_XSAVE, &mut *x), Ok(0), "SET_XSAVE")?;
    let f: kvm_bindings::kvm_fpu = get(&v, KVM_GET_FPU)?;
    eq(f.xmm[0], [0x5a; 16], "XMM0 from SET_XSAVE")?;
    // A reserved XSTATE_BV bit, an XCOMP_BV in the standard format: refused by the kernel.
    let mut bad = Box::new(Xsave(x.0));
    bad.0[512 + 7] = 0x80;
    eq(
        io_mut(&v, KVM_SET_XSAVE, &mut *bad),
        Err(EINVAL),
        "XSTATE_BV bit 63",
    )?;
    let mut bad = Box::new(Xsave(x.0));
    bad.0[520 + 7] = 0x80;
    eq(
        io_mut(&v, KVM_SET_XSAVE, &mut *bad),
        Err(EINVAL),
        "compacted format",
    )?;
    eq(
        get::<kvm_bindings::kvm_fpu>(&v, KVM_GET_FPU)?.xmm[0],
        [0x5a; 16],
        "unchanged",
    )?;
    // XSAVE2: the size KVM_CAP_XSAVE2 says.
    let size = check_extension(&vm, 208) as usize;
    check(size >= 4096, "XSAVE2 size")?;
    let mut big = vec![0u8; size + 64];
    eq(
        ioctl(v.as_raw_fd(), KVM_GET_XSAVE2, big.as_mut_ptr() as u64),
        Ok(0),
        "GET_XSAVE2",
    )?;
    eq(&big[..4096], &x.0[..], "XSAVE2 = XSAVE")?;
    eq(&big[size..], &[0; 64][..], "nothing past the size")?;
    pointers_are_efault(
        &v,
        &[
            (KVM_GET_XSAVE, true),
            (KVM_SET_XSAVE, false),
            (KVM_GET_XSAVE2, true),
        ],
    )?;
    eq(
        io_mut(&vm, KVM_GET_XSAVE, &mut *x),
        Err(ENOTTY),
        "on the VM fd",
    )
}

fn xcrs_rules() -> Result<(), String> {
    let (vm, v) = vm_vcpu(0)?;
    let x: kvm_bindings::kvm_xcrs = get(&v, KVM_GET_XCRS)?;
    eq(
        (x.nr_xcrs, x.xcrs[0].xcr, x.xcrs[0].value),
        (1, 0, 1),
        "XCR0 = x87 at reset",
    )?;
    let set = |x: &kvm_bindings::kvm_xcrs| {
        ioctl(
            v.as_raw_fd(),
            KVM_SET_XCRS,
            x as *const kvm_bindings::kvm_xcrs as u64,
        )
    };
    let with = |value: u64| {
        let mut n = x;
        n.xcrs[0].value = value;
        n
    };
    // Before KVM_SET_CPUID2 the guest may only have x87.
    eq(set(&with(3)), Err(EINVAL), "SSE without a CPUID table")?;
    let table = supported_cpuid()?;
    set_cpuid(&v, &table).map_err(|e| format!("SET_CPUID2: {e}"))?;
    let d = find(&table, 0xd, 0).ok_or("no leaf 0xD")?;
    let supported = u64::from(d.eax) | u64::from(d.edx) << 32;
    check(supported & 3 == 3, "x87|SSE supported")?;
    eq(set(&with(3)), Ok(0), "x87|SSE")?;
    // PKRU is offered when the host kernel enables it (upstream KVM_SUPPORTED_XCR0).
    if supported & 1 << 9 != 0 {
        eq(set(&with(3 | 1 << 9)), Ok(0), "x87|SSE|PKRU")?;
    }
    if supported & 4 != 0 {
        eq(set(&with(7)), Ok(0), "AVX")?;
        // CPUID 0xD.0 EBX follows XCR0.
        let (_, c) = get_cpuid(&v, 256);
        let e = find(&c.e[..c.nent as usize], 0xd, 0).ok_or("0xD")?;
        // The host's CPUID 0xD.2: AVX's offset (EBX) and size (EAX).
        let avx = std::arch::x86_64::__cpuid_count(0xd, 2);
        eq(
            e.ebx,
            (avx.ebx + avx.eax).max(576),
            "0xD.0 EBX for x87|SSE|AVX",
        )?;
        eq(set(&with(5)), Err(EINVAL), "AVX without SSE")?;
    }
    for (what, bad) in [
        ("no x87", with(2)),
        ("MPX (never offered)", with(3 | 1 << 3 | 1 << 4)),
        ("bit 63", with(3 | 1 << 63)),
        (
            "flags",
            kvm_bindings::kvm_xcrs {
                flags: 1,
                ..with(3)
            },
        ),
        (
            "17 XCRs",
            kvm_bindings::kvm_xcrs {
                nr_xcrs: 17,
                ..with(3)
            },
        ),
    ] {
        eq(set(&bad), Err(EINVAL), what)?;
    }
    let now: kvm_bindings::kvm_xcrs = get(&v, KVM_GET_XCRS)?;
    check(now.xcrs[0].value & 3 == 3, "XCR0 kept")?;
    pointers_are_efault(&v, &[(KVM_GET_XCRS, true), (KVM_SET_XCRS, false)])?;
    let mut y = x;
    eq(
        io_mut(&vm, KVM_GET_XCRS, &mut y),
        Err(ENOTTY),
        "on the VM fd",
    )
}

/// The vCPU's kvm_run page, mapped shared; unmapped on drop.
struct RunMap(*mut u8);

impl RunMap {
    fn new(v: &OwnedFd) -> Result<RunMap, String> {
        // SAFETY: maps page 0 of the vCPU fd (kvm_run), shared; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                v.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err("mmap kvm_run".into());
        }
        Ok(RunMap(p.cast()))
    }
    fn at<T>(&self, off: usize) -> *mut T {
        self.0.wrapping_add(off).cast()
    }
    fn set<T: Copy>(&self, off: usize, v: T) {
        // SAFETY: inside the mapped page; the kernel reads it volatile too.
        unsafe { std::ptr::write_volatile(self.at(off), v) }
    }
    fn get<T: Copy>(&self, off: usize) -> T {
        // SAFETY: inside the mapped page.
        unsafe { std::ptr::read_volatile(self.at(off)) }
    }
}

impl Drop for RunMap {
    fn drop(&mut self) {
        // SAFETY: mapped in `new`.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

const RUN_IMMEDIATE_EXIT: usize = 1;
const RUN_VALID: usize = 288;
const RUN_DIRTY: usize = 296;
const RUN_S: usize = 304;
const RUN_S_SREGS: usize = RUN_S + 144;
const RUN_S_EVENTS: usize = RUN_S + 144 + 312;
const KVM_RUN: u64 = 0xae80;

fn sync_regs_rules() -> Result<(), String> {
    let (_vm, v) = vm_vcpu(0)?;
    eq(check_extension(&dev(), 74), 7, "KVM_CAP_SYNC_REGS")?;
    let m = RunMap::new(&v)?;
    let run = || ioctl(v.as_raw_fd(), KVM_RUN, 0);
    m.set::<u8>(RUN_IMMEDIATE_EXIT, 1);
    // valid: the state is stored into s.regs on the way out (EINTR included).
    m.set::<u64>(RUN_VALID, 7);
    eq(run(), Err(EINTR), "immediate exit")?;
    let r: kvm_regs = m.get(RUN_S);
    eq((r.rip, r.rdx, r.rflags), (0xfff0, 0x600, 2), "s.regs")?;
    let sr: kvm_sregs = m.get(RUN_S_SREGS);
    eq(sr, sregs(&v)?, "s.sregs = GET_SREGS")?;
    let ev: kvm_vcpu_events = m.get(RUN_S_EVENTS);
    eq(
        ev,
        get::<kvm_vcpu_events>(&v, KVM_GET_VCPU_EVENTS)?,
        "s.events = GET_VCPU_EVENTS",
    )?;
    // dirty: loaded before the run, dirty bits cleared.
    m.set(
        RUN_S,
        kvm_regs {
            rip: 0x1234,
            rax: 0x55,
            ..r
        },
    );
    m.set(RUN_S_SREGS, kvm_sregs { cr2: 0xabc, ..sr });
    m.set::<u64>(RUN_DIRTY, 3);
    eq(run(), Err(EINTR), "dirty REGS|SREGS")?;
    eq(m.get::<u64>(RUN_DIRTY), 0, "dirty bits consumed")?;
    let g: kvm_regs = get(&v, KVM_GET_REGS)?;
    eq((g.rip, g.rax), (0x1234, 0x55), "REGS loaded")?;
    eq(sregs(&v)?.cr2, 0xabc, "SREGS loaded")?;
    // Invalid SREGS / EVENTS: EINVAL from KVM_RUN; REGS before them stay loaded.
    m.set(RUN_S, kvm_regs { rip: 0x4321, ..r });
    m.set(RUN_S_SREGS, kvm_sregs { cr0: 1 << 29, ..sr });
    m.set::<u64>(RUN_DIRTY, 3);
    eq(run(), Err(EINVAL), "bad s.sregs")?;
    eq(
        get::<kvm_regs>(&v, KVM_GET_REGS)?.rip,
        0x4321,
        "REGS loaded before the refusal",
    )?;
    eq(m.get::<u64>(RUN_DIRTY), 2, "SREGS still dirty")?;
    m.set(RUN_S_SREGS, sr);
    m.set(RUN_S_EVENTS, kvm_vcpu_events { flags: 0x40, ..ev });
    m.set::<u64>(RUN_DIRTY, 4);
    eq(run(), Err(EINVAL), "bad s.events")?;
    m.set(RUN_S_EVENTS, ev);
    // Reserved valid/dirty bits.
    m.set::<u64>(RUN_DIRTY, 8);
    eq(run(), Err(EINVAL), "dirty bit 3")?;
    m.set::<u64>(RUN_DIRTY, 0);
    m.set::<u64>(RUN_VALID, 1 << 63);
    eq(run(), Err(EINVAL), "valid bit 63")?;
    m.set::<u64>(RUN_VALID, 0);
    // A thread racing bad CR4 values and exception vectors into s.regs: only errors or EINTR.
    let base = m.0 as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let racer = std::thread::spawn(move || {
        let p = base as *mut u8;
        let mut i = 0u64;
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: the mapping outlives the thread (joined before the RunMap drops).
            unsafe {
                std::ptr::write_volatile(p.add(RUN_S_SREGS + 248).cast::<u64>(), i.rotate_left(13));
                std::ptr::write_volatile(p.add(RUN_S_EVENTS + 1), (i & 0xff) as u8);
                std::ptr::write_volatile(p.add(RUN_S_EVENTS), (i & 1) as u8);
                std::ptr::write_volatile(p.add(RUN_DIRTY).cast::<u64>(), 6);
            }
            i = i.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
    });
    let mut bad = None;
    for _ in 0..3000 {
        match run() {
            Err(EINTR) | Err(EINVAL) => {}
            other => {
                bad = Some(other);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().map_err(|_| "racer panicked")?;
    check(bad.is_none(), &format!("KVM_RUN answered {bad:?}"))?;
    // Whatever was accepted is a valid state: SET_SREGS of it succeeds.
    let now = sregs(&v)?;
    eq(set_sregs(&v, &now), Ok(0), "the accepted state is valid")
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("state_reset_is_upstreams", Any, |_| {
            reset_state_is_upstreams()
        }),
        ("state_regs_round_trip", Any, |_| regs_round_trip()),
        ("state_regs_hostile", Any, |_| regs_hostile()),
        ("state_sregs_long_mode_entry", Any, |_| {
            sregs_long_mode_entry()
        }),
        ("state_sregs_validation", Any, |_| sregs_validation()),
        ("state_sregs_interrupt_bitmap", Any, |_| {
            sregs_interrupt_bitmap()
        }),
        ("state_sregs_hostile", Any, |_| sregs_hostile()),
        ("state_sregs2_rules", Any, |_| sregs2_rules()),
        ("state_mp_state_rules", Any, |_| mp_state_rules()),
        ("state_cpuid2_rules", Any, |_| cpuid2_rules()),
        ("state_supported_cpuid_is_truthful", Any, |_| {
            supported_cpuid_is_truthful()
        }),
        ("state_msr_index_list_round_trips", Any, |_| {
            msr_index_list_round_trips()
        }),
        ("state_feature_msrs", Any, |_| {
            feature_msrs_as_kvm_ioctls_reads_them()
        }),
        ("state_msrs_rules", Any, |_| msrs_rules()),
        ("state_vcpu_events_rules", Any, |_| vcpu_events_rules()),
        ("state_debugregs_rules", Any, |_| debugregs_rules()),
        ("state_tsc_offset_attribute", Any, |_| {
            tsc_offset_attribute()
        }),
        ("state_nested_state_without_nesting", Any, |_| {
            nested_state_without_nesting()
        }),
        ("state_vcpu_enable_cap", Any, |_| vcpu_enable_cap_rules()),
        ("state_check_extension", Any, |_| check_extension_answers()),
        ("state_fpu_rules", Any, |_| fpu_rules()),
        ("state_sync_regs_rules", Any, |_| sync_regs_rules()),
        ("state_xsave_rules", Any, |_| xsave_rules()),
        ("state_xcrs_rules", Any, |_| xcrs_rules()),
        ("state_translate_walks_the_page_tables", Any, |_| {
            translate_walks_the_guest_page_tables()
        }),
        ("state_td_vcpu_state_is_protected", Tdx, |_| {
            td_vcpu_state_is_protected()
        }),
    ]
}
