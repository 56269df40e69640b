// SPDX-License-Identifier: GPL-2.0-only
//! CR8 (the task priority) as upstream kvm_amd handles it: with an in-kernel LAPIC a guest that
//! lowers its TPR with `MOV CR8` below an interrupt it held back takes that interrupt right
//! after the instruction (the write is intercepted while one waits: `update_cr8_intercept`);
//! an intercepted write with a reserved bit is #GP(0); without an in-kernel LAPIC a CR8 write that lowers it ends
//! `KVM_RUN` with `KVM_EXIT_SET_TPR` (`cr8_write_interception`), and `kvm_run.cr8` is the
//! guest's CR8 both ways.
//!
//! Also the vCPU stats of halting and event injection (upstream names): a halted vCPU woken by
//! an MSI counts `halt_exits`, `halt_wakeup`, `irq_injections`; with a userspace irqchip an
//! interrupt window counts `irq_window_exits` and `request_irq_exits`, `KVM_INTERRUPT`
//! `irq_injections`, `KVM_NMI` `nmi_injections` and the handler's IRET `nmi_window_exits`, every
//! port-I/O exit `io_exits`.
//!
//! And INS / REP INS from the in-kernel devices' ports (PIC, ELCR, PIT, speaker) run in the
//! kernel, in batches as upstream's emulator reads ahead, while an access outside a device's
//! bus range (a word at 0x21) still exits to userspace.

use crate::run::with_svm;
use crate::{check, eq, Any, Test};
use kvm_ioctls::VcpuExit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `KVM_EXIT_SET_TPR`.
const KVM_EXIT_SET_TPR: u32 = 11;

/// Runs to the next exit; `Ok(Some(port))` for an OUT, `Ok(None)` for anything else.
fn run_to_out(v: &mut kvm_ioctls::VcpuFd) -> Result<Option<u16>, String> {
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(port, _) => Ok(Some(port)),
        _ => Ok(None),
    }
}

