// SPDX-License-Identifier: GPL-2.0-only
//! The MMIO emulator and the skip helper on whole scenarios: real-mode and long-mode guests
//! with RAM, MMIO holes and page tables, checking the restartable MMIO-read protocol, MMIO
//! writes, REP string elements, segmentation and canonical faults, #PF from the walk, fetches
//! that cross pages, and refusals.

use x86::state::{CpuState, Gpr, SegReg, Segment};
use x86emu::decode::Op;
use x86emu::emulate::{
    emulate, read_guest, skip, write_guest, EmuEnv, Failure, GuestAccessError, MmioData, Outcome,
};
use x86emu::linear::{Exception, GP_VECTOR, PF_VECTOR, SS_VECTOR, UD_VECTOR};
use x86emu::walk::{pfec, WalkConfig, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_NXE};
use x86emu::{Gpa, GuestPhys, NotRam};

const RAM_SIZE: u64 = 16 << 20;
/// Not RAM: the legacy VGA hole and everything from 0xd000_0000 (the "device" range).
fn is_mmio(gpa: u64) -> bool {
    (0xa_0000..0xc_0000).contains(&gpa) || gpa >= RAM_SIZE
}

struct Env {
    ram: Vec<u8>,
    /// A read-only range (like a read-only memslot): writes are MMIO.
    rom: Option<(u64, u64)>,
}

impl Env {
    fn new() -> Env {
        Env {
            ram: vec![0; RAM_SIZE as usize],
            rom: None,
        }
    }
    fn put(&mut self, gpa: u64, bytes: &[u8]) {
        self.ram[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn get(&self, gpa: u64, n: usize) -> &[u8] {
        &self.ram[gpa as usize..gpa as usize + n]
    }
    fn set64(&mut self, gpa: u64, v: u64) {
        self.put(gpa, &v.to_le_bytes());
    }
    fn ok(&self, gpa: Gpa, n: usize, write: bool) -> Result<usize, NotRam> {
        let end = gpa.0 + n as u64;
        if is_mmio(gpa.0) || is_mmio(end - 1) || end > RAM_SIZE {
            return Err(NotRam);
        }
        if write {
            if let Some((s, e)) = self.rom {
                if gpa.0 < e && end > s {
                    return Err(NotRam);
                }
            }
        }
        Ok(gpa.0 as usize)
    }
}

impl GuestPhys for Env {
    fn read_u32(&mut self, gpa: Gpa) -> Result<u32, NotRam> {
        let i = self.ok(gpa, 4, false)?;
        Ok(u32::from_le_bytes(self.ram[i..i + 4].try_into().unwrap()))
    }
    fn read_u64(&mut self, gpa: Gpa) -> Result<u64, NotRam> {
        let i = self.ok(gpa, 8, false)?;
        Ok(u64::from_le_bytes(self.ram[i..i + 8].try_into().unwrap()))
    }
    fn cmpxchg_u32(&mut self, gpa: Gpa, old: u32, new: u32) -> Result<bool, NotRam> {
        let cur = self.read_u32(gpa)?;
        if cur == old {
            self.put(gpa.0, &new.to_le_bytes());
        }
        Ok(cur == old)
    }
    fn cmpxchg_u64(&mut self, gpa: Gpa, old: u64, new: u64) -> Result<bool, NotRam> {
        let cur = self.read_u64(gpa)?;
        if cur == old {
            self.put(gpa.0, &new.to_le_bytes());
        }
        Ok(cur == old)
    }
}

impl EmuEnv for Env {
    fn read_ram(&mut self, gpa: Gpa, buf: &mut [u8]) -> Result<(), NotRam> {
        let i = self.ok(gpa, buf.len(), false)?;
        buf.copy_from_slice(&self.ram[i..i + buf.len()]);
        Ok(())
    }
    fn write_ram(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), NotRam> {
        let i = self.ok(gpa, data.len(), true)?;
        self.ram[i..i + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn is_ram(&mut self, gpa: Gpa, write: bool) -> bool {
        self.ok(gpa, 1, write).is_ok()
    }
}

const CFG: WalkConfig = WalkConfig {
    maxphyaddr: 40,
    pse36: true,
    gbpages: true,
};

fn seg(base: u64, limit: u32, type_: u8, db: bool, l: bool) -> Segment {
    Segment {
        base,
        limit,
        selector: (base >> 4) as u16,
        type_,
        present: true,
        dpl: 0,
        db,
        s: true,
        l,
        g: false,
        avl: false,
        unusable: false,
    }
}

/// A real-mode vCPU (as kvm-ioctls' tests set one up) with code at 0x1000.
fn real_mode() -> CpuState {
    let mut s = CpuState {
        rflags: 2,
        rip: 0x1000,
        ..CpuState::default()
    };
    for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(r) = seg(0, 0xffff, 3, false, false);
    }
    *s.seg_mut(SegReg::Cs) = seg(0, 0xffff, 0xb, false, false);
    s
}

/// Page tables at 0x10_0000 identity-mapping 0..4 GiB: the first 2 MiB with 4 KiB pages (page
/// 0x5000 not present), the rest of the first GiB with 2 MiB pages, then 1 GiB pages.
fn identity_tables(env: &mut Env) -> u64 {
    let (pml4, pdpt, pd, pt) = (0x10_0000u64, 0x10_1000u64, 0x10_2000u64, 0x10_3000u64);
    env.set64(pml4, pdpt | 7);
    env.set64(pdpt, pd | 7);
    for i in 1..4 {
        env.set64(pdpt + i * 8, (i << 30) | 0x87);
    }
    env.set64(pd, pt | 7);
    for i in 1..512 {
        env.set64(pd + i * 8, (i << 21) | 0x87);
    }
    for i in 0..512 {
        if i != 5 {
            env.set64(pt + i * 8, (i << 12) | 7);
        }
    }
    pml4
}

/// A 64-bit vCPU on identity page tables, code at 0x4000.
fn long_mode(env: &mut Env) -> CpuState {
    let mut s = CpuState {
        rflags: 2,
        rip: 0x4000,
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr4: CR4_PAE,
        efer: EFER_LMA | EFER_NXE | (1 << 8),
        cr3: identity_tables(env),
        ..CpuState::default()
    };
    for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(r) = seg(0, 0xffff_ffff, 3, true, false);
    }
    *s.seg_mut(SegReg::Cs) = seg(0, 0xffff_ffff, 0xb, false, true);
    s
}

fn data(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn read_done(state: &mut CpuState, env: &mut Env, gpa: u64, len: u8, v: u64) -> Outcome {
    let before = state.clone();
    let o = emulate(state, env, &CFG, None);
    assert_eq!(o, Outcome::MmioRead { gpa: Gpa(gpa), len });
    assert_eq!(
        *state, before,
        "an MMIO read changes nothing until its data is there"
    );
    let m = MmioData {
        gpa: Gpa(gpa),
        len,
        data: data(v),
    };
    emulate(state, env, &CFG, Some(&m))
}

#[test]
fn real_mode_mov_to_mmio_is_a_write_exit() {
    let mut env = Env::new();
    let mut s = real_mode();
    *s.seg_mut(SegReg::Ds) = seg(0xa_0000, 0xffff, 3, false, false);
    s.set_gpr(Gpr::Rax, 0x1234_5678_9abc_de5a);
    env.put(0x1000, &[0x88, 0x06, 0x10, 0x00]); // mov [0x10], al
    let o = emulate(&mut s, &mut env, &CFG, None);
    assert_eq!(
        o,
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xa_0010),
            len: 1,
            data: data(0x5a),
        })
        .masked()
    );
    assert_eq!(s.rip, 0x1004);
}

