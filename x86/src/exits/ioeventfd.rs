// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_IOEVENTFD` (upstream `virt/kvm/eventfd.c`: `kvm_assign_ioeventfd`,
//! `kvm_deassign_ioeventfd`, `ioeventfd_check_collision`, `ioeventfd_in_range`).
//!
//! An ioeventfd turns a guest write to one MMIO address or port — optionally only of one
//! length and value — into an eventfd signal instead of an exit. The core here is generic over
//! the eventfd handle `E` (the module's counted `eventfd_ctx`, a host test's integer), compared
//! by identity as upstream compares `eventfd_ctx` pointers.

use super::{le_u32, le_u64, Errno};

/// `KVM_IOEVENTFD_FLAG_DATAMATCH`.
pub const FLAG_DATAMATCH: u32 = 1 << 0;
/// `KVM_IOEVENTFD_FLAG_PIO`.
pub const FLAG_PIO: u32 = 1 << 1;
/// `KVM_IOEVENTFD_FLAG_DEASSIGN`.
pub const FLAG_DEASSIGN: u32 = 1 << 2;
/// `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY`.
pub const FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
/// `KVM_IOEVENTFD_VALID_FLAG_MASK`.
pub const VALID_FLAG_MASK: u32 = (1 << 4) - 1;

/// `sizeof(struct kvm_ioeventfd)`.
pub const UAPI_SIZE: usize = 64;

/// The I/O bus an ioeventfd sits on (`ioeventfd_bus_from_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// `KVM_MMIO_BUS` (a length-0 MMIO ioeventfd is also on `KVM_FAST_MMIO_BUS` upstream; one
    /// entry here serves both, matched by address only).
    Mmio,
    /// `KVM_PIO_BUS`.
    Pio,
    /// `KVM_VIRTIO_CCW_NOTIFY_BUS`: accepted as upstream does on every architecture, never
    /// written on x86.
    VirtioCcw,
}

impl Bus {
    /// The bus the flags select.
    pub fn from_flags(flags: u32) -> Bus {
        if flags & FLAG_PIO != 0 {
            Bus::Pio
        } else if flags & FLAG_VIRTIO_CCW_NOTIFY != 0 {
            Bus::VirtioCcw
        } else {
            Bus::Mmio
        }
    }
}

/// `struct kvm_ioeventfd`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Value to match (with `KVM_IOEVENTFD_FLAG_DATAMATCH`).
    pub datamatch: u64,
    /// GPA or port.
    pub addr: u64,
    /// 0 (any length), 1, 2, 4 or 8.
    pub len: u32,
    /// The eventfd.
    pub fd: i32,
    /// `KVM_IOEVENTFD_FLAG_*`.
    pub flags: u32,
}

impl Request {
    /// Decodes the structure.
    pub fn from_bytes(b: &[u8; UAPI_SIZE]) -> Self {
        Request {
            datamatch: le_u64(b, 0),
            addr: le_u64(b, 8),
            len: le_u32(b, 16),
            fd: le_u32(b, 20) as i32,
            flags: le_u32(b, 24),
        }
    }

    /// Whether this is a deassign.
    pub fn is_deassign(&self) -> bool {
        self.flags & FLAG_DEASSIGN != 0
    }

    /// The value to match, `None` for a wildcard.
    pub fn datamatch(&self) -> Option<u64> {
        (self.flags & FLAG_DATAMATCH != 0).then_some(self.datamatch)
    }

    /// The checks `kvm_assign_ioeventfd` makes before it looks at the fd: the length is 0, 1,
    /// 2, 4 or 8; `addr + len` does not wrap; no unknown flag; no datamatch with length 0.
    /// All `EINVAL`.
    pub fn validate_assign(&self) -> Result<(), Errno> {
        if !matches!(self.len, 0 | 1 | 2 | 4 | 8) {
            return Err(Errno::EINVAL);
        }
        if self.addr.checked_add(u64::from(self.len)).is_none() {
            return Err(Errno::EINVAL);
        }
        if self.flags & !VALID_FLAG_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        if self.len == 0 && self.flags & FLAG_DATAMATCH != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

/// One registered ioeventfd (`struct _ioeventfd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoEventFd<E> {
    /// Its bus.
    pub bus: Bus,
    /// GPA or port.
    pub addr: u64,
    /// 0 = any length.
    pub len: u32,
    /// `None`: any value (wildcard).
    pub datamatch: Option<u64>,
    /// The eventfd handle.
    pub eventfd: E,
}

impl<E: PartialEq> IoEventFd<E> {
    /// The ioeventfd a validated assign request describes.
    pub fn new(r: &Request, eventfd: E) -> Self {
        IoEventFd {
            bus: Bus::from_flags(r.flags),
            addr: r.addr,
            len: r.len,
            datamatch: r.datamatch(),
            eventfd,
        }
    }

