// SPDX-License-Identifier: GPL-2.0-only
//! The software TDX module: an implementation of [`Seamcall`] that enforces what Intel's TDX
//! module enforces for the leaves the host uses to build, run and tear down a TD's memory, with
//! the same status codes, operand ids and S-EPT error details.
//!
//! It is a product feature, not a test double: with it the whole mirror/S-EPT path of the MMU
//! runs on any x86_64 host (and on the host in `cargo test`). It does **not** run TD guests:
//! there is no SEAM mode to enter, so TDH.VP.ENTER is refused; [`SwTdxModule::vcpu_enter`] and
//! [`SwTdxModule::vcpu_exit`] stand in for a vCPU entering and leaving the TD, which is all the
//! TLB-tracking rules need.
//!
//! What is modelled (each rule from the module's sources, see `docs/tdx-module-rules.md`):
//! - either line of Intel's module, 1.5 or 2.0 ([`ModuleLine`], chosen at [`SwTdxModule::new`]):
//!   where the lines answer a host differently, each answers as its own line does (§12);
//! - the PAMT ([`pamt`]): type, size, owner and block epoch of every page of every TDMR, readable
//!   through TDH.PHYMEM.PAGE.RDMD; freeing a page leaves its owner, as Intel's leaves do;
//! - TD lifecycle (HKID assigned → keys configured → blocked → teardown) and OP state
//!   (uninitialised → initialised → runnable), vCPU create/init/flush;
//! - each TD's Secure-EPT ([`sept`]) in the S-EPT pages the host adds, with the real entry
//!   states and encodings; 4K and 2M private pages, and TDH.MEM.PAGE.DEMOTE of a 2M (or 1G)
//!   leaf into a new S-EPT table (PAGE.PROMOTE is not implemented: the MMU never promotes);
//! - TLB tracking: TD epoch, per-epoch vCPU counts, block epochs;
//! - host-side contention: every lock is a try-lock, a conflict is `TDX_OPERAND_BUSY` with the
//!   operand id of the resource ([`locks`]); with the `test-hooks` feature a test can hold any
//!   of them (`SwTdxModule::hold_lock`) to get each leaf's real BUSY answer;
//! - MRTD measurement with SHA-384 ([`measure`]).
//!
//! Limits: one package and one logical processor are emulated (KEY.CONFIG configures the only
//! package; VP.FLUSH always runs "on the associated LP"); PAMT up to 8 TDMRs of 8 GiB; HKIDs
//! from the range given at creation; metadata (MNG.RD/WR, VP.RD/WR, SYS.RD) answers the fields
//! listed in [`fields`] only (Intel's ids; any other id is `TDX_METADATA_FIELD_ID_INCORRECT`).
//! Where Intel's module asks the CPU (allowed ATTRIBUTES and XFAM bits, 5-level EPT), it answers
//! for a fixed emulated CPU described in [`state`] and [`cpuid`] (whose docs say which CPUID
//! rules are modelled); event filters are not checked.

//!
//! Where things are: the leaves by family, one file each, as Intel's sources group them
//! ([`mng`], [`vp`], [`metadata`], [`phymem`], [`mr`], and the MEM leaves under [`sept`]); what
//! several families share: operand checking and locking ([`operands`]), TD_PARAMS
//! ([`td_params`]), the key ownership table ([`kot`]), the control-structure layouts
//! ([`state`]), the PAMT, the locks and the metadata field tables.

mod cpuid;
pub mod fields;
#[cfg(feature = "test-hooks")]
mod hold;
mod kot;
mod leaf_status;
mod line;
mod locks;
pub mod measure;
pub mod mem;
mod metadata;
mod mng;
mod mr;
mod operands;
pub mod pamt;
mod phymem;
mod sept;
mod state;
mod td_params;
mod vp;

#[cfg(feature = "test-hooks")]
pub use hold::{HeldLock, ModuleLock};
pub use line::{ModuleLine, ModuleVersion};
pub use locks::Mode;
pub use measure::Sha512Compress;
pub use mem::{PageWords, PhysMem};
pub use pamt::PamtInfo;
pub use state::{
    ATTRIBUTES_FIXED0, ATTRIBUTES_FIXED1, CONFIG_FLAGS_FIXED0, CONFIG_FLAGS_FIXED1,
    IA32_ARCH_CAPABILITIES_CONFIG_MASK, MAX_L2_VMS, MAX_TDVPS_PAGES, MIN_TDCS_PAGES,
    SEPT_ROOT_INDEX, TDCS_PAGES_PER_L2_VM, TDVPS_PAGES, TDVPS_PAGES_PER_L2_VM, XFAM_FIXED0,
    XFAM_FIXED1,
};

use crate::abi::{leaf, status};
use crate::error::Operand;
use crate::seamcall::{SeamArgs, Seamcall};
use core::sync::atomic::{AtomicU64, Ordering};
use leaf_status::{to_rax, LeafResult, Status};
use mmu::Pfn;
use pamt::Pamt;

/// Private HKIDs the module can hand out.
pub const MAX_HKIDS: usize = 64;

