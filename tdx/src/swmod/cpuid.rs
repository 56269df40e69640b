// SPDX-License-Identifier: GPL-2.0-only
//! CPUID virtualization as TDH.MNG.INIT configures it and the host sees it: Intel's tables of
//! configurable leaves (`cpuid_configurable`) and virtualized leaves (`cpuid_lookup`,
//! `include/auto_gen/cpuid_configurations.c`, newest stored version 1e63698…), for the emulated
//! platform's CPU.
//!
//! TDH.SYS.RD reports the configurable leaves (NUM_CPUID_CONFIG, CPUID_CONFIG_LEAVES/VALUES);
//! TDH.MNG.INIT checks TD_PARAMS' CPUID_CONFIG against them and computes the TD's values
//! (`read_and_set_cpuid_configurations`); TDH.MNG.RD reads those values back (CPUID_VALUES).
//!
//! A subset, said here once: the lookup table holds the configurable leaves and the leaves KVM's
//! GET_CPUID needs to walk them (0x0, 0x15, 0x80000000, 0x80000001), 23 of Intel's 73 entries;
//! the checks are the bits check (CONFIG_DIRECT | ALLOW_DIRECT), the F/M/S rule of leaf 1 and the
//! TSX pair of leaf (7,0); not modelled are the XFAM-dependent masks and XSAVE sizes, the
//! topology check of leaf 0x1F, and the F/M/S lists of migratable TDs. Both module lines use
//! this (the 2.0) table.

/// CPUID_CONFIG entries (`MAX_NUM_CPUID_CONFIG`): what NUM_CPUID_CONFIG reports.
pub(crate) const NUM_CPUID_CONFIG: usize = crate::abi::td_params::MAX_NUM_CPUID_CONFIG;

/// `CPUID_CONFIG_LEAVES`/`VALUES` fields TDH.SYS.RD has (32); beyond [`NUM_CPUID_CONFIG`] the
/// leaves read as all-1 and the values as 0.
pub(crate) const CPUID_CONFIG_FIELDS: u64 = 32;

/// "No sub-leaf" (`CPUID_SUBLEAF_NA`).
pub(crate) const SUBLEAF_NA: u32 = u32::MAX;

/// Four CPUID registers, EAX, EBX, ECX, EDX.
pub(crate) type Regs = [u32; 4];

/// One configurable leaf (`cpuid_configurable_t`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Configurable {
    pub leaf: u32,
    pub subleaf: u32,
    /// Bits the host sets to any value.
    pub config_direct: Regs,
    /// Bits the host may clear (they keep the platform's value if set).
    pub allow_direct: Regs,
    /// Index of the leaf in [`LOOKUP`].
    pub lookup: usize,
}

const fn cfg(
    leaf: u32,
    subleaf: u32,
    config_direct: Regs,
    allow_direct: Regs,
    lookup: usize,
) -> Configurable {
    Configurable {
        leaf,
        subleaf,
        config_direct,
        allow_direct,
        lookup,
    }
}

const NA: u32 = SUBLEAF_NA;
const ALL: u32 = u32::MAX;

