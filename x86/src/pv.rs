// SPDX-License-Identifier: GPL-2.0-only
//! The KVM paravirtual interface, kernel-free: kvm-clock (`pvclock_vcpu_time_info`, the time
//! scale and the version protocol), the wall clock, steal time, the `KVM_CPUID_FEATURES` bits
//! this module implements, the PV MSRs' rules (upstream `kvm_get/set_msr_common`'s
//! `MSR_KVM_*` cases gated by `guest_pv_has`), `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`'s feature
//! word (`kvm_update_pv_runtime`), the PV hypercalls' CPUID gating and the
//! `KVM_GET/SET_CLOCK` rules (`struct kvm_clock_data`, its flags).
//!
//! Layouts are `arch/x86/include/asm/pvclock-abi.h` and `arch/x86/include/uapi/asm/kvm_para.h`
//! of Linux 6.12, with size/offset asserts. The kernel module (`src/pv.rs`, `src/clock.rs`)
//! writes them into guest memory and keeps the per-VM clock; everything here is arithmetic and
//! rules.

use crate::msr::MsrFault;
use crate::uapi::{KvmCpuidEntry2, Pod};
use core::mem::{offset_of, size_of};

/// PV MSR numbers (`arch/x86/include/uapi/asm/kvm_para.h`).
pub mod msr {
    /// `MSR_KVM_WALL_CLOCK` (old, `KVM_FEATURE_CLOCKSOURCE`).
    pub const WALL_CLOCK: u32 = 0x11;
    /// `MSR_KVM_SYSTEM_TIME` (old, `KVM_FEATURE_CLOCKSOURCE`).
    pub const SYSTEM_TIME: u32 = 0x12;
    /// `MSR_KVM_WALL_CLOCK_NEW` (`KVM_FEATURE_CLOCKSOURCE2`).
    pub const WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
    /// `MSR_KVM_SYSTEM_TIME_NEW` (`KVM_FEATURE_CLOCKSOURCE2`).
    pub const SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    /// `MSR_KVM_ASYNC_PF_EN`.
    pub const ASYNC_PF_EN: u32 = 0x4b56_4d02;
    /// `MSR_KVM_STEAL_TIME`.
    pub const STEAL_TIME: u32 = 0x4b56_4d03;
    /// `MSR_KVM_PV_EOI_EN`.
    pub const PV_EOI_EN: u32 = 0x4b56_4d04;
    /// `MSR_KVM_POLL_CONTROL`.
    pub const POLL_CONTROL: u32 = 0x4b56_4d05;
    /// `MSR_KVM_ASYNC_PF_INT`.
    pub const ASYNC_PF_INT: u32 = 0x4b56_4d06;
    /// `MSR_KVM_ASYNC_PF_ACK`.
    pub const ASYNC_PF_ACK: u32 = 0x4b56_4d07;
    /// `MSR_KVM_MIGRATION_CONTROL`.
    pub const MIGRATION_CONTROL: u32 = 0x4b56_4d08;
}

/// `KVM_FEATURE_*` bit numbers of `KVM_CPUID_FEATURES` EAX.
#[allow(missing_docs)]
pub mod feature {
    pub const CLOCKSOURCE: u32 = 0;
    pub const NOP_IO_DELAY: u32 = 1;
    pub const CLOCKSOURCE2: u32 = 3;
    pub const ASYNC_PF: u32 = 4;
    pub const STEAL_TIME: u32 = 5;
    pub const PV_EOI: u32 = 6;
    pub const PV_UNHALT: u32 = 7;
    pub const PV_TLB_FLUSH: u32 = 9;
    pub const ASYNC_PF_VMEXIT: u32 = 10;
    pub const PV_SEND_IPI: u32 = 11;
    pub const POLL_CONTROL: u32 = 12;
    pub const PV_SCHED_YIELD: u32 = 13;
    pub const ASYNC_PF_INT: u32 = 14;
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 24;
}

const fn bit(n: u32) -> u32 {
    1 << n
}

/// `KVM_CPUID_FEATURES` EAX as `KVM_GET_SUPPORTED_CPUID` reports it: only what this module
/// implements. kvm-clock (both MSR sets) with the stable bit, the I/O-delay hint (a guest
/// promise, nothing to emulate), steal time (the module clears it when the host kernel has no
/// `sched_info`), poll control (the MSR is kept; there is no host-side halt polling to turn
/// off) and directed yield (`KVM_HC_SCHED_YIELD`, which yields as upstream does: only to a vCPU
/// the APIC map names, when it is ready), PV unhalt (`KVM_HC_KICK_CPU` sends the remote-read
/// kick through the in-kernel LAPICs, then yields to the kicked vCPU likewise). Not advertised, because nothing implements them: async page faults,
/// PV EOI, PV TLB flush, PV send-IPI.
pub const SUPPORTED_FEATURES: u32 = bit(feature::CLOCKSOURCE)
    | bit(feature::NOP_IO_DELAY)
    | bit(feature::CLOCKSOURCE2)
    | bit(feature::STEAL_TIME)
    | bit(feature::POLL_CONTROL)
    | bit(feature::PV_SCHED_YIELD)
    | bit(feature::PV_UNHALT) // HOOK(irqfix)
    | bit(feature::CLOCKSOURCE_STABLE_BIT);

/// `KVM_CAP_CLOCKSOURCE`: kvm-clock through the original MSRs (`KVM_FEATURE_CLOCKSOURCE`).
pub const KVM_CAP_CLOCKSOURCE: u64 = 8;
/// `KVM_CAP_NOP_IO_DELAY`: the guest may skip its port-0x80 I/O delays
/// (`KVM_FEATURE_NOP_IO_DELAY`).
pub const KVM_CAP_NOP_IO_DELAY: u64 = 12;

/// The legacy capabilities that stand for a `KVM_CPUID_FEATURES` bit (what QEMU's old
/// `get_para_features` table read before `KVM_GET_SUPPORTED_CPUID` had the leaf): each is
/// reported only while [`SUPPORTED_FEATURES`] has its bit, as upstream reports them because
/// it always offers both.
const PARA_CAPS: [(u64, u32); 2] = [
    (KVM_CAP_CLOCKSOURCE, feature::CLOCKSOURCE),
    (KVM_CAP_NOP_IO_DELAY, feature::NOP_IO_DELAY),
];

/// `KVM_CHECK_EXTENSION` of a legacy PV-feature capability (`None`: not one of them).
pub fn para_feature_cap(cap: u64) -> Option<isize> {
    PARA_CAPS
        .iter()
        .find(|(c, _)| *c == cap)
        .map(|(_, f)| isize::from(SUPPORTED_FEATURES & bit(*f) != 0))
}

/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX (`KVM_SIGNATURE`).
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// `KVM_CPUID_FEATURES` relative to the base.
pub const KVM_CPUID_FEATURES: u32 = 1;

