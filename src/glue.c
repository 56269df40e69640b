// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin C glue for what the 6.12 Rust `kernel` crate lacks: the misc device, anonymous-inode
 * VM files, debugfs, module parameters, page-frame helpers, an rwlock, the crypto API, and
 * for tdx=hw the CPU services around VMX operation and the host kernel's TDX API.
 * Every function here is a few lines; all logic lives in Rust.
 */
#include <linux/anon_inodes.h>
#include <linux/bitmap.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/debugfs.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pagemap.h>
#include <linux/pagevec.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/sched/signal.h>
#include <linux/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/syscore_ops.h>
#include <linux/uaccess.h>
#include <crypto/hash.h>
#include <crypto/sha2.h>
#include <crypto/sha512_base.h>
#include <asm/msr.h>
#include <asm/perf_event.h>
#include <asm/reboot.h>
#include <asm/tdx.h>
#include <asm/tlbflush.h>
#include <asm/tsc.h>
#include <asm/topology.h>

#include "glue.h"

/* Implemented in Rust. */
long tdxkvm_rust_dev_ioctl(unsigned int cmd, unsigned long arg);
long tdxkvm_rust_vm_ioctl(void *vm, unsigned int cmd, unsigned long arg);
void tdxkvm_rust_vm_release(void *vm);
size_t tdxkvm_rust_stats(char *buf, size_t len);
size_t tdxkvm_rust_seamcall_probe(char *buf, size_t len);
long tdxkvm_rust_selftest(unsigned long arg);

long tdxkvm_rust_vcpu_ioctl(void *vcpu, unsigned int cmd, unsigned long arg);
void *tdxkvm_rust_vcpu_page(void *vcpu, unsigned long pgoff);
void tdxkvm_rust_vcpu_release(void *vcpu);
ssize_t tdxkvm_rust_stats_read(void *owner, int kind, char __user *buf, size_t size, loff_t *pos);
void tdxkvm_rust_stats_release(void *owner, int kind);

static char *tdx = "auto";
module_param(tdx, charp, 0444);
MODULE_PARM_DESC(tdx, "TDX backend: auto (real module if initialised, else off), hw, emulated (software TDX module), off");

/*
 * Every upstream KVM selftest reads /sys/module/kvm/parameters/force_emulation_prefix before
 * main(). 0: the forced-emulation prefix is not supported (there is no emulator yet).
 */
static int force_emulation_prefix;
module_param(force_emulation_prefix, int, 0444);
MODULE_PARM_DESC(force_emulation_prefix, "Forced emulation prefix (not supported: always 0)");

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

