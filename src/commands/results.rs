//! `promptgrid results compact`: a results folder's small part files merged.

use std::process::ExitCode;

use crate::cli::CompactArgs;

pub fn compact(args: CompactArgs) -> anyhow::Result<ExitCode> {
    let outcomes = tokio::task::block_in_place(|| {
        promptgrid_results::compact_all(&args.dir, args.small_rows)
    })?;
    for (table, o) in outcomes {
        println!(
            "{table}: {} parts -> {} ({} rows)",
            o.parts_before, o.parts_after, o.rows
        );
    }
    Ok(ExitCode::SUCCESS)
}
