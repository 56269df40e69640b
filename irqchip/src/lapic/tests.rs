// SPDX-License-Identifier: GPL-2.0-only
//! Host tests of the local APIC model against upstream 6.12's values and rules.

use super::regs::*;
use super::*;
use crate::irq::{DeliveryMode, LapicIrq, Shorthand};

const NOW: Now = Now {
    ns: 1_000_000_000,
    guest_tsc: 5_000_000_000,
    tsc_khz: 2_000_000,
};

fn new_apic(id: u32, bsp: bool) -> (Lapic, Pir) {
    let pir = Pir::new();
    let mut a = Lapic::new(id, VmApicConfig::default());
    a.set_cpuid(true, true);
    let _ = a.reset(false, bsp, true, &pir);
    (a, pir)
}

fn enabled(id: u32) -> (Lapic, Pir) {
    let (mut a, p) = new_apic(id, id == 0);
    a.reg_write(APIC_SPIV, 0x1ff, &NOW).unwrap();
    (a, p)
}

fn to_x2apic(a: &mut Lapic) {
    let base = a.apic_base() | X2APIC_ENABLE;
    a.set_base(base, false, 48).unwrap();
}

fn fixed(vector: u8, dest: u32, logical: bool) -> LapicIrq {
    LapicIrq {
        vector,
        delivery_mode: DeliveryMode::Fixed,
        dest_logical: logical,
        level_triggered: false,
        level: true,
        shorthand: Shorthand::None,
        dest_id: dest,
        msi_redir_hint: false,
    }
}

#[test]
fn reset_values_bsp_and_ap() {
    let (a, _) = new_apic(0, true);
    assert_eq!(a.apic_base(), 0xfee0_0900);
    assert_eq!(a.reg(APIC_ID), 0);
    assert_eq!(a.reg(APIC_LVR), 0x0005_0014);
    assert_eq!(a.reg(APIC_LVTT), 0x1_0000);
    assert_eq!(a.reg(APIC_LVTTHMR), 0x1_0000);
    assert_eq!(a.reg(APIC_LVTPC), 0x1_0000);
    assert_eq!(a.reg(APIC_LVT0), 0x700, "LINT0_REENABLED quirk on the BSP");
    assert_eq!(a.reg(APIC_LVT1), 0x1_0000);
    assert_eq!(a.reg(APIC_LVTERR), 0x1_0000);
    assert_eq!(a.reg(APIC_LVTCMCI), 0, "no CMCI entry without MCG_CMCI_P");
    assert_eq!(a.reg(APIC_DFR), 0xffff_ffff);
    assert_eq!(a.reg(APIC_SPIV), 0xff);
    assert!(!a.sw_enabled());
    for r in [
        APIC_TASKPRI,
        APIC_PROCPRI,
        APIC_LDR,
        APIC_ESR,
        APIC_ICR,
        APIC_ICR2,
    ] {
        assert_eq!(a.reg(r), 0, "reg {r:#x}");
    }
    assert_eq!(a.reg(APIC_TDCR), 0);
    assert!(a.accept_pic_intr());

    let (b, _) = new_apic(3, false);
    assert_eq!(b.apic_base(), 0xfee0_0800);
    assert_eq!(b.reg(APIC_ID), 3 << 24);
    assert_eq!(b.reg(APIC_LVT0), 0x1_0000);
    assert!(!b.accept_pic_intr());
}

#[test]
fn version_register_variants() {
    let pir = Pir::new();
    let mut a = Lapic::new(0, VmApicConfig::default());
    let _ = a.reset(false, true, true, &pir);
    assert_eq!(a.reg(APIC_LVR), 0x0005_0014);
    a.set_mcg_cmci(true);
    assert_eq!(a.reg(APIC_LVR), 0x0006_0014);
    assert_eq!(a.reg(APIC_LVTCMCI), APIC_LVT_MASKED);
    // Split irqchip (no in-kernel IOAPIC) + x2APIC in CPUID: directed EOI advertised.
    let mut s = Lapic::new(
        0,
        VmApicConfig {
            ioapic_in_kernel: false,
            bus_cycle_ns: 1,
        },
    );
    s.set_cpuid(true, true);
    let _ = s.reset(false, true, true, &pir);
    assert_eq!(s.reg(APIC_LVR), 0x0105_0014);
    s.reg_write(APIC_SPIV, 0x11ff, &NOW).unwrap();
    assert_eq!(s.reg(APIC_SPIV), 0x11ff);
    // Without the LVR bit, SPIV bit 12 is not writable.
    a.reg_write(APIC_SPIV, 0x11ff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_SPIV), 0x1ff);
}

#[test]
fn apic_base_transitions() {
    let (mut a, _) = new_apic(1, false);
    assert!(a.set_base(0xfee0_0800, false, 48).is_ok());
    // Reserved bits 7:0, 9, above MAXPHYADDR.
    assert_eq!(a.set_base(0xfee0_0801, false, 48), Err(Fault));
    assert_eq!(a.set_base(0xfee0_0a00, false, 48), Err(Fault));
    assert_eq!(a.set_base(1 << 48 | 0xfee0_0800, false, 48), Err(Fault));
    assert!(a.set_base(1 << 47 | 0xfee0_0800, false, 48).is_ok());
    assert!(a.set_base(0xfee0_0800, false, 48).is_ok());
    // BSP bit is writable.
    assert!(a.set_base(0xfee0_0900, false, 48).is_ok());
    assert!(a.set_base(0xfee0_0800, false, 48).is_ok());
    // EXTD without EN: invalid.
    assert_eq!(a.set_base(0xfee0_0400, true, 48), Err(Fault));
    // xAPIC -> x2APIC; x2APIC -> xAPIC refused for the guest, allowed to the host.
    let fx = a.set_base(0xfee0_0c00, false, 48).unwrap();
    assert!(fx.mode_changed && fx.dest_changed);
    assert_eq!(a.reg(APIC_ID), 1);
    assert_eq!(a.reg(APIC_LDR), 0x2);
    assert_eq!(a.set_base(0xfee0_0800, false, 48), Err(Fault));
    assert!(a.set_base(0xfee0_0800, true, 48).is_ok());
    assert_eq!(a.reg(APIC_ID), 1 << 24);
    // x2APIC -> disabled -> x2APIC: the second step only for the host.
    assert!(a.set_base(0xfee0_0c00, false, 48).is_ok());
    assert!(a.set_base(0xfee0_0000, false, 48).is_ok());
    assert!(!a.hw_enabled());
    assert_eq!(a.set_base(0xfee0_0c00, false, 48), Err(Fault));
    assert!(a.set_base(0xfee0_0c00, true, 48).is_ok());
    // EXTD needs x2APIC in CPUID.
    let pir = Pir::new();
    let mut b = Lapic::new(2, VmApicConfig::default());
    let _ = b.reset(false, false, true, &pir);
    assert_eq!(b.set_base(0xfee0_0c00, true, 48), Err(Fault));
}

#[test]
fn xapic_id_ldr_dfr_writes() {
    let (mut a, _) = enabled(5);
    a.reg_write(APIC_ID, 0x0712_3456, &NOW).unwrap();
    assert_eq!(a.reg(APIC_ID), 0x0700_0000);
    a.reg_write(APIC_LDR, 0x1234_5678, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LDR), 0x1200_0000);
    a.reg_write(APIC_DFR, 0, &NOW).unwrap();
    assert_eq!(a.reg(APIC_DFR), 0x0fff_ffff);
    let d = a.dest_info();
    assert_eq!(d.xapic_id(), 7);
    assert_eq!(d.logical_id(), 0x12);
    assert_eq!(d.dfr(), DfrModel::Cluster);
    assert!(d.enabled() && !d.x2apic_mode());
}

#[test]
fn ppr_cases() {
    let (mut a, _) = enabled(0);
    // TPR only.
    a.reg_write(APIC_TASKPRI, 0x35, &NOW).unwrap();
    assert_eq!(a.mmio_read(APIC_PROCPRI, 4, 0), Some(0x35));
    // ISR class above TPR class: PPR = ISR & 0xf0.
    assert!(a.accept_vector(0x61, false));
    assert_eq!(a.ack(), Some(0x61));
    assert_eq!(a.ppr(), 0x60);
    // TPR class equal to ISR class: PPR = TPR.
    a.reg_write(APIC_TASKPRI, 0x6a, &NOW).unwrap();
    assert_eq!(a.ppr(), 0x6a);
    // TPR class above: PPR = TPR.
    a.reg_write(APIC_TASKPRI, 0x7f, &NOW).unwrap();
    assert_eq!(a.ppr(), 0x7f);
    a.reg_write(APIC_TASKPRI, 0, &NOW).unwrap();
    assert_eq!(a.ppr(), 0x60);
    a.reg_write(APIC_EOI, 0, &NOW).unwrap();
    assert_eq!(a.ppr(), 0);
    // TPR write masks to 8 bits; CR8 view.
    a.reg_write(APIC_TASKPRI, 0x1234_56c7, &NOW).unwrap();
    assert_eq!(a.reg(APIC_TASKPRI), 0xc7);
    assert_eq!(a.cr8(), 0xc);
    let _ = a.set_cr8(0x13);
    assert_eq!(a.reg(APIC_TASKPRI), 0x30);
}

#[test]
fn irr_isr_ack_eoi_nesting() {
    let (mut a, pir) = enabled(0);
    // Same priority class as the in-service vector is blocked.
    assert!(pir.post(a.dest_info(), &fixed(0x51, 0, false)));
    let _ = a.sync_pir(&pir, &NOW);
    assert_eq!(a.ack(), Some(0x51));
    assert!(a.accept_vector(0x5f, false));
    assert_eq!(a.has_interrupt(), None);
    // Higher class nests.
    assert!(a.accept_vector(0x80, true));
    assert_eq!(a.ack(), Some(0x80));
    assert_eq!(a.highest_isr(), Some(0x80));
    let e = a.eoi().unwrap();
    assert_eq!(
        e,
        Eoi {
            vector: 0x80,
            level: true,
            directed: false
        }
    );
    let e = a.eoi().unwrap();
    assert_eq!(e.vector, 0x51);
    assert!(!e.level);
    assert_eq!(a.ack(), Some(0x5f));
    let fx = a.reg_write(APIC_EOI, 0, &NOW).unwrap();
    assert_eq!(fx.eoi.map(|e| e.vector), Some(0x5f));
    // EOI with nothing in service.
    assert_eq!(a.reg_write(APIC_EOI, 0, &NOW).unwrap().eoi, None);
    // Disabled APIC (EN=0): no interrupt.
    assert!(a.accept_vector(0x90, false));
    a.set_base(0xfee0_0100, false, 48).unwrap();
    assert_eq!(a.has_interrupt(), None);
}

