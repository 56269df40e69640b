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

use super::abi::*;
use crate::vm::Vm;
use irqchip::irq::{DeliveryMode, LapicIrq, Shorthand};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};
use kernel::uaccess::UserSlice;

/// The source ids of upstream's per-pin line-state bitmaps: a line is high while any source
/// holds it high.
pub(crate) const KVM_USERSPACE_IRQ_SOURCE_ID: u32 = 0;
/// The source resampling irqfds hold level-triggered lines with.
pub(crate) const KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID: u32 = 1;
/// The PIT's source (upstream allocates it with `kvm_request_irq_source_id`: the first free
/// one after the two above).
pub(crate) const KVM_PIT_IRQ_SOURCE_ID: u32 = 2;

/// What one routing entry raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// PIC pin 0..15 (8..15 on the slave).
    Pic(u8),
    /// IOAPIC pin 0..23.
    Ioapic(u8),
    /// An MSI message.
    Msi { address_lo: u32, address_hi: u32, data: u32 },
}

#[derive(Clone, Copy)]
struct Route {
    gsi: u32,
    /// Position in the userspace table, for upstream's per-GSI order (last added first).
    index: u32,
    target: Target,
}

/// A routing table (upstream `struct kvm_irq_routing_table`).
pub(crate) struct Table {
    /// Sorted by GSI, and within a GSI last-given first (upstream's hlist head insertion).
    routes: KVec<Route>,
    /// The GSI routed to each (irqchip, pin), or -1 (upstream `chip[][]`): the EOI and ack
    /// paths map a pin back to its GSI with it.
    chip: [[i32; KVM_IOAPIC_NUM_PINS]; 3],
}

impl Table {
    /// The entries for `gsi`, in upstream's order.
    fn for_gsi(&self, gsi: u32) -> &[Route] {
        let start = self.routes.partition_point(|r| r.gsi < gsi);
        let end = self.routes.partition_point(|r| r.gsi <= gsi);
        self.routes.get(start..end).unwrap_or(&[])
    }

    /// The GSI routed to `pin` of `irqchip` (`kvm_irq_map_chip_pin`), if any.
    pub(crate) fn gsi_of(&self, irqchip: u32, pin: u32) -> Option<u32> {
        let g = *self.chip.get(irqchip as usize)?.get(pin as usize)?;
        u32::try_from(g).ok()
    }

