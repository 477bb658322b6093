//! The tokio layer (`mio_aio::tokio`): every operation and batches as futures, on the
//! current-thread and the multi-thread runtime; dropping futures in flight; many futures at
//! once; completion on another worker; full queues (in a child process with a tiny
//! `MIO_AIO_MAX_IN_FLIGHT`); and, on Linux, that eventfds stay in tokio's epoll set only to be
//! reused.
//!
//! Run with `cargo test --features tokio --test tokio` (the backend can be forced with
//! `MIO_AIO_BACKEND`).
#![cfg(feature = "tokio")]

use std::{
    future::Future,
    io::{IoSlice, IoSliceMut, Read, Write},
    os::{fd::AsFd, unix::net::UnixStream},
    path::Path,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
    thread,
    time::{Duration, Instant},
};

use mio_aio::{
    tokio::{AioFileExt, AioFut, LioFut, ReadAt},
    Errno, LioCbBuilder, LioOpcode, WriteAt,
};
use tokio::task::JoinSet;

const BLOCK: usize = 4096;

/// The byte at `pos` of the test pattern: never 0, so that it can be told from a hole.
fn pattern(pos: usize) -> u8 {
    (pos % 251) as u8 + 1
}

fn pattern_vec(len: usize) -> Vec<u8> {
    // One period, repeated with `memcpy`: fast even in debug builds.
    let period: Vec<u8> = (0..251).map(pattern).collect();
    let mut v = period.repeat(len / 251 + 1);
    v.truncate(len);
    v
}

/// A temporary file holding `data`, open for reading and writing.
fn file_with(data: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f
}

/// A temporary file on a disk-backed file system where there is one (slower writes).
fn disk_tempfile() -> std::fs::File {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        if let Ok(f) = tempfile::tempfile_in(var_tmp) {
            return f;
        }
    }
    tempfile::tempfile().unwrap()
}

/// Polls every future until all are done (no `futures` crate): the futures may borrow.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Polls `fut` once, in the current task.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Runs each body on a current-thread runtime and on a 4-worker multi-thread runtime.
macro_rules! on_both_runtimes {
    ($($(#[$meta:meta])* async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            #[tokio::test(flavor = "current_thread")]
            async fn current_thread() $body

            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn multi_thread() $body
        }
    )*};
}