trait Masked {
    fn masked(self) -> Self;
}

impl Masked for Outcome {
    /// MMIO write data beyond `len` is unspecified; compare only what counts.
    fn masked(self) -> Outcome {
        match self {
            Outcome::MmioWrite(mut m) => {
                for b in &mut m.data[usize::from(m.len)..] {
                    *b = 0;
                }
                Outcome::MmioWrite(m)
            }
            o => o,
        }
    }
}

fn emu(s: &mut CpuState, env: &mut Env) -> Outcome {
    emulate(s, env, &CFG, None).masked()
}

#[test]
fn real_mode_mmio_read_restarts_with_the_data() {
    let mut env = Env::new();
    let mut s = real_mode();
    *s.seg_mut(SegReg::Ds) = seg(0xa_0000, 0xffff, 3, false, false);
    s.set_gpr(Gpr::Rax, 0xffff_ffff_ffff_ffff);
    env.put(0x1000, &[0x8b, 0x06, 0x20, 0x00]); // mov ax, [0x20]
    assert_eq!(
        read_done(&mut s, &mut env, 0xa_0020, 2, 0xbeef),
        Outcome::Done
    );
    assert_eq!(
        s.gpr(Gpr::Rax),
        0xffff_ffff_ffff_beef,
        "16-bit writes merge"
    );
    assert_eq!(s.rip, 0x1004);
}

#[test]
fn completion_for_another_address_is_not_used() {
    let mut env = Env::new();
    let mut s = real_mode();
    *s.seg_mut(SegReg::Ds) = seg(0xa_0000, 0xffff, 3, false, false);
    env.put(0x1000, &[0x8a, 0x26, 0x20, 0x00]); // mov ah, [0x20]
    let m = MmioData {
        gpa: Gpa(0xa_0021),
        len: 1,
        data: data(1),
    };
    let o = emulate(&mut s, &mut env, &CFG, Some(&m));
    assert_eq!(
        o,
        Outcome::MmioRead {
            gpa: Gpa(0xa_0020),
            len: 1
        }
    );
    assert_eq!(
        read_done(&mut s, &mut env, 0xa_0020, 1, 0x77),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::Rax), 0x7700, "AH");
}

#[test]
fn long_mode_loads_with_every_extension() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0xd000_0008);
    env.put(0x4000, &[0x48, 0x8b, 0x03]); // mov rax, [rbx]
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0008, 8, 0x1122_3344_5566_7788),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::Rax), 0x1122_3344_5566_7788);
    assert_eq!(s.rip, 0x4003);

    // movzx ecx, byte [rbx]; movsx r9, word [rbx+2]; mov eax, [rbx] zero-extends.
    env.put(
        0x4003,
        &[0x0f, 0xb6, 0x0b, 0x4c, 0x0f, 0xbf, 0x4b, 0x02, 0x8b, 0x03],
    );
    s.set_gpr(Gpr::Rcx, u64::MAX);
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0008, 1, 0xf0),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::Rcx), 0xf0);
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_000a, 2, 0x8001),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::R9), 0xffff_ffff_ffff_8001);
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0008, 4, 0x8000_0000),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::Rax), 0x8000_0000);
    assert_eq!(s.rip, 0x400d);
}

#[test]
fn rip_relative_store_and_immediate_store() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.rip = 0x4000;
    // mov dword [rip + disp], 0x11223344 -> target 0x400a + disp (disp32 is signed: reach
    // the VGA hole, 2 GiB around RIP).
    let disp: u32 = (0xa_0100u64 - 0x400a) as u32;
    let mut code = vec![0xc7, 0x05];
    code.extend_from_slice(&disp.to_le_bytes());
    code.extend_from_slice(&0x1122_3344u32.to_le_bytes());
    env.put(0x4000, &code);
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xa_0100),
            len: 4,
            data: data(0x1122_3344),
        })
    );
    assert_eq!(s.rip, 0x400a);
}