static int seamcall_probe_show(struct seq_file *m, void *v)
{
	char buf[256];

	seq_write(m, buf, tdxkvm_rust_seamcall_probe(buf, sizeof(buf)));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(seamcall_probe);

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

/* ---- TDX VM ABI (src/tdx_vm.rs) ---- */

size_t tdxkvm_rust_tds(char *buf, size_t len);

/* debugfs `tds`: one line per live TD (state, MRTD). */
static int tds_show(struct seq_file *m, void *v)
{
	char *buf = kmalloc(8192, GFP_KERNEL);

	if (!buf)
		return -ENOMEM;
	seq_write(m, buf, tdxkvm_rust_tds(buf, 8192));
	kfree(buf);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(tds);

/* The host's TSC frequency: a TD's default (upstream kvm->arch.default_tsc_khz). */
unsigned int tdxkvm_tsc_khz(void)
{
	return tsc_khz;
}

static struct dentry *dbg_dir;

void tdxkvm_debugfs_init(void)
{
	dbg_dir = debugfs_create_dir("tdx_kvm", NULL);
	debugfs_create_file("stats", 0444, dbg_dir, NULL, &stats_fops);
	debugfs_create_file("selftest", 0200, dbg_dir, NULL, &selftest_fops);
	debugfs_create_file("seamcall_probe", 0400, dbg_dir, NULL, &seamcall_probe_fops);
	debugfs_create_file("tds", 0444, dbg_dir, NULL, &tds_fops);
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

/* HOOK(gmemfault): long MMU walks yield as upstream's tdp_mmu_iter_cond_resched. */
bool tdxkvm_rwlock_needbreak(void *l)
{
	return need_resched() || rwlock_needbreak((rwlock_t *)l);
}

void tdxkvm_write_resched(void *l)
{
	cond_resched_rwlock_write((rwlock_t *)l);
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

/*
 * tdx=hw: the host kernel's TDX support (CONFIG_INTEL_TDX_HOST) and the CPU services around
 * VMX operation. src/hw/ holds the logic; these are the kernel's inline helpers, macros and
 * per-CPU data made callable.
 */

/* Whether the host kernel found TDX enabled by the BIOS at boot (private KeyIDs exist). */
bool tdxkvm_tdx_host_ready(void)
{
#ifdef CONFIG_INTEL_TDX_HOST
	return boot_cpu_has(X86_FEATURE_TDX_HOST_PLATFORM);
#else
	return false;
#endif
}

/* VMX usable on this CPU (the kernel clears the flag when IA32_FEAT_CTL forbids VMXON). */
bool tdxkvm_this_cpu_has_vmx(void)
{
	return this_cpu_has(X86_FEATURE_VMX);
}

/* Physical-address bits left once MKTME/TDX KeyID bits are taken out: where a KeyID goes. */
unsigned int tdxkvm_phys_bits(void)
{
	return boot_cpu_data.x86_phys_bits;
}

bool tdxkvm_boot_cpu_has_movdir64b(void)
{
	return boot_cpu_has(X86_FEATURE_MOVDIR64B);
}

int tdxkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrl_safe(msr, val);
}

/*
 * Whether this CPU takes @value in MSR_IA32_SPEC_CTRL (what upstream's kvm_spec_ctrl_test_value
 * checks): write it with fault fixup, with IRQs off, then put the old value back.
 */
bool tdxkvm_spec_ctrl_test_value(u64 value)
{
	unsigned long flags;
	u64 old;
	bool ok = false;

	local_irq_save(flags);
	if (!rdmsrl_safe(MSR_IA32_SPEC_CTRL, &old) && !wrmsrl_safe(MSR_IA32_SPEC_CTRL, value)) {
		wrmsrl(MSR_IA32_SPEC_CTRL, old);
		ok = true;
	}
	local_irq_restore(flags);
	return ok;
}

bool tdxkvm_cr4_vmxe(void)
{
	return cr4_read_shadow() & X86_CR4_VMXE;
}

/* CR4.VMXE as the register has it, not the kernel's shadow (emergency and probe paths). */
bool tdxkvm_cr4_vmxe_hw(void)
{
	return __read_cr4() & X86_CR4_VMXE;
}

/* Whether this CPU is in VMX operation already (someone else's: kvm-intel, ...). */
bool tdxkvm_vmx_in_use(void)
{
	bool r;

	preempt_disable();
	r = cr4_read_shadow() & X86_CR4_VMXE;
	preempt_enable();
	return r;
}

/* CR4.VMXE off after VMXOFF, without the Intel PT call (emergency path, NMI context). */
void tdxkvm_cr4_clear_vmxe(void)
{
	cr4_clear_bits(X86_CR4_VMXE);
}

/* CR4.VMXE on, Intel PT told VMX operation begins (as KVM's kvm_cpu_vmxon). IRQs are off. */
void tdxkvm_vmx_on_prepare(void)
{
	intel_pt_handle_vmx(1);
	cr4_set_bits(X86_CR4_VMXE);
}

/* After VMXOFF (or a failed VMXON): CR4.VMXE off, Intel PT back. */
void tdxkvm_vmx_off_finish(void)
{
	cr4_clear_bits(X86_CR4_VMXE);
	intel_pt_handle_vmx(0);
}

/* This CPU's VMXON region (one page's address, 0 when not in VMX operation by us). */
static DEFINE_PER_CPU(unsigned long, vmxon_region);

unsigned long *tdxkvm_this_cpu_vmxon_region(void)
{
	return this_cpu_ptr(&vmxon_region);
}

unsigned long tdxkvm_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void tdxkvm_local_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

void tdxkvm_cpus_read_lock(void)
{
	cpus_read_lock();
}

void tdxkvm_cpus_read_unlock(void)
{
	cpus_read_unlock();
}

/* A dynamic CPU-hotplug state whose online callback runs now on every online CPU. */
int tdxkvm_cpuhp_setup_cpuslocked(int (*online)(unsigned int), int (*offline)(unsigned int))
{
	return cpuhp_setup_state_cpuslocked(CPUHP_AP_ONLINE_DYN, "tdx_kvm:online", online,
					    offline);
}

void tdxkvm_cpuhp_remove(int state)
{
	cpuhp_remove_state(state);
}

int tdxkvm_tdx_cpu_enable(void)
{
	return tdx_cpu_enable();
}

/* Caller holds cpus_read_lock(). */
int tdxkvm_tdx_enable(void)
{
	return tdx_enable();
}

void tdxkvm_emergency_virt_register(void (*cb)(void))
{
	cpu_emergency_register_virt_callback(cb);
}

void tdxkvm_emergency_virt_unregister(void (*cb)(void))
{
	cpu_emergency_unregister_virt_callback(cb);
}

/* Runs fn on every online CPU in IRQ context and waits. */
void tdxkvm_on_each_cpu(void (*fn)(void *))
{
	on_each_cpu(fn, NULL, 1);
}

/* A reboot/poweroff leaves VMX operation on every CPU first: some firmware hangs otherwise. */
static void syscore_shutdown_cb(void *data)
{
	((void (*)(void))data)();
}

static const struct syscore_ops syscore_ops = {
	.shutdown = syscore_shutdown_cb,
};

static struct syscore syscore = {
	.ops = &syscore_ops,
};

void tdxkvm_syscore_register(void (*cb)(void))
{
	syscore.data = cb;
	register_syscore(&syscore);
}

void tdxkvm_syscore_unregister(void)
{
	unregister_syscore(&syscore);
}

/* Serialises TDH.MNG.CREATE and HKID releases (CACHE.WB's resume point is per package). */
static DEFINE_MUTEX(hkid_lock);

void tdxkvm_hkid_lock(void)
{
	mutex_lock(&hkid_lock);
}

void tdxkvm_hkid_unlock(void)
{
	mutex_unlock(&hkid_lock);
}

/* Whether another online CPU shares `cpu`'s package. */
bool tdxkvm_package_has_other_online_cpu(unsigned int cpu)
{
	unsigned int i;

	for_each_online_cpu(i)
		if (i != cpu && topology_physical_package_id(i) == topology_physical_package_id(cpu))
			return true;
	return false;
}

/* Whether every package with present CPUs has an online one. Caller holds cpus_read_lock(). */
static bool packages_online_locked(unsigned long *seen)
{
	unsigned int cpu;

	bitmap_zero(seen, topology_max_packages());
	for_each_online_cpu(cpu)
		__set_bit(topology_logical_package_id(cpu), seen);
	for_each_present_cpu(cpu)
		if (!test_bit(topology_logical_package_id(cpu), seen))
			return false;
	return true;
}

/* -EBUSY if some package has present CPUs but none online, -ENOMEM, else 0. */
int tdxkvm_packages_online(void)
{
	unsigned long *seen = bitmap_zalloc(topology_max_packages(), GFP_KERNEL);
	int r;

	if (!seen)
		return -ENOMEM;
	cpus_read_lock();
	r = packages_online_locked(seen) ? 0 : -EBUSY;
	cpus_read_unlock();
	bitmap_free(seen);
	return r;
}

/*
 * Runs fn(data) in process context on one online CPU of each package, stopping at an error.
 * -EBUSY without running anything if a package has present CPUs but none online: per-package
 * SEAMCALLs (KEY.CONFIG, CACHE.WB) must reach every package.
 */
int tdxkvm_on_each_package(int (*fn)(void *), void *data)
{
	unsigned long *seen = bitmap_zalloc(topology_max_packages(), GFP_KERNEL);
	unsigned int cpu;
	int r = 0;

	if (!seen)
		return -ENOMEM;
	cpus_read_lock();
	if (!packages_online_locked(seen)) {
		r = -EBUSY;
		goto out;
	}
	bitmap_zero(seen, topology_max_packages());
	for_each_online_cpu(cpu) {
		if (test_and_set_bit(topology_logical_package_id(cpu), seen))
			continue;
		r = smp_call_on_cpu(cpu, fn, data, false);
		if (r)
			break;
	}
out:
	cpus_read_unlock();
	bitmap_free(seen);
	return r;
}

/* Resets a page's integrity state after the TDX module gave it back (Linux's MOVDIR64B loop). */
void tdxkvm_movdir64b_clear_page(void *virt)
{
	const void *zero_page = (const void *)page_address(ZERO_PAGE(0));
	unsigned long i;

	for (i = 0; i < PAGE_SIZE; i += 64)
		movdir64b(virt + i, zero_page);
	/* MOVDIR64B is weakly ordered: order it before the page is reused. */
	mb();
}

/*
 * VM objects, vCPU files and binary stats files (the VM object restructure, vCPUs, stats fds).
 */

/* current->mm with a reference (mmgrab), as upstream's kvm->mm; NULL for a kernel thread. */
void *tdxkvm_mm_grab_current(void)
{
	struct mm_struct *mm = current->mm;

	if (mm)
		mmgrab(mm);
	return mm;
}

void tdxkvm_mmdrop(void *mm)
{
	mmdrop(mm);
}

void *tdxkvm_current_mm(void)
{
	return current->mm;
}

int tdxkvm_current_pid(void)
{
	return task_pid_nr(current);
}

unsigned int tdxkvm_num_present_cpus(void)
{
	return num_present_cpus();
}

unsigned int tdxkvm_num_online_cpus(void)
{
	return num_online_cpus();
}

static long vcpu_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return tdxkvm_rust_vcpu_ioctl(f->private_data, cmd, arg);
}

/* Page 0: kvm_run, 1: PIO data, 2: coalesced-MMIO ring; anything else SIGBUS (kvm_vcpu_fault). */
static vm_fault_t vcpu_fault(struct vm_fault *vmf)
{
	void *virt = tdxkvm_rust_vcpu_page(vmf->vma->vm_file->private_data, vmf->pgoff);
	struct page *page;

	if (!virt)
		return VM_FAULT_SIGBUS;
	page = virt_to_page(virt);
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct vcpu_vm_ops = {
	.fault = vcpu_fault,
};

static int vcpu_mmap(struct file *f, struct vm_area_struct *vma)
{
	vma->vm_ops = &vcpu_vm_ops;
	return 0;
}

static int vcpu_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_vcpu_release(f->private_data);
	return 0;
}

static const struct file_operations vcpu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vcpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = vcpu_mmap,
	.release = vcpu_release,
	.llseek = noop_llseek,
};

/* A new fd "kvm-vcpu:<id>" for a vCPU; on success the file holds the VM reference taken. */
int tdxkvm_vcpu_fd(void *vcpu, u32 id)
{
	char name[32];

	snprintf(name, sizeof(name), "kvm-vcpu:%u", id);
	return anon_inode_getfd(name, &vcpu_fops, vcpu, O_RDWR | O_CLOEXEC);
}

static ssize_t vm_stats_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return tdxkvm_rust_stats_read(f->private_data, 0, buf, size, pos);
}

