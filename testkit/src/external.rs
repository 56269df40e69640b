// SPDX-License-Identifier: GPL-2.0-only
//! `RecordingExternal`: an [`ExternalPageTable`] that keeps its own copy of the external table,
//! enforces the ordering rules a Secure-EPT imposes, logs every call, and fails on demand.
//!
//! Rules it checks (a simplified Secure-EPT; the real ones live in the tdx crate's software
//! module):
//! - link/set only into a free entry whose parent table is linked (or is the root) and not blocked;
//! - block only a present entry; flush advances an epoch;
//! - block, remove and free only where the walk reaches: no table above blocked (a real S-EPT
//!   walk stops at a blocked non-leaf entry);
//! - remove/free only a blocked entry whose block is older than the last flush (unless in
//!   teardown mode, when the TD is gone and pages are simply reclaimed);
//! - free only a table with no entries left below it;
//! - split only a blocked huge leaf whose block is older than the last flush; its 512 new
//!   leaves are not blocked (as TDH.MEM.PAGE.DEMOTE leaves them).
//!
//! A violated rule is recorded (tests assert there are none) and answered with `Fatal`.

use mmu::external::{ExternalError, ExternalPageTable, PageRelease};
use mmu::page::{ExternalSpt, SptRelease};
use mmu::{Gfn, Level, Pfn};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// One hook call, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookCall {
    /// `link_spt(gfn, level)` with the external page's PFN.
    Link(Gfn, Level, Pfn),
    /// `set_spte(gfn, level, pfn)`.
    Set(Gfn, Level, Pfn),
    /// `block_spte(gfn, level, is_leaf)`.
    Block(Gfn, Level, bool),
    /// `flush()`.
    Flush,
    /// `remove_spte(gfn, level, pfn)`.
    Remove(Gfn, Level, Pfn),
    /// `free_spt(gfn, level)` with the external page's PFN.
    Free(Gfn, Level, Pfn),
    /// `split_spte(gfn, level, pfn)` with the new external page's PFN.
    Split(Gfn, Level, Pfn, Pfn),
}

impl HookCall {
    /// Index of the call's kind in [`HookCounts`] order.
    fn kind(&self) -> usize {
        match self {
            HookCall::Link(..) => 0,
            HookCall::Set(..) => 1,
            HookCall::Block(..) => 2,
            HookCall::Flush => 3,
            HookCall::Remove(..) => 4,
            HookCall::Free(..) => 5,
            HookCall::Split(..) => 6,
        }
    }
}

/// Successful calls per hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounts {
    /// `link_spt`.
    pub link: u64,
    /// `set_spte`.
    pub set: u64,
    /// `block_spte`.
    pub block: u64,
    /// `flush`.
    pub flush: u64,
    /// `remove_spte`.
    pub remove: u64,
    /// `free_spt`.
    pub free: u64,
    /// `split_spte`.
    pub split: u64,
}

impl HookCounts {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.link + self.set + self.block + self.flush + self.remove + self.free + self.split
    }
}

/// An injected failure plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// Never fail.
    None,
    /// Fail the call with this index (counting every hook call from 0) once.
    At(u64, ExternalError),
    /// Return `Busy` with probability `per_million / 10^6` on every call (seeded xorshift).
    RandomBusy {
        /// Probability in parts per million.
        per_million: u32,
        /// PRNG state.
        seed: u64,
    },
}

/// An external entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtEntry {
    /// Leaf: the data page; table: the external SPT page.
    pub pfn: Pfn,
    /// Whether the entry is a leaf.
    pub leaf: bool,
    /// The flush epoch in which it was blocked, if blocked.
    pub blocked: Option<u64>,
}

#[derive(Default)]
struct State {
    /// Entries keyed by (level, base gfn).
    entries: BTreeMap<(u8, u64), ExtEntry>,
    epoch: u64,
    calls: u64,
    counts: [u64; 7],
    log: Vec<HookCall>,
    logging: bool,
    violations: Vec<String>,
    inject: Option<Inject>,
    teardown: bool,
    leak_spts: bool,
}

/// The recording external table.
pub struct RecordingExternal {
    root_level: Level,
    state: Mutex<State>,
}

impl RecordingExternal {
    /// An empty external table under a root at `root_level`.
    pub fn new(root_level: Level) -> Self {
        RecordingExternal {
            root_level,
            state: Mutex::new(State::default()),
        }
    }

    /// Turns the call log on or off (off by default: long runs would grow it without bound).
    pub fn set_logging(&self, on: bool) {
        self.state.lock().logging = on;
    }

    /// The calls logged so far.
    pub fn log(&self) -> Vec<HookCall> {
        self.state.lock().log.clone()
    }

