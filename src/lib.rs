//! Asynchronous file I/O as [`mio`] event sources.
//!
//! `mio` gives one event loop for sockets, pipes and timers, but a regular file is always
//! "ready": a read that misses the page cache blocks the whole loop. With `mio-aio`, each file
//! operation (read, write, readv, writev, fsync, or a batch of them) is an event source of its
//! own. Register it with a [`mio::Registry`] under its own [`mio::Token`], submit it, and the
//! token comes back from [`mio::Poll::poll`] when the operation has finished, like any socket
//! event; then [`SourceApi::aio_return`] yields the result.
//!
//! | Platform | Mechanism | Completion delivered through |
//! |---|---|---|
//! | FreeBSD | POSIX AIO (`aio_read`, `lio_listio`, …) | kqueue (`SIGEV_KEVENT`) |
//! | Linux | io_uring; kernel AIO (`io_submit`) where io_uring is refused; a thread pool as the last resort | an eventfd per operation, registered with epoll |
//! | macOS, DragonFly, NetBSD, OpenBSD (compile-checked only) | worker threads (`pread`, `pwrite`, `fsync`; on macOS `F_FULLFSYNC`) | an `EVFILT_USER` event per submission in the caller's kqueue, reported as readable |
//!
//! On macOS, worker threads rather than its POSIX AIO: macOS AIO cannot post a kqueue event
//! per operation (a thread would have to sit in `aio_suspend` and relay), and the whole system
//! shares `kern.aiomax` (90 by default) operations. `fsync` with `AioFsyncMode::O_DSYNC` is
//! `fdatasync(2)` where it exists; on macOS both modes are `fcntl(F_FULLFSYNC)`, the call that
//! makes data durable there (`fsync(2)` leaves it in the drive's cache).
//!
//! The API is the same on every system: a portable program needs no `cfg`. Register with
//! [`AIO`] (single operations) or [`LIO`] (batches), which name the right [`mio::Interest`] on
//! each system.
//!
//! # Example
//! ```
//! use std::{io::Write, os::fd::AsFd, time::{Duration, Instant}};
//! use mio::{Events, Poll, Token};
//! use mio_aio::{SourceApi, ReadAt};
//!
//! let mut file = tempfile::tempfile().unwrap();
//! file.write_all(b"abcdef123456").unwrap();
//!
//! let mut poll = Poll::new().unwrap();
//! let mut events = Events::with_capacity(16);
//! let mut buf = [0u8; 4];
//! let mut op = ReadAt::read_at(file.as_fd(), 2, &mut buf, 0);
//! // Register first, then pin: the operation must not move once submitted.
//! poll.registry().register(&mut op, Token(7), mio_aio::AIO).unwrap();
//! let mut op = Box::pin(op);
//! op.as_mut().submit().unwrap();
//! let deadline = Instant::now() + Duration::from_secs(10);
//! loop {
//!     assert!(Instant::now() < deadline, "no event in 10 s"); // bound every wait
//!     // A completion may also interrupt the wait (see "Interrupted waits" below).
//!     match poll.poll(&mut events, Some(Duration::from_secs(1))) {
//!         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
//!         r => r.unwrap(),
//!     }
//!     if events.iter().any(|ev| ev.token() == Token(7)) {
//!         break;
//!     }
//! }
//! assert_eq!(op.as_mut().aio_return().unwrap(), 4);
//! drop(op);
//! assert_eq!(&buf, b"cdef");
//! ```
//!
//! # Examples
//! Each example below is a whole program (run as a test); every wait is bounded. They use
//! [`ReadAt`] and friends, whose buffers are borrowed, except the second, which uses the
//! [`owned`] operations. What a program must know beyond them (descriptors, limits,
//! cancelling, leaks, settings) is on the [`guide`] page.
//!
//! ## A file read beside a TCP socket, in one loop
//! A mio loop serving a TCP connection (an echo) reads a file at the same time: the socket's
//! events and the read's event come from the same [`mio::Poll`], each under its own token.
//! ```
//! use std::{
//!     io::{ErrorKind, Read, Write},
//!     os::fd::AsFd,
//!     time::{Duration, Instant},
//! };
//! use mio::{net::{TcpListener, TcpStream}, Events, Interest, Poll, Token};
//! use mio_aio::{ReadAt, SourceApi};
//!
//! const LISTENER: Token = Token(0);
//! const CONNECTION: Token = Token(1);
//! const FILE_READ: Token = Token(2);
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut file = tempfile::tempfile()?;
//! file.write_all(b"the file's contents")?;
//!
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(64);
//! let mut listener = TcpListener::bind("127.0.0.1:0".parse()?)?;
//! poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
//! // A client (plain std, blocking) that has sent "ping" and will read the echo.
//! let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
//! client.write_all(b"ping")?;
//!
//! // The file read: register, then pin, then submit.
//! let mut buf = [0u8; 64];
//! let mut read = ReadAt::read_at(file.as_fd(), 0, &mut buf, 0);
//! poll.registry().register(&mut read, FILE_READ, mio_aio::AIO)?;
//! let mut read = Box::pin(read);
//! read.as_mut().submit()?;
//!
//! let mut connection: Option<TcpStream> = None;
//! let (mut echoed, mut read_len) = (false, None);
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while !echoed || read_len.is_none() {
//!     let left = deadline.checked_duration_since(Instant::now()).ok_or("timed out")?;
//!     match poll.poll(&mut events, Some(left)) {
//!         // io_uring may interrupt the wait: poll again.
//!         Err(e) if e.kind() == ErrorKind::Interrupted => continue,
//!         r => r?,
//!     }
//!     for event in events.iter() {
//!         match event.token() {
//!             LISTENER => loop {
//!                 match listener.accept() {
//!                     Ok((mut stream, _)) => {
//!                         poll.registry().register(&mut stream, CONNECTION, Interest::READABLE)?;
//!                         connection = Some(stream);
//!                     }
//!                     Err(e) if e.kind() == ErrorKind::WouldBlock => break,
//!                     Err(e) => return Err(e.into()),
//!                 }
//!             },
//!             CONNECTION => {
//!                 let stream = connection.as_mut().ok_or("no connection")?;
//!                 let mut msg = [0u8; 64];
//!                 loop {
//!                     match stream.read(&mut msg) {
//!                         Ok(0) => break, // the client closed
//!                         Ok(n) => {
//!                             // A few bytes fit in any socket buffer; a real server would
//!                             // keep what `write` did not take until WRITABLE.
//!                             stream.write_all(&msg[..n])?;
//!                             echoed = true;
//!                         }
//!                         Err(e) if e.kind() == ErrorKind::WouldBlock => break,
//!                         Err(e) => return Err(e.into()),
//!                     }
//!                 }
//!             }
//!             // The read's token comes back once, when it is done (even if `submit`
//!             // finished it already).
//!             FILE_READ => read_len = Some(read.as_mut().aio_return()?),
//!             _ => {}
//!         }
//!     }
//! }
//! drop(read); // deregisters the read and ends its borrow of `buf`
//! let n = read_len.unwrap_or(0);
//! assert_eq!(&buf[..n], b"the file's contents");
//!
//! let mut reply = [0u8; 4];
//! client.set_read_timeout(Some(Duration::from_secs(10)))?;
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"ping");
//! # Ok(())
//! # }
//! ```
//!
//! ## A read kept in flight across loop turns (owned buffers)
//! A borrowed operation cannot easily outlive the code that started it: its buffer must stay
//! borrowed. The [`owned`] operations take the file and the buffer by value and give the
//! buffer back with the result, so a reader can keep one in a struct while the loop turns.
//! This one reads a file in 64 KiB chunks, one read in flight at a time, reusing its buffer.
//! ```
//! use std::{
//!     fs::File,
//!     io::{self, ErrorKind, Write},
//!     sync::Arc,
//!     time::{Duration, Instant},
//! };
//! use mio::{Events, Poll, Registry, Token};
//! use mio_aio::owned;
//!
//! const CHUNK: usize = 64 * 1024;
//!
//! /// Reads a whole file, chunk by chunk; its read stays in flight between loop turns.
//! struct ChunkedReader {
//!     file: Arc<File>,
//!     token: Token,
//!     offset: u64,
//!     read: Option<owned::ReadAt<Arc<File>, Vec<u8>>>,
//!     checksum: u64,
//! }
//!
//! impl ChunkedReader {
//!     /// Registers and submits the read of the chunk at `self.offset` into `buf`.
//!     fn start(&mut self, registry: &Registry, buf: Vec<u8>) -> io::Result<()> {
//!         let mut read = owned::ReadAt::read_at(self.file.clone(), self.offset, buf, 0);
//!         registry.register(&mut read, self.token, mio_aio::AIO)?;
//!         read.submit()?;
//!         self.read = Some(read);
//!         Ok(())
//!     }
//!
//!     /// Handles the read's event: uses the chunk, then starts the next read. Returns
//!     /// `false` at the end of the file.
//!     fn on_event(&mut self, registry: &Registry) -> io::Result<bool> {
//!         let Some(read) = self.read.as_mut() else { return Ok(false) };
//!         // `None`: a spurious event, the read still runs.
//!         let Some((result, buf)) = read.take_result() else { return Ok(true) };
//!         self.read = None; // dropping the spent operation deregisters it
//!         let n = result?;
//!         if n == 0 {
//!             return Ok(false);
//!         }
//!         self.checksum += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
//!         self.offset += n as u64;
//!         self.start(registry, buf)?;
//!         Ok(true)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut file = tempfile::tempfile()?;
//! file.write_all(&vec![1u8; 5 * CHUNK + 100])?;
//!
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(64);
//! let mut reader = ChunkedReader {
//!     file: Arc::new(file),
//!     token: Token(1),
//!     offset: 0,
//!     read: None,
//!     checksum: 0,
//! };
//! reader.start(poll.registry(), vec![0u8; CHUNK])?;
//! let (mut reading, mut turns) = (true, 0);
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while reading {
//!     if Instant::now() > deadline {
//!         return Err("timed out".into());
//!     }
//!     turns += 1; // a real loop serves its sockets and timers here
//!     match poll.poll(&mut events, Some(Duration::from_millis(100))) {
//!         Err(e) if e.kind() == ErrorKind::Interrupted => continue,
//!         r => r?,
//!     }
//!     for event in events.iter() {
//!         if event.token() == reader.token {
//!             reading = reader.on_event(poll.registry())?;
//!         }
//!     }
//! }
//! assert_eq!(reader.checksum, 5 * CHUNK as u64 + 100);
//! assert!(turns >= 6);
//! # Ok(())
//! # }
//! ```
//!
//! ## A function that starts a read
//! A function that starts a borrowed read and returns it ties the operation to both the file
//! descriptor and the buffer with one lifetime, and returns it pinned (it must not move once
//! submitted):
//! ```
//! use std::{io, os::fd::{AsFd, BorrowedFd}, pin::Pin, time::Duration};
//! use mio::{Events, Poll, Registry, Token};
//! use mio_aio::{ReadAt, SourceApi};
//!
//! /// Registers `buf.len()` bytes at `offset` to be read under `token`, and starts the read.
//! fn start_read<'a>(
//!     registry: &Registry,
//!     token: Token,
//!     fd: BorrowedFd<'a>,
//!     offset: u64,
//!     buf: &'a mut [u8],
//! ) -> io::Result<Pin<Box<ReadAt<'a>>>> {
//!     let mut op = ReadAt::read_at(fd, offset, buf, 0);
//!     registry.register(&mut op, token, mio_aio::AIO)?; // before pinning
//!     let mut op = Box::pin(op);
//!     op.as_mut().submit()?;
//!     Ok(op)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let name = format!("mio-aio-doc-start-read-{}", std::process::id());
//! # let path = std::env::temp_dir().join(name);
//! # std::fs::write(&path, b"abcdef123456")?;
//! let file = std::fs::File::open(&path)?;
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(4);
//! let mut buf = [0u8; 4];
//! let mut op = start_read(poll.registry(), Token(3), file.as_fd(), 2, &mut buf)?;
//! while !events.iter().any(|e| e.token() == Token(3)) {
//!     match poll.poll(&mut events, Some(Duration::from_secs(10))) {
//!         Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
//!         r => r?,
//!     }
//!     if events.is_empty() {
//!         return Err("timed out".into());
//!     }
//! }
//! let n = op.as_mut().aio_return()?;
//! drop(op); // ends the borrow of `buf` (and of `file`)
//! assert_eq!(&buf[..n], b"cdef");
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Cancelling a read that waits
//! A read from a socket with no data waits for data. [`SourceApi::cancel`] asks the system to
//! give up; its answer says what happens next, and the read's event comes in every case:
//! ```
//! use std::{io::{ErrorKind, Write}, os::{fd::AsFd, unix::net::UnixStream}, time::Duration};
//! use mio::{Events, Poll, Token};
//! use mio_aio::{AioCancelStat, Errno, ReadAt, SourceApi};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (ours, mut peer) = UnixStream::pair()?;
//! let mut poll = Poll::new()?;
//! let mut events = Events::with_capacity(4);
//! let mut buf = [0u8; 16];
//! // Offset 0: sockets and pipes have no file position.
//! let mut read = ReadAt::read_at(ours.as_fd(), 0, &mut buf, 0);
//! poll.registry().register(&mut read, Token(0), mio_aio::AIO)?;
//! let mut read = Box::pin(read);
//! read.as_mut().submit()?;
//!
//! match read.as_mut().cancel()? {
//!     // Removed before it ran: `aio_return` will give ECANCELED.
//!     AioCancelStat::AioCanceled => {}
//!     // Already running (Linux's thread pool runs a blocking `read`): it ends as it would
//!     // have, here only when data comes. Send some, so that the wait below ends.
//!     AioCancelStat::AioNotCanceled => peer.write_all(b"bye")?,
//!     // Already finished.
//!     AioCancelStat::AioAllDone => {}
//! }
//! // Wait (bounded) for the read's event, which comes whatever `cancel` answered.
//! while !events.iter().any(|e| e.token() == Token(0)) {
//!     match poll.poll(&mut events, Some(Duration::from_secs(10))) {
//!         Err(e) if e.kind() == ErrorKind::Interrupted => continue,
//!         r => r?,
//!     }
//!     if events.is_empty() {
//!         return Err("timed out".into());
//!     }
//! }
//! match read.as_mut().aio_return() {
//!     Err(Errno::ECANCELED) => println!("cancelled"),
//!     Ok(n) => println!("read {n} bytes after all"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Choosing a backend (Linux)
//! On Linux an operation runs on io_uring, else on kernel AIO, else on a thread pool, chosen
//! when the first operation is set up. A program may choose itself, before its first
//! operation, or an operator with the environment variable `MIO_AIO_BACKEND` (see the
//! [guide's settings](guide#settings-and-their-defaults)). These functions exist on Linux
//! only: FreeBSD has one mechanism, POSIX AIO.
#![cfg_attr(
    target_os = "linux",
    doc = "See [`Backend`], [`set_backend`] and [`backend`]."
)]
//! ```
//! # #[cfg(target_os = "linux")]
//! # fn main() -> std::io::Result<()> {
//! use mio_aio::Backend;
//!
//! // Kernel AIO ties no request to the thread that submitted it (io_uring does); where it
//! // cannot work, fall back to the thread pool, which works everywhere.
//! mio_aio::set_backend(Backend::KernelAio)?;
//! let backend = match mio_aio::backend() {
//!     Ok(backend) => backend,
//!     Err(e) => {
//!         eprintln!("kernel AIO cannot work here ({e}): using threads");
//!         mio_aio::set_backend(Backend::ThreadPool)?;
//!         mio_aio::backend()?
//!     }
//! };
//! println!("file I/O goes through {backend}");
//! # Ok(())
//! # }
//! # #[cfg(not(target_os = "linux"))]
//! # fn main() {}
//! ```
//!
//! ## More
//! * A batch of operations with one event: [`LioCb`] (registered with [`LIO`]).
#![cfg_attr(
    feature = "tokio",
    doc = "* async/await on tokio: the [`tokio`](mod@crate::tokio) module."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "* async/await on tokio: the `mio_aio::tokio` module (feature `tokio`)."
)]
//!
//! # Rules that keep memory safe
//! * A [`Source`] borrows its buffers for its whole life, and is `!Unpin`: register it, then pin
//!   it (for example with `Box::pin`) before [`SourceApi::submit`].
//! * Dropping an operation that is still in flight is safe: the drop asks the kernel to cancel
//!   it and then waits until the kernel has finished with the buffer. That wait may be as long
//!   as the operation itself. Dropping it also deregisters it: see
//!   [Deregistering](guide#deregistering-drop-the-operation).
//! * **Never leak an operation in flight** (`std::mem::forget`, `Box::leak`, an `Rc` cycle):
//!   its drop is what waits for the kernel, and a leaked borrowed operation lets the kernel
//!   write into memory that may be freed by then. This hole is shared with mio-aio 2.0 and
//!   nix's `aio` types. The [`owned`] operations own their buffers and are safe to leak; see
//!   [the guide](guide#leaking-a-borrowed-operation-is-unsound).
//!
//! # Things to know
//! The [`guide`] page gathers what a program meets beyond the examples: one descriptor per
//! registered operation on Linux (`EMFILE`), the in-flight limit and `EAGAIN`, deregistering,
//! cancelling, FreeBSD's pipes, and every setting with its default.
//!
//! # Pipes and sockets
//! Pipes, FIFOs and sockets have no file position: give operations on them offset 0, and they
//! read or write the stream in order, as FreeBSD's AIO and Linux's io_uring do natively (the
//! other Linux backends do the same). With another offset the result depends on the system:
//! some refuse it with `ESPIPE`, others ignore the offset. On FreeBSD, AIO on pipes needs the
//! sysctl `vfs.aio.enable_unsafe=1` (sockets do not).
//!
//! # Interrupted waits (Linux, io_uring)
//! With io_uring, the kernel may finish an operation by running a small piece of work on the
//! thread that submitted it. If that thread is blocked in `Poll::poll`, the wait returns
//! [`std::io::ErrorKind::Interrupted`], which mio passes to the caller. Handle it as mio's own
//! examples do: ignore it and poll again. Kernel AIO and the thread pool never cause it, so
//! the io_uring backend gives reads and writes of local files opened `O_DIRECT` (which would
//! cause it about once per wait) to kernel AIO where the system allows it; requests that
//! io_uring finishes later (buffered writes it hands to its workers, uncached reads, streams)
//! still can.
//!
//! # Threads that exit (Linux, io_uring)
//! io_uring ties each request to the thread that submitted it: the kernel finishes parts of
//! it (completions from its workers, reads retried once their pages arrive, the write that
//! signals the operation's event) as work run on that thread. So a thread that exits with
//! operations in flight first waits, in its thread-local destructors, until the kernel is done
//! with them:
//! * operations on files and block devices complete normally, with their event; the thread
//!   waits as long as the storage takes, at most 10 seconds, then cancels what is left;
//! * reads and writes of pipes, sockets and other streams, which may wait forever for data,
//!   are cancelled at once: they complete with [`Errno::ECANCELED`], and their event arrives.
//!
//! The process's main thread does not wait (its exit ends the process). Submit stream
//! operations from threads that live as long as they do (an event loop, a tokio worker), or use
//! the kernel AIO or thread-pool backend, which have no such tie (nor has FreeBSD).
//!
//! # Feature flags
#![cfg_attr(
    feature = "tokio",
    doc = "* `tokio` - adds the [`tokio`](mod@crate::tokio) module: file operations and batches as
  futures on a tokio runtime (`AioFileExt::read_at(..).await`, `LioFut`), and
  [`tokio::compat`](mod@crate::tokio::compat) with the method shapes of the `tokio-file`
  crate. It also adds [`SourceApi::register_raw`] and [`SourceApi::deregister_raw`], which consumers need to
  implement tokio's `AioSource` trait."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "* `tokio` - adds the `tokio` module: file operations and batches as futures on a tokio
  runtime (`AioFileExt::read_at(..).await`, `LioFut`), and `tokio::compat` with the method
  shapes of the `tokio-file` crate. It also adds `SourceApi::register_raw`
  and `SourceApi::deregister_raw`, which consumers need to implement tokio's `AioSource`
  trait."
)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Calls the `libc` function `$fn`, which returns `-1` (or another negative value) and sets
/// `errno` on failure, and returns a `nix::Result` of its value: the crate's one way to turn a
/// system call's failure into an error (`Errno` converts into `io::Error` with `?`).
///
/// The call is unsafe: each use says, in a `// SAFETY:` comment, why its arguments satisfy
/// the function's contract.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller's `// SAFETY:` comment, at the use.
        let res = unsafe { libc::$fn($($arg),*) };
        nix::errno::Errno::result(res)
    }};
}

