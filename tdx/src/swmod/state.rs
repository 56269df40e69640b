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

/// TDCX pages a TD of the 2.0 line needs before MNG.INIT (the module's own number:
/// [`super::ModuleLine::min_tdcs_pages`]; a host reads it through TDH.SYS.RD).
pub const MIN_TDCS_PAGES: u64 = crate::abi::MIN_TDCS_PAGES as u64;
/// Most TDCX pages of either line: the size of the TDR's table of TDCX pages.
pub(crate) const MAX_TDCS_PAGES: u64 = crate::abi::MAX_TDCS_PAGES as u64;
/// Index of the TDCX page that holds the S-EPT root in the 2.0 line
/// ([`super::ModuleLine::sept_root_index`]).
pub const SEPT_ROOT_INDEX: usize = 6;
const _: () = {
    use super::ModuleLine::{V1_5, V2_0};
    assert!(V2_0.min_tdcs_pages() == MIN_TDCS_PAGES && V2_0.sept_root_index() == SEPT_ROOT_INDEX);
    assert!(V1_5.max_tdcs_pages() <= MAX_TDCS_PAGES && V2_0.max_tdcs_pages() == MAX_TDCS_PAGES);
    assert!(V1_5.sept_root_index() < V1_5.min_tdcs_pages() as usize);
};
/// TDVPR plus TDCX pages a vCPU of a TD without L2 VMs needs before VP.INIT
/// (`MIN_TDVPS_PAGES`, `tdx_tdvps.h`): what `map_tdvps` requires, and what TDH.SYS.RD reports
/// as TDVPS_BASE_SIZE.
pub const TDVPS_PAGES: u64 = 6;
/// Most TDVPR plus TDCX pages a vCPU holds (`MAX_TDVPS_PAGES`): VP.ADDCX refuses a page once
/// the vCPU has this many.
pub const MAX_TDVPS_PAGES: u64 = 15;
/// More TDVPS pages each L2 VM needs (`TDVPS_PAGES_PER_L2_VM`).
pub const TDVPS_PAGES_PER_L2_VM: u64 = 3;
/// More TDCX pages each L2 VM needs (`TDCS_PAGES_PER_L2_VM`).
pub const TDCS_PAGES_PER_L2_VM: u64 = 1;
/// Most L2 VMs of a TD (`MAX_L2_VMS`).
pub const MAX_L2_VMS: u64 = 3;

/// Byte offset of `x2apic_ids[MAX_VCPUS_PER_TD]` (32-bit ids) in the TDCS, as in Intel's
/// `tdcs_t` (`td_control_structures.h`): it follows the management (128), execution control
/// (512), epoch (64), measurement (832), migration (384), virtual MSR (256), CPUID value
/// (160 x 16), service TD (512) and execution control 2 (512) fields, so it lies in TDCX pages
/// 1 and 2.
pub(crate) const X2APIC_IDS_OFFSET: usize = 5760;
const _: () = assert!(
    X2APIC_IDS_OFFSET + 4 * crate::abi::MAX_VCPUS_PER_TD as usize <= MIN_TDCS_PAGES as usize * 4096
        && X2APIC_IDS_OFFSET.is_multiple_of(8)
);

// ---- What the emulated platform supports -----------------------------------------------------
//
// Where Intel's module consults the CPU (TDH.SYS.INIT computes the allowed bits once), the
// software module answers for a fixed emulated CPU: no LASS (CPUID.(7,1):EAX[6]), no TDX Connect
// (TDX-IO: ATTRIBUTES.TPA is not allowed), 5-level EPT supported, XCR0 | IA32_XSS support every
// bit of TDX_XFAM_FIXED0, not a GNR A0 stepping (IA32_ARCH_CAPABILITIES may be configured), and
// IA32_TSC_ADJUST never changes.

/// ATTRIBUTES bits a TD may set: `TDX_ATTRIBUTES_FIXED0` of the newest module (DEBUG 0,
/// PMT_PROF 6, ICSSD 16, LASS 27, SEPT_VE_DISABLE 28, MIGRATABLE 29, PKS 30, TPA 62,
/// PERFMON 63) without LASS and TPA, which the emulated platform lacks.
pub const ATTRIBUTES_FIXED0: u64 = 1 | 1 << 6 | 1 << 16 | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 63;
/// ATTRIBUTES bits a TD must set (`TDX_ATTRIBUTES_FIXED1`).
pub const ATTRIBUTES_FIXED1: u64 = 0;
/// XFAM bits a TD may set: `TDX_XFAM_FIXED0` (all supported by the emulated CPU).
pub const XFAM_FIXED0: u64 = 0x0006_DBE7;
/// XFAM bits a TD must set (`TDX_XFAM_FIXED1`: x87 and SSE).
pub const XFAM_FIXED1: u64 = 0x3;
/// CONFIG_FLAGS bits a TD may set (`CONFIG_FLAGS_FIXED0`: GPAW 0, FLEXIBLE_PENDING_VE 1,
/// NO_RBP_MOD 2, MAXPA_VIRT 3, MAXGPA_VIRT 4).
pub const CONFIG_FLAGS_FIXED0: u64 = 0x1F;
/// CONFIG_FLAGS bits a TD must set (`CONFIG_FLAGS_FIXED1`).
pub const CONFIG_FLAGS_FIXED1: u64 = 0;
/// IA32_ARCH_CAPABILITIES bits TD_PARAMS may configure (`IA32_ARCH_CAPABILITIES_CONFIG_MASK`:
/// SSB_NO 4, RRSBA 19, BHI_NO 20, PBRSB_NO 24).
pub const IA32_ARCH_CAPABILITIES_CONFIG_MASK: u64 = 1 << 4 | 1 << 19 | 1 << 20 | 1 << 24;

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
    pub tdcx: [AtomicU64; MAX_TDCS_PAGES as usize],
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
    /// NUM_L2_VMS from TD_PARAMS (0..=3).
    pub num_l2_vms: AtomicU64,
    /// SHA-384 chaining value of MRTD.
    pub sha_state: [AtomicU64; 8],
    /// Bytes hashed into MRTD so far.
    pub sha_bytes: AtomicU64,
    pub mrtd: [AtomicU64; 6],
    /// Whether MRTD was finalised.
    pub finalized: AtomicU64,
    /// The virtualized CPUID (TDCS `cpuid_config_vals`), two words per entry of
    /// [`super::cpuid::LOOKUP`]: EBX:EAX, EDX:ECX.
    pub cpuid: [AtomicU64; 2 * super::cpuid::LOOKUP.len()],
}

/// vCPU state in the TDVPR page.
#[repr(C)]
pub(crate) struct VcpuState {
    pub state: AtomicU64,
    /// 1 if associated with the (single, emulated) logical processor.
    pub associated: AtomicU64,
    pub num_tdvps_pages: AtomicU64,
    /// The TDCX pages: TDVPS page `i` (TDVPR = page 0) is `tdcx[i - 1]`.
    pub tdcx: [AtomicU64; MAX_TDVPS_PAGES as usize - 1],
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
