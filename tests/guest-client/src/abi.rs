// SPDX-License-Identifier: GPL-2.0-only
//! Helper `abi` (issues 11/12): `KVM_CAP_MSR_PLATFORM_INFO`, `MSR_MISC_FEATURES_ENABLES` CPUID
//! faulting, IA32_TSC_DEADLINE in the MSR index list, and the kvm_amd companion's parameters.

use crate::run::{long_mode_guest, with_svm};
use crate::*;
use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};

const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_CHECK_EXTENSION: u64 = 0xae03;
const KVM_CAP_MSR_PLATFORM_INFO: u64 = 159;
const MSR_PLATFORM_INFO: u32 = 0xce;
const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("abi_platform_info_cap_and_host_msrs", Any, |_| {
            platform_info_host()
        }),
        ("abi_cpuid_faulting_at_cpl3_is_gp", Any, |_| {
            with_svm(cpuid_faulting)
        }),
        ("abi_kvm_amd_parameters", Any, |_| kvm_amd_parameters()),
        ("abi_guest_debug_blockirq_holds_nmi", Any, |_| {
            with_svm(blockirq_holds_nmi)
        }),
    ]
}

fn enable_cap(vm: &kvm_ioctls::VmFd, cap: u64, arg0: u64) -> Result<i64, i32> {
    let mut c = [0u8; 104];
    c[0..4].copy_from_slice(&(cap as u32).to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP, c.as_ptr() as u64)
}

