// SPDX-License-Identifier: GPL-2.0-only
//! Host tests of the PIC pair against upstream's behaviour.

use super::*;

fn out(p: &mut Pic, port: u16, v: u8) {
    assert!(p.ioport_write(port, 1, v, true));
}

fn inb(p: &mut Pic, port: u16) -> u8 {
    p.ioport_read(port, 1).unwrap()
}

/// The BIOS/Linux initialisation: vectors 0x20 and 0x28, cascade on IR2, 8086 mode.
fn init(p: &mut Pic, icw4_master: u8) {
    out(p, 0x20, 0x11);
    out(p, 0x21, 0x20);
    out(p, 0x21, 0x04);
    out(p, 0x21, icw4_master);
    out(p, 0xa0, 0x11);
    out(p, 0xa1, 0x28);
    out(p, 0xa1, 0x02);
    out(p, 0xa1, 0x01);
}

#[test]
fn reset_state() {
    let p = Pic::new();
    let m = p.get_state(0).unwrap();
    let s = p.get_state(1).unwrap();
    assert_eq!(
        m,
        KvmPicState {
            elcr_mask: 0xf8,
            ..KvmPicState::default()
        }
    );
    assert_eq!(s.elcr_mask, 0xde);
    assert_eq!(p.get_state(2), None);
    assert!(!p.output());
}

#[test]
fn icw_sequence_sets_base_and_modes() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    let m = p.get_state(0).unwrap();
    assert_eq!(
        (m.irq_base, m.init4, m.init_state, m.auto_eoi),
        (0x20, 1, 0, 0)
    );
    assert_eq!(p.get_state(1).unwrap().irq_base, 0x28);
    // ICW4 with AEOI and SFNM.
    let mut p = Pic::new();
    init(&mut p, 0x13);
    let m = p.get_state(0).unwrap();
    assert_eq!((m.auto_eoi, m.special_fully_nested_mode), (1, 1));
    // Without IC4 the sequence ends after ICW3.
    out(&mut p, 0x20, 0x10);
    out(&mut p, 0x21, 0x08);
    out(&mut p, 0x21, 0x04);
    let m = p.get_state(0).unwrap();
    assert_eq!(
        (m.init_state, m.auto_eoi, m.special_fully_nested_mode),
        (0, 0, 0)
    );
    assert_eq!(m.irq_base, 0x08);
}

#[test]
fn imr_read_back_and_mask_effects() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    p.take_effects();
    out(&mut p, 0x21, 0xfb);
    out(&mut p, 0xa1, 0x01);
    assert_eq!(inb(&mut p, 0x21), 0xfb);
    assert_eq!(inb(&mut p, 0xa1), 0x01);
    assert_eq!(p.take_effects().mask_changed, 0x01fb);
    assert!(p.masked(0) && !p.masked(2) && p.masked(8) && !p.masked(9));
}

#[test]
fn edge_request_inta_and_nonspecific_eoi() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    assert_eq!(p.set_irq(0, 0, true), 1);
    assert!(p.output());
    // Still asserted: no new edge, and upstream answers 1 all the same.
    assert_eq!(p.set_irq(0, 0, true), 1);
    assert_eq!(inb(&mut p, 0x20), 0x01); // IRR
    assert_eq!(p.read_irq(), 0x20);
    assert!(!p.output());
    // A new edge while the previous one is still in the IRR is coalesced.
    let mut q = Pic::new();
    init(&mut q, 0x01);
    out(&mut q, 0x20, 0x0b);
    q.set_irq(1, 0, true);
    q.set_irq(1, 0, false);
    assert_eq!(q.set_irq(1, 0, true), 0);
    out(&mut p, 0x20, 0x0b); // OCW3: read ISR
    assert_eq!(inb(&mut p, 0x20), 0x01);
    // Edge: IRR cleared by INTA; a new edge needs a falling edge first.
    assert_eq!(p.set_irq(0, 0, true), 1);
    out(&mut p, 0x20, 0x0a);
    assert_eq!(inb(&mut p, 0x20), 0x00);
    p.take_effects();
    out(&mut p, 0x20, 0x20); // non-specific EOI
    assert_eq!(p.take_effects().acked, 1);
    out(&mut p, 0x20, 0x0b);
    assert_eq!(inb(&mut p, 0x20), 0x00);
    p.set_irq(0, 0, false);
    assert_eq!(p.set_irq(0, 0, true), 1);
    assert!(p.output());
}

#[test]
fn masked_pin_answers_minus_one_and_keeps_output_low() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    out(&mut p, 0x21, 0x02);
    assert_eq!(p.set_irq(1, 0, true), -1);
    assert!(!p.output());
    out(&mut p, 0x21, 0x00);
    assert!(p.output());
    assert_eq!(p.read_irq(), 0x21);
}

#[test]
fn priorities_and_nesting() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    p.set_irq(3, 0, true);
    assert_eq!(p.read_irq(), 0x23);
    // A lower-priority request waits while IRQ3 is in service.
    p.set_irq(5, 0, true);
    assert!(!p.output());
    // A higher-priority one preempts.
    p.set_irq(1, 0, true);
    assert!(p.output());
    assert_eq!(p.read_irq(), 0x21);
    out(&mut p, 0x20, 0x20); // EOIs IRQ1
    out(&mut p, 0x20, 0x20); // EOIs IRQ3
    assert!(p.output());
    assert_eq!(p.read_irq(), 0x25);
}

