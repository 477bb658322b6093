//! The per-file I/O policy: what kind of file an operation targets, looked up before the
//! operation is submitted, and so how each engine runs it.
//!
//! | class | io_uring | kernel AIO | thread pool |
//! |---|---|---|---|
//! | local file, buffered or `O_DIRECT`; block device | native (a single `O_DIRECT` read or write: kernel AIO, see `uring/direct.rs`) | `RWF_NOWAIT`, pool if it would block | worker |
//! | FUSE or network file system ([`FileClass::Remote`]) | `IOSQE_ASYNC` | worker | worker |
//! | pipe, FIFO, socket ([`FileClass::Stream`]); character device | native | `RWF_NOWAIT`, pool if refused | worker |
//!
//! Why remote files go to a worker from the first operation: their server decides how long a
//! read takes, and the kernel may run it inside the submitting call. A FUSE file served with
//! direct I/O (`FOPEN_DIRECT_IO`, which sshfs, rclone and s3fs-style mounts use) or opened
//! `O_DIRECT`, on a server without `FUSE_ASYNC_DIO`, made `io_uring_enter` wait the whole 200 ms
//! of the read; NFS and SMB make no promise either. Kernel AIO's `RWF_NOWAIT` is refused by FUSE
//! today, but a network file system that accepts it may still wait for its server, so kernel
//! AIO hands these to its workers instead of trusting the flag. Local file systems keep the
//! native path, buffered or `O_DIRECT` alike: io_uring and kernel AIO run `O_DIRECT` on a block
//! device asynchronously, and punt or refuse (`RWF_NOWAIT`) what would wait for the device
//! (an uncached page, an `O_DIRECT` write that extends the file). So the class needs no
//! `F_GETFL`; only io_uring's choice of engine for a single request asks it ([`is_direct`]).
//!
//! Nothing is remembered per descriptor number, which a `close` and an `open` can give to
//! another file: each submission looks at its descriptor again (once for consecutive requests
//! on the same descriptor), with one `statx` (`AT_STATX_DONT_SYNC`, so FUSE and NFS answer from
//! the inode without asking their server; about 0.4 µs here), which never waits for storage.
//! Only the file system's kind is cached, by mount: by the mount's never-reused 64-bit id where
//! the kernel has one (Linux 6.8), else by its id and device number. It is found in
//! `/proc/self/mountinfo` (no request to the file system's server), or, without `/proc`, with
//! `fstatfs`. A single read served from the page cache is done before any of this (`nowait`),
//! so costs nothing here.
//!
//! `Config::uring_async` (`MIO_AIO_URING_ASYNC=1`) overrides the table for io_uring: every
//! request gets `IOSQE_ASYNC` (the ring applies it, see `uring/ring.rs`).

use std::{
    cell::Cell,
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use nix::errno::Errno;

/// What a file descriptor refers to, as far as the engines care.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum FileClass {
    /// A pipe, FIFO or socket: read and written as a stream, at no offset.
    Stream,
    /// A character device (`/dev/null`, a terminal, …).
    CharDevice,
    /// A block device opened directly.
    BlockDevice,
    /// A file (or directory) on a local file system, buffered or `O_DIRECT`.
    Local,
    /// A file on FUSE or a network file system (NFS, SMB/CIFS, 9p, Ceph, …).
    Remote,
    /// The descriptor could not be examined: closed (the engine's own call reports that), or
    /// `statx` refused (kernels before 4.11, old seccomp profiles), when it takes the native
    /// path.
    Unknown,
}

impl FileClass {
    /// Whether the kernel may run this file's reads and writes inside the submitting call, or
    /// wait for a server there, so that they must go to a worker thread.
    pub(crate) fn needs_worker(self) -> bool {
        matches!(self, FileClass::Remote)
    }
}

/// Classifies the file behind `fd`: one system call, plus a look-up of the file system's kind
/// the first time this process meets its mount.
pub(crate) fn classify(fd: RawFd) -> FileClass {
    classify_file(fd).0
}

/// The inode behind a descriptor when it was classified: its device and inode numbers.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

