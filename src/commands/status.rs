//! `promptgrid status`: where a sweep on a NATS server stands.

use std::process::ExitCode;

use promptgrid_common::JobGraph;

use crate::cli::StatusArgs;

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let nats = args.nats.config();
    // A running coordinator's summary answers at once; without one, plan the graph and read
    // every job's state.
    let report = match promptgrid_runtime::status::quick(&nats, &sweep.name).await? {
        Some(report) => report,
        None => {
            let graph = JobGraph::build(&sweep);
            promptgrid_runtime::status(&nats, &sweep.name, &graph).await?
        }
    };
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
