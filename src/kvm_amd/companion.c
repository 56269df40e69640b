// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvm-amd.ko (module name kvm_amd): a companion of kvm.ko with no code of its own. Upstream
 * userspace reads the vendor module's parameters (KVM selftests: kvm_amd/parameters/avic, npt;
 * libvirt and QEMU: sev, sev_es, sev_snp, nested), but here the SVM backend lives inside kvm.ko.
 * This module shows, under /sys/module/kvm_amd/parameters/, upstream 6.12 svm.c's parameter
 * names and formats with the values kvm.ko really uses: every read asks kvm.ko
 * (tdxkvm_amd_param(), answered by src/kvm_amd.rs). They are read-only; giving one at load
 * time fails the load (EPERM), as this module cannot change what kvm.ko does. Loading needs
 * kvm.ko with a running SVM backend (ENODEV otherwise, as upstream's kvm_amd without SVM);
 * kvm.ko cannot be unloaded while this module is loaded.
 */
#include <linux/errno.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
#include <linux/sysfs.h>

#include "kvm_amd.h"

static int kvm_amd_param_set(const char *val, const struct kernel_param *kp)
{
	pr_err("kvm_amd: %s is read-only: it shows what kvm.ko does\n", kp->name);
	return -EPERM;
}

static int kvm_amd_param_get(char *buf, const struct kernel_param *kp)
{
	s64 v = 0;
	int kind = tdxkvm_amd_param(kp->name, &v);

	if (kind < 0)
		return kind;
	if (kind == TDXKVM_AMD_PARAM_BOOL)
		return sysfs_emit(buf, "%c\n", v ? 'Y' : 'N');
	return sysfs_emit(buf, "%lld\n", v);
}

static const struct kernel_param_ops kvm_amd_param_ops = {
	.set = kvm_amd_param_set,
	.get = kvm_amd_param_get,
};

#define KVM_AMD_PARAM(name) module_param_cb(name, &kvm_amd_param_ops, NULL, 0444)

/* Upstream 6.12 svm.c, avic.c and sev.c, in their order. */
KVM_AMD_PARAM(pause_filter_thresh);
KVM_AMD_PARAM(pause_filter_count);
KVM_AMD_PARAM(npt);
KVM_AMD_PARAM(nested);
KVM_AMD_PARAM(nrips);
KVM_AMD_PARAM(vls);
KVM_AMD_PARAM(vgif);
KVM_AMD_PARAM(lbrv);
KVM_AMD_PARAM(tsc_scaling);
KVM_AMD_PARAM(avic);
KVM_AMD_PARAM(dump_invalid_vmcb);
KVM_AMD_PARAM(intercept_smi);
KVM_AMD_PARAM(vnmi);
KVM_AMD_PARAM(force_avic);
KVM_AMD_PARAM(sev);
KVM_AMD_PARAM(sev_es);
KVM_AMD_PARAM(sev_snp);
KVM_AMD_PARAM(debug_swap);

/* Every parameter must be one kvm.ko answers, and the SVM backend must be up. */
static int __init kvm_amd_init(void)
{
	unsigned int i;

	for (i = 0; i < THIS_MODULE->num_kp; i++) {
		s64 v;
		int r = tdxkvm_amd_param(THIS_MODULE->kp[i].name, &v);

		if (r < 0) {
			pr_err("kvm_amd: kvm.ko cannot answer %s (%d)\n", THIS_MODULE->kp[i].name, r);
			return r;
		}
	}
	return 0;
}

static void __exit kvm_amd_exit(void)
{
}

module_init(kvm_amd_init);
module_exit(kvm_amd_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kvm_amd's parameters for tdx-kvm-rs's kvm.ko (its SVM backend is inside kvm.ko)");
