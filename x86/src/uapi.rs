// SPDX-License-Identifier: GPL-2.0-only
//! The x86 vCPU-state structures of KVM's uapi (`arch/x86/include/uapi/asm/kvm.h`, Linux 6.12)
//! and the ioctl numbers that carry them.
//!
//! Every structure is `#[repr(C)]` with its size and field offsets asserted against the header,
//! contains integers only and has no padding the asserts do not show, so it may be copied to and
//! from userspace as bytes ([`Pod`]). The conversions to and from [`crate::state::CpuState`] live
//! next to the rules that govern them ([`crate::regs`] and friends), not here.

use core::mem::{offset_of, size_of};

/// Plain old data: a `#[repr(C)]` structure of integers without implicit padding, so every byte
/// pattern is a valid value and every byte of a value is initialised.
///
/// # Safety
///
/// Only for `#[repr(C)]` types made of integers (or arrays of them, or other `Pod` types) whose
/// fields cover the size exactly (the const asserts next to each type show it).
pub unsafe trait Pod: Copy + Sized {
    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Pod`: no padding, so all `size_of::<Self>()` bytes are initialised; the
        // slice borrows `self`.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast(), size_of::<Self>()) }
    }

    /// The value's bytes, writable: any byte pattern written is a valid value.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `Self: Pod`: every byte pattern is a valid value; the slice borrows `self`
        // mutably.
        unsafe { core::slice::from_raw_parts_mut((self as *mut Self).cast(), size_of::<Self>()) }
    }

    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: `Self: Pod`: the all-zero pattern is a valid value.
        unsafe { core::mem::zeroed() }
    }
}

/// `struct kvm_regs` (`KVM_GET_REGS` / `KVM_SET_REGS`), in the uapi's register order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

const _: () = {
    assert!(size_of::<KvmRegs>() == 144);
    assert!(offset_of!(KvmRegs, rax) == 0);
    assert!(offset_of!(KvmRegs, rsi) == 32);
    assert!(offset_of!(KvmRegs, r8) == 64);
    assert!(offset_of!(KvmRegs, r15) == 120);
    assert!(offset_of!(KvmRegs, rip) == 128);
    assert!(offset_of!(KvmRegs, rflags) == 136);
};

/// `struct kvm_segment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmSegment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

const _: () = {
    assert!(size_of::<KvmSegment>() == 24);
    assert!(offset_of!(KvmSegment, base) == 0);
    assert!(offset_of!(KvmSegment, limit) == 8);
    assert!(offset_of!(KvmSegment, selector) == 12);
    assert!(offset_of!(KvmSegment, type_) == 14);
    assert!(offset_of!(KvmSegment, present) == 15);
    assert!(offset_of!(KvmSegment, dpl) == 16);
    assert!(offset_of!(KvmSegment, db) == 17);
    assert!(offset_of!(KvmSegment, s) == 18);
    assert!(offset_of!(KvmSegment, l) == 19);
    assert!(offset_of!(KvmSegment, g) == 20);
    assert!(offset_of!(KvmSegment, avl) == 21);
    assert!(offset_of!(KvmSegment, unusable) == 22);
    assert!(offset_of!(KvmSegment, padding) == 23);
};

/// `struct kvm_dtable`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

const _: () = {
    assert!(size_of::<KvmDtable>() == 16);
    assert!(offset_of!(KvmDtable, base) == 0);
    assert!(offset_of!(KvmDtable, limit) == 8);
    assert!(offset_of!(KvmDtable, padding) == 10);
};

/// `KVM_NR_INTERRUPTS`: the bits of `kvm_sregs.interrupt_bitmap`.
pub const KVM_NR_INTERRUPTS: usize = 256;

/// `struct kvm_sregs` (`KVM_GET_SREGS` / `KVM_SET_SREGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmSregs {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    /// One bit per vector: the interrupt being injected (at most one bit is ever set).
    pub interrupt_bitmap: [u64; KVM_NR_INTERRUPTS / 64],
}

