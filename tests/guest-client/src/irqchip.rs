// SPDX-License-Identifier: GPL-2.0-only
//! The VM-level irqchip (issue 12, `irqroute`): `KVM_CREATE_IRQCHIP`,
//! `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`, `KVM_GET/SET_IRQCHIP`, `KVM_IRQ_LINE(_STATUS)`,
//! `KVM_SET_GSI_ROUTING`, `KVM_SIGNAL_MSI`, `KVM_IRQFD` (+ resample), the PIT ioctls, with
//! upstream 6.12's errnos and hostile input.

use crate::*;

pub(crate) const KVM_CREATE_VCPU: u64 = 0xae41;
pub(crate) const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
pub(crate) const KVM_CREATE_IRQCHIP: u64 = 0xae60;
const KVM_IRQ_LINE: u64 = 0x4008_ae61;
pub(crate) const KVM_GET_IRQCHIP: u64 = 0xc208_ae62;
pub(crate) const KVM_SET_IRQCHIP: u64 = 0x8208_ae63;
pub(crate) const KVM_IRQ_LINE_STATUS: u64 = 0xc008_ae67;
pub(crate) const KVM_SET_GSI_ROUTING: u64 = 0x4008_ae6a;
const KVM_IRQFD: u64 = 0x4020_ae76;
const KVM_CREATE_PIT2: u64 = 0x4040_ae77;
const KVM_GET_PIT2: u64 = 0x8070_ae9f;
const KVM_SET_PIT2: u64 = 0x4070_aea0;
pub(crate) const KVM_SIGNAL_MSI: u64 = 0x4020_aea5;
const KVM_REINJECT_CONTROL: u64 = 0xae71;

pub(crate) const KVM_CAP_SPLIT_IRQCHIP: u32 = 121;

const EEXIST: i32 = libc::EEXIST;
const ENXIO: i32 = libc::ENXIO;
const EBADF: i32 = libc::EBADF;
const EBUSY: i32 = libc::EBUSY;
const ENOENT: i32 = libc::ENOENT;

fn new_vm() -> Result<OwnedFd, String> {
    create_vm(&dev(), 0).map_err(|e| format!("KVM_CREATE_VM: errno {e}"))
}

fn errno_of(r: Result<i64, i32>) -> i32 {
    r.err().unwrap_or(0)
}

fn create_irqchip(vm: &OwnedFd) -> Result<i64, i32> {
    ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, 0)
}

fn enable_split(vm: &OwnedFd, pins: u64) -> Result<i64, i32> {
    let mut cap = [0u8; 104];
    cap[..4].copy_from_slice(&KVM_CAP_SPLIT_IRQCHIP.to_le_bytes());
    cap[8..16].copy_from_slice(&pins.to_le_bytes());
    ioctl(vm.as_raw_fd(), KVM_ENABLE_CAP, cap.as_ptr() as u64)
}

