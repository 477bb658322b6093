//! The tokio layer reuses an operation's eventfd, still registered with tokio, for the next
//! operation polled on the same thread in the same runtime. These tests check that reuse never
//! changes what a future resolves to: no completion of an earlier operation (finished, or
//! dropped in flight) wakes a later one into a wrong or early result, and registrations never
//! cross runtimes (an operation in one runtime waiting on another runtime's reactor would
//! hang: every wait here is bounded), nor reach into a parent process's epoll set after `fork`.
//!
//! The reads are on sockets, whose data comes only when the test sends it, so that every
//! operation is still running after `submit` and waits on its eventfd.
#![cfg(all(feature = "tokio", target_os = "linux"))]

use std::{
    future::Future, io::Write, os::unix::net::UnixStream, pin::Pin, task::Poll, thread,
    time::Duration,
};

use mio_aio::tokio::AioFileExt;
use tokio::time::timeout;

/// Bounds every wait on a completion: far beyond any delay injected here.
const LIMIT: Duration = Duration::from_secs(10);

async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Lets the reactor deliver whatever events are pending.
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// One read on a socket, in flight until the test sends `msg`: it must stay pending until
/// then (whatever earlier operations left on a reused eventfd), and then return exactly `msg`.
async fn one_read(msg: &[u8]) {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let mut buf = [0u8; 64];
    let mut fut = Box::pin(ours.read_at(&mut buf, 0));
    assert!(poll_once(&mut fut).await.is_pending());
    settle().await;
    assert!(
        poll_once(&mut fut).await.is_pending(),
        "woken into a result before any data was sent"
    );
    peer.write_all(msg).unwrap();
    let n = timeout(LIMIT, fut).await.expect("no completion").unwrap();
    assert_eq!(&buf[..n], msg);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Many operations one after the other on one thread: each reuses the eventfd its predecessor
/// was signalled through, and each gets its own data, not an early wake-up.
#[test]
fn sequential_operations_each_get_their_own_result() {
    for rt in [current_thread(), multi_thread()] {
        rt.block_on(async {
            for i in 0..200u32 {
                one_read(format!("message {i}").as_bytes()).await;
            }
        });
    }
}

/// An operation dropped in flight (its eventfd is signalled later, or never), then new ones:
/// they complete with their own data only.
#[test]
fn operation_dropped_in_flight_then_new_ones() {
    for rt in [current_thread(), multi_thread()] {
        rt.block_on(async {
            for round in 0..5 {
                let (ours, peer) = UnixStream::pair().unwrap();
                let mut buf = [0u8; 16];
                let mut fut = Box::pin(ours.read_at(&mut buf, 0));
                assert!(poll_once(&mut fut).await.is_pending());
                // A backend that cannot cancel a socket read finishes it once data comes.
                let writer = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    let mut peer = peer;
                    let _ = peer.write_all(b"late");
                    peer
                });
                drop(fut);
                let _peer = writer.join().unwrap();
                one_read(format!("after drop {round}").as_bytes()).await;
                one_read(b"and another").await;
            }
        });
    }
}

/// 32 operations in flight at once, several rounds: the second round reuses the first's
/// eventfds, and every read returns the data sent to its own socket.
#[test]
fn concurrent_rounds_each_get_their_own_result() {
    for rt in [current_thread(), multi_thread()] {
        rt.block_on(async {
            for round in 0..4 {
                let (ours, mut peers): (Vec<_>, Vec<_>) =
                    (0..32).map(|_| UnixStream::pair().unwrap()).unzip();
                let mut bufs = vec![[0u8; 32]; 32];
                let mut futs: Vec<_> = ours
                    .iter()
                    .zip(bufs.iter_mut())
                    .map(|(ours, buf)| Box::pin(ours.read_at(buf, 0)))
                    .collect();
                for f in futs.iter_mut() {
                    assert!(poll_once(f).await.is_pending());
                }
                settle().await;
                // Complete them in reverse order.
                for (i, peer) in peers.iter_mut().enumerate().rev() {
                    peer.write_all(format!("r{round} op{i}").as_bytes())
                        .unwrap();
                }
                let mut lens = Vec::new();
                for f in futs {
                    lens.push(timeout(LIMIT, f).await.expect("no completion").unwrap());
                }
                for (i, (buf, n)) in bufs.iter().zip(lens).enumerate() {
                    assert_eq!(&buf[..n], format!("r{round} op{i}").as_bytes());
                }
            }
        });
    }
}

/// Two runtimes alive at once, used in turn from one thread: an operation never waits on a
/// registration of the other runtime (whose reactor nobody drives meanwhile: the wait would
/// time out).
#[test]
fn two_runtimes_in_turn_on_one_thread() {
    let (a, b) = (current_thread(), current_thread());
    let m = multi_thread();
    for i in 0..20 {
        a.block_on(one_read(format!("a{i}").as_bytes()));
        b.block_on(one_read(format!("b{i}").as_bytes()));
        m.block_on(one_read(format!("m{i}").as_bytes()));
    }
    // A runtime that is gone leaves its registrations in this thread's pool: the next runtime
    // must not use them.
    drop(a);
    let c = current_thread();
    for i in 0..5 {
        c.block_on(one_read(format!("c{i}").as_bytes()));
        b.block_on(one_read(format!("b again {i}").as_bytes()));
    }
}

/// A forked child that polls in a runtime of its own leaves the registrations it inherited
/// alone: dropping them would take the eventfds out of the parent's epoll set, which the child
/// shares, and the parent's next operation on a reused eventfd would never be woken.
#[test]
fn forked_child_leaves_the_parents_registrations_alone() {
    let rt = current_thread();
    // This thread's pool now holds the eventfd of a finished operation, in `rt`'s epoll set.
    rt.block_on(one_read(b"before fork"));
    // SAFETY: the child only runs this crate's and tokio's code on this thread and then
    // `_exit`s; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            // A runtime of its own: this thread's pool lets go of what it inherited.
            current_thread().block_on(one_read(b"in the child"));
        })
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
    // Reuses the pooled eventfd, which must still be in `rt`'s epoll set.
    rt.block_on(one_read(b"after fork"));
}
