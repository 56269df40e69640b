// SPDX-License-Identifier: GPL-2.0-only
//! `/dev/kvm` system ioctls and VM-fd ioctls, with KVM's numbers, structures and errnos.

use crate::abi::*;
use crate::backend::{Mode, TdxRef};
use crate::glue;
use crate::stats;
use crate::vm::Vm;
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

/// `KVM_CHECK_EXTENSION`: only what really works.
fn check_extension(cap: u64) -> isize {
    match cap {
        KVM_CAP_CHECK_EXTENSION_VM | KVM_CAP_EXT_EMUL_CPUID | KVM_CAP_GET_MSR_FEATURES => 1,
        KVM_CAP_VM_TYPES => vm_types() as isize,
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
    let vm = match vm_type {
        KVM_X86_TDX_VM => Vm::new_td(tdx_backend().ok_or(EINVAL)?)?,
        _ => Vm::new_plain()?,
    };
    let vm = KBox::new(vm, GFP_KERNEL)?;
    let raw = KBox::into_raw(vm);
    stats::inc(stats::Kind::Vm);
    // SAFETY: on success the new file owns `raw` and hands it back in `tdxkvm_rust_vm_release`.
    let fd = unsafe { glue::tdxkvm_vm_fd(raw.cast()) };
    if fd < 0 {
        // SAFETY: no file took it; we still own it.
        drop(unsafe { KBox::from_raw(raw) });
        stats::dec(stats::Kind::Vm);
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// Copies a `T` in from user address `uaddr`: `EFAULT` if it cannot be read.
fn read_user<T: FromBytes>(uaddr: usize) -> Result<T> {
    UserSlice::new(uaddr, size_of::<T>()).reader().read()
}

/// Copies `value` out to user address `uaddr`: `EFAULT` if it cannot be written.
fn write_user<T: AsBytes>(uaddr: usize, value: &T) -> Result {
    UserSlice::new(uaddr, size_of::<T>()).writer().write(value)
}

/// Host CPUID through the instruction.
fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// `KVM_GET_SUPPORTED_CPUID`. No vCPU runs yet, so no feature is advertised: the vendor,
/// the family/model signature and the leaf ranges only (none of them indexed: `flags` 0).
fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = read_user(arg)?;
    let (_, vb, vc, vd) = cpuid(0);
    let (sig, ..) = cpuid(1);
    let entries = [
        KvmCpuidEntry2 {
            function: 0,
            eax: 1,
            ebx: vb,
            ecx: vc,
            edx: vd,
            ..Default::default()
        },
        KvmCpuidEntry2 {
            function: 1,
            eax: sig,
            ..Default::default()
        },
        KvmCpuidEntry2 {
            function: 0x8000_0000,
            eax: 0x8000_0000,
            ..Default::default()
        },
    ];
    if hdr.nent < 1 {
        return Err(E2BIG);
    }
    let nent = hdr.nent.min(KVM_MAX_CPUID_ENTRIES);
    if (nent as usize) < entries.len() {
        return Err(E2BIG);
    }
    // Entries first, then the header (as read, with `nent` updated), as KVM copies them.
    let body = arg.checked_add(size_of::<KvmCpuid2>()).ok_or(EFAULT)?;
    write_user(body, &entries)?;
    let out = KvmCpuid2 {
        nent: entries.len() as u32,
        ..hdr
    };
    write_user(arg, &out)?;
    Ok(0)
}

/// `KVM_GET_MSR_INDEX_LIST`: the MSRs userspace must save and restore. No vCPU state exists
/// yet, so the list is empty; `nmsrs` is always written back, as KVM does.
fn get_msr_index_list(arg: usize) -> Result<isize> {
    read_user::<KvmMsrList>(arg)?;
    let out = KvmMsrList { nmsrs: 0 };
    write_user(arg, &out)?;
    Ok(0)
}

/// `KVM_GET_EMULATED_CPUID`: the CPUID bits KVM emulates beyond the host's. Nothing is
/// emulated (no vCPU runs yet): zero entries, after KVM's own checks.
fn get_emulated_cpuid(arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = read_user(arg)?;
    if hdr.nent < 1 {
        return Err(E2BIG);
    }
    let out = KvmCpuid2 { nent: 0, ..hdr };
    write_user(arg, &out)?;
    Ok(0)
}

/// `KVM_GET_MSRS` on `/dev/kvm` reads feature MSRs; there are none (the feature list is
/// empty), so the first entry fails and 0 entries are processed, as KVM's `msr_io` answers.
fn get_feature_msrs(arg: usize) -> Result<isize> {
    let max = size_of::<KvmMsrs>() + MAX_IO_MSRS as usize * size_of::<KvmMsrEntry>();
    let mut r = UserSlice::new(arg, max).reader();
    let hdr: KvmMsrs = r.read()?;
    if hdr.nmsrs >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    // KVM copies the entries in before processing them: an unreadable array is EFAULT.
    for _ in 0..hdr.nmsrs {
        r.read::<KvmMsrEntry>()?;
    }
    Ok(0)
}

fn dev_ioctl(cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        KVM_GET_API_VERSION if arg != 0 => Err(EINVAL),
        KVM_GET_API_VERSION => Ok(KVM_API_VERSION),
        KVM_CREATE_VM => create_vm(arg),
        KVM_CHECK_EXTENSION => Ok(check_extension(arg as u64)),
        KVM_GET_VCPU_MMAP_SIZE if arg != 0 => Err(EINVAL),
        // `struct kvm_run`, the PIO data page and the coalesced-MMIO ring, as x86 KVM.
        KVM_GET_VCPU_MMAP_SIZE => Ok(3 * 4096),
        KVM_GET_SUPPORTED_CPUID => get_supported_cpuid(arg),
        KVM_GET_MSR_INDEX_LIST | KVM_GET_MSR_FEATURE_INDEX_LIST => get_msr_index_list(arg),
        KVM_GET_EMULATED_CPUID => get_emulated_cpuid(arg),
        KVM_GET_MSRS => get_feature_msrs(arg),
        _ => Err(EINVAL),
    }
}

/// System ioctl entry point (from the glue's `unlocked_ioctl`).
#[no_mangle]
pub(crate) extern "C" fn tdxkvm_rust_dev_ioctl(cmd: u32, arg: usize) -> isize {
    dev_ioctl(cmd, arg).unwrap_or_else(errno)
}

/// VM-fd ioctl entry point. `vm` is the file's `Vm` (set by `create_vm`, alive until release,
/// which cannot run while an ioctl is in flight on the file); no VM ioctl needs it yet.
#[no_mangle]
pub(crate) extern "C" fn tdxkvm_rust_vm_ioctl(_vm: *mut c_void, cmd: u32, arg: usize) -> isize {
    match cmd {
        KVM_CHECK_EXTENSION => check_extension(arg as u64),
        // Unknown VM ioctls are ENOTTY, as x86 KVM's kvm_arch_vm_ioctl answers.
        _ => errno(ENOTTY),
    }
}

/// VM-fd release: tears the VM down and frees everything it held.
///
/// # Safety
///
/// `vm` is the `private_data` of a VM file, released exactly once.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vm_release(vm: *mut c_void) {
    // SAFETY: created by `KBox::into_raw` in `create_vm`; the file gives it back once.
    drop(unsafe { KBox::from_raw(vm as *mut Vm) });
    stats::dec(stats::Kind::Vm);
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
