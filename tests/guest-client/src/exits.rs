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
        ("exits_run_mmio_real_mode", Any, |_| mmio_real_mode()),
        ("exits_run_mmio_long_mode", Any, |_| mmio_long_mode()),
        ("exits_run_string_pio", Any, |_| string_pio()),
        ("exits_run_msr_user_exits_filter_gp", Any, |_| msr_exits()),
        ("exits_run_bad_msr_gp_to_guest_idt", Any, |_| bad_msr_gp()),
        ("exits_run_hypercall_exit", Any, |_| hypercall_exit()),
        ("exits_run_single_step", Any, |_| single_step()),
        ("exits_run_coalesced_rings", Any, |_| coalesced_rings()),
        ("exits_run_ioeventfd_fires", Any, |_| ioeventfd_fires()),
        ("exits_run_emulation_failure_bytes", Any, |_| {
            emulation_failure_bytes()
        }),
        ("exits_run_flags_no_guest_mode", Any, |_| {
            run_flags_no_guest_mode()
        }),
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
        // The flags accepted: ENABLE, SINGLESTEP, USE_SW_BP, USE_HW_BP, INJECT_DB, INJECT_BP,
        // BLOCKIRQ (upstream's KVM_GUESTDBG_VALID_MASK).
        eq(
            c(KVM_CAP_SET_GUEST_DEBUG2),
            0x1f_0003,
            "KVM_CAP_SET_GUEST_DEBUG2",
        )?;
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
    eq(set(1 | 0x2_0000), 0, "ENABLE|USE_HW_BP")?;
    eq(set(1 | 0x10_0000), 0, "ENABLE|BLOCKIRQ")?;
    // Unknown bits are accepted and ignored: 6.12 never checks KVM_GUESTDBG_VALID_MASK.
    for bit in [0x4u32, 0x8000_0000] {
        eq(set(1 | bit), 0, &format!("ENABLE|{bit:#x}"))?;
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

// ---- Guests that exit (needs the run loop: crate::run's real-mode Guest) ----

use crate::run::Guest;
use kvm_ioctls::{VcpuExit, VcpuFd};

const KVM_EXIT_HLT_: u32 = 5;
const KVM_EXIT_INTERNAL_ERROR: u32 = 17;

/// A second fd for a kvm-ioctls VM (for the raw ioctls of this file).
fn vm_dup(vm: &kvm_ioctls::VmFd) -> Result<OwnedFd, String> {
    // SAFETY: dup of an fd the VmFd keeps open.
    let fd = unsafe { libc::dup(vm.as_raw_fd()) };
    if fd < 0 {
        return Err("dup".into());
    }
    // SAFETY: a fresh fd, owned from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs once, mapping the error to a message.
fn step(v: &mut VcpuFd, n: u32) -> Result<VcpuExit<'_>, String> {
    v.run().map_err(|e| format!("run {n}: {e}"))
}

/// The raw kvm_run page of a vCPU (for fields kvm-ioctls does not decode).
fn run_bytes(v: &mut VcpuFd) -> &[u8] {
    let r = v.get_kvm_run();
    // SAFETY: kvm_run is plain data inside the vCPU mapping, 2352 bytes on x86_64.
    unsafe { std::slice::from_raw_parts((r as *const kvm_bindings::kvm_run).cast::<u8>(), 304) }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn expect_hlt(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::Hlt => Ok(()),
        e => Err(format!("run {n}: {e:?}, want HLT")),
    }
}

/// Real mode, RAM 0..0x8000, DS:0x9000.. unbacked: MOV stores/loads, MOVZX, an ALU op on
/// memory (read then write), a word store and REP STOSB, each an MMIO exit; the loaded
/// values land in RAM for the host to check.
const MMIO_GUEST: &[u8] = &[
    0xc6, 0x06, 0x00, 0x90, 0x42, // mov byte [0x9000], 0x42
    0x8a, 0x16, 0x00, 0x90, // mov dl, [0x9000]
    0x0f, 0xb6, 0x06, 0x01, 0x90, // movzx ax, byte [0x9001]
    0xa3, 0x04, 0x01, // mov [0x104], ax
    0x00, 0x16, 0x02, 0x90, // add [0x9002], dl
    0xc7, 0x06, 0x04, 0x90, 0x34, 0x12, // mov word [0x9004], 0x1234
    0xbf, 0x10, 0x90, // mov di, 0x9010
    0xb9, 0x02, 0x00, // mov cx, 2
    0xb0, 0x77, // mov al, 0x77
    0xf3, 0xaa, // rep stosb
    0x88, 0x16, 0x00, 0x01, // mov [0x100], dl
    0x89, 0x0e, 0x06, 0x01, // mov [0x106], cx
    0xf4, // hlt
];

fn mmio_real_mode() -> Result<(), String> {
    let g = Guest::new(MMIO_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::MmioWrite(0x9000, d) => eq(d, &[0x42][..], "MOV store")?,
        e => return Err(format!("run 1: {e:?}")),
    }
    match step(&mut v, 2)? {
        VcpuExit::MmioRead(0x9000, d) => {
            eq(d.len(), 1, "MOV load length")?;
            d[0] = 0x5a;
        }
        e => return Err(format!("run 2: {e:?}")),
    }
    match step(&mut v, 3)? {
        VcpuExit::MmioRead(0x9001, d) => {
            eq(d.len(), 1, "MOVZX load length")?;
            d[0] = 0x80;
        }
        e => return Err(format!("run 3: {e:?}")),
    }
    match step(&mut v, 4)? {
        VcpuExit::MmioRead(0x9002, d) => d[0] = 0x01,
        e => return Err(format!("run 4: {e:?}")),
    }
    match step(&mut v, 5)? {
        VcpuExit::MmioWrite(0x9002, d) => eq(d, &[0x5b][..], "ADD result (1 + 0x5a)")?,
        e => return Err(format!("run 5: {e:?}")),
    }
    match step(&mut v, 6)? {
        VcpuExit::MmioWrite(0x9004, d) => eq(d, &[0x34, 0x12][..], "word store")?,
        e => return Err(format!("run 6: {e:?}")),
    }
    for (n, a) in [(7, 0x9010u64), (8, 0x9011)] {
        match step(&mut v, n)? {
            VcpuExit::MmioWrite(x, d) if x == a => eq(d, &[0x77][..], "STOSB")?,
            e => return Err(format!("run {n}: {e:?}, want STOSB at {a:#x}")),
        }
    }
    expect_hlt(&mut v, 9)?;
    eq(g.ram.read(0x100), 0x5a, "DL from the MMIO read")?;
    eq(
        (g.ram.read(0x104), g.ram.read(0x105)),
        (0x80, 0),
        "MOVZX zero-extends",
    )?;
    eq(
        (g.ram.read(0x106), g.ram.read(0x107)),
        (0, 0),
        "REP STOSB left CX 0",
    )?;
    Ok(())
}

/// REP INSB into RAM, REP OUTSB from it.
const STRING_PIO_GUEST: &[u8] = &[
    0xbf, 0x00, 0x02, // mov di, 0x200
    0xb9, 0x03, 0x00, // mov cx, 3
    0xba, 0x80, 0x00, // mov dx, 0x80
    0xf3, 0x6c, // rep insb
    0xbe, 0x00, 0x02, // mov si, 0x200
    0xb9, 0x03, 0x00, // mov cx, 3
    0xf3, 0x6e, // rep outsb
    0x89, 0x0e, 0x00, 0x03, // mov [0x300], cx
    0x89, 0x3e, 0x02, 0x03, // mov [0x302], di
    0xf4, // hlt
];

fn string_pio() -> Result<(), String> {
    let g = Guest::new(STRING_PIO_GUEST, 0x8000)?;
    g.ram.write(0x300, &[0xff; 4]);
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::IoIn(0x80, d) => {
            eq(d.len(), 3, "one exit for the three elements (count 3)")?;
            d.copy_from_slice(&[1, 2, 3]);
        }
        e => return Err(format!("run 1: {e:?}")),
    }
    for (n, want) in [(2, 1u8), (3, 2), (4, 3)] {
        match step(&mut v, n)? {
            VcpuExit::IoOut(0x80, d) => eq(d, &[want][..], "OUTSB element")?,
            e => return Err(format!("run {n}: {e:?}")),
        }
    }
    expect_hlt(&mut v, 5)?;
    eq(
        (g.ram.read(0x200), g.ram.read(0x201), g.ram.read(0x202)),
        (1, 2, 3),
        "INSB data in RAM",
    )?;
    eq(
        (g.ram.read(0x300), g.ram.read(0x301)),
        (0, 0),
        "CX after REP OUTSB",
    )?;
    eq(
        (g.ram.read(0x302), g.ram.read(0x303)),
        (3, 2),
        "DI after REP INSB",
    )?;
    Ok(())
}

