//! One job without NATS, for `promptgrid tune`, `eval`, `inspect` and `activations`: the same ML
//! core the workers run, driven from the command line. Each works on encoders and on T5 (v1.0
//! and v1.1), told apart by config.json's `model_type` ([`is_t5`]).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use promptgrid_common::catalog::TaskDef;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use promptgrid_ml::activations::{encoder_mask, t5_backbone_mask};
use promptgrid_ml::t5data::default_max_target_tokens;
use promptgrid_ml::{
    EncoderModel, Family, Head, Layout, MlError, MlResult, Precision, PromptFile, PromptInit,
    PromptModel, T5Backbone, T5Data, TaskData, TuneConfig, TuneObserver, data, evaluate_prompts,
    metrics, tune,
};

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
}

/// Whether a model folder holds a T5 (config.json's `model_type` is `t5`).
pub fn is_t5(dir: &Path) -> MlResult<bool> {
    Ok(model_type(dir)? == "t5")
}

/// A split of `task` from its data folder, encoded for `model`; `limit` 0 keeps every example.
pub fn load_task_split(
    model: &EncoderModel,
    task: &TaskDef,
    data_dir: &Path,
    stem: &str,
    prompt_len: usize,
    max_text_tokens: usize,
    limit: usize,
) -> MlResult<TaskData> {
    let mut examples = data::load_split(&data::find_split(data_dir, stem)?, task)?;
    if limit > 0 {
        examples.truncate(limit);
    }
    let template =
        task.template.encoder.as_deref().ok_or_else(|| {
            MlError::Invalid(format!("task {} has no encoder template", task.name))
        })?;
    let words = task
        .encoder_words(model.family == Family::Bert)
        .ok_or_else(|| MlError::Invalid(format!("task {} has no verbalizer", task.name)))?;
    TaskData::encode_with(
        model,
        template,
        words,
        &examples,
        prompt_len,
        Some(max_text_tokens),
    )
}

/// What `promptgrid tune` reports.
#[derive(Debug, Serialize)]
pub struct TuneReport {
    pub steps: usize,
    pub best_step: usize,
    pub best_dev: Option<f64>,
    pub test_split: String,
    pub test_score: f64,
    pub metric: &'static str,
    pub out: PathBuf,
}

/// A progress bar over the steps, with the last loss and dev score.
struct Bar {
    bar: ProgressBar,
    dev: Option<f64>,
}

impl TuneObserver for Bar {
    fn on_step(&mut self, step: usize, loss: f64) {
        self.bar.set_position(step as u64);
        let dev = self.dev.map_or(String::new(), |d| format!(" dev {d:.4}"));
        self.bar.set_message(format!("loss {loss:.4}{dev}"));
    }

    fn on_eval(&mut self, _step: usize, dev_score: f64, _best: bool) {
        self.dev = Some(dev_score);
    }
}

/// Trains one prompt on `task`, keeps the best on dev, scores it on test (dev where the task
/// has no test split), and writes it to `out`.
pub fn tune_one(
    model: &EncoderModel,
    task: &TaskDef,
    data_dir: &Path,
    cfg: &TuneConfig,
    max_text_tokens: usize,
    dev_examples: usize,
    out: &Path,
) -> MlResult<TuneReport> {
    tune_and_save(
        model,
        &model.name,
        task,
        cfg,
        dev_examples,
        out,
        |stem, limit, len| {
            load_task_split(model, task, data_dir, stem, len, max_text_tokens, limit)
        },
    )
}

/// What `tune_one` and `tune_one_t5` share: `split(stem, limit, prompt_len)` reads a split.
fn tune_and_save<M: PromptModel>(
    model: &M,
    model_name: &str,
    task: &TaskDef,
    cfg: &TuneConfig,
    dev_examples: usize,
    out: &Path,
    split: impl Fn(&str, usize, usize) -> MlResult<M::Data>,
) -> MlResult<TuneReport> {
    let prompt_len = match &cfg.init {
        PromptInit::From(p) => PromptFile::load(p, Some(model.prompt_width()))?
            .prompt
            .size()[0] as usize,
        _ => cfg.prompt_len,
    };
    let train = split(&task.splits.train, 0, prompt_len)?;
    let dev = split(&task.splits.dev, dev_examples, prompt_len)?;
    // Read before training: a broken test file fails the command before the training steps and
    // before a prompt file is written.
    let test_stem = task.splits.test.as_deref().unwrap_or(&task.splits.dev);
    let test = split(test_stem, 0, prompt_len)?;
    let mut observer = Bar {
        bar: progress_bar(cfg.max_steps),
        dev: None,
    };
    let outcome = tune(model, &train, Some(&dev), cfg, None, &mut observer)?;
    observer.bar.finish_and_clear();
    PromptFile::new(
        &outcome.best_prompt,
        model_name,
        &task.name,
        outcome.steps,
        outcome.best_score,
    )
    .save(out)?;
    let prompt = outcome.best_prompt.to_device(model.device());
    Ok(TuneReport {
        steps: outcome.steps,
        best_step: outcome.best_step,
        best_dev: outcome.best_score,
        test_split: test_stem.to_string(),
        test_score: model.score(&prompt, &test, task.metric, 64)?,
        metric: task.metric.name(),
        out: out.to_path_buf(),
    })
}

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

