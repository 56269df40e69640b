// SPDX-License-Identifier: GPL-2.0-only
//! Memslot validation and changes, errno by errno, as upstream 6.12 `kvm_set_memory_region`.

use memcore::memslot::*;
use memcore::store::ArrayStore;
use memcore::uapi::*;
use memcore::Errno;
use mmu::Gfn;

type Set = MemslotSet<ArrayStore<Memslot, 8>>;

const MB: u64 = 1 << 20;

fn caps() -> VmMemCaps {
    VmMemCaps {
        private_mem: false,
        readonly_mem: true,
        dirty_logging: true,
        nr_as_ids: 1,
        max_gfn: Gfn::new((1 << 28) - 1),
        shared_gfn_bit: None,
    }
}

fn td_caps() -> VmMemCaps {
    VmMemCaps {
        private_mem: true,
        readonly_mem: false,
        shared_gfn_bit: Some(1 << 35),
        ..caps()
    }
}

fn req(slot: u32, gpa: u64, size: u64, hva: u64) -> RegionRequest {
    RegionRequest {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
        guest_memfd_offset: 0,
        guest_memfd: u32::MAX,
    }
}

fn ok(_: u64, _: u64) -> bool {
    true
}

fn apply(set: &mut Set, c: &VmMemCaps, r: &RegionRequest) -> Result<Change, Errno> {
    let ch = set.prepare(c, r, ok)?;
    set.commit(c, &ch)?;
    Ok(ch)
}

#[test]
fn create_then_lookup_finds_the_slot_by_gfn() {
    let mut s = Set::new(Default::default());
    apply(&mut s, &caps(), &req(0, 0, 2 * MB, 0x1000_0000)).unwrap();
    apply(&mut s, &caps(), &req(1, 4 * MB, MB, 0x2000_0000)).unwrap();
    assert_eq!(s.lookup(Gfn::new(0)).unwrap().id, 0);
    assert_eq!(s.lookup(Gfn::new(511)).unwrap().id, 0);
    assert!(s.lookup(Gfn::new(512)).is_none());
    assert_eq!(s.lookup(Gfn::new(1024)).unwrap().id, 1);
    assert!(s.lookup(Gfn::new(1024 + 256)).is_none());
    assert_eq!(s.nr_pages(), 512 + 256);
    let slot = s.lookup(Gfn::new(1030)).unwrap();
    assert_eq!(slot.gfn_to_hva(Gfn::new(1030)), 0x2000_0000 + 6 * 4096);
}

#[test]
fn overlap_is_eexist_touching_is_fine() {
    let mut s = Set::new(Default::default());
    apply(&mut s, &caps(), &req(0, 4 * MB, 2 * MB, 0x1000_0000)).unwrap();
    for (gpa, size) in [
        (4 * MB, 4096),
        (5 * MB, 4 * MB),
        (3 * MB, 2 * MB),
        (0, 64 * MB),
    ] {
        assert_eq!(
            s.prepare(&caps(), &req(1, gpa, size, 0x4000_0000), ok),
            Err(Errno::EEXIST),
            "gpa {gpa:#x} size {size:#x}"
        );
    }
    apply(&mut s, &caps(), &req(1, 6 * MB, MB, 0x4000_0000)).unwrap();
    apply(&mut s, &caps(), &req(2, 3 * MB, MB, 0x5000_0000)).unwrap();
}

#[test]
fn sanity_checks_are_einval() {
    let s = Set::new(Default::default());
    let c = caps();
    let bad = [
        req(0, 0, 4095, 0x1000),                             // size not aligned
        req(0, 0x800, 4096, 0x1000),                         // gpa not aligned
        req(0, 0, 4096, 0x1001),                             // hva not aligned
        req(1 << 16, 0, 4096, 0x1000),                       // address space 1 (no SMM)
        req(0, !4095u64, 8192, 0x1000),                      // gpa + size wraps
        req(0, 0, (KVM_MEM_MAX_NR_PAGES + 1) << 12, 0x1000), // too many pages
        req(0, 0, 0, 0x1000),                                // delete of a slot that does not exist
        RegionRequest {
            flags: 1 << 7,
            ..req(0, 0, 4096, 0x1000)
        }, // unknown flag
        RegionRequest {
            flags: KVM_MEM_GUEST_MEMFD,
            ..req(0, 0, 4096, 0x1000)
        }, // no private mem
    ];
    for r in bad {
        assert_eq!(s.prepare(&c, &r, ok), Err(Errno::EINVAL), "{r:?}");
    }
    // The HVA range check is the caller's (access_ok), and is asked.
    let mut asked = None;
    let refuse = |a, l| {
        asked = Some((a, l));
        false
    };
    assert_eq!(
        s.prepare(&c, &req(0, 0, 4096, 0x1000), refuse),
        Err(Errno::EINVAL)
    );
    assert_eq!(asked, Some((0x1000, 4096)));
}

