// SPDX-License-Identifier: GPL-2.0-only
//! Interrupt benchmarks (issue 12), figures for `scripts/bench-run.sh` to compare with upstream
//! kvm_amd in the same QEMU, so standard `/dev/kvm` ioctls only:
//!
//! - `--bench-ipi [N] [RUNS]`: the IPI round trip between two vCPUs on two threads. vCPU 0
//!   writes the x2APIC ICR (fixed, physical, vector 0x41 to APIC ID 1); vCPU 1, halted in
//!   `sti; hlt` (so the in-kernel HLT wake-up is on the path), takes it, EOIs and sends vector
//!   0x40 back from its handler; vCPU 0 waits for that in `sti; hlt` too. N round trips per
//!   run (default [`IPI_TRIPS`]), the median of RUNS runs (default [`IPI_RUNS`]), each in a
//!   fresh VM.
//! - `--bench-timer [N] [DELAY_US] [tmict]`: LAPIC timer latency. The guest reads its TSC, arms the
//!   one-shot timer DELAY_US ahead (IA32_TSC_DEADLINE where `KVM_CAP_TSC_DEADLINE_TIMER` says
//!   the kernel has it, else TMICT with divide-by-1 and the default 1 ns APIC bus cycle), halts,
//!   and its handler reads the TSC; latency = TSC in the handler - deadline, in ns by the
//!   vCPU's `KVM_GET_TSC_KHZ`. The median over N shots (default [`TIMER_SHOTS`]).
//!   `tmict` arms TMICT even where TSC-deadline is there.
//!
//! Each prints `bench-run: WHAT: N ns (notes)` like the other run-loop figures, or a
//! `FAILED` line (and the client exits non-zero) when the guest did not do the work: the
//! guest's own counts of round trips and timer expiries must equal N.
//!
//! The guests: 64-bit mode set up by `KVM_SET_SREGS` (identity map of the first 2 MiB, flat
//! GDT at 0x500, IDT at 0x7000), the code below at [`CODE`], data cells at 0x6000 and timer
//! samples from [`SAMPLES`]. The x2APIC is enabled by the guest (APIC_BASE EN|EXTD), which
//! needs X2APIC in the vCPU's CPUID: `KVM_GET_SUPPORTED_CPUID` has it on both kernels.

use crate::run::Guest;
use kvm_bindings::kvm_segment;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default round trips per IPI run.
const IPI_TRIPS: u64 = 200;
/// Default IPI runs (the median is printed).
const IPI_RUNS: usize = 3;
/// Default timer shots.
const TIMER_SHOTS: u64 = 100;
/// Default timer delay: long enough that the guest halts before the deadline under QEMU TCG,
/// where one exit costs hundreds of microseconds.
const TIMER_DELAY_US: u64 = 3000;
/// A run that has not finished by then is stopped (signals to its vCPU threads) and fails.
const WATCHDOG: Duration = Duration::from_secs(300);

/// Guest RAM at GPA 0.
const RAM: usize = 0x20_0000;
/// Where the guest code is (identity-mapped, so GPA = linear address).
const CODE: usize = 0x1_0000;
/// Data cells the guest and the host share.
const READY: usize = 0x6000; // u32: vCPU 1 is up (set by vCPU 1)
const COUNT: usize = 0x6008; // u64: N, round trips or shots (set by the host)
const REPLIES: usize = 0x6010; // u64: vector 0x40 taken by vCPU 0
const IPIS: usize = 0x6018; // u64: vector 0x41 taken by vCPU 1
const TSC_START: usize = 0x6020; // u64: vCPU 0's TSC before the first IPI
const TSC_END: usize = 0x6028; // u64: ... after the last reply
const DELAY: usize = 0x6040; // u64: TSC ticks (deadline) or TMICT count to arm
const LVTT: usize = 0x6048; // u32: the LVT timer value to write
const SHOTS: usize = 0x6050; // u64: timer interrupts taken
const USE_TMICT: usize = 0x6058; // u32: 0 arm IA32_TSC_DEADLINE, 1 arm TMICT
/// Timer samples, 32 bytes per shot: TSC when arming, in the handler, before the last HLT.
const SAMPLES: usize = 0x10_0000;
const MAX_SHOTS: u64 = ((RAM - SAMPLES) / 32) as u64;

/// Entry points and handlers, offsets in the code image (as assembled: the calls are relative).
const AT_SENDER: usize = 0x00;
const AT_HALTER: usize = 0x80;
const AT_REPLY_HANDLER: usize = 0xc0;
const AT_IPI_HANDLER: usize = 0x100;
const AT_TIMER_HANDLER: usize = 0x140;
const AT_TIMER_GUEST: usize = 0x180;
const AT_X2APIC_ON: usize = 0x240;
const AT_EOI: usize = 0x260;

