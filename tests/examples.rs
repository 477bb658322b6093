//! Runs the examples (`demo`, `copy`, `tokio_copy`; `http_server` has tests/http_server.rs) as programs, against real
//! clients and real files (and a real full file system), and checks what they produce.
//!
//! `cargo test --test examples` does not build the examples by itself, so the first test to
//! need one runs `cargo build --examples` (the same cargo, profile, target directory and
//! features as this test), then every test runs the binaries from `<profile>/examples/`
//! directly. Each child is killed if its test fails, and nothing waits more than 60 s.

// `OpenOptions` is only for the O_DIRECT test, which macOS and OpenBSD skip.
#[cfg_attr(any(target_os = "macos", target_os = "openbsd"), allow(unused_imports))]
use std::{
    ffi::OsStr,
    fs::OpenOptions,
    io::{BufRead, BufReader, Read},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

mod support;

/// The longest any example may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The directory that holds this profile's build output: `<target dir>[/<triple>]/<profile>`.
fn profile_dir() -> PathBuf {
    // This test is `<profile dir>/deps/examples-<hash>`.
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <profile>/deps")
        .to_path_buf()
}

/// Builds the examples, once, and returns the path of example `name`.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_examples);
    match dir {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("cannot build the examples: {e}"),
    }
}

fn build_examples() -> Result<PathBuf, String> {
    let profile_dir = profile_dir();
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--examples", "--quiet", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => return Err(format!("odd profile directory {}", profile_dir.display())),
    }
    // Cross-compiled: `<target dir>/<triple>/<profile>`.
    let parent = profile_dir.parent().ok_or("no parent")?;
    if parent != target_dir {
        if let Some(triple) = parent.file_name() {
            cmd.arg("--target").arg(triple);
        }
    }
    if cfg!(feature = "tokio") {
        cmd.args(["--features", "tokio"]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(profile_dir.join("examples"))
}

/// A running example. Dropping it kills the process if it is still running, so that a failed
/// test leaves nothing behind.
struct Running {
    name: String,
    child: Child,
    /// All of stdout so far.
    stdout: Arc<Mutex<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a finished example printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Running {
    fn spawn<I, S>(name: &str, args: I, envs: &[(&str, &str)]) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(example(name))
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let stdout_pipe = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stdout = Arc::new(Mutex::new(String::new()));
        let all = Arc::clone(&stdout);
        thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        Running {
            name: name.to_string(),
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    fn output(&self) -> String {
        format!("--- stdout:\n{}", self.stdout.lock().unwrap())
    }

    /// Waits for the process to exit, at most `TIMEOUT` after `started`; kills it and fails
    /// the test if it does not.
    fn wait(mut self, started: Instant) -> Finished {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > TIMEOUT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{} ran for more than {TIMEOUT:?}:\n{}",
                        self.name,
                        self.output()
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("{}: wait: {e}", self.name),
            }
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        // The stdout reader ends with the process's stdout: give it a moment to catch up.
        let until = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stdout) > 1 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        let stdout = self.stdout.lock().unwrap().clone();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs example `name` to its end, and checks that it succeeded.
fn run_ok<I, S>(name: &str, args: I, envs: &[(&str, &str)]) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let done = Running::spawn(name, args, envs).wait(Instant::now());
    assert!(
        done.status.success(),
        "{name} failed ({}):\n--- stdout:\n{}\n--- stderr:\n{}",
        done.status,
        done.stdout,
        done.stderr
    );
    done
}

/// A small xorshift generator: deterministic data and ranges without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn demo_runs_to_completion_and_verifies_its_data() {
    let mut backends = vec![None];
    if cfg!(target_os = "linux") {
        // The thread pool works everywhere; the default is whatever works first.
        backends.push(Some("threads"));
    }
    for backend in backends {
        let envs: Vec<(&str, &str)> = backend
            .map(|b| ("MIO_AIO_BACKEND", b))
            .into_iter()
            .collect();
        let done = run_ok("demo", [] as [&str; 0], &envs);
        let out = &done.stdout;
        for expected in [
            "tick 3",
            "socket: got \"hello 1\"",
            "socket: got \"hello 3\"",
            "owned read 0 started at 7",
            "owned read 7 done: 4096 bytes, checked",
            "write of 2240 bytes done; syncing the journal",
            "fsync of the journal done",
            "demo finished OK",
            "8 owned reads (32768 bytes) verified",
            "write+fsync of 2240 bytes verified",
            "3 socket messages",
            "interrupted polls",
        ] {
            assert!(
                out.contains(expected),
                "no {expected:?} in the demo's output:\n{out}"
            );
        }
        if cfg!(target_os = "linux") {
            assert!(out.contains("mio-aio backend: "), "no backend line:\n{out}");
        }
        if let Some(b) = backend {
            assert!(
                out.contains(&format!("backend {b}")),
                "backend {b} not used:\n{out}"
            );
        }
        // Every owned read was started, and completed exactly once.
        for i in 0..8 {
            let done = format!("owned read {i} done:");
            assert_eq!(out.matches(&done).count(), 1, "{done:?} not once:\n{out}");
        }
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("demo finished OK"),
            "the summary is not last:\n{out}"
        );
    }
}

