// SPDX-License-Identifier: GPL-2.0-only
//! Model-specific registers: the vCPU's MSR state, the host-initiated (`KVM_GET/SET_MSRS`) and
//! guest (`RDMSR`/`WRMSR` exits) accesses with upstream's rules (`arch/x86/kvm/x86.c`
//! `kvm_get/set_msr_common`, `__kvm_set_msr`, `kvm_do_msr_access`, `set_efer`; `svm/svm.c`
//! `svm_get/set_msr` without LBR virtualisation, nested SVM or a PMU), the MSR lists
//! (`KVM_GET_MSR_INDEX_LIST`, `KVM_GET_MSR_FEATURE_INDEX_LIST`) and the feature MSRs.
//!
//! Only MSRs this module really virtualises are listed; every listed MSR can be read and
//! written back by the host, so `vcpu_save_state`/`vcpu_load_state` round-trip. A guest access to
//! any other MSR is [`MsrFault::Unsupported`] (the exit handler injects #GP or, with
//! `KVM_CAP_X86_USER_SPACE_MSR`, exits with reason UNKNOWN); a refused value is
//! [`MsrFault::Invalid`] (#GP, reason INVAL).

use crate::cpuid::GuestCpu;
use crate::regs::{self, efer, ModuleLimits};
use crate::state::{CpuState, SegReg};

/// MSR numbers (`msr-index.h`).
#[allow(missing_docs)]
pub mod index {
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_PLATFORM_ID: u32 = 0x17;
    pub const IA32_APICBASE: u32 = 0x1b;
    pub const EBL_CR_POWERON: u32 = 0x2a;
    pub const EBC_FREQUENCY_ID: u32 = 0x2c;
    pub const IA32_FEAT_CTL: u32 = 0x3a;
    pub const IA32_TSC_ADJUST: u32 = 0x3b;
    pub const IA32_SPEC_CTRL: u32 = 0x48;
    pub const IA32_UCODE_WRITE: u32 = 0x79;
    pub const IA32_UCODE_REV: u32 = 0x8b;
    pub const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
    pub const FSB_FREQ: u32 = 0xcd;
    pub const PLATFORM_INFO: u32 = 0xce;
    pub const MTRR_CAP: u32 = 0xfe;
    pub const MISC_FEATURES_ENABLES: u32 = 0x140;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_PERF_STATUS: u32 = 0x198;
    pub const IA32_PERF_CTL: u32 = 0x199;
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub const IA32_POWER_CTL: u32 = 0x1fc;
    pub const IA32_DEBUGCTLMSR: u32 = 0x1d9;
    pub const IA32_LASTBRANCHFROMIP: u32 = 0x1db;
    pub const IA32_LASTBRANCHTOIP: u32 = 0x1dc;
    pub const IA32_LASTINTFROMIP: u32 = 0x1dd;
    pub const IA32_LASTINTTOIP: u32 = 0x1de;
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    /// `MTRRphysMask_MSR(KVM_NR_VAR_MTRR - 1)`.
    pub const MTRR_PHYS_MASK_LAST: u32 = 0x20f;
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26f;
    pub const IA32_CR_PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const IA32_PERF_CAPABILITIES: u32 = 0x345;
    pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
    pub const IA32_XSS: u32 = 0xda0;
    pub const RAPL_POWER_UNIT: u32 = 0x606;
    pub const PKG_ENERGY_STATUS: u32 = 0x611;
    pub const DRAM_ENERGY_STATUS: u32 = 0x619;
    pub const PP0_ENERGY_STATUS: u32 = 0x639;
    pub const PP1_ENERGY_STATUS: u32 = 0x641;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
    pub const AMD64_TSC_RATIO: u32 = 0xc000_0104;
    pub const K7_EVNTSEL0: u32 = 0xc001_0000;
    pub const K7_EVNTSEL3: u32 = 0xc001_0003;
    pub const K7_PERFCTR0: u32 = 0xc001_0004;
    pub const K7_PERFCTR3: u32 = 0xc001_0007;
    pub const AMD64_SYSCFG: u32 = 0xc001_0010;
    pub const K7_HWCR: u32 = 0xc001_0015;
    pub const AMD64_NB_CFG: u32 = 0xc001_001f;
    pub const AMD64_PATCH_LOADER: u32 = 0xc001_0020;
    pub const K8_INT_PENDING_MSG: u32 = 0xc001_0055;
    pub const FAM10H_MMIO_CONF_BASE: u32 = 0xc001_0058;
    pub const K8_TSEG_ADDR: u32 = 0xc001_0112;
    pub const K8_TSEG_MASK: u32 = 0xc001_0113;
    pub const VM_HSAVE_PA: u32 = 0xc001_0117;
    pub const AMD64_VIRT_SPEC_CTRL: u32 = 0xc001_011f;
    pub const AMD64_DC_CFG: u32 = 0xc001_1022;
    pub const AMD64_TW_CFG: u32 = 0xc001_1023;
    pub const AMD64_DE_CFG: u32 = 0xc001_1029;
    pub const AMD64_BU_CFG2: u32 = 0xc001_102a;
    pub const F15H_EX_CFG: u32 = 0xc001_102c;
}
use index::*;

/// `MSR_IA32_MISC_ENABLE_BTS_UNAVAIL`.
pub const MISC_ENABLE_BTS_UNAVAIL: u64 = 1 << 11;
/// `MSR_IA32_MISC_ENABLE_PEBS_UNAVAIL`.
pub const MISC_ENABLE_PEBS_UNAVAIL: u64 = 1 << 12;
/// `MSR_IA32_MISC_ENABLE_EMON`: reads as written by the host, guest writes are ignored.
pub const MISC_ENABLE_EMON: u64 = 1 << 7;
/// `ARCH_CAP_PSCHANGE_MC_NO`.
pub const ARCH_CAP_PSCHANGE_MC_NO: u64 = 1 << 6;
/// `MSR_AMD64_DE_CFG_LFENCE_SERIALIZE`.
pub const DE_CFG_LFENCE_SERIALIZE: u64 = 1 << 1;
/// `MSR_PLATFORM_INFO` bit 31: CPUID faulting is supported (`MSR_MISC_FEATURES_ENABLES` bit 0
/// may be set).
pub const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// `MSR_MISC_FEATURES_ENABLES` bit 0: CPUID at CPL > 0 raises #GP(0).
pub const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;
/// The microcode revision a vCPU reports until the host sets one (upstream stuffs it for SVM
/// vCPUs with `KVM_X86_QUIRK_STUFF_FEATURE_MSRS`).
pub const DEFAULT_UCODE_REV: u64 = 0x0100_0065;

/// MSRs beyond [`crate::state::SwitchedMsrs`] that the vCPU virtualises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrState {
    /// `MSR_IA32_MISC_ENABLE`.
    pub misc_enable: u64,
    /// `MSR_IA32_TSC_ADJUST`.
    pub tsc_adjust: u64,
    /// `MSR_K7_HWCR`.
    pub hwcr: u64,
    /// `MSR_IA32_ARCH_CAPABILITIES` as the guest sees it.
    pub arch_capabilities: u64,
    /// `MSR_IA32_PERF_CAPABILITIES` (0: no PMU is virtualised).
    pub perf_capabilities: u64,
    /// `MSR_IA32_UCODE_REV`.
    pub microcode_version: u64,
    /// `MSR_IA32_POWER_CTL`.
    pub power_ctl: u64,
    /// `MSR_AMD64_DE_CFG`.
    pub de_cfg: u64,
    /// `MSR_PLATFORM_INFO` (upstream `vcpu->arch.msr_platform_info`): only the host writes it.
    pub platform_info: u64,
    /// `MSR_MISC_FEATURES_ENABLES` (upstream `vcpu->arch.msr_misc_features_enables`).
    pub misc_features_enables: u64,
    /// The MTRRs (upstream `vcpu->arch.mtrr_state`): plain storage, as in 6.12, which no
    /// longer lets guest MTRRs change memory types; INIT keeps them.
    pub mtrr: Mtrrs,
    /// `MSR_IA32_SPEC_CTRL` (upstream `svm->spec_ctrl`): the backend loads it around VMRUN
    /// (`vmenter.S`, or the VMCB's field with V_SPEC_CTRL); INIT and RESET clear it.
    pub spec_ctrl: u64,
    /// `MSR_AMD64_VIRT_SPEC_CTRL` (upstream `svm->virt_spec_ctrl`, only SSBD): the backend
    /// applies it around VMRUN (`x86_spec_ctrl_set_guest`); INIT and RESET clear it.
    pub virt_spec_ctrl: u64,
}

