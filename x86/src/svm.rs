// SPDX-License-Identifier: GPL-2.0-only
//! AMD SVM's Virtual Machine Control Block (AMD APM vol. 2, appendix B; upstream
//! `arch/x86/include/asm/svm.h` and `uapi/asm/svm.h`), and the conversion between the VMCB's
//! save area and the backend-neutral [`CpuState`].
//!
//! The module's SVM backend owns one 4 KiB VMCB per vCPU; everything here is plain data and
//! arithmetic, so it is host-tested. Layouts are `repr(C)` with offset asserts against the APM
//! (the same offsets upstream's `vmcb_control_area` / `vmcb_save_area` have).

use crate::state::{CpuState, DescTable, SegReg, Segment};
use core::mem::{offset_of, size_of};

/// Intercept words of the control area (upstream `enum intercept_words`).
pub mod intercept {
    /// Word 0: CR reads (bits 0-15), CR writes (16-31).
    pub const CR: usize = 0;
    /// Word 1: DR reads (0-15), DR writes (16-31).
    pub const DR: usize = 1;
    /// Word 2: exception vectors.
    pub const EXCEPTION: usize = 2;
    /// Word 3 bits.
    pub const INTR: u32 = 1 << 0;
    #[allow(missing_docs)]
    pub const NMI: u32 = 1 << 1;
    #[allow(missing_docs)]
    pub const SMI: u32 = 1 << 2;
    #[allow(missing_docs)]
    pub const INIT: u32 = 1 << 3;
    #[allow(missing_docs)]
    pub const VINTR: u32 = 1 << 4;
    #[allow(missing_docs)]
    pub const RDPMC: u32 = 1 << 15;
    /// IRET (the NMI window: NMIs stay masked until the guest's IRET completes).
    pub const IRET: u32 = 1 << 20;
    #[allow(missing_docs)]
    pub const CPUID: u32 = 1 << 18;
    #[allow(missing_docs)]
    pub const RSM: u32 = 1 << 19;
    #[allow(missing_docs)]
    pub const INVD: u32 = 1 << 22;
    #[allow(missing_docs)]
    pub const PAUSE: u32 = 1 << 23;
    #[allow(missing_docs)]
    pub const HLT: u32 = 1 << 24;
    #[allow(missing_docs)]
    pub const INVLPGA: u32 = 1 << 26;
    #[allow(missing_docs)]
    pub const IOIO_PROT: u32 = 1 << 27;
    #[allow(missing_docs)]
    pub const MSR_PROT: u32 = 1 << 28;
    #[allow(missing_docs)]
    pub const TASK_SWITCH: u32 = 1 << 29;
    #[allow(missing_docs)]
    pub const SHUTDOWN: u32 = 1 << 31;
    /// Word 4 bits.
    pub const VMRUN: u32 = 1 << 0;
    #[allow(missing_docs)]
    pub const VMMCALL: u32 = 1 << 1;
    #[allow(missing_docs)]
    pub const VMLOAD: u32 = 1 << 2;
    #[allow(missing_docs)]
    pub const VMSAVE: u32 = 1 << 3;
    #[allow(missing_docs)]
    pub const STGI: u32 = 1 << 4;
    #[allow(missing_docs)]
    pub const CLGI: u32 = 1 << 5;
    #[allow(missing_docs)]
    pub const SKINIT: u32 = 1 << 6;
    #[allow(missing_docs)]
    pub const RDTSCP: u32 = 1 << 7;
    #[allow(missing_docs)]
    pub const WBINVD: u32 = 1 << 9;
    #[allow(missing_docs)]
    pub const MONITOR: u32 = 1 << 10;
    #[allow(missing_docs)]
    pub const MWAIT: u32 = 1 << 11;
    #[allow(missing_docs)]
    pub const MWAIT_COND: u32 = 1 << 12;
    #[allow(missing_docs)]
    pub const XSETBV: u32 = 1 << 13;
    #[allow(missing_docs)]
    pub const RDPRU: u32 = 1 << 14;
}

