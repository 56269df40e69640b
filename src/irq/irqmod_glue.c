// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue of the vCPU kick, in-kernel halt and LAPIC timer (src/irq/kick.rs,
 * src/irq/timer.rs): rcuwait, the reschedule IPI and hrtimers, which the 6.12 kernel crate
 * does not wrap. All logic lives in Rust.
 */
#include <linux/atomic.h>
#include <linux/cpumask.h>
#include <linux/hrtimer.h>
#include <linux/rcuwait.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <trace/events/ipi.h>

int tdxkvm_vcpu_block(void *w, atomic_t *wake);
bool tdxkvm_vcpu_wake(void *w);
void tdxkvm_kick_cpu(unsigned int cpu);

/*
 * Upstream kvm_vcpu_block: sleeps interruptibly on the vCPU's rcuwait until a kick set
 * *wake (consumed here) or a signal is pending (-EINTR).
 */
int tdxkvm_vcpu_block(void *w, atomic_t *wake)
{
	return rcuwait_wait_event((struct rcuwait *)w, atomic_xchg(wake, 0) != 0,
				  TASK_INTERRUPTIBLE);
}

/* Upstream kvm_vcpu_wake_up: any context (hrtimer callbacks included). */
bool tdxkvm_vcpu_wake(void *w)
{
	return rcuwait_wake_up((struct rcuwait *)w);
}

/*
 * The IPI half of kvm_vcpu_kick: the target CPU runs a vCPU in guest mode; any interrupt makes
 * it exit, the reschedule IPI is the cheapest. Not to this CPU (it is not in guest mode).
 */
void tdxkvm_kick_cpu(unsigned int cpu)
{
	int me = get_cpu();

	if (cpu != me && cpu < nr_cpu_ids && cpu_online(cpu))
		smp_send_reschedule(cpu);
	put_cpu();
}

/* ---- The LAPIC timer (upstream apic_timer_fn on an HRTIMER_MODE_ABS_HARD hrtimer) ---- */

struct tdxkvm_lapic_timer {
	struct hrtimer timer;
	const void *vcpu;
	u64 token;
};

void tdxkvm_rust_lapic_timer_fire(const void *vcpu, u64 token);
void *tdxkvm_lapic_timer_new(const void *vcpu);
void tdxkvm_lapic_timer_arm(void *p, u64 at_ns, u64 token);
void tdxkvm_lapic_timer_try_cancel(void *p);
void tdxkvm_lapic_timer_free(void *p);
u64 tdxkvm_ktime_get_ns(void);

static enum hrtimer_restart tdxkvm_lapic_timer_fn(struct hrtimer *t)
{
	struct tdxkvm_lapic_timer *lt = container_of(t, struct tdxkvm_lapic_timer, timer);

	tdxkvm_rust_lapic_timer_fire(lt->vcpu, READ_ONCE(lt->token));
	return HRTIMER_NORESTART;
}

void *tdxkvm_lapic_timer_new(const void *vcpu)
{
	struct tdxkvm_lapic_timer *lt = kzalloc(sizeof(*lt), GFP_KERNEL_ACCOUNT);

	if (!lt)
		return NULL;
	hrtimer_init(&lt->timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS_HARD);
	lt->timer.function = tdxkvm_lapic_timer_fn;
	lt->vcpu = vcpu;
	return lt;
}

void tdxkvm_lapic_timer_arm(void *p, u64 at_ns, u64 token)
{
	struct tdxkvm_lapic_timer *lt = p;

	WRITE_ONCE(lt->token, token);
	hrtimer_start(&lt->timer, ns_to_ktime(at_ns), HRTIMER_MODE_ABS_HARD);
}

void tdxkvm_lapic_timer_try_cancel(void *p)
{
	struct tdxkvm_lapic_timer *lt = p;

	hrtimer_try_to_cancel(&lt->timer);
}

/* Waits for a running callback: nothing touches the vCPU after this returns. */
void tdxkvm_lapic_timer_free(void *p)
{
	struct tdxkvm_lapic_timer *lt = p;

	hrtimer_cancel(&lt->timer);
	kfree(lt);
}

u64 tdxkvm_ktime_get_ns(void)
{
	return ktime_get_ns();
}
