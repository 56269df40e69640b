// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_GET/SET_REGS`, `KVM_GET/SET_SREGS` and `SREGS2` on [`CpuState`], the power-on state,
//! and the rules upstream applies (`arch/x86/kvm/x86.c`: `__set_regs`, `__set_sregs_common`,
//! `kvm_is_valid_sregs`, `kvm_is_valid_cr0/cr4`, `kvm_valid_efer`, `kvm_apic_set_base`;
//! `svm/svm.c`: `init_vmcb`, `svm_get_segment`/`svm_set_segment`).
//!
//! The segment conversions reproduce what an SVM host reports, because that is what this module
//! runs on and what userspace sees from upstream `kvm_amd`: a VMCB segment has no "unusable"
//! bit (unusable = not present), the G bit is synthesised from the limit, TR always reads busy,
//! the data segments read accessed, and SS.DPL is the CPL.

use crate::cpuid::GuestCpu;
use crate::errno::{Errno, Result};
use crate::state::{CpuState, DescTable, Gpr, SegReg, Segment};
use crate::uapi::{
    mp_state, KvmDtable, KvmRegs, KvmSegment, KvmSregs, KvmSregs2, KVM_NR_INTERRUPTS,
    KVM_SREGS2_FLAGS_PDPTRS_VALID,
};

/// CR0 bits.
#[allow(missing_docs)]
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
#[allow(missing_docs)]
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
    pub const LAM_SUP: u64 = 1 << 28;
}

/// EFER bits.
#[allow(missing_docs)]
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NX: u64 = 1 << 11;
    pub const SVME: u64 = 1 << 12;
    pub const LMSLE: u64 = 1 << 13;
    pub const FFXSR: u64 = 1 << 14;
    pub const AUTOIBRS: u64 = 1 << 21;
}

/// `X86_EFLAGS_FIXED`: RFLAGS bit 1 always reads 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// `DR6_ACTIVE_LOW`: DR6 at RESET.
pub const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// `DR7_FIXED_1`: DR7 at RESET.
pub const DR7_FIXED_1: u64 = 0x400;
/// `MSR_IA32_CR_PAT_DEFAULT`.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// `APIC_DEFAULT_PHYS_BASE`.
pub const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;
/// `MSR_IA32_APICBASE_BSP`.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `X2APIC_ENABLE` (EXTD).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `MSR_IA32_APICBASE_ENABLE`.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `XFEATURE_MASK_FP`: XCR0 at RESET.
pub const XCR0_FP: u64 = 1;

/// What the module (not the guest's CPUID) allows, upstream's `cr4_reserved_bits` and
/// `efer_reserved_bits` computed at load from `kvm_cpu_caps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleLimits {
    /// CR4 bits no guest may set.
    pub cr4_reserved: u64,
    /// EFER bits no guest may set.
    pub efer_reserved: u64,
}

/// The architectural power-on state of a vCPU, as upstream's `kvm_vcpu_reset(vcpu, false)` with
/// SVM's `svm_vcpu_reset`/`init_vmcb` leaves it right after `KVM_CREATE_VCPU`.
///
/// `bsp` says whether this vCPU is the VM's boot vCPU (APIC_BASE.BSP); `guest` is the vCPU's
/// CPUID model, which at creation has no CPUID.1 entry, so RDX is 0x600 as upstream's
/// fallback family/model/stepping; `msr_caps` gives the feature MSRs' initial values.
pub fn reset(bsp: bool, guest: &GuestCpu, msr_caps: &crate::msr::MsrCaps) -> CpuState {
    let mut s = CpuState::default();
    // All GPRs but RDX are zero; RDX holds the family/model/stepping.
    s.set_gpr(Gpr::Rdx, u64::from(guest.signature.unwrap_or(0x600)));
    s.rip = 0xfff0;
    s.rflags = RFLAGS_FIXED;
    // init_seg(): a present, writable data segment (SVM attrib P|S|W: type 2).
    let data = Segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_: 2,
        present: true,
        dpl: 0,
        db: false,
        s: true,
        l: false,
        g: false,
        avl: false,
        unusable: false,
    };
    for r in [SegReg::Es, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        *s.seg_mut(r) = data;
    }
    // CS: executable/readable code, selector 0xf000, base 0xffff0000.
    *s.seg_mut(SegReg::Cs) = Segment {
        base: 0xffff_0000,
        selector: 0xf000,
        type_: 0xa,
        ..data
    };
    // init_sys_seg(): LDT (type 2) and a busy 16-bit TSS (type 3), present, not S.
    *s.seg_mut(SegReg::Ldtr) = Segment {
        type_: 2,
        s: false,
        ..data
    };
    *s.seg_mut(SegReg::Tr) = Segment {
        type_: 3,
        s: false,
        ..data
    };
    s.gdt = DescTable {
        base: 0,
        limit: 0xffff,
    };
    s.idt = s.gdt;
    // CR0: ET, plus CD and NW at RESET.
    s.cr0 = cr0::ET | cr0::CD | cr0::NW;
    s.dr6 = DR6_ACTIVE_LOW;
    s.dr7 = DR7_FIXED_1;
    s.xcr0 = XCR0_FP;
    s.msrs.pat = PAT_DEFAULT;
    // kvm_lapic_reset() sets APIC_BASE even without an in-kernel LAPIC.
    s.apic_base = APIC_DEFAULT_PHYS_BASE | APIC_BASE_ENABLE | if bsp { APIC_BASE_BSP } else { 0 };
    // Without an in-kernel irqchip every vCPU starts RUNNABLE (kvm_arch_vcpu_create).
    s.mp_state = mp_state::RUNNABLE;
    s.msr = crate::msr::MsrState::reset(msr_caps);
    s
}

