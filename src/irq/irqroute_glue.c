// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue of the VM-level irqchip (src/irq/irqfd.rs, src/irq/pit.rs): eventfd wait-queue
 * callbacks and work items for KVM_IRQFD (upstream virt/kvm/eventfd.c's irqfd machinery), and
 * the PIT's hrtimer + work item. What gets injected, and how, is decided in Rust
 * (tdxkvm_rust_irqfd_set, tdxkvm_rust_pit_tick).
 *
 * Locking, as upstream: `lock` (spin, IRQ-safe) guards the list of active irqfds; the eventfd's
 * wait-queue lock is taken outside it (wakeup -> deactivate), never inside. `resample_lock`
 * guards the list of irqfds with a resamplefd and is taken alone; an eventfd's wait-queue lock
 * nests inside it (signalling the resamplefds). An irqfd is freed only by its shutdown work,
 * after it left both lists, its wait-queue entry is unhooked and its inject work is flushed.
 * `srcu` closes the window between an assign making an irqfd visible (list) and hooking it into
 * the eventfd (vfs_poll), as upstream's irq_srcu read section there: a racing deassign's
 * shutdown waits for the assign to finish before it unhooks and frees the irqfd.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/hrtimer.h>
#include <linux/list.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

/* Rust: inject for an irqfd. kind 0: edge (assert + de-assert, userspace source); 1: assert
 * with the resample source; 2: de-assert the resample source. */
void tdxkvm_rust_irqfd_set(void *vm, u32 gsi, int kind);

/* Called from Rust (src/irq/irqfd.rs). */
void *tdxkvm_irqfds_new(void *vm);
int tdxkvm_irqfd_assign(void *irqfds, int fd, u32 gsi, bool resample, int resamplefd);
int tdxkvm_irqfd_deassign(void *irqfds, int fd, u32 gsi);
bool tdxkvm_irqfd_has_resampler(void *irqfds, u32 gsi);
void tdxkvm_irqfd_resample_notify(void *irqfds, u32 gsi);
void tdxkvm_irqfds_free(void *irqfds);

struct tdxkvm_irqfds {
	spinlock_t lock;
	struct list_head items;
	spinlock_t resample_lock;
	struct list_head resamplers;
	struct workqueue_struct *cleanup_wq;
	struct srcu_struct srcu;
	void *vm;
};

struct tdxkvm_irqfd {
	struct tdxkvm_irqfds *irqfds;
	struct eventfd_ctx *eventfd;
	struct eventfd_ctx *resamplefd;	/* NULL without KVM_IRQFD_FLAG_RESAMPLE */
	u32 gsi;
	struct list_head list;		/* in irqfds->items while active */
	struct list_head resample_link;	/* in irqfds->resamplers if resamplefd */
	wait_queue_entry_t wait;
	wait_queue_head_t *wqh;
	poll_table pt;
	struct work_struct inject;
	struct work_struct shutdown;
};

void *tdxkvm_irqfds_new(void *vm)
{
	struct tdxkvm_irqfds *s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);

	if (!s)
		return NULL;
	s->cleanup_wq = alloc_workqueue("kvm-irqfd-cleanup", 0, 0);
	if (!s->cleanup_wq) {
		kfree(s);
		return NULL;
	}
	if (init_srcu_struct(&s->srcu)) {
		destroy_workqueue(s->cleanup_wq);
		kfree(s);
		return NULL;
	}
	spin_lock_init(&s->lock);
	INIT_LIST_HEAD(&s->items);
	spin_lock_init(&s->resample_lock);
	INIT_LIST_HEAD(&s->resamplers);
	s->vm = vm;
	return s;
}

static void irqfd_inject(struct work_struct *work)
{
	struct tdxkvm_irqfd *irqfd = container_of(work, struct tdxkvm_irqfd, inject);

	tdxkvm_rust_irqfd_set(irqfd->irqfds->vm, irqfd->gsi, irqfd->resamplefd ? 1 : 0);
}

static bool resampler_left(struct tdxkvm_irqfds *s, u32 gsi)
{
	struct tdxkvm_irqfd *i;

	list_for_each_entry(i, &s->resamplers, resample_link)
		if (i->gsi == gsi)
			return true;
	return false;
}