const _: () = {
    assert!(size_of::<KvmSregs>() == 312);
    assert!(offset_of!(KvmSregs, cs) == 0);
    assert!(offset_of!(KvmSregs, ss) == 120);
    assert!(offset_of!(KvmSregs, tr) == 144);
    assert!(offset_of!(KvmSregs, ldt) == 168);
    assert!(offset_of!(KvmSregs, gdt) == 192);
    assert!(offset_of!(KvmSregs, idt) == 208);
    assert!(offset_of!(KvmSregs, cr0) == 224);
    assert!(offset_of!(KvmSregs, cr8) == 256);
    assert!(offset_of!(KvmSregs, efer) == 264);
    assert!(offset_of!(KvmSregs, apic_base) == 272);
    assert!(offset_of!(KvmSregs, interrupt_bitmap) == 280);
};

/// `KVM_SREGS2_FLAGS_PDPTRS_VALID`.
pub const KVM_SREGS2_FLAGS_PDPTRS_VALID: u64 = 1;

/// `struct kvm_sregs2` (`KVM_GET_SREGS2` / `KVM_SET_SREGS2`): `kvm_sregs` with the PAE PDPTRs
/// instead of the interrupt bitmap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmSregs2 {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub flags: u64,
    pub pdptrs: [u64; 4],
}

const _: () = {
    assert!(size_of::<KvmSregs2>() == 320);
    assert!(offset_of!(KvmSregs2, apic_base) == 272);
    assert!(offset_of!(KvmSregs2, flags) == 280);
    assert!(offset_of!(KvmSregs2, pdptrs) == 288);
};

/// `struct kvm_mp_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmMpState {
    pub mp_state: u32,
}

const _: () = assert!(size_of::<KvmMpState>() == 4);

/// `KVM_MP_STATE_*`.
pub mod mp_state {
    /// `KVM_MP_STATE_RUNNABLE`.
    pub const RUNNABLE: u32 = 0;
    /// `KVM_MP_STATE_UNINITIALIZED`.
    pub const UNINITIALIZED: u32 = 1;
    /// `KVM_MP_STATE_INIT_RECEIVED`.
    pub const INIT_RECEIVED: u32 = 2;
    /// `KVM_MP_STATE_HALTED`.
    pub const HALTED: u32 = 3;
    /// `KVM_MP_STATE_SIPI_RECEIVED`.
    pub const SIPI_RECEIVED: u32 = 4;
    /// `KVM_MP_STATE_AP_RESET_HOLD` (9; 10 is `KVM_MP_STATE_SUSPENDED`, which x86 refuses).
    pub const AP_RESET_HOLD: u32 = 9;
}

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmCpuidEntry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

const _: () = {
    assert!(size_of::<KvmCpuidEntry2>() == 40);
    assert!(offset_of!(KvmCpuidEntry2, flags) == 8);
    assert!(offset_of!(KvmCpuidEntry2, eax) == 12);
    assert!(offset_of!(KvmCpuidEntry2, edx) == 24);
    assert!(offset_of!(KvmCpuidEntry2, padding) == 28);
};

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry is one sub-leaf of an indexed leaf.
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;

/// `struct kvm_cpuid2`: the header; `nent` entries follow at offset 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmCpuid2 {
    pub nent: u32,
    pub padding: u32,
}

const _: () = assert!(size_of::<KvmCpuid2>() == 8);

/// `struct kvm_msr_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmMsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

const _: () = {
    assert!(size_of::<KvmMsrEntry>() == 16);
    assert!(offset_of!(KvmMsrEntry, data) == 8);
};

/// `struct kvm_msrs`: the header; `nmsrs` entries follow at offset 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmMsrs {
    pub nmsrs: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<KvmMsrs>() == 8);

/// `struct kvm_debugregs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmDebugregs {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    pub flags: u64,
    pub reserved: [u64; 9],
}

const _: () = {
    assert!(size_of::<KvmDebugregs>() == 128);
    assert!(offset_of!(KvmDebugregs, dr6) == 32);
    assert!(offset_of!(KvmDebugregs, dr7) == 40);
    assert!(offset_of!(KvmDebugregs, flags) == 48);
};

