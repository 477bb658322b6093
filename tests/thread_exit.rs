//! Operations submitted from a thread that exits right after `submit`: their event still
//! arrives in the loop that registered them, with the operation's true result.
//!
//! io_uring ties a request to the thread that submitted it, and finishes parts of it (a
//! completion from its workers, a buffered read retried once the page is read, the linked write
//! that signals the event) as work run on that thread. These tests pin that a thread's exit
//! loses neither the event nor the result. Kernel AIO and the thread pool have no such tie: the
//! same tests pass there too.
#![cfg(target_os = "linux")]

mod support;

use std::{
    io::{self, Read, Seek, SeekFrom, Write},
    os::fd::{AsFd, AsRawFd},
    pin::Pin,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{Fsync, ReadAt, SourceApi, WriteAt};

const MIB: usize = 1 << 20;

/// How long a test waits for an event before it fails (an event lost to the thread's exit
/// would otherwise make `poll(None)` wait forever).
const EVENT_BOUND: Duration = Duration::from_secs(10);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// A file on the temporary directory's file system (ext4 on the test machine), so that writes,
/// syncs and uncached reads take the kernel's real paths.
fn file_with(content: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    f
}

/// Polls until `token`'s event arrives, at most `EVENT_BOUND`; panics with `what` otherwise.
fn expect_event(poll: &mut Poll, token: Token, what: &str) {
    let mut events = Events::with_capacity(16);
    let start = Instant::now();
    loop {
        let left = EVENT_BOUND.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: no event within {EVENT_BOUND:?} after the submitting thread exited"
        );
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        if events.iter().any(|e| e.token() == token) {
            return;
        }
    }
}

/// Registers `op` with `poll` and submits it from a thread of its own, which then exits.
fn submit_from_exiting_thread<S>(poll: &Poll, op: S, token: Token) -> Pin<Box<S>>
where
    S: mio::event::Source + SourceApi + Send,
{
    std::thread::scope(|s| {
        s.spawn(move || support::start(poll, op, token))
            .join()
            .unwrap()
    })
}

/// Removes the file's pages from the page cache (after writing them back), so that the next
/// read goes to the disk.
fn evict(f: &std::fs::File) {
    f.sync_all().unwrap();
    // SAFETY: posix_fadvise only takes an fd and a range.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// A 1 MiB buffered write submitted from a thread that exits: its event arrives, and the data is
/// in the file.
#[test]
fn write_from_an_exiting_thread_is_announced() {
    let mut f = tempfile::tempfile().unwrap();
    let data = pattern(MIB, 1);
    let mut poll = Poll::new().unwrap();
    let mut op =
        submit_from_exiting_thread(&poll, WriteAt::write_at(f.as_fd(), 0, &data, 0), Token(1));
    expect_event(&mut poll, Token(1), "1 MiB write");
    assert_eq!(op.as_mut().aio_return(), Ok(MIB));
    drop(op);
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert!(back == data, "the file does not hold what was written");
}

/// An fsync submitted from a thread that exits: its event arrives, with success.
#[test]
fn fsync_from_an_exiting_thread_is_announced() {
    let f = file_with(&pattern(MIB, 2));
    let mut poll = Poll::new().unwrap();
    let op = Fsync::fsync(f.as_fd(), mio_aio::AioFsyncMode::O_SYNC, 0);
    let mut op = submit_from_exiting_thread(&poll, op, Token(2));
    expect_event(&mut poll, Token(2), "fsync");
    assert_eq!(op.as_mut().aio_return(), Ok(()));
}

/// After an fsync from one exiting thread, a 1 MiB read of pages that are not in the page cache,
/// from another exiting thread: it reads the file's bytes (not `EFAULT` with the buffer
/// untouched), and its event arrives.
#[test]
fn uncached_read_from_an_exiting_thread_reads_the_file() {
    let data = pattern(MIB, 3);
    let f = file_with(&data);
    evict(&f);
    let mut poll = Poll::new().unwrap();
    let sync = Fsync::fsync(f.as_fd(), mio_aio::AioFsyncMode::O_SYNC, 0);
    let mut sync = submit_from_exiting_thread(&poll, sync, Token(3));
    // Not through its event (`fsync_from_an_exiting_thread_is_announced` pins that): poll for
    // the result, so that this test is about the read.
    let start = Instant::now();
    while sync.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
        assert!(start.elapsed() < EVENT_BOUND, "the fsync never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sync.as_mut().aio_return(), Ok(()));
    drop(sync);
    evict(&f);
    let mut buf = vec![0u8; MIB];
    let mut op =
        submit_from_exiting_thread(&poll, ReadAt::read_at(f.as_fd(), 0, &mut buf, 0), Token(4));
    let start = Instant::now();
    while op.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
        assert!(start.elapsed() < EVENT_BOUND, "the read never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(MIB), "the read's result");
    expect_event(&mut poll, Token(4), "1 MiB uncached read");
    drop(op);
    assert!(buf == data, "the buffer does not hold the file's bytes");
}

/// Uncached reads from eight short-lived threads, each submitting one and exiting at once: every
/// event arrives and every buffer holds the file's bytes.
#[test]
fn many_exiting_threads_lose_no_event() {
    const THREADS: usize = 8;
    let data = pattern(THREADS * 256 * 1024, 4);
    let f = file_with(&data);
    evict(&f);
    let mut poll = Poll::new().unwrap();
    let chunk = data.len() / THREADS;
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; chunk]; THREADS];
    let mut reads = Vec::new();
    for (i, buf) in bufs.iter_mut().enumerate() {
        let op = ReadAt::read_at(f.as_fd(), (i * chunk) as u64, buf, 0);
        reads.push(submit_from_exiting_thread(&poll, op, Token(100 + i)));
    }
    let mut events = Events::with_capacity(64);
    let mut seen = vec![false; THREADS];
    let start = Instant::now();
    while seen.iter().any(|s| !s) {
        let left = EVENT_BOUND.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "events missing: {seen:?}");
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        for e in events.iter() {
            seen[e.token().0 - 100] = true;
        }
    }
    for op in &mut reads {
        assert_eq!(op.as_mut().aio_return(), Ok(chunk));
    }
    drop(reads);
    for (i, buf) in bufs.iter().enumerate() {
        assert!(
            buf[..] == data[i * chunk..(i + 1) * chunk],
            "chunk {i} differs"
        );
    }
}

