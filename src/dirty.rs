// SPDX-License-Identifier: GPL-2.0-only
//! Dirty logging of ordinary VMs: `KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`,
//! `KVM_CLEAR_DIRTY_LOG` and `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` (upstream 6.12:
//! virt/kvm/kvm_main.c `kvm_prepare_memory_region` / `kvm_get_dirty_log_protect` /
//! `kvm_clear_dirty_log_protect` / `mark_page_dirty_in_slot`, x86.c
//! `kvm_mmu_slot_apply_flags`, spte.c `make_spte`).
//!
//! How it works, as upstream on a host without PML (every AMD host):
//! - a slot that logs has a bitmap, one bit per page ([`DirtyBits`], the logic is
//!   `memcore::dirty`'s); it is allocated before `slots_lock` is taken (a request that needs
//!   one drops the lock, allocates and starts over) and freed when the slot stops logging or
//!   goes;
//! - when a slot starts logging, its writable leaves in the shared root are write-protected and
//!   its huge leaves zapped (`TdpMmu::write_protect_range`), inside an invalidation so that a
//!   fault that looked the slot up before (and so knows nothing of the bitmap) retries instead
//!   of installing a writable leaf nobody marks; faults cap such a slot at 4 KiB
//!   ([`FaultLog::max_level`]);
//! - whoever installs a **writable** leaf of a logged slot marks its GFN dirty
//!   ([`FaultLog::mark_if_writable`]): a write fault, but also a read or exec fault of a page
//!   the host already has writable, which upstream maps writable too (`make_spte` →
//!   `mark_page_dirty_in_slot`). That is why kvm-ioctls' `test_run_code` sees exactly two dirty
//!   pages: the data page it writes and the code page its first fetch mapped;
//! - `KVM_GET_DIRTY_LOG` takes the bitmap word by word under the MMU lock and write-protects
//!   what it took (`TdpMmu::write_protect_masked`), so the next write faults and marks again;
//!   with manual protect it only copies, and `KVM_CLEAR_DIRTY_LOG` clears and write-protects
//!   the pages userspace names.
//!
//! What is not here: TDs do not log (their private memory cannot be, their shared memory is not
//! offered: `KVM_MEM_LOG_DIRTY_PAGES` is EINVAL on a TD), nor guest_memfd slots (upstream
//! refuses those); turning logging off keeps the 4 KiB mappings (upstream zaps what could be
//! huge again, `kvm_mmu_zap_collapsible_sptes`); no dirty ring.
//!
//! Locking: the logs live under `slots_lock` ([`crate::memslot::MemState::dirty`]); a fault
//! takes a reference to the slot's [`DirtyBits`] with its slot lookup, under `slots_lock`, and
//! marks under the MMU lock after mapping. The ioctls hold `slots_lock` and take the MMU lock
//! exclusively for the write-protection.

use crate::mem_abi::{KvmClearDirtyLog, KvmDirtyLog};
use crate::memslot::{err, MemState};
use crate::vm::{Vm, VmMmu};
use core::sync::atomic::AtomicU64;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::uaccess::UserSlice;
use memcore::dirty::{self as core_dirty, ClearRange};
use memcore::memslot::{Change, Memslot};
use memcore::uapi::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use mmu::spte::Access;
use mmu::{Gfn, Level};

/// A logged slot's bitmap (upstream `memslot->dirty_bitmap`), shared with the faults that
/// looked the slot up: they may still mark it after the slot stopped logging, which then marks
/// a bitmap nobody reads and that goes with the last reference.
pub(crate) struct DirtyBits {
    words: KVVec<AtomicU64>,
}

impl DirtyBits {
    /// The bitmap's words.
    fn words(&self) -> &[AtomicU64] {
        self.words.as_slice()
    }
}

/// One logged slot under `slots_lock`.
pub(crate) struct SlotLog {
    id: u16,
    npages: u64,
    bits: Arc<DirtyBits>,
    /// Upstream's second bitmap: the copy `KVM_GET_DIRTY_LOG` hands out and the words
    /// `KVM_CLEAR_DIRTY_LOG` reads from userspace; used only under `slots_lock`.
    buf: KVVec<u64>,
}

