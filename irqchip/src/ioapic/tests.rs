// SPDX-License-Identifier: GPL-2.0-only
//! Host tests of the IOAPIC model against upstream's behaviour.

extern crate std;
use super::*;
use crate::irq::DeliveryMode;
use std::vec::Vec;
use x86::uapi::Pod;

const BASE: u64 = DEFAULT_BASE_ADDRESS;

#[derive(Default)]
struct Env {
    got: Vec<LapicIrq>,
    ret: i32,
    /// With a dest map, record delivery to this vCPU.
    vcpu: u32,
}

impl Env {
    fn new(ret: i32) -> Self {
        Self {
            ret,
            ..Self::default()
        }
    }
}

impl IoapicEnv for Env {
    fn deliver(&mut self, irq: &LapicIrq, dest_map: Option<&mut DestMap>) -> i32 {
        self.got.push(*irq);
        if let Some(m) = dest_map {
            if self.ret > 0 {
                m.set(self.vcpu, irq.vector);
            }
        }
        self.ret
    }
}

fn sel(io: &mut Ioapic, env: &mut Env, reg: u32) {
    io.mmio_write(BASE, 4, u64::from(reg), env).unwrap();
}

fn read_reg(io: &mut Ioapic, env: &mut Env, reg: u32) -> u32 {
    sel(io, env, reg);
    io.mmio_read(BASE + 0x10, 4).unwrap() as u32
}

fn write_reg(io: &mut Ioapic, env: &mut Env, reg: u32, v: u32) -> WriteEffects {
    sel(io, env, reg);
    io.mmio_write(BASE + 0x10, 4, u64::from(v), env).unwrap()
}

fn program(io: &mut Ioapic, env: &mut Env, pin: u32, lo: u32, hi: u32) {
    write_reg(io, env, 0x11 + 2 * pin, hi);
    write_reg(io, env, 0x10 + 2 * pin, lo);
}

const LEVEL: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;
const REMOTE_IRR: u32 = 1 << 14;

#[test]
fn reset_state_is_all_masked_at_default_base() {
    let io = Ioapic::new();
    let s = io.get_state();
    assert_eq!(s.base_address, 0xfec0_0000);
    assert_eq!((s.ioregsel, s.id, s.irr, s.pad), (0, 0, 0, 0));
    assert!(s.redirtbl.iter().all(|&e| e == 0x1_0000));
}

#[test]
fn version_id_and_arbitration_registers() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    assert_eq!(read_reg(&mut io, &mut env, 1), 0x0017_0011);
    write_reg(&mut io, &mut env, 1, 0xffff_ffff);
    assert_eq!(read_reg(&mut io, &mut env, 1), 0x0017_0011);
    write_reg(&mut io, &mut env, 0, 0xff00_0000);
    assert_eq!(read_reg(&mut io, &mut env, 0), 0x0f00_0000);
    assert_eq!(read_reg(&mut io, &mut env, 2), 0x0f00_0000);
    write_reg(&mut io, &mut env, 2, 0);
    assert_eq!(read_reg(&mut io, &mut env, 0), 0x0f00_0000);
    assert_eq!(io.get_state().id, 0xf);
}

#[test]
fn ioregsel_is_eight_bits_and_other_offsets_read_zero() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    io.mmio_write(BASE, 4, 0x1ff, &mut env).unwrap();
    assert_eq!(io.mmio_read(BASE, 4), Some(0xff));
    assert_eq!(io.mmio_read(BASE + 0x40, 4), Some(0));
    assert_eq!(io.mmio_read(BASE + 0x20, 4), Some(0));
    // Past the table: all ones.
    assert_eq!(io.mmio_read(BASE + 0x10, 4), Some(0xffff_ffff));
    assert_eq!(io.mmio_read(BASE + 0x10, 8), Some(0xffff_ffff));
    assert_eq!(io.mmio_read(BASE + 0x10, 1), Some(0xff));
    assert_eq!(io.mmio_read(BASE + 0x100, 4), None);
    assert_eq!(io.mmio_read(BASE - 1, 4), None);
    assert!(io.mmio_write(BASE + 0x100, 4, 0, &mut env).is_none());
}