#[test]
fn alu_read_modify_write_on_mmio() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0xd000_0100);
    env.put(0x4000, &[0x83, 0x0b, 0x10]); // or dword [rbx], 0x10
    let o = read_done(&mut s, &mut env, 0xd000_0100, 4, 0x8000_0001).masked();
    assert_eq!(
        o,
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0100),
            len: 4,
            data: data(0x8000_0011),
        })
    );
    assert_eq!(s.rflags & 0x8d5, 0x80 | 0x4, "SF and PF, CF/OF clear");

    // cmp byte [rbx], 0x80 only sets flags.
    env.put(0x4003, &[0x80, 0x3b, 0x80]);
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0100, 1, 0x7f),
        Outcome::Done
    );
    // 0x7f - 0x80 = 0xff: borrow, signed overflow, negative, even parity, no nibble borrow.
    assert_eq!(
        s.rflags & 0x8d5,
        0x800 | 0x80 | 0x1 | 0x4,
        "OF SF CF PF, not AF"
    );
    assert_eq!(s.rip, 0x4006);
}

#[test]
fn xchg_and_bit_test_with_mmio() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0xd000_0000);
    s.set_gpr(Gpr::Rdx, 0xaaaa);
    env.put(0x4000, &[0x87, 0x13]); // xchg [rbx], edx
    let o = read_done(&mut s, &mut env, 0xd000_0000, 4, 0x5555).masked();
    assert_eq!(
        o,
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0000),
            len: 4,
            data: data(0xaaaa),
        })
    );
    assert_eq!(s.gpr(Gpr::Rdx), 0x5555);
    // bts qword [rbx], rcx with rcx = 70: bit 6 of the qword at rbx + 8.
    s.set_gpr(Gpr::Rcx, 70);
    env.put(0x4002, &[0x48, 0x0f, 0xab, 0x0b]);
    let o = read_done(&mut s, &mut env, 0xd000_0008, 8, 0x1).masked();
    assert_eq!(
        o,
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0008),
            len: 8,
            data: data(0x41),
        })
    );
    assert_eq!(s.rflags & 1, 0, "CF = old bit");
    // A negative offset moves backwards: bt dword [rbx], ecx with ecx = -1 -> bit 31 at rbx-4.
    s.set_gpr(Gpr::Rcx, 0xffff_ffff);
    env.put(0x4006, &[0x0f, 0xa3, 0x0b]);
    assert_eq!(
        read_done(&mut s, &mut env, 0xcfff_fffc, 4, 0x8000_0000),
        Outcome::Done
    );
    assert_eq!(s.rflags & 1, 1);
}

#[test]
fn rep_stos_does_one_element_per_exit() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rdi, 0xd000_0000);
    s.set_gpr(Gpr::Rcx, 3);
    s.set_gpr(Gpr::Rax, 0x42);
    env.put(0x4000, &[0xf3, 0xaa]); // rep stosb
    for i in 0..3u64 {
        let o = emu(&mut s, &mut env);
        assert_eq!(
            o,
            Outcome::MmioWrite(MmioData {
                gpa: Gpa(0xd000_0000 + i),
                len: 1,
                data: data(0x42),
            })
        );
        assert_eq!(s.gpr(Gpr::Rcx), 2 - i);
        assert_eq!(s.rip, if i == 2 { 0x4002 } else { 0x4000 });
    }
    // RCX = 0: nothing happens but RIP moves.
    s.rip = 0x4000;
    assert_eq!(emu(&mut s, &mut env), Outcome::Done);
    assert_eq!(s.rip, 0x4002);
}

#[test]
fn movs_between_ram_and_mmio_both_ways_and_backwards() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x8000, &0xcafe_f00du32.to_le_bytes());
    s.set_gpr(Gpr::Rsi, 0x8000);
    s.set_gpr(Gpr::Rdi, 0xd000_0010);
    s.rflags |= 1 << 10; // DF
    env.put(0x4000, &[0xa5]); // movsd
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0010),
            len: 4,
            data: data(0xcafe_f00d),
        })
    );
    assert_eq!((s.gpr(Gpr::Rsi), s.gpr(Gpr::Rdi)), (0x7ffc, 0xd000_000c));
    // MMIO -> RAM: read exit, then the store lands in RAM.
    s.rflags &= !(1 << 10);
    s.set_gpr(Gpr::Rsi, 0xd000_0020);
    s.set_gpr(Gpr::Rdi, 0x9000);
    env.put(0x4001, &[0x48, 0xa5]); // movsq
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0020, 8, 0x0102_0304_0506_0708),
        Outcome::Done
    );
    assert_eq!(env.get(0x9000, 8), &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(s.rip, 0x4003);
}

#[test]
fn writes_to_read_only_memory_go_to_userspace() {
    let mut env = Env::new();
    env.rom = Some((0x9000, 0xa000));
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0x9000);
    env.put(0x4000, &[0x88, 0x3b]); // mov [rbx], bh
    s.set_gpr(Gpr::Rbx, 0x9000);
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0x9000),
            len: 1,
            data: data(0x90),
        })
    );
}

#[test]
fn non_canonical_addresses_fault_gp_or_ss() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0x8000_0000_0000);
    env.put(0x4000, &[0x8b, 0x03, 0x8b, 0x45, 0x00]); // mov eax, [rbx]; mov eax, [rbp]
    let before = s.clone();
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::gp0()));
    assert_eq!(s, before);
    s.rip = 0x4002;
    s.set_gpr(Gpr::Rbp, 0xffff_7fff_ffff_fff0);
    let o = emu(&mut s, &mut env);
    assert!(
        matches!(o, Outcome::Exception(e) if e.vector == SS_VECTOR),
        "{o:?}"
    );
}

#[test]
fn unmapped_linear_address_is_a_page_fault_with_cr2() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0x1_0000_0010);
    env.put(0x4000, &[0x89, 0x03]); // mov [rbx], eax
    let o = emu(&mut s, &mut env);
    assert_eq!(
        o,
        Outcome::Exception(Exception {
            vector: PF_VECTOR,
            error_code: Some(pfec::WRITE),
            cr2: Some(0x1_0000_0010),
        })
    );
}

