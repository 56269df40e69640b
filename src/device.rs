// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_CREATE_DEVICE` and the device fd (upstream `kvm_ioctl_create_device`,
//! `kvm_device_ioctl`), with the one device type x86 KVM registers: the kvm-vfio pseudo device
//! (`KVM_DEV_TYPE_VFIO`, upstream `virt/kvm/vfio.c`).
//!
//! - `KVM_CREATE_DEVICE`: an unknown or unregistered type is `ENODEV`; with
//!   `KVM_CREATE_DEVICE_TEST` a known type answers 0 and nothing is created (the structure is
//!   copied back unchanged); else one kvm-vfio device per VM (`EBUSY` while one exists), an fd
//!   "kvm-vfio" that holds the VM, its number written back into `fd`.
//! - The device fd: `EIO` from another process or on a dead VM; `KVM_SET_DEVICE_ATTR` and
//!   `KVM_HAS_DEVICE_ATTR` copy `struct kvm_device_attr` in (`EFAULT`), `KVM_GET_DEVICE_ATTR` is
//!   `EPERM` (kvm-vfio has no get), anything else `ENOTTY`.
//! - kvm-vfio: group `KVM_DEV_VFIO_FILE` (= the old `KVM_DEV_VFIO_GROUP`), attributes
//!   `KVM_DEV_VFIO_FILE_ADD` / `_DEL` (has_attr 0; anything else `ENXIO`). The fd is read from
//!   `addr` (`EFAULT`); a number that is no open file is `EBADF`; ADD of a file that is not a
//!   VFIO group or device file is `EINVAL` — in a kernel without VFIO (this project's test
//!   kernel) every file, as upstream answers there; DEL of a file not added is `ENOENT`.
//!
//! What a module cannot do honestly: binding a real VFIO file to the VM (upstream tells VFIO its
//! KVM with `vfio_file_set_kvm`, counts assigned devices for interrupt bypass and tracks
//! non-coherent DMA for WBINVD and memory types). ADD of a valid VFIO file is therefore
//! `EOPNOTSUPP`, never a success that does nothing; no file is ever added, so DEL is `ENOENT`
//! for every open file.

use crate::vcpu_state::read_pod;
use crate::vm::Vm;
use core::ffi::{c_char, c_int, c_void};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserSlice;
use x86::uapi::ioctl::{KVM_GET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR, KVM_SET_DEVICE_ATTR};
use x86::uapi::KvmDeviceAttr;

extern "C" {
    fn tdxkvm_device_fd(name: *const c_char, dev: *mut c_void) -> c_int;
    fn tdxkvm_vfio_file_kind(fd: c_int) -> c_int;
}

const KVMIO: u32 = 0xAE;

/// `struct kvm_create_device`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KvmCreateDevice {
    type_: u32,
    fd: u32,
    flags: u32,
}

const _: () = {
    assert!(size_of::<KvmCreateDevice>() == 12);
    assert!(offset_of!(KvmCreateDevice, fd) == 4);
    assert!(offset_of!(KvmCreateDevice, flags) == 8);
};

// SAFETY: `#[repr(C)]` structures of integers without padding (asserted above): every bit
// pattern is valid and there is no interior mutability.
unsafe impl FromBytes for KvmCreateDevice {}
// SAFETY: as above; no padding bytes.
unsafe impl AsBytes for KvmCreateDevice {}

/// `_IOWR(KVMIO, 0xe0, struct kvm_create_device)`.
pub(crate) const KVM_CREATE_DEVICE: u32 =
    (3 << 30) | ((size_of::<KvmCreateDevice>() as u32) << 16) | (KVMIO << 8) | 0xe0;
const _: () = {
    assert!(KVM_CREATE_DEVICE == 0xc00c_aee0);
};

/// `KVM_CAP_DEVICE_CTRL`.
const KVM_CAP_DEVICE_CTRL: u64 = 89;
/// `KVM_CREATE_DEVICE_TEST`.
const KVM_CREATE_DEVICE_TEST: u32 = 1;
/// `KVM_DEV_TYPE_VFIO`.
const KVM_DEV_TYPE_VFIO: u32 = 4;
/// `KVM_DEV_VFIO_FILE` (= `KVM_DEV_VFIO_GROUP`).
const KVM_DEV_VFIO_FILE: u32 = 1;
/// `KVM_DEV_VFIO_FILE_ADD`.
const KVM_DEV_VFIO_FILE_ADD: u64 = 1;
/// `KVM_DEV_VFIO_FILE_DEL`.
const KVM_DEV_VFIO_FILE_DEL: u64 = 2;

/// `KVM_CAP_PCI_SEGMENT`: the `segnr` field of the legacy device-assignment ioctls
/// (`KVM_ASSIGN_PCI_DEVICE`). Those ioctls left upstream in 4.12 (`KVM_CAP_DEVICE_ASSIGNMENT`
/// is 0 there and here, the ioctl `ENOTTY` on both); 6.12 still reports this capability, and
/// nothing is behind it on either side, so the answer is upstream's.
const KVM_CAP_PCI_SEGMENT: u64 = 47;

