// SPDX-License-Identifier: GPL-2.0-only
//! What a guest of this module really gets: upstream `kvm_set_cpu_caps` (the feature words,
//! host CPUID masked with what KVM virtualises) and `__do_cpuid_func` (the leaves of
//! `KVM_GET_SUPPORTED_CPUID`), narrowed to what this module virtualises on SVM.
//!
//! Left out compared with upstream `kvm_amd`, because nothing here virtualises them: nested SVM
//! (CPUID SVM, leaf 0x8000000A), VMX/SMX, the PMU (PDCM, leaves 0xA and 0x80000022, PERFCTR_CORE),
//! MTRRs and machine-check banks (MTRR, MCA), protection keys (PKU: PKRU is not switched), LAM,
//! XSAVES/XFD and AMX (no XSS or dynamic xfeatures), speculation-control
//! MSRs (SPEC_CTRL, IBPB/IBRS/STIBP/SSBD, PRED_CMD, FLUSH_L1D), OSVW, bus-lock detection, WAITPKG,
//! SGX, PT, and the KVM paravirtual features nothing implements (leaf 0x40000001 has only
//! [`crate::pv::SUPPORTED_FEATURES`]: no async PF, PV EOI, PV TLB flush, ...).

use super::{feat, Feature, Reg};
use crate::errno::{Errno, Result};
use crate::uapi::{KvmCpuidEntry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// The host CPU's CPUID, read through a function (the `CPUID` instruction in the module, a
/// table in tests).
pub struct HostCpuid<'a> {
    raw: &'a dyn Fn(u32, u32) -> [u32; 4],
    max_basic: u32,
    max_ext: u32,
}

impl<'a> HostCpuid<'a> {
    /// Wraps a CPUID function (`leaf`, `subleaf`) → [EAX, EBX, ECX, EDX].
    pub fn new(raw: &'a dyn Fn(u32, u32) -> [u32; 4]) -> Self {
        let max_basic = raw(0, 0)[0];
        let max_ext = raw(0x8000_0000, 0)[0];
        HostCpuid {
            raw,
            max_basic,
            max_ext,
        }
    }

    /// CPUID(leaf, subleaf), zeros for leaves above the host's range.
    pub fn cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let in_range = if leaf & 0x8000_0000 != 0 {
            leaf <= self.max_ext && self.max_ext & 0x8000_0000 != 0
        } else {
            leaf <= self.max_basic
        };
        if in_range {
            (self.raw)(leaf, sub)
        } else {
            [0; 4]
        }
    }

    /// Whether the host has a feature.
    pub fn has(&self, ft: Feature) -> bool {
        reg(&self.cpuid(ft.function, ft.index), ft.reg) & (1 << ft.bit) != 0
    }

    /// Upstream `xstate_required_size`: the XSAVE area size for the components in `xcr0`
    /// (standard format: the end of the furthest component; compacted: the sum with the
    /// 64-byte alignments CPUID 0xD asks for), at least the legacy area and header (576).
    pub fn xstate_required_size(&self, xcr0: u64, compacted: bool) -> u32 {
        let mut ret: u32 = 512 + 64;
        for bit in 2..64 {
            if xcr0 & (1 << bit) == 0 {
                continue;
            }
            let [size, offset, flags, _] = self.cpuid(0xd, bit);
            let off = if compacted {
                if flags & 2 != 0 {
                    ret.next_multiple_of(64)
                } else {
                    ret
                }
            } else {
                offset
            };
            ret = ret.max(off + size);
        }
        ret
    }
}

fn reg(r: &[u32; 4], which: Reg) -> u32 {
    match which {
        Reg::Eax => r[0],
        Reg::Ebx => r[1],
        Reg::Ecx => r[2],
        Reg::Edx => r[3],
    }
}

