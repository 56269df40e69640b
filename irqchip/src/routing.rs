// SPDX-License-Identifier: GPL-2.0-only
//! The GSI routing table (upstream `virt/kvm/irqchip.c` and `arch/x86/kvm/irq_comm.c`, Linux
//! 6.12): `KVM_SET_GSI_ROUTING`'s validation, the default table `KVM_CREATE_IRQCHIP` installs,
//! lookup by GSI, `kvm_set_irq`'s fan-out and result arithmetic, and the split irqchip's
//! EOI-exit scan of MSI routes.
//!
//! Storage without allocation: the module owns the entries (e.g. a `KVec<RouteEntry>` with room
//! for the user's `nr` entries) and hands them to [`RoutingTable::build`], which validates the
//! user's entries into them and sorts them by GSI (keeping the user's order within a GSI, which
//! is the order upstream's `kvm_set_irq` applies them in). A built table is immutable; the
//! module publishes a new one as upstream does (RCU/SRCU there; whatever the module's lock
//! scheme is here).

pub mod msi;
#[cfg(test)]
mod tests;
pub mod uapi;

use crate::ioapic::uapi::{
    KVM_IOAPIC_NUM_PINS, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_NR_IRQCHIPS,
};
use core::ops::{Deref, DerefMut};
pub use msi::{MsiDelivery, MsiMsg};
use uapi::{
    KvmIrqRoutingEntry, KvmMsi, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MAX_IRQ_ROUTES,
    KVM_MSI_VALID_DEVID,
};
use x86::errno::{Errno, Result};

/// Pins of the PIC pair (`PIC_NUM_PINS`).
pub const PIC_NUM_PINS: u32 = 16;

/// Where a routing entry sends its GSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A PIC pin: 0-7 on the master, 8-15 on the slave (upstream's combined
    /// `e->irqchip.pin`, `kvm_pic_set_irq`'s `irq`).
    Pic(u8),
    /// An IOAPIC pin, 0-23.
    Ioapic(u8),
    /// An MSI.
    Msi(MsiMsg),
}

impl Route {
    /// The uapi chip number for irqchip routes (`KVM_IRQCHIP_*`).
    pub fn irqchip(&self) -> Option<u32> {
        match *self {
            Route::Pic(p) if p < 8 => Some(KVM_IRQCHIP_PIC_MASTER),
            Route::Pic(_) => Some(KVM_IRQCHIP_PIC_SLAVE),
            Route::Ioapic(_) => Some(KVM_IRQCHIP_IOAPIC),
            Route::Msi(_) => None,
        }
    }
}

/// One validated routing entry (upstream `struct kvm_kernel_irq_routing_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The GSI.
    pub gsi: u32,
    /// Where it goes.
    pub route: Route,
    /// Its index in the user's array (the order within a GSI).
    order: u32,
}

impl Default for RouteEntry {
    fn default() -> Self {
        Self {
            gsi: 0,
            route: Route::Ioapic(0),
            order: 0,
        }
    }
}

/// The VM's settings that decide what a table may hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingCtx {
    /// Split irqchip (`KVM_CAP_SPLIT_IRQCHIP`): irqchip routes are refused.
    pub split: bool,
    /// `KVM_X2APIC_API_USE_32BIT_IDS` is on: MSI routes with address bits 39:32 set are
    /// refused.
    pub x2apic_format: bool,
}

/// Upstream `KVM_SET_GSI_ROUTING`'s checks on the header, before it reads the entries: the VM
/// needs an in-kernel irqchip (full or split), at most [`KVM_MAX_IRQ_ROUTES`] entries, flags 0.
///
/// # Errors
///
/// `EINVAL` for each of them.
pub fn check_header(irqchip_in_kernel: bool, nr: u32, flags: u32) -> Result {
    if !irqchip_in_kernel || nr > KVM_MAX_IRQ_ROUTES || flags != 0 {
        return Err(Errno::Einval);
    }
    Ok(())
}