#[test]
fn byte_reads_of_version() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    sel(&mut io, &mut env, 1);
    assert_eq!(io.mmio_read(BASE + 0x10, 1), Some(0x11));
    assert_eq!(io.mmio_read(BASE + 0x10, 2), Some(0x11));
    assert_eq!(io.mmio_read(BASE + 0x10, 3), Some(0));
}

#[test]
fn redirection_entry_read_back_keeps_read_only_bits() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(
        &mut io,
        &mut env,
        3,
        0x0000_a933 | REMOTE_IRR | (1 << 12),
        0x0500_0000,
    );
    // Remote IRR and delivery status are read-only (0 here).
    assert_eq!(read_reg(&mut io, &mut env, 0x16), 0x0000_a933);
    assert_eq!(read_reg(&mut io, &mut env, 0x17), 0x0500_0000);
    let e = io.entry(3).unwrap();
    assert_eq!(e.vector(), 0x33);
    assert_eq!(e.delivery_mode_bits(), 1);
    assert!(e.dest_logical() && e.level_triggered() && !e.masked());
    assert_eq!(e.dest_id(), 5);
}

#[test]
fn edge_delivers_once_per_rising_edge() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 1, 0x31, 0x0200_0000);
    assert_eq!(io.set_irq(1, 0, true, false, &mut env), 1);
    assert_eq!(env.got.len(), 1);
    let irq = env.got[0];
    assert_eq!(irq.vector, 0x31);
    assert_eq!(irq.dest_id, 2);
    assert_eq!(irq.delivery_mode, DeliveryMode::Fixed);
    assert!(!irq.level_triggered && irq.level && !irq.dest_logical);
    // Delivered edges are not reported in the state's IRR.
    assert_eq!(io.irr(), 1 << 1);
    assert_eq!(io.get_state().irr, 0);
    // Still asserted: coalesced, and (upstream) no longer counted as delivered.
    assert_eq!(io.set_irq(1, 0, true, false, &mut env), 0);
    assert_eq!(env.got.len(), 1);
    assert_eq!(io.get_state().irr, 1 << 1);
    assert_eq!(io.set_irq(1, 0, false, false, &mut env), 1);
    assert_eq!(io.irr(), 0);
    assert_eq!(io.set_irq(1, 0, true, false, &mut env), 1);
    assert_eq!(env.got.len(), 2);
}

#[test]
fn masked_edge_is_ignored_and_stays_in_irr() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 4, 0x34 | MASKED, 0);
    assert_eq!(io.set_irq(4, 0, true, false, &mut env), -1);
    assert!(env.got.is_empty());
    assert_eq!(io.get_state().irr, 1 << 4);
    // Unmasking an edge entry does not deliver the pending edge (upstream).
    let fx = write_reg(&mut io, &mut env, 0x18, 0x34);
    assert_eq!(fx.mask_changed, Some((4, false)));
    assert!(env.got.is_empty());
}

#[test]
fn no_destination_answers_minus_one() {
    let mut io = Ioapic::new();
    let mut env = Env::new(-1);
    program(&mut io, &mut env, 5, 0x35, 0);
    assert_eq!(io.set_irq(5, 0, true, false, &mut env), -1);
}

#[test]
fn level_sets_remote_irr_until_eoi_then_redelivers() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 2, 0x42 | LEVEL, 0);
    assert_eq!(io.set_irq(2, 0, true, false, &mut env), 1);
    assert!(env.got[0].level_triggered);
    assert!(io.entry(2).unwrap().remote_irr());
    assert_eq!(read_reg(&mut io, &mut env, 0x14), 0x42 | LEVEL | REMOTE_IRR);
    // A second source asserting the same line: remote IRR blocks it.
    assert_eq!(io.set_irq(2, 3, true, false, &mut env), -1);
    assert_eq!(env.got.len(), 1);
    // EOI while asserted: delivered again.
    assert_eq!(io.eoi_begin(0, 0x42), 1 << 2);
    assert_eq!(
        io.eoi_pin(2, true, false, &mut env),
        EoiOutcome::Redelivered(1)
    );
    assert_eq!(env.got.len(), 2);
    assert!(io.entry(2).unwrap().remote_irr());
    // One source lets go: still asserted by the other.
    assert_eq!(io.set_irq(2, 0, false, false, &mut env), -1);
    assert_eq!(io.set_irq(2, 3, false, false, &mut env), 1);
    assert_eq!(io.irr(), 0);
    let mut notified = Vec::new();
    let deferred = io.update_eoi(0, 0x42, true, false, &mut env, &mut |p| notified.push(p));
    assert!(!deferred);
    assert_eq!(notified, [2]);
    assert!(!io.entry(2).unwrap().remote_irr());
    assert_eq!(env.got.len(), 2);
}

