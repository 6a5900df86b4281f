//! BERT and RoBERTa encoders, one struct per Hugging Face submodule of `modeling_bert.py` /
//! `modeling_roberta.py`. Path segments equal checkpoint keys (after the `bert.` / `roberta.`
//! prefix is stripped at load time). RoBERTa is this encoder with offset positions, one token
//! type and `lm_head.*`. Dropout runs only when a training step asks for it ([`Dropout`]); every
//! other pass is eval mode, identical to the parity reference.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::attention;
use super::config::{EncoderConfig, Family};
use super::packing::Packing;
use super::precision;

/// `nn.Linear`: weight [out, in], bias [out].
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

impl Linear {
    fn new(p: Path, input: i64, output: i64) -> Linear {
        Linear {
            weight: p.var("weight", &[output, input], Init::Const(0.)),
            bias: p.var("bias", &[output], Init::Const(0.)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        precision::linear(x, &self.weight, Some(&self.bias))
    }

    fn convert(&self, kind: Kind) {
        precision::convert(&self.weight, kind);
        precision::convert(&self.bias, kind);
    }
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(p: Path, dim: i64, eps: f64) -> LayerNorm {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.)),
            bias: p.var("bias", &[dim], Init::Const(0.)),
            eps,
        }
    }

    /// In float32 whatever the input's type, as autocast runs it.
    fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x.size().last().unwrap_or(&1);
        x.to_kind(Kind::Float).layer_norm(
            [dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// Dropout rates of a training forward pass, as PyTorch's `train()` mode applies them in
/// `modeling_bert.py` / `modeling_roberta.py`; all zero is eval mode. Masks come from torch's
/// global generator, which the caller seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Dropout {
    /// After the embeddings' LayerNorm.
    pub(crate) embeddings: f64,
    /// On the attention probabilities.
    pub(crate) attention: f64,
    /// On the attention output and FFN output projections, before their residual LayerNorms.
    pub(crate) hidden: f64,
}

fn dropout(x: Tensor, p: f64) -> Tensor {
    if p > 0.0 { x.dropout(p, true) } else { x }
}

fn activation(name: &str, x: &Tensor) -> Tensor {
    match name {
        "relu" => x.relu(),
        "gelu_new" | "gelu_pytorch_tanh" => x.gelu("tanh"),
        // HF's "gelu" is the exact erf form.
        _ => x.gelu("none"),
    }
}

/// `BertEmbeddings` / `RobertaEmbeddings`, fed with input embeddings.
#[derive(Debug)]
pub(crate) struct BertEmbeddings {
    pub(crate) word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn new(p: Path, c: &EncoderConfig) -> BertEmbeddings {
        let d = c.hidden_size;
        BertEmbeddings {
            word_embeddings: (&p / "word_embeddings").var(
                "weight",
                &[c.vocab_size, d],
                Init::Const(0.),
            ),
            position_embeddings: (&p / "position_embeddings").var(
                "weight",
                &[c.max_position_embeddings, d],
                Init::Const(0.),
            ),
            token_type_embeddings: (&p / "token_type_embeddings").var(
                "weight",
                &[c.type_vocab_size, d],
                Init::Const(0.),
            ),
            layer_norm: LayerNorm::new(&p / "LayerNorm", d, c.layer_norm_eps),
        }
    }

    /// `inputs_embeds` [N, S, d]; `position_ids` [S]; `position_keep` [S] (1 keeps the position
    /// embedding, 0 drops it: the official layout's prompt slots). Token type is always 0.
    fn forward(
        &self,
        inputs_embeds: &Tensor,
        position_ids: &Tensor,
        position_keep: Option<&Tensor>,
        p_dropout: f64,
    ) -> Tensor {
        let mut positions = self.position_embeddings.index_select(0, position_ids);
        if let Some(keep) = position_keep {
            positions *= keep.unsqueeze(-1);
        }
        let x = inputs_embeds + positions.unsqueeze(0) + self.token_type_embeddings.get(0);
        dropout(self.layer_norm.forward(&x), p_dropout)
    }
}

/// `BertSelfAttention`.
#[derive(Debug)]
struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: i64,
}

impl BertSelfAttention {
    fn new(p: Path, c: &EncoderConfig) -> BertSelfAttention {
        let d = c.hidden_size;
        BertSelfAttention {
            query: Linear::new(&p / "query", d, d),
            key: Linear::new(&p / "key", d, d),
            value: Linear::new(&p / "value", d, d),
            heads: c.num_attention_heads,
        }
    }

