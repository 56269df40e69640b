// SPDX-License-Identifier: GPL-2.0-only
//! GSI routing (upstream virt/kvm/irqchip.c and arch/x86/kvm/irq_comm.c): the table that maps
//! a GSI to PIC pins, IOAPIC pins and MSIs, `KVM_SET_GSI_ROUTING`, `kvm_set_irq` (the fan-out
//! that `KVM_IRQ_LINE`, irqfds and the PIT raise lines through), `KVM_SIGNAL_MSI` and
//! `KVM_IRQ_LINE(_STATUS)`.
//!
//! The table is immutable once built; the VM holds it in an [`Arc`] swapped under a spinlock
//! (upstream: `kvm->irq_routing` under `irq_lock`, readers under SRCU). A reader takes a
//! reference under the lock and drops the lock before raising anything, so a concurrent
//! `KVM_SET_GSI_ROUTING` never waits for deliveries and an old table lives until its last
//! reader is done.

use crate::vcpu_state::read_pod;
use crate::vm::Vm;
use irqchip::ioapic::{
    FIRST_DEVICE_IRQ_SOURCE_ID, IRQFD_RESAMPLE_IRQ_SOURCE_ID, USERSPACE_IRQ_SOURCE_ID,
};
use irqchip::routing::uapi::{KvmIrqLevel, KvmIrqRouting, KvmIrqRoutingEntry, KvmMsi};
use irqchip::routing::{
    check_header, IrqTargets, MsiDelivery, MsiMsg, RouteEntry, RoutingCtx, RoutingTable,
    DEFAULT_ROUTING,
};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// The source ids of upstream's per-pin line-state bitmaps: a line is high while any source
/// holds it high.
pub(crate) const KVM_USERSPACE_IRQ_SOURCE_ID: u32 = USERSPACE_IRQ_SOURCE_ID;
/// The source resampling irqfds hold level-triggered lines with.
pub(crate) const KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID: u32 = IRQFD_RESAMPLE_IRQ_SOURCE_ID;
/// The PIT's source (upstream allocates it with `kvm_request_irq_source_id`: the first free
/// one after the two above).
#[allow(dead_code)] // the PIT (pit.rs) raises IRQ0 with it
pub(crate) const KVM_PIT_IRQ_SOURCE_ID: u32 = FIRST_DEVICE_IRQ_SOURCE_ID;

/// A routing table (upstream `struct kvm_irq_routing_table`) over its own storage.
pub(crate) type Table = RoutingTable<KVec<RouteEntry>>;

fn errno(e: x86::errno::Errno) -> Error {
    Error::from_errno(-e.number())
}

/// The VM's settings that decide what a table may hold.
fn ctx(vm: &Vm) -> RoutingCtx {
    RoutingCtx {
        split: vm.irqchip_mode() == super::IrqchipMode::Split,
        x2apic_format: super::x2apic_format(vm),
    }
}

/// Builds a table from userspace entries (upstream `kvm_set_irq_routing`'s validation, in
/// the core crate).
pub(crate) fn build(vm: &Vm, ue: &[KvmIrqRoutingEntry]) -> Result<Table> {
    let storage = KVec::from_elem(RouteEntry::default(), ue.len(), GFP_KERNEL)?;
    RoutingTable::build(storage, ue, ctx(vm)).map_err(errno)
}

/// Upstream's default routing (`KVM_CREATE_IRQCHIP`).
pub(crate) fn default_routing(vm: &Vm) -> Result<Table> {
    build(vm, &DEFAULT_ROUTING)
}

/// The VM's routing table slot.
#[pin_data]
pub(crate) struct Routing {
    #[pin]
    table: SpinLock<Option<Arc<Table>>>,
    /// Upstream `KVM_REQ_SCAN_IOAPIC` to every vCPU, as a generation: bumped when the table
    /// changes or a LAPIC's destination (ID, LDR, DFR, mode) does; a vCPU whose last EOI-exit
    /// scan saw an older value scans again before it next uses its LAPIC.
    scan_gen: core::sync::atomic::AtomicU64,
}

