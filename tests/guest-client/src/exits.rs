// SPDX-License-Identifier: GPL-2.0-only
//! Userspace-exit ioctls (issue 11, `exits`): `KVM_X86_SET_MSR_FILTER`, `KVM_ENABLE_CAP` of
//! `KVM_CAP_X86_USER_SPACE_MSR` / `KVM_CAP_EXIT_HYPERCALL` / `KVM_CAP_EXIT_ON_EMULATION_FAILURE`,
//! `KVM_(UN)REGISTER_COALESCED_MMIO`, `KVM_IOEVENTFD`, `KVM_SET_GUEST_DEBUG`, their caps, with
//! upstream 6.12's errnos and hostile input (bad pointers, reserved bits, wrong fd kinds,
//! overflowing sizes, racing threads).

use crate::*;

const KVM_CHECK_EXTENSION: u64 = 0xae03;
const KVM_CREATE_VCPU: u64 = 0xae41;
const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_X86_SET_MSR_FILTER: u64 = 0x4188_aec6;
const KVM_REGISTER_COALESCED_MMIO: u64 = 0x4010_ae67;
const KVM_UNREGISTER_COALESCED_MMIO: u64 = 0x4010_ae68;
const KVM_IOEVENTFD: u64 = 0x4040_ae79;
const KVM_SET_GUEST_DEBUG: u64 = 0x4048_ae9b;

const KVM_CAP_COALESCED_MMIO: u64 = 15;
const KVM_CAP_SET_GUEST_DEBUG: u64 = 23;
const KVM_CAP_IOEVENTFD: u64 = 36;
const KVM_CAP_IOEVENTFD_ANY_LENGTH: u64 = 122;
const KVM_CAP_COALESCED_PIO: u64 = 162;
const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
const KVM_CAP_X86_MSR_FILTER: u64 = 189;
const KVM_CAP_SET_GUEST_DEBUG2: u64 = 195;
const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
const KVM_CAP_EXIT_ON_EMULATION_FAILURE: u32 = 204;

const EBADF: i32 = libc::EBADF;
const EEXIST: i32 = libc::EEXIST;
const ENOENT: i32 = libc::ENOENT;
const ENOSPC: i32 = libc::ENOSPC;

const FILTER_READ: u32 = 1;
const FILTER_WRITE: u32 = 2;
const DEFAULT_DENY: u32 = 1;

const IOEVENTFD_DATAMATCH: u32 = 1;
const IOEVENTFD_PIO: u32 = 2;
const IOEVENTFD_DEASSIGN: u32 = 4;

/// Addresses no ioctl may read: NULL, a kernel address, a non-canonical one, the last page.
fn bad_pointers() -> [u64; 4] {
    [
        0,
        0xffff_8000_0000_0000,
        0x8000_0000_0000_0000,
        u64::MAX - 7,
    ]
}

fn new_vm() -> Result<OwnedFd, String> {
    create_vm(&dev(), 0).map_err(|e| format!("KVM_CREATE_VM: errno {e}"))
}

fn errno_of(r: Result<i64, i32>) -> i32 {
    r.err().unwrap_or(0)
}