    fn split(&self, x: &Tensor) -> Tensor {
        let (n, s, d) = x.size3().unwrap_or((1, 1, 1));
        x.view([n, s, self.heads, d / self.heads]).transpose(1, 2)
    }

    /// `queries` attend over `hidden`; `mask` [N, 1, 1, S] is true where a key may be attended.
    /// `rows` says which of the two are packed (see [`Packing`]): the products run on the rows
    /// given, attention on the padded [N, S] layout, and the output comes back in the queries'
    /// layout. `p_dropout` drops attention probabilities, as HF's
    /// `self.dropout(attention_probs)`.
    fn forward(
        &self,
        queries: &Tensor,
        hidden: &Tensor,
        rows: RowLayout,
        mask: &Tensor,
        p_dropout: f64,
    ) -> Tensor {
        let padded = |x: Tensor, packed: bool| match rows.packing {
            Some(packing) if packed => packing.pad(&x),
            _ => x,
        };
        let q = self.split(&padded(self.query.forward(queries), rows.queries_packed));
        let k = self.split(&padded(self.key.forward(hidden), true));
        let v = self.split(&padded(self.value.forward(hidden), true));
        // The prompt's gradient flows through the keys and values of every position.
        let backward = q.requires_grad() || k.requires_grad();
        let out = attention::attend(&q, &k, &v, mask, p_dropout, backward);
        let (n, _, qn, _) = out.size4().unwrap_or((1, 1, 1, 1));
        let out = out.transpose(1, 2).contiguous().view([n, qn, -1]);
        match rows.packing {
            Some(packing) if rows.queries_packed => packing.pack(&out),
            _ => out,
        }
    }
}

/// Sees each layer's FFN activation: (layer index, activation).
pub(crate) type ObserveActivation<'a> = &'a mut dyn FnMut(usize, &Tensor);

/// How a layer's inputs are laid out: `hidden` is packed when a packing is given, and the
/// queries too unless they are the last layer's readout rows, [N, 1, d].
#[derive(Clone, Copy)]
struct RowLayout<'a> {
    packing: Option<&'a Packing>,
    queries_packed: bool,
}

impl RowLayout<'_> {
    const PADDED: RowLayout<'static> = RowLayout {
        packing: None,
        queries_packed: false,
    };
}

/// `BertSelfOutput`: projection, residual, LayerNorm.
#[derive(Debug)]
struct BertSelfOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl BertSelfOutput {
    fn new(p: Path, c: &EncoderConfig) -> BertSelfOutput {
        BertSelfOutput {
            dense: Linear::new(&p / "dense", c.hidden_size, c.hidden_size),
            layer_norm: LayerNorm::new(&p / "LayerNorm", c.hidden_size, c.layer_norm_eps),
        }
    }

    fn forward(&self, x: &Tensor, residual: &Tensor, p_dropout: f64) -> Tensor {
        self.layer_norm
            .forward(&(dropout(self.dense.forward(x), p_dropout) + residual))
    }
}

/// `BertAttention`.
#[derive(Debug)]
struct BertAttention {
    attention_self: BertSelfAttention,
    output: BertSelfOutput,
}

impl BertAttention {
    fn new(p: Path, c: &EncoderConfig) -> BertAttention {
        BertAttention {
            attention_self: BertSelfAttention::new(&p / "self", c),
            output: BertSelfOutput::new(&p / "output", c),
        }
    }
}

/// `BertIntermediate`: up-projection and activation.
#[derive(Debug)]
struct BertIntermediate {
    dense: Linear,
    act: String,
}

/// `BertOutput`: down-projection, residual, LayerNorm.
#[derive(Debug)]
struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

/// `BertLayer`.
#[derive(Debug)]
struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
}

impl BertLayer {
    fn new(p: Path, c: &EncoderConfig) -> BertLayer {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        BertLayer {
            attention: BertAttention::new(&p / "attention", c),
            intermediate: BertIntermediate {
                dense: Linear::new(&p / "intermediate" / "dense", d, i),
                act: c.hidden_act.clone(),
            },
            output: BertOutput {
                dense: Linear::new(&p / "output" / "dense", i, d),
                layer_norm: LayerNorm::new(&p / "output" / "LayerNorm", d, c.layer_norm_eps),
            },
        }
    }

