// SPDX-License-Identifier: GPL-2.0-only
//! CPUID: the vCPU's table (`KVM_SET/GET_CPUID2`), what the rules derive from it (upstream
//! `kvm_vcpu_after_set_cpuid`), the guest's `CPUID` instruction answered from it
//! (`kvm_cpuid`), and the table of what this module supports (`KVM_GET_SUPPORTED_CPUID`,
//! upstream `kvm_set_cpu_caps` + `__do_cpuid_func`) in [`supported`].
//!
//! The table itself is stored by the module (up to `KVM_MAX_CPUID_ENTRIES` entries); this
//! module works on slices of it.

use crate::errno::{Errno, Result};
use crate::uapi::{KvmCpuidEntry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

pub mod emulated; // HOOK(ud): KVM_GET_EMULATED_CPUID
pub mod supported;

/// `KVM_MAX_CPUID_ENTRIES`.
pub const KVM_MAX_CPUID_ENTRIES: usize = 256;

/// A CPUID output register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One feature bit: leaf, sub-leaf, register, bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Leaf.
    pub function: u32,
    /// Sub-leaf (0 for leaves without one).
    pub index: u32,
    /// Register.
    pub reg: Reg,
    /// Bit number.
    pub bit: u8,
}

const fn f(function: u32, index: u32, reg: Reg, bit: u8) -> Feature {
    Feature {
        function,
        index,
        reg,
        bit,
    }
}

/// The feature bits the rules of this crate look at (names as in `cpufeatures.h`).
#[allow(missing_docs)]
pub mod feat {
    use super::{f, Feature, Reg::*};
    pub const FPU: Feature = f(1, 0, Edx, 0);
    pub const APIC: Feature = f(1, 0, Edx, 9);
    pub const PSE36: Feature = f(1, 0, Edx, 17);
    pub const FXSR: Feature = f(1, 0, Edx, 24);
    pub const VMX: Feature = f(1, 0, Ecx, 5);
    pub const SMX: Feature = f(1, 0, Ecx, 6);
    pub const PDCM: Feature = f(1, 0, Ecx, 15);
    pub const MOVBE: Feature = f(1, 0, Ecx, 22); // HOOK(ud)
    pub const PCID: Feature = f(1, 0, Ecx, 17);
    pub const X2APIC: Feature = f(1, 0, Ecx, 21);
    pub const TSC_DEADLINE_TIMER: Feature = f(1, 0, Ecx, 24);
    pub const XSAVE: Feature = f(1, 0, Ecx, 26);
    pub const OSXSAVE: Feature = f(1, 0, Ecx, 27);
    pub const HYPERVISOR: Feature = f(1, 0, Ecx, 31);
    pub const FSGSBASE: Feature = f(7, 0, Ebx, 0);
    pub const TSC_ADJUST: Feature = f(7, 0, Ebx, 1);
    pub const RTM: Feature = f(7, 0, Ebx, 11);
    pub const SMEP: Feature = f(7, 0, Ebx, 7);
    pub const SMAP: Feature = f(7, 0, Ebx, 20);
    pub const UMIP: Feature = f(7, 0, Ecx, 2);
    pub const PKU: Feature = f(7, 0, Ecx, 3);
    pub const OSPKE: Feature = f(7, 0, Ecx, 4);
    pub const LA57: Feature = f(7, 0, Ecx, 16);
    pub const RDPID: Feature = f(7, 0, Ecx, 22);
    pub const ARCH_CAPABILITIES: Feature = f(7, 0, Edx, 29);
    pub const BUS_LOCK_DETECT: Feature = f(7, 0, Ecx, 24);
    pub const LAM: Feature = f(7, 1, Eax, 26);
    pub const XSAVES: Feature = f(0xd, 1, Eax, 3);
    pub const XSAVEC: Feature = f(0xd, 1, Eax, 1);
    pub const LAHF_LM: Feature = f(0x8000_0001, 0, Ecx, 0);
    pub const SVM: Feature = f(0x8000_0001, 0, Ecx, 2);
    pub const NX: Feature = f(0x8000_0001, 0, Edx, 20);
    pub const FXSR_OPT: Feature = f(0x8000_0001, 0, Edx, 25);
    pub const GBPAGES: Feature = f(0x8000_0001, 0, Edx, 26);
    pub const RDTSCP: Feature = f(0x8000_0001, 0, Edx, 27);
    pub const LM: Feature = f(0x8000_0001, 0, Edx, 29);
    pub const AUTOIBRS: Feature = f(0x8000_0021, 0, Eax, 8);
    pub const SPEC_CTRL: Feature = f(7, 0, Edx, 26);
    pub const AMD_IBRS: Feature = f(0x8000_0008, 0, Ebx, 14);
    pub const AMD_STIBP: Feature = f(0x8000_0008, 0, Ebx, 15);
    pub const AMD_SSBD: Feature = f(0x8000_0008, 0, Ebx, 24);
    pub const VIRT_SSBD: Feature = f(0x8000_0008, 0, Ebx, 25);
}

