// SPDX-License-Identifier: GPL-2.0-only
//! The VM object (upstream `struct kvm`): one per `KVM_CREATE_VM`, reference counted.
//!
//! The VM fd holds a reference, and so does every vCPU fd, every stats fd and (later) every
//! guest_memfd file, as upstream's `kvm_get_kvm()` / `kvm_put_kvm()` do: whichever of them is
//! closed last tears the VM down, so teardown works in any order of closing them. The VM owns
//! its vCPUs (upstream frees vCPUs in `kvm_destroy_vm()`, never at vCPU-fd close): a vCPU fd
//! points at a vCPU inside the VM and keeps the VM alive, so the pointer stays valid.
//!
//! Teardown, in [`PinnedDrop::drop`] and then the fields' own drops: every vCPU gives its MMU
//! caches back to the MMU and its pages to the allocator, then the MMU goes (for a TD: HKID
//! released through the S-EPT backend, the MMU torn down with one RECLAIM per page, then the TD
//! control pages), exactly as before the VM was shared: every page is returned.
//!
//! Locking (upstream's order): the VM lock ([`Vm::lock`], `kvm->lock`) guards the vCPU table,
//! the vCPU counts, `max_vcpu_ids` and the TD's KVM-side state; a vCPU's mutex
//! ([`crate::vcpu::Vcpu`], `vcpu->mutex`) nests inside it; the MMU lock (inside the MMU) is
//! innermost and is never held while allocating (vCPU caches are topped up before it is taken).

use crate::abi::*;
use crate::env::{KernelEnv, OwnedPage};
use crate::glue;
use crate::stats;
use crate::stats_fd::StatsId;
use crate::td::TdVm;
use crate::vcpu::Vcpu;
use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use mmu::cache::VcpuMmuCaches;
use mmu::external::NoExternal;
use mmu::spte::Npt;
use mmu::stats::StatsSnapshot;
use mmu::tdp::{MmuConfig, TdpMmu};

/// Most vCPUs a VM may have (x86 `KVM_MAX_VCPUS`, `CONFIG_KVM_MAX_NR_VCPUS` default).
pub(crate) const KVM_MAX_VCPUS: u32 = 1024;
/// vCPU IDs are below this (x86 `KVM_MAX_VCPU_IDS` = `KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO`).
pub(crate) const KVM_MAX_VCPU_IDS: u32 = KVM_MAX_VCPUS * 4;

/// The MMU of a VM, by type.
// A `VmMmu` lives inside the VM's one allocation: boxing the TD variant as well would cost every
// TD a second allocation and save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum VmMmu {
    /// `KVM_X86_DEFAULT_VM` or `KVM_X86_SW_PROTECTED_VM`: a shared root only. Nothing maps
    /// memory into it before memslots exist; it is held so its pages are accounted and returned.
    Plain(TdpMmu<Npt, KernelEnv, NoExternal>),
    /// `KVM_X86_TDX_VM`.
    Td(TdVm),
}

impl VmMmu {
    /// The MMU's page accounting (zero if a TD's MMU is already gone).
    pub(crate) fn stats(&self) -> StatsSnapshot {
        match self {
            VmMmu::Plain(m) => m.stats(),
            VmMmu::Td(td) => td.mmu().map(|m| m.stats()).unwrap_or_default(),
        }
    }

    /// The TD side, for a TD.
    pub(crate) fn td(&self) -> Option<&TdVm> {
        match self {
            VmMmu::Plain(_) => None,
            VmMmu::Td(td) => Some(td),
        }
    }

    /// Marks the VM bugged (upstream `KVM_BUG_ON`): every later VM and vCPU ioctl is `EIO`.
    pub(crate) fn mark_bugged(&self) {
        match self {
            VmMmu::Plain(m) => m.mark_bugged(),
            VmMmu::Td(td) => {
                if let Some(m) = td.mmu() {
                    m.mark_bugged()
                }
            }
        }
    }

    /// Whether the MMU marked the VM bugged (a fatal hook error or a broken invariant); a TD
    /// whose MMU is gone counts as bugged.
    pub(crate) fn is_bugged(&self) -> bool {
        match self {
            VmMmu::Plain(m) => m.is_bugged(),
            VmMmu::Td(td) => td.mmu().map_or(true, |m| m.is_bugged()),
        }
    }

