// SPDX-License-Identifier: GPL-2.0-only
//! The entry/exit fast paths (issue 11 performance, `exitcost`): state the module now switches
//! once per load instead of around every `VMRUN`, checked under preemption and CPU migration.
//!
//! - TSC_AUX: the guest's value stays in the MSR between entries and the host's comes back
//!   when the vCPU thread is scheduled out or `KVM_RUN` returns. The guest reads it with
//!   RDTSCP (not intercepted) and reports it; after every `KVM_RUN` the thread reads the host's
//!   with RDTSCP too, which must be the CPU it is pinned to (Linux keeps `cpu | node << 12`
//!   there).
//! - The host's VMSAVE state (FS/GS/TR/...) is saved once per load into the CPU's save area,
//!   shared by every vCPU thread on that CPU: two vCPU threads (two VMs) hop between the CPUs,
//!   often onto the same one, so the save area changes hands; a stale one would bring back the
//!   other thread's FS/GS bases (its thread-local storage: the checks below would not run).
//! - Debug registers: DR accesses are intercepted until the guest makes one, which then runs
//!   without exits for one run, and the guest's DR0 is read back after it. The guest writes a
//!   new DR0 each round and reads it back; `KVM_GET_DEBUGREGS` must agree.

use crate::run::Guest;
use crate::*;
use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::VcpuExit;

const MSR_TSC_AUX: u32 = 0xc000_0103;
/// Rounds per thread (two exits each).
const ROUNDS: u32 = 150;

pub(crate) fn tests() -> Vec<Test> {
    vec![(
        "exitcost_tsc_aux_vmsave_and_dr_across_migration",
        Any,
        |_| crate::run::with_svm(tsc_aux_and_dr),
    )]
}

/// Real mode: `xor ebx, ebx; l: rdtscp; out 0x10, ecx (as eax); inc ebx; mov dr0, ebx;
/// mov eax, dr0; out 0x11, eax; jmp l`.
const GUEST: &[u8] = &[
    0x66, 0x31, 0xdb, // xor ebx, ebx
    0x0f, 0x01, 0xf9, // l: rdtscp
    0x66, 0x89, 0xc8, // mov eax, ecx
    0xba, 0x10, 0x00, // mov dx, 0x10
    0x66, 0xef, // out dx, eax
    0x66, 0x43, // inc ebx
    0x0f, 0x23, 0xc3, // mov dr0, ebx
    0x0f, 0x21, 0xc0, // mov eax, dr0
    0xba, 0x11, 0x00, // mov dx, 0x11
    0x66, 0xef, // out dx, eax
    0xeb, 0xe6, // jmp l
];

/// The host's TSC_AUX as RDTSCP returns it.
fn host_tsc_aux() -> u32 {
    let mut aux = 0u32;
    // SAFETY: RDTSCP has no memory operands besides the out-pointer.
    unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    aux
}

fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity({cpu}): {}", errno_str()));
        }
    }
    Ok(())
}

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

/// One vCPU thread: `ROUNDS` rounds hopping between the CPUs.
fn one_thread(t: u32, ncpu: usize) -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let g = Guest::new(GUEST, 0x1000)?;
    let mut v = g.vcpu(0)?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let guest_aux = 0xa_b000 + t;
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_TSC_AUX,
        data: u64::from(guest_aux),
        ..Default::default()
    }])
    .map_err(|e| format!("Msrs: {e:?}"))?;
    eq(v.set_msrs(&msrs).ok(), Some(1), "KVM_SET_MSRS TSC_AUX")?;
    for i in 0..ROUNDS {
        // Thread t starts on CPU t and changes CPU every few rounds, so both threads often
        // share one CPU.
        let cpu = ((i / 3) as usize + t as usize) % ncpu;
        pin(cpu)?;
        for (port, want) in [(0x10u16, guest_aux), (0x11, i + 1)] {
            let got = match v.run().map_err(|e| format!("round {i}: KVM_RUN: {e}"))? {
                VcpuExit::IoOut(p, d) if p == port && d.len() == 4 => {
                    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
                }
                e => return Err(format!("round {i}: want OUT {port:#x}, got {e:?}")),
            };
            let what = if port == 0x10 {
                "guest RDTSCP's TSC_AUX"
            } else {
                "guest DR0 read back"
            };
            eq(
                got,
                want,
                &format!("thread {t} round {i} on CPU {cpu}: {what}"),
            )?;
            eq(
                host_tsc_aux() & 0xfff,
                cpu as u32,
                &format!("thread {t} round {i}: host TSC_AUX after KVM_RUN on CPU {cpu}"),
            )?;
        }
        let d = v
            .get_debug_regs()
            .map_err(|e| format!("KVM_GET_DEBUGREGS: {e}"))?;
        eq(
            d.db[0],
            u64::from(i + 1),
            &format!("round {i}: KVM_GET_DEBUGREGS db[0]"),
        )?;
    }
    let mut m = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_TSC_AUX,
        ..Default::default()
    }])
    .map_err(|e| format!("Msrs: {e:?}"))?;
    eq(v.get_msrs(&mut m).ok(), Some(1), "KVM_GET_MSRS TSC_AUX")?;
    eq(
        m.as_slice()[0].data,
        u64::from(guest_aux),
        "KVM_GET_MSRS TSC_AUX value",
    )
}

fn tsc_aux_and_dr() -> Result<(), String> {
    // SAFETY: plain sysconf.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let hs: Vec<_> = (0..2u32)
        .map(|t| std::thread::spawn(move || one_thread(t, ncpu)))
        .collect();
    let mut r = Ok(());
    for h in hs {
        let x = h.join().map_err(|_| "thread panicked".to_string())?;
        if r.is_ok() {
            r = x;
        }
    }
    r
}
