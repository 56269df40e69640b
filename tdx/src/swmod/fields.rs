// SPDX-License-Identifier: GPL-2.0-only
//! Metadata fields the software module answers for TDH.SYS.RD, TDH.MNG.RD/WR and TDH.VP.RD/WR.
//!
//! Field identifiers here are the software module's own small set (the real module's field-id
//! encoding — class, context, element size, sequence — is not reproduced): each names one value
//! the host needs. Unknown fields are refused with `TDX_METADATA_FIELD_ID_INCORRECT`.

/// SYS: TDCX pages a TD needs (`MIN_TDCS_PAGES`).
pub const SYS_TDCS_PAGES: u64 = 0x1;
/// SYS: pages per vCPU, TDVPR included.
pub const SYS_TDVPS_PAGES: u64 = 0x2;
/// SYS: first private HKID.
pub const SYS_HKID_FIRST: u64 = 0x3;
/// SYS: number of private HKIDs.
pub const SYS_HKID_COUNT: u64 = 0x4;
/// SYS: most vCPUs per TD.
pub const SYS_MAX_VCPUS_PER_TD: u64 = 0x5;

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