/// Vectors: the reply to vCPU 0, the IPI to vCPU 1, the timer.
const V_REPLY: u64 = 0x40;
const V_IPI: u64 = 0x41;
const V_TIMER: u64 = 0x42;

/// LVTT: TSC-deadline mode (bits 18:17 = 2) or one-shot, vector 0x42.
const LVTT_DEADLINE: u32 = 0x4_0042;
const LVTT_ONESHOT: u32 = 0x42;

/// `KVM_CAP_TSC_DEADLINE_TIMER`.
const KVM_CAP_TSC_DEADLINE_TIMER: u64 = 72;
/// `KVM_GET_STATS_FD` on a vCPU fd.
const KVM_GET_STATS_FD: u64 = 0xaece;

// The guest code, 64-bit (assembled with GNU as, offsets from CODE).

/// vCPU 0: x2APIC on, wait for vCPU 1, OUT 0x80 (the host starts its clock), TSC, then N
/// times: ICR <- vector 0x41 to APIC ID 1, wait (cli; check; sti; hlt) for the reply count;
/// TSC, OUT 0x80 (the host stops its clock).
#[rustfmt::skip]
const SENDER: &[u8] = &[
    0xe8, 0x3b, 0x02, 0x00, 0x00, // 000: call pro
    // s0ready:
    0x83, 0x3c, 0x25, 0x00, 0x60, 0x00, 0x00, 0x01, // 005: cmp dword [0x6000], 0x1
    0x74, 0x04, // 00d: je s0go
    0xf3, 0x90, // 00f: pause
    0xeb, 0xf2, // 011: jmp s0ready
    // s0go:
    0xe6, 0x80, // 013: out 0x80, al
    0x0f, 0x31, // 015: rdtsc
    0x48, 0xc1, 0xe2, 0x20, // 017: shl rdx, 0x20
    0x48, 0x09, 0xd0, // 01b: or rax, rdx
    0x48, 0x89, 0x04, 0x25, 0x20, 0x60, 0x00, 0x00, // 01e: mov qword [0x6020], rax
    0x4c, 0x8b, 0x04, 0x25, 0x08, 0x60, 0x00, 0x00, // 026: mov r8, qword [0x6008]
    0x45, 0x31, 0xd2, // 02e: xor r10d, r10d
    // s0loop:
    0xb9, 0x30, 0x08, 0x00, 0x00, // 031: mov ecx, 0x830
    0xb8, 0x41, 0x00, 0x00, 0x00, // 036: mov eax, 0x41
    0xba, 0x01, 0x00, 0x00, 0x00, // 03b: mov edx, 0x1
    0x0f, 0x30, // 040: wrmsr
    0x49, 0xff, 0xc2, // 042: inc r10
    // s0wait:
    0xfa, // 045: cli
    0x4c, 0x39, 0x14, 0x25, 0x10, 0x60, 0x00, 0x00, // 046: cmp qword [0x6010], r10
    0x73, 0x04, // 04e: jae s0got
    0xfb, // 050: sti
    0xf4, // 051: hlt
    0xeb, 0xf1, // 052: jmp s0wait
    // s0got:
    0x4d, 0x39, 0xc2, // 054: cmp r10, r8
    0x72, 0xd8, // 057: jb s0loop
    0x0f, 0x31, // 059: rdtsc
    0x48, 0xc1, 0xe2, 0x20, // 05b: shl rdx, 0x20
    0x48, 0x09, 0xd0, // 05f: or rax, rdx
    0x48, 0x89, 0x04, 0x25, 0x28, 0x60, 0x00, 0x00, // 062: mov qword [0x6028], rax
    0xe6, 0x80, // 06a: out 0x80, al
    0xf4, // 06c: hlt
];

/// vCPU 1: x2APIC on, READY = 1, halt (cli; check; sti; hlt) until it took N IPIs, OUT 0x81.
#[rustfmt::skip]
const HALTER: &[u8] = &[
    0xe8, 0xbb, 0x01, 0x00, 0x00, // 080: call pro
    0xc7, 0x04, 0x25, 0x00, 0x60, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // 085: mov dword [0x6000], 0x1
    0x4c, 0x8b, 0x04, 0x25, 0x08, 0x60, 0x00, 0x00, // 090: mov r8, qword [0x6008]
    // s1wait:
    0xfa, // 098: cli
    0x4c, 0x39, 0x04, 0x25, 0x18, 0x60, 0x00, 0x00, // 099: cmp qword [0x6018], r8
    0x73, 0x04, // 0a1: jae s1done
    0xfb, // 0a3: sti
    0xf4, // 0a4: hlt
    0xeb, 0xf1, // 0a5: jmp s1wait
    // s1done:
    0xe6, 0x81, // 0a7: out 0x81, al
    0xf4, // 0a9: hlt
];

