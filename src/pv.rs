// SPDX-License-Identifier: GPL-2.0-only
//! A vCPU's side of the KVM paravirtual interface (the rules are `x86::pv`'s): the PV MSRs
//! (kvm-clock, wall clock, steal time, poll control; async PF and PV EOI as values only) for the guest's RDMSR/WRMSR and the host's
//! `KVM_GET/SET_MSRS`, `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, the pvclock and steal-time records
//! written into guest memory before an entry, and the PV hypercalls' feature gate.
//!
//! The records follow upstream's protocols: the pvclock record (`kvm_setup_guest_pvclock`) gets
//! an odd version, the new contents (keeping the guest's `PVCLOCK_GUEST_STOPPED`), then the
//! next even version; the steal-time record (`record_steal_time`) likewise, `preempted` cleared
//! and `steal` advanced by the task's scheduler run delay since the last update. Both are
//! written from the vCPU thread before the IRQs-off entry section, through the memslots' user
//! mapping, and mark their page dirty.
//!
//! When: the pvclock record after the MSR enables it, after `KVM_SET_CLOCK` or a master-clock
//! change (the VM's clock generation), and when the vCPU's TSC offset changed; the steal-time
//! record after the MSR enables it, at each `KVM_RUN` (upstream: each `vcpu_load`) and whenever
//! the run delay grew since the last record (the thread waited for a CPU). `preempted` is set
//! by the preempt notifier of [`crate::irq::sched`] when the vCPU thread is switched out while
//! runnable at an instruction boundary (upstream `kvm_steal_time_set_preempted`), at the address
//! each record caches for it; the next record clears it.

use crate::guest_mem::MemEnv;
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::Vm;
use core::sync::atomic::{compiler_fence, Ordering};
use kernel::prelude::*;
use x86::msr::MsrFault;
use x86::pv::{self, KvmStealTime, PvCpuid, PvEffect, PvMsrs, PvclockVcpuTimeInfo};
use x86::uapi::{KvmCpuidEntry2, Pod};
use x86emu::emulate::EmuEnv;
use x86emu::Gpa;

/// A vCPU's PV state (in [`VcpuLocked`]).
#[derive(Default)]
pub(crate) struct VcpuPv {
    /// The PV MSRs' values.
    msrs: PvMsrs,
    /// `vcpu->arch.pv_cpuid`.
    cpuid: PvCpuid,
    /// `KVM_REQ_CLOCK_UPDATE`.
    clock_update: bool,
    /// The VM clock generation the record was last computed for.
    seen_generation: u64,
    /// The TSC offset the record was last computed with.
    last_tsc_offset: u64,
    /// `KVM_REQ_STEAL_UPDATE`.
    steal_update: bool,
    /// `vcpu->arch.st.last_steal`: the run delay at the last steal-time record.
    last_steal: u64,
    /// `pvclock_set_guest_stopped_request` (`KVM_KVMCLOCK_CTRL`).
    stopped_request: bool,
}

/// `KVM_KVMCLOCK_CTRL` (`_IO(KVMIO, 0xad)`).
pub(crate) const KVM_KVMCLOCK_CTRL: u32 = 0xaead;

/// vCPU `KVM_KVMCLOCK_CTRL` (upstream `kvm_set_guest_paused`): the host paused the guest, so
/// its next pvclock record carries `PVCLOCK_GUEST_STOPPED` (the guest's watchdogs then forgive
/// the gap); `EINVAL` while kvm-clock is off.
pub(crate) fn kvmclock_ctrl(vcpu: &Vcpu) -> Result<isize> {
    let mut l = vcpu.lock();
    if l.pv.msrs.system_time & pv::KVM_MSR_ENABLED == 0 {
        return Err(EINVAL);
    }
    l.pv.stopped_request = true;
    l.pv.clock_update = true;
    Ok(0)
}

fn sched_info_on() -> bool {
    // SAFETY: reads a kernel static key; no preconditions.
    unsafe { crate::clock::glue::tdxkvm_sched_info_on() }
}

fn run_delay() -> u64 {
    // SAFETY: reads the current task's scheduler statistics; no preconditions.
    unsafe { crate::clock::glue::tdxkvm_current_run_delay() }
}