/// Classifies the file behind `fd` (as [`classify`]) and says which inode it is, from the same
/// `statx`; `None` where it could not be examined.
pub(crate) fn classify_file(fd: RawFd) -> (FileClass, Option<FileId>) {
    let Some(stx) = statx(fd, libc::STATX_TYPE | libc::STATX_INO | STATX_MNT_ID_UNIQUE) else {
        return (FileClass::Unknown, None);
    };
    let id = (stx.stx_mask & libc::STATX_INO != 0).then(|| FileId {
        dev: (u64::from(stx.stx_dev_major) << 32) | u64::from(stx.stx_dev_minor),
        ino: stx.stx_ino,
    });
    let class = match u32::from(stx.stx_mode) & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFSOCK => FileClass::Stream,
        libc::S_IFCHR => FileClass::CharDevice,
        libc::S_IFBLK => FileClass::BlockDevice,
        _ if is_remote(fd, &stx) => FileClass::Remote,
        _ => FileClass::Local,
    };
    (class, id)
}

/// Whether `fd` was opened (or set with `F_SETFL`) `O_DIRECT`: one `fcntl(F_GETFL)`, which reads
/// the open file's flags and never reaches the file system. False if it cannot tell.
pub(crate) fn is_direct(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer and only reads the descriptor's flags.
    syscall!(fcntl(fd, libc::F_GETFL)).is_ok_and(|flags| flags & libc::O_DIRECT != 0)
}

/// Classifies the requests of one submission, looking at each descriptor once: within one
/// call the requests name their files by number exactly as the kernel will see them.
#[derive(Debug, Default)]
pub(crate) struct Classifier {
    last: Option<(RawFd, FileClass)>,
}

impl Classifier {
    /// A classifier that already knows the class of `fd` (looked up by the same submission).
    pub(crate) fn knowing(fd: RawFd, class: FileClass) -> Classifier {
        Classifier {
            last: Some((fd, class)),
        }
    }

    /// The class of the file behind `fd`.
    pub(crate) fn class(&mut self, fd: RawFd) -> FileClass {
        match self.last {
            Some((last, class)) if last == fd => class,
            _ => {
                let class = classify(fd);
                self.last = Some((fd, class));
                class
            }
        }
    }

    /// Whether io_uring runs a request on `fd` with `IOSQE_ASYNC` (straight to a kernel worker).
    pub(crate) fn uring_async(&mut self, fd: RawFd) -> bool {
        self.class(fd).needs_worker()
    }

    /// Whether kernel AIO hands a request on `fd` to its worker threads without trying the
    /// kernel.
    pub(crate) fn kaio_worker(&mut self, fd: RawFd) -> bool {
        self.class(fd).needs_worker()
    }
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): a 64-bit mount id never reused while the system runs.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// `statx(fd, NULL, AT_EMPTY_PATH | AT_STATX_DONT_SYNC, mask)`, or with the path `""` where the
/// kernel (before 6.11) refuses a null path with EFAULT. The null path skips copying a path
/// string from user space.
fn statx(fd: RawFd, mask: u32) -> Option<libc::statx> {
    static NULL_PATH_REFUSED: AtomicBool = AtomicBool::new(false);
    let call = |path: *const libc::c_char| {
        let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
        // SAFETY: the kernel writes one `struct statx` into the buffer; the path is null or a
        // static empty C string, which AT_EMPTY_PATH makes it resolve to `fd` itself.
        syscall!(syscall(
            libc::SYS_statx,
            fd,
            path,
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            mask,
            stx.as_mut_ptr(),
        ))
        // SAFETY: zero is a valid `struct statx`, and on success the kernel filled it.
        .map(|_| unsafe { stx.assume_init() })
    };
    if !NULL_PATH_REFUSED.load(Ordering::Relaxed) {
        match call(std::ptr::null()) {
            Ok(stx) => return Some(stx),
            Err(Errno::EFAULT) => NULL_PATH_REFUSED.store(true, Ordering::Relaxed),
            Err(_) => return None,
        }
    }
    call(c"".as_ptr()).ok()
}

/// What identifies a mount in the cache of file system kinds.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum MountKey {
    /// The unique mount id (Linux 6.8).
    Unique(u64),
    /// The reusable mount id (Linux 5.8) and the device number: a new mount would have to
    /// reuse both while this process still has files of the old one in use.
    Reusable { id: u64, dev: u64 },
    /// Before Linux 5.8: the device number only.
    Device(u64),
}

thread_local! {
    /// The last mount this thread looked up, and whether it is remote.
    static LAST_MOUNT: Cell<Option<(MountKey, bool)>> = const { Cell::new(None) };
}

/// Every mount this process looked up, and whether it is remote.
static MOUNTS: Mutex<Vec<(MountKey, bool)>> = Mutex::new(Vec::new());

