// SPDX-License-Identifier: GPL-2.0-only
//! Binary stats fds (`KVM_GET_STATS_FD`, `KVM_CAP_BINARY_STATS_FD`) for VMs and vCPUs, in the
//! format of Linux 6.12 (`Documentation/virt/kvm/api.rst` 4.133, `virt/kvm/binary_stats.c`).
//!
//! The file reads as one block: the header, the id string ("kvm-<pid>" or
//! "kvm-<pid>/vcpu-<id>", `KVM_STATS_NAME_SIZE` bytes), the descriptors (each a
//! `kvm_stats_desc` followed by its `KVM_STATS_NAME_SIZE`-byte name) and the data (one `u64`
//! per value). Reads may start anywhere (`pread`); values are sampled at read time. A stats fd
//! holds a VM reference, as upstream's, so a dup'ed stats fd stays readable after the VM and
//! vCPU fds are closed.
//!
//! What is counted: the MMU's table pages per root, its leaves per root and level, what it
//! leaked on purpose, the online vCPUs, and for a TD the S-EPT backend's SEAMCALLs per leaf,
//! busy retries and kicks; per vCPU the faults and pre-faults (fields the fault paths
//! increment), the run loop's exits, and (HOOK(cr8)) event injections, window exits and halt
//! wake-ups ([`crate::run::event_stats`]).

use crate::abi::KVM_STATS_NAME_SIZE;
use crate::glue;
use crate::vcpu::Vcpu;
use crate::vm::Vm;
use core::ffi::c_void;
use core::fmt::Write;
use core::mem::{offset_of, size_of};
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::types::AsBytes;
use kernel::uaccess::UserSlice;
use tdx::abi::leaf;

/// `struct kvm_stats_header`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmStatsHeader {
    flags: u32,
    name_size: u32,
    num_desc: u32,
    id_offset: u32,
    desc_offset: u32,
    data_offset: u32,
}

const _: () = {
    assert!(size_of::<KvmStatsHeader>() == 24);
    assert!(offset_of!(KvmStatsHeader, flags) == 0);
    assert!(offset_of!(KvmStatsHeader, name_size) == 4);
    assert!(offset_of!(KvmStatsHeader, num_desc) == 8);
    assert!(offset_of!(KvmStatsHeader, id_offset) == 12);
    assert!(offset_of!(KvmStatsHeader, desc_offset) == 16);
    assert!(offset_of!(KvmStatsHeader, data_offset) == 20);
};

/// `struct kvm_stats_desc` with its name (upstream `struct _kvm_stats_desc`).
#[repr(C)]
#[derive(Clone, Copy)]
struct KvmStatsDesc {
    flags: u32,
    exponent: i16,
    size: u16,
    offset: u32,
    bucket_size: u32,
    name: [u8; KVM_STATS_NAME_SIZE],
}

const _: () = {
    assert!(size_of::<KvmStatsDesc>() == 16 + KVM_STATS_NAME_SIZE);
    assert!(offset_of!(KvmStatsDesc, flags) == 0);
    assert!(offset_of!(KvmStatsDesc, exponent) == 4);
    assert!(offset_of!(KvmStatsDesc, size) == 6);
    assert!(offset_of!(KvmStatsDesc, offset) == 8);
    assert!(offset_of!(KvmStatsDesc, bucket_size) == 12);
    assert!(offset_of!(KvmStatsDesc, name) == 16);
};

// SAFETY: both are `#[repr(C)]` with integer fields only; the asserts above show the fields
// cover the size exactly (no padding bytes).
unsafe impl AsBytes for KvmStatsHeader {}
// SAFETY: as above.
unsafe impl AsBytes for KvmStatsDesc {}

