// SPDX-License-Identifier: GPL-2.0-only
//! The errnos of the TDX sub-commands, as a type the core returns and the module turns into
//! kernel errors (`Errno::raw` is the positive Linux number).

/// A Linux errno (positive), one of the few the TDX sub-commands return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(i32);

impl Errno {
    /// EINTR: a signal stopped INIT_MEM_REGION.
    pub const EINTR: Errno = Errno(4);
    /// EIO: the TDX module failed in a way the user did not cause.
    pub const EIO: Errno = Errno(5);
    /// E2BIG: a CPUID array is too small (CAPABILITIES, GET_CPUID) or too large (INIT_VM).
    pub const E2BIG: Errno = Errno(7);
    /// EAGAIN: the module ran out of entropy (MNG.CREATE/ADDCX); the user retries.
    pub const EAGAIN: Errno = Errno(11);
    /// ENOMEM.
    pub const ENOMEM: Errno = Errno(12);
    /// EFAULT: a bad user pointer.
    pub const EFAULT: Errno = Errno(14);
    /// EBUSY: vCPUs exist already (INIT_VM), or the module answered OPERAND_BUSY.
    pub const EBUSY: Errno = Errno(16);
    /// EEXIST.
    pub const EEXIST: Errno = Errno(17);
    /// EINVAL: bad arguments or the wrong state.
    pub const EINVAL: Errno = Errno(22);
    /// ENOTTY: not a TD (the VM fd's `KVM_MEMORY_ENCRYPT_OP`).
    pub const ENOTTY: Errno = Errno(25);
    /// EOPNOTSUPP.
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// The positive errno.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self.0
    }
}
