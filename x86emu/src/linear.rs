// SPDX-License-Identifier: GPL-2.0-only
//! From `seg:offset` to guest-physical pieces: segmentation (bases, limits, types, canonical
//! checks), paging through [`crate::walk`], and instruction fetch at CS:RIP.
//!
//! Segmentation follows upstream's `__linearize()`: in 64-bit mode only FS and GS have bases
//! and the linear address must be canonical; elsewhere the segment must be usable, writable for
//! writes (a code segment never is outside real mode), readable for reads, the offset inside the
//! (possibly expand-down) limit, and the linear address is 32 bits wide. A violation is #SS(0)
//! for SS-relative accesses and #GP(0) otherwise.

use x86::state::{CpuState, SegReg};

use crate::decode::{truncate, CodeSize, MAX_INSN_LEN};
use crate::walk::{self, Access, PagingRegs, WalkConfig, CR0_PE, CR4_LA57, EFER_LMA};
use crate::{Gla, Gpa, GuestPhys, NotRam};

/// #UD.
pub const UD_VECTOR: u8 = 6;
/// #SS.
pub const SS_VECTOR: u8 = 12;
/// #GP.
pub const GP_VECTOR: u8 = 13;
/// #PF.
pub const PF_VECTOR: u8 = 14;

/// RFLAGS.VM (virtual-8086 mode).
const RFLAGS_VM: u64 = 1 << 17;

/// An exception the guest must receive instead of the instruction completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The vector.
    pub vector: u8,
    /// The error code, for vectors that push one.
    pub error_code: Option<u32>,
    /// For #PF: the faulting linear address, to be written to CR2 on injection.
    pub cr2: Option<u64>,
}

impl Exception {
    /// #GP(0).
    pub const fn gp0() -> Exception {
        Exception {
            vector: GP_VECTOR,
            error_code: Some(0),
            cr2: None,
        }
    }

    /// #SS(0).
    pub const fn ss0() -> Exception {
        Exception {
            vector: SS_VECTOR,
            error_code: Some(0),
            cr2: None,
        }
    }

    /// #UD.
    pub const fn ud() -> Exception {
        Exception {
            vector: UD_VECTOR,
            error_code: None,
            cr2: None,
        }
    }

    /// The #PF for a failed walk.
    pub fn page_fault(pf: walk::PageFault) -> Exception {
        Exception {
            vector: PF_VECTOR,
            error_code: Some(pf.error_code),
            cr2: Some(pf.addr.0),
        }
    }

    /// The segmentation fault for an access through `seg`: #SS(0) for SS, else #GP(0).
    pub fn for_segment(seg: SegReg) -> Exception {
        if seg == SegReg::Ss {
            Exception::ss0()
        } else {
            Exception::gp0()
        }
    }
}

/// The processor mode, as far as decoding and segmentation care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real-address mode (CR0.PE clear).
    Real,
    /// Virtual-8086 mode (RFLAGS.VM).
    Vm86,
    /// Protected mode, or compatibility mode (long mode with a CS without L): 16- or 32-bit
    /// code by CS.D, legacy segmentation.
    Protected,
    /// 64-bit mode (EFER.LMA and CS.L).
    Long64,
}

impl CpuMode {
    /// The mode of a vCPU in `state`.
    pub fn of(state: &CpuState) -> CpuMode {
        if state.cr0 & CR0_PE == 0 {
            CpuMode::Real
        } else if state.efer & EFER_LMA != 0 && state.seg(SegReg::Cs).l {
            CpuMode::Long64
        } else if state.rflags & RFLAGS_VM != 0 && state.efer & EFER_LMA == 0 {
            CpuMode::Vm86
        } else {
            CpuMode::Protected
        }
    }
}

/// The default operand/address size of the code the vCPU executes.
pub fn code_size(state: &CpuState) -> CodeSize {
    match CpuMode::of(state) {
        CpuMode::Real | CpuMode::Vm86 => CodeSize::Bits16,
        CpuMode::Long64 => CodeSize::Bits64,
        CpuMode::Protected if state.seg(SegReg::Cs).db => CodeSize::Bits32,
        CpuMode::Protected => CodeSize::Bits16,
    }
}

