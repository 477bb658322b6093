//! Batches (`LioCb`): one registration, one event when every operation is done, and each
//! operation's own result.

mod support;

use std::{
    io::{Read, Seek, SeekFrom, Write},
    os::fd::{AsFd, BorrowedFd},
};

use mio::{Poll, Token};
use mio_aio::{Errno, LioCbBuilder, LioError, LioOpcode};

const UDATA: Token = Token(0xdead_beef);

fn file_with(content: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    f
}

fn content(f: &mut std::fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn lio_one_read() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let mut rbuf = vec![0u8; 4];
    let mut liocb = LioCbBuilder::with_capacity(1)
        .emplace_mut_slice(f.as_fd(), 2, &mut rbuf, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    assert!(!liocb.in_progress());
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(4)]);
    assert_eq!(&rbuf, b"cdef");
}

#[test]
fn lio_one_write() {
    let mut f = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let wbuf = b"abcdef";
    let mut liocb = LioCbBuilder::with_capacity(1)
        .emplace_slice(f.as_fd(), 0, wbuf, 0, LioOpcode::LIO_WRITE)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(6)]);
    assert_eq!(content(&mut f), wbuf);
}

#[test]
fn lio_two_reads() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = (vec![0u8; 4], vec![0u8; 2]);
    let mut liocb = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(f.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_mut_slice(f.as_fd(), 7, &mut b, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(4), Ok(2)]);
    assert_eq!(&a, b"cdef");
    assert_eq!(&b, b"23");
}

#[test]
fn lio_read_and_write_on_two_files() {
    let f0 = file_with(b"abcdef123456");
    let mut f1 = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut rbuf = vec![0u8; 6];
    let wbuf = b"ghijkl";
    let mut liocb = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(f0.as_fd(), 6, &mut rbuf, 0, LioOpcode::LIO_READ)
        .emplace_slice(f1.as_fd(), 0, wbuf, 0, LioOpcode::LIO_WRITE)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(6), Ok(6)]);
    assert_eq!(&rbuf, b"123456");
    assert_eq!(content(&mut f1), wbuf);
}

#[test]
fn lio_bad_fd_is_reported_on_its_own_operation() {
    let f = file_with(b"abcdef123456");
    // A BorrowedFd can never be -1, so the bad fd is a number far above anything this test
    // process opens (fds are allocated lowest first), checked to be closed.
    let bad = 4000;
    // SAFETY: fcntl(F_GETFD) only queries the fd number.
    assert_eq!(
        unsafe { libc::fcntl(bad, libc::F_GETFD) },
        -1,
        "fd {bad} is open"
    );
    // SAFETY: the kernel only ever sees this number; nothing dereferences it in user space.
    let bad_fd = unsafe { BorrowedFd::borrow_raw(bad) };
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = (vec![0u8; 4], vec![0u8; 4]);
    let mut liocb = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(f.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_mut_slice(bad_fd, 0, &mut b, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    // Depending on the system the bad fd is refused at submission (FreeBSD: EIO with the
    // per-operation status) or reported in its result (Linux io_uring).
    match liocb.submit() {
        Ok(()) => {}
        Err(LioError::EIO(statuses)) => assert_eq!(statuses[1], Err(Errno::EBADF)),
        Err(e) => panic!("unexpected {e:?}"),
    }
    support::expect_one_event(&mut poll, UDATA);
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Ok(4), Err(Errno::EBADF)]);
    assert_eq!(&a, b"cdef");
}

#[test]
fn lio_read_into_shared_buffer_is_refused() {
    let f = file_with(b"abcdef");
    let buf = [0u8; 4];
    let mut liocb = LioCbBuilder::with_capacity(1)
        .emplace_slice(f.as_fd(), 0, &buf, 0, LioOpcode::LIO_READ)
        .finish();
    assert_eq!(liocb.submit(), Err(LioError::EIO(vec![Err(Errno::EINVAL)])));
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results, vec![Err(Errno::EINVAL)]);
}

#[test]
fn lio_empty_batch_completes_at_once() {
    let mut poll = Poll::new().unwrap();
    let mut liocb = LioCbBuilder::with_capacity(0).finish();
    assert!(liocb.is_empty());
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    assert_eq!(liocb.into_results(|it| it.count()), 0);
}

#[test]
fn lio_may_be_moved_after_submit() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let mut rbuf = vec![0u8; 12];
    let mut liocb = LioCbBuilder::with_capacity(1)
        .emplace_mut_slice(f.as_fd(), 0, &mut rbuf, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    let moved = vec![liocb];
    support::expect_one_event(&mut poll, UDATA);
    let liocb = moved.into_iter().next().unwrap();
    assert_eq!(
        liocb.into_results(|mut it| it.next().unwrap().result),
        Ok(12)
    );
    assert_eq!(&rbuf, b"abcdef123456");
}

