// SPDX-License-Identifier: GPL-2.0-only
//! Memslots of a VM: `KVM_SET_USER_MEMORY_REGION` and `KVM_SET_USER_MEMORY_REGION2` (upstream
//! `kvm_vm_ioctl_set_memory_region` → `kvm_set_memory_region` → `kvm_set_memslot`, 6.12).
//!
//! The checks and the change kinds are `memcore::memslot`'s (host-tested); this file copies the
//! structures in, binds a guest_memfd for a `KVM_MEM_GUEST_MEMFD` slot ([`crate::gmem`]),
//! commits, and zaps both roots over the old range of a deleted or moved slot — for a TD the
//! mirror through the S-EPT backend (BLOCK, TRACK, REMOVE).
//!
//! Locking: [`Memslots`] is upstream's `slots_lock`: it serialises memslot changes, attribute
//! changes ([`crate::attributes`]) and guest_memfd binds, releases and hole punches. It nests
//! outside the MMU lock (zaps run with it held) and is never taken by anything the kernel's
//! reclaim can call, so allocating under it is fine. Upstream readers use SRCU; readers here
//! (the fault side, still to come) take the same mutex for the lookup only.

use crate::glue;
use crate::mem_abi::*;
use crate::mmu_notifier::{Invalidation, Notifier};
use crate::vm::{Vm, VmMmu};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::{Mutex, SpinLock};
use kernel::uaccess::UserSlice;
use kernel::{new_mutex, new_spinlock};
use memcore::attributes::{AttrMap, AttrRange};
use memcore::hva::{HvaIndex, HvaRange};
use memcore::memslot::{Change, GmemId, Memslot, MemslotSet, RegionIoctl, VmMemCaps};
use memcore::store::Store;
use memcore::Errno;
use mmu::cache::SplitCache;
use mmu::env::MmuEnv;
use mmu::external::ExternalPageTable;
use mmu::spte::PagingFormat;
use mmu::tdp::{TdpMmu, ZapTarget};
use mmu::{Gfn, MmuError};

/// A [`Store`] in a `KVec` of `Copy` elements; grown (allocating) only by [`KVecStore::reserve`],
/// so the core's calls never allocate.
pub(crate) struct KVecStore<T>(KVec<T>);

impl<T: Copy> KVecStore<T> {
    /// An empty store.
    pub(crate) fn new() -> Self {
        KVecStore(KVec::new())
    }

    /// Makes room for `n` more elements.
    pub(crate) fn reserve(&mut self, n: usize) -> Result {
        if n == 0 {
            return Ok(());
        }
        self.0.reserve(n, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)
    }
}

impl<T: Copy> Store<T> for KVecStore<T> {
    fn as_slice(&self) -> &[T] {
        self.0.as_slice()
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        self.0.as_mut_slice()
    }

    fn spare(&self) -> usize {
        self.0.capacity() - self.0.len()
    }

    fn insert(&mut self, index: usize, value: T) -> core::result::Result<(), Errno> {
        if self.spare() == 0 || index > self.0.len() {
            return Err(Errno::ENOMEM);
        }
        // Within capacity: `push` does not allocate.
        self.0.push(value, GFP_NOWAIT).map_err(|_| Errno::ENOMEM)?;
        self.0.as_mut_slice()[index..].rotate_right(1);
        Ok(())
    }

    fn remove(&mut self, index: usize) -> T {
        let s = self.0.as_mut_slice();
        let v = s[index];
        s[index..].rotate_left(1);
        let len = s.len() - 1;
        // SAFETY: `len` is below the current length, so `0..len` stays initialised; `T: Copy`
        // has no destructor to skip for the element given up.
        unsafe { self.0.set_len(len) };
        v
    }
}