fn enable_cap(fd: &OwnedFd, cap: u32, flags: u32, arg0: u64) -> Result<i64, i32> {
    let mut c = [0u8; 104];
    c[0..4].copy_from_slice(&cap.to_ne_bytes());
    c[4..8].copy_from_slice(&flags.to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    ioctl(fd.as_raw_fd(), KVM_ENABLE_CAP, c.as_ptr() as u64)
}

/// `struct kvm_msr_filter` (0x188 bytes).
#[derive(Clone)]
struct Filter([u8; 0x188]);

impl Filter {
    fn new(flags: u32) -> Self {
        let mut b = [0u8; 0x188];
        b[0..4].copy_from_slice(&flags.to_ne_bytes());
        Filter(b)
    }

    fn range(mut self, i: usize, flags: u32, nmsrs: u32, base: u32, bitmap: u64) -> Self {
        let at = 8 + 24 * i;
        self.0[at..at + 4].copy_from_slice(&flags.to_ne_bytes());
        self.0[at + 4..at + 8].copy_from_slice(&nmsrs.to_ne_bytes());
        self.0[at + 8..at + 12].copy_from_slice(&base.to_ne_bytes());
        self.0[at + 16..at + 24].copy_from_slice(&bitmap.to_ne_bytes());
        self
    }

    fn set(&self, vm: &OwnedFd) -> i32 {
        errno_of(ioctl(
            vm.as_raw_fd(),
            KVM_X86_SET_MSR_FILTER,
            self.0.as_ptr() as u64,
        ))
    }
}

fn zone(addr: u64, size: u32, pio: u32) -> [u8; 16] {
    let mut z = [0u8; 16];
    z[0..8].copy_from_slice(&addr.to_ne_bytes());
    z[8..12].copy_from_slice(&size.to_ne_bytes());
    z[12..16].copy_from_slice(&pio.to_ne_bytes());
    z
}

fn register_zone(vm: &OwnedFd, z: &[u8; 16]) -> i32 {
    errno_of(ioctl(
        vm.as_raw_fd(),
        KVM_REGISTER_COALESCED_MMIO,
        z.as_ptr() as u64,
    ))
}

fn unregister_zone(vm: &OwnedFd, z: &[u8; 16]) -> i32 {
    errno_of(ioctl(
        vm.as_raw_fd(),
        KVM_UNREGISTER_COALESCED_MMIO,
        z.as_ptr() as u64,
    ))
}

fn eventfd() -> OwnedFd {
    // SAFETY: creates a new eventfd; checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh fd, owned from now on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ioevent(datamatch: u64, addr: u64, len: u32, fd: i32, flags: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&datamatch.to_ne_bytes());
    b[8..16].copy_from_slice(&addr.to_ne_bytes());
    b[16..20].copy_from_slice(&len.to_ne_bytes());
    b[20..24].copy_from_slice(&fd.to_ne_bytes());
    b[24..28].copy_from_slice(&flags.to_ne_bytes());
    b
}

fn ioeventfd(vm: &OwnedFd, b: &[u8; 64]) -> i32 {
    errno_of(ioctl(vm.as_raw_fd(), KVM_IOEVENTFD, b.as_ptr() as u64))
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("exits_caps", Any, caps),
        ("exits_msr_filter_rules", Any, msr_filter_rules),
        ("exits_msr_filter_hostile", Any, msr_filter_hostile),
        ("exits_enable_caps", Any, enable_caps),
        ("exits_coalesced_zones", Any, coalesced_zones),
        ("exits_coalesced_hostile", Any, coalesced_hostile),
        ("exits_ioeventfd_assign", Any, ioeventfd_assign),
        ("exits_ioeventfd_hostile", Any, ioeventfd_hostile),
        ("exits_ioeventfd_race", Any, ioeventfd_race),
        ("exits_guest_debug_ioctl", Any, guest_debug_ioctl),
    ]
}

fn caps(_: &Ctx) -> Result<(), String> {
    let kvm = dev();
    let vm = new_vm()?;
    for fd in [kvm.as_raw_fd(), vm.as_raw_fd()] {
        let c = |cap| ioctl(fd, KVM_CHECK_EXTENSION, cap).unwrap_or(-1);
        eq(
            c(KVM_CAP_COALESCED_MMIO),
            2,
            "KVM_CAP_COALESCED_MMIO (ring page offset)",
        )?;
        eq(c(KVM_CAP_COALESCED_PIO), 1, "KVM_CAP_COALESCED_PIO")?;
        eq(c(KVM_CAP_IOEVENTFD), 1, "KVM_CAP_IOEVENTFD")?;
        eq(
            c(KVM_CAP_IOEVENTFD_ANY_LENGTH),
            1,
            "KVM_CAP_IOEVENTFD_ANY_LENGTH",
        )?;
        eq(c(KVM_CAP_X86_MSR_FILTER), 1, "KVM_CAP_X86_MSR_FILTER")?;
        eq(
            c(KVM_CAP_X86_USER_SPACE_MSR as u64),
            1,
            "KVM_CAP_X86_USER_SPACE_MSR",
        )?;
        eq(
            c(KVM_CAP_EXIT_HYPERCALL as u64),
            1 << 12,
            "KVM_CAP_EXIT_HYPERCALL",
        )?;
        eq(
            c(KVM_CAP_EXIT_ON_EMULATION_FAILURE as u64),
            1,
            "KVM_CAP_EXIT_ON_EMULATION_FAILURE",
        )?;
        eq(c(KVM_CAP_SET_GUEST_DEBUG), 1, "KVM_CAP_SET_GUEST_DEBUG")?;
        // Hardware breakpoints and injection are not implemented: no DEBUG2 mask.
        eq(c(KVM_CAP_SET_GUEST_DEBUG2), 0, "KVM_CAP_SET_GUEST_DEBUG2")?;
    }
    Ok(())
}

