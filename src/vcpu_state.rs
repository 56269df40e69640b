// SPDX-License-Identifier: GPL-2.0-only
//! The vCPU state ABI (upstream `kvm_arch_vcpu_ioctl` for x86): thin ioctl code around the
//! kernel-free rules of the `x86` crate. Every ioctl copies its structure in whole, takes the vCPU
//! mutex, applies the rule to `VcpuLocked.arch` (the backend loads that state before the next
//! entry), and copies the answer out, with upstream's errnos and order.
//!
//! Also here: what the system ioctls report about CPUID and MSRs (`KVM_GET_SUPPORTED_CPUID`,
//! the MSR lists and feature MSRs, computed from the host as upstream's `kvm_set_cpu_caps`),
//! the power-on state of a new vCPU, the guest-facing CPUID/MSR API the exit handlers call, and
//! `sync_regs` (`KVM_CAP_SYNC_REGS`) for the run loop.
//!
//! A TD vCPU's state is protected: every state ioctl answers `EINVAL` (tdx-vm-abi.md §1).

use crate::glue;
use crate::vcpu::{Vcpu, VcpuLocked};
use core::mem::size_of;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use x86::cpuid::supported::{HostCpuid, KvmCaps};
use x86::cpuid::{GuestCpu, KVM_MAX_CPUID_ENTRIES};
use x86::errno::Errno;
use x86::msr::{MsrCaps, MsrCtx, MsrFault};
use x86::state::CpuState;
use x86::uapi::ioctl::*;
use x86::uapi::*;

/// An `x86` crate errno as a kernel error.
fn err(e: Errno) -> Error {
    Error::from_errno(-e.number())
}

/// Copies a `T` in from user address `uaddr` (`EFAULT` if unreadable).
pub(crate) fn read_pod<T: Pod>(uaddr: usize) -> Result<T> {
    let mut v = T::zeroed();
    UserSlice::new(uaddr, size_of::<T>())
        .reader()
        .read_slice(v.as_bytes_mut())?;
    Ok(v)
}

/// Copies `v` out to user address `uaddr` (`EFAULT` if unwritable).
pub(crate) fn write_pod<T: Pod>(uaddr: usize, v: &T) -> Result {
    UserSlice::new(uaddr, size_of::<T>())
        .writer()
        .write_slice(v.as_bytes())
}

/// Copies `n` `T`s in from `uaddr` into a new vector (upstream `vmemdup_array_user`).
fn read_pod_array<T: Pod>(uaddr: usize, n: usize) -> Result<KVec<T>> {
    let bytes = n.checked_mul(size_of::<T>()).ok_or(EFAULT)?;
    let mut r = UserSlice::new(uaddr, bytes).reader();
    let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let mut e = T::zeroed();
        r.read_slice(e.as_bytes_mut())?;
        v.push(e, GFP_KERNEL)?;
    }
    Ok(v)
}

/// Copies `items` out to `uaddr`.
fn write_pod_array<T: Pod>(uaddr: usize, items: &[T]) -> Result {
    let bytes = items.len().checked_mul(size_of::<T>()).ok_or(EFAULT)?;
    let mut w = UserSlice::new(uaddr, bytes).writer();
    for e in items {
        w.write_slice(e.as_bytes())?;
    }
    Ok(())
}

// ---- The host and the module's capabilities ----

