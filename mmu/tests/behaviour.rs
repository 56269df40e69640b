//! Behaviour tests of the TDP MMU core, through its public API and the host test kit.
//!
//! Each test pins one behaviour and is named for it. Shared fixtures live at the top; the tests
//! are grouped by area.

use mmu::cache::VcpuMmuCaches;
use mmu::page::RootKind;
use mmu::spte::{Access, PagingFormat};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapStats, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use testkit::{check_invariants, HookCall, HostEnv, LeafMap, RecordingExternal, TestMmu};

const P2M: u64 = 512;
const P1G: u64 = 512 * 512;
const P512G: u64 = 512 * 512 * 512;
/// The shared bit of a 48-bit TD, in GFN space.
const SB48: u64 = 1 << 35;

fn fault_of(kind: GfnKind, gfn: u64, pfn: u64, max_level: Level) -> Fault {
    Fault {
        gfn: Gfn::new(gfn),
        kind,
        pfn: Pfn::new(pfn),
        access: Access::RWX,
        write: true,
        max_level,
    }
}

fn private(gfn: u64, pfn: u64, max_level: Level) -> Fault {
    fault_of(GfnKind::Private, gfn, pfn, max_level)
}

fn shared(gfn: u64, pfn: u64, max_level: Level) -> Fault {
    fault_of(GfnKind::Shared, gfn, pfn, max_level)
}

fn mmu_with<F: PagingFormat>(cfg: MmuConfig) -> TestMmu<F> {
    TdpMmu::new(
        HostEnv::new(),
        RecordingExternal::new(cfg.root_level()),
        cfg,
    )
    .expect("roots")
}

/// What a test needs to know about one table page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableInfo {
    /// Level of the entries in the table.
    level: u8,
    /// First GFN covered (root GFN space).
    gfn: u64,
    is_root: bool,
    table_pfn: u64,
    ext: Option<u64>,
}

/// An MMU and one vCPU's caches. On drop the caches are freed and the recording external table
/// is put into teardown mode, so the MMU's own drop tears down cleanly.
struct Fx<F: PagingFormat> {
    mmu: TestMmu<F>,
    c: VcpuMmuCaches,
}

impl<F: PagingFormat> Fx<F> {
    fn new(mmu: TestMmu<F>) -> Self {
        Fx {
            mmu,
            c: VcpuMmuCaches::new(),
        }
    }

    fn td() -> Self {
        Self::new(testkit::td_mmu::<F>())
    }

    fn vm() -> Self {
        Self::new(testkit::vm_mmu::<F>())
    }

    fn with(cfg: MmuConfig) -> Self {
        Self::new(mmu_with::<F>(cfg))
    }

    /// Tops up and faults, retrying like a vCPU (testkit helper).
    fn fault(&mut self, f: Fault) -> Result<FaultOutcome, MmuError> {
        testkit::fault(&self.mmu, &mut self.c, &f)
    }

    fn ok(&mut self, f: Fault) -> FaultOutcome {
        self.fault(f).expect("fault")
    }

    /// One `map` call under the shared lock, without top-up or retries.
    fn map(&mut self, f: Fault) -> Result<FaultOutcome, MmuError> {
        let g = self.mmu.read();
        self.mmu.map(&g, &mut self.c, &f)
    }

    fn topup(&mut self) {
        self.mmu.topup_vcpu_caches(&mut self.c).expect("topup");
    }

    fn zap(&self, target: ZapTarget, start: u64, end: u64) -> Result<ZapStats, MmuError> {
        let g = self.mmu.write();
        self.mmu
            .zap_range(&g, target, Gfn::new(start), Gfn::new(end))
    }

    fn leaves(&self, root: RootKind) -> LeafMap {
        let g = self.mmu.read();
        testkit::leaves(&self.mmu, &g, root)
    }

    fn lookup(&self, kind: GfnKind, gfn: u64) -> Option<(Level, mmu::spte::LeafInfo)> {
        let g = self.mmu.read();
        self.mmu.lookup(&g, kind, Gfn::new(gfn)).expect("lookup")
    }

    fn tables(&self, root: RootKind) -> Vec<TableInfo> {
        let g = self.mmu.read();
        let mut out = Vec::new();
        self.mmu
            .for_each_table(&g, root, |p| {
                out.push(TableInfo {
                    level: p.role().level.get(),
                    gfn: p.gfn().raw(),
                    is_root: p.role().is_root,
                    table_pfn: p.pfn().raw(),
                    ext: p.external_spt().map(|s| s.pfn().raw()),
                })
            })
            .expect("walk tables");
        out
    }

    /// The raw entry at `level` covering `gfn` (root GFN space).
    fn raw_entry(&self, root: RootKind, level: Level, gfn: u64) -> u64 {
        let g = self.mmu.read();
        let mut raw = None;
        self.mmu
            .for_each_table(&g, root, |p| {
                let span = p.role().level.pages() * 512;
                if p.role().level == level && gfn >= p.gfn().raw() && gfn < p.gfn().raw() + span {
                    raw = p.table().get(level.index(Gfn::new(gfn)));
                }
            })
            .expect("walk tables");
        raw.expect("no table at that level covers the gfn")
    }

    fn check(&self) {
        check_invariants(&self.mmu, &[&self.c]);
    }

    fn log_on(&self) {
        self.mmu.external().set_logging(true);
        self.mmu.external().clear_log();
    }

    fn log(&self) -> Vec<HookCall> {
        self.mmu.external().log()
    }
}

impl<F: PagingFormat> Drop for Fx<F> {
    fn drop(&mut self) {
        self.mmu.free_vcpu_caches(&mut self.c);
        self.mmu.external().set_teardown(true);
    }
}

fn lm(entries: &[(u64, u8, u64)]) -> LeafMap {
    entries.iter().map(|&(g, l, p)| ((g, l), p)).collect()
}

fn lvl(n: u8) -> Level {
    Level::new(n).expect("level")
}

mod formats {
    use super::*;
    use mmu::spte::{Ept, EptBits, LeafAttrs, Npt, NptBits, SpteKind};

    const ATTRS: LeafAttrs = LeafAttrs {
        accessed: true,
        dirty: false,
        mirror: false,
    };

    #[test]
    fn ept_leaf_round_trips_every_access_combination() {
        for bits in 0..8u8 {
            let access = Access::from_bits_truncate(bits);
            let raw = Ept::leaf(Pfn::new(0x1234), Level::L4K, access, ATTRS);
            let SpteKind::Leaf(l) = Ept::decode(raw, Level::L4K) else {
                panic!("not a leaf: {raw:#x}");
            };
            assert_eq!(l.access, access, "bits {bits:#b}");
            assert_eq!(l.pfn, Pfn::new(0x1234));
        }
    }

    #[test]
    fn npt_leaf_access_always_includes_read() {
        for bits in 0..8u8 {
            let access = Access::from_bits_truncate(bits);
            let raw = Npt::leaf(Pfn::new(0x1234), Level::L2M, access, ATTRS);
            let SpteKind::Leaf(l) = Npt::decode(raw, Level::L2M) else {
                panic!("not a leaf: {raw:#x}");
            };
            assert_eq!(l.access, access | Access::READ, "bits {bits:#b}");
            assert_ne!(raw & NptBits::LARGE.bits(), 0);
        }
    }

    #[test]
    fn ept_mirror_leaf_suppresses_ve_and_shared_leaf_does_not() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x500, Level::L4K));
        fx.ok(shared(0x10, 0x600, Level::L4K));
        let mirror = fx.raw_entry(RootKind::Mirror, Level::L4K, 0x10);
        let shared = fx.raw_entry(RootKind::Shared, Level::L4K, SB48 | 0x10);
        assert_ne!(mirror & EptBits::SUPPRESS_VE.bits(), 0, "{mirror:#x}");
        assert_eq!(shared & EptBits::SUPPRESS_VE.bits(), 0, "{shared:#x}");
        assert_eq!(mirror & mmu::spte::PFN_MASK, 0x500 << 12);
        assert_eq!(shared & mmu::spte::PFN_MASK, 0x600 << 12);
    }

    #[test]
    fn huge_leaf_entry_carries_large_bit_and_table_entry_does_not() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(3 * P2M, 7 * P2M, Level::L2M));
        let leaf = fx.raw_entry(RootKind::Shared, Level::L2M, 3 * P2M);
        let table = fx.raw_entry(RootKind::Shared, Level::L1G, 3 * P2M);
        assert_ne!(leaf & EptBits::LARGE.bits(), 0, "{leaf:#x}");
        assert_eq!(table & EptBits::LARGE.bits(), 0, "{table:#x}");
        assert!(matches!(Ept::decode(table, Level::L1G), SpteKind::Table(_)));
    }

    #[test]
    fn private_leaf_is_rwx_even_for_read_only_fault() {
        let mut fx = Fx::<Npt>::td();
        let f = Fault {
            access: Access::READ,
            write: false,
            ..private(0x42, 0x99, Level::L4K)
        };
        assert_eq!(fx.ok(f), FaultOutcome::Mapped(Level::L4K));
        let (level, leaf) = fx.lookup(GfnKind::Private, 0x42).expect("mapped");
        assert_eq!(level, Level::L4K);
        assert_eq!(leaf.access, Access::RWX);
        assert_eq!((leaf.accessed, leaf.dirty), (true, false));
    }

    #[test]
    fn shared_leaf_is_dirty_only_for_write_fault_with_write_access() {
        let mut fx = Fx::<Ept>::vm();
        let cases = [
            (0x1, Access::READ | Access::WRITE, true, true),
            (0x2, Access::READ, true, false),
            (0x3, Access::READ | Access::WRITE, false, false),
        ];
        for (gfn, access, write, dirty) in cases {
            let f = Fault {
                access,
                write,
                ..shared(gfn, 0x100 + gfn, Level::L4K)
            };
            fx.ok(f);
            let (_, leaf) = fx.lookup(GfnKind::Shared, gfn).expect("mapped");
            assert_eq!(leaf.dirty, dirty, "gfn {gfn:#x}");
            assert!(leaf.accessed, "gfn {gfn:#x}");
            assert_eq!(leaf.access, access, "gfn {gfn:#x}");
        }
    }
}

mod iterator {
    use super::*;
    use mmu::spte::{Ept, SpteKind};