    /// Tops a vCPU's caches up for one fault (for a TD including the private-SPT cache).
    /// Must be called before the MMU lock is taken: allocation may sleep.
    // The fault and pre-fault paths (issue 10's memslot part, issue 11's run loop) call this.
    #[allow(dead_code)]
    pub(crate) fn topup_vcpu_caches(&self, caches: &mut VcpuMmuCaches) -> Result {
        let r = match self {
            VmMmu::Plain(m) => m.topup_vcpu_caches(caches),
            VmMmu::Td(td) => td.mmu().ok_or(EIO)?.topup_vcpu_caches(caches),
        };
        r.map_err(|_| ENOMEM)
    }

    /// Gives everything a vCPU's caches hold back (vCPU destroy).
    pub(crate) fn free_vcpu_caches(&self, caches: &mut VcpuMmuCaches) {
        match self {
            VmMmu::Plain(m) => m.free_vcpu_caches(caches),
            VmMmu::Td(td) => {
                if let Some(m) = td.mmu() {
                    m.free_vcpu_caches(caches)
                }
            }
        }
    }
}

pub(crate) use crate::memslot::Memslots;

/// What the VM lock guards (upstream fields protected by `kvm->lock`).
pub(crate) struct VmLocked {
    /// vCPUs being created or created (upstream `created_vcpus`), at most `max_vcpus`.
    pub(crate) created_vcpus: u32,
    /// vCPUs visible to userspace (upstream `online_vcpus`): the first `online_vcpus` slots of
    /// `vcpus` hold them, in creation order (`vcpu_idx`).
    pub(crate) online_vcpus: u32,
    /// vCPU IDs must be below this; 0 until `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)` sets it or the
    /// first vCPU fixes it at `KVM_MAX_VCPU_IDS` (x86 `kvm->arch.max_vcpu_ids`).
    pub(crate) max_vcpu_ids: u32,
    /// The vCPUs, by `vcpu_idx` (upstream `vcpu_array`). A slot past `online_vcpus` is either
    /// empty or the vCPU being made visible.
    pub(crate) vcpus: KVec<Option<Pin<KBox<Vcpu>>>>,
}

impl VmLocked {
    /// The online vCPUs.
    pub(crate) fn online(&self) -> impl Iterator<Item = &Vcpu> {
        self.vcpus
            .iter()
            .take(self.online_vcpus as usize)
            .filter_map(|v| v.as_deref())
    }
}

/// The `mm` of the process that created the VM (upstream `kvm->mm`, with `mmgrab`): VM and vCPU
/// ioctls from another process fail with `EIO`. Only compared, never used to reach memory.
struct CreatorMm(NonNull<c_void>);

// SAFETY: a counted reference to an `mm_struct`; dropping it (`mmdrop`) works from any thread.
unsafe impl Send for CreatorMm {}
// SAFETY: only the pointer value is read.
unsafe impl Sync for CreatorMm {}

impl CreatorMm {
    fn current() -> Option<Self> {
        // SAFETY: takes a reference to current->mm (mmgrab), NULL for a kernel thread.
        NonNull::new(unsafe { glue::tdxkvm_mm_grab_current() }).map(CreatorMm)
    }

    fn is_current(&self) -> bool {
        // SAFETY: reads current->mm; no reference taken.
        unsafe { glue::tdxkvm_current_mm() == self.0.as_ptr() }
    }
}

impl Drop for CreatorMm {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `current()`, dropped once.
        unsafe { glue::tdxkvm_mmdrop(self.0.as_ptr()) };
    }
}

