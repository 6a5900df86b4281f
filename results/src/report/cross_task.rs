//! Cross-task zero-shot transfer from the `evals` table: raw and relative matrices per model,
//! tasks grouped by type, mean relative performance within and across types, and each source's
//! margin over the random prompt.
//!
//! Seeds: each seed's matrix is normalised on its own (relative_k(s→t) = 100 · score_k(s→t) /
//! score_k(t→t)), and a cell is the mean and sd over the seeds that scored it; evals whose job
//! records no seed form one seed of their own. Re-runs within a seed are averaged first.

use std::collections::{BTreeMap, BTreeSet};

use crate::schema::{EvalRow, TransferRelativeRow};
use crate::seeds::{Spread, mean};
use crate::spearman::SeededValues;
use crate::transfer::{RANDOM_SOURCE, RelativeCell, TransferScore, relative_matrix};

/// job_id → the seed its job ran with (from the `jobs` table).
pub type JobSeeds = BTreeMap<String, Option<i64>>;

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
    /// Targets where it beats the random prompt beyond the seed spread
    /// ([`Spread::beyond_spread`]), out of `judged`, those with at least two paired seeds.
    pub beyond_spread: usize,
    pub judged: usize,
}

/// One cell's numbers over seeds; [`ModelTransfer::cells`] holds their means.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSpread {
    pub raw: Spread,
    /// The target's own-prompt score over the same seeds.
    pub own: Spread,
    pub relative: Spread,
    /// relative_k(s→t) per seed, in the order of [`ModelTransfer::seeds`]; `None` where that
    /// seed has no value. The correlations resample seeds from these.
    pub relative_by_seed: Vec<Option<f64>>,
    /// The paired margin relative_k(s→t) − relative_k(random→t) over the seeds with both;
    /// `None` for the random source itself, or where the random prompt was not scored.
    pub vs_random: Option<Spread>,
}

impl CellSpread {
    /// Whether the source beats the random prompt beyond the seed spread; `None` with fewer than
    /// two paired seeds.
    pub fn beats_random(&self) -> Option<bool> {
        self.vs_random.and_then(|m| m.beyond_spread())
    }
}

/// Whether a target's own prompt beats the random prompt on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnVerdict {
    /// With several seeds: beyond the seed spread ([`Spread::beyond_spread`]); with one: above.
    Beats,
    /// Above on average, within the seed spread.
    WithinSpread,
    /// At or below the random prompt.
    DoesNotBeat,
}

/// A target's own prompt against the random prompt on the same split.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnVsRandom {
    pub target: String,
    pub own: Spread,
    pub random: Spread,
    pub verdict: OwnVerdict,
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
    /// The seeds behind the matrix, in order (`None`: evals whose job records no seed).
    pub seeds: Vec<Option<i64>>,
    /// Per cell, the mean over its seeds (`relative` is the mean of the per-seed ratios, so it
    /// need not equal 100 · raw / own of the means).
    pub cells: Vec<RelativeCell>,
    /// (source, target) → the cell's spread over seeds.
    pub spread: BTreeMap<(String, String), CellSpread>,
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
            seeds: Vec::new(),
            cells: Vec::new(),
            spread: BTreeMap::new(),
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

    pub fn spread(&self, source: &str, target: &str) -> Option<&CellSpread> {
        self.spread.get(&(source.to_string(), target.to_string()))
    }

    /// Relative transfer per pair and seed, for the correlations.
    pub fn seeded_relative(&self) -> SeededValues {
        SeededValues {
            n_seeds: self.seeds.len(),
            values: self
                .spread
                .iter()
                .map(|(pair, c)| (pair.clone(), c.relative_by_seed.clone()))
                .collect(),
        }
    }

    /// Each target's own prompt against the random prompt, for targets where both were scored:
    /// the demo's first sanity check (a prompt that cannot beat a random one learned nothing).
    pub fn own_vs_random(&self) -> Vec<OwnVsRandom> {
        self.tasks
            .iter()
            .filter_map(|t| {
                let own = self.spread(t, t)?;
                let random = self.spread(RANDOM_SOURCE, t)?;
                let margin = own.vs_random?;
                let verdict = match margin.beyond_spread() {
                    Some(true) => OwnVerdict::Beats,
                    _ if margin.mean <= 0.0 => OwnVerdict::DoesNotBeat,
                    Some(false) => OwnVerdict::WithinSpread,
                    None => OwnVerdict::Beats,
                };
                Some(OwnVsRandom {
                    target: t.clone(),
                    own: own.raw,
                    random: random.raw,
                    verdict,
                })
            })
            .collect()
    }

    /// Whether the matrix has several seeds: then its cells show `mean ± sd`.
    pub fn seeded(&self) -> bool {
        self.seeds.len() > 1
    }

    pub fn rows(&self) -> Vec<TransferRelativeRow> {
        self.cells
            .iter()
            .map(|c| {
                let spread = self.spread(&c.source, &c.target);
                let margin = spread.and_then(|s| s.vs_random);
                TransferRelativeRow {
                    src_type: self.types.get(&c.source).cloned(),
                    tgt_type: self.types.get(&c.target).cloned(),
                    split: self.splits.get(&c.target).cloned(),
                    n_seeds: spread.map_or(1, |s| s.relative.n as i64),
                    raw_sd: spread.and_then(|s| s.raw.sd),
                    own_sd: spread.and_then(|s| s.own.sd),
                    relative_sd: spread.and_then(|s| s.relative.sd),
                    random_margin: margin.map(|m| m.mean),
                    random_margin_sd: margin.and_then(|m| m.sd),
                    beats_random: spread.and_then(CellSpread::beats_random),
                    ..c.row(&self.model)
                }
            })
            .collect()
    }
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
    job_seeds: &JobSeeds,
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
        .map(|(model, rows)| analyse_model(model, &rows, &task_types, job_seeds))
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

