//! The ON indicator (docs/design.md, "Transferability indicators"): the cosine between the binary FFN activation masks that two
//! prompts induce, over all layers and per window of consecutive layers, computed on packed bits.
//!
//! The windows are the official ones by default: consecutive, non-overlapping blocks of
//! `window` layers from layer 0 (`ActivatedNeurons_0/3/6/9` slice `[l, l+3)`, and `_12` takes
//! all layers: caculate_metric_value_for_correlation.py:60-116, 205). Every stride-1 window is
//! computed only on request ([`OnWindows::sliding`]): picking the best of many overlapping
//! windows is a selection, and inflates the correlation it reports.
//!
//! For binary vectors, `cos(a, b) = |a ∧ b| / sqrt(|a| · |b|)`, so three popcounts per word do it.

use crate::error::{Result, ResultsError};

/// Default number of consecutive layers per ON window.
pub const DEFAULT_WINDOW: usize = 3;

/// Which layer windows ON is reported on, besides all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnWindows {
    /// Consecutive layers per window.
    pub width: usize,
    /// Every window of `width` layers (stride 1) instead of the official non-overlapping ones.
    pub sliding: bool,
}

impl OnWindows {
    /// The official windows: `[0, w)`, `[w, 2w)`, ... (the last one shorter when `w` does not
    /// divide the layer count, as the official Python slice would be).
    pub fn official(width: usize) -> OnWindows {
        OnWindows {
            width,
            sliding: false,
        }
    }

    /// The `(start, end)` layer ranges of a model with `layers` layers, all layers excluded
    /// (a window covering every layer is left out: it is the `all` row).
    pub fn spans(&self, layers: usize) -> Vec<(usize, usize)> {
        if self.width == 0 || self.width >= layers {
            return Vec::new();
        }
        if self.sliding {
            (0..=layers - self.width)
                .map(|first| (first, first + self.width))
                .collect()
        } else {
            (0..layers)
                .step_by(self.width)
                .map(|first| (first, (first + self.width).min(layers)))
                .collect()
        }
    }
}

impl Default for OnWindows {
    fn default() -> OnWindows {
        OnWindows::official(DEFAULT_WINDOW)
    }
}

impl From<usize> for OnWindows {
    fn from(width: usize) -> OnWindows {
        OnWindows::official(width)
    }
}

/// A `[layers][neurons]` bit mask, packed per layer into `u64` words, least significant bit first:
/// neuron `n` of layer `l` is bit `n % 64` of `words[l * words_per_layer + n / 64]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationMask {
    layers: usize,
    neurons: usize,
    words: Vec<u64>,
}

impl ActivationMask {
    fn words_per_layer(neurons: usize) -> usize {
        neurons.div_ceil(64)
    }

    /// Takes packed words as the worker writes them; padding bits past `neurons` must be zero so
    /// that they cannot count as activations.
    pub fn from_packed(layers: usize, neurons: usize, words: Vec<u64>) -> Result<Self> {
        let wpl = Self::words_per_layer(neurons);
        if layers == 0 || neurons == 0 || words.len() != layers * wpl {
            return Err(ResultsError::Masks(format!(
                "{} words for {layers} layers of {neurons} neurons (expected {})",
                words.len(),
                layers * wpl
            )));
        }
        if !neurons.is_multiple_of(64) {
            let pad = !0u64 << (neurons % 64);
            if (0..layers).any(|l| words[l * wpl + wpl - 1] & pad != 0) {
                return Err(ResultsError::Masks(
                    "padding bits past the last neuron are set".into(),
                ));
            }
        }
        Ok(Self {
            layers,
            neurons,
            words,
        })
    }

    /// The mask of a worker's mask artifact (`promptgrid_common::mask`), checked again here.
    pub fn from_mask_file(m: &promptgrid_common::mask::MaskFile) -> Result<Self> {
        Self::from_packed(m.layers, m.neurons, m.words.clone())
    }