/// Upstream `__kvm_get_hypervisor_cpuid(entries, KVM_SIGNATURE)` then
/// `__kvm_find_kvm_cpuid_features`: the KVM features leaf's EAX, looking for the signature at
/// every possible hypervisor base (0x40000000..=0x40010000, step 0x100). `None` when there is no
/// KVM signature or no features leaf behind it (upstream then keeps the previous word).
pub fn cpuid_features(entries: &[KvmCpuidEntry2]) -> Option<u32> {
    let find = |f: u32| entries.iter().find(|e| e.function == f);
    let mut base = 0x4000_0000u32;
    while base <= 0x4001_0000 {
        if let Some(e) = find(base) {
            if [e.ebx, e.ecx, e.edx] == KVM_SIGNATURE {
                return find(base | KVM_CPUID_FEATURES).map(|f| f.eax);
            }
        }
        base += 0x100;
    }
    None
}

/// Upstream `__kvm_update_cpuid_runtime`'s KVM-leaf part: with HLT exits disabled
/// (`kvm_hlt_in_guest`), `KVM_FEATURE_PV_UNHALT` is cleared from the table's features leaf
/// (a vCPU that halts in the guest cannot be kicked out of it by `KVM_HC_KICK_CPU`).
pub fn update_runtime(entries: &mut [KvmCpuidEntry2], hlt_in_guest: bool) {
    if !hlt_in_guest {
        return;
    }
    let mut base = 0x4000_0000u32;
    while base <= 0x4001_0000 {
        let sig = entries
            .iter()
            .any(|e| e.function == base && [e.ebx, e.ecx, e.edx] == KVM_SIGNATURE);
        if sig {
            if let Some(f) = entries
                .iter_mut()
                .find(|e| e.function == base | KVM_CPUID_FEATURES)
            {
                f.eax &= !bit(feature::PV_UNHALT);
            }
            return;
        }
        base += 0x100;
    }
}

/// `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` on a vCPU (`vcpu->arch.pv_cpuid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvCpuid {
    /// Enforcement is on.
    pub enforce: bool,
    /// The features leaf's EAX as last seen (`kvm_update_pv_runtime`).
    pub features: u32,
}

impl PvCpuid {
    /// Upstream `guest_pv_has`: every feature without enforcement, else the CPUID bit.
    pub fn has(&self, f: u32) -> bool {
        !self.enforce || self.features & bit(f) != 0
    }

    /// `kvm_update_pv_runtime`: takes the table's features word, if the table has one.
    pub fn update(&mut self, entries: &[KvmCpuidEntry2]) {
        if let Some(f) = cpuid_features(entries) {
            self.features = f;
        }
    }
}

// ---- Layouts ----

/// `struct pvclock_vcpu_time_info` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockVcpuTimeInfo {
    /// Odd while being updated.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// The guest TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// kvm-clock nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point after the shift).
    pub tsc_to_system_mul: u32,
    /// TSC shift (negative: right).
    pub tsc_shift: i8,
    /// `PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<PvclockVcpuTimeInfo>() == 32);
const _: () = assert!(offset_of!(PvclockVcpuTimeInfo, tsc_timestamp) == 8);
const _: () = assert!(offset_of!(PvclockVcpuTimeInfo, system_time) == 16);
const _: () = assert!(offset_of!(PvclockVcpuTimeInfo, tsc_to_system_mul) == 24);
const _: () = assert!(offset_of!(PvclockVcpuTimeInfo, tsc_shift) == 28);
const _: () = assert!(offset_of!(PvclockVcpuTimeInfo, flags) == 29);
// SAFETY: repr(C) integers covering all 32 bytes (asserted above).
unsafe impl Pod for PvclockVcpuTimeInfo {}

