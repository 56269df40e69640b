// SPDX-License-Identifier: GPL-2.0-only
//! Dirty logging: `KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`, `KVM_CLEAR_DIRTY_LOG`,
//! `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` — upstream 6.12's behaviour and errnos.
//!
//! What dirties a page here is what upstream marks: a **writable** leaf installed in a logged
//! slot. Without a running guest, `KVM_PRE_FAULT_MEMORY` installs leaves the way a guest's
//! read fault does: a page the host has written (so it is writable in the host) maps writable
//! and is marked dirty, an untouched page maps the zero page read-only and is not. That is the
//! same rule that makes kvm-ioctls' `test_run_code` see its code page dirty.

use super::memory::*;
use super::prefault::{create_vcpu, pre_fault};
use crate::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const LOG_DIRTY: u32 = 1;
const READONLY: u32 = 2;
const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u64 = 168;
const MANUAL_PROTECT: u64 = 1;
const INITIALLY_SET: u64 = 2;
const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_GET_DIRTY_LOG: u64 = 0x4010_ae42;
const KVM_CLEAR_DIRTY_LOG: u64 = 0xc018_aec0;
const ENOENT: i32 = libc::ENOENT;
const KERNEL_PTR: u64 = 0xffff_8000_0000_0000;

#[repr(C)]
struct DirtyLog {
    slot: u32,
    padding1: u32,
    bitmap: u64,
}

#[repr(C)]
struct ClearLog {
    slot: u32,
    num_pages: u32,
    first_page: u64,
    bitmap: u64,
}

fn get_raw(vm: &OwnedFd, slot: u32, bitmap: u64) -> Result<i64, i32> {
    let l = DirtyLog {
        slot,
        padding1: 0,
        bitmap,
    };
    ioctl(
        vm.as_raw_fd(),
        KVM_GET_DIRTY_LOG,
        &l as *const DirtyLog as u64,
    )
}

/// `KVM_GET_DIRTY_LOG` of a slot of `npages` pages: the dirty page numbers.
fn get(vm: &OwnedFd, slot: u32, npages: u64) -> Result<Vec<u64>, i32> {
    // One spare word after the bitmap, poisoned: the kernel must not write past the slot's.
    let words = npages.div_ceil(64) as usize;
    let mut b = vec![u64::MAX; words + 1];
    b[..words].fill(0x5a5a_5a5a_5a5a_5a5a);
    get_raw(vm, slot, b.as_mut_ptr() as u64)?;
    if b[words] != u64::MAX {
        return Err(-1);
    }
    Ok(pages_of(&b[..words]))
}

fn pages_of(words: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for bit in 0..64 {
            if w & 1 << bit != 0 {
                out.push(i as u64 * 64 + bit);
            }
        }
    }
    out
}

fn clear_raw(
    vm: &OwnedFd,
    slot: u32,
    first_page: u64,
    num_pages: u32,
    bitmap: u64,
) -> Result<i64, i32> {
    let l = ClearLog {
        slot,
        num_pages,
        first_page,
        bitmap,
    };
    ioctl(
        vm.as_raw_fd(),
        KVM_CLEAR_DIRTY_LOG,
        &l as *const ClearLog as u64,
    )
}

/// `KVM_CLEAR_DIRTY_LOG` of `pages` (slot-relative) within `[first, first + num)`.
fn clear(vm: &OwnedFd, slot: u32, first: u64, num: u32, pages: &[u64]) -> Result<i64, i32> {
    let mut b = vec![0u64; (num as usize).div_ceil(64)];
    for p in pages {
        b[((p - first) / 64) as usize] |= 1 << ((p - first) % 64);
    }
    clear_raw(vm, slot, first, num, b.as_ptr() as u64)
}

fn enable_cap(vm: &OwnedFd, cap: u64, flags: u32, arg0: u64) -> Result<i64, i32> {
    let mut c = [0u8; 104];
    c[..4].copy_from_slice(&(cap as u32).to_ne_bytes());
    c[4..8].copy_from_slice(&flags.to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP, c.as_ptr() as u64)
}

fn check_cap(fd: i32, cap: u64) -> i64 {
    ioctl(fd, io(0x03), cap).unwrap_or(-1)
}

fn logged(slot_id: u32, gpa: u64, size: u64, hva: u64) -> Region2 {
    Region2 {
        flags: LOG_DIRTY,
        ..slot(slot_id, gpa, size, hva)
    }
}

/// Writes one byte into page `page` of `mem` (the host dirties it: it becomes writable there).
fn touch(mem: &Anon, page: u64) {
    // SAFETY: inside the test's own mapping.
    unsafe { ((mem.hva() + page * PS) as *mut u8).write_volatile(0xa5) };
}

