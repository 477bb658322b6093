//! Batches of operations submitted together (`lio_listio`).

use std::{
    fmt, io,
    os::fd::{AsRawFd, BorrowedFd},
};

use mio::{event, Interest, Registry, Token};
use nix::errno::Errno;

use crate::{source::check_interest, sys};

/// What one operation of a batch does.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum LioOpcode {
    /// Does nothing; its result is `Ok(0)`.
    LIO_NOP,
    /// Reads into the operation's buffer.
    LIO_READ,
    /// Writes the operation's buffer.
    LIO_WRITE,
}

/// The result of one operation of a batch, as given by [`LioCb::into_results`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct LioResult {
    /// The operation's return value (bytes transferred) or its error.
    pub result: nix::Result<isize>,
}

/// Why [`LioCb::submit`] or [`LioCb::resubmit`] did not start every operation.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum LioError {
    /// No operation was started, for lack of system resources (a full queue). No event will
    /// arrive. Try again once other operations have completed.
    EAGAIN,
    /// Some operations were started, others were not for lack of system resources. The event
    /// arrives when the started ones are all complete; then call [`LioCb::resubmit`].
    EINCOMPLETE,
    /// Some operations could not be started at all (a bad fd, a read into a shared buffer, an
    /// offset out of range). The value has each operation's status, in order:
    /// `Err(EINPROGRESS)` or `Ok(())` for those started, the error for those that were not. The
    /// event arrives when the started ones are all complete.
    EIO(Vec<Result<(), Errno>>),
}

impl LioError {
    /// Conveniently destructures into the statuses of an [`LioError::EIO`].
    ///
    /// ```
    /// use mio_aio::{Errno, LioError};
    /// let e = LioError::EIO(vec![Ok(()), Err(Errno::EBADF)]);
    /// assert_eq!(e.into_eio().unwrap()[1], Err(Errno::EBADF));
    /// assert!(LioError::EAGAIN.into_eio().is_err());
    /// ```
    pub fn into_eio(self) -> Result<Vec<Result<(), Errno>>, Self> {
        match self {
            LioError::EIO(v) => Ok(v),
            other => Err(other),
        }
    }
}

impl fmt::Display for LioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LioError::EAGAIN => f.write_str("no operation of the batch was started (EAGAIN)"),
            LioError::EINCOMPLETE => f.write_str("only part of the batch was started"),
            LioError::EIO(v) => {
                let failed = v
                    .iter()
                    .filter(|r| matches!(r, Err(e) if *e != Errno::EINPROGRESS));
                write!(
                    f,
                    "{} operations of the batch could not be started",
                    failed.count()
                )
            }
        }
    }
}

impl std::error::Error for LioError {}

/// The buffer of one batch entry: reads need a mutable one.
#[derive(Debug)]
pub(crate) enum LioBuf<'a> {
    Mut(&'a mut [u8]),
    Shared(&'a [u8]),
}

/// One operation of a batch, as the builder collected it.
#[derive(Debug)]
pub(crate) struct LioEntry<'a> {
    pub fd: BorrowedFd<'a>,
    pub offset: u64,
    pub buf: LioBuf<'a>,
    /// Linux has no per-request priority for these operations.
    #[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
    pub prio: i32,
    pub opcode: LioOpcode,
}

impl LioEntry<'_> {
    /// The reason the entry cannot be started at all, checked before anything reaches the
    /// kernel: a read into a shared buffer would let the kernel write through `&[u8]`.
    pub(crate) fn invalid(&self) -> Option<Errno> {
        if self.fd.as_raw_fd() < 0 && self.opcode != LioOpcode::LIO_NOP {
            Some(Errno::EBADF)
        } else if (self.opcode == LioOpcode::LIO_READ && matches!(self.buf, LioBuf::Shared(_)))
            || i64::try_from(self.offset).is_err()
        {
            Some(Errno::EINVAL)
        } else {
            None
        }
    }
}

/// Builds a [`LioCb`], one operation at a time.
///
/// A batch of two reads and a write, registered with a `Poll` under one token: its event
/// comes once, when all three are done.
///
/// ```
/// use std::{io::{ErrorKind, Write}, os::fd::AsFd, time::Duration};
/// use mio::{Events, Poll, Token};
/// use mio_aio::{LioCbBuilder, LioOpcode};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut file = tempfile::tempfile()?;
/// file.write_all(b"abcdef123456")?;
/// let mut poll = Poll::new()?;
/// let mut events = Events::with_capacity(4);
/// let (mut a, mut b) = ([0u8; 4], [0u8; 2]);
/// let mut batch = LioCbBuilder::with_capacity(3)
///     .emplace_mut_slice(file.as_fd(), 2, &mut a, 0, LioOpcode::LIO_READ)
///     .emplace_mut_slice(file.as_fd(), 6, &mut b, 0, LioOpcode::LIO_READ)
///     .emplace_slice(file.as_fd(), 12, b"!", 0, LioOpcode::LIO_WRITE)
///     .finish();
/// // Batches register with `LIO` (not `AIO`), and need no pinning.
/// poll.registry().register(&mut batch, Token(5), mio_aio::LIO)?;
/// // `Err(LioError::EINCOMPLETE)` or `Err(LioError::EAGAIN)` would mean "no room for every
/// // operation now": see `LioError`. A small batch like this one always fits.
/// batch.submit()?;
/// // One event for the whole batch (bounded wait).
/// while !events.iter().any(|e| e.token() == Token(5)) {
///     match poll.poll(&mut events, Some(Duration::from_secs(10))) {
///         Err(e) if e.kind() == ErrorKind::Interrupted => continue,
///         r => r?,
///     }
///     if events.is_empty() {
///         return Err("timed out".into());
///     }
/// }
/// assert!(!batch.in_progress()); // a batch's `in_progress` turns false when it is done
/// let n: Vec<isize> = batch.into_results(|it| it.map(|r| r.result).collect::<Result<_, _>>())?;
/// assert_eq!(n, vec![4, 2, 1]);
/// assert_eq!((&a, &b), (b"cdef", b"12"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LioCbBuilder<'a> {
    entries: Vec<LioEntry<'a>>,
}

