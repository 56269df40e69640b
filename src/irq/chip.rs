// SPDX-License-Identifier: GPL-2.0-only
//! The VM-level interrupt controllers of `KVM_CREATE_IRQCHIP`: the 8259A PIC pair (with the
//! ELCR) and the IOAPIC (upstream arch/x86/kvm/{i8259.c,ioapic.c}), their state ioctls, their
//! lines, their guest registers (ports 0x20/0x21/0xa0/0xa1/0x4d0/0x4d1, MMIO at 0xfec00000),
//! and the EOI/ack paths the LAPICs call.
//!
//! Locking: one spinlock guards both chips (upstream has one per chip; nothing here needs them
//! apart). It is only taken in process context (ioctls, vCPU exits, work items), never while
//! sleeping; deliveries to the LAPICs happen under it, as upstream delivers under
//! `ioapic->lock`. Ack notifiers (irqfd resampling) run after it is dropped.

use crate::vcpu::Vcpu;
use crate::vcpu_state::{read_pod, write_pod};
use crate::vm::Vm;
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};
use irqchip::ioapic::uapi::{
    KvmIrqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use irqchip::ioapic::{DestMap, EoiOutcome, Ioapic, IoapicEnv, EOI_STORM_DELAY_NS};
use irqchip::irq::LapicIrq;
use irqchip::pic::{Pic, PicEffects};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::SpinLock;

/// The chips' state: the core crate's models.
pub(crate) struct ChipState {
    pic: Pic,
    ioapic: Ioapic,
}

/// The PIC pair and the IOAPIC.
#[pin_data(PinnedDrop)]
pub(crate) struct Chip {
    #[pin]
    state: SpinLock<ChipState>,
    /// The delayed re-injection after an EOI storm (C `struct tdxkvm_eoi_work`).
    eoi_work: AtomicPtr<c_void>,
}

#[pinned_drop]
impl PinnedDrop for Chip {
    fn drop(self: Pin<&mut Self>) {
        let w = self.eoi_work.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !w.is_null() {
            // SAFETY: from `tdxkvm_eoi_work_new`, freed once.
            unsafe { tdxkvm_eoi_work_free(w) };
        }
    }
}

extern "C" {
    fn tdxkvm_eoi_work_new(vm: *const c_void) -> *mut c_void;
    fn tdxkvm_eoi_work_schedule(w: *mut c_void, delay_ns: core::ffi::c_ulong);
    fn tdxkvm_eoi_work_free(w: *mut c_void);
}

/// The delayed re-injection (process context).
///
/// # Safety
///
/// `vm` is the VM the work was made for: alive (VM teardown cancels the work first).
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_ioapic_eoi_inject(vm: *const c_void) {
    // SAFETY: the caller's contract.
    let vm = unsafe { &*vm.cast::<Vm>() };
    if let Some(chip) = chip_of(vm) {
        let mut s = chip.state.lock();
        s.ioapic.inject_pending_level(&mut Env { vm });
    }
}

impl Chip {
    fn new() -> impl PinInit<Self> {
        pin_init!(Chip {
            state <- new_spinlock!(
                ChipState {
                    pic: Pic::new(),
                    ioapic: Ioapic::new(),
                },
                "kvm->irqchip"
            ),
            eoi_work: AtomicPtr::new(core::ptr::null_mut()),
        })
    }
}

/// Where IOAPIC deliveries go: the LAPICs (upstream `kvm_irq_delivery_to_apic`).
struct Env<'a> {
    vm: &'a Vm,
}

impl IoapicEnv for Env<'_> {
    fn deliver(&mut self, irq: &LapicIrq, dest_map: Option<&mut DestMap>) -> i32 {
        // The RTC's deliveries fill the coalescing tracker's map (upstream `rtc_status`).
        super::lapic::deliver_map(self.vm, irq, None, dest_map)
    }

    fn rtc_scan(
        &mut self,
        dest_id: u32,
        logical: bool,
        vector: u8,
        found: &mut dyn FnMut(u32, bool),
    ) {
        super::lapic::rtc_scan(self.vm, dest_id, logical, vector, found);
    }
}