const fn bits(list: &[u8]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// CPUID.1:ECX bits this module passes through: SSE3, PCLMULQDQ, SSSE3, FMA, CX16, PCID, SSE4.1,
/// SSE4.2, MOVBE, POPCNT, AES, XSAVE, AVX, F16C, RDRAND (upstream's mask without PDCM and
/// X2APIC).
const MASK_1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 17, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
/// CPUID.1:EDX: FPU, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, PGE, CMOV, PAT, PSE36,
/// CLFLUSH, MMX, FXSR, SSE, SSE2, SS (upstream's mask without MTRR and MCA).
const MASK_1_EDX: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 16, 17, 19, 23, 24, 25, 26, 27,
]);
/// CPUID.7.0:EBX: FSGSBASE, BMI1, HLE, AVX2, FDP_EXCPTN_ONLY, SMEP, BMI2, ERMS, INVPCID, RTM,
/// ZERO_FCS_FDS, AVX512F, AVX512DQ, RDSEED, ADX, SMAP, AVX512IFMA, CLFLUSHOPT, CLWB, AVX512PF,
/// AVX512ER, AVX512CD, SHA_NI, AVX512BW, AVX512VL (upstream's mask without SGX); TSC_ADJUST is
/// added (emulated).
const MASK_7_0_EBX: u32 = bits(&[
    0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18, 19, 20, 21, 23, 24, 26, 27, 28, 29, 30, 31,
]);
/// CPUID.7.0:ECX: AVX512VBMI, UMIP, AVX512_VBMI2, GFNI, VAES, VPCLMULQDQ, AVX512_VNNI,
/// AVX512_BITALG, AVX512_VPOPCNTDQ, LA57, RDPID, CLDEMOTE, MOVDIRI, MOVDIR64B (upstream's mask
/// without PKU, SGX_LC and BUS_LOCK_DETECT). LA57 as the hardware has it, whatever paging the
/// host kernel runs (upstream: "Set LA57 based on hardware capability"): guest paging is the
/// hardware's under NPT, the emulator's walker and canonical checks follow the guest's
/// CR4.LA57, and so do the MSR rules ([`crate::msr`]).
const MASK_7_0_ECX: u32 = bits(&[1, 2, 6, 8, 9, 10, 11, 12, 14, 16, 22, 25, 27, 28]);
/// CPUID.7.0:EDX: AVX512_4VNNIW, AVX512_4FMAPS, FSRM, AVX512_VP2INTERSECT, MD_CLEAR, SERIALIZE,
/// TSXLDTRK, AVX512_FP16 (upstream's mask without the AMX and speculation-control bits);
/// ARCH_CAPABILITIES is added (emulated).
const MASK_7_0_EDX: u32 = bits(&[2, 3, 4, 8, 10, 14, 16, 23]);
/// CPUID.7.1:EAX: AVX_VNNI, AVX512_BF16, CMPCCXADD, FZRM, FSRS, FSRC, AVX_IFMA (without AMX_FP16
/// and LAM).
const MASK_7_1_EAX: u32 = bits(&[4, 5, 7, 10, 11, 12, 23]);
/// CPUID.7.1:EDX: AVX_VNNI_INT8, AVX_NE_CONVERT, PREFETCHITI (without AMX_COMPLEX and AVX10).
const MASK_7_1_EDX: u32 = bits(&[4, 5, 14]);
/// CPUID.0xD.1:EAX: XSAVEOPT, XSAVEC, XGETBV1 (without XSAVES and XFD).
const MASK_D_1_EAX: u32 = bits(&[0, 1, 2]);
/// CPUID.0x80000001:ECX: LAHF_LM, CMP_LEGACY, CR8_LEGACY, ABM, SSE4A, MISALIGNSSE,
/// 3DNOWPREFETCH, XOP, FMA4, TBM, TOPOEXT (upstream's mask without OSVW).
const MASK_8000_0001_ECX: u32 = bits(&[0, 1, 4, 5, 6, 7, 8, 11, 16, 21, 22]);
/// CPUID.0x80000001:EDX: as CPUID.1:EDX's common bits, SYSCALL, NX, MMXEXT, FXSR_OPT, GBPAGES
/// (the NPT walker honours 1 GiB pages), RDTSCP, LM, 3DNOWEXT, 3DNOW.
const MASK_8000_0001_EDX: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 16, 17, 20, 22, 23, 24, 25, 26, 27, 29, 30, 31,
]);
/// CPUID.0x80000007:EDX: invariant TSC.
const MASK_8000_0007_EDX: u32 = bits(&[8]);
/// CPUID.0x80000008:EBX: CLZERO, XSAVEERPTR, WBNOINVD, AMD_SSB_NO (no speculation-control MSRs).
const MASK_8000_0008_EBX: u32 = bits(&[0, 2, 9, 26]);
/// CPUID.0x80000021:EAX: NO_NESTED_DATA_BP, LFENCE_RDTSC, VERW_CLEAR, NULL_SEL_CLR_BASE, AUTOIBRS,
/// WRMSR_XX_BASE_NS, SRSO_NO, SRSO_USER_KERNEL_NO; NO_SMM_CTL_MSR is added.
const MASK_8000_0021_EAX: u32 = bits(&[0, 1, 2, 5, 6, 8, 29, 30]);
/// `X86_FEATURE_NO_SMM_CTL_MSR` (0x80000021 EAX bit 9): true here, there is no SMM.
const NO_SMM_CTL_MSR: u32 = 1 << 9;

