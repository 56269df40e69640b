// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_TDX_INIT_MEM_REGION`'s loop (`tdx_vcpu_init_mem_region`, 6.16): one page per
//! iteration, a pending signal stops it with EINTR, and the region is advanced page by page so
//! the caller can write the progress back whatever happens (upstream copies it back even on
//! error).
//!
//! What one page takes is the caller's ([`Populate::populate`], upstream's `kvm_gmem_populate`
//! of one page with `tdx_gmem_post_populate`): the GFN's guest_memfd page (EINVAL without a
//! guest_memfd slot or when the GFN is not PRIVATE, EEXIST when the page was populated before),
//! the source page (EFAULT), then TDH.MEM.PAGE.ADD through the mirror root (EBUSY on
//! OPERAND_BUSY, else EIO) and with MEASURE sixteen TDH.MR.EXTEND (EIO).

use super::errno::Errno;
use super::uapi::KvmTdxInitMemRegion;

/// The per-page work of INIT_MEM_REGION.
pub trait Populate {
    /// Whether the calling task has a signal pending (`signal_pending(current)`).
    fn signal_pending(&mut self) -> bool;

    /// Adds the private page at `gpa` from the user page at `source`, measured if `measure`.
    ///
    /// # Errors
    ///
    /// The errno of the step that failed (see the module docs).
    fn populate(&mut self, gpa: u64, source: u64, measure: bool) -> Result<(), Errno>;
}

/// Runs the loop over `region` (already checked with [`super::rules::check_region`]),
/// advancing it after each page added.
///
/// # Errors
///
/// EINTR when a signal is pending before a page; the first page's error otherwise. Pages added
/// before either are accounted in `region`.
pub fn init_mem_region(
    region: &mut KvmTdxInitMemRegion,
    measure: bool,
    p: &mut impl Populate,
) -> Result<(), Errno> {
    while region.nr_pages != 0 {
        if p.signal_pending() {
            return Err(Errno::EINTR);
        }
        p.populate(region.gpa, region.source_addr, measure)?;
        region.source_addr = region.source_addr.wrapping_add(4096);
        region.gpa = region.gpa.wrapping_add(4096);
        region.nr_pages -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds pages until `fail_at` (with `err`) and raises a signal before page `signal_at`.
    struct Fake {
        added: [(u64, u64, bool); 8],
        n: usize,
        fail_at: Option<(usize, Errno)>,
        signal_at: Option<usize>,
    }

    impl Populate for Fake {
        fn signal_pending(&mut self) -> bool {
            self.signal_at == Some(self.n)
        }

        fn populate(&mut self, gpa: u64, source: u64, measure: bool) -> Result<(), Errno> {
            if let Some((i, e)) = self.fail_at {
                if i == self.n {
                    return Err(e);
                }
            }
            self.added[self.n] = (gpa, source, measure);
            self.n += 1;
            Ok(())
        }
    }

    fn fake(fail_at: Option<(usize, Errno)>, signal_at: Option<usize>) -> Fake {
        Fake {
            added: [(0, 0, false); 8],
            n: 0,
            fail_at,
            signal_at,
        }
    }

    const R: KvmTdxInitMemRegion = KvmTdxInitMemRegion {
        source_addr: 0x7000_0000,
        gpa: 0x10_0000,
        nr_pages: 4,
    };

    #[test]
    fn every_page_is_added_in_order_and_the_region_ends_empty() {
        let (mut r, mut f) = (R, fake(None, None));
        assert_eq!(init_mem_region(&mut r, true, &mut f), Ok(()));
        assert_eq!(f.n, 4);
        assert_eq!(f.added[3], (0x10_3000, 0x7000_3000, true));
        assert_eq!(
            r,
            KvmTdxInitMemRegion {
                source_addr: 0x7000_4000,
                gpa: 0x10_4000,
                nr_pages: 0
            }
        );
    }

    #[test]
    fn a_signal_stops_with_eintr_and_the_progress_made() {
        let (mut r, mut f) = (R, fake(None, Some(2)));
        assert_eq!(init_mem_region(&mut r, false, &mut f), Err(Errno::EINTR));
        assert_eq!(
            (r.nr_pages, r.gpa, r.source_addr),
            (2, 0x10_2000, 0x7000_2000)
        );
        // Signal before the first page: nothing done.
        let (mut r, mut f) = (R, fake(None, Some(0)));
        assert_eq!(init_mem_region(&mut r, false, &mut f), Err(Errno::EINTR));
        assert_eq!(r, R);
    }

    #[test]
    fn a_failed_page_stops_with_its_errno_and_the_progress_made() {
        let (mut r, mut f) = (R, fake(Some((1, Errno::EEXIST)), None));
        assert_eq!(init_mem_region(&mut r, true, &mut f), Err(Errno::EEXIST));
        assert_eq!((r.nr_pages, r.gpa), (3, 0x10_1000));
    }
}
