//! Seeds as an axis of the analysis: the mean and spread of a quantity over seeds, and the rule
//! that says a transfer beats the random prompt beyond the seed spread.

/// How many standard deviations of the paired margin the mean margin must exceed.
pub const BEYOND_SPREAD_SDS: f64 = 2.0;

/// The arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Mean and sample standard deviation (divisor n − 1) of one quantity over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    /// `None` with a single seed: one run has no spread.
    pub sd: Option<f64>,
    /// Seeds behind the numbers.
    pub n: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let n = values.len();
        let mean = mean(values)?;
        let sd = (n > 1).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some(Spread { mean, sd, n })
    }

    /// The mean, with `± sd` when there is a spread: `81.3 ± 2.4`.
    pub fn display(&self, digits: usize) -> String {
        match self.sd {
            Some(sd) => format!("{:.digits$} ± {sd:.digits$}", self.mean),
            None => format!("{:.digits$}", self.mean),
        }
    }

    /// The beats-random rule on the paired margins `d_k = rel_k(s→t) − rel_k(random→t)` (one per
    /// seed k that scored both): the mean margin exceeds [`BEYOND_SPREAD_SDS`] times their sd.
    /// It compares with the spread of single runs, not the standard error of the mean, so it
    /// says "a rerun with a new seed would beat random too". It is stricter than a one-sided
    /// paired t-test at 5% for every n ≥ 3 (at n = 3 that test needs 1.69 sd) and weaker at
    /// n = 2 (4.46 sd). `None` with fewer than two seeds: there is no spread to beat.
    pub fn beyond_spread(&self) -> Option<bool> {
        self.sd.map(|sd| self.mean > BEYOND_SPREAD_SDS * sd)
    }
}