/// Copies a 5 MiB + 123 bytes random file with `copy` and `extra` options, in `dir`, and
/// checks the copy byte for byte.
fn check_copy(dir: &Path, extra: &[&str]) {
    let len = 5 * 1024 * 1024 + 123;
    let data = Rng(0x9e37_79b9_7f4a_7c15 ^ extra.len() as u64).bytes(len);
    let src = dir.join("src.bin");
    let dst = dir.join("dst.bin");
    std::fs::write(&src, &data).unwrap();
    // A stale, longer DST must be truncated.
    std::fs::write(&dst, vec![0xffu8; len + 4096]).unwrap();
    let mut args = vec![src.as_os_str(), dst.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let done = run_ok("copy", args, &[]);
    assert!(
        done.stdout.contains(&format!("copied {len} bytes")),
        "copy {extra:?} printed:\n{}",
        done.stdout
    );
    assert!(done.stdout.contains("MB/s"), "no speed:\n{}", done.stdout);
    let copied = std::fs::read(&dst).unwrap();
    assert_eq!(copied.len(), data.len(), "copy {extra:?}: wrong size");
    if let Some(i) = copied.iter().zip(&data).position(|(a, b)| a != b) {
        panic!("copy {extra:?}: the copy differs from byte {i} on");
    }
}

#[test]
fn copy_copies_a_file_exactly() {
    let dir = tempfile::tempdir().unwrap();
    check_copy(dir.path(), &[]);
    // Blocks that are not a power of two, and a depth that does not divide the block count.
    check_copy(dir.path(), &["--block-size", "1000", "--depth", "3"]);
    check_copy(dir.path(), &["--block-size", "1M", "--depth", "2"]);
}

#[test]
#[cfg(not(any(target_os = "macos", target_os = "openbsd")))] // no O_DIRECT there
fn copy_with_o_direct() {
    // tmpfs (often /tmp) may refuse O_DIRECT: use a disk-backed directory.
    let base = Path::new("/var/tmp");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(&base).unwrap();
    let probe = dir.path().join("probe");
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    match opened {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            println!(
                "skipped: {} does not support O_DIRECT ({e})",
                base.display()
            );
            return;
        }
        r => drop(r.unwrap()),
    }
    check_copy(dir.path(), &["--direct"]);
    check_copy(
        dir.path(),
        &["--direct", "--block-size", "8K", "--depth", "5"],
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"0123456789").unwrap();
    let file = file.to_str().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("demo", &["unexpected"]),
        ("copy", &[]),
        ("copy", &[file]),
        ("copy", &[missing, out]),
        ("copy", &[file, file]),
        ("copy", &[file, out, "--block-size", "0"]),
        ("copy", &[file, out, "--block-size", "lots"]),
        ("copy", &[file, out, "--block-size", "1000", "--direct"]),
        ("copy", &[file, out, "--depth", "-1"]),
        ("copy", &[file, out, "--frobnicate"]),
        ("http_server", &[]),
        ("http_server", &["--root", missing]),
        ("http_server", &["--root", file]),
        (
            "http_server",
            &["--root", dir_s, "--addr", "not-an-address"],
        ),
        ("http_server", &["--root", dir_s, "--chunk", "0"]),
        ("http_server", &["--root", dir_s, "--chunk", "lots"]),
        ("http_server", &["--root", dir_s, "--idle-timeout", "-1"]),
        ("http_server", &["--root"]),
    ];
    for (name, args) in cases {
        let done = Running::spawn(name, args.iter(), &[]).wait(Instant::now());
        let code = done.status.code();
        assert!(
            matches!(code, Some(1 | 2)),
            "{name} {args:?} exited with {:?}, not 1 or 2:\n{}",
            code,
            done.stderr
        );
        assert!(
            !done.stderr.contains("panicked"),
            "{name} {args:?} panicked:\n{}",
            done.stderr
        );
        assert!(
            !done.stderr.is_empty(),
            "{name} {args:?} said nothing on stderr"
        );
    }
}

/// The copy tools: `copy`, and `tokio_copy` when the `tokio` feature is on.
fn copy_tools() -> Vec<&'static str> {
    let mut tools = vec!["copy"];
    if cfg!(feature = "tokio") {
        tools.push("tokio_copy");
    }
    tools
}

