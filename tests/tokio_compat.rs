//! `mio_aio::tokio::compat`: the method shapes of `tokio-file` 0.11, each method on real files
//! on both tokio runtime flavours, and the errors that come out before submission.
//!
//! Run it under each Linux backend (`MIO_AIO_BACKEND=io_uring|kaio|threads`).

use std::{
    fs,
    io::{IoSlice, IoSliceMut, Read, Write},
    path::PathBuf,
};

use mio_aio::tokio::compat::{AioFileExt, ReadAt};
use tokio::fs::File;

/// Each async test body, run once on a current-thread runtime and once on a multi-thread one.
macro_rules! on_both_flavours {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "current_thread")]
            async fn current_thread() {
                super::$name().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                super::$name().await
            }
        }
    )*};
}

on_both_flavours!(
    read_at,
    readv_at,
    write_at,
    write_at_static,
    writev_at,
    sync_all,
    read_at_end_of_file,
    early_errors,
    late_errors_come_from_the_future,
);

/// A fresh path in a temporary directory, which lives as long as the returned guard.
fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

async fn read_at() {
    let (_dir, path) = temp_path("read_at");
    fs::write(&path, b"abcdef").unwrap();
    let file = File::open(&path).await.unwrap();
    let mut buf = [0u8; 4];
    // The future type has tokio-file's name.
    let fut: ReadAt<'_> = file.read_at(&mut buf, 2).expect("read_at failed early");
    assert_eq!(fut.await.unwrap(), 4);
    assert_eq!(&buf, b"cdef");
}

async fn readv_at() {
    let (_dir, path) = temp_path("readv_at");
    fs::write(&path, b"abcdefghijklmnopqrstuvwxyz").unwrap();
    let (mut a, mut b) = ([0u8; 4], [0u8; 8]);
    {
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        let file = File::open(&path).await.unwrap();
        let n = file
            .readv_at(&mut bufs, 2)
            .expect("readv_at failed early")
            .await
            .unwrap();
        assert_eq!(n, 12);
    }
    assert_eq!(&a, b"cdef");
    assert_eq!(&b, b"ghijklmn");
}

async fn write_at() {
    let (_dir, path) = temp_path("write_at");
    let data = b"abcdef".to_vec();
    let file = File::create(&path).await.unwrap();
    let n = file
        .write_at(&data, 3)
        .expect("write_at failed early")
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(fs::read(&path).unwrap(), b"\0\0\0abcdef");
}

async fn write_at_static() {
    const DATA: &[u8] = b"static";
    let (_dir, path) = temp_path("write_at_static");
    {
        let file = File::create(&path).await.unwrap();
        let n = file.write_at(DATA, 0).unwrap().await.unwrap();
        assert_eq!(n, DATA.len());
    }
    let mut read_back = Vec::new();
    fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut read_back)
        .unwrap();
    assert_eq!(read_back, DATA);
}

async fn writev_at() {
    let (_dir, path) = temp_path("writev_at");
    let file = File::create(&path).await.unwrap();
    let bufs = [IoSlice::new(b"abcdef"), IoSlice::new(b"ghij")];
    let n = file
        .writev_at(&bufs, 0)
        .expect("writev_at failed early")
        .await
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(fs::read(&path).unwrap(), b"abcdefghij");
}

async fn sync_all() {
    let (_dir, path) = temp_path("sync_all");
    let mut std_file = fs::File::create(&path).unwrap();
    std_file.write_all(b"abcdef").unwrap();
    let file = File::from_std(std_file);
    // `tokio::fs::File::sync_all` is inherent: the trait's is named explicitly, as with
    // tokio-file.
    <File as AioFileExt>::sync_all(&file)
        .expect("sync_all failed early")
        .await
        .unwrap();
    // On a pipe, fsync is refused by the kernel, after submission: the future says so.
    let (_writer, reader) = mio::unix::pipe::new().unwrap();
    let late = AioFileExt::sync_all(&reader)
        .expect("a pipe's fsync is refused late")
        .await
        .unwrap_err();
    // Linux's fsync(2) says EINVAL; FreeBSD's AIO may refuse a pipe otherwise.
    if cfg!(target_os = "linux") {
        assert_eq!(late.raw_os_error(), Some(libc::EINVAL), "{late}");
    }
}

async fn read_at_end_of_file() {
    let (_dir, path) = temp_path("eof");
    fs::write(&path, b"abc").unwrap();
    let file = File::open(&path).await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(file.read_at(&mut buf, 1).unwrap().await.unwrap(), 2);
    assert_eq!(file.read_at(&mut buf, 3).unwrap().await.unwrap(), 0);
    assert_eq!(file.read_at(&mut buf, 1 << 40).unwrap().await.unwrap(), 0);
}

