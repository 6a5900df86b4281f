//! The synthetic executor: no ML, but the same path as a training job. It sleeps in steps,
//! checkpoints after each so that a redelivered job resumes (its `start_step` metric shows
//! where), fails when told to, and returns a payload of the requested size.

use std::time::Duration;

use promptgrid_common::JobSpec;
use promptgrid_common::wire::{JobMessage, JobOutput, MetricRow};

use super::executor::{Executor, JobContext, JobError};

/// Runs `JobSpec::Synthetic` jobs; anything else is a fatal error.
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// Length of one step; the job's duration is split into steps of this length.
    pub step: Duration,
}

impl Default for Synthetic {
    fn default() -> Synthetic {
        Synthetic {
            step: Duration::from_millis(100),
        }
    }
}

impl Executor for Synthetic {
    async fn run(&self, job: &JobMessage, ctx: &JobContext) -> Result<JobOutput, JobError> {
        let JobSpec::Synthetic {
            index,
            duration_ms,
            fail,
            payload_bytes,
        } = job.spec
        else {
            return Err(JobError::Fatal(format!(
                "this worker runs synthetic jobs only, not {}",
                job.spec.kind().name()
            )));
        };
        let step_ms = self.step.as_millis().max(1) as u64;
        let steps = u64::from(duration_ms).div_ceil(step_ms);
        let start = match ctx.load_checkpoint().await? {
            Some(b) => serde_json::from_slice::<u64>(&b).unwrap_or(0).min(steps),
            None => 0,
        };
        for step in start..steps {
            if ctx.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let left = u64::from(duration_ms) - step * step_ms;
            tokio::time::sleep(Duration::from_millis(left.min(step_ms))).await;
            ctx.save_checkpoint(&serde_json::to_vec(&(step + 1)).unwrap_or_default())
                .await?;
        }
        if fail {
            return Err(JobError::Retryable(format!(
                "synthetic job {index} fails by design"
            )));
        }
        let mut artifacts = Vec::new();
        if payload_bytes > 0 {
            let payload = vec![(index % 251) as u8; payload_bytes as usize];
            artifacts.push(
                ctx.put_artifact(&format!("synthetic/{}.bin", job.id), &payload)
                    .await?,
            );
        }
        let wall_s = ctx.wall_s();
        let metric = |name: &str, value: u64| MetricRow {
            step: steps,
            name: name.into(),
            value: value as f64,
            wall_s,
        };
        Ok(JobOutput {
            provenance: None,
            artifacts,
            metrics: vec![
                metric("start_step", start),
                metric("steps", steps),
                metric("attempt", u64::from(ctx.attempt())),
            ],
            evals: vec![],
        })
    }
}

/// The job graph of a synthetic-only sweep, without a sweep file (tests and benchmarks).
pub fn synthetic_graph(
    name: &str,
    spec: promptgrid_common::spec::SyntheticSpec,
) -> promptgrid_common::JobGraph {
    promptgrid_common::JobGraph::build(&promptgrid_common::Sweep::synthetic_only(name, spec))
}
