// SPDX-License-Identifier: GPL-2.0-only
//! The guest page-table walker: linear address -> guest-physical address, or the #PF error
//! code hardware would report.
//!
//! It follows upstream's `paging_tmpl.h` (`walk_addr_generic`) and `permission_fault()`:
//! - the walk ANDs the U/S and R/W bits of every level and ORs NX (upstream inverts NX and
//!   ANDs it like the others);
//! - a non-present entry ends the walk with an error code without P; a reserved bit set ends
//!   it with P|RSVD; a table that is not guest RAM ends it like a non-present entry;
//! - the permission check (W with CR0.WP, U/S with the access's CPL, NX with EFER.NXE, SMEP,
//!   SMAP with RFLAGS.AC and implicit supervisor accesses) comes only after a complete walk;
//! - only a successful walk sets accessed bits on every level and the dirty bit on the leaf for
//!   a write, with compare-and-exchange, restarting the walk if an entry changed under us;
//! - the error code gets W and U from the access, and I/D only when NX or SMEP is on.
//!
//! Deviations (documented, not silent): PAE's four PDPTEs are read from memory at each walk
//! instead of being cached at the last CR3 load (their reserved bits are checked when CR3 is
//! loaded, which is not this walker's job), and protection keys (CR4.PKE) are not checked.

use crate::{Gla, Gpa, GuestPhys, NotRam};

/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PE.
pub const CR0_PE: u64 = 1;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;
/// RFLAGS.AC.
pub const RFLAGS_AC: u64 = 1 << 18;

/// #PF error code bits (SDM Vol. 3 "Page-Fault Exception").
pub mod pfec {
    /// The fault was caused by a present entry (protection or reserved bit).
    pub const PRESENT: u32 = 1 << 0;
    /// Write access.
    pub const WRITE: u32 = 1 << 1;
    /// User-mode access (CPL 3).
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in some entry.
    pub const RSVD: u32 = 1 << 3;
    /// Instruction fetch.
    pub const FETCH: u32 = 1 << 4;
}

const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_U: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;

/// The paging structure the guest's control registers select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear addresses are physical.
    None,
    /// 32-bit paging (4 KiB pages, 4 MiB pages with CR4.PSE).
    Bits32,
    /// PAE paging (CR4.PAE, not long mode).
    Pae,
    /// 4-level paging (long mode).
    Level4,
    /// 5-level paging (long mode with CR4.LA57).
    Level5,
}

impl PagingMode {
    /// The mode selected by CR0, CR4 and EFER.
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
        if cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if efer & EFER_LMA != 0 {
            if cr4 & CR4_LA57 != 0 {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }
}

/// Guest CPU properties the walk depends on (from the vCPU's CPUID), like upstream's
/// `cpuid_maxphyaddr()`, `is_cpuid_PSE36()` and `guest_cpu_cap_has(X86_FEATURE_GBPAGES)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkConfig {
    /// MAXPHYADDR: physical-address bits above it are reserved in every entry.
    pub maxphyaddr: u8,
    /// PSE-36: 4 MiB pages of 32-bit paging carry physical-address bits 32+ in bits 13-20.
    pub pse36: bool,
    /// 1 GiB pages are allowed in 4- and 5-level paging.
    pub gbpages: bool,
}

impl Default for WalkConfig {
    /// What QEMU's `-cpu max` reports on x86-64 (40 physical bits, PSE-36, 1 GiB pages).
    fn default() -> Self {
        WalkConfig {
            maxphyaddr: 40,
            pse36: true,
            gbpages: true,
        }
    }
}