/// The real-mode #GP handler: IVT[13] -> 0000:0500, which does `out 0x99, 13; hlt`.
fn install_gp_handler(g: &Guest) {
    g.ram.write(13 * 4, &[0x00, 0x05, 0x00, 0x00]);
    g.ram.write(0x500, &[0xb0, 0x0d, 0xe6, 0x99, 0xf4]);
}

fn expect_gp_handler(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::IoOut(0x99, d) => eq(d, &[13][..], "the guest's #GP handler ran"),
        e => Err(format!("run {n}: {e:?}, want the #GP handler's OUT")),
    }
}

/// RDMSR of an unknown MSR (exit, data from userspace), then WRMSR of a filtered MSR (exit,
/// userspace refuses: #GP through the guest's IVT). PAT is one the backend intercepts; the
/// MSRs SVM passes through (FS/GS base, SYSENTER_*, ...) are covered by misc.rs.
const MSR_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x66, 0xb9, 0x78, 0x56, 0x34, 0x12, // mov ecx, 0x12345678
    0x0f, 0x32, // rdmsr
    0x66, 0xa3, 0x00, 0x01, // mov [0x100], eax
    0x66, 0x89, 0x16, 0x04, 0x01, // mov [0x104], edx
    0x66, 0xb9, 0x77, 0x02, 0x00, 0x00, // mov ecx, 0x277 (PAT)
    0x66, 0xb8, 0x06, 0x04, 0x07, 0x00, // mov eax, 0x00070406
    0x66, 0xba, 0x06, 0x04, 0x07, 0x00, // mov edx, 0x00070406
    0x0f, 0x30, // wrmsr
    0xf4, // hlt (not reached)
];

