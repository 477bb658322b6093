//! Owned-buffer futures (`mio_aio::tokio::owned`) on the current-thread and the multi-thread
//! runtime: results and buffers back for every kind; 1,000 spawned futures; dropping a future
//! (or aborting its task) in flight without blocking, with the buffer freed once the read
//! ends; leaking one without corrupting memory.
//!
//! Run with `cargo test --features tokio --test tokio_owned` (the backend can be forced with
//! `MIO_AIO_BACKEND`).
#![cfg(feature = "tokio")]
// The FUSE and leak tests (and their helpers) are Linux-only.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

mod owned_common;
mod support;

use std::{
    future::Future,
    io::Write,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use mio_aio::tokio::owned;

use owned_common::Tracked;

/// Waits (at most 10 s) for `flag`, without blocking the runtime.
async fn wait_until_set(flag: &AtomicBool) {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(10), "never freed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls `fut` once, in the current task.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

fn pattern(pos: usize) -> u8 {
    (pos % 251) as u8 + 1
}

async fn all_kinds() {
    let file = Arc::new(tempfile::tempfile().unwrap());
    let (r, buf) = owned::write_at(file.clone(), b"abcdef".to_vec(), 0).await;
    assert_eq!((r.unwrap(), buf), (6, b"abcdef".to_vec()));
    let (r, bufs) = owned::writev_at(file.clone(), vec![&b"123"[..], &b"456"[..]], 6).await;
    assert_eq!((r.unwrap(), bufs.concat()), (6, b"123456".to_vec()));
    let (r, ()) = owned::sync_all(file.clone()).await;
    r.unwrap();
    let (r, ()) = owned::sync_data(file.clone()).await;
    r.unwrap();
    let (r, buf) = owned::read_at(file.clone(), vec![0u8; 4], 2).await;
    assert_eq!((r.unwrap(), buf), (4, b"cdef".to_vec()));
    let bufs: Vec<Box<[u8]>> = vec![vec![0u8; 4].into(), vec![0u8; 2].into()];
    let (r, bufs) = owned::readv_at(file.clone(), bufs, 2).await;
    assert_eq!(r.unwrap(), 6);
    assert_eq!(bufs.concat(), b"cdef12");
    // An error comes back with the buffer.
    let ro = std::fs::File::open("/dev/null").unwrap();
    let (r, buf) = owned::write_at(ro, vec![9u8; 3], 0).await;
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(buf, [9, 9, 9]);
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
    async fn every_kind_gives_result_and_buffers_back() {
        all_kinds().await;
    }

    async fn a_thousand_spawned_futures() {
        const N: usize = 1000;
        const LEN: usize = 512;
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..N * LEN).map(pattern).collect();
        f.write_all(&data).unwrap();
        let file = Arc::new(f);
        let tasks: Vec<_> = (0..N)
            .map(|i| tokio::spawn(owned::read_at(file.clone(), vec![0u8; LEN], (i * LEN) as u64)))
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let (r, buf) = task.await.unwrap();
            assert_eq!(r.unwrap(), LEN);
            assert!(buf[..] == data[i * LEN..(i + 1) * LEN], "read {i} got other bytes");
        }
    }

    /// A 200 ms FUSE read is submitted, then its future dropped: the drop returns in a small
    /// fraction of the delay, and the buffer is freed once the read has ended.
    #[cfg(target_os = "linux")]
    async fn drop_in_flight_returns_at_once() {
        use support::fuse::{SlowFs, SlowFsOptions};
        let opts = SlowFsOptions::default();
        let delay = opts.read_delay;
        let Some(fs) = SlowFs::mount_or_skip(opts) else {
            return;
        };
        let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
        let (buf, freed) = Tracked::new(4096);
        let mut fut = owned::read_at(file.clone(), buf, 4096);
        assert!(poll_once(&mut fut).await.is_pending(), "a 200 ms read is not done at once");
        let t = Instant::now();
        drop(fut);
        let took = t.elapsed();
        println!("drop took {took:?}");
        assert!(took < delay / 4, "dropping took {took:?}: it waited for the {delay:?} read");
        wait_until_set(&freed).await;
        // Still working.
        let (r, buf) = owned::read_at(file.clone(), vec![0u8; 16], 0).await;
        assert_eq!(r.unwrap(), 16);
        assert_eq!(buf, support::fuse::expected(0, 16));
    }

    /// Aborting a spawned task whose read is in flight ends the task at once.
    #[cfg(target_os = "linux")]
    async fn abort_in_flight_returns_at_once() {
        use support::fuse::{SlowFs, SlowFsOptions};
        let opts = SlowFsOptions::default();
        let delay = opts.read_delay;
        let Some(fs) = SlowFs::mount_or_skip(opts) else {
            return;
        };
        let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
        let (buf, freed) = Tracked::new(4096);
        let reads = fs.stats().reads;
        let task = tokio::spawn(owned::read_at(file.clone(), buf, 12288));
        // Let the task submit its read.
        let start = Instant::now();
        while fs.stats().reads == reads && start.elapsed() < delay / 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t = Instant::now();
        task.abort();
        let joined = task.await;
        let took = t.elapsed();
        println!("abort and join took {took:?}");
        assert!(joined.unwrap_err().is_cancelled());
        assert!(took < delay / 4, "aborting took {took:?}: it waited for the {delay:?} read");
        wait_until_set(&freed).await;
    }

    /// `mem::forget` of a future whose read is in flight: the kernel's late write lands in the
    /// leaked buffer, not in memory allocated afterwards.
    #[cfg(target_os = "linux")]
    async fn leak_in_flight_corrupts_nothing() {
        use support::fuse::{SlowFs, SlowFsOptions};
        let opts = SlowFsOptions::default();
        let delay = opts.read_delay;
        let Some(fs) = SlowFs::mount_or_skip(opts) else {
            return;
        };
        let file = Arc::new(std::fs::File::open(fs.path()).unwrap());
        let reads = fs.stats().reads;
        for i in 0..8u64 {
            let mut fut = owned::read_at(file.clone(), vec![0u8; 4096], i * 4096);
            assert!(poll_once(&mut fut).await.is_pending());
            std::mem::forget(fut);
        }
        let sentinels: Vec<Vec<u8>> = (0..256).map(|_| vec![0x5au8; 4096]).collect();
        // Wait until the file system has answered every leaked read, and a little more.
        let start = Instant::now();
        while fs.stats().reads < reads + 8 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(delay * 2).await;
        for s in &sentinels {
            assert!(s.iter().all(|&b| b == 0x5a), "memory allocated later was written");
        }
        let (r, buf) = owned::read_at(file.clone(), vec![0u8; 32], 0).await;
        assert_eq!(r.unwrap(), 32);
        assert_eq!(buf, support::fuse::expected(0, 32));
    }
}

