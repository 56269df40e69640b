// SPDX-License-Identifier: GPL-2.0-only
//! The irqchip's remaining differences from upstream (issue 12), one guest-visible check each:
//! the PIT control port's read, the RTC's coalescing report, ...

use crate::irq::{apic_write, irqchip_guest, lapic_vcpu, out_port, MAIN};
use crate::irqchip::*;
use crate::*;
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `IN` from the PIT's control port 0x43 writes nothing (upstream `pit_ioport_read` returns
/// early): AL keeps what it held. HOOK(cr8): a word or dword at 0x43 does not fit the PIT's
/// 4-port bus range (upstream `kvm_io_bus_cmp`), so it is userspace's, as on kvm_amd.
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
    for (size, data) in [(2usize, 0xbeefu32), (4, 0x1122_3344)] {
        match v.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            kvm_ioctls::VcpuExit::IoIn(0x43, d) if d.len() == size => {
                d.copy_from_slice(&data.to_le_bytes()[..size])
            }
            e => {
                return Err(format!(
                    "want the {size}-byte IN at 0x43 in userspace, got {e:?}"
                ))
            }
        }
    }
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(v.get_kvm_run().exit_reason, 2, "exit at the OUT")?;
    eq(
        ram_u32(&g.ram, 0x5000),
        0x1234_5678,
        "EAX after in al, 0x43",
    )?;
    eq(
        ram_u32(&g.ram, 0x5004),
        0x1234_beef,
        "EAX after in ax, 0x43 (userspace's)",
    )?;
    eq(
        ram_u32(&g.ram, 0x5008),
        0x1122_3344,
        "EAX after in eax, 0x43 (userspace's)",
    )?;
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

extern "C" fn on_signal(_: libc::c_int) {}

/// Runs `v` on a thread to its next OUT while `trigger` runs here; a vCPU still in `KVM_RUN`
/// 3 s after the trigger is interrupted by a signal (an error: it was never woken).
fn out_with(
    v: &mut VcpuFd,
    what: &str,
    trigger: impl FnOnce() -> Result<(), String>,
) -> Result<u16, String> {
    // SAFETY: a handler that does nothing, no SA_RESTART (KVM_RUN returns EINTR).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let done = AtomicBool::new(false);
    let tid = AtomicU64::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let r = out_port(v, what);
            done.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let tr = trigger();
        let t0 = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if t0.elapsed() > std::time::Duration::from_secs(3) {
                // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
                unsafe {
                    libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
                };
            }
        }
        let r = h.join().map_err(|_| "vCPU thread panicked".to_string())?;
        tr?;
        r
    })
}

/// `KVM_HC_KICK_CPU` (upstream `kvm_pv_kick_cpu_op`: a remote-read request, `APIC_DM_REMRD`)
/// wakes a vCPU halted with interrupts off and answers 0; an ICR write with delivery mode 3
/// does the same. Without the kick the halted vCPU would sleep until the signal.
fn pv_kick_wakes_halted_vcpu() -> Result<(), String> {
    // vCPU 1: cli; l: hlt; out 0x82, al; jmp l.
    let halter: &[u8] = &[0xfa, 0xf4, 0xe6, 0x82, 0xeb, 0xfb];
    let mut sender = vec![
        0x66, 0xb8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5 (KVM_HC_KICK_CPU)
        0x66, 0x31, 0xdb, // xor ebx, ebx (flags)
        0x66, 0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1 (APIC ID)
        0x0f, 0x01, 0xd9, // vmmcall
        0x26, 0x66, 0xa3, 0x00, 0x06, // mov [es:0x600], eax
        0xe6, 0x83, // out 0x83, al
    ];
    sender.extend(apic_write(0xf0, 0x1ff));
    sender.extend(apic_write(0x310, 1 << 24)); // ICR2: APIC ID 1
    sender.extend(apic_write(0x300, 0x300)); // ICR: remote read, physical
    sender.extend([0xe6, 0x84]); // out 0x84, al
    let g = irqchip_guest(&[], &[(MAIN, halter), (0x3000, &sender)])?;
    g.ram.write(0x600, &[0xff; 4]);
    let mut v0 = lapic_vcpu(&g, 0, 0x3000)?;
    let mut v1 = lapic_vcpu(&g, 1, MAIN)?;
    let p = out_with(&mut v1, "halter (hypercall kick)", || {
        eq(out_port(&mut v0, "sender")?, 0x83, "sender after VMMCALL")
    })?;
    eq(p, 0x82, "halter woken by KVM_HC_KICK_CPU")?;
    eq(ram_u32(&g.ram, 0x600), 0, "KVM_HC_KICK_CPU returns 0")?;
    let p = out_with(&mut v1, "halter (ICR mode 3)", || {
        eq(
            out_port(&mut v0, "sender")?,
            0x84,
            "sender after the ICR write",
        )
    })?;
    eq(p, 0x82, "halter woken by a mode-3 IPI")?;
    // Woken and running again: no kick left, so it reports its own state.
    let m = v1
        .get_mp_state()
        .map_err(|e| format!("GET_MP_STATE: {e}"))?;
    eq(m.mp_state, 0, "halter RUNNABLE")?;
    Ok(())
}