on_both_runtimes! {
    async fn read_at() {
        let data = pattern_vec(3 * BLOCK);
        let file = file_with(&data);
        let mut buf = vec![0u8; BLOCK];
        assert_eq!(file.read_at(&mut buf, 100).await.unwrap(), BLOCK);
        assert_eq!(buf, data[100..100 + BLOCK]);
        // Short at the end of the file, 0 beyond it.
        assert_eq!(file.read_at(&mut buf, 3 * BLOCK as u64 - 10).await.unwrap(), 10);
        assert_eq!(buf[..10], data[3 * BLOCK - 10..]);
        assert_eq!(file.read_at(&mut buf, 1 << 20).await.unwrap(), 0);
        // Through a `tokio::fs::File` too.
        let tfile = tokio::fs::File::from_std(file.try_clone().unwrap());
        assert_eq!(tfile.read_at(&mut buf[..4], 1).await.unwrap(), 4);
        assert_eq!(buf[..4], data[1..5]);
    }

    async fn readv_at() {
        let data = pattern_vec(10_000);
        let file = file_with(&data);
        let (mut a, mut b, mut c) = (vec![0u8; 100], vec![0u8; 5000], vec![0u8; 3]);
        let mut bufs = [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ];
        assert_eq!(file.readv_at(&mut bufs, 7).await.unwrap(), 5103);
        assert_eq!(a, data[7..107]);
        assert_eq!(b, data[107..5107]);
        assert_eq!(c, data[5107..5110]);
    }

    async fn write_at() {
        let file = tempfile::tempfile().unwrap();
        let data = pattern_vec(3 * BLOCK + 17);
        assert_eq!(file.write_at(&data, 0).await.unwrap(), data.len());
        assert_eq!(file.write_at(b"xyz", 5).await.unwrap(), 3);
        // Beyond the end: a hole, then the data.
        let end = data.len() as u64 + 1000;
        assert_eq!(file.write_at(b"tail", end).await.unwrap(), 4);
        let mut expected = data.clone();
        expected[5..8].copy_from_slice(b"xyz");
        expected.resize(end as usize, 0);
        expected.extend_from_slice(b"tail");
        assert_eq!(read_all(&file), expected);
    }

    async fn writev_at() {
        let file = tempfile::tempfile().unwrap();
        let (a, b) = (pattern_vec(5000), b"--middle--".to_vec());
        let bufs = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&a[..7])];
        assert_eq!(file.writev_at(&bufs, 3).await.unwrap(), 5017);
        let mut expected = vec![0u8; 3];
        expected.extend_from_slice(&a);
        expected.extend_from_slice(&b);
        expected.extend_from_slice(&a[..7]);
        assert_eq!(read_all(&file), expected);
    }

    async fn sync_all_and_sync_data() {
        let file = disk_tempfile();
        file.write_at(b"durable", 0).await.unwrap();
        // `std::fs::File` has inherent `sync_all`/`sync_data`: name the trait.
        AioFileExt::sync_all(&file).await.unwrap();
        file.write_at(b"DURABLE", 0).await.unwrap();
        AioFileExt::sync_data(&file).await.unwrap();
        let tfile = tokio::fs::File::from_std(file.try_clone().unwrap());
        AioFileExt::sync_all(&tfile).await.unwrap();
        // A type without such methods.
        file.as_fd().sync_all().await.unwrap();
        assert_eq!(read_all(&file), b"DURABLE");
    }

    async fn batch() {
        let data = pattern_vec(8 * BLOCK);
        let file = file_with(&data);
        let out = tempfile::tempfile().unwrap();
        let mut bufs = vec![vec![0u8; BLOCK]; 6];
        let mut past_the_end = [0u8; 8];
        let mut builder = LioCbBuilder::with_capacity(9);
        for (i, buf) in bufs.iter_mut().enumerate() {
            let offset = (i * BLOCK + i) as u64;
            builder =
                builder.emplace_mut_slice(file.as_fd(), offset, buf, 0, LioOpcode::LIO_READ);
        }
        let batch = builder
            .emplace_slice(out.as_fd(), 0, b"written", 0, LioOpcode::LIO_WRITE)
            .emplace_slice(out.as_fd(), 0, b"", 0, LioOpcode::LIO_NOP)
            // A read past the end of the file: 0 bytes.
            .emplace_mut_slice(file.as_fd(), 1 << 30, &mut past_the_end, 0, LioOpcode::LIO_READ)
            .finish();
        let results = LioFut::new(batch).await.unwrap();
        let counts: Vec<isize> = results.into_iter().map(|r| r.result.unwrap()).collect();
        assert_eq!(counts, [4096, 4096, 4096, 4096, 4096, 4096, 7, 0, 0]);
        for (i, buf) in bufs.iter().enumerate() {
            let start = i * BLOCK + i;
            assert_eq!(buf[..], data[start..start + BLOCK], "block {i}");
        }
        assert_eq!(read_all(&out), b"written");
    }

    async fn batch_with_operations_that_cannot_start() {
        let file = file_with(&pattern_vec(BLOCK));
        let mut good = [0u8; 16];
        let batch = LioCbBuilder::with_capacity(3)
            .emplace_mut_slice(file.as_fd(), 0, &mut good, 0, LioOpcode::LIO_READ)
            // A read into a shared buffer is refused before it reaches the kernel.
            .emplace_slice(file.as_fd(), 0, &[0u8; 4], 0, LioOpcode::LIO_READ)
            .emplace_slice(file.as_fd(), u64::MAX, b"x", 0, LioOpcode::LIO_WRITE)
            .finish();
        let results = LioFut::from(batch).await.unwrap();
        assert_eq!(results[0].result, Ok(16));
        assert_eq!(results[1].result, Err(Errno::EINVAL));
        assert_eq!(results[2].result, Err(Errno::EINVAL));
        assert_eq!(good[..], pattern_vec(16)[..]);

        // Nothing can start at all: the future still resolves.
        let batch = LioCbBuilder::with_capacity(1)
            .emplace_slice(file.as_fd(), 0, &[0u8; 4], 0, LioOpcode::LIO_READ)
            .finish();
        let results = LioFut::new(batch).await.unwrap();
        assert_eq!(results[0].result, Err(Errno::EINVAL));
        // An empty batch, and a batch of no-ops.
        assert!(LioFut::new(LioCbBuilder::with_capacity(0).finish()).await.unwrap().is_empty());
        let nops = LioCbBuilder::with_capacity(2)
            .emplace_slice(file.as_fd(), 0, b"", 0, LioOpcode::LIO_NOP)
            .emplace_slice(file.as_fd(), 0, b"", 0, LioOpcode::LIO_NOP)
            .finish();
        let results = LioFut::new(nops).await.unwrap();
        assert!(results.iter().all(|r| r.result == Ok(0)));
    }

    async fn errors_carry_the_errno() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let e = read_only.write_at(b"x", 0).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        let write_only = std::fs::File::options().write(true).open(&path).unwrap();
        let mut buf = [0u8; 3];
        let e = write_only.read_at(&mut buf, 0).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        // An offset no file can have.
        let e = read_only.read_at(&mut buf, u64::MAX).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }

    async fn creating_a_future_submits_nothing() {
        let file = tempfile::tempfile().unwrap();
        let fut = file.write_at(b"never", 0);
        tokio::task::yield_now().await;
        drop(fut);
        let fut = AioFileExt::sync_all(&file);
        drop(fut);
        assert_eq!(file.metadata().unwrap().len(), 0);
        // Built by hand, then awaited.
        let op = WriteAt::write_at(file.as_fd(), 0, b"built", 0);
        assert_eq!(AioFut::new(op).await.unwrap(), 5);
        assert_eq!(read_all(&file), b"built");
    }

    async fn drop_a_64_mib_write_in_flight() {
        const LEN: usize = 64 << 20;
        let file = disk_tempfile();
        let data = pattern_vec(LEN);
        let mut fut = Box::pin(file.write_at(&data, 0));
        // The first poll submits; the write is then (usually) still running.
        let first = poll_once(&mut fut).await;
        let inline = first.is_ready();
        drop(fut);
        // The kernel is done with `data` now: it may be changed (and freed).
        drop(data);
        if let Poll::Ready(r) = first {
            assert_eq!(r.unwrap(), LEN);
        }
        // Whatever was written is the data (or nothing): no torn byte, nothing extra.
        let written = read_all(&file);
        assert!(written.len() <= LEN, "{} bytes", written.len());
        let expected = pattern_vec(written.len());
        for (i, (got, want)) in written.chunks(BLOCK).zip(expected.chunks(BLOCK)).enumerate() {
            if got != want && got.iter().any(|&b| b != 0) {
                let at = got.iter().zip(want).position(|(&g, &w)| g != 0 && g != w);
                assert!(at.is_none(), "block {i}: a byte is neither 0 nor the data");
            }
        }
        println!("64 MiB write: {} bytes written (completed at submission: {inline})",
            written.len());
        // The runtime still works.
        assert_eq!(file.write_at(b"after", 0).await.unwrap(), 5);
    }

    async fn drop_a_blocked_read_and_a_blocked_batch() {
        // Reads from an empty socket wait until a peer writes: in flight for sure. A helper
        // thread writes after a while, in case the backend cannot cancel (then the drop
        // waits for that write).
        for batch in [false, true] {
            let (ours, mut peer) = UnixStream::pair().unwrap();
            let writer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                let _ = peer.write_all(b"late data");
                peer
            });
            let mut buf = [0u8; 64];
            let started = Instant::now();
            let r = if batch {
                let cb = LioCbBuilder::with_capacity(1)
                    .emplace_mut_slice(ours.as_fd(), 0, &mut buf, 0, LioOpcode::LIO_READ)
                    .finish();
                tokio::time::timeout(Duration::from_millis(30), LioFut::new(cb))
                    .await
                    .map(drop)
            } else {
                tokio::time::timeout(Duration::from_millis(30), ours.read_at(&mut buf, 0))
                    .await
                    .map(drop)
            };
            assert!(r.is_err(), "the read completed with no data to read");
            assert!(started.elapsed() < Duration::from_secs(5));
            let _peer = writer.join().unwrap();
        }
        // The runtime still works.
        let file = file_with(b"ok");
        let mut buf = [0u8; 2];
        assert_eq!(file.read_at(&mut buf, 0).await.unwrap(), 2);
    }

    async fn a_thousand_futures_in_tasks() {
        const N: usize = 1000;
        let data = pattern_vec(N * BLOCK);
        let file = Arc::new(file_with(&data));
        let data = Arc::new(data);
        let mut set = JoinSet::new();
        for i in 0..N {
            let (file, data) = (Arc::clone(&file), Arc::clone(&data));
            set.spawn(async move {
                let mut buf = vec![0u8; BLOCK];
                // Every other block is written back in place, the rest read.
                let offset = (i * BLOCK) as u64;
                if i % 2 == 0 {
                    let n = file.read_at(&mut buf, offset).await.unwrap();
                    assert_eq!(n, BLOCK);
                    assert!(buf[..] == data[i * BLOCK..(i + 1) * BLOCK], "block {i}");
                } else {
                    let block = &data[i * BLOCK..(i + 1) * BLOCK];
                    assert_eq!(file.write_at(block, offset).await.unwrap(), BLOCK);
                }
                i
            });
        }
        let mut done = vec![false; N];
        while let Some(r) = set.join_next().await {
            done[r.unwrap()] = true;
        }
        assert!(done.iter().all(|&d| d));
        assert!(read_all(&file) == *data);
    }

    async fn a_thousand_futures_in_one_task() {
        const N: usize = 1000;
        let data = pattern_vec(N * BLOCK);
        let file = file_with(&data);
        let mut bufs = vec![vec![0u8; BLOCK]; N];
        let futs: Vec<ReadAt<'_>> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| file.read_at(buf, ((N - 1 - i) * BLOCK) as u64))
            .collect();
        let results = join_all(futs).await;
        assert!(results.into_iter().all(|r| r.unwrap() == BLOCK));
        for (i, buf) in bufs.iter().enumerate() {
            let start = (N - 1 - i) * BLOCK;
            assert!(buf[..] == data[start..start + BLOCK], "block {i}");
        }
    }

    async fn a_loop_of_quick_reads_lets_other_tasks_run() {
        let file = file_with(&pattern_vec(BLOCK));
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        let task = tokio::spawn(async move { set.store(true, Ordering::SeqCst) });
        let mut buf = [0u8; 16];
        let mut reads = 0;
        while !flag.load(Ordering::SeqCst) && reads < 100_000 {
            file.read_at(&mut buf, 0).await.unwrap();
            reads += 1;
        }
        assert!(flag.load(Ordering::SeqCst), "the other task never ran");
        task.await.unwrap();
    }
}

