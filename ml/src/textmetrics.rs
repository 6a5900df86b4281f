//! Metrics of the generation tasks (issue 10): SQuAD-style exact match and token F1 for question
//! answering (SQuAD, NQ-Open), ROUGE-1/2/L F-measure for summarization (Multi-News, SAMSum).
//!
//! Both follow their reference implementations operation for operation, so that the scores are
//! the same floats (the tests compare against fixtures that the reference Python code computed,
//! `scripts/make-textmetrics-fixtures.py`):
//!
//! * **QA**: the official SQuAD v1.1 `evaluate-v1.1.py`. [`normalize_answer`] lower-cases
//!   (Unicode, as Python's `str.lower`), deletes ASCII punctuation (Python's
//!   `string.punctuation`; curly quotes and other Unicode punctuation stay), replaces the words
//!   `a`, `an` and `the` by a space (`re.sub(r'\b(a|an|the)\b', ' ', ...)`) and collapses
//!   whitespace (`' '.join(text.split())`). [`exact_match`] compares normalized strings;
//!   [`token_f1`] is the F1 of the multiset overlap of the normalized tokens, 0 when nothing
//!   overlaps (so an empty prediction against an empty answer has EM 1 but F1 0, as in v1.1).
//!   [`max_exact_match`] / [`max_token_f1`] take the maximum over the gold answers, which is how
//!   SQuAD (several annotators) and NQ-Open (several answers) score.
//! * **ROUGE**: Google's `rouge-score` package (`rouge_scorer.RougeScorer(["rouge1", "rouge2",
//!   "rougeL"], use_stemmer=False)`). [`rouge_tokenize`] lower-cases, turns every run of
//!   characters other than `[a-z0-9]` into a separator and keeps the non-empty pieces (so
//!   accented letters split words and non-Latin text has no tokens). ROUGE-N counts clipped
//!   n-gram overlap (precision over the prediction's n-grams, recall over the target's, each
//!   denominator at least 1); ROUGE-L uses the longest common subsequence and is 0 when either
//!   side has no tokens. The F-measure is `2PR / (P + R)`, 0 when `P + R = 0`.
//!
//! Scores are fractions in [0, 1] (the SQuAD script prints 100 times them). A corpus score
//! ([`qa_corpus`], [`rouge_corpus`]) is the mean of the per-example scores, summed in order.
//!
//! No crate is used for ROUGE: the one that reproduces `rouge-score` (`rougers`) was a new
//! single-maintainer 0.x crate, and what is needed here (no stemmer, no `rougeLsum`) is short.
//!
//! One known difference from Python: the article rule's word boundary treats a character as
//! part of a word by Rust's `char::is_alphanumeric`, Python's `re` by `str.isalnum`. They
//! differ only for characters that are alphabetic through Unicode's `Other_Alphabetic`
//! (combining vowel signs of Indic scripts, circled letters), so only where such a character
//! touches a standalone `a`, `an` or `the`.
//!
//! ```
//! use promptgrid_ml::textmetrics::{max_exact_match, max_token_f1, rouge};
//! let golds = ["The Eiffel Tower", "Eiffel tower."];
//! assert_eq!(max_exact_match("eiffel tower", &golds).unwrap(), 1.0);
//! assert_eq!(max_token_f1("the tower", &golds).unwrap(), 2.0 / 3.0);
//! let r = rouge("the cat sat on the mat", "the cat was on the mat");
//! assert!((r.rouge1.fmeasure - 5.0 / 6.0).abs() < 1e-12);
//! ```

use std::collections::HashMap;

use crate::{MlError, MlResult};

/// Python's `str.isspace`: Unicode `White_Space` plus the ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A word character of Python's `re` for `str` patterns (`\w`): alphanumeric or `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python's `text.split()`: splits on runs of whitespace, no empty pieces.
fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_py_space).filter(|t| !t.is_empty())
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: a match is exactly a maximal run of word characters
/// that spells one of the articles.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let word_end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        if word_end > 0 {
            let word = &rest[..word_end];
            out.push_str(if matches!(word, "a" | "an" | "the") {
                " "
            } else {
                word
            });
            rest = &rest[word_end..];
        } else {
            let other_end = rest.find(is_word).unwrap_or(rest.len());
            out.push_str(&rest[..other_end]);
            rest = &rest[other_end..];
        }
    }
    out
}