fn create_vcpu(vm: &OwnedFd, id: u64) -> Result<OwnedFd, String> {
    ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, id)
        .map(|fd| {
            // SAFETY: a fresh vCPU fd, owned from now on.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        })
        .map_err(|e| format!("KVM_CREATE_VCPU: errno {e}"))
}

/// The irqchip capabilities, on `/dev/kvm` and on a VM fd, with upstream x86's values.
fn caps(_: &Ctx) -> Result<(), String> {
    let kvm = dev();
    let vm = new_vm()?;
    for fd in [kvm.as_raw_fd(), vm.as_raw_fd()] {
        for (cap, name, want) in [
            (0u64, "KVM_CAP_IRQCHIP", 1i64),
            (11, "KVM_CAP_PIT", 1),
            (24, "KVM_CAP_REINJECT_CONTROL", 1),
            (25, "KVM_CAP_IRQ_ROUTING", 4096),
            (26, "KVM_CAP_IRQ_INJECT_STATUS", 1),
            (32, "KVM_CAP_IRQFD", 1),
            (33, "KVM_CAP_PIT2", 1),
            (35, "KVM_CAP_PIT_STATE2", 1),
            (77, "KVM_CAP_SIGNAL_MSI", 1),
            (82, "KVM_CAP_IRQFD_RESAMPLE", 1),
            (121, "KVM_CAP_SPLIT_IRQCHIP", 1),
        ] {
            eq(ioctl(fd, 0xae03, cap), Ok(want), name)?;
        }
    }
    Ok(())
}

/// `KVM_CREATE_IRQCHIP` / `KVM_CAP_SPLIT_IRQCHIP`: once, before vCPUs, one kind.
fn create_rules(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    eq(create_irqchip(&vm), Ok(0), "KVM_CREATE_IRQCHIP")?;
    eq(
        errno_of(create_irqchip(&vm)),
        EEXIST,
        "second KVM_CREATE_IRQCHIP",
    )?;
    eq(
        errno_of(enable_split(&vm, 24)),
        EEXIST,
        "split after KVM_CREATE_IRQCHIP",
    )?;

    let vm = new_vm()?;
    let _v = create_vcpu(&vm, 0)?;
    eq(
        errno_of(create_irqchip(&vm)),
        EINVAL,
        "KVM_CREATE_IRQCHIP after a vCPU",
    )?;
    eq(
        errno_of(enable_split(&vm, 24)),
        EEXIST,
        "split after a vCPU",
    )?;

    let vm = new_vm()?;
    eq(
        errno_of(enable_split(&vm, 4097)),
        EINVAL,
        "split with 4097 pins",
    )?;
    eq(enable_split(&vm, 4096), Ok(0), "split with 4096 pins")?;
    eq(errno_of(enable_split(&vm, 24)), EEXIST, "split twice")?;
    eq(
        errno_of(create_irqchip(&vm)),
        EEXIST,
        "KVM_CREATE_IRQCHIP after split",
    )?;
    Ok(())
}

pub(crate) fn irqchip_buf(chip_id: u32) -> [u8; 520] {
    let mut b = [0u8; 520];
    b[..4].copy_from_slice(&chip_id.to_le_bytes());
    b
}

/// `KVM_GET/SET_IRQCHIP`: ENXIO without the full irqchip (split too), EINVAL for an unknown
/// chip, round trips of both PICs and the IOAPIC, and the IOAPIC's reset state.
fn state_ioctls(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let fd = vm.as_raw_fd();
    let mut b = irqchip_buf(0);
    eq(
        errno_of(ioctl(fd, KVM_GET_IRQCHIP, b.as_mut_ptr() as u64)),
        ENXIO,
        "GET_IRQCHIP without irqchip",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_SET_IRQCHIP, b.as_ptr() as u64)),
        ENXIO,
        "SET_IRQCHIP without irqchip",
    )?;
    let split = new_vm()?;
    enable_split(&split, 24).map_err(|e| format!("split: {e}"))?;
    eq(
        errno_of(ioctl(
            split.as_raw_fd(),
            KVM_GET_IRQCHIP,
            b.as_mut_ptr() as u64,
        )),
        ENXIO,
        "GET_IRQCHIP with a split irqchip",
    )?;
    create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    eq(
        errno_of(ioctl(fd, KVM_GET_IRQCHIP, 0)),
        EFAULT,
        "GET_IRQCHIP at NULL",
    )?;
    let mut bad = irqchip_buf(3);
    eq(
        errno_of(ioctl(fd, KVM_GET_IRQCHIP, bad.as_mut_ptr() as u64)),
        EINVAL,
        "GET_IRQCHIP chip 3",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_SET_IRQCHIP, bad.as_ptr() as u64)),
        EINVAL,
        "SET_IRQCHIP chip 3",
    )?;
    // The IOAPIC after creation: base 0xfec00000, every entry masked.
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    eq(
        u64::from_le_bytes(io[8..16].try_into().unwrap()),
        0xfec0_0000,
        "IOAPIC base",
    )?;
    for pin in 0..24 {
        let o = 8 + 24 + pin * 8;
        let e = u64::from_le_bytes(io[o..o + 8].try_into().unwrap());
        eq(e & (1 << 16), 1 << 16, &format!("IOAPIC pin {pin} masked"))?;
    }
    // PIC master/slave round trips: irq_base (byte 5), imr (byte 2), elcr (byte 14).
    for chip in [0u32, 1] {
        let mut s = irqchip_buf(chip);
        ioctl(fd, KVM_GET_IRQCHIP, s.as_mut_ptr() as u64).map_err(|e| format!("GET PIC: {e}"))?;
        s[8 + 5] = 0x20 + 8 * chip as u8;
        s[8 + 2] = 0xa5;
        ioctl(fd, KVM_SET_IRQCHIP, s.as_ptr() as u64).map_err(|e| format!("SET PIC: {e}"))?;
        let mut g = irqchip_buf(chip);
        ioctl(fd, KVM_GET_IRQCHIP, g.as_mut_ptr() as u64).map_err(|e| format!("GET PIC: {e}"))?;
        eq(
            &g[8..8 + 14],
            &s[8..8 + 14],
            &format!("PIC {chip} round trip"),
        )?;
    }
    // IOAPIC round trip: id and a few unmasked entries.
    io[8 + 12] = 5; // id
    for pin in [0usize, 4, 23] {
        let o = 8 + 24 + pin * 8;
        let v: u64 = 0x0300_0000_0000_0030 | pin as u64 | (1 << 15);
        io[o..o + 8].copy_from_slice(&(v | (1 << 16)).to_le_bytes());
    }
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    let mut g = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, g.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    eq(g[8 + 12], 5, "IOAPIC id")?;
    eq(
        &g[8 + 24..8 + 216],
        &io[8 + 24..8 + 216],
        "IOAPIC redirection table",
    )?;
    Ok(())
}

