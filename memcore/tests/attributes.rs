// SPDX-License-Identifier: GPL-2.0-only
//! The memory-attribute map against a per-GFN model, and `KVM_SET_MEMORY_ATTRIBUTES`'s checks.

use memcore::attributes::*;
use memcore::store::ArrayStore;
use memcore::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE as P;
use memcore::Errno;
use mmu::Gfn;

type Map = AttrMap<ArrayStore<AttrRange, 64>>;

fn g(x: u64) -> Gfn {
    Gfn::new(x)
}

#[test]
fn request_checks_in_upstream_order() {
    assert_eq!(
        check_request(true, 0, 4096, P, 1),
        Err(Errno::EINVAL),
        "flags"
    );
    assert_eq!(
        check_request(false, 0, 4096, P, 0),
        Err(Errno::EINVAL),
        "PRIVATE on a VM without private memory"
    );
    assert_eq!(
        check_request(true, 0, 4096, 1 << 4, 0),
        Err(Errno::EINVAL),
        "unknown attribute"
    );
    assert_eq!(
        check_request(true, 0, 0, P, 0),
        Err(Errno::EINVAL),
        "size 0"
    );
    assert_eq!(
        check_request(true, !4095u64, 8192, P, 0),
        Err(Errno::EINVAL),
        "wraps"
    );
    assert_eq!(
        check_request(true, 0x800, 4096, P, 0),
        Err(Errno::EINVAL),
        "address"
    );
    assert_eq!(
        check_request(true, 0, 0x800, P, 0),
        Err(Errno::EINVAL),
        "size"
    );
    let r = check_request(true, 0x2000, 0x3000, P, 0).unwrap();
    assert_eq!((r.start, r.end, r.attrs), (g(2), g(5), P));
    // Attributes 0 are valid everywhere (a default VM can "set" shared).
    assert!(check_request(false, 0, 4096, 0, 0).is_ok());
}

#[test]
fn set_get_split_and_merge() {
    let mut m = Map::new(Default::default());
    assert!(m.set(g(10), g(20), P).unwrap());
    assert!(
        !m.set(g(12), g(15), P).unwrap(),
        "already private: no change, no zap"
    );
    assert!(m.set(g(20), g(30), P).unwrap());
    assert_eq!(
        m.ranges(),
        &[AttrRange {
            start: 10,
            end: 30,
            attrs: P
        }],
        "touching ranges merge"
    );
    assert!(m.set(g(14), g(16), 0).unwrap());
    assert_eq!(m.ranges().len(), 2, "a hole splits the range");
    assert!(
        m.is_private(g(13)) && !m.is_private(g(14)) && !m.is_private(g(15)) && m.is_private(g(16))
    );
    assert_eq!(m.uniform(g(10), g(14)), Some(P));
    assert_eq!(m.uniform(g(10), g(15)), None);
    assert_eq!(m.uniform(g(40), g(50)), Some(0));
    assert!(m.range_has(g(14), g(16), !0, 0));
    assert!(!m.range_has(g(13), g(16), !0, 0));
    assert!(m.set(g(0), g(100), 0).unwrap());
    assert!(m.ranges().is_empty());
}

#[test]
fn full_store_is_enomem_and_unchanged() {
    let mut m = AttrMap::<ArrayStore<AttrRange, 2>>::new(Default::default());
    m.set(g(0), g(10), P).unwrap();
    m.set(g(20), g(30), P).unwrap();
    let before = m.ranges().to_vec();
    assert_eq!(m.room_needed(), 2);
    assert_eq!(m.set(g(40), g(50), P), Err(Errno::ENOMEM));
    assert_eq!(
        m.set(g(2), g(4), 0),
        Err(Errno::ENOMEM),
        "split needs one more"
    );
    assert_eq!(m.ranges(), &before[..]);
    // Joining the two needs no room.
    assert!(m.set(g(10), g(20), P).unwrap());
    assert_eq!(
        m.ranges(),
        &[AttrRange {
            start: 0,
            end: 30,
            attrs: P
        }]
    );
}

#[test]
fn random_sets_match_a_per_gfn_model() {
    let mut m = Map::new(Default::default());
    let mut model = [0u64; 300];
    let mut seed = 42u64;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..50000 {
        let s = rnd(300);
        let e = s + 1 + rnd(40).min(299 - s);
        let a = if rnd(2) == 0 { 0 } else { P };
        let changed = model[s as usize..e as usize].iter().any(|&x| x != a);
        assert_eq!(m.set(g(s), g(e), a).unwrap(), changed);
        model[s as usize..e as usize].fill(a);
        for (i, &x) in model.iter().enumerate() {
            assert_eq!(m.get(g(i as u64)), x, "gfn {i}");
        }
        // Canonical form: sorted, disjoint, non-empty, non-zero, no two touching with equal attrs.
        for w in m.ranges().windows(2) {
            assert!(w[0].end < w[1].start || (w[0].end == w[1].start && w[0].attrs != w[1].attrs));
        }
        assert!(m.ranges().iter().all(|r| r.start < r.end && r.attrs != 0));
    }
}
