//! Dirty logging's write-protection (`TdpMmu::write_protect_range` when a slot starts logging,
//! `TdpMmu::write_protect_masked` when `KVM_GET_DIRTY_LOG` / `KVM_CLEAR_DIRTY_LOG` re-arm the
//! pages they report): which leaves lose their writable bit, that huge leaves go, that nothing
//! else about a leaf changes, one TLB flush per pass, and that a write fault afterwards maps
//! the page writable again. The test kit's invariants (accounting against the walk and the
//! environment) are checked after every step.

use mmu::cache::VcpuMmuCaches;
use mmu::spte::{Access, Ept, LeafInfo, Npt, PagingFormat};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, WriteProtectStats};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use testkit::{check_invariants, HostEnv, RecordingExternal, TestMmu};

const PFN: u64 = 0x4000_0000;

fn shared(gfn: u64, access: Access, write: bool, max_level: Level) -> Fault {
    Fault {
        gfn: Gfn::new(gfn),
        kind: GfnKind::Shared,
        pfn: Pfn::new(PFN + gfn),
        access,
        write,
        max_level,
    }
}

struct Fx<F: PagingFormat> {
    mmu: TestMmu<F>,
    c: VcpuMmuCaches,
}

impl<F: PagingFormat> Fx<F> {
    fn vm() -> Self {
        Fx {
            mmu: testkit::vm_mmu::<F>(),
            c: VcpuMmuCaches::new(),
        }
    }

    fn td() -> Self {
        Fx {
            mmu: testkit::td_mmu::<F>(),
            c: VcpuMmuCaches::new(),
        }
    }

    fn fault(&mut self, f: Fault) -> FaultOutcome {
        let r = testkit::fault(&self.mmu, &mut self.c, &f).expect("fault");
        check_invariants(&self.mmu, &[&self.c]);
        r
    }

    fn leaf(&self, gfn: u64) -> Option<(Level, LeafInfo)> {
        let g = self.mmu.read();
        self.mmu
            .lookup(&g, GfnKind::Shared, Gfn::new(gfn))
            .expect("lookup")
    }

    fn writable(&self, gfn: u64) -> bool {
        self.leaf(gfn)
            .expect("mapped")
            .1
            .access
            .contains(Access::WRITE)
    }

    fn wrprot_range(&self, start: u64, end: u64) -> Result<WriteProtectStats, MmuError> {
        let g = self.mmu.write();
        let r = self
            .mmu
            .write_protect_range(&g, Gfn::new(start), Gfn::new(end));
        drop(g);
        check_invariants(&self.mmu, &[&self.c]);
        r
    }

    fn wrprot_masked(&self, words: &[(u64, u64)]) -> Result<WriteProtectStats, MmuError> {
        let g = self.mmu.write();
        let r = self
            .mmu
            .write_protect_masked(&g, words.iter().map(|&(base, mask)| (Gfn::new(base), mask)));
        drop(g);
        check_invariants(&self.mmu, &[&self.c]);
        r
    }

    fn flushes(&self) -> usize {
        self.mmu.env().counts().tlb_flushes
    }
}

fn map_rw_4k<F: PagingFormat>(fx: &mut Fx<F>, gfns: impl IntoIterator<Item = u64>) {
    for gfn in gfns {
        assert_eq!(
            fx.fault(shared(gfn, Access::RWX, true, Level::L4K)),
            FaultOutcome::Mapped(Level::L4K)
        );
    }
}

fn range_protects_every_writable_4k_leaf_and_nothing_else<F: PagingFormat>() {
    let mut fx = Fx::<F>::vm();
    map_rw_4k(&mut fx, 0..8);
    // A read-only leaf and a leaf outside the range.
    fx.fault(shared(8, Access::READ | Access::EXEC, false, Level::L4K));
    map_rw_4k(&mut fx, [20]);
    let before = fx.leaf(3).unwrap();
    let flushes = fx.flushes();
    let st = fx.wrprot_range(0, 10).unwrap();
    assert_eq!(
        st,
        WriteProtectStats {
            protected: 8,
            huge_zapped: 0,
            tlb_flushes: 1
        }
    );
    assert_eq!(fx.flushes(), flushes + 1);
    for gfn in 0..8 {
        assert!(!fx.writable(gfn), "gfn {gfn} still writable");
    }
    assert!(fx.writable(20), "outside the range");
    // Only the writable bit went: frame, level, exec, accessed and dirty are as they were.
    let (level, after) = fx.leaf(3).unwrap();
    assert_eq!(level, before.0);
    assert_eq!(after.pfn, before.1.pfn);
    assert_eq!(after.access, before.1.access - Access::WRITE);
    assert_eq!(
        (after.accessed, after.dirty),
        (before.1.accessed, before.1.dirty)
    );
    // A second pass finds nothing to do and does not flush.
    let st = fx.wrprot_range(0, 10).unwrap();
    assert_eq!(st, WriteProtectStats::default());
    assert_eq!(fx.flushes(), flushes + 1);
}