/// `cpuid_configurable`, in its index order (the order of TD_PARAMS.CPUID_CONFIG and of
/// TDH.SYS.RD's CPUID_CONFIG_LEAVES).
pub(crate) const CONFIGURABLE: [Configurable; NUM_CPUID_CONFIG] = [
    cfg(
        0x1,
        NA,
        [0x0fff_3fff, 0x00ff_0000, 0, 0],
        [0, 0, 0x3104_4d88, 0xb844_0000],
        0,
    ),
    cfg(
        0x4,
        0,
        [0xffff_c3ff, 0xffff_f000, ALL, 0xffff_fffb],
        [0; 4],
        1,
    ),
    cfg(
        0x4,
        1,
        [0xffff_c3ff, 0xffff_f000, ALL, 0xffff_fffb],
        [0; 4],
        2,
    ),
    cfg(
        0x4,
        2,
        [0xffff_c3ff, 0xffff_f000, ALL, 0xffff_fffb],
        [0; 4],
        3,
    ),
    cfg(0x4, 3, [0xffff_c3ff, 0xffff_f000, ALL, 0x7], [0; 4], 4),
    cfg(
        0x7,
        0,
        [0; 4],
        [0, 0xdc2b_9b18, 0x0241_7f65, 0x0005_411c],
        5,
    ),
    cfg(0x7, 1, [0; 4], [0x0488_1db0, 0, 0, 0x0002_0430], 6),
    cfg(0xa, NA, [0; 4], [0; 4], 7),
    cfg(0x1c, NA, [0; 4], [0xff, 0, 0, 0], 8),
    cfg(0x8000_0008, NA, [0xff, 0, 0, 0], [0, 0x200, 0, 0], 9),
    cfg(0x7, 2, [0; 4], [0, 0, 0, 0x28], 11),
    cfg(0x23, 0, [0; 4], [0xf, 0, 0, 0], 22),
    cfg(0x1f, 0, [0x1f, 0xffff, 0xffff, 0], [0; 4], 14),
    cfg(0x1f, 1, [0x1f, 0xffff, 0xffff, 0], [0; 4], 15),
    cfg(0x1f, 2, [0x1f, 0xffff, 0xffff, 0], [0; 4], 16),
    cfg(0x1f, 3, [0x1f, 0xffff, 0xffff, 0], [0; 4], 17),
    cfg(0x1f, 4, [0x1f, 0xffff, 0xffff, 0], [0; 4], 18),
    cfg(0x1f, 5, [0x1f, 0xffff, 0xffff, 0], [0; 4], 19),
];

/// One virtualized leaf (`cpuid_lookup_t`) with the emulated platform's value: the native value
/// with the FIXED0/DYNAMIC bits cleared and the FIXED1 bits set, as TDH.SYS.INIT/CONFIG leave
/// it in the module's global data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup {
    pub leaf: u32,
    pub subleaf: u32,
    pub platform: Regs,
    /// Index in [`CONFIGURABLE`], if the leaf is configurable.
    pub config: Option<usize>,
}

/// `(native & !fixed0_or_dynamic) | fixed1`, register by register.
const fn platform(native: Regs, fixed0_or_dynamic: Regs, fixed1: Regs) -> Regs {
    let mut r = [0; 4];
    let mut i = 0;
    while i < 4 {
        r[i] = (native[i] & !fixed0_or_dynamic[i]) | fixed1[i];
        i += 1;
    }
    r
}

const fn lk(
    leaf: u32,
    subleaf: u32,
    native: Regs,
    f0d: Regs,
    f1: Regs,
    config: Option<usize>,
) -> Lookup {
    Lookup {
        leaf,
        subleaf,
        platform: platform(native, f0d, f1),
        config,
    }
}

/// The emulated CPU's family/model/stepping (CPUID(1).EAX): a Sapphire Rapids E-stepping.
pub(crate) const PLATFORM_FMS: u32 = 0x0008_06f8;

const GENUINE_INTEL: Regs = [0, 0x756e_6547, 0x6c65_746e, 0x4965_6e69];
const TOPOLOGY_F0D: Regs = [0xffff_ffe0, 0xffff_0000, 0xffff_0000, ALL];
const CACHE_F0D: Regs = [0x3c00, 0, 0, 0x4];

