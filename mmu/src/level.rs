// SPDX-License-Identifier: GPL-2.0-only
//! Page-table levels (KVM's `PG_LEVEL_*`): level 1 maps 4 KiB, level 2 2 MiB, level 3 1 GiB.

use crate::addr::Gfn;

/// Entries per table page.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bits of GFN consumed per level.
pub const LEVEL_BITS: u32 = 9;

/// A page-table level, 1 (4 KiB leaves) to 5 (the root of a 5-level table).
///
/// # Invariants
///
/// `1 <= self.0 <= 5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// 4 KiB leaves.
    pub const L4K: Level = Level(1);
    /// 2 MiB leaves or tables of 4 KiB entries.
    pub const L2M: Level = Level(2);
    /// 1 GiB leaves or tables of 2 MiB entries.
    pub const L1G: Level = Level(3);
    /// Root of a 4-level table (PML4).
    pub const L512G: Level = Level(4);
    /// Root of a 5-level table (PML5).
    pub const L256T: Level = Level(5);
    /// The largest level any supported format uses.
    pub const MAX: Level = Level::L256T;
    /// The largest level a leaf may have.
    pub const MAX_HUGE: Level = Level::L1G;

    /// Builds a level from its number.
    pub const fn new(n: u8) -> Option<Level> {
        if n >= 1 && n <= 5 {
            Some(Level(n))
        } else {
            None
        }
    }

    /// The level number (1..=5).
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The level below, or `None` at 4 KiB.
    pub const fn down(self) -> Option<Level> {
        if self.0 > 1 {
            Some(Level(self.0 - 1))
        } else {
            None
        }
    }

    /// The level above, or `None` at the top.
    pub const fn up(self) -> Option<Level> {
        if self.0 < 5 {
            Some(Level(self.0 + 1))
        } else {
            None
        }
    }

    /// 4 KiB pages mapped by one entry at this level.
    pub const fn pages(self) -> u64 {
        1 << (LEVEL_BITS * (self.0 as u32 - 1))
    }

    /// Index of `gfn`'s entry inside a table at this level.
    pub const fn index(self, gfn: Gfn) -> usize {
        ((gfn.raw() >> (LEVEL_BITS * (self.0 as u32 - 1))) & (ENTRIES_PER_TABLE as u64 - 1))
            as usize
    }

    /// Whether a leaf at this level is a huge page.
    pub const fn is_huge(self) -> bool {
        self.0 > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_geometry() {
        assert_eq!(Level::L4K.pages(), 1);
        assert_eq!(Level::L2M.pages(), 512);
        assert_eq!(Level::L1G.pages(), 512 * 512);
        assert_eq!(Level::L2M.index(Gfn::new(0x3_5678)), 0x1ab);
        assert_eq!(Level::L4K.index(Gfn::new(0x3_5678)), 0x78);
        assert_eq!(Level::L4K.down(), None);
        assert_eq!(Level::L256T.up(), None);
        assert_eq!(Level::new(0), None);
        assert_eq!(Level::new(6), None);
    }
}