/// Vector 0x40 on vCPU 0: count the reply, EOI.
#[rustfmt::skip]
const REPLY_HANDLER: &[u8] = &[
    0x50, // 0c0: push rax
    0x51, // 0c1: push rcx
    0x52, // 0c2: push rdx
    0x48, 0xff, 0x04, 0x25, 0x10, 0x60, 0x00, 0x00, // 0c3: inc qword [0x6010]
    0xe8, 0x90, 0x01, 0x00, 0x00, // 0cb: call eoi
    0x5a, // 0d0: pop rdx
    0x59, // 0d1: pop rcx
    0x58, // 0d2: pop rax
    0x48, 0xcf, // 0d3: iretq
];

/// Vector 0x41 on vCPU 1: count, EOI, ICR <- vector 0x40 to APIC ID 0.
#[rustfmt::skip]
const IPI_HANDLER: &[u8] = &[
    0x50, // 100: push rax
    0x51, // 101: push rcx
    0x52, // 102: push rdx
    0x48, 0xff, 0x04, 0x25, 0x18, 0x60, 0x00, 0x00, // 103: inc qword [0x6018]
    0xe8, 0x50, 0x01, 0x00, 0x00, // 10b: call eoi
    0xb9, 0x30, 0x08, 0x00, 0x00, // 110: mov ecx, 0x830
    0xb8, 0x40, 0x00, 0x00, 0x00, // 115: mov eax, 0x40
    0x31, 0xd2, // 11a: xor edx, edx
    0x0f, 0x30, // 11c: wrmsr
    0x5a, // 11e: pop rdx
    0x59, // 11f: pop rcx
    0x58, // 120: pop rax
    0x48, 0xcf, // 121: iretq
];

/// Vector 0x42: the TSC into the current shot's sample (RBX, the main loop's pointer), count,
/// EOI.
#[rustfmt::skip]
const TIMER_HANDLER: &[u8] = &[
    0x50, // 140: push rax
    0x51, // 141: push rcx
    0x52, // 142: push rdx
    0x0f, 0x31, // 143: rdtsc
    0x48, 0xc1, 0xe2, 0x20, // 145: shl rdx, 0x20
    0x48, 0x09, 0xd0, // 149: or rax, rdx
    0x48, 0x89, 0x43, 0x08, // 14c: mov qword [rbx+0x8], rax
    0x48, 0xff, 0x04, 0x25, 0x50, 0x60, 0x00, 0x00, // 150: inc qword [0x6050]
    0xe8, 0x03, 0x01, 0x00, 0x00, // 158: call eoi
    0x5a, // 15d: pop rdx
    0x59, // 15e: pop rcx
    0x58, // 15f: pop rax
    0x48, 0xcf, // 160: iretq
];

