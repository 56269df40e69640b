// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue of kvm-clock, steal time and the PV interface (src/clock.rs, src/pv.rs): the
 * timekeeping reads the 6.12 kernel crate lacks (a TSC/time snapshot, the boot offset, the
 * real-time clock), the task's scheduler run delay and yield(). All logic lives in Rust.
 */
#include <linux/clocksource_ids.h>
#include <linux/ktime.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <linux/timekeeping.h>
#include <asm/msr.h>
#include <asm/tsc.h>

/* One instant of the host clocks (the layout src/clock/glue.rs declares). */
struct tdxkvm_clock_snap {
	u64 tsc;		/* host TSC */
	u64 boot_raw_ns;	/* CLOCK_MONOTONIC_RAW + the boot offset (kvm-clock's base) */
	u64 real_ns;		/* CLOCK_REALTIME */
	u8 tsc_based;		/* the three above are one reading of the TSC clocksource */
};

/* Called from Rust only (src/clock/glue.rs): prototypes for -Wmissing-prototypes. */
void tdxkvm_clock_snapshot(struct tdxkvm_clock_snap *s);
u64 tdxkvm_clock_base_ns(void);
u64 tdxkvm_clock_real_ns(void);
bool tdxkvm_sched_info_on(void);
u64 tdxkvm_current_run_delay(void);

/*
 * upstream get_kvmclock_base_ns(): counts from boot with the raw clock's rate (raw + offs_boot).
 */
static u64 boot_raw_ns(ktime_t raw)
{
	return ktime_to_ns(ktime_add(raw, ktime_mono_to_any(0, TK_OFFS_BOOT)));
}

/*
 * The host's clocks at one instant (upstream kvm_get_time_and_clockread /
 * kvm_get_walltime_and_clockread through KVM's gtod copy): with the TSC as clocksource the TSC
 * value is the very reading the times come from; otherwise the TSC is read right after.
 */
void tdxkvm_clock_snapshot(struct tdxkvm_clock_snap *s)
{
	struct system_time_snapshot snap;

	ktime_get_snapshot(&snap);
	s->tsc_based = snap.cs_id == CSID_X86_TSC;
	s->tsc = s->tsc_based ? snap.cycles : rdtsc();
	s->boot_raw_ns = boot_raw_ns(snap.raw);
	s->real_ns = ktime_to_ns(snap.real);
}

/* get_kvmclock_base_ns() alone. */
u64 tdxkvm_clock_base_ns(void)
{
	return boot_raw_ns(ktime_get_raw());
}

/* ktime_get_real_ns(). */
u64 tdxkvm_clock_real_ns(void)
{
	return ktime_get_real_ns();
}

/* sched_info_on(): the kernel accounts how long tasks wait to run (steal time needs it). */
bool tdxkvm_sched_info_on(void)
{
	return sched_info_on();
}

/* current->sched_info.run_delay: ns the current task spent runnable but not running. */
u64 tdxkvm_current_run_delay(void)
{
#ifdef CONFIG_SCHED_INFO
	return current->sched_info.run_delay;
#else
	return 0;
#endif
}