#[test]
fn sw_disabled_drops_fixed_and_masks_lvts() {
    let (mut a, pir) = new_apic(0, true);
    assert!(!pir.post(a.dest_info(), &fixed(0x40, 0, false)));
    assert!(!a.accept_vector(0x40, false));
    // LVT writes while software-disabled are forced masked.
    a.reg_write(APIC_LVT1, 0x400, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVT1), 0x1_0400);
    a.reg_write(APIC_SPIV, 0x1ff, &NOW).unwrap();
    a.reg_write(APIC_LVT1, 0x400, &NOW).unwrap();
    a.reg_write(APIC_LVTT, 0x2_00ef, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVTT), 0x2_00ef);
    // Software disable masks every LVT.
    a.reg_write(APIC_SPIV, 0xff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVT1), 0x1_0400);
    assert_eq!(a.reg(APIC_LVTT), 0x3_00ef);
    assert_eq!(a.reg(APIC_LVT0), 0x1_0700);
}

#[test]
fn lvt_write_masks() {
    let (mut a, _) = enabled(0);
    a.reg_write(APIC_LVT0, 0xffff_ffff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVT0), 0x1_f7ff);
    a.reg_write(APIC_LVTERR, 0xffff_ffff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVTERR), 0x1_10ff);
    a.reg_write(APIC_LVTPC, 0xffff_ffff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVTPC), 0x1_17ff);
    a.reg_write(APIC_LVTT, 0xffff_ffff, &NOW).unwrap();
    assert_eq!(a.reg(APIC_LVTT), 0x7_10ff);
    // No CMCI entry: write refused.
    assert_eq!(a.reg_write(APIC_LVTCMCI, 0, &NOW), Err(Fault));
}

#[test]
fn mmio_sizes_and_reserved() {
    let (mut a, _) = enabled(0x12);
    assert_eq!(a.mmio_read(APIC_ID, 4, 0), Some(0x1200_0000));
    assert_eq!(a.mmio_read(APIC_ID + 3, 1, 0), Some(0x12));
    assert_eq!(a.mmio_read(APIC_ID + 2, 2, 0), Some(0x1200));
    assert_eq!(a.mmio_read(APIC_ID + 2, 4, 0), None, "crosses the register");
    assert_eq!(a.mmio_read(APIC_ID + 4, 4, 0), None);
    assert_eq!(a.mmio_read(APIC_ID, 3, 0), None);
    assert_eq!(a.mmio_read(APIC_ID, 8, 0), None);
    assert_eq!(a.mmio_read(0x10, 4, 0), None, "reserved");
    assert_eq!(a.mmio_read(APIC_EOI, 4, 0), None, "write-only");
    assert_eq!(a.mmio_read(APIC_RRR, 4, 0), None);
    assert_eq!(a.mmio_read(APIC_SELF_IPI, 4, 0), None);
    assert_eq!(a.mmio_read(0x400, 4, 0), None);
    assert_eq!(a.mmio_read(0xff0, 4, 0), None);
    assert_eq!(a.mmio_read(APIC_ARBPRI, 4, 0), Some(0));
    assert_eq!(a.mmio_read(APIC_DFR, 4, 0), Some(0xffff_ffff));
    assert_eq!(a.mmio_read(APIC_LVTCMCI, 4, 0), None);
    // Unaligned or narrow writes are dropped.
    let _ = a.mmio_write(APIC_TASKPRI, 2, 0x20, &NOW);
    let _ = a.mmio_write(APIC_TASKPRI + 4, 4, 0x20, &NOW);
    assert_eq!(a.reg(APIC_TASKPRI), 0);
    let _ = a.mmio_write(APIC_TASKPRI, 4, 0x20, &NOW);
    assert_eq!(a.reg(APIC_TASKPRI), 0x20);
    // Writes to read-only registers change nothing.
    let _ = a.mmio_write(APIC_LVR, 4, 0, &NOW);
    assert_eq!(a.reg(APIC_LVR), 0x0005_0014);
    assert!(a.mmio_active());
    to_x2apic(&mut a);
    assert!(!a.mmio_active());
}

#[test]
fn xapic_icr_writes() {
    let (mut a, _) = enabled(0);
    a.reg_write(APIC_ICR2, 0x0312_3456, &NOW).unwrap();
    assert_eq!(a.reg(APIC_ICR2), 0x0300_0000);
    let fx = a
        .reg_write(APIC_ICR, 0x0000_d4ec | APIC_ICR_BUSY, &NOW)
        .unwrap();
    assert_eq!(a.reg(APIC_ICR), 0xc4ec);
    let irq = fx.ipi.unwrap();
    assert_eq!(irq.vector, 0xec);
    assert_eq!(irq.delivery_mode, DeliveryMode::Nmi);
    assert!(irq.level && irq.level_triggered && !irq.dest_logical);
    assert_eq!(irq.dest_id, 3);
    let fx = a.reg_write(APIC_ICR, 0x000c_0830, &NOW).unwrap();
    let irq = fx.ipi.unwrap();
    assert_eq!(irq.shorthand, Shorthand::AllExcludingSelf);
    assert!(irq.dest_logical);
    // Remote read (mode 3): sent like any IPI (upstream's PV-unhalt kick path).
    let irq = a.reg_write(APIC_ICR, 0x330, &NOW).unwrap().ipi.unwrap();
    assert_eq!(irq.delivery_mode, DeliveryMode::RemoteRead);
    assert_eq!(a.reg(APIC_ICR), 0x330);
}

#[test]
fn x2apic_msrs() {
    let (mut a, _) = enabled(0x45);
    assert_eq!(a.x2apic_read(0x802, 0), Err(Fault), "not in x2APIC mode");
    to_x2apic(&mut a);
    let x = |m: u32| 0x800 + (m >> 4);
    assert_eq!(a.x2apic_read(x(APIC_ID), 0), Ok(0x45));
    assert_eq!(a.x2apic_read(x(APIC_LDR), 0), Ok(0x4_0020));
    assert_eq!(a.x2apic_read(x(APIC_LVR), 0), Ok(0x0005_0014));
    // Read-only / absent / write-only registers.
    for r in [
        APIC_ID,
        APIC_LVR,
        APIC_PROCPRI,
        APIC_LDR,
        APIC_ISR,
        APIC_TMR,
        APIC_IRR,
        APIC_TMCCT,
    ] {
        assert_eq!(a.x2apic_write(x(r), 0, &NOW), Err(Fault), "write {r:#x}");
    }
    for r in [
        APIC_ARBPRI,
        APIC_DFR,
        APIC_ICR2,
        APIC_EOI,
        APIC_SELF_IPI,
        APIC_RRR,
    ] {
        assert_eq!(a.x2apic_read(x(r), 0), Err(Fault), "read {r:#x}");
    }
    assert_eq!(a.x2apic_write(x(APIC_DFR), 0, &NOW), Err(Fault));
    assert_eq!(a.x2apic_write(x(APIC_ICR2), 0, &NOW), Err(Fault));
    assert_eq!(a.x2apic_write(x(APIC_ARBPRI), 0, &NOW), Err(Fault));
    assert_eq!(a.x2apic_read(0x840, 0), Err(Fault));
    assert_eq!(a.x2apic_write(0x8ff, 0, &NOW), Err(Fault));
    assert_eq!(a.x2apic_read(0x7ff, 0), Err(Fault));
    // Bits 63:32 reserved except ICR.
    assert_eq!(a.x2apic_write(x(APIC_TASKPRI), 1 << 32, &NOW), Err(Fault));
    assert!(a.x2apic_write(x(APIC_TASKPRI), 0x20, &NOW).is_ok());
    // ESR: only 0.
    assert_eq!(a.x2apic_write(x(APIC_ESR), 1, &NOW), Err(Fault));
    assert!(a.x2apic_write(x(APIC_ESR), 0, &NOW).is_ok());
    // EOI accepts any 32-bit value.
    assert!(a.x2apic_write(x(APIC_EOI), 0, &NOW).is_ok());
    // ICR: 64 bits, reserved bits #GP, BUSY cleared, stored split.
    for bad in [1u64 << 13, 1 << 16, 1 << 17, 1 << 20, 1 << 31] {
        assert_eq!(a.x2apic_write(0x830, bad, &NOW), Err(Fault), "{bad:#x}");
    }
    let fx = a.x2apic_write(0x830, 0x1234_5678_0000_55ab, &NOW).unwrap();
    assert_eq!(a.x2apic_read(0x830, 0), Ok(0x1234_5678_0000_45ab));
    assert_eq!(a.reg(APIC_ICR2), 0x1234_5678);
    let irq = fx.ipi.unwrap();
    assert_eq!(irq.dest_id, 0x1234_5678);
    assert_eq!(irq.delivery_mode, DeliveryMode::Init);
    // SELF_IPI.
    let fx = a.x2apic_write(0x83f, 0x31, &NOW).unwrap();
    let irq = fx.ipi.unwrap();
    assert_eq!(irq.shorthand, Shorthand::SelfOnly);
    assert_eq!(irq.vector, 0x31);
    assert_eq!(irq.delivery_mode, DeliveryMode::Fixed);
    assert_eq!(a.x2apic_write(0x83f, 0x131, &NOW), Err(Fault));
    // ID stays read-only.
    assert_eq!(a.reg_write(APIC_ID, 0, &NOW), Err(Fault));
}