/// The current privilege level: 0 in real mode, 3 in virtual-8086 mode, else SS.DPL (what
/// SVM's VMCB CPL field mirrors; AMD defines CPL as SS.DPL).
pub fn cpl(state: &CpuState) -> u8 {
    match CpuMode::of(state) {
        CpuMode::Real => 0,
        CpuMode::Vm86 => 3,
        _ => state.seg(SegReg::Ss).dpl & 3,
    }
}

/// How many linear-address bits are implemented in 64-bit mode (48, or 57 with LA57).
fn va_bits(state: &CpuState) -> u32 {
    if state.cr4 & CR4_LA57 != 0 {
        57
    } else {
        48
    }
}

fn is_canonical(la: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((la << shift) as i64) >> shift) as u64 == la
}

/// What the access does with the memory (for segment type checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A data read.
    Read,
    /// A data write or read-modify-write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// Segmentation: the linear address of `seg:ea` for an access of `size` bytes, or the #GP/#SS.
/// `ea` must already be truncated to the address size.
pub fn linearize(
    state: &CpuState,
    seg: SegReg,
    ea: u64,
    size: u64,
    intent: Intent,
) -> Result<Gla, Exception> {
    let mode = CpuMode::of(state);
    let desc = state.seg(seg);
    if mode == CpuMode::Long64 {
        let base = if matches!(seg, SegReg::Fs | SegReg::Gs) {
            desc.base
        } else {
            0
        };
        let la = base.wrapping_add(ea);
        let bits = va_bits(state);
        let last = la.wrapping_add(size.saturating_sub(1));
        if !is_canonical(la, bits) || !is_canonical(last, bits) {
            return Err(Exception::for_segment(seg));
        }
        return Ok(Gla(la));
    }
    let bad = Exception::for_segment(seg);
    if desc.unusable && mode != CpuMode::Real {
        return Err(bad);
    }
    let code = desc.type_ & 8 != 0;
    let rw = desc.type_ & 2 != 0;
    // Code segments are never writable in protected mode; data segments need W.
    if intent == Intent::Write && ((mode != CpuMode::Real && code) || !rw) {
        return Err(bad);
    }
    // Execute-only code segments cannot be read.
    if intent == Intent::Read && code && !rw {
        return Err(bad);
    }
    let mut lim = u64::from(desc.limit);
    if !code && desc.type_ & 4 != 0 {
        // Expand-down: valid offsets are above the limit, up to 64K or 4G by D/B.
        if ea <= lim {
            return Err(bad);
        }
        lim = if desc.db { 0xffff_ffff } else { 0xffff };
    }
    if ea > lim || size > lim + 1 - ea {
        return Err(bad);
    }
    Ok(Gla(desc.base.wrapping_add(ea) & 0xffff_ffff))
}

/// Up to two guest-physical pieces of an access that may cross a page boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pieces {
    /// (address, length) of each piece; the second has length 0 if the access fits one page.
    pub parts: [(Gpa, usize); 2],
}

impl Pieces {
    /// The pieces actually used.
    pub fn iter(&self) -> impl Iterator<Item = (Gpa, usize)> + '_ {
        self.parts.iter().copied().filter(|p| p.1 != 0)
    }

    /// Whether the access spans two pages.
    pub fn is_split(&self) -> bool {
        self.parts[1].1 != 0
    }
}

/// Translates the linear range `[la, la + len)` (len <= 4096) for `access`, page by page.
pub fn translate_range(
    state: &CpuState,
    cfg: &WalkConfig,
    mem: &mut impl GuestPhys,
    la: Gla,
    len: usize,
    access: Access,
) -> Result<Pieces, Exception> {
    let regs = PagingRegs::from_state(state);
    let first = len.min(4096 - la.page_offset() as usize);
    let t0 = walk::walk(&regs, cfg, mem, la, access).map_err(Exception::page_fault)?;
    let mut parts = [(t0.gpa, first), (Gpa(0), 0)];
    if first < len {
        let next = Gla(mask_linear(state, la.0.wrapping_add(first as u64)));
        let t1 = walk::walk(&regs, cfg, mem, next, access).map_err(Exception::page_fault)?;
        parts[1] = (t1.gpa, len - first);
    }
    Ok(Pieces { parts })
}

