// SPDX-License-Identifier: GPL-2.0-only
//! In-guest test suite for `/dev/kvm` as `kvm.ko` provides it, written against the real
//! userspace crates (`kvm-ioctls`, `kvm-bindings`) so it sees what VMMs see.
//!
//! Usage: `guest-client <tdx-mode>` where the mode is what the module was loaded with
//! (`off`, `emulated`, `auto`). Prints `plan: N` first, then one
//! `test NAME [tdx=MODE] ... ok|FAILED: why|skipped: why` line per test and
//! `N passed, M failed, K skipped` last; exits non-zero on failure. A test whose needs the mode
//! does not meet is skipped, and says so: it is never reported as passed.
//!
//! `guest-client --list` prints the test names, one a line, and touches nothing: the guest
//! suite runs it on the build host to know which results each mode must deliver, so a client
//! that dies half-way (or is not there at all) leaves named "missing" failures, not a shorter
//! but green report.
//!
//! Fault injection for the harness' own self test (`scripts/harness-selftest.sh`):
//! `TDXKVM_HARNESS_FAULT=guest-panic` makes the client panic after half of its tests have
//! reported, `guest-hang` makes it sleep there for ever (the guest suite's watchdog must kill
//! it and go on); `host-fail` / `host-abort` make the host unit test `harness_fault_probe` fail or
//! abort its test binary.

use kvm_bindings::{kvm_cpuid2, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const KVMIO: u64 = 0xAE;
const KVM_CAP_VM_TYPES: u64 = 235;
const KVM_X86_TDX_VM: u64 = 5;

fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}

fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (KVMIO << 8) | nr
}

/// A raw ioctl: Ok(return value) or Err(errno).
fn ioctl(fd: i32, cmd: u64, arg: u64) -> Result<i64, i32> {
    // SAFETY: the kernel validates every argument; pointers passed here are either valid buffers
    // of the test or deliberately bad addresses the kernel must refuse with EFAULT.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as i64)
    }
}

fn dev() -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .expect("open /dev/kvm")
}