/// The whole content of `file`, read with plain `pread`s.
fn read_all(file: &std::fs::File) -> Vec<u8> {
    let mut f = file.try_clone().unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Submitted on one thread (the `block_on` thread, not a worker), completed on a worker.
#[test]
fn completed_on_another_worker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let submitter = thread::current().id();
    rt.block_on(async move {
        // A read that waits for data from a peer, and one from a file. Each is polled once
        // here (which submits it), then moved to a worker to be awaited.
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut blocked = Box::pin(async move {
            let mut buf = vec![0u8; 32];
            let n = ours.read_at(&mut buf, 0).await.unwrap();
            buf.truncate(n);
            (buf, thread::current().id())
        });
        let file = file_with(&pattern_vec(BLOCK));
        let mut quick = Box::pin(async move {
            let mut buf = vec![0u8; 100];
            let n = file.read_at(&mut buf, 10).await.unwrap();
            buf.truncate(n);
            buf
        });
        assert!(poll_once(&mut blocked).await.is_pending());
        let quick_first = poll_once(&mut quick).await;
        let handle = tokio::spawn(async move {
            tokio::task::yield_now().await;
            blocked.await
        });
        let quick_handle = tokio::spawn(async move {
            tokio::task::yield_now().await;
            match quick_first {
                Poll::Ready(buf) => buf,
                Poll::Pending => quick.await,
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        peer.write_all(b"from the peer").unwrap();
        let (buf, completer) = handle.await.unwrap();
        assert_eq!(buf, b"from the peer");
        assert_ne!(completer, submitter);
        assert_eq!(quick_handle.await.unwrap(), pattern_vec(110)[10..]);
    });
}

/// Many tasks, each submitting on one worker and likely woken on another, with a yield
/// between two operations.
#[test]
fn operations_migrate_between_workers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data = Arc::new(pattern_vec(64 * BLOCK));
        let file = Arc::new(file_with(&data));
        let mut set = JoinSet::new();
        for i in 0..64usize {
            let (file, data) = (Arc::clone(&file), Arc::clone(&data));
            set.spawn(async move {
                let mut buf = vec![0u8; BLOCK];
                for round in 0..20 {
                    let block = (i + round) % 64;
                    let fut = file.read_at(&mut buf, (block * BLOCK) as u64);
                    tokio::task::yield_now().await;
                    assert_eq!(fut.await.unwrap(), BLOCK);
                    assert!(buf[..] == data[block * BLOCK..(block + 1) * BLOCK]);
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    });
}

/// A waker that does nothing.
struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn polled_outside_a_runtime_is_an_error_and_submits_nothing() {
    let file = tempfile::tempfile().unwrap();
    let waker = Waker::from(Arc::new(NoopWaker));
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(file.write_at(b"nothing", 0));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.to_string().contains("tokio runtime"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    drop(fut);
    let batch = LioCbBuilder::with_capacity(1)
        .emplace_slice(file.as_fd(), 0, b"nothing", 0, LioOpcode::LIO_WRITE)
        .finish();
    let mut fut = LioFut::new(batch);
    assert!(matches!(
        Pin::new(&mut fut).poll(&mut cx),
        Poll::Ready(Err(_))
    ));
    assert_eq!(file.metadata().unwrap().len(), 0);
}

#[test]
fn futures_are_send_and_sync() {
    fn check<T: Send + Sync>(_: &T) {}
    let file = tempfile::tempfile().unwrap();
    let mut buf = [0u8; 4];
    check(&file.read_at(&mut buf, 0));
    check(&file.write_at(b"", 0));
    check(&AioFileExt::sync_all(&file));
    check(&LioFut::new(LioCbBuilder::with_capacity(0).finish()));
}

// ---- Child processes: tests that need a process of their own. ----

/// Names the child test a child process runs (and tells the others to do nothing).
const CHILD: &str = "MIO_AIO_TOKIO_TEST_CHILD";

/// Runs test `name` of this binary alone in a child process, with `envs`.
fn run_child(name: &str, envs: &[(&str, &str)]) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed ({}):\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        out.status
    );
    print!("{stdout}");
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == name)
}

#[test]
fn refused_entries_are_resubmitted_beside_a_failure() {
    run_child(
        "child_refused_beside_a_failure",
        &[("MIO_AIO_MAX_IN_FLIGHT", "4")],
    );
}

/// A batch with an entry that cannot start (a read into a shared buffer: `EIO`) and more
/// entries than there is room for (`EAGAIN` in the statuses): the refused entries are
/// resubmitted all the same, and only the invalid one fails. Room: 4 operations on Linux
/// (`MIO_AIO_MAX_IN_FLIGHT`), FreeBSD's `vfs.aio.max_aio_queue_per_proc` there (the batch is
/// made larger than it).
#[test]
fn child_refused_beside_a_failure() {
    if !is_child("child_refused_beside_a_failure") {
        return;
    }
    #[cfg(target_os = "freebsd")]
    let n = {
        let out = std::process::Command::new("sysctl")
            .args(["-n", "vfs.aio.max_aio_queue_per_proc"])
            .output()
            .unwrap();
        let limit: usize = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if limit > 4096 {
            println!("SKIPPED: vfs.aio.max_aio_queue_per_proc = {limit} is too large to overflow");
            return;
        }
        limit + 10
    };
    #[cfg(not(target_os = "freebsd"))]
    let n = 32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let data = pattern_vec(n * BLOCK);
        let file = file_with(&data);
        let shared = [0u8; 8];
        let mut bufs = vec![vec![0u8; BLOCK]; n];
        let mut builder = LioCbBuilder::with_capacity(n + 1).emplace_slice(
            file.as_fd(),
            0,
            &shared,
            0,
            LioOpcode::LIO_READ,
        );
        for (i, buf) in bufs.iter_mut().enumerate() {
            let offset = (i * BLOCK) as u64;
            builder = builder.emplace_mut_slice(file.as_fd(), offset, buf, 0, LioOpcode::LIO_READ);
        }
        let results = LioFut::new(builder.finish()).await.unwrap();
        assert_eq!(results[0].result, Err(Errno::EINVAL));
        let refused = results[1..]
            .iter()
            .filter(|r| r.result == Err(Errno::EAGAIN))
            .count();
        assert_eq!(
            refused, 0,
            "entries refused for lack of room were not resubmitted"
        );
        assert!(results[1..].iter().all(|r| r.result == Ok(BLOCK as isize)));
        for (i, buf) in bufs.iter().enumerate() {
            assert!(buf[..] == data[i * BLOCK..(i + 1) * BLOCK], "block {i}");
        }
    });
}