#[test]
fn futures_are_static_send_and_unpin() {
    fn check<T: Send + Unpin + 'static>(_: &T) {}
    let file = Arc::new(tempfile::tempfile().unwrap());
    check(&owned::read_at(file.clone(), vec![0u8; 1], 0));
    check(&owned::writev_at(file.clone(), vec![vec![0u8; 1]], 0));
    check(&owned::sync_all(file));
}

#[test]
fn outside_a_runtime_fails_and_gives_the_buffer_back() {
    let file = tempfile::tempfile().unwrap();
    let mut fut = owned::read_at(file, vec![3u8; 2], 0);
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = std::task::Waker::from(Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    match Pin::new(&mut fut).poll(&mut cx) {
        Poll::Ready((r, buf)) => {
            assert!(r.is_err());
            assert_eq!(buf, [3, 3]);
        }
        Poll::Pending => panic!("a future polled outside a runtime must fail at once"),
    }
}

/// The kinds again, in a child process per Linux backend, on a multi-thread runtime.
#[cfg(target_os = "linux")]
mod every_backend {
    use super::*;

    fn on(backend: &str, test: &str) {
        support::in_child(test, &[("MIO_AIO_BACKEND", backend)], || {
            // A backend the system refuses (io_uring under `kernel.io_uring_disabled`, as in
            // one pass of CI) is skipped, with the reason printed.
            match mio_aio::backend() {
                Ok(b) => assert_eq!(b.name(), backend),
                Err(e) => return support::skip(&format!("{backend} is refused here: {e}")),
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(all_kinds());
        });
    }

    #[test]
    fn io_uring() {
        on("io_uring", "every_backend::io_uring");
    }

    #[test]
    fn kaio() {
        on("kaio", "every_backend::kaio");
    }

    #[test]
    fn threads() {
        on("threads", "every_backend::threads");
    }
}
