//! Prompt-only transferability indicators (docs/design.md, "Transferability indicators"), for every pair of prompts of one model.
//!
//! Each pair needs the L×L Gram matrix `G = P1 P2ᵀ` once: E_average uses
//! `‖p1_i − p2_j‖² = ‖p1_i‖² + ‖p2_j‖² − 2 G_ij` and C_average uses `G_ij / (‖p1_i‖ ‖p2_j‖)`, so
//! the L·L·d work is done once per unordered pair, accumulated in f64.

use crate::prompts::Prompt;
use crate::schema::IndicatorRow;

/// Indicator names as they appear in the `indicators` and `correlations` tables.
pub const E_CONCAT: &str = "E_concat";
pub const E_AVERAGE: &str = "E_average";
pub const C_CONCAT: &str = "C_concat";
pub const C_AVERAGE: &str = "C_average";
pub const C_MEAN: &str = "C_mean";
pub const ON: &str = "ON";

/// The prompt-only indicators, in the order reports list them.
pub const PROMPT_INDICATORS: [&str; 5] = [E_CONCAT, E_AVERAGE, C_CONCAT, C_AVERAGE, C_MEAN];

/// The five prompt-only indicators of one ordered pair (all are symmetric).
#[derive(Debug, Clone, PartialEq)]
pub struct PairIndicators {
    pub task_a: String,
    pub task_b: String,
    pub e_concat: f64,
    pub e_average: f64,
    pub c_concat: f64,
    pub c_average: f64,
    pub c_mean: f64,
}

impl PairIndicators {
    /// `(name, value)` in [`PROMPT_INDICATORS`] order.
    pub fn values(&self) -> [(&'static str, f64); 5] {
        [
            (E_CONCAT, self.e_concat),
            (E_AVERAGE, self.e_average),
            (C_CONCAT, self.c_concat),
            (C_AVERAGE, self.c_average),
            (C_MEAN, self.c_mean),
        ]
    }
}

/// Dot product with four independent accumulators, so the compiler can vectorise it.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        acc[0] += x[0] * y[0];
        acc[1] += x[1] * y[1];
        acc[2] += x[2] * y[2];
        acc[3] += x[3] * y[3];
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Cosine; NaN when a vector is zero (undefined, and never silently 0).
fn cosine(ab: f64, aa: f64, bb: f64) -> f64 {
    ab / (aa.sqrt() * bb.sqrt())
}

/// What each prompt contributes to every pair, computed once.
struct Summary<'a> {
    prompt: &'a Prompt,
    /// ‖p_i‖² per token.
    sq_norms: Vec<f64>,
    /// ‖vec P‖².
    total_sq: f64,
    /// mean_i p_i.
    mean: Vec<f64>,
}

impl<'a> Summary<'a> {
    fn new(prompt: &'a Prompt) -> Self {
        let sq_norms: Vec<f64> = (0..prompt.tokens)
            .map(|i| dot(prompt.row(i), prompt.row(i)))
            .collect();
        let mut mean = vec![0.0; prompt.dim];
        for i in 0..prompt.tokens {
            for (m, v) in mean.iter_mut().zip(prompt.row(i)) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= prompt.tokens as f64);
        Self {
            prompt,
            total_sq: sq_norms.iter().sum(),
            sq_norms,
            mean,
        }
    }
}

