// SPDX-License-Identifier: GPL-2.0-only
//! The decoder on a table of real encodings (as assemblers emit them, and as the guests of
//! kvm-ioctls' real-mode tests and the selftests' 64-bit library use them): bytes and mode ->
//! length and the operation with its operands, rendered in Intel syntax so the table reads like
//! a disassembly listing. Also the error cases: truncation, the 15-byte limit, LOCK misuse,
//! and refusals.

use x86::state::SegReg;
use x86emu::decode::{decode, CodeSize, DecodeError, Insn, Mem, Op, Operand, Reg, Rep};

const R64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const R32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "r8d", "r9d", "r10d", "r11d", "r12d",
    "r13d", "r14d", "r15d",
];
const R16: [&str; 16] = [
    "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w",
    "r14w", "r15w",
];
const R8: [&str; 16] = [
    "al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b",
    "r13b", "r14b", "r15b",
];
const R8H: [&str; 4] = ["ah", "ch", "dh", "bh"];

fn reg(r: &Reg, size: u8) -> String {
    let n = r.gpr as usize;
    if r.high_byte {
        return R8H[n].into();
    }
    match size {
        1 => R8[n],
        2 => R16[n],
        4 => R32[n],
        _ => R64[n],
    }
    .into()
}

fn addr_reg(n: usize, addr_size: u8) -> &'static str {
    match addr_size {
        2 => R16[n],
        4 => R32[n],
        _ => R64[n],
    }
}

fn mem(m: &Mem, insn: &Insn, size: u8) -> String {
    let ptr = match size {
        1 => "byte",
        2 => "word",
        4 => "dword",
        _ => "qword",
    };
    let seg = ["es", "cs", "ss", "ds", "fs", "gs"][m.seg as usize];
    let mut parts = vec![];
    if m.rip_relative {
        parts.push("rip".to_string());
    }
    if let Some(b) = m.base {
        parts.push(addr_reg(b as usize, insn.addr_size).into());
    }
    if let Some(i) = m.index {
        let s = addr_reg(i as usize, insn.addr_size);
        parts.push(if m.scale == 1 {
            s.into()
        } else {
            format!("{s}*{}", m.scale)
        });
    }
    let mut body = parts.join("+");
    if m.disp < 0 && !parts.is_empty() {
        body += &format!("-{:#x}", -(m.disp as i128));
    } else if parts.is_empty() {
        // An absolute address: the displacement wraps at the address size.
        let mask = match insn.addr_size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        };
        body += &format!("{:#x}", m.disp as u64 & mask);
    } else if m.disp != 0 {
        body += &format!("+{:#x}", m.disp);
    }
    format!("{ptr} {seg}:[{body}]")
}

fn operand(o: &Operand, insn: &Insn, size: u8) -> Option<String> {
    match o {
        Operand::None => None,
        Operand::Reg(r) => Some(reg(r, size)),
        Operand::Mem(m) => Some(mem(m, insn, size)),
        Operand::Imm(v) => Some(format!("{v:#x}")),
    }
}

