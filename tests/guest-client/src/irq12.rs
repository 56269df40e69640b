// SPDX-License-Identifier: GPL-2.0-only
//! Issue 12's remaining irqchip and paravirtual pieces (the `irq12` helper's tests): the RTC
//! EOI tracker rebuilt after `KVM_SET_IRQCHIP` and `KVM_SET_LAPIC`, ...

use crate::irqchip::*;
use crate::*;
use kvm_ioctls::VcpuFd;
use std::os::fd::{FromRawFd, OwnedFd};

const RTC_VECTOR: u8 = 0x40;
/// `kvm_lapic_state` offsets: SPIV, the ISR and IRR words holding [`RTC_VECTOR`].
const SPIV: usize = 0xf0;
const ISR_40: usize = 0x100 + (RTC_VECTOR as usize / 32) * 0x10;
const IRR_40: usize = 0x200 + (RTC_VECTOR as usize / 32) * 0x10;

fn line_status(fd: i32, gsi: u32, level: u32) -> Result<i32, String> {
    let mut s = irq_level(gsi, level);
    ioctl(fd, KVM_IRQ_LINE_STATUS, s.as_mut_ptr() as u64)
        .map_err(|e| format!("KVM_IRQ_LINE_STATUS({gsi}, {level}): {e}"))?;
    Ok(s[0] as i32)
}

/// Raises and lowers the RTC's line with line status; the raise's answer (1 delivered, 0
/// coalesced).
fn rtc_edge(fd: i32) -> Result<i32, String> {
    let r = line_status(fd, 8, 1)?;
    line_status(fd, 8, 0)?;
    Ok(r)
}

/// GSI 8 to IOAPIC pin 8 only; pin 8 -> [`RTC_VECTOR`], fixed, physical APIC ID 0, edge.
fn route_rtc(fd: i32) -> Result<(), String> {
    let r = routing_buf(&[irqchip_route(8, 2, 8)]);
    ioctl(fd, KVM_SET_GSI_ROUTING, r.as_ptr() as u64).map_err(|e| format!("ROUTING: {e}"))?;
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    let o = 8 + 24 + 8 * 8;
    io[o..o + 8].copy_from_slice(&u64::from(RTC_VECTOR).to_le_bytes());
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    Ok(())
}

/// `KVM_SET_LAPIC` with the APIC software-enabled and the RTC vector in IRR and/or ISR.
fn set_lapic(v: &VcpuFd, irr: bool, isr: bool) -> Result<(), String> {
    let mut la = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    let put = |la: &mut kvm_bindings::kvm_lapic_state, off: usize, val: u32| {
        for (d, b) in la.regs[off..off + 4].iter_mut().zip(val.to_le_bytes()) {
            *d = b as i8;
        }
    };
    put(&mut la, SPIV, 0x1ff);
    put(&mut la, IRR_40, u32::from(irr));
    put(&mut la, ISR_40, u32::from(isr));
    v.set_lapic(&la).map_err(|e| format!("KVM_SET_LAPIC: {e}"))
}

