//! The random numbers of the report's bootstrap and permutation tests, specified exactly so that
//! `scripts/make-correlation-fixtures.py` can draw the same indices in Python:
//!
//! * [`SplitMix64`] (Steele, Lea and Flood 2014), the generator `promptgrid_common::rng` defines;
//! * [`Resample::below`]`(n)` = `(next · n) >> 64` (a multiply-shift, bias below n / 2⁶⁴);
//! * [`Resample::shuffle`]: Fisher–Yates from the end, `for i in (1..len).rev() { swap(i,
//!   below(i + 1)) }`;
//! * [`percentile`]: NumPy's default (`linear`) interpolation between order statistics.
//!
//! A fixed seed makes every report byte-identical for the same inputs.

pub use promptgrid_common::rng::SplitMix64;

/// The report's draws on [`SplitMix64`], exactly as the module documents them.
pub trait Resample {
    /// An index in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize;
    /// Shuffles `v` in place (Fisher–Yates, from the last element down).
    fn shuffle<T>(&mut self, v: &mut [T]);
}

impl Resample for SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` (ascending) with linear interpolation between the
/// order statistics at `h = (len − 1) · q`, as `numpy.percentile` does by default; `None` when
/// empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q;
    let lo = (h.floor() as usize).min(last);
    let (a, b) = (sorted[lo], sorted[(lo + 1).min(last)]);
    let t = h - lo as f64;
    // NumPy's `_lerp`: from the nearer end, so that the result stays within [a, b].
    Some(if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    })
}
