// SPDX-License-Identifier: GPL-2.0-only
//! `/dev/kvm` system ioctls and VM-fd ioctls, with KVM's numbers, structures and errnos.

use crate::abi::*;
use crate::backend::{Mode, TdxRef};
use crate::glue;
use crate::stats;
use crate::vm::{Vm, KVM_MAX_VCPUS, KVM_MAX_VCPU_IDS};
use core::ffi::c_void;
use core::mem::size_of;
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserSlice;

static MODE: AtomicU8 = AtomicU8::new(0);

/// Records the backend chosen at load.
pub(crate) fn set_mode(m: Mode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        m if m == Mode::Emulated as u8 => Mode::Emulated,
        m if m == Mode::Hw as u8 => Mode::Hw,
        _ => Mode::Off,
    }
}

/// The TDX backend TDs are created on, if one is up.
pub(crate) fn tdx_backend() -> Option<TdxRef> {
    TdxRef::get(mode())
}

fn tdx_active() -> bool {
    tdx_backend().is_some()
}

/// Machine types `KVM_CREATE_VM` accepts, as a `KVM_CAP_VM_TYPES` bit mask.
fn vm_types() -> u64 {
    let mut m = 1 << KVM_X86_DEFAULT_VM | 1 << KVM_X86_SW_PROTECTED_VM;
    if tdx_active() {
        m |= 1 << KVM_X86_TDX_VM;
    }
    m
}

/// `KVM_CHECK_EXTENSION` on `/dev/kvm` (`vm` None) or a VM fd: only what really works.
fn check_extension(cap: u64, vm: Option<&Vm>) -> isize {
    if let Some(r) = crate::memslot::check_extension(cap, vm) {
        return r;
    }
    if let Some(r) = crate::exits::check_extension(cap) {
        return r;
    }
    // HOOK(misc): KVM_CAP_DEVICE_CTRL.
    if let Some(r) = crate::device::check_extension(cap) {
        return r;
    }
    if let Some(r) = crate::vcpu_state::check_extension(cap, vm) {
        return r;
    }
    if let Some(r) = crate::clock::check_extension(cap) {
        return r; // HOOK(clock)
    }
    if let Some(r) = crate::irq::check_extension(cap) {
        return r; // HOOK(irqroute)
    }
    if let Some(r) = crate::irq::lapic::check_extension(cap) {
        return r; // HOOK(irqmod)
    }
    if let Some(r) = crate::vm_abi::check_extension(cap) {
        return r; // HOOK(abi)
    }
    if let Some(r) = crate::vm_small::check_extension(cap) {
        return r; // HOOK(entry)
    }
    if let Some(r) = crate::ud::check_extension(cap) {
        return r; // HOOK(ud): KVM_CAP_DISABLE_QUIRKS(2)
    }
    match cap {
        KVM_CAP_CHECK_EXTENSION_VM
        | KVM_CAP_EXT_EMUL_CPUID
        | KVM_CAP_GET_MSR_FEATURES
        | KVM_CAP_IMMEDIATE_EXIT
        | KVM_CAP_BINARY_STATS_FD
        | KVM_CAP_ENABLE_CAP_VM
        | KVM_CAP_SYNC_MMU
        | KVM_CAP_DESTROY_MEMORY_REGION_WORKS
        | KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
        | KVM_CAP_GET_TSC_KHZ => 1,
        // HOOK(hostile): /dev/kvm's device attributes (src/sys_attr.rs).
        crate::sys_attr::KVM_CAP_SYS_ATTRIBUTES => 1,
        KVM_CAP_VM_TYPES => vm_types() as isize,
        KVM_CAP_NR_VCPUS => {
            // SAFETY: reads num_online_cpus(); no preconditions.
            let online = unsafe { glue::tdxkvm_num_online_cpus() };
            online.min(KVM_MAX_VCPUS) as isize
        }
        // A TD's limit is its own (tdx-vm-abi.md §1, upstream 6.16: kvm->max_vcpus on a VM fd).
        KVM_CAP_MAX_VCPUS => vm.map_or(KVM_MAX_VCPUS, |v| v.max_vcpus()) as isize,
        KVM_CAP_MAX_VCPU_ID => KVM_MAX_VCPU_IDS as isize,
        _ => 0,
    }
}

