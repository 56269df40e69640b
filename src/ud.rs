// SPDX-License-Identifier: GPL-2.0-only
//! The #UD intercept and what hangs off it (upstream `ud_interception` → `handle_ud` →
//! `kvm_emulate_instruction(EMULTYPE_TRAP_UD)`), `KVM_GET_EMULATED_CPUID`, and the VM's quirks
//! (`KVM_CAP_DISABLE_QUIRKS` / `KVM_CAP_DISABLE_QUIRKS2`).
//!
//! SVM always intercepts #UD (`init_vmcb`), so KVM can emulate instructions the host CPU may
//! lack and a guest's CPUID may promise: MOVBE and RDPID, which is what
//! `KVM_GET_EMULATED_CPUID` reports, and the Intel hypercall VMCALL, which with
//! `KVM_X86_QUIRK_FIX_HYPERCALL_INSN` (on by default) is rewritten in guest memory to AMD's
//! VMMCALL and re-executed. Everything else that #UDs — including an instruction whose fetch
//! faults or that the decoder does not know — goes back to the guest as #UD through the usual
//! exception queue (`kvm_queue_exception`), so the guest sees exactly the fault it raised.
//! The decoding and the emulation are `x86emu`'s (`EmuOptions::trap_ud`); the MMIO, fault and
//! single-step endings are the MMIO path's ([`crate::exit_run::finish`]).
//!
//! No forced-emulation prefix (`kvm.force_emulation_prefix` is 0 here).

use crate::abi::{KvmCpuid2, KvmCpuidEntry2, KVM_MAX_CPUID_ENTRIES};
use crate::guest_mem::MemEnv;
use crate::run::uapi::RunPage;
use crate::run::{Action, ExitInfo};
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vcpu_state::walk_config;
use crate::vm::Vm;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use x86::cpuid::supported::{HostCpuid, KvmCaps};
use x86::cpuid::{emulated, feat};
use x86::errno::Errno;
use x86::exits::emulation;
use x86::quirks;
use x86emu::emulate::{self, EmuOptions};

/// `SVM_EXIT_EXCP_BASE + UD_VECTOR`, the exit code an emulation-failure report carries.
const EXIT_UD: u64 = 0x40 + 6;

/// The VM's quirk state (`kvm->arch.disabled_quirks`).
pub(crate) struct VmQuirks {
    disabled: AtomicU64,
}

impl VmQuirks {
    /// Every quirk on (upstream starts from `inapplicable_quirks & supported_quirks`, which
    /// is empty for the quirks offered here).
    pub(crate) fn new() -> Self {
        VmQuirks {
            disabled: AtomicU64::new(0),
        }
    }

    /// `kvm_check_has_quirk`: whether `quirk` is still in force.
    pub(crate) fn has(&self, quirk: u64) -> bool {
        self.disabled.load(Ordering::Relaxed) & quirk == 0
    }

    /// The disabled-quirks mask (`kvm->arch.disabled_quirks`), for the core's quirk rules.
    pub(crate) fn disabled(&self) -> u64 {
        self.disabled.load(Ordering::Relaxed)
    }
}

fn errno(e: Errno) -> Error {
    Error::from_errno(-e.number())
}

/// `KVM_CHECK_EXTENSION` for `KVM_CAP_DISABLE_QUIRKS(2)`.
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    quirks::check_extension(cap).map(|v| v as isize)
}

/// Whether [`enable_cap`] takes `cap`.
pub(crate) fn enables(cap: u64) -> bool {
    cap == quirks::KVM_CAP_DISABLE_QUIRKS || cap == quirks::KVM_CAP_DISABLE_QUIRKS2
}

/// `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS(2))` on a VM fd (flags already checked).
pub(crate) fn enable_cap(vm: &Vm, cap: u64, arg: u64) -> Result<isize> {
    let q = &vm.quirks().disabled;
    // Quirks are only ever added to the disabled set, so an atomic OR of the new mask is the
    // update upstream makes under kvm->lock.
    let add = quirks::disable(cap, 0, arg).map_err(errno)?;
    q.fetch_or(add, Ordering::Relaxed);
    Ok(0)
}

