// SPDX-License-Identifier: GPL-2.0-only
//! The decoder against iced-x86 (std) as an oracle: over many random and biased byte strings in
//! every code size, whenever our decoder returns `Ok`, iced must decode a valid instruction of
//! the same length, the same mnemonic and the same operands (registers, memory base/index/
//! scale/displacement/segment, immediates). Our `Err(Unsupported)` is always allowed (we decode
//! a subset); `Err(Invalid)` must be invalid for iced too.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use x86::state::SegReg;
use x86emu::decode::{decode, AluOp, BitOp, CodeSize, DecodeError, Insn, Mem, Op, Operand};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn bitness(m: CodeSize) -> u32 {
    match m {
        CodeSize::Bits16 => 16,
        CodeSize::Bits32 => 32,
        CodeSize::Bits64 => 64,
    }
}

fn iced(bytes: &[u8], m: CodeSize) -> Instruction {
    let mut d = Decoder::with_ip(bitness(m), bytes, 0, DecoderOptions::NONE);
    d.decode()
}

fn mnemonics(op: Op) -> &'static [Mnemonic] {
    use Mnemonic as M;
    match op {
        Op::Cpuid => &[M::Cpuid],
        Op::Hlt => &[M::Hlt],
        Op::Int3 => &[M::Int3],
        Op::MovFromDr | Op::MovToDr => &[M::Mov],
        Op::Rdmsr => &[M::Rdmsr],
        Op::Wrmsr => &[M::Wrmsr],
        Op::Vmmcall => &[M::Vmmcall],
        Op::Vmcall => &[M::Vmcall],
        Op::Xsetbv => &[M::Xsetbv],
        Op::Xgetbv => &[M::Xgetbv],
        Op::Rdtsc => &[M::Rdtsc],
        Op::Rdtscp => &[M::Rdtscp],
        Op::Rdpmc => &[M::Rdpmc],
        Op::Invd => &[M::Invd],
        Op::Wbinvd => &[M::Wbinvd],
        Op::Monitor => &[M::Monitor],
        Op::Mwait => &[M::Mwait],
        Op::Invlpg => &[M::Invlpg],
        Op::Pause => &[M::Pause],
        Op::Nop => &[M::Nop],
        Op::In => &[M::In],
        Op::Out => &[M::Out],
        Op::Ins => &[M::Insb, M::Insw, M::Insd],
        Op::Outs => &[M::Outsb, M::Outsw, M::Outsd],
        Op::Mov => &[M::Mov],
        Op::Movzx => &[M::Movzx],
        Op::Movsx => &[M::Movsx, M::Movsxd],
        Op::Movs => &[M::Movsb, M::Movsw, M::Movsd, M::Movsq],
        Op::Stos => &[M::Stosb, M::Stosw, M::Stosd, M::Stosq],
        Op::Lods => &[M::Lodsb, M::Lodsw, M::Lodsd, M::Lodsq],
        Op::Cmps => &[M::Cmpsb, M::Cmpsw, M::Cmpsd, M::Cmpsq],
        Op::Scas => &[M::Scasb, M::Scasw, M::Scasd, M::Scasq],
        Op::Alu(AluOp::Add) => &[M::Add],
        Op::Alu(AluOp::Or) => &[M::Or],
        Op::Alu(AluOp::Adc) => &[M::Adc],
        Op::Alu(AluOp::Sbb) => &[M::Sbb],
        Op::Alu(AluOp::And) => &[M::And],
        Op::Alu(AluOp::Sub) => &[M::Sub],
        Op::Alu(AluOp::Xor) => &[M::Xor],
        Op::Alu(AluOp::Cmp) => &[M::Cmp],
        Op::Test => &[M::Test],
        Op::Xchg => &[M::Xchg],
        Op::Bit(BitOp::Bt) => &[M::Bt],
        Op::Bit(BitOp::Bts) => &[M::Bts],
        Op::Bit(BitOp::Btr) => &[M::Btr],
        Op::Bit(BitOp::Btc) => &[M::Btc],
        Op::Not => &[M::Not],
        Op::Neg => &[M::Neg],
        Op::Inc => &[M::Inc],
        Op::Dec => &[M::Dec],
        Op::MovToCr(_) | Op::MovFromCr(_) => &[M::Mov],
        Op::Movbe => &[M::Movbe],
        Op::Rdpid => &[M::Rdpid],
    }
}

