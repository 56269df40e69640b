// SPDX-License-Identifier: GPL-2.0-only
//! The `tdx=` module parameter and the SEAMCALL backend it selects.
//!
//! - `off`: no TDX; `KVM_X86_TDX_VM` is refused.
//! - `emulated`: the software TDX module (`tdx::swmod`) over all of RAM, on any x86_64 host.
//! - `hw`: the real TDX module ([`crate::hw`]): VMX operation on every CPU, `tdx_enable()`.
//!   On a host without TDX `insmod` fails with `ENODEV` and one line saying why.
//! - `auto` (default): `hw` if the host kernel found TDX enabled by the BIOS and bring-up
//!   succeeds, else `off` (with one line saying why when TDX was there but would not come up).

use crate::env::{KernelPhys, KernelSha};
use crate::glue;
use crate::hw::{self, HwSeamcall};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::Pfn;
use tdx::seamcall::{SeamArgs, Seamcall};
use tdx::swmod::{pamt::MAX_TDMR_PAGES, ModuleLine, SwTdxModule};
use tdx::TdxError;

/// The software module as the kernel instantiates it.
pub(crate) type SwModule = SwTdxModule<KernelPhys, KernelSha>;

/// Which backend is active.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Off,
    Emulated,
    Hw,
}

static SWMOD: AtomicPtr<SwModule> = AtomicPtr::new(core::ptr::null_mut());

/// HKIDs the software module hands out.
const SW_HKID_FIRST: u16 = 1;
const SW_HKID_COUNT: u16 = 32;

/// Most HKIDs this module tracks (real hosts have tens to hundreds of TDX KeyIDs).
const MAX_HKIDS: usize = 1024;
static HKID_FIRST: AtomicU16 = AtomicU16::new(0);
static HKID_COUNT: AtomicU16 = AtomicU16::new(0);
static HKIDS_USED: [AtomicU64; MAX_HKIDS / 64] = [const { AtomicU64::new(0) }; MAX_HKIDS / 64];
/// The TDX module's global KeyID (`hw` only: the TDR is written back with it at reclaim).
static GLOBAL_KEYID: AtomicU16 = AtomicU16::new(0);
/// Where a KeyID goes in a physical address on the real module.
static HW_HKID_SHIFT: AtomicU32 = AtomicU32::new(0);
/// TDCX pages per TD and pages per vCPU (TDVPR included), from TDH.SYS.RD.
static TDCS_PAGES: AtomicU16 = AtomicU16::new(0);
static TDVPS_PAGES: AtomicU16 = AtomicU16::new(0);

/// Sets the HKID range TDs draw from (backend start, before any VM exists).
fn set_hkids(first: u16, count: u16) {
    HKID_FIRST.store(first, Ordering::Relaxed);
    HKID_COUNT.store(count.min(MAX_HKIDS as u16), Ordering::Release);
}

/// Takes a free HKID.
pub(crate) fn alloc_hkid() -> Option<u16> {
    let count = HKID_COUNT.load(Ordering::Acquire) as usize;
    for (w, word) in HKIDS_USED.iter().enumerate() {
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let bit = (!cur).trailing_zeros() as usize;
            if bit >= 64 || w * 64 + bit >= count {
                break;
            }
            match word.compare_exchange(cur, cur | 1 << bit, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(HKID_FIRST.load(Ordering::Relaxed) + (w * 64 + bit) as u16),
                Err(c) => cur = c,
            }
        }
    }
    None
}

/// Returns an HKID (after TDH.MNG.KEY.FREEID).
pub(crate) fn free_hkid(hkid: u16) {
    let Some(i) = hkid.checked_sub(HKID_FIRST.load(Ordering::Relaxed)) else {
        return;
    };
    if let Some(word) = HKIDS_USED.get(i as usize / 64) {
        word.fetch_and(!(1u64 << (i % 64)), Ordering::AcqRel);
    }
}

/// TD control-structure sizes in pages: (TDCX pages per TD, pages per vCPU with the TDVPR).
pub(crate) fn td_sizes() -> (usize, usize) {
    (
        TDCS_PAGES.load(Ordering::Relaxed) as usize,
        TDVPS_PAGES.load(Ordering::Relaxed) as usize,
    )
}

