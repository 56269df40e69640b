// SPDX-License-Identifier: GPL-2.0-only
//! VMX root operation on a CPU, for `tdx=hw`: SEAMCALL works only in VMX root operation.
//!
//! Linux 6.12 leaves VMXON to kvm-intel. Our module owns `/dev/kvm` instead of KVM, so it enters
//! VMX operation itself, the way kvm-intel's `kvm_cpu_vmxon()` does: a VMXON region per CPU
//! carrying the VMCS revision identifier, CR4.VMXE, VMXON. Faulting instructions (VMXON when the
//! firmware locked VMX off, VMXOFF when some other party already left VMX operation) are caught
//! through the kernel's exception table and reported, never an oops.
//!
//! No VMCS is ever loaded here: TDs run through the TDX module (TDH.VP.ENTER), which manages its
//! own VMCSs, so leaving VMX operation needs no VMCLEAR.

use crate::extable::{ex_table_entry, EX_TYPE_DEFAULT};
use crate::glue;
use core::ffi::c_void;
use kernel::prelude::*;

/// `IA32_VMX_BASIC`: VMCS revision identifier (30:0), VMXON region size (44:32), 32-bit
/// physical-address limit (48).
const MSR_IA32_VMX_BASIC: u32 = 0x480;

/// Why this CPU cannot enter VMX operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxonError {
    /// The CPU has no usable VMX (absent, or disabled and locked by the firmware).
    NoVmx,
    /// CR4.VMXE is already set: another hypervisor (kvm-intel, VirtualBox, ...) owns VMX.
    InUse,
    /// IA32_VMX_BASIC is unreadable or describes a VMXON region we cannot provide.
    BadVmxBasic,
    /// No page for the VMXON region.
    NoMemory,
    /// VMXON failed or faulted.
    VmxonFailed,
}

impl VmxonError {
    pub(crate) fn errno(self) -> Error {
        match self {
            VmxonError::NoVmx | VmxonError::BadVmxBasic => ENODEV,
            VmxonError::InUse => EBUSY,
            VmxonError::NoMemory => ENOMEM,
            VmxonError::VmxonFailed => EIO,
        }
    }
}

/// The VMCS revision identifier for this CPU's VMXON region.
fn vmcs_revision_id() -> Result<u32, VmxonError> {
    let mut basic = 0u64;
    // SAFETY: rdmsrl_safe on this CPU; `basic` is a valid out pointer.
    if unsafe { glue::tdxkvm_rdmsr_safe(MSR_IA32_VMX_BASIC, &mut basic) } != 0 {
        return Err(VmxonError::BadVmxBasic);
    }
    let size = (basic >> 32) & 0x1fff;
    let addr32_only = basic & (1 << 48) != 0;
    if size == 0 || size > 4096 || addr32_only {
        return Err(VmxonError::BadVmxBasic);
    }
    Ok(basic as u32 & 0x7fff_ffff)
}

/// Executes VMXON with the region at physical address `pa`; `false` if it failed (VMfail) or
/// faulted (#GP, #UD).
///
/// # Safety
///
/// CR4.VMXE is set on this CPU, which is not in VMX operation; `pa` is a page holding this
/// CPU's VMCS revision identifier that stays allocated until VMXOFF; IRQs are disabled.
unsafe fn vmxon(pa: u64) -> bool {
    let ok: u8;
    // SAFETY: the caller's contract; a fault resumes at label 4 via the exception table.
    unsafe {
        core::arch::asm!(
            "2: vmxon qword ptr [{pa}]",
            "seta {ok}",
            "jmp 3f",
            "4: mov {ok}, 0",
            "3:",
            ex_table_entry!("2b", "4b"),
            pa = in(reg) &pa,
            ok = out(reg_byte) ok,
            ex = const EX_TYPE_DEFAULT,
            options(nostack),
        );
    }
    ok != 0
}

/// Executes VMXOFF; `false` if it faulted (the CPU was not in VMX operation after all).
///
/// # Safety
///
/// IRQs or preemption are disabled, so this runs on the CPU the caller means.
unsafe fn vmxoff() -> bool {
    let ok: u8;
    // SAFETY: VMXOFF touches no memory; a fault resumes at label 4 via the exception table.
    unsafe {
        core::arch::asm!(
            "2: vmxoff",
            "mov {ok}, 1",
            "jmp 3f",
            "4: mov {ok}, 0",
            "3:",
            ex_table_entry!("2b", "4b"),
            ok = out(reg_byte) ok,
            ex = const EX_TYPE_DEFAULT,
            options(nostack, nomem),
        );
    }
    ok != 0
}

/// Enters VMX root operation on the calling CPU, allocating its VMXON region.
///
/// Call on the CPU concerned in process context (a CPU-hotplug callback, which runs pinned to
/// its CPU), with IRQs enabled: the region is allocated before IRQs are turned off.
pub(crate) fn cpu_enable() -> Result<(), VmxonError> {
    // SAFETY: reads this CPU's capability bit.
    if !unsafe { glue::tdxkvm_this_cpu_has_vmx() } {
        return Err(VmxonError::NoVmx);
    }
    let revision = vmcs_revision_id()?;
    // SAFETY: get_zeroed_page(); process context.
    let region = unsafe { glue::tdxkvm_alloc_page() };
    if region.is_null() {
        return Err(VmxonError::NoMemory);
    }
    // SAFETY: `region` is a zeroed page we own; the revision identifier goes in its first dword.
    unsafe { region.cast::<u32>().write(revision) };
    // SAFETY: a direct-map address.
    let pa = unsafe { glue::tdxkvm_virt_to_pfn(region) } << 12;

    // SAFETY: plain local_irq_save.
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    let r = (|| {
        // SAFETY: reads the CR4 shadow of this CPU.
        if unsafe { glue::tdxkvm_cr4_vmxe() } {
            return Err(VmxonError::InUse);
        }
        // SAFETY: IRQs off; sets CR4.VMXE through the kernel's CR4 shadow.
        unsafe { glue::tdxkvm_vmx_on_prepare() };
        // SAFETY: CR4.VMXE set, not in VMX operation (VMXE was clear), `pa` holds the revision
        // id and is recorded below until `cpu_disable` frees it; IRQs off.
        if !unsafe { vmxon(pa) } {
            // SAFETY: undoes `tdxkvm_vmx_on_prepare`.
            unsafe { glue::tdxkvm_vmx_off_finish() };
            return Err(VmxonError::VmxonFailed);
        }
        // SAFETY: this CPU's slot; IRQs off, nothing else on this CPU touches it meanwhile.
        unsafe { *glue::tdxkvm_this_cpu_vmxon_region() = region as usize };
        Ok(())
    })();
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    if r.is_err() {
        // SAFETY: the region was never handed to the CPU.
        unsafe { glue::tdxkvm_free_page(region) };
    }
    r
}

