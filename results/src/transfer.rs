//! Zero-shot transfer results and the relative-performance matrix:
//! `relative(s→t) = 100 · score(s→t) / score(t→t)` (docs/design.md, "Cross-task transfer").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, ResultsError};
use crate::schema::TransferRelativeRow;

/// The name of the random-prompt baseline source.
pub const RANDOM_SOURCE: &str = "random";

/// One score: the prompt of `source` evaluated zero-shot on `target`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransferScore {
    #[serde(rename = "target_task")]
    pub target: String,
    #[serde(rename = "source_prompt")]
    pub source: String,
    pub metric: String,
    pub value: f64,
}

/// Reads the reference format: `target_task,source_prompt,metric,value`.
pub fn read_transfer_csv(path: &Path) -> Result<Vec<TransferScore>> {
    let csv_err = |source| ResultsError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(csv_err)?;
    let mut out = Vec::new();
    for row in reader.deserialize() {
        out.push(row.map_err(|source| ResultsError::Csv {
            path: path.to_path_buf(),
            source,
        })?);
    }
    if out.is_empty() {
        return Err(ResultsError::Transfer {
            path: path.to_path_buf(),
            message: "no rows".into(),
        });
    }
    Ok(out)
}

/// One cell of the relative matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeCell {
    pub source: String,
    pub target: String,
    pub metric: String,
    /// score(s→t).
    pub raw: f64,
    /// score(t→t).
    pub own: f64,
    /// 100 · raw / own.
    pub relative: f64,
}

impl RelativeCell {
    /// The cell as a `transfer_relative` row of one seed: no types, split or spread.
    pub fn row(&self, model: &str) -> TransferRelativeRow {
        TransferRelativeRow {
            model: model.to_string(),
            src_task: self.source.clone(),
            tgt_task: self.target.clone(),
            metric: self.metric.clone(),
            raw: self.raw,
            own: self.own,
            relative: self.relative,
            src_type: None,
            tgt_type: None,
            split: None,
            n_seeds: 1,
            raw_sd: None,
            own_sd: None,
            relative_sd: None,
            random_margin: None,
            random_margin_sd: None,
            beats_random: None,
        }
    }
}

/// Builds the relative matrix. Fails (naming `origin`) on a duplicated pair, a target without its
/// diagonal, a non-positive diagonal, or metrics that disagree within one target.
pub fn relative_matrix(scores: &[TransferScore], origin: &Path) -> Result<Vec<RelativeCell>> {
    let fail = |message: String| ResultsError::Transfer {
        path: origin.to_path_buf(),
        message,
    };
    let mut by_pair: BTreeMap<(&str, &str), &TransferScore> = BTreeMap::new();
    for s in scores {
        if !s.value.is_finite() {
            return Err(fail(format!(
                "{} → {}: value is not a finite number",
                s.source, s.target
            )));
        }
        if by_pair
            .insert((s.target.as_str(), s.source.as_str()), s)
            .is_some()
        {
            return Err(fail(format!("{} → {} appears twice", s.source, s.target)));
        }
    }
    let targets: BTreeSet<&str> = scores.iter().map(|s| s.target.as_str()).collect();
    let mut out = Vec::with_capacity(scores.len());
    for t in targets {
        let own = by_pair.get(&(t, t)).ok_or_else(|| {
            fail(format!(
                "target {t} has no diagonal row ({t} → {t}), so relative transfer is undefined"
            ))
        })?;
        if own.value <= 0.0 {
            return Err(fail(format!(
                "target {t} scores {} on its own prompt; cannot divide by it",
                own.value
            )));
        }
        for ((_, s), score) in by_pair.range((t, "")..).take_while(|((tt, _), _)| *tt == t) {
            if score.metric != own.metric {
                return Err(fail(format!(
                    "{s} → {t} reports {} but the diagonal reports {}",
                    score.metric, own.metric
                )));
            }
            out.push(RelativeCell {
                source: s.to_string(),
                target: t.to_string(),
                metric: score.metric.clone(),
                raw: score.value,
                own: own.value,
                relative: 100.0 * score.value / own.value,
            });
        }
    }
    Ok(out)
}

/// `(source, target) -> relative` for [`crate::spearman::correlate`].
pub fn relative_map(cells: &[RelativeCell]) -> BTreeMap<(String, String), f64> {
    cells
        .iter()
        .map(|c| ((c.source.clone(), c.target.clone()), c.relative))
        .collect()
}
