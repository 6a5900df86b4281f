//! TPT with `top_k`: a gated job first ranks every candidate source of its target by the
//! sweep's indicator, on the prompts (or activation masks) its dependencies stored, and runs
//! only when its source is among the k most similar. The ranking is a pure function of stored
//! artifacts, so every worker that runs one of the target's jobs reaches the same choice.

use promptgrid_common::JobSpec;
use promptgrid_common::graph::TptSource;
use promptgrid_common::mask::MaskFile;
use promptgrid_common::spec::Indicator;
use promptgrid_common::wire::JobOutput;
use promptgrid_results::activation::{ActivationMask, on_indicator};
use promptgrid_results::indicators::{prompt_pair_value, table_name, top_k};
use promptgrid_results::prompts::Prompt;

use super::jobs::{Run, train_key};
use super::{ExecError, mask_artifact};
use promptgrid_ml::PromptModel;

pub use promptgrid_results::report::tpt::GATED_OUT;

impl Run<'_> {
    /// `Some(output)` when this TPT job's source is not among its target's k most similar.
    pub(super) fn gated_out<M: PromptModel>(
        &self,
        model: &M,
    ) -> Result<Option<JobOutput>, ExecError> {
        let Some((k, by)) = self.view.graph.get(&self.job.id).and_then(|j| j.gate) else {
            return Ok(None);
        };
        let JobSpec::Tpt {
            source: TptSource::Task { task: src },
            tgt,
            model: m,
            seed,
            ..
        } = &self.job.spec
        else {
            return Ok(None);
        };
        let candidates: Vec<&str> = self
            .view
            .graph
            .jobs()
            .iter()
            .filter(|j| j.gate.is_some())
            .filter_map(|j| match &j.spec {
                JobSpec::Tpt {
                    source: TptSource::Task { task },
                    tgt: t,
                    model: mm,
                    seed: s,
                    ..
                } if t == tgt && mm == m && s == seed => Some(task.as_str()),
                _ => None,
            })
            .collect();
        let scores = if by == Indicator::On {
            let mask = |task: &str| -> Result<ActivationMask, ExecError> {
                let key = format!("activations/{task}/{m}/s{seed}");
                let bytes = self.stored(&key, mask_artifact)?;
                let file = MaskFile::from_bytes(&bytes, &key)
                    .map_err(|e| ExecError::Fatal(e.to_string()))?;
                ActivationMask::from_mask_file(&file).map_err(|e| ExecError::Fatal(e.to_string()))
            };
            let target = mask(tgt)?;
            candidates
                .iter()
                .map(|&s| {
                    // The first value is over all layers; a window wider than the model gives
                    // no windows.
                    let on = on_indicator(&target, &mask(s)?, usize::MAX)
                        .map_err(|e| ExecError::Fatal(e.to_string()))?;
                    Ok((s.to_string(), on.first().and_then(|(_, v)| *v)))
                })
                .collect::<Result<Vec<_>, ExecError>>()?
        } else {
            let prompt = |task: &str| -> Result<Prompt, ExecError> {
                let file =
                    self.stored_prompt(&train_key(task, m, *seed), Some(model.prompt_width()))?;
                let (tokens, dim) = (file.prompt.size()[0], file.prompt.size()[1]);
                let values = Vec::<f32>::try_from(file.prompt.flatten(0, -1))
                    .map_err(|e| ExecError::Fatal(format!("prompt of {task}: {e}")))?;
                Ok(Prompt::new(
                    task,
                    tokens as usize,
                    dim as usize,
                    values.into_iter().map(f64::from).collect(),
                ))
            };
            let target = prompt(tgt)?;
            candidates
                .iter()
                .map(|&s| {
                    let value = prompt_pair_value(&target, &prompt(s)?, table_name(by));
                    Ok((s.to_string(), value))
                })
                .collect::<Result<Vec<_>, ExecError>>()?
        };
        let ranked = top_k(scores, candidates.len());
        let rank = ranked.iter().position(|s| s == src).unwrap_or(ranked.len()) + 1;
        if rank <= k as usize {
            return Ok(None);
        }
        Ok(Some(JobOutput {
            provenance: None,
            artifacts: vec![],
            metrics: self.final_metrics(0, &[(GATED_OUT, 1.0), ("rank", rank as f64)]),
            evals: vec![],
        }))
    }
}
