//! The benchmark, ignored by default (minutes, ~1 GB on disk-backed tmp):
//! `cargo test -p promptgrid-results --test it bench -- --ignored --nocapture`.
//! 17 tasks × 4 models, 17·17·4 TPT curves of 10,000 steps (11.56 million metric rows): the
//! sink's rows per second, then the report's time and peak memory.

use std::collections::HashMap;
use std::time::Instant;

use promptgrid_results::schema::{EvalRow, JobRow, MetricRow};
use promptgrid_results::{TableWriter, report};

use crate::util::{eval, job, metric};

const TASKS: usize = 17;
const MODELS: usize = 4;
const STEPS: i64 = 10_000;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

/// A learning curve that reaches `best` at `reach` and stays there.
fn curve(job: &str, best: f64, reach: i64) -> impl Iterator<Item = MetricRow> + '_ {
    (1..=STEPS).map(move |s| {
        metric(
            job,
            1,
            s,
            "dev_score",
            best * (s.min(reach) as f64 / reach as f64),
        )
    })
}

#[test]
#[ignore = "benchmark: minutes and about 1 GB of disk"]
fn bench_report_on_a_paper_sized_study() {
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<String> = (0..TASKS).map(|i| format!("task{i:02}")).collect();
    let types: HashMap<&str, &str> = tasks
        .iter()
        .map(|t| {
            (
                t.as_str(),
                if t < &"task08".to_string() { "a" } else { "b" },
            )
        })
        .collect();
    let mut jobs = Vec::new();
    let mut evals: Vec<EvalRow> = Vec::new();
    let mut mw = TableWriter::<MetricRow>::open(dir.path(), "sink").unwrap();
    let (mut rows, mut sink_s) = (0usize, 0.0f64);
    for m in 0..MODELS {
        let model = format!("model{m}");
        for (ti, t) in tasks.iter().enumerate() {
            let vid = format!("v-{model}-{t}");
            jobs.push(job(&vid, "train", &model, t, None, 1));
            let mut batch: Vec<MetricRow> = curve(&vid, 0.8, 8_000).collect();
            for (si, s) in tasks.iter().enumerate() {
                evals.push(eval(
                    &model,
                    s,
                    t,
                    if s == t { 0.8 } else { 0.4 + 0.01 * si as f64 },
                    &types,
                ));
                let id = format!("t-{model}-{s}-{t}");
                jobs.push(job(&id, "tpt", &model, t, Some(s), 1));
                batch.extend(curve(
                    &id,
                    0.7 + 0.01 * ((si + ti) % 20) as f64,
                    2_000 + 300 * si as i64,
                ));
            }
            evals.push(eval(&model, "random", t, 0.3, &types));
            let start = Instant::now();
            rows += mw.append(&batch).unwrap().written;
            sink_s += start.elapsed().as_secs_f64();
        }
    }
    TableWriter::<JobRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&jobs)
        .unwrap();
    TableWriter::<EvalRow>::open(dir.path(), "sink")
        .unwrap()
        .append(&evals)
        .unwrap();
    drop(mw);
    eprintln!(
        "sink: {rows} metric rows in {sink_s:.1} s = {:.0} rows/s",
        rows as f64 / sink_s
    );
    // Reset the peak-RSS counter so the figure is the report's alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_mib();
    let start = Instant::now();
    let r = report(dir.path()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "report: {} TPT rows, {} models in {secs:.1} s, peak RSS {:.0} MiB (before: {before:.0} MiB)",
        r.tpt.len(),
        r.transfer.len(),
        peak_rss_mib()
    );
    assert_eq!(r.tpt.len(), TASKS * TASKS * MODELS);
    assert_eq!(r.transfer.len(), MODELS);
}