impl WalkConfig {
    /// The walk configuration of a vCPU, from its CPUID table (`entries`, with `model` derived
    /// from it), as upstream's guest MMU takes its reserved bits from guest CPUID
    /// (`reset_guest_rsvds_bits_mask`): MAXPHYADDR from leaf 0x80000008 (36 without it),
    /// PSE-36 from CPUID.1:EDX, and 1 GiB pages as `kvm_vcpu_after_set_cpuid` governs them with
    /// TDP on: the host's GBPAGES, once a table has been set (a vCPU that never had
    /// `KVM_SET_CPUID2` has no governed features).
    pub fn for_guest(
        model: &x86::cpuid::GuestCpu,
        entries: &[x86::uapi::KvmCpuidEntry2],
        host_gbpages: bool,
    ) -> Self {
        WalkConfig {
            maxphyaddr: model.maxphyaddr,
            pse36: x86::cpuid::has(entries, x86::cpuid::feat::PSE36),
            gbpages: host_gbpages && !entries.is_empty(),
        }
    }
}

/// The paging-relevant guest registers, copied out of the vCPU state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// RFLAGS (for AC, which lifts SMAP for explicit accesses).
    pub rflags: u64,
}

impl PagingRegs {
    /// From the architectural state of a vCPU.
    pub fn from_state(s: &x86::state::CpuState) -> PagingRegs {
        PagingRegs {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            rflags: s.rflags,
        }
    }

    /// The paging mode these registers select.
    pub fn mode(&self) -> PagingMode {
        PagingMode::from_regs(self.cr0, self.cr4, self.efer)
    }
}

/// What kind of access is being translated (upstream's `PFERR_*` access mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write (or a read-modify-write).
    pub write: bool,
    /// A user-mode access (CPL 3 and not an implicit supervisor access).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
    /// An implicit supervisor access (descriptor tables, ...): SMAP applies whatever RFLAGS.AC.
    pub implicit: bool,
}

impl Access {
    /// A data read at privilege level `cpl`.
    pub fn read(cpl: u8) -> Access {
        Access {
            user: cpl == 3,
            ..Access::default()
        }
    }

    /// A data write at privilege level `cpl`.
    pub fn write(cpl: u8) -> Access {
        Access {
            write: true,
            user: cpl == 3,
            ..Access::default()
        }
    }

    /// An instruction fetch at privilege level `cpl`.
    pub fn fetch(cpl: u8) -> Access {
        Access {
            fetch: true,
            user: cpl == 3,
            ..Access::default()
        }
    }

    fn pfec(&self) -> u32 {
        let mut e = 0;
        if self.write {
            e |= pfec::WRITE;
        }
        if self.user {
            e |= pfec::USER;
        }
        e
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: Gpa,
    /// The leaf's level (1 = 4 KiB page, 2 = 2/4 MiB, 3 = 1 GiB); 0 without paging.
    pub level: u8,
    /// The combined R/W of all levels allows writes (before CR0.WP is considered).
    pub writable: bool,
    /// The combined U/S of all levels allows user accesses.
    pub user: bool,
}

/// A page fault the guest must see: the error code and the faulting linear address (CR2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The #PF error code.
    pub error_code: u32,
    /// The linear address (goes to CR2).
    pub addr: Gla,
}

/// How often a walk restarts because a concurrent writer changed an entry before we could set
/// its accessed/dirty bit; hardware retries forever, we give up (as a not-present fault the
/// guest will retry) rather than loop in the kernel.
const MAX_RETRIES: u32 = 16;

/// `rsvd_bits(s, e)`: bits s..=e set.
const fn rsvd_bits(s: u32, e: u32) -> u64 {
    if e < s {
        0
    } else {
        ((!0u64) >> (63 - e)) & !((1u64 << s) - 1)
    }
}

