// SPDX-License-Identifier: GPL-2.0-only
//! `tdx=hw`: the real TDX module, through the SEAMCALL instruction.
//!
//! Bring-up at module load, as kvm-intel's TDX support does it on later kernels:
//! 1. the host kernel found TDX at boot (`X86_FEATURE_TDX_HOST_PLATFORM`: BIOS-enabled private
//!    KeyIDs, `CONFIG_INTEL_TDX_HOST`), and the CPU has MOVDIR64B (page reset);
//! 2. under `cpus_read_lock()`, a CPU-hotplug state whose online callback enters VMX operation
//!    ([`crate::vmx`]) and runs `tdx_cpu_enable()` (TDH.SYS.LP.INIT, first TDH.SYS.INIT) runs
//!    on every online CPU now and on every CPU that comes online later;
//! 3. `tdx_enable()` (TDMRs, PAMTs, global KeyID: the host kernel's job) with the lock held;
//! 4. the TD control-structure sizes from TDH.SYS.RD.
//!
//! Unload removes the hotplug state: every CPU leaves VMX operation. The TDX module stays
//! initialised in the host kernel; a later load finds it so.
//!
//! A CPU that is the last online one of its package cannot go offline while a TD exists:
//! TDH.MNG.KEY.CONFIG and TDH.PHYMEM.CACHE.WB must run on every package.
//!
//! Only compiled and load-tested on hosts without TDX (where it refuses with `ENODEV`); it has
//! not run on a TDX host yet.

use crate::extable::{ex_table_entry, EX_TYPE_FAULT};
use crate::glue;
use crate::vmx;
use core::cell::UnsafeCell;
use core::ffi::{c_int, c_uint, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use kernel::prelude::*;
use mmu::Pfn;
use tdx::abi::{md, status};
use tdx::seamcall::{SeamArgs, Seamcall};
use tdx::{Tdx, TdxError};

/// `IA32_MKTME_KEYID_PARTITIONING`: MKTME KeyIDs in 31:0, TDX private KeyIDs in 63:32.
const MSR_IA32_MKTME_KEYID_PARTITIONING: u32 = 0x87;
/// Tries of a leaf that answers `TDX_RND_NO_ENTROPY` (Linux `RDRAND_RETRY_LOOPS`).
const RND_RETRIES: u32 = 10;

/// Set once bring-up succeeded; cleared before the CPUs leave VMX operation.
static READY: AtomicBool = AtomicBool::new(false);
/// The CPU-hotplug state (a dynamic one, > 0) while registered.
static CPUHP_STATE: AtomicI32 = AtomicI32::new(0);
/// TDs alive on the real module (CPU offline checks).
static LIVE_TDS: AtomicUsize = AtomicUsize::new(0);

/// The SEAMCALL instruction.
///
/// # Invariants
///
/// Exists only while [`READY`]: every online CPU is in VMX operation with the TDX module
/// initialised, and the hotplug state keeps it so for CPUs coming online. A SEAMCALL that still
/// faults is caught by the exception table and reported as `TDX_SEAMCALL_GP`/`_UD`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HwSeamcall {
    _private: (),
}

impl HwSeamcall {
    /// The backend, if bring-up succeeded.
    pub(crate) fn get() -> Option<Self> {
        // INVARIANT: checked here.
        READY
            .load(Ordering::Acquire)
            .then_some(HwSeamcall { _private: () })
    }