/// `PVCLOCK_TSC_STABLE_BIT`.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `PVCLOCK_GUEST_STOPPED`.
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct pvclock_wall_clock` (packed, 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockWallClock {
    /// Odd while being updated.
    pub version: u32,
    /// Seconds of the guest's epoch (wall time when kvm-clock was 0).
    pub sec: u32,
    /// Nanoseconds of it.
    pub nsec: u32,
}
const _: () = assert!(size_of::<PvclockWallClock>() == 12);
// SAFETY: repr(C) u32s, 12 bytes.
unsafe impl Pod for PvclockWallClock {}

/// `struct kvm_steal_time` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmStealTime {
    /// Nanoseconds the vCPU was runnable but not running.
    pub steal: u64,
    /// Odd while being updated.
    pub version: u32,
    /// Flags (0).
    pub flags: u32,
    /// `KVM_VCPU_PREEMPTED` and friends.
    pub preempted: u8,
    /// Padding.
    pub u8_pad: [u8; 3],
    /// Padding.
    pub pad: [u32; 11],
}
const _: () = assert!(size_of::<KvmStealTime>() == 64);
const _: () = assert!(offset_of!(KvmStealTime, version) == 8);
const _: () = assert!(offset_of!(KvmStealTime, preempted) == 16);
// SAFETY: repr(C) integers covering 64 bytes (asserted).
unsafe impl Pod for KvmStealTime {}

/// Offset of `kvm_steal_time.steal`.
pub const STEAL_OFF_STEAL: u64 = 0;
/// Offset of `kvm_steal_time.version`.
pub const STEAL_OFF_VERSION: u64 = 8;
/// Offset of `kvm_steal_time.preempted`.
pub const STEAL_OFF_PREEMPTED: u64 = 16;

/// `struct kvm_clock_data` (`KVM_GET_CLOCK` / `KVM_SET_CLOCK`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmClockData {
    /// kvm-clock nanoseconds.
    pub clock: u64,
    /// `KVM_CLOCK_*`.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// Host CLOCK_REALTIME ns at the same moment (`KVM_CLOCK_REALTIME`).
    pub realtime: u64,
    /// Host TSC at the same moment (`KVM_CLOCK_HOST_TSC`).
    pub host_tsc: u64,
    /// Padding.
    pub pad: [u32; 4],
}
const _: () = assert!(size_of::<KvmClockData>() == 48);
const _: () = assert!(offset_of!(KvmClockData, flags) == 8);
const _: () = assert!(offset_of!(KvmClockData, realtime) == 16);
const _: () = assert!(offset_of!(KvmClockData, host_tsc) == 24);
const _: () = assert!(offset_of!(KvmClockData, pad) == 32);
// SAFETY: repr(C) integers covering 48 bytes (asserted).
unsafe impl Pod for KvmClockData {}

/// `KVM_CLOCK_TSC_STABLE`.
pub const KVM_CLOCK_TSC_STABLE: u32 = 2;
/// `KVM_CLOCK_REALTIME`.
pub const KVM_CLOCK_REALTIME: u32 = 1 << 2;
/// `KVM_CLOCK_HOST_TSC`.
pub const KVM_CLOCK_HOST_TSC: u32 = 1 << 3;
/// `KVM_CLOCK_VALID_FLAGS` (also `KVM_CHECK_EXTENSION(KVM_CAP_ADJUST_CLOCK)`).
pub const KVM_CLOCK_VALID_FLAGS: u32 =
    KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;

/// `KVM_GET_CLOCK` (`_IOR(KVMIO, 0x7c, struct kvm_clock_data)`).
pub const KVM_GET_CLOCK: u32 = 0x8030_ae7c;
/// `KVM_SET_CLOCK` (`_IOW(KVMIO, 0x7b, struct kvm_clock_data)`).
pub const KVM_SET_CLOCK: u32 = 0x4030_ae7b;

// ---- kvm-clock arithmetic ----

/// `NSEC_PER_SEC`.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Upstream `kvm_get_time_scale(scaled_hz, base_hz)`: the shift and 32.32 multiplier that turn
/// `base_hz` ticks into `scaled_hz` units, with `mul < 2^32` and the shift within i8. Returns
/// (shift, multiplier); a zero `base_hz` gives (0, 0) instead of dividing by zero.
pub fn time_scale(scaled_hz: u64, base_hz: u64) -> (i8, u32) {
    if base_hz == 0 || scaled_hz == 0 {
        return (0, 0);
    }
    let mut scaled = scaled_hz;
    let mut tps64 = base_hz;
    let mut shift: i32 = 0;
    while tps64 > scaled.saturating_mul(2) || tps64 >> 32 != 0 {
        tps64 >>= 1;
        shift -= 1;
    }
    let mut tps32 = tps64 as u32;
    while u64::from(tps32) <= scaled || scaled >> 32 != 0 {
        if scaled >> 32 != 0 || tps32 & 0x8000_0000 != 0 {
            scaled >>= 1;
        } else {
            tps32 <<= 1;
        }
        shift += 1;
    }
    // div_frac: (scaled << 32) / tps32, scaled < tps32 here so the quotient fits 32 bits.
    let mul = ((scaled << 32) / u64::from(tps32)) as u32;
    (shift as i8, mul)
}

/// `pvclock_scale_delta`: `delta` shifted, times `mul` / 2^32.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift < 0 {
        delta >> u32::from(shift.unsigned_abs())
    } else {
        delta << shift as u32
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// `__pvclock_read_cycles`: kvm-clock nanoseconds at guest TSC `tsc`.
pub fn read_cycles(t: &PvclockVcpuTimeInfo, tsc: u64) -> u64 {
    let delta = tsc.wrapping_sub(t.tsc_timestamp);
    t.system_time
        .wrapping_add(scale_delta(delta, t.tsc_to_system_mul, t.tsc_shift))
}

/// The version a record gets when an update starts (`kvm_setup_guest_pvclock`: the guest's
/// version + 1, forced odd); the update ends with that + 1 (even).
pub fn pvclock_version_begin(guest_version: u32) -> u32 {
    guest_version.wrapping_add(1) | 1
}

/// The wall clock / steal time protocol (`kvm_write_wall_clock`, `record_steal_time`): an odd
/// version found in guest memory (junk, first write) is made even first; the update's odd
/// version is that + 1, the final even one + 2.
pub fn seq_version_begin(guest_version: u32) -> u32 {
    let v = if guest_version & 1 != 0 {
        guest_version.wrapping_add(1)
    } else {
        guest_version
    };
    v.wrapping_add(1)
}

/// The VM's master clock (upstream `kvm->arch.master_kernel_ns` / `master_cycle_now`) and
/// kvm-clock offset: kvm-clock = boot-based raw ns + `offset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmClockState {
    /// `kvmclock_offset`.
    pub offset: i64,
    /// `use_master_clock`: the host clocksource is the TSC, so every vCPU's kvm-clock is one
    /// linear function of the host TSC (`PVCLOCK_TSC_STABLE_BIT`, `KVM_CLOCK_TSC_STABLE`).
    pub use_master_clock: bool,
    /// `master_kernel_ns`: boot-based raw ns at `master_cycle_now`.
    pub master_kernel_ns: u64,
    /// `master_cycle_now`: the host TSC of the master snapshot.
    pub master_cycle_now: u64,
}

impl VmClockState {
    /// `__get_kvmclock` with the master clock: the kvm-clock at host TSC `host_tsc` for a host
    /// TSC rate of `tsc_khz`.
    pub fn master_clock_at(&self, host_tsc: u64, tsc_khz: u64) -> u64 {
        let (shift, mul) = time_scale(NSEC_PER_SEC, tsc_khz * 1000);
        let t = PvclockVcpuTimeInfo {
            tsc_timestamp: self.master_cycle_now,
            system_time: self.master_kernel_ns.wrapping_add(self.offset as u64),
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            ..Default::default()
        };
        read_cycles(&t, host_tsc)
    }

    /// `kvm_vm_ioctl_set_clock` after the flag check and the master-clock refresh: the new
    /// offset from the requested clock (moved forward by the real time elapsed since
    /// `data.realtime` with `KVM_CLOCK_REALTIME`, never backwards), the base being the master
    /// snapshot's ns with the master clock, else `now_raw_ns`.
    pub fn set_clock(&mut self, data: &KvmClockData, now_real_ns: u64, now_raw_ns: u64) {
        let mut clock = data.clock;
        if data.flags & KVM_CLOCK_REALTIME != 0 && now_real_ns > data.realtime {
            clock = clock.wrapping_add(now_real_ns - data.realtime);
        }
        let base = if self.use_master_clock {
            self.master_kernel_ns
        } else {
            now_raw_ns
        };
        self.offset = clock.wrapping_sub(base) as i64;
    }
}

/// `KVM_SET_CLOCK`'s flag check: only `KVM_CLOCK_VALID_FLAGS` (so `KVM_GET_CLOCK`'s output may
/// be passed back), else `EINVAL`.
pub fn set_clock_flags_valid(flags: u32) -> bool {
    flags & !KVM_CLOCK_VALID_FLAGS == 0
}

/// What a vCPU's pvclock record holds for one update (`kvm_guest_time_update`): the guest TSC
/// and kvm-clock at the same instant, the scale of the TSC rate, the stable flag with the
/// master clock.
pub fn time_info(
    guest_tsc: u64,
    kvmclock_ns: u64,
    tsc_khz: u64,
    stable: bool,
) -> PvclockVcpuTimeInfo {
    let (shift, mul) = time_scale(NSEC_PER_SEC, tsc_khz * 1000);
    PvclockVcpuTimeInfo {
        tsc_timestamp: guest_tsc,
        system_time: kvmclock_ns,
        tsc_to_system_mul: mul,
        tsc_shift: shift,
        flags: if stable { PVCLOCK_TSC_STABLE_BIT } else { 0 },
        ..Default::default()
    }
}

