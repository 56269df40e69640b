// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free guest-memory logic of the module: what upstream KVM keeps in
//! `virt/kvm/kvm_main.c` (memslots, memory attributes), `virt/kvm/guest_memfd.c` (bindings of
//! a guest_memfd to memslots) and `arch/x86/kvm/mmu/mmu.c` (`KVM_PRE_FAULT_MEMORY`'s range
//! arithmetic and the host-backing part of a fault's `max_level`).
//!
//! It is `#![no_std]` and uses `core` only, like `mmu/` and `tdx/`: the kernel module links it
//! as an rlib built with the kernel's flags and host tests link it unchanged. It allocates
//! nothing: every growing table lives in caller storage behind [`store::Store`], and a full store
//! is [`Errno::ENOMEM`] before anything changed (the module grows its storage outside its locks
//! and calls again).
//!
//! Map of the crate:
//! - [`errno`]: the errnos the ioctls answer, one enum;
//! - [`uapi`]: KVM's numbers (flags, limits) the checks use;
//! - [`store`]: the storage trait and a fixed-capacity array store;
//! - [`memslot`]: `KVM_SET_USER_MEMORY_REGION(2)` validation, change kinds, the slot set;
//! - [`attributes`]: the memory-attribute range map (`KVM_SET_MEMORY_ATTRIBUTES`);
//! - [`dirty`]: dirty logging's per-slot bitmap, `KVM_GET_DIRTY_LOG` / `KVM_CLEAR_DIRTY_LOG`
//!   and the manual-protect capability;
//! - [`gmem`]: guest_memfd creation and `fallocate` checks, a file's slot bindings;
//! - [`hva`]: the MMU notifier's HVA → memslot index, walked in batches;
//! - [`prefault`]: `KVM_PRE_FAULT_MEMORY` checks and progress, the 2 MiB mapping decision.
//!
//! Locking is the caller's: every type here is plain data; the module documents which of its
//! locks protects each instance.

#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attributes;
pub mod dirty;
pub mod errno;
pub mod gmem;
pub mod hva;
pub mod last_slot;
pub mod memslot;
pub mod prefault;
pub mod store;
pub mod uapi;

pub use errno::Errno;
