// SPDX-License-Identifier: GPL-2.0-only
//! TD_PARAMS, the TD's configuration TDH.MNG.INIT reads: which values a TD may ask for, checked
//! in Intel's order with Intel's operand ids (`read_and_set_td_configurations`, `tdh_mng_init.c`).

use super::cpuid::{self, TdCpuid};
use super::line::ModuleLine;
use super::state::{
    ATTRIBUTES_FIXED1, CONFIG_FLAGS_FIXED1, IA32_ARCH_CAPABILITIES_CONFIG_MASK, MAX_L2_VMS,
    TDCS_PAGES_PER_L2_VM, XFAM_FIXED0, XFAM_FIXED1,
};
use crate::abi::td_params::{TdParams, CONFIG_FLAGS_GPAW52, EPTP_MEMTYPE_WB};
use crate::abi::{operand, status};
use crate::error::Operand;
use crate::swmod::leaf_status::{LeafResult, Status};

/// What MNG.INIT keeps of TD_PARAMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TdConfig {
    pub attributes: u64,
    pub xfam: u64,
    pub max_vcpus: u64,
    pub num_l2_vms: u64,
    /// EPT page-walk length minus 1: 3 (4-level) or 4 (5-level).
    pub pwl: u64,
    pub gpaw52: bool,
    pub tsc_frequency: u64,
    /// The TD's virtualized CPUID ([`cpuid::configure`]).
    pub cpuid: TdCpuid,
}

/// `verify_td_attributes` (not an import): the bits allowed (`fixed0`, the line's), no
/// MIGRATABLE TD with DEBUG or PERFMON, not PERFMON with ICSSD (a 2.0 rule; 1.5 does not allow
/// ICSSD at all).
// The FIXED1 test is Intel's, kept although FIXED1 is 0.
#[allow(clippy::bad_bit_mask)]
fn attributes_valid(attr: u64, fixed0: u64) -> bool {
    const DEBUG: u64 = 1;
    const ICSSD: u64 = 1 << 16;
    const MIGRATABLE: u64 = 1 << 29;
    const PERFMON: u64 = 1 << 63;
    if attr & !fixed0 != 0 || attr & ATTRIBUTES_FIXED1 != ATTRIBUTES_FIXED1 {
        return false;
    }
    if attr & MIGRATABLE != 0 && attr & (DEBUG | PERFMON) != 0 {
        return false;
    }
    attr & PERFMON == 0 || attr & ICSSD == 0
}

/// `check_xfam`: the allowed and required bits, AVX-512 (bits 5, 6, 7) all or none and only
/// with AVX (bit 2), CET (11, 12) both or none, AMX (17, 18) both or none.
fn xfam_valid(xfam: u64) -> bool {
    let bit = |n: u32| xfam >> n & 1;
    xfam & !XFAM_FIXED0 == 0
        && xfam & XFAM_FIXED1 == XFAM_FIXED1
        && !(bit(5) == 1 && bit(2) == 0)
        && bit(5) == bit(6)
        && bit(5) == bit(7)
        && bit(12) == bit(11)
        && bit(17) == bit(18)
}