/// Errors found before submission come out of the call, and nothing is done.
async fn early_errors() {
    let (_dir, path) = temp_path("early");
    fs::write(&path, b"untouched").unwrap();
    let read_only = fs::File::open(&path).unwrap();
    let write_only = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let ebadf = Some(libc::EBADF);
    let einval = Some(libc::EINVAL);

    let e = AioFileExt::write_at(&read_only, b"XX", 0)
        .map(drop)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), ebadf, "{e}");
    let e = read_only
        .writev_at(&[IoSlice::new(b"XX")], 0)
        .map(drop)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), ebadf, "{e}");
    let mut buf = [0u8; 4];
    let e = AioFileExt::read_at(&write_only, &mut buf, 0)
        .map(drop)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), ebadf, "{e}");
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let e = write_only.readv_at(&mut bufs, 0).map(drop).unwrap_err();
    assert_eq!(e.raw_os_error(), ebadf, "{e}");

    // Ranges that end beyond the kernel's signed file offset.
    let mut buf = [0u8; 4];
    for offset in [i64::MAX as u64 - 3, i64::MAX as u64 + 1, u64::MAX] {
        let e = AioFileExt::read_at(&read_only, &mut buf, offset)
            .map(drop)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), einval, "read at {offset}: {e}");
        let e = AioFileExt::write_at(&write_only, b"XXXX", offset)
            .map(drop)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), einval, "write at {offset}: {e}");
        let two = [IoSlice::new(b"XX"), IoSlice::new(b"XX")];
        let e = write_only.writev_at(&two, offset).map(drop).unwrap_err();
        assert_eq!(e.raw_os_error(), einval, "writev at {offset}: {e}");
    }
    // A range that ends at i64::MAX is valid: nothing to read there.
    let n = AioFileExt::read_at(&read_only, &mut buf, i64::MAX as u64 - 4)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(n, 0);

    // More buffers than one readv/writev takes.
    let one = [IoSlice::new(b"X")];
    let many: Vec<IoSlice<'_>> = one.iter().cycle().take(1025).copied().collect();
    let e = write_only.writev_at(&many, 0).map(drop).unwrap_err();
    assert_eq!(e.raw_os_error(), einval, "{e}");
    let mut bytes = vec![0u8; 1025];
    let mut many: Vec<IoSliceMut<'_>> = bytes.chunks_mut(1).map(IoSliceMut::new).collect();
    let e = read_only.readv_at(&mut many, 0).map(drop).unwrap_err();
    assert_eq!(e.raw_os_error(), einval, "{e}");
    // 1024 is fine.
    let mut bytes = vec![0u8; 1024];
    {
        let mut bufs: Vec<IoSliceMut<'_>> = bytes.chunks_mut(1).map(IoSliceMut::new).collect();
        let n = read_only.readv_at(&mut bufs, 0).unwrap().await.unwrap();
        assert_eq!(n, 9);
    }
    assert_eq!(&bytes[..9], b"untouched");

    assert_eq!(fs::read(&path).unwrap(), b"untouched");
}

/// What only the kernel knows is the future's error, not an early one.
async fn late_errors_come_from_the_future() {
    // A directory opened for reading: Linux's `read` says EISDIR (FreeBSD's depends on the
    // file system).
    let dir = tempfile::tempdir().unwrap();
    let d = fs::File::open(dir.path()).unwrap();
    let mut buf = [0u8; 4];
    let fut = AioFileExt::read_at(&d, &mut buf, 0).expect("no early error for a directory");
    let e = fut.await.unwrap_err();
    if cfg!(target_os = "linux") {
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
    }
}

/// Outside a runtime the call fails at once (a future could never complete there).
#[test]
fn outside_a_runtime_every_method_fails_early() {
    let file = tempfile::tempfile().unwrap();
    let mut buf = [0u8; 4];
    let errors = [
        AioFileExt::read_at(&file, &mut buf, 0).map(drop),
        AioFileExt::write_at(&file, b"ab", 0).map(drop),
        file.writev_at(&[IoSlice::new(b"ab")], 0).map(drop),
        AioFileExt::sync_all(&file).map(drop),
    ];
    for (i, r) in errors.into_iter().enumerate() {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "method {i}: {e}");
    }
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let e = file.readv_at(&mut bufs, 0).map(drop).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "readv_at: {e}");
    assert_eq!(file.metadata().unwrap().len(), 0, "nothing was written");
}
