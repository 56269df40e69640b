// SPDX-License-Identifier: GPL-2.0-only
//! Host tests of the routing table and MSI decoding against upstream's rules.

extern crate std;
use super::uapi::*;
use super::*;
use crate::irq::DeliveryMode;
use std::vec;
use std::vec::Vec;

const KERNEL: RoutingCtx = RoutingCtx {
    split: false,
    x2apic_format: false,
};
const SPLIT: RoutingCtx = RoutingCtx {
    split: true,
    x2apic_format: false,
};

fn build(ues: &[KvmIrqRoutingEntry], ctx: RoutingCtx) -> Result<RoutingTable<Vec<RouteEntry>>> {
    RoutingTable::build(vec![RouteEntry::default(); ues.len()], ues, ctx)
}

fn msi_entry(gsi: u32) -> KvmIrqRoutingEntry {
    KvmIrqRoutingEntry::msi(gsi, 0xfee0_1000, 0, 0x4030)
}

#[test]
fn header_rules() {
    assert_eq!(check_header(false, 0, 0), Err(Errno::Einval));
    assert_eq!(check_header(true, 4096, 0), Ok(()));
    assert_eq!(check_header(true, 4097, 0), Err(Errno::Einval));
    assert_eq!(check_header(true, 1, 1), Err(Errno::Einval));
}

#[test]
fn default_routing_has_forty_entries_as_upstream() {
    let t = build(&DEFAULT_ROUTING, KERNEL).unwrap();
    assert_eq!(t.entries().len(), 40);
    assert_eq!(t.nr_rt_entries(), 24);
    assert_eq!(t.lookup(0), &t.entries()[0..2]);
    let r: Vec<Route> = t.lookup(0).iter().map(|e| e.route).collect();
    assert_eq!(r, [Route::Ioapic(0), Route::Pic(0)]);
    let r: Vec<Route> = t.lookup(9).iter().map(|e| e.route).collect();
    assert_eq!(r, [Route::Ioapic(9), Route::Pic(9)]);
    let r: Vec<Route> = t.lookup(20).iter().map(|e| e.route).collect();
    assert_eq!(r, [Route::Ioapic(20)]);
    assert!(t.lookup(24).is_empty());
    assert_eq!(t.gsi_of(KVM_IRQCHIP_PIC_SLAVE, 12), Some(12));
    assert_eq!(t.gsi_of(KVM_IRQCHIP_PIC_MASTER, 2), Some(2));
    assert_eq!(t.gsi_of(KVM_IRQCHIP_IOAPIC, 23), Some(23));
    assert_eq!(t.gsi_of(KVM_IRQCHIP_PIC_SLAVE, 16), None);
    assert_eq!(t.gsi_of(3, 0), None);
    // The raw entries as upstream's macros spell them.
    assert_eq!(
        DEFAULT_ROUTING[19],
        KvmIrqRoutingEntry::irqchip(9, KVM_IRQCHIP_PIC_SLAVE, 1)
    );
    assert_eq!(
        DEFAULT_ROUTING[39],
        KvmIrqRoutingEntry::irqchip(23, KVM_IRQCHIP_IOAPIC, 23)
    );
}

#[test]
fn empty_table_is_valid() {
    let t = build(&[], SPLIT).unwrap();
    assert_eq!(t.nr_rt_entries(), 1);
    assert!(t.lookup(0).is_empty());
}

#[test]
fn gsi_limit() {
    assert!(build(&[msi_entry(4095)], KERNEL).is_ok());
    assert_eq!(build(&[msi_entry(4096)], KERNEL).err(), Some(Errno::Einval));
}

#[test]
fn pin_limits_per_chip() {
    let ok = [
        KvmIrqRoutingEntry::irqchip(1, KVM_IRQCHIP_PIC_MASTER, 7),
        KvmIrqRoutingEntry::irqchip(2, KVM_IRQCHIP_PIC_SLAVE, 7),
        KvmIrqRoutingEntry::irqchip(3, KVM_IRQCHIP_IOAPIC, 23),
    ];
    let t = build(&ok, KERNEL).unwrap();
    assert_eq!(t.lookup(2)[0].route, Route::Pic(15));
    for bad in [
        KvmIrqRoutingEntry::irqchip(1, KVM_IRQCHIP_PIC_MASTER, 8),
        KvmIrqRoutingEntry::irqchip(1, KVM_IRQCHIP_PIC_SLAVE, 8),
        KvmIrqRoutingEntry::irqchip(1, KVM_IRQCHIP_IOAPIC, 24),
        KvmIrqRoutingEntry::irqchip(1, 3, 0),
    ] {
        assert_eq!(build(&[bad], KERNEL).err(), Some(Errno::Einval), "{bad:?}");
    }
}

