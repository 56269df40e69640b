// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue of the vCPU's scheduler hooks (src/irq/sched.rs), which the 6.12 kernel crate
 * does not wrap: a preempt notifier registered while KVM_RUN runs (upstream vcpu_load /
 * vcpu_put with kvm_sched_in / kvm_sched_out), the vCPU thread's struct pid (upstream
 * vcpu->pid), directed yield (kvm_vcpu_yield_to) and a non-faulting one-byte user write for
 * the steal-time record's preempted flag. All logic lives in Rust.
 */
#include <linux/mm_types.h>
#include <linux/pid.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

struct tdxkvm_sched {
	struct preempt_notifier pn;
	const void *vcpu;
	/* The mm of the thread that registered (upstream's "current->mm != kvm->mm" check). */
	struct mm_struct *mm;
};

void tdxkvm_rust_sched_in(const void *vcpu);
void tdxkvm_rust_sched_out(const void *vcpu, bool on_rq, bool same_mm);
void *tdxkvm_sched_new(const void *vcpu);
void tdxkvm_sched_free(void *p);
void tdxkvm_sched_register(void *p);
void tdxkvm_sched_unregister(void *p);
bool tdxkvm_put_user_u8_nofault(u64 hva, u8 v);
void tdxkvm_vcpu_pid_update(void **slot);
void tdxkvm_vcpu_pid_put(void *pid);
int tdxkvm_vcpu_yield_to(void **slot);
bool tdxkvm_single_task_running(void);
void tdxkvm_synchronize_rcu(void);

static void tdxkvm_sched_in(struct preempt_notifier *pn, int cpu)
{
	struct tdxkvm_sched *s = container_of(pn, struct tdxkvm_sched, pn);

	tdxkvm_rust_sched_in(s->vcpu);
}

/* Upstream kvm_sched_out: "preempted" only if the task is still runnable (current->on_rq). */
static void tdxkvm_sched_out(struct preempt_notifier *pn, struct task_struct *next)
{
	struct tdxkvm_sched *s = container_of(pn, struct tdxkvm_sched, pn);

	tdxkvm_rust_sched_out(s->vcpu, READ_ONCE(current->on_rq), current->mm == s->mm);
}

static struct preempt_ops tdxkvm_preempt_ops = {
	.sched_in = tdxkvm_sched_in,
	.sched_out = tdxkvm_sched_out,
};

/* One per vCPU; holds a reference on the notifier static key (upstream: per VM). */
void *tdxkvm_sched_new(const void *vcpu)
{
	struct tdxkvm_sched *s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);

	if (!s)
		return NULL;
	s->vcpu = vcpu;
	preempt_notifier_init(&s->pn, &tdxkvm_preempt_ops);
	preempt_notifier_inc();
	return s;
}

void tdxkvm_sched_free(void *p)
{
	if (!p)
		return;
	preempt_notifier_dec();
	kfree(p);
}

/* vcpu_load: from here to tdxkvm_sched_unregister this thread's switches call the hooks. */
void tdxkvm_sched_register(void *p)
{
	struct tdxkvm_sched *s = p;

	s->mm = current->mm;
	preempt_disable();
	preempt_notifier_register(&s->pn);
	preempt_enable();
}

void tdxkvm_sched_unregister(void *p)
{
	struct tdxkvm_sched *s = p;

	preempt_disable();
	preempt_notifier_unregister(&s->pn);
	preempt_enable();
}

/* copy_to_user_nofault of one byte (callable with preemption and IRQs off). */
bool tdxkvm_put_user_u8_nofault(u64 hva, u8 v)
{
	return copy_to_user_nofault((void __user *)(unsigned long)hva, &v, 1) == 0;
}

/*
 * KVM_RUN from a thread other than the last one (upstream kvm_vcpu_ioctl): *slot becomes
 * this thread's pid; the old one is put after readers (tdxkvm_vcpu_yield_to) are done.
 */
void tdxkvm_vcpu_pid_update(void **slot)
{
	struct pid __rcu **p = (struct pid __rcu **)slot;
	struct pid *old = rcu_access_pointer(*p);

	if (old == task_pid(current))
		return;
	rcu_assign_pointer(*p, get_task_pid(current, PIDTYPE_PID));
	if (old) {
		synchronize_rcu();
		put_pid(old);
	}
}

void tdxkvm_vcpu_pid_put(void *pid)
{
	put_pid(pid);
}

/* Upstream kvm_vcpu_yield_to: > 0 if this thread yielded to the vCPU's thread. */
int tdxkvm_vcpu_yield_to(void **slot)
{
	struct pid __rcu **p = (struct pid __rcu **)slot;
	struct task_struct *task = NULL;
	struct pid *pid;
	int ret;

	rcu_read_lock();
	pid = rcu_dereference(*p);
	if (pid)
		task = get_pid_task(pid, PIDTYPE_PID);
	rcu_read_unlock();
	if (!task)
		return 0;
	ret = yield_to(task, 1);
	put_task_struct(task);
	return ret;
}

bool tdxkvm_single_task_running(void)
{
	return single_task_running();
}

void tdxkvm_synchronize_rcu(void)
{
	synchronize_rcu();
}
