//! Single reads and writes of `O_DIRECT` files go to kernel AIO, not to io_uring.
//!
//! io_uring finishes a request with task work queued to the thread that submitted it, through
//! `task_work_add(…, TWA_SIGNAL)` (`TWA_SIGNAL_NO_IPI` with `IORING_SETUP_COOP_TASKRUN`, which
//! only spares a running thread the interrupt: both set `TIF_NOTIFY_SIGNAL` and wake a thread
//! that sleeps interruptibly). A mio loop sleeps in `epoll_wait`, which then finds a "signal"
//! pending and no event ready (the linked eventfd write that would make one ready is that very
//! task work, run on the way back to user space), and returns `EINTR`; mio passes it on from
//! `Poll::poll`. A read served from the page cache completes inside `submit` (`nowait`, or
//! inline in `io_uring_enter`), so this hits requests that end in the device's interrupt:
//! `O_DIRECT`, about once per wake-up of the loop (31 per 1,000 reads at 32 in flight here).
//!
//! Kernel AIO signals the eventfd in `aio_resfd` from that interrupt (`aio_complete`), with no
//! task work, so nothing interrupts the wait. The other ways out, read in the kernel source
//! (Linux 6.18) and measured, cost more: `IORING_SETUP_DEFER_TASKRUN` keeps the task work off
//! the thread, but runs it (and the linked write) only inside `io_uring_enter(GETEVENTS)` of
//! the ring's single submitter, so an epoll loop would never see the event (its registered
//! ring eventfd is signalled from the interrupt, but that is one fd for the ring, not one per
//! operation); `IORING_SETUP_SQPOLL` sends the task work to the kernel's polling thread but
//! keeps a CPU busy (more than twice the CPU per operation, measured). Without
//! `DEFER_TASKRUN`, the registered-eventfd variants (`IORING_REGISTER_EVENTFD[_ASYNC]`) are
//! signalled from the same task work.
//!
//! So, when io_uring is the engine (without SQPOLL, which has no such interruption, and without
//! `Config::uring_async`, which asks for io_uring's workers), a single read or write of a local
//! file or block device opened `O_DIRECT` goes to a kernel AIO engine made on first use (never,
//! where the system refuses kernel AIO: io_uring keeps them). Its requests are signalled as
//! that engine's always are (`Signalling::Reaper`: the kernel wakes the driver's reaper thread,
//! which records results and signals each operation's notifier), so no eventfd an operation
//! gives back can receive a late write from the kernel. Files on FUSE or a network file
//! system keep io_uring's worker path (`policy`). A batch all of whose requests are such reads
//! and writes goes to kernel AIO too, as separate completions that the batch's `Group` counts
//! (the reaper thread signals the batch once); any other batch keeps its own ring.
//!
//! Finding the flag takes one `fcntl(F_GETFL)`, the first time this thread submits to an
//! inode through a descriptor number; after that the flag is remembered by the descriptor and
//! the inode (device and inode numbers from the `statx` that `policy` does for every
//! submission anyway). A remembered flag can be stale (`F_SETFL` changed it, or the number was
//! closed and opened again on the same inode with other flags): the request then goes to the
//! other engine, which runs it correctly too, only with (or without) the interrupted waits. The
//! file's class is never remembered this way (a FUSE file taken for a local one would block the
//! submitter).

use std::{cell::Cell, os::fd::RawFd, sync::OnceLock};

use super::super::{
    config::Config,
    engine::{Completion, OpKind, Request},
    kaio::Kaio,
    policy::{self, Classifier, FileClass, FileId},
};

/// Descriptors whose `O_DIRECT` flag each thread remembers.
const REMEMBERED: usize = 8;

type Remembered = [Option<(RawFd, FileId, bool)>; REMEMBERED];

thread_local! {
    /// What [`Direct::decide`] said about the request this thread is submitting: its
    /// descriptor, its file's class if it was looked up, and whether it goes to kernel AIO.
    static DECIDED: Cell<Option<(RawFd, Option<FileClass>, bool)>> = const { Cell::new(None) };
    /// What [`Direct::decide_batch`] said about the batch this thread is submitting: its first
    /// descriptor and its length, if it goes to kernel AIO.
    static DECIDED_BATCH: Cell<Option<(RawFd, usize)>> = const { Cell::new(None) };
    /// The `O_DIRECT` flag of the last descriptors this thread submitted to, with their inode,
    /// and the slot to replace next.
    static FLAGS: Cell<(Remembered, usize)> = const { Cell::new(([None; REMEMBERED], 0)) };
}

/// Where a single request goes.
pub(super) enum Route<'a> {
    /// To kernel AIO, with a classifier that knows the file.
    Kaio(&'a Kaio, Classifier),
    /// To io_uring, with a classifier that knows the file if it was looked up.
    Uring(Classifier),
}

