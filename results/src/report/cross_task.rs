//! Cross-task zero-shot transfer from the `evals` table: raw and relative matrices per model,
//! tasks grouped by type, mean relative performance within and across types, and each source's
//! margin over the random prompt.

use std::collections::{BTreeMap, BTreeSet};

use crate::schema::{EvalRow, TransferRelativeRow};
use crate::transfer::{RANDOM_SOURCE, RelativeCell, TransferScore, relative_matrix};

/// Job kinds whose evals form the zero-shot matrix: a task's own prompt (`train`) and other
/// prompts evaluated zero-shot (`transfer`, the random baseline included).
pub const MATRIX_KINDS: [&str; 2] = ["train", "transfer"];
/// Type of a task that no source names.
pub const UNKNOWN_TYPE: &str = "unknown";

/// One source's margin over the random prompt, in relative-performance points.
#[derive(Debug, Clone, PartialEq)]
pub struct VsRandom {
    pub source: String,
    /// mean over targets t ≠ source of relative(s→t) − relative(random→t).
    pub mean_margin: f64,
    /// Targets where the source beats the random prompt.
    pub wins: usize,
    pub targets: usize,
}

/// The cross-task analysis of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTransfer {
    pub model: String,
    /// target → the split it is scored and normalised on: its own `test` where it has one,
    /// else `dev`. Targets differ (GLUE hides its test labels), and a matrix may mix them.
    pub splits: BTreeMap<String, String>,
    /// Tasks grouped by type (types in name order, tasks in name order within a type).
    pub tasks: Vec<String>,
    pub types: BTreeMap<String, String>,
    pub cells: Vec<RelativeCell>,
    /// Mean relative performance over off-diagonal task pairs of the same type / of different types.
    pub within_type: Option<f64>,
    pub across_types: Option<f64>,
    /// (source type, target type) → mean relative performance (off-diagonal pairs).
    pub by_type_pair: BTreeMap<(String, String), f64>,
    pub vs_random: Vec<VsRandom>,
    /// Targets left out, with the reason (a clearly marked gap rather than a wrong number).
    pub gaps: Vec<String>,
}

impl ModelTransfer {
    /// A model with no usable evals: no tasks, no cells, no gaps yet.
    fn empty(model: &str) -> ModelTransfer {
        ModelTransfer {
            model: model.to_string(),
            splits: BTreeMap::new(),
            tasks: Vec::new(),
            types: BTreeMap::new(),
            cells: Vec::new(),
            within_type: None,
            across_types: None,
            by_type_pair: BTreeMap::new(),
            vs_random: Vec::new(),
            gaps: Vec::new(),
        }
    }

    pub fn relative(&self, source: &str, target: &str) -> Option<&RelativeCell> {
        self.cells
            .iter()
            .find(|c| c.source == source && c.target == target)
    }

