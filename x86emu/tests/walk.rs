// SPDX-License-Identifier: GPL-2.0-only
//! The guest page-table walker against hand-built page tables in every paging mode: addresses,
//! accessed/dirty updates, #PF error codes for not-present, reserved-bit and permission faults
//! (CR0.WP, U/S, NX, SMEP, SMAP with RFLAGS.AC), and concurrent entry changes.

use x86emu::walk::{
    pfec, translate, walk, Access, PagingRegs, WalkConfig, CR0_PE, CR0_PG, CR0_WP, CR4_LA57,
    CR4_PAE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_NXE, RFLAGS_AC,
};
use x86emu::{Gla, Gpa, GuestPhys, NotRam};

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const A: u64 = 0x20;
const D: u64 = 0x40;
const PS: u64 = 0x80;
const NX: u64 = 1 << 63;

/// 16 MiB of guest RAM; everything above is not RAM. Optionally one entry is changed behind
/// the walker's back on the next compare-and-exchange (another vCPU racing us).
struct Ram {
    mem: Vec<u8>,
    next_page: u64,
    race_on_cmpxchg: Option<(u64, u64)>,
    cmpxchgs: u32,
}

impl Ram {
    fn new() -> Ram {
        Ram {
            mem: vec![0; 16 << 20],
            next_page: 0x10_0000,
            race_on_cmpxchg: None,
            cmpxchgs: 0,
        }
    }
    fn page(&mut self) -> u64 {
        let p = self.next_page;
        self.next_page += 0x1000;
        p
    }
    fn set64(&mut self, gpa: u64, v: u64) {
        self.mem[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn get64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.mem[gpa as usize..gpa as usize + 8].try_into().unwrap())
    }
    fn set32(&mut self, gpa: u64, v: u32) {
        self.mem[gpa as usize..gpa as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn get32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.mem[gpa as usize..gpa as usize + 4].try_into().unwrap())
    }
    fn in_ram(&self, gpa: Gpa, n: u64) -> Result<usize, NotRam> {
        if gpa.0 + n <= self.mem.len() as u64 {
            Ok(gpa.0 as usize)
        } else {
            Err(NotRam)
        }
    }
    fn race(&mut self) {
        self.cmpxchgs += 1;
        if let Some((gpa, v)) = self.race_on_cmpxchg.take() {
            self.set64(gpa, v);
        }
    }
}

impl GuestPhys for Ram {
    fn read_u32(&mut self, gpa: Gpa) -> Result<u32, NotRam> {
        self.in_ram(gpa, 4)?;
        Ok(self.get32(gpa.0))
    }
    fn read_u64(&mut self, gpa: Gpa) -> Result<u64, NotRam> {
        self.in_ram(gpa, 8)?;
        Ok(self.get64(gpa.0))
    }
    fn cmpxchg_u32(&mut self, gpa: Gpa, old: u32, new: u32) -> Result<bool, NotRam> {
        self.in_ram(gpa, 4)?;
        self.race();
        if self.get32(gpa.0) != old {
            return Ok(false);
        }
        self.set32(gpa.0, new);
        Ok(true)
    }
    fn cmpxchg_u64(&mut self, gpa: Gpa, old: u64, new: u64) -> Result<bool, NotRam> {
        self.in_ram(gpa, 8)?;
        self.race();
        if self.get64(gpa.0) != old {
            return Ok(false);
        }
        self.set64(gpa.0, new);
        Ok(true)
    }
}

/// 4-level (or 5-level) tables mapping `va`: returns (cr3, entry addresses top-down).
fn map_long(
    ram: &mut Ram,
    levels: u32,
    va: u64,
    leaf_level: u32,
    leaf: u64,
    flags: u64,
) -> (u64, Vec<u64>) {
    let cr3 = ram.page();
    let mut table = cr3;
    let mut entries = vec![];
    for level in (leaf_level..=levels).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        let e = table + idx * 8;
        entries.push(e);
        if level == leaf_level {
            let ps = if leaf_level > 1 { PS } else { 0 };
            ram.set64(e, leaf | flags | ps | P);
        } else {
            let next = ram.page();
            ram.set64(e, next | P | W | U);
            table = next;
        }
    }
    (cr3, entries)
}

fn long_regs(cr3: u64) -> PagingRegs {
    PagingRegs {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3,
        cr4: CR4_PAE,
        efer: EFER_LMA | EFER_NXE,
        rflags: 2,
    }
}

const CFG: WalkConfig = WalkConfig {
    maxphyaddr: 40,
    pse36: true,
    gbpages: true,
};

fn pf(regs: &PagingRegs, ram: &mut Ram, va: u64, access: Access) -> u32 {
    walk(regs, &CFG, ram, Gla(va), access)
        .expect_err("must fault")
        .error_code
}

