// SPDX-License-Identifier: GPL-2.0-only
//! VMCB clean bits (AMD APM vol. 2, "VMCB Clean Bits"; upstream `vmcb_mark_dirty`,
//! `vmcb_mark_all_dirty`, `vmcb_mark_all_clean` in svm.h and `pre_svm_run` in svm.c).
//!
//! A processor with the VmcbClean feature (CPUID 0x8000000A EDX[5]) may keep parts of a VMCB
//! it ran cached and skip reloading them on the next VMRUN of the same VMCB on the same CPU
//! when their clean bit is set. A bit may only be set if none of its fields changed in memory
//! since that CPU's last #VMEXIT of this VMCB.
//!
//! Upstream marks a group dirty wherever it writes one of its fields. The backend here writes
//! the whole guest state into the VMCB before every VMRUN instead, so the decision is made by
//! comparison: [`CleanState`] keeps the cached fields as they were right after the last
//! #VMEXIT (what the CPU holds: its own write-back included), and a group is dirty if any of
//! its fields differs now. As upstream, everything is dirty on the first run, after the vCPU
//! moved to another CPU, and after the VMCB was rewritten or an entry failed
//! ([`CleanTracker::invalidate`]); V_TPR/V_IRQ (`INTR`) and CR2 are always dirty
//! (`VMCB_ALWAYS_DIRTY_MASK`), and a TLB flush request marks the ASID dirty as upstream does.

use crate::svm::{Vmcb, VmcbSeg};

/// Clean-bit numbers (the `clean` field at VMCB offset 0xC0).
pub mod bit {
    /// Intercept vectors, TSC offset, pause-filter count/threshold.
    pub const INTERCEPTS: u32 = 0;
    /// IOPM_BASE_PA, MSRPM_BASE_PA.
    pub const PERM_MAP: u32 = 1;
    /// ASID.
    pub const ASID: u32 = 2;
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR (`int_ctl`,
    /// `int_vector`).
    pub const INTR: u32 = 3;
    /// Nested paging: N_CR3, G_PAT (and the nested-paging control).
    pub const NPT: u32 = 4;
    /// CR0, CR3, CR4, EFER.
    pub const CR: u32 = 5;
    /// DR6, DR7.
    pub const DR: u32 = 6;
    /// GDTR, IDTR.
    pub const DT: u32 = 7;
    /// CS, DS, SS, ES (selector, base, limit, attributes), CPL.
    pub const SEG: u32 = 8;
    /// CR2.
    pub const CR2: u32 = 9;
    /// DbgCtlMsr and the last-branch records.
    pub const LBR: u32 = 10;
    /// AVIC backing page and tables.
    pub const AVIC: u32 = 11;
    /// S_CET, SSP, ISST_ADDR.
    pub const CET: u32 = 12;
}

/// Every clean bit this layout defines.
pub const ALL_CLEAN: u32 = (1 << 13) - 1;
/// Written before every run by upstream: never reported clean (`VMCB_ALWAYS_DIRTY_MASK`).
pub const ALWAYS_DIRTY: u32 = (1 << bit::INTR) | (1 << bit::CR2);

/// The VMCB fields a clean bit covers, as they were after a #VMEXIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanState {
    intercepts: [u32; 6],
    pause: (u16, u16),
    tsc_offset: u64,
    perm: (u64, u64),
    asid: u32,
    intr: (u32, u32),
    npt: (u64, u64, u64),
    cr: [u64; 4],
    dr: (u64, u64),
    dt: (VmcbSeg, VmcbSeg),
    seg: ([VmcbSeg; 4], u8),
    cr2: u64,
    lbr: [u64; 5],
    avic: [u64; 4],
    cet: [u64; 3],
}

