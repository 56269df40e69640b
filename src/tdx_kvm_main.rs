// SPDX-License-Identifier: GPL-2.0-only
//! kvm.ko (tdx-kvm-rs): a KVM-compatible `/dev/kvm` for Intel TDX hosts, in Rust.
//!
//! The module is called `kvm` because it is the kernel's KVM as far as userspace is concerned:
//! it owns `/dev/kvm` and its parameters live in `/sys/module/kvm/parameters/` (`tdx`, and
//! `force_emulation_prefix`, which every upstream KVM selftest reads before `main()`).
//!
//! The MMU core (`mmu`) and the TDX side (`tdx`) are the same `#![no_std]` crates the host tests
//! use, linked in as rlibs; this crate implements their environment traits with kernel services
//! and exposes the KVM ABI. C glue (`glue.c`) covers what the 6.12 `kernel` crate lacks.

// `pin_init!(Vm { .. })` recurses once per field; the default limit (128) is no longer enough.
#![recursion_limit = "256"]

use kernel::prelude::*;

mod abi;
mod attributes;
mod backend;
mod clock; // HOOK(clock): kvm-clock, KVM_GET/SET_CLOCK
mod dev;
mod device;
mod dirty;
mod env;
mod eventfd;
mod exit_run;
mod exit_vcpu;
mod exits;
mod extable;
mod fpu;
mod glue;
mod gmem;
mod guest_mem;
mod hw;
mod irq;
mod kvm_amd; // HOOK(abi): kvm_amd's parameters for the kvm-amd.ko companion
mod mce; // HOOK(fix1): KVM_X86_GET_MCE_CAP_SUPPORTED
mod mem_abi;
mod memfault; // HOOK(gmemfault): KVM_EXIT_MEMORY_FAULT
mod memslot;
mod mmu_notifier;
mod mwait; // HOOK(cpu11): MONITOR/MWAIT as NOPs, their quirks
mod prefault;
mod pv; // HOOK(clock): PV MSRs, steal time, PV CPUID enforcement
mod run;
mod selftest;
mod sigmask; // HOOK(fix1): KVM_SET_SIGNAL_MASK
mod stats;
mod stats_fd;
mod svm;
mod sys_attr; // HOOK(hostile): KVM_CAP_SYS_ATTRIBUTES on /dev/kvm
mod td;
mod tdx_vm;
mod ud; // HOOK(ud): #UD intercept, KVM_GET_EMULATED_CPUID, quirks
mod vcpu;
mod vcpu_mutex; // HOOK(entry)
mod vcpu_state;
mod vm;
mod vm_abi; // HOOK(abi): KVM_CAP_MSR_PLATFORM_INFO
mod vm_small; // HOOK(entry)
mod vmx;

module! {
    type: TdxKvm,
    name: "kvm",
    author: "tdx-kvm-rs developers",
    description: "KVM-compatible /dev/kvm with a TDX-style TDP MMU (mirror roots, S-EPT)",
    license: "GPL",
}

struct TdxKvm {
    sw: Option<KBox<backend::SwModule>>,
    mode: backend::Mode,
}

impl kernel::Module for TdxKvm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let mode = backend::select()?;
        let auto = glue::param_tdx_is(b"auto");
        let (mode, sw) = match mode {
            backend::Mode::Emulated => (mode, Some(backend::start_emulated()?)),
            backend::Mode::Hw => match backend::start_hw() {
                Ok(()) => (mode, None),
                // tdx=auto found TDX but could not bring it up: run without TDX.
                Err(_) if auto => {
                    pr_warn!("tdx=auto: TDX host found but not usable (see above): TDX off\n");
                    (backend::Mode::Off, None)
                }
                Err(e) => return Err(e),
            },
            backend::Mode::Off => (mode, None),
        };
        // SVM is this host's way to run ordinary guests; without it the module still loads
        // (KVM_RUN answers EOPNOTSUPP). Another hypervisor owning SVM fails the load (EBUSY).
        // With tdx=hw (Intel only) the emergency callbacks belong to VMX.
        if let Err(e) = svm::hw::start(mode != backend::Mode::Hw) {
            if let Some(sw) = sw {
                backend::stop_emulated(sw);
            }
            if mode == backend::Mode::Hw {
                backend::stop_hw();
            }
            return Err(e);
        }
        dev::set_mode(mode);
        // SAFETY: creates the debugfs directory; removed in `drop`.
        unsafe { glue::tdxkvm_debugfs_init() };
        // SAFETY: registers /dev/kvm whose fops call back into `dev`.
        let r = unsafe { glue::tdxkvm_misc_register() };
        if r != 0 {
            // SAFETY: undo the debugfs init.
            unsafe { glue::tdxkvm_debugfs_exit() };
            if let Some(sw) = sw {
                backend::stop_emulated(sw);
            }
            if mode == backend::Mode::Hw {
                backend::stop_hw();
            }
            svm::hw::stop();
            pr_err!(
                "cannot register /dev/kvm (misc minor 232): {} (is kvm loaded?)\n",
                r
            );
            return Err(Error::from_errno(r));
        }
        pr_info!("/dev/kvm ready, tdx={:?}\n", mode);
        Ok(TdxKvm { sw, mode })
    }
}

impl Drop for TdxKvm {
    fn drop(&mut self) {
        // SAFETY: registered in `init`; no VM file can be open (each holds a module reference).
        unsafe { glue::tdxkvm_misc_deregister() };
        // SAFETY: created in `init`.
        unsafe { glue::tdxkvm_debugfs_exit() };
        if let Some(sw) = self.sw.take() {
            backend::stop_emulated(sw);
        }
        if self.mode == backend::Mode::Hw {
            backend::stop_hw();
        }
        svm::hw::stop();
    }
}
