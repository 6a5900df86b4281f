//! One struct per transformers `modeling_t5.py` module, in its order; field names and `nn::Path`
//! segments are the checkpoint's keys, so each struct can be read line by line against HF's.
//!
//! Attention biases arrive precombined: the relative position bias (computed once per stack by
//! block 0, as HF shares it) plus the additive padding / causal mask.

use tch::{Kind, Tensor, nn};

use super::config::{Activation, T5Config};
use super::weights::Weights;
use crate::precision;

/// `T5LayerNorm`: RMS norm without mean subtraction and without bias.
#[derive(Debug)]
pub(super) struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    pub(super) fn new(p: nn::Path, w: &mut Weights, c: &T5Config) -> T5LayerNorm {
        T5LayerNorm {
            weight: w.take(&p, "weight", &[c.d_model]),
            eps: c.layer_norm_epsilon,
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        // Accumulate in float32 as HF does, whatever the activations' type.
        let variance = x
            .to_kind(Kind::Float)
            .square()
            .mean_dim(-1, true, Kind::Float);
        let h = x * (variance + self.eps).rsqrt();
        &self.weight * h.to_kind(self.weight.kind())
    }
}

/// `nn.Dropout(p)` in training mode; `p = 0` is the identity (evaluation, or a run without
/// dropout), so inference paths pay nothing.
fn dropout(x: Tensor, p: f64) -> Tensor {
    if p > 0.0 { x.dropout(p, true) } else { x }
}

/// A bias-free `nn.Linear`'s `name.weight`, [out, in].
fn linear(p: &nn::Path, w: &mut Weights, name: &str, out: i64, inp: i64) -> Tensor {
    w.take(&(p / name), "weight", &[out, inp])
}

fn activate(act: Activation, x: &Tensor) -> Tensor {
    match act {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu("none"),
        // Same formula as transformers' NewGELUActivation, as one kernel.
        Activation::GeluNew => x.gelu("tanh"),
        Activation::Silu => x.silu(),
    }
}

/// `T5DenseActDense` (v1.0) or `T5DenseGatedActDense` (v1.1): HF's `DenseReluDense`.
#[derive(Debug)]
enum DenseReluDense {
    T5DenseActDense {
        wi: Tensor,
        wo: Tensor,
    },
    T5DenseGatedActDense {
        wi_0: Tensor,
        wi_1: Tensor,
        wo: Tensor,
    },
}

/// `T5LayerFF`: pre-norm feed-forward with a residual.
#[derive(Debug)]
pub(super) struct T5LayerFF {
    dense_relu_dense: DenseReluDense,
    act: Activation,
    layer_norm: T5LayerNorm,
}

impl T5LayerFF {
    pub(super) fn new(
        p: nn::Path,
        w: &mut Weights,
        c: &T5Config,
        gated: bool,
        act: Activation,
    ) -> T5LayerFF {
        let d = &p / "DenseReluDense";
        let dense_relu_dense = if gated {
            DenseReluDense::T5DenseGatedActDense {
                wi_0: linear(&d, w, "wi_0", c.d_ff, c.d_model),
                wi_1: linear(&d, w, "wi_1", c.d_ff, c.d_model),
                wo: linear(&d, w, "wo", c.d_model, c.d_ff),
            }
        } else {
            DenseReluDense::T5DenseActDense {
                wi: linear(&d, w, "wi", c.d_ff, c.d_model),
                wo: linear(&d, w, "wo", c.d_model, c.d_ff),
            }
        };
        T5LayerFF {
            dense_relu_dense,
            act,
            layer_norm: T5LayerNorm::new(&p / "layer_norm", w, c),
        }
    }

    /// `capture`, when given, receives the activation function's output (what a forward hook on
    /// HF's `DenseReluDense.act` sees: for gated FFNs, before the product with `wi_1`). `p`
    /// drops where HF's `T5DenseActDense.dropout` (before `wo`) and `T5LayerFF.dropout` (before
    /// the residual) do.
    pub(super) fn forward(&self, x: &Tensor, capture: Option<&mut Vec<Tensor>>, p: f64) -> Tensor {
        let h = self.layer_norm.forward(x);
        let (inner, wo) = match &self.dense_relu_dense {
            DenseReluDense::T5DenseActDense { wi, wo } => {
                let a = activate(self.act, &precision::linear(&h, wi, None));
                if let Some(sink) = capture {
                    sink.push(a.shallow_clone());
                }
                (a, wo)
            }
            DenseReluDense::T5DenseGatedActDense { wi_0, wi_1, wo } => {
                let a = activate(self.act, &precision::linear(&h, wi_0, None));
                if let Some(sink) = capture {
                    sink.push(a.shallow_clone());
                }
                (a * precision::linear(&h, wi_1, None), wo)
            }
        };
        x + dropout(precision::linear(&dropout(inner, p), wo, None), p)
    }
}

