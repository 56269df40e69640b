// SPDX-License-Identifier: GPL-2.0-only
//! The operand builder: ModRM, SIB, displacements, immediates and moffs for every [`Form`],
//! and the prefix checks (LOCK) that depend on the decoded operation.

use x86::state::{Gpr, SegReg};

use super::maps::Form;
use super::prefix::{gpr, Cursor, Prefixes};
use super::{truncate, AluOp, BitOp, CodeSize, DecodeError, Insn, Mem, Op, Operand, Reg};

/// Decoding state shared by the operand builders.
struct Ctx<'a, 'b> {
    c: &'a mut Cursor<'b>,
    mode: CodeSize,
    p: &'a Prefixes,
    addr_size: u8,
    /// ModRM, once read.
    modrm: Option<u8>,
}

impl Ctx<'_, '_> {
    fn modrm(&mut self) -> Result<u8, DecodeError> {
        match self.modrm {
            Some(m) => Ok(m),
            None => {
                let m = self.c.next()?;
                self.modrm = Some(m);
                Ok(m)
            }
        }
    }

    /// A register operand of `size` bytes numbered `n` (0-7) extended by the REX bit `rex_bit`.
    fn reg(&self, n: u8, rex_bit: u8, size: u8) -> Reg {
        let ext = self.p.rex_bit(rex_bit) << 3;
        if size == 1 && self.p.rex.is_none() && (4..8).contains(&n) {
            // Without REX, byte registers 4-7 are AH, CH, DH, BH.
            return Reg {
                gpr: gpr(n - 4),
                high_byte: true,
            };
        }
        Reg::new(gpr(n | ext))
    }

    /// The ModRM.reg operand.
    fn g(&mut self, size: u8) -> Result<Operand, DecodeError> {
        let m = self.modrm()?;
        Ok(Operand::Reg(self.reg((m >> 3) & 7, 2, size)))
    }

    /// The ModRM r/m operand: a register or a memory reference.
    fn e(&mut self, size: u8) -> Result<Operand, DecodeError> {
        let m = self.modrm()?;
        let md = m >> 6;
        let rm = m & 7;
        if md == 3 {
            return Ok(Operand::Reg(self.reg(rm, 0, size)));
        }
        let mem = if self.addr_size == 2 {
            self.mem16(md, rm)?
        } else {
            self.mem32_64(md, rm)?
        };
        Ok(Operand::Mem(mem))
    }

    fn seg_or(&self, default: SegReg) -> SegReg {
        self.p.seg.unwrap_or(default)
    }

    /// 16-bit addressing: the eight fixed base/index pairs.
    fn mem16(&mut self, md: u8, rm: u8) -> Result<Mem, DecodeError> {
        const TABLE: [(Option<Gpr>, Option<Gpr>); 8] = [
            (Some(Gpr::Rbx), Some(Gpr::Rsi)),
            (Some(Gpr::Rbx), Some(Gpr::Rdi)),
            (Some(Gpr::Rbp), Some(Gpr::Rsi)),
            (Some(Gpr::Rbp), Some(Gpr::Rdi)),
            (Some(Gpr::Rsi), None),
            (Some(Gpr::Rdi), None),
            (Some(Gpr::Rbp), None),
            (Some(Gpr::Rbx), None),
        ];
        let (mut base, index) = TABLE[usize::from(rm)];
        let disp = match md {
            0 if rm == 6 => {
                base = None;
                self.c.le_signed(2)?
            }
            0 => 0,
            1 => self.c.le_signed(1)?,
            _ => self.c.le_signed(2)?,
        };
        let default = if base == Some(Gpr::Rbp) {
            SegReg::Ss
        } else {
            SegReg::Ds
        };
        Ok(Mem {
            seg: self.seg_or(default),
            base,
            index,
            scale: 1,
            disp,
            rip_relative: false,
        })
    }