#[test]
fn ioctl_level_checks() {
    let r = req(KVM_USER_MEM_SLOTS, 0, 4096, 0x1000);
    assert_eq!(check_ioctl(RegionIoctl::V2, &r), Err(Errno::EINVAL));
    assert_eq!(
        check_ioctl(RegionIoctl::V2, &req(KVM_USER_MEM_SLOTS - 1, 0, 0, 0)),
        Ok(())
    );
    // Only the low 16 bits are the id: address space 1, id 0 passes this check.
    assert_eq!(check_ioctl(RegionIoctl::V2, &req(1 << 16, 0, 0, 0)), Ok(()));
    let g = RegionRequest {
        flags: KVM_MEM_GUEST_MEMFD,
        ..req(0, 0, 4096, 0x1000)
    };
    assert_eq!(check_ioctl(RegionIoctl::V1, &g), Err(Errno::EINVAL));
    assert_eq!(check_ioctl(RegionIoctl::V2, &g), Ok(()));
}

#[test]
fn flags_follow_check_memory_region_flags() {
    let c = caps();
    assert_eq!(check_flags(&c, KVM_MEM_READONLY), Ok(()));
    assert_eq!(check_flags(&c, KVM_MEM_LOG_DIRTY_PAGES), Ok(()));
    assert_eq!(check_flags(&c, KVM_MEM_GUEST_MEMFD), Err(Errno::EINVAL));
    let no_dirty = VmMemCaps {
        dirty_logging: false,
        ..c
    };
    assert_eq!(
        check_flags(&no_dirty, KVM_MEM_LOG_DIRTY_PAGES),
        Err(Errno::EINVAL)
    );
    let td = td_caps();
    assert_eq!(check_flags(&td, KVM_MEM_READONLY), Err(Errno::EINVAL));
    assert_eq!(check_flags(&td, KVM_MEM_GUEST_MEMFD), Ok(()));
    assert_eq!(
        check_flags(&td, KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES),
        Err(Errno::EINVAL)
    );
    // SW_PROTECTED: private memory and read-only memory, but not both on one slot.
    let swp = VmMemCaps {
        private_mem: true,
        ..c
    };
    assert_eq!(check_flags(&swp, KVM_MEM_READONLY), Ok(()));
    assert_eq!(
        check_flags(&swp, KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD),
        Err(Errno::EINVAL)
    );
    for bit in 3..32 {
        assert_eq!(check_flags(&swp, 1 << bit), Err(Errno::EINVAL));
    }
}