impl SlotLog {
    /// A clear log for a slot of `npages` pages. Allocates (kvmalloc, like upstream's
    /// `kvzalloc` of both bitmaps): call it without `slots_lock`.
    pub(crate) fn alloc(npages: u64) -> Result<Self> {
        let n = core_dirty::bitmap_words(npages);
        let mut words = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            // Within capacity: no allocation.
            words.push(AtomicU64::new(0), GFP_NOWAIT)?;
        }
        let mut buf = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        buf.extend_with(n, 0u64, GFP_NOWAIT)?;
        Ok(SlotLog {
            id: 0,
            npages,
            bits: Arc::new(DirtyBits { words }, GFP_KERNEL_ACCOUNT)?,
            buf,
        })
    }

    /// The size this log was made for.
    pub(crate) fn npages(&self) -> u64 {
        self.npages
    }
}

/// The logs of a VM's logged slots (upstream keeps the bitmap in the memslot; here the core's
/// `Memslot` is plain data, so the logs sit beside the set, found by slot id). A removed log
/// leaves an empty entry that the next one reuses (the kernel's `KVec` cannot remove a
/// non-`Copy` element), so the table is as long as the most slots that logged at once.
pub(crate) struct DirtyLogs {
    logs: KVec<Option<SlotLog>>,
}

impl DirtyLogs {
    /// No slot logs.
    pub(crate) fn new() -> Self {
        DirtyLogs { logs: KVec::new() }
    }

    fn find(&self, id: u16) -> Option<&SlotLog> {
        self.logs.iter().flatten().find(|l| l.id == id)
    }

    fn find_mut(&mut self, id: u16) -> Option<&mut SlotLog> {
        self.logs.iter_mut().flatten().find(|l| l.id == id)
    }

    /// Makes room for one more log, so that [`commit`] cannot fail after the slot changed.
    pub(crate) fn reserve(&mut self) -> Result {
        if self.logs.iter().any(Option::is_none) || self.logs.capacity() > self.logs.len() {
            return Ok(());
        }
        self.logs.reserve(1, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)
    }

    fn insert(&mut self, mut log: SlotLog, id: u16) {
        log.id = id;
        if let Some(free) = self.logs.iter_mut().find(|l| l.is_none()) {
            *free = Some(log);
            return;
        }
        // Room was made by `reserve`: no allocation. Failing would only lose the log.
        if self.logs.push(Some(log), GFP_NOWAIT).is_err() {
            pr_err!("dirty log of slot {} lost: no room\n", id);
        }
    }

    fn remove(&mut self, id: u16) -> Option<SlotLog> {
        self.logs
            .iter_mut()
            .find(|l| l.as_ref().is_some_and(|l| l.id == id))?
            .take()
    }
}

/// Whether a slot with `flags` logs.
fn logs(flags: u32) -> bool {
    flags & KVM_MEM_LOG_DIRTY_PAGES != 0
}

/// The pages of the log `change` needs allocated, if it needs a new one: a slot created with
/// logging, or one whose flags turn logging on (upstream `kvm_prepare_memory_region`; a
/// moved slot or one that keeps logging keeps its bitmap).
pub(crate) fn new_log_pages(change: &Change) -> Option<u64> {
    match change {
        Change::Create(new) if logs(new.flags) => Some(new.npages),
        Change::FlagsOnly { old, new } if logs(new.flags) && !logs(old.flags) => Some(new.npages),
        _ => None,
    }
}