fn msr_exits() -> Result<(), String> {
    let g = Guest::new(MSR_GUEST, 0x8000)?;
    install_gp_handler(&g);
    let owned = vm_dup(&g.vm)?;
    eq(
        errno_of(enable_cap(&owned, KVM_CAP_X86_USER_SPACE_MSR, 0, 0b110)),
        0,
        "enable user-space MSR (UNKNOWN|FILTER)",
    )?;
    let deny = 0u64;
    eq(
        Filter::new(0)
            .range(0, FILTER_WRITE, 1, 0x277, &deny as *const u64 as u64)
            .set(&owned),
        0,
        "filter denying writes of PAT",
    )?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::X86Rdmsr(m) => {
            eq(m.index, 0x1234_5678, "RDMSR index")?;
            eq(m.reason.bits(), 2, "reason UNKNOWN")?;
            *m.data = 0x1122_3344_5566_7788;
        }
        e => return Err(format!("run 1: {e:?}")),
    }
    match step(&mut v, 2)? {
        VcpuExit::X86Wrmsr(m) => {
            eq(m.index, 0x277, "WRMSR index")?;
            eq(m.reason.bits(), 4, "reason FILTER")?;
            eq(m.data, 0x0007_0406_0007_0406, "WRMSR data (EDX:EAX)")?;
            *m.error = 1;
        }
        e => return Err(format!("run 2: {e:?}")),
    }
    expect_gp_handler(&mut v, 3)?;
    let got: Vec<u8> = (0x100..0x108).map(|i| g.ram.read(i)).collect();
    eq(
        got,
        0x1122_3344_5566_7788u64.to_le_bytes().to_vec(),
        "EDX:EAX from userspace",
    )?;
    Ok(())
}