/// Split irqchip: only vectors of the EOI-exit bitmap exit with `KVM_EXIT_IOAPIC_EOI`
/// (upstream `kvm_scan_ioapic_routes`: the level-triggered MSI routes of the reserved IOAPIC
/// pins that target the vCPU). A level MSI without a route does not exit; an edge MSI whose
/// vector a level route to this vCPU names does; a route to another APIC does not count.
fn split_eoi_exit_bitmap() -> Result<(), String> {
    let (g, mut v) = interrupt_guest_with(true)?;
    // The PIC masking OUTs exit to userspace first (no in-kernel PIC in split mode).
    for _ in 0..2 {
        v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        eq(v.get_kvm_run().exit_reason, 2, "PIC port exit")?;
    }
    let fd = g.vm.as_raw_fd();
    let msi = |data: u32| {
        let m = [0xfee0_0000u32, 0, data, 0, 0, 0, 0, 0];
        eq(
            ioctl(fd, KVM_SIGNAL_MSI, m.as_ptr() as u64),
            Ok(1),
            "MSI delivered",
        )
    };
    let route = |dest: u32, data: u32| {
        let r = routing_buf(&[msi_route(5, 0xfee0_0000 | dest << 12, 0, data)]);
        ioctl(fd, KVM_SET_GSI_ROUTING, r.as_ptr() as u64)
            .map(|_| ())
            .map_err(|e| format!("ROUTING: {e}"))
    };
    // No route: a level MSI's EOI does not exit; the guest goes on to its OUT.
    let (v, why) = run_with(v, || msi(0x8041))?;
    eq(why, 2, "no EOI exit without a route (KVM_EXIT_IO)")?;
    eq(g.ram.read(0x6001), 1, "vector 0x41 handled")?;
    // A level route of GSI 5 (reserved pin) to APIC 0 with vector 0x42: an edge MSI with
    // that vector exits on its EOI.
    route(0, 0x8042)?;
    let (mut v, why) = run_with(v, || msi(0x42))?;
    eq(why, 26, "KVM_EXIT_IOAPIC_EOI for a routed vector")?;
    // SAFETY: exit_reason is KVM_EXIT_IOAPIC_EOI, so `eoi` is the union's member.
    let vector = unsafe { v.get_kvm_run().__bindgen_anon_1.eoi.vector };
    eq(vector, 0x42, "EOI vector")?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        2,
        "the guest goes on to its OUT",
    )?;
    // The route now names APIC 1: vector 0x40 to APIC 0 does not exit.
    route(1, 0x8040)?;
    let (_v, why) = run_with(v, || msi(0x40))?;
    eq(why, 2, "no EOI exit for a route to another APIC")?;
    eq(g.ram.read(0x6000), 1, "vector 0x40 handled")?;
    Ok(())
}

