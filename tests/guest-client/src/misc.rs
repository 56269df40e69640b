// SPDX-License-Identifier: GPL-2.0-only
//! Issue 11's remainder (helper `misc`): the MSR filter over the MSRs SVM passes through,
//! single-step over instructions the module emulates or skips, hardware breakpoints, pending
//! completions against state ioctls, and `KVM_CREATE_DEVICE` (kvm-vfio).

use crate::run::long_mode_guest;
use crate::*;
use kvm_ioctls::{VcpuExit, VcpuFd};

const KVM_ENABLE_CAP: u64 = 0x4068_aea3;
const KVM_X86_SET_MSR_FILTER: u64 = 0x4188_aec6;
const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
const KVM_MSR_EXIT_REASON_FILTER: u32 = 4;
const FILTER_READ: u32 = 1;
const FILTER_WRITE: u32 = 2;
const MSR_FS_BASE: u32 = 0xc000_0100;

pub(crate) fn tests() -> Vec<Test> {
    vec![(
        "misc_msr_filter_intercepts_passthrough_fs_base",
        Any,
        |_| msr_filter_fs_base(),
    )]
}

fn errno_of(r: Result<i64, i32>) -> i32 {
    r.err().unwrap_or(0)
}

fn vm_ioctl(vm: &kvm_ioctls::VmFd, req: u64, arg: u64) -> i32 {
    errno_of(ioctl(vm.as_raw_fd(), req, arg))
}

fn enable_cap(vm: &kvm_ioctls::VmFd, cap: u32, arg0: u64) -> i32 {
    let mut c = [0u8; 104];
    c[0..4].copy_from_slice(&cap.to_ne_bytes());
    c[8..16].copy_from_slice(&arg0.to_ne_bytes());
    vm_ioctl(vm, KVM_ENABLE_CAP, c.as_ptr() as u64)
}

/// `KVM_X86_SET_MSR_FILTER` with `flags` and up to one range (flags, base, nmsrs 1, bit).
fn set_filter(vm: &kvm_ioctls::VmFd, flags: u32, range: Option<(u32, u32, bool)>) -> i32 {
    let mut b = [0u8; 0x188];
    b[0..4].copy_from_slice(&flags.to_ne_bytes());
    let bitmap: u64 = match range {
        Some((_, _, true)) => 1,
        _ => 0,
    };
    if let Some((rflags, base, _)) = range {
        b[8..12].copy_from_slice(&rflags.to_ne_bytes());
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        b[16..20].copy_from_slice(&base.to_ne_bytes());
        b[24..32].copy_from_slice(&(&bitmap as *const u64 as u64).to_ne_bytes());
    }
    vm_ioctl(vm, KVM_X86_SET_MSR_FILTER, b.as_ptr() as u64)
}

fn step(v: &mut VcpuFd, n: u32) -> Result<VcpuExit<'_>, String> {
    v.run().map_err(|e| format!("run {n}: {e}"))
}

fn expect_hlt(v: &mut VcpuFd, n: u32) -> Result<(), String> {
    match step(v, n)? {
        VcpuExit::Hlt => Ok(()),
        e => Err(format!("run {n}: {e:?}, want HLT")),
    }
}

/// 64-bit guest: WRMSR FS_BASE (denied: exit), RDMSR FS_BASE (allowed: passed through, no
/// exit) → [0x5000]; HLT; WRMSR FS_BASE (allowed now: passed through), RDMSR (denied: exit)
/// → [0x5004]; HLT.
const FS_BASE_GUEST: &[u8] = &[
    0xb9, 0x00, 0x01, 0x00, 0xc0, // mov ecx, 0xc0000100
    0xb8, 0x00, 0x10, 0x11, 0x11, // mov eax, 0x11111000
    0x31, 0xd2, // xor edx, edx
    0x0f, 0x30, // wrmsr
    0x0f, 0x32, // rdmsr
    0x89, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], eax
    0xf4, // hlt
    0xb8, 0x00, 0x20, 0x22, 0x22, // mov eax, 0x22222000
    0x0f, 0x30, // wrmsr
    0x0f, 0x32, // rdmsr
    0x89, 0x04, 0x25, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], eax
    0xf4, // hlt
];

fn msr_filter_fs_base() -> Result<(), String> {
    let (g, mut v) = long_mode_guest(FS_BASE_GUEST)?;
    let mut sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    sr.fs.base = 0xabc000;
    v.set_sregs(&sr).map_err(|e| format!("set_sregs: {e}"))?;
    eq(
        enable_cap(&g.vm, KVM_CAP_X86_USER_SPACE_MSR, 4),
        0,
        "user-space MSR exits for FILTER",
    )?;
    // Set after the vCPU exists: its MSR map must follow.
    eq(
        set_filter(&g.vm, 0, Some((FILTER_WRITE, MSR_FS_BASE, false))),
        0,
        "deny FS_BASE writes",
    )?;
    match step(&mut v, 1)? {
        VcpuExit::X86Wrmsr(m) => {
            eq(m.index, MSR_FS_BASE, "WRMSR index")?;
            eq(m.reason.bits(), KVM_MSR_EXIT_REASON_FILTER, "reason FILTER")?;
            eq(m.data, 0x1111_1000, "WRMSR data")?;
            *m.error = 0;
        }
        e => return Err(format!("run 1: {e:?}, want the filtered WRMSR exit")),
    }
    expect_hlt(&mut v, 2)?;
    let word = |a: usize| u32::from_le_bytes([0, 1, 2, 3].map(|i| g.ram.read(a + i)));
    eq(
        word(0x5000),
        0xabc000,
        "RDMSR passed through: FS base unchanged by the filtered write",
    )?;
    // Now reads are denied and writes pass through.
    eq(
        set_filter(&g.vm, 0, Some((FILTER_READ, MSR_FS_BASE, false))),
        0,
        "deny FS_BASE reads",
    )?;
    match step(&mut v, 3)? {
        VcpuExit::X86Rdmsr(m) => {
            eq(m.index, MSR_FS_BASE, "RDMSR index")?;
            eq(m.reason.bits(), KVM_MSR_EXIT_REASON_FILTER, "reason FILTER")?;
            *m.data = 0x77;
        }
        e => return Err(format!("run 3: {e:?}, want the filtered RDMSR exit")),
    }
    expect_hlt(&mut v, 4)?;
    eq(word(0x5004), 0x77, "RDMSR data from userspace")?;
    let sr = v.get_sregs().map_err(|e| format!("get_sregs: {e}"))?;
    eq(sr.fs.base, 0x2222_2000, "WRMSR passed through to FS base")?;
    // Removing the filter (default allow, no ranges) passes everything through again.
    eq(set_filter(&g.vm, 0, None), 0, "filter removed")?;
    Ok(())
}
