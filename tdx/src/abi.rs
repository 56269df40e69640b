// SPDX-License-Identifier: GPL-2.0-only
//! The SEAMCALL ABI: leaf numbers, status codes, operand ids, S-EPT levels and entry states,
//! PAMT page types, TD lifecycle and OP states.
//!
//! Values are those of Intel's TDX module ABI (`include/tdx_api_defs.h`,
//! `include/auto_gen/tdx_error_codes_defs.h`, `sept_state_lookup.h`, `pamt_manager.h`) and agree
//! with Linux's `arch/x86/virt/vmx/tdx/tdx.h` and `arch/x86/kvm/vmx/tdx_errno.h`. See
//! `docs/tdx-module-rules.md` for where each fact was read.

pub mod td_params;

pub use td_params::TdParams;

/// SEAMCALL leaf numbers (RAX bits 15:0).
pub mod leaf {
    /// TDH.VP.ENTER.
    pub const VP_ENTER: u16 = 0;
    /// TDH.MNG.ADDCX.
    pub const MNG_ADDCX: u16 = 1;
    /// TDH.MEM.PAGE.ADD.
    pub const MEM_PAGE_ADD: u16 = 2;
    /// TDH.MEM.SEPT.ADD.
    pub const MEM_SEPT_ADD: u16 = 3;
    /// TDH.VP.ADDCX.
    pub const VP_ADDCX: u16 = 4;
    /// TDH.MEM.PAGE.AUG.
    pub const MEM_PAGE_AUG: u16 = 6;
    /// TDH.MEM.RANGE.BLOCK.
    pub const MEM_RANGE_BLOCK: u16 = 7;
    /// TDH.MNG.KEY.CONFIG.
    pub const MNG_KEY_CONFIG: u16 = 8;
    /// TDH.MNG.CREATE.
    pub const MNG_CREATE: u16 = 9;
    /// TDH.VP.CREATE.
    pub const VP_CREATE: u16 = 10;
    /// TDH.MNG.RD.
    pub const MNG_RD: u16 = 11;
    /// TDH.MNG.WR.
    pub const MNG_WR: u16 = 13;
    /// TDH.MEM.PAGE.DEMOTE.
    pub const MEM_PAGE_DEMOTE: u16 = 15;
    /// TDH.MR.EXTEND.
    pub const MR_EXTEND: u16 = 16;
    /// TDH.MR.FINALIZE.
    pub const MR_FINALIZE: u16 = 17;
    /// TDH.VP.FLUSH.
    pub const VP_FLUSH: u16 = 18;
    /// TDH.MNG.VPFLUSHDONE.
    pub const MNG_VPFLUSHDONE: u16 = 19;
    /// TDH.MNG.KEY.FREEID.
    pub const MNG_KEY_FREEID: u16 = 20;
    /// TDH.MNG.INIT.
    pub const MNG_INIT: u16 = 21;
    /// TDH.VP.INIT.
    pub const VP_INIT: u16 = 22;
    /// TDH.MEM.PAGE.PROMOTE.
    pub const MEM_PAGE_PROMOTE: u16 = 23;
    /// TDH.PHYMEM.PAGE.RDMD: reads a page's PAMT entry.
    pub const PHYMEM_PAGE_RDMD: u16 = 24;
    /// TDH.MEM.SEPT.RD.
    pub const MEM_SEPT_RD: u16 = 25;
    /// TDH.VP.RD.
    pub const VP_RD: u16 = 26;
    /// TDH.MNG.KEY.RECLAIMID.
    pub const MNG_KEY_RECLAIMID: u16 = 27;
    /// TDH.PHYMEM.PAGE.RECLAIM.
    pub const PHYMEM_PAGE_RECLAIM: u16 = 28;
    /// TDH.MEM.PAGE.REMOVE.
    pub const MEM_PAGE_REMOVE: u16 = 29;
    /// TDH.MEM.SEPT.REMOVE.
    pub const MEM_SEPT_REMOVE: u16 = 30;
    /// TDH.SYS.INFO.
    pub const SYS_INFO: u16 = 32;
    /// TDH.SYS.RD.
    pub const SYS_RD: u16 = 34;
    /// TDH.MEM.TRACK.
    pub const MEM_TRACK: u16 = 38;
    /// TDH.MEM.RANGE.UNBLOCK.
    pub const MEM_RANGE_UNBLOCK: u16 = 39;
    /// TDH.PHYMEM.CACHE.WB.
    pub const PHYMEM_CACHE_WB: u16 = 40;
    /// TDH.PHYMEM.PAGE.WBINVD.
    pub const PHYMEM_PAGE_WBINVD: u16 = 41;
    /// TDH.VP.WR.
    pub const VP_WR: u16 = 43;

