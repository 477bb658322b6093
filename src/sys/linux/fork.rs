//! Fork detection: a child process must never use its parent's rings, contexts or eventfds.
//!
//! A `pthread_atfork` child handler bumps a generation counter; every per-process object records
//! the generation it was made in and compares it before use.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Once,
};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Counts `fork`s into child processes since [`watch`] was first called.
pub(crate) fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Starts counting forks (once per process; later calls do nothing).
pub(crate) fn watch() {
    ATFORK.call_once(|| {
        // SAFETY: registers a child handler that only touches an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}