/// What `slots_lock` guards.
pub(crate) struct MemState {
    /// The memslots (one address space: no SMM).
    pub(crate) slots: MemslotSet<KVecStore<Memslot>>,
    /// Memory attributes per GFN.
    pub(crate) attrs: AttrMap<KVecStore<AttrRange>>,
    /// This VM's open guest_memfd files. A slot names its file by [`GmemId`]; a file that is
    /// gone is not here (upstream clears `slot->gmem.file` at release).
    pub(crate) gmem_files: KVec<crate::gmem::GmemRef>,
    /// The logs of the slots that log dirty pages ([`crate::dirty`]).
    pub(crate) dirty: crate::dirty::DirtyLogs,
    /// The VM's split cache (a TD's only): what a conversion or hole punch that covers part of
    /// a 2 MiB private leaf needs to DEMOTE it ([`VmMmu::zap_gfns_split`]). Conversions have no
    /// vCPU, so the cache is per VM, serialised by `slots_lock`; topped up before the MMU lock
    /// is taken, emptied at VM destroy ([`VmMmu::free_split_cache`]).
    pub(crate) split: SplitCache,
}

/// The VM's memslots and memory attributes under `slots_lock`, the notifier's HVA index, the
/// invalidation counters, and whether pre-faulting is allowed.
#[pin_data]
pub(crate) struct Memslots {
    #[pin]
    state: Mutex<MemState>,
    /// One [`HvaRange`] per slot, for the MMU notifier (see [`crate::mmu_notifier`]); changed
    /// only under `slots_lock`, never held while allocating nor across a zap.
    #[pin]
    hva: SpinLock<HvaIndex<KVecStore<HvaRange>>>,
    invalidate: Invalidation,
    /// The MMU notifier on the creator's mm, registered with the first memslot (under
    /// `slots_lock`).
    #[pin]
    notifier: Mutex<Option<Notifier>>,
    /// Upstream `kvm->arch.pre_fault_allowed`: true for default and software-protected VMs;
    /// a TD's `KVM_TDX_FINALIZE_VM` sets it ([`Memslots::allow_pre_fault`]).
    pre_fault_allowed: AtomicBool,
    /// Upstream `kvm->manual_dirty_log_protect` (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`), read by
    /// the dirty-log ioctls and when a slot starts logging.
    manual_dirty_log_protect: AtomicU64,
    /// HOOK(dirtylog): the slot set's generation as last committed, readable without
    /// `slots_lock` (the fast page fault's [`memcore::last_slot::LastSlot`] trusts its entry
    /// while this matches).
    published_generation: AtomicU64,
}

impl Memslots {
    /// No slots, every GFN shared; `pre_fault_allowed` as the VM type starts.
    pub(crate) fn new(pre_fault_allowed: bool) -> impl PinInit<Self> {
        pin_init!(Memslots {
            state <- new_mutex!(
                MemState {
                    slots: MemslotSet::new(KVecStore::new()),
                    attrs: AttrMap::new(KVecStore::new()),
                    gmem_files: KVec::new(),
                    dirty: crate::dirty::DirtyLogs::new(),
                    split: SplitCache::new(),
                },
                "kvm->slots_lock"
            ),
            hva <- new_spinlock!(HvaIndex::new(KVecStore::new()), "kvm->hva_index"),
            invalidate: Invalidation::default(),
            notifier <- new_mutex!(None, "kvm->mmu_notifier"),
            pre_fault_allowed: AtomicBool::new(pre_fault_allowed),
            manual_dirty_log_protect: AtomicU64::new(0),
            published_generation: AtomicU64::new(0),
        })
    }