    /// Highest leaf number the per-leaf counters track.
    pub const MAX_TRACKED: usize = 64;

    /// The name of a leaf, for reports.
    pub const fn name(leaf: u16) -> &'static str {
        match leaf {
            VP_ENTER => "VP.ENTER",
            MNG_ADDCX => "MNG.ADDCX",
            MEM_PAGE_ADD => "MEM.PAGE.ADD",
            MEM_SEPT_ADD => "MEM.SEPT.ADD",
            VP_ADDCX => "VP.ADDCX",
            MEM_PAGE_AUG => "MEM.PAGE.AUG",
            MEM_RANGE_BLOCK => "MEM.RANGE.BLOCK",
            MNG_KEY_CONFIG => "MNG.KEY.CONFIG",
            MNG_CREATE => "MNG.CREATE",
            VP_CREATE => "VP.CREATE",
            MNG_RD => "MNG.RD",
            MNG_WR => "MNG.WR",
            MEM_PAGE_DEMOTE => "MEM.PAGE.DEMOTE",
            MR_EXTEND => "MR.EXTEND",
            MR_FINALIZE => "MR.FINALIZE",
            VP_FLUSH => "VP.FLUSH",
            MNG_VPFLUSHDONE => "MNG.VPFLUSHDONE",
            MNG_KEY_FREEID => "MNG.KEY.FREEID",
            MNG_INIT => "MNG.INIT",
            VP_INIT => "VP.INIT",
            MEM_PAGE_PROMOTE => "MEM.PAGE.PROMOTE",
            MEM_SEPT_RD => "MEM.SEPT.RD",
            VP_RD => "VP.RD",
            MNG_KEY_RECLAIMID => "MNG.KEY.RECLAIMID",
            PHYMEM_PAGE_RECLAIM => "PHYMEM.PAGE.RECLAIM",
            PHYMEM_PAGE_RDMD => "PHYMEM.PAGE.RDMD",
            MEM_PAGE_REMOVE => "MEM.PAGE.REMOVE",
            MEM_SEPT_REMOVE => "MEM.SEPT.REMOVE",
            SYS_INFO => "SYS.INFO",
            SYS_RD => "SYS.RD",
            MEM_TRACK => "MEM.TRACK",
            MEM_RANGE_UNBLOCK => "MEM.RANGE.UNBLOCK",
            PHYMEM_CACHE_WB => "PHYMEM.CACHE.WB",
            PHYMEM_PAGE_WBINVD => "PHYMEM.PAGE.WBINVD",
            VP_WR => "VP.WR",
            _ => "?",
        }
    }
}

/// RAX input: leaf in bits 15:0, version in bits 23:16, the rest reserved (must be 0).
pub const fn rax(leaf: u16, version: u8) -> u64 {
    leaf as u64 | (version as u64) << 16
}

