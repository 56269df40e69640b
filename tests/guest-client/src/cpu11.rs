// SPDX-License-Identifier: GPL-2.0-only
//! Issue 11's leftovers (`cpu11`), with upstream 6.12's answers:
//! - MONITOR/MWAIT run as NOPs unless `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` is disabled and the
//!   guest's CPUID lacks MONITOR (then #UD); with `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` disabled
//!   CPUID.1:ECX.MONITOR follows `MSR_IA32_MISC_ENABLE.MWAIT` (host and guest writes), and a
//!   change of that bit needs SSE3 in the guest's CPUID;
//! - the single-step trap after instructions the module completes itself (CR4 reads and
//!   writes, IN/OUT served by the in-kernel PIC): `KVM_EXIT_DEBUG` with DR6.BS for the
//!   debugger's single-step, #DB for the guest's own TF.
//!
//! The guests are real-mode code in the ROM at 0xffff0000 (`Guest`); their exception handlers
//! (IVT) do `mov al, vector; out 0x99, al; hlt`.

use crate::run::Guest;
use crate::*;
use kvm_bindings::{kvm_enable_cap, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
const QUIRK_LINT0_REENABLED: u64 = 1 << 0;
const QUIRK_MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
const QUIRK_FIX_HYPERCALL_INSN: u64 = 1 << 5;
const QUIRK_MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_MWAIT: u64 = 1 << 18;
/// CPUID.1:ECX bits.
const ECX_SSE3: u32 = 1 << 0;
const ECX_MONITOR: u32 = 1 << 3;

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("cpu11_quirks2_offers_the_mwait_quirks", Any, |_| quirks2()),
        ("cpu11_run_monitor_mwait_nop_or_ud", Any, |_| {
            crate::run::with_svm(monitor_mwait)
        }),
        ("cpu11_run_misc_enable_mwait_drives_cpuid", Any, |_| {
            crate::run::with_svm(misc_enable)
        }),
        ("cpu11_run_step_over_cr4_read_and_write", Any, |_| {
            crate::run::with_svm(step_cr4)
        }),
        ("cpu11_run_guest_tf_over_cr4_write", Any, |_| {
            crate::run::with_svm(guest_tf_cr4)
        }),
        ("cpu11_run_step_over_in_kernel_pio", Any, |_| {
            crate::run::with_svm(step_kernel_pio)
        }),
    ]
}

fn enable_cap(vm: &VmFd, cap: u32, arg: u64) -> Result<(), i32> {
    let mut c = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg;
    vm.enable_cap(&c).map_err(|e| e.errno())
}

fn disable_quirks(vm: &VmFd, q: u64) -> Result<(), String> {
    eq(
        enable_cap(vm, KVM_CAP_DISABLE_QUIRKS2, q),
        Ok(()),
        &format!("DISABLE_QUIRKS2 {q:#x}"),
    )
}

fn quirks2() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        ioctl(kvm.as_raw_fd(), 0xae03, u64::from(KVM_CAP_DISABLE_QUIRKS2)),
        Ok(
            (QUIRK_FIX_HYPERCALL_INSN | QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT)
                as i64,
        ),
        "KVM_CAP_DISABLE_QUIRKS2: the quirks both of whose behaviours exist",
    )?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    eq(
        enable_cap(&vm, KVM_CAP_DISABLE_QUIRKS2, QUIRK_LINT0_REENABLED),
        Err(libc::EINVAL),
        "a quirk not offered",
    )?;
    disable_quirks(
        &vm,
        QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT,
    )
}

fn step(v: &mut VcpuFd, n: u32) -> Result<VcpuExit<'_>, String> {
    v.run().map_err(|e| format!("run {n}: {e}"))
}

fn expect_hlt(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::Hlt => Ok(()),
        e => Err(format!("run {n}: {e:?}, want HLT")),
    }
}