#[test]
fn split_refuses_irqchip_routes_but_takes_msi() {
    assert_eq!(build(&DEFAULT_ROUTING, SPLIT).err(), Some(Errno::Einval));
    assert!(build(&[msi_entry(5)], SPLIT).is_ok());
}

#[test]
fn flags_rules() {
    let mut e = msi_entry(1);
    e.flags = KVM_MSI_VALID_DEVID;
    assert!(build(&[e], KERNEL).is_ok());
    e.flags = 2;
    assert_eq!(build(&[e], KERNEL).err(), Some(Errno::Einval));
    let mut c = KvmIrqRoutingEntry::irqchip(1, KVM_IRQCHIP_IOAPIC, 1);
    c.flags = KVM_MSI_VALID_DEVID;
    assert_eq!(build(&[c], KERNEL).err(), Some(Errno::Einval));
}

#[test]
fn unknown_types_are_refused() {
    for t in [
        0,
        KVM_IRQ_ROUTING_S390_ADAPTER,
        KVM_IRQ_ROUTING_HV_SINT,
        KVM_IRQ_ROUTING_XEN_EVTCHN,
        6,
    ] {
        let mut e = msi_entry(1);
        e.type_ = t;
        assert_eq!(build(&[e], KERNEL).err(), Some(Errno::Einval), "type {t}");
    }
}

#[test]
fn duplicate_rules() {
    let io = KvmIrqRoutingEntry::irqchip(4, KVM_IRQCHIP_IOAPIC, 4);
    let io2 = KvmIrqRoutingEntry::irqchip(4, KVM_IRQCHIP_IOAPIC, 5);
    let m = KvmIrqRoutingEntry::irqchip(4, KVM_IRQCHIP_PIC_MASTER, 4);
    let s = KvmIrqRoutingEntry::irqchip(4, KVM_IRQCHIP_PIC_SLAVE, 4);
    // One GSI to each of the three chips is fine.
    assert!(build(&[io, m, s], KERNEL).is_ok());
    assert_eq!(build(&[io, io2], KERNEL).err(), Some(Errno::Einval));
    assert_eq!(
        build(&[msi_entry(4), io], KERNEL).err(),
        Some(Errno::Einval)
    );
    assert_eq!(
        build(&[io, msi_entry(4)], KERNEL).err(),
        Some(Errno::Einval)
    );
    assert_eq!(
        build(&[msi_entry(4), msi_entry(4)], KERNEL).err(),
        Some(Errno::Einval)
    );
    assert_eq!(build(&[io, m, s, io2], KERNEL).err(), Some(Errno::Einval));
    // Same chip on different GSIs is fine; a (chip, pin) maps to the last GSI given.
    let t = build(
        &[io, KvmIrqRoutingEntry::irqchip(7, KVM_IRQCHIP_IOAPIC, 4)],
        KERNEL,
    )
    .unwrap();
    assert_eq!(t.gsi_of(KVM_IRQCHIP_IOAPIC, 4), Some(7));
}

#[test]
fn a_full_table_of_msi_routes_builds() {
    let ues: Vec<_> = (0..4096).rev().map(msi_entry).collect();
    let t = build(&ues, KERNEL).unwrap();
    assert_eq!(t.nr_rt_entries(), 4096);
    assert_eq!(t.lookup(4095).len(), 1);
    assert_eq!(t.entries()[0].gsi, 0);
    let same: Vec<_> = (0..4096).map(|_| msi_entry(9)).collect();
    assert_eq!(build(&same, KERNEL).err(), Some(Errno::Einval));
}

#[test]
fn short_storage_is_enomem() {
    let r = RoutingTable::build(vec![RouteEntry::default(); 1], &DEFAULT_ROUTING, KERNEL);
    assert_eq!(r.err(), Some(Errno::Enomem));
}