/// Scores prompt files on a split of `task`, all in one batched pass (they must share a length).
pub fn eval_prompts(
    model: &EncoderModel,
    task: &TaskDef,
    data_dir: &Path,
    split: &str,
    prompts: &[PathBuf],
    max_text_tokens: usize,
) -> MlResult<Vec<PromptScore>> {
    let files: Vec<PromptFile> = prompts
        .iter()
        .map(|p| PromptFile::load(p, Some(model.hidden_size())))
        .collect::<MlResult<_>>()?;
    let tensors: Vec<Tensor> = files
        .iter()
        .map(|f| f.prompt.to_device(model.device))
        .collect();
    let prompt_len = tensors.first().map_or(0, |t| t.size()[0] as usize);
    let data = load_task_split(model, task, data_dir, split, prompt_len, max_text_tokens, 0)?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let evals = evaluate_prompts(model, &refs, &data, 64)?;
    Ok(prompts
        .iter()
        .zip(evals)
        .map(|(p, e)| PromptScore {
            prompt: p.clone(),
            metric: task.metric.name(),
            value: e.score(task.metric),
            accuracy: Some(e.accuracy),
            macro_f1: Some(e.macro_f1),
            n: data.len(),
        })
        .collect())
}

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

/// The readout of one input: text through tokenizer.json (with its special tokens), or ids.
pub fn inspect(
    model: &EncoderModel,
    text: Option<&str>,
    ids: Option<Vec<i64>>,
    prompt: Option<&Path>,
    full_logits: bool,
) -> MlResult<Inspection> {
    let encoded = match (text, ids) {
        (Some(t), None) => model.encode_text(t)?,
        (None, Some(ids)) => model.encode_ids(ids)?,
        _ => {
            return Err(MlError::Invalid(
                "give exactly one of --text and --ids".into(),
            ));
        }
    };
    let prompt = match prompt {
        Some(p) => PromptFile::load(p, Some(model.hidden_size()))?
            .prompt
            .to_device(model.device),
        None => model.no_prompt(),
    };
    let batch = model.batch(&[&encoded]);
    let logits = tch::no_grad(|| model.full_logits(&prompt, &batch))?
        .to_device(Device::Cpu)
        .to_kind(Kind::Float);
    readout(
        &logits.get(0),
        full_logits,
        |i| model.tokenizer.id_to_token(i),
        encoded.ids,
        encoded.mask_index,
        prompt.size()[0] as usize,
    )
}

/// A split of `task` from its data folder, encoded for T5 with the task's T5 template and label
/// words (targets without `</s>`); `limit` 0 keeps every example.
pub fn load_t5_split(
    backbone: &T5Backbone,
    task: &TaskDef,
    data_dir: &Path,
    stem: &str,
    prompt_len: usize,
    max_text_tokens: usize,
    limit: usize,
) -> MlResult<T5Data> {
    T5Data::load(
        backbone,
        task,
        &data::find_split(data_dir, stem)?,
        prompt_len,
        Some(max_text_tokens),
        default_max_target_tokens(task),
        limit,
    )
}

/// [`tune_one`] on T5: trains a prompt on `task`'s T5 formulation, keeps the best on dev, and
/// scores it on test (dev where the task has no test split).
pub fn tune_one_t5(
    backbone: &T5Backbone,
    task: &TaskDef,
    data_dir: &Path,
    cfg: &TuneConfig,
    max_text_tokens: usize,
    dev_examples: usize,
    out: &Path,
) -> MlResult<TuneReport> {
    tune_and_save(
        backbone,
        &backbone.name,
        task,
        cfg,
        dev_examples,
        out,
        |stem, limit, len| {
            load_t5_split(backbone, task, data_dir, stem, len, max_text_tokens, limit)
        },
    )
}

/// [`eval_prompts`] on T5: each prompt file scored on a split of `task` with its metric;
/// classification also reports accuracy and macro F1.
pub fn eval_prompts_t5(
    backbone: &T5Backbone,
    task: &TaskDef,
    data_dir: &Path,
    split: &str,
    prompts: &[PathBuf],
    max_text_tokens: usize,
) -> MlResult<Vec<PromptScore>> {
    let files: Vec<PromptFile> = prompts
        .iter()
        .map(|p| PromptFile::load(p, Some(backbone.d_model())))
        .collect::<MlResult<_>>()?;
    let prompt_len = files.first().map_or(0, |f| f.prompt.size()[0] as usize);
    let data = load_t5_split(
        backbone,
        task,
        data_dir,
        split,
        prompt_len,
        max_text_tokens,
        0,
    )?;
    prompts
        .iter()
        .zip(&files)
        .map(|(path, file)| {
            let prompt = file.prompt.to_device(backbone.device());
            let (value, accuracy, macro_f1) = match task.kind {
                promptgrid_common::catalog::TaskKind::Classification => {
                    let predictions = backbone.classify(&prompt, &data, 64)?;
                    let accuracy = metrics::accuracy(&predictions, &data.labels);
                    let macro_f1 =
                        metrics::macro_f1(&predictions, &data.labels, data.label_ids.len());
                    let value = match task.metric {
                        promptgrid_common::catalog::Metric::MacroF1 => macro_f1,
                        _ => accuracy,
                    };
                    (value, Some(accuracy), Some(macro_f1))
                }
                promptgrid_common::catalog::TaskKind::Generation => {
                    (backbone.score(&prompt, &data, task.metric, 64)?, None, None)
                }
            };
            Ok(PromptScore {
                prompt: path.clone(),
                metric: task.metric.name(),
                value,
                accuracy,
                macro_f1,
                n: data.len(),
            })
        })
        .collect()
}