/// IVT[vector] -> 0000:at: `mov al, vector; out 0x99, al; hlt`.
fn install_handler(g: &Guest, vector: usize, at: u16) {
    g.ram.write(vector * 4, &[at as u8, (at >> 8) as u8, 0, 0]);
    g.ram
        .write(at as usize, &[0xb0, vector as u8, 0xe6, 0x99, 0xf4]);
}

/// Runs until the guest's exception handler reports `vector`; returns the IP it pushed.
fn expect_exception(g: &Guest, v: &mut VcpuFd, n: u32, vector: u8) -> Result<u16, String> {
    match step(v, n)? {
        VcpuExit::IoOut(0x99, d) => eq(d, &[vector][..], "the guest's handler ran")?,
        e => return Err(format!("run {n}: {e:?}, want the guest's vector {vector}")),
    }
    // SP was 0x7000: FLAGS, CS, IP pushed below it.
    Ok(u16::from_le_bytes([g.ram.read(0x6ffa), g.ram.read(0x6ffb)]))
}

/// The supported CPUID with leaf 1's ECX bits `set` set and `clear` cleared.
fn cpuid_leaf1(set: u32, clear: u32) -> Result<CpuId, String> {
    let mut c = Kvm::new()
        .map_err(|e| format!("open: {e}"))?
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let e = c
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == 1)
        .ok_or("no leaf 1")?;
    e.ecx = (e.ecx | set) & !clear;
    Ok(c)
}

/// The vCPU's CPUID.1:ECX (`KVM_GET_CPUID2`).
fn leaf1_ecx(v: &VcpuFd) -> Result<u32, String> {
    let c = v
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_CPUID2: {e}"))?;
    c.as_slice()
        .iter()
        .find(|e| e.function == 1)
        .map(|e| e.ecx)
        .ok_or_else(|| "no leaf 1".into())
}

/// `KVM_SET_MSRS` of MISC_ENABLE: the number of entries written (0 or 1).
fn set_misc_enable(v: &VcpuFd, data: u64) -> Result<usize, String> {
    let m = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    v.set_msrs(&m).map_err(|e| format!("KVM_SET_MSRS: {e}"))
}

/// mov sp, 0x7000; mov eax, 0x100; xor ecx, ecx; xor edx, edx; monitor (IP 15);
/// mwait (IP 18); mov byte [0x200], 1; hlt (IP 26).
const MWAIT_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x66, 0xb8, 0x00, 0x01, 0x00, 0x00, // mov eax, 0x100 (DS:EAX is RAM)
    0x66, 0x31, 0xc9, // xor ecx, ecx
    0x66, 0x31, 0xd2, // xor edx, edx
    0x0f, 0x01, 0xc8, // monitor
    0x0f, 0x01, 0xc9, // mwait
    0xc6, 0x06, 0x00, 0x02, 0x01, // mov byte [0x200], 1
    0xf4, // hlt
];

/// How a MONITOR/MWAIT guest should end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Nop,
    Ud,
}

/// Runs [`MWAIT_GUEST`] on a fresh VM after `setup` and checks the outcome.
fn run_mwait(
    what: &str,
    quirks: u64,
    cpuid: Option<CpuId>,
    misc: Option<u64>,
    want: Want,
) -> Result<(), String> {
    let g = Guest::new(MWAIT_GUEST, 0x8000)?;
    install_handler(&g, 6, 0x600);
    if quirks != 0 {
        disable_quirks(&g.vm, quirks)?;
    }
    let mut v = g.vcpu(0)?;
    if let Some(c) = cpuid {
        v.set_cpuid2(&c)
            .map_err(|e| format!("{what}: KVM_SET_CPUID2: {e}"))?;
    }
    if let Some(m) = misc {
        eq(
            set_misc_enable(&v, m)?,
            1,
            &format!("{what}: MISC_ENABLE set"),
        )?;
    }
    match want {
        Want::Nop => {
            expect_hlt(&mut v, 1).map_err(|e| format!("{what}: {e}"))?;
            eq(g.ram.read(0x200), 1, &format!("{what}: ran past MWAIT"))?;
            let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
            eq(r.rip, 27, &format!("{what}: RIP past HLT"))
        }
        Want::Ud => {
            let ip = expect_exception(&g, &mut v, 1, 6).map_err(|e| format!("{what}: {e}"))?;
            eq(ip, 15, &format!("{what}: #UD on MONITOR"))?;
            eq(
                g.ram.read(0x200),
                0,
                &format!("{what}: nothing after it ran"),
            )
        }
    }
}