/// Why setting the module up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The TDMR table is full, the range too large or overlapping.
    BadTdmr,
    /// No memory for the PAMT.
    NoMemory,
}

/// A deterministic failure injector: the `nth` call (from 0) of `leaf` answers `status`
/// instead of running, `count` times in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The leaf.
    pub leaf: u16,
    /// Which call of that leaf fails first (counting from the moment of injection).
    pub nth: u64,
    /// How many consecutive calls fail.
    pub count: u64,
    /// The status they answer (RCX/RDX are cleared).
    pub status: u64,
}

struct Injector {
    leaf: AtomicU64,
    skip: AtomicU64,
    count: AtomicU64,
    status: AtomicU64,
}

/// What [`SwTdxModule::td_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdInfo {
    /// TLB epoch.
    pub epoch: u64,
    /// Lifecycle state.
    pub lifecycle: u8,
    /// OP state.
    pub op_state: u8,
    /// Pages the TD owns (4K units).
    pub chldcnt: u64,
}

/// The software TDX module.
pub struct SwTdxModule<M: PhysMem, H: Sha512Compress> {
    mem: M,
    hash: H,
    pamt: Pamt,
    /// Key ownership table: state per HKID (0 free, 1 assigned, 2 flushed); low 16 bits of
    /// `kot_lock` lock the whole table.
    kot: [AtomicU64; MAX_HKIDS],
    kot_lock: AtomicU64,
    /// The (only) package's TDH.PHYMEM.CACHE.WB mutex (`wbt_entries[pkg].entry_lock`): low 16
    /// bits, taken exclusively.
    wbt_lock: AtomicU64,
    /// The line of Intel's module emulated.
    line: ModuleLine,
    hkid_first: u16,
    hkid_count: u16,
    calls: [AtomicU64; leaf::MAX_TRACKED],
    errors: [AtomicU64; leaf::MAX_TRACKED],
    inject: Injector,
}

impl<M: PhysMem, H: Sha512Compress> SwTdxModule<M, H> {
    /// A module with no TDMR yet, handing out HKIDs `hkid_first..hkid_first + hkid_count`
    /// (at most [`MAX_HKIDS`]).
    pub fn new(mem: M, hash: H, line: ModuleLine, hkid_first: u16, hkid_count: u16) -> Self {
        SwTdxModule {
            mem,
            hash,
            line,
            pamt: Pamt::new(),
            kot: [const { AtomicU64::new(0) }; MAX_HKIDS],
            kot_lock: AtomicU64::new(0),
            wbt_lock: AtomicU64::new(0),
            hkid_first,
            hkid_count: hkid_count.min(MAX_HKIDS as u16),
            calls: [const { AtomicU64::new(0) }; leaf::MAX_TRACKED],
            errors: [const { AtomicU64::new(0) }; leaf::MAX_TRACKED],
            inject: Injector {
                leaf: AtomicU64::new(0),
                skip: AtomicU64::new(0),
                count: AtomicU64::new(0),
                status: AtomicU64::new(0),
            },
        }
    }

    /// Registers `pages` host pages from `base` as TDX memory (TDH.SYS.TDMR.INIT) and allocates
    /// their PAMT. Pages outside every TDMR are refused with `TDX_OPERAND_ADDR_RANGE_ERROR`.
    ///
    /// # Errors
    ///
    /// [`SetupError`].
    pub fn add_tdmr(&mut self, base: Pfn, pages: u64) -> Result<(), SetupError> {
        if pages == 0 || pages > pamt::MAX_TDMR_PAGES {
            return Err(SetupError::BadTdmr);
        }
        if self.pamt.add_tdmr(&self.mem, base, pages) {
            Ok(())
        } else {
            Err(SetupError::NoMemory)
        }
    }

    /// The line of Intel's module this one emulates.
    pub fn line(&self) -> ModuleLine {
        self.line
    }

    /// Metadata pages the PAMT uses.
    pub fn pamt_pages(&self) -> usize {
        self.pamt.meta_pages()
    }

