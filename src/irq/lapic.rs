// SPDX-License-Identifier: GPL-2.0-only
//! The in-kernel local APIC, kernel side (upstream arch/x86/kvm/lapic.c around the register
//! model in `irqchip::lapic`): one per vCPU when the VM has an in-kernel irqchip.
//!
//! - The model ([`Lapic`]) lives under the vCPU mutex ([`VcpuLapic`], in
//!   [`crate::irq::inject::IrqLocked`]). Other threads post to the vCPU's inbox
//!   ([`Pir`], in [`crate::irq::kick::VcpuIrq`]) after matching the destination against the
//!   published [`DestInfo`] (an `AtomicU64` next to it), then kick; the vCPU thread merges the
//!   inbox before it evaluates interrupts ([`sync`]).
//! - [`deliver`] (upstream `kvm_irq_delivery_to_apic`) resolves IPIs, IOAPIC and MSI requests
//!   over the VM's vCPUs through [`VmApic`]'s lock-free table, never taking a vCPU mutex.
//! - Guest accesses: the xAPIC page through the MMIO emulation path ([`mmio_read`],
//!   [`mmio_write`]), x2APIC MSRs 0x800-0x8ff, IA32_APIC_BASE and IA32_TSC_DEADLINE through
//!   the MSR paths ([`guest_msr`], [`host_msr`]); `KVM_GET/SET_LAPIC`.
//! - The timer runs on an hrtimer ([`crate::irq::timer`]).
//! - VM-wide: `KVM_SET_BOOT_CPU_ID`, `KVM_CAP_X2APIC_API`, `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
//!
//! CR8 and IA32_APIC_BASE also live in `CpuState` (SREGS, the VMCB's V_TPR, `kvm_run`): after
//! every LAPIC operation they are copied out of the model, and before each use of the model
//! a change made there (a guest MOV to CR8, `KVM_SET_SREGS`) is applied to it.

use crate::irq::kick;
use crate::vcpu::{Vcpu, VcpuLocked};
use crate::vm::Vm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use irqchip::irq::LapicIrq;
use irqchip::lapic::{
    deliver_irq, DeliveryCtx, DestInfo, Effects, Lapic, LapicState, Now, TimerCmd, VmApicConfig,
};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use x86::uapi::mp_state;

pub(crate) use irqchip::lapic::Pir;

/// `KVM_GET_LAPIC`.
const KVM_GET_LAPIC: u32 = 0x8400_ae8e;
/// `KVM_SET_LAPIC`.
const KVM_SET_LAPIC: u32 = 0x4400_ae8f;
/// `KVM_SET_BOOT_CPU_ID` (`_IO(KVMIO, 0x78)`).
const KVM_SET_BOOT_CPU_ID: u32 = 0xae78;
/// `KVM_CAP_SET_BOOT_CPU_ID`.
const KVM_CAP_SET_BOOT_CPU_ID: u64 = 34;
/// `KVM_CAP_TSC_DEADLINE_TIMER`.
const KVM_CAP_TSC_DEADLINE_TIMER: u64 = 72;
/// `KVM_CAP_X2APIC_API`.
pub(crate) const KVM_CAP_X2APIC_API: u64 = 129;
/// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
pub(crate) const KVM_CAP_X86_APIC_BUS_CYCLES_NS: u64 = 237;
const KVM_X2APIC_API_USE_32BIT_IDS: u64 = 1;
const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK: u64 = 2;
const KVM_X2APIC_API_VALID_FLAGS: u64 =
    KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;

const MSR_IA32_APICBASE: u32 = 0x1b;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const X2APIC_MSR_FIRST: u32 = 0x800;
const X2APIC_MSR_LAST: u32 = 0x8ff;
const LAPIC_MMIO_LENGTH: u64 = 4096;

/// VM-wide LAPIC settings and the lock-free vCPU table (a field of [`Vm`]).
pub(crate) struct VmApic {
    /// `KVM_X2APIC_API_USE_32BIT_IDS` (`kvm->arch.x2apic_format`).
    x2apic_format: AtomicBool,
    /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`.
    broadcast_quirk_disabled: AtomicBool,
    /// `KVM_SET_BOOT_CPU_ID` (`kvm->arch.bsp_vcpu_id`); written under the VM lock before any
    /// vCPU exists.
    boot_cpu_id: AtomicU32,
    /// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`; written under the VM lock before any vCPU exists.
    bus_cycle_ns: AtomicU64,
    /// vCPUs by `vcpu_idx`, published when they go online and never cleared before the VM
    /// goes (upstream reads `kvm->vcpu_array` without `kvm->lock` the same way).
    vcpus: KVec<AtomicPtr<Vcpu>>,
    /// LAPICs whose LVT0 is unmasked in NMI mode (upstream `kvm->arch.vapics_in_nmi_mode`):
    /// while non-zero each PIT tick delivers every vCPU's LVT0.
    vapics_in_nmi_mode: core::sync::atomic::AtomicI32,
}

