// SPDX-License-Identifier: GPL-2.0-only
//! MOV to and from CR8 (`REX.R 0F 22 /r`, `REX.R 0F 20 /r`), decoded for the CR8-write
//! intercept (QEMU's SVM has no DecodeAssists, so the exit does not name the register): the
//! encodings compilers and kernels emit, checked against iced-x86 (length, CR8, the GPR), and
//! the forms that are not CR8 writes: LOCK MOV CR0 (AMD's 32-bit alias for CR8, #UD in
//! upstream's emulator, which refuses LOCK there) and CR9-CR15 (#UD).

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use x86::state::Gpr;
use x86emu::decode::{decode, CodeSize, DecodeError, Op, Operand};

/// iced's 64-bit register for `g`.
fn iced_gpr(g: Gpr) -> Register {
    const R: [Register; 16] = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    R[g as usize]
}

/// Ours and iced's decode of `bytes` in 64-bit mode agree on a MOV with CR8; returns
/// (write, GPR, length).
fn mov_cr8(bytes: &[u8]) -> (bool, Gpr, u8) {
    let i = decode(bytes, CodeSize::Bits64).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"));
    let (write, r) = match (i.op, i.dst, i.src) {
        (Op::MovToCr(8), Operand::None, Operand::Reg(r)) => (true, r),
        (Op::MovFromCr(8), Operand::Reg(r), Operand::None) => (false, r),
        other => panic!("{bytes:02x?}: {other:?}"),
    };
    assert_eq!(i.op_size, 8, "{bytes:02x?}: 64-bit operand");
    let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let x = d.decode();
    assert!(!x.is_invalid(), "{bytes:02x?}: iced says invalid");
    assert_eq!(x.mnemonic(), Mnemonic::Mov, "{bytes:02x?}");
    assert_eq!(x.len(), usize::from(i.len), "{bytes:02x?}: length");
    assert_eq!(x.op0_kind(), OpKind::Register);
    assert_eq!(x.op1_kind(), OpKind::Register);
    let (cr, gpr) = if write {
        (x.op0_register(), x.op1_register())
    } else {
        (x.op1_register(), x.op0_register())
    };
    assert_eq!(cr, Register::CR8, "{bytes:02x?}: control register");
    assert_eq!(gpr, iced_gpr(r.gpr), "{bytes:02x?}: GPR");
    (write, r.gpr, i.len)
}

#[test]
fn mov_cr8_encodings() {
    // mov cr8, rax / rcx / rdi (REX.R).
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x22, 0xc0]), (true, Gpr::Rax, 4));
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x22, 0xc1]), (true, Gpr::Rcx, 4));
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x22, 0xc7]), (true, Gpr::Rdi, 4));
    // mov cr8, r9 / r15 (REX.R|REX.B); REX.W changes nothing (4c: W|R, 4d: W|R|B).
    assert_eq!(mov_cr8(&[0x45, 0x0f, 0x22, 0xc1]), (true, Gpr::R9, 4));
    assert_eq!(mov_cr8(&[0x4d, 0x0f, 0x22, 0xc7]), (true, Gpr::R15, 4));
    assert_eq!(mov_cr8(&[0x4c, 0x0f, 0x22, 0xc0]), (true, Gpr::Rax, 4));
    // ModRM.mod is ignored: a register all the same.
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x22, 0x00]), (true, Gpr::Rax, 4));
    // 66 changes nothing either (an extra prefix byte).
    assert_eq!(
        mov_cr8(&[0x66, 0x44, 0x0f, 0x22, 0xc2]),
        (true, Gpr::Rdx, 5)
    );
    // Reads: mov rax, cr8 / rbx, cr8 / r15, cr8.
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x20, 0xc0]), (false, Gpr::Rax, 4));
    assert_eq!(mov_cr8(&[0x44, 0x0f, 0x20, 0xc3]), (false, Gpr::Rbx, 4));
    assert_eq!(mov_cr8(&[0x4d, 0x0f, 0x20, 0xc7]), (false, Gpr::R15, 4));
}

#[test]
fn not_cr8_writes() {
    // Without REX.R it is CR0.
    assert_eq!(
        decode(&[0x0f, 0x22, 0xc0], CodeSize::Bits64).map(|i| i.op),
        Ok(Op::MovToCr(0))
    );
    // LOCK MOV CR0 (AMD's alternate CR8 encoding): #UD for the emulator, in every mode.
    for m in [CodeSize::Bits64, CodeSize::Bits32, CodeSize::Bits16] {
        assert_eq!(
            decode(&[0xf0, 0x0f, 0x22, 0xc0], m).map(|i| i.op),
            Err(DecodeError::Invalid),
            "{m:?}"
        );
    }
    // CR9-CR15 (REX.R with reg 1..7) do not exist.
    for reg in 1u8..8 {
        let modrm = 0xc0 | (reg << 3);
        assert_eq!(
            decode(&[0x44, 0x0f, 0x22, modrm], CodeSize::Bits64).map(|i| i.op),
            Err(DecodeError::Invalid),
            "cr{}",
            8 + reg
        );
    }
}
