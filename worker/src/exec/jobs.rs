//! The bodies of the ML jobs. They run on a blocking thread and use the runtime handle for the
//! few async calls they make (artifacts, checkpoints, streamed metrics).

use promptgrid_common::catalog::TaskDef;
use promptgrid_common::graph::{RANDOM, TptSource};
use promptgrid_common::mask::MaskFile;
use promptgrid_common::spec::{Init, PromptSettings};
use promptgrid_common::wire::{EvalRow, JobMessage, JobOutput, MetricRow};
use promptgrid_common::{JobId, JobSpec};
use promptgrid_runtime::jobloop::JobContext;
use promptgrid_runtime::telemetry::Phase;
use std::sync::Arc;

use tch::Tensor;

use super::data_cache::DataKey;
use super::{ExecError, MlExecutor, SweepView, prompt_artifact, resolve::Split};
use promptgrid_ml::activations::{encoder_mask, t5_backbone_mask};
use promptgrid_ml::data::SplitFile;
use promptgrid_ml::t5data::default_max_target_tokens;
use promptgrid_ml::{
    Checkpoint, EVAL_BATCH, EncoderModel, MlResult, PromptFile, PromptModel, T5Backbone, T5Data,
    TaskData, TuneConfig, TuneObserver, data, random_baseline, tune,
};

/// What the train, TPT, transfer and activations jobs need from the resident model besides
/// tuning and scoring ([`PromptModel`]): its name in prompt files, a task's split encoded for
/// it, and the activation mask a prompt induces in it.
pub(super) trait JobModel: PromptModel {
    fn model_name(&self) -> &str;

    /// A task's split with room for a prompt of `prompt_len` tokens; `limit` > 0 keeps that
    /// many examples.
    fn split_data(
        &self,
        run: &Run<'_>,
        task: &TaskDef,
        split: Split,
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> Result<Arc<Self::Data>, ExecError>;

    fn activation_mask(&self, prompt: &Tensor, model: &str, task: &str) -> MlResult<MaskFile>;
}

impl JobModel for EncoderModel {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn split_data(
        &self,
        run: &Run<'_>,
        task: &TaskDef,
        split: Split,
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> Result<Arc<TaskData>, ExecError> {
        run.data(self, task, split, prompt_len, settings, limit)
    }

    fn activation_mask(&self, prompt: &Tensor, model: &str, task: &str) -> MlResult<MaskFile> {
        encoder_mask(self, prompt, model, task)
    }
}

impl JobModel for T5Backbone {
    fn model_name(&self) -> &str {
        &self.name
    }

    /// The T5 template and label words (classification) or gold texts (generation); targets
    /// are cut to the task type's default length (`default_max_target_tokens`).
    fn split_data(
        &self,
        run: &Run<'_>,
        task: &TaskDef,
        split: Split,
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> Result<Arc<T5Data>, ExecError> {
        let (path, rows) = run.exec.roots.split(task, split)?;
        let mut data = T5Data::load_rows(
            self,
            task,
            SplitFile { path: &path, rows },
            prompt_len,
            Some(settings.max_text_tokens as usize),
            default_max_target_tokens(task),
            limit,
        )?;
        data.train_width = settings.official_width();
        Ok(Arc::new(data))
    }

    fn activation_mask(&self, prompt: &Tensor, model: &str, task: &str) -> MlResult<MaskFile> {
        t5_backbone_mask(self, prompt, model, task)
    }
}

/// Training losses are streamed in groups of this many steps (and at every evaluation).
const LOSS_FLUSH: usize = 10;

/// One job being run: what it needs from the worker and the runtime.
pub(super) struct Run<'a> {
    pub exec: &'a MlExecutor,
    pub view: &'a SweepView,
    pub job: &'a JobMessage,
    pub ctx: &'a JobContext,
    pub handle: tokio::runtime::Handle,
}

impl Run<'_> {
    pub(super) fn task(&self, name: &str) -> Result<&TaskDef, ExecError> {
        self.view
            .sweep
            .task(name)
            .map(|t| &t.def)
            .ok_or_else(|| ExecError::Fatal(format!("task `{name}` is not in the sweep")))
    }

