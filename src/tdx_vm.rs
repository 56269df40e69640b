// SPDX-License-Identifier: GPL-2.0-only
//! The TDX VM ABI: `KVM_MEMORY_ENCRYPT_OP` (`struct kvm_tdx_cmd`) on a TD's VM fd
//! (KVM_TDX_CAPABILITIES, INIT_VM, FINALIZE_VM) and vCPU fd (INIT_VCPU, INIT_MEM_REGION,
//! GET_CPUID), as upstream's `tdx_vm_ioctl` / `tdx_vcpu_ioctl` (6.16) answer them.
//!
//! The rules, the TD_PARAMS and the CPUID walk are the kernel-free core's (`tdx::kvm`); this
//! file copies the structures in and out, takes the locks and drives the TD ([`TdVm`]).
//!
//! Locking (upstream's latest order): the VM lock (`kvm->lock`) for every sub-command — the TD
//! state changes under it — and for the vCPU ones the vCPU's mutex inside it; INIT_MEM_REGION
//! then holds `slots_lock` across the region (as upstream), and the MMU lock is taken inside
//! by its faults only.
//!
//! Also here: the TD listing of debugfs `tds` (state and MRTD of every TD), so two TDs built
//! from the same image can be compared from userspace.

use crate::env::{alloc_frame, free_frame};
use crate::gmem::FolioRef;
use crate::memslot::MemState;
use crate::stats;
use crate::td::{InitError, TdVm};
use crate::vcpu::{Vcpu, VcpuLocked, VcpuTd};
use crate::vm::Vm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;
use mmu::env::Frame;
use mmu::{Gfn, MmuError, Pfn};
use tdx::kvm::init_mem::{init_mem_region, Populate};
use tdx::kvm::init_vm::{self, VmLimits};
use tdx::kvm::rules::{self, TdStage, VcpuStage};
use tdx::kvm::uapi::{
    slice_as_bytes, slice_as_bytes_mut, KvmCpuid2, KvmCpuidEntry2, KvmTdxCapabilities, KvmTdxCmd,
    KvmTdxInitMemRegion, KvmTdxInitVm, Plain, TdxCmdId, KVM_MAX_CPUID_ENTRIES,
    KVM_TDX_MEASURE_MEMORY_REGION,
};
use tdx::kvm::{get_cpuid, Errno, TdConf};
use tdx::Tdx;

/// A core errno as a kernel error.
fn err(e: Errno) -> Error {
    Error::from_errno(-e.raw())
}

/// Reads a plain uapi structure from user address `uaddr` (EFAULT).
fn read_in<T: Plain>(uaddr: u64, v: &mut T) -> Result {
    let len = core::mem::size_of::<T>();
    UserSlice::new(uaddr as usize, len)
        .reader()
        .read_slice(v.as_bytes_mut())
}

/// Writes `bytes` to user address `uaddr` (EFAULT).
fn write_out(uaddr: u64, bytes: &[u8]) -> Result {
    UserSlice::new(uaddr as usize, bytes.len())
        .writer()
        .write_slice(bytes)
}

/// `uaddr + off` as a user address (EFAULT on overflow, as an access there would be).
fn user_add(uaddr: u64, off: usize) -> Result<u64> {
    uaddr.checked_add(off as u64).ok_or(EFAULT)
}

/// KVM's supported XCR0 | XSS as this module reports them: the host's XSAVE features
/// (CPUID.(0xD,0)) within the user features upstream KVM supports (x87, SSE, AVX, AVX-512,
/// PKRU, AMX); no supervisor state (IA32_XSS) yet.
fn kvm_xfam() -> u64 {
    const KVM_SUPPORTED_XCR0: u64 = 0x3 | 0x4 | 0xe0 | 0x200 | 0x6_0000;
    let max = core::arch::x86_64::__cpuid_count(0, 0).eax;
    if max < 0xd {
        return 0x3;
    }
    let r = core::arch::x86_64::__cpuid_count(0xd, 0);
    (u64::from(r.edx) << 32 | u64::from(r.eax)) & KVM_SUPPORTED_XCR0
}