/// Intel-syntax rendering of an instruction.
fn render(insn: &Insn) -> String {
    let name = match insn.op {
        Op::Alu(a) => format!("{a:?}").to_lowercase(),
        Op::Bit(b) => format!("{b:?}").to_lowercase(),
        op => format!("{op:?}").to_lowercase(),
    };
    let mut s = String::new();
    if insn.lock {
        s += "lock ";
    }
    match (insn.rep, insn.op) {
        (
            Some(Rep::Rep),
            Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas | Op::Ins | Op::Outs,
        ) => s += "rep ",
        (
            Some(Rep::Repne),
            Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas | Op::Ins | Op::Outs,
        ) => s += "repne ",
        _ => {}
    }
    s += &name;
    if matches!(
        insn.op,
        Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas | Op::Ins | Op::Outs
    ) {
        s += ["", "b", "w", "", "d", "", "", "", "q"][usize::from(insn.op_size)];
        if insn.str_seg != SegReg::Ds {
            s += &format!(" {:?}", insn.str_seg).to_lowercase();
        }
        return s;
    }
    let dsz = if matches!(insn.op, Op::Out) {
        2
    } else {
        insn.op_size
    };
    let ops: Vec<String> = [
        operand(&insn.dst, insn, dsz),
        operand(&insn.src, insn, insn.src_size),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !ops.is_empty() {
        s += " ";
        s += &ops.join(", ");
    }
    s
}

fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const B16: CodeSize = CodeSize::Bits16;
const B32: CodeSize = CodeSize::Bits32;
const B64: CodeSize = CodeSize::Bits64;

/// (mode, bytes, expected rendering); the length is the whole byte string.
const TABLE: &[(CodeSize, &str, &str)] = &[
    // kvm-ioctls' real-mode guests (test_run_code and friends).
    (B16, "ba f8 03", "mov dx, 0x3f8"),
    (B16, "00 d8", "add al, bl"),
    (B16, "04 30", "add al, 0x30"),
    (B16, "ee", "out dx, al"),
    (B16, "ec", "in al, dx"),
    (B16, "b0 0a", "mov al, 0xa"),
    (B16, "c6 06 00 80 00", "mov byte ds:[0x8000], 0x0"),
    (B16, "8a 16 00 80", "mov dl, byte ds:[0x8000]"),
    (B16, "88 07", "mov byte ds:[bx], al"),
    (B16, "c6 07 12", "mov byte ds:[bx], 0x12"),
    (B16, "f4", "hlt"),
    (B16, "8b 42 08", "mov ax, word ss:[bp+si+0x8]"),
    (B16, "89 46 fe", "mov word ss:[bp-0x2], ax"),
    (B16, "26 88 05", "mov byte es:[di], al"),
    (B16, "66 89 07", "mov dword ds:[bx], eax"),
    (B16, "67 8b 03", "mov ax, word ds:[ebx]"),
    (B16, "a0 34 12", "mov al, byte ds:[0x1234]"),
    (B16, "a3 00 01", "mov word ds:[0x100], ax"),
    (B16, "f3 aa", "rep stosb"),
    (B16, "f3 a5", "rep movsw"),
    (B16, "e6 80", "out 0x80, al"),
    (B16, "e5 71", "in ax, 0x71"),
    (B16, "f3 6c", "rep insb"),
    (B16, "2e f3 6f", "rep outsw cs"),
    (B16, "0f a2", "cpuid"),
    (B16, "0f 01 d9", "vmmcall"),
    (B16, "0f 01 c1", "vmcall"),
    (B16, "40", "inc ax"),
    (B16, "4f", "dec di"),
    // 32-bit protected mode.
    (
        B32,
        "8b 04 8d 00 10 00 00",
        "mov eax, dword ds:[ecx*4+0x1000]",
    ),
    (B32, "89 44 24 04", "mov dword ss:[esp+0x4], eax"),
    (B32, "a1 00 00 e0 fe", "mov eax, dword ds:[0xfee00000]"),
    (
        B32,
        "c7 05 b0 00 e0 fe 00 00 00 00",
        "mov dword ds:[0xfee000b0], 0x0",
    ),
    (B32, "66 c7 00 34 12", "mov word ds:[eax], 0x1234"),
    (B32, "81 48 10 00 01 00 00", "or dword ds:[eax+0x10], 0x100"),
    (B32, "83 60 10 fe", "and dword ds:[eax+0x10], 0xfffffffe"),
    (B32, "80 38 ff", "cmp byte ds:[eax], 0xff"),
    (B32, "f0 0f ab 08", "lock bts dword ds:[eax], ecx"),
    (B32, "0f ba 30 05", "btr dword ds:[eax], 0x5"),
    (
        B32,
        "0f b6 05 00 00 c0 fe",
        "movzx eax, byte ds:[0xfec00000]",
    ),
    (B32, "0f bf 0b", "movsx ecx, word ds:[ebx]"),
    (B32, "85 03", "test dword ds:[ebx], eax"),
    (B32, "f6 03 80", "test byte ds:[ebx], 0x80"),
    (B32, "f7 13", "not dword ds:[ebx]"),
    (B32, "f7 1b", "neg dword ds:[ebx]"),
    (B32, "fe 03", "inc byte ds:[ebx]"),
    (B32, "ff 0b", "dec dword ds:[ebx]"),
    (B32, "86 23", "xchg byte ds:[ebx], ah"),
    (B32, "64 8b 0d 10 00 00 00", "mov ecx, dword fs:[0x10]"),
    (B32, "67 8b 07", "mov eax, dword ds:[bx]"),
    (B32, "0f 30", "wrmsr"),
    (B32, "0f 32", "rdmsr"),
    (B32, "0f 31", "rdtsc"),
    (B32, "0f 01 f9", "rdtscp"),
    (B32, "0f 09", "wbinvd"),
    (B32, "0f 08", "invd"),
    (B32, "0f 01 c8", "monitor"),
    (B32, "0f 01 c9", "mwait"),
    (B32, "0f 01 d1", "xsetbv"),
    (B32, "f3 90", "pause"),
    (B32, "0f 01 38", "invlpg dword ds:[eax]"),
    (B32, "0f 1f 44 00 00", "nop dword ds:[eax+eax]"),
    // 64-bit mode (the selftests' guests, Linux guests' MMIO accessors).
    (B64, "48 8b 03", "mov rax, qword ds:[rbx]"),
    (B64, "89 07", "mov dword ds:[rdi], eax"),
    (B64, "44 89 07", "mov dword ds:[rdi], r8d"),
    (B64, "41 89 04 24", "mov dword ds:[r12], eax"),
    (B64, "42 8b 04 a5 00 00 00 00", "mov eax, dword ds:[r12*4]"),
    (B64, "8b 05 f0 0f 00 00", "mov eax, dword ds:[rip+0xff0]"),
    (B64, "67 8b 05 f0 ff ff ff", "mov eax, dword ds:[rip-0x10]"),
    (
        B64,
        "48 c7 00 ff ff ff ff",
        "mov qword ds:[rax], 0xffffffffffffffff",
    ),
    (
        B64,
        "48 b8 88 77 66 55 44 33 22 11",
        "mov rax, 0x1122334455667788",
    ),
    (
        B64,
        "48 a1 00 00 00 00 00 00 00 c0",
        "mov rax, qword ds:[0xc000000000000000]",
    ),
    (B64, "67 a1 00 00 e0 fe", "mov eax, dword ds:[0xfee00000]"),
    (B64, "40 88 37", "mov byte ds:[rdi], sil"),
    (B64, "88 37", "mov byte ds:[rdi], dh"),
    (
        B64,
        "65 48 8b 04 25 28 00 00 00",
        "mov rax, qword gs:[0x28]",
    ),
    (B64, "66 89 06", "mov word ds:[rsi], ax"),
    (B64, "66 48 89 06", "mov qword ds:[rsi], rax"),
    (B64, "48 63 03", "movsx rax, dword ds:[rbx]"),
    (B64, "4c 0f b7 03", "movzx r8, word ds:[rbx]"),
    (B64, "48 83 04 24 01", "add qword ss:[rsp], 0x1"),
    (B64, "48 01 45 f8", "add qword ss:[rbp-0x8], rax"),
    (B64, "49 29 d8", "sub r8, rbx"),
    (B64, "f3 48 ab", "rep stosq"),
    (B64, "f3 48 a5", "rep movsq"),
    (B64, "48 ad", "lodsq"),
    (B64, "f3 a6", "rep cmpsb"),
    (B64, "f2 66 af", "repne scasw"),
    (B32, "64 a7", "cmpsd fs"),
    (B64, "f3 66 6d", "rep insw"),
    (B64, "41 90", "xchg r8d, eax"),
    (B64, "90", "nop"),
    (B64, "0f a2", "cpuid"),
    (B64, "0f 01 d9", "vmmcall"),
    (B64, "0f 01 d0", "xgetbv"),
    (B64, "0f 33", "rdpmc"),
    (B64, "f4", "hlt"),
    // MOVBE and RDPID, emulated on #UD (as `gas` assembles them).
    (B64, "0f 38 f0 07", "movbe eax, dword ds:[rdi]"),
    (B64, "48 0f 38 f0 07", "movbe rax, qword ds:[rdi]"),
    (B64, "66 0f 38 f0 07", "movbe ax, word ds:[rdi]"),
    (B64, "0f 38 f1 1f", "movbe dword ds:[rdi], ebx"),
    (B64, "4c 0f 38 f1 44 24 08", "movbe qword ss:[rsp+0x8], r8"),
    (
        B64,
        "66 0f 38 f1 05 10 00 00 00",
        "movbe word ds:[rip+0x10], ax",
    ),
    (B32, "0f 38 f0 43 04", "movbe eax, dword ds:[ebx+0x4]"),
    (B16, "0f 38 f0 07", "movbe ax, word ds:[bx]"),
    (B16, "66 0f 38 f1 0e 00 80", "movbe dword ds:[0x8000], ecx"),
    (B64, "f3 0f c7 f8", "rdpid rax"),
    (B64, "f3 41 0f c7 f9", "rdpid r9"),
    (B64, "f3 48 0f c7 fb", "rdpid rbx"),
    (B32, "f3 0f c7 f9", "rdpid ecx"),
    (B16, "f3 0f c7 fa", "rdpid edx"),
    (B64, "0f 01 c1", "vmcall"),
];

#[test]
fn real_encodings_decode_to_the_listed_instruction() {
    let mut failures = vec![];
    for (mode, hex, want) in TABLE {
        let b = bytes(hex);
        match decode(&b, *mode) {
            Ok(insn) => {
                let got = render(&insn);
                if got != *want || usize::from(insn.len) != b.len() {
                    failures.push(format!(
                        "{mode:?} {hex}: got `{got}` len {}, want `{want}` len {}",
                        insn.len,
                        b.len()
                    ));
                }
            }
            Err(e) => failures.push(format!("{mode:?} {hex}: {e:?}, want `{want}`")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn trailing_bytes_do_not_change_the_length() {
    for (mode, hex, _) in TABLE {
        let mut b = bytes(hex);
        let n = b.len();
        b.extend_from_slice(&[0x90; 15]);
        assert_eq!(usize::from(decode(&b, *mode).unwrap().len), n, "{hex}");
    }
}

#[test]
fn every_proper_prefix_is_truncated() {
    for (mode, hex, _) in TABLE {
        let b = bytes(hex);
        for cut in 0..b.len() {
            assert_eq!(
                decode(&b[..cut], *mode),
                Err(DecodeError::Truncated),
                "{hex} cut at {cut}"
            );
        }
    }
}

#[test]
fn fifteen_bytes_is_the_limit() {
    // 14 prefixes + NOP = 15 bytes: legal.
    let mut b = vec![0x66; 14];
    b.push(0x90);
    assert_eq!(decode(&b, B32).unwrap().len, 15);
    // 15 prefixes + NOP: #GP on hardware, whatever follows.
    let mut b = vec![0x66; 15];
    b.push(0x90);
    assert_eq!(decode(&b, B32), Err(DecodeError::TooLong));
    assert_eq!(decode(&b[..15], B32), Err(DecodeError::TooLong));
    // A long immediate form pushed over the edge: 11 prefixes + c7 05 disp32 imm32 = 21.
    let mut b = vec![0x3e; 11];
    b.extend_from_slice(&bytes("c7 05 00 00 00 00 01 00 00 00"));
    assert_eq!(decode(&b, B32), Err(DecodeError::TooLong));
}

#[test]
fn lock_only_on_memory_read_modify_write() {
    for (mode, hex) in [
        (B64, "f0 89 03"),       // mov
        (B64, "f0 01 d8"),       // add reg, reg
        (B64, "f0 39 03"),       // cmp
        (B64, "f0 0f a3 03"),    // bt
        (B64, "f0 85 03"),       // test
        (B32, "f0 0f a2"),       // cpuid
        (B64, "f0 0f 38 f1 03"), // movbe
        (B64, "0f 38 f0 c3"),    // movbe's register form does not exist
        (B32, "66 0f 38 f1 d8"), // (nor with 66)
    ] {
        assert_eq!(
            decode(&bytes(hex), mode),
            Err(DecodeError::Invalid),
            "{hex}"
        );
    }
    assert!(decode(&bytes("f0 01 03"), B64).unwrap().lock);
    assert!(decode(&bytes("f0 87 03"), B64).unwrap().lock);
}

#[test]
fn unknown_instructions_are_refused_not_guessed() {
    for (mode, hex) in [
        (B64, "0f af 03"),       // imul
        (B64, "f7 23"),          // mul
        (B64, "ff d0"),          // call rax
        (B64, "c4 e2 79 18 03"), // vex
        (B64, "0f 10 03"),       // movups
        (B64, "f3 0f b8 c3"),    // popcnt
        (B64, "66 0f 01 d9"),    // 66-prefixed vmmcall
        (B64, "40"),             // a lone REX is not an instruction (it needs an opcode)
        (B64, "c6 f8 00"),       // xabort
        (B64, "63 03"),          // movsxd without REX.W
        (B32, "82 00 01"),       // the 82 alias of group 1
        (B32, "0f 01 f8"),       // swapgs (not in 32-bit)
        (B64, "0f 1f 48 00"),    // reserved-NOP 0f 1f /1
        (B64, "f2 0f 38 f0 c3"), // crc32
        (B64, "f3 0f 38 f0 03"), // no instruction (F3 0F 38 F0)
        (B64, "66 f3 0f c7 f8"), // REP and 66 together: upstream's decoder fails
        (B64, "0f c7 f8"),       // rdseed
        (B64, "f3 0f c7 f0"),    // F3 0F C7 /6: senduipi/vmxon-like, not RDPID
        (B64, "0f 38 00 c3"),    // pshufb
    ] {
        let r = decode(&bytes(hex), mode);
        assert!(
            matches!(
                r,
                Err(DecodeError::Unsupported) | Err(DecodeError::Truncated)
            ),
            "{hex}: {r:?}"
        );
    }
}