#[test]
fn no_paging_is_identity() {
    let mut ram = Ram::new();
    let regs = PagingRegs {
        cr0: CR0_PE,
        cr3: 0,
        cr4: 0,
        efer: 0,
        rflags: 2,
    };
    let t = walk(&regs, &CFG, &mut ram, Gla(0x1234_5678), Access::write(3)).unwrap();
    assert_eq!(t.gpa, Gpa(0x1234_5678));
}

#[test]
fn four_level_4k_read_sets_accessed_not_dirty() {
    let mut ram = Ram::new();
    let va = 0x7f12_3456_7abc;
    let (cr3, entries) = map_long(&mut ram, 4, va, 1, 0x5000, W | U);
    let regs = long_regs(cr3);
    let t = walk(&regs, &CFG, &mut ram, Gla(va), Access::read(3)).unwrap();
    assert_eq!(t.gpa, Gpa(0x5abc));
    assert_eq!(t.level, 1);
    for e in &entries {
        assert_ne!(ram.get64(*e) & A, 0, "accessed at {e:#x}");
        assert_eq!(ram.get64(*e) & D, 0, "no dirty at {e:#x}");
    }
    walk(&regs, &CFG, &mut ram, Gla(va), Access::write(3)).unwrap();
    assert_ne!(
        ram.get64(entries[3]) & D,
        0,
        "dirty on the leaf after a write"
    );
    assert_eq!(ram.get64(entries[2]) & D, 0, "never dirty on a non-leaf");
}

#[test]
fn large_pages_2m_and_1g() {
    let mut ram = Ram::new();
    let va = 0x4000_0000 + 0x12_3456;
    let (cr3, _) = map_long(&mut ram, 4, va, 2, 0x20_0000, W);
    let t = walk(&long_regs(cr3), &CFG, &mut ram, Gla(va), Access::read(0)).unwrap();
    assert_eq!((t.gpa, t.level), (Gpa(0x20_0000 + 0x12_3456), 2));

    let mut ram = Ram::new();
    let va = 0x8000_0000 + 0x1234_5678;
    let (cr3, _) = map_long(&mut ram, 4, va, 3, 0x4000_0000, W);
    let t = walk(&long_regs(cr3), &CFG, &mut ram, Gla(va), Access::read(0)).unwrap();
    assert_eq!((t.gpa, t.level), (Gpa(0x4000_0000 + 0x1234_5678), 3));
    // Without GBPAGES a PS bit in a PDPTE is reserved.
    let no_gb = WalkConfig {
        gbpages: false,
        ..CFG
    };
    let e = walk(&long_regs(cr3), &no_gb, &mut ram, Gla(va), Access::read(0)).unwrap_err();
    assert_eq!(e.error_code, pfec::PRESENT | pfec::RSVD);
}

#[test]
fn not_present_fault_codes_carry_the_access() {
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W | U);
    ram.set64(entries[3], 0);
    let regs = long_regs(cr3);
    assert_eq!(pf(&regs, &mut ram, 0x1000, Access::read(0)), 0);
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::write(3)),
        pfec::WRITE | pfec::USER
    );
    assert_eq!(pf(&regs, &mut ram, 0x1000, Access::fetch(0)), pfec::FETCH);
    let e = walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::read(0)).unwrap_err();
    assert_eq!(e.addr, Gla(0x1000));
    // A failed walk sets no accessed bit (only a complete walk does).
    assert_eq!(ram.get64(entries[0]) & A, 0);
}

#[test]
fn reserved_bits_fault_with_rsvd_and_present() {
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W);
    let regs = long_regs(cr3);
    // A physical-address bit above MAXPHYADDR (40).
    ram.set64(entries[3], (1 << 45) | 0x5000 | P | W);
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::write(0)),
        pfec::PRESENT | pfec::RSVD | pfec::WRITE
    );
    // NX without EFER.NXE is reserved.
    ram.set64(entries[3], NX | 0x5000 | P | W);
    let mut no_nx = regs;
    no_nx.efer &= !EFER_NXE;
    assert_eq!(
        pf(&no_nx, &mut ram, 0x1000, Access::read(0)),
        pfec::PRESENT | pfec::RSVD
    );
    // PS in a PML4E is reserved.
    ram.set64(entries[3], 0x5000 | P | W);
    let pml4e = ram.get64(entries[0]);
    ram.set64(entries[0], pml4e | PS);
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::read(0)),
        pfec::PRESENT | pfec::RSVD
    );
    // Bits 13-20 of a 2 MiB leaf are reserved.
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x20_0000, 2, 0x20_0000, W);
    let leaf = ram.get64(entries[2]);
    ram.set64(entries[2], leaf | (1 << 13));
    assert_eq!(
        pf(&long_regs(cr3), &mut ram, 0x20_0000, Access::read(0)),
        pfec::PRESENT | pfec::RSVD
    );
}

