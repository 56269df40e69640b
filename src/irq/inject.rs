// SPDX-License-Identifier: GPL-2.0-only
//! Event injection, backend-neutral (upstream `kvm_check_and_inject_events`, `process_nmi`,
//! `vcpu_block`, the interrupt-window exit of `vcpu_run`, `KVM_INTERRUPT`, `KVM_NMI`,
//! `KVM_GET/SET_MP_STATE` with an in-kernel LAPIC).
//!
//! Before every entry [`before_entry`] decides what the backend injects (in
//! `CpuState.events`: an exception, an NMI or an external interrupt, in that priority, with
//! re-injection of an event whose delivery an exit cut short first) and which windows it opens
//! ([`Windows`]: an exit as soon as the guest can take an interrupt, or an NMI). The backend
//! does the mechanics (SVM: EVENTINJ, VINTR, IRET intercept; [`crate::svm::events`]).
//!
//! Interrupt sources: with a userspace irqchip, `KVM_INTERRUPT` queues the vector as injected
//! directly (userspace checked `ready_for_interrupt_injection`), and
//! `request_interrupt_window` makes `KVM_RUN` return `KVM_EXIT_IRQ_WINDOW_OPEN` once the guest
//! can take one. With an in-kernel LAPIC the LAPIC's highest pending vector above its PPR is
//! injected, or an ExtINT (the in-kernel PIC, or with a split irqchip the vector
//! `KVM_INTERRUPT` left) when LINT0 accepts it.
//!
//! HLT with an in-kernel LAPIC halts in the kernel (MP state `HALTED`): [`block_until_runnable`]
//! sleeps until an interrupt the guest can take, an NMI, INIT/SIPI, the LAPIC timer, a kick
//! or a signal.

use crate::irq::kick;
use crate::irq::lapic;
use crate::run::uapi::RunPage;
use crate::vcpu::{Vcpu, VcpuLocked};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use x86::state::{CpuState, QueuedInterrupt};
use x86::uapi::{mp_state, KvmMpState};

/// `KVM_INTERRUPT` (`_IOW(KVMIO, 0x86, struct kvm_interrupt)`).
pub(crate) const KVM_INTERRUPT: u32 = 0x4004_ae86;
/// `KVM_NMI` (`_IO(KVMIO, 0x9a)`).
pub(crate) const KVM_NMI: u32 = 0xae9a;
/// `KVM_GET_MP_STATE`.
const KVM_GET_MP_STATE: u32 = 0x8004_ae98;
/// `KVM_SET_MP_STATE`.
const KVM_SET_MP_STATE: u32 = 0x4004_ae99;
/// `KVM_NR_INTERRUPTS`.
const KVM_NR_INTERRUPTS: u32 = 256;
/// `KVM_EXIT_IRQ_WINDOW_OPEN`.
const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
/// `kvm_run.request_interrupt_window` (u8).
const REQUEST_INTERRUPT_WINDOW: usize = 0;

const RFLAGS_IF: u64 = 1 << 9;

/// The windows the backend opens for the next entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Exit as soon as the guest can take an external interrupt.
    pub(crate) irq: bool,
    /// Exit as soon as the guest can take an NMI.
    pub(crate) nmi: bool,
}

/// A vCPU's interrupt state under the vCPU mutex (a field of [`VcpuLocked`]).
#[derive(Default)]
pub(crate) struct IrqLocked {
    /// With a split irqchip: the ExtINT vector `KVM_INTERRUPT` left (upstream
    /// `pending_external_vector`).
    pending_external_vector: Option<u8>,
    /// The in-kernel LAPIC (`None` without an in-kernel irqchip).
    pub(crate) lapic: Option<lapic::VcpuLapic>,
}

fn lapic_in_kernel(l: &VcpuLocked) -> bool {
    l.irq.lapic.is_some()
}