#[test]
fn lapic_state_round_trip_and_fixups() {
    let (mut a, _) = enabled(0x21);
    a.reg_write(APIC_ICR2, 0x0100_0000, &NOW).unwrap();
    let _ = a.reg_write(APIC_ICR, 0x300, &NOW);
    let s = a.get_state(&NOW, false).unwrap();
    assert_eq!(s.reg(APIC_ICR), 0x300);
    assert_eq!(s.reg(APIC_ID), 0x2100_0000);
    let mut b = Lapic::new(0x21, VmApicConfig::default());
    let _ = b.set_state(&s, &NOW, false).unwrap();
    assert_eq!(b.get_state(&NOW, false).unwrap(), s);
    assert!(b.sw_enabled());

    // x2APIC: legacy format reports ID << 24, 32-bit format the ID itself.
    to_x2apic(&mut a);
    let s = a.get_state(&NOW, false).unwrap();
    assert_eq!(s.reg(APIC_ID), 0x2100_0000);
    let s32 = a.get_state(&NOW, true).unwrap();
    assert_eq!(s32.reg(APIC_ID), 0x21);
    assert_eq!(s32.reg(APIC_LDR), 0x2_0002);
    // SET with 32-bit IDs: a different ID is EINVAL; legacy: ignored.
    let mut bad = s32;
    bad.set_reg(APIC_ID, 0x22);
    bad.set_reg(APIC_LDR, 0);
    assert_eq!(a.set_state(&bad, &NOW, true), Err(StateError));
    assert!(a.set_state(&bad, &NOW, false).is_ok());
    assert_eq!(a.reg(APIC_ID), 0x21);
    assert_eq!(a.reg(APIC_LDR), 0x2_0002);
}

#[test]
fn dest_matching_matrix() {
    let phys = |id: u8| DestInfo::new(id as u32, id, 0, DfrModel::Flat, true, true, false);
    let d = |target: DestInfo, dest: u32, logical: bool, sender: Sender| {
        match_dest(target, &fixed(0x30, dest, logical), sender, false)
    };
    let dev = Sender::Device;
    // Physical xAPIC.
    assert!(d(phys(3), 3, false, dev));
    assert!(!d(phys(3), 4, false, dev));
    assert!(d(phys(3), 0xff, false, dev));
    // Hotplug hack: an xAPIC APIC answers to its x2APIC ID above 0xff only.
    let hp = DestInfo::new(0x103, 0x03, 0, DfrModel::Flat, true, true, false);
    assert!(d(hp, 0x103, false, dev));
    assert!(d(hp, 3, false, dev));
    let moved = DestInfo::new(0x7, 0x09, 0, DfrModel::Flat, true, true, false);
    assert!(!d(moved, 7, false, dev));
    assert!(d(moved, 9, false, dev));
    // Logical flat.
    let flat = DestInfo::new(1, 1, 0x24, DfrModel::Flat, true, true, false);
    assert!(d(flat, 0x04, true, dev));
    assert!(d(flat, 0x21, true, dev));
    assert!(!d(flat, 0x42, true, dev));
    assert!(d(flat, 0xff, true, dev));
    // Logical cluster: cluster 2, member bit 1.
    let cl = DestInfo::new(1, 1, 0x21, DfrModel::Cluster, true, true, false);
    assert!(d(cl, 0x23, true, dev));
    assert!(!d(cl, 0x13, true, dev));
    assert!(!d(cl, 0x22, true, dev));
    assert!(d(cl, 0xff, true, dev));
    // Invalid DFR: logical never matches (except broadcast).
    let inv = DestInfo::new(1, 1, 0x21, DfrModel::Invalid, true, true, false);
    assert!(!d(inv, 0x21, true, dev));
    assert!(d(inv, 0xff, true, dev));
    // x2APIC physical and cluster.
    let x2 = DestInfo::new(0x23, 0, 0, DfrModel::Flat, true, true, true);
    assert!(d(x2, 0x23, false, dev));
    assert!(!d(x2, 0x24, false, dev));
    assert!(d(x2, 0xffff_ffff, false, dev));
    // LDR of 0x23 is cluster 2, bit 3.
    assert!(d(x2, 0x2_0008, true, dev));
    assert!(d(x2, 0x2_ffff, true, dev));
    assert!(!d(x2, 0x2_0004, true, dev));
    assert!(!d(x2, 0x1_0008, true, dev));
    // Broadcast quirk: a device's 0xff reaches x2APIC targets unless disabled; IPIs never.
    assert!(d(x2, 0xff, false, dev));
    assert!(!d(x2, 0xff, false, Sender::Apic { is_target: false }));
    assert!(!match_dest(x2, &fixed(0x30, 0xff, false), dev, true));
    // Shorthands.
    let mut irq = fixed(0x30, 0, false);
    irq.shorthand = Shorthand::SelfOnly;
    assert!(match_dest(
        phys(1),
        &irq,
        Sender::Apic { is_target: true },
        false
    ));
    assert!(!match_dest(
        phys(1),
        &irq,
        Sender::Apic { is_target: false },
        false
    ));
    irq.shorthand = Shorthand::AllExcludingSelf;
    assert!(!match_dest(
        phys(1),
        &irq,
        Sender::Apic { is_target: true },
        false
    ));
    assert!(match_dest(
        phys(1),
        &irq,
        Sender::Apic { is_target: false },
        false
    ));
    irq.shorthand = Shorthand::AllIncludingSelf;
    assert!(match_dest(
        phys(1),
        &irq,
        Sender::Apic { is_target: true },
        false
    ));
    assert!(!match_dest(DestInfo::NONE, &irq, Sender::Device, false));
    // DestInfo round trip.
    let v = DestInfo::new(
        0xdead_beef,
        0x12,
        0x34,
        DfrModel::Cluster,
        true,
        false,
        true,
    );
    let r = DestInfo::from_bits(v.to_bits());
    assert_eq!(
        (r.x2apic_id(), r.xapic_id(), r.logical_id(), r.dfr()),
        (0xdead_beef, 0x12, 0x34, DfrModel::Cluster)
    );
    assert!(r.present() && !r.sw_enabled() && !r.enabled() && r.x2apic_mode());
}

#[test]
fn lowest_priority_helpers() {
    let mut irq = fixed(0x33, 0xff, false);
    irq.delivery_mode = DeliveryMode::LowestPriority;
    assert!(is_lowest_priority(&irq));
    fixup_phys_broadcast_lowest(&mut irq);
    assert_eq!(irq.delivery_mode, DeliveryMode::Fixed);
    assert_eq!(lowest_priority_index(0x33, 4), Some(3));
    assert_eq!(lowest_priority_index(0x33, 0), None);
}

#[test]
fn timer_divide_decode() {
    let want = [
        (0x0, 2),
        (0x1, 4),
        (0x2, 8),
        (0x3, 16),
        (0x8, 32),
        (0x9, 64),
        (0xa, 128),
        (0xb, 1),
    ];
    for (tdcr, div) in want {
        assert_eq!(divide_count(tdcr), div, "tdcr {tdcr:#x}");
    }
    assert!(valid_bus_cycle_ns(1));
    assert!(!valid_bus_cycle_ns(0));
    assert!(valid_bus_cycle_ns(u64::MAX / (u32::MAX as u64 * 128)));
    assert!(!valid_bus_cycle_ns(u64::MAX / (u32::MAX as u64 * 128) + 1));
}

#[test]
fn oneshot_timer() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_LVTT, 0xec, &NOW).unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap(); // divide by 1
    let fx = a.reg_write(APIC_TMICT, 1_000_000, &NOW).unwrap();
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!("{:?}", fx.timer)
    };
    assert_eq!(at_ns, NOW.ns + 1_000_000);
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, NOW.ns + 250_000), Some(750_000));
    assert_eq!(a.mmio_read(APIC_TMICT, 4, 0), Some(1_000_000));
    // Expiry.
    pir.timer_expired(token);
    let later = Now::ns(at_ns + 10);
    let _ = a.sync_pir(&pir, &later);
    assert_eq!(a.ack(), Some(0xec));
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, later.ns), Some(0));
    // A stale token is ignored.
    pir.timer_expired(token);
    let _ = a.sync_pir(&pir, &later);
    assert_eq!(a.highest_irr(), None);
    // TMICT 0 stops without arming.
    let fx = a.reg_write(APIC_TMICT, 0, &NOW).unwrap();
    assert!(!matches!(fx.timer, TimerCmd::Arm { .. }));
}

#[test]
fn bus_cycle_and_divider() {
    let pir = Pir::new();
    let mut a = Lapic::new(
        0,
        VmApicConfig {
            ioapic_in_kernel: true,
            bus_cycle_ns: 40,
        },
    );
    a.set_cpuid(true, true);
    let _ = a.reset(false, true, true, &pir);
    a.reg_write(APIC_SPIV, 0x1ff, &NOW).unwrap();
    a.reg_write(APIC_LVTT, 0x20, &NOW).unwrap();
    a.reg_write(APIC_TDCR, 0x3, &NOW).unwrap(); // 16
    let fx = a.reg_write(APIC_TMICT, 1000, &NOW).unwrap();
    assert_eq!(a.timer_period_ns(), 1000 * 40 * 16);
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == NOW.ns + 640_000));
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, NOW.ns + 64_000), Some(900));
    // Changing the divider rescales the remaining time: 576000 ns left at /16 → /2.
    let t = Now::ns(NOW.ns + 64_000);
    let fx = a.reg_write(APIC_TDCR, 0x0, &t).unwrap();
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == t.ns + 72_000));
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, t.ns), Some(900));
}

#[test]
fn periodic_timer_clamp_and_rearm() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | 0x41, &NOW)
        .unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let fx = a.reg_write(APIC_TMICT, 1000, &NOW).unwrap();
    assert_eq!(a.timer_period_ns(), MIN_TIMER_PERIOD_NS);
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!()
    };
    assert_eq!(at_ns, NOW.ns + 200_000);
    pir.timer_expired(token);
    let fx = a.sync_pir(&pir, &Now::ns(at_ns + 5));
    let TimerCmd::Arm { at_ns: next, .. } = fx.timer else {
        panic!("{:?}", fx.timer)
    };
    assert_eq!(next, at_ns + 200_000);
    assert_eq!(a.ack(), Some(0x41));
    // Missed periods collapse into one interrupt; the target stays on the period grid
    // (upstream's hrtimer keeps re-arming itself every period).
    let TimerCmd::Arm { token, .. } = fx.timer else {
        panic!()
    };
    pir.timer_expired(token);
    let late = Now::ns(next + 10_000_000);
    let fx = a.sync_pir(&pir, &late);
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == next + 10_200_000));
    // Masked LVTT: the expiry stays latched, delivered on unmask.
    let _ = a.eoi();
    a.reg_write(
        APIC_LVTT,
        APIC_LVT_TIMER_PERIODIC | APIC_LVT_MASKED | 0x41,
        &NOW,
    )
    .unwrap();
    let _ = a.ack();
    let _ = a.eoi();
    assert_eq!(a.highest_irr(), None);
}

