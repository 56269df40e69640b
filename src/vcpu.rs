// SPDX-License-Identifier: GPL-2.0-only
//! vCPUs (upstream `struct kvm_vcpu`): `KVM_CREATE_VCPU`, the vCPU fd ("kvm-vcpu:N"), its mmap
//! (kvm_run, PIO data and coalesced-MMIO pages) and its ioctls.
//!
//! A vCPU belongs to its VM (the VM's vCPU table owns it and frees it when the VM goes, as
//! upstream's `kvm_destroy_vcpus()`); the vCPU fd holds a VM reference, so closing vCPU fds and
//! the VM fd works in any order.
//!
//! `KVM_RUN` checks what upstream checks before entering the guest, then an ordinary vCPU runs
//! in [`crate::run`] (the backend-neutral run loop; SVM is the backend): without SVM on this
//! host it answers `EOPNOTSUPP` after honouring `immediate_exit`. A TD vCPU does not run yet
//! (`immediate_exit` → EINTR, else `EINVAL`, as upstream before `KVM_TDX_INIT_VCPU`). Unknown
//! vCPU ioctls are `EINVAL`, x86's answer.

use crate::abi::*;
use crate::env::OwnedPage;
use crate::glue;
use crate::stats;
use crate::stats_fd::{self, StatsId};
use crate::vcpu_mutex::{VcpuGuard, VcpuMutex};
use crate::vm::{Vm, VmMmu, KVM_MAX_VCPU_IDS};
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::cache::VcpuMmuCaches;

/// A TD vCPU's TDX state once `KVM_TDX_INIT_VCPU` made it (TDH.VP.CREATE, VP.ADDCX, VP.INIT;
/// [`crate::tdx_vm`]). Its pages belong to the TD ([`crate::td::TdVm`]), which flushes and
/// reclaims them after the HKID is released.
pub(crate) struct VcpuTd {
    /// The vCPU's TDVPR page.
    #[allow(dead_code)]
    pub(crate) tdvpr: mmu::Pfn,
}

/// What the vCPU mutex (`vcpu->mutex`) guards.
pub(crate) struct VcpuLocked {
    /// The vCPU's MMU caches (for a TD including the private-SPT cache), topped up with
    /// [`VmMmu::topup_vcpu_caches`] before the MMU lock is taken.
    // Used by the fault paths (pre-fault, issue 10 `mem`; the run loop, issue 11).
    #[allow(dead_code)]
    pub(crate) caches: VcpuMmuCaches,
    /// A TD vCPU's TDX state, once initialised.
    #[allow(dead_code)]
    pub(crate) td: Option<VcpuTd>,
    /// HOOK(dirtylog): the fast page fault's last-used slot (crate::run::npf).
    pub(crate) last_slot: memcore::last_slot::LastSlot<crate::dirty::FaultLog>,
    /// The architectural register state between runs (the state ioctls read and write it, the
    /// backend loads it around each guest entry).
    pub(crate) arch: x86::state::CpuState,
    /// Guest debugging and the completion a userspace exit left ([`crate::exit_vcpu`]).
    pub(crate) exits: crate::exit_vcpu::VcpuExits,
    /// The vCPU's CPUID table and model ([`crate::vcpu_state`]).
    pub(crate) cpuid: crate::vcpu_state::VcpuCpuid,
    /// The guest FPU/SSE/AVX state ([`crate::fpu`]); `None` for a TD vCPU (the TDX module
    /// keeps a TD's).
    pub(crate) fpu: Option<crate::fpu::GuestFpu>,
    /// The backend that runs this vCPU (SVM); `None` without SVM, and for a TD vCPU.
    pub(crate) backend: Option<crate::run::VcpuBackend>,
    /// The run loop's state (pending I/O completion, TLB generation).
    pub(crate) run: crate::run::RunState,
    /// Set by the first `KVM_RUN` that enters the run loop (upstream `kvm_vcpu_has_run`:
    /// `KVM_SET_CPUID2` then only accepts an identical table).
    #[allow(dead_code)]
    pub(crate) has_run: bool,
    /// HOOK(clock): PV MSRs, `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, pvclock/steal-time records
    /// ([`crate::pv`]).
    pub(crate) pv: crate::pv::VcpuPv,
    /// HOOK(irqmod): interrupt state under the mutex (the in-kernel LAPIC, split ExtINT).
    pub(crate) irq: crate::irq::inject::IrqLocked,
    /// HOOK(fix1): the `KVM_SET_SIGNAL_MASK` mask applied around `KVM_RUN` ([`crate::sigmask`]).
    pub(crate) sigmask: Option<u64>,
}

