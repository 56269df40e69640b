// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free x86 instruction handling for the run loop: what upstream KVM keeps in
//! `arch/x86/kvm/emulate.c` and `mmu/paging_tmpl.h`, cut down to what an SVM host without
//! NRIP save and DecodeAssists (QEMU's TCG SVM) needs.
//!
//! Without NRIP save the module must find the length of every intercepted instruction itself
//! (CPUID, HLT, RDMSR, ...), and with no decode assists and no hardware help for MMIO, an
//! access to a GPA outside the memslots must be decoded and carried out in software. All of it
//! starts at the guest's CS:RIP, a *linear* address, so the guest's own page tables have to be
//! walked too.
//!
//! It is `#![no_std]` and uses `core` only, like the other core crates: the kernel module links
//! it as an rlib built with the kernel's flags and host tests link it unchanged. Nothing
//! allocates; guest memory is reached through small traits the module implements over its
//! memslots.
//!
//! Map of the crate:
//! - [`decode`]: the instruction decoder (16/32/64-bit code), returning the length and a
//!   structured operation with operands, or an error; never a guess.
//! - [`walk`]: the guest page-table walker (no paging, 32-bit, PAE, 4- and 5-level) with
//!   hardware's permission checks, reserved bits and A/D updates; `KVM_TRANSLATE`.
//! - [`flags`]: arithmetic flag computation for the emulated ALU operations.
//! - [`linear`]: linear addresses (segments, limits, canonical checks), page-crossing
//!   translation, instruction fetch.
//! - [`emulate`]: the
//!   MMIO emulator and the `skip` helper for intercepted instructions.

#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod decode;
pub mod emulate;
pub mod flags;
pub mod linear;
pub mod walk;

/// A guest-physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

/// A guest linear address (after segmentation, before paging).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gla(pub u64);

impl Gpa {
    /// The address `bytes` further on.
    #[inline]
    pub const fn add(self, bytes: u64) -> Gpa {
        Gpa(self.0.wrapping_add(bytes))
    }
}

impl Gla {
    /// The offset of this address inside its 4 KiB page.
    #[inline]
    pub const fn page_offset(self) -> u64 {
        self.0 & 0xfff
    }
}

/// A guest-physical address that is not ordinary guest RAM (no memslot, or, for writes, a
/// read-only one): the access has to go to userspace as MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRam;

/// Guest-physical memory as the page-table walker needs it: aligned 32- and 64-bit loads and
/// compare-and-exchange (hardware sets accessed/dirty bits atomically, and so must we, because
/// other vCPUs may be changing the same entries).
pub trait GuestPhys {
    /// Reads the naturally aligned `u32` at `gpa`.
    fn read_u32(&mut self, gpa: Gpa) -> Result<u32, NotRam>;
    /// Reads the naturally aligned `u64` at `gpa`.
    fn read_u64(&mut self, gpa: Gpa) -> Result<u64, NotRam>;
    /// Replaces the `u32` at `gpa` by `new` if it still is `old`; `Ok(false)` if it was not.
    fn cmpxchg_u32(&mut self, gpa: Gpa, old: u32, new: u32) -> Result<bool, NotRam>;
    /// Replaces the `u64` at `gpa` by `new` if it still is `old`; `Ok(false)` if it was not.
    fn cmpxchg_u64(&mut self, gpa: Gpa, old: u64, new: u64) -> Result<bool, NotRam>;
}