/// Exit codes (`EXITCODE`, upstream `uapi/asm/svm.h`).
#[allow(missing_docs)]
pub mod exit {
    pub const CR0_READ: u64 = 0x000;
    pub const DR0_READ: u64 = 0x020;
    pub const EXCP_BASE: u64 = 0x040;
    pub const INTR: u64 = 0x060;
    pub const NMI: u64 = 0x061;
    pub const SMI: u64 = 0x062;
    pub const INIT: u64 = 0x063;
    pub const VINTR: u64 = 0x064;
    pub const IRET: u64 = 0x074;
    pub const RDPMC: u64 = 0x06f;
    pub const CPUID: u64 = 0x072;
    pub const INVD: u64 = 0x076;
    pub const PAUSE: u64 = 0x077;
    pub const HLT: u64 = 0x078;
    pub const INVLPGA: u64 = 0x07a;
    pub const IOIO: u64 = 0x07b;
    pub const MSR: u64 = 0x07c;
    pub const TASK_SWITCH: u64 = 0x07d;
    pub const SHUTDOWN: u64 = 0x07f;
    pub const VMRUN: u64 = 0x080;
    pub const VMMCALL: u64 = 0x081;
    pub const VMLOAD: u64 = 0x082;
    pub const VMSAVE: u64 = 0x083;
    pub const STGI: u64 = 0x084;
    pub const CLGI: u64 = 0x085;
    pub const SKINIT: u64 = 0x086;
    pub const RDTSCP: u64 = 0x087;
    pub const WBINVD: u64 = 0x089;
    pub const MONITOR: u64 = 0x08a;
    pub const MWAIT: u64 = 0x08b;
    pub const MWAIT_COND: u64 = 0x08c;
    pub const XSETBV: u64 = 0x08d;
    pub const RDPRU: u64 = 0x08e;
    pub const NPF: u64 = 0x400;
    /// `VMEXIT_INVALID`: the VMCB's guest state was illegal, VMRUN did not enter.
    pub const INVALID: u64 = u64::MAX;
}

/// Exception vectors.
#[allow(missing_docs)]
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const BP: u8 = 3;
    pub const UD: u8 = 6;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
}

/// `TLB_CONTROL` values.
#[allow(missing_docs)]
pub mod tlb_ctl {
    pub const DO_NOTHING: u8 = 0;
    pub const FLUSH_ALL_ASID: u8 = 1;
    pub const FLUSH_ASID: u8 = 3;
}

/// `int_ctl` bits.
#[allow(missing_docs)]
pub mod int_ctl {
    pub const V_TPR_MASK: u32 = 0x0f;
    pub const V_IRQ: u32 = 1 << 8;
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    pub const V_INTR_PRIO_MASK: u32 = 0xf << 16;
    pub const V_IGN_TPR: u32 = 1 << 20;
    pub const V_INTR_MASKING: u32 = 1 << 24;
}

/// `nested_ctl`: nested paging on.
pub const NESTED_CTL_NP_ENABLE: u64 = 1;

/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;

/// `EXITINFO1` of an IOIO exit (APM 15.10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo(pub u64);

