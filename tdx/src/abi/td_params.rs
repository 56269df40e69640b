// SPDX-License-Identifier: GPL-2.0-only
//! TD_PARAMS, the TD's configuration TDH.MNG.INIT reads (Intel's `td_params_t`,
//! `include/tdx_basic_defs.h`): 1024 bytes, 1024-byte aligned, little-endian.
//!
//! The host builds it by field name ([`TdParams`], `..TdParams::ZERO` for what it leaves 0) and
//! writes it into a page ([`TdParams::write_to`]); the software TDX module reads the page back
//! into the same struct ([`TdParams::from_words`]) and checks it field by field. The layout is
//! Intel's, pinned by the `offset_of!` assertions below, so neither side counts words.

use core::mem::{offset_of, size_of};
use core::sync::atomic::Ordering;
use mmu::env::Frame;

/// Size of TD_PARAMS in bytes (`SIZE_OF_TD_PARAMS_IN_BYTES`), also its alignment in memory.
pub const TD_PARAMS_SIZE: usize = 1024;

/// 64-bit words of TD_PARAMS.
pub const TD_PARAMS_WORDS: usize = TD_PARAMS_SIZE / 8;

/// CPUID configuration entries (`MAX_NUM_CPUID_CONFIG`).
pub const MAX_NUM_CPUID_CONFIG: usize = 18;

/// XFAM: x87 and SSE state, the bits every TD must have (`TDX_XFAM_FIXED1`).
pub const XFAM_X87_SSE: u64 = 0x3;

/// EPTP_CONTROLS memory type write-back (bits 2:0).
pub const EPTP_MEMTYPE_WB: u64 = 6;

/// CONFIG_FLAGS.GPAW: the TD's guest physical address width is 52 bits (else 48).
pub const CONFIG_FLAGS_GPAW52: u64 = 1;

/// TSC_FREQUENCY unit: 25 MHz (`TSC_FREQUENCY` 100 is 2.5 GHz).
pub const TSC_FREQUENCY_UNIT_HZ: u64 = 25_000_000;

/// EPTP_CONTROLS for a write-back S-EPT with `levels` levels (4 or 5): bits 5:3 hold the
/// page-walk length minus 1.
#[must_use]
pub const fn eptp_controls(levels: u8) -> u64 {
    EPTP_MEMTYPE_WB | ((levels as u64).wrapping_sub(1) & 7) << 3
}

/// One CPUID configuration entry (`cpuid_config_return_values_t`): the values the TD sees for
/// a configurable leaf/sub-leaf, in the order TDH.SYS.RD reports the leaves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidConfig {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// TD_PARAMS (`td_params_t`). Reserved fields must be 0; the module refuses the structure
/// otherwise (`TDX_OPERAND_INVALID|RDX`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdParams {
    /// ATTRIBUTES (bit 0 DEBUG, ...).
    pub attributes: u64,
    /// XFAM: the extended features the TD may use.
    pub xfam: u64,
    /// Most vCPUs the TD will have (1..=`MAX_VCPUS_PER_TD`).
    pub max_vcpus: u16,
    /// L2 VMs (0..=3).
    pub num_l2_vms: u8,
    /// MSR_CONFIG_CTLS: bit 0 IA32_ARCH_CAP (the TD's IA32_ARCH_CAPABILITIES is configured),
    /// bits 7:1 reserved.
    pub msr_config_ctls: u8,
    /// Reserved.
    pub reserved_0: [u8; 4],
    /// EPTP_CONTROLS: S-EPT memory type and page-walk length ([`eptp_controls`]).
    pub eptp_controls: u64,
    /// CONFIG_FLAGS (`EXEC_CONTROLS` in older specs): bit 0 GPAW 52, ...
    pub config_flags: u64,
    /// TSC frequency in units of 25 MHz (4..=400).
    pub tsc_frequency: u16,
    /// Reserved.
    pub reserved_1: [u8; 38],
    /// MRCONFIGID: software-defined configuration id (SHA-384 sized).
    pub mr_config_id: [u8; 48],
    /// MROWNER: software-defined id of the TD's owner.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG: software-defined id of the owner's configuration.
    pub mr_owner_config: [u8; 48],
    /// IA32_ARCH_CAPABILITIES bits the TD sees (with MSR_CONFIG_CTLS.IA32_ARCH_CAP).
    pub ia32_arch_capabilities_config: u64,
    /// Reserved.
    pub reserved_2: [u8; 24],
    /// CPUID configuration, one entry per configurable leaf/sub-leaf.
    pub cpuid_config_vals: [CpuidConfig; MAX_NUM_CPUID_CONFIG],
    /// Reserved (up to 1024 bytes).
    pub reserved_3: [u8; 480],
}

// Intel's offsets (`td_params_t`; the TDX module ABI specification's TD_PARAMS table).
const _: () = {
    assert!(size_of::<TdParams>() == TD_PARAMS_SIZE);
    assert!(size_of::<CpuidConfig>() == 16);
    assert!(offset_of!(TdParams, attributes) == 0);
    assert!(offset_of!(TdParams, xfam) == 8);
    assert!(offset_of!(TdParams, max_vcpus) == 16);
    assert!(offset_of!(TdParams, num_l2_vms) == 18);
    assert!(offset_of!(TdParams, msr_config_ctls) == 19);
    assert!(offset_of!(TdParams, reserved_0) == 20);
    assert!(offset_of!(TdParams, eptp_controls) == 24);
    assert!(offset_of!(TdParams, config_flags) == 32);
    assert!(offset_of!(TdParams, tsc_frequency) == 40);
    assert!(offset_of!(TdParams, reserved_1) == 42);
    assert!(offset_of!(TdParams, mr_config_id) == 80);
    assert!(offset_of!(TdParams, mr_owner) == 128);
    assert!(offset_of!(TdParams, mr_owner_config) == 176);
    assert!(offset_of!(TdParams, ia32_arch_capabilities_config) == 224);
    assert!(offset_of!(TdParams, reserved_2) == 232);
    assert!(offset_of!(TdParams, cpuid_config_vals) == 256);
    assert!(offset_of!(TdParams, reserved_3) == 544);
};