/// A VM.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    /// The machine type (`KVM_X86_*_VM`).
    vm_type: usize,
    /// Most vCPUs (upstream `kvm->max_vcpus`): `KVM_MAX_VCPUS`, for a TD also at most the
    /// present CPUs (tdx-vm-abi.md §1).
    max_vcpus: u32,
    mm: CreatorMm,
    /// "kvm-<pid>", the stats fd's id string.
    stats_id: StatsId,
    /// `kvm->lock`.
    #[pin]
    lock: Mutex<VmLocked>,
    /// The TSC rate in kHz vCPUs are created with (x86 `kvm->arch.default_tsc_khz`): the host's
    /// until `KVM_SET_TSC_KHZ` on the VM fd; a TD's TD_PARAMS take it at INIT_VM. Written under
    /// the VM lock, only while no vCPU exists.
    default_tsc_khz: AtomicU32,
    /// A copy of `VmLocked::online_vcpus` for readers that must not wait for the VM lock (the
    /// stats fd: upstream reads `online_vcpus` atomically, and INIT_VM or a long
    /// INIT_MEM_REGION holds the lock for a while). Written only under the lock.
    online_vcpus: AtomicU32,
    mmu: VmMmu,
    /// Memslots and memory attributes under `slots_lock` ([`crate::memslot`]).
    #[pin]
    memslots: Memslots,
    /// The coalesced-MMIO ring page, mapped at page 2 of every vCPU fd (upstream allocates it
    /// with the VM); [`crate::exits`] fills it for writes inside a registered zone.
    coalesced_mmio_ring: OwnedPage,
    /// Userspace-exit configuration, MSR filter, coalesced zones, ioeventfds ([`crate::exits`]).
    #[pin]
    exits: crate::exits::VmExits,
    /// HOOK(clock): kvm-clock, the wall-clock MSR, HLT-exit setting ([`crate::clock`]).
    #[pin]
    clock: crate::clock::VmClock,
    /// HOOK(irqroute): the in-kernel irqchip ([`crate::irq`]).
    #[pin]
    irq: crate::irq::VmIrq,
    /// HOOK(irqmod): VM-wide LAPIC settings and the lock-free vCPU table.
    apic: crate::irq::lapic::VmApic,
    // HOOK(misc): KVM_CREATE_DEVICE's devices.
    devices: crate::device::VmDevices,
    quirks: crate::ud::VmQuirks, // HOOK(ud): kvm->arch.disabled_quirks
    /// HOOK(abi): small VM-wide ABI switches ([`crate::vm_abi`]).
    abi: crate::vm_abi::VmAbi,
}

impl Vm {
    /// `KVM_CREATE_VM` for a type the caller validated; `td` is the TDX backend for a TD.
    pub(crate) fn create(vm_type: usize, td: Option<crate::backend::TdxRef>) -> Result<Arc<Vm>> {
        // kvm-clock starts at 0 here, before the MMU and the rest (upstream kvm_arch_init_vm).
        let clock_start = crate::clock::snapshot();
        let mm = CreatorMm::current().ok_or(EINVAL)?;
        let (mmu, max_vcpus) = match td {
            Some(b) => {
                // SAFETY: reads num_present_cpus(); no preconditions.
                let present = unsafe { glue::tdxkvm_num_present_cpus() };
                (VmMmu::Td(TdVm::new(b)?), KVM_MAX_VCPUS.min(present).max(1))
            }
            None => {
                let env = KernelEnv::new().ok_or(ENOMEM)?;
                let m = TdpMmu::new(env, NoExternal, MmuConfig::vm(crate::svm::npt_gpa_width()))
                    .map_err(|_| ENOMEM)?;
                (VmMmu::Plain(m), KVM_MAX_VCPUS)
            }
        };
        let ring = OwnedPage::new(stats::Kind::VcpuPage).ok_or(ENOMEM)?;
        let apic = crate::irq::lapic::VmApic::new()?; // HOOK(irqmod)
                                                      // Upstream kvm->arch.pre_fault_allowed: a TD's KVM_TDX_FINALIZE_VM sets it.
        let pre_fault_allowed = vm_type != KVM_X86_TDX_VM;
        let stats_id = StatsId::vm();
        let vm = Arc::pin_init(
            pin_init!(Vm {
                vm_type,
                max_vcpus,
                mm,
                stats_id,
                lock <- new_mutex!(
                    VmLocked {
                        created_vcpus: 0,
                        online_vcpus: 0,
                        max_vcpu_ids: 0,
                        vcpus: KVec::new(),
                    },
                    "kvm->lock"
                ),
                online_vcpus: AtomicU32::new(0),
                default_tsc_khz: AtomicU32::new(host_tsc_khz()),
                mmu,
                memslots <- Memslots::new(pre_fault_allowed),
                coalesced_mmio_ring: ring,
                exits <- crate::exits::VmExits::new(),
                clock <- crate::clock::VmClock::new(clock_start), // HOOK(clock)
                irq <- crate::irq::VmIrq::new(), // HOOK(irqroute)
                apic, // HOOK(irqmod)
                devices: crate::device::VmDevices::new(),
                quirks: crate::ud::VmQuirks::new(), // HOOK(ud)
                abi: crate::vm_abi::VmAbi::new(), // HOOK(abi)
            }),
            GFP_KERNEL,
        )?;
        stats::inc(stats::Kind::Vm);
        Ok(vm)
    }

