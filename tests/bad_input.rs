//! Misuse and bad input give a clear error on the call that caused it: never a panic, never a
//! hang, never a lost event for other operations.

use std::{
    fs::OpenOptions,
    io::{IoSlice, Write},
    os::fd::AsFd,
    time::Duration,
};

use mio::{Events, Interest, Poll, Token};
use mio_aio::{Errno, ReadAt, SourceApi, WriteAt, WritevAt};

mod support;

/// Submits `op` unregistered and waits for it by polling `error()`, as a caller without an
/// event loop would; returns `aio_return`'s value.
fn run<S: SourceApi>(op: S) -> nix::Result<S::Output> {
    let mut op = Box::pin(op);
    op.as_mut().submit()?;
    let start = std::time::Instant::now();
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "operation never completed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    op.as_mut().aio_return()
}

#[test]
fn offset_beyond_i64_max_is_einval() {
    let f = tempfile::tempfile().unwrap();
    let mut buf = [0u8; 4];
    let mut op = Box::pin(ReadAt::read_at(f.as_fd(), u64::MAX, &mut buf, 0));
    assert_eq!(op.as_mut().submit(), Err(Errno::EINVAL));
    assert!(!op.in_progress());
    let mut op = Box::pin(WriteAt::write_at(f.as_fd(), i64::MAX as u64 + 1, b"x", 0));
    assert_eq!(op.as_mut().submit(), Err(Errno::EINVAL));
}

#[test]
fn zero_length_read_and_write() {
    let f = tempfile::tempfile().unwrap();
    let mut empty: [u8; 0] = [];
    assert_eq!(run(ReadAt::read_at(f.as_fd(), 0, &mut empty, 0)), Ok(0));
    assert_eq!(run(WriteAt::write_at(f.as_fd(), 0, &[], 0)), Ok(0));
    assert_eq!(run(WritevAt::writev_at(f.as_fd(), 0, &[], 0)), Ok(0));
}

#[test]
fn read_on_write_only_fd_is_ebadf() {
    let dir = tempfile::tempdir().unwrap();
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("f"))
        .unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        run(ReadAt::read_at(f.as_fd(), 0, &mut buf, 0)),
        Err(Errno::EBADF)
    );
}

#[test]
fn write_on_read_only_fd_is_ebadf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"abc").unwrap();
    let f = OpenOptions::new().read(true).open(&path).unwrap();
    assert_eq!(
        run(WriteAt::write_at(f.as_fd(), 0, b"x", 0)),
        Err(Errno::EBADF)
    );
}

/// Pipes and sockets are streams: at offset 0, as io_uring and FreeBSD's AIO do natively, every
/// backend reads and writes them in order (see the crate docs).
#[test]
fn pipe_and_socket_are_streams() {
    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(b"abcdefgh").unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(run(ReadAt::read_at(r.as_fd(), 0, &mut buf, 0)), Ok(4));
    assert_eq!(&buf, b"abcd");
    assert_eq!(run(ReadAt::read_at(r.as_fd(), 0, &mut buf, 0)), Ok(4));
    assert_eq!(&buf, b"efgh");
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(run(WriteAt::write_at(a.as_fd(), 0, b"xyz", 0)), Ok(3));
    let mut got = [0u8; 3];
    std::io::Read::read_exact(&mut b, &mut got).unwrap();
    assert_eq!(&got, b"xyz");
}

#[test]
fn directory_read_is_eisdir() {
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::File::open(dir.path()).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        run(ReadAt::read_at(d.as_fd(), 0, &mut buf, 0)),
        Err(Errno::EISDIR)
    );
}

#[test]
fn submit_twice_is_ebusy() {
    let f = tempfile::tempfile().unwrap();
    let wbuf = vec![1u8; 1 << 16];
    let mut op = Box::pin(WriteAt::write_at(f.as_fd(), 0, &wbuf, 0));
    op.as_mut().submit().unwrap();
    assert_eq!(op.as_mut().submit(), Err(Errno::EBUSY));
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(wbuf.len()));
    // Once its result is collected, the operation may run again.
    op.as_mut().submit().unwrap();
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(wbuf.len()));
}