/// Completion status codes (RAX output). The low 32 bits carry an operand id or details; use
/// [`status_class`] to compare classes.
pub mod status {
    /// Success.
    pub const SUCCESS: u64 = 0x0000_0000_0000_0000;
    /// An interruptible leaf was interrupted and may be resumed.
    pub const INTERRUPTED_RESUMABLE: u64 = 0x8000_0003_0000_0000;
    /// An input operand is invalid.
    pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
    /// A physical address lies outside every TDMR.
    pub const OPERAND_ADDR_RANGE_ERROR: u64 = 0xC000_0101_0000_0000;
    /// A resource is locked by another logical processor.
    pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
    /// MEM.TRACK: a vCPU from the previous epoch is still inside the TD.
    pub const PREVIOUS_TLB_EPOCH_BUSY: u64 = 0x8000_0201_0000_0000;
    /// No entropy from RDRAND/RDSEED.
    pub const RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
    /// The page's PAMT type or owner is not what the leaf needs.
    pub const PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
    /// RECLAIM of a TDR that still has child pages.
    pub const TD_ASSOCIATED_PAGES_EXIST: u64 = 0xC000_0400_0000_0000;
    /// The module is not initialised.
    pub const SYS_NOT_READY: u64 = 0xC000_0505_0000_0000;
    /// The TD is in a fatal state.
    pub const TD_FATAL: u64 = 0xE000_0604_0000_0000;
    /// Not enough TDCS pages were added.
    pub const TDCS_NOT_ALLOCATED: u64 = 0xC000_0606_0000_0000;
    /// The TD's lifecycle state does not allow the leaf.
    pub const LIFECYCLE_STATE_INCORRECT: u64 = 0xC000_0607_0000_0000;
    /// The TD's OP state does not allow the leaf.
    pub const OP_STATE_INCORRECT: u64 = 0xC000_0608_0000_0000;
    /// MR.FINALIZE of a TD without vCPUs.
    pub const NO_VCPUS: u64 = 0xC000_0609_0000_0000;
    /// Wrong number of TDCX/TDVPS pages.
    pub const TDCX_NUM_INCORRECT: u64 = 0xC000_0610_0000_0000;
    /// VP.INIT version 1 with an x2APIC id another vCPU of the TD has (operand field: the id).
    pub const X2APIC_ID_NOT_UNIQUE: u64 = 0xC000_0621_0000_0000;
    /// The vCPU's state does not allow the leaf (operand field: the state).
    pub const VCPU_STATE_INCORRECT: u64 = 0xC000_0700_0000_0000;
    /// VP.FLUSH on another LP than the vCPU is associated with.
    pub const VCPU_NOT_ASSOCIATED: u64 = 0x8000_0702_0000_0000;
    /// VP.INIT beyond MAX_VCPUS.
    pub const MAX_VCPUS_EXCEEDED: u64 = 0xC000_0705_0000_0000;
    /// Key generation failed (retry).
    pub const KEY_GENERATION_FAILED: u64 = 0x8000_0800_0000_0000;
    /// The TD's keys are not configured.
    pub const TD_KEYS_NOT_CONFIGURED: u64 = 0x8000_0810_0000_0000;
    /// KEY.CONFIG on a package already configured (not an error).
    pub const KEY_CONFIGURED: u64 = 0x0000_0815_0000_0000;
    /// KEY.FREEID before every package ran CACHE.WB.
    pub const WBCACHE_NOT_COMPLETE: u64 = 0x8000_0817_0000_0000;
    /// MNG.CREATE with an HKID in use.
    pub const HKID_NOT_FREE: u64 = 0xC000_0820_0000_0000;
    /// CACHE.WB with no HKID to write back (not an error).
    pub const NO_HKID_READY_TO_WBCACHE: u64 = 0x0000_0821_0000_0000;
    /// CACHE.WB resumed on a package whose interrupted write-back another caller restarted.
    pub const WBCACHE_RESUME_ERROR: u64 = 0xC000_0823_0000_0000;
    /// VPFLUSHDONE while vCPUs are still associated.
    pub const FLUSHVP_NOT_DONE: u64 = 0x8000_0824_0000_0000;
    /// The S-EPT walk stopped above the requested level.
    pub const EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
    /// MR.EXTEND of a GPA that is not mapped.
    pub const EPT_ENTRY_NOT_PRESENT: u64 = 0xC000_0B03_0000_0000;
    /// REMOVE of an entry that was not blocked (TD runnable).
    pub const GPA_RANGE_NOT_BLOCKED: u64 = 0xC000_0B06_0000_0000;
    /// BLOCK of an entry already blocked (not an error).
    pub const GPA_RANGE_ALREADY_BLOCKED: u64 = 0x0000_0B07_0000_0000;
    /// REMOVE of a blocked entry whose block has not been TLB-tracked.
    pub const TLB_TRACKING_NOT_DONE: u64 = 0xC000_0B08_0000_0000;
    /// The S-EPT entry's state does not allow the leaf.
    pub const EPT_ENTRY_STATE_INCORRECT: u64 = 0xC000_0B0D_0000_0000;
    /// SEPT.REMOVE of a table that still has entries.
    pub const EPT_PAGE_NOT_FREE: u64 = 0xC000_0B0E_0000_0000;
    /// Metadata: the field id is malformed or names no field of the context.
    pub const METADATA_FIELD_ID_INCORRECT: u64 = 0xC000_0C00_0000_0000;
    /// Metadata: no bit of the field may be written (with this write mask, by the host).
    pub const METADATA_FIELD_NOT_WRITABLE: u64 = 0xC000_0C01_0000_0000;
    /// Metadata: the field may not be read by the host (for this TD's DEBUG attribute).
    pub const METADATA_FIELD_NOT_READABLE: u64 = 0xC000_0C02_0000_0000;
    /// Metadata: the write would change bits the host may read but not write.
    pub const METADATA_FIELD_VALUE_NOT_VALID: u64 = 0xC000_0C03_0000_0000;
    /// MNG.RD/VP.RD version 1 of the null field id (-1): RDX holds the context's first
    /// readable field id (not an error).
    pub const METADATA_FIRST_FIELD_ID_IN_CONTEXT: u64 = 0x0000_0C0B_0000_0000;

