// SPDX-License-Identifier: GPL-2.0-only
//! The run loop behind `KVM_RUN` (upstream `kvm_arch_vcpu_ioctl_run` / `vcpu_run` /
//! `vcpu_enter_guest` in arch/x86/kvm/x86.c), backend-neutral.
//!
//! A backend ([`Backend`]; SVM's [`crate::svm::SvmVcpu`] is the first, VMX and TDH.VP.ENTER
//! will sit beside it) loads the vCPU's [`CpuState`] into its own format, enters the guest once
//! and stores the state back, turning its exit into an [`Exit`]. Everything else — completing
//! I/O, signals, rescheduling, TLB-flush requests, the exits to userspace, NPT faults through
//! the TdpMmu — is here and sees only [`CpuState`] and [`Exit`].
//!
//! `KVM_RUN` (after the checks in [`crate::vcpu`]): the pending I/O completes (IN data into RAX,
//! RIP to the next instruction), then `immediate_exit` returns `EINTR` leaving `exit_reason`
//! and the I/O fields as they were; then the guest FPU is swapped in and the loop runs: a
//! pending signal ends it with `EINTR` and `KVM_EXIT_INTR`, `need_resched` reschedules, and each
//! entry runs with preemption and IRQs off (physical interrupts and NMIs that made the guest
//! exit are taken when IRQs come back on), until an exit needs userspace.
//!
//! Without SVM (no SVM/NPT in CPUID, or disabled by the firmware) a non-TD vCPU's `KVM_RUN`
//! answers `EOPNOTSUPP`, as before the run loop existed: the operation is not supported on this
//! host, while the rest of the module (TDs on the software TDX module included) works.

pub(crate) mod cr;
pub(crate) mod cr8; // HOOK(cr8)
pub(crate) mod event_stats; // HOOK(cr8)
pub(crate) mod io;
pub(crate) mod npf;
pub(crate) mod pio_ins; // HOOK(cr8)
pub(crate) mod reset;
pub(crate) mod skip;
pub(crate) mod tlb;
pub(crate) mod uapi;
pub(crate) mod xfer;

use crate::fpu;
use crate::svm::{self, glue as sg, SvmVcpu};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::VmMmu;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use uapi::*;
use x86::state::CpuState;
use x86emu::decode::Op;

/// Why the guest stopped, in backend-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A physical interrupt, NMI or SMI: the host takes it; re-enter.
    HostEvent,
    /// A machine check in the guest: the host's handler runs.
    MachineCheck,
    /// The guest state was illegal: the entry failed (`hardware_entry_failure_reason`).
    FailEntry { reason: u64 },
    /// An SVM instruction (VMSAVE/VMLOAD/VMRUN) faulted: no exit happened, the VMCB's exit
    /// code is stale. A host bug or SVM disabled under us: the VM is bugged (upstream
    /// kvm_spurious_fault / KVM_BUG_ON).
    EntryFault,
    /// IN/OUT (string and REP forms included); `next_rip` is the next instruction's RIP.
    Io {
        port: u16,
        size: u8,
        is_in: bool,
        string: bool,
        rep: bool,
        next_rip: u64,
        raw: u64,
    },
    /// HLT.
    Hlt,
    /// Shutdown (triple fault).
    Shutdown,
    /// A nested page fault: `error` is the #PF-style error code.
    Npf { gpa: u64, error: u64 },
    /// CPUID.
    Cpuid,
    /// RDMSR / WRMSR.
    Msr { write: bool },
    /// VMMCALL (hypercall).
    Vmmcall,
    /// XSETBV.
    Xsetbv,
    /// INVD (executed as a no-op: the guest must not drop the host's cache lines).
    Invd,
    /// WBINVD / WBNOINVD (upstream intercepts them and, without non-coherent DMA, executes
    /// them as no-ops: a guest must not flush the host's whole cache hierarchy at will).
    Wbinvd,
    /// An instruction the guest may not execute here (the SVM instructions, RDPRU): `#UD`.
    Undefined,
    /// An intercepted exception.
    Exception { vector: u8, error_code: u32 },
    /// HOOK(entry): a write to CR4 (`MOV CR4, r`), intercepted to check it ([`cr`]).
    Cr4Write,
    /// HOOK(entry): a read of CR4 (`MOV r, CR4`), answered with the guest's value ([`cr`]).
    Cr4Read,
    /// HOOK(cr8): a write to CR8 (`MOV CR8, r`) while it is intercepted ([`cr8`]).
    Cr8Write,
    /// HOOK(cpu11): MONITOR (`mwait` false) or MWAIT ([`crate::mwait`]).
    MonitorMwait { mwait: bool },
    /// Anything else, raw.
    Other { code: u64, info1: u64, info2: u64 },
    /// HOOK(irqmod): an interrupt or NMI window opened (or NMIs unmasked): re-evaluate the
    /// events and re-enter ([`crate::irq::inject`]).
    EventWindow,
}

