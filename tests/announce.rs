//! How completions reach `Poll`: every operation's token comes out exactly once, whether the
//! operation was done inside `submit` (a read from the page cache) or by the engine (a write),
//! and an operation that is dropped before its event was polled leaves no event behind for
//! whatever uses its token next. Runs on every backend (CI runs this file with each).
#![cfg(target_os = "linux")]

mod support;

use std::{
    io::{Read, Seek, SeekFrom, Write},
    os::fd::AsFd,
    time::Duration,
};

use mio::{Events, Poll, Token};
use mio_aio::{ReadAt, SourceApi, WriteAt};
use support::{expect_one_event, start};

/// A file of `blocks` blocks of 512 bytes, block `i` filled with `i as u8`, read once so that
/// it is in the page cache.
fn cached_file(blocks: usize) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    for i in 0..blocks {
        f.write_all(&[i as u8; 512]).unwrap();
    }
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    f
}

/// Every event `poll` delivers within `wait`, interrupted waits resumed.
fn events_within(poll: &mut Poll, wait: Duration) -> Vec<Token> {
    let mut events = Events::with_capacity(64);
    loop {
        match poll.poll(&mut events, Some(wait)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        return events.iter().map(|e| e.token()).collect();
    }
}

#[test]
fn a_read_done_in_submit_reports_its_token_once() {
    let f = cached_file(64);
    let mut poll = Poll::new().unwrap();
    for i in 0..60 {
        let mut buf = [0u8; 512];
        let token = Token(i % 3);
        let mut op = start(
            &poll,
            ReadAt::read_at(f.as_fd(), (i % 64) as u64 * 512, &mut buf, 0),
            token,
        );
        expect_one_event(&mut poll, token);
        assert_eq!(op.as_mut().aio_return(), Ok(512));
        drop(op);
        assert_eq!(buf, [(i % 64) as u8; 512]);
    }
}

#[test]
fn reads_and_writes_under_one_token_each_report_once() {
    let f = cached_file(8);
    let mut poll = Poll::new().unwrap();
    let token = Token(7);
    for i in 0..30u64 {
        let block = i % 8;
        let data = [(i as u8).wrapping_mul(3); 512];
        let mut w = start(
            &poll,
            WriteAt::write_at(f.as_fd(), block * 512, &data, 0),
            token,
        );
        expect_one_event(&mut poll, token);
        assert_eq!(w.as_mut().aio_return(), Ok(512));
        drop(w);
        let mut buf = [0u8; 512];
        let mut r = start(
            &poll,
            ReadAt::read_at(f.as_fd(), block * 512, &mut buf, 0),
            token,
        );
        expect_one_event(&mut poll, token);
        assert_eq!(r.as_mut().aio_return(), Ok(512));
        drop(r);
        assert_eq!(buf, data, "round {i}");
    }
}

#[test]
fn an_operation_resubmitted_reports_each_time() {
    let f = cached_file(4);
    let mut poll = Poll::new().unwrap();
    let token = Token(3);
    let mut buf = [0u8; 512];
    let mut op = start(&poll, ReadAt::read_at(f.as_fd(), 512, &mut buf, 0), token);
    for round in 0..20 {
        expect_one_event(&mut poll, token);
        assert_eq!(op.as_mut().aio_return(), Ok(512), "round {round}");
        op.as_mut().submit().unwrap();
    }
    expect_one_event(&mut poll, token);
    assert_eq!(op.as_mut().aio_return(), Ok(512));
}

#[test]
fn an_operation_dropped_before_its_event_leaves_none_behind() {
    let f = cached_file(16);
    let mut poll = Poll::new().unwrap();
    for i in 0..50 {
        let mut buf = [0u8; 512];
        let mut op = start(
            &poll,
            ReadAt::read_at(f.as_fd(), (i % 16) as u64 * 512, &mut buf, 0),
            Token(i),
        );
        // Done inside `submit`: collected without polling, then dropped.
        assert_eq!(op.as_mut().aio_return(), Ok(512));
    }
    let mut w_data = [1u8; 512];
    w_data[0] = 2;
    for i in 50..60 {
        // A write goes to the engine: waited for, not polled.
        let mut op = start(&poll, WriteAt::write_at(f.as_fd(), 0, &w_data, 0), Token(i));
        while op.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(op.as_mut().aio_return(), Ok(512));
    }
    let stale = events_within(&mut poll, Duration::from_millis(200));
    assert!(stale.is_empty(), "events of dropped operations: {stale:?}");
    // The tokens are free for new sources, which get their own events only.
    let mut buf = [0u8; 512];
    let mut op = start(
        &poll,
        ReadAt::read_at(f.as_fd(), 512, &mut buf, 0),
        Token(5),
    );
    expect_one_event(&mut poll, Token(5));
    assert_eq!(op.as_mut().aio_return(), Ok(512));
}

#[test]
fn the_last_registration_before_submit_decides_the_token() {
    let f = cached_file(4);
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 512];
    let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
    poll.registry()
        .register(&mut op, Token(1), mio_aio::AIO)
        .unwrap();
    poll.registry()
        .reregister(&mut op, Token(2), mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    expect_one_event(&mut poll, Token(2));
    assert_eq!(op.as_mut().aio_return(), Ok(512));
    drop(op);

    let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
    poll.registry()
        .register(&mut op, Token(3), mio_aio::AIO)
        .unwrap();
    poll.registry().deregister(&mut op).unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    let after = events_within(&mut poll, Duration::from_millis(100));
    assert!(
        after.is_empty(),
        "a deregistered operation reported: {after:?}"
    );
    while op.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(op.as_mut().aio_return(), Ok(512));
}