pub(crate) fn routing_buf(entries: &[[u32; 12]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for e in entries {
        for w in e {
            b.extend_from_slice(&w.to_le_bytes());
        }
    }
    b
}

pub(crate) fn irqchip_route(gsi: u32, chip: u32, pin: u32) -> [u32; 12] {
    let mut e = [0u32; 12];
    e[0] = gsi;
    e[1] = 1;
    e[4] = chip;
    e[5] = pin;
    e
}

pub(crate) fn msi_route(gsi: u32, lo: u32, hi: u32, data: u32) -> [u32; 12] {
    let mut e = [0u32; 12];
    e[0] = gsi;
    e[1] = 2;
    e[4] = lo;
    e[5] = hi;
    e[6] = data;
    e
}

/// `KVM_SET_GSI_ROUTING`: upstream's validation and errnos, a table at the size limit.
fn routing(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let fd = vm.as_raw_fd();
    let set = |entries: &[[u32; 12]]| {
        let b = routing_buf(entries);
        errno_of(ioctl(fd, KVM_SET_GSI_ROUTING, b.as_ptr() as u64))
    };
    eq(set(&[]), EINVAL, "routing without irqchip")?;
    create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    eq(set(&[]), 0, "empty routing")?;
    eq(
        errno_of(ioctl(fd, KVM_SET_GSI_ROUTING, 0)),
        EFAULT,
        "routing at NULL",
    )?;
    let mut hdr = routing_buf(&[]);
    hdr[4] = 1;
    eq(
        errno_of(ioctl(fd, KVM_SET_GSI_ROUTING, hdr.as_ptr() as u64)),
        EINVAL,
        "routing flags",
    )?;
    let mut big = routing_buf(&[]);
    big[..4].copy_from_slice(&4097u32.to_le_bytes());
    eq(
        errno_of(ioctl(fd, KVM_SET_GSI_ROUTING, big.as_ptr() as u64)),
        EINVAL,
        "routing with 4097 entries",
    )?;
    eq(set(&[irqchip_route(4096, 2, 0)]), EINVAL, "GSI 4096")?;
    eq(set(&[irqchip_route(0, 2, 24)]), EINVAL, "IOAPIC pin 24")?;
    eq(set(&[irqchip_route(0, 0, 8)]), EINVAL, "PIC pin 8")?;
    eq(set(&[irqchip_route(0, 3, 0)]), EINVAL, "irqchip 3")?;
    let mut flagged = irqchip_route(0, 2, 0);
    flagged[2] = 1;
    eq(set(&[flagged]), EINVAL, "irqchip entry with flags")?;
    let mut devid = msi_route(1, 0xfee0_0000, 0, 0x30);
    devid[2] = 1;
    eq(set(&[devid]), 0, "MSI entry with KVM_MSI_VALID_DEVID")?;
    devid[2] = 2;
    eq(set(&[devid]), EINVAL, "MSI entry with flag 2")?;
    let mut unknown = irqchip_route(0, 2, 0);
    unknown[1] = 9;
    eq(set(&[unknown]), EINVAL, "unknown type")?;
    eq(
        set(&[irqchip_route(5, 2, 5), irqchip_route(5, 2, 6)]),
        EINVAL,
        "one GSI on the IOAPIC twice",
    )?;
    eq(
        set(&[irqchip_route(5, 2, 5), irqchip_route(5, 0, 5)]),
        0,
        "one GSI on the IOAPIC and the PIC",
    )?;
    eq(
        set(&[irqchip_route(5, 2, 5), msi_route(5, 0xfee0_0000, 0, 0x30)]),
        EINVAL,
        "MSI sharing a GSI",
    )?;
    let full: Vec<[u32; 12]> = (0..4096)
        .map(|g| msi_route(g, 0xfee0_0000, 0, 0x30))
        .collect();
    eq(set(&full), 0, "4096 MSI routes")?;
    // Split mode: MSI routes only.
    let split = new_vm()?;
    enable_split(&split, 24).map_err(|e| format!("split: {e}"))?;
    let b = routing_buf(&[irqchip_route(0, 2, 0)]);
    eq(
        errno_of(ioctl(
            split.as_raw_fd(),
            KVM_SET_GSI_ROUTING,
            b.as_ptr() as u64,
        )),
        EINVAL,
        "irqchip route in split mode",
    )?;
    let b = routing_buf(&[msi_route(0, 0xfee0_0000, 0, 0x30)]);
    eq(
        ioctl(split.as_raw_fd(), KVM_SET_GSI_ROUTING, b.as_ptr() as u64),
        Ok(0),
        "MSI route in split mode",
    )?;
    Ok(())
}

pub(crate) fn irq_level(irq: u32, level: u32) -> [u32; 2] {
    [irq, level]
}

/// `KVM_IRQ_LINE(_STATUS)` and `KVM_SIGNAL_MSI` without and with an irqchip.
fn lines(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let fd = vm.as_raw_fd();
    let l = irq_level(4, 1);
    eq(
        errno_of(ioctl(fd, KVM_IRQ_LINE, l.as_ptr() as u64)),
        ENXIO,
        "IRQ_LINE without irqchip",
    )?;
    let msi = [0xfee0_0000u32, 0, 0x30, 0, 0, 0, 0, 0];
    eq(
        errno_of(ioctl(fd, KVM_SIGNAL_MSI, msi.as_ptr() as u64)),
        EINVAL,
        "SIGNAL_MSI without irqchip",
    )?;
    create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    eq(
        ioctl(fd, KVM_IRQ_LINE, l.as_ptr() as u64),
        Ok(0),
        "IRQ_LINE 4 high",
    )?;
    let l0 = irq_level(4, 0);
    eq(
        ioctl(fd, KVM_IRQ_LINE, l0.as_ptr() as u64),
        Ok(0),
        "IRQ_LINE 4 low",
    )?;
    // A GSI without a route: nothing takes it, status -1.
    let mut s = irq_level(1000, 1);
    eq(
        ioctl(fd, KVM_IRQ_LINE_STATUS, s.as_mut_ptr() as u64),
        Ok(0),
        "IRQ_LINE_STATUS unrouted",
    )?;
    eq(s[0] as i32, -1, "status of an unrouted GSI")?;
    let mut flagged = msi;
    flagged[3] = 2;
    eq(
        errno_of(ioctl(fd, KVM_SIGNAL_MSI, flagged.as_ptr() as u64)),
        EINVAL,
        "SIGNAL_MSI flag 2",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_IRQ_LINE_STATUS, 0)),
        EFAULT,
        "IRQ_LINE_STATUS at NULL",
    )?;
    Ok(())
}

fn eventfd() -> OwnedFd {
    // SAFETY: creates a new eventfd; checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: a fresh fd, owned from now on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn irqfd(vm: &impl AsRawFd, fd: i32, gsi: u32, flags: u32, resamplefd: i32) -> i32 {
    let mut b = [0u32; 8];
    b[0] = fd as u32;
    b[1] = gsi;
    b[2] = flags;
    b[3] = resamplefd as u32;
    errno_of(ioctl(vm.as_raw_fd(), KVM_IRQFD, b.as_ptr() as u64))
}

