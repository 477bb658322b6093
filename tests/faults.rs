//! Faults from the storage and from the process's limits surface on the operation that met them,
//! cleanly: ENOSPC, EIO, EMFILE, a full queue, and O_DIRECT misuse.
#![cfg(target_os = "linux")]

mod support;

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
    pin::Pin,
    time::{Duration, Instant},
};

use mio::{Events, Poll, Token};
use mio_aio::{Errno, Fsync, ReadAt, SourceApi, WriteAt};

/// Registers `op`, submits it and waits for its event; returns `aio_return`'s value.
fn run_registered<S>(poll: &mut Poll, op: S, token: Token) -> nix::Result<S::Output>
where
    S: SourceApi + mio::event::Source,
{
    let mut op = op;
    poll.registry()
        .register(&mut op, token, mio_aio::AIO)
        .unwrap();
    let mut op = Box::pin(op);
    op.as_mut().submit()?;
    let mut events = Events::with_capacity(8);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(20), "no event");
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        if events.iter().any(|e| e.token() == token) {
            break;
        }
    }
    op.as_mut().aio_return()
}

/// Writes past a small filesystem's capacity fail with ENOSPC on the operations that did not
/// fit; everything acknowledged before is intact after fsync.
#[test]
fn enospc_fails_per_operation_and_keeps_acknowledged_data() {
    let Some(fs) = support::loopfs::Tmpfs::new_or_skip(4 << 20) else {
        return;
    };
    let path = fs.path().join("fill");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut poll = Poll::new().unwrap();
    const CHUNK: usize = 64 * 1024;
    let mut acknowledged = 0usize;
    let mut first_error = None;
    for i in 0..1000usize {
        let chunk = vec![(i % 251) as u8; CHUNK];
        match run_registered(
            &mut poll,
            WriteAt::write_at(file.as_fd(), (i * CHUNK) as u64, &chunk, 0),
            Token(i),
        ) {
            Ok(n) if n == CHUNK => acknowledged += 1,
            // A short write is the last one that fits partly.
            Ok(n) => {
                println!("short write of {n} bytes at chunk {i}");
                break;
            }
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    println!("{acknowledged} chunks of 64 KiB acknowledged, then {first_error:?}");
    // Either the short write or the next one fails with ENOSPC.
    let next = vec![0u8; CHUNK];
    let again = run_registered(
        &mut poll,
        WriteAt::write_at(
            file.as_fd(),
            (acknowledged * CHUNK + CHUNK) as u64,
            &next,
            0,
        ),
        Token(5000),
    );
    assert!(
        first_error == Some(Errno::ENOSPC) || again == Err(Errno::ENOSPC),
        "{first_error:?} / {again:?}"
    );
    assert!(
        acknowledged > 10,
        "the filesystem should hold several chunks"
    );
    run_registered(
        &mut poll,
        Fsync::fsync(file.as_fd(), mio_aio::AioFsyncMode::O_SYNC, 0),
        Token(5001),
    )
    .unwrap();
    let mut content = Vec::new();
    File::open(&path)
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    for i in 0..acknowledged {
        assert!(
            content[i * CHUNK..(i + 1) * CHUNK]
                .iter()
                .all(|&b| b == (i % 251) as u8),
            "chunk {i} damaged"
        );
    }
}

/// A filesystem that fails chosen ranges: the error surfaces on exactly those reads.
#[test]
#[allow(clippy::single_range_in_vec_init)]
fn eio_surfaces_on_exactly_the_failing_reads() {
    use support::fuse::{expected, SlowFs, SlowFsOptions};
    const FAILING: std::ops::Range<u64> = (1 << 20)..(1 << 20) + 4096;
    let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions {
        read_delay: Duration::from_millis(20),
        eio_ranges: vec![FAILING],
        ..Default::default()
    }) else {
        return;
    };
    let file = File::open(fs.path()).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(8);
    let offsets = [0u64, (1 << 20) - 4096, 1 << 20, (1 << 20) + 4096];
    let mut bufs = vec![[0u8; 4096]; offsets.len()];
    let mut ops: Vec<_> = bufs
        .iter_mut()
        .zip(offsets)
        .enumerate()
        .map(|(i, (b, off))| {
            let op = support::start(&poll, ReadAt::read_at(file.as_fd(), off, b, 0), Token(i));
            Some(op)
        })
        .collect();
    let mut results = vec![None; offsets.len()];
    while results.iter().any(Option::is_none) {
        match poll.poll(&mut events, Some(Duration::from_secs(10))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        }
        assert!(!events.is_empty(), "timed out");
        for ev in events.iter() {
            let i = ev.token().0;
            results[i] = Some(ops[i].as_mut().unwrap().as_mut().aio_return());
            ops[i] = None;
        }
    }
    drop(ops);
    assert_eq!(
        results,
        vec![
            Some(Ok(4096)),
            Some(Ok(4096)),
            Some(Err(Errno::EIO)),
            Some(Ok(4096))
        ]
    );
    for (i, off) in offsets.iter().enumerate() {
        if i != 2 {
            assert_eq!(&bufs[i][..], &expected(*off, 4096)[..]);
        }
    }
}

/// Running out of file descriptors: registration fails with EMFILE (no panic), works again once
/// descriptors are free, and repeating the cycle opens no more descriptors (no leak).
#[test]
fn emfile_is_a_clear_error_and_recovers() {
    support::in_child("emfile_is_a_clear_error_and_recovers", &[], || {
        let file = tempfile::tempfile().unwrap();
        let mut poll = Poll::new().unwrap();
        let count_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let open = count_fds();
        let set_limit = |soft: u64| {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: 20_000,
            };
            // SAFETY: sets this (child) process's own limit from a valid struct.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        };
        let mut fds_after_cycle = Vec::new();
        for cycle in 0..3 {
            // Leave room for a handful of new descriptors only.
            set_limit(open + 8);
            let mut bufs = vec![[0u8; 8]; 64];
            let mut ops = Vec::new();
            let mut failure = None;
            // Registering only records the token; the eventfd comes with the submission.
            for (i, b) in bufs.iter_mut().enumerate() {
                let mut op = ReadAt::read_at(file.as_fd(), 0, b, 0);
                poll.registry()
                    .register(&mut op, Token(i), mio_aio::AIO)
                    .unwrap();
                let mut op = Box::pin(op);
                match op.as_mut().submit() {
                    Ok(()) => ops.push(op),
                    Err(e) => {
                        failure = Some(std::io::Error::from(e));
                        break;
                    }
                }
            }
            let err = failure.expect("submission never ran out of descriptors");
            assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
            println!(
                "cycle {cycle}: {} operations submitted before EMFILE",
                ops.len()
            );
            // Free the descriptors: registration works again, and operations complete.
            drop(ops);
            let mut buf = [0u8; 8];
            let r = run_registered(
                &mut poll,
                ReadAt::read_at(file.as_fd(), 0, &mut buf, 0),
                Token(99),
            );
            assert_eq!(r, Ok(0));
            set_limit(20_000);
            fds_after_cycle.push(count_fds());
        }
        println!("descriptors open after each cycle: {fds_after_cycle:?} (at start: {open})");
        assert!(
            fds_after_cycle.windows(2).all(|w| w[1] <= w[0]),
            "descriptors leaked"
        );
    });
}

/// A full queue gives EAGAIN at once (never a hang) and accepts again after completions.
#[test]
fn full_queue_is_eagain() {
    support::in_child(
        "full_queue_is_eagain",
        &[("MIO_AIO_MAX_IN_FLIGHT", "4")],
        || {
            use support::fuse::{SlowFs, SlowFsOptions};
            const DELAY: Duration = Duration::from_millis(100);
            let Some(fs) = SlowFs::mount_or_skip(SlowFsOptions {
                read_delay: DELAY,
                ..Default::default()
            }) else {
                return;
            };
            let file = File::open(fs.path()).unwrap();
            let mut bufs = vec![[0u8; 512]; 5];
            let mut ops: Vec<Pin<Box<ReadAt>>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Box::pin(ReadAt::read_at(file.as_fd(), (i * 65536) as u64, b, 0)))
                .collect();
            for op in &mut ops[..4] {
                op.as_mut().submit().unwrap();
            }
            let t = Instant::now();
            assert_eq!(ops[4].as_mut().submit(), Err(Errno::EAGAIN));
            assert!(
                t.elapsed() < DELAY / 2,
                "EAGAIN must not wait for a read in flight"
            );
            while ops[0].as_mut().error() == Err(Errno::EINPROGRESS) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(ops[0].as_mut().aio_return(), Ok(512));
            ops[4].as_mut().submit().unwrap();
            drop(ops);
        },
    );
}

