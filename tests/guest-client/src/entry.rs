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
            "entry_small_vm_ioctls_tss_identity_map_nr_mmu_pages",
            Any,
            |_| small_vm_ioctls(),
        ),
    ]
}