/// [`inspect`] on T5: the encoder input is the text as T5's tokenizer encodes it (with `</s>`)
/// or the ids as given, after the prompt; the logits are the decoder's at the first decoding
/// step (input `decoder_start_token_id`), the step T5 classification is scored on.
pub fn inspect_t5(
    backbone: &T5Backbone,
    text: Option<&str>,
    ids: Option<Vec<i64>>,
    prompt: Option<&Path>,
    full_logits: bool,
) -> MlResult<Inspection> {
    let ids = match (text, ids) {
        (Some(t), None) => backbone.tokenizer.encode(t)?,
        (None, Some(ids)) => ids,
        _ => {
            return Err(MlError::Invalid(
                "give exactly one of --text and --ids".into(),
            ));
        }
    };
    let vocab = backbone.model.config().vocab_size;
    if ids.is_empty() || ids.iter().any(|i| !(0..vocab).contains(i)) {
        return Err(MlError::Invalid(format!(
            "T5 input ids {ids:?}: need at least one id, each in 0..{vocab}"
        )));
    }
    let prompt = prompt
        .map(|p| -> MlResult<Tensor> {
            Ok(PromptFile::load(p, Some(backbone.d_model()))?
                .prompt
                .to_device(backbone.device()))
        })
        .transpose()?;
    let device = backbone.device();
    let input = Tensor::from_slice(&ids)
        .view([1, ids.len() as i64])
        .to(device);
    let mask = input.ones_like();
    let logits = tch::no_grad(|| {
        backbone
            .model
            .first_step_logits(prompt.as_ref(), &input, &mask)
    })?
    .to_device(Device::Cpu)
    .to_kind(Kind::Float);
    readout(
        &logits.get(0),
        full_logits,
        |i| backbone.tokenizer.token(i),
        ids.clone(),
        0,
        prompt.as_ref().map_or(0, |p| p.size()[0] as usize),
    )
}

/// The top 10 of a logit row and, when asked, the whole row, as an [`Inspection`].
fn readout(
    row: &Tensor,
    full_logits: bool,
    token: impl Fn(i64) -> String,
    ids: Vec<i64>,
    readout_index: usize,
    prompt_tokens: usize,
) -> MlResult<Inspection> {
    let (values, indices) = row.topk(10.min(row.size()[0]), -1, true, true);
    let values: Vec<f64> =
        Vec::<f64>::try_from(&values.to_kind(Kind::Double)).map_err(MlError::Torch)?;
    let indices: Vec<i64> = Vec::<i64>::try_from(&indices).map_err(MlError::Torch)?;
    let top10 = indices
        .iter()
        .zip(values)
        .map(|(&i, v)| (i, token(i), v))
        .collect();
    let full = if full_logits {
        Some(Vec::<f32>::try_from(row).map_err(MlError::Torch)?)
    } else {
        None
    };
    Ok(Inspection {
        tokens: ids.iter().map(|&i| token(i)).collect(),
        readout_index,
        prompt_tokens,
        ids,
        top10,
        full_logits: full,
    })
}

/// The progress bar of a tuning run of `steps` steps.
fn progress_bar(steps: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

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

/// The activation mask (ON indicator) that the prompt file `prompt` induces in the model of
/// `args`, written to `out`: an encoder in `args.layout`, or T5 (decoder FFN at the first step)
/// when config.json says `model_type` t5, where head and layout do not apply. The mask's task
/// is the prompt file's `task` metadata, else its file stem.
pub fn activation_mask(args: &ModelArgs, prompt: &Path, out: &Path) -> MlResult<MaskReport> {
    let name = args
        .dir
        .file_name()
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    let task_of = |file: &PromptFile| {
        file.metadata.get("task").cloned().unwrap_or_else(|| {
            prompt
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
        })
    };
    let mask = if is_t5(&args.dir)? {
        let backbone = args.load_t5()?;
        let file = PromptFile::load(prompt, Some(backbone.d_model()))?;
        t5_backbone_mask(&backbone, &file.prompt, &name, &task_of(&file))?
    } else {
        let model = args.load()?;
        let file = PromptFile::load(prompt, Some(model.hidden_size()))?;
        encoder_mask(&model, &file.prompt, &model.name, &task_of(&file))?
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