/// Records the sizes the TDX module reported, refusing what the VM objects cannot hold.
fn set_td_sizes(tdcs: u64, tdvps: u64) -> Result {
    let (max_tdcs, max_tdvps) = crate::td::MAX_TD_PAGES;
    if tdcs == 0 || tdcs > max_tdcs as u64 || tdvps == 0 || tdvps > max_tdvps as u64 {
        pr_err!(
            "the TDX module wants {} TDCX pages per TD and {} per vCPU: more than this module supports ({}, {})\n",
            tdcs,
            tdvps,
            max_tdcs,
            max_tdvps
        );
        return Err(ENODEV);
    }
    TDCS_PAGES.store(tdcs as u16, Ordering::Relaxed);
    TDVPS_PAGES.store(tdvps as u16, Ordering::Relaxed);
    Ok(())
}

/// The selected backend, parsed from `tdx=`; `Err(ENODEV)` for `hw` on a host without TDX
/// (and `EINVAL` for nonsense), with one line in the kernel log saying why.
pub(crate) fn select() -> Result<Mode> {
    if glue::param_tdx_is(b"off") {
        return Ok(Mode::Off);
    }
    if glue::param_tdx_is(b"emulated") {
        return Ok(Mode::Emulated);
    }
    if glue::param_tdx_is(b"hw") {
        return Ok(Mode::Hw);
    }
    if glue::param_tdx_is(b"auto") {
        // SAFETY: reads a CPU feature bit.
        let host_tdx = unsafe { glue::tdxkvm_tdx_host_ready() };
        return Ok(if host_tdx { Mode::Hw } else { Mode::Off });
    }
    pr_err!("tdx= must be auto, hw, emulated or off\n");
    Err(EINVAL)
}

/// Brings the real TDX module up and records what TDs need from it.
pub(crate) fn start_hw() -> Result {
    let info = hw::start()?;
    if let Err(e) = set_td_sizes(info.tdcs_pages, info.tdvps_pages) {
        hw::stop();
        return Err(e);
    }
    GLOBAL_KEYID.store(info.keyids.global, Ordering::Relaxed);
    HW_HKID_SHIFT.store(info.hkid_shift, Ordering::Relaxed);
    set_hkids(info.keyids.first_guest, info.keyids.guests);
    Ok(())
}

/// Undoes [`start_hw`] (module exit; no VM can exist any more).
pub(crate) fn stop_hw() {
    hw::stop();
}

/// Builds the software TDX module over all of RAM and publishes it.
pub(crate) fn start_emulated() -> Result<KBox<SwModule>> {
    // SAFETY: initialises the crypto transform used by `KernelSha`.
    let r = unsafe { glue::tdxkvm_sha512_init() };
    if r != 0 {
        pr_err!("tdx=emulated: no sha512 in the crypto API ({})\n", r);
        return Err(ENODEV);
    }
    if !crate::selftest::sha384_known_answer() {
        pr_err!("tdx=emulated: SHA-384 known-answer test failed\n");
        // SAFETY: undo the init above.
        unsafe { glue::tdxkvm_sha512_exit() };
        return Err(ENODEV);
    }
    let mut m = KBox::new(
        SwTdxModule::new(
            KernelPhys,
            KernelSha,
            ModuleLine::V1_5,
            SW_HKID_FIRST,
            SW_HKID_COUNT,
        ),
        GFP_KERNEL,
    )?;
    // SAFETY: reads max_pfn.
    let max_pfn = unsafe { glue::tdxkvm_max_pfn() };
    let mut base = 0u64;
    while base < max_pfn {
        let pages = (max_pfn - base).min(MAX_TDMR_PAGES);
        if m.add_tdmr(Pfn::new(base), pages).is_err() {
            pr_err!(
                "tdx=emulated: cannot set up the PAMT for {} pages at {:#x}\n",
                pages,
                base
            );
            drop(m);
            // SAFETY: undo the init above.
            unsafe { glue::tdxkvm_sha512_exit() };
            return Err(ENOMEM);
        }
        base += pages;
    }
    let sizes = {
        let tdx = tdx::Tdx::new(&*m);
        tdx.sys_rd(tdx::abi::md::TDCS_BASE_SIZE)
            .and_then(|c| Ok((c / 4096, tdx.sys_rd(tdx::abi::md::TDVPS_BASE_SIZE)? / 4096)))
    };
    let sized = match sizes {
        Ok((tdcs, tdvps)) => set_td_sizes(tdcs, tdvps),
        Err(_) => Err(ENODEV),
    };
    if let Err(e) = sized {
        drop(m);
        // SAFETY: undo the init above.
        unsafe { glue::tdxkvm_sha512_exit() };
        return Err(e);
    }
    set_hkids(SW_HKID_FIRST, SW_HKID_COUNT);
    SWMOD.store(&mut *m as *mut SwModule, Ordering::Release);
    pr_info!(
        "tdx=emulated: software TDX module over {} pages of RAM, PAMT {} pages\n",
        max_pfn,
        m.pamt_pages()
    );
    Ok(m)
}

