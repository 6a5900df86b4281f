//! Cross-model transfer: prompts projected from `src_model` onto `model` (per projector
//! objective), scored relative to `model`'s own prompt for the same task and split.

use std::collections::BTreeMap;

use crate::schema::{CrossModelRow, EvalRow};

/// The job kind of projected-prompt evaluations.
pub const CROSS_MODEL_KIND: &str = "cross_model";

type Key = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
);

/// Rows of the `cross_model` table, and the gaps (no own-prompt score to divide by).
pub fn analyse(evals: &[EvalRow]) -> (Vec<CrossModelRow>, Vec<String>) {
    let mut own: BTreeMap<(&str, &str, &str, &str), (f64, usize)> = BTreeMap::new();
    for e in evals {
        let same_model = e.src_model.as_deref().is_none_or(|m| m == e.model);
        if e.kind == "train" && same_model && e.src_task == e.tgt_task {
            let o = own
                .entry((&e.model, &e.tgt_task, &e.split, &e.metric))
                .or_default();
            o.0 += e.value;
            o.1 += 1;
        }
    }
    // Several evals of one projection (seeds, re-runs) are averaged.
    let mut cross: BTreeMap<Key, (f64, usize, Option<bool>)> = BTreeMap::new();
    for e in evals.iter().filter(|e| e.kind == CROSS_MODEL_KIND) {
        let key = (
            e.model.clone(),
            e.src_model.clone().unwrap_or_default(),
            e.objective.clone(),
            e.src_task.clone(),
            e.tgt_task.clone(),
            e.split.clone(),
            e.metric.clone(),
        );
        let c = cross.entry(key).or_default();
        c.0 += e.value;
        c.1 += 1;
        c.2 = c.2.or(e.held_out);
    }
    let (mut rows, mut gaps) = (Vec::new(), Vec::new());
    for ((model, src_model, objective, src_task, tgt_task, split, metric), (sum, n, held_out)) in
        cross
    {
        let value = sum / n as f64;
        match own.get(&(model.as_str(), tgt_task.as_str(), split.as_str(), metric.as_str())) {
            Some((s, k)) if *s > 0.0 => {
                let own = s / *k as f64;
                rows.push(CrossModelRow {
                    model,
                    src_model,
                    objective,
                    src_task,
                    tgt_task,
                    held_out,
                    metric,
                    value,
                    own,
                    relative: 100.0 * value / own,
                });
            }
            _ => gaps.push(format!(
                "cross-model {src_model}→{model} on {tgt_task}: no positive {metric} of {model}'s own prompt on {split}"
            )),
        }
    }
    (rows, gaps)
}
