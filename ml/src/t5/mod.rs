//! T5 v1.0 (ReLU FFN, tied embeddings, decoder output scaled by `d_model^-0.5`) and v1.1
//! (gated-GELU FFN, untied `lm_head`), as transformers' `T5ForConditionalGeneration` computes
//! them, with a soft prompt in front of the encoder input (docs/design.md, "T5").
//!
//! Layout:
//! * `config`: `config.json`.
//! * `weights`: checkpoint keys into a frozen `VarStore`, with mismatches reported by name.
//! * `layers`: one struct per HF submodule (`T5LayerNorm` ... `T5Stack`).
//! * `generate`: incremental (key/value cached) batched greedy decoding and beam search.
//!
//! Everything here is float32; the backbone never holds gradients, so a backward pass from
//! [`T5Model::teacher_forced_loss`] reaches only the prompt. Inputs are right- or left-padded
//! [B, T] ids with a 1/0 mask; the prompt is [L, d_model], or [B, L, d_model] for one per row.
//!
//! ```no_run
//! # use promptgrid_ml::{MlError, t5};
//! # use tch::{Device, Kind, Tensor};
//! # fn job(ids: &Tensor, mask: &Tensor, label: &Tensor, label_mask: &Tensor) -> Result<(), MlError> {
//! let model = t5::load("models/t5-base".as_ref(), Device::Cpu)?;
//! let prompt = (Tensor::randn([100, model.d_model()], (Kind::Float, Device::Cpu)) * 0.02)
//!     .set_requires_grad(true);
//! // Training: teacher-forced loss on the label word; the gradient reaches only the prompt.
//! model.teacher_forced_loss(Some(&prompt), ids, mask, label, label_mask)?.backward();
//! // Evaluation: the label words' first-token logits at decoding step 0.
//! let scores = tch::no_grad(|| model.label_logits(Some(&prompt), ids, mask, &[1465, 2841]))?;
//! let predictions = scores.argmax(-1, false);
//! # Ok(()) }
//! ```

mod config;
mod generate;
mod layers;
mod weights;

use std::path::Path;

use tch::{Device, Kind, Reduction, Tensor, nn};

pub use config::{Activation, OneOrMany, T5Config};
pub use generate::{BeamGeneration, BeamOptions, GenerateOptions, Generation};

use crate::precision::{self, Precision};
use crate::{MlError, MlResult};
use layers::{CrossInput, T5Stack};
use weights::Weights;

/// Labels that the loss skips, as HF's `CrossEntropyLoss(ignore_index=-100)`.
const IGNORE_INDEX: i64 = -100;

/// A loaded T5 encoder-decoder with its LM head.
#[derive(Debug)]
pub struct T5Model {
    config: T5Config,
    /// Owns the frozen backbone; its keys are the checkpoint's.
    vs: nn::VarStore,
    /// `shared.weight`, [vocab, d_model]: the encoder's and decoder's input embeddings.
    shared: Tensor,
    encoder: T5Stack,
    decoder: T5Stack,
    /// `lm_head.weight` [vocab, d_model], or `shared.weight` itself for tied checkpoints.
    lm_head: Tensor,
    /// v1.0 scales the decoder output by `d_model^-0.5` before the (tied) head.
    scale_output: bool,
}

/// The encoder's output together with the mask it was computed under (the prompt's positions
/// included), which the decoder's cross-attention needs.
#[derive(Debug)]
pub struct EncoderOutput {
    /// [B, L + T, d_model].
    pub hidden_states: Tensor,
    /// [B, L + T] float, 1 for real positions and 0 for padding.
    pub attention_mask: Tensor,
}

/// What a forward pass records besides its logits; off by default. Capturing is a switch on the
/// one forward pass, so the recorded values are exactly those that produce the logits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capture {
    /// Each decoder layer's FFN activation (the activation function's output; for gated FFNs,
    /// before the product with `wi_1`), for the ON indicator.
    pub decoder_ffn: bool,
}

/// The decoder's first step.
#[derive(Debug)]
pub struct FirstStep {
    /// [B, vocab].
    pub logits: Tensor,
    /// Per decoder layer, [B, d_ff]; empty unless [`Capture::decoder_ffn`] was set.
    pub decoder_ffn: Vec<Tensor>,
}