/// The subset of `cpuid_lookup` the software module virtualizes, in Intel's lookup order (the
/// order TDH.MNG.INIT checks the configuration in), with Intel's FIXED0/DYNAMIC and FIXED1
/// masks over the emulated CPU's native values.
pub(crate) const LOOKUP: [Lookup; 23] = [
    lk(
        0x1,
        NA,
        [PLATFORM_FMS, 0x0001_0800, 0x7ffe_fbff, 0xbfeb_fbff],
        [0xf000_c000, 0xff00_00ff, 0x0801_0060, 0x4012_0400],
        [0, 0, 0x8000_0000, 0x200],
        Some(0),
    ),
    lk(
        0x4,
        0,
        [0x1c00_4121, 0x02c0_003f, 0x3f, 0],
        CACHE_F0D,
        [0; 4],
        Some(1),
    ),
    lk(
        0x4,
        1,
        [0x1c00_4122, 0x01c0_003f, 0x3f, 0],
        CACHE_F0D,
        [0; 4],
        Some(2),
    ),
    lk(
        0x4,
        2,
        [0x1c00_4143, 0x03c0_003f, 0x7ff, 0],
        CACHE_F0D,
        [0; 4],
        Some(3),
    ),
    lk(
        0x4,
        3,
        [0x1c03_c163, 0x0380_003f, 0xe_ffff, 0x6],
        [0x3c00, 0, 0, 0xffff_fff8],
        [0; 4],
        Some(4),
    ),
    lk(
        0x7,
        0,
        [0x2, 0xf3bf_bfbf, 0x1bc1_bfbe, 0xfc1c_4432],
        [0, 0x0040_4006, 0x643e_8010, 0x0022_98c3],
        [0; 4],
        Some(5),
    ),
    lk(
        0x7,
        1,
        [0x0020_1c30, 0, 0, 0],
        [0xfb77_e20f, ALL, ALL, 0xfffd_fbcf],
        [0; 4],
        Some(6),
    ),
    lk(
        0xa,
        NA,
        [0x0830_0805, 0, 0xf, 0x8603],
        [0, 0, 0, 0xffff_6000],
        [0; 4],
        Some(7),
    ),
    lk(
        0x1c,
        NA,
        [0x4000_000b, 0x7, 0x7, 0],
        [0; 4],
        [0; 4],
        Some(8),
    ),
    lk(
        0x8000_0008,
        NA,
        [0x0000_3934, 0x200, 0, 0],
        [0xffff_0000, 0xffff_fdff, ALL, ALL],
        [0; 4],
        Some(9),
    ),
    lk(
        0x0,
        NA,
        GENUINE_INTEL,
        [0xffff_ffdc, 0, 0, 0],
        [0x23, 0, 0, 0],
        None,
    ),
    lk(
        0x7,
        2,
        [0, 0, 0, 0x17],
        [ALL, ALL, ALL, 0xffff_ffc0],
        [0; 4],
        Some(10),
    ),
    // The XSAVE features of the emulated CPU (x87, SSE, AVX, AVX-512, PKRU, AMX); not
    // configurable, not masked by XFAM here (see the module docs).
    lk(
        0xd,
        0,
        [0x0006_02e7, 0x2b00, 0x2b00, 0],
        [0xfff9_fd18, ALL, 0, ALL],
        [0; 4],
        None,
    ),
    lk(
        0x15,
        NA,
        [0x2, 0xbc, 0x017d_7840, 0],
        [0xffff_fffe, 0, 0xfe82_87bf, ALL],
        [0x1, 0, 0x017d_7840, 0],
        None,
    ),
    lk(
        0x1f,
        0,
        [0x1, 0x2, 0x100, 0],
        TOPOLOGY_F0D,
        [0; 4],
        Some(12),
    ),
    lk(
        0x1f,
        1,
        [0x7, 0x60, 0x201, 0],
        TOPOLOGY_F0D,
        [0; 4],
        Some(13),
    ),
    lk(0x1f, 2, [0, 0, 0x2, 0], TOPOLOGY_F0D, [0; 4], Some(14)),
    lk(0x1f, 3, [0, 0, 0x3, 0], TOPOLOGY_F0D, [0; 4], Some(15)),
    lk(0x1f, 4, [0, 0, 0x4, 0], TOPOLOGY_F0D, [0; 4], Some(16)),
    lk(0x1f, 5, [0, 0, 0x5, 0], TOPOLOGY_F0D, [0; 4], Some(17)),
    lk(
        0x8000_0000,
        NA,
        [0x8000_0008, 0, 0, 0],
        [0x7fff_fff7, ALL, ALL, ALL],
        [0x8000_0008, 0, 0, 0],
        None,
    ),
    lk(
        0x8000_0001,
        NA,
        [0, 0, 0x121, 0x2c10_0800],
        [ALL, ALL, 0xffff_fede, 0xd3ef_ffff],
        [0; 4],
        None,
    ),
    lk(
        0x23,
        0,
        [0x3, 0, 0, 0],
        [0xffff_fff0, 0, ALL, ALL],
        [0; 4],
        Some(11),
    ),
];