/// What INIT_VM takes from the VM: its vCPU limit, its TSC rate (`KVM_SET_TSC_KHZ` on the VM
/// fd, else the host's, as upstream's `kvm->arch.default_tsc_khz`), no 5-level EPT (the TD's
/// MMU is 4-level, so GPAW 52 is refused as on such a host), KVM's XFAM.
fn vm_limits(vm: &Vm) -> VmLimits {
    let tsc_khz = vm.default_tsc_khz();
    VmLimits {
        max_vcpus: vm.max_vcpus().min(u32::from(u16::MAX)) as u16,
        tsc_khz,
        ept_5level: false,
        kvm_xfam: kvm_xfam(),
    }
}

/// The module's TD limits (TDH.SYS.RD), read when needed.
fn td_conf(td: &TdVm) -> Result<TdConf> {
    TdConf::read(&Tdx::new(td.backend())).map_err(|e| {
        pr_err!("TDH.SYS.RD of the TD configuration: {:?}\n", e);
        EIO
    })
}

// ---- VM fd -----------------------------------------------------------------------------------

/// `KVM_MEMORY_ENCRYPT_OP` on a VM fd (upstream `vt_mem_enc_ioctl` + `tdx_vm_ioctl`).
pub(crate) fn vm_op(vm: &Vm, arg: usize) -> Result<isize> {
    let Some(td) = vm.mmu().td() else {
        return Err(ENOTTY);
    };
    let mut cmd = KvmTdxCmd::default();
    read_in(arg as u64, &mut cmd)?;
    let id = rules::vm_command(&cmd).map_err(err)?;
    let locked = vm.lock();
    let r = match id {
        TdxCmdId::Capabilities => capabilities(td, &cmd),
        TdxCmdId::InitVm => init_vm(vm, td, locked.created_vcpus != 0, &mut cmd),
        TdxCmdId::FinalizeVm => finalize(vm, td, &mut cmd),
        _ => Err(EINVAL),
    };
    // The command goes back whatever happened (hw_error); failing that is EFAULT.
    write_out(arg as u64, cmd.as_bytes())?;
    drop(locked);
    r
}

/// KVM_TDX_CAPABILITIES (`tdx_get_capabilities`).
fn capabilities(td: &TdVm, cmd: &KvmTdxCmd) -> Result<isize> {
    rules::check_capabilities(cmd).map_err(err)?;
    let conf = td_conf(td)?;
    // Upstream reads only `cpuid.nent` and answers from a zeroed buffer: the caller's reserved
    // words and padding come back as zeros, and an unreadable rest is not EFAULT.
    let mut caps = KBox::new(KvmTdxCapabilities::ZERO, GFP_KERNEL)?;
    let nent_at = user_add(
        cmd.data,
        core::mem::offset_of!(KvmTdxCapabilities, cpuid) + core::mem::offset_of!(KvmCpuid2, nent),
    )?;
    caps.cpuid.nent = UserSlice::new(nent_at as usize, core::mem::size_of::<u32>())
        .reader()
        .read::<u32>()?;
    let mut entries =
        KVec::from_elem(KvmCpuidEntry2::default(), conf.num_cpuid_config, GFP_KERNEL)?;
    conf.capabilities(kvm_xfam(), &mut caps, &mut entries)
        .map_err(err)?;
    write_out(cmd.data, caps.as_bytes())?;
    let at = user_add(cmd.data, core::mem::size_of::<KvmTdxCapabilities>())?;
    write_out(at, slice_as_bytes(&entries))?;
    Ok(0)
}

/// Reads INIT_VM's argument: the fixed part, then its entries (`tdx_td_init`'s copies and
/// checks, in its order).
fn read_init_vm(cmd: &KvmTdxCmd) -> Result<(KvmTdxInitVm, KVec<KvmCpuidEntry2>)> {
    let mut iv = KvmTdxInitVm::ZERO;
    read_in(cmd.data, &mut iv)?;
    let n = init_vm::check_nent(&iv).map_err(err)?;
    let mut entries = KVec::from_elem(KvmCpuidEntry2::default(), n, GFP_KERNEL)?;
    let at = user_add(cmd.data, core::mem::size_of::<KvmTdxInitVm>())?;
    UserSlice::new(at as usize, n * core::mem::size_of::<KvmCpuidEntry2>())
        .reader()
        .read_slice(slice_as_bytes_mut(&mut entries))?;
    init_vm::check_reserved(&iv).map_err(err)?;
    Ok((iv, entries))
}