/// CPUID on this CPU.
fn host_cpuid_raw(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The host kernel's XCR0 (0 when the host does not run with XSAVE enabled).
/// HOOK(hostile): `kvm_caps.supported_xcr0`, for `KVM_X86_XCOMP_GUEST_SUPP` (src/sys_attr.rs).
pub(crate) fn module_supported_xcr0() -> u64 {
    let raw = host_cpuid_raw;
    KvmCaps::new(&HostCpuid::new(&raw), host_xcr0()).supported_xcr0
}

fn host_xcr0() -> u64 {
    // CPUID.1:ECX.OSXSAVE mirrors the host's CR4.OSXSAVE: XGETBV is usable only then.
    if host_cpuid_raw(1, 0)[2] & (1 << 27) == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV(0) reads XCR0; CR4.OSXSAVE is set (checked above), so it cannot fault. It
    // touches no memory.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// The host TSC.
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter (CR4.TSD is clear in the kernel); no memory.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// A host MSR, read with exception fixup (None if the read faults).
fn host_rdmsr(index: u32) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: the glue's rdmsrl_safe() writes one u64 to `v`, a valid local.
    let r = unsafe { glue::tdxkvm_rdmsr_safe(index, &mut v) };
    (r == 0).then_some(v)
}

/// Whether the host CPU takes `value` in `MSR_IA32_SPEC_CTRL` (`MsrCtx::spec_ctrl_test`).
fn spec_ctrl_test(value: u64) -> bool {
    // SAFETY: the glue writes the MSR with fault fixup and IRQs off, then restores it.
    unsafe { glue::tdxkvm_spec_ctrl_test_value(value) }
}

/// Upstream's `kvm_probe_msr_to_save` for the MSRs listed only when the host CPU reads them
/// (`IA32_FEAT_CTL`, `IA32_SPEC_CTRL`), probed once: the answer cannot change, and a faulting
/// RDMSR costs an exception on every guest MSR exit otherwise. Bit 0: probed; 1: FEAT_CTL;
/// 2: SPEC_CTRL.
static HOST_MSRS: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn probed_host_msrs() -> (bool, bool) {
    use core::sync::atomic::Ordering::Relaxed;
    let mut v = HOST_MSRS.load(Relaxed);
    if v == 0 {
        let feat_ctl = host_rdmsr(x86::msr::index::IA32_FEAT_CTL).is_some();
        let spec_ctrl = host_rdmsr(x86::msr::index::IA32_SPEC_CTRL).is_some();
        v = 1 | u8::from(feat_ctl) << 1 | u8::from(spec_ctrl) << 2;
        HOST_MSRS.store(v, Relaxed);
    }
    (v & 2 != 0, v & 4 != 0)
}

/// What the module offers, computed from this CPU (upstream computes it once at load; it
/// cannot change while the module runs, so computing it again gives the same answer).
pub(crate) struct Caps {
    /// The MSR-side facts.
    pub(crate) msr: MsrCaps,
}

/// `ARCH_CAPABILITIES` bits the host may pass on: "not affected" facts about the CPU itself
/// (RDCL_NO, SSB_NO, MDS_NO, TAA_NO, GDS_NO, RFDS_NO).
const ARCH_CAP_HOST_NO_BITS: u64 = 1 << 0 | 1 << 4 | 1 << 5 | 1 << 8 | 1 << 26 | 1 << 27;

/// The capabilities.
pub(crate) fn caps() -> Caps {
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    let kvm = KvmCaps::new(&host, host_xcr0());
    let host_arch_caps = if host.has(x86::cpuid::feat::ARCH_CAPABILITIES) {
        host_rdmsr(x86::msr::index::IA32_ARCH_CAPABILITIES).unwrap_or(0)
    } else {
        0
    };
    let (feat_ctl, spec_ctrl) = probed_host_msrs();
    // LFENCE_RDTSC as the host CPUID reports it (0x80000021 EAX bit 2).
    let lfence_serializing = host.cpuid(0x8000_0021, 0)[0] & (1 << 2) != 0;
    let msr = MsrCaps {
        limits: kvm.limits(),
        tsc_aux: kvm.has(x86::cpuid::feat::RDTSCP) || kvm.has(x86::cpuid::feat::RDPID),
        arch_capabilities: x86::msr::ARCH_CAP_PSCHANGE_MC_NO
            | host_arch_caps & ARCH_CAP_HOST_NO_BITS,
        de_cfg: if lfence_serializing {
            x86::msr::DE_CFG_LFENCE_SERIALIZE
        } else {
            0
        },
        host_ucode_rev: host_rdmsr(x86::msr::index::IA32_UCODE_REV).unwrap_or(0),
        feat_ctl,
        spec_ctrl,
    };
    Caps { msr }
}

/// `KVM_CHECK_EXTENSION` answers for the state ABI (None: not a state capability).
pub(crate) fn check_extension(cap: u64, vm: Option<&crate::vm::Vm>) -> Option<isize> {
    Some(match cap {
        KVM_CAP_EXT_CPUID
        | KVM_CAP_MP_STATE
        | KVM_CAP_VCPU_EVENTS
        | KVM_CAP_DEBUGREGS
        | KVM_CAP_ENABLE_CAP
        | KVM_CAP_VCPU_ATTRIBUTES
        | KVM_CAP_ENFORCE_PV_FEATURE_CPUID
        | KVM_CAP_SREGS2 => 1,
        // kvm_sync_valid_fields(): none for a VM with protected state (a TD).
        KVM_CAP_SYNC_REGS if vm.is_some_and(|v| v.is_td()) => 0,
        KVM_CAP_SYNC_REGS => {
            (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS) as isize
        }
        KVM_CAP_NESTED_STATE => x86::events::NESTED_STATE_MAX_SIZE as isize,
        KVM_CAP_XSAVE => 1,
        KVM_CAP_XCRS => host_has_xsave() as isize,
        KVM_CAP_XSAVE2 => {
            // xstate_required_size(supported XCR0), at least sizeof(struct kvm_xsave).
            let raw = host_cpuid_raw;
            let host = HostCpuid::new(&raw);
            let kvm = KvmCaps::new(&host, host_xcr0());
            host.xstate_required_size(kvm.supported_xcr0, false)
                .max(KVM_XSAVE_SIZE as u32) as isize
        }
        _ => return None,
    })
}

const KVM_CAP_EXT_CPUID: u64 = 7;
const KVM_CAP_MP_STATE: u64 = 14;
const KVM_CAP_VCPU_EVENTS: u64 = 41;
const KVM_CAP_DEBUGREGS: u64 = 50;
const KVM_CAP_ENABLE_CAP: u64 = 54;
const KVM_CAP_SYNC_REGS: u64 = 74;
const KVM_CAP_VCPU_ATTRIBUTES: u64 = 127;
const KVM_CAP_NESTED_STATE: u64 = 157;
const KVM_CAP_ENFORCE_PV_FEATURE_CPUID: u64 = 190;
const KVM_CAP_SREGS2: u64 = 200;
const KVM_CAP_XSAVE: u64 = 55;
const KVM_CAP_XCRS: u64 = 56;
const KVM_CAP_XSAVE2: u64 = 208;

/// `sizeof(struct kvm_xsave)`.
const KVM_XSAVE_SIZE: usize = 4096;
/// `KVM_GET_FPU`.
const KVM_GET_FPU: u32 = 0x81a0_ae8c;
/// `KVM_SET_FPU`.
const KVM_SET_FPU: u32 = 0x41a0_ae8d;
/// `KVM_GET_XSAVE` (`_IOR(KVMIO, 0xa4, struct kvm_xsave)`).
const KVM_GET_XSAVE: u32 = 0x9000_aea4;
/// `KVM_SET_XSAVE`.
const KVM_SET_XSAVE: u32 = 0x5000_aea5;
/// `KVM_GET_XCRS` (`_IOR(KVMIO, 0xa6, struct kvm_xcrs)`).
const KVM_GET_XCRS: u32 = 0x8188_aea6;
/// `KVM_SET_XCRS`.
const KVM_SET_XCRS: u32 = 0x4188_aea7;
/// `KVM_GET_XSAVE2` (`_IOR(KVMIO, 0xcf, struct kvm_xsave)`).
const KVM_GET_XSAVE2: u32 = 0x9000_aecf;

/// Whether the host has XSAVE enabled (upstream `boot_cpu_has(X86_FEATURE_XSAVE)` with the
/// kernel using it).
fn host_has_xsave() -> bool {
    host_xcr0() != 0
}

// ---- System ioctls: supported CPUID, MSR lists, feature MSRs ----

/// `KVM_GET_SUPPORTED_CPUID` (upstream `kvm_dev_ioctl_get_cpuid`): `nent` 0 is `E2BIG`, more
/// than `KVM_MAX_CPUID_ENTRIES` is clamped; a buffer too small for the table is `E2BIG` with
/// `nent` untouched; the entries are written, then the header with the count.
pub(crate) fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = read_pod(arg)?;
    if hdr.nent < 1 {
        return Err(E2BIG);
    }
    let max = (hdr.nent as usize).min(KVM_MAX_CPUID_ENTRIES);
    let mut buf = KVec::with_capacity(max, GFP_KERNEL)?;
    for _ in 0..max {
        buf.push(KvmCpuidEntry2::default(), GFP_KERNEL)?;
    }
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    let kvm = KvmCaps::new(&host, host_xcr0());
    let n = x86::cpuid::supported::supported_cpuid(&host, &kvm, &mut buf).map_err(err)?;
    crate::pv::supported_cpuid(&mut buf[..n]); // HOOK(clock): STEAL_TIME needs sched_info
    write_pod_array(arg.wrapping_add(size_of::<KvmCpuid2>()), &buf[..n])?;
    write_pod(
        arg,
        &KvmCpuid2 {
            nent: n as u32,
            ..hdr
        },
    )?;
    Ok(0)
}

