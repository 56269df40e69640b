// SPDX-License-Identifier: GPL-2.0-only
//! Address newtypes: guest-physical (`Gpa`, `Gfn`) and host-physical (`Hpa`, `Pfn`).
//!
//! Upstream KVM passes `gpa_t`, `gfn_t`, `hpa_t` and `kvm_pfn_t` around as bare integers, and the
//! TDX series adds a second meaning to one GPA bit (the *shared* bit). Here each kind is its own
//! type, conversions are named methods, and the shared bit is only added or stripped through
//! [`SharedBit`], so a private GFN can never be used where a shared one is meant by accident.

use core::fmt;

/// Log2 of the base page size (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// The base page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

macro_rules! addr_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw value.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw value.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

addr_newtype!(
    /// A guest-physical byte address, possibly carrying the VM's shared bit.
    Gpa
);
addr_newtype!(
    /// A guest frame number (guest-physical address >> 12).
    Gfn
);
addr_newtype!(
    /// A host-physical byte address.
    Hpa
);
addr_newtype!(
    /// A host page frame number (host-physical address >> 12).
    Pfn
);
addr_newtype!(
    /// A host-virtual (userspace) address, as VMMs hand them in memory slots.
    Hva
);

impl Gpa {
    /// The frame containing this address.
    #[inline]
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }

    /// The byte offset inside the 4 KiB page.
    #[inline]
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl Gfn {
    /// The first byte address of the frame.
    #[inline]
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 << PAGE_SHIFT)
    }

    /// `self + pages`, saturating at `u64::MAX`.
    #[inline]
    pub const fn add(self, pages: u64) -> Gfn {
        Gfn(self.0.saturating_add(pages))
    }

    /// Rounds down to a multiple of `pages` (a power of two).
    #[inline]
    pub const fn align_down(self, pages: u64) -> Gfn {
        Gfn(self.0 & !(pages - 1))
    }

    /// The offset of this frame inside an aligned block of `pages` (a power of two).
    #[inline]
    pub const fn offset_in(self, pages: u64) -> u64 {
        self.0 & (pages - 1)
    }
}

impl Hpa {
    /// The frame containing this address.
    #[inline]
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl Pfn {
    /// The first byte address of the frame.
    #[inline]
    pub const fn hpa(self) -> Hpa {
        Hpa(self.0 << PAGE_SHIFT)
    }

    /// `self + pages`.
    #[inline]
    pub const fn add(self, pages: u64) -> Pfn {
        Pfn(self.0 + pages)
    }

    /// Rounds down to a multiple of `pages` (a power of two).
    #[inline]
    pub const fn align_down(self, pages: u64) -> Pfn {
        Pfn(self.0 & !(pages - 1))
    }

    /// The offset of this frame inside an aligned block of `pages` (a power of two).
    #[inline]
    pub const fn offset_in(self, pages: u64) -> u64 {
        self.0 & (pages - 1)
    }
}

/// Whether a guest access targets private (TD-encrypted) or shared memory.
///
/// For a TD the answer is the shared bit of the faulting GPA; ordinary VMs only have `Shared`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GfnKind {
    /// Private memory, mapped through the mirror root and the TDX module's Secure-EPT.
    Private,
    /// Shared memory, mapped through the shared (direct) root that the CPU walks.
    Shared,
}

/// Guest physical address width a TD is configured with (TDX `GPAW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpaWidth {
    /// 48-bit guest-physical addresses: 4-level S-EPT, shared bit 47.
    Bits48,
    /// 52-bit guest-physical addresses: 5-level S-EPT, shared bit 51.
    Bits52,
}

impl GpaWidth {
    /// Number of address bits.
    pub const fn bits(self) -> u32 {
        match self {
            GpaWidth::Bits48 => 48,
            GpaWidth::Bits52 => 52,
        }
    }

    /// The shared bit TDX places at the top of the guest-physical address space.
    pub const fn shared_bit(self) -> SharedBit {
        SharedBit {
            gpa_bit: self.bits() - 1,
        }
    }
}

/// The shared bit of a TD: set in a GPA, it selects shared memory; clear, private memory.
///
/// # Invariants
///
/// `gpa_bit` is 47 or 51 (only built from [`GpaWidth::shared_bit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedBit {
    gpa_bit: u32,
}

impl SharedBit {
    /// The bit position in a GPA.
    pub const fn gpa_bit(self) -> u32 {
        self.gpa_bit
    }

    /// The mask in GPA space.
    pub const fn gpa_mask(self) -> u64 {
        1 << self.gpa_bit
    }

    /// The mask in GFN space.
    pub const fn gfn_mask(self) -> u64 {
        1 << (self.gpa_bit - PAGE_SHIFT)
    }

    /// Splits a faulting GPA into the memslot GFN (shared bit stripped) and its kind.
    pub const fn classify(self, gpa: Gpa) -> (Gfn, GfnKind) {
        let gfn = gpa.gfn();
        if gfn.0 & self.gfn_mask() != 0 {
            (Gfn(gfn.0 & !self.gfn_mask()), GfnKind::Shared)
        } else {
            (gfn, GfnKind::Private)
        }
    }

    /// Adds the shared bit: the GFN under which shared memory appears in the shared root.
    pub const fn to_shared(self, gfn: Gfn) -> Gfn {
        Gfn(gfn.0 | self.gfn_mask())
    }

    /// Strips the shared bit: the memslot GFN behind a shared alias.
    pub const fn strip(self, gfn: Gfn) -> Gfn {
        Gfn(gfn.0 & !self.gfn_mask())
    }

    /// Whether `gfn` carries the shared bit.
    pub const fn is_shared(self, gfn: Gfn) -> bool {
        gfn.0 & self.gfn_mask() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bit_position_follows_gpaw() {
        assert_eq!(GpaWidth::Bits48.shared_bit().gpa_mask(), 1 << 47);
        assert_eq!(GpaWidth::Bits52.shared_bit().gpa_mask(), 1 << 51);
        assert_eq!(GpaWidth::Bits48.shared_bit().gfn_mask(), 1 << 35);
    }

    #[test]
    fn classify_strips_and_to_shared_adds_the_shared_bit() {
        let sb = GpaWidth::Bits48.shared_bit();
        let (gfn, kind) = sb.classify(Gpa::new((1 << 47) | 0x1234_5000));
        assert_eq!((gfn, kind), (Gfn::new(0x12345), GfnKind::Shared));
        let (gfn, kind) = sb.classify(Gpa::new(0x1234_5678));
        assert_eq!((gfn, kind), (Gfn::new(0x12345), GfnKind::Private));
        assert_eq!(
            sb.to_shared(Gfn::new(0x12345)).gpa().raw(),
            (1 << 47) | 0x1234_5000
        );
        assert_eq!(sb.strip(sb.to_shared(Gfn::new(7))), Gfn::new(7));
        assert!(sb.is_shared(sb.to_shared(Gfn::new(0))));
    }

    #[test]
    fn frame_conversions_round_trip() {
        assert_eq!(Gpa::new(0x5678).gfn(), Gfn::new(5));
        assert_eq!(Gpa::new(0x5678).page_offset(), 0x678);
        assert_eq!(Pfn::new(3).hpa(), Hpa::new(0x3000));
        assert_eq!(Hpa::new(0x3fff).pfn(), Pfn::new(3));
        assert_eq!(Gfn::new(0x3ff).align_down(512), Gfn::new(0x200));
        assert_eq!(Pfn::new(0x3ff).offset_in(512), 0x1ff);
    }
}