/// Per-vCPU counters for the vCPU stats fd (cumulative).
#[derive(Default)]
pub(crate) struct VcpuStats {
    /// Guest page faults handled through the TDP MMU (the run loop, issue 11).
    pub(crate) page_faults: AtomicU64,
    /// HOOK(fault): of those, resolved by the fast page fault (upstream `pf_fast`).
    pub(crate) pf_fast: AtomicU64,
    /// `KVM_PRE_FAULT_MEMORY` calls on this vCPU (issue 10, `mem`).
    pub(crate) pre_fault_calls: AtomicU64,
    /// Pages `KVM_PRE_FAULT_MEMORY` mapped (issue 10, `mem`).
    pub(crate) pre_fault_pages: AtomicU64,
    /// The run loop's exit counters.
    pub(crate) run: crate::run::RunStats,
}

/// A vCPU.
#[pin_data]
pub(crate) struct Vcpu {
    /// The VM (valid while the vCPU exists: the VM owns it).
    vm: *const Vm,
    /// `vcpu_id` (APIC ID), below the VM's `max_vcpu_ids`.
    id: u32,
    /// Position in the VM's vCPU table (`vcpu_idx`).
    idx: u32,
    /// The TSC rate in kHz (x86 `vcpu->arch.virtual_tsc_khz`): the VM's default at creation,
    /// then what vCPU `KVM_SET_TSC_KHZ` stores ([`x86::msr::vcpu_set_tsc_khz`]).
    tsc_khz: AtomicU32,
    /// `struct kvm_run`, page 0 of the vCPU fd.
    run: OwnedPage,
    /// The PIO data page, page 1 of the vCPU fd (`KVM_PIO_PAGE_OFFSET`).
    pio: OwnedPage,
    /// "kvm-<pid>/vcpu-<id>".
    stats_id: StatsId,
    /// `vcpu->mutex`: held by every vCPU ioctl; killable (HOOK(entry): [`VcpuMutex`]).
    mutex: VcpuMutex<VcpuLocked>,
    pub(crate) stats: VcpuStats,
    /// HOOK(irqmod): what other threads post to this vCPU, kicks, the halt wait.
    pub(crate) irq: crate::irq::kick::VcpuIrq,
}