/// Applies a committed memslot change to the logs (upstream `kvm_commit_memory_region` and x86
/// `kvm_mmu_slot_apply_flags`): a new log goes in (every bit set with
/// `KVM_DIRTY_LOG_INITIALLY_SET`), a slot that starts logging is write-protected unless
/// initially-set or read-only, and the log of a deleted slot, or of one that stops logging, is
/// freed. `log` is what [`SlotLog::alloc`] made for [`new_log_pages`].
///
/// Locking: `slots_lock` (the caller's `st`); takes the MMU lock.
pub(crate) fn commit(vm: &Vm, st: &mut MemState, change: &Change, log: Option<SlotLog>) {
    let init_set = core_dirty::initially_set(vm.memslots().manual_dirty_log_protect());
    match *change {
        Change::Create(new) | Change::FlagsOnly { new, .. } if new_log_pages(change).is_some() => {
            let Some(log) = log else {
                // The caller allocated one for exactly this change.
                pr_err!("slot {} logs without a bitmap\n", new.id);
                return;
            };
            if init_set {
                core_dirty::set_all(log.bits.words(), new.npages);
            }
            st.dirty.insert(log, new.id);
            if matches!(change, Change::FlagsOnly { .. })
                && !init_set
                && new.flags & KVM_MEM_READONLY == 0
            {
                write_protect_slot(vm, &new);
            }
        }
        Change::FlagsOnly { new, .. } if !logs(new.flags) => {
            drop(st.dirty.remove(new.id));
        }
        Change::Delete(old) => {
            drop(st.dirty.remove(old.id));
        }
        _ => {}
    }
}

/// Write-protects a slot that starts logging, in an invalidation (see the module docs).
fn write_protect_slot(vm: &Vm, slot: &Memslot) {
    let VmMmu::Plain(m) = vm.mmu() else {
        // TDs do not log.
        return;
    };
    let inv = vm.memslots().invalidation().scope();
    // HOOK(gmemfault): the whole-slot pass yields when asked (upstream wrprot_gen_range).
    let g = m.write_may_yield();
    let r = m.write_protect_range(&g, slot.base_gfn, slot.end_gfn());
    drop(g);
    drop(inv);
    if let Err(e) = r {
        // Only a bugged VM (which answers EIO from now on) or a slot beyond the MMU's reach,
        // which arch_prepare refused: nothing userspace can still rely on.
        pr_err!("write-protecting slot {} failed: {:?}\n", slot.id, e);
        m.mark_bugged();
    }
}

/// What a fault needs about its slot's logging, taken with the slot lookup under
/// `slots_lock` and used under the MMU lock.
pub(crate) struct FaultLog {
    log: Option<(Arc<DirtyBits>, Gfn)>,
}

impl FaultLog {
    /// Whether the slot logs.
    pub(crate) fn is_logging(&self) -> bool {
        self.log.is_some()
    }

    /// The largest level a fault may map at: 4 KiB while the slot logs (upstream
    /// `kvm_mmu_hugepage_adjust` with `kvm_slot_dirty_track_enabled`).
    pub(crate) fn max_level(&self, level: Level) -> Level {
        if self.is_logging() {
            Level::L4K
        } else {
            level
        }
    }

    /// After a fault mapped `gfn` with `access` (the map succeeded, or found the same leaf
    /// there), under the MMU lock: marks `gfn` dirty if the leaf is writable and the slot logs
    /// (upstream `make_spte` → `mark_page_dirty_in_slot`, which also marks on a spurious fault).
    pub(crate) fn mark_if_writable(&self, gfn: Gfn, access: Access) {
        if let Some((bits, base)) = &self.log {
            if access.contains(Access::WRITE) {
                mark(bits, *base, gfn);
            }
        }
    }
}

fn mark(bits: &DirtyBits, base: Gfn, gfn: Gfn) {
    if gfn < base || !core_dirty::mark(bits.words(), gfn.raw() - base.raw()) {
        // Upstream WARNs: the GFN is not in the slot the fault looked up.
        pr_warn!("dirty mark of GFN {:?} outside its slot\n", gfn);
    }
}

/// The logging state a fault on `slot` carries (call with the slot lookup, under `slots_lock`).
pub(crate) fn fault_log(st: &MemState, slot: &Memslot) -> FaultLog {
    FaultLog {
        log: st
            .dirty
            .find(slot.id)
            .filter(|_| logs(slot.flags))
            .map(|l| (l.bits.clone(), slot.base_gfn)),
    }
}

/// Marks `gfn` dirty if its slot logs (upstream `mark_page_dirty`): for KVM's own writes to
/// guest memory (an emulated instruction's store, a PIO string IN), which no fault sees.
///
/// Locking: takes `slots_lock`; not under the MMU lock.
#[allow(dead_code)]
pub(crate) fn mark_page_dirty(vm: &Vm, gfn: Gfn) {
    let st = vm.memslots().lock();
    if let Some(slot) = st.slots.lookup(gfn) {
        if let Some(l) = st.dirty.find(slot.id) {
            mark(&l.bits, slot.base_gfn, gfn);
        }
    }
}

