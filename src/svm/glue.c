// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue of the SVM backend and the run loop (src/svm/, src/run.rs, src/fpu.rs): the
 * kernel's guest-FPU API (CONFIG_KVM=m exports it), the CPU instructions and MSRs around SVM,
 * per-CPU storage, IRQ/GIF handling around VMRUN, and IPIs. All logic lives in Rust.
 */
#include <linux/cpumask.h>
#include <linux/entry-kvm.h>
#include <linux/kvm_host.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/syscore_ops.h>
#include <asm/asm.h>
#include <asm/debugreg.h>
#include <asm/cpufeature.h>
#include <asm/fpu/api.h>
#include <asm/fpu/types.h>
#include <asm/fpu/xcr.h>
#include <asm/mce.h>
#include <asm/msr.h>
#include <asm/nospec-branch.h>
#include <asm/processor.h>
#include <asm/spec-ctrl.h>
#include <asm/special_insns.h>

#include "glue.h"  /* src/svm/glue.h */

/* ---- Guest FPU (upstream kvm_arch_vcpu_create / kvm_load_guest_fpu / kvm_put_guest_fpu) ---- */

void *tdxkvm_fpu_guest_alloc(void)
{
	struct fpu_guest *g = kzalloc(sizeof(*g), GFP_KERNEL_ACCOUNT);

	if (!g)
		return NULL;
	if (!fpu_alloc_guest_fpstate(g)) {
		kfree(g);
		return NULL;
	}
	return g;
}

void tdxkvm_fpu_guest_free(void *g)
{
	fpu_free_guest_fpstate(g);
	kfree(g);
}

int tdxkvm_fpu_guest_swap(void *g, bool enter_guest)
{
	return fpu_swap_kvm_fpstate(g, enter_guest);
}

/* With IRQs off before entry: reload the (guest) registers if a context switch saved them. */
void tdxkvm_fpu_load_irqoff(void)
{
	fpregs_assert_state_consistent();
	if (test_thread_flag(TIF_NEED_FPU_LOAD))
		switch_fpu_return();
}

/* The legacy FXSAVE image (KVM_GET/SET_FPU), NULL for a confidential guest's state. */
void *tdxkvm_fpu_guest_fxsave(void *g)
{
	struct fpu_guest *gf = g;

	if (gf->fpstate->is_confidential)
		return NULL;
	return &gf->fpstate->regs.fxsave;
}

unsigned int tdxkvm_fpu_guest_uabi_size(void *g)
{
	return ((struct fpu_guest *)g)->uabi_size;
}

void tdxkvm_fpu_guest_to_uabi(void *g, void *buf, unsigned int size, u64 xfeatures, u32 pkru)
{
	fpu_copy_guest_fpstate_to_uabi(g, buf, size, xfeatures, pkru);
}

int tdxkvm_fpu_guest_from_uabi(void *g, const void *buf, u64 xcr0, u32 *pkru)
{
	return fpu_copy_uabi_to_guest_fpstate(g, buf, xcr0, pkru);
}

/* The host's XCR0 (the same on every CPU), 0 without XSAVE. */
u64 tdxkvm_host_xcr0(void)
{
	if (!boot_cpu_has(X86_FEATURE_OSXSAVE))
		return 0;
	return xgetbv(XCR_XFEATURE_ENABLED_MASK);
}

void tdxkvm_xsetbv0(u64 v)
{
	xsetbv(XCR_XFEATURE_ENABLED_MASK, v);
}

/* Whether the host runs with CR4.PKE (PKRU then applies to the host kernel's user accesses). */
bool tdxkvm_host_ospke(void)
{
	return cpu_feature_enabled(X86_FEATURE_OSPKE);
}

u32 tdxkvm_rdpkru(void)
{
	return rdpkru();
}

void tdxkvm_wrpkru(u32 v)
{
	wrpkru(v);
}

/* ---- SVM on a CPU ---- */

/* SVM (0x80000001 ECX[2]) and nested paging (0x8000000A EDX[0]); 0x8000000A EDX in *features. */
bool tdxkvm_svm_cpuid(u32 *features, u32 *nasid)
{
	if (cpuid_eax(0x80000000) < 0x8000000a)
		return false;
	if (!(cpuid_ecx(0x80000001) & (1u << 2)))
		return false;
	*features = cpuid_edx(0x8000000a);
	*nasid = cpuid_ebx(0x8000000a);
	return *features & 1;
}

u64 tdxkvm_rdmsr(u32 msr)
{
	u64 v;

	rdmsrl(msr, v);
	return v;
}