/// `KVM_GET_REGS` (upstream `__get_regs`).
pub fn get_regs(s: &CpuState) -> KvmRegs {
    KvmRegs {
        rax: s.gpr(Gpr::Rax),
        rbx: s.gpr(Gpr::Rbx),
        rcx: s.gpr(Gpr::Rcx),
        rdx: s.gpr(Gpr::Rdx),
        rsi: s.gpr(Gpr::Rsi),
        rdi: s.gpr(Gpr::Rdi),
        rsp: s.gpr(Gpr::Rsp),
        rbp: s.gpr(Gpr::Rbp),
        r8: s.gpr(Gpr::R8),
        r9: s.gpr(Gpr::R9),
        r10: s.gpr(Gpr::R10),
        r11: s.gpr(Gpr::R11),
        r12: s.gpr(Gpr::R12),
        r13: s.gpr(Gpr::R13),
        r14: s.gpr(Gpr::R14),
        r15: s.gpr(Gpr::R15),
        rip: s.rip,
        rflags: s.rflags,
    }
}

/// `KVM_SET_REGS` (upstream `__set_regs`): no rule refuses a value (a non-canonical RIP makes
/// the next entry fail instead); RFLAGS bit 1 is forced, and a pending (not yet delivered)
/// exception is dropped, as the new RIP no longer belongs to it.
pub fn set_regs(s: &mut CpuState, r: &KvmRegs) {
    let gprs = [
        (Gpr::Rax, r.rax),
        (Gpr::Rbx, r.rbx),
        (Gpr::Rcx, r.rcx),
        (Gpr::Rdx, r.rdx),
        (Gpr::Rsi, r.rsi),
        (Gpr::Rdi, r.rdi),
        (Gpr::Rsp, r.rsp),
        (Gpr::Rbp, r.rbp),
        (Gpr::R8, r.r8),
        (Gpr::R9, r.r9),
        (Gpr::R10, r.r10),
        (Gpr::R11, r.r11),
        (Gpr::R12, r.r12),
        (Gpr::R13, r.r13),
        (Gpr::R14, r.r14),
        (Gpr::R15, r.r15),
    ];
    for (g, v) in gprs {
        s.set_gpr(g, v);
    }
    s.rip = r.rip;
    s.rflags = r.rflags | RFLAGS_FIXED;
    s.events.exception.pending = false;
}

/// A segment as `svm_get_segment` reports it.
fn get_segment(s: &CpuState, r: SegReg) -> KvmSegment {
    let g = s.seg(r);
    let mut k = KvmSegment {
        base: g.base,
        limit: g.limit,
        selector: g.selector,
        type_: g.type_ & 0xf,
        present: g.present as u8,
        dpl: g.dpl & 3,
        db: g.db as u8,
        s: g.s as u8,
        l: g.l as u8,
        // The G bit is not observed by the CPU on SVM: synthesise a legal one.
        g: (g.limit > 0xfffff) as u8,
        avl: g.avl as u8,
        // The VMCB has no unusable bit: "not present" stands for it.
        unusable: (!g.present) as u8,
        padding: 0,
    };
    match r {
        // The busy flag of TR is always reported.
        SegReg::Tr => k.type_ |= 2,
        // The cached accessed bit of a usable data segment always reads 1.
        SegReg::Ds | SegReg::Es | SegReg::Fs | SegReg::Gs if k.unusable == 0 => k.type_ |= 1,
        // An unusable SS reads with D/B clear.
        SegReg::Ss if k.unusable != 0 => k.db = 0,
        _ => {}
    }
    k
}

/// A segment as `svm_set_segment` stores it: an unusable segment becomes not present; SS.DPL
/// becomes the CPL.
fn set_segment(s: &mut CpuState, r: SegReg, k: &KvmSegment) {
    *s.seg_mut(r) = Segment {
        base: k.base,
        limit: k.limit,
        selector: k.selector,
        type_: k.type_ & 0xf,
        present: k.present & 1 != 0 && k.unusable == 0,
        dpl: k.dpl & 3,
        db: k.db & 1 != 0,
        s: k.s & 1 != 0,
        l: k.l & 1 != 0,
        g: k.g & 1 != 0,
        avl: k.avl & 1 != 0,
        unusable: k.present & 1 == 0 || k.unusable != 0,
    };
}