/// A batch of uncached reads submitted from a thread that exits: its one event arrives and
/// every entry holds the file's bytes.
#[test]
fn batch_from_an_exiting_thread_is_announced() {
    const ENTRIES: usize = 16;
    let data = pattern(ENTRIES * 64 * 1024, 5);
    let f = file_with(&data);
    evict(&f);
    let chunk = data.len() / ENTRIES;
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; chunk]; ENTRIES];
    let mut poll = Poll::new().unwrap();
    let mut builder = mio_aio::LioCbBuilder::with_capacity(ENTRIES);
    for (i, b) in bufs.iter_mut().enumerate() {
        builder = builder.emplace_mut_slice(
            f.as_fd(),
            (i * chunk) as u64,
            b,
            0,
            mio_aio::LioOpcode::LIO_READ,
        );
    }
    let mut liocb = builder.finish();
    poll.registry()
        .register(&mut liocb, Token(9), mio_aio::LIO)
        .unwrap();
    let liocb = std::thread::scope(|s| {
        s.spawn(move || {
            liocb.submit().unwrap();
            liocb
        })
        .join()
        .unwrap()
    });
    expect_event(&mut poll, Token(9), "batch of uncached reads");
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(chunk as isize); ENTRIES]);
    for (i, buf) in bufs.iter().enumerate() {
        assert!(
            buf[..] == data[i * chunk..(i + 1) * chunk],
            "entry {i} differs"
        );
    }
}

/// A read from a pipe with no data, submitted from a thread that exits: the thread does not wait
/// for data that may never come. io_uring cancels the read (`ECANCELED`, as documented); kernel
/// AIO and the thread pool keep it, and it reads what is written later. Either way its event
/// arrives.
#[test]
fn pipe_read_does_not_hold_up_the_exiting_thread() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let mut op = submit_from_exiting_thread(
        &poll,
        ReadAt::read_at(reader.as_fd(), 0, &mut buf, 0),
        Token(10),
    );
    let exit_took = started.elapsed();
    assert!(
        exit_took < Duration::from_secs(5),
        "the thread took {exit_took:?} to exit"
    );
    writer.write_all(b"late").unwrap();
    expect_event(&mut poll, Token(10), "pipe read");
    let result = op.as_mut().aio_return();
    drop(op);
    if mio_aio::backend().unwrap() == mio_aio::Backend::IoUring {
        assert_eq!(result, Err(mio_aio::Errno::ECANCELED));
    } else {
        assert_eq!(result, Ok(4));
        assert_eq!(&buf[..4], b"late");
    }
}