/// The scores of each seed on the chosen splits; re-runs within a seed are averaged.
fn seed_scores(
    rows: &[&EvalRow],
    splits: &BTreeMap<String, String>,
    job_seeds: &JobSeeds,
) -> BTreeMap<Option<i64>, Vec<TransferScore>> {
    type Sums = BTreeMap<(String, String, String), (f64, usize)>;
    let mut sums: BTreeMap<Option<i64>, Sums> = BTreeMap::new();
    for e in rows
        .iter()
        .filter(|e| splits.get(&e.tgt_task) == Some(&e.split))
    {
        let seed = job_seeds.get(&e.job_id).copied().flatten();
        let s = sums
            .entry(seed)
            .or_default()
            .entry((e.tgt_task.clone(), e.src_task.clone(), e.metric.clone()))
            .or_default();
        s.0 += e.value;
        s.1 += 1;
    }
    sums.into_iter()
        .map(|(seed, sums)| {
            let scores = sums
                .into_iter()
                .map(|((target, source, metric), (sum, n))| TransferScore {
                    target,
                    source,
                    metric,
                    value: sum / n as f64,
                })
                .collect();
            (seed, scores)
        })
        .collect()
}

/// One seed's relative matrix, and the targets it cannot normalise, each with the reason.
fn seed_matrix(
    model: &str,
    scores: &[TransferScore],
    splits: &BTreeMap<String, String>,
) -> (Vec<RelativeCell>, Vec<String>) {
    let mut gaps = Vec::new();
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
    (cells, gaps)
}

/// `seed 2`, `seeds 1, 3`; a seed the jobs table does not record reads `unrecorded`.
fn seeds_label(seeds: &[Option<i64>]) -> String {
    let names: Vec<String> = seeds
        .iter()
        .map(|s| s.map_or("unrecorded".into(), |s| s.to_string()))
        .collect();
    let noun = if seeds.len() == 1 { "seed" } else { "seeds" };
    format!("{noun} {}", names.join(", "))
}

/// The mean cells, each cell's spread, and the gaps found on the way.
type Aggregate = (
    Vec<RelativeCell>,
    BTreeMap<(String, String), CellSpread>,
    Vec<String>,
);