#[test]
fn range_protects_every_writable_4k_leaf_and_nothing_else_ept() {
    range_protects_every_writable_4k_leaf_and_nothing_else::<Ept>();
}

#[test]
fn range_protects_every_writable_4k_leaf_and_nothing_else_npt() {
    range_protects_every_writable_4k_leaf_and_nothing_else::<Npt>();
}

#[test]
fn a_write_fault_after_protection_maps_writable_again() {
    let mut fx = Fx::<Npt>::vm();
    map_rw_4k(&mut fx, [5]);
    fx.wrprot_range(0, 512).unwrap();
    assert!(!fx.writable(5));
    let leaves = fx.mmu.stats().shared_leaves;
    // The write fault replaces the read-only leaf: mapped, writable, dirty, one leaf still.
    assert_eq!(
        fx.fault(shared(5, Access::RWX, true, Level::L4K)),
        FaultOutcome::Mapped(Level::L4K)
    );
    let (_, leaf) = fx.leaf(5).unwrap();
    assert!(leaf.access.contains(Access::WRITE) && leaf.dirty);
    assert_eq!(fx.mmu.stats().shared_leaves, leaves);
    // The same fault again is spurious.
    assert_eq!(
        fx.fault(shared(5, Access::RWX, true, Level::L4K)),
        FaultOutcome::Spurious
    );
}

#[test]
fn huge_leaves_in_the_range_are_zapped_and_refault_at_4k() {
    let mut fx = Fx::<Npt>::vm();
    // 2M leaf at GFN 512 (the frame is 2M-aligned with it), a 4K leaf below it.
    assert_eq!(
        fx.fault(shared(512, Access::RWX, true, Level::L2M)),
        FaultOutcome::Mapped(Level::L2M)
    );
    map_rw_4k(&mut fx, [3]);
    // A range that covers only part of the huge leaf still takes it whole.
    let st = fx.wrprot_range(0, 600).unwrap();
    assert_eq!(
        st,
        WriteProtectStats {
            protected: 1,
            huge_zapped: 1,
            tlb_flushes: 1
        }
    );
    assert_eq!(fx.leaf(512), None);
    assert_eq!(fx.leaf(1000), None);
    assert_eq!(fx.mmu.stats().shared_leaves[1], 0);
    // While logging, the caller caps faults at 4K: the page comes back small.
    assert_eq!(
        fx.fault(shared(700, Access::RWX, true, Level::L4K)),
        FaultOutcome::Mapped(Level::L4K)
    );
}

#[test]
fn masked_protects_only_the_named_gfns() {
    let mut fx = Fx::<Ept>::vm();
    map_rw_4k(&mut fx, 64..192);
    let flushes = fx.flushes();
    // Word at 64: bits 0, 5, 63; word at 128: bit 1; an empty word is skipped.
    let st = fx
        .wrprot_masked(&[(64, 1 | 1 << 5 | 1 << 63), (128, 1 << 1), (192, 0)])
        .unwrap();
    assert_eq!(
        st,
        WriteProtectStats {
            protected: 4,
            huge_zapped: 0,
            tlb_flushes: 1
        }
    );
    assert_eq!(fx.flushes(), flushes + 1);
    for gfn in 64..192 {
        let named = [64, 69, 127, 129].contains(&gfn);
        assert_eq!(fx.writable(gfn), !named, "gfn {gfn}");
    }
    // Unmapped GFNs named by a word are no error and no flush.
    let st = fx.wrprot_masked(&[(4096, u64::MAX)]).unwrap();
    assert_eq!(st, WriteProtectStats::default());
    assert_eq!(fx.flushes(), flushes + 1);
}