    /// The MSI targets and their GSIs (for the split-mode EOI exit bitmap).
    #[allow(dead_code)] // split mode's EOI exit bitmap (irqmod) reads it
    pub(crate) fn msi_routes(&self) -> impl Iterator<Item = (u32, Target)> + '_ {
        self.routes
            .iter()
            .filter(|r| matches!(r.target, Target::Msi { .. }))
            .map(|r| (r.gsi, r.target))
    }

    /// Builds a table from userspace entries (`kvm_set_irq_routing` + `setup_routing_entry` +
    /// x86 `kvm_set_routing_entry`), with upstream's validation: `EINVAL` for a GSI at or above
    /// `KVM_MAX_IRQ_ROUTES`, flags other than `KVM_MSI_VALID_DEVID` on MSI entries (any on
    /// others), irqchip entries in split mode, a chip or pin out of range, an invalid MSI
    /// (x2APIC format with address_hi bits 7:0), an unknown or unsupported type, the same
    /// irqchip twice for one GSI or a non-irqchip entry sharing its GSI with anything.
    pub(crate) fn build(vm: &Vm, ue: &[KvmIrqRoutingEntry]) -> Result<Table> {
        if ue.iter().any(|e| e.gsi >= super::KVM_MAX_IRQ_ROUTES) {
            return Err(EINVAL);
        }
        let mut t = Table {
            routes: KVec::with_capacity(ue.len(), GFP_KERNEL)?,
            chip: [[-1; KVM_IOAPIC_NUM_PINS]; 3],
        };
        let split = vm.irqchip_mode() == super::IrqchipMode::Split;
        let x2apic_format = super::x2apic_format(vm);
        for (i, e) in ue.iter().enumerate() {
            let flags_ok = match e.type_ {
                KVM_IRQ_ROUTING_MSI => e.flags & !KVM_MSI_VALID_DEVID == 0,
                _ => e.flags == 0,
            };
            if !flags_ok {
                return Err(EINVAL);
            }
            // One irqchip route per chip for a GSI; anything else only alone.
            let chip_of = |r: &Route| match r.target {
                Target::Pic(p) if p < 8 => Some(KVM_IRQCHIP_PIC_MASTER),
                Target::Pic(_) => Some(KVM_IRQCHIP_PIC_SLAVE),
                Target::Ioapic(_) => Some(KVM_IRQCHIP_IOAPIC),
                Target::Msi { .. } => None,
            };
            let new_chip = (e.type_ == KVM_IRQ_ROUTING_IRQCHIP).then_some(e.u[0]);
            let clash = t.routes.iter().filter(|r| r.gsi == e.gsi).any(|r| {
                match (chip_of(r), new_chip) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
            });
            if clash {
                return Err(EINVAL);
            }
            let target = match e.type_ {
                KVM_IRQ_ROUTING_IRQCHIP => {
                    if split {
                        return Err(EINVAL);
                    }
                    let (chip, pin) = (e.u[0], e.u[1]);
                    match chip {
                        KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                            if pin >= PIC_NUM_PINS / 2 {
                                return Err(EINVAL);
                            }
                            let off = if chip == KVM_IRQCHIP_PIC_SLAVE { 8 } else { 0 };
                            Target::Pic((pin + off) as u8)
                        }
                        KVM_IRQCHIP_IOAPIC => {
                            if pin as usize >= KVM_IOAPIC_NUM_PINS {
                                return Err(EINVAL);
                            }
                            Target::Ioapic(pin as u8)
                        }
                        _ => return Err(EINVAL),
                    }
                }
                KVM_IRQ_ROUTING_MSI => {
                    if x2apic_format && e.u[1] & 0xff != 0 {
                        return Err(EINVAL);
                    }
                    Target::Msi {
                        address_lo: e.u[0],
                        address_hi: e.u[1],
                        data: e.u[2],
                    }
                }
                // S390 adapters, Hyper-V SynIC and Xen event channels are not built here.
                _ => return Err(EINVAL),
            };
            // Upstream records the pin as given (the slave's pins 8..15 at chip[1][pin + 8]).
            match target {
                Target::Pic(p) => set_chip(&mut t.chip, e.u[0], u32::from(p), e.gsi),
                Target::Ioapic(p) => set_chip(&mut t.chip, KVM_IRQCHIP_IOAPIC, u32::from(p), e.gsi),
                Target::Msi { .. } => {}
            }
            t.routes.push(
                Route {
                    gsi: e.gsi,
                    index: i as u32,
                    target,
                },
                GFP_KERNEL,
            )?;
        }
        t.routes
            .sort_unstable_by_key(|r| (r.gsi, core::cmp::Reverse(r.index)));
        Ok(t)
    }

    /// Upstream's `default_routing`: GSI 0-15 to IOAPIC pin n and PIC pin n, GSI 16-23 to the
    /// IOAPIC only.
    pub(crate) fn default_routing(vm: &Vm) -> Result<Table> {
        let mut ue = [KvmIrqRoutingEntry::default(); 40];
        let mut n = 0;
        for gsi in 0..24u32 {
            let mut push = |chip: u32, pin: u32| {
                if let Some(e) = ue.get_mut(n) {
                    e.gsi = gsi;
                    e.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                    e.u[0] = chip;
                    e.u[1] = pin;
                    n += 1;
                }
            };
            push(KVM_IRQCHIP_IOAPIC, gsi);
            if gsi < 16 {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                push(chip, gsi % 8);
            }
        }
        Self::build(vm, ue.get(..n).unwrap_or(&[]))
    }
}

fn set_chip(chip: &mut [[i32; KVM_IOAPIC_NUM_PINS]; 3], irqchip: u32, pin: u32, gsi: u32) {
    if let Some(slot) = chip
        .get_mut(irqchip as usize)
        .and_then(|c| c.get_mut(pin as usize))
    {
        *slot = gsi as i32;
    }
}

/// The VM's routing table slot.
#[pin_data]
pub(crate) struct Routing {
    #[pin]
    table: SpinLock<Option<Arc<Table>>>,
}

impl Routing {
    /// No table (upstream allocates one at irqchip creation).
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Routing {
            table <- new_spinlock!(None, "kvm->irq_routing"),
        })
    }

    /// The current table, if any (a counted reference: drop it without spinlocks held).
    pub(crate) fn current(&self) -> Option<Arc<Table>> {
        self.table.lock().clone()
    }

    /// Installs `t`; the old table is dropped here, outside the lock.
    pub(crate) fn install(&self, t: Table) -> Result {
        let new = Arc::new(t, GFP_KERNEL)?;
        let old = core::mem::replace(&mut *self.table.lock(), Some(new));
        drop(old);
        Ok(())
    }
}

/// `KVM_SET_GSI_ROUTING` (upstream `kvm_vm_ioctl` + `kvm_set_irq_routing`): `EINVAL` without
/// an in-kernel irqchip, with more than `KVM_MAX_IRQ_ROUTES` entries or non-zero flags, or an
/// invalid entry; `EFAULT` for unreadable entries. The new table replaces the old one whole.
pub(crate) fn set_gsi_routing(vm: &Vm, arg: usize) -> Result<isize> {
    let hdr: KvmIrqRouting = UserSlice::new(arg, core::mem::size_of::<KvmIrqRouting>())
        .reader()
        .read()?;
    if !vm.irqchip_mode().in_kernel() || hdr.nr > super::KVM_MAX_IRQ_ROUTES || hdr.flags != 0 {
        return Err(EINVAL);
    }
    let n = hdr.nr as usize;
    let sz = core::mem::size_of::<KvmIrqRoutingEntry>();
    let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
    let mut r = UserSlice::new(arg + core::mem::size_of::<KvmIrqRouting>(), n * sz).reader();
    for _ in 0..n {
        entries.push(r.read::<KvmIrqRoutingEntry>()?, GFP_KERNEL)?;
    }
    let t = Table::build(vm, &entries)?;
    drop(entries);
    // Upstream serialises table updates with kvm->irq_lock; the VM lock does it here.
    let _l = vm.lock();
    vm.irq().routing().install(t)?;
    Ok(0)
}