    /// A task's split, encoded for `model` with room for a prompt of `prompt_len` tokens; shared
    /// with the worker's cache of encoded splits.
    pub(super) fn data(
        &self,
        model: &EncoderModel,
        task: &TaskDef,
        split: Split,
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> Result<Arc<TaskData>, ExecError> {
        let (path, rows) = self.exec.roots.split(task, split)?;
        let cap = Some(settings.max_text_tokens as usize);
        // The job's model is the resident one, under its name in the sweep.
        let name = self.job.spec.model().unwrap_or(&model.name);
        let file = SplitFile { path: &path, rows };
        let key = DataKey::new(name, &task.name, file, prompt_len, cap, limit);
        self.exec.data.get_or_encode(key, || {
            let mut examples = data::load_split_rows(file, task)?;
            if limit > 0 {
                examples.truncate(limit);
            }
            Ok(TaskData::encode(model, task, &examples, prompt_len, cap)?)
        })
    }

    /// The bytes of the artifact a finished job of the sweep stored under `name_of(its id)`.
    pub(super) fn stored(
        &self,
        key: &str,
        name_of: fn(&JobId) -> String,
    ) -> Result<Vec<u8>, ExecError> {
        let job = self.view.graph.by_key(key).ok_or_else(|| {
            ExecError::Fatal(format!(
                "no job {key} in the sweep to take an artifact from"
            ))
        })?;
        let name = name_of(&job.id);
        self.block(self.ctx.get_artifact(&name))?.ok_or_else(|| {
            ExecError::Retryable(format!(
                "the artifact of {key} ({name}) is not in the store"
            ))
        })
    }

    /// The prompt a finished job stored, checked against `width` when given.
    pub(super) fn stored_prompt(
        &self,
        key: &str,
        width: Option<i64>,
    ) -> Result<PromptFile, ExecError> {
        let file = temp_with(&self.stored(key, prompt_artifact)?)?;
        Ok(PromptFile::load(file.path(), width)?)
    }

    /// Scores one prompt on a task's split: the eval row of a transfer or cross-model job, and
    /// the task's further metrics ([`TaskDef::also`]) as metric rows.
    pub(super) fn score<M: JobModel>(
        &self,
        model: &M,
        prompt: &Tensor,
        task_name: &str,
        split: &str,
        settings: &PromptSettings,
    ) -> Result<(EvalRow, Vec<MetricRow>), ExecError> {
        let task = self.task(task_name)?;
        let which = Split::scored(split)?;
        let data = model.split_data(self, task, which, prompt.size()[0] as usize, settings, 0)?;
        let (value, also) = self.evaluate(model, prompt, &data, task, which, 0)?;
        let eval = EvalRow {
            src_task: None,
            tgt_task: Some(task_name.to_string()),
            src_model: None,
            split: split_name(task, which).into(),
            metric: task.metric.name().into(),
            value,
            n: model.data_len(&data) as u64,
        };
        Ok((eval, also))
    }

    /// `task`'s metric of `prompt` on `data` (its split `which`), and each further metric as a
    /// metric row at `step`.
    fn evaluate<M: JobModel>(
        &self,
        model: &M,
        prompt: &Tensor,
        data: &M::Data,
        task: &TaskDef,
        which: Split,
        step: usize,
    ) -> Result<(f64, Vec<MetricRow>), ExecError> {
        let span = self.ctx.phase(Phase::Evaluate);
        span.record("task", task.name.as_str());
        span.record("split", split_name(task, which));
        span.record("examples", model.data_len(data));
        span.in_scope(|| {
            let value = model.score(prompt, data, task.metric, EVAL_BATCH)?;
            let also = task
                .also
                .iter()
                .map(|m| Ok((m.name(), model.score(prompt, data, *m, EVAL_BATCH)?)))
                .collect::<MlResult<Vec<_>>>()?;
            Ok((value, self.final_metrics(step, &also)))
        })
    }

    /// A job's closing metrics, logged at its last step.
    pub(super) fn final_metrics(&self, step: usize, values: &[(&str, f64)]) -> Vec<MetricRow> {
        let wall_s = self.ctx.wall_s();
        values
            .iter()
            .map(|&(name, value)| MetricRow {
                step: step as u64,
                name: name.into(),
                value,
                wall_s,
            })
            .collect()
    }

    pub(super) fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// Train and TPT jobs: prompt tuning, the best prompt stored, scored on the test split.
    pub(super) fn tune<M: JobModel>(&self, model: &M) -> Result<JobOutput, ExecError> {
        let (task_name, src_name, src_model, seed, settings) = match &self.job.spec {
            JobSpec::Train {
                task,
                seed,
                settings,
                ..
            } => (task, task, None, *seed, settings),
            JobSpec::Tpt {
                source: TptSource::Task { task },
                tgt,
                seed,
                settings,
                ..
            } => (tgt, task, None, *seed, settings),
            JobSpec::Tpt {
                source: TptSource::Projected { task, model, .. },
                tgt,
                seed,
                settings,
                ..
            } => (tgt, task, Some(*model), *seed, settings),
            other => {
                return Err(ExecError::Fatal(format!(
                    "{} is not a tuning job",
                    other.key()
                )));
            }
        };
        if let Some(skipped) = self.gated_out(model)? {
            return Ok(skipped);
        }
        let task = self.task(task_name)?;
        // TPT starts from the source prompt (or its projection), written where Init can
        // read it.
        let mut init_file = None;
        let init = match (self.tpt_start(model)?, &settings.init) {
            (Some(prompt), _) => {
                let file = temp_prompt(&PromptFile::new(
                    &prompt,
                    model.model_name(),
                    src_name,
                    0,
                    None,
                ))?;
                let init = Init::From(file.path().to_path_buf());
                init_file = Some(file);
                init
            }
            (None, init) => init
                .as_ref()
                .try_map(|rel| self.exec.roots.prompt_file(rel))?,
        };
        let prompt_len = match &init {
            Init::From(path) => PromptFile::load(path, Some(model.prompt_width()))?
                .prompt
                .size()[0] as usize,
            _ => settings.length as usize,
        };
        let train = model.split_data(self, task, Split::Train, prompt_len, settings, 0)?;
        let dev = model.split_data(
            self,
            task,
            Split::Dev,
            prompt_len,
            settings,
            settings.dev_examples as usize,
        )?;
        // Read before training: a broken test file must fail the job before it spends the
        // training steps, not after.
        let test = model.split_data(self, task, Split::Test, prompt_len, settings, 0)?;
        let mut cfg = TuneConfig {
            prompt_len,
            ..TuneConfig::from_settings(settings, init, seed, task.metric)
        };
        let resume = match self.block(self.ctx.load_checkpoint())? {
            Some(bytes) => {
                let file = temp_with(&bytes)?;
                Some(Checkpoint::load(file.path())?)
            }
            None => None,
        };
        let mut observer = Stream::new(self);
        observer.stop_at = self.vanilla_best(model)?;
        // A run that matched before its worker was lost resumes finished.
        if let (Some(target), Some(ck)) = (observer.stop_at, &resume)
            && ck.best_score.is_some_and(|s| s >= target)
        {
            observer.matched_at = Some(ck.best_step);
            cfg.max_steps = ck.step;
        }
        let span = self.ctx.phase(Phase::Train);
        span.record("task", task_name.as_str());
        let outcome =
            span.in_scope(|| tune(model, &train, Some(&dev), &cfg, resume, &mut observer));
        if let Ok(o) = &outcome {
            span.record("steps", o.steps);
        }
        observer.flush();
        observer.finish()?;
        let outcome = outcome?;
        drop(init_file);
        if outcome.stopped && observer.matched_at.is_none() {
            return Err(ExecError::Cancelled);
        }

        let prompt = PromptFile::new(
            &outcome.best_prompt,
            model.model_name(),
            task_name,
            outcome.steps,
            outcome.best_score,
        );
        let bytes = prompt_bytes(&prompt)?;
        let artifact = self.block(
            self.ctx
                .put_artifact(&prompt_artifact(&self.job.id), &bytes),
        )?;
        let (value, also) = self.evaluate(
            model,
            &outcome.best_prompt,
            &test,
            task,
            Split::Test,
            outcome.steps,
        )?;
        Ok(JobOutput {
            provenance: None,
            artifacts: vec![artifact],
            metrics: self
                .final_metrics(
                    outcome.steps,
                    &[
                        ("best_step", outcome.best_step as f64),
                        ("steps", outcome.steps as f64),
                    ]
                    .into_iter()
                    .chain(observer.matched_at.map(|s| ("matched_step", s as f64)))
                    .collect::<Vec<_>>(),
                )
                .into_iter()
                .chain(also)
                .collect(),
            evals: vec![EvalRow {
                src_task: Some(src_name.to_string()),
                tgt_task: Some(task_name.to_string()),
                src_model: src_model.map(String::from),
                split: split_name(task, Split::Test).into(),
                metric: task.metric.name().into(),
                value,
                n: model.data_len(&test) as u64,
            }],
        })
    }

    /// Zero-shot transfer: the source's prompt (or the random one) scored on the target.
    pub(super) fn transfer<M: JobModel>(&self, model: &M) -> Result<JobOutput, ExecError> {
        let JobSpec::Transfer {
            src,
            tgt,
            model: m,
            seed,
            split,
        } = &self.job.spec
        else {
            return Err(ExecError::Fatal("not a transfer job".into()));
        };
        let settings = self.view.sweep.settings(m, tgt);
        let prompt: Tensor = if src == RANDOM {
            // The same random prompt for every target: it depends on the seed and length only.
            random_baseline(
                settings.length as usize,
                model.prompt_width() as usize,
                *seed,
            )
            .to_device(model.device())
        } else {
            self.stored_prompt(&train_key(src, m, *seed), Some(model.prompt_width()))?
                .prompt
                .to_device(model.device())
        };
        let (eval, also) = self.score(model, &prompt, tgt, split, settings)?;
        Ok(JobOutput {
            provenance: None,
            artifacts: vec![],
            metrics: also,
            evals: vec![EvalRow {
                src_task: Some(src.to_string()),
                ..eval
            }],
        })
    }

    /// The best dev score of the target's vanilla run, for a TPT job that stops once it
    /// matches it; `None` for every other job. The vanilla run saw the same dev examples (same
    /// settings and seed), so the scores compare.
    fn vanilla_best<M: JobModel>(&self, model: &M) -> Result<Option<f64>, ExecError> {
        let JobSpec::Tpt {
            tgt,
            model: m,
            seed,
            stop_when_matched: true,
            ..
        } = &self.job.spec
        else {
            return Ok(None);
        };
        let key = train_key(tgt, m, *seed);
        let vanilla = self.stored_prompt(&key, Some(model.prompt_width()))?;
        let score = vanilla
            .metadata
            .get("score")
            .and_then(|s| s.parse::<f64>().ok());
        match score {
            Some(s) if s.is_finite() => Ok(Some(s)),
            _ => Err(ExecError::Fatal(format!(
                "the prompt of {key} records no best dev score: a TPT run cannot stop when it \
                 matches it"
            ))),
        }
    }
}

/// The key of the train job whose prompt other jobs start from or score.
pub(super) fn train_key(task: &str, model: &str, seed: u64) -> String {
    format!("train/{task}/{model}/s{seed}")
}

/// The split actually scored: a task without a test split is scored on dev.
pub(super) fn split_name(task: &TaskDef, which: Split) -> &'static str {
    match which {
        Split::Test if task.splits.test.is_some() => "test",
        Split::Train => "train",
        _ => "dev",
    }
}

/// Streams the run's metrics and checkpoints to the runtime; remembers the first error, which
/// stops the run.
pub(super) struct Stream<'a, 'b> {
    run: &'a Run<'b>,
    pending: Vec<MetricRow>,
    error: Option<ExecError>,
    /// A dev score that ends the run once reached (TPT that stops when matched).
    pub(super) stop_at: Option<f64>,
    /// The step whose evaluation reached `stop_at`.
    pub(super) matched_at: Option<usize>,
}

impl<'a, 'b> Stream<'a, 'b> {
    pub(super) fn new(run: &'a Run<'b>) -> Self {
        Stream {
            run,
            pending: Vec::new(),
            error: None,
            stop_at: None,
            matched_at: None,
        }
    }

