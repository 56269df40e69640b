// SPDX-License-Identifier: GPL-2.0-only
//! Guest memory for the instruction emulator: `x86emu`'s [`GuestPhys`] and [`EmuEnv`] over the
//! VM's memslots (upstream `kvm_vcpu_read_guest` / `kvm_vcpu_write_guest` and the page-table
//! walker's `__try_cmpxchg_gpte`).
//!
//! Guest RAM is the memslots' userspace backing, reached through the HVA with user-copy
//! routines: `KVM_RUN` runs in the VMM's own process, so the HVA is mapped in the current `mm`.
//! A GPA outside every memslot, a write to a read-only slot, private memory (which has no
//! userspace mapping) and an HVA the copy cannot reach are all `NotRam`: the emulator turns
//! them into MMIO, as upstream does for the first two.

use crate::vm::Vm;
use core::ffi::c_int;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use mmu::Gfn;
use x86emu::emulate::EmuEnv;
use x86emu::{Gpa, GuestPhys, NotRam};

extern "C" {
    fn tdxkvm_cmpxchg_user_u64(p: *mut u64, old: u64, new: u64) -> c_int;
    fn tdxkvm_cmpxchg_user_u32(p: *mut u32, old: u32, new: u32) -> c_int;
}

/// A VM's guest memory as the emulator sees it.
pub(crate) struct MemEnv<'a> {
    vm: &'a Vm,
}

impl<'a> MemEnv<'a> {
    /// Guest memory of `vm`.
    pub(crate) fn new(vm: &'a Vm) -> Self {
        MemEnv { vm }
    }

    /// The HVA of `gpa` if it is RAM for this kind of access (`len` bytes, within one page).
    fn hva(&self, gpa: Gpa, len: usize, write: bool) -> Result<u64, NotRam> {
        if len == 0 || (gpa.0 & 0xfff) as usize + len > 4096 {
            return Err(NotRam);
        }
        let gfn = Gfn::new(gpa.0 >> 12);
        let st = self.vm.memslots().lock();
        if crate::memslot::has_private_mem(self.vm) && st.attrs.is_private(gfn) {
            return Err(NotRam);
        }
        let slot = st.slots.lookup(gfn).ok_or(NotRam)?;
        if write && slot.is_readonly() {
            return Err(NotRam);
        }
        Ok(slot.gfn_to_hva(gfn) + (gpa.0 & 0xfff))
    }
}

/// Whether the `len` bytes at `gpa` are writable guest RAM, page by page (upstream
/// `kvm_gfn_to_hva_cache_init` succeeding).
pub(crate) fn is_writable_ram(vm: &Vm, gpa: u64, len: u64) -> bool {
    let env = MemEnv::new(vm);
    let mut at = gpa;
    let mut left = len;
    while left > 0 {
        let n = left.min(4096 - (at & 0xfff));
        if env.hva(Gpa(at), n as usize, true).is_err() {
            return false;
        }
        at = at.wrapping_add(n);
        left -= n;
    }
    true
}

/// HOOK(irq12): the user address of the writable RAM byte at `gpa` (the steal-time record's
/// `preempted` byte, which the preempt notifier writes without the memslot lock).
pub(crate) fn ram_hva(vm: &Vm, gpa: u64) -> Option<u64> {
    MemEnv::new(vm).hva(Gpa(gpa), 1, true).ok()
}

impl GuestPhys for MemEnv<'_> {
    fn read_u32(&mut self, gpa: Gpa) -> Result<u32, NotRam> {
        let mut b = [0u8; 4];
        self.read_ram(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u64(&mut self, gpa: Gpa) -> Result<u64, NotRam> {
        let mut b = [0u8; 8];
        self.read_ram(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn cmpxchg_u32(&mut self, gpa: Gpa, old: u32, new: u32) -> Result<bool, NotRam> {
        if gpa.0 & 3 != 0 {
            return Err(NotRam);
        }
        let hva = self.hva(gpa, 4, true)?;
        // SAFETY: a user address (checked with access_ok by the glue), aligned; a fault is
        // -EFAULT, never a kernel oops.
        match unsafe { tdxkvm_cmpxchg_user_u32(hva as *mut u32, old, new) } {
            0 => {
                // A walk's accessed/dirty update is a write to the page table's page (upstream
                // update_accessed_dirty_bits marks it dirty).
                crate::dirty::mark_page_dirty(self.vm, Gfn::new(gpa.0 >> 12));
                Ok(true)
            }
            1 => Ok(false),
            _ => Err(NotRam),
        }
    }

    fn cmpxchg_u64(&mut self, gpa: Gpa, old: u64, new: u64) -> Result<bool, NotRam> {
        if gpa.0 & 7 != 0 {
            return Err(NotRam);
        }
        let hva = self.hva(gpa, 8, true)?;
        // SAFETY: as in `cmpxchg_u32`.
        match unsafe { tdxkvm_cmpxchg_user_u64(hva as *mut u64, old, new) } {
            0 => {
                // A walk's accessed/dirty update is a write to the page table's page (upstream
                // update_accessed_dirty_bits marks it dirty).
                crate::dirty::mark_page_dirty(self.vm, Gfn::new(gpa.0 >> 12));
                Ok(true)
            }
            1 => Ok(false),
            _ => Err(NotRam),
        }
    }
}

impl EmuEnv for MemEnv<'_> {
    fn read_ram(&mut self, gpa: Gpa, buf: &mut [u8]) -> Result<(), NotRam> {
        let hva = self.hva(gpa, buf.len(), false)?;
        UserSlice::new(hva as usize, buf.len())
            .reader()
            .read_slice(buf)
            .map_err(|_| NotRam)
    }

    fn write_ram(&mut self, gpa: Gpa, data: &[u8]) -> Result<(), NotRam> {
        let hva = self.hva(gpa, data.len(), true)?;
        UserSlice::new(hva as usize, data.len())
            .writer()
            .write_slice(data)
            .map_err(|_| NotRam)?;
        // An emulated write to RAM dirties the page (upstream kvm_vcpu_mark_page_dirty).
        crate::dirty::mark_page_dirty(self.vm, Gfn::new(gpa.0 >> 12));
        Ok(())
    }

    fn is_ram(&mut self, gpa: Gpa, write: bool) -> bool {
        self.hva(gpa, 1, write).is_ok()
    }
}