/// `KVM_NR_VAR_MTRR`: variable-range MTRR pairs a vCPU has.
pub const NR_VAR_MTRR: usize = 8;
/// `MSR_MTRRcap` as a vCPU reads it: WC and fixed ranges supported, no SMRR,
/// [`NR_VAR_MTRR`] variable ranges (`kvm_mtrr_get_msr`).
pub const MTRR_CAP_VALUE: u64 = 0x500 | NR_VAR_MTRR as u64;

/// A vCPU's MTRRs (upstream `struct kvm_mtrr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtrrs {
    /// `MTRRphysBase0`, `MTRRphysMask0`, .. (MSR 0x200 + i).
    pub var: [u64; NR_VAR_MTRR * 2],
    /// `MTRRfix64K_00000`, `MTRRfix16K_80000/A0000`, `MTRRfix4K_C0000..F8000`.
    pub fixed: [u64; 11],
    /// `MTRRdefType`.
    pub deftype: u64,
}

impl Mtrrs {
    /// The register behind an MTRR MSR (upstream `find_mtrr`); None for MSRs in the MTRR range
    /// that do not exist.
    fn slot(&mut self, index: u32) -> Option<&mut u64> {
        let i = |base: u32| (index - base) as usize;
        match index {
            MTRR_PHYS_BASE0..=MTRR_PHYS_MASK_LAST => Some(&mut self.var[i(MTRR_PHYS_BASE0)]),
            MTRR_FIX64K_00000 => Some(&mut self.fixed[0]),
            MTRR_FIX16K_80000 | MTRR_FIX16K_A0000 => {
                Some(&mut self.fixed[1 + i(MTRR_FIX16K_80000)])
            }
            MTRR_FIX4K_C0000..=MTRR_FIX4K_F8000 => Some(&mut self.fixed[3 + i(MTRR_FIX4K_C0000)]),
            MTRR_DEF_TYPE => Some(&mut self.deftype),
            _ => None,
        }
    }

    /// An MTRR MSR's value (None: no such MTRR).
    pub fn read(&self, index: u32) -> Option<u64> {
        let mut c = *self;
        c.slot(index).map(|v| *v)
    }
}

/// The MSRs upstream's `kvm_set/get_msr_common` send to `kvm_mtrr_set/get_msr`
/// (`MTRRphysBase_MSR(0) ... MSR_MTRRfix4K_F8000` and `MSR_MTRRdefType`).
fn is_mtrr_range(index: u32) -> bool {
    (MTRR_PHYS_BASE0..=MTRR_FIX4K_F8000).contains(&index) || index == MTRR_DEF_TYPE
}

/// A valid MTRR memory type: UC, WC, WT, WP, WB (0, 1, 4, 5, 6).
fn valid_mtrr_type(t: u64) -> bool {
    t < 8 && (1u64 << t) & 0x73 != 0
}

/// Upstream `kvm_mtrr_valid`: the type fields hold valid types, reserved bits are clear (for
/// the variable ranges: the GPA bits above the guest's MAXPHYADDR too).
pub fn mtrr_valid(g: &GuestCpu, index: u32, data: u64) -> bool {
    if index == MTRR_DEF_TYPE {
        return data & !0xcff == 0 && valid_mtrr_type(data & 0xff);
    }
    if (MTRR_FIX64K_00000..=MTRR_FIX4K_F8000).contains(&index) {
        return (0..8).all(|i| valid_mtrr_type((data >> (i * 8)) & 0xff));
    }
    let mut mask = g.reserved_gpa_bits();
    if index & 1 == 0 {
        if !valid_mtrr_type(data & 0xff) {
            return false;
        }
        mask |= 0xf00;
    } else {
        mask |= 0x7ff;
    }
    data & mask == 0
}

/// `MSR_AMD64_VIRT_SPEC_CTRL`'s only bit, SSBD (`SPEC_CTRL_SSBD`).
pub const VIRT_SPEC_CTRL_SSBD: u64 = 1 << 2;
/// `MSR_AMD64_TSC_RATIO`'s value without TSC scaling (upstream
/// `kvm_caps.default_tsc_scaling_ratio`, 1.0 in 8.32 fixed point).
pub const TSC_RATIO_DEFAULT: u64 = 1 << 32;

impl MsrState {
    /// The values at vCPU creation (`kvm_arch_vcpu_create` + `kvm_vcpu_reset` + `svm_vcpu_create`
    /// with the default quirks).
    pub fn reset(caps: &MsrCaps) -> MsrState {
        MsrState {
            misc_enable: MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_BTS_UNAVAIL,
            arch_capabilities: caps.arch_capabilities,
            microcode_version: DEFAULT_UCODE_REV,
            // KVM_X86_QUIRK_STUFF_FEATURE_MSRS: CPUID faulting is offered (and implemented:
            // [`cpuid_faults`]).
            platform_info: PLATFORM_INFO_CPUID_FAULT,
            ..MsrState::default()
        }
    }
}

/// What the module and its host allow, fixed at load (upstream's `kvm_caps` and host checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrCaps {
    /// CR4/EFER limits (EFER writes are checked against them).
    pub limits: ModuleLimits,
    /// `MSR_TSC_AUX` is virtualised (the module supports RDTSCP or RDPID).
    pub tsc_aux: bool,
    /// `MSR_IA32_ARCH_CAPABILITIES` the module reports (`kvm_get_arch_capabilities`).
    pub arch_capabilities: u64,
    /// DE_CFG bits the module supports (`svm_get_feature_msr`).
    pub de_cfg: u64,
    /// The host's microcode revision (the feature MSR `MSR_IA32_UCODE_REV`).
    pub host_ucode_rev: u64,
    /// The host reads `MSR_IA32_FEAT_CTL` (upstream's `kvm_probe_msr_to_save` then lists it;
    /// nothing virtualises it, so a vCPU reads 0 and accepts only 0 from the host).
    pub feat_ctl: bool,
    /// The host reads `MSR_IA32_SPEC_CTRL` (upstream's probe then lists it).
    pub spec_ctrl: bool,
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrFault {
    /// The MSR is not virtualised (`KVM_MSR_RET_UNSUPPORTED`).
    Unsupported,
    /// The MSR exists but refuses this access or value (`1`: #GP for a guest).
    Invalid,
}

/// What a successful write changed that the caller must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrEffects {
    /// EFER changed (paging mode: MMU context reset, as `set_efer`).
    pub mmu_reset: bool,
    /// APIC_BASE changed (CPUID.1 APIC mirrors it: [`crate::cpuid::update_runtime`]).
    pub cpuid_runtime: bool,
}

/// The context of an access: the guest model, the module's caps and the host TSC now.
#[derive(Clone, Copy, Debug)]
pub struct MsrCtx<'a> {
    /// The vCPU's CPUID model.
    pub guest: &'a GuestCpu,
    /// The module's caps.
    pub caps: &'a MsrCaps,
    /// The host TSC at the time of the access (MSR_IA32_TSC = host TSC + offset).
    pub host_tsc: u64,
    /// The guest may read `MSR_PLATFORM_INFO` (the VM's `KVM_CAP_MSR_PLATFORM_INFO`, upstream
    /// `kvm->arch.guest_can_read_msr_platform_info`, default true); host reads always work.
    pub platform_info_readable: bool,
    /// Whether the host CPU takes this `MSR_IA32_SPEC_CTRL` value (upstream
    /// `kvm_spec_ctrl_test_value`: a faulting WRMSR refuses it).
    pub spec_ctrl_test: fn(u64) -> bool,
}

/// The MSRs `KVM_GET_MSR_INDEX_LIST` reports when the host has them all ([`index_list`]
/// filters): upstream's `msrs_to_save` (as probed on an SVM host without LBRV, PMU, MPX, PT,
/// WAITPKG, XFD or nesting) then its `emulated_msrs` this module implements (the PV ones:
/// [`crate::pv`]).
const INDEX_LIST: [u32; 31] = [
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    STAR,
    CSTAR,
    KERNEL_GS_BASE,
    SYSCALL_MASK,
    LSTAR,
    IA32_TSC,
    IA32_CR_PAT,
    IA32_FEAT_CTL,
    TSC_AUX,
    IA32_SPEC_CTRL,
    IA32_DEBUGCTLMSR,
    // HOOK(clock): kvm-clock and steal time (upstream's emulated_msrs order).
    crate::pv::INDEX_LIST[0],
    crate::pv::INDEX_LIST[1],
    crate::pv::INDEX_LIST[2],
    crate::pv::INDEX_LIST[3],
    crate::pv::INDEX_LIST[4],
    IA32_TSC_ADJUST,
    // HOOK(abi): the LAPIC's TSC deadline (src/irq/lapic.rs serves it; 0 without a LAPIC).
    IA32_TSC_DEADLINE,
    IA32_ARCH_CAPABILITIES,
    IA32_PERF_CAPABILITIES,
    IA32_MISC_ENABLE,
    // HOOK(abi): KVM_CAP_MSR_PLATFORM_INFO and CPUID faulting.
    PLATFORM_INFO,
    MISC_FEATURES_ENABLES,
    AMD64_VIRT_SPEC_CTRL,
    AMD64_TSC_RATIO,
    IA32_POWER_CTL,
    IA32_UCODE_REV,
    K7_HWCR,
];

