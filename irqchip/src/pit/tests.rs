// SPDX-License-Identifier: GPL-2.0-only
//! Host tests of the PIT against upstream's arithmetic.

use super::uapi::*;
use super::*;

const T0: i64 = 1_000_000_000;

fn pit() -> Pit {
    let (p, cmd) = Pit::new(T0, DEFAULT_MIN_PERIOD_NS);
    assert_eq!(cmd, TimerCmd::Cancel);
    p
}

fn out(p: &mut Pit, port: u16, v: u8, now: i64) -> Option<TimerCmd> {
    p.ioport_write(port, v, now).unwrap()
}

fn inb(p: &mut Pit, port: u16, now: i64) -> u8 {
    p.ioport_read(port, now).unwrap()
}

#[test]
fn reset_state() {
    let p = pit();
    let s = p.get_state2();
    for (i, c) in s.channels.iter().enumerate() {
        assert_eq!(c.count, 0x10000);
        assert_eq!(c.mode, 0xff);
        assert_eq!(c.gate, u8::from(i != 2));
        assert_eq!((c.rw_mode, c.read_state, c.write_state), (0, 0, 0));
    }
    assert_eq!(s.channels[0].count_load_time, 0);
    assert_eq!(s.channels[1].count_load_time, T0);
    assert_eq!(s.channels[2].count_load_time, T0);
    assert_eq!(s.flags, 0);
    assert!(p.reinject().reinject());
}

#[test]
fn mode2_word_write_programs_a_periodic_timer() {
    let mut p = pit();
    assert_eq!(out(&mut p, 0x43, 0x34, T0), None);
    assert_eq!(out(&mut p, 0x40, 0x9c, T0), None);
    let cmd = out(&mut p, 0x40, 0x2e, T0).unwrap();
    assert_eq!(
        cmd,
        TimerCmd::Start {
            expires: T0 + 10_000_159,
            period: 10_000_159,
            periodic: true,
            generation: 2,
        }
    );
    let c = p.get_state2().channels[0];
    assert_eq!(
        (c.count, c.mode, c.rw_mode, c.write_state),
        (11932, 2, 3, 3)
    );
    // 5 ms in: 5965 ticks counted.
    assert_eq!(p.get_count(0, T0 + 5_000_000), 11932 - 5965);
    // Word reads: low byte then high byte.
    let now = T0 + 5_000_000;
    let v = 11932 - 5965;
    assert_eq!(inb(&mut p, 0x40, now), (v & 0xff) as u8);
    assert_eq!(inb(&mut p, 0x40, now), (v >> 8) as u8);
    // A tick of the periodic timer moves the reference.
    let TimerCmd::Start { generation, .. } = cmd else {
        unreachable!()
    };
    let f = p.timer_fired(generation);
    assert_eq!(f.restart_at, Some(T0 + 2 * 10_000_159));
    assert!(f.queue_work);
    assert_eq!(p.get_count(0, T0 + 10_000_159 + 5_000_000), 11932 - 5965);
    // Output in mode 2: low for one tick at the terminal count.
    assert!(!p.get_out(0, T0 + 10_000_159));
}

#[test]
fn counter_latch_freezes_the_read_value() {
    let mut p = pit();
    out(&mut p, 0x43, 0x34, T0);
    out(&mut p, 0x40, 0x00, T0);
    out(&mut p, 0x40, 0x00, T0); // 0 = 65536
    assert_eq!(p.get_state2().channels[0].count, 0x10000);
    out(&mut p, 0x43, 0x00, T0 + 1_000_000); // latch channel 0: 1193 ticks
    let c = p.get_state2().channels[0];
    assert_eq!((c.latched_count, c.count_latched), (64343, 3));
    // A second latch before the read does not overwrite.
    out(&mut p, 0x43, 0x00, T0 + 2_000_000);
    assert_eq!(
        inb(&mut p, 0x40, T0 + 9_000_000),
        ((0x10000 - 1193) & 0xff) as u8
    );
    assert_eq!(
        inb(&mut p, 0x40, T0 + 9_000_000),
        ((0x10000 - 1193) >> 8) as u8
    );
    assert_eq!(p.get_state2().channels[0].count_latched, 0);
}

