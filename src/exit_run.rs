// SPDX-License-Identifier: GPL-2.0-only
//! The exits layer of the run loop: what [`crate::run`] hands over at its `HOOK(exits)` points.
//!
//! - [`mmio`]: an NPF on a GPA outside every memslot (or a write to a read-only one) is
//!   emulated with `x86emu` (upstream `kvm_mmu_page_fault` → `x86_emulate_instruction`): a
//!   write goes to a matching ioeventfd, into the coalesced ring, or out as `KVM_EXIT_MMIO`; a
//!   read exits with `KVM_EXIT_MMIO` and the instruction re-executes with userspace's data on
//!   the next `KVM_RUN` ([`complete_userspace`]).
//! - [`handle`]: CPUID, RDMSR/WRMSR (filter, user-space MSR exits, #GP), VMMCALL (hypercalls),
//!   XSETBV, string and REP port I/O (upstream `emulator_pio_in_out`), intercepted exceptions
//!   (guest debugging's #DB/#BP, everything else re-injected).
//! - [`skip_instruction`]: the length of an intercepted instruction from the decoder (no NRIP
//!   save here), never guessed.
//! - [`inject`]: exceptions from emulation reach the guest's IDT through the backend's queue.
//! - [`after_step`]: an instruction completed here (skipped or emulated) with RFLAGS.TF set
//!   before it gets its single-step trap: `KVM_EXIT_DEBUG` when guest debugging single-steps,
//!   else #DB(BS) for the guest (upstream `kvm_vcpu_do_singlestep`); [`hw_bp_enter`] /
//!   [`hw_bp_exit`] switch in the debugger's hardware breakpoints around each entry, and the
//!   guest's MOV DR is emulated meanwhile ([`dr_access`]).

use crate::exit_vcpu::{Pending, PioIn, VcpuExits};
use crate::exits::WriteResult;
use crate::guest_mem::MemEnv;
use crate::run::uapi::RunPage;
use crate::run::{Action, Exit, ExitInfo};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vcpu_state::walk_config;
use crate::vm::Vm;
use kernel::prelude::*;
use x86::exits::emulation::{self, FailureAction};
use x86::exits::guest_debug::AfterStep;
use x86::exits::ioeventfd::Bus;
use x86::exits::pio::{addr_mask, ins_batch, ins_done, step};
use x86::exits::run::{self as krun, Exit as UExit};
use x86::exits::{hypercall, user_msr};
use x86::state::{CpuState, Gpr, SegReg};
use x86emu::decode::{Op, Rep};
use x86emu::emulate::{self, GuestAccessError, InsnBytes, MmioData, Outcome};
use x86emu::linear::Exception;
use x86emu::Gpa;

/// #DB.
const DB: u8 = 1;
/// #BP.
const BP: u8 = 3;
/// #UD.
const UD: u8 = 6;
/// #PF.
/// RFLAGS.DF.
const RFLAGS_DF: u64 = 1 << 10;

fn linear_rip(st: &CpuState) -> u64 {
    st.seg(SegReg::Cs).base.wrapping_add(st.rip)
}

fn in_64bit_mode(st: &CpuState) -> bool {
    emulate::CpuMode::of(st) == emulate::CpuMode::Long64
}

/// Writes an exit into the kvm_run page: `exit_reason` and the whole exit union.
fn set_exit(run: RunPage, e: &UExit) {
    run.set_exit_reason(e.reason());
    for (i, b) in e.encode().iter().enumerate() {
        run.set_u8(krun::OFF_UNION + i, *b);
    }
}

/// The exit union as userspace left it.
fn read_union(run: RunPage) -> [u8; krun::UNION_SIZE] {
    let mut u = [0u8; krun::UNION_SIZE];
    for (i, b) in u.iter_mut().enumerate() {
        // SAFETY: the vCPU's 4 KiB kvm_run page; the union is bytes 32..288. Read volatile:
        // userspace may be writing it.
        *b = unsafe { core::ptr::read_volatile(run.0.add(krun::OFF_UNION + i)) };
    }
    u
}

/// Queues `e` for the next entry (for #PF with CR2), so it reaches the guest's IDT.
pub(crate) fn inject(l: &mut VcpuLocked, e: Exception) {
    // CR2 travels as the #PF's payload and is written when the exception is delivered.
    crate::run::queue_exception(l, e.vector, e.error_code, e.cr2);
}

fn inject_gp(l: &mut VcpuLocked) {
    inject(l, Exception::gp0());
}

fn inject_ud(l: &mut VcpuLocked) {
    crate::run::queue_exception(l, UD, None, None);
}

/// An emulation failure (upstream `handle_emulation_failure`): the exit with the instruction
/// bytes, or #UD, depending on `KVM_CAP_EXIT_ON_EMULATION_FAILURE` and the CPL.
fn emulation_failure(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    b: &InsnBytes,
    info: &emulation::ExitInfo,
) -> Action {
    let on = vcpu.vm().exits().lock().exit_on_emulation_failure;
    let act = emulation::failure_action(on, emulate::cpl(&l.arch));
    if act != FailureAction::Exit {
        inject_ud(l);
    }
    if act == FailureAction::Ud {
        return Action::Continue;
    }
    set_exit(
        run,
        &emulation::failure_exit(&b.bytes[..b.len as usize], info),
    );
    Action::ToUser
}

