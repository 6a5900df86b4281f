//! Transfer as initialization: convergence speedup of each TPT job over vanilla prompt tuning
//! (docs/design.md, "Transfer as initialization"), from the `jobs` and `metrics` tables. The metrics table is streamed batch by
//! batch and only `dev_score` rows of train/tpt jobs are kept, so millions of rows fit in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow::array::{Float64Array, Int64Array, StringArray};

use crate::columns::column;
use crate::error::Result;
use crate::schema::{JobRow, MetricRow, Table, TptRow};
use crate::store::{for_each_batch, table_parts};

/// The metric name of the dev-set score logged during training.
pub const DEV_SCORE: &str = "dev_score";
/// The metric of a TPT job that did not train: its source was not among the top_k.
pub const GATED_OUT: &str = "gated_out";
const T: &str = MetricRow::NAME;

/// What a job is, for pairing TPT runs with vanilla runs.
#[derive(Debug, Clone)]
struct JobInfo {
    kind: String,
    model: String,
    task: Option<String>,
    src_task: Option<String>,
    src_model: Option<String>,
    objective: Option<String>,
    seed: Option<i64>,
}

/// A dev-score curve: (step, attempt, value), later attempts winning at equal steps.
pub(crate) type Curve = Vec<(i64, i64, f64)>;

/// `(step, value)` in step order; at a step logged by several attempts (a resumed job re-logs
/// it), the latest attempt wins.
pub(crate) fn latest_attempt(mut points: Curve) -> Vec<(i64, f64)> {
    points.sort_by_key(|(s, a, _)| (*s, *a));
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(points.len());
    for (s, _, v) in points {
        match out.last_mut() {
            Some(last) if last.0 == s => last.1 = v,
            _ => out.push((s, v)),
        }
    }
    out
}

/// One TPT run against its vanilla run (the numbers of a `tpt` row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speedup {
    pub vanilla_best: f64,
    pub steps_vanilla: i64,
    pub steps_tpt: Option<i64>,
    pub speedup: Option<f64>,
    pub tpt_best: f64,
}

/// First step reaching `target`.
fn first_reaching(curve: &[(i64, f64)], target: f64) -> Option<i64> {
    curve.iter().find(|(_, v)| *v >= target).map(|(s, _)| *s)
}

fn best(curve: &[(i64, f64)]) -> Option<f64> {
    curve.iter().map(|(_, v)| *v).reduce(f64::max)
}

/// Speedup of `tpt` over `vanilla`: steps vanilla needs to reach its best / steps TPT needs to
/// reach that same score; `None` steps (and speedup) when TPT never gets there.
pub fn speedup(vanilla: &[(i64, f64)], tpt: &[(i64, f64)]) -> Option<Speedup> {
    let vanilla_best = best(vanilla)?;
    let tpt_best = best(tpt)?;
    let steps_vanilla = first_reaching(vanilla, vanilla_best)?;
    let steps_tpt = first_reaching(tpt, vanilla_best);
    // Reaching it at step 0 (before any update) is an unbounded speedup, stated as such.
    let ratio = steps_tpt.map(|s| {
        if s == 0 {
            f64::INFINITY
        } else {
            steps_vanilla as f64 / s as f64
        }
    });
    Some(Speedup {
        vanilla_best,
        steps_vanilla,
        steps_tpt,
        speedup: ratio,
        tpt_best,
    })
}

/// What the TPT analysis found.
pub struct TptAnalysis {
    pub rows: Vec<TptRow>,
    /// TPT jobs without a matching vanilla run or curve.
    pub gaps: Vec<String>,
    /// Candidate pairs that did not train because of `top_k` (not gaps: chosen by design).
    pub gated_out: usize,
}

