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
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/hrtimer.h>
#include <linux/list.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
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
	int ret;

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
	kfree(s);
}
