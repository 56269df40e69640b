// SPDX-License-Identifier: GPL-2.0-only
//! Guest memory: memslots (`KVM_SET_USER_MEMORY_REGION(2)`), guest_memfd, memory attributes —
//! the behaviour and errnos of upstream 6.12, hostile input, races, nothing left after close.

use crate::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const KVM_CAP_USER_MEMORY: u64 = 3;
const KVM_CAP_NR_MEMSLOTS: u64 = 10;
const KVM_CAP_READONLY_MEM: u64 = 81;
const KVM_CAP_USER_MEMORY2: u64 = 231;
const KVM_CAP_MEMORY_ATTRIBUTES: u64 = 233;
const KVM_CAP_GUEST_MEMFD: u64 = 234;
const KVM_CAP_PRE_FAULT_MEMORY: u64 = 236;
const KVM_USER_MEM_SLOTS: i64 = 32764;
const PRIVATE: u64 = 1 << 3;
const LOG_DIRTY: u32 = 1;
const READONLY: u32 = 2;
const GUEST_MEMFD: u32 = 4;
const SWP: u64 = 1;
const PS: u64 = 4096;
const MB: u64 = 1 << 20;

fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (KVMIO << 8) | nr
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Region2 {
    slot: u32,
    flags: u32,
    gpa: u64,
    size: u64,
    hva: u64,
    gmem_offset: u64,
    gmem: u32,
    pad1: u32,
    pad2: [u64; 14],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Region1 {
    slot: u32,
    flags: u32,
    gpa: u64,
    size: u64,
    hva: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Attrs {
    address: u64,
    size: u64,
    attributes: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CreateGmem {
    size: u64,
    flags: u64,
    reserved: [u64; 6],
}

fn region2_raw(vm: i32, arg: u64) -> Result<i64, i32> {
    ioctl(vm, iow(0x49, 160), arg)
}

fn region2(vm: &OwnedFd, r: Region2) -> Result<i64, i32> {
    region2_raw(vm.as_raw_fd(), &r as *const Region2 as u64)
}

fn region1(vm: &OwnedFd, r: Region1) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iow(0x46, 32), &r as *const Region1 as u64)
}

fn slot(slot: u32, gpa: u64, size: u64, hva: u64) -> Region2 {
    Region2 {
        slot,
        gpa,
        size,
        hva,
        gmem: u32::MAX,
        ..Default::default()
    }
}

fn attrs(vm: &OwnedFd, a: Attrs) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iow(0xd2, 32), &a as *const Attrs as u64)
}

fn gmem_raw(vm: &OwnedFd, arg: u64) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iowr(0xd4, 64), arg)
}