fn caps_and_manual_protect_cap() -> Result<(), String> {
    let kvm = dev();
    eq(
        check_cap(kvm.as_raw_fd(), KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
        3,
        "/dev/kvm: MANUAL_PROTECT_ENABLE | INITIALLY_SET",
    )?;
    for ty in [0, SWP] {
        let vm = vm_of(ty)?;
        eq(
            check_cap(vm.as_raw_fd(), KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
            3,
            &format!("VM type {ty}"),
        )?;
        let c = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
        eq(enable_cap(&vm, c, 1, 1), Err(EINVAL), "flags")?;
        eq(
            enable_cap(&vm, c, 0, INITIALLY_SET),
            Err(EINVAL),
            "INITIALLY_SET alone",
        )?;
        eq(enable_cap(&vm, c, 0, 4), Err(EINVAL), "unknown bit")?;
        eq(enable_cap(&vm, c, 0, 1 << 63 | 1), Err(EINVAL), "bit 63")?;
        eq(enable_cap(&vm, c, 0, MANUAL_PROTECT), Ok(0), "manual")?;
        eq(
            enable_cap(&vm, c, 0, MANUAL_PROTECT | INITIALLY_SET),
            Ok(0),
            "manual + initially set",
        )?;
        eq(enable_cap(&vm, c, 0, 0), Ok(0), "off again")?;
    }
    Ok(())
}

fn memslot_flags_and_errnos() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(MB);
    let h = mem.hva();
    let n = MB / PS;
    // v1 and v2 both take the flag.
    let v1 = [0u64, 0, MB, h];
    let mut r1 = [0u8; 32];
    r1[4..8].copy_from_slice(&LOG_DIRTY.to_ne_bytes());
    r1[8..16].copy_from_slice(&v1[1].to_ne_bytes());
    r1[16..24].copy_from_slice(&v1[2].to_ne_bytes());
    r1[24..32].copy_from_slice(&v1[3].to_ne_bytes());
    eq(
        ioctl(vm.as_raw_fd(), iow(0x46, 32), r1.as_ptr() as u64),
        Ok(0),
        "v1 create with LOG_DIRTY_PAGES",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "fresh log is clean")?;
    eq(region2(&vm, slot(0, 0, MB, h)), Ok(0), "logging off")?;
    eq(get(&vm, 0, n), Err(ENOENT), "no log once off")?;
    eq(
        region2(&vm, logged(0, 0, MB, h)),
        Ok(0),
        "logging on (flags change)",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "log again")?;
    eq(
        region2(&vm, logged(0, 4 * MB, MB, h)),
        Ok(0),
        "move a logged slot",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "a moved slot keeps logging")?;
    eq(region2(&vm, slot(0, 0, 0, 0)), Ok(0), "delete")?;
    eq(get(&vm, 0, n), Err(ENOENT), "deleted slot")?;
    // Read-only slots may log (nothing ever dirties them).
    let ro = Region2 {
        flags: LOG_DIRTY | READONLY,
        ..slot(1, 0, MB, h)
    };
    eq(region2(&vm, ro), Ok(0), "LOG_DIRTY_PAGES | READONLY")?;
    eq(get(&vm, 1, n), Ok(vec![]), "read-only slot's log")?;
    eq(
        region2(&vm, slot(2, 2 * MB, MB, h)),
        Ok(0),
        "a slot without logging",
    )?;
    eq(get(&vm, 2, n), Err(ENOENT), "GET on a slot without logging")?;
    // guest_memfd slots cannot log (upstream: private memory is not logged).
    let swp = vm_of(SWP)?;
    let fd = gmem(&swp, MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let g = Region2 {
        flags: GUEST_MEMFD | LOG_DIRTY,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, MB, h)
    };
    eq(
        region2(&swp, g),
        Err(EINVAL),
        "GUEST_MEMFD | LOG_DIRTY_PAGES",
    )?;
    let g = Region2 {
        flags: GUEST_MEMFD,
        ..g
    };
    eq(region2(&swp, g), Ok(0), "the guest_memfd slot itself")?;
    eq(
        region2(
            &swp,
            Region2 {
                flags: GUEST_MEMFD | LOG_DIRTY,
                ..g
            },
        ),
        Err(EINVAL),
        "turning logging on for a guest_memfd slot",
    )?;
    eq(get(&swp, 0, n), Err(ENOENT), "guest_memfd slot has no log")?;
    // A software-protected VM's ordinary slot logs.
    eq(
        region2(&swp, logged(1, 4 * MB, MB, h)),
        Ok(0),
        "SW-protected VM, shared slot",
    )?;
    eq(get(&swp, 1, n), Ok(vec![]), "its log")?;
    drop((vm, swp, fd, mem));
    counts_are_zero()
}

fn get_and_clear_hostile_input() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(MB);
    eq(region2(&vm, logged(0, 0, MB, mem.hva())), Ok(0), "slot")?;
    let mut b = vec![0u64; 4];
    let p = b.as_mut_ptr() as u64;
    let v = vm.as_raw_fd();
    eq(ioctl(v, KVM_GET_DIRTY_LOG, 0), Err(EFAULT), "NULL argument")?;
    eq(
        ioctl(v, KVM_GET_DIRTY_LOG, KERNEL_PTR),
        Err(EFAULT),
        "kernel argument",
    )?;
    eq(get_raw(&vm, 32764, p), Err(EINVAL), "id KVM_USER_MEM_SLOTS")?;
    eq(get_raw(&vm, 0xffff, p), Err(EINVAL), "id 0xffff")?;
    eq(get_raw(&vm, 1 << 16, p), Err(EINVAL), "address space 1")?;
    eq(get_raw(&vm, 7, p), Err(ENOENT), "no such slot")?;
    eq(get_raw(&vm, 0, 0), Err(EFAULT), "NULL bitmap")?;
    eq(get_raw(&vm, 0, KERNEL_PTR), Err(EFAULT), "kernel bitmap")?;
    // A bitmap in read-only memory.
    let ro = Anon::new(PS);
    // SAFETY: the test's own page.
    unsafe { libc::mprotect(ro.hva() as *mut libc::c_void, PS as usize, libc::PROT_READ) };
    eq(get_raw(&vm, 0, ro.hva()), Err(EFAULT), "read-only bitmap")?;
    // A bitmap that ends in an unmapped page: 256 pages = 32 bytes, 16 of them past the end.
    let two = Anon::new(2 * PS);
    // SAFETY: the second page of the test's own mapping.
    unsafe { libc::munmap((two.hva() + PS) as *mut libc::c_void, PS as usize) };
    eq(
        get_raw(&vm, 0, two.hva() + PS - 16),
        Err(EFAULT),
        "bitmap running off the map",
    )?;
    // The wrong fd kinds: /dev/kvm and a vCPU answer EINVAL (x86's default), as upstream.
    let kvm = dev();
    eq(
        ioctl(
            kvm.as_raw_fd(),
            KVM_GET_DIRTY_LOG,
            &DirtyLog {
                slot: 0,
                padding1: 0,
                bitmap: p,
            } as *const DirtyLog as u64,
        ),
        Err(EINVAL),
        "GET_DIRTY_LOG on /dev/kvm",
    )?;
    let vcpu = create_vcpu(&vm, 0)?;
    eq(
        ioctl(
            vcpu.as_raw_fd(),
            KVM_GET_DIRTY_LOG,
            &DirtyLog {
                slot: 0,
                padding1: 0,
                bitmap: p,
            } as *const DirtyLog as u64,
        ),
        Err(EINVAL),
        "GET_DIRTY_LOG on a vCPU",
    )?;
    // CLEAR: checks in upstream's order.
    eq(
        ioctl(v, KVM_CLEAR_DIRTY_LOG, 0),
        Err(EFAULT),
        "CLEAR: NULL argument",
    )?;
    eq(
        clear_raw(&vm, 32764, 0, 64, p),
        Err(EINVAL),
        "CLEAR: bad id",
    )?;
    eq(
        clear_raw(&vm, 7, 1, 64, p),
        Err(EINVAL),
        "CLEAR: first_page first, then the slot",
    )?;
    eq(
        clear_raw(&vm, 7, 0, 64, p),
        Err(ENOENT),
        "CLEAR: no such slot",
    )?;
    eq(
        clear_raw(&vm, 0, 64, 256, p),
        Err(EINVAL),
        "CLEAR: past the slot",
    )?;
    eq(
        clear_raw(&vm, 0, 320, 0, p),
        Err(EINVAL),
        "CLEAR: starts past the slot",
    )?;
    eq(
        clear_raw(&vm, 0, 0, 10, p),
        Err(EINVAL),
        "CLEAR: short, not a multiple of 64",
    )?;
    eq(
        clear_raw(&vm, 0, 0, u32::MAX, p),
        Err(EINVAL),
        "CLEAR: huge count",
    )?;
    eq(
        clear_raw(&vm, 0, 0, 256, 0),
        Err(EFAULT),
        "CLEAR: NULL bitmap",
    )?;
    eq(
        clear_raw(&vm, 0, 0, 256, KERNEL_PTR),
        Err(EFAULT),
        "CLEAR: kernel bitmap",
    )?;
    eq(clear_raw(&vm, 0, 192, 64, p), Ok(0), "CLEAR: the last word")?;
    eq(
        clear_raw(&vm, 0, 256, 0, p),
        Ok(0),
        "CLEAR: nothing, at the end",
    )?;
    eq(
        region2(&vm, slot(3, 8 * MB, MB, mem.hva())),
        Ok(0),
        "slot without logging",
    )?;
    eq(
        clear_raw(&vm, 3, 0, 256, p),
        Err(ENOENT),
        "CLEAR: slot without logging",
    )?;
    b[0] = 0;
    drop((vcpu, vm, mem, ro, two));
    counts_are_zero()
}