#[test]
fn protected_mode_segment_limits_and_types() {
    let mut env = Env::new();
    let mut s = real_mode();
    s.cr0 = CR0_PE;
    *s.seg_mut(SegReg::Cs) = seg(0, 0xffff_ffff, 0xb, true, false);
    *s.seg_mut(SegReg::Ds) = seg(0xd000_0000, 0xfff, 3, true, false);
    *s.seg_mut(SegReg::Es) = seg(0xd000_0000, 0xffff, 1, true, false); // read-only data
    env.put(0x1000, &[0x89, 0x1d, 0xfe, 0x0f, 0x00, 0x00]); // mov [0xffe], ebx: crosses limit
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::gp0()));
    env.put(0x1000, &[0x89, 0x1d, 0xfc, 0x0f, 0x00, 0x00]); // mov [0xffc], ebx: fits
    assert!(matches!(emu(&mut s, &mut env), Outcome::MmioWrite(m) if m.gpa == Gpa(0xd000_0ffc)));
    s.rip = 0x1000;
    env.put(0x1000, &[0x26, 0x89, 0x1d, 0x00, 0x00, 0x00, 0x00]); // mov es:[0], ebx
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::gp0()));
    // Reads through the read-only segment are fine; 32-bit code wraps RIP at 4G.
    env.put(0x1000, &[0x26, 0x8b, 0x1d, 0x00, 0x00, 0x00, 0x00]);
    assert!(
        matches!(emu(&mut s, &mut env), Outcome::MmioRead { gpa, len: 4 } if gpa == Gpa(0xd000_0000))
    );
}

#[test]
fn unsupported_instructions_report_their_bytes() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x4000, &[0x0f, 0xaf, 0x03, 0x90]); // imul eax, [rbx]
    match emu(&mut s, &mut env) {
        Outcome::Unhandleable(b) => {
            assert_eq!(b.len, 15);
            assert_eq!(&b.bytes[..4], &[0x0f, 0xaf, 0x03, 0x90]);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(s.rip, 0x4000);
    // Intercepted-only instructions are not emulated as MMIO either.
    env.put(0x4000, &[0x0f, 0xa2]);
    assert!(matches!(emu(&mut s, &mut env), Outcome::Unhandleable(_)));
}

#[test]
fn bad_encodings_raise_ud_and_gp() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x4000, &[0xf0, 0x89, 0x03]); // lock mov [rbx], eax
    assert!(matches!(emu(&mut s, &mut env), Outcome::Exception(e) if e.vector == UD_VECTOR));
    env.put(0x4000, &[0x66; 15]);
    env.put(0x400f, &[0x90]);
    assert!(matches!(emu(&mut s, &mut env), Outcome::Exception(e) if e.vector == GP_VECTOR));
}

#[test]
fn skip_finds_the_next_rip_in_every_mode() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    for (code, op) in [
        (&[0x0f, 0xa2][..], Op::Cpuid),
        (&[0x0f, 0x01, 0xd9], Op::Vmmcall),
        (&[0x0f, 0x32], Op::Rdmsr),
        (&[0x0f, 0x30], Op::Wrmsr),
        (&[0x0f, 0x01, 0xd1], Op::Xsetbv),
        (&[0xf4], Op::Hlt),
        (&[0xf3, 0x90], Op::Pause),
        (&[0xf3, 0x48, 0x6d], Op::Ins),
        (&[0xe6, 0x80], Op::Out),
    ] {
        env.put(0x4000, code);
        let d = skip(&s, &mut env, &CFG).unwrap();
        assert_eq!(d.insn.op, op);
        assert_eq!(d.next_rip, 0x4000 + code.len() as u64, "{op:?}");
    }
    // Real mode: CS base + IP.
    let mut r = real_mode();
    *r.seg_mut(SegReg::Cs) = seg(0xf_0000, 0xffff, 0xb, false, false);
    r.rip = 0xfff0;
    env.put(0xf_fff0, &[0x66, 0x0f, 0x01, 0xd9]);
    // 66 on VMMCALL is a different encoding: not skipped blindly.
    assert!(matches!(
        skip(&r, &mut env, &CFG),
        Err(Failure::Unhandleable(_))
    ));
    env.put(0xf_fff0, &[0xf4]);
    assert_eq!(skip(&r, &mut env, &CFG).unwrap().next_rip, 0xfff1);
    // The CS limit cuts the fetch: an instruction running past it is #GP(0).
    r.rip = 0xffff;
    env.put(0xf_ffff, &[0x0f]);
    assert_eq!(
        skip(&r, &mut env, &CFG),
        Err(Failure::Exception(Exception::gp0()))
    );
    s.rip = 0x4000;
    let _ = &mut s;
}

#[test]
fn fetch_stops_at_an_unmapped_page_only_when_the_instruction_needs_it() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    // Page 0x5000 is not present. CPUID ending exactly at 0x5000 is fine...
    s.rip = 0x4ffe;
    env.put(0x4ffe, &[0x0f, 0xa2]);
    assert_eq!(skip(&s, &mut env, &CFG).unwrap().next_rip, 0x5000);
    // ...but an instruction crossing into it faults there, as an instruction fetch.
    s.rip = 0x4fff;
    env.put(0x4fff, &[0x0f]);
    assert_eq!(
        skip(&s, &mut env, &CFG),
        Err(Failure::Exception(Exception {
            vector: PF_VECTOR,
            error_code: Some(pfec::FETCH),
            cr2: Some(0x5000),
        }))
    );
    // Code in MMIO cannot be fetched.
    s.rip = 0xd000_0000;
    assert!(matches!(skip(&s, &mut env, &CFG), Err(Failure::Unhandleable(b)) if b.len == 0));
}