    /// Bit 63: an error.
    pub const ERROR_BIT: u64 = 1 << 63;
    /// Bit 62: not recoverable.
    pub const NON_RECOVERABLE_BIT: u64 = 1 << 62;
    /// Mask of the status proper (Linux `TDX_SEAMCALL_STATUS_MASK`).
    pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

    /// Software statuses (Linux `TDX_SW_ERROR`): bit 63 and bits 47:40 all set, a status class
    /// the TDX module never uses. The host reports with them what the SEAMCALL instruction
    /// itself did when it did not reach the module.
    pub const SW_ERROR: u64 = ERROR_BIT | 0xFF << 40;
    /// Software status: the SEAMCALL instruction itself failed (VMfailInvalid, no module).
    pub const SW_VMFAILINVALID: u64 = SW_ERROR | 0xFFFF_0000;
    /// Software status: SEAMCALL raised #GP (TDX not enabled by the BIOS).
    pub const SW_GP: u64 = SW_ERROR | 13;
    /// Software status: SEAMCALL raised #UD (not in VMX operation).
    pub const SW_UD: u64 = SW_ERROR | 6;
}

/// The status without its operand id/details.
pub const fn status_class(status: u64) -> u64 {
    status & status::STATUS_MASK
}

/// Operand ids carried in the low bits of a status.
pub mod operand {
    /// RAX.
    pub const RAX: u32 = 0;
    /// RCX.
    pub const RCX: u32 = 1;
    /// RDX.
    pub const RDX: u32 = 2;
    /// R8.
    pub const R8: u32 = 8;
    /// R9.
    pub const R9: u32 = 9;
    /// R10.
    pub const R10: u32 = 10;
    /// R11.
    pub const R11: u32 = 11;
    /// The TD's TDR page, found implicitly.
    pub const TDR: u32 = 0x80;
    /// The TD's S-EPT tree lock.
    pub const SEPT_TREE: u32 = 0x92;
    /// The TD's TLB epoch lock.
    pub const TD_EPOCH: u32 = 0xA9;
    /// The TD's OP-state lock.
    pub const OP_STATE: u32 = 0xAC;
    /// The key ownership table.
    pub const KOT: u32 = 0xBA;
    /// The package's TDH.PHYMEM.CACHE.WB state (`OPERAND_ID_WBCACHE`, a per-package mutex).
    pub const WBCACHE: u32 = 0xBC;

    /// TD_PARAMS fields (TDH.MNG.INIT reports a refused field by these ids).
    pub mod td_params {
        /// ATTRIBUTES.
        pub const ATTRIBUTES: u32 = 64;
        /// XFAM.
        pub const XFAM: u32 = 65;
        /// CONFIG_FLAGS (`OPERAND_ID_EXEC_CONTROLS`).
        pub const EXEC_CONTROLS: u32 = 66;
        /// EPTP_CONTROLS.
        pub const EPTP_CONTROLS: u32 = 67;
        /// MAX_VCPUS.
        pub const MAX_VCPUS: u32 = 68;
        /// CPUID_CONFIG (RCX then names the leaf and subleaf).
        pub const CPUID_CONFIG: u32 = 69;
        /// TSC_FREQUENCY.
        pub const TSC_FREQUENCY: u32 = 70;
        /// NUM_L2_VMS.
        pub const NUM_L2_VMS: u32 = 71;
        /// IA32_ARCH_CAPABILITIES_CONFIG.
        pub const IA32_ARCH_CAPABILITIES_CONFIG: u32 = 72;
    }
}

