// SPDX-License-Identifier: GPL-2.0-only
//! Issue 11's remainder (helper `misc`): the MSR filter over the MSRs SVM passes through,
//! single-step over instructions the module emulates or skips, hardware breakpoints, pending
//! completions against state ioctls, and `KVM_CREATE_DEVICE` (kvm-vfio).

use crate::run::{long_mode_guest, Guest};
use crate::*;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::os::fd::{FromRawFd, OwnedFd};

const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_X86_SET_MSR_FILTER: u64 = 0x4188_aec6;
const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
const KVM_MSR_EXIT_REASON_FILTER: u32 = 4;
const FILTER_READ: u32 = 1;
const FILTER_WRITE: u32 = 2;
const MSR_FS_BASE: u32 = 0xc000_0100;

pub(crate) fn tests() -> Vec<Test> {
    vec![
        (
            "misc_msr_filter_intercepts_passthrough_fs_base",
            Any,
            |_| msr_filter_fs_base(),
        ),
        ("misc_single_step_over_skipped_and_completed", Any, |_| {
            step_over_skips()
        }),
        ("misc_guest_tf_over_skipped_cpuid_raises_db", Any, |_| {
            guest_tf_cpuid()
        }),
        ("misc_hw_breakpoint_exits", Any, |_| hw_breakpoint()),
        ("misc_hw_breakpoint_guest_mov_dr_emulated", Any, |_| {
            hw_breakpoint_guest_dr()
        }),
        ("misc_guest_debug_inject_db_bp", Any, |_| inject_db_bp()),
        ("misc_guest_debug_flags_rules", Any, |_| guest_debug_rules()),
        ("misc_failed_entry_keeps_events", Any, |_| {
            failed_entry_keeps_events()
        }),
        ("misc_create_device_vfio", Any, |_| create_device_vfio()),
        ("misc_vfio_device_attrs", Any, |_| vfio_device_attrs()),
        ("misc_pending_in_vs_state_ioctls", Any, |_| {
            pending_in_vs_state()
        }),
    ]
}

fn errno_of(r: Result<i64, i32>) -> i32 {
    r.err().unwrap_or(0)
}

fn vm_ioctl(vm: &kvm_ioctls::VmFd, req: u64, arg: u64) -> i32 {
    errno_of(ioctl(vm.as_raw_fd(), req, arg))
}

fn enable_cap(vm: &kvm_ioctls::VmFd, cap: u32, arg0: u64) -> i32 {
    let mut c = [0u8; 104];
    c[0..4].copy_from_slice(&cap.to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    vm_ioctl(vm, KVM_ENABLE_CAP, c.as_ptr() as u64)
}

/// `KVM_X86_SET_MSR_FILTER` with `flags` and up to one range (flags, base, nmsrs 1, bit).
fn set_filter(vm: &kvm_ioctls::VmFd, flags: u32, range: Option<(u32, u32, bool)>) -> i32 {
    let mut b = [0u8; 0x188];
    b[0..4].copy_from_slice(&flags.to_ne_bytes());
    let bitmap: u64 = match range {
        Some((_, _, true)) => 1,
        _ => 0,
    };
    if let Some((rflags, base, _)) = range {
        b[8..12].copy_from_slice(&rflags.to_ne_bytes());
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        b[16..20].copy_from_slice(&base.to_ne_bytes());
        b[24..32].copy_from_slice(&(&bitmap as *const u64 as u64).to_ne_bytes());
    }
    vm_ioctl(vm, KVM_X86_SET_MSR_FILTER, b.as_ptr() as u64)
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

/// 64-bit guest: WRMSR FS_BASE (denied: exit), RDMSR FS_BASE (allowed: passed through, no
/// exit) → [0x5000]; HLT; WRMSR FS_BASE (allowed now: passed through), RDMSR (denied: exit)
/// → [0x5004]; HLT.
const FS_BASE_GUEST: &[u8] = &[
    0xb9, 0x00, 0x01, 0x00, 0xc0, // mov ecx, 0xc0000100
    0xb8, 0x00, 0x10, 0x11, 0x11, // mov eax, 0x11111000
    0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0x0f, 0x32, // rdmsr
    0x89, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], eax
    0xf4, // hlt
    0xb8, 0x00, 0x20, 0x22, 0x22, // mov eax, 0x22222000
    0x0f, 0x30, // wrmsr
    0x0f, 0x32, // rdmsr
    0x89, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], eax
    0xf4, // hlt
];