void tdxkvm_wrmsr(u32 msr, u64 v)
{
	wrmsrl(msr, v);
}

/* STGI, caught if it faults (EFER.SVME already clear). */
void tdxkvm_stgi(void)
{
	asm volatile("1: stgi\n2:\n" _ASM_EXTABLE(1b, 2b) ::: "memory");
}

void tdxkvm_clgi(void)
{
	asm volatile("1: clgi\n2:\n" _ASM_EXTABLE(1b, 2b) ::: "memory");
}

/* Per-CPU words whose layout the Rust side owns (src/svm/hw.rs, SvmCpu). */
static DEFINE_PER_CPU_ALIGNED(u64[16], svm_cpu_words);

void *tdxkvm_svm_this_cpu(void)
{
	return this_cpu_ptr(&svm_cpu_words);
}

unsigned int tdxkvm_smp_processor_id(void)
{
	return smp_processor_id();
}

void tdxkvm_preempt_disable(void)
{
	preempt_disable();
}

void tdxkvm_preempt_enable(void)
{
	preempt_enable();
}

void tdxkvm_local_irq_disable(void)
{
	local_irq_disable();
}

void tdxkvm_local_irq_enable(void)
{
	local_irq_enable();
}

/* ---- Entry (HOOK(entry): upstream svm_vcpu_run / svm_vcpu_enter_exit / svm_vcpu_load) ---- */

bool __tdxkvm_svm_vcpu_run(u64 *gprs, u64 vmcb_pa, u64 host_save_pa, u64 *spec_ctrl,
			   bool spec_ctrl_intercepted);

/*
 * Upstream svm_vcpu_enter_exit, called with IRQs disabled and GIF clear. guest_state_enter_irqoff
 * tells context tracking, RCU (the guest is a quiescent state, as user mode), lockdep and IRQ
 * tracing that the CPU enters the guest with IRQs (logically) on; guest_state_exit_irqoff the
 * reverse. RFLAGS.IF is set for VMRUN because the host's IF controls whether physical IRQs exit
 * the guest (V_INTR_MASKING); GIF=0 keeps them from being taken by host code until STGI.
 * amd_clear_divider: the DIV0 erratum (a divide's quotient from the host leaking into the
 * guest). noinstr: no kprobe or ftrace hook around the world switch. Returns true if an SVM
 * instruction faulted.
 */
static noinstr bool svm_enter_exit(u64 *gprs, u64 vmcb_pa, u64 host_save_pa, u64 *spec_ctrl,
				   bool spec_ctrl_intercepted)
{
	bool faulted;

	guest_state_enter_irqoff();
	raw_local_irq_enable();
	amd_clear_divider();
	faulted = __tdxkvm_svm_vcpu_run(gprs, vmcb_pa, host_save_pa, spec_ctrl,
					spec_ctrl_intercepted);
	raw_local_irq_disable();
	guest_state_exit_irqoff();
	return faulted;
}

/* Whether hardware switches SPEC_CTRL from the VMCB (the entry code then leaves it alone). */
bool tdxkvm_svm_v_spec_ctrl(void)
{
	return static_cpu_has(X86_FEATURE_V_SPEC_CTRL);
}

/*
 * The part of upstream svm_vcpu_run around svm_vcpu_enter_exit (IRQs off, GIF clear): the
 * guest's VIRT_SPEC_CTRL/LS_CFG SSBD state when hardware does not switch SPEC_CTRL
 * (x86_spec_ctrl_set_guest / x86_spec_ctrl_restore_host), and after the exit the VMSCAPE
 * mitigation's mark that this CPU needs an IBPB before it returns to user mode (upstream
 * vcpu_enter_guest; preemption is off, so it is the CPU that ran the guest).
 */
bool tdxkvm_svm_enter(u64 *gprs, u64 vmcb_pa, u64 host_save_pa, u64 *spec_ctrl,
		      bool spec_ctrl_intercepted, u64 virt_spec_ctrl)
{
	bool faulted;

	if (!static_cpu_has(X86_FEATURE_V_SPEC_CTRL))
		x86_spec_ctrl_set_guest(virt_spec_ctrl);
	faulted = svm_enter_exit(gprs, vmcb_pa, host_save_pa, spec_ctrl, spec_ctrl_intercepted);
	if (!static_cpu_has(X86_FEATURE_V_SPEC_CTRL))
		x86_spec_ctrl_restore_host(virt_spec_ctrl);
	if (cpu_feature_enabled(X86_FEATURE_IBPB_EXIT_TO_USER))
		this_cpu_write(x86_ibpb_exit_to_user, true);
	return faulted;
}