/// What [`skip_instruction`] found.
pub(crate) enum Skip {
    /// RIP now points past the instruction.
    Skipped,
    /// The fetch or decode raised an exception, which was queued.
    Injected,
    /// The code cannot be decoded (or is not the intercepted instruction): report it.
    Failed(InsnBytes),
}

/// Skips the intercepted instruction `op` at CS:RIP (upstream `kvm_skip_emulated_instruction`
/// without NRIP save: the emulator's decode, `EMULTYPE_SKIP`).
pub(crate) fn skip_instruction(vm: &Vm, l: &mut VcpuLocked, op: Op) -> Skip {
    skip_any(vm, l, &[op])
}

/// [`skip_instruction`] for an exit that more than one instruction can cause.
fn skip_any(vm: &Vm, l: &mut VcpuLocked, ops: &[Op]) -> Skip {
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vm);
    match emulate::skip(&l.arch, &mut env, &cfg) {
        Ok(d) if ops.contains(&d.insn.op) => {
            l.arch.rip = d.next_rip;
            mark_completed(l, l.arch.rflags);
            // Upstream __svm_skip_emulated_instruction: the skipped instruction ends any
            // interrupt shadow (`sti; hlt` must not leave a stale one).
            l.arch.events.interrupt_shadow = 0;
            Skip::Skipped
        }
        // Another vCPU rewrote the code between the intercept and the fetch.
        Ok(d) => Skip::Failed(d.bytes),
        Err(emulate::Failure::Exception(e)) => {
            inject(l, e);
            Skip::Injected
        }
        Err(emulate::Failure::Unhandleable(b)) => Skip::Failed(b),
    }
}

/// Skips `op`, or turns the failure into the matching action; `Ok(None)` when skipped.
fn skip_or(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    op: Op,
    info: &emulation::ExitInfo,
) -> Option<Action> {
    match skip_instruction(vcpu.vm(), l, op) {
        Skip::Skipped => None,
        Skip::Injected => Some(Action::Continue),
        Skip::Failed(b) => Some(emulation_failure(vcpu, l, run, &b, info)),
    }
}

/// The run loop's in-kernel skips (HLT, INVD, WBINVD): skips one of `ops` at CS:RIP, or the
/// upstream emulation-failure handling (KVM_EXIT_INTERNAL_ERROR with the instruction bytes and
/// exit info, or #UD per KVM_CAP_EXIT_ON_EMULATION_FAILURE); `None` when skipped.
pub(crate) fn skip_intercepted(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    ops: &[Op],
    info: &ExitInfo,
) -> Option<Action> {
    match skip_any(vcpu.vm(), l, ops) {
        Skip::Skipped => None,
        Skip::Injected => Some(Action::Continue),
        Skip::Failed(b) => Some(emulation_failure(vcpu, l, run, &b, &exit_info(info))),
    }
}

fn exit_info(i: &ExitInfo) -> emulation::ExitInfo {
    emulation::ExitInfo::svm(i.code, i.info1, i.info2, i.int_info, i.int_info_err)
}

/// The outcome of one emulated instruction, applied.
pub(crate) fn finish(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    o: Outcome,
    info: &emulation::ExitInfo,
    rflags_before: u64,
) -> Action {
    match o {
        Outcome::Done => {
            mark_completed(l, rflags_before);
            Action::Continue
        }
        Outcome::MmioRead { gpa, len } => {
            // HOOK(irqmod): the in-kernel xAPIC page answers without an exit (first, as
            // upstream's vcpu_mmio_read), then HOOK(irqroute): a read an in-kernel device
            // serves (IOAPIC) completes here.
            let dev = crate::irq::lapic::mmio_read(vcpu, l, gpa.0, len)
                .or_else(|| crate::irq::mmio_read(vcpu.vm(), gpa.0, len).map(|v| v.to_le_bytes()));
            if let Some(data) = dev {
                let m = MmioData { gpa, len, data };
                let cfg = walk_config(l);
                let mut env = MemEnv::new(vcpu.vm());
                let opts = crate::ud::emu_options(vcpu.vm(), l, false); // HOOK(ud)
                let o = emulate::emulate_with(&mut l.arch, &mut env, &cfg, Some(&m), opts);
                return finish(vcpu, l, run, o, info, rflags_before);
            }
            set_exit(
                run,
                &UExit::Mmio {
                    phys_addr: gpa.0,
                    data: [0; 8],
                    len: u32::from(len),
                    is_write: false,
                },
            );
            l.exits.pending = Some(Pending::MmioRead { gpa: gpa.0, len });
            Action::ToUser
        }
        Outcome::MmioWrite(m) => {
            let data = &m.data[..m.len as usize];
            // HOOK(irqmod): the in-kernel xAPIC page takes the write; HOOK(irqroute): a write
            // an in-kernel device takes (IOAPIC) does not exit.
            if crate::irq::lapic::mmio_write(vcpu, l, m.gpa.0, data)
                || crate::irq::mmio_write(vcpu.vm(), m.gpa.0, data)
            {
                mark_completed(l, rflags_before);
                return Action::Continue;
            }
            if vcpu.vm().io_bus_write(Bus::Mmio, m.gpa.0, data) == WriteResult::Handled {
                mark_completed(l, rflags_before);
                return Action::Continue;
            }
            // (A write that exits to userspace is not stepped: upstream's
            // complete_emulated_mmio returns to the guest without it, "FIXME".)
            set_exit(
                run,
                &UExit::Mmio {
                    phys_addr: m.gpa.0,
                    data: m.data,
                    len: u32::from(m.len),
                    is_write: true,
                },
            );
            Action::ToUser
        }
        Outcome::Exception(e) => {
            inject(l, e);
            Action::Continue
        }
        Outcome::Unhandleable(b) => emulation_failure(vcpu, l, run, &b, info),
    }
}