    /// Whether `self` and `other` would both fire for some write (`ioeventfd_check_collision`):
    /// same bus and address, and either has length 0, or the lengths are equal and either is a
    /// wildcard or the values are equal. Assigning a colliding one is `EEXIST`.
    pub fn collides(&self, other: &Self) -> bool {
        self.bus == other.bus
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && match (self.datamatch, other.datamatch) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }))
    }

    /// Whether a deassign request for `eventfd` removes this one (`kvm_deassign_ioeventfd_idx`:
    /// same bus, eventfd, address, length and wildcard-ness; the value too unless wildcard).
    pub fn deassigned_by(&self, r: &Request, eventfd: &E) -> bool {
        self.bus == Bus::from_flags(r.flags)
            && self.eventfd == *eventfd
            && self.addr == r.addr
            && self.len == r.len
            && self.datamatch == r.datamatch()
    }

    /// Whether a guest write of `data` (1, 2, 4 or 8 bytes, little-endian) at `addr` on `bus`
    /// signals this ioeventfd (`ioeventfd_in_range`).
    pub fn hits(&self, bus: Bus, addr: u64, data: &[u8]) -> bool {
        if bus != self.bus || addr != self.addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if data.len() != self.len as usize {
            return false;
        }
        match self.datamatch {
            None => true,
            Some(v) => {
                let mut b = [0u8; 8];
                b[..data.len()].copy_from_slice(data);
                u64::from_le_bytes(b) == v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(addr: u64, len: u32, flags: u32, datamatch: u64) -> Request {
        Request {
            datamatch,
            addr,
            len,
            fd: 3,
            flags,
        }
    }

    #[test]
    fn decode() {
        let mut b = [0u8; UAPI_SIZE];
        b[0] = 0x42;
        b[8] = 0x80;
        b[16] = 4;
        b[20..24].copy_from_slice(&(-1i32).to_le_bytes());
        b[24] = 3;
        let r = Request::from_bytes(&b);
        assert_eq!(
            r,
            Request {
                datamatch: 0x42,
                addr: 0x80,
                len: 4,
                fd: -1,
                flags: 3
            }
        );
        assert_eq!(r.datamatch(), Some(0x42));
        assert_eq!(Bus::from_flags(r.flags), Bus::Pio);
    }

    #[test]
    fn assign_validation() {
        for len in [0, 1, 2, 4, 8] {
            assert!(req(0x1000, len, 0, 0).validate_assign().is_ok());
        }
        for len in [3, 5, 16, u32::MAX] {
            assert_eq!(req(0x1000, len, 0, 0).validate_assign(), Err(Errno::EINVAL));
        }
        assert_eq!(
            req(u64::MAX - 3, 8, 0, 0).validate_assign(),
            Err(Errno::EINVAL)
        );
        assert!(req(u64::MAX - 8, 8, 0, 0).validate_assign().is_ok());
        assert_eq!(req(0, 4, 1 << 4, 0).validate_assign(), Err(Errno::EINVAL));
        assert_eq!(
            req(0, 0, FLAG_DATAMATCH, 0).validate_assign(),
            Err(Errno::EINVAL)
        );
        assert!(req(0, 4, FLAG_VIRTIO_CCW_NOTIFY, 0)
            .validate_assign()
            .is_ok());
    }

    #[test]
    fn collisions() {
        let a = IoEventFd::new(&req(0x1000, 4, FLAG_DATAMATCH, 1), 1);
        let b = IoEventFd::new(&req(0x1000, 4, FLAG_DATAMATCH, 2), 2);
        let w = IoEventFd::new(&req(0x1000, 4, 0, 0), 3);
        let z = IoEventFd::new(&req(0x1000, 0, 0, 0), 4);
        let l2 = IoEventFd::new(&req(0x1000, 2, 0, 0), 5);
        let pio = IoEventFd::new(&req(0x1000, 4, FLAG_PIO, 0), 6);
        assert!(!a.collides(&b));
        assert!(a.collides(&w) && w.collides(&b));
        assert!(z.collides(&a) && l2.collides(&z));
        assert!(!l2.collides(&w));
        assert!(!pio.collides(&w));
        assert!(a.collides(&IoEventFd::new(&req(0x1000, 4, FLAG_DATAMATCH, 1), 9)));
    }

    #[test]
    fn deassign_matching() {
        let a = IoEventFd::new(&req(0x1000, 4, FLAG_DATAMATCH, 1), 7);
        assert!(a.deassigned_by(&req(0x1000, 4, FLAG_DATAMATCH | FLAG_DEASSIGN, 1), &7));
        assert!(!a.deassigned_by(&req(0x1000, 4, FLAG_DATAMATCH | FLAG_DEASSIGN, 1), &8));
        assert!(!a.deassigned_by(&req(0x1000, 4, FLAG_DATAMATCH | FLAG_DEASSIGN, 2), &7));
        assert!(!a.deassigned_by(&req(0x1000, 4, FLAG_DEASSIGN, 1), &7));
        assert!(!a.deassigned_by(&req(0x1000, 2, FLAG_DATAMATCH | FLAG_DEASSIGN, 1), &7));
        assert!(!a.deassigned_by(
            &req(0x1000, 4, FLAG_PIO | FLAG_DATAMATCH | FLAG_DEASSIGN, 1),
            &7
        ));
    }

    #[test]
    fn hits() {
        let a = IoEventFd::new(&req(0x1000, 2, FLAG_DATAMATCH, 0xbeef), 1);
        assert!(a.hits(Bus::Mmio, 0x1000, &[0xef, 0xbe]));
        assert!(!a.hits(Bus::Mmio, 0x1000, &[0xef, 0xbf]));
        assert!(!a.hits(Bus::Mmio, 0x1000, &[0xef, 0xbe, 0, 0]));
        assert!(!a.hits(Bus::Pio, 0x1000, &[0xef, 0xbe]));
        assert!(!a.hits(Bus::Mmio, 0x1001, &[0xef, 0xbe]));
        let w = IoEventFd::new(&req(0x1000, 8, 0, 0), 1);
        assert!(w.hits(Bus::Mmio, 0x1000, &[1; 8]));
        let z = IoEventFd::new(&req(0x1000, 0, 0, 0), 1);
        assert!(z.hits(Bus::Mmio, 0x1000, &[1]) && z.hits(Bus::Mmio, 0x1000, &[1; 4]));
        let d8 = IoEventFd::new(&req(0x10, 8, FLAG_DATAMATCH | FLAG_PIO, u64::MAX), 1);
        assert!(d8.hits(Bus::Pio, 0x10, &[0xff; 8]));
    }
}