/// Without user-space MSRs, RDMSR of an unknown MSR is #GP in the guest.
const BAD_MSR_GUEST: &[u8] = &[
    0xbc, 0x00, 0x70, // mov sp, 0x7000
    0x66, 0xb9, 0x78, 0x56, 0x34, 0x12, // mov ecx, 0x12345678
    0x0f, 0x32, // rdmsr
    0xf4, // hlt (not reached)
];

fn bad_msr_gp() -> Result<(), String> {
    let g = Guest::new(BAD_MSR_GUEST, 0x8000)?;
    install_gp_handler(&g);
    let mut v = g.vcpu(0)?;
    expect_gp_handler(&mut v, 1)
}

/// VMMCALL: KVM_HC_MAP_GPA_RANGE exits (with KVM_CAP_EXIT_HYPERCALL), an unknown number
/// returns -KVM_ENOSYS in the kernel.
const HYPERCALL_GUEST: &[u8] = &[
    0x66, 0xb8, 0x0c, 0x00, 0x00, 0x00, // mov eax, 12
    0x66, 0xbb, 0x00, 0x20, 0x00, 0x00, // mov ebx, 0x2000
    0x66, 0xb9, 0x03, 0x00, 0x00, 0x00, // mov ecx, 3
    0x66, 0xba, 0x07, 0x00, 0x00, 0x00, // mov edx, 7
    0x0f, 0x01, 0xd9, // vmmcall
    0x66, 0xa3, 0x00, 0x01, // mov [0x100], eax
    0x66, 0xb8, 0x55, 0x00, 0x00, 0x00, // mov eax, 0x55
    0x0f, 0x01, 0xd9, // vmmcall
    0x66, 0xa3, 0x04, 0x01, // mov [0x104], eax
    0xf4, // hlt
];

fn hypercall_exit() -> Result<(), String> {
    let g = Guest::new(HYPERCALL_GUEST, 0x8000)?;
    let owned = vm_dup(&g.vm)?;
    eq(
        errno_of(enable_cap(&owned, KVM_CAP_EXIT_HYPERCALL, 0, 1 << 12)),
        0,
        "enable exit hypercall",
    )?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::Hypercall(h) => {
            eq(h.nr, 12, "nr")?;
            eq(&h.args[..3], &[0x2000, 3, 7][..], "args")?;
            eq(h.longmode, 0, "not long mode")?;
            *h.ret = 0x1_0000_0077;
        }
        e => return Err(format!("run 1: {e:?}")),
    }
    expect_hlt(&mut v, 2)?;
    let word = |a: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)));
    eq(
        word(0x100),
        0x77,
        "RAX = ret (truncated outside 64-bit mode)",
    )?;
    eq(word(0x104), (-1000i32) as u32, "-KVM_ENOSYS")?;
    Ok(())
}

/// Single-stepping (kvm-ioctls' test_run_code expectations: exception 1, pc, DR6 low bits
/// 0x4ff0, DR7 0x400), then stepping off.
const STEP_GUEST: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x00, 0xd8, // add al, bl
    0x04, 0x30, // add al, '0'
    0xee, // out dx, al
    0xf4, // hlt
];