fn monitor_mwait() -> Result<(), String> {
    let never_ud = QUIRK_MWAIT_NEVER_UD_FAULTS;
    let misc_q = QUIRK_MISC_ENABLE_NO_MWAIT;
    // Default quirks: NOPs, whatever the CPUID says (here: no CPUID table at all).
    run_mwait("default", 0, None, None, Want::Nop)?;
    let no_monitor = || cpuid_leaf1(ECX_SSE3, ECX_MONITOR);
    run_mwait(
        "default, no MONITOR",
        0,
        Some(no_monitor()?),
        None,
        Want::Nop,
    )?;
    // MWAIT_NEVER_UD_FAULTS off: #UD without MONITOR in CPUID, a NOP with it.
    run_mwait("quirk off, no CPUID", never_ud, None, None, Want::Ud)?;
    run_mwait(
        "quirk off, no MONITOR",
        never_ud,
        Some(no_monitor()?),
        None,
        Want::Ud,
    )?;
    run_mwait(
        "quirk off, MONITOR",
        never_ud,
        Some(cpuid_leaf1(ECX_MONITOR, 0)?),
        None,
        Want::Nop,
    )?;
    // Both off: MISC_ENABLE.MWAIT gives the guest MONITOR (as the upstream selftest does it).
    run_mwait(
        "both off, MISC_ENABLE.MWAIT set",
        never_ud | misc_q,
        Some(no_monitor()?),
        Some(MISC_ENABLE_MWAIT),
        Want::Nop,
    )?;
    run_mwait(
        "both off, MISC_ENABLE.MWAIT clear",
        never_ud | misc_q,
        Some(cpuid_leaf1(ECX_MONITOR, 0)?),
        Some(0),
        Want::Ud,
    )?;
    // MISC_ENABLE quirk in force: the MSR does not touch CPUID.
    run_mwait(
        "never-UD off, MISC_ENABLE quirk on",
        never_ud,
        Some(no_monitor()?),
        Some(MISC_ENABLE_MWAIT),
        Want::Ud,
    )
}

/// mov sp, 0x7000; rdmsr MISC_ENABLE; or eax, MWAIT; wrmsr (IP 17); cpuid(1);
/// mov [0x100], ecx; hlt.
const MISC_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x66, 0xb9, 0xa0, 0x01, 0x00, 0x00, // mov ecx, 0x1a0
    0x0f, 0x32, // rdmsr
    0x66, 0x0d, 0x00, 0x00, 0x04, 0x00, // or eax, 1 << 18
    0x0f, 0x30, // wrmsr
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
    0x0f, 0xa2, // cpuid
    0x66, 0x89, 0x0e, 0x00, 0x01, // mov [0x100], ecx
    0xf4, // hlt
];