#[test]
fn read_back_latches_status_then_count() {
    let mut p = pit();
    out(&mut p, 0x43, 0xb0, T0); // channel 2, word, mode 0
    out(&mut p, 0x42, 0xe8, T0);
    out(&mut p, 0x42, 0x03, T0); // 1000
                                 // Read-back of channel 2, status and count.
    out(&mut p, 0x43, 0xc8, T0 + 100_000);
    // Status: output low (119 < 1000), RW 3, mode 0, binary.
    assert_eq!(inb(&mut p, 0x42, T0 + 900_000), 0x30);
    assert_eq!(inb(&mut p, 0x42, T0 + 900_000), ((1000 - 119) & 0xff) as u8);
    assert_eq!(inb(&mut p, 0x42, T0 + 900_000), ((1000 - 119) >> 8) as u8);
    // Mode 0: output high once the count ran out (838095 ns = 1000 ticks).
    out(&mut p, 0x43, 0xe8, T0 + 838_096);
    assert_eq!(inb(&mut p, 0x42, T0), 0xb0);
    assert!(!p.get_out(2, T0 + 838_000));
    assert!(p.get_out(2, T0 + 838_096));
}

#[test]
fn lsb_and_msb_access_modes() {
    let mut p = pit();
    out(&mut p, 0x43, 0x52, T0); // channel 1, LSB, mode 1
    out(&mut p, 0x41, 0x80, T0 + 10);
    assert_eq!(p.get_state2().channels[1].count, 0x80);
    assert_eq!(p.get_state2().channels[1].count_load_time, T0 + 10);
    assert_eq!(inb(&mut p, 0x41, T0 + 10), 0x80);
    out(&mut p, 0x43, 0x62, T0); // channel 1, MSB, mode 1
    out(&mut p, 0x41, 0x12, T0 + 20);
    assert_eq!(p.get_state2().channels[1].count, 0x1200);
    assert_eq!(inb(&mut p, 0x41, T0 + 20), 0x12);
    // Mode 1: upstream's output is high while d < count.
    assert!(p.get_out(1, T0 + 20));
}

#[test]
fn modes_6_and_7_alias_2_and_3() {
    let mut p = pit();
    out(&mut p, 0x43, 0x7c, T0); // channel 1, word, mode 6
    assert_eq!(p.get_state2().channels[1].mode, 2);
    out(&mut p, 0x43, 0x7e, T0);
    assert_eq!(p.get_state2().channels[1].mode, 3);
}

#[test]
fn mode3_counts_twice_as_fast_and_square_wave_output() {
    let mut p = pit();
    out(&mut p, 0x43, 0x76, T0); // channel 1, word, mode 3
    out(&mut p, 0x41, 100, T0);
    out(&mut p, 0x41, 0, T0);
    // 10 ticks = 8380 ns (8380 * 1.193181 = 9.99).
    let now = T0 + 8_400;
    assert_eq!(p.get_count(1, now), 100 - 20);
    assert!(p.get_out(1, now));
    // 60 ticks in: second half of the period, low.
    assert!(!p.get_out(1, T0 + 50_300));
}

#[test]
fn periodic_period_is_clamped_but_first_expiry_is_not() {
    let mut p = pit();
    out(&mut p, 0x43, 0x34, T0);
    out(&mut p, 0x40, 2, T0);
    let cmd = out(&mut p, 0x40, 0, T0).unwrap();
    assert_eq!(
        cmd,
        TimerCmd::Start {
            expires: T0 + 1676,
            period: 200_000,
            periodic: true,
            generation: 2
        }
    );
}

#[test]
fn mode0_channel0_is_one_shot_and_stale_timers_are_ignored() {
    let mut p = pit();
    out(&mut p, 0x43, 0x30, T0);
    out(&mut p, 0x40, 0xe8, T0);
    let cmd = out(&mut p, 0x40, 0x03, T0).unwrap();
    let TimerCmd::Start {
        periodic,
        generation,
        ..
    } = cmd
    else {
        unreachable!()
    };
    assert!(!periodic);
    let f = p.timer_fired(generation);
    assert_eq!(f.restart_at, None);
    assert_eq!(p.reinject().pending(), 1);
    assert_eq!(
        p.timer_fired(generation + 1),
        TimerFire {
            queue_work: false,
            restart_at: None
        }
    );
    // Counting goes on through zero: 0xffff-wrapping.
    assert_eq!(
        p.get_count(0, T0 + 838_096 + 838_096),
        (1000 - 2000) & 0xffff
    );
}