/// XCR0 components a guest may enable: x87, SSE, AVX, the AVX-512 state and PKRU (the guest FPU
/// holds what the host kernel enables; PKRU itself is switched around VMRUN by the backend, as
/// upstream `kvm_load_guest_xsave_state` does); not MPX, AMX. PKRU is in upstream's
/// `KVM_SUPPORTED_XCR0` whatever CPUID.7.ECX.PKU says, and it matters here: under QEMU's TCG SVM
/// a guest XSETBV(PKRU) never reached the module's XSETBV check (measured with xcr0_cpuid_test:
/// accepted, no #GP), i.e. the CPU checks it against its own CPUID.0xD, so a guest told it lacks
/// PKRU would see it accepted.
pub const XCR0_SUPPORTED_MASK: u64 = 0b10_1110_0111;

/// The module's capabilities, computed once from the host (upstream `kvm_cpu_caps`,
/// `kvm_caps.supported_xcr0`, `efer_reserved_bits`, `cr4_reserved_bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmCaps {
    /// CPUID.1 ECX, EDX.
    pub w1: [u32; 2],
    /// CPUID.7.0 EBX, ECX, EDX.
    pub w7_0: [u32; 3],
    /// CPUID.7.1 EAX, EDX.
    pub w7_1: [u32; 2],
    /// CPUID.0xD.1 EAX.
    pub wd_1: u32,
    /// CPUID.0x80000001 ECX, EDX.
    pub w8_1: [u32; 2],
    /// CPUID.0x80000007 EDX.
    pub w8_7: u32,
    /// CPUID.0x80000008 EBX.
    pub w8_8: u32,
    /// CPUID.0x80000021 EAX.
    pub w8_21: u32,
    /// XCR0 bits a guest may set (host XCR0 & [`XCR0_SUPPORTED_MASK`]).
    pub supported_xcr0: u64,
    /// The host's MAXPHYADDR.
    pub phys_bits: u8,
}

