// SPDX-License-Identifier: GPL-2.0-only
//! The MMIO instruction emulator and the `skip` helper.
//!
//! [`emulate`] runs one instruction at CS:RIP against a [`CpuState`] and an [`EmuEnv`] (guest
//! RAM and its page tables). It works on a copy of the state and commits only when the
//! instruction completes, so every other outcome leaves the vCPU exactly at the instruction:
//! - [`Outcome::MmioRead`]: an operand lives at a GPA that is not RAM. The run loop exits to
//!   userspace (`KVM_EXIT_MMIO`); on the next `KVM_RUN` it calls [`emulate`] again with the data
//!   userspace supplied, and the re-executed instruction takes it when it reaches the same read
//!   (upstream's `complete_emulated_mmio` + read cache, without the cache). Memory writes are
//!   always the instruction's last step, so nothing is done twice.
//! - [`Outcome::MmioWrite`]: the instruction completed (registers, RIP written) and its store
//!   goes to userspace.
//! - [`Outcome::Exception`] (#GP/#SS from segmentation, #PF from the walk, #UD): inject it; the
//!   state is unchanged.
//! - [`Outcome::Unhandleable`]: an instruction the decoder or emulator does not handle; the
//!   bytes go into `KVM_INTERNAL_ERROR_EMULATION`.
//!
//! A REP string instruction does one element per call (RCX/RSI/RDI stepped) and advances RIP
//! only after the last one, as upstream does for MMIO: the guest re-executes the instruction
//! for the next element, natively if it now touches RAM.
//!
//! Emulated: MOV (all forms), MOVZX, MOVSX/MOVSXD, MOVS/STOS/LODS/CMPS/SCAS (with REP, REPE,
//! REPNE), ADD/OR/ADC/SBB/AND/SUB/XOR/CMP, TEST, XCHG, BT/BTS/BTR/BTC (bit-string addressing),
//! NOT, NEG, INC, DEC, MOVBE (if the guest's CPUID has it, else #UD, as upstream's
//! `em_movbe`). With [`EmuOptions::trap_ud`] (the #UD intercept, upstream
//! `EMULTYPE_TRAP_UD`) only the instructions upstream marks `EmulateOnUD` that an AMD host
//! needs are emulated — MOVBE, RDPID (`em_rdpid`) and VMCALL/VMMCALL (`em_hypercall`: the
//! hypercall instruction patched to VMMCALL and re-executed) — and everything else, an
//! undecodable instruction or an unreadable fetch included, is #UD for the guest. The other instructions the decoder knows (CPUID, HLT, port I/O, ...) are
//! unhandleable here: the run loop handles them through their own intercepts. An instruction
//! that would need two MMIO reads (CMPS between two MMIO ranges) is unhandleable: one
//! completion can carry only one of them.
//!
//! Deviations, documented: an access that crosses a page boundary with MMIO on either side is
//! unhandleable (upstream splits it into two MMIO fragments); no #AC alignment checks and no
//! protection keys; RFLAGS.TF single-step after an emulated instruction is the caller's
//! business.

use x86::state::{CpuState, Gpr, SegReg};

use crate::decode::{
    self, truncate, AluOp, BitOp, DecodeError, Insn, Mem, Op, Operand, Reg, Rep, MAX_INSN_LEN,
};
use crate::flags;
use crate::linear::{self, add_in_width, Exception, FetchError, Intent, Pieces};
use crate::walk::{Access, WalkConfig};
use crate::{Gpa, GuestPhys, NotRam};

pub use crate::guest::{read_guest, write_guest, GuestAccessError};
pub use crate::linear::{code_size, cpl, linearize, CpuMode, Fetched};

/// RFLAGS.RF, cleared after an emulated instruction as hardware does after a completed one.
const RFLAGS_RF: u64 = 1 << 16;

