// SPDX-License-Identifier: GPL-2.0-only
//! A plain reference model of what each root maps, and a small seeded PRNG.

use mmu::page::RootKind;
use mmu::Level;
use std::collections::BTreeMap;

/// splitmix64: small, seeded, good enough for test sequences.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

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
