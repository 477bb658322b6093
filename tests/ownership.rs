//! Ownership that cannot alias: an operation's eventfd reports only to the `Poll` it was
//! registered with, even after an epoll fd number is reused; the crate's pooled eventfds go
//! back to the process once their `Poll` is gone; and a forked child never touches what its
//! parent owns. The tests that depend on fd numbers run in a child process of their own.
#![cfg(target_os = "linux")]

mod support;

use std::{
    io::Write,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{Errno, LioCbBuilder, LioOpcode, ReadAt, SourceApi};

fn file_with(len: usize) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&vec![7u8; len]).unwrap();
    f
}

/// A new `Poll` whose epoll fd has the number `n`, which must be free (the lowest free numbers
/// are taken first, so the `Poll`s that got lower ones are dropped again).
fn poll_numbered(n: RawFd) -> Poll {
    let mut lower = Vec::new();
    loop {
        let p = Poll::new().unwrap();
        assert!(p.as_raw_fd() <= n, "fd {n} was taken by something else");
        if p.as_raw_fd() == n {
            return p;
        }
        lower.push(p);
    }
}

/// Runs `n` reads of 4 bytes at once, each registered with `poll`, to their end.
fn read_many(f: &std::fs::File, poll: &mut Poll, n: usize) {
    let mut bufs = vec![[0u8; 4]; n];
    let mut ops: Vec<_> = (bufs.iter_mut().enumerate())
        .map(|(i, b)| support::start(poll, ReadAt::read_at(f.as_fd(), 0, b, 0), Token(i)))
        .collect();
    let (mut events, start) = (Events::with_capacity(64), Instant::now());
    while ops
        .iter_mut()
        .any(|op| op.as_mut().error() == Err(Errno::EINPROGRESS))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "reads never finished"
        );
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
    }
    for op in &mut ops {
        assert_eq!(op.as_mut().aio_return(), Ok(4));
    }
}

/// No event at all on `poll` within 200 ms (interrupted waits are resumed).
fn assert_quiet(poll: &mut Poll) {
    let (mut events, start) = (Events::with_capacity(8), Instant::now());
    while let Some(left) = Duration::from_millis(200).checked_sub(start.elapsed()) {
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
        assert!(tokens.is_empty(), "unexpected events {tokens:?}");
    }
}

/// An eventfd parked for a registry clone's fd number stays in the clone's epoll set (the
/// original `Poll` keeps it alive); when a new `Poll` gets that number, its operations must not
/// reuse that eventfd, or the original `Poll` would see the old token again.
#[test]
fn a_token_never_returns_to_the_poll_of_a_dropped_registry_clone() {
    support::in_child(&support::current_test_name(), &[], || {
        let f = file_with(4096);
        let mut original = Poll::new().unwrap();
        let clone = original.registry().try_clone().unwrap();
        let n = clone.as_fd().as_raw_fd();
        {
            let mut buf = [0u8; 4];
            let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
            clone.register(&mut op, Token(111), mio_aio::AIO).unwrap();
            let mut op = Box::pin(op);
            op.as_mut().submit().unwrap();
            support::wait_for(&mut original, Token(111));
            assert_eq!(op.as_mut().aio_return(), Ok(4));
        }
        drop(clone);
        let mut newcomer = poll_numbered(n);
        let mut buf = [0u8; 4];
        let op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
        let mut op = support::start(&newcomer, op, Token(222));
        support::wait_for(&mut newcomer, Token(222));
        // While the operation lives (its eventfd's count not yet reset).
        assert_quiet(&mut original);
        assert_eq!(op.as_mut().aio_return(), Ok(4));
    });
}

/// An operation registered with a `Poll` that was dropped can be registered with the next
/// `Poll`, even when that one got the same fd number.
#[test]
fn an_operation_registers_with_a_new_poll_of_the_same_fd_number() {
    support::in_child(&support::current_test_name(), &[], || {
        let f = file_with(4096);
        let first = Poll::new().unwrap();
        let n = first.as_raw_fd();
        let mut buf = [0u8; 4];
        let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
        first
            .registry()
            .register(&mut op, Token(1), mio_aio::AIO)
            .unwrap();
        drop(first);
        let mut second = poll_numbered(n);
        second
            .registry()
            .register(&mut op, Token(2), mio_aio::AIO)
            .expect("register with the new Poll");
        let mut op = Box::pin(op);
        op.as_mut().submit().unwrap();
        support::expect_one_event(&mut second, Token(2));
        assert_eq!(op.as_mut().aio_return(), Ok(4));
    });
}

