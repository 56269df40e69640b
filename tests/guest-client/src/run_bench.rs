// SPDX-License-Identifier: GPL-2.0-only
//! Run-loop benchmarks beside `--bench-run` (the `svm` helper's OUT round trip and INVD loop):
//! `--bench-cpuid` (an in-kernel exit that every KVM handles: CPUID) and `--bench-npt` (4 KiB
//! nested-paging faults while a guest touches 256 MiB). Figures, not checks: they are printed
//! as `bench-run: WHAT: N ns` and compared with upstream kvm_amd by scripts/bench-run.sh, so
//! they use nothing but standard `/dev/kvm` ioctls (no state ioctls either: the guests start at
//! the reset vector and switch modes themselves) and run unchanged on upstream KVM.
//!
//! Every figure is the median of several runs, each in a fresh VM: [`CPUID_REPS`] for CPUID,
//! the count given after `--bench-npt` (default 1: under QEMU TCG one pass over 256 MiB takes
//! minutes) for the NPT figures.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs of the CPUID figure (the median is printed).
const CPUID_REPS: usize = 3;
/// CPUID executions per run.
const CPUID_LOOPS: u32 = 5_000;
/// RAM the NPT benchmark touches, one 4 KiB page at a time.
const NPT_BYTES: usize = 256 << 20;
const PAGE: usize = 4096;
/// The port the guests report on.
const PORT: u16 = 0x80;

/// Anonymous private memory for a memslot, unmapped on drop.
struct Mem {
    ptr: *mut u8,
    len: usize,
}

impl Mem {
    /// `len` bytes, 4 KiB-backed: THP off for the range (MADV_NOHUGEPAGE), so that upstream
    /// KVM maps it with 4 KiB NPT entries (a huge host page would let it map 2 MiB at once).
    /// With `populate` every page is written once here, so that the guest's faults find the
    /// host page present (the fault path alone) instead of allocating it.
    fn new(len: usize, populate: bool) -> Result<Mem, String> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let m = Mem { ptr: p.cast(), len };
        // SAFETY: the range is our mapping. Failure (no THP in the kernel) leaves 4 KiB pages.
        unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        if populate {
            for off in (0..len).step_by(PAGE) {
                // SAFETY: inside the mapping; no guest runs on it yet.
                unsafe { std::ptr::write_volatile(m.ptr.add(off), 1) };
            }
        }
        Ok(m)
    }

    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: inside the mapping (asserted); no guest runs on it yet.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) };
    }

    fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: inside the mapping (asserted), aligned by the callers; the vCPU is stopped.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast()) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: our mapping, unused once the VM (declared before it in `Vm`) is closed.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A VM with one vCPU at the reset vector: 64 KiB of code at 0xffff0000 (`code` at offset 0,
/// `jmp 0` at 0xfff0) and `ram` at GPA 0. Field order is drop order: the fds close before the
/// memory goes.
struct Vm {
    vcpu: VcpuFd,
    _vm: VmFd,
    _rom: Mem,
    ram: Mem,
}

/// `jmp near 0x0000` at IP 0xfff0: E9 rel16, rel16 = 0x0000 - 0xfff3 (mod 2^16).
const RESET_JMP: [u8; 3] = [0xe9, 0x0d, 0x00];

impl Vm {
    fn new(code: &[u8], ram: Mem) -> Result<Vm, String> {
        let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        let rom = Mem::new(0x10000, false)?;
        rom.write(0, code);
        rom.write(0xfff0, &RESET_JMP);
        for (slot, gpa, m) in [(0, 0xffff_0000u64, &rom), (1, 0, &ram)] {
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: m.len as u64,
                userspace_addr: m.ptr as u64,
            };
            // SAFETY: the memory outlives the VM: both live in the returned `Vm`, whose VM fd
            // is dropped first.
            unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("memslot {slot}: {e}"))?;
        }
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        Ok(Vm {
            vcpu,
            _vm: vm,
            _rom: rom,
            ram,
        })
    }

    /// One KVM_RUN that must end in the guest's OUT to [`PORT`]; returns how long it took.
    fn run_to_out(&mut self, what: &str) -> Result<Duration, String> {
        let t0 = Instant::now();
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(PORT, _)) => Ok(t0.elapsed()),
            Ok(e) => Err(format!("{what}: {e:?} instead of OUT to port {PORT:#x}")),
            Err(e) => Err(format!("{what}: KVM_RUN: {e}")),
        }
    }

    fn run_to_hlt(&mut self) -> Result<(), String> {
        match self.vcpu.run() {
            Ok(VcpuExit::Hlt) => Ok(()),
            Ok(e) => Err(format!("{e:?} instead of HLT at the end")),
            Err(e) => Err(format!("KVM_RUN: {e}")),
        }
    }
}

