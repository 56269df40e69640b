// SPDX-License-Identifier: GPL-2.0-only
//! The VM side of the userspace exits: the capabilities userspace enables with
//! `KVM_ENABLE_CAP` (`KVM_CAP_X86_USER_SPACE_MSR`, `KVM_CAP_EXIT_HYPERCALL`,
//! `KVM_CAP_EXIT_ON_EMULATION_FAILURE`), the MSR filter (`KVM_X86_SET_MSR_FILTER`), coalesced
//! MMIO/PIO zones (`KVM_(UN)REGISTER_COALESCED_MMIO`) and ioeventfds (`KVM_IOEVENTFD`), and the
//! lookups the run loop makes on them.
//!
//! Decisions and errnos come from the kernel-free [`x86::exits`]; this file copies the uapi
//! structures in and keeps the state under one mutex ([`VmExits`]; upstream uses `kvm->lock`,
//! `slots_lock`, SRCU and `ring_lock` for the same data — one mutex gives the same answers, and
//! every user runs in process context). The coalesced ring page itself is the VM's
//! ([`crate::vm::Vm::coalesced_mmio_ring`]).

use crate::abi::KvmEnableCap;
use crate::eventfd::EventFd;
use crate::vm::Vm;
use core::mem::size_of;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::uaccess::UserSlice;
use x86::exits::coalesced::{self, Zone};
use x86::exits::ioeventfd::{self, Bus, IoEventFd};
use x86::exits::msr_filter::{self, MsrAccess, MsrFilter, UapiFilter};
use x86::exits::{emulation, hypercall, user_msr, Errno};

const KVMIO: u32 = 0xAE;

/// `_IOW(KVMIO, nr, T)`.
const fn iow(nr: u32, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (1 << 30) | ((size as u32) << 16) | (KVMIO << 8) | nr
}

/// `KVM_REGISTER_COALESCED_MMIO`.
pub(crate) const KVM_REGISTER_COALESCED_MMIO: u32 = iow(0x67, coalesced::ZONE_SIZE);
/// `KVM_UNREGISTER_COALESCED_MMIO`.
pub(crate) const KVM_UNREGISTER_COALESCED_MMIO: u32 = iow(0x68, coalesced::ZONE_SIZE);
/// `KVM_IOEVENTFD`.
pub(crate) const KVM_IOEVENTFD: u32 = iow(0x79, ioeventfd::UAPI_SIZE);
/// `KVM_X86_SET_MSR_FILTER`.
pub(crate) const KVM_X86_SET_MSR_FILTER: u32 = iow(0xc6, msr_filter::UAPI_SIZE);
/// `KVM_SET_GUEST_DEBUG` (vCPU fd).
pub(crate) const KVM_SET_GUEST_DEBUG: u32 = iow(0x9b, x86::exits::guest_debug::UAPI_SIZE);
const _: () = {
    assert!(KVM_REGISTER_COALESCED_MMIO == 0x4010_ae67);
    assert!(KVM_UNREGISTER_COALESCED_MMIO == 0x4010_ae68);
    assert!(KVM_IOEVENTFD == 0x4040_ae79);
    assert!(KVM_X86_SET_MSR_FILTER == 0x4188_aec6);
    assert!(KVM_SET_GUEST_DEBUG == 0x4048_ae9b);
};