// SAFETY: `vm` points to the VM that owns this vCPU; it is only dereferenced while the VM is
// alive (a vCPU cannot outlive its VM), and the VM is `Sync`. Everything else is `Send`/`Sync`.
unsafe impl Send for Vcpu {}
// SAFETY: as above; mutable state is behind the mutex or atomics.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    fn new(vm: &Vm, id: u32, idx: u32) -> Result<Pin<KBox<Vcpu>>> {
        let run = OwnedPage::new(stats::Kind::VcpuPage).ok_or(ENOMEM)?;
        let pio = OwnedPage::new(stats::Kind::VcpuPage).ok_or(ENOMEM)?;
        let stats_id = StatsId::vcpu(id);
        let tsc_khz = vm.default_tsc_khz();
        let arch = crate::vcpu_state::power_on(id);
        let (fpu, backend) = if vm.is_td() {
            (None, None)
        } else {
            let backend = crate::run::VcpuBackend::for_vm(vm);
            if backend.is_none() && crate::svm::hw::ready() {
                return Err(ENOMEM);
            }
            (Some(crate::fpu::GuestFpu::new()?), backend)
        };
        let mutex = VcpuMutex::new(VcpuLocked {
            caches: VcpuMmuCaches::new(),
            td: None,
            // HOOK(dirtylog): the fast page fault's last-used slot.
            last_slot: Default::default(),
            arch,
            exits: Default::default(),
            cpuid: crate::vcpu_state::VcpuCpuid::new(),
            fpu,
            backend,
            run: crate::run::RunState::default(),
            has_run: false,
            pv: Default::default(),
            irq: Default::default(),
            sigmask: None,
        })?;
        let v = KBox::pin_init(
            pin_init!(Vcpu {
                vm,
                id,
                idx,
                tsc_khz: AtomicU32::new(tsc_khz),
                run,
                pio,
                stats_id,
                mutex,
                stats: VcpuStats::default(),
                irq: crate::irq::kick::VcpuIrq::new(),
            }),
            GFP_KERNEL,
        )?;
        stats::inc(stats::Kind::Vcpu);
        Ok(v)
    }

    /// The VM.
    pub(crate) fn vm(&self) -> &Vm {
        // SAFETY: the VM owns this vCPU, so it is alive as long as `self` is.
        unsafe { &*self.vm }
    }

    /// The stats id.
    pub(crate) fn stats_id(&self) -> &StatsId {
        &self.stats_id
    }

    /// The vCPU mutex, waited for uninterruptibly: for paths that are not a vCPU ioctl
    /// (teardown); ioctls use [`Vcpu::lock_killable`].
    #[allow(dead_code)]
    pub(crate) fn lock(&self) -> VcpuGuard<'_, VcpuLocked> {
        self.mutex.lock()
    }

    /// The vCPU mutex unless a fatal signal comes first (`EINTR`; upstream `kvm_vcpu_ioctl`'s
    /// `mutex_lock_killable`): what vCPU ioctls use.
    pub(crate) fn lock_killable(&self) -> Result<VcpuGuard<'_, VcpuLocked>> {
        self.mutex.lock_killable()
    }

    /// Frees the vCPU (VM teardown, or a creation that did not complete): its caches go back
    /// through the MMU, its pages to the allocator.
    pub(crate) fn destroy(self: Pin<KBox<Self>>, mmu: &VmMmu) {
        mmu.free_vcpu_caches(&mut self.mutex.lock().caches);
        drop(self);
        stats::dec(stats::Kind::Vcpu);
    }

    /// The page mapped at page `pgoff` of the vCPU fd (upstream `kvm_vcpu_fault`), if any.
    fn page_at(&self, pgoff: usize) -> Option<&OwnedPage> {
        match pgoff {
            0 => Some(&self.run),
            KVM_PIO_PAGE_OFFSET => Some(&self.pio),
            KVM_COALESCED_MMIO_PAGE_OFFSET => Some(self.vm().coalesced_mmio_ring()),
            _ => None,
        }
    }

    /// The kvm_run page (page 0 of the vCPU mapping).
    pub(crate) fn run_page(&self) -> *mut u8 {
        self.run.virt()
    }

    /// The PIO data page (page 1 of the vCPU mapping).
    pub(crate) fn pio_page(&self) -> *mut u8 {
        self.pio.virt()
    }

    /// `KVM_RUN`: upstream's checks, then the run loop ([`crate::run`]).
    fn run(&self, arg: usize) -> Result<isize> {
        if arg != 0 {
            return Err(EINVAL);
        }
        let mut guard = self.mutex.lock_killable()?;
        let run = self.run.virt();
        // SAFETY: `run` is the vCPU's own kvm_run page (4 KiB, mapped for the vCPU's life);
        // userspace may write it at any time, so every field is read once, volatile, as
        // upstream's READ_ONCE, and only `flags` is written.
        let (immediate_exit, cr8, valid, dirty) = unsafe {
            core::ptr::write_volatile(run.add(KVM_RUN_FLAGS).cast::<u16>(), 0);
            (
                core::ptr::read_volatile(run.add(KVM_RUN_IMMEDIATE_EXIT)),
                core::ptr::read_volatile(run.add(KVM_RUN_CR8).cast::<u64>()),
                core::ptr::read_volatile(run.add(KVM_RUN_VALID_REGS).cast::<u64>()),
                core::ptr::read_volatile(run.add(KVM_RUN_DIRTY_REGS).cast::<u64>()),
            )
        };
        // kvm_arch_vcpu_ioctl_run's order: sync-register fields, then CR8 (no in-kernel LAPIC:
        // kvm_set_cr8 refuses reserved bits), then immediate_exit.
        if (valid | dirty) & !KVM_SYNC_X86_VALID_FIELDS != 0 {
            return Err(EINVAL);
        }
        if self.vm().is_td() {
            // TDs do not run yet (a later issue), and their state is protected: no sync-register
            // field is valid for them (kvm_sync_valid_fields).
            if valid | dirty != 0 {
                return Err(EINVAL);
            }
            if cr8 & !0xf != 0 {
                return Err(EINVAL);
            }
            if immediate_exit != 0 {
                return Err(EINTR);
            }
            return self.not_yet();
        }
        // Upstream's `out:` label: from here on, every return stores the valid sync-register
        // fields (store_regs), errors included.
        let r = (|| {
            // HOOK(state): sync_regs (KVM_CAP_SYNC_REGS), then CR8 from kvm_run (no in-kernel
            // LAPIC: kvm_set_cr8 stores it, reserved bits are EINVAL).
            if dirty != 0 {
                crate::vcpu_state::sync_regs(self, &mut guard)?;
            }
            // HOOK(irqmod): with an in-kernel LAPIC, kvm_run.cr8 is not an input (upstream).
            if guard.irq.lapic.is_none() {
                if cr8 & !0xf != 0 {
                    return Err(EINVAL);
                }
                guard.arch.cr8 = cr8;
            }
            // HOOK(fix1): the KVM_SET_SIGNAL_MASK mask while the vCPU runs.
            crate::sigmask::with_mask(&mut guard, |l| {
                crate::run::run(self, l, immediate_exit != 0)
            })
        })();
        crate::vcpu_state::store_regs(self, &mut guard);
        crate::run::post_run_save(self, &guard);
        r
    }

    /// The answer of an ioctl that needs the run loop or register state.
    fn not_yet(&self) -> Result<isize> {
        if self.vm().is_td() {
            // Upstream: no TD vCPU runs or shows its registers before KVM_TDX_INIT_VCPU.
            Err(EINVAL)
        } else {
            Err(eopnotsupp())
        }
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        if !self.vm().usable_by_current() {
            return Err(EIO);
        }
        if ioc_type(cmd) != KVMIO {
            return Err(EINVAL);
        }
        // HOOK(irqmod): KVM_INTERRUPT, KVM_NMI, MP state with an in-kernel LAPIC.
        if let Some(r) = crate::irq::inject::vcpu_ioctl(self, cmd, arg) {
            return r;
        }
        match cmd {
            KVM_RUN => self.run(arg),
            KVM_GET_STATS_FD => stats_fd::vcpu_stats_fd(self),
            KVM_GET_TSC_KHZ => Ok(self.tsc_khz() as isize),
            KVM_SET_TSC_KHZ => self.set_tsc_khz(arg as u32),
            tdx::kvm::uapi::KVM_MEMORY_ENCRYPT_OP => crate::tdx_vm::vcpu_op(self, arg),
            crate::mem_abi::KVM_PRE_FAULT_MEMORY => crate::prefault::pre_fault_memory(self, arg),
            crate::exits::KVM_SET_GUEST_DEBUG => crate::exit_vcpu::set_guest_debug(self, arg),
            crate::pv::KVM_KVMCLOCK_CTRL => crate::pv::kvmclock_ctrl(self), // HOOK(clock)
            crate::sigmask::KVM_SET_SIGNAL_MASK => crate::sigmask::set_signal_mask(self, arg), // HOOK(fix1)
            c if crate::vcpu_state::is_state_ioctl(c) => crate::vcpu_state::ioctl(self, c, arg),
            c if VCPU_STATE_IOCTLS.contains(&c) => {
                let _guard = self.mutex.lock_killable()?;
                self.not_yet()
            }
            _ => Err(EINVAL),
        }
    }
}