/// Upstream `kvm_set_routing_entry` (x86, Hyper-V and Xen not built): one user entry's route.
///
/// # Errors
///
/// `EINVAL` for irqchip routes in split mode, an unknown chip, a pin past the chip's (PIC 8
/// each, IOAPIC 24), an MSI address the x2APIC format forbids, any other type.
pub fn route_of(ue: &KvmIrqRoutingEntry, ctx: RoutingCtx) -> Result<Route> {
    match ue.type_ {
        KVM_IRQ_ROUTING_IRQCHIP => {
            if ctx.split {
                return Err(Errno::Einval);
            }
            let (chip, pin) = (ue.word(0), ue.word(1));
            match chip {
                KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE if pin < PIC_NUM_PINS / 2 => {
                    let delta = if chip == KVM_IRQCHIP_PIC_SLAVE { 8 } else { 0 };
                    Ok(Route::Pic((pin + delta) as u8))
                }
                KVM_IRQCHIP_IOAPIC if (pin as usize) < KVM_IOAPIC_NUM_PINS => {
                    Ok(Route::Ioapic(pin as u8))
                }
                _ => Err(Errno::Einval),
            }
        }
        KVM_IRQ_ROUTING_MSI => {
            let m = MsiMsg {
                address_lo: ue.word(0),
                address_hi: ue.word(1),
                data: ue.word(2),
            };
            if m.route_invalid(ctx.x2apic_format) {
                return Err(Errno::Einval);
            }
            Ok(Route::Msi(m))
        }
        _ => Err(Errno::Einval),
    }
}

/// A validated routing table over caller-owned storage (upstream `struct
/// kvm_irq_routing_table`).
#[derive(Debug)]
pub struct RoutingTable<S> {
    entries: S,
    len: usize,
    /// (chip, pin) -> GSI, -1 if none (pins of the PIC slave are 8-15 under chip 1).
    chip: [[i32; KVM_IOAPIC_NUM_PINS]; KVM_NR_IRQCHIPS],
    nr_rt_entries: u32,
}

impl<S: Deref<Target = [RouteEntry]>> RoutingTable<S> {
    /// Validates `ues` into `storage` (which must have room for `ues.len()` entries) as
    /// upstream `kvm_set_irq_routing` does: every GSI below [`KVM_MAX_IRQ_ROUTES`]; flags 0
    /// (MSI routes may set `KVM_MSI_VALID_DEVID`, ignored on x86); each route valid
    /// ([`route_of`]); and per GSI either one route or irqchip routes to distinct chips.
    ///
    /// # Errors
    ///
    /// `EINVAL` for any rule broken; `ENOMEM` if `storage` is too short.
    pub fn build(mut storage: S, ues: &[KvmIrqRoutingEntry], ctx: RoutingCtx) -> Result<Self>
    where
        S: DerefMut,
    {
        let mut nr_rt_entries = 0;
        for ue in ues {
            if ue.gsi >= KVM_MAX_IRQ_ROUTES {
                return Err(Errno::Einval);
            }
            nr_rt_entries = nr_rt_entries.max(ue.gsi);
        }
        nr_rt_entries += 1;
        let Some(out) = storage.get_mut(..ues.len()) else {
            return Err(Errno::Enomem);
        };
        let mut chip = [[-1; KVM_IOAPIC_NUM_PINS]; KVM_NR_IRQCHIPS];
        for (i, (ue, e)) in ues.iter().zip(out.iter_mut()).enumerate() {
            let flags_ok = match ue.type_ {
                KVM_IRQ_ROUTING_MSI => ue.flags & !KVM_MSI_VALID_DEVID == 0,
                _ => ue.flags == 0,
            };
            if !flags_ok {
                return Err(Errno::Einval);
            }
            let route = route_of(ue, ctx)?;
            *e = RouteEntry {
                gsi: ue.gsi,
                route,
                order: i as u32,
            };
        }
        out.sort_unstable_by_key(|e| (e.gsi, e.order));
        // Upstream refuses a second entry for a GSI unless both are irqchip routes to
        // different chips; so a GSI has one route or up to three irqchip ones.
        let mut start = 0;
        while start < out.len() {
            let gsi = out[start].gsi;
            let n = out[start..].iter().take_while(|e| e.gsi == gsi).count();
            let group = &out[start..start + n];
            if n > 1 {
                if n > KVM_NR_IRQCHIPS {
                    return Err(Errno::Einval);
                }
                for (a, ea) in group.iter().enumerate() {
                    let Some(ca) = ea.route.irqchip() else {
                        return Err(Errno::Einval);
                    };
                    for eb in &group[..a] {
                        if !matches!(eb.route.irqchip(), Some(cb) if cb != ca) {
                            return Err(Errno::Einval);
                        }
                    }
                }
            }
            start += n;
        }
        // (chip, pin) -> GSI; a later entry wins, as upstream's in-order fill.
        for ue in ues {
            if let Ok(route) = route_of(ue, ctx) {
                let (c, p) = match route {
                    Route::Pic(p) => (route.irqchip().unwrap_or(0), u32::from(p)),
                    Route::Ioapic(p) => (KVM_IRQCHIP_IOAPIC, u32::from(p)),
                    Route::Msi(_) => continue,
                };
                if let Some(slot) = chip.get_mut(c as usize).and_then(|r| r.get_mut(p as usize)) {
                    *slot = ue.gsi as i32;
                }
            }
        }
        Ok(Self {
            entries: storage,
            len: ues.len(),
            chip,
            nr_rt_entries,
        })
    }