/// `KVM_IRQFD`: flags, irqchip requirements, EBUSY for a reused eventfd, deassign of an unknown
/// one, resample only with the full irqchip, bad fds, and eventfds closed while assigned.
fn irqfds(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let (e1, e2, e3, r) = (eventfd(), eventfd(), eventfd(), eventfd());
    eq(
        irqfd(&vm, e1.as_raw_fd(), 4, 0, 0),
        EINVAL,
        "irqfd without irqchip",
    )?;
    eq(
        irqfd(&vm, e1.as_raw_fd(), 4, 1, 0),
        0,
        "deassign without irqchip",
    )?;
    create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    eq(irqfd(&vm, e1.as_raw_fd(), 4, 4, 0), EINVAL, "irqfd flag 4")?;
    eq(irqfd(&vm, e1.as_raw_fd(), 4, 0, 0), 0, "assign e1 -> 4")?;
    eq(irqfd(&vm, e2.as_raw_fd(), 8, 0, 0), 0, "assign e2 -> 8")?;
    eq(irqfd(&vm, e3.as_raw_fd(), 4, 0, 0), 0, "assign e3 -> 4")?;
    eq(irqfd(&vm, e2.as_raw_fd(), 8, 1, 0), 0, "deassign e2")?;
    eq(irqfd(&vm, e2.as_raw_fd(), 8, 1, 0), 0, "deassign e2 again")?;
    eq(irqfd(&vm, e3.as_raw_fd(), 4, 0, 0), EBUSY, "e3 again")?;
    eq(
        irqfd(&vm, e3.as_raw_fd(), 5, 0, 0),
        EBUSY,
        "e3 on another GSI",
    )?;
    eq(
        irqfd(&vm, e3.as_raw_fd(), 5, 1, 0),
        0,
        "deassign e3 from the wrong GSI",
    )?;
    eq(irqfd(&vm, -1, 4, 0, 0), EBADF, "irqfd fd -1")?;
    let devnull = File::open("/dev/null").map_err(|e| e.to_string())?;
    eq(
        irqfd(&vm, devnull.as_raw_fd(), 4, 0, 0),
        EINVAL,
        "irqfd on /dev/null",
    )?;
    eq(
        irqfd(&vm, devnull.as_raw_fd(), 4, 1, 0),
        EINVAL,
        "deassign /dev/null",
    )?;
    let e4 = eventfd();
    eq(irqfd(&vm, e4.as_raw_fd(), 6, 2, -1), EBADF, "resamplefd -1")?;
    eq(
        irqfd(&vm, e4.as_raw_fd(), 6, 2, r.as_raw_fd()),
        0,
        "assign with resample",
    )?;
    eq(irqfd(&vm, e4.as_raw_fd(), 6, 1, 0), 0, "deassign resampler")?;
    // Signalled before assignment: injected at assignment; signalled after: injected too.
    let e5 = eventfd();
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from `one` to an eventfd.
    unsafe { libc::write(e5.as_raw_fd(), one.as_ptr().cast(), 8) };
    eq(
        irqfd(&vm, e5.as_raw_fd(), 3, 0, 0),
        0,
        "assign a signalled eventfd",
    )?;
    // SAFETY: as above.
    unsafe { libc::write(e5.as_raw_fd(), one.as_ptr().cast(), 8) };
    // Close assigned eventfds while the VM lives, and the VM while others are assigned.
    drop(e1);
    drop(e5);
    let split = new_vm()?;
    enable_split(&split, 24).map_err(|e| format!("split: {e}"))?;
    let e6 = eventfd();
    eq(
        irqfd(&split, e6.as_raw_fd(), 6, 2, r.as_raw_fd()),
        EINVAL,
        "resample with a split irqchip",
    )?;
    eq(
        irqfd(&split, e6.as_raw_fd(), 6, 0, 0),
        0,
        "irqfd with a split irqchip",
    )?;
    drop(split);
    drop(vm);
    // SAFETY: as above: the irqfds went with the VMs, the eventfds still work.
    unsafe { libc::write(e6.as_raw_fd(), one.as_ptr().cast(), 8) };
    Ok(())
}

/// Many threads signal irqfds while others assign, deassign and close them, and the VM goes
/// in the middle: no oops, no lockdep report (the harness checks the kernel log).
fn irqfd_race(_: &Ctx) -> Result<(), String> {
    for _round in 0..20 {
        let vm = new_vm()?;
        create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
        let fds: Vec<OwnedFd> = (0..8).map(|_| eventfd()).collect();
        for (i, f) in fds.iter().enumerate() {
            let flags = if i % 2 == 0 { 0 } else { 2 };
            let r = eventfd();
            eq(
                irqfd(&vm, f.as_raw_fd(), i as u32, flags, r.as_raw_fd()),
                0,
                "assign",
            )?;
        }
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let vmfd = vm.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                let one = 1u64.to_ne_bytes();
                for _ in 0..200 {
                    for fd in &raw {
                        // SAFETY: writes to an eventfd (or a closed fd: EBADF, ignored).
                        unsafe { libc::write(*fd, one.as_ptr().cast(), 8) };
                    }
                }
            });
            s.spawn(|| {
                for (i, fd) in raw.iter().enumerate() {
                    let mut b = [0u32; 8];
                    b[0] = *fd as u32;
                    b[1] = i as u32;
                    b[2] = 1;
                    let _ = ioctl(vmfd, KVM_IRQFD, b.as_ptr() as u64);
                    let l = [i as u32, 1];
                    let _ = ioctl(vmfd, KVM_IRQ_LINE, l.as_ptr() as u64);
                }
            });
        });
        drop(vm);
        drop(fds);
    }
    Ok(())
}

/// The PIT ioctls: ENOENT without the PIC, EEXIST twice, ENXIO before creation, state round
/// trip, KVM_REINJECT_CONTROL.
fn pit(_: &Ctx) -> Result<(), String> {
    let vm = new_vm()?;
    let fd = vm.as_raw_fd();
    let cfg = [0u32; 16];
    eq(
        errno_of(ioctl(fd, KVM_CREATE_PIT2, cfg.as_ptr() as u64)),
        ENOENT,
        "CREATE_PIT2 without irqchip",
    )?;
    let mut st = [0u8; 112];
    eq(
        errno_of(ioctl(fd, KVM_GET_PIT2, st.as_mut_ptr() as u64)),
        ENXIO,
        "GET_PIT2 without PIT",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_SET_PIT2, st.as_ptr() as u64)),
        ENXIO,
        "SET_PIT2 without PIT",
    )?;
    let rc = [0u8; 32];
    eq(
        errno_of(ioctl(fd, KVM_REINJECT_CONTROL, rc.as_ptr() as u64)),
        ENXIO,
        "REINJECT_CONTROL without PIT",
    )?;
    create_irqchip(&vm).map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    eq(
        ioctl(fd, KVM_CREATE_PIT2, cfg.as_ptr() as u64),
        Ok(0),
        "CREATE_PIT2",
    )?;
    eq(
        errno_of(ioctl(fd, KVM_CREATE_PIT2, cfg.as_ptr() as u64)),
        EEXIST,
        "CREATE_PIT2 twice",
    )?;
    ioctl(fd, KVM_GET_PIT2, st.as_mut_ptr() as u64).map_err(|e| format!("GET_PIT2: {e}"))?;
    // Reset state: every channel mode 3? (upstream: count 0x10000 loaded? checked loosely)
    // Program channel 2: count 0x1234, mode 2, rw LSB+MSB, gate 1.
    let ch = 2 * 24;
    st[ch..ch + 4].copy_from_slice(&0x1234u32.to_le_bytes());
    st[ch + 12] = 3; // rw_mode
    st[ch + 13] = 2; // mode
    st[ch + 15] = 1; // gate
    ioctl(fd, KVM_SET_PIT2, st.as_ptr() as u64).map_err(|e| format!("SET_PIT2: {e}"))?;
    let mut g = [0u8; 112];
    ioctl(fd, KVM_GET_PIT2, g.as_mut_ptr() as u64).map_err(|e| format!("GET_PIT2: {e}"))?;
    for c in 0..3 {
        let o = c * 24;
        eq(&g[o..o + 16], &st[o..o + 16], &format!("PIT channel {c}"))?;
    }
    eq(&g[72..76], &st[72..76], "PIT flags")?;
    eq(&g[76..112], &[0u8; 36][..], "PIT reserved")?;
    eq(
        ioctl(fd, KVM_REINJECT_CONTROL, rc.as_ptr() as u64),
        Ok(0),
        "REINJECT_CONTROL",
    )?;
    Ok(())
}

