// SPDX-License-Identifier: GPL-2.0-only
//! Regression tests of the session review (helper `review`): races and teardown paths of the
//! VM-level irqchip that the area tests do not reach.

use crate::*;

const KVM_CREATE_IRQCHIP: u64 = 0xae60;
const KVM_IRQFD: u64 = 0x4020_ae76;
const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1;

fn eventfd() -> OwnedFd {
    // SAFETY: creates a new fd; ownership is taken right away.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn irqfd(vm: i32, fd: i32, gsi: u32, flags: u32) -> Result<i64, i32> {
    let mut b = [0u32; 8];
    b[0] = fd as u32;
    b[1] = gsi;
    b[2] = flags;
    ioctl(vm, KVM_IRQFD, b.as_ptr() as u64)
}

/// One thread assigns an irqfd while another deassigns the same (eventfd, GSI) as fast as it
/// can, with the eventfd signalled meanwhile: a deassign that finds the irqfd before the assign
/// hooked it into the eventfd's wait queue must not free it under the assign (upstream closes
/// that window with its irq_srcu read section; KASAN/DEBUG_LIST would report it).
fn irqfd_assign_deassign_race(_: &Ctx) -> Result<(), String> {
    let vm = create_vm(&dev(), 0).map_err(|e| format!("KVM_CREATE_VM: errno {e}"))?;
    ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, 0).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    let e = eventfd();
    let (vmfd, efd) = (vm.as_raw_fd(), e.as_raw_fd());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut assigned = 0u32;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = irqfd(vmfd, efd, 3, KVM_IRQFD_FLAG_DEASSIGN);
            }
        });
        s.spawn(|| {
            let one = 1u64.to_ne_bytes();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: writes 8 bytes to our eventfd.
                unsafe { libc::write(efd, one.as_ptr().cast(), 8) };
            }
        });
        for _ in 0..3000 {
            if irqfd(vmfd, efd, 3, 0).is_ok() {
                assigned += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    if assigned == 0 {
        return Err("no assign succeeded".into());
    }
    drop(vm);
    drop(e);
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![(
        "review_irqfd_assign_deassign_race",
        Any,
        irqfd_assign_deassign_race,
    )]
}
