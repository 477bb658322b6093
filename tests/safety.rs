//! Memory safety and threads: dropping operations in flight, reaping on another thread, many
//! operations at once, and `fork`.

mod support;

use std::{
    io::Write,
    os::fd::AsFd,
    pin::Pin,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
#[cfg(target_os = "linux")]
use mio_aio::{LioCbBuilder, LioOpcode, WriteAt};
use mio_aio::{ReadAt, SourceApi};

#[test]
fn public_types_are_send_and_sync() {
    use assert_impl::assert_impl;
    assert_impl!(Send: mio_aio::ReadAt<'static>, mio_aio::ReadvAt<'static>, mio_aio::WriteAt<'static>);
    assert_impl!(Sync: mio_aio::ReadAt<'static>, mio_aio::ReadvAt<'static>, mio_aio::WriteAt<'static>);
    assert_impl!(Send: mio_aio::WritevAt<'static>, mio_aio::Fsync<'static>, mio_aio::LioCb<'static>);
    assert_impl!(Sync: mio_aio::WritevAt<'static>, mio_aio::Fsync<'static>, mio_aio::LioCb<'static>);
    assert_impl!(Send: mio_aio::LioCbBuilder<'static>, mio_aio::LioResult, mio_aio::LioError);
    assert_impl!(Sync: mio_aio::LioCbBuilder<'static>, mio_aio::LioResult, mio_aio::LioError);
}

/// A read that takes 200 ms is dropped just after submission: the drop cancels it and waits,
/// so the buffer is never written after it is released.
#[cfg(target_os = "linux")]
#[test]
fn drop_in_flight_waits_for_the_kernel() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let file = std::fs::File::open(fs.path()).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = vec![0u8; 4096];
    let op = support::start(
        &poll,
        ReadAt::read_at(file.as_fd(), 8192, &mut buf, 0),
        Token(1),
    );
    let t = Instant::now();
    drop(op);
    let took = t.elapsed();
    // The buffer is ours again: the kernel either cancelled the read or finished it.
    buf.fill(0xee);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        buf.iter().all(|&b| b == 0xee),
        "the buffer was written after the drop"
    );
    println!("drop took {took:?} (cancelled, or waited for the 200 ms read)");
    // The filesystem is still usable and a new operation completes with its event.
    let mut buf2 = vec![0u8; 16];
    let mut op = support::start(
        &poll,
        ReadAt::read_at(file.as_fd(), 0, &mut buf2, 0),
        Token(2),
    );
    support::wait_for(&mut poll, Token(2));
    assert_eq!(op.as_mut().aio_return(), Ok(16));
    drop(op);
    assert_eq!(buf2, support::fuse::expected(0, 16));
}

/// Dropping a batch in flight behaves the same way.
#[cfg(target_os = "linux")]
#[test]
fn drop_batch_in_flight_waits_for_the_kernel() {
    use support::fuse::{SlowFs, SlowFsOptions};
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions::default()) else {
        return;
    };
    let file = std::fs::File::open(fs.path()).unwrap();
    let mut bufs = vec![[0u8; 512]; 4];
    {
        let mut builder = LioCbBuilder::with_capacity(4);
        for (i, b) in bufs.iter_mut().enumerate() {
            builder = builder.emplace_mut_slice(
                file.as_fd(),
                (i * 65536) as u64,
                b,
                0,
                LioOpcode::LIO_READ,
            );
        }
        let mut batch = builder.finish();
        batch.submit().unwrap();
        drop(batch);
    }
    for b in &mut bufs {
        b.fill(0xee);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        bufs.iter().flatten().all(|&b| b == 0xee),
        "a buffer was written after the drop"
    );
}

/// Submitted on one thread, polled and reaped on another (as tokio's multi-thread runtime
/// does).
#[test]
fn submit_on_one_thread_reap_on_another() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[9u8; 65536]).unwrap();
    let mut poll = Poll::new().unwrap();
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 65536].into_boxed_slice());
    let file: &'static std::fs::File = Box::leak(Box::new(f));
    let mut op = support::start(&poll, ReadAt::read_at(file.as_fd(), 0, buf, 0), Token(5));
    let reaped = std::thread::spawn(move || {
        support::wait_for(&mut poll, Token(5));
        op.as_mut().aio_return()
    })
    .join()
    .unwrap();
    assert_eq!(reaped, Ok(65536));
}