/// An access to MMIO (`HOOK(exits)` in [`crate::run::mmio`]): emulates the instruction.
pub(crate) fn mmio(vcpu: &Vcpu, l: &mut VcpuLocked, gpa: u64, error: u64) -> Result<Action> {
    let run = RunPage(vcpu.run_page());
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    let rflags_before = l.arch.rflags;
    let opts = crate::ud::emu_options(vcpu.vm(), l, false); // HOOK(ud): MOVBE on MMIO
    let o = emulate::emulate_with(&mut l.arch, &mut env, &cfg, None, opts);
    // SVM_EXIT_NPF, EXITINFO1 = error code, EXITINFO2 = GPA (as upstream's get_exit_info).
    let (int_info, int_err) = l.run.exit_int;
    let info = emulation::ExitInfo::svm(0x400, error, gpa, int_info, int_err);
    Ok(finish(vcpu, l, run, o, &info, rflags_before))
}

/// Completes what the last exit left (`HOOK(exits)` at the top of `KVM_RUN`, also with
/// `immediate_exit`): `Ok(true)` when the completion itself needs userspace again (the
/// caller returns 0 with the new exit in kvm_run).
pub(crate) fn complete_userspace(vcpu: &Vcpu, l: &mut VcpuLocked) -> Result<bool> {
    let intercepts = l.exits.debug.intercepts();
    let dr = l.exits.debug.hw_bp();
    if let Some(crate::run::VcpuBackend::Svm(s)) = l.backend.as_mut() {
        s.set_exception_intercepts(intercepts);
        s.set_dr_intercepts(dr);
    }
    let run = RunPage(vcpu.run_page());
    if core::mem::take(&mut l.exits.bp_skip) {
        inject_bp_skip(vcpu, l);
    }
    let action = match l.exits.pending.take() {
        None => Action::Continue,
        Some(p) => complete_pending(vcpu, l, run, p),
    };
    Ok(after_step(l, run, action) == Action::ToUser)
}

/// A #BP queued by `KVM_GUESTDBG_INJECT_BP` is a soft exception: without next-RIP save the
/// INT3 at RIP is skipped first so the guest's handler returns past it (upstream
/// `svm_update_soft_interrupt_rip`); if it cannot be skipped the #BP is not injected, as
/// upstream's `svm_inject_exception` drops it then.
fn inject_bp_skip(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let e = l.arch.events.exception;
    if !(e.pending && e.vector == BP) {
        return;
    }
    let rflags = l.arch.rflags;
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    match emulate::skip(&l.arch, &mut env, &cfg) {
        Ok(d) if d.insn.op == Op::Int3 => {
            l.arch.rip = d.next_rip;
            l.arch.rflags = rflags;
        }
        _ => l.arch.events.exception.pending = false,
    }
}

/// Completes one pending exit.
fn complete_pending(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, p: Pending) -> Action {
    let u = read_union(run);
    match p {
        Pending::MmioRead { gpa, len } => {
            let m = MmioData {
                gpa: Gpa(gpa),
                len,
                data: krun::read_mmio_data(&u),
            };
            let cfg = walk_config(l);
            let mut env = MemEnv::new(vcpu.vm());
            let rflags_before = l.arch.rflags;
            let opts = crate::ud::emu_options(vcpu.vm(), l, false); // HOOK(ud)
            let o = emulate::emulate_with(&mut l.arch, &mut env, &cfg, Some(&m), opts);
            finish(
                vcpu,
                l,
                run,
                o,
                &emulation::ExitInfo::default(),
                rflags_before,
            )
        }
        Pending::Msr { read } => {
            let (error, data) = krun::read_msr_answer(&u);
            match user_msr::complete(read, error, data) {
                user_msr::Outcome::Complete(v) => {
                    // Skip first: a failed skip reports the state before the completion.
                    let op = if read { Op::Rdmsr } else { Op::Wrmsr };
                    match skip_or(vcpu, l, run, op, &emulation::ExitInfo::default()) {
                        Some(a) => a,
                        None => {
                            if let Some(v) = v {
                                let (eax, edx) = user_msr::split_edx_eax(v);
                                l.arch.set_gpr(Gpr::Rax, eax);
                                l.arch.set_gpr(Gpr::Rdx, edx);
                            }
                            Action::Continue
                        }
                    }
                }
                _ => {
                    inject_gp(l);
                    Action::Continue
                }
            }
        }
        Pending::Hypercall { long_mode } => {
            let ret = hypercall::complete(krun::read_hypercall_ret(&u), long_mode);
            l.arch.set_gpr(Gpr::Rax, ret);
            skip_or(vcpu, l, run, Op::Vmmcall, &emulation::ExitInfo::default())
                .unwrap_or(Action::Continue)
        }
        Pending::PioIn(pio) => complete_pio_in(vcpu, l, run, pio),
        Pending::OutsDone => {
            l.exits.step_trap = true;
            Action::Continue
        }
    }
}