    /// What a walk entry is: table, leaf or absent.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum E {
        T,
        L,
        A,
    }

    fn kind_of(k: SpteKind) -> E {
        match k {
            SpteKind::Table(_) => E::T,
            SpteKind::Leaf(_) => E::L,
            SpteKind::Absent => E::A,
            SpteKind::Frozen => panic!("frozen entry in a quiescent MMU"),
        }
    }

    /// Every entry a full `next()` walk of `[start, end)` visits, as (level, gfn, kind).
    fn visit(fx: &Fx<Ept>, root: RootKind, start: u64, end: u64) -> Vec<(u8, u64, E)> {
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, root, Gfn::new(start), Gfn::new(end))
            .expect("walk");
        let mut out = Vec::new();
        while it.valid() {
            out.push((it.level().get(), it.gfn().raw(), kind_of(it.kind())));
            it.next();
        }
        out
    }

    #[test]
    fn walk_steps_down_into_tables_and_side_over_absent_entries() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(2, 0x50, Level::L4K));
        assert_eq!(
            visit(&fx, RootKind::Shared, 0, 4),
            vec![
                (4, 0, E::T),
                (3, 0, E::T),
                (2, 0, E::T),
                (1, 0, E::A),
                (1, 1, E::A),
                (1, 2, E::L),
                (1, 3, E::A),
            ]
        );
    }

    #[test]
    fn walk_does_not_descend_into_huge_leaves_or_absent_entries() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P2M, 4 * P2M, Level::L2M));
        assert_eq!(
            visit(&fx, RootKind::Shared, 0, 3 * P2M),
            vec![
                (4, 0, E::T),
                (3, 0, E::T),
                (2, 0, E::A),
                (2, P2M, E::L),
                (2, 2 * P2M, E::A),
            ]
        );
    }

    #[test]
    fn walk_of_an_empty_root_visits_only_root_entries() {
        let fx = Fx::<Ept>::vm();
        assert_eq!(
            visit(&fx, RootKind::Shared, 0, 2 * P512G),
            vec![(4, 0, E::A), (4, P512G, E::A)]
        );
    }

    #[test]
    fn next_sibling_on_the_last_entry_of_a_table_steps_up_then_side() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(511, 0x50, Level::L4K));
        fx.ok(shared(P2M, 0x51, Level::L4K));
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(511), Gfn::new(2 * P2M))
            .unwrap();
        while it.level() != Level::L4K {
            it.next();
        }
        assert_eq!((it.gfn(), kind_of(it.kind())), (Gfn::new(511), E::L));
        it.next_sibling();
        assert!(it.valid());
        assert_eq!(
            (it.level(), it.gfn(), kind_of(it.kind())),
            (Level::L2M, Gfn::new(P2M), E::T)
        );
    }

    #[test]
    fn next_sibling_on_the_last_root_entry_ends_the_walk() {
        let fx = Fx::<Ept>::vm();
        let limit = fx.mmu.config().gfn_limit();
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(limit))
            .unwrap();
        for i in 0..511 {
            assert_eq!((it.level(), it.gfn()), (Level::L512G, Gfn::new(i * P512G)));
            it.next_sibling();
            assert!(it.valid(), "entry {}", i + 1);
        }
        assert_eq!(it.gfn(), Gfn::new(511 * P512G));
        it.next_sibling();
        assert!(!it.valid());
    }

    #[test]
    fn restart_walks_down_from_the_root_to_the_current_entry_again() {
        let mut fx = Fx::<Ept>::vm();
        for gfn in [2, 3, 7] {
            fx.ok(shared(gfn, 0x50 + gfn, Level::L4K));
        }
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(8))
            .unwrap();
        while !(it.level() == Level::L4K && it.gfn() == Gfn::new(3)) {
            it.next();
        }
        it.restart();
        assert_eq!((it.level(), it.gfn()), (Level::L512G, Gfn::new(0)));
        let mut path = Vec::new();
        while it.level() != Level::L4K {
            it.next();
            path.push((it.level().get(), it.gfn().raw()));
        }
        assert_eq!(path, vec![(3, 0), (2, 0), (1, 3)]);
        assert_eq!(kind_of(it.kind()), E::L);
    }

    #[test]
    fn restart_after_stepping_up_resumes_at_the_upper_level_entry() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(511, 0x50, Level::L4K));
        fx.ok(shared(2 * P2M, 0x51, Level::L4K));
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(2 * P2M + 2))
            .unwrap();
        while !(it.level() == Level::L4K && it.gfn() == Gfn::new(511)) {
            it.next();
        }
        it.next(); // up to the 2M-level table, then side to its (absent) entry 0x200
        assert_eq!((it.level(), it.gfn()), (Level::L2M, Gfn::new(P2M)));
        it.restart();
        let mut rest = Vec::new();
        while it.valid() {
            rest.push((it.level().get(), it.gfn().raw(), kind_of(it.kind())));
            it.next();
        }
        assert_eq!(
            rest,
            vec![
                (4, 0, E::T),
                (3, 0, E::T),
                (2, P2M, E::A),
                (2, 2 * P2M, E::T),
                (1, 2 * P2M, E::L),
                (1, 2 * P2M + 1, E::A),
            ]
        );
    }

    #[test]
    fn restart_at_the_end_of_the_range_stays_invalid() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(2, 0x50, Level::L4K));
        let g = fx.mmu.read();
        let mut it = fx
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(4))
            .unwrap();
        while it.valid() {
            it.next();
        }
        it.restart();
        assert!(!it.valid());
    }

    #[test]
    fn walk_of_a_td_shared_root_takes_gfns_with_the_shared_bit() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(shared(0x10, 0x50, Level::L4K));
        let leaves = |start: u64| -> Vec<(u8, u64, E)> {
            visit(&fx, RootKind::Shared, start, start + 1)
                .into_iter()
                .filter(|e| e.2 == E::L)
                .collect()
        };
        assert_eq!(leaves(0x10), vec![]);
        assert_eq!(leaves(SB48 | 0x10), vec![(1, SB48 | 0x10, E::L)]);
    }

    #[test]
    fn walk_of_the_mirror_root_of_a_vm_is_no_private_root() {
        let fx = Fx::<Ept>::vm();
        let g = fx.mmu.read();
        let r = fx
            .mmu
            .walk(&g, RootKind::Mirror, Gfn::new(0), Gfn::new(1))
            .err();
        assert_eq!(r, Some(MmuError::NoPrivateRoot));
    }

    #[test]
    fn for_each_table_walks_tables_in_pre_order_parents_first() {
        let mut fx = Fx::<Ept>::vm();
        // Faulted in reverse so the walk order cannot be the insertion order.
        for gfn in [P512G, P1G, P2M, 0] {
            fx.ok(shared(gfn, 0x100, Level::L4K));
        }
        let got: Vec<(u8, u64)> = fx
            .tables(RootKind::Shared)
            .iter()
            .map(|t| (t.level, t.gfn))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, 0),
                (3, 0),
                (2, 0),
                (1, 0),
                (1, P2M),
                (2, P1G),
                (1, P1G),
                (3, P512G),
                (2, P512G),
                (1, P512G),
            ]
        );
        fx.check();
    }

    #[test]
    fn for_each_leaf_steps_side_and_up_across_every_table_boundary_in_gfn_order() {
        let mut fx = Fx::<Ept>::vm();
        let gfns = [
            0x1ff,
            P2M,
            P1G - 1,
            P1G,
            P512G - 1,
            P512G,
            fx.mmu.config().gfn_limit() - 1,
        ];
        for (i, &gfn) in gfns.iter().enumerate().rev() {
            fx.ok(shared(gfn, 0x1000 + i as u64, Level::L4K));
        }
        let g = fx.mmu.read();
        let mut seen = Vec::new();
        fx.mmu
            .for_each_leaf(&g, RootKind::Shared, |gfn, level, leaf| {
                seen.push((gfn.raw(), level.get(), leaf.pfn.raw()))
            })
            .unwrap();
        drop(g);
        let want: Vec<_> = gfns
            .iter()
            .enumerate()
            .map(|(i, &gfn)| (gfn, 1, 0x1000 + i as u64))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn for_each_leaf_reports_huge_leaves_once_at_their_level() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P1G, 4 * P1G, Level::L1G));
        fx.ok(private(2 * P1G + P2M, 8 * P2M, Level::L2M));
        fx.ok(private(2 * P1G + 2 * P2M + 3, 0x33, Level::L4K));
        assert_eq!(
            fx.leaves(RootKind::Mirror),
            lm(&[
                (P1G, 3, 4 * P1G),
                (2 * P1G + P2M, 2, 8 * P2M),
                (2 * P1G + 2 * P2M + 3, 1, 0x33),
            ])
        );
    }

    #[test]
    fn lookup_inside_huge_leaf_returns_the_leaf_at_its_level() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(5 * P2M, 9 * P2M, Level::L2M));
        let (level, leaf) = fx.lookup(GfnKind::Shared, 5 * P2M + 77).expect("mapped");
        assert_eq!((level, leaf.pfn), (Level::L2M, Pfn::new(9 * P2M)));
        assert_eq!(fx.lookup(GfnKind::Shared, 6 * P2M), None);
    }

    #[test]
    fn lookup_of_a_gfn_beyond_the_address_width_does_not_alias_a_low_gfn() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(5, 0x55, Level::L4K));
        fx.ok(shared(5, 0x66, Level::L4K));
        // 2^36 + 5: the 4-level root spans 2^36 GFNs, so every index equals gfn 5's.
        let beyond = (1 << 36) + 5;
        let g = fx.mmu.read();
        for kind in [GfnKind::Private, GfnKind::Shared] {
            assert_eq!(
                fx.mmu.lookup(&g, kind, Gfn::new(beyond)),
                Err(MmuError::GfnOutOfRange),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn lookup_of_unmapped_gfn_next_to_a_mapped_one_is_none() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x200, 0x900, Level::L4K));
        assert_eq!(fx.lookup(GfnKind::Private, 0x201), None);
        assert_eq!(fx.lookup(GfnKind::Private, 0x1ff), None);
        assert_eq!(
            fx.lookup(GfnKind::Private, 0x200).map(|(l, i)| (l, i.pfn)),
            Some((Level::L4K, Pfn::new(0x900)))
        );
    }

    #[test]
    fn zap_skips_the_subtree_it_freed_and_continues_with_the_next_sibling() {
        let mut fx = Fx::<Ept>::vm();
        for gfn in [P2M, P2M + 1, 2 * P2M, 2 * P2M + 1] {
            fx.ok(shared(gfn, 0x100 + gfn, Level::L4K));
        }
        // Covers the whole table at 0x200, then only the first entry of the table at 0x400.
        let z = fx.zap(ZapTarget::Shared, P2M, 2 * P2M + 1).unwrap();
        assert_eq!(
            z,
            ZapStats {
                leaves: 3,
                tables: 1,
                blocked: 0,
                flushes: 0,

                splits: 0
            }
        );
        assert_eq!(
            fx.leaves(RootKind::Shared),
            lm(&[(2 * P2M + 1, 1, 0x100 + 2 * P2M + 1)])
        );
        fx.check();
    }

    #[test]
    fn zap_with_unaligned_bounds_visits_exactly_the_gfns_in_range() {
        let mut fx = Fx::<Ept>::vm();
        for gfn in [0x1fe, 0x1ff, 0x200, 0x201] {
            fx.ok(shared(gfn, gfn, Level::L4K));
        }
        let z = fx.zap(ZapTarget::Shared, 0x1ff, 0x201).unwrap();
        assert_eq!(z.leaves, 2);
        assert_eq!(z.tables, 0);
        assert_eq!(
            fx.leaves(RootKind::Shared),
            lm(&[(0x1fe, 1, 0x1fe), (0x201, 1, 0x201)])
        );
        fx.check();
    }

    #[test]
    fn zap_of_an_empty_range_start_equal_end_touches_nothing() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x205, 0x905, Level::L4K));
        fx.log_on();
        let z = fx.zap(ZapTarget::Mirror, 0x205, 0x205).unwrap();
        assert_eq!(z, ZapStats::default());
        assert_eq!(fx.log(), vec![]);
        assert_eq!(fx.leaves(RootKind::Mirror), lm(&[(0x205, 1, 0x905)]));
        fx.check();
    }
}

