/* SPDX-License-Identifier: GPL-2.0-only */
/* The SVM backend's and run loop's C glue (src/svm/glue.rs declares the same functions). */
#ifndef TDXKVM_SVM_GLUE_H
#define TDXKVM_SVM_GLUE_H

#include <linux/types.h>

void *tdxkvm_fpu_guest_alloc(void);
void tdxkvm_fpu_guest_free(void *g);
int tdxkvm_fpu_guest_swap(void *g, bool enter_guest);
void tdxkvm_fpu_load_irqoff(void);
void *tdxkvm_fpu_guest_fxsave(void *g);
unsigned int tdxkvm_fpu_guest_uabi_size(void *g);
void tdxkvm_fpu_guest_to_uabi(void *g, void *buf, unsigned int size, u64 xfeatures, u32 pkru);
int tdxkvm_fpu_guest_from_uabi(void *g, const void *buf, u64 xcr0, u32 *pkru);
u64 tdxkvm_host_xcr0(void);
void tdxkvm_xsetbv0(u64 v);
bool tdxkvm_host_ospke(void);
u32 tdxkvm_rdpkru(void);
void tdxkvm_wrpkru(u32 v);
bool tdxkvm_svm_cpuid(u32 *features, u32 *nasid);
u64 tdxkvm_rdmsr(u32 msr);
void tdxkvm_wrmsr(u32 msr, u64 v);
void tdxkvm_stgi(void);
void tdxkvm_clgi(void);
void *tdxkvm_svm_this_cpu(void);
unsigned int tdxkvm_smp_processor_id(void);
void tdxkvm_preempt_disable(void);
void tdxkvm_preempt_enable(void);
void tdxkvm_local_irq_disable(void);
void tdxkvm_local_irq_enable(void);
bool tdxkvm_svm_v_spec_ctrl(void);
bool tdxkvm_svm_enter(u64 *gprs, u64 vmcb_pa, u64 host_save_pa, u64 *spec_ctrl,
		      bool spec_ctrl_intercepted, u64 virt_spec_ctrl);
void tdxkvm_svm_switch_vmcb(u64 vmcb_pa);
u64 tdxkvm_host_cr4_mce(void);
void *tdxkvm_xfer_vcpu_alloc(void *run_page);
void tdxkvm_xfer_vcpu_free(void *v);
int tdxkvm_xfer_handle_work(void *v);
bool tdxkvm_xfer_work_pending(void);
bool tdxkvm_xfer_work_pending_irqoff(void);
void tdxkvm_guest_timing_enter_irqoff(void);
void tdxkvm_guest_exit_irqs_on(void);
void *tdxkvm_vcpu_mutex_new(void);
void tdxkvm_vcpu_mutex_free(void *m);
void tdxkvm_vcpu_mutex_lock(void *m);
int tdxkvm_vcpu_mutex_lock_killable(void *m);
void tdxkvm_vcpu_mutex_unlock(void *m);
void tdxkvm_svm_forget_vmcb(u64 vmcb_pa);
void *tdxkvm_cpumask_alloc(void);
void tdxkvm_cpumask_free(void *m);
void tdxkvm_cpumask_set(void *m, unsigned int cpu);
void tdxkvm_cpumask_clear(void *m, unsigned int cpu);
void tdxkvm_kick_cpus_wait(void *m);
void tdxkvm_machine_check(void);
bool tdxkvm_pgtable_l5_enabled(void);
void tdxkvm_hw_breakpoint_restore(void);
void tdxkvm_svm_syscore_register(int (*suspend)(void), void (*resume)(void),
				 void (*shutdown)(void));
void tdxkvm_svm_syscore_unregister(void);
void tdxkvm_load_guest_db(const u64 *db);
void tdxkvm_save_guest_db(u64 *db);

#endif
