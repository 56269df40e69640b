// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_TDX_INIT_VM`'s argument checks and the TD_PARAMS KVM builds from it, as upstream's
//! `tdx_td_init` and `setup_tdparams*` (6.16) do: the VMM's ATTRIBUTES, XFAM, measurement
//! registers and CPUID configuration, KVM's vCPU limit and TSC frequency, the GPAW the VMM asks
//! for through CPUID.0x80000008.EAX[23:16].

use super::errno::Errno;
use super::td_conf::{guest_phys_addr_bits, set_guest_phys_addr_bits, unsupported_cpuid, TdConf};
use super::uapi::{
    KvmCpuidEntry2, KvmTdxInitVm, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES,
};
use crate::abi::td_params::{eptp_controls, CpuidConfig, TdParams, CONFIG_FLAGS_GPAW52};

/// CONFIG_FLAGS.NO_RBP_MOD: KVM always sets it (`TDX_CONFIG_FLAGS_NO_RBP_MOD`).
pub const CONFIG_FLAGS_NO_RBP_MOD: u64 = 1 << 2;

/// What INIT_VM takes from the VM rather than from the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmLimits {
    /// The VM's vCPU limit (`kvm->max_vcpus`: KVM's and the present CPUs' minimum).
    pub max_vcpus: u16,
    /// The VM's TSC frequency in kHz (`kvm->arch.default_tsc_khz`).
    pub tsc_khz: u32,
    /// Whether the host can run a 5-level EPT (GPAW 52).
    pub ept_5level: bool,
    /// KVM's supported XCR0 | XSS.
    pub kvm_xfam: u64,
}

/// The header checks before the entries are read: more than 256 entries → E2BIG.
///
/// # Errors
///
/// E2BIG.
pub const fn check_nent(init_vm: &KvmTdxInitVm) -> Result<usize, Errno> {
    if init_vm.cpuid.nent > KVM_MAX_CPUID_ENTRIES {
        return Err(Errno::E2BIG);
    }
    Ok(init_vm.cpuid.nent as usize)
}

/// The checks after the entries were read: reserved words, then `cpuid.padding` → EINVAL.
///
/// # Errors
///
/// EINVAL.
pub fn check_reserved(init_vm: &KvmTdxInitVm) -> Result<(), Errno> {
    if init_vm.reserved.iter().any(|&w| w != 0) || init_vm.cpuid.padding != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// `kvm_find_cpuid_entry2`: the first entry of `function` whose index matches `index` or does
/// not matter (no `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
#[must_use]
pub fn find_cpuid_entry2(
    entries: &[KvmCpuidEntry2],
    function: u32,
    index: u32,
) -> Option<&KvmCpuidEntry2> {
    entries.iter().find(|e| {
        e.function == function
            && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
    })
}

/// `TDX_TSC_KHZ_TO_25MHZ`: kHz in TD_PARAMS' 25 MHz units (rounded down).
#[must_use]
pub const fn tsc_khz_to_25mhz(khz: u32) -> u16 {
    let v = khz / 25_000;
    if v > u16::MAX as u32 {
        u16::MAX
    } else {
        v as u16
    }
}

/// `setup_tdparams`: TD_PARAMS from the user's `init_vm` and `entries` on a module with limits
/// `conf`, for a VM with `limits` that has `vcpus_created` vCPUs already. In upstream's order:
/// vCPUs exist → EBUSY; ATTRIBUTES or XFAM outside what is supported → EINVAL; no 0x80000008
/// entry, or a GPAW other than 48 or 52 (52 without 5-level EPT) → EINVAL
/// (`setup_tdparams_eptp_controls`); then each configurable leaf takes the first matching
/// entry, TSX or WAITPKG → EINVAL, and an entry no configurable leaf took → EINVAL
/// (`setup_tdparams_cpuids`). The module checks the values themselves at TDH.MNG.INIT.
///
/// # Errors
///
/// As above.
pub fn setup_td_params(
    conf: &TdConf,
    init_vm: &KvmTdxInitVm,
    entries: &[KvmCpuidEntry2],
    limits: &VmLimits,
    vcpus_created: bool,
) -> Result<TdParams, Errno> {
    if vcpus_created {
        return Err(Errno::EBUSY);
    }
    if init_vm.attributes & !conf.supported_attrs() != 0
        || init_vm.xfam & !conf.supported_xfam(limits.kvm_xfam) != 0
    {
        return Err(Errno::EINVAL);
    }
    let mut p = TdParams {
        max_vcpus: limits.max_vcpus,
        attributes: init_vm.attributes | conf.attributes_fixed1,
        xfam: init_vm.xfam | conf.xfam_fixed1,
        config_flags: CONFIG_FLAGS_NO_RBP_MOD,
        tsc_frequency: tsc_khz_to_25mhz(limits.tsc_khz),
        ..TdParams::ZERO
    };
    // setup_tdparams_eptp_controls.
    let gpa = find_cpuid_entry2(entries, 0x8000_0008, 0).ok_or(Errno::EINVAL)?;
    match guest_phys_addr_bits(gpa.eax) {
        48 => p.eptp_controls = eptp_controls(4),
        52 if limits.ept_5level => {
            p.eptp_controls = eptp_controls(5);
            p.config_flags |= CONFIG_FLAGS_GPAW52;
        }
        _ => return Err(Errno::EINVAL),
    }
    // setup_tdparams_cpuids.
    let mut copied = 0usize;
    for (i, slot) in p
        .cpuid_config_vals
        .iter_mut()
        .enumerate()
        .take(conf.num_cpuid_config)
    {
        let Some(leaf) = conf.cpuid_entry(i) else {
            break;
        };
        let Some(e) = find_cpuid_entry2(entries, leaf.function, leaf.index) else {
            continue;
        };
        if unsupported_cpuid(e) {
            return Err(Errno::EINVAL);
        }
        copied += 1;
        *slot = CpuidConfig {
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        };
        // The module does not take EAX[23:16] (KVM's GPAW interface, used above).
        if leaf.function == 0x8000_0008 {
            slot.eax = set_guest_phys_addr_bits(slot.eax, 0);
        }
    }
    if copied != entries.len() {
        return Err(Errno::EINVAL);
    }
    p.mr_config_id = words_to_bytes(&init_vm.mrconfigid);
    p.mr_owner = words_to_bytes(&init_vm.mrowner);
    p.mr_owner_config = words_to_bytes(&init_vm.mrownerconfig);
    Ok(p)
}

/// The 48 bytes of six u64 words, in memory order (the uapi's `__u64[6]` copied by `memcpy`).
fn words_to_bytes(w: &[u64; 6]) -> [u8; 48] {
    let mut b = [0; 48];
    for (i, v) in w.iter().enumerate() {
        for (j, byte) in v.to_le_bytes().into_iter().enumerate() {
            b[(8 * i + j) % 48] = byte;
        }
    }
    b
}

/// What a failed TDH.MNG.INIT becomes (`__tdx_td_init`): `OPERAND_INVALID` (any operand) →
/// EINVAL with the status for `hw_error`; anything else → EIO (hw_error stays 0).
#[must_use]
pub const fn mng_init_error(status: u64) -> (Errno, u64) {
    if status & STATUS_MASK == crate::abi::status::OPERAND_INVALID {
        (Errno::EINVAL, status)
    } else {
        (Errno::EIO, 0)
    }
}

/// `TDX_SEAMCALL_STATUS_MASK`: the status class without the operand/detail.
pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;