/// What the emulator may do for this vCPU: the guest CPUID's MOVBE/RDPID and the VM's
/// hypercall quirk; `trap_ud` for the #UD intercept.
pub(crate) fn emu_options(vm: &Vm, l: &VcpuLocked, trap_ud: bool) -> EmuOptions {
    let e = &l.cpuid.entries;
    EmuOptions {
        trap_ud,
        movbe: x86::cpuid::has(e, feat::MOVBE),
        rdpid: x86::cpuid::has(e, feat::RDPID),
        fix_hypercall: vm.quirks().has(quirks::FIX_HYPERCALL_INSN),
    }
}

/// A #UD intercepted in the guest (upstream `handle_ud`, without the forced-emulation
/// prefix): emulate the instruction as `EMULTYPE_TRAP_UD`, or give the guest its #UD.
pub(crate) fn intercept(vcpu: &Vcpu, l: &mut VcpuLocked, run: RunPage, info: &ExitInfo) -> Action {
    let opts = emu_options(vcpu.vm(), l, true);
    let cfg = walk_config(l);
    let mut env = MemEnv::new(vcpu.vm());
    let rflags_before = l.arch.rflags;
    let o = emulate::emulate_with(&mut l.arch, &mut env, &cfg, None, opts);
    let ei = emulation::ExitInfo::svm(
        EXIT_UD,
        info.info1,
        info.info2,
        info.int_info,
        info.int_info_err,
    );
    crate::exit_run::finish(vcpu, l, run, o, &ei, rflags_before)
}

/// CPUID on this CPU.
fn host_cpuid_raw(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// `KVM_GET_EMULATED_CPUID` (upstream `kvm_dev_ioctl_get_cpuid` with
/// `__do_cpuid_func_emulated`): E2BIG for `nent` < 1, `nent` capped at
/// `KVM_MAX_CPUID_ENTRIES`, EINVAL when an entry's padding the caller passed is unreadable or
/// not zero, then the table ([`x86::cpuid::emulated`]), E2BIG if it does not fit (`nent`
/// untouched), else the entries and the count written back.
pub(crate) fn get_emulated_cpuid(arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2 = UserSlice::new(arg, size_of::<KvmCpuid2>())
        .reader()
        .read()?;
    if hdr.nent < 1 {
        return Err(E2BIG);
    }
    // Upstream's `sanity_check_entries`, for this ioctl only: the padding of every entry the
    // caller passed (at most KVM_MAX_CPUID_ENTRIES) must read as zero, so it stays usable for
    // future extensions; an unreadable or dirty one is EINVAL.
    let n = hdr.nent.min(KVM_MAX_CPUID_ENTRIES) as usize;
    let mut r = UserSlice::new(
        arg,
        size_of::<KvmCpuid2>() + n * size_of::<KvmCpuidEntry2>(),
    )
    .reader();
    r.read::<KvmCpuid2>()?;
    for _ in 0..n {
        let e: KvmCpuidEntry2 = r.read().map_err(|_| EINVAL)?;
        if e.padding != [0; 3] {
            return Err(EINVAL);
        }
    }
    let raw = host_cpuid_raw;
    let host = HostCpuid::new(&raw);
    let rdtscp = KvmCaps::new(&host, crate::fpu::host_xcr0()).has(feat::RDTSCP);
    // "CentaurHauls" in EBX, EDX, ECX.
    let v = host.cpuid(0, 0);
    let centaur = (v[1], v[3], v[2]) == (0x746e_6543, 0x4872_7561, 0x736c_7561);
    let mut out = [x86::uapi::KvmCpuidEntry2::default(); emulated::MAX_ENTRIES];
    let count = emulated::emulated_cpuid(n, rdtscp, centaur, &mut out).map_err(errno)?;
    let mut w = UserSlice::new(
        arg.wrapping_add(size_of::<KvmCpuid2>()),
        count * size_of::<KvmCpuidEntry2>(),
    )
    .writer();
    for e in out.iter().take(count) {
        w.write(&KvmCpuidEntry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: [0; 3],
        })?;
    }
    UserSlice::new(arg, size_of::<KvmCpuid2>())
        .writer()
        .write(&KvmCpuid2 {
            nent: count as u32,
            ..hdr
        })?;
    Ok(0)
}