mod fault {
    use super::*;
    use mmu::spte::{Ept, Npt};

    /// Faults one leaf at each level in a fresh MMU and checks the level, the leaf, the tables
    /// linked (one per level between the root and the leaf) and the accounting.
    fn maps_at_every_level<F: PagingFormat>(td: bool, kind: GfnKind) {
        let root = mmu::tdp::root_kind_of(kind);
        for level in [Level::L4K, Level::L2M, Level::L1G] {
            let mut fx = if td { Fx::<F>::td() } else { Fx::<F>::vm() };
            let gfn = 3 * P1G
                + if level == Level::L1G {
                    0
                } else {
                    5 * level.pages()
                };
            let pfn = 11 * P1G + 7 * level.pages();
            let out = fx.ok(fault_of(kind, gfn, pfn, level));
            assert_eq!(out, FaultOutcome::Mapped(level), "{level:?}");
            assert_eq!(fx.leaves(root), lm(&[(gfn, level.get(), pfn)]), "{level:?}");
            let tables = fx.tables(root);
            assert_eq!(tables.len(), 1 + (4 - level.get() as usize), "{level:?}");
            let st = fx.mmu.stats();
            let leaves = match root {
                RootKind::Shared => st.shared_leaves,
                RootKind::Mirror => st.mirror_leaves,
            };
            let mut want = [0; 3];
            want[level.get() as usize - 1] = 1;
            assert_eq!(leaves, want, "{level:?}");
            if root == RootKind::Mirror {
                let e = fx.mmu.external().entries();
                let leaf = e.get(&(level.get(), gfn)).expect("external leaf");
                assert_eq!((leaf.pfn, leaf.leaf), (Pfn::new(pfn), true));
            }
            fx.check();
        }
    }

    #[test]
    fn ept_shared_faults_map_at_4k_2m_and_1g() {
        maps_at_every_level::<Ept>(false, GfnKind::Shared);
    }

    #[test]
    fn ept_mirror_faults_map_at_4k_2m_and_1g() {
        maps_at_every_level::<Ept>(true, GfnKind::Private);
    }

    #[test]
    fn npt_shared_faults_map_at_4k_2m_and_1g() {
        maps_at_every_level::<Npt>(false, GfnKind::Shared);
    }

    #[test]
    fn npt_mirror_faults_map_at_4k_2m_and_1g() {
        maps_at_every_level::<Npt>(true, GfnKind::Private);
    }

    #[test]
    fn td_shared_faults_map_at_4k_2m_and_1g() {
        maps_at_every_level::<Ept>(true, GfnKind::Shared);
    }

    #[test]
    fn gfn_pfn_misalignment_lowers_the_level_to_their_common_alignment() {
        let mut fx = Fx::<Ept>::td();
        // Same offset inside 2M, different inside 1G.
        assert_eq!(
            fx.ok(private(P1G + P2M, 2 * P1G + 2 * P2M, Level::L1G)),
            FaultOutcome::Mapped(Level::L2M)
        );
        // Different offset inside 2M.
        assert_eq!(
            fx.ok(private(3 * P1G + 1, 4 * P1G + 2, Level::L1G)),
            FaultOutcome::Mapped(Level::L4K)
        );
        assert_eq!(
            fx.leaves(RootKind::Mirror),
            lm(&[
                (P1G + P2M, 2, 2 * P1G + 2 * P2M),
                (3 * P1G + 1, 1, 4 * P1G + 2)
            ])
        );
        fx.check();
    }