    /// Converts every linear weight of the layer (see [`precision`]).
    fn convert(&self, kind: Kind) {
        let attention = &self.attention.attention_self;
        for linear in [
            &attention.query,
            &attention.key,
            &attention.value,
            &self.attention.output.dense,
            &self.intermediate.dense,
            &self.output.dense,
        ] {
            linear.convert(kind);
        }
    }

    /// Runs the layer for `queries` (all positions, or only the readout rows in the last layer:
    /// everything after attention is per position, so the other rows are never needed), laid
    /// out as `rows` says. `on_activation` sees the FFN activation (for activation-overlap
    /// indicators), in the queries' layout.
    fn forward(
        &self,
        queries: &Tensor,
        hidden: &Tensor,
        rows: RowLayout,
        mask: &Tensor,
        drop: Dropout,
        on_activation: Option<&mut dyn FnMut(&Tensor)>,
    ) -> Tensor {
        let attn =
            self.attention
                .attention_self
                .forward(queries, hidden, rows, mask, drop.attention);
        let attn = self.attention.output.forward(&attn, queries, drop.hidden);
        let inter = activation(
            &self.intermediate.act,
            &self.intermediate.dense.forward(&attn),
        );
        if let Some(observe) = on_activation {
            observe(&inter);
        }
        let out = dropout(self.output.dense.forward(&inter), drop.hidden);
        self.output.layer_norm.forward(&(out + attn))
    }
}

/// `BertEncoder`: the stack of layers.
#[derive(Debug)]
struct BertEncoder {
    layer: Vec<BertLayer>,
}

/// `BertPredictionHeadTransform` + `BertLMPredictionHead` (`cls.predictions.*`), or
/// `RobertaLMHead` (`lm_head.*`): dense, activation, LayerNorm, then the decoder.
#[derive(Debug)]
pub(crate) struct LmHead {
    dense: Linear,
    layer_norm: LayerNorm,
    act: String,
    /// `decoder.weight` when the checkpoint unties it; `None` reads the word embeddings.
    decoder: Option<Tensor>,
    bias: Tensor,
}

impl LmHead {
    fn new(p: Path, c: &EncoderConfig, family: Family) -> LmHead {
        let d = c.hidden_size;
        let (dense, norm, decoder_path) = match family {
            Family::Bert => (
                &p / "predictions" / "transform" / "dense",
                &p / "predictions" / "transform" / "LayerNorm",
                &p / "predictions" / "decoder",
            ),
            Family::Roberta => (&p / "dense", &p / "layer_norm", &p / "decoder"),
        };
        let bias_path = match family {
            Family::Bert => &p / "predictions",
            Family::Roberta => p,
        };
        LmHead {
            dense: Linear::new(dense, d, d),
            layer_norm: LayerNorm::new(norm, d, c.layer_norm_eps),
            act: c.hidden_act.clone(),
            decoder: (!c.tie_word_embeddings)
                .then(|| decoder_path.var("weight", &[c.vocab_size, d], Init::Const(0.))),
            bias: bias_path.var("bias", &[c.vocab_size], Init::Const(0.)),
        }
    }

    fn transform(&self, h: &Tensor) -> Tensor {
        self.layer_norm
            .forward(&activation(&self.act, &self.dense.forward(h)))
    }
}

/// Which rows of the vocabulary a readout scores.
pub(crate) enum Rows<'a> {
    All,
    Only(&'a Tensor),
}

/// The encoder with its embeddings and optional LM head; the top-level model is
/// [`super::EncoderModel`].
#[derive(Debug)]
pub(crate) struct Encoder {
    pub(crate) embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pub(crate) lm_head: Option<LmHead>,
}

impl Encoder {
    /// `root` is the model root (keys without the `bert.`/`roberta.` prefix); the LM head is
    /// built only when `with_head`.
    pub(crate) fn new(root: &Path, c: &EncoderConfig, family: Family, with_head: bool) -> Encoder {
        let layers = (0..c.num_hidden_layers)
            .map(|i| BertLayer::new(root / "encoder" / "layer" / i, c))
            .collect();
        let head_root = match family {
            Family::Bert => root / "cls",
            Family::Roberta => root / "lm_head",
        };
        Encoder {
            embeddings: BertEmbeddings::new(root / "embeddings", c),
            encoder: BertEncoder { layer: layers },
            lm_head: with_head.then(|| LmHead::new(head_root, c, family)),
        }
    }

