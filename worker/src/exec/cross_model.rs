//! The jobs that cross models: training a projector, scoring projected prompts zero-shot, and
//! the starting prompt of TPT (a source task's prompt, or another model's projected prompt).

use std::sync::Arc;

use promptgrid_common::JobSpec;
use promptgrid_common::graph::TptSource;
use promptgrid_common::spec::Objective;
use promptgrid_common::wire::{EvalRow, JobOutput};
use tch::{Device, Tensor};

use super::jobs::{JobModel, Run, Stream, train_key};
use super::resolve::Split;
use super::{ExecError, projector_artifact};
use promptgrid_ml::projector::{
    Projector, ProjectorConfig, ProjectorMeta, ProjectorOutcome, train_distance, train_task,
};
use promptgrid_ml::{EncoderModel, TaskData};

/// Losses are streamed in groups of this many projector steps.
const LOSS_FLUSH: usize = 25;

impl Run<'_> {
    /// The prompt a TPT job starts from, on the model's device; `None` for a train job.
    pub(super) fn tpt_start<M: JobModel>(&self, model: &M) -> Result<Option<Tensor>, ExecError> {
        let JobSpec::Tpt {
            source, model: m, ..
        } = &self.job.spec
        else {
            return Ok(None);
        };
        let seed = self.seed();
        let prompt = match source {
            TptSource::Task { task } => {
                self.stored_prompt(&train_key(task, m, seed), Some(model.prompt_width()))?
                    .prompt
            }
            TptSource::Projected {
                task,
                model: src_model,
                objective,
            } => self.projected(m, model.device(), task, src_model, *objective, seed)?,
        };
        Ok(Some(prompt.to_device(model.device())))
    }

    fn seed(&self) -> u64 {
        match &self.job.spec {
            JobSpec::Train { seed, .. }
            | JobSpec::Transfer { seed, .. }
            | JobSpec::Tpt { seed, .. }
            | JobSpec::Activations { seed, .. }
            | JobSpec::Projector { seed, .. }
            | JobSpec::CrossModel { seed, .. } => *seed,
            JobSpec::Synthetic { .. } => 0,
        }
    }

    /// `task`'s prompt of `src_model`, through the stored projector onto model `tgt_name`.
    /// `tgt_name` is the sweep's name of the target model (a model's folder may differ).
    fn projected(
        &self,
        tgt_name: &str,
        device: Device,
        task: &str,
        src_model: &str,
        objective: Objective,
        seed: u64,
    ) -> Result<Tensor, ExecError> {
        let key = format!(
            "projector/{src_model}->{tgt_name}/{}/s{seed}",
            objective.name()
        );
        let (projector, _) =
            Projector::from_bytes(&self.stored(&key, projector_artifact)?, device)?;
        let source = self
            .stored_prompt(&train_key(task, src_model, seed), None)?
            .prompt;
        Ok(projector.project(&source)?)
    }

    /// A projector from `src_model`'s prompts to the resident (target) model's, trained on the
    /// listed tasks with the job's objective, stored as `projector/<job id>`.
    pub fn projector(&self, model: &EncoderModel) -> Result<JobOutput, ExecError> {
        let JobSpec::Projector {
            src_model,
            tgt_model,
            objective,
            train_tasks,
            seed,
            settings,
        } = &self.job.spec
        else {
            return Err(ExecError::Fatal("not a projector job".into()));
        };
        let sources = train_tasks
            .iter()
            .map(|t| {
                Ok(self
                    .stored_prompt(&train_key(t, src_model, *seed), None)?
                    .prompt)
            })
            .collect::<Result<Vec<Tensor>, ExecError>>()?;
        let Some(first) = sources.first() else {
            return Err(ExecError::Fatal(format!(
                "{}: a projector needs at least one training task",
                self.job.spec.key()
            )));
        };
        let (len, d_src) = (first.size()[0], first.size()[1]);
        let mut projector = Projector::new(
            len,
            d_src,
            model.hidden_size(),
            i64::from(settings.hidden),
            *seed,
            model.device,
        )?;
        let cfg = ProjectorConfig {
            hidden: i64::from(settings.hidden),
            learning_rate: settings.learning_rate,
            steps: settings.steps as usize,
            batch_size: settings.batch_size as usize,
            seed: *seed,
        };
        let mut stream = Stream::new(self);
        let mut on_step = |step: usize, loss: f64| {
            stream.push(step, "loss", loss);
            if step.is_multiple_of(LOSS_FLUSH) {
                stream.flush();
            }
            !stream.stop_requested()
        };
        let outcome: ProjectorOutcome = match objective {
            Objective::Distance => {
                let pairs = train_tasks
                    .iter()
                    .zip(&sources)
                    .map(|(t, src)| {
                        let tgt = self
                            .stored_prompt(
                                &train_key(t, tgt_model, *seed),
                                Some(model.hidden_size()),
                            )?
                            .prompt;
                        Ok((src.shallow_clone(), tgt))
                    })
                    .collect::<Result<Vec<_>, ExecError>>()?;
                train_distance(&mut projector, &pairs, &cfg, &mut on_step)?
            }
            Objective::Task => {
                let data = train_tasks
                    .iter()
                    .map(|t| {
                        let task = self.task(t)?;
                        let prompt_settings = self.view.sweep.settings(tgt_model, t);
                        self.data(model, task, Split::Train, len as usize, prompt_settings, 0)
                    })
                    .collect::<Result<Vec<Arc<TaskData>>, ExecError>>()?;
                let tasks: Vec<(Tensor, &TaskData)> = sources
                    .iter()
                    .map(Tensor::shallow_clone)
                    .zip(data.iter().map(|d| &**d))
                    .collect();
                train_task(&mut projector, model, &tasks, &cfg, &mut on_step)?
            }
        };
        stream.flush();
        stream.finish()?;
        if outcome.stopped {
            return Err(ExecError::Cancelled);
        }
        let meta = ProjectorMeta {
            src_model: src_model.to_string(),
            tgt_model: tgt_model.to_string(),
            objective: objective.name().to_string(),
            train_tasks: train_tasks.iter().map(|t| t.to_string()).collect(),
        };
        let bytes = projector.to_bytes(&meta)?;
        let artifact = self.block(
            self.ctx
                .put_artifact(&projector_artifact(&self.job.id), &bytes),
        )?;
        Ok(JobOutput {
            provenance: None,
            artifacts: vec![artifact],
            metrics: self.final_metrics(
                outcome.steps,
                &[
                    ("first_loss", outcome.first_loss),
                    ("final_loss", outcome.final_loss),
                    ("steps", outcome.steps as f64),
                ],
            ),
            evals: vec![],
        })
    }

    /// `task`'s prompt of the source model, projected onto the resident model and scored
    /// zero-shot there.
    pub fn cross_model(&self, model: &EncoderModel) -> Result<JobOutput, ExecError> {
        let JobSpec::CrossModel {
            task,
            src_model,
            tgt_model,
            objective,
            seed,
            split,
            ..
        } = &self.job.spec
        else {
            return Err(ExecError::Fatal("not a cross_model job".into()));
        };
        let prompt = self.projected(tgt_model, model.device, task, src_model, *objective, *seed)?;
        let settings = self.view.sweep.settings(tgt_model, task);
        let (eval, also) = self.score(model, &prompt, task, split, settings)?;
        Ok(JobOutput {
            provenance: None,
            artifacts: vec![],
            metrics: also,
            evals: vec![EvalRow {
                src_task: Some(task.to_string()),
                src_model: Some(src_model.to_string()),
                ..eval
            }],
        })
    }
}