static ssize_t vcpu_stats_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return tdxkvm_rust_stats_read(f->private_data, 1, buf, size, pos);
}

static int vm_stats_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_stats_release(f->private_data, 0);
	return 0;
}

static int vcpu_stats_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_stats_release(f->private_data, 1);
	return 0;
}

static const struct file_operations vm_stats_fops = {
	.owner = THIS_MODULE,
	.read = vm_stats_read,
	.release = vm_stats_release,
	.llseek = noop_llseek,
};

static const struct file_operations vcpu_stats_fops = {
	.owner = THIS_MODULE,
	.read = vcpu_stats_read,
	.release = vcpu_stats_release,
	.llseek = noop_llseek,
};

/* A read-only, pread-able stats fd (kvm_vm_ioctl_get_stats_fd); kind 0: VM, 1: vCPU. */
int tdxkvm_stats_fd(void *owner, int kind)
{
	struct file *file;
	int fd = get_unused_fd_flags(O_CLOEXEC);

	if (fd < 0)
		return fd;
	file = anon_inode_getfile(kind ? "kvm-vcpu-stats" : "kvm-vm-stats",
				  kind ? &vcpu_stats_fops : &vm_stats_fops, owner, O_RDONLY);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_mode |= FMODE_PREAD;
	fd_install(fd, file);
	return fd;
}

