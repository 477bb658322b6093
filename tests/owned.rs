//! Owned-buffer operations (`mio_aio::owned`) on a real `mio::Poll`: every kind gives its
//! result and buffers back; dropping one in flight returns at once and its buffer is freed
//! when the kernel is done; leaking one corrupts nothing; `O_DIRECT` with `AlignedBuf`; every
//! Linux backend (each in a child process, `MIO_AIO_BACKEND`).

// The FUSE, leak and O_DIRECT tests (and their helpers) are Linux-only.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

mod owned_common;
mod support;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{
    owned::{self, AlignedBuf},
    AioFsyncMode, Errno,
};

use owned_common::Tracked;

/// Waits (at most 10 s) for `flag`; returns how long it took.
fn wait_until_set(flag: &AtomicBool) -> Duration {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(10), "never freed");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// Registers `op`, submits it, waits for its one event and takes its result.
fn run<T, B, F>(
    poll: &mut Poll,
    mut op: owned::OwnedSource<T, B, F>,
    token: Token,
) -> (std::io::Result<T::Output>, B)
where
    T: owned::Kind,
    B: Send + 'static,
    F: Send + 'static,
{
    poll.registry()
        .register(&mut op, token, mio_aio::AIO)
        .unwrap();
    op.submit().unwrap();
    support::expect_one_event(poll, token);
    let done = op.take_result().expect("done after its event");
    assert!(op.take_result().is_none(), "the buffers come back once");
    done
}

fn all_kinds() {
    let mut poll = Poll::new().unwrap();
    let file = Arc::new(tempfile::tempfile().unwrap());

    let op = owned::WriteAt::write_at(file.clone(), 0, b"abcdef".to_vec(), 0);
    let (r, buf) = run(&mut poll, op, Token(1));
    assert_eq!((r.unwrap(), buf), (6, b"abcdef".to_vec()));

    let bufs: Vec<Box<[u8]>> = vec![Box::from(&b"123"[..]), Box::from(&b"456789"[..])];
    let op = owned::WritevAt::writev_at(file.clone(), 6, bufs, 0);
    let (r, bufs) = run(&mut poll, op, Token(2));
    assert_eq!(r.unwrap(), 9);
    assert_eq!(bufs.concat(), b"123456789");

    let op = owned::WriteAt::write_at(file.clone(), 15, &b"!"[..], 0);
    assert_eq!(run(&mut poll, op, Token(3)).0.unwrap(), 1);

    let op = owned::Fsync::fsync(file.clone(), AioFsyncMode::O_SYNC, 0);
    let (r, ()) = run(&mut poll, op, Token(4));
    r.unwrap();

    let op = owned::ReadAt::read_at(file.clone(), 2, vec![0u8; 4], 0);
    let (r, buf) = run(&mut poll, op, Token(5));
    assert_eq!((r.unwrap(), buf), (4, b"cdef".to_vec()));

    // A short read at the end of the file: the buffer keeps its length, the count says.
    let op = owned::ReadAt::read_at(file.clone(), 14, vec![0xeeu8; 4], 0);
    let (r, buf) = run(&mut poll, op, Token(6));
    assert_eq!((r.unwrap(), buf), (2, vec![b'9', b'!', 0xee, 0xee]));

    let op = owned::ReadvAt::readv_at(file.clone(), 2, vec![vec![0u8; 4], vec![0u8; 2]], 0);
    let (r, bufs) = run(&mut poll, op, Token(7));
    assert_eq!(r.unwrap(), 6);
    assert_eq!(bufs, [b"cdef".to_vec(), b"12".to_vec()]);

    // An error comes back with the buffer: writing to a read-only descriptor.
    let ro = std::fs::File::open("/dev/null").unwrap();
    let op = owned::WriteAt::write_at(ro, 0, vec![1u8; 8], 0);
    let mut op = op;
    poll.registry()
        .register(&mut op, Token(8), mio_aio::AIO)
        .unwrap();
    let (r, buf) = match op.submit() {
        // Some systems refuse it at submission: the buffer still comes back.
        Err(e) => {
            assert_eq!(e, Errno::EBADF);
            op.take_result().expect("never submitted")
        }
        Ok(()) => {
            support::wait_for(&mut poll, Token(8));
            op.take_result().expect("done after its event")
        }
    };
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(buf, vec![1u8; 8]);
}

