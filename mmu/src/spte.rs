// SPDX-License-Identifier: GPL-2.0-only
//! SPTE encoding: the [`PagingFormat`] trait and its EPT and NPT implementations.
//!
//! Mirrors upstream `arch/x86/kvm/mmu/spte.h`. The walker and the fault/zap paths only ever see
//! the decoded [`SpteKind`]; the raw layout lives here. As in KVM:
//! - bit 11 (ignored by hardware in both EPT and NPT) is `MMU_PRESENT`, KVM's software
//!   "shadow-present" bit, so a present entry never depends on the R/W/X or P bits;
//! - [`FROZEN_SPTE`] is KVM's `FROZEN_SPTE` (formerly `REMOVED_SPTE`): a non-present value that
//!   no other writer may replace. An entry is frozen while its external (S-EPT) counterpart is
//!   changed or while its child table is being torn down.
//! - a non-present entry is 0: table pages come zeroed from the allocator.

use crate::addr::Pfn;
use crate::level::Level;
use bitflags::bitflags;

/// Mask of the host frame number inside an entry (bits 12..=51).
pub const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The frozen marker: not present to hardware or to KVM, and distinct from every value the
/// formats build. Same bit pattern as upstream (`0x5a0` on top of the non-present value).
pub const FROZEN_SPTE: u64 = 0x5a0;

/// Mirror-only software bit: the external (S-EPT) entry behind this mirror entry is *blocked*
/// (`TDH.MEM.RANGE.BLOCK` succeeded) and waits for removal. Keeping it in the mirror makes the
/// mirror track the S-EPT exactly even when a zap stops half-way (a busy external table): faults
/// that meet a blocked entry retry instead of building under it, and the next zap of the range
/// knows what is already blocked. Bit 56 is ignored by hardware in EPT and NPT entries, and the
/// formats never set it.
pub const SPTE_EXTERNAL_BLOCKED: u64 = 1 << 56;

/// Whether a mirror entry is marked blocked.
#[inline]
pub const fn is_external_blocked(raw: u64) -> bool {
    raw & SPTE_EXTERNAL_BLOCKED != 0
}

bitflags! {
    /// Guest access rights of a leaf.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// Readable.
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Executable.
        const EXEC = 1 << 2;
    }
}

impl Access {
    /// Read, write and execute: what private (TD) memory is always mapped with.
    pub const RWX: Access = Access::all();
}

bitflags! {
    /// Intel EPT entry bits (SDM vol. 3, "EPT paging-structure entries").
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptBits: u64 {
        /// Read access.
        const READ = 1 << 0;
        /// Write access.
        const WRITE = 1 << 1;
        /// Execute access (supervisor execute with mode-based execute control).
        const EXEC = 1 << 2;
        /// Memory type write-back (6) in bits 3..=5.
        const MEMTYPE_WB = 6 << 3;
        /// Ignore guest PAT.
        const IPAT = 1 << 6;
        /// Leaf at level 2 or 3.
        const LARGE = 1 << 7;
        /// Accessed.
        const ACCESSED = 1 << 8;
        /// Dirty (leaves only).
        const DIRTY = 1 << 9;
        /// User-mode execute.
        const USER_EXEC = 1 << 10;
        /// KVM's software present bit.
        const MMU_PRESENT = 1 << 11;
        /// KVM's software host-writable bit (upstream `EPT_SPTE_HOST_WRITABLE`).
        const HOST_WRITABLE = 1 << 57;
        /// KVM's software MMU-writable bit (upstream `EPT_SPTE_MMU_WRITABLE`).
        const MMU_WRITABLE = 1 << 58;
        /// Suppress #VE: EPT violations on this entry are never turned into a #VE in the guest.
        const SUPPRESS_VE = 1 << 63;
    }
}

