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
pub(super) const PRIVATE: u64 = 1 << 3;
const LOG_DIRTY: u32 = 1;
const READONLY: u32 = 2;
pub(super) const GUEST_MEMFD: u32 = 4;
pub(super) const SWP: u64 = 1;
pub(super) const PS: u64 = 4096;
pub(super) const MB: u64 = 1 << 20;

pub(super) fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (KVMIO << 8) | nr
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct Region2 {
    pub(super) slot: u32,
    pub(super) flags: u32,
    pub(super) gpa: u64,
    pub(super) size: u64,
    pub(super) hva: u64,
    pub(super) gmem_offset: u64,
    pub(super) gmem: u32,
    pub(super) pad1: u32,
    pub(super) pad2: [u64; 14],
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
pub(super) struct Attrs {
    pub(super) address: u64,
    pub(super) size: u64,
    pub(super) attributes: u64,
    pub(super) flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CreateGmem {
    size: u64,
    flags: u64,
    reserved: [u64; 6],
}

pub(super) fn region2_raw(vm: i32, arg: u64) -> Result<i64, i32> {
    ioctl(vm, iow(0x49, 160), arg)
}

pub(super) fn region2(vm: &OwnedFd, r: Region2) -> Result<i64, i32> {
    region2_raw(vm.as_raw_fd(), &r as *const Region2 as u64)
}

fn region1(vm: &OwnedFd, r: Region1) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iow(0x46, 32), &r as *const Region1 as u64)
}

pub(super) fn slot(slot: u32, gpa: u64, size: u64, hva: u64) -> Region2 {
    Region2 {
        slot,
        gpa,
        size,
        hva,
        gmem: u32::MAX,
        ..Default::default()
    }
}

pub(super) fn attrs(vm: &OwnedFd, a: Attrs) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iow(0xd2, 32), &a as *const Attrs as u64)
}

/// Converts `[address, address + size)` to private (`private`) or shared, as a racing thread
/// does it: an errno is the thread's failure.
pub(super) fn convert(vm: &OwnedFd, address: u64, size: u64, private: bool) -> Result<(), String> {
    let a = Attrs {
        address,
        size,
        attributes: if private { PRIVATE } else { 0 },
        flags: 0,
    };
    attrs(vm, a)
        .map(|_| ())
        .map_err(|e| format!("attributes: errno {e}"))
}

fn gmem_raw(vm: &OwnedFd, arg: u64) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), iowr(0xd4, 64), arg)
}

pub(super) fn gmem(vm: &OwnedFd, size: u64, flags: u64) -> Result<OwnedFd, i32> {
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
pub(super) struct Anon {
    addr: *mut libc::c_void,
    len: usize,
}

impl Anon {
    pub(super) fn new(len: u64) -> Anon {
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
        // 4 KiB host pages, as the selftests' slots: a hole in a transparent huge page would
        // split it and invalidate all of it.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(addr, len as usize, libc::MADV_NOHUGEPAGE) };
        Anon {
            addr,
            len: len as usize,
        }
    }

    pub(super) fn hva(&self) -> u64 {
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

pub(super) fn fallocate(fd: &OwnedFd, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

pub(super) const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
pub(super) const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;

pub(super) fn vm_of(ty: u64) -> Result<OwnedFd, String> {
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
        let want = if 1 << bit == READONLY || 1 << bit == LOG_DIRTY {
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
    // Dirty logging together with an unknown flag: refused, and no slot made.
    let d = Region2 {
        flags: LOG_DIRTY | 1 << 5,
        ..slot(0, 0, PS, h)
    };
    eq(region2(&vm, d), Err(EINVAL), "LOG_DIRTY_PAGES | bit 5")?;
    eq(
        region2(&vm, slot(0, 0, 0, 0)),
        Err(EINVAL),
        "no slot 0 to delete",
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
                        convert(&vm, (i % 4) * MB, 3 * MB, i.is_multiple_of(2))?;
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
    ]
}
