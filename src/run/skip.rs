// SPDX-License-Identifier: GPL-2.0-only
//! Skipping an intercepted instruction without next-RIP save (QEMU's SVM has no NRIPS), and
//! reading guest memory for it.
//!
//! The run loop skips intercepted instructions with `crate::exit_run::skip_intercepted`: the
//! instruction at CS:RIP is decoded by `x86emu` through the guest's page tables and skipped if
//! it is the intercepted one; anything else is upstream's emulation failure (the exit with the
//! instruction bytes, or #UD) — never a guess.

use crate::vm::Vm;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use mmu::Gfn;

/// Reads guest-physical memory from the memslots' userspace backing (shared memory only).
/// `EFAULT` for a GPA outside every slot, private memory or an unreadable page.
// Kept for other users of guest-physical reads; the skip no longer needs it.
#[allow(dead_code)]
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
        gpa = gpa.wrapping_add(n as u64);
    }
    Ok(())
}