fn create_vm(kvm: &File, vm_type: u64) -> Result<OwnedFd, i32> {
    let vm = ioctl(kvm.as_raw_fd(), io(0x01), vm_type).map(|fd| {
        // SAFETY: a fresh fd returned by KVM_CREATE_VM, owned from now on.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    })?;
    if vm_type == KVM_X86_TDX_VM {
        irqfix::enable_split_irqchip(&vm)?; // HOOK(irqfix): a TD's vCPUs need it (QEMU's order)
    }
    Ok(vm)
}

/// `/sys/kernel/debug/tdx_kvm/stats` as (name, value) pairs.
fn stats() -> Vec<(String, i64)> {
    std::fs::read_to_string("/sys/kernel/debug/tdx_kvm/stats")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Everything but the software module's PAMT (which lives as long as the module) is zero.
fn counts_are_zero() -> Result<(), String> {
    let s = stats();
    if s.is_empty() {
        return Err("no stats".into());
    }
    for (k, v) in &s {
        if k != "pamt_pages" && *v != 0 {
            return Err(format!("{k} = {v} after close"));
        }
    }
    Ok(())
}

fn check(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// What a test needs from the mode the module runs in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Needs {
    /// Runs in every mode.
    Any,
    /// Needs a TDX backend (`tdx=emulated`): TDs, HKIDs. Skipped in the other modes.
    Tdx,
}
use Needs::{Any, Tdx};

type Test = (&'static str, Needs, fn(&Ctx) -> Result<(), String>);

struct Ctx {
    tdx: bool,
}

mod abi; // HOOK(abi)
mod clock; // HOOK(clock)
mod cpu11; // HOOK(cpu11)
mod cr8; // HOOK(cr8)
mod dirty;
mod entry;
mod exits;
mod fast_fault; // HOOK(fault)
mod hostile; // HOOK(hostile)
mod huge;
mod irq;
mod irq12; // HOOK(irq12)
mod irq_bench; // HOOK(irqbench)
mod irqchip;
mod irqfix; // HOOK(irqfix)
mod memfault; // HOOK(gmemfault)
mod memory;
mod misc;
mod prefault;
mod review; // HOOK(review)
mod run;
mod run_bench;
mod signal;
mod state;
mod system;
mod td_bench;
mod tdx_vm;
mod ud; // HOOK(ud)
mod vcpu;
mod zapyield; // HOOK(zapyield)

/// Every test of the suite, area by area (one module per area).
fn tests() -> Vec<Test> {
    [
        system::tests(),
        vcpu::tests(),
        state::tests(),
        memory::tests(),
        prefault::tests(),
        dirty::tests(),
        huge::tests(),
        tdx_vm::tests(),
        tdx_vm::memory_tests(),
        exits::tests(),
        run::tests(),
        clock::tests(), // HOOK(clock)
        entry::tests(), // HOOK(entry)
        dirty::run_tests(),
        fast_fault::run_tests(), // HOOK(fault)
        irq::tests(),
        irqchip::tests(),
        irqfix::tests(), // HOOK(irqfix)
        irq12::tests(),  // HOOK(irq12)
        misc::tests(),
        review::tests(),   // HOOK(review)
        abi::tests(),      // HOOK(abi)
        memfault::tests(), // HOOK(gmemfault)
        ud::tests(),       // HOOK(ud)
        cpu11::tests(),    // HOOK(cpu11)
        cr8::tests(),      // HOOK(cr8)
        zapyield::tests(), // HOOK(zapyield)
        hostile::tests(),  // HOOK(hostile)
    ]
    .concat()
}

const EINVAL: i32 = libc::EINVAL;
const EFAULT: i32 = libc::EFAULT;
const ENOTTY: i32 = libc::ENOTTY;
const E2BIG: i32 = libc::E2BIG;

/// The environment switch of the harness' fault injection (see the crate docs).
const HARNESS_FAULT: &str = "TDXKVM_HARNESS_FAULT";
/// The values `HARNESS_FAULT` may take; each one is exercised by `scripts/harness-selftest.sh`.
const HARNESS_FAULTS: [&str; 5] = [
    "host-fail",
    "host-abort",
    "guest-panic",
    "guest-hang",
    "guest-missing",
];

fn harness_fault() -> Option<String> {
    std::env::var(HARNESS_FAULT).ok().filter(|v| !v.is_empty())
}

/// Why a test with these needs does not run in this mode (None: it runs).
fn skip_reason(needs: Needs, ctx: &Ctx) -> Option<&'static str> {
    match needs {
        Any => None,
        Tdx if ctx.tdx => None,
        Tdx => Some("needs a TDX backend (tdx=emulated)"),
    }
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "off".into());
    let tests = tests();
    if arg == "--list" {
        for (name, _, _) in &tests {
            println!("{name}");
        }
        return;
    }
    if arg == "--bench-prefault" {
        prefault::bench();
        td_bench::bench();
        return;
    }
    if arg == "--bench-run" {
        run::bench();
        return;
    }
    if arg == "--bench-cpuid" || arg == "--bench-npt" {
        let ok = if arg == "--bench-cpuid" {
            run_bench::cpuid()
        } else {
            // `--bench-npt [RUNS]`.
            let reps = std::env::args().nth(2).and_then(|r| r.parse().ok());
            run_bench::npt(reps.unwrap_or(1))
        };
        std::process::exit(if ok { 0 } else { 1 });
    }
    // HOOK(irqbench): `--bench-ipi [N] [RUNS]`, `--bench-timer [N] [DELAY_US] [tmict]`.
    if arg == "--bench-ipi" || arg == "--bench-timer" {
        let num = |i| std::env::args().nth(i).and_then(|a| a.parse().ok());
        let ok = if arg == "--bench-ipi" {
            irq_bench::ipi(num(2), num(3).map(|r: u64| r as usize))
        } else {
            let tmict = std::env::args().nth(4).as_deref() == Some("tmict");
            irq_bench::timer(num(2), num(3), tmict)
        };
        std::process::exit(if ok { 0 } else { 1 });
    }
    // HOOK(hostile): `--probe` prints the differential ABI probe's lines.
    if arg == "--probe" {
        hostile::probe();
        return;
    }
    if arg == "--bench-huge" {
        huge::bench();
        return;
    }
    if let Some(f) = harness_fault().filter(|f| !HARNESS_FAULTS.contains(&f.as_str())) {
        eprintln!("unknown {HARNESS_FAULT}={f} (known: {HARNESS_FAULTS:?})");
        std::process::exit(2);
    }
    let mode = arg;
    // TDXKVM_CLIENT_FILTER=substring runs only the matching tests (for iterating by hand; the
    // guest suite never sets it).
    let filter = std::env::var("TDXKVM_CLIENT_FILTER").unwrap_or_default();
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|t| t.0.contains(filter.as_str()))
        .collect();
    let ctx = Ctx {
        tdx: mode == "emulated",
    };
    let fault = harness_fault();
    let fault_at =
        matches!(fault.as_deref(), Some("guest-panic" | "guest-hang")).then_some(tests.len() / 2);
    println!("plan: {}", tests.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, (name, needs, f)) in tests.into_iter().enumerate() {
        if fault_at == Some(i) {
            if fault.as_deref() == Some("guest-hang") {
                eprintln!("{HARNESS_FAULT}=guest-hang: sleeping for ever after {i} tests");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            panic!("{HARNESS_FAULT}=guest-panic: panicking after {i} tests");
        }
        if let Some(why) = skip_reason(needs, &ctx) {
            skipped += 1;
            println!("test {name} [tdx={mode}] ... skipped: {why}");
            continue;
        }
        match f(&ctx) {
            Ok(()) => {
                passed += 1;
                println!("test {name} [tdx={mode}] ... ok");
            }
            Err(why) => {
                failed += 1;
                println!("test {name} [tdx={mode}] ... FAILED: {why}");
            }
        }
    }
    let _ = std::mem::size_of::<kvm_cpuid2>();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    /// The guest suite finds each result with a regular expression built from the name and
    /// appends `_tdx_MODE`: names must be unique and made of `[a-z0-9_]` only.
    #[test]
    fn test_names_are_unique_and_plain() {
        let names: Vec<_> = tests().iter().map(|t| t.0).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!n.is_empty(), "empty name at {i}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}: not [a-z0-9_]"
            );
            assert!(!names[..i].contains(n), "{n}: listed twice");
        }
    }

    /// Only tests that need TDX are skipped, and only where TDX is off.
    #[test]
    fn skips_follow_the_mode() {
        let on = Ctx { tdx: true };
        let off = Ctx { tdx: false };
        for (name, needs, _) in tests() {
            assert_eq!(skip_reason(needs, &on), None, "{name} skipped with tdx");
            assert_eq!(skip_reason(needs, &off).is_some(), needs == Tdx, "{name}");
        }
        assert!(tests().iter().any(|t| t.1 == Tdx), "no TDX-only test left");
    }

    /// The harness' own fault switch. Unset (the normal case) or `guest-*`, it checks that the
    /// value is one the harness knows (a misspelt fault would test nothing); `host-fail` makes
    /// it fail and `host-abort` aborts its whole test binary, the two host failures
    /// `scripts/host-test.sh` must count (`scripts/harness-selftest.sh` checks that it does).
    #[test]
    fn harness_fault_probe() {
        let fault = harness_fault();
        match fault.as_deref() {
            Some("host-fail") => panic!("{HARNESS_FAULT}=host-fail: failing on purpose"),
            Some("host-abort") => {
                eprintln!("{HARNESS_FAULT}=host-abort: aborting the test binary on purpose");
                std::process::abort();
            }
            Some(v) => assert!(HARNESS_FAULTS.contains(&v), "unknown {HARNESS_FAULT}={v}"),
            None => {}
        }
    }
}
