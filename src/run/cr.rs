// SPDX-License-Identifier: GPL-2.0-only
//! The CR4-write intercept (HOOK(entry); upstream `cr_interception` -> `kvm_set_cr4`): a guest's
//! `MOV CR4, r` is checked against the module's and the vCPU's CPUID's reserved bits and the
//! mode rules ([`x86::cr::guest_set_cr4`]): a refused value is #GP(0) with RIP unchanged; an
//! accepted one is written, the instruction skipped, the guest's TLB flushed when the change
//! requires it, and the CPUID bits that mirror OSXSAVE/PKE refreshed (CPUID.1:ECX.OSXSAVE
//! follows CR4, cr4_cpuid_sync_test).
//!
//! Without DecodeAssists (QEMU's SVM) the exit does not name the source register, so the
//! instruction at CS:RIP is decoded (also with them: one path); anything but `MOV CR4, r` there
//! takes the emulation-failure path of the other intercepts. Reads of CR4 are intercepted too
//! (`MOV r, CR4`, decoded the same way): the hardware's CR4 keeps the host's MCE bit (upstream
//! `svm_set_cr4`), the guest reads its own value.

use crate::exit_run::skip_intercepted;
use crate::guest_mem::MemEnv;
use crate::run::{queue_exception, Action, ExitInfo, RunPage};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vcpu_state::walk_config;
use kernel::prelude::*;
use x86emu::decode::{Op, Operand};
use x86emu::emulate;

/// The decoded instruction at CS:RIP if it is `op` with a register operand: the GPR, the
/// operand size and the next RIP (HOOK(cr8): the CR8-write intercept decodes with it too).
pub(super) fn decode_mov_cr(
    vcpu: &Vcpu,
    l: &VcpuLocked,
    op: Op,
) -> Option<(x86::state::Gpr, u8, u64)> {
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    let d = emulate::skip(&l.arch, &mut env, &cfg).ok()?;
    if d.insn.op != op {
        return None;
    }
    match (d.insn.dst, d.insn.src) {
        (Operand::Reg(r), Operand::None) | (Operand::None, Operand::Reg(r)) => {
            Some((r.gpr, d.insn.op_size, d.next_rip))
        }
        _ => None,
    }
}

/// #GP(0) outside CPL 0 (the CPU checks the privilege before the intercept; this only guards
/// against an exit it did not order so, as the emulator upstream would).
pub(super) fn gp_unless_cpl0(l: &mut VcpuLocked) -> Option<Action> {
    if emulate::cpl(&l.arch) == 0 {
        return None;
    }
    queue_exception(l, x86::svm::vector::GP, Some(0), None);
    Some(Action::Continue)
}

/// `MOV r, CR4` intercepted: the guest's CR4 into the register (32 bits outside 64-bit mode).
pub(crate) fn cr4_read(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
) -> Result<Action> {
    let Some((gpr, size, next_rip)) = decode_mov_cr(vcpu, l, Op::MovFromCr(4)) else {
        return Ok(skip_intercepted(vcpu, l, run, &[], info).unwrap_or(Action::Continue));
    };
    if let Some(a) = gp_unless_cpl0(l) {
        return Ok(a);
    }
    let mut val = l.arch.cr4;
    if size == 4 {
        val &= 0xffff_ffff;
    }
    l.arch.set_gpr(gpr, val);
    l.arch.rip = next_rip;
    l.arch.events.interrupt_shadow = 0;
    Ok(Action::Continue)
}

/// `MOV CR4, r` intercepted.
pub(crate) fn cr4_write(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
) -> Result<Action> {
    let Some((gpr, size, next_rip)) = decode_mov_cr(vcpu, l, Op::MovToCr(4)) else {
        // Not decodable, a fault fetching it, or another instruction (rewritten by another
        // vCPU): the shared skip path decodes it again with no instruction to accept, which
        // queues the fault or reports the emulation failure as for any intercept.
        return Ok(skip_intercepted(vcpu, l, run, &[], info).unwrap_or(Action::Continue));
    };
    if let Some(a) = gp_unless_cpl0(l) {
        return Ok(a);
    }
    let mut val = l.arch.gpr(gpr);
    if size == 4 {
        val &= 0xffff_ffff;
    }
    let c = crate::vcpu_state::caps();
    let Some(fx) = x86::cr::guest_set_cr4(&l.arch, val, &c.msr.limits, &l.cpuid.model) else {
        // Outside protected mode an exception pushes no error code (upstream
        // kvm_inject_exception drops it when !is_protmode).
        let pe = l.arch.cr0 & x86::regs::cr0::PE != 0;
        queue_exception(l, x86::svm::vector::GP, pe.then_some(0), None);
        return Ok(Action::Continue);
    };
    l.arch.cr4 = val;
    l.arch.rip = next_rip;
    // As every skipped instruction: the interrupt shadow ends.
    l.arch.events.interrupt_shadow = 0;
    if fx.pdptrs_stale {
        l.arch.pdptrs = None;
    }
    if fx.flush_tlb {
        l.run.flush_tlb = true;
    }
    if fx.cpuid_runtime {
        crate::vcpu_state::update_cpuid_runtime(l);
    }
    Ok(Action::Continue)
}