#[test]
fn tsc_deadline_timer() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_TMICT, 5000, &NOW).unwrap();
    a.reg_write(APIC_LVTT, APIC_LVT_TIMER_TSCDEADLINE | 0xef, &NOW)
        .unwrap();
    assert!(a.lvtt_tscdeadline());
    // Entering TSC-deadline mode clears TMICT; TMICT writes are ignored.
    assert_eq!(a.reg(APIC_TMICT), 0);
    a.reg_write(APIC_TMICT, 5000, &NOW).unwrap();
    assert_eq!(a.reg(APIC_TMICT), 0);
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, NOW.ns), Some(0));
    // 2 GHz: 2000 cycles = 1000 ns.
    let fx = a.set_tsc_deadline(NOW.guest_tsc + 2000, &NOW);
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!()
    };
    assert_eq!(at_ns, NOW.ns + 1000);
    assert_eq!(a.tsc_deadline(), NOW.guest_tsc + 2000);
    pir.timer_expired(token);
    let _ = a.sync_pir(&pir, &Now::ns(at_ns));
    assert_eq!(a.ack(), Some(0xef));
    assert_eq!(a.tsc_deadline(), 0);
    // A deadline in the past fires at once.
    let _ = a.eoi();
    let fx = a.set_tsc_deadline(NOW.guest_tsc - 1, &NOW);
    assert!(fx.recheck);
    let _ = a.sync_pir(&pir, &NOW);
    assert_eq!(a.ack(), Some(0xef));
    // Without TSC-deadline in CPUID the mode bit 18 is not writable.
    let (mut b, _) = enabled(1);
    b.set_cpuid(true, false);
    b.reg_write(APIC_LVTT, APIC_LVT_TIMER_TSCDEADLINE | 0xef, &NOW)
        .unwrap();
    assert_eq!(b.reg(APIC_LVTT), 0xef);
    assert_eq!(b.set_tsc_deadline(1, &NOW), Effects::default());
}

#[test]
fn lapic_state_restores_timer_from_tmcct() {
    let (mut a, _) = enabled(0);
    a.reg_write(APIC_LVTT, 0x30, &NOW).unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let _ = a.reg_write(APIC_TMICT, 100_000, &NOW).unwrap();
    let t = Now::ns(NOW.ns + 40_000);
    let s = a.get_state(&t, false).unwrap();
    assert_eq!(s.reg(APIC_TMCCT), 60_000);
    let mut b = Lapic::new(0, VmApicConfig::default());
    b.set_cpuid(true, true);
    let t2 = Now::ns(5_000_000_000);
    let fx = b.set_state(&s, &t2, false).unwrap();
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == t2.ns + 60_000));
    assert_eq!(b.reg(APIC_TMCCT), 0);
    assert_eq!(b.mmio_read(APIC_TMCCT, 4, t2.ns), Some(60_000));
}

#[test]
fn init_sipi_events() {
    let (ap, pir) = new_apic(1, false);
    let d = ap.dest_info();
    let mut init = fixed(0, 1, false);
    init.delivery_mode = DeliveryMode::Init;
    // INIT level de-assert is not accepted.
    init.level_triggered = true;
    init.level = false;
    assert!(!pir.post(d, &init));
    init.level_triggered = false;
    init.level = true;
    assert!(pir.post(d, &init));
    let mut sipi = fixed(0x9a, 1, false);
    sipi.delivery_mode = DeliveryMode::StartUp;
    assert!(pir.post(d, &sipi));
    // Blocked: SIPI dropped, INIT kept.
    let r = accept_events(&pir, KVM_MP_STATE_RUNNABLE, false, false);
    assert_eq!(r, InitSipi::default());
    assert!(pir.init_pending());
    let r = accept_events(&pir, KVM_MP_STATE_RUNNABLE, false, true);
    assert!(r.init);
    assert_eq!(r.mp_state, Some(KVM_MP_STATE_INIT_RECEIVED));
    assert_eq!(r.sipi_vector, None);
    assert!(pir.post(d, &sipi));
    let r = accept_events(&pir, KVM_MP_STATE_INIT_RECEIVED, false, true);
    assert_eq!(r.sipi_vector, Some(0x9a));
    assert_eq!(r.mp_state, Some(KVM_MP_STATE_RUNNABLE));
    // SIPI outside wait-for-SIPI is dropped; INIT clears a pending SIPI.
    assert!(pir.post(d, &sipi));
    assert!(pir.post(d, &init));
    let r = accept_events(&pir, KVM_MP_STATE_RUNNABLE, true, true);
    assert!(r.init);
    assert_eq!(r.mp_state, Some(KVM_MP_STATE_RUNNABLE));
    assert_eq!(r.sipi_vector, None);
    // NMI and SMI.
    let mut nmi = fixed(0, 1, false);
    nmi.delivery_mode = DeliveryMode::Nmi;
    assert!(pir.post(d, &nmi));
    assert!(pir.post(d, &nmi));
    assert_eq!(pir.take_nmis(), 2);
    let mut smi = nmi;
    smi.delivery_mode = DeliveryMode::Smi;
    assert!(pir.post(d, &smi));
    assert!(pir.take_smi());
    assert!(!pir.take_smi());
}

#[test]
fn init_reset_keeps_id_and_base() {
    let (mut a, pir) = enabled(4);
    a.reg_write(APIC_ID, 0x0900_0000, &NOW).unwrap();
    a.reg_write(APIC_TASKPRI, 0x40, &NOW).unwrap();
    assert!(a.accept_vector(0x80, false));
    let _ = a.reset(true, false, true, &pir);
    assert_eq!(a.reg(APIC_ID), 0x0900_0000);
    assert_eq!(a.apic_base(), 0xfee0_0800);
    assert_eq!(a.reg(APIC_TASKPRI), 0);
    assert_eq!(a.highest_irr(), None);
    assert!(!a.sw_enabled());
    // INIT in x2APIC mode keeps the x2APIC LDR.
    let (mut b, pir) = enabled(0x13);
    to_x2apic(&mut b);
    let _ = b.reset(true, false, true, &pir);
    assert_eq!(b.reg(APIC_LDR), 0x1_0008);
    assert!(b.x2apic_mode());
}

#[test]
fn lint0_extint_and_nmi_watchdog() {
    let (mut a, pir) = enabled(0);
    assert!(a.accept_pic_intr());
    let fx = a.reg_write(APIC_LVT0, APIC_DM_NMI, &NOW).unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(true));
    assert!(!a.accept_pic_intr());
    assert!(a.local_deliver(Lvt::Lint0, &pir));
    assert_eq!(pir.take_nmis(), 1);
    let fx = a
        .reg_write(APIC_LVT0, APIC_DM_NMI | APIC_LVT_MASKED, &NOW)
        .unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(false));
    assert!(!a.local_deliver(Lvt::Lint0, &pir));
    // Fixed LINT1 delivery goes into IRR, level-triggered sets TMR.
    a.reg_write(APIC_LVT1, 0x8000 | 0x66, &NOW).unwrap();
    assert!(a.local_deliver(Lvt::Lint1, &pir));
    assert_eq!(a.ack(), Some(0x66));
    assert!(a.eoi().unwrap().level);
}

#[test]
fn pir_merge_sets_and_clears_tmr() {
    let (mut a, pir) = enabled(0);
    let d = a.dest_info();
    let mut lvl = fixed(0xa1, 0, false);
    lvl.level_triggered = true;
    assert!(pir.post(d, &lvl));
    assert!(pir.has_pending());
    let fx = a.sync_pir(&pir, &NOW);
    assert!(fx.recheck);
    assert!(!pir.has_pending());
    assert_ne!(a.reg(APIC_TMR + 0x50) & (1 << 1), 0);
    assert_eq!(a.ack(), Some(0xa1));
    // Level-triggered with the level de-asserted: dropped.
    lvl.level = false;
    assert!(!pir.post(d, &lvl));
    // Edge on the same vector clears TMR.
    assert!(pir.post(d, &fixed(0xa1, 0, false)));
    let _ = a.sync_pir(&pir, &NOW);
    assert_eq!(a.reg(APIC_TMR + 0x50) & (1 << 1), 0);
    // Vector 255 and 0 land in the right words.
    pir.post_vector(255, false);
    pir.post_vector(0, false);
    let _ = a.sync_pir(&pir, &NOW);
    assert_eq!(a.reg(APIC_IRR + 0x70), 1 << 31);
    assert_eq!(a.reg(APIC_IRR) & 1, 1);
}

#[test]
fn mul_div_helper() {
    use super::timer::mul_u64_u32_div;
    assert_eq!(mul_u64_u32_div(2000, 1_000_000, 2_000_000), 1000);
    assert_eq!(mul_u64_u32_div(u64::MAX, 1, 1), u64::MAX);
    assert_eq!(mul_u64_u32_div(u64::MAX, 2, 1), u64::MAX);
    assert_eq!(mul_u64_u32_div(u64::MAX, 128, 128), u64::MAX);
    assert_eq!(mul_u64_u32_div(7, 3, 2), 10);
    assert_eq!(mul_u64_u32_div(5, 3, 0), 0);
    for a in [0u64, 1, 999, 123_456_789_012, 1 << 40] {
        for (m, d) in [
            (1u32, 1u32),
            (128, 2),
            (2, 128),
            (1_000_000, 2_500_000),
            (3, 7),
        ] {
            assert_eq!(
                mul_u64_u32_div(a, m, d) as u128,
                a as u128 * m as u128 / d as u128
            );
        }
    }
}