#[test]
fn set_irq_answer_for_a_deassertion_is_one() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    assert_eq!(io.set_irq(0, 0, false, false, &mut env), 1);
    assert_eq!(io.set_irq(24, 0, true, false, &mut env), -1);
    assert_eq!(io.set_irq(0, 64, true, false, &mut env), -1);
}

#[test]
fn edge_eoi_and_directed_eoi_leave_remote_irr() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 2, 0x42 | LEVEL, 0);
    io.set_irq(2, 0, true, false, &mut env);
    assert_eq!(io.eoi_pin(2, false, false, &mut env), EoiOutcome::Done);
    assert_eq!(io.eoi_pin(2, true, true, &mut env), EoiOutcome::Done);
    assert!(io.entry(2).unwrap().remote_irr());
}

#[test]
fn switching_to_edge_clears_remote_irr() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 2, 0x42 | LEVEL, 0);
    io.set_irq(2, 0, true, false, &mut env);
    io.set_irq(2, 0, false, false, &mut env);
    write_reg(&mut io, &mut env, 0x14, 0x42);
    assert!(!io.entry(2).unwrap().remote_irr());
}

#[test]
fn unmasking_an_asserted_level_pin_delivers() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 9, 0x49 | LEVEL | MASKED, 0);
    assert_eq!(io.set_irq(9, 0, true, false, &mut env), -1);
    let fx = write_reg(&mut io, &mut env, 0x22, 0x49 | LEVEL);
    assert_eq!(fx.mask_changed, Some((9, false)));
    assert_eq!(
        fx.rescan,
        Rescan::Dests {
            new: (0, false),
            old: None
        }
    );
    assert_eq!(env.got.len(), 1);
    assert!(io.entry(9).unwrap().remote_irr());
}

#[test]
fn rescan_reports_old_destination_or_all() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    let fx = write_reg(&mut io, &mut env, 0x11, 0x0300_0000);
    assert_eq!(
        fx.rescan,
        Rescan::Dests {
            new: (3, false),
            old: Some((0, false))
        }
    );
    // NMI delivery mode: everyone.
    let fx = write_reg(&mut io, &mut env, 0x10, 0x400 | MASKED);
    assert_eq!(fx.rescan, Rescan::All);
}

#[test]
fn eoi_storm_defers_the_ten_thousandth_redelivery() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 7, 0x57 | LEVEL, 0);
    io.set_irq(7, 0, true, false, &mut env);
    for i in 1..SUCCESSIVE_IRQ_MAX_COUNT {
        assert_eq!(
            io.eoi_pin(7, true, false, &mut env),
            EoiOutcome::Redelivered(1),
            "{i}"
        );
    }
    assert_eq!(io.eoi_pin(7, true, false, &mut env), EoiOutcome::Deferred);
    assert!(!io.entry(7).unwrap().remote_irr());
    let n = env.got.len();
    io.inject_pending_level(&mut env);
    assert_eq!(env.got.len(), n + 1);
    assert!(io.entry(7).unwrap().remote_irr());
}

#[test]
fn rtc_line_status_coalesces_until_eoi() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    env.vcpu = 3;
    program(&mut io, &mut env, 8, 0x38, 0);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
    assert_eq!(io.rtc_pending_eoi(), 1);
    io.set_irq(8, 0, false, true, &mut env);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 0);
    assert_eq!(env.got.len(), 1);
    io.set_irq(8, 0, false, true, &mut env);
    // EOI by another vCPU or vector: no effect.
    io.eoi_begin(2, 0x38);
    io.eoi_begin(3, 0x39);
    assert_eq!(io.rtc_pending_eoi(), 1);
    let mut h = [0u64; 4];
    io.scan_entry(3, &mut h, &mut |_| false, &mut |_, _| false, &mut |_| false);
    assert_eq!(h, [1 << 0x38, 0, 0, 0]);
    assert_eq!(io.eoi_begin(3, 0x38), 1 << 8);
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
    // Without line_status there is no tracking.
    io.set_irq(8, 0, false, false, &mut env);
    assert_eq!(io.set_irq(8, 0, true, false, &mut env), 1);
}