#[test]
fn every_kind_gives_result_and_buffers_back() {
    all_kinds();
}

#[cfg(feature = "bytes")]
#[test]
fn bytes_buffers() {
    use bytes::{Bytes, BytesMut};
    let mut poll = Poll::new().unwrap();
    let file = Arc::new(tempfile::tempfile().unwrap());
    let op = owned::WriteAt::write_at(file.clone(), 0, Bytes::from_static(b"hello bytes"), 0);
    assert_eq!(run(&mut poll, op, Token(1)).0.unwrap(), 11);
    let mut buf = BytesMut::with_capacity(64);
    buf.resize(5, 0);
    let op = owned::ReadAt::read_at(file.clone(), 6, buf, 0);
    let (r, buf) = run(&mut poll, op, Token(2));
    assert_eq!(r.unwrap(), 5);
    assert_eq!(&buf[..], b"bytes");
}

#[test]
fn never_submitted_gives_the_buffer_back() {
    let file = tempfile::tempfile().unwrap();
    let mut op = owned::ReadAt::read_at(file, 0, vec![7u8; 3], 0);
    let (r, buf) = op.take_result().expect("not in flight");
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert_eq!(buf, [7, 7, 7]);
    // Spent: the other methods fail, and dropping it is harmless.
    assert_eq!(op.submit(), Err(Errno::EINVAL));
    assert!(op.take_result().is_none());
}

#[test]
fn wrong_interest_is_an_error() {
    let poll = Poll::new().unwrap();
    let file = tempfile::tempfile().unwrap();
    let mut op = owned::ReadAt::read_at(file, 0, vec![0u8; 3], 0);
    let e = poll
        .registry()
        .register(&mut op, Token(1), mio::Interest::WRITABLE)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// A 200 ms FUSE read is dropped just after submission: the drop returns in a small fraction
/// of the read's time, the buffer stays alive while the kernel may still write it, and is
/// freed once the read has ended. The process keeps working, and the dropped operation's
/// token comes back at most once.
#[cfg(target_os = "linux")]
#[test]
fn drop_in_flight_returns_at_once_and_frees_later() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let opts = SlowFsOptions::default();
    let delay = opts.read_delay;
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
    let mut poll = Poll::new().unwrap();
    let (buf, freed) = Tracked::new(4096);
    let reads_before = fs.stats().reads;
    let mut op = owned::ReadAt::read_at(file.clone(), 8192, buf, 0);
    poll.registry()
        .register(&mut op, Token(1), mio_aio::AIO)
        .unwrap();
    let submitted = Instant::now();
    op.submit().unwrap();
    assert!(op.is_running(), "a 200 ms read cannot be done already");
    let t = Instant::now();
    drop(op);
    let took = t.elapsed();
    // Whether the read reached the file system, which answers `delay` after receiving it:
    // then the kernel writes the buffer at that time, and it must live until then.
    let reached_fs = fs.stats().reads > reads_before;
    println!("drop took {took:?}; orphans: {}", owned::orphan_count());
    assert!(
        took < delay / 4,
        "dropping took {took:?}: it waited for the {delay:?} read"
    );
    wait_until_set(&freed);
    let freed_after = submitted.elapsed();
    println!("freed {freed_after:?} after submission (read reached the fs: {reached_fs})");
    if reached_fs {
        assert!(
            freed_after >= delay * 3 / 4,
            "the buffer was freed {freed_after:?} after submission, before the fs answered"
        );
    }

    // The token comes back at most once; then the program just ignores it.
    let mut events = Events::with_capacity(8);
    let mut seen = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen += events.iter().filter(|e| e.token() == Token(1)).count();
    }
    assert!(seen <= 1, "the dropped operation's token came {seen} times");

    // Still working: a new read on the same file completes with its data.
    let op = owned::ReadAt::read_at(file.clone(), 0, vec![0u8; 16], 0);
    let (r, buf) = run(&mut poll, op, Token(2));
    assert_eq!(r.unwrap(), 16);
    assert_eq!(buf, support::fuse::expected(0, 16));
}