/// A 64-bit guest at 0x10000 in a VM that got `KVM_CREATE_IRQCHIP` before its vCPU: identity
/// map of the first 2 MiB and of 0xfec00000 (the IOAPIC window), flat segments.
pub(crate) fn long_mode_irqchip_guest(
    code: &[u8],
) -> Result<(crate::run::Guest, kvm_ioctls::VcpuFd), String> {
    long_mode_guest_with(code, false)
}

/// [`long_mode_irqchip_guest`] with the full (`split` false) or the split irqchip.
pub(crate) fn long_mode_guest_with(
    code: &[u8],
    split: bool,
) -> Result<(crate::run::Guest, kvm_ioctls::VcpuFd), String> {
    let g = crate::run::Guest::new(&[0xf4], 0x40_0000)?;
    if split {
        let mut cap = kvm_bindings::kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        cap.args[0] = 24;
        g.vm.enable_cap(&cap)
            .map_err(|e| format!("KVM_CAP_SPLIT_IRQCHIP: {e}"))?;
    } else {
        g.vm.create_irq_chip()
            .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    }
    // PML4 0x1000 -> PDPT 0x2000; PDPT[0] -> PD 0x3000 (2 MiB at 0), PDPT[3] -> PD 0x4000
    // with entry 502 (0xfec00000) as a 2 MiB page.
    g.ram.write(0x1000, &(0x2000u64 | 3).to_le_bytes());
    g.ram.write(0x2000, &(0x3000u64 | 3).to_le_bytes());
    g.ram.write(0x2018, &(0x4000u64 | 3).to_le_bytes());
    g.ram.write(0x3000, &0x83u64.to_le_bytes());
    g.ram.write(
        0x4000 + 502 * 8,
        &(0xfec0_0000u64 | 0x83 | 0x10).to_le_bytes(),
    );
    g.ram.write(0x10000, code);
    let v = g.vcpu(0)?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let code_seg = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data_seg = kvm_bindings::kvm_segment {
        selector: 0x10,
        type_: 3,
        db: 1,
        l: 0,
        ..code_seg
    };
    sr.cs = code_seg;
    sr.ds = data_seg;
    sr.es = data_seg;
    sr.ss = data_seg;
    sr.cr3 = 0x1000;
    sr.cr4 = 0x20 | 0x200 | 0x400;
    sr.cr0 = 0x8000_0033;
    sr.efer = 0x500;
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    r.rip = 0x10000;
    r.rflags = 2;
    r.rsp = 0x8_0000;
    v.set_regs(&r).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok((g, v))
}

pub(crate) fn ram_u32(m: &crate::run::Mem, off: usize) -> u32 {
    u32::from_le_bytes([
        m.read(off),
        m.read(off + 1),
        m.read(off + 2),
        m.read(off + 3),
    ])
}

/// The guest programs the PIC (ICW1-4, IMR), the ELCR and an IOAPIC entry, and reads them
/// back, all in the kernel: the first exit is the HLT, and GET_IRQCHIP shows the result.
fn in_kernel_registers() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb0, 0x11, 0xe6, 0x20, // mov al, 0x11; out 0x20, al (ICW1)
        0xb0, 0x30, 0xe6, 0x21, // ICW2: base 0x30
        0xb0, 0x04, 0xe6, 0x21, // ICW3
        0xb0, 0x01, 0xe6, 0x21, // ICW4
        0xb0, 0xa5, 0xe6, 0x21, // OCW1: IMR 0xa5
        0xe4, 0x21, // in al, 0x21
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], al
        0xbe, 0x00, 0x51, 0x00, 0x00, // mov esi, 0x5100
        0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1
        0x66, 0xba, 0x21, 0x00, // mov dx, 0x21
        0xf3, 0x6e, // rep outsb: IMR = [0x5100] = 0x5a
        0xe4, 0x21, // in al, 0x21
        0x88, 0x04, 0x25, 0x02, 0x50, 0x00, 0x00, // mov [0x5002], al
        0x66, 0xba, 0xd0, 0x04, // mov dx, 0x4d0
        0xb0, 0x28, 0xee, // mov al, 0x28; out dx, al (ELCR master)
        0xbb, 0x00, 0x00, 0xc0, 0xfe, // mov ebx, 0xfec00000
        0xc7, 0x03, 0x10, 0x00, 0x00, 0x00, // mov dword [rbx], 0x10 (IOREGSEL: entry 0 low)
        0xc7, 0x43, 0x10, 0x35, 0x80, 0x01, 0x00, // mov dword [rbx+0x10], 0x18035
        0x8b, 0x43, 0x10, // mov eax, [rbx+0x10]
        0x89, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], eax
        0xc7, 0x03, 0x01, 0x00, 0x00, 0x00, // mov dword [rbx], 1 (version)
        0x8b, 0x43, 0x10, // mov eax, [rbx+0x10]
        0x89, 0x04, 0x25, 0x08, 0x50, 0x00, 0x00, // mov [0x5008], eax
        0xe6, 0x80, // out 0x80, al (HLT would sleep in the kernel now)
    ];
    let (g, mut v) = long_mode_irqchip_guest(code)?;
    g.ram.write(0x5100, &[0x5a]);
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    let why = v.get_kvm_run().exit_reason;
    let rip = v.get_regs().map(|r| r.rip).unwrap_or(0);
    eq(
        why,
        2,
        &format!("exit reason (KVM_EXIT_IO) at rip {rip:#x}"),
    )?;
    eq(g.ram.read(0x5000), 0xa5, "IMR read back by the guest")?;
    eq(
        g.ram.read(0x5002),
        0x5a,
        "IMR written by REP OUTSB, read back",
    )?;
    eq(
        ram_u32(&g.ram, 0x5004),
        0x18035,
        "IOAPIC entry 0 read back by the guest",
    )?;
    eq(ram_u32(&g.ram, 0x5008), 0x0017_0011, "IOAPIC version")?;
    let fd = g.vm.as_raw_fd();
    let mut m = irqchip_buf(0);
    ioctl(fd, KVM_GET_IRQCHIP, m.as_mut_ptr() as u64).map_err(|e| format!("GET PIC: {e}"))?;
    eq(m[8 + 5], 0x30, "PIC master irq_base")?;
    eq(m[8 + 2], 0x5a, "PIC master imr")?;
    eq(m[8 + 14], 0x28, "PIC master elcr")?;
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    eq(
        u64::from_le_bytes(io[8 + 24..8 + 32].try_into().unwrap()),
        0x18035,
        "IOAPIC entry 0",
    )?;
    Ok(())
}