impl KvmCaps {
    /// Computes the caps: `host_xcr0` is the XCR0 the host kernel runs with (0 without
    /// XSAVE; a guest gets no XSAVE then).
    pub fn new(host: &HostCpuid<'_>, host_xcr0: u64) -> KvmCaps {
        let c1 = host.cpuid(1, 0);
        let c7 = host.cpuid(7, 0);
        let c71 = if c7[0] >= 1 { host.cpuid(7, 1) } else { [0; 4] };
        let cd1 = host.cpuid(0xd, 1);
        let e1 = host.cpuid(0x8000_0001, 0);
        let e7 = host.cpuid(0x8000_0007, 0);
        let e8 = host.cpuid(0x8000_0008, 0);
        let e21 = host.cpuid(0x8000_0021, 0);
        let supported_xcr0 = if c1[2] & (1 << 26) != 0 {
            host_xcr0 & XCR0_SUPPORTED_MASK
        } else {
            0
        };
        let mut w1 = [c1[2] & MASK_1_ECX, c1[3] & MASK_1_EDX];
        // HOOK(irqmod): the in-kernel LAPIC emulates x2APIC whatever the host has (upstream
        // `kvm_cpu_cap_set(X86_FEATURE_X2APIC)`; the TSC-deadline timer is not in this table
        // upstream either: KVM_CAP_TSC_DEADLINE_TIMER tells userspace to set it).
        w1[0] |= 1 << 21;
        if supported_xcr0 == 0 {
            // No usable XSAVE: hide it (and AVX, which needs it).
            w1[0] &= !(1 << 26 | 1 << 28 | 1 << 12 | 1 << 29);
        }
        let phys_bits = if host.max_ext >= 0x8000_0008 {
            (e8[0] & 0xff) as u8
        } else {
            36
        };
        KvmCaps {
            w1,
            w7_0: [
                c7[1] & MASK_7_0_EBX | 1 << feat::TSC_ADJUST.bit,
                c7[2] & MASK_7_0_ECX,
                c7[3] & MASK_7_0_EDX | 1 << feat::ARCH_CAPABILITIES.bit,
            ],
            w7_1: [c71[0] & MASK_7_1_EAX, c71[3] & MASK_7_1_EDX],
            wd_1: cd1[0] & MASK_D_1_EAX,
            w8_1: [e1[2] & MASK_8000_0001_ECX, e1[3] & MASK_8000_0001_EDX],
            w8_7: e7[3] & MASK_8000_0007_EDX,
            w8_8: e8[1] & MASK_8000_0008_EBX,
            w8_21: e21[0] & MASK_8000_0021_EAX | NO_SMM_CTL_MSR,
            supported_xcr0,
            phys_bits,
        }
    }

    /// Whether the module supports a feature (`kvm_cpu_cap_has`).
    pub fn has(&self, ft: Feature) -> bool {
        let w = match (ft.function, ft.index, ft.reg) {
            (1, _, Reg::Ecx) => self.w1[0],
            (1, _, Reg::Edx) => self.w1[1],
            (7, 0, Reg::Ebx) => self.w7_0[0],
            (7, 0, Reg::Ecx) => self.w7_0[1],
            (7, 0, Reg::Edx) => self.w7_0[2],
            (7, 1, Reg::Eax) => self.w7_1[0],
            (7, 1, Reg::Edx) => self.w7_1[1],
            (0xd, 1, Reg::Eax) => self.wd_1,
            (0x8000_0001, _, Reg::Ecx) => self.w8_1[0],
            (0x8000_0001, _, Reg::Edx) => self.w8_1[1],
            (0x8000_0007, _, Reg::Edx) => self.w8_7,
            (0x8000_0008, _, Reg::Ebx) => self.w8_8,
            (0x8000_0021, _, Reg::Eax) => self.w8_21,
            _ => 0,
        };
        w & (1 << ft.bit) != 0
    }

    /// `cr4_reserved_bits` for these caps.
    pub fn cr4_reserved(&self) -> u64 {
        super::cr4_reserved_bits(|ft| self.has(ft))
    }

    /// `efer_reserved_bits`: SCE always; LME/LMA with LM; NX; FFXSR and AUTOIBRS when the host
    /// has them; never SVME (no nested SVM).
    pub fn efer_reserved(&self) -> u64 {
        use crate::regs::efer;
        let mut ok = efer::SCE | efer::NX;
        if self.has(feat::LM) {
            ok |= efer::LME | efer::LMA;
        }
        if self.has(feat::FXSR_OPT) {
            ok |= efer::FFXSR;
        }
        if self.has(feat::AUTOIBRS) {
            ok |= efer::AUTOIBRS;
        }
        !ok
    }

    /// The module-level CR4/EFER limits.
    pub fn limits(&self) -> crate::regs::ModuleLimits {
        crate::regs::ModuleLimits {
            cr4_reserved: self.cr4_reserved(),
            efer_reserved: self.efer_reserved(),
        }
    }
}

/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// `KVM_CPUID_SIGNATURE`.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// `KVM_CPUID_FEATURES`.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// Where `KVM_GET_SUPPORTED_CPUID` writes its entries: at most `max` of them.
struct Out<'b> {
    buf: &'b mut [KvmCpuidEntry2],
    n: usize,
}