/// Upstream `svm_interrupt_blocked` inverted (GIF is always 1 here: no nested SVM).
fn interrupt_allowed(st: &CpuState) -> bool {
    st.rflags & RFLAGS_IF != 0 && st.events.interrupt_shadow == 0
}

/// Upstream `svm_nmi_blocked` inverted.
fn nmi_allowed(st: &CpuState) -> bool {
    !st.events.nmi_masked && st.events.interrupt_shadow == 0
}

/// Upstream `kvm_cpu_has_extint`: an ExtINT the vCPU would take (PIC output, or the split
/// irqchip's `KVM_INTERRUPT` vector, through LINT0 in ExtINT mode).
fn has_extint(vcpu: &Vcpu, l: &VcpuLocked) -> bool {
    if !lapic_in_kernel(l) {
        return l.arch.events.interrupt.injected;
    }
    if !lapic::accept_pic_intr(l) {
        return false;
    }
    match vcpu.vm().irqchip_mode() {
        crate::irq::IrqchipMode::Split => l.irq.pending_external_vector.is_some(),
        _ => lapic::pic_has_interrupt(vcpu.vm()),
    }
}

/// Upstream `kvm_cpu_has_injectable_intr` with an in-kernel LAPIC (without one, the
/// interrupt `KVM_INTERRUPT` queued is already being injected).
fn has_injectable_intr(vcpu: &Vcpu, l: &mut VcpuLocked) -> bool {
    lapic_in_kernel(l) && (has_extint(vcpu, l) || lapic::has_interrupt(l))
}

/// Upstream `kvm_cpu_get_interrupt`: ExtINT first, then the LAPIC's (acknowledged: IRR to ISR).
fn get_interrupt(vcpu: &Vcpu, l: &mut VcpuLocked) -> Option<u8> {
    if has_extint(vcpu, l) {
        if vcpu.vm().irqchip_mode() == crate::irq::IrqchipMode::Split {
            return l.irq.pending_external_vector.take();
        }
        return Some(lapic::pic_ack(vcpu.vm()));
    }
    lapic::ack(vcpu, l)
}

/// Upstream `dm_request_for_irq_injection`: userspace asked for an interrupt window and owns
/// the PIC.
fn dm_request_for_irq_injection(vcpu: &Vcpu, run: RunPage) -> bool {
    // SAFETY: the vCPU's kvm_run page; userspace may write it any time: one volatile read.
    let req = unsafe { core::ptr::read_volatile(run.0.add(REQUEST_INTERRUPT_WINDOW)) };
    req != 0 && vcpu.vm().irqchip_mode() != crate::irq::IrqchipMode::Kernel
}

/// Upstream `kvm_cpu_accept_dm_intr`: room for an interrupt from userspace.
fn accept_dm_intr(vcpu: &Vcpu, l: &VcpuLocked) -> bool {
    if has_extint(vcpu, l) {
        return false;
    }
    !lapic_in_kernel(l) || lapic::accept_pic_intr(l)
}

/// Upstream `kvm_vcpu_ready_for_interrupt_injection`: not while an event still needs to be
/// (re)injected (`kvm_event_needs_reinjection`) or an exception or triple fault is pending
/// (`kvm_is_exception_pending`): userspace must be at an instruction boundary with nothing
/// half-injected to inject an interrupt itself.
fn ready_for_interrupt_injection(vcpu: &Vcpu, l: &VcpuLocked) -> bool {
    let e = &l.arch.events;
    let needs_reinjection = e.exception.injected || e.interrupt.injected || e.nmi_injected;
    let exception_pending = e.exception.pending || e.triple_fault_pending;
    interrupt_allowed(&l.arch)
        && accept_dm_intr(vcpu, l)
        && !needs_reinjection
        && !exception_pending
}

/// `kvm_run.ready_for_interrupt_injection` (upstream `post_kvm_run_save`).
pub(crate) fn ready_for_user_injection(vcpu: &Vcpu, l: &VcpuLocked) -> bool {
    vcpu.vm().irqchip_mode() == crate::irq::IrqchipMode::Kernel
        || ready_for_interrupt_injection(vcpu, l)
}