/// SQuAD v1.1's `normalize_answer`: lower case, no ASCII punctuation, no articles, single
/// spaces.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = remove_articles(&no_punct);
    py_split(&no_articles).collect::<Vec<_>>().join(" ")
}

/// Whether the normalized prediction equals the normalized answer.
pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(gold)
}

/// How many of each token.
fn counts<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}

/// The size of the multiset intersection (`sum((Counter(a) & Counter(b)).values())`).
fn overlap<T: std::hash::Hash + Eq>(a: &HashMap<T, usize>, b: &HashMap<T, usize>) -> usize {
    a.iter()
        .map(|(k, &n)| n.min(b.get(k).copied().unwrap_or(0)))
        .sum()
}

/// SQuAD v1.1's `f1_score`: F1 of the normalized tokens' multiset overlap, 0 without overlap.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let (prediction, gold) = (normalize_answer(prediction), normalize_answer(gold));
    let prediction: Vec<&str> = py_split(&prediction).collect();
    let gold: Vec<&str> = py_split(&gold).collect();
    let same = overlap(&counts(prediction.iter()), &counts(gold.iter()));
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / prediction.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// The maximum of `metric` over the gold answers; an error when there are none.
fn max_over_golds<S: AsRef<str>>(
    prediction: &str,
    golds: &[S],
    metric: impl Fn(&str, &str) -> f64,
) -> MlResult<f64> {
    golds
        .iter()
        .map(|gold| metric(prediction, gold.as_ref()))
        .reduce(f64::max)
        .ok_or_else(|| MlError::Invalid("QA metric: an example has no gold answer".into()))
}

/// 1 if the prediction matches any gold answer after normalization, else 0.
pub fn max_exact_match<S: AsRef<str>>(prediction: &str, golds: &[S]) -> MlResult<f64> {
    max_over_golds(prediction, golds, |p, g| {
        f64::from(u8::from(exact_match(p, g)))
    })
}

/// The best [`token_f1`] over the gold answers.
pub fn max_token_f1<S: AsRef<str>>(prediction: &str, golds: &[S]) -> MlResult<f64> {
    max_over_golds(prediction, golds, token_f1)
}

