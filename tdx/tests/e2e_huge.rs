// SPDX-License-Identifier: GPL-2.0-only
//! 2 MiB private pages end to end: the MMU's 2M fault is one PAGE.AUG at 2M, and a zap of part
//! of it (a conversion) is BLOCK, TRACK and DEMOTE of the 2M leaf, then BLOCK, TRACK, REMOVE and
//! WBINVD of the 4K pages in the range only — with the software module answering busy or
//! failing the DEMOTE, and a teardown that returns every page. Mirror ≡ S-EPT after each step.

mod common;

use common::{private_fault, td_mmu_config};
use mmu::cache::{SplitCache, VcpuMmuCaches};
use mmu::tdp::{FaultOutcome, TdpMmu, ZapStats, ZapTarget};
use mmu::{Gfn, Level, MmuError, Pfn};
use tdx::abi::{leaf, operand, sept_state, status, SeptLevel};
use tdx::selftest::check_mirror_matches_sept;
use tdx::sept_backend::BUSY_RETRIES;
use tdx::swmod::{Injection, ModuleLine};
use tdx::Tdx;
use testkit::td::{
    backend as td_backend, build_td, host_page, sw_module_on, Backend, Stage, TdMmu,
};
use testkit::HostEnv;

/// Guest GFN of the 2M page.
const G: u64 = 512;

struct Calls([u64; tdx::abi::leaf::MAX_TRACKED]);

impl Calls {
    fn of(b: &Backend<'_>) -> Self {
        Calls(b.tdx().backend().snapshot())
    }

    /// Calls of `l` since `self`.
    fn since(&self, b: &Backend<'_>, l: u16) -> u64 {
        b.tdx().backend().snapshot()[l as usize] - self.0[l as usize]
    }
}

fn split_zap(
    mmu: &TdMmu<'_>,
    c: &mut SplitCache,
    start: u64,
    end: u64,
) -> Result<ZapStats, MmuError> {
    mmu.topup_split_cache(c).expect("split top-up");
    let g = mmu.write();
    mmu.zap_range_split(&g, ZapTarget::Mirror, Gfn::new(start), Gfn::new(end), c)
}

fn partial_conversion_of_a_2m_page(line: ModuleLine) {
    let env = HostEnv::with_capacity(8192);
    let guest: Vec<_> = (0..2048).map(|_| host_page(&env)).collect();
    let base = guest[0].pfn().raw();
    assert_eq!(base % 512, 0);
    let m = sw_module_on(&env, line);
    let td = build_td(&Tdx::new(&m), &env, 1, 2, Stage::Runnable);
    let tdr = td.tdr.hpa().pfn();
    let backend: Backend<'_> = td_backend(&m, &td);
    let mut mmu: TdMmu<'_> = TdpMmu::new(&env, &backend, td_mmu_config()).expect("mmu");
    let mut caches = VcpuMmuCaches::new();
    let mut split = SplitCache::new();
    let check =
        |mmu: &TdMmu<'_>, op| check_mirror_matches_sept(mmu, &m, tdr, op).expect("mirror ≡ S-EPT");

    // The 2M fault: one AUG at 2M (and the PDPT and PD S-EPT pages).
    let c0 = Calls::of(&backend);
    let f = private_fault(Gfn::new(G + 3), Pfn::new(base + G + 3), Level::L2M);
    assert_eq!(
        testkit::fault(&mmu, &mut caches, &f),
        Ok(FaultOutcome::Mapped(Level::L2M))
    );
    assert_eq!(c0.since(&backend, leaf::MEM_PAGE_AUG), 1);
    assert_eq!(c0.since(&backend, leaf::MEM_SEPT_ADD), 2);
    let (state, pfn) = m
        .sept_lookup(tdr, G << 12, SeptLevel::L2M)
        .expect("2M entry");
    assert_eq!((state, pfn), (sept_state::PENDING, Pfn::new(base + G)));
    check(&mmu, 0);

    // DEMOTE busy beyond the backend's retries: the zap reports busy, the leaf stays blocked.
    m.inject(Injection {
        leaf: leaf::MEM_PAGE_DEMOTE,
        nth: 0,
        count: u64::from(BUSY_RETRIES) + 1,
        status: status::OPERAND_BUSY | u64::from(operand::RCX),
    });
    assert_eq!(
        split_zap(&mmu, &mut split, G + 5, G + 6),
        Err(MmuError::ExternalBusy)
    );
    assert_eq!(
        m.sept_lookup(tdr, G << 12, SeptLevel::L2M).map(|e| e.0),
        Some(sept_state::PENDING_BLOCKED)
    );
    check(&mmu, 1);
    // Again: the leaf is blocked already (no second BLOCK), TRACK, DEMOTE, then the 4K page.
    let c0 = Calls::of(&backend);
    let z = split_zap(&mmu, &mut split, G + 5, G + 6).expect("split zap");
    assert_eq!((z.splits, z.leaves), (1, 1));
    let counts: Vec<u64> = [
        leaf::MEM_RANGE_BLOCK,
        leaf::MEM_TRACK,
        leaf::MEM_PAGE_DEMOTE,
        leaf::MEM_PAGE_REMOVE,
        leaf::PHYMEM_PAGE_WBINVD,
    ]
    .iter()
    .map(|&l| c0.since(&backend, l))
    .collect();
    assert_eq!(counts, [1, 2, 1, 1, 1], "BLOCK TRACK DEMOTE REMOVE WBINVD");
    check(&mmu, 2);
    for (gfn, want) in [
        (G, Some(sept_state::PENDING)),
        (G + 5, None),
        (G + 511, Some(sept_state::PENDING)),
    ] {
        assert_eq!(
            m.sept_lookup(tdr, gfn << 12, SeptLevel::L4K)
                .map(|e| e.0)
                .filter(|&s| s != sept_state::FREE),
            want,
            "gfn {gfn:#x}"
        );
    }

    // A fatal DEMOTE (a status no retry cures) marks the VM bugged.
    let f = private_fault(Gfn::new(2 * G), Pfn::new(base + 2 * G), Level::L2M);
    testkit::fault(&mmu, &mut caches, &f).expect("2M fault");
    m.inject(Injection {
        leaf: leaf::MEM_PAGE_DEMOTE,
        nth: 0,
        count: 1,
        status: status::EPT_ENTRY_STATE_INCORRECT | u64::from(operand::RCX),
    });
    assert_eq!(
        split_zap(&mmu, &mut split, 2 * G + 1, 2 * G + 2),
        Err(MmuError::Bugged)
    );
    assert!(mmu.is_bugged());
    assert_eq!(
        backend.stats().last_fatal_status,
        status::EPT_ENTRY_STATE_INCORRECT | u64::from(operand::RCX)
    );

    // Teardown returns every page: the 511 demoted 4K pages, the 2M page, the S-EPT pages.
    mmu.free_vcpu_caches(&mut caches);
    mmu.free_split_cache(&mut split);
    backend.release_hkid(&td.vcpus).expect("release HKID");
    mmu.teardown();
    assert_eq!(mmu.stats().pages(), 0);
    assert_eq!(
        mmu.stats().leaked_private_pages + mmu.stats().leaked_external_spts,
        0
    );
    let c = env.counts();
    assert_eq!((c.tables, c.external_spts, c.headers), (0, 0, 0));
    for p in base..base + 2048 {
        let info = m.pamt_info(Pfn::new(p)).expect("pamt");
        assert_eq!(info.page_type, 0, "guest page {p:#x} still typed");
    }
    drop(guest);
}

testkit::per_module_line!(partial_conversion_of_a_2m_page);
