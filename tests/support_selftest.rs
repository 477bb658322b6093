//! Tests of the fixtures in `tests/support` themselves: that they really
//! produce slow reads, `EIO`, refused io_uring, `ENOSPC` and `O_DIRECT`
//! alignment errors.  Each test skips, with a printed reason, where its
//! facility is unavailable.
#![cfg(target_os = "linux")]

mod support;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use support::fuse::{expected, SlowFs, SlowFsOptions};
use support::loopfs::{LoopExt4, Tmpfs};

const DELAY: Duration = Duration::from_millis(200);

fn pread(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, off)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn fuse_read_is_delayed_and_correct() {
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let f = File::open(fs.path()).unwrap();
    let off = 1_234_567; // deliberately unaligned
    let start = Instant::now();
    let data = pread(&f, off, 4096).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "read took only {took:?}"
    );
    assert_eq!(data, expected(off, 4096));
    assert_eq!(fs.stats().reads, 1, "direct_io: one read, one request");

    // Short read at end of file, and EOF.
    let size = SlowFsOptions::default().size;
    fs.set_read_delay(Duration::ZERO);
    assert_eq!(pread(&f, size - 10, 4096).unwrap(), expected(size - 10, 10));
    assert!(pread(&f, size, 4096).unwrap().is_empty());
}