/* ---- Guest memory (the `mem` area: src/memslot.rs, src/gmem.rs) ---- */

long tdxkvm_rust_gmem_fallocate(void *gmem, void *file, int mode, s64 offset, s64 len);
void tdxkvm_rust_gmem_release(void *gmem, void *file);

/* untagged_addr(addr) == addr && access_ok(addr, size): kvm_set_memory_region's HVA check. */
bool tdxkvm_user_range_ok(u64 addr, u64 size)
{
	return addr == untagged_addr(addr) &&
	       access_ok((void __user *)(unsigned long)addr, size);
}

static long gmem_fallocate(struct file *f, int mode, loff_t offset, loff_t len)
{
	long r = tdxkvm_rust_gmem_fallocate(f->private_data, f, mode, offset, len);

	if (!r)
		file_modified(f);
	return r;
}

static int gmem_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_gmem_release(f->private_data, f);
	return 0;
}

/* No read, write or mmap: those fail as on upstream's guest_memfd. */
static const struct file_operations gmem_fops = {
	.owner = THIS_MODULE,
	.open = generic_file_open,
	.release = gmem_release,
	.fallocate = gmem_fallocate,
};

static int gmem_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)
{
	return -EINVAL;
}

static const struct inode_operations gmem_iops = {
	.setattr = gmem_setattr,
};