/// KVM_TDX_INIT_VM (`tdx_td_init`): TD_PARAMS from the user's arguments, TDH.MNG.INIT.
fn init_vm(vm: &Vm, td: &TdVm, vcpus_created: bool, cmd: &mut KvmTdxCmd) -> Result<isize> {
    rules::check_init_vm(td.stage(), cmd).map_err(err)?;
    let (iv, entries) = read_init_vm(cmd)?;
    let (e, hw_error) = init_td(td, &iv, &entries, &vm_limits(vm), vcpus_created);
    cmd.hw_error = hw_error;
    e.map(|()| 0)
}

/// INIT_VM's work after the copies, shared with the self test: TD_PARAMS
/// (`setup_tdparams`), TDH.MNG.INIT. Returns the result and hw_error (the MNG.INIT status
/// when it refused an operand, else 0).
pub(crate) fn init_td(
    td: &TdVm,
    iv: &KvmTdxInitVm,
    entries: &[KvmCpuidEntry2],
    limits: &VmLimits,
    vcpus_created: bool,
) -> (Result, u64) {
    let conf = match td_conf(td) {
        Ok(c) => c,
        Err(e) => return (Err(e), 0),
    };
    let params = match init_vm::setup_td_params(&conf, iv, entries, limits, vcpus_created) {
        Ok(p) => p,
        Err(e) => return (Err(err(e)), 0),
    };
    match td.init(&params) {
        Ok(()) => (Ok(()), 0),
        Err(InitError::NoMemory) => (Err(ENOMEM), 0),
        Err(InitError::Module(e)) => {
            let (errno, hw_error) = init_vm::mng_init_error(e.status);
            if errno == Errno::EIO {
                pr_err!("TDH.MNG.INIT: {:?}\n", e);
            }
            (Err(err(errno)), hw_error)
        }
    }
}

