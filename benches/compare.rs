//! Throughput, CPU per operation and latency of mio-aio against fio and tokio, side by side in
//! one run, on one file: 4 KiB random reads and writes, queue depths 1, 8, 32 and 128,
//! `O_DIRECT` and page-cached.
//!
//! ```text
//! cargo bench --features tokio --bench compare               # full run (about an hour, 2-core VM)
//! cargo bench --features tokio --bench compare -- --quick    # smoke test, about a minute
//! cargo bench --features tokio --bench compare -- --quick --verify --only mio-aio
//!                                                  # every operation's bytes checked
//! cargo bench --features tokio --bench compare -- --help
//! ```
//!
//! Without `--features tokio` the rows of mio-aio's tokio layer say "n/a".
//!
//! The report goes to stdout and to `target/bench-results.md`; BENCHMARKS.md explains the
//! method. Each point of mio-aio, tokio and the thread baseline runs in a child process (this
//! binary with `--child …`), because mio-aio allows one backend per process.

mod common;

use std::{io, process::Command};

use common::{
    args::{Options, USAGE},
    child, data, fio,
    runner::Runner,
    spec::RunParams,
    table, targets,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        std::process::exit(child::main(&args[1..]));
    }
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    match run(&opts) {
        Ok(0) => {}
        Ok(failures) => {
            eprintln!("{failures} points FAILED");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the benchmark; returns the number of points that failed.
fn run(opts: &Options) -> io::Result<usize> {
    let (file, size) = data::prepare(opts.file.as_deref())?;
    let fs = data::fs_type(&file);
    if fs == "tmpfs" {
        eprintln!(
            "warning: {} is on tmpfs, which has no O_DIRECT: use --file on a disk file system",
            file.display()
        );
    }
    let fio_version = fio::version();
    if fio_version.is_none() {
        eprintln!("fio is not on PATH: the fio rows are SKIPPED");
    }
    if opts.verify && !data::holds_pattern(&file, size)? {
        return Err(io::Error::other(format!(
            "{}: its read region does not hold the benchmark's block pattern, which --verify \
             checks reads against; run --verify on the default data file",
            file.display()
        )));
    }
    let params = RunParams {
        file: file.clone(),
        size,
        warmup: opts.warmup,
        secs: opts.secs,
        verify: opts.verify,
        fault: None,
    };
    let load_before = load_average();
    let results = Runner::new(opts, params, fio_version.clone()).run()?;
    let load_after = load_average();

    let mut report = String::new();
    report.push_str(&header(opts, &file, size, &fs, fio_version.as_deref()));
    report.push_str(&format!(
        "\nTook {:.0} s; load average {load_before} before, {load_after} after (other work on the machine shares its CPUs). Cached points run again after the page cache lost part of the file: {}; still missing it after {} tries (marked †): {}.\n",
        results.elapsed.as_secs_f64(),
        results.redone,
        3,
        results.still_evicted,
    ));
    report.push_str(&table::render(&results, opts));
    if !opts.verify {
        // Verified rows are not timing rows: no goal is judged on them.
        report.push_str(&targets::render(&results, opts));
    }
    let failures = results.failures();
    if !failures.is_empty() {
        report.push_str("\n### Failures\n\n");
        for (p, why) in &failures {
            report.push_str(&format!("* {p}: {why}\n"));
        }
    }
    println!("{report}");
    let out = data::target_dir().join("bench-results.md");
    std::fs::write(&out, &report)?;
    eprintln!("written to {}", out.display());
    Ok(failures.len())
}

/// The 1-minute load average (Linux), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The machine and the run, for the report.
fn header(
    opts: &Options,
    file: &std::path::Path,
    size: u64,
    fs: &str,
    fio: Option<&str>,
) -> String {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| sh("sysctl", &["-n", "hw.model"]));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut h = String::from("## mio-aio vs fio vs tokio\n\n");
    if opts.quick {
        h += "*Quick mode: a smoke test with short points, not a measurement to quote.*\n\n";
    }
    if opts.verify {
        h += "*Verify mode: every operation's bytes were checked (reads against the file's \
              known content, writes read back); the checks cost time, so **these rows are not \
              timing rows**. Only methods whose buffers are ours run (mio-aio, spawn_blocking, \
              threads).*\n\n";
    }
    h += &format!("* command: `{}`\n", opts.command);
    h += &format!("* date: {}\n", sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    h += &format!(
        "* machine: {cpus} CPUs ({cpu}), {} {}\n",
        sh("uname", &["-s"]),
        sh("uname", &["-r"])
    );
    let layout = data::Layout::of(size);
    h += &format!(
        "* file: {} ({} MiB, file system {fs}; reads in its first {} MiB, writes in the {} MiB after)\n",
        file.display(),
        size >> 20,
        layout.read.len_bytes() >> 20,
        layout.write.len_bytes() >> 20,
    );
    h += &format!("* fio: {}\n", fio.unwrap_or("not on PATH (SKIPPED)"));
    h += &format!(
        "* each point: {} s warm-up + {} s measured, {} repetition(s); cells: median kIOPS [min–max]\n",
        opts.warmup, opts.secs, opts.reps
    );
    h
}