impl IoioInfo {
    /// IN (true) or OUT.
    pub fn is_in(self) -> bool {
        self.0 & 1 != 0
    }
    /// INS/OUTS.
    pub fn is_string(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// REP prefix.
    pub fn is_rep(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Operand size in bytes (1, 2 or 4; 0 if the bits are malformed).
    pub fn size(self) -> u8 {
        match (self.0 >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => 0,
        }
    }
    /// Address size in bits (16, 32 or 64; 0 if malformed).
    pub fn addr_size(self) -> u8 {
        match (self.0 >> 7) & 7 {
            1 => 16,
            2 => 32,
            4 => 64,
            _ => 0,
        }
    }
    /// The port.
    pub fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// `EXITINFO1` of a nested page fault: the #PF-style error code.
#[allow(missing_docs)]
pub mod npf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RSVD: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    /// The fault happened on the final guest-physical access.
    pub const GUEST_FINAL: u64 = 1 << 32;
    /// The fault happened walking the guest's page tables.
    pub const GUEST_PAGE: u64 = 1 << 33;
}

/// Event types of `EVENTINJ` / `EXITINTINFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventType {
    /// External interrupt.
    Intr = 0,
    /// NMI.
    Nmi = 2,
    /// Exception (fault or trap).
    Exception = 3,
    /// Software interrupt (INTn).
    Soft = 4,
}

/// An `EVENTINJ` value: valid bit, type, vector, error-code-valid bit.
pub fn event_inj(vector: u8, ty: EventType, error_code: Option<u32>) -> (u32, u32) {
    let mut v = u32::from(vector) | ((ty as u32) << 8) | (1 << 31);
    if error_code.is_some() {
        v |= 1 << 11;
    }
    (v, error_code.unwrap_or(0))
}

/// Whether an exception vector pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// The control area (offsets 0x000-0x3ff).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct VmcbControl {
    pub intercepts: [u32; 6],
    pub reserved_1: [u32; 9],
    pub pause_filter_thresh: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub asid: u32,
    pub tlb_ctl: u8,
    pub reserved_2: [u8; 3],
    pub int_ctl: u32,
    pub int_vector: u32,
    pub int_state: u32,
    pub reserved_3: [u8; 4],
    pub exit_code: u64,
    pub exit_info_1: u64,
    pub exit_info_2: u64,
    pub exit_int_info: u32,
    pub exit_int_info_err: u32,
    pub nested_ctl: u64,
    pub avic_vapic_bar: u64,
    pub ghcb_gpa: u64,
    pub event_inj: u32,
    pub event_inj_err: u32,
    pub nested_cr3: u64,
    pub virt_ext: u64,
    pub clean: u32,
    pub reserved_5: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    pub avic_backing_page: u64,
    pub reserved_6: [u8; 8],
    pub avic_logical_id: u64,
    pub avic_physical_id: u64,
    pub reserved_7: [u8; 8],
    pub vmsa_pa: u64,
    pub reserved_8: [u8; 720],
    pub reserved_sw: [u8; 32],
}

/// A segment in the save area (selector, packed attributes, limit, base).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VmcbSeg {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The save area of a legacy (non-SEV-ES) guest, from offset 0x400.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct VmcbSave {
    pub es: VmcbSeg,
    pub cs: VmcbSeg,
    pub ss: VmcbSeg,
    pub ds: VmcbSeg,
    pub fs: VmcbSeg,
    pub gs: VmcbSeg,
    pub gdtr: VmcbSeg,
    pub ldtr: VmcbSeg,
    pub idtr: VmcbSeg,
    pub tr: VmcbSeg,
    pub reserved_0xa0: [u8; 42],
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    pub efer: u64,
    pub reserved_0xd8: [u8; 112],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub reserved_0x180: [u8; 88],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 72],
}

/// A whole VMCB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Vmcb {
    pub control: VmcbControl,
    pub save: VmcbSave,
    /// The guest's SPEC_CTRL, which hardware with V_SPEC_CTRL loads on VMRUN and saves on
    /// #VMEXIT (upstream `vmcb_save_area.spec_ctrl`, save area offset 0x2e0).
    pub spec_ctrl: u64,
    pub reserved: [u8; 4096 - 0x400 - 0x2e0 - 8],
}

