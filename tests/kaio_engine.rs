//! The kernel AIO engine (`Backend::KernelAio`): buffered I/O must never block `submit` (it goes
//! to the kernel with `RWF_NOWAIT`, and to worker threads when the kernel would block), O_DIRECT
//! goes through the kernel, and cancel tells the truth.
//!
//! Every test forces the backend first: the tests share one process, and the backend cannot
//! change once an operation has used it.
#![cfg(target_os = "linux")]

mod support;

use std::{
    fs::{File, OpenOptions},
    io::{IoSlice, IoSliceMut, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{FileExt, OpenOptionsExt},
    },
    path::PathBuf,
    pin::Pin,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{
    AioCancelStat, AioFsyncMode, Backend, Errno, Fsync, LioCbBuilder, LioError, LioOpcode, ReadAt,
    ReadvAt, SourceApi, WriteAt, WritevAt,
};
use support::fuse::{expected, SlowFs, SlowFsOptions};

const TOKEN: Token = Token(42);

fn use_kaio() {
    mio_aio::set_backend(Backend::KernelAio).expect("another backend is in use");
    assert_eq!(mio_aio::backend().unwrap(), Backend::KernelAio);
}

/// The byte at `off` of the test files: never aligned with pages or blocks.
fn byte_at(off: u64) -> u8 {
    (off % 251) as u8
}

fn pattern(off: u64, len: usize) -> Vec<u8> {
    (off..off + len as u64).map(byte_at).collect()
}

/// A directory on a real (block-backed) filesystem, where O_DIRECT and the page cache behave as
/// on a disk: /var/tmp if it exists, else the current directory. /tmp may be a tmpfs.
fn disk_dir() -> PathBuf {
    let var_tmp = PathBuf::from("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp
    } else {
        std::env::current_dir().unwrap()
    }
}

/// A file of `len` pattern bytes on disk, flushed; its pages are still cached.
fn disk_file(len: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new_in(disk_dir()).unwrap();
    let chunk = 1 << 20;
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        f.write_all(&pattern(off as u64, n)).unwrap();
        off += n;
    }
    f.as_file().sync_all().unwrap();
    f
}

/// Drops the file's (clean) pages from the page cache.
fn evict(f: &File) {
    // SAFETY: posix_fadvise only takes an fd and a range.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// The fraction of the file's pages in the page cache (mincore).
fn resident(f: &File) -> f64 {
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0.0;
    }
    // SAFETY: maps the file read-only and shared; the mapping is only passed to mincore and
    // unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        let r = libc::mincore(p, len, vec.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(r, 0, "mincore");
        vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / vec.len() as f64
    }
}

/// Waits up to 10 s for `token`'s event; returns every token seen meanwhile and in the next
/// 20 ms (so a duplicate event shows up).
fn wait_event(poll: &mut Poll, token: Token) -> Vec<Token> {
    let mut events = Events::with_capacity(64);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(&token) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no event within 10 s");
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen.extend(events.iter().map(|e| e.token()));
    }
    loop {
        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen.extend(events.iter().map(|e| e.token()));
        return seen;
    }
}

fn expect_one_event(poll: &mut Poll, token: Token) {
    assert_eq!(
        wait_event(poll, token),
        vec![token],
        "exactly one event with the token"
    );
}

/// An `align`-aligned, `len`-byte window of a fresh zeroed buffer.
fn aligned(storage: &mut Vec<u8>, align: usize, len: usize) -> &mut [u8] {
    *storage = vec![0u8; len + align];
    let skip = storage.as_ptr().align_offset(align);
    &mut storage[skip..skip + len]
}

