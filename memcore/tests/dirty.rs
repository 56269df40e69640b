// SPDX-License-Identifier: GPL-2.0-only
//! The dirty bitmap and the checks of `KVM_GET_DIRTY_LOG`, `KVM_CLEAR_DIRTY_LOG` and
//! `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` against upstream 6.12's rules, including
//! marks that race with a harvest.

use core::sync::atomic::{AtomicU64, Ordering};
use memcore::dirty::*;
use memcore::Errno;

fn bitmap(npages: u64) -> Vec<AtomicU64> {
    (0..bitmap_words(npages))
        .map(|_| AtomicU64::new(0))
        .collect()
}

fn words(bits: &[AtomicU64]) -> Vec<u64> {
    bits.iter().map(|w| w.load(Ordering::Relaxed)).collect()
}

#[test]
fn sizes_round_up_to_whole_words() {
    assert_eq!(bitmap_words(0), 0);
    assert_eq!(bitmap_words(1), 1);
    assert_eq!(bitmap_words(64), 1);
    assert_eq!(bitmap_words(65), 2);
    assert_eq!(bitmap_bytes(65), 16);
    // The largest memslot (KVM_MEM_MAX_NR_PAGES).
    assert_eq!(bitmap_bytes((1 << 31) - 1), 1 << 28);
}

#[test]
fn slot_ids_are_checked_as_upstream() {
    assert_eq!(check_slot(0, 1), Ok(0));
    assert_eq!(check_slot(32763, 1), Ok(32763));
    assert_eq!(
        check_slot(32764, 1),
        Err(Errno::EINVAL),
        "KVM_USER_MEM_SLOTS"
    );
    assert_eq!(check_slot(0xffff, 1), Err(Errno::EINVAL));
    assert_eq!(
        check_slot(1 << 16, 1),
        Err(Errno::EINVAL),
        "address space 1"
    );
    assert_eq!(
        check_slot(1 << 16 | 3, 2),
        Ok(3),
        "address space 1 with SMM"
    );
    assert_eq!(check_slot(u32::MAX, 2), Err(Errno::EINVAL));
}

#[test]
fn marks_land_on_their_bit_and_out_of_range_marks_nothing() {
    let b = bitmap(130);
    assert!(mark(&b, 0));
    assert!(mark(&b, 63));
    assert!(mark(&b, 64));
    assert!(mark(&b, 129));
    assert!(mark(&b, 129), "marking twice is fine");
    assert!(!mark(&b, 192), "beyond the bitmap");
    assert_eq!(words(&b), [1 | 1 << 63, 1, 1 << 1]);
    assert!(is_marked(&b, 63) && !is_marked(&b, 62) && !is_marked(&b, 1000));
}

#[test]
fn harvest_takes_dirty_words_and_reports_them_once() {
    let b = bitmap(200);
    for p in [1, 2, 70, 199] {
        mark(&b, p);
    }
    let mut out = vec![0xdead_beef; b.len()];
    let taken: Vec<_> = harvest(&b, &mut out).collect();
    assert_eq!(taken, [(0, 0b110), (64, 1 << 6), (192, 1 << 7)]);
    // Every word of `out` is written, clean ones with 0.
    assert_eq!(out, [0b110, 1 << 6, 0, 1 << 7]);
    assert_eq!(words(&b), [0; 4]);
    // A second harvest finds nothing until a page is marked again.
    assert_eq!(harvest(&b, &mut out).count(), 0);
    assert_eq!(out, [0; 4]);
    mark(&b, 5);
    assert_eq!(harvest(&b, &mut out).collect::<Vec<_>>(), [(0, 1 << 5)]);
}

#[test]
fn harvest_is_lazy_so_words_are_taken_by_whoever_consumes_it() {
    let b = bitmap(128);
    mark(&b, 3);
    mark(&b, 100);
    let mut out = vec![0; 2];
    let mut it = harvest(&b, &mut out);
    assert_eq!(it.next(), Some((0, 1 << 3)));
    // The second word was not reached: still there.
    assert_eq!(b[1].load(Ordering::Relaxed), 1 << 36);
    drop(it);
    assert_eq!(b[0].load(Ordering::Relaxed), 0);
}

#[test]
fn marks_racing_with_harvests_are_never_lost_or_reported_twice() {
    let npages = 4096;
    let b = bitmap(npages);
    let seen = std::sync::Mutex::new(vec![0u32; npages as usize]);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let b = &b;
            s.spawn(move || {
                for p in (t..npages).step_by(4) {
                    mark(b, p);
                }
            });
        }
        s.spawn(|| {
            let mut out = vec![0; b.len()];
            for _ in 0..200 {
                for (base, m) in harvest(&b, &mut out) {
                    let mut seen = seen.lock().unwrap();
                    for i in 0..64 {
                        if m & 1 << i != 0 {
                            seen[(base + i) as usize] += 1;
                        }
                    }
                }
            }
        });
    });
    let mut out = vec![0; b.len()];
    for (base, m) in harvest(&b, &mut out) {
        let mut seen = seen.lock().unwrap();
        for i in 0..64 {
            if m & 1 << i != 0 {
                seen[(base + i) as usize] += 1;
            }
        }
    }
    assert!(seen.lock().unwrap().iter().all(|&n| n == 1));
}

