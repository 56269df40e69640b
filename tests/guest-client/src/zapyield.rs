// SPDX-License-Identifier: GPL-2.0-only
//! MMU-notifier zaps that yield (issue 11, `zapyield`): a guest with 1 GiB of RAM touches one
//! 4 KiB page every 512 KiB of it, pass after pass, while another thread of the VMM throws
//! ranges of that RAM away (`madvise(MADV_DONTNEED)`, or a new mapping over them with
//! `mmap(MAP_FIXED)`, i.e. an munmap), from one page up to the whole GiB. Each invalidation
//! zaps the shared root over the range — the big ones walk 262144 entries and drop the MMU
//! lock when asked — while the vCPU's faults race with it.
//!
//! What must hold: the guest reads in each page either 0 (the host dropped it) or what it wrote
//! there the pass before, never anything else; and after the zapper stopped, one more pass
//! writes a new tag to every page, which the host then reads through its own mapping — a
//! fault that mapped a PFN it looked up before an invalidation (a stale entry the zap missed)
//! would have written into a page the host no longer has there. The guest kernel runs with
//! KASAN and lockdep, so a stale page written after it was freed, or sleeping under a spinlock
//! in the notifier, shows up in its log too.

use crate::run::{with_svm, Guest};
use crate::*;
use kvm_ioctls::VcpuExit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const GIB: usize = 1 << 30;
const PAGE: usize = 4096;
/// Bytes between the pages the guest touches.
const STRIDE: usize = 512 << 10;
/// Passes the guest makes while the zapper runs.
const PASSES_UNDER_ZAPS: u32 = 2;

/// [`crate::run::flat32_rom`] with, forever: for each of
/// `pages` pages `STRIDE` apart from GPA 0, check its first dword is 0 or the previous pass'
/// tag (else `out 0x81` with EAX = the value, EBX = the address, and HLT), then write this
/// pass' tag (ESI, from 1); `out 0x80` after every pass.
fn guest_code(pages: u32) -> Vec<u8> {
    let mut flat = vec![
        0xb8, 0x10, 0x00, 0x00, 0x00, // 0: mov eax, 0x10
        0x8e, 0xd8, // 5: mov ds, ax
        0xbe, 0x01, 0x00, 0x00, 0x00, // 7: mov esi, 1
        0x31, 0xdb, // 12 outer: xor ebx, ebx
        0xb9, // 14: mov ecx, pages
    ];
    flat.extend_from_slice(&pages.to_le_bytes());
    flat.extend_from_slice(&[
        0x8b, 0x03, // 19 inner: mov eax, [ebx]
        0x85, 0xc0, // 21: test eax, eax
        0x74, 0x07, // 23: jz ok
        0x8d, 0x56, 0xff, // 25: lea edx, [esi - 1]
        0x39, 0xd0, // 28: cmp eax, edx
        0x75, 0x13, // 30: jne bad (51)
        0x89, 0x33, // 32 ok: mov [ebx], esi
        0x81, 0xc3, // 34: add ebx, STRIDE
    ]);
    flat.extend_from_slice(&(STRIDE as u32).to_le_bytes());
    flat.extend_from_slice(&[
        0x49, // 40: dec ecx
        0x75, 0xe8, // 41: jnz inner (19)
        0x66, 0xba, 0x80, 0x00, // 43: mov dx, 0x80
        0xee, // 47: out dx, al
        0x46, // 48: inc esi
        0xeb, 0xd9, // 49: jmp outer (12)
        0x66, 0xba, 0x81, 0x00, // 51 bad: mov dx, 0x81
        0xee, // 55: out dx, al
        0xf4, // 56: hlt
    ]);
    crate::run::flat32_rom(&flat)
}

/// `prctl(PR_SET_THP_DISABLE)` for the test's duration: 4 KiB host pages (so the shared root
/// holds 4 KiB leaves and the zaps have entries to walk), also in mappings made by the zapper.
struct NoThp;

impl NoThp {
    fn new() -> Result<NoThp, String> {
        // SAFETY: a process flag; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            return Err("prctl(PR_SET_THP_DISABLE)".into());
        }
        Ok(NoThp)
    }
}

impl Drop for NoThp {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
    }
}

/// What the zapper did.
#[derive(Default)]
struct ZapCounts {
    dontneed: AtomicU64,
    remap: AtomicU64,
    whole: AtomicU64,
}