fn msr_filter_rules(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let bitmap = [0xffu8; 0x600];
    let bm = bitmap.as_ptr() as u64;
    // Default allow with no ranges: accepted (filtering off); default deny with none: EINVAL.
    eq(Filter::new(0).set(&vm), 0, "empty allow filter")?;
    eq(
        Filter::new(DEFAULT_DENY).set(&vm),
        EINVAL,
        "empty deny filter",
    )?;
    // Unknown filter flags.
    eq(Filter::new(2).set(&vm), EINVAL, "filter flags bit 1")?;
    eq(
        Filter::new(u32::MAX).set(&vm),
        EINVAL,
        "filter flags all ones",
    )?;
    // Ranges: empty ones are skipped whatever their flags; used ones need READ and/or WRITE.
    eq(
        Filter::new(0).range(0, 0xff, 0, 0, 0).set(&vm),
        0,
        "empty range, junk flags",
    )?;
    eq(
        Filter::new(0).range(0, 0, 1, 0, bm).set(&vm),
        EINVAL,
        "range without flags",
    )?;
    eq(
        Filter::new(0).range(0, 4, 1, 0, bm).set(&vm),
        EINVAL,
        "range flag bit 2",
    )?;
    // Bitmap size: 0x3000 MSRs (0x600 bytes) is the most.
    eq(
        Filter::new(DEFAULT_DENY)
            .range(0, FILTER_READ, 0x3000, 0, bm)
            .set(&vm),
        0,
        "0x3000 MSRs",
    )?;
    eq(
        Filter::new(0).range(0, FILTER_READ, 0x3001, 0, bm).set(&vm),
        EINVAL,
        "0x3001 MSRs",
    )?;
    eq(
        Filter::new(0)
            .range(0, FILTER_READ, u32::MAX, 0, bm)
            .set(&vm),
        EINVAL,
        "u32::MAX MSRs",
    )?;
    // All 16 ranges, read and write, wrapping base: accepted.
    let mut f = Filter::new(DEFAULT_DENY);
    for i in 0..16 {
        f = f.range(
            i,
            FILTER_READ | FILTER_WRITE,
            64,
            0xffff_ffc0 + i as u32,
            bm,
        );
    }
    eq(f.set(&vm), 0, "16 ranges")?;
    // kvm-ioctls' unchecked test: a 1-byte bitmap on the stack (KVM copies 8 bytes).
    let one = 1u64;
    eq(
        Filter::new(DEFAULT_DENY)
            .range(
                0,
                FILTER_READ | FILTER_WRITE,
                1,
                0x10,
                &one as *const u64 as u64,
            )
            .set(&vm),
        0,
        "one MSR allowed",
    )?;
    Ok(())
}

