// SPDX-License-Identifier: GPL-2.0-only
//! Skipping an intercepted instruction without next-RIP save (QEMU's SVM has no NRIPS), and
//! reading guest memory for it.
//!
//! HOOK(exits): [`skip_instruction`] is the one function the `exits` helper re-implements with
//! the `emu` helper's decoder and page-table walker. Until then it skips only what it has
//! fetched and checked byte for byte at CS:RIP, and only without guest paging (real mode or
//! flat protected mode, where linear = physical); anything else is "not skipped", which the run
//! loop turns into `KVM_EXIT_INTERNAL_ERROR` (emulation) — never a guess.

use crate::vm::Vm;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use mmu::Gfn;
use x86::state::{CpuState, SegReg};

const CR0_PG: u64 = 1 << 31;

/// Reads guest-physical memory from the memslots' userspace backing (shared memory only).
/// `EFAULT` for a GPA outside every slot, private memory or an unreadable page.
pub(crate) fn read_guest_phys(vm: &Vm, mut gpa: u64, buf: &mut [u8]) -> Result {
    let mut done = 0;
    while done < buf.len() {
        let in_page = (4096 - (gpa & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        let gfn = Gfn::new(gpa >> 12);
        let hva = {
            let st = vm.memslots().lock();
            if crate::memslot::has_private_mem(vm) && st.attrs.is_private(gfn) {
                return Err(EFAULT);
            }
            let slot = st.slots.lookup(gfn).ok_or(EFAULT)?;
            slot.gfn_to_hva(gfn) + (gpa & 0xfff)
        };
        UserSlice::new(hva as usize, n)
            .reader()
            .read_slice(&mut buf[done..done + n])?;
        done += n;
        gpa += n as u64;
    }
    Ok(())
}

/// Skips the intercepted instruction at CS:RIP if it is exactly `expected` (its encoding,
/// without prefixes); `Ok(false)` if it cannot tell (paging on, other bytes, unreadable).
pub(crate) fn skip_instruction(vm: &Vm, st: &mut CpuState, expected: &[u8]) -> Result<bool> {
    if st.cr0 & CR0_PG != 0 || expected.is_empty() || expected.len() > 15 {
        return Ok(false);
    }
    let cs = st.seg(SegReg::Cs);
    // Without paging the guest is in real or protected mode (not long mode): 32-bit linear
    // addresses.
    let linear = cs.base.wrapping_add(st.rip) & 0xffff_ffff;
    let mut bytes = [0u8; 15];
    let got = &mut bytes[..expected.len()];
    if read_guest_phys(vm, linear, got).is_err() || got != expected {
        return Ok(false);
    }
    let len = expected.len() as u64;
    st.rip = if st.cr0 & 1 == 0 || !cs.db {
        // 16-bit code: IP wraps at 64 KiB.
        (st.rip + len) & 0xffff
    } else {
        (st.rip + len) & 0xffff_ffff
    };
    Ok(true)
}