/// Whether the file system of `fd` (whose `statx` is `stx`) is FUSE or a network file system.
fn is_remote(fd: RawFd, stx: &libc::statx) -> bool {
    let dev = (u64::from(stx.stx_dev_major) << 32) | u64::from(stx.stx_dev_minor);
    let key = if stx.stx_mask & STATX_MNT_ID_UNIQUE != 0 {
        MountKey::Unique(stx.stx_mnt_id)
    } else if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        MountKey::Reusable {
            id: stx.stx_mnt_id,
            dev,
        }
    } else {
        MountKey::Device(dev)
    };
    if let Ok(Some((k, remote))) = LAST_MOUNT.try_with(Cell::get) {
        if k == key {
            return remote;
        }
    }
    let known = lock_mounts()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, remote)| remote);
    let remote = known.unwrap_or_else(|| {
        let remote = mount_is_remote(fd);
        let mut mounts = lock_mounts();
        if !mounts.iter().any(|(k, _)| *k == key) {
            mounts.push((key, remote));
        }
        remote
    });
    let _ = LAST_MOUNT.try_with(|last| last.set(Some((key, remote))));
    remote
}

fn lock_mounts() -> std::sync::MutexGuard<'static, Vec<(MountKey, bool)>> {
    MOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks up the kind of the file system `fd` is on: by its mount's entry in
/// `/proc/self/mountinfo`, else by `fstatfs` (which FUSE and NFS pass to their server).
#[cold]
fn mount_is_remote(fd: RawFd) -> bool {
    let fs_type = statx(fd, libc::STATX_MNT_ID)
        .filter(|stx| stx.stx_mask & libc::STATX_MNT_ID != 0)
        .and_then(|stx| mount_fs_type(stx.stx_mnt_id));
    match fs_type {
        Some(name) => remote_fs_name(&name),
        None => {
            let mut sfs = std::mem::MaybeUninit::<libc::statfs>::zeroed();
            // SAFETY: fstatfs writes one `struct statfs` into the buffer.
            if unsafe { libc::fstatfs(fd, sfs.as_mut_ptr()) } != 0 {
                return false;
            }
            // SAFETY: zero is a valid `struct statfs`, and fstatfs filled it.
            remote_fs_magic(unsafe { sfs.assume_init() }.f_type as u32)
        }
    }
}

/// The file system type of mount `id`, from `/proc/self/mountinfo`
/// (`ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER_OPTIONS`).
fn mount_fs_type(id: u64) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let id = id.to_string();
    table.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        (fields.split(' ').next() == Some(id.as_str()))
            .then(|| rest.split(' ').next().map(str::to_owned))
            .flatten()
    })
}

/// Whether a file system type name (as `/proc/self/mountinfo` shows it) is FUSE (`fuse`,
/// `fuseblk`, `fuse.sshfs`, virtiofs, …) or a network file system.
fn remote_fs_name(name: &str) -> bool {
    name == "fuse"
        || name == "fuseblk"
        || name.starts_with("fuse.")
        || matches!(
            name,
            "virtiofs"
                | "nfs"
                | "nfs4"
                | "cifs"
                | "smb3"
                | "smbfs"
                | "9p"
                | "ceph"
                | "afs"
                | "coda"
                | "lustre"
                | "orangefs"
                | "pvfs2"
                | "ncpfs"
                | "glusterfs"
        )
}

/// Whether an `fstatfs` magic number is FUSE (and virtiofs) or a network file system.
fn remote_fs_magic(magic: u32) -> bool {
    matches!(
        magic,
        0x6573_5546 // FUSE_SUPER_MAGIC
            | 0x6969 // NFS_SUPER_MAGIC
            | 0xff53_4d42 // CIFS_SUPER_MAGIC
            | 0xfe53_4d42 // SMB2_SUPER_MAGIC
            | 0x517b // SMB_SUPER_MAGIC
            | 0x0102_1997 // V9FS_MAGIC
            | 0x00c3_6400 // CEPH_SUPER_MAGIC
            | 0x5346_414f // AFS_SUPER_MAGIC
            | 0x6b41_4653 // AFS_FS_MAGIC
            | 0x7375_7245 // CODA_SUPER_MAGIC
            | 0x0bd0_0bd0 // LUSTRE_SUPER_MAGIC
            | 0x2003_0528 // ORANGEFS_DEVREQ_MAGIC
    )
}

