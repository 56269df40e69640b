// SPDX-License-Identifier: GPL-2.0-only
//! Small VM-wide x86 ABI switches (HOOK(abi)): `KVM_CAP_MSR_PLATFORM_INFO`,
//! `KVM_CAP_EXCEPTION_PAYLOAD`, `KVM_CAP_X86_TRIPLE_FAULT_EVENT`.
//!
//! Upstream keeps `kvm->arch.guest_can_read_msr_platform_info` (true at VM creation);
//! `KVM_ENABLE_CAP(KVM_CAP_MSR_PLATFORM_INFO)` sets it to `args[0] != 0` at any time, and a
//! guest `RDMSR(MSR_PLATFORM_INFO)` #GPs while it is false. Host `KVM_GET/SET_MSRS` always
//! work. The MSR itself is per vCPU ([`x86::msr::MsrState::platform_info`]).

use core::sync::atomic::{AtomicBool, Ordering};

/// `KVM_CAP_MSR_PLATFORM_INFO`.
pub(crate) const KVM_CAP_MSR_PLATFORM_INFO: u64 = 159;
/// `KVM_CAP_EXCEPTION_PAYLOAD`: off at VM creation; `args[0] != 0` turns it on, 0 off, at any
/// time (upstream `kvm->arch.exception_payload_enabled = cap->args[0]`). While on, a pending
/// exception's payload (#PF CR2, #DB DR6 bits) is delivered only when the exception is
/// injected, and `KVM_GET/SET_VCPU_EVENTS` keep pending and injected apart, with the payload
/// ([`x86::events::EventsAbi`]).
pub(crate) const KVM_CAP_EXCEPTION_PAYLOAD: u64 = 164;
/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT`: off at VM creation; `args[0] != 0` on, 0 off, at any
/// time (upstream `kvm->arch.triple_fault_event = cap->args[0]`). While on,
/// `KVM_GET/SET_VCPU_EVENTS` report and set a pending triple fault, which the next `KVM_RUN`
/// ends in `KVM_EXIT_SHUTDOWN` (`crate::run`).
pub(crate) const KVM_CAP_X86_TRIPLE_FAULT_EVENT: u64 = 218;

/// The VM's switches; read by vCPUs without the VM lock (a relaxed flag, as upstream's plain
/// bool: a vCPU in the guest sees the new value at its next RDMSR exit).
pub(crate) struct VmAbi {
    platform_info_readable: AtomicBool,
    exception_payload: AtomicBool,
    triple_fault_event: AtomicBool,
}

impl VmAbi {
    /// The values at `KVM_CREATE_VM` (`kvm_arch_init_vm`).
    pub(crate) fn new() -> Self {
        VmAbi {
            platform_info_readable: AtomicBool::new(true),
            exception_payload: AtomicBool::new(false),
            triple_fault_event: AtomicBool::new(false),
        }
    }

    /// The switches `KVM_GET/SET_VCPU_EVENTS`, `KVM_GET_DEBUGREGS` and `KVM_GET_SREGS(2)`
    /// follow (read under the vCPU mutex at each call, as upstream reads its bools).
    pub(crate) fn events(&self) -> x86::events::EventsAbi {
        x86::events::EventsAbi {
            exception_payload: self.exception_payload.load(Ordering::Relaxed),
            triple_fault_event: self.triple_fault_event.load(Ordering::Relaxed),
        }
    }

    /// Whether the guest may read `MSR_PLATFORM_INFO`.
    pub(crate) fn platform_info_readable(&self) -> bool {
        self.platform_info_readable.load(Ordering::Relaxed)
    }
}

/// `KVM_CHECK_EXTENSION` answers for the capabilities here (None: not one of them).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    match cap {
        KVM_CAP_MSR_PLATFORM_INFO | KVM_CAP_EXCEPTION_PAYLOAD | KVM_CAP_X86_TRIPLE_FAULT_EVENT => {
            Some(1)
        }
        _ => None,
    }
}

/// Whether VM `KVM_ENABLE_CAP` of `cap` is handled here.
pub(crate) fn enables(cap: u64) -> bool {
    matches!(
        cap,
        KVM_CAP_MSR_PLATFORM_INFO | KVM_CAP_EXCEPTION_PAYLOAD | KVM_CAP_X86_TRIPLE_FAULT_EVENT
    )
}

/// VM `KVM_ENABLE_CAP` for a capability [`enables`] names; `flags` was checked (upstream
/// `kvm_vm_ioctl_enable_cap`: any `args[0]`, non-zero is true).
pub(crate) fn enable_cap(abi: &VmAbi, cap: u64, arg0: u64) -> kernel::error::Result<isize> {
    match cap {
        KVM_CAP_MSR_PLATFORM_INFO => {
            abi.platform_info_readable
                .store(arg0 != 0, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_EXCEPTION_PAYLOAD => {
            abi.exception_payload.store(arg0 != 0, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_X86_TRIPLE_FAULT_EVENT => {
            abi.triple_fault_event.store(arg0 != 0, Ordering::Relaxed);
            Ok(0)
        }
        _ => Err(kernel::error::code::EINVAL),
    }
}
