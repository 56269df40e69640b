// SPDX-License-Identifier: GPL-2.0-only
//! The PIT structures of `arch/x86/include/uapi/asm/kvm.h` (Linux 6.12): `struct
//! kvm_pit_channel_state`, `struct kvm_pit_state2` (`KVM_GET/SET_PIT2`), `struct
//! kvm_pit_config` (`KVM_CREATE_PIT2`) and `struct kvm_reinject_control`
//! (`KVM_REINJECT_CONTROL`).

use core::mem::{offset_of, size_of};
use x86::uapi::Pod;

/// `KVM_PIT_FLAGS_HPET_LEGACY`: the HPET drives IRQ0 (legacy replacement); the PIT's channel 0
/// runs no timer.
pub const KVM_PIT_FLAGS_HPET_LEGACY: u32 = 0x1;
/// `KVM_PIT_FLAGS_SPEAKER_DATA_ON`: port 0x61 bit 1 (speaker data enable) as last written.
pub const KVM_PIT_FLAGS_SPEAKER_DATA_ON: u32 = 0x2;
/// `KVM_PIT_SPEAKER_DUMMY` (`kvm_pit_config.flags`): the kernel also emulates port 0x61.
pub const KVM_PIT_SPEAKER_DUMMY: u32 = 1;

/// `struct kvm_pit_channel_state`: one counter (upstream copies its `kvm_kpit_channel_state`
/// 1:1, `count_load_time` being a raw `ktime_t` in ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmPitChannelState {
    /// The initial count (1-65536; 0 written means 65536).
    pub count: u32,
    /// The latched count.
    pub latched_count: u16,
    /// 0, or the access mode of a pending count latch (1 LSB, 2 MSB, 3 word).
    pub count_latched: u8,
    /// A status byte is latched.
    pub status_latched: u8,
    /// The latched status byte.
    pub status: u8,
    /// Read sequencing (1 LSB, 2 MSB, 3 word low byte next, 4 word high byte next).
    pub read_state: u8,
    /// Write sequencing (same values).
    pub write_state: u8,
    /// The low byte of a word write in progress.
    pub write_latch: u8,
    /// The access mode of the last control word (1-3).
    pub rw_mode: u8,
    /// The counter mode 0-5 (0xff: disabled at reset).
    pub mode: u8,
    /// BCD counting (stored, not emulated, as upstream).
    pub bcd: u8,
    /// The gate input.
    pub gate: u8,
    /// When counting started, host monotonic ns (`ktime_get()`).
    pub count_load_time: i64,
}

const _: () = {
    assert!(size_of::<KvmPitChannelState>() == 24);
    assert!(offset_of!(KvmPitChannelState, latched_count) == 4);
    assert!(offset_of!(KvmPitChannelState, count_latched) == 6);
    assert!(offset_of!(KvmPitChannelState, status) == 8);
    assert!(offset_of!(KvmPitChannelState, write_latch) == 11);
    assert!(offset_of!(KvmPitChannelState, mode) == 13);
    assert!(offset_of!(KvmPitChannelState, gate) == 15);
    assert!(offset_of!(KvmPitChannelState, count_load_time) == 16);
};

// SAFETY: `#[repr(C)]` integers, no padding (size and offsets asserted above).
unsafe impl Pod for KvmPitChannelState {}

/// `struct kvm_pit_state2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmPitState2 {
    /// The three counters.
    pub channels: [KvmPitChannelState; 3],
    /// `KVM_PIT_FLAGS_*`.
    pub flags: u32,
    /// Reserved (zeroed on GET, ignored on SET).
    pub reserved: [u32; 9],
}

const _: () = {
    assert!(size_of::<KvmPitState2>() == 112);
    assert!(offset_of!(KvmPitState2, flags) == 72);
    assert!(offset_of!(KvmPitState2, reserved) == 76);
};

// SAFETY: `#[repr(C)]` integers and `Pod` structures, no padding (size asserted above).
unsafe impl Pod for KvmPitState2 {}

/// `struct kvm_pit_config` (`KVM_CREATE_PIT2`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmPitConfig {
    /// `KVM_PIT_SPEAKER_DUMMY`.
    pub flags: u32,
    /// Padding.
    pub pad: [u32; 15],
}

const _: () = assert!(size_of::<KvmPitConfig>() == 64);

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmPitConfig {}

/// `struct kvm_reinject_control` (`KVM_REINJECT_CONTROL`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmReinjectControl {
    /// Nonzero: reinject missed ticks (the default).
    pub pit_reinject: u8,
    /// Reserved.
    pub reserved: [u8; 31],
}

const _: () = assert!(size_of::<KvmReinjectControl>() == 32);

// SAFETY: `#[repr(C)]` integers, no padding (size asserted above).
unsafe impl Pod for KvmReinjectControl {}
