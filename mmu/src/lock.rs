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
    /// HOOK(gmemfault): whether a long walk holding the exclusive side should let go now
    /// (upstream `need_resched() || rwlock_needbreak(&kvm->mmu_lock)`). Never by default.
    fn needbreak(&self) -> bool {
        false
    }
    /// HOOK(gmemfault): releases the exclusive side, reschedules, takes it again (upstream
    /// `cond_resched_rwlock_write`). The default only releases and retakes.
    ///
    /// # Safety
    ///
    /// The caller holds the exclusive side, and may sleep.
    unsafe fn resched_exclusive(&self) {
        // SAFETY: forwarded caller guarantee.
        unsafe { self.unlock_exclusive() };
        self.lock_exclusive();
    }
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
    /// HOOK(gmemfault): long walks may drop and retake the lock
    /// ([`ExclusiveGuard::resched`]): the holder can sleep and nothing it holds depends on the
    /// lock staying held (upstream `can_yield` / `range->may_block`).
    may_yield: bool,
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
            may_yield: false,
            _not_send: PhantomData,
        }
    }

    /// HOOK(gmemfault): as [`ExclusiveGuard::acquire`], for a holder that may yield.
    pub(crate) fn acquire_may_yield(lock: &'a dyn RawRwLock, owner: *const ()) -> Self {
        let mut g = Self::acquire(lock, owner);
        g.may_yield = true;
        g
    }

    /// Whether a walk under this guard should yield now: the holder allows it and the lock's
    /// environment asks for it.
    pub(crate) fn needbreak(&self) -> bool {
        self.may_yield && self.lock.needbreak()
    }

    /// Drops the lock, reschedules and retakes it (upstream `cond_resched_rwlock_write`). Every
    /// pointer into the tables a walker held is stale afterwards: it restarts from the root.
    /// Does nothing unless the holder allows yielding.
    pub(crate) fn resched(&self) {
        if self.may_yield {
            // SAFETY: the exclusive side is held (type invariant) and retaken before this
            // returns; the holder said it may sleep (`may_yield`).
            unsafe { self.lock.resched_exclusive() };
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