/// `struct kvm_vcpu_events`, its anonymous sub-structures flattened (same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmVcpuEvents {
    pub exception_injected: u8,
    pub exception_nr: u8,
    pub exception_has_error_code: u8,
    pub exception_pending: u8,
    pub exception_error_code: u32,
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    pub interrupt_soft: u8,
    pub interrupt_shadow: u8,
    pub nmi_injected: u8,
    pub nmi_pending: u8,
    pub nmi_masked: u8,
    pub nmi_pad: u8,
    pub sipi_vector: u32,
    pub flags: u32,
    pub smi_smm: u8,
    pub smi_pending: u8,
    pub smi_smm_inside_nmi: u8,
    pub smi_latched_init: u8,
    pub triple_fault_pending: u8,
    pub reserved: [u8; 26],
    pub exception_has_payload: u8,
    pub exception_payload: u64,
}

const _: () = {
    assert!(size_of::<KvmVcpuEvents>() == 64);
    assert!(offset_of!(KvmVcpuEvents, exception_error_code) == 4);
    assert!(offset_of!(KvmVcpuEvents, interrupt_injected) == 8);
    assert!(offset_of!(KvmVcpuEvents, nmi_injected) == 12);
    assert!(offset_of!(KvmVcpuEvents, sipi_vector) == 16);
    assert!(offset_of!(KvmVcpuEvents, flags) == 20);
    assert!(offset_of!(KvmVcpuEvents, smi_smm) == 24);
    assert!(offset_of!(KvmVcpuEvents, triple_fault_pending) == 28);
    assert!(offset_of!(KvmVcpuEvents, reserved) == 29);
    assert!(offset_of!(KvmVcpuEvents, exception_has_payload) == 55);
    assert!(offset_of!(KvmVcpuEvents, exception_payload) == 56);
};

/// `KVM_VCPUEVENT_VALID_*` flags of [`KvmVcpuEvents::flags`].
pub mod vcpu_events {
    /// `KVM_VCPUEVENT_VALID_NMI_PENDING`.
    pub const VALID_NMI_PENDING: u32 = 0x1;
    /// `KVM_VCPUEVENT_VALID_SIPI_VECTOR`.
    pub const VALID_SIPI_VECTOR: u32 = 0x2;
    /// `KVM_VCPUEVENT_VALID_SHADOW`.
    pub const VALID_SHADOW: u32 = 0x4;
    /// `KVM_VCPUEVENT_VALID_SMM`.
    pub const VALID_SMM: u32 = 0x8;
    /// `KVM_VCPUEVENT_VALID_PAYLOAD`.
    pub const VALID_PAYLOAD: u32 = 0x10;
    /// `KVM_VCPUEVENT_VALID_TRIPLE_FAULT`.
    pub const VALID_TRIPLE_FAULT: u32 = 0x20;
    /// `KVM_X86_SHADOW_INT_MOV_SS`.
    pub const SHADOW_INT_MOV_SS: u8 = 0x1;
    /// `KVM_X86_SHADOW_INT_STI`.
    pub const SHADOW_INT_STI: u8 = 0x2;
}

/// `struct kvm_sync_regs`: what `kvm_run.s.regs` holds on x86.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmSyncRegs {
    pub regs: KvmRegs,
    pub sregs: KvmSregs,
    pub events: KvmVcpuEvents,
}

const _: () = {
    assert!(size_of::<KvmSyncRegs>() == 520);
    assert!(offset_of!(KvmSyncRegs, sregs) == 144);
    assert!(offset_of!(KvmSyncRegs, events) == 456);
};

/// `KVM_SYNC_X86_REGS`.
pub const KVM_SYNC_X86_REGS: u64 = 1 << 0;
/// `KVM_SYNC_X86_SREGS`.
pub const KVM_SYNC_X86_SREGS: u64 = 1 << 1;
/// `KVM_SYNC_X86_EVENTS`.
pub const KVM_SYNC_X86_EVENTS: u64 = 1 << 2;

/// `struct kvm_translation` (`KVM_TRANSLATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmTranslation {
    pub linear_address: u64,
    pub physical_address: u64,
    pub valid: u8,
    pub writeable: u8,
    pub usermode: u8,
    pub pad: [u8; 5],
}

const _: () = {
    assert!(size_of::<KvmTranslation>() == 24);
    assert!(offset_of!(KvmTranslation, valid) == 16);
};

/// `struct kvm_device_attr` (`KVM_HAS/GET/SET_DEVICE_ATTR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmDeviceAttr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}