/// After `KVM_SET_LAPIC` (upstream `kvm_rtc_eoi_tracking_restore_one`, full irqchip only):
/// `check` gets the RTC entry's destination as a request (no shorthand; vector, dest ID,
/// logical) and answers whether it addresses vCPU `vcpu_id` and whether that vCPU has the
/// vector in IRR or ISR; the tracker adds or retires the vCPU accordingly. Called with the
/// vCPU mutex held (the chip lock nests inside it).
pub(crate) fn rtc_restore_one(
    vm: &Vm,
    vcpu_id: u32,
    check: impl FnOnce(&LapicIrq) -> (bool, bool),
) {
    let Some(chip) = chip_of(vm) else {
        return;
    };
    let mut s = chip.state.lock();
    let e = s.ioapic.rtc_entry();
    let irq = LapicIrq {
        vector: e.vector(),
        delivery_mode: irqchip::irq::DeliveryMode::Fixed,
        dest_logical: e.dest_logical(),
        level_triggered: false,
        level: true,
        shorthand: irqchip::irq::Shorthand::None,
        dest_id: u32::from(e.dest_id()),
        msi_redir_hint: false,
    };
    let (matches, pending) = check(&irq);
    s.ioapic.rtc_restore_one(vcpu_id, matches, pending);
}

/// Where the VM keeps its [`Chip`]: null until `KVM_CREATE_IRQCHIP`, then set once.
pub(crate) struct ChipSlot(AtomicPtr<Chip>);

impl ChipSlot {
    /// Empty.
    pub(crate) fn new() -> Self {
        ChipSlot(AtomicPtr::new(core::ptr::null_mut()))
    }

    /// The chip, if created.
    pub(crate) fn get(&self) -> Option<&Chip> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `KBox::into_raw` in `create` and stays valid
        // until `drop`, which runs only when nothing borrows the slot.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Creates the chip (called once, under the VM lock, before the mode is published).
    pub(crate) fn create(&self, vm: &Vm) -> Result {
        if self.get().is_some() {
            return Err(EEXIST);
        }
        let b = KBox::pin_init(Chip::new(), GFP_KERNEL)?;
        let vmp: *const Vm = vm;
        // SAFETY: the work keeps `vmp`; it is cancelled (chip drop, at VM teardown) before
        // the VM's memory goes.
        let w = unsafe { tdxkvm_eoi_work_new(vmp.cast()) };
        if w.is_null() {
            return Err(ENOMEM);
        }
        b.eoi_work.store(w, Ordering::Release);
        // SAFETY: the chip is never moved out of the box: only shared references are handed
        // out, and `drop` rebuilds the pinned box to free it.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(b) });
        self.0.store(raw, Ordering::Release);
        Ok(())
    }
}

impl ChipSlot {
    /// VM teardown: the delayed re-injection is cancelled (it reaches the VM).
    pub(crate) fn quiesce(&self) {
        if let Some(c) = self.get() {
            let w = c.eoi_work.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if !w.is_null() {
                // SAFETY: from `tdxkvm_eoi_work_new`, freed once (the swap took it).
                unsafe { tdxkvm_eoi_work_free(w) };
            }
        }
    }
}

