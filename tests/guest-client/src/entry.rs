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

pub(crate) fn tests() -> Vec<Test> {
    vec![(
        "entry_cpu_timer_task_work_signal_ends_spinning_guest",
        Any,
        |_| with_svm(cpu_timer_signal_ends_spinning_guest),
    )]
}