fn prefault_marks_writable_pages() -> Result<(), String> {
    let vm = vm_of(0)?;
    let n = 200u64;
    let mem = Anon::new(n * PS);
    // Not 64-aligned in the guest either: bit i is page i of the slot, whatever the base.
    let base = 0x10_3000;
    eq(
        region2(&vm, logged(0, base, n * PS, mem.hva())),
        Ok(0),
        "slot",
    )?;
    let vcpu = create_vcpu(&vm, 0)?;
    for p in [3, 10, 64, 199] {
        touch(&mem, p);
    }
    eq(
        pre_fault(&vcpu, base, n * PS, 0).0,
        Ok(0),
        "pre-fault the slot",
    )?;
    // Untouched pages map the zero page read-only: not dirty.
    eq(
        get(&vm, 0, n),
        Ok(vec![3, 10, 64, 199]),
        "the pages the host wrote",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "second GET: nothing new")?;
    // The host writes an untouched page: its zero-page mapping goes (MMU notifier); mapped
    // again it is writable, so dirty.
    touch(&mem, 100);
    eq(
        pre_fault(&vcpu, base + 100 * PS, PS, 0).0,
        Ok(0),
        "pre-fault page 100",
    )?;
    eq(get(&vm, 0, n), Ok(vec![100]), "the newly written page")?;
    // The GETs write-protected what they reported: mapping them again marks them again.
    eq(
        pre_fault(&vcpu, base, n * PS, 0).0,
        Ok(0),
        "pre-fault again",
    )?;
    eq(
        get(&vm, 0, n),
        Ok(vec![3, 10, 64, 100, 199]),
        "re-armed pages",
    )?;
    // Logging off and on again: a fresh, clean log, and the slot write-protected.
    eq(
        region2(&vm, slot(0, base, n * PS, mem.hva())),
        Ok(0),
        "logging off",
    )?;
    eq(
        pre_fault(&vcpu, base, n * PS, 0).0,
        Ok(0),
        "pre-fault without logging",
    )?;
    eq(
        region2(&vm, logged(0, base, n * PS, mem.hva())),
        Ok(0),
        "logging on",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "clean after turning on")?;
    eq(
        pre_fault(&vcpu, base, n * PS, 0).0,
        Ok(0),
        "pre-fault after turning on",
    )?;
    eq(
        get(&vm, 0, n),
        Ok(vec![3, 10, 64, 100, 199]),
        "write-protected when logging started",
    )?;
    // A read-only logged slot never dirties.
    let ro = Anon::new(4 * PS);
    touch(&ro, 1);
    let r = Region2 {
        flags: LOG_DIRTY | READONLY,
        ..slot(1, 0, 4 * PS, ro.hva())
    };
    eq(region2(&vm, r), Ok(0), "read-only logged slot")?;
    eq(pre_fault(&vcpu, 0, 4 * PS, 0).0, Ok(0), "pre-fault it")?;
    eq(get(&vm, 1, 4), Ok(vec![]), "read-only: nothing dirty")?;
    drop((vcpu, vm, mem, ro));
    counts_are_zero()
}