    /// Clears the log.
    pub fn clear_log(&self) {
        self.state.lock().log.clear();
    }

    /// Rules broken so far.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().violations.clone()
    }

    /// Successful calls per hook.
    pub fn counts(&self) -> HookCounts {
        let c = self.state.lock().counts;
        HookCounts {
            link: c[0],
            set: c[1],
            block: c[2],
            flush: c[3],
            remove: c[4],
            free: c[5],
            split: c[6],
        }
    }

    /// Hook calls so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.state.lock().calls
    }

    /// Sets the failure plan.
    pub fn inject(&self, plan: Inject) {
        self.state.lock().inject = Some(plan);
    }

    /// Teardown mode: removals need no block/flush (the TD's keys are gone; pages are reclaimed).
    pub fn set_teardown(&self, on: bool) {
        self.state.lock().teardown = on;
    }

    /// Makes `free_spt` answer `Leaked` (the module kept the page).
    pub fn set_leak_spts(&self, on: bool) {
        self.state.lock().leak_spts = on;
    }

    /// Every entry of the external table: (level, base gfn) → entry.
    pub fn entries(&self) -> BTreeMap<(u8, u64), ExtEntry> {
        self.state.lock().entries.clone()
    }

    fn call<T>(
        &self,
        call: HookCall,
        f: impl FnOnce(&mut State, Level) -> Result<T, String>,
    ) -> Result<T, ExternalError> {
        let mut st = self.state.lock();
        let idx = st.calls;
        st.calls += 1;
        if let Some(err) = Self::injected(&mut st, idx) {
            return Err(err);
        }
        match f(&mut st, self.root_level) {
            Ok(v) => {
                st.counts[call.kind()] += 1;
                if st.logging {
                    st.log.push(call);
                }
                Ok(v)
            }
            Err(msg) => {
                st.violations.push(format!("{call:?}: {msg}"));
                Err(ExternalError::Fatal)
            }
        }
    }

    fn injected(st: &mut State, idx: u64) -> Option<ExternalError> {
        match st.inject? {
            Inject::None => None,
            Inject::At(at, err) if at == idx => {
                st.inject = None;
                Some(err)
            }
            Inject::At(..) => None,
            Inject::RandomBusy { per_million, seed } => {
                let mut x = seed;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                st.inject = Some(Inject::RandomBusy {
                    per_million,
                    seed: x,
                });
                ((x % 1_000_000) < per_million as u64).then_some(ExternalError::Busy)
            }
        }
    }
}

fn key(gfn: Gfn, level: Level) -> (u8, u64) {
    (level.get(), gfn.raw())
}

impl State {
    fn check_parent(&self, gfn: Gfn, level: Level, root_level: Level) -> Result<(), String> {
        if gfn.offset_in(level.pages()) != 0 {
            return Err("unaligned gfn".into());
        }
        // Entries of the root table have no parent entry.
        if level == root_level {
            return Ok(());
        }
        let Some(up) = level.up() else {
            return Err("no parent level".into());
        };
        match self.entries.get(&key(gfn.align_down(up.pages()), up)) {
            Some(ExtEntry {
                leaf: false,
                blocked: None,
                ..
            }) => Ok(()),
            Some(ExtEntry { leaf: false, .. }) => Err("parent table blocked".into()),
            Some(_) => Err("parent is a leaf".into()),
            None => Err("parent table not linked".into()),
        }
    }

    /// The S-EPT walk to (`gfn`, `level`) stops at a blocked or missing table entry above it.
    fn check_path(&self, gfn: Gfn, level: Level, root_level: Level) -> Result<(), String> {
        let mut l = level;
        while let Some(up) = l.up() {
            if l == root_level {
                break;
            }
            match self.entries.get(&key(gfn.align_down(up.pages()), up)) {
                Some(ExtEntry {
                    leaf: false,
                    blocked: None,
                    ..
                }) => {}
                Some(ExtEntry { leaf: false, .. }) => {
                    return Err(format!("walk stops at blocked table at level {}", up.get()))
                }
                _ => return Err(format!("walk stops at level {}", up.get())),
            }
            l = up;
        }
        Ok(())
    }

    fn add(
        &mut self,
        gfn: Gfn,
        level: Level,
        root: Level,
        pfn: Pfn,
        leaf: bool,
    ) -> Result<(), String> {
        self.check_parent(gfn, level, root)?;
        if self.entries.contains_key(&key(gfn, level)) {
            return Err("entry not free".into());
        }
        self.entries.insert(
            key(gfn, level),
            ExtEntry {
                pfn,
                leaf,
                blocked: None,
            },
        );
        Ok(())
    }

