//! The report: one markdown table per regime × workload and the ratios of mio-aio to its
//! references (the targets are in `targets`).

use std::fmt::Write;

use super::{
    args::Options,
    runner::Results,
    spec::{FioEngine, Method, Outcome, Point, Regime, Workload},
};

/// The repetitions of one point, reduced to medians and ranges.
#[derive(Clone, Debug)]
pub struct Stats {
    pub iops: f64,
    iops_min: f64,
    iops_max: f64,
    pub cpu_us: f64,
    pub p50_us: Option<f64>,
    p99_us: Option<f64>,
    pub interrupted_per_k: Option<f64>,
    evicted: bool,
}

enum Cell {
    Stats(Stats),
    NotApplicable(String),
    Failed,
    Missing,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The results of a run, as medians per point.
pub struct Report<'a> {
    pub results: &'a Results,
    pub opts: &'a Options,
}

impl Report<'_> {
    fn cell(&self, method: Method, regime: Regime, workload: Workload, qd: usize) -> Cell {
        let point = Point {
            method,
            regime,
            workload,
            qd,
        };
        let Some(outcomes) = self.results.outcomes.get(&point) else {
            return Cell::Missing;
        };
        let samples: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Measured(s) => Some(s),
                _ => None,
            })
            .collect();
        if samples.is_empty() {
            return match outcomes.iter().find(|o| matches!(o, Outcome::Failed(_))) {
                Some(_) => Cell::Failed,
                None => match &outcomes[0] {
                    Outcome::NotApplicable(why) => Cell::NotApplicable(why.clone()),
                    _ => Cell::Missing,
                },
            };
        }
        let iops: Vec<f64> = samples.iter().map(|s| s.iops()).collect();
        let of = |f: &dyn Fn(&super::spec::Sample) -> Option<f64>| {
            median(samples.iter().filter_map(|s| f(s)).collect())
        };
        Cell::Stats(Stats {
            iops: median(iops.clone()).unwrap_or(0.0),
            iops_min: iops.iter().copied().fold(f64::INFINITY, f64::min),
            iops_max: iops.iter().copied().fold(0.0, f64::max),
            cpu_us: of(&|s| Some(s.cpu_us_per_op())).unwrap_or(0.0),
            p50_us: of(&|s| s.p50_ns.map(|v| v as f64 / 1e3)),
            p99_us: of(&|s| s.p99_ns.map(|v| v as f64 / 1e3)),
            interrupted_per_k: of(&|s| s.interrupted.map(|i| i as f64 * 1e3 / s.ops.max(1) as f64)),
            evicted: samples.iter().any(|s| s.evicted),
        })
    }

    pub fn stats(
        &self,
        method: Method,
        regime: Regime,
        workload: Workload,
        qd: usize,
    ) -> Option<Stats> {
        match self.cell(method, regime, workload, qd) {
            Cell::Stats(s) => Some(s),
            _ => None,
        }
    }

    /// IOPS of `method` ÷ IOPS of `reference` at the same point.
    pub fn ratio(
        &self,
        method: Method,
        reference: Method,
        r: Regime,
        w: Workload,
        qd: usize,
    ) -> Option<f64> {
        let a = self.stats(method, r, w, qd)?;
        let b = self.stats(reference, r, w, qd)?;
        (b.iops > 0.0).then(|| a.iops / b.iops)
    }

    fn rows(&self, regime: Regime, workload: Workload) -> Vec<Method> {
        Method::all()
            .into_iter()
            .filter(|m| {
                self.opts
                    .qds
                    .iter()
                    .any(|&qd| !matches!(self.cell(*m, regime, workload, qd), Cell::Missing))
            })
            .collect()
    }

    fn table(&self, out: &mut String, regime: Regime, workload: Workload) {
        let rows = self.rows(regime, workload);
        if rows.is_empty() {
            return;
        }
        let rq = self.opts.ref_qd();
        let _ = writeln!(out, "\n### {}, {}\n", workload.title(), regime.title());
        let mut header = String::from("| method |");
        let mut rule = String::from("|---|");
        for qd in &self.opts.qds {
            let _ = write!(header, " QD{qd} kIOPS |");
            rule.push_str("---:|");
        }
        let _ = write!(
            header,
            " CPU µs/op QD{rq} | p50 / p99 µs QD1 | ÷ fio io_uring QD{rq} | ÷ spawn_blocking QD{rq} | ÷ tokio::fs QD{rq} | interrupted polls /1k ops QD1 · QD{rq} |"
        );
        rule.push_str("---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(out, "{header}\n{rule}");
        for m in rows {
            let mut line = format!("| {} |", m.label());
            for &qd in &self.opts.qds {
                let text = match self.cell(m, regime, workload, qd) {
                    Cell::Stats(s) => format!(
                        "{:.0} [{:.0}–{:.0}]{}",
                        s.iops / 1e3,
                        s.iops_min / 1e3,
                        s.iops_max / 1e3,
                        if s.evicted { " †" } else { "" }
                    ),
                    Cell::NotApplicable(why) => format!("n/a ({why})"),
                    Cell::Failed => "FAILED".into(),
                    Cell::Missing => "—".into(),
                };
                let _ = write!(line, " {text} |");
            }
            let s_rq = self.stats(m, regime, workload, rq);
            let s_1 = self.stats(m, regime, workload, 1);
            let cpu = s_rq
                .as_ref()
                .map_or("—".into(), |s| format!("{:.2}", s.cpu_us));
            let lat = match s_1.as_ref().map(|s| (s.p50_us, s.p99_us)) {
                Some((Some(a), Some(b))) => format!("{a:.1} / {b:.1}"),
                _ => "—".into(),
            };
            let _ = write!(line, " {cpu} | {lat} |");
            for reference in [
                Method::Fio(FioEngine::IoUring),
                Method::SpawnBlocking,
                Method::TokioFs,
            ] {
                let text = if m.is_mio() {
                    fmt_ratio(self.ratio(m, reference, regime, workload, rq))
                } else {
                    "".into()
                };
                let _ = write!(line, " {text} |");
            }
            let intr = if m.is_mio() {
                let f = |s: Option<&Stats>| {
                    s.and_then(|s| s.interrupted_per_k)
                        .map_or("—".into(), |v| format!("{v:.1}"))
                };
                format!("{} · {}", f(s_1.as_ref()), f(s_rq.as_ref()))
            } else {
                "".into()
            };
            let _ = writeln!(line, " {intr} |");
            out.push_str(&line);
        }
        self.ratio_table(out, regime, workload);
    }

    /// mio-aio ÷ each reference, at every queue depth.
    fn ratio_table(&self, out: &mut String, regime: Regime, workload: Workload) {
        let mio: Vec<Method> = self
            .rows(regime, workload)
            .into_iter()
            .filter(|m| m.is_mio())
            .collect();
        if mio.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nmio-aio IOPS ÷ fio io_uring / ÷ tokio spawn_blocking+pread / ÷ tokio::fs, at each queue depth:\n"
        );
        let mut header = String::from("| method |");
        let mut rule = String::from("|---|");
        for qd in &self.opts.qds {
            let _ = write!(header, " QD{qd} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for m in mio {
            let mut line = format!("| {} |", m.label());
            for &qd in &self.opts.qds {
                let r = [
                    Method::Fio(FioEngine::IoUring),
                    Method::SpawnBlocking,
                    Method::TokioFs,
                ]
                .map(|reference| fmt_ratio(self.ratio(m, reference, regime, workload, qd)));
                let _ = write!(line, " {} / {} / {} |", r[0], r[1], r[2]);
            }
            let _ = writeln!(out, "{line}");
        }
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// The tables as markdown.
pub fn render(results: &Results, opts: &Options) -> String {
    let report = Report { results, opts };
    let mut out = String::new();
    for regime in opts.regimes() {
        for workload in opts.workloads() {
            report.table(&mut out, regime, workload);
        }
    }
    out
}