/// Upstream `kvm_set_irq`: raises (`level` true) or lowers `gsi` for `source` on every route
/// of it; the sum of the non-negative results, or -1 when nothing took it (no route, masked,
/// coalesced: the routes' own answers).
pub(crate) fn set_irq(vm: &Vm, source: u32, gsi: u32, level: bool, line_status: bool) -> i32 {
    let Some(t) = vm.irq().routing().current() else {
        return -1;
    };
    let mut ret = -1;
    for r in t.for_gsi(gsi) {
        let v = match r.target {
            Target::Pic(pin) => super::chip::pic_set_irq(vm, pin, source, level),
            Target::Ioapic(pin) => super::chip::ioapic_set_irq(vm, pin, source, level, line_status),
            Target::Msi {
                address_lo,
                address_hi,
                data,
            } => set_msi(vm, address_lo, address_hi, data, level),
        };
        if v < 0 {
            continue;
        }
        ret = v + ret.max(0);
    }
    drop(t);
    ret
}

/// An MSI message as a request to local APICs (upstream `kvm_set_msi_irq`); `None` for the
/// reserved delivery mode 3.
pub(crate) fn msi_to_irq(vm: &Vm, address_lo: u32, address_hi: u32, data: u32) -> Option<LapicIrq> {
    let mut dest_id = (address_lo >> 12) & 0xff;
    if super::x2apic_format(vm) {
        dest_id |= (address_hi >> 8) << 8;
    }
    Some(LapicIrq {
        vector: data as u8,
        delivery_mode: DeliveryMode::from_bits((data >> 8) & 7)?,
        dest_logical: address_lo & (1 << 2) != 0,
        level_triggered: data & (1 << 15) != 0,
        level: true,
        shorthand: Shorthand::None,
        dest_id,
        msi_redir_hint: address_lo & (1 << 3) != 0,
    })
}

/// Upstream `kvm_set_msi`: `-EINVAL` for an invalid x2APIC-format message, -1 for a
/// de-assert (MSIs are edges), else the delivery's result.
fn set_msi(vm: &Vm, address_lo: u32, address_hi: u32, data: u32, level: bool) -> i32 {
    if super::x2apic_format(vm) && address_hi & 0xff != 0 {
        return -(EINVAL.to_errno().unsigned_abs() as i32);
    }
    if !level {
        return -1;
    }
    match msi_to_irq(vm, address_lo, address_hi, data) {
        Some(irq) => super::deliver(vm, &irq),
        // Upstream hands delivery mode 3 to the APICs, which ignore it ("unsupported delivery
        // mode"): nothing is injected.
        None => 0,
    }
}

/// `KVM_SIGNAL_MSI` (upstream `kvm_send_userspace_msi`): `EINVAL` without an in-kernel irqchip
/// or with flags other than `KVM_MSI_VALID_DEVID`; else `kvm_set_msi`'s result as the ioctl's
/// return value (so -1, "not delivered", reaches userspace as `EPERM`, as upstream).
pub(crate) fn signal_msi(vm: &Vm, arg: usize) -> Result<isize> {
    let m: KvmMsi = UserSlice::new(arg, core::mem::size_of::<KvmMsi>())
        .reader()
        .read()?;
    if !vm.irqchip_mode().in_kernel() || m.flags & !KVM_MSI_VALID_DEVID != 0 {
        return Err(EINVAL);
    }
    Ok(set_msi(vm, m.address_lo, m.address_hi, m.data, true) as isize)
}

/// `KVM_IRQ_LINE` / `KVM_IRQ_LINE_STATUS` (upstream `kvm_vm_ioctl_irq_line`): `ENXIO` without
/// an in-kernel irqchip; the `_STATUS` form writes `kvm_set_irq`'s result back.
pub(crate) fn irq_line(vm: &Vm, arg: usize, status: bool) -> Result<isize> {
    let sz = core::mem::size_of::<KvmIrqLevel>();
    let mut ev: KvmIrqLevel = UserSlice::new(arg, sz).reader().read()?;
    if !vm.irqchip_mode().in_kernel() {
        return Err(ENXIO);
    }
    let r = set_irq(
        vm,
        KVM_USERSPACE_IRQ_SOURCE_ID,
        ev.irq_or_status,
        ev.level != 0,
        status,
    );
    if status {
        ev.irq_or_status = r as u32;
        UserSlice::new(arg, sz).writer().write(&ev)?;
    }
    Ok(0)
}