    fn take_blocked(
        &mut self,
        gfn: Gfn,
        level: Level,
        root: Level,
        pfn: Pfn,
        leaf: bool,
    ) -> Result<(), String> {
        if !self.teardown {
            self.check_path(gfn, level, root)?;
        }
        let Some(e) = self.entries.get(&key(gfn, level)).copied() else {
            return Err("entry not present".into());
        };
        if e.leaf != leaf || e.pfn != pfn {
            return Err(format!("entry mismatch: {e:?}"));
        }
        if !self.teardown {
            match e.blocked {
                None => return Err("not blocked".into()),
                Some(b) if b >= self.epoch => return Err("block not flushed".into()),
                Some(_) => {}
            }
        }
        if !leaf {
            let (lo, hi) = (gfn.raw(), gfn.raw() + level.pages());
            let below = self
                .entries
                .range((0, 0)..(level.get(), 0))
                .any(|(&(_, g), _)| g >= lo && g < hi);
            if below {
                return Err("table not empty".into());
            }
        }
        self.entries.remove(&key(gfn, level));
        Ok(())
    }
}

impl ExternalPageTable for RecordingExternal {
    fn link_spt(&self, gfn: Gfn, level: Level, spt: &ExternalSpt) -> Result<(), ExternalError> {
        let pfn = spt.pfn();
        self.call(HookCall::Link(gfn, level, pfn), |st, root| {
            st.add(gfn, level, root, pfn, false)
        })
    }

    fn set_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<(), ExternalError> {
        self.call(HookCall::Set(gfn, level, pfn), |st, root| {
            st.add(gfn, level, root, pfn, true)
        })
    }

    fn block_spte(&self, gfn: Gfn, level: Level, is_leaf: bool) -> Result<(), ExternalError> {
        self.call(HookCall::Block(gfn, level, is_leaf), |st, root| {
            st.check_path(gfn, level, root)?;
            let epoch = st.epoch;
            match st.entries.get_mut(&key(gfn, level)) {
                Some(e) if e.leaf == is_leaf => {
                    // Re-blocking after a failed zap is allowed, as TDX answers ALREADY_BLOCKED.
                    e.blocked.get_or_insert(epoch);
                    Ok(())
                }
                Some(e) => Err(format!("kind mismatch: {e:?}")),
                None => Err("entry not present".into()),
            }
        })
    }

    fn flush(&self) -> Result<(), ExternalError> {
        self.call(HookCall::Flush, |st, _| {
            st.epoch += 1;
            Ok(())
        })
    }

    fn split_spte(
        &self,
        gfn: Gfn,
        level: Level,
        pfn: Pfn,
        spt: &ExternalSpt,
    ) -> Result<(), ExternalError> {
        let table = spt.pfn();
        self.call(HookCall::Split(gfn, level, pfn, table), |st, root| {
            st.check_path(gfn, level, root)?;
            let Some(down) = level.down() else {
                return Err("no level below".into());
            };
            match st.entries.get(&key(gfn, level)).copied() {
                Some(ExtEntry {
                    leaf: true,
                    pfn: p,
                    blocked: Some(b),
                }) if p == pfn && b < st.epoch => {}
                Some(ExtEntry {
                    leaf: true,
                    blocked: Some(_),
                    ..
                }) => return Err("block not flushed, or another pfn".into()),
                Some(e) => return Err(format!("not a blocked leaf: {e:?}")),
                None => return Err("entry not present".into()),
            }
            st.entries.insert(
                key(gfn, level),
                ExtEntry {
                    pfn: table,
                    leaf: false,
                    blocked: None,
                },
            );
            for i in 0..512u64 {
                st.entries.insert(
                    key(gfn.add(i * down.pages()), down),
                    ExtEntry {
                        pfn: pfn.add(i * down.pages()),
                        leaf: true,
                        blocked: None,
                    },
                );
            }
            Ok(())
        })
    }

    fn remove_spte(&self, gfn: Gfn, level: Level, pfn: Pfn) -> Result<PageRelease, ExternalError> {
        self.call(HookCall::Remove(gfn, level, pfn), |st, root| {
            st.take_blocked(gfn, level, root, pfn, true)
                .map(|()| PageRelease::Returned)
        })
    }

    fn free_spt(
        &self,
        gfn: Gfn,
        level: Level,
        spt: &ExternalSpt,
    ) -> Result<SptRelease, ExternalError> {
        let pfn = spt.pfn();
        self.call(HookCall::Free(gfn, level, pfn), |st, root| {
            st.take_blocked(gfn, level, root, pfn, false)?;
            Ok(if st.leak_spts {
                SptRelease::Leaked
            } else {
                SptRelease::Returned
            })
        })
    }
}