    /// Takes `slots_lock`.
    pub(crate) fn lock(
        &self,
    ) -> kernel::sync::lock::Guard<'_, MemState, kernel::sync::lock::mutex::MutexBackend> {
        self.state.lock()
    }

    /// The notifier's HVA index, locked.
    pub(crate) fn hva_index(
        &self,
    ) -> kernel::sync::lock::Guard<
        '_,
        HvaIndex<KVecStore<HvaRange>>,
        kernel::sync::lock::spinlock::SpinLockBackend,
    > {
        self.hva.lock()
    }

    /// The invalidation counters.
    pub(crate) fn invalidation(&self) -> &Invalidation {
        &self.invalidate
    }

    /// Whether `KVM_PRE_FAULT_MEMORY` may map (upstream `kvm->arch.pre_fault_allowed`).
    pub(crate) fn pre_fault_allowed(&self) -> bool {
        self.pre_fault_allowed.load(Ordering::Acquire)
    }

    /// Allows `KVM_PRE_FAULT_MEMORY` (a TD's `KVM_TDX_FINALIZE_VM`).
    pub(crate) fn allow_pre_fault(&self) {
        self.pre_fault_allowed.store(true, Ordering::Release);
    }

    /// The VM's `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` value (0: off).
    pub(crate) fn manual_dirty_log_protect(&self) -> u64 {
        self.manual_dirty_log_protect.load(Ordering::Acquire)
    }

    /// Sets the VM's `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` value.
    pub(crate) fn set_manual_dirty_log_protect(&self, v: u64) {
        self.manual_dirty_log_protect.store(v, Ordering::Release);
    }

    /// HOOK(dirtylog): the slot set's generation as last published (see
    /// [`Self::publish_generation`]); read after [`Invalidation::seq`].
    pub(crate) fn published_generation(&self) -> u64 {
        self.published_generation.load(Ordering::Acquire)
    }

    /// HOOK(dirtylog): publishes the set's generation after a committed change, under
    /// `slots_lock` and before any invalidation the change runs (so a fault that saw the old
    /// generation read the invalidation count before that invalidation began, and retries).
    pub(crate) fn publish_generation(&self, generation: u64) {
        self.published_generation
            .store(generation, Ordering::SeqCst);
    }

    /// First thing in the VM's teardown: unregisters the MMU notifier (waiting for running
    /// callbacks), so none can reach the VM while its fields go.
    pub(crate) fn shutdown(&self) {
        drop(self.notifier.lock().take());
    }

    /// Registers the MMU notifier if it is not yet (the first memslot).
    fn ensure_notifier(&self, vm: &Vm) -> Result {
        let mut n = self.notifier.lock();
        if n.is_none() {
            *n = Some(Notifier::register(vm)?);
        }
        Ok(())
    }

    /// Makes room in the HVA index for one more range, allocating outside its spinlock (the
    /// caller holds `slots_lock`, so nothing else changes the index meanwhile).
    fn reserve_hva(&self) -> Result {
        let (len, spare) = {
            let mut h = self.hva.lock();
            let v = &h.store_mut().0;
            (v.len(), v.capacity() - v.len())
        };
        if spare > 0 {
            return Ok(());
        }
        let mut bigger = KVec::with_capacity(len * 2 + 4, GFP_KERNEL_ACCOUNT)?;
        let mut h = self.hva.lock();
        let v = &mut h.store_mut().0;
        // Within the new capacity: no allocation under the spinlock.
        bigger.extend_from_slice(v.as_slice(), GFP_NOWAIT)?;
        core::mem::swap(v, &mut bigger);
        drop(h);
        drop(bigger);
        Ok(())
    }

    /// Applies a committed change to the HVA index.
    fn update_hva(&self, change: &Change) {
        let mut h = self.hva.lock();
        match *change {
            Change::Create(s) => {
                let r = HvaRange {
                    id: s.id,
                    start: s.userspace_addr,
                    end: s.userspace_addr + (s.npages << 12),
                    base_gfn: s.base_gfn,
                };
                // Room was made by `reserve_hva`: no allocation.
                if h.insert(r).is_err() {
                    pr_err!("memslot HVA index full\n");
                }
            }
            Change::Delete(s) => h.remove(s.id),
            Change::Move { new, .. } => h.set_base(new.id, new.base_gfn),
            Change::FlagsOnly { .. } | Change::Unchanged => {}
        }
    }
}

/// The kernel error for a core errno.
pub(crate) fn err(e: Errno) -> Error {
    Error::from_errno(-e.to_errno())
}

/// Whether the VM has private memory (upstream `kvm_arch_has_private_mem`).
pub(crate) fn has_private_mem(vm: &Vm) -> bool {
    matches!(
        vm.vm_type(),
        crate::abi::KVM_X86_SW_PROTECTED_VM | crate::abi::KVM_X86_TDX_VM
    )
}

/// Whether `KVM_MEM_READONLY` is available (upstream: not with protected state, i.e. TDs).
pub(crate) fn has_readonly_mem(vm: &Vm) -> bool {
    !vm.is_td()
}

/// Whether `KVM_MEM_LOG_DIRTY_PAGES` is offered: not on TDs (see [`crate::dirty`]).
pub(crate) fn has_dirty_logging(vm: &Vm) -> bool {
    !vm.is_td()
}

