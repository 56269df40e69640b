// SPDX-License-Identifier: GPL-2.0-only
//! `cache_wb`: TDH.PHYMEM.CACHE.WB driven to completion against scripted answers.

use std::collections::VecDeque;
use std::sync::Mutex;
use tdx::abi::{leaf, rax, status};
use tdx::sept_backend::cache_wb;
use tdx::{SeamArgs, Seamcall, Tdx};

/// Answers CACHE.WB calls from a script (SUCCESS once it runs out) and records RCX of each.
struct Script {
    answers: Mutex<VecDeque<u64>>,
    rcx: Mutex<Vec<u64>>,
}

impl Script {
    fn new(answers: &[u64]) -> Self {
        Script {
            answers: Mutex::new(answers.iter().copied().collect()),
            rcx: Mutex::new(Vec::new()),
        }
    }
}

impl Seamcall for Script {
    fn seamcall(&self, r: u64, args: &mut SeamArgs) -> u64 {
        assert_eq!(r, rax(leaf::PHYMEM_CACHE_WB, 0));
        self.rcx.lock().unwrap().push(args.rcx);
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(status::SUCCESS)
    }
}

#[test]
fn interrupted_pass_is_resumed() {
    let tdx = Tdx::new(Script::new(&[
        status::INTERRUPTED_RESUMABLE,
        status::INTERRUPTED_RESUMABLE,
    ]));
    assert_eq!(cache_wb(&tdx), Ok(()));
    assert_eq!(*tdx.backend().rcx.lock().unwrap(), [0, 1, 1]);
}

#[test]
fn resume_of_a_pass_someone_restarted_starts_over() {
    let tdx = Tdx::new(Script::new(&[
        status::INTERRUPTED_RESUMABLE,
        status::WBCACHE_RESUME_ERROR,
        status::INTERRUPTED_RESUMABLE,
    ]));
    assert_eq!(cache_wb(&tdx), Ok(()));
    assert_eq!(*tdx.backend().rcx.lock().unwrap(), [0, 1, 0, 1]);
}

#[test]
fn endless_resume_errors_give_up_with_the_error() {
    let mut script = vec![status::INTERRUPTED_RESUMABLE];
    for _ in 0..50 {
        script.extend([status::WBCACHE_RESUME_ERROR, status::INTERRUPTED_RESUMABLE]);
    }
    let tdx = Tdx::new(Script::new(&script));
    let e = cache_wb(&tdx).unwrap_err();
    assert_eq!(e.class(), status::WBCACHE_RESUME_ERROR);
    // Bounded: a handful of fresh starts, not 50.
    let calls = tdx.backend().rcx.lock().unwrap().len();
    assert!(calls < 30, "{calls} calls");
}

#[test]
fn nothing_to_write_back_is_success() {
    let tdx = Tdx::new(Script::new(&[status::NO_HKID_READY_TO_WBCACHE]));
    assert_eq!(cache_wb(&tdx), Ok(()));
}
