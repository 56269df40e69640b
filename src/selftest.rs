// SPDX-License-Identifier: GPL-2.0-only
//! In-kernel self tests, triggered through debugfs.
//!
//! `echo N > /sys/kernel/debug/tdx_kvm/selftest` runs `tdx::selftest::run_random` — the same
//! code the host tests run — for N operations on a fresh TD of the software TDX module, against
//! real kernel pages (a 4 MiB block of guest memory, 2M-aligned so huge leaves happen), the real
//! MMU rwlock and the crypto API, checking after every operation that the mirror and the S-EPT
//! agree. Several writers at once run several TDs concurrently on the one software module.
//! Afterwards every guest page must be back with the host (PAMT type NDA) before it is freed.

use crate::backend::{SwRef, TdxRef};
use crate::env::KernelSha;
use crate::glue;
use crate::td::TdVm;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;
use mmu::cache::VcpuMmuCaches;
use mmu::Pfn;
use tdx::selftest::{run_random, GuestMemory, Rng};
use tdx::swmod::measure::sha384;

/// SHA-384("abc") through the kernel's compression function (FIPS 180-4 example).
pub(crate) fn sha384_known_answer() -> bool {
    const ABC: [u8; 48] = [
        0xcb, 0x00, 0x75, 0x3f, 0x45, 0xa3, 0x5e, 0x8b, 0xb5, 0xa0, 0x3d, 0x69, 0x9a, 0xc6, 0x50,
        0x07, 0x27, 0x2c, 0x32, 0xab, 0x0e, 0xde, 0xd1, 0x63, 0x1a, 0x8b, 0x60, 0x5a, 0x43, 0xff,
        0x5b, 0xed, 0x80, 0x86, 0x07, 0x2b, 0xa1, 0xe7, 0xcc, 0x23, 0x58, 0xba, 0xec, 0xa1, 0x34,
        0xc8, 0x25, 0xa7,
    ];
    sha384(&KernelSha, b"abc") == ABC
}

const GUEST_ORDER: u32 = 10;
const GUEST_PAGES: u64 = 1 << GUEST_ORDER;
static RUNS: AtomicU64 = AtomicU64::new(0);

fn run(ops: u64) -> Result {
    let sw = SwRef::get().ok_or(ENODEV)?;
    // SAFETY: a fresh, naturally aligned 4 MiB block, ours until freed below.
    let block = unsafe { glue::tdxkvm_alloc_pages(GUEST_ORDER) };
    if block.is_null() {
        return Err(ENOMEM);
    }
    // SAFETY: `block` is a direct-map address.
    let base = Pfn::new(unsafe { glue::tdxkvm_virt_to_pfn(block) });
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let result =
        (|| -> Result {
            // A TD of its own, not reachable from userspace: no VM object around it.
            let mut td = TdVm::new(TdxRef::Sw(sw))?;
            let vcpu = td.make_runnable()?;
            let (Some(mmu), Some(tdr)) = (td.mmu(), td.tdr_pfn()) else {
                return Err(EINVAL);
            };
            let mut caches = VcpuMmuCaches::new();
            let mem = GuestMemory {
                base,
                pages: GUEST_PAGES,
                huge: true,
            };
            let mut rng = Rng::new(0x5eed ^ run);
            let r = run_random(
                mmu,
                sw.module(),
                tdr,
                &mut caches,
                mem,
                &mut rng,
                ops,
                &[vcpu],
            );
            mmu.free_vcpu_caches(&mut caches);
            drop(td);
            match r {
                Ok(rep) => {
                    pr_info!(
                    "selftest run {}: {} ops ok ({} faults, {} zaps, {} conversions, {} checks)\n",
                    run, ops, rep.faults, rep.zaps, rep.conversions, rep.checks
                );
                    Ok(())
                }
                Err(e) => {
                    pr_err!("selftest run {}: {:?}\n", run, e);
                    Err(EIO)
                }
            }
        })();
    // Every guest page must be host memory again before the block goes back.
    let all_back = (0..GUEST_PAGES).all(|i| {
        sw.module()
            .pamt_info(base.add(i))
            .map_or(true, |p| p.page_type == 0)
    });
    if all_back {
        // SAFETY: allocated above with the same order; no TD owns any of its pages.
        unsafe { glue::tdxkvm_free_pages(block, GUEST_ORDER) };
    } else {
        pr_err!(
            "selftest run {}: guest pages still owned by the TDX module: leaking the block\n",
            run
        );
        return Err(EIO);
    }
    result
}

/// debugfs `selftest` write handler: runs `ops` operations (1..=1_000_000).
#[no_mangle]
pub(crate) extern "C" fn tdxkvm_rust_selftest(ops: u64) -> i64 {
    if ops == 0 || ops > 1_000_000 {
        return EINVAL.to_errno() as i64;
    }
    match run(ops) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as i64,
    }
}