const _: () = {
    assert!(size_of::<KvmDeviceAttr>() == 24);
    assert!(offset_of!(KvmDeviceAttr, attr) == 8);
    assert!(offset_of!(KvmDeviceAttr, addr) == 16);
};

/// `struct kvm_nested_state` header (the data region follows; 128 bytes in all for a host
/// without nesting state).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmNestedState {
    pub flags: u16,
    pub format: u16,
    pub size: u32,
    pub hdr: [u8; 120],
}

const _: () = {
    assert!(size_of::<KvmNestedState>() == 128);
    assert!(offset_of!(KvmNestedState, size) == 4);
    assert!(offset_of!(KvmNestedState, hdr) == 8);
};

/// `struct kvm_enable_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct KvmEnableCap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

const _: () = assert!(size_of::<KvmEnableCap>() == 104);

// SAFETY: each type is `#[repr(C)]`, made of integers or arrays of integers (or other types in
// this list), and the const asserts above show its fields cover its size: no implicit padding.
unsafe impl Pod for KvmRegs {}
// SAFETY: as above.
unsafe impl Pod for KvmSegment {}
// SAFETY: as above.
unsafe impl Pod for KvmDtable {}
// SAFETY: as above.
unsafe impl Pod for KvmSregs {}
// SAFETY: as above.
unsafe impl Pod for KvmSregs2 {}
// SAFETY: as above.
unsafe impl Pod for KvmMpState {}
// SAFETY: as above.
unsafe impl Pod for KvmCpuidEntry2 {}
// SAFETY: as above.
unsafe impl Pod for KvmCpuid2 {}
// SAFETY: as above.
unsafe impl Pod for KvmMsrEntry {}
// SAFETY: as above.
unsafe impl Pod for KvmMsrs {}
// SAFETY: as above.
unsafe impl Pod for KvmDebugregs {}
// SAFETY: as above.
unsafe impl Pod for KvmVcpuEvents {}
// SAFETY: as above.
unsafe impl Pod for KvmSyncRegs {}
// SAFETY: as above.
unsafe impl Pod for KvmTranslation {}
// SAFETY: as above.
unsafe impl Pod for KvmDeviceAttr {}
// SAFETY: as above.
unsafe impl Pod for KvmNestedState {}
// SAFETY: as above.
unsafe impl Pod for KvmEnableCap {}

/// The ioctl numbers of the vCPU-state ABI (`_IO*` with the structure sizes above).
pub mod ioctl {
    use super::*;

    const KVMIO: u32 = 0xAE;

    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        assert!(size < 1 << 14);
        (dir << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
    }
    const fn ior(nr: u32, size: usize) -> u32 {
        ioc(2, nr, size)
    }
    const fn iow(nr: u32, size: usize) -> u32 {
        ioc(1, nr, size)
    }
    const fn iowr(nr: u32, size: usize) -> u32 {
        ioc(3, nr, size)
    }

