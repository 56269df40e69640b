// SPDX-License-Identifier: GPL-2.0-only
//! The #UD intercept (`ud`): instructions KVM emulates when the guest's CPUID promises them
//! (RDPID, MOVBE), the hypercall fix-up (VMCALL rewritten to VMMCALL unless userspace disabled
//! `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`), #UD for everything else, and the ioctls that say so
//! (`KVM_GET_EMULATED_CPUID`, `KVM_CAP_DISABLE_QUIRKS(2)`), with upstream 6.12's answers.
//!
//! The guests are real-mode code; their #UD handler (IVT[6]) does `out 0x99, 6; hlt`. The test
//! guest's CPU (QEMU `-cpu max`) has MOVBE but no RDPID: RDPID really goes through the #UD
//! intercept here, while MOVBE executes natively, so MOVBE's emulation is checked where the
//! hardware cannot finish it either: on an MMIO operand (the NPF path emulates it, and
//! upstream's `em_movbe` checks the guest's CPUID there too).

use crate::run::Guest;
use crate::*;
use kvm_bindings::{kvm_enable_cap, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};

const KVM_GET_EMULATED_CPUID: u64 = 0xc008_ae09;
const KVM_CAP_DISABLE_QUIRKS: u32 = 116;
const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
const QUIRK_FIX_HYPERCALL_INSN: u64 = 1 << 5;
const QUIRK_MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
const MSR_TSC_AUX: u32 = 0xc000_0103;

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("ud_emulated_cpuid_abi", Any, |_| emulated_cpuid_abi()),
        ("ud_disable_quirks_caps", Any, |_| disable_quirks_caps()),
        ("ud_run_rdpid_with_and_without_cpuid", Any, |_| {
            with_svm(rdpid)
        }),
        ("ud_run_movbe_on_mmio_with_and_without_cpuid", Any, |_| {
            with_svm(movbe_mmio)
        }),
        ("ud_run_other_ud_reaches_the_guest", Any, |_| {
            with_svm(other_ud)
        }),
        ("ud_run_vmcall_patched_or_ud_by_quirk", Any, |_| {
            with_svm(vmcall_fix)
        }),
    ]
}

fn with_svm(f: fn() -> Result<(), String>) -> Result<(), String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("svm") && has("npt") {
        f()
    } else {
        Err("cannot run guests: no SVM with nested paging".into())
    }
}

/// `struct kvm_cpuid2` with room for `n` entries, the padding of each set to `pad`.
fn cpuid_buf(n: u32, pad: u32) -> Vec<u32> {
    let mut b = vec![0u32; 2 + 10 * n as usize];
    b[0] = n;
    for i in 0..n as usize {
        b[2 + 10 * i + 7] = pad;
    }
    b
}

fn emulated_cpuid_abi() -> Result<(), String> {
    let kvm = dev();
    let fd = kvm.as_raw_fd();
    let get = |b: &mut Vec<u32>| ioctl(fd, KVM_GET_EMULATED_CPUID, b.as_mut_ptr() as u64);
    // Upstream walks every leaf up to the last entry's EAX and checks for a free slot before
    // each: 3 entries, but a 4-entry buffer is the smallest that works.
    for n in [1, 2, 3] {
        let mut b = cpuid_buf(n, 0);
        eq(get(&mut b), Err(libc::E2BIG), &format!("nent {n}"))?;
        eq(b[0], n, "nent untouched on E2BIG")?;
    }
    let mut b = cpuid_buf(0, 0);
    eq(get(&mut b), Err(libc::E2BIG), "nent 0")?;
    let mut b = cpuid_buf(4, 0);
    eq(get(&mut b), Ok(0), "nent 4")?;
    eq(b[0], 3, "three entries")?;
    let e = |i: usize| &b[2 + 10 * i..2 + 10 * i + 7];
    eq(e(0), &[0, 0, 0, 7, 0, 0, 0][..], "leaf 0: EAX 7")?;
    eq(e(1), &[1, 0, 0, 0, 0, 1 << 22, 0][..], "leaf 1: MOVBE")?;
    // RDPID only when the module supports RDTSCP (the test CPU has it).
    eq(
        e(2),
        &[7, 0, 1, 0, 0, 1 << 22, 0][..],
        "leaf 7.0: RDPID, indexed",
    )?;
    // Dirty padding in any entry the caller passed: EINVAL.
    let mut b = cpuid_buf(8, 0);
    b[2 + 10 * 7 + 9] = 1;
    eq(get(&mut b), Err(libc::EINVAL), "padding not zero")?;
    // kvm-ioctls' own call (KVM_MAX_CPUID_ENTRIES).
    let c = Kvm::new()
        .map_err(|e| format!("open: {e}"))?
        .get_emulated_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_EMULATED_CPUID: {e}"))?;
    eq(c.as_slice().len(), 3, "entries through kvm-ioctls")
}

fn enable_cap(vm: &kvm_ioctls::VmFd, cap: u32, arg: u64) -> Result<(), i32> {
    let mut c = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    c.args[0] = arg;
    vm.enable_cap(&c).map_err(|e| e.errno())
}