#[test]
fn fuse_eio_range_fails_with_eio() {
    const BAD: std::ops::Range<u64> = (1 << 20)..(1 << 20) + 4096;
    let opts = SlowFsOptions {
        read_delay: Duration::from_millis(10),
        eio_ranges: vec![BAD],
        ..Default::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let f = File::open(fs.path()).unwrap();
    let err = pread(&f, BAD.start + 100, 100).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Overlapping either end of the range fails too ...
    let err = pread(&f, BAD.start - 10, 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = pread(&f, BAD.end - 1, 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // ... but the bytes right next to it are fine.
    let before = BAD.start - 10;
    assert_eq!(pread(&f, before, 10).unwrap(), expected(before, 10));
    assert_eq!(pread(&f, BAD.end, 10).unwrap(), expected(BAD.end, 10));
}

/// Read 4 KiB at a distinct offset from each of `n` threads at once; return
/// the total time.
fn parallel_reads(fs: &support::fuse::Mounted, n: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..n {
            let path = fs.path();
            s.spawn(move || {
                let f = File::open(path).unwrap();
                let off = i * 65536;
                assert_eq!(pread(&f, off, 4096).unwrap(), expected(off, 4096));
            });
        }
    });
    start.elapsed()
}

#[test]
fn fuse_two_reads_overlap() {
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let took = parallel_reads(&fs, 2);
    assert!(took >= Duration::from_millis(190), "{took:?}");
    // The proof of overlap is the filesystem's own count; time only bounds it loosely (this
    // machine may be busy), below the 400 ms that two reads one after the other would take.
    assert_eq!(fs.stats().max_in_flight, 2, "took {took:?}");
}

#[test]
fn fuse_32_reads_overlap() {
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let took = parallel_reads(&fs, 32);
    // One after the other they would take 6.4 s.
    assert!(took < 8 * DELAY, "reads did not overlap: {took:?}");
    let stats = fs.stats();
    assert_eq!(stats.reads, 32);
    assert_eq!(stats.max_in_flight, 32);
}

#[test]
fn fuse_reads_overlap_even_with_one_fuse_thread() {
    // Delays are served off the FUSE worker threads, so even one suffices.
    let opts = SlowFsOptions {
        threads: 1,
        ..Default::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let took = parallel_reads(&fs, 8);
    // One after the other they would take 1.6 s.
    assert!(took < 4 * DELAY, "reads did not overlap: {took:?}");
    assert_eq!(fs.stats().max_in_flight, 8);
}

#[test]
fn fuse_buffered_mode_caches_until_reopen() {
    let opts = SlowFsOptions {
        direct_io: false,
        ..Default::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let timed_read = |f: &File| {
        let start = Instant::now();
        assert_eq!(pread(f, 8192, 4096).unwrap(), expected(8192, 4096));
        start.elapsed()
    };
    let f = File::open(fs.path()).unwrap();
    let first = timed_read(&f);
    assert!(first >= Duration::from_millis(190), "{first:?}");
    let cached = timed_read(&f);
    assert!(
        cached < Duration::from_millis(100),
        "not cached: {cached:?}"
    );
    drop(f);
    // No FOPEN_KEEP_CACHE: a new open drops the cached pages.
    let f = File::open(fs.path()).unwrap();
    let reopened = timed_read(&f);
    assert!(reopened >= Duration::from_millis(190), "{reopened:?}");
}

#[test]
fn fuse_drop_with_open_file_aborts_and_detaches() {
    let opts = SlowFsOptions {
        read_delay: Duration::from_millis(1),
        ..Default::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let mountpoint = fs.mountpoint().to_owned();
    let f = File::open(fs.path()).unwrap();
    let start = Instant::now();
    drop(fs); // EBUSY: must abort and detach instead, without hanging
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!mountpoint.exists(), "mount point not removed");
    // The connection is aborted: the open file is dead, not hanging.
    let err = pread(&f, 7, 3).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
}

#[test]
fn fuse_expected_matches_byte_at() {
    for off in [0u64, 1, 250, 251, 252, 1 << 20, u64::from(u32::MAX)] {
        let want: Vec<u8> = (off..off + 1000).map(support::fuse::byte_at).collect();
        assert_eq!(expected(off, 1000), want, "offset {off}");
    }
    assert!(expected(5, 0).is_empty());
}

/// Minimal Linux AIO (`io_setup`/`io_submit`/`io_getevents`) for the tests
/// below; the `libc` crate has no bindings for it.
mod kaio {
    use std::io;
    use std::os::fd::RawFd;
    use std::time::Duration;

    /// `struct iocb` from `<linux/aio_abi.h>` (little-endian layout).
    #[repr(C)]
    #[derive(Default)]
    struct Iocb {
        aio_data: u64,
        aio_key: u32,
        aio_rw_flags: i32,
        aio_lio_opcode: u16,
        aio_reqprio: i16,
        aio_fildes: u32,
        aio_buf: u64,
        aio_nbytes: u64,
        aio_offset: i64,
        aio_reserved2: u64,
        aio_flags: u32,
        aio_resfd: u32,
    }

    /// `struct io_event`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct IoEvent {
        data: u64,
        obj: u64,
        res: i64,
        res2: i64,
    }

    const IOCB_CMD_PREAD: u16 = 0;

    /// An AIO context; `io_destroy` (which waits for pending requests) on
    /// drop.
    pub struct Ctx(libc::c_ulong);

    impl Ctx {
        pub fn new(nr: u32) -> io::Result<Ctx> {
            let mut ctx: libc::c_ulong = 0;
            // SAFETY: `ctx` is a writable aio_context_t initialised to 0.
            let rc = unsafe { libc::syscall(libc::SYS_io_setup, nr, &mut ctx as *mut _) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Ctx(ctx))
        }

        /// Submit one pread per buffer, at `offset + i * stride`.
        ///
        /// # Safety
        ///
        /// Every buffer must stay alive and unaliased until its completion
        /// has been collected with [`Ctx::wait`] or `self` is dropped.
        pub unsafe fn submit_reads(
            &self,
            fd: RawFd,
            bufs: &mut [Vec<u8>],
            offset: u64,
            stride: u64,
        ) -> io::Result<()> {
            let mut cbs: Vec<Iocb> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Iocb {
                    aio_data: i as u64,
                    aio_lio_opcode: IOCB_CMD_PREAD,
                    aio_fildes: fd as u32,
                    aio_buf: b.as_mut_ptr() as u64,
                    aio_nbytes: b.len() as u64,
                    aio_offset: (offset + i as u64 * stride) as i64,
                    ..Default::default()
                })
                .collect();
            let mut ptrs: Vec<*mut Iocb> = cbs.iter_mut().map(|c| c as *mut Iocb).collect();
            // SAFETY: `ptrs` points to initialised iocbs, which the kernel
            // copies during the call; the buffers they name outlive the
            // requests per this function's contract.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.0,
                    ptrs.len() as libc::c_long,
                    ptrs.as_mut_ptr(),
                )
            };
            if n != ptrs.len() as libc::c_long {
                return Err(io::Error::other(format!(
                    "io_submit returned {n}: {}",
                    io::Error::last_os_error()
                )));
            }
            Ok(())
        }

        /// Wait up to `timeout` for `n` completions; returns each request's
        /// result (bytes or `-errno`), indexed by submission order.
        pub fn wait(&self, n: usize, timeout: Duration) -> io::Result<Vec<i64>> {
            let deadline = std::time::Instant::now() + timeout;
            let mut results = vec![i64::MIN; n];
            let mut events = vec![IoEvent::default(); n];
            let mut got = 0;
            while got < n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ts = libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                // SAFETY: `events` has room for `n - got` events and `ts` is
                // a valid timespec; both outlive the call.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_io_getevents,
                        self.0,
                        1 as libc::c_long,
                        (n - got) as libc::c_long,
                        events.as_mut_ptr(),
                        &ts as *const libc::timespec,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    // io_uring task work in the same thread can interrupt it.
                    if e.raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    return Err(e);
                }
                if r == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{got}/{n} done"),
                    ));
                }
                for ev in &events[..r as usize] {
                    results[ev.data as usize] = ev.res;
                }
                got += r as usize;
            }
            Ok(results)
        }
    }

    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a context created by io_setup and not yet
            // destroyed.
            unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
        }
    }
}