#[test]
fn page_crossing_accesses_split_in_ram_and_refuse_half_mmio() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x7ffe, &[1, 2, 3, 4]);
    s.set_gpr(Gpr::Rbx, 0x7ffe);
    env.put(0x4000, &[0x8b, 0x03]); // mov eax, [rbx]
    assert_eq!(emu(&mut s, &mut env), Outcome::Done);
    assert_eq!(s.gpr(Gpr::Rax), 0x0403_0201);
    // 0x9ffff.. crosses into the VGA hole.
    s.rip = 0x4000;
    s.set_gpr(Gpr::Rbx, 0x9_fffe);
    assert!(matches!(emu(&mut s, &mut env), Outcome::Unhandleable(_)));
}

#[test]
fn guest_access_helpers_for_string_io() {
    let mut env = Env::new();
    let s = long_mode(&mut env);
    write_guest(&s, &mut env, &CFG, SegReg::Es, 0x7ffe, &[9, 8, 7, 6]).unwrap();
    let mut buf = [0u8; 4];
    read_guest(&s, &mut env, &CFG, SegReg::Ds, 0x7ffe, &mut buf).unwrap();
    assert_eq!(buf, [9, 8, 7, 6]);
    assert_eq!(
        write_guest(&s, &mut env, &CFG, SegReg::Es, 0x9_fffe, &[1, 2, 3, 4]),
        Err(GuestAccessError::NotRam)
    );
    assert_eq!(env.get(0x9_fffe, 2), &[0, 0], "nothing written");
    assert!(matches!(
        read_guest(&s, &mut env, &CFG, SegReg::Ds, 0x5000, &mut buf),
        Err(GuestAccessError::Exception(e)) if e.vector == PF_VECTOR
    ));
}

#[test]
fn movs_from_mmio_to_mmio_takes_a_read_then_a_write_exit() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rsi, 0xd000_0000);
    s.set_gpr(Gpr::Rdi, 0xd000_1000);
    env.put(0x4000, &[0x66, 0xa5]); // movsw
    let o = read_done(&mut s, &mut env, 0xd000_0000, 2, 0xabcd).masked();
    assert_eq!(
        o,
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_1000),
            len: 2,
            data: data(0xabcd),
        })
    );
    assert_eq!(
        (s.gpr(Gpr::Rsi), s.gpr(Gpr::Rdi), s.rip),
        (0xd000_0002, 0xd000_1002, 0x4002)
    );
}

#[test]
fn expand_down_segments_and_compatibility_mode() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    // Compatibility mode: long mode, CS without L, 32-bit code, legacy segmentation.
    *s.seg_mut(SegReg::Cs) = seg(0, 0xffff_ffff, 0xb, true, false);
    // Expand-down data segment (type 7), limit 0xfff, 32-bit: offsets 0x1000..=0xffffffff.
    *s.seg_mut(SegReg::Ds) = seg(0xd000_0000, 0xfff, 7, true, false);
    env.put(0x4000, &[0x8b, 0x05, 0x00, 0x08, 0x00, 0x00]); // mov eax, [0x800]
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::gp0()));
    env.put(0x4000, &[0x8b, 0x05, 0x00, 0x10, 0x00, 0x00]); // mov eax, [0x1000]
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioRead {
            gpa: Gpa(0xd000_1000),
            len: 4
        }
    );
    // An unusable (null) segment faults; through SS it is #SS.
    s.seg_mut(SegReg::Ds).unusable = true;
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::gp0()));
    s.seg_mut(SegReg::Ss).unusable = true;
    env.put(0x4000, &[0x36, 0x8b, 0x05, 0x00, 0x10, 0x00, 0x00]); // mov eax, ss:[0x1000]
    assert_eq!(emu(&mut s, &mut env), Outcome::Exception(Exception::ss0()));
}

#[test]
fn user_mode_accesses_use_the_user_bit() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    // Make the leaf for 0x8000 a supervisor page and run at CPL 3.
    env.set64(0x10_3000 + 8 * 8, 0x8000 | 3);
    s.seg_mut(SegReg::Ss).dpl = 3;
    s.seg_mut(SegReg::Cs).dpl = 3;
    s.set_gpr(Gpr::Rbx, 0x8000);
    env.put(0x4000, &[0x8b, 0x03]);
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::Exception(Exception {
            vector: PF_VECTOR,
            error_code: Some(pfec::PRESENT | pfec::USER),
            cr2: Some(0x8000),
        })
    );
}

/// Kernel code must never panic on guest input: random code bytes and register state in every
/// mode; whatever comes out must be consistent with the state change.
#[test]
fn random_code_and_state_never_panic() {
    let mut x = 0x1357_9bdf_2468_ace0u64;
    let mut rnd = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut env = Env::new();
    let base_long = long_mode(&mut env);
    let mut counts = [0u32; 5];
    for i in 0..200_000u32 {
        let mut s = match i % 3 {
            0 => base_long.clone(),
            1 => real_mode(),
            _ => {
                let mut p = real_mode();
                p.cr0 = CR0_PE;
                *p.seg_mut(SegReg::Cs) = seg(0, 0xffff_ffff, 0xb, rnd() & 1 == 0, false);
                p
            }
        };
        s.rip = if i % 3 == 0 { 0x4000 } else { 0x1000 };
        for r in 0..16 {
            // Mostly small addresses (RAM, the VGA hole), sometimes anything.
            let v = rnd();
            s.gprs[r] = if v & 3 == 0 { v } else { v & 0xf_ffff };
        }
        s.rflags = 2 | (rnd() & 0xcd5); // arithmetic flags and DF
        let mut code = [0u8; 16];
        for b in code.iter_mut() {
            *b = rnd() as u8;
        }
        // Bias towards the MMIO instructions.
        code[0] = [
            0x88, 0x89, 0x8a, 0x8b, 0xc7, 0x83, 0xa5, 0xab, 0x0f, 0xf7, 0x87, 0x48, 0xf3, 0x66,
        ][(rnd() % 14) as usize];
        env.put(s.rip, &code);
        let before = s.clone();
        let o = emulate(&mut s, &mut env, &CFG, None);
        match o {
            Outcome::Done => counts[0] += 1,
            Outcome::MmioRead { .. } => {
                counts[1] += 1;
                assert_eq!(s, before);
            }
            Outcome::MmioWrite(_) => counts[2] += 1,
            Outcome::Exception(_) => {
                counts[3] += 1;
                assert_eq!(s, before);
            }
            Outcome::Unhandleable(_) => {
                counts[4] += 1;
                assert_eq!(s, before);
            }
        }
    }
    eprintln!("done/read/write/exception/unhandleable: {counts:?}");
    assert!(counts.iter().all(|&c| c > 100), "{counts:?}");
}