/// `KVM_GET_MSR_INDEX_LIST`: the MSRs userspace saves and restores, in upstream's order.
pub fn index_list(caps: &MsrCaps) -> impl Iterator<Item = u32> + '_ {
    INDEX_LIST.iter().copied().filter(move |&m| match m {
        TSC_AUX => caps.tsc_aux,
        IA32_FEAT_CTL => caps.feat_ctl,
        IA32_SPEC_CTRL => caps.spec_ctrl,
        _ => true,
    })
}

/// The number of MSRs in [`index_list`].
pub fn index_list_len(caps: &MsrCaps) -> usize {
    index_list(caps).count()
}

/// `KVM_GET_MSR_FEATURE_INDEX_LIST`: the feature MSRs (upstream's
/// `msr_based_features_all_except_vmx`; no VMX MSRs on an SVM host).
pub const FEATURE_LIST: [u32; 4] = [
    AMD64_DE_CFG,
    IA32_UCODE_REV,
    IA32_ARCH_CAPABILITIES,
    IA32_PERF_CAPABILITIES,
];

/// Whether `index` is advertised ([`index_list`]; upstream `kvm_is_advertised_msr`).
pub fn is_advertised(caps: &MsrCaps, index: u32) -> bool {
    index_list(caps).any(|m| m == index)
}

/// A feature MSR's value (`kvm_get_feature_msr`); None for other MSRs.
pub fn feature_value(caps: &MsrCaps, index: u32) -> Option<u64> {
    match index {
        IA32_ARCH_CAPABILITIES => Some(caps.arch_capabilities),
        IA32_PERF_CAPABILITIES => Some(0),
        IA32_UCODE_REV => Some(caps.host_ucode_rev),
        AMD64_DE_CFG => Some(caps.de_cfg),
        _ => None,
    }
}

/// System `KVM_GET_MSRS` for one entry (`do_get_feature_msr` through `kvm_do_msr_access`): a
/// feature MSR's value; any other advertised MSR reads 0 successfully (upstream's "userspace may
/// read advertised MSRs" rule); anything else fails.
pub fn get_feature(caps: &MsrCaps, index: u32) -> Option<u64> {
    feature_value(caps, index).or_else(|| is_advertised(caps, index).then_some(0))
}

/// Upstream's `tsc_tolerance_ppm` default: a requested guest TSC rate this close to the host's
/// needs no scaling.
pub const TSC_TOLERANCE_PPM: i64 = 250;

/// `adjust_tsc_khz`: `khz` moved by `ppm` parts per million (truncated).
fn adjust_tsc_khz(khz: u32, ppm: i64) -> u64 {
    (u64::from(khz) * (1_000_000 + ppm) as u64) / 1_000_000
}

/// vCPU `KVM_SET_TSC_KHZ` without TSC scaling (upstream's ioctl case, `kvm_set_tsc_khz` and
/// `set_tsc_khz`): 0 asks for the host's rate. Returns the vCPU's new rate, if it changes
/// (upstream stores `virtual_tsc_khz` before it checks), and whether the ioctl succeeds: only within
/// [`TSC_TOLERANCE_PPM`] of the host's rate. Upstream also accepts faster rates by catching
/// the TSC up on every entry (`tsc_always_catchup`), which this module does not do: refused,
/// and the rate is kept (the guest's TSC would not run at it).
pub fn vcpu_set_tsc_khz(requested: u32, host_khz: u32) -> (Option<u32>, bool) {
    let khz = if requested == 0 { host_khz } else { requested };
    if khz == 0 {
        // No calibrated host rate: upstream's `kvm_set_tsc_khz(vcpu, 0)` fails, rate kept.
        return (None, false);
    }
    let lo = adjust_tsc_khz(host_khz, -TSC_TOLERANCE_PPM);
    let hi = adjust_tsc_khz(host_khz, TSC_TOLERANCE_PPM);
    let k = u64::from(khz);
    if k > hi {
        return (None, false);
    }
    (Some(khz), k >= lo)
}

/// The guest's linear-address width (upstream `vcpu_virt_addr_bits`): 57 with CR4.LA57, else 48.
fn virt_addr_bits(s: &CpuState) -> u32 {
    if s.cr4 & regs::cr4::LA57 != 0 {
        57
    } else {
        48
    }
}

