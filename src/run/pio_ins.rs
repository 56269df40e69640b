// SPDX-License-Identifier: GPL-2.0-only
//! INS (and REP INS) from a port an in-kernel device serves: the 8259 PICs (0x20/0x21,
//! 0xa0/0xa1), the ELCRs (0x4d0/0x4d1), the PIT (0x40-0x43) and its dummy speaker port (0x61
//! with `KVM_PIT_SPEAKER_DUMMY`), as upstream's emulator does it (`pio_in_emulated` ->
//! `emulator_pio_in` -> `emulator_pio_in_out` over `kvm_io_bus_read`).
//!
//! The string-I/O path ([`crate::exit_run`]) computes the read-ahead batch (up to the page end
//! in the direction of travel, 1024 bytes, the REP count); [`read_in_kernel`] reads that many
//! elements from the device into the vCPU's PIO page, where userspace would have put them, and
//! the path then completes the batch at once as after a `KVM_EXIT_IO` (elements stored at
//! ES:rDI, RDI/RCX stepped, RIP moved on when RCX reaches 0, else the guest re-enters the
//! instruction for the next batch, as upstream re-enters the guest when its read-ahead buffer
//! is empty). The first read decides: no in-kernel device, and the whole batch goes to
//! userspace as before. A device that writes no data for a read (the PIT's control port 0x43)
//! leaves that element's bytes as they were, as upstream's read-ahead buffer keeps its stale
//! bytes.

use crate::vcpu::Vcpu;

/// The vCPU's PIO page is 4 KiB; a batch is at most 1024 bytes.
const PIO_PAGE_SIZE: usize = 4096;

/// Reads `count` elements of `size` bytes from the in-kernel device at `port` into the vCPU's
/// PIO page; `false` (nothing read) if no in-kernel device serves the port.
pub(crate) fn read_in_kernel(vcpu: &Vcpu, port: u16, size: u8, count: u32) -> bool {
    let vm = vcpu.vm();
    let size = usize::from(size);
    let pio = vcpu.pio_page();
    let writes_nothing = crate::irq::pit::read_writes_nothing(vm, port);
    for k in 0..count as usize {
        let Some(v) = crate::irq::pio_in(vm, port, size as u8) else {
            // Upstream: the first read failing goes to userspace; a device gone half-way
            // (cannot happen here: the in-kernel devices live as long as the VM) reads 0.
            if k == 0 {
                return false;
            }
            fill(pio, k * size, (count as usize - k) * size, &[]);
            return true;
        };
        if writes_nothing {
            continue;
        }
        fill(pio, k * size, size, &v.to_le_bytes());
    }
    true
}

/// Writes `len` bytes at `off` of the PIO page: `src`'s, then zeros.
fn fill(pio: *mut u8, off: usize, len: usize, src: &[u8]) {
    for j in 0..len {
        let at = off + j;
        if at >= PIO_PAGE_SIZE {
            return;
        }
        let b = src.get(j).copied().unwrap_or(0);
        // SAFETY: `pio` is the vCPU's 4 KiB PIO page (live as long as the vCPU), `at` is
        // inside it; the page is only read by the completion on this thread or mapped by
        // userspace (a plain byte store).
        unsafe { core::ptr::write_volatile(pio.add(at), b) };
    }
}
