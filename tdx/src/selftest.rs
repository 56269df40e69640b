// SPDX-License-Identifier: GPL-2.0-only
//! A random fault / zap / conversion sequence over the MMU, the S-EPT backend and the software
//! TDX module, checking after every operation that the mirror and the Secure-EPT agree entry by
//! entry; 2M faults, and zaps that split 2M leaves (PAGE.DEMOTE), included. `core` only and
//! allocation-free, so the same code runs in host tests and inside the
//! kernel module (debugfs `selftest`), against real kernel pages and locks.
//!
//! The check: every mirror leaf is an S-EPT leaf (pending or mapped, blocked exactly when the
//! mirror marks it) mapping the same page; every mirror table below the root is an S-EPT
//! non-leaf entry pointing at that table's external SPT; and the S-EPT holds no other entry
//! (the counts are equal).

use crate::abi::{sept_state, SeptLevel};
use crate::swmod::{PhysMem, Sha512Compress, SwTdxModule};
use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::env::MmuEnv;
use mmu::external::ExternalPageTable;
use mmu::page::RootKind;
use mmu::spte::{is_external_blocked, Access, PagingFormat, SpteKind};
use mmu::tdp::{Fault, FaultOutcome, TdpMmu, ZapTarget};
use mmu::{Gfn, GfnKind, Level, MmuError, Pfn};

/// splitmix64: small, seeded and `core`-only, so the host tests and the in-kernel self test draw
/// the same sequences from the same seed. The one generator of the workspace (`testkit`
/// re-exports it).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub const fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `0` for `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Why the self test failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelftestError {
    /// An MMU operation failed (`op` is the operation's index).
    Mmu {
        /// Operation index.
        op: u64,
        /// The error.
        err: MmuError,
    },
    /// A fault kept retrying.
    Stuck {
        /// Operation index.
        op: u64,
    },
    /// The mirror and the S-EPT disagree at this GPA and level (TDX numbering).
    Mismatch {
        /// Operation index.
        op: u64,
        /// The GPA.
        gpa: u64,
        /// The level.
        level: u8,
    },
    /// The S-EPT holds entries the mirror does not.
    ExtraSeptEntries {
        /// Operation index.
        op: u64,
        /// Entries in the S-EPT.
        sept: u64,
        /// Entries in the mirror.
        mirror: u64,
    },
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelftestReport {
    /// Faults mapped or found spurious.
    pub faults: u64,
    /// Range zaps.
    pub zaps: u64,
    /// Conversions (private range zapped, shared page faulted).
    pub conversions: u64,
    /// Checks of mirror ≡ S-EPT.
    pub checks: u64,
}

/// Guest memory for the run: `pages` host pages from `base`, the private GFN `g` backed by
/// `base + g`. 2M leaves are only used if `base` is 2M-aligned and `huge` is set.
#[derive(Clone, Copy, Debug)]
pub struct GuestMemory {
    /// First backing PFN.
    pub base: Pfn,
    /// Number of pages (GFNs `0..pages`).
    pub pages: u64,
    /// Whether to ask for 2M leaves sometimes.
    pub huge: bool,
}

