//! Reusable fixtures for the integration tests.
//!
//! Include it from a test file with `mod support;`.  Every test binary uses a
//! different subset of the helpers, hence the blanket `dead_code` allowance.
//!
//! * [`skip`], [`current_test_name`] and [`raise_nofile_limit`] are portable.
//! * [`fuse`], [`seccomp`] and [`loopfs`] are Linux-only (they need root,
//!   `/dev/fuse`, seccomp and loop devices) and compile to nothing elsewhere,
//!   e.g. on FreeBSD.
//!
//! Privileged fixtures never skip silently: each has an `available()` probe
//! returning the reason it cannot run, and an `*_or_skip` constructor that
//! reports that reason through [`skip`].
#![allow(dead_code)]

use std::io::{self, Write};

#[cfg(target_os = "linux")]
pub mod fuse;
#[cfg(target_os = "linux")]
pub mod loopfs;
#[cfg(target_os = "linux")]
pub mod seccomp;

/// Name of the running test, as libtest names the test's thread
/// (`"module::test_fn"`, or just `"test_fn"` at the top of an integration
/// test).  Falls back to `"<unknown test>"` when the thread is unnamed or is
/// the main thread (libtest runs tests on the main thread when it cannot
/// spawn threads).
pub fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "<unknown test>".to_owned(),
    }
}

/// Report that the current test is skipped, and why.
///
/// Prints `SKIPPED: <test name>: <reason>` straight to the process's stderr.
/// This deliberately bypasses libtest's output capture (which only captures
/// the `print!`/`eprint!` macros), so the line is visible even for passing
/// tests without `--nocapture`.  The caller still has to `return`, e.g.
/// `return support::skip("no /dev/fuse");`.
pub fn skip(reason: &str) {
    let line = format!("SKIPPED: {}: {}\n", current_test_name(), reason);
    // Ignore errors: there is nothing useful to do if stderr is gone.
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the process holds `CAP_SYS_ADMIN` in its effective set (needed
/// to mount anything), read from `/proc/self/status`.
#[cfg(target_os = "linux")]
pub fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Raise the soft `RLIMIT_NOFILE` limit to the hard limit and return the new
/// soft limit.
///
/// On Linux an unlimited hard limit is clamped to `/proc/sys/fs/nr_open`,
/// since the soft limit may not exceed it.  The hard limit itself is never
/// raised (that needs `CAP_SYS_RESOURCE`).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut target = lim.rlim_max;
    #[cfg(target_os = "linux")]
    if target == libc::RLIM_INFINITY {
        if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        {
            target = nr_open;
        }
    }
    if lim.rlim_cur < target {
        lim.rlim_cur = target;
        // SAFETY: `lim` is a valid, initialised `rlimit`; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // `rlim_t` is `u64` on Linux but `i64` on FreeBSD; a soft limit is never
    // negative.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// Polls until an event with `token` arrives (at most 20 s), retrying interrupted polls as mio's
/// own examples do. Other tokens are ignored.
pub fn wait_for(poll: &mut mio::Poll, token: mio::Token) {
    let mut events = mio::Events::with_capacity(64);
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no event for {token:?}"
        );
        match poll.poll(&mut events, Some(std::time::Duration::from_secs(1))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        if events.iter().any(|e| e.token() == token) {
            return;
        }
    }
}

/// Waits for the one event of `token`, then checks that no other event follows within 50 ms:
/// exactly one event, carrying the operation's own token.
pub fn expect_one_event(poll: &mut mio::Poll, token: mio::Token) {
    let mut events = mio::Events::with_capacity(16);
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while seen.is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no event within 10 s"
        );
        match poll.poll(&mut events, Some(std::time::Duration::from_secs(10))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen.extend(events.iter().map(|e| e.token()));
    }
    loop {
        match poll.poll(&mut events, Some(std::time::Duration::from_millis(50))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen.extend(events.iter().map(|e| e.token()));
        break;
    }
    assert_eq!(
        seen,
        vec![token],
        "expected exactly one event with the operation's token"
    );
}

/// Runs `body` in a child process (this test binary, re-run for the one test `test`) with `env`
/// set, so that process-wide settings (limits, the backend's queue size) apply to it alone. In
/// the parent, asserts that the child ran the test and passed, and shows its output.
pub fn in_child(test: &str, env: &[(&str, &str)], body: impl FnOnce()) {
    const CHILD: &str = "MIO_AIO_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let out = std::process::Command::new(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "child run of `{test}` failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    print!("{stdout}");
    for line in stderr.lines().filter(|l| l.starts_with("SKIPPED:")) {
        eprintln!("{line}");
    }
}

/// Registers `op` with `poll` under `token` (interest `mio_aio::AIO`), pins it and submits it:
/// the sequence every single operation goes through.
pub fn start<S>(poll: &mio::Poll, mut op: S, token: mio::Token) -> std::pin::Pin<Box<S>>
where
    S: mio::event::Source + mio_aio::SourceApi,
{
    poll.registry()
        .register(&mut op, token, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    op
}