/// The kernel AIO engine that takes io_uring's `O_DIRECT` requests, made on first use.
#[derive(Debug)]
pub(super) struct Direct {
    config: Config,
    /// Whether any request may go there (not with SQPOLL or `uring_async`).
    enabled: bool,
    kaio: OnceLock<Option<Kaio>>,
}

impl Direct {
    pub(super) fn new(config: &Config, enabled: bool) -> Direct {
        Direct {
            config: config.clone(),
            enabled,
            kaio: OnceLock::new(),
        }
    }

    /// The engine, made now if no request has needed it yet; `None` where the system refuses
    /// kernel AIO.
    fn engine(&self) -> Option<&Kaio> {
        self.kaio
            .get_or_init(|| Kaio::new(&self.config).ok())
            .as_ref()
    }

    /// The engine, if a request has gone there (so it may have requests to reap).
    pub(super) fn existing(&self) -> Option<&Kaio> {
        self.kaio.get().and_then(Option::as_ref)
    }

    /// Whether the single request `r` goes to kernel AIO. [`Direct::take`] on the same thread
    /// follows this answer for the same request.
    pub(super) fn decide(&self, r: &Request) -> bool {
        let (class, direct) = self.look(r);
        let to_kaio = direct && self.engine().is_some();
        let _ = DECIDED.try_with(|d| d.set(Some((r.fd, class, to_kaio))));
        to_kaio
    }

    /// Where `r` goes, as `decide` said for it. A request that `decide` did not see stays with
    /// io_uring, which completes either kind of signalling.
    pub(super) fn take(&self, r: &Request) -> Route<'_> {
        match DECIDED.try_with(Cell::take).ok().flatten() {
            Some((fd, Some(class), to_kaio)) if fd == r.fd => {
                let files = Classifier::knowing(fd, class);
                match self.existing() {
                    Some(kaio) if to_kaio => Route::Kaio(kaio, files),
                    _ => Route::Uring(files),
                }
            }
            _ => Route::Uring(Classifier::default()),
        }
    }

    /// Whether every request of a batch is a read or write of a local `O_DIRECT` file, so that
    /// the batch goes to kernel AIO. [`Direct::take_batch`] on the same thread follows this
    /// answer. A batch whose requests `decide_batch` did not see (a stale answer) may go to
    /// either engine: both complete a batch's requests the same way (the reaper thread,
    /// then the batch's `Group`).
    pub(super) fn decide_batch(&self, requests: &[Request]) -> bool {
        let mut last: Option<(RawFd, bool)> = None;
        let all = !requests.is_empty()
            && requests.iter().all(|r| match last {
                Some((fd, direct)) if fd == r.fd => direct,
                _ => {
                    let direct = self.look(r).1;
                    last = Some((r.fd, direct));
                    direct
                }
            });
        let to_kaio = all && self.engine().is_some();
        let decided = to_kaio.then(|| (requests[0].fd, requests.len()));
        let _ = DECIDED_BATCH.try_with(|d| d.set(decided));
        to_kaio
    }

    /// The engine for a batch that `decide_batch` sent to kernel AIO.
    pub(super) fn take_batch(&self, batch: &[Completion]) -> Option<&Kaio> {
        match DECIDED_BATCH.try_with(Cell::take).ok().flatten() {
            Some((fd, len)) if batch.first().map(|c| c.request.fd) == Some(fd) => {
                (batch.len() <= len).then(|| self.existing()).flatten()
            }
            _ => None,
        }
    }

    /// The class of `r`'s file, if looked up, and whether `r` is a read or write of a local
    /// file or block device opened `O_DIRECT`.
    fn look(&self, r: &Request) -> (Option<FileClass>, bool) {
        let rw = matches!(
            r.kind,
            OpKind::Read | OpKind::Write | OpKind::Readv | OpKind::Writev
        );
        if !self.enabled || !rw {
            return (None, false);
        }
        let (class, id) = policy::classify_file(r.fd);
        let direct = matches!(class, FileClass::Local | FileClass::BlockDevice)
            && id.is_some_and(|id| is_direct(r.fd, id));
        (Some(class), direct)
    }
}

/// Whether `fd`, which names inode `id`, is `O_DIRECT`: remembered, else asked and remembered.
fn is_direct(fd: RawFd, id: FileId) -> bool {
    FLAGS
        .try_with(|flags| {
            let (mut known, next) = flags.get();
            let found = known
                .iter()
                .flatten()
                .find(|(f, i, _)| *f == fd && *i == id);
            if let Some(&(_, _, direct)) = found {
                return direct;
            }
            let direct = policy::is_direct(fd);
            known[next] = Some((fd, id, direct));
            flags.set((known, (next + 1) % REMEMBERED));
            direct
        })
        .unwrap_or_else(|_| policy::is_direct(fd))
}