/// Reads `buf.len()` bytes at `off` through mio-aio; returns the result and how long `submit`
/// took.
fn read_through(f: &File, off: u64, buf: &mut [u8]) -> (Result<usize, Errno>, Duration) {
    let mut poll = Poll::new().unwrap();
    let mut op = ReadAt::read_at(f.as_fd(), off, buf, 0);
    poll.registry()
        .register(&mut op, TOKEN, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    let start = Instant::now();
    op.as_mut().submit().unwrap();
    let took = start.elapsed();
    expect_one_event(&mut poll, TOKEN);
    (op.as_mut().aio_return(), took)
}

#[test]
fn cached_buffered_read() {
    use_kaio();
    let f = disk_file(64 << 10);
    let mut buf = vec![0u8; 10_000];
    let (res, _) = read_through(f.as_file(), 1000, &mut buf);
    assert_eq!(res, Ok(10_000));
    assert_eq!(buf, pattern(1000, 10_000));
}

#[test]
fn readv_and_short_read_at_end_of_file() {
    use_kaio();
    let f = disk_file(5000);
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = (vec![0u8; 3000], vec![0u8; 4096]);
    {
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        let mut op = support::start(
            &poll,
            ReadvAt::readv_at(f.as_file().as_fd(), 100, &mut bufs, 0),
            TOKEN,
        );
        expect_one_event(&mut poll, TOKEN);
        assert_eq!(op.as_mut().aio_return(), Ok(4900));
    }
    assert_eq!(a, pattern(100, 3000));
    assert_eq!(&b[..1900], &pattern(3100, 1900)[..]);

    // The end of file, not cached: RWF_NOWAIT says EAGAIN, the pool reads the 100 bytes.
    evict(f.as_file());
    let mut buf = vec![0u8; 4096];
    let (res, _) = read_through(f.as_file(), 4900, &mut buf);
    assert_eq!(res, Ok(100));
    assert_eq!(&buf[..100], &pattern(4900, 100)[..]);
    // At and past the end.
    assert_eq!(read_through(f.as_file(), 5000, &mut buf).0, Ok(0));
    assert_eq!(read_through(f.as_file(), 1 << 20, &mut buf).0, Ok(0));
}

/// The point of RWF_NOWAIT: a buffered read that must wait for the disk is not done inside
/// `io_submit` (50 ms or more for 64 MiB), but handed to a worker.
#[test]
fn uncached_large_read_does_not_block_submit() {
    use_kaio();
    const LEN: usize = 64 << 20;
    let f = disk_file(LEN);
    // What blocking costs here: a plain `pread` of the whole uncached file.
    evict(f.as_file());
    let mut buf = vec![0u8; LEN];
    let t = std::time::Instant::now();
    std::os::unix::fs::FileExt::read_exact_at(f.as_file(), &mut buf, 0).unwrap();
    let blocking = t.elapsed();
    if blocking < Duration::from_millis(20) {
        return support::skip(&format!("an uncached read took only {blocking:?}"));
    }
    evict(f.as_file());
    let cached = resident(f.as_file());
    if cached > 0.05 {
        return support::skip(&format!(
            "could not evict the file ({:.0}% cached)",
            cached * 100.0
        ));
    }
    buf.fill(0);
    let (res, took) = read_through(f.as_file(), 0, &mut buf);
    assert_eq!(res, Ok(LEN));
    assert!(buf == pattern(0, LEN), "data differs");
    assert!(
        took < blocking / 2,
        "submit took {took:?}; a blocking read takes {blocking:?}"
    );
}

/// A NOWAIT read stops where the cached pages end and returns a short count; the engine must
/// not report that as the result.
#[test]
fn partly_cached_read_is_not_short() {
    use_kaio();
    const LEN: usize = 8 << 20;
    let f = disk_file(LEN);
    evict(f.as_file());
    let mut head = vec![0u8; 1 << 20];
    f.as_file().read_exact_at(&mut head, 0).unwrap();
    let mut buf = vec![0u8; LEN];
    let (res, _) = read_through(f.as_file(), 0, &mut buf);
    assert_eq!(res, Ok(LEN));
    assert!(buf == pattern(0, LEN), "data differs");
}

#[test]
fn o_direct_aligned_read() {
    use_kaio();
    let tmp = disk_file(1 << 20);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp.path())
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return support::skip("no O_DIRECT on this filesystem")
        }
        Err(e) => panic!("open O_DIRECT: {e}"),
    };
    evict(&f);
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, 4096, 64 << 10);
    let (res, _) = read_through(&f, 8192, buf);
    assert_eq!(res, Ok(64 << 10));
    assert!(*buf == pattern(8192, 64 << 10)[..], "data differs");

    // A misaligned O_DIRECT read fails, and the error comes back as the result.
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, 4096, 4097);
    let (res, _) = read_through(&f, 0, &mut buf[1..]);
    assert_eq!(res, Err(Errno::EINVAL));
}

#[test]
fn write_then_fsync() {
    use_kaio();
    let tmp = tempfile::NamedTempFile::new_in(disk_dir()).unwrap();
    let f = tmp.as_file();
    let mut poll = Poll::new().unwrap();
    let data = pattern(0, 1 << 20);
    {
        let mut op = support::start(&poll, WriteAt::write_at(f.as_fd(), 0, &data, 0), TOKEN);
        expect_one_event(&mut poll, TOKEN);
        assert_eq!(op.as_mut().aio_return(), Ok(1 << 20));
    }
    {
        let tail = pattern(1 << 20, 300);
        let bufs = [IoSlice::new(&tail[..100]), IoSlice::new(&tail[100..])];
        let mut op = support::start(
            &poll,
            WritevAt::writev_at(f.as_fd(), 1 << 20, &bufs, 0),
            TOKEN,
        );
        expect_one_event(&mut poll, TOKEN);
        assert_eq!(op.as_mut().aio_return(), Ok(300));
    }
    for mode in [AioFsyncMode::O_SYNC, AioFsyncMode::O_DSYNC] {
        let mut op = support::start(&poll, Fsync::fsync(f.as_fd(), mode, 0), TOKEN);
        expect_one_event(&mut poll, TOKEN);
        assert_eq!(op.as_mut().aio_return(), Ok(()));
    }
    let content = std::fs::read(tmp.path()).unwrap();
    assert!(
        content == pattern(0, (1 << 20) + 300),
        "file content differs"
    );
}