/// The TPT table rows, the gaps and the pairs `top_k` left out.
pub fn analyse(sweep: &Path, jobs: &[JobRow]) -> Result<TptAnalysis> {
    let mut info: HashMap<String, JobInfo> = HashMap::new();
    for j in jobs.iter().filter(|j| j.kind == "train" || j.kind == "tpt") {
        info.entry(j.job_id.clone()).or_insert_with(|| JobInfo {
            kind: j.kind.clone(),
            model: j.model.clone(),
            task: j.task.clone(),
            src_task: j.src_task.clone(),
            src_model: j.src_model.clone(),
            objective: j.objective.clone(),
            seed: j.seed,
        });
    }
    let mut curves: HashMap<&str, Curve> = HashMap::new();
    let mut gated: HashSet<&str> = HashSet::new();
    for part in table_parts(sweep, MetricRow::NAME)? {
        for_each_batch::<MetricRow>(&part, |b| {
            let (ids, names) = (
                column::<StringArray>(b, T, "job_id")?,
                column::<StringArray>(b, T, "name")?,
            );
            let (attempts, steps) = (
                column::<Int64Array>(b, T, "attempt")?,
                column::<Int64Array>(b, T, "step")?,
            );
            let values = column::<Float64Array>(b, T, "value")?;
            for i in 0..b.num_rows() {
                let Some((id, _)) = info.get_key_value(ids.value(i)) else {
                    continue;
                };
                if names.value(i) == GATED_OUT {
                    gated.insert(id.as_str());
                }
                if names.value(i) != DEV_SCORE {
                    continue;
                }
                curves.entry(id.as_str()).or_default().push((
                    steps.value(i),
                    attempts.value(i),
                    values.value(i),
                ));
            }
            Ok(())
        })?;
    }
    let curve = |id: &str| latest_attempt(curves.get(id).cloned().unwrap_or_default());
    let mut vanilla: BTreeMap<(String, String, Option<i64>), &str> = BTreeMap::new();
    for (id, j) in &info {
        if let (true, Some(task)) = (j.kind == "train", &j.task) {
            vanilla.insert((j.model.clone(), task.clone(), j.seed), id.as_str());
        }
    }
    let (mut rows, mut gaps) = (Vec::new(), Vec::new());
    let mut tpt_jobs: Vec<(&String, &JobInfo)> =
        info.iter().filter(|(_, j)| j.kind == "tpt").collect();
    tpt_jobs.sort_by_key(|(id, _)| id.as_str());
    let gated_out = tpt_jobs
        .iter()
        .filter(|(id, _)| gated.contains(id.as_str()))
        .count();
    for (id, j) in tpt_jobs {
        if gated.contains(id.as_str()) {
            continue;
        }
        let (Some(tgt), Some(src)) = (&j.task, &j.src_task) else {
            gaps.push(format!("tpt job {id} has no task or src_task"));
            continue;
        };
        let Some(v) = vanilla.get(&(j.model.clone(), tgt.clone(), j.seed)) else {
            gaps.push(format!(
                "tpt {src}→{tgt} ({}): no vanilla run of {tgt} with seed {:?}",
                j.model, j.seed
            ));
            continue;
        };
        match speedup(&curve(v), &curve(id)) {
            Some(s) => rows.push(TptRow {
                model: j.model.clone(),
                src: src.clone(),
                tgt: tgt.clone(),
                src_model: j.src_model.clone(),
                objective: j.objective.clone(),
                seed: j.seed,
                vanilla_best: s.vanilla_best,
                steps_vanilla: s.steps_vanilla,
                steps_tpt: s.steps_tpt,
                speedup: s.speedup,
                tpt_best: s.tpt_best,
            }),
            None => gaps.push(format!(
                "tpt {src}→{tgt} ({}): no {DEV_SCORE} curve",
                j.model
            )),
        }
    }
    rows.sort_by(|a, b| {
        (&a.model, &a.tgt, &a.src, &a.src_model, &a.objective, a.seed).cmp(&(
            &b.model,
            &b.tgt,
            &b.src,
            &b.src_model,
            &b.objective,
            b.seed,
        ))
    });
    Ok(TptAnalysis {
        rows,
        gaps,
        gated_out,
    })
}