#[test]
fn fs_and_gs_bases_apply_in_64_bit_mode_and_others_do_not() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.seg_mut(SegReg::Fs).base = 0xd000_0000;
    s.seg_mut(SegReg::Ds).base = 0x1234_0000; // ignored in 64-bit mode
    env.put(0x4000, &[0x64, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00]); // mov eax, fs:[0x10]
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioRead {
            gpa: Gpa(0xd000_0010),
            len: 4
        }
    );
    env.put(0x4000, &[0x3e, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x0a, 0x00]); // mov eax, ds:[0xa0010]
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioRead {
            gpa: Gpa(0xa_0010),
            len: 4
        }
    );
}

#[test]
fn virtual_8086_mode_is_16_bit_code_at_cpl_3() {
    let mut env = Env::new();
    let mut s = real_mode();
    s.cr0 = CR0_PE;
    s.rflags |= 1 << 17; // VM
    *s.seg_mut(SegReg::Ds) = seg(0xa_0000, 0xffff, 3, false, false);
    assert_eq!(x86emu::emulate::cpl(&s), 3);
    env.put(0x1000, &[0xc7, 0x06, 0x00, 0x01, 0x34, 0x12]); // mov word [0x100], 0x1234
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xa_0100),
            len: 2,
            data: data(0x1234),
        })
    );
    assert_eq!(s.rip, 0x1006);
}

#[test]
fn pae_guest_emulation_walks_its_tables() {
    let mut env = Env::new();
    let mut s = real_mode();
    s.cr0 = CR0_PE | CR0_PG | CR0_WP;
    s.cr4 = CR4_PAE;
    *s.seg_mut(SegReg::Cs) = seg(0, 0xffff_ffff, 0xb, true, false);
    *s.seg_mut(SegReg::Ds) = seg(0, 0xffff_ffff, 3, true, false);
    // PDPT at 0x20_0000: entry 0 -> PD at 0x20_1000 whose entry 0 maps 0..2M (code), entry 1
    // maps linear 2M..4M to the device range at 0xd000_0000 with a 2 MiB page.
    s.cr3 = 0x20_0000;
    env.set64(0x20_0000, 0x20_1000 | 1);
    env.set64(0x20_1000, 0x83);
    env.set64(0x20_1008, 0xd000_0000 | 0x83);
    env.put(0x1000, &[0x89, 0x1d, 0x08, 0x00, 0x20, 0x00]); // mov [0x200008], ebx
    s.set_gpr(Gpr::Rbx, 0x5555_aaaa);
    assert_eq!(
        emu(&mut s, &mut env),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0008),
            len: 4,
            data: data(0x5555_aaaa),
        })
    );
    // The walk set the accessed and dirty bits like hardware.
    assert_eq!(env.get(0x20_1008, 1)[0] & 0x60, 0x60);
}

#[test]
fn repe_cmps_stops_at_the_first_mismatch() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x8000, b"abc");
    s.set_gpr(Gpr::Rsi, 0x8000);
    s.set_gpr(Gpr::Rdi, 0xd000_0000);
    s.set_gpr(Gpr::Rcx, 10);
    env.put(0x4000, &[0xf3, 0xa6]); // repe cmpsb
                                    // Equal bytes: ZF set, the instruction restarts for the next element.
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0000, 1, u64::from(b'a')),
        Outcome::Done
    );
    assert_eq!((s.rip, s.gpr(Gpr::Rcx), s.rflags & 0x40), (0x4000, 9, 0x40));
    // A mismatch ends it with RCX, RSI and RDI stepped past the element.
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0001, 1, u64::from(b'x')),
        Outcome::Done
    );
    assert_eq!((s.rip, s.gpr(Gpr::Rcx), s.rflags & 0x40), (0x4002, 8, 0));
    assert_eq!((s.gpr(Gpr::Rsi), s.gpr(Gpr::Rdi)), (0x8002, 0xd000_0002));
    // b'b' - b'x' borrows.
    assert_eq!(s.rflags & 1, 1);
}

#[test]
fn repne_scas_stops_at_the_first_match() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rdi, 0xd000_0000);
    s.set_gpr(Gpr::Rcx, 5);
    s.set_gpr(Gpr::Rax, 0x1234);
    env.put(0x4000, &[0xf2, 0x66, 0xaf]); // repne scasw
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0000, 2, 0x1111),
        Outcome::Done
    );
    assert_eq!((s.rip, s.gpr(Gpr::Rcx)), (0x4000, 4));
    assert_eq!(
        read_done(&mut s, &mut env, 0xd000_0002, 2, 0x1234),
        Outcome::Done
    );
    assert_eq!((s.rip, s.gpr(Gpr::Rcx), s.rflags & 0x40), (0x4003, 3, 0x40));
    assert_eq!(s.gpr(Gpr::Rdi), 0xd000_0004);
}

#[test]
fn cmps_between_two_mmio_ranges_is_unhandleable() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rsi, 0xd000_0000);
    s.set_gpr(Gpr::Rdi, 0xd000_1000);
    env.put(0x4000, &[0xa6]); // cmpsb
    let before = s.clone();
    assert!(matches!(
        read_done(&mut s, &mut env, 0xd000_0000, 1, 1),
        Outcome::Unhandleable(_)
    ));
    assert_eq!(s, before);
}

