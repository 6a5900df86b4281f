//! `promptgrid plan`: a sweep's jobs, validated, without running any.

use std::process::ExitCode;

use anyhow::Context;
use promptgrid_common::JobGraph;
use promptgrid_common::plan::{Plan, planned_jobs};

use crate::cli::PlanArgs;

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let sweep = args.sweep.load()?;
    let graph = JobGraph::build(&sweep);
    let plan = Plan::new(&sweep, &graph, &args.roots.given());
    if args.json {
        let mut out = serde_json::to_value(&plan).context("writing the plan")?;
        if args.jobs {
            out["job_list"] =
                serde_json::to_value(planned_jobs(&sweep, &graph).context("listing the jobs")?)
                    .context("listing the jobs")?;
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("writing the plan")?
        );
    } else {
        print!("{plan}");
    }
    // After the plan is shown: a prompt no model can take fails every job (exit 2).
    plan.refuse_invalid(&sweep)?;
    Ok(ExitCode::SUCCESS)
}
