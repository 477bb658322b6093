//! The per-file I/O policy: a file whose reads the kernel would run inside the submitting call
//! (FUSE served with direct I/O, a FUSE file opened `O_DIRECT`, …) is sent to a worker from its
//! very first operation, so `submit` never waits for storage; fast files keep the native path.
//!
//! Every case runs in a fresh child process per backend (`MIO_AIO_BACKEND`), so that its first
//! submission is the process's first: nothing learnt from an earlier stall can help it. A read
//! of the slow filesystem takes `DELAY`; a `submit` that waited for one would take at least
//! that, so the bound is a tenth of it.
#![cfg(target_os = "linux")]

mod support;

use std::{
    fs::OpenOptions,
    io::Write,
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
    path::Path,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{ReadAt, SourceApi};
use support::fuse::{expected, SlowFs, SlowFsOptions};

const DELAY: Duration = Duration::from_millis(200);
const BOUND: Duration = Duration::from_millis(20);
/// Reads in flight at once, each at its own offset (nothing can come from a cache).
const READS: usize = 4;
const LEN: usize = 4096;
const STRIDE: u64 = 1 << 20;
/// Set in the child processes, which run the case for the backend in `MIO_AIO_BACKEND`.
const CHILD: &str = "MIO_AIO_POLICY_TEST_CHILD";
const BACKENDS: [&str; 3] = ["io_uring", "kaio", "threads"];

/// A page-aligned buffer, as O_DIRECT on a block device needs.
#[repr(C, align(4096))]
struct Page([u8; LEN]);

/// Runs `case` in a child process for each backend (or, in the child, runs it).
fn on_every_backend(test_name: &str, case: fn()) {
    if std::env::var_os(CHILD).is_some() {
        return case();
    }
    for backend in BACKENDS {
        let out = support::seccomp::rerun_self_with_env(
            test_name,
            &[(CHILD, "1"), ("MIO_AIO_BACKEND", backend)],
        );
        support::seccomp::assert_child_passed(&format!("{test_name} ({backend})"), &out);
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Submits `READS` reads of `path` (opened with `O_DIRECT` if asked), each timed, then waits
/// for their events and checks their bytes against `expect(offset, len)`. Returns the slowest
/// `submit`, or `None` (with the reason printed) where the backend asked for is refused here.
fn first_reads(path: &Path, o_direct: bool, expect: fn(u64, usize) -> Vec<u8>) -> Option<Duration> {
    let backend = match mio_aio::backend() {
        Ok(b) => b,
        Err(e) => {
            support::skip(&format!("backend unavailable: {e}"));
            return None;
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(if o_direct { libc::O_DIRECT } else { 0 })
        .open(path)
        .unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let mut bufs: Vec<Page> = (0..READS).map(|_| Page([0; LEN])).collect();
    let mut submits = Vec::new();
    let mut ops: Vec<_> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, page)| {
            let mut op = ReadAt::read_at(file.as_fd(), i as u64 * STRIDE, &mut page.0, 0);
            poll.registry()
                .register(&mut op, Token(i), mio_aio::AIO)
                .unwrap();
            let mut op = Box::pin(op);
            let t = Instant::now();
            op.as_mut().submit().unwrap();
            submits.push(t.elapsed());
            Some(op)
        })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    while done < READS {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reads did not complete"
        );
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => r.unwrap(),
        }
        for ev in events.iter() {
            let op = ops[ev.token().0].as_mut().expect("one event per read");
            assert_eq!(op.as_mut().aio_return(), Ok(LEN));
            ops[ev.token().0] = None;
            done += 1;
        }
    }
    drop(ops);
    for (i, page) in bufs.iter().enumerate() {
        assert!(page.0[..] == expect(i as u64 * STRIDE, LEN)[..], "read {i}");
    }
    let worst = submits.iter().copied().max().unwrap_or_default();
    println!(
        "{backend}: submits {submits:?}, reads took {:?}",
        started.elapsed()
    );
    Some(worst)
}

/// The slow FUSE filesystem with `opts`, or `None` (after printing why) where FUSE cannot run.
fn slow_fs(opts: SlowFsOptions) -> Option<support::fuse::Mounted> {
    SlowFs::mount_or_skip(SlowFsOptions {
        read_delay: DELAY,
        size: READS as u64 * STRIDE,
        ..opts
    })
}

fn assert_not_blocked(what: &str, worst: Duration) {
    assert!(
        worst < BOUND,
        "{what}: a first submit took {worst:?} (a read takes {DELAY:?})"
    );
}

/// sshfs- or rclone-style: the server answers `open` with `FOPEN_DIRECT_IO` and negotiates
/// `FUSE_ASYNC_DIO`.
#[test]
fn fuse_direct_io_first_submits_do_not_block() {
    on_every_backend("fuse_direct_io_first_submits_do_not_block", || {
        let Some(fs) = slow_fs(SlowFsOptions::default()) else {
            return;
        };
        let Some(worst) = first_reads(fs.path(), false, expected) else {
            return;
        };
        assert_not_blocked("FUSE, FOPEN_DIRECT_IO", worst);
        assert!(fs.stats().reads >= READS as u64, "reads reached the server");
    });
}

/// A server whose direct I/O is synchronous (no `FUSE_ASYNC_DIO`): io_uring would run each
/// read inline.
#[test]
fn fuse_synchronous_direct_io_first_submits_do_not_block() {
    on_every_backend(
        "fuse_synchronous_direct_io_first_submits_do_not_block",
        || {
            let Some(fs) = slow_fs(SlowFsOptions {
                async_dio: false,
                ..Default::default()
            }) else {
                return;
            };
            let Some(worst) = first_reads(fs.path(), false, expected) else {
                return;
            };
            assert_not_blocked("FUSE, FOPEN_DIRECT_IO without FUSE_ASYNC_DIO", worst);
        },
    );
}

/// A FUSE file served through the page cache, but opened with `O_DIRECT` by the caller, on a
/// server without `FUSE_ASYNC_DIO` (io_uring would run each read inline).
#[test]
fn fuse_o_direct_first_submits_do_not_block() {
    on_every_backend("fuse_o_direct_first_submits_do_not_block", || {
        let Some(fs) = slow_fs(SlowFsOptions {
            direct_io: false,
            async_dio: false,
            ..Default::default()
        }) else {
            return;
        };
        let Some(worst) = first_reads(fs.path(), true, expected) else {
            return;
        };
        assert_not_blocked("FUSE, opened O_DIRECT", worst);
    });
}

/// The byte at `off` of the disk file: `(off / 7) % 251`, so that pages differ.
fn disk_byte(off: u64) -> u8 {
    ((off / 7) % 251) as u8
}

fn disk_expected(off: u64, len: usize) -> Vec<u8> {
    (off..off + len as u64).map(disk_byte).collect()
}

/// O_DIRECT on the root ext4 (a block device): the native path, never inline.
#[test]
fn ext4_o_direct_first_submits_do_not_block() {
    on_every_backend("ext4_o_direct_first_submits_do_not_block", || {
        let dir = if Path::new("/var/tmp").is_dir() {
            Path::new("/var/tmp").to_owned()
        } else {
            std::env::current_dir().unwrap()
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
        let len = READS as u64 * STRIDE;
        let chunk = 1 << 20;
        for off in (0..len).step_by(chunk) {
            tmp.write_all(&disk_expected(off, chunk)).unwrap();
        }
        tmp.as_file().sync_all().unwrap();
        let probe = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(tmp.path());
        if let Err(e) = probe {
            return support::skip(&format!("no O_DIRECT here: {e}"));
        }
        let Some(worst) = first_reads(tmp.path(), true, disk_expected) else {
            return;
        };
        assert_not_blocked("ext4, opened O_DIRECT", worst);
    });
}
