//! Things to know: the rules and limits a program meets, gathered on one page.
//!
//! This module has no items: it is documentation only. Each section is also said, shorter,
//! in the documentation of the items it concerns; the README's "Things to know" list links
//! here. Runnable programs are in the [crate documentation](crate#examples).
//!
//! # Waiting for an operation
//! Register an operation with a [`mio::Registry`] (interest [`AIO`](crate::AIO), or
//! [`LIO`](crate::LIO) for a batch), submit it, and wait for its token in
//! [`mio::Poll::poll`]. The token comes back **once per submission**, when the operation is
//! done; then [`SourceApi::aio_return`] (or [`LioCb::into_results`]) gives the result.
//!
//! * **An operation done inside `submit` still delivers its event.** On Linux a read whose
//!   data is in the page cache is finished by [`SourceApi::submit`] itself (see
//!   [`MIO_AIO_CACHED_READS`](#settings-and-their-defaults)), and an operation may finish
//!   before `submit` returns on any system. Its token still comes back from the next
//!   `Poll::poll`: a program never needs a second code path for "already done".
//! * **Do not spin on `in_progress`.** The two `in_progress` methods mean different things:
//!   - [`SourceApi::in_progress`] is `true` from `submit` until [`SourceApi::aio_return`]
//!     has collected the result, as in mio-aio 2.0: it stays `true` after the operation has
//!     finished, so `while op.in_progress() {}` never ends.
//!   - [`LioCb::in_progress`] is `true` while some operation of the batch is still running,
//!     and turns `false` when the batch is done.
//!   - [`OwnedSource::is_running`](crate::owned::OwnedSource::is_running) of an owned
//!     operation is `true` while it runs, and turns `false` when it is done.
//!
//!   Wait for the event instead. To look without waiting, [`SourceApi::error`] answers
//!   `Err(EINPROGRESS)` while the operation runs.
//! * **Interrupted waits** (Linux, io_uring): `Poll::poll` may return
//!   [`std::io::ErrorKind::Interrupted`]; poll again, as mio's own examples do. See the
//!   [crate documentation](crate#interrupted-waits-linux-io_uring).
//! * **Bound every wait** on something that may never come: a read from a socket or a pipe
//!   with no data, or a cancelled operation that the kernel cannot stop. Give `Poll::poll` a
//!   timeout, as the examples do.
//!
//! # One descriptor per registered operation (Linux)
//! On Linux each registered operation holds an eventfd, taken from a pool when it is first
//! submitted and given back when it is dropped (registering only records the token); a
//! registered batch ([`LioCb`]) holds one too, and so does each future of `mio_aio::tokio`
//! while its operation runs. Ten thousand operations submitted at once need ten thousand
//! descriptors: raise `RLIMIT_NOFILE` (`ulimit -n`) accordingly. Out of descriptors, `submit`
//! fails with `EMFILE` (after the pool has given its idle descriptors back), never hangs. On FreeBSD a
//! single operation holds no descriptor; a registered batch holds a kqueue from its first
//! submission until it is collected or dropped.
//!
//! # How many operations may be in flight: `EAGAIN` is back-pressure
//! * **Linux**: at most 16,384 operations per process (`MIO_AIO_MAX_IN_FLIGHT`, see
//!   [Settings](#settings-and-their-defaults)), counting each operation of a batch. With the
//!   kernel AIO backend, the kernel's context holds at most 4,096 requests (fewer if the
//!   sysctl `fs.aio-max-nr` is short), so `EAGAIN` may come sooner.
//! * **FreeBSD**: `vfs.aio.max_aio_queue_per_proc` (256 by default) per process, counting
//!   operations submitted and not yet collected with `aio_return`, and `vfs.aio.max_aio_queue`
//!   (1024) for the whole system.
//!
//! Beyond the limit, [`SourceApi::submit`] fails with [`Errno::EAGAIN`](crate::Errno) and
//! starts nothing (no event will come), and a batch reports [`LioError::EAGAIN`] or
//! [`LioError::EINCOMPLETE`]. This is not a failure: collect finished operations (wait for
//! their events), then submit again. The futures of `mio_aio::tokio` retry by themselves.
//!
//! # Deregistering: drop the operation
//! Dropping an operation deregisters it (and, on Linux, gives its eventfd back). There is no
//! need to call [`mio::Registry::deregister`], and on a pinned operation it does not compile:
//! [`Source`] is `!Unpin`, so `registry.deregister(&mut *op)` on an `op: Pin<Box<ReadAt>>` finds
//! no `&mut`. Either drop the operation, or deregister it before pinning it. A finished
//! operation may be submitted again after `aio_return`, under the same registration.
//!
//! # Dropping an operation in flight
//! * A borrowed operation ([`ReadAt`](crate::ReadAt), …, [`LioCb`]) dropped while in flight
//!   is cancelled, and the drop **blocks** until the kernel has released its buffers: for as
//!   long as the operation itself if the kernel cannot cancel it (with the thread pool, a
//!   read from a socket with no data blocks the drop until data comes).
//! * An owned operation ([`owned`](crate::owned)) dropped in flight is cancelled and handed to
//!   a background thread; the drop never blocks.
//!
//! # Cancelling
//! [`SourceApi::cancel`] asks the system to stop an operation; the operation's event comes
//! **whatever the answer**, and the answer says what to expect from `aio_return`:
//!
//! | Answer | Meaning | `aio_return` after the event |
//! |---|---|---|
//! | [`AioCanceled`](crate::AioCancelStat::AioCanceled) | stopped | `Err(ECANCELED)` |
//! | [`AioAllDone`](crate::AioCancelStat::AioAllDone) | had already completed on its own | its own result (bytes, or the error it failed with), never `ECANCELED` |
//! | [`AioNotCanceled`](crate::AioCancelStat::AioNotCanceled) | still running and could not be stopped, or its fate was not known within a short bounded wait (50 ms on Linux) | any: its normal result, an error, or `Err(ECANCELED)`/`Err(EINTR)` if the kernel interrupted it |
//!
//! A read or write waiting on a stream (an empty pipe or FIFO, an idle socket, a full pipe) can
//! always be cancelled, on every backend. Cancelling again an operation that an earlier `cancel`
//! stopped answers `AioCanceled` on Linux and `AioAllDone` on FreeBSD.
//!
//! After `AioNotCanceled` the operation may still run for as long as it would have: a read
//! from a socket waits for data. The [crate documentation](crate#cancelling-a-read-that-waits)
//! has a runnable example.
//!
//! # Leaking a borrowed operation is unsound
//! A borrowed operation's drop is what makes sure the kernel is done with its buffers. Leaking
//! one in flight (`std::mem::forget`, `Box::leak`, an `Rc` cycle) ends the borrow while the
//! kernel may still write into the buffer, which may by then be freed or reused: memory
//! corruption without `unsafe`. mio-aio 2.0 and nix's `aio` types, whose operations also
//! borrow their buffers, have the same hole. Never leak an operation in flight; where that
//! cannot be guaranteed, use the owned operations of [`owned`](crate::owned), which own their
//! buffers and are safe to leak (the memory is then leaked too, never reused).
//!
//! # Pipes and sockets
//! Give operations on pipes, FIFOs and sockets offset 0: they read or write the stream in
//! order. On **FreeBSD**, AIO on pipes (and on file systems the kernel does not deem safe)
//! needs the sysctl `vfs.aio.enable_unsafe=1`; without it `submit` fails with `EOPNOTSUPP`.
//! Sockets and regular files on UFS or ZFS need nothing.
//!
//! # Threads (Linux, io_uring)
//! io_uring ties each request to the thread that submitted it: when that thread exits, a
//! request that still waits (a socket read with no data) completes with `ECANCELED`. Submit
//! from threads that live as long as their operations. See the
//! [crate documentation](crate#threads-that-exit-linux-io_uring).
//!
//! # Settings and their defaults
//! On Linux the backend is chosen, and set up, when the first operation is registered or
//! submitted (or at the first call of `backend()`); the settings are read at that moment, once
//! per process. Each can be set from code before then with `Config::builder()` (a value set in
//! code wins over the environment) and read back with `config()`; the environment variables
//! below change the defaults. A number setting given something that is not a number keeps its
//! default. FreeBSD reads none of them: its limits are the `vfs.aio` sysctls above.
//!
//! | Variable | Default | Effect |
//! |---|---|---|
//! | `MIO_AIO_BACKEND` | `auto`: io_uring, else kernel AIO, else the thread pool | `io_uring`, `kaio` or `threads` forces a backend; if it cannot work here, or the name is unknown (`InvalidInput`), `backend()` and the operations fail. `set_backend` (in code) takes precedence. |
//! | `MIO_AIO_MAX_IN_FLIGHT` | `16384` | Operations in flight per process (at least 1); beyond it, `EAGAIN`. |
//! | `MIO_AIO_CACHED_READS` | on | `0` sends every read to the backend, instead of finishing reads of cached data inside `submit` with `preadv2(RWF_NOWAIT)`. |
//! | `MIO_AIO_THREADS` | `64` | The most worker threads of the thread pool (the backend, and kernel AIO's helper for buffered I/O that would block); idle workers leave after 5 s. |
//! | `MIO_AIO_URING_ASYNC` | off (`0`) | `1` queues every io_uring request to the kernel's workers. Without it, only requests on FUSE and network file systems go there (the per-file policy), from the first operation. |
//! | `MIO_AIO_URING_SQPOLL` | unset: no polling thread | `<ms>`: a kernel thread picks up submissions (one system call fewer per operation, no interrupted polls) and spins for `<ms>` milliseconds after each burst; uses a single ring. Needs a spare CPU. |
#![cfg_attr(
    target_os = "linux",
    doc = "