/// The wall clock record for `epoch_ns` (the host's real time when kvm-clock was 0): seconds
/// truncated to 32 bits (overflow in 2106, as upstream), nanoseconds within the second.
pub fn wall_clock(epoch_ns: u64, version: u32) -> PvclockWallClock {
    PvclockWallClock {
        version,
        sec: (epoch_ns / NSEC_PER_SEC) as u32,
        nsec: (epoch_ns % NSEC_PER_SEC) as u32,
    }
}

// ---- PV MSRs ----

/// `KVM_MSR_ENABLED`.
pub const KVM_MSR_ENABLED: u64 = 1;
/// `KVM_STEAL_RESERVED_MASK`: bits 5:1.
pub const KVM_STEAL_RESERVED_MASK: u64 = 0x3e;
/// `KVM_STEAL_VALID_BITS`: the record's address (64-byte aligned).
pub const KVM_STEAL_VALID_BITS: u64 = !0x3f;

/// The PV MSRs `KVM_GET_MSR_INDEX_LIST` reports (upstream `emulated_msrs_all`'s, those this
/// module implements): kvm-clock's four and steal time. Upstream also lists the async-PF and
/// PV-EOI MSRs; they are not listed here: the features are not implemented (their MSRs only
/// keep values, [`set`]), and `MSR_KVM_ASYNC_PF_INT` refuses every value on a vCPU without an
/// in-kernel LAPIC, so a listed one would not round-trip through save/restore there.
pub const INDEX_LIST: [u32; 5] = [
    msr::SYSTEM_TIME,
    msr::WALL_CLOCK,
    msr::SYSTEM_TIME_NEW,
    msr::WALL_CLOCK_NEW,
    msr::STEAL_TIME,
];

/// `KVM_ASYNC_PF_ENABLED`.
pub const KVM_ASYNC_PF_ENABLED: u64 = 1 << 0;
/// `KVM_ASYNC_PF_DELIVERY_AS_PF_VMEXIT`.
pub const KVM_ASYNC_PF_DELIVERY_AS_PF_VMEXIT: u64 = 1 << 2;
/// `KVM_ASYNC_PF_DELIVERY_AS_INT`.
pub const KVM_ASYNC_PF_DELIVERY_AS_INT: u64 = 1 << 3;
/// `MSR_KVM_ASYNC_PF_EN` bits 5:4, reserved.
pub const KVM_ASYNC_PF_RESERVED: u64 = 0x30;

/// What a PV MSR write needs from the vCPU and its host.
#[derive(Clone, Copy)]
pub struct PvWriteEnv<'a> {
    /// The host kernel accounts run delay (steal time needs it: `Invalid` without, as
    /// upstream's `return 1`).
    pub sched_info_on: bool,
    /// The vCPU has an in-kernel LAPIC (the async-PF MSRs need one).
    pub lapic_in_kernel: bool,
    /// Whether `len` bytes at a GPA are writable guest RAM (upstream
    /// `kvm_gfn_to_hva_cache_init` succeeds).
    pub ram: &'a dyn Fn(u64, u64) -> bool,
}

/// A vCPU's PV MSR values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvMsrs {
    /// `MSR_KVM_SYSTEM_TIME(_NEW)` (`vcpu->arch.time`): bit 0 enables, the rest is the GPA.
    pub system_time: u64,
    /// `MSR_KVM_STEAL_TIME` (`vcpu->arch.st.msr_val`).
    pub steal_time: u64,
    /// `MSR_KVM_POLL_CONTROL`: 1 at creation (`kvm_arch_vcpu_create`).
    pub poll_control: u64,
    /// `MSR_KVM_ASYNC_PF_EN` (`vcpu->arch.apf.msr_en_val`).
    pub async_pf_en: u64,
    /// `MSR_KVM_ASYNC_PF_INT` (`vcpu->arch.apf.msr_int_val`: the vector).
    pub async_pf_int: u64,
    /// `MSR_KVM_PV_EOI_EN` (`vcpu->arch.pv_eoi.msr_val`).
    pub pv_eoi: u64,
}

impl Default for PvMsrs {
    fn default() -> Self {
        PvMsrs {
            system_time: 0,
            steal_time: 0,
            poll_control: 1,
            async_pf_en: 0,
            async_pf_int: 0,
            pv_eoi: 0,
        }
    }
}

impl PvMsrs {
    /// INIT / reset (`kvm_vcpu_reset`; PV EOI: `kvm_lapic_reset`, the in-kernel LAPIC's INIT):
    /// kvm-clock, steal time, async PF and PV EOI off; poll control is kept.
    pub fn reset(&mut self) {
        self.system_time = 0;
        self.steal_time = 0;
        self.async_pf_en = 0;
        self.async_pf_int = 0;
        self.pv_eoi = 0;
    }
}

/// Whether `index` is a KVM PV MSR (handled here, not by [`crate::msr`]).
pub fn is_pv_msr(index: u32) -> bool {
    matches!(index, msr::WALL_CLOCK | msr::SYSTEM_TIME)
        || (msr::WALL_CLOCK_NEW..=msr::MIGRATION_CONTROL).contains(&index)
}

/// What a PV MSR write asks the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvEffect {
    /// Nothing beyond the stored value.
    None,
    /// `kvm_write_wall_clock(kvm, gpa)`: store the VM's wall clock MSR and write the record.
    WallClock(u64),
    /// `kvm_write_system_time`: the pvclock page changed (`old_msr`: the legacy MSR, which on
    /// vCPU 0 turns the master clock off, `boot_vcpu_runs_old_kvmclock`); update the record
    /// before the next entry.
    SystemTime {
        /// Written through `MSR_KVM_SYSTEM_TIME`.
        old_msr: bool,
    },
    /// Steal time enabled: record it before the next entry (`KVM_REQ_STEAL_UPDATE`).
    StealTime,
}

/// A PV MSR read (`kvm_get_msr_common`'s cases): `None` if `index` is not a PV MSR handled
/// here. `wall_clock` is the VM's MSR value. A feature the guest's CPUID lacks under
/// enforcement, or a PV MSR this module does not implement, is `Unsupported`.
pub fn get(m: &PvMsrs, pv: &PvCpuid, wall_clock: u64, index: u32) -> Option<Result<u64, MsrFault>> {
    use feature::*;
    if !is_pv_msr(index) {
        return None;
    }
    let need = |f: u32, v: u64| {
        if pv.has(f) {
            Ok(v)
        } else {
            Err(MsrFault::Unsupported)
        }
    };
    Some(match index {
        msr::WALL_CLOCK => need(CLOCKSOURCE, wall_clock),
        msr::WALL_CLOCK_NEW => need(CLOCKSOURCE2, wall_clock),
        msr::SYSTEM_TIME => need(CLOCKSOURCE, m.system_time),
        msr::SYSTEM_TIME_NEW => need(CLOCKSOURCE2, m.system_time),
        msr::STEAL_TIME => need(STEAL_TIME, m.steal_time),
        msr::POLL_CONTROL => need(POLL_CONTROL, m.poll_control),
        msr::ASYNC_PF_EN => need(ASYNC_PF, m.async_pf_en),
        msr::ASYNC_PF_INT => need(ASYNC_PF_INT, m.async_pf_int),
        msr::ASYNC_PF_ACK => need(ASYNC_PF_INT, 0),
        msr::PV_EOI_EN => need(PV_EOI, m.pv_eoi),
        _ => Err(MsrFault::Unsupported),
    })
}