    /// The entries, sorted by GSI.
    pub fn entries(&self) -> &[RouteEntry] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// One more than the highest GSI (1 for an empty table), upstream `nr_rt_entries`.
    pub fn nr_rt_entries(&self) -> u32 {
        self.nr_rt_entries
    }

    /// The routes of `gsi`, in the user's order (upstream `kvm_irq_map_gsi`).
    pub fn lookup(&self, gsi: u32) -> &[RouteEntry] {
        let all = self.entries();
        let lo = all.partition_point(|e| e.gsi < gsi);
        let hi = all.partition_point(|e| e.gsi <= gsi);
        all.get(lo..hi).unwrap_or(&[])
    }

    /// The GSI routed to (`irqchip`, `pin`), upstream `kvm_irq_map_chip_pin` (for the ack and
    /// mask notifiers): PIC pins are 0-15 under either PIC chip number as the PIC reports them
    /// (slave pins 8-15), IOAPIC pins 0-23.
    pub fn gsi_of(&self, irqchip: u32, pin: u32) -> Option<u32> {
        let g = *self.chip.get(irqchip as usize)?.get(pin as usize)?;
        u32::try_from(g).ok()
    }

    /// Upstream `kvm_set_irq`: drives every route of `gsi` to `level` through `t`, in order,
    /// and combines the answers: -1 if every route ignored it (or none exists), else the sum
    /// of the non-negative answers.
    pub fn set_irq(&self, gsi: u32, level: bool, line_status: bool, t: &mut dyn IrqTargets) -> i32 {
        let mut ret = -1;
        for e in self.lookup(gsi) {
            let r = match e.route {
                Route::Pic(pin) => t.pic(pin, level),
                Route::Ioapic(pin) => t.ioapic(pin, level, line_status),
                Route::Msi(m) => t.msi(&m, level),
            };
            ret = combine(ret, r);
        }
        ret
    }

