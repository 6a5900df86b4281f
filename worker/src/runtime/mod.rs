//! The worker's job loop. It lives in `promptgrid-coordinator` (no libtorch there, so the
//! runtime and its crash tests build without it) and is re-exported here, where the ML
//! executors of [`crate::exec`] plug into its [`Executor`] seam:
//! `worker::runtime::run(WorkerConfig, executor)`. [`gpus`] runs one worker process per GPU.
pub mod gpus;

pub use promptgrid_coordinator::jobloop::{
    Executor, JobContext, JobError, Synthetic, WorkerConfig, WorkerStats, run, synthetic_graph,
};
pub use promptgrid_coordinator::telemetry::Phase;