/// The integration tests' slow FUSE file system, which finds what it needs from its parent
/// module (`is_root`, `has_cap_sys_admin`, `skip`) in `tests`.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/support/fuse.rs"]
mod fuse_fixture;
#[cfg(test)]
use tests::{has_cap_sys_admin, is_root, skip};

#[cfg(test)]
mod tests {
    //! The classification of real descriptors (the FUSE one needs root and `/dev/fuse`, as the
    //! integration tests' fixture does; it says so and skips otherwise).
    use std::{
        fs::{File, OpenOptions},
        os::{
            fd::AsRawFd,
            unix::{fs::OpenOptionsExt, net::UnixStream},
        },
        path::{Path, PathBuf},
    };

    use super::{classify, fuse_fixture, remote_fs_magic, remote_fs_name, FileClass};

    pub(super) fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Whether the process may mount (`CAP_SYS_ADMIN` in `/proc/self/status`).
    pub(super) fn has_cap_sys_admin() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
                u64::from_str_radix(hex.trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 21) != 0)
    }

    /// Says why a test does not run (past libtest's capture, as the integration tests do).
    pub(super) fn skip(reason: &str) {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {name}: {reason}");
    }

    /// A directory on the root (block-backed) file system: /tmp may be a tmpfs.
    fn disk_dir() -> PathBuf {
        let var_tmp = Path::new("/var/tmp");
        if var_tmp.is_dir() {
            var_tmp.to_owned()
        } else {
            std::env::current_dir().unwrap()
        }
    }

    #[test]
    fn pipes_and_sockets_are_streams() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(classify(r.as_raw_fd()), FileClass::Stream);
        assert_eq!(classify(w.as_raw_fd()), FileClass::Stream);
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(classify(a.as_raw_fd()), FileClass::Stream);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(classify(tcp.as_raw_fd()), FileClass::Stream);
    }

    #[test]
    fn dev_null_is_a_character_device() {
        let null = File::open("/dev/null").unwrap();
        assert_eq!(classify(null.as_raw_fd()), FileClass::CharDevice);
        assert!(!classify(null.as_raw_fd()).needs_worker());
    }

    /// Buffered or O_DIRECT (even set after `open`), a disk file keeps the native path.
    #[test]
    fn disk_files_are_local_buffered_or_direct() {
        let tmp = tempfile::NamedTempFile::new_in(disk_dir()).unwrap();
        let fd = tmp.as_file().as_raw_fd();
        assert_eq!(classify(fd), FileClass::Local);
        assert!(!classify(fd).needs_worker());
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(tmp.path())
        {
            Ok(direct) => assert_eq!(classify(direct.as_raw_fd()), FileClass::Local),
            Err(e) => skip(&format!("no O_DIRECT in {}: {e}", disk_dir().display())),
        }
        // SAFETY: F_SETFL only changes the flags of a descriptor this test owns.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_DIRECT) } == 0 {
            assert_eq!(classify(fd), FileClass::Local);
        }
    }

    #[test]
    fn no_descriptor_is_unknown() {
        assert_eq!(classify(-1), FileClass::Unknown);
        assert!(!FileClass::Unknown.needs_worker());
    }

    #[test]
    fn fuse_files_are_remote() {
        use fuse_fixture::{SlowFs, SlowFsOptions};
        for direct_io in [true, false] {
            let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions {
                direct_io,
                ..Default::default()
            }) else {
                return;
            };
            let f = File::open(fs.path()).unwrap();
            let class = classify(f.as_raw_fd());
            assert_eq!(class, FileClass::Remote);
            assert!(class.needs_worker());
            let d = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(fs.path())
                .unwrap();
            assert_eq!(classify(d.as_raw_fd()), FileClass::Remote);
            // Nothing was read to find this out.
            assert_eq!(fs.stats().reads, 0);
            drop((f, d));
        }
    }

    #[test]
    fn file_system_kinds() {
        for remote in [
            "fuse",
            "fuseblk",
            "fuse.sshfs",
            "fuse.rclone",
            "nfs",
            "nfs4",
            "cifs",
        ] {
            assert!(remote_fs_name(remote), "{remote}");
        }
        for local in [
            "ext4", "xfs", "btrfs", "tmpfs", "overlay", "proc", "fusectl",
        ] {
            assert!(!remote_fs_name(local), "{local}");
        }
        assert!(remote_fs_magic(0x6573_5546));
        assert!(remote_fs_magic(0x6969));
        assert!(!remote_fs_magic(0xef53)); // ext4
        assert!(!remote_fs_magic(0x0102_1994)); // tmpfs
    }
}