/// `KVM_GET_MSRS` of one MSR: None if the entry failed.
fn get_msr(v: &VcpuFd, index: u32) -> Result<Option<u64>, String> {
    let mut m = Msrs::from_entries(&[kvm_msr_entry {
        index,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    let n = v.get_msrs(&mut m).map_err(|e| e.to_string())?;
    Ok((n == 1).then(|| m.as_slice()[0].data))
}

/// `KVM_SET_MSRS` of one MSR: whether the entry was accepted.
fn set_msr(v: &VcpuFd, index: u32, data: u64) -> Result<bool, String> {
    let m = Msrs::from_entries(&[kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    Ok(v.set_msrs(&m).map_err(|e| e.to_string())? == 1)
}

/// The capability, the MSRs in the index list, upstream's reset value and host rules.
fn platform_info_host() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        ioctl(
            kvm.as_raw_fd(),
            KVM_CHECK_EXTENSION,
            KVM_CAP_MSR_PLATFORM_INFO,
        ),
        Ok(1),
        "KVM_CHECK_EXTENSION(KVM_CAP_MSR_PLATFORM_INFO)",
    )?;
    let list = kvm
        .get_msr_index_list()
        .map_err(|e| format!("KVM_GET_MSR_INDEX_LIST: {e}"))?;
    for m in [
        MSR_PLATFORM_INFO,
        MSR_MISC_FEATURES_ENABLES,
        MSR_IA32_TSC_DEADLINE,
    ] {
        eq(
            list.as_slice().contains(&m),
            true,
            &format!("{m:#x} listed"),
        )?;
    }
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let v = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    eq(
        get_msr(&v, MSR_PLATFORM_INFO)?,
        Some(PLATFORM_INFO_CPUID_FAULT),
        "PLATFORM_INFO at reset",
    )?;
    eq(
        get_msr(&v, MSR_MISC_FEATURES_ENABLES)?,
        Some(0),
        "MISC_FEATURES_ENABLES",
    )?;
    eq(get_msr(&v, MSR_IA32_TSC_DEADLINE)?, Some(0), "TSC_DEADLINE")?;
    eq(
        set_msr(&v, MSR_IA32_TSC_DEADLINE, 0)?,
        true,
        "TSC_DEADLINE := 0",
    )?;
    // Off for the guest: the host still reads and writes it.
    eq(
        enable_cap(&vm, KVM_CAP_MSR_PLATFORM_INFO, 0),
        Ok(0),
        "ENABLE_CAP 0",
    )?;
    let v2 = PLATFORM_INFO_CPUID_FAULT | 0xff00;
    eq(
        set_msr(&v, MSR_PLATFORM_INFO, v2)?,
        true,
        "PLATFORM_INFO := turbo",
    )?;
    eq(
        get_msr(&v, MSR_PLATFORM_INFO)?,
        Some(v2),
        "PLATFORM_INFO read back",
    )?;
    eq(
        enable_cap(&vm, KVM_CAP_MSR_PLATFORM_INFO, 1),
        Ok(0),
        "ENABLE_CAP 1",
    )?;
    // CPUID faulting: bit 0 only; PLATFORM_INFO cannot withdraw it while it is on.
    eq(
        set_msr(&v, MSR_MISC_FEATURES_ENABLES, 2)?,
        false,
        "MISC_FEATURES := 2",
    )?;
    eq(
        set_msr(&v, MSR_MISC_FEATURES_ENABLES, 1)?,
        true,
        "MISC_FEATURES := 1",
    )?;
    eq(
        set_msr(&v, MSR_PLATFORM_INFO, 0)?,
        false,
        "PLATFORM_INFO := 0 while faulting",
    )?;
    eq(
        set_msr(&v, MSR_MISC_FEATURES_ENABLES, 0)?,
        true,
        "MISC_FEATURES := 0",
    )?;
    eq(
        set_msr(&v, MSR_PLATFORM_INFO, 0)?,
        true,
        "PLATFORM_INFO := 0",
    )?;
    eq(
        set_msr(&v, MSR_MISC_FEATURES_ENABLES, 1)?,
        false,
        "MISC_FEATURES := 1 without PLATFORM_INFO's bit",
    )
}

/// CPL 3 code: `xor eax, eax; cpuid; out 0x80, al; jmp $`.
const USER_CODE: &[u8] = &[0x31, 0xc0, 0x0f, 0xa2, 0xe6, 0x80, 0xeb, 0xfe];
/// The #GP handler (CPL 0): `mov dx, 0x81; pop rax; out dx, eax; hlt` (the error code).
const GP_HANDLER: &[u8] = &[0x66, 0xba, 0x81, 0x00, 0x58, 0xef, 0xf4];
const GDT: u64 = 0x5000;
const TSS: u64 = 0x6000;
const IDT: u64 = 0x7000;
const HANDLER: u64 = 0x11000;
const RSP0: u64 = 0x9_0000;

/// A 64-bit guest at CPL 3 (user pages, IOPL 3) with a #GP gate to a CPL-0 handler.
fn user_guest() -> Result<(crate::run::Guest, VcpuFd), String> {
    let (g, v) = long_mode_guest(USER_CODE)?;
    // Page tables with the user bit.
    g.ram.write(0x1000, &(0x2000u64 | 7).to_le_bytes());
    g.ram.write(0x2000, &(0x3000u64 | 7).to_le_bytes());
    g.ram.write(0x3000, &0x87u64.to_le_bytes());
    let gdt: [u64; 7] = [
        0,
        0x0020_9a00_0000_0000,                           // 0x08: kernel code64
        0x00cf_9200_0000_ffff,                           // 0x10: kernel data
        0x00cf_f200_0000_ffff,                           // 0x18: user data
        0x0020_fa00_0000_0000,                           // 0x20: user code64
        0x0000_8b00_0000_0067 | (TSS & 0xff_ffff) << 16, // 0x28: busy TSS
        0,
    ];
    for (i, d) in gdt.iter().enumerate() {
        g.ram.write(GDT as usize + i * 8, &d.to_le_bytes());
    }
    g.ram.write(TSS as usize + 4, &RSP0.to_le_bytes());
    let gate_lo = (HANDLER & 0xffff) | 8 << 16 | 0x8e << 40 | (HANDLER >> 16 & 0xffff) << 48;
    g.ram.write(IDT as usize + 13 * 16, &gate_lo.to_le_bytes());
    g.ram.write(IDT as usize + 13 * 16 + 8, &0u64.to_le_bytes());
    g.ram.write(HANDLER as usize, GP_HANDLER);
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sr.gdt.base = GDT;
    sr.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sr.idt.base = IDT;
    sr.idt.limit = 0xfff;
    sr.cs.selector = 0x23;
    sr.cs.dpl = 3;
    for s in [&mut sr.ss, &mut sr.ds, &mut sr.es] {
        s.selector = 0x1b;
        s.dpl = 3;
    }
    sr.tr = kvm_bindings::kvm_segment {
        base: TSS,
        limit: 0x67,
        selector: 0x28,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    r.rflags = 0x3002; // IOPL 3: OUT works at CPL 3.
    v.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok((g, v))
}

/// CPUID at CPL 3 runs while faulting is off, and is #GP(0) at the CPUID once the vCPU's
/// MSR_MISC_FEATURES_ENABLES turns it on (upstream kvm_emulate_cpuid).
fn cpuid_faulting() -> Result<(), String> {
    let (g, mut v) = user_guest()?;
    match v.run().map_err(|e| format!("run 1: {e}"))? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("run 1 (faulting off): {e:?}")),
    }
    let (g2, mut v2) = user_guest()?;
    drop(g);
    eq(
        set_msr(&v2, MSR_MISC_FEATURES_ENABLES, 1)?,
        true,
        "MISC_FEATURES := 1",
    )?;
    match v2.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::IoOut(0x81, d) => {
            let code = u32::from_le_bytes(d.try_into().map_err(|_| "4-byte OUT")?);
            eq(code, 0, "#GP error code")?;
        }
        e => return Err(format!("run 2 (faulting on): {e:?}")),
    }
    // The frame: RIP of the CPUID (0x10002) and the user CS.
    let q = |off: u64| {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = g2.ram.read(off as usize + i);
        }
        u64::from_le_bytes(b)
    };
    eq(q(RSP0 - 40), 0x10002, "faulting RIP")?;
    eq(q(RSP0 - 32), 0x23, "faulting CS")
}