// The tables agree: every configurable leaf's lookup entry names it back, with the same leaf.
const _: () = {
    let mut i = 0;
    while i < NUM_CPUID_CONFIG {
        let c = CONFIGURABLE[i];
        let l = LOOKUP[c.lookup];
        assert!(l.leaf == c.leaf && l.subleaf == c.subleaf);
        assert!(matches!(l.config, Some(x) if x == i));
        i += 1;
    }
};

/// `cpuid_config_leaf_subleaf_t` as TDH.SYS.RD reports it: leaf in bits 31:0, sub-leaf in 63:32.
pub(crate) const fn leaf_subleaf(leaf: u32, subleaf: u32) -> u64 {
    (subleaf as u64) << 32 | leaf as u64
}

/// CPUID_CONFIG_LEAVES element `i` (TDH.SYS.RD): the leaf/sub-leaf, all-1 beyond the table.
pub(crate) fn config_leaf(i: u64) -> u64 {
    match CONFIGURABLE.get(i as usize) {
        Some(c) => leaf_subleaf(c.leaf, c.subleaf),
        None => u64::MAX,
    }
}

/// CPUID_CONFIG_VALUES element `elem` of field `i` (TDH.SYS.RD, `md_sys_get_elements`): the bits
/// the host may configure, CONFIG_DIRECT | (ALLOW_DIRECT & platform); element 0 is EBX:EAX,
/// element 1 EDX:ECX; 0 beyond the table.
pub(crate) fn config_value(i: u64, elem: u64) -> u64 {
    let Some(c) = CONFIGURABLE.get(i as usize) else {
        return 0;
    };
    let p = LOOKUP[c.lookup].platform;
    let r = |n: usize| c.config_direct[n] | (c.allow_direct[n] & p[n]);
    let (lo, hi) = if elem == 0 {
        (r(0), r(1))
    } else {
        (r(2), r(3))
    };
    (hi as u64) << 32 | lo as u64
}

/// Where TDH.MNG.INIT's CPUID check failed: RCX (the leaf/sub-leaf) and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuidConfigError {
    /// `leaf_subleaf` of the refused leaf (RCX), or 0 for a status without one.
    pub rcx: u64,
    /// `OPERAND_INVALID | CPUID_CONFIG`, or `TDX_INCORRECT_MSR_VALUE | ...`.
    pub status: u64,
}

/// The TD's virtualized CPUID, one [`Regs`] per [`LOOKUP`] entry.
pub(crate) type TdCpuid = [Regs; LOOKUP.len()];