#[test]
fn snapshot_copies_without_clearing() {
    let b = bitmap(70);
    mark(&b, 69);
    let mut out = vec![7; 2];
    snapshot(&b, &mut out);
    assert_eq!(out, [0, 1 << 5]);
    assert!(is_marked(&b, 69));
}

#[test]
fn set_all_sets_exactly_the_slots_pages() {
    for npages in [1, 63, 64, 65, 130] {
        let b = bitmap(npages);
        set_all(&b, npages);
        for p in 0..bitmap_words(npages) as u64 * 64 {
            assert_eq!(is_marked(&b, p), p < npages, "npages {npages} page {p}");
        }
    }
}

#[test]
fn clear_range_checks_follow_upstream() {
    let r = |first_page, num_pages| ClearRange {
        first_page,
        num_pages,
    };
    assert_eq!(r(1, 64).check_alignment(), Err(Errno::EINVAL));
    assert_eq!(r(63, 64).check_alignment(), Err(Errno::EINVAL));
    assert_eq!(r(128, 64).check_alignment(), Ok(()));
    // A 200-page slot.
    assert_eq!(r(0, 200).check(200), Ok(32));
    assert_eq!(r(0, 64).check(200), Ok(8));
    assert_eq!(r(64, 136).check(200), Ok(24), "to the end: any count");
    assert_eq!(r(192, 8).check(200), Ok(8));
    assert_eq!(r(0, 0).check(200), Ok(0), "nothing: fine");
    assert_eq!(r(200, 0).check(200), Ok(0), "at the end, nothing");
    assert_eq!(r(256, 0).check(200), Err(Errno::EINVAL), "beyond the slot");
    assert_eq!(r(0, 201).check(200), Err(Errno::EINVAL), "too long");
    assert_eq!(
        r(64, 137).check(200),
        Err(Errno::EINVAL),
        "too long from 64"
    );
    assert_eq!(
        r(0, 10).check(200),
        Err(Errno::EINVAL),
        "short and not a multiple of 64"
    );
    assert_eq!(r(0, u32::MAX).check(200), Err(Errno::EINVAL));
    assert_eq!(
        r(u64::MAX - 63, 64).check(200),
        Err(Errno::EINVAL),
        "no overflow"
    );
}

#[test]
fn clear_clears_only_what_was_set_and_asked_for() {
    let b = bitmap(200);
    for p in [0, 1, 64, 65, 130, 199] {
        mark(&b, p);
    }
    // Clear pages 64.. (words 1, 2, 3): ask for 64, 66 (clean), 130 and everything of word 3.
    let range = ClearRange {
        first_page: 64,
        num_pages: 136,
    };
    let user = [1 | 1 << 2, 1 << 2, u64::MAX];
    let cleared: Vec<_> = clear(&b, range, &user).collect();
    assert_eq!(cleared, [(64, 1), (128, 1 << 2), (192, 1 << 7)]);
    assert_eq!(words(&b), [0b11, 1 << 1, 0, 0]);
    // Clearing again reports nothing.
    assert_eq!(clear(&b, range, &user).count(), 0);
}

#[test]
fn clear_reads_only_the_words_the_range_covers() {
    let b = bitmap(256);
    set_all(&b, 256);
    let range = ClearRange {
        first_page: 64,
        num_pages: 64,
    };
    // A longer user buffer: only its first word counts.
    let cleared: Vec<_> = clear(&b, range, &[u64::MAX, u64::MAX]).collect();
    assert_eq!(cleared, [(64, u64::MAX)]);
    assert_eq!(words(&b), [u64::MAX, 0, u64::MAX, u64::MAX]);
}

#[test]
fn manual_protect_cap_values_follow_upstream() {
    assert_eq!(KVM_DIRTY_LOG_MANUAL_CAPS, 3);
    assert_eq!(enable_manual_protect(0, 0), Ok(0));
    assert_eq!(enable_manual_protect(0, 1), Ok(1));
    assert_eq!(enable_manual_protect(0, 3), Ok(3));
    assert_eq!(
        enable_manual_protect(0, 2),
        Err(Errno::EINVAL),
        "INITIALLY_SET alone"
    );
    assert_eq!(enable_manual_protect(0, 4), Err(Errno::EINVAL));
    assert_eq!(enable_manual_protect(0, 1 << 63 | 1), Err(Errno::EINVAL));
    assert_eq!(enable_manual_protect(1, 1), Err(Errno::EINVAL), "flags");
    assert!(manual(1) && manual(3) && !manual(0));
    assert!(initially_set(3) && !initially_set(1));
}
