//! `promptgrid status`: where a sweep on a NATS server stands.

use std::process::ExitCode;

use promptgrid_common::JobGraph;

use crate::cli::StatusArgs;

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let graph = JobGraph::build(&sweep);
    let report = promptgrid_runtime::status(&args.nats.config(), &sweep.name, &graph).await?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
