//! Tests of the FreeBSD backend's own guarantees (misuse never panics, drops in flight are
//! safe, batches report per-operation errors). They run on FreeBSD CI only.

use std::{
    io::{IoSliceMut, Write},
    os::fd::AsFd,
    pin::Pin,
    time::Duration,
};

use mio::{Events, Poll, Token};
use nix::errno::Errno;

use crate::{
    AioFsyncMode, Fsync, LioCb, LioCbBuilder, LioError, LioOpcode, ReadAt, ReadvAt, SourceApi,
    WriteAt,
};

mod batch;

fn file_with(contents: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(contents).unwrap();
    f
}

/// Polls until `token` has been seen, tolerating EINTR.
fn wait_for(poll: &mut Poll, token: Token) {
    let mut events = Events::with_capacity(16);
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(10))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        assert!(!events.is_empty(), "timed out waiting for {token:?}");
        if events.iter().any(|ev| ev.token() == token) {
            return;
        }
    }
}

/// A pinned source, for mio's registration methods (which take `&mut`).
fn unpinned<T>(p: Pin<&mut T>) -> &mut T {
    // SAFETY: mio's registration methods only update the notification settings in place; they
    // never move the source.
    unsafe { p.get_unchecked_mut() }
}

fn wait_lio(lio: &LioCb) {
    while lio.in_progress() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn read_with_kevent() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    {
        let mut op = ReadAt::read_at(f.as_fd(), 2, &mut buf, 0);
        poll.registry()
            .register(&mut op, Token(3), crate::AIO)
            .unwrap();
        let mut op = Box::pin(op);
        op.as_mut().submit().unwrap();
        wait_for(&mut poll, Token(3));
        assert_eq!(op.as_mut().aio_return(), Ok(4));
        // After aio_return the operation may be deregistered again.
        poll.registry().deregister(unpinned(op.as_mut())).unwrap();
    }
    assert_eq!(&buf, b"cdef");
}

#[test]
fn misuse_in_flight_is_an_error() {
    let f = file_with(b"");
    let mut poll = Poll::new().unwrap();
    let mut op = WriteAt::write_at(f.as_fd(), 0, b"abc", 0);
    poll.registry()
        .register(&mut op, Token(1), crate::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    // Until aio_return, the kernel holds state: everything that would change it is refused.
    assert_eq!(op.as_mut().submit(), Err(Errno::EBUSY));
    let e = poll
        .registry()
        .reregister(unpinned(op.as_mut()), Token(2), crate::AIO)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::EBUSY as i32));
    assert!(poll.registry().deregister(unpinned(op.as_mut())).is_err());
    wait_for(&mut poll, Token(1));
    assert_eq!(op.as_mut().aio_return(), Ok(3));
    assert!(!op.in_progress());
}

#[test]
fn aio_return_early_keeps_the_operation() {
    let f = file_with(b"");
    let buf = vec![7u8; 1 << 20];
    let mut op = Box::pin(WriteAt::write_at(f.as_fd(), 0, &buf, 0));
    op.as_mut().submit().unwrap();
    match op.as_mut().aio_return() {
        // Still running: the state is kept, and the drop below must wait.
        Err(Errno::EINPROGRESS) => assert!(op.in_progress()),
        // Already done.
        r => assert_eq!(r, Ok(buf.len())),
    }
}