/// Open eventfds of this process.
fn eventfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().contains("eventfd"))
        .count()
}

/// Rounds of (new `Poll`, 40 reads at once, drop everything) leave at most about one round's
/// eventfds open, not 40 per `Poll` that ever lived. Each `Poll`'s number is taken by another
/// file after it is dropped, so every round has a new one.
#[test]
fn eventfds_of_dropped_polls_go_back_to_the_process() {
    support::in_child(&support::current_test_name(), &[], || {
        let f = file_with(4096);
        let mut placeholders: Vec<OwnedFd> = Vec::new();
        for _ in 0..6 {
            let mut poll = Poll::new().unwrap();
            read_many(&f, &mut poll, 40);
            drop(poll);
            placeholders.push(std::fs::File::open("/dev/null").unwrap().into());
        }
        let open = eventfds();
        assert!(open <= 40 + 4, "{open} eventfds open after 6 rounds of 40");
    });
}

/// With every descriptor of the process in use, a batch that needs one more (io_uring gives a
/// batch a ring of its own) gets it back from the eventfds the crate keeps pooled.
#[test]
fn a_batch_gets_descriptors_back_from_the_pool() {
    support::in_child(&support::current_test_name(), &[], || {
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_NOFILE, 128, 128).unwrap();
        let f = file_with(8 * 1000);
        let mut poll = Poll::new().unwrap();
        read_many(&f, &mut poll, 40);
        let mut bufs = vec![[0u8; 8]; 1000];
        let mut builder = LioCbBuilder::with_capacity(1000);
        for (i, b) in bufs.iter_mut().enumerate() {
            builder = builder.emplace_mut_slice(f.as_fd(), 8 * i as u64, b, 0, LioOpcode::LIO_READ);
        }
        let mut lio = builder.finish();
        poll.registry()
            .register(&mut lio, Token(7), mio_aio::LIO)
            .unwrap();
        let mut hog = Vec::new();
        let full = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) => break e,
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::EMFILE));
        let submitted = lio.submit();
        assert!(
            submitted.is_ok(),
            "submit failed with every descriptor in use"
        );
        drop(hog);
        support::wait_for(&mut poll, Token(7));
        let results: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
        assert_eq!(results, vec![Ok(8); 1000]);
    });
}

/// A forked child that asks whether a batch it inherited in flight is in progress, and
/// registers it with the `Poll` it inherited, touches neither the parent's ring (not mapped in
/// the child) nor the parent's registration: the parent's batch ends with its own token.
#[test]
fn a_forked_child_leaves_an_inherited_batch_alone() {
    support::in_child(&support::current_test_name(), &[], || {
        let (r, mut w) = std::io::pipe().unwrap();
        let mut poll = Poll::new().unwrap();
        let mut buf = [0u8; 4];
        let mut lio = LioCbBuilder::with_capacity(1)
            .emplace_mut_slice(r.as_fd(), 0, &mut buf, 0, LioOpcode::LIO_READ)
            .finish();
        poll.registry()
            .register(&mut lio, Token(7), mio_aio::LIO)
            .unwrap();
        lio.submit().unwrap();
        // SAFETY: the child only runs this crate's code and then `_exit`s; it never returns into
        // the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // The parent's request never finishes here: the child does not wait for it.
                assert!(!lio.in_progress());
                // Its registration is the parent's too: nothing to signal from here.
                let _ = lio.resubmit();
                poll.registry()
                    .register(&mut lio, Token(99), mio_aio::LIO)
                    .unwrap();
                drop(lio);
            }))
            .map_or(1, |_| 0);
            // SAFETY: ends the child without running the harness or atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // Data first, so that the read ends (and the batch can be dropped) whatever the child did.
        w.write_all(b"abcd").unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child: {status:#x}"
        );
        support::expect_one_event(&mut poll, Token(7));
        let results: Vec<_> = lio.into_results(|it| it.map(|r| r.result).collect());
        assert_eq!(results, vec![Ok(4)]);
        assert_eq!(&buf, b"abcd");
    });
}
