//! Each point of an in-process method runs in a fresh child process (the benchmark binary run
//! again with `--child`): mio-aio allows one backend per process, and a fresh process also keeps
//! thread pools and runtimes of one point out of the next.
//!
//! Its arguments: `--child METHOD REGIME WORKLOAD QD WARMUP SECS FILE_SIZE FILE [verify]`. The
//! child prints one line on stdout: `RESULT …` (see `Sample::to_line`) or `NA reason`.

use std::{
    io,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{
    mio_method,
    spec::{Method, MioApi, Outcome, Point, Regime, RunError, RunParams, Sample, Workload},
    threads_method, tokio_method,
    verify::Fault,
};

/// Runs `point` in a child process.
pub fn spawn(point: &Point, params: &RunParams) -> Outcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("current_exe: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(point.method.id())
        .arg(point.regime.name())
        .arg(point.workload.name())
        .arg(point.qd.to_string())
        .arg(params.warmup.to_string())
        .arg(params.secs.to_string())
        .arg(params.size.to_string())
        .arg(&params.file);
    if params.verify {
        cmd.arg("verify");
    }
    if let Method::Mio(_, backend) = point.method {
        for (var, value) in backend.env() {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
    }
    let out = match output_within(&mut cmd, deadline(params)) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("cannot start the child: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    if let Some(reason) = last.strip_prefix("NA ") {
        return Outcome::NotApplicable(reason.to_string());
    }
    match Sample::from_line(last) {
        Some(s) if out.status.success() => Outcome::Measured(s),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Outcome::Failed(format!(
                "child {}: {}",
                out.status,
                why.unwrap_or("no output").trim()
            ))
        }
    }
}

/// How long a point may take before its process is killed: a hung point must not hang the
/// benchmark.
pub fn deadline(params: &RunParams) -> Duration {
    Duration::from_secs_f64(params.warmup + params.secs + 60.0)
}

/// Runs `cmd` like `Command::output`, but kills it (by its pid) after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("killed after {} s", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output()
}

/// The child's side: `args` are what [`spawn`] passed after `--child`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let parsed = (|| {
        let (fixed, verify) = match args {
            [fixed @ .., flag] if flag == "verify" => (fixed, true),
            _ => (args, false),
        };
        let [method, regime, workload, qd, warmup, secs, size, file] = fixed else {
            return None;
        };
        let point = Point {
            method: Method::parse(method)?,
            regime: Regime::parse(regime)?,
            workload: Workload::parse(workload)?,
            qd: qd.parse().ok()?,
        };
        let params = RunParams {
            file: PathBuf::from(file),
            size: size.parse().ok()?,
            warmup: warmup.parse().ok()?,
            secs: secs.parse().ok()?,
            verify,
            fault: None,
        };
        Some((point, params))
    })();
    let Some((point, mut params)) = parsed else {
        eprintln!("bad child arguments: {args:?}");
        return 2;
    };
    if params.verify {
        match Fault::from_env() {
            Ok(f) => params.fault = f,
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        }
    }
    let result = match point.method {
        Method::Mio(MioApi::Tokio, backend) => tokio_method::run_aio(backend, &point, &params),
        Method::Mio(api, backend) => {
            mio_method::run(api, backend, &point, &params).map_err(Into::into)
        }
        Method::TokioFs => tokio_method::run_fs(&point, &params),
        Method::SpawnBlocking => tokio_method::run_spawn_blocking(&point, &params),
        Method::Threads => threads_method::run(&point, &params).map_err(Into::into),
        Method::Fio(_) => Err(io::Error::other("fio runs from the parent").into()),
    };
    match result {
        Ok(mut sample) => {
            if !params.verify {
                sample.verified = None;
            }
            println!("{}", sample.to_line());
            0
        }
        Err(RunError::NotApplicable(why)) => {
            println!("NA {why}");
            0
        }
        Err(RunError::Io(e)) => {
            eprintln!("{point}: {e}");
            1
        }
    }
}
