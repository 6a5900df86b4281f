//! The report of one sweep folder from start to finish: the ON and prompt indicators derived
//! from the artifact copies, then [`report_with`]. `promptgrid report` runs it with the options
//! of its flags; the end of `promptgrid run` and `coordinator` with the sweep's own tasks and
//! indicator settings, so that no catalog folder has to be found from the working directory.

use std::path::Path;

use promptgrid_common::Sweep;

use super::{Report, ReportOptions, report_with};
use crate::activation::OnWindows;
use crate::error::Result;
use crate::schema::{JobRow, Table};
use crate::sink::derive_indicators;

/// Recomputes the `indicators` table with ON on `on_windows`, then writes the report of
/// `sweep_dir` (`<results>/<sweep>`).
pub fn derive_and_report(
    sweep_dir: &Path,
    opts: &ReportOptions,
    on_windows: OnWindows,
) -> Result<Report> {
    derive_indicators(sweep_dir, on_windows)?;
    report_with(sweep_dir, opts)
}

/// The report of `sweep` in its results folder `sweep_dir`, with task types from the sweep's
/// resolved tasks and ON on the sweep's windows; `None` while the folder holds no `jobs` table
/// (the sweep committed nothing yet).
pub fn report_sweep(sweep_dir: &Path, sweep: &Sweep) -> Result<Option<Report>> {
    if !sweep_dir.join(JobRow::NAME).is_dir() {
        return Ok(None);
    }
    let opts = ReportOptions::from_tasks(sweep.tasks.iter().map(|t| &t.def));
    derive_and_report(sweep_dir, &opts, on_windows(sweep)).map(Some)
}

/// The sweep's ON windows, or the default when it computes no ON.
fn on_windows(sweep: &Sweep) -> OnWindows {
    sweep
        .studies
        .indicators
        .as_ref()
        .map_or_else(OnWindows::default, |i| OnWindows {
            width: i.on_window as usize,
            sliding: i.on_sliding,
        })
}