#[test]
fn rtc_restore_one_rebuilds_the_tracker() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 8, 0x38, 0);
    io.rtc_restore_one(1, true, true);
    io.rtc_restore_one(2, false, true);
    assert_eq!(io.rtc_pending_eoi(), 1);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 0);
    io.rtc_restore_one(1, true, false);
    assert_eq!(io.rtc_pending_eoi(), 0);
}

#[test]
fn state_round_trip_and_irr_injection() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    let mut s = io.get_state();
    s.id = 2;
    s.ioregsel = 0x12;
    s.pad = 0xdead;
    s.redirtbl[1] = 0x31; // edge, unmasked
    s.redirtbl[2] = 0x8042 | (1 << 14); // level, remote IRR already set
    s.redirtbl[3] = 0x8043 | (1 << 16); // level, masked
    s.irr = (1 << 1) | (1 << 2) | (1 << 3);
    io.set_state(&s, &mut env);
    // Pin 1 delivered, pin 2 blocked by remote IRR, pin 3 masked.
    assert_eq!(env.got.len(), 1);
    assert_eq!(env.got[0].vector, 0x31);
    let g = io.get_state();
    assert_eq!(g.irr, (1 << 2) | (1 << 3));
    assert_eq!((g.id, g.ioregsel, g.pad), (2, 0x12, 0xdead));
    assert_eq!(g.redirtbl, s.redirtbl);
    assert_eq!(read_reg(&mut io, &mut env, 0x12), 0x31);
}

#[test]
fn scan_entry_sets_level_entry_vectors_for_targets() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 0, 0x40 | LEVEL | MASKED, 0x0100_0000);
    program(&mut io, &mut env, 1, 0x81 | MASKED, 0x0100_0000); // edge: only with a notifier
    program(&mut io, &mut env, 2, 0xc2 | LEVEL | MASKED, 0x0200_0000);
    let mut h = [0u64; 4];
    io.scan_entry(
        0,
        &mut h,
        &mut |pin| pin == 1,
        &mut |dest, logical| dest == 1 && !logical,
        &mut |v| v == 0xc2,
    );
    assert_eq!(h, [0, 1 << 0, 1 << 1, 1 << 2]);
}

#[test]
fn mode_3_entry_delivers_a_remote_read() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 6, 0x336, 0);
    assert_eq!(io.set_irq(6, 0, true, false, &mut env), 1);
    assert_eq!(env.got.len(), 1);
    assert_eq!(env.got[0].delivery_mode, DeliveryMode::RemoteRead);
    assert_eq!(env.got[0].dest_id, 0);
}

/// A small deterministic generator for the hostile-input tests.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Hostile guest MMIO and user state never panic (overflow checks on) and keep the model's
/// invariants: read-only bits as upstream, IRR only for asserted pins.
#[test]
fn random_hostile_sequences_never_panic() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    for i in 0..200_000 {
        env.ret = (r.next() % 4) as i32 - 1;
        env.vcpu = (r.next() % 5000) as u32;
        env.got.clear();
        let x = r.next();
        match x % 9 {
            0 => {
                let off = [0u64, 0x10, 0x20, 0x40, 0xf0, 0x100][(x >> 8) as usize % 6];
                io.mmio_write(
                    BASE + off,
                    [1, 2, 4, 8, 3][(x >> 16) as usize % 5],
                    r.next(),
                    &mut env,
                );
            }
            1 => {
                io.mmio_read(
                    BASE + (x >> 8) % 0x110,
                    [1, 2, 4, 8, 0][(x >> 20) as usize % 5],
                );
            }
            2 | 3 => {
                io.set_irq(
                    (x >> 8) as usize % 26,
                    (x >> 16) as u32 % 66,
                    x & 1 << 40 != 0,
                    x & 1 << 41 != 0,
                    &mut env,
                );
            }
            4 => {
                let pins = io.eoi_begin((x >> 8) as u32 % 5000, (x >> 20) as u8);
                for pin in 0..NUM_PINS {
                    if pins & (1 << pin) != 0 {
                        io.eoi_pin(pin, x & 1 << 40 != 0, x & 1 << 41 != 0, &mut env);
                    }
                }
                io.eoi_pin((x >> 32) as usize % 30, true, false, &mut env);
            }
            5 if i % 100 == 0 => {
                let mut s = KvmIoapicState::default();
                for b in s.as_bytes_mut() {
                    *b = r.next() as u8;
                }
                io.set_state(&s, &mut env);
            }
            6 => {
                io.rtc_restore_one((x >> 8) as u32, x & 1 << 40 != 0, x & 1 << 41 != 0);
                io.clear_source((x >> 16) as u32 % 70);
            }
            7 => {
                let mut h = [0u64; 4];
                io.scan_entry(
                    (x >> 8) as u32,
                    &mut h,
                    &mut |_| x & 1 != 0,
                    &mut |_, _| x & 2 != 0,
                    &mut |_| x & 4 != 0,
                );
            }
            _ => io.inject_pending_level(&mut env),
        }
        assert!(io.rtc_pending_eoi() >= 0);
        let s = io.get_state();
        assert_eq!(s.irr & !0xff_ffff, 0);
    }
}

