//! Large batches: `submit` queues the work and returns, whatever the batch's size, and the batch
//! still announces itself with exactly one event once every entry is done.
//!
//! The tests take turns (`ONE_AT_A_TIME`): they share the in-flight limit, 16,384 operations
//! by default, which the largest batches here fill. Linux only: FreeBSD's AIO limits
//! (`vfs.aio.max_aio_queue_per_proc`) take far fewer operations at once.
#![cfg(target_os = "linux")]

mod support;

use std::{
    io::Write,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use mio::{Poll, Token};
use mio_aio::{LioCbBuilder, LioOpcode};

const ENTRY: usize = 512;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const UDATA: Token = Token(7);

fn byte(off: usize) -> u8 {
    (off / ENTRY) as u8 ^ (off % 251) as u8
}

/// Submits `count` reads of `ENTRY` bytes (of a file whose pages are in the page cache), waits
/// for the one event, checks every entry's bytes; returns how long `submit` took.
fn cached_batch(f: &std::fs::File, count: usize) -> Duration {
    let mut poll = Poll::new().unwrap();
    let mut bufs = vec![vec![0u8; ENTRY]; count];
    let mut builder = LioCbBuilder::with_capacity(count);
    for (i, b) in bufs.iter_mut().enumerate() {
        builder =
            builder.emplace_mut_slice(f.as_fd(), (i * ENTRY) as u64, b, 0, LioOpcode::LIO_READ);
    }
    let mut liocb = builder.finish();
    poll.registry()
        .register(&mut liocb, UDATA, mio_aio::LIO)
        .unwrap();
    let start = Instant::now();
    liocb.submit().unwrap();
    let took = start.elapsed();
    support::expect_one_event(&mut poll, UDATA);
    assert!(!liocb.in_progress());
    let results: Vec<_> = liocb.into_results(|it| it.map(|r| r.result).collect());
    assert_eq!(results.len(), count);
    assert!(
        results.iter().all(|r| *r == Ok(ENTRY as isize)),
        "an entry did not read {ENTRY} bytes"
    );
    for (i, b) in bufs.iter().enumerate() {
        let off = i * ENTRY;
        assert!(
            b.iter().enumerate().all(|(j, &x)| x == byte(off + j)),
            "entry {i} holds the wrong bytes"
        );
    }
    took
}

/// A batch of 16,384 cached reads (the default in-flight limit) submits in about four times
/// what a batch of 4,095 takes, as submission costs the same per entry: io_uring once ran
/// batches above 4,095 entries one request (and one wake-up of a thread) at a time, and
/// `submit` then took 120 times as long as for 4,095 (575 ms against 4.7 ms). The bound, twelve
/// times the small batch's time plus 50 ms for a preempted thread, separates the two widely.
#[test]
fn a_batch_of_16384_submits_without_blocking() {
    const SMALL: usize = 4095;
    const LARGE: usize = 16384;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut f = tempfile::tempfile().unwrap();
    let content: Vec<u8> = (0..LARGE * ENTRY).map(byte).collect();
    f.write_all(&content).unwrap();
    // Warm up: the first batches of each size set up what they need (rings, eventfds).
    cached_batch(&f, SMALL);
    cached_batch(&f, LARGE);
    let small = (0..3).map(|_| cached_batch(&f, SMALL)).min().unwrap();
    let large = (0..3).map(|_| cached_batch(&f, LARGE)).min().unwrap();
    let bound = small * 12 + Duration::from_millis(50);
    println!("submit: {SMALL} entries {small:?}, {LARGE} entries {large:?} (bound {bound:?})");
    assert!(
        large <= bound,
        "submitting {LARGE} cached reads took {large:?}, against {small:?} for {SMALL}: \
         submit blocked"
    );
}

/// Through tokio, a batch of 20,000 cached reads (more than the in-flight limit, so it goes in
/// rounds) completes in about five times what 4,095 take, every entry read: it once took
/// 496 ms, one request at a time. Bound: fifteen times the small batch's time, plus 50 ms.
#[cfg(feature = "tokio")]
#[test]
fn a_lio_future_of_20000_completes_in_rounds_without_blocking() {
    const SMALL: usize = 4095;
    const LARGE: usize = 20000;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut f = tempfile::tempfile().unwrap();
    let content: Vec<u8> = (0..LARGE * ENTRY).map(byte).collect();
    f.write_all(&content).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |count: usize| {
        let mut bufs = vec![vec![0u8; ENTRY]; count];
        let mut builder = LioCbBuilder::with_capacity(count);
        for (i, b) in bufs.iter_mut().enumerate() {
            builder =
                builder.emplace_mut_slice(f.as_fd(), (i * ENTRY) as u64, b, 0, LioOpcode::LIO_READ);
        }
        let batch = builder.finish();
        let start = Instant::now();
        let results = rt.block_on(mio_aio::tokio::LioFut::new(batch)).unwrap();
        let took = start.elapsed();
        assert!(results.iter().all(|r| r.result == Ok(ENTRY as isize)));
        for (i, b) in bufs.iter().enumerate() {
            let off = i * ENTRY;
            assert!(
                b.iter().enumerate().all(|(j, &x)| x == byte(off + j)),
                "entry {i} holds the wrong bytes"
            );
        }
        took
    };
    run(SMALL);
    run(LARGE);
    let small = (0..3).map(|_| run(SMALL)).min().unwrap();
    let large = (0..3).map(|_| run(LARGE)).min().unwrap();
    let bound = small * 15 + Duration::from_millis(50);
    println!("LioFut: {SMALL} entries {small:?}, {LARGE} entries {large:?} (bound {bound:?})");
    assert!(
        large <= bound,
        "a LioFut of {LARGE} cached reads took {large:?}, against {small:?} for {SMALL}"
    );
}