fn dtable(d: &DescTable) -> KvmDtable {
    KvmDtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

/// The segments, descriptor tables and control registers of `KVM_GET_SREGS`, shared with
/// `SREGS2` (upstream `__get_sregs_common`); the interrupt bitmap is left zero.
pub fn get_sregs(s: &CpuState) -> KvmSregs {
    let mut k = KvmSregs {
        cs: get_segment(s, SegReg::Cs),
        ds: get_segment(s, SegReg::Ds),
        es: get_segment(s, SegReg::Es),
        fs: get_segment(s, SegReg::Fs),
        gs: get_segment(s, SegReg::Gs),
        ss: get_segment(s, SegReg::Ss),
        tr: get_segment(s, SegReg::Tr),
        ldt: get_segment(s, SegReg::Ldtr),
        gdt: dtable(&s.gdt),
        idt: dtable(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: [0; KVM_NR_INTERRUPTS / 64],
    };
    // An external interrupt being injected shows as its bit (upstream `__get_sregs`).
    let i = s.events.interrupt;
    if i.injected && !i.soft {
        k.interrupt_bitmap[usize::from(i.nr) / 64] |= 1 << (i.nr % 64);
    }
    k
}

/// `kvm_is_valid_cr0` (SVM accepts every CR0 the generic rules accept).
pub fn is_valid_cr0(cr0: u64) -> bool {
    if cr0 >> 32 != 0 {
        return false;
    }
    if cr0 & cr0::NW != 0 && cr0 & cr0::CD == 0 {
        return false;
    }
    if cr0 & cr0::PG != 0 && cr0 & cr0::PE == 0 {
        return false;
    }
    true
}

/// `kvm_is_valid_cr4`: neither the module nor the guest's CPUID reserves a set bit (SVM adds no
/// rule of its own).
pub fn is_valid_cr4(cr4: u64, limits: &ModuleLimits, guest: &GuestCpu) -> bool {
    cr4 & limits.cr4_reserved == 0 && cr4 & guest.cr4_guest_rsvd == 0
}

/// `kvm_valid_efer`: the module supports the bits, and the guest's CPUID has their features.
pub fn is_valid_efer(v: u64, limits: &ModuleLimits, guest: &GuestCpu) -> bool {
    if v & limits.efer_reserved != 0 {
        return false;
    }
    is_valid_efer_for_guest(v, guest)
}

/// `__kvm_valid_efer`: each EFER feature bit needs the guest's CPUID feature.
pub fn is_valid_efer_for_guest(v: u64, guest: &GuestCpu) -> bool {
    !((v & efer::AUTOIBRS != 0 && !guest.autoibrs)
        || (v & efer::FFXSR != 0 && !guest.fxsr_opt)
        || (v & efer::SVME != 0 && !guest.svm)
        || (v & (efer::LME | efer::LMA) != 0 && !guest.lm)
        || (v & efer::NX != 0 && !guest.nx))
}

/// The LAPIC modes an APIC_BASE value selects (upstream `kvm_apic_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN clear, EXTD clear.
    Disabled,
    /// EN set, EXTD clear.
    Xapic,
    /// EN and EXTD set.
    X2apic,
    /// EXTD without EN.
    Invalid,
}

/// The mode of an APIC_BASE value.
pub fn apic_mode(v: u64) -> ApicMode {
    match (v & APIC_BASE_ENABLE != 0, v & APIC_BASE_EXTD != 0) {
        (false, false) => ApicMode::Disabled,
        (true, false) => ApicMode::Xapic,
        (true, true) => ApicMode::X2apic,
        (false, true) => ApicMode::Invalid,
    }
}

/// `kvm_apic_set_base`'s checks: no bit at or above MAXPHYADDR, none of bits 0-7 and 9, EXTD
/// only with x2APIC in the guest's CPUID, never EXTD without EN; a guest write (not
/// `host_initiated`) may not leave x2APIC for xAPIC nor enter x2APIC from disabled.
pub fn check_apic_base(old: u64, new: u64, guest: &GuestCpu, host_initiated: bool) -> Result {
    let reserved =
        guest.reserved_gpa_bits() | 0x2ff | if guest.x2apic { 0 } else { APIC_BASE_EXTD };
    if new & reserved != 0 || apic_mode(new) == ApicMode::Invalid {
        return Err(Errno::Einval);
    }
    if !host_initiated {
        let (o, n) = (apic_mode(old), apic_mode(new));
        if (o == ApicMode::X2apic && n == ApicMode::Xapic)
            || (o == ApicMode::Disabled && n == ApicMode::X2apic)
        {
            return Err(Errno::Einval);
        }
    }
    Ok(())
}

/// `kvm_is_valid_sregs`: the paging mode the values describe must be consistent, and CR4, CR0
/// and EFER valid.
fn is_valid_sregs(k: &KvmSregs, limits: &ModuleLimits, guest: &GuestCpu) -> bool {
    if k.efer & efer::LME != 0 && k.cr0 & cr0::PG != 0 {
        // 64-bit paging: CR4.PAE and EFER.LMA must be set, CR3 a legal GPA.
        if k.cr4 & cr4::PAE == 0 || k.efer & efer::LMA == 0 {
            return false;
        }
        if !guest.is_legal_gpa(k.cr3) {
            return false;
        }
    } else if k.efer & efer::LMA != 0 || k.cs.l != 0 {
        // Not in long mode: no LMA, no 64-bit code segment.
        return false;
    }
    is_valid_cr4(k.cr4, limits, guest)
        && is_valid_cr0(k.cr0)
        && is_valid_efer(k.efer, limits, guest)
}

/// What a successful `KVM_SET_SREGS`/`SREGS2` changed that the caller must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SregsEffects {
    /// CR0, CR3, CR4 or EFER changed: the guest's paging mode or root may differ (upstream
    /// resets the MMU context and flushes the guest TLB).
    pub mmu_reset: bool,
    /// CR4 or APIC_BASE changed: the CPUID bits that mirror them must be refreshed
    /// ([`crate::cpuid::update_runtime`]).
    pub cpuid_runtime: bool,
}

