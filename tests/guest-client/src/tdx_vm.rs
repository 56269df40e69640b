// SPDX-License-Identifier: GPL-2.0-only
//! The TDX VM ABI (`KVM_MEMORY_ENCRYPT_OP` with `struct kvm_tdx_cmd`): KVM_TDX_CAPABILITIES,
//! INIT_VM, INIT_VCPU, INIT_MEM_REGION, FINALIZE_VM, GET_CPUID, with upstream's (6.16) errnos
//! and order rules (docs: /work/shared/tdx-vm-abi.md §2), hostile input for each command, and a
//! TD brought up in QEMU's order. The structures are declared here from the uapi header, not
//! taken from the module's crates.

use crate::prefault::{pre_fault, vm_stat};
use crate::*;

const KVM_MEMORY_ENCRYPT_OP: u64 = (3 << 30) | (8 << 16) | (0xAE << 8) | 0xba;
const KVM_CREATE_VCPU: u64 = (0xAE << 8) | 0x41;
/// `KVM_GET_REGS` = _IOR(KVMIO, 0x81, struct kvm_regs (144 bytes)).
const KVM_GET_REGS: u64 = (2 << 30) | (144 << 16) | (0xAE << 8) | 0x81;
/// `KVM_GET_SREGS` = _IOR(KVMIO, 0x83, struct kvm_sregs (312 bytes)).
const KVM_GET_SREGS: u64 = (2 << 30) | (312 << 16) | (0xAE << 8) | 0x83;
/// `KVM_RUN`.
const KVM_RUN: u64 = (0xAE << 8) | 0x80;

const CAPABILITIES: u32 = 0;
const INIT_VM: u32 = 1;
const INIT_VCPU: u32 = 2;
const INIT_MEM_REGION: u32 = 3;
const FINALIZE_VM: u32 = 4;
const GET_CPUID: u32 = 5;
const MEASURE: u32 = 1;

const SEPT_VE_DISABLE: u64 = 1 << 28;
const SIGNIFICANT_INDEX: u32 = 1;
const EIO: i32 = libc::EIO;

/// `struct kvm_tdx_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct Cmd {
    id: u32,
    flags: u32,
    data: u64,
    hw_error: u64,
}

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Entry {
    function: u32,
    index: u32,
    flags: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
    padding: [u32; 3],
}

/// `struct kvm_tdx_capabilities` with room for 64 entries.
#[repr(C)]
struct Caps {
    supported_attrs: u64,
    supported_xfam: u64,
    tdvmcallinfo: [u64; 4],
    reserved: [u64; 250],
    nent: u32,
    padding: u32,
    entries: [Entry; 64],
}

/// `struct kvm_tdx_init_vm` with room for 257 entries.
#[repr(C)]
struct InitVm {
    attributes: u64,
    xfam: u64,
    mrconfigid: [u64; 6],
    mrowner: [u64; 6],
    mrownerconfig: [u64; 6],
    reserved: [u64; 12],
    nent: u32,
    padding: u32,
    entries: [Entry; 257],
}

/// `struct kvm_cpuid2` with room for 256 entries.
#[repr(C)]
struct Cpuid2 {
    nent: u32,
    padding: u32,
    entries: [Entry; 256],
}

/// `struct kvm_tdx_init_mem_region`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct MemRegion {
    source_addr: u64,
    gpa: u64,
    nr_pages: u64,
}

const _: () = {
    assert!(std::mem::size_of::<Cmd>() == 24);
    assert!(std::mem::size_of::<Entry>() == 40);
    assert!(std::mem::offset_of!(Caps, nent) == 2048);
    assert!(std::mem::offset_of!(InitVm, nent) == 256);
};

fn zeroed<T>() -> Box<T> {
    // SAFETY: every type used here is plain integers, for which all-zero is valid.
    unsafe { Box::new(std::mem::zeroed()) }
}

/// `KVM_MEMORY_ENCRYPT_OP` on `fd`: the result and the command block as the kernel left it.
fn op(fd: i32, id: u32, flags: u32, data: u64) -> (Result<i64, i32>, Cmd) {
    let mut c = Cmd {
        id,
        flags,
        data,
        hw_error: 0,
    };
    let r = ioctl(fd, KVM_MEMORY_ENCRYPT_OP, &mut c as *mut Cmd as u64);
    (r, c)
}

fn errno(r: Result<i64, i32>) -> Result<(), i32> {
    r.map(|_| ())
}

fn td(kvm: &File) -> Result<OwnedFd, String> {
    create_vm(kvm, KVM_X86_TDX_VM).map_err(|e| format!("KVM_CREATE_VM(TDX): errno {e}"))
}

/// CAPABILITIES with QEMU's retry: nent from 6, doubled on E2BIG.
fn caps(vm: i32) -> Result<Box<Caps>, String> {
    let mut c: Box<Caps> = zeroed();
    let mut nent = 6;
    loop {
        c.nent = nent;
        match op(vm, CAPABILITIES, 0, &mut *c as *mut Caps as u64).0 {
            Ok(_) => return Ok(c),
            Err(e) if e == E2BIG && nent < 64 => nent *= 2,
            Err(e) => return Err(format!("CAPABILITIES: errno {e}")),
        }
    }
}

/// INIT_VM's argument as QEMU builds it: the capability leaves as the CPUID configuration
/// (GPAW 48, F/M/S 0 = the platform's, sub-leaf entries flagged), SEPT_VE_DISABLE.
fn init_vm_arg(c: &Caps) -> Box<InitVm> {
    let mut iv: Box<InitVm> = zeroed();
    iv.attributes = SEPT_VE_DISABLE;
    iv.xfam = 0x3;
    for (i, e) in c.entries[..c.nent as usize].iter().enumerate() {
        let mut e = *e;
        if e.function == 0x8000_0008 {
            e.eax = (e.eax & !0xff_0000) | 48 << 16;
        }
        if matches!(e.function, 4 | 7 | 0x1f | 0x23) {
            e.flags = SIGNIFICANT_INDEX;
        }
        if e.function == 1 {
            e.eax = 0;
        }
        iv.entries[i] = e;
    }
    iv.nent = c.nent;
    iv
}

fn init_vm(vm: i32, iv: &mut InitVm) -> (Result<i64, i32>, Cmd) {
    op(vm, INIT_VM, 0, iv as *mut InitVm as u64)
}

/// KVM_TDX_INIT_VM of the TD `vm` with QEMU's default arguments: what a VMM does before it
/// creates a TD's vCPUs (other areas' tests use it for their TDs).
pub(crate) fn init_vm_default(vm: i32) -> Result<(), String> {
    let c = caps(vm)?;
    let mut iv = init_vm_arg(&c);
    let (r, cmd) = init_vm(vm, &mut iv);
    eq(errno(r), Ok(()), "INIT_VM")?;
    eq(cmd.hw_error, 0, "INIT_VM hw_error")
}

/// A TD after INIT_VM (QEMU's default arguments).
fn initialized_td(kvm: &File) -> Result<OwnedFd, String> {
    let vm = td(kvm)?;
    let c = caps(vm.as_raw_fd())?;
    let mut iv = init_vm_arg(&c);
    let (r, cmd) = init_vm(vm.as_raw_fd(), &mut iv);
    eq(errno(r), Ok(()), "INIT_VM")?;
    eq(cmd.hw_error, 0, "INIT_VM hw_error")?;
    Ok(vm)
}

