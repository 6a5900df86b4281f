//! `promptgrid indicators`: prompt-only indicators for prompts made elsewhere.

use std::process::ExitCode;

use crate::cli::IndicatorsArgs;

pub fn indicators(args: IndicatorsArgs) -> anyhow::Result<ExitCode> {
    let summary = tokio::task::block_in_place(|| {
        promptgrid_results::run_indicators(&args.prompts, args.transfer.as_deref(), &args.out)
    })?;
    println!(
        "{} prompts of {}: {} indicator values",
        summary.tasks.len(),
        summary.model,
        summary.indicators.len()
    );
    if let Some(ranking) = &summary.ranking {
        // The report's verdict, without its markdown emphasis.
        println!("{}", ranking.sentence().replace("**", ""));
    }
    println!("summary: {}", summary.markdown_path.display());
    Ok(ExitCode::SUCCESS)
}