/// `KVM_CREATE_VCPU` (upstream `kvm_vm_ioctl_create_vcpu` + x86 `kvm_arch_vcpu_precreate`).
pub(crate) fn create(vm: &Vm, id: usize) -> Result<isize> {
    // IDs are `int`s upstream: anything at or above the limit, bits 63:32 included, is EINVAL.
    if id >= KVM_MAX_VCPU_IDS as usize {
        return Err(EINVAL);
    }
    let id = id as u32;
    {
        let mut l = vm.lock();
        if l.created_vcpus >= vm.max_vcpus() {
            return Err(EINVAL);
        }
        if l.max_vcpu_ids == 0 {
            l.max_vcpu_ids = KVM_MAX_VCPU_IDS;
        }
        if id >= l.max_vcpu_ids {
            return Err(EINVAL);
        }
        l.created_vcpus += 1;
    }
    let r = install(vm, id);
    if r.is_err() {
        vm.lock().created_vcpus -= 1;
    }
    r
}

/// Under the VM lock: checks the id is free, allocates the vCPU into the next table slot and
/// gives userspace its fd. (Upstream allocates outside the lock and checks the id after; the
/// answers are the same, and a mutex may be held while allocating.)
fn install(vm: &Vm, id: u32) -> Result<isize> {
    let mut l = vm.lock();
    crate::tdx_vm::vcpu_create_check(vm)?;
    if l.online().any(|v| v.id == id) {
        return Err(EEXIST);
    }
    let idx = l.online_vcpus as usize;
    let vcpu = Vcpu::new(vm, id, idx as u32)?;
    // HOOK(irqmod): the in-kernel LAPIC (upstream kvm_create_lapic), once the vCPU is pinned.
    crate::irq::lapic::create(vm, &vcpu)?;
    // The box is pinned: the pointer stays valid when the box moves into the table.
    let vcpu_ptr: *const Vcpu = &*vcpu;
    if idx < l.vcpus.len() {
        l.vcpus[idx] = Some(vcpu);
    } else if l.vcpus.push(Some(vcpu), GFP_KERNEL).is_err() {
        // `push` dropped the box with its pages; the caches are still empty.
        stats::dec(stats::Kind::Vcpu);
        return Err(ENOMEM);
    }
    // The fd holds a VM reference from now on (given back in `tdxkvm_rust_vcpu_release`).
    let vm_ref = vm.get_raw();
    // SAFETY: `vcpu_ptr` points into the pinned box now owned by the VM's table, alive as long
    // as the VM, which the new file keeps alive; the file gives the reference back at release.
    let fd = unsafe { glue::tdxkvm_vcpu_fd(vcpu_ptr as *mut c_void, id) };
    if fd < 0 {
        let v = l.vcpus.get_mut(idx).and_then(|s| s.take());
        drop(l);
        if let Some(v) = v {
            v.destroy(vm.mmu());
        }
        // SAFETY: the reference taken above; no file took it.
        unsafe { Vm::put_raw(vm_ref) };
        return Err(Error::from_errno(fd));
    }
    // HOOK(irqmod): the lock-free vCPU table IPIs resolve destinations over.
    vm.apic().publish(idx, vcpu_ptr);
    l.online_vcpus += 1;
    vm.publish_online_vcpus(&l);
    // HOOK(hostile): kvm_arch_vcpu_postcreate's TSC matching (the master clock).
    vm.clock().vcpu_created();
    Ok(fd as isize)
}