fn single_step() -> Result<(), String> {
    let g = Guest::new(STEP_GUEST, 0x8000)?;
    let mut v = g.vcpu(0)?;
    let mut dbg = kvm_bindings::kvm_guest_debug {
        control: 1 | 2,
        ..Default::default()
    };
    // The reset vector's JMP first, then the three instructions at 0xffff0000.
    let want = [0xffff_0000u64, 0xffff_0003, 0xffff_0005, 0xffff_0007];
    v.set_guest_debug(&dbg)
        .map_err(|e| format!("set_guest_debug: {e}"))?;
    for (n, pc) in want.iter().enumerate() {
        match step(&mut v, n as u32 + 1)? {
            VcpuExit::Debug(d) => {
                eq(d.exception, 1, "exception")?;
                eq(d.pc, *pc, "pc")?;
                // DR6.BS; the low 16 bits exactly as kvm-ioctls checks them, except at IP 0
                // (the first step lands at CS:0), where QEMU's breakpoint check also sets
                // B0-B3 for the disabled breakpoints DR0-3 = 0 match.
                check(d.dr6 & 0x4000 != 0, "DR6.BS")?;
                if n > 0 {
                    eq(d.dr6 & 0xffff, 0x4ff0, "DR6 low bits")?;
                }
                eq(d.dr7, 0x400, "DR7")?;
            }
            e => return Err(format!("step {n}: {e:?}")),
        }
    }
    dbg.control = 0;
    v.set_guest_debug(&dbg)
        .map_err(|e| format!("set_guest_debug off: {e}"))?;
    match step(&mut v, 10)? {
        VcpuExit::IoOut(0x3f8, _) => {}
        e => return Err(format!("after stepping: {e:?}")),
    }
    expect_hlt(&mut v, 11)
}

/// Coalesced MMIO and PIO: writes inside zones land in the ring (no exit) until the HLT; the
/// ring is read through both mmap forms (page 2 of the vCPU mapping and its own mapping).
const COALESCED_GUEST: &[u8] = &[
    0xc6, 0x06, 0x00, 0x90, 0x11, // mov byte [0x9000], 0x11
    0xc7, 0x06, 0x02, 0x90, 0x22, 0x33, // mov word [0x9002], 0x3322
    0xb0, 0x44, // mov al, 0x44
    0xe6, 0x2c, // out 0x2c, al
    0xc6, 0x06, 0x00, 0xa0, 0x55, // mov byte [0xa000], 0x55 (outside the zone: exit)
    0xf4, // hlt
];

fn coalesced_rings() -> Result<(), String> {
    let g = Guest::new(COALESCED_GUEST, 0x8000)?;
    let owned = vm_dup(&g.vm)?;
    eq(
        register_zone(&owned, &zone(0x9000, 0x100, 0)),
        0,
        "MMIO zone",
    )?;
    eq(register_zone(&owned, &zone(0x2c, 1, 1)), 0, "PIO zone")?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::MmioWrite(0xa000, d) => eq(d, &[0x55][..], "write outside the zone")?,
        e => return Err(format!("run 1: {e:?}")),
    }
    // SAFETY: maps page 2 of the vCPU fd (the ring), read-only use.
    let ring = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            v.as_raw_fd(),
            2 * 4096,
        )
    };
    if ring == libc::MAP_FAILED {
        return Err("mmap ring".into());
    }
    // SAFETY: the ring page just mapped, 4096 bytes.
    let r = unsafe { std::slice::from_raw_parts(ring.cast::<u8>(), 4096) };
    let (first, last) = (u32_at(r, 0), u32_at(r, 4));
    let res = (|| {
        eq((first, last), (0, 3), "ring first/last")?;
        let e = |i: usize| {
            let b = &r[8 + 24 * i..8 + 24 * (i + 1)];
            (
                u64_at(b, 0),
                u32_at(b, 8),
                u32_at(b, 12),
                b[16..24].to_vec(),
            )
        };
        eq(
            e(0),
            (0x9000, 1, 0, vec![0x11, 0, 0, 0, 0, 0, 0, 0]),
            "entry 0",
        )?;
        eq(
            e(1),
            (0x9002, 2, 0, vec![0x22, 0x33, 0, 0, 0, 0, 0, 0]),
            "entry 1",
        )?;
        eq(
            e(2),
            (0x2c, 1, 1, vec![0x44, 0, 0, 0, 0, 0, 0, 0]),
            "entry 2 (PIO)",
        )?;
        Ok::<(), String>(())
    })();
    // SAFETY: our mapping.
    unsafe { libc::munmap(ring, 4096) };
    res?;
    expect_hlt(&mut v, 2)
}