/// Ten thousand operations in flight at once from one thread, each with its own token.
#[cfg(not(target_os = "freebsd"))]
#[test]
fn ten_thousand_operations_in_flight() {
    many_operations_in_flight(10_000);
}

/// On FreeBSD, a process may have at most `vfs.aio.max_aio_queue_per_proc` operations
/// submitted and not yet returned (256 by default; beyond, `submit` gives `EAGAIN`): as many as
/// that allows, less a margin, in a child process so that no other test shares the queue.
#[cfg(target_os = "freebsd")]
#[test]
fn ten_thousand_operations_in_flight() {
    support::in_child("ten_thousand_operations_in_flight", &[], || {
        let out = std::process::Command::new("sysctl")
            .args(["-n", "vfs.aio.max_aio_queue_per_proc"])
            .output()
            .unwrap();
        let limit: usize = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        many_operations_in_flight(limit.saturating_sub(16).min(10_000));
    });
}

fn many_operations_in_flight(n: usize) {
    let Some((f, data)) = records_of_8(n) else {
        return;
    };
    let mut poll = Poll::new().unwrap();
    let mut bufs = vec![[0u8; 8]; n];
    let mut ops: Vec<Option<Pin<Box<ReadAt>>>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            let op = support::start(
                &poll,
                ReadAt::read_at(f.as_fd(), (i * 8) as u64, b, 0),
                Token(i),
            );
            Some(op)
        })
        .collect();
    complete_reads_of_8(&mut poll, &mut ops);
    drop(ops);
    assert!(bufs.iter().flatten().eq(data.iter()));
}

/// A file of `n` 8-byte records (record `i` is eight bytes `i as u8`) and its content, with
/// the descriptor limit raised for `n` registered operations; `None` (test skipped, with the
/// reason printed) if the limit cannot be raised that far.
fn records_of_8(n: usize) -> Option<(std::fs::File, Vec<u8>)> {
    let limit = support::raise_nofile_limit().unwrap();
    if limit < n as u64 + 200 {
        support::skip(&format!(
            "RLIMIT_NOFILE hard limit {limit} is below {n} + 200"
        ));
        return None;
    }
    let data: Vec<u8> = (0..n * 8).map(|i| (i / 8) as u8).collect();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&data).unwrap();
    Some((f, data))
}

/// Polls until every operation of `ops` (its token is its index) has had its event, and
/// checks that each read 8 bytes. Events of other tokens are ignored.
fn complete_reads_of_8(poll: &mut Poll, ops: &mut [Option<Pin<Box<ReadAt>>>]) {
    let n = ops.len();
    let mut events = Events::with_capacity(1024);
    let mut done = 0;
    let start = Instant::now();
    while done < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {done} of {n} events"
        );
        match poll.poll(&mut events, Some(Duration::from_secs(5))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        for ev in events.iter().filter(|ev| ev.token().0 < n) {
            let i = ev.token().0;
            let op = ops[i].as_mut().expect("one event per operation");
            assert_eq!(op.as_mut().aio_return(), Ok(8), "operation {i}");
            ops[i] = None;
            done += 1;
        }
    }
}