fn manual_protect_and_clear() -> Result<(), String> {
    let vm = vm_of(0)?;
    eq(
        enable_cap(&vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, 0, MANUAL_PROTECT),
        Ok(0),
        "manual protect",
    )?;
    let n = 256u64;
    let mem = Anon::new(n * PS);
    eq(region2(&vm, logged(0, 0, n * PS, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm, 0)?;
    for p in [5, 70, 255] {
        touch(&mem, p);
    }
    eq(pre_fault(&vcpu, 0, n * PS, 0).0, Ok(0), "pre-fault")?;
    eq(get(&vm, 0, n), Ok(vec![5, 70, 255]), "GET")?;
    eq(
        get(&vm, 0, n),
        Ok(vec![5, 70, 255]),
        "GET again: manual protect clears nothing",
    )?;
    eq(
        clear(&vm, 0, 0, 64, &[5, 6]),
        Ok(0),
        "CLEAR page 5 (and clean 6)",
    )?;
    eq(get(&vm, 0, n), Ok(vec![70, 255]), "page 5 cleared")?;
    eq(
        clear(&vm, 0, 64, 192, &[70, 255]),
        Ok(0),
        "CLEAR to the end",
    )?;
    eq(get(&vm, 0, n), Ok(vec![]), "all clear")?;
    // CLEAR write-protected them: mapping them again marks them again.
    eq(pre_fault(&vcpu, 0, n * PS, 0).0, Ok(0), "pre-fault again")?;
    eq(get(&vm, 0, n), Ok(vec![5, 70, 255]), "re-armed by CLEAR")?;
    // INITIALLY_SET: a slot starts logging all dirty.
    eq(
        enable_cap(
            &vm,
            KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            0,
            MANUAL_PROTECT | INITIALLY_SET,
        ),
        Ok(0),
        "initially set",
    )?;
    let mem2 = Anon::new(100 * PS);
    eq(
        region2(&vm, logged(1, 4 * MB, 100 * PS, mem2.hva())),
        Ok(0),
        "slot 1",
    )?;
    eq(
        get(&vm, 1, 100),
        Ok((0..100).collect()),
        "every page, none beyond",
    )?;
    eq(
        clear(&vm, 1, 0, 100, &(0..100).collect::<Vec<_>>()),
        Ok(0),
        "CLEAR all",
    )?;
    eq(get(&vm, 1, 100), Ok(vec![]), "clean")?;
    // CLEAR also works without manual protect (upstream does not check it).
    let vm2 = vm_of(0)?;
    eq(
        region2(&vm2, logged(0, 0, n * PS, mem.hva())),
        Ok(0),
        "VM 2 slot",
    )?;
    let vcpu2 = create_vcpu(&vm2, 0)?;
    eq(pre_fault(&vcpu2, 0, n * PS, 0).0, Ok(0), "VM 2 pre-fault")?;
    eq(clear(&vm2, 0, 0, 256, &[5]), Ok(0), "VM 2 CLEAR page 5")?;
    eq(get(&vm2, 0, n), Ok(vec![70, 255]), "VM 2 GET")?;
    drop((vcpu, vcpu2, vm, vm2, mem, mem2));
    counts_are_zero()
}

/// Logging toggled, the log read and cleared, and pages mapped, all at once from four threads;
/// every call must answer with success or the errno its race allows, and afterwards the log
/// must work.
fn toggling_races() -> Result<(), String> {
    let vm = Arc::new(vm_of(0)?);
    let n = 512u64;
    let mem = Anon::new(n * PS);
    let hva = mem.hva();
    for p in 0..n {
        touch(&mem, p);
    }
    eq(region2(&vm, logged(0, 0, n * PS, mem.hva())), Ok(0), "slot")?;
    let vcpu = Arc::new(create_vcpu(&vm, 0)?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (vm, stop) = (vm.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let mut on = true;
            for _ in 0..300 {
                let r = if on {
                    slot(0, 0, n * PS, hva)
                } else {
                    logged(0, 0, n * PS, hva)
                };
                region2(&vm, r).map_err(|e| format!("toggle: errno {e}"))?;
                on = !on;
            }
            stop.store(true, Ordering::Release);
            Ok(())
        }));
    }
    {
        let (vcpu, stop) = (vcpu.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Acquire) {
                pre_fault(&vcpu, 0, n * PS, 0)
                    .0
                    .map_err(|e| format!("pre-fault: errno {e}"))?;
            }
            Ok(())
        }));
    }
    {
        let (vm, stop) = (vm.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Acquire) {
                match get(&vm, 0, n) {
                    Ok(_) | Err(ENOENT) => {}
                    Err(e) => return Err(format!("GET: errno {e}")),
                }
            }
            Ok(())
        }));
    }
    {
        let (vm, stop) = (vm.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let all: Vec<u64> = (0..n).collect();
            while !stop.load(Ordering::Acquire) {
                match clear(&vm, 0, 0, n as u32, &all) {
                    Ok(_) | Err(ENOENT) => {}
                    Err(e) => return Err(format!("CLEAR: errno {e}")),
                }
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| "thread panicked".to_string())??;
    }
    // 300 toggles from "on": logging ends on. A clean slate, then every page dirties again.
    get(&vm, 0, n).map_err(|e| format!("final GET: errno {e}"))?;
    eq(pre_fault(&vcpu, 0, n * PS, 0).0, Ok(0), "final pre-fault")?;
    eq(
        get(&vm, 0, n),
        Ok((0..n).collect()),
        "every page after the races",
    )?;
    drop(vcpu);
    drop(vm);
    drop(mem);
    counts_are_zero()
}