    pub fn rows(&self) -> Vec<TransferRelativeRow> {
        self.cells
            .iter()
            .map(|c| TransferRelativeRow {
                model: self.model.clone(),
                src_task: c.source.clone(),
                tgt_task: c.target.clone(),
                metric: c.metric.clone(),
                raw: c.raw,
                own: c.own,
                relative: c.relative,
                src_type: self.types.get(&c.source).cloned(),
                tgt_type: self.types.get(&c.target).cloned(),
                split: self.splits.get(&c.target).cloned(),
            })
            .collect()
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The split each target is scored on, and a note for every eval left out because it is on
/// another split. Among the splits that hold the target's own-prompt score (the diagonal, which
/// normalises the column), the one with the most sources wins, `test` before `dev` on a tie.
/// Chosen per target, never per model: a model-wide choice would silently drop every target
/// without the chosen split.
fn pick_splits(evals: &[&EvalRow]) -> (BTreeMap<String, String>, Vec<String>) {
    // target → split → sources scored there.
    let mut by_target: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for e in evals {
        by_target
            .entry(e.tgt_task.as_str())
            .or_default()
            .entry(e.split.as_str())
            .or_default()
            .insert(e.src_task.as_str());
    }
    let rank = |split: &str| match split {
        "test" => 0,
        "dev" => 1,
        _ => 2,
    };
    let mut chosen = BTreeMap::new();
    let mut notes = Vec::new();
    for (target, splits) in by_target {
        let best = splits
            .iter()
            .filter(|(_, sources)| sources.contains(target))
            .min_by_key(|(split, sources)| (std::cmp::Reverse(sources.len()), rank(split)))
            .or_else(|| splits.iter().min_by_key(|(split, _)| rank(split)))
            .map(|(split, _)| *split)
            .unwrap_or("test");
        for (split, sources) in splits.iter().filter(|(s, _)| **s != best) {
            notes.push(format!(
                "target {target}: {} eval(s) on {split} left out: its column is normalised on \
                 {best}, where its own prompt is scored",
                sources.len()
            ));
        }
        chosen.insert(target.to_string(), best.to_string());
    }
    (chosen, notes)
}

/// Analyses every model with matrix evals. `types` (task → type, e.g. from the catalog) wins
/// over the `src_type`/`tgt_type` columns. `expected` (model → tasks it trains prompts on,
/// e.g. from the `jobs` table) names the targets a matrix should have: one with no usable eval
/// is reported as a gap, never dropped silently.
pub fn analyse(
    evals: &[EvalRow],
    types: &BTreeMap<String, String>,
    expected: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<ModelTransfer> {
    let mut by_model: BTreeMap<&str, Vec<&EvalRow>> = BTreeMap::new();
    for e in evals {
        let same_model = e.src_model.as_deref().is_none_or(|m| m == e.model);
        if MATRIX_KINDS.contains(&e.kind.as_str()) && same_model {
            by_model.entry(e.model.as_str()).or_default().push(e);
        }
    }
    let mut task_types = types.clone();
    for e in evals {
        for (task, ty) in [(&e.src_task, &e.src_type), (&e.tgt_task, &e.tgt_type)] {
            if let Some(ty) = ty {
                task_types.entry(task.clone()).or_insert_with(|| ty.clone());
            }
        }
    }
    let mut out: Vec<ModelTransfer> = by_model
        .into_iter()
        .map(|(model, rows)| analyse_model(model, &rows, &task_types))
        .collect();
    for (model, tasks) in expected {
        let i = match out.iter().position(|t| &t.model == model) {
            Some(i) => i,
            None => {
                out.push(ModelTransfer::empty(model));
                out.len() - 1
            }
        };
        let t = &mut out[i];
        for task in tasks.iter().filter(|task| !t.tasks.contains(task)) {
            // A target already named by a finer gap (no own-prompt eval, ...) keeps that one.
            let prefix = format!("target {task}:");
            if !t.gaps.iter().any(|g| g.starts_with(&prefix)) {
                t.gaps.push(format!(
                    "{prefix} no zero-shot evals, so it is missing from the matrix"
                ));
            }
        }
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    out
}

fn analyse_model(
    model: &str,
    rows: &[&EvalRow],
    task_types: &BTreeMap<String, String>,
) -> ModelTransfer {
    let (splits, split_notes) = pick_splits(rows);
    // Several evals of one pair (seeds, re-runs) are averaged.
    let mut sums: BTreeMap<(String, String, String), (f64, usize)> = BTreeMap::new();
    for e in rows
        .iter()
        .filter(|e| splits.get(&e.tgt_task) == Some(&e.split))
    {
        let s = sums
            .entry((e.tgt_task.clone(), e.src_task.clone(), e.metric.clone()))
            .or_default();
        s.0 += e.value;
        s.1 += 1;
    }
    let scores: Vec<TransferScore> = sums
        .into_iter()
        .map(|((target, source, metric), (sum, n))| TransferScore {
            target,
            source,
            metric,
            value: sum / n as f64,
        })
        .collect();
    let mut gaps = split_notes;
    let targets: BTreeSet<&str> = scores.iter().map(|s| s.target.as_str()).collect();
    let with_diag: BTreeSet<&str> = targets
        .iter()
        .copied()
        .filter(|t| scores.iter().any(|s| s.target == *t && s.source == *t))
        .collect();
    for t in targets.difference(&with_diag) {
        gaps.push(format!(
            "target {t}: no eval of its own prompt on {}, so no relative transfer",
            splits[*t]
        ));
    }
    // A target whose own prompt scores 0 (a generation task early in training) has no relative
    // column; it is named, and the other targets keep theirs.
    let mut usable = with_diag.clone();
    for s in scores.iter().filter(|s| s.source == s.target) {
        if !s.value.is_finite() || s.value <= 0.0 {
            usable.remove(s.target.as_str());
            gaps.push(format!(
                "target {}: its own prompt scores {} ({}) on {}, so relative transfer is \
                 undefined and its column is left out",
                s.target, s.value, s.metric, splits[&s.target]
            ));
        }
    }
    let kept: Vec<TransferScore> = scores
        .iter()
        .filter(|s| usable.contains(s.target.as_str()))
        .cloned()
        .collect();
    let cells = match relative_matrix(&kept, std::path::Path::new(model)) {
        Ok(c) => c,
        Err(e) => {
            gaps.push(e.to_string());
            Vec::new()
        }
    };
    let ty = |t: &str| {
        task_types
            .get(t)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_TYPE.to_string())
    };
    let mut tasks: Vec<String> = cells
        .iter()
        .flat_map(|c| [c.source.clone(), c.target.clone()])
        .filter(|t| t != RANDOM_SOURCE)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tasks.sort_by_key(|t| (ty(t), t.clone()));
    let types: BTreeMap<String, String> = tasks.iter().map(|t| (t.clone(), ty(t))).collect();

    let (mut within, mut across) = (Vec::new(), Vec::new());
    let mut pairs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for c in cells
        .iter()
        .filter(|c| c.source != c.target && c.source != RANDOM_SOURCE)
    {
        let (st, tt) = (ty(&c.source), ty(&c.target));
        if st == tt {
            within.push(c.relative)
        } else {
            across.push(c.relative)
        }
        pairs.entry((st, tt)).or_default().push(c.relative);
    }
    let random: BTreeMap<&str, f64> = cells
        .iter()
        .filter(|c| c.source == RANDOM_SOURCE)
        .map(|c| (c.target.as_str(), c.relative))
        .collect();
    let mut vs_random = Vec::new();
    for s in &tasks {
        let margins: Vec<f64> = cells
            .iter()
            .filter(|c| &c.source == s && &c.target != s)
            .filter_map(|c| random.get(c.target.as_str()).map(|r| c.relative - r))
            .collect();
        if let Some(m) = mean(&margins) {
            vs_random.push(VsRandom {
                source: s.clone(),
                mean_margin: m,
                wins: margins.iter().filter(|m| **m > 0.0).count(),
                targets: margins.len(),
            });
        }
    }
    ModelTransfer {
        model: model.to_string(),
        splits,
        tasks,
        types,
        within_type: mean(&within),
        across_types: mean(&across),
        by_type_pair: pairs
            .into_iter()
            .filter_map(|(k, v)| mean(&v).map(|m| (k, m)))
            .collect(),
        vs_random,
        cells,
        gaps,
    }
}