/// More completions than a ring's completion queue holds: with io_uring the kernel keeps the
/// excess in its overflow list, and reaping must flush it, or operations whose events arrived
/// would stay "in progress" for ever. The second thread to submit gets the second ring (one
/// per CPU), whose queue is sized for its share of `MIO_AIO_MAX_IN_FLIGHT`: here 1024 entries,
/// for 900 reads that each post two (`MIO_AIO_CACHED_READS=0`, or `submit` would do these
/// cached reads itself and the ring would see none). io_uring only: FreeBSD would refuse 900
/// operations in flight (`vfs.aio.max_aio_queue_per_proc`, 256 by default).
#[cfg(target_os = "linux")]
#[test]
fn completion_queue_overflow_loses_no_result() {
    const N: usize = 900;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return support::skip("one CPU: io_uring uses a single ring, sized for every operation");
    }
    support::in_child(
        "completion_queue_overflow_loses_no_result",
        &[
            ("MIO_AIO_MAX_IN_FLIGHT", "1024"),
            ("MIO_AIO_CACHED_READS", "0"),
        ],
        || {
            let Some((f, data)) = records_of_8(N) else {
                return;
            };
            let mut poll = Poll::new().unwrap();
            // Another thread submits first, so this one gets the second ring.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut b = [0u8; 8];
                    let mut op =
                        support::start(&poll, ReadAt::read_at(f.as_fd(), 0, &mut b, 0), Token(N));
                    while op.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert_eq!(op.as_mut().aio_return(), Ok(8));
                });
            });
            let mut bufs = vec![[0u8; 8]; N];
            let mut ops: Vec<Option<Pin<Box<ReadAt>>>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| {
                    let op = ReadAt::read_at(f.as_fd(), (i * 8) as u64, b, 0);
                    Some(support::start(&poll, op, Token(i)))
                })
                .collect();
            complete_reads_of_8(&mut poll, &mut ops);
            drop(ops);
            assert!(bufs.iter().flatten().eq(data.iter()));
        },
    );
}

/// After `fork`, the child can drop the operations it inherited and run its own, without
/// disturbing the parent's operation in flight.
#[cfg(target_os = "linux")]
#[test]
fn fork_child_does_not_disturb_the_parent() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[1u8; 1 << 20]).unwrap();
    let mut poll = Poll::new().unwrap();
    let wbuf = vec![2u8; 1 << 20];
    let mut op = support::start(&poll, WriteAt::write_at(f.as_fd(), 0, &wbuf, 0), Token(1));

    // SAFETY: the child only runs this crate's code and then `_exit`s; it never returns into the
    // test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The inherited operation belongs to the parent's queue: dropping it must not wait
            // for, cancel or deregister it.
            drop(op);
            // The child gets queues of its own.
            let mut rbuf = [0u8; 4];
            let mut child_op = Box::pin(ReadAt::read_at(f.as_fd(), 0, &mut rbuf, 0));
            child_op.as_mut().submit().unwrap();
            while child_op.as_mut().error() == Err(mio_aio::Errno::EINPROGRESS) {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(child_op.as_mut().aio_return(), Ok(4));
        }))
        .map_or(1, |_| 0);
        // SAFETY: ends the child without running the parent's atexit handlers or the harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    support::wait_for(&mut poll, Token(1));
    assert_eq!(op.as_mut().aio_return(), Ok(1 << 20));
}

/// Every descriptor the crate opens (rings, eventfds) is close-on-exec, so a program that execs
/// does not leak them into the new image.
#[cfg(target_os = "linux")]
#[test]
fn crate_descriptors_are_close_on_exec() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abcd").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let mut op = support::start(&poll, ReadAt::read_at(f.as_fd(), 0, &mut buf, 0), Token(1));
    support::wait_for(&mut poll, Token(1));
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target.contains("eventfd") || target.contains("io_uring") {
            let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
            // SAFETY: F_GETFD only queries the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(
                flags >= 0 && flags & libc::FD_CLOEXEC != 0,
                "fd {fd} ({target}) is inherited by exec"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "found none of the crate's descriptors");
    assert_eq!(op.as_mut().aio_return(), Ok(4));
}