const _: () = {
    assert!(size_of::<VmcbControl>() == 0x400);
    assert!(offset_of!(Vmcb, spec_ctrl) == 0x400 + 0x2e0);
    assert!(offset_of!(VmcbControl, pause_filter_thresh) == 0x03c);
    assert!(offset_of!(VmcbControl, iopm_base_pa) == 0x040);
    assert!(offset_of!(VmcbControl, msrpm_base_pa) == 0x048);
    assert!(offset_of!(VmcbControl, tsc_offset) == 0x050);
    assert!(offset_of!(VmcbControl, asid) == 0x058);
    assert!(offset_of!(VmcbControl, tlb_ctl) == 0x05c);
    assert!(offset_of!(VmcbControl, int_ctl) == 0x060);
    assert!(offset_of!(VmcbControl, int_state) == 0x068);
    assert!(offset_of!(VmcbControl, exit_code) == 0x070);
    assert!(offset_of!(VmcbControl, exit_info_1) == 0x078);
    assert!(offset_of!(VmcbControl, exit_info_2) == 0x080);
    assert!(offset_of!(VmcbControl, exit_int_info) == 0x088);
    assert!(offset_of!(VmcbControl, nested_ctl) == 0x090);
    assert!(offset_of!(VmcbControl, event_inj) == 0x0a8);
    assert!(offset_of!(VmcbControl, event_inj_err) == 0x0ac);
    assert!(offset_of!(VmcbControl, nested_cr3) == 0x0b0);
    assert!(offset_of!(VmcbControl, virt_ext) == 0x0b8);
    assert!(offset_of!(VmcbControl, clean) == 0x0c0);
    assert!(offset_of!(VmcbControl, next_rip) == 0x0c8);
    assert!(offset_of!(VmcbControl, insn_len) == 0x0d0);
    assert!(offset_of!(VmcbControl, avic_backing_page) == 0x0e0);
    assert!(offset_of!(VmcbControl, avic_logical_id) == 0x0f0);
    assert!(offset_of!(VmcbControl, avic_physical_id) == 0x0f8);
    assert!(offset_of!(VmcbControl, vmsa_pa) == 0x108);
    assert!(offset_of!(VmcbControl, reserved_sw) == 0x3e0);
    assert!(size_of::<VmcbSeg>() == 16);
    assert!(offset_of!(VmcbSave, tr) == 0x90);
    assert!(offset_of!(VmcbSave, cpl) == 0xcb);
    assert!(offset_of!(VmcbSave, efer) == 0xd0);
    assert!(offset_of!(VmcbSave, cr4) == 0x148);
    assert!(offset_of!(VmcbSave, cr3) == 0x150);
    assert!(offset_of!(VmcbSave, cr0) == 0x158);
    assert!(offset_of!(VmcbSave, dr7) == 0x160);
    assert!(offset_of!(VmcbSave, dr6) == 0x168);
    assert!(offset_of!(VmcbSave, rflags) == 0x170);
    assert!(offset_of!(VmcbSave, rip) == 0x178);
    assert!(offset_of!(VmcbSave, rsp) == 0x1d8);
    assert!(offset_of!(VmcbSave, rax) == 0x1f8);
    assert!(offset_of!(VmcbSave, star) == 0x200);
    assert!(offset_of!(VmcbSave, kernel_gs_base) == 0x220);
    assert!(offset_of!(VmcbSave, sysenter_eip) == 0x238);
    assert!(offset_of!(VmcbSave, cr2) == 0x240);
    assert!(offset_of!(VmcbSave, g_pat) == 0x268);
    assert!(offset_of!(VmcbSave, dbgctl) == 0x270);
    assert!(size_of::<VmcbSave>() == 0x2e0);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(size_of::<Vmcb>() == 4096);
};

impl Vmcb {
    /// An all-zero VMCB.
    pub const fn zeroed() -> Self {
        // SAFETY: every field is an integer or an array of integers: all-zero is a valid value.
        unsafe { core::mem::zeroed() }
    }
}