#[test]
fn change_kinds_move_flags_delete_nothing() {
    let mut s = Set::new(Default::default());
    let c = caps();
    apply(&mut s, &c, &req(3, 0, MB, 0x1000_0000)).unwrap();
    assert_eq!(
        apply(&mut s, &c, &req(3, 0, MB, 0x1000_0000)),
        Ok(Change::Unchanged)
    );
    let g0 = s.generation();
    let ch = apply(&mut s, &c, &req(3, 8 * MB, MB, 0x1000_0000)).unwrap();
    assert!(
        matches!(ch, Change::Move { old, new } if old.base_gfn.raw() == 0 && new.base_gfn.raw() == 2048)
    );
    assert!(s.generation() > g0);
    assert!(s.lookup(Gfn::new(0)).is_none());
    assert_eq!(s.lookup(Gfn::new(2048)).unwrap().id, 3);
    let f = RegionRequest {
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        ..req(3, 8 * MB, MB, 0x1000_0000)
    };
    assert!(matches!(
        apply(&mut s, &c, &f),
        Ok(Change::FlagsOnly { .. })
    ));
    // A move can go over its own old range.
    assert!(matches!(
        apply(
            &mut s,
            &c,
            &RegionRequest {
                guest_phys_addr: 8 * MB + 4096,
                ..f
            }
        ),
        Ok(Change::Move { .. })
    ));
    // Changing HVA, size or READONLY of an existing slot: EINVAL.
    for r in [
        req(3, 8 * MB, MB, 0x2000_0000),
        req(3, 8 * MB, 2 * MB, 0x1000_0000),
        RegionRequest {
            flags: KVM_MEM_READONLY,
            ..req(3, 8 * MB, MB, 0x1000_0000)
        },
    ] {
        assert_eq!(s.prepare(&c, &r, ok), Err(Errno::EINVAL), "{r:?}");
    }
    assert!(matches!(
        apply(&mut s, &c, &req(3, 0, 0, 0)),
        Ok(Change::Delete(_))
    ));
    assert!(s.slots().is_empty());
    assert_eq!(s.nr_pages(), 0);
    assert_eq!(s.prepare(&c, &req(3, 0, 0, 0), ok), Err(Errno::EINVAL));
}

#[test]
fn guest_memfd_slots_are_immutable() {
    let mut s = Set::new(Default::default());
    let c = td_caps();
    let r = RegionRequest {
        flags: KVM_MEM_GUEST_MEMFD,
        guest_memfd: 5,
        ..req(0, 0, MB, 0x1000_0000)
    };
    let Change::Create(mut new) = s.prepare(&c, &r, ok).unwrap() else {
        panic!()
    };
    assert_eq!(new.gmem, None, "the caller binds");
    new.gmem = Some(GmemSlot {
        file: GmemId(7),
        pgoff: 0,
    });
    s.commit(&c, &Change::Create(new)).unwrap();
    // Same request again, or a move, or flags: EINVAL (private memslots can only be deleted).
    assert_eq!(s.prepare(&c, &r, ok), Err(Errno::EINVAL));
    // Without the flag too: a move or a flags change would orphan the file's binding.
    let mv = RegionRequest {
        flags: 0,
        ..req(0, 4 * MB, MB, 0x1000_0000)
    };
    assert_eq!(s.prepare(&c, &mv, ok), Err(Errno::EINVAL));
    assert_eq!(
        s.prepare(&c, &req(0, 0, MB, 0x1000_0000), ok),
        Err(Errno::EINVAL)
    );
    assert!(
        matches!(s.prepare(&c, &req(0, 0, 0, 0), ok), Ok(Change::Delete(d)) if d.gmem.is_some())
    );
    let unaligned = RegionRequest {
        guest_memfd_offset: 100,
        slot: 1,
        ..r
    };
    assert_eq!(s.prepare(&c, &unaligned, ok), Err(Errno::EINVAL));
    let wraps = RegionRequest {
        guest_memfd_offset: !4095u64,
        slot: 1,
        guest_phys_addr: 8 * MB,
        ..r
    };
    assert_eq!(s.prepare(&c, &wraps, ok), Err(Errno::EINVAL));
}

#[test]
fn arch_checks_run_at_commit() {
    let mut s = Set::new(Default::default());
    let c = td_caps();
    // Reaching the shared bit (GFN bit 35): a TD's slot must be below it.
    let r = req(0, (1 << 47) - MB, MB, 0x1000_0000);
    let ch = s.prepare(&c, &r, ok).unwrap();
    assert_eq!(s.commit(&c, &ch), Err(Errno::EINVAL));
    let r = req(0, 1 << 40, MB, 0x1000_0000);
    let ch = s.prepare(&c, &r, ok).unwrap();
    assert_eq!(s.commit(&c, &ch), Err(Errno::EINVAL), "beyond max_gfn");
    assert!(s.slots().is_empty());
}