/// The INIT_VM argument the self test passes: every configurable leaf as the module reports it
/// (GPAW 48, F/M/S 0: the platform's), x87/SSE, no attributes. Returns the entry count.
pub(crate) fn selftest_init_vm(
    td: &TdVm,
    entries: &mut [KvmCpuidEntry2],
) -> Result<(KvmTdxInitVm, usize)> {
    let conf = td_conf(td)?;
    let mut n = 0;
    for (i, out) in entries.iter_mut().enumerate().take(conf.num_cpuid_config) {
        let Some(mut e) = conf.cpuid_entry(i) else {
            break;
        };
        if e.function == 0x8000_0008 {
            e.eax = tdx::kvm::td_conf::set_guest_phys_addr_bits(e.eax, 48);
        }
        if e.function == 1 {
            e.eax = 0;
        }
        if conf.cpuid_config_leaves[i] >> 32 != u64::from(tdx::kvm::td_conf::CPUID_NO_SUBLEAF) {
            e.flags = tdx::kvm::uapi::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
        *out = e;
        n += 1;
    }
    let iv = KvmTdxInitVm {
        xfam: tdx::abi::td_params::XFAM_X87_SSE,
        cpuid: KvmCpuid2 {
            nent: n as u32,
            padding: 0,
        },
        ..KvmTdxInitVm::ZERO
    };
    Ok((iv, n))
}

/// KVM_TDX_FINALIZE_VM (`tdx_td_finalize`): TDH.MR.FINALIZE, its status in hw_error; then
/// `KVM_PRE_FAULT_MEMORY` is allowed (upstream sets `kvm->arch.pre_fault_allowed` here). The
/// flag lives in the memslots ([`crate::memslot::Memslots::pre_fault_allowed`]), the one place
/// the pre-fault path asks.
fn finalize(vm: &Vm, td: &TdVm, cmd: &mut KvmTdxCmd) -> Result<isize> {
    // Pages are added by INIT_MEM_REGION itself (never pre-mapped and added later).
    rules::check_finalize(td.stage(), 0).map_err(err)?;
    match td.finalize() {
        Ok(()) => {
            cmd.hw_error = 0;
            vm.memslots().allow_pre_fault();
            Ok(0)
        }
        Err(e) => {
            cmd.hw_error = e.status;
            let errno = rules::finalize_error(e.status);
            if errno == Errno::EIO {
                // Upstream: KVM_BUG_ON(cmd->hw_error): the TD is dead from here on.
                pr_err!("TDH.MR.FINALIZE: {:?}: the TD is marked bugged\n", e);
                vm.mmu().mark_bugged();
            }
            Err(err(errno))
        }
    }
}

// ---- vCPU fd ---------------------------------------------------------------------------------

/// `KVM_CREATE_VCPU` on a TD (`tdx_vcpu_create`): only between INIT_VM and FINALIZE (EIO),
/// then only with a split irqchip (EINVAL: the TDX module mandates APICv, so an in-kernel
/// LAPIC, and the IOAPIC cannot be emulated in the kernel).
pub(crate) fn vcpu_create_check(vm: &Vm) -> Result {
    match vm.mmu().td() {
        Some(td) => {
            // HOOK(irqfix): the split-irqchip requirement.
            let split = vm.irqchip_mode() == crate::irq::IrqchipMode::Split;
            rules::check_vcpu_create(td.stage(), split).map_err(err)
        }
        None => Ok(()),
    }
}

/// `KVM_MEMORY_ENCRYPT_OP` on a vCPU fd (`vt_vcpu_mem_enc_ioctl` + `tdx_vcpu_ioctl`).
pub(crate) fn vcpu_op(vcpu: &Vcpu, arg: usize) -> Result<isize> {
    let vm = vcpu.vm();
    let Some(td) = vm.mmu().td() else {
        return Err(EINVAL);
    };
    let _locked = vm.lock();
    let mut v = vcpu.lock_killable()?;
    rules::vcpu_op_allowed(td.stage()).map_err(err)?;
    let mut cmd = KvmTdxCmd::default();
    read_in(arg as u64, &mut cmd)?;
    match rules::vcpu_command(&cmd).map_err(err)? {
        TdxCmdId::InitVcpu => init_vcpu(vcpu, td, &mut v, &cmd), // HOOK(irq12): vcpu
        TdxCmdId::InitMemRegion => mem_region(vm, td, &mut v, &cmd),
        TdxCmdId::GetCpuid => cpuid(td, &cmd),
        _ => Err(EINVAL),
    }
}

fn vcpu_stage(v: &VcpuLocked) -> VcpuStage {
    if v.td.is_some() {
        VcpuStage::Initialized
    } else {
        VcpuStage::Uninitialized
    }
}

/// KVM_TDX_INIT_VCPU (`tdx_vcpu_init`): TDH.VP.CREATE, VP.ADDCX, VP.INIT with RCX = `data`.
fn init_vcpu(vcpu: &Vcpu, td: &TdVm, v: &mut VcpuLocked, cmd: &KvmTdxCmd) -> Result<isize> {
    rules::check_init_vcpu(vcpu_stage(v), cmd).map_err(err)?;
    // HOOK(irq12): "TDX requires X2APIC": the LAPIC in x2APIC mode (BSP bit on the boot
    // vCPU) before the TDX module's steps; EINVAL if refused.
    crate::irq::lapic::td_init_x2apic(vcpu, v)?;
    match td.init_vcpu(cmd.data) {
        Ok(tdvpr) => {
            v.td = Some(VcpuTd {
                tdvpr: tdvpr.hpa().pfn(),
            });
            // HOOK(irq12): tdx_td_vcpu_init ends with the vCPU runnable.
            v.arch.mp_state = x86::uapi::mp_state::RUNNABLE;
            Ok(0)
        }
        Err(InitError::NoMemory) => Err(ENOMEM),
        Err(InitError::Module(e)) => {
            pr_err!("TD vCPU initialisation: {:?}\n", e);
            Err(EIO)
        }
    }
}

/// KVM_TDX_GET_CPUID (`tdx_vcpu_get_cpuid`): the TD's CPUID from TDH.MNG.RD.
fn cpuid(td: &TdVm, cmd: &KvmTdxCmd) -> Result<isize> {
    let mut hdr = KvmCpuid2::default();
    read_in(cmd.data, &mut hdr)?;
    let mut entries = KVec::from_elem(
        KvmCpuidEntry2::default(),
        KVM_MAX_CPUID_ENTRIES as usize,
        GFP_KERNEL,
    )?;
    let n = get_cpuid::get_cpuid(|f| td.md_read(f), 48, &mut entries).map_err(err)?;
    let too_small = (hdr.nent as usize) < n;
    let out = KvmCpuid2 {
        nent: n as u32,
        ..hdr
    };
    write_out(cmd.data, out.as_bytes())?;
    if too_small {
        return Err(E2BIG);
    }
    let at = user_add(cmd.data, core::mem::size_of::<KvmCpuid2>())?;
    write_out(at, slice_as_bytes(entries.get(..n).unwrap_or(&[])))?;
    Ok(0)
}

/// KVM_TDX_INIT_MEM_REGION (`tdx_vcpu_init_mem_region`): the region is written back with the
/// progress made, whatever happened.
fn mem_region(vm: &Vm, td: &TdVm, v: &mut VcpuLocked, cmd: &KvmTdxCmd) -> Result<isize> {
    rules::check_init_mem_region(vcpu_stage(v), td.stage(), cmd).map_err(err)?;
    let mut region = KvmTdxInitMemRegion::default();
    read_in(cmd.data, &mut region)?;
    rules::check_region(&region, td.shared_bit()).map_err(err)?;
    let bounce = KVec::from_elem(0u8, 4096, GFP_KERNEL)?;
    let page = alloc_frame(stats::Kind::TdControl).ok_or(ENOMEM)?;
    // Upstream holds `slots_lock` across the loop: no punch hole, conversion or memslot change
    // comes between a page's lookup and its PAGE.ADD.
    let st = vm.memslots().lock();
    let mut p = MemPopulate {
        st: &st,
        td,
        caches: &mut v.caches,
        bounce,
        page: &page,
    };
    let measure = cmd.flags & KVM_TDX_MEASURE_MEMORY_REGION != 0;
    let r = init_mem_region(&mut region, measure, &mut p).map_err(err);
    drop(st);
    free_frame(page, stats::Kind::TdControl);
    write_out(cmd.data, region.as_bytes())?;
    r.map(|()| 0)
}

/// One INIT_MEM_REGION page: the guest_memfd page of the GFN, the source copied into a bounce
/// page (TDH.MEM.PAGE.ADD reads its source through a host physical address), PAGE.ADD through
/// the mirror root.
struct MemPopulate<'a> {
    /// `slots_lock`, held across the whole region.
    st: &'a MemState,
    td: &'a TdVm,
    caches: &'a mut mmu::cache::VcpuMmuCaches,
    bounce: KVec<u8>,
    /// The source page PAGE.ADD copies from (ours; the module only reads it).
    page: &'a Frame,
}