/// Packs a segment's attributes into the VMCB's 12-bit form: type[3:0], S[4], DPL[6:5], P[7],
/// AVL[8], L[9], D/B[10], G[11]. An unusable segment is all-zero attributes, as upstream's
/// `svm_set_segment` writes it.
pub fn pack_attrib(s: &Segment) -> u16 {
    if s.unusable {
        return 0;
    }
    u16::from(s.type_ & 0xf)
        | (u16::from(s.s) << 4)
        | (u16::from(s.dpl & 3) << 5)
        | (u16::from(s.present) << 7)
        | (u16::from(s.avl) << 8)
        | (u16::from(s.l) << 9)
        | (u16::from(s.db) << 10)
        | (u16::from(s.g) << 11)
}

/// Unpacks a VMCB segment into a [`Segment`] (upstream `svm_get_segment`: unusable means not
/// present).
pub fn unpack_seg(v: &VmcbSeg) -> Segment {
    let a = v.attrib;
    let present = a & (1 << 7) != 0;
    Segment {
        base: v.base,
        limit: v.limit,
        selector: v.selector,
        type_: (a & 0xf) as u8,
        s: a & (1 << 4) != 0,
        dpl: ((a >> 5) & 3) as u8,
        present,
        avl: a & (1 << 8) != 0,
        l: a & (1 << 9) != 0,
        db: a & (1 << 10) != 0,
        g: a & (1 << 11) != 0,
        unusable: !present,
    }
}

fn pack_seg(s: &Segment) -> VmcbSeg {
    VmcbSeg {
        selector: s.selector,
        attrib: pack_attrib(s),
        limit: s.limit,
        base: s.base,
    }
}

fn pack_table(t: &DescTable) -> VmcbSeg {
    VmcbSeg {
        selector: 0,
        attrib: 0,
        limit: u32::from(t.limit),
        base: t.base,
    }
}

/// Loads the save area (and the control area's V_TPR and TSC offset) from `st` before VMRUN:
/// the full copy every entry (clean bits stay 0; dirty tracking is a later optimisation).
///
/// The guest's EFER gets SVME, which hardware requires in guest mode and which is hidden from
/// the guest (the store clears it again). RAX and RSP travel through the save area; the other
/// GPRs are loaded by the entry code.
pub fn load_guest_state(vmcb: &mut Vmcb, st: &CpuState, tsc_offset: u64) {
    let s = &mut vmcb.save;
    s.es = pack_seg(st.seg(SegReg::Es));
    s.cs = pack_seg(st.seg(SegReg::Cs));
    s.ss = pack_seg(st.seg(SegReg::Ss));
    s.ds = pack_seg(st.seg(SegReg::Ds));
    s.fs = pack_seg(st.seg(SegReg::Fs));
    s.gs = pack_seg(st.seg(SegReg::Gs));
    s.tr = pack_seg(st.seg(SegReg::Tr));
    s.ldtr = pack_seg(st.seg(SegReg::Ldtr));
    s.gdtr = pack_table(&st.gdt);
    s.idtr = pack_table(&st.idt);
    // Upstream svm_set_segment: CPL follows SS.DPL; real mode runs at CPL 0.
    s.cpl = if st.cr0 & 1 == 0 {
        0
    } else {
        st.seg(SegReg::Ss).dpl & 3
    };
    s.efer = st.efer | EFER_SVME;
    s.cr0 = st.cr0;
    s.cr2 = st.cr2;
    s.cr3 = st.cr3;
    s.cr4 = st.cr4;
    s.dr6 = st.dr6;
    s.dr7 = st.dr7;
    s.rflags = st.rflags;
    s.rip = st.rip;
    s.rsp = st.gprs[4];
    s.rax = st.gprs[0];
    s.star = st.msrs.star;
    s.lstar = st.msrs.lstar;
    s.cstar = st.msrs.cstar;
    s.sfmask = st.msrs.sfmask;
    s.kernel_gs_base = st.msrs.kernel_gs_base;
    s.sysenter_cs = st.msrs.sysenter_cs;
    s.sysenter_esp = st.msrs.sysenter_esp;
    s.sysenter_eip = st.msrs.sysenter_eip;
    s.g_pat = st.msrs.pat;
    let c = &mut vmcb.control;
    c.int_ctl = (c.int_ctl & !int_ctl::V_TPR_MASK) | (st.cr8 as u32 & int_ctl::V_TPR_MASK);
    c.tsc_offset = tsc_offset;
}