fn msr_filter_fs_base() -> Result<(), String> {
    let (g, mut v) = long_mode_guest(FS_BASE_GUEST)?;
    let mut sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    sr.fs.base = 0xabc000;
    v.set_sregs(&sr).map_err(|e| format!("set_sregs: {e}"))?;
    eq(
        enable_cap(&g.vm, KVM_CAP_X86_USER_SPACE_MSR, 4),
        0,
        "user-space MSR exits for FILTER",
    )?;
    // Set after the vCPU exists: its MSR map must follow.
    eq(
        set_filter(&g.vm, 0, Some((FILTER_WRITE, MSR_FS_BASE, false))),
        0,
        "deny FS_BASE writes",
    )?;
    match step(&mut v, 1)? {
        VcpuExit::X86Wrmsr(m) => {
            eq(m.index, MSR_FS_BASE, "WRMSR index")?;
            eq(m.reason.bits(), KVM_MSR_EXIT_REASON_FILTER, "reason FILTER")?;
            eq(m.data, 0x1111_1000, "WRMSR data")?;
            *m.error = 0;
        }
        e => return Err(format!("run 1: {e:?}, want the filtered WRMSR exit")),
    }
    expect_hlt(&mut v, 2)?;
    let word = |a: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)));
    eq(
        word(0x5000),
        0xabc000,
        "RDMSR passed through: FS base unchanged by the filtered write",
    )?;
    // Now reads are denied and writes pass through.
    eq(
        set_filter(&g.vm, 0, Some((FILTER_READ, MSR_FS_BASE, false))),
        0,
        "deny FS_BASE reads",
    )?;
    match step(&mut v, 3)? {
        VcpuExit::X86Rdmsr(m) => {
            eq(m.index, MSR_FS_BASE, "RDMSR index")?;
            eq(m.reason.bits(), KVM_MSR_EXIT_REASON_FILTER, "reason FILTER")?;
            *m.data = 0x77;
        }
        e => return Err(format!("run 3: {e:?}, want the filtered RDMSR exit")),
    }
    expect_hlt(&mut v, 4)?;
    eq(word(0x5004), 0x77, "RDMSR data from userspace")?;
    let sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    eq(sr.fs.base, 0x2222_2000, "WRMSR passed through to FS base")?;
    // Removing the filter (default allow, no ranges) passes everything through again.
    eq(set_filter(&g.vm, 0, None), 0, "filter removed")?;
    Ok(())
}

const GUESTDBG_ENABLE: u32 = 1;
const GUESTDBG_SINGLESTEP: u32 = 2;
const GUESTDBG_USE_SW_BP: u32 = 0x1_0000;
const GUESTDBG_USE_HW_BP: u32 = 0x2_0000;
const GUESTDBG_INJECT_DB: u32 = 0x4_0000;
const GUESTDBG_INJECT_BP: u32 = 0x8_0000;
const GUESTDBG_BLOCKIRQ: u32 = 0x10_0000;

fn set_debug(v: &VcpuFd, control: u32, debugreg: [u64; 8]) -> Result<(), i32> {
    let d = kvm_bindings::kvm_guest_debug {
        control,
        pad: 0,
        arch: kvm_bindings::kvm_guest_debug_arch { debugreg },
    };
    v.set_guest_debug(&d).map_err(|e| e.errno())
}

fn expect_debug(v: &mut VcpuFd, n: u32, exception: u32, pc: u64) -> Result<(u64, u64), String> {
    match step(v, n)? {
        VcpuExit::Debug(d) => {
            eq(d.exception, exception, "debug exception")?;
            eq(d.pc, pc, "debug pc")?;
            Ok((d.dr6, d.dr7))
        }
        e => Err(format!("run {n}: {e:?}, want a debug exit at {pc:#x}")),
    }
}

/// Real mode at 0xffff0000: CPUID (skipped by the module), OUT (completed on the next run),
/// HLT (skipped; its exit replaces the step's).
const STEP_SKIP_GUEST: &[u8] = &[
    0x66, 0x31, 0xc0, // xor eax, eax
    0x0f, 0xa2, // cpuid
    0xe6, 0x80, // out 0x80, al
    0xf4, // hlt
];