/// GFN bits of the guest-physical space the MMUs map (4-level: 48-bit GPAs).
const GPA_BITS: u32 = 48;

/// The VM's memslot capabilities for the core's checks.
fn caps(vm: &Vm) -> VmMemCaps {
    // SAFETY: reads boot_cpu_data.x86_phys_bits; no preconditions.
    let host_bits = unsafe { glue::tdxkvm_phys_bits() };
    let bits = host_bits.clamp(32, GPA_BITS);
    VmMemCaps {
        private_mem: has_private_mem(vm),
        readonly_mem: has_readonly_mem(vm),
        dirty_logging: has_dirty_logging(vm),
        nr_as_ids: 1,
        max_gfn: Gfn::new((1u64 << (bits - 12)) - 1),
        // A TD's shared bit (GPA bit 47 with 4-level S-EPT, tdx-vm-abi.md §3) exists from
        // KVM_TDX_INIT_VM on: upstream's kvm_gfn_direct_bits() is 0 before tdx_td_init sets
        // it, so a slot made earlier is only held to max_gfn.
        shared_gfn_bit: vm
            .mmu()
            .td()
            .filter(|td| td.stage() != tdx::kvm::rules::TdStage::Uninitialized)
            .map(|td| td.shared_bit() >> 12),
    }
}

/// `KVM_CHECK_EXTENSION` answers of this area (`vm` None on `/dev/kvm`); `None` for other caps.
pub(crate) fn check_extension(cap: u64, vm: Option<&Vm>) -> Option<isize> {
    if let Some(r) = crate::memfault::check_extension(cap) {
        return Some(r);
    }
    Some(match cap {
        KVM_CAP_USER_MEMORY | KVM_CAP_USER_MEMORY2 => 1,
        KVM_CAP_NR_MEMSLOTS => memcore::uapi::KVM_USER_MEM_SLOTS as isize,
        KVM_CAP_READONLY_MEM => vm.map_or(true, has_readonly_mem) as isize,
        KVM_CAP_GUEST_MEMFD => vm.map_or(true, has_private_mem) as isize,
        // Upstream answers tdp_enabled for every VM; a TD refuses the ioctl until FINALIZE.
        KVM_CAP_PRE_FAULT_MEMORY => 1,
        // Upstream's x86 value for every VM; a TD, which cannot log, answers 0 here.
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => {
            if vm.map_or(true, has_dirty_logging) {
                memcore::dirty::KVM_DIRTY_LOG_MANUAL_CAPS as isize
            } else {
                0
            }
        }
        KVM_CAP_MEMORY_ATTRIBUTES => {
            memcore::attributes::supported_attributes(vm.map_or(true, has_private_mem)) as isize
        }
        _ => return None,
    })
}

/// How often a zap that found the S-EPT busy is repeated before the VM is marked bugged.
const ZAP_RETRIES: usize = 16;

fn zap_one<F: PagingFormat, E: MmuEnv, X: ExternalPageTable>(
    mmu: &TdpMmu<F, E, X>,
    target: ZapTarget,
    start: Gfn,
    end: Gfn,
    mut split: Option<&mut SplitCache>,
    may_yield: bool,
) -> core::result::Result<(), MmuError> {
    let mut last = Ok(());
    for _ in 0..ZAP_RETRIES {
        if let Some(c) = split.as_deref_mut() {
            // Before the MMU lock: allocation may sleep. A zap that needs more than the cache
            // held (NoMemory below, nothing changed) comes back here for more.
            if let Err(e) = mmu.topup_split_cache(c) {
                last = Err(e);
                break;
            }
        }
        // HOOK(gmemfault): long zaps yield under a sleepable caller (upstream may_block).
        let guard = if may_yield {
            mmu.write_may_yield()
        } else {
            mmu.write()
        };
        last = match split.as_deref_mut() {
            Some(c) => mmu.zap_range_split(&guard, target, start, end, c),
            None => mmu.zap_range(&guard, target, start, end),
        }
        .map(|_| ());
        drop(guard);
        match last {
            Err(MmuError::ExternalBusy | MmuError::NoMemory) => continue,
            _ => break,
        }
    }
    if last.is_err() && !mmu.is_bugged() {
        // Upstream KVM_BUG_ON: a zap that cannot finish leaves pages the guest may still reach.
        pr_err!(
            "zap of GFNs {:?}..{:?} failed: {:?}; VM marked bugged\n",
            start,
            end,
            last
        );
        mmu.mark_bugged();
    }
    last
}

