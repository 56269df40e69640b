use mmu::cache::VcpuMmuCaches;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, ZapTarget};
use mmu::{Gfn, GfnKind, Level, Pfn};
use testkit::*;

#[test]
fn smoke() {
    let mut mmu = td_mmu::<Ept>();
    let mut c = VcpuMmuCaches::new();
    let f = Fault {
        gfn: Gfn::new(0x1234),
        kind: GfnKind::Private,
        pfn: Pfn::new(0x5234),
        access: Access::RWX,
        write: true,
        max_level: Level::L4K,
    };
    let r = fault(&mmu, &mut c, &f);
    println!("{:?}", mmu.external().violations());
    assert_eq!(r, Ok(FaultOutcome::Mapped(Level::L4K)));
    let f2 = Fault {
        kind: GfnKind::Shared,
        max_level: Level::L2M,
        gfn: Gfn::new(0x200),
        pfn: Pfn::new(0x400),
        ..f
    };
    assert_eq!(
        fault(&mmu, &mut c, &f2),
        Ok(FaultOutcome::Mapped(Level::L2M))
    );
    check_invariants(&mmu, &[&c]);
    println!("{:?}", mmu.stats());
    println!("{:?}", mmu.external().entries());
    {
        let g = mmu.write();
        let z = mmu
            .zap_range(&g, ZapTarget::Shared, Gfn::new(0), Gfn::new(1 << 20))
            .unwrap();
        println!("{z:?}");
        let z = mmu
            .zap_range(&g, ZapTarget::Mirror, Gfn::new(0), Gfn::new(1 << 20))
            .unwrap();
        println!("{z:?}");
    }
    check_invariants(&mmu, &[&c]);
    {
        let g = mmu.read();
        assert!(leaves(&mmu, &g, RootKind::Mirror).is_empty());
    }
    mmu.free_vcpu_caches(&mut c);
    mmu.external().set_teardown(true);
    mmu.teardown();
    println!("{:?} {:?}", mmu.stats(), mmu.env().counts());
    assert_eq!(mmu.env().counts().pages(), 0);
}
