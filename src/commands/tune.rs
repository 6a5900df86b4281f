//! `promptgrid tune`: one prompt trained and scored without NATS.

use std::process::ExitCode;

use promptgrid_worker::oneshot::{self, TuneRequest};

use crate::cli::TuneArgs;

pub fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    let task = args.task.load()?;
    let request = TuneRequest {
        data_dir: args.task.data,
        length: args.length,
        init: args.init,
        learning_rate: args.learning_rate,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_steps: args.max_steps,
        eval_every: args.eval_every,
        max_text_tokens: args.max_text_tokens,
        dev_examples: args.dev_examples,
        seed: args.seed,
        out: args.out,
        peft: args.peft,
    };
    let model = args.model.oneshot()?;
    let report = tokio::task::block_in_place(|| oneshot::tune(&model, &task, &request))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