impl Drop for ChipSlot {
    fn drop(&mut self) {
        let p = *self.0.get_mut();
        if !p.is_null() {
            // SAFETY: from `KBox::into_raw` in `create`; nothing else holds it any more.
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}

fn chip_of(vm: &Vm) -> Option<&Chip> {
    vm.irq().chip()
}

/// The ack notifiers of (`irqchip`, `pin`) (upstream `kvm_notify_acked_irq`): the GSI's
/// resampling irqfds. Called without the chip lock.
fn notify_acked(vm: &Vm, irqchip: u32, pin: u32) {
    let gsi = vm
        .irq()
        .routing()
        .current()
        .and_then(|t| t.gsi_of(irqchip, pin));
    if let Some(gsi) = gsi {
        if gsi == 0 {
            if let Some(p) = vm.irq().pit().get() {
                p.on_ack();
            }
        }
        super::irqfd::on_ack(vm, gsi);
    }
}

/// The mask notifiers of (`irqchip`, `pin`) (upstream `kvm_fire_mask_notifiers`): the PIT's,
/// on GSI 0. Called without the chip lock.
fn notify_masked(vm: &Vm, irqchip: u32, pin: u32, masked: bool) {
    let gsi = vm
        .irq()
        .routing()
        .current()
        .and_then(|t| t.gsi_of(irqchip, pin));
    if gsi == Some(0) {
        if let Some(p) = vm.irq().pit().get() {
            p.on_mask(masked);
        }
    }
}

/// What a PIC operation left for after the lock (upstream `pic_unlock` and the ack paths).
/// The PIC's effects and its mask bits, taken under the lock.
fn take_fx(pic: &mut Pic) -> (PicEffects, u16) {
    let fx = pic.take_effects();
    let mut masked = 0u16;
    for pin in 0..16 {
        if fx.mask_changed & (1 << pin) != 0 && pic.masked(pin) {
            masked |= 1 << pin;
        }
    }
    (fx, masked)
}

fn pic_effects(vm: &Vm, (fx, masked): (PicEffects, u16)) {
    for pin in 0..16u32 {
        if fx.acked & (1 << pin) != 0 {
            let chip = if pin < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            notify_acked(vm, chip, pin);
        }
    }
    for pin in 0..16u32 {
        if fx.mask_changed & (1 << pin) != 0 {
            let chip = if pin < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            notify_masked(vm, chip, pin, masked & (1 << pin) != 0);
        }
    }
    if fx.wakeup {
        super::kick_pic_target(vm);
    }
}

/// `KVM_GET_IRQCHIP` (upstream `kvm_vm_ioctl_get_irqchip`): `ENXIO` without the full
/// in-kernel irqchip, `EINVAL` for an unknown chip id; the rest of the structure goes back as
/// userspace gave it.
pub(crate) fn get_irqchip(vm: &Vm, arg: usize) -> Result<isize> {
    let mut c: KvmIrqchip = read_pod(arg)?;
    let chip = chip_of(vm).ok_or(ENXIO)?;
    {
        let s = chip.state.lock();
        match c.chip_id {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                if let Some(p) = s.pic.get_state(c.chip_id) {
                    c.set_pic(&p);
                }
            }
            KVM_IRQCHIP_IOAPIC => c.set_ioapic(&s.ioapic.get_state()),
            _ => return Err(EINVAL),
        }
    }
    write_pod(arg, &c)?;
    Ok(0)
}

/// `KVM_SET_IRQCHIP` (upstream `kvm_vm_ioctl_set_irqchip`): `ENXIO` without the full in-kernel
/// irqchip, `EINVAL` for an unknown chip id. An IOAPIC state re-raises the lines its IRR
/// holds (deliveries may happen).
pub(crate) fn set_irqchip(vm: &Vm, arg: usize) -> Result<isize> {
    let c: KvmIrqchip = read_pod(arg)?;
    let chip = chip_of(vm).ok_or(ENXIO)?;
    let fx = {
        let mut s = chip.state.lock();
        match c.chip_id {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                s.pic.set_state(c.chip_id, &c.pic());
            }
            KVM_IRQCHIP_IOAPIC => {
                let st = c.ioapic();
                s.ioapic.set_state(&st, &mut Env { vm });
            }
            _ => return Err(EINVAL),
        }
        // Upstream ends with kvm_pic_update_irq for every chip id.
        s.pic.update();
        take_fx(&mut s.pic)
    };
    pic_effects(vm, fx);
    Ok(0)
}

/// Raises or lowers PIC pin `pin` (0..15) for `source` (upstream `kvm_pic_set_irq`).
pub(crate) fn pic_set_irq(vm: &Vm, pin: u8, source: u32, level: bool) -> i32 {
    let Some(chip) = chip_of(vm) else {
        return -1;
    };
    let (r, fx) = {
        let mut s = chip.state.lock();
        let r = s.pic.set_irq(usize::from(pin), source, level);
        (r, take_fx(&mut s.pic))
    };
    pic_effects(vm, fx);
    r
}

/// Raises or lowers IOAPIC pin `pin` for `source` (upstream `kvm_ioapic_set_irq`).
pub(crate) fn ioapic_set_irq(vm: &Vm, pin: u8, source: u32, level: bool, line_status: bool) -> i32 {
    let Some(chip) = chip_of(vm) else {
        return -1;
    };
    let mut s = chip.state.lock();
    s.ioapic.set_irq(
        usize::from(pin),
        source,
        level,
        line_status,
        &mut Env { vm },
    )
}

/// A guest `IN` from a PIC/ELCR port (upstream `picdev_read`): `None` if not the PIC's (or no
/// in-kernel PIC).
pub(crate) fn pio_read(vm: &Vm, port: u16, len: usize) -> Option<u32> {
    if !Pic::claims_port(port) {
        return None;
    }
    let chip = chip_of(vm)?;
    let (v, fx) = {
        let mut s = chip.state.lock();
        let v = s.pic.ioport_read(port, len);
        (v, take_fx(&mut s.pic))
    };
    pic_effects(vm, fx);
    v.map(u32::from)
}

/// A guest `OUT` to a PIC/ELCR port (upstream `picdev_write`): false if not the PIC's.
pub(crate) fn pio_write(vm: &Vm, port: u16, len: usize, val: u32) -> bool {
    if !Pic::claims_port(port) {
        return false;
    }
    let Some(chip) = chip_of(vm) else {
        return false;
    };
    let accept = super::accept_pic_intr_any(vm);
    let (taken, fx) = {
        let mut s = chip.state.lock();
        let t = s.pic.ioport_write(port, len, val as u8, accept);
        (t, take_fx(&mut s.pic))
    };
    pic_effects(vm, fx);
    taken
}