fn td_refuses_dirty_logging(_: &Ctx) -> Result<(), String> {
    let td = vm_of(KVM_X86_TDX_VM)?;
    let mem = Anon::new(MB);
    eq(
        check_cap(td.as_raw_fd(), KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
        0,
        "a TD offers no dirty logging",
    )?;
    eq(
        region2(&td, logged(0, 0, MB, mem.hva())),
        Err(EINVAL),
        "LOG_DIRTY_PAGES on a TD",
    )?;
    eq(
        region2(&td, slot(0, 0, MB, mem.hva())),
        Ok(0),
        "the slot without it",
    )?;
    eq(
        region2(&td, logged(0, 0, MB, mem.hva())),
        Err(EINVAL),
        "turning it on",
    )?;
    eq(get(&td, 0, MB / PS), Err(ENOENT), "GET on the TD's slot")?;
    drop((td, mem));
    counts_are_zero()
}

/// The tests of this area.
pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("dirty_log_caps_and_manual_protect_cap", Any, |_| {
            caps_and_manual_protect_cap()
        }),
        ("dirty_log_memslot_flags_and_errnos", Any, |_| {
            memslot_flags_and_errnos()
        }),
        ("dirty_log_get_clear_hostile_input", Any, |_| {
            get_and_clear_hostile_input()
        }),
        ("dirty_log_prefault_marks_writable_pages", Any, |_| {
            prefault_marks_writable_pages()
        }),
        ("dirty_log_manual_protect_and_clear", Any, |_| {
            manual_protect_and_clear()
        }),
        ("dirty_log_toggling_races", Any, |_| toggling_races()),
        ("dirty_log_refused_on_td", Tdx, td_refuses_dirty_logging),
    ]
}

