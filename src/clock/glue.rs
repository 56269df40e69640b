// SPDX-License-Identifier: GPL-2.0-only
//! Declarations of kvm-clock's and the PV interface's C glue (`src/clock/glue.c`).

/// One instant of the host clocks (`struct tdxkvm_clock_snap`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ClockSnap {
    /// The host TSC.
    pub(crate) tsc: u64,
    /// Boot-based raw ns (kvm-clock's base).
    pub(crate) boot_raw_ns: u64,
    /// CLOCK_REALTIME ns.
    pub(crate) real_ns: u64,
    /// The three are one reading of the TSC clocksource.
    pub(crate) tsc_based: u8,
}

extern "C" {
    pub(crate) fn tdxkvm_clock_snapshot(s: *mut ClockSnap);
    pub(crate) fn tdxkvm_clock_base_ns() -> u64;
    pub(crate) fn tdxkvm_clock_real_ns() -> u64;
    pub(crate) fn tdxkvm_sched_info_on() -> bool;
    pub(crate) fn tdxkvm_current_run_delay() -> u64;
}
