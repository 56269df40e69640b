// SPDX-License-Identifier: GPL-2.0-only
//! The emulator's flag formulas against the host CPU: every ALU operation in every operand size
//! runs natively (inline asm, with the same incoming flags) on random and edge-case operands,
//! and result and arithmetic flags must be identical. Flags the SDM leaves undefined are
//! compared too where the host is consistent about them (AF after logical operations is 0);
//! for the bit tests only CF is defined.
#![cfg(target_arch = "x86_64")]

use core::arch::asm;
use x86emu::decode::AluOp;
use x86emu::flags::{self, ARITH, CF};

/// Runs `$insn` on `d` (destination register) and `s` with RFLAGS = `f` and returns (d, RFLAGS).
macro_rules! native {
    ($insn:expr, $d:expr, $s:expr, $f:expr) => {{
        let mut d: u64 = $d;
        let s: u64 = $s;
        let mut f: u64 = $f;
        // SAFETY: the asm only changes the listed registers and RFLAGS' arithmetic bits (the
        // pushed value has only those, bit 1 and IF-preserving bits clear in user mode), and
        // balances its own push/pop; no memory is touched besides that stack slot.
        unsafe {
            asm!(
                "push {f}",
                "popfq",
                $insn,
                "pushfq",
                "pop {f}",
                d = inout(reg) d,
                s = in(reg) s,
                f = inout(reg) f,
            )
        };
        (d, f)
    }};
}

/// Runs the ALU `op` natively on `size` bytes.
fn native_alu(op: AluOp, size: u8, d: u64, s: u64, f: u64) -> (u64, u64) {
    macro_rules! sized {
        ($m:literal) => {
            match size {
                1 => native!(concat!($m, " {d:l}, {s:l}"), d, s, f),
                2 => native!(concat!($m, " {d:x}, {s:x}"), d, s, f),
                4 => native!(concat!($m, " {d:e}, {s:e}"), d, s, f),
                _ => native!(concat!($m, " {d}, {s}"), d, s, f),
            }
        };
    }
    match op {
        AluOp::Add => sized!("add"),
        AluOp::Or => sized!("or"),
        AluOp::Adc => sized!("adc"),
        AluOp::Sbb => sized!("sbb"),
        AluOp::And => sized!("and"),
        AluOp::Sub => sized!("sub"),
        AluOp::Xor => sized!("xor"),
        AluOp::Cmp => sized!("cmp"),
    }
}

fn native_unary(which: &str, size: u8, d: u64, f: u64) -> (u64, u64) {
    macro_rules! sized {
        ($m:literal) => {
            match size {
                1 => native!(concat!($m, " {d:l}\n# unused: {s}"), d, 0, f),
                2 => native!(concat!($m, " {d:x}\n# unused: {s}"), d, 0, f),
                4 => native!(concat!($m, " {d:e}\n# unused: {s}"), d, 0, f),
                _ => native!(concat!($m, " {d}\n# unused: {s}"), d, 0, f),
            }
        };
    }
    match which {
        "inc" => sized!("inc"),
        "dec" => sized!("dec"),
        "neg" => sized!("neg"),
        _ => sized!("not"),
    }
}

fn native_test(size: u8, d: u64, s: u64, f: u64) -> u64 {
    match size {
        1 => native!("test {d:l}, {s:l}", d, s, f).1,
        2 => native!("test {d:x}, {s:x}", d, s, f).1,
        4 => native!("test {d:e}, {s:e}", d, s, f).1,
        _ => native!("test {d}, {s}", d, s, f).1,
    }
}

fn native_bt(size: u8, d: u64, bit: u64, f: u64) -> u64 {
    match size {
        2 => native!("bt {d:x}, {s:x}", d, bit, f).1,
        4 => native!("bt {d:e}, {s:e}", d, bit, f).1,
        _ => native!("bt {d}, {s}", d, bit, f).1,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mask(size: u8) -> u64 {
    if size == 8 {
        u64::MAX
    } else {
        (1 << (8 * size)) - 1
    }
}

/// Operands: random, and the edges where carries and overflows happen.
fn operands(rng: &mut Rng, size: u8) -> impl Iterator<Item = (u64, u64)> + '_ {
    let m = mask(size);
    let sign = 1u64 << (8 * size - 1);
    let edges = [0, 1, m, m - 1, sign, sign - 1, sign + 1, 0xf, 0x10, 0x8];
    let pairs: Vec<(u64, u64)> = edges
        .iter()
        .flat_map(|&a| edges.iter().map(move |&b| (a, b)))
        .collect();
    pairs
        .into_iter()
        .chain((0..20_000).map(move |_| (rng.next() & m, rng.next() & m)))
}

const ALL_OPS: [AluOp; 8] = [
    AluOp::Add,
    AluOp::Or,
    AluOp::Adc,
    AluOp::Sbb,
    AluOp::And,
    AluOp::Sub,
    AluOp::Xor,
    AluOp::Cmp,
];

/// Incoming flags: bit 1 is always set; the arithmetic bits vary.
fn flags_in(rng: &mut Rng) -> u64 {
    0x2 | (rng.next() & ARITH)
}

#[test]
fn alu_results_and_flags_match_the_host_cpu() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut frng = Rng(0xdead_beef_0000_0001);
    for size in [1u8, 2, 4, 8] {
        for op in ALL_OPS {
            for (d, s) in operands(&mut rng, size) {
                let fin = flags_in(&mut frng);
                let (nr, nf) = native_alu(op, size, d, s, fin);
                let (r, f) = flags::alu(op, size, d, s, fin);
                assert_eq!(r, nr & mask(size), "{op:?}/{size} {d:#x},{s:#x} result");
                assert_eq!(
                    f & ARITH,
                    nf & ARITH,
                    "{op:?}/{size} {d:#x},{s:#x} flags in {fin:#x}"
                );
            }
        }
    }
}

#[test]
fn unary_ops_and_test_match_the_host_cpu() {
    let mut rng = Rng(0x4242_4242_0000_0003);
    let mut frng = Rng(0x9999_0000_1111_2222);
    for size in [1u8, 2, 4, 8] {
        for (d, s) in operands(&mut rng, size) {
            let fin = flags_in(&mut frng);
            for which in ["inc", "dec", "neg", "not"] {
                let (nr, nf) = native_unary(which, size, d, fin);
                let (r, f) = match which {
                    "inc" => flags::inc(size, d, fin),
                    "dec" => flags::dec(size, d, fin),
                    "neg" => flags::neg(size, d, fin),
                    _ => (!d & mask(size), fin),
                };
                assert_eq!(r, nr & mask(size), "{which}/{size} {d:#x} result");
                assert_eq!(
                    f & ARITH,
                    nf & ARITH,
                    "{which}/{size} {d:#x} flags in {fin:#x}"
                );
            }
            let nf = native_test(size, d, s, fin);
            assert_eq!(
                flags::test(size, d, s, fin) & ARITH,
                nf & ARITH,
                "test/{size} {d:#x},{s:#x}"
            );
        }
    }
}

#[test]
fn bit_test_carry_matches_the_host_cpu() {
    let mut rng = Rng(0x7777_0000_aaaa_5555);
    for size in [2u8, 4, 8] {
        for _ in 0..20_000 {
            let d = rng.next() & mask(size);
            let bit = rng.next() % (8 * u64::from(size));
            let fin = 0x2 | (rng.next() & ARITH);
            let nf = native_bt(size, d, bit, fin);
            assert_eq!(
                flags::bit_test(d, bit as u32, fin) & CF,
                nf & CF,
                "bt/{size} {d:#x},{bit}"
            );
        }
    }
}