    fn seamcall_once(rax: u64, args: &mut SeamArgs) -> u64 {
        let mut status = rax;
        // SAFETY: kernel code runs at CPL 0, and there SEAMCALL either reaches the TDX module,
        // fails with VMfailInvalid (CF: no module), or faults (#UD outside VMX operation or on a
        // CPU without SEAM, #GP): the fault resumes at label 4 with the trap number in RAX. The
        // TDX module preserves every register but RAX and the declared outputs for the leaves
        // this module issues (none of them takes RBX, RSI, RDI, R12-R15 or is TDH.VP.ENTER), and
        // it accesses only pages named by physical address, which the typed wrappers take from
        // pages the caller owns (pages that are not in a TDMR are refused by the module).
        unsafe {
            core::arch::asm!(
                "2: .byte 0x66, 0x0f, 0x01, 0xcf", // seamcall
                "jnc 3f",
                "movabs rax, {vmfail}",
                "jmp 3f",
                "4: movabs {tmp}, {sw}",
                "or rax, {tmp}",
                "3:",
                ex_table_entry!("2b", "4b"),
                vmfail = const status::SW_VMFAILINVALID,
                sw = const status::SW_ERROR,
                ex = const EX_TYPE_FAULT,
                tmp = out(reg) _,
                inout("rax") status,
                inout("rcx") args.rcx,
                inout("rdx") args.rdx,
                inout("r8") args.r8,
                inout("r9") args.r9,
                inout("r10") args.r10,
                inout("r11") args.r11,
                options(nostack),
            );
        }
        status
    }
}

impl Seamcall for HwSeamcall {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        let input = *args;
        let mut tries = 0;
        loop {
            let st = Self::seamcall_once(rax, args);
            tries += 1;
            // The module ran out of hardware entropy: retry as Linux's sc_retry() does, with
            // the inputs restored (outputs may have overwritten them).
            if st != status::RND_NO_ENTROPY || tries >= RND_RETRIES {
                return st;
            }
            *args = input;
        }
    }
}

/// The KeyIDs the BIOS set aside for TDX.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyIds {
    /// The TDX module's own KeyID (the first TDX KeyID, as Linux picks it).
    pub(crate) global: u16,
    /// First KeyID for TDs.
    pub(crate) first_guest: u16,
    /// KeyIDs for TDs.
    pub(crate) guests: u16,
}

fn read_keyids() -> Result<KeyIds> {
    let mut v = 0u64;
    // SAFETY: rdmsrl_safe; `v` is a valid out pointer.
    if unsafe { glue::tdxkvm_rdmsr_safe(MSR_IA32_MKTME_KEYID_PARTITIONING, &mut v) } != 0 {
        return Err(ENODEV);
    }
    let mktme = v & 0xffff_ffff;
    let tdx_ids = v >> 32;
    // Linux: TDX KeyIDs follow the MKTME ones; the first is the module's global KeyID.
    let start = mktme + 1;
    if tdx_ids < 2 || start + tdx_ids > u64::from(u16::MAX) {
        return Err(ENODEV);
    }
    Ok(KeyIds {
        global: start as u16,
        first_guest: (start + 1) as u16,
        guests: (tdx_ids - 1) as u16,
    })
}

/// The CPU-hotplug state's online callback: enters VMX operation and runs `tdx_cpu_enable()`
/// on `cpu`. Returns 0 or a negative errno, which fails the CPU's bring-up (or `start`).
///
/// # Safety
///
/// Called by the CPU-hotplug core only, as the startup callback of the state [`start`]
/// registers: on CPU `cpu` itself, in process context pinned to that CPU (a hotplug thread or
/// `cpuhp_setup_state_cpuslocked`'s call on each online CPU), with IRQs enabled; the
/// hotplug core alternates it with [`cpu_offline`] on each CPU.
unsafe extern "C" fn cpu_online(cpu: c_uint) -> c_int {
    if let Err(e) = vmx::cpu_enable() {
        pr_err!("tdx=hw: CPU {}: cannot enter VMX operation: {:?}\n", cpu, e);
        return e.errno().to_errno();
    }
    // SAFETY: plain local_irq_save; tdx_cpu_enable() wants IRQs off and VMX on (just done).
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    // SAFETY: as above.
    let r = unsafe { glue::tdxkvm_tdx_cpu_enable() };
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    if r != 0 {
        pr_err!("tdx=hw: CPU {}: tdx_cpu_enable() failed: {}\n", cpu, r);
        vmx::cpu_disable();
        return r;
    }
    0
}