impl Out<'_> {
    /// Appends the host's CPUID(function, index) (upstream `do_host_cpuid`): hypervisor leaves
    /// are zero (synthesised later), extended leaves above the host's range are zero, indexed
    /// leaves get the significant-index flag. `E2BIG` once the buffer is full.
    fn host(&mut self, host: &HostCpuid<'_>, function: u32, index: u32) -> Result<usize> {
        if self.n >= self.buf.len() {
            return Err(Errno::E2big);
        }
        let mut e = KvmCpuidEntry2 {
            function,
            index,
            ..KvmCpuidEntry2::default()
        };
        if function & 0xc000_0000 != 0x4000_0000 {
            let [a, b, c, d] = host.cpuid(function, index);
            (e.eax, e.ebx, e.ecx, e.edx) = (a, b, c, d);
            if super::function_is_indexed(function) {
                e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
            }
        }
        self.buf[self.n] = e;
        self.n += 1;
        Ok(self.n - 1)
    }
}

/// Fills `buf` with the supported CPUID (upstream `kvm_dev_ioctl_get_cpuid` for
/// `KVM_GET_SUPPORTED_CPUID`: the basic range, the extended range, the Centaur range on Centaur
/// hosts only, then the KVM leaves); returns the number of entries, or `E2BIG` if `buf` is too
/// small.
pub fn supported_cpuid(
    host: &HostCpuid<'_>,
    caps: &KvmCaps,
    buf: &mut [KvmCpuidEntry2],
) -> Result<usize> {
    let mut out = Out { buf, n: 0 };
    for start in [0, 0x8000_0000, KVM_CPUID_SIGNATURE] {
        let first = out.n;
        do_func(&mut out, host, caps, start)?;
        let limit = out.buf[first].eax;
        let mut f = start + 1;
        while f <= limit {
            do_func(&mut out, host, caps, f)?;
            f += 1;
        }
    }
    Ok(out.n)
}