/// A PV MSR write (`kvm_set_msr_common`'s cases): `None` if `index` is not a PV MSR. Nothing
/// changes on failure.
///
/// Async PF (`kvm_pv_enable_async_pf`, `kvm_pv_enable_async_pf_int`) and PV EOI
/// (`kvm_lapic_set_pv_eoi`) take upstream's checks and values, but this module never sends an
/// async page fault and never marks an EOI as skippable, so their guest-visible effect is
/// upstream's with no fault ever made asynchronous and no EOI ever avoided (both are KVM's
/// choice per event upstream too). The one exception: turning async PF on for real
/// (`KVM_ASYNC_PF_ENABLED` with `KVM_ASYNC_PF_DELIVERY_AS_INT`) is refused (`Invalid`), since
/// upstream then queues a "wake all" page-ready notification this module does not deliver.
/// Neither feature is in [`SUPPORTED_FEATURES`], nor are their MSRs in [`INDEX_LIST`].
pub fn set(
    m: &mut PvMsrs,
    pv: &PvCpuid,
    index: u32,
    data: u64,
    env: &PvWriteEnv<'_>,
) -> Option<Result<PvEffect, MsrFault>> {
    let sched_info_on = env.sched_info_on;
    use feature::*;
    if !is_pv_msr(index) {
        return None;
    }
    let gate = |f: u32| {
        if pv.has(f) {
            Ok(())
        } else {
            Err(MsrFault::Unsupported)
        }
    };
    Some((|| match index {
        msr::WALL_CLOCK => gate(CLOCKSOURCE).map(|()| PvEffect::WallClock(data)),
        msr::WALL_CLOCK_NEW => gate(CLOCKSOURCE2).map(|()| PvEffect::WallClock(data)),
        msr::SYSTEM_TIME | msr::SYSTEM_TIME_NEW => {
            let old = index == msr::SYSTEM_TIME;
            gate(if old { CLOCKSOURCE } else { CLOCKSOURCE2 })?;
            m.system_time = data;
            Ok(PvEffect::SystemTime { old_msr: old })
        }
        msr::STEAL_TIME => {
            gate(STEAL_TIME)?;
            if !sched_info_on || data & KVM_STEAL_RESERVED_MASK != 0 {
                return Err(MsrFault::Invalid);
            }
            m.steal_time = data;
            Ok(if data & KVM_MSR_ENABLED != 0 {
                PvEffect::StealTime
            } else {
                PvEffect::None
            })
        }
        msr::POLL_CONTROL => {
            gate(POLL_CONTROL)?;
            // Only the enable bit exists.
            if data & !1 != 0 {
                return Err(MsrFault::Invalid);
            }
            m.poll_control = data;
            Ok(PvEffect::None)
        }
        msr::ASYNC_PF_EN => {
            gate(ASYNC_PF)?;
            let bad = data & KVM_ASYNC_PF_RESERVED != 0
                || (!pv.has(ASYNC_PF_VMEXIT) && data & KVM_ASYNC_PF_DELIVERY_AS_PF_VMEXIT != 0)
                || (!pv.has(ASYNC_PF_INT) && data & KVM_ASYNC_PF_DELIVERY_AS_INT != 0);
            if bad {
                return Err(MsrFault::Invalid);
            }
            // Without an in-kernel LAPIC only 0, and it is not stored.
            if !env.lapic_in_kernel {
                return if data != 0 {
                    Err(MsrFault::Invalid)
                } else {
                    Ok(PvEffect::None)
                };
            }
            let on = KVM_ASYNC_PF_ENABLED | KVM_ASYNC_PF_DELIVERY_AS_INT;
            if data & on == on {
                return Err(MsrFault::Invalid);
            }
            m.async_pf_en = data;
            Ok(PvEffect::None)
        }
        msr::ASYNC_PF_INT => {
            gate(ASYNC_PF_INT)?;
            // Bits 63:8 reserved; the vector needs the in-kernel LAPIC.
            if data >> 8 != 0 || !env.lapic_in_kernel {
                return Err(MsrFault::Invalid);
            }
            m.async_pf_int = data;
            Ok(PvEffect::None)
        }
        // An acknowledged page-ready notification: none is ever pending here.
        msr::ASYNC_PF_ACK => gate(ASYNC_PF_INT).map(|()| PvEffect::None),
        msr::PV_EOI_EN => {
            gate(PV_EOI)?;
            let gpa = data & !KVM_MSR_ENABLED;
            if gpa & 3 != 0 || (data & KVM_MSR_ENABLED != 0 && !(env.ram)(gpa, 1)) {
                return Err(MsrFault::Invalid);
            }
            m.pv_eoi = data;
            Ok(PvEffect::None)
        }
        _ => Err(MsrFault::Unsupported),
    })())
}

/// Host `KVM_GET_MSRS` of a PV MSR (`kvm_do_msr_access` host-initiated): an unsupported but
/// listed MSR reads 0. `None`: not a PV MSR; `Some(None)`: the access fails.
pub fn host_get(m: &PvMsrs, pv: &PvCpuid, wall_clock: u64, index: u32) -> Option<Option<u64>> {
    get(m, pv, wall_clock, index).map(|r| match r {
        Ok(v) => Some(v),
        Err(MsrFault::Unsupported) if INDEX_LIST.contains(&index) => Some(0),
        Err(_) => None,
    })
}

/// Host `KVM_SET_MSRS` of a PV MSR: an unsupported but listed MSR accepts 0 (and nothing
/// happens). `None`: not a PV MSR; `Some(None)`: the write fails.
pub fn host_set(
    m: &mut PvMsrs,
    pv: &PvCpuid,
    index: u32,
    data: u64,
    env: &PvWriteEnv<'_>,
) -> Option<Option<PvEffect>> {
    set(m, pv, index, data, env).map(|r| match r {
        Ok(e) => Some(e),
        Err(MsrFault::Unsupported) if data == 0 && INDEX_LIST.contains(&index) => {
            Some(PvEffect::None)
        }
        Err(_) => None,
    })
}

// ---- Hypercalls ----