struct ResampleEnv {
    inner: Env,
    resampled: Vec<u8>,
}

impl IoapicEnv for ResampleEnv {
    fn deliver(&mut self, irq: &LapicIrq, dest_map: Option<&mut DestMap>) -> i32 {
        self.inner.deliver(irq, dest_map)
    }
    fn notify_resampler(&mut self, pin: u8) -> bool {
        self.resampled.push(pin);
        true
    }
}

#[test]
fn unmask_with_a_resampler_drops_the_pending_bit_instead_of_delivering() {
    let mut io = Ioapic::new();
    let mut env = ResampleEnv {
        inner: Env::new(1),
        resampled: Vec::new(),
    };
    io.mmio_write(BASE, 4, 0x22, &mut env).unwrap();
    io.mmio_write(BASE + 0x10, 4, u64::from(0x49 | LEVEL | MASKED), &mut env)
        .unwrap();
    assert_eq!(io.set_irq(9, 0, true, false, &mut env), -1);
    io.mmio_write(BASE + 0x10, 4, u64::from(0x49 | LEVEL), &mut env)
        .unwrap();
    assert_eq!(env.resampled, [9]);
    assert!(env.inner.got.is_empty());
    assert_eq!(io.irr(), 0);
    // Rewriting an unmasked entry whose remote IRR is set does not re-deliver.
    assert_eq!(io.set_irq(9, 0, false, false, &mut env), 1);
    assert_eq!(io.set_irq(9, 0, true, false, &mut env), 1);
    io.mmio_write(BASE + 0x10, 4, u64::from(0x49 | LEVEL), &mut env)
        .unwrap();
    assert_eq!(env.inner.got.len(), 1);
    assert_eq!(env.resampled, [9]);
}

struct NoMapEnv;

impl IoapicEnv for NoMapEnv {
    fn deliver(&mut self, _irq: &LapicIrq, _dest_map: Option<&mut DestMap>) -> i32 {
        1
    }
}

#[test]
fn rtc_tracking_off_when_the_environment_records_nothing() {
    let mut io = Ioapic::new();
    let mut env = NoMapEnv;
    io.mmio_write(BASE, 4, 0x20, &mut env).unwrap();
    io.mmio_write(BASE + 0x10, 4, 0x38, &mut env).unwrap();
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
    assert_eq!(io.rtc_pending_eoi(), 0);
    io.set_irq(8, 0, false, true, &mut env);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
}

#[test]
fn eoi_of_a_shared_vector_clears_every_matching_pin() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 10, 0x60 | LEVEL, 0);
    program(&mut io, &mut env, 11, 0x60 | LEVEL | (1 << 11), 0x0300_0000);
    io.set_irq(10, 0, true, false, &mut env);
    io.set_irq(11, 0, true, false, &mut env);
    assert!(env.got[1].dest_logical);
    assert_eq!(env.got[1].dest_id, 3);
    io.set_irq(10, 0, false, false, &mut env);
    io.set_irq(11, 0, false, false, &mut env);
    let mut order = Vec::new();
    io.update_eoi(0, 0x60, true, false, &mut env, &mut |p| order.push(p));
    assert_eq!(order, [10, 11]);
    assert!(!io.entry(10).unwrap().remote_irr() && !io.entry(11).unwrap().remote_irr());
    // A vector nobody uses: no pins.
    assert_eq!(io.eoi_begin(0, 0x61), 0);
}