    /// Packs `[layers][neurons]` booleans (tests, and callers holding unpacked masks).
    pub fn from_bools(mask: &[Vec<bool>]) -> Result<Self> {
        let neurons = mask.first().map_or(0, Vec::len);
        if mask.iter().any(|l| l.len() != neurons) {
            return Err(ResultsError::Masks(
                "layers have different neuron counts".into(),
            ));
        }
        let wpl = Self::words_per_layer(neurons);
        let mut words = vec![0u64; mask.len() * wpl];
        for (l, layer) in mask.iter().enumerate() {
            for (n, &on) in layer.iter().enumerate() {
                if on {
                    words[l * wpl + n / 64] |= 1 << (n % 64);
                }
            }
        }
        Self::from_packed(mask.len(), neurons, words)
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    pub fn neurons(&self) -> usize {
        self.neurons
    }

    fn span(&self, start: usize, end: usize) -> &[u64] {
        let wpl = Self::words_per_layer(self.neurons);
        &self.words[start * wpl..end * wpl]
    }
}

/// Which layers an ON value covers; `layers` column text is `all` or `first-last` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSpan {
    All,
    Window { first: usize, last: usize },
}

impl LayerSpan {
    pub fn label(&self) -> String {
        match self {
            LayerSpan::All => "all".into(),
            LayerSpan::Window { first, last } => format!("{first}-{last}"),
        }
    }
}

/// Cosine of two masks over layers `start..end`; `None` when either is all zeros there
/// (undefined, reported as a gap rather than as 0).
pub fn mask_cosine(
    a: &ActivationMask,
    b: &ActivationMask,
    start: usize,
    end: usize,
) -> Option<f64> {
    let (mut both, mut na, mut nb) = (0u64, 0u64, 0u64);
    for (x, y) in a.span(start, end).iter().zip(b.span(start, end)) {
        both += (x & y).count_ones() as u64;
        na += x.count_ones() as u64;
        nb += y.count_ones() as u64;
    }
    (na > 0 && nb > 0).then(|| both as f64 / ((na as f64) * (nb as f64)).sqrt())
}

/// ON over all layers, then over the non-overlapping windows of `window` layers (the official
/// ones; see [`OnWindows`]).
pub fn on_indicator(
    a: &ActivationMask,
    b: &ActivationMask,
    window: usize,
) -> Result<Vec<(LayerSpan, Option<f64>)>> {
    on_indicator_with(a, b, OnWindows::official(window))
}

/// ON over all layers, then over each window of `windows`.
pub fn on_indicator_with(
    a: &ActivationMask,
    b: &ActivationMask,
    windows: OnWindows,
) -> Result<Vec<(LayerSpan, Option<f64>)>> {
    if (a.layers, a.neurons) != (b.layers, b.neurons) {
        return Err(ResultsError::Masks(format!(
            "shapes differ: [{}, {}] vs [{}, {}]",
            a.layers, a.neurons, b.layers, b.neurons
        )));
    }
    if windows.width == 0 {
        return Err(ResultsError::Masks("window size must be at least 1".into()));
    }
    let mut out = vec![(LayerSpan::All, mask_cosine(a, b, 0, a.layers))];
    for (start, end) in windows.spans(a.layers) {
        let span = LayerSpan::Window {
            first: start,
            last: end - 1,
        };
        out.push((span, mask_cosine(a, b, start, end)));
    }
    Ok(out)
}

/// `indicators` rows of ON for every ordered pair of `(task, mask)` of one model: all layers and
/// each window of `windows`; an undefined value (an all-zero mask) is a null, not a 0.
pub fn on_rows(
    model: &str,
    masks: &[(String, ActivationMask)],
    windows: impl Into<OnWindows>,
) -> Result<Vec<crate::schema::IndicatorRow>> {
    let windows = windows.into();
    let mut rows = Vec::new();
    for (a, ma) in masks {
        for (b, mb) in masks {
            for (span, value) in on_indicator_with(ma, mb, windows)? {
                rows.push(crate::schema::IndicatorRow {
                    model: model.to_string(),
                    task_a: a.clone(),
                    task_b: b.clone(),
                    indicator: crate::indicators::ON.to_string(),
                    layers: Some(span.label()),
                    value,
                });
            }
        }
    }
    Ok(rows)
}
