// SPDX-License-Identifier: GPL-2.0-only
//! vCPU tests: `KVM_CREATE_VCPU` rules (upstream 6.12), `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID)`,
//! the vCPU caps, the vCPU fd's mmap (kvm_run, PIO, coalesced-MMIO pages; SIGBUS beyond),
//! `KVM_RUN` before the run loop exists (immediate_exit → EINTR), close orders (VM first, vCPU
//! first, a mapping outliving both, threads racing), binary stats fds, and hostile input.

use crate::*;
use std::os::fd::AsFd;

const KVM_CREATE_VCPU: u64 = 0xae41;
const KVM_RUN: u64 = 0xae80;
const KVM_GET_STATS_FD: u64 = 0xaece;
const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_GET_REGS: u64 = 0x8090_ae81;
const KVM_CHECK_EXTENSION: u64 = 0xae03;

const KVM_CAP_NR_VCPUS: u64 = 9;
const KVM_CAP_MAX_VCPUS: u64 = 66;
const KVM_CAP_MAX_VCPU_ID: u64 = 128;
const KVM_CAP_IMMEDIATE_EXIT: u64 = 136;
const KVM_CAP_BINARY_STATS_FD: u64 = 203;

const KVM_MAX_VCPUS: i64 = 1024;
const KVM_MAX_VCPU_IDS: u64 = 4096;

// struct kvm_run offsets (x86_64).
const RUN_IMMEDIATE_EXIT: usize = 1;
const RUN_FLAGS: usize = 14;
const RUN_CR8: usize = 16;
const RUN_VALID_REGS: usize = 288;
const RUN_DIRTY_REGS: usize = 296;

const PAGE: usize = 4096;
const EEXIST: i32 = libc::EEXIST;
const EINTR: i32 = libc::EINTR;
const EIO: i32 = libc::EIO;

/// A VM of type `t`; a TD is initialised (KVM_TDX_INIT_VM), since a TD takes vCPUs only after
/// that (upstream `tdx_vcpu_create`: EIO before).
fn vm(kvm: &File, t: u64) -> Result<OwnedFd, String> {
    let vm = create_vm(kvm, t).map_err(|e| format!("KVM_CREATE_VM({t}): errno {e}"))?;
    if t == KVM_X86_TDX_VM {
        crate::tdx_vm::init_vm_default(vm.as_raw_fd())?;
    }
    Ok(vm)
}

fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: a fresh fd returned by the kernel, owned from now on.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn vcpu(vm: &OwnedFd, id: u64) -> Result<OwnedFd, i32> {
    ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, id).map(fd_of)
}

fn must_vcpu(vm: &OwnedFd, id: u64) -> Result<OwnedFd, String> {
    vcpu(vm, id).map_err(|e| format!("KVM_CREATE_VCPU({id}): errno {e}"))
}

fn stat(name: &str) -> i64 {
    stats()
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(-1, |(_, v)| v)
}

fn enable_cap(fd: &OwnedFd, cap: u32, flags: u32, arg0: u64) -> Result<i64, i32> {
    let mut c = [0u8; 104];
    c[0..4].copy_from_slice(&cap.to_ne_bytes());
    c[4..8].copy_from_slice(&flags.to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    ioctl(fd.as_raw_fd(), KVM_ENABLE_CAP, c.as_ptr() as u64)
}

/// A shared mapping of a vCPU fd, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: &impl AsRawFd, pages: usize, pgoff: usize) -> Result<Map, i32> {
        let len = pages * PAGE;
        // SAFETY: a fresh shared mapping chosen by the kernel; checked for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                (pgoff * PAGE) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Map { ptr: p.cast(), len })
    }

    fn read<T: Copy>(&self, off: usize) -> T {
        assert!(off + std::mem::size_of::<T>() <= self.len);
        // SAFETY: inside the mapping (asserted); the kernel page is readable.
        unsafe { self.ptr.add(off).cast::<T>().read_volatile() }
    }

    fn write<T: Copy>(&self, off: usize, v: T) {
        assert!(off + std::mem::size_of::<T>() <= self.len);
        // SAFETY: inside the shared, writable mapping (asserted).
        unsafe { self.ptr.add(off).cast::<T>().write_volatile(v) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs `f` in a forked child; returns how the child ended: Ok(exit code) or Err(signal).
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: the child only runs `f` (ioctls, memory accesses) and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        // SAFETY: leaves the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFSIGNALED(st) {
        Err(libc::WTERMSIG(st))
    } else {
        Ok(libc::WEXITSTATUS(st))
    }
}