fn misc_enable() -> Result<(), String> {
    // Host writes.
    for (quirk_off, sse3, ok, monitor) in [
        (false, false, true, false),
        (true, false, false, false),
        (true, true, true, true),
    ] {
        let what = format!("host write, quirk off {quirk_off}, SSE3 {sse3}");
        let g = Guest::new(&[0xf4], 0x8000)?;
        if quirk_off {
            disable_quirks(&g.vm, QUIRK_MISC_ENABLE_NO_MWAIT)?;
        }
        let v = g.vcpu(0)?;
        let c = if sse3 {
            cpuid_leaf1(ECX_SSE3, ECX_MONITOR)?
        } else {
            cpuid_leaf1(0, ECX_SSE3 | ECX_MONITOR)?
        };
        v.set_cpuid2(&c)
            .map_err(|e| format!("{what}: KVM_SET_CPUID2: {e}"))?;
        eq(
            set_misc_enable(&v, MISC_ENABLE_MWAIT)?,
            usize::from(ok),
            &format!("{what}: entries written"),
        )?;
        eq(
            leaf1_ecx(&v)? & ECX_MONITOR != 0,
            monitor,
            &format!("{what}: CPUID.1:ECX.MONITOR"),
        )?;
        if monitor {
            eq(set_misc_enable(&v, 0)?, 1, &format!("{what}: cleared"))?;
            eq(
                leaf1_ecx(&v)? & ECX_MONITOR,
                0,
                &format!("{what}: MONITOR follows"),
            )?;
            // KVM_SET_CPUID2 gets the runtime bit from MISC_ENABLE too.
            v.set_cpuid2(&cpuid_leaf1(ECX_SSE3 | ECX_MONITOR, 0)?)
                .map_err(|e| format!("{what}: KVM_SET_CPUID2 again: {e}"))?;
            eq(
                leaf1_ecx(&v)? & ECX_MONITOR,
                0,
                &format!("{what}: MONITOR from MISC_ENABLE at SET_CPUID2"),
            )?;
        }
    }
    // Guest writes.
    for (quirk_off, sse3) in [(false, true), (true, true), (true, false)] {
        let what = format!("guest write, quirk off {quirk_off}, SSE3 {sse3}");
        let g = Guest::new(MISC_GUEST, 0x8000)?;
        install_handler(&g, 13, 0x600);
        if quirk_off {
            disable_quirks(&g.vm, QUIRK_MISC_ENABLE_NO_MWAIT)?;
        }
        let mut v = g.vcpu(0)?;
        let c = if sse3 {
            cpuid_leaf1(ECX_SSE3, ECX_MONITOR)?
        } else {
            cpuid_leaf1(0, ECX_SSE3 | ECX_MONITOR)?
        };
        v.set_cpuid2(&c)
            .map_err(|e| format!("{what}: KVM_SET_CPUID2: {e}"))?;
        if quirk_off && !sse3 {
            let ip = expect_exception(&g, &mut v, 1, 13).map_err(|e| format!("{what}: {e}"))?;
            eq(ip, 17, &format!("{what}: #GP on WRMSR"))?;
            continue;
        }
        expect_hlt(&mut v, 1).map_err(|e| format!("{what}: {e}"))?;
        let ecx = u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(0x100 + i)));
        eq(
            ecx & ECX_MONITOR != 0,
            quirk_off,
            &format!("{what}: the guest's CPUID.1:ECX.MONITOR"),
        )?;
        eq(
            leaf1_ecx(&v)? & ECX_MONITOR != 0,
            quirk_off,
            &format!("{what}: KVM_GET_CPUID2's"),
        )?;
    }
    Ok(())
}

const GUESTDBG_ENABLE: u32 = 1;
const GUESTDBG_SINGLESTEP: u32 = 2;

fn set_step(v: &VcpuFd, on: bool) -> Result<(), String> {
    let d = kvm_bindings::kvm_guest_debug {
        control: if on {
            GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP
        } else {
            0
        },
        pad: 0,
        arch: Default::default(),
    };
    v.set_guest_debug(&d)
        .map_err(|e| format!("KVM_SET_GUEST_DEBUG: {e}"))
}

