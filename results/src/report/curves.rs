//! Training curves (dev score and loss per job) as small multiples, one figure per model. The
//! metrics table is streamed and only the shown jobs' rows are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{Float64Array, Int64Array, StringArray};

use crate::columns::column;
use crate::error::Result;
use crate::plot::{CurvePanel, slug, small_multiples};
use crate::schema::{JobRow, MetricRow, Table};
use crate::store::{for_each_batch, table_parts};

use super::tpt::{Curve, DEV_SCORE, latest_attempt};

/// Panels per figure: a readable grid; the report says how many jobs were left out.
pub const MAX_PANELS: usize = 16;
pub const LOSS: &str = "loss";
const T: &str = MetricRow::NAME;

/// Draws `curves_<model>.png` under `fig_dir` for every model with train/tpt jobs. Returns the
/// figures and, per model, (jobs shown, jobs in total).
pub fn draw(sweep: &Path, jobs: &[JobRow], fig_dir: &Path) -> Result<Vec<(PathBuf, usize, usize)>> {
    let mut by_model: BTreeMap<&str, Vec<&JobRow>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.kind == "train" || j.kind == "tpt") {
        let list = by_model.entry(j.model.as_str()).or_default();
        if !list.iter().any(|k| k.job_id == j.job_id) {
            list.push(j);
        }
    }
    let mut shown: HashMap<&str, (Curve, Curve)> = HashMap::new();
    for list in by_model.values_mut() {
        list.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        for j in list.iter().take(MAX_PANELS) {
            shown.insert(j.job_id.as_str(), Default::default());
        }
    }
    if shown.is_empty() {
        return Ok(Vec::new());
    }
    for part in table_parts(sweep, MetricRow::NAME)? {
        for_each_batch::<MetricRow>(&part, |b| {
            let ids = column::<StringArray>(b, T, "job_id")?;
            let names = column::<StringArray>(b, T, "name")?;
            let attempts = column::<Int64Array>(b, T, "attempt")?;
            let steps = column::<Int64Array>(b, T, "step")?;
            let values = column::<Float64Array>(b, T, "value")?;
            for i in 0..b.num_rows() {
                let Some(c) = shown.get_mut(ids.value(i)) else {
                    continue;
                };
                let point = (steps.value(i), attempts.value(i), values.value(i));
                match names.value(i) {
                    DEV_SCORE => c.0.push(point),
                    LOSS => c.1.push(point),
                    _ => {}
                }
            }
            Ok(())
        })?;
    }
    let mut figures = Vec::new();
    for (model, list) in by_model {
        let panels: Vec<CurvePanel> = list
            .iter()
            .take(MAX_PANELS)
            .map(|j| {
                let (dev, loss) = shown.remove(j.job_id.as_str()).unwrap_or_default();
                let label = match (&j.src_task, &j.task) {
                    (Some(s), Some(t)) => format!("tpt {s}→{t}"),
                    (None, Some(t)) => format!("{} {t}", j.kind),
                    _ => j.job_id.clone(),
                };
                CurvePanel {
                    label,
                    dev_score: latest_attempt(dev),
                    loss: latest_attempt(loss),
                }
            })
            // A job that logged no curve (a TPT pair top_k left out) gets no empty panel.
            .filter(|p| !(p.dev_score.is_empty() && p.loss.is_empty()))
            .collect();
        let path = fig_dir.join(format!("curves_{}.png", slug(model)));
        let title = format!("{model}: dev score (blue) and loss / max loss (red) per job");
        small_multiples(&path, &title, &panels)?;
        figures.push((path, panels.len(), list.len()));
    }
    Ok(figures)
}
