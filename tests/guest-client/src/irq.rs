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
pub(crate) const MAIN: u16 = 0x2000;

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
pub(crate) fn out_port(v: &mut VcpuFd, what: &str) -> Result<u16, String> {
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
    // KVM_CAP_USER_NMI (22) is what tells userspace KVM_NMI works.
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(kvm.check_extension_raw(22), 1, "KVM_CAP_USER_NMI")?;
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

/// `KVM_CAP_EXCEPTION_PAYLOAD`: a #PF userspace leaves pending with its CR2 payload stays
/// pending (not injected) with CR2 untouched until the next entry delivers it; the guest's
/// handler then reads the payload from CR2. Without the cap the same `KVM_SET_VCPU_EVENTS` is
/// `EINVAL`.
fn exception_payload_cr2_at_delivery() -> Result<(), String> {
    const PAYLOAD: u64 = 0xdead_b000;
    // #PF handler: mov eax, cr2; out 0x81, eax; hlt.
    let pf_handler: &[u8] = &[0x0f, 0x20, 0xd0, 0x66, 0xe7, 0x81, 0xf4];
    let main: &[u8] = &[0xe6, 0x80, 0xf4]; // out 0x80, al; hlt
    let g = guest(main, &[(14, HANDLER_A)], &[(HANDLER_A, pf_handler)])?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(kvm.check_extension_raw(164), 1, "KVM_CAP_EXCEPTION_PAYLOAD")?;
    let mut v = g.vcpu(0)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    let mut e = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(e.flags & 0x10, 0, "no VALID_PAYLOAD before the cap")?;
    e.flags |= 0x10;
    e.exception.pending = 1;
    e.exception.nr = 14;
    e.exception.has_error_code = 1;
    e.exception.error_code = 2;
    e.exception_has_payload = 1;
    e.exception_payload = PAYLOAD;
    eq(
        v.set_vcpu_events(&e).map_err(|e| e.errno()),
        Err(EINVAL),
        "VALID_PAYLOAD without the cap",
    )?;
    enable_vm_cap(&g.vm, 164, 1, "EXCEPTION_PAYLOAD")?;
    v.set_vcpu_events(&e)
        .map_err(|e| format!("SET_VCPU_EVENTS with the payload: {e}"))?;
    let sr = v.get_sregs().map_err(|e| format!("GET_SREGS: {e}"))?;
    eq(sr.cr2, 0, "CR2 untouched while the #PF is pending")?;
    let got = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(got.flags & 0x10, 0x10, "VALID_PAYLOAD with the cap")?;
    eq(
        (
            got.exception.pending,
            got.exception.injected,
            got.exception.nr,
        ),
        (1, 0, 14),
        "pending, not injected",
    )?;
    eq(
        (got.exception_has_payload, got.exception_payload),
        (1, PAYLOAD),
        "payload kept",
    )?;
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        VcpuExit::IoOut(0x81, d) => eq(
            d,
            &(PAYLOAD as u32).to_le_bytes()[..],
            "CR2 in the #PF handler",
        )?,
        x => return Err(format!("run 2: {x:?}, want the #PF handler's OUT")),
    }
    let sr = v.get_sregs().map_err(|e| format!("GET_SREGS: {e}"))?;
    eq(sr.cr2, PAYLOAD, "CR2 after delivery")?;
    Ok(())
}