fn step_over_skips() -> Result<(), String> {
    let g = Guest::new(STEP_SKIP_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    set_debug(&v, GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP, [0; 8])
        .map_err(|e| format!("set_guest_debug: {e}"))?;
    // The reset vector's JMP, then XOR.
    expect_debug(&mut v, 1, 1, 0xffff_0000)?;
    expect_debug(&mut v, 2, 1, 0xffff_0003)?;
    // CPUID is executed by the module: the step exit still comes, with DR6.BS.
    let (dr6, dr7) = expect_debug(&mut v, 3, 1, 0xffff_0005)?;
    eq(
        dr6,
        0xffff_4ff0,
        "DR6 after a skipped instruction (BS | active-low)",
    )?;
    eq(dr7, 0x400, "DR7")?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rip, 5, "RIP past CPUID")?;
    eq(
        r.rflags & 0x100,
        0,
        "single-stepping's TF hidden from KVM_GET_REGS",
    )?;
    // SET_REGS away from where stepping was enabled drops the injected TF (upstream
    // __kvm_set_rflags checks singlestep_rip), so a debugger sets guest debugging again.
    v.set_regs(&r).map_err(|e| format!("set_regs: {e}"))?;
    set_debug(&v, GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP, [0; 8])
        .map_err(|e| format!("set_guest_debug again: {e}"))?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rflags & 0x100, 0, "TF still hidden")?;
    match step(&mut v, 4)? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("run 4: {e:?}, want OUT 0x80")),
    }
    // The OUT completes on the next KVM_RUN, which steps at once.
    expect_debug(&mut v, 5, 1, 0xffff_0007)?;
    // HLT: the module skips it and exits with HLT (upstream kvm_emulate_halt's exit wins).
    expect_hlt(&mut v, 6)?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rip, 8, "RIP past HLT")?;
    set_debug(&v, 0, [0; 8]).map_err(|e| format!("set_guest_debug off: {e}"))?;
    Ok(())
}

/// The guest sets TF itself (POPF), then CPUID: the module's skip raises #DB (DR6.BS) through
/// the guest's IVT, the pushed IP past CPUID.
const GUEST_TF_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x9c, // pushf
    0x89, 0xe5, // mov bp, sp
    0x81, 0x4e, 0x00, 0x00, 0x01, // or word [bp], 0x100
    0x9d, // popf
    0x0f, 0xa2, // cpuid (#DB after it)
    0xf4, // hlt (not reached first)
];

fn install_handler(g: &Guest, vector: usize, at: u16, port: u8) {
    g.ram.write(vector * 4, &[at as u8, (at >> 8) as u8, 0, 0]);
    g.ram
        .write(at as usize, &[0xb0, vector as u8, 0xe6, port, 0xf4]);
}

fn word(g: &Guest, a: usize) -> u16 {
    u16::from_le_bytes([g.ram.read(a), g.ram.read(a + 1)])
}

fn guest_tf_cpuid() -> Result<(), String> {
    let g = Guest::new(GUEST_TF_GUEST, 0x8000)?;
    install_handler(&g, 1, 0x600, 0x99);
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::IoOut(0x99, d) => eq(d, &[1][..], "the guest's #DB handler ran")?,
        e => return Err(format!("run 1: {e:?}, want the #DB handler's OUT")),
    }
    eq(word(&g, 0x6ffa), 14, "pushed IP: past CPUID")?;
    check(word(&g, 0x6ffe) & 0x100 != 0, "pushed FLAGS with TF")?;
    let dr = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    check(dr.dr6 & 0x4000 != 0, "DR6.BS")?;
    Ok(())
}

/// Five one-byte INCs after XOR AX, AX; an execution breakpoint at the fourth INC.
const HWBP_GUEST: &[u8] = &[
    0x31, 0xc0, // xor ax, ax
    0x40, 0x40, 0x40, 0x40, 0x40, // inc ax x5 (at 2..6)
    0xf4, // hlt
];