fn present_cpus() -> i64 {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/present").unwrap_or_default();
    s.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<i64>().unwrap_or(0) - a.parse::<i64>().unwrap_or(0) + 1,
            None => i64::from(!r.is_empty()),
        })
        .sum()
}

/// A parsed binary stats file.
pub(crate) struct Stats {
    header: [u32; 6],
    id: String,
    names: Vec<String>,
    flags: Vec<u32>,
    values: Vec<u64>,
    raw: Vec<u8>,
}

fn pread(fd: &OwnedFd, buf: &mut [u8], off: i64) -> Result<usize, i32> {
    // SAFETY: `buf` is a valid writable buffer of its length.
    let r = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn read_stats(fd: &OwnedFd) -> Result<Stats, String> {
    let mut raw = vec![0u8; 65536];
    let n = pread(fd, &mut raw, 0).map_err(|e| format!("pread: errno {e}"))?;
    raw.truncate(n);
    let u32_at = |o: usize| u32::from_ne_bytes(raw[o..o + 4].try_into().unwrap_or([0; 4]));
    if n < 24 {
        return Err(format!("stats file of {n} bytes"));
    }
    let header = [0, 4, 8, 12, 16, 20].map(u32_at);
    let [_, name_size, num, id_off, desc_off, data_off] = header.map(|x| x as usize);
    let end = data_off + num * 8;
    if n != end || name_size != 48 {
        return Err(format!("header {header:?}, file {n} bytes"));
    }
    let cstr = |b: &[u8]| {
        String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())])
            .into_owned()
    };
    let id = cstr(&raw[id_off..id_off + name_size]);
    let mut names = Vec::new();
    let mut flags = Vec::new();
    let mut values = Vec::new();
    for i in 0..num {
        let d = desc_off + i * (16 + name_size);
        flags.push(u32_at(d));
        let size = u16::from_ne_bytes([raw[d + 6], raw[d + 7]]);
        let offset = u32_at(d + 8) as usize;
        if size != 1 || u32_at(d + 12) != 0 || offset != i * 8 {
            return Err(format!("descriptor {i}: size {size}, offset {offset}"));
        }
        names.push(cstr(&raw[d + 16..d + 16 + name_size]));
        let v = data_off + offset;
        values.push(u64::from_ne_bytes(
            raw[v..v + 8].try_into().unwrap_or([0; 8]),
        ));
    }
    Ok(Stats {
        header,
        id,
        names,
        flags,
        values,
        raw,
    })
}

impl Stats {
    pub(crate) fn get(&self, name: &str) -> Option<u64> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(self.values[i])
    }
}

fn stats_fd(fd: &OwnedFd) -> Result<OwnedFd, String> {
    ioctl(fd.as_raw_fd(), KVM_GET_STATS_FD, 0)
        .map(fd_of)
        .map_err(|e| format!("KVM_GET_STATS_FD: errno {e}"))
}

