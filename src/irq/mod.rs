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
pub(crate) mod pit;
pub(crate) mod route;

use crate::vm::Vm;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU8, Ordering};
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
    /// The PIT, once `KVM_CREATE_PIT2` made it.
    pit: pit::PitSlot,
    /// Split irqchip: per vCPU index, a level EOI's vector waiting to exit to userspace
    /// (`KVM_EXIT_IOAPIC_EOI`; upstream `vcpu->arch.pending_ioapic_eoi` +
    /// `KVM_REQ_IOAPIC_EOI_EXIT`), -1 for none. Allocated when split mode is enabled.
    split_eoi: AtomicPtr<KVec<AtomicI32>>,
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
            pit: pit::PitSlot::new(),
            split_eoi: AtomicPtr::new(core::ptr::null_mut()),
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

    /// The PIT slot.
    pub(crate) fn pit(&self) -> &pit::PitSlot {
        &self.pit
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
        // Nothing may inject any more: the PIT and the irqfds are gone before the chips.
        self.pit.free();
        self.irqfds.free();
        let p = self.split_eoi.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: from `KBox::into_raw` in `enable_split_irqchip`, freed once, here.
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}

/// VM teardown, before anything else goes (HOOK in `Vm`'s drop): every irqfd is shut down and
/// its work flushed, so no work item reaches the VM afterwards.
pub(crate) fn teardown(vm: &Vm) {
    vm.irq().pit.free();
    vm.irq().irqfds.free();
    vm.irq().chip.quiesce();
}

/// Whether MSI routes use the x2APIC format (`KVM_CAP_X2APIC_API` with
/// `KVM_X2APIC_API_USE_32BIT_IDS`, upstream `kvm->arch.x2apic_format`).
// HOOK(irqroute): irqmod's KVM_CAP_X2APIC_API state replaces this stub.
pub(crate) fn x2apic_format(vm: &Vm) -> bool {
    lapic::x2apic_format(vm) // HOOK(irqmod)
}

/// Delivers `irq` to the local APICs (upstream `kvm_irq_delivery_to_apic(kvm, NULL, irq,
/// NULL)`): -1 if no APIC took it, else the count.
// STUB(irqroute): until irqmod's `crate::irq::lapic::deliver` (marker irq-deliver) is merged,
// no LAPIC exists to take an interrupt.
pub(crate) fn deliver(vm: &Vm, irq: &LapicIrq) -> i32 {
    lapic::deliver(vm, irq, None) // HOOK(irqmod)
}

fn split_eoi_slot(vcpu: &crate::vcpu::Vcpu) -> Option<&AtomicI32> {
    let p = vcpu.vm().irq().split_eoi.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: set once before the mode (and so before any vCPU), freed with the VM.
    let v = unsafe { &*p };
    v.get(vcpu.idx() as usize)
}

/// Split irqchip: the EOI of `vector` (in the vCPU's EOI-exit bitmap) exits to userspace
/// before the next entry.
pub(crate) fn split_eoi(vcpu: &crate::vcpu::Vcpu, vector: u8) {
    if let Some(s) = split_eoi_slot(vcpu) {
        s.store(i32::from(vector), Ordering::Relaxed);
    }
}

/// `kvm_run.exit_reason` `KVM_EXIT_IOAPIC_EOI`.
const KVM_EXIT_IOAPIC_EOI: u32 = 26;

/// Before an entry (HOOK in the run loop, upstream `KVM_REQ_IOAPIC_EOI_EXIT`): a pending split
/// EOI becomes `KVM_EXIT_IOAPIC_EOI` with `eoi.vector`; true if the loop must return to
/// userspace.
pub(crate) fn eoi_exit(vcpu: &crate::vcpu::Vcpu) -> bool {
    let Some(s) = split_eoi_slot(vcpu) else {
        return false;
    };
    let v = s.swap(-1, Ordering::Relaxed);
    if v < 0 {
        return false;
    }
    let run = crate::run::uapi::RunPage(vcpu.run_page());
    run.set_exit_reason(KVM_EXIT_IOAPIC_EOI);
    run.set_u8(crate::run::uapi::U, v as u8);
    true
}

/// Kicks the vCPU that takes PIC interrupts after the PIC's output rose (upstream
/// `pic_unlock`'s wakeup).
// HOOK(irqroute): irqmod's kick (marker irq-kick) and LAPIC state go here; without a LAPIC
// nothing waits for the PIC.
pub(crate) fn kick_pic_target(vm: &Vm) {
    lapic::kick_pic_target(vm) // HOOK(irqmod)
}