/// An instruction was completed for the guest (skipped or emulated) with `rflags_before` in
/// force: its single-step trap is due ([`after_step`]; upstream `kvm_skip_emulated_instruction`
/// → `kvm_vcpu_do_singlestep`). Every path that moves RIP past an instruction calls it.
pub(crate) fn mark_completed(l: &mut VcpuLocked, rflags_before: u64) {
    if rflags_before & x86::exits::guest_debug::RFLAGS_TF != 0 {
        l.exits.step_trap = true;
    }
}

/// `OUT 0x7e` skipped before its userspace exit (`KVM_X86_QUIRK_OUT_7E_INC_RIP`, upstream
/// `kvm_fast_pio_out` → `kvm_skip_emulated_instruction`): its single-step trap comes now, so
/// with guest debugging single-stepping `KVM_EXIT_DEBUG` replaces the I/O exit (as upstream's
/// `kvm_vcpu_do_singlestep` rewrites `exit_reason` there), and the guest's own TF queues #DB.
pub(crate) fn out_7e_skipped(l: &mut VcpuLocked, run: RunPage, rflags_before: u64) {
    mark_completed(l, rflags_before);
    // `Continue`: the step's exit, if any, is written over the I/O exit.
    after_step(l, run, Action::Continue);
}

/// HOOK(misc) for the run loop's plain IN/OUT completion: the instruction completed if RIP
/// moved from `rip_before`.
pub(crate) fn pio_completed(l: &mut VcpuLocked, rip_before: u64) {
    if l.arch.rip != rip_before {
        mark_completed(l, l.arch.rflags);
    }
}

/// The single-step trap of an instruction the module completed for the guest (upstream
/// `kvm_vcpu_do_singlestep`), applied to the action the exit chose: `KVM_EXIT_DEBUG` with the
/// next RIP when guest debugging single-steps (unless the exit already goes to userspace:
/// HLT's exit replaces it, as upstream's `kvm_emulate_halt` does), else a #DB with DR6.BS for
/// the guest's own TF.
pub(crate) fn after_step(l: &mut VcpuLocked, run: RunPage, a: Action) -> Action {
    if !core::mem::take(&mut l.exits.step_trap) {
        return a;
    }
    let dr7 = l
        .exits
        .debug
        .hw_breakpoints()
        .map_or(l.arch.dr7, |(_, dr7)| dr7);
    // The TF checked was RFLAGS before the instruction; it is still set (nothing the module
    // completes clears it).
    let rflags = l.arch.rflags | x86::exits::guest_debug::RFLAGS_TF;
    match l
        .exits
        .debug
        .after_instruction(rflags, linear_rip(&l.arch), dr7)
    {
        AfterStep::None => a,
        AfterStep::Exit(e) => {
            if a == Action::ToUser {
                return a;
            }
            set_exit(run, &e);
            Action::ToUser
        }
        AfterStep::QueueDb(payload) => {
            crate::run::queue_exception(l, DB, None, Some(payload));
            a
        }
    }
}

/// HOOK(misc), before an entry with IRQs off: with the debugger's hardware breakpoints on,
/// its DR0-3/DR7 go into the guest state for this run (the guest's own are kept aside) and
/// DR6 starts clean so a #DB's DR6 says exactly what hit (upstream's `eff_db` /
/// `guest_debug_dr7` and SVM's DR6 = `DR6_ACTIVE_LOW` when debug registers exit).
pub(crate) fn hw_bp_enter(st: &mut CpuState, x: &mut VcpuExits) {
    if let Some((db, dr7)) = x.debug.hw_breakpoints() {
        x.saved_dr = Some(([st.db[0], st.db[1], st.db[2], st.db[3]], st.dr6, st.dr7));
        for (r, v) in st.db.iter_mut().zip(db) {
            *r = v;
        }
        st.dr7 = dr7;
        st.dr6 = x86::exits::guest_debug::DR6_ACTIVE_LOW;
    }
}

/// HOOK(misc), after the entry: the guest's own debug registers back; DR6/DR7 as the hardware
/// left them are kept for the `KVM_EXIT_DEBUG` of this exit.
pub(crate) fn hw_bp_exit(st: &mut CpuState, x: &mut VcpuExits) {
    x.dr_at_exit = None;
    if let Some((db, dr6, dr7)) = x.saved_dr.take() {
        x.dr_at_exit = Some((st.dr6, st.dr7));
        for (r, v) in st.db.iter_mut().zip(db) {
            *r = v;
        }
        st.dr6 = dr6;
        st.dr7 = dr7;
    }
}

