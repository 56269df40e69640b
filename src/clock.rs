// SPDX-License-Identifier: GPL-2.0-only
//! The VM's kvm-clock (upstream `kvm->arch.kvmclock_offset`, the master clock of
//! `pvclock_update_vm_gtod_copy`, `kvm->arch.wall_clock`), `KVM_GET_CLOCK` / `KVM_SET_CLOCK`,
//! `KVM_CAP_ADJUST_CLOCK`, and `KVM_CAP_X86_DISABLE_EXITS` (its HLT part decides whether
//! `KVM_FEATURE_PV_UNHALT` may stay in a vCPU's CPUID).
//!
//! kvm-clock counts nanoseconds: the host's boot-based raw clock (`CLOCK_MONOTONIC_RAW` plus the
//! boot offset, upstream `get_kvmclock_base_ns`) plus the VM's offset, which starts at minus the
//! base at creation (so the clock starts at 0) and is moved by `KVM_SET_CLOCK`. When the host's
//! clocksource is the TSC, the VM has a master clock: one (host TSC, base ns) snapshot from which
//! every vCPU's pvclock record is computed, so all vCPUs read one linear function of the TSC and
//! the records carry `PVCLOCK_TSC_STABLE_BIT` (`KVM_GET_CLOCK` reports `KVM_CLOCK_TSC_STABLE`,
//! `KVM_CLOCK_REALTIME` and `KVM_CLOCK_HOST_TSC`). A VM without vCPUs has no master clock
//! (upstream's `nr_vcpus_matched_tsc + 1 == online_vcpus` fails with none): the first vCPU's
//! creation asks for a master-clock update (`kvm_track_tsc_matching`'s
//! `KVM_REQ_MASTERCLOCK_UPDATE`), which the next vCPU entry carries out. The snapshot is taken
//! then, at `KVM_SET_CLOCK`, and when vCPU 0 switches between the old and new kvm-clock MSRs
//! (upstream `boot_vcpu_runs_old_kvmclock` turns the master clock off).
//!
//! Where this differs from upstream: upstream also requires every vCPU's TSC to have been
//! written in sync (`nr_vcpus_matched_tsc`; here every vCPU counts as matched), asks the
//! update of the vCPU just created rather than of whichever vCPU enters next, and refreshes
//! the snapshot when the host's clocksource changes (the `pvclock_gtod` notifier); here the
//! snapshot is refreshed only at the events above. A vCPU's record is recomputed before its next entry whenever its TSC offset
//! changed, so its kvm-clock stays that same function of the host TSC.

pub(crate) mod glue;

use crate::vm::Vm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use glue::ClockSnap;
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::SpinLock;
use x86::pv::{self, KvmClockData, VmClockState};

/// `KVM_CAP_ADJUST_CLOCK`.
const KVM_CAP_ADJUST_CLOCK: u64 = 39;
/// `KVM_CAP_X86_DISABLE_EXITS`.
const KVM_CAP_X86_DISABLE_EXITS: u64 = 143;
/// `KVM_CAP_KVMCLOCK_CTRL`.
const KVM_CAP_KVMCLOCK_CTRL: u64 = 76;
/// `KVM_X86_DISABLE_EXITS_MWAIT`.
const DISABLE_EXITS_MWAIT: u64 = 1 << 0;
/// `KVM_X86_DISABLE_EXITS_HLT`.
const DISABLE_EXITS_HLT: u64 = 1 << 1;
/// `KVM_X86_DISABLE_EXITS_PAUSE`.
const DISABLE_EXITS_PAUSE: u64 = 1 << 2;
/// `KVM_X86_DISABLE_EXITS_CSTATE`.
const DISABLE_EXITS_CSTATE: u64 = 1 << 3;
/// `KVM_X86_DISABLE_VALID_EXITS`.
const DISABLE_VALID_EXITS: u64 =
    DISABLE_EXITS_MWAIT | DISABLE_EXITS_HLT | DISABLE_EXITS_PAUSE | DISABLE_EXITS_CSTATE;