/// Copies a 3 MiB file into a 1 MiB tmpfs with `tool` and `extra` options, and checks what a
/// user sees: exit status 1, a message that names DST and ENOSPC (never a "short write"), and
/// what is left of DST (its true size, or nothing with `--remove-partial`).
#[cfg(target_os = "linux")]
fn copy_to_a_full_disk(fs: &support::loopfs::Tmpfs, tool: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let len = 3 << 20;
    std::fs::write(&src, Rng(0x5eed ^ extra.len() as u64).bytes(len)).unwrap();
    let dst = fs.path().join(format!("{tool}-dst.bin"));
    let _ = std::fs::remove_file(&dst);
    let mut args = vec![src.as_os_str(), dst.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let done = Running::spawn(tool, args, &[]).wait(Instant::now());
    let what = format!("{tool} {extra:?}");
    let err = &done.stderr;
    assert_eq!(done.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    let dst_shown = dst.display().to_string();
    // The first line that is not a warning (a block size of 3000 bytes is warned about).
    let first = err
        .lines()
        .find(|l| !l.contains(": warning: "))
        .unwrap_or_default();
    assert!(
        first.contains(&dst_shown) && first.contains("ENOSPC"),
        "{what}: the first line does not name DST and ENOSPC:\n{err}"
    );
    assert!(!err.contains("short write"), "{what}: {err}");
    if extra.contains(&"--remove-partial") {
        assert!(!dst.exists(), "{what}: DST was not removed:\n{err}");
        assert!(
            err.contains(&format!("removed the incomplete {dst_shown}")),
            "{what}: does not say it removed DST:\n{err}"
        );
    } else {
        let size = std::fs::metadata(&dst)
            .unwrap_or_else(|e| panic!("{what}: DST is gone ({e}):\n{err}"))
            .len();
        assert!(size < len as u64, "{what}: DST has {size} bytes");
        assert!(
            err.contains(&format!("{dst_shown} is left incomplete ({size} bytes")),
            "{what}: does not say what is left of DST ({size} bytes):\n{err}"
        );
        std::fs::remove_file(&dst).unwrap();
    }
}

#[test]
#[cfg(target_os = "linux")]
fn copy_tools_on_a_full_disk_report_enospc_and_what_is_left() {
    let Some(fs) = support::loopfs::Tmpfs::new_or_skip(1 << 20) else {
        return;
    };
    for tool in copy_tools() {
        copy_to_a_full_disk(&fs, tool, &[]);
        // Blocks that do not fit the pages of the file system: a block is written in part
        // before the disk is full, and the rest must report ENOSPC.
        copy_to_a_full_disk(&fs, tool, &["--block-size", "3000", "--depth", "5"]);
        copy_to_a_full_disk(&fs, tool, &["--remove-partial"]);
        copy_to_a_full_disk(
            &fs,
            tool,
            &["--block-size", "3000", "--depth", "5", "--remove-partial"],
        );
    }
}

#[test]
fn copy_tools_explain_their_options() {
    for tool in copy_tools() {
        let done = run_ok(tool, ["--help"], &[]);
        let out = &done.stdout;
        let mut options = vec!["--block-size", "--depth", "--remove-partial", "--help"];
        if tool == "copy" {
            options.push("--direct");
        }
        for option in options {
            // Each option starts a line of its own, followed by what it does.
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(option) || l.contains(&format!(", {option}")))
                .unwrap_or_else(|| panic!("{tool} --help does not explain {option}:\n{out}"));
            let explanation = line.split_once(option).map_or("", |(_, rest)| rest.trim());
            assert!(
                explanation.split_whitespace().count() >= 3,
                "{tool} --help: no explanation for {option}:\n{out}"
            );
        }
        assert!(out.contains("Exit status"), "{tool} --help:\n{out}");
    }
}

#[test]
fn copy_tools_refuse_absurd_options_and_warn_of_slow_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, b"a small file").unwrap();
    let dst = dir.path().join("dst");
    let (src, dst) = (src.to_str().unwrap(), dst.to_str().unwrap());
    for tool in copy_tools() {
        let refused: &[(&[&str], &str)] = &[
            (&["--block-size", "0"], "--block-size 0 is out of range"),
            (&["--block-size", "1G"], "is out of range"),
            (&["--depth", "0"], "--depth 0 is out of range"),
            (&["--depth", "100000"], "--depth 100000 is out of range"),
            (&["--depth", "99999999999999999999999"], "bad --depth"),
        ];
        for (options, expected) in refused {
            let paths = [src, dst];
            let args = paths.iter().chain(options.iter());
            let done = Running::spawn(tool, args, &[]).wait(Instant::now());
            assert_eq!(
                done.status.code(),
                Some(2),
                "{tool} {options:?}: {}",
                done.stderr
            );
            assert!(
                done.stderr.contains(expected),
                "{tool} {options:?}: no {expected:?} in:\n{}",
                done.stderr
            );
            assert!(!Path::new(dst).exists(), "{tool} {options:?} created DST");
        }
        // Legal but very slow: a warning, and the copy still happens.
        let done = run_ok(
            tool,
            [src, dst, "--block-size", "1", "--depth", "1000"],
            &[],
        );
        assert!(
            done.stderr
                .contains("warning: --block-size 1 is very small"),
            "{tool}: no warning:\n{}",
            done.stderr
        );
        assert_eq!(std::fs::read(dst).unwrap(), b"a small file");
        std::fs::remove_file(dst).unwrap();
    }
}