fn errno(e: Error) -> isize {
    e.to_errno() as isize
}

fn create_vm(vm_type: usize) -> Result<isize> {
    if vm_type >= 64 || vm_types() & (1 << vm_type) == 0 {
        return Err(EINVAL);
    }
    let td = match vm_type {
        KVM_X86_TDX_VM => Some(tdx_backend().ok_or(EINVAL)?),
        _ => None,
    };
    let raw = kernel::sync::Arc::into_raw(Vm::create(vm_type, td)?);
    // SAFETY: on success the new file owns the reference `raw` and gives it back in
    // `tdxkvm_rust_vm_release`.
    let fd = unsafe { glue::tdxkvm_vm_fd(raw as *mut c_void) };
    if fd < 0 {
        // SAFETY: no file took the reference; it is still ours.
        unsafe { Vm::put_raw(raw) };
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// Copies a `T` in from user address `uaddr`: `EFAULT` if it cannot be read.
fn read_user<T: FromBytes>(uaddr: usize) -> Result<T> {
    UserSlice::new(uaddr, size_of::<T>()).reader().read()
}

/// Copies `value` out to user address `uaddr`: `EFAULT` if it cannot be written.
#[allow(dead_code)] // HOOK(ud): its user (KVM_GET_EMULATED_CPUID) moved to crate::ud
fn write_user<T: AsBytes>(uaddr: usize, value: &T) -> Result {
    UserSlice::new(uaddr, size_of::<T>()).writer().write(value)
}

fn dev_ioctl(cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        KVM_GET_API_VERSION if arg != 0 => Err(EINVAL),
        KVM_GET_API_VERSION => Ok(KVM_API_VERSION),
        KVM_CREATE_VM => create_vm(arg),
        KVM_CHECK_EXTENSION => Ok(check_extension(arg as u64, None)),
        KVM_GET_VCPU_MMAP_SIZE if arg != 0 => Err(EINVAL),
        // `struct kvm_run`, the PIO data page and the coalesced-MMIO ring, as x86 KVM.
        KVM_GET_VCPU_MMAP_SIZE => Ok(3 * 4096),
        KVM_GET_SUPPORTED_CPUID => crate::vcpu_state::get_supported_cpuid(arg),
        KVM_GET_MSR_INDEX_LIST => crate::vcpu_state::get_msr_list(arg, false),
        KVM_GET_MSR_FEATURE_INDEX_LIST => crate::vcpu_state::get_msr_list(arg, true),
        KVM_GET_EMULATED_CPUID => crate::ud::get_emulated_cpuid(arg), // HOOK(ud)
        KVM_GET_MSRS => crate::vcpu_state::get_feature_msrs(arg),
        // HOOK(hostile): upstream kvm_x86_dev_has_attr / kvm_x86_dev_get_attr.
        crate::sys_attr::KVM_HAS_DEVICE_ATTR | crate::sys_attr::KVM_GET_DEVICE_ATTR => {
            crate::sys_attr::ioctl(cmd, arg)
        }
        crate::mce::KVM_X86_GET_MCE_CAP_SUPPORTED => crate::mce::get_mce_cap_supported(arg), // HOOK(fix1)
        _ => Err(EINVAL),
    }
}

/// System ioctl entry point (from the glue's `unlocked_ioctl`).
#[no_mangle]
pub(crate) extern "C" fn tdxkvm_rust_dev_ioctl(cmd: u32, arg: usize) -> isize {
    dev_ioctl(cmd, arg).unwrap_or_else(errno)
}

fn vm_ioctl(vm: &Vm, cmd: u32, arg: usize) -> Result<isize> {
    // Upstream kvm_vm_ioctl: only the process that created the VM may use it, and not once the
    // VM is dead (bugged).
    if !vm.usable_by_current() {
        return Err(EIO);
    }
    if let Some(r) = crate::clock::vm_ioctl(vm, cmd, arg) {
        return r; // HOOK(clock): KVM_GET_CLOCK, KVM_SET_CLOCK
    }
    if let Some(r) = crate::irq::vm_ioctl(vm, cmd, arg) {
        return r; // HOOK(irqroute)
    }
    if let Some(r) = crate::irq::lapic::vm_ioctl(vm, cmd, arg) {
        return r; // HOOK(irqmod)
    }
    match cmd {
        KVM_CHECK_EXTENSION => Ok(check_extension(arg as u64, Some(vm))),
        KVM_CREATE_VCPU => crate::vcpu::create(vm, arg),
        KVM_ENABLE_CAP => enable_cap(vm, read_user(arg)?),
        KVM_GET_STATS_FD => crate::stats_fd::vm_stats_fd(vm),
        KVM_SET_TSC_KHZ => vm.set_default_tsc_khz(arg as u32).map(|()| 0),
        KVM_GET_TSC_KHZ => Ok(vm.default_tsc_khz() as isize),
        tdx::kvm::uapi::KVM_MEMORY_ENCRYPT_OP => crate::tdx_vm::vm_op(vm, arg),
        crate::mem_abi::KVM_SET_USER_MEMORY_REGION => {
            crate::memslot::set_user_memory_region(vm, memcore::memslot::RegionIoctl::V1, arg)
        }
        crate::mem_abi::KVM_SET_USER_MEMORY_REGION2 => {
            crate::memslot::set_user_memory_region(vm, memcore::memslot::RegionIoctl::V2, arg)
        }
        crate::mem_abi::KVM_CREATE_GUEST_MEMFD => crate::gmem::create(vm, arg),
        crate::mem_abi::KVM_SET_MEMORY_ATTRIBUTES => crate::attributes::set(vm, arg),
        crate::exits::KVM_X86_SET_MSR_FILTER => crate::exits::set_msr_filter(vm, arg),
        crate::exits::KVM_REGISTER_COALESCED_MMIO => crate::exits::register_coalesced(vm, arg),
        crate::exits::KVM_UNREGISTER_COALESCED_MMIO => crate::exits::unregister_coalesced(vm, arg),
        crate::exits::KVM_IOEVENTFD => crate::exits::ioeventfd(vm, arg),
        // HOOK(misc): KVM_CREATE_DEVICE.
        crate::device::KVM_CREATE_DEVICE => crate::device::create(vm, arg),
        crate::mem_abi::KVM_GET_DIRTY_LOG => crate::dirty::get_dirty_log(vm, arg),
        crate::mem_abi::KVM_CLEAR_DIRTY_LOG => crate::dirty::clear_dirty_log(vm, arg),
        c if crate::vm_small::is_ioctl(c) => crate::vm_small::ioctl(vm, c, arg), // HOOK(entry)
        // Unknown VM ioctls are ENOTTY, as x86 KVM's kvm_arch_vm_ioctl answers.
        _ => Err(ENOTTY),
    }
}

/// `KVM_ENABLE_CAP` on a VM fd (upstream `kvm_vm_ioctl_enable_cap_generic`, then x86
/// `kvm_vm_ioctl_enable_cap`): the one generic capability here is
/// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`; everything else takes the x86 path: flags must be 0,
/// unknown capabilities are EINVAL.
fn enable_cap(vm: &Vm, cap: KvmEnableCap) -> Result<isize> {
    // The generic capabilities first (upstream kvm_vm_ioctl_enable_cap_generic).
    if u64::from(cap.cap) == crate::mem_abi::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 {
        return crate::dirty::enable_manual_protect(vm, cap.flags, cap.args[0]);
    }
    if cap.flags != 0 {
        return Err(EINVAL);
    }
    match u64::from(cap.cap) {
        KVM_CAP_MAX_VCPU_ID => {
            let want = cap.args[0];
            if want > u64::from(KVM_MAX_VCPU_IDS) {
                return Err(EINVAL);
            }
            let mut l = vm.lock();
            // HOOK(irqmod): the boot vCPU id (KVM_SET_BOOT_CPU_ID) may not be above `want`.
            // Setting the value already in force succeeds; once set (explicitly, or by the first
            // vCPU), any other value is EINVAL.
            if u64::from(crate::irq::lapic::boot_cpu_id(vm)) > want {
                Err(EINVAL)
            } else if u64::from(l.max_vcpu_ids) == want {
                Ok(0)
            } else if l.max_vcpu_ids == 0 {
                l.max_vcpu_ids = want as u32;
                Ok(0)
            } else {
                Err(EINVAL)
            }
        }
        c if crate::exits::enables(c) => crate::exits::enable_cap(vm, &cap),
        c if crate::ud::enables(c) => crate::ud::enable_cap(vm, c, cap.args[0]), // HOOK(ud)
        c if crate::clock::enables(c) => crate::clock::enable_cap(vm, cap.args[0]), // HOOK(clock)
        c if crate::vm_abi::enables(c) => crate::vm_abi::enable_cap(vm.abi(), c, cap.args[0]), // HOOK(abi)
        // HOOK(irqroute)
        crate::irq::KVM_CAP_SPLIT_IRQCHIP => crate::irq::enable_split_irqchip(vm, cap.args[0]),
        // HOOK(irqmod)
        c @ (crate::irq::lapic::KVM_CAP_X2APIC_API
        | crate::irq::lapic::KVM_CAP_X86_APIC_BUS_CYCLES_NS) => {
            crate::irq::lapic::enable_cap(vm, c, cap.args[0])
        }
        _ => Err(EINVAL),
    }
}

/// VM-fd ioctl entry point.
///
/// # Safety
///
/// `vm` is the file's `private_data`: a VM reference the file holds until release, which
/// cannot run while an ioctl is in flight on the file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vm_ioctl(
    vm: *mut c_void,
    cmd: u32,
    arg: usize,
) -> isize {
    // SAFETY: the caller's contract.
    let vm = unsafe { Vm::from_file(vm) };
    vm_ioctl(vm, cmd, arg).unwrap_or_else(errno)
}

