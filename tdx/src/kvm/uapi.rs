// SPDX-License-Identifier: GPL-2.0-only
//! The TDX part of KVM's x86 uapi (`arch/x86/include/uapi/asm/kvm.h`): `KVM_MEMORY_ENCRYPT_OP`'s
//! command block and the structures its TDX sub-commands copy, with upstream's layouts pinned by
//! size and offset assertions. Every structure is plain integers with no padding, so a copy from
//! or to user memory is a byte copy (the module reads them with `FromBytes`).

use core::mem::{offset_of, size_of};

/// `KVM_MEMORY_ENCRYPT_OP`: `_IOWR(KVMIO, 0xba, unsigned long)` on the VM fd and the vCPU fd.
pub const KVM_MEMORY_ENCRYPT_OP: u32 = 0xc008_aeba;

/// `KVM_MAX_CPUID_ENTRIES`: the most entries INIT_VM takes and GET_CPUID returns.
pub const KVM_MAX_CPUID_ENTRIES: u32 = 256;

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (upstream's spelling): the entry's index is meaningful.
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;

/// `KVM_TDX_MEASURE_MEMORY_REGION`: `cmd.flags` of INIT_MEM_REGION: extend MRTD with each page.
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;

/// `enum kvm_tdx_cmd_id`. `KVM_TDX_TERMINATE_VM` (6) is not part of any released uapi and is
/// refused like any unknown id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TdxCmdId {
    /// `KVM_TDX_CAPABILITIES` (VM fd).
    Capabilities = 0,
    /// `KVM_TDX_INIT_VM` (VM fd).
    InitVm = 1,
    /// `KVM_TDX_INIT_VCPU` (vCPU fd).
    InitVcpu = 2,
    /// `KVM_TDX_INIT_MEM_REGION` (vCPU fd).
    InitMemRegion = 3,
    /// `KVM_TDX_FINALIZE_VM` (VM fd).
    FinalizeVm = 4,
    /// `KVM_TDX_GET_CPUID` (vCPU fd).
    GetCpuid = 5,
}

impl TdxCmdId {
    /// The command with id `id`, `None` for an unknown one (→ EINVAL).
    #[must_use]
    pub const fn from_raw(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::Capabilities,
            1 => Self::InitVm,
            2 => Self::InitVcpu,
            3 => Self::InitMemRegion,
            4 => Self::FinalizeVm,
            5 => Self::GetCpuid,
            _ => return None,
        })
    }

    /// Whether the command is one of the VM fd's (the others are the vCPU fd's).
    #[must_use]
    pub const fn is_vm_scope(self) -> bool {
        matches!(self, Self::Capabilities | Self::InitVm | Self::FinalizeVm)
    }
}

/// `struct kvm_tdx_cmd`: what `KVM_MEMORY_ENCRYPT_OP` points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmTdxCmd {
    /// The sub-command ([`TdxCmdId`]).
    pub id: u32,
    /// Sub-command flags (only INIT_MEM_REGION has one).
    pub flags: u32,
    /// A pointer to the sub-command's structure, or its value (INIT_VCPU's RCX).
    pub data: u64,
    /// Output: the TDX module's status when a SEAMCALL failed in a way the user caused. Must be
    /// 0 on input.
    pub hw_error: u64,
}

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmCpuidEntry2 {
    /// The leaf (EAX input).
    pub function: u32,
    /// The sub-leaf (ECX input).
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub flags: u32,
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// Reserved.
    pub padding: [u32; 3],
}

/// The fixed part of `struct kvm_cpuid2`; `nent` entries follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmCpuid2 {
    /// Number of entries.
    pub nent: u32,
    /// Must be 0 (INIT_VM checks it).
    pub padding: u32,
}

