// SPDX-License-Identifier: GPL-2.0-only
//! The opcode maps: which operation and operand layout ([`Form`]) each opcode byte has, for
//! the subset we decode.

use super::prefix::{Cursor, Prefixes};
use super::{AluOp, BitOp, CodeSize, DecodeError, Op, Rep};

/// The operand layout of an opcode, in the manuals' notation (E = ModRM r/m, G = ModRM.reg,
/// I = immediate, O = moffs, Z = register in the opcode's low bits; b = byte, v = operand size,
/// z = operand size capped at 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// No explicit operands.
    Plain,
    EbGb,
    EvGv,
    GbEb,
    GvEv,
    AlIb,
    AxIz,
    /// Group 1 (80, 81, 83): the op is ModRM.reg; immediate Ib, Iz or sign-extended Ib.
    Grp1Eb,
    Grp1EvIz,
    Grp1EvIb,
    /// Group 3 (F6, F7): TEST I / NOT / NEG.
    Grp3Eb,
    Grp3Ev,
    /// Group 4 (FE) and 5 (FF): INC/DEC.
    Grp4Eb,
    Grp5Ev,
    /// Group 11 (C6, C7): MOV E, I with ModRM.reg == 0.
    Grp11Eb,
    Grp11Ev,
    AlOb,
    AxOv,
    ObAl,
    OvAx,
    ZbIb,
    ZvIv,
    /// MOV CRn, Rd/q (0F 22): ModRM.mod is ignored, the r/m field is always a register.
    MovToCr,
    /// MOV Rd/q, CRn (0F 20), the same layout.
    MovFromCr,
    /// XCHG rAX, Zv (91-97 and 90 with REX.B).
    XchgZv,
    /// INC/DEC Zv (40-4F outside 64-bit mode).
    Zv,
    /// String instructions: byte form if the opcode's bit 0 is clear.
    Str,
    /// IN/OUT with an 8-bit port immediate / with DX.
    PortIb,
    PortDx,
    /// MOVZX/MOVSX Gv, Eb / Gv, Ew; MOVSXD Gv, Ed.
    GvEb,
    GvEw,
    GvEd,
    /// BT Ev, Gv (the register is a bit offset that may reach outside the operand).
    BtEvGv,
    /// Group 8 (0F BA): BT* Ev, Ib.
    Grp8,
    /// A memory-only ModRM operand without a size (INVLPG) or any ModRM (multi-byte NOP).
    M,
    /// MOV to/from a debug register (0F 21, 0F 23).
    MovDr,
    /// MOVBE Gv, Mv (0F 38 F0): memory-only r/m.
    GvMv,
    /// MOVBE Mv, Gv (0F 38 F1): memory-only r/m.
    MvGv,
    /// RDPID Rd/q (F3 0F C7 /7): a register r/m of the mode's size (Op3264).
    Rdpid,
}

/// The one-byte opcode map (the subset we handle).
pub(super) fn one_byte(
    b: u8,
    mode: CodeSize,
    p: &Prefixes,
) -> Result<(Option<Op>, Form), DecodeError> {
    let long = mode == CodeSize::Bits64;
    Ok(match b {
        // ADD/OR/ADC/SBB/AND/SUB/XOR/CMP in their six forms each.
        0x00..=0x3f if b & 7 < 6 => {
            let op = Some(Op::Alu(AluOp::from_bits(b >> 3)));
            let form = [
                Form::EbGb,
                Form::EvGv,
                Form::GbEb,
                Form::GvEv,
                Form::AlIb,
                Form::AxIz,
            ][usize::from(b & 7)];
            (op, form)
        }
        0x40..=0x47 if !long => (Some(Op::Inc), Form::Zv),
        0x48..=0x4f if !long => (Some(Op::Dec), Form::Zv),
        0x63 if long => (Some(Op::Movsx), Form::GvEd),
        0x6c | 0x6d => (Some(Op::Ins), Form::Str),
        0x6e | 0x6f => (Some(Op::Outs), Form::Str),
        0x80 => (None, Form::Grp1Eb),
        0x81 => (None, Form::Grp1EvIz),
        0x83 => (None, Form::Grp1EvIb),
        0x84 => (Some(Op::Test), Form::EbGb),
        0x85 => (Some(Op::Test), Form::EvGv),
        0x86 => (Some(Op::Xchg), Form::EbGb),
        0x87 => (Some(Op::Xchg), Form::EvGv),
        0x88 => (Some(Op::Mov), Form::EbGb),
        0x89 => (Some(Op::Mov), Form::EvGv),
        0x8a => (Some(Op::Mov), Form::GbEb),
        0x8b => (Some(Op::Mov), Form::GvEv),
        // F3 90 is PAUSE (whatever REX); 90 is XCHG rAX, rAX (NOP) unless REX.B makes it
        // XCHG rAX, r8.
        0x90 if p.rep == Some(Rep::Rep) => (Some(Op::Pause), Form::Plain),
        0x90 if p.rex_bit(0) == 1 => (Some(Op::Xchg), Form::XchgZv),
        0x90 => (Some(Op::Nop), Form::Plain),
        0x91..=0x97 => (Some(Op::Xchg), Form::XchgZv),
        0xa0 => (Some(Op::Mov), Form::AlOb),
        0xa1 => (Some(Op::Mov), Form::AxOv),
        0xa2 => (Some(Op::Mov), Form::ObAl),
        0xa3 => (Some(Op::Mov), Form::OvAx),
        0xa4 | 0xa5 => (Some(Op::Movs), Form::Str),
        0xa6 | 0xa7 => (Some(Op::Cmps), Form::Str),
        0xa8 => (Some(Op::Test), Form::AlIb),
        0xa9 => (Some(Op::Test), Form::AxIz),
        0xaa | 0xab => (Some(Op::Stos), Form::Str),
        0xac | 0xad => (Some(Op::Lods), Form::Str),
        0xae | 0xaf => (Some(Op::Scas), Form::Str),
        0xb0..=0xb7 => (Some(Op::Mov), Form::ZbIb),
        0xb8..=0xbf => (Some(Op::Mov), Form::ZvIv),
        0xc6 => (Some(Op::Mov), Form::Grp11Eb),
        0xc7 => (Some(Op::Mov), Form::Grp11Ev),
        0xe4 | 0xe5 => (Some(Op::In), Form::PortIb),
        0xe6 | 0xe7 => (Some(Op::Out), Form::PortIb),
        0xec | 0xed => (Some(Op::In), Form::PortDx),
        0xee | 0xef => (Some(Op::Out), Form::PortDx),
        0xcc => (Some(Op::Int3), Form::Plain),
        0xf4 => (Some(Op::Hlt), Form::Plain),
        0xf6 => (None, Form::Grp3Eb),
        0xf7 => (None, Form::Grp3Ev),
        0xfe => (None, Form::Grp4Eb),
        0xff => (None, Form::Grp5Ev),
        _ => return Err(DecodeError::Unsupported),
    })
}