/// Reserved bits of an entry at `level` (1 = PTE), leaf (`large`) or not, like upstream's
/// `__reset_rsvds_bits_mask()`.
fn reserved_mask(mode: PagingMode, cfg: &WalkConfig, nx: bool, level: u8, large: bool) -> u64 {
    let high = rsvd_bits(u32::from(cfg.maxphyaddr), 51);
    let nx_bit = if nx { 0 } else { PTE_NX };
    match mode {
        PagingMode::None => 0,
        PagingMode::Bits32 => {
            if level == 2 && large {
                // PSE-36 puts PA bits 32-39 in 13-20 (as far as MAXPHYADDR reaches); bit 21
                // is reserved. Without PSE-36 13-21 are all reserved.
                if cfg.pse36 {
                    let pa_bits = u32::from(cfg.maxphyaddr).clamp(32, 40);
                    rsvd_bits(13 + pa_bits - 32, 21)
                } else {
                    rsvd_bits(13, 21)
                }
            } else {
                0
            }
        }
        PagingMode::Pae => {
            let base = rsvd_bits(u32::from(cfg.maxphyaddr), 62) | nx_bit;
            if level == 2 && large {
                base | rsvd_bits(13, 20)
            } else {
                base
            }
        }
        PagingMode::Level4 | PagingMode::Level5 => {
            let base = high | nx_bit;
            match (level, large) {
                (5, _) | (4, _) => base | PTE_PS,
                (3, true) if !cfg.gbpages => base | PTE_PS,
                (3, true) => base | rsvd_bits(13, 29),
                (2, true) => base | rsvd_bits(13, 20),
                _ => base,
            }
        }
    }
}

/// The outcome of one walk attempt.
enum Step {
    Done(Translation),
    Fault(u32),
    Retry,
}

/// Translates `addr` for `access`, setting accessed/dirty bits like hardware.
pub fn walk(
    regs: &PagingRegs,
    cfg: &WalkConfig,
    mem: &mut impl GuestPhys,
    addr: Gla,
    access: Access,
) -> Result<Translation, PageFault> {
    let mode = regs.mode();
    if mode == PagingMode::None {
        // Paging off: the linear address is physical (the emulator has already truncated it
        // to 32 bits; KVM_TRANSLATE passes it through unchanged as upstream does).
        return Ok(Translation {
            gpa: Gpa(addr.0),
            level: 0,
            writable: true,
            user: true,
        });
    }
    let nx_on = regs.efer & EFER_NXE != 0 && mode != PagingMode::Bits32;
    let smep = regs.cr4 & CR4_SMEP != 0;
    for _ in 0..MAX_RETRIES {
        match walk_once(regs, cfg, mem, addr, access, mode, nx_on) {
            Step::Done(t) => return Ok(t),
            Step::Fault(mut e) => {
                // `error:` in walk_addr_generic.
                e |= access.pfec();
                if access.fetch && (nx_on || smep) {
                    e |= pfec::FETCH;
                }
                return Err(PageFault {
                    error_code: e,
                    addr,
                });
            }
            Step::Retry => continue,
        }
    }
    let mut e = access.pfec();
    if access.fetch && (nx_on || smep) {
        e |= pfec::FETCH;
    }
    Err(PageFault {
        error_code: e,
        addr,
    })
}

/// Reads one entry (4 or 8 bytes wide).
fn read_entry(mem: &mut impl GuestPhys, wide: bool, gpa: Gpa) -> Result<u64, NotRam> {
    if wide {
        mem.read_u64(gpa)
    } else {
        mem.read_u32(gpa).map(u64::from)
    }
}

