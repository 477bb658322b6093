//! A slow, read-only FUSE filesystem with one file, for tests that need file
//! reads that take a long (and known) time, or that fail with `EIO`.
//!
//! ```ignore
//! let Some(fs) = support::fuse::SlowFs::mount_or_skip(SlowFsOptions::default()) else {
//!     return;
//! };
//! let f = std::fs::File::open(fs.path())?;          // ".../data"
//! // every read request the kernel sends takes `read_delay` (200 ms)
//! // and returns `support::fuse::expected(offset, len)`.
//! drop(f);                                            // close before `fs` drops
//! ```
//!
//! The filesystem is served by `fuser` directly through `/dev/fuse` (no
//! libfuse or `fusermount`), which needs root.  It is mounted on a fresh
//! temporary directory and unmounted when [`Mounted`] drops.
//!
//! # How many kernel requests does one read become?
//!
//! Delays and `EIO` ranges apply to each *request the kernel sends*, which is
//! not always one per system call:
//!
//! * `direct_io: true` (the default) replies to `open` with
//!   `FOPEN_DIRECT_IO`: the page cache is bypassed and a read becomes one
//!   request for exactly its range, unless it exceeds the kernel's maximum
//!   request size (1 MiB, less when the buffer is not page aligned; a 1 MiB
//!   read into a `Vec` took 2 requests, a 4 MiB one 5).  A synchronous read
//!   sends those one after the other, so it takes `n * read_delay`.
//! * `direct_io: false` uses the page cache: the kernel reads whole 4 KiB
//!   pages plus readahead (requests of up to 128 KiB), so an `EIO` range can
//!   fail a read of neighbouring bytes, and a second read of cached bytes on
//!   the same open file takes no time at all.  `FOPEN_KEEP_CACHE` is never
//!   set, so every new `open()` of the file drops its cached pages and reads
//!   are slow again.  Prefer distinct ranges per read in this mode.
//!
//! Opening the file with `O_DIRECT` behaves like `direct_io: true` for that
//! descriptor (FUSE does not enforce any alignment).
//!
//! # Concurrency
//!
//! Every read request is answered after the delay from a short-lived thread
//! of its own, so any number of delayed reads overlap; the few FUSE worker
//! threads only dispatch.  (Many FUSE worker threads would be costly: fuser
//! gives each a 16 MiB request buffer, and with 64 threads mounts and
//! unmounts took up to hundreds of ms on a 2-CPU machine, stalling other
//! tests' reads.)  [`Mounted::stats`] reports how many reads were in flight
//! at once.
//!
//! Whether the *kernel* sends many requests at once depends on the I/O
//! interface and on `async_dio` (default on: negotiates `FUSE_ASYNC_DIO`
//! and raises the background-request limit from 16 to 1024).  Measured with
//! 32 reads of 4 KiB and a 200 ms delay on Linux 6.18:
//!
//! | file mode                        | `async_dio` | io_uring | kernel AIO (`io_submit`)     |
//! |----------------------------------|-------------|----------|------------------------------|
//! | `direct_io` or `O_DIRECT`        | on          | 0.2 s    | 0.2 s, `io_submit` returns at once |
//! | `direct_io` or `O_DIRECT`        | off         | 6.4 s    | 6.4 s, all inside `io_submit` |
//! | buffered (neither)               | on          | 0.2 s    | 6.4 s, all inside `io_submit` |
//! | buffered (neither)               | off         | 0.8 s    | 6.4 s, all inside `io_submit` |
//!
//! So the defaults make both io_uring and kernel AIO fully asynchronous;
//! kernel AIO on a buffered file is always synchronous, as on most file
//! systems.
//!
//! # Unmounting
//!
//! Unmounting fails with `EBUSY` while any file of the mount is open, so
//! close (drop) every file before the [`Mounted`].  If something is still
//! open, `Drop` aborts the FUSE connection (`MNT_FORCE`: reads still pending
//! fail with `ECONNABORTED`, later ones on the open files with `ENOTCONN`)
//! and detaches the mount (`MNT_DETACH`).
//!
//! **Never let the process exit while the filesystem is mounted and kernel
//! AIO (`io_submit`) reads on it are pending**: the filesystem is served by
//! threads of the test process itself, which die first, and the kernel's
//! `exit_aio()` then waits forever for the requests (an unkillable hang).
//! Dropping the [`Mounted`] (also during a panic's unwinding) avoids this.

use std::ffi::{CString, OsStr};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

/// Name of the only file, in the root directory of the mount.
pub const FILE_NAME: &str = "data";

const DATA_INO: INodeNo = INodeNo(2);
/// Attributes never change, so the kernel may cache them for long.
const TTL: Duration = Duration::from_secs(3600);

/// Period of the file's content pattern.  Prime, so the pattern never lines
/// up with power-of-two block or page boundaries and a misplaced chunk is
/// detected.
const PERIOD: u64 = 251;

