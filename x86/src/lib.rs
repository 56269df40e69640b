// SPDX-License-Identifier: GPL-2.0-only
//! Kernel-free x86 vCPU logic: what upstream KVM keeps in `arch/x86/kvm/x86.c`, `cpuid.c`,
//! `svm/svm.h` and the uapi headers, without any kernel API.
//!
//! It is `#![no_std]` and uses `core` only, like `mmu/`, `tdx/` and `memcore/`: the kernel module
//! links it as an rlib built with the kernel's flags and host tests link it unchanged.
//!
//! Map of the crate:
//! - [`state`]: [`state::CpuState`], the backend-neutral architectural state of one vCPU. The
//!   vCPU ioctls read and write it; a backend (SVM's VMCB, later VMX or TDH.VP.ENTER) loads it
//!   before entering the guest and stores it back after the exit, so the VMM-facing code never
//!   sees a backend's format.
//! - [`exits`]: userspace exits and the in-kernel handling around them (MSR filter and
//!   user-space MSRs, coalesced MMIO/PIO, ioeventfd, hypercalls, guest debug, emulation failures).
//! - [`pv`]: the KVM paravirtual interface (kvm-clock, wall clock, steal time, the PV CPUID leaf,
//!   PV MSRs and hypercall gating, `KVM_GET/SET_CLOCK`).

#![no_std]
#![deny(missing_docs)]

pub mod cpuid;
pub mod cr;
pub mod errno;
pub mod events;
pub mod exits;
pub mod fpu;
pub mod msr;
pub mod pv; // HOOK(clock): the KVM paravirtual interface (kvm-clock, steal time, PV CPUID).
pub mod quirks; // HOOK(ud): KVM_CAP_DISABLE_QUIRKS(2)
pub mod regs;
pub mod state;
pub mod svm;
pub mod svm_clean;
pub mod uapi;