/// An exit with the backend's raw code and information (for the `exits` helper and error
/// reports).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExitInfo {
    pub(crate) exit: Exit,
    pub(crate) code: u64,
    #[allow(dead_code)]
    pub(crate) info1: u64,
    #[allow(dead_code)]
    pub(crate) info2: u64,
    /// The event whose delivery the exit interrupted (SVM EXITINTINFO; 0: none) and its error
    /// code (EXITINTINFO's), for the emulation-failure exit's data (upstream
    /// `svm_get_exit_info`).
    pub(crate) int_info: u32,
    pub(crate) int_info_err: u32,
}

/// What the loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Enter the guest again.
    Continue,
    /// Return 0 to userspace (`kvm_run` filled in).
    ToUser,
}

/// A vCPU backend: what VMX or TDH.VP.ENTER implement beside SVM.
pub(crate) trait Backend {
    /// Enters the guest once with `st` loaded and stores the state back.
    ///
    /// # Safety
    ///
    /// IRQs and preemption disabled on CPU `cpu`; the guest FPU is loaded and current;
    /// `st.xcr0` is valid for this host when the guest has CR4.OSXSAVE.
    unsafe fn enter(
        &mut self,
        st: &mut CpuState,
        cpu: u32,
        flush: bool,
        host_xcr0: u64,
    ) -> ExitInfo;
    /// Puts the backend's control state back to its initial form after a shutdown.
    fn reset_after_shutdown(&mut self);
    /// HOOK(irqmod): the interrupt/NMI windows to open on the next entry.
    fn set_event_windows(&mut self, w: crate::irq::inject::Windows);
}

impl Backend for SvmVcpu {
    unsafe fn enter(
        &mut self,
        st: &mut CpuState,
        cpu: u32,
        flush: bool,
        host_xcr0: u64,
    ) -> ExitInfo {
        // SAFETY: the caller's contract is this method's.
        unsafe { SvmVcpu::enter(self, st, cpu, flush, host_xcr0) }
    }
    fn reset_after_shutdown(&mut self) {
        SvmVcpu::reset_after_shutdown(self)
    }
    fn set_event_windows(&mut self, w: crate::irq::inject::Windows) {
        self.events.set_windows(w)
    }
}

/// The backend a vCPU runs on.
pub(crate) enum VcpuBackend {
    /// AMD SVM.
    Svm(SvmVcpu),
}

impl VcpuBackend {
    /// The backend for a new vCPU of `vm`, if this host can run it (`None`: no SVM, or a TD,
    /// whose vCPUs run through the TDX module later).
    pub(crate) fn for_vm(vm: &crate::vm::Vm) -> Option<Self> {
        if !svm::hw::ready() {
            return None;
        }
        let VmMmu::Plain(m) = vm.mmu() else {
            return None;
        };
        let root = m.shared_root_pfn()?;
        // HOOK(misc): the VM's MSR permission map (follows the MSR filter).
        let msrpm = vm.exits().msrpm_pa()?;
        let mut s = SvmVcpu::new(root.raw() << 12)?;
        s.use_msrpm(msrpm);
        Some(VcpuBackend::Svm(s))
    }

    fn get(&mut self) -> &mut impl Backend {
        match self {
            VcpuBackend::Svm(s) => s,
        }
    }
}

