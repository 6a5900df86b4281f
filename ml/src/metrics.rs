//! Classification metrics.

use promptgrid_common::catalog::Metric;

/// Fraction of `predictions` equal to `labels`; 0 for no examples.
pub fn accuracy(predictions: &[i64], labels: &[i64]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let right = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    right as f64 / labels.len() as f64
}

/// Unweighted mean over the classes of the per-class F1 (a class never predicted nor present
/// counts as F1 0, as scikit-learn's `f1_score(average="macro")` with `labels=range(n)`).
pub fn macro_f1(predictions: &[i64], labels: &[i64], num_labels: usize) -> f64 {
    if num_labels == 0 {
        return 0.0;
    }
    let total: f64 = (0..num_labels as i64)
        .map(|c| {
            let tp = predictions
                .iter()
                .zip(labels)
                .filter(|(p, l)| **p == c && **l == c)
                .count() as f64;
            let predicted = predictions.iter().filter(|p| **p == c).count() as f64;
            let actual = labels.iter().filter(|l| **l == c).count() as f64;
            if predicted + actual == 0.0 {
                0.0
            } else {
                2.0 * tp / (predicted + actual)
            }
        })
        .sum();
    total / num_labels as f64
}

/// The task's metric on classification predictions; `None` for generation metrics.
pub fn score(
    metric: Metric,
    predictions: &[i64],
    labels: &[i64],
    num_labels: usize,
) -> Option<f64> {
    match metric {
        Metric::Accuracy => Some(accuracy(predictions, labels)),
        Metric::MacroF1 => Some(macro_f1(predictions, labels, num_labels)),
        _ => None,
    }
}
