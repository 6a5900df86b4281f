//! `promptgrid plan`: a sweep's jobs, validated, without running any.

use std::process::ExitCode;

use anyhow::Context;
use promptgrid_common::JobGraph;
use promptgrid_common::plan::Plan;

use crate::cli::PlanArgs;

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let graph = JobGraph::build(&sweep);
    let plan = Plan::new(&sweep, &graph, &args.roots.given());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).context("writing the plan")?
        );
    } else {
        print!("{plan}");
    }
    // After the plan is shown: a prompt no model can take fails every job (exit 2).
    plan.refuse_invalid(&sweep)?;
    Ok(ExitCode::SUCCESS)
}