/// The exits `crate::run::handle_exit` does not handle itself (`HOOK(exits)`).
pub(crate) fn handle(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: ExitInfo,
) -> Result<Action> {
    match info.exit {
        Exit::Cpuid => cpuid(vcpu, l, run, &info),
        Exit::Msr { write } => msr(vcpu, l, run, write, &info),
        Exit::Vmmcall => vmmcall(vcpu, l, run, &info),
        Exit::Xsetbv => xsetbv(vcpu, l, run, &info),
        Exit::Io {
            port,
            size,
            is_in,
            next_rip,
            ..
        } => string_io(vcpu, l, run, port, size, is_in, next_rip, &info),
        Exit::Exception { vector: UD, .. } => Ok(crate::ud::intercept(vcpu, l, run, &info)), // HOOK(ud)
        Exit::Exception { vector, error_code } => Ok(exception(l, run, vector, error_code)),
        Exit::MonitorMwait { mwait } => Ok(crate::mwait::intercept(vcpu, l, run, &info, mwait)),
        // SVM_EXIT_READ_DR0..7 / WRITE_DR0..7: only intercepted with the debugger's hardware
        // breakpoints loaded.
        Exit::Other { code, .. }
            if (0x20..0x28).contains(&code) || (0x30..0x38).contains(&code) =>
        {
            dr_access(vcpu, l, run, &info)
        }
        _ => {
            run.internal_error(
                crate::run::uapi::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
                &[info.code, u64::from(l.run.last_cpu)],
            );
            Ok(Action::ToUser)
        }
    }
}

/// Decodes the instruction at RIP for an exit that names it (no decode assists): the decoded
/// instruction if `expected` accepts its operation; otherwise what the exit ends in — the
/// fetch's exception queued for the guest, or an emulation failure for an instruction that is
/// not the intercepted one or that the decoder does not know.
fn decode_expected(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
    expected: impl Fn(Op) -> bool,
) -> core::result::Result<emulate::Decoded, Action> {
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    match emulate::decode_at_rip(&l.arch, &mut env, &cfg) {
        Ok(d) if expected(d.insn.op) => Ok(d),
        Ok(d) => Err(emulation_failure(vcpu, l, run, &d.bytes, &exit_info(info))),
        Err(emulate::Failure::Exception(e)) => {
            inject(l, e);
            Err(Action::Continue)
        }
        Err(emulate::Failure::Unhandleable(b)) => {
            Err(emulation_failure(vcpu, l, run, &b, &exit_info(info)))
        }
    }
}

/// A guest MOV to or from a debug register while the debugger's hardware breakpoints are
/// loaded (upstream `dr_interception` without decode assists → the emulator): decoded at RIP
/// (no decode assists here either), emulated against the guest's own registers
/// ([`x86::exits::guest_debug::mov_dr`]), then skipped.
fn dr_access(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: &ExitInfo) -> Result<Action> {
    use x86::exits::guest_debug::{mov_dr, DrOutcome};
    let d = match decode_expected(vcpu, l, run, info, |op| {
        matches!(op, Op::MovFromDr | Op::MovToDr)
    }) {
        Ok(d) => d,
        Err(a) => return Ok(a),
    };
    let i = d.insn;
    let (reg, dr) = match (i.op, i.dst, i.src) {
        (Op::MovFromDr, x86emu::decode::Operand::Reg(r), x86emu::decode::Operand::Imm(n)) => (r, n),
        (Op::MovToDr, x86emu::decode::Operand::Imm(n), x86emu::decode::Operand::Reg(r)) => (r, n),
        _ => return Ok(emulation_failure(vcpu, l, run, &d.bytes, &exit_info(info))),
    };
    let long64 = in_64bit_mode(&l.arch);
    let mask = if long64 { u64::MAX } else { 0xffff_ffff };
    let write = (i.op == Op::MovToDr).then(|| l.arch.gpr(reg.gpr) & mask);
    let (rtm, bus_lock) = (l.cpuid.model.rtm, l.cpuid.model.bus_lock_detect);
    let cpl = emulate::cpl(&l.arch);
    match mov_dr(&mut l.arch, dr as u8, write, long64, cpl, rtm, bus_lock) {
        DrOutcome::Gp => inject_gp(l),
        DrOutcome::Ud => inject_ud(l),
        DrOutcome::GeneralDetect => crate::run::queue_exception(l, DB, None, None),
        o => {
            if let DrOutcome::Read(v) = o {
                // A 32-bit register write zero-extends.
                l.arch.set_gpr(reg.gpr, v & mask);
            }
            let rflags = l.arch.rflags;
            l.arch.rip = d.next_rip;
            l.arch.events.interrupt_shadow = 0;
            mark_completed(l, rflags);
        }
    }
    Ok(Action::Continue)
}

/// An intercepted exception: guest debugging's #DB/#BP exit to userspace; anything else
/// (including the #GP svm reports for RDPMC) goes to the guest's IDT.
fn exception(l: &mut VcpuLocked, run: RunPage, vector: u8, error_code: u32) -> Action {
    let lrip = linear_rip(&l.arch);
    // With the debugger's hardware breakpoints loaded, the hardware's DR6/DR7 of this exit.
    let (dr6, dr7) = l.exits.dr_at_exit.unwrap_or((l.arch.dr6, l.arch.dr7));
    let e = match vector {
        DB => l.exits.debug.on_db(lrip, dr6, dr7),
        BP => l.exits.debug.on_bp(lrip, dr6, dr7),
        _ => None,
    };
    if let Some(e) = e {
        set_exit(run, &e);
        return Action::ToUser;
    }
    if vector == DB {
        // Upstream db_interception: the guest's own #DB goes back to it with the DR6 bits the
        // hardware set as payload (DR6 is the VMCB's, stored into `CpuState.dr6`).
        let payload = dr6 ^ x86::regs::DR6_ACTIVE_LOW;
        crate::run::queue_exception(l, DB, None, Some(payload));
        return Action::Continue;
    }
    // (#PF is never intercepted here, so no CR2 comes with an intercepted exception; #AC
    // gets its error code 0 from the list below, as upstream's ac_interception.)
    let has_error = matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30);
    crate::run::queue_exception(l, vector, has_error.then_some(error_code), None);
    Action::Continue
}

