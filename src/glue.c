// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue for what the 6.12 Rust `kernel` crate lacks: the misc device, anonymous-inode
 * VM files, debugfs, module parameters, page-frame helpers, an rwlock and the crypto API.
 * Every function here is a few lines; all logic lives in Rust.
 */
#include <linux/anon_inodes.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <crypto/hash.h>
#include <crypto/sha2.h>
#include <crypto/sha512_base.h>

#include "glue.h"

/* Implemented in Rust. */
long tdxkvm_rust_dev_ioctl(unsigned int cmd, unsigned long arg);
long tdxkvm_rust_vm_ioctl(void *vm, unsigned int cmd, unsigned long arg);
void tdxkvm_rust_vm_release(void *vm);
size_t tdxkvm_rust_stats(char *buf, size_t len);
long tdxkvm_rust_selftest(unsigned long arg);

static char *tdx = "auto";
module_param(tdx, charp, 0444);
MODULE_PARM_DESC(tdx, "TDX backend: auto (real module if initialised, else off), hw, emulated (software TDX module), off");

const char *tdxkvm_param_tdx(void)
{
	return tdx;
}

static long dev_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return tdxkvm_rust_dev_ioctl(cmd, arg);
}

static const struct file_operations dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice kvm_dev = {
	.minor = KVM_MINOR,
	.name = "kvm",
	.fops = &dev_fops,
	.mode = 0600,
};

int tdxkvm_misc_register(void)
{
	return misc_register(&kvm_dev);
}

void tdxkvm_misc_deregister(void)
{
	misc_deregister(&kvm_dev);
}

static long vm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return tdxkvm_rust_vm_ioctl(f->private_data, cmd, arg);
}

static int vm_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_vm_release(f->private_data);
	return 0;
}

static const struct file_operations vm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = vm_release,
	.llseek = noop_llseek,
};

/* A new fd for a VM; on success the file owns `vm` until release. */
int tdxkvm_vm_fd(void *vm)
{
	return anon_inode_getfd("kvm-vm", &vm_fops, vm, O_RDWR | O_CLOEXEC);
}

static int stats_show(struct seq_file *m, void *v)
{
	char *buf = kmalloc(1024, GFP_KERNEL);

	if (!buf)
		return -ENOMEM;
	seq_write(m, buf, tdxkvm_rust_stats(buf, 1024));
	kfree(buf);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(stats);

static ssize_t selftest_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	unsigned long arg;
	int r = kstrtoul_from_user(ubuf, len, 0, &arg);

	if (r)
		return r;
	r = tdxkvm_rust_selftest(arg);
	return r < 0 ? r : len;
}

static const struct file_operations selftest_fops = {
	.owner = THIS_MODULE,
	.write = selftest_write,
};

static struct dentry *dbg_dir;

void tdxkvm_debugfs_init(void)
{
	dbg_dir = debugfs_create_dir("tdx_kvm", NULL);
	debugfs_create_file("stats", 0444, dbg_dir, NULL, &stats_fops);
	debugfs_create_file("selftest", 0200, dbg_dir, NULL, &selftest_fops);
}

void tdxkvm_debugfs_exit(void)
{
	debugfs_remove_recursive(dbg_dir);
}

/* Pages: the direct map, page->private. */
void *tdxkvm_alloc_page(void)
{
	return (void *)get_zeroed_page(GFP_KERNEL_ACCOUNT);
}

void tdxkvm_free_page(void *virt)
{
	free_page((unsigned long)virt);
}

u64 tdxkvm_virt_to_pfn(void *virt)
{
	return page_to_pfn(virt_to_page(virt));
}

void *tdxkvm_pfn_to_virt(u64 pfn)
{
	return pfn_to_kaddr(pfn);
}

bool tdxkvm_pfn_valid(u64 pfn)
{
	return pfn_valid(pfn);
}

/* One past the highest RAM PFN of any online node (max_pfn is not exported to modules). */
u64 tdxkvm_max_pfn(void)
{
	u64 end = 0;
	int nid;

	for_each_online_node(nid)
		end = max_t(u64, end, node_end_pfn(nid));
	return end;
}

unsigned long tdxkvm_page_private(u64 pfn)
{
	return page_private(pfn_to_page(pfn));
}

void tdxkvm_set_page_private(u64 pfn, unsigned long value)
{
	set_page_private(pfn_to_page(pfn), value);
}

/* A naturally aligned, zeroed block of 2^order pages (the self test's guest memory). */
void *tdxkvm_alloc_pages(unsigned int order)
{
	return (void *)__get_free_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN, order);
}

void tdxkvm_free_pages(void *virt, unsigned int order)
{
	free_pages((unsigned long)virt, order);
}

void *tdxkvm_kzalloc(size_t size)
{
	return kzalloc(size, GFP_KERNEL_ACCOUNT);
}

void tdxkvm_kfree(void *p)
{
	kfree(p);
}

/* The MMU lock: a spinning rwlock, as KVM's mmu_lock. */
void *tdxkvm_rwlock_new(void)
{
	rwlock_t *l = kmalloc(sizeof(*l), GFP_KERNEL);

	if (l)
		rwlock_init(l);
	return l;
}

void tdxkvm_rwlock_free(void *l)
{
	kfree(l);
}

void tdxkvm_read_lock(void *l)
{
	read_lock((rwlock_t *)l);
}

void tdxkvm_read_unlock(void *l)
{
	read_unlock((rwlock_t *)l);
}

void tdxkvm_write_lock(void *l)
{
	write_lock((rwlock_t *)l);
}

void tdxkvm_write_unlock(void *l)
{
	write_unlock((rwlock_t *)l);
}

/* SHA-512 compression of one block through the crypto API (import state, update, export). */
static struct crypto_shash *sha512_tfm;

int tdxkvm_sha512_init(void)
{
	sha512_tfm = crypto_alloc_shash("sha512", 0, 0);
	if (IS_ERR(sha512_tfm)) {
		int r = PTR_ERR(sha512_tfm);

		sha512_tfm = NULL;
		return r;
	}
	return 0;
}

void tdxkvm_sha512_exit(void)
{
	if (sha512_tfm)
		crypto_free_shash(sha512_tfm);
}

int tdxkvm_sha512_compress(u64 *state, const u8 *block)
{
	struct sha512_state st = {};
	int r;
	SHASH_DESC_ON_STACK(desc, sha512_tfm);

	if (!sha512_tfm)
		return -ENODEV;
	desc->tfm = sha512_tfm;
	memcpy(st.state, state, sizeof(st.state));
	r = crypto_shash_import(desc, &st);
	if (!r)
		r = crypto_shash_update(desc, block, SHA512_BLOCK_SIZE);
	if (!r)
		r = crypto_shash_export(desc, &st);
	if (!r)
		memcpy(state, st.state, sizeof(st.state));
	shash_desc_zero(desc);
	return r;
}

/* Whether the CPU has the TDX host feature and the kernel initialised the TDX module. */
bool tdxkvm_tdx_host_ready(void)
{
#ifdef CONFIG_INTEL_TDX_HOST
	return boot_cpu_has(X86_FEATURE_TDX_HOST_PLATFORM);
#else
	return false;
#endif
}