/// The run loop's per-vCPU counters (vCPU stats fd; upstream's names).
#[derive(Default)]
pub(crate) struct RunStats {
    /// Every guest exit.
    pub(crate) exits: AtomicU64,
    /// Port-I/O exits (every IOIO intercept: string, REP and in-kernel ports included;
    /// upstream `io_interception`).
    pub(crate) io_exits: AtomicU64,
    /// HLTs (upstream `__kvm_emulate_halt`: in-kernel halts and exits to userspace).
    pub(crate) halt_exits: AtomicU64,
    /// `KVM_RUN`s ended by a pending signal.
    pub(crate) signal_exits: AtomicU64,
    /// Exits for a host interrupt (upstream `intr_interception`; not NMI, SMI or #MC).
    pub(crate) irq_exits: AtomicU64,
    /// HOOK(cr8): injections, window exits, wake-ups ([`event_stats`]).
    pub(crate) events: event_stats::EventStats,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The run loop's per-vCPU state (in [`VcpuLocked`]).
#[derive(Default)]
pub(crate) struct RunState {
    /// An I/O exit waiting for completion.
    pending_io: Option<io::PendingIo>,
    /// The flush generation this vCPU's TLB is current with.
    tlb_gen: u64,
    /// The CPU of the last entry (`fail_entry.cpu`, the unexpected-exit report).
    pub(crate) last_cpu: u32,
    /// The last exit's [`ExitInfo::int_info`] and its error code, as the backend left them
    /// (upstream reads them from the VMCB when an emulation failure is reported).
    pub(crate) exit_int: (u32, u32),
    /// HOOK(entry): the shadow `struct kvm_vcpu` for the transfer-to-guest work, made on the
    /// first `KVM_RUN` that enters the loop.
    xfer: Option<xfer::XferVcpu>,
    /// HOOK(entry): the guest's TLB must be flushed before its next entry (a CR4 write that
    /// requires it; upstream KVM_REQ_TLB_FLUSH_GUEST/CURRENT).
    pub(crate) flush_tlb: bool,
}

/// Whether XSETBV accepts `xcr0` on a host with `host_xcr0` (x87 on, AVX needs SSE, the
/// AVX-512 trio together and with AVX).
fn xcr0_valid(xcr0: u64, host_xcr0: u64) -> bool {
    const X87: u64 = 1;
    const SSE: u64 = 2;
    const AVX: u64 = 4;
    const AVX512: u64 = 0xe0;
    xcr0 & X87 != 0
        && xcr0 & !host_xcr0 == 0
        && (xcr0 & AVX == 0 || xcr0 & SSE != 0)
        && (xcr0 & AVX512 == 0 || (xcr0 & AVX512 == AVX512 && xcr0 & AVX != 0))
}

const CR4_OSXSAVE: u64 = 1 << 18;

/// `KVM_RUN` past the checks [`crate::vcpu`] does (`immediate_exit` is the run page's).
pub(crate) fn run(vcpu: &Vcpu, l: &mut VcpuLocked, immediate_exit: bool) -> Result<isize> {
    let run = RunPage(vcpu.run_page());
    let pio = vcpu.pio_page();
    // Upstream: complete_userspace_io first, immediate_exit after it.
    if let Some(p) = l.run.pending_io.take() {
        let rip = l.arch.rip;
        io::complete(&mut l.arch, pio, p);
        // HOOK(misc): the completed IN/OUT's single-step trap (taken in complete_userspace).
        crate::exit_run::pio_completed(l, rip);
    }
    // HOOK(exits): complete MMIO reads, string PIO, RDMSR/WRMSR and hypercall exits here.
    if crate::exit_run::complete_userspace(vcpu, l)? {
        return Ok(0);
    }
    if immediate_exit {
        return Err(EINTR);
    }
    if l.backend.is_none() {
        return Err(crate::vcpu::eopnotsupp());
    }
    if l.run.xfer.is_none() {
        l.run.xfer = Some(xfer::XferVcpu::new(vcpu.run_page())?);
    }
    // HOOK(irqmod): an AP that saw no INIT yet waits for INIT/SIPI, then EAGAIN.
    if let Some(e) = crate::irq::inject::run_uninitialized(vcpu, l, run) {
        return Err(e);
    }
    l.has_run = true;
    // HOOK(irq12): vcpu->pid and vcpu_load's preempt notifier for this run.
    let _loaded = crate::irq::sched::load(vcpu)?;
    let r = (|| {
        if let Some(f) = l.fpu.as_mut() {
            f.load();
        }
        let r = run_loop(vcpu, l, run);
        if let Some(f) = l.fpu.as_mut() {
            f.put();
        }
        r
    })();
    r
}

/// Upstream `post_kvm_run_save`, on every return from `KVM_RUN` (its `out:` label: errors,
/// `immediate_exit` and completions that exit again included): IF, CR8 (the VMCB's V_TPR,
/// equal to the in-kernel LAPIC's TPR bits 7:4 when there is one), APIC_BASE, and whether an
/// interrupt could be injected now (always with the in-kernel PIC, else
/// `kvm_vcpu_ready_for_interrupt_injection`: IF set, no interrupt shadow, room for an
/// interrupt from userspace; [`crate::irq::inject`]).
pub(crate) fn post_run_save(vcpu: &Vcpu, l: &VcpuLocked) {
    let run = RunPage(vcpu.run_page());
    let st = &l.arch;
    let if_flag = st.rflags & (1 << 9) != 0;
    // HOOK(irqmod): upstream's readiness (kvm_vcpu_ready_for_interrupt_injection) and CR8
    // from the in-kernel LAPIC's TPR.
    let ready = crate::irq::inject::ready_for_user_injection(vcpu, l);
    run.set_u8(IF_FLAG, u8::from(if_flag));
    run.set_u8(READY_FOR_INTERRUPT_INJECTION, u8::from(ready));
    run.set_u64(CR8, crate::irq::inject::cr8(l));
    run.set_u64(APIC_BASE, st.apic_base);
}

fn run_loop(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage) -> Result<isize> {
    let vm = vcpu.vm();
    let host_xcr0 = fpu::host_xcr0();
    let VmMmu::Plain(m) = vm.mmu() else {
        return Err(EINVAL);
    };
    let tlb = m.env().tlb();
    crate::pv::vcpu_load(vm, l); // HOOK(clock): steal time at each KVM_RUN
    loop {
        // HOOK(entry): upstream vcpu_run's xfer_to_guest_mode_handle_work: a signal ends the
        // run with EINTR and KVM_EXIT_INTR, need_resched reschedules, TIF_NOTIFY_RESUME work
        // (task work, rseq) is done, not dropped.
        if let Some(x) = l.run.xfer.as_ref() {
            if let Err(e) = x.handle_work() {
                if e == EINTR {
                    run.set_exit_reason(KVM_EXIT_INTR);
                    bump(&vcpu.stats.run.signal_exits);
                }
                return Err(e);
            }
        }
        // HOOK(irq12): at_instruction_boundary = false once the transfer work (a reschedule
        // right after a host-interrupt exit reports the vCPU preempted) is done.
        crate::irq::sched::loop_top(vcpu);
        if vm.mmu().is_bugged() {
            return Err(EIO);
        }
        // Upstream vcpu_enter_guest's KVM_REQ_TRIPLE_FAULT (a #DF during #DF, or userspace's
        // KVM_VCPUEVENT_VALID_TRIPLE_FAULT): KVM_EXIT_SHUTDOWN with the state as it is (only
        // SVM's SHUTDOWN intercept, whose VMCB is undefined, INITs the vCPU) and no MMIO
        // completion pending (`mmio_needed = 0`). Only a running vCPU gets there: a halted one
        // goes through block_until_runnable first, which the triple fault wakes
        // (kvm_vcpu_has_events' kvm_is_exception_pending) and makes runnable, then comes back.
        if l.arch.mp_state == x86::uapi::mp_state::RUNNABLE
            && core::mem::take(&mut l.arch.events.triple_fault_pending)
        {
            l.exits.pending = None;
            run.set_exit_reason(KVM_EXIT_SHUTDOWN);
            return Ok(0);
        }
        // HOOK(irqroute): a split irqchip's level EOI exits (KVM_EXIT_IOAPIC_EOI).
        if crate::irq::eoi_exit(vcpu) {
            return Ok(0);
        }
        if l.arch.cr4 & CR4_OSXSAVE != 0 && !xcr0_valid(l.arch.xcr0, host_xcr0) {
            return Err(EINVAL);
        }
        // HOOK(irqmod): a halted vCPU sleeps in the kernel until it is runnable (a signal
        // ends KVM_RUN at the top of the loop), then the events to inject and windows to open.
        if !crate::irq::inject::block_until_runnable(vcpu, l) {
            continue;
        }
        crate::pv::before_entry(vcpu, l); // HOOK(clock): HLT intercept, pvclock, steal time
        let windows = crate::irq::inject::before_entry(vcpu, l, run);
        cr8::before_entry(l); // HOOK(cr8): upstream update_cr8_intercept
        event_stats::injections(vcpu, l); // HOOK(cr8): irq_injections, nmi_injections
        let Some(backend) = l.backend.as_mut() else {
            return Err(EIO);
        };
        backend.get().set_event_windows(windows);
        // SAFETY: vcpu_enter_guest's section: preemption, then IRQs off; undone below in
        // reverse order on every path.
        unsafe {
            sg::tdxkvm_preempt_disable();
            sg::tdxkvm_local_irq_disable();
        }
        // SAFETY: preemption off.
        let cpu = unsafe { sg::tdxkvm_smp_processor_id() };
        let gen = tlb.enter(cpu);
        // HOOK(irqmod): vcpu->mode = IN_GUEST_MODE before the last request check.
        crate::irq::kick::enter_guest_mode(vcpu, cpu);
        // Upstream kvm_vcpu_exit_request: transfer-to-guest work (a signal, a reschedule
        // request, TIF_NOTIFY_RESUME) or a kick request that came after the checks above
        // cancels the entry (its IPI may already have been taken); the loop's top handles it.
        // SAFETY: IRQs off.
        let cancel = unsafe { xfer::work_pending_irqoff() } || crate::irq::kick::exit_request(vcpu);
        let info = if cancel {
            None
        } else {
            fpu::reload_irqoff();
            // HOOK(entry): guest time from here (upstream guest_timing_enter_irqoff).
            // SAFETY: IRQs off.
            unsafe { sg::tdxkvm_guest_timing_enter_irqoff() };
            let flush = gen != l.run.tlb_gen || core::mem::take(&mut l.run.flush_tlb);
            l.run.tlb_gen = gen;
            l.run.last_cpu = cpu;
            // HOOK(misc): the debugger's hardware breakpoints for this run.
            crate::exit_run::hw_bp_enter(&mut l.arch, &mut l.exits);
            // SAFETY: IRQs and preemption off on `cpu`; the guest FPU is loaded (run() did)
            // and current (reloaded just above); XCR0 checked above.
            let info = unsafe { backend.get().enter(&mut l.arch, cpu, flush, host_xcr0) };
            // HOOK(misc): the guest's own debug registers back.
            crate::exit_run::hw_bp_exit(&mut l.arch, &mut l.exits);
            Some(info)
        };
        tlb.leave(cpu);
        // HOOK(irqmod): vcpu->mode = OUTSIDE_GUEST_MODE.
        crate::irq::kick::exit_guest_mode(vcpu);
        if let Some(ExitInfo {
            exit: Exit::MachineCheck,
            ..
        }) = info
        {
            // SAFETY: IRQs off, as upstream's handle_exit_irqoff runs it.
            unsafe { sg::tdxkvm_machine_check() };
        }
        // SAFETY: undoes the section above: pending interrupts and NMIs are taken now, then
        // (after an entry) guest time ends (upstream guest_timing_exit_irqoff).
        unsafe {
            if info.is_some() {
                sg::tdxkvm_guest_exit_irqs_on();
            } else {
                sg::tdxkvm_local_irq_enable();
            }
            sg::tdxkvm_preempt_enable();
        }
        let Some(info) = info else {
            continue;
        };
        l.run.exit_int = (info.int_info, info.int_info_err);
        bump(&vcpu.stats.run.exits);
        crate::irq::sched::after_exit(vcpu, info.code); // HOOK(irq12): SVM_EXIT_INTR boundary
        let a = handle_exit(vcpu, l, run, info)?;
        // HOOK(misc): single-step over an instruction the exit handler skipped or emulated.
        match crate::exit_run::after_step(l, run, a) {
            // HOOK(irqmod): request_interrupt_window -> KVM_EXIT_IRQ_WINDOW_OPEN.
            Action::Continue if crate::irq::inject::after_exit(vcpu, l, run) => {
                event_stats::request_irq_exit(vcpu); // HOOK(cr8)
                return Ok(0);
            }
            Action::Continue => continue,
            Action::ToUser => return Ok(0),
        }
    }
}

fn handle_exit(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: ExitInfo) -> Result<Action> {
    let vm = vcpu.vm();
    // HOOK(cr8): every IOIO exit counts (upstream io_interception), wherever it is handled.
    if let Exit::Io { .. } = info.exit {
        bump(&vcpu.stats.run.io_exits);
    }
    match info.exit {
        Exit::HostEvent | Exit::MachineCheck => {
            // HOOK(cr8): upstream counts the physical-interrupt exit only.
            if info.code == x86::svm::exit::INTR {
                bump(&vcpu.stats.run.irq_exits);
            }
            Ok(Action::Continue)
        }
        Exit::EntryFault => {
            pr_err!(
                "SVM instruction faulted on CPU {}: VM marked bugged\n",
                l.run.last_cpu
            );
            vm.mmu().mark_bugged();
            run.set_exit_reason(KVM_EXIT_FAIL_ENTRY);
            run.set_u64(FAIL_ENTRY_REASON, x86::svm::exit::INVALID);
            run.set_u32(FAIL_ENTRY_CPU, l.run.last_cpu);
            Err(EIO)
        }
        Exit::FailEntry { reason } => {
            run.set_exit_reason(KVM_EXIT_FAIL_ENTRY);
            run.set_u64(FAIL_ENTRY_REASON, reason);
            run.set_u32(FAIL_ENTRY_CPU, l.run.last_cpu);
            Ok(Action::ToUser)
        }
        Exit::Io {
            port,
            size,
            is_in,
            string: false,
            rep: false,
            next_rip,
            ..
        } if size != 0 => {
            // HOOK(irqroute): an IN an in-kernel device serves (PIC, ELCR, PIT) does not exit.
            if is_in && crate::irq::pio_in_kernel(vcpu, l, port, size, next_rip) {
                crate::exit_run::mark_completed(l, l.arch.rflags); // HOOK(cpu11): its step trap
                return Ok(Action::Continue);
            }
            // HOOK(exits): an OUT an in-kernel device takes (ioeventfd, coalesced PIO) does
            // not exit.
            if !is_in && crate::exit_run::pio_out_in_kernel(vcpu, l, port, size, next_rip) {
                return Ok(Action::Continue);
            }
            let rflags = l.arch.rflags;
            l.run.pending_io = io::exit_to_user(
                &mut l.arch,
                run,
                vcpu.pio_page(),
                port,
                size,
                is_in,
                next_rip,
            );
            // HOOK(cpu11): OUT 0x7e skipped before the exit (OUT_7E_INC_RIP) takes its step.
            if l.run.pending_io.is_none() {
                crate::exit_run::out_7e_skipped(l, run, rflags);
            }
            Ok(Action::ToUser)
        }
        Exit::Hlt => {
            if let Some(a) = crate::exit_run::skip_intercepted(vcpu, l, run, &[Op::Hlt], &info) {
                return Ok(a);
            }
            // HOOK(cr8): every HLT counts, as upstream's __kvm_emulate_halt.
            bump(&vcpu.stats.run.halt_exits);
            // HOOK(irqmod): with an in-kernel LAPIC the vCPU halts in the kernel.
            if crate::irq::inject::halt(l) {
                return Ok(Action::Continue);
            }
            run.set_exit_reason(KVM_EXIT_HLT);
            Ok(Action::ToUser)
        }
        Exit::Invd => Ok(
            crate::exit_run::skip_intercepted(vcpu, l, run, &[Op::Invd], &info)
                .unwrap_or(Action::Continue),
        ),
        Exit::Wbinvd => {
            // WBINVD (0F 09) or WBNOINVD (F3 0F 09); QEMU up to 7.2 reports a guest INVD
            // (0F 08) as this exit (its TCG checks the WBINVD intercept for both), so INVD is
            // accepted here too.
            Ok(
                crate::exit_run::skip_intercepted(vcpu, l, run, &[Op::Wbinvd, Op::Invd], &info)
                    .unwrap_or(Action::Continue),
            )
        }
        Exit::Shutdown => shutdown(l, run),
        // HOOK(irqmod): an interrupt/NMI window opened: the loop re-evaluates the events.
        Exit::EventWindow => {
            event_stats::window_exit(vcpu, info.code); // HOOK(cr8)
            Ok(Action::Continue)
        }
        Exit::Npf { gpa, error } => npf::handle(vcpu, l, gpa, error),
        Exit::Cr4Write => cr::cr4_write(vcpu, l, run, &info), // HOOK(entry)
        Exit::Cr4Read => cr::cr4_read(vcpu, l, run, &info),   // HOOK(entry)
        Exit::Cr8Write => cr8::write(vcpu, l, run, &info),    // HOOK(cr8)
        Exit::Undefined => {
            queue_exception(l, x86::svm::vector::UD, None, None);
            Ok(Action::Continue)
        }
        // HOOK(exits): CPUID, RDMSR/WRMSR, VMMCALL, XSETBV, string/REP I/O, intercepted
        // exceptions; anything else ends in KVM_EXIT_INTERNAL_ERROR (unexpected exit reason).
        _ => crate::exit_run::handle(vcpu, l, run, info),
    }
}

/// `KVM_EXIT_SHUTDOWN` (upstream `shutdown_interception`): the VMCB is undefined after a
/// shutdown, so the vCPU is INITed (there is no MP state for "shut down").
fn shutdown(l: &mut VcpuLocked, run: RunPage) -> Result<Action> {
    if let Some(b) = l.backend.as_mut() {
        b.get().reset_after_shutdown();
    }
    l.arch = reset::init(&l.arch);
    crate::pv::reset(l); // HOOK(clock): INIT turns kvm-clock and steal time off
    l.run.pending_io = None;
    // A stale MMIO/MSR/hypercall/PIO completion must not be applied to the INITed vCPU.
    l.exits.pending = None;
    run.set_exit_reason(KVM_EXIT_SHUTDOWN);
    Ok(Action::ToUser)
}

/// Queues an exception for the vCPU's next entry (upstream `kvm_queue_exception(_e)`): the
/// `exits` helper's way to make exceptions reach the guest's IDT (#UD, #GP, #PF from
/// emulation, with `payload` = CR2 for #PF). The backend injects `CpuState.events.exception`
/// on the next entry. A second exception while one is queued: a contributory or #PF pair
/// becomes #DF (vector 8, error code 0), anything else replaces it (upstream
/// `kvm_multiple_exception`, simplified: a #DF during #DF is a triple fault).
pub(crate) fn queue_exception(
    l: &mut VcpuLocked,
    vector: u8,
    error_code: Option<u32>,
    payload: Option<u64>,
) {
    let e = &mut l.arch.events.exception;
    let contributory = |v: u8| matches!(v, 0 | 10..=13);
    if e.pending || e.injected {
        let prev = e.vector;
        if prev == x86::svm::vector::DF {
            l.arch.events.triple_fault_pending = true;
            return;
        }
        let df = (contributory(prev) && contributory(vector))
            || (prev == x86::svm::vector::PF && (contributory(vector) || vector == 14));
        if df {
            *e = x86::state::QueuedException {
                pending: true,
                vector: x86::svm::vector::DF,
                has_error_code: true,
                ..Default::default()
            };
            return;
        }
    }
    *e = x86::state::QueuedException {
        pending: true,
        injected: false,
        vector,
        has_error_code: error_code.is_some(),
        error_code: error_code.unwrap_or(0),
        has_payload: payload.is_some(),
        payload: payload.unwrap_or(0),
    };
}

/// A guest access to a GPA outside every memslot or a write to a read-only slot.
///
/// HOOK(exits): the `exits` helper fills this with instruction emulation (`KVM_EXIT_MMIO`
/// with completion, coalesced MMIO, ioeventfd). Until then: `KVM_EXIT_INTERNAL_ERROR` with
/// `KVM_INTERNAL_ERROR_EMULATION` — never a guess.
pub(crate) fn mmio(vcpu: &Vcpu, l: &mut VcpuLocked, gpa: u64, error: u64) -> Result<Action> {
    crate::exit_run::mmio(vcpu, l, gpa, error)
}
