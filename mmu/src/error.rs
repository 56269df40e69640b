// SPDX-License-Identifier: GPL-2.0-only
//! The MMU core's error type. Converted to an errno only at the ioctl boundary.

use core::fmt;

/// Why an MMU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum MmuError {
    /// A memory-cache top-up or a root allocation failed (`-ENOMEM`).
    NoMemory,
    /// The VM hit a broken invariant or a fatal external (TDX module) error earlier and refuses
    /// all further work, as KVM does after `KVM_BUG_ON` (`-EIO`).
    Bugged,
    /// The lock guard passed in belongs to another MMU (`-EINVAL`; a caller bug).
    WrongLock,
    /// A private fault or zap on a VM without a mirror root (`-EINVAL`).
    NoPrivateRoot,
    /// The GFN (or the end of the range) is beyond the VM's guest-physical address width, or
    /// carries the shared bit where a memslot GFN is expected (`-EINVAL`).
    GfnOutOfRange,
    /// The requested mapping contradicts an existing private mapping that cannot be changed in
    /// place (a different PFN under the same private GFN) (`-EEXIST`).
    Conflict,
    /// The external page table reported "busy" past the backend's own retries; nothing was
    /// changed for the entry that failed, retrying the operation is correct (`-EBUSY`).
    ExternalBusy,
}

impl MmuError {
    /// The Linux errno (positive) KVM would return for this error.
    pub const fn errno(self) -> i32 {
        match self {
            MmuError::NoMemory => 12, // ENOMEM
            MmuError::Bugged => 5,    // EIO
            MmuError::WrongLock | MmuError::NoPrivateRoot | MmuError::GfnOutOfRange => 22, // EINVAL
            MmuError::Conflict => 17, // EEXIST
            MmuError::ExternalBusy => 16, // EBUSY
        }
    }
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            MmuError::NoMemory => "out of memory",
            MmuError::Bugged => "VM is bugged",
            MmuError::WrongLock => "lock guard of another MMU",
            MmuError::NoPrivateRoot => "VM has no private memory",
            MmuError::GfnOutOfRange => "GFN out of range",
            MmuError::Conflict => "conflicting private mapping",
            MmuError::ExternalBusy => "external page table busy",
        };
        f.write_str(s)
    }
}