#[test]
fn nmi_watchdog_follows_raw_lvt0_write() {
    // Upstream counts LVT0's NMI mode from the written value even when the software-disabled
    // APIC stores it masked.
    let (mut a, _) = new_apic(1, false);
    let fx = a.reg_write(APIC_LVT0, APIC_DM_NMI, &NOW).unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(true));
    assert_eq!(a.reg(APIC_LVT0), APIC_DM_NMI | APIC_LVT_MASKED);
    // KVM_SET_LAPIC recomputes from the stored value.
    let s = a.get_state(&NOW, false).unwrap();
    let fx = a.set_state(&s, &NOW, false).unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(false));
}

#[test]
fn x2apic_msr_permission_sweep() {
    let (mut a, _) = enabled(0x11);
    to_x2apic(&mut a);
    let readable = |m: u32| {
        matches!(
            m,
            0x802 | 0x803 | 0x808 | 0x80a | 0x80d | 0x80f | 0x828 | 0x830
        ) || (0x810..=0x827).contains(&m)
            || (0x832..=0x839).contains(&m)
            || m == 0x83e
    };
    let writable = |m: u32| {
        matches!(
            m,
            0x808 | 0x80b | 0x80f | 0x828 | 0x830 | 0x838 | 0x83e | 0x83f
        ) || (0x832..=0x837).contains(&m)
    };
    for m in 0x800..=0x8ffu32 {
        assert_eq!(
            a.x2apic_read(m, NOW.ns).is_ok(),
            readable(m),
            "rdmsr {m:#x}"
        );
    }
    for m in 0x800..=0x8ffu32 {
        // Keep the APIC software-enabled so that the sweep sees every register.
        let v = if m == 0x80f { 0x1ff } else { 0 };
        assert_eq!(
            a.x2apic_write(m, v, &NOW).is_ok(),
            writable(m),
            "wrmsr {m:#x}"
        );
    }
    // With CMCI, LVTCMCI (0x82f) appears.
    a.set_mcg_cmci(true);
    assert_eq!(a.x2apic_read(0x82f, 0), Ok(APIC_LVT_MASKED as u64));
    assert!(a.x2apic_write(0x82f, 0x30, &NOW).is_ok());
    assert_eq!(a.reg(APIC_LVTCMCI), 0x30);
}

#[test]
fn xapic_mmio_readable_sweep() {
    let (mut a, _) = enabled(0);
    let readable = |o: u32| {
        matches!(
            o,
            0x20 | 0x30 | 0x80 | 0x90 | 0xa0 | 0xd0 | 0xe0 | 0xf0 | 0x280 | 0x300 | 0x310
        ) || (0x100..=0x270).contains(&o)
            || (0x320..=0x390).contains(&o)
            || o == 0x3e0
    };
    for o in (0..0x1000u32).step_by(0x10) {
        assert_eq!(
            a.mmio_read(o, 4, NOW.ns).is_some(),
            readable(o),
            "read {o:#x}"
        );
    }
}

/// xorshift64*: deterministic pseudo-random input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A step of random magnitude (up to 2^40).
    fn jump(&mut self) -> u64 {
        let bits = self.below(40);
        self.below(1 << bits)
    }
}

#[test]
fn random_register_traffic_never_panics_and_keeps_invariants() {
    let mut arms = 0;
    for seed in [0x9e37_79b9_7f4a_7c15, 1, 0xdead_beef, 0x1234_5678_9abc_def0] {
        arms += fuzz(seed);
    }
    assert!(arms > 1000, "the timer was armed {arms} times only");
}

/// One random run; returns how many times the timer was armed.
fn fuzz(seed: u64) -> usize {
    let mut arms = 0;
    let mut rng = Rng(seed);
    let pir = Pir::new();
    let id = 0x1f3;
    let mut a = Lapic::new(
        id,
        VmApicConfig {
            ioapic_in_kernel: false,
            bus_cycle_ns: 1 + rng.below(100),
        },
    );
    a.set_cpuid(true, true);
    let _ = a.reset(false, true, true, &pir);
    let mut now = Now {
        ns: 1,
        guest_tsc: 1,
        tsc_khz: 3_000_000,
    };
    let mut armed: Option<u64> = None;
    for _ in 0..300_000 {
        now.ns = now.ns.saturating_add(rng.jump());
        now.guest_tsc = now.guest_tsc.saturating_add(rng.jump());
        let fx = match rng.below(16) {
            0 => {
                let _ = a.mmio_read(rng.below(0x1000) as u32, rng.below(9) as u32, now.ns);
                Effects::default()
            }
            1 => {
                let off = if rng.below(2) == 0 {
                    rng.below(0x40) as u32 * 0x10
                } else {
                    rng.below(0x1000) as u32
                };
                let len = if rng.below(4) == 0 {
                    rng.below(9) as u32
                } else {
                    4
                };
                a.mmio_write(off, len, rng.next() as u32, &now)
            }
            2 => {
                let _ = a.x2apic_read(0x800 + rng.below(0x100) as u32, now.ns);
                Effects::default()
            }
            3 => {
                let v = if rng.below(2) == 0 {
                    rng.next() & 0xffff_ffff
                } else {
                    rng.next()
                };
                a.x2apic_write(0x800 + rng.below(0x40) as u32, v, &now)
                    .unwrap_or_default()
            }
            4 => {
                let base = [0xfee0_0800u64, 0xfee0_0c00, 0xfee0_0000, 0xfee0_0400, 0]
                    [rng.below(5) as usize]
                    | if rng.below(4) == 0 { rng.next() } else { 0 };
                a.set_base(base, rng.below(2) == 0, 1 + rng.below(63) as u8)
                    .unwrap_or_default()
            }
            5 => {
                let mut s = LapicState::default();
                for b in s.regs.iter_mut() {
                    *b = rng.next() as u8;
                }
                if rng.below(2) == 0 {
                    s.set_reg(APIC_ID, id);
                }
                a.set_state(&s, &now, rng.below(2) == 0).unwrap_or_default()
            }
            6 => {
                let mode = DeliveryMode::from_bits(rng.below(8) as u32);
                let irq = LapicIrq {
                    vector: rng.next() as u8,
                    delivery_mode: mode,
                    dest_logical: rng.below(2) == 0,
                    level_triggered: rng.below(2) == 0,
                    level: rng.below(2) == 0,
                    shorthand: Shorthand::None,
                    dest_id: rng.next() as u32,
                    msi_redir_hint: false,
                };
                let _ = match_dest(a.dest_info(), &irq, Sender::Device, rng.below(2) == 0);
                let _ = pir.post(a.dest_info(), &irq);
                a.sync_pir(&pir, &now)
            }
            7 => {
                if let Some(v) = a.ack() {
                    assert!(u32::from(v) & 0xf0 >= u32::from(a.reg(APIC_TASKPRI) as u8) & 0xf0);
                }
                Effects {
                    eoi: if rng.below(2) == 0 { a.eoi() } else { None },
                    ..Effects::default()
                }
            }
            8 => a.set_tsc_deadline(rng.next() >> rng.below(64), &now),
            9 => {
                if let Some(t) = armed.take() {
                    pir.timer_expired(t);
                }
                a.sync_pir(&pir, &now)
            }
            10 => a.reset(rng.below(2) == 0, rng.below(2) == 0, true, &pir),
            11 => a.set_cr8(rng.next()),
            12 => {
                let _ = a.local_deliver(Lvt::ALL[rng.below(7) as usize], &pir);
                let _ = pir.take_nmis();
                let _ = accept_events(&pir, rng.below(5) as u32, a.is_bsp(), true);
                Effects::default()
            }
            13 => {
                a.set_cpuid(rng.below(2) == 0, rng.below(2) == 0);
                a.set_mcg_cmci(rng.below(2) == 0);
                Effects::default()
            }
            14 => {
                let s = a.get_state(&now, rng.below(2) == 0).unwrap();
                let mut b = Lapic::new(id, VmApicConfig::default());
                b.set_cpuid(true, true);
                let _ = b.set_base(a.apic_base(), true, 52);
                let _ = b.set_state(&s, &now, false);
                Effects::default()
            }
            _ => {
                let _ = a.has_interrupt();
                let _ = a.tsc_deadline();
                let _ = a.accept_pic_intr();
                Effects::default()
            }
        };
        match fx.timer {
            TimerCmd::Arm { at_ns, token } => {
                assert!(at_ns >= now.ns, "armed in the past");
                arms += 1;
                armed = Some(token);
            }
            TimerCmd::Cancel => armed = None,
            TimerCmd::Keep => {}
        }
        if a.x2apic_mode() {
            assert_eq!(a.reg(APIC_ID), id);
            assert_eq!(a.reg(APIC_LDR), x2apic_ldr(id));
        }
        let ppr = a.ppr() as u32;
        let tpr = a.reg(APIC_TASKPRI);
        assert!(ppr == tpr & 0xff || ppr == a.highest_isr().map_or(0, u32::from) & 0xf0);
    }
    arms
}

#[test]
fn state_restore_timer_edge_cases() {
    let restore = |lvtt: u32, tmict: u32, tmcct: u32| {
        let (a, _) = enabled(0);
        let mut s = a.get_state(&NOW, false).unwrap();
        s.set_reg(APIC_LVTT, lvtt);
        s.set_reg(APIC_TDCR, 0xb);
        s.set_reg(APIC_TMICT, tmict);
        s.set_reg(APIC_TMCCT, tmcct);
        let mut b = Lapic::new(0, VmApicConfig::default());
        b.set_cpuid(true, true);
        let fx = b.set_state(&s, &NOW, false).unwrap();
        (b, fx)
    };
    // Periodic with TMCCT 0: a full period.
    let (b, fx) = restore(APIC_LVT_TIMER_PERIODIC | 0x20, 300_000, 0);
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == NOW.ns + 300_000));
    assert_eq!(b.timer_period_ns(), 300_000);
    // TMCCT above TMICT: restarted from TMICT.
    let (_, fx) = restore(0x20, 1000, 5000);
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == NOW.ns + 1000));
    // One-shot that already expired (TMCCT 0): armed at "now", i.e. it fires again, as
    // upstream's restore does.
    let (_, fx) = restore(0x20, 1000, 0);
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == NOW.ns));
    // TMICT 0: nothing armed.
    let (b, fx) = restore(0x20, 0, 0);
    assert!(!matches!(fx.timer, TimerCmd::Arm { .. }));
    assert_eq!(b.timer_period_ns(), 0);
    // TSC-deadline mode restores TMICT as 0 (mode switch) and arms nothing by itself.
    let (b, fx) = restore(APIC_LVT_TIMER_TSCDEADLINE | 0x20, 1000, 0);
    assert!(!matches!(fx.timer, TimerCmd::Arm { .. }));
    assert_eq!(b.reg(APIC_TMICT), 0);
}