/// Loads a Hugging Face T5 directory: `config.json` and `model.safetensors` (or its shards).
///
/// Tensor names are transformers'. Missing, misshapen and unexpected tensors are reported
/// together, each with its name and expected shape. The `encoder.embed_tokens.weight` /
/// `decoder.embed_tokens.weight` duplicates of `shared.weight`, and a `model.` / `transformer.`
/// prefix on every key, are accepted.
pub fn load(dir: &Path, device: Device) -> MlResult<T5Model> {
    let config = T5Config::load(&dir.join("config.json"))?;
    let mut weights = Weights::read(dir, device)?;
    if !weights.contains("shared.weight") {
        weights.rename("encoder.embed_tokens.weight", "shared.weight");
    }
    let mut vs = nn::VarStore::new(device);
    let root = vs.root();
    let (v, d) = (config.vocab_size, config.d_model);
    let shared = weights.take(&(&root / "shared"), "weight", &[v, d]);
    let encoder = T5Stack::new(&root / "encoder", &mut weights, &config, false);
    let decoder = T5Stack::new(&root / "decoder", &mut weights, &config, true);
    // A checkpoint with its own head uses it even when the config says tied (transformers does
    // the same when the two differ).
    let lm_head = if weights.contains("lm_head.weight") || !config.tied() {
        weights.take(&(&root / "lm_head"), "weight", &[v, d])
    } else {
        shared.shallow_clone()
    };
    weights.finish()?;
    vs.freeze();
    Ok(T5Model {
        scale_output: config.scales_decoder_output(),
        config,
        vs,
        shared,
        encoder,
        decoder,
        lm_head,
    })
}

/// [B, K] 1/0 mask -> additive [B, 1, 1, K] (0 or the float32 minimum, as HF's eager path).
fn additive_mask(mask: &Tensor) -> Tensor {
    (mask.ones_like() - mask).unsqueeze(1).unsqueeze(1) * f64::from(f32::MIN)
}

/// Checks that `ids` is [B, T] of integers and `mask` the same shape; returns them as int64 and
/// float on `device`.
fn check_batch(
    what: &str,
    ids: &Tensor,
    mask: &Tensor,
    device: Device,
) -> MlResult<(Tensor, Tensor)> {
    if ids.dim() != 2 || ids.is_floating_point() {
        return Err(MlError::Invalid(format!(
            "{what}: expected [batch, tokens] integer ids, got {:?} of shape {:?}",
            ids.kind(),
            ids.size()
        )));
    }
    if mask.size() != ids.size() {
        return Err(MlError::Invalid(format!(
            "{what}: the mask's shape {:?} differs from the ids' {:?}",
            mask.size(),
            ids.size()
        )));
    }
    Ok((
        ids.to_kind(Kind::Int64).to_device(device),
        mask.to_kind(Kind::Float).to_device(device),
    ))
}