/// `KVM_CHECK_EXTENSION` for the capabilities of this file (`None`: not ours).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    matches!(cap, KVM_CAP_DEVICE_CTRL | KVM_CAP_PCI_SEGMENT).then_some(1)
}

/// The VM's devices (`kvm->devices`): at most one kvm-vfio.
#[derive(Default)]
pub(crate) struct VmDevices {
    vfio: AtomicBool,
}

impl VmDevices {
    /// No devices.
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

/// A kvm-vfio device: the device fd's `private_data`, holding a VM reference.
struct Device {
    vm: *const Vm,
}

/// `KVM_CREATE_DEVICE` (VM fd).
pub(crate) fn create(vm: &Vm, arg: usize) -> Result<isize> {
    let mut cd: KvmCreateDevice = UserSlice::new(arg, size_of::<KvmCreateDevice>())
        .reader()
        .read()?;
    // kvm_device_ops_table: only KVM_DEV_TYPE_VFIO is registered on x86.
    if cd.type_ != KVM_DEV_TYPE_VFIO {
        return Err(ENODEV);
    }
    if cd.flags & KVM_CREATE_DEVICE_TEST == 0 {
        // kvm_vfio_create: only one per VM (checked under kvm->lock upstream).
        if vm
            .devices()
            .vfio
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        let dev = match KBox::new(Device { vm: vm.get_raw() }, GFP_KERNEL) {
            Ok(d) => d,
            Err(_) => {
                vm.devices().vfio.store(false, Ordering::Release);
                return Err(ENOMEM);
            }
        };
        let raw = KBox::into_raw(dev);
        // SAFETY: a NUL-terminated name; `raw` is a live device the file owns on success.
        let fd = unsafe { tdxkvm_device_fd(c"kvm-vfio".as_ptr(), raw.cast()) };
        if fd < 0 {
            // SAFETY: no file took it; still ours, released once here.
            unsafe { release(raw) };
            return Err(Error::from_errno(fd));
        }
        cd.fd = fd as u32;
    }
    // Upstream copies the structure back (with the fd); a failure leaves the fd installed.
    UserSlice::new(arg, size_of::<KvmCreateDevice>())
        .writer()
        .write(&cd)?;
    Ok(0)
}

/// Drops a device: the VM may have a kvm-vfio again, and the device's VM reference goes.
///
/// # Safety
///
/// `dev` came from `KBox::into_raw` in [`create`] and is released once.
unsafe fn release(dev: *mut Device) {
    // SAFETY: the caller's contract.
    let d = unsafe { KBox::from_raw(dev) };
    // SAFETY: `d.vm` is the counted reference `create` took; alive until put below.
    unsafe { (*d.vm).devices().vfio.store(false, Ordering::Release) };
    // SAFETY: that reference, given back once.
    unsafe { Vm::put_raw(d.vm) };
}

/// Device-fd release.
///
/// # Safety
///
/// `dev` is the `private_data` of a device file, released exactly once.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_device_release(dev: *mut c_void) {
    // SAFETY: the caller's contract.
    unsafe { release(dev.cast()) };
}

/// Device-fd ioctls.
///
/// # Safety
///
/// `dev` is the `private_data` of a live device file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_device_ioctl(
    dev: *mut c_void,
    cmd: u32,
    arg: usize,
) -> isize {
    // SAFETY: the file holds the device and, through it, a VM reference.
    let vm = unsafe { &*(*dev.cast::<Device>()).vm };
    device_ioctl(vm, cmd, arg).unwrap_or_else(|e| e.to_errno() as isize)
}

fn device_ioctl(vm: &Vm, cmd: u32, arg: usize) -> Result<isize> {
    if !vm.usable_by_current() {
        return Err(EIO);
    }
    match cmd {
        KVM_SET_DEVICE_ATTR => vfio_set_attr(&read_pod(arg)?).map(|()| 0),
        // kvm-vfio has no get_attr: EPERM before anything is copied.
        KVM_GET_DEVICE_ATTR => Err(EPERM),
        KVM_HAS_DEVICE_ATTR => {
            let a: KvmDeviceAttr = read_pod(arg)?;
            match (a.group, a.attr) {
                (KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD | KVM_DEV_VFIO_FILE_DEL) => Ok(0),
                _ => Err(ENXIO),
            }
        }
        _ => Err(ENOTTY),
    }
}

/// `kvm_vfio_set_attr`.
fn vfio_set_attr(a: &KvmDeviceAttr) -> Result {
    if a.group != KVM_DEV_VFIO_FILE
        || !matches!(a.attr, KVM_DEV_VFIO_FILE_ADD | KVM_DEV_VFIO_FILE_DEL)
    {
        return Err(ENXIO);
    }
    let fd: i32 = UserSlice::new(a.addr as usize, size_of::<i32>())
        .reader()
        .read()?;
    // SAFETY: looks the number up in the caller's file table and drops the reference again.
    let kind = unsafe { tdxkvm_vfio_file_kind(fd) };
    match (kind, a.attr) {
        (0, _) => Err(EBADF),
        (_, KVM_DEV_VFIO_FILE_DEL) => Err(ENOENT),
        (1, _) => Err(EINVAL),
        _ => Err(crate::vcpu::eopnotsupp()),
    }
}