#[test]
fn software_disable_drops_pending_timer() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_LVTT, 0x20 | APIC_LVT_MASKED, &NOW)
        .unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let fx = a.reg_write(APIC_TMICT, 100, &NOW).unwrap();
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!()
    };
    pir.timer_expired(token);
    let _ = a.sync_pir(&pir, &Now::ns(at_ns));
    assert_eq!(a.highest_irr(), None, "masked: latched, not delivered");
    // Unmasking delivers the latched expiry.
    a.reg_write(APIC_LVTT, 0x20, &NOW).unwrap();
    let _ = a.sync_pir(&pir, &Now::ns(at_ns));
    assert_eq!(a.ack(), Some(0x20));
    let _ = a.eoi();
    // Latched again, then software disable forgets it.
    let fx = a.reg_write(APIC_TMICT, 100, &NOW).unwrap();
    let TimerCmd::Arm { token, .. } = fx.timer else {
        panic!()
    };
    a.reg_write(APIC_LVTT, 0x20 | APIC_LVT_MASKED, &NOW)
        .unwrap();
    pir.timer_expired(token);
    let _ = a.sync_pir(&pir, &Now::ns(at_ns));
    a.reg_write(APIC_SPIV, 0xff, &NOW).unwrap();
    a.reg_write(APIC_SPIV, 0x1ff, &NOW).unwrap();
    a.reg_write(APIC_LVTT, 0x20, &NOW).unwrap();
    let _ = a.sync_pir(&pir, &Now::ns(at_ns));
    assert_eq!(a.highest_irr(), None);
}

#[test]
fn periodic_divider_change_and_mode_switch() {
    let (mut a, _) = enabled(0);
    a.reg_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | 0x20, &NOW)
        .unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let _ = a.reg_write(APIC_TMICT, 1_000_000, &NOW).unwrap();
    // Half-way, divide by 2: the remaining 500 µs become 1 ms; the period doubles.
    let t = Now::ns(NOW.ns + 500_000);
    let fx = a.reg_write(APIC_TDCR, 0x0, &t).unwrap();
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == t.ns + 1_000_000));
    assert_eq!(a.timer_period_ns(), 2_000_000);
    // The same divider again changes nothing.
    assert_eq!(
        a.reg_write(APIC_TDCR, 0x0, &t).unwrap().timer,
        TimerCmd::Keep
    );
    // Periodic -> one-shot keeps running; one-shot -> TSC deadline stops and clears TMICT.
    let fx = a.reg_write(APIC_LVTT, 0x20, &t).unwrap();
    assert_eq!(fx.timer, TimerCmd::Keep);
    assert_eq!(a.reg(APIC_TMICT), 1_000_000);
    let fx = a
        .reg_write(APIC_LVTT, APIC_LVT_TIMER_TSCDEADLINE | 0x20, &t)
        .unwrap();
    assert_eq!(fx.timer, TimerCmd::Cancel);
    assert_eq!(a.reg(APIC_TMICT), 0);
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, t.ns), Some(0));
}

#[test]
fn self_ipi_shorthand_reaches_only_the_sender() {
    let (mut a, pir) = enabled(2);
    to_x2apic(&mut a);
    let fx = a.x2apic_write(0x83f, 0x55, &NOW).unwrap();
    let irq = fx.ipi.unwrap();
    let me = a.dest_info();
    assert!(match_dest(
        me,
        &irq,
        Sender::Apic { is_target: true },
        false
    ));
    assert!(!match_dest(
        me,
        &irq,
        Sender::Apic { is_target: false },
        false
    ));
    assert!(pir.post(me, &irq));
    let _ = a.sync_pir(&pir, &NOW);
    assert_eq!(a.ack(), Some(0x55));
    // SELF_IPI does not exist in xAPIC mode.
    let (mut b, _) = enabled(3);
    assert_eq!(b.reg_write(APIC_SELF_IPI, 0x55, &NOW), Err(Fault));
}

#[test]
fn latched_init_and_sipi_received_restore() {
    let pir = Pir::new();
    pir.post_sipi(0x12);
    assert_eq!(pir.take_sipi(), Some(0x12));
    assert_eq!(pir.take_sipi(), None);
    assert_eq!(pir.sipi_vector(), 0x12);
    // KVM_SET_MP_STATE(SIPI_RECEIVED): INIT_RECEIVED + a pending SIPI with the last vector.
    pir.set_sipi_pending();
    let r = accept_events(&pir, KVM_MP_STATE_INIT_RECEIVED, false, true);
    assert_eq!(r.sipi_vector, Some(0x12));
    // KVM_SET_VCPU_EVENTS latched_init.
    pir.set_init_latched(true);
    assert!(pir.init_pending());
    pir.set_init_latched(false);
    assert!(!pir.init_or_sipi_pending());
    pir.post_init();
    pir.clear();
    assert!(!pir.has_pending());
    assert_eq!(pir.sipi_vector(), 0x12);
}

#[test]
fn concurrent_posters_lose_nothing() {
    extern crate std;
    use std::sync::Arc;
    use std::thread;
    // Four senders post disjoint vector sets (odd vectors level-triggered) while the owner
    // merges, acknowledges and EOIs; every vector must arrive once with its trigger mode.
    let (mut a, _) = enabled(0);
    let pir = Arc::new(Pir::new());
    let d = a.dest_info();
    let senders: std::vec::Vec<_> = (0..4u8)
        .map(|t| {
            let pir = Arc::clone(&pir);
            thread::spawn(move || {
                for v in (32u16..256).filter(|v| *v as u8 % 4 == t) {
                    let mut irq = fixed(v as u8, 0, false);
                    irq.level_triggered = v % 2 == 1;
                    assert!(pir.post(d, &irq));
                    thread::yield_now();
                }
            })
        })
        .collect();
    let mut seen = [false; 256];
    let mut count = 0;
    while count < 224 {
        let _ = a.sync_pir(&pir, &NOW);
        while let Some(v) = a.ack() {
            assert!(!seen[v as usize], "vector {v} twice");
            seen[v as usize] = true;
            count += 1;
            let e = a.eoi().unwrap();
            assert_eq!(e.vector, v);
            assert_eq!(e.level, v % 2 == 1, "TMR of {v}");
        }
        thread::yield_now();
    }
    for s in senders {
        s.join().unwrap();
    }
    assert!(!pir.has_pending());
}

/// The values xapic_state_test's `test_icr` writes.
fn xapic_state_test_icr_values(vcpu_id: u64, x2apic: bool) -> impl Iterator<Item = u64> {
    const BUSY: u64 = APIC_ICR_BUSY as u64;
    let base1 = (APIC_DEST_SELF | APIC_INT_ASSERT) as u64;
    let base2 = APIC_INT_ASSERT as u64;
    let a = (0..=0xffu64).map(move |i| base1 | i);
    let b = (0..=0xffu64).map(move |i| base2 | i);
    let c = (0..0xffu64)
        .filter(move |i| *i != vcpu_id)
        .flat_map(move |i| (0..8u64).map(move |j| i << 56 | base2 | 0xff | j << 8));
    let d = (0..8u64).map(|i| (APIC_DEST_ALLBUT | APIC_INT_ASSERT) as u64 | i << 8);
    let e = [0xa5a5_a5a5_a5a5_a5a5u64, 0x5a5a_5a5a_5a5a_5a5a, u64::MAX]
        .into_iter()
        .map(|v| v & !0x700);
    a.chain(b).chain(c).chain(d).chain(e).flat_map(move |v| {
        let with_busy = (!x2apic).then_some(v | BUSY);
        with_busy.into_iter().chain(core::iter::once(v & !BUSY))
    })
}

#[test]
fn xapic_state_test_icr_flow() {
    for x2apic in [false, true] {
        let (mut a, pir) = new_apic(0, true);
        a.set_cpuid(x2apic, true);
        a.reg_write(APIC_SPIV, 0x1ff, &NOW).unwrap();
        if x2apic {
            to_x2apic(&mut a);
        }
        for val in xapic_state_test_icr_values(0, x2apic) {
            // Host: GET_LAPIC, IRR[0..2] = val, SET_LAPIC.
            let mut s = a.get_state(&NOW, false).unwrap();
            s.set_reg(APIC_IRR, val as u32);
            s.set_reg(APIC_IRR + 0x10, (val >> 32) as u32);
            a.set_state(&s, &NOW, false).unwrap();
            // Guest (interrupts off): read IRR, write ICR.
            let fx = if x2apic {
                let lo = a.x2apic_read(0x820, NOW.ns).unwrap();
                let hi = a.x2apic_read(0x821, NOW.ns).unwrap();
                let v = lo | hi << 32;
                assert_eq!(v, val);
                match a.x2apic_write(0x830, v, &NOW) {
                    Err(Fault) => {
                        assert_ne!(v & X2APIC_ICR_RESERVED_BITS, 0);
                        None
                    }
                    Ok(fx) => {
                        assert_eq!(a.x2apic_read(0x830, NOW.ns), Ok(v));
                        Some(fx)
                    }
                }
            } else {
                let lo = a.mmio_read(APIC_IRR, 4, NOW.ns).unwrap() as u64;
                let hi = a.mmio_read(APIC_IRR + 0x10, 4, NOW.ns).unwrap() as u64;
                let v = lo | hi << 32;
                let _ = a.mmio_write(APIC_ICR2, 4, (v >> 32) as u32, &NOW);
                Some(a.mmio_write(APIC_ICR, 4, v as u32, &NOW))
            };
            if let Some(irq) = fx.and_then(|f| f.ipi) {
                let me = [a.dest_info()];
                let _ = deliver_irq(
                    &irq,
                    Some(0),
                    1,
                    |i| me[i],
                    DeliveryCtx::default(),
                    |_, irq| pir.post(me[0], irq) as i32,
                );
                let _ = a.sync_pir(&pir, &NOW);
                // A self-INIT would reset the vCPU; the test never sends one to itself.
                assert!(!pir.init_pending(), "{val:#x}");
            }
            // Host: GET_LAPIC and compare ICR/ICR2 as the test does.
            let s = a.get_state(&NOW, false).unwrap();
            let icr = s.reg(APIC_ICR) as u64 | (s.reg(APIC_ICR2) as u64) << 32;
            if !x2apic {
                let want = val & (0xffff_ffff | 0xff << 56);
                assert_eq!(icr, want & !(APIC_ICR_BUSY as u64), "{val:#x}");
            } else if val & X2APIC_ICR_RESERVED_BITS == 0 {
                assert_eq!(icr, val, "{val:#x}");
            }
        }
    }
}

