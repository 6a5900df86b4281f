//! Which indicator predicts transfer best, and whether the data can tell: the leader by mean ρ
//! over targets is named only when its 95% bootstrap interval lies entirely above every other
//! candidate's; otherwise the indicators cannot be told apart at this size.

use crate::schema::CorrelationRow;
use crate::spearman::MEAN;

/// The verdict for one model's `mean` correlation rows.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorRanking {
    /// The indicator with the highest mean ρ over targets (ties broken by name).
    pub leader: String,
    pub rho: f64,
    /// The leader's 95% bootstrap interval.
    pub interval: Option<(f64, f64)>,
    /// The candidates whose interval reaches the leader's (or that have none), by mean ρ,
    /// highest first. Empty: the leader is the named best.
    pub overlapping: Vec<String>,
    /// Indicators with a mean ρ (each ON window one): the best is a selection among them.
    pub candidates: usize,
}

impl IndicatorRanking {
    /// Ranks the `mean` rows of `correlations` (one model's); `None` without a defined mean ρ.
    pub fn of(correlations: &[CorrelationRow]) -> Option<IndicatorRanking> {
        // (label, mean ρ, interval)
        type Candidate = (String, f64, Option<(f64, f64)>);
        let mut cands: Vec<Candidate> = correlations
            .iter()
            .filter(|c| c.target == MEAN)
            .filter_map(|c| {
                let interval = c.rho_lo.zip(c.rho_hi);
                c.spearman
                    .map(|r| (label(&c.indicator, c.layers.as_deref()), r, interval))
            })
            .collect();
        // Highest mean ρ first; equal ρ by name, so the verdict does not depend on row order.
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let ((leader, rho, interval), others) = cands.split_first()?;
        let overlapping = others
            .iter()
            .filter(|(_, _, other)| match (interval, other) {
                (Some((lo, _)), Some((_, hi))) => lo <= hi,
                _ => true,
            })
            .map(|(l, _, _)| l.clone())
            .collect();
        Some(IndicatorRanking {
            leader: leader.clone(),
            rho: *rho,
            interval: *interval,
            overlapping,
            candidates: cands.len(),
        })
    }

    /// The named best indicator and its mean ρ; `None` when it cannot be told apart.
    pub fn best(&self) -> Option<(&str, f64)> {
        (self.interval.is_some() && self.overlapping.is_empty())
            .then_some((self.leader.as_str(), self.rho))
    }

    /// The verdict as a sentence for the reports.
    pub fn sentence(&self) -> String {
        let (leader, rho, n) = (&self.leader, self.rho, self.candidates);
        match self.interval {
            Some((lo, hi)) if self.best().is_some() => format!(
                "Best predictor: **{leader}** (mean ρ {rho:.3}, 95% interval [{lo:.3}, {hi:.3}], \
                 above every other candidate's interval), the highest of {n} candidates (each \
                 ON window is one): a maximum over candidates is a selection, and overstates \
                 how well it predicts."
            ),
            Some(_) => format!(
                "No best predictor: the indicators cannot be told apart at this size. The \
                 highest mean ρ of {n} candidates, {leader} ({rho:.3}), has a 95% interval that \
                 overlaps those of {}.",
                self.overlapping.join(", ")
            ),
            None => format!(
                "No best predictor: {leader} (mean ρ {rho:.3}) leads {n} candidates but has no \
                 bootstrap interval."
            ),
        }
    }
}

/// Label of an indicator with its layer span (`ON[0-2]`).
pub(crate) fn label(indicator: &str, layers: Option<&str>) -> String {
    match layers {
        Some(l) => format!("{indicator}[{l}]"),
        None => indicator.to_string(),
    }
}