/// Where an attention layer's keys and values come from.
pub(super) enum Kv<'a> {
    /// Projected from the layer's own input (encoder; teacher-forced decoder).
    Own,
    /// Projected from the own input and appended to the earlier steps' (incremental decoding).
    Cached(&'a mut LayerCache),
    /// Already projected, [B, H, K, d_kv] each (the encoder's, for cross-attention).
    Given(&'a Tensor, &'a Tensor),
}

/// Keys and values of the decoding steps so far for one self-attention layer, [B, H, t, d_kv].
#[derive(Debug, Default)]
pub(super) struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Keeps the rows `index` ([n] int64) in that order: beam search's reordering.
    pub(super) fn reorder(&mut self, index: &Tensor) {
        if let Some((k, v)) = &self.kv {
            self.kv = Some((k.index_select(0, index), v.index_select(0, index)));
        }
    }
}

/// HF's `T5Attention._relative_position_bucket`, op for op, so that the float32 log lands in the
/// same bucket at the boundaries.
fn relative_position_bucket(
    relative_position: &Tensor,
    bidirectional: bool,
    num_buckets: i64,
    max_distance: i64,
) -> Tensor {
    let mut num_buckets = num_buckets;
    let (offset, relative_position) = if bidirectional {
        num_buckets /= 2;
        (
            relative_position.gt(0).to_kind(Kind::Int64) * num_buckets,
            relative_position.abs(),
        )
    } else {
        (
            relative_position.zeros_like(),
            -relative_position.clamp_max(0),
        )
    };
    let max_exact = num_buckets / 2;
    let is_small = relative_position.lt(max_exact);
    let large = (relative_position.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (num_buckets - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(num_buckets - 1);
    offset + relative_position.where_self(&is_small, &large)
}

/// `T5Attention`: multi-head attention without score scaling; block 0 of each stack also holds
/// the relative position bias table.
#[derive(Debug)]
pub(super) struct T5Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    relative_attention_bias: Option<Tensor>,
    n_heads: i64,
    d_kv: i64,
    num_buckets: i64,
    max_distance: i64,
    /// Encoder buckets look both ways; decoder buckets only back.
    bidirectional: bool,
}

impl T5Attention {
    pub(super) fn new(
        p: nn::Path,
        w: &mut Weights,
        c: &T5Config,
        has_relative_attention_bias: bool,
        bidirectional: bool,
    ) -> T5Attention {
        let inner = c.num_heads * c.d_kv;
        T5Attention {
            q: linear(&p, w, "q", inner, c.d_model),
            k: linear(&p, w, "k", inner, c.d_model),
            v: linear(&p, w, "v", inner, c.d_model),
            o: linear(&p, w, "o", c.d_model, inner),
            relative_attention_bias: has_relative_attention_bias.then(|| {
                let table = &p / "relative_attention_bias";
                w.take(
                    &table,
                    "weight",
                    &[c.relative_attention_num_buckets, c.num_heads],
                )
            }),
            n_heads: c.num_heads,
            d_kv: c.d_kv,
            num_buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
            bidirectional,
        }
    }

    /// [B, T, d_model] -> [B, H, T, d_kv].
    fn heads(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().unwrap();
        precision::linear(x, weight, None)
            .view([b, t, self.n_heads, self.d_kv])
            .transpose(1, 2)
    }

    /// Keys and values of `states` ([B, K, d_model]), [B, H, K, d_kv] each.
    pub(super) fn project_kv(&self, states: &Tensor) -> (Tensor, Tensor) {
        (self.heads(states, &self.k), self.heads(states, &self.v))
    }

    /// HF's `compute_bias`: [1, H, q_len, k_len] for queries at positions `past..past + q_len`.
    /// Only for the attention that holds the table (block 0's self-attention).
    pub(super) fn compute_bias(
        &self,
        q_len: i64,
        k_len: i64,
        past: i64,
        device: tch::Device,
    ) -> Tensor {
        let table = self
            .relative_attention_bias
            .as_ref()
            .expect("block 0 holds the bias table");
        let context = Tensor::arange(q_len, (Kind::Int64, device)).unsqueeze(1) + past;
        let memory = Tensor::arange(k_len, (Kind::Int64, device)).unsqueeze(0);
        let buckets = relative_position_bucket(
            &(memory - context),
            self.bidirectional,
            self.num_buckets,
            self.max_distance,
        );
        Tensor::embedding(table, &buckets, -1, false, false)
            .permute([2, 0, 1])
            .unsqueeze(0)
    }

    /// `x` [B, T, d_model] attends over the keys `kv` names; `bias` is added to the scores
    /// (broadcast to [B, H, T, K]); `p` drops attention weights (HF's `attn_weights` dropout).
    pub(super) fn forward(&self, x: &Tensor, kv: Kv<'_>, bias: &Tensor, p: f64) -> Tensor {
        let (b, t, _) = x.size3().unwrap();
        let q = self.heads(x, &self.q);
        let (k, v) = match kv {
            Kv::Own => self.project_kv(x),
            Kv::Given(k, v) => (k.shallow_clone(), v.shallow_clone()),
            Kv::Cached(cache) => {
                let (k, v) = self.project_kv(x);
                let (k, v) = match cache.kv.take() {
                    Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
                    None => (k, v),
                };
                cache.kv = Some((k.shallow_clone(), v.shallow_clone()));
                (k, v)
            }
        };
        // T5 folds the scale into its initialisation: no 1/sqrt(d_kv) here.
        let scores = q.matmul(&k.transpose(-1, -2)) + bias;
        // Softmax in float32 (bf16 scores meet the float32 bias as float32 anyway), then the
        // product in the values' type.
        let weights = dropout(scores.softmax(-1, Kind::Float), p).to_kind(v.kind());
        let out = weights
            .matmul(&v)
            .transpose(1, 2)
            .reshape([b, t, self.n_heads * self.d_kv]);
        precision::linear(&out, &self.o, None)
    }

    pub(super) fn has_bias_table(&self) -> bool {
        self.relative_attention_bias.is_some()
    }
}

/// `T5LayerSelfAttention`.
#[derive(Debug)]
pub(super) struct T5LayerSelfAttention {
    self_attention: T5Attention,
    layer_norm: T5LayerNorm,
}

impl T5LayerSelfAttention {
    fn new(p: nn::Path, w: &mut Weights, c: &T5Config, has_bias: bool, is_decoder: bool) -> Self {
        T5LayerSelfAttention {
            self_attention: T5Attention::new(&p / "SelfAttention", w, c, has_bias, !is_decoder),
            layer_norm: T5LayerNorm::new(&p / "layer_norm", w, c),
        }
    }

    fn forward(&self, x: &Tensor, kv: Kv<'_>, bias: &Tensor, p: f64) -> Tensor {
        let out = self
            .self_attention
            .forward(&self.layer_norm.forward(x), kv, bias, p);
        x + dropout(out, p)
    }
}

/// `T5LayerCrossAttention`: the decoder attending over the encoder output.
#[derive(Debug)]
pub(super) struct T5LayerCrossAttention {
    enc_dec_attention: T5Attention,
    layer_norm: T5LayerNorm,
}

impl T5LayerCrossAttention {
    fn new(p: nn::Path, w: &mut Weights, c: &T5Config) -> Self {
        T5LayerCrossAttention {
            enc_dec_attention: T5Attention::new(&p / "EncDecAttention", w, c, false, true),
            layer_norm: T5LayerNorm::new(&p / "layer_norm", w, c),
        }
    }

    fn forward(&self, x: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, p: f64) -> Tensor {
        let out =
            self.enc_dec_attention
                .forward(&self.layer_norm.forward(x), Kv::Given(k, v), bias, p);
        x + dropout(out, p)
    }
}

/// `T5Block`: `layer.0` self-attention, then (decoder only) `layer.1` cross-attention, then the
/// feed-forward as the last layer.
#[derive(Debug)]
pub(super) struct T5Block {
    self_attention: T5LayerSelfAttention,
    cross_attention: Option<T5LayerCrossAttention>,
    ff: T5LayerFF,
}

/// What the decoder attends to besides itself: the encoder output, or its projections cached
/// per layer for incremental decoding; `bias` is the encoder padding mask, additive.
pub(super) enum CrossInput<'a> {
    Encoder {
        hidden: &'a Tensor,
        bias: &'a Tensor,
    },
    Cached {
        kv: &'a [(Tensor, Tensor)],
        bias: &'a Tensor,
    },
}