/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT`: with the cap a triple fault userspace sets pending is
/// reported by `KVM_GET_VCPU_EVENTS` and ends the next `KVM_RUN` in `KVM_EXIT_SHUTDOWN` with
/// the registers as they were (upstream's KVM_REQ_TRIPLE_FAULT: no INIT); one cleared again
/// does nothing. Without the cap `VALID_TRIPLE_FAULT` is `EINVAL`.
fn triple_fault_event_shutdown() -> Result<(), String> {
    const VALID_TRIPLE_FAULT: u32 = 0x20;
    let main: &[u8] = &[0xe6, 0x80, 0xe6, 0x82, 0xf4]; // out 0x80, al; out 0x82, al; hlt
    let g = guest(main, &[], &[])?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        kvm.check_extension_raw(218),
        1,
        "KVM_CAP_X86_TRIPLE_FAULT_EVENT",
    )?;
    let mut v = g.vcpu(0)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    let get = |v: &VcpuFd| {
        v.get_vcpu_events()
            .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))
    };
    let mut e = get(&v)?;
    eq(
        e.flags & VALID_TRIPLE_FAULT,
        0,
        "no VALID_TRIPLE_FAULT before the cap",
    )?;
    e.flags |= VALID_TRIPLE_FAULT;
    e.triple_fault.pending = 1;
    eq(
        v.set_vcpu_events(&e).map_err(|e| e.errno()),
        Err(EINVAL),
        "VALID_TRIPLE_FAULT without the cap",
    )?;
    enable_vm_cap(&g.vm, 218, 1, "X86_TRIPLE_FAULT_EVENT")?;
    let got = get(&v)?;
    eq(
        (got.flags & VALID_TRIPLE_FAULT, got.triple_fault.pending),
        (VALID_TRIPLE_FAULT, 0),
        "reported, none pending",
    )?;
    // Set, then cleared again: the guest goes on to its second OUT.
    v.set_vcpu_events(&e)
        .map_err(|e| format!("SET_VCPU_EVENTS (triple fault): {e}"))?;
    eq(get(&v)?.triple_fault.pending, 1, "pending after SET")?;
    let mut clear = e;
    clear.triple_fault.pending = 0;
    v.set_vcpu_events(&clear)
        .map_err(|e| format!("SET_VCPU_EVENTS (cleared): {e}"))?;
    eq(get(&v)?.triple_fault.pending, 0, "cleared")?;
    eq(out_port(&mut v, "run 2")?, 0x82, "second OUT")?;
    // Set and run: the second OUT's completion first (KVM_RUN completes userspace I/O before
    // anything else), then KVM_EXIT_SHUTDOWN with the vCPU not INITed: RIP at the HLT.
    v.set_vcpu_events(&e)
        .map_err(|e| format!("SET_VCPU_EVENTS (triple fault): {e}"))?;
    let before = v.get_regs().map_err(|e| format!("GET_REGS: {e}"))?;
    eq(before.rip, u64::from(MAIN) + 2, "RIP at the second OUT")?;
    match v.run().map_err(|e| format!("run 3: {e}"))? {
        VcpuExit::Shutdown => {}
        x => return Err(format!("run 3: {x:?}, want SHUTDOWN")),
    }
    let after = v.get_regs().map_err(|e| format!("GET_REGS: {e}"))?;
    eq(
        (after.rip, after.rflags),
        (u64::from(MAIN) + 4, before.rflags),
        "RIP past the completed OUT, RFLAGS kept",
    )?;
    let sr = v.get_sregs().map_err(|e| format!("GET_SREGS: {e}"))?;
    eq(sr.cs.selector, 0, "CS kept (an INIT would load 0xf000)")?;
    eq(get(&v)?.triple_fault.pending, 0, "consumed by the exit")?;
    match v.run().map_err(|e| format!("run 4: {e}"))? {
        VcpuExit::Hlt => Ok(()),
        x => Err(format!("run 4: {x:?}, want the HLT after the second OUT")),
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
        ("irq_exception_payload_cr2_at_delivery", Any, |_| {
            with_svm(exception_payload_cr2_at_delivery)
        }),
        ("irq_triple_fault_event_shutdown", Any, |_| {
            with_svm(triple_fault_event_shutdown)
        }),
        ("irq_triple_fault_event_wakes_halted_vcpu", Any, |_| {
            with_svm(triple_fault_event_halted)
        }),
        ("irq_lapic_xapic_mmio_timer_wakes_halt", Any, |_| {
            with_svm(xapic_mmio_timer_wakes_halt)
        }),
        ("irq_lapic_ipi_wakes_halted_vcpu_thread", Any, |_| {
            with_svm(ipi_wakes_halted_vcpu)
        }),
        ("irq_lapic_signal_then_nmi_end_halt", Any, |_| {
            with_svm(signal_and_nmi_end_halt)
        }),
        ("irq_lapic_state_mp_state_errnos", Any, |_| {
            with_svm(lapic_state_and_errnos)
        }),
        ("irq_split_irqchip_kvm_interrupt_extint", Any, |_| {
            with_svm(split_irqchip_extint)
        }),
        ("irq_lapic_tsc_deadline_timer_wakes_halt", Any, |_| {
            with_svm(tsc_deadline_timer_wakes_halt)
        }),
        ("irq_lapic_periodic_timer_then_teardown", Any, |_| {
            with_svm(periodic_timer_then_teardown)
        }),
    ]
}

// ---- The in-kernel LAPIC (KVM_CREATE_IRQCHIP) ----

/// The xAPIC page.
const APIC_GPA: u64 = 0xfee0_0000;

/// A VM with the in-kernel irqchip, RAM at 0 (64 KiB) holding the IVT entries `ivt` and the
/// `code` blocks `(offset, bytes)`.
pub(crate) fn irqchip_guest(ivt: &[(u8, u16)], code: &[(u16, &[u8])]) -> Result<Guest, String> {
    let g = guest(&[0xf4], ivt, code)?;
    g.vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    Ok(g)
}

/// vCPU `id` in real mode at 0:`entry`, DS based at the xAPIC page (so `[0x30]` is the LVR),
/// ES and SS at 0, runnable.
pub(crate) fn lapic_vcpu(g: &Guest, id: u64, entry: u16) -> Result<VcpuFd, String> {
    let v = g.vcpu(id)?;
    let mut s = v.get_sregs().map_err(|e| format!("GET_SREGS: {e}"))?;
    s.cs.base = 0;
    s.cs.selector = 0;
    s.ds.base = APIC_GPA;
    s.ds.selector = 0;
    s.es.base = 0;
    s.es.selector = 0;
    s.ss.base = 0;
    s.ss.selector = 0;
    v.set_sregs(&s).map_err(|e| format!("SET_SREGS: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("GET_REGS: {e}"))?;
    r.rip = u64::from(entry);
    r.rsp = 0x8000 - 0x100 * id;
    r.rflags = 2;
    v.set_regs(&r).map_err(|e| format!("SET_REGS: {e}"))?;
    v.set_mp_state(kvm_bindings::kvm_mp_state { mp_state: 0 })
        .map_err(|e| format!("SET_MP_STATE: {e}"))?;
    Ok(v)
}

/// `mov dword [disp16], imm32` (DS: the xAPIC page).
pub(crate) fn apic_write(off: u16, val: u32) -> Vec<u8> {
    let mut b = vec![0x66, 0xc7, 0x06];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&val.to_le_bytes());
    b
}

/// `mov eax, [disp16]; mov [es:dst], eax`: an APIC register into RAM.
fn apic_read_to_ram(off: u16, dst: u16) -> Vec<u8> {
    let mut b = vec![0x66, 0xa1];
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&[0x26, 0x66, 0xa3]);
    b.extend_from_slice(&dst.to_le_bytes());
    b
}

fn ram_u32(g: &Guest, off: usize) -> u32 {
    u32::from_le_bytes([
        g.ram.read(off),
        g.ram.read(off + 1),
        g.ram.read(off + 2),
        g.ram.read(off + 3),
    ])
}

/// An interrupt handler: `inc byte [es:counter]; EOI; iret`.
fn counting_handler(counter: u16) -> Vec<u8> {
    let mut b = vec![0x26, 0xfe, 0x06];
    b.extend_from_slice(&counter.to_le_bytes());
    b.extend(apic_write(0xb0, 0));
    b.push(0xcf);
    b
}

/// xAPIC registers read and written by the guest over MMIO in the kernel, the one-shot timer
/// firing into the guest's IVT while the vCPU halts in the kernel.
fn xapic_mmio_timer_wakes_halt() -> Result<(), String> {
    let mut main = Vec::new();
    main.push(0xfa); // cli
    main.extend(apic_read_to_ram(0x30, 0x500)); // LVR
    main.extend(apic_read_to_ram(0x20, 0x504)); // ID
    main.extend(apic_write(0xf0, 0x1ff)); // SPIV: enabled, spurious 0xff
    main.extend(apic_read_to_ram(0xf0, 0x508));
    main.extend(apic_write(0x320, 0x40)); // LVTT: vector 0x40, one-shot
    main.extend(apic_write(0x3e0, 0xb)); // TDCR: divide by 1
    main.extend(apic_write(0x380, 20_000_000)); // TMICT: 20 ms at 1 ns per bus cycle
    main.extend([0xfb, 0xf4]); // sti; hlt
    main.extend([0xe6, 0x81]); // out 0x81, al
    let handler = counting_handler(0x510);
    let g = irqchip_guest(
        &[(0x40, HANDLER_A)],
        &[(MAIN, &main), (HANDLER_A, &handler)],
    )?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    let t0 = std::time::Instant::now();
    eq(out_port(&mut v, "run")?, 0x81, "after the timer woke HLT")?;
    let dt = t0.elapsed();
    eq(ram_u32(&g, 0x500) & 0xff, 0x14, "LVR version")?;
    eq(ram_u32(&g, 0x504), 0, "APIC ID of vCPU 0")?;
    eq(ram_u32(&g, 0x508), 0x1ff, "SPIV read back")?;
    eq(g.ram.read(0x510), 1, "timer interrupts taken")?;
    check(
        dt >= std::time::Duration::from_millis(15),
        &format!("HLT slept until the timer ({dt:?})"),
    )?;
    let l = v.get_lapic().map_err(|e| format!("GET_LAPIC: {e}"))?;
    let reg = |off: usize| {
        u32::from_le_bytes([
            l.regs[off] as u8,
            l.regs[off + 1] as u8,
            l.regs[off + 2] as u8,
            l.regs[off + 3] as u8,
        ])
    };
    eq(reg(0x320), 0x40, "LVTT in KVM_GET_LAPIC")?;
    eq(reg(0x100 + 0x40 / 32 * 0x10), 0, "ISR empty after EOI")?;
    Ok(())
}

/// A fixed IPI from vCPU 0's ICR wakes vCPU 1 halted in the kernel on another thread.
fn ipi_wakes_halted_vcpu() -> Result<(), String> {
    let mut halter = Vec::new();
    halter.extend(apic_write(0xf0, 0x1ff));
    halter.extend([0xfb, 0xf4]); // sti; hlt
    halter.extend([0xe6, 0x82]); // out 0x82, al
    let mut sender = Vec::new();
    sender.extend(apic_write(0xf0, 0x1ff));
    sender.extend(apic_write(0x310, 1 << 24)); // ICR2: destination APIC ID 1
    sender.extend(apic_write(0x300, 0x41)); // ICR: fixed, physical, vector 0x41
    sender.extend([0xe6, 0x83]); // out 0x83, al
    let handler = counting_handler(0x520);
    let g = irqchip_guest(
        &[(0x41, HANDLER_A)],
        &[(MAIN, &halter), (0x3000, &sender), (HANDLER_A, &handler)],
    )?;
    let mut v1 = lapic_vcpu(&g, 1, MAIN)?;
    let mut v0 = lapic_vcpu(&g, 0, 0x3000)?;
    // vCPU 1 was created second: make it vCPU index 1 with APIC ID 1.
    std::thread::scope(|s| {
        let h = s.spawn(move || out_port(&mut v1, "halter"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        eq(out_port(&mut v0, "sender")?, 0x83, "sender done")?;
        let p = h
            .join()
            .map_err(|_| "halter thread panicked".to_string())??;
        eq(p, 0x82, "halter woken by the IPI")
    })?;
    eq(g.ram.read(0x520), 1, "IPIs taken")?;
    Ok(())
}

/// A vCPU halted in the kernel with interrupts off: a signal ends `KVM_RUN` with `EINTR`
/// (`KVM_EXIT_INTR`) and the vCPU stays `HALTED`; `KVM_NMI` then wakes it into its NMI
/// handler.
fn signal_and_nmi_end_halt() -> Result<(), String> {
    crate::signal::install_noop_handler(libc::SIGUSR2);
    let main: &[u8] = &[0xfa, 0xf4, 0xe6, 0x85]; // cli; hlt; out 0x85, al
    let nmi: &[u8] = &[0xe6, 0x84, 0xcf]; // out 0x84, al; iret
    let g = irqchip_guest(&[(2, HANDLER_B)], &[(MAIN, main), (HANDLER_B, nmi)])?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    let (r, why) = run_halted_until_signal(&mut v)?;
    eq(r, libc::EINTR, "KVM_RUN of a halted vCPU after a signal")?;
    eq(why, 10, "exit_reason KVM_EXIT_INTR")?;
    let m = v.get_mp_state().map_err(|e| format!("GET_MP_STATE: {e}"))?;
    eq(m.mp_state, 3, "still HALTED")?;
    v.nmi().map_err(|e| format!("KVM_NMI: {e}"))?;
    eq(out_port(&mut v, "after KVM_NMI")?, 0x84, "NMI handler")?;
    eq(out_port(&mut v, "after IRET")?, 0x85, "past HLT")?;
    let m = v.get_mp_state().map_err(|e| format!("GET_MP_STATE: {e}"))?;
    eq(m.mp_state, 0, "RUNNABLE")?;
    Ok(())
}

/// A triple fault set pending on a vCPU halted in the kernel wakes it (upstream
/// `kvm_vcpu_has_events` counts `kvm_is_exception_pending`, which includes it): the next
/// `KVM_RUN` leaves the halt (MP state RUNNABLE, as `vcpu_block` does) and ends in
/// `KVM_EXIT_SHUTDOWN` before anything is injected; the run after that goes on past the HLT.
/// (Measured the same on upstream kvm_amd in this QEMU.)
fn triple_fault_event_halted() -> Result<(), String> {
    crate::signal::install_noop_handler(libc::SIGUSR2);
    let main: &[u8] = &[0xfa, 0xe6, 0x80, 0xf4, 0xe6, 0x85]; // cli; out 0x80; hlt; out 0x85
    let g = irqchip_guest(&[], &[(MAIN, main)])?;
    enable_vm_cap(&g.vm, 218, 1, "X86_TRIPLE_FAULT_EVENT")?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    let mut e = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    e.flags |= 0x20;
    e.triple_fault.pending = 1;
    // The OUT completes, HLT halts in the kernel until the signal.
    let (r, why) = run_halted_until_signal(&mut v)?;
    eq(r, libc::EINTR, "KVM_RUN of the halted vCPU after a signal")?;
    eq(why, 10, "exit_reason KVM_EXIT_INTR")?;
    let m = v.get_mp_state().map_err(|e| format!("GET_MP_STATE: {e}"))?;
    eq(m.mp_state, 3, "HALTED")?;
    v.set_vcpu_events(&e)
        .map_err(|e| format!("SET_VCPU_EVENTS (triple fault): {e}"))?;
    match v
        .run()
        .map_err(|e| format!("run with the triple fault: {e}"))?
    {
        VcpuExit::Shutdown => {}
        x => {
            return Err(format!(
                "halted vCPU with a triple fault: {x:?}, want SHUTDOWN"
            ))
        }
    }
    let m = v.get_mp_state().map_err(|e| format!("GET_MP_STATE: {e}"))?;
    eq(m.mp_state, 0, "RUNNABLE after the wake-up")?;
    let ev = v
        .get_vcpu_events()
        .map_err(|e| format!("GET_VCPU_EVENTS: {e}"))?;
    eq(ev.triple_fault.pending, 0, "consumed by the exit")?;
    eq(out_port(&mut v, "after SHUTDOWN")?, 0x85, "past the HLT")
}

/// `KVM_ENABLE_CAP(cap, args[0] = arg)` on the VM; `name` for the error.
fn enable_vm_cap(vm: &kvm_ioctls::VmFd, cap: u32, arg: u64, name: &str) -> Result<(), String> {
    let c = kvm_bindings::kvm_enable_cap {
        cap,
        args: [arg, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&c)
        .map_err(|e| format!("KVM_ENABLE_CAP({name}): {e}"))
}

/// Runs `v` on another thread until its guest has halted in the kernel (its `halt_exits`
/// count grew), then ends `KVM_RUN` with SIGUSR2 (which must have a handler): the errno (0 if
/// the run returned without one) and `exit_reason`.
fn run_halted_until_signal(v: &mut VcpuFd) -> Result<(i32, u32), String> {
    let stats = crate::irq_bench::Stats::open(v).ok_or_else(|| "KVM_GET_STATS_FD".to_string())?;
    let halts = || stats.get("halt_exits").unwrap_or(0);
    let before = halts();
    crate::signal::run_until_signalled(libc::SIGUSR2, &|| halts() > before, || {
        let r = v.run().map(|_| 0).unwrap_or_else(|e| e.errno());
        (r, v.get_kvm_run().exit_reason)
    })
}

/// `KVM_GET/SET_LAPIC` round trip and errnos; INIT_RECEIVED/SIPI through `KVM_SET_MP_STATE`;
/// `KVM_INTERRUPT` is `ENXIO` with the in-kernel PIC; without an irqchip `KVM_GET_LAPIC` is
/// `EINVAL`.
fn lapic_state_and_errnos() -> Result<(), String> {
    let g = irqchip_guest(&[], &[])?;
    let v = lapic_vcpu(&g, 0, MAIN)?;
    let mut l = v.get_lapic().map_err(|e| format!("GET_LAPIC: {e}"))?;
    let put = |l: &mut kvm_bindings::kvm_lapic_state, off: usize, val: u32| {
        for (i, b) in val.to_le_bytes().iter().enumerate() {
            l.regs[off + i] = *b as _;
        }
    };
    put(&mut l, 0x80, 0x20); // TPR
    put(&mut l, 0xf0, 0x1ff); // SPIV
    put(&mut l, 0x350, 0x700); // LVT0 ExtINT
    v.set_lapic(&l).map_err(|e| format!("SET_LAPIC: {e}"))?;
    let back = v.get_lapic().map_err(|e| format!("GET_LAPIC: {e}"))?;
    for off in [0x80usize, 0xf0, 0x350] {
        eq(
            &back.regs[off..off + 4],
            &l.regs[off..off + 4],
            &format!("register {off:#x}"),
        )?;
    }
    eq(
        interrupt(&v, 0x20),
        Err(libc::ENXIO),
        "KVM_INTERRUPT with the in-kernel PIC",
    )?;
    // An AP: UNINITIALIZED at creation, then INIT_RECEIVED and SIPI_RECEIVED accepted.
    let ap = g.vcpu(1)?;
    eq(
        ap.get_mp_state().map(|m| m.mp_state).map_err(|e| e.errno()),
        Ok(1),
        "AP MP state at creation",
    )?;
    ap.set_mp_state(kvm_bindings::kvm_mp_state { mp_state: 4 })
        .map_err(|e| format!("SET_MP_STATE(SIPI_RECEIVED): {e}"))?;
    eq(
        ap.get_mp_state().map(|m| m.mp_state).map_err(|e| e.errno()),
        Ok(0),
        "SIPI delivered",
    )?;
    let r = ap.get_regs().map_err(|e| format!("GET_REGS: {e}"))?;
    eq(r.rip, 0, "SIPI: RIP 0")?;
    drop(ap);
    drop(v);
    drop(g);
    let plain = Guest::new(&[0xf4], 0x1000)?;
    let v = plain.vcpu(0)?;
    eq(
        v.get_lapic().map(|_| ()).map_err(|e| e.errno()),
        Err(EINVAL),
        "KVM_GET_LAPIC without an irqchip",
    )?;
    Ok(())
}

/// Split irqchip: `KVM_INTERRUPT` hands the ExtINT vector to LINT0 (ExtINT on the boot vCPU
/// after reset), `EEXIST` while one is pending, delivered once the guest sets IF;
/// `request_interrupt_window` works as with a userspace irqchip.
fn split_irqchip_extint() -> Result<(), String> {
    // cli; out 0x80; sti; nop; out 0x82; out 0x83
    let main: &[u8] = &[0xfa, 0xe6, 0x80, 0xfb, 0x90, 0xe6, 0x82, 0xe6, 0x83];
    let g = guest(
        &[0xf4],
        &[(0x20, HANDLER_A)],
        &[(MAIN, main), (HANDLER_A, &handler(0x81))],
    )?;
    enable_vm_cap(&g.vm, 121, 24, "SPLIT_IRQCHIP")?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    eq(out_port(&mut v, "run 1")?, 0x80, "first OUT")?;
    eq(interrupt(&v, 0x20), Ok(0), "KVM_INTERRUPT (split)")?;
    eq(
        interrupt(&v, 0x21),
        Err(libc::EEXIST),
        "a second one while pending",
    )?;
    eq(
        out_port(&mut v, "run 2")?,
        0x81,
        "the ExtINT vector's handler once IF=1",
    )?;
    eq(out_port(&mut v, "run 3")?, 0x82, "back in the main code")?;
    v.get_kvm_run().request_interrupt_window = 1;
    match v.run().map_err(|e| format!("run 4: {e}"))? {
        VcpuExit::IrqWindowOpen => {}
        e => return Err(format!("run 4 with request_interrupt_window: {e:?}")),
    }
    v.get_kvm_run().request_interrupt_window = 0;
    eq(out_port(&mut v, "run 5")?, 0x83, "last OUT")?;
    Ok(())
}

/// The TSC-deadline timer (CPUID.1:ECX bit 24 in the guest's table): the guest arms
/// IA32_TSC_DEADLINE 10 ms ahead of its TSC and halts; the timer wakes it into its handler,
/// the MSR reads 0 after expiry.
fn tsc_deadline_timer_wakes_halt() -> Result<(), String> {
    let mut main = Vec::new();
    main.push(0xfa); // cli
    main.extend(apic_write(0xf0, 0x1ff)); // SPIV
    main.extend(apic_write(0x320, 0x4_0042)); // LVTT: TSC-deadline mode (18:17 = 2), vector 0x42
    main.extend([
        0x0f, 0x31, // rdtsc
        0x66, 0x05, 0x00, 0x2d, 0x31, 0x01, // add eax, 20_000_000
        0x66, 0x83, 0xd2, 0x00, // adc edx, 0
        0x66, 0xb9, 0xe0, 0x06, 0x00, 0x00, // mov ecx, 0x6e0
        0x0f, 0x30, // wrmsr
        0xfb, 0xf4, // sti; hlt
        0x0f, 0x32, // rdmsr (IA32_TSC_DEADLINE)
        0x26, 0x66, 0xa3, 0x00, 0x06, // mov [es:0x600], eax
        0xe6, 0x86, // out 0x86, al
    ]);
    let handler = counting_handler(0x530);
    let g = irqchip_guest(
        &[(0x42, HANDLER_A)],
        &[(MAIN, &main), (HANDLER_A, &handler)],
    )?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ecx |= 1 << 24;
        }
    }
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    g.ram.write(0x600, &[0xff; 4]);
    let t0 = std::time::Instant::now();
    eq(
        out_port(&mut v, "run")?,
        0x86,
        "after the deadline woke HLT",
    )?;
    let dt = t0.elapsed();
    eq(g.ram.read(0x530), 1, "timer interrupts taken")?;
    eq(ram_u32(&g, 0x600), 0, "IA32_TSC_DEADLINE after expiry")?;
    check(
        dt >= std::time::Duration::from_millis(5),
        &format!("HLT slept until the deadline ({dt:?})"),
    )?;
    Ok(())
}

/// A periodic LAPIC timer (5 ms) keeps firing into a vCPU that halts between interrupts; the
/// vCPU thread is interrupted by a signal and the VM torn down with the timer still armed: the
/// hrtimer is cancelled before the vCPU goes (KASAN checks the callback never sees freed
/// memory). Counts the interrupts taken.
fn periodic_timer_then_teardown() -> Result<(), String> {
    crate::signal::install_noop_handler(libc::SIGUSR2);
    let mut main = Vec::new();
    main.extend(apic_write(0xf0, 0x1ff)); // SPIV
    main.extend(apic_write(0x320, 0x2_0043)); // LVTT: periodic, vector 0x43
    main.extend(apic_write(0x3e0, 0xb)); // TDCR: divide by 1
    main.extend(apic_write(0x380, 5_000_000)); // TMICT: 5 ms
    main.extend([0xfb, 0xf4, 0xeb, 0xfd]); // sti; hlt; jmp back to hlt
    let handler = counting_handler(0x540);
    let g = irqchip_guest(
        &[(0x43, HANDLER_A)],
        &[(MAIN, &main), (HANDLER_A, &handler)],
    )?;
    let mut v = lapic_vcpu(&g, 0, MAIN)?;
    // The timer modes come with a CPUID table (upstream kvm_vcpu_after_set_cpuid).
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    // Signalled once the handler has counted 5 interrupts (or after 30 s).
    let ram = &g.ram;
    let r = crate::signal::run_until_signalled(libc::SIGUSR2, &|| ram.read(0x540) >= 5, || {
        v.run().map(|_| 0).unwrap_or_else(|e| e.errno())
    })?;
    eq(r, libc::EINTR, "KVM_RUN after the signal")?;
    let n = g.ram.read(0x540);
    check(n >= 5, &format!("periodic interrupts taken: {n}"))?;
    // Teardown with the timer armed: the vCPU, then the VM, go while it fires.
    drop(v);
    drop(g);
    std::thread::sleep(std::time::Duration::from_millis(20));
    Ok(())
}