#[test]
fn xapic_state_test_apic_id_flows() {
    // test_apic_id: 32-bit IDs, APIC_BASE toggled by the host.
    for id in 0..3u32 {
        let (mut a, _) = new_apic(id, id == 0);
        let base = a.apic_base();
        assert_ne!(base & MSR_IA32_APICBASE_ENABLE, 0);
        assert_eq!(base & X2APIC_ENABLE, 0);
        for b in [base, base | X2APIC_ENABLE, base] {
            a.set_base(b, true, 48).unwrap();
            let s = a.get_state(&NOW, true).unwrap();
            let want = if b & X2APIC_ENABLE != 0 { id } else { id << 24 };
            assert_eq!(s.reg(APIC_ID), want);
        }
    }
    // test_x2apic_id: legacy format, an all-zero state never changes the x2APIC ID.
    let (mut a, _) = new_apic(0, true);
    a.set_base(MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE, true, 48)
        .unwrap();
    let mut s = LapicState::default();
    for _ in 0..=0xff {
        a.set_state(&s, &NOW, false).unwrap();
        s = a.get_state(&NOW, false).unwrap();
        assert_eq!(s.reg(APIC_ID), 0);
    }
    let (mut b, _) = new_apic(5, false);
    b.set_base(MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE, true, 48)
        .unwrap();
    let mut s = LapicState::default();
    for _ in 0..4 {
        b.set_state(&s, &NOW, false).unwrap();
        s = b.get_state(&NOW, false).unwrap();
        assert_eq!(s.reg(APIC_ID), 5 << 24);
    }
}

#[test]
fn apic_bus_clock_test_math() {
    // apic_bus_clock_test: TMICT = ~0 with every divider, TMCCT read after a delay; the
    // measured frequency must be the configured bus frequency.
    for apic_hz in [25_000_000u64, 1_000_000_000, 1_000_000] {
        let pir = Pir::new();
        let mut a = Lapic::new(
            0,
            VmApicConfig {
                ioapic_in_kernel: true,
                bus_cycle_ns: 1_000_000_000 / apic_hz,
            },
        );
        a.set_cpuid(true, true);
        let _ = a.reset(false, true, true, &pir);
        to_x2apic(&mut a);
        a.x2apic_write(0x80f, 0x1ff, &NOW).unwrap();
        a.x2apic_write(
            0x832,
            (APIC_LVT_TIMER_ONESHOT | APIC_LVT_MASKED) as u64,
            &NOW,
        )
        .unwrap();
        for (tdcr, div) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xa, 128),
            (0xb, 1),
        ] {
            a.x2apic_write(0x83e, tdcr, &NOW).unwrap();
            a.x2apic_write(0x838, 0xffff_ffff, &NOW).unwrap();
            let delay_ns = 100_000_000u64;
            let tmcct = a.x2apic_read(0x839, NOW.ns + delay_ns).unwrap();
            a.x2apic_write(0x838, 0, &NOW).unwrap();
            let freq = (0xffff_ffff - tmcct) * div * 1_000_000_000 / delay_ns;
            assert!(
                freq < apic_hz * 105 / 100 && freq > apic_hz * 95 / 100,
                "hz {apic_hz} div {div}: {freq}"
            );
        }
    }
}

#[test]
fn owner_side_accept() {
    let (mut a, pir) = enabled(0);
    let mut lvl = fixed(0x70, 0, false);
    lvl.level_triggered = true;
    assert!(a.accept(&lvl, &pir));
    assert_eq!(a.ack(), Some(0x70));
    assert!(a.eoi().unwrap().level);
    lvl.level = false;
    assert!(!a.accept(&lvl, &pir));
    let mut nmi = fixed(0, 0, false);
    nmi.delivery_mode = DeliveryMode::Nmi;
    assert!(a.accept(&nmi, &pir));
    assert_eq!(pir.take_nmis(), 1);
    a.reg_write(APIC_SPIV, 0xff, &NOW).unwrap();
    assert!(!a.accept(&fixed(0x70, 0, false), &pir));
}

// ----- Independent review against 6.12.117 (lapic2) -----

/// Upstream `kvm_lapic_reset` in x2APIC mode clears the ICR with `kvm_lapic_set_reg64(apic,
/// APIC_ICR, 0)`: the 8 bytes at 0x300 (ICR and the reserved word at 0x304), not ICR2 at
/// 0x310, even on SVM where the x2APIC ICR is kept split. An INIT in x2APIC mode therefore
/// leaves ICR2 (the destination half of MSR 0x830) as it was.
#[test]
fn init_in_x2apic_mode_clears_icr_low_quadword_only() {
    let (mut a, pir) = enabled(5);
    to_x2apic(&mut a);
    a.x2apic_write(0x830, (7u64 << 32) | 0x4030, &NOW).unwrap();
    let mut s = a.get_state(&NOW, false).unwrap();
    s.set_reg(0x304, 0xdead_beef);
    a.set_state(&s, &NOW, false).unwrap();
    assert_eq!(a.reg(0x304), 0xdead_beef);
    let _ = a.reset(true, false, true, &pir);
    assert_eq!(a.reg(APIC_ICR), 0);
    assert_eq!(a.reg(0x304), 0);
    assert_eq!(a.reg(APIC_ICR2), 7);
    assert_eq!(a.x2apic_read(0x830, NOW.ns), Ok(7u64 << 32));
    // In xAPIC mode both halves are cleared.
    let (mut b, pir) = enabled(1);
    b.reg_write(APIC_ICR2, 0x0300_0000, &NOW).unwrap();
    let _ = b.reset(true, false, true, &pir);
    assert_eq!(b.reg(APIC_ICR2), 0);
}

/// Upstream's periodic hrtimer re-arms itself in its callback (`apic_timer_fn` →
/// `advance_periodic_target_expiration`, `HRTIMER_RESTART`) whether or not the vCPU runs,
/// so the target stays on the period grid: when the owner merges the expiry late, the
/// timer's next target is the first grid point after "now", and TMCCT counts down to it.
#[test]
fn periodic_target_stays_on_the_period_grid_when_merged_late() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | 0x41, &NOW)
        .unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let fx = a.reg_write(APIC_TMICT, 1_000_000, &NOW).unwrap();
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!()
    };
    assert_eq!(at_ns, NOW.ns + 1_000_000);
    pir.timer_expired(token);
    // Merged 3.25 periods after the first expiry: upstream's callbacks ran at +1, +2, +3
    // and +4 ms, the armed target is +5 ms.
    let late = Now::ns(NOW.ns + 4_250_000);
    let fx = a.sync_pir(&pir, &late);
    let TimerCmd::Arm { at_ns: next, .. } = fx.timer else {
        panic!("{:?}", fx.timer)
    };
    assert_eq!(next, NOW.ns + 5_000_000);
    assert_eq!(a.timer_target_ns(), NOW.ns + 5_000_000);
    assert_eq!(a.mmio_read(APIC_TMCCT, 4, late.ns), Some(750_000));
    assert_eq!(a.ack(), Some(0x41), "one interrupt for the missed periods");
    assert_eq!(a.highest_irr(), None);
}

/// Upstream `start_sw_tscdeadline` computes `(tscdeadline - guest_tsc) * 1000000ULL` in 64
/// bits before `do_div` by the TSC kHz: a deadline more than 2^64 / 10^6 cycles ahead wraps.
#[test]
fn tsc_deadline_far_ahead_wraps_as_upstream() {
    let (mut a, _pir) = enabled(0);
    a.reg_write(APIC_LVTT, APIC_LVT_TIMER_TSCDEADLINE | 0xef, &NOW)
        .unwrap();
    let delta = 20_000_000_000_000u64;
    let fx = a.set_tsc_deadline(NOW.guest_tsc + delta, &NOW);
    let want = delta.wrapping_mul(1_000_000) / u64::from(NOW.tsc_khz);
    assert_eq!(want, 776_627_963_145);
    assert!(
        matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == NOW.ns + want),
        "{:?}",
        fx.timer
    );
    // 2^58 × 10^6 = 15625 × 2^64 wraps to 0: upstream's `ns > timer_advance_ns` fails and
    // the timer expires at once.
    let fx = a.set_tsc_deadline(NOW.guest_tsc + (1u64 << 58), &NOW);
    assert!(!matches!(fx.timer, TimerCmd::Arm { .. }), "{:?}", fx.timer);
    assert!(fx.recheck);
    let _ = a.sync_pir(&_pir, &NOW);
    assert_eq!(a.ack(), Some(0xef));
}