fn reg_of(e: &KvmCpuidEntry2, r: Reg) -> u32 {
    match r {
        Reg::Eax => e.eax,
        Reg::Ebx => e.ebx,
        Reg::Ecx => e.ecx,
        Reg::Edx => e.edx,
    }
}

fn reg_mut(e: &mut KvmCpuidEntry2, r: Reg) -> &mut u32 {
    match r {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

/// Leaves whose sub-leaf (ECX) is architecturally significant (upstream
/// `cpuid_function_is_indexed`).
pub fn function_is_indexed(function: u32) -> bool {
    matches!(
        function,
        4 | 7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x24
            | 0x8000_001d
    )
}

/// Upstream `cpuid_entry2_find`: the first entry for `function` whose index matches, or that
/// is not indexed (`index` None: any entry of the leaf, for leaves without sub-leaves).
pub fn find(entries: &[KvmCpuidEntry2], function: u32, index: Option<u32>) -> Option<usize> {
    entries.iter().position(|e| {
        e.function == function
            && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0
                || index.is_none()
                || Some(e.index) == index)
    })
}

/// The entry for a feature's leaf (the sub-leaf matters for indexed leaves only).
fn find_feature(entries: &[KvmCpuidEntry2], ft: Feature) -> Option<&KvmCpuidEntry2> {
    let index = function_is_indexed(ft.function).then_some(ft.index);
    find(entries, ft.function, index.or(Some(ft.index))).map(|i| &entries[i])
}

/// Whether the table sets a feature (upstream `guest_cpuid_has`).
pub fn has(entries: &[KvmCpuidEntry2], ft: Feature) -> bool {
    find_feature(entries, ft).is_some_and(|e| reg_of(e, ft.reg) & (1 << ft.bit) != 0)
}

/// Sets or clears a feature bit in an entry of the table, if the leaf is there
/// (upstream `cpuid_entry_change`).
pub fn change(entries: &mut [KvmCpuidEntry2], ft: Feature, on: bool) {
    let index = function_is_indexed(ft.function).then_some(ft.index);
    if let Some(i) = find(entries, ft.function, index.or(Some(ft.index))) {
        let r = reg_mut(&mut entries[i], ft.reg);
        if on {
            *r |= 1 << ft.bit;
        } else {
            *r &= !(1 << ft.bit);
        }
    }
}

/// What the rules need from a vCPU's CPUID table, computed when the table is set (upstream
/// `kvm_vcpu_after_set_cpuid`): a vCPU that never had `KVM_SET_CPUID2` has the zero model with
/// MAXPHYADDR 36 and no CR4 restrictions of its own, as upstream's freshly created vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCpu {
    /// MAXPHYADDR (CPUID 0x80000008 EAX[7:0], 36 when the table does not say).
    pub maxphyaddr: u8,
    /// CR4 bits the guest's CPUID makes reserved (`cr4_guest_rsvd_bits`; 0 before the first
    /// `KVM_SET_CPUID2`).
    pub cr4_guest_rsvd: u64,
    /// CPUID.1:EAX, the family/model/stepping (RDX at RESET).
    pub signature: Option<u32>,
    /// XCR0 bits the guest may set (CPUID 0xD.0 EDX:EAX masked with what the module supports).
    pub supported_xcr0: u64,
    /// Guest has long mode.
    pub lm: bool,
    /// Guest has NX.
    pub nx: bool,
    /// Guest has SVM.
    pub svm: bool,
    /// Guest has FXSR_OPT (EFER.FFXSR).
    pub fxsr_opt: bool,
    /// Guest has AutoIBRS.
    pub autoibrs: bool,
    /// Guest has x2APIC.
    pub x2apic: bool,
    /// Guest has RTM (a DR6 bit).
    pub rtm: bool,
    /// Guest has bus-lock detection (a DR6 bit).
    pub bus_lock_detect: bool,
    /// Guest has TSC_ADJUST.
    pub tsc_adjust: bool,
    /// Guest has RDTSCP (TSC_AUX).
    pub rdtscp: bool,
    /// Guest has RDPID (TSC_AUX).
    pub rdpid: bool,
    /// Guest has ARCH_CAPABILITIES.
    pub arch_capabilities: bool,
    /// Guest has PDCM (PERF_CAPABILITIES).
    pub pdcm: bool,
    /// The guest's vendor is AMD or Hygon.
    pub amd_compatible: bool,
    /// Guest has XSAVES (MSR_IA32_XSS).
    pub xsaves: bool,
    /// Guest has MSR_IA32_SPEC_CTRL (upstream `guest_has_spec_ctrl_msr`: SPEC_CTRL, AMD_STIBP,
    /// AMD_IBRS or AMD_SSBD).
    pub spec_ctrl_msr: bool,
    /// Guest has VIRT_SSBD (MSR_AMD64_VIRT_SPEC_CTRL).
    pub virt_ssbd: bool,
}

