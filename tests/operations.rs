//! The behaviours of single operations, as upstream mio-aio pins them: each registered
//! operation produces exactly one event carrying its own token, then `aio_return` gives the
//! result.

mod support;

use std::{
    io::{IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write},
    os::fd::AsFd,
    time::Duration,
};

use mio::{Events, Poll, Token};
use mio_aio::{
    AioCancelStat, AioFsyncMode, Errno, Fsync, ReadAt, ReadvAt, SourceApi, WriteAt, WritevAt,
};

const UDATA: Token = Token(0xdead_beef);

fn file_with(content: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    f
}

/// Every fsync mode the system has (DragonFly's nix has no `O_DSYNC`).
#[cfg(not(target_os = "dragonfly"))]
const FSYNC_MODES: &[AioFsyncMode] = &[AioFsyncMode::O_SYNC, AioFsyncMode::O_DSYNC];
#[cfg(target_os = "dragonfly")]
const FSYNC_MODES: &[AioFsyncMode] = &[AioFsyncMode::O_SYNC];

#[test]
fn read_at() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let mut rbuf = vec![0u8; 4];
    {
        let mut op = ReadAt::read_at(f.as_fd(), 2, &mut rbuf, 0);
        poll.registry()
            .register(&mut op, UDATA, mio_aio::AIO)
            .unwrap();
        let mut op = Box::pin(op);
        op.as_mut().submit().unwrap();
        assert!(op.in_progress());
        support::expect_one_event(&mut poll, UDATA);
        assert_eq!(op.as_mut().aio_return().unwrap(), 4);
        assert!(!op.in_progress());
    }
    assert_eq!(&rbuf, b"cdef");
}

#[test]
fn readv_at() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = (vec![0u8; 4], vec![0u8; 2]);
    {
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        let mut op = ReadvAt::readv_at(f.as_fd(), 2, &mut bufs, 0);
        poll.registry()
            .register(&mut op, UDATA, mio_aio::AIO)
            .unwrap();
        let mut op = Box::pin(op);
        op.as_mut().submit().unwrap();
        support::expect_one_event(&mut poll, UDATA);
        assert_eq!(op.as_mut().aio_return().unwrap(), 6);
    }
    assert_eq!(&a, b"cdef");
    assert_eq!(&b, b"12");
}

#[test]
fn write_at() {
    let mut f = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let wbuf = b"abcdef";
    let mut op = WriteAt::write_at(f.as_fd(), 0, wbuf, 0);
    poll.registry()
        .register(&mut op, UDATA, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    assert_eq!(op.as_mut().aio_return().unwrap(), 6);
    drop(op);
    let mut content = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut content).unwrap();
    assert_eq!(content, wbuf);
}

#[test]
fn writev_at() {
    let mut f = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let bufs = [IoSlice::new(b"abcde"), IoSlice::new(b"fghi")];
    let mut op = WritevAt::writev_at(f.as_fd(), 0, &bufs, 0);
    poll.registry()
        .register(&mut op, UDATA, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    assert_eq!(op.as_mut().aio_return().unwrap(), 9);
    drop(op);
    let mut content = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut content).unwrap();
    assert_eq!(content, "abcdefghi");
}

#[test]
fn fsync() {
    for &mode in FSYNC_MODES {
        let f = file_with(b"abcdef");
        let mut poll = Poll::new().unwrap();
        let mut op = Fsync::fsync(f.as_fd(), mode, 0);
        poll.registry()
            .register(&mut op, UDATA, mio_aio::AIO)
            .unwrap();
        let mut op = Box::pin(op);
        op.as_mut().submit().unwrap();
        support::expect_one_event(&mut poll, UDATA);
        op.as_mut().aio_return().unwrap();
    }
}

/// An fsync, like every operation, may be submitted again once `aio_return` has collected it
/// (the tokio layer's retry after `EAGAIN` and the stress test rely on it), and each round gets
/// its own event. (nix's `AioFsync::submit` clears the mode in the control block, which
/// FreeBSD then refuses with `EINVAL`.)
#[test]
fn fsync_submitted_again_after_aio_return() {
    for &mode in FSYNC_MODES {
        let f = file_with(b"abcdef");
        let mut poll = Poll::new().unwrap();
        let mut op = Fsync::fsync(f.as_fd(), mode, 0);
        poll.registry()
            .register(&mut op, UDATA, mio_aio::AIO)
            .unwrap();
        let mut op = Box::pin(op);
        for round in 0..3 {
            assert_eq!(op.as_mut().submit(), Ok(()), "{mode:?}, round {round}");
            support::expect_one_event(&mut poll, UDATA);
            assert_eq!(op.as_mut().aio_return(), Ok(()), "{mode:?}, round {round}");
            assert!(!op.in_progress());
        }
    }
}

#[test]
fn cancel_after_submit_still_delivers_the_event() {
    let f = tempfile::tempfile().unwrap();
    let mut poll = Poll::new().unwrap();
    let wbuf = vec![0x5au8; 1 << 20];
    let mut op = WriteAt::write_at(f.as_fd(), 0, &wbuf, 0);
    poll.registry()
        .register(&mut op, UDATA, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    let stat = op.as_mut().cancel().unwrap();
    support::expect_one_event(&mut poll, UDATA);
    let res = op.as_mut().aio_return();
    match stat {
        AioCancelStat::AioCanceled => assert_eq!(res, Err(Errno::ECANCELED)),
        AioCancelStat::AioAllDone => assert_eq!(res, Ok(wbuf.len())),
        // Could not be removed: it completes, unless the kernel interrupted it.
        AioCancelStat::AioNotCanceled => assert!(
            matches!(res, Ok(n) if n == wbuf.len())
                || matches!(res, Err(Errno::ECANCELED | Errno::EINTR)),
            "{res:?}"
        ),
    }
}

#[test]
fn tokens_are_per_operation() {
    let f = file_with(&[7u8; 4096 * 8]);
    let mut poll = Poll::new().unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 4096]).collect();
    let mut ops: Vec<_> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            let mut op = ReadAt::read_at(f.as_fd(), 4096 * i as u64, b, 0);
            poll.registry()
                .register(&mut op, Token(100 + i), mio_aio::AIO)
                .unwrap();
            let mut op = Box::pin(op);
            op.as_mut().submit().unwrap();
            op
        })
        .collect();
    let mut events = Events::with_capacity(64);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 8 {
        match poll.poll(&mut events, Some(Duration::from_secs(10))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        assert!(!events.is_empty(), "timed out");
        for ev in events.iter() {
            let i = ev.token().0 - 100;
            assert!(seen.insert(i), "token {i} reported twice");
            assert_eq!(ops[i].as_mut().aio_return().unwrap(), 4096);
        }
    }
    drop(ops);
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 7)));
}
