//! Large batches: `submit` queues the work and returns, whatever the batch's size, and the batch
//! still announces itself with exactly one event once every entry is done.
//!
//! One test only (the binary's other tests would share the in-flight limit, 16,384 operations
//! by default, which the largest batch here fills). Linux only: FreeBSD's AIO limits
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