/// `KVM_GET_SUPPORTED_CPUID`'s KVM features leaf: without `sched_info` the host cannot account
/// steal time, so `KVM_FEATURE_STEAL_TIME` goes (upstream `__do_cpuid_func`).
pub(crate) fn supported_cpuid(entries: &mut [KvmCpuidEntry2]) {
    if sched_info_on() {
        return;
    }
    for e in entries.iter_mut() {
        if e.function == 0x4000_0000 | pv::KVM_CPUID_FEATURES {
            e.eax &= !(1 << pv::feature::STEAL_TIME);
        }
    }
}

/// `KVM_SET_CPUID2`'s runtime update of a new table (`__kvm_update_cpuid_runtime`'s KVM leaf:
/// PV_UNHALT goes while HLT exits are disabled).
pub(crate) fn cpuid_runtime(vm: &Vm, entries: &mut [KvmCpuidEntry2]) {
    pv::update_runtime(entries, vm.clock().hlt_in_guest());
}

/// After a table was set (`kvm_vcpu_after_set_cpuid` → `kvm_update_pv_runtime`).
pub(crate) fn after_set_cpuid(l: &mut VcpuLocked) {
    let VcpuLocked { pv, cpuid, .. } = l;
    pv.cpuid.update(&cpuid.entries);
}

/// vCPU `KVM_ENABLE_CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)`.
pub(crate) fn set_enforce(l: &mut VcpuLocked, on: bool) {
    l.pv.cpuid.enforce = on;
    if on {
        after_set_cpuid(l);
    }
}

/// INIT or RESET (`kvm_vcpu_reset`): kvm-clock and steal time are off again.
pub(crate) fn reset(l: &mut VcpuLocked) {
    l.pv.msrs.reset();
}

/// Applies a successful write's effect (`kvm_write_wall_clock`, `kvm_write_system_time`,
/// `KVM_REQ_STEAL_UPDATE`).
fn apply(vcpu: &Vcpu, l: &mut VcpuLocked, effect: PvEffect, host: bool) {
    let clock = vcpu.vm().clock();
    match effect {
        PvEffect::None => {}
        PvEffect::WallClock(gpa) => {
            clock.set_wall_clock_msr(gpa);
            write_wall_clock(vcpu.vm(), gpa);
        }
        PvEffect::SystemTime { old_msr } => {
            if vcpu.id() == 0 && !host {
                clock.boot_vcpu_msr(old_msr);
            }
            l.pv.clock_update = true;
        }
        PvEffect::StealTime => l.pv.steal_update = true,
    }
}

/// What a PV MSR write needs (`x86::pv::set`): sched_info, the in-kernel LAPIC, guest RAM.
fn write_env<'a>(l: &VcpuLocked, ram: &'a dyn Fn(u64, u64) -> bool) -> pv::PvWriteEnv<'a> {
    pv::PvWriteEnv {
        sched_info_on: sched_info_on(),
        lapic_in_kernel: l.irq.lapic.is_some(),
        ram,
    }
}

/// A guest RDMSR: the PV MSRs here, the rest in [`crate::vcpu_state::guest_rdmsr`].
pub(crate) fn guest_rdmsr(vcpu: &Vcpu, l: &VcpuLocked, index: u32) -> Result<u64, MsrFault> {
    let wall = vcpu.vm().clock().wall_clock_msr();
    match pv::get(&l.pv.msrs, &l.pv.cpuid, wall, index) {
        Some(r) => r,
        None => crate::vcpu_state::guest_rdmsr(vcpu.vm(), l, index), // HOOK(abi): the VM
    }
}

/// A guest WRMSR: the PV MSRs here, the rest in [`crate::vcpu_state::guest_wrmsr`].
pub(crate) fn guest_wrmsr(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    index: u32,
    data: u64,
) -> Result<(), MsrFault> {
    let cpuid = l.pv.cpuid;
    let vm = vcpu.vm();
    let ram = |gpa, len| crate::guest_mem::is_writable_ram(vm, gpa, len);
    let env = write_env(l, &ram);
    match pv::set(&mut l.pv.msrs, &cpuid, index, data, &env) {
        Some(Ok(e)) => {
            apply(vcpu, l, e, false);
            Ok(())
        }
        Some(Err(f)) => Err(f),
        None => crate::vcpu_state::guest_wrmsr(l, index, data),
    }
}