/// A single-step exit at linear `pc`; after an instruction the module completed (`module`),
/// DR6 is exactly BS | active-low (upstream `kvm_vcpu_do_singlestep`; a native step's DR6 is
/// the CPU's).
fn expect_step(v: &mut VcpuFd, n: u32, pc: u64, module: bool) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::Debug(d) => {
            eq(d.exception, 1, "debug exception")?;
            eq(d.pc, pc, &format!("run {n}: debug pc"))?;
            if module {
                eq(d.dr6, 0xffff_4ff0, &format!("run {n}: DR6 (BS)"))?;
            }
            Ok(())
        }
        e => Err(format!("run {n}: {e:?}, want a step exit at {pc:#x}")),
    }
}

/// mov eax, cr4 (IP 0); or eax, OSFXSR (3); mov cr4, eax (9); nop (12); hlt (13).
const CR4_GUEST: &[u8] = &[
    0x0f, 0x20, 0xe0, // mov eax, cr4
    0x66, 0x0d, 0x00, 0x02, 0x00, 0x00, // or eax, 0x200
    0x0f, 0x22, 0xe0, // mov cr4, eax
    0x90, // nop
    0xf4, // hlt
];

fn step_cr4() -> Result<(), String> {
    let g = Guest::new(CR4_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    set_step(&v, true)?;
    let base = 0xffff_0000u64;
    // The reset vector's JMP, then each instruction: the CR4 read and write are completed by
    // the module and still end in the step exit, right after them.
    for (n, ip, module) in [
        (1, 0, false),
        (2, 3, true),
        (3, 9, false),
        (4, 12, true),
        (5, 13, false),
    ] {
        expect_step(&mut v, n, base + ip, module)?;
    }
    let s = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    check(s.cr4 & 0x200 != 0, "CR4.OSFXSR written")?;
    expect_hlt(&mut v, 6)?;
    set_step(&v, false)
}

/// The guest sets TF itself, then writes CR4 (IP 15): #DB with the pushed IP past it (18),
/// not past the HLT after it.
const GUEST_TF_CR4: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x0f, 0x20, 0xe0, // mov eax, cr4
    0x9c, // pushf
    0x89, 0xe5, // mov bp, sp
    0x81, 0x4e, 0x00, 0x00, 0x01, // or word [bp], 0x100
    0x9d, // popf
    0x0f, 0x22, 0xe0, // mov cr4, eax (IP 15)
    0xf4, // hlt (IP 18)
];

fn guest_tf_cr4() -> Result<(), String> {
    let g = Guest::new(GUEST_TF_CR4, 0x8000)?;
    install_handler(&g, 1, 0x600);
    let mut v = g.vcpu(0)?;
    // The pushf frame sits at 0x6ffe; the #DB's frame below it.
    let ip = match step(&mut v, 1)? {
        VcpuExit::IoOut(0x99, d) => {
            eq(d, &[1][..], "the guest's #DB handler ran")?;
            u16::from_le_bytes([g.ram.read(0x6ffa), g.ram.read(0x6ffb)])
        }
        e => return Err(format!("run 1: {e:?}, want the #DB handler's OUT")),
    };
    eq(ip, 18, "pushed IP: right after MOV CR4")?;
    let dr = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    check(dr.dr6 & 0x4000 != 0, "DR6.BS")
}

/// in al, 0x21 (IP 0: the in-kernel PIC's mask); out 0x21, al (2); out 0x80, al (4).
const PIC_GUEST: &[u8] = &[
    0xe4, 0x21, // in al, 0x21
    0xe6, 0x21, // out 0x21, al
    0xe6, 0x80, // out 0x80, al (to userspace)
];

fn step_kernel_pio() -> Result<(), String> {
    let g = Guest::new(PIC_GUEST, 0x8000)?;
    g.vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    let mut v = g.vcpu(0)?;
    set_step(&v, true)?;
    let base = 0xffff_0000u64;
    for (n, ip) in [(1, 0), (2, 2), (3, 4)] {
        expect_step(&mut v, n, base + ip, n > 1)?;
    }
    match step(&mut v, 4)? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("run 4: {e:?}, want OUT 0x80")),
    }
    set_step(&v, false)
}
