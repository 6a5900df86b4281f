//! `promptgrid report`: the analysis of a results folder, tables, report.md and figures.

use std::process::ExitCode;

use promptgrid_common::catalog::CatalogSource;
use promptgrid_results::ReportOptions;
use promptgrid_results::activation::OnWindows;

use crate::cli::ReportArgs;

pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let windows = OnWindows {
        width: args.on_window,
        sliding: args.on_sliding,
    };
    let catalog = CatalogSource::from_flag(args.catalog.as_deref()).load()?;
    let opts = ReportOptions::from_catalog(&catalog);
    let report = tokio::task::block_in_place(|| {
        promptgrid_results::derive_and_report(&args.dir, &opts, windows)
    })?;
    for line in report.summary_lines() {
        println!("{line}");
    }
    println!("report: {}", report.markdown_path.display());
    Ok(ExitCode::SUCCESS)
}