    #[test]
    fn unaligned_but_congruent_gfn_and_pfn_map_the_aligned_huge_block() {
        let mut fx = Fx::<Ept>::vm();
        assert_eq!(
            fx.ok(shared(4 * P2M + 0x33, 9 * P2M + 0x33, Level::L2M)),
            FaultOutcome::Mapped(Level::L2M)
        );
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(4 * P2M, 2, 9 * P2M)]));
    }

    #[test]
    fn config_max_level_caps_the_leaf_level() {
        let cfg = MmuConfig {
            max_level: Level::L2M,
            ..MmuConfig::td(GpaWidth::Bits48)
        };
        let mut fx = Fx::<Ept>::with(cfg);
        assert_eq!(
            fx.ok(private(P1G, 2 * P1G, Level::L1G)),
            FaultOutcome::Mapped(Level::L2M)
        );
        assert_eq!(
            fx.ok(shared(P1G, 2 * P1G, Level::L1G)),
            FaultOutcome::Mapped(Level::L2M)
        );
        fx.check();
    }

    #[test]
    fn config_max_level_above_1g_is_clamped_to_1g() {
        let cfg = MmuConfig {
            max_level: Level::L512G,
            ..MmuConfig::vm(GpaWidth::Bits48)
        };
        let fx = Fx::<Ept>::with(cfg);
        assert_eq!(fx.mmu.config().max_level, Level::L1G);
    }

    #[test]
    fn shared_refault_with_same_mapping_is_spurious_without_tlb_flush() {
        let mut fx = Fx::<Ept>::vm();
        let f = shared(0x77, 0x88, Level::L4K);
        assert_eq!(fx.ok(f), FaultOutcome::Mapped(Level::L4K));
        fx.topup();
        let before = (fx.mmu.env().counts(), fx.mmu.stats(), fx.c.holdings());
        assert_eq!(fx.map(f), Ok(FaultOutcome::Spurious));
        assert_eq!(
            (fx.mmu.env().counts(), fx.mmu.stats(), fx.c.holdings()),
            before
        );
    }

    #[test]
    fn mirror_refault_with_same_pfn_is_spurious_without_hook_calls() {
        let mut fx = Fx::<Ept>::td();
        let f = private(0x77, 0x88, Level::L2M);
        fx.ok(f);
        let calls = fx.mmu.external().calls();
        assert_eq!(fx.ok(f), FaultOutcome::Spurious);
        assert_eq!(fx.mmu.external().calls(), calls);
        assert_eq!(fx.leaves(RootKind::Mirror), lm(&[(0x77, 1, 0x88)]));
    }

    #[test]
    fn shared_refault_with_new_pfn_replaces_the_leaf_and_flushes() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(0x77, 0x88, Level::L4K));
        let flushes = fx.mmu.env().counts().tlb_flushes;
        assert_eq!(
            fx.ok(shared(0x77, 0x99, Level::L4K)),
            FaultOutcome::Mapped(Level::L4K)
        );
        assert_eq!(fx.mmu.env().counts().tlb_flushes, flushes + 1);
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(0x77, 1, 0x99)]));
        assert_eq!(fx.mmu.stats().shared_leaves, [1, 0, 0]);
        fx.check();
    }

    #[test]
    fn shared_2m_fault_over_4k_table_replaces_it_and_parks_the_old_subtree_until_write() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P2M + 1, 0x301, Level::L4K));
        fx.ok(shared(P2M + 2, 0x302, Level::L4K));
        // Top up first so a cache refill does not blur the table count.
        fx.topup();
        let tables = fx.mmu.env().counts().tables;
        let flushes = fx.mmu.env().counts().tlb_flushes;
        assert_eq!(
            fx.map(shared(P2M, 0x400, Level::L2M)),
            Ok(FaultOutcome::Mapped(Level::L2M))
        );
        let st = fx.mmu.stats();
        assert_eq!(st.deferred, 1);
        assert_eq!(st.shared_leaves, [0, 1, 0]);
        assert_eq!(fx.mmu.env().counts().tables, tables, "parked, not freed");
        assert_eq!(fx.mmu.env().counts().tlb_flushes, flushes + 1);
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(P2M, 2, 0x400)]));
        fx.check();
        drop(fx.mmu.write());
        assert_eq!(fx.mmu.stats().deferred, 0);
        assert_eq!(fx.mmu.env().counts().tables, tables - 1);
        fx.check();
    }

    #[test]
    fn shared_1g_fault_over_table_tree_parks_every_table_below() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P1G + 1, 0x301, Level::L4K));
        fx.ok(shared(P1G + P2M, 0x302, Level::L4K));
        fx.ok(shared(P1G + 2 * P2M, 0x0, Level::L2M));
        assert_eq!(
            fx.ok(shared(P1G, 5 * P1G, Level::L1G)),
            FaultOutcome::Mapped(Level::L1G)
        );
        // The 2M table and the two 4K tables below it.
        assert_eq!(fx.mmu.stats().deferred, 3);
        assert_eq!(fx.mmu.stats().shared_leaves, [0, 0, 1]);
        fx.check();
        drop(fx.mmu.write());
        assert_eq!(fx.mmu.stats().deferred, 0);
        assert_eq!(fx.mmu.stats().shared_tables, 2);
        fx.check();
    }

    #[test]
    fn shared_4k_fault_under_huge_shared_leaf_splits_it() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P2M, 4 * P2M, Level::L2M));
        let flushes = fx.mmu.env().counts().tlb_flushes;
        assert_eq!(
            fx.ok(shared(P2M + 5, 0x777, Level::L4K)),
            FaultOutcome::Mapped(Level::L4K)
        );
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(P2M + 5, 1, 0x777)]));
        assert_eq!(fx.mmu.stats().shared_leaves, [1, 0, 0]);
        assert_eq!(fx.mmu.env().counts().tlb_flushes, flushes + 1);
        assert_eq!(fx.tables(RootKind::Shared).len(), 4);
        fx.check();
    }

    #[test]
    fn mirror_2m_fault_over_existing_mirror_table_maps_at_4k() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P2M + 1, 0x401, Level::L4K));
        fx.log_on();
        assert_eq!(
            fx.ok(private(P2M, 0x400, Level::L2M)),
            FaultOutcome::Mapped(Level::L4K)
        );
        assert_eq!(
            fx.log(),
            vec![HookCall::Set(Gfn::new(P2M), Level::L4K, Pfn::new(0x400))]
        );
        assert_eq!(
            fx.leaves(RootKind::Mirror),
            lm(&[(P2M, 1, 0x400), (P2M + 1, 1, 0x401)])
        );
        fx.check();
    }

    #[test]
    fn mirror_fault_with_different_pfn_is_conflict_and_keeps_the_old_leaf() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x33, 0x44, Level::L4K));
        let calls = fx.mmu.external().calls();
        assert_eq!(
            fx.fault(private(0x33, 0x45, Level::L4K)),
            Err(MmuError::Conflict)
        );
        assert_eq!(fx.mmu.external().calls(), calls);
        assert_eq!(fx.leaves(RootKind::Mirror), lm(&[(0x33, 1, 0x44)]));
        fx.check();
    }

    #[test]
    fn mirror_4k_fault_inside_huge_mirror_leaf_is_spurious_only_for_the_matching_pfn() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P2M, 8 * P2M, Level::L2M));
        assert_eq!(
            fx.ok(private(P2M + 9, 8 * P2M + 9, Level::L4K)),
            FaultOutcome::Spurious
        );
        assert_eq!(
            fx.fault(private(P2M + 9, 8 * P2M + 10, Level::L4K)),
            Err(MmuError::Conflict)
        );
        assert_eq!(fx.leaves(RootKind::Mirror), lm(&[(P2M, 2, 8 * P2M)]));
        fx.check();
    }

    #[test]
    fn gfn_at_or_above_gfn_limit_is_out_of_range() {
        let mut td = Fx::<Ept>::td();
        let limit = td.mmu.config().gfn_limit();
        assert_eq!(limit, SB48);
        for kind in [GfnKind::Private, GfnKind::Shared] {
            assert_eq!(
                td.fault(fault_of(kind, limit, 1, Level::L4K)),
                Err(MmuError::GfnOutOfRange)
            );
            assert_eq!(
                td.fault(fault_of(kind, limit - 1, 1, Level::L4K)),
                Ok(FaultOutcome::Mapped(Level::L4K))
            );
        }
        let mut vm = Fx::<Ept>::vm();
        let limit = vm.mmu.config().gfn_limit();
        assert_eq!(limit, 1 << 36);
        assert_eq!(
            vm.fault(shared(limit, 1, Level::L4K)),
            Err(MmuError::GfnOutOfRange)
        );
        assert_eq!(
            vm.fault(shared(limit - 1, 1, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        td.check();
        vm.check();
    }

    #[test]
    fn private_fault_on_plain_vm_is_no_private_root() {
        let mut fx = Fx::<Ept>::vm();
        assert_eq!(
            fx.fault(private(0x10, 0x10, Level::L4K)),
            Err(MmuError::NoPrivateRoot)
        );
        assert_eq!(fx.tables(RootKind::Shared).len(), 1);
        assert_eq!(fx.mmu.external().calls(), 0);
    }

    #[test]
    fn td_shared_fault_is_indexed_under_the_shared_bit_and_reported_by_memslot_gfn() {
        let mut fx = Fx::<Ept>::td();
        let gfn = 2 * P1G + 3 * P2M + 4;
        fx.ok(shared(gfn, 0x55, Level::L4K));
        let got: Vec<(u8, u64)> = fx
            .tables(RootKind::Shared)
            .iter()
            .map(|t| (t.level, t.gfn))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, SB48),
                (3, SB48),
                (2, SB48 + 2 * P1G),
                (1, SB48 + 2 * P1G + 3 * P2M)
            ]
        );
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(gfn, 1, 0x55)]));
        assert_eq!(
            fx.lookup(GfnKind::Shared, gfn).map(|(_, l)| l.pfn),
            Some(Pfn::new(0x55))
        );
        assert_eq!(fx.lookup(GfnKind::Private, gfn), None);
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        fx.check();
    }

    #[test]
    fn private_and_shared_mappings_of_the_same_gfn_are_independent() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0xa0, Level::L4K));
        fx.ok(shared(0x10, 0xb0, Level::L4K));
        assert_eq!(
            fx.lookup(GfnKind::Private, 0x10).map(|(_, l)| l.pfn),
            Some(Pfn::new(0xa0))
        );
        assert_eq!(
            fx.lookup(GfnKind::Shared, 0x10).map(|(_, l)| l.pfn),
            Some(Pfn::new(0xb0))
        );
        fx.check();
    }
}

mod zap {
    use super::*;
    use mmu::spte::Ept;

    /// A TD with private and shared 4K leaves at 0x200, 0x201 (one 4K table) and 0x400.
    fn populated() -> Fx<Ept> {
        let mut fx = Fx::<Ept>::td();
        for gfn in [P2M, P2M + 1, 2 * P2M] {
            fx.ok(private(gfn, 0x1000 + gfn, Level::L4K));
            fx.ok(shared(gfn, 0x2000 + gfn, Level::L4K));
        }
        fx
    }

    #[test]
    fn mirror_zap_of_part_of_a_4k_table_keeps_the_table_and_the_leaves_outside() {
        let fx = populated();
        let tables = fx.tables(RootKind::Mirror);
        let z = fx.zap(ZapTarget::Mirror, P2M + 1, P2M + 2).unwrap();
        assert_eq!(
            z,
            ZapStats {
                leaves: 1,
                tables: 0,
                blocked: 1,
                flushes: 1,

                splits: 0
            }
        );
        assert_eq!(fx.tables(RootKind::Mirror), tables);
        assert_eq!(
            fx.leaves(RootKind::Mirror),
            lm(&[(P2M, 1, 0x1000 + P2M), (2 * P2M, 1, 0x1000 + 2 * P2M)])
        );
        fx.check();
    }

    #[test]
    fn mirror_zap_covering_a_whole_table_frees_it() {
        let fx = populated();
        let before = fx.mmu.stats();
        let z = fx.zap(ZapTarget::Mirror, P2M, 2 * P2M).unwrap();
        // A leaf round and a round for the 4K table.
        assert_eq!(
            z,
            ZapStats {
                leaves: 2,
                tables: 1,
                blocked: 3,
                flushes: 2,

                splits: 0
            }
        );
        let after = fx.mmu.stats();
        assert_eq!(after.mirror_tables, before.mirror_tables - 1);
        assert_eq!(after.external_spts, before.external_spts - 1);
        assert!(!fx
            .tables(RootKind::Mirror)
            .iter()
            .any(|t| t.level == 1 && t.gfn == P2M));
        assert_eq!(
            fx.leaves(RootKind::Mirror),
            lm(&[(2 * P2M, 1, 0x1000 + 2 * P2M)])
        );
        fx.check();
    }

    #[test]
    fn shared_zap_covering_a_whole_table_frees_it() {
        let fx = populated();
        let before = fx.mmu.stats();
        let z = fx.zap(ZapTarget::Shared, P2M, 2 * P2M).unwrap();
        assert_eq!(
            z,
            ZapStats {
                leaves: 2,
                tables: 1,
                blocked: 0,
                flushes: 0,

                splits: 0
            }
        );
        assert_eq!(fx.mmu.stats().shared_tables, before.shared_tables - 1);
        assert_eq!(
            fx.leaves(RootKind::Shared),
            lm(&[(2 * P2M, 1, 0x2000 + 2 * P2M)])
        );
        fx.check();
    }

