// SPDX-License-Identifier: GPL-2.0-only
//! Dirty logging: the per-slot dirty bitmap and the checks of `KVM_GET_DIRTY_LOG`,
//! `KVM_CLEAR_DIRTY_LOG` and `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` (upstream
//! virt/kvm/kvm_main.c: `mark_page_dirty_in_slot`, `kvm_get_dirty_log_protect`,
//! `kvm_clear_dirty_log_protect`, `kvm_vm_ioctl_enable_cap_generic`, 6.12).
//!
//! The bitmap is the caller's storage, a slice of `AtomicU64` words (bit `i % 64` of word
//! `i / 64` is page `i` of the slot, i.e. upstream's `unsigned long` bitmap on a 64-bit
//! little-endian host, byte for byte what userspace gets). Faults of several vCPUs set bits
//! concurrently under the shared MMU lock ([`mark`]); the ioctls take words atomically
//! ([`harvest`], [`clear`]), so a bit set while they run is either reported now or stays for
//! the next call, never lost.
//!
//! What re-arms a reported page (write-protection) is the MMU's; these functions hand each
//! taken word to the caller's `protect` as (first page of the word, mask).

use crate::uapi::KVM_USER_MEM_SLOTS;
use crate::Errno;
use core::sync::atomic::{AtomicU64, Ordering};

/// `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE`: `KVM_GET_DIRTY_LOG` neither clears nor
/// write-protects; `KVM_CLEAR_DIRTY_LOG` does, for the pages userspace names.
pub const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: u64 = 1 << 0;
/// `KVM_DIRTY_LOG_INITIALLY_SET`: a slot starts logging with every bit set and nothing
/// write-protected (only with manual protect).
pub const KVM_DIRTY_LOG_INITIALLY_SET: u64 = 1 << 1;
/// What `KVM_CHECK_EXTENSION(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` answers on x86
/// (`KVM_DIRTY_LOG_MANUAL_CAPS`).
pub const KVM_DIRTY_LOG_MANUAL_CAPS: u64 =
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

/// Words of a bitmap for `npages` pages (upstream `kvm_dirty_bitmap_bytes() / 8`).
pub const fn bitmap_words(npages: u64) -> usize {
    npages.div_ceil(64) as usize
}

/// Bytes userspace's bitmap has for `npages` pages (upstream `kvm_dirty_bitmap_bytes`).
pub const fn bitmap_bytes(npages: u64) -> usize {
    bitmap_words(npages) * 8
}

/// The slot a `KVM_GET_DIRTY_LOG` / `KVM_CLEAR_DIRTY_LOG` names: the id, after upstream's
/// check of the address space (bits 31:16) and the id (bits 15:0).
///
/// # Errors
///
/// [`Errno::EINVAL`]: an address space at or beyond `nr_as_ids`, or an id at or beyond
/// `KVM_USER_MEM_SLOTS`.
pub fn check_slot(slot: u32, nr_as_ids: u16) -> Result<u16, Errno> {
    let as_id = slot >> 16;
    let id = slot as u16;
    if as_id >= u32::from(nr_as_ids) || u32::from(id) >= KVM_USER_MEM_SLOTS {
        return Err(Errno::EINVAL);
    }
    Ok(id)
}

/// Marks page `rel` of the slot dirty (upstream `mark_page_dirty_in_slot`'s `set_bit_le`).
/// Returns `false`, marking nothing, if `rel` is beyond the bitmap (the caller looked the slot
/// up wrongly: upstream WARNs).
pub fn mark(bits: &[AtomicU64], rel: u64) -> bool {
    match bits.get((rel / 64) as usize) {
        Some(w) => {
            w.fetch_or(1 << (rel % 64), Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Whether page `rel` is marked.
pub fn is_marked(bits: &[AtomicU64], rel: u64) -> bool {
    bits.get((rel / 64) as usize)
        .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (rel % 64)) != 0)
}

/// Sets the bits of pages `0..npages` (`KVM_DIRTY_LOG_INITIALLY_SET`: a slot starts logging
/// with every page dirty). Bits beyond `npages` in the last word stay clear: userspace never
/// sees pages the slot does not have.
pub fn set_all(bits: &[AtomicU64], npages: u64) {
    for (i, w) in bits.iter().enumerate() {
        let first = i as u64 * 64;
        if first >= npages {
            break;
        }
        let n = (npages - first).min(64);
        let m = if n == 64 { u64::MAX } else { (1 << n) - 1 };
        w.fetch_or(m, Ordering::Relaxed);
    }
}

/// `KVM_GET_DIRTY_LOG` without manual protect: takes every non-zero word (atomically, so a bit
/// a fault sets meanwhile is either in `out` or stays), copies it into `out` (every word of
/// `out` is written, zero where nothing was dirty) and yields `(first page, mask)` for each
/// dirty word, the pages the caller re-arms (upstream: `kvm_arch_mmu_enable_log_dirty_pt_masked`
/// under the MMU lock). `out` should have `bits.len()` words; the shorter of the two counts.
///
/// The words are taken lazily, one per step of the iterator, so a caller that hands it to the
/// MMU under its lock takes them under that lock, as upstream's `xchg` loop does; words the
/// iterator never reached are neither taken nor written to `out`.
pub fn harvest<'a>(
    bits: &'a [AtomicU64],
    out: &'a mut [u64],
) -> impl Iterator<Item = (u64, u64)> + 'a {
    out.iter_mut()
        .zip(bits.iter())
        .enumerate()
        .filter_map(|(i, (o, w))| {
            // A plain load first, as upstream: most words of a large slot are clean, and a
            // swap of a clean word would dirty its cache line for nothing.
            let m = if w.load(Ordering::Relaxed) == 0 {
                0
            } else {
                w.swap(0, Ordering::AcqRel)
            };
            *o = m;
            (m != 0).then_some((i as u64 * 64, m))
        })
}