/// `kvm_run.cr8`: the CR8 the guest sees (with an in-kernel LAPIC kept equal to its TPR
/// bits 7:4 by [`lapic`]).
pub(crate) fn cr8(l: &VcpuLocked) -> u64 {
    l.arch.cr8
}

/// Upstream `process_nmi`: pending NMIs (other threads' were folded in by [`lapic::sync`])
/// collapse to two, or one while an NMI is in service or being injected.
fn process_nmi(st: &mut CpuState) {
    let e = &mut st.events;
    let limit = if e.nmi_masked || e.nmi_injected { 1 } else { 2 };
    e.nmi_pending = e.nmi_pending.min(limit);
}

/// Before each entry (upstream `kvm_check_and_inject_events` and the window requests of
/// `vcpu_enter_guest`): what to inject, which windows to open.
pub(crate) fn before_entry(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage) -> Windows {
    vcpu.irq.take_event_request();
    lapic::sync(vcpu, l);
    process_nmi(&mut l.arch);
    let ev = &l.arch.events;
    // Re-injection (and a pending exception, which the backend injects) comes first.
    let mut can_inject = !(ev.exception.injected
        || ev.exception.pending
        || ev.nmi_injected
        || ev.interrupt.injected);
    let mut w = Windows::default();
    // HOOK(abi): KVM_GUESTDBG_BLOCKIRQ: no NMI or interrupt is injected and no window opens for
    // them (upstream kvm_check_and_inject_events returns first); userspace's own
    // request_interrupt_window still opens the IRQ window (vcpu_enter_guest's req_int_win).
    if l.exits.debug.blocks_irq() {
        w.irq = dm_request_for_irq_injection(vcpu, run) && accept_dm_intr(vcpu, l);
        return w;
    }
    if l.arch.events.nmi_pending > 0 {
        if can_inject && nmi_allowed(&l.arch) {
            l.arch.events.nmi_pending -= 1;
            l.arch.events.nmi_injected = true;
            can_inject = false;
        }
        w.nmi = l.arch.events.nmi_pending > 0;
    }
    if has_injectable_intr(vcpu, l) {
        if can_inject && interrupt_allowed(&l.arch) {
            if let Some(v) = get_interrupt(vcpu, l) {
                l.arch.events.interrupt = QueuedInterrupt {
                    injected: true,
                    nr: v,
                    soft: false,
                };
            }
        }
        w.irq = has_injectable_intr(vcpu, l);
    }
    if dm_request_for_irq_injection(vcpu, run) && accept_dm_intr(vcpu, l) {
        w.irq = true;
    }
    w
}

/// After an exit handled in the kernel (upstream `vcpu_run`'s loop tail): with
/// `request_interrupt_window`, `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as an interrupt can be
/// injected. `true`: return to userspace.
pub(crate) fn after_exit(vcpu: &Vcpu, l: &VcpuLocked, run: RunPage) -> bool {
    if dm_request_for_irq_injection(vcpu, run) && ready_for_interrupt_injection(vcpu, l) {
        run.set_exit_reason(KVM_EXIT_IRQ_WINDOW_OPEN);
        return true;
    }
    false
}

/// HLT (after the instruction was skipped; upstream `__kvm_emulate_halt`): with an in-kernel
/// LAPIC the vCPU halts in the kernel (`true`); without, HLT exits to userspace.
pub(crate) fn halt(l: &mut VcpuLocked) -> bool {
    if !lapic_in_kernel(l) {
        return false;
    }
    l.arch.mp_state = mp_state::HALTED;
    true
}

