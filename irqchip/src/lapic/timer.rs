// SPDX-License-Identifier: GPL-2.0-only
//! The local APIC timer's arithmetic (upstream `lapic.c`: `update_divide_count`,
//! `tmict_to_ns`, `apic_get_tmcct`, `set_target_expiration`, `start_sw_period`,
//! `start_sw_tscdeadline`, `advance_periodic_target_expiration`,
//! `limit_periodic_timer_frequency`), independent of a clock source.
//!
//! The module supplies the time ([`Now`]) and owns one hrtimer per vCPU; the model answers
//! with a [`TimerCmd`]: arm at an absolute monotonic time with a token, or cancel. The
//! hrtimer callback only posts its token ([`super::Pir::timer_expired`]) and kicks; the
//! owner then calls [`Lapic::sync_pir`], which latches the expiry (upstream
//! `lapic_timer.pending`), re-arms a periodic timer at `target + period` (never in the
//! past: missed periods collapse into one, as upstream), and delivers LVTT when the APIC
//! is enabled and LVTT unmasked. A token that is no longer current (the timer was
//! re-programmed meanwhile) is ignored, so a late callback never fires a stale timer.
//! Timer advancement (`lapic_timer_advance`) and the VMX preemption timer are not modelled.

use super::regs::*;
use super::{Effects, Lapic};

/// The time as the module sees it when it calls into the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic nanoseconds (`ktime_get()`), the hrtimer's clock.
    pub ns: u64,
    /// The guest's TSC at that moment (`kvm_read_l1_tsc(rdtsc())`).
    pub guest_tsc: u64,
    /// The guest's TSC frequency in kHz (`virtual_tsc_khz`; 0: TSC-deadline never arms).
    pub tsc_khz: u32,
}

impl Now {
    /// A time with no TSC information (enough for everything but TSC-deadline mode).
    pub const fn ns(ns: u64) -> Self {
        Now {
            ns,
            guest_tsc: 0,
            tsc_khz: 0,
        }
    }
}

/// What the module does with the vCPU's timer after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimerCmd {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Cancel it (a callback already running posts a token that will be ignored).
    Cancel,
    /// (Re)arm it to expire at `at_ns` (absolute monotonic); on expiry post `token` with
    /// [`super::Pir::timer_expired`] and kick the vCPU.
    Arm {
        /// Absolute expiry time in ns.
        at_ns: u64,
        /// The token to post.
        token: u64,
    },
}

/// Upstream `update_divide_count`: TDCR bits 3,1:0 → divide by 2, 4, ..., 128, 1.
pub const fn divide_count(tdcr: u32) -> u32 {
    let t = tdcr & 0xf;
    let t2 = ((t & 0x3) | ((t & 0x8) >> 1)) + 1;
    1 << (t2 & 0x7)
}

/// Upstream `tmict_to_ns`: `count × bus_cycle_ns × divide` (saturating; KVM rejects bus
/// cycle lengths for which this could overflow, see [`valid_bus_cycle_ns`]).
pub const fn tmict_to_ns(count: u32, bus_cycle_ns: u64, divide: u32) -> u64 {
    (count as u64)
        .saturating_mul(bus_cycle_ns)
        .saturating_mul(divide as u64)
}

/// `a × mul / div` without a 128-bit division (the kernel has no `__udivti3`), saturating;
/// 0 when `div` is 0 (upstream `mul_u64_u32_div`).
pub const fn mul_u64_u32_div(a: u64, mul: u32, div: u32) -> u64 {
    if div == 0 {
        return 0;
    }
    let (q, r) = (a / div as u64, a % div as u64);
    // r < div < 2^32, so r × mul fits in 64 bits.
    q.saturating_mul(mul as u64)
        .saturating_add(r * mul as u64 / div as u64)
}

/// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`'s argument check: non-zero and `u32::MAX × 128 ×
/// ns` must fit in 64 bits (else `-EINVAL`).
pub const fn valid_bus_cycle_ns(ns: u64) -> bool {
    ns != 0 && (u32::MAX as u64 * 128).checked_mul(ns).is_some()
}

/// The timer's state besides the registers (upstream `struct kvm_timer`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Timer {
    /// LVTT & `mode_mask` (`timer_mode`).
    pub(super) mode: u32,
    /// Writable LVTT mode bits from CPUID (0 until CPUID is set, as upstream).
    pub(super) mode_mask: u32,
    /// Period in ns (0: not running).
    pub(super) period: u64,
    /// Absolute expiry in ns (0: none).
    pub(super) target: u64,
    /// IA32_TSC_DEADLINE in TSC-deadline mode.
    pub(super) tscdeadline: u64,
    /// Divide count from TDCR.
    pub(super) divide: u32,
    /// Expired and not yet delivered (upstream `pending`).
    pub(super) pending: bool,
    /// Token of the current hrtimer arm (0: not armed).
    pub(super) token: u64,
    /// Last token handed out.
    pub(super) last_token: u64,
}

