//! Cancelling and dropping operations that wait on streams (an empty pipe, an idle socket, a
//! full pipe), and the truth of `cancel()`'s answer. Run under each Linux backend
//! (`MIO_AIO_BACKEND=io_uring|kaio|threads`): each must deliver the event with `ECANCELED` after
//! `cancel()`, and let a dropped operation go within a second.

#![cfg(target_os = "linux")]

mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{AioCancelStat, Errno, ReadAt, SourceApi, WriteAt};

const TOKEN: Token = Token(7);

/// How long an event may take after `cancel()`: far beyond any scheduling delay.
const EVENT_BOUND: Duration = Duration::from_secs(5);
/// How long dropping an operation may take.
const DROP_BOUND: Duration = Duration::from_secs(1);
/// Time for a submitted operation to reach its waiting state (a worker's poll, io_uring's poll).
const SETTLE: Duration = Duration::from_millis(50);

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new fds into the array, which the OwnedFds then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// A pipe whose buffer is full (its write end stays blocking).
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    let fd = w.as_raw_fd();
    // SAFETY: fcntl only reads and sets the descriptor's status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
        0
    );
    let chunk = [0x5a_u8; 4096];
    loop {
        // SAFETY: writes from a local buffer of that length.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            assert_eq!(Errno::last(), Errno::EAGAIN, "filling the pipe");
            break;
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }, 0);
    (r, w)
}

/// A connected TCP pair on 127.0.0.1 with nothing sent.
fn idle_socket() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Waits (at most [`EVENT_BOUND`]) for the event of [`TOKEN`].
fn event_within_bound(poll: &mut Poll) {
    let mut events = Events::with_capacity(8);
    let start = Instant::now();
    loop {
        let left = EVENT_BOUND.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "no event within {EVENT_BOUND:?} of cancel()"
        );
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        if events.iter().any(|e| e.token() == TOKEN) {
            return;
        }
    }
}

/// Submits `op`, lets it settle into its wait, cancels it, and checks the answer, the event and
/// the result.
fn cancel_waiting<S>(op: S)
where
    S: mio::event::Source + SourceApi,
{
    let mut poll = Poll::new().unwrap();
    let mut op = support::start(&poll, op, TOKEN);
    std::thread::sleep(SETTLE);
    assert!(op.in_progress(), "the operation should still wait");
    let stat = op.as_mut().cancel().unwrap();
    assert_eq!(stat, AioCancelStat::AioCanceled);
    event_within_bound(&mut poll);
    assert_eq!(op.as_mut().aio_return().map(drop), Err(Errno::ECANCELED));
}

/// Runs `body` (which makes an operation wait, then drops it) on a thread of its own and checks
/// that it returns within [`DROP_BOUND`] of the drop; a hang fails the test (the thread is left
/// behind).
fn drop_returns_promptly(name: &str, body: impl FnOnce(&dyn Fn()) + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let dropping = std::cell::Cell::new(None);
            body(&|| dropping.set(Some(Instant::now())));
            let took = dropping.get().expect("body marks the drop").elapsed();
            let _ = tx.send(took);
        })
        .unwrap();
    match rx.recv_timeout(DROP_BOUND + SETTLE * 4) {
        Ok(took) => assert!(took < DROP_BOUND, "{name}: drop took {took:?}"),
        Err(_) => panic!("{name}: dropping the waiting operation did not return"),
    }
}

#[test]
fn cancel_read_on_empty_pipe() {
    let (r, _w) = pipe();
    let mut buf = [0u8; 64];
    cancel_waiting(ReadAt::read_at(r.as_fd(), 0, &mut buf, 0));
}

#[test]
fn cancel_read_on_idle_socket() {
    let (client, _server) = idle_socket();
    let mut buf = [0u8; 64];
    cancel_waiting(ReadAt::read_at(client.as_fd(), 0, &mut buf, 0));
}

#[test]
fn cancel_write_to_full_pipe() {
    let (r, w) = full_pipe();
    let data = [1u8; 4096];
    cancel_waiting(WriteAt::write_at(w.as_fd(), 0, &data, 0));
    // The cancelled write put nothing into the pipe: all of it is the filler.
    // SAFETY: fcntl only sets the descriptor's status flags.
    unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut rest = Vec::new();
    let mut f = std::fs::File::from(r);
    let _ = f.read_to_end(&mut rest);
    assert!(
        rest.iter().all(|&b| b == 0x5a),
        "the cancelled write reached the pipe"
    );
}

#[test]
fn drop_read_on_empty_pipe() {
    drop_returns_promptly("drop-pipe-read", |mark| {
        let (r, _w) = pipe();
        let mut buf = [0u8; 64];
        let poll = Poll::new().unwrap();
        let op = support::start(&poll, ReadAt::read_at(r.as_fd(), 0, &mut buf, 0), TOKEN);
        std::thread::sleep(SETTLE);
        mark();
        drop(op);
    });
}