/// One leaf (upstream `__do_cpuid_func`).
fn do_func(out: &mut Out<'_>, host: &HostCpuid<'_>, caps: &KvmCaps, function: u32) -> Result {
    let i = out.host(host, function, 0)?;
    let e = &mut out.buf[i];
    match function {
        0 => e.eax = e.eax.min(0x24),
        1 => {
            e.ecx = caps.w1[0];
            e.edx = caps.w1[1];
        }
        2 => {}
        4 | 0x8000_001d => {
            // Cache leaves: every sub-leaf until the type field reads 0.
            let mut sub = 1;
            let mut last = i;
            while out.buf[last].eax & 0x1f != 0 {
                last = out.host(host, function, sub)?;
                sub += 1;
            }
        }
        6 => {
            // Thermal and power: only ARAT.
            (e.eax, e.ebx, e.ecx, e.edx) = (4, 0, 0, 0);
        }
        7 => {
            let max_idx = e.eax.min(2);
            e.eax = max_idx;
            e.ebx = caps.w7_0[0];
            e.ecx = caps.w7_0[1];
            e.edx = caps.w7_0[2];
            if max_idx >= 1 {
                let j = out.host(host, 7, 1)?;
                let e1 = &mut out.buf[j];
                e1.eax = caps.w7_1[0];
                e1.edx = caps.w7_1[1];
                e1.ebx = 0;
                e1.ecx = 0;
            }
            if max_idx >= 2 {
                let j = out.host(host, 7, 2)?;
                let e2 = &mut out.buf[j];
                // No speculation-control MSRs: the 7.2 EDX bits are all about them.
                (e2.eax, e2.ebx, e2.ecx, e2.edx) = (0, 0, 0, 0);
            }
        }
        // No PMU; no topology (a valid one needs sub-leaf 1).
        0xa => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
        0xb | 0x1f => (e.eax, e.ebx, e.ecx) = (0, 0, 0),
        0xd => {
            let xcr0 = caps.supported_xcr0;
            e.eax &= xcr0 as u32;
            e.ebx = host.xstate_required_size(xcr0, false);
            e.ecx = e.ebx;
            e.edx &= (xcr0 >> 32) as u32;
            if xcr0 != 0 {
                let j = out.host(host, 0xd, 1)?;
                let e1 = &mut out.buf[j];
                e1.eax = caps.wd_1;
                // No XSAVES/XSAVEC-compacted supervisor state: XSS is 0.
                e1.ebx = if e1.eax & (1 << feat::XSAVEC.bit) != 0 {
                    host.xstate_required_size(xcr0, true)
                } else {
                    0
                };
                e1.ecx = 0;
                e1.edx = 0;
                for bit in 2..64 {
                    if xcr0 & (1 << bit) == 0 {
                        continue;
                    }
                    let k = out.host(host, 0xd, bit)?;
                    let ek = &mut out.buf[k];
                    if ek.eax == 0 || ek.ecx & 1 != 0 {
                        // Upstream WARNs and drops such a sub-leaf.
                        out.n -= 1;
                        continue;
                    }
                    // No XFD.
                    ek.ecx &= !(1 << 2);
                    ek.edx = 0;
                }
            }
        }
        KVM_CPUID_SIGNATURE => {
            e.eax = KVM_CPUID_FEATURES;
            (e.ebx, e.ecx, e.edx) = (KVM_SIGNATURE[0], KVM_SIGNATURE[1], KVM_SIGNATURE[2]);
        }
        // No paravirtual feature is implemented.
        // HOOK(clock): the PV features this module implements (x86::pv).
        KVM_CPUID_FEATURES => {
            (e.eax, e.ebx, e.ecx, e.edx) = (crate::pv::SUPPORTED_FEATURES, 0, 0, 0)
        }
        0x8000_0000 => {
            e.eax = e.eax.min(0x8000_0022);
            // Upstream raises the range to 0x80000021 for its synthesised bits when the host
            // has 0x8000001d; 0x80000021 then reads from the host (zeros above its range).
            if e.eax >= 0x8000_001d {
                e.eax = e.eax.max(0x8000_0021);
            }
        }
        0x8000_0001 => {
            e.ebx &= !0x0fff_0000;
            e.ecx = caps.w8_1[0];
            e.edx = caps.w8_1[1];
        }
        0x8000_0005 => {}
        0x8000_0006 => e.edx &= !(0b11 << 16),
        0x8000_0007 => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, caps.w8_7),
        0x8000_0008 => {
            // PhysAddrSize: the host's (NPT: GPAs are not reduced); the addressable GPA width
            // capped at 48 by the 4-level TDP MMU. LinearAddrSize: the host's, at least 48
            // (upstream's virt_as).
            let virt = ((e.eax >> 8) & 0xff).max(48);
            let phys = e.eax & 0xff;
            let gphys = phys.min(48);
            e.eax = phys | virt << 8 | gphys << 16;
            e.ecx &= !(0xffff_0000 | 0xf00);
            e.edx = 0;
            e.ebx = caps.w8_8;
        }
        // No nested SVM, no SEV.
        0x8000_000a | 0x8000_001f | 0x8000_0020 | 0x8000_0022 => {
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0)
        }
        0x8000_0019 => (e.ecx, e.edx) = (0, 0),
        0x8000_001a => {
            e.eax &= 0b111;
            (e.ebx, e.ecx, e.edx) = (0, 0, 0);
        }
        0x8000_001e => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
        0x8000_0021 => {
            e.eax = caps.w8_21;
            (e.ebx, e.ecx, e.edx) = (0, 0, 0);
        }
        _ => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small AMD host like QEMU's `-cpu max` (the values that matter here).
    fn amd_host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, _) => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            // SSE3, PCID, X2APIC, XSAVE, OSXSAVE, AVX, HYPERVISOR, PDCM; FPU..SSE2 + MTRR/MCA.
            (1, _) => [
                0x00a0_0f11,
                0x0800,
                1 | 1 << 15 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 31,
                0x0789_fbff,
            ],
            // FSGSBASE, SMEP, SMAP; PKU, LA57, UMIP; ARCH_CAPABILITIES absent.
            (7, 0) => [1, 1 | 1 << 7 | 1 << 20, 1 << 2 | 1 << 3 | 1 << 16, 0],
            (7, 1) => [1 << 26, 0, 0, 0],
            (0xd, 0) => [0x7, 0x340, 0x340, 0],
            (0xd, 1) => [0xf, 0, 0, 0],
            (0xd, 2) => [0x100, 0x240, 0, 0],
            (0x8000_0000, _) => [0x8000_000a, 0, 0, 0],
            // LAHF, SVM; SYSCALL, NX, FXSR_OPT, GBPAGES, RDTSCP, LM.
            (0x8000_0001, _) => [
                0,
                0,
                1 | 1 << 2,
                1 << 11 | 1 << 20 | 1 << 25 | 1 << 26 | 1 << 27 | 1 << 29,
            ],
            // A 57-bit host (QEMU's -cpu max).
            (0x8000_0008, _) => [0x3928, 0, 0, 0],
            (0x8000_000a, _) => [1, 0x10, 0, 0x9],
            _ => [0; 4],
        }
    }

    fn table() -> ([KvmCpuidEntry2; 64], usize, KvmCaps) {
        let f = amd_host;
        let host = HostCpuid::new(&f);
        let caps = KvmCaps::new(&host, 0x7);
        let mut buf = [KvmCpuidEntry2::default(); 64];
        let n = supported_cpuid(&host, &caps, &mut buf).unwrap();
        (buf, n, caps)
    }

    fn entry(t: &[KvmCpuidEntry2], f: u32, i: u32) -> KvmCpuidEntry2 {
        t[super::super::find(t, f, Some(i)).unwrap()]
    }

    #[test]
    fn nothing_unvirtualised_is_advertised() {
        let (t, n, caps) = table();
        let t = &t[..n];
        let has = |ft| super::super::has(t, ft);
        assert!(!has(feat::SVM), "no nested SVM");
        assert!(!has(feat::VMX));
        assert!(has(feat::X2APIC), "emulated by the in-kernel LAPIC");
        assert!(!has(feat::PDCM));
        assert!(!has(feat::PKU));
        assert!(has(feat::LA57), "the host has it");
        assert!(!has(feat::LAM));
        assert!(!has(feat::OSXSAVE), "dynamic, the vCPU's CR4");
        assert!(!has(feat::HYPERVISOR));
        assert!(!has(feat::XSAVES));
        assert!(has(feat::XSAVE) && has(feat::PCID) && has(feat::SMEP) && has(feat::UMIP));
        assert!(has(feat::LM) && has(feat::NX) && has(feat::RDTSCP) && has(feat::GBPAGES));
        assert!(has(feat::TSC_ADJUST) && has(feat::ARCH_CAPABILITIES));
        // MTRR (bit 12) and MCA (bit 14) are not advertised.
        assert_eq!(entry(t, 1, 0).edx & (1 << 12 | 1 << 14), 0);
        assert_eq!(
            entry(t, 0x8000_000a, 0),
            KvmCpuidEntry2 {
                function: 0x8000_000a,
                ..Default::default()
            }
        );
        // CR4: the supported features' bits are allowed, the others reserved.
        use crate::regs::cr4;
        let r = caps.cr4_reserved();
        for ok in [
            cr4::LA57,
            cr4::PCIDE,
            cr4::OSXSAVE,
            cr4::SMEP,
            cr4::SMAP,
            cr4::FSGSBASE,
            cr4::UMIP,
        ] {
            assert_eq!(r & ok, 0, "{ok:#x}");
        }
        for bad in [cr4::PKE, cr4::VMXE, cr4::SMXE, cr4::LAM_SUP] {
            assert_ne!(r & bad, 0, "{bad:#x}");
        }
        use crate::regs::efer;
        assert_eq!(
            caps.efer_reserved() & (efer::LME | efer::NX | efer::FFXSR | efer::SCE),
            0
        );
        assert_ne!(caps.efer_reserved() & efer::SVME, 0);
    }

    /// A CPU without LA57 and 48 VA bits: no LA57 for guests, CR4.LA57 reserved, 48 bits.
    #[test]
    fn la57_follows_the_host() {
        fn host4(leaf: u32, sub: u32) -> [u32; 4] {
            let mut r = amd_host(leaf, sub);
            match (leaf, sub) {
                (7, 0) => r[2] &= !(1 << 16),
                (0x8000_0008, _) => r[0] = 0x3028,
                _ => {}
            }
            r
        }
        let f = host4;
        let host = HostCpuid::new(&f);
        let caps = KvmCaps::new(&host, 0x7);
        let mut buf = [KvmCpuidEntry2::default(); 64];
        let n = supported_cpuid(&host, &caps, &mut buf).unwrap();
        let t = &buf[..n];
        assert!(!super::super::has(t, feat::LA57));
        assert_ne!(caps.cr4_reserved() & crate::regs::cr4::LA57, 0);
        assert_eq!(entry(t, 0x8000_0008, 0).eax, 40 | 48 << 8 | 40 << 16);
    }

    #[test]
    fn leaves_and_sizes() {
        let (t, n, _) = table();
        let t = &t[..n];
        assert_eq!(entry(t, 0, 0).eax, 0xd);
        assert_eq!(entry(t, 0x8000_0000, 0).eax, 0x8000_000a);
        // Address widths: host MAXPHYADDR 40, the host's 57 VA bits, GPA width 40.
        assert_eq!(entry(t, 0x8000_0008, 0).eax, 40 | 57 << 8 | 40 << 16);
        // KVM signature leaf: EAX = 0x40000001.
        let sig = entry(t, KVM_CPUID_SIGNATURE, 0);
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        assert_eq!([sig.ebx, sig.ecx, sig.edx], KVM_SIGNATURE);
        assert_eq!(
            entry(t, KVM_CPUID_FEATURES, 0).eax,
            crate::pv::SUPPORTED_FEATURES
        );
        // 0xD: x87|SSE|AVX, 0x340 bytes, sub-leaf 2 with the flag; XSAVES masked out.
        let d0 = entry(t, 0xd, 0);
        assert_eq!((d0.eax, d0.ebx, d0.ecx, d0.flags), (7, 0x340, 0x340, 1));
        assert_eq!(entry(t, 0xd, 1).eax, 0x7);
        assert_eq!(entry(t, 0xd, 1).ebx, 0x340);
        assert_eq!(entry(t, 0xd, 2).eax, 0x100);
        // Leaf 7 capped at sub-leaf 1.
        assert_eq!(entry(t, 7, 0).eax, 1);
        assert_eq!(entry(t, 7, 1).eax, 0);
        // Every entry's function is in a range (basic, extended, KVM).
        assert!(t.iter().all(|e| e.function <= 0xd
            || (0x8000_0000..=0x8000_000a).contains(&e.function)
            || (0x4000_0000..=0x4000_0001).contains(&e.function)));
        assert_eq!(super::super::check_table(t), Ok(()));
    }

    #[test]
    fn too_small_is_e2big() {
        let f = amd_host;
        let host = HostCpuid::new(&f);
        let caps = KvmCaps::new(&host, 0x7);
        let (_, n, _) = table();
        let mut buf = [KvmCpuidEntry2::default(); 64];
        assert_eq!(
            supported_cpuid(&host, &caps, &mut buf[..n - 1]),
            Err(Errno::E2big)
        );
        assert_eq!(supported_cpuid(&host, &caps, &mut buf[..n]), Ok(n));
    }

    #[test]
    fn no_xsave_without_host_xcr0() {
        let f = amd_host;
        let host = HostCpuid::new(&f);
        let caps = KvmCaps::new(&host, 0);
        assert!(!caps.has(feat::XSAVE));
        assert_ne!(caps.cr4_reserved() & crate::regs::cr4::OSXSAVE, 0);
    }

    #[test]
    fn xstate_sizes() {
        let f = amd_host;
        let host = HostCpuid::new(&f);
        assert_eq!(host.xstate_required_size(3, false), 576);
        assert_eq!(host.xstate_required_size(7, false), 0x340);
        assert_eq!(host.xstate_required_size(7, true), 576 + 0x100);
    }
}