impl VmApic {
    /// The defaults (boot vCPU 0, upstream's bus cycle) and an empty table.
    pub(crate) fn new() -> Result<Self> {
        let n = crate::vm::KVM_MAX_VCPUS as usize;
        let mut vcpus = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            vcpus.push(AtomicPtr::new(core::ptr::null_mut()), GFP_KERNEL)?;
        }
        Ok(VmApic {
            x2apic_format: AtomicBool::new(false),
            broadcast_quirk_disabled: AtomicBool::new(false),
            boot_cpu_id: AtomicU32::new(0),
            bus_cycle_ns: AtomicU64::new(irqchip::lapic::regs::APIC_BUS_CYCLE_NS_DEFAULT),
            vcpus,
            vapics_in_nmi_mode: core::sync::atomic::AtomicI32::new(0),
        })
    }

    /// Publishes the vCPU at `idx` (vCPU creation, under the VM lock, before the online
    /// count covers it).
    pub(crate) fn publish(&self, idx: usize, vcpu: *const Vcpu) {
        if let Some(s) = self.vcpus.get(idx) {
            s.store(vcpu.cast_mut(), Ordering::Release);
        }
    }

    /// The vCPU at `idx`, if published.
    fn vcpu(&self, idx: usize) -> Option<&Vcpu> {
        let p = self.vcpus.get(idx)?.load(Ordering::Acquire);
        // SAFETY: a published vCPU stays alive as long as the VM, which the caller's `&self`
        // (a field of the VM) keeps alive.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    fn ctx(&self) -> DeliveryCtx {
        DeliveryCtx {
            x2apic_format: self.x2apic_format.load(Ordering::Relaxed),
            broadcast_quirk_disabled: self.broadcast_quirk_disabled.load(Ordering::Relaxed),
        }
    }

    /// `kvm_vcpu_is_reset_bsp`.
    fn is_reset_bsp(&self, vcpu_id: u32) -> bool {
        self.boot_cpu_id.load(Ordering::Relaxed) == vcpu_id
    }
}

/// A vCPU's in-kernel LAPIC (under the vCPU mutex).
pub(crate) struct VcpuLapic {
    /// The register model.
    apic: Lapic,
    /// Its hrtimer.
    timer: crate::irq::timer::LapicTimer,
    /// The CPUID bits last given to the model (x2APIC, TSC-deadline); `None` until the
    /// vCPU's table has a leaf 1 (upstream sets the timer modes only from a CPUID table).
    cpuid: Option<(bool, bool)>,
    /// Split irqchip: the vectors whose EOI exits to userspace (upstream
    /// `vcpu->arch.ioapic_handled_vectors`, from `kvm_scan_ioapic_routes`).
    eoi_exit: [u64; 4],
    /// The routing scan generation `eoi_exit` was computed for (0: never).
    eoi_exit_gen: u64,
}

/// The current time for the model (`ktime_get`, the guest's TSC and its rate).
fn now(vcpu: &Vcpu, l: &VcpuLocked) -> Now {
    Now {
        ns: crate::irq::timer::now_ns(),
        guest_tsc: crate::vcpu_state::rdtsc().wrapping_add(l.arch.tsc_offset),
        tsc_khz: vcpu.tsc_khz(),
    }
}

/// The guest CPUID's x2APIC and TSC-deadline bits (leaf 1 ECX bits 21 and 24), if the table
/// has leaf 1.
fn cpuid_bits(l: &VcpuLocked) -> Option<(bool, bool)> {
    l.cpuid
        .entries
        .iter()
        .find(|e| e.function == 1 && e.index == 0)
        .map(|e| (e.ecx & (1 << 21) != 0, e.ecx & (1 << 24) != 0))
}

/// Creates the vCPU's LAPIC at vCPU creation when the VM has an in-kernel irqchip (upstream
/// `kvm_create_lapic` + `kvm_lapic_reset`); APIs other than the boot vCPU start
/// `UNINITIALIZED` (they wait for INIT/SIPI). Called under the VM lock with the new vCPU
/// pinned in its box.
pub(crate) fn create(vm: &Vm, vcpu: &Vcpu) -> Result {
    if !vm.irqchip_mode().in_kernel() {
        return Ok(());
    }
    let a = vm.apic();
    let cfg = VmApicConfig {
        ioapic_in_kernel: vm.irqchip_mode() == crate::irq::IrqchipMode::Kernel,
        bus_cycle_ns: a.bus_cycle_ns.load(Ordering::Relaxed),
    };
    let timer = crate::irq::timer::LapicTimer::new(vcpu).ok_or(ENOMEM)?;
    let mut apic = Lapic::new(vcpu.id(), cfg);
    let bsp = a.is_reset_bsp(vcpu.id());
    // KVM_X86_QUIRK_LINT0_REENABLED is on by default: LVT0 = ExtINT on the boot vCPU.
    let _ = apic.reset(false, bsp, true, &vcpu.irq.pir);
    vcpu.irq
        .dest
        .store(apic.dest_info().to_bits(), Ordering::Release);
    vcpu.irq
        .accept_pic
        .store(apic.accept_pic_intr(), Ordering::Release);
    let mut l = vcpu.lock();
    l.arch.apic_base = apic.apic_base();
    l.arch.cr8 = apic.cr8();
    if !bsp {
        l.arch.mp_state = mp_state::UNINITIALIZED;
    }
    l.irq.lapic = Some(VcpuLapic {
        apic,
        timer,
        cpuid: None,
        eoi_exit: [0; 4],
        eoi_exit_gen: 0,
    });
    Ok(())
}