/// `read_and_set_td_configurations` and the checks after it (`tdh_mng_init.c`), in Intel's
/// order, on the TD_PARAMS `p` of a TD with `num_tdcx` TDCX pages, with the rules of module
/// `line` (`docs/tdx-module-rules.md` §12):
///
/// 1. ATTRIBUTES ([`attributes_valid`]) → `OPERAND_INVALID|ATTRIBUTES (64)`;
/// 2. XFAM ([`xfam_valid`]) → `|XFAM (65)`;
/// 3. MAX_VCPUS 0 or (2.0) above `MAX_VCPUS_PER_TD` → `|MAX_VCPUS (68)`;
/// 4. NUM_L2_VMS above 3 → `|NUM_L2_VMS (71)`;
/// 5. fewer than the line's minimum (9 or 6) + NUM_L2_VMS TDCX pages →
///    `TDX_TDCS_NOT_ALLOCATED`;
/// 6. reserved_0 → `|RDX`;
/// 7. CONFIG_FLAGS outside the line's `CONFIG_FLAGS_FIXED0`/`FIXED1`, or MAXPA_VIRT with
///    MAXGPA_VIRT → `|EXEC_CONTROLS (66)`;
/// 8. EPTP_CONTROLS: memory type WB, page-walk length 4 or 5 levels, A/D (6), SSS (7), bits
///    11:8, the root PA (51:12) and 63:52 all 0, and 5 levels if GPAW is 52 →
///    `|EPTP_CONTROLS (67)`;
/// 9. TSC_FREQUENCY outside 4..=400 → `|TSC_FREQUENCY (70)`;
/// 10. reserved_1, MSR_CONFIG_CTLS bits 7:1, reserved_2 → `|RDX` (each in turn);
/// 11. (event filters are not modelled) the CPUID configuration ([`cpuid::configure`]) →
///     `|CPUID_CONFIG (69)` with `*rcx` = the leaf/sub-leaf; then reserved_3 → `|RDX`;
/// 12. IA32_ARCH_CAPABILITIES_CONFIG not 0 without MSR_CONFIG_CTLS.IA32_ARCH_CAP, or with bits
///     outside `IA32_ARCH_CAPABILITIES_CONFIG_MASK` → `|IA32_ARCH_CAPABILITIES_CONFIG (72)`.
// The CONFIG_FLAGS_FIXED1 test is Intel's, kept although CONFIG_FLAGS_FIXED1 is 0.
#[allow(clippy::bad_bit_mask)]
pub(crate) fn check_td_params(
    line: ModuleLine,
    num_tdcx: u64,
    p: &TdParams,
    rcx: &mut u64,
) -> LeafResult<TdConfig> {
    use operand::td_params as op;
    let invalid = |id: u32| Status::operand_invalid(Operand(id));
    let attributes = p.attributes;
    if !attributes_valid(attributes, line.attributes_fixed0()) {
        return Err(invalid(op::ATTRIBUTES));
    }
    let xfam = p.xfam;
    if !xfam_valid(xfam) {
        return Err(invalid(op::XFAM));
    }
    let max_vcpus = u64::from(p.max_vcpus);
    if max_vcpus == 0 || max_vcpus > line.max_vcpus_limit() {
        return Err(invalid(op::MAX_VCPUS));
    }
    let num_l2_vms = u64::from(p.num_l2_vms);
    if num_l2_vms > MAX_L2_VMS {
        return Err(invalid(op::NUM_L2_VMS));
    }
    if num_tdcx < line.min_tdcs_pages() + TDCS_PAGES_PER_L2_VM * num_l2_vms {
        return Err(Status::new(status::TDCS_NOT_ALLOCATED));
    }
    let rdx = Status::operand_invalid(Operand::RDX);
    let nonzero = |bytes: &[u8]| bytes.iter().any(|&b| b != 0);
    if nonzero(&p.reserved_0) {
        return Err(rdx);
    }
    let flags = p.config_flags;
    const MAXPA_VIRT: u64 = 1 << 3;
    const MAXGPA_VIRT: u64 = 1 << 4;
    if flags & !line.config_flags_fixed0() != 0
        || flags & CONFIG_FLAGS_FIXED1 != CONFIG_FLAGS_FIXED1
        || flags & (MAXPA_VIRT | MAXGPA_VIRT) == MAXPA_VIRT | MAXGPA_VIRT
    {
        return Err(invalid(op::EXEC_CONTROLS));
    }
    let gpaw52 = flags & CONFIG_FLAGS_GPAW52 != 0;
    let eptp = p.eptp_controls;
    let pwl = eptp >> 3 & 7;
    // Bits 2:0 memory type (6 = WB), 5:3 page-walk length - 1; everything above must be 0.
    if eptp & 7 != EPTP_MEMTYPE_WB
        || !(3..=4).contains(&pwl)
        || eptp >> 6 != 0
        || (gpaw52 && pwl < 4)
    {
        return Err(invalid(op::EPTP_CONTROLS));
    }
    let tsc_frequency = u64::from(p.tsc_frequency);
    if !(4..=400).contains(&tsc_frequency) {
        return Err(invalid(op::TSC_FREQUENCY));
    }
    if nonzero(&p.reserved_1) {
        return Err(rdx);
    }
    let msr_ctls = p.msr_config_ctls;
    if msr_ctls >> 1 != 0 || nonzero(&p.reserved_2) {
        return Err(rdx);
    }
    let cpuid = match cpuid::configure(&p.cpuid_config_vals, attributes, tsc_frequency) {
        Ok(v) => v,
        Err(e) => {
            *rcx = e.rcx;
            return Err(Status::from_raw(e.status));
        }
    };
    if nonzero(&p.reserved_3) {
        return Err(rdx);
    }
    let arch_cap = p.ia32_arch_capabilities_config;
    if (msr_ctls & 1 == 0 && arch_cap != 0) || arch_cap & !IA32_ARCH_CAPABILITIES_CONFIG_MASK != 0 {
        return Err(invalid(op::IA32_ARCH_CAPABILITIES_CONFIG));
    }
    Ok(TdConfig {
        attributes,
        xfam,
        max_vcpus,
        num_l2_vms,
        pwl,
        gpaw52,
        tsc_frequency,
        cpuid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::td_params::TD_PARAMS_WORDS;

    /// TD_PARAMS from its words (XFAM 3, MAX_VCPUS 8, 4-level WB EPT, 2.5 GHz) with `edits`.
    fn params(edits: &[(usize, u64)]) -> TdParams {
        let mut w = [0u64; TD_PARAMS_WORDS];
        w[1] = 3;
        w[2] = 8;
        w[3] = 6 | 3 << 3;
        w[5] = 100;
        for &(i, v) in edits {
            w[i] = v;
        }
        TdParams::from_words(&w)
    }

    #[test]
    fn check_td_params_keeps_what_mng_init_stores() {
        let v2 = ModuleLine::V2_0;
        let c = check_td_params(
            v2,
            12,
            &params(&[(2, 1376 | 3 << 16), (3, 6 | 4 << 3), (4, 1)]),
            &mut 0,
        );
        assert_eq!(
            c,
            Ok(TdConfig {
                attributes: 0,
                xfam: 3,
                max_vcpus: 1376,
                num_l2_vms: 3,
                pwl: 4,
                gpaw52: true,
                tsc_frequency: 100,
                cpuid: cpuid::configure(&[Default::default(); 18], 0, 100).unwrap(),
            })
        );
        assert_eq!(
            check_td_params(v2, 11, &params(&[(2, 8 | 3 << 16)]), &mut 0),
            Err(Status::new(status::TDCS_NOT_ALLOCATED))
        );
        // The 1.5 line: 6 TDCX pages suffice; MAX_VCPUS may be above 1376.
        let c = check_td_params(ModuleLine::V1_5, 6, &params(&[(2, 0xFFFF)]), &mut 0);
        assert_eq!(c.map(|c| c.max_vcpus), Ok(0xFFFF));
        assert_eq!(
            check_td_params(ModuleLine::V1_5, 5, &params(&[]), &mut 0),
            Err(Status::new(status::TDCS_NOT_ALLOCATED))
        );
    }

    #[test]
    fn attribute_and_xfam_rules() {
        let fixed0 = ModuleLine::V2_0.attributes_fixed0();
        assert_eq!(fixed0, crate::swmod::state::ATTRIBUTES_FIXED0);
        assert!(attributes_valid(fixed0 & !(1 << 29) & !(1 << 16), fixed0));
        assert!(!attributes_valid(1 << 27, fixed0)); // LASS: not on the emulated CPU
        assert!(!attributes_valid(1 << 62, fixed0)); // TPA: no TDX Connect
        assert!(!attributes_valid(1 << 31, fixed0)); // KL
                                                     // PERFMON with ICSSD: refused by 2.0's rule; 1.5 does not allow ICSSD at all.
        assert!(!attributes_valid(1 << 63 | 1 << 16, fixed0));
        assert!(!attributes_valid(
            1 << 16,
            ModuleLine::V1_5.attributes_fixed0()
        ));
        assert!(xfam_valid(XFAM_FIXED0));
        assert!(!xfam_valid(XFAM_FIXED0 & !(1 << 2))); // AVX-512 without AVX
        assert!(!xfam_valid(1));
    }
}