/// Three threads, each with its own `Poll`, submitting and reaping reads and writes at once.
/// io_uring gives each thread one of its per-CPU rings (as many as CPUs, at most 8), so with
/// fewer than three CPUs two of the threads share a ring; and each thread's operations are
/// reaped by the others too. (This test passed even while a stale submission-queue tail
/// corrupted SQEs of threads sharing a ring: tests/stress.rs is what caught that.)
#[test]
fn threads_sharing_the_ring_keep_every_buffer_intact() {
    use std::sync::Arc;
    let data: Arc<Vec<u8>> = Arc::new((0..256 * 4096).map(|i| (i % 251) as u8).collect());
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&data).unwrap();
    let f = Arc::new(f);
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (f, data) = (f.clone(), data.clone());
            std::thread::spawn(move || {
                for round in 0..60 {
                    let mut poll = Poll::new().unwrap();
                    let mut bufs = vec![vec![0u8; 4096]; 32];
                    let block = |i: usize| (i * 7 + round * 13 + t * 100) % 256;
                    let mut reads = Vec::new();
                    let mut writes = Vec::new();
                    for (i, b) in bufs.iter_mut().enumerate() {
                        let off = (block(i) * 4096) as u64;
                        if i % 2 == 0 {
                            let op = support::start(
                                &poll,
                                ReadAt::read_at(f.as_fd(), off, b, 0),
                                Token(i),
                            );
                            reads.push((i, op));
                        } else {
                            let src = &data[block(i) * 4096..(block(i) + 1) * 4096];
                            let op = support::start(
                                &poll,
                                mio_aio::WriteAt::write_at(f.as_fd(), off, src, 0),
                                Token(i),
                            );
                            writes.push((i, op));
                        }
                    }
                    let mut events = mio::Events::with_capacity(64);
                    let mut seen = 0;
                    while seen < 32 {
                        match poll.poll(&mut events, Some(Duration::from_secs(20))) {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            r => r.unwrap(),
                        }
                        assert!(!events.is_empty(), "operations never completed");
                        for ev in events.iter() {
                            let i = ev.token().0;
                            let res = match reads.iter_mut().find(|(j, _)| *j == i) {
                                Some((_, op)) => op.as_mut().aio_return(),
                                None => {
                                    let (_, op) = writes.iter_mut().find(|(j, _)| *j == i).unwrap();
                                    op.as_mut().aio_return()
                                }
                            };
                            assert_eq!(res, Ok(4096));
                            seen += 1;
                        }
                    }
                    drop((reads, writes));
                    for (i, b) in bufs.iter().enumerate().step_by(2) {
                        assert!(b[..] == data[block(i) * 4096..(block(i) + 1) * 4096]);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// An operation outlives the thread that submitted it: its event still arrives in the loop
/// that registered it. io_uring, which ties each request to the submitting thread, cancels a
/// request that is still waiting when that thread exits (here a socket read with no data yet):
/// it completes with `ECANCELED`, as the crate documentation ("Threads that exit") says. Kernel
/// AIO and the thread pool complete it with the data sent afterwards.
#[cfg(target_os = "linux")]
#[test]
fn operation_outlives_the_thread_that_submitted_it() {
    use std::os::unix::net::UnixStream;
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 16];
    let mut op = std::thread::scope(|s| {
        let (poll, fd, buf) = (&poll, ours.as_fd(), &mut buf);
        s.spawn(move || support::start(poll, ReadAt::read_at(fd, 0, buf, 0), Token(3)))
            .join()
            .unwrap()
    });
    // The submitting thread has exited.
    peer.write_all(b"hello").unwrap();
    support::wait_for(&mut poll, Token(3));
    let result = op.as_mut().aio_return();
    drop(op);
    if mio_aio::backend().unwrap() == mio_aio::Backend::IoUring {
        assert_eq!(result, Err(mio_aio::Errno::ECANCELED));
    } else {
        assert_eq!(result, Ok(5));
        assert_eq!(&buf[..5], b"hello");
    }
}
