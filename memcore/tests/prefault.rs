// SPDX-License-Identifier: GPL-2.0-only
//! KVM_PRE_FAULT_MEMORY's checks, progress and errnos, and the 2 MiB decision.

use memcore::attributes::{AttrMap, AttrRange};
use memcore::memslot::{GmemId, GmemSlot, Memslot};
use memcore::prefault::*;
use memcore::store::ArrayStore;
use memcore::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE as P;
use memcore::Errno;
use mmu::{Gfn, Level};

fn r(gpa: u64, size: u64) -> PreFaultRange {
    PreFaultRange {
        gpa,
        size,
        flags: 0,
    }
}

#[test]
fn checks() {
    assert_eq!(
        check(&PreFaultRange {
            flags: 1,
            ..r(0, 4096)
        }),
        Err(Errno::EINVAL)
    );
    assert_eq!(check(&r(1, 4096)), Err(Errno::EINVAL));
    assert_eq!(check(&r(0, 1)), Err(Errno::EINVAL));
    assert_eq!(check(&r(0, 0)), Err(Errno::EINVAL));
    assert_eq!(check(&r(!4095u64, 4096)), Err(Errno::EINVAL), "wraps to 0");
    assert_eq!(check(&r(0x1000, 0x1000)), Ok(()));
}

#[test]
fn progress_counts_huge_mappings_to_their_end() {
    assert_eq!(step_len(0x201000, 0x40_0000, Level::L2M), 0x1ff000);
    assert_eq!(step_len(0x201000, 0x10_0000, Level::L2M), 0x10_0000);
    assert_eq!(step_len(0x201000, 0x1000, Level::L2M), 0x1000);
    assert_eq!(step_len(0x201000, 0x10_0000, Level::L4K), 0x1000);
    let mut range = r(0x1ff000, 0x402000);
    let mut calls = Vec::new();
    run(
        &mut range,
        || false,
        |gpa| {
            calls.push(gpa);
            Ok(if gpa >= 0x200000 {
                Level::L2M
            } else {
                Level::L4K
            })
        },
    )
    .unwrap();
    assert_eq!(calls, vec![0x1ff000, 0x200000, 0x400000, 0x600000]);
    assert_eq!((range.gpa, range.size), (0x601000, 0));
}

#[test]
fn first_error_or_partial_success() {
    // Nothing mapped: the error.
    let mut range = r(0, 0x3000);
    assert_eq!(
        run(&mut range, || false, |_| Err(Errno::ENOENT)),
        Err(Errno::ENOENT)
    );
    assert_eq!((range.gpa, range.size), (0, 0x3000));
    // One page then an error: success, the range says how far it got.
    let mut range = r(0, 0x3000);
    assert_eq!(
        run(
            &mut range,
            || false,
            |gpa| if gpa == 0 {
                Ok(Level::L4K)
            } else {
                Err(Errno::ENOENT)
            }
        ),
        Ok(())
    );
    assert_eq!((range.gpa, range.size), (0x1000, 0x2000));
    // A signal before any progress: EINTR; after some: success.
    let mut range = r(0, 0x3000);
    assert_eq!(
        run(&mut range, || true, |_| Ok(Level::L4K)),
        Err(Errno::EINTR)
    );
    let mut n = 0;
    let mut range = r(0, 0x3000);
    assert_eq!(
        run(
            &mut range,
            || {
                n += 1;
                n > 2
            },
            |_| Ok(Level::L4K)
        ),
        Ok(())
    );
    assert_eq!(range.size, 0x1000);
}

fn slot(base: u64, npages: u64, pgoff: u64) -> Memslot {
    Memslot {
        id: 0,
        base_gfn: Gfn::new(base),
        npages,
        flags: 4,
        userspace_addr: 0x1000_0000,
        gmem: Some(GmemSlot {
            file: GmemId(1),
            pgoff,
        }),
    }
}

#[test]
fn two_mib_only_when_everything_allows() {
    let mut attrs = AttrMap::<ArrayStore<AttrRange, 8>>::new(Default::default());
    attrs.set(Gfn::new(0), Gfn::new(4096), P).unwrap();
    let s = slot(512, 2048, 0);
    assert_eq!(
        private_max_level(&s, Gfn::new(600), &attrs, true),
        Level::L2M
    );
    assert_eq!(
        private_max_level(&s, Gfn::new(600), &attrs, false),
        Level::L4K,
        "4K folio"
    );
    assert_eq!(
        private_max_level(&slot(512, 2048, 1), Gfn::new(600), &attrs, true),
        Level::L4K,
        "offset not congruent"
    );
    assert_eq!(
        private_max_level(&slot(513, 2047, 1), Gfn::new(1100), &attrs, true),
        Level::L2M,
        "congruent: base - pgoff aligned"
    );
    assert_eq!(
        private_max_level(&slot(600, 2048, 88), Gfn::new(600), &attrs, true),
        Level::L4K,
        "2M range starts before the slot"
    );
    assert_eq!(
        private_max_level(&slot(512, 500, 0), Gfn::new(600), &attrs, true),
        Level::L4K,
        "ends after the slot"
    );
    attrs.set(Gfn::new(1000), Gfn::new(1001), 0).unwrap();
    assert_eq!(
        private_max_level(&s, Gfn::new(600), &attrs, true),
        Level::L4K,
        "mixed attributes"
    );
    let shared_slot = Memslot { gmem: None, ..s };
    assert_eq!(
        private_max_level(&shared_slot, Gfn::new(1100), &attrs, true),
        Level::L4K
    );
}

#[test]
fn shared_two_mib_needs_congruent_hva_and_whole_range() {
    let mut attrs = AttrMap::<ArrayStore<AttrRange, 8>>::new(Default::default());
    // userspace_addr 0x1000_0000 is 2 MiB-aligned, so a 2 MiB-aligned base is congruent.
    let s = Memslot {
        gmem: None,
        ..slot(512, 2048, 0)
    };
    assert_eq!(
        shared_max_level(&s, Gfn::new(600), &attrs, false),
        Level::L2M
    );
    let moved = Memslot {
        userspace_addr: 0x1000_1000,
        ..s
    };
    assert_eq!(
        shared_max_level(&moved, Gfn::new(600), &attrs, false),
        Level::L4K,
        "GFN and HVA not congruent"
    );
    assert_eq!(
        shared_max_level(&Memslot { npages: 500, ..s }, Gfn::new(600), &attrs, false),
        Level::L4K,
        "tail of the slot"
    );
    assert_eq!(
        shared_max_level(
            &Memslot {
                base_gfn: Gfn::new(600),
                userspace_addr: 0x1000_0000 + (88 << 12),
                ..s
            },
            Gfn::new(600),
            &attrs,
            false
        ),
        Level::L4K,
        "head of the slot"
    );
    attrs.set(Gfn::new(1000), Gfn::new(1001), P).unwrap();
    assert_eq!(
        shared_max_level(&s, Gfn::new(600), &attrs, true),
        Level::L4K,
        "mixed attributes"
    );
    assert_eq!(
        shared_max_level(&s, Gfn::new(600), &attrs, false),
        Level::L2M,
        "attributes ignored without private memory"
    );
}