/// Leaves VMX operation on the calling CPU if this module entered it, and frees the region.
///
/// Same context as [`cpu_enable`].
pub(crate) fn cpu_disable() {
    // SAFETY: plain local_irq_save.
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    // SAFETY: this CPU's slot; IRQs off.
    let slot = unsafe { &mut *glue::tdxkvm_this_cpu_vmxon_region() };
    let region = core::mem::replace(slot, 0);
    if region != 0 {
        // SAFETY: IRQs off; we entered VMX operation on this CPU.
        if !unsafe { vmxoff() } {
            pr_warn!("VMXOFF faulted: VMX operation was already left on this CPU\n");
        }
        // SAFETY: undoes `tdxkvm_vmx_on_prepare`.
        unsafe { glue::tdxkvm_vmx_off_finish() };
    }
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    if region != 0 {
        // SAFETY: the CPU left VMX operation: the region is ours again.
        unsafe { glue::tdxkvm_free_page(region as *mut c_void) };
    }
}

/// For the debugfs probe: executes VMXOFF on this CPU only if it is *not* in VMX operation
/// (CR4.VMXE clear), where VMXOFF raises #UD, and says whether the exception table caught it
/// (`Some(true)`). `None` when the CPU is in VMX operation: nothing is executed then.
pub(crate) fn probe_vmxoff_fault() -> Option<bool> {
    // SAFETY: plain local_irq_save: the check and the VMXOFF happen on one CPU.
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    // SAFETY: reads CR4 itself (not the shadow: a hypervisor outside the kernel's CR4 API
    // would only show there).
    let r = if unsafe { glue::tdxkvm_cr4_vmxe_hw() } {
        None
    } else {
        // SAFETY: IRQs off; not in VMX operation, so VMXOFF can only fault, which is caught.
        Some(!unsafe { vmxoff() })
    };
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    r
}

/// The emergency-reboot callback (NMI context, any CPU): an INIT is blocked in VMX root
/// operation, so a CPU must leave it before a crash kernel or firmware reboot takes over.
///
/// Keyed on CR4.VMXE, not on the region slot, so the windows between VMXON and recording the
/// region (and between clearing it and VMXOFF) are covered; the module only registers this
/// callback when nobody else was in VMX operation. Intel PT is left alone, as KVM does here:
/// re-enabling tracing from NMI context is not wanted. The region is not freed: the machine is
/// going down.
///
/// # Safety
///
/// Called by the kernel's emergency-reboot path only (`cpu_emergency_disable_virtualization()`,
/// the callback registered by [`crate::hw::start`]), with IRQs off or in NMI context, so the
/// CPU it runs on cannot change; nothing else on that CPU uses VMX operation meanwhile.
pub(crate) unsafe extern "C" fn emergency_disable() {
    // SAFETY: reads CR4 itself, as KVM's emergency path does.
    if unsafe { glue::tdxkvm_cr4_vmxe_hw() } {
        // SAFETY: NMI context, so no migration; a fault (not in VMX operation) is caught.
        unsafe { vmxoff() };
        // SAFETY: clears CR4.VMXE on this CPU.
        unsafe { glue::tdxkvm_cr4_clear_vmxe() };
    }
}

/// Reboot/poweroff (syscore shutdown): every CPU leaves VMX operation, as KVM does, since some
/// firmware hangs when rebooted from VMX root operation.
///
/// # Safety
///
/// Called by the syscore shutdown path only (the callback [`crate::hw::start`] registers):
/// process context with IRQs enabled on the reboot CPU, the other CPUs still online and
/// reachable by IPI.
pub(crate) unsafe extern "C" fn shutdown_all_cpus() {
    // SAFETY: runs `shutdown_this_cpu` on every online CPU in IRQ context and waits.
    unsafe { glue::tdxkvm_on_each_cpu(shutdown_this_cpu) };
}

/// [`shutdown_all_cpus`] on one CPU: leaves VMX operation if the CPU is in it.
///
/// # Safety
///
/// Called by `on_each_cpu()` from [`shutdown_all_cpus`] only: IRQ context (IRQs off) on the CPU
/// concerned, whose VMX operation this module owns.
unsafe extern "C" fn shutdown_this_cpu(_: *mut c_void) {
    // SAFETY: reads CR4 itself (IRQ context).
    if unsafe { glue::tdxkvm_cr4_vmxe_hw() } {
        // SAFETY: IRQs off; a fault (not in VMX operation) is caught.
        unsafe { vmxoff() };
        // SAFETY: clears CR4.VMXE and tells Intel PT, IRQs off.
        unsafe { glue::tdxkvm_vmx_off_finish() };
    }
}
