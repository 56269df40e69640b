// SPDX-License-Identifier: GPL-2.0-only
//! Which TDX sub-command may run when, and the errno of each refusal: the state machine of a TD
//! (`TD_STATE_UNINITIALIZED` → `INITIALIZED` (INIT_VM) → `RUNNABLE` (FINALIZE)) and of its
//! vCPUs (`VCPU_TD_STATE_UNINITIALIZED` → `INITIALIZED` (INIT_VCPU)), checked in the order
//! upstream's `tdx_vm_ioctl`/`tdx_vcpu_ioctl` (6.16) check them. The module holds the states
//! under its locks and asks these functions.

use super::errno::Errno;
use super::init_vm::STATUS_MASK;
use super::uapi::{KvmTdxCmd, KvmTdxInitMemRegion, TdxCmdId, KVM_TDX_MEASURE_MEMORY_REGION};

/// A TD's state as KVM tracks it (`enum kvm_tdx_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdStage {
    /// Created; no INIT_VM yet (or it failed). Upstream has no HKID in this state.
    Uninitialized,
    /// INIT_VM done (TDH.MNG.INIT): vCPUs and the initial memory may be added.
    Initialized,
    /// FINALIZE done (TDH.MR.FINALIZE): the TD may run; its initial memory is fixed.
    Runnable,
}

/// A TD vCPU's state as KVM tracks it (`enum vcpu_tdx_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStage {
    /// Created; no INIT_VCPU yet.
    Uninitialized,
    /// INIT_VCPU done (TDH.VP.CREATE/ADDCX/INIT).
    Initialized,
}

/// `KVM_MEMORY_ENCRYPT_OP` on a TD's VM fd once the command block was copied in: hw_error ≠ 0
/// → EINVAL; an id that is not CAPABILITIES, INIT_VM or FINALIZE → EINVAL (and, upstream, the
/// command block is then not written back).
///
/// # Errors
///
/// EINVAL.
pub const fn vm_command(cmd: &KvmTdxCmd) -> Result<TdxCmdId, Errno> {
    if cmd.hw_error != 0 {
        return Err(Errno::EINVAL);
    }
    match TdxCmdId::from_raw(cmd.id) {
        Some(id) if id.is_vm_scope() => Ok(id),
        _ => Err(Errno::EINVAL),
    }
}

