//! Owned-buffer file operations as `'static` futures: [`read_at`], [`readv_at`],
//! [`write_at`], [`writev_at`], [`sync_all`] and [`sync_data`].
//!
//! Each takes the file (anything [`AsFd`] that can move between threads, typically an
//! `Arc<File>`) and the buffers by value, and resolves to `(io::Result<_>, buffers)`: the
//! buffers come back whether the operation succeeded or not. The futures are `'static` and
//! `Send`, so [`tokio::spawn`] accepts them.
//!
//! ```
//! use std::{io::Write, sync::Arc};
//! use mio_aio::tokio::owned;
//!
//! #[tokio::main]
//! async fn main() {
//!     let mut file = tempfile::tempfile().unwrap();
//!     file.write_all(b"abcdef123456").unwrap();
//!     let file = Arc::new(file);
//!     let task = tokio::spawn(owned::read_at(file.clone(), vec![0u8; 4], 2));
//!     let (result, buf) = task.await.unwrap();
//!     assert_eq!(result.unwrap(), 4);
//!     assert_eq!(buf, b"cdef");
//! }
//! ```
//!
//! They run exactly like [`AioFut`] (same submission, same wake-ups, same
//! handling of full queues; see the [parent module](super)), with two differences:
//!
//! * **Dropping** a future whose operation is in flight does not block the thread: the
//!   operation is cancelled and handed, with its buffers and file, to the crate's reaper,
//!   which frees them once the kernel is done (see [`crate::owned`], "Dropping an operation in
//!   flight"). Aborting a spawned task or a `select!` that drops the future is therefore cheap.
//! * **Leaking** one (`mem::forget`) only leaks its memory.
//!
//! Buffers are those of [`crate::owned`]: a read fills the buffer's length (not its
//! capacity) and returns how many bytes it filled.

use std::{
    fmt,
    future::Future,
    io,
    os::fd::AsFd,
    pin::Pin,
    task::{ready, Context, Poll},
};

use super::AioFut;
use crate::{
    owned::{IoBuf, IoBufMut, Kind, Owning},
    sys, AioFsyncMode, Source,
};

/// A future running one owned operation; resolves to `(result, buffers)`.
///
/// Made by the functions of this module; see the aliases [`ReadAt`], [`ReadvAt`], [`WriteAt`],
/// [`WritevAt`] and [`SyncAll`]. `'static`, `Send` and `Unpin`. `T` is one of the crate's
/// sealed operation types ([`Kind`]).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct OwnedFut<T: Kind, B: Send + 'static, F: Send + 'static> {
    fut: Pin<Box<OwningFut<T, B, F>>>,
    /// The operation's result, once `fut` has resolved and until the buffers are back.
    result: Option<io::Result<T::Output>>,
}

/// The crate's own future, running the borrowed operation inside an `Owning`.
type OwningFut<T, B, F> = AioFut<Source<Owning<T, B, F>>>;

// Nothing is pinned in place: the operation's future is boxed.
impl<T: Kind, B: Send + 'static, F: Send + 'static> Unpin for OwnedFut<T, B, F> {}

/// The future of [`read_at`]: resolves to the number of bytes read and the buffer.
pub type ReadAt<F, B> = OwnedFut<sys::ReadOp<'static>, B, F>;
/// The future of [`readv_at`]: resolves to the number of bytes read and the buffers.
pub type ReadvAt<F, B> = OwnedFut<sys::ReadvOp<'static>, Vec<B>, F>;
/// The future of [`write_at`]: resolves to the number of bytes written and the buffer.
pub type WriteAt<F, B> = OwnedFut<sys::WriteOp<'static>, B, F>;
/// The future of [`writev_at`]: resolves to the number of bytes written and the buffers.
pub type WritevAt<F, B> = OwnedFut<sys::WritevOp<'static>, Vec<B>, F>;
/// The future of [`sync_all`] and [`sync_data`]: resolves to `(result, ())`.
pub type SyncAll<F> = OwnedFut<sys::FsyncOp<'static>, (), F>;

/// Reads from `file` at `offset` into `buf` (its whole length), like `pread`.
pub fn read_at<F, B>(file: F, buf: B, offset: u64) -> ReadAt<F, B>
where
    F: AsFd + Send + 'static,
    B: IoBufMut,
{
    OwnedFut::new(Owning::read_at(file, offset, buf, 0))
}

/// Reads from `file` at `offset` into `bufs`, in order, like `preadv`. On FreeBSD this needs
/// FreeBSD 13 or later.
pub fn readv_at<F, B>(file: F, bufs: Vec<B>, offset: u64) -> ReadvAt<F, B>
where
    F: AsFd + Send + 'static,
    B: IoBufMut,
{
    OwnedFut::new(Owning::readv_at(file, offset, bufs, 0))
}

/// Writes `buf` to `file` at `offset`, like `pwrite`.
pub fn write_at<F, B>(file: F, buf: B, offset: u64) -> WriteAt<F, B>
where
    F: AsFd + Send + 'static,
    B: IoBuf,
{
    OwnedFut::new(Owning::write_at(file, offset, buf, 0))
}