/// O_DIRECT on a real block device: aligned I/O works, a misaligned buffer or offset is EINVAL
/// on that operation.
#[test]
fn o_direct_alignment() {
    let Some(fs) = support::loopfs::LoopExt4::new_or_skip(16 << 20) else {
        return;
    };
    let path = fs.path().join("direct");
    std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let mut poll = Poll::new().unwrap();
    let mut storage = vec![0u8; 3 * 4096];
    let align = storage.as_ptr().align_offset(4096);
    let (aligned, misaligned) = {
        let (a, b) = storage[align..].split_at_mut(4096);
        (a, &mut b[1..4097])
    };
    assert_eq!(
        run_registered(
            &mut poll,
            ReadAt::read_at(file.as_fd(), 4096, aligned, 0),
            Token(1)
        ),
        Ok(4096)
    );
    assert!(aligned.iter().all(|&b| b == 7));
    assert_eq!(
        run_registered(
            &mut poll,
            ReadAt::read_at(file.as_fd(), 4096, misaligned, 0),
            Token(2)
        ),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        run_registered(
            &mut poll,
            ReadAt::read_at(file.as_fd(), 100, aligned, 0),
            Token(3)
        ),
        Err(Errno::EINVAL)
    );
    aligned.fill(9);
    assert_eq!(
        run_registered(
            &mut poll,
            WriteAt::write_at(file.as_fd(), 0, aligned, 0),
            Token(4)
        ),
        Ok(4096)
    );
    drop(file);
    assert!(std::fs::read(&path).unwrap()[..4096]
        .iter()
        .all(|&b| b == 9));
}

/// The notification eventfd of a dropped operation is never closed while the kernel may still
/// write to it: files opened right after drops (which could reuse its number) get nothing.
#[test]
fn dropped_operations_never_write_to_reused_fds() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempfile().unwrap();
    src.set_len(1 << 20).unwrap();
    let poll = Poll::new().unwrap();
    let mut victims = Vec::new();
    for i in 0..500 {
        let mut buf = vec![0u8; 65536];
        let op = support::start(
            &poll,
            ReadAt::read_at(src.as_fd(), 0, &mut buf, 0),
            Token(i),
        );
        drop(op);
        // Numbers freed by the drop are the first to be reused.
        for j in 0..4 {
            victims.push(File::create(dir.path().join(format!("v{i}-{j}"))).unwrap());
        }
        if victims.len() > 200 {
            victims.clear();
        }
    }
    drop(victims);
    std::thread::sleep(Duration::from_millis(100));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().len(),
            0,
            "{:?} was written to",
            entry.path()
        );
    }
}