// ---- Running guests (the run loop, `svm-run`) -------------------------------------------
//
// The guests start at the reset vector (no register ioctls needed): the run tests' `Guest`
// maps 64 KiB of "ROM" at 0xffff0000 (code at offset 0, `jmp 0` at 0xfff0) and RAM at GPA 0;
// in real mode DS = 0, so `[addr]` is GPA `addr`.

use super::run::Guest;
use kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

/// Dirty pages of `slot` (size `size`) through kvm-ioctls, as page numbers.
fn dirty_pages(vm: &VmFd, slot: u32, size: u64) -> Result<Vec<u64>, String> {
    vm.get_dirty_log(slot, size as usize)
        .map(|b| pages_of(&b))
        .map_err(|e| format!("KVM_GET_DIRTY_LOG: {e}"))
}

/// Runs to the next exit and names it (`out PORT` or `hlt`).
fn run_until(vcpu: &mut VcpuFd) -> Result<String, String> {
    match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(port, _) => Ok(format!("out {port:#x}")),
        VcpuExit::Hlt => Ok("hlt".into()),
        e => Err(format!("unexpected exit {e:?}")),
    }
}

const ROM: u64 = 0x10000;

/// A real-mode guest writes pages; each `KVM_GET_DIRTY_LOG` shows exactly what it wrote since
/// the last one, its code pages the first time (mapped writable by their first fetch, as
/// upstream: kvm-ioctls' `test_run_code` counts on it), and nothing when it wrote nothing.
fn real_mode_guest_dirties_what_it_writes() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xc6, 0x06, 0x00, 0x30, 0x01, // mov byte [0x3000], 1
        0xc6, 0x06, 0x00, 0x50, 0x01, // mov byte [0x5000], 1
        0xe6, 0x10,                   // out 0x10, al
        0xc6, 0x06, 0x00, 0x30, 0x02, // mov byte [0x3000], 2
        0xe6, 0x10,                   // out 0x10, al
        0xe6, 0x10,                   // out 0x10, al (nothing written since)
        0xc6, 0x06, 0x00, 0x60, 0x01, // mov byte [0x6000], 1
        0xf4,                         // hlt
    ];
    let ram = 0x8000;
    let g = Guest::new(code, ram as usize)?;
    g.slot(0, 0xffff_0000, &g.rom, KVM_MEM_LOG_DIRTY_PAGES)?;
    g.slot(1, 0, &g.ram, KVM_MEM_LOG_DIRTY_PAGES)?;
    let mut vcpu = g.vcpu(0)?;
    eq(run_until(&mut vcpu)?, "out 0x10".into(), "first exit")?;
    eq(
        dirty_pages(&g.vm, 0, ROM)?,
        vec![0, 15],
        "the code pages (offset 0 and the reset vector's)",
    )?;
    eq(
        dirty_pages(&g.vm, 1, ram)?,
        vec![3, 5],
        "the two pages written",
    )?;
    eq(run_until(&mut vcpu)?, "out 0x10".into(), "second exit")?;
    eq(
        dirty_pages(&g.vm, 1, ram)?,
        vec![3],
        "only the page written again",
    )?;
    eq(
        dirty_pages(&g.vm, 0, ROM)?,
        vec![],
        "code fetched again: not dirty",
    )?;
    eq(run_until(&mut vcpu)?, "out 0x10".into(), "third exit")?;
    eq(
        dirty_pages(&g.vm, 1, ram)?,
        vec![],
        "nothing written: nothing dirty",
    )?;
    eq(run_until(&mut vcpu)?, "hlt".into(), "hlt")?;
    eq(
        dirty_pages(&g.vm, 1, ram)?,
        vec![6],
        "the last page written",
    )?;
    eq(dirty_pages(&g.vm, 1, ram)?, vec![], "and then nothing")?;
    eq(
        (g.ram.read(0x3000), g.ram.read(0x5000), g.ram.read(0x6000)),
        (2, 1, 1),
        "the guest's writes reached host memory",
    )?;
    Ok(())
}

