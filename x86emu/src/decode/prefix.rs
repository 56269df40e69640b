// SPDX-License-Identifier: GPL-2.0-only
//! Legacy and REX prefixes, and the byte cursor that enforces the 15-byte limit.

use x86::state::{Gpr, SegReg};

use super::{CodeSize, DecodeError, Rep, MAX_INSN_LEN};

/// The prefixes in front of an opcode.
#[derive(Clone, Copy, Default)]
pub(super) struct Prefixes {
    pub(super) opsize: bool,
    pub(super) addrsize: bool,
    pub(super) lock: bool,
    pub(super) rep: Option<Rep>,
    pub(super) seg: Option<SegReg>,
    /// REX bits W, R, X, B (bit 3..0), if a REX prefix immediately precedes the opcode.
    pub(super) rex: Option<u8>,
}

impl Prefixes {
    pub(super) fn rex_bit(&self, bit: u8) -> u8 {
        self.rex.map_or(0, |r| (r >> bit) & 1)
    }
}

/// A cursor over the instruction bytes that enforces the 15-byte limit.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl Cursor<'_> {
    pub(super) fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn peek(&self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// Reads a little-endian value of `n` bytes.
    pub(super) fn le(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    /// Reads a little-endian value of `n` bytes and sign-extends it to 64 bits.
    pub(super) fn le_signed(&mut self, n: u8) -> Result<i64, DecodeError> {
        let v = self.le(n)?;
        let shift = 64 - 8 * u32::from(n);
        Ok(((v << shift) as i64) >> shift)
    }
}

const GPRS: [Gpr; 16] = [
    Gpr::Rax,
    Gpr::Rcx,
    Gpr::Rdx,
    Gpr::Rbx,
    Gpr::Rsp,
    Gpr::Rbp,
    Gpr::Rsi,
    Gpr::Rdi,
    Gpr::R8,
    Gpr::R9,
    Gpr::R10,
    Gpr::R11,
    Gpr::R12,
    Gpr::R13,
    Gpr::R14,
    Gpr::R15,
];

const SEGS: [SegReg; 6] = [
    SegReg::Es,
    SegReg::Cs,
    SegReg::Ss,
    SegReg::Ds,
    SegReg::Fs,
    SegReg::Gs,
];

pub(super) fn gpr(n: u8) -> Gpr {
    GPRS[usize::from(n & 15)]
}

/// Reads the legacy prefixes and a REX prefix.
pub(super) fn prefixes(c: &mut Cursor<'_>, mode: CodeSize) -> Result<Prefixes, DecodeError> {
    let mut p = Prefixes::default();
    loop {
        let b = c.peek()?;
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0xf0 => p.lock = true,
            // The last of F2/F3 wins, as on hardware.
            0xf2 => p.rep = Some(Rep::Repne),
            0xf3 => p.rep = Some(Rep::Rep),
            0x26 | 0x2e | 0x36 | 0x3e => {
                // In 64-bit mode ES/CS/SS/DS overrides are ignored (their bases are zero and
                // there are no limits), but they do not cancel an FS/GS override either.
                if mode != CodeSize::Bits64 {
                    p.seg = Some(SEGS[usize::from((b >> 3) & 3)]);
                }
            }
            0x64 => p.seg = Some(SegReg::Fs),
            0x65 => p.seg = Some(SegReg::Gs),
            0x40..=0x4f if mode == CodeSize::Bits64 => {
                c.next()?;
                // REX counts only right before the opcode; a legacy prefix after it voids it.
                p.rex = Some(b & 0xf);
                let n = c.peek()?;
                if !is_legacy_prefix(n) && !(0x40..=0x4f).contains(&n) {
                    return Ok(p);
                }
                p.rex = None;
                continue;
            }
            _ => return Ok(p),
        }
        c.next()?;
    }
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65
    )
}
