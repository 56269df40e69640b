// SPDX-License-Identifier: GPL-2.0-only
//! A guest's MOV to CR4 (upstream `kvm_set_cr4` + `kvm_post_set_cr4` + `svm_set_cr4` in 6.12),
//! for the CR4-write intercept: which values raise #GP(0), and what an accepted one changes.

use crate::cpuid::GuestCpu;
use crate::regs::{cr0, cr4, efer, is_valid_cr4, ModuleLimits};
use crate::state::CpuState;

/// `X86_CR4_PDPTR_BITS`: the bits whose change makes a PAE guest's PDPTEs load again.
const PDPTR_BITS: u64 = cr4::PGE | cr4::PSE | cr4::PAE | cr4::SMEP;

/// What an accepted CR4 write requires of the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cr4Effects {
    /// Flush the guest's TLB entries (its ASID): PGE toggled or PCIDE cleared
    /// (`KVM_REQ_TLB_FLUSH_GUEST`), PAE toggled or SMEP set (`KVM_REQ_TLB_FLUSH_CURRENT`).
    pub flush_tlb: bool,
    /// OSXSAVE or PKE changed: the CPUID bits that mirror them must be refreshed
    /// (`kvm_update_cpuid_runtime`, what cr4_cpuid_sync_test checks).
    pub cpuid_runtime: bool,
    /// A PAE guest's PDPTEs must be read again from CR3 (`load_pdptrs`).
    pub pdptrs_stale: bool,
}

/// Upstream `kvm_set_cr4` for a guest's `MOV CR4, r` with `new` (the register's value, 32 bits
/// outside 64-bit mode): `None` is #GP(0) — a bit reserved by the module or the vCPU's CPUID
/// (`kvm_is_valid_cr4`), PAE cleared or LA57 toggled in long mode, PCIDE set with CR3[11:0]
/// not 0 or outside long mode.
///
/// Not checked here: the validity of the PDPTEs a PAE guest's write makes load
/// (`pdptrs_stale`): the caller reads them at CR3 and checks them with [`pdptes_valid`]
/// (upstream's `load_pdptrs` failure is #GP) before it commits the write.
pub fn guest_set_cr4(
    st: &CpuState,
    new: u64,
    limits: &ModuleLimits,
    guest: &GuestCpu,
) -> Option<Cr4Effects> {
    let old = st.cr4;
    if !is_valid_cr4(new, limits, guest) {
        return None;
    }
    let long_mode = st.efer & efer::LMA != 0;
    let paging = st.cr0 & cr0::PG != 0;
    let changed = old ^ new;
    let mut fx = Cr4Effects::default();
    if long_mode {
        if new & cr4::PAE == 0 || changed & cr4::LA57 != 0 {
            return None;
        }
    } else if paging && new & cr4::PAE != 0 && changed & PDPTR_BITS != 0 {
        fx.pdptrs_stale = true;
    }
    if new & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (st.cr3 & 0xfff != 0 || !long_mode) {
        return None;
    }
    fx.flush_tlb = changed & cr4::PGE != 0
        || (new & cr4::PCIDE == 0 && old & cr4::PCIDE != 0)
        || changed & cr4::PAE != 0
        || (new & cr4::SMEP != 0 && old & cr4::SMEP == 0);
    fx.cpuid_runtime = changed & (cr4::OSXSAVE | cr4::PKE) != 0;
    Some(fx)
}

/// The reserved bits of a present PAE PDPTE (upstream `pdptr_rsvd_bits`): the vCPU's reserved
/// GPA bits (MAXPHYADDR..63), bits 5-8 and bits 1-2.
pub fn pdptr_rsvd_bits(guest: &GuestCpu) -> u64 {
    guest.reserved_gpa_bits() | 0x1e0 | 0x6
}

/// The PDPTE check of upstream `load_pdptrs`: every present entry free of reserved bits.
/// (A PDPT the caller cannot read — CR3 outside the memslots — fails too, as upstream's
/// failed `kvm_vcpu_read_guest_page` does.)
pub fn pdptes_valid(pdptes: &[u64; 4], guest: &GuestCpu) -> bool {
    let rsvd = pdptr_rsvd_bits(guest);
    pdptes.iter().all(|&e| e & 1 == 0 || e & rsvd == 0)
}