/// `KVM_GET_MSR_INDEX_LIST` / `KVM_GET_MSR_FEATURE_INDEX_LIST`: `nmsrs` is always written back
/// with the list's length; a smaller buffer is `E2BIG`, then the indices are written.
pub(crate) fn get_msr_list(arg: usize, features: bool) -> Result<isize> {
    // `struct kvm_msr_list` is `nmsrs` alone (4 bytes).
    let mut b = [0u8; 4];
    UserSlice::new(arg, 4).reader().read_slice(&mut b)?;
    let n = u32::from_ne_bytes(b);
    let c = caps();
    let mut list: KVec<u32> = KVec::new();
    if features {
        for m in x86::msr::FEATURE_LIST {
            list.push(m, GFP_KERNEL)?;
        }
    } else {
        for m in x86::msr::index_list(&c.msr) {
            list.push(m, GFP_KERNEL)?;
        }
    }
    let out = (list.len() as u32).to_ne_bytes();
    UserSlice::new(arg, 4).writer().write_slice(&out)?;
    if (n as usize) < list.len() {
        return Err(E2BIG);
    }
    let mut w = UserSlice::new(arg.wrapping_add(4), list.len() * 4).writer();
    for m in list.iter() {
        w.write_slice(&m.to_ne_bytes())?;
    }
    Ok(0)
}

/// `MAX_IO_MSRS`.
const MAX_IO_MSRS: u32 = 256;

/// Upstream `msr_io`: the header, `nmsrs` below `MAX_IO_MSRS` (else `E2BIG`), the entries
/// copied in whole (`EFAULT`), processed in order until the first failure, copied back when
/// `writeback`; returns how many were processed.
fn msr_io(
    arg: usize,
    writeback: bool,
    mut f: impl FnMut(&mut KvmMsrEntry) -> bool,
) -> Result<isize> {
    let hdr: KvmMsrs = read_pod(arg)?;
    if hdr.nmsrs >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let at = arg.wrapping_add(size_of::<KvmMsrs>());
    let mut entries: KVec<KvmMsrEntry> = read_pod_array(at, hdr.nmsrs as usize)?;
    let mut done = 0;
    for e in entries.iter_mut() {
        if !f(e) {
            break;
        }
        done += 1;
    }
    if writeback {
        write_pod_array(at, &entries)?;
    }
    Ok(done)
}

/// System `KVM_GET_MSRS`: feature MSRs.
pub(crate) fn get_feature_msrs(arg: usize) -> Result<isize> {
    let c = caps();
    msr_io(arg, true, |e| {
        match x86::msr::get_feature(&c.msr, e.index) {
            Some(v) => {
                e.data = v;
                true
            }
            None => {
                e.data = 0;
                false
            }
        }
    })
}

// ---- The vCPU's CPUID table and power-on state ----

/// The vCPU's CPUID table (`vcpu->arch.cpuid_entries`) and what the rules derive from it.
pub(crate) struct VcpuCpuid {
    /// The entries `KVM_SET_CPUID2` gave, with the runtime bits kept current.
    pub(crate) entries: KVec<KvmCpuidEntry2>,
    /// The derived model.
    pub(crate) model: GuestCpu,
}

impl VcpuCpuid {
    /// No table yet (upstream's freshly created vCPU).
    pub(crate) fn new() -> Self {
        VcpuCpuid {
            entries: KVec::new(),
            model: GuestCpu::default(),
        }
    }
}

/// Upstream `kvm_vcpu_is_reset_bsp`: the boot vCPU is id 0 (no `KVM_SET_BOOT_CPU_ID`).
fn is_bsp(id: u32) -> bool {
    id == 0
}

/// The power-on state of vCPU `id` (upstream `kvm_vcpu_reset(vcpu, false)` with SVM's
/// `init_vmcb`), with the guest TSC starting at 0 (`kvm_synchronize_tsc(vcpu, NULL)`).
pub(crate) fn power_on(id: u32) -> CpuState {
    let c = caps();
    let mut s = x86::regs::reset(is_bsp(id), &GuestCpu::default(), &c.msr);
    s.tsc_offset = 0u64.wrapping_sub(rdtsc());
    s
}

/// Refreshes the CPUID bits that mirror CR4, APIC_BASE and XCR0.
// HOOK(entry): pub(crate) for the CR4-write intercept (src/run/cr.rs).
pub(crate) fn update_cpuid_runtime(l: &mut VcpuLocked) {
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    x86::cpuid::update_runtime(
        &mut l.cpuid.entries,
        l.arch.cr4,
        l.arch.apic_base,
        l.arch.xcr0,
        &host,
    );
}

// ---- The guest-facing API for the exit handlers ----

