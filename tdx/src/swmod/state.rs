// SPDX-License-Identifier: GPL-2.0-only
//! Layout of the software module's control structures inside the pages the host gives it.
//!
//! The real module keeps a TD's state in the TDR page and the TDCX pages (TDCS), and a vCPU's in
//! its TDVPR/TDCX pages, encrypted with the module's keys. The software module keeps the same
//! state in the same host-donated pages (TDR and TDVPR; the S-EPT root in a TDCX page, as the real
//! module does), as plain atomics, so it needs no memory of its own per TD. Only the host can
//! corrupt it, and the host must not touch pages it gave to the module (the PAMT says whose
//! they are), exactly as with the real module.

use core::sync::atomic::AtomicU64;

/// TDCX pages a TD needs before MNG.INIT (newest module; older modules use 6).
pub const MIN_TDCS_PAGES: u64 = crate::abi::MIN_TDCS_PAGES as u64;
/// Most TDCX pages.
pub(crate) const MAX_TDCS_PAGES: u64 = crate::abi::MAX_TDCS_PAGES as u64;
/// Index of the TDCX page that holds the S-EPT root.
pub const SEPT_ROOT_INDEX: usize = 6;
/// TDVPR plus TDCX pages a vCPU needs before VP.INIT.
pub const TDVPS_PAGES: u64 = 6;

/// TD state in the TDR page.
#[repr(C)]
pub(crate) struct TdState {
    /// Lifecycle ([`crate::abi::lifecycle`]).
    pub lifecycle: AtomicU64,
    pub hkid: AtomicU64,
    /// TD_FATAL flag.
    pub fatal: AtomicU64,
    pub num_tdcx: AtomicU64,
    /// Pages owned by the TD (TDCX, TDVPR, S-EPT, private pages in 4K units).
    pub chldcnt: AtomicU64,
    pub tdcx: [AtomicU64; 12],
    /// Low 16 bits: OP-state lock; bits 23:16: OP state.
    pub op_state: AtomicU64,
    /// Low 16 bits: S-EPT tree lock.
    pub sept_lock: AtomicU64,
    /// Low 16 bits: epoch lock.
    pub epoch_lock: AtomicU64,
    pub td_epoch: AtomicU64,
    pub refcount: [AtomicU64; 2],
    pub num_vcpus: AtomicU64,
    pub max_vcpus: AtomicU64,
    pub num_assoc_vcpus: AtomicU64,
    /// S-EPT levels below the root entry: 3 (4-level) or 4 (5-level): the root entries' level.
    pub root_level: AtomicU64,
    /// GPA width: 48 or 52.
    pub gpaw: AtomicU64,
    pub attributes: AtomicU64,
    pub xfam: AtomicU64,
    pub tsc_frequency: AtomicU64,
    /// SHA-384 chaining value of MRTD.
    pub sha_state: [AtomicU64; 8],
    /// Bytes hashed into MRTD so far.
    pub sha_bytes: AtomicU64,
    pub mrtd: [AtomicU64; 6],
    /// Whether MRTD was finalised.
    pub finalized: AtomicU64,
}

/// vCPU state in the TDVPR page.
#[repr(C)]
pub(crate) struct VcpuState {
    pub state: AtomicU64,
    /// 1 if associated with the (single, emulated) logical processor.
    pub associated: AtomicU64,
    pub num_tdvps_pages: AtomicU64,
    pub tdcx: [AtomicU64; 8],
    pub index: AtomicU64,
    /// Guest RCX: VP.INIT's RDX; a DEBUG TD's host may read and write it (VP.RD/WR).
    pub guest_rcx: AtomicU64,
    /// 1 while the vCPU is inside the TD (emulated VP.ENTER until exit).
    pub inside: AtomicU64,
    /// The TD epoch it entered in.
    pub epoch: AtomicU64,
}

const _: () = assert!(size_of::<TdState>() <= 4096);
const _: () = assert!(size_of::<VcpuState>() <= 4096);
