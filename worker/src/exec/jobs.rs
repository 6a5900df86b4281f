//! The bodies of the ML jobs. They run on a blocking thread and use the runtime handle for the
//! few async calls they make (artifacts, checkpoints, streamed metrics).

use promptgrid_common::JobSpec;
use promptgrid_common::catalog::TaskDef;
use promptgrid_common::graph::{RANDOM, TptSource};
use promptgrid_common::spec::{Init, PromptSettings};
use promptgrid_common::wire::{EvalRow, JobMessage, JobOutput, MetricRow};
use promptgrid_coordinator::jobloop::JobContext;
use tch::Tensor;

use super::{ExecError, MlExecutor, SweepView, prompt_artifact, resolve::Split};
use crate::ml::{
    Checkpoint, EncoderModel, Family, PromptFile, PromptInit, TaskData, TuneConfig, TuneObserver,
    data, evaluate_prompts, init_prompt, tune,
};

/// Rows per forward pass when scoring.
const EVAL_BATCH: usize = 64;
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
    fn task(&self, name: &str) -> Result<&TaskDef, ExecError> {
        self.view
            .sweep
            .task(name)
            .map(|t| &t.def)
            .ok_or_else(|| ExecError::Fatal(format!("task `{name}` is not in the sweep")))
    }

    /// A task's split, encoded for `model` with room for a prompt of `prompt_len` tokens.
    fn data(
        &self,
        model: &EncoderModel,
        task: &TaskDef,
        split: Split,
        prompt_len: usize,
        settings: &PromptSettings,
        limit: usize,
    ) -> Result<TaskData, ExecError> {
        let path = self.exec.roots.split(task, split)?;
        let mut examples = data::load_split(&path, task)?;
        if limit > 0 {
            examples.truncate(limit);
        }
        let template = task.template.encoder.as_deref().ok_or_else(|| {
            ExecError::Fatal(format!(
                "task `{}` has no encoder template (T5 only)",
                task.name
            ))
        })?;
        let words = task
            .encoder_words(model.family == Family::Bert)
            .ok_or_else(|| ExecError::Fatal(format!("task `{}` has no verbalizer", task.name)))?;
        let cap = Some(settings.max_text_tokens as usize);
        Ok(TaskData::encode_with(
            model, template, words, &examples, prompt_len, cap,
        )?)
    }

    /// The prompt a finished job stored, checked against the model's width.
    fn stored_prompt(&self, key: &str, model: &EncoderModel) -> Result<PromptFile, ExecError> {
        let job = self.view.graph.by_key(key).ok_or_else(|| {
            ExecError::Fatal(format!("no job {key} in the sweep to take a prompt from"))
        })?;
        let name = prompt_artifact(&job.id);
        let bytes = self.block(self.ctx.get_artifact(&name))?.ok_or_else(|| {
            ExecError::Retryable(format!("the prompt of {key} ({name}) is not in the store"))
        })?;
        let file = temp_with(&bytes)?;
        Ok(PromptFile::load(file.path(), Some(model.hidden_size()))?)
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// Train and TPT jobs: prompt tuning, the best prompt stored, scored on the test split.
    pub fn tune(&self, model: &EncoderModel) -> Result<JobOutput, ExecError> {
        let (task_name, src_name, seed, settings, from) = match &self.job.spec {
            JobSpec::Train {
                task,
                seed,
                settings,
                ..
            } => (task, task, *seed, settings, None),
            JobSpec::Tpt {
                source: TptSource::Task { task },
                tgt,
                model: m,
                seed,
                settings,
            } => (
                tgt,
                task,
                *seed,
                settings,
                Some(format!("train/{task}/{m}/s{seed}")),
            ),
            other => {
                return Err(ExecError::Fatal(format!(
                    "{} is not supported by this worker yet",
                    other.key()
                )));
            }
        };
        let task = self.task(task_name)?;
        // TPT starts from the source prompt, written where PromptInit can read it.
        let mut init_file = None;
        let init = match (&from, &settings.init) {
            (Some(key), _) => {
                let prompt = self.stored_prompt(key, model)?;
                let file = temp_prompt(&prompt)?;
                let init = PromptInit::From(file.path().to_path_buf());
                init_file = Some(file);
                init
            }
            (None, Init::Random) => PromptInit::Random,
            (None, Init::Vocab) => PromptInit::Vocab,
            (None, Init::From(rel)) => PromptInit::From(self.exec.roots.prompt_file(rel)?),
        };
        let prompt_len = match &init {
            PromptInit::From(path) => PromptFile::load(path, Some(model.hidden_size()))?
                .prompt
                .size()[0] as usize,
            _ => settings.length as usize,
        };
        let train = self.data(model, task, Split::Train, prompt_len, settings, 0)?;
        let dev = self.data(
            model,
            task,
            Split::Dev,
            prompt_len,
            settings,
            settings.dev_examples as usize,
        )?;
        let cfg = TuneConfig {
            prompt_len,
            lr: settings.learning_rate,
            weight_decay: 0.0,
            batch_size: settings.batch_size as usize,
            grad_accum: settings.grad_accum as usize,
            max_steps: settings.max_steps as usize,
            eval_every: settings.eval_every as usize,
            eval_batch_size: EVAL_BATCH,
            checkpoint_every: settings.checkpoint_every as usize,
            seed,
            init,
            metric: task.metric,
        };
        let resume = match self.block(self.ctx.load_checkpoint())? {
            Some(bytes) => {
                let file = temp_with(&bytes)?;
                Some(Checkpoint::load(file.path())?)
            }
            None => None,
        };
        let mut observer = Stream {
            run: self,
            pending: Vec::new(),
            error: None,
        };
        let outcome = tune(model, &train, Some(&dev), &cfg, resume, &mut observer);
        observer.flush();
        if let Some(e) = observer.error.take() {
            return Err(e);
        }
        let outcome = outcome?;
        drop(init_file);
        if outcome.stopped {
            return Err(ExecError::Cancelled);
        }

        let prompt = PromptFile::new(
            &outcome.best_prompt,
            &model.name,
            task_name,
            outcome.steps,
            outcome.best_score,
        );
        let bytes = prompt_bytes(&prompt)?;
        let artifact = self.block(
            self.ctx
                .put_artifact(&prompt_artifact(&self.job.id), &bytes),
        )?;
        let test = self.data(model, task, Split::Test, prompt_len, settings, 0)?;
        let eval = evaluate_prompts(model, &[&outcome.best_prompt], &test, EVAL_BATCH)?;
        let wall_s = self.ctx.wall_s();
        let steps = outcome.steps as u64;
        let row = |name: &str, value: f64| MetricRow {
            step: steps,
            name: name.into(),
            value,
            wall_s,
        };
        Ok(JobOutput {
            artifacts: vec![artifact],
            metrics: vec![
                row("best_step", outcome.best_step as f64),
                row("steps", outcome.steps as f64),
            ],
            evals: vec![EvalRow {
                src_task: Some(src_name.clone()),
                tgt_task: Some(task_name.clone()),
                src_model: None,
                split: split_name(task, Split::Test).into(),
                metric: task.metric.name().into(),
                value: eval[0].score(task.metric),
                n: test.len() as u64,
            }],
        })
    }

    /// Zero-shot transfer: the source's prompt (or the random one) scored on the target.
    pub fn transfer(&self, model: &EncoderModel) -> Result<JobOutput, ExecError> {
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
        let task = self.task(tgt)?;
        let settings = self.view.sweep.settings(m, tgt);
        let prompt: Tensor = if src == RANDOM {
            // The same random prompt for every target: it depends on the seed and length only.
            init_prompt(model, &PromptInit::Random, settings.length as usize, *seed)?
        } else {
            self.stored_prompt(&format!("train/{src}/{m}/s{seed}"), model)?
                .prompt
                .to_device(model.device)
        };
        let which = Split::scored(split)?;
        let data = self.data(model, task, which, prompt.size()[0] as usize, settings, 0)?;
        let eval = evaluate_prompts(model, &[&prompt], &data, EVAL_BATCH)?;
        Ok(JobOutput {
            artifacts: vec![],
            metrics: vec![],
            evals: vec![EvalRow {
                src_task: Some(src.clone()),
                tgt_task: Some(tgt.clone()),
                src_model: None,
                split: split_name(task, which).into(),
                metric: task.metric.name().into(),
                value: eval[0].score(task.metric),
                n: data.len() as u64,
            }],
        })
    }
}

