//! Spearman's ρ between an indicator and relative transfer (docs/design.md, "Correlation with transfer"): per target over the
//! sources s ≠ t, the mean over targets, and globally over all off-diagonal pairs.

use std::collections::{BTreeMap, BTreeSet};

use crate::rho_uncertainty::{Resampling, rho_uncertainty};

/// 1-based ranks; tied values share the average of the ranks they span.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut out = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Ranks start+1 ..= end share their mean.
        let avg = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = avg;
        }
        start = end;
    }
    out
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's ρ; `None` with fewer than 3 points, a non-finite value, or a constant side
/// (undefined, never reported as a number).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len());
    if x.len() < 3 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

/// One row of the `correlations` table, before the model and indicator names are attached.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCorrelation {
    /// A target task, `mean` or `global`.
    pub target: String,
    pub spearman: Option<f64>,
    /// Pairs behind the value (targets averaged, for `mean`).
    pub n: usize,
}

pub const MEAN: &str = "mean";

/// Values per ordered pair `(source, target)`.
pub type PairValues = BTreeMap<(String, String), f64>;
pub const GLOBAL: &str = "global";

/// Relative transfer per ordered pair `(source, target)` and seed: `values[pair][k]` is seed k's
/// value, `None` where that seed has none. A correlation uses the mean over a pair's seeds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeededValues {
    pub n_seeds: usize,
    pub values: BTreeMap<(String, String), Vec<Option<f64>>>,
}

impl SeededValues {
    /// One seed.
    pub fn single(values: &PairValues) -> Self {
        Self {
            n_seeds: 1,
            values: values
                .iter()
                .map(|(k, v)| (k.clone(), vec![Some(*v)]))
                .collect(),
        }
    }
}

/// The pairs one indicator is correlated over: those with both an indicator value and relative
/// transfer, off the diagonal, the excluded sources left out; in (source, target) name order.
#[derive(Debug, Clone)]
pub(crate) struct PairSet {
    /// Every target of the relative values, in name order (some may have no pairs).
    pub targets: Vec<String>,
    /// Per target, its pairs (indices into `x`), in source order.
    pub per_target: Vec<Vec<usize>>,
    /// The indicator per pair.
    pub x: Vec<f64>,
    /// Relative transfer per pair and seed.
    pub y_by_seed: Vec<Vec<Option<f64>>>,
    /// Relative transfer per pair, the mean over its seeds.
    pub y: Vec<f64>,
    pub n_seeds: usize,
}

fn mean_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl PairSet {
    pub fn new(
        indicator: &PairValues,
        relative: &SeededValues,
        exclude_sources: &[&str],
    ) -> PairSet {
        let targets: BTreeSet<&str> = relative.values.keys().map(|(_, t)| t.as_str()).collect();
        let targets: Vec<String> = targets.into_iter().map(str::to_string).collect();
        let mut set = PairSet {
            per_target: vec![Vec::new(); targets.len()],
            targets,
            x: Vec::new(),
            y_by_seed: Vec::new(),
            y: Vec::new(),
            n_seeds: relative.n_seeds,
        };
        for ((s, t), by_seed) in &relative.values {
            if s == t || exclude_sources.contains(&s.as_str()) {
                continue;
            }
            let (Some(ind), Some(y)) = (
                indicator.get(&(s.clone(), t.clone())),
                mean_of(by_seed.iter().flatten().copied()),
            ) else {
                continue;
            };
            if let Ok(ti) = set.targets.binary_search(t) {
                set.per_target[ti].push(set.x.len());
            }
            set.x.push(*ind);
            set.y.push(y);
            set.y_by_seed.push(by_seed.clone());
        }
        set
    }

    /// Every pair, in (source, target) order.
    pub fn all(&self) -> Vec<usize> {
        (0..self.x.len()).collect()
    }

    /// ρ over the pairs `idx` (repeats allowed), with relative transfer `y[i]`; a pair whose
    /// `y` is `None` is left out.
    pub fn rho(&self, idx: impl Iterator<Item = usize>, y: &[Option<f64>]) -> Option<f64> {
        let (xs, ys): (Vec<f64>, Vec<f64>) =
            idx.filter_map(|i| y[i].map(|v| (self.x[i], v))).unzip();
        spearman(&xs, &ys)
    }

    /// Per target, then `mean` (over the targets where ρ is defined), then `global`.
    pub fn observed(&self) -> Vec<TargetCorrelation> {
        let y: Vec<Option<f64>> = self.y.iter().copied().map(Some).collect();
        let mut out: Vec<TargetCorrelation> = self
            .targets
            .iter()
            .zip(&self.per_target)
            .map(|(t, idx)| TargetCorrelation {
                target: t.clone(),
                spearman: self.rho(idx.iter().copied(), &y),
                n: idx.len(),
            })
            .collect();
        let defined: Vec<f64> = out.iter().filter_map(|c| c.spearman).collect();
        out.push(TargetCorrelation {
            target: MEAN.into(),
            spearman: mean_of(defined.iter().copied()),
            n: defined.len(),
        });
        out.push(TargetCorrelation {
            target: GLOBAL.into(),
            spearman: self.rho(0..self.x.len(), &y),
            n: self.x.len(),
        });
        out
    }
}

/// Correlates `indicator[(source, target)]` with `relative[(source, target)]` over the pairs both
/// hold, leaving out the diagonal and the sources in `exclude_sources` (the random prompt is a
/// baseline, not a task).
pub fn correlate(
    indicator: &PairValues,
    relative: &PairValues,
    exclude_sources: &[&str],
) -> Vec<TargetCorrelation> {
    PairSet::new(indicator, &SeededValues::single(relative), exclude_sources).observed()
}

/// Correlation rows of every indicator (and ON layer span) in `indicators` of one model with
/// relative transfer, each with its bootstrap interval and permutation p-value
/// ([`crate::rho_uncertainty`]); the random prompt is left out as a source.
pub fn correlation_rows(
    model: &str,
    indicators: &[crate::schema::IndicatorRow],
    relative: &SeededValues,
    resampling: &Resampling,
) -> Vec<crate::schema::CorrelationRow> {
    let mut by_indicator: BTreeMap<(&str, Option<&str>), PairValues> = BTreeMap::new();
    for r in indicators.iter().filter(|r| r.model == model) {
        if let Some(v) = r.value {
            by_indicator
                .entry((r.indicator.as_str(), r.layers.as_deref()))
                .or_default()
                .insert((r.task_a.clone(), r.task_b.clone()), v);
        }
    }
    let mut out = Vec::new();
    for ((indicator, layers), values) in by_indicator {
        let set = PairSet::new(&values, relative, &[crate::transfer::RANDOM_SOURCE]);
        let observed = set.observed();
        let uncertainty = rho_uncertainty(&set, &observed, resampling);
        for (c, u) in observed.into_iter().zip(uncertainty) {
            out.push(crate::schema::CorrelationRow {
                model: model.to_string(),
                indicator: indicator.to_string(),
                layers: layers.map(str::to_string),
                target: c.target,
                spearman: c.spearman,
                n: c.n as i64,
                rho_lo: u.interval.map(|i| i.0),
                rho_hi: u.interval.map(|i| i.1),
                n_boot: u.n_boot as i64,
                p_value: u.p_value,
                n_perm: resampling.n_perm as i64,
                n_seeds: set.n_seeds as i64,
            });
        }
    }
    out
}