fn vcpu(vm: i32, id: u64) -> Result<OwnedFd, i32> {
    ioctl(vm, KVM_CREATE_VCPU, id).map(|fd| {
        // SAFETY: a fresh fd from KVM_CREATE_VCPU, owned from now on.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    })
}

/// An initialised TD with `n` vCPUs (its split irqchip came with `create_vm`, as QEMU enables
/// it first).
fn td_with_vcpus(kvm: &File, n: u64) -> Result<(OwnedFd, Vec<OwnedFd>), String> {
    let vm = initialized_td(kvm)?;
    let mut v = Vec::new();
    for id in 0..n {
        v.push(vcpu(vm.as_raw_fd(), id).map_err(|e| format!("CREATE_VCPU({id}): errno {e}"))?);
    }
    Ok((vm, v))
}

fn get_cpuid(v: i32, nent: u32) -> (Result<i64, i32>, Box<Cpuid2>) {
    let mut c: Box<Cpuid2> = zeroed();
    c.nent = nent;
    let r = op(v, GET_CPUID, 0, &mut *c as *mut Cpuid2 as u64).0;
    (r, c)
}

/// `/sys/kernel/debug/tdx_kvm/tds`: (state, MRTD hex) of every live TD, oldest first.
fn tds() -> Vec<(String, String)> {
    std::fs::read_to_string("/sys/kernel/debug/tdx_kvm/tds")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let state = f
                .iter()
                .position(|&w| w == "state")
                .and_then(|i| f.get(i + 1))?;
            let mrtd = f
                .iter()
                .position(|&w| w == "mrtd")
                .and_then(|i| f.get(i + 1))?;
            Some((state.to_string(), mrtd.to_string()))
        })
        .collect()
}

/// A page-aligned anonymous mapping of `pages` pages filled by `fill`.
struct Image {
    ptr: *mut u8,
    len: usize,
}