#[test]
fn write_protect_and_user_supervisor() {
    let mut ram = Ram::new();
    let (cr3, _) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, 0);
    let mut regs = long_regs(cr3);
    // Read-only supervisor page: supervisor writes fault only with CR0.WP.
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::write(0)),
        pfec::PRESENT | pfec::WRITE
    );
    regs.cr0 &= !CR0_WP;
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::write(0)).unwrap();
    // User accesses to a supervisor page always fault.
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::read(3)),
        pfec::PRESENT | pfec::USER
    );

    let mut ram = Ram::new();
    let (cr3, _) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, U);
    let mut regs = long_regs(cr3);
    regs.cr0 &= !CR0_WP;
    // A user write to a read-only user page faults even without WP.
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::write(3)),
        pfec::PRESENT | pfec::WRITE | pfec::USER
    );
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::read(3)).unwrap();
}

#[test]
fn no_execute_smep_and_smap() {
    let mut ram = Ram::new();
    let (cr3, _) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W | U | NX);
    let mut regs = long_regs(cr3);
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::fetch(3)),
        pfec::PRESENT | pfec::USER | pfec::FETCH
    );
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::read(3)).unwrap();

    let mut ram = Ram::new();
    let (cr3, _) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W | U);
    regs.cr3 = cr3;
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::fetch(0)).unwrap();
    regs.cr4 |= CR4_SMEP;
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::fetch(0)),
        pfec::PRESENT | pfec::FETCH
    );
    // SMEP does not restrict data accesses.
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::write(0)).unwrap();
    regs.cr4 |= CR4_SMAP;
    assert_eq!(pf(&regs, &mut ram, 0x1000, Access::read(0)), pfec::PRESENT);
    assert_eq!(
        pf(&regs, &mut ram, 0x1000, Access::write(0)),
        pfec::PRESENT | pfec::WRITE
    );
    regs.rflags |= RFLAGS_AC;
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::write(0)).unwrap();
    // Implicit supervisor accesses are subject to SMAP whatever AC says.
    let implicit = Access {
        implicit: true,
        ..Access::read(0)
    };
    assert_eq!(pf(&regs, &mut ram, 0x1000, implicit), pfec::PRESENT);
    // User accesses are not affected by SMAP.
    walk(&regs, &CFG, &mut ram, Gla(0x1000), Access::write(3)).unwrap();
}

#[test]
fn fetch_bit_only_with_nx_or_smep() {
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W);
    ram.set64(entries[3], 0);
    let mut regs = long_regs(cr3);
    regs.efer &= !EFER_NXE;
    assert_eq!(pf(&regs, &mut ram, 0x1000, Access::fetch(0)), 0);
    regs.cr4 |= CR4_SMEP;
    assert_eq!(pf(&regs, &mut ram, 0x1000, Access::fetch(0)), pfec::FETCH);
}

#[test]
fn five_level_paging() {
    let mut ram = Ram::new();
    let va = 0x00ab_cdef_1234_5678u64 & ((1 << 57) - 1);
    let (cr3, entries) = map_long(&mut ram, 5, va, 1, 0x7000, W);
    let mut regs = long_regs(cr3);
    regs.cr4 |= CR4_LA57;
    let t = walk(&regs, &CFG, &mut ram, Gla(va), Access::write(0)).unwrap();
    assert_eq!(t.gpa, Gpa(0x7678));
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| ram.get64(*e) & A != 0));
}

#[test]
fn pae_paging_4k_2m_and_nx() {
    let mut ram = Ram::new();
    let pdpt = 0x20_0020u64; // 32-byte aligned, not page aligned
    let pd = ram.page();
    let pt = ram.page();
    let va = 0x8040_3123u64; // PDPTE 2, PDE 2, PTE 3
    ram.set64(pdpt + 2 * 8, pd | P);
    ram.set64(pd + 2 * 8, pt | P | W | U);
    ram.set64(pt + 3 * 8, 0x9000 | P | W | U | NX);
    // A 2 MiB page at PDE 3.
    ram.set64(pd + 3 * 8, 0x40_0000 | P | W | PS);
    let regs = PagingRegs {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3: pdpt,
        cr4: CR4_PAE,
        efer: EFER_NXE,
        rflags: 2,
    };
    let t = walk(&regs, &CFG, &mut ram, Gla(va), Access::write(3)).unwrap();
    assert_eq!(t.gpa, Gpa(0x9123));
    assert_ne!(ram.get64(pt + 3 * 8) & D, 0);
    // PDPTEs have no A bit to set.
    assert_eq!(ram.get64(pdpt + 2 * 8), pd | P);
    assert_eq!(
        pf(&regs, &mut ram, va, Access::fetch(3)),
        pfec::PRESENT | pfec::USER | pfec::FETCH
    );
    let t = walk(
        &regs,
        &CFG,
        &mut ram,
        Gla(0x8060_0000 + 0x1_2345),
        Access::read(0),
    )
    .unwrap();
    assert_eq!((t.gpa, t.level), (Gpa(0x40_0000 + 0x1_2345), 2));
    // A not-present PDPTE.
    assert_eq!(pf(&regs, &mut ram, 0xc000_0000, Access::read(0)), 0);
}

