// SPDX-License-Identifier: GPL-2.0-only
//! The SEAMCALL backend trait and the hardware implementation.

/// General-purpose registers a leaf takes and returns besides RAX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeamArgs {
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
}

/// Something that executes SEAMCALL leaves: the CPU (through the real TDX module) or the
/// software TDX module.
pub trait Seamcall: Sync {
    /// Issues the leaf `rax` ([`crate::abi::rax`]) with `args` as input registers; the output
    /// registers are written back into `args`. Returns the completion status (RAX).
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64;
}

impl<S: Seamcall> Seamcall for &S {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        (**self).seamcall(rax, args)
    }
}

/// The real TDX module, through the SEAMCALL instruction.
///
/// Only meaningful on an Intel CPU with TDX enabled by the BIOS, in VMX root operation, after
/// the host kernel loaded and initialised the TDX module (Linux `tdx_enable()`).
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub struct HwSeamcall {
    _private: (),
}

#[cfg(target_arch = "x86_64")]
impl HwSeamcall {
    /// The hardware backend.
    ///
    /// # Safety
    ///
    /// The caller has established that the CPU supports SEAMCALL, is in VMX root operation on
    /// every CPU this may run on, and the TDX module is initialised; otherwise SEAMCALL raises
    /// #UD or #GP.
    pub const unsafe fn new() -> Self {
        HwSeamcall { _private: () }
    }
}

#[cfg(target_arch = "x86_64")]
impl Seamcall for HwSeamcall {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        let status: u64;
        let cf: u8;
        // SAFETY: SEAMCALL is usable (`HwSeamcall::new`'s contract); the module clobbers only
        // RAX, RCX, RDX and R8-R11 (declared) and touches only pages named by physical address,
        // which the typed wrappers take from pages the caller owns.
        unsafe {
            core::arch::asm!(
                ".byte 0x66, 0x0f, 0x01, 0xcf", // seamcall
                "setc {cf}",
                cf = out(reg_byte) cf,
                inout("rax") rax => status,
                inout("rcx") args.rcx,
                inout("rdx") args.rdx,
                inout("r8") args.r8,
                inout("r9") args.r9,
                inout("r10") args.r10,
                inout("r11") args.r11,
                options(nostack),
            );
        }
        if cf != 0 {
            // VMfailInvalid: no TDX module loaded.
            return crate::abi::status::SW_VMFAILINVALID;
        }
        status
    }
}

/// A backend wrapper that counts calls per leaf (for benchmarks and debugfs: "SEAMCALLs per
/// operation"), whatever the backend is.
pub struct Counted<S: Seamcall> {
    inner: S,
    calls: [core::sync::atomic::AtomicU64; crate::abi::leaf::MAX_TRACKED],
}

impl<S: Seamcall> Counted<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Counted {
            inner,
            calls: [const { core::sync::atomic::AtomicU64::new(0) }; crate::abi::leaf::MAX_TRACKED],
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Calls of `leaf` so far.
    pub fn calls(&self, leaf: u16) -> u64 {
        self.calls
            .get(leaf as usize)
            .map_or(0, |c| c.load(core::sync::atomic::Ordering::Relaxed))
    }

    /// Calls of every leaf so far.
    pub fn total(&self) -> u64 {
        self.calls
            .iter()
            .map(|c| c.load(core::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Per-leaf counts, indexed by leaf number.
    pub fn snapshot(&self) -> [u64; crate::abi::leaf::MAX_TRACKED] {
        let mut out = [0; crate::abi::leaf::MAX_TRACKED];
        for (o, c) in out.iter_mut().zip(self.calls.iter()) {
            *o = c.load(core::sync::atomic::Ordering::Relaxed);
        }
        out
    }
}

impl<S: Seamcall> Seamcall for Counted<S> {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        if let Some(c) = self.calls.get((rax & 0xffff) as usize) {
            c.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        self.inner.seamcall(rax, args)
    }
}
