// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_X86_SET_MSR_FILTER` (upstream `kvm_vm_ioctl_set_msr_filter` / `kvm_add_msr_filter`)
//! and the check every guest RDMSR/WRMSR goes through (`kvm_msr_allowed`).
//!
//! The filter is replaced as a whole: the module builds a new [`MsrFilter`] from the uapi
//! structure (copying each range's bitmap in through the `fetch` callback, which is where
//! `EFAULT` comes from), and only on success swaps it in. A denied access exits to userspace
//! with `KVM_MSR_EXIT_REASON_FILTER` if userspace asked for that reason, else it is a #GP.

use super::{le_u32, le_u64, Errno};

/// `KVM_MSR_FILTER_MAX_RANGES`.
pub const MAX_RANGES: usize = 16;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE` (bytes).
pub const MAX_BITMAP_SIZE: usize = 0x600;
/// `KVM_MSR_FILTER_READ`.
pub const FILTER_READ: u32 = 1 << 0;
/// `KVM_MSR_FILTER_WRITE`.
pub const FILTER_WRITE: u32 = 1 << 1;
/// `KVM_MSR_FILTER_RANGE_VALID_MASK`.
pub const RANGE_VALID_MASK: u32 = FILTER_READ | FILTER_WRITE;
/// `KVM_MSR_FILTER_DEFAULT_DENY` (`KVM_MSR_FILTER_DEFAULT_ALLOW` is 0).
pub const DEFAULT_DENY: u32 = 1 << 0;
/// `KVM_MSR_FILTER_VALID_MASK`.
pub const VALID_MASK: u32 = DEFAULT_DENY;

/// `sizeof(struct kvm_msr_filter_range)`: flags, nmsrs, base (u32 each), 4 bytes of padding,
/// then the bitmap pointer.
pub const RANGE_SIZE: usize = 24;
/// `sizeof(struct kvm_msr_filter)`: flags, 4 bytes of padding, 16 ranges.
pub const UAPI_SIZE: usize = 8 + MAX_RANGES * RANGE_SIZE;
const _: () = assert!(UAPI_SIZE == 0x188);

/// The x2APIC MSR range, which filters never cover (upstream: "x2APIC MSRs do not support
/// filtering").
const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;

/// One range of `struct kvm_msr_filter` as userspace passed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UapiRange {
    /// `KVM_MSR_FILTER_READ` / `_WRITE`.
    pub flags: u32,
    /// MSRs the bitmap covers.
    pub nmsrs: u32,
    /// First MSR index.
    pub base: u32,
    /// User address of the bitmap.
    pub bitmap: u64,
}

/// `struct kvm_msr_filter`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UapiFilter {
    /// `KVM_MSR_FILTER_DEFAULT_DENY` or 0.
    pub flags: u32,
    /// The ranges (those with `nmsrs` 0 are unused).
    pub ranges: [UapiRange; MAX_RANGES],
}

impl UapiFilter {
    /// Decodes the structure from its bytes (x86_64 layout).
    pub fn from_bytes(b: &[u8; UAPI_SIZE]) -> Self {
        let mut f = UapiFilter {
            flags: le_u32(b, 0),
            ..Default::default()
        };
        for (i, r) in f.ranges.iter_mut().enumerate() {
            let at = 8 + i * RANGE_SIZE;
            *r = UapiRange {
                flags: le_u32(b, at),
                nmsrs: le_u32(b, at + 4),
                base: le_u32(b, at + 8),
                bitmap: le_u64(b, at + 16),
            };
        }
        f
    }
}

/// Bytes upstream copies for a range's bitmap: `BITS_TO_LONGS(nmsrs) * sizeof(long)`.
pub fn bitmap_bytes(nmsrs: u32) -> usize {
    (nmsrs as usize).div_ceil(64) * 8
}

/// The kind of access a filter range applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

impl MsrAccess {
    fn flag(self) -> u32 {
        match self {
            MsrAccess::Read => FILTER_READ,
            MsrAccess::Write => FILTER_WRITE,
        }
    }
}

/// One installed range; `B` holds the bitmap bytes (the module's allocation, a host test's
/// vector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range<B> {
    /// `KVM_MSR_FILTER_READ` / `_WRITE`.
    pub flags: u32,
    /// First MSR index.
    pub base: u32,
    /// MSRs covered.
    pub nmsrs: u32,
    /// The bitmap: bit `i` (little-endian bit order, as `test_bit`) allows `base + i`.
    pub bitmap: B,
}

/// An installed MSR filter (upstream `struct kvm_x86_msr_filter`).
#[derive(Debug)]
pub struct MsrFilter<B> {
    default_allow: bool,
    count: usize,
    ranges: [Option<Range<B>>; MAX_RANGES],
}

impl<B: AsRef<[u8]>> MsrFilter<B> {
    /// Validates `uapi` and builds the filter as `kvm_vm_ioctl_set_msr_filter` does: unknown
    /// flags → `EINVAL`; default-deny with every range empty → `EINVAL`; then range by range
    /// (empty ranges are skipped): unknown or no range flags → `EINVAL`, a bitmap larger than
    /// `KVM_MSR_FILTER_MAX_BITMAP_SIZE` → `EINVAL`, then `fetch(user address, bytes)` copies the
    /// bitmap in (its error, `EFAULT`/`ENOMEM`, is returned as is).
    pub fn build(
        uapi: &UapiFilter,
        mut fetch: impl FnMut(u64, usize) -> Result<B, Errno>,
    ) -> Result<Self, Errno> {
        if uapi.flags & !VALID_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        let empty = uapi.ranges.iter().all(|r| r.nmsrs == 0);
        let default_allow = uapi.flags & DEFAULT_DENY == 0;
        if empty && !default_allow {
            return Err(Errno::EINVAL);
        }
        let mut f = MsrFilter {
            default_allow,
            count: 0,
            ranges: core::array::from_fn(|_| None),
        };
        for r in &uapi.ranges {
            if r.nmsrs == 0 {
                continue;
            }
            if r.flags & !RANGE_VALID_MASK != 0 || r.flags == 0 {
                return Err(Errno::EINVAL);
            }
            let size = bitmap_bytes(r.nmsrs);
            if size == 0 || size > MAX_BITMAP_SIZE {
                return Err(Errno::EINVAL);
            }
            let bitmap = fetch(r.bitmap, size)?;
            if bitmap.as_ref().len() < size {
                return Err(Errno::EFAULT);
            }
            f.ranges[f.count] = Some(Range {
                flags: r.flags,
                base: r.base,
                nmsrs: r.nmsrs,
                bitmap,
            });
            f.count += 1;
        }
        Ok(f)
    }

    /// Whether the guest may access `index` this way (upstream `kvm_msr_allowed`): x2APIC MSRs
    /// always; otherwise the first range (in the order given) whose flags cover the access and
    /// whose `[base, base + nmsrs)` (32-bit arithmetic, as upstream) holds the index decides by
    /// its bit, and the default decides when none does.
    pub fn allowed(&self, index: u32, access: MsrAccess) -> bool {
        if X2APIC_MSRS.contains(&index) {
            return true;
        }
        for r in self.ranges.iter().take(self.count).flatten() {
            let start = r.base;
            let end = start.wrapping_add(r.nmsrs);
            if index >= start && index < end && r.flags & access.flag() != 0 {
                let bit = (index - start) as usize;
                return r.bitmap.as_ref()[bit / 8] & (1 << (bit % 8)) != 0;
            }
        }
        self.default_allow
    }

    /// The default action.
    pub fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// Ranges installed.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// [`MsrFilter::allowed`] for a VM without a filter (none set, or the last one removed by a
/// default-allow filter with no ranges): everything is allowed.
pub fn allowed<B: AsRef<[u8]>>(filter: Option<&MsrFilter<B>>, index: u32, a: MsrAccess) -> bool {
    match filter {
        Some(f) => f.allowed(index, a),
        None => true,
    }
}

/// Fills `pm`, an SVM MSR permission map (two bits per MSR: read, then write; a set bit
/// intercepts), for a VM whose filter is `filter` (upstream `svm_msr_filter_changed` →
/// `set_msr_interception_bitmap`, which intercepts an access the filter denies even when the
/// MSR is otherwise passed through): every MSR is intercepted except the `passthrough` ones,
/// whose read and write bits are each cleared only while the filter allows that access. A
/// denied access then exits, and the exit handler's filter check turns it into
/// `KVM_EXIT_X86_RDMSR/WRMSR` (reason FILTER) or #GP. Bytes are written one by one with
/// `write` (the module's map may be in use by a running vCPU: each byte is written once).
pub fn fill_svm_msrpm<B: AsRef<[u8]>>(
    len: usize,
    filter: Option<&MsrFilter<B>>,
    passthrough: &[u32],
    mut write: impl FnMut(usize, u8),
) {
    for i in 0..len {
        let mut byte = 0xffu8;
        for &msr in passthrough {
            let Some((at, bit)) = crate::svm::msrpm_bit(msr) else {
                continue;
            };
            if at != i {
                continue;
            }
            if allowed(filter, msr, MsrAccess::Read) {
                byte &= !(1 << bit);
            }
            if allowed(filter, msr, MsrAccess::Write) {
                byte &= !(2 << bit);
            }
        }
        write(i, byte);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn range(flags: u32, base: u32, nmsrs: u32, bitmap: u64) -> UapiRange {
        UapiRange {
            flags,
            nmsrs,
            base,
            bitmap,
        }
    }

    /// A fetch that hands out `fill` bytes, or EFAULT for address 0.
    fn fetch(fill: u8) -> impl FnMut(u64, usize) -> Result<Vec<u8>, Errno> {
        move |a, n| {
            if a == 0 {
                Err(Errno::EFAULT)
            } else {
                Ok(vec![fill; n])
            }
        }
    }

    fn msrpm(filter: Option<&MsrFilter<Vec<u8>>>) -> Vec<u8> {
        let mut pm = vec![0u8; crate::svm::MSRPM_SIZE];
        fill_svm_msrpm(pm.len(), filter, &crate::svm::PASSTHROUGH_MSRS, |i, b| {
            pm[i] = b
        });
        pm
    }

    fn bits(pm: &[u8], msr: u32) -> (bool, bool) {
        let (at, bit) = crate::svm::msrpm_bit(msr).unwrap();
        (pm[at] & (1 << bit) != 0, pm[at] & (2 << bit) != 0)
    }

    #[test]
    fn svm_msrpm_follows_the_filter() {
        const FS_BASE: u32 = 0xc000_0100;
        const GS_BASE: u32 = 0xc000_0101;
        const LSTAR: u32 = 0xc000_0082;
        // No filter: the pass-through MSRs pass, everything else is intercepted.
        let pm = msrpm(None);
        for m in crate::svm::PASSTHROUGH_MSRS {
            assert_eq!(bits(&pm, m), (false, false), "{m:#x}");
        }
        assert_eq!(bits(&pm, 0x10), (true, true));
        assert_eq!(bits(&pm, 0xc000_0080), (true, true));
        let passthrough_bits = 2 * crate::svm::PASSTHROUGH_MSRS.len();
        let ones: u32 = pm.iter().map(|b| b.count_ones()).sum();
        assert_eq!(ones as usize, pm.len() * 8 - passthrough_bits);
        // Default allow; one range denies FS_BASE writes (bit 0 clear), allows GS_BASE (bit 1).
        let mut u = UapiFilter::default();
        u.ranges[0] = range(FILTER_WRITE, FS_BASE, 2, 1);
        let f = MsrFilter::build(&u, |_, n| {
            let mut v = vec![0u8; n];
            v[0] = 0b10;
            Ok(v)
        })
        .unwrap();
        let pm = msrpm(Some(&f));
        assert_eq!(bits(&pm, FS_BASE), (false, true));
        assert_eq!(bits(&pm, GS_BASE), (false, false));
        assert_eq!(bits(&pm, LSTAR), (false, false));
        // Default deny with an empty-bitmap read range: every pass-through MSR is intercepted
        // both ways.
        let mut u = UapiFilter {
            flags: DEFAULT_DENY,
            ..Default::default()
        };
        u.ranges[0] = range(FILTER_READ, 0, 1, 1);
        let f = MsrFilter::build(&u, fetch(0)).unwrap();
        let pm = msrpm(Some(&f));
        for m in crate::svm::PASSTHROUGH_MSRS {
            assert_eq!(bits(&pm, m), (true, true), "{m:#x}");
        }
    }

    #[test]
    fn uapi_decode_offsets() {
        let mut b = [0u8; UAPI_SIZE];
        b[0] = 1;
        // range 1: flags 2, nmsrs 3, base 0x1000, bitmap 0xdead_beef_0000
        let at = 8 + RANGE_SIZE;
        b[at] = 2;
        b[at + 4] = 3;
        b[at + 8..at + 12].copy_from_slice(&0x1000u32.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&0xdead_beef_0000u64.to_le_bytes());
        let f = UapiFilter::from_bytes(&b);
        assert_eq!(f.flags, 1);
        assert_eq!(f.ranges[1], range(2, 0x1000, 3, 0xdead_beef_0000));
        assert_eq!(f.ranges[0], UapiRange::default());
    }

    #[test]
    fn flag_validation() {
        let mut u = UapiFilter {
            flags: 2,
            ..Default::default()
        };
        assert_eq!(MsrFilter::build(&u, fetch(0xff)).err(), Some(Errno::EINVAL));
        // Default deny with nothing in it: EINVAL. Default allow with nothing: fine.
        u.flags = DEFAULT_DENY;
        assert_eq!(MsrFilter::build(&u, fetch(0xff)).err(), Some(Errno::EINVAL));
        u.flags = 0;
        let f = MsrFilter::build(&u, fetch(0xff)).unwrap();
        assert!(f.default_allow() && f.count() == 0);
        assert!(f.allowed(0x10, MsrAccess::Read));
    }

    #[test]
    fn range_validation_order() {
        let mut u = UapiFilter::default();
        // Empty ranges are skipped even with garbage flags.
        u.ranges[0] = range(0xff, 0, 0, 0);
        assert!(MsrFilter::build(&u, fetch(0)).is_ok());
        u.ranges[0] = range(4, 0, 1, 1);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EINVAL));
        u.ranges[0] = range(0, 0, 1, 1);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EINVAL));
        // 0x600 bytes = 0x3000 MSRs is the most; one more is EINVAL, before any copy.
        u.ranges[0] = range(FILTER_READ, 0, 0x3000, 1);
        assert!(MsrFilter::build(&u, fetch(0)).is_ok());
        u.ranges[0] = range(FILTER_READ, 0, 0x3001, 0);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EINVAL));
        u.ranges[0] = range(FILTER_READ, 0, u32::MAX, 0);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EINVAL));
        // Bad pointer: EFAULT.
        u.ranges[0] = range(FILTER_READ, 0, 8, 0);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EFAULT));
        // An error in a later range fails the whole filter.
        u.ranges[0] = range(FILTER_READ, 0, 8, 1);
        u.ranges[5] = range(8, 0, 8, 1);
        assert_eq!(MsrFilter::build(&u, fetch(0)).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn bitmap_sizes_are_longs() {
        assert_eq!(bitmap_bytes(1), 8);
        assert_eq!(bitmap_bytes(64), 8);
        assert_eq!(bitmap_bytes(65), 16);
        assert_eq!(bitmap_bytes(0x3000), 0x600);
    }

    #[test]
    fn lookup() {
        let mut u = UapiFilter {
            flags: DEFAULT_DENY,
            ..Default::default()
        };
        u.ranges[0] = range(FILTER_READ, 0xc000_0080, 8, 1);
        u.ranges[1] = range(FILTER_READ | FILTER_WRITE, 0xc000_0080, 8, 2);
        let f = MsrFilter::build(&u, |a, n| {
            let mut v = vec![0u8; n];
            // Range 0 allows bit 1 only; range 1 allows everything.
            v[0] = if a == 1 { 0b10 } else { 0xff };
            Ok(v)
        })
        .unwrap();
        // Reads hit range 0 first.
        assert!(!f.allowed(0xc000_0080, MsrAccess::Read));
        assert!(f.allowed(0xc000_0081, MsrAccess::Read));
        // Writes skip range 0 (no WRITE flag) and hit range 1.
        assert!(f.allowed(0xc000_0080, MsrAccess::Write));
        // Outside every range: default deny.
        assert!(!f.allowed(0xc000_0088, MsrAccess::Read));
        assert!(!f.allowed(0x10, MsrAccess::Write));
        // x2APIC MSRs are never filtered.
        assert!(f.allowed(0x800, MsrAccess::Read) && f.allowed(0x8ff, MsrAccess::Write));
        assert!(!f.allowed(0x900, MsrAccess::Read));
        assert!(allowed::<Vec<u8>>(None, 0x10, MsrAccess::Read));
        assert!(!allowed(Some(&f), 0x10, MsrAccess::Read));
    }

    #[test]
    fn wrapping_range_is_empty() {
        // base + nmsrs wraps to a small end: upstream's u32 arithmetic makes the range match
        // nothing at the top and nothing at the bottom.
        let mut u = UapiFilter::default();
        u.ranges[0] = range(FILTER_READ, 0xffff_fff0, 0x20, 1);
        let f = MsrFilter::build(&u, fetch(0)).unwrap();
        assert!(f.allowed(0xffff_fff8, MsrAccess::Read));
        assert!(f.allowed(0x4, MsrAccess::Read));
    }
}