/// Stores the guest state after an exit (and after VMSAVE put the VMLOAD/VMSAVE part into the
/// save area) back into `st`. EFER.SVME is the host's requirement, not the guest's: cleared.
pub fn store_guest_state(vmcb: &Vmcb, st: &mut CpuState) {
    let s = &vmcb.save;
    st.segs[SegReg::Es as usize] = unpack_seg(&s.es);
    st.segs[SegReg::Cs as usize] = unpack_seg(&s.cs);
    st.segs[SegReg::Ss as usize] = unpack_seg(&s.ss);
    // Upstream svm_get_segment: SS.DPL reads back as the CPL.
    st.segs[SegReg::Ss as usize].dpl = s.cpl & 3;
    st.segs[SegReg::Ds as usize] = unpack_seg(&s.ds);
    st.segs[SegReg::Fs as usize] = unpack_seg(&s.fs);
    st.segs[SegReg::Gs as usize] = unpack_seg(&s.gs);
    st.segs[SegReg::Tr as usize] = unpack_seg(&s.tr);
    st.segs[SegReg::Ldtr as usize] = unpack_seg(&s.ldtr);
    st.gdt = DescTable {
        base: s.gdtr.base,
        limit: s.gdtr.limit as u16,
    };
    st.idt = DescTable {
        base: s.idtr.base,
        limit: s.idtr.limit as u16,
    };
    st.efer = s.efer & !EFER_SVME;
    st.cr0 = s.cr0;
    st.cr2 = s.cr2;
    st.cr3 = s.cr3;
    st.cr4 = s.cr4;
    st.dr6 = s.dr6;
    st.dr7 = s.dr7;
    st.rflags = s.rflags;
    st.rip = s.rip;
    st.gprs[4] = s.rsp;
    st.gprs[0] = s.rax;
    st.msrs.star = s.star;
    st.msrs.lstar = s.lstar;
    st.msrs.cstar = s.cstar;
    st.msrs.sfmask = s.sfmask;
    st.msrs.kernel_gs_base = s.kernel_gs_base;
    st.msrs.sysenter_cs = s.sysenter_cs;
    st.msrs.sysenter_esp = s.sysenter_esp;
    st.msrs.sysenter_eip = s.sysenter_eip;
    st.msrs.pat = s.g_pat;
    st.cr8 = u64::from(vmcb.control.int_ctl & int_ctl::V_TPR_MASK);
}

/// MSRs that VMLOAD/VMSAVE switch, and so are passed through in the MSR permission map (every
/// other MSR access exits).
pub const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SYSCALL_MASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

/// The MSR permission map is 8 KiB: three 2 KiB ranges, two bits (read, write) per MSR.
pub const MSRPM_SIZE: usize = 8192;
/// The I/O permission map is 12 KiB: one bit per port, plus the bits a multi-byte access at
/// the top ports reaches.
pub const IOPM_SIZE: usize = 12288;