/// Whether this CPU delivers a guest's own DR0 execution breakpoint inside an SVM guest
/// (QEMU 7.2's TCG loads DR7 at VMRUN without arming its breakpoints, so it does not).
fn guest_breakpoints_fire() -> Result<bool, String> {
    let g = Guest::new(HWBP_GUEST, 0x8000)?;
    install_handler(&g, 1, 0x600, 0x99);
    let mut v = g.vcpu(0)?;
    let mut dr = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    dr.db[0] = 0xffff_0005;
    dr.dr7 = 0x401;
    v.set_debug_regs(&dr)
        .map_err(|e| format!("set_debugregs: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    r.rsp = 0x7000;
    v.set_regs(&r).map_err(|e| format!("set_regs: {e}"))?;
    Ok(match step(&mut v, 0)? {
        VcpuExit::IoOut(0x99, _) => true,
        VcpuExit::Hlt => false,
        e => return Err(format!("probe: {e:?}")),
    })
}

fn hw_breakpoint() -> Result<(), String> {
    let fires = guest_breakpoints_fire()?;
    let g = Guest::new(HWBP_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    // The guest's own DR0/DR7 (no breakpoint enabled) must survive the debugger's.
    let mut own = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    own.db[0] = 0x1234;
    v.set_debug_regs(&own)
        .map_err(|e| format!("set_debugregs: {e}"))?;
    // DR0 = 0xffff0005 (execute), DR7 = L0 | bit 10.
    set_debug(
        &v,
        GUESTDBG_ENABLE | GUESTDBG_USE_HW_BP,
        [0xffff_0005, 0, 0, 0, 0, 0, 0, 0x401],
    )
    .map_err(|e| format!("set_guest_debug HW_BP: {e}"))?;
    if fires {
        let (dr6, dr7) = expect_debug(&mut v, 1, 1, 0xffff_0005)?;
        eq(dr6 & 0xf, 1, "DR6.B0")?;
        eq(dr7, 0x401, "DR7 is the debugger's")?;
        let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
        eq(r.rax & 0xffff, 3, "AX before the breakpointed INC")?;
        // Breakpoints off: the guest runs on.
        set_debug(&v, GUESTDBG_ENABLE, [0; 8]).map_err(|e| format!("set_guest_debug: {e}"))?;
    } else {
        // This CPU does not arm breakpoints loaded by VMRUN (see guest_breakpoints_fire): only
        // the register switching is observable.
        println!("# misc_hw_breakpoint_exits: the CPU does not deliver DR breakpoints in SVM guests; checking the register switch only");
    }
    expect_hlt(&mut v, 2)?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rax & 0xffff, 5, "AX at HLT")?;
    let dr = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    eq(dr.db[0], 0x1234, "the guest's DR0 kept")?;
    eq(dr.dr7, 0x400, "the guest's DR7 kept")?;
    Ok(())
}

/// An OUT, then an INT3 the guest does not reach by itself: `KVM_GUESTDBG_INJECT_BP` with RIP at
/// the INT3 runs the guest's #BP handler with the IP past it (the module skips the INT3, as
/// upstream does for a soft exception without next-RIP save). Then an injected #DB.
const INJECT_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0xe6, 0x97, // out 0x97, al
    0xcc, // int3 (at 5)
    0xf4, // hlt
];

fn inject_db_bp() -> Result<(), String> {
    let g = Guest::new(INJECT_GUEST, 0x8000)?;
    install_handler(&g, 3, 0x600, 0x98);
    install_handler(&g, 1, 0x700, 0x99);
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::IoOut(0x97, _) => {}
        e => return Err(format!("run 1: {e:?}, want OUT 0x97")),
    }
    set_debug(&v, GUESTDBG_INJECT_BP, [0; 8]).map_err(|e| format!("inject #BP: {e}"))?;
    eq(
        set_debug(&v, GUESTDBG_INJECT_DB, [0; 8]),
        Err(libc::EBUSY),
        "injecting while an exception is pending",
    )?;
    // The OUT completes (RIP at the INT3), the INT3 is skipped, #BP delivered.
    match step(&mut v, 2)? {
        VcpuExit::IoOut(0x98, d) => eq(d, &[3][..], "the guest's #BP handler ran")?,
        e => return Err(format!("run 2: {e:?}, want the #BP handler's OUT")),
    }
    eq(word(&g, 0x6ffa), 6, "pushed IP past the INT3")?;
    // The handler halts; inject #DB there.
    expect_hlt(&mut v, 3)?;
    set_debug(&v, GUESTDBG_INJECT_DB, [0; 8]).map_err(|e| format!("inject #DB: {e}"))?;
    match step(&mut v, 4)? {
        VcpuExit::IoOut(0x99, d) => eq(d, &[1][..], "the guest's #DB handler ran")?,
        e => return Err(format!("run 4: {e:?}, want the #DB handler's OUT")),
    }
    Ok(())
}