#[test]
fn x2apic_format_msi_rules() {
    let mut e = msi_entry(1);
    e.set_word(1, 0x0000_0001);
    let x2 = RoutingCtx {
        split: false,
        x2apic_format: true,
    };
    assert_eq!(build(&[e], x2).err(), Some(Errno::Einval));
    assert!(build(&[e], KERNEL).is_ok());
    let m = MsiMsg {
        address_lo: 0xfee0_1000,
        address_hi: 0x0000_0001,
        data: 0x30,
    };
    assert_eq!(m.set(true, true), MsiDelivery::Done(-22));
}

#[test]
fn msi_decoding() {
    // Logical, redirection hint, dest 0x12, lowest priority, level trigger, vector 0x45.
    let m = MsiMsg {
        address_lo: 0xfee1_200c,
        address_hi: 0x1234_5600,
        data: 0xc145,
    };
    let irq = m.to_lapic_irq(false);
    assert_eq!(irq.vector, 0x45);
    assert_eq!(irq.delivery_mode, DeliveryMode::LowestPriority);
    assert!(irq.dest_logical && irq.msi_redir_hint && irq.level_triggered && irq.level);
    assert_eq!(irq.dest_id, 0x12);
    // x2APIC format: address bits 63:40 are destination bits 31:8.
    assert_eq!(m.to_lapic_irq(true).dest_id, 0x1234_5612);
    // Edge, physical, fixed; the virtual extended destination bits 11:5 are not KVM's.
    let e = MsiMsg {
        address_lo: 0xfeef_ffe0,
        address_hi: 0,
        data: 0x0030,
    };
    let irq = e.to_lapic_irq(false);
    assert_eq!((irq.dest_id, irq.vector), (0xff, 0x30));
    assert!(!irq.dest_logical && !irq.msi_redir_hint && !irq.level_triggered);
    assert_eq!(e.set(false, false), MsiDelivery::Done(-1));
    assert_eq!(e.set(false, true), MsiDelivery::Deliver(irq));
    let r = MsiMsg { data: 0x330, ..e };
    // Mode 3: the remote-read (PV-unhalt) kick, delivered like any request.
    let rr = r.to_lapic_irq(false);
    assert_eq!(rr.delivery_mode, DeliveryMode::RemoteRead);
    assert_eq!((rr.dest_id, rr.dest_logical), (0xff, false));
    assert_eq!(r.set(false, true), MsiDelivery::Deliver(rr));
}

#[test]
fn signal_msi_checks() {
    let mut m = KvmMsi {
        address_lo: 0xfee0_0000,
        data: 0x31,
        ..KvmMsi::default()
    };
    assert_eq!(signal_msi_msg(false, &m).err(), Some(Errno::Einval));
    assert_eq!(signal_msi_msg(true, &m).unwrap().data, 0x31);
    m.flags = KVM_MSI_VALID_DEVID;
    assert!(signal_msi_msg(true, &m).is_ok());
    m.flags = 2;
    assert_eq!(signal_msi_msg(true, &m).err(), Some(Errno::Einval));
}

struct Targets {
    log: Vec<(char, u8, bool)>,
    pic: i32,
    ioapic: i32,
    msi: i32,
}

impl IrqTargets for Targets {
    fn pic(&mut self, pin: u8, level: bool) -> i32 {
        self.log.push(('p', pin, level));
        self.pic
    }
    fn ioapic(&mut self, pin: u8, level: bool, _line_status: bool) -> i32 {
        self.log.push(('i', pin, level));
        self.ioapic
    }
    fn msi(&mut self, msg: &MsiMsg, level: bool) -> i32 {
        self.log.push(('m', msg.data as u8, level));
        self.msi
    }
}

#[test]
fn set_irq_fans_out_in_user_order_and_combines() {
    let t = build(&DEFAULT_ROUTING, KERNEL).unwrap();
    let mut x = Targets {
        log: Vec::new(),
        pic: -1,
        ioapic: 1,
        msi: 0,
    };
    assert_eq!(t.set_irq(3, true, false, &mut x), 1);
    assert_eq!(x.log, [('i', 3, true), ('p', 3, true)]);
    x.pic = 1;
    assert_eq!(t.set_irq(3, true, false, &mut x), 2);
    x.pic = -1;
    x.ioapic = -1;
    assert_eq!(t.set_irq(3, true, false, &mut x), -1);
    assert_eq!(t.set_irq(100, true, false, &mut x), -1);
    assert_eq!(combine(-1, 0), 0);
    assert_eq!(combine(0, -1), 0);
    assert_eq!(combine(2, 3), 5);
}

