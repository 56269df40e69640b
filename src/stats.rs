// SPDX-License-Identifier: GPL-2.0-only
//! Module-wide page accounting, shown in `/sys/kernel/debug/tdx_kvm/stats`, so tests can prove
//! that closing a VM returns every page.

use core::sync::atomic::{AtomicIsize, Ordering};

/// What a counted allocation is.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// MMU table pages (shared and mirror).
    Table,
    /// External (S-EPT) pages linked by the MMU.
    ExternalSpt,
    /// MMU page headers.
    Header,
    /// TD control pages (TDR, TDCX, TDVPR) handed to the TDX module.
    TdControl,
    /// The software TDX module's PAMT (lives as long as the module).
    Pamt,
    /// Live VMs.
    Vm,
    /// Live vCPUs.
    Vcpu,
    /// Pages of VM and vCPU objects (kvm_run, PIO data, coalesced-MMIO ring).
    VcpuPage,
    /// Open guest_memfd files.
    Gmem,
}

static COUNTS: [AtomicIsize; 9] = [const { AtomicIsize::new(0) }; 9];

pub(crate) fn inc(k: Kind) {
    COUNTS[k as usize].fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn dec(k: Kind) {
    COUNTS[k as usize].fetch_sub(1, Ordering::Relaxed);
}

pub(crate) fn get(k: Kind) -> isize {
    COUNTS[k as usize].load(Ordering::Relaxed)
}

/// A fixed-size text buffer for the debugfs file.
pub(crate) struct Buf<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Buf<'_> {
    /// Writes `f`'s text into `out` and returns its length. Text that does not fit is cut: the
    /// error a full buffer makes `f` return only ends the text early (debugfs shows what fit).
    pub(crate) fn fill(out: &mut [u8], f: impl FnOnce(&mut Buf<'_>) -> core::fmt::Result) -> usize {
        let mut b = Buf { out, len: 0 };
        match f(&mut b) {
            Ok(()) | Err(core::fmt::Error) => b.len,
        }
    }
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let room = self.out.len() - self.len;
        let n = b.len().min(room);
        self.out[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        if n < b.len() {
            Err(core::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Writes the counters as `name value` lines.
pub(crate) fn render(buf: &mut Buf<'_>) -> core::fmt::Result {
    use core::fmt::Write;
    writeln!(buf, "vms {}", get(Kind::Vm))?;
    writeln!(buf, "mmu_table_pages {}", get(Kind::Table))?;
    writeln!(buf, "external_spt_pages {}", get(Kind::ExternalSpt))?;
    writeln!(buf, "mmu_headers {}", get(Kind::Header))?;
    writeln!(buf, "td_control_pages {}", get(Kind::TdControl))?;
    writeln!(buf, "pamt_pages {}", get(Kind::Pamt))?;
    writeln!(buf, "vcpus {}", get(Kind::Vcpu))?;
    writeln!(buf, "vcpu_pages {}", get(Kind::VcpuPage))?;
    writeln!(buf, "gmem_files {}", get(Kind::Gmem))
}
