// SPDX-License-Identifier: GPL-2.0-only
//! The run loop's entry hygiene (issue 11 remainder, `entry`): the transfer-to-guest work
//! (`TIF_NOTIFY_RESUME` work is done while a guest runs, not only when `KVM_RUN` returns), the
//! killable vCPU mutex, and the small VM ioctls.

use crate::run::{with_svm, Guest};
use crate::*;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

const KVM_EXIT_INTR: u32 = 10;

/// `jmp $` (real mode, at the reset segment's offset 0).
const SPIN: &[u8] = &[0xeb, 0xfe];

extern "C" fn on_sigusr2(_: libc::c_int) {}

/// A guest that never exits on its own, on a thread with a thread-CPU-time timer of 200 ms that
/// signals the thread. A CPU-time timer's expiry is task work (POSIX_CPU_TIMERS_TASK_WORK): the
/// tick queues it with TIF_NOTIFY_RESUME and the signal is only sent when the work runs. If
/// `KVM_RUN` ignored TIF_NOTIFY_RESUME (or cleared it without running the work), the signal
/// would never come and the guest would spin for ever; upstream's
/// xfer_to_guest_mode_handle_work runs it, so KVM_RUN ends with EINTR / KVM_EXIT_INTR.
fn cpu_timer_signal_ends_spinning_guest() -> Result<(), String> {
    let g = Guest::new(SPIN, 4096)?;
    let mut v = g.vcpu(0)?;
    // SAFETY: a plain sigaction with a handler that does nothing, no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
    let done = AtomicBool::new(false);
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<(i32, u32), String> {
            // SAFETY: plain syscalls on this thread; the sigevent targets this thread only.
            let timer = unsafe {
                let me = libc::gettid();
                tid.store(me, Ordering::SeqCst);
                let mut sev: libc::sigevent = std::mem::zeroed();
                sev.sigev_notify = libc::SIGEV_THREAD_ID;
                sev.sigev_signo = libc::SIGUSR2;
                sev.sigev_notify_thread_id = me;
                let mut t: libc::timer_t = std::ptr::null_mut();
                if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut t) != 0 {
                    return Err("timer_create".into());
                }
                let its = libc::itimerspec {
                    it_interval: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 200_000_000,
                    },
                };
                if libc::timer_settime(t, 0, &its, std::ptr::null_mut()) != 0 {
                    return Err("timer_settime".into());
                }
                t
            };
            let r = v.run().map(|_| 0).unwrap_or_else(|e| e.errno());
            done.store(true, Ordering::SeqCst);
            // SAFETY: the timer made above.
            unsafe { libc::timer_delete(timer) };
            Ok((r, v.get_kvm_run().exit_reason))
        });
        let t0 = Instant::now();
        let mut stuck = false;
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            if t0.elapsed() > Duration::from_secs(20) && !stuck {
                // Unstick the thread with a plain signal so the test ends; it failed.
                stuck = true;
            }
            if stuck {
                let t = tid.load(Ordering::SeqCst);
                // SAFETY: a thread of this process (alive until joined), SIGUSR2 handled.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), t, libc::SIGUSR2) };
            }
        }
        let (r, why) = h.join().map_err(|_| "vCPU thread panicked".to_string())??;
        if stuck {
            return Err(
                "the CPU-time timer's signal never came: KVM_RUN did not run the \
                        TIF_NOTIFY_RESUME task work within 20 s"
                    .into(),
            );
        }
        eq(r, libc::EINTR, "KVM_RUN errno")?;
        eq(why, KVM_EXIT_INTR, "exit_reason")
    })
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// What the clone child (same mm, its own process) does: `KVM_GET_REGS` on the vCPU another
/// thread is running (it waits for the vCPU mutex), then exits.
extern "C" fn child_get_regs(arg: *mut libc::c_void) -> libc::c_int {
    let fd = arg as usize as libc::c_long;
    let mut regs = [0u64; 18];
    // SAFETY: raw syscalls only (no libc state in a CLONE_VM child); `regs` is big enough
    // for struct kvm_regs (18 u64).
    unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            fd,
            0x8090_ae81u64 as libc::c_long,
            regs.as_mut_ptr(),
        );
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// A fatal signal ends a wait for the vCPU mutex (upstream `mutex_lock_killable` in
/// `kvm_vcpu_ioctl`): a process sharing the VM's mm waits in `KVM_GET_REGS` while a thread of
/// the test runs a guest that never exits; SIGKILL must reap it at once, not after the run.
fn vcpu_mutex_wait_is_killable() -> Result<(), String> {
    let g = Guest::new(SPIN, 4096)?;
    let mut v = g.vcpu(0)?;
    let vfd = std::os::fd::AsRawFd::as_raw_fd(&v);
    // SAFETY: a plain sigaction with a handler that does nothing, no SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            started.store(true, Ordering::SeqCst);
            let r = v.run().map(|_| 0).unwrap_or_else(|e| e.errno());
            done.store(true, Ordering::SeqCst);
            r
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Let the vCPU thread take the mutex and enter the guest.
        std::thread::sleep(Duration::from_millis(300));
        let mut stack = vec![0u8; 64 << 10];
        // SAFETY: the child runs `child_get_regs` on its own stack (alive until it is reaped
        // below) and makes raw syscalls only; SIGCHLD makes it waitable.
        let pid = unsafe {
            libc::clone(
                child_get_regs,
                stack.as_mut_ptr().add(stack.len()).cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                vfd as usize as *mut libc::c_void,
            )
        };
        let mut result = Ok(());
        if pid < 0 {
            result = Err("clone".to_string());
        } else {
            std::thread::sleep(Duration::from_millis(300));
            let busy = !done.load(Ordering::SeqCst);
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let t0 = Instant::now();
            let mut reaped = false;
            while t0.elapsed() < Duration::from_secs(3) {
                let mut st = 0;
                // SAFETY: our child.
                if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                    reaped = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if !busy {
                result = Err("the vCPU thread left KVM_RUN before the check".into());
            } else if !reaped {
                result = Err("SIGKILL did not end a wait for the vCPU mutex within 3 s".into());
            }
            // Stop the guest; an unreaped child then gets the mutex and exits.
            while !done.load(Ordering::SeqCst) {
                let t = tid.load(Ordering::SeqCst);
                // SAFETY: a thread of this process, SIGUSR1 handled.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), t, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_millis(20));
            }
            if !reaped {
                let mut st = 0;
                // SAFETY: our child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
        }
        drop(stack);
        let r = h.join().map_err(|_| "vCPU thread panicked".to_string())?;
        result?;
        eq(r, libc::EINTR, "the spinning vCPU's KVM_RUN")
    })
}