/// Two periods of the pattern, so any phase can be copied in one slice.
static PATTERN: [u8; 2 * PERIOD as usize] = {
    let mut p = [0u8; 2 * PERIOD as usize];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i as u64 % PERIOD) as u8;
        i += 1;
    }
    p
};

/// Content of the file at byte `off`: `(off % 251) as u8`.
pub fn byte_at(off: u64) -> u8 {
    (off % PERIOD) as u8
}

/// The `len` bytes of the file starting at `off` (ignoring its size).
pub fn expected(off: u64, len: usize) -> Vec<u8> {
    let phase = (off % PERIOD) as usize;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(PERIOD as usize);
        v.extend_from_slice(&PATTERN[phase..phase + n]);
    }
    v
}

/// Why FUSE fixtures cannot run here, if they cannot: needs root with
/// `CAP_SYS_ADMIN`, the `fuse` filesystem type, and a usable `/dev/fuse`.
pub fn available() -> Result<(), String> {
    if !super::is_root() {
        return Err("FUSE fixture needs root (fuser mounts via /dev/fuse directly)".into());
    }
    if !super::has_cap_sys_admin() {
        return Err("FUSE fixture needs CAP_SYS_ADMIN to mount".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        return Err("kernel has no `fuse` filesystem (modprobe fuse?)".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))
}

/// Configuration of a [`SlowFs`].
#[derive(Clone, Debug)]
pub struct SlowFsOptions {
    /// Size of the file `data` in bytes.  Default 16 MiB.
    pub size: u64,
    /// Time the filesystem sleeps before answering each read request.
    /// Default 200 ms.  Can be changed later with [`Mounted::set_read_delay`].
    pub read_delay: Duration,
    /// Read requests overlapping any of these byte ranges fail with `EIO`
    /// (after the delay).  Default none.
    pub eio_ranges: Vec<Range<u64>>,
    /// Reply to `open` with `FOPEN_DIRECT_IO`: bypass the page cache, so a
    /// read of up to ~1 MiB is one request.  Default true.  See the module
    /// docs.
    pub direct_io: bool,
    /// Negotiate `FUSE_ASYNC_DIO` and raise the kernel's background-request
    /// limit from 16 to 1024, so asynchronous direct reads (io_uring, kernel
    /// AIO) are all queued to the filesystem at once instead of being served
    /// one by one by the submitter.  Default true.  See the module docs.
    pub async_dio: bool,
    /// Number of threads receiving FUSE requests.  Default 2.  Delayed
    /// reads do not occupy them (each is answered from a thread of its
    /// own), so any number of reads overlap even with 1.
    pub threads: usize,
}

impl Default for SlowFsOptions {
    fn default() -> Self {
        SlowFsOptions {
            size: 16 << 20,
            read_delay: Duration::from_millis(200),
            eio_ranges: Vec::new(),
            direct_io: true,
            async_dio: true,
            threads: 2,
        }
    }
}

/// Counters of the read requests served so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read requests received (including failed ones).
    pub reads: u64,
    /// Most read requests that were being served at the same time.
    pub max_in_flight: usize,
}

#[derive(Debug, Default)]
struct Shared {
    delay_ns: AtomicU64,
    reads: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The FUSE filesystem: a root directory holding one read-only regular file,
/// [`FILE_NAME`], whose byte at offset `off` is [`byte_at`]`(off)`.
#[derive(Debug)]
pub struct SlowFs {
    opts: SlowFsOptions,
    shared: Arc<Shared>,
}

impl SlowFs {
    /// Mount a new `SlowFs` on a fresh temporary directory.
    pub fn mount(opts: SlowFsOptions) -> io::Result<Mounted> {
        if opts.threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "threads must be > 0",
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("mio-aio-slowfs.")
            .tempdir()?;
        let shared = Arc::new(Shared::default());
        shared
            .delay_ns
            .store(duration_to_ns(opts.read_delay), Ordering::Relaxed);

        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("mio-aio-slowfs".into()),
            MountOption::Subtype("slowfs".into()),
            MountOption::RO,
            MountOption::NoAtime,
        ];
        config.n_threads = Some(opts.threads);
        // Each worker reads from its own /dev/fuse descriptor
        // (FUSE_DEV_IOC_CLONE), as fuser recommends for several threads.
        config.clone_fd = true;

        let fs = SlowFs {
            opts,
            shared: Arc::clone(&shared),
        };
        let session = fuser::spawn_mount(fs, dir.path(), &config)?;
        let file = dir.path().join(FILE_NAME);
        Ok(Mounted {
            session: Some(session),
            shared,
            file,
            dir,
        })
    }