/// The guest's `CPUID` (EAX, ECX) from the vCPU's table.
#[allow(dead_code)] // Called by the exit handlers (`exits`).
pub(crate) fn guest_cpuid(l: &VcpuLocked, eax: u32, ecx: u32) -> [u32; 4] {
    let ([a, b, c, d], _) = x86::cpuid::guest_cpuid(&l.cpuid.entries, &l.cpuid.model, eax, ecx);
    let mut e = KvmCpuidEntry2 {
        function: eax,
        index: ecx,
        flags: if x86::cpuid::function_is_indexed(eax) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: a,
        ebx: b,
        ecx: c,
        edx: d,
        padding: [0; 3],
    };
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    x86::cpuid::apply_runtime(&mut e, l.arch.cr4, l.arch.apic_base, l.arch.xcr0, &host);
    [e.eax, e.ebx, e.ecx, e.edx]
}

/// A guest `RDMSR`.
#[allow(dead_code)] // Called by the exit handlers (`exits`).
pub(crate) fn guest_rdmsr(
    vm: &crate::vm::Vm,
    l: &VcpuLocked,
    index: u32,
) -> core::result::Result<u64, MsrFault> {
    let c = caps();
    let ctx = MsrCtx {
        guest: &l.cpuid.model,
        caps: &c.msr,
        host_tsc: rdtsc(),
        platform_info_readable: vm.abi().platform_info_readable(), // HOOK(abi)
        spec_ctrl_test,
    };
    x86::msr::guest_rdmsr(&l.arch, &ctx, index)
}

/// A guest `WRMSR`.
#[allow(dead_code)] // Called by the exit handlers (`exits`).
pub(crate) fn guest_wrmsr(
    l: &mut VcpuLocked,
    index: u32,
    data: u64,
) -> core::result::Result<(), MsrFault> {
    let c = caps();
    let model = l.cpuid.model;
    let ctx = MsrCtx {
        guest: &model,
        caps: &c.msr,
        host_tsc: rdtsc(),
        platform_info_readable: true, // HOOK(abi): reads only
        spec_ctrl_test,
    };
    let fx = x86::msr::guest_wrmsr(&mut l.arch, &ctx, index, data)?;
    if fx.cpuid_runtime {
        update_cpuid_runtime(l);
    }
    Ok(())
}

// ---- sync_regs (KVM_CAP_SYNC_REGS) ----

/// `kvm_run.s.regs`: after the 256-byte exit union, `kvm_valid_regs` and `kvm_dirty_regs`.
const KVM_RUN_SYNC_REGS: usize = 304;
/// `kvm_run.kvm_valid_regs`.
const KVM_RUN_VALID_REGS: usize = 288;
/// `kvm_run.kvm_dirty_regs`.
const KVM_RUN_DIRTY_REGS: usize = 296;

/// Before entry, with `kvm_dirty_regs` ≠ 0 (upstream `sync_regs`): loads the dirty parts of
/// `kvm_run.s.regs` (read once into a private copy: userspace may change them any time) and
/// clears their dirty bits; `EINVAL` if SREGS or EVENTS break a rule (the parts loaded before
/// stay loaded, as upstream).
pub(crate) fn sync_regs(vcpu: &Vcpu, l: &mut VcpuLocked) -> Result {
    let run = vcpu.run_page();
    // SAFETY: `run` is the vCPU's kvm_run page (4 KiB); `s.regs` (520 bytes at 304) and the
    // two u64 at 288/296 lie inside it; userspace may write them concurrently, so they are read
    // once, volatile, into private copies (a byte-wise torn copy only gives another value
    // userspace could have written).
    let (mut dirty, regs) = unsafe {
        (
            core::ptr::read_volatile(run.add(KVM_RUN_DIRTY_REGS).cast::<u64>()),
            core::ptr::read_volatile(run.add(KVM_RUN_SYNC_REGS).cast::<KvmSyncRegs>()),
        )
    };
    let write_dirty = |d: u64| {
        // SAFETY: as above; only `kvm_dirty_regs` is written.
        unsafe { core::ptr::write_volatile(run.add(KVM_RUN_DIRTY_REGS).cast::<u64>(), d) };
    };
    if dirty & KVM_SYNC_X86_REGS != 0 {
        x86::regs::set_regs(&mut l.arch, &regs.regs);
        // HOOK(misc): kvm_set_rflags.
        crate::exit_vcpu::rflags_set(l);
        dirty &= !KVM_SYNC_X86_REGS;
        write_dirty(dirty);
    }
    if dirty & KVM_SYNC_X86_SREGS != 0 {
        set_sregs_locked(vcpu, l, &regs.sregs)?;
        dirty &= !KVM_SYNC_X86_SREGS;
        write_dirty(dirty);
    }
    if dirty & KVM_SYNC_X86_EVENTS != 0 {
        x86::events::set_vcpu_events(&mut l.arch, &regs.events, events_abi(vcpu)).map_err(err)?;
        dirty &= !KVM_SYNC_X86_EVENTS;
        write_dirty(dirty);
    }
    Ok(())
}

/// After the run (upstream `store_regs`, for `kvm_valid_regs` ≠ 0): writes the valid parts of
/// the state into `kvm_run.s.regs`.
pub(crate) fn store_regs(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let run = vcpu.run_page();
    // SAFETY: as in `sync_regs`.
    let valid = unsafe { core::ptr::read_volatile(run.add(KVM_RUN_VALID_REGS).cast::<u64>()) };
    // SAFETY: the fields lie inside the kvm_run page at their uapi offsets; plain data.
    unsafe {
        let s = run.add(KVM_RUN_SYNC_REGS).cast::<KvmSyncRegs>();
        if valid & KVM_SYNC_X86_REGS != 0 {
            let mut r = x86::regs::get_regs(&l.arch);
            // HOOK(misc): kvm_get_rflags.
            r.rflags = crate::exit_vcpu::visible_rflags(l, r.rflags);
            core::ptr::addr_of_mut!((*s).regs).write_volatile(r);
        }
        if valid & KVM_SYNC_X86_SREGS != 0 {
            let sregs = x86::regs::get_sregs(quirked(vcpu, l));
            core::ptr::addr_of_mut!((*s).sregs).write_volatile(sregs);
        }
        if valid & KVM_SYNC_X86_EVENTS != 0 {
            let e = x86::events::get_vcpu_events(&mut l.arch, events_abi(vcpu));
            core::ptr::addr_of_mut!((*s).events).write_volatile(e);
        }
    }
}