static int gmem_migrate_folio(struct address_space *mapping, struct folio *dst,
			      struct folio *src, enum migrate_mode mode)
{
	WARN_ON_ONCE(1);
	return -EINVAL;
}

static const struct address_space_operations gmem_aops = {
	.dirty_folio = noop_dirty_folio,
	.migrate_folio = gmem_migrate_folio,
};

/* A guest_memfd file with its own inode (upstream __kvm_gmem_create); returns the fd. */
int tdxkvm_gmem_create(void *priv, u64 size, void **filep)
{
	struct inode *inode;
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(0);
	if (fd < 0)
		return fd;
	file = anon_inode_create_getfile("[kvm-gmem]", &gmem_fops, priv, O_RDWR, NULL);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_flags |= O_LARGEFILE;
	inode = file->f_inode;
	inode->i_op = &gmem_iops;
	inode->i_mapping->a_ops = &gmem_aops;
	inode->i_mode |= S_IFREG;
	inode->i_size = size;
	mapping_set_gfp_mask(inode->i_mapping, GFP_HIGHUSER);
	mapping_set_inaccessible(inode->i_mapping);
	mapping_set_large_folios(inode->i_mapping);
	WARN_ON_ONCE(!mapping_unevictable(inode->i_mapping));
	*filep = file;
	fd_install(fd, file);
	return fd;
}

/*
 * fget(fd): NULL if not open; *priv is the private data if the file is one of this module's
 * guest_memfd files, NULL otherwise; *i_size its size. The caller fput()s the file.
 */
void *tdxkvm_gmem_fget(int fd, void **priv, u64 *i_size)
{
	struct file *file = fget(fd);

	*priv = NULL;
	*i_size = 0;
	if (!file)
		return NULL;
	if (file->f_op == &gmem_fops) {
		*priv = file->private_data;
		*i_size = i_size_read(file_inode(file));
	}
	return file;
}

void tdxkvm_fput(void *file)
{
	fput(file);
}

u64 tdxkvm_file_size(void *file)
{
	return i_size_read(file_inode((struct file *)file));
}

void tdxkvm_gmem_invalidate_lock(void *file)
{
	filemap_invalidate_lock(((struct file *)file)->f_mapping);
}

void tdxkvm_gmem_invalidate_unlock(void *file)
{
	filemap_invalidate_unlock(((struct file *)file)->f_mapping);
}

/*
 * The locked folio at @index, allocated if absent: 2 MiB when @index is 2 MiB aligned and the
 * file covers the whole 2 MiB (the page cache falls back to smaller folios), else 4 KiB.
 */
static struct folio *gmem_get_folio(struct address_space *mapping, pgoff_t index)
{
	fgf_t fgp = FGP_LOCK | FGP_CREAT;
	struct folio *folio;

	folio = filemap_lock_folio(mapping, index);
	if (!IS_ERR(folio))
		return folio;
	if (IS_ALIGNED(index, PTRS_PER_PMD) &&
	    (u64)(index + PTRS_PER_PMD) << PAGE_SHIFT <= (u64)i_size_read(mapping->host))
		fgp |= fgf_set_order(PMD_SIZE);
	return __filemap_get_folio(mapping, index, fgp, mapping_gfp_mask(mapping));
}

/*
 * A new 2 MiB folio at @head (2 MiB aligned), locked, if the whole 2 MiB range lies inside the
 * file and no page of it exists yet; an ERR_PTR otherwise, with nothing allocated or left in
 * the page cache (__filemap_get_folio would fall back to a smaller folio at @head instead).
 */
static struct folio *gmem_new_huge_folio(struct address_space *mapping, pgoff_t head)
{
	gfp_t gfp = mapping_gfp_mask(mapping);
	struct folio *folio;
	int r;

	if ((u64)(head + PTRS_PER_PMD) << PAGE_SHIFT > (u64)i_size_read(mapping->host))
		return ERR_PTR(-EINVAL);
	folio = filemap_alloc_folio(gfp, PMD_ORDER);
	if (!folio)
		return ERR_PTR(-ENOMEM);
	/* Locks the folio on success; -EEXIST if any page of the range is there. */
	r = filemap_add_folio(mapping, folio, head, gfp);
	if (r) {
		folio_put(folio);
		return ERR_PTR(r);
	}
	return folio;
}