static void irqfd_shutdown(struct work_struct *work)
{
	struct tdxkvm_irqfd *irqfd = container_of(work, struct tdxkvm_irqfd, shutdown);
	struct tdxkvm_irqfds *s = irqfd->irqfds;
	u64 cnt;

	/* An assign still hooking this irqfd in finishes first (upstream synchronize_srcu). */
	synchronize_srcu(&s->srcu);
	/* No new wakeups after this; then wait for an inject already scheduled. */
	eventfd_ctx_remove_wait_queue(irqfd->eventfd, &irqfd->wait, &cnt);
	flush_work(&irqfd->inject);
	if (irqfd->resamplefd) {
		bool others;
		unsigned long flags;

		spin_lock_irqsave(&s->resample_lock, flags);
		list_del(&irqfd->resample_link);
		others = resampler_left(s, irqfd->gsi);
		spin_unlock_irqrestore(&s->resample_lock, flags);
		/* The last resampler of a GSI lowers the line it held (upstream
		 * irqfd_resampler_shutdown). */
		if (!others)
			tdxkvm_rust_irqfd_set(s->vm, irqfd->gsi, 2);
		eventfd_ctx_put(irqfd->resamplefd);
	}
	eventfd_ctx_put(irqfd->eventfd);
	kfree(irqfd);
}

/* With irqfds->lock held. */
static void irqfd_deactivate(struct tdxkvm_irqfd *irqfd)
{
	list_del_init(&irqfd->list);
	queue_work(irqfd->irqfds->cleanup_wq, &irqfd->shutdown);
}

static int irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct tdxkvm_irqfd *irqfd = container_of(wait, struct tdxkvm_irqfd, wait);
	__poll_t flags = key_to_poll(key);

	if (flags & EPOLLIN) {
		u64 cnt;

		/* The wait-queue lock is held: consume the count, inject from process context. */
		eventfd_ctx_do_read(irqfd->eventfd, &cnt);
		schedule_work(&irqfd->inject);
	}
	if (flags & EPOLLHUP) {
		/* The eventfd is being closed: the irqfd goes away with it. */
		struct tdxkvm_irqfds *s = irqfd->irqfds;
		unsigned long iflags;

		spin_lock_irqsave(&s->lock, iflags);
		if (!list_empty(&irqfd->list))
			irqfd_deactivate(irqfd);
		spin_unlock_irqrestore(&s->lock, iflags);
	}
	return 0;
}

static void irqfd_ptable_queue_proc(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct tdxkvm_irqfd *irqfd = container_of(pt, struct tdxkvm_irqfd, pt);

	irqfd->wqh = wqh;
	add_wait_queue(wqh, &irqfd->wait);
}

/*
 * KVM_IRQFD assign (upstream kvm_irqfd_assign after its checks): 0, -ENOMEM, -EBADF (fd or
 * resamplefd not open), -EINVAL (not an eventfd), -EBUSY (the eventfd already drives a GSI).
 */
int tdxkvm_irqfd_assign(void *irqfds, int fd, u32 gsi, bool resample, int resamplefd)
{
	struct tdxkvm_irqfds *s = irqfds;
	struct tdxkvm_irqfd *irqfd, *tmp;
	struct eventfd_ctx *eventfd;
	__poll_t events;
	struct fd f;
	int ret, idx;

	irqfd = kzalloc(sizeof(*irqfd), GFP_KERNEL_ACCOUNT);
	if (!irqfd)
		return -ENOMEM;
	irqfd->irqfds = s;
	irqfd->gsi = gsi;
	INIT_LIST_HEAD(&irqfd->list);
	INIT_LIST_HEAD(&irqfd->resample_link);
	INIT_WORK(&irqfd->inject, irqfd_inject);
	INIT_WORK(&irqfd->shutdown, irqfd_shutdown);

	f = fdget(fd);
	if (!fd_file(f)) {
		ret = -EBADF;
		goto out;
	}
	eventfd = eventfd_ctx_fileget(fd_file(f));
	if (IS_ERR(eventfd)) {
		ret = PTR_ERR(eventfd);
		goto fail;
	}
	irqfd->eventfd = eventfd;

	if (resample) {
		struct eventfd_ctx *r = eventfd_ctx_fdget(resamplefd);

		if (IS_ERR(r)) {
			ret = PTR_ERR(r);
			goto fail;
		}
		irqfd->resamplefd = r;
	}

	init_waitqueue_func_entry(&irqfd->wait, irqfd_wakeup);
	init_poll_funcptr(&irqfd->pt, irqfd_ptable_queue_proc);

	spin_lock_irq(&s->lock);
	list_for_each_entry(tmp, &s->items, list) {
		if (irqfd->eventfd != tmp->eventfd)
			continue;
		/* This fd is used for another irq already. */
		spin_unlock_irq(&s->lock);
		ret = -EBUSY;
		goto fail;
	}
	/* Visible from here: a deassign's shutdown waits for this section's end. */
	idx = srcu_read_lock(&s->srcu);
	list_add_tail(&irqfd->list, &s->items);
	spin_unlock_irq(&s->lock);

	if (irqfd->resamplefd) {
		spin_lock_irq(&s->resample_lock);
		list_add_tail(&irqfd->resample_link, &s->resamplers);
		spin_unlock_irq(&s->resample_lock);
	}

	/* Hook into the eventfd's wait queue; inject now if it was signalled before. */
	events = vfs_poll(fd_file(f), &irqfd->pt);
	if (events & EPOLLIN)
		schedule_work(&irqfd->inject);
	srcu_read_unlock(&s->srcu, idx);
	fdput(f);
	return 0;

fail:
	if (irqfd->resamplefd)
		eventfd_ctx_put(irqfd->resamplefd);
	if (irqfd->eventfd)
		eventfd_ctx_put(irqfd->eventfd);
	fdput(f);
out:
	kfree(irqfd);
	return ret;
}