impl Lapic {
    pub(super) fn lvtt_oneshot(&self) -> bool {
        self.timer.mode == APIC_LVT_TIMER_ONESHOT
    }

    pub(super) fn lvtt_periodic(&self) -> bool {
        self.timer.mode == APIC_LVT_TIMER_PERIODIC
    }

    /// TSC-deadline mode is active.
    pub fn lvtt_tscdeadline(&self) -> bool {
        self.timer.mode == APIC_LVT_TIMER_TSCDEADLINE
    }

    /// The timer's period in ns (0: not running in one-shot/periodic mode).
    pub fn timer_period_ns(&self) -> u64 {
        self.timer.period
    }

    /// The absolute expiry in ns the model currently targets (0: none).
    pub fn timer_target_ns(&self) -> u64 {
        self.timer.target
    }

    pub(super) fn update_divide_count(&mut self) {
        self.timer.divide = divide_count(self.reg(APIC_TDCR));
    }

    fn tmict_ns(&self, count: u32) -> u64 {
        tmict_to_ns(count, self.bus_cycle_ns, self.timer.divide)
    }

    /// `cancel_apic_timer`: stop the hrtimer and forget a pending expiry.
    pub(super) fn cancel_timer(&mut self, fx: &mut Effects) {
        self.cancel_hrtimer(fx);
        self.timer.pending = false;
    }

    pub(super) fn cancel_hrtimer(&mut self, fx: &mut Effects) {
        if self.timer.token != 0 || fx.timer != TimerCmd::Keep {
            fx.timer = TimerCmd::Cancel;
        }
        self.timer.token = 0;
    }

    fn arm(&mut self, at_ns: u64, fx: &mut Effects) {
        self.timer.last_token = self.timer.last_token.wrapping_add(1).max(1);
        self.timer.token = self.timer.last_token;
        fx.timer = TimerCmd::Arm {
            at_ns,
            token: self.timer.token,
        };
    }

    /// `limit_periodic_timer_frequency`.
    fn limit_periodic(&mut self) {
        if self.lvtt_periodic() && self.timer.period != 0 && self.timer.period < MIN_TIMER_PERIOD_NS
        {
            self.timer.period = MIN_TIMER_PERIOD_NS;
        }
    }

    /// `apic_update_lvtt`: follow LVTT's mode; entering or leaving TSC-deadline mode stops
    /// the timer and clears TMICT and the deadline.
    pub(super) fn update_lvtt(&mut self, fx: &mut Effects) {
        let mode = self.reg(APIC_LVTT) & self.timer.mode_mask;
        if self.timer.mode != mode {
            if self.lvtt_tscdeadline() != (mode == APIC_LVT_TIMER_TSCDEADLINE) {
                self.cancel_timer(fx);
                self.set_reg(APIC_TMICT, 0);
                self.timer.period = 0;
                self.timer.tscdeadline = 0;
            }
            self.timer.mode = mode;
            self.limit_periodic();
        }
    }

    /// `apic_get_tmcct`.
    pub(super) fn tmcct(&self, now_ns: u64) -> u32 {
        if self.reg(APIC_TMICT) == 0 || self.timer.period == 0 {
            return 0;
        }
        let remaining = self.timer.target.saturating_sub(now_ns);
        let ns = remaining % self.timer.period;
        let per_count = self.bus_cycle_ns.saturating_mul(self.timer.divide as u64);
        ns.checked_div(per_count).unwrap_or(0) as u32
    }

    /// TMCCT as a register read sees it (0 in TSC-deadline mode).
    pub(super) fn read_tmcct(&self, now_ns: u64) -> u32 {
        if self.lvtt_tscdeadline() {
            0
        } else {
            self.tmcct(now_ns)
        }
    }

    /// `apic_timer_expired`: latch the expiry.
    fn timer_expired(&mut self, fx: &mut Effects) {
        if self.timer.pending {
            return;
        }
        self.timer.pending = true;
        fx.recheck = true;
    }

    /// `set_target_expiration`: one-shot/periodic from TMICT, or from `count_reg`'s count
    /// (TMCCT restored by `KVM_SET_LAPIC`).
    fn set_target_expiration(&mut self, count_reg: u32, now_ns: u64) -> bool {
        self.timer.period = self.tmict_ns(self.reg(APIC_TMICT));
        if self.timer.period == 0 {
            self.timer.tscdeadline = 0;
            return false;
        }
        self.limit_periodic();
        let mut deadline = self.timer.period;
        if (self.lvtt_periodic() || self.lvtt_oneshot()) && count_reg != APIC_TMICT {
            let d = self.tmict_ns(self.reg(count_reg));
            if d == 0 {
                deadline = if self.lvtt_periodic() {
                    self.timer.period
                } else {
                    0
                };
            } else if d > self.timer.period {
                self.set_reg(count_reg, 0);
                deadline = self.timer.period;
            } else {
                deadline = d;
            }
        }
        self.timer.target = now_ns.saturating_add(deadline);
        true
    }