/// The guest programs PIT channel 2 through ports 0x43/0x42, latches and reads its count back,
/// all in the kernel; GET_PIT2 shows the programming.
fn in_kernel_pit() -> Result<(), String> {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xb0, 0xb0, 0xe6, 0x43, // mov al, 0xb0; out 0x43, al (ch2, lsb+msb, mode 0)
        0xb0, 0x34, 0xe6, 0x42, // count low 0x34
        0xb0, 0x12, 0xe6, 0x42, // count high 0x12
        0xb0, 0x80, 0xe6, 0x43, // latch ch2
        0xe4, 0x42, // in al, 0x42
        0x88, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], al
        0xe4, 0x42, // in al, 0x42
        0x88, 0x04, 0x25, 0x01, 0x50, 0x00, 0x00, // mov [0x5001], al
        0xe6, 0x80, // out 0x80, al (HLT would sleep in the kernel now)
    ];
    let (g, mut v) = long_mode_irqchip_guest(code)?;
    g.vm.create_pit2(kvm_bindings::kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    let why = v.get_kvm_run().exit_reason;
    let rip = v.get_regs().map(|r| r.rip).unwrap_or(0);
    eq(
        why,
        2,
        &format!("exit reason (KVM_EXIT_IO) at rip {rip:#x}"),
    )?;
    // The latched count is 0x1234 minus the ticks since the load; under TCG that can be
    // milliseconds (and mode 0 wraps), so only "it moved" is checked.
    let latched = u16::from_le_bytes([g.ram.read(0x5000), g.ram.read(0x5001)]);
    if latched == 0x1234 {
        return Err("the latched count did not move".into());
    }
    let st = g.vm.get_pit2().map_err(|e| format!("KVM_GET_PIT2: {e}"))?;
    eq(st.channels[2].count, 0x1234, "channel 2 count")?;
    eq(st.channels[2].mode, 0, "channel 2 mode")?;
    eq(st.channels[2].rw_mode, 3, "channel 2 rw_mode")?;
    Ok(())
}

/// The guest's IDT (0x7000), GDT (0x500), handlers (0x9000 + 0x40 * n for vector 0x40 + n:
/// count the interrupt at 0x6000 + n, EOI the local APIC, iretq) and main loop (mask the PIC,
/// enable the APIC, then `sti; hlt; out 0x80` forever), and the APIC page mapped.
pub(crate) fn interrupt_guest() -> Result<(crate::run::Guest, kvm_ioctls::VcpuFd), String> {
    interrupt_guest_with(false)
}

