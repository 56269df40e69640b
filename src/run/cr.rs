// SPDX-License-Identifier: GPL-2.0-only
//! The CR4-write intercept (HOOK(entry); upstream `cr_interception` -> `kvm_set_cr4`): a guest's
//! `MOV CR4, r` is checked against the module's and the vCPU's CPUID's reserved bits and the
//! mode rules ([`x86::cr::guest_set_cr4`]) and, when a PAE guest's write reloads its PDPTEs,
//! those at CR3 (upstream `load_pdptrs`): a refused value is #GP(0) with RIP unchanged; an
//! accepted one is written, the instruction skipped, the guest's TLB flushed when the change
//! requires it, and the CPUID bits that mirror OSXSAVE/PKE refreshed (CPUID.1:ECX.OSXSAVE
//! follows CR4, cr4_cpuid_sync_test).
//!
//! Without DecodeAssists (QEMU's SVM) the exit does not name the source register, so the
//! instruction at CS:RIP is decoded (also with them: one path); anything but `MOV CR4, r` there
//! takes the emulation-failure path of the other intercepts. Reads of CR4 are intercepted too
//! (`MOV r, CR4`, decoded the same way): the hardware's CR4 keeps the host's MCE bit (upstream
//! `svm_set_cr4`), the guest reads its own value.

use crate::exit_run::{mark_completed, skip_intercepted};
use crate::guest_mem::MemEnv;
use crate::run::{queue_exception, Action, ExitInfo, RunPage};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vcpu_state::walk_config;
use kernel::prelude::*;
use x86emu::decode::{Op, Operand};
use x86emu::emulate;

/// The decoded instruction at CS:RIP if it is `op` with a register operand: the GPR, the
/// operand size and the next RIP.
fn decode_mov_cr(vcpu: &Vcpu, l: &VcpuLocked, op: Op) -> Option<(x86::state::Gpr, u8, u64)> {
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
fn gp_unless_cpl0(l: &mut VcpuLocked) -> Option<Action> {
    if emulate::cpl(&l.arch) == 0 {
        return None;
    }
    queue_exception(l, x86::svm::vector::GP, Some(0), None);
    Some(Action::Continue)
}

/// Upstream `load_pdptrs` for the CR4 write: the PDPT at CR3 readable and valid.
fn pdptes_load(vcpu: &Vcpu, l: &VcpuLocked) -> bool {
    let mut b = [0u8; 32];
    let gpa = x86::cr::pdpt_gpa(l.arch.cr3);
    if crate::vcpu_state::read_guest(vcpu, gpa, &mut b).is_err() {
        return false;
    }
    let mut p = [0u64; 4];
    for (i, e) in p.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        if let Some(s) = b.get(i * 8..i * 8 + 8) {
            w.copy_from_slice(s);
        }
        *e = u64::from_le_bytes(w);
    }
    x86::cr::pdptes_valid(&p, &l.cpuid.model)
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
    // Its single-step trap (upstream kvm_skip_emulated_instruction).
    mark_completed(l, l.arch.rflags);
    Ok(Action::Continue)
}

/// The start every intercepted `MOV CRn, r` shares: the source value (its low 32 bits at
/// 32-bit operand size) and the next RIP, or the action that already ended the exit: #GP(0)
/// outside CPL 0, or, when the instruction is not decodable, a fault fetching it or another
/// instruction (rewritten by another vCPU), the shared skip path, which decodes it again with
/// no instruction to accept and so queues the fault or reports the emulation failure as for any
/// intercept.
pub(super) fn mov_to_cr_source(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
    cr: u8,
) -> core::result::Result<(u64, u64), Action> {
    let Some((gpr, size, next_rip)) = decode_mov_cr(vcpu, l, Op::MovToCr(cr)) else {
        return Err(skip_intercepted(vcpu, l, run, &[], info).unwrap_or(Action::Continue));
    };
    if let Some(a) = gp_unless_cpl0(l) {
        return Err(a);
    }
    let mut val = l.arch.gpr(gpr);
    if size == 4 {
        val &= 0xffff_ffff;
    }
    Ok((val, next_rip))
}

/// `MOV CR4, r` intercepted.
pub(crate) fn cr4_write(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    run: RunPage,
    info: &ExitInfo,
) -> Result<Action> {
    let (val, next_rip) = match mov_to_cr_source(vcpu, l, run, info, 4) {
        Ok(v) => v,
        Err(a) => return Ok(a),
    };
    let c = crate::vcpu_state::caps();
    // #GP(0) (its error code is dropped at injection outside protected mode, as upstream's
    // kvm_inject_exception does).
    let gp = |l: &mut VcpuLocked| {
        queue_exception(l, x86::svm::vector::GP, Some(0), None);
        Ok(Action::Continue)
    };
    let Some(fx) = x86::cr::guest_set_cr4(&l.arch, val, &c.msr.limits, &l.cpuid.model) else {
        return gp(l);
    };
    // PAE paging and a PDPTR bit changed: upstream load_pdptrs reads the four PDPTEs at CR3
    // now and refuses the write (#GP) when they cannot be read or a present one has reserved
    // bits set.
    if fx.pdptrs_stale && !pdptes_load(vcpu, l) {
        return gp(l);
    }
    l.arch.cr4 = val;
    l.arch.rip = next_rip;
    // As every skipped instruction: the interrupt shadow ends, and its single-step trap is
    // due (upstream kvm_skip_emulated_instruction → kvm_vcpu_do_singlestep).
    l.arch.events.interrupt_shadow = 0;
    mark_completed(l, l.arch.rflags);
    if fx.pdptrs_stale {
        // Loaded from guest memory (upstream: pdptrs_from_userspace = false).
        l.arch.pdptrs = None;
    }
    if fx.flush_tlb {
        l.run.flush_tlb = true;
    }
    if fx.cpuid_runtime {
        crate::vcpu_state::update_cpuid_runtime(l);
        crate::mwait::sync_cpuid(vcpu.vm(), l);
    }
    Ok(Action::Continue)
}