/// Files without RWF_NOWAIT support (tmpfs here) are refused by `io_submit` itself; the pool
/// runs them. fsync of a pipe is refused too (EINVAL), and that error is the result.
#[test]
fn files_refusing_nowait_still_work() {
    use_kaio();
    let mut poll = Poll::new().unwrap();
    if let Ok(mut f) = tempfile::tempfile_in("/dev/shm") {
        f.write_all(&pattern(0, 8192)).unwrap();
        let mut buf = vec![0u8; 5000];
        let (res, _) = read_through(&f, 3000, &mut buf);
        assert_eq!(res, Ok(5000));
        assert_eq!(buf, pattern(3000, 5000));
        let mut op = support::start(&poll, WriteAt::write_at(f.as_fd(), 8192, b"xyz", 0), TOKEN);
        expect_one_event(&mut poll, TOKEN);
        assert_eq!(op.as_mut().aio_return(), Ok(3));
    }
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new fds into the array, which the OwnedFds then own.
    let (r, _w) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut op = support::start(
        &poll,
        Fsync::fsync(r.as_fd(), AioFsyncMode::O_SYNC, 0),
        TOKEN,
    );
    expect_one_event(&mut poll, TOKEN);
    assert_eq!(op.as_mut().aio_return(), Err(Errno::EINVAL));
}

/// Cancels a read in flight and checks that the status matches the result, and that the one
/// event still arrives.
fn cancel_and_check(f: &File, len: usize) -> AioCancelStat {
    let mut poll = Poll::new().unwrap();
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, 4096, len);
    let stat;
    {
        let mut op = support::start(&poll, ReadAt::read_at(f.as_fd(), 0, buf, 0), TOKEN);
        stat = op.as_mut().cancel().unwrap();
        expect_one_event(&mut poll, TOKEN);
        let res = op.as_mut().aio_return();
        match stat {
            AioCancelStat::AioCanceled => assert_eq!(res, Err(Errno::ECANCELED)),
            AioCancelStat::AioNotCanceled | AioCancelStat::AioAllDone => assert_eq!(res, Ok(len)),
        }
    }
    if stat != AioCancelStat::AioCanceled {
        assert!(*buf == pattern(0, len)[..], "data differs");
    }
    stat
}

#[test]
fn cancel_in_flight_read() {
    use_kaio();
    const LEN: usize = 16 << 20;
    let tmp = disk_file(LEN);
    // O_DIRECT: in the kernel, which cannot cancel file reads.
    if let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp.path())
    {
        evict(&f);
        let stat = cancel_and_check(&f, LEN);
        assert_ne!(stat, AioCancelStat::AioCanceled);
    }
    // Buffered and uncached: with a worker thread (queued, running, or done).
    evict(tmp.as_file());
    cancel_and_check(tmp.as_file(), LEN);
}

/// Dropping an operation in flight waits for it, whichever way it went.
#[test]
fn drop_in_flight_reads() {
    use_kaio();
    const LEN: usize = 16 << 20;
    let tmp = disk_file(LEN);
    let poll = Poll::new().unwrap();
    for _ in 0..3 {
        evict(tmp.as_file());
        let mut buf = vec![0u8; LEN];
        let op = support::start(
            &poll,
            ReadAt::read_at(tmp.as_file().as_fd(), 0, &mut buf, 0),
            TOKEN,
        );
        drop(op);
        // The read ran to the end (nothing cancels it once started) or was cancelled whole.
        assert!(buf == pattern(0, LEN) || buf.iter().all(|&b| b == 0));
    }
}

#[test]
fn many_reads_each_with_its_own_event() {
    use_kaio();
    const N: usize = 300;
    let tmp = disk_file(N * 4096);
    let f = tmp.as_file();
    let mut poll = Poll::new().unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..N).map(|_| vec![0u8; 4096]).collect();
    // Half cached, half not: some finish in the kernel, some on workers. (No readahead, so
    // caching the even pages leaves the odd ones out.)
    evict(f);
    // SAFETY: posix_fadvise only takes an fd and a range.
    assert_eq!(
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) },
        0
    );
    for i in (0..N).step_by(2) {
        f.read_exact_at(&mut bufs[i], (i * 4096) as u64).unwrap();
        bufs[i].fill(0);
    }
    let mut ops: Vec<Pin<Box<ReadAt>>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            let op = support::start(
                &poll,
                ReadAt::read_at(f.as_fd(), (i * 4096) as u64, b, 0),
                Token(1000 + i),
            );
            op
        })
        .collect();
    let mut events = Events::with_capacity(1024);
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} events",
            seen.len()
        );
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        for ev in events.iter() {
            let i = ev.token().0 - 1000;
            assert!(seen.insert(i), "token {i} reported twice");
            assert_eq!(ops[i].as_mut().aio_return(), Ok(4096));
        }
    }
    drop(ops);
    for (i, b) in bufs.iter().enumerate() {
        assert!(*b == pattern((i * 4096) as u64, 4096), "buffer {i} differs");
    }
}