/// The split actually scored: a task without a test split is scored on dev.
fn split_name(task: &TaskDef, which: Split) -> &'static str {
    match which {
        Split::Test if task.splits.test.is_some() => "test",
        Split::Train => "train",
        _ => "dev",
    }
}

/// Streams the run's metrics and checkpoints to the runtime; remembers the first error, which
/// stops the run.
struct Stream<'a, 'b> {
    run: &'a Run<'b>,
    pending: Vec<MetricRow>,
    error: Option<ExecError>,
}

impl Stream<'_, '_> {
    fn flush(&mut self) {
        if self.pending.is_empty() || self.error.is_some() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        if let Err(e) = self.run.block(self.run.ctx.metrics(rows)) {
            self.error = Some(e.into());
        }
    }

    fn push(&mut self, step: usize, name: &str, value: f64) {
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
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> crate::ml::MlResult<()> {
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
        self.error.is_some() || self.run.ctx.is_cancelled()
    }
}

fn io(e: std::io::Error) -> ExecError {
    ExecError::Retryable(format!("temporary file: {e}"))
}

fn temp_with(bytes: &[u8]) -> Result<tempfile::NamedTempFile, ExecError> {
    let file = tempfile::NamedTempFile::new().map_err(io)?;
    std::fs::write(file.path(), bytes).map_err(io)?;
    Ok(file)
}

fn temp_prompt(prompt: &PromptFile) -> Result<tempfile::NamedTempFile, ExecError> {
    let file = tempfile::NamedTempFile::new().map_err(io)?;
    prompt.save(file.path())?;
    Ok(file)
}

fn prompt_bytes(prompt: &PromptFile) -> Result<Vec<u8>, ExecError> {
    let file = temp_prompt(prompt)?;
    std::fs::read(file.path()).map_err(io)
}