impl Default for GuestCpu {
    fn default() -> Self {
        GuestCpu {
            maxphyaddr: 36,
            cr4_guest_rsvd: 0,
            signature: None,
            supported_xcr0: 0,
            lm: false,
            nx: false,
            svm: false,
            fxsr_opt: false,
            autoibrs: false,
            x2apic: false,
            rtm: false,
            bus_lock_detect: false,
            tsc_adjust: false,
            rdtscp: false,
            rdpid: false,
            arch_capabilities: false,
            pdcm: false,
            amd_compatible: false,
            xsaves: false,
            spec_ctrl_msr: false,
            virt_ssbd: false,
        }
    }
}

/// `CR4_RESERVED_BITS`: CR4 bits KVM never lets a guest set.
pub const CR4_RESERVED_BITS: u64 = !(crate::regs::cr4::VME
    | crate::regs::cr4::PVI
    | crate::regs::cr4::TSD
    | crate::regs::cr4::DE
    | crate::regs::cr4::PSE
    | crate::regs::cr4::PAE
    | crate::regs::cr4::MCE
    | crate::regs::cr4::PGE
    | crate::regs::cr4::PCE
    | crate::regs::cr4::OSFXSR
    | crate::regs::cr4::PCIDE
    | crate::regs::cr4::OSXSAVE
    | crate::regs::cr4::SMEP
    | crate::regs::cr4::FSGSBASE
    | crate::regs::cr4::OSXMMEXCPT
    | crate::regs::cr4::LA57
    | crate::regs::cr4::VMXE
    | crate::regs::cr4::SMAP
    | crate::regs::cr4::PKE
    | crate::regs::cr4::UMIP
    | crate::regs::cr4::LAM_SUP);