/// VM-fd release: gives the file's reference back; the last reference tears the VM down and
/// frees everything it held.
///
/// # Safety
///
/// `vm` is the `private_data` of a VM file, released exactly once.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vm_release(vm: *mut c_void) {
    // SAFETY: the reference `create_vm` gave the file; given back once.
    unsafe { Vm::put_raw(vm as *const Vm) };
}

/// debugfs `seamcall_probe`: issues one harmless SEAMCALL on this CPU and describes the
/// answer (see [`crate::hw::probe`]); fills `buf`, returns the length.
///
/// # Safety
///
/// `buf` is valid for `len` bytes of writes, and nothing else accesses those bytes until this
/// returns.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_seamcall_probe(buf: *mut u8, len: usize) -> usize {
    // SAFETY: the caller's contract: `buf` is valid for `len` bytes of writes and nothing else
    // accesses it during the call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    stats::Buf::fill(out, |b| crate::hw::probe(b))
}

/// debugfs `stats`: fills `buf`, returns the length.
///
/// # Safety
///
/// `buf` is valid for `len` bytes of writes, and nothing else accesses those bytes until this
/// returns.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_stats(buf: *mut u8, len: usize) -> usize {
    // SAFETY: the caller's contract: `buf` is valid for `len` bytes of writes and nothing else
    // accesses it during the call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    stats::Buf::fill(out, stats::render)
}
