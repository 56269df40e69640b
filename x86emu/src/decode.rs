// SPDX-License-Identifier: GPL-2.0-only
//! The x86 instruction decoder.
//!
//! It decodes exactly the instructions the run loop has to handle in software and nothing
//! else: the ones it intercepts and must skip (SVM on QEMU's TCG has no NRIP save, so the
//! length is ours to find) and the ones a guest uses to touch MMIO (upstream's emulator list
//! for MMIO: MOV forms, MOVZX/MOVSX, string moves, the ALU operations with a memory operand).
//! Anything else is [`DecodeError::Unsupported`], which the run loop reports as an emulation
//! failure with the instruction bytes: an instruction we do not fully understand must never be
//! guessed at, because a wrong length or operand silently corrupts the guest.
//!
//! Why not a crate: iced-x86's `no_std` mode still links `alloc` (the 6.12 kernel builds none),
//! and yaxpeax-x86, although allocation-free, brings three more crates and ~34k lines of
//! tables for the whole ISA into the module while the emulator needs a small structured subset.
//! The host tests use iced-x86 (std) as an oracle instead.
//!
//! The shape follows the manuals' opcode maps: prefixes, then a per-opcode [`Form`] (the
//! operand layout, e.g. `Ev,Gv`) picked by a table-like `match`, then one generic operand
//! builder that parses ModRM/SIB/displacement/immediate for every form.

use x86::state::{Gpr, SegReg};

/// The longest legal instruction, in bytes; longer ones raise #GP on hardware.
pub const MAX_INSN_LEN: usize = 15;

/// The default operand and address size of the code being decoded (CS.D, CS.L, CR0.PE, EFER.LMA
/// decide; see [`crate::emulate::CpuMode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode, virtual-8086 mode, and 16-bit protected or compatibility mode.
    Bits16,
    /// 32-bit protected or compatibility mode.
    Bits32,
    /// 64-bit mode (long mode with CS.L).
    Bits64,
}

/// Why an instruction could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes given end before the instruction does (the fetch stopped at a page or segment
    /// boundary it could not cross): the fetch's own fault is the right answer.
    Truncated,
    /// The instruction would be longer than 15 bytes (#GP(0) on hardware).
    TooLong,
    /// An encoding hardware rejects with #UD (LOCK on an instruction or operand that does not
    /// allow it).
    Invalid,
    /// An instruction this decoder does not handle; emulation failure, never a guess.
    Unsupported,
}

/// REP/REPE (F3) and REPNE (F2) prefixes, as they apply to string instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rep {
    /// F3: REP, or REPE/REPZ for CMPS/SCAS.
    Rep,
    /// F2: REPNE/REPNZ.
    Repne,
}

/// The two-operand ALU operations of the 00-3F block and the 80/81/83 group, in their
/// encoding order (ModRM.reg of group 1, bits 3-5 of the one-byte opcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AluOp {
    Add = 0,
    Or = 1,
    Adc = 2,
    Sbb = 3,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

impl AluOp {
    const ALL: [AluOp; 8] = [
        AluOp::Add,
        AluOp::Or,
        AluOp::Adc,
        AluOp::Sbb,
        AluOp::And,
        AluOp::Sub,
        AluOp::Xor,
        AluOp::Cmp,
    ];

    fn from_bits(n: u8) -> AluOp {
        Self::ALL[usize::from(n & 7)]
    }
}

/// The bit-test instructions (0F A3/AB/B3/BB and group 8, 0F BA /4-/7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BitOp {
    Bt,
    Bts,
    Btr,
    Btc,
}