/// An ioeventfd on a port and one on MMIO with datamatch: matching writes signal the eventfd
/// (read back as the counter) without exits; a non-matching value exits.
const IOEVENTFD_GUEST: &[u8] = &[
    0xb0, 0x01, // mov al, 1
    0xe6, 0x60, // out 0x60, al
    0xe6, 0x60, // out 0x60, al
    0xc7, 0x06, 0x00, 0x90, 0xef, 0xbe, // mov word [0x9000], 0xbeef
    0xc7, 0x06, 0x00, 0x90, 0xad, 0xde, // mov word [0x9000], 0xdead (no match: exit)
    0xf4, // hlt
];

fn ioeventfd_fires() -> Result<(), String> {
    let g = Guest::new(IOEVENTFD_GUEST, 0x8000)?;
    let owned = vm_dup(&g.vm)?;
    let pe = eventfd();
    let me = eventfd();
    eq(
        ioeventfd(&owned, &ioevent(0, 0x60, 1, pe.as_raw_fd(), IOEVENTFD_PIO)),
        0,
        "PIO ioeventfd",
    )?;
    eq(
        ioeventfd(
            &owned,
            &ioevent(0xbeef, 0x9000, 2, me.as_raw_fd(), IOEVENTFD_DATAMATCH),
        ),
        0,
        "MMIO ioeventfd",
    )?;
    let mut v = g.vcpu(0)?;
    match step(&mut v, 1)? {
        VcpuExit::MmioWrite(0x9000, d) => eq(d, &[0xad, 0xde][..], "non-matching write")?,
        e => return Err(format!("run 1: {e:?}")),
    }
    let count = |fd: &OwnedFd| {
        let mut c = 0u64;
        // SAFETY: reads the 8-byte counter of our eventfd.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut c as *mut u64).cast(), 8) };
        if n == 8 {
            c
        } else {
            0
        }
    };
    eq(count(&pe), 2, "PIO eventfd counter")?;
    eq(count(&me), 1, "MMIO eventfd counter")?;
    expect_hlt(&mut v, 2)
}

/// An MMIO access by an instruction the emulator does not handle (FLD m32) ends in
/// KVM_EXIT_INTERNAL_ERROR / EMULATION with the instruction bytes.
const FLD_GUEST: &[u8] = &[
    0xd9, 0x06, 0x00, 0x90, // fld dword [0x9000]
    0xf4, // hlt
];

