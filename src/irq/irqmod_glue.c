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
