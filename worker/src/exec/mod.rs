//! The ML executors: what a worker does with a train, transfer or TPT job, on top of the ML
//! core and behind the runtime's [`Executor`] seam.
//!
//! A worker learns the sweep (models, tasks, resolved settings) from the `manifest/sweep.json`
//! artifact the coordinator stores, rebuilds the same job graph from it (ids are content
//! hashes, so both sides agree), and finds a dependency's prompt under the artifact name
//! `prompt/<job id>`. It keeps the last model it loaded resident (the job loop fetches that
//! model's jobs first) and the splits it encoded (data_cache.rs). The resident model is an encoder or a T5 (with its tokenizer); train,
//! TPT, transfer and activations jobs run on both through `JobModel` (jobs.rs), for
//! classification and (T5 only) generation tasks. Projector and cross-model jobs need an
//! encoder target.
//!
//! The ML work is blocking (libtorch); it runs under `block_in_place`, and reaches back into
//! the async context (metrics, checkpoints, artifacts) through the runtime handle.

mod activations;
mod cross_model;
mod data_cache;
mod gate;
mod jobs;
mod resolve;

use std::sync::{Arc, Mutex};

use promptgrid_common::wire::{JobMessage, JobOutput, Provenance};
use promptgrid_common::{JobGraph, JobId, JobSpec, Sweep};
use promptgrid_runtime::jobloop::{Executor, JobContext, JobError, Synthetic};

pub use gate::GATED_OUT;
use promptgrid_ml::{EncoderModel, MlError, Precision, T5Backbone};
pub use resolve::{Roots, Split};

pub use tch::Device;

/// Parses `cpu`, `cuda:N` or `auto`, and sets libtorch's intra-op threads when given.
pub fn device(spec: &str, threads: Option<i32>) -> Result<Device, MlError> {
    if let Some(n) = threads.filter(|n| *n > 0) {
        tch::set_num_threads(n);
    }
    promptgrid_ml::parse_device(spec)
}

use promptgrid_common::names::SWEEP_ARTIFACT;

/// `cpu` or `cuda:N`, as `--device` spells it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The artifact name of the prompt a train or TPT job produced.
pub fn prompt_artifact(job: &JobId) -> String {
    format!("prompt/{job}")
}

/// The artifact name of the activation mask an activations job produced.
pub fn mask_artifact(job: &JobId) -> String {
    format!("mask/{job}")
}

/// The artifact name of the projector a projector job trained.
pub fn projector_artifact(job: &JobId) -> String {
    format!("projector/{job}")
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Deterministic: bad data, a NaN, an unknown name. Not retried.
    #[error("{0}")]
    Fatal(String),
    /// Transient: the store or the network. Retried.
    #[error("{0}")]
    Retryable(String),
    #[error("cancelled")]
    Cancelled,
    /// NATS could not be reached: handed back, not charged to the job.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Ml(#[from] MlError),
}

impl From<ExecError> for JobError {
    fn from(e: ExecError) -> JobError {
        match e {
            ExecError::Fatal(m) => JobError::Fatal(m),
            ExecError::Retryable(m) => JobError::Retryable(m),
            ExecError::Cancelled => JobError::Cancelled,
            ExecError::Unavailable(m) => JobError::Unavailable(m),
            // Bad data, NaN, shapes: the same input fails the same way again. Only I/O may pass.
            ExecError::Ml(e) if e.is_bad_input() || matches!(e, MlError::NanLoss { .. }) => {
                JobError::Fatal(format!("{e:#}"))
            }
            ExecError::Ml(e) => JobError::Retryable(format!("{e:#}")),
        }
    }
}

impl From<JobError> for ExecError {
    fn from(e: JobError) -> ExecError {
        match e {
            JobError::Fatal(m) => ExecError::Fatal(m),
            JobError::Retryable(m) => ExecError::Retryable(m),
            JobError::Cancelled => ExecError::Cancelled,
            JobError::Unavailable(m) => ExecError::Unavailable(m),
        }
    }
}

