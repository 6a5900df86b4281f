//! The random numbers of the report's bootstrap and permutation tests, specified exactly so that
//! `scripts/make-correlation-fixtures.py` can draw the same indices in Python:
//!
//! * [`SplitMix64`] (Steele, Lea and Flood 2014): `state += 0x9E3779B97F4A7C15`, then the output
//!   is `z = state; z = (z ^ z >> 30) · 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) · 0x94D049BB133111EB;
//!   z ^ z >> 31`, all modulo 2⁶⁴;
//! * [`SplitMix64::below`]`(n)` = `(next · n) >> 64` (a multiply-shift, bias below n / 2⁶⁴);
//! * [`SplitMix64::shuffle`]: Fisher–Yates from the end, `for i in (1..len).rev() { swap(i,
//!   below(i + 1)) }`;
//! * [`percentile`]: NumPy's default (`linear`) interpolation between order statistics.
//!
//! A fixed seed makes every report byte-identical for the same inputs.

/// A 64-bit generator with a one-word state: small, fast and easy to re-implement exactly.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Shuffles `v` in place (Fisher–Yates, from the last element down).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
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
