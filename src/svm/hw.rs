// SPDX-License-Identifier: GPL-2.0-only
//! SVM on the host's CPUs (upstream `svm_hardware_setup`, `svm_enable_virtualization_cpu`,
//! `svm_cpu_init`, `new_asid`).
//!
//! At module load, if CPUID says SVM (0x80000001 ECX[2]) and nested paging (0x8000000A EDX[0])
//! and the firmware has not disabled SVM (VM_CR.SVMDIS), a CPU-hotplug state sets EFER.SVME and
//! `MSR_VM_HSAVE_PA` on every online CPU (and every CPU that comes online later); its teardown
//! undoes that. A CPU whose EFER.SVME is already set belongs to another hypervisor: the load
//! fails with `EBUSY` (as VMX's `CR4.VMXE` check in [`crate::vmx`]). The emergency-reboot
//! callback and the syscore shutdown hook leave SVM on every CPU (GIF set first, so INIT and NMI
//! are not blocked), as upstream's `kvm_cpu_svm_disable`.
//!
//! Without SVM the module loads as before; [`ready`] is false and a non-TD vCPU's `KVM_RUN`
//! answers `ENODEV` (see [`crate::run`]).
//!
//! Per CPU (storage in the glue, layout here: [`SvmCpu`]): the host save area VMRUN's exit
//! restores (`MSR_VM_HSAVE_PA`), a second page for the state VMSAVE/VMLOAD switch, and the ASID
//! allocator: one ASID per vCPU per CPU, from a per-CPU pool with a generation number; when the
//! pool runs out the generation advances and the next VMRUN flushes every ASID's TLB entries.