#[test]
fn aio_return_without_submit_is_einval() {
    let f = tempfile::tempfile().unwrap();
    let mut buf = [0u8; 4];
    let mut op = Box::pin(ReadAt::read_at(f.as_fd(), 0, &mut buf, 0));
    assert_eq!(op.as_mut().aio_return(), Err(Errno::EINVAL));
    assert_eq!(op.as_mut().error(), Err(Errno::EINVAL));
    assert_eq!(op.as_mut().cancel(), Ok(mio_aio::AioCancelStat::AioAllDone));
}

#[test]
fn wrong_interest_is_invalid_input() {
    let f = tempfile::tempfile().unwrap();
    let poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
    let err = poll
        .registry()
        .register(&mut op, Token(1), Interest::WRITABLE)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let mut batch = mio_aio::LioCbBuilder::with_capacity(0).finish();
    let err = poll
        .registry()
        .register(&mut batch, Token(2), Interest::WRITABLE)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// As in mio-aio 2.0, an interest that contains the expected one (`AIO | WRITABLE`, say) is
/// accepted, and the operation still gets its one event.
#[test]
fn interest_containing_the_expected_one_is_accepted() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abcd").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
    poll.registry()
        .register(&mut op, Token(1), mio_aio::AIO | Interest::WRITABLE)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    support::expect_one_event(&mut poll, Token(1));
    assert_eq!(op.as_mut().aio_return(), Ok(4));
    drop(op);

    let mut c = [0u8; 2];
    let mut batch = mio_aio::LioCbBuilder::with_capacity(1)
        .emplace_mut_slice(f.as_fd(), 2, &mut c, 0, mio_aio::LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut batch, Token(2), mio_aio::LIO | Interest::WRITABLE)
        .unwrap();
    // Re-registration follows the same rule, both ways.
    poll.registry()
        .reregister(&mut batch, Token(2), Interest::WRITABLE | mio_aio::LIO)
        .unwrap();
    let err = poll
        .registry()
        .reregister(&mut batch, Token(2), Interest::WRITABLE)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    batch.submit().unwrap();
    support::expect_one_event(&mut poll, Token(2));
    let r: Vec<_> = batch.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(r, vec![Ok(2)]);
    assert_eq!((&buf, &c), (b"abcd", b"cd"));
}

#[test]
fn register_while_in_flight_is_refused() {
    let f = tempfile::tempfile().unwrap();
    let poll = Poll::new().unwrap();
    let wbuf = vec![1u8; 1 << 20];
    let mut op = WriteAt::write_at(f.as_fd(), 0, &wbuf, 0);
    // SAFETY: `op` is not moved again until it is dropped at the end of this scope.
    let mut pinned = unsafe { std::pin::Pin::new_unchecked(&mut op) };
    pinned.as_mut().submit().unwrap();
    // SAFETY: registration does not move the operation.
    let err = poll.registry().register(
        unsafe { pinned.as_mut().get_unchecked_mut() },
        Token(1),
        mio_aio::AIO,
    );
    // Refused while in flight (FreeBSD refuses it too, until `aio_return`).
    assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::ResourceBusy);
    while pinned.as_mut().error() == Err(Errno::EINPROGRESS) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pinned.as_mut().aio_return(), Ok(wbuf.len()));
}

#[test]
fn unregistered_operation_completes_without_an_event() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abcdef").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 6];
    assert_eq!(run(ReadAt::read_at(f.as_fd(), 0, &mut buf, 0)), Ok(6));
    assert_eq!(&buf, b"abcdef");
    let mut events = Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::from_millis(20))).ok();
    assert!(events.is_empty());
}

#[test]
fn writev_iovecs_survive_the_callers_slice() {
    // The iovec array is copied at construction: the caller's slice may go away before submit.
    let f = tempfile::tempfile().unwrap();
    let (a, b) = (b"abc".to_vec(), b"defg".to_vec());
    let op = {
        let bufs = vec![IoSlice::new(&a), IoSlice::new(&b)];
        WritevAt::writev_at(f.as_fd(), 0, &bufs, 0)
    };
    assert_eq!(run(op), Ok(7));
}
