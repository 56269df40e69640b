// SPDX-License-Identifier: GPL-2.0-only
//! Metadata fields the software module answers for TDH.SYS.RD, TDH.MNG.RD/WR and TDH.VP.RD/WR,
//! with Intel's field identifiers ([`crate::abi::md`]) and Intel's generic field-id handling
//! (`src/common/metadata_handlers/metadata_generic.c`).
//!
//! The TD and vCPU tables below are the subset of Intel's lookup tables
//! (`include/auto_gen/tdr_tdcs_fields_lookup.c`, `tdvps_fields_lookup.c`) whose values the
//! software module has, in Intel's order (class code, then field code), with Intel's host read
//! and write masks for production and DEBUG TDs. A field id that matches no entry here is
//! answered as Intel answers an id that matches no entry of its table:
//! `TDX_METADATA_FIELD_ID_INCORRECT`.
//!
//! The global (TDH.SYS.RD) table is Intel's whole `global_sys_lookup`, so that the next-field
//! chain in RDX is Intel's; the entries whose value the software module does not have
//! ([`Value::Unmodelled`]) are answered `TDX_METADATA_FIELD_ID_INCORRECT`.

use crate::abi::md;
use crate::abi::status;
use crate::swmod::leaf_status::{LeafResult, Status};

pub use crate::abi::md::{
    MAX_VCPUS_PER_TD as SYS_MAX_VCPUS_PER_TD, TDCS_BASE_SIZE as SYS_TDCS_BASE_SIZE,
    TDR_BASE_SIZE as SYS_TDR_BASE_SIZE, TDVPS_BASE_SIZE as SYS_TDVPS_BASE_SIZE,
};
pub use crate::abi::status::{
    METADATA_FIELD_ID_INCORRECT, METADATA_FIELD_NOT_READABLE, METADATA_FIELD_NOT_WRITABLE,
    METADATA_FIELD_VALUE_NOT_VALID,
};

/// Where the value of a field's elements comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// TDR: the HKID.
    Hkid,
    /// TDCS: vCPUs initialised.
    NumVcpus,
    /// TDCS: vCPUs associated.
    NumAssocVcpus,
    /// TDCS: OP state.
    OpState,
    /// TDCS: ATTRIBUTES.
    Attributes,
    /// TDCS: XFAM.
    Xfam,
    /// TDCS: MAX_VCPUS.
    MaxVcpus,
    /// A field no host access may read or write (its read and write masks are all 0).
    Hidden,
    /// TDCS: TD epoch.
    TdEpoch,
    /// TDCS: MRTD (element = 8 bytes of the digest).
    Mrtd,
    /// TDCS: RTMRs: never extended, since the software module runs no guest.
    Rtmr,
    /// TDVPS: guest RCX.
    GuestRcx,
    /// TDVPS: vCPU state.
    VcpuState,
    /// TDVPS: vCPU index.
    VcpuIndex,
    /// TDVPS: TDVPS pages.
    NumTdvpsPages,
    /// TDCS: the virtualized CPUID (element: the field code, see
    /// [`crate::abi::md::td::CPUID_VALUES`]).
    CpuidValues,
    /// SYS: CPUID_CONFIG_LEAVES (element = entry).
    CpuidConfigLeaves,
    /// SYS: CPUID_CONFIG_VALUES (element = 2 × entry + register pair).
    CpuidConfigBits,
    /// A global field with a fixed value.
    Const(u64),
    /// A global field whose value depends on the module line ([`super::ModuleLine`]).
    Line(LineValue),
    /// A global field of Intel's table whose value the software module does not have.
    Unmodelled,
}

/// The global fields whose value is the module line's (`docs/tdx-module-rules.md` §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineValue {
    BuildDate,
    BuildNum,
    MinorVersion,
    MajorVersion,
    UpdateVersion,
    InternalVersion,
    TdcsBaseSize,
    AttributesFixed0,
    ConfigFlagsFixed0,
}

