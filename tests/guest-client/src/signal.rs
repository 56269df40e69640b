//! Ending a `KVM_RUN` that blocks (a halted vCPU, a guest that spins) with a signal from
//! another thread, without losing the signal.
//!
//! One `pthread_kill` after a fixed sleep is not enough: if the vCPU thread is not yet inside
//! `KVM_RUN` when the signal comes (a loaded TCG host can delay it for hundreds of
//! milliseconds), the handler runs in user space, `KVM_RUN` then blocks for ever and the whole
//! client hangs. So the signal is sent again every 50 ms until the call has returned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Installs a no-op handler for `sig`, without `SA_RESTART`: a blocked `KVM_RUN` returns
/// `EINTR`.
pub(crate) fn install_noop_handler(sig: libc::c_int) {
    extern "C" fn on_signal(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction with a handler that does nothing is valid for any signal
    // this client sends itself.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Runs `run` on a new thread; once `ready()` is true (or 30 s have passed), sends `sig`
/// (which must have a handler, see [`install_noop_handler`]) to that thread every 50 ms until
/// `run` has returned, and returns its result.
pub(crate) fn run_until_signalled<T: Send>(
    sig: libc::c_int,
    ready: &(dyn Fn() -> bool + Sync),
    run: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    let tid = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            // SAFETY: no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let r = run();
            done.store(true, Ordering::SeqCst);
            r
        });
        let t0 = Instant::now();
        while !done.load(Ordering::SeqCst)
            && (tid.load(Ordering::SeqCst) == 0
                || (!ready() && t0.elapsed() < Duration::from_secs(30)))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        while !done.load(Ordering::SeqCst) {
            // SAFETY: the thread has stored its id and is alive until joined below; the
            // caller installed a handler for `sig`.
            unsafe { libc::pthread_kill(tid.load(Ordering::SeqCst) as libc::pthread_t, sig) };
            std::thread::sleep(Duration::from_millis(50));
        }
        h.join().map_err(|_| "vCPU thread panicked".to_string())
    })
}