/// S-EPT level in TDX numbering (`ept_level_t`): 0 = 4K entries ... 4 = PML5.
///
/// TDX's level of an entry is KVM's level minus one (KVM counts 4K as 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeptLevel(pub u8);

impl SeptLevel {
    /// 4K entries (PT).
    pub const L4K: SeptLevel = SeptLevel(0);
    /// 2M entries (PD).
    pub const L2M: SeptLevel = SeptLevel(1);
    /// 1G entries (PDPT).
    pub const L1G: SeptLevel = SeptLevel(2);
    /// PML4 entries.
    pub const PML4: SeptLevel = SeptLevel(3);
    /// PML5 entries.
    pub const PML5: SeptLevel = SeptLevel(4);

    /// From the MMU core's level (4K = 1).
    pub const fn from_mmu(level: mmu::Level) -> SeptLevel {
        SeptLevel(level.get() - 1)
    }

    /// 4 KiB pages covered by one entry at this level.
    pub const fn pages(self) -> u64 {
        1 << (9 * self.0 as u32)
    }
}

/// Public (architectural) S-EPT entry states, as SEPT.RD and error details report them in
/// RDX bits 15:8.
pub mod sept_state {
    /// Free: not mapped.
    pub const FREE: u8 = 0;
    /// Leaf blocked.
    pub const BLOCKED: u8 = 1;
    /// Leaf added by AUG, waiting for the guest's TDG.MEM.PAGE.ACCEPT.
    pub const PENDING: u8 = 2;
    /// Pending and blocked.
    pub const PENDING_BLOCKED: u8 = 3;
    /// Leaf mapped.
    pub const MAPPED: u8 = 4;
    /// Removed during import.
    pub const REMOVED: u8 = 5;
    /// Non-leaf blocked.
    pub const NL_BLOCKED: u8 = 0x81;
    /// Non-leaf mapped.
    pub const NL_MAPPED: u8 = 0x84;
}

/// PAMT page types.
pub mod page_type {
    /// Not assigned to TDX: host memory.
    pub const NDA: u8 = 0;
    /// Reserved.
    pub const RSVD: u8 = 1;
    /// A TD's private page.
    pub const REG: u8 = 3;
    /// A TD's root control structure.
    pub const TDR: u8 = 4;
    /// A TD control-structure extension page.
    pub const TDCX: u8 = 5;
    /// A vCPU's root page.
    pub const TDVPR: u8 = 6;
    /// An S-EPT page.
    pub const EPT: u8 = 8;
}

/// PAMT page sizes.
pub mod page_size {
    /// 4 KiB.
    pub const SIZE_4K: u8 = 0;
    /// 2 MiB.
    pub const SIZE_2M: u8 = 1;
    /// 1 GiB.
    pub const SIZE_1G: u8 = 2;
}

/// TD lifecycle states (TDR).
pub mod lifecycle {
    /// After MNG.CREATE.
    pub const HKID_ASSIGNED: u8 = 0;
    /// After MNG.KEY.CONFIG on every package.
    pub const KEYS_CONFIGURED: u8 = 1;
    /// After MNG.VPFLUSHDONE.
    pub const BLOCKED: u8 = 2;
    /// After MNG.KEY.FREEID: pages may be reclaimed.
    pub const TEARDOWN: u8 = 3;
}

/// TD OP states (TDCS).
pub mod op_state {
    /// Before MNG.INIT.
    pub const UNINITIALIZED: u8 = 0;
    /// After MNG.INIT: being built.
    pub const INITIALIZED: u8 = 1;
    /// After MR.FINALIZE: may run.
    pub const RUNNABLE: u8 = 2;
}