/// The two-byte (0F) opcode map (the subset we handle). Fixed-ModRM instructions (0F 01 xx)
/// consume their ModRM byte here.
pub(super) fn two_byte(
    c: &mut Cursor<'_>,
    b: u8,
    p: &Prefixes,
) -> Result<(Option<Op>, Form), DecodeError> {
    Ok(match b {
        0x01 => {
            let m = c.peek()?;
            // With 66 the register forms of 0F 01 are other (or no) instructions.
            if p.opsize && m & 0xc0 == 0xc0 {
                return Err(DecodeError::Unsupported);
            }
            let op = match m {
                0xc1 => Op::Vmcall,
                0xc8 => Op::Monitor,
                0xc9 => Op::Mwait,
                0xd0 => Op::Xgetbv,
                0xd1 => Op::Xsetbv,
                0xd9 => Op::Vmmcall,
                0xf9 => Op::Rdtscp,
                // INVLPG m: the memory form of /7.
                _ if m & 0xc0 != 0xc0 && (m >> 3) & 7 == 7 => {
                    return Ok((Some(Op::Invlpg), Form::M))
                }
                _ => return Err(DecodeError::Unsupported),
            };
            c.next()?;
            (Some(op), Form::Plain)
        }
        0x08 => (Some(Op::Invd), Form::Plain),
        0x09 => (Some(Op::Wbinvd), Form::Plain),
        // 0F 1F /0 is the multi-byte NOP; /1-/7 are reserved-NOP encodings.
        0x1f if (c.peek()? >> 3) & 7 == 0 => (Some(Op::Nop), Form::M),
        0x20 => (None, Form::MovFromCr),
        0x22 => (None, Form::MovToCr),
        0x21 => (Some(Op::MovFromDr), Form::MovDr),
        0x23 => (Some(Op::MovToDr), Form::MovDr),
        0x30 => (Some(Op::Wrmsr), Form::Plain),
        0x31 => (Some(Op::Rdtsc), Form::Plain),
        0x32 => (Some(Op::Rdmsr), Form::Plain),
        0x33 => (Some(Op::Rdpmc), Form::Plain),
        0xa2 => (Some(Op::Cpuid), Form::Plain),
        0xa3 => (Some(Op::Bit(BitOp::Bt)), Form::BtEvGv),
        0xab => (Some(Op::Bit(BitOp::Bts)), Form::BtEvGv),
        0xb3 => (Some(Op::Bit(BitOp::Btr)), Form::BtEvGv),
        0xbb => (Some(Op::Bit(BitOp::Btc)), Form::BtEvGv),
        0xb6 => (Some(Op::Movzx), Form::GvEb),
        0xb7 => (Some(Op::Movzx), Form::GvEw),
        0xba => (None, Form::Grp8),
        0xbe => (Some(Op::Movsx), Form::GvEb),
        0xbf => (Some(Op::Movsx), Form::GvEw),
        _ => return Err(DecodeError::Unsupported),
    })
}

/// The three-byte 0F 38 map (the subset we handle): MOVBE. Its mandatory prefixes select the
/// instruction: none or 66 is MOVBE, F2 is CRC32 and F3 nothing (upstream's
/// `three_byte_0f_38_f0/f1` group-prefix tables).
pub(super) fn three_byte_38(
    c: &mut Cursor<'_>,
    p: &Prefixes,
) -> Result<(Option<Op>, Form), DecodeError> {
    let b = c.next()?;
    if p.rep.is_some() {
        return Err(DecodeError::Unsupported);
    }
    Ok(match b {
        0xf0 => (Some(Op::Movbe), Form::GvMv),
        0xf1 => (Some(Op::Movbe), Form::MvGv),
        _ => return Err(DecodeError::Unsupported),
    })
}