/// A `KVM_SET_LAPIC` that fails its x2APIC ID check (`KVM_X2APIC_API_USE_32BIT_IDS`, EINVAL)
/// has already taken the SVR, as upstream (`apic_set_spiv` first, then
/// `kvm_recalculate_apic_map` on the error path): deliveries see the APIC software-enabled.
fn failed_set_lapic_keeps_map_consistent() -> Result<(), String> {
    use kvm_bindings::{kvm_enable_cap, kvm_msr_entry, Msrs};
    let g = crate::run::Guest::new(&[0xf4], 0x10000)?;
    g.vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    let mut cap = kvm_enable_cap {
        cap: 129, // KVM_CAP_X2APIC_API
        ..Default::default()
    };
    cap.args[0] = 1; // KVM_X2APIC_API_USE_32BIT_IDS
    g.vm.enable_cap(&cap)
        .map_err(|e| format!("KVM_CAP_X2APIC_API: {e}"))?;
    let v = g.vcpu(0)?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    // IA32_APIC_BASE: x2APIC mode, enabled, BSP.
    let m = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x1b,
        data: 0xfee0_0000 | 0x800 | 0x400 | 0x100,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    eq(
        v.set_msrs(&m).map_err(|e| format!("KVM_SET_MSRS: {e}"))?,
        1,
        "APIC base set",
    )?;
    let fd = g.vm.as_raw_fd();
    let msi = [0xfee0_0000u32, 0, 0x41, 0, 0, 0, 0, 0];
    eq(
        ioctl(fd, KVM_SIGNAL_MSI, msi.as_ptr() as u64),
        Ok(0),
        "MSI to a software-disabled APIC: not accepted",
    )?;
    let mut la = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    la.regs[0x20..0x24].copy_from_slice(&5i32.to_le_bytes().map(|b| b as i8)); // wrong ID
    la.regs[0xf0..0xf4].copy_from_slice(&0x1ffi32.to_le_bytes().map(|b| b as i8));
    eq(
        v.set_lapic(&la).map_err(|e| e.errno()),
        Err(libc::EINVAL),
        "KVM_SET_LAPIC with another x2APIC ID",
    )?;
    let now = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    eq(now.regs[0xf1] as u8 & 1, 1, "SVR enable bit taken")?;
    eq(
        ioctl(fd, KVM_SIGNAL_MSI, msi.as_ptr() as u64),
        Ok(1),
        "MSI accepted by the now software-enabled APIC",
    )?;
    Ok(())
}

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with QEMU's 24 reserved IOAPIC pins, as QEMU
/// enables it right after creating a TD (`kernel-irqchip=split`, the only form a TD takes).
pub(crate) fn enable_split_irqchip(vm: &OwnedFd) -> Result<(), i32> {
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = 24;
    ioctl(
        vm.as_raw_fd(),
        KVM_ENABLE_CAP,
        &cap as *const kvm_bindings::kvm_enable_cap as u64,
    )
    .map(|_| ())
}