#[test]
fn lowest_priority_nmi_and_extint_entries_decode() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    for (pin, dm, mode) in [
        (12u32, 1u32, DeliveryMode::LowestPriority),
        (13, 4, DeliveryMode::Nmi),
        (14, 7, DeliveryMode::ExtInt),
        (15, 2, DeliveryMode::Smi),
        (16, 5, DeliveryMode::Init),
    ] {
        program(&mut io, &mut env, pin, 0x70 | (dm << 8), 0xff00_0000);
        io.set_irq(pin as usize, 0, true, false, &mut env);
        let irq = env.got.last().copied().unwrap();
        assert_eq!(
            (irq.delivery_mode, irq.dest_id, irq.vector),
            (mode, 0xff, 0x70)
        );
    }
}

/// Answers like upstream's local APICs for one vCPU (ID 0) that every destination matches:
/// fixed and lowest-priority requests are recorded in the destination map, the other modes
/// (NMI, SMI, INIT, the remote-read kick of mode 3) count without being recorded.
struct UpstreamEnv;

impl IoapicEnv for UpstreamEnv {
    fn deliver(&mut self, irq: &LapicIrq, dest_map: Option<&mut DestMap>) -> i32 {
        if let Some(m) = dest_map {
            if matches!(
                irq.delivery_mode,
                DeliveryMode::Fixed | DeliveryMode::LowestPriority
            ) {
                m.set(0, irq.vector);
            }
        }
        1
    }
}

#[test]
fn rtc_in_nmi_or_mode_3_stays_coalesced_as_upstream() {
    // Upstream sets pending_eoi to the delivery's answer: an NMI (or mode 3) RTC is counted
    // without a destination-map bit, so no EOI ever retires it and every later RTC interrupt
    // with line status is coalesced (until KVM_SET_IRQCHIP / KVM_SET_LAPIC restore it).
    for lo in [0x438u32, 0x338] {
        let mut io = Ioapic::new();
        let mut env = UpstreamEnv;
        io.mmio_write(BASE, 4, 0x20, &mut env).unwrap();
        io.mmio_write(BASE + 0x10, 4, u64::from(lo), &mut env)
            .unwrap();
        assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
        assert_eq!(io.rtc_pending_eoi(), 1);
        io.set_irq(8, 0, false, true, &mut env);
        io.eoi_begin(0, 0x38);
        assert_eq!(io.set_irq(8, 0, true, true, &mut env), 0);
        // The restore after KVM_SET_IRQCHIP rebuilds it from the LAPICs: nothing pending.
        io.set_irq(8, 0, false, true, &mut env);
        let s = io.get_state();
        io.set_state(&s, &mut env);
        assert_eq!(io.rtc_pending_eoi(), 0);
        // Fixed mode: the map counts, and the EOI retires it.
        io.mmio_write(BASE + 0x10, 4, 0x38, &mut env).unwrap();
        assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
        assert_eq!(io.rtc_pending_eoi(), 1);
        io.eoi_begin(0, 0x38);
        assert_eq!(io.rtc_pending_eoi(), 0);
    }
}

/// Upstream's EOI loop does not look at the entry's trigger mode: a level EOI (TMR set) of a
/// vector an edge pin shares re-delivers that pin while its line is still asserted.
#[test]
fn level_eoi_redelivers_an_asserted_edge_pin_of_the_same_vector() {
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    program(&mut io, &mut env, 4, 0x64, 0);
    assert_eq!(io.set_irq(4, 0, true, false, &mut env), 1);
    assert_eq!(
        io.eoi_pin(4, true, false, &mut env),
        EoiOutcome::Redelivered(1)
    );
    assert_eq!(env.got.len(), 2);
    // An edge EOI (TMR clear) does not.
    assert_eq!(io.eoi_pin(4, false, false, &mut env), EoiOutcome::Done);
    assert_eq!(env.got.len(), 2);
}