#[test]
fn reinjection_delivers_one_tick_per_ack() {
    let mut r = PitReinject::default();
    assert!(r.set_reinject(true));
    assert!(!r.set_reinject(true));
    // Two ticks before the guest acks.
    r.pending += 1;
    assert!(r.on_work());
    r.pending += 1;
    assert!(!r.on_work());
    assert!(r.on_ack());
    assert!(r.on_work());
    assert!(!r.on_ack());
    assert_eq!(r.pending(), 0);
    r.pending = 5;
    r.on_mask(true);
    assert_eq!(r.pending(), 5);
    r.on_mask(false);
    assert_eq!(r.pending(), 0);
    assert!(r.set_reinject(false));
    assert!(r.on_work() && r.on_work());
}

#[test]
fn speaker_port_drives_gate2() {
    let mut p = pit();
    out(&mut p, 0x43, 0xb2, T0); // channel 2, word, mode 1
    out(&mut p, 0x42, 0x00, T0);
    out(&mut p, 0x42, 0x10, T0);
    p.speaker_write(0x03, T0 + 100);
    let s = p.get_state2();
    assert_eq!(s.flags, KVM_PIT_FLAGS_SPEAKER_DATA_ON);
    assert_eq!(s.channels[2].gate, 1);
    assert_eq!(s.channels[2].count_load_time, T0 + 100);
    // Mode 1 output is high while d < count; refresh bit is now bit 14 of the time.
    let now = T0 + 100 + (1 << 14);
    let refresh = ((now as u32 >> 14) & 1) as u8;
    assert_eq!(p.speaker_read(now), 0x03 | (1 << 5) | (refresh << 4));
    p.speaker_write(0x00, T0 + 200);
    assert_eq!(p.get_state2().flags, 0);
    assert_eq!(p.get_state2().channels[2].gate, 0);
}

#[test]
fn set_state2_round_trip_and_hpet_legacy() {
    let mut p = pit();
    let mut s = p.get_state2();
    s.channels[0].mode = 2;
    s.channels[0].count = 11932;
    s.channels[0].count_load_time = 42;
    s.channels[1].latched_count = 7;
    s.reserved = [9; 9];
    let cmd = p.set_state2(&s, T0 + 5).unwrap();
    assert!(matches!(cmd, TimerCmd::Start { periodic: true, .. }));
    let g = p.get_state2();
    assert_eq!(g.channels[0], s.channels[0]);
    assert_eq!(g.channels[1].latched_count, 7);
    assert_eq!(g.channels[1].count_load_time, T0 + 5);
    assert_eq!(g.reserved, [0; 9]);
    // HPET legacy on: the channel-0 timer stops and stays off.
    s.flags = KVM_PIT_FLAGS_HPET_LEGACY;
    assert_eq!(p.set_state2(&s, T0 + 6), Some(TimerCmd::Cancel));
    assert_eq!(p.get_state2().channels[0].mode, 2);
    assert_eq!(p.set_state2(&s, T0 + 7), None);
    out(&mut p, 0x43, 0x34, T0);
    out(&mut p, 0x40, 1, T0);
    assert_eq!(out(&mut p, 0x40, 0, T0), None);
    // Count 0 in a SET means 65536.
    s.flags = 0;
    s.channels[1].count = 0;
    p.set_state2(&s, T0);
    assert_eq!(p.get_state2().channels[1].count, 0x10000);
}

#[test]
fn control_port_reads_zero_and_foreign_ports_are_not_claimed() {
    let mut p = pit();
    assert_eq!(p.ioport_read(0x43, T0), Some(0));
    assert_eq!(p.ioport_read(0x44, T0), None);
    assert_eq!(p.ioport_write(0x3f, 0, T0), None);
}

#[test]
fn uapi_flag_values() {
    assert_eq!(KVM_PIT_FLAGS_HPET_LEGACY, 1);
    assert_eq!(KVM_PIT_FLAGS_SPEAKER_DATA_ON, 2);
    assert_eq!(KVM_PIT_SPEAKER_DUMMY, 1);
}

#[test]
fn mul_u64_u32_div_matches_wide_arithmetic() {
    for a in [
        0u64,
        1,
        999_999_999,
        1 << 32,
        (1 << 40) + 12345,
        u64::MAX / 3,
        u64::MAX,
    ] {
        let wide = (u128::from(a) * u128::from(PIT_FREQ) / u128::from(NSEC_PER_SEC)) as u64;
        assert_eq!(
            super::mul_u64_u32_div(a, PIT_FREQ as u32, NSEC_PER_SEC as u32),
            wide,
            "{a}"
        );
    }
}