fn msr_filter_hostile(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let f = Filter::new(0);
    // Bad structure pointers.
    for p in bad_pointers() {
        eq(
            errno_of(ioctl(vm.as_raw_fd(), KVM_X86_SET_MSR_FILTER, p)),
            EFAULT,
            &format!("filter at {p:#x}"),
        )?;
    }
    // Bad bitmap pointers (after validation: a bad range pointer is EFAULT, an invalid range
    // before it EINVAL).
    for p in bad_pointers() {
        eq(
            Filter::new(0).range(3, FILTER_WRITE, 8, 0, p).set(&vm),
            EFAULT,
            &format!("bitmap at {p:#x}"),
        )?;
    }
    eq(
        Filter::new(0)
            .range(0, 8, 8, 0, 0)
            .range(1, FILTER_READ, 8, 0, 0)
            .set(&vm),
        EINVAL,
        "invalid range before a bad pointer",
    )?;
    // Wrong fd kinds: /dev/kvm (EINVAL, unknown system ioctl), a vCPU fd (EINVAL), an eventfd.
    let kvm = dev();
    eq(
        errno_of(ioctl(
            kvm.as_raw_fd(),
            KVM_X86_SET_MSR_FILTER,
            f.0.as_ptr() as u64,
        )),
        EINVAL,
        "on /dev/kvm",
    )?;
    let vcpu = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0).map_err(|e| format!("vcpu {e}"))?;
    // SAFETY: a fresh fd from KVM_CREATE_VCPU.
    let vcpu = unsafe { OwnedFd::from_raw_fd(vcpu as i32) };
    eq(
        errno_of(ioctl(
            vcpu.as_raw_fd(),
            KVM_X86_SET_MSR_FILTER,
            f.0.as_ptr() as u64,
        )),
        EINVAL,
        "on a vCPU fd",
    )?;
    let e = eventfd();
    eq(
        errno_of(ioctl(
            e.as_raw_fd(),
            KVM_X86_SET_MSR_FILTER,
            f.0.as_ptr() as u64,
        )),
        ENOTTY,
        "on an eventfd",
    )?;
    // Filters may be replaced after vCPUs exist, and again.
    eq(f.set(&vm), 0, "filter with a vCPU")?;
    eq(
        Filter::new(0)
            .range(0, FILTER_READ, 1, 0, &0u64 as *const u64 as u64)
            .set(&vm),
        0,
        "again",
    )?;
    Ok(())
}

fn enable_caps(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let en = |cap, flags, a| errno_of(enable_cap(&vm, cap, flags, a));
    // USER_SPACE_MSR: any subset of INVAL|UNKNOWN|FILTER.
    for m in 0..8 {
        eq(
            en(KVM_CAP_X86_USER_SPACE_MSR, 0, m),
            0,
            &format!("user-space MSR mask {m}"),
        )?;
    }
    eq(
        en(KVM_CAP_X86_USER_SPACE_MSR, 0, 8),
        EINVAL,
        "user-space MSR bit 3",
    )?;
    eq(
        en(KVM_CAP_X86_USER_SPACE_MSR, 0, 1 << 63),
        EINVAL,
        "user-space MSR bit 63",
    )?;
    eq(
        en(KVM_CAP_X86_USER_SPACE_MSR, 1, 1),
        EINVAL,
        "user-space MSR with flags",
    )?;
    // EXIT_HYPERCALL: only KVM_HC_MAP_GPA_RANGE (bit 12).
    eq(
        en(KVM_CAP_EXIT_HYPERCALL, 0, 1 << 12),
        0,
        "exit hypercall MAP_GPA_RANGE",
    )?;
    eq(en(KVM_CAP_EXIT_HYPERCALL, 0, 0), 0, "exit hypercall none")?;
    eq(
        en(KVM_CAP_EXIT_HYPERCALL, 0, 1 << 11),
        EINVAL,
        "exit hypercall bit 11",
    )?;
    eq(
        en(KVM_CAP_EXIT_HYPERCALL, 0, u64::MAX),
        EINVAL,
        "exit hypercall all",
    )?;
    // EXIT_ON_EMULATION_FAILURE: 0 or 1.
    eq(
        en(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 0, 1),
        0,
        "exit on emulation failure 1",
    )?;
    eq(
        en(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 0, 0),
        0,
        "exit on emulation failure 0",
    )?;
    eq(
        en(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 0, 2),
        EINVAL,
        "exit on emulation failure 2",
    )?;
    eq(
        en(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 2, 1),
        EINVAL,
        "with flags",
    )?;
    // Bad pointer for the cap structure.
    for p in bad_pointers() {
        eq(
            errno_of(ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP, p)),
            EFAULT,
            &format!("enable_cap at {p:#x}"),
        )?;
    }
    Ok(())
}