impl CleanState {
    /// The cached fields of `v`.
    pub fn of(v: &Vmcb) -> Self {
        let c = &v.control;
        let s = &v.save;
        CleanState {
            intercepts: c.intercepts,
            pause: (c.pause_filter_thresh, c.pause_filter_count),
            tsc_offset: c.tsc_offset,
            perm: (c.iopm_base_pa, c.msrpm_base_pa),
            asid: c.asid,
            intr: (c.int_ctl, c.int_vector),
            npt: (c.nested_ctl, c.nested_cr3, s.g_pat),
            cr: [s.cr0, s.cr3, s.cr4, s.efer],
            dr: (s.dr6, s.dr7),
            dt: (s.gdtr, s.idtr),
            seg: ([s.cs, s.ds, s.ss, s.es], s.cpl),
            cr2: s.cr2,
            lbr: [
                s.dbgctl,
                s.br_from,
                s.br_to,
                s.last_excp_from,
                s.last_excp_to,
            ],
            avic: [
                c.avic_vapic_bar,
                c.avic_backing_page,
                c.avic_logical_id,
                c.avic_physical_id,
            ],
            cet: [s.s_cet, s.ssp, s.isst_addr],
        }
    }

    /// The groups whose fields differ between `self` and `v`.
    pub fn dirty(&self, v: &Vmcb) -> u32 {
        let n = CleanState::of(v);
        let mut d = 0;
        let mut mark = |changed: bool, b: u32| {
            if changed {
                d |= 1 << b;
            }
        };
        mark(
            self.intercepts != n.intercepts
                || self.pause != n.pause
                || self.tsc_offset != n.tsc_offset,
            bit::INTERCEPTS,
        );
        mark(self.perm != n.perm, bit::PERM_MAP);
        mark(self.asid != n.asid, bit::ASID);
        mark(self.intr != n.intr, bit::INTR);
        mark(self.npt != n.npt, bit::NPT);
        mark(self.cr != n.cr, bit::CR);
        mark(self.dr != n.dr, bit::DR);
        mark(self.dt != n.dt, bit::DT);
        mark(self.seg != n.seg, bit::SEG);
        mark(self.cr2 != n.cr2, bit::CR2);
        mark(self.lbr != n.lbr, bit::LBR);
        mark(self.avic != n.avic, bit::AVIC);
        mark(self.cet != n.cet, bit::CET);
        d
    }
}

/// What one VMCB's CPU may hold cached: the CPU and the fields of its last #VMEXIT.
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanTracker {
    last: Option<(u32, CleanState)>,
}

impl CleanTracker {
    /// Nothing cached: the next run reports everything dirty.
    pub const fn new() -> Self {
        CleanTracker { last: None }
    }

    /// The `clean` field for a VMRUN of `v` on `cpu` (after every write to `v`): 0 unless the
    /// last #VMEXIT of this VMCB was on `cpu` (upstream `pre_svm_run`'s
    /// `vmcb_mark_all_dirty` on a CPU change), else every group whose fields are unchanged,
    /// minus [`ALWAYS_DIRTY`], minus ASID when `tlb_ctl` asks for a flush.
    pub fn clean_bits(&self, cpu: u32, v: &Vmcb) -> u32 {
        let Some((last_cpu, ref st)) = self.last else {
            return 0;
        };
        if last_cpu != cpu {
            return 0;
        }
        let mut dirty = st.dirty(v) | ALWAYS_DIRTY;
        if v.control.tlb_ctl != crate::svm::tlb_ctl::DO_NOTHING {
            dirty |= 1 << bit::ASID;
        }
        ALL_CLEAN & !dirty
    }

    /// After a #VMEXIT of `v` on `cpu`: what that CPU may now hold.
    pub fn after_exit(&mut self, cpu: u32, v: &Vmcb) {
        self.last = Some((cpu, CleanState::of(v)));
    }