/// The CPU-hotplug state's teardown callback: leaves VMX operation on `cpu`, or refuses with
/// `-EBUSY` to take the last CPU of a package while TDs exist.
///
/// # Safety
///
/// Called by the CPU-hotplug core only, as the teardown callback of the state [`start`]
/// registers (CPU going offline, bring-up rollback or `cpuhp_remove_state()`): on CPU `cpu`
/// itself, in process context pinned to that CPU, with the hotplug lock held.
unsafe extern "C" fn cpu_offline(cpu: c_uint) -> c_int {
    // Never refuse while bringing up or tearing down (READY clear): CPU-hotplug rollback and
    // `cpuhp_remove_state()` do not allow a teardown callback to fail. Otherwise refuse to take
    // the last CPU of a package while TDs exist (none can exist unless READY).
    if READY.load(Ordering::Acquire) && LIVE_TDS.load(Ordering::Acquire) != 0 {
        // SAFETY: `cpu` is a valid CPU number (the callback's contract); the glue reads the
        // topology and the online mask, which the hotplug lock our caller holds keeps stable.
        let last_of_package = !unsafe { glue::tdxkvm_package_has_other_online_cpu(cpu) };
        if last_of_package {
            pr_warn!(
                "tdx=hw: CPU {} is the last online CPU of its package and TDs exist: it stays\n",
                cpu
            );
            return EBUSY.to_errno();
        }
    }
    vmx::cpu_disable();
    0
}

/// What bring-up learnt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HwInfo {
    pub(crate) keyids: KeyIds,
    /// Where a KeyID goes in a physical address.
    pub(crate) hkid_shift: u32,
    /// TDCX pages per TD (TDCS_BASE_SIZE / 4096).
    pub(crate) tdcs_pages: u64,
    /// Pages per vCPU, TDVPR included (TDVPS_BASE_SIZE / 4096).
    pub(crate) tdvps_pages: u64,
}

/// Brings the real TDX module up (module load). `ENODEV` with one line in the log when this
/// host cannot run TDs.
pub(crate) fn start() -> Result<HwInfo> {
    // SAFETY: reads a CPU feature bit.
    if !unsafe { glue::tdxkvm_tdx_host_ready() } {
        pr_err!("tdx=hw: no TDX on this host (BIOS did not enable it, or the kernel lacks CONFIG_INTEL_TDX_HOST); use tdx=emulated or tdx=off\n");
        return Err(ENODEV);
    }
    // SAFETY: reads a CPU feature bit.
    if !unsafe { glue::tdxkvm_boot_cpu_has_movdir64b() } {
        pr_err!("tdx=hw: the CPU lacks MOVDIR64B, needed to reset pages TDs gave back\n");
        return Err(ENODEV);
    }
    let keyids = read_keyids().inspect_err(|_| {
        pr_err!("tdx=hw: IA32_MKTME_KEYID_PARTITIONING reports no KeyIDs for TDs\n");
    })?;
    // VMX has one owner. kvm-intel (which 6.12's INTEL_TDX_HOST drags in) enables VMX on every
    // CPU at load and registers the one emergency callback; registering ours then would WARN.
    // SAFETY: reads CR4 with preemption disabled.
    if unsafe { glue::tdxkvm_vmx_in_use() } {
        pr_err!("tdx=hw: VMX is in use (kvm_intel loaded?): unload or blacklist kvm_intel\n");
        return Err(EBUSY);
    }
    // SAFETY: registers callbacks that act only on CPUs in VMX operation, which is ours: VMX
    // was free above, and our CPU-hotplug state enters it below.
    unsafe {
        glue::tdxkvm_emergency_virt_register(vmx::emergency_disable);
        glue::tdxkvm_syscore_register(vmx::shutdown_all_cpus);
    }
    // SAFETY: the hotplug lock, released below on every path.
    unsafe { glue::tdxkvm_cpus_read_lock() };
    // SAFETY: the callbacks are `extern "C"` functions of this module, removed at unload.
    let state = unsafe { glue::tdxkvm_cpuhp_setup_cpuslocked(cpu_online, cpu_offline) };
    let enabled = if state < 0 {
        Err(state)
    } else {
        // SAFETY: every online CPU did VMXON + tdx_cpu_enable() (the state's online callback
        // succeeded everywhere) and we hold the hotplug read lock.
        match unsafe { glue::tdxkvm_tdx_enable() } {
            0 => Ok(()),
            r => Err(r),
        }
    };
    // SAFETY: taken above.
    unsafe { glue::tdxkvm_cpus_read_unlock() };
    if let Err(r) = enabled {
        if state > 0 {
            // SAFETY: registered above; runs the offline callback (VMXOFF) on every CPU.
            unsafe { glue::tdxkvm_cpuhp_remove(state) };
        }
        // SAFETY: registered above.
        unsafe {
            glue::tdxkvm_syscore_unregister();
            glue::tdxkvm_emergency_virt_unregister(vmx::emergency_disable);
        }
        pr_err!(
            "tdx=hw: bringing up the TDX module failed ({}): see the tdx/virt/tdx lines above\n",
            r
        );
        return Err(if state < 0 {
            Error::from_errno(state)
        } else {
            ENODEV
        });
    }
    CPUHP_STATE.store(state, Ordering::Release);
    READY.store(true, Ordering::Release);

    let sizes = (|| {
        let tdx = Tdx::new(HwSeamcall::get()?);
        let tdcs = tdx.sys_rd(md::TDCS_BASE_SIZE).ok()?;
        let tdvps = tdx.sys_rd(md::TDVPS_BASE_SIZE).ok()?;
        Some((tdcs / 4096, tdvps / 4096))
    })();
    let Some((tdcs_pages, tdvps_pages)) = sizes else {
        pr_err!("tdx=hw: TDH.SYS.RD of the TD control-structure sizes failed\n");
        stop();
        return Err(ENODEV);
    };
    // SAFETY: reads boot_cpu_data.
    let hkid_shift = unsafe { glue::tdxkvm_phys_bits() };
    let info = HwInfo {
        keyids,
        hkid_shift,
        tdcs_pages,
        tdvps_pages,
    };
    pr_info!(
        "tdx=hw: TDX module up; KeyIDs {}..{} for TDs; {} TDCX pages per TD, {} pages per vCPU\n",
        keyids.first_guest,
        u32::from(keyids.first_guest) + u32::from(keyids.guests),
        tdcs_pages,
        tdvps_pages
    );
    Ok(info)
}

