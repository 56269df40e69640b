// SPDX-License-Identifier: GPL-2.0-only
//! The `tdx=` module parameter and the SEAMCALL backend it selects.
//!
//! - `off`: no TDX; `KVM_X86_TDX_VM` is refused.
//! - `emulated`: the software TDX module (`tdx::swmod`) over all of RAM, on any x86_64 host.
//! - `hw`: the real TDX module. Driving it needs VMX operation on every CPU and
//!   `tdx_enable()`, which this module does not do yet, so `hw` fails `insmod` with `ENODEV`.
//! - `auto` (default): `hw` where that works, else `off`; today always `off`.

use crate::env::{KernelPhys, KernelSha};
use crate::glue;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::Pfn;
use tdx::seamcall::{SeamArgs, Seamcall};
use tdx::swmod::{pamt::MAX_TDMR_PAGES, SwTdxModule};

/// The software module as the kernel instantiates it.
pub(crate) type SwModule = SwTdxModule<KernelPhys, KernelSha>;

/// Which backend is active.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Off,
    Emulated,
}

static SWMOD: AtomicPtr<SwModule> = AtomicPtr::new(core::ptr::null_mut());

/// HKIDs the software module hands out, and which are in use.
pub(crate) const HKID_FIRST: u16 = 1;
pub(crate) const HKID_COUNT: u16 = 32;
static HKIDS_USED: AtomicU64 = AtomicU64::new(0);

/// Takes a free HKID.
pub(crate) fn alloc_hkid() -> Option<u16> {
    let mut cur = HKIDS_USED.load(Ordering::Relaxed);
    loop {
        let free = (!cur).trailing_zeros() as u16;
        if free >= HKID_COUNT {
            return None;
        }
        match HKIDS_USED.compare_exchange(cur, cur | 1 << free, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return Some(HKID_FIRST + free),
            Err(c) => cur = c,
        }
    }
}

/// Returns an HKID (after TDH.MNG.KEY.FREEID).
pub(crate) fn free_hkid(hkid: u16) {
    if let Some(bit) = hkid.checked_sub(HKID_FIRST) {
        HKIDS_USED.fetch_and(!(1u64 << bit), Ordering::AcqRel);
    }
}

/// The selected backend, parsed from `tdx=`; `Err(ENODEV)` for `hw` (and `EINVAL` for
/// nonsense), with one line in the kernel log saying why.
pub(crate) fn select() -> Result<Mode> {
    if glue::param_tdx_is(b"off") {
        return Ok(Mode::Off);
    }
    if glue::param_tdx_is(b"emulated") {
        return Ok(Mode::Emulated);
    }
    // SAFETY: reads a CPU feature bit.
    let host_tdx = unsafe { glue::tdxkvm_tdx_host_ready() };
    if glue::param_tdx_is(b"hw") {
        if host_tdx {
            pr_err!("tdx=hw: this host has TDX, but driving the real TDX module (VMXON + tdx_enable) is not implemented yet\n");
        } else {
            pr_err!(
                "tdx=hw: this CPU/kernel has no TDX host support; use tdx=emulated or tdx=off\n"
            );
        }
        return Err(ENODEV);
    }
    if glue::param_tdx_is(b"auto") {
        if host_tdx {
            pr_info!("tdx=auto: TDX host found, but the hardware backend is not implemented yet: TDX off\n");
        }
        return Ok(Mode::Off);
    }
    pr_err!("tdx= must be auto, hw, emulated or off\n");
    Err(EINVAL)
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
        SwTdxModule::new(KernelPhys, KernelSha, HKID_FIRST, HKID_COUNT),
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
