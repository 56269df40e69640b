// SPDX-License-Identifier: GPL-2.0-only
//! The 8254 PIT (upstream `arch/x86/kvm/i8254.c`, Linux 6.12): three counters at ports
//! 0x40-0x43 (control word, modes 0-5, LSB/MSB/word access, counter latch, read-back with
//! status latch), the speaker port 0x61 (channel 2's gate, `KVM_PIT_SPEAKER_DUMMY`), counts and
//! outputs computed from elapsed time at [`PIT_FREQ`] Hz, `KVM_GET/SET_PIT2` (and the older
//! `KVM_GET/SET_PIT`) with `KVM_PIT_FLAGS_HPET_LEGACY`, and the channel-0 timer that raises
//! IRQ0, with upstream's missed-tick reinjection (`KVM_REINJECT_CONTROL`).
//!
//! Time is the caller's: every operation that reads the clock takes `now`, host monotonic
//! nanoseconds (`ktime_get()`), which is also what `count_load_time` holds in the uapi.
//!
//! The channel-0 timer is the module's hrtimer. Operations that (re)program it answer a
//! [`TimerCmd`]; the hrtimer's callback calls [`Pit::timer_fired`] with the generation of the
//! [`TimerCmd::Start`] that armed it, which answers whether to queue the injection work and
//! when to fire again. A callback of a timer that was replaced meanwhile (a stale generation)
//! does nothing, so the module may cancel the old hrtimer after dropping its lock.
//!
//! Access modes: 1 LSB, 2 MSB, 3 LSB then MSB (`read_state`/`write_state` 3 and 4 are the
//! two halves of a word); any other state behaves as LSB, as upstream.
//!
//! Concurrency: plain data. Upstream guards the PIT with a mutex and the reinjection counters
//! with atomics because the hrtimer callback runs in hard interrupt context; here every method
//! is non-sleeping, so one irq-safe spinlock around the whole model serves both.

#[cfg(test)]
mod tests;
pub mod uapi;

use uapi::{
    KvmPitChannelState, KvmPitState2, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON,
};

/// The PIT's input clock (upstream `KVM_PIT_FREQ`), Hz.
pub const PIT_FREQ: u64 = 1_193_181;
/// The PIT's first port (`KVM_PIT_BASE_ADDRESS`); it has four.
pub const PIT_BASE_PORT: u16 = 0x40;
/// The speaker / NMI status port (`KVM_SPEAKER_BASE_ADDRESS`).
pub const SPEAKER_PORT: u16 = 0x61;
/// Upstream's default `kvm.min_timer_period_us` (200 us): the shortest period a periodic
/// channel-0 timer re-arms with.
pub const DEFAULT_MIN_PERIOD_NS: i64 = 200_000;
const NSEC_PER_SEC: u64 = 1_000_000_000;

const RW_STATE_MSB: u8 = 2;
const RW_STATE_WORD0: u8 = 3;
const RW_STATE_WORD1: u8 = 4;

/// What the module must do with its channel-0 hrtimer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerCmd {
    /// Cancel it (and flush the injection work), upstream `destroy_pit_timer`.
    Cancel,
    /// Cancel it and flush the work, then start it to expire at `expires` (absolute, ns); it
    /// re-arms every `period` ns if `periodic`. Pass `generation` to [`Pit::timer_fired`].
    Start {
        /// The first expiry (now + the programmed interval, not clamped).
        expires: i64,
        /// The re-arm period (clamped to the minimum period for periodic timers).
        period: i64,
        /// Modes 2 and 3.
        periodic: bool,
        /// Identifies this arming.
        generation: u64,
    },
}

/// What a channel-0 expiry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerFire {
    /// Queue the injection work (upstream `kthread_queue_work(expired)`), which then calls
    /// [`PitReinject::on_work`] and, if that says so, pulses GSI 0 from the PIT's source.
    pub queue_work: bool,
    /// Re-arm the hrtimer for this absolute time (periodic timers), or let it stop.
    pub restart_at: Option<i64>,
}

/// Upstream's reinjection bookkeeping (`reinject`, `pending`, `irq_ack`): with reinjection on
/// (the default), one IRQ0 is in flight at a time and ticks that expire meanwhile are counted
/// and delivered one per guest acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitReinject {
    reinject: bool,
    pending: u32,
    irq_ack: bool,
}