/// Guest memory as the emulator sees it: RAM (read and written directly) versus everything else
/// (MMIO for userspace). The module implements it over the memslots; a write to a read-only
/// memslot is `NotRam` (an MMIO exit, as upstream).
pub trait EmuEnv: GuestPhys {
    /// Reads guest RAM at `gpa` (within one page), or `NotRam` without side effects.
    fn read_ram(&mut self, gpa: Gpa, buf: &mut [u8]) -> Result<(), NotRam>;
    /// Writes guest RAM at `gpa` (within one page; marks it dirty), or `NotRam` without side
    /// effects.
    fn write_ram(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), NotRam>;
    /// Whether `gpa` is RAM for a read or (`write`) a write; used to refuse page-crossing
    /// accesses that are half MMIO before anything is written.
    fn is_ram(&mut self, gpa: Gpa, write: bool) -> bool;
}

/// One MMIO access of up to 8 bytes: a store for userspace, or the data userspace returned
/// for a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioData {
    /// The guest-physical address.
    pub gpa: Gpa,
    /// Length in bytes (1, 2, 4 or 8).
    pub len: u8,
    /// The bytes (the first `len` are used), little-endian as in `kvm_run.mmio.data`.
    pub data: [u8; 8],
}

/// The instruction bytes for an emulation-failure report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsnBytes {
    /// The bytes (the first `len` are valid).
    pub bytes: [u8; MAX_INSN_LEN],
    /// How many could be fetched (0 if the code is not in RAM).
    pub len: u8,
}

/// The result of [`emulate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed: registers, flags and RIP written (a REP element that is not the last leaves
    /// RIP at the instruction).
    Done,
    /// Needs `len` bytes from MMIO at `gpa`; nothing was changed. Call [`emulate`] again with
    /// the data.
    MmioRead {
        /// The address.
        gpa: Gpa,
        /// Length in bytes.
        len: u8,
    },
    /// Completed except for this store, which goes to userspace.
    MmioWrite(MmioData),
    /// Inject this exception; nothing was changed (for #PF the caller sets CR2).
    Exception(Exception),
    /// Not emulated; report an emulation failure with these bytes.
    Unhandleable(InsnBytes),
}

/// Why the instruction at CS:RIP could not be decoded (see [`decode_at_rip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The fetch faults, or the encoding raises an exception (#UD, #GP for > 15 bytes).
    Exception(Exception),
    /// Unknown instruction or code outside RAM.
    Unhandleable(InsnBytes),
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        match f {
            Failure::Exception(e) => Outcome::Exception(e),
            Failure::Unhandleable(b) => Outcome::Unhandleable(b),
        }
    }
}

/// An instruction found at CS:RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The instruction.
    pub insn: Insn,
    /// Its bytes.
    pub bytes: InsnBytes,
    /// The RIP after it.
    pub next_rip: u64,
}

/// The RIP after an instruction of `len` bytes (32-bit wrap outside 64-bit mode, as upstream's
/// writeback).
fn next_rip(state: &CpuState, len: u8) -> u64 {
    let rip = state.rip.wrapping_add(u64::from(len));
    if CpuMode::of(state) == CpuMode::Long64 {
        rip
    } else {
        rip & 0xffff_ffff
    }
}

/// The effective address (the offset into the segment) of memory operand `m` of `insn`:
/// `base + index * scale + disp`, relative to `next_rip` for RIP-relative operands, wrapped to
/// the instruction's address size.
pub fn effective_address(state: &CpuState, insn: &Insn, next_rip: u64, m: &Mem) -> u64 {
    let mut a = m.disp as u64;
    if let Some(b) = m.base {
        a = a.wrapping_add(state.gpr(b));
    }
    if let Some(i) = m.index {
        a = a.wrapping_add(state.gpr(i).wrapping_mul(u64::from(m.scale)));
    }
    if m.rip_relative {
        a = a.wrapping_add(next_rip);
    }
    truncate(a, insn.addr_size)
}