/// KVM_GUESTDBG_VALID_MASK is only reported: 6.12 accepts (and ignores) bits outside it, as
/// upstream kvm_amd does in the same guest (the hostile probe's measurement). BLOCKIRQ is
/// accepted (HOOK(abi); `abi_guest_debug_blockirq_holds_nmi` checks it).
fn guest_debug_rules() -> Result<(), String> {
    let g = Guest::new(&[0xf4], 0x8000)?;
    let v = g.vcpu(0)?;
    for unknown in [1u32 << 2, 1 << 15, 1 << 21, 1 << 31] {
        eq(
            set_debug(&v, GUESTDBG_ENABLE | unknown, [0; 8]),
            Ok(()),
            &format!("control {unknown:#x}"),
        )?;
    }
    for ok in [
        GUESTDBG_ENABLE,
        GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP,
        GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP | GUESTDBG_USE_HW_BP,
        GUESTDBG_ENABLE | GUESTDBG_BLOCKIRQ,
        0,
    ] {
        eq(
            set_debug(&v, ok, [0; 8]),
            Ok(()),
            &format!("control {ok:#x}"),
        )?;
    }
    Ok(())
}

/// A failed entry (VMEXIT_INVALID: long mode with CS.L and CS.D both set, which KVM_SET_SREGS
/// accepts and VMRUN refuses) exits with KVM_EXIT_FAIL_ENTRY and drops no event: an exception
/// userspace queued is still there afterwards, and is delivered once the state is fixed.
fn failed_entry_keeps_events() -> Result<(), String> {
    // #UD handler (64-bit IDT at 0x6000, entry 6 -> 0x7000: out 0x96, al; hlt).
    let (g, mut v) = long_mode_guest(&[0xf4])?;
    let gate = |off: u64| -> [u8; 16] {
        let lo = (off & 0xffff) | (8 << 16) | (0x8e00u64 << 32) | ((off >> 16) & 0xffff) << 48;
        let hi = off >> 32;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&hi.to_le_bytes());
        b
    };
    g.ram.write(0x6000 + 6 * 16, &gate(0x7000));
    g.ram.write(0x7000, &[0xb0, 0x06, 0xe6, 0x96, 0xf4]);
    // GDT at 0x500: null, 64-bit code (0x08), data (0x10): the gate's CS is loaded from it.
    g.ram.write(0x500, &0u64.to_le_bytes());
    g.ram.write(0x508, &0x0020_9a00_0000_0000u64.to_le_bytes());
    g.ram.write(0x510, &0x0000_9200_0000_0000u64.to_le_bytes());
    let mut sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    sr.gdt.base = 0x500;
    sr.gdt.limit = 0x17;
    sr.idt.base = 0x6000;
    sr.idt.limit = 0xfff;
    let good = sr;
    sr.cs.db = 1;
    v.set_sregs(&sr)
        .map_err(|e| format!("set_sregs (CS.L and CS.D): {e}"))?;
    let mut ev = v
        .get_vcpu_events()
        .map_err(|e| format!("get_vcpu_events: {e}"))?;
    ev.exception.injected = 1;
    ev.exception.nr = 6;
    v.set_vcpu_events(&ev)
        .map_err(|e| format!("set_vcpu_events: {e}"))?;
    // KVM_CAP_LAST_CPU: fail_entry.cpu is the CPU of the failed entry. The thread runs pinned
    // to the last online CPU for that run, so the answer is known.
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(kvm.check_extension_raw(184), 1, "KVM_CAP_LAST_CPU")?;
    // SAFETY: sysconf has no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let pin = ncpu - 1;
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers and sizes for this thread.
    let old_mask = unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(pin, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
            return Err(format!("sched_setaffinity({pin}) failed"));
        }
        old
    };
    let r = step(&mut v, 1);
    // SAFETY: as above; restores the thread's own mask.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old_mask) };
    match r? {
        VcpuExit::FailEntry(reason, cpu) => {
            eq(
                reason,
                0xffff_ffff,
                "VMEXIT_INVALID as upstream reports it (u32 exit code)",
            )?;
            eq(cpu as usize, pin, "fail_entry.cpu: the pinned CPU")?;
        }
        VcpuExit::InternalError => {
            let r = v.get_kvm_run();
            // SAFETY: kvm_run is plain data inside the vCPU mapping.
            let b = unsafe {
                std::slice::from_raw_parts((r as *const kvm_bindings::kvm_run).cast::<u8>(), 128)
            };
            return Err(format!("run 1: internal error {:x?}", &b[32..72]));
        }
        e => return Err(format!("run 1: {e:?}, want FAIL_ENTRY")),
    }
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("get_vcpu_events: {e}"))?;
    eq(
        (ev.exception.injected, ev.exception.nr),
        (1, 6),
        "the #UD is still queued after the failed entry",
    )?;
    v.set_sregs(&good).map_err(|e| format!("set_sregs: {e}"))?;
    match step(&mut v, 2)? {
        VcpuExit::IoOut(0x96, d) => eq(d, &[6][..], "the #UD was delivered")?,
        e => return Err(format!("run 2: {e:?}, want the #UD handler's OUT")),
    }
    Ok(())
}