/// Upstream `__cr4_reserved_bits`: the reserved CR4 bits for a CPU with the features `has`
/// reports (the module's capabilities, or a guest's CPUID).
pub fn cr4_reserved_bits(has: impl Fn(Feature) -> bool) -> u64 {
    use crate::regs::cr4;
    let mut r = CR4_RESERVED_BITS;
    let pairs = [
        (feat::XSAVE, cr4::OSXSAVE),
        (feat::SMEP, cr4::SMEP),
        (feat::SMAP, cr4::SMAP),
        (feat::FSGSBASE, cr4::FSGSBASE),
        (feat::PKU, cr4::PKE),
        (feat::LA57, cr4::LA57),
        (feat::UMIP, cr4::UMIP),
        (feat::VMX, cr4::VMXE),
        (feat::PCID, cr4::PCIDE),
        (feat::LAM, cr4::LAM_SUP),
    ];
    for (ft, bit) in pairs {
        if !has(ft) {
            r |= bit;
        }
    }
    r
}

/// Whether a CPUID.0 vendor signature (EBX, ECX, EDX) is AMD's or Hygon's.
pub fn vendor_is_amd_compatible(ebx: u32, ecx: u32, edx: u32) -> bool {
    // "AuthenticAMD", "AMDisbetter!", "HygonGenuine".
    const AMD: [u32; 3] = [0x6874_7541, 0x444d_4163, 0x6974_6e65];
    const AMD_OLD: [u32; 3] = [0x6953_4d41, 0x2172_6574, 0x7465_6273];
    const HYGON: [u32; 3] = [0x6f67_7948, 0x656e_6975, 0x6e65_476e];
    let v = [ebx, ecx, edx];
    v == AMD || v == AMD_OLD || v == HYGON
}

impl GuestCpu {
    /// The model of a table (upstream `kvm_vcpu_after_set_cpuid`); `module_xcr0` is the XCR0
    /// the module supports (`kvm_caps.supported_xcr0`).
    pub fn from_entries(entries: &[KvmCpuidEntry2], module_xcr0: u64) -> GuestCpu {
        let maxphyaddr = match find(entries, 0x8000_0000, None) {
            Some(i) if entries[i].eax >= 0x8000_0008 => {
                find(entries, 0x8000_0008, None).map_or(36, |j| (entries[j].eax & 0xff) as u8)
            }
            _ => 36,
        };
        let supported_xcr0 = find(entries, 0xd, Some(0)).map_or(0, |i| {
            (u64::from(entries[i].eax) | u64::from(entries[i].edx) << 32) & module_xcr0
        });
        let amd_compatible = find(entries, 0, None).is_some_and(|i| {
            vendor_is_amd_compatible(entries[i].ebx, entries[i].ecx, entries[i].edx)
        });
        let h = |ft| has(entries, ft);
        GuestCpu {
            maxphyaddr,
            cr4_guest_rsvd: cr4_reserved_bits(h),
            signature: find(entries, 1, None).map(|i| entries[i].eax),
            supported_xcr0,
            lm: h(feat::LM),
            nx: h(feat::NX),
            svm: h(feat::SVM),
            fxsr_opt: h(feat::FXSR_OPT),
            autoibrs: h(feat::AUTOIBRS),
            x2apic: h(feat::X2APIC),
            rtm: h(feat::RTM),
            bus_lock_detect: h(feat::BUS_LOCK_DETECT),
            tsc_adjust: h(feat::TSC_ADJUST),
            rdtscp: h(feat::RDTSCP),
            rdpid: h(feat::RDPID),
            arch_capabilities: h(feat::ARCH_CAPABILITIES),
            pdcm: h(feat::PDCM),
            amd_compatible,
            xsaves: h(feat::XSAVES),
            spec_ctrl_msr: h(feat::SPEC_CTRL)
                || h(feat::AMD_STIBP)
                || h(feat::AMD_IBRS)
                || h(feat::AMD_SSBD),
            virt_ssbd: h(feat::VIRT_SSBD),
        }
    }