/// /sys/module/kvm_amd/parameters/: upstream's names and formats, what the backend uses.
fn kvm_amd_parameters() -> Result<(), String> {
    let dir = "/sys/module/kvm_amd/parameters";
    let want = [
        ("avic", "N"),
        ("npt", "Y"),
        ("nested", "0"),
        ("nrips", "0"),
        ("vgif", "0"),
        ("tsc_scaling", "0"),
        ("vnmi", "N"),
        ("sev", "N"),
        ("sev_es", "N"),
        ("sev_snp", "N"),
        ("intercept_smi", "Y"),
    ];
    for (name, v) in want {
        let path = format!("{dir}/{name}");
        let got = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        eq(got.as_str(), &*format!("{v}\n"), &path)?;
    }
    // Read-only: the write is refused by the file mode.
    let w = std::fs::write(format!("{dir}/avic"), "Y");
    eq(w.is_err(), true, "writing avic fails")
}

const KVM_NMI: u64 = 0xae9a;
const GUESTDBG_ENABLE: u32 = 1;
const GUESTDBG_BLOCKIRQ: u32 = 0x10_0000;
const KVM_CAP_SET_GUEST_DEBUG2: u64 = 195;

fn set_debug(v: &VcpuFd, control: u32) -> Result<(), String> {
    let d = kvm_bindings::kvm_guest_debug {
        control,
        ..Default::default()
    };
    v.set_guest_debug(&d)
        .map_err(|e| format!("KVM_SET_GUEST_DEBUG {control:#x}: {e}"))
}

/// Real mode at f000:0000: `out 0x80, al; out 0x81, al; hlt` (64 KiB of RAM at 0 hold the IVT
/// and the stack the NMI frame goes on: SS:SP 0:0 wraps to 0xfffe).
const NMI_GUEST: &[u8] = &[0xe6, 0x80, 0xe6, 0x81, 0xf4];

/// `KVM_GUESTDBG_BLOCKIRQ` holds a pending NMI back (upstream kvm_check_and_inject_events
/// returns before NMIs and interrupts); once it is cleared the NMI is delivered.
fn blockirq_holds_nmi() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let mask = ioctl(
        kvm.as_raw_fd(),
        KVM_CHECK_EXTENSION,
        KVM_CAP_SET_GUEST_DEBUG2,
    );
    eq(
        mask.map(|m| m as u32 & GUESTDBG_BLOCKIRQ != 0),
        Ok(true),
        "KVM_CAP_SET_GUEST_DEBUG2 has BLOCKIRQ",
    )?;
    let g = crate::run::Guest::new(NMI_GUEST, 0x10000)?;
    // IVT[2] = 0000:0500, the NMI handler: out 0x82, al; hlt.
    g.ram.write(2 * 4, &[0x00, 0x05, 0x00, 0x00]);
    g.ram.write(0x500, &[0xe6, 0x82, 0xf4]);
    {
        // Without BLOCKIRQ the NMI is taken at once.
        let g0 = crate::run::Guest::new(NMI_GUEST, 0x10000)?;
        g0.ram.write(2 * 4, &[0x00, 0x05, 0x00, 0x00]);
        g0.ram.write(0x500, &[0xe6, 0x82, 0xf4]);
        let mut v0 = g0.vcpu(0)?;
        eq(ioctl(v0.as_raw_fd(), KVM_NMI, 0), Ok(0), "KVM_NMI")?;
        nmi_handler_runs(&mut v0, "without guest debugging")?;
    }
    let mut v = g.vcpu(0)?;
    set_debug(&v, GUESTDBG_ENABLE | GUESTDBG_BLOCKIRQ)?;
    eq(ioctl(v.as_raw_fd(), KVM_NMI, 0), Ok(0), "KVM_NMI")?;
    for port in [0x80, 0x81] {
        match v.run().map_err(|e| format!("run: {e}"))? {
            VcpuExit::IoOut(p, _) if p == port => {}
            e => return Err(format!("with BLOCKIRQ, want OUT {port:#x}: {e:?}")),
        }
    }
    set_debug(&v, 0)?;
    nmi_handler_runs(&mut v, "after BLOCKIRQ is cleared")
}

/// The next run ends in the NMI handler's `OUT 0x82`.
fn nmi_handler_runs(v: &mut VcpuFd, when: &str) -> Result<(), String> {
    let e = format!("{:?}", v.run().map_err(|e| format!("run: {e}"))?);
    if e.starts_with("IoOut(130,") {
        return Ok(());
    }
    // SAFETY: the exit was KVM_EXIT_INTERNAL_ERROR or another union member; only read.
    let i = unsafe { v.get_kvm_run().__bindgen_anon_1.internal };
    let r = v.get_regs().map(|r| r.rip).unwrap_or_default();
    Err(format!(
        "{when}: want the NMI handler's OUT 0x82: {e} suberror {} data {:x?} rip {r:#x}",
        i.suberror,
        &i.data[..i.ndata.min(16) as usize]
    ))
}