fn bad_pointers() -> [u64; 4] {
    // null, unmapped, kernel, unaligned into nothing
    [0, 0x10, 0xffff_ffff_8000_0000, 0x7fff_ffff_f001]
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        (
            "vm_tsc_khz_is_set_before_vcpus_and_read_on_vm_and_vcpu",
            Any,
            |_| {
                let kvm = dev();
                // KVM_CAP_GET_TSC_KHZ is 61 (uapi/linux/kvm.h); 148 is KVM_CAP_HYPERV_SYNIC2,
                // which is not offered.
                eq(
                    ioctl(kvm.as_raw_fd(), io(0x03), 61),
                    Ok(1),
                    "KVM_CAP_GET_TSC_KHZ",
                )?;
                eq(
                    ioctl(kvm.as_raw_fd(), io(0x03), 148),
                    Ok(0),
                    "KVM_CAP_HYPERV_SYNIC2",
                )?;
                let vm = vm(&kvm, 0)?;
                let fd = vm.as_raw_fd();
                let host = ioctl(fd, io(0xa3), 0).map_err(|e| format!("GET_TSC_KHZ: errno {e}"))?;
                check(host > 0, "the VM's TSC rate is the host's, > 0")?;
                eq(ioctl(fd, io(0xa2), 1_234_567), Ok(0), "SET_TSC_KHZ")?;
                eq(
                    ioctl(fd, io(0xa3), 0),
                    Ok(1_234_567),
                    "GET_TSC_KHZ after SET",
                )?;
                eq(ioctl(fd, io(0xa2), 0), Ok(0), "SET_TSC_KHZ 0")?;
                eq(ioctl(fd, io(0xa3), 0), Ok(host), "0 means the host's rate")?;
                eq(ioctl(fd, io(0xa2), 3_000_000), Ok(0), "SET_TSC_KHZ 3 GHz")?;
                let v = ioctl(fd, io(0x41), 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
                // SAFETY: a fresh fd from KVM_CREATE_VCPU, owned from now on.
                let v = unsafe { OwnedFd::from_raw_fd(v as i32) };
                eq(
                    ioctl(v.as_raw_fd(), io(0xa3), 0),
                    Ok(3_000_000),
                    "vCPU GET_TSC_KHZ",
                )?;
                // 6.12 takes the VM's default at any time (x86.c KVM_SET_TSC_KHZ has no
                // created_vcpus check): it is what vCPUs created afterwards start with; the
                // existing vCPU keeps its rate.
                eq(
                    ioctl(fd, io(0xa2), 1_000_000),
                    Ok(0),
                    "SET_TSC_KHZ after a vCPU",
                )?;
                eq(
                    ioctl(fd, io(0xa3), 0),
                    Ok(1_000_000),
                    "the VM's new default",
                )?;
                eq(
                    ioctl(v.as_raw_fd(), io(0xa3), 0),
                    Ok(3_000_000),
                    "the existing vCPU keeps its rate",
                )?;
                drop(v);
                drop(vm);
                counts_are_zero()
            },
        ),
        ("vcpu_caps_on_dev_and_vm_fd", Any, |_| {
            let kvm = dev();
            // SAFETY: sysconf has no preconditions.
            let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as i64;
            let vm = vm(&kvm, 0)?;
            for fd in [kvm.as_raw_fd(), vm.as_raw_fd()] {
                eq(
                    ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS),
                    Ok(online.min(KVM_MAX_VCPUS)),
                    "NR_VCPUS",
                )?;
                eq(
                    ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS),
                    Ok(KVM_MAX_VCPUS),
                    "MAX_VCPUS",
                )?;
                eq(
                    ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID),
                    Ok(4096),
                    "MAX_VCPU_ID",
                )?;
                eq(
                    ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT),
                    Ok(1),
                    "IMMEDIATE_EXIT",
                )?;
                eq(
                    ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD),
                    Ok(1),
                    "BINARY_STATS_FD",
                )?;
            }
            Ok(())
        }),
        ("td_max_vcpus_is_present_cpus_on_the_vm_fd", Tdx, |_| {
            let kvm = dev();
            let td = vm(&kvm, KVM_X86_TDX_VM)?;
            let max = present_cpus().min(KVM_MAX_VCPUS);
            eq(
                ioctl(td.as_raw_fd(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS),
                Ok(max),
                "TD MAX_VCPUS",
            )?;
            eq(
                ioctl(kvm.as_raw_fd(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS),
                Ok(KVM_MAX_VCPUS),
                "system",
            )?;
            // max_vcpus vCPUs, then EINVAL.
            let mut v = Vec::new();
            for id in 0..max as u64 {
                v.push(must_vcpu(&td, id)?);
            }
            eq(
                vcpu(&td, max as u64).map(drop),
                Err(EINVAL),
                "one vCPU too many",
            )?;
            eq(stat("vcpus"), max, "vcpus counted")?;
            drop(v);
            drop(td);
            counts_are_zero()
        }),
        ("create_vcpu_id_rules", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let a = must_vcpu(&vm, 0)?;
            eq(vcpu(&vm, 0).map(drop), Err(EEXIST), "duplicate id 0")?;
            for bad in [
                KVM_MAX_VCPU_IDS,
                KVM_MAX_VCPU_IDS + 1,
                1 << 32,
                (1 << 32) | 1,
                u64::MAX,
            ] {
                eq(
                    vcpu(&vm, bad).map(drop),
                    Err(EINVAL),
                    &format!("id {bad:#x}"),
                )?;
            }
            // A TD may have as few vCPUs as there are CPUs (the count check comes before the
            // duplicate check): one vCPU there, so that EEXIST below is reachable.
            let b = if c.tdx {
                None
            } else {
                Some(must_vcpu(&vm, KVM_MAX_VCPU_IDS - 1)?)
            };
            eq(stat("vcpus"), 1 + i64::from(b.is_some()), "vcpus counted")?;
            // Closing a vCPU fd does not destroy the vCPU (upstream): its id stays taken.
            drop(a);
            eq(
                vcpu(&vm, 0).map(drop),
                Err(EEXIST),
                "id 0 after its fd closed",
            )?;
            drop(b);
            drop(vm);
            counts_are_zero()
        }),
        ("create_vcpu_wrong_fd_kind", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let v = must_vcpu(&vm, 0)?;
            let s = stats_fd(&vm)?;
            // /dev/kvm: unknown system ioctl; vCPU fd: unknown vCPU ioctl (x86: EINVAL); stats
            // fd: no ioctls at all.
            eq(
                ioctl(kvm.as_raw_fd(), KVM_CREATE_VCPU, 1),
                Err(EINVAL),
                "on /dev/kvm",
            )?;
            eq(
                ioctl(v.as_raw_fd(), KVM_CREATE_VCPU, 1),
                Err(EINVAL),
                "on a vCPU fd",
            )?;
            eq(
                ioctl(s.as_raw_fd(), KVM_CREATE_VCPU, 1),
                Err(ENOTTY),
                "on a stats fd",
            )?;
            eq(stat("vcpus"), 1, "nothing created")?;
            Ok(())
        }),
        ("create_vcpu_same_id_from_racing_threads", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            for id in 0..8u64 {
                let results: Vec<Result<OwnedFd, i32>> = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..4).map(|_| s.spawn(|| vcpu(&vm, id))).collect();
                    hs.into_iter()
                        .map(|h| h.join().unwrap_or(Err(-1)))
                        .collect()
                });
                let ok = results.iter().filter(|r| r.is_ok()).count();
                let exist = results
                    .iter()
                    .filter(|r| matches!(r, Err(e) if *e == EEXIST))
                    .count();
                eq((ok, exist), (1, 3), &format!("id {id}: (created, EEXIST)"))?;
            }
            eq(stat("vcpus"), 8, "vcpus")?;
            drop(vm);
            counts_are_zero()
        }),
        ("max_vcpu_id_cap_rules", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let cap = KVM_CAP_MAX_VCPU_ID as u32;
            eq(
                enable_cap(&vm, cap, 0, KVM_MAX_VCPU_IDS + 1),
                Err(EINVAL),
                "beyond KVM's",
            )?;
            eq(enable_cap(&vm, cap, 1, 8), Err(EINVAL), "flags 1")?;
            eq(enable_cap(&vm, cap, 0, 8), Ok(0), "set 8")?;
            eq(enable_cap(&vm, cap, 0, 8), Ok(0), "set 8 again")?;
            eq(enable_cap(&vm, cap, 0, 9), Err(EINVAL), "set 9 after 8")?;
            eq(vcpu(&vm, 8).map(drop), Err(EINVAL), "id 8 with max 8")?;
            let _v = must_vcpu(&vm, 7)?;
            // The first vCPU fixes the limit at KVM_MAX_VCPU_IDS when nothing set it.
            let vm2 = crate::vcpu::vm(&kvm, 0)?;
            let _w = must_vcpu(&vm2, 100)?;
            eq(
                enable_cap(&vm2, cap, 0, 8),
                Err(EINVAL),
                "lower after a vCPU exists",
            )?;
            eq(
                enable_cap(&vm2, cap, 0, KVM_MAX_VCPU_IDS),
                Ok(0),
                "the value in force",
            )?;
            Ok(())
        }),
        ("enable_cap_hostile_input", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            for p in bad_pointers() {
                eq(
                    ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP, p),
                    Err(EFAULT),
                    &format!("arg {p:#x}"),
                )?;
            }
            // Read-only memory is fine for an _IOW ioctl: the kernel only reads it.
            eq(
                enable_cap(&vm, 0xffff_ffff, 0, 0),
                Err(EINVAL),
                "unknown cap",
            )?;
            eq(
                enable_cap(&vm, KVM_CAP_IMMEDIATE_EXIT as u32, 0, 1),
                Err(EINVAL),
                "not enableable",
            )?;
            eq(
                ioctl(kvm.as_raw_fd(), KVM_ENABLE_CAP, 0),
                Err(EINVAL),
                "on /dev/kvm",
            )?;
            // A wrongly sized KVM_ENABLE_CAP number is an unknown VM ioctl.
            eq(
                ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP + (1 << 16), 0),
                Err(ENOTTY),
                "mis-sized",
            )?;
            let v = must_vcpu(&vm, 0)?;
            let c = [0u8; 104];
            eq(
                ioctl(v.as_raw_fd(), KVM_ENABLE_CAP, c.as_ptr() as u64),
                Err(EINVAL),
                "on a vCPU fd",
            )?;
            Ok(())
        }),
        ("vcpu_mmap_pages_and_sigbus_beyond", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let v = must_vcpu(&vm, 0)?;
            let size = ioctl(kvm.as_raw_fd(), io(0x04), 0).map_err(|e| format!("mmap size {e}"))?;
            eq(size, 3 * PAGE as i64, "KVM_GET_VCPU_MMAP_SIZE")?;
            let m = Map::new(&v, 3, 0).map_err(|e| format!("mmap: errno {e}"))?;
            // Page 0 is kvm_run: zero until someone writes it; pages 1 and 2 are there too.
            eq(m.read::<u64>(RUN_CR8), 0, "kvm_run.cr8")?;
            m.write::<u64>(PAGE + 8, 0x1234);
            eq(m.read::<u64>(PAGE + 8), 0x1234, "PIO page")?;
            let _ = m.read::<u64>(2 * PAGE);
            // A second mapping of page 0 is the same page.
            let m2 = Map::new(&v, 1, 0).map_err(|e| format!("second mmap: errno {e}"))?;
            m.write::<u64>(RUN_VALID_REGS, 0xabcd);
            eq(m2.read::<u64>(RUN_VALID_REGS), 0xabcd, "same kvm_run page")?;
            m.write::<u64>(RUN_VALID_REGS, 0);
            // Another vCPU has another page.
            let v1 = if c.tdx && present_cpus() < 2 {
                None
            } else {
                Some(must_vcpu(&vm, 1)?)
            };
            if let Some(v1) = &v1 {
                let m3 = Map::new(v1, 1, 0).map_err(|e| format!("mmap vcpu1: errno {e}"))?;
                eq(m3.read::<u64>(PAGE - 8), 0, "vcpu 1 page")?;
                m3.write::<u64>(PAGE - 8, 7);
                eq(m.read::<u64>(PAGE - 8), 0, "vcpu 0 page untouched")?;
            }
            // Page 3 and beyond: the mmap works, touching it is SIGBUS (upstream kvm_vcpu_fault).
            for pgoff in [3, 4, 1 << 20] {
                let far =
                    Map::new(&v, 1, pgoff).map_err(|e| format!("mmap pgoff {pgoff}: errno {e}"))?;
                let r = in_child(|| {
                    let _ = far.read::<u8>(0);
                    0
                });
                eq(r, Err(libc::SIGBUS), &format!("touching page {pgoff}"))?;
            }
            Ok(())
        }),
        ("kvm_run_immediate_exit_is_eintr_else_not_yet", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let v = must_vcpu(&vm, 0)?;
            let m = Map::new(&v, 1, 0).map_err(|e| format!("mmap: errno {e}"))?;
            let run = || ioctl(v.as_raw_fd(), KVM_RUN, 0);
            m.write::<u16>(RUN_FLAGS, 0xffff);
            m.write::<u8>(RUN_IMMEDIATE_EXIT, 1);
            eq(run(), Err(EINTR), "immediate_exit")?;
            eq(m.read::<u16>(RUN_FLAGS), 0, "kvm_run.flags cleared")?;
            m.write::<u8>(RUN_IMMEDIATE_EXIT, 0);
            if c.tdx {
                // TDs do not run yet: EINVAL, as upstream before KVM_TDX_INIT_VCPU.
                eq(run(), Err(EINVAL), "TD KVM_RUN without immediate_exit")?;
            } else {
                // The run loop: with no memory the reset vector's fetch is MMIO, which cannot
                // be emulated yet: KVM_EXIT_INTERNAL_ERROR (emulation).
                eq(run(), Ok(0), "KVM_RUN without immediate_exit")?;
                eq(m.read::<u32>(8), 17, "exit_reason INTERNAL_ERROR")?;
                eq(m.read::<u32>(32), 1, "suberror EMULATION")?;
            }
            // Register state exists (the `state` area): a NULL buffer is EFAULT; a TD's state
            // is protected (EINVAL).
            let want_regs = if c.tdx { EINVAL } else { EFAULT };
            eq(
                ioctl(v.as_raw_fd(), KVM_GET_REGS, 0),
                Err(want_regs),
                "KVM_GET_REGS",
            )?;
            Ok(())
        }),
        ("kvm_run_hostile_input", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let v = must_vcpu(&vm, 0)?;
            let m = Map::new(&v, 1, 0).map_err(|e| format!("mmap: errno {e}"))?;
            m.write::<u8>(RUN_IMMEDIATE_EXIT, 1);
            let run = |arg| ioctl(v.as_raw_fd(), KVM_RUN, arg);
            eq(run(1), Err(EINVAL), "arg 1")?;
            eq(run(u64::MAX), Err(EINVAL), "arg -1")?;
            m.write::<u64>(RUN_VALID_REGS, 1 << 3);
            eq(run(0), Err(EINVAL), "kvm_valid_regs reserved bit")?;
            m.write::<u64>(RUN_VALID_REGS, 0);
            m.write::<u64>(RUN_DIRTY_REGS, 1 << 63);
            eq(run(0), Err(EINVAL), "kvm_dirty_regs reserved bit")?;
            m.write::<u64>(RUN_DIRTY_REGS, 1);
            // sync_regs loads kvm_run.s.regs (zeros here) and clears the dirty bit.
            eq(run(0), Err(EINTR), "sync_regs of REGS")?;
            eq(m.read::<u64>(RUN_DIRTY_REGS), 0, "kvm_dirty_regs consumed")?;
            m.write::<u64>(RUN_DIRTY_REGS, 0);
            m.write::<u64>(RUN_CR8, 0x10);
            eq(run(0), Err(EINVAL), "cr8 reserved bits")?;
            m.write::<u64>(RUN_CR8, 0xf);
            eq(run(0), Err(EINTR), "cr8 0xf is fine")?;
            // Another process (another mm) may not use the vCPU or the VM: EIO.
            let vfd = v.as_raw_fd();
            let vmfd = vm.as_raw_fd();
            let child = in_child(|| {
                let a = ioctl(vfd, KVM_RUN, 0) == Err(EIO);
                let b = ioctl(vmfd, KVM_CREATE_VCPU, 5) == Err(EIO);
                if a && b {
                    0
                } else {
                    1
                }
            });
            eq(
                child,
                Ok(0),
                "KVM_RUN / KVM_CREATE_VCPU from a forked child are EIO",
            )?;
            // Unknown vCPU ioctls: x86 answers EINVAL; a non-KVM ioctl type is EINVAL too.
            eq(ioctl(vfd, io(0xff), 0), Err(EINVAL), "unknown vCPU ioctl")?;
            eq(ioctl(vfd, 0x5401, 0), Err(EINVAL), "TCGETS on a vCPU fd")?;
            Ok(())
        }),
        ("close_vm_first_vcpu_keeps_it", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let v = must_vcpu(&vm, 0)?;
            drop(vm);
            eq(stat("vms"), 1, "VM alive while its vCPU fd is open")?;
            let m = Map::new(&v, 1, 0).map_err(|e| format!("mmap: errno {e}"))?;
            m.write::<u8>(RUN_IMMEDIATE_EXIT, 1);
            eq(
                ioctl(v.as_raw_fd(), KVM_RUN, 0),
                Err(EINTR),
                "KVM_RUN after the VM fd closed",
            )?;
            drop(m);
            drop(v);
            counts_are_zero()
        }),
        ("close_vcpu_first_then_vm", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let v = must_vcpu(&vm, 0)?;
            drop(v);
            eq(stat("vcpus"), 1, "vCPU stays with its VM")?;
            drop(vm);
            counts_are_zero()
        }),
        ("mapping_outlives_every_fd", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let v = must_vcpu(&vm, 3)?;
            let m = Map::new(&v, 3, 0).map_err(|e| format!("mmap: errno {e}"))?;
            drop(v);
            drop(vm);
            // The mapping holds the vCPU file, which holds the VM.
            eq(stat("vms"), 1, "VM alive while mapped")?;
            m.write::<u64>(RUN_CR8, 5);
            eq(m.read::<u64>(RUN_CR8), 5, "page still there")?;
            drop(m);
            counts_are_zero()
        }),
        ("close_races_from_several_threads", Any, |c| {
            let tdx = c.tdx;
            let kvm = dev();
            std::thread::scope(|s| {
                for th in 0..4u64 {
                    let kvm = &kvm;
                    s.spawn(move || {
                        for round in 0..25u64 {
                            let t = if tdx && (th + round) % 3 == 0 {
                                KVM_X86_TDX_VM
                            } else {
                                0
                            };
                            let Ok(vm) = vm(kvm, t) else { continue };
                            let vs: Vec<_> = (0..2).filter_map(|id| vcpu(&vm, id).ok()).collect();
                            let st = ioctl(vm.as_raw_fd(), KVM_GET_STATS_FD, 0).ok().map(fd_of);
                            // Close in an order that depends on the round.
                            match round % 3 {
                                0 => {
                                    drop(vm);
                                    drop(vs);
                                    drop(st);
                                }
                                1 => {
                                    drop(vs);
                                    drop(st);
                                    drop(vm);
                                }
                                _ => {
                                    drop(st);
                                    drop(vm);
                                    drop(vs);
                                }
                            }
                        }
                    });
                }
                // Meanwhile: KVM_RUN on one vCPU while another thread closes the VM fd.
                s.spawn(|| {
                    for _ in 0..20 {
                        let Ok(vm) = create_vm(&kvm, 0) else { continue };
                        let Ok(v) = vcpu(&vm, 0) else { continue };
                        std::thread::scope(|s2| {
                            s2.spawn(|| {
                                for _ in 0..50 {
                                    let _ = ioctl(v.as_raw_fd(), KVM_RUN, 0);
                                }
                            });
                            s2.spawn(move || drop(vm));
                        });
                    }
                });
            });
            counts_are_zero()
        }),
        ("vm_stats_fd_layout_and_values", Any, |c| {
            let kvm = dev();
            let t = if c.tdx { KVM_X86_TDX_VM } else { 0 };
            let vm = vm(&kvm, t)?;
            let fd = stats_fd(&vm)?;
            let s = read_stats(&fd)?;
            let n = s.names.len() as u32;
            eq(s.header, [0, 48, n, 24, 72, 72 + 64 * n], "header")?;
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            eq(s.id.clone(), format!("kvm-{pid}"), "id")?;
            for (name, flags) in s.names.iter().zip(&s.flags) {
                check(!name.is_empty() && name.len() < 48, "descriptor name")?;
                check(*flags <= 1, &format!("{name}: flags {flags:#x}"))?;
            }
            let get = |k: &str| s.get(k).ok_or(format!("no stat {k}"));
            // A fresh VM holds its root tables and maps nothing.
            eq(get("shared_table_pages")?, 1, "shared root")?;
            eq(
                get("mirror_table_pages")?,
                u64::from(c.tdx),
                "mirror root (TDs only)",
            )?;
            eq(
                get("pages_4k")? + get("pages_2m")? + get("pages_1g")?,
                0,
                "nothing mapped",
            )?;
            eq(get("tdh_mem_page_aug")?, 0, "no AUG yet")?;
            // pread anywhere equals the whole read.
            for off in [
                0usize,
                1,
                23,
                24,
                71,
                72,
                100,
                s.raw.len() - 8,
                s.raw.len() - 1,
            ] {
                let mut b = vec![0u8; 13];
                let got =
                    pread(&fd, &mut b, off as i64).map_err(|e| format!("pread {off}: {e}"))?;
                let want = (s.raw.len() - off).min(13);
                eq(got, want, &format!("pread length at {off}"))?;
                eq(
                    &b[..got],
                    &s.raw[off..off + got],
                    &format!("bytes at {off}"),
                )?;
            }
            // Values are sampled at read time: vCPUs show up in online_vcpus.
            eq(get("online_vcpus")?, 0, "online_vcpus before")?;
            let _v0 = must_vcpu(&vm, 0)?;
            eq(
                read_stats(&fd)?.get("online_vcpus"),
                Some(1),
                "online_vcpus after one",
            )?;
            if !c.tdx || present_cpus() >= 2 {
                let _v1 = must_vcpu(&vm, 1)?;
                eq(
                    read_stats(&fd)?.get("online_vcpus"),
                    Some(2),
                    "online_vcpus after two",
                )?;
            }
            let mut b = [0u8; 8];
            eq(
                pread(&fd, &mut b, s.raw.len() as i64),
                Ok(0),
                "pread at the end",
            )?;
            eq(pread(&fd, &mut b, 1 << 40), Ok(0), "pread far beyond")?;
            // Sequential read() advances the position.
            let mut first = [0u8; 24];
            // SAFETY: valid buffers of their length.
            let r1 = unsafe { libc::read(fd.as_raw_fd(), first.as_mut_ptr().cast(), 24) };
            let mut second = [0u8; 48];
            // SAFETY: as above.
            let r2 = unsafe { libc::read(fd.as_raw_fd(), second.as_mut_ptr().cast(), 48) };
            eq((r1, r2), (24, 48), "read lengths")?;
            eq(&second[..], &s.raw[24..72], "second read is the id")?;
            Ok(())
        }),
        ("vcpu_stats_fd_and_dup_after_close", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let v = must_vcpu(&vm, 42)?;
            let vs = stats_fd(&v)?;
            let s = read_stats(&vs)?;
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            eq(s.id.clone(), format!("kvm-{pid}/vcpu-42"), "vCPU id")?;
            for k in ["page_faults", "pre_fault_calls", "pre_fault_pages"] {
                eq(s.get(k), Some(0), k)?;
            }
            let vms = stats_fd(&vm)?;
            let dup_v = vs.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
            let dup_m = vms
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e.to_string())?;
            drop((vs, vms, v, vm));
            // The stats fds hold the VM: still readable, same contents.
            eq(stat("vms"), 1, "VM alive while a stats fd is open")?;
            let again = read_stats(&dup_v)?;
            eq(again.raw, s.raw, "vCPU stats after every other fd closed")?;
            read_stats(&dup_m)?;
            drop(dup_v);
            drop(dup_m);
            counts_are_zero()
        }),
        ("stats_fd_hostile_input", Any, |_| {
            let kvm = dev();
            let vm = vm(&kvm, 0)?;
            let fd = stats_fd(&vm)?;
            for p in bad_pointers() {
                // SAFETY: the kernel must refuse these addresses (EFAULT), not write them.
                let r = unsafe { libc::pread(fd.as_raw_fd(), p as *mut libc::c_void, 64, 0) };
                let e = std::io::Error::last_os_error().raw_os_error();
                eq((r, e), (-1, Some(EFAULT)), &format!("pread into {p:#x}"))?;
            }
            eq(
                pread(&fd, &mut [0u8; 8], -1),
                Err(EINVAL),
                "negative offset",
            )?;
            // SAFETY: a valid buffer; the fd is read-only.
            let w = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            eq(
                (w, std::io::Error::last_os_error().raw_os_error()),
                (-1, Some(libc::EBADF)),
                "write",
            )?;
            // A read-only file: a shared writable mapping is EACCES, a readable one ENODEV (no
            // mmap at all).
            eq(
                Map::new(&fd, 1, 0).map(drop),
                Err(libc::EACCES),
                "writable mmap of a stats fd",
            )?;
            // SAFETY: a mapping request the kernel must refuse; nothing is mapped.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            let e = std::io::Error::last_os_error().raw_os_error();
            eq(
                (p == libc::MAP_FAILED, e),
                (true, Some(libc::ENODEV)),
                "read-only mmap of a stats fd",
            )?;
            eq(
                ioctl(fd.as_raw_fd(), KVM_GET_STATS_FD, 0),
                Err(ENOTTY),
                "stats fd of a stats fd",
            )?;
            eq(
                ioctl(kvm.as_raw_fd(), KVM_GET_STATS_FD, 0),
                Err(EINVAL),
                "on /dev/kvm",
            )?;
            // Many stats fds at once, each its own file.
            let many: Vec<_> = (0..64).map(|_| stats_fd(&vm)).collect::<Result<_, _>>()?;
            drop(many);
            drop(fd);
            drop(vm);
            counts_are_zero()
        }),
    ]
}