/// `KVM_SET_TSS_ADDR`, `KVM_SET_IDENTITY_MAP_ADDR`, `KVM_SET_NR_MMU_PAGES` as 6.12 answers them
/// on SVM, and their capabilities.
fn small_vm_ioctls() -> Result<(), String> {
    let kvm = dev();
    let vm = create_vm(&kvm, 0).map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let vmfd = vm.as_raw_fd();
    for (cap, name) in [
        (2u64, "MMU_SHADOW_CACHE_CONTROL"),
        (4, "SET_TSS_ADDR"),
        (37, "SET_IDENTITY_MAP_ADDR"),
    ] {
        eq(ioctl(vmfd, io(0x03), cap), Ok(1), name)?;
        eq(ioctl(kvm.as_raw_fd(), io(0x03), cap), Ok(1), name)?;
    }
    // KVM_SET_TSS_ADDR: up to (u32)(-3 * 4096).
    eq(
        ioctl(vmfd, io(0x47), 0xfffb_d000),
        Ok(0),
        "TSS at 0xfffbd000",
    )?;
    eq(
        ioctl(vmfd, io(0x47), 0xffff_d000),
        Ok(0),
        "TSS at the highest address",
    )?;
    eq(
        ioctl(vmfd, io(0x47), 0xffff_d001),
        Err(libc::EINVAL),
        "TSS above it",
    )?;
    eq(
        ioctl(vmfd, io(0x47), 1 << 32),
        Err(libc::EINVAL),
        "TSS above 4 GiB",
    )?;
    // KVM_SET_NR_MMU_PAGES: at least 64; KVM_GET_NR_MMU_PAGES is gone (ENOTTY).
    eq(ioctl(vmfd, io(0x44), 63), Err(libc::EINVAL), "63 MMU pages")?;
    eq(ioctl(vmfd, io(0x44), 64), Ok(0), "64 MMU pages")?;
    eq(ioctl(vmfd, io(0x44), 1 << 20), Ok(0), "2^20 MMU pages")?;
    eq(
        ioctl(vmfd, io(0x45), 0),
        Err(libc::ENOTTY),
        "KVM_GET_NR_MMU_PAGES",
    )?;
    // KVM_SET_IDENTITY_MAP_ADDR: a readable u64 before the first vCPU, EINVAL after.
    let set_ident = (1 << 30) | (8 << 16) | (0xae << 8) | 0x48;
    let addr: u64 = 0xfffb_c000;
    eq(
        ioctl(vmfd, set_ident, &addr as *const u64 as u64),
        Ok(0),
        "identity map before vCPUs",
    )?;
    eq(
        ioctl(vmfd, set_ident, 8),
        Err(libc::EFAULT),
        "identity map from a bad pointer",
    )?;
    let vcpu = ioctl(vmfd, io(0x41), 0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // SAFETY: a fresh vCPU fd, owned from now on.
    let _vcpu = unsafe { OwnedFd::from_raw_fd(vcpu as i32) };
    eq(
        ioctl(vmfd, set_ident, &addr as *const u64 as u64),
        Err(libc::EINVAL),
        "identity map after a vCPU",
    )?;
    eq(
        ioctl(vmfd, set_ident, 8),
        Err(libc::EINVAL),
        "EINVAL comes before EFAULT",
    )?;
    Ok(())
}

/// Real mode at the reset vector (SS base 0, SP in RAM): CR4 = PGE|OSXSAVE, CPUID.1 ECX out on
/// port 0x80, CR4 read back out on port 0x82 (the guest's value: the host's MCE bit the hardware
/// CR4 keeps does not show), then a
/// CR4 write with VMXE (reserved: no VMX here) which must #GP; the #GP handler (IVT vector 13
/// at 0000:0500) does OUT 0x81 and halts.
const CR4_GUEST: &[u8] = &[
    0xbc, 0x00, 0x08, // mov sp, 0x800 (the #GP pushes FLAGS/CS/IP into RAM)
    0x66, 0xb8, 0x80, 0x00, 0x04, 0x00, // mov eax, 0x40080 (OSXSAVE | PGE)
    0x0f, 0x22, 0xe0, // mov cr4, eax
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
    0x66, 0x31, 0xc9, // xor ecx, ecx
    0x0f, 0xa2, // cpuid
    0x66, 0x89, 0xc8, // mov eax, ecx
    0xba, 0x80, 0x00, // mov dx, 0x80
    0x66, 0xef, // out dx, eax
    0x0f, 0x20, 0xe0, // mov eax, cr4
    0xba, 0x82, 0x00, // mov dx, 0x82
    0x66, 0xef, // out dx, eax
    0x66, 0xb8, 0x80, 0x20, 0x04, 0x00, // mov eax, 0x42080 (| VMXE)
    0x0f, 0x22, 0xe0, // mov cr4, eax: #GP
    0xf4, // hlt (not reached)
];

/// CR4 writes are intercepted and checked (upstream kvm_set_cr4): an accepted OSXSAVE shows in
/// the guest's CPUID.1:ECX at once (cr4_cpuid_sync_test's point), a reserved bit is #GP with
/// CR4 unchanged.
fn cr4_write_checked() -> Result<(), String> {
    let g = Guest::new(CR4_GUEST, 4096)?;
    // IVT[13] = 0000:0500; the handler: out 0x81, al; hlt.
    g.ram.write(13 * 4, &[0x00, 0x05, 0x00, 0x00]);
    g.ram.write(0x500, &[0xe6, 0x81, 0xf4]);
    let mut v = g.vcpu(0)?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("open: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    let xsave = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 1 && e.ecx & (1 << 26) != 0);
    if !xsave {
        return Err("no XSAVE in the supported CPUID (QEMU -cpu max has it)".into());
    }
    v.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    match v.run().map_err(|e| format!("run 1: {e}"))? {
        kvm_ioctls::VcpuExit::IoOut(0x80, d) => {
            let ecx = u32::from_le_bytes(d.try_into().map_err(|_| "4-byte OUT")?);
            eq(
                ecx & (1 << 27) != 0,
                true,
                "CPUID.1:ECX.OSXSAVE after CR4.OSXSAVE",
            )?;
        }
        e => return Err(format!("run 1: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 2: {e}"))? {
        kvm_ioctls::VcpuExit::IoOut(0x82, d) => {
            let cr4 = u32::from_le_bytes(d.try_into().map_err(|_| "4-byte OUT")?);
            eq(cr4, 0x40080, "CR4 as the guest reads it")?;
        }
        e => return Err(format!("run 2: {e:?}")),
    }
    match v.run().map_err(|e| format!("run 3: {e}"))? {
        kvm_ioctls::VcpuExit::IoOut(0x81, _) => {}
        e => {
            let e = format!("{e:?}");
            // SAFETY: the exit was KVM_EXIT_INTERNAL_ERROR or another union member; only read.
            let i = unsafe { v.get_kvm_run().__bindgen_anon_1.internal };
            let s = v
                .get_sregs()
                .map(|s| (s.cr4, s.cs.base))
                .unwrap_or_default();
            let r = v.get_regs().map(|r| r.rip).unwrap_or_default();
            return Err(format!(
                "run 3 (the #GP handler): {e} suberror {} data {:x?} cr4/cs {s:x?} rip {r:x}",
                i.suberror,
                &i.data[..i.ndata.min(16) as usize]
            ));
        }
    }
    let s = v.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    eq(s.cr4, 0x40080, "CR4 after the refused write")
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        (
            "entry_cpu_timer_task_work_signal_ends_spinning_guest",
            Any,
            |_| with_svm(cpu_timer_signal_ends_spinning_guest),
        ),
        ("entry_vcpu_mutex_wait_is_killable", Any, |_| {
            with_svm(vcpu_mutex_wait_is_killable)
        }),
        (
            "entry_cr4_write_checked_osxsave_mirrored_reserved_gp",
            Any,
            |_| with_svm(cr4_write_checked),
        ),
        (
            "entry_small_vm_ioctls_tss_identity_map_nr_mmu_pages",
            Any,
            |_| small_vm_ioctls(),
        ),
    ]
}