/// A guest `IN` the in-kernel devices serve (PIC, ELCR, PIT): the value, or `None` to exit.
pub(crate) fn pio_in(vm: &Vm, port: u16, size: u8) -> Option<u32> {
    if !vm.irqchip_mode().in_kernel() {
        return None;
    }
    // HOOK(cr8): only an access inside a device's bus range is the device's (kvm_io_bus_cmp).
    if !x86::exits::pio_bus::within_device(port, size) {
        return None;
    }
    if let Some(v) = pit::pio_read(vm, port) {
        return Some(v);
    }
    chip::pio_read(vm, port, usize::from(size))
}

/// A plain `IN` offered to the in-kernel devices before the userspace exit (HOOK in the run
/// loop): true if one served it (RAX holds the value with the size's merge rule, RIP moved on).
pub(crate) fn pio_in_kernel(
    vcpu: &crate::vcpu::Vcpu,
    l: &mut crate::vcpu::VcpuLocked,
    port: u16,
    size: u8,
    next_rip: u64,
) -> bool {
    let Some(v) = pio_in(vcpu.vm(), port, size) else {
        return false;
    };
    let v = u64::from(v);
    let rax = l.arch.gprs[0];
    // Upstream's `kvm_fast_pio_in` starts from RAX for 1- and 2-byte reads (0 for 4 bytes);
    // a device that writes nothing (the PIT's control port) leaves that buffer as it was.
    let writes_nothing = pit::read_writes_nothing(vcpu.vm(), port);
    l.arch.gprs[0] = match size {
        1 | 2 if writes_nothing => rax,
        1 => (rax & !0xff) | (v & 0xff),
        2 => (rax & !0xffff) | (v & 0xffff),
        _ => v & 0xffff_ffff,
    };
    l.arch.rip = next_rip;
    true
}

/// A guest `OUT` the in-kernel devices serve: true if taken.
pub(crate) fn pio_out(vm: &Vm, port: u16, size: u8, val: u32) -> bool {
    if !vm.irqchip_mode().in_kernel() {
        return false;
    }
    // HOOK(cr8): only an access inside a device's bus range is the device's (kvm_io_bus_cmp).
    if !x86::exits::pio_bus::within_device(port, size) {
        return false;
    }
    pit::pio_write(vm, port, val) || chip::pio_write(vm, port, usize::from(size), val)
}

/// A guest MMIO read the in-kernel devices serve (IOAPIC): the value, or `None` to exit.
pub(crate) fn mmio_read(vm: &Vm, gpa: u64, len: u8) -> Option<u64> {
    if vm.irqchip_mode() != IrqchipMode::Kernel {
        return None;
    }
    chip::mmio_read(vm, gpa, usize::from(len))
}

/// A guest MMIO write the in-kernel devices serve: true if taken.
pub(crate) fn mmio_write(vm: &Vm, gpa: u64, data: &[u8]) -> bool {
    if vm.irqchip_mode() != IrqchipMode::Kernel {
        return false;
    }
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    if let (Some(d), Some(src)) = (b.get_mut(..n), data.get(..n)) {
        d.copy_from_slice(src);
    }
    chip::mmio_write(vm, gpa, data.len(), u64::from_le_bytes(b))
}