    /// Reserved GPA bits: MAXPHYADDR..63 (`kvm_vcpu_reserved_gpa_bits_raw`).
    pub fn reserved_gpa_bits(&self) -> u64 {
        let m = u32::from(self.maxphyaddr.min(63));
        !0u64 << m
    }

    /// `kvm_vcpu_is_legal_gpa`.
    pub fn is_legal_gpa(&self, gpa: u64) -> bool {
        gpa & self.reserved_gpa_bits() == 0
    }
}

/// Upstream `kvm_check_cpuid`'s rule this module has: a 0x80000008 leaf must say 48 or 57
/// virtual-address bits (or 0). (Dynamic XSAVE features, its other rule, are never supported
/// here, so the table cannot ask for them: XFD-enabled AMX is not advertised.)
pub fn check_table(entries: &[KvmCpuidEntry2]) -> Result {
    if let Some(i) = find(entries, 0x8000_0008, None) {
        let vaddr_bits = (entries[i].eax >> 8) & 0xff;
        if vaddr_bits != 48 && vaddr_bits != 57 && vaddr_bits != 0 {
            return Err(Errno::Einval);
        }
    }
    Ok(())
}

/// Upstream `kvm_cpuid_check_equal`: after the first `KVM_RUN` only the identical table is
/// accepted (function, index, flags and the four registers of every entry, in order).
pub fn check_equal(old: &[KvmCpuidEntry2], new: &[KvmCpuidEntry2]) -> Result {
    if old.len() != new.len() {
        return Err(Errno::Einval);
    }
    for (o, n) in old.iter().zip(new) {
        if o.function != n.function
            || o.index != n.index
            || o.flags != n.flags
            || o.eax != n.eax
            || o.ebx != n.ebx
            || o.ecx != n.ecx
            || o.edx != n.edx
        {
            return Err(Errno::Einval);
        }
    }
    Ok(())
}

/// The runtime bits of a table that follow the vCPU's state (upstream
/// `__kvm_update_cpuid_runtime`): CPUID.1 OSXSAVE mirrors CR4.OSXSAVE (when the host has
/// XSAVE), CPUID.1 APIC mirrors APIC_BASE.EN, CPUID.7 OSPKE mirrors CR4.PKE (when the host has
/// PKU), and 0xD.0/0xD.1 EBX hold the XSAVE size for the current XCR0.
pub fn update_runtime(
    entries: &mut [KvmCpuidEntry2],
    cr4: u64,
    apic_base: u64,
    xcr0: u64,
    host: &supported::HostCpuid<'_>,
) {
    use crate::regs::cr4 as c;
    if host.has(feat::XSAVE) {
        change(entries, feat::OSXSAVE, cr4 & c::OSXSAVE != 0);
    }
    change(
        entries,
        feat::APIC,
        apic_base & crate::regs::APIC_BASE_ENABLE != 0,
    );
    if host.has(feat::PKU) {
        change(entries, feat::OSPKE, cr4 & c::PKE != 0);
    }
    if let Some(i) = find(entries, 0xd, Some(0)) {
        entries[i].ebx = host.xstate_required_size(xcr0, false);
    }
    if let Some(i) = find(entries, 0xd, Some(1)) {
        let e = entries[i];
        if reg_of(&e, Reg::Eax) & (1 << feat::XSAVES.bit | 1 << feat::XSAVEC.bit) != 0 {
            entries[i].ebx = host.xstate_required_size(xcr0, true);
        }
    }
}

/// The runtime bits of one entry for the vCPU's current state (as [`update_runtime`] keeps
/// them in the table), so a `CPUID` exit answers correctly even right after the guest itself
/// changed CR4, APIC_BASE or XCR0.
pub fn apply_runtime(
    e: &mut KvmCpuidEntry2,
    cr4: u64,
    apic_base: u64,
    xcr0: u64,
    host: &supported::HostCpuid<'_>,
) {
    update_runtime(core::slice::from_mut(e), cr4, apic_base, xcr0, host);
}