/// Host `KVM_GET_MSRS` of one entry: `None` if not a PV MSR, else whether it succeeded.
pub(crate) fn host_get(vcpu: &Vcpu, l: &VcpuLocked, index: u32, data: &mut u64) -> Option<bool> {
    let wall = vcpu.vm().clock().wall_clock_msr();
    pv::host_get(&l.pv.msrs, &l.pv.cpuid, wall, index).map(|r| {
        *data = r.unwrap_or(0);
        r.is_some()
    })
}

/// Host `KVM_SET_MSRS` of one entry: `None` if not a PV MSR, else whether it succeeded.
pub(crate) fn host_set(vcpu: &Vcpu, l: &mut VcpuLocked, index: u32, data: u64) -> Option<bool> {
    let cpuid = l.pv.cpuid;
    let vm = vcpu.vm();
    let ram = |gpa, len| crate::guest_mem::is_writable_ram(vm, gpa, len);
    let env = write_env(l, &ram);
    pv::host_set(&mut l.pv.msrs, &cpuid, index, data, &env).map(|r| match r {
        Some(e) => {
            apply(vcpu, l, e, true);
            true
        }
        None => false,
    })
}

/// The hypercalls of the PV interface (`HOOK(clock)` in the VMMCALL handler, upstream
/// `__kvm_emulate_hypercall`): `Some(rax)` when a PV call's feature is missing under
/// enforcement (`-KVM_ENOSYS`), and `KVM_HC_CLOCK_PAIRING`'s answer; `None` leaves the call to
/// the generic code, which also answers CPL > 0 callers (`-KVM_EPERM` comes first upstream).
pub(crate) fn hypercall(
    vcpu: &Vcpu,
    l: &VcpuLocked,
    c: &x86::exits::hypercall::Call,
) -> Option<u64> {
    if c.cpl != 0 {
        return None;
    }
    let mask = if c.long_mode { u64::MAX } else { 0xffff_ffff };
    let nr = c.rax & mask;
    if nr == pv::KVM_HC_CLOCK_PAIRING {
        return Some(clock_pairing(vcpu.vm(), l, c.rbx & mask, c.rcx & mask) & mask);
    }
    let gate = pv::hypercall_gate(nr, &l.pv.cpuid).map(|v| v & mask);
    if gate.is_none() && nr == pv::KVM_HC_KICK_CPU {
        // HOOK(irqfix): kvm_pv_kick_cpu_op(a1), a remote-read request to that APIC ID.
        crate::irq::lapic::pv_kick(vcpu.vm(), (c.rcx & mask) as u32);
        // HOOK(irq12): then kvm_sched_yield(vcpu, a1): a directed yield to the kicked vCPU.
        crate::irq::sched::sched_yield(vcpu, c.rcx & mask);
        return Some(0);
    }
    if gate.is_none() && nr == pv::KVM_HC_SCHED_YIELD {
        // HOOK(irq12): kvm_sched_yield(vcpu, a0).
        crate::irq::sched::sched_yield(vcpu, c.rbx & mask);
        return Some(0);
    }
    gate
}

/// `kvm_pv_clock_pairing`: the host's real time and the guest TSC of one reading, written at
/// `gpa`; only the wall-clock type and only with the TSC as host clocksource
/// (`-KVM_EOPNOTSUPP` otherwise), `-KVM_EFAULT` when the record cannot be written.
fn clock_pairing(vm: &Vm, l: &VcpuLocked, gpa: u64, clock_type: u64) -> u64 {
    if clock_type != pv::KVM_CLOCK_PAIRING_WALLCLOCK {
        return pv::KVM_EOPNOTSUPP.wrapping_neg();
    }
    let s = crate::clock::snapshot();
    if s.tsc_based == 0 {
        return pv::KVM_EOPNOTSUPP.wrapping_neg();
    }
    let p = pv::clock_pairing(s.real_ns, s.tsc.wrapping_add(l.arch.tsc_offset));
    let mut mem = MemEnv::new(vm);
    match write_guest(&mut mem, gpa, p.as_bytes()) {
        Some(()) => 0,
        None => pv::KVM_EFAULT.wrapping_neg(),
    }
}