/// `KVM_MEMORY_ENCRYPT_OP` on a TD vCPU's fd, before the command block is read: the TD must be
/// initialised and not yet runnable (EINVAL).
///
/// # Errors
///
/// EINVAL.
pub const fn vcpu_op_allowed(td: TdStage) -> Result<(), Errno> {
    match td {
        TdStage::Initialized => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// The vCPU fd's command once read: hw_error ≠ 0 → EINVAL; an id that is not INIT_VCPU,
/// INIT_MEM_REGION or GET_CPUID → EINVAL. The block is never written back.
///
/// # Errors
///
/// EINVAL.
pub const fn vcpu_command(cmd: &KvmTdxCmd) -> Result<TdxCmdId, Errno> {
    if cmd.hw_error != 0 {
        return Err(Errno::EINVAL);
    }
    match TdxCmdId::from_raw(cmd.id) {
        Some(id) if !id.is_vm_scope() => Ok(id),
        _ => Err(Errno::EINVAL),
    }
}

/// CAPABILITIES: flags ≠ 0 → EINVAL (any TD state).
///
/// # Errors
///
/// EINVAL.
pub const fn check_capabilities(cmd: &KvmTdxCmd) -> Result<(), Errno> {
    if cmd.flags != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// INIT_VM before its argument is read: the TD must be uninitialised, flags 0 (EINVAL).
///
/// # Errors
///
/// EINVAL.
pub const fn check_init_vm(td: TdStage, cmd: &KvmTdxCmd) -> Result<(), Errno> {
    if !matches!(td, TdStage::Uninitialized) || cmd.flags != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// FINALIZE: the TD must be initialised and not runnable, with no page mapped but not yet
/// added (EINVAL). Flags are not looked at (upstream ignores them).
///
/// # Errors
///
/// EINVAL.
pub const fn check_finalize(td: TdStage, premapped: u64) -> Result<(), Errno> {
    if !matches!(td, TdStage::Initialized) || premapped != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// What a failed TDH.MR.FINALIZE becomes (its status goes to hw_error regardless): BUSY →
/// EBUSY, anything else EIO.
#[must_use]
pub const fn finalize_error(status: u64) -> Errno {
    if status & STATUS_MASK == crate::abi::status::OPERAND_BUSY {
        Errno::EBUSY
    } else {
        Errno::EIO
    }
}

/// INIT_VCPU: flags 0, and not initialised before (EINVAL).
///
/// # Errors
///
/// EINVAL.
pub const fn check_init_vcpu(vcpu: VcpuStage, cmd: &KvmTdxCmd) -> Result<(), Errno> {
    if cmd.flags != 0 || !matches!(vcpu, VcpuStage::Uninitialized) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// INIT_MEM_REGION before its argument is read: the vCPU initialised, the TD not runnable, no
/// flag but MEASURE (EINVAL).
///
/// # Errors
///
/// EINVAL.
pub const fn check_init_mem_region(
    vcpu: VcpuStage,
    td: TdStage,
    cmd: &KvmTdxCmd,
) -> Result<(), Errno> {
    if !matches!(vcpu, VcpuStage::Initialized)
        || matches!(td, TdStage::Runnable)
        || cmd.flags & !KVM_TDX_MEASURE_MEMORY_REGION != 0
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// INIT_MEM_REGION's range, for a TD whose shared bit is `shared_bit` (a GPA mask): source and
/// GPA page-aligned, at least one page, no wrap, first and last GPA private (EINVAL). The
/// length is computed as upstream computes it (`nr_pages << PAGE_SHIFT`, modulo 2^64).
///
/// # Errors
///
/// EINVAL.
pub const fn check_region(r: &KvmTdxInitMemRegion, shared_bit: u64) -> Result<(), Errno> {
    let len = r.nr_pages.wrapping_mul(4096);
    let end = r.gpa.wrapping_add(len);
    if r.source_addr & 0xfff != 0
        || r.gpa & 0xfff != 0
        || r.nr_pages == 0
        || end <= r.gpa
        || r.gpa & shared_bit != 0
        || end.wrapping_sub(1) & shared_bit != 0
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// What a failed TDH.MEM.PAGE.ADD becomes: BUSY → EBUSY, anything else EIO.
#[must_use]
pub const fn page_add_error(status: u64) -> Errno {
    finalize_error(status)
}

/// `KVM_CREATE_VCPU` on a TD (`tdx_vcpu_create`): only once INIT_VM is done (else EIO), and
/// only with a split irqchip (else EINVAL).
///
/// # Errors
///
/// EIO, EINVAL.
pub const fn check_vcpu_create(td: TdStage, split_irqchip: bool) -> Result<(), Errno> {
    if !matches!(td, TdStage::Initialized) {
        return Err(Errno::EIO);
    }
    if !split_irqchip {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// `KVM_RUN` on a TD vCPU (`tdx_vcpu_pre_run`): the vCPU initialised and the TD runnable
/// (EINVAL).
///
/// # Errors
///
/// EINVAL.
pub const fn check_vcpu_run(vcpu: VcpuStage, td: TdStage) -> Result<(), Errno> {
    if !matches!(vcpu, VcpuStage::Initialized) || !matches!(td, TdStage::Runnable) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Register ioctls on a vCPU whose state is protected (every TD vCPU: DEBUG TDs are not
/// supported) — GET/SET_REGS, SREGS, GET_SREGS2, DEBUGREGS, FPU, XSAVE(2), XCRS — fail with
/// EINVAL.
pub const PROTECTED_STATE_ERRNO: Errno = Errno::EINVAL;

#[cfg(test)]
mod tests {
    use super::*;
    use TdStage::*;

    fn cmd(id: u32, flags: u32, hw_error: u64) -> KvmTdxCmd {
        KvmTdxCmd {
            id,
            flags,
            data: 0,
            hw_error,
        }
    }

    #[test]
    fn each_fd_takes_its_own_commands_and_no_hw_error() {
        assert_eq!(vm_command(&cmd(1, 0, 0)), Ok(TdxCmdId::InitVm));
        assert_eq!(vm_command(&cmd(1, 0, 1)), Err(Errno::EINVAL));
        assert_eq!(
            vm_command(&cmd(2, 0, 0)),
            Err(Errno::EINVAL),
            "INIT_VCPU on the VM fd"
        );
        assert_eq!(
            vm_command(&cmd(6, 0, 0)),
            Err(Errno::EINVAL),
            "TERMINATE_VM: not ABI"
        );
        assert_eq!(vcpu_command(&cmd(5, 0, 0)), Ok(TdxCmdId::GetCpuid));
        assert_eq!(
            vcpu_command(&cmd(0, 0, 0)),
            Err(Errno::EINVAL),
            "CAPABILITIES on a vCPU"
        );
        assert_eq!(vcpu_command(&cmd(3, 0, u64::MAX)), Err(Errno::EINVAL));
    }

    #[test]
    fn the_td_state_machine_orders_the_commands() {
        let c = cmd(1, 0, 0);
        assert_eq!(check_init_vm(Uninitialized, &c), Ok(()));
        assert_eq!(check_init_vm(Initialized, &c), Err(Errno::EINVAL));
        assert_eq!(
            check_init_vm(Uninitialized, &cmd(1, 1, 0)),
            Err(Errno::EINVAL)
        );
        // vCPUs: only after INIT_VM (EIO before, as upstream), with a split irqchip.
        assert_eq!(check_vcpu_create(Uninitialized, true), Err(Errno::EIO));
        assert_eq!(check_vcpu_create(Initialized, false), Err(Errno::EINVAL));
        assert_eq!(check_vcpu_create(Runnable, true), Err(Errno::EIO));
        assert_eq!(check_vcpu_create(Initialized, true), Ok(()));
        // vCPU commands: between INIT_VM and FINALIZE only.
        assert_eq!(vcpu_op_allowed(Uninitialized), Err(Errno::EINVAL));
        assert_eq!(vcpu_op_allowed(Runnable), Err(Errno::EINVAL));
        assert_eq!(vcpu_op_allowed(Initialized), Ok(()));
        assert_eq!(
            check_init_vcpu(VcpuStage::Initialized, &cmd(2, 0, 0)),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_init_vcpu(VcpuStage::Uninitialized, &cmd(2, 1, 0)),
            Err(Errno::EINVAL)
        );
        // INIT_MEM_REGION after INIT_VCPU, MEASURE the only flag.
        let m = cmd(3, KVM_TDX_MEASURE_MEMORY_REGION, 0);
        assert_eq!(
            check_init_mem_region(VcpuStage::Uninitialized, Initialized, &m),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_init_mem_region(VcpuStage::Initialized, Initialized, &m),
            Ok(())
        );
        assert_eq!(
            check_init_mem_region(VcpuStage::Initialized, Initialized, &cmd(3, 2, 0)),
            Err(Errno::EINVAL)
        );
        // FINALIZE once, after INIT_VM, with nothing premapped; RUN only after it.
        assert_eq!(check_finalize(Uninitialized, 0), Err(Errno::EINVAL));
        assert_eq!(check_finalize(Initialized, 1), Err(Errno::EINVAL));
        assert_eq!(check_finalize(Initialized, 0), Ok(()));
        assert_eq!(check_finalize(Runnable, 0), Err(Errno::EINVAL));
        assert_eq!(
            check_vcpu_run(VcpuStage::Initialized, Initialized),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_vcpu_run(VcpuStage::Uninitialized, Runnable),
            Err(Errno::EINVAL)
        );
        assert_eq!(check_vcpu_run(VcpuStage::Initialized, Runnable), Ok(()));
        assert_eq!(finalize_error(0x8000_0200_0000_0091), Errno::EBUSY);
        assert_eq!(finalize_error(0xC000_0608_0000_0000), Errno::EIO);
    }

    #[test]
    fn a_region_is_aligned_nonempty_unwrapped_and_private() {
        let shared = 1u64 << 47;
        let r = |source_addr, gpa, nr_pages| KvmTdxInitMemRegion {
            source_addr,
            gpa,
            nr_pages,
        };
        assert_eq!(check_region(&r(0x1000, 0x10_0000, 16), shared), Ok(()));
        assert_eq!(
            check_region(&r(0x1001, 0x10_0000, 1), shared),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_region(&r(0x1000, 0x10_0800, 1), shared),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_region(&r(0x1000, 0x10_0000, 0), shared),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_region(&r(0x1000, shared, 1), shared),
            Err(Errno::EINVAL)
        );
        // The last page crosses into the shared half.
        assert_eq!(
            check_region(&r(0x1000, shared - 0x1000, 2), shared),
            Err(Errno::EINVAL)
        );
        assert_eq!(check_region(&r(0x1000, shared - 0x1000, 1), shared), Ok(()));
        // Wrapping lengths (nr_pages << 12 overflows, or GPA + length wraps).
        assert_eq!(
            check_region(&r(0, 0x1000, 1 << 52), shared),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            check_region(&r(0, 0xffff_ffff_ffff_f000, 2), 1 << 51),
            Err(Errno::EINVAL)
        );
        // Source 0 is accepted (6.16; later kernels refuse it).
        assert_eq!(check_region(&r(0, 0, 1), shared), Ok(()));
    }
}
