// SPDX-License-Identifier: GPL-2.0-only
//! Issue 11's leftovers (`cpu11`), with upstream 6.12's answers:
//! - MONITOR/MWAIT run as NOPs unless `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` is disabled and the
//!   guest's CPUID lacks MONITOR (then #UD); with `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` disabled
//!   CPUID.1:ECX.MONITOR follows `MSR_IA32_MISC_ENABLE.MWAIT` (host and guest writes), and a
//!   change of that bit needs SSE3 in the guest's CPUID;
//! - the single-step trap after instructions the module completes itself (CR4 reads and
//!   writes, IN/OUT served by the in-kernel PIC): `KVM_EXIT_DEBUG` with DR6.BS for the
//!   debugger's single-step, #DB for the guest's own TF;
//! - a PAE guest's CR4 write that reloads its PDPTEs fails with #GP when a present PDPTE has
//!   reserved bits (upstream `load_pdptrs`); exceptions injected in real mode carry no error
//!   code (upstream `kvm_inject_exception`);
//! - `KVM_PRE_FAULT_MEMORY` that hits a memory fault (a private GFN on a slot without
//!   guest_memfd) leaves `KVM_EXIT_MEMORY_FAULT` and the page in `kvm_run`, as upstream's
//!   `kvm_mmu_prepare_memory_fault_exit` does, also when pages before it were mapped (0).
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
        ("cpu11_run_pae_cr4_write_checks_pdptes", Any, |_| {
            crate::run::with_svm(pae_pdptes)
        }),
        ("cpu11_run_real_mode_gp_pushes_no_error_code", Any, |_| {
            crate::run::with_svm(real_mode_gp)
        }),
        (
            "cpu11_run_step_over_out_7e_replaces_the_io_exit",
            Any,
            |_| crate::run::with_svm(step_out_7e),
        ),
        ("cpu11_pre_fault_memory_fault_fills_kvm_run", Any, |_| {
            pre_fault_memory_fault()
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

/// A flat 32-bit segment (`type_` 0xb code, 0x3 data).
fn flat32(selector: u16, type_: u8) -> kvm_bindings::kvm_segment {
    kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// 32-bit PAE paging: mov eax, cr4; or eax, PGE; clear PDPTE[0]'s bit 5; mov cr4, eax
/// (EIP 0x400f); hlt. QEMU's page walk sets bit 5 (accessed) in the PDPTE it used, which the
/// PDPTE check (as upstream's) takes for a reserved bit, so the guest clears it right before
/// the write (after the CR4 read's exit, whose re-entry empties QEMU's TLB: the fetches and
/// the store after it walk, and the write's fetch hits the TLB).
const PAE_CR4_CODE: &[u8] = &[
    0x0f, 0x20, 0xe0, // mov eax, cr4
    0x0d, 0x80, 0x00, 0x00, 0x00, // or eax, 0x80 (PGE: a PDPTR bit)
    0x83, 0x25, 0x00, 0x10, 0x00, 0x00, 0xdf, // and dword [0x1000], ~0x20
    0x0f, 0x22, 0xe0, // mov cr4, eax
    0xf4, // hlt
];

/// Runs [`PAE_CR4_CODE`] under PAE paging (PDPT at 0x1000, a 2 MiB identity page for the
/// low memory) with `pdpte3` as the last PDPTE (it maps nothing the guest touches).
fn pae_run(pdpte3: u64, want_gp: bool) -> Result<(), String> {
    let what = format!("PDPTE[3] {pdpte3:#x}");
    let g = Guest::new(&[0xf4], 0x10000)?;
    // GDT at 0x500: null, 0x08 flat code, 0x10 flat data.
    g.ram.write(0x508, &[0xff, 0xff, 0, 0, 0, 0x9b, 0xcf, 0]);
    g.ram.write(0x510, &[0xff, 0xff, 0, 0, 0, 0x93, 0xcf, 0]);
    // IDT at 0x800: #GP -> 0x08:0x6000 (32-bit interrupt gate).
    g.ram
        .write(0x800 + 13 * 8, &[0x00, 0x60, 0x08, 0x00, 0, 0x8e, 0, 0]);
    g.ram.write(0x6000, &[0xb0, 0x0d, 0xe6, 0x99, 0xf4]);
    for (i, e) in [0x2001u64, 0, 0, pdpte3].iter().enumerate() {
        g.ram.write(0x1000 + 8 * i, &e.to_le_bytes());
    }
    g.ram.write(0x2000, &0x83u64.to_le_bytes()); // P | RW | PS: 0..2 MiB
    g.ram.write(0x4000, PAE_CR4_CODE);
    let mut v = g.vcpu(0)?;
    // The supported CPUID (PGE allowed in CR4).
    v.set_cpuid2(&cpuid_leaf1(0, 0)?)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let mut s = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    s.cs = flat32(0x08, 0xb);
    s.ds = flat32(0x10, 0x3);
    s.es = s.ds;
    s.ss = s.ds;
    s.fs = s.ds;
    s.gs = s.ds;
    s.gdt.base = 0x500;
    s.gdt.limit = 0x17;
    s.idt.base = 0x800;
    s.idt.limit = 0x7ff;
    s.cr3 = 0x1000;
    s.cr4 = 0x20; // PAE
    s.cr0 = 0x8000_0011; // PG | ET | PE
    s.efer = 0;
    v.set_sregs(&s).map_err(|e| format!("set_sregs: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    r.rip = 0x4000;
    r.rflags = 2;
    r.rsp = 0x8000;
    v.set_regs(&r).map_err(|e| format!("set_regs: {e}"))?;
    let d = |a: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)));
    if want_gp {
        match step(&mut v, 1)? {
            VcpuExit::IoOut(0x99, b) => eq(b, &[13][..], &format!("{what}: #GP"))?,
            e => return Err(format!("{what}: {e:?}, want #GP")),
        }
        // The frame below ESP 0x8000: error code, EIP, CS, EFLAGS.
        eq(d(0x7ff0), 0, &format!("{what}: error code 0"))?;
        eq(d(0x7ff4), 0x400f, &format!("{what}: EIP at MOV CR4"))?;
    } else {
        expect_hlt(&mut v, 1).map_err(|e| {
            format!(
                "{what}: {e} (frame: error code {:#x}, EIP {:#x})",
                d(0x7ff0),
                d(0x7ff4)
            )
        })?;
    }
    let s = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    eq(
        s.cr4 & 0x80 != 0,
        !want_gp,
        &format!("{what}: CR4.PGE written"),
    )
}

fn pae_pdptes() -> Result<(), String> {
    // Valid: not present (anything goes), or present with PWT/PCD only.
    pae_run(0, false)?;
    pae_run(0xdead_beef_0000_01e6, false)?;
    pae_run(0x3000 | 0x18 | 1, false)?;
    // Present with a reserved bit: bit 1, bit 5, bit 8, or above MAXPHYADDR (bit 62).
    for bad in [1 << 1, 1 << 5, 1 << 8, 1 << 62] {
        pae_run(0x3000 | 1 | bad, true)?;
    }
    Ok(())
}

/// Real mode: mov sp, 0x7000; mov ecx, 0x12345 (no such MSR); wrmsr (IP 9: #GP); hlt. The
/// #GP handler stores SP at 0x500 first.
const REAL_GP_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x66, 0xb9, 0x45, 0x23, 0x01, 0x00, // mov ecx, 0x12345
    0x0f, 0x30, // wrmsr
    0xf4, // hlt
];

fn real_mode_gp() -> Result<(), String> {
    let g = Guest::new(REAL_GP_GUEST, 0x8000)?;
    g.ram.write(13 * 4, &[0x00, 0x06, 0x00, 0x00]);
    g.ram.write(
        0x600,
        &[0x89, 0x26, 0x00, 0x05, 0xb0, 0x0d, 0xe6, 0x99, 0xf4], // mov [0x500], sp; ...
    );
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::IoOut(0x99, b) => eq(b, &[13][..], "#GP")?,
        e => return Err(format!("run 1: {e:?}, want #GP")),
    }
    let w = |a: usize| u16::from_le_bytes([g.ram.read(a), g.ram.read(a + 1)]);
    eq(
        w(0x500),
        0x6ffa,
        "SP in the handler: FLAGS, CS, IP and no error code",
    )?;
    eq(w(0x6ffa), 9, "pushed IP at WRMSR")
}