/// The timer guest: x2APIC on, LVTT and TDCR (divide by 1), then N shots: TSC into the
/// sample, arm (IA32_TSC_DEADLINE = TSC + DELAY, or TMICT = DELAY), wait (cli; check; TSC of
/// the last HLT into the sample; sti; hlt) until the handler counted the shot; OUT 0x80.
#[rustfmt::skip]
const TIMER_GUEST: &[u8] = &[
    0xe8, 0xbb, 0x00, 0x00, 0x00, // 180: call pro
    0xb9, 0x32, 0x08, 0x00, 0x00, // 185: mov ecx, 0x832
    0x8b, 0x04, 0x25, 0x48, 0x60, 0x00, 0x00, // 18a: mov eax, dword [0x6048]
    0x31, 0xd2, // 191: xor edx, edx
    0x0f, 0x30, // 193: wrmsr
    0xb9, 0x3e, 0x08, 0x00, 0x00, // 195: mov ecx, 0x83e
    0xb8, 0x0b, 0x00, 0x00, 0x00, // 19a: mov eax, 0xb
    0x0f, 0x30, // 19f: wrmsr
    0x4c, 0x8b, 0x04, 0x25, 0x08, 0x60, 0x00, 0x00, // 1a1: mov r8, qword [0x6008]
    0x4c, 0x8b, 0x0c, 0x25, 0x40, 0x60, 0x00, 0x00, // 1a9: mov r9, qword [0x6040]
    0x45, 0x31, 0xd2, // 1b1: xor r10d, r10d
    0xbb, 0x00, 0x00, 0x10, 0x00, // 1b4: mov ebx, 0x100000
    // tshot:
    0x0f, 0x31, // 1b9: rdtsc
    0x48, 0xc1, 0xe2, 0x20, // 1bb: shl rdx, 0x20
    0x48, 0x09, 0xd0, // 1bf: or rax, rdx
    0x48, 0x89, 0x03, // 1c2: mov qword [rbx], rax
    0x83, 0x3c, 0x25, 0x58, 0x60, 0x00, 0x00, 0x00, // 1c5: cmp dword [0x6058], 0x0
    0x75, 0x13, // 1cd: jne tmict
    0x4c, 0x01, 0xc8, // 1cf: add rax, r9
    0x48, 0x89, 0xc2, // 1d2: mov rdx, rax
    0x48, 0xc1, 0xea, 0x20, // 1d5: shr rdx, 0x20
    0xb9, 0xe0, 0x06, 0x00, 0x00, // 1d9: mov ecx, 0x6e0
    0x0f, 0x30, // 1de: wrmsr
    0xeb, 0x0c, // 1e0: jmp armed
    // tmict:
    0x44, 0x89, 0xc8, // 1e2: mov eax, r9d
    0x31, 0xd2, // 1e5: xor edx, edx
    0xb9, 0x38, 0x08, 0x00, 0x00, // 1e7: mov ecx, 0x838
    0x0f, 0x30, // 1ec: wrmsr
    // armed:
    0x49, 0xff, 0xc2, // 1ee: inc r10
    // twait:
    0xfa, // 1f1: cli
    0x4c, 0x39, 0x14, 0x25, 0x50, 0x60, 0x00, 0x00, // 1f2: cmp qword [0x6050], r10
    0x73, 0x11, // 1fa: jae tfired
    0x0f, 0x31, // 1fc: rdtsc
    0x48, 0xc1, 0xe2, 0x20, // 1fe: shl rdx, 0x20
    0x48, 0x09, 0xd0, // 202: or rax, rdx
    0x48, 0x89, 0x43, 0x10, // 205: mov qword [rbx+0x10], rax
    0xfb, // 209: sti
    0xf4, // 20a: hlt
    0xeb, 0xe4, // 20b: jmp twait
    // tfired:
    0x48, 0x83, 0xc3, 0x20, // 20d: add rbx, 0x20
    0x4d, 0x39, 0xc2, // 211: cmp r10, r8
    0x72, 0xa3, // 214: jb tshot
    0xe6, 0x80, // 216: out 0x80, al
    0xf4, // 218: hlt
];

/// IA32_APIC_BASE |= EN | EXTD (x2APIC on); SVR = 0x1ff (software-enabled, spurious 0xff).
#[rustfmt::skip]
const X2APIC_ON: &[u8] = &[
    0xb9, 0x1b, 0x00, 0x00, 0x00, // 240: mov ecx, 0x1b
    0x0f, 0x32, // 245: rdmsr
    0x0d, 0x00, 0x0c, 0x00, 0x00, // 247: or eax, 0xc00
    0x0f, 0x30, // 24c: wrmsr
    0xb9, 0x0f, 0x08, 0x00, 0x00, // 24e: mov ecx, 0x80f
    0xb8, 0xff, 0x01, 0x00, 0x00, // 253: mov eax, 0x1ff
    0x31, 0xd2, // 258: xor edx, edx
    0x0f, 0x30, // 25a: wrmsr
    0xc3, // 25c: ret
];

/// x2APIC EOI.
#[rustfmt::skip]
const EOI: &[u8] = &[
    0xb9, 0x0b, 0x08, 0x00, 0x00, // 260: mov ecx, 0x80b
    0x31, 0xc0, // 265: xor eax, eax
    0x31, 0xd2, // 267: xor edx, edx
    0x0f, 0x30, // 269: wrmsr
    0xc3, // 26b: ret
];

/// The code image: every routine at the offset it was assembled for.
fn code_image() -> Vec<u8> {
    let parts: [(usize, &[u8]); 8] = [
        (AT_SENDER, SENDER),
        (AT_HALTER, HALTER),
        (AT_REPLY_HANDLER, REPLY_HANDLER),
        (AT_IPI_HANDLER, IPI_HANDLER),
        (AT_TIMER_HANDLER, TIMER_HANDLER),
        (AT_TIMER_GUEST, TIMER_GUEST),
        (AT_X2APIC_ON, X2APIC_ON),
        (AT_EOI, EOI),
    ];
    let mut img = vec![0xf4u8; 0x280]; // HLT between the routines
    for (at, bytes) in parts {
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }
    img
}

/// A VM with the in-kernel irqchip, the guest image and `vcpus` vCPUs in 64-bit mode, vCPU
/// `i` at `entries[i]`, runnable; and whether the timer can use TSC-deadline.
struct Bench {
    g: Guest,
    vcpus: Vec<VcpuFd>,
    tsc_deadline: bool,
}