/* fallocate(KEEP_SIZE) of pages [start, end) (upstream kvm_gmem_allocate). */
long tdxkvm_gmem_allocate(void *filep, u64 start, u64 end)
{
	struct address_space *mapping = ((struct file *)filep)->f_mapping;
	pgoff_t index;
	long r = 0;

	filemap_invalidate_lock_shared(mapping);
	for (index = start; index < end;) {
		struct folio *folio;

		if (signal_pending(current)) {
			r = -EINTR;
			break;
		}
		folio = gmem_get_folio(mapping, index);
		if (IS_ERR(folio)) {
			r = PTR_ERR(folio);
			break;
		}
		index = folio_next_index(folio);
		folio_unlock(folio);
		folio_put(folio);
		if (WARN_ON_ONCE(!index))
			break;
		cond_resched();
	}
	filemap_invalidate_unlock_shared(mapping);
	return r;
}

/*
 * A large folio that straddles the hole boundary at page @index is kept whole: its part of the
 * hole [*start, *end) is zeroed (the zap already took those pages out of the S-EPT, so the
 * host may write them) and the hole shrinks to leave the folio out. Why: 6.12's
 * truncate_inode_partial_folio() tries split_folio() (which a module cannot call) and, when
 * that fails on a clean folio (a racing fault holds a reference), drops the WHOLE folio from
 * the page cache, although its other pages may still be mapped at 4K in the S-EPT after a
 * DEMOTE. Keeping the folio costs the hole's pages until the folio goes whole.
 */
static void gmem_keep_straddling_folio(struct address_space *mapping, pgoff_t index,
				       pgoff_t *start, pgoff_t *end)
{
	struct folio *folio = filemap_lock_folio(mapping, index);
	pgoff_t first, next, s, e;

	if (IS_ERR(folio))
		return;
	first = folio->index;
	next = folio_next_index(folio);
	if (folio_test_large(folio) && (first < *start || next > *end)) {
		s = max(*start, first);
		e = min(*end, next);
		if (s < e)
			folio_zero_range(folio, (s - first) << PAGE_SHIFT, (e - s) << PAGE_SHIFT);
		if (first < *start)
			*start = min(next, *end);
		if (next > *end)
			*end = max(first, *start);
	}
	folio_unlock(folio);
	folio_put(folio);
}

/*
 * Frees the pages [start, end) (the S-EPT gave them back); the invalidate lock is held. Only
 * folios wholly inside the hole leave the page cache (gmem_keep_straddling_folio).
 */
void tdxkvm_gmem_truncate(void *file, u64 start, u64 end)
{
	struct address_space *mapping = ((struct file *)file)->f_mapping;
	pgoff_t last = (pgoff_t)(U64_MAX >> PAGE_SHIFT);
	pgoff_t s = start, e = end >= last ? last : end;
	loff_t lend;

	if (s >= e)
		return;
	gmem_keep_straddling_folio(mapping, s, &s, &e);
	if (s < e)
		gmem_keep_straddling_folio(mapping, e - 1, &s, &e);
	if (s >= e)
		return;
	lend = e >= last ? -1 : (loff_t)(e << PAGE_SHIFT) - 1;
	truncate_inode_pages_range(mapping, (loff_t)s << PAGE_SHIFT, lend);
}

/*
 * Pages [start, end) may still be mapped by the TDX module (a zap could not finish): take one
 * reference on each folio that is never dropped, so neither truncation nor eviction frees it.
 */
void tdxkvm_gmem_leak_range(void *file, u64 start, u64 end)
{
	struct address_space *mapping = ((struct file *)file)->f_mapping;
	struct folio_batch fbatch;
	pgoff_t index = start;
	unsigned int i;

	folio_batch_init(&fbatch);
	while (filemap_get_folios(mapping, &index, end - 1, &fbatch)) {
		for (i = 0; i < folio_batch_count(&fbatch); i++)
			folio_get(fbatch.folios[i]);
		folio_batch_release(&fbatch);
		cond_resched();
	}
}

/* A reference to @file unless its count already reached zero (it is being released). */
bool tdxkvm_file_get_active(void *file)
{
	return atomic_long_inc_not_zero(&((struct file *)file)->f_count);
}

/*
 * The folio backing page @index (upstream kvm_gmem_get_pfn): allocated (2 MiB where it can be,
 * see gmem_get_folio) and zeroed if new. Returns the folio with a reference, or NULL; *pfn is
 * the page of @index, *order the folio's order.
 */