/// `KVM_CAP_COALESCED_MMIO` (its value is the ring's page offset in the vCPU mapping).
const KVM_CAP_COALESCED_MMIO: u64 = 15;
/// `KVM_CAP_SET_GUEST_DEBUG`.
const KVM_CAP_SET_GUEST_DEBUG: u64 = 23;
/// `KVM_CAP_IOEVENTFD`.
const KVM_CAP_IOEVENTFD: u64 = 36;
/// `KVM_CAP_IOEVENTFD_NO_LENGTH`.
const KVM_CAP_IOEVENTFD_NO_LENGTH: u64 = 100;
/// `KVM_CAP_IOEVENTFD_ANY_LENGTH`.
const KVM_CAP_IOEVENTFD_ANY_LENGTH: u64 = 122;
/// `KVM_CAP_COALESCED_PIO`.
const KVM_CAP_COALESCED_PIO: u64 = 162;
/// `KVM_CAP_SET_GUEST_DEBUG2` (its value: the `KVM_GUESTDBG_*` flags accepted).
const KVM_CAP_SET_GUEST_DEBUG2: u64 = 195;
/// `KVM_CAP_X86_USER_SPACE_MSR`.
const KVM_CAP_X86_USER_SPACE_MSR: u64 = 188;
/// `KVM_CAP_X86_MSR_FILTER`.
const KVM_CAP_X86_MSR_FILTER: u64 = 189;
/// `KVM_CAP_EXIT_HYPERCALL`.
const KVM_CAP_EXIT_HYPERCALL: u64 = 201;
/// `KVM_CAP_EXIT_ON_EMULATION_FAILURE`.
const KVM_CAP_EXIT_ON_EMULATION_FAILURE: u64 = 204;
/// `KVM_CAP_HLT`: a guest HLT ends `KVM_RUN` with `KVM_EXIT_HLT` when no in-kernel LAPIC
/// halts the vCPU and HLT exits are not disabled (`crate::run`), as upstream's
/// `kvm_emulate_halt`.
const KVM_CAP_HLT: u64 = 1;
/// `KVM_CAP_X86_ROBUST_SINGLESTEP`: `KVM_GUESTDBG_SINGLESTEP`'s TF is the debugger's, not the
/// guest's: hidden from `KVM_GET_REGS`, added only at the linear RIP stepping was set at
/// (upstream `__kvm_get_rflags` / `__kvm_set_rflags` with `singlestep_rip`,
/// [`x86::exits::guest_debug`]).
const KVM_CAP_X86_ROBUST_SINGLESTEP: u64 = 51;
/// `KVM_CAP_INTERNAL_ERROR_DATA`: every `KVM_EXIT_INTERNAL_ERROR` fills `internal.ndata` and
/// `internal.data` (the emulation failure's flags, instruction bytes and SVM exit information,
/// [`emulation::failure_exit`]; an unexpected exit's code and the last entry's CPU).
const KVM_CAP_INTERNAL_ERROR_DATA: u64 = 40;
/// `KVM_CAP_LAST_CPU`: `fail_entry.cpu` is the CPU of the last entry (`RunState::last_cpu`),
/// as is an unexpected exit's `internal.data[1]` (upstream `last_vmentry_cpu`).
const KVM_CAP_LAST_CPU: u64 = 184;
/// `KVM_CAP_X86_GUEST_MODE`: `KVM_RUN` clears `kvm_run.flags` and sets
/// `KVM_RUN_X86_GUEST_MODE` when the vCPU exited from a nested guest, which never happens here
/// (no nested SVM), so the bit is always clear, as upstream without nesting.
const KVM_CAP_X86_GUEST_MODE: u64 = 238;
/// `KVM_CAP_SYSTEM_EVENT_DATA` (generic, `kvm_vm_ioctl_check_extension_generic`): a
/// `KVM_EXIT_SYSTEM_EVENT` carries `system_event.ndata` and `data[]`. On x86 only Hyper-V
/// (crash/reset requests) and SEV-ES termination raise that exit, neither of which exists here
/// (nor in upstream kvm_amd without them): the module raises none, and whatever raises one
/// must fill `ndata`.
const KVM_CAP_SYSTEM_EVENT_DATA: u64 = 215;

/// `KVM_CHECK_EXTENSION` for the capabilities of this file (`None`: not ours).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    Some(match cap {
        KVM_CAP_COALESCED_MMIO => crate::abi::KVM_COALESCED_MMIO_PAGE_OFFSET as isize,
        KVM_CAP_COALESCED_PIO
        | KVM_CAP_IOEVENTFD
        | KVM_CAP_IOEVENTFD_NO_LENGTH
        | KVM_CAP_IOEVENTFD_ANY_LENGTH
        | KVM_CAP_X86_USER_SPACE_MSR
        | KVM_CAP_X86_MSR_FILTER
        | KVM_CAP_EXIT_ON_EMULATION_FAILURE
        | KVM_CAP_SET_GUEST_DEBUG
        | KVM_CAP_HLT
        | KVM_CAP_X86_ROBUST_SINGLESTEP
        | KVM_CAP_INTERNAL_ERROR_DATA
        | KVM_CAP_LAST_CPU
        | KVM_CAP_X86_GUEST_MODE
        | KVM_CAP_SYSTEM_EVENT_DATA => 1,
        KVM_CAP_EXIT_HYPERCALL => hypercall::EXIT_HYPERCALL_VALID_MASK as isize,
        // KVM_GUESTDBG_VALID_MASK, as upstream (HOOK(abi): BLOCKIRQ is honoured now).
        KVM_CAP_SET_GUEST_DEBUG2 => x86::exits::guest_debug::SUPPORTED as isize,
        _ => return None,
    })
}