fn pair(a: &Summary, b: &Summary) -> PairIndicators {
    let (p1, p2) = (a.prompt, b.prompt);
    // E_concat directly: the difference is cheap (L·d) and avoids cancellation for close prompts.
    let dist_sq: f64 = p1
        .data
        .iter()
        .zip(&p2.data)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let mut trace = 0.0;
    let (mut dist_sum, mut cos_sum) = (0.0, 0.0);
    for i in 0..p1.tokens {
        let r1 = p1.row(i);
        for j in 0..p2.tokens {
            let g = dot(r1, p2.row(j));
            if i == j {
                trace += g;
            }
            // Rounding can make a zero distance slightly negative.
            dist_sum += (a.sq_norms[i] + b.sq_norms[j] - 2.0 * g).max(0.0).sqrt();
            cos_sum += cosine(g, a.sq_norms[i], b.sq_norms[j]);
        }
    }
    let pairs = (p1.tokens * p2.tokens) as f64;
    PairIndicators {
        task_a: p1.name.clone(),
        task_b: p2.name.clone(),
        e_concat: 1.0 / (1.0 + dist_sq.sqrt()),
        e_average: 1.0 / (1.0 + dist_sum / pairs),
        c_concat: cosine(trace, a.total_sq, b.total_sq),
        c_average: cos_sum / pairs,
        c_mean: cosine(
            dot(&a.mean, &b.mean),
            dot(&a.mean, &a.mean),
            dot(&b.mean, &b.mean),
        ),
    }
}

/// [`prompt_indicators`] as `indicators` rows of `model` (prompt indicators span no layers).
pub fn prompt_indicator_rows(model: &str, prompts: &[Prompt]) -> Vec<IndicatorRow> {
    let mut rows = Vec::new();
    for pair in prompt_indicators(prompts) {
        for (name, value) in pair.values() {
            rows.push(IndicatorRow {
                model: model.to_string(),
                task_a: pair.task_a.clone(),
                task_b: pair.task_b.clone(),
                indicator: name.to_string(),
                layers: None,
                value: Some(value),
            });
        }
    }
    rows
}

/// All five indicators for every ordered pair `(a, b)`, the diagonal included, in the order of
/// `prompts`. Prompts must share one shape (see [`crate::prompts::load_prompt_dir`]).
pub fn prompt_indicators(prompts: &[Prompt]) -> Vec<PairIndicators> {
    let summaries: Vec<Summary> = prompts.iter().map(Summary::new).collect();
    let n = prompts.len();
    let mut upper: Vec<Option<PairIndicators>> = vec![None; n * n];
    for i in 0..n {
        for j in i..n {
            upper[i * n + j] = Some(pair(&summaries[i], &summaries[j]));
        }
    }
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let mut p = if i <= j {
                upper[i * n + j].clone()
            } else {
                upper[j * n + i].clone()
            }
            .unwrap();
            p.task_a = prompts[i].name.clone();
            p.task_b = prompts[j].name.clone();
            out.push(p);
        }
    }
    out
}

/// The table name of a sweep file's indicator (`e_concat` → `E_concat`).
pub fn table_name(indicator: promptgrid_common::spec::Indicator) -> &'static str {
    use promptgrid_common::spec::Indicator as I;
    match indicator {
        I::EConcat => E_CONCAT,
        I::EAverage => E_AVERAGE,
        I::CConcat => C_CONCAT,
        I::CAverage => C_AVERAGE,
        I::CMean => C_MEAN,
        I::On => ON,
    }
}

/// The value of the prompt-only indicator `name` between two prompts of one shape; `None` for a
/// name that is not a prompt-only indicator.
pub fn prompt_pair_value(a: &Prompt, b: &Prompt, name: &str) -> Option<f64> {
    pair(&Summary::new(a), &Summary::new(b))
        .values()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The `k` names with the highest similarity (every indicator grows with similarity); an
/// undefined value ranks last, and ties go to the name that sorts first, so every worker
/// ranking the same candidates agrees.
pub fn top_k(mut scores: Vec<(String, Option<f64>)>, k: usize) -> Vec<String> {
    scores.sort_by(|(na, a), (nb, b)| {
        let (a, b) = (
            a.unwrap_or(f64::NEG_INFINITY),
            b.unwrap_or(f64::NEG_INFINITY),
        );
        b.total_cmp(&a).then_with(|| na.cmp(nb))
    });
    scores.into_iter().take(k).map(|(n, _)| n).collect()
}