/// A guest MMIO read of the IOAPIC (upstream `ioapic_mmio_read`): `None` if `gpa` is not in
/// its window (or there is no in-kernel IOAPIC).
pub(crate) fn mmio_read(vm: &Vm, gpa: u64, len: usize) -> Option<u64> {
    let chip = chip_of(vm)?;
    let s = chip.state.lock();
    s.ioapic.mmio_read(gpa, len)
}

/// A guest MMIO write to the IOAPIC (upstream `ioapic_mmio_write`): false if not in its
/// window. Changing an entry may deliver (a level line still asserted).
pub(crate) fn mmio_write(vm: &Vm, gpa: u64, len: usize, data: u64) -> bool {
    let Some(chip) = chip_of(vm) else {
        return false;
    };
    let fx = {
        let mut s = chip.state.lock();
        s.ioapic.mmio_write(gpa, len, data, &mut Env { vm })
    };
    // The EOI-exit bitmaps are not cached (every level EOI reaches `on_eoi`), so the rescan
    // the write asks for has nothing to recompute.
    match fx {
        None => false,
        Some(fx) => {
            if let Some((pin, m)) = fx.mask_changed {
                notify_masked(vm, KVM_IRQCHIP_IOAPIC, u32::from(pin), m);
            }
            true
        }
    }
}

/// A local APIC EOIed `vector` with its TMR bit set (level triggered; upstream
/// `kvm_ioapic_send_eoi`): see [`on_eoi_level`].
#[allow(dead_code)] // contract with irqmod (its LAPIC calls this)
pub(crate) fn on_eoi(vm: &Vm, vcpu: &Vcpu, vector: u8) {
    on_eoi_level(vm, vcpu, vector, true)
}

/// A local APIC EOIed `vector`; `level` is its TMR bit (upstream `kvm_ioapic_send_eoi`). Full
/// irqchip: the IOAPIC pins with this vector run their ack notifiers (without the lock: irqfd
/// resampling, the PIT's reinjection, which needs edge EOIs too), then a level EOI drops remote
/// IRR and re-delivers a line still asserted (`kvm_ioapic_update_eoi`). Split irqchip:
/// nothing here (the LAPIC's EOI-exit bitmap decides the `KVM_EXIT_IOAPIC_EOI`). Must be
/// called without LAPIC locks held (a re-delivery reaches the LAPICs).
pub(crate) fn on_eoi_level(vm: &Vm, vcpu: &Vcpu, vector: u8, level: bool) {
    if vm.irqchip_mode() == super::IrqchipMode::Split {
        return;
    }
    let Some(chip) = chip_of(vm) else {
        return;
    };
    let pins = chip.state.lock().ioapic.eoi_begin(vcpu.id(), vector);
    for pin in 0..irqchip::ioapic::NUM_PINS {
        if pins & (1 << pin) == 0 {
            continue;
        }
        notify_acked(vm, KVM_IRQCHIP_IOAPIC, pin as u32);
        let mut s = chip.state.lock();
        // The in-kernel IOAPIC never advertises directed EOI (upstream: only a split
        // irqchip's LAPIC version register does), so the EOI always reaches it.
        if s.ioapic.eoi_pin(pin, level, false, &mut Env { vm }) == EoiOutcome::Deferred {
            // An EOI storm: the line is re-delivered after 10 ms (upstream eoi_inject).
            let w = chip.eoi_work.load(Ordering::Acquire);
            if !w.is_null() {
                // SAFETY: the chip's live work object.
                unsafe { tdxkvm_eoi_work_schedule(w, EOI_STORM_DELAY_NS as core::ffi::c_ulong) };
            }
        }
    }
}

/// Whether the PIC asks for an interrupt (upstream `kvm_cpu_has_extint`'s PIC part: its
/// output line), and the vector its INTA cycle would give now.
#[allow(dead_code)] // contract with irqmod (its LAPIC calls this)
pub(crate) fn pic_pending(vm: &Vm) -> Option<u8> {
    let chip = chip_of(vm)?;
    let s = chip.state.lock();
    if !s.pic.output() {
        return None;
    }
    // The INTA of a copy: the vector without acknowledging it.
    let mut probe = s.pic.clone();
    Some(probe.read_irq())
}

/// The PIC's INTA cycle (upstream `kvm_pic_read_irq`): acknowledges the highest request and
/// returns its vector (a spurious 7/15 vector if none).
#[allow(dead_code)] // contract with irqmod (its LAPIC calls this)
pub(crate) fn pic_ack(vm: &Vm) -> u8 {
    let Some(chip) = chip_of(vm) else {
        return 0;
    };
    let (v, fx) = {
        let mut s = chip.state.lock();
        let v = s.pic.read_irq();
        (v, take_fx(&mut s.pic))
    };
    pic_effects(vm, fx);
    v
}
