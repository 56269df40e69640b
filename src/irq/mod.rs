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

pub(crate) mod abi;
pub(crate) mod chip;
pub(crate) mod irqfd;
pub(crate) mod route;

use crate::vm::Vm;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use irqchip::irq::LapicIrq;
use kernel::prelude::*;

/// Upstream `KVM_MAX_IRQ_ROUTES`: the largest GSI routing table, and the most IOAPIC pins
/// userspace may reserve with `KVM_CAP_SPLIT_IRQCHIP` (`MAX_NR_RESERVED_IOAPIC_PINS`).
pub(crate) const KVM_MAX_IRQ_ROUTES: u32 = 4096;

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
#[pin_data(PinnedDrop)]
pub(crate) struct VmIrq {
    /// An [`IrqchipMode`]; written under the VM lock with release, read with acquire.
    mode: AtomicU8,
    /// IOAPIC pins userspace reserved with `KVM_CAP_SPLIT_IRQCHIP` (upstream
    /// `kvm->arch.nr_reserved_ioapic_pins`): the vectors of these routes go into the vCPUs' EOI
    /// exit bitmaps. Written before the mode.
    nr_reserved_ioapic_pins: AtomicU32,
    /// The GSI routing table.
    #[pin]
    routing: route::Routing,
    /// The PIC pair and the IOAPIC, once `KVM_CREATE_IRQCHIP` made them.
    chip: chip::ChipSlot,
    /// The irqfds, once the first `KVM_IRQFD` assigned one.
    irqfds: irqfd::Irqfds,
}

impl VmIrq {
    /// No in-kernel irqchip.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(VmIrq {
            mode: AtomicU8::new(IrqchipMode::None as u8),
            nr_reserved_ioapic_pins: AtomicU32::new(0),
            routing <- route::Routing::new(),
            chip: chip::ChipSlot::new(),
            irqfds: irqfd::Irqfds::new(),
        })
    }

    /// The routing table slot.
    pub(crate) fn routing(&self) -> &route::Routing {
        &self.routing
    }

    /// The in-kernel PIC/IOAPIC, if created.
    pub(crate) fn chip(&self) -> Option<&chip::Chip> {
        self.chip.get()
    }

    /// The irqfd set (created on first use).
    pub(crate) fn irqfds(&self) -> &irqfd::Irqfds {
        &self.irqfds
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

#[pinned_drop]
impl PinnedDrop for VmIrq {
    fn drop(self: Pin<&mut Self>) {
        // Nothing may inject any more: the irqfds are gone before the chips.
        self.irqfds.free();
    }
}

/// VM teardown, before anything else goes (HOOK in `Vm`'s drop): every irqfd is shut down and
/// its work flushed, so no work item reaches the VM afterwards.
pub(crate) fn teardown(vm: &Vm) {
    vm.irq().irqfds.free();
}

/// Whether MSI routes use the x2APIC format (`KVM_CAP_X2APIC_API` with
/// `KVM_X2APIC_API_USE_32BIT_IDS`, upstream `kvm->arch.x2apic_format`).
// HOOK(irqroute): irqmod's KVM_CAP_X2APIC_API state replaces this stub.
pub(crate) fn x2apic_format(_vm: &Vm) -> bool {
    false
}

/// Delivers `irq` to the local APICs (upstream `kvm_irq_delivery_to_apic(kvm, NULL, irq,
/// NULL)`): -1 if no APIC took it, else the count.
// STUB(irqroute): until irqmod's `crate::irq::lapic::deliver` (marker irq-deliver) is merged,
// no LAPIC exists to take an interrupt.
pub(crate) fn deliver(_vm: &Vm, _irq: &LapicIrq) -> i32 {
    -1
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
    vm.irq().chip.create()?;
    vm.irq().routing.install(route::Table::default_routing(vm)?)?;
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
    // 6.12 kvm_setup_empty_irq_routing: userspace adds MSI routes later.
    vm.irq().routing.install(route::Table::build(vm, &[])?)?;
    vm.irq()
        .nr_reserved_ioapic_pins
        .store(args0 as u32, Ordering::Relaxed);
    vm.irq().set_mode(IrqchipMode::Split);
    drop(l);
    Ok(0)
}

/// The VM ioctls this module answers, or `None` for the dispatcher to go on.
pub(crate) fn vm_ioctl(vm: &Vm, cmd: u32, arg: usize) -> Option<Result<isize>> {
    use abi::*;
    Some(match cmd {
        KVM_CREATE_IRQCHIP => create_irqchip(vm),
        KVM_GET_IRQCHIP => chip::get_irqchip(vm, arg),
        KVM_SET_IRQCHIP => chip::set_irqchip(vm, arg),
        KVM_IRQ_LINE => route::irq_line(vm, arg, false),
        KVM_IRQ_LINE_STATUS => route::irq_line(vm, arg, true),
        KVM_SET_GSI_ROUTING => route::set_gsi_routing(vm, arg),
        KVM_SIGNAL_MSI => route::signal_msi(vm, arg),
        KVM_IRQFD => irqfd::ioctl(vm, arg),
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
