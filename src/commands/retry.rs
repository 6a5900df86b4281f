//! `promptgrid retry --failed`: a sweep's dead jobs queued again.

use std::process::ExitCode;

use promptgrid_common::JobGraph;

use crate::cli::RetryArgs;

pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let graph = JobGraph::build(&sweep);
    let n = promptgrid_runtime::retry_failed(&args.nats.config(), &sweep.name, &graph).await?;
    println!("{n} dead job(s) queued again");
    Ok(ExitCode::SUCCESS)
}