    /// Whether this VM is a TD.
    pub(crate) fn is_td(&self) -> bool {
        self.vm_type == KVM_X86_TDX_VM
    }

    /// Most vCPUs.
    pub(crate) fn max_vcpus(&self) -> u32 {
        self.max_vcpus
    }

    /// The VM lock (`kvm->lock`).
    pub(crate) fn lock(
        &self,
    ) -> kernel::sync::lock::Guard<'_, VmLocked, kernel::sync::lock::mutex::MutexBackend> {
        self.lock.lock()
    }

    /// The TSC rate (kHz) of vCPUs created from now on.
    pub(crate) fn default_tsc_khz(&self) -> u32 {
        self.default_tsc_khz.load(Ordering::Relaxed)
    }

    /// `KVM_SET_TSC_KHZ` on the VM fd (x86 `kvm_arch_vm_ioctl`, x86.c:6846): 0 means the host's
    /// rate; it sets the rate of vCPUs created from now on, at any time (HOOK(hostile): 6.12 has
    /// no `created_vcpus` check; measured against kvm_amd). There is no TSC scaling here, so no
    /// upper bound applies (upstream checks `max_guest_tsc_khz` only with TSC control).
    pub(crate) fn set_default_tsc_khz(&self, khz: u32) -> Result {
        let khz = if khz == 0 { host_tsc_khz() } else { khz };
        self.default_tsc_khz.store(khz, Ordering::Relaxed);
        Ok(())
    }

    /// vCPUs online, without the VM lock (a snapshot: creation may be under way).
    pub(crate) fn online_vcpus(&self) -> u32 {
        self.online_vcpus.load(Ordering::Relaxed)
    }

    /// Publishes `VmLocked::online_vcpus` for [`Vm::online_vcpus`]; called with the VM lock held
    /// (the guard proves it) after the count changed.
    pub(crate) fn publish_online_vcpus(&self, locked: &VmLocked) {
        self.online_vcpus
            .store(locked.online_vcpus, Ordering::Relaxed);
    }

    /// The MMU.
    pub(crate) fn mmu(&self) -> &VmMmu {
        &self.mmu
    }

    /// The machine type (`KVM_X86_*_VM`).
    pub(crate) fn vm_type(&self) -> usize {
        self.vm_type
    }

    /// Memslots and memory attributes (`slots_lock`).
    pub(crate) fn memslots(&self) -> &Memslots {
        &self.memslots
    }

    /// The stats id ("kvm-<pid>").
    pub(crate) fn stats_id(&self) -> &StatsId {
        &self.stats_id
    }

    /// The coalesced-MMIO ring page.
    pub(crate) fn coalesced_mmio_ring(&self) -> &OwnedPage {
        &self.coalesced_mmio_ring
    }

    /// HOOK(ud): the VM's quirks ([`crate::ud`]).
    pub(crate) fn quirks(&self) -> &crate::ud::VmQuirks {
        &self.quirks
    }

    /// Userspace-exit configuration and the VM's in-kernel I/O devices ([`crate::exits`]).
    pub(crate) fn exits(&self) -> &crate::exits::VmExits {
        &self.exits
    }

    /// HOOK(irqmod): VM-wide LAPIC state ([`crate::irq::lapic`]).
    pub(crate) fn apic(&self) -> &crate::irq::lapic::VmApic {
        &self.apic
    }

    /// HOOK(abi): the VM's small ABI switches ([`crate::vm_abi`]).
    pub(crate) fn abi(&self) -> &crate::vm_abi::VmAbi {
        &self.abi
    }

    /// HOOK(clock): the VM's kvm-clock ([`crate::clock`]).
    pub(crate) fn clock(&self) -> &crate::clock::VmClock {
        &self.clock
    }

    /// HOOK(irqroute): the in-kernel irqchip state ([`crate::irq`]).
    pub(crate) fn irq(&self) -> &crate::irq::VmIrq {
        &self.irq
    }

    /// HOOK(irqroute): which interrupt controllers are in the kernel (upstream
    /// `kvm->arch.irqchip_mode`).
    pub(crate) fn irqchip_mode(&self) -> crate::irq::IrqchipMode {
        self.irq.mode()
    }

    /// HOOK(misc): the VM's devices ([`crate::device`]).
    pub(crate) fn devices(&self) -> &crate::device::VmDevices {
        &self.devices
    }

    /// Whether VM and vCPU ioctls may run: the calling process created the VM and the VM is not
    /// bugged (upstream: `kvm->mm != current->mm || kvm->vm_dead` → EIO; a bugged VM is dead).
    pub(crate) fn usable_by_current(&self) -> bool {
        self.mm.is_current() && !self.mmu.is_bugged()
    }

    /// A new counted reference for a file (vCPU fd, stats fd), as a raw pointer that
    /// [`Vm::put_raw`] gives back.
    pub(crate) fn get_raw(&self) -> *const Vm {
        let p: *const Vm = self;
        // SAFETY: every `&Vm` handed out here comes from a live `Arc<Vm>` (the VM file's, a vCPU
        // file's or a stats file's reference, which outlives the call), so `p` came from
        // `Arc::into_raw` of a VM whose count is non-zero, and no `UniqueArc` exists.
        let borrowed = unsafe { ArcBorrow::from_raw(p) };
        Arc::into_raw(Arc::<Vm>::from(borrowed))
    }

    /// Drops a reference taken with [`Vm::get_raw`] (or the VM file's own).
    ///
    /// # Safety
    ///
    /// `p` came from [`Vm::get_raw`] or `Arc::into_raw`, and this reference is given back once.
    pub(crate) unsafe fn put_raw(p: *const Vm) {
        // SAFETY: the caller's contract.
        drop(unsafe { Arc::from_raw(p) });
    }

    /// A VM reference held by a file, from the file's `private_data`.
    ///
    /// # Safety
    ///
    /// `p` is a reference from [`Vm::get_raw`] or `Arc::into_raw` that stays held for `'a`.
    pub(crate) unsafe fn from_file<'a>(p: *const c_void) -> &'a Vm {
        // SAFETY: the caller's contract: the counted reference keeps the VM alive for 'a.
        unsafe { &*p.cast::<Vm>() }
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // HOOK(irqroute): no irqfd work item may reach the VM while it goes.
        crate::irq::teardown(&self);
        // No MMU-notifier callback may reach the VM while it goes.
        self.memslots.shutdown();
        // The last reference is gone: no file can reach the VM or its vCPUs any more. Each vCPU
        // gives its cache pages back to the MMU's allocator before the MMU goes.
        let vcpus = core::mem::take(&mut self.lock.lock().vcpus);
        for v in vcpus.into_iter().flatten() {
            v.destroy(&self.mmu);
        }
        // And the VM's split cache (conversions, hole punches) gives its pages back too.
        self.mmu.free_split_cache(&mut self.memslots.lock().split);
        stats::dec(stats::Kind::Vm);
        // Then the fields drop: the MMU (for a TD: HKID release, MMU teardown, control pages),
        // the ring page, the creator's mm reference.
    }
}

/// The host's TSC rate in kHz (the kernel's `tsc_khz`).
fn host_tsc_khz() -> u32 {
    // SAFETY: reads the kernel's `tsc_khz`; no preconditions.
    unsafe { glue::tdxkvm_tsc_khz() }
}