/// CPUID from the vCPU's table (upstream `kvm_emulate_cpuid`): EAX..EDX zero-extended.
fn cpuid(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: &ExitInfo) -> Result<Action> {
    // HOOK(abi): CPUID faulting (MSR_MISC_FEATURES_ENABLES) at CPL > 0 is #GP(0), not skipped.
    if x86::msr::cpuid_faults(&l.arch, emulate::cpl(&l.arch)) {
        inject_gp(l);
        return Ok(Action::Continue);
    }
    let (eax, ecx) = (l.arch.gpr(Gpr::Rax) as u32, l.arch.gpr(Gpr::Rcx) as u32);
    let r = crate::vcpu_state::guest_cpuid(l, eax, ecx);
    if let Some(a) = skip_or(vcpu, l, run, Op::Cpuid, &exit_info(info)) {
        return Ok(a);
    }
    for (g, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].into_iter().zip(r) {
        l.arch.set_gpr(g, u64::from(v));
    }
    Ok(Action::Continue)
}

/// RDMSR/WRMSR (upstream `kvm_emulate_rdmsr` / `kvm_emulate_wrmsr`): the filter, then the
/// vCPU's MSR code; a refusal exits to userspace if userspace asked for its reason, else #GP.
fn msr(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    write: bool,
    info: &ExitInfo,
) -> Result<Action> {
    use user_msr::MsrResult;
    use x86::exits::msr_filter::MsrAccess;
    use x86::msr::MsrFault;
    let index = l.arch.gpr(Gpr::Rcx) as u32;
    let data = user_msr::join_edx_eax(l.arch.gpr(Gpr::Rax), l.arch.gpr(Gpr::Rdx));
    let (mask, allowed) = {
        let x = vcpu.vm().exits().lock();
        let a = if write {
            MsrAccess::Write
        } else {
            MsrAccess::Read
        };
        (x.user_space_msr_mask, x.msr_allowed(index, a))
    };
    let fault = |f: MsrFault| match f {
        MsrFault::Unsupported => MsrResult::Unsupported,
        MsrFault::Invalid => MsrResult::Invalid,
    };
    // HOOK(irqmod): IA32_APIC_BASE, x2APIC and TSC-deadline MSRs of the in-kernel LAPIC.
    let lapic = if allowed {
        crate::irq::lapic::guest_msr(vcpu, l, index, write.then_some(data))
    } else {
        None
    };
    // MSR_IA32_MISC_ENABLE's MWAIT bit against KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT.
    let misc = (write && allowed && lapic.is_none() && index == x86::msr::index::IA32_MISC_ENABLE)
        .then(|| crate::mwait::misc_enable_check(vcpu.vm(), l, data));
    let r = if let Some(Err(_)) = misc {
        MsrResult::Invalid
    } else if let Some(r) = lapic {
        match r {
            Ok(v) => MsrResult::Ok(v),
            Err(()) => MsrResult::Invalid,
        }
    } else if !allowed {
        MsrResult::Filtered
    } else if write {
        match crate::pv::guest_wrmsr(vcpu, l, index, data) {
            // HOOK(clock): PV MSRs first
            Ok(()) => MsrResult::Ok(0),
            Err(f) => fault(f),
        }
    } else {
        match crate::pv::guest_rdmsr(vcpu, l, index) {
            // HOOK(clock): PV MSRs first
            Ok(v) => MsrResult::Ok(v),
            Err(f) => fault(f),
        }
    };
    if matches!(misc, Some(Ok(true))) && matches!(r, MsrResult::Ok(_)) {
        crate::mwait::sync_cpuid(vcpu.vm(), l);
    }
    match user_msr::outcome(mask, index, write.then_some(data), r) {
        user_msr::Outcome::Complete(v) => {
            let op = if write { Op::Wrmsr } else { Op::Rdmsr };
            if let Some(a) = skip_or(vcpu, l, run, op, &exit_info(info)) {
                return Ok(a);
            }
            if let Some(v) = v {
                let (eax, edx) = user_msr::split_edx_eax(v);
                l.arch.set_gpr(Gpr::Rax, eax);
                l.arch.set_gpr(Gpr::Rdx, edx);
            }
            Ok(Action::Continue)
        }
        user_msr::Outcome::Gp => {
            inject_gp(l);
            Ok(Action::Continue)
        }
        user_msr::Outcome::Exit {
            reason,
            index,
            data,
        } => {
            set_exit(
                run,
                &UExit::Msr {
                    write,
                    reason,
                    index,
                    data,
                },
            );
            l.exits.pending = Some(Pending::Msr { read: !write });
            Ok(Action::ToUser)
        }
    }
}