/// `read_and_set_cpuid_configurations` over TD_PARAMS' `config` (indexed as [`CONFIGURABLE`]),
/// for a TD with `attributes` and `tsc_frequency`, in lookup order:
/// - a configured bit that is neither CONFIG_DIRECT nor ALLOW_DIRECT →
///   `OPERAND_INVALID|CPUID_CONFIG (69)`, RCX = the leaf/sub-leaf;
/// - the value is the platform's, CONFIG_DIRECT bits replaced, ALLOW_DIRECT bits cleared where
///   the configuration has 0;
/// - leaf 1: EAX (F/M/S) 0 means the platform's; a non-migratable TD may ask for nothing else
///   (`|CPUID_CONFIG`, RCX = leaf 1);
/// - leaf (7,0): HLE and RTM must be equal (`|CPUID_CONFIG`); ECX.PKS is ATTRIBUTES.PKS;
/// - leaf 0xA: 0 unless ATTRIBUTES.PERFMON; leaf 0x15: EBX = TSC_FREQUENCY.
pub(crate) fn configure(
    config: &[crate::abi::td_params::CpuidConfig; NUM_CPUID_CONFIG],
    attributes: u64,
    tsc_frequency: u64,
) -> Result<TdCpuid, CpuidConfigError> {
    const MIGRATABLE: u64 = 1 << 29;
    const PKS: u64 = 1 << 30;
    const PERFMON: u64 = 1 << 63;
    let mut out = [[0; 4]; LOOKUP.len()];
    for (l, o) in LOOKUP.iter().zip(out.iter_mut()) {
        let refuse = CpuidConfigError {
            rcx: leaf_subleaf(l.leaf, l.subleaf),
            status: crate::abi::status::OPERAND_INVALID
                | crate::abi::operand::td_params::CPUID_CONFIG as u64,
        };
        let mut v = l.platform;
        if let Some(ci) = l.config {
            let c = &CONFIGURABLE[ci];
            let cv = config[ci];
            let given = [cv.eax, cv.ebx, cv.ecx, cv.edx];
            for n in 0..4 {
                if given[n] & !(c.config_direct[n] | c.allow_direct[n]) != 0 {
                    return Err(refuse);
                }
                v[n] = (v[n] & !c.config_direct[n]) | (given[n] & c.config_direct[n]);
                v[n] &= given[n] | !c.allow_direct[n];
            }
        }
        match (l.leaf, l.subleaf) {
            (0x1, _) => {
                if v[0] == 0 {
                    v[0] = PLATFORM_FMS;
                }
                if attributes & MIGRATABLE == 0 && v[0] != PLATFORM_FMS {
                    return Err(refuse);
                }
            }
            (0x7, 0) => {
                let (hle, rtm) = (v[1] >> 4 & 1, v[1] >> 11 & 1);
                if hle != rtm {
                    return Err(refuse);
                }
                v[2] = (v[2] & !(1 << 31)) | ((attributes & PKS != 0) as u32) << 31;
            }
            (0xa, _) if attributes & PERFMON == 0 => v = [0; 4],
            (0x15, _) => v[1] = tsc_frequency as u32,
            _ => {}
        }
        *o = v;
    }
    Ok(out)
}

/// The [`LOOKUP`] index of TDH.MNG.RD's CPUID_VALUES field code `code` (bits 16: leaf bit 31,
/// 15:9 leaf bits 6:0, 8 sub-leaf N/A, 7:1 sub-leaf bits 6:0, 0 the element), and the element.
pub(crate) fn lookup_of_field_code(code: u64) -> Option<(usize, u64)> {
    let leaf = ((code >> 16 & 1) as u32) << 31 | (code >> 9 & 0x7f) as u32;
    let subleaf = if code >> 8 & 1 != 0 {
        if code >> 1 & 0x7f != 0x7f {
            return None;
        }
        SUBLEAF_NA
    } else {
        (code >> 1 & 0x7f) as u32
    };
    let i = LOOKUP
        .iter()
        .position(|l| l.leaf == leaf && l.subleaf == subleaf)?;
    Some((i, code & 1))
}

/// The CPUID_VALUES field code of element `elem` (0 or 1) of [`LOOKUP`] entry `l`.
const fn field_code(l: &Lookup, elem: u64) -> u64 {
    let sub = if l.subleaf == SUBLEAF_NA {
        0x1fe
    } else {
        ((l.subleaf & 0x7f) as u64) << 1
    };
    ((l.leaf >> 31) as u64) << 16 | ((l.leaf & 0x7f) as u64) << 9 | sub | elem
}