fn gmem(vm: &OwnedFd, size: u64, flags: u64) -> Result<OwnedFd, i32> {
    let c = CreateGmem {
        size,
        flags,
        ..Default::default()
    };
    gmem_raw(vm, &c as *const CreateGmem as u64).map(|fd| {
        // SAFETY: a fresh fd from KVM_CREATE_GUEST_MEMFD, owned from now on.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    })
}

fn check_cap(fd: i32, cap: u64) -> i64 {
    ioctl(fd, io(0x03), cap).unwrap_or(-1)
}

/// Anonymous memory the test owns.
struct Anon {
    addr: *mut libc::c_void,
    len: usize,
}

impl Anon {
    fn new(len: u64) -> Anon {
        // SAFETY: a fresh private anonymous mapping; unmapped in Drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        Anon {
            addr,
            len: len as usize,
        }
    }

    fn hva(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn fallocate(fd: &OwnedFd, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;

fn vm_of(ty: u64) -> Result<OwnedFd, String> {
    create_vm(&dev(), ty).map_err(|e| format!("create VM type {ty}: errno {e}"))
}

fn caps_answer_what_works(c: &Ctx) -> Result<(), String> {
    let kvm = dev();
    let k = kvm.as_raw_fd();
    eq(check_cap(k, KVM_CAP_USER_MEMORY), 1, "USER_MEMORY")?;
    eq(check_cap(k, KVM_CAP_USER_MEMORY2), 1, "USER_MEMORY2")?;
    eq(
        check_cap(k, KVM_CAP_NR_MEMSLOTS),
        KVM_USER_MEM_SLOTS,
        "NR_MEMSLOTS",
    )?;
    eq(
        check_cap(k, KVM_CAP_READONLY_MEM),
        1,
        "READONLY_MEM on /dev/kvm",
    )?;
    eq(
        check_cap(k, KVM_CAP_GUEST_MEMFD),
        1,
        "GUEST_MEMFD on /dev/kvm",
    )?;
    eq(
        check_cap(k, KVM_CAP_MEMORY_ATTRIBUTES),
        PRIVATE as i64,
        "MEMORY_ATTRIBUTES on /dev/kvm",
    )?;
    eq(
        check_cap(k, KVM_CAP_PRE_FAULT_MEMORY),
        1,
        "PRE_FAULT_MEMORY",
    )?;
    let plain = vm_of(0)?;
    let p = plain.as_raw_fd();
    eq(
        check_cap(p, KVM_CAP_READONLY_MEM),
        1,
        "READONLY_MEM, default VM",
    )?;
    eq(
        check_cap(p, KVM_CAP_GUEST_MEMFD),
        0,
        "GUEST_MEMFD, default VM",
    )?;
    eq(
        check_cap(p, KVM_CAP_MEMORY_ATTRIBUTES),
        0,
        "MEMORY_ATTRIBUTES, default VM",
    )?;
    let swp = vm_of(SWP)?;
    let s = swp.as_raw_fd();
    eq(
        check_cap(s, KVM_CAP_READONLY_MEM),
        1,
        "READONLY_MEM, SW_PROTECTED",
    )?;
    eq(
        check_cap(s, KVM_CAP_GUEST_MEMFD),
        1,
        "GUEST_MEMFD, SW_PROTECTED",
    )?;
    eq(
        check_cap(s, KVM_CAP_MEMORY_ATTRIBUTES),
        PRIVATE as i64,
        "ATTRIBUTES, SW_PROTECTED",
    )?;
    if c.tdx {
        let td = vm_of(KVM_X86_TDX_VM)?;
        let t = td.as_raw_fd();
        eq(check_cap(t, KVM_CAP_READONLY_MEM), 0, "READONLY_MEM, TD")?;
        eq(check_cap(t, KVM_CAP_GUEST_MEMFD), 1, "GUEST_MEMFD, TD")?;
        eq(
            check_cap(t, KVM_CAP_MEMORY_ATTRIBUTES),
            PRIVATE as i64,
            "ATTRIBUTES, TD",
        )?;
    }
    Ok(())
}

fn memslot_create_move_flags_delete() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(4 * MB);
    eq(region2(&vm, slot(0, 0, 2 * MB, mem.hva())), Ok(0), "create")?;
    eq(
        region2(&vm, slot(0, 0, 2 * MB, mem.hva())),
        Ok(0),
        "same again: nothing to change",
    )?;
    eq(
        region2(&vm, slot(1, MB, 2 * MB, mem.hva())),
        Err(libc::EEXIST),
        "overlap",
    )?;
    eq(
        region2(&vm, slot(1, 2 * MB, 2 * MB, mem.hva() + 2 * MB)),
        Ok(0),
        "touching",
    )?;
    eq(
        region2(&vm, slot(0, 8 * MB, 2 * MB, mem.hva())),
        Ok(0),
        "move",
    )?;
    eq(
        region2(&vm, slot(0, 8 * MB, 4 * MB, mem.hva())),
        Err(EINVAL),
        "resize",
    )?;
    eq(
        region2(&vm, slot(0, 8 * MB, 2 * MB, mem.hva() + PS)),
        Err(EINVAL),
        "new HVA",
    )?;
    let ro = Region2 {
        flags: READONLY,
        ..slot(0, 8 * MB, 2 * MB, mem.hva())
    };
    eq(region2(&vm, ro), Err(EINVAL), "toggle READONLY")?;
    eq(region2(&vm, slot(0, 0, 0, 0)), Ok(0), "delete")?;
    eq(region2(&vm, slot(0, 0, 0, 0)), Err(EINVAL), "delete again")?;
    let ro = Region2 {
        flags: READONLY,
        ..slot(2, 16 * MB, MB, mem.hva())
    };
    eq(region2(&vm, ro), Ok(0), "READONLY slot on a default VM")?;
    let v1 = Region1 {
        slot: 3,
        flags: 0,
        gpa: 32 * MB,
        size: MB,
        hva: mem.hva(),
    };
    eq(region1(&vm, v1), Ok(0), "v1 create")?;
    eq(region1(&vm, Region1 { size: 0, ..v1 }), Ok(0), "v1 delete")?;
    eq(
        region2(
            &vm,
            slot(KVM_USER_MEM_SLOTS as u32 - 1, 64 * MB, PS, mem.hva()),
        ),
        Ok(0),
        "last id",
    )
}

fn memslot_hostile_input() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(MB);
    let h = mem.hva();
    let v = vm.as_raw_fd();
    eq(region2_raw(v, 0), Err(EFAULT), "NULL")?;
    eq(
        region2_raw(v, 0xffff_8000_0000_0000),
        Err(EFAULT),
        "kernel pointer",
    )?;
    eq(
        region2(&vm, slot(0, 0, PS + 1, h)),
        Err(EINVAL),
        "size not aligned",
    )?;
    eq(
        region2(&vm, slot(0, 0x800, PS, h)),
        Err(EINVAL),
        "GPA not aligned",
    )?;
    eq(
        region2(&vm, slot(0, 0, PS, h + 1)),
        Err(EINVAL),
        "HVA not aligned",
    )?;
    eq(
        region2(&vm, slot(0, 0, PS, 0xffff_8000_0000_0000)),
        Err(EINVAL),
        "kernel HVA",
    )?;
    eq(
        region2(&vm, slot(0, 0, 1 << 47, 0x7fff_0000_0000)),
        Err(EINVAL),
        "HVA range past user space",
    )?;
    eq(
        region2(&vm, slot(KVM_USER_MEM_SLOTS as u32, 0, PS, h)),
        Err(EINVAL),
        "id 32764",
    )?;
    eq(
        region2(&vm, slot(1 << 16, 0, PS, h)),
        Err(EINVAL),
        "address space 1",
    )?;
    eq(
        region2(&vm, slot(0, !0xfff, 2 * PS, h)),
        Err(EINVAL),
        "GPA range wraps",
    )?;
    eq(
        region2(&vm, slot(0, 1 << 50, PS, h)),
        Err(EINVAL),
        "beyond MAXPHYADDR",
    )?;
    for bit in 0..32 {
        let f = Region2 {
            flags: 1 << bit,
            ..slot(0, 0, PS, h)
        };
        let want = if 1 << bit == READONLY {
            Ok(0)
        } else {
            Err(EINVAL)
        };
        eq(region2(&vm, f), want, &format!("flag bit {bit}"))?;
        if want.is_ok() {
            eq(region2(&vm, slot(0, 0, 0, 0)), Ok(0), "delete")?;
        }
    }
    let v1 = Region1 {
        slot: 0,
        flags: GUEST_MEMFD,
        gpa: 0,
        size: PS,
        hva: h,
    };
    eq(region1(&vm, v1), Err(EINVAL), "v1 with GUEST_MEMFD")?;
    // Deviation, said so: no KVM_GET_DIRTY_LOG yet, so dirty logging is refused.
    let d = Region2 {
        flags: LOG_DIRTY,
        ..slot(0, 0, PS, h)
    };
    eq(
        region2(&vm, d),
        Err(EINVAL),
        "LOG_DIRTY_PAGES (not offered)",
    )?;
    // Another VM's fd as the guest_memfd of a default VM: the flag is refused first.
    let g = Region2 {
        flags: GUEST_MEMFD,
        gmem: v as u32,
        ..slot(0, 0, PS, h)
    };
    eq(region2(&vm, g), Err(EINVAL), "GUEST_MEMFD on a default VM")
}

fn fstat(fd: &OwnedFd) -> libc::stat {
    // SAFETY: an all-zero `stat` is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer.
    unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    st
}

/// The cases of upstream's guest_memfd_test.
fn guest_memfd_file_like_upstream(ty: u64) -> Result<(), String> {
    let vm = vm_of(ty)?;
    for size in [1, PS - 1, PS + 1, 3 * PS / 2] {
        eq(
            gmem(&vm, size, 0).map(|_| ()),
            Err(EINVAL),
            &format!("size {size}"),
        )?;
    }
    for bit in 0..64 {
        eq(
            gmem(&vm, PS, 1 << bit).map(|_| ()),
            Err(EINVAL),
            &format!("flag bit {bit}"),
        )?;
    }
    let total = 4 * PS;
    let fd = gmem(&vm, total, 0).map_err(|e| format!("create: errno {e}"))?;
    let mut buf = [0u8; 4096];
    let f = fd.as_raw_fd();
    // SAFETY: valid buffer and fd; the calls must fail.
    unsafe {
        check(
            libc::read(f, buf.as_mut_ptr().cast(), PS as usize) < 0,
            "read fails",
        )?;
        check(
            libc::write(f, buf.as_ptr().cast(), PS as usize) < 0,
            "write fails",
        )?;
        check(
            libc::pread(f, buf.as_mut_ptr().cast(), PS as usize, 0) < 0,
            "pread fails",
        )?;
        check(
            libc::pwrite(f, buf.as_ptr().cast(), PS as usize, 0) < 0,
            "pwrite fails",
        )?;
        let m = libc::mmap(
            std::ptr::null_mut(),
            PS as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f,
            0,
        );
        check(m == libc::MAP_FAILED, "mmap fails")?;
    }
    let st = fstat(&fd);
    eq(st.st_size as u64, total, "st_size")?;
    eq(st.st_blksize as u64, PS, "st_blksize")?;
    eq(fallocate(&fd, KEEP, 0, total), Ok(()), "allocate all")?;
    eq(
        fallocate(&fd, KEEP | PUNCH, PS - 1, PS),
        Err(EINVAL),
        "unaligned offset",
    )?;
    eq(
        fallocate(&fd, KEEP, total, PS),
        Err(EINVAL),
        "at total size",
    )?;
    eq(
        fallocate(&fd, KEEP, total + PS, PS),
        Err(EINVAL),
        "past total size",
    )?;
    eq(
        fallocate(&fd, KEEP | PUNCH, total, PS),
        Ok(()),
        "punch at total size",
    )?;
    eq(
        fallocate(&fd, KEEP | PUNCH, total + PS, PS),
        Ok(()),
        "punch past total size",
    )?;
    eq(
        fallocate(&fd, KEEP | PUNCH, PS, PS - 1),
        Err(EINVAL),
        "unaligned size",
    )?;
    eq(fallocate(&fd, KEEP | PUNCH, PS, PS), Ok(()), "punch")?;
    eq(fallocate(&fd, KEEP, PS, PS), Ok(()), "refill")?;
    for (off, len) in [
        (0, 1),
        (0, PS - 1),
        (0, PS + 1),
        (1, 1),
        (1, PS - 1),
        (1, PS),
        (1, PS + 1),
        (PS, 1),
        (PS, PS - 1),
        (PS, PS + 1),
    ] {
        eq(
            fallocate(&fd, KEEP | PUNCH, off, len),
            Err(EINVAL),
            &format!("punch {off}+{len}"),
        )?;
    }
    eq(
        fallocate(&fd, 0, 0, PS),
        Err(libc::EOPNOTSUPP),
        "without KEEP_SIZE",
    )?;
    let fd2 = gmem(&vm, 2 * PS, 0).map_err(|e| format!("second: errno {e}"))?;
    let st2 = fstat(&fd2);
    eq(st2.st_size as u64, 2 * PS, "second st_size")?;
    check(st.st_ino != st2.st_ino, "distinct inodes")?;
    // 2 MiB of a 4 MiB file, allocated and punched.
    let big = gmem(&vm, 4 * MB, 0).map_err(|e| format!("big: errno {e}"))?;
    eq(fallocate(&big, KEEP, 0, 4 * MB), Ok(()), "allocate 4 MiB")?;
    eq(
        fallocate(&big, KEEP | PUNCH, 2 * MB + PS, PS),
        Ok(()),
        "punch one page of a 2 MiB folio",
    )?;
    Ok(())
}

fn guest_memfd_binding_checks(ty: u64) -> Result<(), String> {
    let vm = vm_of(ty)?;
    let other = vm_of(ty)?;
    let mem = Anon::new(4 * MB);
    let h = mem.hva();
    let fd = gmem(&vm, 2 * MB, 0).map_err(|e| format!("create: errno {e}"))?;
    let theirs = gmem(&other, 2 * MB, 0).map_err(|e| format!("create: errno {e}"))?;
    let g = |s: u32, gpa: u64, size: u64, fd: i32, off: u64| Region2 {
        flags: GUEST_MEMFD,
        gmem: fd as u32,
        gmem_offset: off,
        ..slot(s, gpa, size, h)
    };
    let f = fd.as_raw_fd();
    eq(gmem_raw(&vm, 0), Err(EFAULT), "create from NULL")?;
    eq(gmem(&vm, 0, 0).map(|_| ()), Err(EINVAL), "size 0")?;
    eq(
        gmem(&vm, 1 << 63, 0).map(|_| ()),
        Err(EINVAL),
        "negative size",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, 1_000_000, 0)),
        Err(libc::EBADF),
        "fd not open",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, vm.as_raw_fd(), 0)),
        Err(EINVAL),
        "a VM fd",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, theirs.as_raw_fd(), 0)),
        Err(EINVAL),
        "another VM's file",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, f, 100)),
        Err(EINVAL),
        "offset not aligned",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, f, 3 * MB / 2)),
        Err(EINVAL),
        "past the file's end",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, f, !0xfff)),
        Err(EINVAL),
        "offset wraps",
    )?;
    let ro = Region2 {
        flags: GUEST_MEMFD | READONLY,
        ..g(0, 0, MB, f, 0)
    };
    eq(region2(&vm, ro), Err(EINVAL), "READONLY with GUEST_MEMFD")?;
    eq(region2(&vm, g(0, 0, MB, f, 0)), Ok(0), "bind")?;
    eq(
        region2(&vm, g(1, 4 * MB, MB, f, MB / 2)),
        Err(EINVAL),
        "overlapping binding",
    )?;
    eq(
        region2(&vm, g(1, 4 * MB, MB, f, MB)),
        Ok(0),
        "second binding",
    )?;
    eq(
        region2(&vm, g(0, 0, MB, f, 0)),
        Err(EINVAL),
        "guest_memfd slots are immutable",
    )?;
    eq(
        region2(&vm, slot(0, 8 * MB, MB, h)),
        Err(EINVAL),
        "not even moved without the flag",
    )?;
    eq(
        attrs(
            &vm,
            Attrs {
                address: 0,
                size: 2 * MB,
                attributes: PRIVATE,
                flags: 0,
            },
        ),
        Ok(0),
        "PRIVATE",
    )?;
    eq(fallocate(&fd, KEEP, 0, 2 * MB), Ok(()), "allocate")?;
    eq(
        fallocate(&fd, KEEP | PUNCH, 0, MB),
        Ok(()),
        "punch a bound range",
    )?;
    eq(region2(&vm, slot(0, 0, 0, 0)), Ok(0), "delete")?;
    eq(
        region2(&vm, g(0, 0, MB, f, 0)),
        Ok(0),
        "rebind after delete",
    )?;
    // The file outlives the VM fd (it holds a VM reference), and the slots outlive the file.
    drop(vm);
    eq(
        fallocate(&fd, KEEP | PUNCH, 0, 2 * MB),
        Ok(()),
        "punch after the VM fd closed",
    )?;
    drop(fd);
    drop(theirs);
    drop(other);
    counts_are_zero()
}