/// At the start of `KVM_RUN`'s loop (upstream `kvm_arch_vcpu_load`: `KVM_REQ_STEAL_UPDATE`,
/// and without the master clock a clock update, since the record's (TSC, ns) pair was taken
/// from this CPU's TSC and the raw clock, which drift apart).
pub(crate) fn vcpu_load(vm: &Vm, l: &mut VcpuLocked) {
    l.pv.steal_update = true;
    if !vm.clock().uses_master_clock() {
        l.pv.clock_update = true;
    }
}

/// Before each entry, with preemption and IRQs still on (`vcpu_enter_guest`'s requests
/// `KVM_REQ_CLOCK_UPDATE` / `KVM_REQ_STEAL_UPDATE`): HLT exits per the VM's setting, then the
/// pvclock and steal-time records when due.
pub(crate) fn before_entry(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let vm = vcpu.vm();
    let hlt_in_guest = vm.clock().hlt_in_guest();
    if let Some(crate::run::VcpuBackend::Svm(s)) = l.backend.as_mut() {
        s.set_hlt_intercept(!hlt_in_guest);
    }
    // HOOK(hostile): KVM_REQ_MASTERCLOCK_UPDATE (the first vCPU's creation asks for it).
    vm.clock().masterclock_request();
    let gen = vm.clock().generation();
    if l.pv.seen_generation != gen || l.pv.last_tsc_offset != l.arch.tsc_offset {
        l.pv.clock_update = true;
    }
    if l.pv.clock_update {
        l.pv.clock_update = false;
        l.pv.seen_generation = gen;
        l.pv.last_tsc_offset = l.arch.tsc_offset;
        guest_time_update(vm, l);
    }
    // HOOK(irq12): the preempted byte the notifier wrote marks its page dirty; a switch-in
    // asks for an update (kvm_arch_vcpu_load's KVM_REQ_STEAL_UPDATE).
    crate::irq::sched::flush_dirty(vcpu);
    if crate::irq::sched::take_steal_request(vcpu) {
        l.pv.steal_update = true;
    }
    if l.pv.msrs.steal_time & pv::KVM_MSR_ENABLED == 0 {
        crate::irq::sched::steal_off(vcpu); // HOOK(irq12)
    } else if l.pv.steal_update || run_delay() != l.pv.last_steal {
        l.pv.steal_update = false;
        record_steal_time(vcpu, l);
    }
}

/// The length of the first piece of `len` bytes at `gpa` that stays within one page.
fn piece(gpa: u64, len: usize) -> usize {
    len.min(4096 - (gpa & 0xfff) as usize)
}

/// Reads a `T` from guest memory at `gpa`, page by page (upstream `kvm_read_guest`).
fn read_guest<T: Pod>(mem: &mut MemEnv<'_>, gpa: u64) -> Option<T> {
    let mut v = T::zeroed();
    let mut buf = v.as_bytes_mut();
    let mut at = gpa;
    while !buf.is_empty() {
        let n = piece(at, buf.len());
        let (head, rest) = buf.split_at_mut(n);
        mem.read_ram(Gpa(at), head).ok()?;
        buf = rest;
        at = at.wrapping_add(n as u64);
    }
    Some(v)
}

/// Writes `bytes` to guest memory at `gpa`, page by page, marking the pages dirty (upstream
/// `kvm_write_guest`; it stops at the first page that is not writable RAM).
fn write_guest(mem: &mut MemEnv<'_>, gpa: u64, mut bytes: &[u8]) -> Option<()> {
    let mut at = gpa;
    while !bytes.is_empty() {
        let n = piece(at, bytes.len());
        mem.write_ram(Gpa(at), &bytes[..n]).ok()?;
        bytes = &bytes[n..];
        at = at.wrapping_add(n as u64);
    }
    Some(())
}

/// Whether `len` bytes at `gpa` stay within one page (upstream's gfn-to-pfn cache refuses a
/// record that crosses one, and the record then is never written).
fn in_one_page(gpa: u64, len: usize) -> bool {
    (gpa & 0xfff) as usize + len <= 4096
}