pub mod guide;
mod lio;
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
mod lio_book;
#[cfg(target_os = "openbsd")]
mod openbsd_aio_types;
pub mod owned;
mod source;
mod sys;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

pub use lio::{LioCb, LioCbBuilder, LioError, LioOpcode, LioResult};
/// The error type of this crate's operations: the system's `errno` values, from [`nix`].
///
/// [`SourceApi::submit`], [`SourceApi::aio_return`], [`SourceApi::error`] and
/// [`SourceApi::cancel`] return `Result<_, Errno>`; an operation still running reports
/// `Err(Errno::EINPROGRESS)` from [`SourceApi::error`]. The values that matter most here:
/// `EAGAIN` (no room to start the operation now: retry later), `EINPROGRESS` (not done yet),
/// `ECANCELED` (cancelled before it finished), `EBADF`/`EINVAL` (a bad descriptor, offset or
/// buffer), `ENOSPC`/`EIO` (the file system's own errors), `EMFILE` (out of descriptors, on
/// Linux where each registered operation holds one). [`Errno::desc`] gives the message, and
/// `std::io::Error::from(errno)` converts it for `?` in functions returning `io::Result`.
pub use nix::errno::Errno;
/// Whether [`SourceApi::cancel`] removed an operation before it ran
/// ([`AioCanceled`](AioCancelStat::AioCanceled)), found it already running
/// ([`AioNotCanceled`](AioCancelStat::AioNotCanceled): wait for its event as usual) or already
/// finished ([`AioAllDone`](AioCancelStat::AioAllDone)). [`SourceApi::cancel`] returns it.
///
/// nix's own type, re-exported as mio-aio 2.0 does (so `use mio_aio::AioCancelStat::*` works).
#[cfg(not(target_os = "openbsd"))]
#[doc(no_inline)]
pub use nix::sys::aio::AioCancelStat;
/// What [`Fsync::fsync`] makes durable: `O_SYNC` the data and the metadata (like `fsync(2)`),
/// `O_DSYNC` only what is needed to read the data back (like `fdatasync(2)`). [`Fsync::fsync`]
/// takes it.
///
/// nix's own type, re-exported as mio-aio 2.0 does.
#[cfg(not(target_os = "openbsd"))]
#[doc(no_inline)]
pub use nix::sys::aio::AioFsyncMode;
#[cfg(target_os = "openbsd")]
pub use openbsd_aio_types::{AioCancelStat, AioFsyncMode};
pub use source::{Fsync, ReadAt, ReadvAt, Source, SourceApi, WriteAt, WritevAt};

#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use sys::linux_api::{backend, config, set_backend, Backend, Config, ConfigBuilder};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The [`mio::Interest`] to register a single operation ([`Source`]) with.
///
/// On FreeBSD this is `Interest::AIO`; on Linux, where an operation's completion is signalled
/// through an eventfd, it is `Interest::READABLE`; on macOS, DragonFly, NetBSD and OpenBSD,
/// where it is an `EVFILT_USER` event, which mio reports as readable, `Interest::READABLE`
/// too. Registering with any other interest fails with [`std::io::ErrorKind::InvalidInput`].
pub const AIO: mio::Interest = sys::AIO;

/// The [`mio::Interest`] to register a batch ([`LioCb`]) with.
///
/// On FreeBSD this is `Interest::LIO`; on Linux, macOS, DragonFly, NetBSD and OpenBSD it is
/// `Interest::READABLE`.
pub const LIO: mio::Interest = sys::LIO;