    /// [`SlowFs::mount`], or `None` after printing why through
    /// [`super::skip`] when [`available`] says FUSE cannot work here.
    /// Panics if FUSE looks available but mounting fails anyway.
    pub fn mount_or_skip(opts: SlowFsOptions) -> Option<Mounted> {
        if let Err(reason) = available() {
            super::skip(&reason);
            return None;
        }
        Some(Self::mount(opts).expect("mounting the SlowFs FUSE filesystem"))
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o555, 0, 2),
            DATA_INO => (FileType::RegularFile, 0o444, self.opts.size, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Serve one read request: count it, then reply after the delay from a
    /// thread of its own, so that a delayed read never occupies one of the
    /// filesystem's threads.
    fn serve_read(&self, offset: u64, size: u32, reply: ReplyData) {
        let req = offset..offset.saturating_add(u64::from(size));
        let fail = self
            .opts
            .eio_ranges
            .iter()
            .any(|r| r.start < req.end && req.start < r.end);
        let end = req.end.min(self.opts.size);
        let outcome = if fail {
            Err(Errno::EIO)
        } else {
            Ok(expected(offset, end.saturating_sub(offset) as usize))
        };

        let sh = Arc::clone(&self.shared);
        sh.reads.fetch_add(1, Ordering::SeqCst);
        let now = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = Duration::from_nanos(sh.delay_ns.load(Ordering::Relaxed));
        let finish = move || {
            std::thread::sleep(delay);
            // Leave the in-flight count before replying: once the reader
            // has its data, the request is no longer being served.
            sh.in_flight.fetch_sub(1, Ordering::SeqCst);
            match outcome {
                Ok(data) => reply.data(&data),
                Err(errno) => reply.error(errno),
            }
        };
        if delay.is_zero() {
            finish();
        } else {
            // Detached: it ends after at most `delay`.  (If the filesystem
            // is gone by then, the reply is just dropped by the kernel.)
            std::thread::Builder::new()
                .name("slowfs-read".into())
                .spawn(finish)
                .expect("spawning a SlowFs reply thread");
        }
    }
}

impl Filesystem for SlowFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if self.opts.async_dio {
            // Both are optional optimisations: ignore a kernel that refuses.
            let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
            let _ = config.set_max_background(1024);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name.as_bytes() == FILE_NAME.as_bytes() {
            let attr = self.attr(DATA_INO).expect("data inode exists");
            reply.entry(&TTL, &attr, Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != DATA_INO {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let fopen = if self.opts.direct_io {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(0), fopen);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DATA_INO {
            return reply.error(Errno::EISDIR);
        }
        self.serve_read(offset, size, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DATA_INO, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            // The offset passed back to us is that of the *next* entry.
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted [`SlowFs`]; unmounts (and removes its directory) on drop.
#[derive(Debug)]
pub struct Mounted {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    file: PathBuf,
    // Dropped after `Drop::drop` has unmounted, so the (then empty) directory
    // can be removed.
    dir: tempfile::TempDir,
}

impl Mounted {
    /// Path of the file `data`.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The mount point (a temporary directory).
    pub fn mountpoint(&self) -> &Path {
        self.dir.path()
    }

    /// Change the delay of read requests that arrive from now on.
    pub fn set_read_delay(&self, delay: Duration) {
        self.shared
            .delay_ns
            .store(duration_to_ns(delay), Ordering::Relaxed);
    }

    /// Read requests served so far.
    pub fn stats(&self) -> Stats {
        Stats {
            reads: self.shared.reads.load(Ordering::SeqCst),
            max_in_flight: self.shared.max_in_flight.load(Ordering::SeqCst),
        }
    }

    /// Zero the counters of [`Mounted::stats`] (requests being served at
    /// this moment still count in future `max_in_flight` values).
    pub fn reset_stats(&self) {
        self.shared.reads.store(0, Ordering::SeqCst);
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // A successful unmount aborts the FUSE connection, so the worker
        // threads see ENODEV and `umount_and_join` returns.
        if session.umount_and_join().is_ok() {
            return;
        }
        // Most likely EBUSY: a file is still open, perhaps with reads in
        // flight.  The session has been consumed (its threads are detached).
        // MNT_FORCE makes FUSE abort the connection even though the unmount
        // itself may still fail: pending and future requests fail with
        // ECONNABORTED or ENOTCONN and the worker threads exit.  Leaving the
        // connection alive instead would hang the process at exit if kernel
        // AIO requests were still queued on it (exit_aio() waits for them
        // while the threads that would answer them are already gone).  Then
        // detach the mount lazily so the directory can be removed.
        let Ok(dir) = CString::new(self.dir.path().as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: `dir` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(dir.as_ptr(), libc::MNT_FORCE) } == 0 {
            return;
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "SlowFs: could not unmount {}: {}",
                self.dir.path().display(),
                io::Error::last_os_error()
            );
        }
    }
}

fn duration_to_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
