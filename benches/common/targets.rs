//! The report's targets: issue 15's goals, for random reads and for random writes alike, each
//! met or missed in this run.

use std::fmt::Write;

use super::{
    args::Options,
    runner::Results,
    spec::{FioEngine, Method, MioApi, MioBackend, Regime, Workload},
    table::Report,
};

/// One goal: what, the bound, the measured value, and whether more is better.
struct Goal {
    what: String,
    bound: f64,
    value: Option<f64>,
    at_least: bool,
    unit: &'static str,
}

/// The targets as markdown: one table per workload.
pub fn render(results: &Results, opts: &Options) -> String {
    let report = Report { results, opts };
    let mut out = String::new();
    for workload in opts.workloads() {
        let goals = goals(&report, workload);
        if goals.iter().all(|g| g.value.is_none()) {
            continue;
        }
        let _ = writeln!(
            out,
            "\n### Targets ({})\n\n| target | wanted | measured | |\n|---|---:|---:|---|",
            workload.title()
        );
        for g in goals {
            if g.value.is_none() && g.what.starts_with('(') {
                continue;
            }
            let cmp = if g.at_least { "≥" } else { "≤" };
            let wanted = format!("{cmp} {}{}", g.bound, g.unit);
            let (measured, verdict) = match g.value {
                None => ("—".to_string(), "not measured"),
                Some(v) => {
                    let met = if g.at_least {
                        v >= g.bound
                    } else {
                        v <= g.bound
                    };
                    (
                        format!("{v:.2}{}", g.unit),
                        if met { "met" } else { "**missed**" },
                    )
                }
            };
            let _ = writeln!(out, "| {} | {wanted} | {measured} | {verdict} |", g.what);
        }
    }
    out
}

fn goals(r: &Report<'_>, w: Workload) -> Vec<Goal> {
    let rq = r.opts.ref_qd();
    let b = MioBackend::available()[0];
    let per_op = Method::Mio(MioApi::PerOp, b);
    let halves = Method::Mio(MioApi::HalfBatches, b);
    let tokio = Method::Mio(MioApi::Tokio, b);
    let sqpoll = Method::Mio(MioApi::PerOp, MioBackend::IoUringSqpoll);
    let fio = Method::Fio(FioEngine::IoUring);
    let (c, d) = (Regime::Cached, Regime::Direct);
    let ratio = |what: String, m: Method, reference: Method, regime: Regime, bound: f64| Goal {
        what,
        bound,
        value: r.ratio(m, reference, regime, w, rq),
        at_least: true,
        unit: "×",
    };
    let p50 = |m: Method| r.stats(m, c, w, 1).and_then(|s| s.p50_us);
    let p50_ratio = match (p50(per_op), p50(fio)) {
        (Some(a), Some(f)) if f > 0.0 => Some(a / f),
        _ => None,
    };
    let (worst, worst_value) = worst_interrupted(r, w);
    let mut goals = vec![
        ratio(
            format!("{per_op}, cached QD{rq} ÷ fio io_uring"),
            per_op,
            fio,
            c,
            1.0,
        ),
        Goal {
            what: format!("{per_op}, cached QD{rq}: CPU µs per operation"),
            bound: 2.0,
            value: r.stats(per_op, c, w, rq).map(|s| s.cpu_us),
            at_least: false,
            unit: "",
        },
        Goal {
            what: format!("{per_op}, cached QD1: p50 latency ÷ fio io_uring's"),
            bound: 2.0,
            value: p50_ratio,
            at_least: false,
            unit: "×",
        },
        ratio(
            format!("{per_op}, O_DIRECT QD{rq} ÷ fio io_uring"),
            per_op,
            fio,
            d,
            0.97,
        ),
        ratio(
            format!("{halves}, O_DIRECT QD{rq} ÷ fio io_uring"),
            halves,
            fio,
            d,
            0.95,
        ),
        ratio(
            format!("{tokio}, O_DIRECT QD{rq} ÷ fio io_uring"),
            tokio,
            fio,
            d,
            0.95,
        ),
        Goal {
            what: format!("interrupted polls /1k operations, worst mio-aio point: {worst}"),
            bound: 1.0,
            value: worst_value,
            at_least: false,
            unit: "",
        },
        ratio(
            format!("(opt-in, for information) {sqpoll}, cached QD{rq} ÷ fio io_uring"),
            sqpoll,
            fio,
            c,
            1.0,
        ),
    ];
    if w == Workload::RandRead {
        // The goals of the round before issue 15, still tracked.
        for (m, reference, bound) in [
            (per_op, Method::SpawnBlocking, 3.5),
            (per_op, Method::TokioFs, 7.0),
            (tokio, Method::SpawnBlocking, 3.0),
            (tokio, Method::TokioFs, 6.0),
        ] {
            let what = format!("(earlier goal) {m}, cached QD{rq} ÷ {}", reference.label());
            goals.push(ratio(what, m, reference, c, bound));
        }
    }
    goals
}

/// The mio-aio point of workload `w` (any regime, any queue depth) with the most interrupted
/// polls per 1,000 operations.
fn worst_interrupted(r: &Report<'_>, w: Workload) -> (String, Option<f64>) {
    let mut worst: Option<(String, f64)> = None;
    for m in Method::all().into_iter().filter(|m| m.is_mio()) {
        for regime in Regime::ALL {
            for &qd in &r.opts.qds {
                let v = r.stats(m, regime, w, qd).and_then(|s| s.interrupted_per_k);
                if let Some(v) = v {
                    if worst.as_ref().is_none_or(|(_, x)| v > *x) {
                        worst = Some((format!("{m} {} QD{qd}", regime.name()), v));
                    }
                }
            }
        }
    }
    match worst {
        Some((what, v)) => (what, Some(v)),
        None => ("—".into(), None),
    }
}