    /// Runs the matrix products of the layers and the LM head's transform in `kind` (see
    /// [`precision`]); embeddings, norms and the readout stay float32.
    pub(crate) fn convert_linears(&self, kind: Kind) {
        for layer in &self.encoder.layer {
            layer.convert(kind);
        }
        if let Some(head) = &self.lm_head {
            head.dense.convert(kind);
        }
    }

    /// Hidden states at the rows `readout` [N] of the last layer, shape [N, d]. The last layer
    /// computes only those rows (with dropout, the others' masks would not matter either), and
    /// the layers before it only the real positions of a padded batch ([`Packing`]), unless
    /// `on_activation` watches them: it sees every layer's FFN activation padded, [N, S, I]
    /// ([N, 1, I] in the last layer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_readout(
        &self,
        inputs_embeds: &Tensor,
        position_ids: &Tensor,
        position_keep: Option<&Tensor>,
        attention_mask: &Tensor,
        readout: &Tensor,
        drop: Dropout,
        mut on_activation: Option<ObserveActivation<'_>>,
    ) -> Tensor {
        let hidden =
            self.embeddings
                .forward(inputs_embeds, position_ids, position_keep, drop.embeddings);
        let mask = attention_mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
        let n_layers = self.encoder.layer.len();
        let d = hidden.size()[2];
        let gather = |h: &Tensor| {
            h.gather(
                1,
                &readout.view([-1, 1, 1]).expand([-1, 1, d], false),
                false,
            )
        };
        if n_layers == 0 {
            return gather(&hidden).squeeze_dim(1);
        }
        let packing = on_activation
            .is_none()
            .then(|| Packing::of(attention_mask))
            .flatten();
        let (mut hidden, rows) = match &packing {
            Some(p) => (
                p.pack(&hidden),
                RowLayout {
                    packing: Some(p),
                    queries_packed: true,
                },
            ),
            None => (hidden, RowLayout::PADDED),
        };
        for (i, layer) in self.encoder.layer.iter().enumerate() {
            let mut observe = on_activation.as_mut().map(|o| move |t: &Tensor| o(i, t));
            let act = observe.as_mut().map(|f| f as &mut dyn FnMut(&Tensor));
            hidden = if i + 1 == n_layers {
                let padded = match &packing {
                    Some(p) => p.pad(&hidden),
                    None => hidden.shallow_clone(),
                };
                let last = RowLayout {
                    queries_packed: false,
                    ..rows
                };
                layer.forward(&gather(&padded), &hidden, last, &mask, drop, act)
            } else {
                layer.forward(&hidden, &hidden, rows, &mask, drop, act)
            };
        }
        hidden.squeeze_dim(1)
    }

    /// All hidden states of the last layer [N, S, d] (for hidden-state parity checks), in eval
    /// mode.
    pub(crate) fn forward_all(
        &self,
        inputs_embeds: &Tensor,
        position_ids: &Tensor,
        position_keep: Option<&Tensor>,
        attention_mask: &Tensor,
    ) -> Tensor {
        let mut hidden = self
            .embeddings
            .forward(inputs_embeds, position_ids, position_keep, 0.0);
        let mask = attention_mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
        for layer in &self.encoder.layer {
            hidden = layer.forward(
                &hidden,
                &hidden,
                RowLayout::PADDED,
                &mask,
                Dropout::default(),
                None,
            );
        }
        hidden
    }

    /// MLM-head logits of `h` [N, d] for the chosen vocabulary rows; `None` without a head.
    pub(crate) fn mlm_logits(&self, h: &Tensor, rows: Rows) -> Option<Tensor> {
        let head = self.lm_head.as_ref()?;
        let t = head.transform(h);
        let decoder = head
            .decoder
            .as_ref()
            .unwrap_or(&self.embeddings.word_embeddings);
        Some(match rows {
            Rows::All => t.linear(decoder, Some(&head.bias)),
            // The speed trick: only the label words' rows, never the whole vocabulary.
            Rows::Only(ids) => t.linear(
                &decoder.index_select(0, ids),
                Some(&head.bias.index_select(0, ids)),
            ),
        })
    }

    /// Tied readout: `h` [N, d] against the input-embedding rows, no transform, no bias.
    pub(crate) fn tied_logits(&self, h: &Tensor, rows: Rows) -> Tensor {
        let e = &self.embeddings.word_embeddings;
        match rows {
            Rows::All => h.matmul(&e.tr()),
            Rows::Only(ids) => h.matmul(&e.index_select(0, ids).tr()),
        }
    }
}