/// `rouge-score`'s default tokenizer without stemming: lower case, every run of characters
/// other than ASCII lower-case letters and digits is a separator.
pub fn rouge_tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Precision, recall and F-measure of one ROUGE variant (`rouge_score.scoring.Score`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> RougeScore {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rouge {
    pub rouge1: RougeScore,
    pub rouge2: RougeScore,
    pub rouge_l: RougeScore,
}

/// `rouge_scorer._create_ngrams`: how many of each n-gram.
fn ngram_counts<S: AsRef<str>>(tokens: &[S], n: usize) -> HashMap<Vec<&str>, usize> {
    let tokens: Vec<&str> = tokens.iter().map(AsRef::as_ref).collect();
    counts(tokens.windows(n.max(1)).map(<[&str]>::to_vec))
}

/// ROUGE-N of tokenized texts (`rouge_scorer._score_ngrams`); `n` >= 1.
pub fn rouge_n<S: AsRef<str>>(target: &[S], prediction: &[S], n: usize) -> RougeScore {
    let (target, prediction) = (ngram_counts(target, n), ngram_counts(prediction, n));
    let common = overlap(&target, &prediction) as f64;
    let target_count: usize = target.values().sum();
    let prediction_count: usize = prediction.values().sum();
    RougeScore::new(
        common / prediction_count.max(1) as f64,
        common / target_count.max(1) as f64,
    )
}

/// The length of the longest common subsequence.
fn lcs_len<S: AsRef<str>>(a: &[S], b: &[S]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x.as_ref() == y.as_ref() {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// ROUGE-L of tokenized texts (`rouge_scorer._score_lcs`): all zero if either is empty.
pub fn rouge_l<S: AsRef<str>>(target: &[S], prediction: &[S]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    let lcs = lcs_len(target, prediction) as f64;
    RougeScore::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// `RougeScorer(["rouge1", "rouge2", "rougeL"]).score(target, prediction)`: the reference
/// first, as in `rouge-score`.
pub fn rouge(target: &str, prediction: &str) -> Rouge {
    let (target, prediction) = (rouge_tokenize(target), rouge_tokenize(prediction));
    Rouge {
        rouge1: rouge_n(&target, &prediction, 1),
        rouge2: rouge_n(&target, &prediction, 2),
        rouge_l: rouge_l(&target, &prediction),
    }
}

/// Corpus-level QA scores: means over the examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QaScores {
    pub exact_match: f64,
    pub f1: f64,
}

/// Corpus-level ROUGE F-measures: means over the examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScores {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

/// The mean, summed left to right (Python's `sum(xs) / len(xs)`); 0 for no values.
fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    values.sum::<f64>() / n as f64
}

fn check_lengths(what: &str, predictions: usize, references: usize) -> MlResult<()> {
    if predictions == references {
        Ok(())
    } else {
        Err(MlError::Invalid(format!(
            "{what}: {predictions} predictions but {references} references"
        )))
    }
}

/// Mean [`max_exact_match`] and [`max_token_f1`] of `predictions[i]` against `golds[i]`; 0 for
/// no examples. An error when the lengths differ or an example has no gold answer.
pub fn qa_corpus<P: AsRef<str>, G: AsRef<str>>(
    predictions: &[P],
    golds: &[Vec<G>],
) -> MlResult<QaScores> {
    check_lengths("QA metric", predictions.len(), golds.len())?;
    let mut em = Vec::with_capacity(predictions.len());
    let mut f1 = Vec::with_capacity(predictions.len());
    for (prediction, golds) in predictions.iter().zip(golds) {
        em.push(max_exact_match(prediction.as_ref(), golds)?);
        f1.push(max_token_f1(prediction.as_ref(), golds)?);
    }
    Ok(QaScores {
        exact_match: mean(em.into_iter()),
        f1: mean(f1.into_iter()),
    })
}

/// Mean ROUGE-1/2/L F-measures of `predictions[i]` against `references[i]`; 0 for no examples.
/// An error when the lengths differ.
pub fn rouge_corpus<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
) -> MlResult<RougeScores> {
    check_lengths("ROUGE", predictions.len(), references.len())?;
    let scores: Vec<Rouge> = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| rouge(r.as_ref(), p.as_ref()))
        .collect();
    Ok(RougeScores {
        rouge1: mean(scores.iter().map(|s| s.rouge1.fmeasure)),
        rouge2: mean(scores.iter().map(|s| s.rouge2.fmeasure)),
        rouge_l: mean(scores.iter().map(|s| s.rouge_l.fmeasure)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_follows_squad() {
        assert_eq!(
            normalize_answer("  The  Quick, brown FOX!  "),
            "quick brown fox"
        );
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        assert_eq!(normalize_answer("theatre anew"), "theatre anew");
        assert_eq!(normalize_answer("the_"), "");
        assert_eq!(normalize_answer("“the” end"), "“ ” end");
    }

    #[test]
    fn rouge_handles_empty_sides() {
        let r = rouge("", "something");
        assert_eq!(r.rouge1.fmeasure, 0.0);
        assert_eq!(r.rouge_l.fmeasure, 0.0);
        assert_eq!(rouge("a b", "a b").rouge2.fmeasure, 1.0);
    }

    #[test]
    fn corpus_errors() {
        assert!(qa_corpus(&["x"], &[Vec::<String>::new()]).is_err());
        assert!(rouge_corpus(&["x"], &["a", "b"]).is_err());
        assert_eq!(rouge_corpus::<&str, &str>(&[], &[]).unwrap().rouge1, 0.0);
    }
}