fn coalesced_zones(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    eq(
        register_zone(&vm, &zone(0x1_0000_0000, 0x1000, 0)),
        0,
        "MMIO zone",
    )?;
    eq(register_zone(&vm, &zone(0x80, 1, 1)), 0, "PIO zone")?;
    // Overlapping and zero-sized zones are accepted, as upstream.
    eq(
        register_zone(&vm, &zone(0x1_0000_0800, 0x1000, 0)),
        0,
        "overlapping zone",
    )?;
    eq(register_zone(&vm, &zone(0x2000, 0, 0)), 0, "empty zone")?;
    // Unregister: 0 whether or not anything matched.
    eq(
        unregister_zone(&vm, &zone(0x1_0000_0000, 0x1000, 0)),
        0,
        "unregister MMIO",
    )?;
    eq(
        unregister_zone(&vm, &zone(0x5000, 0x10, 0)),
        0,
        "unregister nothing",
    )?;
    eq(unregister_zone(&vm, &zone(0x80, 1, 1)), 0, "unregister PIO")?;
    // 1000 devices per bus (NR_IOBUS_DEVS): the bus already holds 2 MMIO zones.
    for i in 0..998u64 {
        let r = register_zone(&vm, &zone(0x10_0000 + i * 0x10, 0x10, 0));
        eq(r, 0, &format!("zone {i}"))?;
    }
    eq(
        register_zone(&vm, &zone(0x20_0000, 0x10, 0)),
        ENOSPC,
        "zone 1001",
    )?;
    // The PIO bus is separate.
    eq(
        register_zone(&vm, &zone(0x81, 1, 1)),
        0,
        "PIO zone with a full MMIO bus",
    )?;
    // Freeing one makes room again.
    eq(
        unregister_zone(&vm, &zone(0x10_0000, 0x10, 0)),
        0,
        "free one",
    )?;
    eq(register_zone(&vm, &zone(0x20_0000, 0x10, 0)), 0, "reuse")?;
    Ok(())
}

fn coalesced_hostile(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    for pio in [2, 3, u32::MAX] {
        eq(
            register_zone(&vm, &zone(0, 1, pio)),
            EINVAL,
            &format!("register pio={pio}"),
        )?;
        eq(
            unregister_zone(&vm, &zone(0, 1, pio)),
            EINVAL,
            &format!("unregister pio={pio}"),
        )?;
    }
    for p in bad_pointers() {
        for cmd in [KVM_REGISTER_COALESCED_MMIO, KVM_UNREGISTER_COALESCED_MMIO] {
            eq(
                errno_of(ioctl(vm.as_raw_fd(), cmd, p)),
                EFAULT,
                &format!("zone at {p:#x}"),
            )?;
        }
    }
    // Wrapping and huge zones are accepted (upstream checks only `pio`); a write can never be
    // inside a wrapping one.
    eq(
        register_zone(&vm, &zone(u64::MAX, u32::MAX, 0)),
        0,
        "wrapping zone",
    )?;
    let kvm = dev();
    let z = zone(0, 1, 0);
    eq(
        errno_of(ioctl(
            kvm.as_raw_fd(),
            KVM_REGISTER_COALESCED_MMIO,
            z.as_ptr() as u64,
        )),
        EINVAL,
        "on /dev/kvm",
    )?;
    let e = eventfd();
    eq(
        errno_of(ioctl(
            e.as_raw_fd(),
            KVM_REGISTER_COALESCED_MMIO,
            z.as_ptr() as u64,
        )),
        ENOTTY,
        "on an eventfd",
    )?;
    Ok(())
}