void *tdxkvm_gmem_get_pfn(void *filep, u64 index, u64 *pfn, unsigned int *order)
{
	struct address_space *mapping = ((struct file *)filep)->f_mapping;
	pgoff_t head = ALIGN_DOWN(index, PTRS_PER_PMD);
	struct folio *folio;
	long i, n;

	filemap_invalidate_lock_shared(mapping);
	/* The folio already holding @index, of any order. */
	folio = filemap_lock_folio(mapping, index);
	/* Else the 2 MiB folio around @index, so a later fault can map it whole ... */
	if (IS_ERR(folio))
		folio = gmem_new_huge_folio(mapping, head);
	/* ... else a folio at @index itself: nothing is made at an index nobody asked for. */
	if (IS_ERR(folio))
		folio = gmem_get_folio(mapping, index);
	filemap_invalidate_unlock_shared(mapping);
	if (IS_ERR(folio))
		return NULL;
	if (!folio_test_uptodate(folio)) {
		n = folio_nr_pages(folio);
		for (i = 0; i < n; i++)
			clear_highpage(folio_page(folio, i));
		folio_mark_uptodate(folio);
	}
	*pfn = folio_pfn(folio) + (index - folio->index);
	*order = folio_order(folio);
	folio_unlock(folio);
	return folio;
}

void tdxkvm_folio_put(void *folio)
{
	folio_put(folio);
}

/*
 * The page at @hva of the current mm (upstream hva_to_pfn). A @write_fault breaks COW and maps
 * writable; a read fault faults the page in for reading (an untouched anonymous page is the
 * shared zero page: nothing is allocated) and is writable only if the page already is and
 * @may_write (the slot is not read-only), as upstream's fast writable attempt.
 * 0 with a page reference in *pagep, or -errno (-EINTR: a signal came while the fault waited).
 */
int tdxkvm_gup(u64 hva, bool write_fault, bool may_write, void **pagep, u64 *pfn,
	       bool *writable)
{
	struct page *page, *wpage;
	long n;

	if ((write_fault || may_write) && get_user_page_fast_only(hva, FOLL_WRITE, &page)) {
		*writable = true;
		goto out;
	}
	/*
	 * FOLL_INTERRUPTIBLE as upstream's hva_to_pfn_slow for vCPU faults: a fault that waits
	 * (userfaultfd) ends with -EINTR on any pending signal, so the VMM can kick the vCPU.
	 */
	n = get_user_pages_unlocked(hva, 1, &page,
				    FOLL_HWPOISON | FOLL_INTERRUPTIBLE |
				    (write_fault ? FOLL_WRITE : 0));
	if (n != 1)
		return n < 0 ? n : -EFAULT;
	*writable = write_fault;
	if (!write_fault && may_write && get_user_page_fast_only(hva, FOLL_WRITE, &wpage)) {
		*writable = true;
		put_page(page);
		page = wpage;
	}
out:
	*pagep = page;
	*pfn = page_to_pfn(page);
	return 0;
}

/*
 * Whether the current mm maps hva with a PMD (or larger) leaf: upstream
 * host_pfn_mapping_level(), capped at 2M. IRQs off keep the page tables from being freed
 * under the lockless walk; each entry is read once. The answer may be stale: the caller read
 * the invalidation count before and checks it under the MMU lock before mapping.
 */
bool tdxkvm_host_huge_2m(u64 hva)
{
	unsigned long flags;
	bool huge = false;
	pgd_t pgd;
	p4d_t p4d;
	pud_t pud;
	pmd_t pmd;

	if (!current->mm)
		return false;
	local_irq_save(flags);
	pgd = READ_ONCE(*pgd_offset(current->mm, hva));
	if (pgd_none(pgd))
		goto out;
	p4d = READ_ONCE(*p4d_offset(&pgd, hva));
	if (p4d_none(p4d) || !p4d_present(p4d))
		goto out;
	pud = READ_ONCE(*pud_offset(&p4d, hva));
	if (pud_none(pud) || !pud_present(pud))
		goto out;
	if (pud_leaf(pud)) {
		huge = true;
		goto out;
	}
	pmd = READ_ONCE(*pmd_offset(&pud, hva));
	if (pmd_none(pmd) || !pmd_present(pmd))
		goto out;
	huge = pmd_leaf(pmd);
out:
	local_irq_restore(flags);
	return huge;
}