    /// `advance_periodic_target_expiration`.
    fn advance_periodic(&mut self, now_ns: u64) {
        self.timer.target = self.timer.target.saturating_add(self.timer.period);
        if self.timer.target < now_ns {
            self.timer.target = now_ns;
        }
    }

    /// `start_sw_period`.
    fn start_period(&mut self, now_ns: u64, fx: &mut Effects) {
        if self.timer.period == 0 {
            return;
        }
        if now_ns > self.timer.target {
            self.timer_expired(fx);
            if self.lvtt_oneshot() {
                return;
            }
            self.advance_periodic(now_ns);
        }
        self.arm(self.timer.target, fx);
    }

    /// `start_sw_tscdeadline` (no timer advancement). A deadline so far away that the
    /// nanosecond count overflows saturates (never fires) instead of wrapping.
    fn start_tscdeadline(&mut self, now: &Now, fx: &mut Effects) {
        let deadline = self.timer.tscdeadline;
        if deadline == 0 || now.tsc_khz == 0 {
            return;
        }
        if deadline > now.guest_tsc {
            let ns = mul_u64_u32_div(deadline - now.guest_tsc, 1_000_000, now.tsc_khz);
            if ns > 0 {
                self.arm(now.ns.saturating_add(ns), fx);
                return;
            }
        }
        self.timer_expired(fx);
    }

    /// `restart_apic_timer` / `start_sw_timer`.
    fn restart_timer(&mut self, now: &Now, fx: &mut Effects) {
        if !self.lvtt_periodic() && self.timer.pending {
            return;
        }
        if self.lvtt_periodic() || self.lvtt_oneshot() {
            self.start_period(now.ns, fx);
        } else if self.lvtt_tscdeadline() {
            self.start_tscdeadline(now, fx);
        }
    }

    /// `__start_apic_timer`: start from TMICT or (state restore) from TMCCT's count.
    pub(super) fn start_timer_from(&mut self, count_reg: u32, now: &Now, fx: &mut Effects) {
        self.timer.pending = false;
        if (self.lvtt_periodic() || self.lvtt_oneshot())
            && !self.set_target_expiration(count_reg, now.ns)
        {
            return;
        }
        self.restart_timer(now, fx);
    }

    /// TMICT write.
    pub(super) fn write_tmict(&mut self, val: u32, now: &Now, fx: &mut Effects) {
        if self.lvtt_tscdeadline() {
            return;
        }
        self.cancel_timer(fx);
        self.set_reg(APIC_TMICT, val);
        self.start_timer_from(APIC_TMICT, now, fx);
    }

    /// TDCR write: a new divisor rescales the remaining time (`update_target_expiration`).
    pub(super) fn write_tdcr(&mut self, val: u32, now: &Now, fx: &mut Effects) {
        let old = self.timer.divide;
        self.set_reg(APIC_TDCR, val & 0xb);
        self.update_divide_count();
        if self.timer.divide != old && self.timer.period != 0 {
            self.cancel_hrtimer(fx);
            self.timer.period = self.tmict_ns(self.reg(APIC_TMICT));
            self.limit_periodic();
            let rem_old = self.timer.target.saturating_sub(now.ns);
            let rem_new = mul_u64_u32_div(rem_old, self.timer.divide, old);
            self.timer.target = now.ns.saturating_add(rem_new);
            self.restart_timer(now, fx);
        }
    }

    /// IA32_TSC_DEADLINE read (`kvm_get_lapic_tscdeadline_msr`): 0 unless the APIC is
    /// enabled and in TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if !self.hw_enabled() || !self.lvtt_tscdeadline() {
            return 0;
        }
        self.timer.tscdeadline
    }

    /// IA32_TSC_DEADLINE write (`kvm_set_lapic_tscdeadline_msr`): ignored (the WRMSR still
    /// succeeds) unless the APIC is enabled and in TSC-deadline mode; 0 disarms.
    pub fn set_tsc_deadline(&mut self, data: u64, now: &Now) -> Effects {
        let mut fx = Effects::default();
        if !self.hw_enabled() || !self.lvtt_tscdeadline() {
            return fx;
        }
        self.cancel_hrtimer(&mut fx);
        self.timer.tscdeadline = data;
        self.start_timer_from(APIC_TMICT, now, &mut fx);
        fx
    }

    /// The hrtimer posted `token`: latch the expiry if it is the current arm, re-arm a
    /// periodic timer.
    pub(super) fn timer_token_expired(&mut self, token: u64, now: &Now, fx: &mut Effects) {
        if token == 0 || token != self.timer.token {
            return;
        }
        self.timer.token = 0;
        self.timer_expired(fx);
        if self.lvtt_periodic() && self.timer.period != 0 {
            self.advance_periodic(now.ns);
            self.arm(self.timer.target, fx);
        }
    }

    /// `apic_has_pending_timer`: an expiry waits and would be delivered now.
    pub fn timer_pending(&self) -> bool {
        self.enabled() && self.reg(APIC_LVTT) & APIC_LVT_MASKED == 0 && self.timer.pending
    }
}