/// `KVM_SET_IRQCHIP` (IOAPIC) rebuilds the RTC tracker from the vCPUs' IRR/ISR (upstream
/// `kvm_set_ioapic` -> `kvm_rtc_eoi_tracking_restore_all`): a vCPU that the RTC entry
/// addresses and that has the RTC vector pending makes the next edge coalesced, until the
/// guest EOIs it.
fn rtc_tracker_after_set_irqchip() -> Result<(), String> {
    let (g, mut v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    // The vector pending first (the RTC entry is still masked, vector 0: nothing tracked)...
    set_lapic(&v, true, false)?;
    // ... then the IOAPIC state whose RTC entry targets it.
    route_rtc(fd)?;
    eq(rtc_edge(fd)?, 0, "edge with the vector in IRR: coalesced")?;
    // The guest takes the vector and EOIs it, then exits with its OUT.
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(v.get_kvm_run().exit_reason, 2, "exit after the handler")?;
    eq(g.ram.read(0x6000), 1, "vector 0x40 handled once")?;
    eq(rtc_edge(fd)?, 1, "edge after the EOI: delivered")?;
    Ok(())
}

/// `KVM_SET_LAPIC` updates this vCPU's part of the RTC tracker (upstream
/// `kvm_apic_set_state` -> `kvm_rtc_eoi_tracking_restore_one`): added when the state has the
/// RTC vector in ISR or IRR, retired when it has not, counted once.
fn rtc_tracker_after_set_lapic() -> Result<(), String> {
    let (g, v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    route_rtc(fd)?;
    set_lapic(&v, false, true)?;
    eq(rtc_edge(fd)?, 0, "vector in service: coalesced")?;
    set_lapic(&v, false, false)?;
    eq(rtc_edge(fd)?, 1, "state without it: delivered")?;
    // The delivery is awaited; the same state again (IRR set) does not count it twice.
    set_lapic(&v, true, false)?;
    eq(rtc_edge(fd)?, 0, "still awaited: coalesced")?;
    set_lapic(&v, false, false)?;
    eq(rtc_edge(fd)?, 1, "retired by the state: delivered")?;
    Ok(())
}

/// `KVM_SIGNAL_MSI` with an NMI to physical destination `dest`: the ioctl's return (the
/// number of vCPUs that took it), or its errno (upstream's "no target" -1 shows as `EPERM`).
fn msi_nmi(vm: i32, dest: u32) -> Result<i64, i32> {
    let msi = [
        0xfee0_0000 | dest << 12,
        0,
        0x400, // delivery mode NMI, edge
        0,
        0,
        0,
        0,
        0,
    ];
    ioctl(vm, KVM_SIGNAL_MSI, msi.as_ptr() as u64)
}

/// `KVM_TDX_INIT_VCPU` puts the vCPU's LAPIC in x2APIC mode (upstream `tdx_vcpu_init`:
/// `APIC_DEFAULT_PHYS_BASE | LAPIC_MODE_X2APIC`, plus the BSP bit on the boot vCPU). A TD's
/// LAPIC state is not readable (`KVM_GET_LAPIC` and `KVM_GET_MSRS` answer `EINVAL` for TD
/// vCPUs here), so the mode shows in delivery: with `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`
/// an MSI to physical 0xff is the xAPIC broadcast for an xAPIC-mode LAPIC but only x2APIC
/// ID 0xff for an x2APIC-mode one (upstream `kvm_apic_mda`, `kvm_apic_match_physical_addr`).
/// The APICs stay software-disabled (a TD's SPIV is the guest's), so logical destinations
/// match nothing in either mode.
fn td_vcpu_lapic_x2apic_after_init_vcpu() -> Result<(), String> {
    let kvm = dev();
    let vm = create_vm(&kvm, KVM_X86_TDX_VM).map_err(|e| format!("KVM_CREATE_VM(TDX): {e}"))?;
    let fd = vm.as_raw_fd();
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: 129, // KVM_CAP_X2APIC_API
        ..Default::default()
    };
    cap.args[0] = 2; // KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK
    ioctl(
        fd,
        KVM_ENABLE_CAP,
        &cap as *const kvm_bindings::kvm_enable_cap as u64,
    )
    .map_err(|e| format!("KVM_CAP_X2APIC_API: errno {e}"))?;
    crate::tdx_vm::init_vm_default(fd)?;
    let mk = |id: u64| {
        ioctl(fd, KVM_CREATE_VCPU, id)
            .map(|v| {
                // SAFETY: a fresh fd from KVM_CREATE_VCPU, owned from now on.
                unsafe { OwnedFd::from_raw_fd(v as i32) }
            })
            .map_err(|e| format!("KVM_CREATE_VCPU({id}): errno {e}"))
    };
    let v0 = mk(0)?;
    let v1 = mk(1)?;
    eq(
        msi_nmi(fd, 0xff),
        Ok(2),
        "0xff before INIT_VCPU: xAPIC broadcast",
    )?;
    eq(msi_nmi(fd, 1), Ok(1), "physical 1 before INIT_VCPU")?;
    crate::tdx_vm::init_vcpus(&[&v0])?;
    eq(msi_nmi(fd, 0xff), Ok(1), "0xff: only vCPU 1 is still xAPIC")?;
    crate::tdx_vm::init_vcpus(&[&v1])?;
    eq(
        msi_nmi(fd, 0xff),
        Err(libc::EPERM),
        "0xff after both INIT_VCPUs: no x2APIC ID 0xff, no target (-1)",
    )?;
    eq(msi_nmi(fd, 1), Ok(1), "physical 1: x2APIC ID 1")?;
    eq(msi_nmi(fd, 0), Ok(1), "physical 0: x2APIC ID 0")?;
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("irq12_rtc_tracker_after_set_irqchip", Any, |_| {
            rtc_tracker_after_set_irqchip()
        }),
        ("irq12_rtc_tracker_after_set_lapic", Any, |_| {
            rtc_tracker_after_set_lapic()
        }),
        ("irq12_td_vcpu_lapic_x2apic_after_init_vcpu", Tdx, |_| {
            td_vcpu_lapic_x2apic_after_init_vcpu()
        }),
    ]
}