/// `kvm_guest_time_update` + `kvm_setup_guest_pvclock`.
fn guest_time_update(vm: &Vm, l: &mut VcpuLocked) {
    let msr = l.pv.msrs.system_time;
    if msr & pv::KVM_MSR_ENABLED == 0 {
        return;
    }
    let gpa = msr & !1;
    const LEN: usize = core::mem::size_of::<PvclockVcpuTimeInfo>();
    if !in_one_page(gpa, LEN) {
        return;
    }
    let (host_tsc, kvmclock_ns, stable) = vm.clock().guest_time();
    let guest_tsc = host_tsc.wrapping_add(l.arch.tsc_offset);
    let mut t = pv::time_info(guest_tsc, kvmclock_ns, crate::clock::host_tsc_khz(), stable);
    let mut mem = MemEnv::new(vm);
    let Some(old) = read_guest::<PvclockVcpuTimeInfo>(&mut mem, gpa) else {
        return;
    };
    let odd = pv::pvclock_version_begin(old.version);
    if write_guest(&mut mem, gpa, &odd.to_le_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    t.version = odd;
    t.flags |= old.flags & pv::PVCLOCK_GUEST_STOPPED;
    if core::mem::take(&mut l.pv.stopped_request) {
        t.flags |= pv::PVCLOCK_GUEST_STOPPED;
    }
    if write_guest(&mut mem, gpa, t.as_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    let _ = write_guest(&mut mem, gpa, &odd.wrapping_add(1).to_le_bytes());
}

/// `kvm_write_wall_clock`: the guest's epoch (the host's real time when kvm-clock was 0) at
/// `gpa`, with the version protocol (the record may cross a page, as `kvm_write_guest`
/// allows); nothing if the record is not in RAM, nothing for GPA 0.
fn write_wall_clock(vm: &Vm, gpa: u64) {
    if gpa == 0 {
        return;
    }
    let mut mem = MemEnv::new(vm);
    let Some(old) = read_guest::<pv::PvclockWallClock>(&mut mem, gpa) else {
        return;
    };
    let odd = pv::seq_version_begin(old.version);
    if write_guest(&mut mem, gpa, &odd.to_le_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    let w = pv::wall_clock(vm.clock().wall_clock_epoch(), odd);
    if write_guest(&mut mem, gpa, w.as_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    let _ = write_guest(&mut mem, gpa, &odd.wrapping_add(1).to_le_bytes());
}

/// `record_steal_time` (without PV TLB flush, which is not offered).
fn record_steal_time(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let vm = vcpu.vm();
    let gpa = l.pv.msrs.steal_time & pv::KVM_STEAL_VALID_BITS;
    // HOOK(irq12): no cache for the preempt notifier until the record is written.
    crate::irq::sched::steal_off(vcpu);
    let mut mem = MemEnv::new(vm);
    let Some(st) = read_guest::<KvmStealTime>(&mut mem, gpa) else {
        return;
    };
    if write_guest(&mut mem, gpa + pv::STEAL_OFF_PREEMPTED, &[0]).is_none() {
        return;
    }
    // HOOK(irq12): vcpu->arch.st.preempted = 0, and the byte's address for the notifier.
    let byte = gpa + pv::STEAL_OFF_PREEMPTED;
    crate::irq::sched::steal_recorded(vcpu, byte >> 12, crate::guest_mem::ram_hva(vm, byte));
    let odd = pv::seq_version_begin(st.version);
    if write_guest(&mut mem, gpa + pv::STEAL_OFF_VERSION, &odd.to_le_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    let delay = run_delay();
    let steal = st.steal.wrapping_add(delay.wrapping_sub(l.pv.last_steal));
    l.pv.last_steal = delay;
    if write_guest(&mut mem, gpa + pv::STEAL_OFF_STEAL, &steal.to_le_bytes()).is_none() {
        return;
    }
    compiler_fence(Ordering::SeqCst);
    let _ = write_guest(
        &mut mem,
        gpa + pv::STEAL_OFF_VERSION,
        &odd.wrapping_add(1).to_le_bytes(),
    );
}