pub(crate) fn interrupt_guest_with(
    split: bool,
) -> Result<(crate::run::Guest, kvm_ioctls::VcpuFd), String> {
    #[rustfmt::skip]
    let main: &[u8] = &[
        0x0f, 0x01, 0x1c, 0x25, 0x00, 0x5f, 0x00, 0x00, // lidt [0x5f00]
        0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1, // mask both PICs
        0xbb, 0x00, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee00000
        0xc7, 0x83, 0xf0, 0x00, 0x00, 0x00, 0xff, 0x01, 0x00, 0x00, // SVR = 0x1ff
        0xfb, 0xf4, // l: sti; hlt
        0xe6, 0x80, // out 0x80, al
        0xeb, 0xfa, // jmp l
    ];
    let (g, v) = long_mode_guest_with(main, split)?;
    // GDT: null, 64-bit code 0x08, data 0x10; IDTR at 0x5f00.
    g.ram.write(0x500, &0u64.to_le_bytes());
    g.ram.write(0x508, &0x0020_9a00_0000_0000u64.to_le_bytes());
    g.ram.write(0x510, &0x0000_9200_0000_0000u64.to_le_bytes());
    g.ram.write(0x5f00, &0x0fffu16.to_le_bytes());
    g.ram.write(0x5f02, &0x7000u64.to_le_bytes());
    // The APIC page: PD[503] of the 3-4 GiB PD maps 0xfee00000.
    g.ram
        .write(0x4000 + 503 * 8, &(0xfee0_0000u64 | 0x93).to_le_bytes());
    for n in 0..3u64 {
        let h = 0x9000 + 0x40 * n;
        #[rustfmt::skip]
        let code: Vec<u8> = [
            &[0x50u8, 0x53][..], // push rax; push rbx
            &[0xbb, 0x00, 0x00, 0xe0, 0xfe], // mov ebx, 0xfee00000
            &[0xfe, 0x04, 0x25], &((0x6000 + n) as u32).to_le_bytes(), // inc byte [0x6000+n]
            &[0xc7, 0x83, 0xb0, 0x00, 0x00, 0x00, 0, 0, 0, 0], // EOI
            &[0x5b, 0x58, 0x48, 0xcf], // pop rbx; pop rax; iretq
        ]
        .concat();
        g.ram.write(h as usize, &code);
        let vec = 0x40 + n;
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(h as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&8u16.to_le_bytes());
        gate[5] = 0x8e;
        gate[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((h >> 32) as u32).to_le_bytes());
        g.ram.write((0x7000 + vec * 16) as usize, &gate);
    }
    let mut sr = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sr.gdt.base = 0x500;
    sr.gdt.limit = 0x17;
    v.set_sregs(&sr)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    Ok((g, v))
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Runs the vCPU on a thread until its next exit while `trigger` raises an interrupt from this
/// one; returns the vCPU and the exit reason. A vCPU that has not exited 3 s after the
/// trigger is interrupted with signals (KVM_RUN then fails with EINTR, reported as an error).
pub(crate) fn run_with(
    mut v: kvm_ioctls::VcpuFd,
    trigger: impl FnOnce() -> Result<(), String>,
) -> Result<(kvm_ioctls::VcpuFd, u32), String> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // SAFETY: a plain sigaction with a handler that does nothing (no SA_RESTART).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let done = AtomicBool::new(false);
    let tid = AtomicU64::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let r = v.run().map(|_| ()).map_err(|e| format!("KVM_RUN: {e}"));
            done.store(true, Ordering::SeqCst);
            let why = v.get_kvm_run().exit_reason;
            let rip = v.get_regs().map(|r| r.rip).unwrap_or(0);
            (r.map_err(|e| format!("{e} at rip {rip:#x}")), why)
        });
        // HOOK(review): long enough for the guest to enable its APIC and halt under a loaded
        // TCG host: an interrupt that arrives while the APIC is still software-disabled is
        // dropped (a level line then never gets remote IRR, as upstream), and the test would
        // time out (seen 3 of 4 runs of irqchip_run_level_irqfd_resample with 100 ms).
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let tr = trigger();
        let t0 = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if t0.elapsed() > std::time::Duration::from_secs(3) {
                // SAFETY: the thread is alive until joined; SIGUSR1 has a handler.
                unsafe {
                    libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1)
                };
            }
        }
        let (r, why) = h.join().map_err(|_| "vCPU thread panicked".to_string())?;
        tr?;
        r?;
        Ok(why)
    })
    .map(|why| (v, why))
}

