// SPDX-License-Identifier: GPL-2.0-only
//! The TDP iterator: a pre-order walk of one root over a GFN range (upstream `tdp_iter.c`).
//!
//! It has no policy: it reads entries, steps down into present tables, sideways to the next
//! entry, and up when a table is done. Entries are read atomically (`READ_ONCE`); the table
//! pages it descends into stay valid because every walker holds the MMU lock and unlinked pages
//! are freed only under the exclusive side (see [`crate::page`]).
//!
//! Outside the crate the iterator is read-only. Inside, only the transition layer
//! (`tdp/transition.rs`) changes the current entry (`sptep`) and then tells the iterator what it
//! wrote (`set_old_spte`), so a table that was just removed is not descended into. Outside code
//! can neither write an entry nor make the iterator believe in a value that is not there:
//!
//! ```compile_fail,E0624
//! use mmu::{env::MmuEnv, iter::TdpIter, spte::Ept};
//! fn clobber<E: MmuEnv>(it: &TdpIter<'_, Ept, E>) {
//!     it.sptep().store(0, core::sync::atomic::Ordering::Relaxed);
//! }
//! ```
//!
//! ```compile_fail,E0624
//! use mmu::{env::MmuEnv, iter::TdpIter, spte::Ept};
//! fn lie<E: MmuEnv>(it: &mut TdpIter<'_, Ept, E>) {
//!     it.set_old_spte(0x1000 | 0x800 | 7);
//! }
//! ```
//!
//! What compiles is reading:
//!
//! ```
//! use mmu::{page::RootKind, spte::Ept, Gfn};
//! let mmu = testkit::td_mmu::<Ept>();
//! let g = mmu.read();
//! let mut it = mmu.walk(&g, RootKind::Mirror, Gfn::new(0), Gfn::new(512)).unwrap();
//! let mut present = 0;
//! while it.valid() {
//!     present += usize::from(it.old_spte() != 0);
//!     it.next();
//! }
//! assert_eq!(present, 0);
//! ```

use crate::addr::Gfn;
use crate::env::{MmuEnv, Table};
use crate::error::MmuError;
use crate::level::{Level, ENTRIES_PER_TABLE};
use crate::page::{MmuPage, RootKind};
use crate::spte::{PagingFormat, SpteKind};
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const PATH_LEN: usize = Level::MAX.get() as usize + 1;

/// A walk of one root.
///
/// # Invariants
///
/// `pt_path[l]` for `level <= l <= root_level` points to the table holding the entries of level
/// `l` on the path to the current entry; `pt_path[root_level]` is the root table. These tables are
/// alive while the MMU lock is held (the lifetime `'a` borrows the lock guard's MMU).
pub struct TdpIter<'a, F: PagingFormat, E: MmuEnv> {
    env: &'a E,
    root: &'a Table,
    pt_path: [Option<NonNull<Table>>; PATH_LEN],
    root_kind: RootKind,
    root_level: Level,
    min_level: Level,
    level: Level,
    gfn: Gfn,
    next_last_level_gfn: Gfn,
    end: Gfn,
    old_spte: u64,
    valid: bool,
    /// The MMU's bugged flag, set when a present table entry names a page the environment
    /// cannot map.
    bugged: &'a AtomicBool,
    /// The walk stopped on such an entry.
    broken: bool,
    _format: PhantomData<F>,
}

impl<'a, F: PagingFormat, E: MmuEnv> TdpIter<'a, F, E> {
    /// Starts a walk of `root` over `[start, end)`, descending no lower than `min_level`.
    /// `bugged` is the MMU's bugged flag.
    ///
    /// # Safety
    ///
    /// `root` is a live root of `env`'s MMU and the caller holds that MMU's lock for as long as
    /// the iterator is used.
    #[inline]
    pub(crate) unsafe fn new(
        env: &'a E,
        root: &'a MmuPage,
        min_level: Level,
        start: Gfn,
        end: Gfn,
        bugged: &'a AtomicBool,
    ) -> Self {
        let root_level = root.role().level;
        let table = root.table();
        let mut pt_path = [None; PATH_LEN];
        pt_path[root_level.get() as usize] = Some(NonNull::from(table));
        let mut it = TdpIter {
            env,
            root: table,
            pt_path,
            root_kind: root.role().root_kind,
            root_level,
            min_level,
            level: root_level,
            gfn: start,
            next_last_level_gfn: start,
            end,
            old_spte: 0,
            valid: false,
            bugged,
            broken: false,
            _format: PhantomData,
        };
        it.restart();
        it
    }

