//! The kqueue backend against a real mio `Poll`: exactly one event per submission, none after
//! collect or drop. On macOS, DragonFly, NetBSD and OpenBSD the event is an `EVFILT_USER` knote
//! in a real kqueue; on Linux the same tests run the backend's logic with the epoll stand-in of
//! `notify_epoll.rs`.

use std::{
    fs::File,
    io::Write,
    os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd},
    pin::Pin,
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;

use super::{LioCb, ReadOp, WriteOp};
use crate::{
    lio::{LioBuf, LioEntry},
    AioCancelStat, LioOpcode, Source, SourceApi,
};

/// This backend's operations (on Linux, `crate::ReadAt` is Linux's own).
fn read_at<'a>(fd: BorrowedFd<'a>, offset: u64, buf: &'a mut [u8]) -> Source<ReadOp<'a>> {
    Source::new(ReadOp::new(fd, offset, buf, 0))
}

fn write_at<'a>(fd: BorrowedFd<'a>, offset: u64, buf: &'a [u8]) -> Source<WriteOp<'a>> {
    Source::new(WriteOp::new(fd, offset, buf, 0))
}

fn entry<'a>(fd: BorrowedFd<'a>, offset: u64, buf: LioBuf<'a>, opcode: LioOpcode) -> LioEntry<'a> {
    LioEntry {
        fd,
        offset,
        buf,
        prio: 0,
        opcode,
    }
}

const TOKEN: Token = Token(0x5eed);

/// Counts the events for `TOKEN` that arrive within `wait`, checking that each is readable.
fn events_within(poll: &mut Poll, wait: Duration) -> usize {
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + wait;
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return n;
        }
        poll.poll(&mut events, Some(left)).unwrap();
        for e in events.iter() {
            assert_eq!(e.token(), TOKEN, "an event for another token");
            assert!(e.is_readable(), "mio reports EVFILT_USER as readable");
            n += 1;
        }
    }
}

/// Waits (at most 10 s) for the first event, then counts any duplicate for 300 ms more.
fn exactly_one_event(poll: &mut Poll) {
    let mut events = Events::with_capacity(16);
    poll.poll(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(events.iter().count(), 1, "one event per submission");
    assert_eq!(
        events_within(poll, Duration::from_millis(300)),
        0,
        "a duplicate"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a local array of two ints, which pipe fills.
    syscall!(pipe(fds.as_mut_ptr())).unwrap();
    // SAFETY: pipe just returned these new descriptors, owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn one_event_per_submission_and_none_stale() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abcdef").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = read_at(f.as_fd(), 1, &mut buf);
    poll.registry()
        .register(&mut op, TOKEN, crate::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    for _ in 0..3 {
        op.as_mut().submit().unwrap();
        exactly_one_event(&mut poll);
        assert_eq!(op.as_mut().aio_return(), Ok(4));
    }
    // Collected without polling: the event it posted goes with it.
    op.as_mut().submit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(4));
    assert_eq!(events_within(&mut poll, Duration::from_millis(300)), 0);
    op.as_mut().submit().unwrap();
    exactly_one_event(&mut poll);
    assert_eq!(op.as_mut().aio_return(), Ok(4));
    drop(op);
    assert_eq!(&buf, b"bcde");
}

#[test]
fn a_write_and_its_event() {
    let f = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut op = write_at(f.as_fd(), 2, b"xyz");
    poll.registry()
        .register(&mut op, TOKEN, Interest::READABLE)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    exactly_one_event(&mut poll);
    assert_eq!(op.as_mut().aio_return(), Ok(3));
    assert_eq!(f.metadata().unwrap().len(), 5);
}

#[test]
fn a_batch_has_one_event() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"0123456789").unwrap();
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
    let mut lio = LioCb::new(vec![
        entry(f.as_fd(), 0, LioBuf::Mut(&mut a), LioOpcode::LIO_READ),
        entry(f.as_fd(), 5, LioBuf::Mut(&mut b), LioOpcode::LIO_READ),
        entry(f.as_fd(), 10, LioBuf::Shared(b"!"), LioOpcode::LIO_WRITE),
    ]);
    lio.register(poll.registry(), TOKEN).unwrap();
    lio.submit().unwrap();
    exactly_one_event(&mut poll);
    assert!(!lio.in_progress());
    let results: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(2), Ok(3), Ok(1)]);
    assert_eq!((&a, &b), (b"01", b"567"));
}

#[test]
fn cancel_ends_a_stream_read_with_one_event() {
    let (rx, _tx) = pipe();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = read_at(rx.as_fd(), 0, &mut buf);
    poll.registry()
        .register(&mut op, TOKEN, crate::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    assert_eq!(events_within(&mut poll, Duration::from_millis(100)), 0);
    // The worker may still be probing the descriptor: then the answer is not yet known.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match op.as_mut().cancel().unwrap() {
            AioCancelStat::AioCanceled => break,
            AioCancelStat::AioNotCanceled if Instant::now() < deadline => continue,
            other => panic!("cancel answered {other:?}"),
        }
    }
    exactly_one_event(&mut poll);
    assert_eq!(op.as_mut().aio_return(), Err(Errno::ECANCELED));
}

#[test]
fn drop_in_flight_returns_and_leaves_no_event() {
    let (rx, tx) = pipe();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = read_at(rx.as_fd(), 0, &mut buf);
    poll.registry()
        .register(&mut op, TOKEN, crate::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(op);
    assert!(started.elapsed() < Duration::from_secs(5), "drop waited");
    assert_eq!(events_within(&mut poll, Duration::from_millis(300)), 0);
    // The pipe is untouched: the data written now is still there for a plain read.
    File::from(tx).write_all(b"ok").unwrap();
    let mut rbuf = [0u8; 2];
    std::io::Read::read_exact(&mut File::from(rx), &mut rbuf).unwrap();
    assert_eq!(&rbuf, b"ok");
}

#[test]
fn unregistered_operation_completes_without_events() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abc").unwrap();
    let mut buf = [0u8; 3];
    let mut op: Pin<Box<_>> = Box::pin(read_at(f.as_fd(), 0, &mut buf));
    op.as_mut().submit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(3));
}
