// SPDX-License-Identifier: GPL-2.0-only
//! A plain reference model of what each root maps, and the seeded PRNG the tests draw from.

use mmu::page::RootKind;
use mmu::Level;
use std::collections::BTreeMap;

/// The workspace's one splitmix64 generator, shared with the in-kernel self test.
pub use tdx::selftest::Rng;

/// A leaf in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLeaf {
    /// Level.
    pub level: u8,
    /// First PFN.
    pub pfn: u64,
}

/// What each root should map: base gfn → leaf, per root.
#[derive(Clone, Debug, Default)]
pub struct Model {
    roots: [BTreeMap<u64, ModelLeaf>; 2],
}

fn idx(root: RootKind) -> usize {
    match root {
        RootKind::Shared => 0,
        RootKind::Mirror => 1,
    }
}

fn pages(level: u8) -> u64 {
    Level::new(level).map(|l| l.pages()).unwrap_or(1)
}

impl Model {
    /// The leaf covering `gfn`, as (base gfn, leaf).
    pub fn lookup(&self, root: RootKind, gfn: u64) -> Option<(u64, ModelLeaf)> {
        let (&base, &leaf) = self.roots[idx(root)].range(..=gfn).next_back()?;
        (gfn < base + pages(leaf.level)).then_some((base, leaf))
    }

    /// Leaves overlapping `[start, end)`.
    pub fn overlapping(&self, root: RootKind, start: u64, end: u64) -> Vec<u64> {
        let m = &self.roots[idx(root)];
        let mut out: Vec<u64> = m.range(start..end).map(|(&b, _)| b).collect();
        if let Some((base, _)) = self.lookup(root, start) {
            if base < start {
                out.push(base);
            }
        }
        out
    }

    /// A new leaf replaces everything it overlaps (tables it replaced, a huge leaf it split).
    pub fn map(&mut self, root: RootKind, base: u64, level: u8, pfn: u64) -> usize {
        let gone = self.overlapping(root, base, base + pages(level));
        for b in &gone {
            self.roots[idx(root)].remove(b);
        }
        self.roots[idx(root)].insert(base, ModelLeaf { level, pfn });
        gone.len()
    }

    /// Removes every leaf overlapping `[start, end)`.
    pub fn zap(&mut self, root: RootKind, start: u64, end: u64) -> usize {
        let gone = self.overlapping(root, start, end);
        for b in &gone {
            self.roots[idx(root)].remove(b);
        }
        gone.len()
    }

    /// The root's leaves as (gfn, level) → pfn, the form [`crate::leaves`] returns.
    pub fn leaf_map(&self, root: RootKind) -> crate::LeafMap {
        self.roots[idx(root)]
            .iter()
            .map(|(&g, l)| ((g, l.level), l.pfn))
            .collect()
    }

    /// Leaves in a root.
    pub fn len(&self, root: RootKind) -> usize {
        self.roots[idx(root)].len()
    }

    /// Whether both roots are empty.
    pub fn is_empty(&self) -> bool {
        self.roots.iter().all(|r| r.is_empty())
    }
}
