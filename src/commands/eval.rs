//! `promptgrid eval`: prompt files scored on a task without NATS.

use std::process::ExitCode;

use promptgrid_worker::oneshot;

use crate::cli::EvalArgs;

pub fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let task = args.task.load()?;
    let model = args.model.oneshot()?;
    let scores = tokio::task::block_in_place(|| {
        oneshot::eval(
            &model,
            &task,
            &args.task.data,
            args.split.as_deref(),
            &args.prompts,
            args.max_text_tokens,
        )
    })?;
    println!("{}", serde_json::to_string_pretty(&scores)?);
    Ok(ExitCode::SUCCESS)
}
