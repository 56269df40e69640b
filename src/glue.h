/* SPDX-License-Identifier: GPL-2.0-only */
/* The C glue called from Rust (src/glue.rs declares the same functions). */
#ifndef TDXKVM_GLUE_H
#define TDXKVM_GLUE_H

#include <linux/types.h>

const char *tdxkvm_param_tdx(void);
int tdxkvm_misc_register(void);
void tdxkvm_misc_deregister(void);
int tdxkvm_vm_fd(void *vm);
void tdxkvm_debugfs_init(void);
void tdxkvm_debugfs_exit(void);
void *tdxkvm_alloc_page(void);
void tdxkvm_free_page(void *virt);
u64 tdxkvm_virt_to_pfn(void *virt);
void *tdxkvm_pfn_to_virt(u64 pfn);
bool tdxkvm_pfn_valid(u64 pfn);
u64 tdxkvm_max_pfn(void);
unsigned long tdxkvm_page_private(u64 pfn);
void tdxkvm_set_page_private(u64 pfn, unsigned long value);
void *tdxkvm_alloc_pages(unsigned int order);
void tdxkvm_free_pages(void *virt, unsigned int order);
void *tdxkvm_kzalloc(size_t size);
void tdxkvm_kfree(void *p);
void *tdxkvm_rwlock_new(void);
void tdxkvm_rwlock_free(void *l);
void tdxkvm_read_lock(void *l);
void tdxkvm_read_unlock(void *l);
void tdxkvm_write_lock(void *l);
void tdxkvm_write_unlock(void *l);
bool tdxkvm_rwlock_needbreak(void *l); /* HOOK(gmemfault) */
void tdxkvm_write_resched(void *l); /* HOOK(gmemfault) */
int tdxkvm_sha512_init(void);
void tdxkvm_sha512_exit(void);
int tdxkvm_sha512_compress(u64 *state, const u8 *block);
bool tdxkvm_tdx_host_ready(void);
bool tdxkvm_this_cpu_has_vmx(void);
unsigned int tdxkvm_phys_bits(void);
bool tdxkvm_boot_cpu_has_movdir64b(void);
int tdxkvm_rdmsr_safe(u32 msr, u64 *val);
bool tdxkvm_spec_ctrl_test_value(u64 value);
bool tdxkvm_cr4_vmxe(void);
bool tdxkvm_vmx_in_use(void);
bool tdxkvm_cr4_vmxe_hw(void);
int tdxkvm_packages_online(void);
void tdxkvm_cr4_clear_vmxe(void);
void tdxkvm_on_each_cpu(void (*fn)(void *));
void tdxkvm_syscore_register(void (*cb)(void));
void tdxkvm_syscore_unregister(void);
void tdxkvm_hkid_lock(void);
void tdxkvm_hkid_unlock(void);
void tdxkvm_vmx_on_prepare(void);
void tdxkvm_vmx_off_finish(void);
unsigned long *tdxkvm_this_cpu_vmxon_region(void);
unsigned long tdxkvm_local_irq_save(void);
void tdxkvm_local_irq_restore(unsigned long flags);
void tdxkvm_cpus_read_lock(void);
void tdxkvm_cpus_read_unlock(void);
int tdxkvm_cpuhp_setup_cpuslocked(int (*online)(unsigned int), int (*offline)(unsigned int));
void tdxkvm_cpuhp_remove(int state);
int tdxkvm_tdx_cpu_enable(void);
int tdxkvm_tdx_enable(void);
void tdxkvm_emergency_virt_register(void (*cb)(void));
void tdxkvm_emergency_virt_unregister(void (*cb)(void));
bool tdxkvm_package_has_other_online_cpu(unsigned int cpu);
int tdxkvm_on_each_package(int (*fn)(void *), void *data);
void tdxkvm_movdir64b_clear_page(void *virt);
void *tdxkvm_mm_grab_current(void);
void tdxkvm_mmdrop(void *mm);
void *tdxkvm_current_mm(void);
int tdxkvm_current_pid(void);
unsigned int tdxkvm_num_present_cpus(void);
unsigned int tdxkvm_num_online_cpus(void);
int tdxkvm_vcpu_fd(void *vcpu, u32 id);
int tdxkvm_stats_fd(void *owner, int kind);
unsigned int tdxkvm_tsc_khz(void);

/* Guest memory (src/memslot.rs, src/gmem.rs). */
bool tdxkvm_user_range_ok(u64 addr, u64 size);
int tdxkvm_gmem_create(void *priv, u64 size, void **filep);
void *tdxkvm_gmem_fget(int fd, void **priv, u64 *i_size);
void tdxkvm_fput(void *file);
u64 tdxkvm_file_size(void *file);
void tdxkvm_gmem_invalidate_lock(void *file);
void tdxkvm_gmem_invalidate_unlock(void *file);
long tdxkvm_gmem_allocate(void *file, u64 start, u64 end);
void tdxkvm_gmem_truncate(void *file, u64 start, u64 end);
void tdxkvm_gmem_leak_range(void *file, u64 start, u64 end);
bool tdxkvm_file_get_active(void *file);
void *tdxkvm_gmem_get_pfn(void *file, u64 index, u64 *pfn, unsigned int *order);
void tdxkvm_folio_put(void *folio);
int tdxkvm_gup(u64 hva, bool write_fault, bool may_write, void **pagep, u64 *pfn,
	       bool *writable);
void tdxkvm_put_page(void *page);
bool tdxkvm_host_huge_2m(u64 hva);
void *tdxkvm_mn_register(void *vm);
void tdxkvm_mn_unregister(void *m);
void tdxkvm_cond_resched(void);

/* exits: eventfds (KVM_IOEVENTFD). */
int tdxkvm_eventfd_get(int fd, void **out);
void tdxkvm_eventfd_signal(void *ctx);
void tdxkvm_eventfd_put(void *ctx);

/* exits: guest page-table entry updates in user memory. */
int tdxkvm_cmpxchg_user_u64(u64 __user *p, u64 old, u64 new);
int tdxkvm_cmpxchg_user_u32(u32 __user *p, u32 old, u32 new);

/* KVM_SET_SIGNAL_MASK around KVM_RUN. */
void tdxkvm_sigset_activate(u64 set);
void tdxkvm_sigset_deactivate(void);

#endif
