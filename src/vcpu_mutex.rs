// SPDX-License-Identifier: GPL-2.0-only
//! `vcpu->mutex` with upstream's killable acquisition (HOOK(entry)): `kvm_vcpu_ioctl` takes it
//! with `mutex_lock_killable`, so a thread waiting for a vCPU another thread is running (a
//! guest that never exits, a long `KVM_RUN`) dies on SIGKILL instead of hanging in
//! uninterruptible sleep; the wait ends with `EINTR`. The 6.12 kernel crate's `Mutex` has no
//! killable lock, so the `struct mutex` is the glue's (one lockdep class, "&vcpu->mutex", as
//! upstream's `mutex_init(&vcpu->mutex)`).

use crate::svm::glue as sg;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use kernel::prelude::*;

/// A `struct mutex` guarding a `T`.
///
/// # Invariants
///
/// `raw` points to an initialised `struct mutex` owned by this value; `data` is only reached
/// through a [`VcpuGuard`], which exists only while the mutex is held.
pub(crate) struct VcpuMutex<T> {
    raw: NonNull<c_void>,
    data: UnsafeCell<T>,
}

// SAFETY: the data moves with the mutex; a `struct mutex` may be released on any CPU.
unsafe impl<T: Send> Send for VcpuMutex<T> {}
// SAFETY: the mutex serialises every access to `data` (type invariant).
unsafe impl<T: Send> Sync for VcpuMutex<T> {}

impl<T> VcpuMutex<T> {
    /// A new unlocked mutex around `data`.
    pub(crate) fn new(data: T) -> Result<Self> {
        // SAFETY: kmalloc + mutex_init in the glue.
        let raw = NonNull::new(unsafe { sg::tdxkvm_vcpu_mutex_new() }).ok_or(ENOMEM)?;
        Ok(VcpuMutex {
            raw,
            data: UnsafeCell::new(data),
        })
    }

    /// Takes the mutex, sleeping uninterruptibly (teardown paths).
    pub(crate) fn lock(&self) -> VcpuGuard<'_, T> {
        // SAFETY: an initialised mutex (type invariant), process context.
        unsafe { sg::tdxkvm_vcpu_mutex_lock(self.raw.as_ptr()) };
        VcpuGuard {
            m: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the mutex unless a fatal signal comes first (`EINTR`, upstream
    /// `mutex_lock_killable` in `kvm_vcpu_ioctl`).
    pub(crate) fn lock_killable(&self) -> Result<VcpuGuard<'_, T>> {
        // SAFETY: an initialised mutex (type invariant), process context.
        if unsafe { sg::tdxkvm_vcpu_mutex_lock_killable(self.raw.as_ptr()) } != 0 {
            return Err(EINTR);
        }
        Ok(VcpuGuard {
            m: self,
            _not_send: PhantomData,
        })
    }
}

impl<T> Drop for VcpuMutex<T> {
    fn drop(&mut self) {
        // SAFETY: unlocked (no guard can outlive the borrow `&mut self` ends), freed once.
        unsafe { sg::tdxkvm_vcpu_mutex_free(self.raw.as_ptr()) };
    }
}

/// The held mutex; unlocks on drop. Not `Send`: a mutex is released by the task that took it.
pub(crate) struct VcpuGuard<'a, T> {
    m: &'a VcpuMutex<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for VcpuGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mutex is held for the guard's life (type invariant of VcpuMutex).
        unsafe { &*self.m.data.get() }
    }
}

impl<T> DerefMut for VcpuGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above; `&mut self` makes the borrow exclusive.
        unsafe { &mut *self.m.data.get() }
    }
}

impl<T> Drop for VcpuGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: taken by this guard on this task.
        unsafe { sg::tdxkvm_vcpu_mutex_unlock(self.m.raw.as_ptr()) };
    }
}
