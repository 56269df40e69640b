// SPDX-License-Identifier: GPL-2.0-only
//! The /dev/kvm ABI under hostile input (helper `hostile`, issues 11/12): a differential
//! prober that issues system, VM and vCPU ioctls with edge-case arguments and records each
//! answer as one line `key = ok V [fields]` / `key = err ERRNO`.
//!
//! `guest-client --probe` prints the lines; run on our kvm.ko and on upstream kvm_amd in the
//! same boot (`scripts/guest-try.sh --upstream`), the two outputs diff on the build host. The
//! tests below hold upstream's measured answers (6.12.117 kvm_amd in the same QEMU guest) and
//! check that ours are the same, key by key; the few intended differences (features we do not
//! advertise) are listed with the reason and with the capability that says so.

// The probes record every answer themselves; most callers have no use for it.
#![allow(unused_must_use)]

use crate::run::{Guest, Mem};
use crate::*;

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (KVMIO << 8) | nr
}
const fn io0(nr: u64) -> u64 {
    ioc(0, nr, 0)
}
const fn iow(nr: u64, size: u64) -> u64 {
    ioc(1, nr, size)
}
const fn ior(nr: u64, size: u64) -> u64 {
    ioc(2, nr, size)
}
const fn iorw(nr: u64, size: u64) -> u64 {
    ioc(3, nr, size)
}

// System ioctls (include/uapi/linux/kvm.h).
const KVM_GET_API_VERSION: u64 = io0(0x00);
const KVM_CREATE_VM: u64 = io0(0x01);
const KVM_GET_MSR_INDEX_LIST: u64 = iorw(0x02, 4);
const KVM_CHECK_EXTENSION: u64 = io0(0x03);
const KVM_GET_VCPU_MMAP_SIZE: u64 = io0(0x04);
const KVM_GET_SUPPORTED_CPUID: u64 = iorw(0x05, 8);
const KVM_GET_EMULATED_CPUID: u64 = iorw(0x09, 8);
const KVM_GET_MSR_FEATURE_INDEX_LIST: u64 = iorw(0x0a, 4);
// VM ioctls.
const KVM_CREATE_VCPU: u64 = io0(0x41);
const KVM_SET_NR_MMU_PAGES: u64 = io0(0x44);
const KVM_GET_NR_MMU_PAGES: u64 = io0(0x45);
const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, 32);
const KVM_SET_TSS_ADDR: u64 = io0(0x47);
const KVM_SET_IDENTITY_MAP_ADDR: u64 = iow(0x48, 8);
const KVM_SET_USER_MEMORY_REGION2: u64 = iow(0x49, 160);
const KVM_CREATE_IRQCHIP: u64 = io0(0x60);
const KVM_IRQ_LINE: u64 = iow(0x61, 8);
const KVM_GET_IRQCHIP: u64 = iorw(0x62, 520);
const KVM_CREATE_PIT: u64 = io0(0x64);
const KVM_IRQ_LINE_STATUS: u64 = iorw(0x67, 8);
const KVM_SET_GSI_ROUTING: u64 = iow(0x6a, 8);
const KVM_REINJECT_CONTROL: u64 = io0(0x71);
const KVM_IRQFD: u64 = iow(0x76, 32);
const KVM_CREATE_PIT2: u64 = iow(0x77, 64);
const KVM_SET_BOOT_CPU_ID: u64 = io0(0x78);
const KVM_IOEVENTFD: u64 = iow(0x79, 64);
const KVM_SET_CLOCK: u64 = iow(0x7b, 48);
const KVM_GET_CLOCK: u64 = ior(0x7c, 48);
const KVM_GET_PIT2: u64 = ior(0x9f, 112);
const KVM_SET_TSC_KHZ: u64 = io0(0xa2);
const KVM_GET_TSC_KHZ: u64 = io0(0xa3);
const KVM_SIGNAL_MSI: u64 = iow(0xa5, 32);
const KVM_CREATE_DEVICE: u64 = iorw(0xe0, 12);
const KVM_GET_DEVICE_ATTR: u64 = iow(0xe2, 24);
const KVM_HAS_DEVICE_ATTR: u64 = iow(0xe3, 24);
const KVM_ENABLE_CAP: u64 = iow(0xa3, 104);
const KVM_SET_PMU_EVENT_FILTER: u64 = iow(0xb2, 32);
const KVM_X86_SET_MSR_FILTER: u64 = iow(0xc6, 392);
const KVM_SET_MEMORY_ATTRIBUTES: u64 = iow(0xd2, 32);
const KVM_CREATE_GUEST_MEMFD: u64 = iorw(0xd4, 64);
const KVM_MEMORY_ENCRYPT_OP: u64 = iorw(0xba, 8);
// vCPU ioctls.
const KVM_RUN: u64 = io0(0x80);
const KVM_GET_REGS: u64 = ior(0x81, 144);
const KVM_SET_REGS: u64 = iow(0x82, 144);
const KVM_GET_SREGS: u64 = ior(0x83, 312);
const KVM_SET_SREGS: u64 = iow(0x84, 312);
const KVM_TRANSLATE: u64 = iorw(0x85, 24);
const KVM_INTERRUPT: u64 = iow(0x86, 4);
const KVM_GET_MSRS: u64 = iorw(0x88, 8);
const KVM_SET_MSRS: u64 = iow(0x89, 8);
const KVM_SET_SIGNAL_MASK: u64 = iow(0x8b, 4);
const KVM_GET_FPU: u64 = ior(0x8c, 416);
const KVM_GET_LAPIC: u64 = ior(0x8e, 1024);
const KVM_SET_LAPIC: u64 = iow(0x8f, 1024);
const KVM_SET_CPUID2: u64 = iow(0x90, 8);
const KVM_GET_CPUID2: u64 = iorw(0x91, 8);
const KVM_TPR_ACCESS_REPORTING: u64 = iorw(0x92, 40);
const KVM_SET_VAPIC_ADDR: u64 = iow(0x93, 8);
const KVM_GET_MP_STATE: u64 = ior(0x98, 4);
const KVM_SET_MP_STATE: u64 = iow(0x99, 4);
const KVM_NMI: u64 = io0(0x9a);
const KVM_SET_GUEST_DEBUG: u64 = iow(0x9b, 72);
const KVM_X86_SETUP_MCE: u64 = iow(0x9c, 8);
const KVM_X86_GET_MCE_CAP_SUPPORTED: u64 = ior(0x9d, 8);
const KVM_X86_SET_MCE: u64 = iow(0x9e, 64);
const KVM_GET_VCPU_EVENTS: u64 = ior(0x9f, 64);
const KVM_SET_VCPU_EVENTS: u64 = iow(0xa0, 64);
const KVM_GET_DEBUGREGS: u64 = ior(0xa1, 128);
const KVM_SET_DEBUGREGS: u64 = iow(0xa2, 128);
const KVM_GET_XSAVE: u64 = ior(0xa4, 4096);
const KVM_SET_XSAVE: u64 = iow(0xa5, 4096);
const KVM_GET_XCRS: u64 = ior(0xa6, 392);
const KVM_SET_XCRS: u64 = iow(0xa7, 392);
const KVM_GET_ONE_REG: u64 = iow(0xab, 16);
const KVM_KVMCLOCK_CTRL: u64 = io0(0xad);
const KVM_SMI: u64 = io0(0xb7);
const KVM_GET_NESTED_STATE: u64 = iorw(0xbe, 128);
const KVM_SET_NESTED_STATE: u64 = iow(0xbf, 128);
const KVM_GET_SUPPORTED_HV_CPUID: u64 = iorw(0xc1, 8);
const KVM_GET_SREGS2: u64 = ior(0xcc, 320);
const KVM_SET_SREGS2: u64 = iow(0xcd, 320);
const KVM_GET_XSAVE2: u64 = ior(0xcf, 4096);
const KVM_GET_STATS_FD: u64 = io0(0xce);

/// A zeroed byte buffer with little-endian field writers and readers.
struct Buf(Vec<u8>);

impl Buf {
    fn new(len: usize) -> Buf {
        Buf(vec![0; len])
    }
    fn u8(mut self, off: usize, v: u8) -> Buf {
        self.0[off] = v;
        self
    }
    fn u16(mut self, off: usize, v: u16) -> Buf {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, off: usize, v: u32) -> Buf {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Buf {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn r32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
    }
    fn r64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.0[off..off + 8].try_into().unwrap())
    }
    fn ptr(&mut self) -> u64 {
        self.0.as_mut_ptr() as u64
    }
}

/// Bytes that end exactly where an inaccessible page begins: an ioctl that reads past them
/// faults, whatever the process's memory around them holds.
struct Guarded {
    map: *mut u8,
    off: usize,
}

impl Guarded {
    const PAGE: usize = 4096;

    fn new(bytes: &[u8]) -> Guarded {
        assert!(bytes.len() <= Self::PAGE);
        // SAFETY: a fresh anonymous private mapping of two pages, owned by this value.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * Self::PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(map != libc::MAP_FAILED, "mmap");
        let map = map.cast::<u8>();
        let off = Self::PAGE - bytes.len();
        // SAFETY: `off + bytes.len()` is the end of the first page, which is mapped writable;
        // the second page becomes inaccessible.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.add(off), bytes.len());
            assert_eq!(
                libc::mprotect(map.add(Self::PAGE).cast(), Self::PAGE, libc::PROT_NONE),
                0,
                "mprotect"
            );
        }
        Guarded { map, off }
    }
    fn ptr(&mut self) -> u64 {
        self.map as u64 + self.off as u64
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.map.cast(), 2 * Self::PAGE) };
    }
}