    #[test]
    fn huge_leaf_partially_covered_by_the_range_is_zapped_whole() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P2M, 4 * P2M, Level::L2M));
        fx.ok(shared(P2M, 6 * P2M, Level::L2M));
        let z = fx.zap(ZapTarget::Both, P2M + 100, P2M + 101).unwrap();
        assert_eq!(
            z,
            ZapStats {
                leaves: 2,
                tables: 0,
                blocked: 1,
                flushes: 1,

                splits: 0
            }
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        assert!(fx.leaves(RootKind::Shared).is_empty());
        assert_eq!(fx.mmu.stats().mirror_leaves, [0, 0, 0]);
        assert_eq!(fx.mmu.stats().shared_leaves, [0, 0, 0]);
        fx.check();
    }

    #[test]
    fn zap_target_shared_leaves_the_mirror_alone() {
        let fx = populated();
        let mirror = fx.leaves(RootKind::Mirror);
        fx.zap(ZapTarget::Shared, 0, P1G).unwrap();
        assert!(fx.leaves(RootKind::Shared).is_empty());
        assert_eq!(fx.leaves(RootKind::Mirror), mirror);
        fx.check();
    }

    #[test]
    fn zap_target_mirror_leaves_the_shared_root_alone() {
        let fx = populated();
        let shared = fx.leaves(RootKind::Shared);
        fx.zap(ZapTarget::Mirror, 0, P1G).unwrap();
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        assert_eq!(fx.leaves(RootKind::Shared), shared);
        fx.check();
    }

    #[test]
    fn zap_target_mirror_on_a_vm_is_no_private_root() {
        let fx = Fx::<Ept>::vm();
        assert_eq!(
            fx.zap(ZapTarget::Mirror, 0, 10),
            Err(MmuError::NoPrivateRoot)
        );
    }

    #[test]
    fn zap_with_start_after_end_or_end_past_limit_is_out_of_range() {
        let fx = populated();
        let limit = fx.mmu.config().gfn_limit();
        let leaves = (fx.leaves(RootKind::Shared), fx.leaves(RootKind::Mirror));
        assert_eq!(
            fx.zap(ZapTarget::Both, P2M + 1, P2M),
            Err(MmuError::GfnOutOfRange)
        );
        assert_eq!(
            fx.zap(ZapTarget::Both, 0, limit + 1),
            Err(MmuError::GfnOutOfRange)
        );
        assert_eq!(
            (fx.leaves(RootKind::Shared), fx.leaves(RootKind::Mirror)),
            leaves
        );
    }

    #[test]
    fn shared_zap_requests_one_tlb_flush_and_mirror_zap_none() {
        let fx = populated();
        let f0 = fx.mmu.env().counts().tlb_flushes;
        fx.zap(ZapTarget::Mirror, 0, P1G).unwrap();
        assert_eq!(fx.mmu.env().counts().tlb_flushes, f0);
        fx.zap(ZapTarget::Shared, 0, P1G).unwrap();
        assert_eq!(fx.mmu.env().counts().tlb_flushes, f0 + 1);
    }

    #[test]
    fn shared_zap_of_an_unmapped_range_requests_no_tlb_flush() {
        let fx = populated();
        let f0 = fx.mmu.env().counts().tlb_flushes;
        let z = fx.zap(ZapTarget::Shared, 4 * P2M, P1G).unwrap();
        assert_eq!(z, ZapStats::default());
        assert_eq!(fx.mmu.env().counts().tlb_flushes, f0);
    }

    #[test]
    fn zap_both_counts_leaves_tables_blocks_and_flushes_of_both_roots() {
        let fx = populated();
        let z = fx.zap(ZapTarget::Both, 0, P1G).unwrap();
        // Each root: 3 leaves, the 2M-level table covering [0, 1G) and its two 4K tables.
        // Mirror blocks: 3 leaves + 3 tables; rounds: leaves, 4K tables, the 2M-level table.
        assert_eq!(
            z,
            ZapStats {
                leaves: 6,
                tables: 6,
                blocked: 6,
                flushes: 3,

                splits: 0
            }
        );
        assert_eq!(fx.mmu.stats().shared_tables, 2);
        assert_eq!(fx.mmu.stats().mirror_tables, 2);
        fx.check();
    }

    #[test]
    fn zap_of_a_range_with_nothing_mapped_changes_nothing() {
        let fx = populated();
        let before = (fx.mmu.stats(), fx.mmu.env().counts());
        let z = fx.zap(ZapTarget::Both, P1G, 2 * P1G).unwrap();
        assert_eq!(z, ZapStats::default());
        assert_eq!((fx.mmu.stats(), fx.mmu.env().counts()), before);
    }

    #[test]
    fn td_shared_zap_up_to_gfn_limit_zaps_the_whole_shared_root() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(shared(0x1000, 0x55, Level::L4K));
        fx.ok(shared(SB48 - 1, 0x56, Level::L4K));
        let limit = fx.mmu.config().gfn_limit();
        let z = fx.zap(ZapTarget::Shared, 0, limit).unwrap();
        assert_eq!(z.leaves, 2);
        assert!(fx.leaves(RootKind::Shared).is_empty());
        fx.check();
    }

    #[test]
    fn mirror_zap_covering_a_whole_root_entry_frees_every_table_below_the_root() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.ok(shared(0x10, 0x10, Level::L4K));
        let z = fx.zap(ZapTarget::Both, 0, P512G).unwrap();
        assert_eq!(z.tables, 6, "{z:?}");
        // The shared root does it; the mirror must match.
        assert_eq!(fx.mmu.stats().shared_tables, 1);
        assert_eq!(fx.mmu.stats().mirror_tables, 1);
        assert_eq!(fx.mmu.stats().external_spts, 0);
        assert!(fx.mmu.external().entries().is_empty());
        fx.check();
    }

    #[test]
    fn mirror_zap_up_to_gfn_limit_zaps_the_last_private_gfn() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(SB48 - 1, 0x56, Level::L4K));
        let limit = fx.mmu.config().gfn_limit();
        let z = fx.zap(ZapTarget::Mirror, 0, limit).unwrap();
        assert_eq!(z.leaves, 1);
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        fx.check();
    }
}

mod external_pointer {
    use super::*;
    use mmu::spte::Ept;

    fn populated() -> Fx<Ept> {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.ok(private(P1G + P2M, 3 * P2M, Level::L2M));
        fx.ok(private(P512G + 3, 0x10, Level::L4K));
        fx.ok(shared(0x10, 0x10, Level::L4K));
        fx
    }

    #[test]
    fn mirror_root_has_no_external_spt_and_every_other_mirror_table_has_its_own() {
        let fx = populated();
        let tables = fx.tables(RootKind::Mirror);
        assert_eq!(tables.len(), 1 + 3 + 1 + 3);
        assert!(tables[0].is_root);
        assert_eq!(tables[0].ext, None);
        let mut ext: Vec<u64> = tables[1..]
            .iter()
            .map(|t| t.ext.expect("non-root mirror table without external SPT"))
            .collect();
        for &p in &ext {
            assert!(fx.mmu.env().is_allocated(Pfn::new(p)));
            assert!(tables.iter().all(|t| t.table_pfn != p));
        }
        ext.sort_unstable();
        ext.dedup();
        assert_eq!(ext.len(), tables.len() - 1, "external SPTs are shared");
    }

    #[test]
    fn shared_tables_have_no_external_spt() {
        let fx = populated();
        let tables = fx.tables(RootKind::Shared);
        assert_eq!(tables.len(), 4);
        assert!(tables.iter().all(|t| t.ext.is_none()));
    }

    #[test]
    fn link_spt_gets_the_pfn_of_the_tables_external_spt() {
        let mut fx = Fx::<Ept>::td();
        fx.log_on();
        fx.ok(private(0x10, 0x10, Level::L4K));
        let linked: Vec<(u64, u8, u64)> = fx
            .log()
            .iter()
            .filter_map(|c| match *c {
                HookCall::Link(g, l, p) => Some((g.raw(), l.get(), p.raw())),
                _ => None,
            })
            .collect();
        let tables: Vec<(u64, u8, u64)> = fx
            .tables(RootKind::Mirror)
            .iter()
            .filter(|t| !t.is_root)
            .map(|t| (t.gfn, t.level + 1, t.ext.expect("ext")))
            .collect();
        assert_eq!(linked.len(), 3);
        assert_eq!(linked, tables);
    }

    #[test]
    fn zapped_mirror_table_returns_its_external_spt_to_the_env() {
        let fx = populated();
        let ext = fx
            .tables(RootKind::Mirror)
            .iter()
            .find(|t| t.level == 1 && t.gfn == 0)
            .and_then(|t| t.ext)
            .expect("4K table at 0");
        let before = fx.mmu.env().counts().external_spts;
        fx.zap(ZapTarget::Mirror, 0, P2M).unwrap();
        assert_eq!(fx.mmu.env().counts().external_spts, before - 1);
        assert!(!fx.mmu.env().is_allocated(Pfn::new(ext)));
        assert_eq!(fx.mmu.stats().leaked_external_spts, 0);
        fx.check();
    }

    #[test]
    fn external_spt_the_hook_keeps_is_leaked_and_counted_not_freed() {
        let fx = populated();
        let ext = fx
            .tables(RootKind::Mirror)
            .iter()
            .find(|t| t.level == 1 && t.gfn == 0)
            .and_then(|t| t.ext)
            .expect("4K table at 0");
        let before = (fx.mmu.env().counts().external_spts, fx.mmu.stats());
        fx.mmu.external().set_leak_spts(true);
        fx.zap(ZapTarget::Mirror, 0, P2M).unwrap();
        let st = fx.mmu.stats();
        assert_eq!(fx.mmu.env().counts().external_spts, before.0);
        assert!(fx.mmu.env().is_allocated(Pfn::new(ext)));
        assert_eq!(st.leaked_external_spts, 1);
        assert_eq!(st.external_spts, before.1.external_spts - 1);
        assert_eq!(st.mirror_tables, before.1.mirror_tables - 1);
    }
}

mod hooks {
    use super::*;
    use mmu::spte::Ept;

    fn links(fx: &Fx<Ept>) -> Vec<HookCall> {
        fx.tables(RootKind::Mirror)
            .iter()
            .filter(|t| !t.is_root)
            .map(|t| {
                HookCall::Link(
                    Gfn::new(t.gfn),
                    lvl(t.level + 1),
                    Pfn::new(t.ext.expect("ext")),
                )
            })
            .collect()
    }

    fn ext_of(fx: &Fx<Ept>, level: u8, gfn: u64) -> Pfn {
        let t = fx
            .tables(RootKind::Mirror)
            .into_iter()
            .find(|t| t.level == level && t.gfn == gfn)
            .expect("table");
        Pfn::new(t.ext.expect("ext"))
    }

    #[test]
    fn private_4k_fault_links_tables_top_down_then_sets_leaf() {
        let mut fx = Fx::<Ept>::td();
        fx.log_on();
        let (a, b, c) = (
            3 * P512G,
            3 * P512G + 5 * P1G,
            3 * P512G + 5 * P1G + 7 * P2M,
        );
        let gfn = c + 9;
        fx.ok(private(gfn, 0x777, Level::L4K));
        assert_eq!(
            fx.log(),
            vec![
                HookCall::Link(Gfn::new(a), Level::L512G, ext_of(&fx, 3, a)),
                HookCall::Link(Gfn::new(b), Level::L1G, ext_of(&fx, 2, b)),
                HookCall::Link(Gfn::new(c), Level::L2M, ext_of(&fx, 1, c)),
                HookCall::Set(Gfn::new(gfn), Level::L4K, Pfn::new(0x777)),
            ]
        );
        assert_eq!(links(&fx).len(), 3);
    }