#[test]
fn drop_read_on_idle_socket() {
    drop_returns_promptly("drop-socket-read", |mark| {
        let (client, _server) = idle_socket();
        let mut buf = [0u8; 64];
        let poll = Poll::new().unwrap();
        let op = support::start(
            &poll,
            ReadAt::read_at(client.as_fd(), 0, &mut buf, 0),
            TOKEN,
        );
        std::thread::sleep(SETTLE);
        mark();
        drop(op);
    });
}

#[test]
fn drop_write_to_full_pipe() {
    drop_returns_promptly("drop-pipe-write", |mark| {
        let (_r, w) = full_pipe();
        let data = [1u8; 4096];
        let poll = Poll::new().unwrap();
        let op = support::start(&poll, WriteAt::write_at(w.as_fd(), 0, &data, 0), TOKEN);
        std::thread::sleep(SETTLE);
        mark();
        drop(op);
    });
}

/// A read that data reaches before the cancel ends normally, never with ECANCELED.
#[test]
fn cancel_after_data_reports_all_done() {
    let (r, w) = pipe();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 16];
    let mut op = support::start(&poll, ReadAt::read_at(r.as_fd(), 0, &mut buf, 0), TOKEN);
    std::fs::File::from(w).write_all(b"hello").unwrap();
    event_within_bound(&mut poll);
    assert_eq!(op.as_mut().cancel().unwrap(), AioCancelStat::AioAllDone);
    assert_eq!(op.as_mut().aio_return(), Ok(5));
}

/// `cancel()` tells the truth, at whatever moment it comes: `AioCanceled` only for an operation
/// that ends with `ECANCELED`, `AioAllDone` only for one that ended normally. Pipe reads whose
/// data arrives before, during or never, and file reads, cancelled at once or a little later.
#[test]
fn cancel_answer_matches_result() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&vec![7u8; 1 << 20]).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut counts = [0usize; 3];
    for i in 0..300u32 {
        let (r, w) = pipe();
        let mut w = std::fs::File::from(w);
        let mut buf = vec![0u8; 64 << 10];
        let on_pipe = i % 2 == 0;
        if on_pipe && i % 3 == 0 {
            w.write_all(b"early").unwrap();
        }
        let fd = if on_pipe { r.as_fd() } else { file.as_fd() };
        let mut op = support::start(&poll, ReadAt::read_at(fd, 0, &mut buf, 0), TOKEN);
        if on_pipe && i % 3 == 1 {
            w.write_all(b"racing").unwrap();
        }
        for _ in 0..(i % 7) * 200 {
            std::hint::spin_loop();
        }
        let stat = op.as_mut().cancel().unwrap();
        event_within_bound(&mut poll);
        let res = op.as_mut().aio_return();
        match stat {
            AioCancelStat::AioCanceled => {
                assert_eq!(res, Err(Errno::ECANCELED), "op {i}: AioCanceled")
            }
            AioCancelStat::AioAllDone => {
                assert!(res.is_ok(), "op {i}: AioAllDone, yet {res:?}")
            }
            AioCancelStat::AioNotCanceled => {}
        }
        counts[match stat {
            AioCancelStat::AioCanceled => 0,
            AioCancelStat::AioNotCanceled => 1,
            AioCancelStat::AioAllDone => 2,
        }] += 1;
    }
    println!("cancel answers: AioCanceled, AioNotCanceled, AioAllDone = {counts:?}");
}

/// A read waiting on a socket, and a write waiting on a full pipe, complete normally once the
/// other side acts (the wait for readiness does not lose the transfer).
#[test]
fn waiting_stream_operations_complete_when_ready() {
    let mut poll = Poll::new().unwrap();
    let (client, mut server) = idle_socket();
    let mut buf = [0u8; 64];
    let mut op = support::start(
        &poll,
        ReadAt::read_at(client.as_fd(), 0, &mut buf, 0),
        TOKEN,
    );
    std::thread::sleep(SETTLE);
    server.write_all(b"late data").unwrap();
    event_within_bound(&mut poll);
    assert_eq!(op.as_mut().aio_return(), Ok(9));
    drop(op);
    assert_eq!(&buf[..9], b"late data");

    let (r, w) = full_pipe();
    let data = [1u8; 4096];
    let mut op = support::start(&poll, WriteAt::write_at(w.as_fd(), 0, &data, 0), TOKEN);
    std::thread::sleep(SETTLE);
    let mut reader = std::fs::File::from(r);
    let mut drained = vec![0u8; 4096];
    reader.read_exact(&mut drained).unwrap();
    event_within_bound(&mut poll);
    assert_eq!(op.as_mut().aio_return(), Ok(4096));
}
