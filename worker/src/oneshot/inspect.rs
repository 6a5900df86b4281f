//! `promptgrid inspect`: the readout of one input, with or without a prompt. An encoder reads
//! the whole vocabulary's logits at the mask; T5 the decoder's at the first decoding step, in
//! the same JSON shape.

use std::path::Path;

use serde::Serialize;
use tch::{Kind, Tensor};

use promptgrid_ml::{MlError, MlResult, PromptFile};

use super::{Input, LoadedModel, ModelArgs, OneShotModel};

/// What `promptgrid inspect` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub ids: Vec<i64>,
    pub tokens: Vec<String>,
    /// Index of the mask among `ids` (the readout position; slot 0 of the prompt in the
    /// official layout). T5 reads its logits from the decoder's first step, not from an input
    /// position: 0.
    pub readout_index: usize,
    pub prompt_tokens: usize,
    /// (id, token, logit), best first.
    pub top10: Vec<(i64, String, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_logits: Option<Vec<f32>>,
}

/// The readout of one input, given as exactly one of `text` (through the model's tokenizer,
/// with its special tokens) and `ids`, after the prompt file `prompt` if any; the whole logit
/// row too with `full_logits`.
pub fn inspect(
    model: &ModelArgs,
    text: Option<&str>,
    ids: Option<Vec<i64>>,
    prompt: Option<&Path>,
    full_logits: bool,
) -> MlResult<Inspection> {
    let model = model.load_any()?;
    let input = Input::new(text, ids)?;
    match model {
        LoadedModel::Encoder(m) => inspect_with(&m, input, prompt, full_logits),
        LoadedModel::T5(m) => inspect_with(&m, input, prompt, full_logits),
    }
}

fn inspect_with<M: OneShotModel>(
    model: &M,
    input: Input<'_>,
    prompt: Option<&Path>,
    full_logits: bool,
) -> MlResult<Inspection> {
    let input = model.encode_input(input)?;
    let prompt = prompt
        .map(|p| -> MlResult<Tensor> {
            let file = PromptFile::load(p, Some(model.prompt_width()))?;
            Ok(file.prompt.to_device(model.device()))
        })
        .transpose()?;
    let prompt_tokens = prompt.as_ref().map_or(0, |p| p.size()[0] as usize);
    let (row, ids, readout_index) = model.readout_logits(input, prompt.as_ref())?;
    let (values, indices) = row.topk(10.min(row.size()[0]), -1, true, true);
    let values: Vec<f64> =
        Vec::<f64>::try_from(&values.to_kind(Kind::Double)).map_err(MlError::Torch)?;
    let indices: Vec<i64> = Vec::<i64>::try_from(&indices).map_err(MlError::Torch)?;
    let top10 = indices
        .iter()
        .zip(values)
        .map(|(&i, v)| (i, model.token(i), v))
        .collect();
    let full = if full_logits {
        Some(Vec::<f32>::try_from(&row).map_err(MlError::Torch)?)
    } else {
        None
    };
    Ok(Inspection {
        tokens: ids.iter().map(|&i| model.token(i)).collect(),
        readout_index,
        prompt_tokens,
        ids,
        top10,
        full_logits: full,
    })
}
