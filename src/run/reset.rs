// SPDX-License-Identifier: GPL-2.0-only
//! The architectural state of a vCPU at power-on and after INIT (Intel SDM vol. 3 table 10-1,
//! AMD APM vol. 2 table 14-1; upstream `kvm_vcpu_reset` + `init_vmcb`).
//!
//! HOOK(state): the `state` helper's `x86` reset code replaces this once merged; the run loop
//! only needs a vCPU that starts executing at the reset vector (CS.base 0xffff0000, RIP 0xfff0)
//! and the INIT after a shutdown.

use x86::state::{CpuState, DescTable, SegReg, Segment};

fn data_seg() -> Segment {
    Segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_: 3,
        present: true,
        s: true,
        ..Segment::default()
    }
}

/// The power-on state.
pub(crate) fn power_on() -> CpuState {
    let mut st = CpuState {
        rip: 0xfff0,
        rflags: 2,
        cr0: 0x6000_0010,
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        xcr0: 1,
        gdt: DescTable {
            base: 0,
            limit: 0xffff,
        },
        idt: DescTable {
            base: 0,
            limit: 0xffff,
        },
        ..CpuState::default()
    };
    for s in [SegReg::Es, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        *st.seg_mut(s) = data_seg();
    }
    *st.seg_mut(SegReg::Cs) = Segment {
        base: 0xffff_0000,
        selector: 0xf000,
        type_: 0xb,
        ..data_seg()
    };
    // Upstream init_vmcb: a busy 16-bit TSS and an LDT, present, limit 0xffff.
    *st.seg_mut(SegReg::Tr) = Segment {
        type_: 3,
        s: false,
        ..data_seg()
    };
    *st.seg_mut(SegReg::Ldtr) = Segment {
        type_: 2,
        s: false,
        ..data_seg()
    };
    st.msrs.pat = 0x0007_0406_0007_0406;
    // RDX holds the processor signature (upstream: CPUID.1.EAX, or 0x600).
    st.gprs[2] = 0x600;
    st
}

/// The state after INIT (upstream `kvm_vcpu_reset(vcpu, true)`): the power-on registers, no
/// pending events, SPEC_CTRL and VIRT_SPEC_CTRL 0; the other MSRs, APIC base, the TSC offset
/// and everything else INIT leaves alone are kept.
pub(crate) fn init(old: &CpuState) -> CpuState {
    let p = power_on();
    CpuState {
        gprs: p.gprs,
        rip: p.rip,
        rflags: p.rflags,
        segs: p.segs,
        gdt: p.gdt,
        idt: p.idt,
        cr0: p.cr0,
        cr2: p.cr2,
        cr3: p.cr3,
        cr4: p.cr4,
        efer: p.efer,
        xcr0: p.xcr0,
        db: p.db,
        dr6: p.dr6,
        dr7: p.dr7,
        events: Default::default(),
        pdptrs: None,
        // svm_vcpu_reset clears SPEC_CTRL and VIRT_SPEC_CTRL on INIT too.
        msr: x86::msr::MsrState {
            spec_ctrl: 0,
            virt_spec_ctrl: 0,
            ..old.msr
        },
        ..old.clone()
    }
}