#[test]
fn full_queues_are_retried() {
    run_child("child_full_queues", &[("MIO_AIO_MAX_IN_FLIGHT", "4")]);
}

/// With room for 4 operations in flight: a batch of 32 (`EINCOMPLETE`, resubmitted) and 200
/// single operations at once (`EAGAIN`, retried).
#[test]
fn child_full_queues() {
    if !is_child("child_full_queues") {
        return;
    }
    for flavor in ["current_thread", "multi_thread"] {
        let rt = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            let data = pattern_vec(256 * BLOCK);
            let file = file_with(&data);
            let mut bufs = vec![vec![0u8; BLOCK]; 32];
            let mut builder = LioCbBuilder::with_capacity(32);
            for (i, buf) in bufs.iter_mut().enumerate() {
                let offset = (i * BLOCK) as u64;
                builder =
                    builder.emplace_mut_slice(file.as_fd(), offset, buf, 0, LioOpcode::LIO_READ);
            }
            let results = LioFut::new(builder.finish()).await.unwrap();
            assert!(results.iter().all(|r| r.result == Ok(BLOCK as isize)));
            for (i, buf) in bufs.iter().enumerate() {
                assert!(
                    buf[..] == data[i * BLOCK..(i + 1) * BLOCK],
                    "batch block {i}"
                );
            }

            let mut bufs = vec![vec![0u8; BLOCK]; 200];
            let futs: Vec<_> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, buf)| file.read_at(buf, (i * BLOCK) as u64))
                .collect();
            for r in join_all(futs).await {
                assert_eq!(r.unwrap(), BLOCK);
            }
            for (i, buf) in bufs.iter().enumerate() {
                assert!(buf[..] == data[i * BLOCK..(i + 1) * BLOCK], "block {i}");
            }
        });
        println!("{flavor}: ok");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn no_eventfd_stays_registered() {
    run_child("child_no_eventfd_stays_registered", &[]);
}

