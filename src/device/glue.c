// SPDX-License-Identifier: GPL-2.0-only
/*
 * Thin glue for KVM_CREATE_DEVICE (src/device.rs): the device file and the VFIO file check.
 * All logic is in Rust.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>

/* Called from Rust (src/device.rs). */
int tdxkvm_device_fd(const char *name, void *dev);
int tdxkvm_vfio_file_kind(int fd);

/* Defined in Rust (src/device.rs). */
long tdxkvm_rust_device_ioctl(void *dev, unsigned int cmd, unsigned long arg);
void tdxkvm_rust_device_release(void *dev);

static long device_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return tdxkvm_rust_device_ioctl(f->private_data, cmd, arg);
}

static int device_release(struct inode *inode, struct file *f)
{
	tdxkvm_rust_device_release(f->private_data);
	return 0;
}

static const struct file_operations device_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = device_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = device_release,
	.llseek = noop_llseek,
};

/* A new device fd named `name`; on success the file owns `dev` until release. */
int tdxkvm_device_fd(const char *name, void *dev)
{
	return anon_inode_getfd(name, &device_fops, dev, O_RDWR | O_CLOEXEC);
}

/*
 * What `fd` is for KVM_DEV_VFIO_FILE: 0 no open file (EBADF), 1 an open file that is not a VFIO
 * group/device file (also when this kernel has no VFIO: upstream's kvm_vfio_file_is_valid
 * answers false when symbol_get(vfio_file_is_valid) finds nothing), 2 a VFIO file.
 */
int tdxkvm_vfio_file_kind(int fd)
{
	bool (*valid)(struct file *file);
	struct file *f = fget(fd);
	int kind = 1;

	if (!f)
		return 0;
	valid = __symbol_get("vfio_file_is_valid");
	if (valid) {
		if (valid(f))
			kind = 2;
		__symbol_put("vfio_file_is_valid");
	}
	fput(f);
	return kind;
}