void tdxkvm_put_page(void *page)
{
	put_page(page);
}

int tdxkvm_rust_mn_invalidate_start(void *vm, u64 start, u64 end, bool blockable);
void tdxkvm_rust_mn_invalidate_end(void *vm);
void tdxkvm_rust_mn_release(void *vm);

struct tdxkvm_mn {
	struct mmu_notifier mn;
	void *vm;
};

static int mn_invalidate_range_start(struct mmu_notifier *mn,
				     const struct mmu_notifier_range *range)
{
	struct tdxkvm_mn *m = container_of(mn, struct tdxkvm_mn, mn);

	return tdxkvm_rust_mn_invalidate_start(m->vm, range->start, range->end,
					       mmu_notifier_range_blockable(range));
}

static void mn_invalidate_range_end(struct mmu_notifier *mn,
				    const struct mmu_notifier_range *range)
{
	struct tdxkvm_mn *m = container_of(mn, struct tdxkvm_mn, mn);

	tdxkvm_rust_mn_invalidate_end(m->vm);
}

static void mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct tdxkvm_mn *m = container_of(mn, struct tdxkvm_mn, mn);

	tdxkvm_rust_mn_release(m->vm);
}

static const struct mmu_notifier_ops mn_ops = {
	.invalidate_range_start = mn_invalidate_range_start,
	.invalidate_range_end = mn_invalidate_range_end,
	.release = mn_release,
};

/* Registers an MMU notifier for @vm on the current mm (upstream kvm_init_mmu_notifier). */
void *tdxkvm_mn_register(void *vm)
{
	struct tdxkvm_mn *m = kzalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);

	if (!m)
		return NULL;
	m->vm = vm;
	m->mn.ops = &mn_ops;
	if (mmu_notifier_register(&m->mn, current->mm)) {
		kfree(m);
		return NULL;
	}
	return m;
}

void tdxkvm_mn_unregister(void *p)
{
	struct tdxkvm_mn *m = p;

	mmu_notifier_unregister(&m->mn, m->mn.mm);
	kfree(m);
}

void tdxkvm_cond_resched(void)
{
	cond_resched();
}

/* ==== exits: eventfds for KVM_IOEVENTFD (virt/kvm/eventfd.c's use of them) ==== */
#include <linux/eventfd.h>

/*
 * Takes a reference to the eventfd behind @fd into *@out; 0, or -EBADF (not an open fd) /
 * -EINVAL (not an eventfd) as eventfd_ctx_fdget answers.
 */
int tdxkvm_eventfd_get(int fd, void **out)
{
	struct eventfd_ctx *ctx = eventfd_ctx_fdget(fd);

	if (IS_ERR(ctx))
		return PTR_ERR(ctx);
	*out = ctx;
	return 0;
}

void tdxkvm_eventfd_signal(void *ctx)
{
	eventfd_signal(ctx);
}

void tdxkvm_eventfd_put(void *ctx)
{
	eventfd_ctx_put(ctx);
}

/* ==== exits: atomic updates of guest page-table entries in the memslots' user memory ==== */

/*
 * Replaces the u64 at user address @p by @new if it is @old (upstream __try_cmpxchg_gpte):
 * 0 done, 1 the value differed, -EFAULT.
 */
int tdxkvm_cmpxchg_user_u64(u64 __user *p, u64 old, u64 new)
{
	if (!access_ok(p, sizeof(*p)))
		return -EFAULT;
	return __try_cmpxchg_user(p, &old, new, efault64);
}

/* The same for a u32 (32-bit paging). */
int tdxkvm_cmpxchg_user_u32(u32 __user *p, u32 old, u32 new)
{
	if (!access_ok(p, sizeof(*p)))
		return -EFAULT;
	return __try_cmpxchg_user(p, &old, new, efault32);
}

/* ==== KVM_SET_SIGNAL_MASK: the vCPU's mask around KVM_RUN (upstream kvm_sigset_activate) ==== */

/*
 * Blocks @set for the running vCPU thread, keeping the thread's own mask in real_blocked
 * (a lockless write: only current changes real_blocked, readers only need it to be a subset
 * of blocked, as upstream says).
 */
void tdxkvm_sigset_activate(u64 set)
{
	sigset_t s;

	sigemptyset(&s);
	s.sig[0] = set;
	sigprocmask(SIG_SETMASK, &s, &current->real_blocked);
}

/* Restores the thread's own mask (upstream kvm_sigset_deactivate). */
void tdxkvm_sigset_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}
