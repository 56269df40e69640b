// SPDX-License-Identifier: GPL-2.0-only
//! Coalesced MMIO and PIO (upstream `virt/kvm/coalesced_mmio.c`):
//! `KVM_REGISTER_COALESCED_MMIO` / `KVM_UNREGISTER_COALESCED_MMIO` zones and the ring page.
//!
//! A guest write that falls entirely inside a zone of its kind (MMIO or, with
//! `KVM_COALESCED_MMIO_PIO`, port I/O) does not exit: it is appended to the VM's ring (mapped at
//! page `KVM_COALESCED_MMIO_PAGE_OFFSET` of every vCPU fd) and the guest continues. Only when
//! the ring is full (one slot is always kept free so `first == last` means empty) does the
//! write take the ordinary exit. Reads are never coalesced.

use super::{le_u32, le_u64, Errno};

/// `sizeof(struct kvm_coalesced_mmio_zone)`: addr (u64), size (u32), pio (u32).
pub const ZONE_SIZE: usize = 16;
/// `sizeof(struct kvm_coalesced_mmio)`: phys_addr (u64), len (u32), pio (u32), data[8].
pub const ENTRY_SIZE: usize = 24;
/// Offset of the entries in the ring page (after `first` and `last`).
pub const RING_ENTRIES: usize = 8;
/// `KVM_COALESCED_MMIO_MAX`: entries in the one-page ring.
pub const RING_MAX: u32 = ((4096 - RING_ENTRIES) / ENTRY_SIZE) as u32;
const _: () = assert!(RING_MAX == 170);
/// Offset of `first` (u32, advanced by userspace).
pub const RING_FIRST: usize = 0;
/// Offset of `last` (u32, advanced by the kernel).
pub const RING_LAST: usize = 4;
/// Devices one I/O bus holds (`NR_IOBUS_DEVS`).
pub const NR_IOBUS_DEVS: usize = 1000;

/// A zone (`struct kvm_coalesced_mmio_zone`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// First address (GPA or port).
    pub addr: u64,
    /// Bytes.
    pub size: u32,
    /// 1 for port I/O, 0 for MMIO.
    pub pio: u32,
}

impl Zone {
    /// Decodes the structure.
    pub fn from_bytes(b: &[u8; ZONE_SIZE]) -> Self {
        Zone {
            addr: le_u64(b, 0),
            size: le_u32(b, 8),
            pio: le_u32(b, 12),
        }
    }