    /// 32- and 64-bit addressing: SIB, disp32-only and RIP-relative forms.
    fn mem32_64(&mut self, md: u8, rm: u8) -> Result<Mem, DecodeError> {
        let mut base = None;
        let mut index = None;
        let mut scale = 1;
        let mut rip_relative = false;
        let mut disp_size = match md {
            0 => 0,
            1 => 1,
            _ => 4,
        };
        if rm == 4 {
            let sib = self.c.next()?;
            let idx = ((sib >> 3) & 7) | (self.p.rex_bit(1) << 3);
            // Index 4 without REX.X means "no index" (RSP cannot be an index; R12 can).
            if idx != 4 {
                index = Some(gpr(idx));
                scale = 1 << (sib >> 6);
            }
            let b = sib & 7;
            if b == 5 && md == 0 {
                disp_size = 4;
            } else {
                base = Some(gpr(b | (self.p.rex_bit(0) << 3)));
            }
        } else if rm == 5 && md == 0 {
            disp_size = 4;
            rip_relative = self.mode == CodeSize::Bits64;
        } else {
            base = Some(gpr(rm | (self.p.rex_bit(0) << 3)));
        }
        let disp = if disp_size == 0 {
            0
        } else {
            self.c.le_signed(disp_size)?
        };
        let default = match base {
            Some(Gpr::Rbp) | Some(Gpr::Rsp) => SegReg::Ss,
            _ => SegReg::Ds,
        };
        Ok(Mem {
            seg: self.seg_or(default),
            base,
            index,
            scale,
            disp,
            rip_relative,
        })
    }

    /// An immediate of `n` bytes, sign-extended and truncated to `size` bytes.
    fn imm(&mut self, n: u8, size: u8) -> Result<Operand, DecodeError> {
        let v = self.c.le_signed(n)? as u64;
        Ok(Operand::Imm(truncate(v, size)))
    }

    /// A moffs operand: an absolute offset of the address size.
    fn moffs(&mut self) -> Result<Operand, DecodeError> {
        let disp = self.c.le(self.addr_size)? as i64;
        Ok(Operand::Mem(Mem {
            seg: self.seg_or(SegReg::Ds),
            base: None,
            index: None,
            scale: 1,
            disp,
            rip_relative: false,
        }))
    }
}