impl<'a> LioCbBuilder<'a> {
    /// Creates a builder with room for `capacity` operations.
    pub fn with_capacity(capacity: usize) -> Self {
        LioCbBuilder {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Adds an operation on a mutable buffer: `LIO_READ` reads into it, `LIO_WRITE` writes it.
    ///
    /// `prio` lowers the operation's priority on FreeBSD; Linux ignores it.
    pub fn emplace_mut_slice(
        mut self,
        fd: BorrowedFd<'a>,
        offset: u64,
        buf: &'a mut [u8],
        prio: i32,
        opcode: LioOpcode,
    ) -> Self {
        self.entries.push(LioEntry {
            fd,
            offset,
            buf: LioBuf::Mut(buf),
            prio,
            opcode,
        });
        self
    }

    /// Adds an operation on a shared buffer: `LIO_WRITE` (or `LIO_NOP`). A `LIO_READ` into a
    /// shared buffer is refused with `EINVAL` when the batch is submitted.
    pub fn emplace_slice(
        mut self,
        fd: BorrowedFd<'a>,
        offset: u64,
        buf: &'a [u8],
        prio: i32,
        opcode: LioOpcode,
    ) -> Self {
        self.entries.push(LioEntry {
            fd,
            offset,
            buf: LioBuf::Shared(buf),
            prio,
            opcode,
        });
        self
    }

    /// Completes the batch. No operation can be added afterwards.
    pub fn finish(self) -> LioCb<'a> {
        LioCb {
            inner: sys::LioCb::new(self.entries),
        }
    }
}

/// A batch of operations, submitted together and reported by one event.
///
/// Build it with [`LioCbBuilder`], register it with interest [`crate::LIO`], and
/// [`LioCb::submit`] it. Its token is returned by `Poll::poll` once every operation that was
/// started has completed, once per submission (also when every operation was done inside
/// `submit`). A `LioCb` may be moved after submission (its control blocks live on the heap);
/// dropping it deregisters it, and dropping it while in flight cancels and waits, like a
/// [`crate::Source`] (and, as for a `Source`, leaking it in flight is unsound).
///
/// A registered batch holds one descriptor (Linux: an eventfd from its registration; FreeBSD:
/// a kqueue from its first submission) until it is dropped or collected. Each of its
/// operations counts towards the system's limit of operations in flight (see
/// [the guide](crate::guide#how-many-operations-may-be-in-flight-eagain-is-back-pressure)).
/// See [`LioCbBuilder`] for an example.
#[derive(Debug)]
pub struct LioCb<'a> {
    inner: sys::LioCb<'a>,
}

impl<'a> LioCb<'a> {
    /// Starts every operation of the batch with one system call.
    ///
    /// See [`LioError`] for partial success. After `Ok` or [`LioError::EIO`] the batch's event
    /// arrives once every started operation has completed (at once if none had anything to do);
    /// after [`LioError::EAGAIN`] no event arrives. Submitting a batch a second time fails with
    /// [`LioError::EIO`], every status `EBUSY`, and starts nothing.
    pub fn submit(&mut self) -> Result<(), LioError> {
        self.inner.submit()
    }

    /// After [`LioError::EINCOMPLETE`] (and the batch's event), starts the operations that were
    /// not accepted before. Operations that already ran are not run again.
    pub fn resubmit(&mut self) -> Result<(), LioError> {
        self.inner.resubmit()
    }

    /// Whether any operation of the batch is still in flight: **turns `false` when the batch is
    /// done**, before its results are collected.
    ///
    /// Beware: [`SourceApi::in_progress`](crate::SourceApi::in_progress) of a single operation
    /// means something else (it stays `true` until `aio_return`, as in mio-aio 2.0). Either
    /// way, do not spin on it: wait for the batch's event.
    pub fn in_progress(&self) -> bool {
        self.inner.in_progress()
    }

    /// The number of operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consumes the batch and hands each operation's result, in order, to `callback`.
    ///
    /// Call it after the batch's event. An operation never started reports its submission
    /// error; one still in flight is first waited for.
    pub fn into_results<F, R>(self, callback: F) -> R
    where
        F: FnOnce(Box<dyn Iterator<Item = LioResult> + 'a>) -> R,
    {
        self.inner.into_results(callback)
    }

    /// Extra registration method needed by tokio; see [`crate::SourceApi::register_raw`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn register_raw(&mut self, kq: BorrowedFd, udata: usize) {
        self.inner.register_raw(kq, udata)
    }

    /// Extra registration method needed by tokio; undoes [`LioCb::register_raw`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn deregister_raw(&mut self) {
        self.inner.deregister_raw()
    }
}

#[cfg(all(feature = "tokio", not(target_os = "freebsd")))]
impl LioCb<'_> {
    /// For the tokio layer: the eventfd that becomes readable when the whole batch is done.
    #[allow(dead_code)]
    pub(crate) fn attach_notify_fd(&mut self) -> io::Result<sys::NotifyFd> {
        self.inner.attach_notify_fd()
    }
}

impl event::Source for LioCb<'_> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::LIO)?;
        self.inner.register(registry, token)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        check_interest(interests, crate::LIO)?;
        self.inner.reregister(registry, token)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.inner.deregister(registry)
    }
}