/// Write-protects the pages `words` yields (`(first page of the word, mask)`, slot-relative)
/// under the MMU lock, taking the words as it goes. `EIO` if the MMU refuses (a bugged VM).
fn protect_words(vm: &Vm, base: Gfn, words: impl Iterator<Item = (u64, u64)>) -> Result {
    match vm.mmu() {
        VmMmu::Plain(m) => {
            let g = m.write();
            let r = m.write_protect_masked(&g, words.map(|(off, mask)| (base.add(off), mask)));
            drop(g);
            r.map(|_| ()).map_err(|_| EIO)
        }
        // TDs do not log; take the words all the same.
        VmMmu::Td(_) => {
            words.for_each(drop);
            Ok(())
        }
    }
}

/// `KVM_GET_DIRTY_LOG` on `vm` (upstream `kvm_vm_ioctl_get_dirty_log`).
pub(crate) fn get_dirty_log(vm: &Vm, arg: usize) -> Result<isize> {
    let log: KvmDirtyLog = UserSlice::new(arg, core::mem::size_of::<KvmDirtyLog>())
        .reader()
        .read()?;
    let id = core_dirty::check_slot(log.slot, 1).map_err(err)?;
    let manual = core_dirty::manual(vm.memslots().manual_dirty_log_protect());
    let mut st = vm.memslots().lock();
    let slot = *st.slots.by_id(id).ok_or(ENOENT)?;
    let l = st.dirty.find_mut(id).ok_or(ENOENT)?;
    let n = core_dirty::bitmap_words(slot.npages);
    let (bits, buf) = (&l.bits, &mut l.buf.as_mut_slice()[..n]);
    if manual {
        core_dirty::snapshot(bits.words(), buf);
    } else {
        // Upstream memsets the copy first: a word the MMU never took reads as clean.
        buf.fill(0);
        protect_words(vm, slot.base_gfn, core_dirty::harvest(bits.words(), buf))?;
    }
    let mut w = UserSlice::new(log.dirty_bitmap as usize, n * 8).writer();
    for word in buf.iter() {
        w.write(word)?;
    }
    Ok(0)
}

/// `KVM_CLEAR_DIRTY_LOG` on `vm` (upstream `kvm_vm_ioctl_clear_dirty_log`): with or without
/// manual protect, as upstream.
pub(crate) fn clear_dirty_log(vm: &Vm, arg: usize) -> Result<isize> {
    let log: KvmClearDirtyLog = UserSlice::new(arg, core::mem::size_of::<KvmClearDirtyLog>())
        .reader()
        .read()?;
    let id = core_dirty::check_slot(log.slot, 1).map_err(err)?;
    let range = ClearRange {
        first_page: log.first_page,
        num_pages: log.num_pages,
    };
    range.check_alignment().map_err(err)?;
    let mut st = vm.memslots().lock();
    let slot = *st.slots.by_id(id).ok_or(ENOENT)?;
    let l = st.dirty.find_mut(id).ok_or(ENOENT)?;
    let bytes = range.check(slot.npages).map_err(err)?;
    let n = bytes / 8;
    let (bits, buf) = (&l.bits, &mut l.buf.as_mut_slice()[..n]);
    let mut r = UserSlice::new(log.dirty_bitmap as usize, bytes).reader();
    for word in buf.iter_mut() {
        *word = r.read::<u64>()?;
    }
    protect_words(
        vm,
        slot.base_gfn,
        core_dirty::clear(bits.words(), range, buf),
    )?;
    Ok(0)
}

/// `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` (upstream
/// `kvm_vm_ioctl_enable_cap_generic`): any time, for every VM.
pub(crate) fn enable_manual_protect(vm: &Vm, flags: u32, arg0: u64) -> Result<isize> {
    let v = core_dirty::enable_manual_protect(flags, arg0).map_err(err)?;
    vm.memslots().set_manual_dirty_log_protect(v);
    Ok(0)
}