impl VmMmu {
    /// Zaps `[start, end)` (memslot GFNs) in the chosen roots, retrying an S-EPT that stays
    /// busy; a zap that cannot finish marks the VM bugged. A huge leaf straddling the range
    /// goes whole (memslot delete and move: nothing of the old range survives). A TD whose MMU
    /// is gone has nothing mapped.
    ///
    /// Locking: takes the MMU lock exclusively; callers hold `slots_lock`.
    pub(crate) fn zap_gfns(
        &self,
        target: ZapTarget,
        start: Gfn,
        end: Gfn,
    ) -> core::result::Result<(), MmuError> {
        self.zap_gfns_may_block(target, start, end, true)
    }

    /// HOOK(gmemfault): [`VmMmu::zap_gfns`]; `may_block`: the caller may sleep, so the zap
    /// drops the MMU lock and reschedules when asked (upstream `range->may_block`, false for
    /// an MMU notifier range that is not blockable).
    pub(crate) fn zap_gfns_may_block(
        &self,
        target: ZapTarget,
        start: Gfn,
        end: Gfn,
        may_block: bool,
    ) -> core::result::Result<(), MmuError> {
        if start >= end {
            return Ok(());
        }
        match self {
            // One root holds both kinds of memory of a plain or software-protected VM.
            VmMmu::Plain(m) => zap_one(m, ZapTarget::Shared, start, end, None, may_block),
            VmMmu::Td(td) => match td.mmu() {
                Some(m) => zap_one(m, target, start, end, None, may_block),
                None => Ok(()),
            },
        }
    }

    /// Zaps `[start, end)` like [`VmMmu::zap_gfns`], except that a TD's 2 MiB private leaf the
    /// range covers only in part is split first (BLOCK, TRACK, TDH.MEM.PAGE.DEMOTE with pages
    /// from `cache`), so only the 4 KiB pages inside the range leave the S-EPT and the others
    /// stay mapped and accepted: conversions and hole punches. The cache is topped up before
    /// each try, so a zap that needs more splits than one cache holds goes round again.
    ///
    /// A software-protected VM keeps upstream's behaviour: its private memory lives in its one
    /// (shared-format) root, where a straddling 2M leaf is zapped whole; nothing is lost, since
    /// the guest_memfd keeps the contents and the next fault maps them again (at 4K, the range
    /// being no longer uniformly private).
    ///
    /// Locking: takes the MMU lock exclusively; callers hold `slots_lock` (which guards
    /// `cache`).
    pub(crate) fn zap_gfns_split(
        &self,
        target: ZapTarget,
        start: Gfn,
        end: Gfn,
        cache: &mut SplitCache,
    ) -> core::result::Result<(), MmuError> {
        match self {
            VmMmu::Td(td) if start < end => match td.mmu() {
                Some(m) => zap_one(m, target, start, end, Some(cache), true),
                None => Ok(()),
            },
            _ => self.zap_gfns(target, start, end),
        }
    }

    /// Tops a TD's split cache up (before a conversion or hole punch changes anything, so that
    /// an allocation failure can still be answered with `ENOMEM`). Nothing for other VMs.
    ///
    /// Locking: must not hold the MMU lock.
    pub(crate) fn topup_split_cache(&self, cache: &mut SplitCache) -> Result {
        match self {
            VmMmu::Td(td) => match td.mmu() {
                Some(m) => m.topup_split_cache(cache).map_err(|_| ENOMEM),
                None => Ok(()),
            },
            VmMmu::Plain(_) => Ok(()),
        }
    }

    /// Gives everything the split cache holds back (VM destroy, before the MMU goes).
    pub(crate) fn free_split_cache(&self, cache: &mut SplitCache) {
        if let VmMmu::Td(td) = self {
            if let Some(m) = td.mmu() {
                m.free_split_cache(cache);
            }
        }
    }
}