/// The decoded operation. Operands are in [`Insn::dst`]/[`Insn::src`]; string and port
/// instructions have implicit operands (RSI/RDI/RCX/DX) the emulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// CPUID (0F A2).
    Cpuid,
    /// HLT (F4).
    Hlt,
    /// RDMSR (0F 32).
    Rdmsr,
    /// WRMSR (0F 30).
    Wrmsr,
    /// VMMCALL (0F 01 D9), AMD's hypercall.
    Vmmcall,
    /// VMCALL (0F 01 C1), Intel's hypercall (a guest may use either).
    Vmcall,
    /// XSETBV (0F 01 D1).
    Xsetbv,
    /// XGETBV (0F 01 D0).
    Xgetbv,
    /// RDTSC (0F 31).
    Rdtsc,
    /// RDTSCP (0F 01 F9).
    Rdtscp,
    /// RDPMC (0F 33).
    Rdpmc,
    /// INVD (0F 08).
    Invd,
    /// WBINVD (0F 09).
    Wbinvd,
    /// MONITOR (0F 01 C8).
    Monitor,
    /// MWAIT (0F 01 C9).
    Mwait,
    /// INVLPG m (0F 01 /7); `dst` is the memory operand.
    Invlpg,
    /// PAUSE (F3 90).
    Pause,
    /// NOP (90, 0F 1F /r).
    Nop,
    /// IN: `dst` is AL/AX/EAX, `src` the port (an immediate or DX).
    In,
    /// OUT: `dst` is the port (an immediate or DX), `src` AL/AX/EAX.
    Out,
    /// INS: port DX to ES:rDI.
    Ins,
    /// OUTS: seg:rSI to port DX.
    Outs,
    /// MOV `dst` <- `src`.
    Mov,
    /// MOVZX `dst` <- zero-extended `src` of [`Insn::src_size`] bytes.
    Movzx,
    /// MOVSX/MOVSXD `dst` <- sign-extended `src` of [`Insn::src_size`] bytes.
    Movsx,
    /// MOVS: seg:rSI to ES:rDI.
    Movs,
    /// STOS: rAX to ES:rDI.
    Stos,
    /// LODS: seg:rSI to rAX.
    Lods,
    /// An ALU operation `dst` op= `src` (CMP writes only flags).
    Alu(AluOp),
    /// TEST: `dst` & `src`, flags only.
    Test,
    /// XCHG `dst`, `src`.
    Xchg,
    /// A bit test on `dst` with the bit offset `src`.
    Bit(BitOp),
    /// NOT `dst`.
    Not,
    /// NEG `dst`.
    Neg,
    /// INC `dst`.
    Inc,
    /// DEC `dst`.
    Dec,
}

/// A general-purpose register operand of [`Insn::op_size`] (or [`Insn::src_size`]) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// The register (encoding order).
    pub gpr: Gpr,
    /// AH/CH/DH/BH: bits 8-15 of `gpr` (only for byte operands without a REX prefix).
    pub high_byte: bool,
}

impl Reg {
    const fn new(gpr: Gpr) -> Reg {
        Reg {
            gpr,
            high_byte: false,
        }
    }
}

/// A memory operand before segmentation: `seg:[base + index*scale + disp]`, computed in
/// [`Insn::addr_size`] bytes of address arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    /// The segment: the override prefix, else DS, or SS for rBP/rSP-based addresses.
    pub seg: SegReg,
    /// Base register.
    pub base: Option<Gpr>,
    /// Index register.
    pub index: Option<Gpr>,
    /// Scale factor (1, 2, 4, 8) for `index`.
    pub scale: u8,
    /// Signed displacement (or the absolute offset of a moffs operand).
    pub disp: i64,
    /// RIP-relative: the address is relative to the next instruction (64-bit mode only).
    pub rip_relative: bool,
}

/// An operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// No operand.
    None,
    /// A register.
    Reg(Reg),
    /// A memory location.
    Mem(Mem),
    /// An immediate, already sign- or zero-extended as the instruction defines, truncated to
    /// the operand size.
    Imm(u64),
}

impl Operand {
    /// The memory operand, if this is one.
    pub fn mem(&self) -> Option<&Mem> {
        match self {
            Operand::Mem(m) => Some(m),
            _ => None,
        }
    }
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// What it does.
    pub op: Op,
    /// Its length in bytes (1..=15).
    pub len: u8,
    /// Operand size in bytes (1, 2, 4, 8) of `dst` (for MOVZX/MOVSX the destination).
    pub op_size: u8,
    /// Size of `src` in bytes (equal to `op_size` except MOVZX/MOVSX, the port of IN/OUT (2)
    /// and the bit offset of an immediate bit test (1)).
    pub src_size: u8,
    /// Address size in bytes (2, 4, 8).
    pub addr_size: u8,
    /// Destination (or the only) operand.
    pub dst: Operand,
    /// Source operand.
    pub src: Operand,
    /// The REP/REPNE prefix, if any (meaningful for string instructions).
    pub rep: Option<Rep>,
    /// LOCK prefix (checked to be legal for this instruction).
    pub lock: bool,
    /// The segment used for the implicit rSI source of string instructions (DS unless
    /// overridden); ES:rDI is never overridable.
    pub str_seg: SegReg,
}