fn memory_attributes_checks() -> Result<(), String> {
    let swp = vm_of(SWP)?;
    let a = |address, size, attributes, flags| Attrs {
        address,
        size,
        attributes,
        flags,
    };
    eq(attrs(&swp, a(0, MB, PRIVATE, 0)), Ok(0), "PRIVATE")?;
    eq(attrs(&swp, a(0, MB, PRIVATE, 0)), Ok(0), "again")?;
    eq(attrs(&swp, a(PS, PS, 0, 0)), Ok(0), "shared hole")?;
    eq(
        ioctl(swp.as_raw_fd(), iow(0xd2, 32), 0),
        Err(EFAULT),
        "NULL",
    )?;
    eq(attrs(&swp, a(0, PS, PRIVATE, 1)), Err(EINVAL), "flags")?;
    eq(
        attrs(&swp, a(0, PS, 1 << 4, 0)),
        Err(EINVAL),
        "unknown attribute",
    )?;
    eq(attrs(&swp, a(0, 0, PRIVATE, 0)), Err(EINVAL), "size 0")?;
    eq(
        attrs(&swp, a(!0xfff, 2 * PS, PRIVATE, 0)),
        Err(EINVAL),
        "wraps",
    )?;
    eq(
        attrs(&swp, a(0x800, PS, PRIVATE, 0)),
        Err(EINVAL),
        "address not aligned",
    )?;
    eq(
        attrs(&swp, a(0, 0x800, PRIVATE, 0)),
        Err(EINVAL),
        "size not aligned",
    )?;
    let plain = vm_of(0)?;
    eq(
        attrs(&plain, a(0, PS, PRIVATE, 0)),
        Err(EINVAL),
        "PRIVATE on a default VM",
    )?;
    eq(
        attrs(&plain, a(0, PS, 0, 0)),
        Ok(0),
        "attributes 0 on a default VM",
    )?;
    // Many small ranges: the map grows as needed.
    for i in 0..2000u64 {
        eq(
            attrs(&swp, a(16 * MB + 2 * i * PS, PS, PRIVATE, 0)),
            Ok(0),
            "fragment",
        )?;
    }
    Ok(())
}