/// Whether some vCPU's local APIC takes PIC interrupts (upstream `kvm_apic_accept_pic_intr`
/// over the vCPUs): the PIC's ICW1 reset looks at it.
// HOOK(irqroute): irqmod's LAPIC answers this; until then (no LAPIC) every APIC is "disabled",
// which upstream counts as accepting PIC interrupts.
pub(crate) fn accept_pic_intr_any(vm: &Vm) -> bool {
    lapic::accept_pic_intr_any(vm) // HOOK(irqmod)
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
    // Everything that can fail first, so a failure leaves no half-made irqchip behind.
    let table = kernel::sync::Arc::new(route::default_routing(vm)?, GFP_KERNEL)?;
    vm.irq().chip.create(vm)?;
    vm.irq().routing.publish(table);
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
    let mut slots = KVec::with_capacity(vm.max_vcpus() as usize, GFP_KERNEL)?;
    for _ in 0..vm.max_vcpus() {
        slots.push(AtomicI32::new(-1), GFP_KERNEL)?;
    }
    let slots = KBox::new(slots, GFP_KERNEL)?;
    // 6.12 kvm_setup_empty_irq_routing: userspace adds MSI routes later.
    let table = kernel::sync::Arc::new(route::build(vm, &[])?, GFP_KERNEL)?;
    // Nothing fails from here on.
    let old = vm
        .irq()
        .split_eoi
        .swap(KBox::into_raw(slots), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: cannot happen (split is enabled once), but an older array would be ours.
        drop(unsafe { KBox::from_raw(old) });
    }
    vm.irq().routing.publish(table);
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
        KVM_CREATE_PIT2 => pit::create(vm, false, arg),
        KVM_CREATE_PIT => pit::create(vm, true, arg),
        KVM_GET_PIT2 => pit::get_pit2(vm, arg),
        KVM_SET_PIT2 => pit::set_pit2(vm, arg),
        KVM_GET_PIT => pit::get_pit(vm, arg),
        KVM_SET_PIT => pit::set_pit(vm, arg),
        KVM_REINJECT_CONTROL => pit::reinject_control(vm, arg),
        _ => return None,
    })
}

/// `KVM_CAP_PIT`.
const KVM_CAP_PIT: u64 = 11;
/// `KVM_CAP_REINJECT_CONTROL`.
const KVM_CAP_REINJECT_CONTROL: u64 = 24;
/// `KVM_CAP_IRQ_ROUTING`.
const KVM_CAP_IRQ_ROUTING: u64 = 25;
/// `KVM_CAP_IOAPIC_POLARITY_IGNORED`: `KVM_IRQ_LINE` level 1 means asserted whatever the
/// IOAPIC entry's polarity bit says (the in-kernel IOAPIC never looks at it).
const KVM_CAP_IOAPIC_POLARITY_IGNORED: u64 = 97;
/// `KVM_CAP_USER_NMI`: the vCPU ioctl `KVM_NMI` queues an NMI (upstream
/// `kvm_vcpu_ioctl_nmi`, [`inject`]), with or without an in-kernel irqchip.
const KVM_CAP_USER_NMI: u64 = 22;
/// `KVM_CAP_IRQ_INJECT_STATUS`.
const KVM_CAP_IRQ_INJECT_STATUS: u64 = 26;
/// `KVM_CAP_IRQFD`.
const KVM_CAP_IRQFD: u64 = 32;
/// `KVM_CAP_PIT2`.
const KVM_CAP_PIT2: u64 = 33;
/// `KVM_CAP_PIT_STATE2`.
const KVM_CAP_PIT_STATE2: u64 = 35;
/// `KVM_CAP_SIGNAL_MSI`.
const KVM_CAP_SIGNAL_MSI: u64 = 77;
/// `KVM_CAP_IRQFD_RESAMPLE`.
const KVM_CAP_IRQFD_RESAMPLE: u64 = 82;

/// `KVM_CHECK_EXTENSION` answers for the irqchip capabilities (`None`: not ours), as upstream
/// x86 answers them on `/dev/kvm` and VM fds: the in-kernel PIC/IOAPIC/LAPIC and the split
/// form, GSI routing (the table's size limit), line status, irqfds with resampling, MSIs, the
/// PIT with its state2 and reinjection control.
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    match cap {
        KVM_CAP_IRQCHIP
        | KVM_CAP_SPLIT_IRQCHIP
        | KVM_CAP_IRQ_INJECT_STATUS
        | KVM_CAP_IRQFD
        | KVM_CAP_IRQFD_RESAMPLE
        | KVM_CAP_SIGNAL_MSI
        | KVM_CAP_PIT
        | KVM_CAP_PIT2
        | KVM_CAP_PIT_STATE2
        | KVM_CAP_REINJECT_CONTROL
        | KVM_CAP_IOAPIC_POLARITY_IGNORED
        | KVM_CAP_USER_NMI => Some(1),
        KVM_CAP_IRQ_ROUTING => Some(KVM_MAX_IRQ_ROUTES as isize),
        _ => None,
    }
}

// HOOK(irqmod): event injection, kicks and in-kernel halt, the LAPIC and its timer.
pub(crate) mod inject;
pub(crate) mod kick;
pub(crate) mod lapic;
pub(crate) mod sched; // HOOK(irq12)
pub(crate) mod timer;