/// An anonymous mapping of `len` bytes aligned to 2 MiB and advised for transparent huge pages.
struct HugeAnon {
    base: *mut libc::c_void,
    len: usize,
    aligned: u64,
}

impl HugeAnon {
    fn new(len: u64) -> HugeAnon {
        let total = (len + 2 * MB) as usize;
        // SAFETY: a fresh private anonymous mapping; unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let aligned = (base as u64).next_multiple_of(2 * MB);
        // SAFETY: advice on the mapping just made.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                len as usize,
                libc::MADV_HUGEPAGE,
            )
        };
        HugeAnon {
            base,
            len: total,
            aligned,
        }
    }
}

impl Drop for HugeAnon {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Replaces the run tests' 4 KiB RAM slot (slot 1 at GPA 0) with nothing, so a 2 MiB one can
/// take its id and place.
fn delete_ram_slot(vm: &VmFd) -> Result<(), String> {
    let r = kvm_bindings::kvm_userspace_memory_region {
        slot: 1,
        ..Default::default()
    };
    // SAFETY: a delete maps nothing.
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("delete RAM slot: {e}"))
}

fn set_data_slot(vm: &VmFd, hva: u64, flags: u32) -> Result<(), String> {
    let r = kvm_bindings::kvm_userspace_memory_region {
        slot: 1,
        flags,
        guest_phys_addr: 0,
        memory_size: 2 * MB,
        userspace_addr: hva,
    };
    // SAFETY: the mapping outlives the VM in every caller.
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("data slot: {e}"))
}

/// Writes one byte at offset `off` of each of the 256 pages of the first MiB, segment by
/// segment (`mov ds, ax; mov byte [off], v; add ax, 0x100; jnz`), starting from AX = 0.
#[rustfmt::skip]
fn every_page(out: &mut Vec<u8>, off: u16, v: u8) {
    let o = off.to_le_bytes();
    out.extend_from_slice(&[
        0x31, 0xc0,                         // xor ax, ax
        0x8e, 0xd8,                         // mov ds, ax
        0xc6, 0x06, o[0], o[1], v,          // mov byte [off], v
        0x05, 0x00, 0x01,                   // add ax, 0x100
        0x75, 0xf4,                         // jnz back to mov ds, ax
    ]);
}