impl Default for PitReinject {
    fn default() -> Self {
        Self {
            reinject: false,
            pending: 0,
            irq_ack: true,
        }
    }
}

impl PitReinject {
    /// Whether reinjection is on.
    pub fn reinject(&self) -> bool {
        self.reinject
    }

    /// Ticks counted and not yet delivered.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Upstream `kvm_pit_reset_reinject`.
    pub fn reset(&mut self) {
        self.pending = 0;
        self.irq_ack = true;
    }

    /// Upstream `kvm_pit_set_reinject` (`KVM_REINJECT_CONTROL`, and on at PIT creation):
    /// `true` if it changed, in which case the module registers (on) or unregisters (off) the
    /// ack notifier of GSI 0 ([`Self::on_ack`]) and the mask notifier of IRQ 0
    /// ([`Self::on_mask`]).
    pub fn set_reinject(&mut self, on: bool) -> bool {
        if self.reinject == on {
            return false;
        }
        if on {
            self.reset();
        }
        self.reinject = on;
        true
    }

    /// The injection work (upstream `pit_do_work`): `true` if IRQ0 is to be pulsed now (and
    /// NMIs sent to the vCPUs whose LVT0 is in NMI mode).
    pub fn on_work(&mut self) -> bool {
        if self.reinject {
            core::mem::replace(&mut self.irq_ack, false)
        } else {
            true
        }
    }

    /// The guest acknowledged IRQ0 (upstream `kvm_pit_ack_irq`): `true` if a counted tick
    /// is to be delivered now (queue the work).
    pub fn on_ack(&mut self) -> bool {
        self.irq_ack = true;
        if self.pending > 0 {
            self.pending -= 1;
            self.pending > 0
        } else {
            false
        }
    }

    /// IRQ 0's mask changed (upstream `pit_mask_notifer`): unmasking forgets the backlog.
    pub fn on_mask(&mut self, masked: bool) {
        if !masked {
            self.reset();
        }
    }
}

/// The PIT.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [KvmPitChannelState; 3],
    flags: u32,
    is_periodic: bool,
    period: i64,
    expires: i64,
    generation: u64,
    min_period_ns: i64,
    reinject: PitReinject,
}

/// `mul_u64_u32_div(a, mul, div)`: `a * mul / div` with a 96-bit intermediate, truncated to
/// 64 bits, without 128-bit division (the kernel has no `__udivti3`).
fn mul_u64_u32_div(a: u64, mul: u32, div: u32) -> u64 {
    let div = u64::from(div.max(1));
    let hi = (a >> 32) * u64::from(mul);
    let lo = (a & 0xffff_ffff) * u64::from(mul);
    let (q1, r1) = (hi / div, hi % div);
    // r1 < div < 2^32, so r1 * 2^32 + lo < 2^64.
    let rest = (r1 << 32) + lo;
    (q1 << 32).wrapping_add(rest / div)
}

fn ns_to_ticks(t: i64) -> i64 {
    // pit_get_count: mul_u64_u32_div(t, KVM_PIT_FREQ, NSEC_PER_SEC), t taken as u64.
    mul_u64_u32_div(t as u64, PIT_FREQ as u32, NSEC_PER_SEC as u32) as i64
}

impl Pit {
    /// A PIT as `KVM_CREATE_PIT2` makes it (`kvm_create_pit`: `kvm_pit_reset`, then
    /// reinjection on), at time `now`; periodic timers are clamped to `min_period_ns`
    /// (`kvm.min_timer_period_us` * 1000, [`DEFAULT_MIN_PERIOD_NS`] upstream). The answer's
    /// [`TimerCmd`] is always `Cancel` (no timer runs yet); reinjection being on, the module
    /// registers GSI 0's ack and mask notifiers.
    pub fn new(now: i64, min_period_ns: i64) -> (Self, TimerCmd) {
        let mut pit = Self {
            channels: [KvmPitChannelState::default(); 3],
            flags: 0,
            is_periodic: false,
            period: 0,
            expires: 0,
            generation: 0,
            min_period_ns,
            reinject: PitReinject::default(),
        };
        let mut cmd = None;
        for i in 0..3 {
            pit.channels[i].mode = 0xff;
            pit.channels[i].gate = u8::from(i != 2);
            cmd = pit.load_count(i, 0, now).or(cmd);
        }
        pit.reinject.reset();
        pit.reinject.set_reinject(true);
        (pit, cmd.unwrap_or(TimerCmd::Cancel))
    }

