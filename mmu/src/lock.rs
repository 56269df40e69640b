// SPDX-License-Identifier: GPL-2.0-only
//! The MMU lock and the guards that prove which mode a caller holds.
//!
//! KVM's `mmu_lock` is an rwlock: faults run in parallel under the read (shared) side and use
//! compare-exchange on entries; zaps of the mirror root need the write (exclusive) side because
//! the TDX module's S-EPT must see BLOCK/TRACK/REMOVE in order with nothing racing in between.
//! Upstream states the mode in `lockdep_assert_held*()`; here the mode is a type: an entry point
//! that needs exclusivity takes [`ExclusiveGuard`], one that is fine with either takes
//! `&impl MmuLockHeld`. A guard also records which MMU it locks, and every entry point checks it.
//!
//! # Why the proof cannot be forged
//!
//! The entry points trust a guard to mean "this thread holds that MMU's lock": a walk under it
//! dereferences table pages that a concurrent zap frees. So only the two guards are proofs:
//! [`MmuLockHeld`] is sealed (its supertrait lives in a private module), the guards have private
//! fields and crate-private constructors, and the only way to get one is
//! [`TdpMmu::read`](crate::tdp::TdpMmu::read) / [`TdpMmu::write`](crate::tdp::TdpMmu::write),
//! which take the lock. Outside code cannot implement the proof trait:
//!
//! ```compile_fail,E0277
//! struct Forged(*const ());
//! impl mmu::lock::MmuLockHeld for Forged {
//!     fn owner(&self) -> *const () {
//!         self.0
//!     }
//!     fn is_exclusive(&self) -> bool {
//!         true
//!     }
//! }
//! ```
//!
//! nor build a guard without taking the lock, with a struct literal or the crate's constructor:
//!
//! ```compile_fail,E0451
//! use mmu::lock::{RawRwLock, SharedGuard};
//! fn forge<'a>(lock: &'a dyn RawRwLock, owner: *const ()) -> SharedGuard<'a> {
//!     SharedGuard { lock, owner, _not_send: core::marker::PhantomData }
//! }
//! ```
//!
//! ```compile_fail,E0624
//! use mmu::lock::{ExclusiveGuard, RawRwLock};
//! fn forge<'a>(lock: &'a dyn RawRwLock, owner: *const ()) -> ExclusiveGuard<'a> {
//!     ExclusiveGuard::acquire(lock, owner)
//! }
//! ```
//!
//! What compiles is taking the lock through the MMU:
//!
//! ```
//! use mmu::lock::MmuLockHeld;
//! let mmu = testkit::td_mmu::<mmu::spte::Ept>();
//! let shared = mmu.read();
//! assert!(!shared.is_exclusive());
//! drop(shared);
//! assert!(mmu.write().is_exclusive());
//! ```

use core::marker::PhantomData;

/// Seals [`MmuLockHeld`]: the supertrait is public but unnameable outside the crate, so only the
/// crate's guards implement it.
mod sealed {
    pub trait Sealed {}
}

/// A reader-writer lock provided by the environment (the kernel's `rwlock_t` in the module, a
/// `std`/`parking_lot` lock on the host).
///
/// # Safety
///
/// Implementors must provide reader-writer exclusion: while any caller holds the exclusive side
/// no other caller holds either side, and `unlock_*` is only called by a holder of that side.
pub unsafe trait RawRwLock: Sync {
    /// Acquires the shared side, spinning or sleeping as the environment does.
    fn lock_shared(&self);
    /// Releases the shared side.
    ///
    /// # Safety
    ///
    /// The caller holds the shared side.
    unsafe fn unlock_shared(&self);
    /// Acquires the exclusive side.
    fn lock_exclusive(&self);
    /// Releases the exclusive side.
    ///
    /// # Safety
    ///
    /// The caller holds the exclusive side.
    unsafe fn unlock_exclusive(&self);
}

/// Proof that the current context holds an MMU lock in some mode.
///
/// Sealed: implemented by [`SharedGuard`] and [`ExclusiveGuard`] only (see the module docs).
pub trait MmuLockHeld: sealed::Sealed {
    /// Identity of the MMU whose lock is held.
    fn owner(&self) -> *const ();
    /// Whether the lock is held exclusively.
    fn is_exclusive(&self) -> bool;
}

/// The MMU lock held for read.
///
/// # Invariants
///
/// `lock`'s shared side is held for the guard's lifetime and released on drop.
pub struct SharedGuard<'a> {
    lock: &'a dyn RawRwLock,
    owner: *const (),
    // Lock guards stay on the thread that took them.
    _not_send: PhantomData<*const ()>,
}

/// The MMU lock held for write.
///
/// # Invariants
///
/// `lock`'s exclusive side is held for the guard's lifetime and released on drop.
pub struct ExclusiveGuard<'a> {
    lock: &'a dyn RawRwLock,
    owner: *const (),
    _not_send: PhantomData<*const ()>,
}

impl<'a> SharedGuard<'a> {
    /// Takes `lock` for read on behalf of the MMU identified by `owner`.
    pub(crate) fn acquire(lock: &'a dyn RawRwLock, owner: *const ()) -> Self {
        lock.lock_shared();
        // INVARIANT: the shared side was just acquired.
        SharedGuard {
            lock,
            owner,
            _not_send: PhantomData,
        }
    }
}

impl<'a> ExclusiveGuard<'a> {
    /// Takes `lock` for write on behalf of the MMU identified by `owner`.
    pub(crate) fn acquire(lock: &'a dyn RawRwLock, owner: *const ()) -> Self {
        lock.lock_exclusive();
        // INVARIANT: the exclusive side was just acquired.
        ExclusiveGuard {
            lock,
            owner,
            _not_send: PhantomData,
        }
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the shared side is held by this guard.
        unsafe { self.lock.unlock_shared() };
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the exclusive side is held by this guard.
        unsafe { self.lock.unlock_exclusive() };
    }
}

impl sealed::Sealed for SharedGuard<'_> {}
impl sealed::Sealed for ExclusiveGuard<'_> {}

impl MmuLockHeld for SharedGuard<'_> {
    fn owner(&self) -> *const () {
        self.owner
    }
    fn is_exclusive(&self) -> bool {
        false
    }
}

impl MmuLockHeld for ExclusiveGuard<'_> {
    fn owner(&self) -> *const () {
        self.owner
    }
    fn is_exclusive(&self) -> bool {
        true
    }
}
