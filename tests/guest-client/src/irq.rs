// SPDX-License-Identifier: GPL-2.0-only
//! Interrupt injection and the in-kernel interrupt controller (issue 12, `irqmod`): real-mode
//! guests whose IVT (written by the host into RAM at GPA 0) sends interrupts and NMIs to
//! handlers in RAM that report over port I/O.
//!
//! - Userspace irqchip: `request_interrupt_window` -> `KVM_EXIT_IRQ_WINDOW_OPEN` once the guest
//!   executed STI, `ready_for_interrupt_injection`/`if_flag`, `KVM_INTERRUPT` delivered to the
//!   guest's IVT, its errnos.
//! - `KVM_NMI`: delivered with IF=0, a second NMI held back while the handler runs (NMI
//!   masking until its IRET), both delivered in order, state in `KVM_GET_VCPU_EVENTS`.

use crate::*;
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::run::Guest;

/// `KVM_INTERRUPT`.
const KVM_INTERRUPT: u64 = 0x4004_ae86;

/// Where the handlers live in RAM (segment 0).
const HANDLER_A: u16 = 0x1000;
const HANDLER_B: u16 = 0x1100;

/// A handler: `out PORT, al; iret`.
fn handler(port: u8) -> [u8; 3] {
    [0xe6, port, 0xcf]
}

/// Where the main code runs (segment 0: an IRET back to it reloads CS with base 0, which the
/// reset segment's selector 0xf000 would not give back).
const MAIN: u16 = 0x2000;

/// A guest that far-jumps from the reset segment to `code` at [`MAIN`] in RAM, with the IVT
/// entries `ivt` (vector, handler offset) and the handlers `(offset, bytes)` in RAM.
fn guest(code: &[u8], ivt: &[(u8, u16)], handlers: &[(u16, &[u8])]) -> Result<Guest, String> {
    let [lo, hi] = MAIN.to_le_bytes();
    let g = Guest::new(&[0xea, lo, hi, 0, 0], 0x10000)?; // jmp 0x0000:MAIN
    g.ram.write(usize::from(MAIN), code);
    for (v, off) in ivt {
        let mut e = [0u8; 4];
        e[..2].copy_from_slice(&off.to_le_bytes());
        g.ram.write(usize::from(*v) * 4, &e);
    }
    for (off, bytes) in handlers {
        g.ram.write(usize::from(*off), bytes);
    }
    Ok(g)
}

fn interrupt(v: &VcpuFd, irq: u32) -> Result<i64, i32> {
    ioctl(v.as_raw_fd(), KVM_INTERRUPT, &irq as *const u32 as u64)
}

/// The port of an OUT exit (`Err` for anything else).
fn out_port(v: &mut VcpuFd, what: &str) -> Result<u16, String> {
    match v.run().map_err(|e| format!("{what}: KVM_RUN: {e}"))? {
        VcpuExit::IoOut(port, _) => Ok(port),
        VcpuExit::InternalError => {
            // SAFETY: the union member KVM_EXIT_INTERNAL_ERROR fills.
            let i = unsafe { v.get_kvm_run().__bindgen_anon_1.internal };
            let rip = v.get_regs().map(|r| r.rip).unwrap_or(0);
            Err(format!(
                "{what}: internal error {} data {:x?} at rip {rip:#x}",
                i.suberror,
                &i.data[..(i.ndata as usize).min(16)]
            ))
        }
        e => Err(format!("{what}: {e:?}")),
    }
}

/// `cli; out 0x80, al; sti; nop; hlt; out 0x82, al; hlt` (a HLT right after STI would exit
/// before the window opens: STI's shadow covers it).
const WINDOW_GUEST: &[u8] = &[
    0xfa, // cli
    0xe6, 0x80, // out 0x80, al
    0xfb, // sti
    0x90, // nop
    0xf4, // hlt
    0xe6, 0x82, // out 0x82, al
    0xf4, // hlt
];