fn emulation_failure_bytes() -> Result<(), String> {
    let g = Guest::new(FLD_GUEST, 0x8000)?;
    let owned = vm_dup(&g.vm)?;
    eq(
        errno_of(enable_cap(&owned, KVM_CAP_EXIT_ON_EMULATION_FAILURE, 0, 1)),
        0,
        "enable exit on emulation failure",
    )?;
    let mut v = g.vcpu(0)?;
    match v.run() {
        Ok(VcpuExit::InternalError) => {}
        r => return Err(format!("run 1: {r:?}, want INTERNAL_ERROR")),
    }
    let b = run_bytes(&mut v);
    eq(u32_at(b, 8), KVM_EXIT_INTERNAL_ERROR, "exit reason")?;
    eq(u32_at(b, 32), 1, "suberror EMULATION")?;
    // KVM_CAP_INTERNAL_ERROR_DATA: upstream prepare_emulation_failure_exit's words: flags,
    // insn_size + 15 bytes (2 words), then SVM's exit info (svm_get_exit_info): exit code
    // (NPF), EXITINFO1 (the fault's error code), EXITINFO2 (the GPA), EXITINTINFO and its
    // error code (no event was being delivered: 0, 0).
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(
        kvm.check_extension_raw(40),
        1,
        "KVM_CAP_INTERNAL_ERROR_DATA",
    )?;
    eq(u32_at(b, 36), 8, "ndata")?;
    eq(u64_at(b, 40), 1, "flags = INSTRUCTION_BYTES")?;
    eq(
        u64_at(b, 40 + 3 * 8),
        0x400,
        "data[3]: exit code SVM_EXIT_NPF",
    )?;
    eq(
        u64_at(b, 40 + 5 * 8),
        0x9000,
        "data[5]: EXITINFO2 = the GPA",
    )?;
    eq(u64_at(b, 40 + 6 * 8), 0, "data[6]: EXITINTINFO")?;
    eq(u64_at(b, 40 + 7 * 8), 0, "data[7]: its error code")?;
    // insn_size is what the fetch got (upstream fetches up to 15 bytes or the page end).
    check((4..=15).contains(&b[48]), "insn_size 4..=15")?;
    eq(
        &b[49..53],
        &[0xd9, 0x06, 0x00, 0x90][..],
        "instruction bytes",
    )?;
    let _ = KVM_EXIT_HLT_;
    Ok(())
}

/// A long-mode guest entered directly with SET_SREGS (identity-mapped 2 MiB pages over the
/// first GiB; RAM is 2 MiB, so GPA 0x200000 is MMIO): 64-bit MOV store and load.
fn mmio_long_mode() -> Result<(), String> {
    use crate::run::Mem;
    use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let ram = Mem::new(0x20_0000)?;
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 (2 MiB pages, P|W|PS).
    ram.write(0x1000, &(0x2000u64 | 3).to_le_bytes());
    ram.write(0x2000, &(0x3000u64 | 3).to_le_bytes());
    for i in 0..512u64 {
        ram.write(0x3000 + 8 * i as usize, &((i << 21) | 0x83).to_le_bytes());
    }
    // GDT at 0x500: null, 64-bit code (0x08), data (0x10).
    ram.write(0x500, &0u64.to_le_bytes());
    ram.write(0x508, &0x0020_9a00_0000_0000u64.to_le_bytes());
    ram.write(0x510, &0x0000_9200_0000_0000u64.to_le_bytes());
    let code: &[u8] = &[
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, imm64
        0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, // mov [0x200000], rax
        0x48, 0x8b, 0x1c, 0x25, 0x08, 0x00, 0x20, 0x00, // mov rbx, [0x200008]
        0x48, 0x89, 0x1c, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], rbx
        0x48, 0x03, 0x1c, 0x25, 0x10, 0x00, 0x20, 0x00, // add rbx, [0x200010]
        0x48, 0x89, 0x1c, 0x25, 0x08, 0x50, 0x00, 0x00, // mov [0x5008], rbx
        0xf4, // hlt
    ];
    ram.write(0x4000, code);
    let r = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.len as u64,
        userspace_addr: ram.ptr as u64,
    };
    // SAFETY: `ram` outlives the VM (dropped after it at the end of this function).
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("memslot: {e}"))?;
    let mut v = vm.create_vcpu(0).map_err(|e| format!("vcpu: {e}"))?;
    // Long mode needs CPUID.LM in the vCPU's table (upstream kvm_valid_efer).
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("supported cpuid: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("set_cpuid2: {e}"))?;
    let mut s = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    let seg = |sel: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.cs = seg(0x08, 0xb, 1, 0);
    s.ds = seg(0x10, 0x3, 0, 1);
    s.es = s.ds;
    s.ss = s.ds;
    s.fs = s.ds;
    s.gs = s.ds;
    s.gdt.base = 0x500;
    s.gdt.limit = 0x17;
    s.cr3 = 0x1000;
    s.cr4 = 0x20; // PAE
    s.cr0 = 0x8000_0031; // PG | NE | ET | PE
    s.efer = 0x500; // LME | LMA
    v.set_sregs(&s).map_err(|e| format!("set_sregs: {e}"))?;
    let mut regs = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    regs.rip = 0x4000;
    regs.rflags = 2;
    regs.rsp = 0x8000;
    v.set_regs(&regs).map_err(|e| format!("set_regs: {e}"))?;
    match step(&mut v, 1)? {
        VcpuExit::MmioWrite(0x20_0000, d) => eq(
            d,
            &0x1122_3344_5566_7788u64.to_le_bytes()[..],
            "64-bit store",
        )?,
        e => return Err(format!("run 1: {e:?}")),
    }
    match step(&mut v, 2)? {
        VcpuExit::MmioRead(0x20_0008, d) => {
            eq(d.len(), 8, "64-bit load length")?;
            d.copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        }
        e => return Err(format!("run 2: {e:?}")),
    }
    match step(&mut v, 3)? {
        VcpuExit::MmioRead(0x20_0010, d) => d.copy_from_slice(&1u64.to_le_bytes()),
        e => return Err(format!("run 3: {e:?}")),
    }
    expect_hlt(&mut v, 4)?;
    let q = |a: usize| u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7].map(|i| ram.read(a + i)));
    eq(q(0x5000), 0x0102_0304_0506_0708, "RBX from MMIO")?;
    eq(q(0x5008), 0x0102_0304_0506_0709, "ADD with an MMIO source")?;
    let regs = v.get_regs().map_err(|e| format!("get_regs: {e}"))?;
    eq(regs.rip, 0x4000 + code.len() as u64, "RIP after HLT")?;
    drop(v);
    drop(vm);
    drop(ram);
    Ok(())
}