/*
 * KVM_IRQFD deassign (upstream kvm_irqfd_deassign): every irqfd of this eventfd and GSI goes
 * (none is not an error); returns when their shutdown finished. -EBADF/-EINVAL for a bad fd.
 */
int tdxkvm_irqfd_deassign(void *irqfds, int fd, u32 gsi)
{
	struct tdxkvm_irqfds *s = irqfds;
	struct tdxkvm_irqfd *irqfd, *tmp;
	struct eventfd_ctx *eventfd = eventfd_ctx_fdget(fd);

	if (IS_ERR(eventfd))
		return PTR_ERR(eventfd);
	spin_lock_irq(&s->lock);
	list_for_each_entry_safe(irqfd, tmp, &s->items, list) {
		if (irqfd->eventfd == eventfd && irqfd->gsi == gsi)
			irqfd_deactivate(irqfd);
	}
	spin_unlock_irq(&s->lock);
	eventfd_ctx_put(eventfd);
	flush_workqueue(s->cleanup_wq);
	return 0;
}

/* Whether an irqfd with a resamplefd drives @gsi. */
bool tdxkvm_irqfd_has_resampler(void *irqfds, u32 gsi)
{
	struct tdxkvm_irqfds *s = irqfds;
	unsigned long flags;
	bool r;

	spin_lock_irqsave(&s->resample_lock, flags);
	r = resampler_left(s, gsi);
	spin_unlock_irqrestore(&s->resample_lock, flags);
	return r;
}

/* Signals the resamplefd of every irqfd on @gsi (upstream irqfd_resampler_notify). */
void tdxkvm_irqfd_resample_notify(void *irqfds, u32 gsi)
{
	struct tdxkvm_irqfds *s = irqfds;
	struct tdxkvm_irqfd *i;
	unsigned long flags;

	spin_lock_irqsave(&s->resample_lock, flags);
	list_for_each_entry(i, &s->resamplers, resample_link)
		if (i->gsi == gsi)
			eventfd_signal(i->resamplefd);
	spin_unlock_irqrestore(&s->resample_lock, flags);
}

/*
 * VM teardown (upstream kvm_irqfd_release): deactivates every irqfd, waits for their
 * shutdown (which flushes their inject work), and frees the set. Nothing calls into the VM
 * for an irqfd after this returns.
 */
void tdxkvm_irqfds_free(void *irqfds)
{
	struct tdxkvm_irqfds *s = irqfds;
	struct tdxkvm_irqfd *irqfd, *tmp;

	spin_lock_irq(&s->lock);
	list_for_each_entry_safe(irqfd, tmp, &s->items, list)
		irqfd_deactivate(irqfd);
	spin_unlock_irq(&s->lock);
	flush_workqueue(s->cleanup_wq);
	destroy_workqueue(s->cleanup_wq);
	cleanup_srcu_struct(&s->srcu);
	kfree(s);
}

/* ==== The PIT's channel-0 timer (upstream i8254.c: hrtimer + kthread work) ==== */

/* Rust (src/irq/pit.rs): an expiry of the arming @generation (hard IRQ context; takes only
 * the model lock below): returns whether to queue the work, and *restart_at (0: stop). */
bool tdxkvm_rust_pit_fire(void *pit, u64 generation, s64 *restart_at);
/* Rust: the injection work (process context). */
void tdxkvm_rust_pit_work(void *pit);

void *tdxkvm_pit_timer_new(void *pit);
void tdxkvm_pit_timer_start(void *t, s64 expires, u64 generation);
void tdxkvm_pit_timer_cancel(void *t);
void tdxkvm_pit_timer_free(void *t);
void tdxkvm_pit_queue_work(void *t);
unsigned long tdxkvm_pit_lock(void *t);
void tdxkvm_pit_unlock(void *t, unsigned long flags);
s64 tdxkvm_pit_now(void);

struct tdxkvm_pit_timer {
	struct hrtimer timer;
	struct work_struct work;
	/* Guards the Rust model: taken by the hrtimer callback, so IRQ-safe. */
	spinlock_t lock;
	u64 generation;
	void *pit;
};