/// `KVM_GET_DIRTY_LOG` with manual protect: a copy of the bitmap as it is, nothing cleared or
/// re-armed (that is `KVM_CLEAR_DIRTY_LOG`'s job).
pub fn snapshot(bits: &[AtomicU64], out: &mut [u64]) {
    for (o, w) in out.iter_mut().zip(bits.iter()) {
        *o = w.load(Ordering::Relaxed);
    }
}

/// A `KVM_CLEAR_DIRTY_LOG` request's page range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClearRange {
    /// First page (slot-relative); a multiple of 64.
    pub first_page: u64,
    /// Number of pages.
    pub num_pages: u32,
}

impl ClearRange {
    /// Upstream's first check, before the slot is looked up: `first_page` must start a word.
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`] if `first_page` is not a multiple of 64.
    pub fn check_alignment(&self) -> Result<(), Errno> {
        if self.first_page & 63 != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// The checks against the slot's size; returns how many bytes of userspace's bitmap are
    /// read (`ALIGN(num_pages, 64) / 8`).
    ///
    /// # Errors
    ///
    /// [`Errno::EINVAL`]: the range starts beyond the slot or does not fit in it, or ends
    /// before the slot's last page at a `num_pages` that is not a multiple of 64.
    pub fn check(&self, npages: u64) -> Result<usize, Errno> {
        let num = u64::from(self.num_pages);
        if self.first_page > npages
            || num > npages - self.first_page
            || (num < npages - self.first_page && num & 63 != 0)
        {
            return Err(Errno::EINVAL);
        }
        Ok(bitmap_bytes(num))
    }
}

/// `KVM_CLEAR_DIRTY_LOG` after [`ClearRange::check`]: clears, in the words from
/// `range.first_page` on, the bits userspace set in `user` (its words, little-endian, as read
/// from its bitmap) and yields what was really cleared — bits that were set and are now clear —
/// as `(first page of the word, mask)`, the pages the caller re-arms. Bits userspace sets
/// beyond the slot were never set here, so they clear nothing. Lazy like [`harvest`].
pub fn clear<'a>(
    bits: &'a [AtomicU64],
    range: ClearRange,
    user: &'a [u64],
) -> impl Iterator<Item = (u64, u64)> + 'a {
    let first_word = (range.first_page / 64) as usize;
    let words = bitmap_words(u64::from(range.num_pages));
    bits.iter()
        .skip(first_word)
        .zip(user.iter())
        .take(words)
        .enumerate()
        .filter_map(move |(i, (w, &want))| {
            if want == 0 {
                return None;
            }
            let cleared = want & w.fetch_and(!want, Ordering::AcqRel);
            (cleared != 0).then_some(((first_word + i) as u64 * 64, cleared))
        })
}

/// `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)`: the new value of the VM's
/// `manual_dirty_log_protect` (0 turns manual protect off again).
///
/// # Errors
///
/// [`Errno::EINVAL`]: flags other than 0, or bits beyond [`KVM_DIRTY_LOG_MANUAL_CAPS`], or
/// `KVM_DIRTY_LOG_INITIALLY_SET` without `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE`.
pub fn enable_manual_protect(flags: u32, arg0: u64) -> Result<u64, Errno> {
    let allowed = if arg0 & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE != 0 {
        KVM_DIRTY_LOG_MANUAL_CAPS
    } else {
        KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    };
    if flags != 0 || arg0 & !allowed != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(arg0)
}

/// Whether a slot that starts logging starts with every bit set and nothing write-protected
/// (upstream `kvm_dirty_log_manual_protect_and_init_set`).
pub const fn initially_set(manual_protect: u64) -> bool {
    manual_protect & KVM_DIRTY_LOG_INITIALLY_SET != 0
}

/// Whether `KVM_GET_DIRTY_LOG` leaves the bitmap and the mappings alone.
pub const fn manual(manual_protect: u64) -> bool {
    manual_protect != 0
}