impl Populate for MemPopulate<'_> {
    fn signal_pending(&mut self) -> bool {
        kernel::current!().signal_pending()
    }

    fn populate(
        &mut self,
        gpa: u64,
        source: u64,
        measure: bool,
    ) -> core::result::Result<(), Errno> {
        let gfn = Gfn::new(gpa >> 12);
        let (pfn, folio) = gmem_private_page(self.st, gfn)?;
        // The source after the destination, as upstream (`kvm_gmem_populate` finds the page,
        // then the post-populate hook reads the source): EINVAL before EFAULT.
        UserSlice::new(source as usize, 4096)
            .reader()
            .read_slice(&mut self.bounce)
            .map_err(|_| Errno::EFAULT)?;
        // SAFETY: `page` is our own 4 KiB page, mapped in the direct map; nothing else
        // accesses it while the copy runs, and `bounce` holds 4096 bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(self.bounce.as_ptr(), self.page.virt().as_ptr(), 4096)
        };
        let src = self.page.pfn().hpa();
        let r = self
            .td
            .add_page(self.caches, gfn, pfn, src, measure)
            .map_err(|e| match e {
                MmuError::Conflict => Errno::EEXIST,
                MmuError::ExternalBusy => Errno::EBUSY,
                MmuError::NoMemory => Errno::ENOMEM,
                _ => Errno::EIO,
            });
        // The folio reference is held across the mapping (KVM keeps none afterwards).
        drop(folio);
        r
    }
}