const KVM_CHECK_EXTENSION: u64 = 0xae03;
const KVM_CREATE_DEVICE: u64 = 0xc00c_aee0;
const KVM_SET_DEVICE_ATTR: u64 = 0x4018_aee1;
const KVM_GET_DEVICE_ATTR: u64 = 0x4018_aee2;
const KVM_HAS_DEVICE_ATTR: u64 = 0x4018_aee3;
const KVM_CAP_DEVICE_CTRL: u64 = 89;
const KVM_DEV_TYPE_VFIO: u32 = 4;
const KVM_DEV_TYPE_ARM_VGIC_V3: u32 = 7;
const KVM_CREATE_DEVICE_TEST: u32 = 1;

/// `KVM_CREATE_DEVICE`: the errno and the structure as written back.
fn create_device(vm: &kvm_ioctls::VmFd, type_: u32, fd: u32, flags: u32) -> (i32, [u32; 3]) {
    let mut cd = [type_, fd, flags];
    let r = vm_ioctl(vm, KVM_CREATE_DEVICE, cd.as_mut_ptr() as u64);
    (r, cd)
}

fn owned(fd: u32) -> OwnedFd {
    // SAFETY: a fresh fd from KVM_CREATE_DEVICE, owned from now on.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn new_vm() -> Result<kvm_ioctls::VmFd, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))
}

fn create_device_vfio() -> Result<(), String> {
    eq(
        ioctl(dev().as_raw_fd(), KVM_CHECK_EXTENSION, KVM_CAP_DEVICE_CTRL),
        Ok(1),
        "KVM_CAP_DEVICE_CTRL on /dev/kvm",
    )?;
    let vm = new_vm()?;
    eq(
        ioctl(vm.as_raw_fd(), KVM_CHECK_EXTENSION, KVM_CAP_DEVICE_CTRL),
        Ok(1),
        "KVM_CAP_DEVICE_CTRL on the VM",
    )?;
    for t in [0, 1, KVM_DEV_TYPE_ARM_VGIC_V3, 0xffff_ffff] {
        for f in [0, KVM_CREATE_DEVICE_TEST] {
            eq(
                create_device(&vm, t, 0, f).0,
                libc::ENODEV,
                &format!("type {t} flags {f}"),
            )?;
        }
    }
    // TEST: 0, nothing created, the structure back unchanged (kvm-ioctls' test relies on it).
    eq(
        create_device(&vm, KVM_DEV_TYPE_VFIO, 0x55, KVM_CREATE_DEVICE_TEST),
        (0, [KVM_DEV_TYPE_VFIO, 0x55, KVM_CREATE_DEVICE_TEST]),
        "VFIO with KVM_CREATE_DEVICE_TEST",
    )?;
    let (r, cd) = create_device(&vm, KVM_DEV_TYPE_VFIO, 0, 0);
    eq(r, 0, "create kvm-vfio")?;
    let d = owned(cd[1]);
    let link = std::fs::read_link(format!("/proc/self/fd/{}", d.as_raw_fd()))
        .map_err(|e| format!("readlink: {e}"))?;
    eq(
        link.to_string_lossy().into_owned(),
        "anon_inode:kvm-vfio".to_string(),
        "fd name",
    )?;
    // SAFETY: fcntl on our fd.
    let fdflags = unsafe { libc::fcntl(d.as_raw_fd(), libc::F_GETFD) };
    eq(fdflags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "O_CLOEXEC")?;
    eq(
        create_device(&vm, KVM_DEV_TYPE_VFIO, 0, 0).0,
        libc::EBUSY,
        "a second kvm-vfio",
    )?;
    eq(
        create_device(&vm, KVM_DEV_TYPE_VFIO, 0, KVM_CREATE_DEVICE_TEST).0,
        0,
        "TEST while one exists",
    )?;
    drop(d);
    let (r, cd) = create_device(&vm, KVM_DEV_TYPE_VFIO, 0, 0);
    eq(r, 0, "kvm-vfio again after close")?;
    let d = owned(cd[1]);
    // Bad pointers.
    for p in [0u64, 0xffff_8000_0000_0000, 1 << 63] {
        eq(
            vm_ioctl(&vm, KVM_CREATE_DEVICE, p),
            libc::EFAULT,
            &format!("at {p:#x}"),
        )?;
    }
    // The device holds the VM: it answers after the VM fd is closed.
    drop(vm);
    let attr = [0u32, 1, 1, 0, 0, 0];
    eq(
        ioctl(d.as_raw_fd(), KVM_HAS_DEVICE_ATTR, attr.as_ptr() as u64),
        Ok(0),
        "HAS_ATTR after the VM fd closed",
    )?;
    Ok(())
}