// ---- vCPU ioctls ----

/// The VM's events-ABI switches (`KVM_CAP_EXCEPTION_PAYLOAD`, [`crate::vm_abi`]).
fn events_abi(vcpu: &Vcpu) -> x86::events::EventsAbi {
    vcpu.vm().abi().events()
}

/// The state `KVM_GET_SREGS(2)` reads, after upstream `__get_sregs_common`'s
/// `kvm_handle_exception_payload_quirk` (a pending #PF's CR2 delivered without
/// `KVM_CAP_EXCEPTION_PAYLOAD`).
fn quirked<'a>(vcpu: &Vcpu, l: &'a mut VcpuLocked) -> &'a x86::state::CpuState {
    x86::events::handle_payload_quirk(&mut l.arch, events_abi(vcpu));
    &l.arch
}

/// The vCPU ioctls this module handles (the dispatch in `vcpu.rs` sends them here).
pub(crate) fn is_state_ioctl(cmd: u32) -> bool {
    matches!(
        cmd,
        KVM_GET_REGS
            | KVM_SET_REGS
            | KVM_GET_SREGS
            | KVM_SET_SREGS
            | KVM_GET_SREGS2
            | KVM_SET_SREGS2
            | KVM_GET_MP_STATE
            | KVM_SET_MP_STATE
            | KVM_GET_CPUID2
            | KVM_SET_CPUID2
            | KVM_GET_MSRS
            | KVM_SET_MSRS
            | KVM_GET_VCPU_EVENTS
            | KVM_SET_VCPU_EVENTS
            | KVM_GET_DEBUGREGS
            | KVM_SET_DEBUGREGS
            | KVM_HAS_DEVICE_ATTR
            | KVM_GET_DEVICE_ATTR
            | KVM_SET_DEVICE_ATTR
            | KVM_GET_NESTED_STATE
            | KVM_SET_NESTED_STATE
            | KVM_ENABLE_CAP
            | KVM_TRANSLATE
            | KVM_GET_FPU
            | KVM_SET_FPU
            | KVM_GET_XSAVE
            | KVM_SET_XSAVE
            | KVM_GET_XSAVE2
            | KVM_GET_XCRS
            | KVM_SET_XCRS
    )
}