/// The guest_memfd page behind the private `gfn` (upstream `kvm_gmem_populate`'s lookup),
/// with a folio reference to hold until it is mapped. EINVAL when no guest_memfd slot covers
/// the GFN or it is not PRIVATE (upstream: `!kvm_slot_can_be_private(slot)` and the
/// PRIVATE-attribute check); EFAULT when the slot's file is closed; ENOMEM. A page already
/// added is EEXIST later, at the mapping (the mirror root holds it).
///
/// The caller holds `slots_lock` (`st`), across the mapping too.
fn gmem_private_page(st: &MemState, gfn: Gfn) -> core::result::Result<(Pfn, FolioRef), Errno> {
    let slot = st.slots.lookup(gfn).ok_or(Errno::EINVAL)?;
    let g = slot.gmem.ok_or(Errno::EINVAL)?;
    if !st.attrs.is_private(gfn) {
        return Err(Errno::EINVAL);
    }
    let index = g.pgoff + (gfn.raw() - slot.base_gfn.raw());
    let (pfn, _order, folio) =
        crate::gmem::get_pfn_locked(st, g.file, index).map_err(|e| match e {
            memcore::Errno::ENOMEM => Errno::ENOMEM,
            _ => Errno::EFAULT,
        })?;
    Ok((pfn, folio))
}

// ---- debugfs `tds` ---------------------------------------------------------------------------

/// Most TDs the listing shows at once (the software module has 32 HKIDs).
const LISTED: usize = 64;

/// One listed TD: creation sequence number (0: free slot), state, MRTD once finalised.
struct Slot {
    seq: AtomicU64,
    stage: AtomicU8,
    mrtd: [AtomicU64; 6],
}

static SLOTS: [Slot; LISTED] = [const {
    Slot {
        seq: AtomicU64::new(0),
        stage: AtomicU8::new(0),
        mrtd: [const { AtomicU64::new(0) }; 6],
    }
}; LISTED];
static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

/// A TD's line in debugfs `tds`, held by the TD and freed with it.
pub(crate) struct Listing(Option<usize>);

impl Listing {
    /// Claims a slot (none if all are taken: the TD is then not listed).
    pub(crate) fn new() -> Self {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        for (i, s) in SLOTS.iter().enumerate() {
            if s.seq
                .compare_exchange(0, seq, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.stage.store(0, Ordering::Relaxed);
                for w in &s.mrtd {
                    w.store(0, Ordering::Relaxed);
                }
                return Listing(Some(i));
            }
        }
        Listing(None)
    }

    fn slot(&self) -> Option<&'static Slot> {
        self.0.and_then(|i| SLOTS.get(i))
    }

    /// Records the TD's state.
    pub(crate) fn set_stage(&self, s: TdStage) {
        if let Some(slot) = self.slot() {
            slot.stage.store(s as u8, Ordering::Release);
        }
    }

    /// Records the TD's MRTD.
    pub(crate) fn set_mrtd(&self, m: &[u8; 48]) {
        if let Some(slot) = self.slot() {
            for (i, w) in slot.mrtd.iter().enumerate() {
                let mut b = [0u8; 8];
                for (j, byte) in b.iter_mut().enumerate() {
                    *byte = m[(8 * i + j) % 48];
                }
                w.store(u64::from_be_bytes(b), Ordering::Release);
            }
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        if let Some(slot) = self.slot() {
            slot.seq.store(0, Ordering::Release);
        }
    }
}

/// debugfs `tds`: one line per live TD, oldest first:
/// `td <seq> state <uninitialized|initialized|runnable> mrtd <96 hex digits>`.
fn render(b: &mut crate::stats::Buf<'_>) -> core::fmt::Result {
    let mut order = [(0u64, 0usize); LISTED];
    for (i, o) in order.iter_mut().enumerate() {
        *o = (SLOTS[i % LISTED].seq.load(Ordering::Acquire), i);
    }
    order.sort_unstable();
    for &(seq, i) in order.iter().filter(|(seq, _)| *seq != 0) {
        let Some(s) = SLOTS.get(i) else { continue };
        let state = match s.stage.load(Ordering::Acquire) {
            x if x == TdStage::Runnable as u8 => "runnable",
            x if x == TdStage::Initialized as u8 => "initialized",
            _ => "uninitialized",
        };
        write!(b, "td {seq} state {state} mrtd ")?;
        for w in &s.mrtd {
            write!(b, "{:016x}", w.load(Ordering::Acquire))?;
        }
        writeln!(b)?;
    }
    Ok(())
}

/// debugfs `tds`: fills `buf`, returns the length.
///
/// # Safety
///
/// `buf` is valid for `len` bytes of writes, and nothing else accesses those bytes until this
/// returns.
#[no_mangle]
pub(crate) unsafe extern "C" fn tdxkvm_rust_tds(buf: *mut u8, len: usize) -> usize {
    // SAFETY: the caller's contract.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    crate::stats::Buf::fill(out, render)
}