/// The host clocks at one instant.
pub(crate) fn snapshot() -> ClockSnap {
    let mut s = ClockSnap::default();
    // SAFETY: writes one `ClockSnap` (the C layout) to a valid local.
    unsafe { glue::tdxkvm_clock_snapshot(&mut s) };
    s
}

/// The host's TSC rate in kHz (without TSC scaling, every guest's TSC runs at it).
pub(crate) fn host_tsc_khz() -> u64 {
    // SAFETY: reads the kernel's `tsc_khz`; no preconditions.
    u64::from(unsafe { crate::glue::tdxkvm_tsc_khz() })
}

/// What the clock lock guards (upstream: `tsc_write_lock` + the `pvclock_sc` seqcount).
struct ClockInner {
    st: VmClockState,
    /// vCPU 0 enabled kvm-clock through the legacy `MSR_KVM_SYSTEM_TIME`.
    boot_vcpu_runs_old_kvmclock: bool,
    /// The VM has a vCPU (upstream `nr_vcpus_matched_tsc + 1 == online_vcpus`, every vCPU
    /// counted as matched).
    vcpus_matched: bool,
}

/// A VM's kvm-clock.
#[pin_data]
pub(crate) struct VmClock {
    #[pin]
    inner: SpinLock<ClockInner>,
    /// Bumped whenever every vCPU must recompute its pvclock record (upstream makes
    /// `KVM_REQ_CLOCK_UPDATE` on every vCPU); each vCPU remembers the value it last saw.
    generation: AtomicU64,
    /// `kvm->arch.wall_clock`: the wall-clock MSR's value (either MSR, shared by the vCPUs).
    wall_clock: AtomicU64,
    /// `kvm->arch.hlt_in_guest` (`KVM_CAP_X86_DISABLE_EXITS` with HLT).
    hlt_in_guest: AtomicBool,
    /// `KVM_REQ_MASTERCLOCK_UPDATE`, asked by a vCPU's creation, carried out before the next
    /// vCPU entry ([`VmClock::masterclock_request`]).
    masterclock_request: AtomicBool,
}

impl VmClock {
    /// A new VM's clock (upstream `kvm_arch_init_vm`: `kvmclock_offset = -base`, then
    /// `pvclock_update_vm_gtod_copy`, which with no vCPU leaves the master clock off).
    ///
    /// `s` is taken at the start of the VM's creation, as upstream sets the offset in
    /// `kvm_arch_init_vm`, before the rest of `KVM_CREATE_VM`.
    pub(crate) fn new(s: ClockSnap) -> impl PinInit<Self> {
        let st = VmClockState {
            offset: (s.boot_raw_ns as i64).wrapping_neg(),
            use_master_clock: false,
            master_kernel_ns: s.boot_raw_ns,
            master_cycle_now: s.tsc,
        };
        pin_init!(VmClock {
            inner <- new_spinlock!(
                ClockInner {
                    st,
                    boot_vcpu_runs_old_kvmclock: false,
                    vcpus_matched: false,
                },
                "kvm->arch.tsc_write_lock"
            ),
            generation: AtomicU64::new(1),
            wall_clock: AtomicU64::new(0),
            hlt_in_guest: AtomicBool::new(false),
            masterclock_request: AtomicBool::new(false),
        })
    }

    /// `pvclock_update_vm_gtod_copy` under the lock: a fresh master snapshot; the master clock
    /// is used while the host's clocksource is the TSC, the VM has a vCPU and vCPU 0 does not
    /// run the legacy MSR.
    fn update_master(inner: &mut ClockInner) {
        let s = snapshot();
        inner.st.use_master_clock =
            s.tsc_based != 0 && inner.vcpus_matched && !inner.boot_vcpu_runs_old_kvmclock;
        inner.st.master_kernel_ns = s.boot_raw_ns;
        inner.st.master_cycle_now = s.tsc;
    }

