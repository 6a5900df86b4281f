//! `promptgrid inspect`: the readout of one input, as JSON.

use std::process::ExitCode;

use promptgrid_worker::oneshot;

use crate::cli::InspectArgs;

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let model = args.model.oneshot()?;
    let inspection = tokio::task::block_in_place(|| {
        oneshot::inspect(
            &model,
            args.text.as_deref(),
            args.ids,
            args.prompt.as_deref(),
            args.full_logits,
        )
    })?;
    println!("{}", serde_json::to_string(&inspection)?);
    Ok(ExitCode::SUCCESS)
}