// No padding: the fields' sizes add up to the structure's (the offsets above are contiguous),
// so every byte of a `TdParams` is a byte of some integer field. That, and every bit pattern
// being a valid value of every field, is what makes the conversions below plain copies. The
// encoding is little-endian, which the host's is (TDX exists on x86 only).
const _: () = {
    assert!(
        8 + 8
            + 2
            + 1
            + 1
            + 4
            + 8
            + 8
            + 2
            + 38
            + 3 * 48
            + 8
            + 24
            + MAX_NUM_CPUID_CONFIG * size_of::<CpuidConfig>()
            + 480
            == size_of::<TdParams>()
    );
    assert!(cfg!(target_endian = "little"));
};

/// Stores `words` at the start of `frame`'s page. The one place this crate writes a page
/// through [`Frame`], so a change of the MMU's page API is adapted here.
fn store_words(frame: &Frame, words: &[u64]) {
    for (w, v) in frame.words().iter().zip(words) {
        w.store(*v, Ordering::Relaxed);
    }
}

impl TdParams {
    /// Everything 0 (a base for `..TdParams::ZERO`; not valid as is: MAX_VCPUS, XFAM,
    /// EPTP_CONTROLS and TSC_FREQUENCY must be set).
    pub const ZERO: TdParams = TdParams::from_words(&[0; TD_PARAMS_WORDS]);

    /// The 1024 bytes as the module reads them.
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; TD_PARAMS_SIZE] {
        // SAFETY: same size; `TdParams` has no padding (asserted above), so all 1024 bytes are
        // initialised, and any bytes are a valid `[u8; N]`.
        unsafe { core::mem::transmute::<TdParams, [u8; TD_PARAMS_SIZE]>(*self) }
    }

    /// The structure in 1024 bytes.
    #[must_use]
    pub const fn from_bytes(b: &[u8; TD_PARAMS_SIZE]) -> Self {
        // SAFETY: same size; every field is an integer or an array of integers, valid for any
        // bit pattern. `transmute` moves by value, so `b`'s alignment does not matter.
        unsafe { core::mem::transmute::<[u8; TD_PARAMS_SIZE], TdParams>(*b) }
    }

    /// The structure as 128 little-endian words (how a page holds it).
    #[must_use]
    pub const fn to_words(&self) -> [u64; TD_PARAMS_WORDS] {
        // SAFETY: same size; no padding in `TdParams` (asserted above), so every word is
        // initialised, and any bits are a valid `u64`.
        unsafe { core::mem::transmute::<TdParams, [u64; TD_PARAMS_WORDS]>(*self) }
    }

    /// The structure in 128 little-endian words.
    #[must_use]
    pub const fn from_words(w: &[u64; TD_PARAMS_WORDS]) -> Self {
        // SAFETY: same size; every field is an integer or an array of integers, valid for any
        // bit pattern.
        unsafe { core::mem::transmute::<[u64; TD_PARAMS_WORDS], TdParams>(*w) }
    }

    /// Writes the structure at the start of `frame`'s page (1024 bytes; the rest of the page is
    /// left alone), where TDH.MNG.INIT is pointed at it.
    pub fn write_to(&self, frame: &Frame) {
        store_words(frame, &self.to_words());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_at_intels_offsets_little_endian() {
        let p = TdParams {
            attributes: 0x0102,
            xfam: XFAM_X87_SSE,
            max_vcpus: 0x0304,
            num_l2_vms: 2,
            msr_config_ctls: 1,
            eptp_controls: eptp_controls(5),
            config_flags: CONFIG_FLAGS_GPAW52,
            tsc_frequency: 100,
            ia32_arch_capabilities_config: 1 << 19,
            ..TdParams::ZERO
        };
        let w = p.to_words();
        assert_eq!(w[0], 0x0102);
        assert_eq!(w[1], 3);
        assert_eq!(w[2], 0x0304 | 2 << 16 | 1 << 24);
        assert_eq!(w[3], 6 | 4 << 3);
        assert_eq!(w[4], 1);
        assert_eq!(w[5], 100);
        assert_eq!(w[28], 1 << 19);
        assert!(w[6..28].iter().chain(&w[29..]).all(|&x| x == 0));
        assert_eq!(TdParams::from_words(&w), p);
    }

    #[test]
    fn every_byte_round_trips() {
        let b: [u8; TD_PARAMS_SIZE] = core::array::from_fn(|i| (i * 7 + 1) as u8);
        let p = TdParams::from_bytes(&b);
        assert_eq!(p.to_bytes(), b);
        assert_eq!(p.reserved_1[0], b[42]);
        assert_eq!(p.mr_owner[0], b[128]);
        assert_eq!(
            p.cpuid_config_vals[17].edx,
            u32::from_le_bytes([b[540], b[541], b[542], b[543]])
        );
        assert_eq!(TdParams::from_words(&p.to_words()), p);
    }

    #[test]
    fn eptp_controls_encodes_levels_minus_one() {
        assert_eq!(eptp_controls(4), 6 | 3 << 3);
        assert_eq!(eptp_controls(5), 6 | 4 << 3);
    }
}
