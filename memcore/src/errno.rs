// SPDX-License-Identifier: GPL-2.0-only
//! The errnos the memory ioctls answer. Values are Linux's (`include/uapi/asm-generic/errno*.h`),
//! so the module turns one into its `kernel::error::Error` with a plain lookup.

/// An error an ioctl of this crate's area returns to userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Errno {
    /// Operation not permitted.
    EPERM,
    /// No such entry (`KVM_PRE_FAULT_MEMORY` outside every memslot).
    ENOENT,
    /// Interrupted by a signal before any progress.
    EINTR,
    /// I/O error (an invariant broke; upstream WARNs).
    EIO,
    /// Bad file descriptor.
    EBADF,
    /// Try again.
    EAGAIN,
    /// Out of memory (a store is full, or an allocation failed).
    ENOMEM,
    /// Bad address.
    EFAULT,
    /// Resource busy.
    EBUSY,
    /// Exists (an overlapping memslot).
    EEXIST,
    /// Invalid argument.
    EINVAL,
    /// Operation not supported.
    EOPNOTSUPP,
}

impl Errno {
    /// The positive errno value.
    pub const fn to_errno(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::ENOENT => 2,
            Errno::EINTR => 4,
            Errno::EIO => 5,
            Errno::EBADF => 9,
            Errno::EAGAIN => 11,
            Errno::ENOMEM => 12,
            Errno::EFAULT => 14,
            Errno::EBUSY => 16,
            Errno::EEXIST => 17,
            Errno::EINVAL => 22,
            Errno::EOPNOTSUPP => 95,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn values_are_linux_errnos() {
        assert_eq!(Errno::EEXIST.to_errno(), 17);
        assert_eq!(Errno::EINVAL.to_errno(), 22);
        assert_eq!(Errno::EOPNOTSUPP.to_errno(), 95);
        assert_eq!(Errno::ENOENT.to_errno(), 2);
        assert_eq!(Errno::EINTR.to_errno(), 4);
    }
}