/// `untagged_addr(addr) == addr && access_ok(addr, size)`.
fn user_range_ok(addr: u64, size: u64) -> bool {
    // SAFETY: only computes on the values (current's address limit); touches no memory.
    unsafe { glue::tdxkvm_user_range_ok(addr, size) }
}

/// `KVM_SET_USER_MEMORY_REGION` / `KVM_SET_USER_MEMORY_REGION2` on `vm`.
pub(crate) fn set_user_memory_region(vm: &Vm, ioctl: RegionIoctl, arg: usize) -> Result<isize> {
    let mem: KvmUserspaceMemoryRegion2 = match ioctl {
        RegionIoctl::V1 => UserSlice::new(arg, core::mem::size_of::<KvmUserspaceMemoryRegion>())
            .reader()
            .read::<KvmUserspaceMemoryRegion>()?
            .into(),
        RegionIoctl::V2 => UserSlice::new(arg, core::mem::size_of::<KvmUserspaceMemoryRegion2>())
            .reader()
            .read()?,
    };
    let req = mem.request();
    memcore::memslot::check_ioctl(ioctl, &req).map_err(err)?;
    let caps = caps(vm);
    // A change that starts a dirty log needs its bitmap, allocated without `slots_lock`: drop
    // the lock, allocate, and validate again (the set may have changed meanwhile).
    let mut log: Option<crate::dirty::SlotLog> = None;
    let (mut st, mut change) = loop {
        let st = vm.memslots().lock();
        let change = st.slots.prepare(&caps, &req, user_range_ok).map_err(err)?;
        match crate::dirty::new_log_pages(&change) {
            Some(n) if log.as_ref().map_or(true, |l| l.npages() != n) => {
                drop(st);
                log = Some(crate::dirty::SlotLog::alloc(n)?);
            }
            _ => break (st, change),
        }
    };
    let mut bound: Option<GmemId> = None;
    if let Change::Create(ref mut new) = change {
        if new.flags & memcore::uapi::KVM_MEM_GUEST_MEMFD != 0 {
            let g = crate::gmem::bind(vm, &mut st, new, req.guest_memfd, req.guest_memfd_offset)?;
            bound = Some(g);
        }
    }
    let prepared = (|| {
        if let Change::Create(_) = change {
            vm.memslots().ensure_notifier(vm)?;
            vm.memslots().reserve_hva()?;
        }
        if crate::dirty::new_log_pages(&change).is_some() {
            st.dirty.reserve()?;
        }
        let need = st.slots.room_needed(&change);
        st.slots.store_mut().reserve(need)
    })();
    let committed = prepared.and_then(|()| st.slots.commit(&caps, &change).map_err(err));
    if let Err(e) = committed {
        if let (Some(g), Change::Create(new)) = (bound, &change) {
            crate::gmem::unbind(&mut st, g, new.id);
        }
        return Err(e);
    }
    // HOOK(dirtylog): before the change's invalidations (dirty::commit, the zap below).
    vm.memslots().publish_generation(st.slots.generation());
    vm.memslots().update_hva(&change);
    let log = log.filter(|_| crate::dirty::new_log_pages(&change).is_some());
    crate::dirty::commit(vm, &mut st, &change, log);
    match change {
        Change::Delete(old) | Change::Move { old, .. } => {
            // HOOK(irq12): steal-time byte caches.
            crate::irq::sched::memslots_changed(vm);
            // Upstream kvm_arch_flush_shadow_memslot: every mapping of the old range goes, in
            // both roots; private contents of a deleted slot are lost. A fault that looked the
            // old slot up retries (the invalidation).
            let inv = vm.memslots().invalidation().scope();
            // A zap that cannot finish marked the VM bugged; the slot is gone either way.
            vm.mmu()
                .zap_gfns(ZapTarget::Both, old.base_gfn, old.end_gfn())
                .ok();
            drop(inv);
            if let (Change::Delete(_), Some(g)) = (change, old.gmem) {
                crate::gmem::unbind(&mut st, g.file, old.id);
            }
        }
        _ => {}
    }
    Ok(0)
}