fn disable_quirks_caps() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("open: {e}"))?;
    let fd = kvm.as_raw_fd();
    eq(
        ioctl(fd, 0xae03, u64::from(KVM_CAP_DISABLE_QUIRKS2)),
        // HOOK(cpu11): MWAIT_NEVER_UD_FAULTS and MISC_ENABLE_NO_MWAIT are offered too.
        Ok((QUIRK_FIX_HYPERCALL_INSN | QUIRK_MWAIT_NEVER_UD_FAULTS | 1 << 4) as i64),
        "DISABLE_QUIRKS2: only the quirks both of whose behaviours exist",
    )?;
    eq(
        ioctl(fd, 0xae03, u64::from(KVM_CAP_DISABLE_QUIRKS)),
        Ok(1),
        "DISABLE_QUIRKS",
    )?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    eq(
        enable_cap(&vm, KVM_CAP_DISABLE_QUIRKS2, 1), // HOOK(cpu11): LINT0_REENABLED
        Err(libc::EINVAL),
        "QUIRKS2 with an unsupported quirk",
    )?;
    eq(
        enable_cap(&vm, KVM_CAP_DISABLE_QUIRKS2, u64::MAX),
        Err(libc::EINVAL),
        "QUIRKS2 with every bit",
    )?;
    eq(
        enable_cap(&vm, KVM_CAP_DISABLE_QUIRKS, u64::MAX),
        Ok(()),
        "DISABLE_QUIRKS ignores what it does not know",
    )?;
    eq(
        enable_cap(&vm, KVM_CAP_DISABLE_QUIRKS2, QUIRK_FIX_HYPERCALL_INSN),
        Ok(()),
        "QUIRKS2 FIX_HYPERCALL_INSN",
    )?;
    let mut c = kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        flags: 1,
        ..Default::default()
    };
    c.args[0] = QUIRK_FIX_HYPERCALL_INSN;
    eq(
        vm.enable_cap(&c).map_err(|e| e.errno()),
        Err(libc::EINVAL),
        "flags",
    )
}

/// IVT[6] -> 0000:0600: `out 0x99, 6; hlt`.
fn install_ud_handler(g: &Guest) {
    g.ram.write(6 * 4, &[0x00, 0x06, 0x00, 0x00]);
    g.ram.write(0x600, &[0xb0, 0x06, 0xe6, 0x99, 0xf4]);
}

fn run(v: &mut VcpuFd, n: u32) -> Result<VcpuExit<'_>, String> {
    v.run().map_err(|e| format!("run {n}: {e}"))
}

fn expect_ud(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match run(v, n)? {
        VcpuExit::IoOut(0x99, d) => eq(d, &[6][..], "the guest's #UD handler ran"),
        e => Err(format!("run {n}: {e:?}, want the #UD handler's OUT")),
    }
}

fn expect_hlt(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match run(v, n)? {
        VcpuExit::Hlt => Ok(()),
        e => Err(format!("run {n}: {e:?}, want HLT")),
    }
}

/// The supported CPUID with `bit` of leaf `leaf`.0 `reg` (2 = ECX) set or cleared.
fn cpuid_with(leaf: u32, bit: u32, on: bool) -> Result<CpuId, String> {
    let mut c = Kvm::new()
        .map_err(|e| format!("open: {e}"))?
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let e = c
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == leaf && e.index == 0)
        .ok_or(format!("no leaf {leaf:#x}"))?;
    if on {
        e.ecx |= 1 << bit;
    } else {
        e.ecx &= !(1 << bit);
    }
    Ok(c)
}

fn word(g: &Guest, a: usize) -> u32 {
    u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)))
}

/// mov sp, 0x7000; rdpid eax; mov [0x100], eax; hlt.
const RDPID_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000 (the #UD's frame goes to RAM)
    0xf3, 0x0f, 0xc7, 0xf8, // rdpid eax (32-bit destination in 16-bit code)
    0x66, 0xa3, 0x00, 0x01, // mov [0x100], eax
    0xf4, // hlt
];

fn rdpid() -> Result<(), String> {
    for on in [true, false] {
        let g = Guest::new(RDPID_GUEST, 0x8000)?;
        install_ud_handler(&g);
        let mut v = g.vcpu(0)?;
        v.set_cpuid2(&cpuid_with(7, 22, on)?)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_TSC_AUX,
            data: 0x1234_5678,
            ..Default::default()
        }])
        .map_err(|e| format!("{e:?}"))?;
        eq(
            v.set_msrs(&msrs).map_err(|e| e.to_string()),
            Ok(1),
            "TSC_AUX",
        )?;
        g.ram.write(0x100, &[0xee; 4]);
        if on {
            expect_hlt(&mut v, 1)?;
            eq(word(&g, 0x100), 0x1234_5678, "RDPID = TSC_AUX")?;
        } else {
            expect_ud(&mut v, 1)?;
            eq(word(&g, 0x100), 0xeeee_eeee, "nothing stored after the #UD")?;
        }
    }
    Ok(())
}

