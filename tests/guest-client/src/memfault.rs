// SPDX-License-Identifier: GPL-2.0-only
//! `KVM_EXIT_MEMORY_FAULT` on software-protected VMs (upstream 6.12's
//! `private_mem_kvm_exits_test` cases and more): `KVM_RUN` fails with `EFAULT` and the exit
//! names the faulting page (`gpa`, `size` 4096, `KVM_MEMORY_EXIT_FLAG_PRIVATE`).
//!
//! The guest runs in real mode from the reset vector and reads GPA 0x8000 over and over; that
//! page is a memslot of its own the tests make private, delete or back differently.

use crate::memory::{GUEST_MEMFD, PRIVATE, PS, SWP};
use crate::run::Mem;
use crate::*;
use kvm_bindings::{
    kvm_create_guest_memfd, kvm_memory_attributes, kvm_userspace_memory_region,
    kvm_userspace_memory_region2,
};
use kvm_ioctls::{VcpuFd, VmFd};

const KVM_EXIT_MEMORY_FAULT: u32 = 39;
const FLAG_PRIVATE: u64 = 1 << 3;
/// The page the guest reads.
const GPA: u64 = 0x8000;
const SLOT: u32 = 10;

/// `l: mov al, [0x8000]; jmp l`.
const READ_LOOP: &[u8] = &[0xa0, 0x00, 0x80, 0xeb, 0xfb];
/// `jmp near 0x0000` at 0xfff0.
const RESET_JMP: [u8; 3] = [0xe9, 0x0d, 0x00];

struct SwpGuest {
    vm: VmFd,
    _rom: Mem,
    page: Mem,
    gmem: Option<OwnedFd>,
}

/// A software-protected VM running [`READ_LOOP`], with the page at [`GPA`] in slot [`SLOT`]:
/// bound to a guest_memfd when `with_gmem`.
fn swp_guest(with_gmem: bool) -> Result<(SwpGuest, VcpuFd), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let vm = kvm
        .create_vm_with_type(SWP)
        .map_err(|e| format!("KVM_CREATE_VM(SW_PROTECTED): {e}"))?;
    let rom = Mem::new(0x10000)?;
    rom.write(0, READ_LOOP);
    rom.write(0xfff0, &RESET_JMP);
    let r = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0xffff_0000,
        memory_size: 0x10000,
        userspace_addr: rom.ptr as u64,
    };
    // SAFETY: the memory outlives the VM (both in SwpGuest; the VM is dropped first).
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("rom slot: {e}"))?;
    let page = Mem::new(PS as usize)?;
    let gmem = if with_gmem {
        let fd = vm
            .create_guest_memfd(kvm_create_guest_memfd {
                size: PS,
                ..Default::default()
            })
            .map_err(|e| format!("guest_memfd: {e}"))?;
        // SAFETY: a fresh fd, owned from now on.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    } else {
        None
    };
    let r2 = kvm_userspace_memory_region2 {
        slot: SLOT,
        flags: if with_gmem { GUEST_MEMFD } else { 0 },
        guest_phys_addr: GPA,
        memory_size: PS,
        userspace_addr: page.ptr as u64,
        guest_memfd: gmem.as_ref().map_or(0, |f| f.as_raw_fd() as u32),
        guest_memfd_offset: 0,
        ..Default::default()
    };
    // SAFETY: as above.
    unsafe { vm.set_user_memory_region2(r2) }.map_err(|e| format!("slot {SLOT}: {e}"))?;
    let v = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    Ok((
        SwpGuest {
            vm,
            _rom: rom,
            page,
            gmem,
        },
        v,
    ))
}

fn set_attrs(vm: &VmFd, private: bool) -> Result<(), String> {
    vm.set_memory_attributes(kvm_memory_attributes {
        address: GPA,
        size: PS,
        attributes: if private { PRIVATE } else { 0 },
        flags: 0,
    })
    .map_err(|e| format!("KVM_SET_MEMORY_ATTRIBUTES: {e}"))
}

