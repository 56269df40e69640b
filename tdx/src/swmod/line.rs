// SPDX-License-Identifier: GPL-2.0-only
//! Which line of Intel's TDX module the software module emulates: 1.5 (the line Linux's TDX host
//! support targets, what hosts run today) or 2.0.
//!
//! The two lines agree on almost everything a host sees; where they differ
//! (`docs/tdx-module-rules.md` §12, each row with Intel's source for both lines) the leaves ask
//! the module's [`ModuleLine`] through the methods below, so every difference lives in one
//! place. The host code must not depend on the line: what it has to know (how many TDCX pages a
//! TD takes) it reads through TDH.SYS.RD, as Linux does.
//!
//! 1.5 is Intel's `TDX_1.5.01` (`72d8cff…`, branch `tdx_1.5`), 2.0 is 2.0.08 (`1666adc…`).

use crate::abi::MAX_VCPUS_PER_TD;
use crate::error::Operand;

/// A line of Intel's TDX module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleLine {
    /// TDX module 1.5 (release 1.5.01).
    V1_5,
    /// TDX module 2.0 (release 2.0.08).
    V2_0,
}

/// What TDH.SYS.RD reports in the module-version class (class 8 of `global_sys_lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleVersion {
    /// MAJOR_VERSION (`TDX_MODULE_MAJOR_VER`).
    pub major: u16,
    /// MINOR_VERSION.
    pub minor: u16,
    /// UPDATE_VERSION: the release's third number.
    pub update: u16,
    /// INTERNAL_VERSION.
    pub internal: u16,
    /// BUILD_NUM.
    pub build_num: u16,
    /// BUILD_DATE, YYYYMMDD.
    pub build_date: u32,
}

/// R, W and Xs (bits 0-2) and Xu (bit 10) of an S-EPT entry.
const RWX: u64 = 0x7;
const XU: u64 = 1 << 10;

impl ModuleLine {
    /// Both lines, oldest first (for tests that run against each).
    pub const ALL: [ModuleLine; 2] = [ModuleLine::V1_5, ModuleLine::V2_0];

    /// The version fields. 2.0: `proj_defs.mk` (2, 0, 8) and the release build in `BUILD.md`
    /// (build 882 of 2025-03-25). 1.5: `proj_defs.mk` (1, 5), the release's ".01"; the 1.5.01
    /// tree does not publish its build number or date, so BUILD_NUM is the makefile's default
    /// (0) and BUILD_DATE the date of the `TDX 1.5.01` commit — the emulator's choice.
    pub const fn version(self) -> ModuleVersion {
        match self {
            ModuleLine::V1_5 => ModuleVersion {
                major: 1,
                minor: 5,
                update: 1,
                internal: 0,
                build_num: 0,
                build_date: 20240222,
            },
            ModuleLine::V2_0 => ModuleVersion {
                major: 2,
                minor: 0,
                update: 8,
                internal: 0,
                build_num: 882,
                build_date: 20250325,
            },
        }
    }

    /// TDCX pages a TD needs before MNG.INIT (`MIN_NUM_TDCS_PAGES`): what TDH.SYS.RD reports
    /// as TDCS_BASE_SIZE / 4096.
    pub const fn min_tdcs_pages(self) -> u64 {
        match self {
            ModuleLine::V1_5 => 6,
            ModuleLine::V2_0 => 9,
        }
    }

    /// Most TDCX pages a TD takes (`MAX_NUM_TDCS_PAGES`).
    pub const fn max_tdcs_pages(self) -> u64 {
        match self {
            ModuleLine::V1_5 => 9,
            ModuleLine::V2_0 => 12,
        }
    }

    /// The TDCX page that holds the TD's S-EPT root (`SEPT_ROOT_PAGE_INDEX`).
    pub const fn sept_root_index(self) -> usize {
        match self {
            ModuleLine::V1_5 => 3,
            ModuleLine::V2_0 => 6,
        }
    }

    /// `SEPT_PERMISSIONS_RWX`: what SEPT.ADD gives a new non-leaf entry, PAGE.ADD a new leaf and
    /// UNBLOCK gives back. Xu only in 2.0; a 1.5 module never sets it, so the architectural
    /// masks (which in 1.5 leave Xu out too) read the same through one mask with Xu.
    pub(crate) const fn sept_permissions(self) -> u64 {
        match self {
            ModuleLine::V1_5 => RWX,
            ModuleLine::V2_0 => RWX | XU,
        }
    }

    /// The operand field of `TDX_VCPU_STATE_INCORRECT` for a vCPU in `state`: 2.0 names the
    /// state, 1.5 returns the bare status.
    pub(crate) const fn vcpu_state_operand(self, state: u64) -> u64 {
        match self {
            ModuleLine::V1_5 => 0,
            ModuleLine::V2_0 => state,
        }
    }

    /// The operand RANGE.UNBLOCK names when the block is not TLB-tracked yet.
    pub(crate) const fn unblock_tracking_operand(self) -> Operand {
        match self {
            ModuleLine::V1_5 => Operand::SEPT_TREE,
            ModuleLine::V2_0 => Operand::RCX,
        }
    }

    /// Whether the dispatcher lets TDH.VP.INIT run at version 1 (x2APIC id in R8).
    pub(crate) const fn vp_init_has_versions(self) -> bool {
        matches!(self, ModuleLine::V2_0)
    }

    /// MNG.INIT's RCX bits that are not the TDR address: 2.0's event-filter flag (bit 0).
    pub(crate) const fn mng_init_rcx_flags(self) -> u64 {
        match self {
            ModuleLine::V1_5 => 0,
            ModuleLine::V2_0 => 1,
        }
    }

    /// The largest MAX_VCPUS TD_PARAMS may ask for: 1.5 refuses only 0 (the field is 16 bits).
    pub(crate) const fn max_vcpus_limit(self) -> u64 {
        match self {
            ModuleLine::V1_5 => u16::MAX as u64,
            ModuleLine::V2_0 => MAX_VCPUS_PER_TD as u64,
        }
    }

    /// ATTRIBUTES bits a TD may set on the emulated platform. 1.5: DEBUG, SEPT_VE_DISABLE,
    /// MIGRATABLE, PKS, PERFMON. 2.0: also PMT_PROF (6) and ICSSD (16) (LASS and TPA need CPU
    /// features the emulated platform lacks).
    pub const fn attributes_fixed0(self) -> u64 {
        const V1_5: u64 = 1 | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 63;
        match self {
            ModuleLine::V1_5 => V1_5,
            ModuleLine::V2_0 => V1_5 | 1 << 6 | 1 << 16,
        }
    }

    /// CONFIG_FLAGS bits a TD may set: 1.5 GPAW, FLEXIBLE_PENDING_VE, NO_RBP_MOD; 2.0 also
    /// MAXPA_VIRT and MAXGPA_VIRT.
    pub const fn config_flags_fixed0(self) -> u64 {
        match self {
            ModuleLine::V1_5 => 0x7,
            ModuleLine::V2_0 => 0x1F,
        }
    }
}