/// `EOPNOTSUPP` (the 6.12 kernel crate names no constant for it).
pub(crate) fn eopnotsupp() -> Error {
    Error::from_errno(-(kernel::bindings::EOPNOTSUPP as i32))
}

/// vCPU ioctls whose state does not exist yet: the in-kernel LAPIC (the next issue).
const VCPU_STATE_IOCTLS: [u32; 2] = [KVM_GET_LAPIC, KVM_SET_LAPIC];

/// vCPU-fd ioctl entry point.
///
/// # Safety
///
/// `vcpu` is the `private_data` of a vCPU file (set in [`install`]); the file holds a VM
/// reference until release, which cannot run while an ioctl is in flight on the file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vcpu_ioctl(
    vcpu: *const c_void,
    cmd: u32,
    arg: usize,
) -> isize {
    // SAFETY: the caller's contract: the vCPU lives as long as its VM, which the file keeps.
    let vcpu = unsafe { &*vcpu.cast::<Vcpu>() };
    vcpu.ioctl(cmd, arg)
        .unwrap_or_else(|e| e.to_errno() as isize)
}

/// The page behind page `pgoff` of a vCPU mapping (its direct-map address), or NULL (SIGBUS).
///
/// # Safety
///
/// `vcpu` is the `private_data` of a vCPU file whose mapping is being faulted (the mapping holds
/// the file, the file holds the VM, the VM holds the vCPU).
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vcpu_page(
    vcpu: *const c_void,
    pgoff: usize,
) -> *mut c_void {
    // SAFETY: the caller's contract.
    let vcpu = unsafe { &*vcpu.cast::<Vcpu>() };
    vcpu.page_at(pgoff)
        .map_or(core::ptr::null_mut(), |p| p.virt().cast())
}

