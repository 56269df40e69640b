// SPDX-License-Identifier: GPL-2.0-only
//! The SEAMCALL backend trait.
//!
//! Two implementations exist: the software TDX module ([`crate::swmod`]) and, in the kernel
//! module, the SEAMCALL instruction itself (`src/hw.rs`). The latter lives with the
//! kernel because a SEAMCALL that faults (#UD outside VMX operation, #GP when the BIOS did not
//! enable TDX) must be caught through the kernel's exception table, which this crate knows
//! nothing of.

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