    /// Every vCPU recomputes its record before its next entry (`kvm_end_pvclock_update`).
    fn request_update_all(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation vCPUs compare with the one they last saw.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `__get_kvmclock`: the kvm-clock now, with the host's real time and TSC at the same
    /// instant when the master clock is in use.
    pub(crate) fn get(&self) -> KvmClockData {
        let mut d = KvmClockData::default();
        // Under the lock (upstream reads inside the pvclock_sc seqcount): a concurrent
        // KVM_SET_CLOCK cannot slip between the state and the reading.
        let inner = self.inner.lock();
        let st = inner.st;
        if st.use_master_clock {
            let s = snapshot();
            d.host_tsc = s.tsc;
            if s.tsc_based != 0 {
                d.realtime = s.real_ns;
                d.flags |= pv::KVM_CLOCK_REALTIME | pv::KVM_CLOCK_HOST_TSC;
            }
            d.flags |= pv::KVM_CLOCK_TSC_STABLE;
            d.clock = st.master_clock_at(s.tsc, host_tsc_khz());
        } else {
            // SAFETY: reads the raw clock; no preconditions.
            let base = unsafe { glue::tdxkvm_clock_base_ns() };
            d.clock = base.wrapping_add(st.offset as u64);
        }
        drop(inner);
        d
    }

    /// `get_kvmclock_ns`.
    pub(crate) fn now_ns(&self) -> u64 {
        self.get().clock
    }

    /// `kvm_vm_ioctl_set_clock` after the copy: flags beyond `KVM_CLOCK_VALID_FLAGS` are
    /// `EINVAL`; a fresh master snapshot, the new offset, then every vCPU's record is redone.
    pub(crate) fn set(&self, data: &KvmClockData) -> Result {
        if !pv::set_clock_flags_valid(data.flags) {
            return Err(EINVAL);
        }
        {
            let mut inner = self.inner.lock();
            Self::update_master(&mut inner);
            // SAFETY: clock reads; no preconditions.
            let (real, raw) =
                unsafe { (glue::tdxkvm_clock_real_ns(), glue::tdxkvm_clock_base_ns()) };
            inner.st.set_clock(data, real, raw);
        }
        self.request_update_all();
        Ok(())
    }

    /// What a vCPU's record is computed from (`kvm_guest_time_update`): the host TSC and the
    /// kvm-clock at one instant, and whether it is the master clock's (stable).
    pub(crate) fn guest_time(&self) -> (u64, u64, bool) {
        let st = self.inner.lock().st;
        if st.use_master_clock {
            (
                st.master_cycle_now,
                st.master_kernel_ns.wrapping_add(st.offset as u64),
                true,
            )
        } else {
            let s = snapshot();
            (s.tsc, s.boot_raw_ns.wrapping_add(st.offset as u64), false)
        }
    }

    /// `kvm_get_wall_clock_epoch`: the host's real time when kvm-clock was 0 (one reading of
    /// both with the master clock, two close ones without).
    pub(crate) fn wall_clock_epoch(&self) -> u64 {
        {
            let inner = self.inner.lock();
            if inner.st.use_master_clock {
                let s = snapshot();
                if s.tsc_based != 0 {
                    return s
                        .real_ns
                        .wrapping_sub(inner.st.master_clock_at(s.tsc, host_tsc_khz()));
                }
            }
        }
        // SAFETY: reads the real-time clock; no preconditions.
        let real = unsafe { glue::tdxkvm_clock_real_ns() };
        real.wrapping_sub(self.now_ns())
    }

    /// `kvm_write_system_time`'s vCPU-0 part: switching between the legacy and the new MSR
    /// refreshes the master clock (the legacy one turns it off).
    pub(crate) fn boot_vcpu_msr(&self, old_msr: bool) {
        let changed = {
            let mut inner = self.inner.lock();
            let changed = inner.boot_vcpu_runs_old_kvmclock != old_msr;
            inner.boot_vcpu_runs_old_kvmclock = old_msr;
            if changed {
                Self::update_master(&mut inner);
            }
            changed
        };
        if changed {
            self.request_update_all();
        }
    }

    /// A vCPU was created (upstream `kvm_arch_vcpu_postcreate` → `kvm_synchronize_tsc` →
    /// `kvm_track_tsc_matching`): the VM's vCPUs now match, and when that would turn the master
    /// clock on, the next vCPU entry updates it.
    pub(crate) fn vcpu_created(&self) {
        let mut inner = self.inner.lock();
        inner.vcpus_matched = true;
        if !inner.st.use_master_clock && snapshot().tsc_based != 0 {
            self.masterclock_request.store(true, Ordering::Release);
        }
    }

    /// Before a vCPU entry: a pending master-clock update (`kvm_update_masterclock`): a fresh
    /// snapshot, then every vCPU recomputes its record.
    pub(crate) fn masterclock_request(&self) {
        if self.masterclock_request.swap(false, Ordering::AcqRel) {
            Self::update_master(&mut self.inner.lock());
            self.request_update_all();
        }
    }

    /// The wall-clock MSR's value.
    pub(crate) fn wall_clock_msr(&self) -> u64 {
        self.wall_clock.load(Ordering::Relaxed)
    }

    /// Stores the wall-clock MSR's value.
    pub(crate) fn set_wall_clock_msr(&self, v: u64) {
        self.wall_clock.store(v, Ordering::Relaxed);
    }

    /// Whether the master clock is in use.
    pub(crate) fn uses_master_clock(&self) -> bool {
        self.inner.lock().st.use_master_clock
    }

    /// HLT exits are disabled (`kvm_hlt_in_guest`).
    pub(crate) fn hlt_in_guest(&self) -> bool {
        self.hlt_in_guest.load(Ordering::Relaxed)
    }
}

/// `KVM_CHECK_EXTENSION` answers of this file (None: not one of them).
pub(crate) fn check_extension(cap: u64) -> Option<isize> {
    // KVM_CAP_CLOCKSOURCE and KVM_CAP_NOP_IO_DELAY: their KVM_CPUID_FEATURES bits are offered.
    if let Some(r) = pv::para_feature_cap(cap) {
        return Some(r);
    }
    Some(match cap {
        KVM_CAP_ADJUST_CLOCK => pv::KVM_CLOCK_VALID_FLAGS as isize,
        KVM_CAP_KVMCLOCK_CTRL => 1,
        // PAUSE is never intercepted here; HLT can stay in the guest; C-states have nothing to
        // intercept on SVM. MWAIT is not offered (MONITOR/MWAIT are #UD for guests here).
        KVM_CAP_X86_DISABLE_EXITS => {
            (DISABLE_EXITS_PAUSE | DISABLE_EXITS_HLT | DISABLE_EXITS_CSTATE) as isize
        }
        _ => return None,
    })
}

/// Whether VM `KVM_ENABLE_CAP` of `cap` is handled here.
pub(crate) fn enables(cap: u64) -> bool {
    cap == KVM_CAP_X86_DISABLE_EXITS
}

/// VM `KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS)` (6.12: allowed at any time, bits outside
/// `KVM_X86_DISABLE_VALID_EXITS` are `EINVAL`; MWAIT is accepted and ignored as upstream does
/// when the host cannot let guests MWAIT; PAUSE and C-states are already the guest's).
pub(crate) fn enable_cap(vm: &Vm, args0: u64) -> Result<isize> {
    if args0 & !DISABLE_VALID_EXITS != 0 {
        return Err(EINVAL);
    }
    if args0 & DISABLE_EXITS_HLT != 0 {
        vm.clock().hlt_in_guest.store(true, Ordering::Relaxed);
    }
    Ok(0)
}

/// The VM ioctls of this file (None: not one of them).
pub(crate) fn vm_ioctl(vm: &Vm, cmd: u32, arg: usize) -> Option<Result<isize>> {
    Some(match cmd {
        pv::KVM_GET_CLOCK => {
            let d = vm.clock().get();
            crate::vcpu_state::write_pod(arg, &d).map(|()| 0)
        }
        pv::KVM_SET_CLOCK => crate::vcpu_state::read_pod::<KvmClockData>(arg)
            .and_then(|d| vm.clock().set(&d))
            .map(|()| {
                // HOOK(irqfix): KVM_REQ_CLOCK_UPDATE's kick: running vCPUs exit and rewrite
                // their pvclock record before they enter again.
                crate::irq::lapic::kick_all(vm);
                0
            }),
        _ => return None,
    })
}
