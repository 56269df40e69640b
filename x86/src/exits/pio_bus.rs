// SPDX-License-Identifier: GPL-2.0-only
//! The port ranges the in-kernel irqchip's devices occupy on the PIO bus (upstream
//! `kvm_pic_init` and `kvm_create_pit`'s `kvm_io_bus_register_dev` calls): the master and
//! slave 8259 (0x20 and 0xa0, 2 ports each), the ELCRs (0x4d0, 2), the 8254 (0x40, 4) and its
//! dummy speaker (0x61, 4; the device answers 0x61 only).
//!
//! `kvm_io_bus_read`/`_write` give an access of `len` bytes at `port` to a device only if
//! `[port, port + len)` lies inside the device's range (`kvm_io_bus_cmp`); anything else (a
//! word at 0x21, a dword at 0x41) finds no device and goes to userspace, whatever the device
//! would have made of it. Whether the device exists (an irqchip, a PIT, the speaker flag) is
//! the caller's business.

/// (first port, length) of each in-kernel PIO device's range.
pub const DEVICE_RANGES: [(u16, u16); 5] = [(0x20, 2), (0xa0, 2), (0x4d0, 2), (0x40, 4), (0x61, 4)];

/// Whether an access of `len` bytes at `port` lies inside one in-kernel device's range.
pub fn within_device(port: u16, len: u8) -> bool {
    let (start, end) = (u32::from(port), u32::from(port) + u32::from(len));
    DEVICE_RANGES.iter().any(|&(base, n)| {
        let (b, e) = (u32::from(base), u32::from(base) + u32::from(n));
        start >= b && end <= e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_every_device_port() {
        for p in [
            0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61,
        ] {
            assert!(within_device(p, 1), "{p:#x}");
        }
        for p in [0x1f, 0x22, 0x9f, 0xa2, 0x4cf, 0x4d2, 0x3f, 0x44, 0x60, 0x80] {
            assert!(!within_device(p, 1), "{p:#x}");
        }
    }

    #[test]
    fn wide_accesses_must_fit() {
        // A word at the first port of a 2-port device fits, at the second it does not.
        assert!(within_device(0x20, 2));
        assert!(!within_device(0x21, 2));
        assert!(within_device(0xa0, 2));
        assert!(!within_device(0xa1, 2));
        assert!(within_device(0x4d0, 2));
        assert!(!within_device(0x4d1, 2));
        assert!(!within_device(0x20, 4));
        // The PIT: a dword only at 0x40, a word up to 0x42.
        assert!(within_device(0x40, 4));
        assert!(!within_device(0x41, 4));
        assert!(within_device(0x42, 2));
        assert!(!within_device(0x43, 2));
        // The speaker's range is 4 ports long.
        assert!(within_device(0x61, 4));
        assert!(within_device(0x61, 2));
        // No wrap at the top of the port space.
        assert!(!within_device(0xffff, 4));
    }
}