/// Linear addresses wrap at 4 GiB outside 64-bit mode.
fn mask_linear(state: &CpuState, la: u64) -> u64 {
    if CpuMode::of(state) == CpuMode::Long64 {
        la
    } else {
        la & 0xffff_ffff
    }
}

/// The bytes at CS:RIP, as far as they could be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes (the first `len` are valid).
    pub bytes: [u8; MAX_INSN_LEN],
    /// How many were fetched.
    pub len: usize,
    /// Why the fetch stopped short of 15 bytes, if it did: the exception hardware raises if the
    /// instruction really extends that far (#PF on the next page, #GP at the CS limit).
    pub stop: Option<Exception>,
}

/// Why no byte at all could be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The first byte already faults.
    Exception(Exception),
    /// The code is not in guest RAM (executing from MMIO): emulation failure, as upstream.
    NotRam,
}

/// Fetches up to 15 instruction bytes at CS:RIP through segmentation and the guest's paging.
pub fn fetch(
    state: &CpuState,
    cfg: &WalkConfig,
    mem: &mut impl crate::emulate::EmuEnv,
) -> Result<Fetched, FetchError> {
    let mode = CpuMode::of(state);
    let access = Access::fetch(cpl(state));
    let mut f = Fetched {
        bytes: [0; MAX_INSN_LEN],
        len: 0,
        stop: None,
    };
    // How far the segment lets us read.
    let (start, avail) = if mode == CpuMode::Long64 {
        if !is_canonical(state.rip, va_bits(state)) {
            return Err(FetchError::Exception(Exception::gp0()));
        }
        (state.rip, MAX_INSN_LEN)
    } else {
        let eip = state.rip & 0xffff_ffff;
        let cs = state.seg(SegReg::Cs);
        let lim = u64::from(cs.limit);
        if eip > lim {
            return Err(FetchError::Exception(Exception::gp0()));
        }
        let avail = (lim - eip + 1).min(MAX_INSN_LEN as u64) as usize;
        if avail < MAX_INSN_LEN {
            f.stop = Some(Exception::gp0());
        }
        (cs.base.wrapping_add(eip) & 0xffff_ffff, avail)
    };
    let regs = PagingRegs::from_state(state);
    while f.len < avail {
        let la = Gla(mask_linear(state, start.wrapping_add(f.len as u64)));
        let chunk = (avail - f.len).min(4096 - la.page_offset() as usize);
        let t = match walk::walk(&regs, cfg, mem, la, access) {
            Ok(t) => t,
            Err(pf) if f.len == 0 => return Err(FetchError::Exception(Exception::page_fault(pf))),
            Err(pf) => {
                f.stop = Some(Exception::page_fault(pf));
                break;
            }
        };
        match mem.read_ram(t.gpa, &mut f.bytes[f.len..f.len + chunk]) {
            Ok(()) => f.len += chunk,
            Err(NotRam) if f.len == 0 => return Err(FetchError::NotRam),
            // The rest is MMIO: decode what we have; needing more is a failure below.
            Err(NotRam) => break,
        }
    }
    Ok(f)
}

/// Adds `inc` to `v` in `size`-byte arithmetic, leaving the bits above untouched (how a string
/// instruction steps rSI/rDI/rCX with a 16- or 32-bit address size, as upstream's
/// `register_address_increment()`).
pub(crate) fn add_in_width(v: u64, inc: u64, size: u8) -> u64 {
    if size >= 8 {
        v.wrapping_add(inc)
    } else {
        let m = truncate(!0, size);
        (v & !m) | (v.wrapping_add(inc) & m)
    }
}