#[test]
fn thirty_two_bit_paging_4k_and_pse_4m_with_pse36() {
    let mut ram = Ram::new();
    let pd = ram.page();
    let pt = ram.page();
    let va = 0x0040_5123u32; // PDE 1, PTE 5
    ram.set32(pd + 4, (pt as u32) | 0x7);
    ram.set32(pt + 5 * 4, 0x0000_b000 | 0x7);
    // PDE 2: a 4 MiB page at 0x5_0080_0000 (PSE-36 bits 13-16 hold PA bits 32-35).
    ram.set32(pd + 2 * 4, 0x0080_0000 | (5 << 13) | (P | W | PS) as u32);
    let mut regs = PagingRegs {
        cr0: CR0_PE | CR0_PG,
        cr3: pd,
        cr4: CR4_PSE,
        efer: 0,
        rflags: 2,
    };
    let t = walk(&regs, &CFG, &mut ram, Gla(u64::from(va)), Access::write(3)).unwrap();
    assert_eq!(t.gpa, Gpa(0xb123));
    assert_eq!(ram.get32(pt + 5 * 4) & 0x60, 0x60, "A and D set");
    assert_eq!(ram.get32(pd + 4) & 0x60, 0x20, "A only on the PDE");
    let t = walk(&regs, &CFG, &mut ram, Gla(0x0080_1234), Access::read(0)).unwrap();
    assert_eq!((t.gpa, t.level), (Gpa(0x5_0080_1234), 2));
    // Bit 21 of a 4 MiB PDE is reserved.
    ram.set32(pd + 2 * 4, 0x0080_0000 | (1 << 21) | (P | W | PS) as u32);
    assert_eq!(
        pf(&regs, &mut ram, 0x0080_1234, Access::read(0)),
        pfec::PRESENT | pfec::RSVD
    );
    // Without CR4.PSE, bit 7 is ignored and the PDE points to a page table.
    regs.cr4 = 0;
    ram.set32(pd + 2 * 4, (pt as u32) | (P | W | PS) as u32);
    let t = walk(&regs, &CFG, &mut ram, Gla(0x0080_5123), Access::read(0)).unwrap();
    assert_eq!(t.gpa, Gpa(0xb123));
}

#[test]
fn a_racing_entry_change_restarts_the_walk() {
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W);
    // While we set A on the PML4E, another vCPU points the leaf elsewhere: our cmpxchg on the
    // leaf fails and the restarted walk sees the new mapping.
    ram.race_on_cmpxchg = Some((entries[3], 0x6000 | P | W));
    let t = walk(
        &long_regs(cr3),
        &CFG,
        &mut ram,
        Gla(0x1000),
        Access::read(0),
    )
    .unwrap();
    assert_eq!(t.gpa, Gpa(0x6000));
    // PML4E, PDPTE, PDE ok, PTE failed; then only the PTE again.
    assert_eq!(ram.cmpxchgs, 5);
    assert!(entries.iter().all(|e| ram.get64(*e) & A != 0));
}

#[test]
fn a_table_outside_ram_is_a_not_present_fault() {
    let mut ram = Ram::new();
    let (cr3, entries) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, W);
    ram.set64(entries[1], 0x1_0000_0000 | P | W);
    assert_eq!(
        pf(&long_regs(cr3), &mut ram, 0x1000, Access::write(0)),
        pfec::WRITE
    );
}

#[test]
fn kvm_translate_semantics() {
    let mut ram = Ram::new();
    let (cr3, _) = map_long(&mut ram, 4, 0x1000, 1, 0x5000, 0);
    let regs = long_regs(cr3);
    let t = translate(&regs, &CFG, &mut ram, 0x1234);
    assert!(t.valid);
    assert_eq!(t.physical_address, 0x5234);
    // Upstream reports writeable=1 and usermode=0 without looking at the entry.
    assert!(t.writeable);
    assert!(!t.usermode);
    let t = translate(&regs, &CFG, &mut ram, 0x20_0000);
    assert!(!t.valid);
    assert_eq!(t.physical_address, u64::MAX);
}