/// Interrupts reach the guest's IDT: an IOAPIC pin raised with KVM_IRQ_LINE, an MSI from
/// KVM_SIGNAL_MSI, an irqfd on an IOAPIC GSI; each wakes the halted vCPU, runs its handler
/// once, and the guest EOIs it.
fn interrupts_reach_guest() -> Result<(), String> {
    let (g, v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    // IOAPIC pin 4 -> vector 0x40, pin 6 -> 0x42: fixed, physical, edge, to APIC ID 0.
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    for (pin, vec) in [(4usize, 0x40u64), (6, 0x42)] {
        let o = 8 + 24 + pin * 8;
        io[o..o + 8].copy_from_slice(&vec.to_le_bytes());
    }
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    let count = |n: usize| g.ram.read(0x6000 + n);

    let (v, why) = run_with(v, || {
        for level in [1, 0] {
            let l = irq_level(4, level);
            ioctl(fd, KVM_IRQ_LINE, l.as_ptr() as u64).map_err(|e| format!("IRQ_LINE: {e}"))?;
        }
        Ok(())
    })?;
    eq(why, 2, "exit after the pin-4 interrupt (KVM_EXIT_IO)")?;
    eq(count(0), 1, "vector 0x40 handled")?;

    let (v, why) = run_with(v, || {
        let msi = [0xfee0_0000u32, 0, 0x41, 0, 0, 0, 0, 0];
        eq(
            ioctl(fd, KVM_SIGNAL_MSI, msi.as_ptr() as u64),
            Ok(1),
            "KVM_SIGNAL_MSI delivered to one APIC",
        )
    })?;
    eq(why, 2, "exit after the MSI")?;
    eq(count(1), 1, "vector 0x41 handled")?;

    let e = eventfd();
    eq(irqfd(&g.vm, e.as_raw_fd(), 6, 0, 0), 0, "irqfd on GSI 6")?;
    let (_v, why) = run_with(v, || {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to an eventfd.
        unsafe { libc::write(e.as_raw_fd(), one.as_ptr().cast(), 8) };
        Ok(())
    })?;
    eq(why, 2, "exit after the irqfd")?;
    eq(count(2), 1, "vector 0x42 handled")?;
    eq(count(0), 1, "vector 0x40 only once")?;
    Ok(())
}

/// The PIT's channel 0 in mode 2 raises IRQ0 through the IOAPIC (pin 0 -> vector 0x40) again
/// and again, with reinjection on (each tick waits for the previous one's EOI, an edge EOI).
fn pit_ticks_reach_guest() -> Result<(), String> {
    let (g, v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    g.vm.create_pit2(kvm_bindings::kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    io[8 + 24..8 + 32].copy_from_slice(&0x40u64.to_le_bytes());
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    // Channel 0, mode 2, 1193 counts (1 ms), programmed through KVM_SET_PIT2 once the guest
    // halts with its APIC enabled (a tick the APIC drops would never be acknowledged, and
    // reinjection would then wait forever, as upstream).
    let mut st = g.vm.get_pit2().map_err(|e| format!("KVM_GET_PIT2: {e}"))?;
    st.channels[0].count = 1193;
    st.channels[0].mode = 2;
    st.channels[0].rw_mode = 3;
    st.channels[0].gate = 1;
    let vm = &g.vm;
    let (mut v, why) = run_with(v, || {
        vm.set_pit2(&st).map_err(|e| format!("KVM_SET_PIT2: {e}"))
    })?;
    eq(why, 2, "exit after the first tick")?;
    // Each later tick wakes the halted guest, whose loop then exits with its OUT.
    for _ in 0..4 {
        let (nv, why) = run_with(v, || Ok(()))?;
        v = nv;
        eq(why, 2, "exit after a tick")?;
    }
    let n = g.ram.read(0x6000);
    if n < 5 {
        return Err(format!("{n} ticks handled, want at least 5"));
    }
    Ok(())
}

/// A resampling irqfd on a level-triggered IOAPIC pin: the guest gets the interrupt once, its
/// EOI lowers the line, clears remote IRR and signals the resamplefd.
fn level_irqfd_resample() -> Result<(), String> {
    let (g, v) = interrupt_guest()?;
    let fd = g.vm.as_raw_fd();
    // IOAPIC pin 5 -> vector 0x42, level triggered, to APIC ID 0.
    let mut io = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, io.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    let o = 8 + 24 + 5 * 8;
    io[o..o + 8].copy_from_slice(&(0x42u64 | 1 << 15).to_le_bytes());
    ioctl(fd, KVM_SET_IRQCHIP, io.as_ptr() as u64).map_err(|e| format!("SET IOAPIC: {e}"))?;
    let (e, r) = (eventfd(), eventfd());
    eq(
        irqfd(&g.vm, e.as_raw_fd(), 5, 2, r.as_raw_fd()),
        0,
        "resampling irqfd on GSI 5",
    )?;
    let (_v, why) = run_with(v, || {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to an eventfd.
        unsafe { libc::write(e.as_raw_fd(), one.as_ptr().cast(), 8) };
        Ok(())
    })?;
    eq(why, 2, "exit after the level interrupt")?;
    eq(g.ram.read(0x6002), 1, "vector 0x42 handled once")?;
    let mut cnt = [0u8; 8];
    // SAFETY: reads 8 bytes from a non-blocking eventfd into `cnt`.
    let n = unsafe { libc::read(r.as_raw_fd(), cnt.as_mut_ptr().cast(), 8) };
    eq(n, 8, "the resamplefd was signalled")?;
    let mut st = irqchip_buf(2);
    ioctl(fd, KVM_GET_IRQCHIP, st.as_mut_ptr() as u64).map_err(|e| format!("GET IOAPIC: {e}"))?;
    let ent = u64::from_le_bytes(st[o..o + 8].try_into().unwrap());
    eq(ent & (1 << 14), 0, "remote IRR cleared by the EOI")?;
    let irr = u32::from_le_bytes(st[8 + 16..8 + 20].try_into().unwrap());
    eq(irr & (1 << 5), 0, "line 5 lowered by the resampler")?;
    Ok(())
}

/// Split irqchip: a level-triggered MSI reaches the guest; its EOI exits to userspace with
/// `KVM_EXIT_IOAPIC_EOI` and the vector, and the guest goes on after the next `KVM_RUN`.
/// The vector is in the EOI-exit bitmap because a level MSI route of a reserved IOAPIC pin
/// (GSI 5) names it, as QEMU's split IOAPIC routes its pins (upstream
/// `kvm_scan_ioapic_routes`; without such a route the EOI does not exit).
fn split_level_eoi_exits() -> Result<(), String> {
    let (g, mut v) = interrupt_guest_with(true)?;
    // The PIC masking OUTs exit to userspace (no in-kernel PIC in split mode).
    for port in [0x21u16, 0xa1] {
        v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        let run = v.get_kvm_run();
        eq(run.exit_reason, 2, "PIC port exit in split mode")?;
        // SAFETY: exit_reason is KVM_EXIT_IO, so `io` is the union's member.
        let io_port = unsafe { run.__bindgen_anon_1.io.port };
        eq(io_port, port, "PIC port")?;
    }
    let fd = g.vm.as_raw_fd();
    // HOOK(irqfix): the route that puts vector 0x41 in the EOI-exit bitmap.
    let r = routing_buf(&[msi_route(5, 0xfee0_0000, 0, 0x8041)]);
    ioctl(fd, KVM_SET_GSI_ROUTING, r.as_ptr() as u64).map_err(|e| format!("ROUTING: {e}"))?;
    let (mut v, why) = run_with(v, || {
        // Fixed, physical, APIC ID 0, vector 0x41, level triggered (data bit 15).
        let msi = [0xfee0_0000u32, 0, 0x8041, 0, 0, 0, 0, 0];
        eq(
            ioctl(fd, KVM_SIGNAL_MSI, msi.as_ptr() as u64),
            Ok(1),
            "level MSI delivered",
        )
    })?;
    eq(why, 26, "KVM_EXIT_IOAPIC_EOI")?;
    // SAFETY: exit_reason is KVM_EXIT_IOAPIC_EOI, so `eoi` is the union's member.
    let vector = unsafe { v.get_kvm_run().__bindgen_anon_1.eoi.vector };
    eq(vector, 0x41, "EOI vector")?;
    eq(g.ram.read(0x6001), 1, "vector 0x41 handled")?;
    v.run().map_err(|e| format!("KVM_RUN: {e}"))?;
    eq(
        v.get_kvm_run().exit_reason,
        2,
        "the guest goes on to its OUT",
    )?;
    Ok(())
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("irqchip_caps", Any, caps),
        ("irqchip_create_rules", Any, create_rules),
        ("irqchip_state_ioctls", Any, state_ioctls),
        ("irqchip_gsi_routing", Any, routing),
        ("irqchip_irq_line_msi", Any, lines),
        ("irqchip_irqfd", Any, irqfds),
        ("irqchip_irqfd_race", Any, irqfd_race),
        ("irqchip_pit", Any, pit),
        ("irqchip_run_in_kernel_registers", Any, |_| {
            in_kernel_registers()
        }),
        ("irqchip_run_in_kernel_pit", Any, |_| in_kernel_pit()),
        ("irqchip_run_interrupts_reach_guest", Any, |_| {
            interrupts_reach_guest()
        }),
        ("irqchip_run_split_level_eoi_exits", Any, |_| {
            split_level_eoi_exits()
        }),
        ("irqchip_run_level_irqfd_resample", Any, |_| {
            level_irqfd_resample()
        }),
        ("irqchip_run_pit_ticks_reach_guest", Any, |_| {
            pit_ticks_reach_guest()
        }),
    ]
}