fn rip(v: &kvm_ioctls::VcpuFd) -> u64 {
    v.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// In-kernel LAPIC: vector 0x41 (class 4) self-IPI'd under CR8 15 waits through CR8 4 and is
/// taken right after `MOV CR8` 3; vector 0x42 sent by KVM_SIGNAL_MSI while the guest is in
/// userspace waits under CR8 15, through a `MOV CR8` of 0x10 that is #GP(0) and leaves CR8
/// alone, and is taken right after `MOV CR8, r9` (r9 = 0). (The #GP is checked only while the
/// write is intercepted: QEMU's TCG lets a guest write V_TPR with reserved bits set, and the
/// CPU, not KVM, checks them when the write is not intercepted.)
fn lowering_tpr_delivers_at_once() -> Result<(), String> {
    let (g, mut v) = crate::irqchip::interrupt_guest()?;
    #[rustfmt::skip]
    let main: &[u8] = &[
        0x0f, 0x01, 0x1c, 0x25, 0x00, 0x5f, 0x00, 0x00, // lidt [0x5f00]
        0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1, // mask both PICs
        0xbb, 0x00, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee00000
        0xc7, 0x83, 0xf0, 0x00, 0x00, 0x00, 0xff, 0x01, 0x00, 0x00, // SVR = 0x1ff
        0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax
        0xfb, // sti
        0xc7, 0x83, 0x00, 0x03, 0x00, 0x00, 0x41, 0x00, 0x04, 0x00, // ICR: self, fixed, 0x41
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], al
        0xb8, 0x04, 0x00, 0x00, 0x00, // mov eax, 4
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax (class 4 still held back)
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x01, 0x50, 0x00, 0x00, // mov [0x5001], al
        0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax (0x41 taken here)
        0x8a, 0x04, 0x25, 0x01, 0x60, 0x00, 0x00, // mov al, [0x6001]
        0x88, 0x04, 0x25, 0x02, 0x50, 0x00, 0x00, // mov [0x5002], al
        0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax
        0xe6, 0x80, // out 0x80, al (userspace sends MSI 0x42)
        0x8a, 0x04, 0x25, 0x02, 0x60, 0x00, 0x00, // mov al, [0x6002]
        0x88, 0x04, 0x25, 0x03, 0x50, 0x00, 0x00, // mov [0x5003], al
        0x44, 0x0f, 0x20, 0xc0, // mov rax, cr8
        0x88, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], al
        0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax: #GP(0) (intercepted while 0x42 waits)
        0x44, 0x0f, 0x20, 0xc0, // mov rax, cr8
        0x88, 0x04, 0x25, 0x11, 0x50, 0x00, 0x00, // mov [0x5011], al
        0x45, 0x31, 0xc9, // xor r9d, r9d
        0x45, 0x0f, 0x22, 0xc1, // mov cr8, r9 (0x42 taken here)
        0x8a, 0x04, 0x25, 0x02, 0x60, 0x00, 0x00, // mov al, [0x6002]
        0x88, 0x04, 0x25, 0x05, 0x50, 0x00, 0x00, // mov [0x5005], al
        0xe6, 0x82, 0xf4, // out 0x82, al; hlt
    ];
    g.ram.write(0x10000, main);
    // #GP handler at 0x9800: [0x5010] = the error code, [0x5012] += 1, skip the 4-byte
    // MOV CR8, iretq.
    #[rustfmt::skip]
    let gp: &[u8] = &[
        0x58, // pop rax (error code)
        0x88, 0x04, 0x25, 0x10, 0x50, 0x00, 0x00, // mov [0x5010], al
        0xfe, 0x04, 0x25, 0x12, 0x50, 0x00, 0x00, // inc byte [0x5012]
        0x48, 0x83, 0x04, 0x24, 0x04, // add qword [rsp], 4
        0x48, 0xcf, // iretq
    ];
    g.ram.write(0x9800, gp);
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&0x9800u16.to_le_bytes());
    gate[2..4].copy_from_slice(&8u16.to_le_bytes());
    gate[5] = 0x8e;
    g.ram.write(0x7000 + 13 * 16, &gate);
    g.ram.write(0x5010, &[0xff, 0xff]);

    let port = run_to_out(&mut v)?;
    eq(
        port,
        Some(0x80),
        &format!("first exit (rip {:#x})", rip(&v)),
    )?;
    eq(g.ram.read(0x5000), 0, "0x41 held back under CR8 15")?;
    eq(g.ram.read(0x5001), 0, "0x41 held back under CR8 4")?;
    eq(
        g.ram.read(0x5002),
        1,
        "0x41 taken right after MOV CR8 lowered the TPR to 3",
    )?;
    let msi = kvm_bindings::kvm_msi {
        address_lo: 0xfee0_0000,
        data: 0x42,
        ..Default::default()
    };
    eq(
        g.vm.signal_msi(msi).map_err(|e| e.to_string()),
        Ok(1),
        "KVM_SIGNAL_MSI",
    )?;
    let port = run_to_out(&mut v)?;
    eq(
        port,
        Some(0x82),
        &format!("second exit (rip {:#x})", rip(&v)),
    )?;
    eq(g.ram.read(0x5003), 0, "MSI 0x42 held back under CR8 15")?;
    eq(g.ram.read(0x5004), 15, "MOV r, CR8 reads the TPR class")?;
    eq(
        g.ram.read(0x5005),
        1,
        "0x42 taken right after MOV CR8, r9 lowered the TPR to 0",
    )?;
    eq(g.ram.read(0x5010), 0, "#GP error code for CR8 0x10")?;
    eq(g.ram.read(0x5011), 15, "CR8 unchanged by the refused write")?;
    eq(g.ram.read(0x5012), 1, "one #GP")?;
    eq(g.ram.read(0x6000), 0, "vector 0x40 never sent")?;
    eq(g.ram.read(0x6001), 1, "vector 0x41 once")?;
    eq(g.ram.read(0x6002), 1, "vector 0x42 once")?;
    let lapic = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    eq(lapic.regs[0x80] as u8, 0, "LAPIC TPR")?;
    let sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(sr.cr8, 0, "SREGS cr8")?;
    Ok(())
}