bitflags! {
    /// AMD NPT (ordinary x86-64 long-mode) entry bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct NptBits: u64 {
        /// Present.
        const PRESENT = 1 << 0;
        /// Writable.
        const WRITABLE = 1 << 1;
        /// User-accessible (nested page tables are walked as user accesses).
        const USER = 1 << 2;
        /// Accessed.
        const ACCESSED = 1 << 5;
        /// Dirty (leaves only).
        const DIRTY = 1 << 6;
        /// Page size: leaf at level 2 or 3.
        const LARGE = 1 << 7;
        /// KVM's software host-writable bit (an AVL bit; upstream `DEFAULT_SPTE_HOST_WRITABLE`).
        const HOST_WRITABLE = 1 << 9;
        /// KVM's software MMU-writable bit (an AVL bit; upstream `DEFAULT_SPTE_MMU_WRITABLE`).
        const MMU_WRITABLE = 1 << 10;
        /// KVM's software present bit (an AVL bit).
        const MMU_PRESENT = 1 << 11;
        /// No execute.
        const NX = 1 << 63;
    }
}

/// Attributes of a new leaf besides its frame and access rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeafAttrs {
    /// Set the accessed bit (a real fault, not a prefetch).
    pub accessed: bool,
    /// Set the dirty bit (a write fault on a writable mapping).
    pub dirty: bool,
    /// The leaf lives in a mirror root: EPT sets suppress-#VE as the S-EPT does.
    pub mirror: bool,
}

/// A decoded leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// First host frame mapped.
    pub pfn: Pfn,
    /// Access rights.
    pub access: Access,
    /// Accessed bit.
    pub accessed: bool,
    /// Dirty bit.
    pub dirty: bool,
}

/// What an entry is, independent of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpteKind {
    /// Not present.
    Absent,
    /// Frozen by another walker: do not touch, retry.
    Frozen,
    /// Points to a child table page.
    Table(Pfn),
    /// Maps guest memory.
    Leaf(LeafInfo),
}

/// An entry format: how tables and leaves are encoded (Asterinas OSTD's `PageTableEntryTrait`).
///
/// Implementations must never build [`FROZEN_SPTE`] or 0 for a present entry, and must set bit 11
/// (`MMU_PRESENT`) in every present entry, because the walker relies on both.
pub trait PagingFormat: Send + Sync + 'static {
    /// Human-readable name for reports.
    const NAME: &'static str;

    /// The bit that lets the guest write through a leaf (upstream `PT_WRITABLE_MASK`): clearing
    /// it write-protects the leaf for dirty logging and changes nothing else about it.
    const WRITABLE_MASK: u64;

    /// Software bit: the host maps the page writable (upstream `shadow_host_writable_mask`).
    /// Set in every leaf built with write access, kept by write-protection.
    const HOST_WRITABLE_MASK: u64;

    /// Software bit: KVM itself allows the leaf to be writable, i.e. it lost
    /// [`PagingFormat::WRITABLE_MASK`] only for dirty logging (upstream
    /// `shadow_mmu_writable_mask`). A write fault on such a leaf may set the writable bit again
    /// by compare-exchange, without the full fault path (upstream `fast_page_fault`). Set with
    /// [`PagingFormat::HOST_WRITABLE_MASK`] in every leaf built with write access; never set
    /// without it.
    const MMU_WRITABLE_MASK: u64;

    /// A non-leaf entry pointing to the table page `pfn`.
    fn table(pfn: Pfn) -> u64;

    /// A leaf at `level` mapping `pfn` with `access`.
    fn leaf(pfn: Pfn, level: Level, access: Access, attrs: LeafAttrs) -> u64;

    /// Decodes an entry found in a table at `level`.
    fn decode(raw: u64, level: Level) -> SpteKind;
}

/// Whether a present leaf `raw` lost only its writable bit to write-protection, so that a
/// write fault may set it again without the full fault path (upstream `is_mmu_writable_spte`
/// on a leaf that is not `is_writable_pte`).
#[inline]
pub fn is_fast_fixable_write<F: PagingFormat>(raw: u64) -> bool {
    raw & (F::MMU_WRITABLE_MASK | F::WRITABLE_MASK) == F::MMU_WRITABLE_MASK
}

/// Intel EPT entries.
#[derive(Debug)]
pub enum Ept {}

/// AMD NPT entries.
#[derive(Debug)]
pub enum Npt {}

#[inline]
const fn pfn_of(raw: u64) -> Pfn {
    Pfn::new((raw & PFN_MASK) >> 12)
}