/// vCPU states (TDVPS).
pub mod vcpu_state {
    /// After VP.CREATE.
    pub const UNINITIALIZED: u8 = 0;
    /// After VP.INIT.
    pub const READY: u8 = 2;
}

/// Bits of the GPA+level operand (RCX of the MEM leaves): level in 2:0, 11:3 and 63:52 reserved.
pub const fn gpa_level_operand(gpa: u64, level: SeptLevel) -> u64 {
    gpa | level.0 as u64
}

/// Metadata field identifiers (TDH.SYS.RD, TDH.MNG.RD/WR, TDH.VP.RD/WR): Intel's values, so the
/// host asks the real module and the software one the same way.
///
/// A field id (`md_field_id_t`, `include/tdx_api_defs.h`) is: bits 23:0 field code, 31:24
/// reserved, 33:32 element size (1, 2, 4 or 8 bytes), 37:34 last element in field and 46:38 last
/// field in sequence (sequence headers only), 49:47 reserved, 50 increment size, 51 write mask
/// valid, 54:52 context (0 module, 1 TD, 2 vCPU), 55 reserved, 61:56 class code, 62 reserved,
/// 63 non-architectural. A field of several elements (MRTD: six 8-byte elements) is addressed
/// one element at a time: element `i` has field code `code + i` ([`md::element`]).
pub mod md {
    /// TDR size in bytes (16-bit element).
    pub const TDR_BASE_SIZE: u64 = 0x9800_0001_0000_0000;
    /// TDCS size in bytes, TDR excluded: `TDCS_BASE_SIZE / 4096` TDCX pages (16-bit).
    pub const TDCS_BASE_SIZE: u64 = 0x9800_0001_0000_0100;
    /// TDVPS size in bytes, TDVPR included (16-bit).
    pub const TDVPS_BASE_SIZE: u64 = 0x9800_0001_0000_0200;
    /// Most vCPUs per TD (16-bit).
    pub const MAX_VCPUS_PER_TD: u64 = 0x9900_0001_0000_0008;
    /// RDX on output when there is no next field (`MD_FIELD_ID_NA`); as an input of
    /// MNG.RD/VP.RD version 1, the null id that asks for the context's first field.
    pub const FIELD_ID_NA: u64 = u64::MAX;

    /// Bits 23:0: the field code.
    pub const FIELD_CODE_MASK: u64 = 0xFF_FFFF;
    /// Bits 33:32: the element size code (size = 1 << code bytes).
    pub const ELEMENT_SIZE_SHIFT: u32 = 32;
    /// Bits 37:34: last element in field (sequence headers only; 0 for a single element).
    pub const LAST_ELEMENT_MASK: u64 = 0xF << 34;
    /// Bits 46:38: last field in sequence (sequence headers only; 0 for a single element).
    pub const LAST_FIELD_MASK: u64 = 0x1FF << 38;
    /// Bit 51: write mask valid (ignored by the single-element leaves).
    pub const WRITE_MASK_VALID: u64 = 1 << 51;
    /// Bits 54:52: the context code.
    pub const CONTEXT_MASK: u64 = 7 << 52;
    /// Bits 61:56: the class code.
    pub const CLASS_SHIFT: u32 = 56;
    /// The reserved bits: 31:24, 49:47, 55 and 62.
    pub const RESERVED_MASK: u64 = 0xFF << 24 | 7 << 47 | 1 << 55 | 1 << 62;
    /// Context code of the module-scope (TDH.SYS.RD) fields.
    pub const CONTEXT_SYS: u64 = 0;
    /// Context code of the TD-scope (TDH.MNG.RD/WR) fields.
    pub const CONTEXT_TD: u64 = 1;
    /// Context code of the vCPU-scope (TDH.VP.RD/WR) fields.
    pub const CONTEXT_VP: u64 = 2;

    /// The id of element `i` of a multi-element field (field code + `i`; all the fields here
    /// have an increment size of 0). `RTMR` field `n`, element `j` is `element(RTMR, 6 * n + j)`.
    pub const fn element(field: u64, i: u64) -> u64 {
        field + i
    }

    /// `field` with its context code replaced by `context` (MNG.* and VP.* do this to every
    /// input id: the context bits of the caller's id are ignored).
    pub const fn with_context(field: u64, context: u64) -> u64 {
        (field & !CONTEXT_MASK) | (context & 7) << 52
    }

