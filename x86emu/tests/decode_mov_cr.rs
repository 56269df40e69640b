// SPDX-License-Identifier: GPL-2.0-only
//! MOV to a control register (0F 22 /r), decoded for the CR4-write intercept: the CR number
//! (REX.R for CR8-CR15), the source GPR (REX.B), the mode's operand size whatever 66/REX.W say,
//! and ModRM.mod ignored.

use x86::state::Gpr;
use x86emu::decode::{decode, CodeSize, Op, Operand};

fn mov_cr(bytes: &[u8], mode: CodeSize) -> (u8, Gpr, u8, u8) {
    let i = decode(bytes, mode).unwrap();
    let Op::MovToCr(cr) = i.op else {
        panic!("{bytes:02x?}: {:?}", i.op)
    };
    let Operand::Reg(r) = i.src else {
        panic!("{bytes:02x?}: src {:?}", i.src)
    };
    assert_eq!(i.dst, Operand::None);
    (cr, r.gpr, i.op_size, i.len)
}

#[test]
fn mov_to_cr4_forms() {
    use CodeSize::*;
    // mov cr4, rax / mov cr4, r11 / mov cr8, rax (long mode).
    assert_eq!(mov_cr(&[0x0f, 0x22, 0xe0], Bits64), (4, Gpr::Rax, 8, 3));
    assert_eq!(
        mov_cr(&[0x41, 0x0f, 0x22, 0xe3], Bits64),
        (4, Gpr::R11, 8, 4)
    );
    assert_eq!(
        mov_cr(&[0x44, 0x0f, 0x22, 0xc0], Bits64),
        (8, Gpr::Rax, 8, 4)
    );
    // mov cr0, rdi; mov cr3, rdx.
    assert_eq!(mov_cr(&[0x0f, 0x22, 0xc7], Bits64), (0, Gpr::Rdi, 8, 3));
    assert_eq!(mov_cr(&[0x0f, 0x22, 0xda], Bits64), (3, Gpr::Rdx, 8, 3));
    // Protected and real mode: 32-bit operand, 66 changes nothing.
    assert_eq!(mov_cr(&[0x0f, 0x22, 0xe1], Bits32), (4, Gpr::Rcx, 4, 3));
    assert_eq!(
        mov_cr(&[0x66, 0x0f, 0x22, 0xe1], Bits32),
        (4, Gpr::Rcx, 4, 4)
    );
    assert_eq!(mov_cr(&[0x0f, 0x22, 0xe3], Bits16), (4, Gpr::Rbx, 4, 3));
    // REX.W changes nothing in long mode; ModRM.mod is ignored (a register all the same).
    assert_eq!(
        mov_cr(&[0x48, 0x0f, 0x22, 0xe0], Bits64),
        (4, Gpr::Rax, 8, 4)
    );
    assert_eq!(mov_cr(&[0x0f, 0x22, 0x20], Bits64), (4, Gpr::Rax, 8, 3));
}

#[test]
fn mov_from_cr4_forms() {
    let f = |bytes: &[u8], mode| {
        let i = decode(bytes, mode).unwrap();
        let Op::MovFromCr(cr) = i.op else {
            panic!("{bytes:02x?}: {:?}", i.op)
        };
        let Operand::Reg(r) = i.dst else {
            panic!("{bytes:02x?}: dst {:?}", i.dst)
        };
        assert_eq!(i.src, Operand::None);
        (cr, r.gpr, i.op_size)
    };
    // mov rax, cr4 / mov r9, cr4 / mov ecx, cr4 (protected mode).
    assert_eq!(f(&[0x0f, 0x20, 0xe0], CodeSize::Bits64), (4, Gpr::Rax, 8));
    assert_eq!(
        f(&[0x41, 0x0f, 0x20, 0xe1], CodeSize::Bits64),
        (4, Gpr::R9, 8)
    );
    assert_eq!(f(&[0x0f, 0x20, 0xe1], CodeSize::Bits32), (4, Gpr::Rcx, 4));
    // CR1 does not exist.
    assert!(decode(&[0x0f, 0x20, 0xc8], CodeSize::Bits64).is_err());
}

#[test]
fn lock_mov_to_cr_is_refused() {
    // LOCK MOV CR0 is AMD's alternate CR8 encoding: not decoded as a CR4 write.
    assert!(!matches!(
        decode(&[0xf0, 0x0f, 0x22, 0xe0], CodeSize::Bits64).map(|i| i.op),
        Ok(Op::MovToCr(4))
    ));
}
