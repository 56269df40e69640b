// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free TDX side of the hypervisor.
//!
//! - [`abi`]: leaf numbers, status codes, S-EPT and PAMT encodings;
//! - [`error`]: decoded completion status ([`TdxError`]);
//! - [`seamcall`]: the [`Seamcall`] backend trait and the hardware implementation;
//! - [`wrappers`]: one typed wrapper per leaf ([`Tdx`]);
//! - [`swmod`]: the software TDX module, a [`Seamcall`] that enforces the module's rules;
//! - [`kvm`]: the TDX sub-commands of KVM's VM ABI (`KVM_MEMORY_ENCRYPT_OP`), kernel-free;
//! - [`sept_backend`]: the MMU's external-page-table hooks as SEAMCALL sequences;
//! - [`selftest`]: an allocation-free random sequence with the mirror ≡ S-EPT check, run by the
//!   host tests and inside the kernel module;
//!
//! `#![no_std]`, `core` only, like the `mmu` crate: the kernel module links it unchanged.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod error;
pub mod kvm;
pub mod seamcall;
pub mod selftest;
pub mod sept_backend;
pub mod swmod;
pub mod wrappers;

pub use error::{Operand, SeptDetails, TdxError};
pub use seamcall::{SeamArgs, Seamcall};
pub use wrappers::{
    Block, CacheWb, KeyConfig, PageMetadata, Reclaimed, SysInfo, Tdcx, Tdr, Tdvpr, Tdx,
};