static enum hrtimer_restart pit_timer_fn(struct hrtimer *timer)
{
	struct tdxkvm_pit_timer *t = container_of(timer, struct tdxkvm_pit_timer, timer);
	s64 restart_at = 0;

	if (tdxkvm_rust_pit_fire(t->pit, READ_ONCE(t->generation), &restart_at))
		queue_work(system_highpri_wq, &t->work);
	if (restart_at) {
		hrtimer_set_expires(timer, ns_to_ktime(restart_at));
		return HRTIMER_RESTART;
	}
	return HRTIMER_NORESTART;
}

static void pit_work_fn(struct work_struct *work)
{
	struct tdxkvm_pit_timer *t = container_of(work, struct tdxkvm_pit_timer, work);

	tdxkvm_rust_pit_work(t->pit);
}

void *tdxkvm_pit_timer_new(void *pit)
{
	struct tdxkvm_pit_timer *t = kzalloc(sizeof(*t), GFP_KERNEL_ACCOUNT);

	if (!t)
		return NULL;
	hrtimer_init(&t->timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
	t->timer.function = pit_timer_fn;
	INIT_WORK(&t->work, pit_work_fn);
	spin_lock_init(&t->lock);
	t->pit = pit;
	return t;
}

/* Upstream create_pit_timer: cancel, flush the work, then arm (absolute CLOCK_MONOTONIC ns).
 * Sleeps; the model lock must not be held. */
void tdxkvm_pit_timer_start(void *timer, s64 expires, u64 generation)
{
	struct tdxkvm_pit_timer *t = timer;

	hrtimer_cancel(&t->timer);
	flush_work(&t->work);
	WRITE_ONCE(t->generation, generation);
	hrtimer_start(&t->timer, ns_to_ktime(expires), HRTIMER_MODE_ABS);
}

/* Upstream destroy_pit_timer. Sleeps. */
void tdxkvm_pit_timer_cancel(void *timer)
{
	struct tdxkvm_pit_timer *t = timer;

	hrtimer_cancel(&t->timer);
	flush_work(&t->work);
}

void tdxkvm_pit_queue_work(void *timer)
{
	struct tdxkvm_pit_timer *t = timer;

	queue_work(system_highpri_wq, &t->work);
}

/* Teardown: nothing runs for this PIT after this returns. */
void tdxkvm_pit_timer_free(void *timer)
{
	struct tdxkvm_pit_timer *t = timer;

	hrtimer_cancel(&t->timer);
	cancel_work_sync(&t->work);
	/* The work may have re-armed nothing (it never starts the timer), so one round is
	 * enough. */
	kfree(t);
}

unsigned long tdxkvm_pit_lock(void *timer)
{
	struct tdxkvm_pit_timer *t = timer;
	unsigned long flags;

	spin_lock_irqsave(&t->lock, flags);
	return flags;
}

void tdxkvm_pit_unlock(void *timer, unsigned long flags)
{
	struct tdxkvm_pit_timer *t = timer;

	spin_unlock_irqrestore(&t->lock, flags);
}

s64 tdxkvm_pit_now(void)
{
	return ktime_get_ns();
}

/* ==== The IOAPIC's deferred re-injection after an EOI storm (upstream eoi_inject) ==== */

/* Rust (src/irq/chip.rs): re-injects the level lines still pending (process context). */
void tdxkvm_rust_ioapic_eoi_inject(void *vm);

void *tdxkvm_eoi_work_new(void *vm);
void tdxkvm_eoi_work_schedule(void *w, unsigned long delay_ns);
void tdxkvm_eoi_work_free(void *w);

struct tdxkvm_eoi_work {
	struct delayed_work work;
	void *vm;
};

static void eoi_work_fn(struct work_struct *work)
{
	struct tdxkvm_eoi_work *w = container_of(to_delayed_work(work), struct tdxkvm_eoi_work, work);

	tdxkvm_rust_ioapic_eoi_inject(w->vm);
}

void *tdxkvm_eoi_work_new(void *vm)
{
	struct tdxkvm_eoi_work *w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);

	if (!w)
		return NULL;
	INIT_DELAYED_WORK(&w->work, eoi_work_fn);
	w->vm = vm;
	return w;
}

void tdxkvm_eoi_work_schedule(void *work, unsigned long delay_ns)
{
	struct tdxkvm_eoi_work *w = work;

	schedule_delayed_work(&w->work, nsecs_to_jiffies(delay_ns));
}

/* Teardown: the work neither runs nor is queued after this. */
void tdxkvm_eoi_work_free(void *work)
{
	struct tdxkvm_eoi_work *w = work;

	cancel_delayed_work_sync(&w->work);
	kfree(w);
}