impl Image {
    fn new(pages: usize, fill: impl Fn(usize) -> u8) -> Self {
        let len = pages * 4096;
        // SAFETY: a fresh private anonymous mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "mmap");
        let ptr = ptr.cast::<u8>();
        for i in 0..len {
            // SAFETY: inside the mapping.
            unsafe { *ptr.add(i) = fill(i) };
        }
        Image { ptr, len }
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const KVM_CREATE_GUEST_MEMFD: u64 = (3 << 30) | (64 << 16) | (0xAE << 8) | 0xd4;
const KVM_SET_USER_MEMORY_REGION2: u64 = (1 << 30) | (160 << 16) | (0xAE << 8) | 0x49;
const KVM_SET_MEMORY_ATTRIBUTES: u64 = (1 << 30) | (32 << 16) | (0xAE << 8) | 0xd2;

/// QEMU's step 3: a guest_memfd of `size` bytes bound to slot 0 at GPA 0 (the shared view in
/// an anonymous mapping), the range set PRIVATE. The files must outlive the TD's use of them.
fn private_slot(vm: i32, size: u64) -> Result<(OwnedFd, Image), String> {
    let mut g = [0u64; 8];
    g[0] = size;
    let fd = ioctl(vm, KVM_CREATE_GUEST_MEMFD, g.as_mut_ptr() as u64)
        .map_err(|e| format!("CREATE_GUEST_MEMFD: errno {e}"))?;
    // SAFETY: a fresh fd, owned from now on.
    let gmem = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let shared = Image::new(size as usize / 4096, |_| 0);
    let mut r = [0u64; 20];
    r[0] = 4 << 32; // slot 0, flags KVM_MEM_GUEST_MEMFD
    r[1] = 0; // gpa
    r[2] = size;
    r[3] = shared.addr();
    r[4] = 0; // guest_memfd_offset
    r[5] = fd as u64; // guest_memfd (u32), pad1
    ioctl(vm, KVM_SET_USER_MEMORY_REGION2, r.as_mut_ptr() as u64)
        .map_err(|e| format!("SET_USER_MEMORY_REGION2: errno {e}"))?;
    let mut a = [0, size, 1 << 3, 0u64];
    ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, a.as_mut_ptr() as u64)
        .map_err(|e| format!("SET_MEMORY_ATTRIBUTES(PRIVATE): errno {e}"))?;
    Ok((gmem, shared))
}

/// QEMU's TD bring-up (tdx-vm-abi.md §6) without the memory steps (no guest_memfd in this
/// module yet): CAPABILITIES, INIT_VM, two vCPUs, GET_CPUID, INIT_VCPU each, FINALIZE.
/// Returns the fds: vCPU 0, vCPU 1, VM.
fn qemu_bring_up_without_memory(kvm: &File) -> Result<Vec<OwnedFd>, String> {
    let vm = td(kvm)?;
    let c = caps(vm.as_raw_fd())?;
    let mut iv = init_vm_arg(&c);
    eq(errno(init_vm(vm.as_raw_fd(), &mut iv).0), Ok(()), "INIT_VM")?;
    let v0 = vcpu(vm.as_raw_fd(), 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    let v1 = vcpu(vm.as_raw_fd(), 1).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    eq(errno(get_cpuid(v0.as_raw_fd(), 256).0), Ok(()), "GET_CPUID")?;
    for v in [&v0, &v1] {
        eq(
            errno(op(v.as_raw_fd(), INIT_VCPU, 0, 0x80_0000).0),
            Ok(()),
            "INIT_VCPU",
        )?;
    }
    let (r, cmd) = op(vm.as_raw_fd(), FINALIZE_VM, 0, 0);
    eq(errno(r), Ok(()), "FINALIZE")?;
    eq(cmd.hw_error, 0, "FINALIZE hw_error")?;
    Ok(vec![v0, v1, vm])
}

/// The memory path of a TD: a TD brought up in QEMU's whole order with a measured image; two
/// TDs of one image measure the same MRTD, one changed byte changes it; INIT_MEM_REGION's
/// hostile input; private and shared pre-fault, conversions both ways and teardown in several
/// close orders on a finalised TD; races on a finalised TD.
pub(crate) fn memory_tests() -> Vec<Test> {
    vec![
        ("tdx_qemu_order_with_a_measured_image_and_mrtd", Tdx, |_| {
            let kvm = dev();
            let before = tds().len();
            let image = |i: usize| (i * 7 + 3) as u8;
            let a = qemu_bring_up(&kvm, 4, image)?;
            let b = qemu_bring_up(&kvm, 4, image)?;
            let c = qemu_bring_up(&kvm, 4, |i| {
                if i == 4096 + 17 {
                    image(i) ^ 1
                } else {
                    image(i)
                }
            })?;
            let t = tds();
            eq(t.len(), before + 3, "three more TDs listed")?;
            eq(&t[before].1, &t[before + 1].1, "same image, same MRTD")?;
            check(
                t[before].1 != t[before + 2].1,
                "one byte changed, MRTD changed",
            )?;
            check(t[before].1 != "0".repeat(96), "the MRTD is not all zero")?;
            drop((a, b, c));
            counts_are_zero()
        }),
        (
            "tdx_init_mem_region_from_guest_memfd_and_bad_input",
            Tdx,
            |_| init_mem_region_hostile(),
        ),
        ("tdx_td_memory_path_vm_fd_closed_first", Tdx, |_| {
            td_memory_path(CloseFirst::VmFd)
        }),
        ("tdx_td_memory_path_vcpu_closed_first", Tdx, |_| {
            td_memory_path(CloseFirst::Vcpus)
        }),
        ("tdx_td_memory_path_gmem_closed_first", Tdx, |_| {
            td_memory_path(CloseFirst::Gmem)
        }),
    ]
}

/// `KVM_TDX_INIT_MEM_REGION` of `region` on vCPU `v`: the result and the region written back.
fn mem_region(v: i32, flags: u32, region: MemRegion) -> (Result<(), i32>, MemRegion) {
    let mut r = region;
    let res = op(v, INIT_MEM_REGION, flags, &mut r as *mut MemRegion as u64).0;
    (errno(res), r)
}

/// KVM_TDX_INIT_MEM_REGION of `pages` pages from `source` at `gpa` on vCPU `v`, measured or
/// not (for the benchmark).
pub(crate) fn add_region(
    v: i32,
    measure: bool,
    source: u64,
    gpa: u64,
    pages: u64,
) -> Result<(), i32> {
    let flags = if measure { MEASURE } else { 0 };
    let region = MemRegion {
        source_addr: source,
        gpa,
        nr_pages: pages,
    };
    mem_region(v, flags, region).0
}

/// KVM_TDX_FINALIZE_VM of `vm`.
pub(crate) fn finalize(vm: i32) -> Result<(), String> {
    let (r, cmd) = op(vm, FINALIZE_VM, 0, 0);
    eq(errno(r), Ok(()), "FINALIZE")?;
    eq(cmd.hw_error, 0, "FINALIZE hw_error")
}

/// KVM_TDX_INIT_VCPU of every vCPU in `vcpus`.
pub(crate) fn init_vcpus(vcpus: &[&OwnedFd]) -> Result<(), String> {
    for v in vcpus {
        eq(
            errno(op(v.as_raw_fd(), INIT_VCPU, 0, 0x80_0000).0),
            Ok(()),
            "INIT_VCPU",
        )?;
    }
    Ok(())
}

/// A guest_memfd of `size` bytes bound as slot `id` at `gpa` (shared view at `hva`).
fn gmem_slot(vm: i32, id: u64, gpa: u64, size: u64, hva: u64) -> Result<OwnedFd, String> {
    let mut g = [0u64; 8];
    g[0] = size;
    let fd = ioctl(vm, KVM_CREATE_GUEST_MEMFD, g.as_mut_ptr() as u64)
        .map_err(|e| format!("CREATE_GUEST_MEMFD: errno {e}"))?;
    // SAFETY: a fresh fd, owned from now on.
    let gmem = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut r = [0u64; 20];
    r[0] = id | (1 << 34); // slot, flags KVM_MEM_GUEST_MEMFD
    r[1] = gpa;
    r[2] = size;
    r[3] = hva;
    r[4] = 0;
    r[5] = fd as u64;
    ioctl(vm, KVM_SET_USER_MEMORY_REGION2, r.as_mut_ptr() as u64)
        .map_err(|e| format!("SET_USER_MEMORY_REGION2: errno {e}"))?;
    Ok(gmem)
}

/// KVM_SET_MEMORY_ATTRIBUTES of `[gpa, gpa + size)` to `attributes`.
fn set_attrs(vm: i32, gpa: u64, size: u64, attributes: u64) -> Result<(), String> {
    let mut a = [gpa, size, attributes, 0u64];
    ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, a.as_mut_ptr() as u64)
        .map(|_| ())
        .map_err(|e| format!("SET_MEMORY_ATTRIBUTES({gpa:#x}, {size:#x}, {attributes}): errno {e}"))
}

const TD_SHARED_BIT: u64 = 1 << 47;
const PRIVATE_ATTR: u64 = 1 << 3;

/// INIT_MEM_REGION refuses what upstream refuses, with upstream's errnos, and adds nothing
/// then; a page is added once (EEXIST after); nothing after FINALIZE.
fn init_mem_region_hostile() -> Result<(), String> {
    let kvm = dev();
    let vm = initialized_td(&kvm)?;
    let fd = vm.as_raw_fd();
    let v0 = vcpu(fd, 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    let v = v0.as_raw_fd();
    let shared = Image::new(1024, |_| 0);
    // Slot 0: 2 MiB of guest_memfd at GPA 0, PRIVATE except its last page; slot 1: 1 MiB of
    // plain memory at 4 MiB, PRIVATE (so only "no guest_memfd" refuses it).
    let gmem = gmem_slot(fd, 0, 0, 2 << 20, shared.addr())?;
    set_attrs(fd, 0, (2 << 20) - 4096, PRIVATE_ATTR)?;
    let mut r = [0u64; 20];
    r[0] = 1;
    r[1] = 4 << 20;
    r[2] = 1 << 20;
    r[3] = shared.addr() + (2 << 20);
    ioctl(fd, KVM_SET_USER_MEMORY_REGION2, r.as_mut_ptr() as u64)
        .map_err(|e| format!("plain slot: errno {e}"))?;
    set_attrs(fd, 4 << 20, 1 << 20, PRIVATE_ATTR)?;
    let image = Image::new(4, |i| i as u8);
    let good = MemRegion {
        source_addr: image.addr(),
        gpa: 0x1000,
        nr_pages: 2,
    };
    let added = || vm_stat(&vm, "tdh_mem_page_add");
    // Before INIT_VCPU (upstream: the vCPU is not initialised): EINVAL.
    eq(
        mem_region(v, MEASURE, good),
        (Err(EINVAL), good),
        "before INIT_VCPU",
    )?;
    init_vcpus(&[&v0])?;
    let cases: [(&str, u32, MemRegion, i32); 12] = [
        (
            "unaligned GPA",
            MEASURE,
            MemRegion {
                gpa: 0x1800,
                ..good
            },
            EINVAL,
        ),
        (
            "unaligned source",
            MEASURE,
            MemRegion {
                source_addr: good.source_addr + 8,
                ..good
            },
            EINVAL,
        ),
        (
            "no pages",
            MEASURE,
            MemRegion {
                nr_pages: 0,
                ..good
            },
            EINVAL,
        ),
        (
            "nr_pages wraps the GPA",
            MEASURE,
            MemRegion {
                nr_pages: u64::MAX >> 12,
                ..good
            },
            EINVAL,
        ),
        (
            "nr_pages << 12 overflows",
            MEASURE,
            MemRegion {
                nr_pages: 1 << 52,
                ..good
            },
            EINVAL,
        ),
        (
            "shared-bit GPA",
            MEASURE,
            MemRegion {
                gpa: TD_SHARED_BIT | 0x1000,
                ..good
            },
            EINVAL,
        ),
        (
            "ends in the shared half",
            MEASURE,
            MemRegion {
                gpa: TD_SHARED_BIT - 0x1000,
                ..good
            },
            EINVAL,
        ),
        ("reserved flag", 2, good, EINVAL),
        (
            "not PRIVATE",
            MEASURE,
            MemRegion {
                gpa: (2 << 20) - 4096,
                nr_pages: 1,
                ..good
            },
            EINVAL,
        ),
        (
            "slot without guest_memfd",
            MEASURE,
            MemRegion {
                gpa: 4 << 20,
                ..good
            },
            EINVAL,
        ),
        (
            "no slot",
            MEASURE,
            MemRegion {
                gpa: 64 << 20,
                ..good
            },
            EINVAL,
        ),
        (
            "bad source pointer",
            MEASURE,
            MemRegion {
                source_addr: 0x1000,
                ..good
            },
            EFAULT,
        ),
    ];
    for (what, flags, region, want) in cases {
        eq(mem_region(v, flags, region).0, Err(want), what)?;
    }
    eq(added()?, 0, "nothing added by a refused region")?;
    // A bad region pointer and a kernel address: EFAULT.
    eq(
        errno(op(v, INIT_MEM_REGION, MEASURE, 0).0),
        Err(EFAULT),
        "NULL region",
    )?;
    eq(
        errno(op(v, INIT_MEM_REGION, MEASURE, 0xffff_ffff_8000_0000).0),
        Err(EFAULT),
        "kernel region pointer",
    )?;
    // Two pages, measured: 2 PAGE.ADD, 32 MR.EXTEND; the progress written back.
    let extends = vm_stat(&vm, "tdh_mr_extend")?;
    let (res, back) = mem_region(v, MEASURE, good);
    eq(res, Ok(()), "INIT_MEM_REGION")?;
    eq(back.nr_pages, 0, "all pages")?;
    eq(added()?, 2, "two PAGE.ADDs")?;
    eq(
        vm_stat(&vm, "tdh_mr_extend")? - extends,
        32,
        "16 MR.EXTEND per page",
    )?;
    // Unmeasured: PAGE.ADD only.
    let (res, _) = mem_region(
        v,
        0,
        MemRegion {
            gpa: 0x8000,
            nr_pages: 1,
            ..good
        },
    );
    eq(res, Ok(()), "unmeasured page")?;
    eq(
        vm_stat(&vm, "tdh_mr_extend")? - extends,
        32,
        "no MR.EXTEND unmeasured",
    )?;
    // A page added before: EEXIST, with the progress of the pages before it.
    let (res, back) = mem_region(
        v,
        MEASURE,
        MemRegion {
            gpa: 0,
            nr_pages: 3,
            ..good
        },
    );
    eq(res, Err(libc::EEXIST), "repeat")?;
    eq(
        (back.gpa, back.nr_pages),
        (0x1000, 2),
        "progress up to the page added before",
    )?;
    eq(added()?, 4, "the page before it was added")?;
    finalize(fd)?;
    eq(
        mem_region(
            v,
            MEASURE,
            MemRegion {
                gpa: 0x10000,
                nr_pages: 1,
                ..good
            },
        )
        .0,
        Err(EINVAL),
        "after FINALIZE",
    )?;
    drop((v0, gmem, vm, shared, image));
    counts_are_zero()
}

#[derive(Clone, Copy)]
/// Which fd of a TD goes first at teardown.
enum CloseFirst {
    VmFd,
    Vcpus,
    Gmem,
}

/// One TD in QEMU's order (tdx-vm-abi.md §6) through its memory path: CAPABILITIES, INIT_VM,
/// vCPUs, INIT_VCPU, a guest_memfd slot (REGION2 + PRIVATE), INIT_MEM_REGION of a measured
/// image, FINALIZE; then private pre-fault (2 MiB leaves where the range allows), shared
/// pre-fault, the shared alias refused, conversions both ways with the zaps seen in the page
/// counts and SEAMCALL statistics; closed in `order`, every page given back.
fn td_memory_path(order: CloseFirst) -> Result<(), String> {
    const MB: u64 = 1 << 20;
    let kvm = dev();
    let vm = td(&kvm)?;
    let fd = vm.as_raw_fd();
    let c = caps(fd)?;
    let mut iv = init_vm_arg(&c);
    eq(errno(init_vm(fd, &mut iv).0), Ok(()), "INIT_VM")?;
    let v0 = vcpu(fd, 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    let v1 = vcpu(fd, 1).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    eq(errno(get_cpuid(v0.as_raw_fd(), 256).0), Ok(()), "GET_CPUID")?;
    init_vcpus(&[&v0, &v1])?;
    let shared = Image::new(8 * 256, |_| 0);
    let gmem = gmem_slot(fd, 0, 0, 8 * MB, shared.addr())?;
    set_attrs(fd, 0, 8 * MB, PRIVATE_ATTR)?;
    let image = Image::new(16, |i| (i % 251) as u8);
    let (res, _) = mem_region(
        v0.as_raw_fd(),
        MEASURE,
        MemRegion {
            source_addr: image.addr(),
            gpa: 0,
            nr_pages: 16,
        },
    );
    eq(res, Ok(()), "INIT_MEM_REGION")?;
    drop(image);
    let s = |n: &str| vm_stat(&vm, n);
    eq(s("tdh_mem_page_add")?, 16, "16 PAGE.ADDs")?;
    eq(s("mirror_pages_4k")?, 16, "16 private 4 KiB leaves")?;
    eq(
        pre_fault(&v0, 2 * MB, MB, 0).0,
        Err(libc::EOPNOTSUPP),
        "pre-fault before FINALIZE",
    )?;
    finalize(fd)?;
    check(
        tds().iter().any(|(st, _)| st == "runnable"),
        "the TD is listed runnable",
    )?;
    // Private pre-fault of [2, 6) MiB: two 2 MiB leaves (SEPT.ADD + PAGE.AUG at 2M).
    let augs = s("tdh_mem_page_aug")?;
    let (r, range) = pre_fault(&v0, 2 * MB, 4 * MB, 0);
    eq(r, Ok(0), "private pre-fault")?;
    eq(range.size, 0, "all of it")?;
    eq(s("mirror_pages_2m")?, 2, "two private 2 MiB leaves")?;
    eq(s("tdh_mem_page_aug")? - augs, 2, "one PAGE.AUG per 2 MiB")?;
    // The first 2 MiB holds the image's 4 KiB pages: the rest comes at 4 KiB, the image stays.
    let (r, _) = pre_fault(&v1, 0, 2 * MB, 0);
    eq(r, Ok(0), "private pre-fault around the image")?;
    eq(s("mirror_pages_4k")?, 512, "first 2 MiB at 4 KiB")?;
    eq(s("tdh_mem_page_add")?, 16, "the image is not added again")?;
    eq(
        vm_stat(&v0, "pre_fault_calls")?,
        2,
        "vCPU 0 pre-fault calls",
    )?;
    eq(
        vm_stat(&v0, "pre_fault_pages")?,
        1024,
        "vCPU 0 pre-faulted 4 MiB",
    )?;
    eq(
        vm_stat(&v1, "pre_fault_pages")?,
        512,
        "vCPU 1 pre-faulted 2 MiB",
    )?;
    // The shared alias is not a memslot GPA (upstream kvm_is_gfn_alias): EINVAL.
    eq(
        pre_fault(&v0, TD_SHARED_BIT | (6 * MB), MB, 0).0,
        Err(EINVAL),
        "shared alias",
    )?;
    // Private → shared of [6, 8) MiB, then a shared pre-fault: the shared root, through GUP.
    set_attrs(fd, 6 * MB, 2 * MB, 0)?;
    let (r, range) = pre_fault(&v0, 6 * MB, 2 * MB, 0);
    eq(r, Ok(0), "shared pre-fault")?;
    eq(range.size, 0, "all of it")?;
    eq(
        s("shared_pages_4k")? + 512 * s("shared_pages_2m")?,
        512,
        "2 MiB shared in the shared root",
    )?;
    // Private → shared of [4, 6) MiB: its 2 MiB private leaf is zapped (BLOCK, TRACK, REMOVE).
    let removes = s("tdh_mem_page_remove")?;
    set_attrs(fd, 4 * MB, 2 * MB, 0)?;
    eq(s("mirror_pages_2m")?, 1, "one 2 MiB private leaf left")?;
    check(s("tdh_mem_page_remove")? > removes, "PAGE.REMOVE ran")?;
    // Shared → private of [6, 8) MiB: its shared mappings are zapped.
    set_attrs(fd, 6 * MB, 2 * MB, PRIVATE_ATTR)?;
    eq(
        s("shared_pages_4k")? + s("shared_pages_2m")?,
        0,
        "shared mappings zapped",
    )?;
    // And private again by pre-fault.
    eq(
        pre_fault(&v1, 6 * MB, 2 * MB, 0).0,
        Ok(0),
        "pre-fault again",
    )?;
    eq(s("mirror_pages_2m")?, 2, "a 2 MiB leaf again")?;
    match order {
        CloseFirst::VmFd => {
            drop(vm);
            drop((v0, v1));
            drop(gmem);
        }
        CloseFirst::Vcpus => {
            drop((v0, v1));
            drop(gmem);
            drop(vm);
        }
        CloseFirst::Gmem => {
            drop(gmem);
            drop(vm);
            drop((v1, v0));
        }
    }
    drop(shared);
    counts_are_zero()
}

/// QEMU's TD bring-up (tdx-vm-abi.md §6) with an image of `pages` pages whose byte `i` is
/// `fill(i)`, measured; ends with FINALIZE. Returns the fds (the TD stays alive).
fn qemu_bring_up(
    kvm: &File,
    pages: usize,
    fill: impl Fn(usize) -> u8,
) -> Result<Vec<OwnedFd>, String> {
    let vm = td(kvm)?;
    let c = caps(vm.as_raw_fd())?;
    let (gmem, shared) = private_slot(vm.as_raw_fd(), 2 << 20)?;
    let mut iv = init_vm_arg(&c);
    eq(errno(init_vm(vm.as_raw_fd(), &mut iv).0), Ok(()), "INIT_VM")?;
    let v0 = vcpu(vm.as_raw_fd(), 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
    let (r, _) = get_cpuid(v0.as_raw_fd(), 256);
    eq(errno(r), Ok(()), "GET_CPUID")?;
    eq(
        errno(op(v0.as_raw_fd(), INIT_VCPU, 0, 0x80_0000).0),
        Ok(()),
        "INIT_VCPU",
    )?;
    let image = Image::new(pages, fill);
    let mut region = MemRegion {
        source_addr: image.addr(),
        gpa: 0x10_0000,
        nr_pages: pages as u64,
    };
    let r = op(
        v0.as_raw_fd(),
        INIT_MEM_REGION,
        MEASURE,
        &mut region as *mut MemRegion as u64,
    )
    .0;
    eq(errno(r), Ok(()), "INIT_MEM_REGION")?;
    eq(
        region,
        MemRegion {
            source_addr: image.addr() + pages as u64 * 4096,
            gpa: 0x10_0000 + pages as u64 * 4096,
            nr_pages: 0,
        },
        "INIT_MEM_REGION progress written back",
    )?;
    drop(image); // QEMU discards the firmware copy
    let (r, cmd) = op(vm.as_raw_fd(), FINALIZE_VM, 0, 0);
    eq(errno(r), Ok(()), "FINALIZE")?;
    eq(cmd.hw_error, 0, "FINALIZE hw_error")?;
    drop(shared);
    Ok(vec![v0, gmem, vm])
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        ("tdx_init_vm_takes_the_vm_tsc_rate", Tdx, |_| {
            // TD_PARAMS.TSC_FREQUENCY comes from KVM_SET_TSC_KHZ on the VM fd (upstream's
            // default_tsc_khz): 50 MHz is below the TDX module's 100 MHz minimum, so
            // TDH.MNG.INIT refuses it (EINVAL, status in hw_error); 2 GHz is accepted.
            let kvm = dev();
            let vm = td(&kvm)?;
            let c = caps(vm.as_raw_fd())?;
            eq(
                ioctl(vm.as_raw_fd(), io(0xa2), 50_000),
                Ok(0),
                "SET_TSC_KHZ 50 MHz",
            )?;
            let mut iv = init_vm_arg(&c);
            let (r, cmd) = init_vm(vm.as_raw_fd(), &mut iv);
            eq(errno(r), Err(EINVAL), "INIT_VM at 50 MHz")?;
            check(cmd.hw_error != 0, "TDH.MNG.INIT status in hw_error")?;
            eq(
                ioctl(vm.as_raw_fd(), io(0xa2), 2_000_000),
                Ok(0),
                "SET_TSC_KHZ 2 GHz",
            )?;
            let mut iv = init_vm_arg(&c);
            let (r, cmd) = init_vm(vm.as_raw_fd(), &mut iv);
            eq((errno(r), cmd.hw_error), (Ok(()), 0), "INIT_VM at 2 GHz")?;
            let v = vcpu(vm.as_raw_fd(), 0).map_err(|e| format!("CREATE_VCPU: errno {e}"))?;
            eq(
                ioctl(v.as_raw_fd(), io(0xa3), 0),
                Ok(2_000_000),
                "vCPU GET_TSC_KHZ",
            )?;
            drop(v);
            drop(vm);
            counts_are_zero()
        }),
        ("tdx_memory_encrypt_op_on_a_plain_vm_is_enotty", Any, |_| {
            let kvm = dev();
            let vm = create_vm(&kvm, 0).map_err(|e| format!("CREATE_VM: {e}"))?;
            let mut c = Cmd::default();
            eq(
                ioctl(
                    vm.as_raw_fd(),
                    KVM_MEMORY_ENCRYPT_OP,
                    &mut c as *mut Cmd as u64,
                ),
                Err(ENOTTY),
                "MEMORY_ENCRYPT_OP on a default VM",
            )
        }),
        (
            "tdx_capabilities_e2big_then_the_modules_leaves",
            Tdx,
            |_| {
                let kvm = dev();
                let vm = td(&kvm)?;
                let mut c: Box<Caps> = zeroed();
                c.nent = 6;
                let (r, _) = op(vm.as_raw_fd(), CAPABILITIES, 0, &mut *c as *mut Caps as u64);
                eq(errno(r), Err(E2BIG), "nent 6")?;
                eq(c.nent, 6, "nent not written back on E2BIG")?;
                let c = caps(vm.as_raw_fd())?;
                eq(c.nent, 18, "configurable leaves")?;
                eq(c.supported_attrs, SEPT_VE_DISABLE, "supported_attrs")?;
                check(c.supported_xfam & 3 == 3, "x87 and SSE in supported_xfam")?;
                let e8 = c.entries[..18].iter().find(|e| e.function == 0x8000_0008);
                eq(
                    e8.map(|e| e.eax >> 16 & 0xff),
                    Some(0xff),
                    "0x80000008 EAX[23:16]",
                )?;
                let e7 = c.entries[..18]
                    .iter()
                    .find(|e| (e.function, e.index) == (7, 0));
                eq(
                    e7.map(|e| (e.ebx & (1 << 4 | 1 << 11), e.ecx & (1 << 5))),
                    Some((0, 0)),
                    "no TSX/WAITPKG",
                )?;
                eq(c.entries[0].index, 0, "leaf 1 (no sub-leaf) shows index 0")?;
                // Upstream answers from a zeroed buffer: what the caller left in the reserved
                // words and the padding comes back as zeros.
                let mut d: Box<Caps> = zeroed();
                d.nent = 64;
                d.reserved = [0x5a5a_5a5a_5a5a_5a5a; 250];
                d.padding = 7;
                let (r, _) = op(vm.as_raw_fd(), CAPABILITIES, 0, &mut *d as *mut Caps as u64);
                eq(errno(r), Ok(()), "CAPABILITIES with dirty reserved words")?;
                check(
                    d.reserved.iter().all(|&w| w == 0) && d.padding == 0,
                    "reserved words and padding written back as zeros",
                )?;
                // Any time: after INIT_VM too.
                let vm = initialized_td(&kvm)?;
                caps(vm.as_raw_fd()).map(|_| ())
            },
        ),
        ("tdx_vm_op_hostile_input", Tdx, |_| {
            let kvm = dev();
            let vm = td(&kvm)?;
            let fd = vm.as_raw_fd();
            eq(ioctl(fd, KVM_MEMORY_ENCRYPT_OP, 0), Err(EFAULT), "null cmd")?;
            eq(
                ioctl(fd, KVM_MEMORY_ENCRYPT_OP, 0x1000),
                Err(EFAULT),
                "unmapped cmd",
            )?;
            eq(
                ioctl(fd, KVM_MEMORY_ENCRYPT_OP, 0xffff_8000_0000_0000),
                Err(EFAULT),
                "kernel cmd",
            )?;
            let mut c = Cmd {
                id: CAPABILITIES,
                hw_error: 1,
                ..Cmd::default()
            };
            eq(
                ioctl(fd, KVM_MEMORY_ENCRYPT_OP, &mut c as *mut Cmd as u64),
                Err(EINVAL),
                "hw_error 1",
            )?;
            for id in [INIT_VCPU, INIT_MEM_REGION, GET_CPUID, 6, 0xffff_ffff] {
                eq(
                    errno(op(fd, id, 0, 0).0),
                    Err(EINVAL),
                    &format!("id {id} on the VM fd"),
                )?;
            }
            eq(
                errno(op(fd, CAPABILITIES, 1, 0).0),
                Err(EINVAL),
                "CAPABILITIES flags",
            )?;
            eq(
                errno(op(fd, CAPABILITIES, 0, 0).0),
                Err(EFAULT),
                "CAPABILITIES null data",
            )?;
            eq(
                errno(op(fd, CAPABILITIES, 0, 0x1000).0),
                Err(EFAULT),
                "CAPABILITIES unmapped",
            )?;
            // The command block sits in read-only memory: written back → EFAULT.
            let ro = Image::new(1, |_| 0);
            // SAFETY: the mapping made by `Image::new`.
            unsafe { libc::mprotect(ro.ptr.cast(), 4096, libc::PROT_READ) };
            eq(
                ioctl(fd, KVM_MEMORY_ENCRYPT_OP, ro.addr()),
                Err(EFAULT),
                "read-only cmd (CAPABILITIES, data 0)",
            )?;
            // FINALIZE before INIT_VM.
            eq(
                errno(op(fd, FINALIZE_VM, 0, 0).0),
                Err(EINVAL),
                "FINALIZE before INIT_VM",
            )?;
            drop(vm);
            counts_are_zero()
        }),
        ("tdx_init_vm_hostile_input_and_order", Tdx, |_| {
            let kvm = dev();
            let vm = td(&kvm)?;
            let fd = vm.as_raw_fd();
            let c = caps(fd)?;
            let good = init_vm_arg(&c);
            let try_with = |f: &dyn Fn(&mut InitVm)| {
                let mut iv: Box<InitVm> = zeroed();
                // SAFETY: plain integers, same type: a byte copy.
                unsafe { std::ptr::copy_nonoverlapping(&*good, &mut *iv, 1) };
                f(&mut iv);
                init_vm(fd, &mut iv)
            };
            eq(errno(op(fd, INIT_VM, 1, 0).0), Err(EINVAL), "flags")?;
            eq(errno(op(fd, INIT_VM, 0, 0).0), Err(EFAULT), "null data")?;
            eq(
                errno(try_with(&|iv| iv.reserved[3] = 1).0),
                Err(EINVAL),
                "reserved",
            )?;
            eq(
                errno(try_with(&|iv| iv.padding = 1).0),
                Err(EINVAL),
                "cpuid.padding",
            )?;
            eq(
                errno(try_with(&|iv| iv.nent = 257).0),
                Err(E2BIG),
                "nent 257",
            )?;
            eq(
                errno(try_with(&|iv| iv.attributes = 1).0),
                Err(EINVAL),
                "DEBUG",
            )?;
            eq(
                errno(try_with(&|iv| iv.xfam = 0x3 | 1 << 40).0),
                Err(EINVAL),
                "xfam",
            )?;
            eq(
                errno(
                    try_with(&|iv| {
                        for e in &mut iv.entries[..iv.nent as usize] {
                            if e.function == 0x8000_0008 {
                                e.eax = (e.eax & !0xff_0000) | 36 << 16;
                            }
                        }
                    })
                    .0,
                ),
                Err(EINVAL),
                "GPAW 36",
            )?;
            eq(
                errno(
                    try_with(&|iv| {
                        let n = iv.nent as usize;
                        iv.entries[n] = Entry {
                            function: 3,
                            ..Entry::default()
                        };
                        iv.nent += 1;
                    })
                    .0,
                ),
                Err(EINVAL),
                "a leaf that is not configurable",
            )?;
            eq(
                errno(
                    try_with(&|iv| {
                        for e in &mut iv.entries[..iv.nent as usize] {
                            if (e.function, e.index) == (7, 0) {
                                e.ebx |= 1 << 4 | 1 << 11;
                            }
                        }
                    })
                    .0,
                ),
                Err(EINVAL),
                "TSX",
            )?;
            // Entries past the end of readable memory (the next page is PROT_NONE): EFAULT.
            let img = Image::new(2, |_| 0);
            let hdr = 4096 - 256 - 8;
            // SAFETY: the header fits in the first page; the entries would follow it into the
            // second, which is made inaccessible first.
            unsafe {
                libc::mprotect(img.ptr.add(4096).cast(), 4096, libc::PROT_NONE);
                let p = img.ptr.add(hdr);
                std::ptr::write_bytes(p, 0, 264);
                *(p.add(256) as *mut u32) = 2;
            }
            eq(
                errno(op(fd, INIT_VM, 0, img.addr() + hdr as u64).0),
                Err(EFAULT),
                "entries unmapped",
            )?;
            // The module refuses a value KVM passes on: EINVAL with hw_error = its status.
            let (r, cmd) = try_with(&|iv| {
                for e in &mut iv.entries[..iv.nent as usize] {
                    if (e.function, e.index) == (7, 0) {
                        e.ebx |= 1; // FSGSBASE: native, not configurable
                    }
                }
            });
            eq(errno(r), Err(EINVAL), "module refuses (7,0).EBX[0]")?;
            eq(
                cmd.hw_error,
                0xC000_0100_0000_0045,
                "hw_error = OPERAND_INVALID|CPUID_CONFIG",
            )?;
            // vCPUs before INIT_VM: EIO (upstream's tdx_vcpu_create).
            eq(
                vcpu(fd, 0).map(|_| ()),
                Err(EIO),
                "CREATE_VCPU before INIT_VM",
            )?;
            // Now the good one, then INIT_VM again: EINVAL.
            let (r, cmd) = try_with(&|_| {});
            eq(errno(r), Ok(()), "INIT_VM")?;
            eq(cmd.hw_error, 0, "hw_error after success")?;
            eq(errno(try_with(&|_| {}).0), Err(EINVAL), "second INIT_VM")?;
            drop(vm);
            counts_are_zero()
        }),
        (
            "tdx_vcpus_up_to_max_vcpus_between_init_vm_and_finalize",
            Tdx,
            |_| {
                let kvm = dev();
                let (vm, mut v) = td_with_vcpus(&kvm, 1)?;
                let fd = vm.as_raw_fd();
                // A TD's vCPU limit is the host's present CPUs (KVM_CAP_MAX_VCPUS on the VM fd).
                let max = ioctl(fd, io(0x03), 66).map_err(|e| format!("MAX_VCPUS: {e}"))?;
                check(
                    (1..=1024).contains(&max),
                    &format!("KVM_CAP_MAX_VCPUS = {max}"),
                )?;
                for id in 1..max as u64 {
                    v.push(vcpu(fd, id).map_err(|e| format!("CREATE_VCPU({id}): errno {e}"))?);
                }
                eq(
                    vcpu(fd, max as u64).map(|_| ()),
                    Err(EINVAL),
                    "one vCPU past the limit",
                )?;
                for x in &v {
                    eq(
                        errno(op(x.as_raw_fd(), INIT_VCPU, 0, 0).0),
                        Ok(()),
                        "INIT_VCPU",
                    )?;
                }
                eq(errno(op(fd, FINALIZE_VM, 0, 0).0), Ok(()), "FINALIZE")?;
                drop((v, vm));
                counts_are_zero()
            },
        ),
        ("tdx_init_vcpu_rules", Tdx, |_| {
            let kvm = dev();
            let (vm, v) = td_with_vcpus(&kvm, 2)?;
            let (fd, v0, v1) = (vm.as_raw_fd(), v[0].as_raw_fd(), v[1].as_raw_fd());
            eq(ioctl(v0, KVM_MEMORY_ENCRYPT_OP, 0), Err(EFAULT), "null cmd")?;
            let mut c = Cmd {
                id: INIT_VCPU,
                hw_error: 5,
                ..Cmd::default()
            };
            eq(
                ioctl(v0, KVM_MEMORY_ENCRYPT_OP, &mut c as *mut Cmd as u64),
                Err(EINVAL),
                "hw_error",
            )?;
            eq(errno(op(v0, INIT_VCPU, 1, 0).0), Err(EINVAL), "flags")?;
            for id in [CAPABILITIES, INIT_VM, FINALIZE_VM, 6] {
                eq(
                    errno(op(v0, id, 0, 0).0),
                    Err(EINVAL),
                    &format!("id {id} on a vCPU fd"),
                )?;
            }
            eq(
                errno(op(fd, INIT_VCPU, 0, 0).0),
                Err(EINVAL),
                "INIT_VCPU on the VM fd",
            )?;
            // INIT_MEM_REGION before INIT_VCPU: EINVAL.
            let mut r = MemRegion {
                source_addr: 0,
                gpa: 0,
                nr_pages: 1,
            };
            eq(
                errno(op(v0, INIT_MEM_REGION, 0, &mut r as *mut MemRegion as u64).0),
                Err(EINVAL),
                "INIT_MEM_REGION first",
            )?;
            // Register access refused while the state is protected (before and after).
            let mut regs = [0u8; 312];
            eq(
                ioctl(v0, KVM_GET_REGS, regs.as_mut_ptr() as u64).map(|_| ()),
                Err(EINVAL),
                "GET_REGS",
            )?;
            eq(
                ioctl(v0, KVM_GET_SREGS, regs.as_mut_ptr() as u64).map(|_| ()),
                Err(EINVAL),
                "GET_SREGS",
            )?;
            eq(
                errno(op(v0, INIT_VCPU, 0, 0x1234_5000).0),
                Ok(()),
                "INIT_VCPU",
            )?;
            eq(
                errno(op(v0, INIT_VCPU, 0, 0).0),
                Err(EINVAL),
                "INIT_VCPU twice",
            )?;
            eq(
                ioctl(v0, KVM_GET_REGS, regs.as_mut_ptr() as u64).map(|_| ()),
                Err(EINVAL),
                "GET_REGS after",
            )?;
            eq(
                ioctl(v0, KVM_RUN, 0).map(|_| ()),
                Err(EINVAL),
                "RUN before FINALIZE",
            )?;
            eq(errno(op(v1, INIT_VCPU, 0, 0).0), Ok(()), "INIT_VCPU vCPU 1")?;
            eq(errno(op(fd, FINALIZE_VM, 0, 0).0), Ok(()), "FINALIZE")?;
            // Nothing on a vCPU fd after FINALIZE.
            eq(
                errno(op(v0, INIT_VCPU, 0, 0).0),
                Err(EINVAL),
                "INIT_VCPU after FINALIZE",
            )?;
            eq(
                errno(op(v0, GET_CPUID, 0, 0).0),
                Err(EINVAL),
                "GET_CPUID after FINALIZE",
            )?;
            drop((v, vm));
            counts_are_zero()
        }),
        ("tdx_finalize_rules", Tdx, |_| {
            let kvm = dev();
            let vm = td(&kvm)?;
            let fd = vm.as_raw_fd();
            eq(
                errno(op(fd, FINALIZE_VM, 0, 0).0),
                Err(EINVAL),
                "before INIT_VM",
            )?;
            drop(vm);
            let vm = initialized_td(&kvm)?;
            let fd = vm.as_raw_fd();
            let mut c = Cmd {
                id: FINALIZE_VM,
                hw_error: 1,
                ..Cmd::default()
            };
            eq(
                ioctl(fd, KVM_MEMORY_ENCRYPT_OP, &mut c as *mut Cmd as u64),
                Err(EINVAL),
                "hw_error",
            )?;
            // No vCPU: TDH.MR.FINALIZE refuses (TDX_NO_VCPUS): EIO, with the status in hw_error.
            let (r, cmd) = op(fd, FINALIZE_VM, 0, 0);
            eq(errno(r), Err(EIO), "FINALIZE without vCPUs")?;
            check(
                cmd.hw_error >> 32 == 0xC000_0609,
                &format!("hw_error {:#x}", cmd.hw_error),
            )?;
            drop(vm);
            let (vm, v) = td_with_vcpus(&kvm, 1)?;
            let fd = vm.as_raw_fd();
            eq(
                errno(op(v[0].as_raw_fd(), INIT_VCPU, 0, 0).0),
                Ok(()),
                "INIT_VCPU",
            )?;
            let (r, cmd) = op(fd, FINALIZE_VM, 0, 0);
            eq(errno(r), Ok(()), "FINALIZE")?;
            eq(cmd.hw_error, 0, "hw_error")?;
            eq(
                errno(op(fd, FINALIZE_VM, 0, 0).0),
                Err(EINVAL),
                "FINALIZE twice",
            )?;
            let mut iv = init_vm_arg(&*caps(fd)?);
            eq(
                errno(init_vm(fd, &mut iv).0),
                Err(EINVAL),
                "INIT_VM after FINALIZE",
            )?;
            eq(
                vcpu(fd, 5).map(|_| ()),
                Err(EIO),
                "CREATE_VCPU after FINALIZE",
            )?;
            drop((v, vm));
            counts_are_zero()
        }),
        ("tdx_get_cpuid_e2big_and_entries", Tdx, |_| {
            let kvm = dev();
            let (vm, v) = td_with_vcpus(&kvm, 1)?;
            let v0 = v[0].as_raw_fd();
            eq(errno(op(v0, GET_CPUID, 0, 0).0), Err(EFAULT), "null")?;
            eq(
                errno(op(v0, GET_CPUID, 0, 0x1000).0),
                Err(EFAULT),
                "unmapped",
            )?;
            eq(
                errno(op(v0, GET_CPUID, 0, 0xffff_8000_0000_0000).0),
                Err(EFAULT),
                "kernel pointer",
            )?;
            // A read-only buffer with room: the header cannot be written back.
            let ro = Image::new(4, |_| 0);
            // SAFETY: the mapping made by `Image::new`; nent = 256 in its first word.
            unsafe {
                *(ro.ptr as *mut u32) = 256;
                libc::mprotect(ro.ptr.cast(), 4 * 4096, libc::PROT_READ);
            }
            eq(
                errno(op(v0, GET_CPUID, 0, ro.addr()).0),
                Err(EFAULT),
                "read-only buffer",
            )?;
            let mut c = Cmd {
                id: GET_CPUID,
                hw_error: 1,
                ..Cmd::default()
            };
            eq(
                ioctl(v0, KVM_MEMORY_ENCRYPT_OP, &mut c as *mut Cmd as u64),
                Err(EINVAL),
                "hw_error",
            )?;
            eq(
                errno(op(vm.as_raw_fd(), GET_CPUID, 0, 0).0),
                Err(EINVAL),
                "on the VM fd",
            )?;
            let (r, c) = get_cpuid(v0, 2);
            eq(errno(r), Err(E2BIG), "nent 2")?;
            let n = c.nent;
            check(n > 2, &format!("nent written back on E2BIG: {n}"))?;
            let (r, c) = get_cpuid(v0, n);
            eq(errno(r), Ok(()), "GET_CPUID")?;
            eq(c.nent, n, "nent")?;
            let e = &c.entries[..n as usize];
            eq(e[0].function, 0, "leaf 0 first")?;
            eq(
                (e[0].ebx, e[0].edx, e[0].ecx),
                (0x756e_6547, 0x4965_6e69, 0x6c65_746e),
                "GenuineIntel",
            )?;
            let e8 = e
                .iter()
                .find(|x| x.function == 0x8000_0008)
                .ok_or("no 0x80000008")?;
            eq(e8.eax >> 16 & 0xff, 48, "GPAW in 0x80000008 EAX[23:16]")?;
            let e15 = e.iter().find(|x| x.function == 0x15).ok_or("no 0x15")?;
            check(e15.ebx != 0, "0x15 EBX: the TSC frequency")?;
            check(
                e.iter()
                    .any(|x| (x.function, x.index, x.flags) == (7, 1, SIGNIFICANT_INDEX)),
                "(7,1) flagged",
            )?;
            drop((v, vm));
            counts_are_zero()
        }),
        ("tdx_init_mem_region_hostile_input", Tdx, |_| {
            let kvm = dev();
            let (vm, v) = td_with_vcpus(&kvm, 1)?;
            let v0 = v[0].as_raw_fd();
            eq(errno(op(v0, INIT_VCPU, 0, 0).0), Ok(()), "INIT_VCPU")?;
            let img = Image::new(1, |i| i as u8);
            let go = |flags: u32, r: MemRegion| {
                let mut r = r;
                errno(op(v0, INIT_MEM_REGION, flags, &mut r as *mut MemRegion as u64).0)
            };
            let ok = MemRegion {
                source_addr: img.addr(),
                gpa: 0x10_0000,
                nr_pages: 1,
            };
            eq(go(2, ok), Err(EINVAL), "flags bit 1")?;
            eq(
                go(
                    0,
                    MemRegion {
                        source_addr: img.addr() + 8,
                        ..ok
                    },
                ),
                Err(EINVAL),
                "source unaligned",
            )?;
            eq(
                go(
                    0,
                    MemRegion {
                        gpa: 0x10_0800,
                        ..ok
                    },
                ),
                Err(EINVAL),
                "gpa unaligned",
            )?;
            eq(
                go(0, MemRegion { nr_pages: 0, ..ok }),
                Err(EINVAL),
                "0 pages",
            )?;
            eq(
                go(0, MemRegion { gpa: 1 << 47, ..ok }),
                Err(EINVAL),
                "shared GPA",
            )?;
            eq(
                go(
                    0,
                    MemRegion {
                        gpa: (1 << 47) - 4096,
                        nr_pages: 2,
                        ..ok
                    },
                ),
                Err(EINVAL),
                "ends shared",
            )?;
            eq(
                go(
                    0,
                    MemRegion {
                        nr_pages: 1 << 52,
                        ..ok
                    },
                ),
                Err(EINVAL),
                "length wraps",
            )?;
            eq(
                errno(op(v0, INIT_MEM_REGION, 0, 0).0),
                Err(EFAULT),
                "null region",
            )?;
            // No memslot at the GPA: the populate fails.
            check(go(0, ok).is_err(), "no guest_memfd slot: refused")?;
            eq(
                errno(op(vm.as_raw_fd(), FINALIZE_VM, 0, 0).0),
                Ok(()),
                "FINALIZE",
            )?;
            eq(go(0, ok), Err(EINVAL), "after FINALIZE")?;
            drop((v, vm));
            counts_are_zero()
        }),
        ("tdx_qemu_order_and_two_tds_measure_the_same", Tdx, |_| {
            let kvm = dev();
            let before = tds().len();
            let a = qemu_bring_up_without_memory(&kvm)?;
            let b = qemu_bring_up_without_memory(&kvm)?;
            let t = tds();
            eq(t.len(), before + 2, "two more TDs listed")?;
            let (ma, mb) = (&t[before], &t[before + 1]);
            eq(ma.0.as_str(), "runnable", "state")?;
            eq(ma.1.len(), 96, "MRTD hex length")?;
            check(ma.1 != "0".repeat(96), "MRTD is not zero")?;
            eq(&ma.1, &mb.1, "same (empty) image, same MRTD")?;
            drop((a, b));
            eq(tds().len(), before, "TDs gone after close")?;
            counts_are_zero()
        }),
        (
            "tdx_teardown_in_any_close_order_returns_every_page",
            Tdx,
            |_| {
                let kvm = dev();
                // vCPU 0, vCPU 1, VM in every kind of order: VM first, VM last, between.
                for order in [[0usize, 1, 2], [2, 1, 0], [2, 0, 1], [1, 2, 0]] {
                    let mut fds: Vec<Option<OwnedFd>> = qemu_bring_up_without_memory(&kvm)?
                        .into_iter()
                        .map(Some)
                        .collect();
                    for i in order {
                        drop(fds[i].take());
                    }
                    counts_are_zero().map_err(|e| format!("order {order:?}: {e}"))?;
                }
                Ok(())
            },
        ),
    ]
}