/// Upstream `kvm_vcpu_has_events` (and `kvm_cpu_has_pending_timer`, folded into the LAPIC's
/// sync): something makes a halted vCPU runnable.
fn has_events(vcpu: &Vcpu, l: &mut VcpuLocked) -> bool {
    lapic::sync(vcpu, l);
    if lapic_in_kernel(l) && lapic::has_init_or_sipi(vcpu) {
        return true;
    }
    if vcpu.irq.pir.pv_unhalted() {
        return true;
    }
    process_nmi(&mut l.arch);
    let e = &l.arch.events;
    // kvm_is_exception_pending: a pending exception or triple fault.
    if e.exception.pending || e.triple_fault_pending {
        return true;
    }
    if e.nmi_pending > 0 && nmi_allowed(&l.arch) {
        return true;
    }
    if interrupt_allowed(&l.arch) && (has_extint(vcpu, l) || lapic::has_interrupt(l)) {
        return true;
    }
    false
}

/// Upstream `vcpu_run`'s `kvm_vcpu_running` / `vcpu_block`: a vCPU that is not runnable
/// (halted, or waiting for INIT/SIPI) sleeps until an event makes it so, a kick, or a signal.
/// `true`: enter the guest now (the vCPU is runnable); `false`: go round the run loop again
/// (its signal check ends `KVM_RUN` with `EINTR` if a signal woke the vCPU). A vCPU that
/// becomes runnable here goes round too, as upstream's `vcpu_block` returns to `vcpu_run`'s
/// loop: the next `vcpu_enter_guest` checks its requests (a pending triple fault) first.
pub(crate) fn block_until_runnable(vcpu: &Vcpu, l: &mut VcpuLocked) -> bool {
    if l.arch.mp_state == mp_state::RUNNABLE {
        return true;
    }
    kick::arm(vcpu);
    if !has_events(vcpu, l) {
        if kernel::current!().signal_pending() {
            return false;
        }
        // A kick or a signal ends the wait; either way the loop looks again.
        let _ = kick::block(vcpu);
        return false;
    }
    accept_events(vcpu, l);
    if matches!(l.arch.mp_state, mp_state::HALTED | mp_state::AP_RESET_HOLD) {
        vcpu.irq.pir.clear_pv_unhalted();
        l.arch.mp_state = mp_state::RUNNABLE;
    }
    false
}

/// Upstream `kvm_apic_accept_events`: a pending INIT resets the vCPU (the BSP stays runnable,
/// an AP waits for SIPI), a SIPI starts an AP waiting for it.
fn accept_events(vcpu: &Vcpu, l: &mut VcpuLocked) {
    if l.irq.lapic.is_some() {
        lapic::accept_events(vcpu, l);
    }
}

/// `KVM_RUN` on a vCPU in `UNINITIALIZED` (an AP with an in-kernel LAPIC that saw no INIT
/// yet; upstream `kvm_arch_vcpu_ioctl_run`): waits for INIT/SIPI, then `EAGAIN`; a signal ends
/// the wait with `EINTR` and `KVM_EXIT_INTR`. `None`: the vCPU is not in that state.
pub(crate) fn run_uninitialized(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage) -> Option<Error> {
    if l.arch.mp_state != mp_state::UNINITIALIZED {
        return None;
    }
    loop {
        kick::arm(vcpu);
        lapic::sync(vcpu, l);
        if lapic_in_kernel(l) && lapic::has_init_or_sipi(vcpu) {
            break;
        }
        if kernel::current!().signal_pending() || kick::block(vcpu).is_err() {
            break;
        }
    }
    accept_events(vcpu, l);
    if kernel::current!().signal_pending() {
        run.set_exit_reason(crate::run::uapi::KVM_EXIT_INTR);
        // HOOK(cr8): as upstream kvm_arch_vcpu_ioctl_run's wait for INIT/SIPI.
        vcpu.stats
            .run
            .signal_exits
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return Some(EINTR);
    }
    Some(EAGAIN)
}

