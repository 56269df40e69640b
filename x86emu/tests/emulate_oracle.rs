// SPDX-License-Identifier: GPL-2.0-only
//! The emulator's memory accesses against iced-x86's instruction info: random instructions
//! with a memory operand run against guest memory that is all MMIO (except the code and the
//! page tables), so the first thing the emulator does with memory shows as an exit. It must be
//! a read of the right address and size if iced says the instruction reads that operand, and a
//! write of the right address and size if it only writes it; instructions iced says do not
//! touch memory must not be emulated as accesses.

use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, OpAccess, Register};
use x86::state::{CpuState, SegReg, Segment};
use x86emu::decode::{decode, CodeSize, Op, Operand};
use x86emu::emulate::{emulate, EmuEnv, Outcome};
use x86emu::walk::{WalkConfig, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA};
use x86emu::{Gpa, GuestPhys, NotRam};

/// RAM is [0, 2 MiB): code at 0x1000, page tables at 0x10_0000. Everything else is MMIO.
struct Env {
    ram: Vec<u8>,
}

const RAM: u64 = 2 << 20;

impl Env {
    fn ram(&self, gpa: Gpa, n: usize) -> Result<usize, NotRam> {
        if gpa.0.checked_add(n as u64).is_some_and(|e| e <= RAM) {
            Ok(gpa.0 as usize)
        } else {
            Err(NotRam)
        }
    }
}

impl GuestPhys for Env {
    fn read_u32(&mut self, gpa: Gpa) -> Result<u32, NotRam> {
        let i = self.ram(gpa, 4)?;
        Ok(u32::from_le_bytes(self.ram[i..i + 4].try_into().unwrap()))
    }
    fn read_u64(&mut self, gpa: Gpa) -> Result<u64, NotRam> {
        let i = self.ram(gpa, 8)?;
        Ok(u64::from_le_bytes(self.ram[i..i + 8].try_into().unwrap()))
    }
    fn cmpxchg_u32(&mut self, gpa: Gpa, _old: u32, new: u32) -> Result<bool, NotRam> {
        let i = self.ram(gpa, 4)?;
        self.ram[i..i + 4].copy_from_slice(&new.to_le_bytes());
        Ok(true)
    }
    fn cmpxchg_u64(&mut self, gpa: Gpa, _old: u64, new: u64) -> Result<bool, NotRam> {
        let i = self.ram(gpa, 8)?;
        self.ram[i..i + 8].copy_from_slice(&new.to_le_bytes());
        Ok(true)
    }
}