#[inline]
const fn pfn_bits(pfn: Pfn) -> u64 {
    (pfn.raw() << 12) & PFN_MASK
}

impl PagingFormat for Ept {
    const NAME: &'static str = "EPT";
    const WRITABLE_MASK: u64 = EptBits::WRITE.bits();
    const HOST_WRITABLE_MASK: u64 = EptBits::HOST_WRITABLE.bits();
    const MMU_WRITABLE_MASK: u64 = EptBits::MMU_WRITABLE.bits();

    fn table(pfn: Pfn) -> u64 {
        (EptBits::READ
            | EptBits::WRITE
            | EptBits::EXEC
            | EptBits::USER_EXEC
            | EptBits::ACCESSED
            | EptBits::MMU_PRESENT)
            .bits()
            | pfn_bits(pfn)
    }

    fn leaf(pfn: Pfn, level: Level, access: Access, attrs: LeafAttrs) -> u64 {
        let mut b = EptBits::MMU_PRESENT | EptBits::MEMTYPE_WB;
        b.set(EptBits::READ, access.contains(Access::READ));
        // Upstream make_spte: a writable leaf is host- and MMU-writable as well.
        b.set(
            EptBits::WRITE | EptBits::HOST_WRITABLE | EptBits::MMU_WRITABLE,
            access.contains(Access::WRITE),
        );
        b.set(
            EptBits::EXEC | EptBits::USER_EXEC,
            access.contains(Access::EXEC),
        );
        b.set(EptBits::LARGE, level.is_huge());
        b.set(EptBits::ACCESSED, attrs.accessed);
        b.set(EptBits::DIRTY, attrs.dirty);
        b.set(EptBits::SUPPRESS_VE, attrs.mirror);
        b.bits() | pfn_bits(pfn)
    }

    fn decode(raw: u64, level: Level) -> SpteKind {
        if raw == FROZEN_SPTE {
            return SpteKind::Frozen;
        }
        let b = EptBits::from_bits_retain(raw);
        if !b.contains(EptBits::MMU_PRESENT) {
            return SpteKind::Absent;
        }
        if level.is_huge() && !b.contains(EptBits::LARGE) {
            return SpteKind::Table(pfn_of(raw));
        }
        let mut access = Access::empty();
        access.set(Access::READ, b.contains(EptBits::READ));
        access.set(Access::WRITE, b.contains(EptBits::WRITE));
        access.set(Access::EXEC, b.contains(EptBits::EXEC));
        SpteKind::Leaf(LeafInfo {
            pfn: pfn_of(raw),
            access,
            accessed: b.contains(EptBits::ACCESSED),
            dirty: b.contains(EptBits::DIRTY),
        })
    }
}

impl PagingFormat for Npt {
    const NAME: &'static str = "NPT";
    const WRITABLE_MASK: u64 = NptBits::WRITABLE.bits();
    const HOST_WRITABLE_MASK: u64 = NptBits::HOST_WRITABLE.bits();
    const MMU_WRITABLE_MASK: u64 = NptBits::MMU_WRITABLE.bits();

    fn table(pfn: Pfn) -> u64 {
        (NptBits::PRESENT
            | NptBits::WRITABLE
            | NptBits::USER
            | NptBits::ACCESSED
            | NptBits::MMU_PRESENT)
            .bits()
            | pfn_bits(pfn)
    }

    fn leaf(pfn: Pfn, level: Level, access: Access, attrs: LeafAttrs) -> u64 {
        // NPT cannot express write-only or execute-only: any access implies read.
        let mut b = NptBits::PRESENT | NptBits::USER | NptBits::MMU_PRESENT;
        // Upstream make_spte: a writable leaf is host- and MMU-writable as well.
        b.set(
            NptBits::WRITABLE | NptBits::HOST_WRITABLE | NptBits::MMU_WRITABLE,
            access.contains(Access::WRITE),
        );
        b.set(NptBits::NX, !access.contains(Access::EXEC));
        b.set(NptBits::LARGE, level.is_huge());
        b.set(NptBits::ACCESSED, attrs.accessed);
        b.set(NptBits::DIRTY, attrs.dirty);
        b.bits() | pfn_bits(pfn)
    }