fn walk_once(
    regs: &PagingRegs,
    cfg: &WalkConfig,
    mem: &mut impl GuestPhys,
    addr: Gla,
    access: Access,
    mode: PagingMode,
    nx_on: bool,
) -> Step {
    let wide = mode != PagingMode::Bits32;
    let (top, idx_bits): (u8, u32) = match mode {
        PagingMode::Bits32 => (2, 10),
        PagingMode::Pae => (3, 9),
        PagingMode::Level4 => (4, 9),
        _ => (5, 9),
    };
    let entry_size: u64 = if wide { 8 } else { 4 };
    let addr_mask = rsvd_bits(12, 51);
    // Where the walk starts: CR3's table (PAE: the 32-byte aligned PDPT).
    let mut table = if mode == PagingMode::Pae {
        regs.cr3 & 0xffff_ffe0
    } else if wide {
        regs.cr3 & addr_mask
    } else {
        regs.cr3 & 0xffff_f000
    };
    // Up to five entries: their addresses and values, for the A/D update.
    let mut ptes = [(Gpa(0), 0u64); 5];
    // The AND of W, U, A and the OR of NX over the levels walked so far.
    let mut w = true;
    let mut u = true;
    let mut all_accessed = true;
    let mut nx = false;
    let mut level = top;
    let leaf = loop {
        let shift = 12 + idx_bits * u32::from(level - 1);
        let index = if mode == PagingMode::Pae && level == 3 {
            (addr.0 >> 30) & 3
        } else {
            (addr.0 >> shift) & ((1 << idx_bits) - 1)
        };
        let gpa = Gpa(table + index * entry_size);
        let Ok(pte) = read_entry(mem, wide, gpa) else {
            return Step::Fault(0);
        };
        ptes[usize::from(level - 1)] = (gpa, pte);
        if pte & PTE_P == 0 {
            return Step::Fault(0);
        }
        if mode == PagingMode::Pae && level == 3 {
            // PDPTEs have no R/W, U/S, A or NX bits: they only point at a page directory.
            table = pte & addr_mask;
            level -= 1;
            continue;
        }
        let large = level > 1
            && pte & PTE_PS != 0
            && (level <= 3 && mode != PagingMode::Bits32 || regs.cr4 & CR4_PSE != 0);
        if pte & reserved_mask(mode, cfg, nx_on, level, large) != 0 {
            return Step::Fault(pfec::RSVD | pfec::PRESENT);
        }
        w &= pte & PTE_W != 0;
        u &= pte & PTE_U != 0;
        all_accessed &= pte & PTE_A != 0;
        nx |= nx_on && pte & PTE_NX != 0;
        if level == 1 || large {
            break (level, pte);
        }
        table = if wide {
            pte & addr_mask
        } else {
            pte & 0xffff_f000
        };
        level -= 1;
    };
    let (level, pte) = leaf;
    if let Some(e) = permission_fault(regs, access, w, u, nx) {
        return Step::Fault(e);
    }
    let gpa = leaf_gpa(mode, cfg, level, pte, addr);
    // Set A everywhere it is missing, and D on the leaf for a write; a changed entry means
    // someone else raced us and the walk starts over (update_accessed_dirty_bits).
    if !all_accessed || (access.write && pte & PTE_D == 0) {
        let first = if mode == PagingMode::Pae { 2 } else { top };
        for l in (level..=first).rev() {
            let (egpa, old) = ptes[usize::from(l - 1)];
            let mut new = old | PTE_A;
            if l == level && access.write {
                new |= PTE_D;
            }
            if new == old {
                continue;
            }
            let swapped = if wide {
                mem.cmpxchg_u64(egpa, old, new)
            } else {
                mem.cmpxchg_u32(egpa, old as u32, new as u32)
            };
            match swapped {
                Ok(true) => {}
                Ok(false) => return Step::Retry,
                Err(NotRam) => return Step::Fault(0),
            }
        }
    }
    Step::Done(Translation {
        gpa,
        level,
        writable: w,
        user: u,
    })
}

/// The physical address a leaf maps `addr` to.
fn leaf_gpa(mode: PagingMode, cfg: &WalkConfig, level: u8, pte: u64, addr: Gla) -> Gpa {
    if mode == PagingMode::Bits32 {
        if level == 2 {
            let mut base = pte & 0xffc0_0000;
            if cfg.pse36 {
                // PSE-36: bits 13-20 are PA bits 32-39.
                base |= ((pte >> 13) & 0xff) << 32;
            }
            return Gpa(base | (addr.0 & 0x3f_ffff));
        }
        return Gpa((pte & 0xffff_f000) | addr.page_offset());
    }
    let page_bits = 12 + 9 * (u32::from(level) - 1);
    let base = pte & rsvd_bits(page_bits, 51);
    Gpa(base | (addr.0 & ((1u64 << page_bits) - 1)))
}

