// SPDX-License-Identifier: GPL-2.0-only
//! TD measurement (MRTD): SHA-384 over 128-byte blocks, as TDH.MEM.PAGE.ADD, TDH.MR.EXTEND and
//! TDH.MR.FINALIZE compute it.
//!
//! The module only ever hashes whole 128-byte blocks until MR.FINALIZE, so the running state is
//! the eight-word SHA-512 chaining value plus a byte count, and it fits in the TD's control
//! structure. The compression function comes from the environment ([`Sha512Compress`]): the
//! `sha2` crate on the host, the kernel's crypto API in the module; both are checked against the
//! same known-answer vectors. Initial value, padding and output truncation (FIPS 180-4) are here.
//!
//! Blocks (`sha384_128B_block_t`): bytes 0..16 the leaf name in ASCII, zero-padded; bytes 16..24
//! the GPA, little-endian; the rest zero. PAGE.ADD hashes one such block ("MEM.PAGE.ADD");
//! MR.EXTEND hashes one ("MR.EXTEND") followed by the 256 bytes of TD memory at the GPA.

/// The SHA-512 compression function (FIPS 180-4 §6.4.2), applied to one 128-byte block.
pub trait Sha512Compress: Sync {
    /// Updates `state` with `block`.
    fn compress(&self, state: &mut [u64; 8], block: &[u8; 128]);
}

impl<H: Sha512Compress> Sha512Compress for &H {
    fn compress(&self, state: &mut [u64; 8], block: &[u8; 128]) {
        (**self).compress(state, block)
    }
}

/// SHA-384 initial hash value (FIPS 180-4 §5.3.4).
pub const SHA384_IV: [u64; 8] = [
    0xcbbb_9d5d_c105_9ed8,
    0x629a_292a_367c_d507,
    0x9159_015a_3070_dd17,
    0x152f_ecd8_f70e_5939,
    0x6733_2667_ffc0_0b31,
    0x8eb4_4a87_6858_1511,
    0xdb0c_2e0d_64f9_8fa7,
    0x47b5_481d_befa_4fa4,
];

/// A 128-byte measurement block naming `api` at `gpa`.
pub fn mr_block(api: &[u8], gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    let n = api.len().min(16);
    b[..n].copy_from_slice(&api[..n]);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// Pads and finishes a SHA-384 computation whose `bytes` bytes so far were all whole blocks,
/// after hashing `tail` (the final partial data, less than 128 bytes).
pub fn sha384_finish<H: Sha512Compress>(
    h: &H,
    mut state: [u64; 8],
    bytes: u64,
    tail: &[u8],
) -> [u8; 48] {
    let tail = &tail[..tail.len().min(127)];
    let total_bits = (bytes + tail.len() as u64) as u128 * 8;
    let mut block = [0u8; 128];
    block[..tail.len()].copy_from_slice(tail);
    block[tail.len()] = 0x80;
    if tail.len() >= 112 {
        h.compress(&mut state, &block);
        block = [0u8; 128];
    }
    block[112..].copy_from_slice(&total_bits.to_be_bytes());
    h.compress(&mut state, &block);
    let mut out = [0u8; 48];
    for (i, w) in state.iter().take(6).enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// SHA-384 of `data` (for known-answer tests of a compression function).
pub fn sha384<H: Sha512Compress>(h: &H, data: &[u8]) -> [u8; 48] {
    let mut state = SHA384_IV;
    let full = data.len() / 128 * 128;
    for chunk in data[..full].chunks_exact(128) {
        let mut b = [0u8; 128];
        b.copy_from_slice(chunk);
        h.compress(&mut state, &b);
    }
    sha384_finish(h, state, full as u64, &data[full..])
}