    /// TD-scope fields (TDR and TDCS) the software module answers
    /// (`include/auto_gen/tdr_tdcs_fields_lookup.h`, the same ids in 1.5 and 2.0).
    pub mod td {
        /// TDR: the TD's private HKID (16-bit). Host-readable.
        pub const HKID: u64 = 0x8110_0001_0000_0001;
        /// TDCS: vCPUs initialised by VP.INIT (32-bit). Host-readable.
        pub const NUM_VCPUS: u64 = 0x9010_0002_0000_0001;
        /// TDCS: vCPUs associated with a logical processor (32-bit). Host-readable.
        pub const NUM_ASSOC_VCPUS: u64 = 0x9010_0002_0000_0002;
        /// TDCS: OP state ([`crate::abi::op_state`], 32-bit). Host-readable.
        pub const OP_STATE: u64 = 0x9010_0002_0000_0004;
        /// TDCS: ATTRIBUTES from TD_PARAMS (64-bit). Host-readable.
        pub const ATTRIBUTES: u64 = 0x1110_0003_0000_0000;
        /// TDCS: XFAM from TD_PARAMS (64-bit). Host-readable.
        pub const XFAM: u64 = 0x1110_0003_0000_0001;
        /// TDCS: MAX_VCPUS from TD_PARAMS (32-bit). Host-readable.
        pub const MAX_VCPUS: u64 = 0x1110_0002_0000_0002;
        /// TDCS: the guest's virtual TSC (64-bit). Never host-readable (export only).
        pub const VIRTUAL_TSC: u64 = 0x1110_0003_0000_000D;
        /// TDCS: the TLB-tracking epoch (64-bit, 1 after MNG.INIT). Host-readable.
        pub const TD_EPOCH: u64 = 0x9210_0003_0000_0000;
        /// TDCS: MRTD, 48 bytes as six 8-byte elements in memory order (element `i` is bytes
        /// `8i..8i+8` of the digest, little-endian). Zero until MR.FINALIZE. Host-readable.
        pub const MRTD: u64 = 0x1310_0003_0000_0000;
        /// TDCS: RTMR[0..4], four fields of six 8-byte elements. Host-readable only if the TD
        /// is a DEBUG TD (ATTRIBUTES bit 0).
        pub const RTMR: u64 = 0x1310_0003_0000_0040;
        /// TDCS: the TD's virtualized CPUID (`TD_MD_FIELD_ID_CPUID_VALUES`), 8-byte elements
        /// addressed by the field code: bit 16 leaf bit 31, bits 15:9 leaf bits 6:0, bit 8
        /// "no sub-leaf" (then bits 7:1 are all 1), bits 7:1 sub-leaf bits 6:0, bit 0 the
        /// element (0: EBX:EAX, 1: EDX:ECX). Host-readable after MNG.INIT.
        pub const CPUID_VALUES: u64 = 0x9410_0003_0000_0000;
    }

    /// vCPU-scope fields (TDVPS) the software module answers
    /// (`include/auto_gen/tdvps_fields_lookup.h`, the same ids in 1.5 and 2.0).
    pub mod vp {
        /// Guest RCX (64-bit): VP.INIT's RDX until the guest runs. Host-readable and
        /// host-writable only if the TD is a DEBUG TD.
        pub const RCX: u64 = 0x1020_0003_0000_0001;
        /// vCPU state ([`crate::abi::vcpu_state`], 8-bit). Host-readable only for a DEBUG TD.
        pub const VCPU_STATE: u64 = 0xA020_0000_0000_0000;
        /// vCPU index, in VP.INIT order from 0 (32-bit). Host-readable.
        pub const VCPU_INDEX: u64 = 0xA020_0002_0000_0002;
        /// TDVPS pages, TDVPR included (8-bit). Host-readable.
        pub const NUM_TDVPS_PAGES: u64 = 0xA020_0000_0000_0003;
    }

