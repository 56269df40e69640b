// SPDX-License-Identifier: GPL-2.0-only
//! What the wrappers' unit tests share: a backend that records every call and answers with
//! scripted replies, and the page and GPA operands the tests pass.

extern crate std;

pub(super) use super::{Tdcx, Tdr, Tdvpr, Tdx, ZERO};
pub(super) use crate::abi::SeptLevel;
pub(super) use crate::abi::{self, operand, page_size, page_type, sept_state, status};
pub(super) use crate::error::{Operand, SeptDetails};
pub(super) use crate::seamcall::{SeamArgs, Seamcall};
pub(super) use mmu::{Gpa, Hpa};
use std::collections::VecDeque;
use std::sync::Mutex;
pub(super) use std::vec::Vec;

pub(super) const TDR: Tdr = Tdr::new(Hpa::new(0x10_0000));
pub(super) const TDCX: Tdcx = Tdcx::new(Hpa::new(0x11_0000));
pub(super) const TDVPR: Tdvpr = Tdvpr::new(Hpa::new(0x12_0000));
pub(super) const PAGE: Hpa = Hpa::new(0x20_0000);
pub(super) const SOURCE: Hpa = Hpa::new(0x30_0000);
pub(super) const GPA: Gpa = Gpa::new(0x4020_0000);

/// A scripted completion: the status and the output registers.
#[derive(Clone, Copy)]
pub(super) struct Reply {
    pub(super) status: u64,
    pub(super) out: SeamArgs,
}

/// Records every (RAX, input registers) and answers with scripted replies, then with
/// `TDX_SUCCESS` and all-zero outputs.
#[derive(Default)]
pub(super) struct RecordingBackend {
    calls: Mutex<Vec<(u64, SeamArgs)>>,
    pub(super) replies: Mutex<VecDeque<Reply>>,
}

impl RecordingBackend {
    pub(super) fn replying(status: u64, out: SeamArgs) -> Self {
        let b = RecordingBackend::default();
        b.replies.lock().unwrap().push_back(Reply { status, out });
        b
    }

    pub(super) fn calls(&self) -> Vec<(u64, SeamArgs)> {
        self.calls.lock().unwrap().clone()
    }

    /// Asserts exactly one call, of `leaf` version 0 with exactly `args`.
    pub(super) fn assert_one(&self, leaf: u16, args: SeamArgs) {
        assert_eq!(self.calls(), [(abi::rax(leaf, 0), args)]);
    }
}

impl Seamcall for RecordingBackend {
    fn seamcall(&self, rax: u64, args: &mut SeamArgs) -> u64 {
        self.calls.lock().unwrap().push((rax, *args));
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply {
            status: status::SUCCESS,
            out: ZERO,
        });
        *args = reply.out;
        reply.status
    }
}

/// A wrapper over a backend that answers `TDX_SUCCESS` to everything.
pub(super) fn ok() -> Tdx<RecordingBackend> {
    Tdx::new(RecordingBackend::default())
}

/// A wrapper whose first call answers `status` with `out`.
pub(super) fn replying(status: u64, out: SeamArgs) -> Tdx<RecordingBackend> {
    Tdx::new(RecordingBackend::replying(status, out))
}

/// RCX of a GPA+level operand for [`GPA`].
pub(super) fn gl(level: SeptLevel) -> u64 {
    GPA.raw() | u64::from(level.0)
}