/// Writes `bufs`, in order, to `file` at `offset`, like `pwritev`. On FreeBSD this needs
/// FreeBSD 13 or later.
pub fn writev_at<F, B>(file: F, bufs: Vec<B>, offset: u64) -> WritevAt<F, B>
where
    F: AsFd + Send + 'static,
    B: IoBuf,
{
    OwnedFut::new(Owning::writev_at(file, offset, bufs, 0))
}

/// Flushes the file's data and metadata to storage, like `fsync`.
pub fn sync_all<F: AsFd + Send + 'static>(file: F) -> SyncAll<F> {
    OwnedFut::new(Owning::fsync(file, AioFsyncMode::O_SYNC, 0))
}

/// Flushes the file's data (and the metadata needed to read it back) to storage, like
/// `fdatasync`.
pub fn sync_data<F: AsFd + Send + 'static>(file: F) -> SyncAll<F> {
    OwnedFut::new(Owning::fsync(file, super::DATA_SYNC, 0))
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> OwnedFut<T, B, F> {
    fn new(state: Owning<T, B, F>) -> Self {
        let source = Source::new(state);
        #[cfg(not(target_os = "freebsd"))]
        // Dropping the future deregisters its eventfd from tokio first (an fd taken out of an
        // epoll set reports nothing more), then drops the `Owning`, which hands an operation
        // in flight to the reaper.
        let fut = AioFut::new(source);
        #[cfg(target_os = "freebsd")]
        let fut = AioFut {
            inner: super::imp::OpState::with_release(source, freebsd::release::<T, B, F>),
        };
        OwnedFut {
            fut: Box::pin(fut),
            result: None,
        }
    }

    /// The operation's state inside the future.
    fn owning(&mut self) -> Option<&mut Owning<T, B, F>> {
        let source = self.fut.as_mut().source()?;
        Some(source.inner().get_mut())
    }
}

impl<T: sys::Operation> AioFut<Source<T>> {
    /// The operation, pinned where it is.
    fn source(self: Pin<&mut Self>) -> Option<Pin<&mut Source<T>>> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`.
        unsafe { self.map_unchecked_mut(|f| &mut f.inner) }.source()
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> Future for OwnedFut<T, B, F> {
    type Output = (io::Result<T::Output>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.result.is_none() {
            let result = ready!(this.fut.as_mut().poll(cx));
            this.result = Some(result);
        }
        let Some(owning) = this.owning() else {
            // FreeBSD only: tokio refused to register the operation (its runtime is shutting
            // down) and dropped it, never submitted, with its buffers. There is nothing to
            // give back, and the runtime drops its tasks: never complete.
            return Poll::Pending;
        };
        match owning.take_bufs() {
            Some(bufs) => {
                let result = this.result.take().expect("set above");
                Poll::Ready((result, bufs))
            }
            None => {
                // tokio failed (its reactor is gone) while the operation was in flight: the
                // buffers come back once the kernel is done. Check again after a yield.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<T: Kind, B: Send + 'static, F: Send + 'static> fmt::Debug for OwnedFut<T, B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedFut")
            .field("fut", &self.fut)
            .finish_non_exhaustive()
    }
}

#[cfg(target_os = "freebsd")]
mod freebsd {
    use ::tokio::io::bsd::Aio;

    use super::super::imp::OpSource;
    use crate::{
        owned::{adopt, Kind, Orphan, Owning},
        Source,
    };

    type Registered<T, B, F> = Aio<OpSource<Source<Owning<T, B, F>>>>;

    fn owning<T: Kind, B: Send + 'static, F: Send + 'static>(
        aio: &mut Registered<T, B, F>,
    ) -> &mut Owning<T, B, F> {
        // `Source<Owning<..>>` is `Unpin` on FreeBSD.
        std::pin::Pin::new(&mut aio.0).inner().get_mut()
    }

    /// Receives the tokio registration of a dropped owned future. The operation is released
    /// before the registration: `aio_return` removes a completion event still queued for it,
    /// so tokio never sees an event for a registration it has released.
    pub(super) fn release<T: Kind, B: Send + 'static, F: Send + 'static>(
        mut aio: Registered<T, B, F>,
    ) {
        let owning = owning(&mut aio);
        if owning.release_op() {
            return; // `aio` is dropped (deregistered) now, after the operation.
        }
        adopt(Box::new(Orphaned(aio, false)));
    }

    /// A dropped owned future's registration and operation, in flight, and whether the reaper
    /// has asked to cancel it yet.
    struct Orphaned<T: Kind, B: Send + 'static, F: Send + 'static>(Registered<T, B, F>, bool);

    impl<T: Kind, B: Send + 'static, F: Send + 'static> Orphan for Orphaned<T, B, F> {
        /// Cancels the operation at the first check (on the reaper's thread: a drop must not
        /// wait for `cancel`'s answer), releases it once done; the registration goes when the
        /// orphan is dropped.
        fn is_done(&mut self) -> bool {
            if !std::mem::replace(&mut self.1, true) {
                let _ = crate::sys::Operation::cancel(std::pin::Pin::new(owning(&mut self.0)));
            }
            owning(&mut self.0).release_op()
        }
    }
}