    /// The register/unregister check: `pio` is 0 or 1, else `EINVAL`.
    pub fn validate(&self) -> Result<(), Errno> {
        if self.pio > 1 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Whether `[addr, addr + len)` lies inside the zone (upstream `coalesced_mmio_in_range`:
    /// `len` is an `int` there, so a negative length or a wrapping range is never inside).
    pub fn covers(&self, addr: u64, len: i32) -> bool {
        if len < 0 {
            return false;
        }
        let Some(end) = addr.checked_add(len as u64) else {
            return false;
        };
        addr >= self.addr && end <= self.addr.wrapping_add(u64::from(self.size))
    }

    /// Whether an unregister request `req` removes this zone: same kind and this zone inside the
    /// request's range (`zone->size` taken as an `int`, as upstream passes it).
    pub fn removed_by(&self, req: &Zone) -> bool {
        req.pio == self.pio && {
            // Upstream calls coalesced_mmio_in_range(dev, zone->addr, zone->size): is the
            // *request* inside the registered zone.
            self.covers(req.addr, req.size as i32)
        }
    }
}

/// The slot a new entry goes to, given the ring's `first` and `last` as read from the shared
/// page (userspace may have written anything there), or `None` when the ring is full or
/// `last` is out of range (the write then takes the ordinary exit).
pub fn ring_slot(first: u32, last: u32) -> Option<u32> {
    if last >= RING_MAX || (last + 1) % RING_MAX == first {
        None
    } else {
        Some(last)
    }
}

/// The new `last` after writing slot `slot`.
pub fn ring_next(slot: u32) -> u32 {
    (slot + 1) % RING_MAX
}

/// Offset of entry `slot` in the ring page.
pub fn entry_offset(slot: u32) -> usize {
    RING_ENTRIES + slot as usize * ENTRY_SIZE
}

/// The bytes of one entry: the write of `data[..len]` at `addr`.
pub fn entry(addr: u64, data: &[u8], pio: bool) -> [u8; ENTRY_SIZE] {
    let len = data.len().min(8);
    let mut e = [0u8; ENTRY_SIZE];
    e[0..8].copy_from_slice(&addr.to_le_bytes());
    e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    e[12..16].copy_from_slice(&u32::from(pio).to_le_bytes());
    e[16..16 + len].copy_from_slice(&data[..len]);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(addr: u64, size: u32, pio: u32) -> Zone {
        Zone { addr, size, pio }
    }

    #[test]
    fn decode_and_validate() {
        let mut b = [0u8; ZONE_SIZE];
        b[0..8].copy_from_slice(&0x1_0000_0000u64.to_le_bytes());
        b[8] = 0x10;
        b[12] = 1;
        let z = Zone::from_bytes(&b);
        assert_eq!(z, zone(0x1_0000_0000, 0x10, 1));
        assert!(z.validate().is_ok());
        assert_eq!(zone(0, 0, 2).validate(), Err(Errno::EINVAL));
        assert_eq!(zone(0, 0, u32::MAX).validate(), Err(Errno::EINVAL));
    }

    #[test]
    fn ranges() {
        let z = zone(0x1000, 0x10, 0);
        assert!(z.covers(0x1000, 8));
        assert!(z.covers(0x1008, 8));
        assert!(!z.covers(0x1009, 8));
        assert!(!z.covers(0xfff, 2));
        assert!(!z.covers(0x1000, -1));
        assert!(!z.covers(u64::MAX, 2));
        // A size-0 zone covers only zero-length accesses at its address.
        assert!(!zone(0x2000, 0, 0).covers(0x2000, 1));
    }

    #[test]
    fn unregister_matching() {
        let z = zone(0x1000, 0x100, 0);
        assert!(z.removed_by(&zone(0x1000, 0x100, 0)));
        assert!(z.removed_by(&zone(0x1010, 0x10, 0)));
        assert!(!z.removed_by(&zone(0x1000, 0x100, 1)));
        assert!(!z.removed_by(&zone(0x1000, 0x200, 0)));
        // A size above INT_MAX is a negative int upstream: never matches.
        assert!(!z.removed_by(&zone(0x1000, 0x8000_0000, 0)));
    }

    #[test]
    fn ring_full_and_wrap() {
        assert_eq!(ring_slot(0, 0), Some(0));
        assert_eq!(ring_slot(0, RING_MAX - 2), Some(RING_MAX - 2));
        // One slot stays free: last + 1 == first is full.
        assert_eq!(ring_slot(0, RING_MAX - 1), None);
        assert_eq!(ring_slot(5, 4), None);
        assert_eq!(ring_slot(5, RING_MAX - 1), Some(RING_MAX - 1));
        assert_eq!(ring_next(RING_MAX - 1), 0);
        // Garbage from userspace.
        assert_eq!(ring_slot(0, RING_MAX), None);
        assert_eq!(ring_slot(0, u32::MAX), None);
        assert_eq!(entry_offset(0), 8);
        assert_eq!(entry_offset(RING_MAX - 1) + ENTRY_SIZE, 8 + 170 * 24);
    }

    #[test]
    fn entry_bytes() {
        let e = entry(0x80, &[1, 2, 3, 4], true);
        assert_eq!(le_u64(&e, 0), 0x80);
        assert_eq!(le_u32(&e, 8), 4);
        assert_eq!(le_u32(&e, 12), 1);
        assert_eq!(&e[16..24], &[1, 2, 3, 4, 0, 0, 0, 0]);
    }
}