/// The eventfds registered in this process's epoll sets (Linux: from `/proc/self/fdinfo`).
/// tokio's reactor holds two descriptors of its epoll set (a duplicate, for its registry):
/// each eventfd is counted once.
#[cfg(target_os = "linux")]
fn registered_eventfds() -> usize {
    let link = |fd: &str| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut eventfds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd = entry.unwrap().file_name().to_string_lossy().into_owned();
        if link(&fd) != "anon_inode:[eventpoll]" {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("tfd:") else {
                continue;
            };
            let target = rest.split_whitespace().next().unwrap_or_default();
            if link(target) == "anon_inode:[eventfd]" {
                eventfds.insert(target.to_string());
            }
        }
    }
    eventfds.len()
}

/// Operations in flight have their eventfd in tokio's epoll set; once they are done or
/// dropped, it stays there only to serve the next operation of the thread (and is reused by
/// it); a batch's leaves; a runtime's leave once the thread polls in another runtime.
#[cfg(target_os = "linux")]
#[test]
fn child_no_eventfd_stays_registered() {
    if !is_child("child_no_eventfd_stays_registered") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let baseline = rt.block_on(async {
        // Warm up: the backend, the eventfd pool.
        let file = file_with(&pattern_vec(64 * BLOCK));
        let mut buf = vec![0u8; BLOCK];
        file.read_at(&mut buf, 0).await.unwrap();
        let baseline = registered_eventfds();
        println!("baseline: {baseline} eventfd(s) in epoll sets");

        for round in 0..3 {
            if round > 0 {
                // The engine thread that signalled the last operation (kernel AIO's reaper, a
                // pool worker) lets go of its eventfd just after: give it time, so that the
                // watch is idle, and reusable, when this round starts.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (ours, mut peer) = UnixStream::pair().unwrap();
            let mut rbuf = [0u8; 16];
            {
                let mut fut = Box::pin(ours.read_at(&mut rbuf, 0));
                assert!(poll_once(&mut fut).await.is_pending());
                // Round 0 registers an eventfd; the others reuse it.
                assert_eq!(
                    registered_eventfds(),
                    baseline + 1,
                    "round {round}: in flight"
                );
                if round == 0 {
                    // Completed.
                    peer.write_all(b"x").unwrap();
                    assert_eq!(fut.await.unwrap(), 1);
                } else {
                    // Dropped in flight (a writer unblocks a backend that cannot cancel).
                    let writer = thread::spawn(move || {
                        thread::sleep(Duration::from_millis(200));
                        let _ = peer.write_all(b"x");
                        peer
                    });
                    drop(fut);
                    drop(writer.join().unwrap());
                }
            }
            assert_eq!(registered_eventfds(), baseline + 1, "round {round}: after");
        }

        // A batch in flight, dropped.
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut rbuf = [0u8; 16];
        let cb = LioCbBuilder::with_capacity(1)
            .emplace_mut_slice(ours.as_fd(), 0, &mut rbuf, 0, LioOpcode::LIO_READ)
            .finish();
        let mut fut = LioFut::new(cb);
        assert!(poll_once(&mut fut).await.is_pending());
        assert_eq!(registered_eventfds(), baseline + 2, "batch in flight");
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            let mut peer = peer;
            let _ = peer.write_all(b"x");
            peer
        });
        drop(fut);
        drop(writer.join().unwrap());
        assert_eq!(registered_eventfds(), baseline + 1, "batch dropped");

        // Many operations, all completed.
        let mut bufs = vec![vec![0u8; BLOCK]; 64];
        let futs: Vec<_> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| file.read_at(b, (i * BLOCK) as u64))
            .collect();
        for r in join_all(futs).await {
            assert_eq!(r.unwrap(), BLOCK);
        }
        let after = registered_eventfds();
        // Cached reads complete inside `submit`: at most a few were registered, and they stay
        // for reuse.
        assert!(after <= baseline + 64, "after 64 reads: {after}");
        baseline
    });
    drop(rt);
    // This thread kept the pooled eventfds of the runtime that is gone, until it polls in
    // another: then they leave (with that runtime's epoll set).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ours, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(b"y").unwrap();
    let mut rbuf = [0u8; 4];
    assert_eq!(rt.block_on(ours.read_at(&mut rbuf, 0)).unwrap(), 1);
    let left = registered_eventfds();
    println!("another runtime: {left} eventfd(s) in epoll sets");
    // The new runtime's own eventfd, and at most the one of this read.
    assert!(left <= baseline + 1, "another runtime: {left}");
    drop(rt);
}