/// Sign-extends from bit `bits - 1` (`__canonical_address`).
fn canonical(v: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

fn is_canonical(v: u64, bits: u32) -> bool {
    canonical(v, bits) == v
}

/// `kvm_pat_valid`: every byte is a valid memory type (0, 1, 4, 5, 6, 7).
pub fn pat_valid(v: u64) -> bool {
    // Each byte below 8 and not 2 or 3.
    if v & 0xf8f8_f8f8_f8f8_f8f8 != 0 {
        return false;
    }
    (v | ((v & 0x0202_0202_0202_0202) << 1)) == v
}

/// One MSR read (`__kvm_get_msr` → `svm_get_msr` → `kvm_get_msr_common`).
pub fn get(
    s: &CpuState,
    ctx: &MsrCtx<'_>,
    index: u32,
    host_initiated: bool,
) -> Result<u64, MsrFault> {
    let m = &s.msrs;
    let g = ctx.guest;
    Ok(match index {
        STAR => m.star,
        LSTAR => m.lstar,
        CSTAR => m.cstar,
        SYSCALL_MASK => m.sfmask,
        KERNEL_GS_BASE => m.kernel_gs_base,
        FS_BASE => s.seg(SegReg::Fs).base,
        GS_BASE => s.seg(SegReg::Gs).base,
        IA32_SYSENTER_CS => m.sysenter_cs,
        IA32_SYSENTER_ESP => m.sysenter_esp,
        IA32_SYSENTER_EIP => m.sysenter_eip,
        TSC_AUX => {
            if !ctx.caps.tsc_aux || (!host_initiated && !g.rdtscp && !g.rdpid) {
                return Err(MsrFault::Invalid);
            }
            m.tsc_aux
        }
        // No LBR virtualisation: DEBUGCTL and the LBR MSRs read 0.
        IA32_DEBUGCTLMSR
        | IA32_LASTBRANCHFROMIP
        | IA32_LASTBRANCHTOIP
        | IA32_LASTINTFROMIP
        | IA32_LASTINTTOIP => 0,
        IA32_PLATFORM_ID
        | EBL_CR_POWERON
        | AMD64_SYSCFG
        | K8_TSEG_ADDR
        | K8_TSEG_MASK
        | VM_HSAVE_PA
        | K8_INT_PENDING_MSG
        | AMD64_NB_CFG
        | FAM10H_MMIO_CONF_BASE
        | AMD64_BU_CFG2
        | IA32_PERF_CTL
        | AMD64_DC_CFG
        | AMD64_TW_CFG
        | F15H_EX_CFG
        | RAPL_POWER_UNIT
        | PP0_ENERGY_STATUS
        | PP1_ENERGY_STATUS
        | PKG_ENERGY_STATUS
        | DRAM_ENERGY_STATUS => 0,
        // No PMU: the legacy K7 counters read 0.
        K7_EVNTSEL0..=K7_PERFCTR3 => 0,
        IA32_UCODE_REV => s.msr.microcode_version,
        IA32_ARCH_CAPABILITIES => {
            if !host_initiated && !g.arch_capabilities {
                return Err(MsrFault::Invalid);
            }
            s.msr.arch_capabilities
        }
        IA32_PERF_CAPABILITIES => {
            if !host_initiated && !g.pdcm {
                return Err(MsrFault::Invalid);
            }
            s.msr.perf_capabilities
        }
        IA32_POWER_CTL => s.msr.power_ctl,
        PLATFORM_INFO => {
            if !host_initiated && !ctx.platform_info_readable {
                return Err(MsrFault::Invalid);
            }
            s.msr.platform_info
        }
        MISC_FEATURES_ENABLES => s.msr.misc_features_enables,
        IA32_TSC => ctx.host_tsc.wrapping_add(s.tsc_offset),
        IA32_CR_PAT => m.pat,
        FSB_FREQ => 3,
        EBC_FREQUENCY_ID => 1 << 24,
        IA32_APICBASE => s.apic_base,
        IA32_TSC_ADJUST => s.msr.tsc_adjust,
        IA32_MISC_ENABLE => s.msr.misc_enable,
        IA32_PERF_STATUS => 1000 | 4 << 40,
        EFER => s.efer,
        K7_HWCR => s.msr.hwcr,
        AMD64_DE_CFG => s.msr.de_cfg,
        MTRR_CAP => MTRR_CAP_VALUE,
        // Supported XSS is 0 on SVM (kvm_caps.supported_xss), so it always reads 0.
        IA32_XSS => {
            if !host_initiated && !g.xsaves {
                return Err(MsrFault::Invalid);
            }
            0
        }
        IA32_SPEC_CTRL => {
            if !host_initiated && !g.spec_ctrl_msr {
                return Err(MsrFault::Invalid);
            }
            s.msr.spec_ctrl
        }
        AMD64_VIRT_SPEC_CTRL => {
            if !host_initiated && !g.virt_ssbd {
                return Err(MsrFault::Invalid);
            }
            s.msr.virt_spec_ctrl
        }
        // No TSC scaling for the guest (TSCRATEMSR needs nested SVM): the default ratio.
        AMD64_TSC_RATIO => {
            if !host_initiated {
                return Err(MsrFault::Invalid);
            }
            TSC_RATIO_DEFAULT
        }
        i if is_mtrr_range(i) => s.msr.mtrr.read(i).ok_or(MsrFault::Invalid)?,
        _ => return Err(MsrFault::Unsupported),
    })
}

/// One MSR write (`__kvm_set_msr` → `svm_set_msr` → `kvm_set_msr_common`). Nothing changes
/// when it fails.
pub fn set(
    s: &mut CpuState,
    ctx: &MsrCtx<'_>,
    index: u32,
    data: u64,
    host_initiated: bool,
) -> Result<MsrEffects, MsrFault> {
    let g = ctx.guest;
    let mut fx = MsrEffects::default();
    match index {
        LSTAR | CSTAR | KERNEL_GS_BASE | FS_BASE | GS_BASE
            if !is_canonical(data, virt_addr_bits(s)) =>
        {
            return Err(MsrFault::Invalid);
        }
        STAR => s.msrs.star = data,
        LSTAR => s.msrs.lstar = data,
        CSTAR => s.msrs.cstar = data,
        SYSCALL_MASK => s.msrs.sfmask = data,
        KERNEL_GS_BASE => s.msrs.kernel_gs_base = data,
        FS_BASE => s.seg_mut(SegReg::Fs).base = data,
        GS_BASE => s.seg_mut(SegReg::Gs).base = data,
        IA32_SYSENTER_CS => s.msrs.sysenter_cs = data,
        // Canonicalised; an AMD-model guest keeps only the low 32 bits (AMD has no 64-bit
        // SYSENTER), an Intel-model one all of them (svm_set_msr's sysenter_*_hi).
        IA32_SYSENTER_ESP | IA32_SYSENTER_EIP => {
            let mut v = canonical(data, virt_addr_bits(s));
            if g.amd_compatible {
                v &= 0xffff_ffff;
            }
            if index == IA32_SYSENTER_ESP {
                s.msrs.sysenter_esp = v;
            } else {
                s.msrs.sysenter_eip = v;
            }
        }
        TSC_AUX => {
            if !ctx.caps.tsc_aux || (!host_initiated && !g.rdtscp && !g.rdpid) {
                return Err(MsrFault::Invalid);
            }
            // Intel-model guests: bits 63:32 reserved; AMD-model: ignored.
            if !g.amd_compatible && data >> 32 != 0 {
                return Err(MsrFault::Invalid);
            }
            s.msrs.tsc_aux = data & 0xffff_ffff;
        }
        // No LBR virtualisation: DEBUGCTL writes are dropped (svm_set_msr without lbrv).
        IA32_DEBUGCTLMSR => {}
        AMD64_NB_CFG | IA32_UCODE_WRITE | VM_HSAVE_PA | AMD64_PATCH_LOADER | AMD64_BU_CFG2
        | AMD64_DC_CFG | AMD64_TW_CFG | F15H_EX_CFG => {}
        // No PMU: writes to the legacy counters are dropped.
        K7_EVNTSEL0..=K7_PERFCTR3 => {}
        IA32_UCODE_REV => {
            if host_initiated {
                s.msr.microcode_version = data;
            }
        }
        IA32_ARCH_CAPABILITIES => {
            if !host_initiated {
                return Err(MsrFault::Invalid);
            }
            s.msr.arch_capabilities = data;
        }
        IA32_PERF_CAPABILITIES => {
            // No PMU: only 0 (kvm_caps.supported_perf_cap) is accepted.
            if !host_initiated || data != 0 {
                return Err(MsrFault::Invalid);
            }
            s.msr.perf_capabilities = 0;
        }
        EFER => {
            fx = set_efer(s, &ctx.caps.limits, g, data, host_initiated)?;
        }
        K7_HWCR => {
            // Flush-filter disable, IGNNE emulation and TLB cache disable are ignored;
            // McStatusWrEn and TscFreqSel are kept; anything else is refused.
            let v = data & !(0x40 | 0x100 | 0x8);
            if v & !(1 << 18 | 1 << 24) != 0 {
                return Err(MsrFault::Invalid);
            }
            s.msr.hwcr = v;
        }
        FAM10H_MMIO_CONF_BASE => {
            if data != 0 {
                return Err(MsrFault::Invalid);
            }
        }
        IA32_CR_PAT => {
            if !pat_valid(data) {
                return Err(MsrFault::Invalid);
            }
            s.msrs.pat = data;
        }
        IA32_APICBASE => {
            regs::check_apic_base(s.apic_base, data, g, host_initiated)
                .map_err(|_| MsrFault::Invalid)?;
            fx.cpuid_runtime = s.apic_base != data;
            s.apic_base = data;
        }
        IA32_TSC_ADJUST => {
            if g.tsc_adjust {
                if !host_initiated {
                    // A guest write moves the TSC with it (adjust_tsc_offset_guest).
                    let adj = data.wrapping_sub(s.msr.tsc_adjust);
                    s.tsc_offset = s.tsc_offset.wrapping_add(adj);
                }
                s.msr.tsc_adjust = data;
            }
        }
        IA32_MISC_ENABLE => {
            let old = s.msr.misc_enable;
            let mut v = data;
            if !host_initiated {
                if (old ^ v) & (MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_BTS_UNAVAIL) != 0 {
                    return Err(MsrFault::Invalid);
                }
                v = (v & !MISC_ENABLE_EMON) | (old & MISC_ENABLE_EMON);
            }
            s.msr.misc_enable = v;
        }
        IA32_POWER_CTL => s.msr.power_ctl = data,
        // Only the host writes it, and it may not take CPUID faulting away while it is on.
        PLATFORM_INFO => {
            if !host_initiated || (data & PLATFORM_INFO_CPUID_FAULT == 0 && cpuid_fault_enabled(s))
            {
                return Err(MsrFault::Invalid);
            }
            s.msr.platform_info = data;
        }
        // Only CPUID faulting, and only if PLATFORM_INFO offers it (host writes too).
        MISC_FEATURES_ENABLES => {
            if data & !MISC_FEATURES_CPUID_FAULT != 0
                || (data & MISC_FEATURES_CPUID_FAULT != 0
                    && s.msr.platform_info & PLATFORM_INFO_CPUID_FAULT == 0)
            {
                return Err(MsrFault::Invalid);
            }
            s.msr.misc_features_enables = data;
        }
        IA32_TSC => {
            let offset = data.wrapping_sub(ctx.host_tsc);
            if !host_initiated {
                // The guest's write shows in TSC_ADJUST too.
                let adj = offset.wrapping_sub(s.tsc_offset);
                s.msr.tsc_adjust = s.msr.tsc_adjust.wrapping_add(adj);
            }
            s.tsc_offset = offset;
        }
        AMD64_DE_CFG => {
            if data & !ctx.caps.de_cfg != 0 {
                return Err(MsrFault::Invalid);
            }
            s.msr.de_cfg = data;
        }
        IA32_XSS => {
            // kvm_caps.supported_xss is 0 on SVM: only 0 is accepted.
            if (!host_initiated && !g.xsaves) || data != 0 {
                return Err(MsrFault::Invalid);
            }
        }
        IA32_SPEC_CTRL => {
            if (!host_initiated && !g.spec_ctrl_msr) || !(ctx.spec_ctrl_test)(data) {
                return Err(MsrFault::Invalid);
            }
            s.msr.spec_ctrl = data;
        }
        AMD64_VIRT_SPEC_CTRL => {
            if (!host_initiated && !g.virt_ssbd) || data & !VIRT_SPEC_CTRL_SSBD != 0 {
                return Err(MsrFault::Invalid);
            }
            s.msr.virt_spec_ctrl = data;
        }
        // Without TSC scaling the ratio stays the default; the host may write it back, or 0
        // (svm_set_msr's allowance for QEMU 6.2). The guest has no TSCRATEMSR.
        AMD64_TSC_RATIO => {
            if !host_initiated || (data != 0 && data != TSC_RATIO_DEFAULT) {
                return Err(MsrFault::Invalid);
            }
        }
        i if is_mtrr_range(i) => {
            if !mtrr_valid(g, i, data) {
                return Err(MsrFault::Invalid);
            }
            *s.msr.mtrr.slot(i).ok_or(MsrFault::Invalid)? = data;
        }
        _ => return Err(MsrFault::Unsupported),
    }
    Ok(fx)
}

/// Whether the guest turned CPUID faulting on (upstream `cpuid_fault_enabled`).
pub fn cpuid_fault_enabled(s: &CpuState) -> bool {
    s.msr.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0
}

/// Whether a guest `CPUID` at privilege level `cpl` faults with #GP(0) instead of executing
/// (upstream `kvm_emulate_cpuid`: `cpuid_fault_enabled && !kvm_require_cpl(vcpu, 0)`).
pub fn cpuid_faults(s: &CpuState, cpl: u8) -> bool {
    cpuid_fault_enabled(s) && cpl > 0
}

/// Upstream `set_efer`: module-reserved bits always refuse; a guest write also needs the
/// features in its CPUID and may not toggle LME while paging; LMA is the CPU's, kept.
fn set_efer(
    s: &mut CpuState,
    limits: &ModuleLimits,
    g: &GuestCpu,
    data: u64,
    host_initiated: bool,
) -> Result<MsrEffects, MsrFault> {
    if data & limits.efer_reserved != 0 {
        return Err(MsrFault::Invalid);
    }
    if !host_initiated {
        if !regs::is_valid_efer_for_guest(data, g) {
            return Err(MsrFault::Invalid);
        }
        if s.cr0 & regs::cr0::PG != 0 && (s.efer ^ data) & efer::LME != 0 {
            return Err(MsrFault::Invalid);
        }
    }
    let v = (data & !efer::LMA) | (s.efer & efer::LMA);
    let fx = MsrEffects {
        mmu_reset: v != s.efer,
        cpuid_runtime: false,
    };
    s.efer = v;
    Ok(fx)
}

/// `KVM_GET_MSRS` on a vCPU for one entry (`do_get_msr` → `kvm_do_msr_access`): an
/// unsupported but advertised MSR reads 0 successfully.
pub fn host_get(s: &CpuState, ctx: &MsrCtx<'_>, index: u32) -> Option<u64> {
    match get(s, ctx, index, true) {
        Ok(v) => Some(v),
        Err(MsrFault::Unsupported) if is_advertised(ctx.caps, index) => Some(0),
        Err(_) => None,
    }
}

/// Whether a feature MSR is immutable once the vCPU ran (`kvm_is_immutable_feature_msr`).
fn is_immutable_feature(index: u32) -> bool {
    FEATURE_LIST.contains(&index) && index != IA32_UCODE_REV
}

/// `KVM_SET_MSRS` on a vCPU for one entry (`do_set_msr`): after the first `KVM_RUN` an immutable
/// feature MSR only accepts its current value; an unsupported but advertised MSR accepts 0.
pub fn host_set(
    s: &mut CpuState,
    ctx: &MsrCtx<'_>,
    index: u32,
    data: u64,
    has_run: bool,
) -> Option<MsrEffects> {
    if has_run && is_immutable_feature(index) && host_get(s, ctx, index) != Some(data) {
        return None;
    }
    match set(s, ctx, index, data, true) {
        Ok(fx) => Some(fx),
        Err(MsrFault::Unsupported) if data == 0 && is_advertised(ctx.caps, index) => {
            Some(MsrEffects::default())
        }
        Err(_) => None,
    }
}

/// A guest `RDMSR` (the exit handler: `Err` becomes #GP or a userspace exit).
pub fn guest_rdmsr(s: &CpuState, ctx: &MsrCtx<'_>, index: u32) -> Result<u64, MsrFault> {
    get(s, ctx, index, false)
}

/// A guest `WRMSR` (the exit handler: `Err` becomes #GP or a userspace exit).
pub fn guest_wrmsr(
    s: &mut CpuState,
    ctx: &MsrCtx<'_>,
    index: u32,
    data: u64,
) -> Result<MsrEffects, MsrFault> {
    set(s, ctx, index, data, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::cr4;

    const CAPS: MsrCaps = MsrCaps {
        limits: ModuleLimits {
            cr4_reserved: crate::cpuid::CR4_RESERVED_BITS | cr4::VMXE,
            efer_reserved: !(efer::SCE | efer::LME | efer::LMA | efer::NX | efer::FFXSR),
        },
        tsc_aux: true,
        arch_capabilities: ARCH_CAP_PSCHANGE_MC_NO,
        de_cfg: DE_CFG_LFENCE_SERIALIZE,
        host_ucode_rev: 0x1234,
        feat_ctl: true,
        spec_ctrl: true,
    };

    fn ctx(g: &GuestCpu) -> MsrCtx<'_> {
        MsrCtx {
            guest: g,
            caps: &CAPS,
            host_tsc: 1_000_000,
            platform_info_readable: true,
            spec_ctrl_test: |v| v >> 32 == 0,
        }
    }

    fn state() -> CpuState {
        regs::reset(true, &GuestCpu::default(), &CAPS)
    }

    #[test]
    fn every_listed_msr_round_trips() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        let list: heapless_list::List = index_list(&CAPS).collect();
        assert_eq!(list.len(), index_list_len(&CAPS));
        for &m in list.iter() {
            let v = host_get(&s, &c, m).unwrap_or_else(|| panic!("get {m:#x}"));
            assert!(host_set(&mut s, &c, m, v, false).is_some(), "set {m:#x}");
            assert_eq!(host_get(&s, &c, m), Some(v), "{m:#x}");
        }
        // Also on a second vCPU restored from the first (state_test's pattern), after a run.
        let mut t = state();
        for &m in list.iter() {
            let v = host_get(&s, &c, m).unwrap();
            assert!(host_set(&mut t, &c, m, v, true).is_some(), "restore {m:#x}");
        }
    }

    /// A tiny fixed-capacity list for the tests (no alloc in this crate).
    mod heapless_list {
        pub struct List {
            v: [u32; 64],
            n: usize,
        }
        impl FromIterator<u32> for List {
            fn from_iter<I: IntoIterator<Item = u32>>(it: I) -> Self {
                let mut l = List { v: [0; 64], n: 0 };
                for x in it {
                    l.v[l.n] = x;
                    l.n += 1;
                }
                l
            }
        }
        impl List {
            pub fn len(&self) -> usize {
                self.n
            }
            pub fn iter(&self) -> core::slice::Iter<'_, u32> {
                self.v[..self.n].iter()
            }
        }
    }

    #[test]
    fn sysenter_round_trip_and_canonical() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        host_set(&mut s, &c, IA32_SYSENTER_CS, 0x10, false).unwrap();
        host_set(&mut s, &c, IA32_SYSENTER_ESP, 0xffff_8000_1234_5678, false).unwrap();
        assert_eq!(host_get(&s, &c, IA32_SYSENTER_CS), Some(0x10));
        assert_eq!(
            host_get(&s, &c, IA32_SYSENTER_ESP),
            Some(0xffff_8000_1234_5678)
        );
        // Non-canonical: made canonical, not refused.
        host_set(&mut s, &c, IA32_SYSENTER_EIP, 0x0000_8000_0000_0000, false).unwrap();
        assert_eq!(
            host_get(&s, &c, IA32_SYSENTER_EIP),
            Some(0xffff_8000_0000_0000)
        );
        // An AMD-model guest keeps 32 bits.
        let amd = GuestCpu {
            amd_compatible: true,
            ..g
        };
        host_set(&mut s, &ctx(&amd), IA32_SYSENTER_ESP, 0x1_2345_6789, false).unwrap();
        assert_eq!(host_get(&s, &c, IA32_SYSENTER_ESP), Some(0x2345_6789));
    }

    #[test]
    fn syscall_msrs_refuse_non_canonical() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        for m in [LSTAR, CSTAR, KERNEL_GS_BASE, FS_BASE, GS_BASE] {
            assert_eq!(
                set(&mut s, &c, m, 1 << 47, true),
                Err(MsrFault::Invalid),
                "{m:#x}"
            );
            assert!(set(&mut s, &c, m, 0xffff_8000_0000_0000, true).is_ok());
        }
        assert_eq!(s.seg(SegReg::Fs).base, 0xffff_8000_0000_0000);
        // STAR and SFMASK take anything.
        assert!(set(&mut s, &c, STAR, !0, false).is_ok());
        // With CR4.LA57 the addresses are 57-bit: bit 47 is an ordinary address bit, bit 56
        // sign-extends; SYSENTER's canonicalisation follows (vcpu_virt_addr_bits).
        s.cr4 |= regs::cr4::LA57;
        for m in [LSTAR, CSTAR, KERNEL_GS_BASE, FS_BASE, GS_BASE] {
            assert!(set(&mut s, &c, m, 1 << 47, true).is_ok(), "{m:#x}");
            assert_eq!(
                set(&mut s, &c, m, 1 << 56, true),
                Err(MsrFault::Invalid),
                "{m:#x}"
            );
            assert!(set(&mut s, &c, m, 0xff00_0000_0000_0000, true).is_ok());
        }
        assert_eq!(host_get(&s, &c, LSTAR), Some(0xff00_0000_0000_0000));
        let intel = GuestCpu::default(); // not AMD-compatible: 64-bit SYSENTER values
        let ci = ctx(&intel);
        set(&mut s, &ci, IA32_SYSENTER_EIP, 1 << 47, true).unwrap();
        assert_eq!(host_get(&s, &ci, IA32_SYSENTER_EIP), Some(1 << 47));
        set(&mut s, &ci, IA32_SYSENTER_EIP, 1 << 56, true).unwrap();
        assert_eq!(
            host_get(&s, &ci, IA32_SYSENTER_EIP),
            Some(0xff00_0000_0000_0000)
        );
    }

    #[test]
    fn unknown_msr_is_unsupported_for_the_guest() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        assert_eq!(guest_rdmsr(&s, &c, 0x1234_5678), Err(MsrFault::Unsupported));
        assert_eq!(
            guest_wrmsr(&mut s, &c, 0x1234_5678, 0),
            Err(MsrFault::Unsupported)
        );
        assert_eq!(host_get(&s, &c, 0x1234_5678), None);
        assert_eq!(host_set(&mut s, &c, 0x1234_5678, 0, false), None);
        // Not virtualised: no PMU v2, no x2APIC (here: the LAPIC serves it).
        for m in [0x802, 0xc001_0200] {
            assert_eq!(guest_rdmsr(&s, &c, m), Err(MsrFault::Unsupported), "{m:#x}");
        }
        // SPEC_CTRL exists, but a guest without the CPUID bits may not touch it (#GP).
        assert_eq!(guest_rdmsr(&s, &c, IA32_SPEC_CTRL), Err(MsrFault::Invalid));
    }

    /// The hostile probes' MTRR values (kvm_mtrr_valid) and what upstream reads back after.
    #[test]
    fn mtrr_rules() {
        let g = GuestCpu::default(); // MAXPHYADDR 36
        let c = ctx(&g);
        let mut s = state();
        // MTRRcap: read-only, WC | FIX | 8 variable ranges.
        assert_eq!(host_get(&s, &c, MTRR_CAP), Some(0x508));
        assert_eq!(guest_rdmsr(&s, &c, MTRR_CAP), Ok(0x508));
        assert_eq!(host_set(&mut s, &c, MTRR_CAP, 0x508, false), None);
        // defType: bits other than type (7:0), FE (10), E (11) are reserved; type 2 invalid.
        assert_eq!(host_set(&mut s, &c, MTRR_DEF_TYPE, 0x1_0000, false), None);
        assert_eq!(host_set(&mut s, &c, MTRR_DEF_TYPE, 0x100, false), None);
        assert_eq!(host_set(&mut s, &c, MTRR_DEF_TYPE, 0x2, false), None);
        assert_eq!(host_get(&s, &c, MTRR_DEF_TYPE), Some(0));
        assert!(host_set(&mut s, &c, MTRR_DEF_TYPE, 0xc06, false).is_some());
        assert_eq!(host_get(&s, &c, MTRR_DEF_TYPE), Some(0xc06));
        // Fixed: every byte a valid type.
        assert_eq!(
            host_set(&mut s, &c, MTRR_FIX64K_00000, 0x0202_0202_0202_0202, false),
            None
        );
        assert_eq!(host_get(&s, &c, MTRR_FIX64K_00000), Some(0));
        for (i, m) in [0x250, 0x258, 0x259, 0x268, 0x26f].into_iter().enumerate() {
            let v = 0x0605_0400_0106_0504 + i as u64;
            let v = v & !0xff | 6;
            assert!(host_set(&mut s, &c, m, v, false).is_some(), "{m:#x}");
            assert_eq!(host_get(&s, &c, m), Some(v), "{m:#x}");
        }
        // Holes in the fixed range and variable pairs past 8 do not exist: refused both ways
        // (`return 1`, not "unsupported": no 0-write allowance).
        for m in [0x251, 0x257, 0x25a, 0x267, 0x210, 0x24f] {
            assert_eq!(host_get(&s, &c, m), None, "{m:#x}");
            assert_eq!(host_set(&mut s, &c, m, 0, false), None, "{m:#x}");
            assert_eq!(guest_rdmsr(&s, &c, m), Err(MsrFault::Invalid), "{m:#x}");
        }
        // Variable base: a valid type, bits 11:8 and those above MAXPHYADDR reserved.
        assert_eq!(host_set(&mut s, &c, MTRR_PHYS_BASE0, 2, false), None);
        assert_eq!(host_set(&mut s, &c, MTRR_PHYS_BASE0, 0x106, false), None);
        assert_eq!(
            host_set(&mut s, &c, MTRR_PHYS_BASE0, 1 << 36 | 6, false),
            None
        );
        assert_eq!(host_get(&s, &c, MTRR_PHYS_BASE0), Some(0));
        assert!(host_set(&mut s, &c, MTRR_PHYS_BASE0, 0xf_ffff_f006, false).is_some());
        // Variable mask: bits 10:0 reserved (V is bit 11).
        assert_eq!(
            host_set(&mut s, &c, MTRR_PHYS_BASE0 + 1, 0x400, false),
            None
        );
        assert!(host_set(&mut s, &c, MTRR_PHYS_MASK_LAST, 0xf_ffff_f800, false).is_some());
        // A guest with a wider MAXPHYADDR may set higher bits.
        let wide = GuestCpu {
            maxphyaddr: 40,
            ..GuestCpu::default()
        };
        let cw = ctx(&wide);
        assert!(guest_wrmsr(&mut s, &cw, MTRR_PHYS_BASE0 + 14, 1 << 38 | 6).is_ok());
        assert_eq!(guest_rdmsr(&s, &cw, MTRR_PHYS_BASE0 + 14), Ok(1 << 38 | 6));
        assert_eq!(s.msr.mtrr.var[14], 1 << 38 | 6);
        assert_eq!(s.msr.mtrr.var[15], 0xf_ffff_f800);
        assert_eq!(s.msr.mtrr.fixed[10] & 0xff, 6);
        // Not listed (upstream does not list them either).
        assert!(!is_advertised(&CAPS, MTRR_DEF_TYPE));
    }

    #[test]
    fn spec_ctrl_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g); // the test host takes values below bit 32
        let mut s = state();
        // The host may set what the host CPU takes (upstream measured 1 << 40 accepted under
        // QEMU TCG, whose WRMSR ignores unknown bits; real CPUs fault on reserved bits).
        assert!(host_set(&mut s, &c, IA32_SPEC_CTRL, 1 << 2, false).is_some());
        assert_eq!(host_get(&s, &c, IA32_SPEC_CTRL), Some(1 << 2));
        assert_eq!(host_set(&mut s, &c, IA32_SPEC_CTRL, 1 << 40, false), None);
        assert_eq!(s.msr.spec_ctrl, 1 << 2);
        let tcg = MsrCtx {
            spec_ctrl_test: |_| true,
            ..c
        };
        assert!(host_set(&mut s, &tcg, IA32_SPEC_CTRL, 1 << 40, false).is_some());
        assert_eq!(host_get(&s, &tcg, IA32_SPEC_CTRL), Some(1 << 40));
        // The guest needs SPEC_CTRL, AMD_IBRS, AMD_STIBP or AMD_SSBD.
        assert_eq!(
            guest_wrmsr(&mut s, &c, IA32_SPEC_CTRL, 0),
            Err(MsrFault::Invalid)
        );
        let a = GuestCpu {
            spec_ctrl_msr: true,
            ..GuestCpu::default()
        };
        let ca = ctx(&a);
        assert!(guest_wrmsr(&mut s, &ca, IA32_SPEC_CTRL, 1).is_ok());
        assert_eq!(guest_rdmsr(&s, &ca, IA32_SPEC_CTRL), Ok(1));
        assert_eq!(
            guest_wrmsr(&mut s, &ca, IA32_SPEC_CTRL, 1 << 33),
            Err(MsrFault::Invalid)
        );
        // Listed when the host has the MSR (upstream's rdmsr_safe probe).
        assert!(is_advertised(&CAPS, IA32_SPEC_CTRL));
        let no = MsrCaps {
            spec_ctrl: false,
            feat_ctl: false,
            ..CAPS
        };
        assert!(!is_advertised(&no, IA32_SPEC_CTRL));
        assert_eq!(index_list_len(&no) + 2, index_list_len(&CAPS));
    }

    #[test]
    fn virt_spec_ctrl_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        assert_eq!(host_get(&s, &c, AMD64_VIRT_SPEC_CTRL), Some(0));
        assert!(host_set(&mut s, &c, AMD64_VIRT_SPEC_CTRL, 0, false).is_some());
        assert!(host_set(&mut s, &c, AMD64_VIRT_SPEC_CTRL, VIRT_SPEC_CTRL_SSBD, true).is_some());
        assert_eq!(s.msr.virt_spec_ctrl, VIRT_SPEC_CTRL_SSBD);
        // Only SSBD.
        assert_eq!(host_set(&mut s, &c, AMD64_VIRT_SPEC_CTRL, 1, false), None);
        assert_eq!(
            host_get(&s, &c, AMD64_VIRT_SPEC_CTRL),
            Some(VIRT_SPEC_CTRL_SSBD)
        );
        // The guest needs VIRT_SSBD.
        assert_eq!(
            guest_rdmsr(&s, &c, AMD64_VIRT_SPEC_CTRL),
            Err(MsrFault::Invalid)
        );
        let v = GuestCpu {
            virt_ssbd: true,
            ..GuestCpu::default()
        };
        let cv = ctx(&v);
        assert!(guest_wrmsr(&mut s, &cv, AMD64_VIRT_SPEC_CTRL, 0).is_ok());
        assert_eq!(guest_rdmsr(&s, &cv, AMD64_VIRT_SPEC_CTRL), Ok(0));
        assert!(is_advertised(&CAPS, AMD64_VIRT_SPEC_CTRL));
    }

    #[test]
    fn tsc_ratio_and_feat_ctl() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        // The default ratio; the host may write it back or 0 (and nothing changes).
        assert_eq!(host_get(&s, &c, AMD64_TSC_RATIO), Some(1 << 32));
        assert!(host_set(&mut s, &c, AMD64_TSC_RATIO, 1 << 32, false).is_some());
        assert!(host_set(&mut s, &c, AMD64_TSC_RATIO, 0, false).is_some());
        assert_eq!(host_get(&s, &c, AMD64_TSC_RATIO), Some(1 << 32));
        assert_eq!(host_set(&mut s, &c, AMD64_TSC_RATIO, 2 << 32, false), None);
        assert_eq!(guest_rdmsr(&s, &c, AMD64_TSC_RATIO), Err(MsrFault::Invalid));
        assert_eq!(
            guest_wrmsr(&mut s, &c, AMD64_TSC_RATIO, 1 << 32),
            Err(MsrFault::Invalid)
        );
        assert!(is_advertised(&CAPS, AMD64_TSC_RATIO));
        // FEAT_CTL: listed when the host reads it, not virtualised: reads 0, only 0 back.
        assert_eq!(host_get(&s, &c, IA32_FEAT_CTL), Some(0));
        assert_eq!(host_set(&mut s, &c, IA32_FEAT_CTL, 5, false), None);
        assert!(host_set(&mut s, &c, IA32_FEAT_CTL, 0, false).is_some());
        assert_eq!(
            guest_rdmsr(&s, &c, IA32_FEAT_CTL),
            Err(MsrFault::Unsupported)
        );
        let no = MsrCaps {
            feat_ctl: false,
            ..CAPS
        };
        let cn = MsrCtx { caps: &no, ..c };
        assert_eq!(host_get(&s, &cn, IA32_FEAT_CTL), None);
    }

    #[test]
    fn vcpu_tsc_khz() {
        // 0: the host's rate, accepted.
        assert_eq!(vcpu_set_tsc_khz(0, 2_000_000), (Some(2_000_000), true));
        // Within 250 ppm (500 kHz of 2 GHz) either way: no scaling needed.
        assert_eq!(
            vcpu_set_tsc_khz(2_000_500, 2_000_000),
            (Some(2_000_500), true)
        );
        assert_eq!(
            vcpu_set_tsc_khz(1_999_500, 2_000_000),
            (Some(1_999_500), true)
        );
        // Slower: refused, but the rate is stored (as upstream's virtual_tsc_khz).
        assert_eq!(
            vcpu_set_tsc_khz(1_999_499, 2_000_000),
            (Some(1_999_499), false)
        );
        // Faster: upstream catches up; not here (refused, rate kept).
        assert_eq!(vcpu_set_tsc_khz(2_000_501, 2_000_000), (None, false));
        // Truncation of the bounds (adjust_tsc_khz): 3_000_001 kHz: hi = 3_000_751.
        assert!(vcpu_set_tsc_khz(3_000_750, 3_000_001).1);
        assert!(vcpu_set_tsc_khz(3_000_751, 3_000_001).1);
        assert!(!vcpu_set_tsc_khz(3_000_752, 3_000_001).1);
        assert_eq!(vcpu_set_tsc_khz(0, 0), (None, false));
    }

    #[test]
    fn xss_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        // The host: only 0 (supported_xss is 0 on SVM), reads 0.
        assert_eq!(host_set(&mut s, &c, IA32_XSS, 1 << 63, false), None);
        assert_eq!(host_set(&mut s, &c, IA32_XSS, 1 << 8, false), None);
        assert!(host_set(&mut s, &c, IA32_XSS, 0, false).is_some());
        assert_eq!(host_get(&s, &c, IA32_XSS), Some(0));
        // The guest: only with XSAVES in its CPUID.
        assert_eq!(guest_rdmsr(&s, &c, IA32_XSS), Err(MsrFault::Invalid));
        assert_eq!(guest_wrmsr(&mut s, &c, IA32_XSS, 0), Err(MsrFault::Invalid));
        let x = GuestCpu {
            xsaves: true,
            ..GuestCpu::default()
        };
        let cx = ctx(&x);
        assert_eq!(guest_rdmsr(&s, &cx, IA32_XSS), Ok(0));
        assert!(guest_wrmsr(&mut s, &cx, IA32_XSS, 0).is_ok());
        assert_eq!(
            guest_wrmsr(&mut s, &cx, IA32_XSS, 1),
            Err(MsrFault::Invalid)
        );
        assert!(!is_advertised(&CAPS, IA32_XSS));
    }

    #[test]
    fn tsc_and_adjust() {
        let g = GuestCpu {
            tsc_adjust: true,
            ..GuestCpu::default()
        };
        let c = ctx(&g);
        let mut s = state();
        s.tsc_offset = 0u64.wrapping_sub(1_000_000);
        assert_eq!(guest_rdmsr(&s, &c, IA32_TSC), Ok(0));
        // Host write: sets the TSC, not TSC_ADJUST.
        host_set(&mut s, &c, IA32_TSC, 500, false).unwrap();
        assert_eq!(host_get(&s, &c, IA32_TSC), Some(500));
        assert_eq!(s.msr.tsc_adjust, 0);
        // Guest write: TSC_ADJUST follows.
        guest_wrmsr(&mut s, &c, IA32_TSC, 800).unwrap();
        assert_eq!(guest_rdmsr(&s, &c, IA32_TSC), Ok(800));
        assert_eq!(s.msr.tsc_adjust, 300);
        // Guest TSC_ADJUST write moves the TSC.
        guest_wrmsr(&mut s, &c, IA32_TSC_ADJUST, 400).unwrap();
        assert_eq!(guest_rdmsr(&s, &c, IA32_TSC), Ok(900));
        // Host TSC_ADJUST write does not.
        host_set(&mut s, &c, IA32_TSC_ADJUST, 0, false).unwrap();
        assert_eq!(guest_rdmsr(&s, &c, IA32_TSC), Ok(900));
        // Without the CPUID bit writes are ignored.
        let plain = GuestCpu::default();
        guest_wrmsr(&mut s, &ctx(&plain), IA32_TSC_ADJUST, 7).unwrap();
        assert_eq!(s.msr.tsc_adjust, 0);
    }

    #[test]
    fn hwcr_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        for bit in 0..64 {
            let r = host_set(&mut s, &c, K7_HWCR, 1 << bit, false);
            match bit {
                18 | 24 => assert_eq!(host_get(&s, &c, K7_HWCR), Some(1 << bit)),
                3 | 6 | 8 => {
                    assert!(r.is_some());
                    assert_eq!(host_get(&s, &c, K7_HWCR), Some(0), "bit {bit}");
                }
                _ => assert!(r.is_none(), "bit {bit}"),
            }
            host_set(&mut s, &c, K7_HWCR, 0, false).unwrap();
        }
    }

    #[test]
    fn pat_rules() {
        assert!(pat_valid(regs::PAT_DEFAULT));
        assert!(pat_valid(0x0706_0504_0100_0706));
        assert!(!pat_valid(2));
        assert!(!pat_valid(3 << 8));
        assert!(!pat_valid(8));
        let g = GuestCpu::default();
        let mut s = state();
        assert_eq!(
            guest_wrmsr(&mut s, &ctx(&g), IA32_CR_PAT, 2),
            Err(MsrFault::Invalid)
        );
        assert_eq!(s.msrs.pat, regs::PAT_DEFAULT);
    }

    #[test]
    fn efer_guest_and_host_rules() {
        let lm = GuestCpu {
            lm: true,
            nx: true,
            ..GuestCpu::default()
        };
        let c = ctx(&lm);
        let mut s = state();
        // Module-reserved: SVME (no nesting) even from the host.
        assert_eq!(
            set(&mut s, &c, EFER, efer::SVME, true),
            Err(MsrFault::Invalid)
        );
        // Host writes skip the CPUID check; guest writes do not.
        let none = GuestCpu::default();
        assert!(set(&mut s, &ctx(&none), EFER, efer::LME, true).is_ok());
        assert_eq!(
            set(&mut s, &ctx(&none), EFER, efer::NX, false),
            Err(MsrFault::Invalid)
        );
        // LMA is kept from the current value.
        s.efer = efer::LME | efer::LMA;
        s.cr0 = regs::cr0::PE | regs::cr0::PG;
        set(&mut s, &c, EFER, efer::LME | efer::NX, false).unwrap();
        assert_eq!(s.efer, efer::LME | efer::LMA | efer::NX);
        // LME may not change while paging.
        assert_eq!(
            set(&mut s, &c, EFER, efer::NX, false),
            Err(MsrFault::Invalid)
        );
    }

    #[test]
    fn feature_msrs() {
        for m in FEATURE_LIST {
            assert!(get_feature(&CAPS, m).is_some(), "{m:#x}");
        }
        assert_eq!(
            get_feature(&CAPS, IA32_ARCH_CAPABILITIES),
            Some(ARCH_CAP_PSCHANGE_MC_NO)
        );
        // An advertised non-feature MSR reads 0; an unknown one fails.
        assert_eq!(get_feature(&CAPS, IA32_TSC), Some(0));
        assert_eq!(get_feature(&CAPS, 0x1234), None);
        // Immutable after the first run unless unchanged.
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        assert!(host_set(&mut s, &c, IA32_ARCH_CAPABILITIES, 0, true).is_none());
        assert!(host_set(
            &mut s,
            &c,
            IA32_ARCH_CAPABILITIES,
            ARCH_CAP_PSCHANGE_MC_NO,
            true
        )
        .is_some());
        assert!(host_set(&mut s, &c, IA32_ARCH_CAPABILITIES, 0, false).is_some());
        // Guests cannot write it, nor read it without the CPUID bit.
        assert_eq!(
            guest_wrmsr(&mut s, &c, IA32_ARCH_CAPABILITIES, 0),
            Err(MsrFault::Invalid)
        );
        assert_eq!(
            guest_rdmsr(&s, &c, IA32_ARCH_CAPABILITIES),
            Err(MsrFault::Invalid)
        );
        // DE_CFG: only supported bits.
        assert!(host_set(&mut s, &c, AMD64_DE_CFG, 1, false).is_none());
        assert!(host_set(&mut s, &c, AMD64_DE_CFG, DE_CFG_LFENCE_SERIALIZE, false).is_some());
        // UCODE_REV: guest writes ignored.
        guest_wrmsr(&mut s, &c, IA32_UCODE_REV, 5).unwrap();
        assert_eq!(guest_rdmsr(&s, &c, IA32_UCODE_REV), Ok(DEFAULT_UCODE_REV));
    }

    #[test]
    fn misc_enable_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        let v = s.msr.misc_enable;
        assert_eq!(
            guest_wrmsr(&mut s, &c, IA32_MISC_ENABLE, 0),
            Err(MsrFault::Invalid)
        );
        guest_wrmsr(&mut s, &c, IA32_MISC_ENABLE, v | MISC_ENABLE_EMON | 1).unwrap();
        assert_eq!(s.msr.misc_enable, v | 1);
        host_set(&mut s, &c, IA32_MISC_ENABLE, 0, false).unwrap();
        assert_eq!(s.msr.misc_enable, 0);
    }

    #[test]
    fn tsc_aux_rules() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        // The host may always; the guest needs RDTSCP or RDPID.
        assert!(host_set(&mut s, &c, TSC_AUX, 5, false).is_some());
        assert_eq!(guest_rdmsr(&s, &c, TSC_AUX), Err(MsrFault::Invalid));
        let r = GuestCpu { rdtscp: true, ..g };
        assert_eq!(guest_rdmsr(&s, &ctx(&r), TSC_AUX), Ok(5));
        assert_eq!(
            guest_wrmsr(&mut s, &ctx(&r), TSC_AUX, 1 << 32),
            Err(MsrFault::Invalid)
        );
        let amd = GuestCpu {
            amd_compatible: true,
            ..r
        };
        guest_wrmsr(&mut s, &ctx(&amd), TSC_AUX, 1 << 32 | 7).unwrap();
        assert_eq!(s.msrs.tsc_aux, 7);
    }

    #[test]
    fn apic_base_via_msr() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        let fx = guest_wrmsr(&mut s, &c, IA32_APICBASE, regs::APIC_DEFAULT_PHYS_BASE).unwrap();
        assert!(fx.cpuid_runtime);
        assert_eq!(
            guest_wrmsr(&mut s, &c, IA32_APICBASE, regs::APIC_BASE_EXTD),
            Err(MsrFault::Invalid)
        );
    }

    #[test]
    fn platform_info_and_cpuid_faulting() {
        let g = GuestCpu::default();
        let c = ctx(&g);
        let mut s = state();
        // The reset value offers CPUID faulting (KVM_X86_QUIRK_STUFF_FEATURE_MSRS).
        assert_eq!(
            host_get(&s, &c, PLATFORM_INFO),
            Some(PLATFORM_INFO_CPUID_FAULT)
        );
        assert_eq!(
            guest_rdmsr(&s, &c, PLATFORM_INFO),
            Ok(PLATFORM_INFO_CPUID_FAULT)
        );
        // Host writes any value; the guest never writes it.
        assert!(host_set(
            &mut s,
            &c,
            PLATFORM_INFO,
            PLATFORM_INFO_CPUID_FAULT | 0xff00,
            true
        )
        .is_some());
        assert_eq!(
            guest_wrmsr(&mut s, &c, PLATFORM_INFO, 0),
            Err(MsrFault::Invalid)
        );
        // The VM's KVM_CAP_MSR_PLATFORM_INFO off: the guest's read #GPs, the host's works.
        let off = MsrCtx {
            platform_info_readable: false,
            ..c
        };
        assert_eq!(guest_rdmsr(&s, &off, PLATFORM_INFO), Err(MsrFault::Invalid));
        assert_eq!(
            host_get(&s, &off, PLATFORM_INFO),
            Some(PLATFORM_INFO_CPUID_FAULT | 0xff00)
        );
        // CPUID faulting: only bit 0, only when offered; CPL 0 never faults.
        assert_eq!(
            guest_wrmsr(&mut s, &c, MISC_FEATURES_ENABLES, 2),
            Err(MsrFault::Invalid)
        );
        assert!(!cpuid_faults(&s, 3));
        guest_wrmsr(&mut s, &c, MISC_FEATURES_ENABLES, MISC_FEATURES_CPUID_FAULT).unwrap();
        assert!(cpuid_faults(&s, 3));
        assert!(!cpuid_faults(&s, 0));
        // PLATFORM_INFO cannot withdraw faulting while it is on.
        assert!(host_set(&mut s, &c, PLATFORM_INFO, 0xff00, true).is_none());
        guest_wrmsr(&mut s, &c, MISC_FEATURES_ENABLES, 0).unwrap();
        assert!(host_set(&mut s, &c, PLATFORM_INFO, 0xff00, true).is_some());
        assert_eq!(
            guest_wrmsr(&mut s, &c, MISC_FEATURES_ENABLES, MISC_FEATURES_CPUID_FAULT),
            Err(MsrFault::Invalid)
        );
    }

    #[test]
    fn tsc_deadline_is_listed_in_upstreams_place() {
        let list: heapless_list::List = index_list(&CAPS).collect();
        let pos = |m| list.iter().position(|&x| x == m).unwrap();
        assert!(pos(IA32_TSC_ADJUST) < pos(IA32_TSC_DEADLINE));
        assert!(pos(IA32_TSC_DEADLINE) < pos(IA32_ARCH_CAPABILITIES));
        assert!(pos(IA32_MISC_ENABLE) < pos(PLATFORM_INFO));
        assert!(pos(PLATFORM_INFO) < pos(MISC_FEATURES_ENABLES));
        assert!(pos(MISC_FEATURES_ENABLES) < pos(IA32_POWER_CTL));
    }
}