/// Throws ranges of `[base, base + len)` away until `stop`: sizes from one page to all of it,
/// three in four by `MADV_DONTNEED`, the rest by a new anonymous mapping over them.
fn zapper(base: usize, len: usize, stop: &AtomicBool, n: &ZapCounts) -> Result<(), String> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let pages = (len / PAGE) as u64;
    while !stop.load(Ordering::Relaxed) {
        // The whole GiB one time in 16: it throws away all the guest did so far.
        let size = [
            1u64, 3, 128, 512, 4096, 65536, 1, 3, 128, 512, 4096, 65536, 1, 128, 512, pages,
        ][rand(16) as usize];
        let first = rand(pages - size + 1);
        let addr = base + first as usize * PAGE;
        let bytes = size as usize * PAGE;
        if rand(4) == 0 {
            // SAFETY: replaces part of the guest RAM's own mapping with fresh anonymous
            // memory at the same address; nothing of Rust's refers into it.
            let p = unsafe {
                libc::mmap(
                    addr as *mut libc::c_void,
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p as usize != addr {
                return Err(format!("mmap(MAP_FIXED) at {addr:#x}: {p:?}"));
            }
            n.remap.fetch_add(1, Ordering::Relaxed);
        } else {
            // SAFETY: advice on the guest RAM's own mapping.
            if unsafe { libc::madvise(addr as *mut libc::c_void, bytes, libc::MADV_DONTNEED) } != 0
            {
                return Err(format!("madvise(MADV_DONTNEED) at {addr:#x}"));
            }
            n.dontneed.fetch_add(1, Ordering::Relaxed);
        }
        if size == pages {
            n.whole.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5 + rand(20)));
    }
    Ok(())
}

/// Runs the vCPU to the next `out 0x80` (end of a pass); returns the pass' tag (ESI).
fn next_pass(v: &mut kvm_ioctls::VcpuFd, deadline: Instant) -> Result<u32, String> {
    loop {
        if Instant::now() > deadline {
            return Err("the guest made no progress in time".into());
        }
        match v.run() {
            Ok(VcpuExit::IoOut(0x80, _)) => {
                let r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                return Ok(r.rsi as u32);
            }
            Ok(VcpuExit::IoOut(0x81, _)) => {
                let r = v.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                return Err(format!(
                    "pass {}: the guest read {:#x} at GPA {:#x} (want 0 or {:#x})",
                    r.rsi,
                    r.rax as u32,
                    r.rbx as u32,
                    (r.rsi as u32).wrapping_sub(1)
                ));
            }
            Ok(e) => return Err(format!("unexpected exit {e:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    }
}

fn dontneed_and_remap_race_guest_touches() -> Result<(), String> {
    let _thp = NoThp::new()?;
    let pages = (GIB / STRIDE) as u32;
    let g = Guest::new(&guest_code(pages), GIB)?;
    let mut v = g.vcpu(0)?;
    let stop = AtomicBool::new(false);
    let counts = ZapCounts::default();
    let (base, len) = (g.ram.ptr as usize, g.ram.len);
    let deadline = Instant::now() + Duration::from_secs(240);
    let t0 = Instant::now();
    let (under, zapped) = std::thread::scope(|s| {
        let z = s.spawn(|| zapper(base, len, &stop, &counts));
        let mut under = Ok(0);
        for _ in 0..PASSES_UNDER_ZAPS {
            under = next_pass(&mut v, deadline);
            if under.is_err() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        (under, z.join().unwrap_or(Err("the zapper panicked".into())))
    });
    let under_zaps = t0.elapsed();
    zapped?;
    let passes = under?;
    // One clean pass: every page must now hold its tag, seen through the host's mapping.
    let tag = next_pass(&mut v, deadline)?;
    eq(tag, passes + 1, "the clean pass' tag")?;
    for p in 0..pages as usize {
        let off = p * STRIDE;
        let got = u32::from_le_bytes([
            g.ram.read(off),
            g.ram.read(off + 1),
            g.ram.read(off + 2),
            g.ram.read(off + 3),
        ]);
        if got != tag {
            return Err(format!(
                "GPA {off:#x}: the host reads {got:#x}, the guest wrote {tag:#x} (stale mapping)"
            ));
        }
    }
    let (d, r, w) = (
        counts.dontneed.load(Ordering::Relaxed),
        counts.remap.load(Ordering::Relaxed),
        counts.whole.load(Ordering::Relaxed),
    );
    eprintln!(
        "zapyield: {passes} passes of {pages} pages in {under_zaps:?} under {d} MADV_DONTNEED + \
         {r} MAP_FIXED ({w} of the whole GiB)"
    );
    check(d + r > 0, "the zapper ran")
}

pub(crate) fn tests() -> Vec<Test> {
    vec![(
        "zapyield_dontneed_and_remap_of_1g_race_a_touching_guest",
        Any,
        |_| with_svm(dontneed_and_remap_race_guest_touches),
    )]
}