fn td_memory(_: &Ctx) -> Result<(), String> {
    let td = vm_of(KVM_X86_TDX_VM)?;
    let mem = Anon::new(4 * MB);
    let h = mem.hva();
    let fd = gmem(&td, 4 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let ro = Region2 {
        flags: READONLY,
        ..slot(0, 0, MB, h)
    };
    eq(region2(&td, ro), Err(EINVAL), "READONLY on a TD")?;
    eq(
        region2(&td, slot(0, (1 << 47) - MB, MB, h)),
        Err(EINVAL),
        "slot reaching the shared bit",
    )?;
    let g = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, h)
    };
    eq(region2(&td, g), Ok(0), "guest_memfd slot")?;
    eq(
        attrs(
            &td,
            Attrs {
                address: 0,
                size: 4 * MB,
                attributes: PRIVATE,
                flags: 0,
            },
        ),
        Ok(0),
        "PRIVATE",
    )?;
    eq(fallocate(&fd, KEEP, 0, 4 * MB), Ok(()), "allocate")?;
    eq(
        attrs(
            &td,
            Attrs {
                address: MB,
                size: MB,
                attributes: 0,
                flags: 0,
            },
        ),
        Ok(0),
        "to shared",
    )?;
    eq(fallocate(&fd, KEEP | PUNCH, 2 * MB, MB), Ok(()), "punch")?;
    eq(region2(&td, slot(0, 0, 0, 0)), Ok(0), "delete")?;
    drop(td);
    drop(fd);
    counts_are_zero()
}

