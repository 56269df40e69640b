//! An environment that cannot map a table page (`MmuEnv::table_of` returns `None`) makes the
//! walk stop and the VM bugged; nothing dereferences a pointer that was not allocated, and
//! teardown still gives every page back.

use mmu::cache::VcpuMmuCaches;
use mmu::env::{Frame, HeaderSlot, MmuEnv, PageKind, Table};
use mmu::external::NoExternal;
use mmu::page::RootKind;
use mmu::spte::{Access, Ept};
use mmu::tdp::{Fault, FaultOutcome, MmuConfig, TdpMmu, ZapTarget};
use mmu::{Gfn, GfnKind, GpaWidth, Level, MmuError, Pfn};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use testkit::{HostEnv, HostRwLock};

/// The host environment, except that `table_of` fails while `unmapped` is set.
struct Unmappable<'a> {
    host: &'a HostEnv,
    unmapped: AtomicBool,
}

// SAFETY: forwards to `HostEnv`; `table_of` returns either its mapping or `None`.
unsafe impl MmuEnv for Unmappable<'_> {
    type Lock = HostRwLock;

    fn mmu_lock(&self) -> &HostRwLock {
        self.host.mmu_lock()
    }
    fn alloc_page(&self, kind: PageKind) -> Option<Frame> {
        self.host.alloc_page(kind)
    }
    fn free_page(&self, frame: Frame, kind: PageKind) {
        self.host.free_page(frame, kind)
    }
    fn alloc_header(&self) -> Option<HeaderSlot> {
        self.host.alloc_header()
    }
    fn free_header(&self, slot: HeaderSlot) {
        self.host.free_header(slot)
    }
    fn table_of(&self, pfn: Pfn) -> Option<NonNull<Table>> {
        if self.unmapped.load(Ordering::Relaxed) {
            None
        } else {
            self.host.table_of(pfn)
        }
    }
    unsafe fn set_page_private(&self, pfn: Pfn, value: usize) {
        // SAFETY: only the MMU core calls this (our caller), as the contract requires.
        unsafe { self.host.set_page_private(pfn, value) }
    }
    fn page_private(&self, pfn: Pfn) -> usize {
        self.host.page_private(pfn)
    }
    fn flush_remote_tlbs(&self, start: Gfn, pages: u64) {
        self.host.flush_remote_tlbs(start, pages)
    }
}

type Mmu<'a> = TdpMmu<Ept, Unmappable<'a>, NoExternal>;

fn mmu_with_one_page(host: &HostEnv) -> (Mmu<'_>, VcpuMmuCaches) {
    let env = Unmappable {
        host,
        unmapped: AtomicBool::new(false),
    };
    let mmu = TdpMmu::new(env, NoExternal, MmuConfig::vm(GpaWidth::Bits48)).expect("roots");
    let mut caches = VcpuMmuCaches::new();
    mmu.topup_vcpu_caches(&mut caches).expect("top-up");
    let f = Fault {
        gfn: Gfn::new(0x1234),
        kind: GfnKind::Shared,
        pfn: Pfn::new(0x5234),
        access: Access::RWX,
        write: true,
        max_level: Level::L4K,
    };
    let g = mmu.read();
    assert_eq!(
        mmu.map(&g, &mut caches, &f),
        Ok(FaultOutcome::Mapped(Level::L4K))
    );
    drop(g);
    mmu.env().unmapped.store(true, Ordering::Relaxed);
    (mmu, caches)
}

fn finish(mut mmu: Mmu<'_>, mut caches: VcpuMmuCaches, host: &HostEnv) {
    mmu.free_vcpu_caches(&mut caches);
    mmu.teardown();
    assert_eq!(host.counts().pages(), 0, "teardown gave every page back");
}

#[test]
fn an_unmappable_table_stops_lookups_and_walks_and_bugs_the_vm() {
    let host = HostEnv::new();
    let (mmu, caches) = mmu_with_one_page(&host);
    {
        let g = mmu.read();
        assert_eq!(
            mmu.lookup(&g, GfnKind::Shared, Gfn::new(0x1234)),
            Err(MmuError::Bugged)
        );
        assert!(mmu.is_bugged());
        let mut it = mmu
            .walk(&g, RootKind::Shared, Gfn::new(0), Gfn::new(1 << 20))
            .expect("walk");
        let mut steps = 0;
        while it.valid() {
            it.next();
            steps += 1;
        }
        assert!(it.is_broken(), "the walk stopped at the unmappable table");
        assert_eq!(steps, 1, "only the root entry was visited");
        assert_eq!(
            mmu.for_each_leaf(&g, RootKind::Shared, |_, _, _| {}),
            Err(MmuError::Bugged)
        );
    }
    finish(mmu, caches, &host);
}

#[test]
fn an_unmappable_table_fails_a_zap_with_bugged() {
    let host = HostEnv::new();
    let (mmu, caches) = mmu_with_one_page(&host);
    {
        let g = mmu.write();
        assert_eq!(
            mmu.zap_range(&g, ZapTarget::Shared, Gfn::new(0), Gfn::new(1 << 20)),
            Err(MmuError::Bugged)
        );
    }
    assert!(mmu.is_bugged());
    finish(mmu, caches, &host);
}

#[test]
fn an_unmappable_table_fails_a_fault_with_bugged() {
    let host = HostEnv::new();
    let (mmu, mut caches) = mmu_with_one_page(&host);
    let f = Fault {
        gfn: Gfn::new(0x1235),
        kind: GfnKind::Shared,
        pfn: Pfn::new(0x5235),
        access: Access::RWX,
        write: false,
        max_level: Level::L4K,
    };
    mmu.topup_vcpu_caches(&mut caches).expect("top-up");
    {
        let g = mmu.read();
        assert_eq!(mmu.map(&g, &mut caches, &f), Err(MmuError::Bugged));
    }
    assert!(mmu.is_bugged());
    finish(mmu, caches, &host);
}