#[test]
fn fuse_kernel_aio_reads_overlap() {
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let f = File::open(fs.path()).unwrap();
    let ctx = kaio::Ctx::new(64).expect("io_setup");
    let mut bufs = vec![vec![0u8; 4096]; 32];
    let start = Instant::now();
    // SAFETY: `bufs` outlives `ctx` (declared earlier, dropped later), whose
    // drop waits for any request still pending.
    unsafe { ctx.submit_reads(f.as_raw_fd(), &mut bufs, 0, 65536) }.unwrap();
    let submitted = start.elapsed();
    let results = ctx.wait(32, Duration::from_secs(10)).unwrap();
    let took = start.elapsed();
    assert!(submitted < DELAY / 2, "io_submit blocked for {submitted:?}");
    // One after the other they would take 6.4 s.
    assert!(took < 8 * DELAY, "AIO reads did not overlap: {took:?}");
    for (i, (res, buf)) in results.iter().zip(&bufs).enumerate() {
        assert_eq!(*res, 4096, "read {i}");
        assert_eq!(buf, &expected(i as u64 * 65536, 4096), "read {i}");
    }
    assert_eq!(fs.stats().max_in_flight, 32);
}

#[test]
fn fuse_io_uring_reads_overlap() {
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let mut ring = match io_uring::IoUring::new(64) {
        Ok(ring) => ring,
        Err(e) => return support::skip(&format!("io_uring unavailable: {e}")),
    };
    let f = File::open(fs.path()).unwrap();
    let mut bufs = vec![vec![0u8; 4096]; 32];
    let start = Instant::now();
    for (i, buf) in bufs.iter_mut().enumerate() {
        let read =
            io_uring::opcode::Read::new(io_uring::types::Fd(f.as_raw_fd()), buf.as_mut_ptr(), 4096)
                .offset(i as u64 * 65536)
                .build()
                .user_data(i as u64);
        // SAFETY: `buf` stays alive and untouched until the completions
        // have been reaped below (`submit_and_wait` waits for all of them).
        unsafe { ring.submission().push(&read).unwrap() };
    }
    ring.submit_and_wait(32).unwrap();
    let took = start.elapsed();
    // One after the other they would take 6.4 s.
    assert!(took < 8 * DELAY, "io_uring reads did not overlap: {took:?}");
    let mut done = 0;
    for cqe in ring.completion() {
        let i = cqe.user_data();
        assert_eq!(cqe.result(), 4096, "read {i}");
        assert_eq!(bufs[i as usize], expected(i * 65536, 4096), "read {i}");
        done += 1;
    }
    assert_eq!(done, 32);
}

