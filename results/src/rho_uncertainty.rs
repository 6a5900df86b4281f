//! How far a Spearman ρ can be trusted: a 95% percentile bootstrap interval and a two-sided
//! permutation p-value for each row of `correlations` (per target, `mean`, `global`).
//!
//! The exact procedure, which `scripts/make-correlation-fixtures.py` re-implements draw for draw
//! (the generator is [`crate::resample`]'s):
//!
//! * Bootstrap: one [`SplitMix64`] seeded with `boot_seed`; for each of `n_boot` replicates, in
//!   this order: with S > 1 seeds, draw S seed indices `below(S)` and take each pair's relative
//!   transfer as the mean of its values on the drawn seeds (a pair with none is left out of the
//!   replicate); then for each target in name order, draw as many pairs as it has, `below(m)`
//!   each, from its pairs in source order; then as many from all pairs in (source, target)
//!   order, for `global`. The replicate's `mean` is the mean of its defined per-target ρ. The
//!   interval is NumPy's linear 2.5th and 97.5th percentiles of the replicates where ρ is
//!   defined, and `n_boot` in the table counts those.
//! * Permutation: one [`SplitMix64`] seeded with `perm_seed`; for each of `n_perm`
//!   permutations: for each target in name order, shuffle a fresh copy of its relative-transfer
//!   values (the seed means) against the fixed indicator values; then shuffle all pairs' for
//!   `global`; `mean` averages the per-target ρ. With k permutations where |ρ| ≥ |ρ_observed|
//!   (less 1e-9, so that ties in exact arithmetic count), p = (k + 1) / (n_perm + 1).
//!
//! Every indicator starts from the same seeds, so indicators over the same pairs are resampled
//! with the same draws, and their intervals differ by the indicators alone.

use crate::resample::{Resample, SplitMix64, percentile};
use crate::seeds::mean;
use crate::spearman::{PairSet, TargetCorrelation, spearman};

/// Bootstrap and permutation settings; [`Resampling::default`] is what the report uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Resampling {
    pub n_boot: usize,
    pub n_perm: usize,
    pub boot_seed: u64,
    pub perm_seed: u64,
}

impl Default for Resampling {
    /// 2000 of each: the percentile interval's end points then move by about 0.01 in ρ between
    /// generator seeds, and p is resolved to 1/2001.
    fn default() -> Self {
        Resampling {
            n_boot: 2000,
            n_perm: 2000,
            boot_seed: 20_220_710,
            perm_seed: 20_220_711,
        }
    }
}

/// The interval and p-value of one correlation row.
#[derive(Debug, Clone, PartialEq)]
pub struct RhoUncertainty {
    /// The 95% percentile bootstrap interval; `None` where ρ is undefined.
    pub interval: Option<(f64, f64)>,
    /// Replicates where ρ was defined.
    pub n_boot: usize,
    pub p_value: Option<f64>,
}

/// Ties of |ρ| in exact arithmetic may differ in the last bits; distinct values of ρ on a few
/// hundred pairs are far further apart.
const TIE: f64 = 1e-9;

/// Per target, `mean` and `global`, the statistics in the order of [`PairSet::observed`].
fn statistics(per_target: Vec<Option<f64>>, global: Option<f64>) -> Vec<Option<f64>> {
    let defined: Vec<f64> = per_target.iter().flatten().copied().collect();
    let mean = mean(&defined);
    let mut out = per_target;
    out.push(mean);
    out.push(global);
    out
}

fn bootstrap_replicate(set: &PairSet, rng: &mut SplitMix64) -> Vec<Option<f64>> {
    let y: Vec<Option<f64>> = if set.n_seeds > 1 {
        let drawn: Vec<usize> = (0..set.n_seeds).map(|_| rng.below(set.n_seeds)).collect();
        set.y_by_seed
            .iter()
            .map(|by_seed| {
                let v: Vec<f64> = drawn
                    .iter()
                    .filter_map(|&k| by_seed.get(k).copied().flatten())
                    .collect();
                mean(&v)
            })
            .collect()
    } else {
        set.y.iter().copied().map(Some).collect()
    };
    let draw = |idx: &[usize], rng: &mut SplitMix64| -> Option<f64> {
        let picked: Vec<usize> = (0..idx.len()).map(|_| idx[rng.below(idx.len())]).collect();
        set.rho(picked.into_iter(), &y)
    };
    let per_target: Vec<Option<f64>> = set.per_target.iter().map(|idx| draw(idx, rng)).collect();
    let global = draw(&set.all(), rng);
    statistics(per_target, global)
}

fn permutation(set: &PairSet, rng: &mut SplitMix64) -> Vec<Option<f64>> {
    let mut shuffled = |idx: &[usize]| -> Option<f64> {
        let x: Vec<f64> = idx.iter().map(|&i| set.x[i]).collect();
        let mut y: Vec<f64> = idx.iter().map(|&i| set.y[i]).collect();
        rng.shuffle(&mut y);
        spearman(&x, &y)
    };
    let per_target: Vec<Option<f64>> = set.per_target.iter().map(|idx| shuffled(idx)).collect();
    let global = shuffled(&set.all());
    statistics(per_target, global)
}

/// The interval and p-value of every row of `observed` (from `set.observed()`), in its order.
pub(crate) fn rho_uncertainty(
    set: &PairSet,
    observed: &[TargetCorrelation],
    r: &Resampling,
) -> Vec<RhoUncertainty> {
    let rows = observed.len();
    let mut boot: Vec<Vec<f64>> = vec![Vec::with_capacity(r.n_boot); rows];
    let mut rng = SplitMix64::new(r.boot_seed);
    for _ in 0..r.n_boot {
        for (row, v) in defined_rows(bootstrap_replicate(set, &mut rng)) {
            boot[row].push(v);
        }
    }
    let mut extreme = vec![0usize; rows];
    let mut rng = SplitMix64::new(r.perm_seed);
    for _ in 0..r.n_perm {
        for (row, v) in defined_rows(permutation(set, &mut rng)) {
            if let Some(obs) = observed[row].spearman
                && v.abs() >= obs.abs() - TIE
            {
                extreme[row] += 1;
            }
        }
    }
    observed
        .iter()
        .zip(boot)
        .zip(extreme)
        .map(|((obs, mut samples), k)| {
            samples.sort_by(f64::total_cmp);
            let defined = obs.spearman.is_some();
            let interval = percentile(&samples, 0.025)
                .zip(percentile(&samples, 0.975))
                .filter(|_| defined);
            RhoUncertainty {
                interval,
                n_boot: if defined { samples.len() } else { 0 },
                p_value: defined.then(|| (k + 1) as f64 / (r.n_perm + 1) as f64),
            }
        })
        .collect()
}

/// The defined statistics of one replicate, with their row.
fn defined_rows(stats: Vec<Option<f64>>) -> impl Iterator<Item = (usize, f64)> {
    stats
        .into_iter()
        .enumerate()
        .filter_map(|(row, v)| v.map(|v| (row, v)))
}
