//! The ON indicator's input (docs/design.md, "Transferability indicators"): the FFN activations a soft prompt induces in the
//! frozen model, one vector per layer, and their binary mask (`> 0`) as a [`MaskFile`].
//!
//! Capture is a switch on the ordinary forward pass (the `observe` hook of
//! [`EncoderModel::readout_hidden_with`], [`Capture`] for T5), so the recorded values are those
//! the model computes for its readout, in the model's own layout:
//! * encoders: the input is the prompt plus the start token, read at the mask. The probe ids
//!   are `[start, mask]` (`[CLS] [MASK]`, `<s> <mask>`, no end token). With [`Layout::Prefix`](super::Layout::Prefix)
//!   the sequence is `[P ; E[start] ; E[mask]]`, read at the mask; with [`Layout::Official`](super::Layout::Official) the
//!   mask takes prompt slot 0, so it is `[E[mask], P[1..], E[start]]`, read at slot 0. Every
//!   layer's FFN activation (after the activation function) at that position;
//! * T5: the encoder input is `[P ; <extra_id_0>]`, with no end-of-sequence token, as the
//!   official probe (formatter/activate_neuronPromptT5Formatter.py:40-46), and the activations
//!   are each decoder layer's FFN at the first decoding step (activate_neuron_T5.py:187, 258).
//!   The official hook is on `DenseReluDense.wi`, before the ReLU: its `> 0` mask is the same.

use tch::{Device, Kind, Tensor};

use promptgrid_common::mask::MaskFile;

use super::error::{MlError, MlResult};
use super::model::EncoderModel;
use super::t5::{Capture, T5Model};
use super::t5data::T5Backbone;

/// The token the official T5 probe puts after the prompt.
pub const T5_PROBE_TOKEN: &str = "<extra_id_0>";

/// Checks that `prompt` is one `[L, d]` prompt of `width` with at least one token.
fn check_prompt(prompt: &Tensor, width: i64) -> MlResult<()> {
    let size = prompt.size();
    match size.as_slice() {
        [_, w] if *w != width => Err(MlError::PromptWidth {
            what: format!("activation prompt (shape {size:?})"),
            got: *w,
            expected: width,
        }),
        [0, _] => Err(MlError::Invalid(
            "activation prompt: an empty prompt (at least one token is needed)".into(),
        )),
        [_, _] => Ok(()),
        _ => Err(MlError::Invalid(format!(
            "activation prompt: expected one [L, {width}] prompt, got shape {size:?}"
        ))),
    }
}

/// The probe ids `[start, mask]`: the tokenizer's own special tokens around its mask token, cut
/// after the mask so that no end token follows.
fn probe_ids(model: &EncoderModel) -> MlResult<Vec<i64>> {
    let tok = &model.tokenizer;
    let mut ids = tok.encode(&tok.mask_token)?;
    match ids.iter().position(|&i| i == tok.mask_id) {
        Some(mask) if mask > 0 => {
            ids.truncate(mask + 1);
            Ok(ids)
        }
        _ => Err(MlError::Invalid(format!(
            "model {}: the tokenizer puts no start token before {} ({ids:?}), so there is no \
             [start, mask] input to read activations from",
            model.name, tok.mask_token
        ))),
    }
}

fn no_layers(model: &str, what: &str) -> MlError {
    MlError::Invalid(format!(
        "model {model} has no FFN layers ({what} is 0): there is no activation mask to compute"
    ))
}

/// Per encoder layer, the FFN activation (after the activation function) at the readout
/// position for the input "prompt + start token" (see the module), as [I] float32 on the CPU.
pub fn encoder_activations(model: &EncoderModel, prompt: &Tensor) -> MlResult<Vec<Tensor>> {
    check_prompt(prompt, model.hidden_size())?;
    if model.config.num_hidden_layers <= 0 {
        return Err(no_layers(&model.name, "num_hidden_layers"));
    }
    let encoded = model.encode_ids(probe_ids(model)?)?;
    let batch = model.batch(&[&encoded]);
    let prompt_len = prompt.size()[0] as usize;
    let row = model.readout_position(prompt_len, encoded.mask_index) as i64;
    let last = model.config.num_hidden_layers as usize - 1;
    let prompt = prompt.to_device(model.device);
    let mut acts = Vec::new();
    // Only the captured activations are wanted; the readout's hidden state is dropped.
    let _hidden = tch::no_grad(|| {
        model.readout_hidden_with(&prompt, &batch, &mut |layer, act| {
            // The last layer computes only the readout row: [1, 1, I].
            let at = if layer == last { 0 } else { row };
            acts.push(
                act.get(0)
                    .get(at)
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float),
            );
        })
    })?;
    if acts.len() != last + 1 {
        return Err(MlError::Invalid(format!(
            "model {}: captured {} FFN activations for {} layers",
            model.name,
            acts.len(),
            last + 1
        )));
    }
    Ok(acts)
}