/// The smallest CPUID_VALUES field code above `after` (all of them for `None`) that names an
/// element the module has: how a version-1 TDH.MNG.RD chains through the CPUID values.
pub(crate) fn next_field_code(after: Option<u64>) -> Option<u64> {
    LOOKUP
        .iter()
        .flat_map(|l| [field_code(l, 0), field_code(l, 1)])
        .filter(|&c| after.is_none_or(|a| c > a))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::td_params::CpuidConfig;

    #[test]
    fn configurable_values_are_config_direct_or_allowed_platform_bits() {
        // Leaf 1: EAX/EBX config-direct; ECX/EDX allow-direct bits the platform has.
        assert_eq!(config_value(0, 0), 0x00ff_0000_u64 << 32 | 0x0fff_3fff);
        let p = LOOKUP[0].platform;
        let hi = (0xb844_0000 & p[3]) as u64;
        assert_eq!(config_value(0, 1), hi << 32 | (0x3104_4d88 & p[2]) as u64);
        assert_eq!(config_leaf(0), 0xffff_ffff_0000_0001);
        assert_eq!(config_leaf(17), 5 << 32 | 0x1f);
        assert_eq!(config_leaf(18), u64::MAX);
        assert_eq!(config_value(31, 1), 0);
    }

    #[test]
    fn configure_refuses_a_fixed_bit_with_the_leaf_in_rcx() {
        let mut c = [CpuidConfig::default(); NUM_CPUID_CONFIG];
        assert!(configure(&c, 0, 100).is_ok());
        c[5].ebx = 1 << 0; // (7,0).EBX[0] FSGSBASE: native, not configurable
        let e = configure(&c, 0, 100).unwrap_err();
        assert_eq!(e.rcx, 7);
        assert_eq!(e.status, 0xC000_0100_0000_0045);
        // A non-migratable TD cannot ask for another F/M/S; 0 and the platform's pass.
        let mut c = [CpuidConfig::default(); NUM_CPUID_CONFIG];
        c[0].eax = PLATFORM_FMS + 1;
        assert_eq!(
            configure(&c, 0, 100).unwrap_err().rcx,
            0xffff_ffff_0000_0001
        );
        assert!(configure(&c, 1 << 29, 100).is_ok());
        c[0].eax = PLATFORM_FMS;
        let v = configure(&c, 0, 100).unwrap();
        assert_eq!(v[0][0], PLATFORM_FMS);
        assert_eq!(v[13][1], 100); // 0x15.EBX = TSC_FREQUENCY
    }

    #[test]
    fn field_codes_decode_leaf_subleaf_and_element() {
        // Leaf 0x80000008, no sub-leaf, element 1.
        assert_eq!(
            lookup_of_field_code(1 << 16 | 8 << 9 | 0x1fe | 1),
            Some((9, 1))
        );
        assert_eq!(lookup_of_field_code(0x1f << 9 | 5 << 1), Some((19, 0)));
        assert_eq!(lookup_of_field_code(0x1f << 9 | 6 << 1), None);
        assert_eq!(lookup_of_field_code(1 << 9 | 0x100), None); // N/A with a sub-leaf
        for (i, l) in LOOKUP.iter().enumerate() {
            assert_eq!(lookup_of_field_code(field_code(l, 1)), Some((i, 1)));
        }
        // The chain starts at leaf 0 (no sub-leaf) and ends after leaf 0x80000008's EDX:ECX.
        assert_eq!(next_field_code(None), Some(0x1fe));
        assert_eq!(next_field_code(Some(0x1fe)), Some(0x1ff));
        let last = field_code(&LOOKUP[9], 1);
        assert_eq!(next_field_code(Some(last)), None);
    }
}