/// SP = 0x7000; DS = 0xe000 (base 0xe0000: no memslot, so MMIO); movbe eax, [0x100]; mov es:[0x104], eax;
/// movbe [0x108], eax; hlt.
const MOVBE_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0xb8, 0x00, 0xe0, // mov ax, 0xe000
    0x8e, 0xd8, // mov ds, ax
    0x66, 0x0f, 0x38, 0xf0, 0x06, 0x00, 0x01, // movbe eax, [0x100]
    0x26, 0x66, 0xa3, 0x04, 0x01, // mov es:[0x104], eax
    0x66, 0x0f, 0x38, 0xf1, 0x06, 0x08, 0x01, // movbe [0x108], eax
    0xf4, // hlt
];

fn movbe_mmio() -> Result<(), String> {
    for on in [true, false] {
        let g = Guest::new(MOVBE_GUEST, 0x8000)?;
        install_ud_handler(&g);
        let mut v = g.vcpu(0)?;
        v.set_cpuid2(&cpuid_with(1, 22, on)?)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        if !on {
            // Upstream's em_movbe: #UD without the CPUID bit, before any MMIO exit.
            expect_ud(&mut v, 1)?;
            continue;
        }
        match run(&mut v, 1)? {
            VcpuExit::MmioRead(0xe0100, d) => {
                eq(d.len(), 4, "MMIO read length")?;
                d.copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
            }
            e => return Err(format!("run 1: {e:?}, want the MMIO read")),
        }
        match run(&mut v, 2)? {
            // The value read back reversed again: the bytes MMIO gave, in order.
            VcpuExit::MmioWrite(0xe0108, d) => eq(d, &[0x11, 0x22, 0x33, 0x44][..], "MOVBE store")?,
            e => return Err(format!("run 2: {e:?}, want the MMIO write")),
        }
        expect_hlt(&mut v, 3)?;
        eq(word(&g, 0x104), 0x1122_3344, "MOVBE load: bytes reversed")?;
    }
    Ok(())
}

/// Instructions that #UD on hardware and that KVM does not emulate: ud2, ud0 (0f ff /r),
/// lock nop, an SSE instruction with CR4.OSFXSR clear.
fn other_ud() -> Result<(), String> {
    for code in [
        &[0x0f, 0x0b][..],
        &[0x0f, 0xff, 0xc0],
        &[0xf0, 0x90],
        &[0x0f, 0x28, 0xc1],
    ] {
        let mut c = vec![0xbc, 0x00, 0x70]; // mov sp, 0x7000
        c.extend_from_slice(code);
        c.push(0xf4);
        let g = Guest::new(&c, 0x8000)?;
        install_ud_handler(&g);
        let mut v = g.vcpu(0)?;
        expect_ud(&mut v, 1).map_err(|e| format!("{code:02x?}: {e}"))?;
    }
    Ok(())
}

/// At 0000:1000 (CS.base 0: upstream patches at RIP taken as a linear address):
/// mov eax, 0x55 (no such hypercall); vmcall; mov [0x100], eax; hlt.
const VMCALL_GUEST: &[u8] = &[
    0x66, 0xb8, 0x55, 0x00, 0x00, 0x00, // mov eax, 0x55
    0x0f, 0x01, 0xc1, // vmcall
    0x66, 0xa3, 0x00, 0x01, // mov [0x100], eax
    0xf4, // hlt
];

fn vmcall_fix() -> Result<(), String> {
    for quirk in [true, false] {
        let g = Guest::new(&[0xf4], 0x8000)?;
        install_ud_handler(&g);
        g.ram.write(0x1000, VMCALL_GUEST);
        if !quirk {
            eq(
                enable_cap(&g.vm, KVM_CAP_DISABLE_QUIRKS2, QUIRK_FIX_HYPERCALL_INSN),
                Ok(()),
                "disable FIX_HYPERCALL_INSN",
            )?;
        }
        let mut v = g.vcpu(0)?;
        let mut s = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        s.cs.base = 0;
        s.cs.selector = 0;
        v.set_sregs(&s).map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        r.rip = 0x1000;
        r.rsp = 0x7000;
        v.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        let insn: Vec<u8> = (0x1006..0x1009).map(|a| g.ram.read(a)).collect();
        eq(insn, vec![0x0f, 0x01, 0xc1], "VMCALL before the run")?;
        if quirk {
            expect_hlt(&mut v, 1)?;
            let insn: Vec<u8> = (0x1006..0x1009).map(|a| g.ram.read(a)).collect();
            eq(insn, vec![0x0f, 0x01, 0xd9], "patched to VMMCALL")?;
            eq(
                word(&g, 0x100),
                (-1000i32) as u32,
                "the hypercall ran: -KVM_ENOSYS",
            )?;
        } else {
            expect_ud(&mut v, 1)?;
            let insn: Vec<u8> = (0x1006..0x1009).map(|a| g.ram.read(a)).collect();
            eq(
                insn,
                vec![0x0f, 0x01, 0xc1],
                "not patched without the quirk",
            )?;
            let r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
            eq(
                r.rax & 0xffff_ffff,
                0x06,
                "#UD handler's AL, no hypercall result",
            )?;
        }
    }
    Ok(())
}
