// SPDX-License-Identifier: GPL-2.0-only
//! The x86 instruction decoder.
//!
//! It decodes exactly the instructions the run loop has to handle in software and nothing
//! else: the ones it intercepts and must skip (SVM on QEMU's TCG has no NRIP save, so the
//! length is ours to find) and the ones a guest uses to touch MMIO (upstream's emulator list
//! for MMIO: MOV forms, MOVZX/MOVSX, string moves, the ALU operations with a memory operand),
//! and the ones the #UD intercept emulates (MOVBE, RDPID, VMCALL).
//! Anything else is [`DecodeError::Unsupported`], which the run loop reports as an emulation
//! failure with the instruction bytes: an instruction we do not fully understand must never be
//! guessed at, because a wrong length or operand silently corrupts the guest.
//!
//! Why not a crate: iced-x86's `no_std` mode still links `alloc` (the 6.12 kernel builds none),
//! and yaxpeax-x86, although allocation-free, brings three more crates and ~34k lines of
//! tables for the whole ISA into the module while the emulator needs a small structured subset.
//! The host tests use iced-x86 (std) as an oracle instead.
//!
//! The shape follows the manuals' opcode maps: prefixes (`prefix.rs`), then per opcode an
//! operation and a form, the operand layout such as `Ev,Gv` (`maps.rs`, table-like `match`es),
//! then one generic operand builder that parses ModRM/SIB/displacement/immediate for every
//! form and checks LOCK (`operands.rs`). This file holds the public types.

use x86::state::{Gpr, SegReg};

mod maps;
mod operands;
mod prefix;

use maps::{one_byte, three_byte_38, two_byte};
use operands::finish;
use prefix::{prefixes, Cursor};

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
    /// MOV r, DRn (0F 21): `dst` the register, `src` the debug register's number (0-7) as
    /// [`Operand::Imm`] (ModRM.reg; r/m is a register whatever ModRM.mod says).
    MovFromDr,
    /// MOV DRn, r (0F 23): `dst` the debug register's number as [`Operand::Imm`], `src` the
    /// register.
    MovToDr,
    /// INT3 (CC): skipped before a #BP that `KVM_GUESTDBG_INJECT_BP` injects, as upstream's
    /// soft-exception injection does without next-RIP save.
    Int3,
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
    /// CMPS: flags of seg:rSI - ES:rDI (REPE/REPNE stop on ZF).
    Cmps,
    /// SCAS: flags of rAX - ES:rDI (REPE/REPNE stop on ZF).
    Scas,
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
    /// MOV CRn, r (0F 22 /r) with n the payload (ModRM.reg, REX.R for CR8-CR15): `src` is the
    /// GPR (64 bits in 64-bit mode, else 32). Only decoded, for the CR-write intercept.
    MovToCr(u8),
    /// MOV r, CRn (0F 20 /r): `dst` is the GPR, as for [`Op::MovToCr`]. Only decoded, for
    /// the CR-read intercept.
    MovFromCr(u8),
    /// MOVBE (0F 38 F0 /r: `dst` the register, `src` memory; 0F 38 F1 /r: `dst` memory,
    /// `src` the register): a move with the bytes reversed. Memory forms only (a register
    /// r/m is #UD); 66 selects 16 bits, REX.W 64; F2/F3 are other instructions.
    Movbe,
    /// RDPID r (F3 0F C7 /7, register form): `dst` the register, 64 bits in 64-bit mode and
    /// 32 otherwise whatever 66 or REX.W say; reads `MSR_TSC_AUX`.
    Rdpid,
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
    /// Operand size in bytes (1, 2, 4, 8): of `dst` (for MOVZX/MOVSX the destination), of the
    /// element for string instructions, of the data for IN/OUT.
    pub op_size: u8,
    /// Size of `src` in bytes: equal to `op_size` except for MOVZX/MOVSX (the source), IN (the
    /// port, 2) and an immediate bit test (the bit number, 1).
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
        match b2 {
            // The 0F 38 map checks its mandatory prefixes itself.
            0x38 => three_byte_38(&mut c, &p)?,
            // F3 0F C7 /7 (register form) is RDPID; 66 with F3 selects nothing (upstream's
            // decoder fails on a REP and an operand-size prefix together).
            0xc7 if p.rep == Some(Rep::Rep) && !p.opsize && c.peek()? & 0xf8 == 0xf8 => {
                (Some(Op::Rdpid), maps::Form::Rdpid)
            }
            // The two-byte map's F2/F3 (and for SSE, 66) prefixes select other instructions
            // (POPCNT, TZCNT, ...): none of ours takes them, so refuse rather than misdecode.
            _ if p.rep.is_some() => return Err(DecodeError::Unsupported),
            _ => two_byte(&mut c, b2, &p)?,
        }
    } else {
        one_byte(b, mode, &p)?
    };
    finish(&mut c, mode, &p, b, op, form)
}