/// Whether `KVM_ENABLE_CAP` of `cap` on a VM fd is handled here.
pub(crate) fn enables(cap: u64) -> bool {
    matches!(
        cap,
        KVM_CAP_X86_USER_SPACE_MSR | KVM_CAP_EXIT_HYPERCALL | KVM_CAP_EXIT_ON_EMULATION_FAILURE
    )
}

fn errno(e: Errno) -> Error {
    Error::from_errno(-e.raw())
}

/// `KVM_ENABLE_CAP` (VM fd) for the capabilities [`enables`] names; `flags` was checked.
pub(crate) fn enable_cap(vm: &Vm, cap: &KvmEnableCap) -> Result<isize> {
    let arg0 = cap.args[0];
    let mut l = vm.exits().lock();
    match u64::from(cap.cap) {
        KVM_CAP_X86_USER_SPACE_MSR => {
            l.user_space_msr_mask = user_msr::enable_cap(arg0).map_err(errno)?
        }
        KVM_CAP_EXIT_HYPERCALL => {
            l.hypercall_exit_mask = hypercall::enable_cap(arg0).map_err(errno)?
        }
        KVM_CAP_EXIT_ON_EMULATION_FAILURE => {
            l.exit_on_emulation_failure = emulation::enable_cap(arg0).map_err(errno)?
        }
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// An MSR-filter range's bitmap, copied in from userspace.
pub(crate) struct Bitmap(KVec<u8>);

impl AsRef<[u8]> for Bitmap {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// What [`VmExits`] guards.
pub(crate) struct VmExitsLocked {
    /// `KVM_MSR_EXIT_REASON_*` that exit to userspace (`kvm->arch.user_space_msr_mask`).
    pub(crate) user_space_msr_mask: u32,
    /// Hypercalls that exit to userspace (`kvm->arch.hypercall_exit_enabled`).
    pub(crate) hypercall_exit_mask: u64,
    /// `kvm->arch.exit_on_emulation_error`.
    pub(crate) exit_on_emulation_failure: bool,
    /// The MSR filter, if one was set.
    msr_filter: Option<MsrFilter<Bitmap>>,
    /// The SVM MSR permission map the VM's vCPUs share, kept in step with `msr_filter`
    /// (allocated with the first vCPU).
    msrpm: Option<crate::svm::msrpm::VmMsrpm>,
    /// Coalesced zones (`None`: a freed slot).
    zones: KVec<Option<Zone>>,
    /// ioeventfds (`None`: a freed slot).
    ioeventfds: KVec<Option<IoEventFd<EventFd>>>,
}

impl VmExitsLocked {
    /// Devices other than ioeventfds on `bus`: upstream's `dev_count - ioeventfd_count` that
    /// `kvm_io_bus_register_dev` limits to `NR_IOBUS_DEVS`.
    fn zone_count(&self, pio: bool) -> usize {
        self.zones
            .iter()
            .flatten()
            .filter(|z| (z.pio == 1) == pio)
            .count()
    }

    /// Whether the MSR filter allows the access (`kvm_msr_allowed`).
    pub(crate) fn msr_allowed(&self, index: u32, access: MsrAccess) -> bool {
        msr_filter::allowed(self.msr_filter.as_ref(), index, access)
    }
}

/// Inserts into the first free slot of a slot vector, or appends.
fn insert<T>(v: &mut KVec<Option<T>>, x: T) -> Result {
    if let Some(slot) = v.iter_mut().find(|s| s.is_none()) {
        *slot = Some(x);
        return Ok(());
    }
    v.push(Some(x), GFP_KERNEL).map_err(|_| ENOMEM)
}

/// The VM's exit configuration and I/O devices.
#[pin_data]
pub(crate) struct VmExits {
    #[pin]
    inner: Mutex<VmExitsLocked>,
}

impl VmExits {
    /// Everything off, no filter, no zones, no ioeventfds.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(VmExits {
            inner <- new_mutex!(
                VmExitsLocked {
                    user_space_msr_mask: 0,
                    hypercall_exit_mask: 0,
                    exit_on_emulation_failure: false,
                    msr_filter: None,
                    msrpm: None,
                    zones: KVec::new(),
                    ioeventfds: KVec::new(),
                },
                "kvm->exits"
            ),
        })
    }

    /// The physical address of the VM's SVM MSR permission map, allocated (for the current
    /// filter) on the first call; `None` if it cannot be allocated.
    pub(crate) fn msrpm_pa(&self) -> Option<u64> {
        let mut l = self.inner.lock();
        if l.msrpm.is_none() {
            l.msrpm = Some(crate::svm::msrpm::VmMsrpm::new(l.msr_filter.as_ref())?);
        }
        l.msrpm.as_ref().map(|m| m.pa())
    }

    /// The lock.
    pub(crate) fn lock(
        &self,
    ) -> kernel::sync::lock::Guard<'_, VmExitsLocked, kernel::sync::lock::mutex::MutexBackend> {
        self.inner.lock()
    }
}

