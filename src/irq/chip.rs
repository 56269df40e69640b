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

use super::abi::*;
use crate::vm::Vm;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::SpinLock;
use kernel::uaccess::UserSlice;

/// The chips' state (the models' state lives here).
pub(crate) struct ChipState {
    pics: [KvmPicState; 2],
    ioapic: KvmIoapicState,
}

/// The PIC pair and the IOAPIC.
#[pin_data]
pub(crate) struct Chip {
    #[pin]
    state: SpinLock<ChipState>,
}

impl Chip {
    fn new() -> impl PinInit<Self> {
        let mut ioapic = KvmIoapicState {
            base_address: 0xfec0_0000,
            ..Default::default()
        };
        for e in ioapic.redirtbl.iter_mut() {
            *e = 1 << 16;
        }
        pin_init!(Chip {
            state <- new_spinlock!(
                ChipState {
                    pics: [KvmPicState::default(); 2],
                    ioapic,
                },
                "kvm->irqchip"
            ),
        })
    }
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
    pub(crate) fn create(&self) -> Result {
        if self.get().is_some() {
            return Err(EEXIST);
        }
        let b = KBox::pin_init(Chip::new(), GFP_KERNEL)?;
        // SAFETY: the chip is never moved out of the box: only shared references are handed
        // out, and `drop` rebuilds the pinned box to free it.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(b) });
        self.0.store(raw, Ordering::Release);
        Ok(())
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

/// `KVM_GET_IRQCHIP` (upstream `kvm_vm_ioctl_get_irqchip`): `ENXIO` without the full
/// in-kernel irqchip, `EINVAL` for an unknown chip id; the rest of the structure goes back as
/// userspace gave it.
pub(crate) fn get_irqchip(vm: &Vm, arg: usize) -> Result<isize> {
    let sz = core::mem::size_of::<KvmIrqchip>();
    let mut c: KvmIrqchip = UserSlice::new(arg, sz).reader().read()?;
    let chip = chip_of(vm).ok_or(ENXIO)?;
    {
        let s = chip.state.lock();
        match c.chip_id {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                let p = s.pics.get(c.chip_id as usize).copied().unwrap_or_default();
                put(&mut c.chip, &p);
            }
            KVM_IRQCHIP_IOAPIC => put(&mut c.chip, &s.ioapic),
            _ => return Err(EINVAL),
        }
    }
    UserSlice::new(arg, sz).writer().write(&c)?;
    Ok(0)
}

/// `KVM_SET_IRQCHIP` (upstream `kvm_vm_ioctl_set_irqchip`): `ENXIO` without the full in-kernel
/// irqchip, `EINVAL` for an unknown chip id.
pub(crate) fn set_irqchip(vm: &Vm, arg: usize) -> Result<isize> {
    let c: KvmIrqchip = UserSlice::new(arg, core::mem::size_of::<KvmIrqchip>())
        .reader()
        .read()?;
    let chip = chip_of(vm).ok_or(ENXIO)?;
    let mut s = chip.state.lock();
    match c.chip_id {
        KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
            if let Some(p) = s.pics.get_mut(c.chip_id as usize) {
                *p = take(&c.chip);
            }
        }
        KVM_IRQCHIP_IOAPIC => s.ioapic = take(&c.chip),
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// Copies `v` into the start of the union.
fn put<T: AsBytes>(u: &mut [u8; 512], v: &T) {
    let n = core::mem::size_of::<T>();
    if let Some(d) = u.get_mut(..n) {
        // SAFETY: `T: AsBytes` has no uninitialised bytes, so its `n` bytes may be read; `d`
        // holds `n` bytes and does not overlap `v`.
        unsafe { core::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), d.as_mut_ptr(), n) };
    }
}

/// Reads a `T` from the start of the union.
fn take<T: FromBytes + Default>(u: &[u8; 512]) -> T {
    let mut v = T::default();
    let n = core::mem::size_of::<T>();
    if let Some(src) = u.get(..n) {
        // SAFETY: `T: FromBytes` accepts every byte pattern; `v` is a valid `T` of `n` bytes
        // and `src` holds `n` bytes; the two do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), (&mut v as *mut T).cast(), n) };
    }
    v
}

use kernel::types::{AsBytes, FromBytes};

/// Raises or lowers PIC pin `pin` (0..15) for `source` (upstream `kvm_pic_set_irq`).
pub(crate) fn pic_set_irq(vm: &Vm, pin: u8, source: u32, level: bool) -> i32 {
    let Some(_chip) = chip_of(vm) else {
        return -1;
    };
    let _ = (pin, source, level);
    // MODEL(irqroute): the PIC model (helper ioapic) goes here.
    -1
}

/// Raises or lowers IOAPIC pin `pin` for `source` (upstream `kvm_ioapic_set_irq`).
pub(crate) fn ioapic_set_irq(vm: &Vm, pin: u8, source: u32, level: bool, line_status: bool) -> i32 {
    let Some(_chip) = chip_of(vm) else {
        return -1;
    };
    let _ = (pin, source, level, line_status);
    // MODEL(irqroute): the IOAPIC model (helper ioapic) goes here.
    -1
}