fn gpr_index(r: Register) -> Option<(u8, bool, u8)> {
    if !r.is_gpr() {
        return None;
    }
    let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    let full = r.full_register();
    let n = (full as usize - Register::RAX as usize) as u8;
    Some((n, high, r.size() as u8))
}

fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::DS => SegReg::Ds,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        other => panic!("segment {other:?}"),
    }
}

type Ctx<'a> = &'a dyn Fn() -> String;

fn check_mem(ours: &Mem, ins: &Instruction, m: CodeSize, insn: &Insn, ctx: Ctx<'_>) {
    if ours.rip_relative {
        assert!(ins.is_ip_rel_memory_operand(), "{}: rip-relative", ctx());
        let mut target = i64::from(insn.len).wrapping_add(ours.disp) as u64;
        if ins.memory_base() == Register::EIP {
            target &= 0xffff_ffff;
        }
        assert_eq!(ins.memory_displacement64(), target, "{}: rip target", ctx());
        return;
    }
    match ours.base {
        Some(b) => {
            let (n, _, _) = gpr_index(ins.memory_base()).expect("iced base");
            assert_eq!(n, b as u8, "{}: base", ctx());
        }
        None => assert_eq!(ins.memory_base(), Register::None, "{}: no base", ctx()),
    }
    match ours.index {
        Some(i) => {
            let (n, _, _) = gpr_index(ins.memory_index()).expect("iced index");
            assert_eq!(n, i as u8, "{}: index", ctx());
            assert_eq!(
                ins.memory_index_scale(),
                u32::from(ours.scale),
                "{}: scale",
                ctx()
            );
        }
        None => assert_eq!(ins.memory_index(), Register::None, "{}: no index", ctx()),
    }
    let mask = match insn.addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    assert_eq!(
        ins.memory_displacement64() & mask,
        (ours.disp as u64) & mask,
        "{}: displacement",
        ctx()
    );
    if m != CodeSize::Bits64 || matches!(ours.seg, SegReg::Fs | SegReg::Gs) {
        assert_eq!(seg_of(ins.memory_segment()), ours.seg, "{}: segment", ctx());
    }
}

fn check_operand(o: &Operand, idx: u32, ins: &Instruction, insn: &Insn, m: CodeSize, ctx: Ctx<'_>) {
    match o {
        Operand::None => {}
        Operand::Reg(r) => {
            assert_eq!(
                ins.op_kind(idx),
                OpKind::Register,
                "{}: op{idx} kind",
                ctx()
            );
            let (n, high, _) = gpr_index(ins.op_register(idx)).expect("gpr");
            assert_eq!(
                (n, high),
                (r.gpr as u8, r.high_byte),
                "{}: op{idx} register",
                ctx()
            );
        }
        Operand::Mem(mem) => {
            assert_eq!(ins.op_kind(idx), OpKind::Memory, "{}: op{idx} kind", ctx());
            check_mem(mem, ins, m, insn, ctx);
        }
        Operand::Imm(n) if matches!(insn.op, Op::MovFromDr | Op::MovToDr) => {
            // The debug register's number.
            assert_eq!(
                ins.op_register(idx) as usize,
                Register::DR0 as usize + *n as usize,
                "{}: op{idx} debug register",
                ctx()
            );
        }
        Operand::Imm(v) => {
            let size = if matches!(insn.op, Op::In | Op::Out | Op::Bit(_)) {
                1
            } else {
                insn.op_size
            };
            let mask = if size >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * size)) - 1
            };
            assert_eq!(
                ins.immediate(idx) & mask,
                *v & mask,
                "{}: op{idx} immediate",
                ctx()
            );
        }
    }
}