    #[test]
    fn private_fault_into_existing_tables_only_sets_the_leaf() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.log_on();
        fx.ok(private(0x11, 0x20, Level::L4K));
        assert_eq!(
            fx.log(),
            vec![HookCall::Set(Gfn::new(0x11), Level::L4K, Pfn::new(0x20))]
        );
    }

    #[test]
    fn private_huge_fault_sets_the_leaf_at_its_level_with_the_aligned_pfn() {
        let mut fx = Fx::<Ept>::td();
        fx.log_on();
        fx.ok(private(P1G + 3, 5 * P1G + 3, Level::L1G));
        let log = fx.log();
        assert_eq!(log.len(), 2);
        assert_eq!(
            log[1],
            HookCall::Set(Gfn::new(P1G), Level::L1G, Pfn::new(5 * P1G))
        );
    }

    #[test]
    fn zap_runs_a_leaf_round_then_table_rounds_deepest_first_each_block_flush_remove() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P2M, 0xa0, Level::L4K));
        fx.ok(private(P2M + 1, 0xa1, Level::L4K));
        let l2 = ext_of(&fx, 2, 0);
        let l1 = ext_of(&fx, 1, P2M);
        fx.log_on();
        let z = fx.zap(ZapTarget::Mirror, 0, P1G).unwrap();
        let g = Gfn::new;
        assert_eq!(
            fx.log(),
            vec![
                // Leaves.
                HookCall::Block(g(P2M), Level::L4K, true),
                HookCall::Block(g(P2M + 1), Level::L4K, true),
                HookCall::Flush,
                HookCall::Remove(g(P2M), Level::L4K, Pfn::new(0xa0)),
                HookCall::Remove(g(P2M + 1), Level::L4K, Pfn::new(0xa1)),
                // 4K tables (entries at the 2M level).
                HookCall::Block(g(P2M), Level::L2M, false),
                HookCall::Flush,
                HookCall::Free(g(P2M), Level::L2M, l1),
                // 2M-level tables (entries at the 1G level).
                HookCall::Block(g(0), Level::L1G, false),
                HookCall::Flush,
                HookCall::Free(g(0), Level::L1G, l2),
            ]
        );
        assert_eq!(
            z,
            ZapStats {
                leaves: 2,
                tables: 2,
                blocked: 4,
                flushes: 3,

                splits: 0
            }
        );
        fx.check();
    }

    #[test]
    fn leaf_round_blocks_every_leaf_of_the_range_before_its_single_flush() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(1, 1, Level::L4K));
        fx.ok(private(P2M, 4 * P2M, Level::L2M));
        fx.ok(private(P1G, P1G, Level::L1G));
        fx.log_on();
        // A range that frees no table: only the leaf round runs.
        fx.zap(ZapTarget::Mirror, 1, 2 * P1G).unwrap();
        let g = Gfn::new;
        assert_eq!(
            fx.log(),
            vec![
                HookCall::Block(g(1), Level::L4K, true),
                HookCall::Block(g(P2M), Level::L2M, true),
                HookCall::Block(g(P1G), Level::L1G, true),
                HookCall::Flush,
                HookCall::Remove(g(1), Level::L4K, Pfn::new(1)),
                HookCall::Remove(g(P2M), Level::L2M, Pfn::new(4 * P2M)),
                HookCall::Remove(g(P1G), Level::L1G, Pfn::new(P1G)),
            ]
        );
        fx.check();
    }

    #[test]
    fn zap_of_a_range_with_nothing_mapped_calls_no_hooks() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        let calls = fx.mmu.external().calls();
        let z = fx.zap(ZapTarget::Mirror, 0x11, P2M).unwrap();
        assert_eq!(z, ZapStats::default());
        assert_eq!(fx.mmu.external().calls(), calls);
    }

    #[test]
    fn teardown_calls_only_remove_and_free_post_order() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(P2M + 1, 0xa1, Level::L4K));
        fx.ok(private(2 * P2M, 4 * P2M, Level::L2M));
        let (l3, l2, l1) = (ext_of(&fx, 3, 0), ext_of(&fx, 2, 0), ext_of(&fx, 1, P2M));
        fx.log_on();
        let counts = fx.mmu.external().counts();
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        fx.mmu.teardown();
        let g = Gfn::new;
        assert_eq!(
            fx.log(),
            vec![
                HookCall::Remove(g(P2M + 1), Level::L4K, Pfn::new(0xa1)),
                HookCall::Free(g(P2M), Level::L2M, l1),
                HookCall::Remove(g(2 * P2M), Level::L2M, Pfn::new(4 * P2M)),
                HookCall::Free(g(0), Level::L1G, l2),
                HookCall::Free(g(0), Level::L512G, l3),
            ]
        );
        let after = fx.mmu.external().counts();
        assert_eq!((after.block, after.flush), (counts.block, counts.flush));
        assert!(fx.mmu.external().violations().is_empty());
    }

    #[test]
    fn hooks_are_never_called_for_the_shared_root() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(shared(0x10, 0x10, Level::L4K));
        fx.ok(shared(P2M, P2M, Level::L2M));
        fx.ok(shared(P2M + 3, 0x33, Level::L4K)); // split
        fx.ok(shared(2 * P2M, 2 * P2M, Level::L4K));
        fx.ok(shared(2 * P2M, 2 * P2M, Level::L2M)); // table replaced
        fx.zap(ZapTarget::Shared, 0, P1G).unwrap();
        assert_eq!(fx.mmu.external().calls(), 0);
        assert_eq!(fx.mmu.external().counts().total(), 0);
        fx.check();
    }
}

mod external_errors {
    use super::*;
    use mmu::external::ExternalError;
    use mmu::spte::Ept;
    use testkit::Inject;

    fn inject_next(fx: &Fx<Ept>, offset: u64, err: ExternalError) {
        let at = fx.mmu.external().calls() + offset;
        fx.mmu.external().inject(Inject::At(at, err));
    }

    #[test]
    fn busy_link_returns_retry_with_nothing_changed_and_caches_intact() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        let holdings = fx.c.holdings();
        let env = fx.mmu.env().counts();
        let st = fx.mmu.stats();
        inject_next(&fx, 0, ExternalError::Busy);
        assert_eq!(
            fx.map(private(0x10, 0x10, Level::L4K)),
            Ok(FaultOutcome::Retry)
        );
        assert_eq!(fx.c.holdings(), holdings);
        assert_eq!(fx.mmu.env().counts(), env);
        assert_eq!(fx.mmu.stats(), st);
        assert_eq!(fx.tables(RootKind::Mirror).len(), 1);
        assert!(fx.mmu.external().entries().is_empty());
        assert!(!fx.mmu.is_bugged());
        fx.check();
        assert_eq!(
            fx.map(private(0x10, 0x10, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
    }

    #[test]
    fn busy_set_returns_retry_with_no_leaf_and_caches_intact() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.topup();
        let holdings = fx.c.holdings();
        let entries = fx.mmu.external().entries();
        let st = fx.mmu.stats();
        inject_next(&fx, 0, ExternalError::Busy);
        assert_eq!(
            fx.map(private(0x11, 0x11, Level::L4K)),
            Ok(FaultOutcome::Retry)
        );
        assert_eq!(fx.c.holdings(), holdings);
        assert_eq!(fx.mmu.external().entries(), entries);
        assert_eq!(fx.mmu.stats(), st);
        assert_eq!(fx.lookup(GfnKind::Private, 0x11), None);
        fx.check();
    }

    #[test]
    fn fatal_hook_error_marks_the_vm_bugged_and_every_later_call_fails_bugged() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        inject_next(&fx, 0, ExternalError::Fatal);
        assert_eq!(
            fx.fault(private(0x11, 0x11, Level::L4K)),
            Err(MmuError::Bugged)
        );
        assert!(fx.mmu.is_bugged());
        assert_eq!(
            fx.fault(shared(0x11, 0x11, Level::L4K)),
            Err(MmuError::Bugged)
        );
        assert_eq!(
            fx.fault(private(0x10, 0x10, Level::L4K)),
            Err(MmuError::Bugged)
        );
        assert_eq!(fx.zap(ZapTarget::Both, 0, P1G), Err(MmuError::Bugged));
        assert_eq!(fx.zap(ZapTarget::Shared, 0, P1G), Err(MmuError::Bugged));
        assert_eq!(fx.leaves(RootKind::Mirror), lm(&[(0x10, 1, 0x10)]));
        fx.check();
    }