    /// The VMCB was rewritten, or the entry failed: nothing may be assumed cached.
    pub fn invalidate(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    fn vmcb() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::zeroed());
        v.control.intercepts[3] = 1 << 24;
        v.control.asid = 1;
        v.save.cr0 = 0x8005_0033;
        v.save.cs.selector = 0x10;
        v
    }

    const STEADY: u32 = ALL_CLEAN & !ALWAYS_DIRTY;

    #[test]
    fn first_run_and_cpu_change_are_all_dirty() {
        let v = vmcb();
        let mut t = CleanTracker::new();
        assert_eq!(t.clean_bits(0, &v), 0);
        t.after_exit(0, &v);
        assert_eq!(t.clean_bits(0, &v), STEADY);
        assert_eq!(t.clean_bits(1, &v), 0, "another CPU");
        t.after_exit(1, &v);
        assert_eq!(t.clean_bits(1, &v), STEADY);
        assert_eq!(t.clean_bits(0, &v), 0, "back on the first CPU");
        t.invalidate();
        assert_eq!(t.clean_bits(1, &v), 0, "invalidated");
    }

    #[test]
    fn intr_and_cr2_are_never_clean() {
        let v = vmcb();
        let mut t = CleanTracker::new();
        t.after_exit(3, &v);
        let c = t.clean_bits(3, &v);
        assert_eq!(c & (1 << bit::INTR), 0);
        assert_eq!(c & (1 << bit::CR2), 0);
        assert_ne!(c & (1 << bit::CR), 0);
    }

    /// Each change dirties exactly its group.
    #[test]
    fn a_changed_field_dirties_its_group_only() {
        type Edit = fn(&mut Vmcb);
        let cases: [(Edit, u32); 17] = [
            (|v| v.control.intercepts[1] = 1, bit::INTERCEPTS),
            (|v| v.control.tsc_offset = 5, bit::INTERCEPTS),
            (|v| v.control.pause_filter_count = 5, bit::INTERCEPTS),
            (|v| v.control.msrpm_base_pa = 0x1000, bit::PERM_MAP),
            (|v| v.control.asid = 2, bit::ASID),
            (|v| v.control.nested_cr3 = 0x5000, bit::NPT),
            (|v| v.save.g_pat = 0x0007_0406_0007_0406, bit::NPT),
            (|v| v.save.cr4 = 0x20, bit::CR),
            (|v| v.save.efer = 0x1500, bit::CR),
            (|v| v.save.dr7 = 0x400, bit::DR),
            (|v| v.save.idtr.limit = 0xfff, bit::DT),
            (|v| v.save.ss.attrib = 0x93, bit::SEG),
            (|v| v.save.cpl = 3, bit::SEG),
            (|v| v.save.dbgctl = 1, bit::LBR),
            (|v| v.control.avic_backing_page = 0x1000, bit::AVIC),
            (|v| v.save.ssp = 8, bit::CET),
            (|v| v.save.cr3 = 0x3000, bit::CR),
        ];
        for (i, (edit, b)) in cases.iter().enumerate() {
            let mut v = vmcb();
            let mut t = CleanTracker::new();
            t.after_exit(0, &v);
            edit(&mut v);
            assert_eq!(t.clean_bits(0, &v), STEADY & !(1 << b), "case {i}");
        }
    }

    /// Fields no clean bit covers (reloaded on every VMRUN, or switched by VMLOAD) never
    /// dirty anything.
    #[test]
    fn uncovered_fields_change_nothing() {
        let edits: [fn(&mut Vmcb); 9] = [
            |v| v.save.rip = 0x1234,
            |v| v.save.rsp = 8,
            |v| v.save.rax = 1,
            |v| v.save.rflags = 0x202,
            |v| v.save.fs.base = 0x7000,
            |v| v.save.tr.selector = 0x18,
            |v| v.save.lstar = 0xffff_8000_0000_0000,
            |v| v.control.event_inj = 0x8000_0b0e,
            |v| v.control.int_state = 1,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut v = vmcb();
            let mut t = CleanTracker::new();
            t.after_exit(0, &v);
            edit(&mut v);
            assert_eq!(t.clean_bits(0, &v), STEADY, "edit {i}");
        }
    }

    #[test]
    fn a_tlb_flush_dirties_the_asid() {
        let mut v = vmcb();
        let mut t = CleanTracker::new();
        t.after_exit(0, &v);
        v.control.tlb_ctl = crate::svm::tlb_ctl::FLUSH_ALL_ASID;
        assert_eq!(t.clean_bits(0, &v), STEADY & !(1 << bit::ASID));
    }

    /// What the CPU wrote back at #VMEXIT is what it holds: a state stored after the exit and
    /// loaded back unchanged is clean.
    #[test]
    fn hardware_write_back_is_the_baseline() {
        let mut v = vmcb();
        let mut t = CleanTracker::new();
        t.after_exit(0, &v);
        // The guest wrote CR4 and DR7 itself; the exit wrote them to the VMCB.
        v.save.cr4 = 0x6f0;
        v.save.dr7 = 0x401;
        t.after_exit(0, &v);
        assert_eq!(t.clean_bits(0, &v), STEADY);
    }
}