/// The mean cells (in the per-seed order: target, then source) and each cell's spread. A seed
/// whose cell reports another metric than the first seed's is left out of it, and named.
fn aggregate(seeds: &[Option<i64>], by_seed: &[Vec<RelativeCell>]) -> Aggregate {
    let mut by_cell: BTreeMap<(&str, &str), Vec<(usize, &RelativeCell)>> = BTreeMap::new();
    for (k, cells) in by_seed.iter().enumerate() {
        for c in cells {
            by_cell
                .entry((c.target.as_str(), c.source.as_str()))
                .or_default()
                .push((k, c));
        }
    }
    let (mut cells, mut spread, mut gaps) = (Vec::new(), BTreeMap::new(), Vec::new());
    for ((target, source), list) in by_cell {
        let metric = &list[0].1.metric;
        let (same, other): (Vec<_>, Vec<_>) = list.iter().partition(|(_, c)| &c.metric == metric);
        if !other.is_empty() {
            let odd: Vec<Option<i64>> = other.iter().map(|(k, _)| seeds[*k]).collect();
            gaps.push(format!(
                "{source} → {target}: {} report(s) another metric than {metric}, left out",
                seeds_label(&odd)
            ));
        }
        let stat = |f: fn(&RelativeCell) -> f64| {
            Spread::of(&same.iter().map(|(_, c)| f(c)).collect::<Vec<_>>())
        };
        let (Some(raw), Some(own), Some(relative)) =
            (stat(|c| c.raw), stat(|c| c.own), stat(|c| c.relative))
        else {
            continue;
        };
        let mut relative_by_seed = vec![None; seeds.len()];
        for (k, c) in &same {
            relative_by_seed[*k] = Some(c.relative);
        }
        cells.push(RelativeCell {
            source: source.to_string(),
            target: target.to_string(),
            metric: metric.clone(),
            raw: raw.mean,
            own: own.mean,
            relative: relative.mean,
        });
        spread.insert(
            (source.to_string(), target.to_string()),
            CellSpread {
                raw,
                own,
                relative,
                relative_by_seed,
                vs_random: None,
            },
        );
    }
    // The margin over the random prompt, paired by seed: both are normalised by that seed's
    // own-prompt score, so pairing removes its variation from the margin.
    let random: BTreeMap<String, Vec<Option<f64>>> = spread
        .iter()
        .filter(|((s, _), _)| s == RANDOM_SOURCE)
        .map(|((_, t), c)| (t.clone(), c.relative_by_seed.clone()))
        .collect();
    for ((s, t), c) in spread.iter_mut() {
        if s == RANDOM_SOURCE {
            continue;
        }
        if let Some(r) = random.get(t) {
            let margins: Vec<f64> = c
                .relative_by_seed
                .iter()
                .zip(r)
                .filter_map(|(a, b)| Some((*a)? - (*b)?))
                .collect();
            c.vs_random = Spread::of(&margins);
        }
    }
    (cells, spread, gaps)
}

fn analyse_model(
    model: &str,
    rows: &[&EvalRow],
    task_types: &BTreeMap<String, String>,
    job_seeds: &JobSeeds,
) -> ModelTransfer {
    let (splits, mut gaps) = pick_splits(rows);
    let scores = seed_scores(rows, &splits, job_seeds);
    let seeds: Vec<Option<i64>> = scores.keys().copied().collect();
    // A gap found on every seed is named once; one found on some seeds names them.
    let mut seed_gaps: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    let mut by_seed = Vec::new();
    for (seed, scores) in &scores {
        let (cells, found) = seed_matrix(model, scores, &splits);
        for g in found {
            seed_gaps.entry(g).or_default().push(*seed);
        }
        by_seed.push(cells);
    }
    for (g, on) in seed_gaps {
        if on.len() == seeds.len() {
            gaps.push(g);
        } else {
            gaps.push(format!("{g} ({})", seeds_label(&on)));
        }
    }
    let (cells, spread, metric_gaps) = aggregate(&seeds, &by_seed);
    gaps.extend(metric_gaps);
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
        let verdicts: Vec<bool> = spread
            .iter()
            .filter(|((src, t), _)| src == s && t != s)
            .filter_map(|(_, c)| c.beats_random())
            .collect();
        if let Some(m) = mean(&margins) {
            vs_random.push(VsRandom {
                source: s.clone(),
                mean_margin: m,
                wins: margins.iter().filter(|m| **m > 0.0).count(),
                targets: margins.len(),
                beyond_spread: verdicts.iter().filter(|b| **b).count(),
                judged: verdicts.len(),
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
        seeds,
        cells,
        spread,
        gaps,
    }
}
