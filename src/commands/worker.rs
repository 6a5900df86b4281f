//! `promptgrid worker`: serves jobs from a NATS server, or with `--gpus` supervises one worker
//! process per GPU.

use std::process::ExitCode;

use promptgrid_runtime::{jobloop, shutdown_on_signals};
use promptgrid_worker::exec::MlExecutor;
use promptgrid_worker::gpus;

use crate::cli::{RootArgs, WorkerArgs};

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // Refused here, not by every child `--gpus` would start and restart.
    args.device.precision_request()?;
    if let Some(gpus) = &args.gpus {
        return supervise_gpus(gpus, &args.roots).await;
    }
    let roots = args.roots.required()?;
    let device = args.device.device()?;
    let executor = MlExecutor::new(roots, device).with_precision(args.device.precision(device)?);
    let mut config = jobloop::WorkerConfig::new(args.nats.config(), args.sweep);
    if let Some(name) = args.name {
        config.name = name;
    }
    config.shutdown = Some(shutdown_on_signals());
    let stats = jobloop::run(config, executor).await?;
    tracing::info!(done = stats.done, failed = stats.failed, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// `worker --gpus`: checks the flags a child would refuse, then supervises one worker process
/// per GPU until a signal or a clean exit.
async fn supervise_gpus(gpus: &str, roots: &RootArgs) -> anyhow::Result<ExitCode> {
    let selection: gpus::GpuSelection = gpus.parse()?;
    let list = gpus::select(&selection, gpus::device_count())?;
    roots.required()?;
    let args = gpus::child_args(std::env::args_os().skip(1));
    let supervisor = gpus::Supervisor::new(args, list.clone())?;
    tracing::info!(gpus = ?list, "starting one worker per GPU");
    let restarts = supervisor.run(shutdown_on_signals()).await;
    tracing::info!(restarts, "GPU workers stopped");
    Ok(ExitCode::SUCCESS)
}