The backend can also be chosen in code with [`set_backend`](crate::set_backend), and
[`backend`](crate::backend) says which one is in use: see [`Backend`](crate::Backend). Every
setting can be set in code with [`Config::builder`](crate::Config::builder) and read back
with [`config`](crate::config)."
)]
#![cfg_attr(
    not(target_os = "linux"),
    doc = "
On Linux the backend can also be chosen in code with `mio_aio::set_backend`, and
`mio_aio::backend()` says which one is in use; every setting can be set in code with
`mio_aio::Config::builder()` and read back with `mio_aio::config()` (these exist on Linux
only)."
)]
//!
//! [`SourceApi::aio_return`]: crate::SourceApi::aio_return
//! [`SourceApi::submit`]: crate::SourceApi::submit
//! [`SourceApi::in_progress`]: crate::SourceApi::in_progress
//! [`SourceApi::error`]: crate::SourceApi::error
//! [`SourceApi::cancel`]: crate::SourceApi::cancel
//! [`LioCb`]: crate::LioCb
//! [`LioCb::in_progress`]: crate::LioCb::in_progress
//! [`LioCb::into_results`]: crate::LioCb::into_results
//! [`LioError::EAGAIN`]: crate::LioError::EAGAIN
//! [`LioError::EINCOMPLETE`]: crate::LioError::EINCOMPLETE
//! [`Source`]: crate::Source