/// Where a PAE guest's four PDPTEs are, as upstream's `load_pdptrs` reads them: the page
/// `cr3 >> 12` at offset `cr3 & GENMASK(11, 5)` (32-byte aligned, 32 bytes, never across a
/// page).
pub fn pdpt_gpa(cr3: u64) -> u64 {
    (cr3 & !0xfff) | (cr3 & 0xfe0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ModuleLimits = ModuleLimits {
        cr4_reserved: crate::cpuid::CR4_RESERVED_BITS | cr4::VMXE | cr4::LA57 | cr4::PKE,
        efer_reserved: 0,
    };

    fn long_mode() -> CpuState {
        CpuState {
            cr0: cr0::PG | cr0::PE,
            cr4: cr4::PAE,
            efer: efer::LME | efer::LMA,
            ..CpuState::default()
        }
    }

    /// A guest CPUID with XSAVE (OSXSAVE allowed) and nothing else of note.
    fn xsave_guest() -> GuestCpu {
        let mut g = GuestCpu::default();
        g.cr4_guest_rsvd &= !cr4::OSXSAVE;
        g
    }

    #[test]
    fn reserved_and_cpuid_gated_bits_gp() {
        let s = long_mode();
        let g = xsave_guest();
        assert_eq!(guest_set_cr4(&s, cr4::PAE | cr4::VMXE, &LIMITS, &g), None);
        assert_eq!(guest_set_cr4(&s, cr4::PAE | 1 << 32, &LIMITS, &g), None);
        // OSXSAVE needs XSAVE in the vCPU's CPUID (cr4_guest_rsvd_bits).
        let no_xsave = GuestCpu {
            cr4_guest_rsvd: cr4::OSXSAVE,
            ..GuestCpu::default()
        };
        assert_eq!(
            guest_set_cr4(&s, cr4::PAE | cr4::OSXSAVE, &LIMITS, &no_xsave),
            None
        );
        let fx = guest_set_cr4(&s, cr4::PAE | cr4::OSXSAVE, &LIMITS, &g).unwrap();
        assert!(fx.cpuid_runtime);
    }

    #[test]
    fn long_mode_rules() {
        let s = long_mode();
        let g = xsave_guest();
        assert_eq!(guest_set_cr4(&s, 0, &LIMITS, &g), None, "PAE cleared");
        let mut s2 = s.clone();
        s2.cr3 = 0x1001;
        assert_eq!(
            guest_set_cr4(&s2, cr4::PAE | cr4::PCIDE, &LIMITS, &g),
            None,
            "PCIDE with CR3[11:0] != 0"
        );
        let fx = guest_set_cr4(&s, cr4::PAE | cr4::PGE, &LIMITS, &g).unwrap();
        assert!(fx.flush_tlb, "PGE toggled");
        assert!(!fx.cpuid_runtime);
        assert!(!fx.pdptrs_stale);
        let fx = guest_set_cr4(&s, cr4::PAE | cr4::OSFXSR, &LIMITS, &g).unwrap();
        assert_eq!(fx, Cr4Effects::default());
    }

    #[test]
    fn pcide_needs_long_mode() {
        let s = CpuState {
            cr0: cr0::PE,
            ..CpuState::default()
        };
        let mut g = xsave_guest();
        g.cr4_guest_rsvd &= !cr4::PCIDE;
        assert_eq!(guest_set_cr4(&s, cr4::PCIDE, &LIMITS, &g), None);
        let mut l = long_mode();
        assert!(guest_set_cr4(&l, cr4::PAE | cr4::PCIDE, &LIMITS, &g).is_some());
        l.cr4 |= cr4::PCIDE;
        let fx = guest_set_cr4(&l, cr4::PAE, &LIMITS, &g).unwrap();
        assert!(fx.flush_tlb, "PCIDE cleared");
    }

    #[test]
    fn pae_paging_reloads_pdptrs() {
        let s = CpuState {
            cr0: cr0::PG | cr0::PE,
            cr4: cr4::PAE,
            ..CpuState::default()
        };
        let g = xsave_guest();
        let fx = guest_set_cr4(&s, cr4::PAE | cr4::PGE, &LIMITS, &g).unwrap();
        assert!(fx.pdptrs_stale && fx.flush_tlb);
        // Real mode: PAE may toggle freely, no PDPTEs.
        let r = CpuState::default();
        let fx = guest_set_cr4(&r, cr4::PAE, &LIMITS, &g).unwrap();
        assert!(!fx.pdptrs_stale && fx.flush_tlb);
    }

    #[test]
    fn pdptes_reserved_bits_as_load_pdptrs() {
        let g = GuestCpu {
            maxphyaddr: 36,
            ..GuestCpu::default()
        };
        assert_eq!(pdptr_rsvd_bits(&g), 0xffff_fff0_0000_0000 | 0x1e6);
        let ok = [0x2001, 0, 0x3000 | 0x18 | 1, 0xffff_f000 | 0x1e6];
        // Not-present entries may hold anything; PWT/PCD (bits 3-4) are allowed.
        assert!(pdptes_valid(&ok, &g));
        for bad in [1 << 1, 1 << 2, 1 << 5, 1 << 8, 1 << 36, 1 << 63] {
            let mut p = ok;
            p[3] = 0x4000 | 1 | bad;
            assert!(!pdptes_valid(&p, &g), "bit {bad:#x}");
        }
        let wide = GuestCpu {
            maxphyaddr: 48,
            ..GuestCpu::default()
        };
        assert!(pdptes_valid(&[1 | 1 << 36, 0, 0, 0], &wide));
        assert_eq!(pdpt_gpa(0x1234_5fff), 0x1234_5fe0);
        assert_eq!(pdpt_gpa(0x1_0000_1020), 0x1_0000_1020);
    }
}