impl LineValue {
    /// The value of the field in `line`.
    pub(crate) const fn of(self, line: super::ModuleLine) -> u64 {
        let v = line.version();
        match self {
            LineValue::BuildDate => v.build_date as u64,
            LineValue::BuildNum => v.build_num as u64,
            LineValue::MinorVersion => v.minor as u64,
            LineValue::MajorVersion => v.major as u64,
            LineValue::UpdateVersion => v.update as u64,
            LineValue::InternalVersion => v.internal as u64,
            LineValue::TdcsBaseSize => line.min_tdcs_pages() * PAGE,
            LineValue::AttributesFixed0 => line.attributes_fixed0(),
            LineValue::ConfigFlagsFixed0 => line.config_flags_fixed0(),
        }
    }
}

/// One entry of a lookup table (`md_lookup_t`): `fields` fields of `elems` elements each,
/// element `i` at field code `code(id) + i`; host masks for production (`[0]`) and DEBUG
/// (`[1]`) TDs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub id: u64,
    pub fields: u64,
    pub elems: u64,
    pub rd: [u64; 2],
    pub wr: [u64; 2],
    pub value: Value,
}

const ALL: u64 = u64::MAX;

const fn entry(id: u64, elems: u64, rd: [u64; 2], wr: [u64; 2], value: Value) -> Entry {
    Entry {
        id,
        fields: 1,
        elems,
        rd,
        wr,
        value,
    }
}

/// TD-scope entries, in the order of `tdr_tdcs_lookup`.
pub(crate) const TD: [Entry; 12] = [
    entry(md::td::HKID, 1, [ALL, ALL], [0, 0], Value::Hkid),
    entry(md::td::NUM_VCPUS, 1, [ALL, ALL], [0, 0], Value::NumVcpus),
    entry(
        md::td::NUM_ASSOC_VCPUS,
        1,
        [ALL, ALL],
        [0, 0],
        Value::NumAssocVcpus,
    ),
    entry(md::td::OP_STATE, 1, [ALL, ALL], [0, 0], Value::OpState),
    entry(md::td::ATTRIBUTES, 1, [ALL, ALL], [0, 0], Value::Attributes),
    entry(md::td::XFAM, 1, [ALL, ALL], [0, 0], Value::Xfam),
    entry(md::td::MAX_VCPUS, 1, [ALL, ALL], [0, 0], Value::MaxVcpus),
    entry(md::td::VIRTUAL_TSC, 1, [0, 0], [0, 0], Value::Hidden),
    entry(md::td::TD_EPOCH, 1, [ALL, ALL], [0, 0], Value::TdEpoch),
    entry(md::td::MRTD, 6, [ALL, ALL], [0, 0], Value::Mrtd),
    Entry {
        fields: 4,
        ..entry(md::td::RTMR, 6, [0, ALL], [0, 0], Value::Rtmr)
    },
    // Every leaf/sub-leaf code (17 bits: 2^16 fields of 2 elements); codes of leaves the
    // module does not virtualize answer FIELD_ID_INCORRECT when read.
    Entry {
        fields: 1 << 16,
        ..entry(
            md::td::CPUID_VALUES,
            2,
            [ALL, ALL],
            [0, 0],
            Value::CpuidValues,
        )
    },
];

/// vCPU-scope entries, in the order of `tdvps_lookup`.
pub(crate) const VP: [Entry; 4] = [
    entry(md::vp::RCX, 1, [0, ALL], [0, ALL], Value::GuestRcx),
    entry(md::vp::VCPU_STATE, 1, [0, ALL], [0, 0], Value::VcpuState),
    entry(md::vp::VCPU_INDEX, 1, [ALL, ALL], [0, 0], Value::VcpuIndex),
    entry(
        md::vp::NUM_TDVPS_PAGES,
        1,
        [ALL, ALL],
        [0, 0],
        Value::NumTdvpsPages,
    ),
];