/// Applies what a model call asks for: the timer, the published destination, an IPI, an EOI
/// to the IOAPIC; then copies CR8 and IA32_APIC_BASE back into `CpuState`.
fn apply(vcpu: &Vcpu, l: &mut VcpuLocked, fx: Effects) {
    let Some(la) = l.irq.lapic.as_mut() else {
        return;
    };
    let eoi_exit = fx
        .eoi
        .is_some_and(|e| irqchip::ioapic::test_vector(&la.eoi_exit, e.vector));
    match fx.timer {
        TimerCmd::Arm { at_ns, token } => la.timer.arm(at_ns, token),
        TimerCmd::Cancel => la.timer.cancel(),
        TimerCmd::Keep => {}
    }
    if let Some(nmi) = fx.lvt0_nmi_mode {
        // HOOK(irqfix): upstream apic_manage_nmi_watchdog's vapics_in_nmi_mode.
        let c = &vcpu.vm().apic().vapics_in_nmi_mode;
        if nmi {
            c.fetch_add(1, Ordering::AcqRel);
        } else {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
    if fx.dest_changed {
        vcpu.irq
            .dest
            .store(la.apic.dest_info().to_bits(), Ordering::Release);
        // HOOK(irqfix): kvm_recalculate_apic_map's KVM_REQ_SCAN_IOAPIC.
        vcpu.vm().irq().routing().request_scan();
    }
    l.arch.cr8 = la.apic.cr8();
    l.arch.apic_base = la.apic.apic_base();
    if vcpu.vm().irqchip_mode() == crate::irq::IrqchipMode::Kernel {
        publish_eoi_pending(vcpu, &la.apic);
    }
    vcpu.irq
        .accept_pic
        .store(la.apic.accept_pic_intr(), Ordering::Release);
    if fx.mode_changed {
        // CPUID.1:EDX.APIC follows IA32_APIC_BASE.EN (upstream kvm_update_cpuid_runtime).
        crate::vcpu_state::update_cpuid_runtime(l);
    }
    if let Some(irq) = fx.ipi {
        deliver(vcpu.vm(), &irq, Some(vcpu));
    }
    if let Some(e) = fx.eoi {
        if vcpu.vm().irqchip_mode() == crate::irq::IrqchipMode::Split {
            // HOOK(irqfix): upstream kvm_ioapic_send_eoi: only a vector of the EOI-exit
            // bitmap exits to userspace (KVM_EXIT_IOAPIC_EOI), whatever its trigger mode.
            if eoi_exit {
                crate::irq::split_eoi(vcpu, e.vector);
            }
        } else {
            // HOOK(irqroute): every EOI reaches the IOAPIC (edge ones run the ack notifiers
            // only: the PIT's reinjection waits for IRQ0's ack), as upstream
            // kvm_ioapic_send_eoi.
            crate::irq::chip::on_eoi_level(vcpu.vm(), vcpu, e.vector, e.level);
        }
    }
}

/// Publishes the LAPIC's IRR | ISR ([`kick::VcpuIrq::eoi_pending`]); a word is written only
/// when it changed.
fn publish_eoi_pending(vcpu: &Vcpu, apic: &Lapic) {
    for (p, w) in vcpu.irq.eoi_pending.iter().zip(apic.pending_eoi_map()) {
        if p.load(Ordering::Relaxed) != w {
            p.store(w, Ordering::Release);
        }
    }
}

/// Upstream `kvm_rtc_eoi_tracking_restore_all`'s walk over the vCPUs (the IOAPIC's
/// [`irqchip::ioapic::IoapicEnv::rtc_scan`], under the chip lock): each vCPU that
/// (`dest_id`, `logical`) addresses (`kvm_apic_match_dest`: no shorthand, no source APIC,
/// enabled or not) is reported with whether `vector` is in its IRR or ISR as last published,
/// or posted to its inbox and not yet merged (upstream sets IRR at delivery).
pub(crate) fn rtc_scan(
    vm: &Vm,
    dest_id: u32,
    logical: bool,
    vector: u8,
    found: &mut dyn FnMut(u32, bool),
) {
    let a = vm.apic();
    let quirk_off = a.ctx().broadcast_quirk_disabled;
    let irq = LapicIrq {
        vector,
        delivery_mode: irqchip::irq::DeliveryMode::Fixed,
        dest_logical: logical,
        level_triggered: false,
        level: true,
        shorthand: irqchip::irq::Shorthand::None,
        dest_id,
        msi_redir_hint: false,
    };
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    for v in (0..n).filter_map(|i| a.vcpu(i)) {
        let d = DestInfo::from_bits(v.irq.dest.load(Ordering::Acquire));
        if irqchip::lapic::match_dest(d, &irq, irqchip::lapic::Sender::Device, quirk_off) {
            let word = v
                .irq
                .eoi_pending
                .get(usize::from(vector >> 6))
                .map_or(0, |w| w.load(Ordering::Acquire));
            let pending = word & (1 << (vector & 63)) != 0 || v.irq.pir.posted(vector);
            found(v.id(), pending);
        }
    }
}

/// `KVM_TDX_INIT_VCPU`'s first step (upstream `tdx_vcpu_init`): IA32_APIC_BASE =
/// [`irqchip::lapic::td_apic_base`] (x2APIC, BSP bit for the reset BSP), set host-initiated
/// (`kvm_apic_set_base(vcpu, apic_base, true)`); refused (EXTD reserved without x2APIC in
/// the guest CPUID) it is `EINVAL`.
///
/// The CPUID: upstream takes the x2APIC bit from the table userspace gave with
/// `KVM_SET_CPUID2` (QEMU gives the TD's, whose x2APIC bit the TDX module fixes to 1). This
/// module refuses `KVM_SET_CPUID2` on a TD vCPU (its state ioctls answer `EINVAL`), so a TD
/// vCPU without a leaf-1 table is given the TDX module's fixed x2APIC bit; with a table its
/// bit decides, as upstream. Called with the vCPU mutex held.
pub(crate) fn td_init_x2apic(vcpu: &Vcpu, l: &mut VcpuLocked) -> Result {
    if l.irq.lapic.is_none() {
        // A TD vCPU exists only with a split irqchip, so it has a LAPIC.
        return Err(EINVAL);
    }
    sync(vcpu, l);
    let from_table = cpuid_bits(l).is_some();
    let maxphy = l.cpuid.model.maxphyaddr;
    let bsp = vcpu.vm().apic().is_reset_bsp(vcpu.id());
    let Some(la) = l.irq.lapic.as_mut() else {
        return Err(EINVAL);
    };
    if !from_table {
        la.apic.set_x2apic_cpuid(true);
    }
    let fx = la
        .apic
        .set_base(irqchip::lapic::td_apic_base(bsp), true, maxphy)
        .map_err(|_| EINVAL)?;
    apply(vcpu, l, fx);
    Ok(())
}

/// The in-kernel PIC's output is raised (irqroute's `pic_pending`).
pub(crate) fn pic_has_interrupt(vm: &Vm) -> bool {
    crate::irq::chip::pic_pending(vm).is_some()
}

/// The in-kernel PIC's INTA cycle (irqroute's).
pub(crate) fn pic_ack(vm: &Vm) -> u8 {
    crate::irq::chip::pic_ack(vm)
}

/// `KVM_X2APIC_API_USE_32BIT_IDS` is on (MSI routes use the x2APIC format).
pub(crate) fn x2apic_format(vm: &Vm) -> bool {
    vm.apic().x2apic_format.load(Ordering::Relaxed)
}

/// Upstream `kvm_pv_kick_cpu_op` (`KVM_HC_KICK_CPU`): a remote-read request (upstream
/// `APIC_DM_REMRD`) to the physical APIC ID `apic_id`: its vCPU gets `pv_unhalted` (it leaves
/// HLT) and a kick.
pub(crate) fn pv_kick(vm: &Vm, apic_id: u32) {
    let irq = LapicIrq {
        vector: 0,
        delivery_mode: irqchip::irq::DeliveryMode::RemoteRead,
        dest_logical: false,
        level_triggered: false,
        level: false,
        shorthand: irqchip::irq::Shorthand::None,
        dest_id: apic_id,
        msi_redir_hint: false,
    };
    deliver(vm, &irq, None);
}

/// Calls `f` for every online vCPU.
pub(crate) fn for_each_vcpu(vm: &Vm, mut f: impl FnMut(&Vcpu)) {
    let a = vm.apic();
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    for v in (0..n).filter_map(|i| a.vcpu(i)) {
        f(v);
    }
}

/// The vCPU in slot `dest_id` of upstream's physical APIC map (`kvm_sched_yield`).
pub(crate) fn phys_map_vcpu(vm: &Vm, dest_id: u32) -> Option<&Vcpu> {
    let a = vm.apic();
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    let dest = |i: usize| {
        a.vcpu(i).map_or(DestInfo::from_bits(0), |v| {
            DestInfo::from_bits(v.irq.dest.load(Ordering::Acquire))
        })
    };
    let i = irqchip::lapic::phys_map_target(dest_id, n, dest, x2apic_format(vm))?;
    a.vcpu(i)
}

/// The first vCPU whose LAPIC takes PIC interrupts (published by [`apply`]).
fn pic_target(vm: &Vm) -> Option<&Vcpu> {
    let a = vm.apic();
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    (0..n)
        .filter_map(|i| a.vcpu(i))
        .find(|v| v.irq.accept_pic.load(Ordering::Acquire))
}

/// Upstream `pic_unlock`'s wake-up: the vCPU that takes PIC interrupts re-evaluates them.
pub(crate) fn kick_pic_target(vm: &Vm) {
    if let Some(v) = pic_target(vm) {
        kick::request_event(v);
    }
}

/// Whether some vCPU's LAPIC takes PIC interrupts (upstream `kvm_apic_accept_pic_intr` over
/// the vCPUs, for the PIC's ICW1 reset).
pub(crate) fn accept_pic_intr_any(vm: &Vm) -> bool {
    pic_target(vm).is_some()
}

/// Brings the model up to date before it is used (vCPU thread, vCPU mutex held): CPUID bits,
/// a CR8 or IA32_APIC_BASE written outside it, then the inbox (posted vectors, the timer's
/// expiry) merged, NMIs folded into `nmi_pending`.
pub(crate) fn sync(vcpu: &Vcpu, l: &mut VcpuLocked) {
    if l.irq.lapic.is_none() {
        return;
    }
    let bits = cpuid_bits(l);
    let maxphy = l.cpuid.model.maxphyaddr;
    let (cr8, base, tsc_offset) = (l.arch.cr8, l.arch.apic_base, l.arch.tsc_offset);
    let Some(la) = l.irq.lapic.as_mut() else {
        return;
    };
    let mut fx = Effects::default();
    if let Some(b) = bits.filter(|b| la.cpuid != Some(*b)) {
        // Upstream kvm_vcpu_after_set_cpuid: the timer modes and the x2APIC bit.
        la.apic.set_cpuid(b.0, b.1);
        la.cpuid = Some(b);
    }
    if base != la.apic.apic_base() {
        // KVM_SET_SREGS's apic_base (host-initiated); an invalid value stays refused.
        if let Ok(f) = la.apic.set_base(base, true, maxphy) {
            fx.merge(f);
        }
    }
    if cr8 != la.apic.cr8() {
        fx.merge(la.apic.set_cr8(cr8));
    }
    if vcpu.irq.pir.take_lvt0() {
        // The PIT's NMI-watchdog tick (kvm_apic_nmi_wd_deliver): LVT0 as it is now.
        la.apic
            .local_deliver(irqchip::lapic::regs::Lvt::Lint0, &vcpu.irq.pir);
        fx.recheck = true;
    }
    // The clock is read only when the inbox or a latched timer expiry needs merging (every
    // entry comes here; with nothing posted the merge is a no-op).
    if vcpu.irq.pir.has_pending() || la.apic.timer_pending() {
        let now = Now {
            ns: crate::irq::timer::now_ns(),
            guest_tsc: crate::vcpu_state::rdtsc().wrapping_add(tsc_offset),
            tsc_khz: vcpu.tsc_khz(),
        };
        fx.merge(la.apic.sync_pir(&vcpu.irq.pir, &now));
    }
    apply(vcpu, l, fx);
    scan_ioapic(vcpu, l);
    let q = vcpu.irq.pir.take_nmis();
    let _ = vcpu.irq.pir.take_smi(); // No SMM.
    let e = &mut l.arch.events;
    e.nmi_pending = u32::from(e.nmi_pending).saturating_add(q).min(2) as u8;
}

/// Upstream `pit_do_work`'s virtual wire: while some LAPIC has LVT0 in NMI mode, every
/// vCPU delivers its LVT0 (`kvm_apic_nmi_wd_deliver`), done by each owner at its next merge.
pub(crate) fn nmi_watchdog_tick(vm: &Vm) {
    let a = vm.apic();
    if a.vapics_in_nmi_mode.load(Ordering::Acquire) <= 0 {
        return;
    }
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    for v in (0..n).filter_map(|i| a.vcpu(i)) {
        v.irq.pir.post_lvt0();
        kick::request_event(v);
    }
}

/// Kicks every vCPU out of guest mode (upstream `kvm_make_all_cpus_request`'s kick), e.g. so
/// that a running vCPU sees a new kvm-clock generation at its next entry.
pub(crate) fn kick_all(vm: &Vm) {
    let a = vm.apic();
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    for v in (0..n).filter_map(|i| a.vcpu(i)) {
        kick::kick(v);
    }
}

/// Upstream `vcpu_scan_ioapic` for a split irqchip (the full irqchip's IOAPIC sees every
/// EOI): when the routing table or a LAPIC destination changed since the last scan, the
/// vectors of the level-triggered MSI routes of the reserved IOAPIC pins that target this
/// vCPU, or that it has pending in IRR/ISR (`kvm_scan_ioapic_routes`), after the inbox merge.
fn scan_ioapic(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let vm = vcpu.vm();
    if vm.irqchip_mode() != crate::irq::IrqchipMode::Split {
        return;
    }
    let gen = vm.irq().routing().scan_gen();
    let Some(la) = l.irq.lapic.as_mut() else {
        return;
    };
    if la.eoi_exit_gen == gen {
        return;
    }
    la.eoi_exit_gen = gen;
    let mut handled = [0u64; 4];
    if let Some(t) = vm.irq().routing().current() {
        let d = la.apic.dest_info();
        let quirk_off = vm.apic().ctx().broadcast_quirk_disabled;
        let apic = &la.apic;
        t.scan_ioapic_routes(
            vm.irq().nr_reserved_ioapic_pins(),
            x2apic_format(vm),
            &mut handled,
            &mut |dest_id, logical| {
                let irq = LapicIrq {
                    vector: 0,
                    delivery_mode: irqchip::irq::DeliveryMode::Fixed,
                    dest_logical: logical,
                    level_triggered: false,
                    level: true,
                    shorthand: irqchip::irq::Shorthand::None,
                    dest_id,
                    msi_redir_hint: false,
                };
                d.present()
                    && irqchip::lapic::match_dest(
                        d,
                        &irq,
                        irqchip::lapic::Sender::Device,
                        quirk_off,
                    )
            },
            &mut |v| apic.pending_eoi(v),
        );
    }
    la.eoi_exit = handled;
}

/// Upstream `kvm_apic_has_interrupt` != -1 (after [`sync`]).
pub(crate) fn has_interrupt(l: &mut VcpuLocked) -> bool {
    l.irq
        .lapic
        .as_mut()
        .is_some_and(|la| la.apic.has_interrupt().is_some())
}

/// Upstream `kvm_get_apic_interrupt`: the vector to inject, IRR to ISR.
pub(crate) fn ack(vcpu: &Vcpu, l: &mut VcpuLocked) -> Option<u8> {
    let v = l.irq.lapic.as_mut()?.apic.ack()?;
    apply(vcpu, l, Effects::default());
    Some(v)
}

/// Upstream `kvm_apic_accept_pic_intr`.
pub(crate) fn accept_pic_intr(l: &VcpuLocked) -> bool {
    l.irq
        .lapic
        .as_ref()
        .is_some_and(|la| la.apic.accept_pic_intr())
}

/// An INIT or SIPI is pending.
pub(crate) fn has_init_or_sipi(vcpu: &Vcpu) -> bool {
    vcpu.irq.pir.init_or_sipi_pending()
}

/// `KVM_SET_MP_STATE(SIPI_RECEIVED)`: a SIPI with the last vector is pending.
pub(crate) fn set_sipi_pending(vcpu: &Vcpu) {
    vcpu.irq.pir.set_sipi_pending();
}

/// Upstream `kvm_apic_accept_events`: INIT resets the vCPU (`kvm_vcpu_reset(init_event)`:
/// the BSP stays runnable, an AP waits for SIPI), a SIPI starts an AP in `INIT_RECEIVED` at
/// `vector << 12` in real mode.
pub(crate) fn accept_events(vcpu: &Vcpu, l: &mut VcpuLocked) {
    let Some(la) = l.irq.lapic.as_ref() else {
        return;
    };
    let out = irqchip::lapic::accept_events(&vcpu.irq.pir, l.arch.mp_state, la.apic.is_bsp(), true);
    if out.init {
        if let Some(crate::run::VcpuBackend::Svm(s)) = l.backend.as_mut() {
            s.reset_after_shutdown();
        }
        l.arch = crate::run::reset::init(&l.arch);
        l.exits.pending = None;
        // kvm_vcpu_reset(init_event) turns kvm-clock and steal time off (kvmclock_reset).
        crate::pv::reset(l);
        // HOOK(irq12): the steal-time record's cache goes with steal time.
        crate::irq::sched::steal_off(vcpu);
        // kvm_lapic_reset(init_event): the boot vCPU gets LVT0 = ExtINT again under
        // KVM_X86_QUIRK_LINT0_REENABLED (on by default, as at creation).
        let bsp = vcpu.vm().apic().is_reset_bsp(vcpu.id());
        if let Some(la) = l.irq.lapic.as_mut() {
            let fx = la.apic.reset(true, bsp, true, &vcpu.irq.pir);
            apply(vcpu, l, fx);
        }
    }
    if let Some(v) = out.sipi_vector {
        // Upstream kvm_vcpu_deliver_sipi_vector.
        let cs = l.arch.seg_mut(x86::state::SegReg::Cs);
        cs.selector = u16::from(v) << 8;
        cs.base = u64::from(v) << 12;
        l.arch.rip = 0;
    }
    if let Some(m) = out.mp_state {
        l.arch.mp_state = m;
    }
}

/// Upstream `kvm_irq_delivery_to_apic`: delivers `irq` to the LAPICs it names (`src`: the
/// sending vCPU of an IPI), posting to their inboxes and kicking them, without taking any
/// vCPU's mutex. Returns -1 if nothing matched, else the number of vCPUs that accepted.
pub(crate) fn deliver(vm: &Vm, irq: &LapicIrq, src: Option<&Vcpu>) -> i32 {
    deliver_map(vm, irq, src, None)
}

/// [`deliver`] recording in `dest_map` every vCPU (by vCPU ID) that accepted a fixed or
/// lowest-priority request, with its vector (upstream `__apic_accept_irq`'s `dest_map`: the
/// IOAPIC's RTC EOI tracker).
pub(crate) fn deliver_map(
    vm: &Vm,
    irq: &LapicIrq,
    src: Option<&Vcpu>,
    mut dest_map: Option<&mut irqchip::ioapic::DestMap>,
) -> i32 {
    let a = vm.apic();
    let n = (vm.online_vcpus() as usize).min(a.vcpus.len());
    let dest = |i: usize| {
        a.vcpu(i).map_or(DestInfo::from_bits(0), |v| {
            DestInfo::from_bits(v.irq.dest.load(Ordering::Acquire))
        })
    };
    deliver_irq(
        irq,
        src.map(|v| v.idx() as usize),
        n,
        dest,
        a.ctx(),
        |i, irq| {
            let Some(v) = a.vcpu(i) else {
                return 0;
            };
            let d = DestInfo::from_bits(v.irq.dest.load(Ordering::Acquire));
            if v.irq.pir.post(d, irq) {
                if let Some(m) = dest_map.as_deref_mut() {
                    m.record(v.id(), irq);
                }
                kick::request_event(v);
                1
            } else {
                0
            }
        },
    )
}

/// Whether `gpa` falls in this vCPU's APIC page (whatever the mode: a disabled or x2APIC-mode
/// APIC's page is the "MMIO hole").
fn in_apic_page(l: &VcpuLocked, gpa: u64) -> Option<u32> {
    let la = l.irq.lapic.as_ref()?;
    let base = la.apic.base_address();
    gpa.checked_sub(base)
        .filter(|off| *off < LAPIC_MMIO_LENGTH)
        .map(|off| off as u32)
}

/// An emulated MMIO read: `Some(data)` if the in-kernel APIC page answers it (upstream
/// `apic_mmio_read`; with `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`, on by default, a disabled or
/// x2APIC-mode APIC's page reads all ones).
pub(crate) fn mmio_read(vcpu: &Vcpu, l: &mut VcpuLocked, gpa: u64, len: u8) -> Option<[u8; 8]> {
    let off = in_apic_page(l, gpa)?;
    sync(vcpu, l);
    let ns = crate::irq::timer::now_ns();
    let la = l.irq.lapic.as_mut()?;
    let mut data = [0u8; 8];
    if !la.apic.mmio_active() {
        data.iter_mut()
            .take(usize::from(len))
            .for_each(|b| *b = 0xff);
        return Some(data);
    }
    let v = la.apic.mmio_read(off, u32::from(len), ns).unwrap_or(0);
    data[..4].copy_from_slice(&v.to_le_bytes());
    Some(data)
}

/// An emulated MMIO write: `true` if the in-kernel APIC page took it (upstream
/// `apic_mmio_write`; the hole drops writes).
pub(crate) fn mmio_write(vcpu: &Vcpu, l: &mut VcpuLocked, gpa: u64, data: &[u8]) -> bool {
    let Some(off) = in_apic_page(l, gpa) else {
        return false;
    };
    sync(vcpu, l);
    let now = now(vcpu, l);
    let Some(la) = l.irq.lapic.as_mut() else {
        return false;
    };
    if !la.apic.mmio_active() {
        return true;
    }
    let mut b = [0u8; 4];
    for (d, s) in b.iter_mut().zip(data.iter()) {
        *d = *s;
    }
    let fx = la
        .apic
        .mmio_write(off, data.len() as u32, u32::from_le_bytes(b), &now);
    apply(vcpu, l, fx);
    true
}

/// A LAPIC MSR access (IA32_APIC_BASE, x2APIC 0x800-0x8ff, IA32_TSC_DEADLINE) with an
/// in-kernel LAPIC: `None` when the MSR is not the LAPIC's (or there is no LAPIC), else the
/// value read (0 for writes) or `Err` (#GP for the guest, a failed entry for the host).
fn msr(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    index: u32,
    write: Option<u64>,
    host: bool,
) -> Option<Result<u64, ()>> {
    if l.irq.lapic.is_none() && index == MSR_IA32_TSC_DEADLINE {
        // Upstream kvm_get/set_lapic_tscdeadline_msr without a LAPIC: reads 0, writes are
        // ignored.
        return Some(Ok(0));
    }
    if l.irq.lapic.is_none()
        || !(index == MSR_IA32_APICBASE
            || index == MSR_IA32_TSC_DEADLINE
            || (X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&index))
    {
        return None;
    }
    sync(vcpu, l);
    let now = now(vcpu, l);
    let maxphy = l.cpuid.model.maxphyaddr;
    let la = l.irq.lapic.as_mut()?;
    let a = &mut la.apic;
    let r = match (index, write) {
        (MSR_IA32_APICBASE, None) => Ok((a.apic_base(), Effects::default())),
        (MSR_IA32_APICBASE, Some(v)) => a.set_base(v, host, maxphy).map(|fx| (0, fx)),
        (MSR_IA32_TSC_DEADLINE, None) => Ok((a.tsc_deadline(), Effects::default())),
        (MSR_IA32_TSC_DEADLINE, Some(v)) => Ok((0, a.set_tsc_deadline(v, &now))),
        (i, None) => a.x2apic_read(i, now.ns).map(|v| (v, Effects::default())),
        (i, Some(v)) => a.x2apic_write(i, v, &now).map(|fx| (0, fx)),
    };
    Some(match r {
        Ok((v, fx)) => {
            apply(vcpu, l, fx);
            Ok(v)
        }
        Err(_) => Err(()),
    })
}

/// Guest RDMSR/WRMSR of a LAPIC MSR (`None`: not the LAPIC's).
pub(crate) fn guest_msr(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    index: u32,
    write: Option<u64>,
) -> Option<Result<u64, ()>> {
    msr(vcpu, l, index, write, false)
}

/// `KVM_GET/SET_MSRS` of a LAPIC MSR (`None`: not the LAPIC's); `true` if the entry succeeded.
pub(crate) fn host_msr(
    vcpu: &Vcpu,
    l: &mut VcpuLocked,
    index: u32,
    data: &mut u64,
    set: bool,
) -> Option<bool> {
    let r = msr(vcpu, l, index, set.then_some(*data), true)?;
    Some(match r {
        Ok(v) => {
            if !set {
                *data = v;
            }
            true
        }
        Err(()) => {
            if !set {
                *data = 0;
            }
            false
        }
    })
}

/// `KVM_GET_LAPIC` / `KVM_SET_LAPIC` (`None`: another ioctl). `EINVAL` without an in-kernel
/// LAPIC, as upstream.
pub(crate) fn vcpu_ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Option<Result<isize>> {
    if cmd != KVM_GET_LAPIC && cmd != KVM_SET_LAPIC {
        return None;
    }
    Some((|| {
        if vcpu.vm().is_td() {
            return Err(EINVAL);
        }
        let format = vcpu.vm().apic().x2apic_format.load(Ordering::Relaxed);
        if cmd == KVM_GET_LAPIC {
            let mut l = vcpu.lock_killable()?;
            if l.irq.lapic.is_none() {
                return Err(EINVAL);
            }
            sync(vcpu, &mut l);
            let now = now(vcpu, &l);
            let la = l.irq.lapic.as_ref().ok_or(EINVAL)?;
            let s = la.apic.get_state(&now, format).map_err(|_| EINVAL)?;
            drop(l);
            UserSlice::new(arg, s.regs.len())
                .writer()
                .write_slice(&s.regs)?;
            Ok(0)
        } else {
            let mut s = LapicState {
                regs: [0; irqchip::lapic::state::KVM_APIC_REG_SIZE],
            };
            UserSlice::new(arg, s.regs.len())
                .reader()
                .read_slice(&mut s.regs)?;
            let mut l = vcpu.lock_killable()?;
            if l.irq.lapic.is_none() {
                return Err(EINVAL);
            }
            sync(vcpu, &mut l);
            let now = now(vcpu, &l);
            let la = l.irq.lapic.as_mut().ok_or(EINVAL)?;
            let fx = match la.apic.set_state(&s, &now, format) {
                Ok(fx) => fx,
                Err(_) => {
                    // HOOK(irqfix): the SVR was taken before the fix-up failed; upstream
                    // recalculates the APIC map on this path too, so publish the destination.
                    apply(
                        vcpu,
                        &mut l,
                        Effects {
                            dest_changed: true,
                            ..Effects::default()
                        },
                    );
                    return Err(EINVAL);
                }
            };
            apply(vcpu, &mut l, fx);
            if vcpu.vm().irqchip_mode() == crate::irq::IrqchipMode::Kernel {
                // Upstream kvm_rtc_eoi_tracking_restore_one: this vCPU's part of the RTC
                // tracker follows the state's IRR/ISR.
                if let Some(la) = l.irq.lapic.as_ref() {
                    let d = la.apic.dest_info();
                    let quirk_off = vcpu.vm().apic().ctx().broadcast_quirk_disabled;
                    crate::irq::chip::rtc_restore_one(vcpu.vm(), vcpu.id(), |irq| {
                        (
                            irqchip::lapic::match_dest(
                                d,
                                irq,
                                irqchip::lapic::Sender::Device,
                                quirk_off,
                            ),
                            la.apic.pending_eoi(irq.vector),
                        )
                    });
                }
            }
            drop(l);
            kick::request_event(vcpu);
            Ok(0)
        }
    })())
}

/// VM ioctls of this file (`None`: another ioctl): `KVM_SET_BOOT_CPU_ID` (`EBUSY` once a
/// vCPU was created, `EINVAL` above the vCPU-ID limit).
pub(crate) fn vm_ioctl(vm: &Vm, cmd: u32, arg: usize) -> Option<Result<isize>> {
    if cmd != KVM_SET_BOOT_CPU_ID {
        return None;
    }
    let l = vm.lock();
    Some(if l.created_vcpus != 0 {
        Err(EBUSY)
    } else if arg > crate::vm::KVM_MAX_VCPU_IDS as usize
        || (l.max_vcpu_ids != 0 && arg > l.max_vcpu_ids as usize)
    {
        Err(EINVAL)
    } else {
        vm.apic().boot_cpu_id.store(arg as u32, Ordering::Relaxed);
        Ok(0)
    })
}

/// The boot vCPU ID (`KVM_CAP_MAX_VCPU_ID` may not go below it).
pub(crate) fn boot_cpu_id(vm: &Vm) -> u32 {
    vm.apic().boot_cpu_id.load(Ordering::Relaxed)
}

/// `KVM_ENABLE_CAP` on the VM for `KVM_CAP_X2APIC_API` and `KVM_CAP_X86_APIC_BUS_CYCLES_NS`
/// (upstream `kvm_vm_ioctl_enable_cap`).
pub(crate) fn enable_cap(vm: &Vm, cap: u64, arg0: u64) -> Result<isize> {
    let a = vm.apic();
    if cap == KVM_CAP_X2APIC_API {
        if arg0 & !KVM_X2APIC_API_VALID_FLAGS != 0 {
            return Err(EINVAL);
        }
        if arg0 & KVM_X2APIC_API_USE_32BIT_IDS != 0 {
            a.x2apic_format.store(true, Ordering::Relaxed);
        }
        if arg0 & KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK != 0 {
            a.broadcast_quirk_disabled.store(true, Ordering::Relaxed);
        }
        return Ok(0);
    }
    if !irqchip::lapic::valid_bus_cycle_ns(arg0) {
        return Err(EINVAL);
    }
    let l = vm.lock();
    if !vm.irqchip_mode().in_kernel() {
        return Err(ENXIO);
    }
    if l.created_vcpus != 0 {
        return Err(EINVAL);
    }
    a.bus_cycle_ns.store(arg0, Ordering::Relaxed);
    Ok(0)
}

/// `KVM_CHECK_EXTENSION` for this file's capabilities (`None`: not ours).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    Some(match cap {
        KVM_CAP_SET_BOOT_CPU_ID | KVM_CAP_TSC_DEADLINE_TIMER => 1,
        KVM_CAP_X2APIC_API => KVM_X2APIC_API_VALID_FLAGS as isize,
        KVM_CAP_X86_APIC_BUS_CYCLES_NS => irqchip::lapic::regs::APIC_BUS_CYCLE_NS_DEFAULT as isize,
        _ => return None,
    })
}

/// HOOK(cr8): what upstream `kvm_lapic_update_cr8_intercept` reads, for [`crate::run::cr8`]:
/// the TPR's class (CR8), the class of the highest vector in IRR (`kvm_lapic_find_highest_irr`
/// >> 4) and whether the LAPIC is enabled (`kvm_lapic_enabled`: IA32_APIC_BASE.EN and SPIV).
/// `None` without an in-kernel LAPIC.
pub(crate) fn cr8_intercept_inputs(l: &VcpuLocked) -> Option<(u8, Option<u8>, bool)> {
    let la = l.irq.lapic.as_ref()?;
    let irr = la.apic.highest_irr().map(|v| v >> 4);
    Some((la.apic.cr8() as u8, irr, la.apic.enabled()))
}
