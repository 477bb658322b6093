//! Long-running randomized stress test with byte-for-byte verification: the engine of
//! `tests/stress.rs`, for as many operations as asked.
//!
//! ```text
//! cargo run --release --example stress -- --ops 1000000 [--seed N] [--threads 2]
//!     [--depth 64] [--files-per-thread 2] [--file-size 1048576] [--warmup N]
//!     [--max-in-flight N] [--rounds 10] [--dir PATH]
//! ```
//! The seed comes from `--seed`, else `MIO_AIO_STRESS_SEED`, else is random; it is printed
//! first. On Linux, `MIO_AIO_BACKEND=io_uring|kaio|threads` picks the backend, and
//! `--max-in-flight` (default 48; 0 leaves the crate's default) bounds the operations in flight
//! in the process. Resources (fds, RSS, threads) are printed after the warm-up and after each
//! of the `--rounds`. The `MIO_AIO_STRESS_*` variables of `tests/stress.rs` apply too. Exits
//! with status 1 if anything failed (3 if the watchdog gave up on a stuck worker).

#[path = "../tests/stress_core/mod.rs"]
mod stress_core;

use std::process::ExitCode;

const USAGE: &str = "usage: stress [--ops N] [--seed N] [--threads N] [--depth N] \
                     [--files-per-thread N] [--file-size BYTES] [--warmup N] \
                     [--max-in-flight N] [--rounds N] [--dir PATH]";

fn main() -> ExitCode {
    let mut seed = None;
    let mut config = stress_core::Config::new(0);
    config.ops = 1_000_000;
    config.progress = true;
    config.rounds = 10;
    let mut warmup = None;
    let mut max_in_flight = 48;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else {
            eprintln!("{arg} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        if arg == "--dir" {
            config.dir = Some(value.into());
            continue;
        }
        let Some(n) = stress_core::parse_u64(&value) else {
            eprintln!("{arg}: {value:?} is not a number\n{USAGE}");
            return ExitCode::from(2);
        };
        match arg.as_str() {
            "--ops" => config.ops = n,
            "--seed" => seed = Some(n),
            "--threads" => config.threads = n.max(1) as usize,
            "--depth" => config.depth = n.max(1) as usize,
            "--files-per-thread" => config.files_per_thread = n.max(1) as usize,
            "--file-size" => config.file_size = n.max(128 << 10),
            "--warmup" => warmup = Some(n),
            "--rounds" => config.rounds = n.clamp(1, 1000) as u32,
            "--max-in-flight" => max_in_flight = n,
            _ => {
                eprintln!("unknown option {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if max_in_flight > 0 && std::env::var_os("MIO_AIO_MAX_IN_FLIGHT").is_none() {
        // Before the first operation, which reads it; no other thread runs yet.
        std::env::set_var("MIO_AIO_MAX_IN_FLIGHT", max_in_flight.to_string());
    }
    config.seed = seed.unwrap_or_else(stress_core::seed_from_env);
    config.warmup_ops = warmup.unwrap_or((config.ops / 10).clamp(1000, 50_000));
    println!("seed={}", config.seed);
    let report = stress_core::run(&config);
    print!("{}", report.render());
    if report.problems().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