/// kvm-ioctls `test_pit2`: GET, SET the same, GET again: equal but for `count_load_time`.
#[test]
fn kvm_ioctls_pit2_round_trip() {
    let mut p = pit();
    let s = p.get_state2();
    p.set_state2(&s, T0 + 1234);
    let mut g = p.get_state2();
    for (a, b) in g.channels.iter_mut().zip(s.channels.iter()) {
        a.count_load_time = b.count_load_time;
    }
    assert_eq!(g, s);
}

#[test]
fn random_hostile_sequences_never_panic() {
    use x86::uapi::Pod;
    let mut r = crate::ioapic::tests::Rng(0x2545_f491_4f6c_dd1d);
    let (mut p, _) = Pit::new(0, DEFAULT_MIN_PERIOD_NS);
    let mut now: i64 = 0;
    let mut generation = 0;
    for _ in 0..200_000 {
        let x = r.next();
        now = now.wrapping_add((x >> 40) as i64 % 3_000_000 - 1_000_000);
        let port = 0x3f + (x >> 8) as u16 % 6;
        let cmd = match x % 7 {
            0 | 1 => p.ioport_write(port, (x >> 16) as u8, now).flatten(),
            2 | 3 => {
                p.ioport_read(port, now);
                None
            }
            4 => {
                p.speaker_write((x >> 16) as u8, now);
                p.speaker_read(now);
                None
            }
            5 => {
                let f = p.timer_fired(if x & 1 << 30 != 0 { generation } else { x });
                let _ = f;
                let re = p.reinject_mut();
                re.on_work();
                re.on_ack();
                re.on_mask(x & 1 << 31 != 0);
                re.set_reinject(x & 1 << 32 != 0);
                None
            }
            _ => {
                if x & 0xf00 == 0 {
                    let mut st = KvmPitState2::default();
                    for b in st.as_bytes_mut() {
                        *b = r.next() as u8;
                    }
                    if x & 1 << 33 != 0 {
                        st.channels[0].count_load_time = i64::MIN;
                        st.channels[1].count = u32::MAX;
                    }
                    p.set_state2(&st, now)
                } else {
                    None
                }
            }
        };
        if let Some(TimerCmd::Start { generation: g, .. }) = cmd {
            generation = g;
        }
        for ch in 0..4 {
            p.get_count(ch, now);
            p.get_out(ch, now);
        }
    }
}

#[test]
fn counts_in_modes_1_4_and_5() {
    for mode in [1u8, 4, 5] {
        let mut p = pit();
        out(&mut p, 0x43, 0x70 | (mode << 1), T0); // channel 1, word
        out(&mut p, 0x41, 0xe8, T0);
        out(&mut p, 0x41, 0x03, T0); // 1000
                                     // 500 ticks: 419048 ns (500.0000 ticks).
        assert_eq!(p.get_count(1, T0 + 419_048), 500, "mode {mode}");
        assert_eq!(
            p.get_count(1, T0 + 2 * 838_096),
            (1000 - 2000) & 0xffff,
            "mode {mode}"
        );
        let at_terminal = T0 + 838_096;
        assert_eq!(p.get_out(1, at_terminal), mode != 1, "mode {mode}");
    }
}

#[test]
fn read_back_of_two_counts() {
    let mut p = pit();
    out(&mut p, 0x43, 0x34, T0);
    out(&mut p, 0x40, 0x00, T0);
    out(&mut p, 0x40, 0x10, T0); // 4096, mode 2
    out(&mut p, 0x43, 0x74, T0);
    out(&mut p, 0x41, 0x00, T0);
    out(&mut p, 0x41, 0x20, T0); // 8192, mode 2
    out(&mut p, 0x43, 0xd6, T0 + 838_096); // counts of channels 0 and 1 (1000 ticks)
    let t = T0 + 5_000_000;
    assert_eq!(inb(&mut p, 0x40, t), ((4096 - 1000) & 0xff) as u8);
    assert_eq!(inb(&mut p, 0x40, t), ((4096 - 1000) >> 8) as u8);
    assert_eq!(inb(&mut p, 0x41, t), ((8192 - 1000) & 0xff) as u8);
    assert_eq!(inb(&mut p, 0x41, t), ((8192 - 1000) >> 8) as u8);
    // No status was latched.
    assert_eq!(p.get_state2().channels[0].status_latched, 0);
}