/// Fetches and decodes the instruction at CS:RIP.
pub fn decode_at_rip(
    state: &CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
) -> Result<Decoded, Failure> {
    let f = match linear::fetch(state, cfg, env) {
        Ok(f) => f,
        Err(FetchError::Exception(e)) => return Err(Failure::Exception(e)),
        Err(FetchError::NotRam) => {
            return Err(Failure::Unhandleable(InsnBytes {
                bytes: [0; MAX_INSN_LEN],
                len: 0,
            }))
        }
    };
    let bytes = InsnBytes {
        bytes: f.bytes,
        len: f.len as u8,
    };
    match decode::decode(&f.bytes[..f.len], code_size(state)) {
        Ok(insn) => Ok(Decoded {
            insn,
            bytes,
            next_rip: next_rip(state, insn.len),
        }),
        Err(DecodeError::Truncated) => Err(match f.stop {
            Some(e) => Failure::Exception(e),
            None => Failure::Unhandleable(bytes),
        }),
        Err(DecodeError::TooLong) => Err(Failure::Exception(Exception::gp0())),
        Err(DecodeError::Invalid) => Err(Failure::Exception(Exception::ud())),
        Err(DecodeError::Unsupported) => Err(Failure::Unhandleable(bytes)),
    }
}

/// What the emulator may do beyond plain MMIO emulation: upstream's emulation type and the
/// guest features and VM quirks its handlers consult.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuOptions {
    /// The instruction raised #UD (upstream `EMULTYPE_TRAP_UD`): only the `EmulateOnUD`
    /// instructions run, any failure to decode is #UD.
    pub trap_ud: bool,
    /// The guest's CPUID has MOVBE (`guest_has_movbe`).
    pub movbe: bool,
    /// The guest's CPUID has RDPID (`guest_has_rdpid`).
    pub rdpid: bool,
    /// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN` is in force: a #UD-ing hypercall instruction is
    /// rewritten to VMMCALL (`emulator_fix_hypercall` + `svm_patch_hypercall`); without it the
    /// guest gets the #UD.
    pub fix_hypercall: bool,
}

/// The hypercall instruction an SVM guest must use (`svm_patch_hypercall`).
pub const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];

/// The run loop's `skip_instruction`: decodes the intercepted instruction at CS:RIP and returns
/// it with the RIP after it. The caller checks that the operation is the one intercepted
/// (another vCPU may have rewritten the code) and writes RIP.
pub fn skip(state: &CpuState, env: &mut impl EmuEnv, cfg: &WalkConfig) -> Result<Decoded, Failure> {
    decode_at_rip(state, env, cfg)
}

/// Emulates the instruction at CS:RIP (see the module docs). `read_data` is the completion of
/// the previous [`Outcome::MmioRead`] for this instruction, if any; it is used only if the
/// instruction reads exactly that GPA and length again.
pub fn emulate(
    state: &mut CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
    read_data: Option<&MmioData>,
) -> Outcome {
    emulate_with(state, env, cfg, read_data, EmuOptions::default())
}

/// [`emulate`] with the guest's features, the VM's quirks and the emulation type in `opts`.
pub fn emulate_with(
    state: &mut CpuState,
    env: &mut impl EmuEnv,
    cfg: &WalkConfig,
    read_data: Option<&MmioData>,
    opts: EmuOptions,
) -> Outcome {
    let d = match decode_at_rip(state, env, cfg) {
        Ok(d) => d,
        // Upstream x86_emulate_instruction: with EMULTYPE_TRAP_UD a failed decode (the
        // fetch's fault, an unknown or invalid encoding) queues #UD, nothing else.
        Err(_) if opts.trap_ud => return Outcome::Exception(Exception::ud()),
        Err(f) => return f.into(),
    };
    // x86_decode_insn: under EMULTYPE_TRAP_UD an instruction without EmulateOnUD fails to
    // decode, i.e. #UD. (Upstream also marks SYSCALL, SYSENTER, SYSEXIT and RSM; for an
    // AMD-compatible guest without SMM they end in #UD there too.)
    if opts.trap_ud && !matches!(d.insn.op, Op::Movbe | Op::Rdpid | Op::Vmcall | Op::Vmmcall) {
        return Outcome::Exception(Exception::ud());
    }
    let mut x = Exec {
        s: state.clone(),
        env,
        cfg,
        d,
        read_data,
        opts,
        cpl: cpl(state),
        advance: true,
        mmio_loaded: false,
    };
    match x.exec() {
        Ok(store) => {
            if x.advance {
                x.s.rip = d.next_rip;
            }
            x.s.rflags &= !RFLAGS_RF;
            *state = x.s;
            match store {
                Some(m) => Outcome::MmioWrite(m),
                None => Outcome::Done,
            }
        }
        Err(o) => o,
    }
}