/// Upstream `__set_sregs_common`: everything is checked before anything is written, so a
/// refused value leaves the state untouched (`EINVAL`). `bsp` says whether this is the boot
/// vCPU (older userspace relies on a BSP set to the reset CS:IP in real mode becoming
/// runnable).
fn set_sregs_common(
    s: &mut CpuState,
    k: &KvmSregs,
    limits: &ModuleLimits,
    guest: &GuestCpu,
    bsp: bool,
) -> Result<SregsEffects> {
    if !is_valid_sregs(k, limits, guest) {
        return Err(Errno::Einval);
    }
    check_apic_base(s.apic_base, k.apic_base, guest, true)?;
    let fx = SregsEffects {
        mmu_reset: s.cr3 != k.cr3 || s.efer != k.efer || s.cr0 != k.cr0 || s.cr4 != k.cr4,
        cpuid_runtime: s.cr4 != k.cr4 || s.apic_base != k.apic_base,
    };
    s.apic_base = k.apic_base;
    s.idt = DescTable {
        base: k.idt.base,
        limit: k.idt.limit,
    };
    s.gdt = DescTable {
        base: k.gdt.base,
        limit: k.gdt.limit,
    };
    s.cr2 = k.cr2;
    s.cr3 = k.cr3;
    s.efer = k.efer;
    // The backend's set_cr0/set_cr4 take the value as is (kvm_read_cr0 returns it).
    s.cr0 = k.cr0;
    s.cr4 = k.cr4;
    let segs = [
        (SegReg::Cs, &k.cs),
        (SegReg::Ds, &k.ds),
        (SegReg::Es, &k.es),
        (SegReg::Fs, &k.fs),
        (SegReg::Gs, &k.gs),
        (SegReg::Ss, &k.ss),
        (SegReg::Tr, &k.tr),
        (SegReg::Ldtr, &k.ldt),
    ];
    for (r, seg) in segs {
        set_segment(s, r, seg);
    }
    // kvm_set_cr8: a value with reserved bits is ignored (the return value is not checked).
    if k.cr8 & !0xf == 0 {
        s.cr8 = k.cr8;
    }
    if bsp
        && s.rip == 0xfff0
        && k.cs.selector == 0xf000
        && k.cs.base == 0xffff_0000
        && s.cr0 & cr0::PE == 0
    {
        s.mp_state = mp_state::RUNNABLE;
    }
    Ok(fx)
}

/// `KVM_SET_SREGS` (upstream `__set_sregs`): the common part, then the interrupt bitmap's
/// lowest set bit, if any, becomes the external interrupt being injected.
pub fn set_sregs(
    s: &mut CpuState,
    k: &KvmSregs,
    limits: &ModuleLimits,
    guest: &GuestCpu,
    bsp: bool,
) -> Result<SregsEffects> {
    let fx = set_sregs_common(s, k, limits, guest, bsp)?;
    if let Some(vec) = first_bit(&k.interrupt_bitmap) {
        s.events.interrupt = crate::state::QueuedInterrupt {
            injected: true,
            nr: vec,
            soft: false,
        };
    }
    Ok(fx)
}

fn first_bit(bitmap: &[u64; KVM_NR_INTERRUPTS / 64]) -> Option<u8> {
    bitmap
        .iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| (i * 64 + w.trailing_zeros() as usize) as u8)
}

/// Whether the state uses PAE paging (CR0.PG, CR4.PAE, not long mode): the mode with PDPTRs.
pub fn is_pae_paging(s: &CpuState) -> bool {
    pae_paging(s.cr0, s.cr4, s.efer)
}