/// Checks that the mirror root of `mmu` and the S-EPT of the TD `tdr` agree entry by entry.
///
/// # Errors
///
/// [`SelftestError::Mismatch`] or [`SelftestError::ExtraSeptEntries`] (with `op`).
pub fn check_mirror_matches_sept<F, E, X, M, H>(
    mmu: &TdpMmu<F, E, X>,
    m: &SwTdxModule<M, H>,
    tdr: Pfn,
    op: u64,
) -> Result<(), SelftestError>
where
    F: PagingFormat,
    E: MmuEnv,
    X: ExternalPageTable,
    M: PhysMem,
    H: Sha512Compress,
{
    let g = mmu.read();
    let mut mirror_entries = 0u64;
    let mut bad: Option<(u64, u8)> = None;
    let r = mmu.for_each_table(&g, RootKind::Mirror, |page| {
        let role = page.role();
        let level = role.level;
        if let (false, Some(spt)) = (role.is_root, page.external_spt()) {
            // This table hangs off the entry one level up.
            mirror_entries += 1;
            let gpa = page.gfn().raw() << 12;
            let lvl = SeptLevel(level.get());
            match m.sept_lookup(tdr, gpa, lvl) {
                Some((sept_state::NL_MAPPED | sept_state::NL_BLOCKED, pfn)) if pfn == spt.pfn() => {
                }
                _ => bad = bad.or(Some((gpa, lvl.0))),
            }
        }
        for (i, raw) in page.table().iter().enumerate() {
            let SpteKind::Leaf(leaf) = F::decode(raw, level) else {
                continue;
            };
            mirror_entries += 1;
            let gpa = (page.gfn().raw() + i as u64 * level.pages()) << 12;
            let lvl = SeptLevel(level.get() - 1);
            let want_blocked = is_external_blocked(raw);
            let ok = match m.sept_lookup(tdr, gpa, lvl) {
                Some((state, pfn)) => {
                    let blocked =
                        matches!(state, sept_state::BLOCKED | sept_state::PENDING_BLOCKED);
                    let leafy = matches!(
                        state,
                        sept_state::MAPPED
                            | sept_state::PENDING
                            | sept_state::BLOCKED
                            | sept_state::PENDING_BLOCKED
                    );
                    leafy && blocked == want_blocked && pfn == leaf.pfn
                }
                None => false,
            };
            if !ok {
                bad = bad.or(Some((gpa, lvl.0)));
            }
        }
    });
    drop(g);
    if r.is_err() {
        return Err(SelftestError::Mmu {
            op,
            err: MmuError::Bugged,
        });
    }
    if let Some((gpa, level)) = bad {
        return Err(SelftestError::Mismatch { op, gpa, level });
    }
    let mut sept_entries = 0u64;
    m.for_each_sept_entry(tdr, |_, _, _, _| sept_entries += 1);
    if sept_entries != mirror_entries {
        return Err(SelftestError::ExtraSeptEntries {
            op,
            sept: sept_entries,
            mirror: mirror_entries,
        });
    }
    Ok(())
}

/// Runs `ops` random operations on the TD whose MMU is `mmu` (with the S-EPT backend as its
/// external table) and whose TDR is `tdr`, checking after each. The `vcpus` enter the TD at
/// random (the backend's kicker must make them leave).
///
/// # Errors
///
/// The first [`SelftestError`].
#[allow(clippy::too_many_arguments)]
pub fn run_random<F, E, X, M, H>(
    mmu: &TdpMmu<F, E, X>,
    m: &SwTdxModule<M, H>,
    tdr: Pfn,
    caches: &mut VcpuMmuCaches,
    mem: GuestMemory,
    rng: &mut Rng,
    ops: u64,
    vcpus: &[Pfn],
) -> Result<SelftestReport, SelftestError>
where
    F: PagingFormat,
    E: MmuEnv,
    X: ExternalPageTable,
    M: PhysMem,
    H: Sha512Compress,
{
    // Zaps that split the 2M leaves they cover in part take their pages from here; whatever
    // it holds goes back however the run ends.
    let mut split = SplitCache::new();
    let r = run_ops(mmu, m, tdr, caches, &mut split, mem, rng, ops, vcpus);
    mmu.free_split_cache(&mut split);
    r
}