/// The vCPU ioctls of this file (`None`: not ours, the dispatcher goes on).
pub(crate) fn vcpu_ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Option<Result<isize>> {
    if let Some(r) = lapic::vcpu_ioctl(vcpu, cmd, arg) {
        return Some(r);
    }
    Some(match cmd {
        KVM_INTERRUPT => interrupt(vcpu, arg),
        KVM_NMI => {
            // Upstream kvm_vcpu_ioctl_nmi: queued (collapsed to two by process_nmi, which
            // KVM_GET_VCPU_EVENTS and the next entry run). The caller holds the vCPU, so the
            // NMI joins the pending count directly.
            let mut l = match vcpu.lock_killable() {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            let e = &mut l.arch.events;
            e.nmi_pending = e.nmi_pending.saturating_add(1);
            drop(l);
            kick::request_event(vcpu);
            Ok(0)
        }
        KVM_GET_MP_STATE | KVM_SET_MP_STATE if !vcpu.vm().is_td() => {
            let mut l = match vcpu.lock_killable() {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if l.irq.lapic.is_none() {
                // No in-kernel LAPIC: the state ioctls' own answer.
                return None;
            }
            if cmd == KVM_GET_MP_STATE {
                accept_events(vcpu, &mut l);
                // A halted vCPU with a PV-unhalt kick pending reports RUNNABLE (upstream).
                let halted = matches!(l.arch.mp_state, mp_state::HALTED | mp_state::AP_RESET_HOLD);
                let m = KvmMpState {
                    mp_state: if halted && vcpu.irq.pir.pv_unhalted() {
                        mp_state::RUNNABLE
                    } else {
                        l.arch.mp_state
                    },
                };
                drop(l);
                crate::vcpu_state::write_pod(arg, &m).map(|_| 0)
            } else {
                drop(l);
                set_mp_state(vcpu, arg)
            }
        }
        _ => return None,
    })
}

/// `KVM_SET_MP_STATE` with an in-kernel LAPIC (upstream `kvm_arch_vcpu_ioctl_set_mpstate`;
/// the rule: [`x86::events::lapic_mp_state`]): the LAPIC states are accepted; `SIPI_RECEIVED`
/// becomes `INIT_RECEIVED` with a SIPI pending. `AP_RESET_HOLD` then runs as `HALTED`
/// ([`block_until_runnable`]: the vCPU waits in the kernel for an event, then is RUNNABLE).
fn set_mp_state(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let m: KvmMpState = crate::vcpu_state::read_pod(arg)?;
    let mut l = vcpu.lock_killable()?;
    let (state, sipi) = x86::events::lapic_mp_state(&m).map_err(|_| EINVAL)?;
    l.arch.mp_state = state;
    if sipi {
        lapic::set_sipi_pending(vcpu);
    }
    drop(l);
    kick::request_event(vcpu);
    Ok(0)
}

/// `KVM_INTERRUPT` (upstream `kvm_vcpu_ioctl_interrupt`): vectors below 256; without an
/// in-kernel irqchip the vector is queued for injection at the next entry; with the full
/// in-kernel irqchip `ENXIO` (the PIC is in the kernel); with a split irqchip it is the ExtINT
/// vector LINT0 delivers (`EEXIST` while one is pending).
fn interrupt(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let irq: u32 = UserSlice::new(arg, 4).reader().read()?;
    if irq >= KVM_NR_INTERRUPTS {
        return Err(EINVAL);
    }
    let mut l = vcpu.lock_killable()?;
    match vcpu.vm().irqchip_mode() {
        crate::irq::IrqchipMode::None => {
            l.arch.events.interrupt = QueuedInterrupt {
                injected: true,
                nr: irq as u8,
                soft: false,
            };
        }
        crate::irq::IrqchipMode::Kernel => return Err(ENXIO),
        crate::irq::IrqchipMode::Split => {
            if l.irq.pending_external_vector.is_some() {
                return Err(EEXIST);
            }
            l.irq.pending_external_vector = Some(irq as u8);
        }
    }
    drop(l);
    kick::request_event(vcpu);
    Ok(0)
}