/// The bytes of a plain uapi value.
fn bytes_of<T: AsBytes>(v: &T) -> &[u8] {
    // SAFETY: `T: AsBytes` has no padding or uninitialised bytes, so all `size_of::<T>()` bytes
    // of `*v` are initialised and may be read as `u8`s for the borrow's lifetime.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// `KVM_STATS_TYPE_CUMULATIVE`: only ever grows.
const CUMULATIVE: u32 = 0;
/// `KVM_STATS_TYPE_INSTANT`: a current value.
const INSTANT: u32 = 1;
// Unit `KVM_STATS_UNIT_NONE` (0 << 4), base `KVM_STATS_BASE_POW10` (0 << 8), exponent 0.

/// One statistic: its name and type (one `u64`, unit none, exponent 0).
struct Desc {
    name: &'static str,
    kind: u32,
}

const fn c(name: &'static str) -> Desc {
    Desc {
        name,
        kind: CUMULATIVE,
    }
}

const fn i(name: &'static str) -> Desc {
    Desc {
        name,
        kind: INSTANT,
    }
}

/// The S-EPT backend's leaves whose calls a TD's stats show, in descriptor order.
const TD_LEAVES: [(u16, &str); 16] = [
    (leaf::MEM_SEPT_ADD, "tdh_mem_sept_add"),
    (leaf::MEM_PAGE_AUG, "tdh_mem_page_aug"),
    (leaf::MEM_PAGE_ADD, "tdh_mem_page_add"),
    (leaf::MR_EXTEND, "tdh_mr_extend"),
    (leaf::MEM_RANGE_BLOCK, "tdh_mem_range_block"),
    (leaf::MEM_RANGE_UNBLOCK, "tdh_mem_range_unblock"),
    (leaf::MEM_TRACK, "tdh_mem_track"),
    (leaf::MEM_PAGE_REMOVE, "tdh_mem_page_remove"),
    (leaf::MEM_SEPT_REMOVE, "tdh_mem_sept_remove"),
    (leaf::MEM_PAGE_DEMOTE, "tdh_mem_page_demote"),
    (leaf::PHYMEM_PAGE_WBINVD, "tdh_phymem_page_wbinvd"),
    (leaf::PHYMEM_PAGE_RECLAIM, "tdh_phymem_page_reclaim"),
    (leaf::VP_FLUSH, "tdh_vp_flush"),
    (leaf::MNG_VPFLUSHDONE, "tdh_mng_vpflushdone"),
    (leaf::PHYMEM_CACHE_WB, "tdh_phymem_cache_wb"),
    (leaf::MNG_KEY_FREEID, "tdh_mng_key_freeid"),
];

/// The VM statistics before the per-leaf SEAMCALL counts ([`TD_LEAVES`] follow, cumulative).
const VM_DESCS: [Desc; 23] = [
    // x86 KVM's names for the leaves mapped, all roots together.
    i("pages_4k"),
    i("pages_2m"),
    i("pages_1g"),
    i("shared_pages_4k"),
    i("shared_pages_2m"),
    i("shared_pages_1g"),
    i("mirror_pages_4k"),
    i("mirror_pages_2m"),
    i("mirror_pages_1g"),
    i("shared_table_pages"),
    i("mirror_table_pages"),
    i("external_spt_pages"),
    i("mmu_page_headers"),
    i("deferred_table_pages"),
    c("leaked_external_spts"),
    c("leaked_private_pages"),
    c("tdx_busy_retries"),
    c("tdx_kicks"),
    // vCPUs created and visible (upstream `online_vcpus`).
    i("online_vcpus"),
    // 4 KiB frames mapped and unmapped (zapped or torn down) since creation, per root; a
    // 2 MiB leaf counts 512, splitting one counts nothing.
    c("shared_frames_mapped"),
    c("shared_frames_zapped"),
    c("mirror_frames_mapped"),
    c("mirror_frames_zapped"),
];

/// Number of VM statistics.
const NUM_VM: usize = VM_DESCS.len() + TD_LEAVES.len();

/// The vCPU statistics.
const VCPU_DESCS: [Desc; 15] = [
    c("page_faults"),
    c("pre_fault_calls"),
    c("pre_fault_pages"),
    // The run loop's (upstream names and meanings): every guest exit, port-I/O exits, HLTs,
    // KVM_RUNs ended by a signal, exits for a host interrupt.
    c("exits"),
    c("io_exits"),
    c("halt_exits"),
    c("signal_exits"),
    c("irq_exits"),
    // HOOK(fault): NPT faults resolved by the fast page fault (upstream's name).
    c("pf_fast"),
    // HOOK(cr8): event injection and halting (crate::run::event_stats).
    c("irq_injections"),
    c("nmi_injections"),
    c("irq_window_exits"),
    c("nmi_window_exits"),
    c("request_irq_exits"),
    c("halt_wakeup"),
];

/// The `i`-th VM descriptor's name and type.
fn vm_desc(n: usize) -> Option<(&'static str, u32)> {
    match VM_DESCS.get(n) {
        Some(d) => Some((d.name, d.kind)),
        None => TD_LEAVES
            .get(n - VM_DESCS.len())
            .map(|(_, name)| (*name, CUMULATIVE)),
    }
}

fn vcpu_desc(n: usize) -> Option<(&'static str, u32)> {
    VCPU_DESCS.get(n).map(|d| (d.name, d.kind))
}

/// The VM's values now, in descriptor order.
fn vm_values(vm: &Vm) -> [u64; NUM_VM] {
    let s = vm.mmu().stats();
    let w = |x: usize| x as u64;
    let mut v = [0u64; NUM_VM];
    v[18] = u64::from(vm.online_vcpus());
    for l in 0..3 {
        v[l] = w(s.shared_leaves[l] + s.mirror_leaves[l]);
        v[3 + l] = w(s.shared_leaves[l]);
        v[6 + l] = w(s.mirror_leaves[l]);
    }
    v[9] = w(s.shared_tables);
    v[10] = w(s.mirror_tables);
    v[11] = w(s.external_spts);
    v[12] = w(s.headers);
    v[13] = w(s.deferred);
    v[14] = w(s.leaked_external_spts);
    v[15] = w(s.leaked_private_pages);
    v[19] = s.frames_mapped[0];
    v[20] = s.frames_zapped[0];
    v[21] = s.frames_mapped[1];
    v[22] = s.frames_zapped[1];
    if let Some(m) = vm.mmu().td().and_then(|td| td.mmu()) {
        let b = m.external().stats();
        v[16] = b.busy_retries;
        v[17] = b.kicks;
        let calls = m.external().tdx().backend().snapshot();
        for (k, (lf, _)) in TD_LEAVES.iter().enumerate() {
            v[VM_DESCS.len() + k] = calls.get(*lf as usize).copied().unwrap_or(0);
        }
    }
    v
}

fn vcpu_values(v: &Vcpu) -> [u64; VCPU_DESCS.len()] {
    let r = &v.stats.run;
    let e = &r.events; // HOOK(cr8)
    [
        v.stats.page_faults.load(Ordering::Relaxed),
        v.stats.pre_fault_calls.load(Ordering::Relaxed),
        v.stats.pre_fault_pages.load(Ordering::Relaxed),
        r.exits.load(Ordering::Relaxed),
        r.io_exits.load(Ordering::Relaxed),
        r.halt_exits.load(Ordering::Relaxed),
        r.signal_exits.load(Ordering::Relaxed),
        r.irq_exits.load(Ordering::Relaxed),
        // HOOK(fault)
        v.stats.pf_fast.load(Ordering::Relaxed),
        // HOOK(cr8)
        e.irq_injections.load(Ordering::Relaxed),
        e.nmi_injections.load(Ordering::Relaxed),
        e.irq_window_exits.load(Ordering::Relaxed),
        e.nmi_window_exits.load(Ordering::Relaxed),
        e.request_irq_exits.load(Ordering::Relaxed),
        e.halt_wakeup.load(Ordering::Relaxed),
    ]
}

/// A stats id string, NUL-padded.
pub(crate) struct StatsId([u8; KVM_STATS_NAME_SIZE]);

struct IdWriter<'a>(&'a mut [u8; KVM_STATS_NAME_SIZE], usize);