const fn sys(id: u64, fields: u64, elems: u64, value: Value) -> Entry {
    Entry {
        id,
        fields,
        elems,
        rd: [ALL, ALL],
        wr: [0, 0],
        value,
    }
}

const fn val(id: u64, v: u64) -> Entry {
    sys(id, 1, 1, Value::Const(v))
}

const fn none(id: u64) -> Entry {
    sys(id, 1, 1, Value::Unmodelled)
}

const fn line(id: u64, v: LineValue) -> Entry {
    sys(id, 1, 1, Value::Line(v))
}

const PAGE: u64 = 4096;

/// Module-scope entries of the 2.0 line: Intel's `global_sys_lookup`
/// (`include/auto_gen/global_sys_fields_lookup.c`, the newest stored version, commit 1e63698…),
/// in its order, every one host-readable (`vmm_rd_mask` -1, cut to the element size), none
/// writable. The values are those of `md_sys_get_elements` (`metadata_sys.c`) for the emulated
/// platform (see [`super::state`]); the line-dependent ones come from [`LineValue`]. The 1.5
/// line's table is [`SYS_1_5`].
pub(crate) const SYS: [Entry; 67] = {
    use super::state as st;
    use LineValue as L;
    use Value::Unmodelled as N;
    [
        val(md::sys::NUM_PKGS, 1),
        sys(0x0000_0002_0000_0001, 8, 1, N), // PKG_FMS
        val(md::sys::VENDOR_ID, 0x8086),
        line(md::sys::BUILD_DATE, L::BuildDate),
        line(md::sys::BUILD_NUM, L::BuildNum),
        line(md::sys::MINOR_VERSION, L::MinorVersion),
        line(md::sys::MAJOR_VERSION, L::MajorVersion),
        line(md::sys::UPDATE_VERSION, L::UpdateVersion),
        line(md::sys::INTERNAL_VERSION, L::InternalVersion),
        none(0x8900_0001_0000_0000), // MODULE_HV
        none(0x8900_0001_0000_0001), // MIN_UPDATE_HV
        none(0x8900_0000_0000_0002), // NO_DOWNGRADE
        none(0x8900_0001_0000_0003), // NUM_HANDOFF_PAGES
        none(0x8900_0000_0000_0004), // HANDOFF_DATA_VALID
        none(0x8900_0001_0000_0005), // HANDOFF_DATA_HV
        none(0x8900_0002_0000_0006), // HANDOFF_DATA_SIZE
        val(md::sys::SYS_ATTRIBUTES, 0),
        none(0x0A00_0000_0000_0001),          // NUM_TDX_FEATURES
        none(0x0A00_0003_0000_0008),          // TDX_FEATURES0
        none(0x9000_0001_0000_0000),          // NUM_CMRS
        sys(0x9000_0003_0000_0080, 32, 1, N), // CMR_BASE
        sys(0x9000_0003_0000_0100, 32, 1, N), // CMR_SIZE
        none(0x9100_0001_0000_0008),          // MAX_TDMRS
        none(0x9100_0001_0000_0009),          // MAX_RESERVED_PER_TDMR
        none(0x9100_0001_0000_0010),          // PAMT_4K_ENTRY_SIZE
        none(0x9100_0001_0000_0011),          // PAMT_2M_ENTRY_SIZE
        none(0x9100_0001_0000_0012),          // PAMT_1G_ENTRY_SIZE
        val(md::TDR_BASE_SIZE, PAGE),
        line(md::TDCS_BASE_SIZE, L::TdcsBaseSize),
        val(
            md::sys::TDCS_SIZE_PER_L2_VM,
            st::TDCS_PAGES_PER_L2_VM * PAGE,
        ),
        val(md::TDVPS_BASE_SIZE, st::TDVPS_PAGES * PAGE),
        val(
            md::sys::TDVPS_SIZE_PER_L2_VM,
            st::TDVPS_PAGES_PER_L2_VM * PAGE,
        ),
        line(md::sys::ATTRIBUTES_FIXED0, L::AttributesFixed0),
        val(md::sys::ATTRIBUTES_FIXED1, st::ATTRIBUTES_FIXED1),
        val(md::sys::XFAM_FIXED0, st::XFAM_FIXED0),
        val(md::sys::XFAM_FIXED1, st::XFAM_FIXED1),
        val(
            md::sys::NUM_CPUID_CONFIG,
            super::cpuid::NUM_CPUID_CONFIG as u64,
        ),
        line(md::sys::CONFIG_FLAGS_FIXED0, L::ConfigFlagsFixed0),
        val(md::sys::CONFIG_FLAGS_FIXED1, st::CONFIG_FLAGS_FIXED1),
        val(md::MAX_VCPUS_PER_TD, crate::abi::MAX_VCPUS_PER_TD as u64),
        none(0x9900_0000_0000_0009), // MIN_VIRT_MAXPA
        sys(
            md::sys::CPUID_CONFIG_LEAVES,
            super::cpuid::CPUID_CONFIG_FIELDS,
            1,
            Value::CpuidConfigLeaves,
        ),
        sys(
            md::sys::CPUID_CONFIG_VALUES,
            super::cpuid::CPUID_CONFIG_FIELDS,
            2,
            Value::CpuidConfigBits,
        ),
        val(
            md::sys::IA32_ARCH_CAPABILITIES_CONFIG_MASK,
            st::IA32_ARCH_CAPABILITIES_CONFIG_MASK,
        ),
        none(0x9900_0001_0000_0800),          // NUM_ALLOWED_FMS
        none(0x9900_0001_0000_0801),          // NUM_DISALLOWED_FMS
        sys(0x9900_0003_0000_0810, 64, 1, N), // ALLOWED_FMS
        sys(0x9900_0003_0000_0850, 64, 1, N), // DISALLOWED_FMS
        none(0xA000_0003_0000_0000),          // MIG_ATTRIBUTES
        none(0x2000_0001_0000_0001),          // MIN_EXPORT_VERSION
        none(0x2000_0001_0000_0002),          // MAX_EXPORT_VERSION
        none(0x2000_0001_0000_0003),          // MIN_IMPORT_VERSION
        none(0x2000_0001_0000_0004),          // MAX_IMPORT_VERSION
        none(0xA000_0001_0000_0010),          // MAX_MIGS
        none(0xA000_0000_0000_0020),          // NUM_IMMUTABLE_STATE_PAGES
        none(0xA000_0000_0000_0021),          // NUM_TD_STATE_PAGES
        none(0xA000_0000_0000_0022),          // NUM_VP_STATE_PAGES
        none(0xA100_0001_0000_0000),          // MAX_SERV_TDS
        none(0xA100_0003_0000_0001),          // SERVTD_ATTR_FIXED0
        none(0xA100_0003_0000_0002),          // SERVTD_ATTR_FIXED1
        none(0xA200_0001_0000_0000),          // GUEST_L2_GPA_ATTR_MASK
        none(0xA200_0003_0000_0001),          // VM_CTLS_FIXED0
        none(0xA200_0003_0000_0002),          // VM_CTLS_FIXED1
        none(0xA200_0003_0000_0003),          // VCPU_L2_CTLS_FIXED0
        none(0xA200_0003_0000_0004),          // VCPU_L2_CTLS_FIXED1
        none(0xA200_0003_0000_0005),          // VCPU_L2_DEBUG_CTLS_FIXED0
        none(0xA200_0003_0000_0006),          // VCPU_L2_DEBUG_CTLS_FIXED1
    ]
};