/// Whether these CR0, CR4 and EFER values select PAE paging (the rule of [`is_pae_paging`],
/// also applied to the values `KVM_SET_SREGS2` brings before they are stored).
fn pae_paging(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & cr0::PG != 0 && cr4 & cr4::PAE != 0 && efer & efer::LMA == 0
}

/// A `kvm_sregs`-family value (`KvmSregs` or `KvmSregs2`) with the fields the two structures
/// share (upstream's `__get_sregs_common`/`__set_sregs_common` part) copied from `$from`, and
/// each structure's own fields as given.
macro_rules! sregs_with_common {
    ($ty:ident, $from:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let k = $from;
        $ty {
            cs: k.cs,
            ds: k.ds,
            es: k.es,
            fs: k.fs,
            gs: k.gs,
            ss: k.ss,
            tr: k.tr,
            ldt: k.ldt,
            gdt: k.gdt,
            idt: k.idt,
            cr0: k.cr0,
            cr2: k.cr2,
            cr3: k.cr3,
            cr4: k.cr4,
            cr8: k.cr8,
            efer: k.efer,
            apic_base: k.apic_base,
            $($field: $value),*
        }
    }};
}

fn sregs2_as_sregs(k: &KvmSregs2) -> KvmSregs {
    sregs_with_common!(KvmSregs, k, { interrupt_bitmap: [0; KVM_NR_INTERRUPTS / 64] })
}

/// `KVM_GET_SREGS2` (upstream `kvm_vcpu_ioctl_x86_get_sregs2`): the common fields, and in PAE
/// paging the PDPTRs with `KVM_SREGS2_FLAGS_PDPTRS_VALID`. `pdptrs` reads the four PDPTEs the
/// guest's CR3 points to (None if the guest memory cannot be read: the flag stays clear).
pub fn get_sregs2(s: &CpuState, pdptrs: impl FnOnce(u64) -> Option<[u64; 4]>) -> KvmSregs2 {
    let mut out = sregs_with_common!(KvmSregs2, get_sregs(s), { flags: 0, pdptrs: [0; 4] });
    if is_pae_paging(s) {
        if let Some(p) = pdptrs(s.cr3) {
            out.pdptrs = p;
            out.flags |= KVM_SREGS2_FLAGS_PDPTRS_VALID;
        }
    }
    out
}