impl Insn {
    /// The memory operand, if the instruction has an explicit one.
    pub fn mem_operand(&self) -> Option<&Mem> {
        self.dst.mem().or(self.src.mem())
    }
}

/// The operand layout of an opcode, in the manuals' notation (E = ModRM r/m, G = ModRM.reg,
/// I = immediate, O = moffs, Z = register in the opcode's low bits; b = byte, v = operand size,
/// z = operand size capped at 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
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
}

/// The prefixes in front of an opcode.
#[derive(Clone, Copy, Default)]
struct Prefixes {
    opsize: bool,
    addrsize: bool,
    lock: bool,
    rep: Option<Rep>,
    seg: Option<SegReg>,
    /// REX bits W, R, X, B (bit 3..0), if a REX prefix immediately precedes the opcode.
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> u8 {
        self.rex.map_or(0, |r| (r >> bit) & 1)
    }
}

/// A cursor over the instruction bytes that enforces the 15-byte limit.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// Reads a little-endian value of `n` bytes.
    fn le(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    /// Reads a little-endian value of `n` bytes and sign-extends it to 64 bits.
    fn le_signed(&mut self, n: u8) -> Result<i64, DecodeError> {
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

fn gpr(n: u8) -> Gpr {
    GPRS[usize::from(n & 15)]
}

/// Truncates `v` to `size` bytes.
pub(crate) fn truncate(v: u64, size: u8) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (8 * u32::from(size))) - 1)
    }
}

/// Decodes the instruction at the start of `bytes` (up to [`MAX_INSN_LEN`] are looked at).
pub fn decode(bytes: &[u8], mode: CodeSize) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let p = prefixes(&mut c, mode)?;
    let b = c.next()?;
    let (op, form) = if b == 0x0f {
        let b2 = c.next()?;
        // The two-byte map's F2/F3 (and for SSE, 66) prefixes select other instructions
        // (POPCNT, TZCNT, ...): none of ours takes them, so refuse rather than misdecode.
        if p.rep.is_some() {
            return Err(DecodeError::Unsupported);
        }
        two_byte(&mut c, b2, &p)?
    } else {
        one_byte(b, mode, &p)?
    };
    finish(&mut c, mode, &p, b, op, form)
}

/// Reads the legacy prefixes and a REX prefix.
fn prefixes(c: &mut Cursor<'_>, mode: CodeSize) -> Result<Prefixes, DecodeError> {
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

/// The one-byte opcode map (the subset we handle).
fn one_byte(b: u8, mode: CodeSize, p: &Prefixes) -> Result<(Option<Op>, Form), DecodeError> {
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
        0xa8 => (Some(Op::Test), Form::AlIb),
        0xa9 => (Some(Op::Test), Form::AxIz),
        0xaa | 0xab => (Some(Op::Stos), Form::Str),
        0xac | 0xad => (Some(Op::Lods), Form::Str),
        0xb0..=0xb7 => (Some(Op::Mov), Form::ZbIb),
        0xb8..=0xbf => (Some(Op::Mov), Form::ZvIv),
        0xc6 => (Some(Op::Mov), Form::Grp11Eb),
        0xc7 => (Some(Op::Mov), Form::Grp11Ev),
        0xe4 | 0xe5 => (Some(Op::In), Form::PortIb),
        0xe6 | 0xe7 => (Some(Op::Out), Form::PortIb),
        0xec | 0xed => (Some(Op::In), Form::PortDx),
        0xee | 0xef => (Some(Op::Out), Form::PortDx),
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
fn two_byte(c: &mut Cursor<'_>, b: u8, p: &Prefixes) -> Result<(Option<Op>, Form), DecodeError> {
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
fn finish(
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
            if matches!(op, Some(Op::Movs | Op::Stos | Op::Lods)) && !byte_form {
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
