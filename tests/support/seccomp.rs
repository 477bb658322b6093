//! Run a test in a child process in which io_uring is refused, to exercise
//! fallback paths (e.g. io_uring -> kernel AIO) on a kernel that has
//! io_uring.
//!
//! Seccomp filters are per thread, inherited by new threads and children,
//! and can never be removed, so the filter must not be installed in the
//! test harness process itself.  Instead the test re-executes its own binary
//! for just itself, with an environment variable telling the copy that it
//! is the child:
//!
//! ```ignore
//! #[test]
//! fn falls_back_without_io_uring() {
//!     support::seccomp::run_without_io_uring("falls_back_without_io_uring", || {
//!         // runs in a child process where io_uring_setup() fails with EPERM
//!     });
//! }
//! ```
//!
//! The test name passed must be the full libtest name of the test (for a
//! test at the top of an integration test file that is the function name;
//! inside `mod foo` it is `foo::name`).  A wrong name would run zero tests
//! in the child, which [`assert_child_passed`] detects.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::{Command, Output};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Environment variable set in the child started by [`run_without_io_uring`].
pub const CHILD_ENV: &str = "MIO_AIO_TEST_NO_IO_URING_CHILD";

/// Make `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with
/// `EPERM` in every thread of this process, and in every thread or process
/// it creates later.  Irreversible.  Everything else, including Linux AIO
/// (`io_setup`, `io_submit`, ...), stays allowed.
pub fn refuse_io_uring_in_this_process() -> io::Result<()> {
    refuse_io_uring_with(libc::EPERM)
}

/// Like [`refuse_io_uring_in_this_process`] with a chosen errno, e.g.
/// `libc::ENOSYS` to mimic a kernel built without io_uring (`EPERM` is what
/// container runtimes' seccomp profiles and `kernel.io_uring_disabled=2`
/// give).
pub fn refuse_io_uring_with(errno: i32) -> io::Result<()> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new())) // no conditions: match every call
    .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(io::Error::other)?;
    let errno = u32::try_from(errno).map_err(io::Error::other)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,        // every other syscall
        SeccompAction::Errno(errno), // the io_uring ones
        arch,
    )
    .map_err(io::Error::other)?;
    let program: BpfProgram = filter.try_into().map_err(io::Error::other)?;
    // Also sets PR_SET_NO_NEW_PRIVS, which the kernel requires.
    seccompiler::apply_filter_all_threads(&program).map_err(io::Error::other)
}

/// Why seccomp filters cannot be installed here, if they cannot (kernel
/// built without `CONFIG_SECCOMP`).  Needs no privileges.
pub fn available() -> Result<(), String> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments and only reads the
    // calling thread's seccomp mode.
    let rc = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(format!(
            "seccomp is not supported by this kernel: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Whether this process is a child started by [`run_without_io_uring`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Re-execute the current test binary to run only the test `test_name`
/// (`--exact <name> --nocapture --test-threads=1`) with the extra
/// environment `env`, and return its output.  Panics if the binary cannot be
/// started.
pub fn rerun_self_with_env(test_name: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("path of the running test binary");
    Command::new(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run {}: {e}", exe.display()))
}

/// Panic, showing the child's exit status, stdout and stderr, unless the
/// child exited successfully *and* its libtest summary says exactly one
/// test passed (a misspelt test name would otherwise pass by running
/// nothing).  On success, `SKIPPED:` lines of the child are forwarded to
/// stderr so a skip is never silent.
pub fn assert_child_passed(test_name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran_one = stdout.contains("test result: ok. 1 passed");
    if !out.status.success() || !ran_one {
        panic!(
            "child run of `{test_name}` failed ({}{})\n\
             ----- child stdout -----\n{stdout}\n\
             ----- child stderr -----\n{stderr}",
            out.status,
            if ran_one {
                ""
            } else {
                ", and did not run exactly one test"
            },
        );
    }
    let mut err = io::stderr().lock();
    for line in stderr.lines().filter(|l| l.starts_with("SKIPPED:")) {
        let _ = writeln!(err, "{line} (in child without io_uring)");
    }
}

/// Run `body` in a child process where io_uring is refused with `EPERM`.
///
/// In the test process this re-runs `test_name` as a child (with
/// [`CHILD_ENV`] set) and asserts that it passed; in that child it installs
/// the filter with [`refuse_io_uring_in_this_process`] and runs `body`.
/// Skips (with a printed reason) where seccomp is unavailable.
pub fn run_without_io_uring(test_name: &str, body: impl FnOnce()) {
    if let Err(reason) = available() {
        super::skip(&reason);
    } else if in_child() {
        refuse_io_uring_in_this_process().expect("installing the seccomp filter");
        body();
    } else {
        let out = rerun_self_with_env(test_name, &[(CHILD_ENV, "1")]);
        assert_child_passed(test_name, &out);
    }
}

/// Make one system call fail with `errno` in every thread of this process, from now on.
/// Irreversible.
#[allow(dead_code)]
pub fn refuse_syscall(nr: i64, errno: i32) -> io::Result<()> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [(nr, Vec::new())].into_iter().collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(io::Error::other)?;
    let errno = u32::try_from(errno).map_err(io::Error::other)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .map_err(io::Error::other)?;
    let program: BpfProgram = filter.try_into().map_err(io::Error::other)?;
    seccompiler::apply_filter_all_threads(&program).map_err(io::Error::other)
}