#[test]
fn masked_word_not_aligned_to_64_gfns_names_base_plus_bit() {
    // Memslot bases need not be 64-aligned: bit i names base + i whatever base is.
    let mut fx = Fx::<Npt>::vm();
    map_rw_4k(&mut fx, 100..170);
    let st = fx.wrprot_masked(&[(101, 1 << 2 | 1 << 60)]).unwrap();
    assert_eq!(st.protected, 2);
    for gfn in 100..170 {
        assert_eq!(fx.writable(gfn), ![103, 161].contains(&gfn), "gfn {gfn}");
    }
}

#[test]
fn masked_zaps_a_huge_leaf_holding_a_named_gfn() {
    let mut fx = Fx::<Npt>::vm();
    assert_eq!(
        fx.fault(shared(1024, Access::RWX, true, Level::L2M)),
        FaultOutcome::Mapped(Level::L2M)
    );
    // A word straddling the huge leaf's start: bit 63 names GFN 1024.
    let st = fx.wrprot_masked(&[(961, 1 << 63)]).unwrap();
    assert_eq!(st.huge_zapped, 1);
    assert_eq!(fx.leaf(1024), None);
}

#[test]
fn bad_ranges_and_locks_are_refused_without_change() {
    let mut fx = Fx::<Npt>::vm();
    map_rw_4k(&mut fx, [1]);
    let limit = fx.mmu.config().gfn_limit();
    assert_eq!(fx.wrprot_range(5, 4), Err(MmuError::GfnOutOfRange));
    assert_eq!(fx.wrprot_range(0, limit + 1), Err(MmuError::GfnOutOfRange));
    assert_eq!(
        fx.wrprot_masked(&[(limit - 1, 1 << 1)]),
        Err(MmuError::GfnOutOfRange)
    );
    assert_eq!(
        fx.wrprot_masked(&[(u64::MAX - 3, 1 << 10)]),
        Err(MmuError::GfnOutOfRange)
    );
    assert!(fx.writable(1));
    // The last GFN below the limit is fine.
    assert!(fx.wrprot_masked(&[(limit - 1, 1)]).is_ok());
    // Another MMU's guard.
    let other = testkit::vm_mmu::<Npt>();
    let g = other.write();
    assert_eq!(
        fx.mmu.write_protect_range(&g, Gfn::new(0), Gfn::new(8)),
        Err(MmuError::WrongLock)
    );
    assert_eq!(
        fx.mmu
            .write_protect_masked(&g, [(Gfn::new(0), 2u64)].into_iter()),
        Err(MmuError::WrongLock)
    );
    drop(g);
    assert!(fx.writable(1));
}

#[test]
fn a_bugged_vm_refuses_and_consumes_no_word() {
    let mut fx = Fx::<Npt>::vm();
    map_rw_4k(&mut fx, [1]);
    fx.mmu.mark_bugged();
    let g = fx.mmu.write();
    let mut taken = 0;
    let r = fx.mmu.write_protect_masked(
        &g,
        core::iter::from_fn(|| {
            taken += 1;
            Some((Gfn::new(0), 2u64))
        })
        .take(3),
    );
    drop(g);
    assert_eq!(r, Err(MmuError::Bugged));
    assert_eq!(taken, 0);
}

#[test]
fn a_tds_shared_root_is_protected_at_its_shared_alias_and_the_mirror_is_untouched() {
    let mut fx = Fx::<Ept>::td();
    map_rw_4k(&mut fx, [7]);
    fx.fault(Fault {
        gfn: Gfn::new(7),
        kind: GfnKind::Private,
        pfn: Pfn::new(PFN + 0x10_0000),
        access: Access::RWX,
        write: true,
        max_level: Level::L4K,
    });
    let st = fx.wrprot_range(0, 16).unwrap();
    assert_eq!(st.protected, 1);
    assert!(!fx.writable(7));
    let g = fx.mmu.read();
    let (_, private) = fx
        .mmu
        .lookup(&g, GfnKind::Private, Gfn::new(7))
        .unwrap()
        .unwrap();
    assert!(private.access.contains(Access::WRITE));
}