    #[test]
    fn bugged_vm_still_allows_lookups_and_walks() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x20, Level::L4K));
        fx.ok(shared(0x10, 0x30, Level::L4K));
        fx.mmu.mark_bugged();
        assert_eq!(
            fx.lookup(GfnKind::Private, 0x10).map(|(_, l)| l.pfn),
            Some(Pfn::new(0x20))
        );
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(0x10, 1, 0x30)]));
        assert_eq!(fx.tables(RootKind::Mirror).len(), 4);
        let g = fx.mmu.read();
        let it = fx
            .mmu
            .walk(&g, RootKind::Mirror, Gfn::new(0), Gfn::new(1))
            .expect("walk on a bugged VM");
        assert!(it.valid());
    }

    #[test]
    fn fatal_link_puts_the_unused_table_back_into_the_caches() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        let holdings = fx.c.holdings();
        inject_next(&fx, 0, ExternalError::Fatal);
        assert_eq!(
            fx.map(private(0x10, 0x10, Level::L4K)),
            Err(MmuError::Bugged)
        );
        assert_eq!(fx.c.holdings(), holdings);
        assert_eq!(fx.mmu.stats().mirror_tables, 1);
    }

    /// Private leaves at 0x200, 0x201 (one 4K table) and 0x400 (another), zapped over
    /// [0x200, 0x600). Hook calls, counted from the zap's first:
    /// leaf round: block 0x200 (0), 0x201 (1), 0x400 (2), flush (3), remove 0x200 (4),
    /// 0x201 (5), 0x400 (6); 4K-table round: block table 0x200 (7), 0x400 (8), flush (9),
    /// free 0x200 (10), 0x400 (11). Nothing at the 1G level lies wholly inside.
    fn populated() -> Fx<Ept> {
        let mut fx = Fx::<Ept>::td();
        for gfn in [P2M, P2M + 1, 2 * P2M] {
            fx.ok(private(gfn, 0x1000 + gfn, Level::L4K));
        }
        fx
    }

    fn all_leaves() -> LeafMap {
        lm(&[
            (P2M, 1, 0x1000 + P2M),
            (P2M + 1, 1, 0x1000 + P2M + 1),
            (2 * P2M, 1, 0x1000 + 2 * P2M),
        ])
    }

    fn ext_keys(fx: &Fx<Ept>) -> Vec<(u8, u64)> {
        fx.mmu.external().entries().into_keys().collect()
    }

    #[test]
    fn busy_block_fails_the_zap_with_everything_still_mapped_and_a_rezap_succeeds() {
        let fx = populated();
        let keys = ext_keys(&fx);
        inject_next(&fx, 1, ExternalError::Busy);
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        assert_eq!(fx.leaves(RootKind::Mirror), all_leaves());
        assert_eq!(ext_keys(&fx), keys);
        assert_eq!(fx.mmu.external().counts().flush, 0);
        assert!(!fx.mmu.is_bugged());
        fx.check();
        // The leaf blocked before the failure is not blocked again.
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Ok(ZapStats {
                leaves: 3,
                tables: 2,
                blocked: 4,
                flushes: 2,

                splits: 0
            })
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        fx.check();
    }

    #[test]
    fn busy_flush_fails_the_zap_with_everything_still_mapped_and_a_rezap_succeeds() {
        let fx = populated();
        let keys = ext_keys(&fx);
        inject_next(&fx, 3, ExternalError::Busy);
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        assert_eq!(fx.mmu.external().counts().block, 3);
        assert_eq!(fx.mmu.external().counts().remove, 0);
        assert_eq!(fx.leaves(RootKind::Mirror), all_leaves());
        assert_eq!(ext_keys(&fx), keys);
        fx.check();
        // Only the two tables still need blocking.
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Ok(ZapStats {
                leaves: 3,
                tables: 2,
                blocked: 2,
                flushes: 2,

                splits: 0
            })
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        fx.check();
    }

    #[test]
    fn busy_remove_keeps_the_unremoved_leaves_in_both_tables_and_a_rezap_finishes() {
        let fx = populated();
        inject_next(&fx, 5, ExternalError::Busy);
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        let left = lm(&[
            (P2M + 1, 1, 0x1000 + P2M + 1),
            (2 * P2M, 1, 0x1000 + 2 * P2M),
        ]);
        assert_eq!(fx.leaves(RootKind::Mirror), left);
        let ext = fx.mmu.external().entries();
        assert!(!ext.contains_key(&(1, P2M)));
        assert!(ext.contains_key(&(1, P2M + 1)));
        assert!(ext.contains_key(&(1, 2 * P2M)));
        assert_eq!(fx.mmu.stats().mirror_leaves, [2, 0, 0]);
        fx.check();
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Ok(ZapStats {
                leaves: 2,
                tables: 2,
                blocked: 2,
                flushes: 2,

                splits: 0
            })
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        fx.check();
    }

    #[test]
    fn busy_free_spt_keeps_the_emptied_table_linked_and_a_rezap_frees_it() {
        let fx = populated();
        inject_next(&fx, 10, ExternalError::Busy);
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        let tables = fx.tables(RootKind::Mirror);
        assert!(tables.iter().any(|t| t.level == 1 && t.gfn == P2M));
        assert!(tables.iter().any(|t| t.level == 1 && t.gfn == 2 * P2M));
        let ext = fx.mmu.external().entries();
        assert!(ext.contains_key(&(2, P2M)) && ext.contains_key(&(2, 2 * P2M)));
        fx.check();
        // No leaf round (nothing to remove, no flush); the table round blocks nothing new.
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Ok(ZapStats {
                leaves: 0,
                tables: 2,
                blocked: 0,
                flushes: 1,

                splits: 0
            })
        );
        assert_eq!(fx.mmu.stats().mirror_tables, 3);
        fx.check();
    }

    #[test]
    fn leaves_blocked_by_an_unfinished_zap_are_marked_in_the_mirror_and_faults_on_them_retry() {
        let mut fx = populated();
        inject_next(&fx, 3, ExternalError::Busy); // the leaf round's flush
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        let leaf = fx.raw_entry(RootKind::Mirror, Level::L4K, P2M);
        let table = fx.raw_entry(RootKind::Mirror, Level::L2M, P2M);
        assert!(mmu::spte::is_external_blocked(leaf), "{leaf:#x}");
        assert!(!mmu::spte::is_external_blocked(table), "{table:#x}");
        fx.check();
        fx.topup();
        let calls = fx.mmu.external().calls();
        assert_eq!(
            fx.map(private(P2M, 0x1000 + P2M, Level::L4K)),
            Ok(FaultOutcome::Retry)
        );
        assert_eq!(fx.mmu.external().calls(), calls);
        // A free GFN next to it, in the table that is not blocked, still maps.
        assert_eq!(
            fx.map(private(P2M + 7, 0x7, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
        fx.zap(ZapTarget::Mirror, P2M, 3 * P2M).unwrap();
        assert_eq!(
            fx.fault(private(P2M, 0x1000 + P2M, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
    }

    #[test]
    fn tables_blocked_by_an_unfinished_zap_make_faults_below_them_retry() {
        let mut fx = populated();
        inject_next(&fx, 9, ExternalError::Busy); // the 4K-table round's flush
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::ExternalBusy)
        );
        assert!(fx.leaves(RootKind::Mirror).is_empty());
        let table = fx.raw_entry(RootKind::Mirror, Level::L2M, P2M);
        assert!(mmu::spte::is_external_blocked(table), "{table:#x}");
        fx.check();
        fx.topup();
        let calls = fx.mmu.external().calls();
        assert_eq!(
            fx.map(private(P2M + 7, 0x7, Level::L4K)),
            Ok(FaultOutcome::Retry)
        );
        assert_eq!(fx.mmu.external().calls(), calls);
        // Outside the blocked tables faults go on.
        assert_eq!(
            fx.map(private(3 * P2M, 0x7, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
        fx.zap(ZapTarget::Mirror, P2M, 3 * P2M).unwrap();
        assert_eq!(
            fx.fault(private(P2M + 7, 0x7, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
    }

    #[test]
    fn fatal_hook_error_during_zap_marks_the_vm_bugged() {
        let fx = populated();
        inject_next(&fx, 0, ExternalError::Fatal);
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::Bugged)
        );
        assert!(fx.mmu.is_bugged());
        assert_eq!(
            fx.zap(ZapTarget::Mirror, P2M, 3 * P2M),
            Err(MmuError::Bugged)
        );
    }
}

mod caches {
    use super::*;
    use mmu::cache::CacheHoldings;
    use mmu::spte::Ept;

    fn full(n: usize, ext: usize) -> CacheHoldings {
        CacheHoldings {
            headers: n,
            tables: n,
            external_spts: ext,
        }
    }

    #[test]
    fn topup_fills_tables_per_fault_with_external_spts_only_for_tds() {
        let mut td = Fx::<Ept>::td();
        let mut vm = Fx::<Ept>::vm();
        assert_eq!(td.mmu.config().tables_per_fault(), 3);
        td.topup();
        vm.topup();
        assert_eq!(td.c.holdings(), full(3, 3));
        assert_eq!(vm.c.holdings(), full(3, 0));
        td.check();
        vm.check();
    }

    #[test]
    fn topup_of_full_caches_allocates_nothing() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        let attempts = fx.mmu.env().alloc_attempts();
        fx.topup();
        assert_eq!(fx.mmu.env().alloc_attempts(), attempts);
        assert_eq!(fx.c.holdings(), full(3, 3));
    }

    #[test]
    fn private_fault_consumes_exactly_the_tables_it_links() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        fx.map(private(0x10, 0x10, Level::L4K)).unwrap();
        assert_eq!(fx.c.holdings(), full(0, 0));
        fx.topup();
        fx.map(private(P1G, 0x10, Level::L4K)).unwrap();
        // A new 1G region under the existing 512G table: a 2M-level and a 4K-level table.
        assert_eq!(fx.c.holdings(), full(1, 1));
        fx.check();
    }

    #[test]
    fn shared_fault_on_a_td_consumes_no_external_spts() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        fx.map(shared(0x10, 0x10, Level::L4K)).unwrap();
        assert_eq!(fx.c.holdings(), full(0, 3));
        fx.check();
    }

    #[test]
    fn map_without_topup_is_no_memory_and_changes_nothing() {
        for kind in [GfnKind::Private, GfnKind::Shared] {
            let mut fx = Fx::<Ept>::td();
            let env = fx.mmu.env().counts();
            let st = fx.mmu.stats();
            assert_eq!(
                fx.map(fault_of(kind, 0x10, 0x10, Level::L4K)),
                Err(MmuError::NoMemory)
            );
            assert_eq!(fx.mmu.env().counts(), env);
            assert_eq!(fx.mmu.stats(), st);
            assert_eq!(fx.mmu.external().calls(), 0);
            assert!(!fx.mmu.is_bugged());
            fx.check();
        }
    }

    #[test]
    fn shared_split_without_topup_is_no_memory_and_keeps_the_huge_leaf() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P2M, 4 * P2M, Level::L2M));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        assert_eq!(
            fx.map(shared(P2M + 5, 0x777, Level::L4K)),
            Err(MmuError::NoMemory)
        );
        assert_eq!(fx.leaves(RootKind::Shared), lm(&[(P2M, 2, 4 * P2M)]));
        fx.check();
    }

    #[test]
    fn allocation_failure_during_topup_is_no_memory_and_a_later_topup_succeeds() {
        let mut fx = Fx::<Ept>::td();
        // Three headers and one table succeed, the second table fails.
        fx.mmu.env().fail_alloc_after(4);
        assert_eq!(fx.mmu.topup_vcpu_caches(&mut fx.c), Err(MmuError::NoMemory));
        assert_eq!(
            fx.c.holdings(),
            CacheHoldings {
                headers: 3,
                tables: 1,
                external_spts: 0
            }
        );
        assert_eq!(fx.mmu.env().counts().injected_failures, 1);
        fx.check();
        fx.topup();
        assert_eq!(fx.c.holdings(), full(3, 3));
        assert_eq!(
            fx.map(private(0x10, 0x10, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        fx.check();
    }

    #[test]
    fn free_vcpu_caches_returns_every_cached_object_to_the_env() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.topup();
        assert_eq!(fx.c.holdings(), full(3, 3));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        assert_eq!(fx.c.holdings(), full(0, 0));
        let st = fx.mmu.stats();
        let env = fx.mmu.env().counts();
        assert_eq!(env.tables, st.shared_tables + st.mirror_tables);
        assert_eq!(env.external_spts, st.external_spts);
        assert_eq!(env.headers, st.headers);
        fx.check();
    }
}

mod teardown {
    use super::*;
    use mmu::spte::{Ept, Npt};
    use mmu::stats::StatsSnapshot;

    fn assert_all_freed<F: PagingFormat>(mut fx: Fx<F>) {
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        fx.mmu.teardown();
        let env = fx.mmu.env().counts();
        assert_eq!((env.tables, env.external_spts, env.headers), (0, 0, 0));
        let st = fx.mmu.stats();
        assert_eq!(
            st.frames_mapped, st.frames_zapped,
            "a frame mapped was never unmapped"
        );
        let live = StatsSnapshot {
            frames_mapped: [0; 2],
            frames_zapped: [0; 2],
            ..st
        };
        assert_eq!(live, StatsSnapshot::default());
        assert!(fx.mmu.external().entries().is_empty());
        assert!(fx.mmu.external().violations().is_empty());
        assert!(!fx.mmu.is_bugged());
    }

    #[test]
    fn teardown_of_a_48_bit_td_frees_everything() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.ok(private(P1G, P1G, Level::L1G));
        fx.ok(private(P512G + P2M, P2M, Level::L2M));
        fx.ok(shared(0x10, 0x10, Level::L4K));
        fx.ok(shared(P2M, P2M, Level::L2M));
        fx.topup();
        assert_all_freed(fx);
    }

    #[test]
    fn teardown_of_a_52_bit_td_with_5_level_roots_frees_everything() {
        let cfg = MmuConfig::td(GpaWidth::Bits52);
        assert_eq!(cfg.root_level(), Level::L256T);
        assert_eq!(cfg.tables_per_fault(), 4);
        let mut fx = Fx::<Npt>::with(cfg);
        let limit = fx.mmu.config().gfn_limit();
        assert_eq!(limit, 1 << 39);
        fx.topup();
        assert_eq!(fx.c.holdings().tables, 4);
        assert_eq!(fx.c.holdings().external_spts, 4);
        assert_eq!(
            fx.map(private(limit - P2M, P2M, Level::L2M)),
            Ok(FaultOutcome::Mapped(Level::L2M))
        );
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.ok(shared(limit - 1, 0x10, Level::L4K));
        assert_eq!(fx.tables(RootKind::Mirror).len(), 1 + 3 + 4);
        fx.check();
        assert_all_freed(fx);
    }

    #[test]
    fn teardown_frees_pages_parked_by_shared_lock_walkers() {
        let mut fx = Fx::<Ept>::vm();
        fx.ok(shared(P2M + 1, 0x10, Level::L4K));
        fx.ok(shared(P2M, P2M, Level::L2M));
        assert_eq!(fx.mmu.stats().deferred, 1);
        assert_all_freed(fx);
    }

    #[test]
    fn teardown_after_zaps_frees_everything() {
        let mut fx = Fx::<Ept>::td();
        for gfn in [0x10, P2M, P1G] {
            fx.ok(private(gfn, gfn, Level::L4K));
            fx.ok(shared(gfn, gfn, Level::L4K));
        }
        fx.zap(ZapTarget::Both, 0, P2M).unwrap();
        assert_all_freed(fx);
    }

    #[test]
    fn teardown_is_idempotent() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        fx.mmu.teardown();
        let calls = fx.mmu.external().calls();
        fx.mmu.teardown();
        assert_eq!(fx.mmu.external().calls(), calls);
        assert_eq!(fx.mmu.env().counts().pages(), 0);
    }

    #[test]
    fn teardown_retries_a_busy_hook_and_frees_everything() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        let at = fx.mmu.external().calls();
        fx.mmu
            .external()
            .inject(testkit::Inject::At(at, mmu::external::ExternalError::Busy));
        fx.mmu.teardown();
        // One remove (failed once, then retried) and three frees.
        assert_eq!(fx.mmu.external().calls() - at, 5);
        let st = fx.mmu.stats();
        assert_eq!((st.leaked_private_pages, st.leaked_external_spts), (0, 0));
        assert_eq!(fx.mmu.env().counts().pages(), 0);
        assert!(fx.mmu.external().entries().is_empty());
    }

    #[test]
    fn teardown_leaks_and_counts_pages_whose_hook_stays_busy() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        let at = fx.mmu.external().calls();
        fx.mmu.external().inject(testkit::Inject::RandomBusy {
            per_million: 1_000_000,
            seed: 1,
        });
        fx.mmu.teardown();
        // One leaf and three tables, each tried TEARDOWN_BUSY_RETRIES times.
        assert_eq!(
            fx.mmu.external().calls() - at,
            4 * mmu::tdp::TEARDOWN_BUSY_RETRIES as u64
        );
        let st = fx.mmu.stats();
        assert_eq!((st.leaked_private_pages, st.leaked_external_spts), (1, 3));
        assert_eq!((st.mirror_tables, st.external_spts, st.headers), (0, 0, 0));
        assert_eq!(st.mirror_leaves, [0, 0, 0]);
        let env = fx.mmu.env().counts();
        assert_eq!((env.tables, env.external_spts, env.headers), (0, 3, 0));
        assert!(!fx.mmu.is_bugged());
    }

    #[test]
    fn teardown_counts_external_spts_the_hook_keeps_as_leaked() {
        let mut fx = Fx::<Ept>::td();
        fx.ok(private(0x10, 0x10, Level::L4K));
        fx.mmu.free_vcpu_caches(&mut fx.c);
        fx.mmu.external().set_teardown(true);
        fx.mmu.external().set_leak_spts(true);
        fx.mmu.teardown();
        let st = fx.mmu.stats();
        assert_eq!(st.leaked_external_spts, 3);
        assert_eq!(st.external_spts, 0);
        assert_eq!(st.mirror_tables, 0);
        let env = fx.mmu.env().counts();
        assert_eq!((env.tables, env.external_spts, env.headers), (0, 3, 0));
    }
}