/// The guest's `CPUID` instruction answered from the vCPU's table (upstream `kvm_cpuid` without
/// the Hyper-V/Xen parts): the entry for (EAX, ECX); for a leaf the table lacks, an Intel-model
/// guest gets the highest basic leaf's entry (the CPU's behaviour for out-of-range leaves), an
/// AMD-model guest zeros. Returns [EAX, EBX, ECX, EDX] and whether an entry matched exactly.
pub fn guest_cpuid(
    entries: &[KvmCpuidEntry2],
    guest: &GuestCpu,
    function: u32,
    index: u32,
) -> ([u32; 4], bool) {
    if let Some(i) = find(entries, function, Some(index)) {
        let e = &entries[i];
        return ([e.eax, e.ebx, e.ecx, e.edx], true);
    }
    if let Some(e) = out_of_range(entries, guest, function, index) {
        return ([e.eax, e.ebx, e.ecx, e.edx], false);
    }
    ([0; 4], false)
}

/// Upstream `get_out_of_range_cpuid_entry`: Intel CPUs answer a leaf above the class maximum
/// with the highest basic leaf; AMD CPUs answer zeros (so no entry).
fn out_of_range(
    entries: &[KvmCpuidEntry2],
    guest: &GuestCpu,
    function: u32,
    index: u32,
) -> Option<KvmCpuidEntry2> {
    if guest.amd_compatible {
        return None;
    }
    let class_max = find(entries, function & 0x8000_0000, None)?;
    if function <= entries[class_max].eax {
        return None;
    }
    let basic_max = entries[find(entries, 0, None)?].eax;
    let i = find(entries, basic_max, Some(index))?;
    Some(entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_bits_follow_the_state() {
        let host_fn = |leaf: u32, sub: u32| -> [u32; 4] {
            match (leaf, sub) {
                (0, _) => [0xd, 0, 0, 0],
                (1, _) => [0, 0, 1 << 26, 0],
                (7, 0) => [0, 0, 1 << 3, 0],
                (0xd, 2) => [0x100, 0x240, 0, 0],
                _ => [0; 4],
            }
        };
        let host = supported::HostCpuid::new(&host_fn);
        let mut t = [
            e(1, 0, 0, [0, 0, 1 << 26, 1 << 9]),
            e(7, 0, 1, [0, 0, 1 << 3, 0]),
            e(0xd, 0, 1, [7, 0x340, 0x340, 0]),
        ];
        use crate::regs::{cr4, APIC_BASE_ENABLE};
        update_runtime(&mut t, cr4::OSXSAVE | cr4::PKE, 0, 7, &host);
        assert!(has(&t, feat::OSXSAVE));
        assert!(has(&t, feat::OSPKE));
        assert!(!has(&t, feat::APIC), "APIC_BASE.EN clear");
        assert_eq!(t[2].ebx, 0x340);
        update_runtime(&mut t, 0, APIC_BASE_ENABLE, 1, &host);
        assert!(!has(&t, feat::OSXSAVE) && !has(&t, feat::OSPKE) && has(&t, feat::APIC));
        assert_eq!(t[2].ebx, 576);
        let mut one = t[0];
        apply_runtime(&mut one, cr4::OSXSAVE, APIC_BASE_ENABLE, 1, &host);
        assert_ne!(one.ecx & 1 << 27, 0);
    }

    fn e(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> KvmCpuidEntry2 {
        KvmCpuidEntry2 {
            function,
            index,
            flags,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        }
    }

    #[test]
    fn empty_table_is_the_creation_model() {
        let g = GuestCpu::from_entries(&[], !0);
        assert_eq!(g.maxphyaddr, 36);
        assert!(!g.lm && !g.nx && !g.x2apic);
        // The creation model has no CR4 restrictions of its own (cr4_guest_rsvd_bits = 0)...
        assert_eq!(GuestCpu::default().cr4_guest_rsvd, 0);
        // ...but an empty *set* table reserves every feature-gated bit.
        assert_ne!(g.cr4_guest_rsvd & crate::regs::cr4::OSXSAVE, 0);
    }

    #[test]
    fn maxphyaddr_needs_the_extended_range() {
        let t = [e(0x8000_0008, 0, 0, [0x3028, 0, 0, 0])];
        assert_eq!(GuestCpu::from_entries(&t, 0).maxphyaddr, 36);
        let t = [
            e(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0]),
            e(0x8000_0008, 0, 0, [0x3028, 0, 0, 0]),
        ];
        let g = GuestCpu::from_entries(&t, 0);
        assert_eq!(g.maxphyaddr, 40);
        assert!(g.is_legal_gpa((1 << 40) - 1));
        assert!(!g.is_legal_gpa(1 << 40));
    }

    #[test]
    fn indexed_lookup() {
        let t = [
            e(7, 0, 1, [1, 0, 0, 0]),
            e(7, 1, 1, [1 << 26, 0, 0, 0]),
            e(1, 5, 0, [0x600, 0, 1 << 21, 0]),
        ];
        assert_eq!(find(&t, 7, Some(1)), Some(1));
        assert_eq!(find(&t, 7, Some(2)), None);
        // Not indexed: the index does not matter.
        assert_eq!(find(&t, 1, Some(0)), Some(2));
        assert!(has(&t, feat::LAM));
        assert!(has(&t, feat::X2APIC));
        assert!(!has(&t, feat::SMEP));
    }

    #[test]
    fn vaddr_bits_rule() {
        for (bits, ok) in [(48, true), (57, true), (0, true), (47, false), (64, false)] {
            let t = [e(0x8000_0008, 0, 0, [40 | bits << 8, 0, 0, 0])];
            assert_eq!(check_table(&t).is_ok(), ok, "{bits}");
        }
    }

    #[test]
    fn equal_rule_compares_everything_but_padding() {
        let a = [e(1, 0, 0, [1, 2, 3, 4])];
        let mut b = a;
        b[0].padding = [9; 3];
        assert_eq!(check_equal(&a, &b), Ok(()));
        for k in 0..7 {
            let mut c = a;
            match k {
                0 => c[0].function = 2,
                1 => c[0].index = 1,
                2 => c[0].flags = 1,
                3 => c[0].eax ^= 1,
                4 => c[0].ebx ^= 1,
                5 => c[0].ecx ^= 1,
                _ => c[0].edx ^= 1,
            }
            assert_eq!(check_equal(&a, &c), Err(Errno::Einval), "field {k}");
        }
        assert_eq!(check_equal(&a, &[]), Err(Errno::Einval));
    }

    #[test]
    fn guest_cpuid_out_of_range() {
        let intel = [
            e(0, 0, 0, [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            e(0xd, 0, 1, [7, 0x340, 0x340, 0]),
            e(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0]),
        ];
        let g = GuestCpu::from_entries(&intel, !0);
        assert_eq!(
            guest_cpuid(&intel, &g, 0xd, 0),
            ([7, 0x340, 0x340, 0], true)
        );
        // Above the basic maximum: the highest basic leaf (same sub-leaf).
        assert_eq!(
            guest_cpuid(&intel, &g, 0x20, 0),
            ([7, 0x340, 0x340, 0], false)
        );
        // Inside the range but missing: zeros.
        assert_eq!(guest_cpuid(&intel, &g, 5, 0), ([0; 4], false));
        let mut amd = intel;
        amd[0] = e(0, 0, 0, [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]);
        let g = GuestCpu::from_entries(&amd, !0);
        assert!(g.amd_compatible);
        assert_eq!(guest_cpuid(&amd, &g, 0x20, 0), ([0; 4], false));
    }
}
