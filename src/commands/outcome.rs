//! How a sweep ended, as `run` and `coordinator` print it: the job counts and, once it has
//! results, its report (made from the sweep's own tasks, wherever the command runs).

use std::path::Path;
use std::process::ExitCode;

use promptgrid_common::Sweep;
use promptgrid_runtime::Outcome;

/// Prints the outcome and the report of `sweep`'s results folder `dir`; a report that fails is
/// a warning, not a failure of the sweep. The exit status says whether every job is done.
pub fn finish(outcome: &Outcome, sweep: &Sweep, dir: &Path) -> ExitCode {
    println!(
        "{} of {} jobs done, {} dead, {} blocked by dead dependencies{}",
        outcome.done,
        outcome.total,
        outcome.dead,
        outcome.blocked,
        outcome
            .stopped
            .as_ref()
            .map_or(String::new(), |why| format!(" (stopped: {why})"))
    );
    match tokio::task::block_in_place(|| promptgrid_results::report_sweep(dir, sweep)) {
        Ok(Some(r)) => {
            println!("tables: {}", dir.display());
            println!("report: {}", r.markdown_path.display());
            for line in r.summary_lines() {
                println!("  {line}");
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("warning: the report failed: {:#}", anyhow::Error::new(e)),
    }
    if outcome.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