/// No in-kernel LAPIC: raising CR8 does not exit, lowering it is `KVM_EXIT_SET_TPR` after the
/// instruction with `kvm_run.cr8` the new value; `kvm_run.cr8` set by userspace before
/// `KVM_RUN` is what the guest reads.
fn userspace_lapic_set_tpr_exit() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb8, 0x05, 0x00, 0x00, 0x00, // 10000: mov eax, 5
        0x44, 0x0f, 0x22, 0xc0, // 10005: mov cr8, rax (raise: no exit)
        0xb8, 0x02, 0x00, 0x00, 0x00, // 10009: mov eax, 2
        0x44, 0x0f, 0x22, 0xc0, // 1000e: mov cr8, rax (lower: KVM_EXIT_SET_TPR)
        0x44, 0x0f, 0x20, 0xc0, // 10012: mov rax, cr8
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // 10016: mov [0x5000], al
        0x44, 0x0f, 0x22, 0xc0, // 1001d: mov cr8, rax (same value: no exit)
        0xb8, 0x01, 0x00, 0x00, 0x00, // 10021: mov eax, 1
        0x44, 0x0f, 0x22, 0xc0, // 10026: mov cr8, rax (lower: exit)
        0xe6, 0x80, // 1002a: out 0x80, al
        0xf4,
    ];
    let (g, mut v) = crate::run::long_mode_guest(code)?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        KVM_EXIT_SET_TPR,
        &format!("exit reason at rip {:#x}", rip(&v)),
    )?;
    eq(rip(&v), 0x10012, "RIP after the MOV CR8")?;
    eq(v.get_kvm_run().cr8, 2, "kvm_run.cr8")?;
    // Userspace's LAPIC changed the TPR: the guest reads it.
    v.get_kvm_run().cr8 = 9;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        KVM_EXIT_SET_TPR,
        &format!("second exit reason at rip {:#x}", rip(&v)),
    )?;
    eq(rip(&v), 0x1002a, "RIP after the second lowering")?;
    eq(g.ram.read(0x5000), 9, "CR8 read after kvm_run.cr8 = 9")?;
    eq(v.get_kvm_run().cr8, 1, "kvm_run.cr8 after the second")?;
    let port = run_to_out(&mut v)?;
    eq(port, Some(0x80), "then the OUT")?;
    let sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(sr.cr8, 1, "SREGS cr8")?;
    Ok(())
}

/// A vCPU statistic by name (a stats fd of a dup of the vCPU fd, opened for this read).
fn stat(v: &kvm_ioctls::VcpuFd, name: &str) -> Result<u64, String> {
    // SAFETY: dup of the vCPU fd, owned by the OwnedFd from now on.
    let raw = unsafe { libc::dup(v.as_raw_fd()) };
    check(raw >= 0, "dup")?;
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    crate::prefault::vm_stat(&fd, name)
}

/// The statistics checked here, in this order.
const NAMES: [&str; 9] = [
    "halt_exits",
    "halt_wakeup",
    "irq_injections",
    "nmi_injections",
    "irq_window_exits",
    "nmi_window_exits",
    "request_irq_exits",
    "io_exits",
    "exits",
];

fn snapshot(v: &kvm_ioctls::VcpuFd) -> Result<[u64; 9], String> {
    let mut out = [0u64; 9];
    for (o, n) in out.iter_mut().zip(NAMES) {
        *o = stat(v, n)?;
    }
    Ok(out)
}

/// `after - before` per statistic, by name.
fn delta(before: &[u64; 9], after: &[u64; 9], name: &str) -> u64 {
    let i = NAMES.iter().position(|n| *n == name).unwrap_or(0);
    after[i].wrapping_sub(before[i])
}

/// In-kernel irqchip: the guest halts with interrupts on; an MSI wakes it, its handler runs and
/// the guest's loop exits with `out 0x80`: one HLT, at least one wake-up and one injection,
/// one port-I/O exit.
fn halt_wakeup_and_injection_stats() -> Result<(), String> {
    let (g, v) = crate::irqchip::interrupt_guest()?;
    let before = snapshot(&v)?;
    let vm = &g.vm;
    let (v, why) = crate::irqchip::run_with(v, || {
        let msi = kvm_bindings::kvm_msi {
            address_lo: 0xfee0_0000,
            data: 0x41,
            ..Default::default()
        };
        eq(
            vm.signal_msi(msi).map_err(|e| e.to_string()),
            Ok(1),
            "KVM_SIGNAL_MSI",
        )
    })?;
    eq(why, 2, "exit after the MSI (KVM_EXIT_IO)")?;
    eq(g.ram.read(0x6001), 1, "vector 0x41 handled")?;
    let after = snapshot(&v)?;
    let d = |n| delta(&before, &after, n);
    eq(d("halt_exits"), 1, "halt_exits")?;
    check(
        d("halt_wakeup") >= 1,
        &format!("halt_wakeup {}", d("halt_wakeup")),
    )?;
    // An injection cut short (the first touch of the IDT or stack faults in the NPT) is
    // injected again, and counted again, as upstream.
    check(
        (1..=4).contains(&d("irq_injections")),
        &format!("irq_injections {}", d("irq_injections")),
    )?;
    // The guest's port writes (PIC masks) run in the kernel: still port-I/O exits.
    check(d("io_exits") >= 3, &format!("io_exits {}", d("io_exits")))?;
    eq(d("nmi_injections"), 0, "nmi_injections")?;
    eq(d("request_irq_exits"), 0, "request_irq_exits")?;
    check(d("exits") > d("io_exits"), "exits count the rest")?;
    Ok(())
}