fn userspace_irqchip_window_and_interrupt() -> Result<(), String> {
    let g = guest(
        WINDOW_GUEST,
        &[(0x20, HANDLER_A)],
        &[(HANDLER_A, &handler(0x81))],
    )?;
    let mut v = g.vcpu(0)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    {
        let r = v.get_kvm_run();
        eq(r.if_flag, 0, "if_flag after CLI")?;
        eq(r.ready_for_interrupt_injection, 0, "ready with IF=0")?;
        r.request_interrupt_window = 1;
    }
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::IrqWindowOpen => {}
        e => return Err(format!("run 2 with request_interrupt_window: {e:?}")),
    }
    {
        let r = v.get_kvm_run();
        eq(r.if_flag, 1, "if_flag after STI")?;
        eq(r.ready_for_interrupt_injection, 1, "ready at the window")?;
        r.request_interrupt_window = 0;
    }
    let regs = v.get_regs().map_err(|e| format!("GET_REGS: {e}"))?;
    eq(
        regs.rip,
        u64::from(MAIN) + 5,
        "the window opens after STI's shadow (the NOP), at HLT",
    )?;
    eq(interrupt(&v, 256), Err(EINVAL), "KVM_INTERRUPT 256")?;
    eq(interrupt(&v, 0x20), Ok(0), "KVM_INTERRUPT 0x20")?;
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(
        (ev.interrupt.injected, ev.interrupt.nr),
        (1, 0x20),
        "queued interrupt in VCPU_EVENTS",
    )?;
    eq(
        out_port(&mut v, "run 3")?,
        0x81,
        "the handler of vector 0x20 ran",
    )?;
    match v.run().map_err(|e| format!("run 4: {e}"))? {
        VcpuExit::Hlt => {}
        e => return Err(format!("run 4: IRET back to NOP; HLT: {e:?}")),
    }
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(ev.interrupt.injected, 0, "nothing injected after delivery")?;
    // Without request_interrupt_window, HLT's next instruction runs.
    eq(out_port(&mut v, "run 5")?, 0x82, "after HLT")?;
    Ok(())
}

/// `cli; out 0x80, al; out 0x84, al; hlt`.
const NMI_GUEST: &[u8] = &[
    0xfa, // cli
    0xe6, 0x80, // out 0x80, al
    0xe6, 0x84, // out 0x84, al
    0xf4, // hlt
];

fn nmi_masking_until_iret() -> Result<(), String> {
    // NMI handler: out 0x83; out 0x85; iret (two exits inside the handler).
    let nmi_handler: &[u8] = &[0xe6, 0x83, 0xe6, 0x85, 0xcf];
    let g = guest(NMI_GUEST, &[(2, HANDLER_B)], &[(HANDLER_B, nmi_handler)])?;
    let mut v = g.vcpu(0)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    v.nmi().map_err(|e| format!("KVM_NMI 1: {e}"))?;
    v.nmi().map_err(|e| format!("KVM_NMI 2: {e}"))?;
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(ev.nmi.pending, 2, "two NMIs pending")?;
    eq(
        out_port(&mut v, "run 2")?,
        0x83,
        "NMI handler entered with IF=0",
    )?;
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(
        (ev.nmi.masked, ev.nmi.pending),
        (1, 1),
        "in the handler: masked, one pending",
    )?;
    eq(
        out_port(&mut v, "run 3")?,
        0x85,
        "the handler is not re-entered",
    )?;
    eq(
        out_port(&mut v, "run 4")?,
        0x83,
        "the second NMI after the IRET",
    )?;
    eq(out_port(&mut v, "run 5")?, 0x85, "second handler")?;
    eq(out_port(&mut v, "run 6")?, 0x84, "back in the main code")?;
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(
        (ev.nmi.masked, ev.nmi.pending),
        (0, 0),
        "unmasked after the IRET",
    )?;
    match v.run().map_err(|e| format!("run 7: {e}"))? {
        VcpuExit::Hlt => Ok(()),
        e => Err(format!("run 7: {e:?}")),
    }
}

/// Runs `f` where SVM with nested paging is there (the guest pipeline's `-cpu max`), fails
/// with the reason elsewhere.
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
        Err("cannot run guests: no SVM with nested paging on this CPU".into())
    }
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("irq_userspace_window_open_and_kvm_interrupt", Any, |_| {
            with_svm(userspace_irqchip_window_and_interrupt)
        }),
        ("irq_kvm_nmi_masked_until_iret", Any, |_| {
            with_svm(nmi_masking_until_iret)
        }),
    ]
}
