// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free core of a TDP MMU with TDX mirror roots.
//!
//! This crate is the Rust counterpart of upstream KVM's `arch/x86/kvm/mmu/{tdp_mmu,tdp_iter,
//! spte,mmu_internal}` with the TDX host series' additions. It is `#![no_std]` and uses `core`
//! only: the kernel module links it as an rlib built with the kernel's own flags, and host tests
//! link it unchanged. Everything it needs from its environment comes through small traits:
//! [`env::MmuEnv`] (pages, header storage, page-private links, the MMU lock, TLB flushes) and
//! [`external::ExternalPageTable`] (the propagation hooks into the TDX module's Secure-EPT).
//!
//! Map of the crate:
//! - [`addr`]: `Gpa`/`Gfn`/`Hpa`/`Pfn` newtypes and the TD shared bit;
//! - [`level`], [`spte`]: levels and the entry formats (EPT, NPT);
//! - [`page`]: the MMU page header and the external-SPT pointer's lifecycle;
//! - [`cache`]: fixed-capacity memory caches topped up before the MMU lock is taken;
//! - [`iter`]: the TDP iterator (pre-order walk of one root over a GFN range);
//! - [`lock`]: the MMU lock and the guards that prove which mode a caller holds;
//! - [`tdp`]: roots, the fault path, zaps and teardown — the policy;
//! - [`stats`]: page accounting.
//!
//! # A sound safe API
//!
//! No sequence of safe calls from outside the crate can break the MMU's invariants:
//! - holding the lock cannot be forged: [`lock::MmuLockHeld`] is sealed and the guards come only
//!   from [`tdp::TdpMmu::read`] / [`tdp::TdpMmu::write`] (see [`lock`]);
//! - entries cannot be written from outside: [`env::Table`] and [`iter::TdpIter`] are read-only
//!   there, and neither [`page::MmuPage`] nor [`page::ExternalSpt`] lends out its `Frame`;
//! - `page->private`, through which a table's header is found, is written only by the core
//!   ([`env::MmuEnv::set_page_private`] is unsafe to call);
//! - an environment that cannot map a table page ([`env::MmuEnv::table_of`] returns `None`)
//!   makes the VM bugged, never a wild pointer.
//!
//! The `compile_fail` examples in those modules show each refusal (their error codes are checked
//! by `scripts/check-compile-fail.sh`). Inside the crate, every entry change goes through one
//! place, `tdp/transition.rs`.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod addr;
pub mod cache;
pub mod env;
pub mod error;
pub mod external;
pub mod iter;
pub mod level;
pub mod lock;
pub mod page;
pub mod spte;
pub mod stats;
pub mod tdp;

pub use addr::{Gfn, GfnKind, Gpa, GpaWidth, Hpa, Hva, Pfn, SharedBit};
pub use error::MmuError;
pub use level::Level;