fn new_vm(entries: &[usize]) -> Result<Bench, String> {
    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let g = Guest::new(&[0xf4], RAM)?;
    g.vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000: the first 2 MiB, one large page.
    g.ram.write(0x1000, &(0x2000u64 | 3).to_le_bytes());
    g.ram.write(0x2000, &(0x3000u64 | 3).to_le_bytes());
    g.ram.write(0x3000, &0x83u64.to_le_bytes());
    // GDT: null, 64-bit code 0x08, data 0x10 (IRETQ reloads CS and SS from it).
    g.ram.write(0x500, &0u64.to_le_bytes());
    g.ram.write(0x508, &0x0020_9a00_0000_0000u64.to_le_bytes());
    g.ram.write(0x510, &0x0000_9200_0000_0000u64.to_le_bytes());
    // IDT: 64-bit interrupt gates for the three vectors.
    for (vec, at) in [
        (V_REPLY, AT_REPLY_HANDLER),
        (V_IPI, AT_IPI_HANDLER),
        (V_TIMER, AT_TIMER_HANDLER),
    ] {
        let h = (CODE + at) as u64;
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(h as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&8u16.to_le_bytes());
        gate[5] = 0x8e;
        gate[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((h >> 32) as u32).to_le_bytes());
        g.ram.write(0x7000 + vec as usize * 16, &gate);
    }
    g.ram.write(CODE, &code_image());
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    // TSC-deadline is not in KVM_GET_SUPPORTED_CPUID; its capability says the LAPIC has it.
    let tsc_deadline = kvm.check_extension_raw(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    let mut x2apic = false;
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            x2apic = e.ecx & (1 << 21) != 0;
            if tsc_deadline {
                e.ecx |= 1 << 24;
            }
        }
    }
    if !x2apic {
        return Err("no X2APIC in KVM_GET_SUPPORTED_CPUID (the guests use the x2APIC)".into());
    }
    let mut vcpus = Vec::new();
    for (id, &entry) in entries.iter().enumerate() {
        let v = g.vcpu(id as u64)?;
        v.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let cs = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 8,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let ds = kvm_segment {
            selector: 0x10,
            type_: 3,
            db: 1,
            l: 0,
            ..cs
        };
        sr.cs = cs;
        sr.ds = ds;
        sr.es = ds;
        sr.ss = ds;
        sr.gdt.base = 0x500;
        sr.gdt.limit = 0x17;
        sr.idt.base = 0x7000;
        sr.idt.limit = 0xfff;
        sr.cr3 = 0x1000;
        sr.cr4 = 0x20 | 0x200 | 0x400; // PAE, OSFXSR, OSXMMEXCPT
        sr.cr0 = 0x8000_0033; // PG, NE, ET, MP, PE
        sr.efer = 0x500; // LME, LMA
        v.set_sregs(&sr)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        r.rip = (CODE + entry) as u64;
        r.rflags = 2;
        r.rsp = 0x8_0000 - 0x1_0000 * id as u64;
        v.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        // An AP with an in-kernel LAPIC waits for INIT/SIPI: make it runnable.
        v.set_mp_state(kvm_bindings::kvm_mp_state { mp_state: 0 })
            .map_err(|e| format!("KVM_SET_MP_STATE: {e}"))?;
        vcpus.push(v);
    }
    Ok(Bench {
        g,
        vcpus,
        tsc_deadline,
    })
}

fn ram_u64(g: &Guest, off: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = g.ram.read(off + i);
    }
    u64::from_le_bytes(b)
}

/// A vCPU's binary stats fd, opened before its thread runs: reading it then takes no vCPU
/// lock (`KVM_GET_STATS_FD` itself waits for the vCPU mutex, held during `KVM_RUN`).
pub(crate) struct Stats(OwnedFd);

impl Stats {
    pub(crate) fn open(v: &VcpuFd) -> Option<Stats> {
        let fd = crate::ioctl(v.as_raw_fd(), KVM_GET_STATS_FD, 0).ok()?;
        // SAFETY: a fresh stats fd, owned from now on.
        Some(Stats(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// The counter `name` (any descriptor size: upstream's file has histograms too).
    pub(crate) fn get(&self, name: &str) -> Option<u64> {
        let read = |off: usize, len: usize| -> Option<Vec<u8>> {
            let mut b = vec![0u8; len];
            // SAFETY: `b` is a writable buffer of `len` bytes.
            let n =
                unsafe { libc::pread(self.0.as_raw_fd(), b.as_mut_ptr().cast(), len, off as i64) };
            (n >= 0 && n as usize == len).then_some(b)
        };
        let u32_at = |b: &[u8], o: usize| -> Option<usize> {
            Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize)
        };
        let h = read(0, 24)?;
        let (name_size, num) = (u32_at(&h, 4)?, u32_at(&h, 8)?);
        let (desc_off, data_off) = (u32_at(&h, 16)?, u32_at(&h, 20)?);
        let dsize = 16 + name_size;
        let descs = read(desc_off, dsize * num)?;
        for d in descs.chunks_exact(dsize) {
            let n = &d[16..];
            let n = &n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())];
            if n == name.as_bytes() {
                let off = u32_at(d, 8)?;
                let v = read(data_off + off, 8)?;
                return Some(u64::from_le_bytes(v.try_into().ok()?));
            }
        }
        None
    }
}

