// SPDX-License-Identifier: GPL-2.0-only
//! A VM's SVM MSR permission map (upstream keeps one per vCPU, `svm->msrpm`; here the vCPUs of
//! a VM share one, as they share the MSR filter it follows).
//!
//! The map passes through the MSRs VMLOAD/VMSAVE switch ([`x86::svm::PASSTHROUGH_MSRS`]) and
//! intercepts everything else. While a `KVM_X86_SET_MSR_FILTER` filter denies a pass-through
//! MSR, its read or write bit is set again so the access exits and the filter check sees it
//! (upstream `svm_msr_filter_changed`); when the filter allows it again it goes back to pass
//! through. [`crate::exits::set_msr_filter`] rewrites the map under the exits lock right after
//! installing the filter. A vCPU in the guest at that moment sees each byte old or new, as
//! upstream's vCPUs see their map until `KVM_REQ_MSR_FILTER_CHANGED` is processed.

use core::ffi::c_void;
use x86::exits::msr_filter::{fill_svm_msrpm, MsrFilter};

/// Pages of the map (8 KiB).
const ORDER: u32 = 1;

/// One VM's MSR permission map: two zeroed pages from the page allocator, freed on drop.
pub(crate) struct VmMsrpm {
    virt: *mut u8,
    pa: u64,
}

// SAFETY: the map is plain memory owned by this value; writers hold the VM's exits lock
// (&mut self), the CPU reads it during VMRUN.
unsafe impl Send for VmMsrpm {}
// SAFETY: as above; `&self` only exposes the physical address.
unsafe impl Sync for VmMsrpm {}

impl VmMsrpm {
    /// A map for a VM whose filter is `filter`; `None` if the pages cannot be allocated.
    pub(crate) fn new<B: AsRef<[u8]>>(filter: Option<&MsrFilter<B>>) -> Option<Self> {
        // SAFETY: process context; returns zeroed pages or NULL.
        let virt = unsafe { crate::glue::tdxkvm_alloc_pages(ORDER) }.cast::<u8>();
        if virt.is_null() {
            return None;
        }
        // SAFETY: a direct-map address of our pages.
        let pa = unsafe { crate::glue::tdxkvm_virt_to_pfn(virt.cast()) } << 12;
        let mut m = VmMsrpm { virt, pa };
        m.update(filter);
        Some(m)
    }

    /// The physical address for the VMCB's `msrpm_base_pa`.
    pub(crate) fn pa(&self) -> u64 {
        self.pa
    }

    /// Rewrites the map for `filter` (`None`: no filter, every pass-through MSR passes).
    pub(crate) fn update<B: AsRef<[u8]>>(&mut self, filter: Option<&MsrFilter<B>>) {
        let base = self.virt;
        let len = x86::svm::MSRPM_SIZE;
        fill_svm_msrpm(len, filter, &x86::svm::PASSTHROUGH_MSRS, |i, b| {
            if i < len {
                // SAFETY: `i` < 8 KiB, inside our two pages; written volatile because a vCPU's
                // VMRUN may read the map concurrently (each byte is written once).
                unsafe { core::ptr::write_volatile(base.add(i), b) };
            }
        });
    }
}

impl Drop for VmMsrpm {
    fn drop(&mut self) {
        // SAFETY: pages from tdxkvm_alloc_pages of this order; the VM (and every vCPU whose
        // VMCB pointed at them) is gone.
        unsafe { crate::glue::tdxkvm_free_pages(self.virt.cast::<c_void>(), ORDER) };
    }
}
