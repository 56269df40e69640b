// SPDX-License-Identifier: GPL-2.0-only
//! Issue 12's remaining irqchip and paravirtual pieces (the `irq12` helper's tests): the RTC
//! EOI tracker rebuilt after `KVM_SET_IRQCHIP` and `KVM_SET_LAPIC`, ...

use crate::irqchip::*;
use crate::*;
use kvm_ioctls::VcpuFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;

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

/// `KVM_HC_SCHED_YIELD` (upstream `kvm_sched_yield`): a directed yield to the vCPU with that
/// physical APIC ID when it is ready; to itself, to an ID nobody has, or with no APIC map at
/// all nothing happens. It answers 0 either way.
fn sched_yield_hypercall() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0x66, 0xb8, 0x0b, 0x00, 0x00, 0x00, // mov eax, 11 (KVM_HC_SCHED_YIELD)
        0x66, 0x31, 0xdb, // xor ebx, ebx (APIC ID 0: itself)
        0x0f, 0x01, 0xd9, // vmmcall
        0x66, 0xa3, 0x00, 0x06, // mov [0x600], eax
        0x66, 0xb8, 0x0b, 0x00, 0x00, 0x00, // mov eax, 11
        0x66, 0xbb, 0x34, 0x12, 0x00, 0x00, // mov ebx, 0x1234 (no such vCPU)
        0x0f, 0x01, 0xd9, // vmmcall
        0x66, 0xa3, 0x04, 0x06, // mov [0x604], eax
        0xe6, 0x10, // out 0x10, al
        0xf4, // hlt
    ];
    for irqchip in [false, true] {
        let g = crate::run::Guest::new(code, 0x10000)?;
        if irqchip {
            g.vm.create_irq_chip()
                .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
        }
        g.ram.write(0x600, &[0xff; 8]);
        let mut v = g.vcpu(0)?;
        v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        eq(v.get_kvm_run().exit_reason, 2, "exit at the OUT")?;
        let r = |o: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(o + i)));
        eq(r(0x600), 0, "KVM_HC_SCHED_YIELD to itself")?;
        eq(r(0x604), 0, "KVM_HC_SCHED_YIELD to nobody")?;
    }
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Runs the spinning guest on a thread while this thread, on the same single CPU, counts the
/// times it finds the steal-time record's `preempted` byte (at `byte`) set, up to 3 within 2 s;
/// then stops the vCPU with a signal (`KVM_RUN` must answer `EINTR`).
fn count_preempted(g: &crate::run::Guest, v: &mut VcpuFd, byte: usize) -> Result<u32, String> {
    // SAFETY: a handler that does nothing, no SA_RESTART (KVM_RUN returns EINTR).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    // SAFETY: plain cpu_set_t manipulation and this thread's affinity.
    let old = unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
        old
    };
    let tid = std::sync::atomic::AtomicU64::new(0);
    let started = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (seen, run) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            started.store(true, Ordering::SeqCst);
            let r = v.run().map(|_| ()).map_err(|e| e.errno());
            done.store(true, Ordering::SeqCst);
            r
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let t0 = std::time::Instant::now();
        let mut seen = 0u32;
        while t0.elapsed() < std::time::Duration::from_secs(2) && seen < 3 {
            if g.ram.read(byte) == 1 {
                seen += 1;
                // Let the vCPU run (and clear it) before looking again.
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        // Again and again until KVM_RUN has returned: a signal that comes before the thread is
        // inside KVM_RUN is taken in user space and lost (src/signal.rs).
        while !done.load(Ordering::SeqCst) {
            // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
            unsafe {
                libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
            };
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (seen, h.join())
    });
    // SAFETY: restores this thread's affinity.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old) };
    let run = run.map_err(|_| "vCPU thread panicked".to_string())?;
    eq(run, Err(libc::EINTR), "KVM_RUN ended by the signal")?;
    Ok(seen)
}

/// Steal time's `preempted` byte (upstream `kvm_steal_time_set_preempted` from the preempt
/// notifier's `kvm_arch_vcpu_put`): with this process on one CPU, a spinning guest's thread is
/// switched out at ticks while runnable, right after a host-interrupt exit (an instruction
/// boundary), so whenever this thread runs the vCPU's record says `KVM_VCPU_PREEMPTED` (1);
/// the next entry clears it again (`record_steal_time`). Before any run it is 0. Deleting a
/// memslot drops the cached address (upstream: the memslot generation changes); the next
/// record caches it again.
fn steal_time_preempted_byte() -> Result<(), String> {
    const ST: u64 = 0x2200;
    let g = crate::run::Guest::new(&[0xeb, 0xfe], 0x10000)?; // l: jmp l
    let mut v = g.vcpu(0)?;
    let msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: 0x4b56_4d03, // MSR_KVM_STEAL_TIME
        data: ST | 1,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    eq(
        v.set_msrs(&msrs).map_err(|e| e.to_string())?,
        1,
        "STEAL_TIME enabled",
    )?;
    let byte = ST as usize + 16;
    eq(g.ram.read(byte), 0, "preempted before any run")?;
    if count_preempted(&g, &mut v, byte)? == 0 {
        return Err("the record never said preempted while the vCPU was switched out".into());
    }
    let version = u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(ST as usize + 8 + i)));
    eq(version & 1, 0, "steal-time version even")?;
    // A slot created and deleted (KVM_SET_USER_MEMORY_REGION with size 0).
    let extra = crate::run::Mem::new(0x1000)?;
    g.slot(2, 0x10_0000, &extra, 0)?;
    let del = kvm_bindings::kvm_userspace_memory_region {
        slot: 2,
        guest_phys_addr: 0x10_0000,
        ..Default::default()
    };
    // SAFETY: deleting a slot maps nothing.
    unsafe { g.vm.set_user_memory_region(del) }.map_err(|e| format!("delete slot 2: {e}"))?;
    if count_preempted(&g, &mut v, byte)? == 0 {
        return Err("not reported preempted after a memslot deletion".into());
    }
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
        ("irq12_sched_yield_hypercall", Any, |_| {
            sched_yield_hypercall()
        }),
        ("irq12_steal_time_preempted_byte", Any, |_| {
            steal_time_preempted_byte()
        }),
        ("irq12_td_vcpu_lapic_x2apic_after_init_vcpu", Tdx, |_| {
            td_vcpu_lapic_x2apic_after_init_vcpu()
        }),
    ]
}