use super::glue as sg;
use crate::glue;
use core::ffi::{c_int, c_uint, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;

const MSR_EFER: u32 = 0xc000_0080;
const MSR_VM_CR: u32 = 0xc001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const VM_CR_SVMDIS: u64 = 1 << 4;
const EFER_SVME: u64 = x86::svm::EFER_SVME;
/// 0x8000000A EDX: FlushByAsid (TLB_CONTROL 3 and 7 are valid).
const FEATURE_FLUSHBYASID: u32 = 1 << 6;

static READY: AtomicBool = AtomicBool::new(false);
static CPUHP_STATE: AtomicI32 = AtomicI32::new(0);
static FEATURES: AtomicU32 = AtomicU32::new(0);
static NASID: AtomicU32 = AtomicU32::new(0);
/// The shared permission maps (direct-map addresses; order 2 and order 1).
static IOPM: AtomicUsize = AtomicUsize::new(0);
static MSRPM: AtomicUsize = AtomicUsize::new(0);
static IOPM_PA: AtomicU64 = AtomicU64::new(0);
static MSRPM_PA: AtomicU64 = AtomicU64::new(0);

const IOPM_ORDER: u32 = 2;
const MSRPM_ORDER: u32 = 1;

/// One CPU's SVM data. Lives in per-CPU storage the glue provides (16 words, zeroed).
#[repr(C)]
pub(crate) struct SvmCpu {
    /// Direct-map address of the `MSR_VM_HSAVE_PA` page; 0 while SVM is off on this CPU.
    hsave: usize,
    /// Direct-map address of the host VMSAVE/VMLOAD area.
    save_area: usize,
    /// Its physical address.
    pub(crate) save_area_pa: u64,
    /// The ASID generation of this CPU (starts at 1; a vCPU's 0 never matches).
    pub(crate) asid_generation: u64,
    /// Next free ASID.
    pub(crate) next_asid: u32,
    /// Largest ASID.
    pub(crate) max_asid: u32,
}

const _: () = assert!(core::mem::size_of::<SvmCpu>() <= 16 * 8);

/// The calling CPU's SVM data.
///
/// # Safety
///
/// Preemption (or IRQs) disabled for as long as the reference is used, and no other reference
/// to this CPU's data is live (the run loop's entry path with IRQs off, the hotplug callbacks on
/// their own CPU).
pub(crate) unsafe fn this_cpu<'a>() -> &'a mut SvmCpu {
    // SAFETY: this CPU's per-CPU words, zero-initialised, aligned, large enough (asserted);
    // exclusive per the caller's contract.
    unsafe { &mut *sg::tdxkvm_svm_this_cpu().cast::<SvmCpu>() }
}

/// Whether SVM is up on every online CPU.
pub(crate) fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// HOOK(entry): 0x8000000A EDX: VmcbClean (the VMCB's clean bits are honoured).
const FEATURE_VMCBCLEAN: u32 = 1 << 5;

/// HOOK(entry): whether the CPU may skip reloading VMCB fields marked clean.
pub(crate) fn vmcb_clean() -> bool {
    FEATURES.load(Ordering::Relaxed) & FEATURE_VMCBCLEAN != 0
}

/// Whether TLB_CONTROL may flush one ASID (else a flush takes a new ASID).
pub(crate) fn flush_by_asid() -> bool {
    FEATURES.load(Ordering::Relaxed) & FEATURE_FLUSHBYASID != 0
}

/// The physical addresses of the I/O and MSR permission maps.
pub(crate) fn permission_maps() -> (u64, u64) {
    (
        IOPM_PA.load(Ordering::Relaxed),
        MSRPM_PA.load(Ordering::Relaxed),
    )
}

fn free_pages(v: usize, order: u32) {
    if v != 0 {
        // SAFETY: pages from tdxkvm_alloc_pages of this order, no longer in use.
        unsafe { glue::tdxkvm_free_pages(v as *mut c_void, order) };
    }
}

/// Enables SVM on the calling CPU (hotplug online callback).
///
/// # Safety
///
/// Called by the CPU-hotplug core only, on CPU `cpu` itself in process context pinned to it.
unsafe extern "C" fn cpu_online(cpu: c_uint) -> c_int {
    // SAFETY: zeroed pages, process context.
    let (hsave, save) = unsafe { (glue::tdxkvm_alloc_page(), glue::tdxkvm_alloc_page()) };
    if hsave.is_null() || save.is_null() {
        for p in [hsave, save] {
            if !p.is_null() {
                // SAFETY: allocated just above.
                unsafe { glue::tdxkvm_free_page(p) };
            }
        }
        return ENOMEM.to_errno();
    }
    // SAFETY: direct-map addresses of our pages.
    let (hsave_pa, save_pa) = unsafe {
        (
            glue::tdxkvm_virt_to_pfn(hsave) << 12,
            glue::tdxkvm_virt_to_pfn(save) << 12,
        )
    };
    // SAFETY: plain local_irq_save.
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    // SAFETY: reads EFER on this CPU.
    let efer = unsafe { sg::tdxkvm_rdmsr(MSR_EFER) };
    let r = if efer & EFER_SVME != 0 {
        Err(EBUSY)
    } else {
        // SAFETY: IRQs off; SVM is free on this CPU (SVME was clear), the save page stays
        // allocated until `cpu_offline` clears the MSR.
        unsafe {
            sg::tdxkvm_wrmsr(MSR_EFER, efer | EFER_SVME);
            sg::tdxkvm_wrmsr(MSR_VM_HSAVE_PA, hsave_pa);
        }
        // SAFETY: IRQs off, our own CPU's data.
        let sd = unsafe { this_cpu() };
        sd.hsave = hsave as usize;
        sd.save_area = save as usize;
        sd.save_area_pa = save_pa;
        // As upstream: the pool starts exhausted, so the first allocation advances the
        // generation and flushes every ASID — nothing from before this CPU (re)joined is
        // reused, whatever generation a vCPU remembers.
        sd.max_asid = NASID.load(Ordering::Relaxed).saturating_sub(1).max(1);
        sd.asid_generation = sd.asid_generation.wrapping_add(1).max(1);
        sd.next_asid = sd.max_asid + 1;
        Ok(())
    };
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    match r {
        Ok(()) => 0,
        Err(e) => {
            pr_err!("svm: CPU {}: EFER.SVME already set: SVM belongs to another hypervisor (kvm_amd?)\n", cpu);
            // SAFETY: never handed to the CPU.
            unsafe {
                glue::tdxkvm_free_page(hsave);
                glue::tdxkvm_free_page(save);
            }
            e.to_errno()
        }
    }
}

/// Leaves SVM on the calling CPU if this module entered it.
///
/// # Safety
///
/// IRQs off, or preemption disabled on the CPU concerned.
unsafe fn cpu_disable_svm() {
    // SAFETY: the caller's contract; MSR accesses on this CPU.
    unsafe {
        sg::tdxkvm_wrmsr(MSR_VM_HSAVE_PA, 0);
        let efer = sg::tdxkvm_rdmsr(MSR_EFER);
        if efer & EFER_SVME != 0 {
            // GIF=1 first, so INIT and NMIs are not blocked (upstream kvm_cpu_svm_disable).
            sg::tdxkvm_stgi();
            sg::tdxkvm_wrmsr(MSR_EFER, efer & !EFER_SVME);
        }
    }
}

/// Disables SVM on the calling CPU (hotplug teardown callback).
///
/// # Safety
///
/// Called by the CPU-hotplug core only, on CPU `cpu` itself in process context pinned to it.
unsafe extern "C" fn cpu_offline(_cpu: c_uint) -> c_int {
    // SAFETY: plain local_irq_save.
    let flags = unsafe { glue::tdxkvm_local_irq_save() };
    // SAFETY: IRQs off, our own CPU's data.
    let sd = unsafe { this_cpu() };
    let (hsave, save) = (sd.hsave, sd.save_area);
    if hsave != 0 {
        // SAFETY: IRQs off; this module enabled SVM here (hsave is set only then).
        unsafe { cpu_disable_svm() };
    }
    sd.hsave = 0;
    sd.save_area = 0;
    sd.save_area_pa = 0;
    // SAFETY: restores the flags saved above.
    unsafe { glue::tdxkvm_local_irq_restore(flags) };
    free_pages(hsave, 0);
    free_pages(save, 0);
    0
}

/// The emergency-reboot callback (NMI context, any CPU).
///
/// # Safety
///
/// Called by the kernel's emergency path only (IRQs off or NMI context).
unsafe extern "C" fn emergency_disable() {
    // SAFETY: NMI/IRQs-off context; only acts when SVME is set, which on our CPUs is ours.
    unsafe { cpu_disable_svm() };
}

/// Reboot/poweroff: every CPU leaves SVM.
///
/// # Safety
///
/// Called by the syscore shutdown path only.
unsafe extern "C" fn shutdown_all_cpus() {
    // SAFETY: runs `shutdown_this_cpu` on every online CPU in IRQ context and waits.
    unsafe { glue::tdxkvm_on_each_cpu(shutdown_this_cpu) };
}

/// # Safety
///
/// Called by `on_each_cpu()` from [`shutdown_all_cpus`] only (IRQ context).
unsafe extern "C" fn shutdown_this_cpu(_: *mut c_void) {
    // SAFETY: IRQ context on the CPU concerned.
    unsafe { cpu_disable_svm() };
}

/// Suspend (syscore: the boot CPU alone, IRQs off; the others went offline through cpuhp): this
/// CPU leaves SVM, its pages stay (upstream kvm_suspend).
///
/// # Safety
///
/// Called by the syscore suspend path only.
unsafe extern "C" fn suspend_cpu() -> c_int {
    // SAFETY: IRQs off (syscore), our own CPU's data.
    let sd = unsafe { this_cpu() };
    if sd.hsave != 0 {
        // SAFETY: IRQs off; this module enabled SVM here.
        unsafe { cpu_disable_svm() };
    }
    0
}

/// Resume (syscore, the boot CPU, IRQs off): SVM on again with this CPU's host save area, which
/// the firmware reset along with `MSR_VM_HSAVE_PA` (upstream kvm_resume); the ASID pool starts
/// exhausted so the first VMRUN flushes every ASID.
///
/// # Safety
///
/// Called by the syscore resume path only.
unsafe extern "C" fn resume_cpu() {
    // SAFETY: IRQs off (syscore), our own CPU's data.
    let sd = unsafe { this_cpu() };
    if sd.hsave == 0 {
        return;
    }
    // SAFETY: IRQs off; the page was allocated by cpu_online and stays until cpu_offline;
    // SVM was ours on this CPU before the suspend.
    unsafe {
        let hsave_pa = glue::tdxkvm_virt_to_pfn(sd.hsave as *mut c_void) << 12;
        let efer = sg::tdxkvm_rdmsr(MSR_EFER);
        sg::tdxkvm_wrmsr(MSR_EFER, efer | EFER_SVME);
        sg::tdxkvm_wrmsr(MSR_VM_HSAVE_PA, hsave_pa);
    }
    sd.asid_generation = sd.asid_generation.wrapping_add(1).max(1);
    sd.next_asid = sd.max_asid + 1;
}

/// Brings SVM up on every CPU (module load). `Ok(false)`: this host has no usable SVM (the
/// module runs without it); `EBUSY`: another hypervisor owns SVM; `ENOMEM`.
pub(crate) fn start(register_emergency: bool) -> Result<bool> {
    let (mut features, mut nasid) = (0u32, 0u32);
    // SAFETY: CPUID reads.
    if !unsafe { sg::tdxkvm_svm_cpuid(&mut features, &mut nasid) } {
        return Ok(false);
    }
    let mut vm_cr = 0u64;
    // SAFETY: rdmsrl_safe with a valid out pointer.
    if unsafe { glue::tdxkvm_rdmsr_safe(MSR_VM_CR, &mut vm_cr) } != 0 || vm_cr & VM_CR_SVMDIS != 0 {
        pr_info!("svm: disabled by the firmware (VM_CR.SVMDIS): no SVM guests\n");
        return Ok(false);
    }
    if nasid < 2 {
        return Ok(false);
    }
    // Another hypervisor (kvm_amd with enable_virt_at_load, or running VMs) owns SVM: refuse
    // before registering anything. Its emergency callback is registered, so ours would WARN in
    // cpu_emergency_register_virt_callback and again when unregistering it on the error path.
    // The cpuhp callback still checks every CPU.
    // SAFETY: reads EFER on whichever CPU this runs; SVME is set on all CPUs or none by any
    // hypervisor at rest, and cpu_online re-checks each CPU.
    if unsafe { sg::tdxkvm_rdmsr(MSR_EFER) } & EFER_SVME != 0 {
        pr_err!("svm: EFER.SVME already set: SVM belongs to another hypervisor (kvm_amd?)\n");
        return Err(EBUSY);
    }
    FEATURES.store(features, Ordering::Relaxed);
    NASID.store(nasid, Ordering::Relaxed);

    // SAFETY: zeroed pages, process context.
    let iopm = unsafe { glue::tdxkvm_alloc_pages(IOPM_ORDER) } as usize;
    // SAFETY: as above.
    let msrpm = unsafe { glue::tdxkvm_alloc_pages(MSRPM_ORDER) } as usize;
    if iopm == 0 || msrpm == 0 {
        free_pages(iopm, IOPM_ORDER);
        free_pages(msrpm, MSRPM_ORDER);
        return Err(ENOMEM);
    }
    // SAFETY: the maps are ours, 16 KiB and 8 KiB long; nobody else sees them yet.
    unsafe {
        core::ptr::write_bytes(iopm as *mut u8, 0xff, 4096 << IOPM_ORDER);
        let pm = core::slice::from_raw_parts_mut(msrpm as *mut u8, 4096 << MSRPM_ORDER);
        pm.fill(0xff);
        for m in x86::svm::PASSTHROUGH_MSRS {
            x86::svm::msrpm_allow(pm, m);
        }
    }
    IOPM.store(iopm, Ordering::Relaxed);
    MSRPM.store(msrpm, Ordering::Relaxed);
    // SAFETY: direct-map addresses.
    unsafe {
        IOPM_PA.store(
            glue::tdxkvm_virt_to_pfn(iopm as *mut c_void) << 12,
            Ordering::Relaxed,
        );
        MSRPM_PA.store(
            glue::tdxkvm_virt_to_pfn(msrpm as *mut c_void) << 12,
            Ordering::Relaxed,
        );
    }

    if register_emergency {
        // SAFETY: the callbacks act only on CPUs with EFER.SVME set, which are ours (refused
        // otherwise below).
        unsafe {
            glue::tdxkvm_emergency_virt_register(emergency_disable);
            sg::tdxkvm_svm_syscore_register(suspend_cpu, resume_cpu, shutdown_all_cpus);
        }
    }
    // SAFETY: the hotplug lock, released below.
    unsafe { glue::tdxkvm_cpus_read_lock() };
    // SAFETY: module functions, removed at unload.
    let state = unsafe { glue::tdxkvm_cpuhp_setup_cpuslocked(cpu_online, cpu_offline) };
    // SAFETY: taken above.
    unsafe { glue::tdxkvm_cpus_read_unlock() };
    if state < 0 {
        if register_emergency {
            // SAFETY: registered above.
            unsafe {
                sg::tdxkvm_svm_syscore_unregister();
                glue::tdxkvm_emergency_virt_unregister(emergency_disable);
            }
        }
        free_pages(iopm, IOPM_ORDER);
        free_pages(msrpm, MSRPM_ORDER);
        IOPM.store(0, Ordering::Relaxed);
        MSRPM.store(0, Ordering::Relaxed);
        return Err(Error::from_errno(state));
    }
    CPUHP_STATE.store(state, Ordering::Release);
    REGISTERED.store(register_emergency, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
    pr_info!(
        "svm: SVM with nested paging on every CPU ({} ASIDs, features {:#x})\n",
        nasid,
        features
    );
    Ok(true)
}

static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Undoes [`start`] (module unload: no VM left).
pub(crate) fn stop() {
    if !READY.swap(false, Ordering::AcqRel) {
        return;
    }
    let state = CPUHP_STATE.swap(0, Ordering::AcqRel);
    if state > 0 {
        // SAFETY: registered by `start`; runs `cpu_offline` on every online CPU.
        unsafe { glue::tdxkvm_cpuhp_remove(state) };
    }
    if REGISTERED.swap(false, Ordering::Relaxed) {
        // SAFETY: registered by `start`.
        unsafe {
            sg::tdxkvm_svm_syscore_unregister();
            glue::tdxkvm_emergency_virt_unregister(emergency_disable);
        }
    }
    free_pages(IOPM.swap(0, Ordering::Relaxed), IOPM_ORDER);
    free_pages(MSRPM.swap(0, Ordering::Relaxed), MSRPM_ORDER);
}