/// `KVM_INTERRUPT`.
const KVM_INTERRUPT: u64 = 0x4004_ae86;

/// Userspace irqchip: `request_interrupt_window` while the guest runs with IF clear opens a
/// VINTR window at its `sti` (`irq_window_exits`), which ends `KVM_RUN` with
/// `KVM_EXIT_IRQ_WINDOW_OPEN` (`request_irq_exits`); `KVM_INTERRUPT` is injected
/// (`irq_injections`); `KVM_NMI` is injected (`nmi_injections`) and its handler's IRET is
/// intercepted (`nmi_window_exits`); the HLT exits to userspace (`halt_exits`).
fn userspace_irqchip_window_and_injection_stats() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0x0f, 0x01, 0x1c, 0x25, 0x00, 0x5f, 0x00, 0x00, // lidt [0x5f00]
        0xfa, // cli
        0xe6, 0x80, // out 0x80, al
        0x90, 0x90, // nop; nop
        0xfb, 0x90, 0x90, // sti; nop; nop (the window opens here)
        0xe6, 0x81, // out 0x81, al
        0xf4, // hlt
        0xe6, 0x82, // out 0x82, al
        0xf4, // hlt
    ];
    let (g, mut v) = crate::run::long_mode_guest(code)?;
    // GDT: null, 64-bit code 0x08, data 0x10 (IRETQ reloads CS and SS); IDT at 0x7000 with
    // vector 2 -> 0x9000 (inc byte [0x6001]) and 0x40 -> 0x9100 (inc byte [0x6000]).
    g.ram.write(0x500, &0u64.to_le_bytes());
    g.ram.write(0x508, &0x0020_9a00_0000_0000u64.to_le_bytes());
    g.ram.write(0x510, &0x0000_9200_0000_0000u64.to_le_bytes());
    g.ram.write(0x5f00, &0x0fffu16.to_le_bytes());
    g.ram.write(0x5f02, &0x7000u64.to_le_bytes());
    for (vec, h, counter) in [(2u64, 0x9000u16, 0x6001u32), (0x40, 0x9100, 0x6000)] {
        let code: Vec<u8> = [
            &[0xfe, 0x04, 0x25][..],
            &counter.to_le_bytes(),
            &[0x48, 0xcf], // iretq
        ]
        .concat();
        g.ram.write(usize::from(h), &code);
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&h.to_le_bytes());
        gate[2..4].copy_from_slice(&8u16.to_le_bytes());
        gate[5] = 0x8e;
        g.ram.write((0x7000 + vec * 16) as usize, &gate);
    }
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sr.gdt.base = 0x500;
    sr.gdt.limit = 0x17;
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let before = snapshot(&v)?;
    eq(run_to_out(&mut v)?, Some(0x80), "first exit")?;
    v.get_kvm_run().request_interrupt_window = 1;
    let open = matches!(
        v.run().map_err(|e| format!("KVM_RUN: {e}"))?,
        VcpuExit::IrqWindowOpen
    );
    if !open {
        let why = v.get_kvm_run().exit_reason;
        return Err(format!(
            "want KVM_EXIT_IRQ_WINDOW_OPEN, got exit {why} at {:#x}",
            rip(&v)
        ));
    }
    let mid = snapshot(&v)?;
    eq(
        delta(&before, &mid, "irq_window_exits"),
        1,
        "irq_window_exits",
    )?;
    eq(
        delta(&before, &mid, "request_irq_exits"),
        1,
        "request_irq_exits",
    )?;
    eq(
        delta(&before, &mid, "irq_injections"),
        0,
        "nothing injected yet",
    )?;
    v.get_kvm_run().request_interrupt_window = 0;
    let irq = 0x40u32;
    crate::ioctl(v.as_raw_fd(), KVM_INTERRUPT, &irq as *const u32 as u64)
        .map_err(|e| format!("KVM_INTERRUPT: {e}"))?;
    eq(run_to_out(&mut v)?, Some(0x81), "exit after the interrupt")?;
    eq(g.ram.read(0x6000), 1, "vector 0x40 handled")?;
    let hlt = matches!(v.run().map_err(|e| format!("KVM_RUN: {e}"))?, VcpuExit::Hlt);
    if !hlt {
        let why = v.get_kvm_run().exit_reason;
        return Err(format!("want KVM_EXIT_HLT, got exit {why}"));
    }
    v.nmi().map_err(|e| format!("KVM_NMI: {e}"))?;
    eq(run_to_out(&mut v)?, Some(0x82), "exit after the NMI")?;
    eq(g.ram.read(0x6001), 1, "NMI handled")?;
    let after = snapshot(&v)?;
    let d = |n| delta(&before, &after, n);
    check(
        (1..=4).contains(&d("irq_injections")),
        &format!("irq_injections {}", d("irq_injections")),
    )?;
    check(
        (1..=4).contains(&d("nmi_injections")),
        &format!("nmi_injections {}", d("nmi_injections")),
    )?;
    eq(
        d("nmi_window_exits"),
        1,
        "nmi_window_exits (the handler's IRET)",
    )?;
    eq(d("irq_window_exits"), 1, "irq_window_exits")?;
    eq(d("request_irq_exits"), 1, "request_irq_exits")?;
    eq(d("halt_exits"), 1, "halt_exits")?;
    eq(d("halt_wakeup"), 0, "halt_wakeup (no in-kernel halt)")?;
    eq(d("io_exits"), 3, "io_exits")?;
    Ok(())
}