    /// The host memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Calls of `leaf` so far, failed ones included.
    pub fn calls(&self, leaf: u16) -> u64 {
        self.calls
            .get(leaf as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Calls of `leaf` that returned an error status.
    pub fn errors(&self, leaf: u16) -> u64 {
        self.errors
            .get(leaf as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Calls of every leaf so far.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Arms the failure injector (replacing an earlier injection).
    pub fn inject(&self, i: Injection) {
        self.inject.count.store(0, Ordering::SeqCst);
        self.inject.leaf.store(i.leaf as u64, Ordering::SeqCst);
        self.inject.skip.store(i.nth, Ordering::SeqCst);
        self.inject.status.store(i.status, Ordering::SeqCst);
        self.inject.count.store(i.count, Ordering::SeqCst);
    }

    fn injected(&self, leaf: u16) -> Option<u64> {
        if self.inject.count.load(Ordering::SeqCst) == 0
            || self.inject.leaf.load(Ordering::SeqCst) != leaf as u64
        {
            return None;
        }
        if self
            .inject
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        self.inject
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .ok()
            .map(|_| self.inject.status.load(Ordering::SeqCst))
    }

    /// The PAMT entry of a page, if it is TDX memory.
    pub fn pamt_info(&self, pfn: Pfn) -> Option<PamtInfo> {
        self.pamt.entry(&self.mem, pfn).map(|e| e.info())
    }

    /// Inspection: the TD's epoch, lifecycle, OP state and owned-page count.
    pub fn td_info(&self, tdr: Pfn) -> Option<TdInfo> {
        let td = self.td_state(tdr)?;
        Some(TdInfo {
            epoch: td.td_epoch.load(Ordering::Acquire),
            lifecycle: td.lifecycle.load(Ordering::Acquire) as u8,
            op_state: Self::op_state_of(td),
            chldcnt: td.chldcnt.load(Ordering::Acquire),
        })
    }

    fn dispatch(&self, leaf_no: u16, version: u64, a: &mut SeamArgs) -> LeafResult {
        match leaf_no {
            leaf::MNG_CREATE => self.mng_create(a),
            leaf::MNG_KEY_CONFIG => self.mng_key_config(a),
            leaf::MNG_ADDCX => self.mng_addcx(a),
            leaf::MNG_INIT => self.mng_init(a),
            leaf::MNG_RD => self.mng_rd(a, version),
            leaf::MNG_WR => self.mng_wr(a),
            leaf::MNG_VPFLUSHDONE => self.mng_vpflushdone(a),
            leaf::MNG_KEY_FREEID => self.mng_key_freeid(a),
            leaf::MNG_KEY_RECLAIMID => Ok(()),
            leaf::PHYMEM_CACHE_WB => self.phymem_cache_wb(a),
            leaf::PHYMEM_PAGE_RECLAIM => self.phymem_page_reclaim(a),
            leaf::PHYMEM_PAGE_WBINVD => self.phymem_page_wbinvd(a),
            leaf::PHYMEM_PAGE_RDMD => self.phymem_page_rdmd(a),
            leaf::VP_CREATE => self.vp_create(a),
            leaf::VP_ADDCX => self.vp_addcx(a),
            leaf::VP_INIT => self.vp_init(a, version),
            leaf::VP_FLUSH => self.vp_flush(a),
            leaf::VP_RD => self.vp_rd(a, version),
            leaf::VP_WR => self.vp_wr(a),
            leaf::MEM_SEPT_ADD => self.mem_sept_add(a, version),
            leaf::MEM_SEPT_REMOVE => self.mem_sept_remove(a, version),
            leaf::MEM_SEPT_RD => self.mem_sept_rd(a),
            leaf::MEM_PAGE_ADD => self.mem_page_add(a),
            leaf::MEM_PAGE_AUG => self.mem_page_aug(a),
            leaf::MEM_PAGE_REMOVE => self.mem_page_remove(a),
            leaf::MEM_PAGE_DEMOTE => self.mem_page_demote(a),
            leaf::MEM_RANGE_BLOCK => self.mem_range_block(a),
            leaf::MEM_RANGE_UNBLOCK => self.mem_range_unblock(a),
            leaf::MEM_TRACK => self.mem_track(a),
            leaf::MR_EXTEND => self.mr_extend(a),
            leaf::MR_FINALIZE => self.mr_finalize(a),
            leaf::SYS_RD => self.sys_rd(a),
            // No SEAM mode to enter: the software module does not run TD guests.
            _ => Err(Status::operand_invalid(Operand::RAX)),
        }
    }

    /// The dispatcher: its pre-checks (reserved RAX bits; a version above 0 only for the
    /// leaves that have versions — VP.INIT from 2.0 on —, the handlers check their own
    /// maximum), the failure injector, then the leaf.
    fn run(&self, rax: u64, a: &mut SeamArgs) -> LeafResult {
        let leaf_no = rax as u16;
        let version = (rax >> 16) & 0xff;
        let versioned = matches!(
            leaf_no,
            leaf::MEM_PAGE_PROMOTE
                | leaf::MEM_SEPT_ADD
                | leaf::MEM_SEPT_REMOVE
                | leaf::MNG_RD
                | leaf::VP_RD
        ) || (leaf_no == leaf::VP_INIT && self.line.vp_init_has_versions());
        if rax >> 24 != 0 || (version != 0 && !versioned) {
            return Err(Status::operand_invalid(Operand::RAX));
        }
        if let Some(st) = self.injected(leaf_no) {
            a.rcx = 0;
            a.rdx = 0;
            return Err(Status::from_raw(st));
        }
        self.dispatch(leaf_no, version, a)
    }
}

impl<M: PhysMem, H: Sha512Compress> Seamcall for SwTdxModule<M, H> {
    fn seamcall(&self, rax: u64, a: &mut SeamArgs) -> u64 {
        let leaf_no = rax as u16;
        if let Some(c) = self.calls.get(leaf_no as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let st = to_rax(self.run(rax, a));
        if st & status::ERROR_BIT != 0 {
            if let Some(c) = self.errors.get(leaf_no as usize) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        st
    }
}

impl<M: PhysMem, H: Sha512Compress> Drop for SwTdxModule<M, H> {
    fn drop(&mut self) {
        self.pamt.release(&self.mem);
    }
}