/// One dropped read that never ends (a pipe without data) does not hold up the others: a FUSE
/// read dropped after it is freed once it ends; the pipe read is freed once it ends too.
#[cfg(target_os = "linux")]
#[test]
fn a_never_ending_orphan_does_not_hold_up_the_others() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let (reader, writer) = std::io::pipe().unwrap();
    let (pipe_buf, pipe_freed) = Tracked::new(16);
    let mut pipe_op = owned::ReadAt::read_at(reader, 0, pipe_buf, 0);
    pipe_op.submit().unwrap();
    let pipe_running = pipe_op.is_running();
    drop(pipe_op);

    let file = std::fs::File::open(fs.path()).unwrap();
    let (buf, freed) = Tracked::new(4096);
    let mut op = owned::ReadAt::read_at(file, 0, buf, 0);
    op.submit().unwrap();
    drop(op);
    let after = wait_until_set(&freed);
    println!("FUSE read freed {after:?} after its drop; pipe read running: {pipe_running}");
    // Ends the pipe read (end of file), if the kernel did not cancel it.
    drop(writer);
    wait_until_set(&pipe_freed);
}

/// Many reads dropped in flight are all freed once they end, and the reaper's count goes back
/// to zero (in a child process, so that other tests' orphans do not count).
#[cfg(target_os = "linux")]
#[test]
fn many_orphans_are_all_freed() {
    support::in_child("many_orphans_are_all_freed", &[], || {
        use support::fuse::{SlowFs, SlowFsOptions};
        let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
            return;
        };
        let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
        let t = Instant::now();
        let flags: Vec<_> = (0..200u64)
            .map(|i| {
                let (buf, freed) = Tracked::new(512);
                let mut op = owned::ReadAt::read_at(file.clone(), i * 4096, buf, 0);
                op.submit().unwrap();
                freed
            })
            .collect();
        println!("200 reads submitted and dropped in {:?}", t.elapsed());
        for freed in &flags {
            wait_until_set(freed);
        }
        let start = Instant::now();
        while owned::orphan_count() != 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "orphans left");
            std::thread::sleep(Duration::from_millis(1));
        }
        println!("all freed {:?} after the first submission", t.elapsed());
    });
}

/// A child of `fork` inherits the orphan list but not the reaper thread: its own orphans are
/// freed all the same (in a child process of the test, so that the fork copies little).
#[cfg(target_os = "linux")]
#[test]
fn orphans_of_a_forked_child_are_freed() {
    support::in_child("orphans_of_a_forked_child_are_freed", &[], || {
        use support::fuse::{SlowFs, SlowFsOptions};
        let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
            return;
        };
        let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
        // Start the parent's reaper, and let it go idle (not holding its lock at the fork).
        let (buf, freed) = Tracked::new(512);
        let mut op = owned::ReadAt::read_at(file.clone(), 0, buf, 0);
        op.submit().unwrap();
        drop(op);
        wait_until_set(&freed);
        std::thread::sleep(Duration::from_millis(100));

        // SAFETY: the child only runs this crate's code and then `_exit`s; it never returns
        // into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let (buf, freed) = Tracked::new(512);
            let mut op = owned::ReadAt::read_at(file.clone(), 4096, buf, 0);
            let submitted = op.submit().is_ok() && op.is_running();
            drop(op);
            let start = Instant::now();
            while !freed.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let code = if submitted && freed.load(Ordering::SeqCst) {
                0
            } else {
                1
            };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child's orphan was not freed (status {status})"
        );
    });
}