impl Write for IdWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            // Keep the last byte NUL (the id is a C string shorter than the field).
            if self.1 + 1 >= self.0.len() {
                return Err(core::fmt::Error);
            }
            self.0[self.1] = b;
            self.1 += 1;
        }
        Ok(())
    }
}

impl StatsId {
    fn format(f: impl FnOnce(&mut IdWriter<'_>) -> core::fmt::Result) -> Self {
        let mut id = [0u8; KVM_STATS_NAME_SIZE];
        // A cut id (cannot happen with these formats) is still NUL-terminated.
        let _ = f(&mut IdWriter(&mut id, 0));
        StatsId(id)
    }

    /// "kvm-<pid>" of the calling task (upstream `kvm_create_vm`).
    pub(crate) fn vm() -> Self {
        // SAFETY: reads task_pid_nr(current).
        let pid = unsafe { glue::tdxkvm_current_pid() };
        Self::format(|w| write!(w, "kvm-{}", pid))
    }

    /// "kvm-<pid>/vcpu-<id>" of the calling task (upstream `kvm_vcpu_init`).
    pub(crate) fn vcpu(id: u32) -> Self {
        // SAFETY: reads task_pid_nr(current).
        let pid = unsafe { glue::tdxkvm_current_pid() };
        Self::format(|w| write!(w, "kvm-{}/vcpu-{}", pid, id))
    }
}

/// Writes the part of the stats file at `[pos, pos + size)` to `buf`; returns the bytes written
/// and advances `pos` (upstream `kvm_stats_read`).
fn read(
    id: &StatsId,
    desc: impl Fn(usize) -> Option<(&'static str, u32)>,
    values: &[u64],
    buf: usize,
    size: usize,
    pos: &mut i64,
) -> Result<isize> {
    let n = values.len();
    let id_offset = size_of::<KvmStatsHeader>();
    let desc_offset = id_offset + KVM_STATS_NAME_SIZE;
    let data_offset = desc_offset + n * size_of::<KvmStatsDesc>();
    let total = data_offset + core::mem::size_of_val(values);
    let start = usize::try_from(*pos).map_err(|_| EINVAL)?;
    if start >= total {
        return Ok(0);
    }
    let len = (total - start).min(size);
    let end = start + len;
    let mut w = UserSlice::new(buf, len).writer();
    // Each piece of the file in order; the part of it inside the window goes out.
    let mut at = 0usize;
    let mut emit = |bytes: &[u8]| -> Result {
        let (lo, hi) = (at, at + bytes.len());
        at = hi;
        if hi <= start || lo >= end {
            return Ok(());
        }
        let a = start.max(lo) - lo;
        let b = end.min(hi) - lo;
        w.write_slice(&bytes[a..b])
    };
    let header = KvmStatsHeader {
        flags: 0,
        name_size: KVM_STATS_NAME_SIZE as u32,
        num_desc: n as u32,
        id_offset: id_offset as u32,
        desc_offset: desc_offset as u32,
        data_offset: data_offset as u32,
    };
    emit(bytes_of(&header))?;
    emit(&id.0)?;
    for k in 0..n {
        let (name, kind) = desc(k).ok_or(EINVAL)?;
        let mut d = KvmStatsDesc {
            flags: kind,
            exponent: 0,
            size: 1,
            offset: (k * size_of::<u64>()) as u32,
            bucket_size: 0,
            name: [0; KVM_STATS_NAME_SIZE],
        };
        let nb = name.as_bytes();
        let l = nb.len().min(KVM_STATS_NAME_SIZE - 1);
        d.name[..l].copy_from_slice(&nb[..l]);
        emit(bytes_of(&d))?;
    }
    for v in values {
        emit(&v.to_ne_bytes())?;
    }
    *pos = end as i64;
    Ok(len as isize)
}

/// What a stats file is the stats of (the glue passes it back with `private_data`).
const OWNER_VM: i32 = 0;
const OWNER_VCPU: i32 = 1;

/// `KVM_GET_STATS_FD` on a VM fd.
pub(crate) fn vm_stats_fd(vm: &Vm) -> Result<isize> {
    let r = vm.get_raw();
    // SAFETY: the new file owns the reference `r` and gives it back in
    // `tdxkvm_rust_stats_release`; on failure no file took it.
    let fd = unsafe { glue::tdxkvm_stats_fd(r as *mut c_void, OWNER_VM) };
    if fd < 0 {
        // SAFETY: the reference taken above, not taken by any file.
        unsafe { Vm::put_raw(r) };
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// `KVM_GET_STATS_FD` on a vCPU fd: the file holds a VM reference (which keeps the vCPU).
pub(crate) fn vcpu_stats_fd(v: &Vcpu) -> Result<isize> {
    let r = v.vm().get_raw();
    // SAFETY: as in `vm_stats_fd`; `v` lives as long as the VM whose reference the file holds.
    let fd = unsafe { glue::tdxkvm_stats_fd(v as *const Vcpu as *mut c_void, OWNER_VCPU) };
    if fd < 0 {
        // SAFETY: the reference taken above, not taken by any file.
        unsafe { Vm::put_raw(r) };
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// Stats file `read` (and `pread`).
///
/// # Safety
///
/// `owner` is the `private_data` of a stats file of kind `kind` (a VM reference, or a vCPU
/// whose VM the file holds a reference to), and `pos` points to the file position.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_stats_read(
    owner: *const c_void,
    kind: i32,
    buf: usize,
    size: usize,
    pos: *mut i64,
) -> isize {
    // SAFETY: the caller's contract: `pos` is the file position for this call.
    let pos = unsafe { &mut *pos };
    let r = if kind == OWNER_VCPU {
        // SAFETY: the caller's contract: the vCPU's VM is held by the file.
        let v = unsafe { &*owner.cast::<Vcpu>() };
        read(v.stats_id(), vcpu_desc, &vcpu_values(v), buf, size, pos)
    } else {
        // SAFETY: the caller's contract: a held VM reference.
        let vm = unsafe { Vm::from_file(owner) };
        read(vm.stats_id(), vm_desc, &vm_values(vm), buf, size, pos)
    };
    r.unwrap_or_else(|e| e.to_errno() as isize)
}

/// Stats file release: gives the file's VM reference back.
///
/// # Safety
///
/// As [`tdxkvm_rust_stats_read`]; called once per file.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_stats_release(owner: *const c_void, kind: i32) {
    let vm: *const Vm = if kind == OWNER_VCPU {
        // SAFETY: the caller's contract: the vCPU is alive until the reference below goes.
        unsafe { (*owner.cast::<Vcpu>()).vm() as *const Vm }
    } else {
        owner.cast()
    };
    // SAFETY: the reference `vm_stats_fd` / `vcpu_stats_fd` took for this file.
    unsafe { Vm::put_raw(vm) };
}