/// Four threads change slots, attributes and holes of one VM at once; then everything closes.
fn racing_changes(ty: u64) -> Result<(), String> {
    let vm = Arc::new(vm_of(ty)?);
    let mem = Anon::new(8 * MB);
    let hva = mem.hva();
    let fd = Arc::new(gmem(&vm, 8 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..4u32 {
        let (vm, fd, stop) = (vm.clone(), fd.clone(), stop.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 300 {
                i += 1;
                let gpa = u64::from(t) * 2 * MB;
                match t {
                    0 | 1 => {
                        let r = Region2 {
                            flags: GUEST_MEMFD,
                            gmem: fd.as_raw_fd() as u32,
                            gmem_offset: gpa,
                            ..slot(t, gpa, 2 * MB, hva + gpa)
                        };
                        region2(&vm, r).map_err(|e| format!("create: errno {e}"))?;
                        region2(&vm, slot(t, 0, 0, 0)).map_err(|e| format!("delete: errno {e}"))?;
                    }
                    2 => {
                        let at = if i.is_multiple_of(2) { PRIVATE } else { 0 };
                        attrs(
                            &vm,
                            Attrs {
                                address: (i % 4) * MB,
                                size: 3 * MB,
                                attributes: at,
                                flags: 0,
                            },
                        )
                        .map_err(|e| format!("attributes: errno {e}"))?;
                    }
                    _ => {
                        let off = (i % 8) * MB;
                        fallocate(&fd, KEEP, off, MB)
                            .map_err(|e| format!("allocate: errno {e}"))?;
                        fallocate(&fd, KEEP | PUNCH, off, MB)
                            .map_err(|e| format!("punch: errno {e}"))?;
                    }
                }
            }
            Ok(())
        }));
    }
    let mut r = Ok(());
    for t in threads {
        let x = t
            .join()
            .map_err(|_| "thread panicked".to_string())
            .and_then(|x| x);
        if r.is_ok() {
            r = x;
        }
    }
    stop.store(true, Ordering::Relaxed);
    r?;
    drop(vm);
    drop(fd);
    drop(mem);
    counts_are_zero()
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct PreFault {
    gpa: u64,
    size: u64,
    flags: u64,
    padding: [u64; 5],
}

fn pre_fault_raw(vcpu: i32, arg: u64) -> Result<i64, i32> {
    ioctl(vcpu, iowr(0xd5, 64), arg)
}

/// `KVM_PRE_FAULT_MEMORY`: the result and the range as the kernel left it.
fn pre_fault(vcpu: &OwnedFd, gpa: u64, size: u64, flags: u64) -> (Result<i64, i32>, PreFault) {
    let mut r = PreFault {
        gpa,
        size,
        flags,
        ..Default::default()
    };
    let res = pre_fault_raw(vcpu.as_raw_fd(), &mut r as *mut PreFault as u64);
    (res, r)
}

fn create_vcpu(vm: &OwnedFd) -> Result<OwnedFd, String> {
    ioctl(vm.as_raw_fd(), io(0x41), 0)
        .map(|fd| {
            // SAFETY: a fresh vCPU fd, owned from now on.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        })
        .map_err(|e| format!("KVM_CREATE_VCPU: errno {e}"))
}

/// One statistic of the VM's binary stats fd, by name.
fn vm_stat(vm: &OwnedFd, name: &str) -> Result<u64, String> {
    let fd = ioctl(vm.as_raw_fd(), io(0xce), 0).map_err(|e| format!("GET_STATS_FD: errno {e}"))?;
    // SAFETY: a fresh stats fd, owned from now on.
    let f = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let read = |off: u64, len: usize| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; len];
        // SAFETY: valid buffer of `len` bytes.
        let n = unsafe { libc::pread(f.as_raw_fd(), b.as_mut_ptr().cast(), len, off as i64) };
        if n as usize != len {
            return Err(format!("stats pread at {off}: {n}"));
        }
        Ok(b)
    };
    let h = read(0, 24)?;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let (name_size, num_desc) = (u32_at(&h, 4) as usize, u32_at(&h, 8) as usize);
    let (desc_off, data_off) = (u32_at(&h, 16) as u64, u32_at(&h, 20) as u64);
    let desc_size = 16 + name_size;
    let descs = read(desc_off, desc_size * num_desc)?;
    for i in 0..num_desc {
        let d = &descs[i * desc_size..(i + 1) * desc_size];
        let n = &d[16..];
        let n = &n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())];
        if n == name.as_bytes() {
            let off = u32_at(d, 8) as u64;
            let v = read(data_off + off, 8)?;
            return Ok(u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        }
    }
    Err(format!("no statistic {name}"))
}