/// VMMCALL (upstream `kvm_emulate_hypercall`).
fn vmmcall(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: &ExitInfo) -> Result<Action> {
    let long_mode = in_64bit_mode(&l.arch);
    let c = hypercall::Call {
        rax: l.arch.gpr(Gpr::Rax),
        rbx: l.arch.gpr(Gpr::Rbx),
        rcx: l.arch.gpr(Gpr::Rcx),
        rdx: l.arch.gpr(Gpr::Rdx),
        rsi: l.arch.gpr(Gpr::Rsi),
        cpl: emulate::cpl(&l.arch),
        long_mode,
    };
    let mask = vcpu.vm().exits().lock().hypercall_exit_mask;
    // HOOK(clock): PV hypercalls whose feature is missing under enforcement (-KVM_ENOSYS) and
    // KVM_HC_CLOCK_PAIRING.
    let gate = crate::pv::hypercall(vcpu, l, &c).map(hypercall::Outcome::Ret);
    match gate.unwrap_or_else(|| hypercall::emulate(&c, mask)) {
        hypercall::Outcome::Ret(v) => {
            if let Some(a) = skip_or(vcpu, l, run, Op::Vmmcall, &exit_info(info)) {
                return Ok(a);
            }
            l.arch.set_gpr(Gpr::Rax, v);
            Ok(Action::Continue)
        }
        hypercall::Outcome::Exit(e) => {
            set_exit(run, &e);
            l.exits.pending = Some(Pending::Hypercall { long_mode });
            Ok(Action::ToUser)
        }
    }
}

/// XSETBV (upstream `kvm_emulate_xsetbv`): CPL 0 and a valid XCR0 for the guest's CPUID, else
/// #GP(0).
fn xsetbv(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: &ExitInfo) -> Result<Action> {
    let index = l.arch.gpr(Gpr::Rcx) as u32;
    let value = user_msr::join_edx_eax(l.arch.gpr(Gpr::Rax), l.arch.gpr(Gpr::Rdx));
    let supported = l.cpuid.model.supported_xcr0;
    if emulate::cpl(&l.arch) != 0 || !x86::exits::xcr::valid(index, value, supported) {
        inject_gp(l);
        return Ok(Action::Continue);
    }
    if let Some(a) = skip_or(vcpu, l, run, Op::Xsetbv, &exit_info(info)) {
        return Ok(a);
    }
    l.arch.xcr0 = value;
    Ok(Action::Continue)
}

/// String or REP port I/O (upstream: `io_interception` → `kvm_emulate_instruction` →
/// `em_in`/`em_out` with `emulator_pio_in_out`). INS reads ahead: one exit for up to
/// min(RCX, bytes to the end of the page, 1024 / size) elements, the registers untouched until
/// the next `KVM_RUN` stores them; OUTS exits once per element with the registers already
/// stepped, as upstream's emulator does.
#[allow(clippy::too_many_arguments)]
fn string_io(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    port: u16,
    size: u8,
    is_in: bool,
    next_rip: u64,
    info: &ExitInfo,
) -> Result<Action> {
    let d = match decode_expected(vcpu, l, run, info, |op| matches!(op, Op::Ins | Op::Outs)) {
        Ok(d) => d,
        Err(a) => return Ok(a),
    };
    // The element's access walks the same configuration.
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    let i = d.insn;
    let rep = i.rep.is_some_and(|r| matches!(r, Rep::Rep | Rep::Repne));
    let mask = addr_mask(i.addr_size);
    let rcx = l.arch.gpr(Gpr::Rcx) & mask;
    if rep && rcx == 0 {
        l.arch.rip = next_rip;
        mark_completed(l, l.arch.rflags);
        return Ok(Action::Continue);
    }
    let sz = u64::from(size);
    let df = l.arch.rflags & RFLAGS_DF != 0;
    let pio = vcpu.pio_page();
    if is_in {
        let rdi = l.arch.gpr(Gpr::Rdi) & mask;
        let n = ins_batch(rdi, df, if rep { rcx } else { 1 }, size);
        // HOOK(cr8): a port an in-kernel device serves (PIC, ELCR, PIT, speaker) fills the
        // batch here and it is stored at once, no exit (upstream emulator_pio_in_out).
        if crate::run::pio_ins::read_in_kernel(vcpu, port, size, n) {
            let p = PioIn {
                size,
                count: n,
                addr_size: i.addr_size,
                rep,
                next_rip,
                linear_rip: linear_rip(&l.arch),
            };
            return Ok(complete_pio_in(vcpu, l, run, p));
        }
        set_exit(
            run,
            &UExit::Io {
                direction: krun::KVM_EXIT_IO_IN,
                size,
                port,
                count: n,
                data_offset: (crate::abi::KVM_PIO_PAGE_OFFSET * 4096) as u64,
            },
        );
        l.exits.pending = Some(Pending::PioIn(PioIn {
            size,
            count: n,
            addr_size: i.addr_size,
            rep,
            next_rip,
            linear_rip: linear_rip(&l.arch),
        }));
        return Ok(Action::ToUser);
    }
    // OUTS: one element from seg:rSI.
    let rsi = l.arch.gpr(Gpr::Rsi) & mask;
    let mut buf = [0u8; 4];
    let b = &mut buf[..size as usize];
    match emulate::read_guest(&l.arch, &mut env, &cfg, i.str_seg, rsi, b) {
        Ok(()) => {}
        Err(GuestAccessError::Exception(e)) => {
            inject(l, e);
            return Ok(Action::Continue);
        }
        Err(GuestAccessError::NotRam) => {
            return Ok(emulation_failure(vcpu, l, run, &d.bytes, &exit_info(info)))
        }
    }
    let delta = if df { -(sz as i64) } else { sz as i64 };
    let new_rsi = step(l.arch.gpr(Gpr::Rsi), delta, i.addr_size);
    l.arch.set_gpr(Gpr::Rsi, new_rsi);
    let mut done = true;
    if rep {
        let c = step(l.arch.gpr(Gpr::Rcx), -1, i.addr_size);
        l.arch.set_gpr(Gpr::Rcx, c);
        done = c & mask == 0;
    }
    let rflags_before = l.arch.rflags;
    if done {
        l.arch.rip = next_rip;
    }
    // HOOK(irqroute): an OUTS element for the in-kernel PIC/ELCR/PIT ports does not exit.
    let mut v = [0u8; 4];
    if let Some(d) = v.get_mut(..b.len()) {
        d.copy_from_slice(b);
    }
    if crate::irq::pio_out(vcpu.vm(), port, size, u32::from_le_bytes(v)) {
        if done {
            mark_completed(l, rflags_before);
        }
        return Ok(Action::Continue);
    }
    if vcpu.vm().io_bus_write(Bus::Pio, u64::from(port), b) == WriteResult::Handled {
        if done {
            mark_completed(l, rflags_before);
        }
        return Ok(Action::Continue);
    }
    if done && rflags_before & x86::exits::guest_debug::RFLAGS_TF != 0 {
        l.exits.pending = Some(Pending::OutsDone);
    }
    for (k, v) in b.iter().enumerate() {
        // SAFETY: `pio` is the vCPU's 4 KiB PIO page; at most 4 bytes are written.
        unsafe { core::ptr::write_volatile(pio.add(k), *v) };
    }
    set_exit(
        run,
        &UExit::Io {
            direction: krun::KVM_EXIT_IO_OUT,
            size,
            port,
            count: 1,
            data_offset: (crate::abi::KVM_PIO_PAGE_OFFSET * 4096) as u64,
        },
    );
    Ok(Action::ToUser)
}