/// `struct kvm_clock_pairing` (`KVM_HC_CLOCK_PAIRING`'s answer, 64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmClockPairing {
    /// Host CLOCK_REALTIME seconds.
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: i64,
    /// The guest TSC at that instant.
    pub tsc: u64,
    /// 0.
    pub flags: u32,
    /// Padding.
    pub pad: [u32; 9],
}
const _: () = assert!(size_of::<KvmClockPairing>() == 64);
const _: () = assert!(offset_of!(KvmClockPairing, tsc) == 16);
const _: () = assert!(offset_of!(KvmClockPairing, flags) == 24);
// SAFETY: repr(C) integers covering 64 bytes (asserted).
unsafe impl Pod for KvmClockPairing {}

/// `KVM_HC_CLOCK_PAIRING`.
pub const KVM_HC_CLOCK_PAIRING: u64 = 9;
/// `KVM_CLOCK_PAIRING_WALLCLOCK`.
pub const KVM_CLOCK_PAIRING_WALLCLOCK: u64 = 0;
/// `KVM_EOPNOTSUPP`.
pub const KVM_EOPNOTSUPP: u64 = 95;
/// `KVM_EFAULT`.
pub const KVM_EFAULT: u64 = 14;

/// `kvm_pv_clock_pairing`'s record for host real time `real_ns` read together with the guest
/// TSC `guest_tsc`.
pub fn clock_pairing(real_ns: u64, guest_tsc: u64) -> KvmClockPairing {
    KvmClockPairing {
        sec: (real_ns / NSEC_PER_SEC) as i64,
        nsec: (real_ns % NSEC_PER_SEC) as i64,
        tsc: guest_tsc,
        ..Default::default()
    }
}

/// `KVM_HC_KICK_CPU`.
pub const KVM_HC_KICK_CPU: u64 = 5;
/// `KVM_HC_SEND_IPI`.
pub const KVM_HC_SEND_IPI: u64 = 10;
/// `KVM_HC_SCHED_YIELD`.
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// `KVM_ENOSYS`.
pub const KVM_ENOSYS: u64 = 1000;