/*
 * ---- Transfer-to-guest work (HOOK(entry): upstream vcpu_run / kvm_vcpu_exit_request) ----
 *
 * The kernel's xfer_to_guest_mode_handle_work (exported with CONFIG_KVM_XFER_TO_GUEST_WORK)
 * handles what must not wait while a task runs a guest: a pending signal (-EINTR, after
 * kvm_handle_signal_exit sets vcpu->run->exit_reason = KVM_EXIT_INTR and counts it in
 * vcpu->stat), need_resched (schedule), TIF_NOTIFY_RESUME (resume_user_mode_work: task work,
 * memcg/blkcg throttling, the rseq CPU id update rseq_test checks) — the last ones are not
 * exported, so the function itself is the only correct way to run them from a module. It takes
 * a struct kvm_vcpu and touches only its run pointer and stat (x86 has no
 * arch_xfer_to_guest_mode_handle_work): each vCPU gets a zeroed shadow struct kvm_vcpu whose
 * run points at its own kvm_run page.
 */
void *tdxkvm_xfer_vcpu_alloc(void *run_page)
{
	struct kvm_vcpu *v = kvzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);

	if (v)
		v->run = run_page;
	return v;
}

void tdxkvm_xfer_vcpu_free(void *v)
{
	kvfree(v);
}

/* Preemptible, no lock but the vCPU mutex: 0, -EINTR (signal), or another errno. */
int tdxkvm_xfer_handle_work(void *v)
{
	return xfer_to_guest_mode_handle_work(v);
}

/* The racy, IRQs-on check before the entry (upstream __xfer_to_guest_mode_work_pending). */
bool tdxkvm_xfer_work_pending(void)
{
	return __xfer_to_guest_mode_work_pending();
}

/*
 * IRQs off, right before the entry (upstream kvm_vcpu_exit_request): work that came after the
 * check above (its IPI may already have been taken) cancels the entry.
 */
bool tdxkvm_xfer_work_pending_irqoff(void)
{
	xfer_to_guest_mode_prepare();
	return xfer_to_guest_mode_work_pending();
}

/* IRQs off, before the entry: time from here on is guest time (upstream vcpu_enter_guest). */
void tdxkvm_guest_timing_enter_irqoff(void)
{
	guest_timing_enter_irqoff();
}

/*
 * IRQs off, after the exit (and the #MC handler): take the pending interrupts first (the cause
 * of an INTR exit, ticks that came while the guest ran, so they are accounted to the guest),
 * then leave guest time; returns with IRQs on (upstream vcpu_enter_guest). The instruction after
 * STI (an interrupt shadow) lets them in before CLI.
 */
void tdxkvm_guest_exit_irqs_on(void)
{
	local_irq_enable();
	asm volatile("nop");
	local_irq_disable();
	guest_timing_exit_irqoff();
	local_irq_enable();
}

/* ---- vCPU mutex (HOOK(entry), src/vcpu_mutex.rs): killable, as upstream kvm_vcpu_ioctl ---- */

void *tdxkvm_vcpu_mutex_new(void)
{
	static struct lock_class_key key;
	struct mutex *m = kmalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);

	if (m)
		__mutex_init(m, "&vcpu->mutex", &key);
	return m;
}

void tdxkvm_vcpu_mutex_free(void *m)
{
	mutex_destroy(m);
	kfree(m);
}

void tdxkvm_vcpu_mutex_lock(void *m)
{
	mutex_lock(m);
}

int tdxkvm_vcpu_mutex_lock_killable(void *m)
{
	return mutex_lock_killable(m);
}

void tdxkvm_vcpu_mutex_unlock(void *m)
{
	mutex_unlock(m);
}

/* The host's CR4.MCE, kept set in the guest's hardware CR4 (upstream svm_set_cr4). */
u64 tdxkvm_host_cr4_mce(void)
{
	return cr4_read_shadow() & X86_CR4_MCE;
}

/* The VMCB this CPU ran last (upstream svm_data.current_vmcb), by physical address. */
static DEFINE_PER_CPU(u64, svm_current_vmcb);

/*
 * Upstream svm_vcpu_load: an IBPB when this CPU switches to another vCPU's VMCB (another VM's
 * or the same VM's), so one guest cannot steer the next one's indirect branches; unless the
 * kernel already does an IBPB on every VM-exit. IRQs off.
 */