/// The fixed part of `struct kvm_tdx_capabilities` (6.16 layout: the TDVMCALL-info words took
/// four of the reserved words); `cpuid.nent` entries follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmTdxCapabilities {
    /// ATTRIBUTES bits a TD may set through KVM.
    pub supported_attrs: u64,
    /// XFAM bits a TD may set through KVM.
    pub supported_xfam: u64,
    /// TDVMCALL leaves (GetTdVmCallInfo R11) KVM handles itself.
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// TDVMCALL leaves (R11) KVM forwards to userspace.
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDVMCALL leaves (R12) KVM handles itself.
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// TDVMCALL leaves (R12) KVM forwards to userspace.
    pub user_tdvmcallinfo_1_r12: u64,
    /// Reserved.
    pub reserved: [u64; 250],
    /// The configurable CPUID leaves; in: how many entries the buffer has.
    pub cpuid: KvmCpuid2,
}

impl KvmTdxCapabilities {
    /// Everything 0.
    pub const ZERO: Self = Self {
        supported_attrs: 0,
        supported_xfam: 0,
        kernel_tdvmcallinfo_1_r11: 0,
        user_tdvmcallinfo_1_r11: 0,
        kernel_tdvmcallinfo_1_r12: 0,
        user_tdvmcallinfo_1_r12: 0,
        reserved: [0; 250],
        cpuid: KvmCpuid2 {
            nent: 0,
            padding: 0,
        },
    };
}

/// The fixed part of `struct kvm_tdx_init_vm` (256 bytes, then `kvm_cpuid2`); `cpuid.nent`
/// entries follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmTdxInitVm {
    /// TD ATTRIBUTES (within `supported_attrs`).
    pub attributes: u64,
    /// TD XFAM (within `supported_xfam`).
    pub xfam: u64,
    /// MRCONFIGID, copied into TD_PARAMS.
    pub mrconfigid: [u64; 6],
    /// MROWNER, copied into TD_PARAMS.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG, copied into TD_PARAMS.
    pub mrownerconfig: [u64; 6],
    /// Reserved, must be 0.
    pub reserved: [u64; 12],
    /// The CPUID configuration.
    pub cpuid: KvmCpuid2,
}

impl KvmTdxInitVm {
    /// Everything 0.
    pub const ZERO: Self = Self {
        attributes: 0,
        xfam: 0,
        mrconfigid: [0; 6],
        mrowner: [0; 6],
        mrownerconfig: [0; 6],
        reserved: [0; 12],
        cpuid: KvmCpuid2 {
            nent: 0,
            padding: 0,
        },
    };
}

/// `struct kvm_tdx_init_mem_region`. Written back with the progress made.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmTdxInitMemRegion {
    /// User address of the source data (page-aligned).
    pub source_addr: u64,
    /// Private GPA of the first page (page-aligned, without the shared bit).
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

// Upstream's layouts (`arch/x86/include/uapi/asm/kvm.h`, 6.16).
const _: () = {
    assert!(size_of::<KvmTdxCmd>() == 24);
    assert!(offset_of!(KvmTdxCmd, flags) == 4);
    assert!(offset_of!(KvmTdxCmd, data) == 8);
    assert!(offset_of!(KvmTdxCmd, hw_error) == 16);
    assert!(size_of::<KvmCpuidEntry2>() == 40);
    assert!(offset_of!(KvmCpuidEntry2, eax) == 12);
    assert!(offset_of!(KvmCpuidEntry2, edx) == 24);
    assert!(size_of::<KvmCpuid2>() == 8);
    assert!(offset_of!(KvmTdxCapabilities, supported_xfam) == 8);
    assert!(offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12) == 40);
    assert!(offset_of!(KvmTdxCapabilities, reserved) == 48);
    assert!(offset_of!(KvmTdxCapabilities, cpuid) == 2048);
    assert!(size_of::<KvmTdxCapabilities>() == 2056);
    assert!(offset_of!(KvmTdxInitVm, mrconfigid) == 16);
    assert!(offset_of!(KvmTdxInitVm, mrowner) == 64);
    assert!(offset_of!(KvmTdxInitVm, mrownerconfig) == 112);
    assert!(offset_of!(KvmTdxInitVm, reserved) == 160);
    assert!(offset_of!(KvmTdxInitVm, cpuid) == 256);
    assert!(size_of::<KvmTdxInitVm>() == 264);
    assert!(size_of::<KvmTdxInitMemRegion>() == 24);
    assert!(offset_of!(KvmTdxInitMemRegion, nr_pages) == 16);
    // _IOWR(KVMIO = 0xAE, 0xba, unsigned long): dir 3 << 30, size 8 << 16.
    assert!(KVM_MEMORY_ENCRYPT_OP == (3 << 30) | (8 << 16) | (0xAE << 8) | 0xba);
};