/// `struct kvm_device_attr` as u32 words: flags, group, attr (lo, hi), addr (lo, hi).
fn attr(group: u32, a: u64, addr: u64) -> [u32; 6] {
    [
        0,
        group,
        a as u32,
        (a >> 32) as u32,
        addr as u32,
        (addr >> 32) as u32,
    ]
}

fn vfio_device_attrs() -> Result<(), String> {
    let vm = new_vm()?;
    let (r, cd) = create_device(&vm, KVM_DEV_TYPE_VFIO, 0, 0);
    eq(r, 0, "create kvm-vfio")?;
    let d = owned(cd[1]);
    let dio = |req: u64, a: &[u32; 6]| errno_of(ioctl(d.as_raw_fd(), req, a.as_ptr() as u64));
    eq(dio(KVM_HAS_DEVICE_ATTR, &attr(1, 1, 0)), 0, "has FILE_ADD")?;
    eq(dio(KVM_HAS_DEVICE_ATTR, &attr(1, 2, 0)), 0, "has FILE_DEL")?;
    eq(
        dio(KVM_HAS_DEVICE_ATTR, &attr(1, 3, 0)),
        libc::ENXIO,
        "has SET_SPAPR_TCE (x86)",
    )?;
    eq(
        dio(KVM_HAS_DEVICE_ATTR, &attr(2, 1, 0)),
        libc::ENXIO,
        "has group 2",
    )?;
    eq(
        dio(KVM_GET_DEVICE_ATTR, &attr(1, 1, 0)),
        libc::EPERM,
        "get (no get_attr)",
    )?;
    eq(
        errno_of(ioctl(d.as_raw_fd(), KVM_GET_DEVICE_ATTR, 0)),
        libc::EPERM,
        "get with a NULL attr: EPERM before the copy",
    )?;
    for req in [KVM_SET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR] {
        eq(
            errno_of(ioctl(d.as_raw_fd(), req, 0)),
            libc::EFAULT,
            "NULL attr",
        )?;
    }
    eq(
        errno_of(ioctl(d.as_raw_fd(), 0xae01, 0)),
        libc::ENOTTY,
        "other ioctl",
    )?;
    // FILE_ADD / FILE_DEL: the fd is read from addr.
    // SAFETY: a plain eventfd, closed by the OwnedFd.
    let efd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, 0)) };
    let not_vfio: i32 = efd.as_raw_fd();
    let bad: i32 = -1;
    let closed: i32 = 1000;
    let p = |v: &i32| v as *const i32 as u64;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1, 0)),
        libc::EFAULT,
        "ADD, addr NULL",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1, p(&bad))),
        libc::EBADF,
        "ADD -1",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1, p(&closed))),
        libc::EBADF,
        "ADD closed",
    )?;
    // No VFIO file: EINVAL (the test kernel has no VFIO, so every file is one of these).
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1, p(&not_vfio))),
        libc::EINVAL,
        "ADD eventfd",
    )?;
    let vmfd = vm.as_raw_fd();
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1, p(&vmfd))),
        libc::EINVAL,
        "ADD the VM fd",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 2, p(&not_vfio))),
        libc::ENOENT,
        "DEL not added",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 2, p(&bad))),
        libc::EBADF,
        "DEL -1",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 2, 0)),
        libc::EFAULT,
        "DEL, addr NULL",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 3, p(&not_vfio))),
        libc::ENXIO,
        "attr 3",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(0, 1, p(&not_vfio))),
        libc::ENXIO,
        "group 0",
    )?;
    eq(
        dio(KVM_SET_DEVICE_ATTR, &attr(1, 1 << 32 | 1, p(&not_vfio))),
        libc::ENXIO,
        "attr 1<<32|1",
    )?;
    Ok(())
}