/// The first of `names` the vCPU's binary stats fd has, with its value: upstream and this
/// module name some counters differently ("pf_taken" / "page_faults"); None if neither has it
/// (or the fd is not there).
fn vcpu_stat(v: &VcpuFd, names: &[&'static str]) -> Counted {
    // SAFETY: dup of the vCPU fd, a new fd owned by `fd` from now on.
    let raw = unsafe { libc::dup(v.as_raw_fd()) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    names
        .iter()
        .find_map(|&n| crate::prefault::vm_stat(&fd, n).ok().map(|x| (n, x)))
}

/// A counter of the vCPU's stats fd: (name, value), None where there is none.
type Counted = Option<(&'static str, u64)>;

/// Exit counters as upstream names them (both name it "exits").
const EXITS: &[&str] = &["exits"];
/// NPT fault counters: upstream's every-fault count, then this module's.
const FAULTS: &[&str] = &["pf_taken", "page_faults"];

/// Real mode: `CPUID_LOOPS` times CPUID leaf 0, then OUT, HLT.
fn cpuid_guest() -> Vec<u8> {
    let mut c = vec![0x66, 0xbe]; // mov esi, imm32
    c.extend_from_slice(&CPUID_LOOPS.to_le_bytes());
    c.extend_from_slice(&[
        0x66, 0x31, 0xc0, // l: xor eax, eax
        0x0f, 0xa2, // cpuid
        0x66, 0x4e, // dec esi
        0x75, 0xf7, // jnz l
        0xba, 0x80, 0x00, // mov dx, 0x80
        0xee, // out dx, al
        0xf4, // hlt
    ]);
    c
}

/// Reset vector -> 32-bit protected mode, flat segments, paging off (linear = GPA); then two
/// passes writing each page's own address to its first dword for 256 MiB from GPA 0, an OUT
/// after each pass, HLT. Pass 1 takes an NPT fault per 4 KiB page; pass 2 the same loop
/// without faults (its time is the loop's own cost, subtracted). Offsets are from 0xffff0000.
const NPT_GUEST: &[u8] = &[
    0xfa, // 00: cli
    0x2e, 0x66, 0x0f, 0x01, 0x16, 0x60, 0x00, // 01: lgdt dword cs:[0x60]
    0x0f, 0x20, 0xc0, // 08: mov eax, cr0
    0x0c, 0x01, // 0b: or al, 1 (PE)
    0x0f, 0x22, 0xc0, // 0d: mov cr0, eax
    0x66, 0xea, 0x18, 0x00, 0xff, 0xff, 0x08, 0x00, // 10: jmp dword 0x08:0xffff0018
    // 32-bit code from here.
    0x66, 0xb8, 0x10, 0x00, // 18: mov ax, 0x10
    0x8e, 0xd8, // 1c: mov ds, ax
    0x8e, 0xc0, // 1e: mov es, ax
    0x8e, 0xd0, // 20: mov ss, ax
    0xbb, 0x02, 0x00, 0x00, 0x00, // 22: mov ebx, 2 (passes)
    0x31, 0xff, // 27: pass: xor edi, edi
    0xb9, 0x00, 0x00, 0x01, 0x00, // 29: mov ecx, 65536 (pages in 256 MiB)
    0x89, 0x3f, // 2e: touch: mov [edi], edi
    0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, // 30: add edi, 4096
    0x49, // 36: dec ecx
    0x75, 0xf5, // 37: jnz touch
    0x66, 0xba, 0x80, 0x00, // 39: mov dx, 0x80
    0xee, // 3d: out dx, al
    0x4b, // 3e: dec ebx
    0x75, 0xe6, // 3f: jnz pass
    0xf4, // 41: hlt
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 42: pad to 0x48
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 48: GDT[0] null
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, // 50: GDT[1] code32, base 0, 4 GiB
    0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00, // 58: GDT[2] data32, base 0, 4 GiB
    0x17, 0x00, 0x48, 0x00, 0xff, 0xff, // 60: GDTR: limit 23, base 0xffff0048
];

/// The median of `f` over `reps` (at least one) runs (each `f` builds its own VM).
fn median<F: FnMut() -> Result<f64, String>>(reps: usize, mut f: F) -> Result<f64, String> {
    let reps = reps.max(1);
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        v.push(f()?);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[reps / 2])
}

fn cpuid_once() -> Result<f64, String> {
    let mut vm = Vm::new(&cpuid_guest(), Mem::new(PAGE, false)?)?;
    let e0 = vcpu_stat(&vm.vcpu, EXITS);
    let t = vm.run_to_out("CPUID loop")?;
    // Where the exits are counted, each CPUID must have been one (else the figure would be
    // of a CPUID that did not exit).
    if let (Some((_, a)), Some((_, b))) = (e0, vcpu_stat(&vm.vcpu, EXITS)) {
        if b - a < u64::from(CPUID_LOOPS) {
            return Err(format!("{} exits for {CPUID_LOOPS} CPUIDs", b - a));
        }
    }
    vm.run_to_hlt()?;
    Ok(t.as_nanos() as f64 / f64::from(CPUID_LOOPS))
}

/// (ns per 4 KiB fault, ns per page of the loop alone, the faults the vCPU counted in pass 1
/// if it counts them).
fn npt_once(populate: bool) -> Result<(f64, f64, Counted), String> {
    let mut vm = Vm::new(NPT_GUEST, Mem::new(NPT_BYTES, populate)?)?;
    let f0 = vcpu_stat(&vm.vcpu, FAULTS);
    let faulting = vm.run_to_out("pass 1 (faulting)")?;
    let faults = match (f0, vcpu_stat(&vm.vcpu, FAULTS)) {
        (Some((n, a)), Some((_, b))) => Some((n, b - a)),
        _ => None,
    };
    let mapped = vm.run_to_out("pass 2 (mapped)")?;
    vm.run_to_hlt()?;
    // The guest really wrote every page (the figure is not of a loop that did nothing).
    for off in (0..NPT_BYTES).step_by(PAGE) {
        let got = vm.ram.read_u32(off);
        if got != off as u32 {
            return Err(format!(
                "GPA {off:#x} holds {got:#x} after the guest's writes"
            ));
        }
    }
    let pages = (NPT_BYTES / PAGE) as f64;
    let loop_ns = mapped.as_nanos() as f64 / pages;
    Ok((
        faulting.as_nanos() as f64 / pages - loop_ns,
        loop_ns,
        faults,
    ))
}

fn report(what: &str, r: Result<f64, String>, note: &str) -> bool {
    match r {
        Ok(ns) => {
            println!("bench-run: {what}: {ns:.0} ns{note}");
            true
        }
        Err(e) => {
            println!("bench-run: {what}: FAILED: {e}");
            false
        }
    }
}

/// `--bench-cpuid`: ns per CPUID exit handled in the kernel. False if it could not measure.
pub(crate) fn cpuid() -> bool {
    report(
        "in-kernel exit (CPUID leaf 0)",
        median(CPUID_REPS, cpuid_once),
        "",
    )
}

/// `--bench-npt`: ns per 4 KiB NPT fault over 256 MiB, with the host pages already there and
/// with the host allocating them on the fault; the median of `reps` runs each. False if it could
/// not measure.
pub(crate) fn npt(reps: usize) -> bool {
    let mut ok = true;
    for (populate, what) in [
        (true, "host pages present"),
        (false, "host pages allocated on fault"),
    ] {
        let mut loop_ns = Vec::new();
        let mut counted = None;
        let r = median(reps, || {
            let (fault, l, c) = npt_once(populate)?;
            loop_ns.push(l);
            counted = c;
            Ok(fault)
        });
        // The vCPU's own count of the last run's faults, where it keeps one: 65536 means one
        // fault per page (a 2 MiB mapping would make fewer; the figure stays per page).
        let note = match counted {
            Some((name, n)) => format!(" ({n} faults by {name} for {} pages)", NPT_BYTES / PAGE),
            None => String::new(),
        };
        let what = format!("NPT fault, 4 KiB, 256 MiB touched ({what})");
        ok &= report(&what, r, &note);
        if let Some(l) = loop_ns.iter().copied().min_by(f64::total_cmp) {
            println!("bench-run: (the guest loop alone, subtracted above: {l:.0} ns per page)");
        }
    }
    ok
}