/// `KVM_PIT_SPEAKER_DUMMY`.
const KVM_PIT_SPEAKER_DUMMY: u32 = 1;

/// INS from in-kernel ports: no exit until the word read at 0x21 (outside the master PIC's
/// 2-port range: userspace's), then the final OUT; the bytes land where the guest asked.
fn ins_from_in_kernel_ports() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb0, 0x11, 0xe6, 0x20, // ICW1
        0xb0, 0x30, 0xe6, 0x21, // ICW2: base 0x30
        0xb0, 0x04, 0xe6, 0x21, // ICW3
        0xb0, 0x01, 0xe6, 0x21, // ICW4
        0xb0, 0xa5, 0xe6, 0x21, // OCW1: IMR 0xa5
        0xfc, // cld
        // 1: rep insb from 0x21, 3 bytes to 0x5000.
        0x66, 0xba, 0x21, 0x00, // mov dx, 0x21
        0xbf, 0x00, 0x50, 0x00, 0x00, // mov edi, 0x5000
        0xb9, 0x03, 0x00, 0x00, 0x00, // mov ecx, 3
        0xf3, 0x6c, // rep insb
        0x89, 0x0c, 0x25, 0x00, 0x51, 0x00, 0x00, // mov [0x5100], ecx
        0x89, 0x3c, 0x25, 0x04, 0x51, 0x00, 0x00, // mov [0x5104], edi
        // 2: insb to 0x5010.
        0xbf, 0x10, 0x50, 0x00, 0x00, // mov edi, 0x5010
        0x6c, // insb
        // 3: the master ELCR, 2 bytes to 0x5020.
        0x66, 0xba, 0xd0, 0x04, // mov dx, 0x4d0
        0xb0, 0x28, 0xee, // mov al, 0x28; out dx, al
        0xbf, 0x20, 0x50, 0x00, 0x00, // mov edi, 0x5020
        0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
        0xf3, 0x6c, // rep insb
        // 4: backwards (DF=1) from 0x5033.
        0xfd, // std
        0x66, 0xba, 0x21, 0x00, // mov dx, 0x21
        0xbf, 0x33, 0x50, 0x00, 0x00, // mov edi, 0x5033
        0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
        0xf3, 0x6c, // rep insb
        0xfc, // cld
        0x89, 0x3c, 0x25, 0x08, 0x51, 0x00, 0x00, // mov [0x5108], edi
        // 5: 3000 bytes to 0x20000 (three read-ahead batches).
        0xbf, 0x00, 0x00, 0x02, 0x00, // mov edi, 0x20000
        0xb9, 0xb8, 0x0b, 0x00, 0x00, // mov ecx, 3000
        0xf3, 0x6c, // rep insb
        0x89, 0x3c, 0x25, 0x0c, 0x51, 0x00, 0x00, // mov [0x510c], edi
        // 6: a word at 0x20 (inside the master's range; the PIC reads wide accesses as 0).
        0x66, 0xba, 0x20, 0x00, // mov dx, 0x20
        0xbf, 0x40, 0x50, 0x00, 0x00, // mov edi, 0x5040
        0x66, 0x6d, // insw
        // 7: PIT channel 2 latched, 2 bytes to 0x5050.
        0xb0, 0xb0, 0xe6, 0x43, // ch2, lsb+msb, mode 0
        0xb0, 0x34, 0xe6, 0x42, // count low 0x34
        0xb0, 0x12, 0xe6, 0x42, // count high 0x12
        0xb0, 0x80, 0xe6, 0x43, // latch ch2
        0x66, 0xba, 0x42, 0x00, // mov dx, 0x42
        0xbf, 0x50, 0x50, 0x00, 0x00, // mov edi, 0x5050
        0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
        0xf3, 0x6c, // rep insb
        // 8: the speaker port.
        0x66, 0xba, 0x61, 0x00, // mov dx, 0x61
        0xbf, 0x60, 0x50, 0x00, 0x00, // mov edi, 0x5060
        0x6c, // insb
        // 9: a word at 0x21: no device's, userspace answers.
        0x66, 0xba, 0x21, 0x00, // mov dx, 0x21
        0xbf, 0x70, 0x50, 0x00, 0x00, // mov edi, 0x5070
        0x66, 0x6d, // insw
        0xe6, 0x80, // out 0x80, al
        0xf4,
    ];
    let (g, mut v) = crate::irqchip::long_mode_irqchip_guest(code)?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    g.vm.create_pit2(pit)
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    g.ram.write(0x5000, &[0xee; 0x80]);
    match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoIn(0x21, data) if data.len() == 2 => data.copy_from_slice(&[0xef, 0xbe]),
        e => {
            let e = format!("{e:?}");
            return Err(format!(
                "want the word IN at 0x21 in userspace, got {e} at {:#x}",
                rip(&v)
            ));
        }
    }
    eq(run_to_out(&mut v)?, Some(0x80), "then the OUT")?;
    let b = |a: usize| g.ram.read(a);
    let u32_at = |a: usize| crate::irqchip::ram_u32(&g.ram, a);
    eq(
        [b(0x5000), b(0x5001), b(0x5002)],
        [0xa5; 3],
        "REP INSB from the IMR",
    )?;
    eq(b(0x5003), 0xee, "nothing past the count")?;
    eq(u32_at(0x5100), 0, "RCX after REP INSB")?;
    eq(u32_at(0x5104), 0x5003, "RDI after REP INSB")?;
    eq(b(0x5010), 0xa5, "INSB from the IMR")?;
    eq(
        [b(0x5020), b(0x5021)],
        [0x28, 0x28],
        "REP INSB from the ELCR",
    )?;
    eq(
        [b(0x5031), b(0x5032), b(0x5033)],
        [0xee, 0xa5, 0xa5],
        "REP INSB with DF set",
    )?;
    eq(u32_at(0x5108), 0x5031, "RDI after the backward REP INSB")?;
    let big: Vec<u8> = (0..3001).map(|k| g.ram.read(0x20000 + k)).collect();
    check(
        big[..3000].iter().all(|&x| x == 0xa5),
        "3000 bytes of REP INSB",
    )?;
    eq(big[3000], 0, "nothing past 3000")?;
    eq(u32_at(0x510c), 0x20000 + 3000, "RDI after 3000")?;
    eq([b(0x5040), b(0x5041)], [0, 0], "INSW at 0x20 reads 0")?;
    let latched = u16::from_le_bytes([b(0x5050), b(0x5051)]);
    check(
        latched != 0x1234 && latched != 0xeeee,
        &format!("PIT latched count {latched:#x} read by REP INSB"),
    )?;
    eq(b(0x5060) & !0x31, 0, "speaker port bits")?;
    eq(
        [b(0x5070), b(0x5071)],
        [0xef, 0xbe],
        "INSW at 0x21 from userspace",
    )?;
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("cr8_lowering_tpr_delivers_pending_irq_at_once", Any, |_| {
            with_svm(lowering_tpr_delivers_at_once)
        }),
        ("cr8_userspace_lapic_set_tpr_exit", Any, |_| {
            with_svm(userspace_lapic_set_tpr_exit)
        }),
        ("cr8_stats_halt_wakeup_and_irq_injections", Any, |_| {
            with_svm(halt_wakeup_and_injection_stats)
        }),
        (
            "cr8_stats_userspace_irqchip_windows_and_injections",
            Any,
            |_| with_svm(userspace_irqchip_window_and_injection_stats),
        ),
        ("cr8_ins_from_in_kernel_ports", Any, |_| {
            with_svm(ins_from_in_kernel_ports)
        }),
    ]
}