#[test]
fn fuse_drop_fails_pending_kernel_aio() {
    // With a long delay, drop the filesystem while AIO reads are pending on
    // an open file: they must fail promptly instead of waiting for the
    // delay (or, at process exit, forever).
    let mut bufs = vec![vec![0u8; 4096]; 4];
    let ctx = kaio::Ctx::new(8).expect("io_setup");
    let opts = SlowFsOptions {
        read_delay: Duration::from_secs(5),
        ..Default::default()
    };
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let f = File::open(fs.path()).unwrap();
    // SAFETY: `bufs` is declared before `ctx`, so it outlives it; `ctx`'s
    // drop waits for whatever is still pending.
    unsafe { ctx.submit_reads(f.as_raw_fd(), &mut bufs, 0, 4096) }.unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let them reach the fs
    let start = Instant::now();
    drop(fs);
    let results = ctx.wait(4, Duration::from_secs(2)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    for res in results {
        assert_eq!(
            res,
            -i64::from(libc::ECONNABORTED),
            "pending read after abort"
        );
    }
}

/// `io_uring_setup(2)` with zeroed parameters; returns the new ring's fd.
fn io_uring_setup() -> io::Result<()> {
    let mut params = [0u32; 30]; // struct io_uring_params is 120 bytes
                                 // SAFETY: `params` is a writable, zeroed buffer of the size of
                                 // `struct io_uring_params`, which the kernel reads and fills in.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just received and own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// `io_setup(2)` followed by `io_destroy(2)`.
fn linux_aio_setup() -> io::Result<()> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: `ctx` is a writable `aio_context_t` initialised to 0, as
    // io_setup requires.
    if unsafe { libc::syscall(libc::SYS_io_setup, 8u32, &mut ctx as *mut libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ctx` is the context io_setup just created.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    Ok(())
}

#[test]
fn seccomp_refuses_io_uring_but_not_aio() {
    if !support::seccomp::in_child() {
        // In the harness itself nothing is filtered (unless io_uring is
        // disabled system-wide, which doesn't invalidate the test).
        if let Err(e) = io_uring_setup() {
            eprintln!("note: io_uring unavailable even without seccomp: {e}");
        }
    }
    support::seccomp::run_without_io_uring("seccomp_refuses_io_uring_but_not_aio", || {
        let err = io_uring_setup().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        // Also refused in threads started after the filter.
        let err = std::thread::spawn(io_uring_setup)
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        linux_aio_setup().expect("io_setup must still work");
    });
}

#[test]
#[should_panic(expected = "did not run exactly one test")]
fn seccomp_child_with_wrong_test_name_is_detected() {
    if support::seccomp::in_child() {
        return; // never reached: the child runs no test at all
    }
    let out = support::seccomp::rerun_self_with_env("no_such_test", &[("UNUSED", "1")]);
    support::seccomp::assert_child_passed("no_such_test", &out);
}

/// Write 1 MiB chunks into a new file in `dir` until `ENOSPC`, which must
/// come before `limit` bytes were written.
fn fill_until_enospc(dir: &std::path::Path, limit: u64) {
    let mut f = File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(written <= limit, "no ENOSPC after {written} bytes");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written > 0, "could not write anything");
}

#[test]
fn loop_ext4_eventually_enospc() {
    let Some(fs) = LoopExt4::new_or_skip(16 << 20) else {
        return;
    };
    assert!(fs.device().starts_with("/dev/"));
    fill_until_enospc(fs.path(), 16 << 20);
}

#[test]
fn tmpfs_eventually_enospc() {
    let Some(fs) = Tmpfs::new_or_skip(4 << 20) else {
        return;
    };
    fill_until_enospc(fs.path(), 4 << 20);
}

/// A heap buffer of `len` bytes whose start is aligned to `align`.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new(len: usize, align: usize) -> Self {
        let buf = vec![0u8; len + align];
        let start = buf.as_ptr().align_offset(align);
        Aligned { buf, start }
    }
    fn at(&mut self, skew: usize, len: usize) -> &mut [u8] {
        &mut self.buf[self.start + skew..self.start + skew + len]
    }
}

#[test]
fn loop_ext4_o_direct_enforces_alignment() {
    let Some(fs) = LoopExt4::new_or_skip(16 << 20) else {
        return;
    };
    let path = fs.path().join("direct");
    std::fs::write(&path, expected(0, 16384)).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let mut buf = Aligned::new(8192, 4096);

    assert_eq!(f.read_at(buf.at(0, 4096), 4096).unwrap(), 4096);
    assert_eq!(buf.at(0, 4096), &expected(4096, 4096)[..]);

    let err = f.read_at(buf.at(1, 4096), 4096).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EINVAL),
        "misaligned buffer: {err}"
    );
    let err = f.read_at(buf.at(0, 4096), 4097).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EINVAL),
        "misaligned offset: {err}"
    );
}

#[test]
fn raise_nofile_limit_reaches_hard_limit() {
    let new = support::raise_nofile_limit().unwrap();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    assert_eq!(lim.rlim_cur, new);
    assert!(lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_cur == lim.rlim_max);
}
