// SPDX-License-Identifier: GPL-2.0-only
//! The VM's interrupt controllers (issue 12): which irqchip the VM has and the VM ioctls that
//! create it.
//!
//! A VM starts without an in-kernel irqchip ([`IrqchipMode::None`]: userspace emulates every
//! interrupt controller and injects with `KVM_INTERRUPT`). `KVM_CREATE_IRQCHIP` gives it the
//! full upstream set ([`IrqchipMode::Kernel`]: PIC pair + IOAPIC in the VM, a LAPIC per vCPU);
//! `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` only the LAPICs ([`IrqchipMode::Split`]: IOAPIC and
//! PIC stay in userspace; TDs need this form). Either is chosen once, before the first vCPU,
//! and never changes after (upstream `kvm->arch.irqchip_mode`).
//!
//! Ordering: the mode is written under the VM lock, after everything it enables is set up
//! (release), and read without the lock (acquire), as upstream's `smp_wmb()` before setting
//! `irqchip_mode` pairs with `irqchip_in_kernel()`'s `smp_rmb()`.

use crate::vm::Vm;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use kernel::prelude::*;

/// Upstream `KVM_MAX_IRQ_ROUTES`: the largest GSI routing table, and the most IOAPIC pins
/// userspace may reserve with `KVM_CAP_SPLIT_IRQCHIP` (`MAX_NR_RESERVED_IOAPIC_PINS`).
pub(crate) const KVM_MAX_IRQ_ROUTES: u32 = 4096;

/// `KVM_CREATE_IRQCHIP` (`_IO(KVMIO, 0x60)`).
pub(crate) const KVM_CREATE_IRQCHIP: u32 = 0xae60;
/// `KVM_CAP_IRQCHIP`.
pub(crate) const KVM_CAP_IRQCHIP: u64 = 0;
/// `KVM_CAP_SPLIT_IRQCHIP`.
pub(crate) const KVM_CAP_SPLIT_IRQCHIP: u64 = 121;

/// Which interrupt controllers live in the kernel (upstream `enum kvm_irqchip_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum IrqchipMode {
    /// None: userspace emulates them all (`KVM_IRQCHIP_NONE`).
    None = 0,
    /// PIC, IOAPIC and LAPICs in the kernel (`KVM_IRQCHIP_KERNEL`, `KVM_CREATE_IRQCHIP`).
    Kernel = 1,
    /// LAPICs in the kernel, IOAPIC and PIC in userspace (`KVM_IRQCHIP_SPLIT`).
    Split = 2,
}

impl IrqchipMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Kernel,
            2 => Self::Split,
            _ => Self::None,
        }
    }

    /// Upstream `irqchip_in_kernel()`: LAPICs are in the kernel (either mode).
    pub(crate) fn in_kernel(self) -> bool {
        self != Self::None
    }
}

/// The VM's interrupt-controller state (a field of [`Vm`]).
pub(crate) struct VmIrq {
    /// An [`IrqchipMode`]; written under the VM lock with release, read with acquire.
    mode: AtomicU8,
    /// IOAPIC pins userspace reserved with `KVM_CAP_SPLIT_IRQCHIP` (upstream
    /// `kvm->arch.nr_reserved_ioapic_pins`): the vectors of these routes go into the vCPUs' EOI
    /// exit bitmaps. Written before the mode.
    nr_reserved_ioapic_pins: AtomicU32,
}

impl VmIrq {
    /// No in-kernel irqchip.
    pub(crate) fn new() -> Self {
        VmIrq {
            mode: AtomicU8::new(IrqchipMode::None as u8),
            nr_reserved_ioapic_pins: AtomicU32::new(0),
        }
    }

    /// The mode (acquire: whatever was set up before it was chosen is visible).
    pub(crate) fn mode(&self) -> IrqchipMode {
        IrqchipMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// IOAPIC pins reserved in split mode.
    #[allow(dead_code)] // the split-mode EOI exit bitmap (chip.rs) reads it
    pub(crate) fn nr_reserved_ioapic_pins(&self) -> u32 {
        self.nr_reserved_ioapic_pins.load(Ordering::Relaxed)
    }

    /// Publishes the mode; called with the VM lock held, after the set-up it enables.
    fn set_mode(&self, m: IrqchipMode) {
        self.mode.store(m as u8, Ordering::Release);
    }
}

/// `KVM_CREATE_IRQCHIP` (upstream x86 `kvm_arch_vm_ioctl`): `EEXIST` if the VM already has an
/// in-kernel irqchip (either kind), `EINVAL` once a vCPU was created; a TD cannot have one
/// (`ENOTTY`: its EOIs are protected, so level-triggered IOAPIC interrupts cannot be emulated;
/// upstream `kvm->arch.has_protected_eoi`).
pub(crate) fn create_irqchip(vm: &Vm) -> Result<isize> {
    let l = vm.lock();
    if vm.irqchip_mode().in_kernel() {
        return Err(EEXIST);
    }
    if vm.is_td() {
        return Err(ENOTTY);
    }
    if l.created_vcpus != 0 {
        return Err(EINVAL);
    }
    // HOOK(irqroute): PIC/IOAPIC reset and default GSI routing go here (chip.rs, route.rs).
    vm.irq().set_mode(IrqchipMode::Kernel);
    drop(l);
    Ok(0)
}

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` (upstream x86 `kvm_vm_ioctl_enable_cap`):
/// `args[0]` is the number of IOAPIC routes userspace reserves, at most
/// `KVM_MAX_IRQ_ROUTES` (`EINVAL` above); `EEXIST` if an irqchip exists or a vCPU was created.
pub(crate) fn enable_split_irqchip(vm: &Vm, args0: u64) -> Result<isize> {
    let l = vm.lock();
    if args0 > u64::from(KVM_MAX_IRQ_ROUTES) {
        return Err(EINVAL);
    }
    if vm.irqchip_mode().in_kernel() || l.created_vcpus != 0 {
        return Err(EEXIST);
    }
    // HOOK(irqroute): the empty GSI routing table (6.12 kvm_setup_empty_irq_routing) goes here.
    vm.irq()
        .nr_reserved_ioapic_pins
        .store(args0 as u32, Ordering::Relaxed);
    vm.irq().set_mode(IrqchipMode::Split);
    drop(l);
    Ok(0)
}

/// The VM ioctls this module answers, or `None` for the dispatcher to go on.
pub(crate) fn vm_ioctl(vm: &Vm, cmd: u32, _arg: usize) -> Option<Result<isize>> {
    Some(match cmd {
        KVM_CREATE_IRQCHIP => create_irqchip(vm),
        _ => return None,
    })
}

/// `KVM_CHECK_EXTENSION` answers for the irqchip capabilities (`None`: not ours). Nothing is
/// advertised until it works end to end.
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    match cap {
        KVM_CAP_IRQCHIP | KVM_CAP_SPLIT_IRQCHIP => Some(0),
        _ => None,
    }
}
