//! SIGTERM and SIGINT from the first instant of `serve`: `catch_early` runs first thing in
//! `main`, before the configuration is read or the store opened, and records a signal that
//! arrives during start-up; `terminated` resolves for it. Without this a signal in the first
//! milliseconds was lost when running as PID 1 (a container), which has no default action.

use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);

/// Registers SIGTERM and SIGINT handlers that record the signal, then unblocks both (a parent
/// may have started us with them blocked). Call before anything slow.
pub fn catch_early() {
    #[cfg(unix)]
    {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the action only stores to an atomic, which is async-signal-safe.
            let registered = unsafe {
                signal_hook_registry::register(sig, || RECEIVED.store(true, Ordering::SeqCst))
            };
            if let Err(e) = registered {
                eprintln!("block-manager: cannot install a handler for signal {sig}: {e}");
            }
        }
        // SAFETY: sigemptyset/sigaddset fill a set we own; pthread_sigmask reads it. Threads
        // started later inherit the unblocked mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Whether a signal has arrived since `catch_early`.
pub fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}

/// Resolves on SIGTERM or SIGINT, at once when one arrived before (since `catch_early`).
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // The streams first, then the flag: a signal after the streams exist wakes them, one
        // before them is in the flag.
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if received() {
            return;
        }
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for signals; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        if received() {
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