impl EmuEnv for Env {
    fn read_ram(&mut self, gpa: Gpa, buf: &mut [u8]) -> Result<(), NotRam> {
        let i = self.ram(gpa, buf.len())?;
        buf.copy_from_slice(&self.ram[i..i + buf.len()]);
        Ok(())
    }
    fn write_ram(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), NotRam> {
        let i = self.ram(gpa, data.len())?;
        self.ram[i..i + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn is_ram(&mut self, gpa: Gpa, _write: bool) -> bool {
        self.ram(gpa, 1).is_ok()
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

fn flat(type_: u8, l: bool, db: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_,
        present: true,
        dpl: 0,
        db,
        s: true,
        l,
        g: true,
        avl: false,
        unusable: false,
    }
}

/// 64-bit: every PML4 entry points at one PDPT of 1 GiB pages, so linear address `la` maps to
/// GPA `la mod 512 GiB`. 32-bit: paging off, flat segments.
fn setup(env: &mut Env, m: CodeSize) -> CpuState {
    let mut s = CpuState {
        rflags: 2,
        rip: 0x1000,
        cr0: CR0_PE,
        ..CpuState::default()
    };
    let long = m == CodeSize::Bits64;
    if long {
        let (pml4, pdpt) = (0x10_0000u64, 0x10_1000u64);
        for i in 0..512u64 {
            let e = (pdpt | 3).to_le_bytes();
            env.ram[(pml4 + i * 8) as usize..][..8].copy_from_slice(&e);
            let e = ((i << 30) | 0xe3).to_le_bytes(); // P W A D PS
            env.ram[(pdpt + i * 8) as usize..][..8].copy_from_slice(&e);
        }
        s.cr0 |= CR0_PG;
        s.cr4 = CR4_PAE;
        s.efer = EFER_LMA | (1 << 8);
        s.cr3 = pml4;
    }
    for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(r) = flat(3, false, true);
    }
    *s.seg_mut(SegReg::Cs) = flat(0xb, long, m == CodeSize::Bits32);
    s
}

#[test]
fn first_memory_access_matches_iced_access_kind_address_and_size() {
    let cfg = WalkConfig::default();
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    let mut env = Env {
        ram: vec![0; RAM as usize],
    };
    let mut compared = [0u32; 2];
    let mut factory = InstructionInfoFactory::new();
    for m in [CodeSize::Bits32, CodeSize::Bits64] {
        let base_state = setup(&mut env, m);
        for _ in 0..300_000 {
            let mut code = [0u8; 16];
            for b in code.iter_mut() {
                *b = rng.next() as u8;
            }
            let ops: &[u8] = &[
                0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x10, 0x11, 0x18, 0x19, 0x20, 0x21, 0x28, 0x29,
                0x30, 0x31, 0x38, 0x39, 0x3a, 0x3b, 0x80, 0x81, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
                0x89, 0x8a, 0x8b, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xaa, 0xab, 0xac, 0xad, 0xa6,
                0xa7, 0xae, 0xaf, 0xc6, 0xc7, 0xf6, 0xf7, 0xfe, 0xff, 0x0f,
            ];
            let mut i = 0;
            if rng.next().is_multiple_of(3) {
                code[0] = [0x66, 0x48, 0x41, 0x67, 0xf3][(rng.next() % 5) as usize];
                if m != CodeSize::Bits64 && (0x40..0x50).contains(&code[0]) {
                    code[0] = 0x66;
                }
                i = 1;
            }
            code[i] = ops[(rng.next() % ops.len() as u64) as usize];
            if code[i] == 0x0f {
                code[i + 1] = [0xb6, 0xb7, 0xbe, 0xbf, 0xa3, 0xab, 0xb3, 0xbb, 0xba]
                    [(rng.next() % 9) as usize];
            }
            let Ok(insn) = decode(&code, m) else { continue };
            let string = matches!(
                insn.op,
                Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas
            );
            if insn.mem_operand().is_none() && !string {
                continue;
            }
            // A register bit offset moves the address by the offset, which iced does not model.
            if matches!(insn.op, Op::Bit(_)) && matches!(insn.src, Operand::Reg(_)) {
                continue;
            }
            let mut s = base_state.clone();
            for g in s.gprs.iter_mut() {
                *g = rng.next();
            }
            if string && insn.rep.is_some() {
                s.gprs[1] |= 1; // RCX != 0
            }
            env.ram[0x1000..0x1010].copy_from_slice(&code);
            let outcome = emulate(&mut s.clone(), &mut env, &cfg, None);

            let mut d = Decoder::with_ip(
                if m == CodeSize::Bits64 { 64 } else { 32 },
                &code,
                0x1000,
                DecoderOptions::NONE,
            );
            let ins = d.decode();
            let info = factory.info(&ins);
            let regs = |r: Register, _: usize, _: usize| -> Option<u64> {
                if r.is_segment_register() {
                    return Some(0);
                }
                let full = r.full_register();
                let n = full as usize - Register::RAX as usize;
                let v = s.gprs[n];
                Some(match r.size() {
                    1 if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) => {
                        (s.gprs[n - 4] >> 8) & 0xff
                    }
                    1 => v & 0xff,
                    2 => v & 0xffff,
                    4 => v & 0xffff_ffff,
                    _ => v,
                })
            };
            let gpa_of = |la: u64| {
                if m == CodeSize::Bits64 {
                    la & ((1 << 39) - 1)
                } else {
                    la & 0xffff_ffff
                }
            };
            let reads: Vec<(u64, usize)> = info
                .used_memory()
                .iter()
                .filter(|u| {
                    matches!(
                        u.access(),
                        OpAccess::Read
                            | OpAccess::ReadWrite
                            | OpAccess::CondRead
                            | OpAccess::ReadCondWrite
                    )
                })
                .map(|u| {
                    (
                        gpa_of(u.virtual_address(0, regs).unwrap()),
                        u.memory_size().size(),
                    )
                })
                .collect();
            let writes: Vec<(u64, usize)> = info
                .used_memory()
                .iter()
                .filter(|u| matches!(u.access(), OpAccess::Write | OpAccess::CondWrite))
                .map(|u| {
                    (
                        gpa_of(u.virtual_address(0, regs).unwrap()),
                        u.memory_size().size(),
                    )
                })
                .collect();
            let ctx = || {
                format!("{m:?} {code:02x?} {insn:?} -> {outcome:?}; iced reads {reads:x?} writes {writes:x?}")
            };
            match outcome {
                // For REP string instructions iced gives the address with size 0 (the count is
                // dynamic).
                Outcome::MmioRead { gpa, len } => {
                    let ok = reads.contains(&(gpa.0, usize::from(len)))
                        || (insn.rep.is_some() && reads.contains(&(gpa.0, 0)));
                    assert!(ok, "{}", ctx());
                    compared[0] += 1;
                }
                Outcome::MmioWrite(w) => {
                    assert!(
                        reads.is_empty() || string,
                        "{}: wrote without reading first",
                        ctx()
                    );
                    let rmw = info
                        .used_memory()
                        .iter()
                        .any(|u| u.access() == OpAccess::ReadWrite);
                    assert!(!rmw, "{}", ctx());
                    let ok = writes.contains(&(w.gpa.0, usize::from(w.len)))
                        || (insn.rep.is_some() && writes.contains(&(w.gpa.0, 0)));
                    assert!(ok, "{}", ctx());
                    compared[1] += 1;
                }
                // Faults (non-canonical, limits), page-crossing MMIO, RAM hits: not compared.
                _ => {}
            }
        }
    }
    eprintln!("reads/writes compared: {compared:?}");
    assert!(compared.iter().all(|&c| c > 10_000), "{compared:?}");
}