    /// Starts over from the root at the entry covering the next GFN to visit (upstream
    /// `tdp_iter_restart`, used after the lock was dropped and retaken).
    pub fn restart(&mut self) {
        self.level = self.root_level;
        self.gfn = self.next_last_level_gfn.align_down(self.level.pages());
        self.refresh();
        // The root entry may start below the range; what counts is the next GFN to visit.
        self.valid = !self.broken && self.next_last_level_gfn < self.end;
    }

    /// HOOK(gmemfault): the next 4 KiB GFN the walk visits (upstream
    /// `iter->next_last_level_gfn`): where [`TdpIter::restart`] resumes.
    pub fn next_gfn(&self) -> Gfn {
        self.next_last_level_gfn
    }

    /// Whether the walk stopped on a present table entry whose page the environment could not
    /// map (the VM is then marked bugged; nothing after that entry was visited).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// `Err(MmuError::Bugged)` if the walk stopped on a broken table entry ([`Self::is_broken`]).
    pub(crate) fn check(&self) -> Result<(), MmuError> {
        if self.broken {
            Err(MmuError::Bugged)
        } else {
            Ok(())
        }
    }

    /// The root this walk covers.
    pub fn root_kind(&self) -> RootKind {
        self.root_kind
    }

    /// Whether the iterator points at an entry inside the range.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// Level of the current entry.
    pub fn level(&self) -> Level {
        self.level
    }

    /// First GFN mapped by the current entry.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// The value of the current entry when last read or written.
    pub fn old_spte(&self) -> u64 {
        self.old_spte
    }

    /// The current entry decoded.
    pub fn kind(&self) -> SpteKind {
        F::decode(self.old_spte, self.level)
    }

    /// The current entry, for the transition layer to change it.
    pub(crate) fn sptep(&self) -> &'a AtomicU64 {
        self.table_at(self.level).entry(self.level.index(self.gfn))
    }

    /// Re-reads the current entry.
    pub fn reread(&mut self) -> u64 {
        self.old_spte = self.table_at(self.level).load(self.level.index(self.gfn));
        self.old_spte
    }

    /// Records the value the transition layer stored into (or found in) the current entry.
    pub(crate) fn set_old_spte(&mut self, value: u64) {
        self.old_spte = value;
    }

    /// Whether the current entry's whole GFN span lies inside `[start, end)`.
    pub fn entry_within(&self, start: Gfn, end: Gfn) -> bool {
        self.gfn >= start && self.gfn.add(self.level.pages()) <= end
    }

    fn table_at(&self, level: Level) -> &'a Table {
        match self.pt_path[level.get() as usize] {
            // SAFETY: by the type invariant the tables on the path are alive for 'a.
            Some(t) => unsafe { t.as_ref() },
            // The path is always filled from the root down to `self.level` (type invariant).
            None => self.root,
        }
    }

    fn refresh(&mut self) {
        self.reread();
    }

    fn try_step_down(&mut self) -> bool {
        if self.level <= self.min_level {
            return false;
        }
        // Re-read: another walker may have changed the entry since we looked.
        let spte = self.reread();
        let SpteKind::Table(pfn) = F::decode(spte, self.level) else {
            return false;
        };
        let Some(down) = self.level.down() else {
            return false;
        };
        let Some(table) = self.env.table_of(pfn) else {
            // A present entry naming a page nobody allocated: stop here rather than walk into
            // it, and mark the VM bugged (KVM_BUG_ON); `valid()` is false from now on.
            self.bugged.store(true, Ordering::Relaxed);
            self.broken = true;
            return false;
        };
        self.pt_path[down.get() as usize] = Some(table);
        self.level = down;
        self.gfn = self.next_last_level_gfn.align_down(down.pages());
        self.refresh();
        true
    }

    fn try_step_side(&mut self) -> bool {
        if self.level.index(self.gfn) == ENTRIES_PER_TABLE - 1 {
            return false;
        }
        self.gfn = self.gfn.add(self.level.pages());
        self.next_last_level_gfn = self.gfn;
        self.refresh();
        true
    }

    fn try_step_up(&mut self) -> bool {
        if self.level == self.root_level {
            return false;
        }
        let Some(up) = self.level.up() else {
            return false;
        };
        self.level = up;
        self.gfn = self.gfn.align_down(up.pages());
        self.refresh();
        true
    }

    /// Moves to the next entry in pre-order: into the current entry's table if it is one,
    /// else to the next entry of this table, else up.
    pub fn next(&mut self) {
        if self.try_step_down() {
            return;
        }
        self.next_sibling();
    }

    /// Moves to the next entry without descending into the current one (its subtree was handled
    /// or removed by the caller).
    pub fn next_sibling(&mut self) {
        if self.broken {
            self.valid = false;
            return;
        }
        loop {
            if self.try_step_side() {
                self.valid = self.gfn < self.end;
                return;
            }
            if !self.try_step_up() {
                break;
            }
        }
        self.valid = false;
    }
}
