//! `promptgrid coordinator`: a sweep scheduled on a NATS server, followed to its end.

use std::process::ExitCode;
use std::time::Duration;

use promptgrid_runtime::{parquet, shutdown_on_signals};

use super::outcome::finish;
use crate::cli::CoordinatorArgs;

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let dir = args.results.results.join(&sweep.name);
    let mut config = parquet::coordinator_config(&sweep, args.nats.config(), &dir)?;
    args.failures.apply(&mut config);
    config.streams.lease = Duration::from_secs(args.lease_secs.max(1));
    config.streams.replicas = args.replicas;
    config.shutdown = Some(shutdown_on_signals());
    let outcome = promptgrid_runtime::run(config).await?;
    Ok(finish(&outcome, &sweep, &dir))
}