    /// The reinjection bookkeeping.
    pub fn reinject(&self) -> &PitReinject {
        &self.reinject
    }

    /// The reinjection bookkeeping, for the ack/mask notifiers, the work and
    /// `KVM_REINJECT_CONTROL`.
    pub fn reinject_mut(&mut self) -> &mut PitReinject {
        &mut self.reinject
    }

    /// The `KVM_PIT_FLAGS_*` word.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Upstream `create_pit_timer`.
    fn create_timer(&mut self, val: u32, periodic: bool, now: i64) -> Option<TimerCmd> {
        if self.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0 {
            return None;
        }
        let interval = (u64::from(val) * NSEC_PER_SEC / PIT_FREQ) as i64;
        self.period = interval;
        self.is_periodic = periodic;
        self.reinject.reset();
        // Periodic hrtimers are not throttled by the host scheduler: keep them slow enough.
        if periodic && self.period < self.min_period_ns {
            self.period = self.min_period_ns;
        }
        self.generation = self.generation.wrapping_add(1);
        self.expires = now.wrapping_add(interval);
        Some(TimerCmd::Start {
            expires: self.expires,
            period: self.period,
            periodic,
            generation: self.generation,
        })
    }

    /// Upstream `pit_load_count`.
    fn load_count(&mut self, channel: usize, val: u32, now: i64) -> Option<TimerCmd> {
        // The largest count is 0: 65536 in binary counting.
        let val = if val == 0 { 0x10000 } else { val };
        let c = self.channels.get_mut(channel)?;
        c.count = val;
        if channel != 0 {
            c.count_load_time = now;
            return None;
        }
        match c.mode {
            0 | 1 | 4 => self.create_timer(val, false, now),
            2 | 3 => self.create_timer(val, true, now),
            _ => {
                self.generation = self.generation.wrapping_add(1);
                Some(TimerCmd::Cancel)
            }
        }
    }

    /// The channel-0 hrtimer armed by the `Start` with `generation` expired (upstream
    /// `pit_timer_fn`). A stale generation answers nothing to do.
    pub fn timer_fired(&mut self, generation: u64) -> TimerFire {
        if generation != self.generation {
            return TimerFire {
                queue_work: false,
                restart_at: None,
            };
        }
        if self.reinject.reinject {
            self.reinject.pending = self.reinject.pending.saturating_add(1);
        }
        let restart_at = if self.is_periodic {
            self.expires = self.expires.wrapping_add(self.period);
            Some(self.expires)
        } else {
            None
        };
        TimerFire {
            queue_work: true,
            restart_at,
        }
    }

    /// Nanoseconds counted by `channel` at `now` (upstream `kpit_elapsed`): channel 0 from its
    /// timer (period minus the time to the next expiry, 0 before any timer was programmed),
    /// the others since `count_load_time`.
    fn elapsed(&self, channel: usize, now: i64) -> i64 {
        if channel == 0 {
            if self.period == 0 {
                return 0;
            }
            return self.period.wrapping_sub(self.expires.wrapping_sub(now));
        }
        self.channels
            .get(channel)
            .map_or(0, |c| now.wrapping_sub(c.count_load_time))
    }

    fn count_of(c: &KvmPitChannelState) -> i64 {
        if c.count == 0 {
            0x10000
        } else {
            i64::from(c.count)
        }
    }

    /// The current count of `channel` at `now` (upstream `pit_get_count`).
    pub fn get_count(&self, channel: usize, now: i64) -> i32 {
        let Some(c) = self.channels.get(channel) else {
            return 0;
        };
        let d = ns_to_ticks(self.elapsed(channel, now));
        let count = Self::count_of(c);
        let counter = match c.mode {
            0 | 1 | 4 | 5 => count.wrapping_sub(d) & 0xffff,
            // Not exact for odd counts, as upstream.
            3 => count - d.wrapping_mul(2) % count,
            _ => count - d % count,
        };
        counter as i32
    }