impl Routing {
    /// No table (upstream allocates one at irqchip creation).
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Routing {
            table <- new_spinlock!(None, "kvm->irq_routing"),
            scan_gen: core::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Asks every vCPU to recompute its EOI-exit bitmap (upstream
    /// `kvm_make_scan_ioapic_request`).
    pub(crate) fn request_scan(&self) {
        self.scan_gen
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    }

    /// The current scan generation (see [`Self::request_scan`]).
    pub(crate) fn scan_gen(&self) -> u64 {
        self.scan_gen.load(core::sync::atomic::Ordering::Acquire)
    }

    /// The current table, if any (a counted reference: drop it without spinlocks held).
    pub(crate) fn current(&self) -> Option<Arc<Table>> {
        self.table.lock().clone()
    }

    /// Installs `t`; the old table is dropped here, outside the lock.
    pub(crate) fn install(&self, t: Table) -> Result {
        self.publish(Arc::new(t, GFP_KERNEL)?);
        Ok(())
    }

    /// Installs a table already allocated (cannot fail); the old one is dropped here.
    pub(crate) fn publish(&self, new: Arc<Table>) {
        let old = core::mem::replace(&mut *self.table.lock(), Some(new));
        // kvm_arch_irq_routing_update: a split irqchip rescans its routes.
        self.request_scan();
        drop(old);
    }
}

/// `KVM_SET_GSI_ROUTING` (upstream `kvm_vm_ioctl` + `kvm_set_irq_routing`): `EINVAL` without
/// an in-kernel irqchip, with more than `KVM_MAX_IRQ_ROUTES` entries or non-zero flags, or an
/// invalid entry; `EFAULT` for unreadable entries. The new table replaces the old one whole.
pub(crate) fn set_gsi_routing(vm: &Vm, arg: usize) -> Result<isize> {
    let hdr: KvmIrqRouting = read_pod(arg)?;
    check_header(vm.irqchip_mode().in_kernel(), hdr.nr, hdr.flags).map_err(errno)?;
    let n = hdr.nr as usize;
    let sz = core::mem::size_of::<KvmIrqRoutingEntry>();
    let base = arg
        .checked_add(core::mem::size_of::<KvmIrqRouting>())
        .ok_or(EFAULT)?;
    let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
    for i in 0..n {
        let at = i
            .checked_mul(sz)
            .and_then(|o| base.checked_add(o))
            .ok_or(EFAULT)?;
        entries.push(read_pod::<KvmIrqRoutingEntry>(at)?, GFP_KERNEL)?;
    }
    let t = build(vm, &entries)?;
    drop(entries);
    // Upstream serialises table updates with kvm->irq_lock; the VM lock does it here.
    let _l = vm.lock();
    vm.irq().routing().install(t)?;
    Ok(0)
}

/// The chips and LAPICs a GSI's routes drive.
struct Targets<'a> {
    vm: &'a Vm,
    source: u32,
}

impl IrqTargets for Targets<'_> {
    fn pic(&mut self, pin: u8, level: bool) -> i32 {
        super::chip::pic_set_irq(self.vm, pin, self.source, level)
    }

    fn ioapic(&mut self, pin: u8, level: bool, line_status: bool) -> i32 {
        super::chip::ioapic_set_irq(self.vm, pin, self.source, level, line_status)
    }

    fn msi(&mut self, msg: &MsiMsg, level: bool) -> i32 {
        send_msi(self.vm, msg, level)
    }
}

/// Upstream `kvm_set_irq`: raises (`level` true) or lowers `gsi` for `source` on every route
/// of it; the sum of the non-negative results, or -1 when nothing took it (no route, masked,
/// coalesced: the routes' own answers).
pub(crate) fn set_irq(vm: &Vm, source: u32, gsi: u32, level: bool, line_status: bool) -> i32 {
    let Some(t) = vm.irq().routing().current() else {
        return -1;
    };
    let r = t.set_irq(gsi, level, line_status, &mut Targets { vm, source });
    drop(t);
    r
}

/// Upstream `kvm_set_msi`.
fn send_msi(vm: &Vm, msg: &MsiMsg, level: bool) -> i32 {
    match msg.set(super::x2apic_format(vm), level) {
        MsiDelivery::Deliver(irq) => super::deliver(vm, &irq),
        MsiDelivery::Done(r) => r,
    }
}

/// `KVM_SIGNAL_MSI` (upstream `kvm_send_userspace_msi`): `EINVAL` without an in-kernel irqchip
/// or with flags other than `KVM_MSI_VALID_DEVID`; else `kvm_set_msi`'s result as the ioctl's
/// return value (so -1, "not delivered", reaches userspace as `EPERM`, as upstream).
pub(crate) fn signal_msi(vm: &Vm, arg: usize) -> Result<isize> {
    let m: KvmMsi = read_pod(arg)?;
    let msg = irqchip::routing::signal_msi_msg(vm.irqchip_mode().in_kernel(), &m).map_err(errno)?;
    Ok(send_msi(vm, &msg, true) as isize)
}

/// `KVM_IRQ_LINE` / `KVM_IRQ_LINE_STATUS` (upstream `kvm_vm_ioctl_irq_line`): `ENXIO` without
/// an in-kernel irqchip; the `_STATUS` form writes `kvm_set_irq`'s result back.
pub(crate) fn irq_line(vm: &Vm, arg: usize, status: bool) -> Result<isize> {
    let mut ev: KvmIrqLevel = read_pod(arg)?;
    if !vm.irqchip_mode().in_kernel() {
        return Err(ENXIO);
    }
    let r = set_irq(
        vm,
        KVM_USERSPACE_IRQ_SOURCE_ID,
        ev.irq(),
        ev.level != 0,
        status,
    );
    if status {
        ev.set_status(r);
        crate::vcpu_state::write_pod(arg, &ev)?;
    }
    Ok(0)
}