/// vCPU-fd release: gives the file's VM reference back (the last one tears the VM down).
///
/// # Safety
///
/// `vcpu` is the `private_data` of a vCPU file, released exactly once.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_vcpu_release(vcpu: *const c_void) {
    // SAFETY: the caller's contract: the vCPU is alive until the VM reference below is dropped.
    let vm: *const Vm = unsafe { (*vcpu.cast::<Vcpu>()).vm };
    // SAFETY: the reference `install` took for this file, given back once.
    unsafe { Vm::put_raw(vm) };
}

impl Vcpu {
    /// The vCPU id (`vcpu_id`).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Position in the VM's vCPU table.
    pub(crate) fn idx(&self) -> u32 {
        self.idx
    }

    /// HOOK(irqmod): the guest TSC rate in kHz (the LAPIC's TSC-deadline timer).
    pub(crate) fn tsc_khz(&self) -> u32 {
        self.tsc_khz.load(Ordering::Relaxed)
    }

    /// vCPU `KVM_SET_TSC_KHZ` (upstream `kvm_arch_vcpu_ioctl`'s case + `kvm_set_tsc_khz`, no
    /// TSC scaling): 0 is the host's rate; only rates within the tolerance of the host's are
    /// accepted (`EINVAL` otherwise; a slower one is still stored, as upstream does).
    fn set_tsc_khz(&self, khz: u32) -> Result<isize> {
        let _guard = self.lock_killable()?;
        let host = u32::try_from(crate::clock::host_tsc_khz()).unwrap_or(u32::MAX);
        let (rate, ok) = x86::msr::vcpu_set_tsc_khz(khz, host);
        if let Some(r) = rate {
            self.tsc_khz.store(r, Ordering::Relaxed);
        }
        if ok {
            Ok(0)
        } else {
            Err(EINVAL)
        }
    }
}