    /// Module-scope (TDH.SYS.RD) fields the software module answers
    /// (`include/auto_gen/global_sys_fields_lookup.c`). [`TDR_BASE_SIZE`],
    /// [`TDCS_BASE_SIZE`], [`TDVPS_BASE_SIZE`] and [`MAX_VCPUS_PER_TD`] are answered too.
    pub mod sys {
        /// Packages in the platform (32-bit): 1 (the software module emulates one package).
        pub const NUM_PKGS: u64 = 0x0000_0002_0000_0000;
        /// 0x8086 (32-bit).
        pub const VENDOR_ID: u64 = 0x0800_0002_0000_0000;
        /// Module attributes (32-bit): 0.
        pub const SYS_ATTRIBUTES: u64 = 0x0A00_0002_0000_0000;
        /// TDCX bytes per L2 VM (16-bit).
        pub const TDCS_SIZE_PER_L2_VM: u64 = 0x9800_0001_0000_0101;
        /// TDVPS bytes per L2 VM (16-bit).
        pub const TDVPS_SIZE_PER_L2_VM: u64 = 0x9800_0001_0000_0201;
        /// ATTRIBUTES bits a TD may set (64-bit).
        pub const ATTRIBUTES_FIXED0: u64 = 0x1900_0003_0000_0000;
        /// ATTRIBUTES bits a TD must set (64-bit).
        pub const ATTRIBUTES_FIXED1: u64 = 0x1900_0003_0000_0001;
        /// XFAM bits a TD may set (64-bit).
        pub const XFAM_FIXED0: u64 = 0x1900_0003_0000_0002;
        /// XFAM bits a TD must set (64-bit).
        pub const XFAM_FIXED1: u64 = 0x1900_0003_0000_0003;
        /// CONFIG_FLAGS bits a TD may set (64-bit).
        pub const CONFIG_FLAGS_FIXED0: u64 = 0x9900_0003_0000_0006;
        /// CONFIG_FLAGS bits a TD must set (64-bit).
        pub const CONFIG_FLAGS_FIXED1: u64 = 0x9900_0003_0000_0007;
        /// Configurable CPUID leaves: how many (16-bit).
        pub const NUM_CPUID_CONFIG: u64 = 0x9900_0001_0000_0004;
        /// Configurable CPUID leaves: field `i` is leaf (31:0) and sub-leaf (63:32, all-1 for
        /// none) of entry `i` (32 fields, 64-bit).
        pub const CPUID_CONFIG_LEAVES: u64 = 0x9900_0003_0000_0400;
        /// Configurable CPUID bits: field `i` is two elements, EBX:EAX then EDX:ECX, of entry `i`
        /// (`CPUID_CONFIG_VALUES + 2 * i + j`; 64-bit).
        pub const CPUID_CONFIG_VALUES: u64 = 0x9900_0003_0000_0500;
        /// IA32_ARCH_CAPABILITIES bits TD_PARAMS may configure (64-bit).
        pub const IA32_ARCH_CAPABILITIES_CONFIG_MASK: u64 = 0x9900_0003_0000_0600;
        /// The module's build date, YYYYMMDD (32-bit).
        pub const BUILD_DATE: u64 = 0x8800_0002_0000_0001;
        /// The module's build number (16-bit).
        pub const BUILD_NUM: u64 = 0x8800_0001_0000_0002;
        /// Minor version: 5 for 1.5, 0 for 2.0 (16-bit).
        pub const MINOR_VERSION: u64 = 0x0800_0001_0000_0003;
        /// Major version: 1 or 2 (16-bit).
        pub const MAJOR_VERSION: u64 = 0x0800_0001_0000_0004;
        /// Update version: the release's third number (16-bit).
        pub const UPDATE_VERSION: u64 = 0x0800_0001_0000_0005;
        /// Internal version (16-bit).
        pub const INTERNAL_VERSION: u64 = 0x0800_0001_0000_0006;
    }
}

/// Smallest number of TDCX pages MNG.INIT needs in the 2.0 line (1.5: 6). A host reads the
/// module's own number through TDH.SYS.RD ([`md::TDCS_BASE_SIZE`]).
pub const MIN_TDCS_PAGES: u32 = 9;
/// Largest number of TDCX pages of either line (2.0: 12; 1.5: 9): what a host sizes its TDCX
/// table for.
pub const MAX_TDCS_PAGES: u32 = 12;
/// Most vCPUs per TD.
pub const MAX_VCPUS_PER_TD: u32 = 1376;
