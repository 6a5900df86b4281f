//! `promptgrid eval`: prompt files scored on a split of a task, with the task's metric.

use std::path::{Path, PathBuf};

use promptgrid_common::catalog::{Rows, SplitRole, TaskDef};
use promptgrid_common::spec::PromptSettings;
use serde::Serialize;
use tch::Tensor;

use promptgrid_ml::{MlResult, PromptFile};

use super::{LoadedModel, ModelArgs, OneShotModel};

/// One prompt's score from `promptgrid eval`.
#[derive(Debug, Serialize)]
pub struct PromptScore {
    pub prompt: PathBuf,
    pub metric: &'static str,
    pub value: f64,
    /// Classification only (null for a T5 generation task).
    pub accuracy: Option<f64>,
    /// Classification only (null for a T5 generation task).
    pub macro_f1: Option<f64>,
    pub n: usize,
}

/// Scores prompt files (they must share a length) on the split `split` of `task` (default: its
/// test split, else dev), read from `data_dir`. An encoder scores them all in one batched pass;
/// T5 one after the other, classification also reporting accuracy and macro F1.
pub fn eval(
    model: &ModelArgs,
    task: &TaskDef,
    data_dir: &Path,
    split: Option<&str>,
    prompts: &[PathBuf],
    max_text_tokens: usize,
) -> MlResult<Vec<PromptScore>> {
    // A named split is a file, read whole; by default the task's scored split.
    let split = match split {
        Some(stem) => (stem, Rows::All),
        None => task.splits.of(SplitRole::Test),
    };
    match model.load_any()? {
        LoadedModel::Encoder(m) => eval_with(&m, task, data_dir, split, prompts, max_text_tokens),
        LoadedModel::T5(m) => eval_with(&m, task, data_dir, split, prompts, max_text_tokens),
    }
}

fn eval_with<M: OneShotModel>(
    model: &M,
    task: &TaskDef,
    data_dir: &Path,
    split: (&str, Rows),
    prompts: &[PathBuf],
    max_text_tokens: usize,
) -> MlResult<Vec<PromptScore>> {
    let tensors = prompts
        .iter()
        .map(|p| {
            let file = PromptFile::load(p, Some(model.prompt_width()))?;
            Ok(file.prompt.to_device(model.device()))
        })
        .collect::<MlResult<Vec<Tensor>>>()?;
    let prompt_len = tensors.first().map_or(0, |t| t.size()[0] as usize);
    let settings = PromptSettings {
        max_text_tokens: max_text_tokens as u32,
        ..PromptSettings::default()
    };
    let data = model.load_split(task, data_dir, split, prompt_len, &settings, 0)?;
    let n = model.data_len(&data);
    Ok(prompts
        .iter()
        .zip(model.score_prompts(task, &tensors, &data)?)
        .map(|(p, s)| PromptScore {
            prompt: p.clone(),
            metric: task.metric.name(),
            value: s.value,
            accuracy: s.accuracy,
            macro_f1: s.macro_f1,
            n,
        })
        .collect())
}