/// Entries of [`SYS`] the 1.5 line's table does not have (`global_sys_fields_lookup.c` at
/// `72d8cff…`: 65 entries, the same ids in the same order otherwise).
const NOT_IN_1_5: [u64; 2] = [
    md::MAX_VCPUS_PER_TD,
    0x9900_0000_0000_0009, /* MIN_VIRT_MAXPA */
];

/// Module-scope entries of the 1.5 line: [`SYS`] without [`NOT_IN_1_5`].
pub(crate) const SYS_1_5: [Entry; 65] = {
    let mut out = [SYS[0]; 65];
    let (mut i, mut n) = (0, 0);
    while i < SYS.len() {
        let id = SYS[i].id;
        if id != NOT_IN_1_5[0] && id != NOT_IN_1_5[1] {
            out[n] = SYS[i];
            n += 1;
        }
        i += 1;
    }
    assert!(n == out.len());
    out
};

/// The module-scope table of `line`.
pub(crate) const fn sys_table(line: super::ModuleLine) -> &'static [Entry] {
    match line {
        super::ModuleLine::V1_5 => &SYS_1_5,
        super::ModuleLine::V2_0 => &SYS,
    }
}

fn class(id: u64) -> u64 {
    (id >> md::CLASS_SHIFT) & 0x3F
}

