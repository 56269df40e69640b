// SPDX-License-Identifier: GPL-2.0-only
//! The architectural state of one vCPU, in one backend-neutral form.
//!
//! Upstream KVM splits a vCPU's registers between `vcpu->arch.regs` and the backend's control
//! block (VMCB save area, VMCS guest fields) and reaches the latter through `kvm_x86_ops`
//! callbacks. Here the [`CpuState`] is the one source of truth between runs: the state ioctls
//! work on it, and a backend copies it into its own format before `VMRUN`/`VMRESUME` and back
//! after the exit. A second backend therefore plugs in without touching the ioctl code.

/// General-purpose registers in their x86 encoding order (the ModRM/REX register number), which
/// is what the instruction decoder produces. (`struct kvm_regs` orders them differently; the
/// uapi conversion maps one to the other.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// Segment registers, the six in their encoding order (`ES`=0 .. `GS`=5, as in the `Sreg`
/// ModRM field and segment-override decoding), then `TR` and `LDTR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
    Tr = 6,
    Ldtr = 7,
}

/// A segment register's hidden and visible parts, with the fields of `struct kvm_segment`
/// (the attribute bits unpacked, as KVM's uapi has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit, in bytes (already scaled by the granularity bit, as in `kvm_segment`).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Type (4 bits).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Descriptor privilege level (0..=3).
    pub dpl: u8,
    /// Default operation size (D/B).
    pub db: bool,
    /// Code or data segment (descriptor type S); clear for system segments.
    pub s: bool,
    /// 64-bit code segment (L).
    pub l: bool,
    /// Granularity.
    pub g: bool,
    /// Available for software.
    pub avl: bool,
    /// Unusable (VMX "unusable"; for SVM a segment whose attributes are all zero).
    pub unusable: bool,
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescTable {
    /// Linear base address.
    pub base: u64,
    /// Limit (16 bits architecturally).
    pub limit: u16,
}

/// The MSRs a backend switches on every entry and exit (the ones VMSAVE/VMLOAD or the VMCS
/// guest area cover, plus PAT and TSC_AUX). Other MSRs the vCPU virtualises live in the MSR
/// module's own state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchedMsrs {
    /// `MSR_STAR`.
    pub star: u64,
    /// `MSR_LSTAR`.
    pub lstar: u64,
    /// `MSR_CSTAR`.
    pub cstar: u64,
    /// `MSR_SYSCALL_MASK` (SFMASK).
    pub sfmask: u64,
    /// `MSR_KERNEL_GS_BASE`.
    pub kernel_gs_base: u64,
    /// `MSR_IA32_SYSENTER_CS`.
    pub sysenter_cs: u64,
    /// `MSR_IA32_SYSENTER_ESP`.
    pub sysenter_esp: u64,
    /// `MSR_IA32_SYSENTER_EIP`.
    pub sysenter_eip: u64,
    /// `MSR_IA32_CR_PAT`.
    pub pat: u64,
    /// `MSR_TSC_AUX`.
    pub tsc_aux: u64,
    /// `MSR_IA32_DEBUGCTLMSR`.
    pub debugctl: u64,
}

/// The architectural state of one vCPU between runs (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// General-purpose registers, indexed by [`Gpr`].
    pub gprs: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// Segment registers, indexed by [`SegReg`].
    pub segs: [Segment; 8],
    /// GDTR.
    pub gdt: DescTable,
    /// IDTR.
    pub idt: DescTable,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (TPR); without an in-kernel LAPIC it is plain state.
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// XCR0.
    pub xcr0: u64,
    /// DR0..DR3.
    pub db: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// `MSR_IA32_APICBASE`.
    pub apic_base: u64,
    /// The MSRs switched on entry and exit.
    pub msrs: SwitchedMsrs,
    // ---- Fields appended by other areas (one block per area; `state` owns the rest) ----
    // svm (run loop):
    /// The TSC offset the backend programs (guest TSC = host TSC + offset; upstream
    /// `vcpu->arch.tsc_offset`, set through `MSR_IA32_TSC`/the TSC-offset attributes).
    pub tsc_offset: u64,
}

impl CpuState {
    /// A general-purpose register.
    #[inline]
    pub fn gpr(&self, r: Gpr) -> u64 {
        self.gprs[r as usize]
    }

    /// Sets a general-purpose register.
    #[inline]
    pub fn set_gpr(&mut self, r: Gpr, v: u64) {
        self.gprs[r as usize] = v;
    }

    /// A segment register.
    #[inline]
    pub fn seg(&self, s: SegReg) -> &Segment {
        &self.segs[s as usize]
    }

    /// A segment register, for writing.
    #[inline]
    pub fn seg_mut(&mut self, s: SegReg) -> &mut Segment {
        &mut self.segs[s as usize]
    }
}