#[test]
fn full_store_is_enomem_with_nothing_changed() {
    let mut s = MemslotSet::<ArrayStore<Memslot, 2>>::new(Default::default());
    let c = caps();
    for i in 0..2 {
        let ch = s
            .prepare(&c, &req(i, u64::from(i) * MB, MB, 0x1000_0000), ok)
            .unwrap();
        s.commit(&c, &ch).unwrap();
    }
    let ch = s.prepare(&c, &req(2, 4 * MB, MB, 0x1000_0000), ok).unwrap();
    assert_eq!(s.room_needed(&ch), 1);
    assert_eq!(s.commit(&c, &ch), Err(Errno::ENOMEM));
    assert_eq!(s.slots().len(), 2);
    assert_eq!(s.nr_pages(), 512);
}

#[test]
fn stale_change_is_eio() {
    let mut s = Set::new(Default::default());
    let c = caps();
    let ch = apply(&mut s, &c, &req(0, 0, MB, 0x1000_0000)).unwrap();
    assert_eq!(s.commit(&c, &ch), Err(Errno::EIO), "created twice");
    let del = s.prepare(&c, &req(0, 0, 0, 0), ok).unwrap();
    s.commit(&c, &del).unwrap();
    assert_eq!(s.commit(&c, &del), Err(Errno::EIO), "deleted twice");
}

#[test]
fn hva_overlap_gives_the_gfns_to_zap() {
    let mut s = Set::new(Default::default());
    let c = caps();
    apply(&mut s, &c, &req(0, 0, MB, 0x1000_0000)).unwrap();
    apply(&mut s, &c, &req(1, 16 * MB, MB, 0x1000_0000)).unwrap(); // aliases slot 0's HVAs
    apply(&mut s, &c, &req(2, 32 * MB, MB, 0x3000_0000)).unwrap();
    let mut hits = Vec::new();
    s.for_each_hva_overlap(0x1000_0000 + 0x1800, 0x1000_0000 + 0x3001, |sl, a, b| {
        hits.push((sl.id, a.raw(), b.raw()))
    });
    hits.sort();
    assert_eq!(hits, vec![(0, 1, 4), (1, 4096 + 1, 4096 + 4)]);
    let mut n = 0;
    s.for_each_hva_overlap(0x2000_0000, 0x3000_0000, |_, _, _| n += 1);
    assert_eq!(n, 0, "end is exclusive");
}

/// Random creates, moves and deletes against a per-GFN model: lookup and overlap always agree.
#[test]
fn random_sequence_matches_a_model() {
    let mut s = MemslotSet::<ArrayStore<Memslot, 16>>::new(Default::default());
    let c = caps();
    let mut model = [None::<u16>; 256];
    let mut seed = 0x1234_5678_u64;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..20000 {
        let id = rnd(20) as u32;
        let base = rnd(250);
        let len = 1 + rnd(16).min(255 - base);
        let size = if rnd(5) == 0 { 0 } else { len * 4096 };
        let old = s.by_id(id as u16).copied();
        let r = req(
            id,
            base * 4096,
            size,
            old.map_or(0x1000_0000, |o| o.userspace_addr),
        );
        let r = RegionRequest {
            memory_size: match old {
                Some(o) if size != 0 => o.npages * 4096,
                _ => size,
            },
            ..r
        };
        let res = s
            .prepare(&c, &r, ok)
            .and_then(|ch| s.commit(&c, &ch).map(|_| ch));
        let npages = r.memory_size / 4096;
        let expect_overlap = size != 0
            && (base..base + npages)
                .any(|g| g < 256 && model[g as usize].is_some_and(|o| o != id as u16));
        match res {
            Ok(Change::Create(_) | Change::Move { .. }) => {
                assert!(!expect_overlap);
                model.iter_mut().for_each(|m| {
                    if *m == Some(id as u16) {
                        *m = None
                    }
                });
                for g in base..(base + npages).min(256) {
                    model[g as usize] = Some(id as u16);
                }
            }
            Ok(Change::Delete(_)) => model.iter_mut().for_each(|m| {
                if *m == Some(id as u16) {
                    *m = None
                }
            }),
            Ok(_) => {}
            Err(Errno::EEXIST) => assert!(expect_overlap),
            Err(Errno::EINVAL) => assert!(size == 0 && old.is_none()),
            Err(Errno::ENOMEM) => {}
            Err(e) => panic!("{e:?}"),
        }
        for g in 0..256u64 {
            assert_eq!(
                s.lookup(Gfn::new(g)).map(|x| x.id),
                model[g as usize],
                "gfn {g}"
            );
        }
    }
}