/// `KVM_SET_SREGS2` (upstream `kvm_vcpu_ioctl_x86_set_sregs2`): unknown flags, or PDPTRs given
/// for a mode without them, are `EINVAL`; then the common part. Returns the PDPTRs to use
/// (userspace's, when it gave them) with the effects.
pub fn set_sregs2(
    s: &mut CpuState,
    k: &KvmSregs2,
    limits: &ModuleLimits,
    guest: &GuestCpu,
    bsp: bool,
) -> Result<(SregsEffects, Option<[u64; 4]>)> {
    if k.flags & !KVM_SREGS2_FLAGS_PDPTRS_VALID != 0 {
        return Err(Errno::Einval);
    }
    let valid_pdptrs = k.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID != 0;
    let pae = pae_paging(k.cr0, k.cr4, k.efer);
    if valid_pdptrs && !pae {
        return Err(Errno::Einval);
    }
    let mut fx = set_sregs_common(s, &sregs2_as_sregs(k), limits, guest, bsp)?;
    if valid_pdptrs {
        fx.mmu_reset = true;
        return Ok((fx, Some(k.pdptrs)));
    }
    Ok((fx, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ModuleLimits = ModuleLimits {
        // What `-cpu max` under SVM gives: no VMXE, LA57, PKE, LAM; SMXE always reserved.
        cr4_reserved: crate::cpuid::CR4_RESERVED_BITS
            | cr4::VMXE
            | cr4::LA57
            | cr4::PKE
            | cr4::LAM_SUP,
        efer_reserved: !(efer::SCE | efer::LME | efer::LMA | efer::NX | efer::FFXSR),
    };

    const MSR_CAPS: crate::msr::MsrCaps = crate::msr::MsrCaps {
        limits: LIMITS,
        tsc_aux: true,
        arch_capabilities: 0,
        de_cfg: 0,
        host_ucode_rev: 0,
        feat_ctl: true,
        spec_ctrl: true,
    };

    fn long_mode_guest() -> GuestCpu {
        GuestCpu {
            lm: true,
            nx: true,
            maxphyaddr: 40,
            ..GuestCpu::default()
        }
    }

    #[test]
    fn reset_state_is_upstreams() {
        let s = reset(true, &GuestCpu::default(), &MSR_CAPS);
        let r = get_regs(&s);
        assert_eq!(r.rip, 0xfff0);
        assert_eq!(r.rflags, 2);
        assert_eq!(r.rdx, 0x600);
        assert_eq!((r.rax, r.rsp), (0, 0));
        let k = get_sregs(&s);
        assert_eq!(
            (k.cs.selector, k.cs.base, k.cs.limit),
            (0xf000, 0xffff_0000, 0xffff)
        );
        assert_eq!(
            (k.cs.type_, k.cs.s, k.cs.present, k.cs.g),
            (0xb & 0xa, 1, 1, 0)
        );
        // Data segments read accessed (type 3), SS as stored (type 2).
        assert_eq!(k.ds.type_, 3);
        assert_eq!(k.ss.type_, 2);
        assert_eq!((k.tr.type_, k.tr.s), (3, 0));
        assert_eq!((k.ldt.type_, k.ldt.s, k.ldt.present), (2, 0, 1));
        assert_eq!((k.gdt.limit, k.idt.limit), (0xffff, 0xffff));
        assert_eq!(k.cr0, 0x6000_0010);
        assert_eq!((k.cr3, k.cr4, k.efer), (0, 0, 0));
        assert_eq!(k.apic_base, 0xfee0_0900);
        assert_eq!(
            reset(false, &GuestCpu::default(), &MSR_CAPS).apic_base,
            0xfee0_0800
        );
        assert_eq!(
            (s.dr6, s.dr7, s.xcr0, s.msrs.pat),
            (0xffff_0ff0, 0x400, 1, PAT_DEFAULT)
        );
        let g = GuestCpu {
            signature: Some(0x00a0_0f11),
            ..GuestCpu::default()
        };
        assert_eq!(reset(true, &g, &MSR_CAPS).gpr(Gpr::Rdx), 0x00a0_0f11);
    }

    #[test]
    fn regs_round_trip_and_fixed_bit() {
        let mut s = reset(true, &GuestCpu::default(), &MSR_CAPS);
        let mut r = KvmRegs::default();
        for (i, v) in [
            &mut r.rax, &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rsp,
            &mut r.rbp, &mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13,
            &mut r.r14, &mut r.r15, &mut r.rip,
        ]
        .into_iter()
        .enumerate()
        {
            *v = 0x1111_0000 + i as u64;
        }
        r.rflags = 0x200;
        s.events.exception.pending = true;
        set_regs(&mut s, &r);
        let got = get_regs(&s);
        assert_eq!(got, KvmRegs { rflags: 0x202, ..r });
        assert_eq!(s.gpr(Gpr::Rbx), 0x1111_0001);
        assert_eq!(s.gpr(Gpr::Rcx), 0x1111_0002);
        assert!(!s.events.exception.pending);
        // A non-canonical RIP is stored (the entry fails, not the ioctl).
        set_regs(
            &mut s,
            &KvmRegs {
                rip: 0x8000_0000_0000_0000,
                ..r
            },
        );
        assert_eq!(s.rip, 0x8000_0000_0000_0000);
    }

    fn set(s: &mut CpuState, k: &KvmSregs, g: &GuestCpu) -> Result<SregsEffects> {
        set_sregs(s, k, &LIMITS, g, true)
    }

    #[test]
    fn sregs_round_trip() {
        let mut s = reset(true, &GuestCpu::default(), &MSR_CAPS);
        let k = get_sregs(&s);
        set(&mut s, &k, &GuestCpu::default()).unwrap();
        assert_eq!(get_sregs(&s), k);
    }

    #[test]
    fn long_mode_entry_as_the_selftests_do_it() {
        let g = long_mode_guest();
        let mut s = reset(true, &g, &MSR_CAPS);
        let mut k = get_sregs(&s);
        k.cr0 = cr0::PE | cr0::NE | cr0::PG;
        k.cr4 |= cr4::PAE | cr4::OSFXSR;
        k.efer |= efer::LME | efer::LMA | efer::NX;
        k.cs = KvmSegment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 8,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        k.cr3 = 0x18_0000;
        let fx = set(&mut s, &k, &g).unwrap();
        assert!(fx.mmu_reset);
        let got = get_sregs(&s);
        assert_eq!(got.cs, k.cs);
        assert_eq!(
            (got.cr0, got.cr4, got.efer, got.cr3),
            (k.cr0, k.cr4, k.efer, k.cr3)
        );
        // CR3 above MAXPHYADDR in long mode.
        let mut bad = k;
        bad.cr3 = 1 << 40;
        assert_eq!(set(&mut s, &bad, &g), Err(Errno::Einval));
    }

    #[test]
    fn mode_consistency_rules() {
        let g = long_mode_guest();
        let base = get_sregs(&reset(true, &g, &MSR_CAPS));
        type Case = (&'static str, fn(&mut KvmSregs));
        let cases: [Case; 5] = [
            ("LME+PG without PAE", |k| {
                k.cr0 = cr0::PE | cr0::PG;
                k.efer = efer::LME | efer::LMA;
            }),
            ("LME+PG without LMA", |k| {
                k.cr0 = cr0::PE | cr0::PG;
                k.cr4 = cr4::PAE;
                k.efer = efer::LME;
            }),
            ("LMA without paging", |k| k.efer = efer::LMA | efer::LME),
            ("64-bit CS outside long mode", |k| k.cs.l = 1),
            ("PG without PE", |k| k.cr0 = cr0::PG),
        ];
        for (what, f) in cases {
            let mut s = reset(true, &g, &MSR_CAPS);
            let before = s.clone();
            let mut k = base;
            f(&mut k);
            assert_eq!(set(&mut s, &k, &g), Err(Errno::Einval), "{what}");
            assert_eq!(s, before, "{what}: state untouched");
        }
    }

    #[test]
    fn cr0_rules() {
        assert!(is_valid_cr0(0x6000_0010));
        assert!(is_valid_cr0(cr0::PE | cr0::PG));
        assert!(is_valid_cr0(cr0::CD));
        assert!(!is_valid_cr0(cr0::NW));
        assert!(!is_valid_cr0(cr0::PG));
        for bit in 32..64 {
            assert!(!is_valid_cr0(1 << bit), "bit {bit}");
        }
    }

    #[test]
    fn cr4_rules_before_and_after_cpuid() {
        let none = GuestCpu::default();
        // Before KVM_SET_CPUID2 only the module's limits apply.
        let supported = cr4::VME
            | cr4::PVI
            | cr4::TSD
            | cr4::DE
            | cr4::PSE
            | cr4::PAE
            | cr4::MCE
            | cr4::PGE
            | cr4::PCE
            | cr4::OSFXSR
            | cr4::OSXMMEXCPT
            | cr4::OSXSAVE
            | cr4::SMEP
            | cr4::SMAP
            | cr4::FSGSBASE
            | cr4::PCIDE
            | cr4::UMIP;
        assert!(is_valid_cr4(supported, &LIMITS, &none));
        for bit in [
            cr4::VMXE,
            cr4::SMXE,
            cr4::LA57,
            cr4::PKE,
            cr4::LAM_SUP,
            cr4::CET,
            1 << 15,
        ] {
            assert!(!is_valid_cr4(bit, &LIMITS, &none), "{bit:#x}");
        }
        // After: the guest's CPUID may reserve more.
        let g = GuestCpu::from_entries(&[], !0);
        assert!(!is_valid_cr4(cr4::OSXSAVE, &LIMITS, &g));
        assert!(is_valid_cr4(cr4::PAE, &LIMITS, &g));
    }

    #[test]
    fn efer_rules() {
        let none = GuestCpu::default();
        assert!(is_valid_efer(efer::SCE, &LIMITS, &none));
        // LME needs LM in the guest's CPUID, NX needs NX.
        assert!(!is_valid_efer(efer::LME, &LIMITS, &none));
        assert!(!is_valid_efer(efer::NX, &LIMITS, &none));
        let g = long_mode_guest();
        assert!(is_valid_efer(efer::LME | efer::NX, &LIMITS, &g));
        // No nested SVM: SVME is reserved even if the guest's CPUID claims SVM.
        let svm = GuestCpu { svm: true, ..g };
        assert!(!is_valid_efer(efer::SVME, &LIMITS, &svm));
        assert!(!is_valid_efer(1 << 1, &LIMITS, &g));
        assert!(!is_valid_efer(1 << 63, &LIMITS, &g));
    }

    #[test]
    fn apic_base_rules() {
        let g = GuestCpu::default();
        let x2 = GuestCpu { x2apic: true, ..g };
        let en = APIC_DEFAULT_PHYS_BASE | APIC_BASE_ENABLE;
        assert_eq!(check_apic_base(en, en | APIC_BASE_BSP, &g, true), Ok(()));
        assert_eq!(check_apic_base(en, 0, &g, true), Ok(()));
        // EXTD without EN, EXTD without x2APIC in CPUID.
        assert_eq!(
            check_apic_base(en, APIC_BASE_EXTD, &x2, true),
            Err(Errno::Einval)
        );
        assert_eq!(
            check_apic_base(en, en | APIC_BASE_EXTD, &g, true),
            Err(Errno::Einval)
        );
        assert_eq!(check_apic_base(en, en | APIC_BASE_EXTD, &x2, true), Ok(()));
        // Reserved low bits, bits above MAXPHYADDR (36 by default).
        assert_eq!(check_apic_base(en, en | 1, &g, true), Err(Errno::Einval));
        assert_eq!(
            check_apic_base(en, en | 1 << 9, &g, true),
            Err(Errno::Einval)
        );
        assert_eq!(
            check_apic_base(en, en | 1 << 36, &g, true),
            Err(Errno::Einval)
        );
        // Guest writes may not leave x2APIC for xAPIC, nor jump from disabled into x2APIC.
        let x2v = en | APIC_BASE_EXTD;
        assert_eq!(check_apic_base(x2v, en, &x2, false), Err(Errno::Einval));
        assert_eq!(check_apic_base(x2v, en, &x2, true), Ok(()));
        assert_eq!(check_apic_base(0, x2v, &x2, false), Err(Errno::Einval));
        // set_sregs_test: 1<<10 (EXTD alone) refused, 1<<11 (EN) accepted.
        let mut s = reset(true, &g, &MSR_CAPS);
        let mut k = get_sregs(&s);
        k.apic_base = 1 << 10;
        assert_eq!(set(&mut s, &k, &g), Err(Errno::Einval));
        k.apic_base = 1 << 11;
        assert!(set(&mut s, &k, &g).is_ok());
        assert_eq!(get_sregs(&s).apic_base, 1 << 11);
    }

    #[test]
    fn interrupt_bitmap_rules() {
        let g = GuestCpu::default();
        let mut s = reset(true, &g, &MSR_CAPS);
        let mut k = get_sregs(&s);
        // The lowest set bit wins; the others are dropped.
        k.interrupt_bitmap[1] = 1 << 3 | 1 << 9;
        k.interrupt_bitmap[3] = 1;
        set(&mut s, &k, &g).unwrap();
        assert_eq!(s.events.interrupt.nr, 67);
        let got = get_sregs(&s);
        assert_eq!(got.interrupt_bitmap, [0, 1 << 3, 0, 0]);
        // An empty bitmap leaves the queued interrupt as it was.
        k.interrupt_bitmap = [0; 4];
        set(&mut s, &k, &g).unwrap();
        assert!(s.events.interrupt.injected);
        // A soft interrupt does not show.
        s.events.interrupt.soft = true;
        assert_eq!(get_sregs(&s).interrupt_bitmap, [0; 4]);
    }

    #[test]
    fn svm_segment_quirks() {
        let g = GuestCpu::default();
        let mut s = reset(true, &g, &MSR_CAPS);
        let mut k = get_sregs(&s);
        // An unusable segment is stored not present and reads unusable.
        k.fs.unusable = 1;
        k.fs.type_ = 2;
        // A big limit reads with G set, whatever was given.
        k.gs.limit = 0xffff_ffff;
        k.gs.g = 0;
        // TR reads busy.
        k.tr.type_ = 0xb & !2;
        // SS unusable reads D/B clear; its DPL is the CPL.
        k.ss.unusable = 1;
        k.ss.db = 1;
        k.ss.dpl = 3;
        // CR8 with reserved bits is ignored, not refused.
        k.cr8 = 0x10;
        set(&mut s, &k, &g).unwrap();
        let got = get_sregs(&s);
        assert_eq!((got.fs.unusable, got.fs.present, got.fs.type_), (1, 0, 2));
        assert_eq!(got.gs.g, 1);
        assert_eq!(got.tr.type_, 0xb);
        assert_eq!((got.ss.unusable, got.ss.db, got.ss.dpl), (1, 0, 3));
        assert_eq!(got.cr8, 0);
        k.cr8 = 0xf;
        set(&mut s, &k, &g).unwrap();
        assert_eq!(get_sregs(&s).cr8, 0xf);
    }

    #[test]
    fn reset_cs_makes_the_bsp_runnable() {
        let g = GuestCpu::default();
        let mut s = reset(true, &g, &MSR_CAPS);
        s.mp_state = mp_state::HALTED;
        let k = get_sregs(&s);
        set(&mut s, &k, &g).unwrap();
        assert_eq!(s.mp_state, mp_state::RUNNABLE);
        let mut ap = reset(false, &g, &MSR_CAPS);
        ap.mp_state = mp_state::HALTED;
        set_sregs(&mut ap, &k, &LIMITS, &g, false).unwrap();
        assert_eq!(ap.mp_state, mp_state::HALTED);
    }

    #[test]
    fn sregs2_rules() {
        let g = long_mode_guest();
        let mut s = reset(true, &g, &MSR_CAPS);
        let k = get_sregs2(&s, |_| panic!("not PAE paging"));
        assert_eq!(k.flags, 0);
        let mut bad = k;
        bad.flags = 2;
        assert_eq!(
            set_sregs2(&mut s, &bad, &LIMITS, &g, true),
            Err(Errno::Einval)
        );
        // PDPTRs outside PAE paging.
        bad.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
        assert_eq!(
            set_sregs2(&mut s, &bad, &LIMITS, &g, true),
            Err(Errno::Einval)
        );
        // PAE paging with PDPTRs.
        let mut pae = k;
        pae.cr0 = cr0::PE | cr0::PG;
        pae.cr4 = cr4::PAE;
        pae.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
        pae.pdptrs = [1, 2, 3, 4];
        let (fx, p) = set_sregs2(&mut s, &pae, &LIMITS, &g, true).unwrap();
        assert!(fx.mmu_reset);
        assert_eq!(p, Some([1, 2, 3, 4]));
        let got = get_sregs2(&s, |cr3| {
            assert_eq!(cr3, pae.cr3);
            Some([5, 6, 7, 8])
        });
        assert_eq!((got.flags, got.pdptrs), (1, [5, 6, 7, 8]));
        let got = get_sregs2(&s, |_| None);
        assert_eq!(got.flags, 0);
    }
}