#[test]
fn a_config_without_huge_pages_behaves_the_same() {
    let cfg = MmuConfig {
        max_level: Level::L4K,
        ..MmuConfig::vm(GpaWidth::Bits48)
    };
    let mmu: TestMmu<Npt> = TdpMmu::new(
        HostEnv::new(),
        RecordingExternal::new(cfg.root_level()),
        cfg,
    )
    .unwrap();
    let mut fx = Fx {
        mmu,
        c: VcpuMmuCaches::new(),
    };
    map_rw_4k(&mut fx, 0..3);
    assert_eq!(fx.wrprot_range(0, 3).unwrap().protected, 3);
}

/// The property dirty logging rests on, under random operations: once a range is logged, every
/// writable leaf in it has its GFN marked in the log (a writable leaf without a mark would let
/// the guest dirty a page nobody reports). The "module" here is the test: a fault marks the
/// GFN when it maps writable (Mapped or Spurious), a GET takes the marks and write-protects
/// what it took, logging starts with `write_protect_range` and a clear log.
#[test]
fn random_faults_gets_and_zaps_never_leave_a_writable_unmarked_leaf() {
    const PAGES: u64 = 4096;
    let mut seed = std::env::var("DIRTY_LOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut fx = Fx::<Npt>::vm();
    // Before logging: huge and small leaves, writable or not.
    for _ in 0..40 {
        let gfn = rnd(PAGES);
        let level = if rnd(3) == 0 { Level::L2M } else { Level::L4K };
        let access = if rnd(2) == 0 {
            Access::RWX
        } else {
            Access::READ | Access::EXEC
        };
        fx.fault(shared(gfn, access, rnd(2) == 0, level));
    }
    let mut log = vec![0u64; (PAGES / 64) as usize];
    let st = fx.wrprot_range(0, PAGES).unwrap();
    assert!(st.tlb_flushes <= 1);
    for op in 0..3000 {
        match rnd(10) {
            0..=5 => {
                // A fault while logging: capped at 4K; writable if the host page is.
                let gfn = rnd(PAGES);
                let access = if rnd(4) == 0 {
                    Access::READ | Access::EXEC
                } else {
                    Access::RWX
                };
                let write = access.contains(Access::WRITE) && rnd(2) == 0;
                let out =
                    testkit::fault(&fx.mmu, &mut fx.c, &shared(gfn, access, write, Level::L4K))
                        .unwrap();
                if matches!(out, FaultOutcome::Mapped(_) | FaultOutcome::Spurious)
                    && access.contains(Access::WRITE)
                {
                    log[(gfn / 64) as usize] |= 1 << (gfn % 64);
                }
            }
            6 | 7 => {
                // GET: take every word and write-protect what it held.
                let words: Vec<(u64, u64)> = log
                    .iter_mut()
                    .enumerate()
                    .map(|(i, w)| (i as u64 * 64, std::mem::take(w)))
                    .collect();
                fx.wrprot_masked(&words).unwrap();
            }
            8 => {
                // CLEAR of one word: only the named bits.
                let i = rnd(log.len() as u64) as usize;
                let ask = rnd(u64::MAX);
                let cleared = log[i] & ask;
                log[i] &= !ask;
                fx.wrprot_masked(&[(i as u64 * 64, cleared)]).unwrap();
            }
            _ => {
                // A zap (MMU notifier, memslot change) of a small range.
                let s = rnd(PAGES);
                let g = fx.mmu.write();
                fx.mmu
                    .zap_range(
                        &g,
                        mmu::tdp::ZapTarget::Shared,
                        Gfn::new(s),
                        Gfn::new((s + rnd(64)).min(PAGES)),
                    )
                    .unwrap();
            }
        }
        let g = fx.mmu.read();
        fx.mmu
            .for_each_leaf(&g, mmu::page::RootKind::Shared, |gfn, level, leaf| {
                if gfn.raw() < PAGES && leaf.access.contains(Access::WRITE) {
                    assert_eq!(
                        level,
                        Level::L4K,
                        "op {op}: writable huge leaf while logging"
                    );
                    let g = gfn.raw();
                    assert!(
                        log[(g / 64) as usize] & 1 << (g % 64) != 0,
                        "op {op}: GFN {g} writable but not marked"
                    );
                }
            })
            .unwrap();
        drop(g);
        check_invariants(&fx.mmu, &[&fx.c]);
    }
}