#[test]
fn dest_map_records_fixed_and_lowest_priority_only() {
    let irq = |m, v| LapicIrq {
        vector: v,
        delivery_mode: m,
        dest_logical: false,
        level_triggered: false,
        level: true,
        shorthand: crate::irq::Shorthand::None,
        dest_id: 0,
        msi_redir_hint: false,
    };
    let mut d = DestMap::default();
    d.record(5, &irq(DeliveryMode::Fixed, 0x38));
    d.record(7, &irq(DeliveryMode::LowestPriority, 0x39));
    for (id, m) in [
        (1, DeliveryMode::Nmi),
        (2, DeliveryMode::Init),
        (3, DeliveryMode::StartUp),
        (4, DeliveryMode::Smi),
        (6, DeliveryMode::ExtInt),
    ] {
        d.record(id, &irq(m, 0x40));
    }
    assert_eq!(d.count(), 2);
    assert_eq!(d.get(5), Some(0x38));
    assert_eq!(d.get(7), Some(0x39));
    assert_eq!(d.get(1), None);
    // Past MAX_VCPU_IDS: ignored, nothing panics.
    d.record(MAX_VCPU_IDS as u32, &irq(DeliveryMode::Fixed, 0x38));
    assert_eq!(d.count(), 2);
}

#[test]
fn eoi_exit_bitmap_test_vector() {
    let mut h = [0u64; 4];
    for v in [0u8, 0x41, 0x80, 0xff] {
        assert!(!test_vector(&h, v));
        set_vector(&mut h, v);
        assert!(test_vector(&h, v));
    }
    assert_eq!(h, [1, 1 << 1, 1, 1 << 63]);
    assert!(!test_vector(&h, 0x42));
}

/// vCPUs for the RTC tracker's rebuild: (vCPU ID, physical APIC ID, logical flat ID, vectors
/// in IRR or ISR); a delivery sets the vector in each addressed vCPU's IRR.
struct VcpusEnv {
    vcpus: Vec<(u32, u32, u32, [u64; 4])>,
    scans: usize,
}

impl VcpusEnv {
    fn addressed(&self, dest_id: u32, logical: bool) -> Vec<usize> {
        (0..self.vcpus.len())
            .filter(|&i| {
                let (_, phys, flat, _) = self.vcpus[i];
                if logical {
                    flat & dest_id != 0
                } else {
                    phys == dest_id
                }
            })
            .collect()
    }
}

impl IoapicEnv for VcpusEnv {
    fn deliver(&mut self, irq: &LapicIrq, mut dest_map: Option<&mut DestMap>) -> i32 {
        let hit = self.addressed(irq.dest_id, irq.dest_logical);
        for &i in &hit {
            scan::set_vector(&mut self.vcpus[i].3, irq.vector);
            if let Some(m) = dest_map.as_deref_mut() {
                m.record(self.vcpus[i].0, irq);
            }
        }
        if hit.is_empty() {
            -1
        } else {
            hit.len() as i32
        }
    }

    fn rtc_scan(
        &mut self,
        dest_id: u32,
        logical: bool,
        vector: u8,
        found: &mut dyn FnMut(u32, bool),
    ) {
        self.scans += 1;
        for i in self.addressed(dest_id, logical) {
            let (id, _, _, pending) = self.vcpus[i];
            found(id, test_vector(&pending, vector));
        }
    }
}

#[test]
fn set_state_rebuilds_the_rtc_tracker_from_the_vcpus() {
    // kvm_set_ioapic -> kvm_ioapic_inject_all -> kvm_rtc_eoi_tracking_restore_all: the RTC
    // entry (vector 0x38, logical 0x3) addresses vCPUs 1 and 2; vCPU 1 has 0x38 in service,
    // vCPU 0 (not addressed) too. One EOI is awaited, from vCPU 1 only.
    let mut io = Ioapic::new();
    let mut isr = [0u64; 4];
    scan::set_vector(&mut isr, 0x38);
    let mut env = VcpusEnv {
        vcpus: std::vec![(0, 0, 0x4, isr), (1, 1, 0x1, isr), (2, 2, 0x2, [0; 4])],
        scans: 0,
    };
    let mut s = io.get_state();
    s.redirtbl[8] = 0x38 | (1 << 11) | (0x3 << 56);
    io.set_state(&s, &mut env);
    assert_eq!(env.scans, 1);
    assert_eq!(io.rtc_pending_eoi(), 1);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 0, "coalesced");
    io.set_irq(8, 0, false, true, &mut env);
    // vCPU 0's EOI is not awaited; vCPU 1's retires the tracker.
    io.eoi_begin(0, 0x38);
    assert_eq!(io.rtc_pending_eoi(), 1);
    io.eoi_begin(1, 0x38);
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(
        io.set_irq(8, 0, true, true, &mut env),
        2,
        "delivered to both"
    );
    assert_eq!(io.rtc_pending_eoi(), 2);
}