/// upstream's `permission_fault()` over `update_permission_bitmask()`: the error code if the
/// combined rights do not allow `access`, else `None`.
fn permission_fault(regs: &PagingRegs, access: Access, w: bool, u: bool, nx: bool) -> Option<u32> {
    let wp = regs.cr0 & CR0_WP != 0;
    let smep = regs.cr4 & CR4_SMEP != 0;
    let smap = regs.cr4 & CR4_SMAP != 0;
    let ac = regs.rflags & RFLAGS_AC != 0;
    let fault = if access.user {
        // User accesses: supervisor pages, read-only pages for writes, NX pages for fetches.
        !u || (access.write && !w) || (access.fetch && nx)
    } else {
        (access.write && !w && wp)
            || (access.fetch && nx)
            || (access.fetch && smep && u)
            || (!access.fetch && smap && u && (!ac || access.implicit))
    };
    fault.then_some(pfec::PRESENT)
}

/// The result of `KVM_TRANSLATE` (`struct kvm_translation`'s outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmTranslation {
    /// The guest-physical address, or `u64::MAX` (`INVALID_GPA`) when not valid.
    pub physical_address: u64,
    /// The address translated.
    pub valid: bool,
    /// Always true: upstream reports 1 without checking (`kvm_arch_vcpu_ioctl_translate`).
    pub writeable: bool,
    /// Always false, as upstream.
    pub usermode: bool,
}

/// `KVM_TRANSLATE` with upstream's semantics: `kvm_mmu_gva_to_gpa_system()` (an explicit
/// supervisor read, which sets accessed bits like any walk), `writeable` = 1, `usermode` = 0.
pub fn translate(
    regs: &PagingRegs,
    cfg: &WalkConfig,
    mem: &mut impl GuestPhys,
    linear: u64,
) -> KvmTranslation {
    match walk(regs, cfg, mem, Gla(linear), Access::default()) {
        Ok(t) => KvmTranslation {
            physical_address: t.gpa.0,
            valid: true,
            writeable: true,
            usermode: false,
        },
        Err(_) => KvmTranslation {
            physical_address: u64::MAX,
            valid: false,
            writeable: true,
            usermode: false,
        },
    }
}

#[cfg(test)]
mod config_tests {
    use super::WalkConfig;
    use x86::cpuid::GuestCpu;
    use x86::uapi::KvmCpuidEntry2;

    fn leaf(function: u32, eax: u32, edx: u32) -> KvmCpuidEntry2 {
        KvmCpuidEntry2 {
            function,
            eax,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn no_table_is_36_bits_without_pse36_or_1g() {
        let c = WalkConfig::for_guest(&GuestCpu::default(), &[], true);
        assert_eq!(
            c,
            WalkConfig {
                maxphyaddr: 36,
                pse36: false,
                gbpages: false
            }
        );
    }

    #[test]
    fn from_the_table() {
        let t = [
            leaf(1, 0, 1 << 17),
            leaf(0x8000_0000, 0x8000_0008, 0),
            leaf(0x8000_0008, 43, 0),
        ];
        let m = GuestCpu::from_entries(&t, 0);
        let c = WalkConfig::for_guest(&m, &t, true);
        assert_eq!((c.maxphyaddr, c.pse36, c.gbpages), (43, true, true));
        // 1 GiB pages follow the host with TDP, not the guest's GBPAGES bit.
        assert!(!WalkConfig::for_guest(&m, &t, false).gbpages);
        let t2 = [leaf(1, 0, 0)];
        let c = WalkConfig::for_guest(&GuestCpu::from_entries(&t2, 0), &t2, true);
        assert_eq!((c.maxphyaddr, c.pse36, c.gbpages), (36, false, true));
    }
}