/// The counters reported per round trip; the first two both kernels have, the others only
/// upstream (halt polling).
const STATS: [&str; 4] = ["exits", "halt_exits", "halt_wakeup", "halt_successful_poll"];

fn snapshot(s: &Option<Stats>) -> [Option<u64>; 4] {
    STATS.map(|n| s.as_ref().and_then(|s| s.get(n)))
}

/// Both vCPUs' counters in [`STATS`] order.
type Snap = [[Option<u64>; 4]; 2];
/// vCPU 0's clock over the round trips with the counters before and after (None for
/// vCPU 1), and the thread's CPU time over them (vCPU 1: over its whole run).
type Timed = (Option<(Duration, Snap, Snap)>, Duration);
/// A vCPU thread's work.
type Job<'a, R> = Box<dyn FnOnce() -> Result<R, String> + Send + 'a>;

extern "C" fn on_signal(_: libc::c_int) {}

/// Runs each job on its own thread; a job not done after [`WATCHDOG`] gets SIGUSR1 every
/// 50 ms (its `KVM_RUN` then ends with `EINTR` and the job fails) until it returns.
fn on_threads<'a, R: Send>(jobs: Vec<Job<'a, R>>) -> Result<Vec<R>, String> {
    // SAFETY: a handler that does nothing, no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let n = jobs.len();
    let tids: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let done: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let (tid, done) = (&tids[i], &done[i]);
                s.spawn(move || {
                    // SAFETY: no preconditions.
                    tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                    let r = job();
                    done.store(true, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let t0 = Instant::now();
        let mut timed_out = false;
        while !done.iter().all(|d| d.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(50));
            if t0.elapsed() > WATCHDOG {
                timed_out = true;
                for (t, d) in tids.iter().zip(&done) {
                    let t = t.load(Ordering::SeqCst);
                    if t != 0 && !d.load(Ordering::SeqCst) {
                        // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
                        unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
                    }
                }
            }
        }
        let mut out = Vec::new();
        for h in hs {
            out.push(
                h.join()
                    .map_err(|_| "a vCPU thread panicked".to_string())??,
            );
        }
        if timed_out {
            return Err(format!("not done after {WATCHDOG:?}"));
        }
        Ok(out)
    })
}

/// The calling thread's CPU time (user + system: time in `KVM_RUN` counts, time asleep in
/// the halt wait does not), to tell a vCPU that sleeps while halted from one that spins.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One KVM_RUN that must end in OUT to `port`.
fn run_to_out(v: &mut VcpuFd, port: u16, what: &str) -> Result<(), String> {
    match v.run() {
        Ok(VcpuExit::IoOut(p, _)) if p == port => Ok(()),
        Ok(e) => Err(format!("{what}: {e:?} instead of OUT to {port:#x}")),
        Err(e) => Err(format!("{what}: KVM_RUN: {e}")),
    }
}

/// One IPI run's result.
struct IpiRun {
    /// Host wall clock per round trip, between vCPU 0's two OUT exits.
    ns: f64,
    /// Guest TSC per round trip, in ns.
    guest_ns: f64,
    /// Counter deltas per round trip, vCPU 0 and vCPU 1, in [`STATS`] order.
    per_trip: [[Option<f64>; 4]; 2],
    /// CPU time of the vCPU threads per round trip, ns (vCPU 1's over its whole run).
    cpu_ns: [f64; 2],
}