/// Builds the operands for `form` and checks prefixes against the instruction.
pub(super) fn finish(
    c: &mut Cursor<'_>,
    mode: CodeSize,
    p: &Prefixes,
    opcode: u8,
    op: Option<Op>,
    form: Form,
) -> Result<Insn, DecodeError> {
    let default16 = mode == CodeSize::Bits16;
    // Operand size: REX.W beats 66; 66 toggles 16 <-> 32.
    let v = if p.rex_bit(3) == 1 {
        8
    } else if p.opsize == default16 {
        4
    } else {
        2
    };
    let z = v.min(4);
    let addr_size = match (mode, p.addrsize) {
        (CodeSize::Bits64, false) => 8,
        (CodeSize::Bits64, true) | (CodeSize::Bits32, false) | (CodeSize::Bits16, true) => 4,
        (CodeSize::Bits32, true) | (CodeSize::Bits16, false) => 2,
    };
    let mut x = Ctx {
        c,
        mode,
        p,
        addr_size,
        modrm: None,
    };
    let byte_form = opcode & 1 == 0;
    let acc = |_size: u8| Operand::Reg(Reg::new(Gpr::Rax));
    let mut op_size = v;
    let mut src_size = 0;
    let (op, dst, src) = match form {
        Form::Plain => (op, Operand::None, Operand::None),
        Form::MovToCr | Form::MovFromCr => {
            // The operand size is the mode's (66 and REX.W do nothing); REX.R selects
            // CR8-CR15, REX.B the upper GPRs.
            let m = x.modrm()?;
            let cr = ((m >> 3) & 7) | (p.rex_bit(2) << 3);
            // CR1, CR5-CR7 and CR9-CR15 do not exist: #UD.
            if !matches!(cr, 0 | 2 | 3 | 4 | 8) {
                return Err(DecodeError::Invalid);
            }
            op_size = if mode == CodeSize::Bits64 { 8 } else { 4 };
            let r = Operand::Reg(x.reg(m & 7, 0, op_size));
            if form == Form::MovToCr {
                (Some(Op::MovToCr(cr)), Operand::None, r)
            } else {
                (Some(Op::MovFromCr(cr)), r, Operand::None)
            }
        }
        Form::EbGb => {
            op_size = 1;
            (op, x.e(1)?, x.g(1)?)
        }
        Form::EvGv => (op, x.e(v)?, x.g(v)?),
        Form::GbEb => {
            op_size = 1;
            (op, x.g(1)?, x.e(1)?)
        }
        Form::GvEv => (op, x.g(v)?, x.e(v)?),
        Form::AlIb => {
            op_size = 1;
            (op, acc(1), x.imm(1, 1)?)
        }
        Form::AxIz => (op, acc(v), x.imm(z, v)?),
        Form::Grp1Eb | Form::Grp1EvIz | Form::Grp1EvIb => {
            // 80 /r Eb,Ib; 81 /r Ev,Iz; 83 /r Ev,Ib (sign-extended).
            let m = x.modrm()?;
            let alu = Some(Op::Alu(AluOp::from_bits(m >> 3)));
            let (size, isz) = match form {
                Form::Grp1Eb => (1, 1),
                Form::Grp1EvIz => (v, z),
                _ => (v, 1),
            };
            op_size = size;
            (alu, x.e(size)?, x.imm(isz, size)?)
        }
        Form::Grp3Eb | Form::Grp3Ev => {
            let size = if form == Form::Grp3Eb { 1 } else { v };
            op_size = size;
            let m = x.modrm()?;
            match (m >> 3) & 7 {
                0 => (Some(Op::Test), x.e(size)?, x.imm(size.min(4), size)?),
                2 => (Some(Op::Not), x.e(size)?, Operand::None),
                3 => (Some(Op::Neg), x.e(size)?, Operand::None),
                // /1 is an undocumented TEST alias; /4-/7 are MUL/IMUL/DIV/IDIV.
                _ => return Err(DecodeError::Unsupported),
            }
        }
        Form::Grp4Eb | Form::Grp5Ev => {
            let size = if form == Form::Grp4Eb { 1 } else { v };
            op_size = size;
            let m = x.modrm()?;
            match (m >> 3) & 7 {
                0 => (Some(Op::Inc), x.e(size)?, Operand::None),
                1 => (Some(Op::Dec), x.e(size)?, Operand::None),
                // CALL/JMP/PUSH and invalid encodings.
                _ => return Err(DecodeError::Unsupported),
            }
        }
        Form::Grp11Eb | Form::Grp11Ev => {
            let size = if form == Form::Grp11Eb { 1 } else { v };
            op_size = size;
            // C6/C7 /1-/7 are XABORT/XBEGIN (reg 7, mod 3) or invalid.
            if (x.modrm()? >> 3) & 7 != 0 {
                return Err(DecodeError::Unsupported);
            }
            (op, x.e(size)?, x.imm(size.min(4), size)?)
        }
        Form::AlOb => {
            op_size = 1;
            (op, acc(1), x.moffs()?)
        }
        Form::AxOv => (op, acc(v), x.moffs()?),
        Form::ObAl => {
            op_size = 1;
            (op, x.moffs()?, acc(1))
        }
        Form::OvAx => (op, x.moffs()?, acc(v)),
        Form::ZbIb => {
            op_size = 1;
            (op, Operand::Reg(x.reg(opcode & 7, 0, 1)), x.imm(1, 1)?)
        }
        Form::ZvIv => {
            // MOV r64, imm64 is the only instruction with an 8-byte immediate.
            (op, Operand::Reg(x.reg(opcode & 7, 0, v)), x.imm(v, v)?)
        }
        Form::XchgZv => (op, Operand::Reg(x.reg(opcode & 7, 0, v)), acc(v)),
        Form::Zv => (op, Operand::Reg(x.reg(opcode & 7, 0, v)), Operand::None),
        Form::Str => {
            op_size = if byte_form { 1 } else { z };
            if matches!(
                op,
                Some(Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas)
            ) && !byte_form
            {
                op_size = v;
            }
            (op, Operand::None, Operand::None)
        }
        Form::PortIb | Form::PortDx => {
            op_size = if byte_form { 1 } else { z };
            let port = if form == Form::PortIb {
                Operand::Imm(x.c.le(1)?)
            } else {
                Operand::Reg(Reg::new(Gpr::Rdx))
            };
            src_size = 2;
            match op {
                Some(Op::In) => (op, acc(op_size), port),
                // OUT: `dst` is the port, `src` the accumulator.
                _ => {
                    src_size = op_size;
                    (op, port, acc(op_size))
                }
            }
        }
        Form::GvEb => {
            src_size = 1;
            (op, x.g(v)?, x.e(1)?)
        }
        Form::GvEw => {
            src_size = 2;
            (op, x.g(v)?, x.e(2)?)
        }
        Form::GvEd => {
            // MOVSXD without REX.W is a plain 32- or 16-bit move; we take only the REX.W form.
            if v != 8 {
                return Err(DecodeError::Unsupported);
            }
            src_size = 4;
            (op, x.g(v)?, x.e(4)?)
        }
        Form::BtEvGv => (op, x.e(v)?, x.g(v)?),
        Form::Grp8 => {
            let m = x.modrm()?;
            let bit = match (m >> 3) & 7 {
                4 => BitOp::Bt,
                5 => BitOp::Bts,
                6 => BitOp::Btr,
                7 => BitOp::Btc,
                _ => return Err(DecodeError::Unsupported),
            };
            src_size = 1;
            let dst = x.e(v)?;
            (Some(Op::Bit(bit)), dst, Operand::Imm(x.c.le(1)?))
        }
        Form::MovDr => {
            // ModRM.reg names the debug register; r/m is a register whatever
            // ModRM.mod says; 64-bit in 64-bit mode, else 32-bit (operand-size prefixes ignored).
            let m = x.modrm()?;
            op_size = if mode == CodeSize::Bits64 { 8 } else { 4 };
            let reg = Operand::Reg(x.reg(m & 7, 0, op_size));
            // DR8-15 (REX.R) do not exist: #UD, which the CPU raises before any intercept.
            if p.rex_bit(2) != 0 {
                return Err(DecodeError::Unsupported);
            }
            let dr = Operand::Imm(u64::from((m >> 3) & 7));
            if op == Some(Op::MovFromDr) {
                (op, reg, dr)
            } else {
                (op, dr, reg)
            }
        }
        Form::GvMv | Form::MvGv => {
            let g = x.g(v)?;
            let e = x.e(v)?;
            // MOVBE has no register form: hardware raises #UD.
            if e.mem().is_none() {
                return Err(DecodeError::Invalid);
            }
            if form == Form::GvMv {
                (op, g, e)
            } else {
                (op, e, g)
            }
        }
        Form::Rdpid => {
            // Op3264: 66 and REX.W change nothing; REX.B extends the register.
            let m = x.modrm()?;
            op_size = if mode == CodeSize::Bits64 { 8 } else { 4 };
            (op, Operand::Reg(x.reg(m & 7, 0, op_size)), Operand::None)
        }
        Form::M => {
            let dst = x.e(v)?;
            if op == Some(Op::Invlpg) && dst.mem().is_none() {
                return Err(DecodeError::Unsupported);
            }
            (op, dst, Operand::None)
        }
    };
    let op = op.ok_or(DecodeError::Unsupported)?;
    if src_size == 0 {
        src_size = op_size;
    }
    // LOCK is legal only on a read-modify-write of memory (SDM "LOCK": ADD..XOR but not CMP,
    // XCHG, NOT, NEG, INC, DEC, BTS/BTR/BTC); everything else raises #UD.
    if p.lock {
        let rmw = matches!(
            op,
            Op::Alu(a) if a != AluOp::Cmp
        ) || matches!(
            op,
            Op::Xchg
                | Op::Not
                | Op::Neg
                | Op::Inc
                | Op::Dec
                | Op::Bit(BitOp::Bts | BitOp::Btr | BitOp::Btc)
        );
        if !rmw || dst.mem().is_none() {
            return Err(DecodeError::Invalid);
        }
    }
    Ok(Insn {
        op,
        len: x.c.pos as u8,
        op_size,
        src_size,
        addr_size,
        dst,
        src,
        rep: p.rep,
        lock: p.lock,
        str_seg: p.seg.unwrap_or(SegReg::Ds),
    })
}