/// `KVM_RUN` as a raw ioctl (kvm-ioctls turns EFAULT + KVM_EXIT_MEMORY_FAULT into an exit):
/// Ok(0) or the errno.
fn raw_run(v: &VcpuFd) -> Result<i64, i32> {
    ioctl(v.as_raw_fd(), io(0x80), 0)
}

/// Runs until `KVM_RUN` fails; checks EFAULT and the exit's fields.
fn expect_memory_fault(v: &mut VcpuFd, private: bool) -> Result<(), String> {
    eq(raw_run(v), Err(EFAULT), "KVM_RUN")?;
    check_exit(v, private)
}

fn check_exit(v: &mut VcpuFd, private: bool) -> Result<(), String> {
    let run = v.get_kvm_run();
    eq(run.exit_reason, KVM_EXIT_MEMORY_FAULT, "exit_reason")?;
    // SAFETY: the member KVM_EXIT_MEMORY_FAULT fills.
    let mf = unsafe { run.__bindgen_anon_1.memory_fault };
    eq(
        mf.flags,
        if private { FLAG_PRIVATE } else { 0 },
        "memory_fault.flags",
    )?;
    eq(mf.gpa, GPA, "memory_fault.gpa")?;
    eq(mf.size, PS, "memory_fault.size")
}

/// Upstream `test_private_access_memslot_not_private`.
fn private_access_to_plain_slot() -> Result<(), String> {
    let (g, mut v) = swp_guest(false)?;
    // KVM_CAP_MEMORY_FAULT_INFO tells userspace the exit below is filled in.
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(kvm.check_extension_raw(232), 1, "KVM_CAP_MEMORY_FAULT_INFO")?;
    eq(
        ioctl(g.vm.as_raw_fd(), 0xae03, 232),
        Ok(1),
        "KVM_CAP_MEMORY_FAULT_INFO (VM fd)",
    )?;
    set_attrs(&g.vm, true)?;
    expect_memory_fault(&mut v, true)?;
    // Converted back to shared, the same access reads the VMM's page: the guest spins until
    // a signal ends KVM_RUN with EINTR.
    set_attrs(&g.vm, false)?;
    g.page.write(0, &[0x5a]);
    install_usr2_handler();
    let r = crate::signal::run_until_signalled(libc::SIGUSR2, &|| true, || {
        v.run().map(|_| ()).map_err(|e| e.errno())
    })?;
    eq(r, Err(libc::EINTR), "a shared page runs until a signal")
}

extern "C" fn on_usr2(_: libc::c_int) {}

fn install_usr2_handler() {
    // SAFETY: an empty handler; a zeroed sigaction with the handler set is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr2 as *const () as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

/// Upstream `test_private_access_memslot_deleted`: the slot goes while the vCPU reads it.
fn private_access_slot_deleted() -> Result<(), String> {
    let (g, mut v) = swp_guest(true)?;
    set_attrs(&g.vm, true)?;
    let vm = &g.vm;
    let r = std::thread::scope(|s| {
        let h = s.spawn(move || {
            eq(raw_run(&v), Err(EFAULT), "KVM_RUN")?;
            check_exit(&mut v, true)
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let r = kvm_userspace_memory_region {
            slot: SLOT,
            ..Default::default()
        };
        // SAFETY: deleting a slot maps nothing.
        let d = unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("delete: {e}"));
        let t = h.join().map_err(|_| "vCPU thread panicked".to_string())?;
        d.and(t)
    });
    drop(g.gmem);
    r
}

/// A private page whose guest_memfd is gone (the fd closed): guest_memfd has nothing for it.
fn private_access_gmem_closed() -> Result<(), String> {
    let (mut g, mut v) = swp_guest(true)?;
    set_attrs(&g.vm, true)?;
    drop(g.gmem.take());
    expect_memory_fault(&mut v, true)
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        (
            "memfault_private_access_to_slot_without_guest_memfd",
            Any,
            |_| crate::run::with_svm(private_access_to_plain_slot),
        ),
        ("memfault_private_access_while_slot_deleted", Any, |_| {
            crate::run::with_svm(private_access_slot_deleted)
        }),
        (
            "memfault_private_access_after_guest_memfd_closed",
            Any,
            |_| crate::run::with_svm(private_access_gmem_closed),
        ),
    ]
}