/// A vCPU state ioctl (`is_state_ioctl(cmd)`).
pub(crate) fn ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Result<isize> {
    if vcpu.vm().is_td() {
        // The TD's state is protected (and no TD vCPU state exists here before the TDX module
        // runs it).
        return Err(EINVAL);
    }
    match cmd {
        KVM_GET_REGS => {
            let r = {
                let l = vcpu.lock_killable()?;
                let mut r = x86::regs::get_regs(&l.arch);
                // HOOK(misc): kvm_get_rflags hides single-stepping's TF.
                r.rflags = crate::exit_vcpu::visible_rflags(&l, r.rflags);
                r
            };
            write_pod(arg, &r)?;
        }
        KVM_SET_REGS => {
            let r: KvmRegs = read_pod(arg)?;
            let mut l = vcpu.lock_killable()?;
            x86::regs::set_regs(&mut l.arch, &r);
            // HOOK(misc): kvm_set_rflags adds single-stepping's TF back.
            crate::exit_vcpu::rflags_set(&mut l);
        }
        KVM_GET_SREGS => {
            let s = x86::regs::get_sregs(quirked(vcpu, &mut *vcpu.lock_killable()?));
            write_pod(arg, &s)?;
        }
        KVM_SET_SREGS => {
            let s: KvmSregs = read_pod(arg)?;
            let mut l = vcpu.lock_killable()?;
            set_sregs_locked(vcpu, &mut l, &s)?;
        }
        KVM_GET_SREGS2 => {
            // Userspace's PDPTRs while they stand (upstream marks them available), else the
            // guest's memory at CR3.
            let s = {
                let mut l = vcpu.lock_killable()?;
                let pdptrs = l.arch.pdptrs;
                let st = quirked(vcpu, &mut l);
                x86::regs::get_sregs2(st, |cr3| pdptrs.or_else(|| read_pdptrs(vcpu, cr3)))
            };
            write_pod(arg, &s)?;
        }
        KVM_SET_SREGS2 => {
            let s: KvmSregs2 = read_pod(arg)?;
            let mut l = vcpu.lock_killable()?;
            let c = caps();
            let model = l.cpuid.model;
            let (fx, pdptrs) =
                x86::regs::set_sregs2(&mut l.arch, &s, &c.msr.limits, &model, is_bsp(vcpu.id()))
                    .map_err(err)?;
            l.arch.pdptrs = pdptrs;
            if fx.cpuid_runtime {
                update_cpuid_runtime(&mut l);
                crate::mwait::sync_cpuid(vcpu.vm(), &mut l); // HOOK(cpu11)
            }
        }
        KVM_GET_MP_STATE => {
            let m = x86::events::get_mp_state(&vcpu.lock_killable()?.arch);
            write_pod(arg, &m)?;
        }
        KVM_SET_MP_STATE => {
            let m: KvmMpState = read_pod(arg)?;
            x86::events::set_mp_state(&mut vcpu.lock_killable()?.arch, &m).map_err(err)?;
        }
        KVM_GET_CPUID2 => return get_cpuid2(vcpu, arg),
        KVM_SET_CPUID2 => return set_cpuid2(vcpu, arg),
        KVM_GET_MSRS => return vcpu_msrs(vcpu, arg, false),
        KVM_SET_MSRS => return vcpu_msrs(vcpu, arg, true),
        KVM_GET_VCPU_EVENTS => {
            let abi = events_abi(vcpu);
            let e = x86::events::get_vcpu_events(&mut vcpu.lock_killable()?.arch, abi);
            write_pod(arg, &e)?;
        }
        KVM_SET_VCPU_EVENTS => {
            let e: KvmVcpuEvents = read_pod(arg)?;
            let abi = events_abi(vcpu);
            x86::events::set_vcpu_events(&mut vcpu.lock_killable()?.arch, &e, abi).map_err(err)?;
        }
        KVM_GET_DEBUGREGS => {
            let abi = events_abi(vcpu);
            let d = x86::events::get_debugregs(&mut vcpu.lock_killable()?.arch, abi);
            write_pod(arg, &d)?;
        }
        KVM_SET_DEBUGREGS => {
            let d: KvmDebugregs = read_pod(arg)?;
            x86::events::set_debugregs(&mut vcpu.lock_killable()?.arch, &d).map_err(err)?;
        }
        KVM_HAS_DEVICE_ATTR | KVM_GET_DEVICE_ATTR | KVM_SET_DEVICE_ATTR => {
            return device_attr(vcpu, cmd, arg)
        }
        KVM_GET_NESTED_STATE => return get_nested_state(vcpu, arg),
        KVM_SET_NESTED_STATE => {
            let k: KvmNestedState = read_pod(arg)?;
            let _l = vcpu.lock_killable()?;
            x86::events::set_nested_state(&k).map_err(err)?;
        }
        KVM_ENABLE_CAP => return enable_cap(vcpu, arg),
        KVM_TRANSLATE => return translate(vcpu, arg),
        KVM_GET_FPU | KVM_SET_FPU => return fpu_ioctl(vcpu, cmd, arg),
        KVM_GET_XSAVE | KVM_SET_XSAVE | KVM_GET_XSAVE2 => return xsave_ioctl(vcpu, cmd, arg),
        KVM_GET_XCRS => {
            let x = x86::fpu::get_xcrs(&vcpu.lock_killable()?.arch, host_has_xsave());
            write_pod(arg, &x)?;
        }
        KVM_SET_XCRS => {
            let x: x86::fpu::KvmXcrs = read_pod(arg)?;
            let mut l = vcpu.lock_killable()?;
            let model = l.cpuid.model;
            let changed =
                x86::fpu::set_xcrs(&mut l.arch, &model, &x, host_has_xsave()).map_err(err)?;
            if changed {
                update_cpuid_runtime(&mut l);
                crate::mwait::sync_cpuid(vcpu.vm(), &mut l); // HOOK(cpu11)
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// `KVM_SET_SREGS` under the vCPU mutex (also for `sync_regs`).
fn set_sregs_locked(vcpu: &Vcpu, l: &mut VcpuLocked, s: &KvmSregs) -> Result {
    let c = caps();
    let model = l.cpuid.model;
    let fx = x86::regs::set_sregs(&mut l.arch, s, &c.msr.limits, &model, is_bsp(vcpu.id()))
        .map_err(err)?;
    // PDPTRs come from guest memory again (upstream reloads them for PAE paging).
    l.arch.pdptrs = None;
    if fx.cpuid_runtime {
        update_cpuid_runtime(l);
        crate::mwait::sync_cpuid(vcpu.vm(), l); // HOOK(cpu11)
    }
    Ok(())
}

/// The four PAE PDPTEs at `cr3` (bits 11:5 select the 32-byte table) in guest memory.
fn read_pdptrs(vcpu: &Vcpu, cr3: u64) -> Option<[u64; 4]> {
    let gpa = cr3 & !0x1f & 0xffff_ffff;
    let mut b = [0u8; 32];
    crate::vcpu_state::read_guest(vcpu, gpa, &mut b).ok()?;
    let mut p = [0u64; 4];
    for (i, c) in b.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        p[i] = u64::from_le_bytes(w);
    }
    Some(p)
}

/// Reads guest physical memory (within one page) through the memslots and the VM's user
/// mapping (the caller is the VM's own process, which the vCPU ioctl checked).
pub(crate) fn read_guest(vcpu: &Vcpu, gpa: u64, buf: &mut [u8]) -> Result {
    let off = (gpa & 0xfff) as usize;
    if off + buf.len() > 4096 {
        return Err(EINVAL);
    }
    let hva = {
        let st = vcpu.vm().memslots().lock();
        let gfn = mmu::Gfn::new(gpa >> 12);
        let slot = st.slots.lookup(gfn).ok_or(EFAULT)?;
        slot.gfn_to_hva(gfn)
    };
    UserSlice::new((hva as usize).wrapping_add(off), buf.len())
        .reader()
        .read_slice(buf)
}

/// `KVM_GET_CPUID2`: `E2BIG` (header untouched) when `nent` is below the table's size; else
/// the entries, then the header with `nent`.
fn get_cpuid2(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = read_pod(arg)?;
    let l = vcpu.lock_killable()?;
    let n = l.cpuid.entries.len();
    if (hdr.nent as usize) < n {
        return Err(E2BIG);
    }
    write_pod_array(arg.wrapping_add(size_of::<KvmCpuid2>()), &l.cpuid.entries)?;
    drop(l);
    write_pod(
        arg,
        &KvmCpuid2 {
            nent: n as u32,
            ..hdr
        },
    )?;
    Ok(0)
}

/// `KVM_SET_CPUID2` (upstream `kvm_vcpu_ioctl_set_cpuid2` + `kvm_set_cpuid`): `nent` above
/// `KVM_MAX_CPUID_ENTRIES` is `E2BIG`; the entries are copied in (`EFAULT`) and get the runtime
/// bits of the current state; after the first `KVM_RUN` only the identical table is accepted
/// (`EINVAL` otherwise, nothing changes); before, the table must pass `kvm_check_cpuid`, then
/// replaces the old one and the model is derived again.
fn set_cpuid2(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = read_pod(arg)?;
    if hdr.nent as usize > KVM_MAX_CPUID_ENTRIES {
        return Err(E2BIG);
    }
    let mut entries: KVec<KvmCpuidEntry2> =
        read_pod_array(arg.wrapping_add(size_of::<KvmCpuid2>()), hdr.nent as usize)?;
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    let mut l = vcpu.lock_killable()?;
    x86::cpuid::update_runtime(
        &mut entries,
        l.arch.cr4,
        l.arch.apic_base,
        l.arch.xcr0,
        &host,
    );
    crate::pv::cpuid_runtime(vcpu.vm(), &mut entries); // HOOK(clock): PV_UNHALT vs HLT exits
    crate::mwait::sync_entries(vcpu.vm(), &l, &mut entries); // HOOK(cpu11): MONITOR vs MISC_ENABLE
    if l.has_run {
        x86::cpuid::check_equal(&l.cpuid.entries, &entries).map_err(err)?;
        return Ok(0);
    }
    x86::cpuid::check_table(&entries).map_err(err)?;
    let kvm = KvmCaps::new(&host, host_xcr0());
    l.cpuid.model = GuestCpu::from_entries(&entries, kvm.supported_xcr0);
    l.cpuid.entries = entries;
    crate::pv::after_set_cpuid(&mut l); // HOOK(clock): kvm_update_pv_runtime
    Ok(0)
}

/// vCPU `KVM_GET_MSRS` / `KVM_SET_MSRS` (upstream `msr_io` with `do_get_msr` / `do_set_msr`).
fn vcpu_msrs(vcpu: &Vcpu, arg: usize, set: bool) -> Result<isize> {
    let c = caps();
    let mut l = vcpu.lock_killable()?;
    let l = &mut *l;
    let model = l.cpuid.model;
    let has_run = l.has_run;
    let mut cpuid_runtime = false;
    let r = msr_io(arg, !set, |e| {
        // HOOK(clock): the PV MSRs.
        let pv = if set {
            crate::pv::host_set(vcpu, l, e.index, e.data)
        } else {
            crate::pv::host_get(vcpu, l, e.index, &mut e.data)
        };
        if let Some(ok) = pv {
            return ok;
        }
        let ctx = MsrCtx {
            guest: &model,
            caps: &c.msr,
            host_tsc: rdtsc(),
            platform_info_readable: true, // HOOK(abi): host reads always work
            spec_ctrl_test,
        };
        // HOOK(irqmod): the in-kernel LAPIC's MSRs.
        if let Some(ok) = crate::irq::lapic::host_msr(vcpu, l, e.index, &mut e.data, set) {
            return ok;
        }
        // HOOK(cpu11): MSR_IA32_MISC_ENABLE's MWAIT bit vs KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT.
        let misc = (set && e.index == x86::msr::index::IA32_MISC_ENABLE)
            .then(|| crate::mwait::misc_enable_check(vcpu.vm(), l, e.data));
        if let Some(Err(_)) = misc {
            return false;
        }
        if set {
            match x86::msr::host_set(&mut l.arch, &ctx, e.index, e.data, has_run) {
                Some(fx) => {
                    cpuid_runtime |= fx.cpuid_runtime || matches!(misc, Some(Ok(true)));
                    true
                }
                None => false,
            }
        } else {
            match x86::msr::host_get(&l.arch, &ctx, e.index) {
                Some(v) => {
                    e.data = v;
                    true
                }
                None => {
                    e.data = 0;
                    false
                }
            }
        }
    });
    if cpuid_runtime {
        update_cpuid_runtime(l);
        crate::mwait::sync_cpuid(vcpu.vm(), l); // HOOK(cpu11)
    }
    r
}

/// `KVM_VCPU_TSC_CTRL`.
const KVM_VCPU_TSC_CTRL: u32 = 0;
/// `KVM_VCPU_TSC_OFFSET`.
const KVM_VCPU_TSC_OFFSET: u64 = 0;

/// `KVM_HAS/GET/SET_DEVICE_ATTR` on a vCPU: only the TSC offset (`KVM_VCPU_TSC_CTRL` /
/// `KVM_VCPU_TSC_OFFSET`); another group or attribute is `ENXIO`.
fn device_attr(vcpu: &Vcpu, cmd: u32, arg: usize) -> Result<isize> {
    let a: KvmDeviceAttr = read_pod(arg)?;
    if a.group != KVM_VCPU_TSC_CTRL || a.attr != KVM_VCPU_TSC_OFFSET {
        return Err(ENXIO);
    }
    // The user pointer must fit an address (kvm_get_attr_addr).
    let uaddr = usize::try_from(a.addr).map_err(|_| EFAULT)?;
    match cmd {
        KVM_HAS_DEVICE_ATTR => {}
        KVM_GET_DEVICE_ATTR => {
            let off = vcpu.lock_killable()?.arch.tsc_offset;
            UserSlice::new(uaddr, 8)
                .writer()
                .write_slice(&off.to_ne_bytes())?;
        }
        _ => {
            let mut b = [0u8; 8];
            UserSlice::new(uaddr, 8).reader().read_slice(&mut b)?;
            vcpu.lock_killable()?.arch.tsc_offset = u64::from_ne_bytes(b);
        }
    }
    Ok(0)
}

/// `KVM_GET_NESTED_STATE`: the SVM header for a vCPU that is not in guest mode; a buffer below
/// 128 bytes gets the size written back and `E2BIG`.
fn get_nested_state(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    // `size` is the u32 at offset 4.
    let mut b = [0u8; 4];
    UserSlice::new(arg.wrapping_add(4), 4)
        .reader()
        .read_slice(&mut b)?;
    let user_size = u32::from_ne_bytes(b);
    let _l = vcpu.lock_killable()?;
    match x86::events::get_nested_state(user_size) {
        Some(h) => {
            write_pod(arg, &h)?;
            Ok(0)
        }
        None => {
            UserSlice::new(arg.wrapping_add(4), 4)
                .writer()
                .write_slice(&128u32.to_ne_bytes())?;
            Err(E2BIG)
        }
    }
}

/// vCPU `KVM_ENABLE_CAP` (upstream `kvm_vcpu_ioctl_enable_cap` without Hyper-V): flags must be
/// 0; `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` gates the PV MSRs and hypercalls on the CPUID's KVM
/// features leaf ([`crate::pv`]); anything else is `EINVAL`.
fn enable_cap(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let c: KvmEnableCap = read_pod(arg)?;
    if c.flags != 0 {
        return Err(EINVAL);
    }
    match u64::from(c.cap) {
        KVM_CAP_ENFORCE_PV_FEATURE_CPUID => {
            crate::pv::set_enforce(&mut *vcpu.lock_killable()?, c.args[0] != 0); // HOOK(clock)
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

// ---- KVM_TRANSLATE ----

/// The walker's view of the guest CPU (MAXPHYADDR, PSE-36, 1 GiB pages): from the vCPU's CPUID;
/// 1 GiB pages as the host has them (upstream with TDP: the hardware walker allows them).
/// The vCPU's page-walk configuration, the one KVM_TRANSLATE and the exits' emulator use
/// (derived from the vCPU's CPUID table: [`x86emu::walk::WalkConfig::for_guest`]).
pub(crate) fn walk_config(l: &VcpuLocked) -> x86emu::walk::WalkConfig {
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    x86emu::walk::WalkConfig::for_guest(
        &l.cpuid.model,
        &l.cpuid.entries,
        host.has(x86::cpuid::feat::GBPAGES),
    )
}

/// `KVM_TRANSLATE` (upstream `kvm_arch_vcpu_ioctl_translate`): a supervisor read walk of the
/// guest's page tables from the current CR0/CR3/CR4/EFER; `valid`, the GPA (`INVALID_GPA` if
/// not), `writeable` 1 and `usermode` 0 as upstream reports them.
fn translate(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let mut tr: KvmTranslation = read_pod(arg)?;
    let t = {
        let l = vcpu.lock_killable()?;
        let cfg = walk_config(&l);
        let regs = x86emu::walk::PagingRegs::from_state(&l.arch);
        // The same guest-memory access the emulator uses (accessed-bit updates mark the page
        // dirty, as upstream's walker does).
        let mut mem = crate::guest_mem::MemEnv::new(vcpu.vm());
        x86emu::walk::translate(&regs, &cfg, &mut mem, tr.linear_address)
    };
    tr.physical_address = t.physical_address;
    // Upstream: `valid = gpa != INVALID_GPA`, so ~0 itself (paging off) is not valid either.
    tr.valid = (t.valid && t.physical_address != u64::MAX) as u8;
    tr.writeable = t.writeable as u8;
    tr.usermode = t.usermode as u8;
    write_pod(arg, &tr)?;
    Ok(0)
}

// ---- The guest FPU: KVM_GET/SET_FPU, XSAVE, XSAVE2 ----

/// `KVM_GET_FPU` / `KVM_SET_FPU` on the guest FPU's FXSAVE image (upstream
/// `kvm_arch_vcpu_ioctl_get/set_fpu`; MXCSR is neither reported nor set, as upstream).
fn fpu_ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Result<isize> {
    if cmd == KVM_GET_FPU {
        let k = {
            let mut l = vcpu.lock_killable()?;
            let fx = l.fpu.as_mut().and_then(|f| f.fxsave()).ok_or(EINVAL)?;
            x86::fpu::get_fpu(fx)
        };
        write_pod(arg, &k)?;
    } else {
        let k: x86::fpu::KvmFpu = read_pod(arg)?;
        let mut l = vcpu.lock_killable()?;
        let fx = l.fpu.as_mut().and_then(|f| f.fxsave()).ok_or(EINVAL)?;
        x86::fpu::set_fpu(fx, &k);
    }
    Ok(0)
}

/// A zeroed kernel buffer of `n` bytes.
fn zeroed_buf(n: usize) -> Result<KVec<u8>> {
    Ok(KVec::from_elem(0u8, n, GFP_KERNEL)?)
}

/// `KVM_GET_XSAVE` (4096 bytes; `EINVAL` if the guest's image is bigger), `KVM_GET_XSAVE2`
/// (the image's size, `KVM_CAP_XSAVE2`) and `KVM_SET_XSAVE` (the image's size read in), through
/// the kernel's uabi copies (`fpu_copy_guest_fpstate_to_uabi` with the guest's XCR0 plus
/// x87/SSE, `fpu_copy_uabi_to_guest_fpstate` with the module's XCR0).
fn xsave_ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Result<isize> {
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    let module_xcr0 = KvmCaps::new(&host, host_xcr0()).supported_xcr0;
    let mut l = vcpu.lock_killable()?;
    let guest_xcr0 = l.cpuid.model.supported_xcr0 | x86::fpu::XFEATURE_FP | x86::fpu::XFEATURE_SSE;
    let fpu = l.fpu.as_mut().ok_or(EINVAL)?;
    let size = fpu.uabi_size();
    match cmd {
        KVM_GET_XSAVE | KVM_GET_XSAVE2 => {
            let n = if cmd == KVM_GET_XSAVE {
                if size > KVM_XSAVE_SIZE {
                    return Err(EINVAL);
                }
                KVM_XSAVE_SIZE
            } else {
                size
            };
            let mut buf = zeroed_buf(n.max(KVM_XSAVE_SIZE))?;
            // PKRU is not in the guest fpstate: the vCPU's (the backend switches it).
            let pkru = l.arch.pkru;
            let fpu = l.fpu.as_mut().ok_or(EINVAL)?;
            fpu.to_uabi(&mut buf, guest_xcr0, pkru)?;
            drop(l);
            UserSlice::new(arg, n).writer().write_slice(&buf[..n])?;
        }
        _ => {
            drop(l);
            let mut buf = zeroed_buf(size.max(KVM_XSAVE_SIZE))?;
            UserSlice::new(arg, size)
                .reader()
                .read_slice(&mut buf[..size])?;
            let mut l = vcpu.lock_killable()?;
            let mut pkru = l.arch.pkru;
            let fpu = l.fpu.as_mut().ok_or(EINVAL)?;
            fpu.from_uabi(&buf, module_xcr0, &mut pkru)?;
            l.arch.pkru = pkru;
        }
    }
    Ok(0)
}