void tdxkvm_svm_switch_vmcb(u64 vmcb_pa)
{
	if (this_cpu_read(svm_current_vmcb) == vmcb_pa)
		return;
	this_cpu_write(svm_current_vmcb, vmcb_pa);
	if (!cpu_feature_enabled(X86_FEATURE_IBPB_ON_VMEXIT))
		indirect_branch_prediction_barrier();
}

/*
 * Upstream svm_clear_current_vmcb (vCPU free): no CPU keeps the freed VMCB as its current one,
 * or a new VMCB allocated at the same address would skip the IBPB.
 */
void tdxkvm_svm_forget_vmcb(u64 vmcb_pa)
{
	int cpu;

	for_each_possible_cpu(cpu)
		cmpxchg(per_cpu_ptr(&svm_current_vmcb, cpu), vmcb_pa, 0);
}

/* ---- Syscore: suspend/resume and shutdown (upstream kvm_suspend/kvm_resume/kvm_shutdown) ---- */

struct svm_syscore_cbs {
	int (*suspend)(void);
	void (*resume)(void);
	void (*shutdown)(void);
};

static struct svm_syscore_cbs svm_cbs;

static int svm_syscore_suspend(void *data)
{
	return svm_cbs.suspend();
}

static void svm_syscore_resume(void *data)
{
	svm_cbs.resume();
}

static void svm_syscore_shutdown(void *data)
{
	svm_cbs.shutdown();
}

static const struct syscore_ops svm_syscore_ops = {
	.suspend = svm_syscore_suspend,
	.resume = svm_syscore_resume,
	.shutdown = svm_syscore_shutdown,
};

static struct syscore svm_syscore = {
	.ops = &svm_syscore_ops,
};

void tdxkvm_svm_syscore_register(int (*suspend)(void), void (*resume)(void),
				 void (*shutdown)(void))
{
	svm_cbs.suspend = suspend;
	svm_cbs.resume = resume;
	svm_cbs.shutdown = shutdown;
	register_syscore(&svm_syscore);
}

void tdxkvm_svm_syscore_unregister(void)
{
	unregister_syscore(&svm_syscore);
}

/* ---- Remote TLB flush / kick ---- */

void *tdxkvm_cpumask_alloc(void)
{
	return kzalloc(cpumask_size(), GFP_KERNEL_ACCOUNT);
}

void tdxkvm_cpumask_free(void *m)
{
	kfree(m);
}

void tdxkvm_cpumask_set(void *m, unsigned int cpu)
{
	cpumask_set_cpu(cpu, m);
}

void tdxkvm_cpumask_clear(void *m, unsigned int cpu)
{
	cpumask_clear_cpu(cpu, m);
}

static void ack_kick(void *info)
{
}

/*
 * Interrupts every CPU in @m (but this one) and waits until each has run the (empty) IPI
 * handler: a CPU in guest mode exits first (upstream kvm_make_vcpus_request_mask with
 * KVM_REQUEST_WAIT).
 */
void tdxkvm_kick_cpus_wait(void *m)
{
	preempt_disable();
	smp_call_function_many(m, ack_kick, NULL, true);
	preempt_enable();
}

/* A #MC intercepted in the guest goes to the host's handler, as upstream kvm_machine_check. */
void tdxkvm_machine_check(void)
{
	struct pt_regs regs = {
		.cs = 3, /* Fake ring 3 no matter what the guest ran on */
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
}

/*
 * The guest's DR0-3 for VMRUN (DR6/DR7 are in the VMCB): the host's DR7 is cleared first so no
 * host breakpoint fires on a guest address (upstream vcpu_enter_guest's switch_db_regs path).
 */
void tdxkvm_load_guest_db(const u64 *db)
{
	set_debugreg(0, 7);
	set_debugreg(db[0], 0);
	set_debugreg(db[1], 1);
	set_debugreg(db[2], 2);
	set_debugreg(db[3], 3);
}

/* The guest's DR0-3 after #VMEXIT (upstream sync_dirty_debug_regs). */
void tdxkvm_save_guest_db(u64 *db)
{
	get_debugreg(db[0], 0);
	get_debugreg(db[1], 1);
	get_debugreg(db[2], 2);
	get_debugreg(db[3], 3);
}

/* After #VMEXIT reset DR7: the host's breakpoints come back (upstream svm_vcpu_run). */
void tdxkvm_hw_breakpoint_restore(void)
{
	if (hw_breakpoint_active())
		hw_breakpoint_restore();
}

/* Whether the host runs 5-level paging (nested paging then walks 5-level tables). */
bool tdxkvm_pgtable_l5_enabled(void)
{
	return pgtable_l5_enabled();
}