// --- The #UD intercept (EMULTYPE_TRAP_UD): MOVBE, RDPID, VMCALL/VMMCALL, and #UD for the rest.

use x86emu::emulate::{emulate_with, EmuOptions, VMMCALL};

const UD_ALL: EmuOptions = EmuOptions {
    trap_ud: true,
    movbe: true,
    rdpid: true,
    fix_hypercall: true,
};

fn ud_emu(s: &mut CpuState, env: &mut Env, opts: EmuOptions) -> Outcome {
    emulate_with(s, env, &CFG, None, opts).masked()
}

fn is_ud(o: Outcome) -> bool {
    o == Outcome::Exception(Exception::ud())
}

#[test]
fn movbe_loads_reverse_bytes_in_every_operand_size() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.set64(0x8000, 0x1122_3344_5566_7788);
    s.set_gpr(Gpr::Rdi, 0x8000);
    for (code, rax_before, rax_after) in [
        // movbe eax, [rdi]: 32-bit writes zero-extend.
        (&[0x0f, 0x38, 0xf0, 0x07][..], u64::MAX, 0x8877_6655),
        // movbe rax, [rdi]
        (&[0x48, 0x0f, 0x38, 0xf0, 0x07], 0, 0x8877_6655_4433_2211),
        // movbe ax, [rdi]: the upper 48 bits stay.
        (
            &[0x66, 0x0f, 0x38, 0xf0, 0x07],
            u64::MAX,
            0xffff_ffff_ffff_8877,
        ),
    ] {
        s.rip = 0x4000;
        s.set_gpr(Gpr::Rax, rax_before);
        env.put(0x4000, code);
        assert_eq!(
            ud_emu(&mut s, &mut env, UD_ALL),
            Outcome::Done,
            "{code:02x?}"
        );
        assert_eq!(s.gpr(Gpr::Rax), rax_after, "{code:02x?}");
        assert_eq!(s.rip, 0x4000 + code.len() as u64);
    }
}

#[test]
fn movbe_stores_to_ram_and_to_mmio() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::R8, 0x0102_0304_0506_0708);
    s.set_gpr(Gpr::Rsp, 0x9000);
    // movbe [rsp+8], r8
    env.put(0x4000, &[0x4c, 0x0f, 0x38, 0xf1, 0x44, 0x24, 0x08]);
    assert_eq!(ud_emu(&mut s, &mut env, UD_ALL), Outcome::Done);
    // Big-endian in memory: the most significant byte first.
    assert_eq!(env.get(0x9008, 8), &[1, 2, 3, 4, 5, 6, 7, 8]);
    // movbe word [rbx], ax to MMIO: the swapped word goes to userspace.
    s.rip = 0x4000;
    s.set_gpr(Gpr::Rbx, 0xd000_0000);
    s.set_gpr(Gpr::Rax, 0xaabb);
    env.put(0x4000, &[0x66, 0x0f, 0x38, 0xf1, 0x03]);
    assert_eq!(
        ud_emu(&mut s, &mut env, UD_ALL),
        Outcome::MmioWrite(MmioData {
            gpa: Gpa(0xd000_0000),
            len: 2,
            data: data(0xbbaa),
        })
    );
    assert_eq!(s.rip, 0x4005);
}

#[test]
fn movbe_load_from_mmio_restarts_with_the_data() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0xd000_0010);
    env.put(0x4000, &[0x0f, 0x38, 0xf0, 0x0b]); // movbe ecx, [rbx]
    let o = emulate_with(&mut s, &mut env, &CFG, None, UD_ALL);
    assert_eq!(
        o,
        Outcome::MmioRead {
            gpa: Gpa(0xd000_0010),
            len: 4
        }
    );
    assert_eq!(s.rip, 0x4000);
    let m = MmioData {
        gpa: Gpa(0xd000_0010),
        len: 4,
        data: data(0x1234_5678),
    };
    // The completion runs without the trap flag (the NPF path's emulation), MOVBE still on.
    let opts = EmuOptions {
        trap_ud: false,
        ..UD_ALL
    };
    assert_eq!(
        emulate_with(&mut s, &mut env, &CFG, Some(&m), opts),
        Outcome::Done
    );
    assert_eq!(s.gpr(Gpr::Rcx), 0x7856_3412);
}

#[test]
fn movbe_without_the_guest_feature_is_ud_and_changes_nothing() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.set64(0x8000, 0x1122_3344_5566_7788);
    s.set_gpr(Gpr::Rdi, 0x8000);
    env.put(0x4000, &[0x0f, 0x38, 0xf0, 0x07]);
    let before = s.clone();
    for trap_ud in [true, false] {
        let opts = EmuOptions {
            trap_ud,
            movbe: false,
            ..UD_ALL
        };
        assert!(is_ud(ud_emu(&mut s, &mut env, opts)));
        assert_eq!(s, before);
    }
    // Without options at all (plain MMIO emulation) the same: upstream's em_movbe checks the
    // guest's CPUID whatever brought it there.
    assert!(is_ud(emu(&mut s, &mut env)));
}

#[test]
fn movbe_faults_on_its_memory_operand_and_register_form_is_ud() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rdi, 0x5008); // page 0x5000 is not present
    env.put(0x4000, &[0x0f, 0x38, 0xf1, 0x07]); // movbe [rdi], eax
    assert_eq!(
        ud_emu(&mut s, &mut env, UD_ALL),
        Outcome::Exception(Exception {
            vector: PF_VECTOR,
            error_code: Some(pfec::WRITE),
            cr2: Some(0x5008),
        })
    );
    env.put(0x4000, &[0x0f, 0x38, 0xf0, 0xc3]); // movbe eax, ebx does not exist
    assert!(is_ud(ud_emu(&mut s, &mut env, UD_ALL)));
    env.put(0x4000, &[0xf0, 0x0f, 0x38, 0xf1, 0x07]); // lock movbe
    assert!(is_ud(ud_emu(&mut s, &mut env, UD_ALL)));
    assert_eq!(s.rip, 0x4000);
}