fn ipi_once(trips: u64) -> Result<IpiRun, String> {
    let b = new_vm(&[AT_SENDER, AT_HALTER])?;
    b.g.ram.write(COUNT, &trips.to_le_bytes());
    b.g.ram.write(READY, &0u32.to_le_bytes());
    let mut vs = b.vcpus;
    let khz = vs[0]
        .get_tsc_khz()
        .map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
    let stats = [Stats::open(&vs[0]), Stats::open(&vs[1])];
    let (v0, rest) = vs.split_at_mut(1);
    let (v0, v1) = (&mut v0[0], &mut rest[0]);
    let st = &stats;
    let jobs: Vec<Job<'_, Timed>> = vec![
        Box::new(move || {
            run_to_out(v0, 0x80, "vCPU 0 (start)")?;
            let s0 = [snapshot(&st[0]), snapshot(&st[1])];
            let (t0, c0) = (Instant::now(), thread_cpu());
            run_to_out(v0, 0x80, "vCPU 0 (after the round trips)")?;
            let (dt, cpu) = (t0.elapsed(), thread_cpu() - c0);
            let s1 = [snapshot(&st[0]), snapshot(&st[1])];
            Ok((Some((dt, s0, s1)), cpu))
        }),
        Box::new(move || {
            let c0 = thread_cpu();
            run_to_out(v1, 0x81, "vCPU 1")?;
            Ok((None, thread_cpu() - c0))
        }),
    ];
    let r = on_threads(jobs);
    let (replies, ipis) = (ram_u64(&b.g, REPLIES), ram_u64(&b.g, IPIS));
    let r = r.map_err(|e| format!("{e} ({ipis} IPIs and {replies} replies taken of {trips})"))?;
    if replies != trips || ipis != trips {
        return Err(format!(
            "the guest counted {ipis} IPIs at vCPU 1 and {replies} replies at vCPU 0 for {trips} round trips"
        ));
    }
    let [(Some((dt, s0, s1)), cpu0), (None, cpu1)] = r[..] else {
        return Err("no timing from vCPU 0".into());
    };
    let tsc = ram_u64(&b.g, TSC_END).wrapping_sub(ram_u64(&b.g, TSC_START));
    let mut per_trip = [[None; 4]; 2];
    for c in 0..2 {
        for k in 0..4 {
            if let (Some(a), Some(z)) = (s0[c][k], s1[c][k]) {
                per_trip[c][k] = Some(z.wrapping_sub(a) as f64 / trips as f64);
            }
        }
    }
    Ok(IpiRun {
        ns: dt.as_nanos() as f64 / trips as f64,
        guest_ns: tsc as f64 * 1e6 / f64::from(khz) / trips as f64,
        per_trip,
        cpu_ns: [cpu0, cpu1].map(|c| c.as_nanos() as f64 / trips as f64),
    })
}

/// `--bench-ipi [N] [RUNS]`. False if it could not measure.
pub(crate) fn ipi(trips: Option<u64>, runs: Option<usize>) -> bool {
    let trips = trips.unwrap_or(IPI_TRIPS).max(1);
    let runs = runs.unwrap_or(IPI_RUNS).max(1);
    let what = "IPI round trip, 2 vCPUs (x2APIC ICR, fixed; receiver in HLT)";
    let mut all = Vec::new();
    for _ in 0..runs {
        match ipi_once(trips) {
            Ok(r) => all.push(r),
            Err(e) => {
                println!("bench-run: {what}: FAILED: {e}");
                return false;
            }
        }
    }
    all.sort_by(|a, b| a.ns.total_cmp(&b.ns));
    let m = &all[runs / 2];
    let mut note = format!(
        "median of {runs} runs of {trips}; guest TSC {:.0} ns; vCPU threads' CPU time per round trip {:.0} ns and {:.0} ns",
        m.guest_ns, m.cpu_ns[0], m.cpu_ns[1]
    );
    for (c, who) in [(0, "vCPU 0"), (1, "vCPU 1")] {
        let parts: Vec<String> = STATS
            .iter()
            .zip(m.per_trip[c])
            .filter_map(|(n, x)| x.map(|x| format!("{n} {x:.2}")))
            .collect();
        if !parts.is_empty() {
            note += &format!("; per round trip, {who}: {}", parts.join(", "));
        }
    }
    println!("bench-run: {what}: {:.0} ns ({note})", m.ns);
    true
}

/// `--bench-timer [N] [DELAY_US] [tmict]`; `tmict` arms TMICT even where TSC-deadline is
/// there (to exercise that path on kernels that have both). False if it could not measure.
pub(crate) fn timer(shots: Option<u64>, delay_us: Option<u64>, force_tmict: bool) -> bool {
    let shots = shots.unwrap_or(TIMER_SHOTS).clamp(1, MAX_SHOTS);
    let delay_us = delay_us.unwrap_or(TIMER_DELAY_US).max(1);
    let r = timer_once(shots, delay_us, force_tmict);
    let what = |mode: &str| format!("LAPIC timer latency ({mode}, handler TSC - deadline)");
    match r {
        Ok((mode, line)) => {
            println!("bench-run: {}: {line}", what(mode));
            true
        }
        Err((mode, e)) => {
            println!("bench-run: {}: FAILED: {e}", what(mode));
            false
        }
    }
}

type TimerResult = Result<(&'static str, String), (&'static str, String)>;

