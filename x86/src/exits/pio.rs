// SPDX-License-Identifier: GPL-2.0-only
//! String port I/O arithmetic (upstream emulator: `pio_in_emulated`'s read-ahead,
//! `register_address_increment`, `string_insn_completed`).
//!
//! INS asks userspace for up to min(bytes to the end of the page in the direction of travel,
//! 1024 / size, the REP count) elements in one `KVM_EXIT_IO` (at least one), and the
//! completion stores only as many as RCX — which userspace may have changed meanwhile — still
//! asks for. OUTS exits once per element. Registers step inside the instruction's address
//! size and keep their upper bits.

/// Size of the emulator's read-ahead buffer (`struct read_cache.data`).
pub const READ_AHEAD: u64 = 1024;

/// The address-size mask (2, 4 or 8 bytes).
pub fn addr_mask(addr_size: u8) -> u64 {
    match addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// `reg` moved by `delta` within the address size, the bits above it unchanged.
pub fn step(reg: u64, delta: i64, addr_size: u8) -> u64 {
    let m = addr_mask(addr_size);
    (reg & !m) | (reg.wrapping_add(delta as u64) & m)
}

/// The element count of one INS exit: `rdi` the (masked) destination, `df` RFLAGS.DF, `count`
/// the REP count (1 without REP), `size` bytes per element. Upstream compares the bytes left
/// in the page with element counts (a quirk kept: only observable for sizes 2 and 4).
pub fn ins_batch(rdi: u64, df: bool, count: u64, size: u8) -> u32 {
    let in_page = if df {
        rdi & 0xfff
    } else {
        0x1000 - (rdi & 0xfff)
    };
    in_page
        .min(READ_AHEAD / u64::from(size.max(1)))
        .min(count)
        .max(1) as u32
}

/// Elements the completion of an INS exit of `batch` elements stores, given RCX now.
pub fn ins_done(batch: u32, rep: bool, rcx_masked: u64) -> u64 {
    if rep {
        rcx_masked.min(u64::from(batch))
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_steps() {
        assert_eq!(step(0x1234_ffff, 1, 2), 0x1234_0000);
        assert_eq!(step(0xffff_ffff_0000_0000, -1, 4), 0xffff_ffff_ffff_ffff);
        assert_eq!(step(5, -1, 8), 4);
        assert_eq!(step(0, -2, 2), 0xfffe);
        assert_eq!(addr_mask(4), 0xffff_ffff);
    }

    #[test]
    fn batches() {
        // userspace_io_test: REP INSB of 8192 bytes from a page-aligned buffer: 1024 per exit.
        assert_eq!(ins_batch(0x10000, false, 8192, 1), 1024);
        assert_eq!(ins_batch(0x10ffe, false, 8192, 1), 2);
        assert_eq!(ins_batch(0x10000, false, 3, 1), 3);
        assert_eq!(ins_batch(0x10000, false, 1, 4), 1);
        assert_eq!(ins_batch(0x10000, false, 8192, 4), 256);
        // Backwards: the bytes below RDI in its page; none left still asks for one.
        assert_eq!(ins_batch(0x10010, true, 100, 1), 16);
        assert_eq!(ins_batch(0x10000, true, 100, 1), 1);
        // Userspace changed RCX between the exit and the completion.
        assert_eq!(ins_done(2, true, 1), 1);
        assert_eq!(ins_done(3, true, 8192), 3);
        assert_eq!(ins_done(3, true, 0), 0);
        assert_eq!(ins_done(1, false, 0), 1);
    }
}