#[test]
fn split_scan_takes_level_msi_routes_below_the_reserved_pins() {
    let ues = [
        KvmIrqRoutingEntry::msi(0, 0xfee0_1000, 0, 0x8051), // level, dest 1
        KvmIrqRoutingEntry::msi(1, 0xfee0_1000, 0, 0x0052), // edge
        KvmIrqRoutingEntry::msi(2, 0xfee0_2000, 0, 0x8053), // level, dest 2
        KvmIrqRoutingEntry::msi(30, 0xfee0_1000, 0, 0x8054), // past the reserved pins
    ];
    let t = build(&ues, SPLIT).unwrap();
    let mut h = [0u64; 4];
    t.scan_ioapic_routes(24, false, &mut h, &mut |d, l| d == 1 && !l, &mut |v| {
        v == 0x53
    });
    assert_eq!(h, [0, 1 << (0x51 - 64) | 1 << (0x53 - 64), 0, 0]);
    let mut h = [0u64; 4];
    t.scan_ioapic_routes(0, false, &mut h, &mut |_, _| true, &mut |_| true);
    assert_eq!(h, [0; 4]);
}

#[test]
fn irq_line_needs_an_in_kernel_irqchip() {
    assert_eq!(check_irq_line(false), Err(Errno::Enxio));
    assert_eq!(check_irq_line(true), Ok(()));
}

#[test]
fn split_mode_irq_line_reaches_msi_routes_only() {
    let t = build(&[msi_entry(3)], SPLIT).unwrap();
    let mut x = Targets {
        log: Vec::new(),
        pic: 1,
        ioapic: 1,
        msi: 1,
    };
    assert_eq!(t.set_irq(3, true, false, &mut x), 1);
    assert_eq!(x.log, [('m', 0x30, true)]);
    assert_eq!(t.set_irq(4, true, false, &mut x), -1);
}

#[test]
fn random_tables_never_panic() {
    let mut r = crate::ioapic::tests::Rng(0xdead_beef_cafe_f00d);
    for _ in 0..2000 {
        let n = (r.next() % 64) as usize;
        let ues: Vec<KvmIrqRoutingEntry> = (0..n)
            .map(|_| {
                let x = r.next();
                let mut e = KvmIrqRoutingEntry {
                    gsi: (x % 40) as u32 + if x & 1 << 50 != 0 { 5000 } else { 0 },
                    type_: (x >> 8) as u32 % 4,
                    flags: if x & 1 << 51 != 0 {
                        (x >> 12) as u32 % 3
                    } else {
                        0
                    },
                    ..KvmIrqRoutingEntry::default()
                };
                e.set_word(0, (x >> 16) as u32 % 4);
                e.set_word(1, (x >> 24) as u32 % 30);
                e.set_word(2, r.next() as u32);
                e
            })
            .collect();
        let ctx = RoutingCtx {
            split: r.next() & 1 != 0,
            x2apic_format: r.next() & 1 != 0,
        };
        if let Ok(t) = build(&ues, ctx) {
            for g in 0..41 {
                let l = t.lookup(g);
                assert!(l.len() <= 3);
                assert!(l.iter().all(|e| e.gsi == g));
            }
            let mut h = [0u64; 4];
            t.scan_ioapic_routes(
                r.next() as u32,
                ctx.x2apic_format,
                &mut h,
                &mut |_, _| true,
                &mut |_| false,
            );
        }
    }
}

#[test]
fn split_scan_includes_level_msi_routes_with_delivery_mode_3() {
    // Upstream kvm_scan_ioapic_routes decodes every MSI route with kvm_set_msi_irq, whatever
    // its delivery mode (3 is APIC_DM_REMRD there), and intercepts the EOI of a level one.
    let t = build(
        &[KvmIrqRoutingEntry::msi(
            2,
            0xfee0_1000,
            0,
            0x8000 | 0x300 | 0x57,
        )],
        SPLIT,
    )
    .unwrap();
    let mut h = [0u64; 4];
    t.scan_ioapic_routes(24, false, &mut h, &mut |d, l| d == 1 && !l, &mut |_| false);
    assert_eq!(h, [0, 1 << (0x57 - 64), 0, 0]);
}