fn read_bytes<const N: usize>(uaddr: usize) -> Result<[u8; N]> {
    UserSlice::new(uaddr, size_of::<[u8; N]>()).reader().read()
}

/// `KVM_X86_SET_MSR_FILTER`: the new filter is built completely (bitmaps copied in) before it
/// replaces the old one, so a failure leaves the old filter in force.
pub(crate) fn set_msr_filter(vm: &Vm, arg: usize) -> Result<isize> {
    let uapi = UapiFilter::from_bytes(&read_bytes::<{ msr_filter::UAPI_SIZE }>(arg)?);
    let filter = MsrFilter::build(&uapi, |uaddr, n| {
        let mut v = KVec::new();
        UserSlice::new(uaddr as usize, n)
            .reader()
            .read_all(&mut v, GFP_KERNEL)
            .map_err(|e| {
                if e == ENOMEM {
                    Errno::ENOMEM
                } else {
                    Errno::EFAULT
                }
            })?;
        Ok(Bitmap(v))
    })
    .map_err(errno)?;
    let old = {
        let mut l = vm.exits().lock();
        let old = l.msr_filter.replace(filter);
        // Upstream KVM_REQ_MSR_FILTER_CHANGED → svm_msr_filter_changed: the pass-through MSRs
        // the new filter denies are intercepted again, the ones it allows pass through. The
        // map is shared by the VM's vCPUs, so it is rewritten here, under the lock that also
        // orders it with the filter the exit handler checks.
        let VmExitsLocked {
            msr_filter, msrpm, ..
        } = &mut *l;
        if let Some(m) = msrpm.as_mut() {
            m.update(msr_filter.as_ref());
        }
        old
    };
    // Freed outside the lock.
    drop(old);
    Ok(0)
}

/// `KVM_REGISTER_COALESCED_MMIO`.
pub(crate) fn register_coalesced(vm: &Vm, arg: usize) -> Result<isize> {
    let z = Zone::from_bytes(&read_bytes::<{ coalesced::ZONE_SIZE }>(arg)?);
    z.validate().map_err(errno)?;
    let mut l = vm.exits().lock();
    if l.zone_count(z.pio == 1) >= coalesced::NR_IOBUS_DEVS {
        return Err(errno(Errno::ENOSPC));
    }
    insert(&mut l.zones, z)?;
    Ok(0)
}

/// `KVM_UNREGISTER_COALESCED_MMIO`: removes every zone of that kind the request lies in; 0
/// even if none matched, as upstream.
pub(crate) fn unregister_coalesced(vm: &Vm, arg: usize) -> Result<isize> {
    let req = Zone::from_bytes(&read_bytes::<{ coalesced::ZONE_SIZE }>(arg)?);
    req.validate().map_err(errno)?;
    let mut l = vm.exits().lock();
    for s in l.zones.iter_mut() {
        if s.as_ref().is_some_and(|z| z.removed_by(&req)) {
            *s = None;
        }
    }
    Ok(0)
}