/// Compares one decode with iced; returns whether ours was `Ok`.
fn compare(bytes: &[u8], m: CodeSize) -> bool {
    let ours = decode(bytes, m);
    let ins = iced(bytes, m);
    let ctx = || {
        format!(
            "{m:?} {bytes:02x?} -> {ours:?} / iced {:?} len {}",
            ins.code(),
            ins.len()
        )
    };
    match ours {
        Ok(insn) => {
            assert!(!ins.is_invalid(), "{}: iced says invalid", ctx());
            assert_eq!(usize::from(insn.len), ins.len(), "{}: length", ctx());
            assert!(
                mnemonics(insn.op).contains(&ins.mnemonic()),
                "{}: mnemonic",
                ctx()
            );
            let implicit = matches!(
                insn.op,
                Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas | Op::Ins | Op::Outs
            );
            if !implicit && ins.op_count() >= 1 && insn.dst != Operand::None {
                check_operand(&insn.dst, 0, &ins, &insn, m, &ctx);
                if ins.op_count() >= 2 {
                    check_operand(&insn.src, 1, &ins, &insn, m, &ctx);
                }
            }
            if insn.lock {
                assert!(ins.has_lock_prefix(), "{}: lock", ctx());
            }
            if implicit {
                let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
                assert_eq!(insn.rep.is_some(), rep, "{}: rep", ctx());
            }
            true
        }
        Err(DecodeError::Invalid) | Err(DecodeError::TooLong) => {
            assert!(ins.is_invalid(), "{}: we refuse it, iced decodes it", ctx());
            false
        }
        Err(DecodeError::Truncated) => panic!("{}: truncated with 16 bytes", ctx()),
        Err(DecodeError::Unsupported) => false,
    }
}

const MODES: [CodeSize; 3] = [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64];
const PREFIXES: [u8; 11] = [
    0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65,
];
const OPCODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x10, 0x11, 0x12, 0x13,
    0x14, 0x15, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x28, 0x29,
    0x2a, 0x2b, 0x2c, 0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
    0x40, 0x47, 0x48, 0x4f, 0x63, 0x6c, 0x6d, 0x6e, 0x6f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8e, 0x90, 0x91, 0x97, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xb0, 0xb4, 0xb7, 0xb8, 0xbc, 0xbf, 0xc4, 0xc5,
    0xc6, 0xc7, 0xe4, 0xe5, 0xe6, 0xe7, 0xec, 0xed, 0xee, 0xef, 0xf4, 0xf6, 0xf7, 0xfe, 0xff, 0x0f,
    0x0f, 0x0f, 0x0f, 0x0f, 0x0f,
];
const OPCODES_0F: &[u8] = &[
    0x01, 0x01, 0x01, 0x08, 0x09, 0x0b, 0x18, 0x1e, 0x1f, 0x30, 0x31, 0x32, 0x33, 0xa2, 0xa3, 0xab,
    0xb3, 0xbb, 0xb6, 0xb7, 0xb8, 0xba, 0xbc, 0xbd, 0xbe, 0xbf, 0x38, 0x38, 0xc7, 0xc7,
];
const MODRM_0F01: &[u8] = &[
    0xc1, 0xc8, 0xc9, 0xd0, 0xd1, 0xd8, 0xd9, 0xf8, 0xf9, 0x38, 0x3d, 0x78, 0xbf,
];

