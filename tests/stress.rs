//! Randomized stress test with byte-for-byte verification (issue "Reliability", item 3), CI
//! mode: 50,000 operations (plus a 10,000-operation warm-up) over 2 threads, each with its own
//! `Poll`, up to 64 operations in flight, on 4 files of 1 MiB. The engine and its model are in
//! `stress_core/mod.rs`; `examples/stress.rs` runs the same engine for as long as asked.
//!
//! * `MIO_AIO_STRESS_SEED=<n>` replays a seed (the operation choices are a function of the seed;
//!   the timing is not). The seed is printed first.
//! * `MIO_AIO_STRESS_OPS=<n>` changes the number of operations.
//! * `MIO_AIO_MAX_IN_FLIGHT` (Linux) defaults to 48 here, less than the two threads want, so
//!   that submissions meet `EAGAIN` and batches `EINCOMPLETE`.
//! * `MIO_AIO_STRESS_NO=batch,vectored,fsync,cancel,drop,repeat` leaves features out, to narrow
//!   a failure down (same random draws otherwise).
//! * `MIO_AIO_STRESS_INJECT=1` corrupts one byte behind the model's back: a self-test of the
//!   checker, which must then fail with a MISMATCH report.
//!
//! Failures print the seed, thread, file, offset, the bytes read and expected, and the recent
//! operations on that offset; a hang prints the kernel's view of the rings and threads (Linux).

mod stress_core;

use std::time::{Duration, Instant};

#[test]
fn stress() {
    if std::env::var_os("MIO_AIO_MAX_IN_FLIGHT").is_none() {
        // Before the first operation, which reads it. This binary has no other test, so no other
        // thread reads the environment meanwhile.
        std::env::set_var("MIO_AIO_MAX_IN_FLIGHT", "48");
    }
    let seed = stress_core::seed_from_env();
    println!("seed={seed}");
    let mut config = stress_core::Config::new(seed);
    if let Ok(ops) = std::env::var("MIO_AIO_STRESS_OPS") {
        config.ops = stress_core::parse_u64(&ops).expect("MIO_AIO_STRESS_OPS: a number");
    }
    let start = Instant::now();
    let report = stress_core::run(&config);
    let elapsed = start.elapsed();
    let text = report.render();
    println!("{text}");
    let problems = report.problems();
    assert!(problems.is_empty(), "stress test failed:\n{text}");
    assert!(
        elapsed < Duration::from_secs(60),
        "the stress test took {elapsed:?} (limit 60 s):\n{text}"
    );
}