/// The sweep as the coordinator published it, with its graph.
struct SweepView {
    sweep: Sweep,
    graph: JobGraph,
}

/// The model this worker holds. Tensors are `Send` but not `Sync`, so the model lives behind
/// the executor's mutex, which a job holds while it runs (a worker runs one job at a time).
struct Resident {
    name: String,
    model: ResidentModel,
}

/// An encoder (BERT/RoBERTa) or a T5 with its tokenizer.
enum ResidentModel {
    Encoder(EncoderModel),
    T5(T5Backbone),
}

/// Runs the ML job kinds on one device.
pub struct MlExecutor {
    roots: Roots,
    device: Device,
    precision: Precision,
    sweep: Mutex<Option<Arc<SweepView>>>,
    resident: Mutex<Option<Resident>>,
    /// Encoded splits, reused by the jobs that read them again.
    data: data_cache::DataCache,
    /// Runtime test jobs run through the same worker.
    synthetic: Synthetic,
}

impl MlExecutor {
    pub fn new(roots: Roots, device: Device) -> MlExecutor {
        MlExecutor {
            roots,
            device,
            precision: Precision::F32,
            sweep: Mutex::new(None),
            resident: Mutex::new(None),
            data: data_cache::DataCache::new(data_cache::DATA_CACHE_BYTES),
            synthetic: Synthetic::default(),
        }
    }

    /// Runs the models' matrix products in `precision` (`--precision`, resolved for the device).
    pub fn with_precision(mut self, precision: Precision) -> MlExecutor {
        self.precision = precision;
        self
    }

    /// What this worker runs jobs with, recorded in the `jobs` row of every job it finishes.
    /// The threads are read per job: `--threads` or libtorch's default (the cores).
    pub fn provenance(&self) -> Provenance {
        Provenance {
            version: env!("CARGO_PKG_VERSION").into(),
            // Set by build.rs; absent when the build saw neither git nor PROMPTGRID_COMMIT.
            commit: option_env!("PROMPTGRID_COMMIT").unwrap_or("unknown").into(),
            torch: option_env!("PROMPTGRID_TORCH").unwrap_or("unknown").into(),
            device: device_name(self.device),
            precision: self.precision.to_string(),
            threads: u32::try_from(tch::get_num_threads()).unwrap_or(0),
        }
    }

    /// An executor that already knows its sweep (embedded mode: the same process read it).
    pub fn with_sweep(roots: Roots, device: Device, sweep: Sweep) -> MlExecutor {
        let exec = MlExecutor::new(roots, device);
        let graph = JobGraph::build(&sweep);
        if let Ok(mut slot) = exec.sweep.lock() {
            *slot = Some(Arc::new(SweepView { sweep, graph }));
        }
        exec
    }

    async fn sweep(&self, ctx: &JobContext) -> Result<Arc<SweepView>, ExecError> {
        if let Some(view) = self.sweep.lock().map_err(poisoned)?.clone() {
            return Ok(view);
        }
        let bytes = ctx.get_artifact(SWEEP_ARTIFACT).await?.ok_or_else(|| {
            ExecError::Retryable(format!(
                "the coordinator has not stored {SWEEP_ARTIFACT} yet"
            ))
        })?;
        let sweep: Sweep = serde_json::from_slice(&bytes)
            .map_err(|e| ExecError::Fatal(format!("{SWEEP_ARTIFACT} does not decode: {e}")))?;
        let graph = JobGraph::build(&sweep);
        let view = Arc::new(SweepView { sweep, graph });
        *self.sweep.lock().map_err(poisoned)? = Some(view.clone());
        Ok(view)
    }