#[test]
fn set_state_recounts_an_rtc_its_irr_reinjection_delivered() {
    // The IRR re-injection delivers the RTC (physical 1) with tracking; the rebuild after it
    // finds the vector in the target's IRR and counts it again (once).
    let mut io = Ioapic::new();
    let mut env = VcpusEnv {
        vcpus: std::vec![(0, 0, 0, [0; 4]), (1, 1, 0, [0; 4])],
        scans: 0,
    };
    let mut s = io.get_state();
    s.redirtbl[8] = 0x38 | (1 << 56);
    s.irr = 1 << 8;
    io.set_state(&s, &mut env);
    assert!(test_vector(&env.vcpus[1].3, 0x38));
    assert_eq!(io.rtc_pending_eoi(), 1);
    let mut h = [0u64; 4];
    io.scan_entry(1, &mut h, &mut |_| false, &mut |_, _| false, &mut |_| false);
    assert!(test_vector(&h, 0x38), "the awaited EOI is intercepted");
    // A second state with nothing pending anywhere empties the tracker.
    env.vcpus[1].3 = [0; 4];
    s.irr = 0;
    io.set_state(&s, &mut env);
    assert_eq!(io.rtc_pending_eoi(), 0);
    assert_eq!(io.set_irq(8, 0, true, true, &mut env), 1);
}

#[test]
fn set_state_without_vcpus_leaves_the_tracker_empty() {
    // The default environment knows no vCPUs: after the rebuild nothing is awaited, even if
    // the IRR re-injection delivered the RTC.
    let mut io = Ioapic::new();
    let mut env = Env::new(1);
    let mut s = io.get_state();
    s.redirtbl[8] = 0x38;
    s.irr = 1 << 8;
    io.set_state(&s, &mut env);
    assert_eq!(env.got.len(), 1);
    assert_eq!(io.rtc_pending_eoi(), 0);
}

/// `KVM_CAP_IOAPIC_POLARITY_IGNORED`: `KVM_IRQ_LINE`'s level 1 is "asserted" whatever the
/// entry's polarity bit (13) says; an active-low entry behaves exactly as an active-high one.
#[test]
fn polarity_bit_is_ignored() {
    const ACTIVE_LOW: u32 = 1 << 13;
    for (pin, low) in [(5usize, 0u32), (6, ACTIVE_LOW)] {
        for trig in [0, LEVEL] {
            let mut io = Ioapic::new();
            let mut env = Env::new(1);
            program(&mut io, &mut env, pin as u32, 0x45 | trig | low, 0);
            // Deasserted (level 0) never delivers, even on an active-low pin.
            assert_eq!(io.set_irq(pin, 0, false, false, &mut env), 1);
            assert!(
                env.got.is_empty(),
                "pin {pin} trig {trig:#x}: level 0 delivered"
            );
            assert_eq!(io.irr(), 0);
            // Asserted (level 1) delivers once.
            assert_eq!(io.set_irq(pin, 0, true, false, &mut env), 1);
            assert_eq!(env.got.len(), 1, "pin {pin} trig {trig:#x}");
            assert_eq!(env.got[0].vector, 0x45);
            assert_eq!(env.got[0].level_triggered, trig != 0);
            assert_eq!(io.entry(pin).unwrap().remote_irr(), trig != 0);
            // Back to 0: the line is clear again, nothing more delivered.
            assert_eq!(io.set_irq(pin, 0, false, false, &mut env), 1);
            assert_eq!(io.irr(), 0);
            assert_eq!(env.got.len(), 1);
        }
    }
}