/// The fsync's control block is rebuilt before each submission (nix clears its mode): a second
/// submission works, and carries the registration made since.
#[test]
fn fsync_resubmitted_with_a_new_registration() {
    let f = file_with(b"abc");
    let mut poll = Poll::new().unwrap();
    let mut op = Fsync::fsync(f.as_fd(), AioFsyncMode::O_DSYNC, 0);
    poll.registry()
        .register(&mut op, Token(61), crate::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    wait_for(&mut poll, Token(61));
    assert_eq!(op.as_mut().aio_return(), Ok(()));
    poll.registry()
        .reregister(unpinned(op.as_mut()), Token(62), crate::AIO)
        .unwrap();
    assert_eq!(op.as_mut().submit(), Ok(()));
    wait_for(&mut poll, Token(62));
    assert_eq!(op.as_mut().aio_return(), Ok(()));
}

#[test]
fn huge_offset_is_einval() {
    let f = file_with(b"abc");
    let mut buf = [0u8; 1];
    let mut op = Box::pin(ReadAt::read_at(f.as_fd(), u64::MAX, &mut buf, 0));
    assert_eq!(op.as_mut().submit(), Err(Errno::EINVAL));
    assert!(!op.in_progress());
}

#[test]
fn drop_in_flight() {
    let f = file_with(b"");
    let buf = vec![1u8; 4 << 20];
    for _ in 0..8 {
        let mut op = Box::pin(WriteAt::write_at(f.as_fd(), 0, &buf, 0));
        op.as_mut().submit().unwrap();
        drop(op);
    }
    let mut rbuf = vec![0u8; 16];
    let mut op = Box::pin(ReadAt::read_at(f.as_fd(), 0, &mut rbuf, 0));
    op.as_mut().submit().unwrap();
    drop(op);
}

#[test]
fn readv_list_may_be_temporary() {
    let f = file_with(b"abcdef123456");
    let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    {
        // The list is a temporary, gone before submit: the operation keeps its own copy.
        let mut op = Box::pin(ReadvAt::readv_at(
            f.as_fd(),
            2,
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
            0,
        ));
        op.as_mut().submit().unwrap();
        while op.as_mut().error() == Err(Errno::EINPROGRESS) {
            std::thread::yield_now();
        }
        assert_eq!(op.as_mut().aio_return(), Ok(6));
    }
    assert_eq!((&a, &b), (b"cdef", b"12"));
}

#[test]
fn lio_with_kevent_and_nop() {
    let f = file_with(b"abcdef123456");
    let mut poll = Poll::new().unwrap();
    let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    let mut lio = LioCbBuilder::with_capacity(3)
        .emplace_mut_slice(f.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_slice(f.as_fd(), 0, b"", 0, LioOpcode::LIO_NOP)
        .emplace_mut_slice(f.as_fd(), 6, &mut b, 0, LioOpcode::LIO_READ)
        .finish();
    poll.registry()
        .register(&mut lio, Token(9), crate::LIO)
        .unwrap();
    lio.submit().unwrap();
    // The batch can move after submission.
    let moved = vec![lio];
    wait_for(&mut poll, Token(9));
    let lio = moved.into_iter().next().unwrap();
    let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(r, vec![Ok(4), Ok(0), Ok(2)]);
    assert_eq!((&a, &b), (b"cdef", b"12"));
}

#[test]
fn lio_invalid_entries_are_eio() {
    let f = file_with(b"abcdef123456");
    let shared = [0u8; 3];
    let mut c = [0u8; 3];
    let mut lio = LioCbBuilder::with_capacity(3)
        .emplace_slice(f.as_fd(), 0, &shared, 0, LioOpcode::LIO_READ)
        .emplace_mut_slice(f.as_fd(), u64::MAX, &mut c, 0, LioOpcode::LIO_WRITE)
        .emplace_slice(f.as_fd(), 0, b"xyz", 0, LioOpcode::LIO_WRITE)
        .finish();
    let statuses = lio.submit().unwrap_err().into_eio().unwrap();
    assert_eq!(statuses[0], Err(Errno::EINVAL));
    assert_eq!(statuses[1], Err(Errno::EINVAL));
    assert!(matches!(statuses[2], Ok(()) | Err(Errno::EINPROGRESS)));
    // A second submit starts nothing again.
    let again = lio.submit().unwrap_err().into_eio().unwrap();
    assert_eq!(again[2], Err(Errno::EBUSY));
    wait_lio(&lio);
    let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(r, vec![Err(Errno::EINVAL), Err(Errno::EINVAL), Ok(3)]);
}

#[test]
fn lio_without_kernel_work_still_gets_its_event() {
    let f = file_with(b"abc");
    let shared = [0u8; 2];
    let mut poll = Poll::new().unwrap();
    // Empty, all LIO_NOP, all refused before the kernel: lio_listio has nothing to start, yet
    // a registered batch gets its event.
    let empty = LioCbBuilder::with_capacity(0).finish();
    let nops = LioCbBuilder::with_capacity(2)
        .emplace_slice(f.as_fd(), 0, b"x", 0, LioOpcode::LIO_NOP)
        .emplace_slice(f.as_fd(), 1, b"y", 0, LioOpcode::LIO_NOP)
        .finish();
    let refused = LioCbBuilder::with_capacity(1)
        .emplace_slice(f.as_fd(), 0, &shared, 0, LioOpcode::LIO_READ)
        .finish();
    for (i, mut lio) in [empty, nops, refused].into_iter().enumerate() {
        poll.registry()
            .register(&mut lio, Token(100 + i), crate::LIO)
            .unwrap();
        match lio.submit() {
            Ok(()) => assert!(i < 2),
            Err(LioError::EIO(v)) => assert_eq!((i, v), (2, vec![Err(Errno::EINVAL)])),
            Err(e) => panic!("{e:?}"),
        }
        wait_for(&mut poll, Token(100 + i));
        let expected = [vec![], vec![Ok(0), Ok(0)], vec![Err(Errno::EINVAL)]];
        let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
        assert_eq!(r, expected[i]);
    }
}

#[test]
fn lio_bad_fd_is_reported_per_operation() {
    let f = file_with(b"abcdef123456");
    let mut a = [0u8; 4];
    // SAFETY: a descriptor that is surely not open; the kernel refuses it with EBADF.
    let bad = unsafe { std::os::fd::BorrowedFd::borrow_raw(1 << 20) };
    let mut lio = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(f.as_fd(), 0, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_slice(bad, 0, b"abc", 0, LioOpcode::LIO_WRITE)
        .finish();
    let statuses = lio.submit().unwrap_err().into_eio().unwrap();
    assert_eq!(statuses[1], Err(Errno::EBADF));
    let r: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(r, vec![Ok(4), Err(Errno::EBADF)]);
}

#[test]
fn lio_drop_in_flight() {
    let f = file_with(b"");
    let buf = vec![5u8; 4 << 20];
    for _ in 0..4 {
        let mut lio = LioCbBuilder::with_capacity(4)
            .emplace_slice(f.as_fd(), 0, &buf, 0, LioOpcode::LIO_WRITE)
            .emplace_slice(f.as_fd(), 1 << 22, &buf, 0, LioOpcode::LIO_WRITE)
            .finish();
        lio.submit().unwrap();
        drop(lio);
    }
}

/// The per-process limit of AIO requests that have not been `aio_return`ed yet.
fn queue_limit() -> Option<usize> {
    let out = std::process::Command::new("sysctl")
        .args(["-n", "vfs.aio.max_aio_queue_per_proc"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn writes<'a>(f: &'a std::fs::File, data: &'a [u8], n: usize) -> LioCb<'a> {
    let mut builder = LioCbBuilder::with_capacity(n);
    for i in 0..n {
        let offs = (data.len() * i) as u64;
        builder = builder.emplace_slice(f.as_fd(), offs, data, 0, LioOpcode::LIO_WRITE);
    }
    builder.finish()
}

/// Runs the test `name` of this module alone in a child process (this test binary, re-run),
/// so that filling the per-process AIO queue cannot starve the tests running in parallel.
/// Returns `true` in the child, where the caller then runs the test's body.
fn in_child(name: &str) -> bool {
    if std::env::var_os("MIO_AIO_FREEBSD_CHILD").is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("sys::freebsd::tests::{name}"),
            "--exact",
            "--test-threads=1",
        ])
        .env("MIO_AIO_FREEBSD_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
    false
}

#[test]
fn lio_eagain_eincomplete_resubmit() {
    if !in_child("lio_eagain_eincomplete_resubmit") {
        return;
    }
    let Some(limit) = queue_limit() else {
        eprintln!("vfs.aio.max_aio_queue_per_proc unreadable: skipped");
        return;
    };
    let f = file_with(b"");
    let data = [b'x'; 512];
    // Completed operations count against the limit until aio_return (into_results): `first`
    // nearly fills the queue, `second` overflows it, `third` finds it full.
    let mut first = writes(&f, &data, limit - 20);
    first.submit().unwrap();
    wait_lio(&first);
    let mut second = writes(&f, &data, 60);
    let r = second.submit();
    assert!(
        matches!(r, Err(LioError::EINCOMPLETE) | Err(LioError::EAGAIN)),
        "{r:?}"
    );
    wait_lio(&second);
    let mut third = writes(&f, &data, 30);
    // Whatever `second` started is complete but not reaped: the queue is full.
    if r == Err(LioError::EINCOMPLETE) {
        assert_eq!(third.submit(), Err(LioError::EAGAIN));
        assert!(!third.in_progress());
    }
    let ok = first.into_results(|it| it.filter(|r| r.result == Ok(512)).count());
    assert_eq!(ok, limit - 20);
    // Room again: the refused operations of `second` start, the others are not rerun.
    let mut r = second.resubmit();
    while r != Ok(()) {
        assert!(matches!(r, Err(LioError::EINCOMPLETE)), "{r:?}");
        wait_lio(&second);
        r = second.resubmit();
    }
    wait_lio(&second);
    let ok = second.into_results(|it| it.filter(|r| r.result == Ok(512)).count());
    assert_eq!(ok, 60);
    drop(third);
}
