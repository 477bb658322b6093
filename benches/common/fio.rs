//! fio as the reference: the same file, block size, queue depth and time, one job (psync: QD
//! jobs), parsed from `--output-format=json`.

use std::process::Command;

use serde_json::Value;

use super::spec::{FioEngine, Outcome, Point, Regime, RunParams, Sample};

/// fio's version, or None when it is not on PATH.
pub fn version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The fio command line of a point.
pub fn args(engine: FioEngine, point: &Point, params: &RunParams) -> Vec<String> {
    // psync is synchronous: one operation in flight per job, so QD N is N jobs.
    let (iodepth, numjobs) = match engine {
        FioEngine::Psync => (1, point.qd),
        _ => (point.qd, 1),
    };
    let region = params.layout().region(point.workload);
    let mut a: Vec<String> = vec![
        "--name=bench".into(),
        format!("--filename={}", params.file.display()),
        // The point's region of the file (see `data::Layout`).
        format!("--offset={}", region.offset_bytes()),
        format!("--size={}", region.len_bytes()),
        format!("--rw={}", point.workload.name()),
        "--bs=4k".into(),
        format!("--ioengine={}", engine.name()),
        format!("--iodepth={iodepth}"),
        format!("--numjobs={numjobs}"),
        "--group_reporting".into(),
        format!("--direct={}", u8::from(point.regime == Regime::Direct)),
        // fio drops the file's pages from the cache before a job unless told not to.
        "--invalidate=0".into(),
        "--allow_file_create=0".into(),
        "--norandommap".into(),
        "--randrepeat=0".into(),
        "--time_based".into(),
        format!("--ramp_time={}ms", (params.warmup * 1000.0).round() as u64),
        format!("--runtime={}ms", (params.secs * 1000.0).round() as u64),
        // Percentiles of the total latency (submission to completion), as the other methods
        // measure it.
        "--lat_percentiles=1".into(),
        "--percentile_list=50:99".into(),
        "--output-format=json".into(),
    ];
    if cfg!(not(target_os = "linux")) {
        a.push("--thread".into());
    }
    a
}

/// Runs fio for one point.
pub fn run(engine: FioEngine, point: &Point, params: &RunParams) -> Outcome {
    let args = args(engine, point, params);
    let mut cmd = Command::new("fio");
    cmd.args(&args);
    let out = match super::child::output_within(&mut cmd, super::child::deadline(params)) {
        Ok(o) => o,
        Err(e) => return Outcome::NotApplicable(format!("fio: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let first = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_string();
        if stderr.contains("engine") && stderr.contains("not") {
            return Outcome::NotApplicable(format!("fio: {first}"));
        }
        return Outcome::Failed(format!("fio exited with {}: {first}", out.status));
    }
    // fio may print notes before the JSON document.
    let json = stdout.find('{').map_or("", |i| &stdout[i..]);
    match parse(json, point) {
        Some(s) => Outcome::Measured(s),
        None => Outcome::Failed(format!("cannot parse fio's output: {stdout:.200}")),
    }
}

/// The sample in fio's JSON report: IOPS × runtime operations, CPU = (usr_cpu + sys_cpu) % of
/// job_runtime (summed over jobs with group_reporting), latency percentiles of `lat_ns`.
fn parse(json: &str, point: &Point) -> Option<Sample> {
    let v: Value = serde_json::from_str(json).ok()?;
    let job = v.get("jobs")?.get(0)?;
    if job.get("error")?.as_i64()? != 0 {
        return None;
    }
    let dir = match point.workload {
        super::spec::Workload::RandRead => job.get("read")?,
        super::spec::Workload::RandWrite => job.get("write")?,
    };
    let ops = dir.get("total_ios")?.as_u64()?;
    let runtime_ms = dir.get("runtime")?.as_f64()?;
    let job_runtime_ms = job.get("job_runtime")?.as_f64()?;
    let cpu_pct = job.get("usr_cpu")?.as_f64()? + job.get("sys_cpu")?.as_f64()?;
    let pct = |q: &str| {
        let lat = dir.get("lat_ns").or_else(|| dir.get("clat_ns"))?;
        lat.get("percentile")?.get(q)?.as_u64()
    };
    let (p50_ns, p99_ns) = if point.qd == 1 {
        (pct("50.000000"), pct("99.000000"))
    } else {
        (None, None)
    };
    Some(Sample {
        ops,
        secs: runtime_ms / 1000.0,
        cpu_secs: cpu_pct / 100.0 * job_runtime_ms / 1000.0,
        p50_ns,
        p99_ns,
        ..Sample::default()
    })
}
