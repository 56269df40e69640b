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
    /// The vCPU's multiprocessing state (`KVM_MP_STATE_*`, [`crate::uapi::mp_state`]).
    pub mp_state: u32,
    /// Events queued for the next entry (exception, interrupt, NMI) and the interrupt shadow.
    pub events: Events,
    /// The TSC offset: guest TSC = host TSC + `tsc_offset` (wrapping). A backend programs it
    /// (SVM: `VMCB.control.tsc_offset`) on every entry.
    pub tsc_offset: u64,
    /// MSRs the vCPU virtualises beyond the switched ones ([`crate::msr`]).
    pub msr: crate::msr::MsrState,
    /// The PAE PDPTRs userspace gave with `KVM_SET_SREGS2` (upstream
    /// `pdptrs_from_userspace`); None: the guest's memory at CR3 holds them.
    pub pdptrs: Option<[u64; 4]>,
    // ---- Fields appended by the backends (svm: below this line only) ----
    /// The guest's PKRU (upstream `vcpu->arch.pkru`): not in the guest fpstate, the backend
    /// loads it after CLGI and reads it back before STGI when the host has PKU; KVM_GET/SET_XSAVE
    /// carry it in the PKRU component.
    pub pkru: u32,
}

/// An exception queued for the guest (upstream `struct kvm_queued_exception`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedException {
    /// Pending: not yet delivered; the backend injects it on the next entry.
    pub pending: bool,
    /// Injected: its delivery was interrupted by an exit and must be re-injected.
    pub injected: bool,
    /// The vector.
    pub vector: u8,
    /// Whether it has an error code.
    pub has_error_code: bool,
    /// The error code.
    pub error_code: u32,
    /// Whether it has a payload (CR2 for #PF, DR6 bits for #DB), delivered with it.
    pub has_payload: bool,
    /// The payload.
    pub payload: u64,
}

/// An external interrupt being injected (upstream `struct kvm_queued_interrupt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedInterrupt {
    /// Injected.
    pub injected: bool,
    /// The vector.
    pub nr: u8,
    /// A software interrupt (INTn).
    pub soft: bool,
}

/// What `KVM_GET/SET_VCPU_EVENTS` shows, and the backends deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// The queued exception.
    pub exception: QueuedException,
    /// The interrupt being injected.
    pub interrupt: QueuedInterrupt,
    /// The interrupt shadow (`KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI`).
    pub interrupt_shadow: u8,
    /// An NMI is being injected.
    pub nmi_injected: bool,
    /// NMIs pending (0..=2; KVM collapses more into two).
    pub nmi_pending: u8,
    /// NMIs are blocked (in an NMI handler).
    pub nmi_masked: bool,
    /// A triple fault is pending: the next entry exits with `KVM_EXIT_SHUTDOWN` instead.
    pub triple_fault_pending: bool,
    /// The SIPI vector (kept for the ABI; no in-kernel LAPIC delivers SIPIs yet).
    pub sipi_vector: u32,
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
