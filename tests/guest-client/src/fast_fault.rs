// SPDX-License-Identifier: GPL-2.0-only
//! The fast page fault (issue 11; upstream `fast_page_fault`): a guest write to a page that
//! `KVM_GET_DIRTY_LOG` write-protected is fixed by setting the leaf's writable bit again
//! without the full fault path, counted in the vCPU's `pf_fast` statistic, and the page is
//! still reported dirty.

use super::run::Guest;
use crate::*;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

const LOG_DIRTY: u32 = 1;
const MB: u64 = 1 << 20;

/// Writes byte `v` at offset `off` of each of the 256 pages of the first MiB (real mode,
/// segment by segment from DS = 0).
#[rustfmt::skip]
fn every_page(out: &mut Vec<u8>, off: u16, v: u8) {
    let o = off.to_le_bytes();
    out.extend_from_slice(&[
        0x31, 0xc0,                         // xor ax, ax
        0x8e, 0xd8,                         // mov ds, ax
        0xc6, 0x06, o[0], o[1], v,          // mov byte [off], v
        0x05, 0x00, 0x01,                   // add ax, 0x100
        0x75, 0xf4,                         // jnz back to mov ds, ax
    ]);
}

fn out_exit(vcpu: &mut VcpuFd, what: &str) -> Result<(), String> {
    match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
        VcpuExit::IoOut(0x10, _) => Ok(()),
        VcpuExit::Hlt if what == "hlt" => Ok(()),
        e => Err(format!("{what}: unexpected exit {e:?}")),
    }
}

/// A vCPU statistic by name (the stats fd of a dup of the vCPU fd).
fn vcpu_stat(vcpu: &VcpuFd, name: &str) -> Result<u64, String> {
    // SAFETY: dup of the vCPU fd, owned by the OwnedFd from now on.
    let raw = unsafe { libc::dup(vcpu.as_raw_fd()) };
    check(raw >= 0, "dup")?;
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    super::prefault::vm_stat(&fd, name)
}

fn dirty(vm: &VmFd) -> Result<Vec<u64>, String> {
    let words = vm
        .get_dirty_log(1, MB as usize)
        .map_err(|e| format!("KVM_GET_DIRTY_LOG: {e}"))?;
    Ok((0..MB / 4096)
        .filter(|&p| words[(p / 64) as usize] & (1 << (p % 64)) != 0)
        .collect())
}

/// Three passes over 256 logged pages: the first maps them (full path), each
/// `KVM_GET_DIRTY_LOG` write-protects them again, so every later pass takes one fast fault per
/// page and nothing but fast faults; every pass shows all 256 pages dirty and the writes land.
fn writes_after_get_dirty_log_take_the_fast_path() -> Result<(), String> {
    let mut code = Vec::new();
    every_page(&mut code, 0, 1);
    code.extend_from_slice(&[0xe6, 0x10]); // out 0x10
    every_page(&mut code, 0, 2);
    code.extend_from_slice(&[0xe6, 0x10]);
    every_page(&mut code, 8, 3);
    code.push(0xf4); // hlt
    let g = Guest::new(&code, MB as usize)?;
    g.slot(1, 0, &g.ram, LOG_DIRTY)?;
    let mut vcpu = g.vcpu(0)?;
    let all: Vec<u64> = (0..256).collect();
    out_exit(&mut vcpu, "first pass")?;
    eq(dirty(&g.vm)?, all.clone(), "first pass: every page dirty")?;
    for (pass, end) in [("second pass", "out"), ("third pass", "hlt")] {
        let (pf, fast) = (
            vcpu_stat(&vcpu, "page_faults")?,
            vcpu_stat(&vcpu, "pf_fast")?,
        );
        out_exit(&mut vcpu, end)?;
        let (pf2, fast2) = (
            vcpu_stat(&vcpu, "page_faults")?,
            vcpu_stat(&vcpu, "pf_fast")?,
        );
        check(
            fast2 - fast >= 256,
            &format!(
                "{pass}: {} fast faults for 256 protected pages",
                fast2 - fast
            ),
        )?;
        eq(pf2 - pf, fast2 - fast, &format!("{pass}: only fast faults"))?;
        eq(
            dirty(&g.vm)?,
            all.clone(),
            &format!("{pass}: every page dirty"),
        )?;
    }
    for p in 0..256usize {
        eq(
            (g.ram.read(p * 4096), g.ram.read(p * 4096 + 8)),
            (2, 3),
            &format!("page {p}: the guest's writes"),
        )?;
    }
    Ok(())
}

/// The tests that run guests.
pub(crate) fn run_tests() -> Vec<Test> {
    vec![("fast_fault_after_get_dirty_log", Any, |_| {
        writes_after_get_dirty_log_take_the_fast_path()
    })]
}
