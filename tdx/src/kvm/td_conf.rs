// SPDX-License-Identifier: GPL-2.0-only
//! The TDX module's TD configuration limits as KVM reads them once at load
//! (`struct tdx_sys_info_td_conf`, through TDH.SYS.RD), and `KVM_TDX_CAPABILITIES` computed
//! from them as upstream's `init_kvm_tdx_caps` does.

use super::errno::Errno;
use super::uapi::{KvmCpuidEntry2, KvmTdxCapabilities};
use crate::abi::md::sys;
use crate::error::TdxError;
use crate::seamcall::Seamcall;
use crate::wrappers::Tdx;

/// Most CPUID_CONFIG entries KVM keeps (the module's CPUID_CONFIG_LEAVES has 32 fields).
pub const MAX_CPUID_CONFIG: usize = 32;

/// `TDX_TD_ATTR_SEPT_VE_DISABLE`: the only ATTRIBUTES bit KVM lets a TD set
/// (`KVM_SUPPORTED_TD_ATTRS`).
pub const KVM_SUPPORTED_TD_ATTRS: u64 = 1 << 28;

/// "No sub-leaf" in CPUID_CONFIG_LEAVES (`KVM_TDX_CPUID_NO_SUBLEAF`).
pub const CPUID_NO_SUBLEAF: u32 = u32::MAX;

/// CPUID.(7,0).EBX HLE and RTM (TSX), which KVM never lets a TD have.
const TSX: u32 = 1 << 4 | 1 << 11;
/// CPUID.(7,0).ECX WAITPKG, which KVM never lets a TD have.
const WAITPKG: u32 = 1 << 5;

/// The module's TD configuration limits (`tdx_sys_info_td_conf`, less MAX_VCPUS_PER_TD, which
/// the 1.5 line does not report and KVM does not need: a TD's vCPU limit is the host's CPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdConf {
    /// ATTRIBUTES bits a TD may set.
    pub attributes_fixed0: u64,
    /// ATTRIBUTES bits a TD must set.
    pub attributes_fixed1: u64,
    /// XFAM bits a TD may set.
    pub xfam_fixed0: u64,
    /// XFAM bits a TD must set.
    pub xfam_fixed1: u64,
    /// Configurable CPUID leaves (at most [`MAX_CPUID_CONFIG`]).
    pub num_cpuid_config: usize,
    /// Leaf (31:0) and sub-leaf (63:32) of each configurable entry.
    pub cpuid_config_leaves: [u64; MAX_CPUID_CONFIG],
    /// Configurable bits of each entry: EBX:EAX, EDX:ECX.
    pub cpuid_config_values: [[u64; 2]; MAX_CPUID_CONFIG],
}

/// Why [`TdConf::read`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdConfError {
    /// A TDH.SYS.RD failed.
    Seamcall(TdxError),
    /// The module reports more configurable leaves than KVM keeps (Linux refuses it too).
    TooManyCpuidConfigs(u64),
}

impl TdConf {
    /// Reads the limits with TDH.SYS.RD, as `get_tdx_sys_info_td_conf` does.
    ///
    /// # Errors
    ///
    /// A failed read, or more than [`MAX_CPUID_CONFIG`] configurable leaves.
    pub fn read<S: Seamcall>(tdx: &Tdx<S>) -> Result<Self, TdConfError> {
        let rd = |f: u64| tdx.sys_rd(f).map_err(TdConfError::Seamcall);
        let num = rd(sys::NUM_CPUID_CONFIG)?;
        let n = usize::try_from(num)
            .ok()
            .filter(|&n| n <= MAX_CPUID_CONFIG)
            .ok_or(TdConfError::TooManyCpuidConfigs(num))?;
        let mut c = TdConf {
            attributes_fixed0: rd(sys::ATTRIBUTES_FIXED0)?,
            attributes_fixed1: rd(sys::ATTRIBUTES_FIXED1)?,
            xfam_fixed0: rd(sys::XFAM_FIXED0)?,
            xfam_fixed1: rd(sys::XFAM_FIXED1)?,
            num_cpuid_config: n,
            cpuid_config_leaves: [0; MAX_CPUID_CONFIG],
            cpuid_config_values: [[0; 2]; MAX_CPUID_CONFIG],
        };
        for i in 0..n {
            let idx = i as u64;
            c.cpuid_config_leaves[i] = rd(sys::CPUID_CONFIG_LEAVES + idx)?;
            for j in 0..2 {
                c.cpuid_config_values[i][j] = rd(sys::CPUID_CONFIG_VALUES + 2 * idx + j as u64)?;
            }
        }
        Ok(c)
    }

