//! Spearman's ρ between an indicator and relative transfer (DESIGN.md §1): per target over the
//! sources s ≠ t, the mean over targets, and globally over all off-diagonal pairs.

use std::collections::{BTreeMap, BTreeSet};

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

/// Correlates `indicator[(source, target)]` with `relative[(source, target)]` over the pairs both
/// hold, leaving out the diagonal and the sources in `exclude_sources` (the random prompt is a
/// baseline, not a task).
pub fn correlate(
    indicator: &BTreeMap<(String, String), f64>,
    relative: &BTreeMap<(String, String), f64>,
    exclude_sources: &[&str],
) -> Vec<TargetCorrelation> {
    let mut per_target: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let (mut gx, mut gy) = (Vec::new(), Vec::new());
    for ((s, t), rel) in relative {
        if s == t || exclude_sources.contains(&s.as_str()) {
            continue;
        }
        let Some(ind) = indicator.get(&(s.clone(), t.clone())) else {
            continue;
        };
        let e = per_target.entry(t.as_str()).or_default();
        e.0.push(*ind);
        e.1.push(*rel);
        gx.push(*ind);
        gy.push(*rel);
    }
    let targets: BTreeSet<&str> = relative.keys().map(|(_, t)| t.as_str()).collect();
    let mut out = Vec::new();
    let mut defined = Vec::new();
    for t in targets {
        let (x, y) = per_target
            .get(t)
            .map_or((&[][..], &[][..]), |(x, y)| (&x[..], &y[..]));
        let rho = spearman(x, y);
        if let Some(r) = rho {
            defined.push(r);
        }
        out.push(TargetCorrelation {
            target: t.to_string(),
            spearman: rho,
            n: x.len(),
        });
    }
    let mean = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    out.push(TargetCorrelation {
        target: MEAN.into(),
        spearman: mean,
        n: defined.len(),
    });
    out.push(TargetCorrelation {
        target: GLOBAL.into(),
        spearman: spearman(&gx, &gy),
        n: gx.len(),
    });
    out
}

/// Correlation rows of every indicator (and ON layer span) in `indicators` of one model with
/// `relative[(source, target)]`; the random prompt is left out as a source.
pub fn correlation_rows(
    model: &str,
    indicators: &[crate::schema::IndicatorRow],
    relative: &BTreeMap<(String, String), f64>,
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
        for c in correlate(&values, relative, &[crate::transfer::RANDOM_SOURCE]) {
            out.push(crate::schema::CorrelationRow {
                model: model.to_string(),
                indicator: indicator.to_string(),
                layers: layers.map(str::to_string),
                target: c.target,
                spearman: c.spearman,
                n: c.n as i64,
            });
        }
    }
    out
}