/// The PV-feature gate of `__kvm_emulate_hypercall` (after its CPL check, with `nr`
/// truncated outside 64-bit mode): `Some(-KVM_ENOSYS)` when the call's feature is missing
/// under enforcement (`KICK_CPU` needs `PV_UNHALT`, `SEND_IPI` `PV_SEND_IPI`, `SCHED_YIELD`
/// `PV_SCHED_YIELD`); `None`: the call goes on.
pub fn hypercall_gate(nr: u64, pv: &PvCpuid) -> Option<u64> {
    let f = match nr {
        KVM_HC_KICK_CPU => feature::PV_UNHALT,
        KVM_HC_SEND_IPI => feature::PV_SEND_IPI,
        KVM_HC_SCHED_YIELD => feature::PV_SCHED_YIELD,
        _ => return None,
    };
    (!pv.has(f)).then_some(KVM_ENOSYS.wrapping_neg())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_ram(_gpa: u64, _len: u64) -> bool {
        true
    }

    /// A vCPU with an in-kernel LAPIC, all memory RAM; `sched`: sched_info is on.
    fn env(sched: bool) -> PvWriteEnv<'static> {
        PvWriteEnv {
            sched_info_on: sched,
            lapic_in_kernel: true,
            ram: &any_ram,
        }
    }

    #[test]
    fn para_feature_caps_follow_the_features_leaf() {
        // Both are offered in KVM_CPUID_FEATURES (kvm-clock's old MSRs, no-op I/O delay), so
        // both caps answer 1, as upstream's kvm_vm_ioctl_check_extension.
        assert_eq!(para_feature_cap(KVM_CAP_CLOCKSOURCE), Some(1));
        assert_eq!(para_feature_cap(KVM_CAP_NOP_IO_DELAY), Some(1));
        for (cap, f) in PARA_CAPS {
            assert_eq!(
                para_feature_cap(cap),
                Some(isize::from(SUPPORTED_FEATURES & bit(f) != 0))
            );
        }
        // Not a PV-feature cap: KVM_CAP_ASYNC_PF (59) is not this table's.
        assert_eq!(para_feature_cap(59), None);
        assert_eq!(para_feature_cap(0), None);
    }

    /// (Hz, shift, mul) as upstream's `kvm_get_time_scale(NSEC_PER_SEC, Hz)` computes them.
    const SCALES: [(u64, i8, u32); 9] = [
        (1_000_000_000, 1, 2_147_483_648),
        (2_099_999_000, -1, 4_090_446_991),
        (2_100_005_000, -1, 4_090_435_304),
        (3_000_000_000, -1, 2_863_311_530),
        (1_000_000, 10, 4_194_304_000),
        (4_294_967_296, -2, 4_000_000_000),
        (10_000_000_000, -3, 3_435_973_836),
        (100_000_000, 4, 2_684_354_560),
        (1_193_182, 10, 3_515_225_673),
    ];

    #[test]
    fn time_scale_matches_upstream() {
        for (hz, shift, mul) in SCALES {
            assert_eq!(time_scale(NSEC_PER_SEC, hz), (shift, mul), "{hz} Hz");
        }
        assert_eq!(time_scale(NSEC_PER_SEC, 0), (0, 0));
    }

    #[test]
    fn one_second_of_ticks_is_one_second() {
        for (hz, shift, mul) in SCALES {
            let ns = scale_delta(hz, mul, shift);
            // Truncation loses at most a few ns per second.
            assert!(ns.abs_diff(NSEC_PER_SEC) < 1000, "{hz}: {ns}");
        }
    }

    #[test]
    fn read_cycles_is_linear() {
        let t = time_info(1000, 5_000, 3_000_000, true);
        assert_eq!(t.flags, PVCLOCK_TSC_STABLE_BIT);
        assert_eq!(read_cycles(&t, 1000), 5_000);
        // 3 GHz: 3000 ticks = 1000 ns (truncated).
        let r = read_cycles(&t, 4000);
        assert!((5_999..=6_000).contains(&r), "{r}");
    }

    #[test]
    fn version_protocols() {
        // pvclock: always odd at the start, even after.
        assert_eq!(pvclock_version_begin(0), 1);
        assert_eq!(pvclock_version_begin(2), 3);
        assert_eq!(pvclock_version_begin(3), 5);
        assert_eq!(pvclock_version_begin(u32::MAX), 1);
        // wall clock / steal time: junk odd versions are evened first.
        assert_eq!(seq_version_begin(0), 1);
        assert_eq!(seq_version_begin(4), 5);
        assert_eq!(seq_version_begin(7), 9);
    }

    #[test]
    fn master_clock_and_set_clock() {
        let mut c = VmClockState {
            offset: 0,
            use_master_clock: true,
            master_kernel_ns: 1_000_000,
            master_cycle_now: 2_000_000,
        };
        // 1 GHz: 1 tick = 1 ns.
        assert_eq!(c.master_clock_at(2_000_500, 1_000_000), 1_000_500);
        // SET_CLOCK 10 ns: relative to the master snapshot.
        let d = KvmClockData {
            clock: 10,
            ..Default::default()
        };
        c.set_clock(&d, 0, 99);
        assert_eq!(c.master_clock_at(2_000_000, 1_000_000), 10);
        // REALTIME: moved forward by the elapsed real time, never back.
        let d = KvmClockData {
            clock: 10,
            flags: KVM_CLOCK_REALTIME,
            realtime: 700,
            ..Default::default()
        };
        c.set_clock(&d, 1000, 0);
        assert_eq!(c.master_clock_at(2_000_000, 1_000_000), 310);
        c.set_clock(&d, 500, 0);
        assert_eq!(c.master_clock_at(2_000_000, 1_000_000), 10);
        // Without the master clock the base is the raw ns now.
        c.use_master_clock = false;
        c.set_clock(&KvmClockData::default(), 0, 5000);
        assert_eq!(c.offset, -5000);
        assert!(set_clock_flags_valid(KVM_CLOCK_VALID_FLAGS));
        assert!(!set_clock_flags_valid(1));
        assert!(!set_clock_flags_valid(1 << 4));
    }

    #[test]
    fn wall_clock_split() {
        let w = wall_clock(3 * NSEC_PER_SEC + 42, 2);
        assert_eq!((w.version, w.sec, w.nsec), (2, 3, 42));
    }

    fn kvm_leaves(features: u32) -> [KvmCpuidEntry2; 2] {
        [
            KvmCpuidEntry2 {
                function: 0x4000_0000,
                eax: 0x4000_0001,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
                ..Default::default()
            },
            KvmCpuidEntry2 {
                function: 0x4000_0001,
                eax: features,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn cpuid_features_and_enforcement() {
        let t = kvm_leaves(bit(feature::CLOCKSOURCE2));
        assert_eq!(cpuid_features(&t), Some(bit(feature::CLOCKSOURCE2)));
        let mut bad = t;
        bad[0].ebx = 0xdead_beef;
        assert_eq!(cpuid_features(&bad), None);
        // At another base (0x40000100, behind e.g. Hyper-V's leaves).
        let mut moved = t;
        moved[0].function = 0x4000_0100;
        moved[1].function = 0x4000_0101;
        assert_eq!(cpuid_features(&moved), Some(bit(feature::CLOCKSOURCE2)));

        let mut pv = PvCpuid::default();
        assert!(pv.has(feature::STEAL_TIME));
        pv.enforce = true;
        pv.update(&t);
        assert!(pv.has(feature::CLOCKSOURCE2));
        assert!(!pv.has(feature::CLOCKSOURCE));
        // A table without the leaves keeps the old word.
        pv.update(&[]);
        assert_eq!(pv.features, bit(feature::CLOCKSOURCE2));
    }

    #[test]
    fn pv_unhalt_stripped_with_hlt_in_guest() {
        let mut t = kvm_leaves(bit(feature::PV_UNHALT) | bit(feature::CLOCKSOURCE));
        update_runtime(&mut t, false);
        assert_ne!(t[1].eax & bit(feature::PV_UNHALT), 0);
        update_runtime(&mut t, true);
        assert_eq!(t[1].eax, bit(feature::CLOCKSOURCE));
    }

    #[test]
    fn every_pv_msr_faults_without_its_feature_under_enforcement() {
        let pv = PvCpuid {
            enforce: true,
            features: 0,
        };
        let mut m = PvMsrs::default();
        for index in [
            msr::SYSTEM_TIME,
            msr::SYSTEM_TIME_NEW,
            msr::WALL_CLOCK,
            msr::WALL_CLOCK_NEW,
            msr::ASYNC_PF_EN,
            msr::STEAL_TIME,
            msr::PV_EOI_EN,
            msr::POLL_CONTROL,
            msr::ASYNC_PF_INT,
            msr::ASYNC_PF_ACK,
        ] {
            assert_eq!(get(&m, &pv, 0, index), Some(Err(MsrFault::Unsupported)));
            assert_eq!(
                set(&mut m, &pv, index, 0, &env(true)),
                Some(Err(MsrFault::Unsupported))
            );
        }
        // The host may still save and restore the listed ones (0 only).
        for index in INDEX_LIST {
            assert_eq!(host_get(&m, &pv, 5, index), Some(Some(0)));
            assert_eq!(
                host_set(&mut m, &pv, index, 0, &env(true)),
                Some(Some(PvEffect::None))
            );
            assert_eq!(host_set(&mut m, &pv, index, 1, &env(true)), Some(None));
        }
        assert_eq!(get(&m, &pv, 0, 0x10), None);
        assert_eq!(set(&mut m, &pv, 0x10, 0, &env(true)), None);
    }

    #[test]
    fn pv_msr_values_and_effects() {
        let pv = PvCpuid::default();
        let mut m = PvMsrs::default();
        assert_eq!(
            set(&mut m, &pv, msr::SYSTEM_TIME_NEW, 0x1001, &env(true)),
            Some(Ok(PvEffect::SystemTime { old_msr: false }))
        );
        assert_eq!(get(&m, &pv, 0, msr::SYSTEM_TIME), Some(Ok(0x1001)));
        assert_eq!(
            set(&mut m, &pv, msr::WALL_CLOCK, 0x2000, &env(true)),
            Some(Ok(PvEffect::WallClock(0x2000)))
        );
        assert_eq!(get(&m, &pv, 0x2000, msr::WALL_CLOCK_NEW), Some(Ok(0x2000)));
        // Steal time: reserved bits 5:1 refuse, without sched_info too.
        for r in 1..6 {
            assert_eq!(
                set(&mut m, &pv, msr::STEAL_TIME, 0x1000 | 1 << r, &env(true)),
                Some(Err(MsrFault::Invalid))
            );
        }
        assert_eq!(
            set(&mut m, &pv, msr::STEAL_TIME, 0x1001, &env(false)),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(
            set(&mut m, &pv, msr::STEAL_TIME, 0x1041, &env(true)),
            Some(Ok(PvEffect::StealTime))
        );
        assert_eq!(
            set(&mut m, &pv, msr::STEAL_TIME, 0x1040, &env(true)),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(get(&m, &pv, 0, msr::STEAL_TIME), Some(Ok(0x1040)));
        // Poll control: bit 0 only; 1 at creation.
        assert_eq!(get(&m, &pv, 0, msr::POLL_CONTROL), Some(Ok(1)));
        assert_eq!(
            set(&mut m, &pv, msr::POLL_CONTROL, 2, &env(true)),
            Some(Err(MsrFault::Invalid))
        );
        // Not implemented here: migration control.
        assert_eq!(
            set(&mut m, &pv, msr::MIGRATION_CONTROL, 0, &env(true)),
            Some(Err(MsrFault::Unsupported))
        );
        m.reset();
        assert_eq!((m.system_time, m.steal_time, m.poll_control), (0, 0, 1));
    }

    /// The hostile probes' values (kvm_amd: refused, then the MSR reads back 0) and the rest of
    /// upstream's rules for the async-PF and PV-EOI MSRs.
    #[test]
    fn async_pf_and_pv_eoi_rules() {
        let pv = PvCpuid::default(); // no enforcement: every feature
        let mut m = PvMsrs::default();
        let no_lapic = PvWriteEnv {
            lapic_in_kernel: false,
            ..env(true)
        };
        // ASYNC_PF_EN 0x3f: bits 5:4 reserved.
        for e in [&env(true), &no_lapic] {
            assert_eq!(
                set(&mut m, &pv, msr::ASYNC_PF_EN, 0x3f, e),
                Some(Err(MsrFault::Invalid))
            );
            assert_eq!(host_get(&m, &pv, 0, msr::ASYNC_PF_EN), Some(Some(0)));
        }
        // No LAPIC: only 0.
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_EN, 0x1000, &no_lapic),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_EN, 0, &no_lapic),
            Some(Ok(PvEffect::None))
        );
        // With a LAPIC: stored; enabled without INT delivery does nothing upstream either.
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_EN, 0x1001, &env(true)),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(get(&m, &pv, 0, msr::ASYNC_PF_EN), Some(Ok(0x1001)));
        // Enabled with INT delivery: refused (no page-ready notification is delivered here).
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_EN, 0x1009, &env(true)),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(m.async_pf_en, 0x1001);
        // Delivery bits need their features under enforcement.
        let apf_only = PvCpuid {
            enforce: true,
            features: bit(feature::ASYNC_PF),
        };
        for b in [
            KVM_ASYNC_PF_DELIVERY_AS_PF_VMEXIT,
            KVM_ASYNC_PF_DELIVERY_AS_INT,
        ] {
            assert_eq!(
                set(&mut m, &apf_only, msr::ASYNC_PF_EN, 0x2000 | b, &env(true)),
                Some(Err(MsrFault::Invalid))
            );
        }
        // ASYNC_PF_INT: the vector (bits 7:0), only with a LAPIC; ACK reads 0.
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_INT, 0x1ec, &env(true)),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_INT, 0xec, &no_lapic),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_INT, 0xec, &env(true)),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(get(&m, &pv, 0, msr::ASYNC_PF_INT), Some(Ok(0xec)));
        assert_eq!(
            set(&mut m, &pv, msr::ASYNC_PF_ACK, 1, &no_lapic),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(get(&m, &pv, 0, msr::ASYNC_PF_ACK), Some(Ok(0)));
        // PV_EOI_EN 0x3: the address must be 4-byte aligned (no LAPIC needed).
        assert_eq!(
            set(&mut m, &pv, msr::PV_EOI_EN, 0x3, &no_lapic),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(host_get(&m, &pv, 0, msr::PV_EOI_EN), Some(Some(0)));
        // Enabled: the byte must be writable RAM.
        fn low_ram(gpa: u64, len: u64) -> bool {
            gpa + len <= 0x10_0000
        }
        let e = PvWriteEnv {
            ram: &low_ram,
            ..no_lapic
        };
        assert_eq!(
            set(&mut m, &pv, msr::PV_EOI_EN, 0x20_0001, &e),
            Some(Err(MsrFault::Invalid))
        );
        assert_eq!(
            set(&mut m, &pv, msr::PV_EOI_EN, 0x20_0000, &e),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(
            set(&mut m, &pv, msr::PV_EOI_EN, 0x8_0005, &e),
            Some(Ok(PvEffect::None))
        );
        assert_eq!(get(&m, &pv, 0, msr::PV_EOI_EN), Some(Ok(0x8_0005)));
        // INIT turns them off.
        m.reset();
        assert_eq!((m.async_pf_en, m.async_pf_int, m.pv_eoi), (0, 0, 0));
    }

    /// Every listed PV MSR reads and writes back (save/restore), with or without an in-kernel
    /// LAPIC, enforced or not.
    #[test]
    fn listed_pv_msrs_round_trip() {
        let no_lapic = PvWriteEnv {
            lapic_in_kernel: false,
            ..env(true)
        };
        for pv in [
            PvCpuid::default(),
            PvCpuid {
                enforce: true,
                features: 0,
            },
        ] {
            for e in [&env(true), &no_lapic] {
                let mut m = PvMsrs::default();
                for index in INDEX_LIST {
                    let v = host_get(&m, &pv, 0, index).flatten();
                    let v = v.unwrap_or_else(|| panic!("get {index:#x}"));
                    assert!(host_set(&mut m, &pv, index, v, e).is_some(), "{index:#x}");
                }
            }
        }
        // ASYNC_PF_INT would not (0 refused without a LAPIC): it is not listed.
        let mut m = PvMsrs::default();
        let pv = PvCpuid::default();
        assert_eq!(
            host_set(&mut m, &pv, msr::ASYNC_PF_INT, 0, &no_lapic),
            Some(None)
        );
        assert!(!INDEX_LIST.contains(&msr::ASYNC_PF_INT));
    }

    #[test]
    fn hypercalls_gated_by_features() {
        let off = PvCpuid {
            enforce: true,
            features: 0,
        };
        let enosys = 1000u64.wrapping_neg();
        for nr in [KVM_HC_KICK_CPU, KVM_HC_SEND_IPI, KVM_HC_SCHED_YIELD] {
            assert_eq!(hypercall_gate(nr, &off), Some(enosys));
            assert_eq!(hypercall_gate(nr, &PvCpuid::default()), None);
        }
        let yield_only = PvCpuid {
            enforce: true,
            features: bit(feature::PV_SCHED_YIELD),
        };
        assert_eq!(hypercall_gate(KVM_HC_SCHED_YIELD, &yield_only), None);
        assert_eq!(hypercall_gate(1, &off), None);
    }

    #[test]
    fn clock_pairing_record() {
        let p = clock_pairing(5 * NSEC_PER_SEC + 7, 99);
        assert_eq!((p.sec, p.nsec, p.tsc, p.flags), (5, 7, 99, 0));
    }

    #[test]
    fn supported_features_are_only_implemented_ones() {
        for f in [
            feature::ASYNC_PF,
            feature::PV_EOI,
            feature::PV_TLB_FLUSH,
            feature::ASYNC_PF_VMEXIT,
            feature::PV_SEND_IPI,
            feature::ASYNC_PF_INT,
        ] {
            assert_eq!(SUPPORTED_FEATURES & bit(f), 0, "{f}");
        }
    }
}