    /// The output of `channel` at `now` (upstream `pit_get_out`).
    pub fn get_out(&self, channel: usize, now: i64) -> bool {
        let Some(c) = self.channels.get(channel) else {
            return false;
        };
        let d = ns_to_ticks(self.elapsed(channel, now));
        let count = Self::count_of(c);
        match c.mode {
            1 => d < count,
            2 => d % count == 0 && d != 0,
            3 => d % count < i64::from(c.count.wrapping_add(1) >> 1),
            4 | 5 => d == count,
            _ => d >= count,
        }
    }

    fn latch_count(&mut self, channel: usize, now: i64) {
        let count = self.get_count(channel, now);
        if let Some(c) = self.channels.get_mut(channel) {
            if c.count_latched == 0 {
                c.latched_count = count as u16;
                c.count_latched = c.rw_mode;
            }
        }
    }

    fn latch_status(&mut self, channel: usize, now: i64) {
        let out = self.get_out(channel, now);
        if let Some(c) = self.channels.get_mut(channel) {
            if c.status_latched == 0 {
                // NULL COUNT (bit 6) is not emulated, as upstream.
                c.status =
                    (u8::from(out) << 7) | (c.rw_mode << 4) | (c.mode.wrapping_shl(1)) | c.bcd;
                c.status_latched = 1;
            }
        }
    }

    /// Whether the PIT device claims `port` (0x40-0x43).
    pub fn claims_port(port: u16) -> bool {
        (PIT_BASE_PORT..PIT_BASE_PORT + 4).contains(&port)
    }

    /// A guest `OUT` to a PIT port (upstream `pit_ioport_write`; only the low byte counts):
    /// `None` if not the PIT's port, else the timer command the write implies, if any.
    pub fn ioport_write(&mut self, port: u16, val: u8, now: i64) -> Option<Option<TimerCmd>> {
        if !Self::claims_port(port) {
            return None;
        }
        let addr = usize::from(port & 3);
        if addr == 3 {
            let channel = usize::from(val >> 6);
            if channel == 3 {
                // Read-back.
                for ch in 0..3 {
                    if val & (2 << ch) != 0 {
                        if val & 0x20 == 0 {
                            self.latch_count(ch, now);
                        }
                        if val & 0x10 == 0 {
                            self.latch_status(ch, now);
                        }
                    }
                }
            } else {
                let access = (val >> 4) & 3;
                if access == 0 {
                    self.latch_count(channel, now);
                } else if let Some(s) = self.channels.get_mut(channel) {
                    s.rw_mode = access;
                    s.read_state = access;
                    s.write_state = access;
                    s.mode = (val >> 1) & 7;
                    if s.mode > 5 {
                        s.mode -= 4;
                    }
                    s.bcd = val & 1;
                }
            }
            return Some(None);
        }
        let s = &mut self.channels[addr];
        let v = u32::from(val);
        Some(match s.write_state {
            RW_STATE_MSB => self.load_count(addr, v << 8, now),
            RW_STATE_WORD0 => {
                s.write_latch = val;
                s.write_state = RW_STATE_WORD1;
                None
            }
            RW_STATE_WORD1 => {
                let latch = u32::from(s.write_latch);
                s.write_state = RW_STATE_WORD0;
                self.load_count(addr, latch | (v << 8), now)
            }
            _ => self.load_count(addr, v, now),
        })
    }

