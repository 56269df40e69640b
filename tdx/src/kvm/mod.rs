// SPDX-License-Identifier: GPL-2.0-only
//! The TDX part of KVM's VM ABI, kernel-free: `KVM_MEMORY_ENCRYPT_OP`'s TDX sub-commands as
//! upstream KVM (6.16, `arch/x86/kvm/vmx/tdx.c`) defines them, minus the copies to and from
//! user memory, which the module does.
//!
//! - [`uapi`]: the structures, with upstream's layouts asserted;
//! - [`errno`]: the errnos the sub-commands return;
//! - [`td_conf`]: the module's TD limits read with TDH.SYS.RD, and `KVM_TDX_CAPABILITIES`;
//! - [`init_vm`]: `KVM_TDX_INIT_VM`'s checks and the TD_PARAMS built from it;
//! - [`init_mem`]: `KVM_TDX_INIT_MEM_REGION`'s page loop (EINTR, progress);
//! - [`rules`]: which sub-command may run in which TD and vCPU state, with which errno;
//! - [`get_cpuid`]: `KVM_TDX_GET_CPUID` from the TD's CPUID values (TDH.MNG.RD).

pub mod errno;
pub mod get_cpuid;
pub mod init_mem;
pub mod init_vm;
pub mod rules;
pub mod td_conf;
pub mod uapi;

pub use errno::Errno;
pub use td_conf::TdConf;