/// Unpublishes the software module (module exit; no VM can exist any more).
pub(crate) fn stop_emulated(m: KBox<SwModule>) {
    SWMOD.store(core::ptr::null_mut(), Ordering::Release);
    drop(m);
    // SAFETY: undo `tdxkvm_sha512_init`.
    unsafe { glue::tdxkvm_sha512_exit() };
}

/// A handle on the published software module.
///
/// # Invariants
///
/// Points to the module's `SwModule`, which lives until module exit; a VM holding a `SwRef`
/// holds a file of this module, so module exit cannot run meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct SwRef(NonNull<SwModule>);

// SAFETY: the software module is `Sync` (all state atomic).
unsafe impl Send for SwRef {}
// SAFETY: as above.
unsafe impl Sync for SwRef {}

impl SwRef {
    pub(crate) fn get() -> Option<SwRef> {
        // INVARIANT: published by `start_emulated`, cleared before it is freed.
        NonNull::new(SWMOD.load(Ordering::Acquire)).map(SwRef)
    }

    pub(crate) fn module(&self) -> &SwModule {
        // SAFETY: alive by the type invariant.
        unsafe { self.0.as_ref() }
    }
}

impl Seamcall for SwRef {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        self.module().seamcall(rax, args)
    }
}

/// Runs `f` holding the module-wide lock that serialises TDH.MNG.CREATE and HKID releases
/// (see `TdHost::with_hkid_lock`). Process context: it is a mutex.
pub(crate) fn hkid_locked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: mutex_lock() in process context; unlocked below.
    unsafe { glue::tdxkvm_hkid_lock() };
    let r = f();
    // SAFETY: locked above by this thread.
    unsafe { glue::tdxkvm_hkid_unlock() };
    r
}

/// The active TDX backend, as a TD holds it.
#[derive(Clone, Copy)]
pub(crate) enum TdxRef {
    Sw(SwRef),
    Hw(HwSeamcall),
}

impl TdxRef {
    /// The backend `mode` selects, if it is up.
    pub(crate) fn get(mode: Mode) -> Option<TdxRef> {
        match mode {
            Mode::Off => None,
            Mode::Emulated => SwRef::get().map(TdxRef::Sw),
            Mode::Hw => HwSeamcall::get().map(TdxRef::Hw),
        }
    }

    /// The software module, if that is the backend.
    pub(crate) fn sw(&self) -> Option<SwRef> {
        match self {
            TdxRef::Sw(sw) => Some(*sw),
            TdxRef::Hw(_) => None,
        }
    }

    /// Runs `f` once per CPU package: on the real module, on a CPU of each package; the
    /// software module models one package.
    pub(crate) fn on_each_package(
        &self,
        f: &(dyn Fn() -> Result<(), TdxError> + Sync),
    ) -> Result<(), TdxError> {
        match self {
            TdxRef::Sw(_) => f(),
            TdxRef::Hw(_) => hw::on_each_package(f),
        }
    }

    /// Resets pages the TD gave back before the host reuses them (real module only).
    pub(crate) fn reset_pages(&self, pfn: Pfn, pages: u64) {
        if let TdxRef::Hw(_) = self {
            hw::reset_pages(pfn, pages);
        }
    }

    /// The TDX module's global KeyID, with which a reclaimed TDR is written back (real module
    /// only: the software module keeps no cache state per KeyID).
    pub(crate) fn global_keyid(&self) -> Option<u16> {
        match self {
            TdxRef::Sw(_) => None,
            TdxRef::Hw(_) => Some(GLOBAL_KEYID.load(Ordering::Relaxed)),
        }
    }

    /// Where a KeyID goes in a physical address (PHYMEM.PAGE.WBINVD operands).
    pub(crate) fn hkid_shift(&self) -> u32 {
        match self {
            TdxRef::Sw(_) => tdx::sept_backend::HKID_SHIFT,
            TdxRef::Hw(_) => HW_HKID_SHIFT.load(Ordering::Relaxed),
        }
    }
}

impl Seamcall for TdxRef {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        match self {
            TdxRef::Sw(sw) => sw.seamcall(rax, args),
            TdxRef::Hw(hw) => hw.seamcall(rax, args),
        }
    }
}
