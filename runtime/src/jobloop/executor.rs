//! The seam between the job loop and what runs a job: the [`Executor`] trait and the context
//! it gets (metrics, artifacts, checkpoints, cancellation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use promptgrid_common::JobId;
use promptgrid_common::names::is_plain_name;
use promptgrid_common::wire::{Event, JobMessage, JobOutput, MetricRow};
use tokio::sync::watch;
use tracing::Instrument;

use crate::events;
use crate::retry::through_outages;
use crate::streams::SweepStreams;
use crate::telemetry::Phase;

/// Why a job did not produce an output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Transient (I/O, a lost connection): the coordinator may queue it again.
    #[error("{0}")]
    Retryable(String),
    /// Deterministic (bad data, NaN, unknown name): retrying would fail the same way.
    #[error("{0}")]
    Fatal(String),
    /// The worker is shutting down; the executor has saved its checkpoint.
    #[error("cancelled")]
    Cancelled,
    /// NATS stayed unavailable longer than the worker's patience: an infrastructure fault,
    /// never charged to the job. The attempt goes back to the queue and is counted apart.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
}

impl JobError {
    /// A NATS failure as a job error: an outage is [`JobError::Unavailable`], anything else
    /// (a refused write) [`JobError::Retryable`].
    fn from_nats(context: &str, e: crate::Error) -> JobError {
        match e {
            crate::Error::Unavailable(m) => JobError::Unavailable(format!("{context}{m}")),
            e => JobError::Retryable(format!("{context}{e}")),
        }
    }
}

/// Runs jobs. The ML executors of `promptgrid-worker` implement it; [`super::Synthetic`] is
/// the runtime's own.
pub trait Executor: Send + Sync + 'static {
    /// The model it holds resident, whose jobs the loop fetches first.
    fn resident_model(&self) -> Option<String> {
        None
    }

    fn run<'a>(
        &'a self,
        job: &'a JobMessage,
        ctx: &'a JobContext,
    ) -> impl Future<Output = Result<JobOutput, JobError>> + Send + 'a;
}

/// What an executor may do while it runs one attempt of a job.
pub struct JobContext {
    pub(crate) streams: SweepStreams,
    pub(crate) job: JobId,
    pub(crate) attempt: u32,
    pub(crate) cancel: watch::Receiver<bool>,
    pub(crate) started: Instant,
    /// Numbers progress events so that each has its own dedup id.
    pub(crate) seq: AtomicU64,
    /// The attempt's `execute` span: the parent of its phase spans.
    pub(crate) span: tracing::Span,
    /// How long a call on NATS retries through an outage before the attempt is given back.
    pub(crate) patience: Duration,
}

impl JobContext {
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// 1 for the first start, higher after redeliveries and retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves when the worker is asked to stop.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Seconds since this attempt started (the `wall_s` of metric rows).
    pub fn wall_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A span for one phase of this attempt, a child of its `execute` span, so that it shows in
    /// the job's trace and its log lines carry the job's fields. In blocking code:
    /// `let _phase = ctx.phase(Phase::Train).entered();`; in async code:
    /// `fut.instrument(ctx.phase(Phase::Evaluate)).await`.
    pub fn phase(&self, phase: Phase) -> tracing::Span {
        phase.span_in(&self.span)
    }

    /// Streams metric rows as a progress event.
    pub async fn metrics(&self, metrics: Vec<MetricRow>) -> Result<(), JobError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let event = Event::Progress {
            job: self.job.clone(),
            attempt: self.attempt,
            metrics,
        };
        through_outages("publish metrics", self.patience, || {
            events::publish(&self.streams.js, &self.streams.names, &event, seq)
        })
        .await
        .map_err(|e| JobError::from_nats("", e))
    }

    /// Stores an artifact under a plain name (never a path) and returns that name.
    pub async fn put_artifact(&self, name: &str, bytes: &[u8]) -> Result<String, JobError> {
        if !is_plain_name(name) {
            return Err(JobError::Fatal(format!(
                "artifact name `{name}` is not a plain name"
            )));
        }
        through_outages("store an artifact", self.patience, || async {
            let mut reader = bytes;
            self.streams
                .artifacts
                .put(name, &mut reader)
                .await
                .map_err(crate::Error::nats)
        })
        .await
        .map_err(|e| JobError::from_nats(&format!("cannot store artifact {name}: "), e))?;
        Ok(name.to_string())
    }

    /// An artifact by name, `None` if there is none.
    pub async fn get_artifact(&self, name: &str) -> Result<Option<Vec<u8>>, JobError> {
        if !is_plain_name(name) {
            return Err(JobError::Fatal(format!(
                "artifact name `{name}` is not a plain name"
            )));
        }
        through_outages("read an artifact", self.patience, || {
            crate::objects::read_object(&self.streams.artifacts, name)
        })
        .await
        .map_err(|e| JobError::from_nats("", e))
    }

    fn checkpoint_name(&self) -> String {
        format!("checkpoints/{}", self.job)
    }

    /// Saves the job's checkpoint (one per job, replaced each time): a redelivered job
    /// resumes from it.
    pub async fn save_checkpoint(&self, bytes: &[u8]) -> Result<(), JobError> {
        let span = self.phase(Phase::Checkpoint);
        span.record("op", "save");
        span.record("bytes", bytes.len());
        self.put_artifact(&self.checkpoint_name(), bytes)
            .instrument(span)
            .await
            .map(|_| ())
    }

    pub async fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, JobError> {
        let span = self.phase(Phase::Checkpoint);
        span.record("op", "load");
        let found = self
            .get_artifact(&self.checkpoint_name())
            .instrument(span.clone())
            .await?;
        span.record("bytes", found.as_ref().map_or(0, Vec::len));
        Ok(found)
    }

    /// Removes the checkpoint once the result is committed.
    pub(crate) async fn drop_checkpoint(&self) {
        let _ = self.streams.artifacts.delete(self.checkpoint_name()).await;
    }
}