    /// Runs `f` with the named model, loaded once and kept until a job needs another.
    fn with_model<T>(
        &self,
        sweep: &Sweep,
        name: &str,
        f: impl FnOnce(&ResidentModel) -> Result<T, ExecError>,
    ) -> Result<T, ExecError> {
        let mut resident = self.resident.lock().map_err(poisoned)?;
        if resident.as_ref().is_none_or(|r| r.name != name) {
            let spec = sweep
                .model(name)
                .ok_or_else(|| ExecError::Fatal(format!("model `{name}` is not in the sweep")))?;
            // Drop the old model before loading the new one: two may not fit.
            *resident = None;
            let dir = self.roots.model_dir(spec)?;
            // Inside the job's span: the load is a phase of the job that needed it.
            let span =
                promptgrid_runtime::telemetry::Phase::LoadModel.span_in(&tracing::Span::current());
            span.record("model", name);
            let _entered = span.enter();
            let model = if spec.arch.is_encoder() {
                let mut model = EncoderModel::load(&dir, spec.head, spec.layout, self.device)?;
                model.set_precision(self.precision)?;
                ResidentModel::Encoder(model)
            } else {
                // v1.0 and v1.1 differ only in config.json, which the loader reads.
                let mut backbone = T5Backbone::load(&dir, self.device)?;
                backbone.model.set_precision(self.precision)?;
                ResidentModel::T5(backbone)
            };
            *resident = Some(Resident {
                name: name.to_string(),
                model,
            });
        }
        match resident.as_ref() {
            Some(r) => f(&r.model),
            None => Err(ExecError::Fatal(format!("model `{name}` did not load"))),
        }
    }
}

fn synthetic() -> ExecError {
    ExecError::Fatal("synthetic jobs run without a model".into())
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> ExecError {
    ExecError::Fatal("a previous job panicked while holding the worker's state".into())
}

impl Executor for MlExecutor {
    fn resident_model(&self) -> Option<String> {
        self.resident.lock().ok()?.as_ref().map(|r| r.name.clone())
    }

    async fn run(&self, job: &JobMessage, ctx: &JobContext) -> Result<JobOutput, JobError> {
        if matches!(job.spec, JobSpec::Synthetic { .. }) {
            return self.synthetic.run(job, ctx).await;
        }
        let view = self.sweep(ctx).await?;
        let model_name = job.spec.model().ok_or_else(|| {
            JobError::Fatal(format!("{} jobs need no model", job.spec.kind().name()))
        })?;
        let handle = tokio::runtime::Handle::current();
        let run = jobs::Run {
            exec: self,
            view: &view,
            job,
            ctx,
            handle,
        };
        tokio::task::block_in_place(|| {
            self.with_model(&view.sweep, model_name, |resident| match resident {
                ResidentModel::Encoder(model) => match &job.spec {
                    JobSpec::Train { .. } | JobSpec::Tpt { .. } => run.tune(model),
                    JobSpec::Transfer { .. } => run.transfer(model),
                    JobSpec::Activations { .. } => run.activations(model),
                    JobSpec::Projector { .. } => run.projector(model),
                    JobSpec::CrossModel { .. } => run.cross_model(model),
                    JobSpec::Synthetic { .. } => Err(synthetic()),
                },
                ResidentModel::T5(model) => match &job.spec {
                    JobSpec::Train { .. } | JobSpec::Tpt { .. } => run.tune(model),
                    JobSpec::Transfer { .. } => run.transfer(model),
                    JobSpec::Activations { .. } => run.activations(model),
                    // The projector and its task objective are written for encoder targets.
                    JobSpec::Projector { .. } | JobSpec::CrossModel { .. } => {
                        Err(ExecError::Fatal(format!(
                            "{}: model `{model_name}` is T5, and projector and cross_model jobs \
                             run on encoder targets only so far",
                            job.spec.key()
                        )))
                    }
                    JobSpec::Synthetic { .. } => Err(synthetic()),
                },
            })
        })
        .map(|output| JobOutput {
            provenance: Some(self.provenance()),
            ..output
        })
        .map_err(JobError::from)
    }
}