/// Where the read bit of `msr` is in the MSR permission map: (byte offset, bit); the write bit is
/// the next bit. `None` for MSRs outside the three mapped ranges (those always exit).
pub fn msrpm_bit(msr: u32) -> Option<(usize, u8)> {
    let (base, off) = match msr {
        0..=0x1fff => (0usize, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    let bit = off as usize * 2;
    Some((base + bit / 8, (bit % 8) as u8))
}

/// Clears the read and write intercept bits of `msr` in `pm` (which starts all-ones).
pub fn msrpm_allow(pm: &mut [u8], msr: u32) {
    if let Some((byte, bit)) = msrpm_bit(msr) {
        if let Some(b) = pm.get_mut(byte) {
            *b &= !(3 << bit);
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::state::Gpr;

    fn code64() -> Segment {
        Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 8,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: false,
            s: true,
            l: true,
            g: true,
            avl: false,
            unusable: false,
        }
    }

    #[test]
    fn attrib_packing_matches_the_apm() {
        // A flat 64-bit code segment: type B, S, P, L, G = 0xa9b.
        assert_eq!(pack_attrib(&code64()), 0xa9b);
        // The reset CS (type 0xb, S, P) = 0x9b.
        let reset = Segment {
            base: 0xffff_0000,
            limit: 0xffff,
            selector: 0xf000,
            type_: 0xb,
            present: true,
            s: true,
            ..Segment::default()
        };
        assert_eq!(pack_attrib(&reset), 0x9b);
        let unusable = Segment {
            unusable: true,
            ..code64()
        };
        assert_eq!(pack_attrib(&unusable), 0);
        // DPL 3 data, D/B, AVL.
        let d = Segment {
            type_: 3,
            s: true,
            dpl: 3,
            present: true,
            db: true,
            avl: true,
            ..Segment::default()
        };
        assert_eq!(pack_attrib(&d), 0x3 | 0x10 | 0x60 | 0x80 | 0x100 | 0x400);
    }

    #[test]
    fn segments_round_trip() {
        for a in 0..=0xfffu16 {
            let v = VmcbSeg {
                selector: 0x10,
                attrib: a,
                limit: 0xfffff,
                base: 0x1234_5000,
            };
            let s = unpack_seg(&v);
            let expect = if a & 0x80 != 0 { a } else { 0 };
            assert_eq!(pack_attrib(&s), expect, "attrib {a:#x}");
            assert_eq!(pack_seg(&s).base, v.base);
            assert_eq!(pack_seg(&s).limit, v.limit);
        }
    }

    #[test]
    fn state_round_trips_through_the_save_area() {
        let mut st = CpuState::default();
        for (i, g) in st.gprs.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        st.rip = 0xfff0;
        st.rflags = 0x202;
        st.segs[SegReg::Cs as usize] = code64();
        st.segs[SegReg::Ss as usize] = Segment {
            dpl: 0,
            type_: 3,
            s: true,
            present: true,
            ..Segment::default()
        };
        st.segs[SegReg::Ldtr as usize].unusable = true;
        st.gdt = DescTable {
            base: 0x5000,
            limit: 0x27,
        };
        st.idt = DescTable {
            base: 0x6000,
            limit: 0xfff,
        };
        st.cr0 = 0x8000_0011;
        st.cr2 = 0xdead_0000;
        st.cr3 = 0x10_0000;
        st.cr4 = 0x20;
        st.cr8 = 5;
        st.efer = 0x500;
        st.dr6 = 0xffff_0ff0;
        st.dr7 = 0x400;
        st.msrs.star = 1;
        st.msrs.lstar = 2;
        st.msrs.cstar = 3;
        st.msrs.sfmask = 4;
        st.msrs.kernel_gs_base = 5;
        st.msrs.sysenter_cs = 6;
        st.msrs.sysenter_esp = 7;
        st.msrs.sysenter_eip = 8;
        st.msrs.pat = 0x0007_0406_0007_0406;
        let mut vmcb = Vmcb::zeroed();
        load_guest_state(&mut vmcb, &st, 0x77);
        assert_eq!(vmcb.save.efer, 0x500 | EFER_SVME, "SVME set for hardware");
        assert_eq!(vmcb.save.rax, 0x1000);
        assert_eq!(vmcb.save.rsp, 0x1000 + Gpr::Rsp as u64);
        assert_eq!(vmcb.save.cs.attrib, 0xa9b);
        assert_eq!(vmcb.control.int_ctl & int_ctl::V_TPR_MASK, 5);
        assert_eq!(vmcb.control.tsc_offset, 0x77);
        let mut back = CpuState {
            gprs: st.gprs,
            ..CpuState::default()
        };
        store_guest_state(&vmcb, &mut back);
        // Segments come back normalised: an unusable segment is "not present".
        let mut expect = st.clone();
        expect.segs[SegReg::Ldtr as usize] = unpack_seg(&pack_seg(&st.segs[7]));
        for i in [0usize, 3, 4, 5, 6] {
            expect.segs[i] = unpack_seg(&pack_seg(&st.segs[i]));
        }
        assert_eq!(back, expect);
        assert_eq!(back.efer & EFER_SVME, 0, "SVME hidden from the guest");
    }

    #[test]
    fn cpl_follows_ss_in_protected_mode_only() {
        let mut st = CpuState::default();
        st.segs[SegReg::Ss as usize].dpl = 3;
        let mut vmcb = Vmcb::zeroed();
        load_guest_state(&mut vmcb, &st, 0);
        assert_eq!(vmcb.save.cpl, 0, "real mode runs at CPL 0");
        st.cr0 = 1;
        load_guest_state(&mut vmcb, &st, 0);
        assert_eq!(vmcb.save.cpl, 3);
    }

    #[test]
    fn msrpm_positions() {
        assert_eq!(msrpm_bit(0), Some((0, 0)));
        assert_eq!(msrpm_bit(0x174), Some((0x5d, 0)));
        assert_eq!(msrpm_bit(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_bit(0xc000_0081), Some((0x800 + 0x20, 2)));
        assert_eq!(msrpm_bit(0xc001_0000), Some((0x1000, 0)));
        assert_eq!(msrpm_bit(0xc001_1fff), Some((0x17ff, 6)));
        assert_eq!(msrpm_bit(0x2000), None);
        assert_eq!(msrpm_bit(0x4000_0000), None);
        let mut pm = [0xffu8; MSRPM_SIZE];
        for m in PASSTHROUGH_MSRS {
            msrpm_allow(&mut pm, m);
        }
        let (b, bit) = msrpm_bit(0xc000_0102).unwrap();
        assert_eq!(pm[b] >> bit & 3, 0);
        let (b, bit) = msrpm_bit(0xc000_0080).unwrap();
        assert_eq!(pm[b] >> bit & 3, 3, "EFER stays intercepted");
        assert_eq!(pm.iter().filter(|&&b| b != 0xff).count(), 4);
    }

    #[test]
    fn ioio_decoding() {
        // OUT dx, al to port 0x3f8: size 1, 16-bit address.
        let i = IoioInfo((0x3f8 << 16) | (1 << 4) | (1 << 7));
        assert!(!i.is_in());
        assert_eq!(i.port(), 0x3f8);
        assert_eq!(i.size(), 1);
        assert_eq!(i.addr_size(), 16);
        let i = IoioInfo((0x1000 << 16) | (4 << 4) | (4 << 7) | 1 | 4 | 8);
        assert!(i.is_in() && i.is_string() && i.is_rep());
        assert_eq!(i.size(), 4);
        assert_eq!(i.addr_size(), 64);
        assert_eq!(IoioInfo(3 << 4).size(), 0);
    }

    #[test]
    fn event_injection_encoding() {
        assert_eq!(
            event_inj(vector::GP, EventType::Exception, Some(0)),
            (0x8000_0b0d, 0)
        );
        assert_eq!(
            event_inj(vector::UD, EventType::Exception, None),
            (0x8000_0306, 0)
        );
        assert_eq!(event_inj(2, EventType::Nmi, None), (0x8000_0202, 0));
        assert!(exception_has_error_code(vector::GP));
        assert!(exception_has_error_code(vector::PF));
        assert!(!exception_has_error_code(vector::UD));
        assert!(exception_has_error_code(vector::DF));
    }
}