/// Upstream `kvm_apic_set_state` recomputes PPR (`apic_update_ppr`) before
/// `kvm_apic_update_apicv` refreshes the ISR caches (`isr_count`, `highest_isr_cache`), so
/// the PPR that `KVM_GET_LAPIC` reports right after `KVM_SET_LAPIC` is computed from the
/// ISR as the APIC last tracked it: with nothing in service before, the restored ISR does
/// not count; after an acknowledge, the acknowledged vector counts. The next PPR update
/// (a PPR read, an interrupt check) uses the restored ISR.
#[test]
fn set_state_ppr_uses_the_isr_caches_from_before_the_restore() {
    let restore = |a: &mut Lapic, isr_vec: u8, tpr: u32| {
        let mut s = a.get_state(&NOW, false).unwrap();
        for i in 0..8 {
            s.set_reg(APIC_ISR + 0x10 * i, 0);
        }
        s.set_reg(
            APIC_ISR + 0x10 * u32::from(isr_vec >> 5),
            1 << (isr_vec & 31),
        );
        s.set_reg(APIC_TASKPRI, tpr);
        s.set_reg(APIC_PROCPRI, 0xee);
        a.set_state(&s, &NOW, false).unwrap();
        a.get_state(&NOW, false).unwrap().reg(APIC_PROCPRI)
    };
    // Nothing in service before: isr_count == 0, PPR = TPR.
    let (mut a, _) = enabled(0);
    assert_eq!(restore(&mut a, 0x80, 0x10), 0x10);
    // The caches are refreshed afterwards: a PPR read sees the restored ISR.
    assert_eq!(a.mmio_read(APIC_PROCPRI, 4, NOW.ns), Some(0x80));
    // After an acknowledge of 0x90 the cache holds 0x90, whatever the state restores.
    let (mut b, _) = enabled(1);
    assert!(b.accept_vector(0x90, false));
    assert_eq!(b.ack(), Some(0x90));
    assert_eq!(restore(&mut b, 0x40, 0), 0x90);
    assert_eq!(b.ppr(), 0x40);
    // The EOI after the restore clears the restored vector.
    assert_eq!(b.eoi().map(|e| e.vector), Some(0x40));
    // In service but no cached vector (after an EOI of the highest): the ISR is scanned.
    let (mut c, _) = enabled(2);
    for v in [0x50, 0x60] {
        assert!(c.accept_vector(v, false));
        assert_eq!(c.ack(), Some(v));
    }
    assert_eq!(c.eoi().map(|e| e.vector), Some(0x60));
    assert_eq!(restore(&mut c, 0x70, 0), 0x70);
}

/// Pins upstream quirks that fall out of the same arithmetic: a divider change after a
/// one-shot expiry was delivered (target reset to 0) re-arms the timer at "now"
/// (`update_target_expiration` clamps the negative remaining time to 0, then
/// `restart_apic_timer` starts it), so it fires a second time; and TMCCT keeps counting
/// against the 200 µs clamped period even when TMICT is smaller.
#[test]
fn divider_change_after_delivered_oneshot_and_clamped_tmcct() {
    let (mut a, pir) = enabled(0);
    a.reg_write(APIC_LVTT, 0x31, &NOW).unwrap();
    a.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let fx = a.reg_write(APIC_TMICT, 1000, &NOW).unwrap();
    let TimerCmd::Arm { at_ns, token } = fx.timer else {
        panic!()
    };
    pir.timer_expired(token);
    let t = Now::ns(at_ns + 10);
    let _ = a.sync_pir(&pir, &t);
    assert_eq!(a.ack(), Some(0x31));
    assert_eq!(a.timer_target_ns(), 0);
    let fx = a.reg_write(APIC_TDCR, 0x0, &t).unwrap();
    assert!(matches!(fx.timer, TimerCmd::Arm { at_ns, .. } if at_ns == t.ns));
    // Periodic, TMICT 1000 at divide 1: period clamped to 200 µs, TMCCT counts from it.
    let (mut b, _) = enabled(1);
    b.reg_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | 0x31, &NOW)
        .unwrap();
    b.reg_write(APIC_TDCR, 0xb, &NOW).unwrap();
    let _ = b.reg_write(APIC_TMICT, 1000, &NOW).unwrap();
    assert_eq!(b.mmio_read(APIC_TMCCT, 4, NOW.ns + 50_000), Some(150_000));
}

#[test]
fn remote_read_sets_pv_unhalted_even_on_a_disabled_apic() {
    let pir = Pir::new();
    // Upstream's APIC_DM_REMRD case accepts whatever the APIC's state (no enabled check).
    let off = DestInfo::new(2, 2, 0, DfrModel::Flat, true, false, false);
    let irq = LapicIrq {
        delivery_mode: DeliveryMode::RemoteRead,
        ..fixed(0, 2, false)
    };
    assert!(!pir.pv_unhalted());
    assert!(!pir.has_pending());
    assert!(pir.post(off, &irq));
    assert!(pir.pv_unhalted());
    assert!(pir.has_pending());
    // No vector, NMI or INIT came with it.
    assert_eq!(pir.take_nmis(), 0);
    assert!(!pir.init_or_sipi_pending());
    pir.clear_pv_unhalted();
    assert!(!pir.pv_unhalted());
    assert!(!pir.has_pending());
    // Mode 3 decodes as the remote read from every source.
    assert_eq!(DeliveryMode::from_bits(3), DeliveryMode::RemoteRead);
    assert_eq!(DeliveryMode::from_bits(0x13), DeliveryMode::RemoteRead);
}

#[test]
fn failed_set_state_keeps_the_new_svr_as_upstream() {
    // Upstream kvm_apic_set_state sets SPIV before the fix-up; when the fix-up fails the
    // SVR stays and the APIC map is recalculated: the destination the module publishes must
    // then be the model's, software-enabled.
    let (mut a, _) = new_apic(0x21, false);
    let base = a.apic_base() | X2APIC_ENABLE;
    a.set_base(base | (1 << 11), false, 48).unwrap();
    to_x2apic(&mut a);
    assert!(!a.sw_enabled());
    assert!(!a.dest_info().sw_enabled());
    let mut bad = a.get_state(&NOW, true).unwrap();
    bad.set_reg(APIC_ID, 0x22);
    bad.set_reg(APIC_SPIV, 0x1ff);
    assert_eq!(a.set_state(&bad, &NOW, true), Err(StateError));
    assert!(a.sw_enabled());
    assert!(a.dest_info().sw_enabled());
    assert_eq!(a.reg(APIC_ID), 0x21);
}

#[test]
fn nmi_watchdog_tick_delivers_lvt0_by_its_owner() {
    // The PIT work posts an LVT0 request; the owner delivers LVT0 as it is (upstream
    // kvm_apic_nmi_wd_deliver -> kvm_apic_local_deliver(APIC_LVT0)).
    let (mut a, pir) = enabled(0);
    let fx = a.reg_write(APIC_LVT0, APIC_DM_NMI, &NOW).unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(true));
    assert!(!pir.has_pending());
    pir.post_lvt0();
    assert!(pir.has_pending());
    assert!(pir.take_lvt0());
    assert!(!pir.take_lvt0());
    assert!(a.local_deliver(Lvt::Lint0, &pir));
    assert_eq!(pir.take_nmis(), 1);
    // Masked: nothing, and the NMI-mode count drops.
    let fx = a
        .reg_write(APIC_LVT0, APIC_DM_NMI | APIC_LVT_MASKED, &NOW)
        .unwrap();
    assert_eq!(fx.lvt0_nmi_mode, Some(false));
    assert!(!a.local_deliver(Lvt::Lint0, &pir));
    assert_eq!(pir.take_nmis(), 0);
}

#[test]
fn pending_eoi_map_is_irr_or_isr_and_posted_is_the_inbox() {
    let (mut a, pir) = enabled(0);
    assert_eq!(a.pending_eoi_map(), [0; 4]);
    assert!(pir.post(a.dest_info(), &fixed(0x38, 0, false)));
    assert!(pir.posted(0x38) && !pir.posted(0x39));
    assert_eq!(a.pending_eoi_map(), [0; 4], "posted is not yet IRR");
    let _ = a.sync_pir(&pir, &NOW);
    assert!(!pir.posted(0x38));
    assert!(a.accept_vector(0xa1, false));
    assert_eq!(a.ack(), Some(0xa1));
    // 0x38 in IRR, 0xa1 in ISR.
    assert_eq!(a.pending_eoi_map(), [1 << 0x38, 0, 1 << 0x21, 0]);
    for v in 0..=255u8 {
        let m = a.pending_eoi_map();
        assert_eq!(
            m[usize::from(v >> 6)] & (1 << (v & 63)) != 0,
            a.pending_eoi(v)
        );
    }
    let _ = a.eoi();
    assert_eq!(a.pending_eoi_map(), [1 << 0x38, 0, 0, 0]);
}

#[test]
fn td_apic_base_is_x2apic_with_the_bsp_bit_and_needs_x2apic_cpuid() {
    assert_eq!(td_apic_base(true), 0xfee0_0d00);
    assert_eq!(td_apic_base(false), 0xfee0_0c00);
    // Upstream kvm_apic_set_base(host_initiated): EXTD is reserved without x2APIC in CPUID.
    let pir = Pir::new();
    let mut a = Lapic::new(1, VmApicConfig::default());
    let _ = a.reset(false, false, true, &pir);
    assert_eq!(a.set_base(td_apic_base(false), true, 36), Err(Fault));
    assert!(!a.x2apic_mode());
    a.set_x2apic_cpuid(true);
    let fx = a.set_base(td_apic_base(false), true, 36).unwrap();
    assert!(fx.dest_changed && fx.mode_changed);
    assert!(a.x2apic_mode() && !a.is_bsp());
    assert_eq!(a.apic_base(), 0xfee0_0c00);
    // x2APIC ID = vCPU ID, LDR = cluster 0, bit 1.
    assert_eq!(a.x2apic_read(0x802, 0), Ok(1));
    assert_eq!(a.x2apic_read(0x80d, 0), Ok(0x2));
    // The boot vCPU: from its reset (xAPIC, BSP) to x2APIC, BSP kept.
    let (mut b, _) = new_apic(0, true);
    b.set_base(td_apic_base(true), true, 36).unwrap();
    assert!(b.x2apic_mode() && b.is_bsp());
    // A guest could not go disabled -> x2APIC; the host-initiated write can.
    let mut c = Lapic::new(2, VmApicConfig::default());
    c.set_x2apic_cpuid(true);
    c.set_base(0, true, 36).unwrap();
    assert_eq!(c.set_base(td_apic_base(false), false, 36), Err(Fault));
    assert!(c.set_base(td_apic_base(false), true, 36).is_ok());
}
