// SPDX-License-Identifier: GPL-2.0-only
//! Arithmetic flags of the emulated ALU operations, computed exactly as hardware does.
//!
//! Upstream's emulator runs the host's own instruction on the operands (`fastop`) to get the
//! flags. A core crate cannot rely on the host (the host tests do, to check these formulas:
//! they execute the same operation natively and compare), so the flags are computed here from
//! the textbook definitions: CF/OF from the carry and overflow out of the operand width, AF from
//! bit 4, PF from the parity of the low byte. Flags the SDM calls undefined get the value
//! current AMD and Intel processors produce (AF = 0 after logical operations).

use crate::decode::{truncate, AluOp};

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag.
pub const PF: u64 = 1 << 2;
/// Auxiliary-carry flag.
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Direction flag.
pub const DF: u64 = 1 << 10;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

fn sign_bit(size: u8) -> u64 {
    1u64 << (8 * u32::from(size) - 1)
}

/// ZF, SF and PF of a result of `size` bytes.
fn szp(res: u64, size: u8) -> u64 {
    let mut f = 0;
    if truncate(res, size) == 0 {
        f |= ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    if (res as u8).count_ones() % 2 == 0 {
        f |= PF;
    }
    f
}

/// Replaces the flags in `mask` of `rflags` by `new`.
fn merge(rflags: u64, new: u64, mask: u64) -> u64 {
    (rflags & !mask) | (new & mask)
}

/// `d + s + carry_in` in `size` bytes: (result, flags).
fn add(d: u64, s: u64, carry_in: u64, size: u8) -> (u64, u64) {
    let bits = 8 * u32::from(size);
    let full = u128::from(d) + u128::from(s) + u128::from(carry_in);
    let res = truncate(full as u64, size);
    let mut f = szp(res, size);
    if (full >> bits) & 1 != 0 {
        f |= CF;
    }
    if (d ^ res) & (s ^ res) & sign_bit(size) != 0 {
        f |= OF;
    }
    if (d ^ s ^ res) & 0x10 != 0 {
        f |= AF;
    }
    (res, f)
}

/// `d - s - borrow_in` in `size` bytes: (result, flags).
fn sub(d: u64, s: u64, borrow_in: u64, size: u8) -> (u64, u64) {
    let res = truncate(d.wrapping_sub(s).wrapping_sub(borrow_in), size);
    let mut f = szp(res, size);
    if u128::from(d) < u128::from(s) + u128::from(borrow_in) {
        f |= CF;
    }
    if (d ^ s) & (d ^ res) & sign_bit(size) != 0 {
        f |= OF;
    }
    if (d ^ s ^ res) & 0x10 != 0 {
        f |= AF;
    }
    (res, f)
}

/// A logical operation's flags: CF = OF = 0, AF = 0, SZP from the result.
fn logic(res: u64, size: u8) -> u64 {
    szp(res, size)
}

/// Executes `dst op src` on `size`-byte operands (already truncated) with the incoming
/// `rflags`; returns the result (CMP: `dst` unchanged) and the new RFLAGS.
pub fn alu(op: AluOp, size: u8, dst: u64, src: u64, rflags: u64) -> (u64, u64) {
    let cf = rflags & CF;
    let (res, f) = match op {
        AluOp::Add => add(dst, src, 0, size),
        AluOp::Adc => add(dst, src, cf, size),
        AluOp::Sub => sub(dst, src, 0, size),
        AluOp::Sbb => sub(dst, src, cf, size),
        AluOp::Cmp => (dst, sub(dst, src, 0, size).1),
        AluOp::And => (dst & src, logic(dst & src, size)),
        AluOp::Or => (dst | src, logic(dst | src, size)),
        AluOp::Xor => (dst ^ src, logic(dst ^ src, size)),
    };
    (res, merge(rflags, f, ARITH))
}

/// TEST: the flags of `dst & src`.
pub fn test(size: u8, dst: u64, src: u64, rflags: u64) -> u64 {
    merge(rflags, logic(dst & src, size), ARITH)
}

/// INC: like ADD 1 but CF is preserved.
pub fn inc(size: u8, dst: u64, rflags: u64) -> (u64, u64) {
    let (res, f) = add(dst, 1, 0, size);
    (res, merge(rflags, f, ARITH & !CF))
}

/// DEC: like SUB 1 but CF is preserved.
pub fn dec(size: u8, dst: u64, rflags: u64) -> (u64, u64) {
    let (res, f) = sub(dst, 1, 0, size);
    (res, merge(rflags, f, ARITH & !CF))
}

/// NEG: `0 - dst`; CF is set unless the operand was zero.
pub fn neg(size: u8, dst: u64, rflags: u64) -> (u64, u64) {
    let (res, f) = sub(0, dst, 0, size);
    (res, merge(rflags, f, ARITH))
}

/// BT/BTS/BTR/BTC's flag: CF = the selected bit; the others are left alone (ZF is
/// architecturally unchanged, OF/SF/AF/PF undefined).
pub fn bit_test(value: u64, bit: u32, rflags: u64) -> u64 {
    merge(rflags, (value >> bit) & 1, CF)
}