/// debugfs `seamcall_probe`: one TDH.SYS.RD (TDCS_BASE_SIZE) on the calling CPU, whatever
/// the mode, and what came back; then, on a CPU not in VMX operation, a VMXOFF, which must
/// fault and be caught. Harmless anywhere: without VMX operation the SEAMCALL raises
/// #UD, which the exception table turns into `TDX_SEAMCALL_UD`; in VMX operation without a TDX
/// module it is VMfailInvalid. Tells an operator whether the TDX module answers on this CPU, and
/// lets the tests check on CPUs without TDX that a faulting SEAMCALL is caught, not an oops.
pub(crate) fn probe(out: &mut impl core::fmt::Write) -> core::fmt::Result {
    let mut args = SeamArgs {
        rdx: md::TDCS_BASE_SIZE,
        ..SeamArgs::default()
    };
    let st = HwSeamcall::seamcall_once(tdx::abi::rax(tdx::abi::leaf::SYS_RD, 0), &mut args);
    let name = if st == status::SUCCESS {
        "TDX_SUCCESS"
    } else {
        TdxError::new(st, args.rcx, args.rdx).name()
    };
    writeln!(
        out,
        "TDH.SYS.RD(TDCS_BASE_SIZE) status {:#018x} {} value {:#x}",
        st, name, args.r8
    )?;
    let vmxoff = match vmx::probe_vmxoff_fault() {
        Some(true) => "fault caught",
        Some(false) => "no fault",
        None => "not tried: in VMX operation",
    };
    writeln!(out, "VMXOFF outside VMX operation: {vmxoff}")
}

/// Undoes [`start`] (module unload, no TD left): every CPU leaves VMX operation.
pub(crate) fn stop() {
    READY.store(false, Ordering::Release);
    let state = CPUHP_STATE.swap(0, Ordering::AcqRel);
    if state > 0 {
        // SAFETY: registered by `start`; runs `cpu_offline` (VMXOFF) on every online CPU.
        unsafe { glue::tdxkvm_cpuhp_remove(state) };
    }
    // SAFETY: registered by `start`.
    unsafe {
        glue::tdxkvm_syscore_unregister();
        glue::tdxkvm_emergency_virt_unregister(vmx::emergency_disable);
    }
}

