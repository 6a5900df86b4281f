//! One job without NATS, for `promptgrid tune`, `eval`, `inspect` and `activations`: the same ML
//! core the workers run, driven from the command line. Each works on encoders and on T5 (v1.0
//! and v1.1), told apart by config.json's `model_type` ([`is_t5`]; [`ModelArgs::load_any`]
//! loads either as a [`LoadedModel`]). Each command is one function of the [`ModelArgs`]
//! ([`tune`], [`eval`], [`inspect`], [`activation_mask`]), and its body is written once, over
//! [`OneShotModel`], which both model kinds implement (model.rs).
//!
//! Layout: tune.rs, eval.rs, inspect.rs and activations.rs, one per command.

mod activations;
mod eval;
mod inspect;
mod model;
mod tune;

use std::path::{Path, PathBuf};

use promptgrid_common::catalog::{Rows, TaskDef};
use promptgrid_common::spec::PromptSettings;
use tch::{Device, Tensor};

use promptgrid_ml::{
    EncoderModel, Head, Layout, MlError, MlResult, Precision, PromptModel, T5Backbone,
};

pub use activations::{MaskReport, activation_mask};
pub use eval::{PromptScore, eval};
pub use inspect::{Inspection, inspect};
pub use tune::{TuneReport, TuneRequest, tune};

/// The model a one-shot command loads.
#[derive(Debug, Clone)]
pub struct ModelArgs {
    pub dir: PathBuf,
    pub head: Head,
    pub layout: Layout,
    pub device: Device,
    pub precision: Precision,
}

impl ModelArgs {
    pub fn load(&self) -> MlResult<EncoderModel> {
        let mut model = EncoderModel::load(&self.dir, self.head, self.layout, self.device)?;
        model.set_precision(self.precision)?;
        Ok(model)
    }

    /// The folder as T5 with its tokenizer (head and layout do not apply).
    pub fn load_t5(&self) -> MlResult<T5Backbone> {
        let mut backbone = T5Backbone::load(&self.dir, self.device)?;
        backbone.model.set_precision(self.precision)?;
        Ok(backbone)
    }

    /// The folder as T5 when config.json says so, else as an encoder.
    pub fn load_any(&self) -> MlResult<LoadedModel> {
        Ok(if is_t5(&self.dir)? {
            LoadedModel::T5(self.load_t5()?)
        } else {
            LoadedModel::Encoder(self.load()?)
        })
    }
}

/// The model of a one-shot command: an encoder, or T5 (v1.0 or v1.1) when config.json says
/// `model_type` t5 (head and layout do not apply to it).
pub enum LoadedModel {
    Encoder(EncoderModel),
    T5(T5Backbone),
}

/// What the one-shot commands need from a model beyond [`PromptModel`]: its name and shape,
/// task splits in its own encoding, batch scores with the task's metric, and the readout of one
/// input for `inspect`.
pub(crate) trait OneShotModel: PromptModel {
    /// One input of `inspect`, encoded for this model.
    type Input;

    fn name(&self) -> &str;

    /// Layers and attention heads, for the PEFT adapter's config.
    fn peft_shape(&self) -> (i64, i64);

    /// A split of `task` from its data folder (a file stem and the rows of it to read),
    /// encoded for prompts of `prompt_len` tokens as `settings` say (`max_text_tokens`, T5's
    /// `official_padding`); `limit` 0 keeps every example.
    fn load_split(
        &self,
        task: &TaskDef,
        data_dir: &Path,
        split: (&str, Rows),
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> MlResult<Self::Data>;

    /// Every prompt's scores on `data` (the prompts share one length).
    fn score_prompts(
        &self,
        task: &TaskDef,
        prompts: &[Tensor],
        data: &Self::Data,
    ) -> MlResult<Vec<Scores>>;

    /// `inspect`'s input: text through the model's tokenizer, or ids as given.
    fn encode_input(&self, input: Input<'_>) -> MlResult<Self::Input>;

    /// The logit row read out for `input` with `prompt` (none: no prompt) in front, the input
    /// ids, and the readout position among them.
    fn readout_logits(
        &self,
        input: Self::Input,
        prompt: Option<&Tensor>,
    ) -> MlResult<(Tensor, Vec<i64>, usize)>;

    /// The vocabulary entry of `id`.
    fn token(&self, id: i64) -> String;
}

/// One prompt's scores: the task's metric and, for classification, accuracy and macro F1.
pub(crate) struct Scores {
    value: f64,
    accuracy: Option<f64>,
    macro_f1: Option<f64>,
}

/// The input of `promptgrid inspect`.
pub(crate) enum Input<'a> {
    Text(&'a str),
    Ids(Vec<i64>),
}

impl<'a> Input<'a> {
    /// Exactly one of `--text` and `--ids`.
    fn new(text: Option<&'a str>, ids: Option<Vec<i64>>) -> MlResult<Self> {
        match (text, ids) {
            (Some(t), None) => Ok(Input::Text(t)),
            (None, Some(ids)) => Ok(Input::Ids(ids)),
            _ => Err(MlError::Invalid(
                "give exactly one of --text and --ids".into(),
            )),
        }
    }
}

/// Whether a model folder holds a T5 (config.json's `model_type` is `t5`).
pub fn is_t5(dir: &Path) -> MlResult<bool> {
    Ok(model_type(dir)? == "t5")
}

/// `model_type` of a model folder's config.json (empty when absent).
fn model_type(dir: &Path) -> MlResult<String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| MlError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(config["model_type"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}