impl T5Block {
    fn new(p: nn::Path, w: &mut Weights, c: &T5Config, i: usize, is_decoder: bool) -> T5Block {
        let (gated, act) = c.ffn().expect("checked when the config was loaded");
        let layer = &p / "layer";
        let ff_index = if is_decoder { 2 } else { 1 };
        T5Block {
            self_attention: T5LayerSelfAttention::new(&layer / 0, w, c, i == 0, is_decoder),
            cross_attention: is_decoder.then(|| T5LayerCrossAttention::new(&layer / 1, w, c)),
            ff: T5LayerFF::new(&layer / ff_index, w, c, gated, act),
        }
    }

    pub(super) fn cross_kv(&self, encoder_hidden: &Tensor) -> Option<(Tensor, Tensor)> {
        self.cross_attention
            .as_ref()
            .map(|x| x.enc_dec_attention.project_kv(encoder_hidden))
    }
}

/// `T5Stack`: the encoder or the decoder (embeddings are the model's `shared`, applied outside).
#[derive(Debug)]
pub(super) struct T5Stack {
    block: Vec<T5Block>,
    final_layer_norm: T5LayerNorm,
}

impl T5Stack {
    pub(super) fn new(p: nn::Path, w: &mut Weights, c: &T5Config, is_decoder: bool) -> T5Stack {
        let layers = if is_decoder {
            c.decoder_layers()
        } else {
            c.num_layers
        };
        let blocks = &p / "block";
        T5Stack {
            block: (0..layers as usize)
                .map(|i| T5Block::new(&blocks / i, w, c, i, is_decoder))
                .collect(),
            final_layer_norm: T5LayerNorm::new(&p / "final_layer_norm", w, c),
        }
    }

