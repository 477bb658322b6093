//! A consumer of the mio-aio 2.0 API, written the way tokio-file 0.11 uses it (an
//! `AioSource` over `Source`, driven by `tokio::io::bsd::Aio`), plus a batch registered with
//! `new_for_lio` and plain mio use. `.ci/dropin-check.sh` only compiles it, for FreeBSD: it
//! checks that mio-aio 2.1 still builds such code unchanged.
#![deny(warnings)]

use std::{
    future::Future,
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsFd, BorrowedFd},
    pin::Pin,
    task::{Context, Poll},
};

use mio_aio::{AioFsyncMode, Errno, LioCbBuilder, LioOpcode, Source, SourceApi};
use tokio::io::bsd::{Aio, AioSource};

/// tokio-file's adapter from a mio-aio operation to tokio's `AioSource`.
#[derive(Debug)]
struct TokioSource<T>(T);

impl<T: SourceApi> AioSource for TokioSource<T> {
    fn register_borrowed(&mut self, kq: BorrowedFd<'_>, token: usize) {
        self.0.register_raw(kq, token)
    }

    fn deregister(&mut self) {
        self.0.deregister_raw()
    }
}

/// tokio-file's future: submit on the first poll, `aio_return` once the event arrived.
#[must_use]
#[derive(Debug)]
struct TokioFileFut<T: SourceApi>(Aio<TokioSource<T>>);

impl<T: SourceApi> Future for TokioFileFut<T> {
    type Output = io::Result<T::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.poll_ready(cx) {
            Poll::Pending => {
                if !self.0 .0.in_progress() {
                    // SAFETY: the operation is structurally pinned inside the future.
                    let p = unsafe { self.map_unchecked_mut(|s| &mut s.0 .0) };
                    if let Err(e) = p.submit() {
                        return Poll::Ready(Err(io::Error::from_raw_os_error(e as i32)));
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(_ev)) => {
                // SAFETY: as above.
                let p = unsafe { self.map_unchecked_mut(|s| &mut s.0 .0) };
                Poll::Ready(
                    p.aio_return()
                        .map_err(|e| io::Error::from_raw_os_error(e as i32)),
                )
            }
        }
    }
}

// The public aliases and constructors of 2.0, with their 2.0 signatures.
type ReadAt<'a> = TokioFileFut<mio_aio::ReadAt<'a>>;
type ReadvAt<'a> = TokioFileFut<mio_aio::ReadvAt<'a>>;
type SyncAll<'a> = TokioFileFut<mio_aio::Fsync<'a>>;
type WriteAt<'a> = TokioFileFut<mio_aio::WriteAt<'a>>;
type WritevAt<'a> = TokioFileFut<mio_aio::WritevAt<'a>>;

fn read_at<'a>(fd: BorrowedFd<'a>, buf: &'a mut [u8], offs: u64) -> io::Result<ReadAt<'a>> {
    let src = TokioSource(mio_aio::ReadAt::read_at(fd, offs, buf, 0));
    Ok(TokioFileFut(Aio::new_for_aio(src)?))
}

fn readv_at<'a>(
    fd: BorrowedFd<'a>,
    bufs: &mut [IoSliceMut<'a>],
    offs: u64,
) -> io::Result<ReadvAt<'a>> {
    let src = TokioSource(mio_aio::ReadvAt::readv_at(fd, offs, bufs, 0));
    Ok(TokioFileFut(Aio::new_for_aio(src)?))
}

fn sync_all(fd: BorrowedFd<'_>) -> io::Result<SyncAll<'_>> {
    let src = TokioSource(mio_aio::Fsync::fsync(fd, AioFsyncMode::O_SYNC, 0));
    Ok(TokioFileFut(Aio::new_for_aio(src)?))
}

fn write_at<'a>(fd: BorrowedFd<'a>, buf: &'a [u8], offs: u64) -> io::Result<WriteAt<'a>> {
    let src = TokioSource(mio_aio::WriteAt::write_at(fd, offs, buf, 0));
    Ok(TokioFileFut(Aio::new_for_aio(src)?))
}

fn writev_at<'a>(fd: BorrowedFd<'a>, bufs: &[IoSlice<'a>], offs: u64) -> io::Result<WritevAt<'a>> {
    let src = TokioSource(mio_aio::WritevAt::writev_at(fd, offs, bufs, 0));
    Ok(TokioFileFut(Aio::new_for_aio(src)?))
}

/// A batch as a tokio source (registered with `new_for_lio`).
#[derive(Debug)]
struct LioSource<'a>(mio_aio::LioCb<'a>);

impl AioSource for LioSource<'_> {
    fn register_borrowed(&mut self, kq: BorrowedFd<'_>, token: usize) {
        self.0.register_raw(kq, token)
    }

    fn deregister(&mut self) {
        self.0.deregister_raw()
    }
}

async fn lio_read(fd: BorrowedFd<'_>) -> io::Result<Vec<isize>> {
    let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
    let lio = LioCbBuilder::with_capacity(2)
        .emplace_mut_slice(fd, 2, &mut a, 0, LioOpcode::LIO_READ)
        .emplace_mut_slice(fd, 6, &mut b, 0, LioOpcode::LIO_READ)
        .finish();
    let mut aio = Aio::new_for_lio(LioSource(lio))?;
    match aio.0.submit() {
        Ok(()) => (),
        Err(e) => return Err(io::Error::other(e)),
    }
    std::future::poll_fn(|cx| aio.poll_ready(cx)).await?;
    let lio = aio.into_inner().0;
    lio.into_results(|it| it.map(|r| r.result.map_err(io::Error::from)).collect())
}

/// Plain mio, as upstream's own examples do it.
fn with_mio(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(4);
    let mut buf = [0u8; 8];
    let mut op: Source<_> = mio_aio::ReadAt::read_at(fd, 0, &mut buf, 0);
    poll.registry()
        .register(&mut op, mio::Token(0), mio::Interest::AIO)?;
    let mut op = Box::pin(op);
    op.as_mut().submit()?;
    while op.as_mut().error() == Err(Errno::EINPROGRESS) {
        poll.poll(&mut events, None)?;
    }
    Ok(op.as_mut().aio_return()?)
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}

fn main() -> io::Result<()> {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open("/tmp/mio-aio-dropin-check")?;
    let fd = file.as_fd();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let fut = write_at(fd, b"abcdef123456", 0)?;
        assert_send_sync(&fut);
        assert_eq!(fut.await?, 12);
        let bufs = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        assert_eq!(writev_at(fd, &bufs, 0)?.await?, 4);
        sync_all(fd)?.await?;
        let mut buf = [0u8; 4];
        assert_eq!(read_at(fd, &mut buf, 2)?.await?, 4);
        let (mut x, mut y) = ([0u8; 1], [0u8; 2]);
        let mut bufs = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
        assert_eq!(readv_at(fd, &mut bufs, 0)?.await?, 3);
        assert_eq!(lio_read(fd).await?, vec![4, 2]);
        io::Result::Ok(())
    })?;
    assert_eq!(with_mio(fd)?, 8);
    Ok(())
}
