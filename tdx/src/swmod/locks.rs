// SPDX-License-Identifier: GPL-2.0-only
//! The TDX module's host-side locks: try-locks that never spin.
//!
//! The real module never waits for a lock held by another logical processor: the leaf fails with
//! `TDX_OPERAND_BUSY` and the operand id of the contended resource, and the host retries. The
//! software module does the same, so a host that calls it from several CPUs sees the same
//! contention (`src/common/helpers/tdx_locks.h`: sharex locks; bit 0 exclusive, readers counted
//! above it).

use core::sync::atomic::{AtomicU64, Ordering};

/// Lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Shared with other shared holders.
    Shared,
    /// Exclusive.
    Exclusive,
}

/// A sharex lock in the low 16 bits of an atomic word whose other bits carry data.
pub(crate) const LOCK_MASK: u64 = 0xffff;
const EXCL: u64 = 1;
const READER: u64 = 2;

/// Tries to take the lock bits of `word`. Returns whether it succeeded.
pub(crate) fn try_lock(word: &AtomicU64, mode: Mode) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        let lock = cur & LOCK_MASK;
        let new_lock = match mode {
            Mode::Exclusive if lock == 0 => EXCL,
            Mode::Shared if lock & EXCL == 0 && lock + READER <= LOCK_MASK => lock + READER,
            _ => return false,
        };
        match word.compare_exchange_weak(
            cur,
            (cur & !LOCK_MASK) | new_lock,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(c) => cur = c,
        }
    }
}

/// Releases what [`try_lock`] took.
pub(crate) fn unlock(word: &AtomicU64, mode: Mode) {
    match mode {
        Mode::Exclusive => {
            word.fetch_and(!EXCL, Ordering::Release);
        }
        Mode::Shared => {
            word.fetch_sub(READER, Ordering::Release);
        }
    }
}

/// A held lock, released on drop.
#[must_use]
pub(crate) struct Held<'a> {
    word: &'a AtomicU64,
    mode: Mode,
}

impl<'a> Held<'a> {
    /// Takes the lock or returns `None` (the caller answers BUSY).
    pub(crate) fn try_new(word: &'a AtomicU64, mode: Mode) -> Option<Self> {
        // `then`, not `then_some`: a `Held` built eagerly would unlock on drop when the lock
        // was not taken.
        try_lock(word, mode).then(|| Held { word, mode })
    }

    /// The mode held.
    #[cfg(test)]
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        unlock(self.word, self.mode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_excludes_exclusive_and_keeps_data_bits() {
        let w = AtomicU64::new(0xabcd_0000);
        let a = Held::try_new(&w, Mode::Shared).unwrap();
        let b = Held::try_new(&w, Mode::Shared).unwrap();
        assert!(Held::try_new(&w, Mode::Exclusive).is_none());
        drop((a, b));
        let x = Held::try_new(&w, Mode::Exclusive).unwrap();
        assert!(Held::try_new(&w, Mode::Shared).is_none());
        assert_eq!(x.mode(), Mode::Exclusive);
        drop(x);
        assert_eq!(w.load(Ordering::Relaxed), 0xabcd_0000);
    }
}
