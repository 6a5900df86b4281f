//! The official generation score of the T5 runs (Prompt-Transferability-1.0,
//! model/PromptT5.py:289-310): NLTK's `sentence_bleu(references, hypothesis, weights=(0.7, 0.3,
//! 0, 0), smoothing_function=SmoothingFunction().method1)` over SentencePiece pieces.
//!
//! [`sentence_bleu`] follows `nltk.translate.bleu_score.corpus_bleu` (3.10) operation for
//! operation: clipped n-gram precisions as unreduced fractions (the denominator at least 1),
//! BLEU 0 when no unigram matches, `method1` replacing a zero numerator by 0.1, the brevity
//! penalty against the closest reference length (ties to the shorter), and
//! `bp · exp(Σ wₙ · ln pₙ)`. The fixture test checks it against NLTK itself
//! (scripts/make-textmetrics-fixtures.py).
//!
//! [`official_bleu`] adds what the official code wraps around it: a hypothesis without pieces
//! scores 0 (`len(y_) != 0`; the reference list is never empty, so an empty reference is scored
//! as NLTK scores it).

use std::collections::HashMap;
use std::hash::Hash;

/// `SmoothingFunction().method1`'s epsilon.
const EPSILON: f64 = 0.1;

/// The official weights of 1- to 4-grams.
pub const OFFICIAL_WEIGHTS: [f64; 4] = [0.7, 0.3, 0.0, 0.0];

fn ngram_counts<T: Eq + Hash>(tokens: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for g in tokens.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
    }
    counts
}

/// NLTK's `modified_precision`: (clipped matches, hypothesis n-grams at least 1).
fn modified_precision<T: Eq + Hash>(
    references: &[&[T]],
    hypothesis: &[T],
    n: usize,
) -> (usize, usize) {
    let counts = ngram_counts(hypothesis, n);
    let mut max_ref: HashMap<&[T], usize> = HashMap::new();
    for r in references {
        for (g, c) in ngram_counts(r, n) {
            if counts.contains_key(g) {
                let m = max_ref.entry(g).or_insert(0);
                *m = (*m).max(c);
            }
        }
    }
    let clipped = counts
        .iter()
        .map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0)))
        .sum();
    (clipped, counts.values().sum::<usize>().max(1))
}

/// NLTK's `closest_ref_length`: the reference length nearest the hypothesis', the shorter on a tie.
fn closest_ref_length<T>(references: &[&[T]], hyp_len: usize) -> usize {
    references
        .iter()
        .map(|r| r.len())
        .min_by_key(|&len| (len.abs_diff(hyp_len), len))
        .unwrap_or(0)
}

/// Smoothed (method1) sentence BLEU of `hypothesis` against `references`, with one weight per
/// n-gram order starting at unigrams.
pub fn sentence_bleu<T: Eq + Hash>(references: &[&[T]], hypothesis: &[T], weights: &[f64]) -> f64 {
    let p: Vec<(usize, usize)> = (1..=weights.len())
        .map(|n| modified_precision(references, hypothesis, n))
        .collect();
    if p.first().is_none_or(|&(num, _)| num == 0) {
        return 0.0;
    }
    let (c, r) = (
        hypothesis.len(),
        closest_ref_length(references, hypothesis.len()),
    );
    let bp = if c > r {
        1.0
    } else if c == 0 {
        0.0
    } else {
        (1.0 - r as f64 / c as f64).exp()
    };
    let log_sum: f64 = weights
        .iter()
        .zip(&p)
        .map(|(w, &(num, den))| {
            let p = if num == 0 {
                (num as f64 + EPSILON) / den as f64
            } else {
                num as f64 / den as f64
            };
            w * p.ln()
        })
        .sum();
    bp * log_sum.exp()
}

/// One example's official score (model/PromptT5.py:299-304): 0 for an empty hypothesis, else
/// [`sentence_bleu`] with [`OFFICIAL_WEIGHTS`] against the one reference.
pub fn official_bleu<T: Eq + Hash>(hypothesis: &[T], reference: &[T]) -> f64 {
    if hypothesis.is_empty() {
        0.0
    } else {
        sentence_bleu(&[reference], hypothesis, &OFFICIAL_WEIGHTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_and_disjoint() {
        let a = ["▁the", "▁cat", "▁sat"];
        assert!((official_bleu(&a, &a) - 1.0).abs() < 1e-12);
        assert_eq!(official_bleu(&["▁dog"], &a), 0.0);
        assert_eq!(official_bleu::<&str>(&[], &a), 0.0);
    }

    #[test]
    fn one_matching_piece_is_smoothed_and_penalised() {
        // p1 = 1/1, p2 = 0.1/1 (no bigram in a one-piece hypothesis: denominator 1), c = 1 < r = 3.
        let got = official_bleu(&["▁cat"], &["▁the", "▁cat", "▁sat"]);
        let want = (1.0f64 - 3.0).exp() * (0.7 * 1.0f64.ln() + 0.3 * 0.1f64.ln()).exp();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}