    /// `tdx_get_supported_attrs`: KVM's set within the module's, 0 if the module requires a bit
    /// KVM does not support.
    #[must_use]
    pub const fn supported_attrs(&self) -> u64 {
        let v = KVM_SUPPORTED_TD_ATTRS;
        if v & self.attributes_fixed1 != self.attributes_fixed1 {
            return 0;
        }
        v & self.attributes_fixed0
    }

    /// `tdx_get_supported_xfam`: `kvm_xfam` (KVM's supported XCR0 | XSS) within the module's,
    /// 0 if the module requires a bit KVM does not support.
    #[must_use]
    pub const fn supported_xfam(&self, kvm_xfam: u64) -> u64 {
        if kvm_xfam & self.xfam_fixed1 != self.xfam_fixed1 {
            return 0;
        }
        kvm_xfam & self.xfam_fixed0
    }

    /// `td_init_cpuid_entry2`: configurable entry `i` as KVM reports it — a sub-leaf of "none"
    /// shown as 0, 0x80000008 EAX[23:16] (the guest physical address width, KVM's GPAW
    /// interface) as 0xff, TSX and WAITPKG cleared. `None` past [`Self::num_cpuid_config`].
    #[must_use]
    pub fn cpuid_entry(&self, i: usize) -> Option<KvmCpuidEntry2> {
        if i >= self.num_cpuid_config {
            return None;
        }
        let leaves = self.cpuid_config_leaves[i];
        let [lo, hi] = self.cpuid_config_values[i];
        let mut e = KvmCpuidEntry2 {
            function: leaves as u32,
            index: (leaves >> 32) as u32,
            eax: lo as u32,
            ebx: (lo >> 32) as u32,
            ecx: hi as u32,
            edx: (hi >> 32) as u32,
            ..KvmCpuidEntry2::default()
        };
        if e.index == CPUID_NO_SUBLEAF {
            e.index = 0;
        }
        if e.function == 0x8000_0008 {
            e.eax = set_guest_phys_addr_bits(e.eax, 0xff);
        }
        if e.function == 7 && e.index == 0 {
            e.ebx &= !TSX;
            e.ecx &= !WAITPKG;
        }
        Some(e)
    }

    /// `KVM_TDX_CAPABILITIES` after the header was copied in (`caps`, its `cpuid.nent` the
    /// room the user gave): `entries` (at least [`Self::num_cpuid_config`] long) gets the
    /// configurable leaves, `caps` the supported ATTRIBUTES and XFAM and the entry count. The
    /// TDVMCALL-info words are 0: no TDVMCALL exits to userspace exist yet.
    ///
    /// # Errors
    ///
    /// E2BIG (`caps` untouched) if the user's room is smaller than the module's leaves; EIO if
    /// KVM and the module share no ATTRIBUTES or XFAM.
    pub fn capabilities(
        &self,
        kvm_xfam: u64,
        caps: &mut KvmTdxCapabilities,
        entries: &mut [KvmCpuidEntry2],
    ) -> Result<(), Errno> {
        if (caps.cpuid.nent as usize) < self.num_cpuid_config {
            return Err(Errno::E2BIG);
        }
        let attrs = self.supported_attrs();
        let xfam = self.supported_xfam(kvm_xfam);
        if attrs == 0 || xfam == 0 {
            return Err(Errno::EIO);
        }
        for (i, out) in entries.iter_mut().take(self.num_cpuid_config).enumerate() {
            *out = self.cpuid_entry(i).unwrap_or_default();
        }
        caps.supported_attrs = attrs;
        caps.supported_xfam = xfam;
        caps.kernel_tdvmcallinfo_1_r11 = 0;
        caps.user_tdvmcallinfo_1_r11 = 0;
        caps.kernel_tdvmcallinfo_1_r12 = 0;
        caps.user_tdvmcallinfo_1_r12 = 0;
        caps.cpuid.nent = self.num_cpuid_config as u32;
        Ok(())
    }
}

/// CPUID.0x80000008 EAX with bits 23:16 (the guest physical address width) set to `bits`.
#[must_use]
pub const fn set_guest_phys_addr_bits(eax: u32, bits: u32) -> u32 {
    (eax & !0x00ff_0000) | (bits & 0xff) << 16
}

/// CPUID.0x80000008 EAX bits 23:16.
#[must_use]
pub const fn guest_phys_addr_bits(eax: u32) -> u32 {
    (eax >> 16) & 0xff
}

/// Whether `e` asks for TSX or WAITPKG (`tdx_unsupported_cpuid`).
#[must_use]
pub const fn unsupported_cpuid(e: &KvmCpuidEntry2) -> bool {
    e.function == 7 && e.index == 0 && (e.ebx & TSX != 0 || e.ecx & WAITPKG != 0)
}