    /// `KVM_GET_REGS`.
    pub const KVM_GET_REGS: u32 = ior(0x81, size_of::<KvmRegs>());
    /// `KVM_SET_REGS`.
    pub const KVM_SET_REGS: u32 = iow(0x82, size_of::<KvmRegs>());
    /// `KVM_GET_SREGS`.
    pub const KVM_GET_SREGS: u32 = ior(0x83, size_of::<KvmSregs>());
    /// `KVM_SET_SREGS`.
    pub const KVM_SET_SREGS: u32 = iow(0x84, size_of::<KvmSregs>());
    /// `KVM_TRANSLATE`.
    pub const KVM_TRANSLATE: u32 = iowr(0x85, size_of::<KvmTranslation>());
    /// `KVM_GET_MSRS` (system fd: feature MSRs; vCPU fd).
    pub const KVM_GET_MSRS: u32 = iowr(0x88, size_of::<KvmMsrs>());
    /// `KVM_SET_MSRS`.
    pub const KVM_SET_MSRS: u32 = iow(0x89, size_of::<KvmMsrs>());
    /// `KVM_SET_CPUID2`.
    pub const KVM_SET_CPUID2: u32 = iow(0x90, size_of::<KvmCpuid2>());
    /// `KVM_GET_CPUID2`.
    pub const KVM_GET_CPUID2: u32 = iowr(0x91, size_of::<KvmCpuid2>());
    /// `KVM_GET_MP_STATE`.
    pub const KVM_GET_MP_STATE: u32 = ior(0x98, size_of::<KvmMpState>());
    /// `KVM_SET_MP_STATE`.
    pub const KVM_SET_MP_STATE: u32 = iow(0x99, size_of::<KvmMpState>());
    /// `KVM_GET_VCPU_EVENTS`.
    pub const KVM_GET_VCPU_EVENTS: u32 = ior(0x9f, size_of::<KvmVcpuEvents>());
    /// `KVM_SET_VCPU_EVENTS`.
    pub const KVM_SET_VCPU_EVENTS: u32 = iow(0xa0, size_of::<KvmVcpuEvents>());
    /// `KVM_GET_DEBUGREGS`.
    pub const KVM_GET_DEBUGREGS: u32 = ior(0xa1, size_of::<KvmDebugregs>());
    /// `KVM_SET_DEBUGREGS`.
    pub const KVM_SET_DEBUGREGS: u32 = iow(0xa2, size_of::<KvmDebugregs>());
    /// `KVM_ENABLE_CAP`.
    pub const KVM_ENABLE_CAP: u32 = iow(0xa3, size_of::<KvmEnableCap>());
    /// `KVM_GET_NESTED_STATE`.
    pub const KVM_GET_NESTED_STATE: u32 = iowr(0xbe, size_of::<KvmNestedState>());
    /// `KVM_SET_NESTED_STATE`.
    pub const KVM_SET_NESTED_STATE: u32 = iow(0xbf, size_of::<KvmNestedState>());
    /// `KVM_GET_SREGS2`.
    pub const KVM_GET_SREGS2: u32 = ior(0xcc, size_of::<KvmSregs2>());
    /// `KVM_SET_SREGS2`.
    pub const KVM_SET_SREGS2: u32 = iow(0xcd, size_of::<KvmSregs2>());
    /// `KVM_HAS_DEVICE_ATTR`.
    pub const KVM_HAS_DEVICE_ATTR: u32 = iow(0xe3, size_of::<KvmDeviceAttr>());
    /// `KVM_GET_DEVICE_ATTR`.
    pub const KVM_GET_DEVICE_ATTR: u32 = iow(0xe2, size_of::<KvmDeviceAttr>());
    /// `KVM_SET_DEVICE_ATTR`.
    pub const KVM_SET_DEVICE_ATTR: u32 = iow(0xe1, size_of::<KvmDeviceAttr>());

    // The numbers the uapi headers produce on x86_64.
    const _: () = {
        assert!(KVM_GET_REGS == 0x8090_ae81);
        assert!(KVM_SET_REGS == 0x4090_ae82);
        assert!(KVM_GET_SREGS == 0x8138_ae83);
        assert!(KVM_SET_SREGS == 0x4138_ae84);
        assert!(KVM_TRANSLATE == 0xc018_ae85);
        assert!(KVM_GET_MSRS == 0xc008_ae88);
        assert!(KVM_SET_MSRS == 0x4008_ae89);
        assert!(KVM_SET_CPUID2 == 0x4008_ae90);
        assert!(KVM_GET_CPUID2 == 0xc008_ae91);
        assert!(KVM_GET_MP_STATE == 0x8004_ae98);
        assert!(KVM_SET_MP_STATE == 0x4004_ae99);
        assert!(KVM_GET_VCPU_EVENTS == 0x8040_ae9f);
        assert!(KVM_SET_VCPU_EVENTS == 0x4040_aea0);
        assert!(KVM_GET_DEBUGREGS == 0x8080_aea1);
        assert!(KVM_SET_DEBUGREGS == 0x4080_aea2);
        assert!(KVM_ENABLE_CAP == 0x4068_aea3);
        assert!(KVM_GET_NESTED_STATE == 0xc080_aebe);
        assert!(KVM_SET_NESTED_STATE == 0x4080_aebf);
        assert!(KVM_GET_SREGS2 == 0x8140_aecc);
        assert!(KVM_SET_SREGS2 == 0x4140_aecd);
        assert!(KVM_SET_DEVICE_ATTR == 0x4018_aee1);
        assert!(KVM_GET_DEVICE_ATTR == 0x4018_aee2);
        assert!(KVM_HAS_DEVICE_ATTR == 0x4018_aee3);
    };
}