/// A TD takes only a split irqchip (upstream 6.16+: `KVM_CREATE_IRQCHIP` is `ENOTTY` with
/// `has_protected_eoi`; `tdx_vcpu_create` answers `EINVAL` without a split irqchip, after its
/// own state check); with the split irqchip the same vCPU is created.
fn td_needs_split_irqchip() -> Result<(), String> {
    let kvm = dev();
    let vm = ioctl(kvm.as_raw_fd(), io(0x01), KVM_X86_TDX_VM)
        .map(|fd| {
            // SAFETY: a fresh fd returned by KVM_CREATE_VM, owned from now on.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        })
        .map_err(|e| format!("KVM_CREATE_VM(TDX): errno {e}"))?;
    let fd = vm.as_raw_fd();
    eq(
        ioctl(fd, KVM_CREATE_IRQCHIP, 0),
        Err(libc::ENOTTY),
        "KVM_CREATE_IRQCHIP on a TD",
    )?;
    eq(
        ioctl(fd, KVM_CREATE_VCPU, 0).map(|_| ()),
        Err(libc::EIO),
        "vCPU before INIT_VM: the state check comes first",
    )?;
    crate::tdx_vm::init_vm_default(fd)?;
    eq(
        ioctl(fd, KVM_CREATE_VCPU, 0).map(|_| ()),
        Err(libc::EINVAL),
        "vCPU without a split irqchip",
    )?;
    eq(enable_split_irqchip(&vm), Ok(()), "KVM_CAP_SPLIT_IRQCHIP")?;
    let v = ioctl(fd, KVM_CREATE_VCPU, 0).map_err(|e| format!("vCPU with split: errno {e}"))?;
    // SAFETY: a fresh fd from KVM_CREATE_VCPU, owned from now on.
    drop(unsafe { OwnedFd::from_raw_fd(v as i32) });
    Ok(())
}

/// The PIT's NMI watchdog (upstream `pit_do_work` -> `kvm_apic_nmi_wd_deliver`): with LVT0
/// unmasked in NMI mode, a PIT tick delivers an NMI through LVT0 although the PIC and the
/// IOAPIC pin are masked; the NMI wakes the halted guest (`sti; hlt` loop), whose handler
/// counts it.
fn pit_nmi_watchdog() -> Result<(), String> {
    let (g, v) = interrupt_guest()?;
    // NMI handler at 0x9200: inc byte [0x6010]; iretq; gate for vector 2.
    let h = 0x9200u64;
    g.ram.write(
        h as usize,
        &[0xfe, 0x04, 0x25, 0x10, 0x60, 0x00, 0x00, 0x48, 0xcf],
    );
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(h as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&8u16.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
    g.ram.write(0x7000 + 2 * 16, &gate);
    // LVT0: NMI mode, unmasked.
    let mut la = v.get_lapic().map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    la.regs[0x350..0x354].copy_from_slice(&0x400i32.to_le_bytes().map(|b| b as i8));
    v.set_lapic(&la)
        .map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;
    g.vm.create_pit2(kvm_bindings::kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    // Reinjection off: every tick is pulsed (no guest acknowledgement of IRQ0 comes).
    let rc = [0u8; 32];
    ioctl(g.vm.as_raw_fd(), 0xae71, rc.as_ptr() as u64)
        .map_err(|e| format!("KVM_REINJECT_CONTROL: {e}"))?;
    let mut st = g.vm.get_pit2().map_err(|e| format!("KVM_GET_PIT2: {e}"))?;
    st.channels[0].count = 1193;
    st.channels[0].mode = 2;
    st.channels[0].rw_mode = 3;
    st.channels[0].gate = 1;
    let vm = &g.vm;
    let (_v, why) = run_with(v, || {
        vm.set_pit2(&st).map_err(|e| format!("KVM_SET_PIT2: {e}"))
    })?;
    eq(why, 2, "the NMI woke the halted guest (exit at its OUT)")?;
    if g.ram.read(0x6010) == 0 {
        return Err("no NMI handled".into());
    }
    eq(
        g.ram.read(0x6000),
        0,
        "no IRQ0 through the masked IOAPIC pin",
    )?;
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
        ("irqfix_pv_kick_wakes_halted_vcpu", Any, |_| {
            pv_kick_wakes_halted_vcpu()
        }),
        ("irqfix_split_eoi_exit_bitmap", Any, |_| {
            split_eoi_exit_bitmap()
        }),
        ("irqfix_failed_set_lapic_keeps_map_consistent", Any, |_| {
            failed_set_lapic_keeps_map_consistent()
        }),
        ("irqfix_td_needs_split_irqchip", Tdx, |_| {
            td_needs_split_irqchip()
        }),
        ("irqfix_pit_nmi_watchdog", Any, |_| pit_nmi_watchdog()),
    ]
}
