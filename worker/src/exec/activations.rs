//! The `activations` job: the binary FFN mask a trained (or the random) prompt induces in the
//! frozen model, stored as `mask/<job id>` for the ON indicator.

use promptgrid_common::JobSpec;
use promptgrid_common::graph::RANDOM;
use promptgrid_common::wire::JobOutput;

use super::jobs::{JobModel, Run, train_key};
use super::{ExecError, mask_artifact};
use promptgrid_ml::random_baseline;

impl Run<'_> {
    pub(super) fn activations<M: JobModel>(&self, model: &M) -> Result<JobOutput, ExecError> {
        let JobSpec::Activations {
            task,
            model: m,
            seed,
        } = &self.job.spec
        else {
            return Err(ExecError::Fatal("not an activations job".into()));
        };
        let prompt = if task == RANDOM {
            // The random prompt of the transfer baseline: every task of a sweep normally shares
            // one prompt length, so the first task's settings give it.
            let spec = self
                .view
                .sweep
                .model(m)
                .ok_or_else(|| ExecError::Fatal(format!("model `{m}` is not in the sweep")))?;
            let first = self.view.sweep.tasks_for(spec).next().ok_or_else(|| {
                ExecError::Fatal(format!("model `{m}` runs no task of the sweep"))
            })?;
            let length = self.view.sweep.settings(m, first.name()).length as usize;
            random_baseline(length, model.prompt_width() as usize, *seed).to_device(model.device())
        } else {
            self.stored_prompt(&train_key(task, m, *seed), Some(model.prompt_width()))?
                .prompt
                .to_device(model.device())
        };
        let mask = model.activation_mask(&prompt, m, task)?;
        let artifact = self.block(
            self.ctx
                .put_artifact(&mask_artifact(&self.job.id), &mask.to_bytes()),
        )?;
        Ok(JobOutput {
            provenance: None,
            artifacts: vec![artifact],
            metrics: self.final_metrics(0, &[("active_fraction", mask.active_fraction())]),
            evals: vec![],
        })
    }
}