/// Per T5 decoder layer, the FFN activation (the activation function's output; before the gate
/// product in gated FFNs) at the first decoding step for the encoder input `[P ; probe]`, as
/// [d_ff] float32 on the CPU. `probe` is the id of [`T5_PROBE_TOKEN`] ([`t5_probe_id`]).
pub fn t5_activations(model: &T5Model, prompt: &Tensor, probe: i64) -> MlResult<Vec<Tensor>> {
    check_prompt(prompt, model.d_model())?;
    if !(0..model.config().vocab_size).contains(&probe) {
        return Err(MlError::Invalid(format!(
            "T5 probe id {probe} is outside the vocabulary (0..{})",
            model.config().vocab_size
        )));
    }
    let ids = Tensor::from_slice(&[probe]).view([1, 1]);
    let mask = ids.ones_like();
    let step = tch::no_grad(|| {
        model.first_step(Some(prompt), &ids, &mask, Capture { decoder_ffn: true })
    })?;
    if step.decoder_ffn.is_empty() {
        return Err(no_layers("T5", "num_decoder_layers"));
    }
    Ok(step
        .decoder_ffn
        .iter()
        .map(|a| a.get(0).to_device(Device::Cpu).to_kind(Kind::Float))
        .collect())
}

/// Binarizes per-layer activations with `> 0` and packs them.
pub fn mask_of(activations: &[Tensor], model: &str, task: &str) -> MlResult<MaskFile> {
    // NaN is never `> 0`: a NaN activation would pass as an inactive neuron in a
    // plausible-looking mask.
    if let Some(layer) = activations
        .iter()
        .position(|a| a.isnan().any().int64_value(&[]) != 0)
    {
        return Err(MlError::Invalid(format!(
            "model {model}, task {task}: layer {layer}'s activations hold NaN, so no mask is \
             written; check the prompt and the model's weights"
        )));
    }
    let layers = activations
        .iter()
        .map(|a| Vec::<bool>::try_from(&a.gt(0.0).flatten(0, -1)).map_err(MlError::Torch))
        .collect::<MlResult<Vec<_>>>()?;
    MaskFile::pack(model, task, &layers).map_err(|e| MlError::Invalid(e.to_string()))
}

/// The activation mask `prompt` ([L, d]) induces in an encoder, in the model's layout;
/// `model_name` and `task` go into the mask's metadata.
pub fn encoder_mask(
    model: &EncoderModel,
    prompt: &Tensor,
    model_name: &str,
    task: &str,
) -> MlResult<MaskFile> {
    mask_of(&encoder_activations(model, prompt)?, model_name, task)
}

/// The id of [`T5_PROBE_TOKEN`] in `backbone`'s tokenizer.
pub fn t5_probe_id(backbone: &T5Backbone) -> MlResult<i64> {
    backbone.tokenizer.token_id(T5_PROBE_TOKEN).ok_or_else(|| {
        MlError::Invalid(format!(
            "model {}: tokenizer.json has no {T5_PROBE_TOKEN}, which the T5 activation probe \
             (prompt, then {T5_PROBE_TOKEN}) needs",
            backbone.name
        ))
    })
}

/// The activation mask `prompt` ([L, d_model]) induces in T5's decoder at the first step, for
/// the encoder input `[P ; probe]`.
pub fn t5_mask(
    model: &T5Model,
    prompt: &Tensor,
    probe: i64,
    model_name: &str,
    task: &str,
) -> MlResult<MaskFile> {
    mask_of(&t5_activations(model, prompt, probe)?, model_name, task)
}

/// [`t5_mask`] with the backbone's own `<extra_id_0>` as the probe.
pub fn t5_backbone_mask(
    backbone: &T5Backbone,
    prompt: &Tensor,
    model_name: &str,
    task: &str,
) -> MlResult<MaskFile> {
    t5_mask(
        &backbone.model,
        prompt,
        t5_probe_id(backbone)?,
        model_name,
        task,
    )
}
