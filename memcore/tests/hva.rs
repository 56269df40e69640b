// SPDX-License-Identifier: GPL-2.0-only
//! The MMU notifier's HVA index walked in batches (`memcore::hva`): the spans of one range,
//! a walk in small batches finds what one pass finds, and slots that stay in the index while
//! others come and go between batches are each found exactly once.

use memcore::hva::{Cursor, GfnSpan, HvaIndex, HvaRange};
use memcore::store::ArrayStore;
use memcore::Errno;
use mmu::Gfn;

type Index = HvaIndex<ArrayStore<HvaRange, 64>>;

const MB: u64 = 1 << 20;

fn range(id: u16, start: u64, len: u64, base: u64) -> HvaRange {
    HvaRange {
        id,
        start,
        end: start + len,
        base_gfn: Gfn::new(base),
    }
}

fn span(s: u64, e: u64) -> GfnSpan {
    GfnSpan {
        start: Gfn::new(s),
        end: Gfn::new(e),
    }
}

/// Walks `[start, end)` in batches of `out` spans and `scan` entries, calling `between` after
/// every batch (with the lock "dropped"); returns the spans found, in order.
fn walk(
    idx: &mut Index,
    start: u64,
    end: u64,
    out: usize,
    scan: usize,
    mut between: impl FnMut(&mut Index),
) -> Vec<GfnSpan> {
    let mut found = Vec::new();
    let mut cursor = Cursor::START;
    let mut buf = vec![GfnSpan::default(); out];
    loop {
        let b = idx.batch(start, end, cursor, &mut buf, scan);
        found.extend_from_slice(&buf[..b.found]);
        between(idx);
        match b.next {
            Some(c) => cursor = c,
            None => return found,
        }
    }
}

#[test]
fn a_range_covers_every_page_any_of_its_bytes_touch() {
    let r = range(3, 0x10_0000, 4 * MB, 0x800);
    assert_eq!(r.gfns(0, 0x10_0000), None);
    assert_eq!(r.gfns(0x10_0000 + 4 * MB, u64::MAX), None);
    assert_eq!(r.gfns(0, u64::MAX), Some(span(0x800, 0x800 + 1024)));
    // One byte in the middle of the third page.
    assert_eq!(r.gfns(0x10_2800, 0x10_2801), Some(span(0x802, 0x803)));
    // Unaligned on both sides: two pages.
    assert_eq!(r.gfns(0x10_0fff, 0x10_1001), Some(span(0x800, 0x802)));
}

#[test]
fn the_index_stays_sorted_by_id_and_refuses_when_full() {
    let mut idx = Index::new(ArrayStore::default());
    for id in [9u16, 2, 40, 5, 2] {
        idx.insert(range(id, u64::from(id) * MB, MB, 0))
            .expect("room");
    }
    let ids: Vec<u16> = idx.as_slice().iter().map(|r| r.id).collect();
    assert_eq!(ids, [2, 5, 9, 40]);
    idx.remove(5);
    idx.remove(77);
    idx.set_base(40, Gfn::new(0x1234));
    let ids: Vec<u16> = idx.as_slice().iter().map(|r| r.id).collect();
    assert_eq!(ids, [2, 9, 40]);
    assert_eq!(idx.as_slice()[2].base_gfn, Gfn::new(0x1234));
    let mut small: HvaIndex<ArrayStore<HvaRange, 2>> = HvaIndex::new(ArrayStore::default());
    small.insert(range(1, 0, MB, 0)).expect("room");
    small.insert(range(2, MB, MB, 0)).expect("room");
    assert_eq!(small.insert(range(3, 2 * MB, MB, 0)), Err(Errno::ENOMEM));
    assert_eq!(small.as_slice().len(), 2);
}

#[test]
fn a_walk_in_small_batches_finds_what_one_pass_finds() {
    let mut idx = Index::new(ArrayStore::default());
    // 50 slots of 1 MiB each, every third one aliasing the same HVAs as its predecessor.
    for id in 0..50u16 {
        let hva = u64::from(id - id / 3) * MB;
        idx.insert(range(id * 7 % 64, hva, MB, u64::from(id) * 256))
            .expect("room");
    }
    for (s, e) in [
        (0, u64::MAX),
        (5 * MB + 10, 9 * MB),
        (20 * MB, 20 * MB + 1),
        (100 * MB, 200 * MB),
    ] {
        let one = walk(&mut idx, s, e, 64, 64, |_| {});
        for out in [1, 2, 5] {
            for scan in [1, 3, 17, 1000] {
                assert_eq!(
                    walk(&mut idx, s, e, out, scan, |_| {}),
                    one,
                    "[{s:#x}, {e:#x}) out {out} scan {scan}"
                );
            }
        }
    }
}

#[test]
fn slots_that_stay_are_found_once_while_others_come_and_go() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..200 {
        let mut idx = Index::new(ArrayStore::default());
        // Every slot backs the same HVAs, so every one present is a hit.
        let mut stable = Vec::new();
        for id in 0..64u16 {
            if rand(2) == 0 {
                idx.insert(range(id, 0, MB, u64::from(id) << 20))
                    .expect("room");
                if rand(2) == 0 {
                    stable.push(id);
                }
            }
        }
        let found = walk(
            &mut idx,
            0,
            MB,
            1 + rand(4) as usize,
            1 + rand(8) as usize,
            |idx| {
                // Between batches: delete, re-create or move a slot that is not stable.
                let id = rand(64) as u16;
                if stable.contains(&id) {
                    return;
                }
                match rand(3) {
                    0 => idx.remove(id),
                    1 => idx
                        .insert(range(id, 0, MB, u64::from(id) << 20))
                        .expect("room"),
                    _ => idx.set_base(id, Gfn::new((u64::from(id) << 20) + 1)),
                }
            },
        );
        for id in &stable {
            let n = found
                .iter()
                .filter(|s| s.start.raw() >> 20 == u64::from(*id))
                .count();
            assert_eq!(n, 1, "round {round}: slot {id} found {n} times");
        }
        // Nothing is found twice.
        let mut starts: Vec<u64> = found.iter().map(|s| s.start.raw() >> 20).collect();
        starts.sort_unstable();
        let len = starts.len();
        starts.dedup();
        assert_eq!(starts.len(), len, "round {round}: a slot found twice");
    }
}