/// `mem::forget` of a read in flight: the kernel's late write lands in the leaked buffer, not
/// in memory allocated afterwards.
#[cfg(target_os = "linux")]
#[test]
fn leak_in_flight_corrupts_nothing() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let opts = SlowFsOptions::default();
    let delay = opts.read_delay;
    let Some(fs) = SlowFs::mount_or_skip(opts) else {
        return;
    };
    let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
    let mut poll = Poll::new().unwrap();
    const N: usize = 8;
    for i in 0..N {
        let mut op = owned::ReadAt::read_at(file.clone(), (i * 4096) as u64, vec![0u8; 4096], 0);
        poll.registry()
            .register(&mut op, Token(100 + i), mio_aio::AIO)
            .unwrap();
        op.submit().unwrap();
        assert!(op.is_running());
        std::mem::forget(op);
    }
    // Memory allocated after the leak, of the same size as the leaked buffers (so the
    // allocator would hand out their blocks if they had been freed).
    let sentinels: Vec<Vec<u8>> = (0..256).map(|_| vec![0xa5u8; 4096]).collect();
    std::thread::sleep(delay * 2);
    // Wait until the reads have ended (their events), so that any late write has happened.
    let mut events = Events::with_capacity(64);
    let mut ended = 0;
    let start = Instant::now();
    while ended < N && start.elapsed() < Duration::from_secs(10) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        ended += events.iter().filter(|e| e.token().0 >= 100).count();
    }
    assert_eq!(ended, N, "every leaked read still reports its end");
    for s in &sentinels {
        assert!(
            s.iter().all(|&b| b == 0xa5),
            "memory allocated later was written"
        );
    }
    let op = owned::ReadAt::read_at(file.clone(), 0, vec![0u8; 32], 0);
    let (r, buf) = run(&mut poll, op, Token(1));
    assert_eq!(r.unwrap(), 32);
    assert_eq!(buf, support::fuse::expected(0, 32));
}

/// `O_DIRECT` with `AlignedBuf`, on the disk file system of the build directory.
#[cfg(target_os = "linux")]
#[test]
fn o_direct_with_an_aligned_buffer() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("direct");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&[0u8; 1])
        .unwrap();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => Arc::new(f),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            support::skip(&format!(
                "O_DIRECT not supported on {}: {e}",
                dir.path().display()
            ));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let align = AlignedBuf::alignment_for(&*file).unwrap();
    assert!(align.is_power_of_two() && align >= 512, "alignment {align}");
    let mut out = AlignedBuf::for_file(&*file, 3 * align - 7).unwrap();
    assert_eq!(out.len(), 3 * align);
    assert_eq!(out.as_ptr() as usize % align, 0);
    for (i, b) in out.iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    let mut poll = Poll::new().unwrap();
    let op = owned::WriteAt::write_at(file.clone(), align as u64, out, 0);
    let (r, out) = run(&mut poll, op, Token(1));
    assert_eq!(r.unwrap(), 3 * align);
    let op = owned::ReadAt::read_at(
        file.clone(),
        align as u64,
        AlignedBuf::for_file(&*file, 3 * align).unwrap(),
        0,
    );
    let (r, back) = run(&mut poll, op, Token(2));
    assert_eq!(r.unwrap(), 3 * align);
    assert!(back[..] == out[..], "O_DIRECT data differs");
    // A misaligned offset is refused by the kernel, and the buffer still comes back.
    let op = owned::ReadAt::read_at(file.clone(), 1, back, 0);
    let mut op = op;
    poll.registry()
        .register(&mut op, Token(3), mio_aio::AIO)
        .unwrap();
    let (r, back) = match op.submit() {
        Err(e) => (Err(std::io::Error::from(e)), op.take_result().unwrap().1),
        Ok(()) => {
            support::wait_for(&mut poll, Token(3));
            op.take_result().unwrap()
        }
    };
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert_eq!(back.len(), 3 * align);
}

#[test]
fn aligned_buf_rejects_a_bad_alignment() {
    let e = AlignedBuf::new(10, 3).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let empty = AlignedBuf::new(0, 4096).unwrap();
    assert!(empty.is_empty());
}

/// The kinds again, in a child process per Linux backend.
#[cfg(target_os = "linux")]
mod every_backend {
    use super::*;

    fn on(backend: &str, test: &str) {
        support::in_child(test, &[("MIO_AIO_BACKEND", backend)], || {
            // A backend the system refuses (io_uring under `kernel.io_uring_disabled`, as in
            // one pass of CI) is skipped, with the reason printed.
            match mio_aio::backend() {
                Ok(b) => assert_eq!(b.name(), backend),
                Err(e) => return support::skip(&format!("{backend} is refused here: {e}")),
            }
            all_kinds();
        });
    }

    #[test]
    fn io_uring() {
        on("io_uring", "every_backend::io_uring");
    }

    #[test]
    fn kaio() {
        on("kaio", "every_backend::kaio");
    }

    #[test]
    fn threads() {
        on("threads", "every_backend::threads");
    }
}