/// `KVM_IOEVENTFD` (assign or deassign), in upstream's check order.
pub(crate) fn ioeventfd(vm: &Vm, arg: usize) -> Result<isize> {
    let r = ioeventfd::Request::from_bytes(&read_bytes::<{ ioeventfd::UAPI_SIZE }>(arg)?);
    if r.is_deassign() {
        let efd = EventFd::from_fd(r.fd)?;
        let mut l = vm.exits().lock();
        let found = l
            .ioeventfds
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|p| p.deassigned_by(&r, &efd)));
        let Some(slot) = found else {
            return Err(ENOENT);
        };
        let gone = slot.take();
        drop(l);
        drop(gone);
        return Ok(0);
    }
    r.validate_assign().map_err(errno)?;
    let p = IoEventFd::new(&r, EventFd::from_fd(r.fd)?);
    let mut l = vm.exits().lock();
    if l.ioeventfds.iter().flatten().any(|q| q.collides(&p)) {
        return Err(EEXIST);
    }
    let pio = p.bus == Bus::Pio;
    if p.bus != Bus::VirtioCcw && l.zone_count(pio) >= coalesced::NR_IOBUS_DEVS {
        return Err(errno(Errno::ENOSPC));
    }
    insert(&mut l.ioeventfds, p)?;
    Ok(0)
}

/// What happened to a guest write offered to the VM's in-kernel devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteResult {
    /// An ioeventfd was signalled or the write went into the coalesced ring: no exit.
    Handled,
    /// No device took it: exit to userspace.
    Unhandled,
}

impl Vm {
    /// A guest write of `data` at `addr` on `bus` (`kvm_io_bus_write`): an ioeventfd that
    /// matches is signalled, else a coalesced zone of that kind that covers the write appends
    /// it to the ring if the ring has room.
    pub(crate) fn io_bus_write(&self, bus: Bus, addr: u64, data: &[u8]) -> WriteResult {
        let l = self.exits().lock();
        if let Some(p) = l
            .ioeventfds
            .iter()
            .flatten()
            .find(|p| p.hits(bus, addr, data))
        {
            p.eventfd.signal();
            return WriteResult::Handled;
        }
        let pio = match bus {
            Bus::Mmio => 0,
            Bus::Pio => 1,
            Bus::VirtioCcw => return WriteResult::Unhandled,
        };
        let covered = l
            .zones
            .iter()
            .flatten()
            .any(|z| z.pio == pio && z.covers(addr, data.len() as i32));
        if covered && self.coalesced_ring_push(addr, data, pio == 1) {
            return WriteResult::Handled;
        }
        WriteResult::Unhandled
    }

    /// Appends one write to the coalesced ring (`coalesced_mmio_write`, called with the exits
    /// lock held as upstream holds `ring_lock`): false when the ring is full.
    fn coalesced_ring_push(&self, addr: u64, data: &[u8], pio: bool) -> bool {
        let ring = self.coalesced_mmio_ring().virt();
        // SAFETY: `ring` is the VM's ring page (4 KiB, alive as long as the VM); userspace may
        // write `first` at any time, so it is read once, volatile (upstream READ_ONCE); `last`
        // is only written by the kernel, under the exits lock.
        let (first, last) = unsafe {
            (
                core::ptr::read_volatile(ring.add(coalesced::RING_FIRST).cast::<u32>()),
                core::ptr::read_volatile(ring.add(coalesced::RING_LAST).cast::<u32>()),
            )
        };
        let Some(slot) = coalesced::ring_slot(first, last) else {
            return false;
        };
        let e = coalesced::entry(addr, data, pio);
        // SAFETY: `ring_slot` bounds `slot` below RING_MAX, so the entry lies inside the page;
        // the bytes are copied before `last` is published (upstream's smp_wmb: userspace reads
        // `last` and then the entries).
        unsafe {
            core::ptr::copy_nonoverlapping(
                e.as_ptr(),
                ring.add(coalesced::entry_offset(slot)),
                e.len(),
            );
            core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
            core::ptr::write_volatile(
                ring.add(coalesced::RING_LAST).cast::<u32>(),
                coalesced::ring_next(slot),
            );
        }
        true
    }
}
