//! `promptgrid activations`: the binary FFN activation mask (the ON indicator's input) that one
//! prompt file induces, written as a mask file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use promptgrid_ml::activations::{encoder_mask, t5_backbone_mask};
use promptgrid_ml::{MlError, MlResult, PromptFile};

use super::{LoadedModel, ModelArgs};

/// What `promptgrid activations` reports.
#[derive(Debug, Serialize)]
pub struct MaskReport {
    pub model: String,
    pub task: String,
    pub layers: usize,
    pub neurons: usize,
    pub active_fraction: f64,
    pub out: PathBuf,
}

/// The activation mask (ON indicator) that the prompt file `prompt` induces in the model of
/// `args`, written to `out`: an encoder in `args.layout`, or T5 (decoder FFN at the first step)
/// when config.json says `model_type` t5, where head and layout do not apply. The mask's task
/// is the prompt file's `task` metadata, else its file stem; a T5 mask's model is the folder's
/// name.
pub fn activation_mask(args: &ModelArgs, prompt: &Path, out: &Path) -> MlResult<MaskReport> {
    let task_of = |file: &PromptFile| {
        file.metadata.get("task").cloned().unwrap_or_else(|| {
            prompt
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
        })
    };
    let mask = match args.load_any()? {
        LoadedModel::T5(backbone) => {
            let name = args
                .dir
                .file_name()
                .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
            let file = PromptFile::load(prompt, Some(backbone.d_model()))?;
            t5_backbone_mask(&backbone, &file.prompt, &name, &task_of(&file))?
        }
        LoadedModel::Encoder(model) => {
            let file = PromptFile::load(prompt, Some(model.hidden_size()))?;
            encoder_mask(&model, &file.prompt, &model.name, &task_of(&file))?
        }
    };
    mask.save(out).map_err(|e| match e {
        promptgrid_common::mask::MaskError::Io { source, .. } => MlError::io(out, source),
        other => MlError::Invalid(other.to_string()),
    })?;
    Ok(MaskReport {
        active_fraction: mask.active_fraction(),
        model: mask.model,
        task: mask.task,
        layers: mask.layers,
        neurons: mask.neurons,
        out: out.to_path_buf(),
    })
}