    /// The first error the stream met (it stops the run), if any.
    pub(super) fn finish(&mut self) -> Result<(), ExecError> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// Whether the run should stop: a stream error or a cancelled job.
    pub(super) fn stop_requested(&self) -> bool {
        self.error.is_some() || self.run.ctx.is_cancelled()
    }

    pub(super) fn flush(&mut self) {
        if self.pending.is_empty() || self.error.is_some() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        if let Err(e) = self.run.block(self.run.ctx.metrics(rows)) {
            self.error = Some(e.into());
        }
    }

    pub(super) fn push(&mut self, step: usize, name: &str, value: f64) {
        let wall_s = self.run.ctx.wall_s();
        self.pending.push(MetricRow {
            step: step as u64,
            name: name.into(),
            value,
            wall_s,
        });
    }
}

impl TuneObserver for Stream<'_, '_> {
    fn on_step(&mut self, step: usize, loss: f64) {
        self.push(step, "loss", loss);
        if step.is_multiple_of(LOSS_FLUSH) {
            self.flush();
        }
    }

    fn on_eval(&mut self, step: usize, dev_score: f64, _best: bool) {
        self.push(step, "dev_score", dev_score);
        self.flush();
        if self.stop_at.is_some_and(|target| dev_score >= target) {
            self.matched_at.get_or_insert(step);
        }
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> promptgrid_ml::MlResult<()> {
        let result = (|| {
            let file = tempfile::NamedTempFile::new().map_err(io)?;
            checkpoint.save(file.path())?;
            let bytes = std::fs::read(file.path()).map_err(io)?;
            self.run
                .block(self.run.ctx.save_checkpoint(&bytes))
                .map_err(ExecError::from)
        })();
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
        Ok(())
    }

    fn should_stop(&mut self) -> bool {
        self.stop_requested() || self.matched_at.is_some()
    }
}

pub(super) fn io(e: std::io::Error) -> ExecError {
    ExecError::Retryable(format!("temporary file: {e}"))
}

pub(super) fn temp_with(bytes: &[u8]) -> Result<tempfile::NamedTempFile, ExecError> {
    let file = tempfile::NamedTempFile::new().map_err(io)?;
    std::fs::write(file.path(), bytes).map_err(io)?;
    Ok(file)
}

pub(super) fn temp_prompt(prompt: &PromptFile) -> Result<tempfile::NamedTempFile, ExecError> {
    let file = tempfile::NamedTempFile::new().map_err(io)?;
    prompt.save(file.path())?;
    Ok(file)
}

fn prompt_bytes(prompt: &PromptFile) -> Result<Vec<u8>, ExecError> {
    let file = temp_prompt(prompt)?;
    std::fs::read(file.path()).map_err(io)
}