fn errname(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOTTY => "ENOTTY",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMSG => "ENOMSG",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

/// The recorded answers, in order.
struct Probe {
    lines: Vec<(String, String)>,
    /// Print each line as it is recorded (`--probe`: a hang still shows the last answer).
    echo: bool,
}

impl Probe {
    fn rec(&mut self, key: &str, r: Result<i64, i32>, fields: String) {
        let v = match r {
            Ok(v) if fields.is_empty() => format!("ok {v}"),
            Ok(v) => format!("ok {v} {fields}"),
            Err(e) => errname(e),
        };
        self.push(key.to_string(), v);
    }
    fn push(&mut self, key: String, v: String) {
        if self.echo {
            println!("probe {key} = {v}");
            // Through printk as well: a CPU wedged by the module can stall the tty's flush
            // work, never the printk of another CPU.
            let _ = std::fs::write("/dev/kmsg", format!("hostile: {key} = {v}\n"));
        }
        self.lines.push((key, v));
    }
    fn io(&mut self, key: &str, fd: i32, cmd: u64, arg: u64) -> Result<i64, i32> {
        let r = ioctl(fd, cmd, arg);
        self.rec(key, r, String::new());
        r
    }
    fn buf(&mut self, key: &str, fd: i32, cmd: u64, b: &mut Buf) -> Result<i64, i32> {
        let p = b.ptr();
        self.io(key, fd, cmd, p)
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: creates a new fd; ownership is taken right away.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh fd we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn owned(r: Result<i64, i32>) -> Option<OwnedFd> {
    // SAFETY: a fresh fd returned by the ioctl, owned from now on.
    r.ok().map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn region(slot: u32, flags: u32, gpa: u64, size: u64, uaddr: u64) -> Buf {
    Buf::new(160)
        .u32(0, slot)
        .u32(4, flags)
        .u64(8, gpa)
        .u64(16, size)
        .u64(24, uaddr)
}

fn system(p: &mut Probe) {
    let kvm = dev();
    let k = kvm.as_raw_fd();
    p.io("sys.api_version", k, KVM_GET_API_VERSION, 0);
    for cap in 0..=250u64 {
        p.io(&format!("sys.cap.{cap}"), k, KVM_CHECK_EXTENSION, cap);
    }
    p.io("sys.cap.neg", k, KVM_CHECK_EXTENSION, u64::MAX);
    p.io("sys.vcpu_mmap_size", k, KVM_GET_VCPU_MMAP_SIZE, 0);
    p.io("sys.vcpu_mmap_size.arg1", k, KVM_GET_VCPU_MMAP_SIZE, 1);
    for (name, cmd) in [
        ("supported_cpuid", KVM_GET_SUPPORTED_CPUID),
        ("emulated_cpuid", KVM_GET_EMULATED_CPUID),
    ] {
        for nent in [0u32, 1, 1000] {
            let mut b = Buf::new(8 + 40 * 1000).u32(0, nent);
            let r = ioctl(k, cmd, b.ptr());
            let key = format!("sys.{name}.nent{nent}");
            p.rec(&key, r, String::new());
            p.push(
                format!("{key}.nent_out.nonzero"),
                (b.r32(0) != 0).to_string(),
            );
        }
        p.io(&format!("sys.{name}.null"), k, cmd, 0);
    }
    for (name, cmd) in [
        ("msr_index_list", KVM_GET_MSR_INDEX_LIST),
        ("msr_feature_list", KVM_GET_MSR_FEATURE_INDEX_LIST),
    ] {
        let mut b = Buf::new(4 + 4 * 4096);
        let r = ioctl(k, cmd, b.ptr());
        p.rec(&format!("sys.{name}.n0"), r, String::new());
        let need = b.r32(0);
        p.push(
            format!("sys.{name}.n0.nmsrs_out.nonzero"),
            (need != 0).to_string(),
        );
        let mut b = Buf::new(4 + 4 * 4096).u32(0, 4096);
        p.buf(&format!("sys.{name}.n4096"), k, cmd, &mut b);
        p.push(
            format!("sys.{name}.n4096.nmsrs_out_same"),
            (b.r32(0) == need).to_string(),
        );
        p.io(&format!("sys.{name}.null"), k, cmd, 0);
    }
    // Feature MSRs through KVM_GET_MSRS on /dev/kvm.
    let mut b = Buf::new(8 + 16 * 300).u32(0, 256);
    p.buf("sys.get_msrs.n256", k, KVM_GET_MSRS, &mut b);
    let mut b = Buf::new(8 + 16 * 300).u32(0, 255);
    p.buf("sys.get_msrs.n255_index0", k, KVM_GET_MSRS, &mut b);
    let mut b = Buf::new(8 + 16).u32(0, 1).u32(8, 0x10a);
    p.buf("sys.get_msrs.arch_caps", k, KVM_GET_MSRS, &mut b);
    let mut b = Buf::new(8 + 16).u32(0, 1).u32(8, 0x1234_5678);
    p.buf("sys.get_msrs.unknown", k, KVM_GET_MSRS, &mut b);
    // Unknown and misdirected ioctl numbers.
    p.io("sys.unknown_io_ff", k, io(0xff), 0);
    p.io("sys.unknown_io_06", k, io(0x06), 0);
    p.io("sys.unknown_type", k, 0x5a01, 0);
    p.io("sys.create_vcpu", k, KVM_CREATE_VCPU, 0);
    p.io("sys.run", k, KVM_RUN, 0);
    p.io("sys.create_irqchip", k, KVM_CREATE_IRQCHIP, 0);
    p.io("sys.get_tsc_khz", k, KVM_GET_TSC_KHZ, 0);
    p.io("sys.get_stats_fd", k, KVM_GET_STATS_FD, 0);
    let mut a = Buf::new(24);
    p.buf("sys.has_attr.0.0", k, KVM_HAS_DEVICE_ATTR, &mut a);
    let mut a = Buf::new(24).u32(4, 1);
    p.buf("sys.has_attr.1.0", k, KVM_HAS_DEVICE_ATTR, &mut a);
    let mut a = Buf::new(24).u64(8, 1);
    p.buf("sys.has_attr.0.1", k, KVM_HAS_DEVICE_ATTR, &mut a);
    let mut out = 0u64;
    let mut a = Buf::new(24).u64(16, &mut out as *mut u64 as u64);
    p.buf("sys.get_attr.0.0", k, KVM_GET_DEVICE_ATTR, &mut a);
    let mut a = Buf::new(24).u32(0, 1);
    p.buf("sys.has_attr.flags1", k, KVM_HAS_DEVICE_ATTR, &mut a);
    for t in [1u64, 2, 3, 4, 6, 0x100, u64::MAX] {
        let r = ioctl(k, KVM_CREATE_VM, t);
        p.rec(
            &format!("sys.create_vm.type{t:#x}"),
            r.map(|_| 0),
            String::new(),
        );
        drop(owned(r));
    }
}

fn vm_fd(k: &File) -> OwnedFd {
    owned(ioctl(k.as_raw_fd(), KVM_CREATE_VM, 0)).expect("KVM_CREATE_VM")
}

fn memslots(p: &mut Probe) {
    let kvm = dev();
    let vm = vm_fd(&kvm);
    let v = vm.as_raw_fd();
    let m = Mem::new(0x20_0000).expect("mmap");
    let ua = m.ptr as u64;
    let set = |p: &mut Probe, key: &str, b: Buf, v2: bool| {
        let mut b = b;
        let cmd = if v2 {
            KVM_SET_USER_MEMORY_REGION2
        } else {
            KVM_SET_USER_MEMORY_REGION
        };
        p.buf(&format!("vm.memslot.{key}"), v, cmd, &mut b);
    };
    set(p, "ok", region(0, 0, 0, 0x1000, ua), false);
    set(
        p,
        "gpa_misaligned",
        region(1, 0, 0x10_0800, 0x1000, ua),
        false,
    );
    set(
        p,
        "size_misaligned",
        region(1, 0, 0x10_0000, 0x800, ua),
        false,
    );
    set(
        p,
        "uaddr_misaligned",
        region(1, 0, 0x10_0000, 0x1000, ua + 8),
        false,
    );
    set(p, "size0_absent", region(1, 0, 0x10_0000, 0, ua), false);
    set(p, "size_huge", region(1, 0, 0x10_0000, 1 << 52, ua), false);
    set(p, "gpa_wrap", region(1, 0, !0xfffu64, 0x2000, ua), false);
    set(
        p,
        "uaddr_kernel",
        region(1, 0, 0x10_0000, 0x1000, 0xffff_8000_0000_0000),
        false,
    );
    set(
        p,
        "uaddr_wrap",
        region(1, 0, 0x10_0000, 0x2000, !0xfffu64),
        false,
    );
    set(
        p,
        "slot_last",
        region(32763, 0, 0x20_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "slot_limit",
        region(32764, 0, 0x30_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "slot_32767",
        region(32767, 0, 0x30_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "slot_as1",
        region(1 << 16 | 2, 0, 0x40_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "slot_as2",
        region(2 << 16 | 2, 0, 0x40_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "slot_as_ffff",
        region(0xffff << 16, 0, 0x40_0000, 0x1000, ua),
        false,
    );
    set(p, "flags_bit3", region(3, 8, 0x50_0000, 0x1000, ua), false);
    set(
        p,
        "flags_high",
        region(3, 1 << 31, 0x50_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "flags_gmem_v1",
        region(3, 4, 0x50_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "flags_gmem_v2",
        region(3, 4, 0x50_0000, 0x1000, ua),
        true,
    );
    set(p, "v2_ok", region(4, 0, 0x60_0000, 0x1000, ua), true);
    set(
        p,
        "v2_pad_nonzero",
        region(5, 0, 0x70_0000, 0x1000, ua).u64(56, 1),
        true,
    );
    set(
        p,
        "v2_gmem_fields_without_flag",
        region(6, 0, 0x80_0000, 0x1000, ua)
            .u64(32, 0x1000)
            .u32(40, 99),
        true,
    );
    set(p, "overlap_exact", region(7, 0, 0, 0x1000, ua), false);
    set(p, "overlap_partial", region(7, 0, 0, 0x2000, ua), false);
    set(p, "move_slot0", region(0, 0, 0x90_0000, 0x1000, ua), false);
    set(
        p,
        "resize_slot0",
        region(0, 0, 0x90_0000, 0x2000, ua),
        false,
    );
    set(
        p,
        "readonly_slot0",
        region(0, 2, 0x90_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "logdirty_slot0",
        region(0, 1, 0x90_0000, 0x1000, ua),
        false,
    );
    set(
        p,
        "uaddr_change_slot0",
        region(0, 1, 0x90_0000, 0x1000, ua + 0x1000),
        false,
    );
    set(
        p,
        "readonly_new",
        region(8, 2, 0xa0_0000, 0x1000, ua),
        false,
    );
    set(p, "delete_slot0", region(0, 0, 0x90_0000, 0, ua), false);
    set(p, "delete_slot0_again", region(0, 0, 0, 0, 0), false);
    set(
        p,
        "same_uaddr_two_slots",
        region(9, 0, 0xb0_0000, 0x1000, ua),
        false,
    );
    p.io("vm.memslot.null", v, KVM_SET_USER_MEMORY_REGION, 0);
    p.io("vm.memslot.bad_ptr", v, KVM_SET_USER_MEMORY_REGION, 8);
    // Memory attributes and guest_memfd on a default VM.
    let mut b = Buf::new(32).u64(0, 0).u64(8, 0x1000).u64(16, 1 << 3);
    p.buf(
        "vm.set_memory_attributes.private",
        v,
        KVM_SET_MEMORY_ATTRIBUTES,
        &mut b,
    );
    let mut b = Buf::new(64).u64(0, 0x1000);
    let r = p.buf("vm.create_guest_memfd", v, KVM_CREATE_GUEST_MEMFD, &mut b);
    drop(owned(r));
    drop(vm);
    drop(m);
}

fn vm_misc(p: &mut Probe) {
    let kvm = dev();
    let vm = vm_fd(&kvm);
    let v = vm.as_raw_fd();
    for cap in 0..=250u64 {
        p.io(&format!("vm.cap.{cap}"), v, KVM_CHECK_EXTENSION, cap);
    }
    p.io("vm.unknown_io_ff", v, io(0xff), 0);
    p.io("vm.unknown_type", v, 0x5a01, 0);
    p.io("vm.get_api_version", v, KVM_GET_API_VERSION, 0);
    p.io("vm.get_vcpu_mmap_size", v, KVM_GET_VCPU_MMAP_SIZE, 0);
    p.io("vm.create_vm", v, KVM_CREATE_VM, 0);
    let mut b = Buf::new(8 + 40 * 300).u32(0, 300);
    p.buf("vm.get_supported_cpuid", v, KVM_GET_SUPPORTED_CPUID, &mut b);
    p.io("vm.run", v, KVM_RUN, 0);
    p.io("vm.get_nr_mmu_pages", v, KVM_GET_NR_MMU_PAGES, 0);
    p.io("vm.set_nr_mmu_pages.1", v, KVM_SET_NR_MMU_PAGES, 1);
    p.io("vm.set_nr_mmu_pages.64", v, KVM_SET_NR_MMU_PAGES, 64);
    p.io("vm.set_tss_addr", v, KVM_SET_TSS_ADDR, 0xfffb_d000);
    p.io("vm.set_tss_addr.huge", v, KVM_SET_TSS_ADDR, u64::MAX);
    let ident = 0xfffb_c000u64;
    p.io(
        "vm.set_identity_map_addr",
        v,
        KVM_SET_IDENTITY_MAP_ADDR,
        &ident as *const u64 as u64,
    );
    p.io(
        "vm.set_identity_map_addr.null",
        v,
        KVM_SET_IDENTITY_MAP_ADDR,
        0,
    );
    // Clocks.
    let mut c = Buf::new(48);
    p.buf("vm.get_clock", v, KVM_GET_CLOCK, &mut c);
    p.push("vm.get_clock.flags".into(), format!("{:#x}", c.r32(8)));
    let clock = c.r64(0);
    let mut c = Buf::new(48).u64(0, clock);
    p.buf("vm.set_clock.flags0", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(8, 1);
    p.buf("vm.set_clock.flag_tsc_stable", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(8, 2);
    p.buf("vm.set_clock.flag_realtime0", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(8, 4);
    p.buf("vm.set_clock.flag_host_tsc", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(8, 0x10);
    p.buf("vm.set_clock.flag_0x10", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(12, 1);
    p.buf("vm.set_clock.pad0", v, KVM_SET_CLOCK, &mut c);
    let mut c = Buf::new(48).u64(0, clock).u32(32, 1);
    p.buf("vm.set_clock.pad", v, KVM_SET_CLOCK, &mut c);
    p.io("vm.get_tsc_khz", v, KVM_GET_TSC_KHZ, 0).ok();
    p.io("vm.set_tsc_khz.0", v, KVM_SET_TSC_KHZ, 0);
    p.io("vm.set_tsc_khz.huge", v, KVM_SET_TSC_KHZ, 0xffff_ffff);
    // Irqchip-less interrupt ioctls.
    let mut l = Buf::new(8).u32(0, 4).u32(4, 1);
    p.buf("vm.irq_line.no_irqchip", v, KVM_IRQ_LINE, &mut l);
    let mut l = Buf::new(8).u32(0, 4).u32(4, 1);
    p.buf(
        "vm.irq_line_status.no_irqchip",
        v,
        KVM_IRQ_LINE_STATUS,
        &mut l,
    );
    let mut g = Buf::new(520);
    p.buf("vm.get_irqchip.no_irqchip", v, KVM_GET_IRQCHIP, &mut g);
    p.io("vm.create_pit.no_irqchip", v, KVM_CREATE_PIT, 0);
    let mut pc = Buf::new(64);
    p.buf("vm.create_pit2.no_irqchip", v, KVM_CREATE_PIT2, &mut pc);
    let mut pc = Buf::new(64);
    p.buf("vm.create_pit2.twice", v, KVM_CREATE_PIT2, &mut pc);
    let mut ps = Buf::new(112);
    p.buf("vm.get_pit2", v, KVM_GET_PIT2, &mut ps);
    p.io("vm.reinject_control", v, KVM_REINJECT_CONTROL, 0);
    let mut msi = Buf::new(32).u32(0, 0xfee0_0000).u32(8, 0x30);
    p.buf("vm.signal_msi.no_irqchip", v, KVM_SIGNAL_MSI, &mut msi);
    let mut msi = Buf::new(32).u32(0, 0xfee0_0000).u32(8, 0x30).u32(12, 2);
    p.buf("vm.signal_msi.bad_flags", v, KVM_SIGNAL_MSI, &mut msi);
    let mut r = Buf::new(8 + 48)
        .u32(0, 1)
        .u32(8, 0)
        .u32(12, 2)
        .u32(24, 0xfee0_0000);
    p.buf(
        "vm.gsi_routing.no_irqchip_msi",
        v,
        KVM_SET_GSI_ROUTING,
        &mut r,
    );
    let mut r = Buf::new(8 + 48)
        .u32(0, 1)
        .u32(8, 0)
        .u32(12, 1)
        .u32(16, 0)
        .u32(20, 0);
    p.buf(
        "vm.gsi_routing.no_irqchip_irqchip",
        v,
        KVM_SET_GSI_ROUTING,
        &mut r,
    );
    let e = eventfd();
    let mut f = Buf::new(32).u32(0, e.as_raw_fd() as u32).u32(4, 5);
    p.buf("vm.irqfd.no_irqchip", v, KVM_IRQFD, &mut f);
    // Devices, PMU, MSR filters, encryption ops.
    let mut d = Buf::new(12).u32(0, 99);
    p.buf("vm.create_device.type99", v, KVM_CREATE_DEVICE, &mut d);
    let mut d = Buf::new(12).u32(0, 99).u32(8, 1);
    p.buf("vm.create_device.type99_test", v, KVM_CREATE_DEVICE, &mut d);
    let mut d = Buf::new(12).u32(0, 6).u32(8, 1);
    p.buf("vm.create_device.vfio_test", v, KVM_CREATE_DEVICE, &mut d);
    let mut a = Buf::new(24);
    p.buf("vm.has_attr.0.0", v, KVM_HAS_DEVICE_ATTR, &mut a);
    let mut a = Buf::new(24).u32(4, 7).u64(8, 3);
    p.buf("vm.has_attr.7.3", v, KVM_HAS_DEVICE_ATTR, &mut a);
    let mut f = Buf::new(32);
    p.buf(
        "vm.pmu_event_filter.zero",
        v,
        KVM_SET_PMU_EVENT_FILTER,
        &mut f,
    );
    let mut f = Buf::new(392).u32(0, 2);
    p.buf("vm.msr_filter.bad_flags", v, KVM_X86_SET_MSR_FILTER, &mut f);
    let mut f = Buf::new(392);
    p.buf(
        "vm.msr_filter.allow_empty",
        v,
        KVM_X86_SET_MSR_FILTER,
        &mut f,
    );
    let mut z = Buf::new(8);
    p.buf("vm.memory_encrypt_op", v, KVM_MEMORY_ENCRYPT_OP, &mut z);
    // Enable-cap on the VM.
    let ec = |p: &mut Probe, key: &str, cap: u32, flags: u32, a0: u64| {
        let mut b = Buf::new(104).u32(0, cap).u32(4, flags).u64(8, a0);
        p.buf(&format!("vm.enable_cap.{key}"), v, KVM_ENABLE_CAP, &mut b);
    };
    ec(p, "cap0", 0, 0, 0);
    ec(p, "cap9999", 9999, 0, 0);
    ec(p, "split_irqchip_flags", 121, 1, 24);
    ec(p, "split_irqchip_25", 121, 0, 25);
    ec(p, "disable_exits_bad", 143, 0, 1 << 10);
    ec(p, "disable_exits_hlt", 143, 0, 2);
    ec(p, "x2apic_api_bad", 129, 0, 1 << 5);
    ec(p, "x2apic_api_ok", 129, 0, 3);
    ec(p, "max_vcpu_id_huge", 128, 0, 1 << 20);
    ec(p, "max_vcpu_id_4096", 128, 0, 4096);
    ec(p, "max_vcpu_id_8", 128, 0, 8);
    ec(p, "disable_quirks2_bad", 213, 0, 1 << 40);
    ec(p, "disable_quirks_all", 116, 0, u64::MAX);
    ec(p, "exception_payload", 164, 0, 1);
    ec(p, "exit_on_emulation_failure", 204, 0, 1);
    ec(p, "msr_platform_info", 159, 0, 1);
    ec(p, "x86_user_space_msr_bad", 188, 0, 1 << 7);
    ec(p, "x86_user_space_msr_ok", 188, 0, 1);
    ec(p, "bus_lock_detection_bad", 185, 0, 3);
    ec(p, "exit_hypercall_bad", 201, 0, 1 << 5);
    ec(p, "x86_notify_vmexit", 219, 0, 1);
    ec(p, "pmu_capability", 217, 0, 1);
    ec(p, "vm_copy_enc_context", 197, 0, 0);
    ec(p, "hyperv_enforce_cpuid", 199, 0, 1);
    ec(p, "dirty_log_ring", 192, 0, 4096);
    ec(p, "manual_dirty_log_bad", 168, 0, 1 << 5);
    ec(p, "manual_dirty_log_ok", 168, 0, 3);
    ec(p, "x86_guest_mode", 238, 0, 0);
    ec(p, "apic_bus_cycles_ns", 239, 0, 0);
    ec(p, "sync_regs", 74, 0, 0);
    drop(vm);
}

/// A VM with an in-kernel irqchip: routing, irqfd, ioeventfd, PIT, IRQ lines.
fn irqchip(p: &mut Probe) {
    let kvm = dev();
    let vm = vm_fd(&kvm);
    let v = vm.as_raw_fd();
    p.io("irqchip.create", v, KVM_CREATE_IRQCHIP, 0);
    p.io("irqchip.create_twice", v, KVM_CREATE_IRQCHIP, 0);
    let ec = |p: &mut Probe, key: &str, cap: u32, a0: u64| {
        let mut b = Buf::new(104).u32(0, cap).u64(8, a0);
        p.buf(
            &format!("irqchip.enable_cap.{key}"),
            v,
            KVM_ENABLE_CAP,
            &mut b,
        );
    };
    ec(p, "split_after_full", 121, 24);
    for (irq, lvl) in [
        (0u32, 1u32),
        (4, 1),
        (23, 1),
        (24, 1),
        (1000, 1),
        (u32::MAX, 1),
        (4, 2),
    ] {
        let mut l = Buf::new(8).u32(0, irq).u32(4, lvl);
        p.buf(
            &format!("irqchip.irq_line.{irq}.{lvl}"),
            v,
            KVM_IRQ_LINE,
            &mut l,
        );
        let mut l = Buf::new(8).u32(0, irq).u32(4, lvl);
        let r = ioctl(v, KVM_IRQ_LINE_STATUS, l.ptr());
        p.rec(
            &format!("irqchip.irq_line_status.{irq}.{lvl}"),
            r,
            format!("status={}", l.r32(4) as i32),
        );
    }
    for chip in [0u32, 1, 2, 3] {
        let mut g = Buf::new(520).u32(0, chip);
        p.buf(
            &format!("irqchip.get_irqchip.{chip}"),
            v,
            KVM_GET_IRQCHIP,
            &mut g,
        );
    }
    // GSI routing.
    let route = |nr: u32, flags: u32, gsi: u32, ty: u32, eflags: u32, a: u32, b: u32| {
        let mut r = Buf::new(8 + 48 * 2).u32(0, nr).u32(4, flags);
        if nr > 0 {
            r = r
                .u32(8, gsi)
                .u32(12, ty)
                .u32(16, eflags)
                .u32(24, a)
                .u32(28, b);
        }
        r
    };
    let gr = |p: &mut Probe, key: &str, mut b: Buf| {
        p.buf(
            &format!("irqchip.gsi_routing.{key}"),
            v,
            KVM_SET_GSI_ROUTING,
            &mut b,
        );
    };
    gr(p, "nr0", route(0, 0, 0, 0, 0, 0, 0));
    gr(p, "nr_4097", route(4097, 0, 0, 0, 0, 0, 0));
    // The header at the very end of a readable page, the entries in a PROT_NONE page: the
    // copy of the 4096 entries faults wherever the heap ends (a heap buffer followed by
    // 128 KiB of whatever the heap holds would answer EFAULT or EINVAL by chance).
    let mut g = Guarded::new(&route(4096, 0, 0, 0, 0, 0, 0).0[..8]);
    p.io(
        "irqchip.gsi_routing.nr_4096_unreadable",
        v,
        KVM_SET_GSI_ROUTING,
        g.ptr(),
    );
    gr(p, "flags1", route(1, 1, 0, 2, 0, 0xfee0_0000, 0));
    gr(p, "type99", route(1, 0, 0, 99, 0, 0, 0));
    gr(p, "entry_flags_bad", route(1, 0, 0, 2, 4, 0xfee0_0000, 0));
    gr(p, "entry_flags_devid", route(1, 0, 0, 2, 1, 0xfee0_0000, 0));
    gr(p, "gsi_4096", route(1, 0, 4096, 2, 0, 0xfee0_0000, 0));
    gr(p, "gsi_4095_msi", route(1, 0, 4095, 2, 0, 0xfee0_0000, 0));
    gr(p, "irqchip3", route(1, 0, 0, 1, 0, 3, 0));
    gr(p, "pic_pin8", route(1, 0, 0, 1, 0, 0, 8));
    gr(p, "ioapic_pin24", route(1, 0, 0, 1, 0, 2, 24));
    gr(p, "ioapic_pin23", route(1, 0, 0, 1, 0, 2, 23));
    gr(p, "msi_addr_hi_bad", route(1, 0, 0, 2, 0, 0xfee0_0000, 1));
    gr(p, "hv_sint", route(1, 0, 0, 4, 0, 0, 0));
    gr(p, "xen_evtchn", route(1, 0, 0, 5, 0, 0, 0));
    let mut two = Buf::new(8 + 96)
        .u32(0, 2)
        .u32(8, 1)
        .u32(12, 2)
        .u32(24, 0xfee0_0000)
        .u32(56, 1)
        .u32(60, 1)
        .u32(72, 2)
        .u32(76, 3);
    p.buf(
        "irqchip.gsi_routing.dup_gsi_msi_plus_irqchip",
        v,
        KVM_SET_GSI_ROUTING,
        &mut two,
    );
    let mut two = Buf::new(8 + 96)
        .u32(0, 2)
        .u32(8, 1)
        .u32(12, 1)
        .u32(24, 2)
        .u32(28, 3)
        .u32(56, 1)
        .u32(60, 1)
        .u32(72, 2)
        .u32(76, 4);
    p.buf(
        "irqchip.gsi_routing.dup_gsi_same_chip",
        v,
        KVM_SET_GSI_ROUTING,
        &mut two,
    );
    // Default routing back (so the GSIs below exist).
    let mut r = route(1, 0, 5, 1, 0, 2, 5);
    p.buf(
        "irqchip.gsi_routing.gsi5_ioapic5",
        v,
        KVM_SET_GSI_ROUTING,
        &mut r,
    );
    // irqfd.
    let e = eventfd();
    let e2 = eventfd();
    let fd = e.as_raw_fd() as u32;
    let irqfd = |p: &mut Probe, key: &str, fd: u32, gsi: u32, flags: u32, rfd: u32, pad: bool| {
        let mut b = Buf::new(32)
            .u32(0, fd)
            .u32(4, gsi)
            .u32(8, flags)
            .u32(12, rfd);
        if pad {
            b = b.u8(20, 1);
        }
        p.buf(&format!("irqchip.irqfd.{key}"), v, KVM_IRQFD, &mut b);
    };
    irqfd(p, "flags_bad", fd, 5, 4, 0, false);
    irqfd(p, "flags_high", fd, 5, 1 << 31, 0, false);
    irqfd(p, "badfd", 9999, 5, 0, 0, false);
    irqfd(p, "notevent", 0, 5, 0, 0, false);
    irqfd(p, "pad_nonzero", fd, 5, 0, 0, true);
    irqfd(p, "gsi_huge", fd, u32::MAX, 0, 0, false);
    irqfd(p, "gsi_4096", fd, 4096, 0, 0, false);
    irqfd(p, "ok", fd, 5, 0, 0, false);
    irqfd(p, "dup", fd, 5, 0, 0, false);
    irqfd(p, "same_fd_other_gsi", fd, 6, 0, 0, false);
    irqfd(p, "deassign_absent", e2.as_raw_fd() as u32, 5, 1, 0, false);
    irqfd(p, "deassign_ok", fd, 5, 1, 0, false);
    irqfd(p, "deassign_badfd", 9999, 5, 1, 0, false);
    irqfd(p, "resample_badfd", fd, 5, 2, 9999, false);
    irqfd(p, "resample_ok", fd, 5, 2, e2.as_raw_fd() as u32, false);
    irqfd(
        p,
        "resample_and_deassign",
        fd,
        5,
        3,
        e2.as_raw_fd() as u32,
        false,
    );
    // ioeventfd.
    let ioev = |p: &mut Probe, key: &str, addr: u64, len: u32, fd: i32, flags: u32, dm: u64| {
        let mut b = Buf::new(64)
            .u64(0, dm)
            .u64(8, addr)
            .u32(16, len)
            .u32(20, fd as u32)
            .u32(24, flags);
        p.buf(
            &format!("irqchip.ioeventfd.{key}"),
            v,
            KVM_IOEVENTFD,
            &mut b,
        );
    };
    let efd = e2.as_raw_fd();
    const DM: u32 = 1;
    const PIO: u32 = 2;
    const DEASSIGN: u32 = 4;
    ioev(p, "len3", 0x1000, 3, efd, 0, 0);
    ioev(p, "len16", 0x1000, 16, efd, 0, 0);
    ioev(p, "len0_mmio", 0x1000, 0, efd, 0, 0);
    ioev(p, "len0_pio", 0x80, 0, efd, PIO, 0);
    ioev(p, "len0_datamatch", 0x1000, 0, efd, DM, 0);
    ioev(p, "flags_bit5", 0x1000, 4, efd, 1 << 5, 0);
    ioev(p, "flags_ccw", 0x1000, 4, efd, 1 << 3, 0);
    ioev(p, "addr_wrap", u64::MAX - 1, 4, efd, 0, 0);
    ioev(p, "badfd", 0x1000, 4, 9999, 0, 0);
    ioev(p, "ok_mmio4", 0x1000, 4, efd, 0, 0);
    ioev(p, "dup_mmio4", 0x1000, 4, efd, 0, 0);
    ioev(p, "dup_mmio4_dm", 0x1000, 4, efd, DM, 7);
    ioev(p, "ok_pio8", 0x80, 8, efd, PIO, 0);
    ioev(p, "pio_wrap", 0xffff, 2, efd, PIO, 0);
    ioev(p, "datamatch_too_wide", 0x2000, 1, efd, DM, 0x100);
    ioev(p, "deassign_absent", 0x3000, 4, efd, DEASSIGN, 0);
    ioev(p, "deassign_wrong_len", 0x1000, 2, efd, DEASSIGN, 0);
    ioev(p, "deassign_ok", 0x1000, 4, efd, DEASSIGN, 0);
    ioev(p, "deassign_len0", 0x1000, 0, efd, DEASSIGN, 0);
    // PIT.
    let mut pc = Buf::new(64);
    p.buf("irqchip.create_pit2", v, KVM_CREATE_PIT2, &mut pc);
    let mut pc = Buf::new(64);
    p.buf("irqchip.create_pit2.twice", v, KVM_CREATE_PIT2, &mut pc);
    p.io("irqchip.create_pit.after_pit2", v, KVM_CREATE_PIT, 0);
    let mut ps = Buf::new(112);
    p.buf("irqchip.get_pit2", v, KVM_GET_PIT2, &mut ps);
    p.io("irqchip.reinject_control", v, KVM_REINJECT_CONTROL, 0);
    let mut msi = Buf::new(32).u32(0, 0xfee0_0000).u32(8, 0x30);
    p.buf("irqchip.signal_msi", v, KVM_SIGNAL_MSI, &mut msi);
    let mut msi = Buf::new(32).u32(0, 0xfee0_0000).u32(8, 0x30).u32(12, 2);
    p.buf("irqchip.signal_msi.bad_flags", v, KVM_SIGNAL_MSI, &mut msi);
    let mut msi = Buf::new(32).u32(0, 0xfee0_0000).u32(8, 0x30).u8(20, 1);
    p.buf("irqchip.signal_msi.pad", v, KVM_SIGNAL_MSI, &mut msi);
    // Boot CPU id and vCPU creation order.
    p.io("irqchip.set_boot_cpu_id.4096", v, KVM_SET_BOOT_CPU_ID, 4096);
    p.io("irqchip.set_boot_cpu_id.4095", v, KVM_SET_BOOT_CPU_ID, 4095);
    p.io("irqchip.set_boot_cpu_id.1", v, KVM_SET_BOOT_CPU_ID, 1);
    let r = ioctl(v, KVM_CREATE_VCPU, 1);
    p.rec("irqchip.create_vcpu.1", r.map(|_| 0), String::new());
    let c1 = owned(r);
    let r = ioctl(v, KVM_CREATE_VCPU, 1);
    p.rec("irqchip.create_vcpu.1.dup", r.map(|_| 0), String::new());
    drop(owned(r));
    p.io(
        "irqchip.set_boot_cpu_id.after_vcpu",
        v,
        KVM_SET_BOOT_CPU_ID,
        0,
    );
    p.io(
        "irqchip.create_irqchip.after_vcpu",
        v,
        KVM_CREATE_IRQCHIP,
        0,
    );
    drop(c1);
    drop(vm);
}

fn vcpu_ids(p: &mut Probe) {
    let kvm = dev();
    let vm = vm_fd(&kvm);
    let v = vm.as_raw_fd();
    let mut keep = Vec::new();
    for (key, id) in [
        ("4096", 4096u64),
        ("huge", u64::MAX),
        ("high_bits", 1 << 32),
        ("4095", 4095),
        ("4095_dup", 4095),
        ("0", 0),
    ] {
        let r = ioctl(v, KVM_CREATE_VCPU, id);
        p.rec(
            &format!("vcpu_ids.create.{key}"),
            r.map(|_| 0),
            String::new(),
        );
        keep.extend(owned(r));
    }
    p.io("vcpu_ids.set_boot_cpu_id.after", v, KVM_SET_BOOT_CPU_ID, 0);
    let mut b = Buf::new(104).u32(0, 128).u64(8, 8);
    p.buf(
        "vcpu_ids.enable_cap.max_vcpu_id_after",
        v,
        KVM_ENABLE_CAP,
        &mut b,
    );
    p.io(
        "vcpu_ids.set_identity_map_addr.after",
        v,
        KVM_SET_IDENTITY_MAP_ADDR,
        &0u64 as *const u64 as u64,
    );
    p.io("vcpu_ids.set_tsc_khz.after", v, KVM_SET_TSC_KHZ, 1_000_000);
    drop(keep);
    let vm = vm_fd(&kvm);
    let mut b = Buf::new(104).u32(0, 128).u64(8, 2);
    p.buf(
        "vcpu_ids.enable_cap.max_vcpu_id_2",
        vm.as_raw_fd(),
        KVM_ENABLE_CAP,
        &mut b,
    );
    for id in [1u64, 2] {
        let r = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, id);
        p.rec(
            &format!("vcpu_ids.max2.create.{id}"),
            r.map(|_| 0),
            String::new(),
        );
        drop(owned(r));
    }
}

/// vCPU state ioctls on a vCPU without an in-kernel irqchip, then after KVM_RUN.
fn vcpu_state(p: &mut Probe) {
    // hlt at offset 0, reached through the reset vector's jmp.
    let g = Guest::new(&[0xf4], 0x1000).expect("guest");
    let vcpu = g.vcpu(0).expect("vcpu");
    let c = vcpu.as_raw_fd();
    p.io("vcpu.unknown_io_ff", c, io(0xff), 0);
    p.io("vcpu.unknown_type", c, 0x5a01, 0);
    p.io("vcpu.check_extension", c, KVM_CHECK_EXTENSION, 1);
    p.io("vcpu.create_vcpu", c, KVM_CREATE_VCPU, 1);
    // Regs.
    let mut r = Buf::new(144);
    p.buf("vcpu.get_regs", c, KVM_GET_REGS, &mut r);
    let regs = r.0.clone();
    let mut r2 = Buf(regs.clone()).u64(136, !0u64);
    p.buf("vcpu.set_regs.rflags_all", c, KVM_SET_REGS, &mut r2);
    let mut r = Buf::new(144);
    p.buf("vcpu.get_regs.after", c, KVM_GET_REGS, &mut r);
    p.push(
        "vcpu.get_regs.after.rflags".into(),
        format!("{:#x}", r.r64(136)),
    );
    let mut r2 = Buf(regs.clone()).u64(128, 1 << 63);
    p.buf("vcpu.set_regs.rip_noncanonical", c, KVM_SET_REGS, &mut r2);
    let mut r2 = Buf(regs);
    p.buf("vcpu.set_regs.restore", c, KVM_SET_REGS, &mut r2);
    // Sregs: offsets cr0 224, cr2 232, cr3 240, cr4 248, cr8 256, efer 264, apic_base 272,
    // interrupt_bitmap 280.
    let mut s = Buf::new(312);
    p.buf("vcpu.get_sregs", c, KVM_GET_SREGS, &mut s);
    let sregs = s.0.clone();
    let cr0 = s.r64(224);
    let sset = |p: &mut Probe, key: &str, f: &dyn Fn(Buf) -> Buf| {
        let mut b = f(Buf(sregs.clone()));
        p.buf(&format!("vcpu.set_sregs.{key}"), c, KVM_SET_SREGS, &mut b);
    };
    sset(p, "same", &|b| b);
    sset(p, "cr0_pg_no_pe", &|b| b.u64(224, (cr0 & !1) | 1 << 31));
    sset(p, "cr0_high", &|b| b.u64(224, cr0 | 1 << 40));
    sset(p, "cr0_nw_no_cd", &|b| {
        b.u64(224, (cr0 & !(1 << 30)) | 1 << 29)
    });
    sset(p, "cr4_reserved", &|b| b.u64(248, 1 << 30));
    sset(p, "cr4_vmxe", &|b| b.u64(248, 1 << 13));
    sset(p, "cr4_la57", &|b| b.u64(248, 1 << 12));
    sset(p, "cr4_pcide_no_lme", &|b| b.u64(248, 1 << 17));
    sset(p, "efer_reserved", &|b| b.u64(264, 1 << 20));
    sset(p, "efer_svme", &|b| b.u64(264, 1 << 12));
    sset(p, "efer_lme_lma_nopg", &|b| b.u64(264, 0x500));
    sset(p, "efer_lma_only", &|b| b.u64(264, 0x400));
    sset(p, "long_no_pae", &|b| {
        b.u64(224, cr0 | 0x8000_0001).u64(264, 0x500)
    });
    sset(p, "cr3_high", &|b| b.u64(240, 1 << 60));
    sset(p, "cr8_big", &|b| b.u64(256, 0xff));
    sset(p, "apic_base_reserved", &|b| {
        b.u64(272, 0xfee0_0900 | 1 << 60)
    });
    sset(p, "apic_base_x2_no_en", &|b| {
        b.u64(272, 0xfee0_0000 | 1 << 10)
    });
    sset(p, "int_bitmap_two", &|b| b.u64(280, 1 << 33 | 1 << 40));
    let mut ev = Buf::new(64);
    let r = ioctl(c, KVM_GET_VCPU_EVENTS, ev.ptr());
    p.rec(
        "vcpu.events_after_bitmap",
        r,
        format!("int.injected={} nr={}", ev.0[8], ev.0[9]),
    );
    sset(p, "restore", &|b| b);
    let mut s2 = Buf::new(320);
    p.buf("vcpu.get_sregs2", c, KVM_GET_SREGS2, &mut s2);
    p.push(
        "vcpu.get_sregs2.flags".into(),
        format!("{:#x}", s2.r64(280)),
    );
    let sregs2 = s2.0.clone();
    let mut b = Buf(sregs2.clone()).u64(280, 2);
    p.buf("vcpu.set_sregs2.flags_bad", c, KVM_SET_SREGS2, &mut b);
    let mut b = Buf(sregs2.clone()).u64(280, 1);
    p.buf("vcpu.set_sregs2.pdptrs_no_pae", c, KVM_SET_SREGS2, &mut b);
    let mut b = Buf(sregs2.clone()).u64(248, 1 << 30);
    p.buf("vcpu.set_sregs2.cr4_reserved", c, KVM_SET_SREGS2, &mut b);
    let mut b = Buf(sregs2);
    p.buf("vcpu.set_sregs2.same", c, KVM_SET_SREGS2, &mut b);
    // MSRs.
    let msrs = |list: &[(u32, u64)]| {
        let mut b = Buf::new(8 + 16 * list.len().max(1)).u32(0, list.len() as u32);
        for (i, (idx, val)) in list.iter().enumerate() {
            b = b.u32(8 + 16 * i, *idx).u64(16 + 16 * i, *val);
        }
        b
    };
    let mut b = msrs(&[]).u32(0, 256);
    b.0.resize(8 + 16 * 300, 0);
    p.buf("vcpu.set_msrs.n256", c, KVM_SET_MSRS, &mut b);
    let mut b = msrs(&[]).u32(0, 0x7fff_ffff);
    p.buf("vcpu.set_msrs.huge", c, KVM_SET_MSRS, &mut b);
    let mut b = msrs(&[]).u32(0, 0x7fff_ffff);
    p.buf("vcpu.get_msrs.huge", c, KVM_GET_MSRS, &mut b);
    let mut b = msrs(&[]).u32(0, 0);
    p.buf("vcpu.set_msrs.n0", c, KVM_SET_MSRS, &mut b);
    for (key, list) in [
        ("unknown", vec![(0x1234_5678u32, 0u64)]),
        ("tsc_then_unknown", vec![(0x10, 5), (0x1234_5678, 0)]),
        ("efer_reserved", vec![(0xc000_0080, 1 << 20)]),
        ("efer_lme", vec![(0xc000_0080, 0x100)]),
        ("apic_base_reserved", vec![(0x1b, 0xfee0_0900 | 1 << 60)]),
        ("pat_bad", vec![(0x277, 0x0707_0707_0707_0702)]),
        ("pat_ok", vec![(0x277, 0x0007_0406_0007_0406)]),
        ("mtrr_def_type_bad", vec![(0x2ff, 0x1_0000)]),
        ("mtrr_fixed_bad", vec![(0x250, 0x0202_0202_0202_0202)]),
        ("mtrr_var_base_bad", vec![(0x200, 2)]),
        ("misc_enable_all", vec![(0x1a0, u64::MAX)]),
        ("star_any", vec![(0xc000_0081, u64::MAX)]),
        ("lstar_noncanonical", vec![(0xc000_0082, 1 << 63)]),
        ("fs_base_noncanonical", vec![(0xc000_0100, 1 << 62)]),
        ("sysenter_esp_noncanonical", vec![(0x175, 1 << 62)]),
        ("tsc_aux_high", vec![(0xc000_0103, 1 << 40)]),
        ("debugctl_bad", vec![(0x1d9, 1 << 20)]),
        ("debugctl_btf", vec![(0x1d9, 2)]),
        ("xss_bad", vec![(0xda0, 1 << 63)]),
        ("spec_ctrl_bad", vec![(0x48, 1 << 40)]),
        ("pred_cmd_bad", vec![(0x49, 2)]),
        ("hwcr_bad", vec![(0xc001_0015, 1 << 40)]),
        ("vm_cr", vec![(0xc001_0114, 0x10)]),
        ("vm_hsave_pa_bad", vec![(0xc001_0117, 0x123)]),
        ("mcg_status", vec![(0x17a, 1)]),
        ("mcg_ctl_bad", vec![(0x17b, 5)]),
        ("mc0_ctl", vec![(0x400, u64::MAX)]),
        ("mc0_status_nonzero", vec![(0x401, 1)]),
        ("perf_ctl0", vec![(0xc001_0000, 0)]),
        ("perf_global_ctl", vec![(0xc000_0301, 0)]),
        ("kvm_system_time_bad", vec![(0x4b56_4d01, 0x1001)]),
        ("kvm_wall_clock", vec![(0x4b56_4d00, 0x1000)]),
        ("kvm_async_pf_bad", vec![(0x4b56_4d02, 0x3f)]),
        ("kvm_pv_eoi_bad", vec![(0x4b56_4d04, 0x3)]),
        ("kvm_steal_time_bad", vec![(0x4b56_4d03, 0x11)]),
        ("kvm_poll_control", vec![(0x4b56_4d05, 2)]),
        ("hv_guest_os_id", vec![(0x4000_0000, 1)]),
        ("x2apic_no_irqchip", vec![(0x808, 0)]),
        ("tsc_adjust", vec![(0x3b, 5)]),
        ("tsc_deadline_no_irqchip", vec![(0x6e0, 5)]),
        ("ia32_feature_control", vec![(0x3a, 5)]),
        ("arch_capabilities", vec![(0x10a, 0)]),
        ("platform_info", vec![(0xce, 0)]),
        ("u_cet", vec![(0x6a0, 0)]),
        ("amd64_virt_spec_ctrl", vec![(0xc001_011f, 0)]),
        ("tsc_ratio", vec![(0xc000_0104, 1 << 32)]),
        ("smi_count", vec![(0x34, 5)]),
        ("ucode_rev", vec![(0x8b, 1 << 32)]),
    ] {
        let mut b = msrs(&list);
        p.buf(&format!("vcpu.set_msrs.{key}"), c, KVM_SET_MSRS, &mut b);
        let mut b = msrs(&list);
        let r = ioctl(c, KVM_GET_MSRS, b.ptr());
        p.rec(&format!("vcpu.get_msrs.{key}"), r, String::new());
    }
    // CPUID.
    let mut b = Buf::new(8 + 40 * 300).u32(0, 257);
    p.buf("vcpu.set_cpuid2.nent257", c, KVM_SET_CPUID2, &mut b);
    let mut b = Buf::new(8).u32(0, 0x7fff_ffff);
    p.buf("vcpu.set_cpuid2.huge", c, KVM_SET_CPUID2, &mut b);
    let mut b = Buf::new(8).u32(0, 0);
    let r = ioctl(c, KVM_GET_CPUID2, b.ptr());
    p.rec("vcpu.get_cpuid2.nent0", r, format!("nent={}", b.r32(0)));
    let kvm = dev();
    let mut sup = Buf::new(8 + 40 * 256).u32(0, 256);
    ioctl(kvm.as_raw_fd(), KVM_GET_SUPPORTED_CPUID, sup.ptr()).expect("supported cpuid");
    let mut b = Buf(sup.0.clone());
    p.buf("vcpu.set_cpuid2.supported", c, KVM_SET_CPUID2, &mut b);
    let mut b = Buf::new(8).u32(0, 0);
    let r = ioctl(c, KVM_GET_CPUID2, b.ptr());
    p.rec("vcpu.get_cpuid2.nent0_after", r, String::new());
    // Debug registers: db 0..32, dr6 32, dr7 40, flags 48.
    let dset = |p: &mut Probe, key: &str, dr6: u64, dr7: u64, flags: u32| {
        let mut b = Buf::new(128).u64(32, dr6).u64(40, dr7).u32(48, flags);
        p.buf(
            &format!("vcpu.set_debugregs.{key}"),
            c,
            KVM_SET_DEBUGREGS,
            &mut b,
        );
    };
    dset(p, "ok", 0xffff_0ff0, 0x400, 0);
    dset(p, "flags1", 0xffff_0ff0, 0x400, 1);
    dset(p, "dr6_high", 1 << 32 | 0xffff_0ff0, 0x400, 0);
    dset(p, "dr7_high", 0xffff_0ff0, 1 << 32 | 0x400, 0);
    dset(p, "dr6_low_zero", 0, 0, 0);
    let mut b = Buf::new(128).u64(72, 1);
    p.buf(
        "vcpu.set_debugregs.reserved_nonzero",
        c,
        KVM_SET_DEBUGREGS,
        &mut b,
    );
    let mut d = Buf::new(128);
    p.buf("vcpu.get_debugregs", c, KVM_GET_DEBUGREGS, &mut d);
    p.push(
        "vcpu.get_debugregs.dr6_dr7_flags".into(),
        format!("{:#x} {:#x} {}", d.r64(32), d.r64(40), d.r32(48)),
    );
    // Vcpu events: exception 0..8 (injected nr has_error pending error_code), interrupt 8..12,
    // nmi 12..16, sipi 16, flags 20, smi 24..28, triple_fault 28, payload flag 55, payload 56.
    let eset = |p: &mut Probe, key: &str, b: Buf| {
        let mut b = b;
        p.buf(
            &format!("vcpu.set_vcpu_events.{key}"),
            c,
            KVM_SET_VCPU_EVENTS,
            &mut b,
        );
    };
    eset(p, "zero", Buf::new(64));
    eset(p, "flags_bad", Buf::new(64).u32(20, 1 << 10));
    eset(p, "exc_nr32", Buf::new(64).u8(0, 1).u8(1, 32));
    eset(p, "exc_nmi", Buf::new(64).u8(0, 1).u8(1, 2));
    eset(
        p,
        "exc_pending_no_payload_cap",
        Buf::new(64).u8(3, 1).u8(1, 14),
    );
    eset(
        p,
        "exc_injected_and_pending",
        Buf::new(64).u8(0, 1).u8(3, 1).u8(1, 13),
    );
    eset(p, "int_nr_any", Buf::new(64).u8(8, 1).u8(9, 0xff));
    eset(p, "smm_valid_zero", Buf::new(64).u32(20, 8));
    eset(p, "smm_valid_smm1", Buf::new(64).u32(20, 8).u8(24, 1));
    eset(p, "smm_valid_pending", Buf::new(64).u32(20, 8).u8(25, 1));
    eset(
        p,
        "triple_fault_no_cap",
        Buf::new(64).u32(20, 0x20).u8(28, 1),
    );
    eset(p, "payload_no_cap", Buf::new(64).u32(20, 0x10).u8(55, 1));
    eset(p, "nmi_pending_valid", Buf::new(64).u32(20, 1).u8(13, 1));
    eset(p, "sipi_valid", Buf::new(64).u32(20, 2).u32(16, 0x12));
    eset(p, "shadow_valid", Buf::new(64).u32(20, 4).u8(11, 3));
    eset(p, "nmi_masked_2", Buf::new(64).u8(14, 2));
    let mut ev = Buf::new(64);
    let r = ioctl(c, KVM_GET_VCPU_EVENTS, ev.ptr());
    p.rec(
        "vcpu.get_vcpu_events",
        r,
        format!(
            "flags={:#x} exc={:?} int={:?} nmi={:?} sipi={:#x}",
            ev.r32(20),
            &ev.0[0..8],
            &ev.0[8..12],
            &ev.0[12..16],
            ev.r32(16)
        ),
    );
    eset(p, "zero_again", Buf::new(64));
    // XSAVE / XCRS.
    let mut xs = Buf::new(16384);
    p.buf("vcpu.get_xsave", c, KVM_GET_XSAVE, &mut xs);
    let xsave = xs.0.clone();
    let xbv = xs.r64(512);
    p.push("vcpu.get_xsave.xstate_bv".into(), format!("{xbv:#x}"));
    let xset = |p: &mut Probe, key: &str, f: &dyn Fn(Buf) -> Buf| {
        let mut b = f(Buf(xsave.clone()));
        p.buf(&format!("vcpu.set_xsave.{key}"), c, KVM_SET_XSAVE, &mut b);
    };
    xset(p, "same", &|b| b);
    xset(p, "xstate_bv_bit63", &|b| b.u64(512, xbv | 1 << 63));
    xset(p, "xstate_bv_bit62", &|b| b.u64(512, xbv | 1 << 62));
    xset(p, "xstate_bv_amx", &|b| b.u64(512, xbv | 1 << 18));
    xset(p, "xstate_bv_pkru", &|b| b.u64(512, xbv | 1 << 9));
    xset(p, "xcomp_bv", &|b| b.u64(520, 1 << 63 | 3));
    xset(p, "hdr_reserved", &|b| b.u64(528, 1));
    xset(p, "mxcsr_reserved", &|b| b.u32(24, 0xffff_ffff));
    xset(p, "restore", &|b| b);
    let mut x2 = Buf::new(16384);
    p.buf("vcpu.get_xsave2", c, KVM_GET_XSAVE2, &mut x2);
    let xc = |p: &mut Probe, key: &str, nr: u32, flags: u32, xcr: u32, val: u64| {
        let mut b = Buf::new(392)
            .u32(0, nr)
            .u32(4, flags)
            .u32(8, xcr)
            .u64(16, val);
        p.buf(&format!("vcpu.set_xcrs.{key}"), c, KVM_SET_XCRS, &mut b);
    };
    xc(p, "nr17", 17, 0, 0, 3);
    xc(p, "nr16", 16, 0, 0, 3);
    xc(p, "nr0", 0, 0, 0, 3);
    xc(p, "flags1", 1, 1, 0, 3);
    xc(p, "xcr1", 1, 0, 1, 3);
    xc(p, "no_x87", 1, 0, 0, 2);
    xc(p, "avx_no_sse", 1, 0, 0, 5);
    xc(p, "bit63", 1, 0, 0, 1 << 63 | 3);
    xc(p, "ok", 1, 0, 0, 3);
    let mut x = Buf::new(392);
    let r = ioctl(c, KVM_GET_XCRS, x.ptr());
    p.rec(
        "vcpu.get_xcrs",
        r,
        format!("nr={} xcr0={:#x}", x.r32(0), x.r64(16)),
    );
    // MP state without an in-kernel irqchip.
    for s in [0u32, 1, 2, 3, 4, 5, 8, 99] {
        let mut b = Buf::new(4).u32(0, s);
        p.buf(
            &format!("vcpu.set_mp_state.{s}"),
            c,
            KVM_SET_MP_STATE,
            &mut b,
        );
    }
    let mut b = Buf::new(4);
    let r = ioctl(c, KVM_GET_MP_STATE, b.ptr());
    p.rec("vcpu.get_mp_state", r, format!("state={}", b.r32(0)));
    // Interrupts.
    for irq in [256u32, u32::MAX, 32, 33] {
        let mut b = Buf::new(4).u32(0, irq);
        p.buf(&format!("vcpu.interrupt.{irq}"), c, KVM_INTERRUPT, &mut b);
    }
    p.io("vcpu.nmi", c, KVM_NMI, 0);
    p.io("vcpu.nmi.again", c, KVM_NMI, 0);
    p.io("vcpu.smi", c, KVM_SMI, 0);
    let mut ev = Buf::new(64);
    let r = ioctl(c, KVM_GET_VCPU_EVENTS, ev.ptr());
    p.rec(
        "vcpu.events_after_nmi",
        r,
        format!(
            "int={:?} nmi={:?} smi={:?}",
            &ev.0[8..12],
            &ev.0[12..16],
            &ev.0[24..28]
        ),
    );
    eset(p, "zero_clear", Buf::new(64));
    // LAPIC without irqchip.
    let mut l = Buf::new(1024);
    p.buf("vcpu.get_lapic.no_irqchip", c, KVM_GET_LAPIC, &mut l);
    p.buf("vcpu.set_lapic.no_irqchip", c, KVM_SET_LAPIC, &mut l);
    let mut t = Buf::new(40).u32(0, 1);
    p.buf(
        "vcpu.tpr_access_reporting.no_irqchip",
        c,
        KVM_TPR_ACCESS_REPORTING,
        &mut t,
    );
    let mut va = Buf::new(8).u64(0, 0x1000);
    p.buf(
        "vcpu.set_vapic_addr.no_irqchip",
        c,
        KVM_SET_VAPIC_ADDR,
        &mut va,
    );
    // Guest debug.
    let gd = |p: &mut Probe, key: &str, control: u32| {
        let mut b = Buf::new(72).u32(0, control);
        p.buf(
            &format!("vcpu.set_guest_debug.{key}"),
            c,
            KVM_SET_GUEST_DEBUG,
            &mut b,
        );
    };
    gd(p, "bit2", 1 << 2);
    gd(p, "bit20", 1 << 20);
    gd(p, "inject_db_no_enable", 1 << 2 | 1 << 3);
    gd(p, "enable_inject_db", 1 | 1 << 2);
    gd(p, "enable_inject_bp", 1 | 1 << 3);
    gd(p, "blockirq", 1 | 1 << 21);
    gd(p, "ok_singlestep", 1 | 1 << 1);
    gd(p, "ok_hw_bp", 1 | 1 << 17);
    gd(p, "off", 0);
    // Nested state: flags 0, format 2, size 4, hdr 8..128.
    let mut n = Buf::new(128);
    let r = ioctl(c, KVM_GET_NESTED_STATE, n.ptr());
    p.rec(
        "vcpu.get_nested_state.size0",
        r,
        format!("size={}", n.r32(4)),
    );
    let mut n = Buf::new(8192).u32(4, 8192);
    let r = ioctl(c, KVM_GET_NESTED_STATE, n.ptr());
    p.rec(
        "vcpu.get_nested_state.8k",
        r,
        format!(
            "format={} size={} flags={}",
            n.r32(0) >> 16,
            n.r32(4),
            n.r32(0) & 0xffff
        ),
    );
    let mut n = Buf::new(8192).u16(2, 1).u32(4, 128);
    p.buf(
        "vcpu.set_nested_state.svm_size128",
        c,
        KVM_SET_NESTED_STATE,
        &mut n,
    );
    let mut n = Buf::new(8192).u16(2, 7).u32(4, 128);
    p.buf(
        "vcpu.set_nested_state.format7",
        c,
        KVM_SET_NESTED_STATE,
        &mut n,
    );
    let mut n = Buf::new(8192).u16(2, 1).u32(4, 64);
    p.buf(
        "vcpu.set_nested_state.size64",
        c,
        KVM_SET_NESTED_STATE,
        &mut n,
    );
    let mut n = Buf::new(8192).u16(0, 0x80).u16(2, 1).u32(4, 128);
    p.buf(
        "vcpu.set_nested_state.flags_bad",
        c,
        KVM_SET_NESTED_STATE,
        &mut n,
    );
    // Translate: real mode, linear = physical.
    let mut t = Buf::new(24).u64(0, 0x1234_5678);
    let r = ioctl(c, KVM_TRANSLATE, t.ptr());
    p.rec(
        "vcpu.translate",
        r,
        format!(
            "phys={:#x} valid={} w={} u={}",
            t.r64(8),
            t.0[16],
            t.0[17],
            t.0[18]
        ),
    );
    let mut t = Buf::new(24).u64(0, 1 << 40);
    let r = ioctl(c, KVM_TRANSLATE, t.ptr());
    p.rec(
        "vcpu.translate.high",
        r,
        format!("phys={:#x} valid={}", t.r64(8), t.0[16]),
    );
    // Signal mask.
    let mut sm = Buf::new(16).u32(0, 4);
    p.buf("vcpu.set_signal_mask.len4", c, KVM_SET_SIGNAL_MASK, &mut sm);
    let mut sm = Buf::new(16).u32(0, 16);
    p.buf(
        "vcpu.set_signal_mask.len16",
        c,
        KVM_SET_SIGNAL_MASK,
        &mut sm,
    );
    let mut sm = Buf::new(16).u32(0, 8);
    p.buf("vcpu.set_signal_mask.len8", c, KVM_SET_SIGNAL_MASK, &mut sm);
    p.io("vcpu.set_signal_mask.null", c, KVM_SET_SIGNAL_MASK, 0);
    // Device attributes on the vCPU (KVM_VCPU_TSC_CTRL group 0, KVM_VCPU_TSC_OFFSET attr 0).
    for (g, a) in [(0u32, 0u64), (0, 1), (1, 0), (0xffff_ffff, 0)] {
        let mut b = Buf::new(24).u32(4, g).u64(8, a);
        p.buf(
            &format!("vcpu.has_attr.{g}.{a}"),
            c,
            KVM_HAS_DEVICE_ATTR,
            &mut b,
        );
    }
    let mut out = 0u64;
    let mut b = Buf::new(24).u64(16, &mut out as *mut u64 as u64);
    p.buf("vcpu.get_attr.tsc_offset", c, KVM_GET_DEVICE_ATTR, &mut b);
    let mut b = Buf::new(24).u32(0, 1);
    p.buf("vcpu.has_attr.flags1", c, KVM_HAS_DEVICE_ATTR, &mut b);
    // MCE.
    let mut mc = 0u64;
    let kvm_fd = kvm.as_raw_fd();
    let r = ioctl(
        kvm_fd,
        KVM_X86_GET_MCE_CAP_SUPPORTED,
        &mut mc as *mut u64 as u64,
    );
    p.rec("sys.mce_cap_supported", r, format!("{mc:#x}"));
    for (key, cap) in [
        ("banks0", 0u64),
        ("banks33", 33),
        ("banks10", 10 | 1 << 24),
        ("bad_bits", 10 | 1 << 40),
    ] {
        p.io(
            &format!("vcpu.setup_mce.{key}"),
            c,
            KVM_X86_SETUP_MCE,
            &cap as *const u64 as u64,
        );
    }
    let mut m = Buf::new(64).u64(0, 1 << 63).u8(32, 40);
    p.buf("vcpu.set_mce.bank40", c, KVM_X86_SET_MCE, &mut m);
    let mut m = Buf::new(64).u64(0, 1 << 63).u8(32, 1);
    p.buf("vcpu.set_mce.bank1", c, KVM_X86_SET_MCE, &mut m);
    // Misc.
    let mut one = Buf::new(16).u64(0, 0x6030_0000_0000_0000).u64(8, 0);
    p.buf("vcpu.get_one_reg", c, KVM_GET_ONE_REG, &mut one);
    p.io("vcpu.kvmclock_ctrl", c, KVM_KVMCLOCK_CTRL, 0);
    p.io("vcpu.get_tsc_khz", c, KVM_GET_TSC_KHZ, 0).ok();
    p.io("vcpu.set_tsc_khz.0", c, KVM_SET_TSC_KHZ, 0);
    let mut f = Buf::new(416);
    p.buf("vcpu.get_fpu", c, KVM_GET_FPU, &mut f);
    let mut hv = Buf::new(8 + 40 * 64).u32(0, 64);
    p.buf(
        "vcpu.get_supported_hv_cpuid",
        c,
        KVM_GET_SUPPORTED_HV_CPUID,
        &mut hv,
    );
    let r = ioctl(c, KVM_GET_STATS_FD, 0);
    p.rec("vcpu.get_stats_fd", r.map(|_| 0), String::new());
    drop(owned(r));
    drop(vcpu);
    drop(g);
}

/// KVM_RUN once on a fresh vCPU (it halts: `KVM_EXIT_HLT`), then the rules that apply after
/// the first run. (Never after the hostile state above: a vCPU left in such a state can keep a
/// host CPU in the guest under QEMU TCG, with upstream kvm_amd as with ours.)
fn vcpu_run(p: &mut Probe) {
    let g = Guest::new(&[0xf4], 0x1000).expect("guest");
    let vcpu = g.vcpu(0).expect("vcpu");
    let c = vcpu.as_raw_fd();
    let kvm = dev();
    let mut sup = Buf::new(8 + 40 * 256).u32(0, 256);
    ioctl(kvm.as_raw_fd(), KVM_GET_SUPPORTED_CPUID, sup.ptr()).expect("supported cpuid");
    let mut b = Buf(sup.0.clone());
    p.buf("vcpu_run.set_cpuid2.before_run", c, KVM_SET_CPUID2, &mut b);
    let run = ioctl(c, KVM_RUN, 0);
    p.rec("vcpu_run.run", run, String::new());
    let mut b = Buf(sup.0.clone());
    p.buf(
        "vcpu_run.set_cpuid2.after_run_same",
        c,
        KVM_SET_CPUID2,
        &mut b,
    );
    let mut b = Buf(sup.0.clone());
    let n = b.r32(0) as usize;
    b = b.u32(8 + 40 * (n - 1) + 28, 0x5a5a_5a5a);
    p.buf(
        "vcpu_run.set_cpuid2.after_run_changed",
        c,
        KVM_SET_CPUID2,
        &mut b,
    );
    let mut b = Buf::new(8);
    p.buf(
        "vcpu_run.set_cpuid2.after_run_empty",
        c,
        KVM_SET_CPUID2,
        &mut b,
    );
    let mut b = Buf::new(104).u32(0, 164).u64(8, 1);
    p.buf(
        "vcpu_run.enable_cap.vm_cap_on_vcpu",
        c,
        KVM_ENABLE_CAP,
        &mut b,
    );
    let mut b = Buf::new(104).u32(0, 9999);
    p.buf("vcpu_run.enable_cap.9999", c, KVM_ENABLE_CAP, &mut b);
    let mut b = Buf::new(104).u32(0, 123).u32(4, 1);
    p.buf(
        "vcpu_run.enable_cap.hyperv_synic_flags",
        c,
        KVM_ENABLE_CAP,
        &mut b,
    );
    let mut b = Buf::new(104).u32(0, 123);
    p.buf(
        "vcpu_run.enable_cap.hyperv_synic",
        c,
        KVM_ENABLE_CAP,
        &mut b,
    );
    let mut b = Buf::new(104).u32(0, 179);
    p.buf(
        "vcpu_run.enable_cap.enforce_pv_cpuid",
        c,
        KVM_ENABLE_CAP,
        &mut b,
    );
    drop(vcpu);
    drop(g);
}

/// vCPU ioctls that depend on the in-kernel irqchip.
fn vcpu_irqchip(p: &mut Probe) {
    let kvm = dev();
    let vm = vm_fd(&kvm);
    let v = vm.as_raw_fd();
    ioctl(v, KVM_CREATE_IRQCHIP, 0).expect("irqchip");
    let vcpu = owned(ioctl(v, KVM_CREATE_VCPU, 0)).expect("vcpu");
    let c = vcpu.as_raw_fd();
    let mut b = Buf::new(4).u32(0, 32);
    p.buf("vcpu_irqchip.interrupt", c, KVM_INTERRUPT, &mut b);
    let mut l = Buf::new(1024);
    p.buf("vcpu_irqchip.get_lapic", c, KVM_GET_LAPIC, &mut l);
    let lapic = l.0.clone();
    let lset = |p: &mut Probe, key: &str, f: &dyn Fn(Buf) -> Buf| {
        let mut b = f(Buf(lapic.clone()));
        p.buf(
            &format!("vcpu_irqchip.set_lapic.{key}"),
            c,
            KVM_SET_LAPIC,
            &mut b,
        );
    };
    lset(p, "same", &|b| b);
    lset(p, "id_changed", &|b| b.u32(0x20, 5 << 24));
    lset(p, "all_ones", &|_| Buf(vec![0xff; 1024]));
    lset(p, "lvt_bad", &|b| b.u32(0x320, 0xffff_ffff));
    lset(p, "restore", &|b| b);
    let mut lr = Buf::new(1024);
    let r = ioctl(c, KVM_GET_LAPIC, lr.ptr());
    p.rec(
        "vcpu_irqchip.get_lapic.after",
        r,
        format!("id={:#x} lvtt={:#x}", lr.r32(0x20), lr.r32(0x320)),
    );
    for s in [0u32, 1, 2, 3, 4, 5, 7, 8, 9, 99] {
        let mut b = Buf::new(4).u32(0, s);
        p.buf(
            &format!("vcpu_irqchip.set_mp_state.{s}"),
            c,
            KVM_SET_MP_STATE,
            &mut b,
        );
    }
    let mut b = Buf::new(4);
    let r = ioctl(c, KVM_GET_MP_STATE, b.ptr());
    p.rec(
        "vcpu_irqchip.get_mp_state",
        r,
        format!("state={}", b.r32(0)),
    );
    let mut b = Buf::new(4).u32(0, 0);
    p.buf(
        "vcpu_irqchip.set_mp_state.restore",
        c,
        KVM_SET_MP_STATE,
        &mut b,
    );
    let mut t = Buf::new(40).u32(0, 1);
    p.buf(
        "vcpu_irqchip.tpr_access_reporting",
        c,
        KVM_TPR_ACCESS_REPORTING,
        &mut t,
    );
    let mut t = Buf::new(40).u32(0, 1).u32(4, 1);
    p.buf(
        "vcpu_irqchip.tpr_access_reporting.flags",
        c,
        KVM_TPR_ACCESS_REPORTING,
        &mut t,
    );
    let mut va = Buf::new(8).u64(0, 0x1000);
    p.buf(
        "vcpu_irqchip.set_vapic_addr",
        c,
        KVM_SET_VAPIC_ADDR,
        &mut va,
    );
    let mut va = Buf::new(8).u64(0, 0);
    p.buf(
        "vcpu_irqchip.set_vapic_addr.0",
        c,
        KVM_SET_VAPIC_ADDR,
        &mut va,
    );
    let msrs = |idx: u32, val: u64| Buf::new(24).u32(0, 1).u32(8, idx).u64(16, val);
    for (key, idx, val) in [
        ("apic_base_x2", 0x1bu32, 0xfee0_0d00u64),
        ("x2apic_tpr", 0x808, 0x10),
        ("x2apic_tpr_reserved", 0x808, 0x1_0000),
        ("x2apic_icr_reserved", 0x830, 1 << 20 | 0xfd),
        ("x2apic_id_write", 0x802, 5),
        ("x2apic_eoi_nonzero", 0x80b, 1),
        ("x2apic_self_ipi_bad", 0x83f, 0x100),
        ("apic_base_disable", 0x1b, 0),
        ("apic_base_x2_to_xapic", 0x1b, 0xfee0_0900),
        ("tsc_deadline", 0x6e0, 5),
    ] {
        let mut b = msrs(idx, val);
        p.buf(
            &format!("vcpu_irqchip.set_msrs.{key}"),
            c,
            KVM_SET_MSRS,
            &mut b,
        );
    }
    let r = ioctl(v, KVM_CREATE_VCPU, 1);
    p.rec("vcpu_irqchip.create_vcpu.1", r.map(|_| 0), String::new());
    drop(owned(r));
    drop(vcpu);
    drop(vm);
}

/// `KVM_CAP_EXCEPTION_PAYLOAD` and `KVM_CAP_X86_TRIPLE_FAULT_EVENT` once the VM enabled them
/// (and after it turned them off again): what `KVM_GET/SET_VCPU_EVENTS`, `KVM_GET_SREGS` and
/// `KVM_GET_DEBUGREGS` show of a pending exception's payload and a pending triple fault, and
/// the `KVM_RUN` a pending triple fault ends.
fn vcpu_caps(p: &mut Probe) {
    let g = Guest::new(&[0xf4], 0x1000).expect("guest");
    let vm = g.vm.as_raw_fd();
    let mut vcpu = g.vcpu(0).expect("vcpu");
    let c = vcpu.as_raw_fd();
    let ec = |p: &mut Probe, key: &str, cap: u32, a0: u64| {
        let mut b = Buf::new(104).u32(0, cap).u64(8, a0);
        p.buf(
            &format!("vcpu_caps.enable_cap.{key}"),
            vm,
            KVM_ENABLE_CAP,
            &mut b,
        );
    };
    // Events layout: exception 0..8 (injected nr has_error pending error_code), flags 20,
    // triple_fault 28, exception_has_payload 55, exception_payload 56.
    let events = |p: &mut Probe, key: &str| {
        let mut ev = Buf::new(64);
        let r = ioctl(c, KVM_GET_VCPU_EVENTS, ev.ptr());
        p.rec(
            &format!("vcpu_caps.get_vcpu_events.{key}"),
            r,
            format!(
                "flags={:#x} exc={:?} triple={} payload={} {:#x}",
                ev.r32(20),
                &ev.0[0..8],
                ev.0[28],
                ev.0[55],
                ev.r64(56)
            ),
        );
    };
    // CR2 (kvm_sregs offset 232) then DR6 (kvm_debugregs offset 32), in that order.
    let cr2_dr6 = |p: &mut Probe, key: &str| {
        let mut s = Buf::new(312);
        let r1 = ioctl(c, KVM_GET_SREGS, s.ptr());
        let mut d = Buf::new(128);
        let r2 = ioctl(c, KVM_GET_DEBUGREGS, d.ptr());
        p.rec(
            &format!("vcpu_caps.cr2_dr6.{key}"),
            r1.and(r2),
            format!("cr2={:#x} dr6={:#x}", s.r64(232), d.r64(32)),
        );
    };
    let eset = |p: &mut Probe, key: &str, b: Buf| {
        let mut b = b;
        p.buf(
            &format!("vcpu_caps.set_vcpu_events.{key}"),
            c,
            KVM_SET_VCPU_EVENTS,
            &mut b,
        );
    };
    // A #PF pending (and injected: dropped) with error code 2 and its CR2 payload.
    let pf = |payload: u64| {
        Buf::new(64)
            .u32(20, 0x10)
            .u8(0, 1)
            .u8(1, 14)
            .u8(2, 1)
            .u8(3, 1)
            .u32(4, 2)
            .u8(55, 1)
            .u64(56, payload)
    };
    // KVM_CAP_PCI_SEGMENT describes KVM_ASSIGN_PCI_DEVICE's segnr; the ioctl itself
    // (_IOR(KVMIO, 0x69, struct kvm_assigned_pci_dev), 64 bytes) is gone from 6.12.
    let mut b = Buf::new(64);
    p.buf("vcpu_caps.vm.assign_pci_device", vm, ior(0x69, 64), &mut b);
    ec(p, "exception_payload_2", 164, 2);
    ec(p, "triple_fault_event_1", 218, 1);
    events(p, "enabled");
    eset(p, "pf_pending_payload", pf(0xdead_b000));
    events(p, "pf_pending");
    cr2_dr6(p, "pf_pending");
    eset(
        p,
        "injected_with_payload",
        Buf::new(64)
            .u32(20, 0x10)
            .u8(0, 1)
            .u8(1, 13)
            .u8(55, 1)
            .u64(56, 0x1234),
    );
    events(p, "injected_with_payload");
    eset(p, "pending_without_flag", Buf::new(64).u8(3, 1).u8(1, 6));
    events(p, "pending_without_flag");
    eset(
        p,
        "db_pending_payload",
        Buf::new(64)
            .u32(20, 0x10)
            .u8(3, 1)
            .u8(1, 1)
            .u8(55, 1)
            .u64(56, 0x4001),
    );
    cr2_dr6(p, "db_pending");
    ec(p, "exception_payload_0", 164, 0);
    cr2_dr6(p, "db_after_cap_off");
    events(p, "db_after_cap_off");
    ec(p, "exception_payload_1", 164, 1);
    eset(p, "pf_pending_again", pf(0xcafe_f000));
    ec(p, "exception_payload_0_again", 164, 0);
    cr2_dr6(p, "pf_after_cap_off");
    events(p, "pf_after_cap_off");
    eset(p, "payload_cap_off", pf(0x5000));
    eset(p, "triple_pending", Buf::new(64).u32(20, 0x20).u8(28, 1));
    events(p, "triple_pending");
    eset(p, "triple_clear", Buf::new(64).u32(20, 0x20));
    events(p, "triple_cleared");
    eset(
        p,
        "triple_pending_again",
        Buf::new(64).u32(20, 0x20).u8(28, 1),
    );
    let r = ioctl(c, KVM_RUN, 0);
    let reason = vcpu.get_kvm_run().exit_reason;
    let mut regs = Buf::new(144);
    let _ = ioctl(c, KVM_GET_REGS, regs.ptr());
    p.rec(
        "vcpu_caps.run_triple_pending",
        r,
        format!("exit={reason} rip={:#x}", regs.r64(128)),
    );
    events(p, "after_shutdown");
    ec(p, "triple_fault_event_0", 218, 0);
    eset(p, "triple_cap_off", Buf::new(64).u32(20, 0x20).u8(28, 1));
    events(p, "triple_cap_off");
    // What counts as an exception pending (kvm_is_exception_pending: a pending exception or
    // triple fault) or an event needing reinjection, with both caps on again:
    // KVM_GUESTDBG_INJECT_DB's EBUSY, kvm_run.ready_for_interrupt_injection.
    ec(p, "exception_payload_on", 164, 1);
    ec(p, "triple_fault_event_on", 218, 1);
    // Every event cleared (payload and triple-fault fields valid, all zero).
    let clear = || {
        let mut b = Buf::new(64).u32(20, 0x30);
        let _ = ioctl(c, KVM_SET_VCPU_EVENTS, b.ptr());
    };
    let dbg = |p: &mut Probe, key: &str, control: u32| {
        let mut b = Buf::new(72).u32(0, control);
        p.buf(
            &format!("vcpu_caps.set_guest_debug.{key}"),
            c,
            KVM_SET_GUEST_DEBUG,
            &mut b,
        );
    };
    let gp_injected = || Buf::new(64).u32(20, 0x10).u8(0, 1).u8(1, 13).u8(2, 1);
    eset(p, "gp_injected", gp_injected());
    dbg(p, "inject_db_over_injected", 1 | 0x4_0000);
    events(p, "after_inject_db_over_injected");
    dbg(p, "off", 0);
    clear();
    eset(p, "triple_for_dbg", Buf::new(64).u32(20, 0x30).u8(28, 1));
    dbg(p, "inject_db_triple_pending", 1 | 0x4_0000);
    events(p, "after_inject_db_triple_pending");
    dbg(p, "off_again", 0);
    clear();
    // RFLAGS.IF set, then each state, then KVM_RUN with immediate_exit (EINTR at once; the
    // exit still reports ready_for_interrupt_injection and if_flag).
    let mut regs = Buf::new(144);
    let _ = ioctl(c, KVM_GET_REGS, regs.ptr());
    let mut regs = regs.u64(136, 0x202);
    let _ = ioctl(c, KVM_SET_REGS, regs.ptr());
    let states: [(&str, Buf); 6] = [
        ("none", Buf::new(64).u32(20, 0x30)),
        (
            "pf_pending",
            Buf::new(64).u32(20, 0x30).u8(3, 1).u8(1, 14).u8(2, 1),
        ),
        ("gp_injected", gp_injected()),
        (
            "irq_injected",
            Buf::new(64).u32(20, 0x30).u8(8, 1).u8(9, 0x20),
        ),
        ("nmi_injected", Buf::new(64).u32(20, 0x30).u8(12, 1)),
        ("triple_pending", Buf::new(64).u32(20, 0x30).u8(28, 1)),
    ];
    for (key, b) in states {
        let mut b = b;
        let set = ioctl(c, KVM_SET_VCPU_EVENTS, b.ptr());
        vcpu.get_kvm_run().immediate_exit = 1;
        let r = ioctl(c, KVM_RUN, 0);
        let run = vcpu.get_kvm_run();
        run.immediate_exit = 0;
        let (ready, iff) = (run.ready_for_interrupt_injection, run.if_flag);
        let answer = match set.and(r) {
            Ok(v) => format!("ok {v}"),
            Err(e) => errname(e),
        };
        p.push(
            format!("vcpu_caps.ready_for_injection.{key}"),
            format!("{answer} ready={ready} if={iff}"),
        );
        clear();
    }
    drop(vcpu);
    drop(g);
}

/// Upstream kvm_amd's answers to [`vcpu_caps`] (6.12.117 in the same QEMU guest, measured with
/// `scripts/guest-try.sh --upstream`; kvm_vcpu_ioctl_x86_get/set_vcpu_events, x86.c).
const UPSTREAM_CAPS: &[(&str, &str)] = &[
    ("vcpu_caps.vm.assign_pci_device", "ENOTTY"),
    ("vcpu_caps.enable_cap.exception_payload_2", "ok 0"),
    ("vcpu_caps.enable_cap.triple_fault_event_1", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.enabled",
        "ok 0 flags=0x3d exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.set_vcpu_events.pf_pending_payload", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.pf_pending",
        "ok 0 flags=0x3d exc=[0, 14, 1, 1, 2, 0, 0, 0] triple=0 payload=1 0xdeadb000",
    ),
    (
        "vcpu_caps.cr2_dr6.pf_pending",
        "ok 0 cr2=0x0 dr6=0xffff0ff0",
    ),
    ("vcpu_caps.set_vcpu_events.injected_with_payload", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.injected_with_payload",
        "ok 0 flags=0x3d exc=[1, 13, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x1234",
    ),
    ("vcpu_caps.set_vcpu_events.pending_without_flag", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.pending_without_flag",
        "ok 0 flags=0x3d exc=[0, 6, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.set_vcpu_events.db_pending_payload", "ok 0"),
    (
        "vcpu_caps.cr2_dr6.db_pending",
        "ok 0 cr2=0x0 dr6=0xffff0ff0",
    ),
    ("vcpu_caps.enable_cap.exception_payload_0", "ok 0"),
    (
        "vcpu_caps.cr2_dr6.db_after_cap_off",
        "ok 0 cr2=0x0 dr6=0xffff4ff1",
    ),
    (
        "vcpu_caps.get_vcpu_events.db_after_cap_off",
        "ok 0 flags=0x2d exc=[1, 1, 0, 1, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.enable_cap.exception_payload_1", "ok 0"),
    ("vcpu_caps.set_vcpu_events.pf_pending_again", "ok 0"),
    ("vcpu_caps.enable_cap.exception_payload_0_again", "ok 0"),
    (
        "vcpu_caps.cr2_dr6.pf_after_cap_off",
        "ok 0 cr2=0xcafef000 dr6=0xffff4ff1",
    ),
    (
        "vcpu_caps.get_vcpu_events.pf_after_cap_off",
        "ok 0 flags=0x2d exc=[1, 14, 1, 1, 2, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.set_vcpu_events.payload_cap_off", "EINVAL"),
    ("vcpu_caps.set_vcpu_events.triple_pending", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.triple_pending",
        "ok 0 flags=0x2d exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=1 payload=0 0x0",
    ),
    ("vcpu_caps.set_vcpu_events.triple_clear", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.triple_cleared",
        "ok 0 flags=0x2d exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.set_vcpu_events.triple_pending_again", "ok 0"),
    ("vcpu_caps.run_triple_pending", "ok 0 exit=8 rip=0xfff0"),
    (
        "vcpu_caps.get_vcpu_events.after_shutdown",
        "ok 0 flags=0x2d exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.enable_cap.triple_fault_event_0", "ok 0"),
    ("vcpu_caps.set_vcpu_events.triple_cap_off", "EINVAL"),
    (
        "vcpu_caps.get_vcpu_events.triple_cap_off",
        "ok 0 flags=0xd exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.enable_cap.exception_payload_on", "ok 0"),
    ("vcpu_caps.enable_cap.triple_fault_event_on", "ok 0"),
    ("vcpu_caps.set_vcpu_events.gp_injected", "ok 0"),
    ("vcpu_caps.set_guest_debug.inject_db_over_injected", "ok 0"),
    (
        "vcpu_caps.get_vcpu_events.after_inject_db_over_injected",
        "ok 0 flags=0x3d exc=[0, 1, 0, 1, 0, 0, 0, 0] triple=0 payload=0 0x0",
    ),
    ("vcpu_caps.set_guest_debug.off", "ok 0"),
    ("vcpu_caps.set_vcpu_events.triple_for_dbg", "ok 0"),
    (
        "vcpu_caps.set_guest_debug.inject_db_triple_pending",
        "EBUSY",
    ),
    (
        "vcpu_caps.get_vcpu_events.after_inject_db_triple_pending",
        "ok 0 flags=0x3d exc=[0, 0, 0, 0, 0, 0, 0, 0] triple=1 payload=0 0x0",
    ),
    ("vcpu_caps.set_guest_debug.off_again", "ok 0"),
    ("vcpu_caps.ready_for_injection.none", "EINTR ready=1 if=1"),
    (
        "vcpu_caps.ready_for_injection.pf_pending",
        "EINTR ready=0 if=1",
    ),
    (
        "vcpu_caps.ready_for_injection.gp_injected",
        "EINTR ready=0 if=1",
    ),
    (
        "vcpu_caps.ready_for_injection.irq_injected",
        "EINTR ready=0 if=1",
    ),
    (
        "vcpu_caps.ready_for_injection.nmi_injected",
        "EINTR ready=0 if=1",
    ),
    (
        "vcpu_caps.ready_for_injection.triple_pending",
        "EINTR ready=0 if=1",
    ),
];

/// Every probe, in order.
pub(crate) fn probe_lines(echo: bool) -> Vec<(String, String)> {
    let mut p = Probe {
        lines: Vec::new(),
        echo,
    };
    // TDXKVM_PROBE_ONLY=name,name runs only those sections (for bisecting by hand).
    let only = std::env::var("TDXKVM_PROBE_ONLY").unwrap_or_default();
    type Section = (&'static str, fn(&mut Probe));
    let sections: [Section; 9] = [
        ("system", system),
        ("memslots", memslots),
        ("vm_misc", vm_misc),
        ("irqchip", irqchip),
        ("vcpu_ids", vcpu_ids),
        ("vcpu_state", vcpu_state),
        ("vcpu_run", vcpu_run),
        ("vcpu_irqchip", vcpu_irqchip),
        ("vcpu_caps", vcpu_caps),
    ];
    for (name, f) in sections {
        if only.is_empty() || only.split(',').any(|o| o == name) {
            f(&mut p);
        }
    }
    p.lines
}

/// `guest-client --probe`: print every line.
pub(crate) fn probe() {
    probe_lines(true);
}

// The measured tables (generated from the two runs' `--probe` output, then reviewed).
include!("hostile_expected.rs");

/// Runs one probe section and checks every answer against upstream's (or, where listed in
/// `DIFFERS`, against our documented answer). A probe upstream never answered is an error too.
fn matches_upstream(ctx: &Ctx, section: fn(&mut Probe)) -> Result<(), String> {
    let mut p = Probe {
        lines: Vec::new(),
        echo: false,
    };
    section(&mut p);
    let mut bad = Vec::new();
    for (k, got) in &p.lines {
        if VOLATILE.contains(&k.as_str()) {
            continue;
        }
        let tdx = TDX_DIFFERS.iter().filter(|_| ctx.tdx).find(|d| d.0 == k);
        let want = match tdx.or_else(|| DIFFERS.iter().find(|d| d.0 == k)) {
            Some(d) => d.1,
            None => match UPSTREAM.iter().chain(UPSTREAM_CAPS).find(|u| u.0 == k) {
                Some(u) => u.1,
                None => {
                    bad.push(format!("{k}: no upstream value"));
                    continue;
                }
            },
        };
        if got != want {
            bad.push(format!("{k} = {got}, want {want}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{} differ: {}", bad.len(), bad.join("; ")))
    }
}

/// With a TDX backend (`tdx=emulated`): KVM_CAP_VM_TYPES also has KVM_X86_TDX_VM (bit 5).
const TDX_DIFFERS: &[(&str, &str, &str)] = &[
    ("sys.cap.235", "ok 35", "KVM_X86_TDX_VM with a TDX backend"),
    ("vm.cap.235", "ok 35", "KVM_X86_TDX_VM with a TDX backend"),
];

/// Answers that depend on the boot, not the ABI (the TSC's calibrated rate).
const VOLATILE: &[&str] = &["vm.get_tsc_khz", "vcpu.get_tsc_khz"];

fn system_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, system)
}

fn memslots_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, memslots)
}

fn vm_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vm_misc)
}

fn irqchip_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, irqchip)
}

fn vcpu_ids_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vcpu_ids)
}

fn vcpu_state_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vcpu_state)
}

fn vcpu_run_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vcpu_run)
}

fn vcpu_irqchip_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vcpu_irqchip)
}

fn vcpu_caps_abi(ctx: &Ctx) -> Result<(), String> {
    matches_upstream(ctx, vcpu_caps)
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("hostile_system_ioctls_match_kvm_amd", Any, system_abi),
        ("hostile_memslots_match_kvm_amd", Any, memslots_abi),
        ("hostile_vm_ioctls_match_kvm_amd", Any, vm_abi),
        ("hostile_irqchip_ioctls_match_kvm_amd", Any, irqchip_abi),
        ("hostile_vcpu_ids_match_kvm_amd", Any, vcpu_ids_abi),
        ("hostile_vcpu_state_match_kvm_amd", Any, vcpu_state_abi),
        ("hostile_vcpu_run_match_kvm_amd", Any, vcpu_run_abi),
        ("hostile_vcpu_irqchip_match_kvm_amd", Any, vcpu_irqchip_abi),
        ("hostile_vcpu_event_caps_match_kvm_amd", Any, vcpu_caps_abi),
    ]
}
