// SPDX-License-Identifier: GPL-2.0-only
//! Declarations of the SVM backend's and run loop's C glue (`src/svm/glue.c`).

use core::ffi::{c_int, c_uint, c_void};

extern "C" {
    pub(crate) fn tdxkvm_fpu_guest_alloc() -> *mut c_void;
    pub(crate) fn tdxkvm_fpu_guest_free(g: *mut c_void);
    pub(crate) fn tdxkvm_fpu_guest_swap(g: *mut c_void, enter_guest: bool) -> c_int;
    pub(crate) fn tdxkvm_fpu_load_irqoff();
    pub(crate) fn tdxkvm_fpu_guest_fxsave(g: *mut c_void) -> *mut c_void;
    pub(crate) fn tdxkvm_fpu_guest_uabi_size(g: *mut c_void) -> c_uint;
    pub(crate) fn tdxkvm_fpu_guest_to_uabi(
        g: *mut c_void,
        buf: *mut c_void,
        size: c_uint,
        xfeatures: u64,
        pkru: u32,
    );
    pub(crate) fn tdxkvm_fpu_guest_from_uabi(
        g: *mut c_void,
        buf: *const c_void,
        xcr0: u64,
        pkru: *mut u32,
    ) -> c_int;
    pub(crate) fn tdxkvm_host_xcr0() -> u64;
    pub(crate) fn tdxkvm_xsetbv0(v: u64);
    pub(crate) fn tdxkvm_host_ospke() -> bool;
    pub(crate) fn tdxkvm_rdpkru() -> u32;
    pub(crate) fn tdxkvm_wrpkru(v: u32);
    pub(crate) fn tdxkvm_svm_cpuid(features: *mut u32, nasid: *mut u32) -> bool;
    pub(crate) fn tdxkvm_rdmsr(msr: u32) -> u64;
    pub(crate) fn tdxkvm_wrmsr(msr: u32, v: u64);
    pub(crate) fn tdxkvm_stgi();
    pub(crate) fn tdxkvm_clgi();
    pub(crate) fn tdxkvm_svm_this_cpu() -> *mut c_void;
    pub(crate) fn tdxkvm_smp_processor_id() -> c_uint;
    pub(crate) fn tdxkvm_preempt_disable();
    pub(crate) fn tdxkvm_preempt_enable();
    pub(crate) fn tdxkvm_local_irq_disable();
    pub(crate) fn tdxkvm_local_irq_enable();
    pub(crate) fn tdxkvm_svm_v_spec_ctrl() -> bool;
    pub(crate) fn tdxkvm_svm_enter(
        gprs: *mut u64,
        vmcb_pa: u64,
        host_save_pa: u64,
        spec_ctrl: *mut u64,
        spec_ctrl_intercepted: bool,
        virt_spec_ctrl: u64,
    ) -> bool;
    pub(crate) fn tdxkvm_svm_switch_vmcb(vmcb_pa: u64);
    pub(crate) fn tdxkvm_host_cr4_mce() -> u64;
    pub(crate) fn tdxkvm_svm_forget_vmcb(vmcb_pa: u64);
    pub(crate) fn tdxkvm_xfer_vcpu_alloc(run_page: *mut c_void) -> *mut c_void;
    pub(crate) fn tdxkvm_xfer_vcpu_free(v: *mut c_void);
    pub(crate) fn tdxkvm_xfer_handle_work(v: *mut c_void) -> c_int;
    pub(crate) fn tdxkvm_xfer_work_pending() -> bool;
    pub(crate) fn tdxkvm_xfer_work_pending_irqoff() -> bool;
    pub(crate) fn tdxkvm_guest_timing_enter_irqoff();
    pub(crate) fn tdxkvm_guest_exit_irqs_on();
    pub(crate) fn tdxkvm_vcpu_mutex_new() -> *mut c_void;
    pub(crate) fn tdxkvm_vcpu_mutex_free(m: *mut c_void);
    pub(crate) fn tdxkvm_vcpu_mutex_lock(m: *mut c_void);
    pub(crate) fn tdxkvm_vcpu_mutex_lock_killable(m: *mut c_void) -> c_int;
    pub(crate) fn tdxkvm_vcpu_mutex_unlock(m: *mut c_void);
    pub(crate) fn tdxkvm_cpumask_alloc() -> *mut c_void;
    pub(crate) fn tdxkvm_cpumask_free(m: *mut c_void);
    pub(crate) fn tdxkvm_cpumask_set(m: *mut c_void, cpu: c_uint);
    pub(crate) fn tdxkvm_cpumask_clear(m: *mut c_void, cpu: c_uint);
    pub(crate) fn tdxkvm_kick_cpus_wait(m: *mut c_void);
    pub(crate) fn tdxkvm_machine_check();
    pub(crate) fn tdxkvm_pgtable_l5_enabled() -> bool;
    pub(crate) fn tdxkvm_hw_breakpoint_restore();
    pub(crate) fn tdxkvm_svm_syscore_register(
        suspend: unsafe extern "C" fn() -> c_int,
        resume: unsafe extern "C" fn(),
        shutdown: unsafe extern "C" fn(),
    );
    pub(crate) fn tdxkvm_svm_syscore_unregister();
    pub(crate) fn tdxkvm_load_guest_db(db: *const u64);
    pub(crate) fn tdxkvm_save_guest_db(db: *mut u64);
}
