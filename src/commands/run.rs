//! `promptgrid run`: a whole sweep on this machine (embedded NATS, coordinator, sink, workers).

use std::process::ExitCode;

use promptgrid_runtime::{NatsConfig, embedded, parquet, shutdown_on_signals};
use promptgrid_worker::exec::MlExecutor;

use super::outcome::finish;
use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let roots = args.roots.required()?;
    let device = args.device.device()?;
    let precision = args.device.precision(device)?;
    let results = &args.results.results;
    let dir = results.join(&sweep.name);
    let mut config = parquet::coordinator_config(&sweep, NatsConfig::default(), &dir)?;
    args.failures.apply(&mut config);
    config.shutdown = Some(shutdown_on_signals());
    let outcome = embedded::run(config, results, args.workers.max(1), |_| {
        MlExecutor::with_sweep(roots.clone(), device, sweep.clone()).with_precision(precision)
    })
    .await?;
    Ok(finish(&outcome, &sweep, &dir))
}
