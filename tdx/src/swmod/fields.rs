// SPDX-License-Identifier: GPL-2.0-only
//! Metadata fields the software module answers for TDH.SYS.RD, TDH.MNG.RD/WR and TDH.VP.RD/WR.
//!
//! Global (SYS) fields use Intel's field identifiers ([`crate::abi::md`]). TD- and vCPU-scope
//! fields (MNG/VP.RD/WR) are the software module's own small set: the real module's encoding
//! of those is not reproduced, each names one value the host needs. Unknown fields are refused
//! with `TDX_METADATA_FIELD_ID_INCORRECT`.

pub use crate::abi::md::{
    MAX_VCPUS_PER_TD as SYS_MAX_VCPUS_PER_TD, TDCS_BASE_SIZE as SYS_TDCS_BASE_SIZE,
    TDR_BASE_SIZE as SYS_TDR_BASE_SIZE, TDVPS_BASE_SIZE as SYS_TDVPS_BASE_SIZE,
};

/// MNG: TD attributes.
pub const TD_ATTRIBUTES: u64 = 0x100;
/// MNG: XFAM.
pub const TD_XFAM: u64 = 0x101;
/// MNG: MRTD, 48 bytes as six words: field `TD_MRTD + i` for word i.
pub const TD_MRTD: u64 = 0x110;
/// MNG: TD epoch.
pub const TD_EPOCH: u64 = 0x120;
/// MNG: OP state.
pub const TD_OP_STATE: u64 = 0x121;
/// MNG: number of vCPUs initialised.
pub const TD_NUM_VCPUS: u64 = 0x122;

/// VP: vCPU state.
pub const VP_STATE: u64 = 0x200;
/// VP: the guest RCX VP.INIT set.
pub const VP_INITIAL_RCX: u64 = 0x201;
/// VP: vCPU index.
pub const VP_INDEX: u64 = 0x202;

/// `TDX_METADATA_FIELD_ID_INCORRECT`.
pub const METADATA_FIELD_ID_INCORRECT: u64 = 0xC000_0C00_0000_0000;
/// `TDX_METADATA_FIELD_NOT_WRITABLE`.
pub const METADATA_FIELD_NOT_WRITABLE: u64 = 0xC000_0C01_0000_0000;