/// A batch larger than the kernel context (4096 requests): cached reads complete inside
/// `io_submit`, and their events fill the ring until reaped.
#[test]
fn batch_larger_than_the_context() {
    use_kaio();
    const N: usize = 10_000;
    const LEN: usize = 512;
    let tmp = disk_file(N * LEN);
    let f = tmp.as_file();
    let mut poll = Poll::new().unwrap();
    let mut storage = vec![0u8; N * LEN];
    let mut builder = LioCbBuilder::with_capacity(N + 1);
    for (i, chunk) in storage.chunks_mut(LEN).enumerate() {
        builder =
            builder.emplace_mut_slice(f.as_fd(), (i * LEN) as u64, chunk, 0, LioOpcode::LIO_READ);
    }
    let nothing = [0u8; 0];
    builder = builder.emplace_slice(f.as_fd(), 0, &nothing, 0, LioOpcode::LIO_NOP);
    let mut lio = builder.finish();
    poll.registry()
        .register(&mut lio, TOKEN, mio_aio::LIO)
        .unwrap();
    let mut res = lio.submit();
    loop {
        match res {
            Ok(()) => break,
            Err(LioError::EINCOMPLETE) => {
                expect_one_event(&mut poll, TOKEN);
                res = lio.resubmit();
            }
            Err(LioError::EAGAIN) => {
                std::thread::sleep(Duration::from_millis(10));
                res = lio.resubmit();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    expect_one_event(&mut poll, TOKEN);
    let results: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results.len(), N + 1);
    assert!(results[..N].iter().all(|r| *r == Ok(LEN as isize)));
    assert_eq!(results[N], Ok(0));
    assert!(storage == pattern(0, N * LEN), "data differs");
}

/// A FUSE read takes 200 ms; it must not be done inside `submit`, with the page cache
/// (buffered) or without it (direct I/O, where the kernel has no NOWAIT support).
#[test]
fn slow_fuse_reads_do_not_block_submit() {
    use_kaio();
    for direct_io in [true, false] {
        let opts = SlowFsOptions {
            direct_io,
            ..SlowFsOptions::default()
        };
        let opts_delay = opts.read_delay;
        let Some(fs) = SlowFs::mount_or_skip(opts) else {
            return;
        };
        {
            let f = File::open(fs.path()).unwrap();
            let mut buf = vec![0u8; 100_000];
            let (res, took) = read_through(&f, 12_345, &mut buf);
            assert_eq!(res, Ok(100_000));
            assert_eq!(buf, expected(12_345, 100_000));
            // A blocked submit takes at least one read delay.
            assert!(
                took < opts_delay / 2,
                "direct_io {direct_io}: submit took {took:?}"
            );
        }
        drop(fs);
    }
}

/// O_DIRECT reads stay in flight in the kernel: more of them than the context holds (measured:
/// io_submit filled it after about 8500) make the engine reap finished ones for room.
#[test]
fn o_direct_batch_larger_than_the_context() {
    use_kaio();
    const N: usize = 12_000;
    const LEN: usize = 4096;
    let tmp = disk_file(N * LEN);
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp.path())
    else {
        return support::skip("no O_DIRECT");
    };
    evict(&f);
    let mut poll = Poll::new().unwrap();
    let mut storage = Vec::new();
    let all = aligned(&mut storage, 4096, N * LEN);
    let mut builder = LioCbBuilder::with_capacity(N);
    for (i, chunk) in all.chunks_mut(LEN).enumerate() {
        builder =
            builder.emplace_mut_slice(f.as_fd(), (i * LEN) as u64, chunk, 0, LioOpcode::LIO_READ);
    }
    let mut lio = builder.finish();
    poll.registry()
        .register(&mut lio, TOKEN, mio_aio::LIO)
        .unwrap();
    let mut res = lio.submit();
    loop {
        match res {
            Ok(()) => break,
            Err(LioError::EINCOMPLETE) => {
                expect_one_event(&mut poll, TOKEN);
                res = lio.resubmit();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    expect_one_event(&mut poll, TOKEN);
    let results: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert!(results.iter().all(|r| *r == Ok(LEN as isize)));
    assert!(*all == pattern(0, N * LEN)[..], "data differs");
}