    fn decode(raw: u64, level: Level) -> SpteKind {
        if raw == FROZEN_SPTE {
            return SpteKind::Frozen;
        }
        let b = NptBits::from_bits_retain(raw);
        if !b.contains(NptBits::MMU_PRESENT) {
            return SpteKind::Absent;
        }
        if level.is_huge() && !b.contains(NptBits::LARGE) {
            return SpteKind::Table(pfn_of(raw));
        }
        let mut access = Access::READ;
        access.set(Access::WRITE, b.contains(NptBits::WRITABLE));
        access.set(Access::EXEC, !b.contains(NptBits::NX));
        SpteKind::Leaf(LeafInfo {
            pfn: pfn_of(raw),
            access,
            accessed: b.contains(NptBits::ACCESSED),
            dirty: b.contains(NptBits::DIRTY),
        })
    }
}

const _: () = assert!(size_of::<u64>() * crate::level::ENTRIES_PER_TABLE == 4096);
const _: () = assert!(FROZEN_SPTE & EptBits::MMU_PRESENT.bits() == 0);
const _: () = assert!(FROZEN_SPTE & (EptBits::READ.bits() | EptBits::WRITE.bits()) == 0);
const _: () = assert!(FROZEN_SPTE & NptBits::PRESENT.bits() == 0);
const _: () = assert!(SPTE_EXTERNAL_BLOCKED & (PFN_MASK | FROZEN_SPTE) == 0);
const _: () = assert!(EptBits::all().bits() & SPTE_EXTERNAL_BLOCKED == 0);
const _: () = assert!(NptBits::all().bits() & SPTE_EXTERNAL_BLOCKED == 0);
// The software writable bits are ignored by hardware and distinct from every other bit a
// present entry uses (NPT's MMU-writable bit 10 is in FROZEN_SPTE, as upstream's: a frozen entry
// is never present, so it is never read as a leaf).
const _: () = assert!(
    (Ept::HOST_WRITABLE_MASK | Ept::MMU_WRITABLE_MASK)
        & (PFN_MASK
            | FROZEN_SPTE
            | SPTE_EXTERNAL_BLOCKED
            | EptBits::SUPPRESS_VE.bits()
            | EptBits::MMU_PRESENT.bits()
            | 0x7ff)
        == 0
);
const _: () = assert!(
    (Npt::HOST_WRITABLE_MASK | Npt::MMU_WRITABLE_MASK)
        & (PFN_MASK
            | SPTE_EXTERNAL_BLOCKED
            | NptBits::NX.bits()
            | NptBits::MMU_PRESENT.bits()
            | 0x1ff)
        == 0
);
// Write-protecting a leaf must never make it look absent, frozen or a table.
const _: () = assert!(Ept::WRITABLE_MASK & (EptBits::MMU_PRESENT.bits() | FROZEN_SPTE) == 0);
const _: () = assert!(Npt::WRITABLE_MASK & (NptBits::MMU_PRESENT.bits() | FROZEN_SPTE) == 0);

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS: LeafAttrs = LeafAttrs {
        accessed: true,
        dirty: false,
        mirror: false,
    };

    #[test]
    fn ept_leaf_round_trips_at_every_level() {
        for n in 1..=3 {
            let level = Level::new(n).unwrap();
            let raw = Ept::leaf(
                Pfn::new(0xabcde),
                level,
                Access::READ | Access::WRITE,
                ATTRS,
            );
            assert_eq!(raw & EptBits::LARGE.bits() != 0, n > 1);
            assert_eq!(
                Ept::decode(raw, level),
                SpteKind::Leaf(LeafInfo {
                    pfn: Pfn::new(0xabcde),
                    access: Access::READ | Access::WRITE,
                    accessed: true,
                    dirty: false
                })
            );
        }
    }

    #[test]
    fn ept_leaf_has_wb_memtype_and_mirror_leaf_suppresses_ve() {
        let attrs = LeafAttrs {
            mirror: true,
            ..ATTRS
        };
        let raw = Ept::leaf(Pfn::new(1), Level::L4K, Access::RWX, attrs);
        assert_eq!((raw >> 3) & 7, 6);
        assert!(raw & EptBits::SUPPRESS_VE.bits() != 0);
        let raw = Ept::leaf(Pfn::new(1), Level::L4K, Access::RWX, ATTRS);
        assert!(raw & EptBits::SUPPRESS_VE.bits() == 0);
    }

    #[test]
    fn npt_leaf_encodes_nx_and_writable() {
        let raw = Npt::leaf(Pfn::new(0x42), Level::L2M, Access::READ, ATTRS);
        let b = NptBits::from_bits_retain(raw);
        assert!(b.contains(NptBits::PRESENT | NptBits::NX | NptBits::LARGE | NptBits::ACCESSED));
        assert!(!b.contains(NptBits::WRITABLE));
        let SpteKind::Leaf(l) = Npt::decode(raw, Level::L2M) else {
            panic!("not a leaf")
        };
        assert_eq!((l.pfn, l.access), (Pfn::new(0x42), Access::READ));
    }

    #[test]
    fn table_entries_decode_as_tables_above_4k() {
        for n in 2..=5 {
            let level = Level::new(n).unwrap();
            assert_eq!(
                Ept::decode(Ept::table(Pfn::new(9)), level),
                SpteKind::Table(Pfn::new(9))
            );
            assert_eq!(
                Npt::decode(Npt::table(Pfn::new(9)), level),
                SpteKind::Table(Pfn::new(9))
            );
        }
    }

    #[test]
    fn frozen_and_zero_are_not_present_in_both_formats() {
        for n in 1..=5 {
            let level = Level::new(n).unwrap();
            assert_eq!(Ept::decode(FROZEN_SPTE, level), SpteKind::Frozen);
            assert_eq!(Npt::decode(FROZEN_SPTE, level), SpteKind::Frozen);
            assert_eq!(Ept::decode(0, level), SpteKind::Absent);
            assert_eq!(Npt::decode(0, level), SpteKind::Absent);
        }
    }

    #[test]
    fn clearing_the_writable_mask_only_drops_write_access() {
        for level in [Level::L4K, Level::L2M] {
            let raw = Ept::leaf(Pfn::new(7), level, Access::RWX, ATTRS);
            let SpteKind::Leaf(l) = Ept::decode(raw & !Ept::WRITABLE_MASK, level) else {
                panic!("not a leaf")
            };
            assert_eq!(
                (l.pfn, l.access),
                (Pfn::new(7), Access::READ | Access::EXEC)
            );
            let raw = Npt::leaf(Pfn::new(7), level, Access::RWX, ATTRS);
            let SpteKind::Leaf(l) = Npt::decode(raw & !Npt::WRITABLE_MASK, level) else {
                panic!("not a leaf")
            };
            assert_eq!(
                (l.pfn, l.access),
                (Pfn::new(7), Access::READ | Access::EXEC)
            );
            assert!(l.accessed);
        }
    }

    #[test]
    fn dirty_bit_round_trips() {
        let attrs = LeafAttrs {
            dirty: true,
            ..ATTRS
        };
        for raw in [
            Ept::leaf(Pfn::new(5), Level::L4K, Access::RWX, attrs),
            Npt::leaf(Pfn::new(5), Level::L4K, Access::RWX, attrs),
        ] {
            let kind = Ept::decode(raw, Level::L4K);
            let kind2 = Npt::decode(raw, Level::L4K);
            assert!(
                matches!(kind, SpteKind::Leaf(LeafInfo { dirty: true, .. }))
                    || matches!(kind2, SpteKind::Leaf(LeafInfo { dirty: true, .. }))
            );
        }
        let SpteKind::Leaf(l) = Ept::decode(
            Ept::leaf(Pfn::new(5), Level::L4K, Access::RWX, attrs),
            Level::L4K,
        ) else {
            panic!()
        };
        assert!(l.dirty);
        let SpteKind::Leaf(l) = Npt::decode(
            Npt::leaf(Pfn::new(5), Level::L4K, Access::RWX, attrs),
            Level::L4K,
        ) else {
            panic!()
        };
        assert!(l.dirty);
    }
}