fn timer_once(shots: u64, delay_us: u64, force_tmict: bool) -> TimerResult {
    let b = new_vm(&[AT_TIMER_GUEST]).map_err(|e| ("x2APIC", e))?;
    let deadline = b.tsc_deadline && !force_tmict;
    let mode = if deadline {
        "x2APIC TSC-deadline"
    } else {
        "x2APIC one-shot TMICT"
    };
    let fail = |e: String| (mode, e);
    let mut vs = b.vcpus;
    let v = &mut vs[0];
    let khz = v
        .get_tsc_khz()
        .map_err(|e| fail(format!("KVM_GET_TSC_KHZ: {e}")))?;
    // The deadline in TSC ticks after the guest's TSC read; TMICT counts 1 ns bus cycles
    // (KVM's default APIC bus, divide by 1).
    let delta_tsc = delay_us * u64::from(khz) / 1000;
    let g = &b.g;
    g.ram.write(COUNT, &shots.to_le_bytes());
    if deadline {
        g.ram.write(DELAY, &delta_tsc.to_le_bytes());
        g.ram.write(LVTT, &LVTT_DEADLINE.to_le_bytes());
        g.ram.write(USE_TMICT, &0u32.to_le_bytes());
    } else {
        g.ram.write(DELAY, &(delay_us * 1000).to_le_bytes());
        g.ram.write(LVTT, &LVTT_ONESHOT.to_le_bytes());
        g.ram.write(USE_TMICT, &1u32.to_le_bytes());
    }
    let jobs: Vec<Job<'_, (Duration, Duration)>> = vec![Box::new(move || {
        let (t0, c0) = (Instant::now(), thread_cpu());
        run_to_out(v, 0x80, "timer vCPU")?;
        Ok((t0.elapsed(), thread_cpu() - c0))
    })];
    let r = on_threads(jobs);
    let fired = ram_u64(g, SHOTS);
    let r = r.map_err(|e| fail(format!("{e} ({fired} of {shots} expiries taken)")))?;
    let busy = r
        .first()
        .map(|(wall, cpu)| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9))
        .unwrap_or(0.0);
    if fired != shots {
        return Err(fail(format!(
            "the guest counted {fired} timer interrupts for {shots} shots"
        )));
    }
    let mut lat = Vec::new();
    let (mut early, mut late_arm) = (0, 0);
    for i in 0..shots as usize {
        let s = SAMPLES + 32 * i;
        let (arm, handler, halt) = (ram_u64(g, s), ram_u64(g, s + 8), ram_u64(g, s + 16));
        let deadline = arm.wrapping_add(delta_tsc);
        let d = handler.wrapping_sub(deadline) as i64;
        if d < 0 {
            early += 1;
        }
        if halt.wrapping_sub(deadline) as i64 > 0 {
            late_arm += 1;
        }
        lat.push(d as f64 * 1e6 / f64::from(khz));
    }
    lat.sort_by(f64::total_cmp);
    let pick = |q: usize| lat[(lat.len() - 1) * q / 100];
    Ok((
        mode,
        format!(
            "{:.0} ns (median of {shots} shots, {shots} expiries counted; p10 {:.0} ns, p90 {:.0} ns; delay {delay_us} us; {early} fired before the deadline; {late_arm} deadlines passed before the guest halted; vCPU thread on CPU {busy:.0}% of the run; TSC {khz} kHz)",
            pick(50),
            pick(10),
            pick(90)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routines sit at their assembled offsets without overlapping, and every CALL
    /// (E8 rel32, always the first byte of its instruction here) lands on a subroutine.
    #[test]
    fn code_image_layout() {
        let mut parts = [
            (AT_SENDER, SENDER),
            (AT_HALTER, HALTER),
            (AT_REPLY_HANDLER, REPLY_HANDLER),
            (AT_IPI_HANDLER, IPI_HANDLER),
            (AT_TIMER_HANDLER, TIMER_HANDLER),
            (AT_TIMER_GUEST, TIMER_GUEST),
            (AT_X2APIC_ON, X2APIC_ON),
            (AT_EOI, EOI),
        ];
        parts.sort_by_key(|p| p.0);
        for w in parts.windows(2) {
            assert!(w[0].0 + w[0].1.len() <= w[1].0, "overlap at {:#x}", w[1].0);
        }
        let img = code_image();
        let calls = [
            (AT_SENDER, AT_X2APIC_ON),
            (AT_HALTER, AT_X2APIC_ON),
            (AT_TIMER_GUEST, AT_X2APIC_ON),
            (AT_REPLY_HANDLER + 0xb, AT_EOI),
            (AT_IPI_HANDLER + 0xb, AT_EOI),
            (AT_TIMER_HANDLER + 0x18, AT_EOI),
        ];
        for (at, to) in calls {
            assert_eq!(img[at], 0xe8, "CALL at {at:#x}");
            let rel = i32::from_le_bytes(img[at + 1..at + 5].try_into().unwrap());
            assert_eq!(
                (at as i64 + 5 + i64::from(rel)) as usize,
                to,
                "CALL at {at:#x}"
            );
        }
        assert!(CODE + img.len() <= 0x2_0000 && SAMPLES + 32 * MAX_SHOTS as usize <= RAM);
    }
}