/// `struct kvm_pre_fault_memory`.
#[repr(C)]
#[derive(Default)]
struct PreFault {
    gpa: u64,
    size: u64,
    flags: u64,
    padding: [u64; 5],
}

const KVM_EXIT_MEMORY_FAULT: u32 = 39;
const MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
const KVM_X86_SW_PROTECTED_VM: u64 = 1;
const MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// `KVM_PRE_FAULT_MEMORY`: the result and the range left.
fn pre_fault(v: &VcpuFd, gpa: u64, size: u64) -> (Result<i64, i32>, u64, u64) {
    let mut r = PreFault {
        gpa,
        size,
        ..Default::default()
    };
    let res = ioctl(
        v.as_raw_fd(),
        iowr(0xd5, 64),
        &mut r as *mut PreFault as u64,
    );
    (res, r.gpa, r.size)
}

/// A software-protected VM with two plain pages at 0x8000 (no guest_memfd) and the second
/// one PRIVATE: a private GFN on a slot that cannot be private.
fn pre_fault_memory_fault() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("open: {e}"))?;
    let vm = kvm
        .create_vm_with_type(KVM_X86_SW_PROTECTED_VM)
        .map_err(|e| format!("KVM_CREATE_VM(SW_PROTECTED): {e}"))?;
    let mem = crate::run::Mem::new(0x2000)?;
    let r = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0x8000,
        memory_size: 0x2000,
        userspace_addr: mem.ptr as u64,
    };
    // SAFETY: `mem` outlives the VM (dropped after it below).
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("memslot: {e}"))?;
    vm.set_memory_attributes(kvm_bindings::kvm_memory_attributes {
        address: 0x9000,
        size: 0x1000,
        attributes: MEMORY_ATTRIBUTE_PRIVATE,
        flags: 0,
    })
    .map_err(|e| format!("KVM_SET_MEMORY_ATTRIBUTES: {e}"))?;
    let mut v = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let check_exit = |v: &mut VcpuFd, what: &str| -> Result<(), String> {
        let run = v.get_kvm_run();
        eq(
            run.exit_reason,
            KVM_EXIT_MEMORY_FAULT,
            &format!("{what}: exit_reason"),
        )?;
        // SAFETY: the member KVM_EXIT_MEMORY_FAULT fills.
        let mf = unsafe { run.__bindgen_anon_1.memory_fault };
        eq(
            (mf.flags, mf.gpa, mf.size),
            (MEMORY_EXIT_FLAG_PRIVATE, 0x9000, 0x1000),
            &format!("{what}: memory_fault"),
        )
    };
    // The private page alone: EFAULT, and kvm_run says why.
    eq(
        pre_fault(&v, 0x9000, 0x1000),
        (Err(libc::EFAULT), 0x9000, 0x1000),
        "private page on a plain slot",
    )?;
    check_exit(&mut v, "alone")?;
    // Clear the exit, then both pages: the shared one is mapped, so the ioctl answers 0 with
    // the range stopped at the private page, and kvm_run still reports the fault.
    v.get_kvm_run().exit_reason = 0;
    eq(
        pre_fault(&v, 0x8000, 0x2000),
        (Ok(0), 0x9000, 0x1000),
        "shared page then the private one",
    )?;
    check_exit(&mut v, "after progress")?;
    // A shared GFN outside every slot is no memory fault (ENOENT, kvm_run untouched).
    v.get_kvm_run().exit_reason = 0;
    eq(
        pre_fault(&v, 0x10_0000, 0x1000),
        (Err(libc::ENOENT), 0x10_0000, 0x1000),
        "no memslot",
    )?;
    eq(v.get_kvm_run().exit_reason, 0, "kvm_run untouched")?;
    drop(v);
    drop(vm);
    drop(mem);
    Ok(())
}

/// out 0x7e, al (IP 0); out 0x80, al (IP 2).
const OUT_7E_GUEST: &[u8] = &[0xe6, 0x7e, 0xe6, 0x80];

/// `KVM_X86_QUIRK_OUT_7E_INC_RIP` skips `OUT 0x7e` before its exit; single-stepping it,
/// upstream's `kvm_vcpu_do_singlestep` turns the exit into `KVM_EXIT_DEBUG` at the next IP.
fn step_out_7e() -> Result<(), String> {
    let g = Guest::new(OUT_7E_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    set_step(&v, true)?;
    let base = 0xffff_0000u64;
    expect_step(&mut v, 1, base, false)?;
    expect_step(&mut v, 2, base + 2, true)?;
    match step(&mut v, 3)? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("run 3: {e:?}, want OUT 0x80")),
    }
    // Without single-stepping: the I/O exit, RIP already past the OUT.
    set_step(&v, false)?;
    let g = Guest::new(OUT_7E_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 4)? {
        VcpuExit::IoOut(0x7e, _) => {}
        e => return Err(format!("run 4: {e:?}, want OUT 0x7e")),
    }
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rip, 2, "RIP past OUT 0x7e at its exit")
}