/// A real-mode guest writes a 2 MiB slot backed by transparent huge pages on the host: first
/// without logging, then logging starts under it and only what it writes from then on is
/// dirty, page by page (real mode reaches the first MiB of it). The code lives in a slot that
/// does not log.
fn guest_dirties_a_thp_backed_range() -> Result<(), String> {
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xb8, 0x00, 0x10,             // mov ax, 0x1000
        0x8e, 0xd8,                   // mov ds, ax       (base 0x10000: page 16)
        0xc6, 0x06, 0x00, 0x00, 0x01, // mov byte [0x0000], 1   page 16
        0xc6, 0x06, 0x00, 0x10, 0x01, // mov byte [0x1000], 1   page 17
        0xe6, 0x10,                   // out 0x10: logging starts now
        0xc6, 0x06, 0x00, 0x00, 0x02, // page 16
        0xc6, 0x06, 0x00, 0x70, 0x02, // page 23
        0xb8, 0x00, 0xf0,             // mov ax, 0xf000
        0x8e, 0xd8,                   // mov ds, ax
        0xc6, 0x06, 0x00, 0xf0, 0x02, // [0xf000]: page 255
        0xe6, 0x10,                   // out 0x10
    ];
    every_page(&mut code, 0x800, 3);
    code.push(0xf4);
    let g = Guest::new(&code, 4096)?;
    let data = HugeAnon::new(2 * MB);
    delete_ram_slot(&g.vm)?;
    set_data_slot(&g.vm, data.aligned, 0)?;
    let mut vcpu = g.vcpu(0)?;
    eq(run_until(&mut vcpu)?, "out 0x10".into(), "first exit")?;
    set_data_slot(&g.vm, data.aligned, KVM_MEM_LOG_DIRTY_PAGES)?;
    eq(
        dirty_pages(&g.vm, 1, 2 * MB)?,
        vec![],
        "clean when logging starts",
    )?;
    eq(run_until(&mut vcpu)?, "out 0x10".into(), "second exit")?;
    eq(
        dirty_pages(&g.vm, 1, 2 * MB)?,
        vec![16, 23, 255],
        "the pages written since logging started",
    )?;
    eq(run_until(&mut vcpu)?, "hlt".into(), "hlt")?;
    eq(
        dirty_pages(&g.vm, 1, 2 * MB)?,
        (0..256).collect(),
        "every page the loop wrote",
    )?;
    eq(dirty_pages(&g.vm, 1, 2 * MB)?, vec![], "then nothing")?;
    eq(
        dirty_pages(&g.vm, 0, ROM).map_err(|_| ()),
        Err(()),
        "the code slot does not log",
    )?;
    Ok(())
}

/// Logging is toggled and the log read from another thread while a guest writes 256 pages
/// over and over; then, logging on, one more pass must show every page dirty (a leaf left
/// writable without its mark would hide a page).
fn toggling_while_a_guest_runs() -> Result<(), String> {
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xb9, 0x32, 0x00,             // mov cx, 50
    ];
    every_page(&mut code, 0, 1);
    // loop back to the pass (dec cx; jnz): the pass is the 14 bytes just emitted.
    code.extend_from_slice(&[0xe2, 0xf0]);
    code.extend_from_slice(&[0xe6, 0x10]); // out 0x10
    every_page(&mut code, 0, 4);
    code.push(0xf4);
    let g = Guest::new(&code, 4096)?;
    let data = HugeAnon::new(2 * MB);
    let hva = data.aligned;
    delete_ram_slot(&g.vm)?;
    set_data_slot(&g.vm, hva, KVM_MEM_LOG_DIRTY_PAGES)?;
    let mut vcpu = g.vcpu(0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let vm = &g.vm;
    let (first, toggles) = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let toggler = s.spawn(move || -> Result<usize, String> {
            let mut n = 0;
            while !stop2.load(Ordering::Acquire) {
                let flags = if n % 2 == 0 {
                    0
                } else {
                    KVM_MEM_LOG_DIRTY_PAGES
                };
                set_data_slot(vm, hva, flags)?;
                match vm.get_dirty_log(1, 2 * MB as usize) {
                    Ok(_) => {}
                    Err(e) if e.errno() == ENOENT => {}
                    Err(e) => return Err(format!("GET: {e}")),
                }
                n += 1;
            }
            // End with logging on.
            set_data_slot(vm, hva, KVM_MEM_LOG_DIRTY_PAGES)?;
            Ok(n)
        });
        let first = run_until(&mut vcpu);
        stop.store(true, Ordering::Release);
        let toggles = toggler.join().map_err(|_| "toggler panicked".to_string());
        (first, toggles)
    });
    let toggles = toggles??;
    eq(first?, "out 0x10".into(), "the write loop ends")?;
    check(toggles > 2, "the flag was toggled while the guest ran")?;
    dirty_pages(&g.vm, 1, 2 * MB)?;
    eq(run_until(&mut vcpu)?, "hlt".into(), "hlt")?;
    eq(
        dirty_pages(&g.vm, 1, 2 * MB)?,
        (0..256).collect(),
        "every page of the last pass",
    )?;
    Ok(())
}

/// The tests that run guests (after the run loop's own tests in the suite's order).
pub(crate) fn run_tests() -> Vec<Test> {
    vec![
        ("dirty_log_real_mode_guest_writes", Any, |_| {
            real_mode_guest_dirties_what_it_writes()
        }),
        ("dirty_log_guest_writes_thp_backed_2m_slot", Any, |_| {
            guest_dirties_a_thp_backed_range()
        }),
        ("dirty_log_toggled_while_a_guest_runs", Any, |_| {
            toggling_while_a_guest_runs()
        }),
    ]
}
