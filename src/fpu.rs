// SPDX-License-Identifier: GPL-2.0-only
//! A vCPU's guest FPU (upstream `vcpu->arch.guest_fpu`, a `struct fpu_guest`): the kernel's own
//! guest-fpstate API (`fpu_alloc_guest_fpstate`, `fpu_swap_kvm_fpstate`, the uabi copies),
//! exported for KVM and reached through the glue.
//!
//! The guest's FPU/SSE/AVX registers live in the guest fpstate between runs. `KVM_RUN` swaps it
//! in at the start ([`GuestFpu::load`], upstream `kvm_load_guest_fpu`) and out at the end
//! ([`GuestFpu::put`]); in between the kernel treats it as the task's FPU state, so a context
//! switch saves the guest's registers into it and the run loop reloads them with IRQs off
//! before entry ([`reload_irqoff`]). Host code that uses the FPU in between (`kernel_fpu_begin`)
//! saves and restores them as it would a task's.
//!
//! The state ioctls (KVM_GET/SET_FPU, XSAVE, XSAVE2, XCRS) use [`GuestFpu::fxsave`],
//! [`GuestFpu::to_uabi`], [`GuestFpu::from_uabi`] and [`GuestFpu::uabi_size`] under the vCPU
//! mutex, i.e. never while the state is swapped in.

use crate::svm::glue;
use core::ffi::c_void;
use core::ptr::NonNull;
use kernel::prelude::*;

/// A `struct fpu_guest` with its fpstate.
///
/// # Invariants
///
/// `0` points to a `struct fpu_guest` made by `tdxkvm_fpu_guest_alloc` and owned by this value;
/// `loaded` says whether it is swapped into the current task.
pub(crate) struct GuestFpu {
    ptr: NonNull<c_void>,
    loaded: bool,
}

// SAFETY: the fpstate is plain memory owned by this value; the swap functions act on the
// calling task, and the vCPU mutex serialises every use.
unsafe impl Send for GuestFpu {}
// SAFETY: `&GuestFpu` gives no access to the state.
unsafe impl Sync for GuestFpu {}

impl GuestFpu {
    /// A guest FPU in its init state (upstream `fpu_alloc_guest_fpstate`). May sleep.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: allocation in process context.
        let p = unsafe { glue::tdxkvm_fpu_guest_alloc() };
        Ok(GuestFpu {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
            loaded: false,
        })
    }

    /// Swaps the guest state in (start of `KVM_RUN`, process context, preemptible).
    pub(crate) fn load(&mut self) {
        if !self.loaded {
            // SAFETY: a valid fpu_guest (type invariant), not loaded yet.
            unsafe { glue::tdxkvm_fpu_guest_swap(self.ptr.as_ptr(), true) };
            self.loaded = true;
        }
    }

    /// Swaps the host state back in, saving the guest's (end of `KVM_RUN`).
    pub(crate) fn put(&mut self) {
        if self.loaded {
            // SAFETY: loaded by `load` into this task.
            unsafe { glue::tdxkvm_fpu_guest_swap(self.ptr.as_ptr(), false) };
            self.loaded = false;
        }
    }

    /// The legacy FXSAVE image (512 bytes: FCW, FSW, FTW, FOP, FIP, FDP, MXCSR, ST0-7,
    /// XMM0-15), as `KVM_GET/SET_FPU` read and write it; `None` for state the host cannot read.
    #[allow(dead_code)]
    pub(crate) fn fxsave(&mut self) -> Option<&mut [u8; 512]> {
        if self.loaded {
            return None;
        }
        // SAFETY: a valid fpu_guest; the image lives in its fpstate, owned by `self`.
        let p = unsafe { glue::tdxkvm_fpu_guest_fxsave(self.ptr.as_ptr()) };
        // SAFETY: `regs.fxsave` is a 512-byte, 16-byte-aligned `struct fxregs_state` inside the
        // fpstate, borrowed mutably through `&mut self`.
        NonNull::new(p).map(|p| unsafe { &mut *p.as_ptr().cast::<[u8; 512]>() })
    }

    /// Bytes of the uabi XSAVE image (`KVM_GET_XSAVE2`'s size, `KVM_CAP_XSAVE2`): at least 4096.
    #[allow(dead_code)]
    pub(crate) fn uabi_size(&self) -> usize {
        // SAFETY: a valid fpu_guest.
        unsafe { glue::tdxkvm_fpu_guest_uabi_size(self.ptr.as_ptr()) as usize }
    }

    /// Copies the state out in uabi XSAVE format (upstream `fpu_copy_guest_fpstate_to_uabi`,
    /// `KVM_GET_XSAVE`/`XSAVE2`); `buf` is at least 4096 bytes (`KVM_GET_XSAVE` passes 4096);
    /// `xfeatures` is the guest's supported XCR0 (upstream `kvm_caps.supported_xcr0`).
    #[allow(dead_code)]
    pub(crate) fn to_uabi(&self, buf: &mut [u8], xfeatures: u64, pkru: u32) -> Result {
        if self.loaded || buf.len() < 4096 {
            return Err(EINVAL);
        }
        // SAFETY: a valid fpu_guest; `buf` is writable for its length, which the glue passes as
        // the copy's size (the kernel copies at most that much).
        unsafe {
            glue::tdxkvm_fpu_guest_to_uabi(
                self.ptr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len() as u32,
                xfeatures,
                pkru,
            )
        };
        Ok(())
    }

    /// Loads the state from a uabi XSAVE image (upstream `fpu_copy_uabi_to_guest_fpstate`,
    /// `KVM_SET_XSAVE`): `buf` holds the whole image (at least [`GuestFpu::uabi_size`] bytes or
    /// 4096, whichever is larger — the kernel reads up to the size its header implies);
    /// `xcr0` is the guest's supported XCR0. Returns the PKRU value of the image, if any.
    ///
    /// Errors: `EINVAL` for an image the kernel refuses (reserved bits, features outside
    /// `xcr0`).
    #[allow(dead_code)]
    pub(crate) fn from_uabi(&mut self, buf: &[u8], xcr0: u64, pkru: &mut u32) -> Result {
        if self.loaded || buf.len() < self.uabi_size().max(4096) {
            return Err(EINVAL);
        }
        // SAFETY: a valid fpu_guest; `buf` is readable for uabi_size bytes (checked above).
        let r = unsafe {
            glue::tdxkvm_fpu_guest_from_uabi(self.ptr.as_ptr(), buf.as_ptr().cast(), xcr0, pkru)
        };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        // Never dropped while loaded (the run loop puts it back before returning), but be safe.
        self.put();
        // SAFETY: allocated by `new`, freed once.
        unsafe { glue::tdxkvm_fpu_guest_free(self.ptr.as_ptr()) };
    }
}

/// Before entry, with IRQs off: reloads the guest's registers if a context switch saved them
/// (upstream `switch_fpu_return` under `TIF_NEED_FPU_LOAD`).
pub(crate) fn reload_irqoff() {
    // SAFETY: called with IRQs off on the task that loaded the guest FPU.
    unsafe { glue::tdxkvm_fpu_load_irqoff() };
}

/// The host's XCR0 (what the guest's may be a subset of).
pub(crate) fn host_xcr0() -> u64 {
    // SAFETY: XGETBV of XCR0 when the CPU has OSXSAVE; no preconditions.
    unsafe { glue::tdxkvm_host_xcr0() }
}