/// A TD now exists on the real module (its last CPU per package must stay online).
pub(crate) fn td_created() {
    LIVE_TDS.fetch_add(1, Ordering::AcqRel);
}

/// `Ok` if every CPU package with present CPUs has an online one (per-package SEAMCALLs can
/// reach them all); `EBUSY` with a line otherwise.
pub(crate) fn packages_online() -> Result {
    // SAFETY: walks the CPU masks under cpus_read_lock() in the glue; process context.
    match unsafe { glue::tdxkvm_packages_online() } {
        0 => Ok(()),
        r => {
            if r == EBUSY.to_errno() {
                pr_err!("tdx=hw: a CPU package has no online CPU: no TD can be created\n");
            }
            Err(Error::from_errno(r))
        }
    }
}

/// A TD made with [`td_created`] is gone.
pub(crate) fn td_destroyed() {
    LIVE_TDS.fetch_sub(1, Ordering::AcqRel);
}

/// `f` and the first error it returned, shared with the CPU that runs it.
struct PackageCall<'a> {
    f: &'a (dyn Fn() -> Result<(), TdxError> + Sync),
    err: UnsafeCell<Option<TdxError>>,
}

/// Runs one [`PackageCall`] on the CPU the glue's `smp_call_on_cpu()` chose; 0, or `-EIO`
/// with the error recorded in the call.
///
/// # Safety
///
/// `data` points to a live `PackageCall` that outlives the call, and no other CPU runs
/// `package_call` on the same `data` at the same time (the glue runs them one by one and waits
/// for each): [`on_each_package`] passes its own `call` to `tdxkvm_on_each_package`.
unsafe extern "C" fn package_call(data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `PackageCall` `on_each_package` passed, alive until the glue
    // returns; the glue runs the calls one after another (each waited for), so `err` has one
    // user at a time, and the wait orders the accesses.
    let call = unsafe { &*data.cast::<PackageCall<'_>>() };
    match (call.f)() {
        Ok(()) => 0,
        Err(e) => {
            // SAFETY: as above.
            unsafe { *call.err.get() = Some(e) };
            EIO.to_errno()
        }
    }
}

/// Runs `f` in process context on one online CPU of each package, stopping at the first error.
pub(crate) fn on_each_package(
    f: &(dyn Fn() -> Result<(), TdxError> + Sync),
) -> Result<(), TdxError> {
    let call = PackageCall {
        f,
        err: UnsafeCell::new(None),
    };
    // SAFETY: `package_call` gets `&call`, which outlives the glue call (it waits for each).
    let r = unsafe {
        glue::tdxkvm_on_each_package(
            package_call,
            (&call as *const PackageCall<'_>).cast_mut().cast(),
        )
    };
    match (r, call.err.into_inner()) {
        (0, _) => Ok(()),
        (_, Some(e)) => Err(e),
        // The glue refused or failed: a host-side error, never a module status.
        (r, None) => {
            if r == EBUSY.to_errno() {
                pr_err!(
                    "tdx=hw: a CPU package has no online CPU: per-package SEAMCALLs cannot run\n"
                );
            }
            Err(TdxError::new(status::SW_ERROR, 0, 0))
        }
    }
}

/// Resets pages a TD gave back (Linux's `tdx_clear_page()`): MOVDIR64B writes clear the
/// integrity poison a partial write may have left on CPUs with the erratum, and leave the
/// pages zeroed under KeyID 0.
pub(crate) fn reset_pages(pfn: Pfn, pages: u64) {
    for i in 0..pages {
        // SAFETY: a page of RAM the TD no longer owns and nobody else uses yet: the backend
        // calls this between the TDX module's release of the page and its return to the host.
        unsafe { glue::tdxkvm_movdir64b_clear_page(glue::tdxkvm_pfn_to_virt(pfn.raw() + i)) };
    }
}