#[test]
fn rdpid_reads_tsc_aux_only_with_the_feature() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.msrs.tsc_aux = 0x8765_4321;
    s.set_gpr(Gpr::R9, u64::MAX);
    env.put(0x4000, &[0xf3, 0x41, 0x0f, 0xc7, 0xf9]); // rdpid r9
    let before = s.clone();
    let opts = EmuOptions {
        rdpid: false,
        ..UD_ALL
    };
    assert!(is_ud(ud_emu(&mut s, &mut env, opts)));
    assert_eq!(s, before);
    assert_eq!(ud_emu(&mut s, &mut env, UD_ALL), Outcome::Done);
    assert_eq!(s.gpr(Gpr::R9), 0x8765_4321);
    assert_eq!(s.rip, 0x4005);
    // 16-bit code: a 32-bit destination (Op3264), zero-extended.
    let mut r = real_mode();
    r.msrs.tsc_aux = 7;
    r.set_gpr(Gpr::Rdx, u64::MAX);
    env.put(0x1000, &[0xf3, 0x0f, 0xc7, 0xfa]); // rdpid edx
    assert_eq!(ud_emu(&mut r, &mut env, UD_ALL), Outcome::Done);
    assert_eq!(r.gpr(Gpr::Rdx), 7);
    assert_eq!(r.rip, 0x1004);
}

#[test]
fn trap_ud_turns_everything_else_into_ud() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.set_gpr(Gpr::Rbx, 0x8000);
    for code in [
        &[0x0f, 0x0b][..],               // ud2
        &[0x89, 0x03],                   // mov [rbx], eax: known, but not EmulateOnUD
        &[0x0f, 0xa2],                   // cpuid
        &[0x0f, 0xaf, 0x03],             // imul: unknown to the decoder
        &[0xf2, 0x0f, 0x38, 0xf0, 0xc3], // crc32
        &[0x0f, 0xc7, 0xf8],             // rdseed
        &[0x66; 15],                     // too long: #GP outside TRAP_UD, #UD here
    ] {
        env.put(0x4000, &[0x90; 16]);
        env.put(0x4000, code);
        let before = s.clone();
        assert!(is_ud(ud_emu(&mut s, &mut env, UD_ALL)), "{code:02x?}");
        assert_eq!(s, before);
    }
    // A fetch that faults is #UD too (upstream queues #UD for any failed decode).
    s.rip = 0x4ffe;
    env.put(0x4ffe, &[0x0f, 0x38]);
    assert!(is_ud(ud_emu(&mut s, &mut env, UD_ALL)));
}

#[test]
fn vmcall_is_patched_to_vmmcall_with_the_quirk_and_ud_without() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    env.put(0x4000, &[0x0f, 0x01, 0xc1, 0x90]);
    let off = EmuOptions {
        fix_hypercall: false,
        ..UD_ALL
    };
    assert!(is_ud(ud_emu(&mut s, &mut env, off)));
    assert_eq!(env.get(0x4000, 3), &[0x0f, 0x01, 0xc1]);
    assert_eq!(ud_emu(&mut s, &mut env, UD_ALL), Outcome::Done);
    assert_eq!(
        env.get(0x4000, 4),
        &[VMMCALL[0], VMMCALL[1], VMMCALL[2], 0x90]
    );
    assert_eq!(
        s.rip, 0x4000,
        "the guest re-executes the patched instruction"
    );
    // Not under TRAP_UD (a hypercall never reaches the MMIO emulator): unhandleable.
    env.put(0x4000, &[0x0f, 0x01, 0xc1]);
    assert!(matches!(emu(&mut s, &mut env), Outcome::Unhandleable(_)));
}

#[test]
fn hypercall_privilege_and_mode_checks() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    s.seg_mut(SegReg::Ss).dpl = 3;
    s.seg_mut(SegReg::Cs).dpl = 3;
    env.put(0x4000, &[0x0f, 0x01, 0xc1]);
    // VMCALL is Priv: #GP(0) at CPL 3, nothing patched.
    assert_eq!(
        ud_emu(&mut s, &mut env, UD_ALL),
        Outcome::Exception(Exception::gp0())
    );
    assert_eq!(env.get(0x4000, 3), &[0x0f, 0x01, 0xc1]);
    // VMMCALL is Prot: #UD in real mode; VMCALL there is patched at RIP.
    let mut r = real_mode();
    env.put(0x1000, &[0x0f, 0x01, 0xd9]);
    assert!(is_ud(ud_emu(&mut r, &mut env, UD_ALL)));
    env.put(0x1000, &[0x0f, 0x01, 0xc1]);
    assert_eq!(ud_emu(&mut r, &mut env, UD_ALL), Outcome::Done);
    assert_eq!(env.get(0x1000, 3), &VMMCALL);
    assert_eq!(r.rip, 0x1000);
}

#[test]
fn hypercall_patch_on_a_read_only_page_faults_as_a_write() {
    let mut env = Env::new();
    let mut s = long_mode(&mut env);
    // Code page 0x4000 read-only (CR0.WP is set): the patch is a supervisor write fault.
    env.set64(0x10_3000 + 4 * 8, 0x4000 | 5);
    env.put(0x4000, &[0x0f, 0x01, 0xc1]);
    assert_eq!(
        ud_emu(&mut s, &mut env, UD_ALL),
        Outcome::Exception(Exception {
            vector: PF_VECTOR,
            error_code: Some(pfec::PRESENT | pfec::WRITE),
            cr2: Some(0x4000),
        })
    );
    assert_eq!(env.get(0x4000, 3), &[0x0f, 0x01, 0xc1]);
}