/// The next `KVM_RUN` after a string IN: stores as many of the elements as RCX (which
/// userspace may have changed) still asks for at ES:rDI and steps the registers; RIP moves on
/// when RCX reaches 0 (else the guest re-executes the instruction for the rest).
fn complete_pio_in(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, p: PioIn) -> Action {
    if linear_rip(&l.arch) != p.linear_rip {
        // Userspace moved RIP: the instruction is abandoned (upstream drops the completion).
        return Action::Continue;
    }
    let mask = addr_mask(p.addr_size);
    let rcx = l.arch.gpr(Gpr::Rcx) & mask;
    let n = ins_done(p.count, p.rep, rcx);
    let sz = u64::from(p.size);
    let df = l.arch.rflags & RFLAGS_DF != 0;
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    let pio = vcpu.pio_page();
    let mut done_elems = 0u64;
    while done_elems < n {
        let mut buf = [0u8; 4];
        for (k, b) in buf.iter_mut().take(p.size as usize).enumerate() {
            let at = (done_elems * sz) as usize + k;
            // SAFETY: `pio` is the vCPU's 4 KiB PIO page; `at` < count * size <= 1024.
            *b = unsafe { core::ptr::read_volatile(pio.add(at)) };
        }
        let rdi = l.arch.gpr(Gpr::Rdi) & mask;
        let w = emulate::write_guest(
            &l.arch,
            &mut env,
            &cfg,
            SegReg::Es,
            rdi,
            &buf[..p.size as usize],
        );
        match w {
            Ok(()) => {}
            Err(GuestAccessError::Exception(e)) => {
                inject(l, e);
                return Action::Continue;
            }
            Err(GuestAccessError::NotRam) => {
                let b = InsnBytes {
                    bytes: [0; 15],
                    len: 0,
                };
                return emulation_failure(vcpu, l, run, &b, &emulation::ExitInfo::default());
            }
        }
        let delta = if df { -(sz as i64) } else { sz as i64 };
        let new_rdi = step(l.arch.gpr(Gpr::Rdi), delta, p.addr_size);
        l.arch.set_gpr(Gpr::Rdi, new_rdi);
        if p.rep {
            let c = step(l.arch.gpr(Gpr::Rcx), -1, p.addr_size);
            l.arch.set_gpr(Gpr::Rcx, c);
        }
        done_elems += 1;
    }
    if !p.rep || l.arch.gpr(Gpr::Rcx) & mask == 0 {
        l.arch.rip = p.next_rip;
        mark_completed(l, l.arch.rflags);
    }
    Action::Continue
}

/// A plain OUT offered to the in-kernel PIO devices first (upstream `kernel_pio` before the
/// userspace exit): true if an ioeventfd or a coalesced PIO zone took it (RIP moved on).
pub(crate) fn pio_out_in_kernel(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    port: u16,
    size: u8,
    next_rip: u64,
) -> bool {
    let v = l.arch.gpr(Gpr::Rax).to_le_bytes();
    let data = &v[..usize::from(size).min(4)];
    // HOOK(irqroute): the in-kernel PIC/ELCR/PIT ports.
    if crate::irq::pio_out(vcpu.vm(), port, size, l.arch.gpr(Gpr::Rax) as u32) {
        l.arch.rip = next_rip;
        mark_completed(l, l.arch.rflags);
        return true;
    }
    if vcpu.vm().io_bus_write(Bus::Pio, u64::from(port), data) == WriteResult::Handled {
        l.arch.rip = next_rip;
        mark_completed(l, l.arch.rflags);
        true
    } else {
        false
    }
}