impl T5Model {
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Runs the attention and feed-forward products in `precision` from now on (see
    /// [`Precision`]); embeddings, norms, the relative position bias and the LM head stay
    /// float32. There is no way back from bf16: the float32 weights are gone.
    pub fn set_precision(&mut self, precision: Precision) -> MlResult<()> {
        let kind = precision.matmul_kind();
        let linears = ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"];
        for (name, weight) in self.vs.variables() {
            let mut parts = name.rsplit('.');
            let (last, module) = (parts.next(), parts.next().unwrap_or_default());
            if last == Some("weight") && linears.contains(&module) {
                if weight.kind() == Kind::BFloat16 && precision == Precision::F32 {
                    return Err(MlError::Invalid(
                        "the model's weights are already bf16; load it again for float32".into(),
                    ));
                }
                precision::convert(&weight, kind);
            }
        }
        Ok(())
    }

    /// The hidden size, which is a prompt's width.
    pub fn d_model(&self) -> i64 {
        self.config.d_model
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The frozen backbone; keys are the checkpoint's tensor names.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// `shared.weight` [vocab, d_model], e.g. to initialise a prompt from word embeddings.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.shared
    }

    /// Embeds `ids` after checking that they are in the vocabulary.
    fn embed_ids(&self, what: &str, ids: &Tensor) -> MlResult<Tensor> {
        if ids.numel() > 0 {
            let (lo, hi) = (
                ids.f_min()?.f_int64_value(&[])?,
                ids.f_max()?.f_int64_value(&[])?,
            );
            if lo < 0 || hi >= self.config.vocab_size {
                return Err(MlError::Invalid(format!(
                    "{what}: token ids range over {lo}..={hi}, outside the vocabulary of {}",
                    self.config.vocab_size
                )));
            }
        }
        Ok(Tensor::embedding(&self.shared, ids, -1, false, false))
    }

    /// `[P ; E[ids]]` and its mask `[1 ; mask]`. The prompt is [L, d] (the same for every row)
    /// or [B, L, d] (one per row, to score several prompts in one pass).
    fn encoder_inputs(
        &self,
        prompt: Option<&Tensor>,
        ids: &Tensor,
        mask: &Tensor,
    ) -> MlResult<(Tensor, Tensor)> {
        let device = self.device();
        let (ids, mask) = check_batch("encoder input", ids, mask, device)?;
        let words = self.embed_ids("encoder input", &ids)?;
        let Some(prompt) = prompt else {
            return Ok((words, mask));
        };
        let b = ids.size()[0];
        let d = self.config.d_model;
        let width = prompt.size().last().copied().unwrap_or(0);
        if width != d {
            return Err(MlError::PromptWidth {
                what: "T5 soft prompt".into(),
                got: width,
                expected: d,
            });
        }
        let prompt = match prompt.size().as_slice() {
            [l, _] => prompt.unsqueeze(0).expand([b, *l, d], false),
            [pb, _, _] if *pb == b => prompt.shallow_clone(),
            shape => {
                return Err(MlError::Invalid(format!(
                    "T5 soft prompt: expected [L, {d}] or [{b}, L, {d}], got {shape:?}"
                )));
            }
        };
        let prompt = prompt.to_kind(Kind::Float).to_device(device);
        let ones = Tensor::ones([b, prompt.size()[1]], (Kind::Float, device));
        Ok((
            Tensor::cat(&[prompt, words], 1),
            Tensor::cat(&[ones, mask], 1),
        ))
    }

    /// Runs the encoder over `[P ; E[input_ids]]` ([B, T] ids and mask; the prompt's positions
    /// are always attended).
    pub fn encode(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> MlResult<EncoderOutput> {
        self.encode_dropout(prompt, input_ids, attention_mask, 0.0)
    }

    /// [`Self::encode`] with dropout `p` (a training step).
    fn encode_dropout(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        p: f64,
    ) -> MlResult<EncoderOutput> {
        let (x, mask) = self.encoder_inputs(prompt, input_ids, attention_mask)?;
        let k = x.size()[1];
        let bias = self.encoder.position_bias(k, k, 0, self.device()) + additive_mask(&mask);
        let hidden_states = self.encoder.forward(&x, &bias, None, None, None, p);
        Ok(EncoderOutput {
            hidden_states,
            attention_mask: mask,
        })
    }

    /// Decoder output -> logits (v1.0's scaling, then the head).
    fn lm_logits(&self, h: &Tensor) -> Tensor {
        let h = if self.scale_output {
            h * (self.config.d_model as f64).powf(-0.5)
        } else {
            h.shallow_clone()
        };
        h.linear::<Tensor>(&self.lm_head, None)
    }

    fn decode(
        &self,
        enc: &EncoderOutput,
        decoder_input_ids: &Tensor,
        capture: Option<&mut Vec<Tensor>>,
        p: f64,
    ) -> MlResult<Tensor> {
        let ids = decoder_input_ids;
        let (b, s) = match ids.size().as_slice() {
            [b, s] if !ids.is_floating_point() => (*b, *s),
            shape => {
                return Err(MlError::Invalid(format!(
                    "decoder input: expected [batch, steps] integer ids, got {shape:?}"
                )));
            }
        };
        if b != enc.hidden_states.size()[0] {
            return Err(MlError::Invalid(format!(
                "decoder input: batch {b} differs from the encoder's {}",
                enc.hidden_states.size()[0]
            )));
        }
        let device = self.device();
        let x = self.embed_ids("decoder input", &ids.to_kind(Kind::Int64).to_device(device))?;
        let causal = Tensor::ones([s, s], (Kind::Float, device)).triu(1) * f64::from(f32::MIN);
        let self_bias = self.decoder.position_bias(s, s, 0, device) + causal.view([1, 1, s, s]);
        let cross_bias = additive_mask(&enc.attention_mask);
        let cross = CrossInput::Encoder {
            hidden: &enc.hidden_states,
            bias: &cross_bias,
        };
        let h = self
            .decoder
            .forward(&x, &self_bias, None, Some(cross), capture, p);
        Ok(self.lm_logits(&h))
    }

    /// Logits [B, S, vocab] for teacher-forced `decoder_input_ids` [B, S] (causal; no decoder
    /// padding mask, as transformers without `decoder_attention_mask`).
    pub fn decoder_logits(
        &self,
        enc: &EncoderOutput,
        decoder_input_ids: &Tensor,
    ) -> MlResult<Tensor> {
        self.decode(enc, decoder_input_ids, None, 0.0)
    }

    /// The decoder's first step (input `decoder_start_token_id`) over `[P ; input]`, recording
    /// what `capture` asks for.
    pub fn first_step(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        capture: Capture,
    ) -> MlResult<FirstStep> {
        let enc = self.encode(prompt, input_ids, attention_mask)?;
        let b = input_ids.size()[0];
        let start = Tensor::full(
            [b, 1],
            self.config.decoder_start_token_id(),
            (Kind::Int64, self.device()),
        );
        let mut ffn = Vec::new();
        let logits = self.decode(&enc, &start, capture.decoder_ffn.then_some(&mut ffn), 0.0)?;
        Ok(FirstStep {
            logits: logits.select(1, 0),
            decoder_ffn: ffn.iter().map(|a| a.select(1, 0)).collect(),
        })
    }

    /// Logits [B, vocab] at decoding step 0.
    pub fn first_step_logits(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> MlResult<Tensor> {
        Ok(self
            .first_step(prompt, input_ids, attention_mask, Capture::default())?
            .logits)
    }

    /// Each decoder layer's FFN activation at step 0, [B, d_ff] per layer (the ON indicator's
    /// input; binarize with `> 0`).
    pub fn decoder_ffn_activations(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> MlResult<Vec<Tensor>> {
        let capture = Capture { decoder_ffn: true };
        Ok(self
            .first_step(prompt, input_ids, attention_mask, capture)?
            .decoder_ffn)
    }

    /// Class scores [B, n_labels]: the step-0 logits of each label word's first token.
    pub fn label_logits(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        label_first_token_ids: &[i64],
    ) -> MlResult<Tensor> {
        let v = self.config.vocab_size;
        if let Some(bad) = label_first_token_ids
            .iter()
            .find(|&&id| !(0..v).contains(&id))
        {
            return Err(MlError::Invalid(format!(
                "label token id {bad} is outside the vocabulary of {v}"
            )));
        }
        let logits = self.first_step_logits(prompt, input_ids, attention_mask)?;
        let index = Tensor::from_slice(label_first_token_ids).to_device(self.device());
        Ok(logits.index_select(1, &index))
    }

    /// Mean cross-entropy over the real target tokens, as transformers' `labels=` loss:
    /// `target_ids` [B, S] with pads (`target_mask` 0) ignored, decoder input the targets
    /// shifted right behind `decoder_start_token_id`. A batch without any target token gives NaN,
    /// as in transformers.
    pub fn teacher_forced_loss(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        target_ids: &Tensor,
        target_mask: &Tensor,
    ) -> MlResult<Tensor> {
        self.teacher_forced_loss_dropout(
            prompt,
            input_ids,
            attention_mask,
            target_ids,
            target_mask,
            0.0,
        )
    }

    /// [`Self::teacher_forced_loss`] of a training step in `train()` mode: dropout `p` wherever
    /// transformers' T5 applies its `dropout_rate`, in the encoder and the decoder.
    pub fn teacher_forced_loss_dropout(
        &self,
        prompt: Option<&Tensor>,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        target_ids: &Tensor,
        target_mask: &Tensor,
        p: f64,
    ) -> MlResult<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(MlError::Invalid(format!(
                "dropout {p}: expected a probability in [0, 1)"
            )));
        }
        let (target, tmask) = check_batch("target", target_ids, target_mask, self.device())?;
        let (b, s) = (target.size()[0], target.size()[1]);
        if s == 0 {
            return Err(MlError::Invalid("target: no target tokens".into()));
        }
        if b != input_ids.size().first().copied().unwrap_or(-1) {
            return Err(MlError::Invalid(format!(
                "target: batch {b} differs from the input's {:?}",
                input_ids.size()
            )));
        }
        let labels = target.masked_fill(&tmask.eq(0.0), IGNORE_INDEX);
        let start = Tensor::full(
            [b, 1],
            self.config.decoder_start_token_id(),
            (Kind::Int64, self.device()),
        );
        let shifted = Tensor::cat(&[start, labels.narrow(1, 0, s - 1)], 1);
        let decoder_input =
            shifted.masked_fill(&shifted.eq(IGNORE_INDEX), self.config.pad_token_id());
        let enc = self.encode_dropout(prompt, input_ids, attention_mask, p)?;
        let logits = self.decode(&enc, &decoder_input, None, p)?;
        let v = self.config.vocab_size;
        Ok(logits.view([-1, v]).cross_entropy_loss::<Tensor>(
            &labels.view([-1]),
            None,
            Reduction::Mean,
            IGNORE_INDEX,
            0.0,
        ))
    }
}