/// A byte string biased towards the encodings we decode.
fn biased(rng: &mut Rng, m: CodeSize) -> [u8; 16] {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = rng.next() as u8;
    }
    let mut i = 0;
    let npfx = [0, 0, 0, 1, 1, 2, 3, 14][rng.below(8) as usize];
    for _ in 0..npfx {
        b[i] = PREFIXES[rng.below(PREFIXES.len() as u64) as usize];
        i += 1;
    }
    if m == CodeSize::Bits64 && rng.below(2) == 0 && i < 15 {
        b[i] = 0x40 | rng.below(16) as u8;
        i += 1;
    }
    if i >= 15 {
        return b;
    }
    if rng.below(10) != 0 {
        b[i] = OPCODES[rng.below(OPCODES.len() as u64) as usize];
    }
    if b[i] == 0x0f && i + 1 < 16 {
        i += 1;
        if rng.below(8) != 0 {
            b[i] = OPCODES_0F[rng.below(OPCODES_0F.len() as u64) as usize];
        }
        if b[i] == 0x01 && i + 1 < 16 && rng.below(4) != 0 {
            b[i + 1] = MODRM_0F01[rng.below(MODRM_0F01.len() as u64) as usize];
        }
        // MOVBE (0F 38 F0/F1) and RDPID's register form of 0F C7 /7.
        if b[i] == 0x38 && i + 1 < 16 && rng.below(4) != 0 {
            b[i + 1] = 0xf0 | rng.below(2) as u8;
        }
        if b[i] == 0xc7 && i + 1 < 16 && rng.below(2) != 0 {
            b[i + 1] = 0xf8 | rng.below(8) as u8;
        }
    }
    b
}

#[test]
fn random_biased_bytes_agree_with_iced() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for m in MODES {
        let mut ok = 0;
        for _ in 0..300_000 {
            let b = biased(&mut rng, m);
            ok += compare(&b, m) as u32;
        }
        // The generator must actually exercise the decoder, or the test proves nothing.
        assert!(ok > 100_000, "{m:?}: only {ok} decoded");
        eprintln!("{m:?}: {ok} of 300000 decoded and matched iced");
    }
}

#[test]
fn random_uniform_bytes_agree_with_iced() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for m in MODES {
        let mut ok = 0;
        for _ in 0..300_000 {
            let mut b = [0u8; 16];
            for x in b.iter_mut() {
                *x = rng.next() as u8;
            }
            ok += compare(&b, m) as u32;
        }
        assert!(ok > 1_000, "{m:?}: only {ok} decoded");
    }
}

/// Every single-byte-opcode and 0F-opcode with every ModRM byte, no prefix and with 66/67/REX.
#[test]
fn exhaustive_opcode_modrm_agree_with_iced() {
    let mut rng = Rng(0xfeed_0000_0000_0007);
    for m in MODES {
        for pfx in [
            None,
            Some(0x66),
            Some(0x67),
            Some(0x48),
            Some(0x45),
            Some(0xf0),
        ] {
            for op in 0..=0xffu16 {
                for modrm in 0..=0xffu16 {
                    for two in [false, true] {
                        let mut b = [0u8; 16];
                        for x in b.iter_mut() {
                            *x = rng.next() as u8;
                        }
                        let mut i = 0;
                        if let Some(p) = pfx {
                            b[0] = p;
                            i = 1;
                        }
                        if two {
                            b[i] = 0x0f;
                            i += 1;
                        }
                        b[i] = op as u8;
                        b[i + 1] = modrm as u8;
                        compare(&b, m);
                    }
                }
            }
        }
    }
}

