// SPDX-License-Identifier: GPL-2.0-only
//! The errnos the state ABI answers with, so the kernel-free rules can say exactly which one
//! upstream returns and the module only converts.

/// An ioctl failure, with upstream KVM's errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    /// `E2BIG`: a count above the limit, or a buffer too small for the answer.
    E2big = 7,
    /// `ENOMEM`.
    Enomem = 12,
    /// `EFAULT`: user memory could not be read or written.
    Efault = 14,
    /// `EBUSY`.
    Ebusy = 16,
    /// `EINVAL`: the value breaks a rule.
    Einval = 22,
    /// `ENXIO`: no such attribute or device.
    Enxio = 6,
    /// `EOPNOTSUPP`.
    Eopnotsupp = 95,
}

impl Errno {
    /// The positive errno number.
    pub fn number(self) -> i32 {
        self as i32
    }
}

/// A result of the state rules.
pub type Result<T = ()> = core::result::Result<T, Errno>;
