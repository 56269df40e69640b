// SPDX-License-Identifier: GPL-2.0-only
//! What the S-EPT backend needs from the host besides SEAMCALLs: kicking vCPUs, running on every
//! package, resetting pages, the HKID position in an address and the host-wide HKID lock. The
//! defaults suit the software TDX module and single-threaded hosts.

use super::HKID_SHIFT;
use crate::error::TdxError;
use mmu::Pfn;

/// What the backend needs from the host's CPUs besides SEAMCALLs.
pub trait TdHost: Sync {
    /// Kicks every vCPU out of the TD and returns once none is inside from before the call
    /// (KVM's `KVM_REQ_OUTSIDE_GUEST_MODE` to all).
    fn kick_all(&self);

    /// Runs `f` on one CPU of every CPU package, in turn, stopping at the first error.
    ///
    /// TDH.MNG.KEY.CONFIG and TDH.PHYMEM.CACHE.WB act on the package they run on, so a
    /// multi-package host must run them on each. The default suits a host with one package
    /// (and the software TDX module, which models one): `f` once, here.
    ///
    /// # Errors
    ///
    /// The first error `f` returns.
    fn on_each_package(
        &self,
        f: &(dyn Fn() -> Result<(), TdxError> + Sync),
    ) -> Result<(), TdxError> {
        f()
    }

    /// `pages` pages from `pfn` left the TD for good (removed and written back, or reclaimed)
    /// and go back to the host. On CPUs where a partial write to TD-private memory poisons it
    /// (Linux `X86_BUG_TDX_PW_MCE`), the host must reset them with MOVDIR64B before any reuse.
    /// The default does nothing: the software module poisons nothing.
    fn reset_pages(&self, _pfn: Pfn, _pages: u64) {}

    /// Where the HKID goes in a physical address (PHYMEM.PAGE.WBINVD's operand): on a real host
    /// the CPU's physical-address width once the KeyID bits are taken out of it (Linux
    /// `boot_cpu_data.x86_phys_bits`); the default is the software module's [`HKID_SHIFT`].
    fn hkid_shift(&self) -> u32 {
        HKID_SHIFT
    }

    /// Runs `f` — TDH.MNG.CREATE, or an HKID release (VPFLUSHDONE, CACHE.WB, KEY.FREEID) — with
    /// every other such sequence of the host kept out. CACHE.WB's resume point is per package
    /// and KEY.FREEID needs every package written back since VPFLUSHDONE, so two TDs releasing
    /// at once would spoil each other's pass (Linux KVM's `tdx_lock`). The default runs `f`
    /// as is: for single-threaded hosts and tests.
    ///
    /// # Errors
    ///
    /// What `f` returns.
    fn with_hkid_lock(&self, f: &mut dyn FnMut() -> Result<(), TdxError>) -> Result<(), TdxError> {
        f()
    }
}