#[test]
fn lio_many_operations() {
    // FreeBSD's default per-process AIO queue holds 256; leave room for the other tests.
    const N: usize = 128;
    let data: Vec<u8> = (0..N * 512).map(|i| (i % 251) as u8).collect();
    let f = file_with(&data);
    let mut poll = Poll::new().unwrap();
    let mut bufs = vec![[0u8; 512]; N];
    let mut builder = LioCbBuilder::with_capacity(N);
    for (i, b) in bufs.iter_mut().enumerate() {
        builder = builder.emplace_mut_slice(f.as_fd(), (i * 512) as u64, b, 0, LioOpcode::LIO_READ);
    }
    let mut liocb = builder.finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    liocb.submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    assert!(liocb.into_results(|mut it| it.all(|r| r.result == Ok(512))));
    assert!(bufs.iter().flatten().eq(data.iter()));
}

/// `resubmit` called at once, while the rounds started before still run: every wait for the
/// batch ends with its event, up to the last operation, whichever round that is in.
#[cfg(target_os = "linux")]
#[test]
fn lio_resubmitted_while_earlier_rounds_run() {
    support::in_child(
        "lio_resubmitted_while_earlier_rounds_run",
        &[("MIO_AIO_MAX_IN_FLIGHT", "4")],
        || {
            use std::time::{Duration, Instant};
            const N: usize = 64;
            let data: Vec<u8> = (0..N * 16).map(|i| (i * 7) as u8).collect();
            let f = file_with(&data);
            let mut poll = Poll::new().unwrap();
            let mut bufs = [[0u8; 16]; N];
            let mut builder = LioCbBuilder::with_capacity(N);
            for (i, b) in bufs.iter_mut().enumerate() {
                let off = (i * 16) as u64;
                builder = builder.emplace_mut_slice(f.as_fd(), off, b, 0, LioOpcode::LIO_READ);
            }
            let mut liocb = builder.finish();
            poll.registry()
                .register(&mut liocb, UDATA, mio_aio::LIO)
                .unwrap();
            let start = Instant::now();
            let mut r = liocb.submit();
            while r.is_err() {
                assert!(
                    matches!(r, Err(LioError::EINCOMPLETE | LioError::EAGAIN)),
                    "{r:?}"
                );
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "never all started"
                );
                r = liocb.resubmit();
            }
            let mut events = mio::Events::with_capacity(8);
            while liocb.in_progress() {
                match poll.poll(&mut events, Some(Duration::from_secs(5))) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => r.unwrap(),
                }
                assert!(
                    events.iter().any(|e| e.token() == UDATA),
                    "the batch is still running and no event came within 5 s"
                );
            }
            assert!(liocb.into_results(|mut it| it.all(|r| r.result == Ok(16))));
            assert!(bufs.iter().flatten().eq(data.iter()));
        },
    );
}

/// With a queue smaller than the batch, part of it starts (EINCOMPLETE), its event arrives, and
/// `resubmit` starts the rest.
#[cfg(target_os = "linux")]
#[test]
fn lio_eincomplete_then_resubmit() {
    support::in_child(
        "lio_eincomplete_then_resubmit",
        &[("MIO_AIO_MAX_IN_FLIGHT", "4")],
        || {
            const N: usize = 10;
            let data: Vec<u8> = (0..N * 16).map(|i| i as u8).collect();
            let f = file_with(&data);
            let mut poll = Poll::new().unwrap();
            let mut bufs = [[0u8; 16]; N];
            let mut builder = LioCbBuilder::with_capacity(N);
            for (i, b) in bufs.iter_mut().enumerate() {
                builder = builder.emplace_mut_slice(
                    f.as_fd(),
                    (i * 16) as u64,
                    b,
                    0,
                    LioOpcode::LIO_READ,
                );
            }
            let mut liocb = builder.finish();
            poll.registry()
                .register(&mut liocb, UDATA, mio_aio::LIO)
                .unwrap();
            let mut rounds = 0;
            let mut r = liocb.submit();
            while r == Err(LioError::EINCOMPLETE) {
                rounds += 1;
                support::expect_one_event(&mut poll, UDATA);
                assert!(
                    !liocb.in_progress(),
                    "the event means every started one is done"
                );
                r = liocb.resubmit();
            }
            r.unwrap();
            support::expect_one_event(&mut poll, UDATA);
            assert!(!liocb.in_progress());
            assert!(
                rounds >= 2,
                "a queue of 4 must take several rounds for 10 operations"
            );
            assert!(liocb.into_results(|mut it| it.all(|r| r.result == Ok(16))));
            assert!(bufs.iter().flatten().eq(data.iter()));
        },
    );
}