    pub(super) fn blocks(&self) -> &[T5Block] {
        &self.block
    }

    /// The relative position bias all blocks share, [1, H, q_len, k_len].
    pub(super) fn position_bias(
        &self,
        q_len: i64,
        k_len: i64,
        past: i64,
        device: tch::Device,
    ) -> Tensor {
        let attention = &self.block[0].self_attention.self_attention;
        debug_assert!(attention.has_bias_table());
        attention.compute_bias(q_len, k_len, past, device)
    }

    /// Runs every block and the final norm over `x` [B, T, d_model].
    ///
    /// * `self_bias`: position bias plus mask for the self-attention, broadcast to [B, H, T, K].
    /// * `caches`: one per block for incremental decoding (then `x` holds the new steps only).
    /// * `cross`: the encoder side, for the decoder.
    /// * `ffn_capture`: receives each block's FFN activation, in order (see [`T5LayerFF`]).
    /// * `p`: dropout, where HF's `T5Stack` applies it (the input embeddings, every sublayer's
    ///   output, attention weights, the FFN's inner activation, the final norm's output); 0
    ///   outside training.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        self_bias: &Tensor,
        mut caches: Option<&mut [LayerCache]>,
        cross: Option<CrossInput<'_>>,
        mut ffn_capture: Option<&mut Vec<Tensor>>,
        p: f64,
    ) -> Tensor {
        let mut h = dropout(x.shallow_clone(), p);
        for (i, block) in self.block.iter().enumerate() {
            let kv = match caches.as_deref_mut() {
                Some(caches) => Kv::Cached(&mut caches[i]),
                None => Kv::Own,
            };
            h = block.self_attention.forward(&h, kv, self_bias, p);
            if let (Some(layer), Some(cross)) = (&block.cross_attention, &cross) {
                h = match cross {
                    CrossInput::Encoder { hidden, bias } => {
                        let (k, v) = layer.enc_dec_attention.project_kv(hidden);
                        layer.forward(&h, &k, &v, bias, p)
                    }
                    CrossInput::Cached { kv, bias } => {
                        layer.forward(&h, &kv[i].0, &kv[i].1, bias, p)
                    }
                };
            }
            h = block.ff.forward(&h, ffn_capture.as_deref_mut(), p);
        }
        dropout(self.final_layer_norm.forward(&h), p)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn buckets_match_transformers_at_default_sizes() {
        // HF's buckets for relative positions -300..=300 at t5-base's 32 buckets and distance 128
        // (from scripts/make-t5-fixtures.py): the log-bucket boundaries are where float32
        // rounding could disagree.
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/t5-v1_0/expected.safetensors");
        let expected: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .collect();
        let relative = Tensor::arange_start(-300, 301, (Kind::Int64, tch::Device::Cpu));
        for (key, bidirectional) in [("buckets_bidirectional", true), ("buckets_causal", false)] {
            let got = relative_position_bucket(&relative, bidirectional, 32, 128);
            assert!(got.equal(&expected[key]), "{key}");
        }
    }
}
