//! The ML core: frozen BERT/RoBERTa encoders in tch with soft prompts in front, prompt tuning
//! and evaluation, datasets and prompt files. T5 lives in [`t5`].
//!
//! Layout:
//! * [`EncoderModel`] (model.rs, over bert.rs): loads a Hugging Face folder (config.rs,
//!   weights.rs, tokenizer.rs), builds [`Batch`]es of [`Encoded`] inputs
//!   ([`EncoderModel::encode_text`] for free text, [`TaskData`] for a task), and reads label
//!   scores ([`Head::Mlm`] / [`Head::Tied`]) or the full vocabulary's logits at the mask
//!   ([`EncoderModel::full_logits`], for `promptgrid inspect`), in the [`Layout::Prefix`] or
//!   [`Layout::Official`] layout. The MLM head runs only at the mask and only for the label
//!   words' decoder rows, the last layer only for the mask row, and the layers before it only
//!   for a padded batch's real positions (packing.rs; attention.rs picks attention's kernel):
//!   the encoder's work is all a step costs;
//! * [`Precision`]: bf16 matrix products (`--precision bf16`, or `auto` where the device has them
//!   natively), float32 by default;
//! * [`activations`]: the FFN activations and binary masks a prompt induces (the ON indicator);
//! * [`data`]: split files (JSONL, CSV/TSV, Parquet) to [`Example`]s, encoded as [`TaskData`];
//! * [`tune`] / [`evaluate_prompts`] (train.rs) with [`TuneConfig`], [`TuneObserver`] and
//!   resumable [`Checkpoint`]s; `tune` runs any [`PromptModel`]: encoders, and T5 through
//!   [`T5Backbone`] (t5data.rs: the T5 tokenizer, task data, decoding-based scores);
//! * [`PromptFile`]: prompt safetensors with metadata, and the PEFT adapter export;
//! * [`Projector`] (projector.rs): the cross-model prompt projector and its two training
//!   objectives, [`train_distance`] and [`train_task`];
//! * [`heap::retain_freed_memory`]: malloc settings that keep activation memory mapped;
//! * [`metrics`], [`parse_device`], and [`MlError`] for everything that can go wrong
//!   ([`MlError::is_bad_input`] tells the caller's exit code).
//!
//! The frozen model runs without dropout (eval mode) in training too: steps are deterministic
//! and equal the transformers reference the parity tests check.
//!
//! A typical job:
//! ```no_run
//! # use promptgrid_ml::*;
//! # fn job(task: &promptgrid_common::catalog::TaskDef) -> Result<(), MlError> {
//! let model = EncoderModel::load("assets/minilm".as_ref(), Head::Tied, Layout::Prefix, tch::Device::Cpu)?;
//! let cfg = TuneConfig { prompt_len: 20, ..TuneConfig::default() };
//! let train = data::load_split("data/sst2/train.jsonl".as_ref(), task)?;
//! let train = TaskData::encode(&model, task, &train, cfg.prompt_len, Some(128))?;
//! let outcome = tune(&model, &train, None, &cfg, None, &mut ())?;
//! PromptFile::new(&outcome.best_prompt, &model.name, &task.name, outcome.steps, outcome.best_score)
//!     .save("out/sst2.safetensors".as_ref())?;
//! # Ok(()) }
//! ```

pub mod activations;
mod attention;
mod bert;
pub mod bleu;
mod config;
mod cuda;
pub mod data;
mod error;
pub mod heap;
mod holdout;
mod limits;
pub mod metrics;
mod model;
mod packing;
mod precision;
pub mod projector;
mod prompt;
mod rng;
pub mod t5;
pub mod t5data;
mod template;
pub mod textmetrics;
mod tokenizer;
mod train;
mod weights;

pub use config::{EncoderConfig, Family};
pub use data::{Example, TaskData};
pub use error::{MlError, MlResult};
pub use limits::check_prompt_len;
pub use model::{Batch, Encoded, EncoderModel, parse_device};
pub use precision::{Precision, PrecisionRequest};
pub use projector::{
    PROJECTOR_FORMAT, Projector, ProjectorConfig, ProjectorMeta, ProjectorOutcome, train_distance,
    train_task,
};
pub use prompt::{PROMPT_KEY, PromptFile, random_baseline};
/// The sweep spec's own settings, which the ML code takes as they are.
pub use promptgrid_common::spec::{Head, Init, Layout};
pub use t5data::{T5Backbone, T5Data, T5Tokenizer};
pub use tokenizer::EncoderTokenizer;
pub use train::{
    Checkpoint, EVAL_BATCH, Evaluation, PromptModel, TuneConfig, TuneObserver, TuneOutcome,
    evaluate_prompts, init_prompt, tune,
};
