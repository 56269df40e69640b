// SPDX-License-Identifier: GPL-2.0-only
//! System attributes on `/dev/kvm` (`KVM_CAP_SYS_ATTRIBUTES`): `KVM_HAS_DEVICE_ATTR` /
//! `KVM_GET_DEVICE_ATTR` as upstream x86 `kvm_x86_dev_has_attr` / `kvm_x86_dev_get_attr`
//! (arch/x86/kvm/x86.c). Group 0 has one attribute, `KVM_X86_XCOMP_GUEST_SUPP` (the XSAVE
//! features a guest may be given, `kvm_caps.supported_xcr0`); every other group or attribute
//! is `ENXIO` (kvm_amd's `dev_get_attr` knows only the SEV group, and SEV is off). The flags
//! field is not looked at, as upstream.

use crate::vcpu_state::read_pod;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
pub(crate) use x86::uapi::ioctl::{KVM_GET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR};
use x86::uapi::KvmDeviceAttr;

/// `KVM_CAP_SYS_ATTRIBUTES`.
pub(crate) const KVM_CAP_SYS_ATTRIBUTES: u64 = 209;
/// `KVM_X86_XCOMP_GUEST_SUPP` (arch/x86/include/uapi/asm/kvm.h).
const KVM_X86_XCOMP_GUEST_SUPP: u64 = 0;

/// `__kvm_x86_dev_get_attr`.
fn value(a: &KvmDeviceAttr) -> Result<u64> {
    match (a.group, a.attr) {
        (0, KVM_X86_XCOMP_GUEST_SUPP) => Ok(crate::vcpu_state::module_supported_xcr0()),
        _ => Err(ENXIO),
    }
}

/// The two ioctls on `/dev/kvm`: `EFAULT` for an unreadable structure (or, for GET, an
/// unwritable `addr`), `ENXIO` for an unknown attribute.
pub(crate) fn ioctl(cmd: u32, arg: usize) -> Result<isize> {
    let a: KvmDeviceAttr = read_pod(arg)?;
    let v = value(&a)?;
    if cmd == KVM_GET_DEVICE_ATTR {
        UserSlice::new(a.addr as usize, 8)
            .writer()
            .write_slice(&v.to_ne_bytes())?;
    }
    Ok(0)
}