/// `KVM_CAP_X86_GUEST_MODE`: `KVM_RUN` rewrites `kvm_run.flags` on every return, and without
/// nested virtualization `KVM_RUN_X86_GUEST_MODE` (bit 2) is never set (nor SMM, bit 0): the
/// flags userspace left there are gone after an I/O exit, `immediate_exit`'s `EINTR` and HLT.
fn run_flags_no_guest_mode() -> Result<(), String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    eq(kvm.check_extension_raw(238), 1, "KVM_CAP_X86_GUEST_MODE")?;
    eq(kvm.check_extension_raw(1), 1, "KVM_CAP_HLT")?;
    let g = Guest::new(&[0xe6, 0x80, 0xf4], 0x8000)?; // out 0x80, al; hlt
    let mut v = g.vcpu(0)?;
    v.get_kvm_run().flags = 0xffff;
    match step(&mut v, 1)? {
        VcpuExit::IoOut(0x80, _) => {}
        e => return Err(format!("run 1: {e:?}, want OUT 0x80")),
    }
    eq(v.get_kvm_run().flags, 0, "flags after an I/O exit")?;
    {
        let r = v.get_kvm_run();
        r.flags = 0xffff;
        r.immediate_exit = 1;
    }
    match v.run() {
        Err(e) if e.errno() == libc::EINTR => {}
        r => return Err(format!("run 2 with immediate_exit: {r:?}, want EINTR")),
    }
    eq(v.get_kvm_run().flags, 0, "flags after immediate_exit")?;
    {
        let r = v.get_kvm_run();
        r.flags = 1 << 2;
        r.immediate_exit = 0;
    }
    expect_hlt(&mut v, 3)?;
    eq(v.get_kvm_run().flags, 0, "flags after HLT")?;
    Ok(())
}