fn code(id: u64) -> u64 {
    id & md::FIELD_CODE_MASK
}

/// `md_get_element_size_mask` of an entry.
fn size_mask(e: &Entry) -> u64 {
    match (e.id >> md::ELEMENT_SIZE_SHIFT) & 3 {
        0 => 0xFF,
        1 => 0xFFFF,
        2 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

impl Entry {
    /// The host read and write masks (`md_get_rd_wr_mask` for `MD_HOST_RD/WR`), cut to the
    /// element size as the generated tables are.
    pub(crate) fn masks(&self, debug: bool) -> (u64, u64) {
        let m = size_mask(self);
        (self.rd[debug as usize] & m, self.wr[debug as usize] & m)
    }

    /// A value as an element of this entry (`read_value & md_get_element_size_mask`).
    pub(crate) fn fit(&self, value: u64) -> u64 {
        value & size_mask(self)
    }
}

/// `is_null_field_id`: every bit set, the context code aside.
pub(crate) fn is_null(id: u64) -> bool {
    id | md::CONTEXT_MASK == u64::MAX
}

/// `md_check_as_single_element_id`: reserved bits, LAST_ELEMENT_IN_FIELD and
/// LAST_FIELD_IN_SEQUENCE must be 0; element size, increment size, write-mask-valid and
/// context are ignored.
pub(crate) fn check_single_element(id: u64) -> LeafResult {
    if id & (md::RESERVED_MASK | md::LAST_ELEMENT_MASK | md::LAST_FIELD_MASK) != 0 {
        return Err(Status::new(status::METADATA_FIELD_ID_INCORRECT));
    }
    Ok(())
}

/// `md_find_entry_idx`: the entry whose class matches and whose element range holds the field
/// code, and the element's number inside the entry.
pub(crate) fn find(table: &[Entry], id: u64) -> Option<(usize, u64)> {
    table.iter().enumerate().find_map(|(i, e)| {
        let first = code(e.id);
        let n = e.fields * e.elems;
        (class(e.id) == class(id) && (first..first + n).contains(&code(id)))
            .then(|| (i, code(id) - first))
    })
}

/// `md_get_next_element_in_context` for host reads: the element after `id` (in the same entry,
/// the caller's id with the field code + 1), else the first element of the next entry the host
/// may read; the first readable element of the table for the null id; `MD_FIELD_ID_NA` after
/// the last.
pub(crate) fn next_readable(table: &[Entry], id: u64, debug: bool) -> u64 {
    let start = if is_null(id) {
        0
    } else {
        let Some((i, elem)) = find(table, id) else {
            return md::FIELD_ID_NA;
        };
        let e = &table[i];
        if e.value == Value::CpuidValues {
            // Only the leaves the module virtualizes are elements (Intel's CPUID class).
            if let Some(c) = super::cpuid::next_field_code(Some(elem)) {
                return (id & !md::FIELD_CODE_MASK) | c;
            }
        } else if elem + 1 < e.fields * e.elems {
            return (id & !md::FIELD_CODE_MASK) | (code(id) + 1);
        }
        i + 1
    };
    table[start.min(table.len())..]
        .iter()
        .find(|e| e.masks(debug).0 != 0)
        .map_or(md::FIELD_ID_NA, |e| match e.value {
            Value::CpuidValues => e.id | super::cpuid::next_field_code(None).unwrap_or(0),
            _ => e.id,
        })
}

/// A host write of one element (`md_td_write_element` / `md_vp_write_element`, host access,
/// write mask valid): the bits of `value` selected by `mask` and writable by the host replace
/// those of `current`. `zero_full_write`: the VP variant, which does not merge with the old
/// value when the whole element is written.
///
/// Returns the new element value and the old one as the host may read it (R8).
///
/// # Errors
///
/// `TDX_METADATA_FIELD_NOT_WRITABLE` when no bit is both requested and writable;
/// `TDX_METADATA_FIELD_VALUE_NOT_VALID` when a requested bit the host may read but not write
/// would change.
pub(crate) fn write(
    e: &Entry,
    debug: bool,
    current: u64,
    value: u64,
    mask: u64,
    zero_full_write: bool,
) -> LeafResult<(u64, u64)> {
    let (rd, wr) = e.masks(debug);
    let combined = wr & mask;
    if combined == 0 {
        return Err(Status::new(status::METADATA_FIELD_NOT_WRITABLE));
    }
    let current = e.fit(current);
    let read = if zero_full_write && combined == size_mask(e) {
        0
    } else {
        current
    };
    // `md_check_forbidden_bits_unchanged`.
    let forbidden = mask & !wr;
    if read & rd & forbidden != value & forbidden {
        return Err(Status::new(status::METADATA_FIELD_VALUE_NOT_VALID));
    }
    let new = (read & !combined) | (value & combined);
    Ok((e.fit(new), current & rd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_in_intels_order_and_in_their_context() {
        for (table, ctx) in [
            (&SYS[..], md::CONTEXT_SYS),
            (&TD[..], md::CONTEXT_TD),
            (&VP[..], md::CONTEXT_VP),
        ] {
            for w in table.windows(2) {
                let key = |e: &Entry| (class(e.id), code(e.id));
                assert!(key(&w[0]) < key(&w[1]), "{:#x} {:#x}", w[0].id, w[1].id);
            }
            for e in table {
                assert_eq!(e.id & md::CONTEXT_MASK, ctx << 52);
                assert_eq!(check_single_element(e.id), Ok(()));
            }
        }
    }

    #[test]
    fn the_1_5_table_is_the_2_0_table_without_two_entries() {
        assert_eq!(SYS_1_5.len() + NOT_IN_1_5.len(), SYS.len());
        let mut j = 0;
        for e in &SYS {
            if NOT_IN_1_5.contains(&e.id) {
                continue;
            }
            assert_eq!(SYS_1_5[j].id, e.id);
            j += 1;
        }
        assert_eq!(find(&SYS_1_5, md::MAX_VCPUS_PER_TD), None);
        // CONFIG_FLAGS_FIXED1 leads to MAX_VCPUS_PER_TD in 2.0, to CPUID_CONFIG_LEAVES in 1.5.
        let fixed1 = md::sys::CONFIG_FLAGS_FIXED1;
        assert_eq!(next_readable(&SYS, fixed1, false), md::MAX_VCPUS_PER_TD);
        assert_eq!(
            next_readable(&SYS_1_5, fixed1, false),
            0x9900_0003_0000_0400
        );
    }

    #[test]
    fn no_td_scope_entry_is_host_writable() {
        // TDH.MNG.WR answers NOT_WRITABLE without storing anything: an entry with a write
        // mask needs its store added to `mng_rdwr` first.
        assert!(TD.iter().all(|e| e.wr == [0, 0]));
    }

    #[test]
    fn find_locates_elements_of_multi_element_fields() {
        assert_eq!(find(&TD, md::element(md::td::MRTD, 5)), Some((9, 5)));
        assert_eq!(find(&TD, md::element(md::td::MRTD, 6)), None);
        assert_eq!(find(&TD, md::element(md::td::RTMR, 23)), Some((10, 23)));
        // The element size code does not take part in the search.
        assert_eq!(find(&TD, md::td::OP_STATE & !(3 << 32)), Some((3, 0)));
    }

    #[test]
    fn next_readable_skips_fields_the_host_may_not_read() {
        assert_eq!(
            next_readable(&TD, md::td::MAX_VCPUS, false),
            md::td::TD_EPOCH
        );
        let last_mrtd = md::element(md::td::MRTD, 5);
        // A production TD's RTMRs are not host-readable: the chain goes on to its CPUID.
        assert_eq!(
            next_readable(&TD, last_mrtd, false),
            md::td::CPUID_VALUES | 0x1fe
        );
        assert_eq!(next_readable(&TD, last_mrtd, true), md::td::RTMR);
        assert_eq!(
            next_readable(&VP, md::FIELD_ID_NA, false),
            md::vp::VCPU_INDEX
        );
        assert_eq!(next_readable(&VP, md::FIELD_ID_NA, true), md::vp::RCX);
    }

    #[test]
    fn the_sys_table_chains_through_every_entry_in_intels_order() {
        assert_eq!(
            next_readable(&SYS, md::FIELD_ID_NA, false),
            md::sys::NUM_PKGS
        );
        // Multi-element entries: element i is at field code + i; the last one leads on.
        let cpuid_values = 0x9900_0003_0000_0500;
        assert_eq!(find(&SYS, cpuid_values + 63), Some((42, 63)));
        assert_eq!(find(&SYS, cpuid_values + 64), None);
        assert_eq!(
            next_readable(&SYS, cpuid_values + 63, false),
            md::sys::IA32_ARCH_CAPABILITIES_CONFIG_MASK
        );
        let last = SYS[SYS.len() - 1].id;
        assert_eq!(next_readable(&SYS, last, false), md::FIELD_ID_NA);
        // Every entry is host-readable, so the chain visits each in turn.
        for w in SYS.windows(2) {
            let last_elem = w[0].id + w[0].fields * w[0].elems - 1;
            assert_eq!(next_readable(&SYS, last_elem, false), w[1].id);
        }
    }

    #[test]
    fn write_merges_under_the_mask_and_returns_the_readable_old_value() {
        let rcx = &VP[0];
        assert_eq!(
            write(rcx, true, 0x1234, 0xFF00, 0xF000, true),
            Ok((0xF234, 0x1234))
        );
        assert_eq!(write(rcx, true, 0x1234, 7, u64::MAX, true), Ok((7, 0x1234)));
        assert_eq!(
            write(rcx, true, 0x1234, 7, 0, true),
            Err(Status::new(status::METADATA_FIELD_NOT_WRITABLE))
        );
        assert_eq!(
            write(rcx, false, 0x1234, 7, u64::MAX, true),
            Err(Status::new(status::METADATA_FIELD_NOT_WRITABLE))
        );
        // A field with some writable bits: a requested read-only bit must keep its value.
        let e = Entry {
            wr: [0xF, 0xF],
            ..TD[4]
        };
        assert_eq!(write(&e, false, 0x30, 0x35, 0xFF, false), Ok((0x35, 0x30)));
        assert_eq!(
            write(&e, false, 0x30, 0x05, 0xFF, false),
            Err(Status::new(status::METADATA_FIELD_VALUE_NOT_VALID))
        );
    }
}
