//! `promptgrid tune`: trains one prompt on a task, keeps the best on dev, scores it on test (dev
//! where the task has no test split), writes it, and optionally exports it as a PEFT adapter.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use promptgrid_common::catalog::{SplitRole, TaskDef};
use serde::Serialize;

use promptgrid_common::spec::PromptSettings;
use promptgrid_ml::{EVAL_BATCH, Init, MlError, MlResult, PromptFile, TuneConfig, TuneObserver};

use super::{LoadedModel, ModelArgs, OneShotModel};

/// The settings of one `promptgrid tune` run: a sweep's train job, on files.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// The task's data folder (its split files).
    pub data_dir: PathBuf,
    /// Every setting a sweep's train job has; `settings.init` is replaced by `init`.
    pub settings: PromptSettings,
    /// The start: random, vocabulary rows, or a prompt file (whose length overrides
    /// `settings.length`).
    pub init: Init<PathBuf>,
    pub seed: u64,
    /// The prompt file to write (safetensors).
    pub out: PathBuf,
    /// Also write a PEFT prompt-tuning adapter into this folder.
    pub peft: Option<PathBuf>,
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

/// `promptgrid tune`: trains a prompt on `task` as `request` says, on an encoder or on T5's
/// formulation of the task.
pub fn tune(model: &ModelArgs, task: &TaskDef, request: &TuneRequest) -> MlResult<TuneReport> {
    match model.load_any()? {
        LoadedModel::Encoder(_) if request.settings.official_padding => Err(MlError::Invalid(
            "--official-padding is the official T5 training's batches; this model is an encoder"
                .into(),
        )),
        LoadedModel::Encoder(m) => tune_with(&m, task, request),
        LoadedModel::T5(m) => tune_with(&m, task, request),
    }
}

fn tune_with<M: OneShotModel>(
    model: &M,
    task: &TaskDef,
    request: &TuneRequest,
) -> MlResult<TuneReport> {
    let cfg = TuneConfig::from_settings(
        &request.settings,
        request.init.clone(),
        request.seed,
        task.metric,
    );
    let prompt_len = match &cfg.init {
        Init::From(p) => PromptFile::load(p, Some(model.prompt_width()))?
            .prompt
            .size()[0] as usize,
        _ => cfg.prompt_len,
    };
    let split = |role: SplitRole, limit: usize| {
        model.load_split(
            task,
            &request.data_dir,
            task.splits.of(role),
            prompt_len,
            &request.settings,
            limit,
        )
    };
    let train = split(SplitRole::Train, 0)?;
    let dev = split(SplitRole::Dev, request.settings.dev_examples as usize)?;
    // Read before training: a broken test file fails the command before the training steps and
    // before a prompt file is written.
    let test = split(SplitRole::Test, 0)?;
    let mut observer = Bar {
        bar: progress_bar(cfg.max_steps),
        dev: None,
    };
    let outcome = promptgrid_ml::tune(model, &train, Some(&dev), &cfg, None, &mut observer)?;
    observer.bar.finish_and_clear();
    let out = &request.out;
    PromptFile::new(
        &outcome.best_prompt,
        model.name(),
        &task.name,
        outcome.steps,
        outcome.best_score,
    )
    .save(out)?;
    let prompt = outcome.best_prompt.to_device(model.device());
    let report = TuneReport {
        steps: outcome.steps,
        best_step: outcome.best_step,
        best_dev: outcome.best_score,
        test_split: task.splits.of(SplitRole::Test).0.to_string(),
        test_score: model.score(&prompt, &test, task.metric, EVAL_BATCH)?,
        metric: task.metric.name(),
        out: out.to_path_buf(),
    };
    if let Some(dir) = &request.peft {
        let (layers, heads) = model.peft_shape();
        PromptFile::load(out, None)?.export_peft(dir, model.name(), layers, heads)?;
    }
    Ok(report)
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
