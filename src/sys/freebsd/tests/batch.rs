//! Batch events on FreeBSD: exactly one per submission, none from a batch already collected or
//! dropped, rounds for batches larger than the per-process queue, and entries the kernel
//! queued that had failed by the time `lio_listio` returned. They run on FreeBSD CI only; the
//! bookkeeping behind them is unit-tested on every OS (`crate::lio_book`).

use std::{os::fd::AsFd, time::Duration};

use mio::{Events, Poll, Token};
use nix::errno::Errno;

use super::{file_with, in_child, queue_limit, wait_for, wait_lio, writes};
use crate::{LioCbBuilder, LioError, LioOpcode};

/// Every event `poll` reports within `window`, as tokens.
fn events_within(poll: &mut Poll, window: Duration) -> Vec<Token> {
    let mut events = Events::with_capacity(64);
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        match poll.poll(&mut events, Some(window - start.elapsed())) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        seen.extend(events.iter().map(|e| e.token()));
    }
    seen
}

/// FreeBSD's `EVFILT_LIO` is level-triggered; the batch's event must still come once.
#[test]
fn lio_event_comes_once() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    let mut lio = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(f.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_mut_slice(f.as_fd(), 6, &mut b, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut lio, Token(21), crate::LIO)
        .unwrap();
    lio.submit().unwrap();
    let mut events = Events::with_capacity(16);
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(10))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        assert!(!events.is_empty(), "no batch event within 10 s");
        if let Some(ev) = events.iter().find(|ev| ev.token() == Token(21)) {
            // Reported through the batch's own kqueue: readable, like tokio expects.
            assert!(ev.is_readable());
            break;
        }
    }
    wait_lio(&lio);
    // The batch is done but not collected: no second event.
    assert_eq!(events_within(&mut poll, Duration::from_millis(300)), vec![]);
    let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(r, vec![Ok(4), Ok(2)]);
}

/// The event the backend posts itself for a batch that gave the kernel nothing is removed with
/// the batch: a batch dropped, or collected, before the poll yields nothing afterwards.
#[test]
fn stand_in_event_goes_with_the_batch() {
    let f = file_with(b"abc");
    let mut poll = Poll::new().unwrap();
    for collect in [false, true] {
        let mut nops = LioCbBuilder::with_capacity(1)
            .emplace_slice(f.as_fd(), 0, b"x", 0, LioOpcode::LIO_NOP)
            .finish();
        poll.registry()
            .register(&mut nops, Token(31), crate::LIO)
            .unwrap();
        nops.submit().unwrap();
        if collect {
            let r: Vec<_> = nops.into_results(|it| it.map(|r| r.result).collect());
            assert_eq!(r, vec![Ok(0)]);
        } else {
            drop(nops);
        }
        assert_eq!(
            events_within(&mut poll, Duration::from_millis(300)),
            vec![],
            "an event from a batch already {}",
            if collect { "collected" } else { "dropped" }
        );
    }
    // Kept, the same batch gets its event once.
    let mut empty = LioCbBuilder::with_capacity(0).finish();
    poll.registry()
        .register(&mut empty, Token(32), crate::LIO)
        .unwrap();
    empty.submit().unwrap();
    assert_eq!(
        events_within(&mut poll, Duration::from_millis(300)),
        vec![Token(32)]
    );
}

/// A batch with more entries than `vfs.aio.max_aio_queue_per_proc` goes in rounds (the kernel
/// would refuse the whole list with `EINVAL`): `EINCOMPLETE`, then `resubmit`.
#[test]
fn batch_larger_than_the_queue_goes_in_rounds() {
    if !in_child("batch::batch_larger_than_the_queue_goes_in_rounds") {
        return;
    }
    let limit = queue_limit().expect("vfs.aio.max_aio_queue_per_proc");
    if limit > 4096 {
        eprintln!(
            "SKIPPED: vfs.aio.max_aio_queue_per_proc = {limit}: a batch above it is too large"
        );
        return;
    }
    let f = file_with(b"");
    let data = [b'y'; 512];
    let n = limit + 10;
    let mut poll = Poll::new().unwrap();
    let mut lio = writes(&f, &data, n);
    poll.registry()
        .register(&mut lio, Token(41), crate::LIO)
        .unwrap();
    let mut r = lio.submit();
    let mut rounds = 1;
    while r != Ok(()) {
        assert_eq!(r, Err(LioError::EINCOMPLETE), "round {rounds}");
        wait_for(&mut poll, Token(41));
        wait_lio(&lio);
        r = lio.resubmit();
        rounds += 1;
        assert!(rounds < 100, "no progress");
    }
    assert!(rounds >= 2, "{n} entries in one lio_listio");
    wait_for(&mut poll, Token(41));
    let ok = lio.into_results(|it| it.filter(|r| r.result == Ok(512)).count());
    assert_eq!(ok, n);
    assert_eq!(f.metadata().unwrap().len(), (n * 512) as u64);
}

/// An entry the kernel queued that fails on its own (a read from a directory) beside one it
/// refuses (a bad descriptor): `lio_listio` returns `EIO`, the queued entry is still counted as
/// started (so the backend posts no second event on top of the kernel's), and its result comes
/// from `aio_return`.
#[test]
fn queued_entry_that_failed_is_counted_as_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::File::open(dir.path()).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut a = [0u8; 64];
    // SAFETY: a descriptor that is surely not open; the kernel refuses it with EBADF.
    let bad = unsafe { std::os::fd::BorrowedFd::borrow_raw(1 << 20) };
    let mut lio = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(d.as_fd(), 0, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_slice(bad, 0, b"abc", 0, LioOpcode::LIO_WRITE)
        .finish();
    poll.registry()
        .register(&mut lio, Token(51), crate::LIO)
        .unwrap();
    let statuses = lio.submit().unwrap_err().into_eio().unwrap();
    assert_eq!(statuses[1], Err(Errno::EBADF));
    assert_ne!(statuses[0], Err(Errno::EBADF));
    assert_eq!(
        events_within(&mut poll, Duration::from_millis(500)),
        vec![Token(51)],
        "exactly the kernel's event"
    );
    let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    // Reading a directory fails with EISDIR (FreeBSD 13 and later, unless
    // security.bsd.allow_read_dir is set): the kernel's result, from aio_return.
    assert_eq!(r[0], Err(Errno::EISDIR));
    assert_eq!(r[1], Err(Errno::EBADF));
}