fn ioeventfd_assign(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let e = eventfd();
    let fd = e.as_raw_fd();
    // PIO and MMIO, datamatch of every size, wildcard, any length.
    for (i, len) in [1u32, 2, 4, 8].into_iter().enumerate() {
        let a = 0x100 + i as u64 * 0x10;
        eq(
            ioeventfd(
                &vm,
                &ioevent(0x42, a, len, fd, IOEVENTFD_DATAMATCH | IOEVENTFD_PIO),
            ),
            0,
            &format!("PIO datamatch {len}"),
        )?;
        eq(
            ioeventfd(
                &vm,
                &ioevent(0x42, 0xd000_0000 + a, len, fd, IOEVENTFD_DATAMATCH),
            ),
            0,
            &format!("MMIO datamatch {len}"),
        )?;
    }
    eq(
        ioeventfd(&vm, &ioevent(0, 0x200, 4, fd, IOEVENTFD_PIO)),
        0,
        "PIO wildcard",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0xe000_0000, 0, fd, 0)),
        0,
        "MMIO any length",
    )?;
    // Collisions: same wildcard again, a length-0 one over an existing address, equal values.
    eq(
        ioeventfd(&vm, &ioevent(0, 0x200, 4, fd, IOEVENTFD_PIO)),
        EEXIST,
        "same wildcard",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x200, 0, fd, IOEVENTFD_PIO)),
        EEXIST,
        "length 0 over it",
    )?;
    eq(
        ioeventfd(
            &vm,
            &ioevent(0x42, 0x100, 1, fd, IOEVENTFD_DATAMATCH | IOEVENTFD_PIO),
        ),
        EEXIST,
        "same datamatch",
    )?;
    eq(
        ioeventfd(
            &vm,
            &ioevent(0x43, 0x100, 1, fd, IOEVENTFD_DATAMATCH | IOEVENTFD_PIO),
        ),
        0,
        "other value",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x200, 4, fd, 0)),
        0,
        "same address, MMIO bus",
    )?;
    // Deassign needs the same fd, address, length, kind and value.
    eq(
        ioeventfd(
            &vm,
            &ioevent(
                0x44,
                0x100,
                1,
                fd,
                IOEVENTFD_DATAMATCH | IOEVENTFD_PIO | IOEVENTFD_DEASSIGN,
            ),
        ),
        ENOENT,
        "deassign other value",
    )?;
    eq(
        ioeventfd(
            &vm,
            &ioevent(
                0x43,
                0x100,
                2,
                fd,
                IOEVENTFD_DATAMATCH | IOEVENTFD_PIO | IOEVENTFD_DEASSIGN,
            ),
        ),
        ENOENT,
        "deassign other length",
    )?;
    let e2 = eventfd();
    eq(
        ioeventfd(
            &vm,
            &ioevent(
                0x43,
                0x100,
                1,
                e2.as_raw_fd(),
                IOEVENTFD_DATAMATCH | IOEVENTFD_PIO | IOEVENTFD_DEASSIGN,
            ),
        ),
        ENOENT,
        "deassign other eventfd",
    )?;
    eq(
        ioeventfd(
            &vm,
            &ioevent(
                0x43,
                0x100,
                1,
                fd,
                IOEVENTFD_DATAMATCH | IOEVENTFD_PIO | IOEVENTFD_DEASSIGN,
            ),
        ),
        0,
        "deassign",
    )?;
    eq(
        ioeventfd(
            &vm,
            &ioevent(
                0x43,
                0x100,
                1,
                fd,
                IOEVENTFD_DATAMATCH | IOEVENTFD_PIO | IOEVENTFD_DEASSIGN,
            ),
        ),
        ENOENT,
        "deassign twice",
    )?;
    // A dup of the same eventfd is the same eventfd.
    // SAFETY: dup of our own fd.
    let d = unsafe { libc::dup(fd) };
    eq(
        ioeventfd(
            &vm,
            &ioevent(0, 0x200, 4, d, IOEVENTFD_PIO | IOEVENTFD_DEASSIGN),
        ),
        0,
        "deassign through a dup",
    )?;
    // SAFETY: our own dup.
    unsafe { libc::close(d) };
    // Closing the eventfd does not remove the ioeventfd (KVM holds its own reference); the VM's
    // teardown drops it.
    drop(e);
    Ok(())
}

fn ioeventfd_hostile(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let e = eventfd();
    let fd = e.as_raw_fd();
    for len in [3u32, 5, 16, u32::MAX] {
        eq(
            ioeventfd(&vm, &ioevent(0, 0x1000, len, fd, 0)),
            EINVAL,
            &format!("len {len}"),
        )?;
    }
    eq(
        ioeventfd(&vm, &ioevent(0, u64::MAX - 3, 8, fd, 0)),
        EINVAL,
        "wrapping address",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, fd, 1 << 4)),
        EINVAL,
        "flag bit 4",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, fd, 1 << 31)),
        EINVAL,
        "flag bit 31",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(1, 0x1000, 0, fd, IOEVENTFD_DATAMATCH)),
        EINVAL,
        "length 0 with datamatch",
    )?;
    // Validation comes before the fd lookup; then bad fds: EBADF, a non-eventfd: EINVAL.
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 3, -1, 0)),
        EINVAL,
        "bad len, bad fd",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, -1, 0)),
        EBADF,
        "fd -1",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, 100_000, 0)),
        EBADF,
        "fd 100000",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, vm.as_raw_fd(), 0)),
        EINVAL,
        "VM fd as eventfd",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, -1, IOEVENTFD_DEASSIGN)),
        EBADF,
        "deassign fd -1",
    )?;
    eq(
        ioeventfd(&vm, &ioevent(0, 0x1000, 4, fd, IOEVENTFD_DEASSIGN)),
        ENOENT,
        "deassign unknown",
    )?;
    for p in bad_pointers() {
        eq(
            errno_of(ioctl(vm.as_raw_fd(), KVM_IOEVENTFD, p)),
            EFAULT,
            &format!("at {p:#x}"),
        )?;
    }
    let b = ioevent(0, 0x1000, 4, fd, 0);
    let kvm = dev();
    eq(
        errno_of(ioctl(kvm.as_raw_fd(), KVM_IOEVENTFD, b.as_ptr() as u64)),
        EINVAL,
        "on /dev/kvm",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_IOEVENTFD, b.as_ptr() as u64)),
        ENOTTY,
        "on the eventfd",
    )?;
    Ok(())
}