/// Effective and linear addresses against iced's `virtual_address` for random register values,
/// segment bases and RIPs: base/index/scale/displacement arithmetic, the wrap at the address
/// size, RIP-relative addressing and the default segments.
#[test]
fn effective_addresses_agree_with_iced() {
    use x86::state::CpuState;
    use x86emu::emulate::effective_address;
    let mut rng = Rng(0xaddd_4e55_0000_0042);
    let mut checked = 0;
    for m in MODES {
        for _ in 0..200_000 {
            let b = biased(&mut rng, m);
            let Ok(insn) = decode(&b, m) else { continue };
            let Some(mem) = insn.mem_operand().copied() else {
                continue;
            };
            let mut state = CpuState::default();
            for g in state.gprs.iter_mut() {
                let v = rng.next();
                *g = if v & 1 == 0 { v } else { v & 0xffff };
            }
            let long = m == CodeSize::Bits64;
            let mut bases = [0u64; 6];
            for (i, base) in bases.iter_mut().enumerate() {
                let v = rng.next();
                *base = if long && i < 4 {
                    0
                } else if long {
                    v
                } else {
                    v & 0xffff_ffff
                };
            }
            let rip = if long {
                rng.next()
            } else {
                rng.next() & 0xffff_ffff
            };
            let next_rip = rip.wrapping_add(u64::from(insn.len));
            let ea = effective_address(&state, &insn, next_rip, &mem);
            let mut ours = bases[mem.seg as usize].wrapping_add(ea);
            if !long {
                ours &= 0xffff_ffff;
            }

            let mut d = Decoder::with_ip(bitness(m), &b, rip, DecoderOptions::NONE);
            let ins = d.decode();
            let idx = (0..ins.op_count())
                .find(|&i| ins.op_kind(i) == OpKind::Memory)
                .expect("iced memory operand");
            let theirs = ins
                .virtual_address(idx, 0, |r, _, _| {
                    Some(match r {
                        Register::ES => bases[0],
                        Register::CS => bases[1],
                        Register::SS => bases[2],
                        Register::DS => bases[3],
                        Register::FS => bases[4],
                        Register::GS => bases[5],
                        r => {
                            let (n, _, size) = gpr_index(r)?;
                            let v = state.gprs[usize::from(n)];
                            if size >= 8 {
                                v
                            } else {
                                v & ((1u64 << (8 * u32::from(size))) - 1)
                            }
                        }
                    })
                })
                .expect("iced address");
            let theirs = if long { theirs } else { theirs & 0xffff_ffff };
            assert_eq!(ours, theirs, "{m:?} {b:02x?} {insn:?} rip {rip:#x}");
            checked += 1;
        }
    }
    assert!(checked > 100_000, "only {checked} addresses compared");
    eprintln!("{checked} effective addresses matched iced");
}

/// MOVBE (0F 38 F0/F1) and F3 0F C7 (RDPID's register form) under every ModRM and the
/// prefixes that select or void them (66, F2, F3, both, REX.W, LOCK), in every code size.
#[test]
fn movbe_rdpid_every_modrm_agree_with_iced() {
    let mut rng = Rng(0xfeed_0000_0000_0038);
    let prefix_sets: [&[u8]; 10] = [
        &[],
        &[0x66],
        &[0xf2],
        &[0xf3],
        &[0x66, 0xf3],
        &[0xf3, 0x66],
        &[0x48],
        &[0x66, 0x48],
        &[0xf0],
        &[0xf3, 0x41],
    ];
    let mut decoded = 0;
    for m in MODES {
        for pfx in prefix_sets {
            // REX only in 64-bit mode (elsewhere 0x4x is INC/DEC).
            if m != CodeSize::Bits64 && pfx.iter().any(|b| b & 0xf0 == 0x40) {
                continue;
            }
            for op in [&[0x38u8, 0xf0][..], &[0x38, 0xf1], &[0xc7]] {
                for modrm in 0..=0xffu8 {
                    let mut b = [0u8; 16];
                    for x in b.iter_mut() {
                        *x = rng.next() as u8;
                    }
                    b[..pfx.len()].copy_from_slice(pfx);
                    let mut i = pfx.len();
                    b[i] = 0x0f;
                    i += 1;
                    b[i..i + op.len()].copy_from_slice(op);
                    i += op.len();
                    b[i] = modrm;
                    decoded += compare(&b, m) as u32;
                }
            }
        }
    }
    // MOVBE's memory forms (192 ModRMs x 2 opcodes x 4 prefix sets x 3 modes, less the
    // REX ones outside 64-bit mode) and RDPID's 8 register forms (x 2 F3 sets).
    assert!(decoded > 3000, "{decoded}");
}