/// A uapi structure whose bytes are its value: `#[repr(C)]`, integer fields only, no padding
/// (the size and offset asserts above show the fields cover it exactly). Copies to and from
/// user memory go through [`Plain::as_bytes`] and [`Plain::as_bytes_mut`].
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structures (or arrays of them) made of integers only, with no
/// padding bytes, so every byte is initialised and every bit pattern is a valid value.
pub unsafe trait Plain: Sized {
    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Plain`: all `size_of::<Self>()` bytes are initialised integers.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// The value's bytes, writable: any bytes written make a valid value.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `Self: Plain`: any bit pattern is a valid value, and `self` is borrowed
        // exclusively for the slice's life.
        unsafe {
            core::slice::from_raw_parts_mut((self as *mut Self).cast::<u8>(), size_of::<Self>())
        }
    }
}

// SAFETY: each is `#[repr(C)]`, integers only; the asserts above pin their sizes to the sum of
// their fields (no padding).
unsafe impl Plain for KvmTdxCmd {}
// SAFETY: as above.
unsafe impl Plain for KvmCpuidEntry2 {}
// SAFETY: as above.
unsafe impl Plain for KvmCpuid2 {}
// SAFETY: as above.
unsafe impl Plain for KvmTdxCapabilities {}
// SAFETY: as above.
unsafe impl Plain for KvmTdxInitVm {}
// SAFETY: as above.
unsafe impl Plain for KvmTdxInitMemRegion {}

/// The bytes of a slice of plain structures (an array of CPUID entries).
#[must_use]
pub fn slice_as_bytes<T: Plain>(s: &[T]) -> &[u8] {
    // SAFETY: `T: Plain` and arrays of it have no padding between elements (size is a multiple
    // of alignment), so the slice's bytes are initialised.
    unsafe { core::slice::from_raw_parts(s.as_ptr().cast::<u8>(), core::mem::size_of_val(s)) }
}

/// The bytes of a slice of plain structures, writable.
pub fn slice_as_bytes_mut<T: Plain>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `slice_as_bytes`; any bytes make valid `T`s, and `s` is borrowed
    // exclusively.
    unsafe {
        core::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), core::mem::size_of_val(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_upstreams_and_scoped_to_their_fd() {
        assert_eq!(TdxCmdId::from_raw(0), Some(TdxCmdId::Capabilities));
        assert_eq!(TdxCmdId::from_raw(5), Some(TdxCmdId::GetCpuid));
        assert_eq!(TdxCmdId::from_raw(6), None); // TERMINATE_VM: not ABI
        assert_eq!(TdxCmdId::from_raw(u32::MAX), None);
        assert!(TdxCmdId::FinalizeVm.is_vm_scope());
        assert!(!TdxCmdId::InitMemRegion.is_vm_scope());
    }

    #[test]
    fn plain_bytes_are_the_uapi_layout() {
        let mut c = KvmTdxCmd {
            id: 3,
            flags: 1,
            data: 0x1122,
            hw_error: 0,
        };
        assert_eq!(&c.as_bytes()[..9], &[3, 0, 0, 0, 1, 0, 0, 0, 0x22]);
        c.as_bytes_mut()[16] = 0x45;
        assert_eq!(c.hw_error, 0x45);
        let mut e = [KvmCpuidEntry2::default(); 2];
        slice_as_bytes_mut(&mut e)[40 + 12] = 7; // entry 1, eax
        assert_eq!(e[1].eax, 7);
        assert_eq!(slice_as_bytes(&e).len(), 80);
    }
}