/// Threads assign and deassign ioeventfds and zones on one VM while the main thread closes
/// the VM fd: every ioctl ends in 0, EEXIST, ENOENT or EBADF, never anything else.
fn ioeventfd_race(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let raw = vm.as_raw_fd();
    let e = eventfd();
    let efd = e.as_raw_fd();
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..2000u64 {
                    let a = 0x1000 + (i % 8) * 8 + t;
                    let flags = if i % 2 == 0 { 0 } else { IOEVENTFD_DEASSIGN };
                    let b = ioevent(0, a, 1, efd, flags);
                    match errno_of(ioctl(raw, KVM_IOEVENTFD, b.as_ptr() as u64)) {
                        0 | EEXIST | ENOENT => {}
                        EBADF => return Ok(()),
                        x => return Err(format!("ioeventfd race: errno {x}")),
                    }
                    let z = zone(a, 8, (i % 2) as u32);
                    let cmd = if i % 3 == 0 {
                        KVM_UNREGISTER_COALESCED_MMIO
                    } else {
                        KVM_REGISTER_COALESCED_MMIO
                    };
                    match errno_of(ioctl(raw, cmd, z.as_ptr() as u64)) {
                        0 | ENOSPC => {}
                        EBADF => return Ok(()),
                        x => return Err(format!("zone race: errno {x}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(vm);
    for w in workers {
        w.join().map_err(|_| "worker panicked".to_string())??;
    }
    drop(e);
    Ok(())
}

fn guest_debug_ioctl(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let vcpu = ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0).map_err(|e| format!("vcpu {e}"))?;
    // SAFETY: a fresh fd from KVM_CREATE_VCPU.
    let vcpu = unsafe { OwnedFd::from_raw_fd(vcpu as i32) };
    let set = |control: u32| {
        let mut b = [0u8; 72];
        b[0..4].copy_from_slice(&control.to_ne_bytes());
        errno_of(ioctl(
            vcpu.as_raw_fd(),
            KVM_SET_GUEST_DEBUG,
            b.as_ptr() as u64,
        ))
    };
    eq(set(1 | 2), 0, "ENABLE|SINGLESTEP")?;
    eq(set(1 | 0x1_0000), 0, "ENABLE|USE_SW_BP")?;
    eq(set(2), 0, "SINGLESTEP without ENABLE (ignored)")?;
    eq(set(0), 0, "off")?;
    // Not implemented: refused rather than ignored.
    for bit in [0x2_0000u32, 0x4_0000, 0x8_0000, 0x10_0000] {
        eq(set(1 | bit), EINVAL, &format!("ENABLE|{bit:#x}"))?;
    }
    for p in bad_pointers() {
        eq(
            errno_of(ioctl(vcpu.as_raw_fd(), KVM_SET_GUEST_DEBUG, p)),
            EFAULT,
            &format!("at {p:#x}"),
        )?;
    }
    let b = [0u8; 72];
    eq(
        errno_of(ioctl(
            vm.as_raw_fd(),
            KVM_SET_GUEST_DEBUG,
            b.as_ptr() as u64,
        )),
        ENOTTY,
        "on the VM fd",
    )?;
    eq(
        errno_of(ioctl(
            dev().as_raw_fd(),
            KVM_SET_GUEST_DEBUG,
            b.as_ptr() as u64,
        )),
        EINVAL,
        "on /dev/kvm",
    )?;
    Ok(())
}