    /// A guest `IN` from a PIT port (upstream `pit_ioport_read`): `None` if not the PIT's port;
    /// the control port reads 0 (upstream leaves the buffer alone).
    pub fn ioport_read(&mut self, port: u16, now: i64) -> Option<u8> {
        if !Self::claims_port(port) {
            return None;
        }
        let addr = usize::from(port & 3);
        if addr == 3 {
            return Some(0);
        }
        if self.channels[addr].status_latched != 0 {
            let s = &mut self.channels[addr];
            s.status_latched = 0;
            return Some(s.status);
        }
        if self.channels[addr].count_latched != 0 {
            let s = &mut self.channels[addr];
            let lc = s.latched_count;
            return Some(match s.count_latched {
                RW_STATE_MSB => {
                    s.count_latched = 0;
                    (lc >> 8) as u8
                }
                RW_STATE_WORD0 => {
                    s.count_latched = RW_STATE_MSB;
                    lc as u8
                }
                _ => {
                    s.count_latched = 0;
                    lc as u8
                }
            });
        }
        let count = self.get_count(addr, now);
        let s = &mut self.channels[addr];
        Some(match s.read_state {
            RW_STATE_MSB => (count >> 8) as u8,
            RW_STATE_WORD0 => {
                s.read_state = RW_STATE_WORD1;
                count as u8
            }
            RW_STATE_WORD1 => {
                s.read_state = RW_STATE_WORD0;
                (count >> 8) as u8
            }
            _ => count as u8,
        })
    }

    /// Upstream `pit_set_gate` for channel 2: a rising gate restarts counting in modes 1, 2,
    /// 3 and 5.
    fn set_gate2(&mut self, val: bool, now: i64) {
        let c = &mut self.channels[2];
        if matches!(c.mode, 1 | 2 | 3 | 5) && c.gate == 0 && val {
            c.count_load_time = now;
        }
        c.gate = u8::from(val);
    }

    /// A guest write to port 0x61 (upstream `speaker_ioport_write`, only with
    /// `KVM_PIT_SPEAKER_DUMMY`): bit 0 is channel 2's gate, bit 1 the speaker data enable.
    pub fn speaker_write(&mut self, val: u8, now: i64) {
        if val & 2 != 0 {
            self.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        } else {
            self.flags &= !KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        }
        self.set_gate2(val & 1 != 0, now);
    }

    /// A guest read of port 0x61 (upstream `speaker_ioport_read`): bit 0 gate 2, bit 1 speaker
    /// data, bit 4 the refresh clock (toggling every 2^14 ns), bit 5 channel 2's output.
    pub fn speaker_read(&self, now: i64) -> u8 {
        let refresh = ((now as u32) >> 14) & 1;
        (u8::from(self.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0) << 1)
            | self.channels[2].gate
            | (u8::from(self.get_out(2, now)) << 5)
            | ((refresh as u8) << 4)
    }

    /// `KVM_GET_PIT2` (upstream `kvm_vm_ioctl_get_pit2`).
    pub fn get_state2(&self) -> KvmPitState2 {
        KvmPitState2 {
            channels: self.channels,
            flags: self.flags,
            reserved: [0; 9],
        }
    }

    /// `KVM_SET_PIT2` (upstream `kvm_vm_ioctl_set_pit2`): takes the channels and flags as
    /// given and reloads each count at `now`; turning `KVM_PIT_FLAGS_HPET_LEGACY` on stops the
    /// channel-0 timer, and while it is on no timer is programmed.
    pub fn set_state2(&mut self, s: &KvmPitState2, now: i64) -> Option<TimerCmd> {
        let start =
            self.flags & KVM_PIT_FLAGS_HPET_LEGACY == 0 && s.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0;
        self.channels = s.channels;
        self.flags = s.flags;
        self.reload_all(start, now)
    }

    /// `KVM_GET_PIT` (`struct kvm_pit_state`: the three channels).
    pub fn get_state(&self) -> [KvmPitChannelState; 3] {
        self.channels
    }

    /// `KVM_SET_PIT` (upstream `kvm_vm_ioctl_set_pit`): the channels, each count reloaded.
    pub fn set_state(&mut self, channels: &[KvmPitChannelState; 3], now: i64) -> Option<TimerCmd> {
        self.channels = *channels;
        self.reload_all(false, now)
    }

    /// Upstream `kvm_pit_load_count` for the three channels.
    fn reload_all(&mut self, hpet_legacy_start: bool, now: i64) -> Option<TimerCmd> {
        let mut cmd = None;
        for i in 0..3 {
            let count = self.channels[i].count;
            let r = if hpet_legacy_start && i == 0 {
                let saved = self.channels[0].mode;
                self.channels[0].mode = 0xff;
                let r = self.load_count(0, count, now);
                self.channels[0].mode = saved;
                r
            } else {
                self.load_count(i, count, now)
            };
            cmd = r.or(cmd);
        }
        cmd
    }
}
