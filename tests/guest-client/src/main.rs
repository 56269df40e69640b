// SPDX-License-Identifier: GPL-2.0-only
//! In-guest test suite for `/dev/kvm` as `tdx_kvm.ko` provides it, written against the real
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
//! reported; `host-fail` / `host-abort` make the host unit test `harness_fault_probe` fail or
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
    ioctl(kvm.as_raw_fd(), io(0x01), vm_type).map(|fd| {
        // SAFETY: a fresh fd returned by KVM_CREATE_VM, owned from now on.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    })
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

const EINVAL: i32 = libc::EINVAL;
const EFAULT: i32 = libc::EFAULT;
const ENOTTY: i32 = libc::ENOTTY;
const E2BIG: i32 = libc::E2BIG;

fn tests() -> Vec<Test> {
    vec![
        ("api_version_is_12", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            eq(kvm.get_api_version(), 12, "KVM_GET_API_VERSION")
        }),
        ("api_version_with_nonzero_arg_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x00), 1),
                Err(EINVAL),
                "GET_API_VERSION(1)",
            )
        }),
        (
            "vm_types_lists_default_sw_protected_and_tdx_only_when_active",
            Any,
            |c| {
                let kvm = Kvm::new().map_err(|e| e.to_string())?;
                let want = 0b11 | if c.tdx { 1 << KVM_X86_TDX_VM } else { 0 };
                eq(
                    ioctl(kvm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES),
                    Ok(want),
                    "KVM_CAP_VM_TYPES",
                )
            },
        ),
        ("check_extension_vm_is_supported", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            check(
                kvm.check_extension(Cap::CheckExtensionVm),
                "KVM_CAP_CHECK_EXTENSION_VM",
            )
        }),
        ("unsupported_capabilities_answer_zero", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            for cap in [
                Cap::UserMemory,
                Cap::Irqchip,
                Cap::NrVcpus,
                Cap::MaxVcpus,
                Cap::ImmediateExit,
            ] {
                if kvm.check_extension(cap) {
                    return Err(format!(
                        "{cap:?} claimed but vCPUs/memslots do not exist yet"
                    ));
                }
            }
            eq(
                ioctl(kvm.as_raw_fd(), io(0x03), 0xffff_ffff),
                Ok(0),
                "unknown cap",
            )
        }),
        ("vcpu_mmap_size_is_three_pages", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            eq(
                kvm.get_vcpu_mmap_size().map_err(|e| e.to_string())?,
                3 * 4096,
                "mmap size",
            )
        }),
        ("vcpu_mmap_size_with_arg_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x04), 7),
                Err(EINVAL),
                "GET_VCPU_MMAP_SIZE(7)",
            )
        }),
        ("create_default_vm_and_close", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            let vm = kvm.create_vm().map_err(|e| e.to_string())?;
            drop(vm);
            counts_are_zero()
        }),
        ("create_sw_protected_vm_and_close", Any, |_| {
            let vm = create_vm(&dev(), 1).map_err(|e| format!("errno {e}"))?;
            drop(vm);
            counts_are_zero()
        }),
        ("tdx_vm_only_with_a_tdx_backend", Any, |c| {
            let r = create_vm(&dev(), KVM_X86_TDX_VM);
            if c.tdx {
                let vm = r.map_err(|e| format!("errno {e}"))?;
                check(
                    stats()
                        .iter()
                        .any(|(k, v)| k == "td_control_pages" && *v == 7),
                    "TDR + 6 TDCX (tdx=emulated is the 1.5 module: TDCS_BASE_SIZE 6 pages)",
                )?;
                drop(vm);
                counts_are_zero()
            } else {
                eq(r.err(), Some(EINVAL), "TDX VM with tdx off")
            }
        }),
        ("sev_and_unknown_machine_types_are_einval", Any, |_| {
            let kvm = dev();
            for t in [2u64, 3, 4, 6, 63, 64, 1 << 32, u64::MAX] {
                eq(create_vm(&kvm, t).err(), Some(EINVAL), &format!("type {t}"))?;
            }
            Ok(())
        }),
        ("supported_cpuid_has_the_vendor_leaf", Any, |_| {
            let kvm = Kvm::new().map_err(|e| e.to_string())?;
            let cpuid = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(|e| e.to_string())?;
            let e0 = cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == 0)
                .ok_or("no leaf 0")?;
            let host = std::arch::x86_64::__cpuid(0);
            eq(
                (e0.ebx, e0.ecx, e0.edx),
                (host.ebx, host.ecx, host.edx),
                "vendor",
            )
        }),
        ("supported_cpuid_too_small_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8 + 40];
            buf[0] = 1; // nent = 1
            let r = ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64);
            eq(r, Err(E2BIG), "nent 1")
        }),
        ("supported_cpuid_zero_entries_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8];
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "nent 0",
            )
        }),
        ("supported_cpuid_null_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0),
                Err(EFAULT),
                "NULL",
            )
        }),
        ("supported_cpuid_unmapped_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0xdead_0000),
                Err(EFAULT),
                "unmapped",
            )
        }),
        ("supported_cpuid_kernel_pointer_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), 0xffff_ffff_8100_0000),
                Err(EFAULT),
                "kernel address",
            )
        }),
        ("supported_cpuid_read_only_buffer_is_efault", Any, |_| {
            // A buffer whose header reads fine (nent = 256) but cannot be written back.
            // SAFETY: an anonymous mapping of ours, written, made read-only, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    16384,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err("mmap".into());
            }
            // SAFETY: `p` is a fresh writable mapping of 16 KiB.
            unsafe {
                *(p as *mut u32) = 256;
                libc::mprotect(p, 16384, libc::PROT_READ);
            }
            let r = ioctl(dev().as_raw_fd(), iowr(0x05, 8), p as u64);
            // SAFETY: mapped above.
            unsafe { libc::munmap(p, 16384) };
            eq(r, Err(EFAULT), "read-only buffer")
        }),
        (
            "supported_cpuid_size_not_matching_the_abi_is_einval",
            Any,
            |_| {
                let mut buf = vec![0u8; 512];
                buf[0] = 8;
                eq(
                    ioctl(dev().as_raw_fd(), iowr(0x05, 16), buf.as_mut_ptr() as u64),
                    Err(EINVAL),
                    "size 16",
                )
            },
        ),
        ("msr_index_list_is_written_back", Any, |_| {
            let mut buf = [0xffu8; 16];
            buf[..4].copy_from_slice(&3u32.to_ne_bytes());
            ioctl(dev().as_raw_fd(), iowr(0x02, 4), buf.as_mut_ptr() as u64)
                .map_err(|e| format!("errno {e}"))?;
            eq(
                u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
                0,
                "nmsrs",
            )
        }),
        ("msr_index_list_null_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0),
                Err(EFAULT),
                "NULL",
            )
        }),
        ("check_extension_of_a_huge_cap_number_is_zero", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x03), u64::MAX),
                Ok(0),
                "cap u64::MAX",
            )
        }),
        ("msr_index_list_unmapped_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0xdead_0000),
                Err(EFAULT),
                "unmapped",
            )
        }),
        ("msr_index_list_kernel_pointer_is_efault", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x02, 4), 0xffff_ffff_8100_0000),
                Err(EFAULT),
                "kernel address",
            )
        }),
        (
            "supported_cpuid_more_than_the_maximum_is_clamped",
            Any,
            |_| {
                let mut buf = vec![0u8; 8 + 40 * 4];
                buf[..4].copy_from_slice(&100_000u32.to_ne_bytes());
                // Clamped to KVM_MAX_CPUID_ENTRIES, which is more than we answer: success.
                ioctl(dev().as_raw_fd(), iowr(0x05, 8), buf.as_mut_ptr() as u64)
                    .map_err(|e| format!("errno {e}"))?;
                let n = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                check((1..=4).contains(&n), "nent written back")
            },
        ),
        ("mmap_of_dev_kvm_is_refused", Any, |_| {
            let kvm = dev();
            // SAFETY: asks for a shared mapping of /dev/kvm, which must fail.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    kvm.as_raw_fd(),
                    0,
                )
            };
            let err = std::io::Error::last_os_error().raw_os_error();
            check(
                p == libc::MAP_FAILED && err == Some(libc::ENODEV),
                "mmap /dev/kvm is ENODEV",
            )
        }),
        ("read_and_write_of_dev_kvm_are_einval", Any, |_| {
            use std::io::{Read, Write};
            let mut kvm = dev();
            let mut b = [0u8; 8];
            let r = kvm.read(&mut b).map_err(|e| e.raw_os_error());
            let w = kvm.write(&b).map_err(|e| e.raw_os_error());
            eq((r, w), (Err(Some(EINVAL)), Err(Some(EINVAL))), "read/write")
        }),
        (
            "emulated_cpuid_and_msr_feature_list_answer_as_kvm",
            Any,
            |_| {
                let kvm = Kvm::new().map_err(|e| e.to_string())?;
                check(
                    kvm.check_extension(Cap::ExtEmulCpuid),
                    "KVM_CAP_EXT_EMUL_CPUID",
                )?;
                let e = kvm
                    .get_emulated_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(|e| e.to_string())?;
                eq(e.as_slice().len(), 0, "emulated CPUID entries")?;
                let l = kvm
                    .get_msr_feature_index_list()
                    .map_err(|e| e.to_string())?;
                eq(l.as_slice().len(), 0, "feature MSRs")
            },
        ),
        ("emulated_cpuid_zero_entries_is_e2big", Any, |_| {
            let mut buf = vec![0u8; 8];
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x09, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "nent 0",
            )
        }),
        ("feature_msrs_read_none_and_refuse_too_many", Any, |_| {
            let mut buf = vec![0u8; 8 + 16];
            buf[..4].copy_from_slice(&1u32.to_ne_bytes());
            buf[8..12].copy_from_slice(&0x10au32.to_ne_bytes());
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x88, 8), buf.as_mut_ptr() as u64),
                Ok(0),
                "one MSR",
            )?;
            buf[..4].copy_from_slice(&256u32.to_ne_bytes());
            eq(
                ioctl(dev().as_raw_fd(), iowr(0x88, 8), buf.as_mut_ptr() as u64),
                Err(E2BIG),
                "256 MSRs",
            )?;
            // A header at the very end of a mapping whose entries run into unmapped memory.
            // SAFETY: two fresh anonymous pages; the second is unmapped right away, the first
            // unmapped at the end.
            let p = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    8192,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                libc::munmap((p as *mut u8).add(4096).cast(), 4096);
                p as *mut u8
            };
            // SAFETY: the last 8 bytes of the first page are ours.
            let hdr = unsafe { p.add(4096 - 8) };
            // SAFETY: as above.
            unsafe { (hdr as *mut u32).write_unaligned(200) };
            let r = ioctl(dev().as_raw_fd(), iowr(0x88, 8), hdr as u64);
            // SAFETY: mapped above.
            unsafe { libc::munmap(p.cast(), 4096) };
            eq(r, Err(EFAULT), "entries past the mapping")
        }),
        ("unknown_system_ioctl_is_einval", Any, |_| {
            eq(
                ioctl(dev().as_raw_fd(), io(0x7f), 0),
                Err(EINVAL),
                "io(0x7f)",
            )
        }),
        ("foreign_ioctl_type_is_einval", Any, |_| {
            // TCGETS on /dev/kvm.
            eq(ioctl(dev().as_raw_fd(), 0x5401, 0), Err(EINVAL), "TCGETS")
        }),
        ("unknown_vm_ioctl_is_enotty", Any, |_| {
            let vm = create_vm(&dev(), 0).map_err(|e| format!("errno {e}"))?;
            eq(
                ioctl(vm.as_raw_fd(), io(0xe0), 0),
                Err(ENOTTY),
                "vm io(0xe0)",
            )
        }),
        ("vm_check_extension_answers_on_the_vm_fd", Any, |c| {
            let vm = create_vm(&dev(), 0).map_err(|e| format!("errno {e}"))?;
            let want = 0b11 | if c.tdx { 1 << KVM_X86_TDX_VM } else { 0 };
            eq(
                ioctl(vm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES),
                Ok(want),
                "VM_TYPES on VM fd",
            )
        }),
        ("create_vcpu_is_not_offered_yet", Any, |_| {
            let vm = create_vm(&dev(), 0).map_err(|e| format!("errno {e}"))?;
            eq(
                ioctl(vm.as_raw_fd(), io(0x41), 0),
                Err(ENOTTY),
                "KVM_CREATE_VCPU",
            )
        }),
        (
            "many_vms_open_at_once_then_closed_leave_nothing",
            Any,
            |c| {
                let kvm = dev();
                let mut vms = Vec::new();
                for i in 0..64 {
                    let t = if c.tdx && i % 4 == 0 {
                        KVM_X86_TDX_VM
                    } else {
                        i % 2
                    };
                    vms.push(create_vm(&kvm, t).map_err(|e| format!("vm {i}: errno {e}"))?);
                }
                check(
                    stats().iter().any(|(k, v)| k == "vms" && *v == 64),
                    "64 VMs counted",
                )?;
                drop(vms);
                counts_are_zero()
            },
        ),
        ("hkids_are_reused_after_close", Tdx, |_| {
            let kvm = dev();
            for i in 0..100 {
                drop(create_vm(&kvm, KVM_X86_TDX_VM).map_err(|e| format!("TD {i}: errno {e}"))?);
            }
            counts_are_zero()
        }),
        ("running_out_of_hkids_is_ebusy_not_a_crash", Tdx, |_| {
            let kvm = dev();
            let mut tds = Vec::new();
            loop {
                match create_vm(&kvm, KVM_X86_TDX_VM) {
                    Ok(fd) => tds.push(fd),
                    Err(e) => {
                        eq(e, libc::EBUSY, "after the last HKID")?;
                        break;
                    }
                }
                if tds.len() > 1000 {
                    return Err("no HKID limit".into());
                }
            }
            drop(tds);
            counts_are_zero()
        }),
        ("open_close_races_from_several_threads", Any, |c| {
            let tdx = c.tdx;
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    std::thread::spawn(move || -> Result<(), String> {
                        for i in 0..200u64 {
                            let kvm = dev();
                            let ty = if tdx && (i + t) % 3 == 0 {
                                KVM_X86_TDX_VM
                            } else {
                                i % 2
                            };
                            let vm = create_vm(&kvm, ty).map_err(|e| format!("errno {e}"))?;
                            drop(kvm);
                            let _ = ioctl(vm.as_raw_fd(), io(0x03), KVM_CAP_VM_TYPES);
                            drop(vm);
                        }
                        Ok(())
                    })
                })
                .collect();
            for t in threads {
                t.join().map_err(|_| "thread panicked")??;
            }
            counts_are_zero()
        }),
    ]
}

/// The environment switch of the harness' fault injection (see the crate docs).
const HARNESS_FAULT: &str = "TDXKVM_HARNESS_FAULT";
/// The values `HARNESS_FAULT` may take; each one is exercised by `scripts/harness-selftest.sh`.
const HARNESS_FAULTS: [&str; 4] = ["host-fail", "host-abort", "guest-panic", "guest-missing"];

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
    if let Some(f) = harness_fault().filter(|f| !HARNESS_FAULTS.contains(&f.as_str())) {
        eprintln!("unknown {HARNESS_FAULT}={f} (known: {HARNESS_FAULTS:?})");
        std::process::exit(2);
    }
    let mode = arg;
    let ctx = Ctx {
        tdx: mode == "emulated",
    };
    let panic_at = (harness_fault().as_deref() == Some("guest-panic")).then_some(tests.len() / 2);
    println!("plan: {}", tests.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (i, (name, needs, f)) in tests.into_iter().enumerate() {
        if panic_at == Some(i) {
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