/// IN 0x10; HLT; IN 0x20; HLT (real mode, IP 0 at 0xffff0000).
const PENDING_GUEST: &[u8] = &[0xe4, 0x10, 0xf4, 0xe4, 0x20, 0xf4];

fn answer_in(v: &mut VcpuFd, n: u32, port: u16, val: u8) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::IoIn(p, d) if p == port => {
            d[0] = val;
            Ok(())
        }
        e => Err(format!("run {n}: {e:?}, want IN {port:#x}")),
    }
}

/// A pending IN completion, as upstream: KVM_SET_SREGS / KVM_SET_MP_STATE leave it (the next
/// KVM_RUN completes it); KVM_SET_REGS that moves RIP abandons it (complete_fast_pio_in's
/// linear-RIP check), and the guest runs from the new RIP.
fn pending_in_vs_state() -> Result<(), String> {
    // The reset JMP first.
    let g = Guest::new(PENDING_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    answer_in(&mut v, 1, 0x10, 0x42)?;
    let sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    v.set_sregs(&sr).map_err(|e| format!("set_sregs: {e}"))?;
    let mp = v.get_mp_state().map_err(|e| format!("get_mp_state: {e}"))?;
    v.set_mp_state(mp)
        .map_err(|e| format!("set_mp_state: {e}"))?;
    expect_hlt(&mut v, 2)?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(
        (r.rax & 0xff, r.rip),
        (0x42, 3),
        "IN completed after SET_SREGS/SET_MP_STATE",
    )?;
    // Again, but userspace moves RIP (and RAX) before the next run.
    let g = Guest::new(PENDING_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    answer_in(&mut v, 1, 0x10, 0x42)?;
    let mut r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rip, 0, "RIP at the IN while its completion is pending")?;
    r.rip = 3;
    r.rax = 7;
    v.set_regs(&r).map_err(|e| format!("set_regs: {e}"))?;
    answer_in(&mut v, 2, 0x20, 0x99)?;
    expect_hlt(&mut v, 3)?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(
        (r.rax & 0xff, r.rip),
        (0x99, 6),
        "the abandoned IN left nothing behind",
    )?;
    Ok(())
}

/// Real mode: EAX = DR7 -> [0x100]; DR0 = 0x12345678; EBX = DR0 -> [0x104]; HLT.
const MOV_DR_GUEST: &[u8] = &[
    0x0f, 0x21, 0xf8, // mov eax, dr7
    0x66, 0xa3, 0x00, 0x01, // mov [0x100], eax
    0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
    0x0f, 0x23, 0xc0, // mov dr0, eax
    0x0f, 0x21, 0xc3, // mov ebx, dr0
    0x66, 0x89, 0x1e, 0x04, 0x01, // mov [0x104], ebx
    0xf4, // hlt
];

/// While the debugger's hardware breakpoints are loaded, the guest's MOV DR sees and changes
/// its own registers (intercepted and emulated), not the debugger's.
fn hw_breakpoint_guest_dr() -> Result<(), String> {
    let g = Guest::new(MOV_DR_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    let mut own = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    // RW0 = 01 without an enable bit: a value the debugger's DR7 does not have.
    own.dr7 = 0x1_0400;
    v.set_debug_regs(&own)
        .map_err(|e| format!("set_debugregs: {e}"))?;
    set_debug(
        &v,
        GUESTDBG_ENABLE | GUESTDBG_USE_HW_BP,
        [0xffff_f000, 0, 0, 0, 0, 0, 0, 0x401],
    )
    .map_err(|e| format!("set_guest_debug HW_BP: {e}"))?;
    expect_hlt(&mut v, 1)?;
    let dword = |a: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)));
    eq(dword(0x100), 0x1_0400, "the guest reads its own DR7")?;
    eq(
        dword(0x104),
        0x1234_5678,
        "the guest reads back its own DR0",
    )?;
    let dr = v
        .get_debug_regs()
        .map_err(|e| format!("get_debugregs: {e}"))?;
    eq(
        (dr.db[0], dr.dr7),
        (0x1234_5678, 0x1_0400),
        "the guest's registers after the run",
    )?;
    let r = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(r.rip, MOV_DR_GUEST.len() as u64, "RIP past the HLT")?;
    Ok(())
}
