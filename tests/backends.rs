//! Backend choice on Linux: the automatic choice, forcing one, and what happens when the kernel
//! refuses io_uring (as Docker's default seccomp profile does).
#![cfg(target_os = "linux")]

mod support;

use std::{io::Write, os::fd::AsFd, time::Duration};

use mio::{Events, Poll, Token};
use mio_aio::{Backend, Errno, ReadAt, SourceApi};
use support::seccomp;

/// Reads 4 bytes through a registered operation and checks the event and the data.
fn read_with_event() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"abcdef123456").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4);
    let mut buf = [0u8; 4];
    let mut op = ReadAt::read_at(f.as_fd(), 2, &mut buf, 0);
    poll.registry()
        .register(&mut op, Token(3), mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit().unwrap();
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(10))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        assert!(!events.is_empty(), "no event");
        assert!(events.iter().all(|e| e.token() == Token(3)));
        break;
    }
    assert_eq!(op.as_mut().aio_return(), Ok(4));
    drop(op);
    assert_eq!(&buf, b"cdef");
}

/// The backend in use is the one `MIO_AIO_BACKEND` (or `MIO_AIO_EXPECT_BACKEND`, for the
/// automatic choice) names.
#[test]
fn backend_is_the_one_asked_for() {
    let backend = mio_aio::backend().unwrap();
    println!("backend: {backend}");
    for var in ["MIO_AIO_BACKEND", "MIO_AIO_EXPECT_BACKEND"] {
        if let Ok(name) = std::env::var(var) {
            if name != "auto" && !name.is_empty() {
                assert_eq!(backend, name.parse::<Backend>().unwrap(), "{var}={name}");
            }
        }
    }
    // Once in use, the backend cannot change.
    for other in [Backend::IoUring, Backend::KernelAio, Backend::ThreadPool] {
        match mio_aio::set_backend(other) {
            Ok(()) => assert_eq!(other, backend),
            Err(e) => {
                assert_ne!(other, backend);
                assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
            }
        }
    }
    read_with_event();
}

#[test]
fn backend_names_parse() {
    assert_eq!("io_uring".parse::<Backend>().unwrap(), Backend::IoUring);
    assert_eq!("kaio".parse::<Backend>().unwrap(), Backend::KernelAio);
    assert_eq!("threads".parse::<Backend>().unwrap(), Backend::ThreadPool);
    assert_eq!(Backend::KernelAio.to_string(), "kaio");
    assert!("bogus".parse::<Backend>().is_err());
}

/// With io_uring refused (seccomp, EPERM), the automatic choice is kernel AIO and operations
/// still deliver their events.
#[test]
fn io_uring_refused_falls_back_to_kernel_aio() {
    if std::env::var("MIO_AIO_BACKEND").is_ok_and(|b| b != "auto") && !seccomp::in_child() {
        return support::skip("a backend is forced; this test is about the automatic choice");
    }
    seccomp::run_without_io_uring("io_uring_refused_falls_back_to_kernel_aio", || {
        std::env::remove_var("MIO_AIO_BACKEND");
        assert_eq!(mio_aio::backend().unwrap(), Backend::KernelAio);
        read_with_event();
    });
}

/// Forcing io_uring where the kernel refuses it is a clear error, not a silent fallback.
#[test]
fn forced_io_uring_refused_is_an_error() {
    seccomp::run_without_io_uring("forced_io_uring_refused_is_an_error", || {
        mio_aio::set_backend(Backend::IoUring).unwrap();
        let err = mio_aio::backend().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let f = tempfile::tempfile().unwrap();
        let mut buf = [0u8; 4];
        let mut op = Box::pin(ReadAt::read_at(f.as_fd(), 0, &mut buf, 0));
        assert_eq!(op.as_mut().submit(), Err(Errno::EPERM));
    });
}

/// Whatever the backend, a single read of data in the page cache is done by `submit` itself
/// (`preadv2(RWF_NOWAIT)`, see `MIO_AIO_CACHED_READS`), and its event still comes, once, with
/// its token. The file lives in the build directory: a disk file system, where `RWF_NOWAIT`
/// reads are supported (tmpfs refuses them on older kernels).
#[test]
fn cached_read_is_done_by_submit() {
    if std::env::var("MIO_AIO_CACHED_READS").is_ok_and(|v| v == "0") {
        return support::skip("MIO_AIO_CACHED_READS=0 sends every read to the backend");
    }
    let mut f = tempfile::tempfile_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    f.write_all(b"0123456789").unwrap();
    let mut poll = Poll::new().unwrap();
    let mut buf = [0u8; 4];
    let op = ReadAt::read_at(f.as_fd(), 3, &mut buf, 0);
    let mut op = support::start(&poll, op, Token(5));
    assert_eq!(op.as_mut().error(), Ok(()), "not done when submit returned");
    support::expect_one_event(&mut poll, Token(5));
    assert_eq!(op.as_mut().aio_return(), Ok(4));
    drop(op);
    assert_eq!(&buf, b"3456");
}

/// Kernel AIO completes every operation through the driver's reaper thread. If that thread
/// cannot start, the driver must not accept operations that would never complete: `backend`,
/// `register` and `submit` keep failing, with an error that says why.
#[test]
fn kernel_aio_without_reaper_thread_fails_clearly() {
    const NAME: &str = "kernel_aio_without_reaper_thread_fails_clearly";
    if let Err(reason) = seccomp::available() {
        return support::skip(&reason);
    }
    if !seccomp::in_child() {
        let out = seccomp::rerun_self_with_env(NAME, &[(seccomp::CHILD_ENV, "1")]);
        return seccomp::assert_child_passed(NAME, &out);
    }
    mio_aio::set_backend(Backend::KernelAio).unwrap();
    // From here on this process cannot create a thread (glibc tries clone3, then clone).
    seccomp::refuse_syscall(libc::SYS_clone3, libc::ENOSYS).unwrap();
    seccomp::refuse_syscall(libc::SYS_clone, libc::EAGAIN).unwrap();
    // The first call creates the driver, which cannot start its reaper; the second must not
    // find a driver that looks ready.
    let first = mio_aio::backend();
    let second = mio_aio::backend();
    assert!(first.is_err(), "{first:?}");
    assert!(
        second.is_err(),
        "a driver without its reaper thread was handed out"
    );
    for err in [first.unwrap_err(), second.unwrap_err()] {
        assert!(err.to_string().contains("reaper"), "{err}");
    }
    let f = tempfile::tempfile().unwrap();
    let mut buf = [0u8; 4];
    let poll = Poll::new().unwrap();
    let mut op = ReadAt::read_at(f.as_fd(), 0, &mut buf, 0);
    let err = poll
        .registry()
        .register(&mut op, Token(1), mio_aio::AIO)
        .unwrap_err();
    assert!(err.to_string().contains("reaper"), "{err}");
    let mut op = Box::pin(op);
    assert_eq!(op.as_mut().submit(), Err(Errno::EAGAIN));
}
