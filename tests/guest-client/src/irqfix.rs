// SPDX-License-Identifier: GPL-2.0-only
//! The irqchip's remaining differences from upstream (issue 12), one guest-visible check each:
//! the PIT control port's read, the RTC's coalescing report, ...

use crate::irqchip::*;
use crate::*;

/// `IN` from the PIT's control port 0x43 writes nothing (upstream `pit_ioport_read` returns
/// early): AL and AX keep what they held, a 4-byte `IN` gives 0 (`kvm_fast_pio_in` starts a
/// 4-byte read from 0).
fn pit_control_port_read() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
        0xe4, 0x43, // in al, 0x43
        0x89, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], eax
        0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
        0x66, 0xe5, 0x43, // in ax, 0x43
        0x89, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], eax
        0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
        0xe5, 0x43, // in eax, 0x43
        0x89, 0x04, 0x25, 0x08, 0x50, 0x00, 0x00, // mov [0x5008], eax
        0xe6, 0x80, // out 0x80, al
    ];
    let (g, mut v) = long_mode_irqchip_guest(code)?;
    g.vm.create_pit2(kvm_bindings::kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(v.get_kvm_run().exit_reason, 2, "exit at the OUT")?;
    eq(
        ram_u32(&g.ram, 0x5000),
        0x1234_5678,
        "EAX after in al, 0x43",
    )?;
    eq(
        ram_u32(&g.ram, 0x5004),
        0x1234_5678,
        "EAX after in ax, 0x43",
    )?;
    eq(ram_u32(&g.ram, 0x5008), 0, "EAX after in eax, 0x43")?;
    Ok(())
}

fn irq_line_status(fd: i32, gsi: u32, level: u32) -> Result<i32, String> {
    let mut s = irq_level(gsi, level);
    ioctl(fd, KVM_IRQ_LINE_STATUS, s.as_mut_ptr() as u64)
        .map_err(|e| format!("KVM_IRQ_LINE_STATUS({gsi}, {level}): {e}"))?;
    Ok(s[0] as i32)
}

/// `KVM_IRQ_LINE_STATUS` on GSI 8 (the RTC): while the vCPU has not EOIed the previous RTC
/// interrupt, a new edge is reported coalesced (0); after the guest's EOI it is delivered
/// again (1). Upstream's `rtc_status` tracking.
fn rtc_coalesced_until_eoi() -> Result<(), String> {
    let (g, mut v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    // GSI 8 to IOAPIC pin 8 only (no PIC route to add its own answer).
    let r = routing_buf(&[irqchip_route(8, 2, 8)]);
    ioctl(fd, KVM_SET_GSI_ROUTING, r.as_ptr() as u64).map_err(|e| format!("ROUTING: {e}"))?;
    // Pin 8 -> vector 0x40, fixed, physical, edge, APIC ID 0.
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    let o = 8 + 24 + 8 * 8;
    io[o..o + 8].copy_from_slice(&0x40u64.to_le_bytes());
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    // The APIC software-enabled before the guest runs (a disabled APIC accepts nothing).
    let mut la = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    la.regs[0xf0..0xf4].copy_from_slice(&0x1ffi32.to_le_bytes().map(|b| b as i8));
    v.set_lapic(&la)
        .map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;
    eq(irq_line_status(fd, 8, 1)?, 1, "first RTC edge delivered")?;
    eq(irq_line_status(fd, 8, 0)?, 1, "RTC line lowered")?;
    eq(
        irq_line_status(fd, 8, 1)?,
        0,
        "second edge before the EOI: coalesced",
    )?;
    eq(irq_line_status(fd, 8, 0)?, 1, "RTC line lowered again")?;
    // The guest takes vector 0x40 and EOIs it, then exits with its OUT.
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(v.get_kvm_run().exit_reason, 2, "exit after the handler")?;
    eq(g.ram.read(0x6000), 1, "vector 0x40 handled once")?;
    eq(
        irq_line_status(fd, 8, 1)?,
        1,
        "edge after the EOI delivered",
    )?;
    // Without line status (KVM_IRQ_LINE) nothing is tracked: the line just moves.
    eq(irq_line_status(fd, 8, 0)?, 1, "lowered")?;
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("irqfix_pit_control_port_read_writes_nothing", Any, |_| {
            pit_control_port_read()
        }),
        ("irqfix_rtc_coalesced_until_eoi", Any, |_| {
            rtc_coalesced_until_eoi()
        }),
    ]
}
