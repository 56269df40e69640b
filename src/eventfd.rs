// SPDX-License-Identifier: GPL-2.0-only
//! Counted references to eventfds (`struct eventfd_ctx`), for `KVM_IOEVENTFD`.
//!
//! The C glue (`glue.c`, "exits" section) wraps `eventfd_ctx_fdget`, `eventfd_signal` and
//! `eventfd_ctx_put`; its declarations live here rather than in `glue.rs` because nothing else
//! uses them.

use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use kernel::prelude::*;

extern "C" {
    fn tdxkvm_eventfd_get(fd: c_int, out: *mut *mut c_void) -> c_int;
    fn tdxkvm_eventfd_signal(ctx: *mut c_void);
    fn tdxkvm_eventfd_put(ctx: *mut c_void);
}

/// One reference to an eventfd context; dropped with `eventfd_ctx_put`. Two handles are equal
/// when they refer to the same context (upstream compares `eventfd_ctx` pointers).
pub(crate) struct EventFd(NonNull<c_void>);

// SAFETY: an eventfd context reference may be signalled and put from any thread.
unsafe impl Send for EventFd {}
// SAFETY: `eventfd_signal` takes the context's own lock; no Rust-side state.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd behind `fd` in the current process: `EBADF` if `fd` is not open, `EINVAL`
    /// if it is not an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        let mut p: *mut c_void = core::ptr::null_mut();
        // SAFETY: `p` is a valid out-pointer; the glue stores a counted reference on success.
        let r = unsafe { tdxkvm_eventfd_get(fd, &mut p) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        NonNull::new(p).map(EventFd).ok_or(EINVAL)
    }

    /// Signals the eventfd (adds 1 to its counter, wakes readers).
    pub(crate) fn signal(&self) {
        // SAFETY: `self.0` is a live counted reference.
        unsafe { tdxkvm_eventfd_signal(self.0.as_ptr()) }
    }
}

impl PartialEq for EventFd {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `from_fd`, given back once.
        unsafe { tdxkvm_eventfd_put(self.0.as_ptr()) }
    }
}