/// Pages mapped in the shared root, counted at 4 KiB.
fn shared_pages(vm: &OwnedFd) -> Result<u64, String> {
    Ok(vm_stat(vm, "shared_pages_4k")? + 512 * vm_stat(vm, "shared_pages_2m")?)
}

fn madvise_dontneed(addr: u64, len: u64) -> Result<(), String> {
    // SAFETY: a range of the test's own mapping.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
    check(r == 0, "madvise")
}

fn prefault_maps_shared_memory_and_follows_the_host_mm() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(2 * MB);
    eq(region2(&vm, slot(0, 0, 2 * MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm)?;
    eq(shared_pages(&vm)?, 0, "nothing mapped yet")?;
    let (r, range) = pre_fault(&vcpu, 0, 2 * MB, 0);
    eq(r, Ok(0), "pre-fault 2 MiB")?;
    eq(
        (range.gpa, range.size),
        (2 * MB, 0),
        "progress written back",
    )?;
    eq(shared_pages(&vm)?, 512, "512 pages mapped")?;
    let (r, _) = pre_fault(&vcpu, 0, 2 * MB, 0);
    eq(r, Ok(0), "again: already mapped")?;
    eq(shared_pages(&vm)?, 512, "still 512")?;
    // The host takes the pages back: the shared root must follow (MMU notifier).
    madvise_dontneed(mem.hva(), MB)?;
    eq(
        shared_pages(&vm)?,
        256,
        "MADV_DONTNEED of 1 MiB zaps 256 pages",
    )?;
    let (r, _) = pre_fault(&vcpu, 0, MB, 0);
    eq(r, Ok(0), "pre-fault after DONTNEED")?;
    eq(shared_pages(&vm)?, 512, "re-mapped")?;
    drop(mem);
    eq(shared_pages(&vm)?, 0, "munmap zaps everything")?;
    let (r, range) = pre_fault(&vcpu, 0, PS, 0);
    eq(r, Err(EFAULT), "pre-fault of an unmapped HVA")?;
    eq(range.size, PS, "no progress")?;
    // Deleting the slot zaps it too.
    let mem = Anon::new(2 * MB);
    eq(
        region2(&vm, slot(1, 4 * MB, 2 * MB, mem.hva())),
        Ok(0),
        "second slot",
    )?;
    eq(pre_fault(&vcpu, 4 * MB, 2 * MB, 0).0, Ok(0), "pre-fault it")?;
    eq(shared_pages(&vm)?, 512, "mapped")?;
    eq(
        region2(&vm, slot(1, 8 * MB, 2 * MB, mem.hva())),
        Ok(0),
        "move",
    )?;
    eq(shared_pages(&vm)?, 0, "a move zaps the old range")?;
    eq(
        pre_fault(&vcpu, 8 * MB, 2 * MB, 0).0,
        Ok(0),
        "pre-fault the new range",
    )?;
    eq(region2(&vm, slot(1, 0, 0, 0)), Ok(0), "delete")?;
    eq(shared_pages(&vm)?, 0, "a delete zaps")?;
    drop(vcpu);
    drop(vm);
    drop(mem);
    counts_are_zero()
}

fn prefault_hostile_input() -> Result<(), String> {
    let vm = vm_of(0)?;
    let mem = Anon::new(MB);
    eq(region2(&vm, slot(0, 0, MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm)?;
    let v = vcpu.as_raw_fd();
    eq(pre_fault(&vcpu, 0, PS, 1).0, Err(EINVAL), "flags")?;
    eq(
        pre_fault(&vcpu, 0x800, PS, 0).0,
        Err(EINVAL),
        "gpa not aligned",
    )?;
    eq(
        pre_fault(&vcpu, 0, 0x800, 0).0,
        Err(EINVAL),
        "size not aligned",
    )?;
    eq(pre_fault(&vcpu, 0, 0, 0).0, Err(EINVAL), "size 0")?;
    eq(pre_fault(&vcpu, !0xfff, 2 * PS, 0).0, Err(EINVAL), "wraps")?;
    eq(pre_fault_raw(v, 0), Err(EFAULT), "NULL")?;
    eq(
        pre_fault_raw(v, 0xffff_8000_0000_0000),
        Err(EFAULT),
        "kernel pointer",
    )?;
    let (r, range) = pre_fault(&vcpu, 16 * MB, PS, 0);
    eq(r, Err(libc::ENOENT), "no memslot")?;
    eq((range.gpa, range.size), (16 * MB, PS), "range untouched")?;
    let (r, range) = pre_fault(&vcpu, MB - 2 * PS, 4 * PS, 0);
    eq(
        r,
        Ok(0),
        "partly outside the slot: success for what was mapped",
    )?;
    eq((range.gpa, range.size), (MB, 2 * PS), "leftover")?;
    eq(
        ioctl(vm.as_raw_fd(), iowr(0xd5, 64), 0),
        Err(ENOTTY),
        "on a VM fd",
    )?;
    // A read-only argument: the pages are mapped, the write-back fails.
    // SAFETY: a fresh read-only anonymous page.
    let ro = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PS as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check(ro != libc::MAP_FAILED, "mmap")?;
    let arg = PreFault {
        gpa: 0,
        size: PS,
        ..Default::default()
    };
    // SAFETY: `ro` is a fresh page of ours, big enough; then made read-only.
    unsafe {
        std::ptr::write(ro.cast::<PreFault>(), arg);
        libc::mprotect(ro, PS as usize, libc::PROT_READ);
    }
    eq(
        pre_fault_raw(v, ro as u64),
        Err(EFAULT),
        "read-only argument",
    )?;
    // SAFETY: the page mapped above.
    unsafe { libc::munmap(ro, PS as usize) };
    Ok(())
}

fn prefault_private_memory_sw_protected() -> Result<(), String> {
    let vm = vm_of(SWP)?;
    let mem = Anon::new(4 * MB);
    let fd = gmem(&vm, 4 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?;
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, mem.hva())
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    let vcpu = create_vcpu(&vm)?;
    let a = |address, size, attributes| Attrs {
        address,
        size,
        attributes,
        flags: 0,
    };
    eq(attrs(&vm, a(0, 4 * MB, PRIVATE)), Ok(0), "PRIVATE")?;
    let (r, range) = pre_fault(&vcpu, 0, 4 * MB, 0);
    eq(r, Ok(0), "pre-fault private")?;
    eq(range.size, 0, "all of it")?;
    eq(
        shared_pages(&vm)?,
        1024,
        "4 MiB mapped (one root holds both kinds here)",
    )?;
    let huge = vm_stat(&vm, "shared_pages_2m")?;
    check(huge <= 2, "at most two 2 MiB leaves")?;
    // A hole in a 2 MiB page: the private mappings of the hole go.
    eq(
        fallocate(&fd, KEEP | PUNCH, 0, 2 * MB),
        Ok(()),
        "punch 2 MiB",
    )?;
    eq(shared_pages(&vm)?, 512, "the hole is unmapped")?;
    // Converting the rest to shared zaps its private mappings; shared pre-faults use the HVA.
    eq(attrs(&vm, a(2 * MB, 2 * MB, 0)), Ok(0), "to shared")?;
    eq(shared_pages(&vm)?, 0, "conversion zaps")?;
    eq(
        pre_fault(&vcpu, 2 * MB, 2 * MB, 0).0,
        Ok(0),
        "pre-fault shared",
    )?;
    eq(
        vm_stat(&vm, "shared_pages_4k")?,
        512,
        "shared memory at 4 KiB",
    )?;
    // Private access to a slot without guest_memfd: EFAULT (upstream's memory-fault exit).
    eq(
        region2(&vm, slot(1, 8 * MB, MB, mem.hva())),
        Ok(0),
        "plain slot",
    )?;
    eq(attrs(&vm, a(8 * MB, MB, PRIVATE)), Ok(0), "PRIVATE over it")?;
    eq(
        pre_fault(&vcpu, 8 * MB, PS, 0).0,
        Err(EFAULT),
        "private without guest_memfd",
    )?;
    // The guest_memfd closed: its private pages cannot be faulted any more.
    eq(attrs(&vm, a(0, 2 * MB, PRIVATE)), Ok(0), "PRIVATE again")?;
    drop(fd);
    eq(
        pre_fault(&vcpu, 0, PS, 0).0,
        Err(EFAULT),
        "guest_memfd closed",
    )?;
    drop(vcpu);
    drop(vm);
    drop(mem);
    counts_are_zero()
}

fn prefault_td_before_finalize_is_eopnotsupp() -> Result<(), String> {
    let td = vm_of(KVM_X86_TDX_VM)?;
    let mem = Anon::new(MB);
    eq(region2(&td, slot(0, 0, MB, mem.hva())), Ok(0), "slot")?;
    let vcpu = create_vcpu(&td)?;
    eq(
        pre_fault(&vcpu, 0, PS, 1).0,
        Err(EINVAL),
        "flags are checked first",
    )?;
    let (r, range) = pre_fault(&vcpu, 0, PS, 0);
    eq(r, Err(libc::EOPNOTSUPP), "before FINALIZE")?;
    eq(range.size, PS, "no progress")?;
    drop(vcpu);
    drop(td);
    drop(mem);
    counts_are_zero()
}

/// Pre-faults, conversions, hole punches and memslot changes race on one VM.
fn prefault_races(ty: u64) -> Result<(), String> {
    let vm = Arc::new(vm_of(ty)?);
    let mem = Anon::new(8 * MB);
    let hva = mem.hva();
    let fd = Arc::new(gmem(&vm, 8 * MB, 0).map_err(|e| format!("gmem: errno {e}"))?);
    let r = Region2 {
        flags: GUEST_MEMFD,
        gmem: fd.as_raw_fd() as u32,
        ..slot(0, 0, 4 * MB, hva)
    };
    eq(region2(&vm, r), Ok(0), "slot")?;
    let vcpus: Vec<Arc<OwnedFd>> = (0..2)
        .map(|_| create_vcpu(&vm).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let mut threads = Vec::new();
    for t in 0..5u64 {
        let (vm, fd, vcpus) = (vm.clone(), fd.clone(), vcpus.clone());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            for i in 0..150u64 {
                match t {
                    0 | 1 => {
                        let gpa = (i % 8) * MB;
                        match pre_fault(&vcpus[t as usize], gpa, MB, 0).0 {
                            // A TD refuses pre-faults before FINALIZE (tdabi's); the
                            // memslot, attribute and hole changes still race.
                            Ok(_) | Err(libc::ENOENT) | Err(libc::EFAULT) => {}
                            Err(libc::EOPNOTSUPP) if ty == KVM_X86_TDX_VM => {}
                            Err(e) => return Err(format!("pre-fault: errno {e}")),
                        }
                    }
                    2 => {
                        let at = if i.is_multiple_of(2) { PRIVATE } else { 0 };
                        attrs(
                            &vm,
                            Attrs {
                                address: (i % 4) * MB,
                                size: 2 * MB,
                                attributes: at,
                                flags: 0,
                            },
                        )
                        .map_err(|e| format!("attributes: errno {e}"))?;
                    }
                    3 => {
                        let off = (i % 4) * MB;
                        fallocate(&fd, KEEP | PUNCH, off, MB)
                            .map_err(|e| format!("punch: errno {e}"))?;
                    }
                    _ => {
                        let r = slot(1, 4 * MB, 4 * MB, hva + 4 * MB);
                        region2(&vm, r).map_err(|e| format!("create: errno {e}"))?;
                        madvise_dontneed(hva + 4 * MB + (i % 4) * MB, MB)?;
                        region2(&vm, slot(1, 0, 0, 0)).map_err(|e| format!("delete: errno {e}"))?;
                    }
                }
            }
            Ok(())
        }));
    }
    let mut r = Ok(());
    for t in threads {
        let x = t
            .join()
            .map_err(|_| "thread panicked".to_string())
            .and_then(|x| x);
        if r.is_ok() {
            r = x;
        }
    }
    r?;
    drop(vcpus);
    drop(vm);
    drop(fd);
    drop(mem);
    counts_are_zero()
}

/// The tests of this area.
pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("memory_caps_answer_what_works", Any, caps_answer_what_works),
        ("memslot_create_move_flags_delete", Any, |_| {
            memslot_create_move_flags_delete()
        }),
        ("memslot_hostile_input_is_refused", Any, |_| {
            memslot_hostile_input()
        }),
        ("guest_memfd_file_like_upstream_default_vm", Any, |_| {
            guest_memfd_file_like_upstream(0)
        }),
        ("guest_memfd_file_like_upstream_sw_protected", Any, |_| {
            guest_memfd_file_like_upstream(SWP)
        }),
        ("guest_memfd_binding_checks_sw_protected", Any, |_| {
            guest_memfd_binding_checks(SWP)
        }),
        ("guest_memfd_binding_checks_td", Tdx, |_| {
            guest_memfd_binding_checks(KVM_X86_TDX_VM)
        }),
        ("memory_attributes_checks", Any, |_| {
            memory_attributes_checks()
        }),
        ("td_memslots_attributes_punch_hole", Tdx, td_memory),
        ("memory_racing_changes_sw_protected", Any, |_| {
            racing_changes(SWP)
        }),
        ("memory_racing_changes_td", Tdx, |_| {
            racing_changes(KVM_X86_TDX_VM)
        }),
        (
            "prefault_maps_shared_memory_and_follows_the_host_mm",
            Any,
            |_| prefault_maps_shared_memory_and_follows_the_host_mm(),
        ),
        ("prefault_hostile_input_is_refused", Any, |_| {
            prefault_hostile_input()
        }),
        ("prefault_private_memory_sw_protected", Any, |_| {
            prefault_private_memory_sw_protected()
        }),
        ("prefault_td_before_finalize_is_eopnotsupp", Tdx, |_| {
            prefault_td_before_finalize_is_eopnotsupp()
        }),
        ("prefault_races_sw_protected", Any, |_| prefault_races(SWP)),
        ("prefault_races_td", Tdx, |_| prefault_races(KVM_X86_TDX_VM)),
    ]
}