#[allow(clippy::too_many_arguments)]
fn run_ops<F, E, X, M, H>(
    mmu: &TdpMmu<F, E, X>,
    m: &SwTdxModule<M, H>,
    tdr: Pfn,
    caches: &mut VcpuMmuCaches,
    split: &mut SplitCache,
    mem: GuestMemory,
    rng: &mut Rng,
    ops: u64,
    vcpus: &[Pfn],
) -> Result<SelftestReport, SelftestError>
where
    F: PagingFormat,
    E: MmuEnv,
    X: ExternalPageTable,
    M: PhysMem,
    H: Sha512Compress,
{
    let mut rep = SelftestReport::default();
    let pages = mem.pages.max(1);
    for op in 0..ops {
        for &v in vcpus {
            if rng.below(100) < 30 {
                m.vcpu_enter(v);
            }
        }
        let gfn = rng.below(pages);
        match rng.below(100) {
            0..=64 => {
                let huge = mem.huge && rng.below(100) < 20;
                let f = Fault {
                    gfn: Gfn::new(gfn),
                    kind: GfnKind::Private,
                    pfn: mem.base.add(gfn),
                    access: Access::RWX,
                    write: true,
                    max_level: if huge { Level::L2M } else { Level::L4K },
                };
                fault(mmu, caches, &f, op)?;
                rep.faults += 1;
            }
            65..=84 => {
                let bits = rng.below(11);
                let len = 1 + rng.below(1 << bits);
                // Half of them split the 2M leaves they cover in part (PAGE.DEMOTE).
                let splits = (rng.below(100) < 50).then_some(&mut *split);
                zap(
                    mmu,
                    ZapTarget::Mirror,
                    gfn,
                    (gfn + len).min(pages),
                    splits,
                    op,
                )?;
                rep.zaps += 1;
            }
            85..=96 => {
                let start = gfn & !511;
                zap(
                    mmu,
                    ZapTarget::Mirror,
                    start,
                    (start + 512).min(pages),
                    None,
                    op,
                )?;
                let f = Fault {
                    gfn: Gfn::new(start + rng.below(512).min(pages - 1 - start.min(pages - 1))),
                    kind: GfnKind::Shared,
                    pfn: Pfn::new(1 << 30),
                    access: Access::RWX,
                    write: false,
                    max_level: Level::L4K,
                };
                fault(mmu, caches, &f, op)?;
                rep.conversions += 1;
            }
            _ => {
                zap(mmu, ZapTarget::Both, 0, pages, None, op)?;
                rep.zaps += 1;
            }
        }
        check_mirror_matches_sept(mmu, m, tdr, op)?;
        rep.checks += 1;
    }
    for &v in vcpus {
        m.vcpu_exit(v);
    }
    Ok(rep)
}

fn fault<F: PagingFormat, E: MmuEnv, X: ExternalPageTable>(
    mmu: &TdpMmu<F, E, X>,
    caches: &mut VcpuMmuCaches,
    f: &Fault,
    op: u64,
) -> Result<(), SelftestError> {
    for _ in 0..256 {
        mmu.topup_vcpu_caches(caches)
            .map_err(|err| SelftestError::Mmu { op, err })?;
        let g = mmu.read();
        match mmu.map(&g, caches, f) {
            Ok(FaultOutcome::Retry) => continue,
            Ok(_) => return Ok(()),
            Err(err) => return Err(SelftestError::Mmu { op, err }),
        }
    }
    Err(SelftestError::Stuck { op })
}

fn zap<F: PagingFormat, E: MmuEnv, X: ExternalPageTable>(
    mmu: &TdpMmu<F, E, X>,
    target: ZapTarget,
    start: u64,
    end: u64,
    mut split: Option<&mut SplitCache>,
    op: u64,
) -> Result<(), SelftestError> {
    for _ in 0..256 {
        if let Some(c) = split.as_deref_mut() {
            mmu.topup_split_cache(c)
                .map_err(|err| SelftestError::Mmu { op, err })?;
        }
        let g = mmu.write();
        let (s, e) = (Gfn::new(start), Gfn::new(end));
        let r = match split.as_deref_mut() {
            Some(c) => mmu.zap_range_split(&g, target, s, e, c),
            None => mmu.zap_range(&g, target, s, e),
        };
        match r {
            Ok(_) => return Ok(()),
            Err(MmuError::ExternalBusy) => continue,
            Err(err) => return Err(SelftestError::Mmu { op, err }),
        }
    }
    Err(SelftestError::Stuck { op })
}
