// SPDX-License-Identifier: GPL-2.0-only
//! guest_memfd creation, fallocate and binding checks (upstream 6.12 guest_memfd.c and the
//! cases of tools/testing/selftests/kvm/guest_memfd_test.c).

use memcore::gmem::*;
use memcore::store::ArrayStore;
use memcore::uapi::{FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH};
use memcore::Errno;
use mmu::Gfn;

const PS: u64 = 4096;

#[test]
fn create_refuses_unaligned_sizes_and_every_flag() {
    for size in 1..PS {
        assert_eq!(check_create(size, 0), Err(Errno::EINVAL), "size {size}");
    }
    assert_eq!(check_create(0, 0), Err(Errno::EINVAL));
    assert_eq!(
        check_create(1 << 63, 0),
        Err(Errno::EINVAL),
        "negative loff_t"
    );
    for bit in 0..64 {
        assert_eq!(
            check_create(PS, 1 << bit),
            Err(Errno::EINVAL),
            "flag bit {bit}"
        );
    }
    assert_eq!(check_create(PS, 0), Ok(()));
    assert_eq!(check_create(1 << 40, 0), Ok(()));
}

#[test]
fn fallocate_follows_guest_memfd_test() {
    let total = 4 * PS;
    assert_eq!(
        check_fallocate(KEEP, 0, total, total),
        Ok(Falloc::Allocate { start: 0, end: 4 })
    );
    assert_eq!(
        check_fallocate(KEEP | PUNCH, PS - 1, PS, total),
        Err(Errno::EINVAL)
    );
    assert_eq!(check_fallocate(KEEP, total, PS, total), Err(Errno::EINVAL));
    assert_eq!(
        check_fallocate(KEEP, total + PS, PS, total),
        Err(Errno::EINVAL)
    );
    assert!(check_fallocate(KEEP | PUNCH, total, PS, total).is_ok());
    assert!(check_fallocate(KEEP | PUNCH, total + PS, PS, total).is_ok());
    assert_eq!(
        check_fallocate(KEEP | PUNCH, PS, PS - 1, total),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        check_fallocate(KEEP | PUNCH, PS, PS, total),
        Ok(Falloc::PunchHole { start: 1, end: 2 })
    );
    assert_eq!(
        check_fallocate(KEEP, PS, PS, total),
        Ok(Falloc::Allocate { start: 1, end: 2 })
    );
    for (off, len) in [
        (0, 1),
        (0, PS - 1),
        (0, PS + 1),
        (1, 1),
        (1, PS - 1),
        (1, PS),
        (1, PS + 1),
        (PS, 1),
        (PS, PS - 1),
        (PS, PS + 1),
    ] {
        assert_eq!(
            check_fallocate(KEEP | PUNCH, off, len, total),
            Err(Errno::EINVAL),
            "{off} {len}"
        );
    }
    assert_eq!(
        check_fallocate(0, 0, PS, total),
        Err(Errno::EOPNOTSUPP),
        "without KEEP_SIZE"
    );
    assert_eq!(
        check_fallocate(KEEP | 0x10, 0, PS, total),
        Err(Errno::EOPNOTSUPP),
        "ZERO_RANGE"
    );
}

#[test]
fn bindings_refuse_overlap_and_out_of_file_ranges() {
    let mut b = Bindings::<ArrayStore<Binding, 4>>::new(Default::default());
    let size = 16 * PS;
    assert_eq!(b.bind(4 * PS, 4, size, 1, Gfn::new(100)), Ok(4));
    assert_eq!(
        b.bind(6 * PS, 4, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "overlap"
    );
    assert_eq!(
        b.bind(0, 5, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "overlap from below"
    );
    assert_eq!(
        b.bind(100, 1, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "unaligned"
    );
    assert_eq!(
        b.bind(1 << 63, 1, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "negative"
    );
    assert_eq!(
        b.bind(13 * PS, 4, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "past the end"
    );
    assert_eq!(
        b.bind(!4095u64, 4, size, 2, Gfn::new(200)),
        Err(Errno::EINVAL),
        "wraps"
    );
    assert_eq!(
        b.bind(0, 4, size, 2, Gfn::new(200)),
        Ok(0),
        "touching is fine"
    );
    assert_eq!(b.bind(8 * PS, 8, size, 3, Gfn::new(512)), Ok(8));
    let mut hits = Vec::new();
    b.for_each_in(3, 10, |x, s, e| hits.push((x.slot, s.raw(), e.raw())));
    assert_eq!(hits, vec![(2, 203, 204), (1, 100, 104), (3, 512, 514)]);
    assert_eq!(b.unbind(1).map(|x| x.slot), Some(1));
    assert_eq!(b.unbind(1), None);
    assert_eq!(
        b.bind(4 * PS, 4, size, 4, Gfn::new(100)),
        Ok(4),
        "rebinding after unbind"
    );
}