mod locking {
    use super::*;
    use mmu::spte::Ept;

    #[test]
    fn shared_guard_of_another_mmu_is_wrong_lock() {
        let mut a = Fx::<Ept>::td();
        let b = Fx::<Ept>::td();
        a.topup();
        let g = b.mmu.read();
        assert_eq!(
            a.mmu.map(&g, &mut a.c, &private(0x10, 0x10, Level::L4K)),
            Err(MmuError::WrongLock)
        );
        assert_eq!(
            a.mmu.lookup(&g, GfnKind::Private, Gfn::new(0x10)),
            Err(MmuError::WrongLock)
        );
        assert_eq!(
            a.mmu.for_each_leaf(&g, RootKind::Shared, |_, _, _| {}),
            Err(MmuError::WrongLock)
        );
        assert_eq!(
            a.mmu.for_each_table(&g, RootKind::Mirror, |_| {}),
            Err(MmuError::WrongLock)
        );
        drop(g);
        assert_eq!(a.c.holdings().tables, 3);
        assert_eq!(a.mmu.stats().mirror_leaves, [0, 0, 0]);
    }

    #[test]
    fn walk_with_a_guard_of_another_mmu_is_wrong_lock() {
        let a = Fx::<Ept>::td();
        let b = Fx::<Ept>::td();
        let g = b.mmu.read();
        let r = a
            .mmu
            .walk(&g, RootKind::Shared, Gfn::new(SB48), Gfn::new(SB48 + 1))
            .err();
        assert_eq!(r, Some(MmuError::WrongLock));
    }

    #[test]
    fn exclusive_guard_of_another_mmu_is_wrong_lock_for_zap() {
        let mut a = Fx::<Ept>::td();
        a.ok(private(0x10, 0x10, Level::L4K));
        let b = Fx::<Ept>::td();
        let g = b.mmu.write();
        assert_eq!(
            a.mmu
                .zap_range(&g, ZapTarget::Both, Gfn::new(0), Gfn::new(P1G)),
            Err(MmuError::WrongLock)
        );
        drop(g);
        assert_eq!(a.leaves(RootKind::Mirror), lm(&[(0x10, 1, 0x10)]));
        assert_eq!(a.mmu.external().counts().block, 0);
    }

    #[test]
    fn map_accepts_the_exclusive_guard_of_its_own_mmu() {
        let mut fx = Fx::<Ept>::td();
        fx.topup();
        let g = fx.mmu.write();
        assert_eq!(
            fx.mmu.map(&g, &mut fx.c, &private(0x10, 0x10, Level::L4K)),
            Ok(FaultOutcome::Mapped(Level::L4K))
        );
        drop(g);
        fx.check();
    }

    #[test]
    fn wrong_lock_is_reported_before_bugged() {
        let a = Fx::<Ept>::td();
        let b = Fx::<Ept>::td();
        a.mmu.mark_bugged();
        let (s, e) = (Gfn::new(0), Gfn::new(1));
        let g = b.mmu.write();
        assert_eq!(
            a.mmu.zap_range(&g, ZapTarget::Shared, s, e),
            Err(MmuError::WrongLock)
        );
        drop(g);
        let g = a.mmu.write();
        assert_eq!(
            a.mmu.zap_range(&g, ZapTarget::Shared, s, e),
            Err(MmuError::Bugged)
        );
    }
}

/// The CPU walks the shared root: a table a zap unlinks may still be cached by a vCPU in guest
/// mode until the zap's remote TLB flush, so it must not go back to the allocator before it.
mod shared_tables_outlive_the_flush {
    use super::*;
    use mmu::spte::Npt;

    #[test]
    fn zapped_shared_table_is_freed_after_the_flush() {
        let mut fx = Fx::<Npt>::vm();
        // Two 4 KiB leaves under one last-level table of the 2 MiB region at GFN 0x200.
        fx.ok(shared(0x200, 0x1000, Level::L4K));
        fx.ok(shared(0x201, 0x1001, Level::L4K));
        let before = fx.mmu.env().counts();
        // Zap the whole 2 MiB region: the table goes with its leaves.
        fx.zap(ZapTarget::Shared, 0x200, 0x400).expect("zap");
        let after = fx.mmu.env().counts();
        assert!(after.tables < before.tables, "the emptied table was freed");
        assert!(after.tlb_flushes > before.tlb_flushes, "the zap flushed");
        assert!(
            fx.mmu.env().flushes_at_last_table_free() > before.tlb_flushes,
            "the table was freed before the zap's TLB flush"
        );
        fx.check();
    }
}