#[test]
fn cascade_through_ir2_delivers_slave_vector() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    assert_eq!(p.set_irq(12, 0, true), 1);
    assert!(p.output());
    assert_eq!(p.read_irq(), 0x2c);
    let m = p.get_state(0).unwrap();
    let s = p.get_state(1).unwrap();
    assert_eq!((m.isr, s.isr), (0x04, 0x10));
    p.take_effects();
    out(&mut p, 0xa0, 0x20);
    out(&mut p, 0x20, 0x20);
    assert_eq!(p.take_effects().acked, (1 << 12) | (1 << 2));
    assert_eq!(
        (p.get_state(0).unwrap().isr, p.get_state(1).unwrap().isr),
        (0, 0)
    );
}

#[test]
fn spurious_interrupts_are_seven_and_fifteen() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    assert_eq!(p.read_irq(), 0x27);
    // Master IR2 pending with nothing on the slave: slave spurious.
    let mut m = p.get_state(0).unwrap();
    m.irr = 0x04;
    p.set_state(0, &m);
    assert_eq!(p.read_irq(), 0x2f);
}

#[test]
fn level_triggered_via_elcr_stays_in_irr() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    out(&mut p, 0x4d1, 0xff);
    assert_eq!(inb(&mut p, 0x4d1), 0xde);
    out(&mut p, 0x4d0, 0xff);
    assert_eq!(inb(&mut p, 0x4d0), 0xf8);
    assert_eq!(p.set_irq(9, 0, true), 1);
    assert_eq!(p.set_irq(9, 0, true), 0);
    assert_eq!(p.read_irq(), 0x29);
    assert_eq!(p.get_state(1).unwrap().irr, 0x02);
    // A second source keeps the line up when the first lets go.
    p.set_irq(9, 2, true);
    p.set_irq(9, 0, false);
    assert_eq!(p.get_state(1).unwrap().irr, 0x02);
    p.set_irq(9, 2, false);
    assert_eq!(p.get_state(1).unwrap().irr, 0x00);
}

#[test]
fn auto_eoi_and_rotation() {
    let mut p = Pic::new();
    init(&mut p, 0x03);
    p.take_effects();
    p.set_irq(4, 0, true);
    assert_eq!(p.read_irq(), 0x24);
    assert_eq!(p.get_state(0).unwrap().isr, 0);
    assert_eq!(p.take_effects().acked, 1 << 4);
    // Rotate in AEOI mode: IRQ4 becomes lowest.
    out(&mut p, 0x20, 0x80);
    p.set_irq(4, 0, false);
    p.set_irq(4, 0, true);
    assert_eq!(p.read_irq(), 0x24);
    assert_eq!(p.get_state(0).unwrap().priority_add, 5);
}

#[test]
fn specific_eoi_and_set_priority() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    p.set_irq(6, 0, true);
    p.read_irq();
    p.take_effects();
    out(&mut p, 0x20, 0x66); // specific EOI IRQ6
    assert_eq!(p.take_effects().acked, 1 << 6);
    out(&mut p, 0x20, 0xc3); // set priority: IRQ3 lowest
    assert_eq!(p.get_state(0).unwrap().priority_add, 4);
    out(&mut p, 0x20, 0xe5); // rotate on specific EOI of IRQ5
    assert_eq!(p.get_state(0).unwrap().priority_add, 6);
}

#[test]
fn poll_mode_acks_without_inta() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    p.set_irq(3, 0, true);
    out(&mut p, 0x20, 0x0c); // OCW3 poll
    assert_eq!(inb(&mut p, 0x20), 3);
    let m = p.get_state(0).unwrap();
    assert_eq!((m.irr, m.isr, m.poll), (0, 0, 0));
    out(&mut p, 0x20, 0x0c);
    assert_eq!(inb(&mut p, 0x21), 7);
}

#[test]
fn icw1_reset_keeps_level_irr_and_clears_isr_of_edge_requests() {
    let mut p = Pic::new();
    init(&mut p, 0x01);
    out(&mut p, 0x4d0, 0x20); // IRQ5 level
    p.set_irq(5, 0, true);
    p.set_irq(3, 0, true);
    let mut m = p.get_state(0).unwrap();
    m.isr = 0x28;
    m.imr = 0xff;
    p.set_state(0, &m);
    p.take_effects();
    out(&mut p, 0x20, 0x11);
    let m = p.get_state(0).unwrap();
    assert_eq!((m.irr, m.imr, m.isr, m.init_state), (0x20, 0, 0x20, 1));
    assert_eq!(p.take_effects().acked, 1 << 3);
}

#[test]
fn non_byte_accesses_and_foreign_ports() {
    let mut p = Pic::new();
    assert_eq!(p.ioport_read(0x21, 2), Some(0));
    assert!(p.ioport_write(0x21, 2, 0xff, true));
    assert_eq!(p.get_state(0).unwrap().imr, 0);
    assert_eq!(p.ioport_read(0x22, 1), None);
    assert!(!p.ioport_write(0x40, 1, 0, true));
}

#[test]
fn set_state_reevaluates_output() {
    let mut p = Pic::new();
    let mut m = p.get_state(0).unwrap();
    m.irr = 0x01;
    assert!(p.set_state(0, &m));
    assert!(p.output());
    assert!(!p.set_state(2, &m));
}