    /// Upstream `kvm_scan_ioapic_routes` (split irqchip): for the MSI routes of GSIs below
    /// `nr_reserved_ioapic_pins` (`KVM_CAP_SPLIT_IRQCHIP`'s argument) that are
    /// level-triggered, the vectors whose EOI the vCPU must exit to userspace for
    /// (`KVM_EXIT_IOAPIC_EOI`), ORed into `handled`; `matches(dest_id, logical)` and
    /// `pending_eoi(vector)` answer for the vCPU, as in [`crate::ioapic::scan_irq`].
    pub fn scan_ioapic_routes(
        &self,
        nr_reserved_ioapic_pins: u32,
        x2apic_format: bool,
        handled: &mut [u64; 4],
        matches: &mut dyn FnMut(u32, bool) -> bool,
        pending_eoi: &mut dyn FnMut(u8) -> bool,
    ) {
        let limit = self.nr_rt_entries.min(nr_reserved_ioapic_pins);
        for e in self.entries().iter().take_while(|e| e.gsi < limit) {
            let Route::Msi(m) = e.route else { continue };
            let Some(irq) = m.to_lapic_irq(x2apic_format) else {
                continue;
            };
            if !irq.level_triggered {
                continue;
            }
            crate::ioapic::scan_irq(
                handled,
                irq.dest_id,
                irq.dest_logical,
                irq.vector,
                matches,
                pending_eoi,
            );
        }
    }
}

/// Upstream `kvm_set_irq`'s accumulation: a negative answer is skipped; the first
/// non-negative one replaces the initial -1; later ones add.
pub fn combine(ret: i32, r: i32) -> i32 {
    if r < 0 {
        ret
    } else {
        r.saturating_add(ret.max(0))
    }
}

/// The chips a GSI's routes drive (implemented by the module over its PIC, IOAPIC and LAPICs).
pub trait IrqTargets {
    /// `kvm_pic_set_irq(pin 0-15, level)`.
    fn pic(&mut self, pin: u8, level: bool) -> i32;
    /// `kvm_ioapic_set_irq(pin, level, line_status)`.
    fn ioapic(&mut self, pin: u8, level: bool, line_status: bool) -> i32;
    /// `kvm_set_msi(msg, level)`: see [`MsiMsg::set`].
    fn msi(&mut self, msg: &MsiMsg, level: bool) -> i32;
}

/// Upstream `default_routing` (`kvm_setup_default_irq_routing`, installed by
/// `KVM_CREATE_IRQCHIP`): GSI 0-15 to IOAPIC pin n and to PIC pin n (master below 8, slave
/// pin n-8 above), GSI 16-23 to IOAPIC pin n only; 40 entries.
pub const DEFAULT_ROUTING: [KvmIrqRoutingEntry; 40] = default_routing();

const fn default_routing() -> [KvmIrqRoutingEntry; 40] {
    let mut t = [KvmIrqRoutingEntry::irqchip(0, 0, 0); 40];
    let mut i = 0;
    let mut gsi = 0;
    while gsi < 24 {
        t[i] = KvmIrqRoutingEntry::irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
        i += 1;
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            t[i] = KvmIrqRoutingEntry::irqchip(gsi, chip, gsi % 8);
            i += 1;
        }
        gsi += 1;
    }
    t
}

/// Upstream `kvm_send_userspace_msi`'s checks for `KVM_SIGNAL_MSI`: an in-kernel irqchip (full
/// or split) and flags 0 or `KVM_MSI_VALID_DEVID`. Then [`MsiMsg::set`] with level 1; its
/// answer is the ioctl's return value as upstream (so -1, "not delivered", reaches userspace as
/// -EPERM, -22 as -EINVAL).
///
/// # Errors
///
/// `EINVAL`.
pub fn signal_msi_msg(irqchip_in_kernel: bool, msi: &KvmMsi) -> Result<MsiMsg> {
    if !irqchip_in_kernel || msi.flags & !KVM_MSI_VALID_DEVID != 0 {
        return Err(Errno::Einval);
    }
    Ok(MsiMsg {
        address_lo: msi.address_lo,
        address_hi: msi.address_hi,
        data: msi.data,
    })
}
