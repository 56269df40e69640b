// SPDX-License-Identifier: GPL-2.0-only
//! Declarations of the C glue (`glue.c`) and the few safe wrappers around them.

use core::ffi::{c_char, c_int, c_uint, c_void};

extern "C" {
    pub(crate) fn tdxkvm_param_tdx() -> *const c_char;
    pub(crate) fn tdxkvm_misc_register() -> c_int;
    pub(crate) fn tdxkvm_misc_deregister();
    pub(crate) fn tdxkvm_vm_fd(vm: *mut c_void) -> c_int;
    pub(crate) fn tdxkvm_debugfs_init();
    pub(crate) fn tdxkvm_debugfs_exit();
    pub(crate) fn tdxkvm_alloc_page() -> *mut c_void;
    pub(crate) fn tdxkvm_free_page(virt: *mut c_void);
    pub(crate) fn tdxkvm_virt_to_pfn(virt: *mut c_void) -> u64;
    pub(crate) fn tdxkvm_pfn_to_virt(pfn: u64) -> *mut c_void;
    pub(crate) fn tdxkvm_pfn_valid(pfn: u64) -> bool;
    pub(crate) fn tdxkvm_max_pfn() -> u64;
    pub(crate) fn tdxkvm_page_private(pfn: u64) -> usize;
    pub(crate) fn tdxkvm_set_page_private(pfn: u64, value: usize);
    pub(crate) fn tdxkvm_alloc_pages(order: u32) -> *mut c_void;
    pub(crate) fn tdxkvm_free_pages(virt: *mut c_void, order: u32);
    pub(crate) fn tdxkvm_kzalloc(size: usize) -> *mut c_void;
    pub(crate) fn tdxkvm_kfree(p: *mut c_void);
    pub(crate) fn tdxkvm_rwlock_new() -> *mut c_void;
    pub(crate) fn tdxkvm_rwlock_free(l: *mut c_void);
    pub(crate) fn tdxkvm_read_lock(l: *mut c_void);
    pub(crate) fn tdxkvm_read_unlock(l: *mut c_void);
    pub(crate) fn tdxkvm_write_lock(l: *mut c_void);
    pub(crate) fn tdxkvm_write_unlock(l: *mut c_void);
    // HOOK(gmemfault): need_resched() || rwlock_needbreak(); cond_resched_rwlock_write().
    pub(crate) fn tdxkvm_rwlock_needbreak(l: *mut c_void) -> bool;
    pub(crate) fn tdxkvm_write_resched(l: *mut c_void);
    pub(crate) fn tdxkvm_sha512_init() -> c_int;
    pub(crate) fn tdxkvm_sha512_exit();
    pub(crate) fn tdxkvm_sha512_compress(state: *mut u64, block: *const u8) -> c_int;
    pub(crate) fn tdxkvm_tdx_host_ready() -> bool;
    pub(crate) fn tdxkvm_this_cpu_has_vmx() -> bool;
    pub(crate) fn tdxkvm_phys_bits() -> c_uint;
    pub(crate) fn tdxkvm_boot_cpu_has_movdir64b() -> bool;
    pub(crate) fn tdxkvm_rdmsr_safe(msr: u32, val: *mut u64) -> c_int;
    pub(crate) fn tdxkvm_spec_ctrl_test_value(value: u64) -> bool;
    pub(crate) fn tdxkvm_cr4_vmxe() -> bool;
    pub(crate) fn tdxkvm_vmx_in_use() -> bool;
    pub(crate) fn tdxkvm_cr4_vmxe_hw() -> bool;
    pub(crate) fn tdxkvm_packages_online() -> c_int;
    pub(crate) fn tdxkvm_cr4_clear_vmxe();
    pub(crate) fn tdxkvm_on_each_cpu(f: unsafe extern "C" fn(*mut c_void));
    pub(crate) fn tdxkvm_syscore_register(cb: unsafe extern "C" fn());
    pub(crate) fn tdxkvm_syscore_unregister();
    pub(crate) fn tdxkvm_hkid_lock();
    pub(crate) fn tdxkvm_hkid_unlock();
    pub(crate) fn tdxkvm_vmx_on_prepare();
    pub(crate) fn tdxkvm_vmx_off_finish();
    pub(crate) fn tdxkvm_this_cpu_vmxon_region() -> *mut usize;
    pub(crate) fn tdxkvm_local_irq_save() -> usize;
    pub(crate) fn tdxkvm_local_irq_restore(flags: usize);
    pub(crate) fn tdxkvm_cpus_read_lock();
    pub(crate) fn tdxkvm_cpus_read_unlock();
    pub(crate) fn tdxkvm_cpuhp_setup_cpuslocked(
        online: unsafe extern "C" fn(c_uint) -> c_int,
        offline: unsafe extern "C" fn(c_uint) -> c_int,
    ) -> c_int;
    pub(crate) fn tdxkvm_cpuhp_remove(state: c_int);
    pub(crate) fn tdxkvm_tdx_cpu_enable() -> c_int;
    pub(crate) fn tdxkvm_tdx_enable() -> c_int;
    pub(crate) fn tdxkvm_emergency_virt_register(cb: unsafe extern "C" fn());
    pub(crate) fn tdxkvm_emergency_virt_unregister(cb: unsafe extern "C" fn());
    pub(crate) fn tdxkvm_package_has_other_online_cpu(cpu: c_uint) -> bool;
    pub(crate) fn tdxkvm_on_each_package(
        f: unsafe extern "C" fn(*mut c_void) -> c_int,
        data: *mut c_void,
    ) -> c_int;
    pub(crate) fn tdxkvm_movdir64b_clear_page(virt: *mut c_void);
    pub(crate) fn tdxkvm_mm_grab_current() -> *mut c_void;
    pub(crate) fn tdxkvm_mmdrop(mm: *mut c_void);
    pub(crate) fn tdxkvm_current_mm() -> *mut c_void;
    pub(crate) fn tdxkvm_current_pid() -> c_int;
    pub(crate) fn tdxkvm_num_present_cpus() -> c_uint;
    pub(crate) fn tdxkvm_num_online_cpus() -> c_uint;
    pub(crate) fn tdxkvm_vcpu_fd(vcpu: *mut c_void, id: u32) -> c_int;
    pub(crate) fn tdxkvm_stats_fd(owner: *mut c_void, kind: c_int) -> c_int;
    pub(crate) fn tdxkvm_tsc_khz() -> c_uint;
    // Guest memory (src/memslot.rs, src/gmem.rs).
    pub(crate) fn tdxkvm_user_range_ok(addr: u64, size: u64) -> bool;
    pub(crate) fn tdxkvm_gmem_create(
        priv_: *mut c_void,
        size: u64,
        filep: *mut *mut c_void,
    ) -> c_int;
    pub(crate) fn tdxkvm_gmem_fget(
        fd: c_int,
        priv_: *mut *mut c_void,
        i_size: *mut u64,
    ) -> *mut c_void;
    pub(crate) fn tdxkvm_fput(file: *mut c_void);
    pub(crate) fn tdxkvm_file_size(file: *mut c_void) -> u64;
    pub(crate) fn tdxkvm_gmem_invalidate_lock(file: *mut c_void);
    pub(crate) fn tdxkvm_gmem_invalidate_unlock(file: *mut c_void);
    pub(crate) fn tdxkvm_gmem_allocate(
        file: *mut c_void,
        start: u64,
        end: u64,
    ) -> core::ffi::c_long;
    pub(crate) fn tdxkvm_gmem_truncate(file: *mut c_void, start: u64, end: u64);
    pub(crate) fn tdxkvm_gmem_leak_range(file: *mut c_void, start: u64, end: u64);
    pub(crate) fn tdxkvm_file_get_active(file: *mut c_void) -> bool;
    pub(crate) fn tdxkvm_gmem_get_pfn(
        file: *mut c_void,
        index: u64,
        pfn: *mut u64,
        order: *mut c_uint,
    ) -> *mut c_void;
    pub(crate) fn tdxkvm_folio_put(folio: *mut c_void);
    pub(crate) fn tdxkvm_gup(
        hva: u64,
        write_fault: bool,
        may_write: bool,
        pagep: *mut *mut c_void,
        pfn: *mut u64,
        writable: *mut bool,
    ) -> c_int;
    pub(crate) fn tdxkvm_put_page(page: *mut c_void);
    pub(crate) fn tdxkvm_host_huge_2m(hva: u64) -> bool;
    pub(crate) fn tdxkvm_mn_register(vm: *mut c_void) -> *mut c_void;
    pub(crate) fn tdxkvm_mn_unregister(m: *mut c_void);
    pub(crate) fn tdxkvm_cond_resched();
}

/// The `tdx=` module parameter, compared without allocating.
pub(crate) fn param_tdx_is(s: &[u8]) -> bool {
    // SAFETY: the glue returns the module parameter, a NUL-terminated string that lives as long
    // as the module (read-only after load: mode 0444).
    let p = unsafe { tdxkvm_param_tdx() };
    if p.is_null() {
        return false;
    }
    // SAFETY: as above, a valid C string.
    let c = unsafe { core::ffi::CStr::from_ptr(p) };
    c.to_bytes() == s
}