/// One instruction's execution on a copy of the state.
struct Exec<'a, E: EmuEnv> {
    s: CpuState,
    env: &'a mut E,
    cfg: &'a WalkConfig,
    d: Decoded,
    read_data: Option<&'a MmioData>,
    opts: EmuOptions,
    cpl: u8,
    /// Whether RIP moves past the instruction (not for a REP element with more to do).
    advance: bool,
    /// Whether a load of this instruction already went to MMIO.
    mmio_loaded: bool,
}

/// What an executed instruction leaves for userspace: its MMIO store, if it made one (stores to
/// RAM are done by then).
type Store = Option<MmioData>;

fn to_bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - 8 * u32::from(size);
    (((v << shift) as i64) >> shift) as u64
}

impl<E: EmuEnv> Exec<'_, E> {
    fn insn(&self) -> &Insn {
        &self.d.insn
    }

    fn unhandleable(&self) -> Outcome {
        Outcome::Unhandleable(self.d.bytes)
    }

    fn get_reg(&self, r: Reg, size: u8) -> u64 {
        let v = self.s.gpr(r.gpr);
        if r.high_byte {
            (v >> 8) & 0xff
        } else {
            truncate(v, size)
        }
    }

    /// Writes a register as hardware does: 8/16-bit writes merge, 32-bit writes zero-extend.
    fn set_reg(&mut self, r: Reg, size: u8, v: u64) {
        let old = self.s.gpr(r.gpr);
        let new = match (size, r.high_byte) {
            (1, true) => (old & !0xff00) | ((v & 0xff) << 8),
            (1, false) => (old & !0xff) | (v & 0xff),
            (2, _) => (old & !0xffff) | (v & 0xffff),
            (4, _) => v & 0xffff_ffff,
            _ => v,
        };
        self.s.set_gpr(r.gpr, new);
    }

    /// The effective address of `m` (truncated to the address size).
    fn ea(&self, m: &Mem) -> u64 {
        effective_address(&self.s, self.insn(), self.d.next_rip, m)
    }

    /// Segmentation and paging for `size` bytes at `seg:ea`.
    fn locate(
        &mut self,
        seg: SegReg,
        ea: u64,
        size: u8,
        intent: Intent,
    ) -> Result<Pieces, Outcome> {
        let la =
            linearize(&self.s, seg, ea, u64::from(size), intent).map_err(Outcome::Exception)?;
        let access = match intent {
            Intent::Write => Access::write(self.cpl),
            _ => Access::read(self.cpl),
        };
        linear::translate_range(&self.s, self.cfg, self.env, la, usize::from(size), access)
            .map_err(Outcome::Exception)
    }

    /// Loads `size` bytes from translated `p`: RAM directly, MMIO from the completion data or
    /// by asking userspace.
    fn load(&mut self, p: &Pieces, size: u8) -> Result<u64, Outcome> {
        let mut buf = [0u8; 8];
        if p.is_split() {
            // Both halves must be RAM (see the module docs).
            let mut off = 0;
            for (gpa, len) in p.iter() {
                if !self.env.is_ram(gpa, false) {
                    return Err(self.unhandleable());
                }
                if self.env.read_ram(gpa, &mut buf[off..off + len]).is_err() {
                    return Err(self.unhandleable());
                }
                off += len;
            }
            return Ok(u64::from_le_bytes(buf));
        }
        let gpa = p.parts[0].0;
        let n = usize::from(size);
        if self.env.read_ram(gpa, &mut buf[..n]).is_ok() {
            return Ok(u64::from_le_bytes(buf));
        }
        if self.mmio_loaded {
            return Err(self.unhandleable());
        }
        self.mmio_loaded = true;
        match self.read_data {
            Some(m) if m.gpa == gpa && m.len == size => {
                buf[..n].copy_from_slice(&m.data[..n]);
                Ok(u64::from_le_bytes(buf))
            }
            _ => Err(Outcome::MmioRead { gpa, len: size }),
        }
    }

    /// Stores `size` bytes of `v` at translated `p`: RAM directly, else an MMIO store.
    fn store(&mut self, p: &Pieces, size: u8, v: u64) -> Result<Store, Outcome> {
        let bytes = to_bytes(v);
        if p.is_split() {
            for (gpa, _) in p.iter() {
                if !self.env.is_ram(gpa, true) {
                    return Err(self.unhandleable());
                }
            }
            let mut off = 0;
            for (gpa, len) in p.iter() {
                if self.env.write_ram(gpa, &bytes[off..off + len]).is_err() {
                    return Err(self.unhandleable());
                }
                off += len;
            }
            return Ok(None);
        }
        let gpa = p.parts[0].0;
        let n = usize::from(size);
        match self.env.write_ram(gpa, &bytes[..n]) {
            Ok(()) => Ok(None),
            Err(NotRam) => Ok(Some(MmioData {
                gpa,
                len: size,
                data: bytes,
            })),
        }
    }

    /// Reads a register, immediate or memory operand of `size` bytes.
    fn read(&mut self, o: Operand, size: u8) -> Result<u64, Outcome> {
        match o {
            Operand::Reg(r) => Ok(self.get_reg(r, size)),
            Operand::Imm(v) => Ok(truncate(v, size)),
            Operand::Mem(m) => {
                let ea = self.ea(&m);
                let p = self.locate(m.seg, ea, size, Intent::Read)?;
                self.load(&p, size)
            }
            Operand::None => Err(self.unhandleable()),
        }
    }

    /// A read-modify-write destination: the register, or the memory translated for writing
    /// (so a read-only page faults as a write, as on hardware) and its current value.
    fn read_rmw(&mut self, o: Operand, size: u8) -> Result<(Option<Pieces>, u64), Outcome> {
        match o {
            Operand::Mem(m) => {
                let ea = self.ea(&m);
                let p = self.locate(m.seg, ea, size, Intent::Write)?;
                let v = self.load(&p, size)?;
                Ok((Some(p), v))
            }
            o => Ok((None, self.read(o, size)?)),
        }
    }

    /// Writes back a read-modify-write destination.
    fn write_rmw(
        &mut self,
        o: Operand,
        p: Option<Pieces>,
        size: u8,
        v: u64,
    ) -> Result<Store, Outcome> {
        match (o, p) {
            (Operand::Reg(r), _) => {
                self.set_reg(r, size, v);
                Ok(None)
            }
            (Operand::Mem(_), Some(p)) => self.store(&p, size, v),
            _ => Err(self.unhandleable()),
        }
    }

    /// Writes a destination that is not read first.
    fn write(&mut self, o: Operand, size: u8, v: u64) -> Result<Store, Outcome> {
        match o {
            Operand::Mem(m) => {
                let ea = self.ea(&m);
                let p = self.locate(m.seg, ea, size, Intent::Write)?;
                self.store(&p, size, v)
            }
            o => self.write_rmw(o, None, size, v),
        }
    }

    fn exec(&mut self) -> Result<Store, Outcome> {
        let i = *self.insn();
        let size = i.op_size;
        match i.op {
            Op::Mov => {
                let v = self.read(i.src, size)?;
                self.write(i.dst, size, v)
            }
            Op::Movzx | Op::Movsx => {
                let mut v = self.read(i.src, i.src_size)?;
                if i.op == Op::Movsx {
                    v = truncate(sign_extend(v, i.src_size), size);
                }
                self.write(i.dst, size, v)
            }
            Op::Alu(AluOp::Cmp) | Op::Test => {
                let d = self.read(i.dst, size)?;
                let s = self.read(i.src, size)?;
                self.s.rflags = match i.op {
                    Op::Test => flags::test(size, d, s, self.s.rflags),
                    _ => flags::alu(AluOp::Cmp, size, d, s, self.s.rflags).1,
                };
                Ok(None)
            }
            Op::Alu(op) => {
                let (p, d) = self.read_rmw(i.dst, size)?;
                let s = self.read(i.src, size)?;
                let (r, f) = flags::alu(op, size, d, s, self.s.rflags);
                self.s.rflags = f;
                self.write_rmw(i.dst, p, size, r)
            }
            Op::Not | Op::Neg | Op::Inc | Op::Dec => {
                let (p, d) = self.read_rmw(i.dst, size)?;
                let r = match i.op {
                    Op::Not => truncate(!d, size),
                    op => {
                        let (r, f) = match op {
                            Op::Neg => flags::neg(size, d, self.s.rflags),
                            Op::Inc => flags::inc(size, d, self.s.rflags),
                            _ => flags::dec(size, d, self.s.rflags),
                        };
                        self.s.rflags = f;
                        r
                    }
                };
                self.write_rmw(i.dst, p, size, r)
            }
            Op::Xchg => self.xchg(&i),
            Op::Bit(b) => self.bit(&i, b),
            Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas => self.string(&i),
            Op::Movbe => {
                // em_movbe: #UD unless the guest's CPUID has MOVBE.
                if !self.opts.movbe {
                    return Err(Outcome::Exception(Exception::ud()));
                }
                let v = self.read(i.src, size)?;
                // A 16-bit load leaves the register's upper bits alone (set_reg merges).
                let swapped = match size {
                    2 => u64::from((v as u16).swap_bytes()),
                    4 => u64::from((v as u32).swap_bytes()),
                    _ => v.swap_bytes(),
                };
                self.write(i.dst, size, swapped)
            }
            Op::Rdpid if self.opts.trap_ud => {
                // em_rdpid: #UD unless the guest's CPUID has RDPID; the value is TSC_AUX.
                if !self.opts.rdpid {
                    return Err(Outcome::Exception(Exception::ud()));
                }
                let aux = self.s.msrs.tsc_aux;
                self.write(i.dst, size, aux)
            }
            Op::Vmcall | Op::Vmmcall if self.opts.trap_ud => self.hypercall(i.op),
            _ => Err(self.unhandleable()),
        }
    }

    /// em_hypercall after the decoder's checks: VMCALL is `Priv` (#GP(0) above CPL 0),
    /// VMMCALL `Prot` (#UD in real and virtual-8086 mode). Then `emulator_fix_hypercall`:
    /// without the quirk #UD; with it the 3 bytes at RIP become VMMCALL and the guest
    /// re-executes them (RIP stays, nothing else is written back).
    fn hypercall(&mut self, op: Op) -> Result<Store, Outcome> {
        if op == Op::Vmcall && self.cpl != 0 {
            return Err(Outcome::Exception(Exception::gp0()));
        }
        let mode = CpuMode::of(&self.s);
        if op == Op::Vmmcall && matches!(mode, CpuMode::Real | CpuMode::Vm86) {
            return Err(Outcome::Exception(Exception::ud()));
        }
        if !self.opts.fix_hypercall {
            return Err(Outcome::Exception(Exception::ud()));
        }
        // Upstream writes at `kvm_rip_read()` taken as a linear address (CS.base is not
        // added): the same as CS:RIP in 64-bit mode and for flat code segments.
        let la = crate::Gla(self.s.rip);
        let access = Access::write(self.cpl);
        let p = linear::translate_range(&self.s, self.cfg, self.env, la, VMMCALL.len(), access)
            .map_err(Outcome::Exception)?;
        self.advance = false;
        let mut v = [0u8; 8];
        v[..3].copy_from_slice(&VMMCALL);
        self.store(&p, 3, u64::from_le_bytes(v))
    }

    fn xchg(&mut self, i: &Insn) -> Result<Store, Outcome> {
        let size = i.op_size;
        // The register side is `src` for 86/87 (and either for the 9x forms).
        let (mem, reg) = match (i.dst, i.src) {
            (m @ Operand::Mem(_), Operand::Reg(r)) | (Operand::Reg(r), m @ Operand::Mem(_)) => {
                (m, r)
            }
            (Operand::Reg(a), Operand::Reg(b)) => {
                let va = self.get_reg(a, size);
                let vb = self.get_reg(b, size);
                self.set_reg(a, size, vb);
                self.set_reg(b, size, va);
                return Ok(None);
            }
            _ => return Err(self.unhandleable()),
        };
        let (p, old) = self.read_rmw(mem, size)?;
        let v = self.get_reg(reg, size);
        self.set_reg(reg, size, old);
        self.write_rmw(mem, p, size, v)
    }

    fn bit(&mut self, i: &Insn, b: BitOp) -> Result<Store, Outcome> {
        let size = i.op_size;
        let bits = 8 * u64::from(size);
        let mut dst = i.dst;
        let bit = match i.src {
            Operand::Imm(v) => v % bits,
            Operand::Reg(r) => {
                let off = sign_extend(self.get_reg(r, size), size) as i64;
                if let Operand::Mem(m) = &mut dst {
                    // A register bit offset addresses a bit string: move the operand by whole
                    // operand-sized units, signed.
                    let units = off.div_euclid(bits as i64);
                    m.disp = m.disp.wrapping_add(units.wrapping_mul(i64::from(size)));
                }
                off.rem_euclid(bits as i64) as u64
            }
            _ => return Err(self.unhandleable()),
        };
        let (p, v) = if b == BitOp::Bt {
            (None, self.read(dst, size)?)
        } else {
            self.read_rmw(dst, size)?
        };
        self.s.rflags = flags::bit_test(v, bit as u32, self.s.rflags);
        let mask = 1u64 << bit;
        let r = match b {
            BitOp::Bt => return Ok(None),
            BitOp::Bts => v | mask,
            BitOp::Btr => v & !mask,
            BitOp::Btc => v ^ mask,
        };
        self.write_rmw(dst, p, size, r)
    }

    /// MOVS/STOS/LODS/CMPS/SCAS, one element.
    fn string(&mut self, i: &Insn) -> Result<Store, Outcome> {
        let size = i.op_size;
        let asz = i.addr_size;
        let rcx = self.s.gpr(Gpr::Rcx);
        if i.rep.is_some() && truncate(rcx, asz) == 0 {
            return Ok(None);
        }
        let step = if self.s.rflags & flags::DF != 0 {
            (u64::from(size)).wrapping_neg()
        } else {
            u64::from(size)
        };
        let rsi = self.s.gpr(Gpr::Rsi);
        let rdi = self.s.gpr(Gpr::Rdi);
        let acc = Reg {
            gpr: Gpr::Rax,
            high_byte: false,
        };
        // The rSI side (a load) for all but STOS and SCAS, which use rAX.
        let v = match i.op {
            Op::Stos | Op::Scas => self.get_reg(acc, size),
            _ => {
                let p = self.locate(i.str_seg, truncate(rsi, asz), size, Intent::Read)?;
                self.load(&p, size)?
            }
        };
        // The ES:rDI side: a store (MOVS, STOS), a load to compare (CMPS, SCAS), or none.
        let store = match i.op {
            Op::Lods => {
                self.set_reg(acc, size, v);
                None
            }
            Op::Cmps | Op::Scas => {
                let p = self.locate(SegReg::Es, truncate(rdi, asz), size, Intent::Read)?;
                let d = self.load(&p, size)?;
                self.s.rflags = flags::alu(AluOp::Cmp, size, v, d, self.s.rflags).1;
                None
            }
            _ => {
                let p = self.locate(SegReg::Es, truncate(rdi, asz), size, Intent::Write)?;
                self.store(&p, size, v)?
            }
        };
        if !matches!(i.op, Op::Stos | Op::Scas) {
            self.s.set_gpr(Gpr::Rsi, add_in_width(rsi, step, asz));
        }
        if i.op != Op::Lods {
            self.s.set_gpr(Gpr::Rdi, add_in_width(rdi, step, asz));
        }
        if let Some(rep) = i.rep {
            let left = add_in_width(rcx, u64::MAX, asz);
            self.s.set_gpr(Gpr::Rcx, left);
            // REPE/REPNE end CMPS and SCAS on the first (mis)match, as upstream's
            // string_insn_completed(); the other string instructions ignore ZF.
            let zf = self.s.rflags & flags::ZF != 0;
            let stop = matches!(i.op, Op::Cmps | Op::Scas)
                && match rep {
                    Rep::Rep => !zf,
                    Rep::Repne => zf,
                };
            self.advance = truncate(left, asz) == 0 || stop;
        }
        Ok(store)
    }
}
